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

void mmkv_compaction_committed(mmkv_table *t)
{
    int asked = t->compact_asked;
    t->compact_asked = 0;
    if (!t->conn || (!t->compacted && !asked)) return;
    t->compacted = 0;
    if (t->owned) {
        mmkv_job_target target;
        if (job_target(t, &target))
            mmkv_worker_submit(&target, asked ? MMKV_JOB_COMPACT : MMKV_JOB_RECLAIM);
        return;
    }
    mmkv_commit state;
    if (alone(t) && mmkv_committed(t->conn, &state) == MMKV_OK) mmkv_reclaim(t->conn, &state, 0, NULL);
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
    mmkv_compact_set_safe(t->conn, alone(t) ? begun.txid : 0, 1);
    while (mmkv_compact_pending(t->conn, NULL)) {
        int stepped = 0;
        rc = mmkv_compact_on_commit(t->conn, 0, 0, &stepped);
        if (rc != MMKV_OK) return mmkv_table_error(t, rc, err);
        if (stepped) t->compacted = 1;
    }
    return SQLITE_OK;
}
