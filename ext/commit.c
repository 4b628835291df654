/*
** What is committed: the one place that decides it, for readers, writers and opens alike.
**
** Who decides:
**   - a file its database owns: the database's commit record (commit_record.h), which the SQL
**     face reads in SQLite's transaction and passes in. The meta slots follow it: a commit
**     writes its meta slot (prepare, txn.c) before the SQL face writes the record, so in normal
**     operation the meta slots are never behind the record. After a crash they may be one
**     transaction ahead (the database rolled back: the next writer rolls the log back, repair_to)
**     or behind (a power cut lost their unsynced write: the connection's open, or the next
**     writer, brings them and the index up, mmkv_commit_catch_up);
**   - a file shared by in-memory databases (owner 0): the meta slots themselves. The newest
**     intact slot is the commit; a crash before its write leaves the one before in force.
** Salvage (format.h, SALVAGE) can leave the log short of what a database recorded, or padded up
** to it: then the log holds what the meta slot says (effective_commit), until a writer pads it.
**
** A reader takes its snapshot here (mmkv_snapshot_at, mmkv_snapshot_take) without any lock; only
** the catch-up after a crash takes the writer's lock, and an open does it first.
*/
#include "engine.h"
#include "error.h"

#include <stdio.h>
#include <string.h>

void mmkv_commit_from_meta(const mmkv_meta *meta, mmkv_commit *commit)
{
    commit->txid = meta->txid;
    commit->start = mmkv_meta_start(meta);
    commit->tail = meta->committed_tail;
    commit->live_count = meta->live_count;
    commit->record_count = meta->record_count;
    commit->garbage_bytes = meta->garbage_bytes;
    commit->compactions = (meta->flags & MMKV_META_HAS_START) ? meta->compactions : 0;
}

int mmkv_committed(mmkv_conn *conn, mmkv_commit *commit)
{
    mmkv_conn_clear_error(conn);
    mmkv_meta meta;
    int slot;
    int rc = mmkv_log_meta(&conn->engine->log, &meta, &slot, &conn->errmsg);
    if (rc == MMKV_OK) mmkv_commit_from_meta(&meta, commit);
    return rc;
}

/* What a recorded commit means for the log (as mmkv_commit_effective); *behind set if the meta
** slots lag the record in a way only an index catch-up mends. */
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
        mmkv_commit_from_meta(&meta, effective);
}

void mmkv_commit_effective(mmkv_engine *e, const mmkv_commit *recorded, mmkv_commit *effective)
{
    int behind;
    effective_commit(e, recorded, effective, &behind);
}

static void meta_of_state(const mmkv_commit *state, mmkv_meta *meta)
{
    memset(meta, 0, sizeof *meta);
    meta->txid = state->txid;
    meta->committed_tail = state->tail;
    meta->live_count = state->live_count;
    meta->record_count = state->record_count;
    meta->garbage_bytes = state->garbage_bytes;
    meta->txn_start = state->tail;
    meta->log_start = state->start;
    meta->compactions = state->compactions;
    mmkv_meta_seal(meta);
}

/*
** The meta slots ahead of the commit the database records, found by the first open anywhere (the
** open lock free): the database took back a commit whose records it may never have had durable
** (its owner kept them: commit_record.h), so the log past the record may be torn, and nothing may
** read it, the index's recovery least of all. Both slots are set to the record before the index
** is recovered, which then rebuilds what it holds past the record. (While others have the file
** open, records past the record are whole in memory, and the next writer rolls back: repair_to.)
*/
int mmkv_commit_open_at(mmkv_engine *e, const mmkv_commit *recorded, int sync, char **errmsg)
{
    mmkv_meta meta;
    int slot;
    /* Both slots lost (they are not synced either): the index's recovery rebuilds them. */
    if (mmkv_log_meta(&e->log, &meta, &slot, NULL) != MMKV_OK || meta.txid <= recorded->txid ||
        (meta.flags & MMKV_META_SALVAGED))
        return MMKV_OK;
    int rc;
    mmkv_meta fixed;
    meta_of_state(recorded, &fixed);
    rc = mmkv_log_write_meta(&e->log, slot, &fixed, sync);
    if (rc == MMKV_OK) rc = mmkv_log_write_meta(&e->log, slot ^ 1, &fixed, sync);
    if (rc != MMKV_OK) return mmkv_error_os(errmsg, rc, "mmkv: cannot write to '%s'", e->data_path);
    return MMKV_OK;
}

/*
** Brings the log and the index to the state the owning database says is committed, after a crash
** fell between the two commits: the meta slots one transaction ahead (the database rolled back)
** or behind (the meta write was lost), and the index possibly holding slots of records past the
** committed tail. The records below that tail were made durable before the database committed.
*/
static int repair_to(mmkv_conn *conn, const mmkv_meta *meta, const mmkv_commit *state)
{
    mmkv_engine *e = conn->engine;
    mmkv_txn *txn = &e->txn;
    int rc = mmkv_engine_cover(e, state->tail, &conn->errmsg);
    if (rc == MMKV_OK)
        rc = mmkv_engine_rebuild_index(e, state->start, state->tail, state->live_count,
                                       &conn->errmsg);
    /* Rolled back below what the notice holds durable (the database lost commits mmkv kept): the
    ** records past the record will be overwritten, so salvage must not count on them. */
    uint64_t durable;
    if (rc == MMKV_OK && mmkv_log_notice(&e->log, &durable) && durable > state->tail)
        rc = mmkv_log_write_notice(&e->log, state->tail);
    if (rc != MMKV_OK || (meta->txid == state->txid && meta->committed_tail == state->tail))
        return rc;
    mmkv_meta fixed;
    meta_of_state(state, &fixed);
    /* Behind: write the other slot, which becomes newest. Ahead: overwrite both, since salvage
    ** leaves the same state in both, and either could still be ahead. */
    int ahead = meta->txid > state->txid;
    int slot = ahead ? txn->committed_slot : txn->committed_slot ^ 1;
    rc = mmkv_log_write_meta(&e->log, slot, &fixed, conn->sync != MMKV_SYNC_OFF);
    if (rc == MMKV_OK && ahead)
        rc = mmkv_log_write_meta(&e->log, slot ^ 1, &fixed, conn->sync != MMKV_SYNC_OFF);
    if (rc != MMKV_OK) return mmkv_error_os(&conn->errmsg, rc, "mmkv: cannot sync '%s'", e->data_path);
    txn->committed_slot = slot;
    return MMKV_OK;
}

/*
** Salvage (format.h) left the log short of the commit the database recorded: commits made under
** sync=off were lost to a power cut. Fills the lost bytes with pad records of the recorded
** transaction, so that the record names a whole log again, and takes the counts from the log.
*/
static int pad_to_record(mmkv_conn *conn, mmkv_meta *meta, mmkv_commit *state)
{
    mmkv_engine *e = conn->engine;
    mmkv_txn *txn = &e->txn;
    if (meta->committed_tail < state->tail) {
        if (state->tail - meta->committed_tail < sizeof(mmkv_record_header) ||
            state->txid <= meta->txid)
            return mmkv_error(&conn->errmsg, MMKV_CORRUPT,
                              "mmkv: '%s' is damaged: its database records commit %llu up to "
                              "byte %llu, which its salvaged log cannot hold",
                              e->data_path, (unsigned long long)state->txid,
                              (unsigned long long)state->tail);
        uint64_t from = meta->committed_tail;
        int rc = mmkv_log_write_pad(&e->log, from, state->tail, state->txid);
        if (rc != MMKV_OK)
            return mmkv_map_error(&e->log.map, &conn->errmsg, rc, "data file", e->data_path);
        if (conn->sync != MMKV_SYNC_OFF)
            rc = mmkv_map_sync_range(&e->log.map, from, state->tail - from);
        mmkv_meta padded = *meta;
        padded.txid = state->txid;
        padded.committed_tail = state->tail;
        padded.garbage_bytes += state->tail - from;
        padded.txn_start = from;
        mmkv_meta_seal(&padded);
        int slot = txn->committed_slot ^ 1;
        if (rc == MMKV_OK)
            rc = mmkv_log_write_meta(&e->log, slot, &padded, conn->sync != MMKV_SYNC_OFF);
        if (rc != MMKV_OK)
            return mmkv_error_os(&conn->errmsg, rc, "mmkv: cannot write to '%s'", e->data_path);
        txn->committed_slot = slot;
        *meta = padded;
    }
    if (meta->txid == state->txid && meta->committed_tail == state->tail) {
        /* The log is salvage's, padded: where it begins too (the record's start may name bytes
        ** the power cut took; salvage kept whole what lies from its own start). */
        state->start = mmkv_meta_start(meta);
        state->live_count = meta->live_count;
        state->record_count = meta->record_count;
        state->garbage_bytes = meta->garbage_bytes;
    }
    return MMKV_OK;
}

/* The state a writer begins from, with the writer's lock held: the authority's (the database's
** record, or the meta slots if NULL), the log first padded up to it after salvage, and the meta
** slots and the index brought to it if they differ (a crash between the two commits). */
int mmkv_commit_begin_state(mmkv_conn *conn, const mmkv_commit *authority, mmkv_commit *state)
{
    mmkv_engine *e = conn->engine;
    mmkv_txn *txn = &e->txn;
    mmkv_meta meta;
    int rc = mmkv_log_meta(&e->log, &meta, &txn->committed_slot, &conn->errmsg);
    if (rc != MMKV_OK) return rc;
    mmkv_commit_from_meta(&meta, state);
    if (authority) *state = *authority;
    if (authority && (meta.flags & MMKV_META_SALVAGED) &&
        (rc = pad_to_record(conn, &meta, state)) != MMKV_OK)
        return rc;
    if ((rc = mmkv_index_begin_writes(&e->index)) != MMKV_OK)
        return mmkv_error_os(&conn->errmsg, rc, "mmkv: cannot write to '%s'", e->index_path);
    mmkv_index_header *h = mmkv_index_header_of(&e->index);
    /* writer_active still set: the last writer died with slots published for records that never
    ** committed. */
    if (h->writer_active || meta.txid != state->txid || meta.committed_tail != state->tail)
        rc = repair_to(conn, &meta, state);
    return rc;
}

/* A record names commits the meta slots lack (a power cut lost their unsynced write, the records
** being durable): the index stops short of them too. Brings both up to the record, under the
** writer's lock, as the next writer would. */
int mmkv_commit_catch_up(mmkv_conn *conn, const mmkv_commit *committed)
{
    mmkv_engine *e = conn->engine;
    mmkv_txn *txn = &e->txn;
    if (e->readonly)
        return mmkv_error(&conn->errmsg, MMKV_READONLY,
                          "mmkv: '%s' needs its index brought up to its database's last commit, "
                          "which a read-only connection cannot do: open it once from a "
                          "connection that can write it",
                          e->data_path);
    int rc = mmkv_writer_take(conn, 1);
    if (rc != MMKV_OK) return rc;
    mmkv_meta meta;
    rc = mmkv_log_meta(&e->log, &meta, &txn->committed_slot, &conn->errmsg);
    if (rc == MMKV_OK && meta.txid < committed->txid && !(meta.flags & MMKV_META_SALVAGED) &&
        (rc = mmkv_index_begin_writes(&e->index)) == MMKV_OK) {
        mmkv_index_header *h = mmkv_index_header_of(&e->index);
        h->writer_active = 1; /* a crash in the middle leaves an index that is rebuilt */
        rc = repair_to(conn, &meta, committed);
        if (rc == MMKV_OK) h->writer_active = 0;
    }
    mmkv_writer_release(e);
    return rc;
}

int mmkv_snapshot_take(mmkv_conn *conn, mmkv_snapshot *snapshot)
{
    mmkv_conn_clear_error(conn);
    mmkv_engine *e = conn->engine;
    if (e->txn.owner == conn) {
        snapshot->start = e->txn.counts.start;
        snapshot->tail = e->txn.append_pos;
        snapshot->stable = e->txn.start;
        snapshot->garbage_bytes = e->txn.counts.garbage;
        return MMKV_OK;
    }
    mmkv_meta meta;
    int slot;
    int rc = mmkv_log_meta(&e->log, &meta, &slot, &conn->errmsg);
    if (rc == MMKV_OK)
        rc = mmkv_engine_reach(e, mmkv_meta_start(&meta), meta.committed_tail, &conn->errmsg);
    if (rc != MMKV_OK) return rc;
    snapshot->start = mmkv_meta_start(&meta);
    snapshot->tail = meta.committed_tail;
    snapshot->stable = meta.committed_tail;
    snapshot->garbage_bytes = meta.garbage_bytes;
    return MMKV_OK;
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
        /* The meta slots, and so the index, lag the record: the open of this connection brought
        ** them up to the record it read then (mmkv_commit_catch_up), and every commit since
        ** wrote its meta slot before its record. Should a crash elsewhere have left them behind
        ** again, they are brought up now: the one read that waits for the writer's lock. (A
        ** read-only engine's own index follows the record already: mmkv_engine_reach.) */
        if (behind && !conn->engine->private_index) rc = mmkv_commit_catch_up(conn, committed);
        if (rc == MMKV_OK) {
            conn->have_seen = 1;
            conn->seen_txid = committed->txid;
            conn->seen_tail = committed->tail;
            conn->seen_effective = state;
        }
    }
    if (rc == MMKV_OK) rc = mmkv_engine_cover(conn->engine, state.tail, &conn->errmsg);
    if (rc == MMKV_OK)
        rc = mmkv_engine_reach(conn->engine, state.start, state.tail, &conn->errmsg);
    if (rc != MMKV_OK) return rc;
    snapshot->start = state.start > MMKV_DATA_START ? state.start : MMKV_DATA_START;
    snapshot->tail = state.tail;
    snapshot->stable = state.tail;
    snapshot->garbage_bytes = state.garbage_bytes;
    return MMKV_OK;
}

