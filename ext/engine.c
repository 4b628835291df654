/*
** The engine's reads and writes: finding versions through a snapshot, appending versions, undoing
** them, and the index as data derived from the log (replayed, rebuilt). What a snapshot is, and
** what is committed, is commit.c's; the commit protocol txn.c's; opening files open.c's.
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


/* ---- record access with the key being looked for ---- */

typedef struct key_probe {
    mmkv_engine *engine;
    const mmkv_datum *key;
    uint64_t stable_below; /* records below this are immutable: a bad one is corruption */
    uint64_t verified;     /* offset whose checksum the caller already checked */
    int unstable;          /* met a version that failed checks past stable_below */
    uint64_t corrupt_at;
    uint64_t matched_at;   /* the last record match_key found to hold the key (0: none) */
    mmkv_record matched;
    uint64_t sought_offset; /* match_offset's: the record whose slot is sought */
} key_probe;

/* The header, key and a short value span a few cache lines: miss on them all at once. */
static void prefetch_record(void *ctx, uint64_t offset)
{
    mmkv_log *log = &((key_probe *)ctx)->engine->log;
    if (offset >= mmkv_map_mapped(&log->map)) return;
    const unsigned char *at = mmkv_map_base(&log->map) + offset;
    __builtin_prefetch(at);
    __builtin_prefetch(at + 64);
    __builtin_prefetch(at + 128);
}

/* Reads the record at offset, its checksum checked if check_sum; 1 if good, 0 if unstable, or
** -CORRUPT. */
static int probe_read_checked(key_probe *p, uint64_t offset, mmkv_record *record, int check_sum)
{
    mmkv_log *log = &p->engine->log;
    prefetch_record(p, offset);
    int ok = mmkv_log_record(log, offset, UINT64_MAX, record);
    if (!ok && mmkv_map_refresh(&log->map) == MMKV_OK) /* another process grew the file? */
        ok = mmkv_log_record(log, offset, UINT64_MAX, record);
    ok = ok && (!check_sum || offset == p->verified || mmkv_record_checksum_ok(record)) &&
         !(record->header.flags & MMKV_RECORD_PAD); /* a pad is never a key's version */
    if (ok) return 1;
    if (offset < p->stable_below) {
        p->corrupt_at = offset;
        return -MMKV_CORRUPT;
    }
    p->unstable = 1;
    return 0;
}

static int probe_read(key_probe *p, uint64_t offset, mmkv_record *record)
{
    return probe_read_checked(p, offset, record, 1);
}

static int match_key(void *ctx, uint64_t offset)
{
    key_probe *p = ctx;
    mmkv_record record;
    int rc = probe_read(p, offset, &record);
    if (rc <= 0) return rc;
    mmkv_datum key;
    mmkv_record_key(&record, &key);
    if (!mmkv_key_equal(&key, p->key)) return 0;
    p->matched_at = offset;
    p->matched = record;
    return 1;
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

/* The hash a slot is filed under, from its record's key, for moving the slot to another table.
** The record's checksum is not needed for that (it is a third of a bulk insert's draining at 1M
** keys): the slot's tag is the top of the hash its key was filed under, so a key read wrong shows
** as a tag that differs (but for one chance in 2^24), and damage elsewhere in the record leaves
** the hash, and so the move, right; every read of the record for its value checks the sum. */
static int hash_of_record(void *ctx, mmkv_slot slot, uint64_t *hash)
{
    key_probe *p = ctx;
    uint64_t offset = mmkv_slot_offset(slot);
    mmkv_record record;
    int rc = probe_read_checked(p, offset, &record, 0);
    if (rc <= 0) return rc < 0 ? -rc : MMKV_CORRUPT;
    mmkv_datum key;
    mmkv_record_key(&record, &key);
    int has_hash = 1;
    if (!mmkv_slot_is_second(slot))
        *hash = mmkv_key_hash(&key);
    else
        has_hash = mmkv_engine_second_hash(p->engine, &key, hash); /* 0: it has no second slot */
    if (has_hash && mmkv_hash_tag(*hash) == mmkv_slot_tag(slot)) return MMKV_OK;
    p->corrupt_at = offset;
    return MMKV_CORRUPT;
}

static mmkv_index_ops probe_ops(key_probe *p)
{
    mmkv_index_ops ops = {match_key, hash_of_record, p, prefetch_record};
    return ops;
}

/* A slot holds the record sought if it holds its offset (see mmkv_engine_locate_version). */
static int match_offset(void *ctx, uint64_t offset)
{
    return offset == ((key_probe *)ctx)->sought_offset;
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

int mmkv_engine_index_error(char **errmsg, mmkv_engine *e, int rc)
{
    return index_error(errmsg, e, rc, NULL);
}

/* ---- reading ---- */


/* A read-only engine with an index of its own brings it up to the log position a snapshot reads,
** from the committed records (only ever committed ones: it never needs to undo). */
int mmkv_engine_reach(mmkv_engine *e, uint64_t start, uint64_t tail, char **errmsg)
{
    if (!e->private_index || tail <= __atomic_load_n(&e->private_position, __ATOMIC_ACQUIRE))
        return MMKV_OK;
    pthread_mutex_lock(&e->mutex);
    int rc = mmkv_engine_cover(e, tail, errmsg);
    if (rc == MMKV_OK && tail > e->private_position && start > e->private_start) {
        /* Compaction moved the start: tombstones it dropped left the log, and the bytes below it
        ** may be gone, so the index is built anew from the new start rather than replayed. */
        rc = mmkv_engine_rebuild_index(e, start, tail, 0, errmsg);
        if (rc == MMKV_OK) e->private_start = start;
    } else if (rc == MMKV_OK && tail > e->private_position) {
        rc = mmkv_engine_replay(e, e->private_position, tail, 0, errmsg);
    }
    if (rc == MMKV_OK && tail > e->private_position)
        __atomic_store_n(&e->private_position, tail, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&e->mutex);
    return rc;
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
    if (offset == p->matched_at && p->key == key) {
        /* The index's match just read and checked it, and below the tail it cannot change. */
        *record = p->matched;
    } else {
        if (probe_read(p, offset, record) <= 0)
            return mmkv_engine_corrupt_record(&conn->errmsg, conn->engine, offset);
        mmkv_record_key(record, &k);
        if (!mmkv_key_equal(&k, key))
            return mmkv_engine_corrupt_record(&conn->errmsg, conn->engine, offset);
    }
    return record->header.flags & MMKV_RECORD_TOMBSTONE ? WALK_TOMBSTONE : MMKV_OK;
}

static int changing_error(mmkv_conn *conn)
{
    return mmkv_error(&conn->errmsg, MMKV_BUSY, "mmkv: '%s' kept changing during a read",
                      conn->engine->data_path);
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

/* Finds the version of key visible in snapshot. `verified` names an offset already checked.
** A tombstone is MMKV_NOTFOUND unless tombstones_too, when it is returned like any version. */
static int find_version(mmkv_conn *conn, const mmkv_snapshot *snapshot, const mmkv_datum *key,
                        uint64_t hash, uint64_t verified, int tombstones_too, mmkv_record *record)
{
    mmkv_engine *e = conn->engine;
    key_probe p = {.engine = e, .key = key, .stable_below = snapshot->tail, .verified = verified};
    mmkv_index_ops ops = probe_ops(&p);
    int writer = e->txn.owner == conn;
    mmkv_index_hit hit;
    for (int attempt = 0; attempt < READ_RETRIES; retry_pause(attempt++)) {
        p.unstable = 0;
        uint64_t offset;
        int rc = mmkv_index_find(&e->index, hash, &ops, &offset, writer ? &hit : NULL);
        if (rc == MMKV_NOTFOUND && !p.unstable) return MMKV_NOTFOUND;
        if (rc != MMKV_OK && rc != MMKV_NOTFOUND) return index_error(&conn->errmsg, e, rc, &p);
        if (rc == MMKV_NOTFOUND) continue;
        /* match_key checked this version; below the tail it cannot have changed since. */
        if (offset < snapshot->tail) p.verified = offset;
        rc = walk_to_visible(conn, &p, snapshot, key, offset, record);
        if (writer && rc == MMKV_OK && record->offset == offset) {
            e->txn.last_hit = hit;
            e->txn.last_record = *record;
        }
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
    key_probe p = {.engine = e, .key = target, .stable_below = snapshot->tail};
    mmkv_index_ops ops = {match, hash_of_record, &p, prefetch_record};
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
    scan->position = scan->prefetched =
        snapshot->start > MMKV_DATA_START ? snapshot->start : MMKV_DATA_START;
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
            /* No superseded version or tombstone anywhere in the log: every record is live. A
            ** record that replaces a version in it, or is a tombstone, says otherwise (a copy
            ** compaction made names the record it copies, below the start). */
            if (record.header.prev_offset >= scan->snapshot.start ||
                (record.header.flags & MMKV_RECORD_TOMBSTONE))
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

int mmkv_engine_offset_push(uint64_t **items, size_t *count, size_t *capacity, uint64_t offset)
{
    if (*count == *capacity) {
        size_t cap = *capacity ? *capacity * 2 : 1024;
        uint64_t *grown = realloc(*items, cap * sizeof *grown);
        if (!grown) return MMKV_NOMEM;
        *items = grown;
        *capacity = cap;
    }
    (*items)[(*count)++] = offset;
    return MMKV_OK;
}

static int remember_written(mmkv_txn *txn, uint64_t offset)
{
    return mmkv_engine_offset_push(&txn->written, &txn->n_written, &txn->cap_written, offset);
}

/* Points key's second slot at offset (or, with offset 0, forgets it). */
static int store_shadow(mmkv_engine *e, const mmkv_datum *key, uint64_t offset, char **errmsg)
{
    uint64_t hash;
    if (!mmkv_engine_second_hash(e, key, &hash)) return MMKV_OK;
    key_probe p = {.engine = e, .key = key, .stable_below = UINT64_MAX};
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
int mmkv_engine_append(mmkv_conn *conn, const mmkv_slot_ref *ref, uint64_t hash,
                       const mmkv_datum *key, const mmkv_datum *value, uint64_t prev)
{
    mmkv_engine *e = conn->engine;
    mmkv_txn *txn = &e->txn;
    static const mmkv_datum no_value = {MMKV_NULL, 0, NULL};
    uint64_t size;
    txn->last_hit.slot = NULL;
    int rc = remember_written(txn, txn->append_pos);
    if (rc != MMKV_OK) return mmkv_error(&conn->errmsg, rc, "out of memory");
    rc = mmkv_log_write_record(&e->log, txn->append_pos, key, value ? value : &no_value,
                               value ? 0 : MMKV_RECORD_TOMBSTONE, txn->txid, prev, &size);
    if (rc != MMKV_OK) {
        txn->n_written--;
        if (rc == MMKV_FULL && txn->append_pos + mmkv_record_size(key->len, value ? value->len : 0) >
                                   MMKV_MAX_FILE_SIZE)
            return mmkv_error(&conn->errmsg, MMKV_FULL,
                              "mmkv: '%s' has reached the end of its offsets (8 TiB written in its "
                              "life; compaction gives space back, not offsets): copy its rows into "
                              "a new table (docs/operations.md, \"The 8 TiB limit\")",
                              e->data_path);
        return mmkv_map_error(&e->log.map, &conn->errmsg, rc, "data file", e->data_path);
    }
    mmkv_index_store(&e->index, ref, hash, txn->append_pos);
    uint64_t offset = txn->append_pos;
    txn->append_pos += size;
    txn->counts.records++;
    return store_shadow(e, key, offset, &conn->errmsg);
}

/* The writer's last lookup, if it found key and nothing has moved its slot since (mmkv_txn). */
static int reuse_last_hit(mmkv_engine *e, const mmkv_datum *key, uint64_t hash, mmkv_slot_ref *ref,
                          mmkv_record *newest)
{
    mmkv_txn *txn = &e->txn;
    mmkv_index_hit hit = txn->last_hit;
    txn->last_hit.slot = NULL;
    if (!hit.slot || mmkv_slot_tag(hit.value) != mmkv_hash_tag(hash) ||
        mmkv_slot_offset(hit.value) != txn->last_record.offset)
        return 0;
    mmkv_datum found;
    mmkv_record_key(&txn->last_record, &found);
    if (!mmkv_key_equal(&found, key) || !mmkv_index_still_there(&e->index, &hit, ref)) return 0;
    *newest = txn->last_record;
    return 1;
}

/* Locates key for a write: its slot and its newest version, if any. */
int mmkv_engine_locate(mmkv_conn *conn, const mmkv_datum *key, uint64_t hash, mmkv_slot_ref *ref,
                       mmkv_record *newest)
{
    mmkv_engine *e = conn->engine;
    key_probe p = {.engine = e, .key = key, .stable_below = e->txn.append_pos};
    mmkv_index_ops ops = probe_ops(&p);
    int rc = mmkv_index_make_room(&e->index, &ops);
    if (rc == MMKV_OK && reuse_last_hit(e, key, hash, ref, newest)) return MMKV_OK;
    if (rc == MMKV_OK) rc = mmkv_index_locate(&e->index, hash, &ops, ref);
    if (rc == MMKV_NOTFOUND) return rc;
    if (rc != MMKV_OK) return index_error(&conn->errmsg, e, rc, &p);
    uint64_t offset = mmkv_slot_offset(*ref->slot);
    if (p.matched_at == offset) { /* the match read and checked it */
        *newest = p.matched;
        return MMKV_OK;
    }
    if (probe_read(&p, offset, newest) <= 0)
        return mmkv_engine_corrupt_record(&conn->errmsg, e, offset);
    return MMKV_OK;
}

int mmkv_engine_locate_version(mmkv_conn *conn, uint64_t hash, uint64_t offset, mmkv_slot_ref *ref)
{
    mmkv_engine *e = conn->engine;
    key_probe p = {.engine = e, .stable_below = e->txn.append_pos, .sought_offset = offset};
    mmkv_index_ops ops = probe_ops(&p);
    int rc = mmkv_index_make_room(&e->index, &ops); /* its drain moves slots: hash_of reads keys */
    if (rc != MMKV_OK) return index_error(&conn->errmsg, e, rc, &p);
    ops.match = match_offset;
    rc = mmkv_index_locate(&e->index, hash, &ops, ref);
    if (rc != MMKV_OK && rc != MMKV_NOTFOUND) return index_error(&conn->errmsg, e, rc, &p);
    return rc;
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
    rc = mmkv_engine_locate(conn, key, hash, &ref, &newest);
    if (rc != MMKV_OK && rc != MMKV_NOTFOUND) return rc;
    int exists = rc == MMKV_OK && !(newest.header.flags & MMKV_RECORD_TOMBSTONE);
    if (exists && mode == MMKV_PUT_INSERT) return MMKV_CONSTRAINT;
    rc = mmkv_engine_append(conn, &ref, hash, key, value, ref.slot ? newest.offset : 0);
    if (rc != MMKV_OK) return rc;
    if (exists)
        txn->counts.garbage += mmkv_record_bytes(&newest);
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
    rc = mmkv_engine_locate(conn, key, hash, &ref, &newest);
    if (rc != MMKV_OK) return rc;
    if (newest.header.flags & MMKV_RECORD_TOMBSTONE) return MMKV_NOTFOUND;
    uint64_t before = txn->append_pos;
    rc = mmkv_engine_append(conn, &ref, hash, key, NULL, newest.offset);
    if (rc != MMKV_OK) return rc;
    txn->counts.live--;
    txn->counts.garbage += mmkv_record_bytes(&newest) + (txn->append_pos - before);
    return MMKV_OK;
}

/* Undoes the transaction's records past the first `keep`, newest first: each key's slot goes back
** to the version before. Cannot fail: every slot touched exists, and the records are our own.
** Compaction drops tombstones only of keys the transaction did not write, so the two undo in any
** order. */
void mmkv_engine_undo(mmkv_engine *e, size_t keep, size_t keep_forgotten)
{
    mmkv_txn *txn = &e->txn;
    txn->last_hit.slot = NULL;
    /* Tombstones compaction dropped: their keys' slots lead to them again. */
    while (txn->n_forgotten > keep_forgotten) {
        uint64_t offset = txn->forgotten[--txn->n_forgotten];
        mmkv_record record;
        if (!mmkv_log_record(&e->log, offset, UINT64_MAX, &record)) continue;
        mmkv_datum key;
        mmkv_record_key(&record, &key);
        uint64_t hash = mmkv_key_hash(&key);
        key_probe p = {.engine = e, .key = &key, .stable_below = UINT64_MAX};
        mmkv_index_ops ops = probe_ops(&p);
        mmkv_slot_ref ref;
        int rc = mmkv_index_make_room(&e->index, &ops);
        if (rc == MMKV_OK) rc = mmkv_index_locate(&e->index, hash, &ops, &ref);
        if (rc != MMKV_OK && rc != MMKV_NOTFOUND) continue;
        mmkv_index_store(&e->index, &ref, hash, offset);
        store_shadow(e, &key, offset, NULL);
    }
    while (txn->n_written > keep) {
        uint64_t offset = txn->written[--txn->n_written];
        mmkv_record record;
        if (!mmkv_log_record(&e->log, offset, UINT64_MAX, &record)) continue;
        if (record.header.flags & MMKV_RECORD_PAD) continue; /* no key's version */
        mmkv_datum key;
        mmkv_record_key(&record, &key);
        uint64_t hash = mmkv_key_hash(&key);
        key_probe p = {.engine = e, .key = &key, .stable_below = UINT64_MAX};
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

int mmkv_engine_forget(mmkv_conn *conn, const mmkv_datum *key, const mmkv_slot_ref *ref)
{
    mmkv_engine *e = conn->engine;
    mmkv_index_forget(&e->index, ref);
    return store_shadow(e, key, 0, &conn->errmsg);
}

int mmkv_engine_drain_index(mmkv_engine *e, uint64_t count)
{
    key_probe p = {.engine = e, .key = NULL, .stable_below = UINT64_MAX};
    mmkv_index_ops ops = probe_ops(&p);
    return mmkv_index_drain_some(&e->index, &ops, count);
}

/* ---- the index as derived data ---- */

/* Replays the committed log from `from` into the index, newest version last. */
int mmkv_engine_replay(mmkv_engine *e, uint64_t from, uint64_t to, int rebuilding, char **errmsg)
{
    for (uint64_t pos = from; pos < to;) {
        mmkv_record record;
        if (!mmkv_log_record(&e->log, pos, to, &record) || !mmkv_record_checksum_ok(&record))
            return mmkv_engine_corrupt_record(errmsg, e, pos);
        if (record.header.flags & MMKV_RECORD_PAD) {
            pos += mmkv_record_bytes(&record);
            continue;
        }
        mmkv_datum key;
        mmkv_record_key(&record, &key);
        uint64_t hash = mmkv_key_hash(&key);
        key_probe p = {.engine = e, .key = &key, .stable_below = to, .verified = pos};
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
        pos += mmkv_record_bytes(&record);
    }
    return MMKV_OK;
}

int mmkv_engine_rebuild_index(mmkv_engine *e, uint64_t start, uint64_t tail, uint64_t live,
                              char **errmsg)
{
    /* The table is sized by the live keys, not by the records ever written: keys deleted but still
    ** in the log, and second slots, grow it as the rebuild meets them. The count only sizes it:
    ** never trust it past what the log could hold. */
    if (start < MMKV_DATA_START) start = MMKV_DATA_START;
    uint64_t at_most = tail > start ? (tail - start) / sizeof(mmkv_record_header) : 0;
    if (live > at_most) live = at_most;
    int rc = mmkv_index_rebuild_begin(&e->index, live);
    if (rc == MMKV_OK) rc = mmkv_failpoint("mid-recovery");
    if (rc != MMKV_OK) return index_error(errmsg, e, rc, NULL);
    rc = mmkv_engine_replay(e, start, tail, 1, errmsg);
    if (rc != MMKV_OK) return rc;
    mmkv_index_rebuild_end(&e->index);
    mmkv_index_header_of(&e->index)->log_position = tail;
    return MMKV_OK;
}
