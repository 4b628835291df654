/*
** DDL that waits on the outcome of SQLite's transaction, and the participant that learns it.
** See pending.h.
*/
#include "pending.h"
#include "connections.h"
#include "failpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

SQLITE_EXTENSION_INIT3

typedef enum op_kind { OP_CREATE, OP_DROP, OP_RENAME } op_kind;

static const char *const op_names[] = {"create", "drop", "rename"};

typedef struct op op;
struct op {
    op *next; /* the one made before it */
    op_kind kind;
    mmkv_table *table; /* holds a reference */
    int level;         /* the innermost savepoint open when it was made; -1 if none */
    /* OP_RENAME: the name before, and the name its files had (NULL if they keep theirs); linked:
    ** the new name was made for it (not a name its files already had) */
    char *old_name;
    char *old_path;
    int linked;
    /* OP_CREATE, OP_RENAME: a dropped table whose file was set aside at displaced_path to make
    ** room for t's new name */
    mmkv_table *displaced;
    char *displaced_path;
};

struct mmkv_pending {
    mmkv_connection *connection;
    op *ops;            /* made while the participant was in the transaction: newest first */
    op *later;          /* made while it was not, settled from the database: newest first */
    int in_transaction; /* the participant is in SQLite's transaction */
    int depth;          /* savepoints open in it (SQLite's numbering: levels 0 to depth - 1) */
    int catching_up;    /* just joined: SQLite's next xSavepoint names a savepoint already open */
    int joining;        /* mmkv's own INSERT is running */
};

/* The pending state lives exactly as long as its connection's: it lists the connection for the
** functions that SQLite gives only the sqlite3 handle (connections.h). */
mmkv_pending *mmkv_pending_new(mmkv_connection *c)
{
    mmkv_pending *p = sqlite3_malloc(sizeof *p);
    if (!p) return NULL;
    memset(p, 0, sizeof *p);
    p->connection = c;
    if (mmkv_connections_add(c) != SQLITE_OK) {
        sqlite3_free(p);
        return NULL;
    }
    return p;
}

static void op_free(op *o)
{
    mmkv_table_unref(o->table);
    if (o->displaced) mmkv_table_unref(o->displaced);
    sqlite3_free(o->old_name);
    sqlite3_free(o->old_path);
    sqlite3_free(o->displaced_path);
    sqlite3_free(o);
}

static void ops_free(op **list)
{
    while (*list) {
        op *o = *list;
        *list = o->next;
        op_free(o);
    }
}

void mmkv_pending_free(mmkv_pending *p)
{
    mmkv_connections_remove(p->connection);
    ops_free(&p->ops);
    ops_free(&p->later);
    sqlite3_free(p);
}

/* ---- what each operation does when its transaction commits or rolls back ---- */

static const char *database_path(mmkv_table *t)
{
    const char *path = sqlite3_db_filename(t->connection->db, t->schema);
    return path ? path : "";
}

static void op_commit(op *o)
{
    mmkv_table *t = o->table;
    switch (o->kind) {
    case OP_DROP:
        /* Its transaction was rolled back by mmkv_tables_commit (a dropped table never commits). */
        mmkv_crash_point("drop-committed");
        {
            /* A file shared by in-memory databases stays while another of them uses it. */
            int delete = t->owns_files && t->data_path && (t->owned || !t->conn ||
                                                           mmkv_sole_user(t->conn));
            mmkv_table_close(t);
            if (delete) mmkv_remove_files(t->data_path, NULL);
        }
        break;
    case OP_RENAME:
        /* The old name goes, unless a later RENAME gave it back. */
        mmkv_crash_point("rename-committed");
        if (o->old_path && t->data_path && strcmp(o->old_path, t->data_path) != 0)
            mmkv_drop_name(o->old_path, t->data_path, NULL);
        break;
    case OP_CREATE:
        break;
    }
}

/* Puts a file set aside to make room for path back under that name. */
static void restore_displaced(op *o, const char *path)
{
    if (!o->displaced || mmkv_rename_files(o->displaced_path, path, NULL) != MMKV_OK) return;
    char *moved = sqlite3_mprintf("%s", path);
    if (!moved) return;
    sqlite3_free(o->displaced->data_path);
    o->displaced->data_path = moved;
}

static void op_cancel(op *o)
{
    mmkv_table *t = o->table;
    switch (o->kind) {
    case OP_CREATE:
        t->status = MMKV_TABLE_DISCARDED;
        mmkv_table_close(t);
        if (t->data_path && t->made_files) {
            mmkv_crash_point("create-undone");
            mmkv_remove_files(t->data_path, NULL);
            if (o->displaced) mmkv_crash_point("displacement-undone");
            restore_displaced(o, t->data_path);
        }
        break;
    case OP_DROP:
        t->status = MMKV_TABLE_LIVE;
        if (t->conn && t->owned && t->owns_files) mmkv_mark_home(t->conn, database_path(t), 0);
        break;
    case OP_RENAME:
        if (o->old_path && t->data_path &&
            (!o->linked || mmkv_drop_name(t->data_path, o->old_path, NULL) == MMKV_OK)) {
            if (o->linked) restore_displaced(o, t->data_path);
            sqlite3_free(t->data_path);
            t->data_path = o->old_path;
            o->old_path = NULL;
        }
        mmkv_record_renamed(&t->record, o->old_name);
        sqlite3_free(t->name);
        t->name = o->old_name;
        o->old_name = NULL;
        break;
    }
}

/* Undoes the operations made at savepoint `level` or inside it (all, for -1), newest first. */
static void cancel_from(mmkv_pending *p, int level)
{
    while (p->ops && p->ops->level >= level) {
        op *o = p->ops;
        p->ops = o->next;
        op_cancel(o);
        op_free(o);
    }
}

static void commit_all(mmkv_pending *p)
{
    /* Oldest first: a RENAME then a DROP of the renamed table happen in that order. */
    op *reversed = NULL;
    while (p->ops) {
        op *o = p->ops;
        p->ops = o->next;
        o->next = reversed;
        reversed = o;
    }
    while (reversed) {
        op *o = reversed;
        reversed = o->next;
        op_commit(o);
        op_free(o);
    }
}

/* ---- joining SQLite's transaction ---- */

/* Joins the current transaction through a write to the participant, so that SQLite reports its
** outcome here. 0 if it cannot: the main database is read-only, or a real table of the
** participant's name shadows it. */
static int join(mmkv_pending *p)
{
    if (p->in_transaction) return 1;
    sqlite3 *db = p->connection->db;
    if (sqlite3_db_readonly(db, "main") == 1) return 0;
    sqlite3_stmt *stmt = NULL;
    int shadowed = 1;
    if (sqlite3_prepare_v2(db,
                           "SELECT 1 FROM main.sqlite_schema WHERE name = '" MMKV_PENDING_MODULE
                           "' COLLATE NOCASE",
                           -1, &stmt, NULL) == SQLITE_OK)
        shadowed = sqlite3_step(stmt) == SQLITE_ROW;
    sqlite3_finalize(stmt);
    if (shadowed) return 0;
    p->joining = 1;
    /* OR IGNORE, and the participant answers with a constraint violation: SQLite counts no row,
    ** so total_changes() and last_insert_rowid() stay as they were (changes() reads 0). */
    sqlite3_exec(db, "INSERT OR IGNORE INTO main." MMKV_PENDING_MODULE " DEFAULT VALUES", NULL,
                 NULL, NULL);
    p->joining = 0;
    return p->in_transaction;
}

/* Whether joining costs the transaction nothing: the DDL is on the main database, or main is
** written in it anyway, or main has no file to lock. Otherwise joining would make the commit take
** main's write lock too, where native DDL would not (a reader of main would block it). */
static int joining_is_free(mmkv_pending *p, const char *schema)
{
    sqlite3 *db = p->connection->db;
    if (sqlite3_stricmp(schema, "main") == 0) return 1;
    const char *main_file = sqlite3_db_filename(db, "main");
    if (!main_file || !main_file[0]) return 1;
#if SQLITE_VERSION_NUMBER >= 3034000
    if (sqlite3_libversion_number() >= 3034000)
        return sqlite3_txn_state(db, "main") == SQLITE_TXN_WRITE;
#endif
    return 0;
}

/* Records o; joins the transaction when that is free, or when o cannot be settled afterwards
** from what the database shows (must_join: a dropped table's transaction in progress, which only
** the participant can carry on if a ROLLBACK TO brings the table back). */
static int add(mmkv_connection *c, op *o, int must_join)
{
    mmkv_pending *p = c->pending;
    if (must_join || joining_is_free(p, o->table->schema)) join(p);
    o->level = p->in_transaction ? p->depth - 1 : -1;
    op **list = p->in_transaction ? &p->ops : &p->later;
    o->next = *list;
    *list = o;
    return SQLITE_OK;
}

static op *op_new(op_kind kind, mmkv_table *t)
{
    op *o = sqlite3_malloc(sizeof *o);
    if (!o) return NULL;
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->table = t;
    mmkv_table_ref(t);
    return o;
}

static int set_displaced(op *o, mmkv_table *displaced, const char *displaced_path)
{
    if (!displaced) return SQLITE_OK;
    o->displaced = displaced;
    mmkv_table_ref(displaced);
    o->displaced_path = sqlite3_mprintf("%s", displaced_path);
    return o->displaced_path ? SQLITE_OK : SQLITE_NOMEM;
}

int mmkv_pending_create(mmkv_connection *c, mmkv_table *t, mmkv_table *displaced,
                        const char *displaced_path)
{
    op *o = op_new(OP_CREATE, t);
    if (!o) return SQLITE_NOMEM;
    if (set_displaced(o, displaced, displaced_path) != SQLITE_OK) {
        op_free(o);
        return SQLITE_NOMEM;
    }
    return add(c, o, 0);
}

int mmkv_pending_drop(mmkv_connection *c, mmkv_table *t)
{
    op *o = op_new(OP_DROP, t);
    return o ? add(c, o, t->conn && mmkv_txn_active(t->conn)) : SQLITE_NOMEM;
}

int mmkv_pending_rename(mmkv_connection *c, mmkv_table *t, const char *old_name,
                        const char *old_path, int linked, mmkv_table *displaced,
                        const char *displaced_path)
{
    op *o = op_new(OP_RENAME, t);
    if (!o) return SQLITE_NOMEM;
    o->linked = linked;
    o->old_name = sqlite3_mprintf("%s", old_name);
    o->old_path = old_path ? sqlite3_mprintf("%s", old_path) : NULL;
    if (!o->old_name || (old_path && !o->old_path) ||
        set_displaced(o, displaced, displaced_path) != SQLITE_OK) {
        op_free(o);
        return SQLITE_NOMEM;
    }
    return add(c, o, 0);
}

/* The link that holds t's pending CREATE, in either list, or NULL. */
static op **created_link(mmkv_pending *p, mmkv_table *t)
{
    for (int list = 0; list < 2; list++)
        for (op **at = list ? &p->later : &p->ops; *at; at = &(*at)->next)
            if ((*at)->kind == OP_CREATE && (*at)->table == t) return at;
    return NULL;
}

int mmkv_pending_created(mmkv_connection *c, mmkv_table *t)
{
    return created_link(c->pending, t) != NULL;
}

int mmkv_pending_discard_created(mmkv_connection *c, mmkv_table *t)
{
    op **at = created_link(c->pending, t);
    if (!at) return 0;
    op *o = *at;
    *at = o->next;
    op_cancel(o);
    op_free(o);
    return 1;
}

/* ---- settling without the participant ---- */

/* Whether the database, now, has the table t names with t's owner (its commit record), or for a
** table without one, a table of that name. */
static int table_there(mmkv_table *t)
{
    if (t->owned) {
        mmkv_commit_record rec;
        int there = mmkv_record_open(&rec, t->connection->db, t->schema, t->name, NULL) ==
                        SQLITE_OK &&
                    rec.owner_id == t->record.owner_id;
        mmkv_record_close(&rec);
        return there;
    }
    char *sql = sqlite3_mprintf("SELECT 1 FROM \"%w\".sqlite_schema WHERE type = 'table' AND "
                                "name = %Q COLLATE NOCASE",
                                t->schema, t->name);
    sqlite3_stmt *stmt = NULL;
    int there = sql && sqlite3_prepare_v2(t->connection->db, sql, -1, &stmt, NULL) == SQLITE_OK &&
                sqlite3_step(stmt) == SQLITE_ROW;
    sqlite3_finalize(stmt);
    sqlite3_free(sql);
    return there;
}

/* Whether the transaction that made o may still be open: its database is in a transaction. */
static int maybe_open(mmkv_connection *c, op *o)
{
#if SQLITE_VERSION_NUMBER >= 3034000
    if (sqlite3_libversion_number() >= 3034000)
        return sqlite3_txn_state(c->db, o->table->schema) != SQLITE_TXN_NONE;
#endif
    (void)o;
    return !sqlite3_get_autocommit(c->db);
}

void mmkv_pending_settle(mmkv_connection *c)
{
    mmkv_pending *p = c->pending;
    if (!p->later || !sqlite3_get_autocommit(c->db)) return;
    /* Each operation whose transaction has ended, by what the database shows: a DROP happened if
    ** the table is gone; a CREATE or a RENAME if the table is there (under its new name). Those
    ** that did not are undone, newest first; those that did are finished, oldest first. */
    op *happened = NULL, **at = &p->later; /* happened: oldest first */
    while (*at) {
        op *o = *at;
        if (maybe_open(c, o)) {
            at = &o->next;
            continue;
        }
        *at = o->next;
        int there = table_there(o->table);
        if (o->kind == OP_DROP ? !there : there) {
            o->next = happened;
            happened = o;
        } else {
            op_cancel(o);
            op_free(o);
        }
    }
    while (happened) {
        op *o = happened;
        happened = o->next;
        op_commit(o);
        op_free(o);
    }
    mmkv_tables_sweep(c);
}

/* ---- the participant: an eponymous virtual table ---- */

typedef struct participant {
    sqlite3_vtab base;
    mmkv_pending *pending;
} participant;

typedef struct participant_cursor {
    sqlite3_vtab_cursor base;
    op *at;
    int in_later; /* at walks the later list */
    sqlite3_int64 row;
} participant_cursor;

static int participantConnect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                              sqlite3_vtab **out, char **err)
{
    (void)argc;
    (void)argv;
    (void)err;
    mmkv_connection *c = aux;
    int rc = sqlite3_declare_vtab(db, "CREATE TABLE x(operation TEXT, schema_name TEXT, "
                                      "table_name TEXT, path TEXT)");
    if (rc != SQLITE_OK) return rc;
    sqlite3_vtab_config(db, SQLITE_VTAB_CONSTRAINT_SUPPORT, 1);
#if SQLITE_VERSION_NUMBER >= 3031000
    if (sqlite3_libversion_number() >= 3031000) sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
#endif
    participant *v = sqlite3_malloc(sizeof *v);
    if (!v) return SQLITE_NOMEM;
    memset(v, 0, sizeof *v);
    v->pending = c->pending;
    *out = &v->base;
    return SQLITE_OK;
}

static int participantDisconnect(sqlite3_vtab *vtab)
{
    sqlite3_free(vtab);
    return SQLITE_OK;
}

static int participantBestIndex(sqlite3_vtab *vtab, sqlite3_index_info *info)
{
    (void)vtab;
    info->estimatedCost = 10;
    info->estimatedRows = 10;
    return SQLITE_OK;
}

static int participantOpen(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out)
{
    (void)vtab;
    participant_cursor *cur = sqlite3_malloc(sizeof *cur);
    if (!cur) return SQLITE_NOMEM;
    memset(cur, 0, sizeof *cur);
    *out = &cur->base;
    return SQLITE_OK;
}

static int participantClose(sqlite3_vtab_cursor *cursor)
{
    sqlite3_free(cursor);
    return SQLITE_OK;
}

static int participantFilter(sqlite3_vtab_cursor *cursor, int idxNum, const char *idxStr, int argc,
                             sqlite3_value **argv)
{
    (void)idxNum;
    (void)idxStr;
    (void)argc;
    (void)argv;
    participant_cursor *cur = (participant_cursor *)cursor;
    mmkv_pending *p = ((participant *)cursor->pVtab)->pending;
    mmkv_pending_settle(p->connection); /* what has been decided is no longer pending */
    cur->at = p->ops ? p->ops : p->later;
    cur->in_later = !p->ops;
    cur->row = 1;
    return SQLITE_OK;
}

static int participantNext(sqlite3_vtab_cursor *cursor)
{
    participant_cursor *cur = (participant_cursor *)cursor;
    cur->at = cur->at->next;
    if (!cur->at && !cur->in_later) {
        cur->at = ((participant *)cursor->pVtab)->pending->later;
        cur->in_later = 1;
    }
    cur->row++;
    return SQLITE_OK;
}

static int participantEof(sqlite3_vtab_cursor *cursor)
{
    return ((participant_cursor *)cursor)->at == NULL;
}

static int participantColumn(sqlite3_vtab_cursor *cursor, sqlite3_context *ctx, int column)
{
    op *o = ((participant_cursor *)cursor)->at;
    const char *text = column == 0   ? op_names[o->kind]
                       : column == 1 ? o->table->schema
                       : column == 2 ? o->table->name
                                     : o->table->data_path;
    if (text)
        sqlite3_result_text(ctx, text, -1, SQLITE_TRANSIENT);
    else
        sqlite3_result_null(ctx);
    return SQLITE_OK;
}

static int participantRowid(sqlite3_vtab_cursor *cursor, sqlite3_int64 *rowid)
{
    *rowid = ((participant_cursor *)cursor)->row;
    return SQLITE_OK;
}

/* Only mmkv's own INSERT, which joins the transaction, may write, and it writes nothing: the
** constraint answer makes SQLite skip the row under OR IGNORE (see join). */
static int participantUpdate(sqlite3_vtab *vtab, int argc, sqlite3_value **argv,
                             sqlite3_int64 *rowid)
{
    (void)argc;
    (void)argv;
    (void)rowid;
    participant *v = (participant *)vtab;
    v->pending->catching_up = 0;
    if (!v->pending->joining) {
        sqlite3_free(vtab->zErrMsg);
        vtab->zErrMsg = sqlite3_mprintf("%s is maintained by mmkv and cannot be written",
                                        MMKV_PENDING_MODULE);
        return SQLITE_ERROR;
    }
    return SQLITE_CONSTRAINT;
}

static int participantBegin(sqlite3_vtab *vtab)
{
    mmkv_pending *p = ((participant *)vtab)->pending;
    p->in_transaction = 1;
    p->depth = 0;
    p->catching_up = 1;
    return SQLITE_OK;
}

static int participantSync(sqlite3_vtab *vtab)
{
    mmkv_pending *p = ((participant *)vtab)->pending;
    return mmkv_tables_sync(p->connection, &vtab->zErrMsg);
}

static int participantCommit(sqlite3_vtab *vtab)
{
    mmkv_pending *p = ((participant *)vtab)->pending;
    mmkv_tables_commit(p->connection);
    commit_all(p);
    p->in_transaction = 0;
    mmkv_tables_sweep(p->connection);
    return SQLITE_OK;
}

static int participantRollback(sqlite3_vtab *vtab)
{
    mmkv_pending *p = ((participant *)vtab)->pending;
    cancel_from(p, -1);
    mmkv_tables_rollback(p->connection);
    p->in_transaction = 0;
    mmkv_tables_sweep(p->connection);
    return SQLITE_OK;
}

static int participantSavepoint(sqlite3_vtab *vtab, int level)
{
    mmkv_pending *p = ((participant *)vtab)->pending;
    p->depth = level + 1;
    /* Joining late, SQLite names the innermost savepoint open: the tables marked it when it
    ** began, and marking it again now would move it past their writes since. */
    if (p->catching_up) {
        p->catching_up = 0;
        return SQLITE_OK;
    }
    return mmkv_tables_savepoint(p->connection, level, &vtab->zErrMsg);
}

static int participantRelease(sqlite3_vtab *vtab, int level)
{
    mmkv_pending *p = ((participant *)vtab)->pending;
    /* What was done inside the savepoint now belongs to the one around it. */
    for (op *o = p->ops; o; o = o->next)
        if (o->level >= level) o->level = level - 1;
    p->depth = level;
    mmkv_tables_release(p->connection, level);
    return SQLITE_OK;
}

static int participantRollbackTo(sqlite3_vtab *vtab, int level)
{
    mmkv_pending *p = ((participant *)vtab)->pending;
    cancel_from(p, level);
    p->depth = level + 1;
    mmkv_tables_rollback_to(p->connection, level);
    return SQLITE_OK;
}

static const sqlite3_module participant_module = {
    .iVersion = 2,
    .xConnect = participantConnect,
    .xBestIndex = participantBestIndex,
    .xDisconnect = participantDisconnect,
    .xOpen = participantOpen,
    .xClose = participantClose,
    .xFilter = participantFilter,
    .xNext = participantNext,
    .xEof = participantEof,
    .xColumn = participantColumn,
    .xRowid = participantRowid,
    .xUpdate = participantUpdate,
    .xBegin = participantBegin,
    .xSync = participantSync,
    .xCommit = participantCommit,
    .xRollback = participantRollback,
    .xSavepoint = participantSavepoint,
    .xRelease = participantRelease,
    .xRollbackTo = participantRollbackTo,
};

static void connection_release(void *c)
{
    mmkv_connection_unref(c);
}

int mmkv_pending_register(mmkv_connection *c)
{
    c->refs++;
    return sqlite3_create_module_v2(c->db, MMKV_PENDING_MODULE, &participant_module, c,
                                    connection_release);
}
