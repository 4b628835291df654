/*
** mmkv_stats(): one row saying what an mmkv table's files hold.
**
**     .load build/mmkv
**     SELECT * FROM mmkv_stats('kv');                    -- the table kv of the main database
**     SELECT * FROM mmkv_stats('kv', 'aux');             -- of an attached database (or 'temp')
**     SELECT live_bytes, garbage_bytes, data_file_bytes FROM mmkv_stats('kv');
**
** The columns (stats.h says how each is counted):
**
**   live_count, live_bytes     keys whose newest version is not a tombstone, and their bytes
**   garbage_bytes, records     bytes of superseded versions, tombstones and pads; records in all
**   txid, log_start, log_tail  the committed state: its transaction and its log [start, tail)
**   data_file_bytes, _size     the data file: bytes allocated on disk, and its logical size
**   index_file_bytes, _size    the same for the index file
**   index_slots                slots of the index's current table (a power of two)
**   index_draining_slots       slots of the table being drained into it while it grows (else 0)
**   index_entries, load_factor slots of the current table holding a record; their share of it
**   max_probe                  probes a lookup of the entry farthest from its home slot takes
**   sync                       the table's sync= argument: 'full', 'normal' or 'off'
**   compactions                compactions finished
**   compacting, compact_until  1 while a compaction asked for ('compact') runs (up to
**                              compact_until, else 0)
**   auto_compacting            1 while an automatic pass is under way (it advances with commits)
**
** The state is the one a read of the table would see now: in a database file, the commit its
** database records as of the current transaction; for a file shared by in-memory databases, its
** last commit; inside a transaction that writes the table, that transaction's own. The file sizes
** and the index are as they are at the moment of the call.
**
** An eponymous table-valued function (the name and schema are hidden columns, given as its
** arguments), SQLITE_VTAB_DIRECTONLY like the mmkv module: it opens the table's files if this
** connection had not yet, and a hostile schema must not make it do so from a view or a trigger.
*/
#include "stats_vtab.h"
#include "connections.h"
#include "stats.h"
#include "tables.h"

#include <stdarg.h>
#include <string.h>

SQLITE_EXTENSION_INIT3

#define STATS_MODULE "mmkv_stats"
#define DEFAULT_SCHEMA "main"
#define TEMP_SCHEMA "temp"

/* The columns, in the order the schema below declares them. */
enum {
    COLUMN_LIVE_COUNT,
    COLUMN_LIVE_BYTES,
    COLUMN_GARBAGE_BYTES,
    COLUMN_RECORDS,
    COLUMN_TXID,
    COLUMN_LOG_START,
    COLUMN_LOG_TAIL,
    COLUMN_DATA_FILE_BYTES,
    COLUMN_DATA_FILE_SIZE,
    COLUMN_INDEX_FILE_BYTES,
    COLUMN_INDEX_FILE_SIZE,
    COLUMN_INDEX_SLOTS,
    COLUMN_INDEX_DRAINING_SLOTS,
    COLUMN_INDEX_ENTRIES,
    COLUMN_LOAD_FACTOR,
    COLUMN_MAX_PROBE,
    COLUMN_SYNC,
    COLUMN_COMPACTIONS,
    COLUMN_COMPACTING,
    COLUMN_COMPACT_UNTIL,
    COLUMN_AUTO_COMPACTING,
    COLUMN_NAME,   /* HIDDEN: the first argument */
    COLUMN_SCHEMA, /* HIDDEN: the second */
};

static const char stats_schema[] =
    "CREATE TABLE x(live_count INTEGER, live_bytes INTEGER, garbage_bytes INTEGER, "
    "records INTEGER, txid INTEGER, log_start INTEGER, log_tail INTEGER, "
    "data_file_bytes INTEGER, data_file_size INTEGER, index_file_bytes INTEGER, "
    "index_file_size INTEGER, index_slots INTEGER, index_draining_slots INTEGER, "
    "index_entries INTEGER, load_factor REAL, max_probe INTEGER, sync TEXT, "
    "compactions INTEGER, compacting INTEGER, compact_until INTEGER, "
    "auto_compacting INTEGER, name HIDDEN, schema HIDDEN)";

/* Query plans (idxNum); see statsBestIndex. */
#define PLAN_NAME 1
#define PLAN_NAME_SCHEMA 3

static const char *const sync_names[] = {
    [MMKV_SYNC_OFF] = "off",
    [MMKV_SYNC_NORMAL] = "normal",
    [MMKV_SYNC_FULL] = "full",
};

typedef struct stats_vtab stats_vtab;
struct stats_vtab {
    sqlite3_vtab base;
    sqlite3 *db;
};

typedef struct stats_cursor stats_cursor;
struct stats_cursor {
    sqlite3_vtab_cursor base;
    int eof;
    char *name, *schema; /* the arguments, for the hidden columns */
    mmkv_sync sync;
    mmkv_stats stats;
};

/* Replaces the vtab's message with a formatted one; returns rc. */
static int stats_error(sqlite3_vtab *vtab, int rc, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    char *message = sqlite3_vmprintf(format, ap);
    va_end(ap);
    sqlite3_free(vtab->zErrMsg);
    vtab->zErrMsg = message;
    return message ? rc : SQLITE_NOMEM;
}

/* Takes a message made elsewhere (sqlite3_malloc'd, or NULL) as the vtab's; returns rc. */
static int take_error(sqlite3_vtab *vtab, int rc, char *message)
{
    sqlite3_free(vtab->zErrMsg);
    vtab->zErrMsg = message;
    return rc;
}

/* xConnect: the one eponymous instance. */
static int statsConnect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                        sqlite3_vtab **out, char **err)
{
    (void)aux;
    (void)argc;
    (void)argv;
    (void)err;
    int rc = sqlite3_declare_vtab(db, stats_schema);
    if (rc != SQLITE_OK) return rc;
#if SQLITE_VERSION_NUMBER >= 3031000
    if (sqlite3_libversion_number() >= 3031000) sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
#endif
    stats_vtab *v = sqlite3_malloc(sizeof *v);
    if (!v) return SQLITE_NOMEM;
    memset(v, 0, sizeof *v);
    v->db = db;
    *out = &v->base;
    return SQLITE_OK;
}

static int statsDisconnect(sqlite3_vtab *vtab)
{
    sqlite3_free(vtab);
    return SQLITE_OK;
}

/*
** xBestIndex. The plans, by idxNum, and what xFilter receives in argv:
**
**   idxNum  arguments                   argv
**   ------  --------------------------  ------------------------
**   1       mmkv_stats(name)            [0] name
**   3       mmkv_stats(name, schema)    [0] name, [1] schema
**
** The arguments are equality constraints on the hidden columns. One that is there but not usable
** in this call (it names a table joined later) makes SQLite try another order (SQLITE_CONSTRAINT);
** a call without a name is an error.
*/
static int statsBestIndex(sqlite3_vtab *vtab, sqlite3_index_info *info)
{
    int name = -1, schema = -1, name_unusable = 0, schema_unusable = 0;
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        if (c->op != SQLITE_INDEX_CONSTRAINT_EQ) continue;
        if (c->iColumn == COLUMN_NAME) {
            if (!c->usable)
                name_unusable = 1;
            else if (name < 0)
                name = i;
        } else if (c->iColumn == COLUMN_SCHEMA) {
            if (!c->usable)
                schema_unusable = 1;
            else if (schema < 0)
                schema = i;
        }
    }
    if (name < 0 && !name_unusable)
        return stats_error(vtab, SQLITE_ERROR,
                           "%s: name the table, as in SELECT * FROM %s('kv') or %s('kv', 'aux')",
                           STATS_MODULE, STATS_MODULE, STATS_MODULE);
    if (name < 0 || (schema < 0 && schema_unusable)) return SQLITE_CONSTRAINT;
    info->aConstraintUsage[name].argvIndex = 1;
    info->aConstraintUsage[name].omit = 1;
    info->idxNum = PLAN_NAME;
    if (schema >= 0) {
        info->aConstraintUsage[schema].argvIndex = 2;
        info->aConstraintUsage[schema].omit = 1;
        info->idxNum = PLAN_NAME_SCHEMA;
    }
    info->estimatedCost = 1;
    info->estimatedRows = 1;
    info->idxFlags = SQLITE_INDEX_SCAN_UNIQUE;
    return SQLITE_OK;
}

static int statsOpen(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out)
{
    (void)vtab;
    stats_cursor *cur = sqlite3_malloc(sizeof *cur);
    if (!cur) return SQLITE_NOMEM;
    memset(cur, 0, sizeof *cur);
    cur->eof = 1;
    *out = &cur->base;
    return SQLITE_OK;
}

static void cursor_reset(stats_cursor *cur)
{
    sqlite3_free(cur->name);
    sqlite3_free(cur->schema);
    cur->name = cur->schema = NULL;
    cur->eof = 1;
}

static int statsClose(sqlite3_vtab_cursor *cursor)
{
    cursor_reset((stats_cursor *)cursor);
    sqlite3_free(cursor);
    return SQLITE_OK;
}

/* Copies argument `what` (text, else an error naming it) into *out. */
static int text_argument(sqlite3_vtab *vtab, sqlite3_value *value, const char *what, char **out)
{
    int type = sqlite3_value_type(value);
    if (type != SQLITE_TEXT)
        return stats_error(vtab, SQLITE_ERROR,
                           "%s: the %s must be text, not %s: as in SELECT * FROM %s('kv') or "
                           "%s('kv', 'aux')",
                           STATS_MODULE, what, mmkv_value_type_name(type), STATS_MODULE, STATS_MODULE);
    *out = sqlite3_mprintf("%s", (const char *)sqlite3_value_text(value));
    return *out ? SQLITE_OK : SQLITE_NOMEM;
}

/* Whether the database `schema` has a table or view of that name (*exists), by its schema. */
static int has_table(sqlite3 *db, const char *schema, const char *name, int *exists)
{
    char *sql = sqlite3_mprintf("SELECT 1 FROM \"%w\".sqlite_master WHERE type IN ('table', "
                                "'view') AND name = ?1 COLLATE NOCASE",
                                schema);
    if (!sql) return SQLITE_NOMEM;
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    sqlite3_free(sql);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_step(stmt);
    *exists = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) rc = SQLITE_OK;
    sqlite3_finalize(stmt);
    return rc;
}

/* Has SQLite connect the table (xConnect makes its mmkv_table), as any statement naming it does. */
static int connect_table(sqlite3 *db, const char *schema, const char *name)
{
    char *sql = sqlite3_mprintf("SELECT 1 FROM \"%w\".\"%w\" LIMIT 0", schema, name);
    if (!sql) return SQLITE_NOMEM;
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    sqlite3_free(sql);
    if (rc == SQLITE_OK) rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
    sqlite3_finalize(stmt);
    return rc;
}

/* The LIVE mmkv table `name` of database `schema`, connected first if this connection has not
** used it yet; NULL with an error on the vtab that says why there is none. */
static mmkv_table *find_table(stats_vtab *v, const char *schema, const char *name, int *rc)
{
    sqlite3_vtab *vtab = &v->base;
    mmkv_connection *c = mmkv_connections_find(v->db);
    mmkv_table *t = c ? mmkv_table_find(c, schema, name) : NULL;
    if (t) return t;
    if (!c) {
        *rc = stats_error(vtab, SQLITE_ERROR,
                          "%s: the mmkv module is not registered on this connection", STATS_MODULE);
        return NULL;
    }
    if (sqlite3_stricmp(schema, TEMP_SCHEMA) != 0 && !sqlite3_db_filename(v->db, schema)) {
        *rc = stats_error(vtab, SQLITE_ERROR,
                          "%s: no database \"%s\": name main, temp or the name of an attached "
                          "database",
                          STATS_MODULE, schema);
        return NULL;
    }
    int exists = 0;
    if ((*rc = has_table(v->db, schema, name, &exists)) != SQLITE_OK) {
        stats_error(vtab, *rc, "%s: cannot read the schema of \"%s\": %s", STATS_MODULE, schema,
                    sqlite3_errmsg(v->db));
        return NULL;
    }
    if (!exists) {
        *rc = stats_error(vtab, SQLITE_ERROR,
                          "%s: no mmkv table \"%s\" in schema \"%s\": there is no table of that "
                          "name there (for a table of an attached database, name its schema: "
                          "%s('%s', 'aux'))",
                          STATS_MODULE, name, schema, STATS_MODULE, name);
        return NULL;
    }
    if ((*rc = connect_table(v->db, schema, name)) != SQLITE_OK) {
        stats_error(vtab, *rc, "%s: cannot open \"%s\" in schema \"%s\": %s", STATS_MODULE, name,
                    schema, sqlite3_errmsg(v->db));
        return NULL;
    }
    t = mmkv_table_find(c, schema, name);
    if (!t)
        *rc = stats_error(vtab, SQLITE_ERROR,
                          "%s: \"%s\" in schema \"%s\" is not an mmkv table: %s reads only tables "
                          "made with CREATE VIRTUAL TABLE ... USING mmkv",
                          STATS_MODULE, name, schema, STATS_MODULE);
    return t;
}

/* The state a read of the table sees now (see the top of this file). */
static int committed_state(sqlite3_vtab *vtab, mmkv_table *t, mmkv_commit *state)
{
    if (mmkv_txn_active(t->conn)) {
        mmkv_txn_outcome(t->conn, state);
        return SQLITE_OK;
    }
    if (t->owned) {
        char *message = NULL;
        int rc = mmkv_record_read(&t->record, state, &message);
        return rc == SQLITE_OK ? SQLITE_OK : take_error(vtab, rc, message);
    }
    int rc = mmkv_committed(t->conn, state);
    return rc == MMKV_OK ? SQLITE_OK : mmkv_table_error(t, rc, &vtab->zErrMsg);
}

static int statsFilter(sqlite3_vtab_cursor *cursor, int idxNum, const char *idxStr, int argc,
                       sqlite3_value **argv)
{
    stats_cursor *cur = (stats_cursor *)cursor;
    stats_vtab *v = (stats_vtab *)cursor->pVtab;
    sqlite3_vtab *vtab = &v->base;
    (void)idxStr;
    (void)argc;
    cursor_reset(cur);
    int rc = text_argument(vtab, argv[0], "table name", &cur->name);
    if (rc == SQLITE_OK && idxNum == PLAN_NAME_SCHEMA)
        rc = text_argument(vtab, argv[1], "schema", &cur->schema);
    else if (rc == SQLITE_OK && !(cur->schema = sqlite3_mprintf("%s", DEFAULT_SCHEMA)))
        rc = SQLITE_NOMEM;
    if (rc != SQLITE_OK) return rc;
    mmkv_table *t = find_table(v, cur->schema, cur->name, &rc);
    if (!t) return rc;
    if (!t->conn)
        return stats_error(vtab, t->broken ? t->broken_rc : SQLITE_ERROR, "%s",
                           t->broken ? t->broken : "mmkv: the table no longer exists");
    mmkv_commit state;
    if ((rc = committed_state(vtab, t, &state)) != SQLITE_OK) return rc;
    rc = mmkv_stats_read(t->conn, &state, &cur->stats);
    if (rc != MMKV_OK) return mmkv_table_error(t, rc, &vtab->zErrMsg);
    cur->sync = t->sync;
    cur->eof = 0;
    return SQLITE_OK;
}

static int statsNext(sqlite3_vtab_cursor *cursor)
{
    ((stats_cursor *)cursor)->eof = 1;
    return SQLITE_OK;
}

static int statsEof(sqlite3_vtab_cursor *cursor)
{
    return ((stats_cursor *)cursor)->eof;
}

static int statsColumn(sqlite3_vtab_cursor *cursor, sqlite3_context *ctx, int column)
{
    stats_cursor *cur = (stats_cursor *)cursor;
    const mmkv_stats *s = &cur->stats;
    uint64_t n;
    switch (column) {
    case COLUMN_LIVE_COUNT:
        n = s->live_count;
        break;
    case COLUMN_LIVE_BYTES:
        n = s->live_bytes;
        break;
    case COLUMN_GARBAGE_BYTES:
        n = s->garbage_bytes;
        break;
    case COLUMN_RECORDS:
        n = s->records;
        break;
    case COLUMN_TXID:
        n = s->txid;
        break;
    case COLUMN_LOG_START:
        n = s->log_start;
        break;
    case COLUMN_LOG_TAIL:
        n = s->log_tail;
        break;
    case COLUMN_DATA_FILE_BYTES:
        n = s->data_file_bytes;
        break;
    case COLUMN_DATA_FILE_SIZE:
        n = s->data_file_size;
        break;
    case COLUMN_INDEX_FILE_BYTES:
        n = s->index_file_bytes;
        break;
    case COLUMN_INDEX_FILE_SIZE:
        n = s->index_file_size;
        break;
    case COLUMN_INDEX_SLOTS:
        n = s->index_slots;
        break;
    case COLUMN_INDEX_DRAINING_SLOTS:
        n = s->index_draining_slots;
        break;
    case COLUMN_INDEX_ENTRIES:
        n = s->index_entries;
        break;
    case COLUMN_MAX_PROBE:
        n = s->max_probe;
        break;
    case COLUMN_COMPACTIONS:
        n = s->compactions;
        break;
    case COLUMN_COMPACTING:
        n = (uint64_t)s->compacting;
        break;
    case COLUMN_COMPACT_UNTIL:
        n = s->compact_until;
        break;
    case COLUMN_AUTO_COMPACTING:
        n = (uint64_t)s->auto_compacting;
        break;
    case COLUMN_LOAD_FACTOR:
        sqlite3_result_double(ctx, s->load_factor);
        return SQLITE_OK;
    case COLUMN_SYNC:
        sqlite3_result_text(ctx, sync_names[cur->sync], -1, SQLITE_STATIC);
        return SQLITE_OK;
    case COLUMN_NAME:
        sqlite3_result_text(ctx, cur->name, -1, SQLITE_TRANSIENT);
        return SQLITE_OK;
    case COLUMN_SCHEMA:
        sqlite3_result_text(ctx, cur->schema, -1, SQLITE_TRANSIENT);
        return SQLITE_OK;
    default:
        sqlite3_result_null(ctx);
        return SQLITE_OK;
    }
    sqlite3_result_int64(ctx, (sqlite3_int64)n);
    return SQLITE_OK;
}

static int statsRowid(sqlite3_vtab_cursor *cursor, sqlite3_int64 *rowid)
{
    (void)cursor;
    *rowid = 1;
    return SQLITE_OK;
}

/* Eponymous only (no xCreate): it exists in every connection as mmkv_stats, and nowhere else. */
static const sqlite3_module stats_module = {
    .iVersion = 0,
    .xConnect = statsConnect,
    .xBestIndex = statsBestIndex,
    .xDisconnect = statsDisconnect,
    .xOpen = statsOpen,
    .xClose = statsClose,
    .xFilter = statsFilter,
    .xNext = statsNext,
    .xEof = statsEof,
    .xColumn = statsColumn,
    .xRowid = statsRowid,
};

int mmkv_stats_register(sqlite3 *db)
{
    return sqlite3_create_module(db, STATS_MODULE, &stats_module, NULL);
}
