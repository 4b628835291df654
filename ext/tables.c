/*
** A connection's open mmkv tables, and each table's write transaction. See tables.h.
*/
#include "tables.h"
#include "compaction.h"
#include "pending.h"

#include <stdlib.h>
#include <string.h>

SQLITE_EXTENSION_INIT3

mmkv_connection *mmkv_connection_new(sqlite3 *db)
{
    mmkv_connection *c = sqlite3_malloc(sizeof *c);
    if (!c) return NULL;
    memset(c, 0, sizeof *c);
    c->db = db;
    c->pending = mmkv_pending_new(c);
    if (!c->pending) {
        sqlite3_free(c);
        return NULL;
    }
    return c;
}

static void table_free(mmkv_table *t)
{
    mmkv_connection *c = t->connection;
    mmkv_table **p = &c->tables;
    while (*p && *p != t)
        p = &(*p)->next;
    if (*p) *p = t->next;
    mmkv_table_close(t);
    mmkv_record_close(&t->record);
    sqlite3_free(t->schema);
    sqlite3_free(t->name);
    sqlite3_free(t->data_path);
    sqlite3_free(t->broken);
    sqlite3_free(t);
}

void mmkv_connection_unref(mmkv_connection *c)
{
    if (--c->refs > 0) return;
    /* The connection is closing: SQLite has rolled back any transaction, and what a DROP or a
    ** CREATE left pending is settled by the next user of the files (pending.h). */
    mmkv_pending_free(c->pending);
    while (c->tables)
        table_free(c->tables);
    sqlite3_free(c);
}

mmkv_table *mmkv_table_find(mmkv_connection *c, const char *schema, const char *name)
{
    for (mmkv_table *t = c->tables; t; t = t->next)
        if (t->status == MMKV_TABLE_LIVE && sqlite3_stricmp(t->schema, schema) == 0 &&
            sqlite3_stricmp(t->name, name) == 0)
            return t;
    return NULL;
}

mmkv_table *mmkv_table_new(mmkv_connection *c, const char *schema, const char *name)
{
    mmkv_table *t = sqlite3_malloc(sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    t->connection = c;
    t->schema = sqlite3_mprintf("%s", schema);
    t->name = sqlite3_mprintf("%s", name);
    t->text_encoding = MMKV_TEXT_UTF8;
    t->refs = 1;
    t->next = c->tables;
    c->tables = t;
    if (!t->schema || !t->name) {
        table_free(t);
        return NULL;
    }
    return t;
}

void mmkv_table_ref(mmkv_table *t)
{
    t->refs++;
}

/* Whether a table nothing holds must stay: see mmkv_table_unref. */
static int must_stay(mmkv_table *t)
{
    if (t->conn && mmkv_txn_active(t->conn)) return 1;
    return t->temporary && t->status == MMKV_TABLE_LIVE;
}

void mmkv_table_unref(mmkv_table *t)
{
    if (--t->refs > 0 || must_stay(t)) return;
    table_free(t);
}

void mmkv_tables_sweep(mmkv_connection *c)
{
    mmkv_table **p = &c->tables;
    while (*p) {
        mmkv_table *t = *p;
        if (t->refs == 0 && !must_stay(t)) {
            table_free(t); /* unlinks it: *p is the next one now */
            continue;
        }
        p = &t->next;
    }
}

void mmkv_table_break(mmkv_table *t, int rc, const char *message)
{
    mmkv_table_close(t);
    sqlite3_free(t->broken);
    t->broken = sqlite3_mprintf("%s", message);
    t->broken_rc = rc;
}

void mmkv_table_close(mmkv_table *t)
{
    if (t->conn) mmkv_close(t->conn);
    t->conn = NULL;
}

const char *mmkv_value_type_name(int type)
{
    switch (type) {
    case SQLITE_INTEGER:
        return "an integer";
    case SQLITE_FLOAT:
        return "a real";
    case SQLITE_BLOB:
        return "a blob";
    case SQLITE_NULL:
        return "NULL";
    default:
        return "text";
    }
}

int mmkv_sqlite_rc(int engine_rc)
{
    switch (engine_rc) {
    case MMKV_NOTFOUND:
        return SQLITE_ERROR;
    case MMKV_CORRUPT:
        return SQLITE_CORRUPT_VTAB;
    default:
        return engine_rc;
    }
}

static void set_message(char **err, const char *message)
{
    if (!err) return;
    sqlite3_free(*err);
    *err = sqlite3_mprintf("%s", message);
}

int mmkv_table_error(mmkv_table *t, int engine_rc, char **err)
{
    set_message(err, t->conn ? mmkv_errmsg(t->conn) : t->broken ? t->broken : "mmkv: error");
    return mmkv_sqlite_rc(engine_rc);
}

/* ---- the write transaction ---- */

/* The connection's busy timeout in milliseconds (PRAGMA busy_timeout; 0 if none is set). */
static int busy_timeout_ms(sqlite3 *db)
{
    sqlite3_stmt *stmt = NULL;
    int ms = 0;
    if (sqlite3_prepare_v2(db, "PRAGMA busy_timeout", -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        ms = sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    return ms;
}

/* Where no database lock serialises writers (the file is shared by in-memory databases), mmkv's
** own file lock does, and a writer waits for it up to the connection's busy timeout, backing off
** as SQLite's own busy handler does. */
static int begin_waiting(mmkv_table *t)
{
    static const int delays_ms[] = {1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100};
    const int n_delays = (int)(sizeof delays_ms / sizeof delays_ms[0]);
    int rc = mmkv_txn_begin(t->conn);
    if (rc != MMKV_BUSY) return rc;
    int timeout = busy_timeout_ms(t->connection->db), waited = 0;
    for (int i = 0; rc == MMKV_BUSY && waited < timeout; i++) {
        int delay = delays_ms[i < n_delays ? i : n_delays - 1];
        if (delay > timeout - waited) delay = timeout - waited;
        sqlite3_sleep(delay);
        waited += delay;
        rc = mmkv_txn_begin(t->conn);
    }
    return rc;
}

/* A table in a database file begins from the commit its database records. SQLite already holds
** the database's write lock: a statement that writes a virtual table begins a write transaction
** on the table's database first, so writers across processes queue on that lock, and the busy
** timeout applies as usual. */
/* A table opened read-only (its database was read-only or query_only then) that is to be written
** now: its engine connection is opened again for writing, between statements' reads. */
static int reopen_writable(mmkv_table *t, char **err)
{
    if (t->open_cursors || !t->data_path) return SQLITE_OK; /* the engine refuses the write */
    mmkv_open_options options = {.sync = t->sync,
                                 .must_exist = 1,
                                 .owner_id = t->owned ? t->record.owner_id : 0,
                                 .owner_keeps_records = t->owned};
    mmkv_conn *conn = NULL;
    char *message = NULL;
    int rc = mmkv_open(t->data_path, &options, &conn, &message);
    if (rc != MMKV_OK) {
        set_message(err, message ? message : "mmkv: cannot open the table's files");
        free(message);
        return mmkv_sqlite_rc(rc);
    }
    mmkv_close(t->conn);
    t->conn = conn;
    return SQLITE_OK;
}

int mmkv_table_begin(mmkv_table *t, char **err)
{
    if (!t->conn) {
        set_message(err, t->broken ? t->broken : "mmkv: the table no longer exists");
        return t->broken ? t->broken_rc : SQLITE_ERROR;
    }
    if (mmkv_txn_active(t->conn)) return SQLITE_OK;
    int rc;
    if (mmkv_readonly(t->conn) && (rc = reopen_writable(t, err)) != SQLITE_OK) return rc;
    if (t->owned) {
        if ((rc = mmkv_record_read(&t->record, &t->begun, err)) != SQLITE_OK) return rc;
        mmkv_commit state = t->begun;
        rc = mmkv_txn_begin_at(t->conn, &state);
    } else {
        rc = begin_waiting(t);
    }
    return rc == MMKV_OK ? SQLITE_OK : mmkv_table_error(t, rc, err);
}

/* Whether the table is still in its database's schema (by its commit record, or for a table
** without one, by name): a CREATE rolled back by a savepoint leaves a table SQLite still calls. */
int mmkv_table_still_there(mmkv_table *t)
{
    sqlite3 *db = t->connection->db;
    char *sql = t->owned ? sqlite3_mprintf("SELECT 1 FROM \"%w\".sqlite_schema WHERE type = "
                                           "'table' AND name = '%q_%q'",
                                           t->schema, t->name, MMKV_COMMIT_SUFFIX)
                         : sqlite3_mprintf("SELECT 1 FROM \"%w\".sqlite_schema WHERE type = "
                                           "'table' AND name = %Q",
                                           t->schema, t->name);
    sqlite3_stmt *stmt = NULL;
    int there = !sql || sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK ||
                sqlite3_step(stmt) == SQLITE_ROW;
    sqlite3_finalize(stmt);
    sqlite3_free(sql);
    return there;
}

/*
** The records of a commit become durable no later than the database's commit that records them
** (commit_record.h, THE REDO ROW): a commit whose records, with those the redo row keeps already,
** fit in the row keeps them there; any other syncs the data file from the first record not yet
** synced up to its own tail. Under sync=off nothing is kept or synced.
*/
static int keep_records_durable(mmkv_table *t, const mmkv_commit *before, const mmkv_commit *after,
                                mmkv_redo *kept, char **err)
{
    mmkv_commit_record *rec = &t->record;
    memset(kept, 0, sizeof *kept);
    if (t->sync == MMKV_SYNC_OFF) {
        rec->redo_from = 0;
        return SQLITE_OK;
    }
    uint64_t from = rec->redo_from ? rec->redo_from : before->tail;
    mmkv_txn_records(t->conn, &kept->bytes, &kept->from, &kept->len);
    if (!kept->len) return SQLITE_OK; /* no records (a step that only dropped garbage) */
    if (kept->from == before->tail && after->tail - from <= mmkv_record_redo_room(rec)) {
        rec->redo_from = from;
        return SQLITE_OK;
    }
    memset(kept, 0, sizeof *kept);
    rec->redo_from = 0;
    int rc = mmkv_sync_records(t->conn, from, after->tail);
    return rc == MMKV_OK ? SQLITE_OK : mmkv_table_error(t, rc, err);
}

/* The records are made durable or kept, then the commit is recorded in the database, in the
** transaction SQLite is about to commit: one commit for mmkv and native tables. */
int mmkv_table_sync(mmkv_table *t, char **err)
{
    if (t->status != MMKV_TABLE_LIVE || !t->conn || !mmkv_txn_active(t->conn)) return SQLITE_OK;
    /* A CREATE a savepoint rolled back: the table's writes go with it. (Asked only of a table
    ** created in this transaction: the question costs a statement.) */
    if (mmkv_pending_created(t->connection, t) && !mmkv_table_still_there(t) &&
        mmkv_pending_discard_created(t->connection, t))
        return SQLITE_OK;
    int rc = mmkv_compaction_sync(t, err);
    if (rc != SQLITE_OK) return rc;
    rc = mmkv_txn_prepare(t->conn);
    if (rc != MMKV_OK) return mmkv_table_error(t, rc, err);
    if (!t->owned) return SQLITE_OK;
    mmkv_commit after;
    mmkv_txn_outcome(t->conn, &after);
    if (memcmp(&t->begun, &after, sizeof after) == 0) return SQLITE_OK;
    mmkv_redo kept;
    rc = keep_records_durable(t, &t->begun, &after, &kept, err);
    if (rc == SQLITE_OK) rc = mmkv_record_write(&t->record, &after, &kept, err);
    return rc;
}

void mmkv_table_commit(mmkv_table *t)
{
    if (!t->conn || !mmkv_txn_active(t->conn)) return;
    if (t->status == MMKV_TABLE_LIVE) {
        mmkv_txn_commit(t->conn);
        mmkv_compaction_committed(t);
    } else {
        mmkv_txn_rollback(t->conn); /* a dropped table's writes go with it */
    }
    t->compacted = 0;
    t->compact_asked = 0;
}

void mmkv_table_rollback(mmkv_table *t)
{
    t->compacted = 0;
    t->step_budget = 0;
    if (t->compact_asked && t->conn) mmkv_compact_cancel(t->conn);
    t->compact_asked = 0;
    if (!t->conn) return;
    mmkv_txn_rollback(t->conn);
}

int mmkv_table_savepoint(mmkv_table *t, int level, char **err)
{
    if (!t->conn) return SQLITE_OK;
    int rc = mmkv_txn_savepoint(t->conn, level);
    return rc == MMKV_OK ? SQLITE_OK : mmkv_table_error(t, rc, err);
}

void mmkv_table_release(mmkv_table *t, int level)
{
    if (t->conn) mmkv_txn_release(t->conn, level);
}

void mmkv_table_rollback_to(mmkv_table *t, int level)
{
    if (t->conn) mmkv_txn_rollback_to(t->conn, level);
}

/* ---- every table of the connection ---- */

int mmkv_tables_sync(mmkv_connection *c, char **err)
{
    int rc = SQLITE_OK;
    for (mmkv_table *t = c->tables; t && rc == SQLITE_OK; t = t->next)
        rc = mmkv_table_sync(t, err);
    return rc;
}

void mmkv_tables_commit(mmkv_connection *c)
{
    for (mmkv_table *t = c->tables; t; t = t->next)
        mmkv_table_commit(t);
}

void mmkv_tables_rollback(mmkv_connection *c)
{
    for (mmkv_table *t = c->tables; t; t = t->next)
        mmkv_table_rollback(t);
}

int mmkv_tables_savepoint(mmkv_connection *c, int level, char **err)
{
    int rc = SQLITE_OK;
    for (mmkv_table *t = c->tables; t && rc == SQLITE_OK; t = t->next)
        if (t->conn && mmkv_txn_active(t->conn)) rc = mmkv_table_savepoint(t, level, err);
    return rc;
}

void mmkv_tables_release(mmkv_connection *c, int level)
{
    for (mmkv_table *t = c->tables; t; t = t->next)
        mmkv_table_release(t, level);
}

void mmkv_tables_rollback_to(mmkv_connection *c, int level)
{
    for (mmkv_table *t = c->tables; t; t = t->next)
        mmkv_table_rollback_to(t, level);
}
