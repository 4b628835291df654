/*
** The engine: opening files (one shared engine per file per process), reading through snapshots,
** and writing versions. The commit protocol lives in txn.c.
**
** Visibility. The index points at the newest version of each key, which may belong to the write
** transaction in progress. A reader with snapshot S walks back along prev_offset to the newest
** version below S.tail: bytes below a committed tail are never rewritten, so what it finds there is
** stable. Versions at or past S.tail may be rewritten under it (after a rollback), so it checks
** each one's checksum and key before trusting its prev_offset, and looks again if one fails.
*/
#include "engine.h"
#include "crc32c.h"
#include "error.h"
#include "failpoint.h"

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_RETRIES 1000 /* lookups that met a version being rewritten, before giving up */
#define READ_RETRIES_BEFORE_YIELD 16 /* then a retrying reader lets the writer run */

/* A reader that keeps meeting a version being rewritten (a writer rolling back and writing again
** where it reads) gives the writer the processor, rather than spend its retries while the writer
** waits for it: on a loaded machine they share a core. */
static void retry_pause(int attempt)
{
    if (attempt >= READ_RETRIES_BEFORE_YIELD) sched_yield();
}
#define INDEX_SUFFIX "-index"

static pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static mmkv_engine *registry;

static uint64_t record_bytes(const mmkv_record *r)
{
    return mmkv_record_size(r->header.key_len, r->header.value_len);
}

/* ---- record access with the key being looked for ---- */

typedef struct key_probe {
    mmkv_engine *engine;
    const mmkv_datum *key;
    uint64_t stable_below; /* records below this are immutable: a bad one is corruption */
    uint64_t verified;     /* offset whose checksum the caller already checked */
    int unstable;          /* met a version that failed checks past stable_below */
    uint64_t corrupt_at;
} key_probe;

/* Reads and checks the record at offset; 1 if good, 0 if unstable, or -CORRUPT. */
static int probe_read(key_probe *p, uint64_t offset, mmkv_record *record)
{
    mmkv_log *log = &p->engine->log;
    if (offset < mmkv_map_mapped(&log->map)) {
        /* The header, key and a short value span a few cache lines: miss on them all at once. */
        const unsigned char *at = mmkv_map_base(&log->map) + offset;
        __builtin_prefetch(at + 64);
        __builtin_prefetch(at + 128);
    }
    int ok = mmkv_log_record(log, offset, UINT64_MAX, record);
    if (!ok && mmkv_map_refresh(&log->map) == MMKV_OK) /* another process grew the file? */
        ok = mmkv_log_record(log, offset, UINT64_MAX, record);
    ok = ok && (offset == p->verified || mmkv_record_checksum_ok(record)) &&
         !(record->header.flags & MMKV_RECORD_PAD); /* a pad is never a key's version */
    if (ok) return 1;
    if (offset < p->stable_below) {
        p->corrupt_at = offset;
        return -MMKV_CORRUPT;
    }
    p->unstable = 1;
    return 0;
}

static int match_key(void *ctx, uint64_t offset)
{
    key_probe *p = ctx;
    mmkv_record record;
    int rc = probe_read(p, offset, &record);
    if (rc <= 0) return rc;
    mmkv_datum key;
    mmkv_record_key(&record, &key);
    return mmkv_key_equal(&key, p->key);
}

/* A TEXT key that reads as a number (in the file's text encoding) has a second slot, under that
** number's hash, so that a lookup by the number finds it (mmkv_get_similar). Returns 1 and the
** hash if key has one. */
int mmkv_engine_second_hash(const mmkv_engine *e, const mmkv_datum *key, uint64_t *hash)
{
    mmkv_datum number;
    uint64_t storage;
    if (!mmkv_text_as_number(key, e->log.text_encoding, &number, &storage)) return 0;
    *hash = mmkv_key_hash(&number) | MMKV_HASH_SECOND_SLOT;
    return 1;
}

static int hash_of_record(void *ctx, uint64_t offset, int second_slot, uint64_t *hash)
{
    key_probe *p = ctx;
    mmkv_record record;
    int rc = probe_read(p, offset, &record);
    if (rc <= 0) return rc < 0 ? -rc : MMKV_CORRUPT;
    mmkv_datum key;
    mmkv_record_key(&record, &key);
    if (second_slot) return mmkv_engine_second_hash(p->engine, &key, hash) ? MMKV_OK : MMKV_CORRUPT;
    *hash = mmkv_key_hash(&key);
    return MMKV_OK;
}

static mmkv_index_ops probe_ops(key_probe *p)
{
    mmkv_index_ops ops = {match_key, hash_of_record, p};
    return ops;
}

int mmkv_engine_corrupt_record(char **errmsg, mmkv_engine *e, uint64_t offset)
{
    return mmkv_error(errmsg, MMKV_CORRUPT,
                      "mmkv: '%s' is damaged: the record at offset %llu fails its checks",
                      e->data_path, (unsigned long long)offset);
}

static int index_error(char **errmsg, mmkv_engine *e, int rc, key_probe *p)
{
    if (rc == MMKV_CORRUPT && p && p->corrupt_at)
        return mmkv_engine_corrupt_record(errmsg, e, p->corrupt_at);
    if (rc == MMKV_CORRUPT)
        return mmkv_error(errmsg, rc, "mmkv: index file '%s' is damaged", e->index_path);
    if (rc == MMKV_BUSY)
        return mmkv_error(errmsg, rc, "mmkv: '%s' kept changing during a read", e->data_path);
    /* The rest come from growing or mapping the file: file.c says what it asked for and why. */
    return mmkv_map_error(&e->index.map, errmsg, rc, "index file", e->index_path);
}

/* ---- reading ---- */

static int replay_log(mmkv_engine *e, uint64_t from, uint64_t to, int rebuilding, char **errmsg);

/* A read-only engine with an index of its own brings it up to the log position a snapshot reads,
** from the committed records (only ever committed ones: it never needs to undo). */
static int private_reach(mmkv_engine *e, uint64_t tail, char **errmsg)
{
    if (!e->private_index || tail <= __atomic_load_n(&e->private_position, __ATOMIC_ACQUIRE))
        return MMKV_OK;
    pthread_mutex_lock(&e->mutex);
    int rc = mmkv_engine_cover(e, tail, errmsg);
    if (rc == MMKV_OK && tail > e->private_position)
        rc = replay_log(e, e->private_position, tail, 0, errmsg);
    if (rc == MMKV_OK && tail > e->private_position)
        __atomic_store_n(&e->private_position, tail, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&e->mutex);
    return rc;
}

int mmkv_snapshot_take(mmkv_conn *conn, mmkv_snapshot *snapshot)
{
    mmkv_conn_clear_error(conn);
    mmkv_engine *e = conn->engine;
    if (e->txn.owner == conn) {
        snapshot->tail = e->txn.append_pos;
        snapshot->garbage_bytes = e->txn.counts.garbage;
        return MMKV_OK;
    }
    mmkv_meta meta;
    int slot;
    int rc = mmkv_log_meta(&e->log, &meta, &slot, &conn->errmsg);
    if (rc == MMKV_OK) rc = private_reach(e, meta.committed_tail, &conn->errmsg);
    if (rc != MMKV_OK) return rc;
    snapshot->tail = meta.committed_tail;
    snapshot->garbage_bytes = meta.garbage_bytes;
    return MMKV_OK;
}

#define WALK_RETRY (-1)     /* met a version being rewritten: look the key up again */
#define WALK_TOMBSTONE (-2) /* the visible version is a tombstone: the key is deleted */

/* From the newest version of key at offset, walks back to the version visible in snapshot. */
static int walk_to_visible(mmkv_conn *conn, key_probe *p, const mmkv_snapshot *snapshot,
                           const mmkv_datum *key, uint64_t offset, mmkv_record *record)
{
    mmkv_datum k;
    while (offset >= snapshot->tail) {
        if (probe_read(p, offset, record) <= 0) return WALK_RETRY;
        mmkv_record_key(record, &k);
        if (!mmkv_key_equal(&k, key) || record->header.prev_offset >= offset) return WALK_RETRY;
        offset = record->header.prev_offset;
        if (offset == 0) return MMKV_NOTFOUND;
    }
    if (probe_read(p, offset, record) <= 0)
        return mmkv_engine_corrupt_record(&conn->errmsg, conn->engine, offset);
    mmkv_record_key(record, &k);
    if (!mmkv_key_equal(&k, key))
        return mmkv_engine_corrupt_record(&conn->errmsg, conn->engine, offset);
    return record->header.flags & MMKV_RECORD_TOMBSTONE ? WALK_TOMBSTONE : MMKV_OK;
}

static int changing_error(mmkv_conn *conn)
{
    return mmkv_error(&conn->errmsg, MMKV_BUSY, "mmkv: '%s' kept changing during a read",
                      conn->engine->data_path);
}

static void commit_from_meta(const mmkv_meta *meta, mmkv_commit *commit)
{
    commit->txid = meta->txid;
    commit->tail = meta->committed_tail;
    commit->live_count = meta->live_count;
    commit->record_count = meta->record_count;
    commit->garbage_bytes = meta->garbage_bytes;
}

int mmkv_committed(mmkv_conn *conn, mmkv_commit *commit)
{
    mmkv_conn_clear_error(conn);
    mmkv_meta meta;
    int slot;
    int rc = mmkv_log_meta(&conn->engine->log, &meta, &slot, &conn->errmsg);
    if (rc == MMKV_OK) commit_from_meta(&meta, commit);
    return rc;
}

/* Makes sure the mapping holds the records below a committed tail an owning database names. */
int mmkv_engine_cover(mmkv_engine *e, uint64_t tail, char **errmsg)
{
    if (tail <= mmkv_map_mapped(&e->log.map)) return MMKV_OK;
    int rc = mmkv_map_refresh(&e->log.map);
    if (rc != MMKV_OK) return mmkv_map_error(&e->log.map, errmsg, rc, "data file", e->data_path);
    if (tail <= mmkv_map_mapped(&e->log.map)) return MMKV_OK;
    return mmkv_error(errmsg, MMKV_CORRUPT,
                      "mmkv: '%s' is damaged: its database records commits up to byte %llu, but "
                      "the file holds %llu",
                      e->data_path, (unsigned long long)tail,
                      (unsigned long long)mmkv_map_mapped(&e->log.map));
}

/* The effective commit (as mmkv_engine_effective); *behind set if the meta slots lag the record
** in a way only an index catch-up mends. */
static void effective_commit(mmkv_engine *e, const mmkv_commit *recorded, mmkv_commit *effective,
                             int *behind)
{
    *effective = *recorded;
    *behind = 0;
    mmkv_meta meta;
    int slot;
    if (mmkv_log_meta(&e->log, &meta, &slot, NULL) != MMKV_OK) return;
    if (!(meta.flags & MMKV_META_SALVAGED)) {
        *behind = meta.txid < recorded->txid;
        return;
    }
    /* Salvaged short of the record (until a writer pads the log up to it), or padded up to it:
    ** the log holds what the meta slot says. */
    if (meta.committed_tail < recorded->tail ||
        (meta.committed_tail == recorded->tail && meta.txid == recorded->txid))
        commit_from_meta(&meta, effective);
}

void mmkv_engine_effective(mmkv_engine *e, const mmkv_commit *recorded, mmkv_commit *effective)
{
    int behind;
    effective_commit(e, recorded, effective, &behind);
}

int mmkv_snapshot_at(mmkv_conn *conn, const mmkv_commit *committed, mmkv_snapshot *snapshot)
{
    mmkv_conn_clear_error(conn);
    if (conn->engine->txn.owner == conn) return mmkv_snapshot_take(conn, snapshot);
    mmkv_commit state;
    int rc = MMKV_OK;
    if (conn->have_seen && conn->seen_txid == committed->txid &&
        conn->seen_tail == committed->tail) {
        /* Every lookup of a read transaction comes here: no second look at the meta slots. Once
        ** caught up, or salvaged short of the record, that stays so (a pad only adds garbage). */
        state = conn->seen_effective;
    } else {
        int behind;
        effective_commit(conn->engine, committed, &state, &behind);
        /* The meta slots, and so the index, lag the record: bring them up to it first (a
        ** read-only engine's own index follows the record already: private_reach). */
        if (behind && !conn->engine->private_index) rc = mmkv_txn_catch_up(conn, committed);
        if (rc == MMKV_OK) {
            conn->have_seen = 1;
            conn->seen_txid = committed->txid;
            conn->seen_tail = committed->tail;
            conn->seen_effective = state;
        }
    }
    if (rc == MMKV_OK) rc = mmkv_engine_cover(conn->engine, state.tail, &conn->errmsg);
    if (rc == MMKV_OK) rc = private_reach(conn->engine, state.tail, &conn->errmsg);
    if (rc != MMKV_OK) return rc;
    snapshot->tail = state.tail;
    snapshot->garbage_bytes = state.garbage_bytes;
    return MMKV_OK;
}

/* Finds the version of key visible in snapshot. `verified` names an offset already checked.
** A tombstone is MMKV_NOTFOUND unless tombstones_too, when it is returned like any version. */
static int find_version(mmkv_conn *conn, const mmkv_snapshot *snapshot, const mmkv_datum *key,
                        uint64_t hash, uint64_t verified, int tombstones_too, mmkv_record *record)
{
    mmkv_engine *e = conn->engine;
    key_probe p = {e, key, snapshot->tail, verified, 0, 0};
    mmkv_index_ops ops = probe_ops(&p);
    for (int attempt = 0; attempt < READ_RETRIES; retry_pause(attempt++)) {
        p.unstable = 0;
        uint64_t offset;
        int rc = mmkv_index_find(&e->index, hash, &ops, &offset);
        if (rc == MMKV_NOTFOUND && !p.unstable) return MMKV_NOTFOUND;
        if (rc != MMKV_OK && rc != MMKV_NOTFOUND) return index_error(&conn->errmsg, e, rc, &p);
        if (rc == MMKV_NOTFOUND) continue;
        /* match_key checked this version; below the tail it cannot have changed since. */
        if (offset < snapshot->tail) p.verified = offset;
        rc = walk_to_visible(conn, &p, snapshot, key, offset, record);
        if (rc == WALK_TOMBSTONE) return tombstones_too ? MMKV_OK : MMKV_NOTFOUND;
        if (rc != WALK_RETRY) return rc;
    }
    return changing_error(conn);
}

static int find_visible(mmkv_conn *conn, const mmkv_snapshot *snapshot, const mmkv_datum *key,
                        uint64_t hash, uint64_t verified, mmkv_record *record)
{
    return find_version(conn, snapshot, key, hash, verified, 0, record);
}

int mmkv_engine_newest(mmkv_conn *conn, const mmkv_snapshot *snapshot, const mmkv_datum *key,
                       uint64_t hash, uint64_t verified, mmkv_record *record)
{
    return find_version(conn, snapshot, key, hash, verified, 1, record);
}

static void row_from_record(const mmkv_record *record, mmkv_row *row)
{
    mmkv_record_key(record, &row->key);
    mmkv_record_value(record, &row->value);
    row->offset = record->offset;
}

int mmkv_get(mmkv_conn *conn, const mmkv_snapshot *snapshot, const mmkv_datum *key, mmkv_row *row)
{
    mmkv_conn_clear_error(conn);
    mmkv_record record;
    int rc = find_visible(conn, snapshot, key, mmkv_key_hash(key), 0, &record);
    if (rc == MMKV_OK) row_from_record(&record, row);
    return rc;
}

/* Does the record at offset hold a key SQLite could find equal to the number p->key, once it
** applies NUMERIC affinity to the key? Numbers equal to it, and TEXT that reads as it. */
static int match_number_like(void *ctx, uint64_t offset)
{
    key_probe *p = ctx;
    mmkv_record record;
    int rc = probe_read(p, offset, &record);
    if (rc <= 0) return rc;
    mmkv_datum key, number;
    uint64_t storage;
    mmkv_record_key(&record, &key);
    if (key.type == MMKV_TEXT &&
        mmkv_text_as_number(&key, p->engine->log.text_encoding, &number, &storage))
        return mmkv_key_equal(&number, p->key);
    return mmkv_key_equal(&key, p->key);
}

/* Collects into `visible` the visible versions of every key on target's probe path that `match`
** accepts. */
static int collect_visible(mmkv_conn *conn, const mmkv_snapshot *snapshot, const mmkv_datum *target,
                           uint64_t hash, int (*match)(void *, uint64_t), mmkv_offsets *visible)
{
    mmkv_engine *e = conn->engine;
    key_probe p = {e, target, snapshot->tail, 0, 0, 0};
    mmkv_index_ops ops = {match, hash_of_record, &p};
    mmkv_offsets newest;
    mmkv_offsets_init(&newest);
    size_t kept = visible->count;
    int rc = MMKV_BUSY;
    for (int attempt = 0; attempt < READ_RETRIES && rc == MMKV_BUSY; retry_pause(attempt++)) {
        p.unstable = 0;
        visible->count = kept;
        rc = mmkv_index_find_all(&e->index, hash, &ops, &newest);
        if (rc != MMKV_OK) {
            rc = index_error(&conn->errmsg, e, rc, &p);
            break;
        }
        if (p.unstable) rc = MMKV_BUSY;
        for (size_t i = 0; i < newest.count && rc == MMKV_OK; i++) {
            mmkv_record record;
            if (probe_read(&p, newest.items[i], &record) <= 0) {
                rc = MMKV_BUSY;
                break;
            }
            /* A newest version past the snapshot may be rewritten under us: compare against a
            ** copy of its key. Below the tail it never changes. */
            mmkv_datum key;
            mmkv_record_key(&record, &key);
            void *copy = NULL;
            if (newest.items[i] >= snapshot->tail && key.len) {
                if (!(copy = malloc(key.len))) {
                    rc = mmkv_error(&conn->errmsg, MMKV_NOMEM, "out of memory");
                    break;
                }
                key.bytes = memcpy(copy, key.bytes, key.len);
            }
            rc = walk_to_visible(conn, &p, snapshot, &key, newest.items[i], &record);
            free(copy);
            if (rc == WALK_RETRY)
                rc = MMKV_BUSY;
            else if (rc == MMKV_NOTFOUND || rc == WALK_TOMBSTONE)
                rc = MMKV_OK;
            else if (rc == MMKV_OK && (rc = mmkv_offsets_add(visible, record.offset)) != MMKV_OK)
                rc = mmkv_error(&conn->errmsg, rc, "out of memory");
        }
    }
    mmkv_offsets_free(&newest);
    return rc == MMKV_BUSY ? changing_error(conn) : rc;
}

int mmkv_get_similar(mmkv_conn *conn, const mmkv_snapshot *snapshot, const mmkv_datum *probe,
                     mmkv_emit_fn emit, void *ctx)
{
    mmkv_conn_clear_error(conn);
    mmkv_offsets visible;
    mmkv_offsets_init(&visible);
    mmkv_datum number;
    uint64_t storage;
    int rc = MMKV_OK;
    const mmkv_datum *as_number = probe;
    if (probe->type == MMKV_TEXT || probe->type == MMKV_BLOB) {
        rc = collect_visible(conn, snapshot, probe, mmkv_key_hash(probe), match_key, &visible);
        int encoding = conn->engine->log.text_encoding;
        as_number = rc == MMKV_OK && mmkv_text_as_number(probe, encoding, &number, &storage)
                        ? &number
                        : NULL;
    }
    if (as_number) {
        /* Numbers equal to it, under their own slots; TEXT reading as it, under second slots. */
        uint64_t hash = mmkv_key_hash(as_number);
        rc = collect_visible(conn, snapshot, as_number, hash, match_number_like, &visible);
        if (rc == MMKV_OK)
            rc = collect_visible(conn, snapshot, as_number, hash | MMKV_HASH_SECOND_SLOT,
                                 match_number_like, &visible);
    }
    for (size_t i = 0; i < visible.count && rc == MMKV_OK; i++) {
        mmkv_record record;
        mmkv_row row;
        if (!mmkv_log_record(&conn->engine->log, visible.items[i], UINT64_MAX, &record)) {
            rc = mmkv_engine_corrupt_record(&conn->errmsg, conn->engine, visible.items[i]);
            break;
        }
        row_from_record(&record, &row);
        rc = emit(ctx, &row);
    }
    mmkv_offsets_free(&visible);
    return rc;
}

#define SCAN_PREFETCH_AHEAD 8 /* records whose index slots a scan asks for before it needs them */

struct mmkv_scan {
    mmkv_conn *conn;
    mmkv_snapshot snapshot;
    uint64_t position;
    uint64_t prefetched; /* records before this offset have had their index slot prefetched */
    int ahead;           /* how many of them lie past position */
};

int mmkv_scan_open(mmkv_conn *conn, const mmkv_snapshot *snapshot, mmkv_scan **out)
{
    mmkv_scan *scan = calloc(1, sizeof *scan);
    if (!scan) return MMKV_NOMEM;
    scan->conn = conn;
    scan->snapshot = *snapshot;
    scan->position = scan->prefetched = MMKV_DATA_START;
    *out = scan;
    return MMKV_OK;
}

/* Each row of a scan probes the index at random: ask for the slots of the next records early, so
** that their cache misses overlap. Only a hint; a record that does not parse is left alone. */
static void prefetch_slots(mmkv_scan *scan, uint64_t end)
{
    mmkv_engine *e = scan->conn->engine;
    if (scan->prefetched < scan->position) {
        scan->prefetched = scan->position;
        scan->ahead = 0;
    }
    while (scan->ahead < SCAN_PREFETCH_AHEAD && scan->prefetched < end) {
        mmkv_record record;
        if (!mmkv_log_record(&e->log, scan->prefetched, end, &record)) break;
        mmkv_datum key;
        mmkv_record_key(&record, &key);
        mmkv_index_prefetch(&e->index, mmkv_key_hash(&key));
        scan->prefetched += mmkv_record_size(record.header.key_len, record.header.value_len);
        scan->ahead++;
    }
}

/* Walks the log in order; a record is a row if it is its key's visible version. */
int mmkv_scan_next(mmkv_scan *scan, mmkv_row *row)
{
    mmkv_conn *conn = scan->conn;
    mmkv_conn_clear_error(conn);
    mmkv_engine *e = conn->engine;
    uint64_t end = scan->snapshot.tail;
    if (e->txn.owner == conn && e->txn.append_pos < end) end = e->txn.append_pos; /* rolled back */
    while (scan->position < end) {
        mmkv_record record;
        uint64_t offset = scan->position;
        if (!mmkv_log_record(&e->log, offset, end, &record) || !mmkv_record_checksum_ok(&record))
            return mmkv_engine_corrupt_record(&conn->errmsg, e, offset);
        scan->position += mmkv_record_size(record.header.key_len, record.header.value_len);
        if (scan->ahead > 0) scan->ahead--;
        if (record.header.flags & MMKV_RECORD_PAD) continue;
        if (scan->snapshot.garbage_bytes == 0) {
            /* No superseded version or tombstone anywhere below the tail: every record is live.
            ** A record that has a previous version, or is a tombstone, says otherwise. */
            if (record.header.prev_offset || (record.header.flags & MMKV_RECORD_TOMBSTONE))
                return mmkv_error(&conn->errmsg, MMKV_CORRUPT,
                                  "mmkv: '%s' is damaged: its commit counts no old versions, but "
                                  "the record at offset %llu replaces one",
                                  e->data_path, (unsigned long long)offset);
            row_from_record(&record, row);
            return MMKV_OK;
        }
        if (record.header.flags & MMKV_RECORD_TOMBSTONE) continue;
        prefetch_slots(scan, end);
        mmkv_datum key;
        mmkv_record_key(&record, &key);
        mmkv_record visible;
        int rc = find_visible(conn, &scan->snapshot, &key, mmkv_key_hash(&key), offset, &visible);
        if (rc == MMKV_NOTFOUND || (rc == MMKV_OK && visible.offset != offset)) continue;
        if (rc != MMKV_OK) return rc;
        row_from_record(&record, row);
        return MMKV_OK;
    }
    return MMKV_NOTFOUND;
}

void mmkv_scan_close(mmkv_scan *scan)
{
    free(scan);
}

uint64_t mmkv_live_count(mmkv_conn *conn)
{
    mmkv_engine *e = conn->engine;
    if (e->txn.owner == conn) return e->txn.counts.live;
    mmkv_meta meta;
    int slot;
    return mmkv_log_meta(&e->log, &meta, &slot, NULL) == MMKV_OK ? meta.live_count : 0;
}

/* ---- writing ---- */

static int writer_check(mmkv_conn *conn)
{
    if (conn->engine->txn.owner == conn) return MMKV_OK;
    return mmkv_error(&conn->errmsg, MMKV_MISUSE, "mmkv: write outside a write transaction");
}

static int check_datum(mmkv_conn *conn, const mmkv_datum *d, int is_key)
{
    if (d->type < MMKV_INTEGER || d->type > (is_key ? MMKV_BLOB : MMKV_NULL))
        return mmkv_error(&conn->errmsg, MMKV_MISUSE, "mmkv: invalid %s type %d",
                          is_key ? "key" : "value", d->type);
    if ((d->type == MMKV_INTEGER || d->type == MMKV_FLOAT) && d->len != 8)
        return mmkv_error(&conn->errmsg, MMKV_MISUSE, "mmkv: numbers are 8 bytes");
    if (d->len > (is_key ? MMKV_MAX_KEY_BYTES : MMKV_MAX_VALUE_BYTES))
        return mmkv_error(&conn->errmsg, MMKV_ERROR, "mmkv: %s too large (%u bytes)",
                          is_key ? "key" : "value", d->len);
    return MMKV_OK;
}

static int remember_written(mmkv_txn *txn, uint64_t offset)
{
    if (txn->n_written == txn->cap_written) {
        size_t cap = txn->cap_written ? txn->cap_written * 2 : 1024;
        uint64_t *grown = realloc(txn->written, cap * sizeof *grown);
        if (!grown) return MMKV_NOMEM;
        txn->written = grown;
        txn->cap_written = cap;
    }
    txn->written[txn->n_written++] = offset;
    return MMKV_OK;
}

/* Points key's second slot at offset (or, with offset 0, forgets it). */
static int store_shadow(mmkv_engine *e, const mmkv_datum *key, uint64_t offset, char **errmsg)
{
    uint64_t hash;
    if (!mmkv_engine_second_hash(e, key, &hash)) return MMKV_OK;
    key_probe p = {e, key, UINT64_MAX, 0, 0, 0};
    mmkv_index_ops ops = probe_ops(&p);
    mmkv_slot_ref ref;
    int rc = offset ? mmkv_index_make_room(&e->index, &ops) : MMKV_OK;
    if (rc == MMKV_OK) rc = mmkv_index_locate(&e->index, hash, &ops, &ref);
    if (rc == MMKV_NOTFOUND && !offset) return MMKV_OK;
    if (rc != MMKV_OK && rc != MMKV_NOTFOUND) return index_error(errmsg, e, rc, &p);
    if (offset)
        mmkv_index_store(&e->index, &ref, hash, offset);
    else
        mmkv_index_forget(&e->index, &ref);
    return MMKV_OK;
}

/* Appends a version of key (a tombstone if value is NULL) after the version at prev. */
static int append_version(mmkv_conn *conn, const mmkv_slot_ref *ref, uint64_t hash,
                          const mmkv_datum *key, const mmkv_datum *value, uint64_t prev)
{
    mmkv_engine *e = conn->engine;
    mmkv_txn *txn = &e->txn;
    static const mmkv_datum no_value = {MMKV_NULL, 0, NULL};
    uint64_t size;
    int rc = remember_written(txn, txn->append_pos);
    if (rc != MMKV_OK) return mmkv_error(&conn->errmsg, rc, "out of memory");
    rc = mmkv_log_write_record(&e->log, txn->append_pos, key, value ? value : &no_value,
                               value ? 0 : MMKV_RECORD_TOMBSTONE, txn->txid, prev, &size);
    if (rc != MMKV_OK) {
        txn->n_written--;
        return mmkv_map_error(&e->log.map, &conn->errmsg, rc, "data file", e->data_path);
    }
    mmkv_index_store(&e->index, ref, hash, txn->append_pos);
    uint64_t offset = txn->append_pos;
    txn->append_pos += size;
    txn->counts.records++;
    return store_shadow(e, key, offset, &conn->errmsg);
}

/* Locates key for a write: its slot and its newest version, if any. */
static int locate_for_write(mmkv_conn *conn, const mmkv_datum *key, uint64_t hash,
                            mmkv_slot_ref *ref, mmkv_record *newest)
{
    mmkv_engine *e = conn->engine;
    key_probe p = {e, key, e->txn.append_pos, 0, 0, 0};
    mmkv_index_ops ops = probe_ops(&p);
    int rc = mmkv_index_make_room(&e->index, &ops);
    if (rc == MMKV_OK) rc = mmkv_index_locate(&e->index, hash, &ops, ref);
    if (rc == MMKV_NOTFOUND) return rc;
    if (rc != MMKV_OK) return index_error(&conn->errmsg, e, rc, &p);
    if (probe_read(&p, mmkv_slot_offset(*ref->slot), newest) <= 0)
        return mmkv_engine_corrupt_record(&conn->errmsg, e, mmkv_slot_offset(*ref->slot));
    return MMKV_OK;
}

int mmkv_put(mmkv_conn *conn, const mmkv_datum *key, const mmkv_datum *value, int mode)
{
    mmkv_conn_clear_error(conn);
    int rc = writer_check(conn);
    if (rc == MMKV_OK) rc = check_datum(conn, key, 1);
    if (rc == MMKV_OK) rc = check_datum(conn, value, 0);
    if (rc != MMKV_OK) return rc;
    mmkv_txn *txn = &conn->engine->txn;
    uint64_t hash = mmkv_key_hash(key);
    mmkv_slot_ref ref;
    mmkv_record newest;
    rc = locate_for_write(conn, key, hash, &ref, &newest);
    if (rc != MMKV_OK && rc != MMKV_NOTFOUND) return rc;
    int exists = rc == MMKV_OK && !(newest.header.flags & MMKV_RECORD_TOMBSTONE);
    if (exists && mode == MMKV_PUT_INSERT) return MMKV_CONSTRAINT;
    rc = append_version(conn, &ref, hash, key, value, ref.slot ? newest.offset : 0);
    if (rc != MMKV_OK) return rc;
    if (exists)
        txn->counts.garbage += record_bytes(&newest);
    else
        txn->counts.live++;
    return MMKV_OK;
}

int mmkv_delete(mmkv_conn *conn, const mmkv_datum *key)
{
    mmkv_conn_clear_error(conn);
    int rc = writer_check(conn);
    if (rc == MMKV_OK) rc = check_datum(conn, key, 1);
    if (rc != MMKV_OK) return rc;
    mmkv_txn *txn = &conn->engine->txn;
    uint64_t hash = mmkv_key_hash(key);
    mmkv_slot_ref ref;
    mmkv_record newest;
    rc = locate_for_write(conn, key, hash, &ref, &newest);
    if (rc != MMKV_OK) return rc;
    if (newest.header.flags & MMKV_RECORD_TOMBSTONE) return MMKV_NOTFOUND;
    uint64_t before = txn->append_pos;
    rc = append_version(conn, &ref, hash, key, NULL, newest.offset);
    if (rc != MMKV_OK) return rc;
    txn->counts.live--;
    txn->counts.garbage += record_bytes(&newest) + (txn->append_pos - before);
    return MMKV_OK;
}

/* Undoes the transaction's records past the first `keep`, newest first: each key's slot goes back
** to the version before. Cannot fail: every slot touched exists, and the records are our own. */
void mmkv_engine_undo(mmkv_engine *e, size_t keep)
{
    mmkv_txn *txn = &e->txn;
    while (txn->n_written > keep) {
        uint64_t offset = txn->written[--txn->n_written];
        mmkv_record record;
        if (!mmkv_log_record(&e->log, offset, UINT64_MAX, &record)) continue;
        mmkv_datum key;
        mmkv_record_key(&record, &key);
        uint64_t hash = mmkv_key_hash(&key);
        key_probe p = {e, &key, UINT64_MAX, 0, 0, 0};
        mmkv_index_ops ops = probe_ops(&p);
        mmkv_slot_ref ref;
        if (mmkv_index_locate(&e->index, hash, &ops, &ref) != MMKV_OK) continue;
        if (record.header.prev_offset)
            mmkv_index_store(&e->index, &ref, hash, record.header.prev_offset);
        else
            mmkv_index_forget(&e->index, &ref);
        store_shadow(e, &key, record.header.prev_offset, NULL);
    }
}

/* ---- the index as derived data ---- */

/* Replays the committed log from `from` into the index, newest version last. */
static int replay_log(mmkv_engine *e, uint64_t from, uint64_t to, int rebuilding, char **errmsg)
{
    for (uint64_t pos = from; pos < to;) {
        mmkv_record record;
        if (!mmkv_log_record(&e->log, pos, to, &record) || !mmkv_record_checksum_ok(&record))
            return mmkv_engine_corrupt_record(errmsg, e, pos);
        if (record.header.flags & MMKV_RECORD_PAD) {
            pos += record_bytes(&record);
            continue;
        }
        mmkv_datum key;
        mmkv_record_key(&record, &key);
        uint64_t hash = mmkv_key_hash(&key);
        key_probe p = {e, &key, to, pos, 0, 0};
        mmkv_index_ops ops = probe_ops(&p);
        int rc;
        uint64_t second;
        if (rebuilding) {
            rc = mmkv_index_rebuild_add(&e->index, hash, &ops, pos);
            if (rc == MMKV_OK && mmkv_engine_second_hash(e, &key, &second))
                rc = mmkv_index_rebuild_add(&e->index, second, &ops, pos);
        } else {
            mmkv_slot_ref ref;
            rc = mmkv_index_make_room(&e->index, &ops);
            if (rc == MMKV_OK) rc = mmkv_index_locate(&e->index, hash, &ops, &ref);
            if (rc == MMKV_OK || rc == MMKV_NOTFOUND) {
                mmkv_index_store(&e->index, &ref, hash, pos);
                rc = store_shadow(e, &key, pos, errmsg);
            }
        }
        if (rc != MMKV_OK) return index_error(errmsg, e, rc, &p);
        pos += record_bytes(&record);
    }
    return MMKV_OK;
}

int mmkv_engine_rebuild_index(mmkv_engine *e, uint64_t tail, uint64_t records, char **errmsg)
{
    /* The count only sizes the new table: never trust it past what the log could hold. */
    uint64_t at_most =
        tail > MMKV_DATA_START ? (tail - MMKV_DATA_START) / sizeof(mmkv_record_header) : 0;
    if (records > at_most) records = at_most;
    int rc = mmkv_index_rebuild_begin(&e->index, records);
    if (rc == MMKV_OK) rc = mmkv_failpoint("mid-recovery");
    if (rc != MMKV_OK) return index_error(errmsg, e, rc, NULL);
    rc = replay_log(e, MMKV_DATA_START, tail, 1, errmsg);
    if (rc != MMKV_OK) return rc;
    mmkv_index_rebuild_end(&e->index);
    mmkv_index_header_of(&e->index)->log_position = tail;
    return MMKV_OK;
}

/* ---- salvage: the longest whole prefix of a log whose commits skipped their syncs ---- */

typedef struct salvaged {
    uint64_t stopped;   /* where the walk stopped: a record that fails, or the end */
    uint64_t tail;      /* end of the last whole transaction */
    uint64_t txid;      /* its id (0: none) */
    uint64_t txn_start; /* where its records begin */
    mmkv_counts counts; /* the log's counts up to tail */
} salvaged;

/* Adds record r to the counts as the writer did (mmkv_put, mmkv_delete). 0 if its previous
** version is not an earlier record, or it deletes a key that had none. */
static int count_record(mmkv_log *log, const mmkv_record *r, mmkv_counts *c)
{
    if (r->header.flags & MMKV_RECORD_PAD) {
        c->garbage += record_bytes(r);
        return 1;
    }
    mmkv_record prev;
    uint64_t at = r->header.prev_offset;
    if (at && (at >= r->offset || !mmkv_log_record(log, at, r->offset, &prev))) return 0;
    int prev_live = at && !(prev.header.flags & MMKV_RECORD_TOMBSTONE);
    if (r->header.flags & MMKV_RECORD_TOMBSTONE) {
        if (!prev_live) return 0;
        c->live--;
        c->garbage += record_bytes(&prev) + record_bytes(r);
    } else if (prev_live) {
        c->garbage += record_bytes(&prev);
    } else {
        c->live++;
    }
    c->records++;
    return 1;
}

/* Walks the log from its start while records hold their checksums and transactions follow one
** another whole (format.h, SALVAGE). Each record's checksum is checked once; reading a previous
** version's header needs no check, as it lies in the part already walked. Fails only if the
** whole file cannot be mapped: what lies past the mapping must never be taken for lost. */
static int salvage_walk(mmkv_engine *e, salvaged *out)
{
    mmkv_log *log = &e->log;
    int rc = mmkv_map_refresh(&log->map);
    if (rc != MMKV_OK) return rc;
    uint64_t end = mmkv_map_mapped(&log->map);
    memset(out, 0, sizeof *out);
    out->tail = out->txn_start = MMKV_DATA_START;
    mmkv_counts counts = out->counts;
    uint64_t txid = 0, start = MMKV_DATA_START;
    int in_txn = 0;
    uint64_t pos = MMKV_DATA_START;
    for (; pos < end; out->stopped = pos) {
        mmkv_record r;
        if (!mmkv_log_record(log, pos, end, &r) || !mmkv_record_checksum_ok(&r)) break;
        if (in_txn ? r.header.txid != txid : r.header.txid <= out->txid) break;
        if (!in_txn) {
            in_txn = 1;
            txid = r.header.txid;
            start = pos;
            counts = out->counts;
        }
        if (!count_record(log, &r, &counts)) break;
        pos += record_bytes(&r);
        if (r.header.flags & MMKV_RECORD_TXN_END) {
            out->tail = pos;
            out->txid = txid;
            out->txn_start = start;
            out->counts = counts;
            in_txn = 0;
        }
    }
    out->stopped = pos;
    return MMKV_OK;
}

/* Brings a file that carries the unsynced-commits notice to the longest whole prefix of its log,
** if the meta slots (or the lack of them) say otherwise: the rest of the file is cleared, so that
** nothing past it can ever pass for a later transaction, and both meta slots name the prefix.
**
** Without the notice (`unsynced` 0) only a file its database owns comes here, having lost both
** meta slots, which it does not sync: the slots are rewritten from the log and nothing is cleared,
** since the database's commit record decides, and records it names that the log lacks are damage
** to report, not to paper over. */
static int salvage(mmkv_engine *e, int unsynced, const mmkv_meta *found, mmkv_meta *meta,
                   char **errmsg)
{
    salvaged s;
    int rc = salvage_walk(e, &s);
    if (rc != MMKV_OK) return mmkv_map_error(&e->log.map, errmsg, rc, "data file", e->data_path);
    uint64_t durable = 0;
    if (unsynced && mmkv_log_notice(&e->log, &durable) && s.tail < durable)
        return mmkv_error(errmsg, MMKV_CORRUPT,
                          "mmkv: '%s' is damaged: the record at offset %llu fails its checks, "
                          "below byte %llu, up to which the log was made durable",
                          e->data_path, (unsigned long long)s.stopped, (unsigned long long)durable);
    /* The meta slots name the prefix already (marked as salvage's, where a database's record may
    ** name more: see mmkv_engine_effective). */
    if (found && found->txid == s.txid && found->committed_tail == s.tail &&
        (!unsynced || (found->flags & MMKV_META_SALVAGED))) {
        *meta = *found;
        return MMKV_OK;
    }
    /* The tail is cleared, durably, before the meta slots name the prefix: once they do, commits
    ** follow it, and stale whole transactions left past them could pass for later ones in the
    ** next salvage. */
    uint64_t size = 0;
    rc = unsynced ? mmkv_file_size(e->log.map.fd, &size) : MMKV_OK;
    if (rc == MMKV_OK && size > s.tail)
        rc = mmkv_file_discard(e->log.map.fd, s.tail, size - s.tail);
    if (rc == MMKV_OK && unsynced) rc = mmkv_file_sync(e->log.map.fd);
    if (rc != MMKV_OK) return mmkv_error_os(errmsg, rc, "mmkv: cannot salvage '%s'", e->data_path);
    memset(meta, 0, sizeof *meta);
    meta->txid = s.txid;
    meta->committed_tail = s.tail;
    meta->live_count = s.counts.live;
    meta->record_count = s.counts.records;
    meta->garbage_bytes = s.counts.garbage;
    meta->txn_start = s.txn_start;
    meta->flags = unsynced ? MMKV_META_SALVAGED : 0;
    mmkv_meta_seal(meta);
    for (int slot = 0; slot < 2 && rc == MMKV_OK; slot++)
        rc = mmkv_log_write_meta(&e->log, slot, meta, 1);
    if (rc != MMKV_OK) return mmkv_error_os(errmsg, rc, "mmkv: cannot salvage '%s'", e->data_path);
    return MMKV_OK;
}

static int same_boot(const mmkv_index_header *h)
{
    uint8_t now[16], zero[16] = {0};
    mmkv_boot_id(now);
    return memcmp(now, zero, 16) != 0 && memcmp(now, h->boot_id, 16) == 0;
}

/*
** With no other process using the files: make the index current, whatever state it is in. The
** header is marked in use, durably, and writer_active stays set while slots are being repaired, so
** that a crash in the middle can never leave a half-made index that passes for whole.
*/
static int recover_index(mmkv_engine *e, char **errmsg)
{
    mmkv_meta meta;
    int slot;
    /* Commits that skipped their syncs: a power cut may have lost meta slots and records alike.
    ** A file its database owns does not sync its meta slots at all. */
    int notice = mmkv_log_notice(&e->log, NULL);
    int rebuild_meta = notice || e->log.owner_id != 0;
    int rc = mmkv_log_meta(&e->log, &meta, &slot, rebuild_meta ? NULL : errmsg);
    if (rc != MMKV_OK && !rebuild_meta) return rc;
    int have_meta = rc == MMKV_OK;
    mmkv_index_header *h = mmkv_index_header_of(&e->index);
    uint64_t id = e->log.file_id;
    int usable = have_meta && mmkv_index_header_usable(&e->index, id, 0);
    /* Clean: current, or behind and replayed from where it stopped. */
    int replay = usable && h->state == MMKV_INDEX_CLEAN && h->log_position <= meta.committed_tail &&
                 h->log_position >= MMKV_DATA_START;
    /* Its last user died between transactions in this boot: every slot store reached the page
    ** cache, so it is whole, unless something else damaged it since; one pass checks that. */
    int trust = usable && h->state == MMKV_INDEX_IN_USE && !h->writer_active && same_boot(h) &&
                mmkv_index_slots_verify(&e->index, meta.live_count, meta.record_count);
    /* Clean and current: nothing to do, and nothing is written, so that a table only read leaves
    ** its files as they were. The first writer marks the index in use (mmkv_index_begin_writes). */
    if (replay && h->log_position == meta.committed_tail) return MMKV_OK;
    uint64_t from = replay ? h->log_position : 0; /* the header is only readable if usable */
    if (!replay && !trust && (notice || !have_meta) &&
        (rc = salvage(e, notice, have_meta ? &meta : NULL, &meta, errmsg)) != MMKV_OK)
        return rc;
    if (!replay && !trust && (rc = mmkv_index_reset(&e->index, id)) != MMKV_OK)
        return index_error(errmsg, e, rc, NULL);
    h->writer_active = !trust;
    if ((rc = mmkv_index_mark_in_use(&e->index)) != MMKV_OK)
        return index_error(errmsg, e, rc, NULL);
    if (replay)
        rc = replay_log(e, from, meta.committed_tail, 0, errmsg);
    else if (!trust)
        rc = mmkv_engine_rebuild_index(e, meta.committed_tail, meta.record_count, errmsg);
    if (rc != MMKV_OK) return rc;
    h->log_position = meta.committed_tail;
    h->writer_active = 0;
    return MMKV_OK;
}

/* ---- opening and closing ---- */

static void engine_free(mmkv_engine *e)
{
    if (mmkv_map_base(&e->index.map)) mmkv_index_unmap(&e->index);
    if (mmkv_map_base(&e->log.map)) mmkv_log_close(&e->log);
    if (e->index.map.fd >= 0) close(e->index.map.fd);
    if (e->log.map.fd >= 0) close(e->log.map.fd);
    pthread_mutex_destroy(&e->mutex);
    free(e->txn.written);
    free(e->txn.savepoints);
    free(e->data_path);
    free(e->index_path);
    free(e->user);
    free(e);
}

static int engine_new(const char *data_path, const char *user, mmkv_engine **out)
{
    mmkv_engine *e = calloc(1, sizeof *e);
    if (!e) return MMKV_NOMEM;
    e->log.map.fd = -1;
    e->index.map.fd = -1;
    pthread_mutex_init(&e->mutex, NULL);
    e->data_path = strdup(data_path);
    e->user = strdup(user ? user : "a table");
    if (e->data_path && asprintf(&e->index_path, "%s%s", data_path, INDEX_SUFFIX) < 0)
        e->index_path = NULL;
    if (!e->data_path || !e->index_path || !e->user) {
        engine_free(e);
        return MMKV_NOMEM;
    }
    *out = e;
    return MMKV_OK;
}

/* A data file answers to one authority: the database that owns it, or (owner 0) its own meta
** slots. Another database must not take it over, since the two would disagree on what is
** committed. Checked before anything is written to the file. */
static int check_owner(mmkv_engine *e, const mmkv_open_options *options, char **errmsg)
{
    uint64_t have = e->log.owner_id, want = options->owner_id;
    if (have == want) return MMKV_OK;
    mmkv_home home;
    int known = have && mmkv_log_home(&e->log, &home) && home.path_len;
    if (want == 0)
        return mmkv_error(errmsg, MMKV_ERROR,
                          "mmkv: data file '%s' belongs to %s%s%s: open it from that database's "
                          "table",
                          e->data_path, known ? "the database '" : "a database",
                          known ? home.path : "", known ? "'" : "");
    if (have == 0)
        return mmkv_error(errmsg, MMKV_ERROR,
                          "mmkv: data file '%s' belongs to no database (it is shared by in-memory "
                          "databases); it cannot be used from this one",
                          e->data_path);
    return mmkv_error(errmsg, MMKV_ERROR,
                      "mmkv: data file '%s' belongs to another table%s%s%s; it cannot be used "
                      "from this one",
                      e->data_path, known ? " (of the database '" : "", known ? home.path : "",
                      known ? "')" : "");
}

static const char *encoding_name(int encoding)
{
    return encoding == MMKV_TEXT_UTF16LE   ? "UTF-16le"
           : encoding == MMKV_TEXT_UTF16BE ? "UTF-16be"
                                           : "UTF-8";
}

/* TEXT is kept byte for byte in the file's encoding, which its creator chose. Text converted to
** another encoding would not come back byte for byte (lone surrogates, noncharacters and bytes
** that are not UTF-8 turn into U+FFFD), and distinct keys would collide: a file is used only in
** its own encoding (an in-memory database of another encoding sharing it, or a copy of a database
** reloaded in another one, is refused). A file of mmkv 0.1 (format version 1) kept all text in
** UTF-8 whatever its database's encoding, and is still used so, SQLite converting at the edge as
** it did then. */
static int check_encoding(const mmkv_engine *e, const mmkv_open_options *options, char **errmsg)
{
    int want = options->text_encoding; /* 0: the opener reads no text (a copy) */
    if (!want || e->log.text_encoding == want || e->log.format_version < 2) return MMKV_OK;
    const char *have = encoding_name(e->log.text_encoding);
    return mmkv_error(errmsg, MMKV_ERROR,
                      "mmkv: data file '%s' holds %s text and cannot be used from a %s database "
                      "(text would not round-trip between the two encodings): use it from a %s "
                      "database",
                      e->data_path, have, encoding_name(want), have);
}

/*
** READ-ONLY. A read-only engine (a read-only database, PRAGMA query_only, or files the user cannot
** write) opens its files O_RDONLY, maps them PROT_READ and writes nothing, ever. It uses the index
** on disk if that is clean and reflects exactly the committed state it is told of (taking the
** open lock shared, so that no writer's open rebuilds it under it; writers elsewhere keep it up to
** date as they commit); otherwise it builds an index of its own in memory (a memfd) from the log,
** takes no open lock (so the next writer's open repairs the one on disk), and brings it up to
** each newer commit a reader asks for from the committed records (private_reach).
*/
static int open_private_index(mmkv_engine *e, uint64_t tail, uint64_t records, char **errmsg)
{
    int fd = memfd_create("mmkv-index", MFD_CLOEXEC);
    if (fd < 0)
        return mmkv_error(errmsg, MMKV_IOERR, "mmkv: cannot make an index in memory for '%s': %s",
                          e->data_path, strerror(errno));
    e->index.map.fd = fd;
    int rc = mmkv_index_map(&e->index, fd, e->index_path, 1);
    if (rc != MMKV_OK)
        return mmkv_map_error(&e->index.map, errmsg, rc, "index in memory", e->data_path);
    if ((rc = mmkv_index_reset(&e->index, e->log.file_id)) != MMKV_OK)
        return index_error(errmsg, e, rc, NULL);
    rc = mmkv_engine_rebuild_index(e, tail, records, errmsg);
    if (rc != MMKV_OK) return rc;
    e->private_index = 1;
    e->private_position = tail;
    return MMKV_OK;
}

static int open_readonly(mmkv_engine *e, int fd, const mmkv_open_options *options, char **errmsg)
{
    e->readonly = 1;
    int rc = mmkv_log_open(&e->log, fd, e->data_path, 0, errmsg);
    e->log.map.fd = fd;
    if (rc == MMKV_OK && !e->temporary) rc = check_owner(e, options, errmsg);
    if (rc == MMKV_OK) rc = check_encoding(e, options, errmsg);
    if (rc != MMKV_OK) return rc;
    mmkv_meta meta;
    int slot;
    if (mmkv_log_meta(&e->log, &meta, &slot, NULL) != MMKV_OK || mmkv_log_notice(&e->log, NULL))
        return mmkv_error(errmsg, MMKV_READONLY,
                          "mmkv: '%s' needs recovery after a crash or power loss, which a "
                          "read-only connection cannot do: open it once from a connection that "
                          "can write it",
                          e->data_path);
    uint64_t tail = options->committed ? options->committed->tail : meta.committed_tail;
    uint64_t records = options->committed ? options->committed->record_count : meta.record_count;
    int index_fd;
    if (mmkv_file_open(e->index_path, MMKV_OPEN_READONLY, &index_fd) == MMKV_OK) {
        e->index.map.fd = index_fd;
        int usable = mmkv_lock_wait(fd, MMKV_LOCK_OPEN, 0) == MMKV_OK &&
                     mmkv_index_map(&e->index, index_fd, e->index_path, 0) == MMKV_OK &&
                     mmkv_index_header_usable(&e->index, e->log.file_id, 1) &&
                     mmkv_index_header_of(&e->index)->log_position == tail;
        if (usable) return MMKV_OK;
        mmkv_unlock(fd, MMKV_LOCK_OPEN);
        if (e->index.map.base) mmkv_index_unmap(&e->index);
        close(index_fd);
        e->index.map.fd = -1;
    }
    rc = mmkv_engine_cover(e, tail, errmsg);
    return rc == MMKV_OK ? open_private_index(e, tail, records, errmsg) : rc;
}

/* Opens the data file (creating it if absent and asked to), checks whose it is, then opens the
** index and brings it up to date. Nothing is written before the owner is checked. A data file
** that cannot be written is opened read-only. */
static int engine_open_files(mmkv_engine *e, const mmkv_open_options *options, char **errmsg)
{
    int fd;
    int rc = mmkv_file_open(e->data_path,
                           options->readonly ? MMKV_OPEN_READONLY : MMKV_OPEN_EXISTING, &fd);
    if (rc == MMKV_NOTFOUND && !options->readonly && (!options->must_exist || e->temporary)) {
        /* Made durable whatever the sync mode (but for a temporary table's): a file that a power
        ** cut could leave without its header could never be opened again. */
        mmkv_log_identity identity = {options->owner_id, options->text_encoding, options->home};
        if (!identity.text_encoding) identity.text_encoding = MMKV_TEXT_UTF8;
        rc = mmkv_log_create(e->data_path, &identity,
                             e->temporary ? MMKV_SYNC_OFF : MMKV_SYNC_FULL, errmsg);
        if (rc == MMKV_BUSY) rc = MMKV_OK; /* created by someone else meanwhile */
        if (rc != MMKV_OK) return rc;
        rc = mmkv_file_open(e->data_path, MMKV_OPEN_EXISTING, &fd);
    }
    if (rc == MMKV_READONLY && !options->readonly)
        rc = mmkv_file_open(e->data_path, MMKV_OPEN_READONLY, &fd) == MMKV_OK ? MMKV_READONLY
                                                                               : MMKV_CANTOPEN;
    if (rc == MMKV_NOTFOUND)
        return mmkv_error(errmsg, MMKV_CANTOPEN, "mmkv: data file '%s' is missing", e->data_path);
    if (rc != MMKV_OK && rc != MMKV_READONLY)
        return mmkv_error(errmsg, rc, "mmkv: cannot open data file '%s': %s", e->data_path,
                          strerror(errno));
    e->log.map.fd = fd;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return mmkv_error(errmsg, MMKV_IOERR, "mmkv: cannot stat '%s': %s", e->data_path,
                          strerror(errno));
    e->dev = st.st_dev;
    e->ino = st.st_ino;
    if (options->readonly || rc == MMKV_READONLY) return open_readonly(e, fd, options, errmsg);
    rc = mmkv_log_open(&e->log, fd, e->data_path, 1, errmsg);
    e->log.map.fd = fd;
    if (rc == MMKV_OK && !e->temporary) rc = check_owner(e, options, errmsg);
    if (rc == MMKV_OK) rc = check_encoding(e, options, errmsg);
    if (rc != MMKV_OK) return rc;

    int index_fd;
    rc = mmkv_file_open(e->index_path, MMKV_OPEN_ALWAYS, &index_fd);
    if (rc != MMKV_OK)
        return mmkv_error(errmsg, rc, "mmkv: cannot open index file '%s': %s", e->index_path,
                          strerror(errno));
    e->index.map.fd = index_fd;

    /* Alone (the open lock is free): repair the index. Otherwise, wait for whoever is repairing
    ** it and share what they made. */
    int alone = mmkv_lock_try(fd, MMKV_LOCK_OPEN, 1) == MMKV_OK;
    if (!alone && (rc = mmkv_lock_wait(fd, MMKV_LOCK_OPEN, 0)) != MMKV_OK)
        return mmkv_error(errmsg, rc, "mmkv: cannot lock '%s': %s", e->data_path,
                          strerror(errno));
    rc = mmkv_index_map(&e->index, index_fd, e->index_path, 1);
    if (rc != MMKV_OK)
        return mmkv_map_error(&e->index.map, errmsg, rc, "index file", e->index_path);
    if (alone) {
        rc = recover_index(e, errmsg);
        if (rc == MMKV_OK) rc = mmkv_lock_try(fd, MMKV_LOCK_OPEN, 0); /* downgrade */
    } else if (!mmkv_index_header_usable(&e->index, e->log.file_id, 0)) {
        rc = mmkv_error(errmsg, MMKV_CORRUPT,
                        "mmkv: index file '%s' is damaged while another process uses it",
                        e->index_path);
    }
    return rc;
}

/* A clean index must not be ahead of the disk: after commits that skipped their syncs, the log
** and its meta slots are made durable first, and the notice moves its durable tail up. */
static int log_made_durable(mmkv_engine *e, const mmkv_meta *meta)
{
    uint64_t durable;
    if (!mmkv_log_notice(&e->log, &durable)) return 1;
    if (mmkv_map_sync_range(&e->log.map, 0, meta->committed_tail) != MMKV_OK) return 0;
    return durable == meta->committed_tail ||
           mmkv_log_write_notice(&e->log, meta->committed_tail) == MMKV_OK;
}

static void engine_close(mmkv_engine *e)
{
    if (mmkv_map_base(&e->log.map) && mmkv_map_base(&e->index.map) && !e->temporary &&
        mmkv_lock_try(e->log.map.fd, MMKV_LOCK_OPEN, 1) == MMKV_OK) {
        /* The last user anywhere: leave the index clean for the next open. */
        mmkv_meta meta;
        int slot;
        mmkv_index_header *h = mmkv_index_header_of(&e->index);
        if (h->state == MMKV_INDEX_IN_USE && mmkv_log_meta(&e->log, &meta, &slot, NULL) == MMKV_OK &&
            !h->writer_active && log_made_durable(e, &meta))
            mmkv_index_mark_clean(&e->index, meta.committed_tail);
    }
    engine_free(e);
}

static int temporary_path(char **out)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    static unsigned counter;
    unsigned n = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
    return asprintf(out, "%s/mmkv-temp-%ld-%u", dir, (long)getpid(), n) < 0 ? MMKV_NOMEM : MMKV_OK;
}

static void registry_remove(mmkv_engine *e)
{
    mmkv_engine **p = &registry;
    while (*p && *p != e)
        p = &(*p)->next;
    if (*p) *p = e->next;
}

/* The engine this process has open on the file at path for reading and writing (or, readonly,
** for reading only), if any; registry_mutex held. */
static mmkv_engine *registry_find(const char *path, int readonly)
{
    struct stat st;
    if (stat(path, &st) != 0) return NULL;
    for (mmkv_engine *e = registry; e; e = e->next)
        if (e->dev == st.st_dev && e->ino == st.st_ino && e->readonly == readonly) return e;
    return NULL;
}

int mmkv_open(const char *data_path, const mmkv_open_options *options, mmkv_conn **out,
              char **errmsg)
{
    *out = NULL;
    mmkv_conn *conn = calloc(1, sizeof *conn);
    if (!conn) return mmkv_error(errmsg, MMKV_NOMEM, "out of memory");
    conn->sync = options->sync;
    mmkv_engine *e = NULL;
    int rc;
    if (options->temporary) {
        char *path = NULL;
        rc = temporary_path(&path);
        if (rc == MMKV_OK) rc = engine_new(path, options->user, &e);
        if (rc == MMKV_OK) {
            conn->sync = MMKV_SYNC_OFF; /* files that vanish at close need no durability */
            e->temporary = 1;
            e->refcount = 1;
            rc = engine_open_files(e, options, errmsg);
            /* Nobody else may ever open them: the names go now, the files at close. */
            unlink(e->data_path);
            unlink(e->index_path);
        } else {
            mmkv_error(errmsg, rc, "out of memory");
        }
        free(path);
    } else {
        pthread_mutex_lock(&registry_mutex);
        e = registry_find(data_path, options->readonly);
        if (e) {
            rc = check_owner(e, options, errmsg);
            if (rc == MMKV_OK) rc = check_encoding(e, options, errmsg);
            if (rc == MMKV_OK) e->refcount++;
            else
                e = NULL;
        } else {
            rc = engine_new(data_path, options->user, &e);
            if (rc == MMKV_OK)
                rc = engine_open_files(e, options, errmsg);
            else
                mmkv_error(errmsg, rc, "out of memory");
            if (rc == MMKV_OK) {
                e->refcount = 1;
                e->next = registry;
                registry = e;
            }
        }
        pthread_mutex_unlock(&registry_mutex);
    }
    if (rc != MMKV_OK) {
        if (e) engine_free(e);
        free(conn);
        return rc;
    }
    conn->engine = e;
    conn->external = options->owner_id != 0;
    *out = conn;
    return MMKV_OK;
}

int mmkv_inspect(const char *data_path, mmkv_file_info *info, char **errmsg)
{
    memset(info, 0, sizeof *info);
    struct stat st;
    if (stat(data_path, &st) != 0)
        return errno == ENOENT ? MMKV_NOTFOUND
                               : mmkv_error(errmsg, MMKV_IOERR, "mmkv: cannot stat '%s': %s",
                                            data_path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return mmkv_error(errmsg, MMKV_CANTOPEN, "mmkv: '%s' is not a regular file", data_path);
    info->links = (uint32_t)st.st_nlink;
    unsigned char page[MMKV_DATA_START];
    pthread_mutex_lock(&registry_mutex);
    mmkv_engine *open_here = NULL;
    for (mmkv_engine *e = registry; e; e = e->next)
        if (e->dev == st.st_dev && e->ino == st.st_ino) open_here = e;
    int rc = MMKV_OK, fd = -1;
    if (open_here) {
        snprintf(info->open_by, sizeof info->open_by, "%s", open_here->user);
        memcpy(page, mmkv_map_base(&open_here->log.map), sizeof page);
    } else {
        rc = mmkv_file_open(data_path, MMKV_OPEN_READONLY, &fd);
        if (rc != MMKV_OK)
            rc = mmkv_error(errmsg, rc, "mmkv: cannot open '%s': %s", data_path, strerror(errno));
        memset(page, 0, sizeof page);
        uint64_t size = 0;
        if (rc == MMKV_OK && mmkv_file_size(fd, &size) == MMKV_OK && size >= sizeof page)
            rc = mmkv_file_read(fd, page, sizeof page, 0);
        if (rc != MMKV_OK && fd >= 0)
            rc = mmkv_error(errmsg, rc, "mmkv: cannot read '%s': %s", data_path, strerror(errno));
        if (rc == MMKV_OK) info->open_elsewhere = mmkv_lock_held_elsewhere(fd, MMKV_LOCK_OPEN);
    }
    pthread_mutex_unlock(&registry_mutex);
    if (fd >= 0) close(fd);
    if (rc != MMKV_OK) return rc;
    const mmkv_file_header *header = (const mmkv_file_header *)page;
    if (memcmp(header->magic, MMKV_DATA_MAGIC, MMKV_MAGIC_SIZE) != 0 ||
        header->checksum != mmkv_crc32c(0, header, offsetof(mmkv_file_header, checksum)))
        return mmkv_error(errmsg, MMKV_NOTADB, "mmkv: '%s' is not an mmkv data file", data_path);
    info->file_id = header->file_id;
    info->owner_id = header->owner_id;
    info->format_version = (int)header->format_version;
    info->text_encoding = header->text_encoding ? (int)header->text_encoding : MMKV_TEXT_UTF8;
    mmkv_home home;
    if (mmkv_home_newest(page, &home) >= 0 && home.owner_id == header->owner_id) {
        info->has_home = 1;
        info->home_flags = home.flags;
        memcpy(info->home, home.path, sizeof info->home);
    }
    /* Never committed: an intact meta slot names the empty log, and none names more. (Records
    ** past it are a transaction's that never committed.) */
    int empty = 0, written = 0;
    for (int slot = 0; slot < 2; slot++) {
        const mmkv_meta *m = (const mmkv_meta *)(page + MMKV_META_OFFSET(slot));
        if (m->magic != MMKV_META_MAGIC ||
            m->checksum != mmkv_crc32c(0, m, offsetof(mmkv_meta, checksum)))
            continue;
        if (m->txid == 0 && m->committed_tail == MMKV_DATA_START)
            empty = 1;
        else
            written = 1;
        if (m->txid > info->txid) {
            info->txid = m->txid;
            info->tail = m->committed_tail;
        }
    }
    info->never_committed = empty && !written;
    return MMKV_OK;
}

void mmkv_close(mmkv_conn *conn)
{
    if (!conn) return;
    mmkv_engine *e = conn->engine;
    if (e->txn.owner == conn) mmkv_txn_rollback(conn);
    pthread_mutex_lock(&registry_mutex);
    int last = --e->refcount == 0;
    if (last && !e->temporary) registry_remove(e);
    if (last) engine_close(e);
    pthread_mutex_unlock(&registry_mutex);
    free(conn->errmsg);
    free(conn);
}

const char *mmkv_errmsg(mmkv_conn *conn)
{
    return conn->errmsg ? conn->errmsg : "mmkv: unknown error";
}

const char *mmkv_data_path(mmkv_conn *conn)
{
    return conn->engine->data_path;
}

int mmkv_sole_user(mmkv_conn *conn)
{
    mmkv_engine *e = conn->engine;
    pthread_mutex_lock(&registry_mutex);
    int alone = e->refcount == 1 && !mmkv_lock_held_elsewhere(e->log.map.fd, MMKV_LOCK_OPEN);
    pthread_mutex_unlock(&registry_mutex);
    return alone;
}

int mmkv_readonly(mmkv_conn *conn)
{
    return conn->engine->readonly;
}

int mmkv_text_encoding(mmkv_conn *conn)
{
    return conn->engine->log.text_encoding;
}

/* ---- the files' names ---- */

static int unlink_if_present(const char *path)
{
    return unlink(path) == 0 || errno == ENOENT ? MMKV_OK : MMKV_IOERR;
}

static char *index_path_of(const char *data_path)
{
    char *index_path = NULL;
    return asprintf(&index_path, "%s%s", data_path, INDEX_SUFFIX) < 0 ? NULL : index_path;
}

/* Engines opened under old_path now go by new_path, in messages and in later renames. */
static void registry_rename(const char *old_path, const char *new_path)
{
    pthread_mutex_lock(&registry_mutex);
    for (mmkv_engine *e = registry; e; e = e->next) {
        if (strcmp(e->data_path, old_path) != 0) continue;
        char *data = strdup(new_path), *index = index_path_of(new_path);
        if (data && index) {
            free(e->data_path);
            free(e->index_path);
            e->data_path = data;
            e->index_path = index;
            e->log.path = data;
            e->index.path = index;
        } else {
            free(data);
            free(index);
        }
    }
    pthread_mutex_unlock(&registry_mutex);
}

int mmkv_remove_files(const char *data_path, char **errmsg)
{
    char *index_path = index_path_of(data_path);
    if (!index_path) return mmkv_error(errmsg, MMKV_NOMEM, "out of memory");
    int rc = unlink_if_present(data_path);
    if (rc == MMKV_OK) rc = unlink_if_present(index_path);
    if (rc != MMKV_OK)
        mmkv_error(errmsg, rc, "mmkv: cannot delete '%s': %s", data_path, strerror(errno));
    free(index_path);
    return rc;
}

/* A second name for one file; an index already under the new name is stale and goes. */
static int link_pair(const char *old_data, const char *old_index, const char *new_data,
                     const char *new_index, char **errmsg)
{
    if (link(old_data, new_data) != 0) {
        if (errno == EEXIST)
            return mmkv_error(errmsg, MMKV_ERROR, "mmkv: cannot use the name '%s': a file of "
                              "that name exists", new_data);
        return mmkv_error(errmsg, MMKV_IOERR, "mmkv: cannot give '%s' the name '%s': %s",
                          old_data, new_data, strerror(errno));
    }
    unlink(new_index);
    if (link(old_index, new_index) != 0 && errno != ENOENT) {
        /* derived data: without it under the new name, the index is rebuilt there */
    }
    return MMKV_OK;
}

int mmkv_link_files(const char *data_path, const char *new_data_path, char **errmsg)
{
    char *old_index = index_path_of(data_path), *new_index = index_path_of(new_data_path);
    int rc = old_index && new_index
                 ? link_pair(data_path, old_index, new_data_path, new_index, errmsg)
                 : mmkv_error(errmsg, MMKV_NOMEM, "out of memory");
    free(old_index);
    free(new_index);
    return rc;
}

int mmkv_rename_files(const char *old_data_path, const char *new_data_path, char **errmsg)
{
    /* A link and an unlink rather than rename(2), which would replace a file of the new name. */
    int rc = mmkv_link_files(old_data_path, new_data_path, errmsg);
    if (rc != MMKV_OK) return rc;
    rc = mmkv_remove_files(old_data_path, errmsg);
    if (rc == MMKV_OK) registry_rename(old_data_path, new_data_path);
    return rc;
}

int mmkv_drop_other_names(const char *data_path, const char *prefix, const char *suffix)
{
    struct stat own;
    if (stat(data_path, &own) != 0 || own.st_nlink < 2) return 0;
    char *dir_copy = strdup(data_path);
    if (!dir_copy) return 0;
    const char *slash = strrchr(data_path, '/');
    if (slash)
        dir_copy[slash - data_path] = 0;
    else
        strcpy(dir_copy, ".");
    DIR *dir = opendir(slash && slash == data_path ? "/" : dir_copy);
    int dropped = 0;
    size_t plen = strlen(prefix), slen = strlen(suffix);
    for (struct dirent *entry; dir && (entry = readdir(dir)) != NULL;) {
        const char *name = entry->d_name;
        size_t n = strlen(name);
        if (n <= plen + slen || strncmp(name, prefix, plen) != 0 ||
            strcmp(name + n - slen, suffix) != 0)
            continue;
        char *other = NULL;
        if (asprintf(&other, "%s/%s", slash ? dir_copy : ".", name) < 0) break;
        struct stat st;
        if (strcmp(other, data_path) != 0 && stat(other, &st) == 0 && st.st_dev == own.st_dev &&
            st.st_ino == own.st_ino && mmkv_drop_name(other, data_path, NULL) == MMKV_OK)
            dropped++;
        free(other);
    }
    if (dir) closedir(dir);
    free(dir_copy);
    return dropped;
}

int mmkv_drop_name(const char *data_path, const char *remaining_path, char **errmsg)
{
    struct stat a, b;
    if (stat(data_path, &a) != 0) return MMKV_OK;
    if (stat(remaining_path, &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino)
        return mmkv_error(errmsg, MMKV_ERROR,
                          "mmkv: '%s' is not another name of '%s'; it was left in place",
                          data_path, remaining_path);
    int rc = mmkv_remove_files(data_path, errmsg);
    if (rc == MMKV_OK) registry_rename(data_path, remaining_path);
    return rc;
}
