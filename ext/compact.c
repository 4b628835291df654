/*
** Compaction: keeping the files near the size of the live records (format.h, START).
**
** The choice. A table's log could move to a rewritten file, or shed its oldest part in place. A
** rewritten file is written beside the old one: at 1M keys of 100-byte values the live records
** take 152 MB, so a compaction of a log at 1.7x its live size would hold 2.7x while it runs,
** past the 2x of a native table that the space target allows. Shedding in place needs no second
** copy: each step copies the live records found at the log's start to its end, in an ordinary
** write transaction that also moves the start past them, and once no reader can read an older
** state, the bytes below the start are punched out of the file. The space in use is then the log
** from its start (its live records and the garbage not yet reached) plus a step's worth, at every
** moment. Offsets never change, so the index, every reader's snapshot and the crash protocol stay
** as they are: a step commits like any transaction, with the same two-phase commit, power-loss
** and salvage rules, and a step cut short by a crash is a transaction that never committed.
** The cost is a file whose logical size only grows (holes below the start); offsets run to 8 TiB
** (format.h), which at 100 MB/s of sustained writes is a day of writing, documented in
** docs/operations.md.
**
** A step (mmkv_compact_step) walks records from the start: a record that is not its key's newest
** version is garbage and dropped (the index says so by offset alone, reading no other record:
** at 1M keys under uniform updates most of what a step meets is garbage, and reading each one's
** newest version was a random access into the log); a newest version is copied to the end with
** prev_offset naming it, so that readers of older states, walking back from the copy, still find
** it; a newest tombstone is dropped with its key's slots when no reader reads a state older than
** its transaction (safe_txid), and copied otherwise. Pads are dropped.
**
** Giving bytes back (mmkv_reclaim) is a separate act, for a state the caller knows is durable and
** older than every reader's (the SQL face: compaction.c, worker.c). It syncs the log, writes the start note
** durably, and only then punches: salvage, which cannot trust the meta slots, walks from the note.
*/
#include "engine.h"
#include "error.h"
#include "failpoint.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

/* Punching holds the file's invalidate lock, which every page fault on the file waits for (a
** writer's first store to a page of the log or the index, a reader's fault of a page not mapped
** yet); where the file system discards freed blocks at once (mount -o discard), the device's
** discard runs under it: measured on ext4 about 0.4 ms plus 1.1 ms per MiB, and up to 30 ms for
** 4 MiB, which a writer then waited for. So a paced reclaim punches pieces sized to hold the lock
** at most about PUNCH_HOLD_NS (the next piece halved or doubled by the last one's time, within
** [PUNCH_PIECE_MIN, PUNCH_PIECE_MAX]) and leaves it free as long after each (PUNCH_FREE_FACTOR):
** about 300 MB/s there, far above any rate of writing that gives it garbage. Unpaced (nobody else uses the file), pieces of the largest size follow one another. */
#define PUNCH_PIECE_MIN ((uint64_t)64 << 10)
#define PUNCH_PIECE_MAX ((uint64_t)4 << 20)
#define PUNCH_HOLD_NS 2000000
#define PUNCH_FREE_FACTOR 1

/* Space kept allocated past the log's end when a pass gives back what growth allocated ahead. */
#define GIVE_BACK_KEEP ((uint64_t)256 << 10)

/* Index slots a step moves from a table being drained, beyond the few each write moves. */
#define STEP_DRAIN_SLOTS 16384
/* Records a step reads ahead of the one it drains. */
#define STEP_BATCH 8
/* Bytes of a drained table's place a step gives back (index.c, giving back). */
#define STEP_GIVE_BACK_BYTES ((uint64_t)4 << 20)

/* One record at the log's start: dropped, or copied to the end. */
static int drain_record(mmkv_conn *conn, const mmkv_record *r, uint64_t hash, uint64_t safe_txid,
                        mmkv_compact_result *out)
{
    mmkv_engine *e = conn->engine;
    mmkv_txn *txn = &e->txn;
    uint64_t size = mmkv_record_bytes(r);
    if (r->header.flags & MMKV_RECORD_PAD) {
        txn->counts.garbage -= size;
        return MMKV_OK;
    }
    mmkv_datum key, value;
    mmkv_record_key(r, &key);
    mmkv_record_value(r, &value);
    mmkv_slot_ref ref;
    int rc = mmkv_engine_locate_version(conn, hash, r->offset, &ref);
    if (rc != MMKV_OK && rc != MMKV_NOTFOUND) return rc;
    int tombstone = (r->header.flags & MMKV_RECORD_TOMBSTONE) != 0;
    if (rc == MMKV_NOTFOUND) {
        /* Superseded (or, for a key the index no longer has, a tombstone already dropped). */
        txn->counts.garbage -= size;
        txn->counts.records--;
        return MMKV_OK;
    }
    if (tombstone && r->header.txid <= safe_txid) {
        if ((rc = mmkv_engine_offset_push(&txn->forgotten, &txn->n_forgotten, &txn->cap_forgotten,
                                          r->offset)) != MMKV_OK)
            return mmkv_error(&conn->errmsg, rc, "out of memory");
        if ((rc = mmkv_engine_forget(conn, &key, &ref)) != MMKV_OK) return rc;
        txn->counts.garbage -= size;
        txn->counts.records--;
        out->dropped++;
        return MMKV_OK;
    }
    /* Copied: the same bytes, live or garbage as before, so the counts stay; the record count
    ** loses the original and gains the copy. */
    txn->counts.records--;
    rc = mmkv_engine_append(conn, &ref, hash, &key, tombstone ? NULL : &value, r->offset);
    if (rc != MMKV_OK) {
        txn->counts.records++;
        return rc;
    }
    out->copied_bytes += size;
    return MMKV_OK;
}

int mmkv_compact_step(mmkv_conn *conn, uint64_t budget, uint64_t until, uint64_t safe_txid,
                      mmkv_compact_result *out)
{
    mmkv_conn_clear_error(conn);
    mmkv_engine *e = conn->engine;
    mmkv_txn *txn = &e->txn;
    memset(out, 0, sizeof *out);
    if (txn->owner != conn)
        return mmkv_error(&conn->errmsg, MMKV_MISUSE,
                          "mmkv: compaction outside a write transaction");
    /* Never past the committed tail the transaction began at: what lies past it is its own. */
    uint64_t limit = until && until < txn->start ? until : txn->start;
    uint64_t pos = txn->counts.start;
    if (pos > limit) limit = pos;
    uint64_t stop = budget && limit - pos > budget ? pos + budget : limit;
    size_t written_before = txn->n_written;
    int rc = MMKV_OK;
    while (pos < stop && rc == MMKV_OK) {
        /* A batch of records read ahead, their index slots loading meanwhile: the slots are
        ** random accesses, the records sequential. */
        mmkv_record batch[STEP_BATCH];
        uint64_t hashes[STEP_BATCH];
        int n = 0;
        for (uint64_t at = pos; n < STEP_BATCH && at < stop; n++) {
            mmkv_record *r = &batch[n];
            if (!mmkv_log_record(&e->log, at, txn->start, r) || !mmkv_record_checksum_ok(r)) {
                if (n == 0) return mmkv_engine_corrupt_record(&conn->errmsg, e, at);
                break; /* reported when the batch that begins there reads it */
            }
            hashes[n] = 0;
            if (!(r->header.flags & MMKV_RECORD_PAD)) {
                mmkv_datum key;
                mmkv_record_key(r, &key);
                hashes[n] = mmkv_key_hash(&key);
                mmkv_index_prefetch(&e->index, hashes[n]);
            }
            at += mmkv_record_bytes(r);
        }
        for (int i = 0; i < n && rc == MMKV_OK; i++) {
            rc = drain_record(conn, &batch[i], hashes[i], safe_txid, out);
            if (rc == MMKV_OK) {
                pos += mmkv_record_bytes(&batch[i]);
                out->drained_bytes += mmkv_record_bytes(&batch[i]);
                txn->counts.start = pos;
            }
        }
    }
    if (rc == MMKV_OK) rc = mmkv_failpoint("mid-compaction");
    if (rc != MMKV_OK) return rc;
    /* The start moved but nothing was copied: one pad record carries the transaction (a commit
    ** is a transaction with records, for salvage and for readers' snapshots alike). */
    if (out->drained_bytes && txn->n_written == written_before) {
        uint64_t at = txn->append_pos;
        rc = mmkv_log_write_pad(&e->log, at, at + sizeof(mmkv_record_header), txn->txid);
        if (rc != MMKV_OK)
            return mmkv_map_error(&e->log.map, &conn->errmsg, rc, "data file", e->data_path);
        if (mmkv_engine_offset_push(&txn->written, &txn->n_written, &txn->cap_written, at) !=
            MMKV_OK)
            return mmkv_error(&conn->errmsg, MMKV_NOMEM, "out of memory");
        txn->append_pos += sizeof(mmkv_record_header);
        txn->counts.garbage += sizeof(mmkv_record_header);
    }
    /* The index follows: its share of a drain, and a smaller table once keys went. */
    {
        mmkv_index_header *h = mmkv_index_header_of(&e->index);
        if (h->old_offset) {
            rc = mmkv_engine_drain_index(e, STEP_DRAIN_SLOTS);
            if (rc != MMKV_OK) return mmkv_engine_index_error(&conn->errmsg, e, rc);
        }
        if (pos >= limit && (rc = mmkv_index_shrink(&e->index, txn->counts.live)) != MMKV_OK)
            return mmkv_engine_index_error(&conn->errmsg, e, rc);
    }
    int giving_back = mmkv_index_give_back(&e->index, STEP_GIVE_BACK_BYTES);
    out->start = pos;
    /* A pass ends with the index drained too (a shrink begun above moves its keys in later steps),
    ** and the drained table's place given back. */
    out->done = pos >= limit && !mmkv_index_header_of(&e->index)->old_offset && !giving_back;
    /* And the space grown ahead for a log that was larger goes back, where no other process has
    ** the file mapped (the commit writes nothing more past the transaction's last record). */
    if (out->done && !e->temporary && !mmkv_lock_held_elsewhere(e->log.map.fd, MMKV_LOCK_OPEN))
        mmkv_map_give_back(&e->log.map, txn->append_pos + GIVE_BACK_KEEP);
    return MMKV_OK;
}

/* ---- the policy ---- */

#define STEP_MIN_BYTES ((uint64_t)64 << 10)
#define STEP_MAX_BYTES ((uint64_t)4 << 20)
#define STEP_WRITE_FACTOR 4
/* Below this much garbage a log is left alone: a small table's whole file is smaller. */
#define AUTO_MIN_GARBAGE ((uint64_t)1 << 20)
/* An automatic pass ends once garbage is under the threshold less a tenth of it (27% at 30).
** The log is shed from its oldest end, and the longer it is, the more of what a step meets there
** is garbage: under uniform updates the share of the oldest records still live is about
** e^-u, where u is the updates since they were written over the live keys. A log kept at
** 1.43x its live bytes (30% garbage) copies about 0.9 live bytes per byte of garbage it drops;
** a pass that went on down to half the threshold (15%) kept the log shorter, at about 1.25x on
** average, and copied 1.3 to 1.7 (measured: 1.31 records copied per update at 200K keys), for
** space the threshold does not ask for. The tenth keeps passes from starting and stopping at
** every commit. */
#define AUTO_STOP_DIVISOR 10

/* A pass asked for covers what is committed when its first step runs: everything written before
** it, the tombstones of a mass delete included, however far automatic steps moved them meanwhile.
 */
#define UNTIL_FIRST_STEP UINT64_MAX

/* A pass asked for whose safe point nobody set within this long (its worker could not reach the
** database) runs anyway, driven by the commits, keeping every tombstone. */
#define READY_WAIT_MS 10000

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ms(void)
{
    return now_ns() / 1000000;
}

void mmkv_compact_request(mmkv_conn *conn)
{
    mmkv_engine *e = conn->engine;
    pthread_mutex_lock(&e->mutex);
    e->compact_until = UNTIL_FIRST_STEP;
    e->compact_ready = 0;
    e->compact_asked_ms = now_ms();
    pthread_mutex_unlock(&e->mutex);
}

void mmkv_compact_cancel(mmkv_conn *conn)
{
    mmkv_engine *e = conn->engine;
    pthread_mutex_lock(&e->mutex);
    if (e->compact_until == UNTIL_FIRST_STEP) e->compact_until = 0;
    pthread_mutex_unlock(&e->mutex);
}

int mmkv_compact_pending(mmkv_conn *conn, uint64_t *until)
{
    mmkv_engine *e = conn->engine;
    pthread_mutex_lock(&e->mutex);
    int pending = e->compact_until != 0;
    if (until) *until = e->compact_until;
    pthread_mutex_unlock(&e->mutex);
    return pending;
}

int mmkv_compact_waiting(mmkv_conn *conn)
{
    mmkv_engine *e = conn->engine;
    pthread_mutex_lock(&e->mutex);
    int waiting = e->compact_until != 0 && !e->compact_ready;
    pthread_mutex_unlock(&e->mutex);
    return waiting;
}

void mmkv_compact_set_safe(mmkv_conn *conn, uint64_t safe_txid, int ready)
{
    mmkv_engine *e = conn->engine;
    pthread_mutex_lock(&e->mutex);
    if (safe_txid > e->safe_txid) e->safe_txid = safe_txid;
    if (ready) e->compact_ready = 1;
    pthread_mutex_unlock(&e->mutex);
}

uint64_t mmkv_compact_safe_txid(mmkv_conn *conn)
{
    return __atomic_load_n(&conn->engine->safe_txid, __ATOMIC_ACQUIRE);
}

int mmkv_compact_auto_active(mmkv_conn *conn)
{
    return __atomic_load_n(&conn->engine->compact_auto, __ATOMIC_ACQUIRE);
}

/* Garbage as a share of the log, in percent. */
static uint64_t garbage_pct(const mmkv_txn *txn)
{
    uint64_t bytes = txn->append_pos - txn->counts.start;
    return bytes ? txn->counts.garbage * 100 / bytes : 0;
}

int mmkv_compact_on_commit(mmkv_conn *conn, int threshold_pct, uint64_t budget, int *stepped)
{
    mmkv_engine *e = conn->engine;
    mmkv_txn *txn = &e->txn;
    *stepped = 0;
    if (txn->owner != conn || e->readonly) return MMKV_OK;
    /* The writer's lock is held: nobody else changes these meanwhile. */
    pthread_mutex_lock(&e->mutex);
    if (e->compact_until && !e->compact_ready && now_ms() - e->compact_asked_ms > READY_WAIT_MS)
        e->compact_ready = 1;
    if (e->compact_ready && e->compact_until == UNTIL_FIRST_STEP) e->compact_until = txn->start;
    uint64_t until = e->compact_ready ? e->compact_until : 0;
    /* Waiting for its safe point, automatic steps would only copy the tombstones it will drop. */
    int waiting = e->compact_until && !e->compact_ready;
    uint64_t safe = e->safe_txid;
    pthread_mutex_unlock(&e->mutex);
    if (waiting) return MMKV_OK;
    uint64_t pct = garbage_pct(txn);
    uint64_t stop_pct = (uint64_t)(threshold_pct - threshold_pct / AUTO_STOP_DIVISOR);
    int automatic = threshold_pct > 0 && txn->counts.garbage >= AUTO_MIN_GARBAGE &&
                    (pct >= (uint64_t)threshold_pct || (e->compact_auto && pct >= stop_pct));
    if (!until && !automatic) {
        if (e->compact_auto) { /* the automatic pass brought the garbage down: it is over */
            txn->counts.compactions++;
            __atomic_store_n(&e->compact_auto, 0, __ATOMIC_RELEASE);
        }
        return MMKV_OK;
    }
    if (!budget) {
        budget = STEP_WRITE_FACTOR * (txn->append_pos - txn->start);
        if (budget < STEP_MIN_BYTES) budget = STEP_MIN_BYTES;
        if (budget > STEP_MAX_BYTES) budget = STEP_MAX_BYTES;
    }
    mmkv_compact_result r;
    int rc = mmkv_compact_step(conn, budget, until, safe, &r);
    if (rc != MMKV_OK) return rc;
    *stepped = r.drained_bytes != 0;
    if (until && r.done) {
        txn->counts.compactions++;
        pthread_mutex_lock(&e->mutex);
        if (e->compact_until <= r.start) e->compact_until = 0;
        pthread_mutex_unlock(&e->mutex);
    } else if (!until) {
        /* An automatic pass sweeps the log as it was when it began; it ends there, or once the
        ** garbage is under its stopping point. */
        if (!e->compact_auto) e->compact_auto_end = txn->start;
        int swept = r.start >= e->compact_auto_end;
        int still = garbage_pct(txn) >= stop_pct && !r.done;
        if (swept || !still) txn->counts.compactions++;
        if (swept) e->compact_auto_end = txn->start;
        __atomic_store_n(&e->compact_auto, still, __ATOMIC_RELEASE);
    }
    return MMKV_OK;
}

int mmkv_reclaim(mmkv_conn *conn, const mmkv_commit *safe, int paced, uint64_t *given_back)
{
    mmkv_conn_clear_error(conn);
    mmkv_engine *e = conn->engine;
    if (given_back) *given_back = 0;
    if (e->readonly) return MMKV_OK;
    uint64_t start = safe->start > MMKV_DATA_START ? safe->start : MMKV_DATA_START;
    /* One reclaimer at a time: in the process, and across processes by a lock byte of its own
    ** (never the writer's, so that writers never wait for it). */
    pthread_mutex_lock(&e->reclaim_mutex);
    if (mmkv_lock_try(e->log.map.fd, MMKV_LOCK_RECLAIM, 1) != MMKV_OK) {
        pthread_mutex_unlock(&e->reclaim_mutex);
        return MMKV_OK;
    }
    int rc = MMKV_OK;
    uint64_t noted = mmkv_log_reclaimed_start(&e->log);
    if (start > noted) {
        /* The copies below the state's tail reach the disk before their originals leave it.
        ** The pages written since the last sync are unmapped first, so that writing them back
        ** interrupts no processor (txn.c, DROP_PAGES_MIN); the writer maps its newest page again
        ** at its next record. */
        if (!e->temporary) {
            uint64_t mapped = mmkv_map_mapped(&e->log.map);
            uint64_t from = e->reclaim_dropped_to / MMKV_PAGE_SIZE * MMKV_PAGE_SIZE;
            if (from < MMKV_DATA_START) from = MMKV_DATA_START;
            mmkv_map_drop_pages(&e->log.map, from, mapped);
            if (safe->tail > e->reclaim_dropped_to) e->reclaim_dropped_to = safe->tail;
            /* From the new start: below it are holes, and originals about to become holes. */
            uint64_t log_from = start / MMKV_PAGE_SIZE * MMKV_PAGE_SIZE;
            rc = mmkv_file_sync_paced(e->log.map.fd, log_from, mapped);
        }
        if (rc == MMKV_OK) rc = mmkv_failpoint("before-start-note");
        if (rc == MMKV_OK) rc = mmkv_log_write_reclaimed_start(&e->log, start);
        if (rc == MMKV_OK) noted = start;
    }
    if (rc == MMKV_OK) rc = mmkv_failpoint("before-punch");
    /* Whole pages between what this process punched and the noted start. A file system that
    ** cannot punch holes keeps the bytes: nothing is lost but the space. */
    uint64_t from = e->reclaimed > MMKV_DATA_START ? e->reclaimed : MMKV_DATA_START;
    uint64_t to = noted / MMKV_PAGE_SIZE * MMKV_PAGE_SIZE;
    uint64_t piece = paced ? PUNCH_PIECE_MIN : PUNCH_PIECE_MAX;
    while (rc == MMKV_OK && from < to) {
        uint64_t n = to - from < piece ? to - from : piece;
        uint64_t began = now_ns();
        if (mmkv_file_discard(e->log.map.fd, from, n) != MMKV_OK) break;
        uint64_t held = now_ns() - began;
        from += n;
        e->reclaimed = from;
        if (given_back) *given_back += n;
        if (!paced || from >= to) continue;
        if (held > PUNCH_HOLD_NS && piece > PUNCH_PIECE_MIN) piece /= 2;
        if (held < PUNCH_HOLD_NS / 2 && piece < PUNCH_PIECE_MAX) piece *= 2;
        uint64_t free_ns = held * PUNCH_FREE_FACTOR;
        struct timespec pause = {(time_t)(free_ns / 1000000000), (long)(free_ns % 1000000000)};
        nanosleep(&pause, NULL);
    }
    mmkv_unlock(e->log.map.fd, MMKV_LOCK_RECLAIM);
    pthread_mutex_unlock(&e->reclaim_mutex);
    if (rc != MMKV_OK)
        return mmkv_error_os(&conn->errmsg, rc, "mmkv: cannot give back the space of '%s'",
                             e->data_path);
    return MMKV_OK;
}
