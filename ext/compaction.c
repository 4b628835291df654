/*
** When a table compacts, and who gives its space back: see compaction.h.
*/
#include "compaction.h"
#include "worker.h"

#include <stdlib.h>
#include <string.h>

SQLITE_EXTENSION_INIT3

/* A table whose files only this connection reads: tombstones may go, and space back, at once. */
static int alone(mmkv_table *t)
{
    return !t->owned && t->open_cursors == 0 && mmkv_sole_user(t->conn);
}

int mmkv_compaction_sync(mmkv_table *t, char **err)
{
    if (!t->conn || mmkv_readonly(t->conn) || !mmkv_txn_active(t->conn)) return SQLITE_OK;
    /* Alone, no reader reads older than the newest commit (the one this transaction began from). */
    mmkv_commit begun;
    if (alone(t) && mmkv_committed(t->conn, &begun) == MMKV_OK)
        mmkv_compact_set_safe(t->conn, begun.txid, 0);
    int stepped = 0;
    int rc = mmkv_compact_on_commit(t->conn, t->autocompact, t->step_budget, &stepped);
    t->step_budget = 0;
    if (rc != MMKV_OK) return mmkv_table_error(t, rc, err);
    t->compacted |= stepped;
    return SQLITE_OK;
}

/* Where the worker finds the table: its database file, VFS and name. */
static int job_target(mmkv_table *t, mmkv_job_target *target)
{
    sqlite3 *db = t->connection->db;
    memset(target, 0, sizeof *target);
    target->db_path = sqlite3_db_filename(db, t->schema);
    if (!target->db_path || !target->db_path[0] || !t->data_path) return 0;
    sqlite3_vfs *vfs = NULL;
    if (sqlite3_file_control(db, t->schema, SQLITE_FCNTL_VFS_POINTER, &vfs) == SQLITE_OK && vfs)
        target->vfs = vfs->zName;
    target->table = t->name;
    target->data_path = t->data_path;
    target->owner_id = t->record.owner_id;
    return 1;
}

/* A commit that left garbage past 4/3 of the threshold (40% at 30), and at least the most one step
** walks (4 MiB), is more than its commits' steps will bring down soon: one large transaction
** rewrote or deleted much of the table, and its own step walks at most 4 MiB. With no commit after
** it, the files would stay at that size (a table of 150,000 rows rewritten in one transaction kept
** twice its size; deleted, 8 MB of tombstones). It asks for a pass, as 'compact' does, which the
** worker runs to its end (or, for a table of a temporary or in-memory database, the committing
** connection at once: compact_after_commit). Under a sustained workload steps keep garbage near the threshold, so
** this asks only after such a transaction. */
#define BEHIND_FACTOR_NUM 4
#define BEHIND_FACTOR_DEN 3
#define BEHIND_MIN_GARBAGE ((uint64_t)4 << 20)

static int far_behind(mmkv_table *t)
{
    mmkv_commit state;
    if (t->autocompact <= 0 || mmkv_committed(t->conn, &state) != MMKV_OK) return 0;
    uint64_t start = state.start > MMKV_RECORD_FIRST_OFFSET ? state.start : MMKV_RECORD_FIRST_OFFSET;
    uint64_t bytes = state.tail > start ? state.tail - start : 0;
    return state.garbage_bytes >= BEHIND_MIN_GARBAGE &&
           state.garbage_bytes * 100 * BEHIND_FACTOR_DEN >=
               bytes * (uint64_t)t->autocompact * BEHIND_FACTOR_NUM &&
           !mmkv_compact_pending(t->conn, NULL);
}

/* The whole pass asked for, run here in the transaction t has begun: a table that is not in a
** database file has no worker to run it. */
static int run_pass_here(mmkv_table *t, uint64_t safe_txid)
{
    mmkv_compact_set_safe(t->conn, safe_txid, 1);
    while (mmkv_compact_pending(t->conn, NULL)) {
        int stepped = 0;
        int rc = mmkv_compact_on_commit(t->conn, 0, 0, &stepped);
        if (rc != MMKV_OK) return rc;
        if (stepped) t->compacted = 1;
    }
    return MMKV_OK;
}

/* A table of a temporary or in-memory database that one large transaction left far behind, and
** that only this connection uses: the pass runs now, in a transaction of its own after the one
** that committed (commit cannot fail, so a pass that fails is rolled back, and later commits'
** steps go on with it). Only this connection waits, and only after a transaction that wrote at
** least as much as the pass walks. */
static void compact_after_commit(mmkv_table *t, const mmkv_commit *state)
{
    if (mmkv_txn_begin(t->conn) != MMKV_OK) return;
    mmkv_compact_request(t->conn);
    int rc = run_pass_here(t, state->txid);
    if (rc == MMKV_OK) rc = mmkv_txn_prepare(t->conn);
    if (rc == MMKV_OK)
        mmkv_txn_commit(t->conn);
    else
        mmkv_txn_rollback(t->conn);
}

void mmkv_compaction_committed(mmkv_table *t)
{
    int asked = t->compact_asked;
    t->compact_asked = 0;
    if (!t->conn) return;
    int behind = !asked && far_behind(t);
    if (t->owned) {
        if (behind) mmkv_compact_request(t->conn);
        asked |= behind;
        if (!t->compacted && !asked) return;
        t->compacted = 0;
        mmkv_job_target target;
        if (job_target(t, &target))
            mmkv_worker_submit(&target, asked ? MMKV_JOB_COMPACT : MMKV_JOB_RECLAIM);
        return;
    }
    mmkv_commit state;
    if (!(t->compacted || behind) || !alone(t) || mmkv_committed(t->conn, &state) != MMKV_OK) return;
    t->compacted = 0;
    if (behind) {
        compact_after_commit(t, &state);
        t->compacted = 0;
        if (mmkv_committed(t->conn, &state) != MMKV_OK) return;
    }
    mmkv_reclaim(t->conn, &state, 0, NULL);
}

int mmkv_compaction_command(mmkv_table *t, int step_only, char **err)
{
    if (step_only) {
        t->step_budget = MMKV_COMPACT_STEP_BYTES;
        return SQLITE_OK;
    }
    mmkv_commit begun;
    int rc = t->owned ? mmkv_record_read(&t->record, &begun, err) : SQLITE_OK;
    if (rc != SQLITE_OK) return rc;
    if (!t->owned && (rc = mmkv_committed(t->conn, &begun)) != MMKV_OK)
        return mmkv_table_error(t, rc, err);
    if (begun.tail <= begun.start || begun.tail <= MMKV_RECORD_FIRST_OFFSET) return SQLITE_OK;
    mmkv_compact_request(t->conn);
    mmkv_job_target target;
    if (t->owned && job_target(t, &target)) {
        t->compact_asked = 1; /* the worker starts when this transaction commits */
        return SQLITE_OK;
    }
    /* Not in a database file: run it here, to its end, in this transaction. */
    rc = run_pass_here(t, alone(t) ? begun.txid : 0);
    return rc == MMKV_OK ? SQLITE_OK : mmkv_table_error(t, rc, err);
}
