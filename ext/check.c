/*
** Checking and repairing: the integrity check behind INSERT INTO kv(kv) VALUES('integrity-check')
** and PRAGMA integrity_check, and the index rebuild behind 'rebuild-index'.
**
** The check walks the log up to the committed tail (a writer's: up to its own last record) and
** holds every record to what readers rely on: a well-formed header and a checksum that holds, a
** previous version that is a version of the same key, and an index that leads to each key's newest
** version (never an older one, which would return stale rows), by the key's own slot and, for TEXT
** that reads as a number, by its second slot too. It then compares the live and
** record counts with those the commit recorded.
*/
#include "engine.h"
#include "error.h"

static int problem(mmkv_conn *conn, const char *what, uint64_t offset)
{
    return mmkv_error(&conn->errmsg, MMKV_CORRUPT, "mmkv: '%s': %s (record at offset %llu)",
                      conn->engine->data_path, what, (unsigned long long)offset);
}

/* The previous version named by record must be an earlier record of the same key. */
static int check_prev(mmkv_conn *conn, const mmkv_record *record, uint64_t start, uint64_t limit)
{
    uint64_t prev = record->header.prev_offset;
    /* Below the log's start: a copy compaction made names the record it copied, which may be gone
    ** (format.h, START). */
    if (prev == 0 || prev < start) return MMKV_OK;
    mmkv_record older;
    if (prev >= record->offset || !mmkv_log_record(&conn->engine->log, prev, limit, &older) ||
        !mmkv_record_checksum_ok(&older))
        return problem(conn, "its previous version is not a valid record", record->offset);
    mmkv_datum a, b;
    mmkv_record_key(record, &a);
    mmkv_record_key(&older, &b);
    if (!mmkv_key_equal(&a, &b))
        return problem(conn, "its previous version belongs to another key", record->offset);
    return MMKV_OK;
}

/* A TEXT key that reads as a number (in the file's encoding) is found by that number too: its
** second slot must lead to its newest version, at pos, as its own slot does. */
static int check_second_slot(mmkv_conn *conn, const mmkv_snapshot *snapshot, const mmkv_datum *key,
                             uint64_t pos)
{
    uint64_t hash;
    if (!mmkv_engine_second_hash(conn->engine, key, &hash)) return MMKV_OK;
    mmkv_record newest;
    int rc = mmkv_engine_newest(conn, snapshot, key, hash, pos, &newest);
    if (rc == MMKV_NOTFOUND || (rc == MMKV_OK && newest.offset != pos))
        return problem(conn,
                       "the index does not find its key by the number it reads as "
                       "(try 'rebuild-index')",
                       pos);
    return rc;
}

int mmkv_check(mmkv_conn *conn, const mmkv_commit *committed)
{
    mmkv_conn_clear_error(conn);
    mmkv_engine *e = conn->engine;
    mmkv_snapshot snapshot;
    mmkv_commit counts;
    int rc;
    if (mmkv_txn_active(conn)) {
        rc = mmkv_snapshot_take(conn, &snapshot);
        counts.live_count = e->txn.counts.live;
        counts.record_count = e->txn.counts.records;
    } else {
        if (!committed && (rc = mmkv_committed(conn, &counts)) != MMKV_OK) return rc;
        if (committed) mmkv_commit_effective(e, committed, &counts);
        rc = mmkv_snapshot_at(conn, &counts, &snapshot);
    }
    if (rc != MMKV_OK) return rc;
    mmkv_meta meta;
    int slot;
    if ((rc = mmkv_log_meta(&e->log, &meta, &slot, &conn->errmsg)) != MMKV_OK) return rc;

    /* The meta slots ahead of the database's record: a commit prepared, whose database commit a
    ** crash took. Until the next writer rolls the log and index back to the record (commit.c,
    ** repair_to), the index is that commit's; if it compacted, the deleted keys whose records it
    ** drained below its start have no slot. Nothing a reader gets is wrong for it. */
    uint64_t dropped_below = 0;
    if (committed && !mmkv_txn_active(conn) && meta.txid > counts.txid &&
        !(meta.flags & MMKV_META_SALVAGED))
        dropped_below = mmkv_meta_start(&meta);

    uint64_t records = 0, live = 0;
    for (uint64_t pos = snapshot.start; pos < snapshot.tail;) {
        mmkv_record record;
        if (!mmkv_log_record(&e->log, pos, snapshot.tail, &record))
            return problem(conn, "a malformed record header", pos);
        if (!mmkv_record_checksum_ok(&record)) return problem(conn, "a checksum that fails", pos);
        if (record.header.flags & MMKV_RECORD_PAD) { /* fills bytes a power cut lost: no key */
            pos += mmkv_record_size(record.header.key_len, record.header.value_len);
            continue;
        }
        if ((rc = check_prev(conn, &record, snapshot.start, snapshot.tail)) != MMKV_OK) return rc;
        mmkv_datum key;
        mmkv_record_key(&record, &key);
        mmkv_record newest;
        rc = mmkv_engine_newest(conn, &snapshot, &key, mmkv_key_hash(&key), pos, &newest);
        if (rc == MMKV_NOTFOUND && pos < dropped_below) {
            /* A compaction the database did not keep (ahead, above) dropped this deleted key's
            ** tombstone from the index; a lookup finds no row, as it must. */
            records++;
            pos += mmkv_record_size(record.header.key_len, record.header.value_len);
            continue;
        }
        if (rc == MMKV_NOTFOUND)
            return problem(conn, "the index does not find its key (try 'rebuild-index')", pos);
        if (rc != MMKV_OK) return rc;
        if (newest.offset < pos)
            return problem(conn,
                           "the index leads to an older version of its key "
                           "(try 'rebuild-index')",
                           pos);
        if (newest.offset == pos && (rc = check_second_slot(conn, &snapshot, &key, pos)) != MMKV_OK)
            return rc;
        records++;
        if (newest.offset == pos && !(record.header.flags & MMKV_RECORD_TOMBSTONE)) live++;
        pos += mmkv_record_size(record.header.key_len, record.header.value_len);
    }
    if (records != counts.record_count || live != counts.live_count)
        return mmkv_error(&conn->errmsg, MMKV_CORRUPT,
                          "mmkv: '%s': the log holds %llu records and %llu live keys, but its "
                          "commit recorded %llu and %llu",
                          e->data_path, (unsigned long long)records, (unsigned long long)live,
                          (unsigned long long)counts.record_count,
                          (unsigned long long)counts.live_count);
    return MMKV_OK;
}

int mmkv_rebuild(mmkv_conn *conn)
{
    mmkv_conn_clear_error(conn);
    mmkv_engine *e = conn->engine;
    if (!mmkv_txn_active(conn))
        return mmkv_error(&conn->errmsg, MMKV_MISUSE, "mmkv: rebuild outside a write transaction");
    /* Up to the transaction's own last record, so that its slots (and its undo) survive. */
    return mmkv_engine_rebuild_index(e, e->txn.counts.start, e->txn.append_pos, e->txn.counts.live,
                                     &conn->errmsg);
}
