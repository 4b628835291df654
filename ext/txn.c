/*
** The commit protocol: one write transaction per file at a time, savepoints, and the two phases
** SQLite drives (xSync = mmkv_txn_prepare, xCommit = mmkv_txn_commit).
**
** Commit order (prepare):
**   1. the transaction's records, already in the mapping past the committed tail, are made
**      durable (msync of [start, append_pos)) unless sync=off, or unless the owning database
**      keeps them in its own transaction until they are (owner_keeps_records: the SQL face
**      copies them into its redo, or has them synced with mmkv_sync_records);
**   2. a new meta slot naming the new tail is written into the slot not holding the current
**      commit; it is made durable (unless sync=off) when the file is its own authority.
** What is committed, and so where a transaction begins, is decided in commit.c: the database's
** commit record for a file it owns (mmkv_txn_begin_at), which the SQL face writes after prepare,
** in the transaction SQLite then commits; the meta slots for a file shared by in-memory databases
** (mmkv_txn_begin), where a crash before 2 leaves the old slot in force and a torn meta write fails
** its checksum. commit then only releases the writer and cannot fail.
**
** Rollback walks the transaction's records backwards and points each key's slot back at the
** version before (engine.c, mmkv_engine_undo); a savepoint remembers how far to walk.
**
** Writers are serialised per process by txn.owner and across processes by an exclusive lock on a
** byte of the data file (writer.c; for an owned file, also by the database's write lock, taken
** first). A writer that finds writer_active still set in the index header knows its predecessor
** died mid-transaction with slots published for records that were never committed, and rebuilds
** the index before it writes (commit.c).
*/
#include "engine.h"
#include "error.h"
#include "failpoint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int mmkv_txn_active(mmkv_conn *conn)
{
    return conn->engine->txn.owner == conn;
}

static int readonly_error(mmkv_conn *conn)
{
    return mmkv_error(&conn->errmsg, MMKV_READONLY,
                      "mmkv: '%s' is open read-only (the database is read-only or query_only, or "
                      "the file cannot be written): it cannot be written",
                      conn->engine->data_path);
}

static int begin_from(mmkv_conn *conn, const mmkv_commit *authority)
{
    mmkv_engine *e = conn->engine;
    mmkv_txn *txn = &e->txn;
    if (txn->owner == conn) return MMKV_OK;
    if (e->readonly) return readonly_error(conn);
    int rc = mmkv_writer_take(conn, authority != NULL);
    if (rc != MMKV_OK) return rc;
    mmkv_commit state;
    rc = mmkv_commit_begin_state(conn, authority, &state);
    if (rc != MMKV_OK) {
        mmkv_writer_release(e);
        return rc;
    }
    mmkv_index_header_of(&e->index)->writer_active = 1;
    e->wrote = 1;
    txn->owner = conn;
    txn->txid = state.txid + 1;
    txn->start = txn->append_pos = state.tail;
    /* Growth ahead of need is a share of the log in use, not of a file made large by holes, and a
    ** small one: compaction keeps the log near its live size, and so must the slack. */
    e->log.map.grow_basis = state.tail - (state.start > MMKV_DATA_START ? state.start : MMKV_DATA_START);
    txn->counts.start = state.start > MMKV_DATA_START ? state.start : MMKV_DATA_START;
    txn->counts.live = state.live_count;
    txn->counts.records = state.record_count;
    txn->counts.garbage = state.garbage_bytes;
    txn->counts.compactions = state.compactions;
    txn->start_counts = txn->counts;
    txn->n_written = 0;
    txn->n_forgotten = 0;
    txn->n_savepoints = 0;
    txn->prepared = 0;
    txn->marked = 0;
    pthread_mutex_unlock(&e->mutex);
    return MMKV_OK;
}

int mmkv_mark_home(mmkv_conn *conn, const char *home, uint32_t flags)
{
    mmkv_conn_clear_error(conn);
    mmkv_engine *e = conn->engine;
    if (e->temporary) return MMKV_OK;
    if (e->readonly) return readonly_error(conn);
    int own = e->txn.owner == conn;
    int rc = own ? MMKV_OK : mmkv_writer_take(conn, 1);
    if (rc != MMKV_OK) return rc;
    rc = mmkv_log_write_home(&e->log, home, flags);
    if (!own) mmkv_writer_release(e);
    if (rc != MMKV_OK)
        return mmkv_error_os(&conn->errmsg, rc, "mmkv: cannot write to '%s'", e->data_path);
    return MMKV_OK;
}

int mmkv_home_of(mmkv_conn *conn, char *path, size_t path_size, uint32_t *flags)
{
    mmkv_home home;
    if (!mmkv_log_home(&conn->engine->log, &home) || home.owner_id != conn->engine->log.owner_id)
        return 0;
    snprintf(path, path_size, "%s", home.path);
    if (flags) *flags = home.flags;
    return 1;
}

int mmkv_txn_begin(mmkv_conn *conn)
{
    mmkv_conn_clear_error(conn);
    return begin_from(conn, NULL);
}

int mmkv_txn_begin_at(mmkv_conn *conn, const mmkv_commit *committed)
{
    mmkv_conn_clear_error(conn);
    return begin_from(conn, committed);
}

int mmkv_txn_savepoint(mmkv_conn *conn, int level)
{
    mmkv_conn_clear_error(conn);
    mmkv_txn *txn = &conn->engine->txn;
    if (txn->owner != conn) return MMKV_OK;
    while (txn->n_savepoints && txn->savepoints[txn->n_savepoints - 1].level >= level)
        txn->n_savepoints--;
    if (txn->n_savepoints == txn->cap_savepoints) {
        size_t cap = txn->cap_savepoints ? txn->cap_savepoints * 2 : 8;
        mmkv_savepoint *grown = realloc(txn->savepoints, cap * sizeof *grown);
        if (!grown) return mmkv_error(&conn->errmsg, MMKV_NOMEM, "out of memory");
        txn->savepoints = grown;
        txn->cap_savepoints = cap;
    }
    mmkv_savepoint *sp = &txn->savepoints[txn->n_savepoints++];
    sp->level = level;
    sp->append_pos = txn->append_pos;
    sp->written = txn->n_written;
    sp->forgotten = txn->n_forgotten;
    sp->counts = txn->counts;
    return MMKV_OK;
}

void mmkv_txn_release(mmkv_conn *conn, int level)
{
    mmkv_txn *txn = &conn->engine->txn;
    if (txn->owner != conn) return;
    while (txn->n_savepoints && txn->savepoints[txn->n_savepoints - 1].level >= level)
        txn->n_savepoints--;
}

/* Back to the state when savepoint `level` began; the savepoint stays open.
**
** SQLite numbers savepoints by depth and counts statement savepoints in that depth. When this
** table joins a transaction late, SQLite first calls xSavepoint(depth - 1) to catch up, and that
** entry may be a statement savepoint released when the statement ends. So a savepoint with no
** entry of its own, and none below it, began before this table joined: its state is the start. */
void mmkv_txn_rollback_to(mmkv_conn *conn, int level)
{
    mmkv_engine *e = conn->engine;
    mmkv_txn *txn = &e->txn;
    if (txn->owner != conn) return;
    size_t i = 0;
    while (i < txn->n_savepoints && txn->savepoints[i].level < level)
        i++;
    mmkv_savepoint target;
    if (i < txn->n_savepoints && txn->savepoints[i].level == level) {
        target = txn->savepoints[i];
    } else if (i > 0) {
        return; /* it began after our newest savepoint below it, and nothing was written since */
    } else {
        target.level = level;
        target.append_pos = txn->start;
        target.written = 0;
        target.forgotten = 0;
        target.counts = txn->start_counts;
    }
    mmkv_engine_undo(e, target.written, target.forgotten);
    txn->append_pos = target.append_pos;
    txn->counts = target.counts;
    txn->n_savepoints = i;
    if (mmkv_txn_savepoint(conn, level) != MMKV_OK) txn->n_savepoints = 0;
}

/* A page of the log written through the map and still mapped is written back (by the kernel, or
** a sync) only after its mapping is write-protected, one page at a time, each time interrupting
** every other processor that runs this process to flush it: measured on a 2-processor VM, about
** 45 us of processor time per page, which, with compaction's syncs of the log, cost the writer
** more than compaction's own work (updates at 1M keys: 3.3 us each, 2.2 us with both threads on
** one processor). A page no longer mapped needs none of that. So the writer drops its mappings of
** the whole pages it wrote: before it syncs them, and otherwise once its commits have put
** DROP_PAGES_MIN behind them, keeping the newest DROP_PAGES_KEEP mapped for the reads that follow
** writes. The bytes stay in the page cache; a reader maps them again, read-only. */
#define DROP_PAGES_MIN ((uint64_t)1 << 20)
#define DROP_PAGES_KEEP ((uint64_t)64 << 10)

static void drop_written_pages(mmkv_engine *e, uint64_t to, uint64_t min_bytes)
{
    if (e->pages_dropped_to < MMKV_DATA_START) e->pages_dropped_to = MMKV_DATA_START;
    if (to <= e->pages_dropped_to || to - e->pages_dropped_to < min_bytes) return;
    mmkv_map_drop_pages(&e->log.map, e->pages_dropped_to, to);
    e->pages_dropped_to = to / MMKV_PAGE_SIZE * MMKV_PAGE_SIZE; /* its last page is not whole */
}

int mmkv_txn_prepare(mmkv_conn *conn)
{
    mmkv_conn_clear_error(conn);
    mmkv_engine *e = conn->engine;
    mmkv_txn *txn = &e->txn;
    if (txn->owner != conn || txn->prepared) return MMKV_OK;
    if (txn->n_written == 0) {
        txn->prepared = 1; /* nothing to commit: no meta write */
        return MMKV_OK;
    }
    /* The last record marks the transaction's end, for salvage (format.h). A commit that skips its
    ** syncs first leaves the notice, durably, that the file may need salvage after a power cut. */
    mmkv_log_mark_txn_end(&e->log, txn->written[txn->n_written - 1], 1);
    txn->marked = 1;
    int rc = MMKV_OK;
    if (conn->sync == MMKV_SYNC_OFF && !e->temporary && !mmkv_log_notice(&e->log, NULL))
        rc = mmkv_log_write_notice(&e->log, txn->start); /* all before was synced */
    if (rc == MMKV_OK) rc = mmkv_failpoint("before-data-sync");
    if (rc == MMKV_OK && conn->sync != MMKV_SYNC_OFF && !conn->owner_keeps_records) {
        drop_written_pages(e, txn->append_pos, 0);
        rc = mmkv_map_sync_range(&e->log.map, txn->start, txn->append_pos - txn->start);
    }
    if (rc == MMKV_OK) rc = mmkv_failpoint("before-meta-write");
    if (rc != MMKV_OK) return mmkv_error_os(&conn->errmsg, rc, "mmkv: cannot sync '%s'", e->data_path);
    mmkv_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.txid = txn->txid;
    meta.committed_tail = txn->append_pos;
    meta.live_count = txn->counts.live;
    meta.record_count = txn->counts.records;
    meta.garbage_bytes = txn->counts.garbage;
    meta.txn_start = txn->start;
    meta.log_start = txn->counts.start;
    meta.compactions = txn->counts.compactions;
    mmkv_meta_seal(&meta);
    int slot = txn->committed_slot ^ 1;
    memcpy(&txn->overwritten_meta, mmkv_map_base(&e->log.map) + MMKV_META_OFFSET(slot),
           sizeof meta);
    /* When a database owns the file, its own commit record decides: the meta slot only follows.
    ** Otherwise the slot is the commit, synced under full and normal alike: both meta slots share
    ** the file's first page, and a power cut can take an unsynced write of that page with both,
    ** which nothing else could recover from (the power-loss test finds it). Records that marked
    ** their transaction's end would let normal skip this sync. */
    rc = mmkv_log_write_meta(&e->log, slot, &meta, conn->sync != MMKV_SYNC_OFF && !conn->external);
    if (rc != MMKV_OK) {
        mmkv_log_write_meta(&e->log, slot, &txn->overwritten_meta, 0);
        return mmkv_error_os(&conn->errmsg, rc, "mmkv: cannot sync '%s'", e->data_path);
    }
    txn->prepared = 1;
    return MMKV_OK;
}

void mmkv_txn_outcome(mmkv_conn *conn, mmkv_commit *commit)
{
    mmkv_txn *txn = &conn->engine->txn;
    commit->txid = txn->n_written ? txn->txid : txn->txid - 1;
    commit->start = txn->counts.start;
    commit->tail = txn->append_pos;
    commit->live_count = txn->counts.live;
    commit->record_count = txn->counts.records;
    commit->garbage_bytes = txn->counts.garbage;
    commit->compactions = txn->counts.compactions;
}

void mmkv_txn_records(mmkv_conn *conn, const void **bytes, uint64_t *from, uint64_t *len)
{
    mmkv_engine *e = conn->engine;
    mmkv_txn *txn = &e->txn;
    *from = txn->start;
    *len = txn->owner == conn ? txn->append_pos - txn->start : 0;
    *bytes = mmkv_map_base(&e->log.map) + txn->start;
}

int mmkv_sync_records(mmkv_conn *conn, uint64_t from, uint64_t to)
{
    mmkv_conn_clear_error(conn);
    mmkv_engine *e = conn->engine;
    int rc = to > from ? mmkv_map_sync_range(&e->log.map, from, to - from) : MMKV_OK;
    if (rc != MMKV_OK) return mmkv_error_os(&conn->errmsg, rc, "mmkv: cannot sync '%s'", e->data_path);
    return MMKV_OK;
}

static void txn_end(mmkv_engine *e)
{
    mmkv_txn *txn = &e->txn;
    pthread_mutex_lock(&e->mutex);
    mmkv_index_header_of(&e->index)->writer_active = 0;
    txn->owner = NULL;
    txn->last_hit.slot = NULL;
    txn->n_written = 0;
    txn->n_forgotten = 0;
    txn->n_savepoints = 0;
    txn->prepared = 0;
    txn->marked = 0;
    mmkv_unlock(e->log.map.fd, MMKV_LOCK_WRITER);
    pthread_mutex_unlock(&e->mutex);
}

void mmkv_txn_rollback(mmkv_conn *conn)
{
    mmkv_engine *e = conn->engine;
    mmkv_txn *txn = &e->txn;
    if (txn->owner != conn) return;
    if (txn->prepared && txn->n_written) {
        /* Prepared, then another participant failed: put the overwritten slot back. */
        mmkv_log_write_meta(&e->log, txn->committed_slot ^ 1, &txn->overwritten_meta,
                            conn->sync != MMKV_SYNC_OFF && !conn->external);
    }
    if (txn->marked && txn->n_written) {
        /* Take the end mark off the last record, durably, lest salvage take this transaction for
        ** a whole one. */
        uint64_t last = txn->written[txn->n_written - 1];
        mmkv_log_mark_txn_end(&e->log, last, 0);
        if (!e->temporary) mmkv_map_sync_range(&e->log.map, last, sizeof(mmkv_record_header));
    }
    mmkv_engine_undo(e, 0, 0);
    txn->append_pos = txn->start;
    if (e->pages_dropped_to > txn->start) /* the next records go there again */
        e->pages_dropped_to = txn->start / MMKV_PAGE_SIZE * MMKV_PAGE_SIZE;
    txn_end(e);
}

void mmkv_txn_commit(mmkv_conn *conn)
{
    mmkv_engine *e = conn->engine;
    mmkv_txn *txn = &e->txn;
    if (txn->owner != conn) return;
    if (!txn->prepared && mmkv_txn_prepare(conn) != MMKV_OK) {
        mmkv_txn_rollback(conn); /* commit cannot report failure: leave nothing half-done */
        return;
    }
    if (txn->n_written && txn->append_pos > DROP_PAGES_KEEP)
        drop_written_pages(e, txn->append_pos - DROP_PAGES_KEEP, DROP_PAGES_MIN);
    txn_end(e);
}
