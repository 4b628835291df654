/*
** The mmkv virtual table: a key-value table whose records live in a memory-mapped file, with a
** hash index that makes WHERE key = ? an O(1) lookup.
**
** Usage from the sqlite3 shell:
**
**     .load build/mmkv
**     CREATE VIRTUAL TABLE kv USING mmkv;                 -- files beside the database
**     CREATE VIRTUAL TABLE kv2 USING mmkv(file='kv2.mmkv', sync=normal);
**     INSERT INTO kv VALUES('alice', 1), ('bob', x'00ff');
**     SELECT value FROM kv WHERE key = 'alice';           -- one hash probe
**     SELECT * FROM users JOIN kv ON kv.key = users.name;  -- one probe per user
**
** The table behaves as CREATE TABLE kv(key PRIMARY KEY NOT NULL, value) WITHOUT ROWID would, plus a
** hidden column named after the table that takes commands (INSERT INTO kv(kv) VALUES('...')).
** This file is the SQL face only: it turns SQLite's calls into engine calls (mmkv.h) and never
** touches files or mappings itself.
*/
#include "vtab.h"
#include "args.h"
#include "commit_record.h"
#include "mmkv.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

SQLITE_EXTENSION_INIT3

#define COLUMN_KEY 0
#define COLUMN_VALUE 1
#define COLUMN_COMMAND 2

/* Query plans (idxNum); see mmkvBestIndex. */
#define PLAN_FULL_SCAN 0
#define PLAN_KEY_EQ 1
#define PLAN_KEY_IN 2

#define DATA_SUFFIX ".mmkv"
#define DROPPED_SUFFIX "-dropped" /* a data file set aside by a DROP inside a transaction */
#define FULL_SCAN_ROW_COST 2.0    /* per row: walking the log and checking each version */
#define LOOKUP_COST 1.0
/* The size SQLite's planner assumes for a table it has no statistics for (LogEst 200). */
#define UNANALYZED_TABLE_ROWS 1048576.0
#define IN_LOOKUPS_GUESS 10.0

/* Tables of :memory: and temporary databases keep their engine open from xCreate to xDestroy or
** until the connection closes, like TEMP tables: a disconnect and reconnect must not lose them. */
typedef struct mmkv_temp_table mmkv_temp_table;
struct mmkv_temp_table {
    mmkv_temp_table *next;
    char *schema;
    char *name;
    mmkv_conn *conn;
};

typedef struct mmkv_module_state {
    mmkv_temp_table *temp_tables;
} mmkv_module_state;

typedef struct mmkv_vtab mmkv_vtab;
struct mmkv_vtab {
    sqlite3_vtab base;
    sqlite3 *db;
    mmkv_module_state *state;
    char *schema;          /* "main", "temp" or an attached name */
    char *name;            /* the table's name */
    char *data_path;       /* NULL for a temporary table */
    int named_after_table; /* the files follow ALTER TABLE RENAME */
    mmkv_conn *conn;
    mmkv_temp_table *temp; /* non-NULL for a temporary table */
    int owned;             /* the database records the commits: see commit_record.h */
    mmkv_commit_record record;
    int open_cursors; /* while any is open, reads share one snapshot (in-memory sharing) */
    int have_snapshot;
    mmkv_snapshot snapshot;
};

typedef struct mmkv_cursor mmkv_cursor;
struct mmkv_cursor {
    sqlite3_vtab_cursor base;
    int plan;
    int eof;
    mmkv_snapshot snapshot;
    mmkv_scan *scan;        /* PLAN_FULL_SCAN */
    sqlite3_value *in_list; /* PLAN_KEY_IN: the list being walked */
    int in_started;
    mmkv_row row;             /* the current row */
    mmkv_row *found;          /* PLAN_KEY_EQ and PLAN_KEY_IN: the rows of the current key */
    mmkv_row found_inline[2]; /* found's storage until more rows come: no malloc per probe */
    int n_found, cap_found, next_found;
    sqlite3_uint64 *emitted; /* PLAN_KEY_IN: offsets already returned (open addressing; 0 free) */
    sqlite3_uint64 n_emitted, cap_emitted;
};

/* Whether the row at offset was already returned by this IN scan; remembers it if not. Two IN
** values can reach the same row through affinity candidates ('1' and 1). */
static int seen_before(mmkv_cursor *cur, sqlite3_uint64 offset, int *seen)
{
    if ((cur->n_emitted + 1) * 2 > cur->cap_emitted) {
        sqlite3_uint64 cap = cur->cap_emitted ? cur->cap_emitted * 2 : 64;
        sqlite3_uint64 *grown = sqlite3_malloc64(cap * sizeof *grown);
        if (!grown) return SQLITE_NOMEM;
        memset(grown, 0, cap * sizeof *grown);
        for (sqlite3_uint64 i = 0; i < cur->cap_emitted; i++) {
            sqlite3_uint64 o = cur->emitted[i];
            if (!o) continue;
            sqlite3_uint64 j = (o >> 3) & (cap - 1);
            while (grown[j])
                j = (j + 1) & (cap - 1);
            grown[j] = o;
        }
        sqlite3_free(cur->emitted);
        cur->emitted = grown;
        cur->cap_emitted = cap;
    }
    sqlite3_uint64 j = (offset >> 3) & (cur->cap_emitted - 1);
    while (cur->emitted[j] && cur->emitted[j] != offset)
        j = (j + 1) & (cur->cap_emitted - 1);
    *seen = cur->emitted[j] == offset;
    if (!*seen) {
        cur->emitted[j] = offset;
        cur->n_emitted++;
    }
    return SQLITE_OK;
}

/* ---- helpers ---- */

static int set_error(sqlite3_vtab *vtab, int rc, const char *message)
{
    sqlite3_free(vtab->zErrMsg);
    vtab->zErrMsg = sqlite3_mprintf("%s", message);
    return rc;
}

static int engine_error(mmkv_vtab *vt, int rc)
{
    return set_error(&vt->base, rc == MMKV_NOTFOUND ? SQLITE_ERROR : rc, mmkv_errmsg(vt->conn));
}

/* The engine's view of an SQL value. Numbers are copied into *number, which must outlive datum. */
static int datum_from_value(sqlite3_value *value, mmkv_datum *datum, sqlite3_int64 *number)
{
    datum->type = sqlite3_value_type(value);
    switch (datum->type) {
    case SQLITE_INTEGER:
        *number = sqlite3_value_int64(value);
        datum->bytes = number;
        datum->len = sizeof *number;
        return SQLITE_OK;
    case SQLITE_FLOAT: {
        double r = sqlite3_value_double(value);
        memcpy(number, &r, sizeof r);
        datum->bytes = number;
        datum->len = sizeof r;
        return SQLITE_OK;
    }
    case SQLITE_TEXT:
        datum->bytes = sqlite3_value_text(value);
        datum->len = (uint32_t)sqlite3_value_bytes(value);
        return datum->bytes || datum->len == 0 ? SQLITE_OK : SQLITE_NOMEM;
    case SQLITE_BLOB:
        datum->bytes = sqlite3_value_blob(value);
        datum->len = (uint32_t)sqlite3_value_bytes(value);
        return SQLITE_OK;
    default:
        datum->type = MMKV_NULL;
        datum->bytes = NULL;
        datum->len = 0;
        return SQLITE_OK;
    }
}

static void result_datum(sqlite3_context *ctx, const mmkv_datum *d)
{
    switch (d->type) {
    case MMKV_INTEGER: {
        sqlite3_int64 i;
        memcpy(&i, d->bytes, sizeof i);
        sqlite3_result_int64(ctx, i);
        break;
    }
    case MMKV_FLOAT: {
        double r;
        memcpy(&r, d->bytes, sizeof r);
        sqlite3_result_double(ctx, r);
        break;
    }
    case MMKV_TEXT:
        sqlite3_result_text(ctx, d->len ? d->bytes : "", (int)d->len, SQLITE_TRANSIENT);
        break;
    case MMKV_BLOB:
        if (d->len)
            sqlite3_result_blob(ctx, d->bytes, (int)d->len, SQLITE_TRANSIENT);
        else
            sqlite3_result_zeroblob(ctx, 0);
        break;
    default:
        sqlite3_result_null(ctx);
    }
}

static int is_absolute(const char *path)
{
    return path[0] == '/';
}

/* Where the files of table `name` go: file= resolved against the database's directory, or
** "<database file>-<name>.mmkv" beside it. *temporary is set when the database has no file. */
static char *resolve_data_path(sqlite3 *db, const char *schema, const char *name, const char *file,
                               int *temporary)
{
    const char *db_file = sqlite3_db_filename(db, schema);
    int has_file = db_file && db_file[0];
    *temporary = 0;
    if (file) {
        if (is_absolute(file) || !has_file) return sqlite3_mprintf("%s", file);
        const char *slash = strrchr(db_file, '/');
        if (!slash) return sqlite3_mprintf("%s", file);
        return sqlite3_mprintf("%.*s/%s", (int)(slash - db_file), db_file, file);
    }
    if (!has_file) {
        *temporary = 1;
        return NULL;
    }
    return sqlite3_mprintf("%s-%s%s", db_file, name, DATA_SUFFIX);
}

static char *dropped_path(const char *data_path)
{
    return sqlite3_mprintf("%s%s", data_path, DROPPED_SUFFIX);
}

static mmkv_temp_table *temp_table_find(mmkv_module_state *state, const char *schema,
                                        const char *name)
{
    for (mmkv_temp_table *t = state->temp_tables; t; t = t->next)
        if (sqlite3_stricmp(t->schema, schema) == 0 && sqlite3_stricmp(t->name, name) == 0)
            return t;
    return NULL;
}

static void temp_table_free(mmkv_module_state *state, mmkv_temp_table *table)
{
    mmkv_temp_table **p = &state->temp_tables;
    while (*p && *p != table)
        p = &(*p)->next;
    if (*p) *p = table->next;
    mmkv_close(table->conn);
    sqlite3_free(table->schema);
    sqlite3_free(table->name);
    sqlite3_free(table);
}

static void module_state_free(void *p)
{
    mmkv_module_state *state = p;
    while (state->temp_tables)
        temp_table_free(state, state->temp_tables);
    sqlite3_free(state);
}

/* ---- creating and connecting ---- */

static int vtab_free(mmkv_vtab *vt)
{
    if (vt->conn && !vt->temp) mmkv_close(vt->conn);
    mmkv_record_close(&vt->record);
    sqlite3_free(vt->schema);
    sqlite3_free(vt->name);
    sqlite3_free(vt->data_path);
    sqlite3_free(vt);
    return SQLITE_OK;
}

/*
** Opens the files of a table in a database file, which owns them: xCreate makes the data file and
** the commit record, xConnect reads the owner from the record. A table of a
** database with no file (:memory:) given a shared file= leaves the deciding to the file itself.
*/
static int open_owned(mmkv_vtab *vt, mmkv_open_options *options, int creating, char **message,
                      char **err)
{
    const char *db_file = sqlite3_db_filename(vt->db, vt->schema);
    vt->owned = db_file && db_file[0];
    if (vt->owned && !creating) {
        int rc = mmkv_record_open(&vt->record, vt->db, vt->schema, vt->name, err);
        if (rc != SQLITE_OK) return rc;
        options->owner_id = vt->record.owner_id;
    } else if (vt->owned) {
        sqlite3_uint64 owner = 0;
        while (owner == 0)
            sqlite3_randomness(sizeof owner, &owner);
        options->owner_id = owner;
        /* A data file an earlier CREATE left when its transaction rolled back is no table's. */
        options->claim_unused = 1;
    }
    int rc = mmkv_open(vt->data_path, options, &vt->conn, message);
    if (rc != MMKV_OK || !vt->owned || !creating) return rc == MMKV_OK ? SQLITE_OK : rc;
    mmkv_commit state;
    rc = mmkv_committed(vt->conn, &state);
    if (rc != MMKV_OK) {
        *err = sqlite3_mprintf("%s", mmkv_errmsg(vt->conn));
        return rc;
    }
    return mmkv_record_create(&vt->record, vt->db, vt->schema, vt->name, options->owner_id, &state,
                              err);
}

/*
** xCreate and xConnect. argv[0] is the module name, argv[1] the schema, argv[2] the table name,
** and argv[3..] the arguments. xCreate makes the files when they do not exist; xConnect insists
** that they do, so that a table whose files went missing is an error, never silently empty.
*/
static int mmkvInit(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out,
                    char **err, int creating)
{
    mmkv_module_state *state = aux;
    mmkv_args args;
    char *message = NULL;
    int temporary = 0;
    mmkv_vtab *vt = NULL;
    int rc;

    *out = NULL;
    if (mmkv_args_parse(argc - 3, argv + 3, &args, &message) != MMKV_OK) {
        *err = sqlite3_mprintf("%s", message);
        free(message);
        return SQLITE_ERROR;
    }
    const char *name = argv[2];
    if (sqlite3_stricmp(name, "key") == 0 || sqlite3_stricmp(name, "value") == 0) {
        *err = sqlite3_mprintf("mmkv: a table cannot be named \"%s\": its command column would "
                               "clash with the column of that name",
                               name);
        rc = SQLITE_ERROR;
        goto cleanup;
    }
    vt = sqlite3_malloc(sizeof *vt);
    if (!vt) {
        rc = SQLITE_NOMEM;
        goto cleanup;
    }
    memset(vt, 0, sizeof *vt);
    vt->db = db;
    vt->state = state;
    vt->schema = sqlite3_mprintf("%s", argv[1]);
    vt->name = sqlite3_mprintf("%s", name);
    vt->data_path = resolve_data_path(db, argv[1], name, args.file, &temporary);
    vt->named_after_table = !args.file;
    if (!vt->schema || !vt->name || (!temporary && !vt->data_path)) {
        rc = SQLITE_NOMEM;
        goto cleanup;
    }

    mmkv_open_options options = {.sync = args.sync, .temporary = temporary};
    if (temporary) {
        vt->temp = temp_table_find(state, argv[1], name);
        if (vt->temp && creating) {
            /* Left by a DROP inside a transaction that then committed: not this table's data. */
            temp_table_free(state, vt->temp);
            vt->temp = NULL;
        }
        if (!vt->temp) {
            mmkv_temp_table *t = sqlite3_malloc(sizeof *t);
            if (!t) {
                rc = SQLITE_NOMEM;
                goto cleanup;
            }
            memset(t, 0, sizeof *t);
            t->schema = sqlite3_mprintf("%s", argv[1]);
            t->name = sqlite3_mprintf("%s", name);
            rc = t->schema && t->name ? mmkv_open("", &options, &t->conn, &message) : SQLITE_NOMEM;
            if (rc != MMKV_OK) {
                sqlite3_free(t->schema);
                sqlite3_free(t->name);
                sqlite3_free(t);
                goto cleanup_message;
            }
            t->next = state->temp_tables;
            state->temp_tables = t;
            vt->temp = t;
        }
        vt->conn = vt->temp->conn;
    } else {
        if (!creating && access(vt->data_path, F_OK) != 0) {
            /* A DROP inside a transaction set the file aside, and the transaction rolled back. */
            char *aside = dropped_path(vt->data_path);
            if (aside && access(aside, F_OK) == 0) mmkv_rename_files(aside, vt->data_path, NULL);
            sqlite3_free(aside);
        }
        if (!creating && access(vt->data_path, F_OK) != 0) {
            *err = sqlite3_mprintf("mmkv: data file '%s' of table \"%s\" is missing", vt->data_path,
                                   name);
            rc = SQLITE_CANTOPEN;
            goto cleanup;
        }
        rc = open_owned(vt, &options, creating, &message, err);
        if (rc != SQLITE_OK) goto cleanup_message;
    }

    char *schema_sql = sqlite3_mprintf(
        "CREATE TABLE x(key PRIMARY KEY NOT NULL, value, \"%w\" HIDDEN) WITHOUT ROWID", name);
    rc = schema_sql ? sqlite3_declare_vtab(db, schema_sql) : SQLITE_NOMEM;
    sqlite3_free(schema_sql);
    if (rc != SQLITE_OK) goto cleanup;
    sqlite3_vtab_config(db, SQLITE_VTAB_CONSTRAINT_SUPPORT, 1);
#if SQLITE_VERSION_NUMBER >= 3031000
    if (sqlite3_libversion_number() >= 3031000) sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
#endif
    *out = &vt->base;
    mmkv_args_free(&args);
    return SQLITE_OK;

cleanup_message:
    if (!*err)
        *err = sqlite3_mprintf("%s", message ? message : "mmkv: cannot open the table's files");
cleanup:
    free(message);
    mmkv_args_free(&args);
    if (vt) vtab_free(vt);
    return rc;
}

static int mmkvCreate(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out,
                      char **err)
{
    return mmkvInit(db, aux, argc, argv, out, err, 1);
}

static int mmkvConnect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                       sqlite3_vtab **out, char **err)
{
    return mmkvInit(db, aux, argc, argv, out, err, 0);
}

static int mmkvDisconnect(sqlite3_vtab *vtab)
{
    return vtab_free((mmkv_vtab *)vtab);
}

/*
** The files live outside the database, so a ROLLBACK cannot bring back what a DROP deleted or a
** RENAME moved. A RENAME that moves files is refused inside an explicit transaction. A DROP there
** sets the data file aside as "<data file>-dropped" (a temporary table keeps its engine), and if
** the ROLLBACK brings the table back, xConnect puts the file back in place.
*/
static int refuse_inside_transaction(mmkv_vtab *vt, const char *what)
{
    if (sqlite3_get_autocommit(vt->db)) return SQLITE_OK;
    sqlite3_free(vt->base.zErrMsg);
    vt->base.zErrMsg = sqlite3_mprintf("mmkv: cannot %s \"%s\" inside a transaction: its files "
                                       "are outside the database and a ROLLBACK could not restore "
                                       "them",
                                       what, vt->name);
    return SQLITE_ERROR;
}

/* DROP TABLE: the files go with the table. */
static int mmkvDestroy(sqlite3_vtab *vtab)
{
    mmkv_vtab *vt = (mmkv_vtab *)vtab;
    int in_transaction = !sqlite3_get_autocommit(vt->db);
    if (vt->temp) {
        if (!in_transaction) temp_table_free(vt->state, vt->temp);
        vt->temp = NULL;
        vt->conn = NULL;
        return vtab_free(vt);
    }
    char *message = NULL, *aside = NULL;
    int rc;
    if (vt->owned && (rc = mmkv_record_drop(&vt->record, &vt->base.zErrMsg)) != SQLITE_OK)
        return rc;
    char *path = vt->data_path;
    vt->data_path = NULL;
    mmkv_close(vt->conn);
    vt->conn = NULL;
    if (in_transaction) {
        aside = dropped_path(path);
        rc = aside ? mmkv_remove_files(aside, &message) : SQLITE_NOMEM; /* an older one */
        if (rc == MMKV_OK) rc = mmkv_rename_files(path, aside, &message);
    } else {
        rc = mmkv_remove_files(path, &message);
    }
    if (rc != MMKV_OK && message) set_error(vtab, rc, message);
    free(message);
    sqlite3_free(aside);
    sqlite3_free(path);
    if (rc != MMKV_OK) return rc;
    return vtab_free(vt);
}

/*
** The row count to plan with. SQLite assumes that a native table it has no statistics for holds
** about a million rows; against that guess, mmkv's exact count of a small table would make SQLite
** scan kv and search the native table once per kv row, where probing kv once per native row is the
** plan that stays cheap as kv grows. Until ANALYZE has run (sqlite_stat1 exists), mmkv therefore
** plans with the same guess for itself, or its live count if larger; after, with its live count.
*/
static double planner_rows(mmkv_vtab *vt)
{
    double live = (double)mmkv_live_count(vt->conn);
    int analyzed = sqlite3_table_column_metadata(vt->db, vt->schema, "sqlite_stat1", NULL, NULL,
                                                 NULL, NULL, NULL, NULL) == SQLITE_OK;
    return analyzed || live > UNANALYZED_TABLE_ROWS ? live : UNANALYZED_TABLE_ROWS;
}

/*
** xBestIndex. The plans, by idxNum, and what xFilter receives in argv:
**
**   idxNum  plan                 argv               cost
**   ------  -------------------  -----------------  -----------------------------------------
**   0       full scan            (none)             rows x FULL_SCAN_ROW_COST; see planner_rows
**   1       key = ?              [0] the key        one probe; one row (SCAN_UNIQUE, see below)
**   2       key IN (...)         [0] the IN list    one probe per value (SQLite >= 3.38 only)
**
** A key equality is used only under the BINARY collation (the column's own; an explicit COLLATE
** NOCASE is left to SQLite). SQLite still checks it on each row (omit = 0): when the other side
** is a typed column or a CAST, SQLite applies that side's affinity to key ('1' = 1 under NUMERIC
** affinity), which a virtual table cannot see; the probe returns every row that could match under
** any affinity and SQLite's own comparison picks. Only where affinity makes several keys equal
** to X (TEXT keys that read as the same number) does that give more than one row; the plan still
** claims one (SQLITE_INDEX_SCAN_UNIQUE), which keeps UPDATE and DELETE by key one-pass, at the
** price that they then act on the first of those rows only (README, known limits). Every other
** constraint (ranges, LIKE, other collations, the value column) is left to SQLite, which filters
** the rows of a scan.
**
** An equality on key that is not usable in this call (it names a table not yet available) is not
** used; the full scan stays on offer, so that SQLite can always place kv, even outermost or in a
** self-join, and its costs steer it to the probe when kv can come inner. (Refusing such calls with
** SQLITE_CONSTRAINT would leave a self-join, kv AS a JOIN kv AS b ON a.key = b.key, with no plan.)
*/
static int mmkvBestIndex(sqlite3_vtab *vtab, sqlite3_index_info *info)
{
    mmkv_vtab *vt = (mmkv_vtab *)vtab;
    int eq = -1;
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        if (c->iColumn != COLUMN_KEY || c->op != SQLITE_INDEX_CONSTRAINT_EQ) continue;
        const char *collation = sqlite3_vtab_collation(info, i);
        if (collation && sqlite3_stricmp(collation, "BINARY") != 0) continue;
        if (c->usable && eq < 0) eq = i;
    }
    double rows = planner_rows(vt);
    if (eq >= 0) {
        info->aConstraintUsage[eq].argvIndex = 1;
        info->aConstraintUsage[eq].omit = 0; /* SQLite re-checks: see cursor_lookup */
        int in_all_at_once = 0;
#if SQLITE_VERSION_NUMBER >= 3038000
        if (sqlite3_libversion_number() >= 3038000 && sqlite3_vtab_in(info, eq, -1))
            in_all_at_once = sqlite3_vtab_in(info, eq, 1);
#endif
        if (in_all_at_once) {
            info->idxNum = PLAN_KEY_IN;
            info->estimatedCost = LOOKUP_COST * IN_LOOKUPS_GUESS;
            info->estimatedRows = (sqlite3_int64)IN_LOOKUPS_GUESS;
        } else {
            info->idxNum = PLAN_KEY_EQ;
            info->estimatedCost = LOOKUP_COST;
            info->estimatedRows = 1;
            info->idxFlags = SQLITE_INDEX_SCAN_UNIQUE;
        }
        return SQLITE_OK;
    }
    info->idxNum = PLAN_FULL_SCAN;
    info->estimatedCost = rows * FULL_SCAN_ROW_COST + LOOKUP_COST;
    info->estimatedRows = (sqlite3_int64)rows + 1;
    return SQLITE_OK;
}

/* ---- cursors ---- */

static int mmkvOpen(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out)
{
    mmkv_cursor *cur = sqlite3_malloc(sizeof *cur);
    if (!cur) return SQLITE_NOMEM;
    ((mmkv_vtab *)vtab)->open_cursors++;
    memset(cur, 0, sizeof *cur);
    cur->eof = 1;
    *out = &cur->base;
    return SQLITE_OK;
}

static void cursor_reset(mmkv_cursor *cur)
{
    if (cur->scan) mmkv_scan_close(cur->scan);
    cur->scan = NULL;
    cur->in_list = NULL;
    cur->in_started = 0;
    if (cur->n_emitted) memset(cur->emitted, 0, cur->cap_emitted * sizeof *cur->emitted);
    cur->n_emitted = 0;
    cur->n_found = cur->next_found = 0;
    cur->eof = 1;
}

static int mmkvClose(sqlite3_vtab_cursor *cursor)
{
    mmkv_cursor *cur = (mmkv_cursor *)cursor;
    mmkv_vtab *vt = (mmkv_vtab *)cursor->pVtab;
    if (--vt->open_cursors == 0) vt->have_snapshot = 0;
    cursor_reset(cur);
    if (cur->found != cur->found_inline) sqlite3_free(cur->found);
    sqlite3_free(cur->emitted);
    sqlite3_free(cur);
    return SQLITE_OK;
}

static int keep_found_row(void *ctx, const mmkv_row *row)
{
    mmkv_cursor *cur = ctx;
    if (cur->cap_found == 0) {
        cur->found = cur->found_inline;
        cur->cap_found = (int)(sizeof cur->found_inline / sizeof cur->found_inline[0]);
    }
    if (cur->n_found == cur->cap_found) {
        int cap = cur->cap_found * 2;
        mmkv_row *grown = sqlite3_malloc64((sqlite3_uint64)cap * sizeof *grown);
        if (!grown) return MMKV_NOMEM;
        memcpy(grown, cur->found, (size_t)cur->n_found * sizeof *grown);
        if (cur->found != cur->found_inline) sqlite3_free(cur->found);
        cur->found = grown;
        cur->cap_found = cap;
    }
    cur->found[cur->n_found++] = *row;
    return MMKV_OK;
}

/*
** The rows for one key value, into cur->found. SQLite compares key = X with the affinity of X
** applied to key (X a typed column or a CAST), and a virtual table cannot see that affinity; so
** the lookup returns every row that could compare equal under any affinity (mmkv_get_similar),
** and SQLite keeps its own comparison (omit = 0). A BLOB is never converted: its lookup is exact.
*/
static int cursor_lookup(mmkv_cursor *cur, sqlite3_value *key_value)
{
    mmkv_vtab *vt = (mmkv_vtab *)cur->base.pVtab;
    mmkv_datum key;
    sqlite3_int64 number;
    cur->n_found = cur->next_found = 0;
    if (sqlite3_value_type(key_value) == SQLITE_NULL) return SQLITE_OK; /* key = NULL: no row */
    int rc = datum_from_value(key_value, &key, &number);
    if (rc != SQLITE_OK) return rc;
    if (key.type == MMKV_BLOB) {
        mmkv_row row;
        rc = mmkv_get(vt->conn, &cur->snapshot, &key, &row);
        if (rc == MMKV_OK) rc = keep_found_row(cur, &row);
    } else {
        rc = mmkv_get_similar(vt->conn, &cur->snapshot, &key, keep_found_row, cur);
    }
    if (rc == MMKV_NOTFOUND || rc == MMKV_OK) return SQLITE_OK;
    if (rc == MMKV_NOMEM) return SQLITE_NOMEM;
    return engine_error(vt, rc);
}

/* Moves to the next row found for the current key, or to the next IN value that has rows. */
static int lookup_advance(mmkv_cursor *cur)
{
    for (;;) {
        while (cur->next_found < cur->n_found) {
            cur->row = cur->found[cur->next_found++];
            int seen = 0;
            if (cur->in_list) {
                int rc = seen_before(cur, cur->row.offset, &seen);
                if (rc != SQLITE_OK) return rc;
            }
            if (!seen) return SQLITE_OK;
        }
        sqlite3_value *value = NULL;
        int rc = SQLITE_DONE;
#if SQLITE_VERSION_NUMBER >= 3038000
        if (cur->in_list) {
            rc = cur->in_started ? sqlite3_vtab_in_next(cur->in_list, &value)
                                 : sqlite3_vtab_in_first(cur->in_list, &value);
            cur->in_started = 1;
        }
#endif
        if (rc == SQLITE_DONE || !value) {
            cur->eof = 1;
            return SQLITE_OK;
        }
        if (rc != SQLITE_OK) return rc;
        if ((rc = cursor_lookup(cur, value)) != SQLITE_OK) return rc;
    }
}

static int scan_advance(mmkv_cursor *cur)
{
    mmkv_vtab *vt = (mmkv_vtab *)cur->base.pVtab;
    int rc = mmkv_scan_next(cur->scan, &cur->row);
    if (rc == MMKV_NOTFOUND) {
        cur->eof = 1;
        return SQLITE_OK;
    }
    return rc == MMKV_OK ? SQLITE_OK : engine_error(vt, rc);
}

/* What a read sees. For a table in a database file: the commit its database records as of the
** current SQLite read transaction, so that every statement of a BEGIN ... COMMIT sees one state,
** as native tables do. For a file shared by in-memory databases: the file's last commit, taken once
** while the statement's cursors are open, so that a statement (a join probing kv per row) reads
** one state. A writer sees its own writes. */
static int take_snapshot(mmkv_vtab *vt, mmkv_snapshot *snapshot)
{
    int rc;
    if (mmkv_txn_active(vt->conn)) {
        rc = mmkv_snapshot_take(vt->conn, snapshot);
    } else if (vt->owned) {
        mmkv_commit state;
        sqlite3_free(vt->base.zErrMsg);
        vt->base.zErrMsg = NULL;
        rc = mmkv_record_read_cached(&vt->record, &state, &vt->base.zErrMsg);
        if (rc != SQLITE_OK) return rc;
        rc = mmkv_snapshot_at(vt->conn, &state, snapshot);
    } else if (vt->have_snapshot) {
        *snapshot = vt->snapshot;
        rc = MMKV_OK;
    } else {
        rc = mmkv_snapshot_take(vt->conn, snapshot);
        if (rc == MMKV_OK) {
            vt->snapshot = *snapshot;
            vt->have_snapshot = 1;
        }
    }
    return rc == MMKV_OK ? SQLITE_OK : engine_error(vt, rc);
}

static int mmkvFilter(sqlite3_vtab_cursor *cursor, int idxNum, const char *idxStr, int argc,
                      sqlite3_value **argv)
{
    mmkv_cursor *cur = (mmkv_cursor *)cursor;
    mmkv_vtab *vt = (mmkv_vtab *)cursor->pVtab;
    (void)idxStr;
    (void)argc;
    cursor_reset(cur);
    cur->plan = idxNum;
    int rc = take_snapshot(vt, &cur->snapshot);
    if (rc != SQLITE_OK) return rc;
    cur->eof = 0;
    switch (idxNum) {
    case PLAN_KEY_EQ:
        if ((rc = cursor_lookup(cur, argv[0])) != SQLITE_OK) return rc;
        return lookup_advance(cur);
    case PLAN_KEY_IN:
        cur->in_list = argv[0];
        return lookup_advance(cur);
    default:
        rc = mmkv_scan_open(vt->conn, &cur->snapshot, &cur->scan);
        if (rc != MMKV_OK) return SQLITE_NOMEM;
        return scan_advance(cur);
    }
}

static int mmkvNext(sqlite3_vtab_cursor *cursor)
{
    mmkv_cursor *cur = (mmkv_cursor *)cursor;
    return cur->plan == PLAN_FULL_SCAN ? scan_advance(cur) : lookup_advance(cur);
}

static int mmkvEof(sqlite3_vtab_cursor *cursor)
{
    return ((mmkv_cursor *)cursor)->eof;
}

static int mmkvColumn(sqlite3_vtab_cursor *cursor, sqlite3_context *ctx, int column)
{
    mmkv_cursor *cur = (mmkv_cursor *)cursor;
    if (column == COLUMN_KEY)
        result_datum(ctx, &cur->row.key);
    else if (column == COLUMN_VALUE)
        result_datum(ctx, &cur->row.value);
    else
        sqlite3_result_null(ctx);
    return SQLITE_OK;
}

/* Never called for a WITHOUT ROWID table; the version's offset is a stable stand-in. */
static int mmkvRowid(sqlite3_vtab_cursor *cursor, sqlite3_int64 *rowid)
{
    *rowid = (sqlite3_int64)((mmkv_cursor *)cursor)->row.offset;
    return SQLITE_OK;
}

/* ---- writing ---- */

static int constraint_error(mmkv_vtab *vt, int rc, const char *kind)
{
    sqlite3_free(vt->base.zErrMsg);
    vt->base.zErrMsg = sqlite3_mprintf("%s constraint failed: %s.key", kind, vt->name);
    return rc;
}

/* The committed state a check should cover: the database's record for an owned table, else the
** meta slots' (NULL). */
static int check_state(mmkv_vtab *vt, mmkv_commit *state, const mmkv_commit **use)
{
    *use = NULL;
    if (!vt->owned || mmkv_txn_active(vt->conn)) return SQLITE_OK;
    sqlite3_free(vt->base.zErrMsg);
    vt->base.zErrMsg = NULL;
    int rc = mmkv_record_read(&vt->record, state, &vt->base.zErrMsg);
    if (rc == SQLITE_OK) *use = state;
    return rc;
}

/*
** The hidden column: INSERT INTO kv(kv) VALUES('command').
**   integrity-check   verify the log and the index (SQLITE_CORRUPT with what is wrong)
**   rebuild-index     rebuild the derived index from the log
*/
static int mmkvBegin(sqlite3_vtab *vtab);

/* SQLite calls xBegin when a statement first writes a table in a transaction, but a table created
** earlier in the same transaction already counts as in it and gets none: begin here instead. */
static int ensure_writing(mmkv_vtab *vt)
{
    return mmkv_txn_active(vt->conn) ? SQLITE_OK : mmkvBegin(&vt->base);
}

static int run_command(mmkv_vtab *vt, sqlite3_value *command)
{
    const char *text = (const char *)sqlite3_value_text(command);
    int rc;
    if (text && sqlite3_stricmp(text, "integrity-check") == 0) {
        mmkv_commit state;
        const mmkv_commit *use;
        if ((rc = check_state(vt, &state, &use)) != SQLITE_OK) return rc;
        rc = mmkv_check(vt->conn, use);
    } else if (text && sqlite3_stricmp(text, "rebuild-index") == 0) {
        if ((rc = ensure_writing(vt)) != SQLITE_OK) return rc;
        rc = mmkv_rebuild(vt->conn);
    } else {
        sqlite3_free(vt->base.zErrMsg);
        vt->base.zErrMsg = sqlite3_mprintf("mmkv: unknown command \"%s\"", text ? text : "");
        return SQLITE_ERROR;
    }
    return rc == MMKV_OK ? SQLITE_OK : engine_error(vt, rc);
}

#if SQLITE_VERSION_NUMBER >= 3044000
/* PRAGMA integrity_check and quick_check (SQLite 3.44+): the same check as the command. */
static int mmkvIntegrity(sqlite3_vtab *vtab, const char *schema, const char *table, int flags,
                         char **report)
{
    mmkv_vtab *vt = (mmkv_vtab *)vtab;
    (void)schema;
    (void)flags;
    mmkv_commit state;
    const mmkv_commit *use;
    int rc = check_state(vt, &state, &use);
    if (rc != SQLITE_OK) {
        *report = sqlite3_mprintf("%s", vtab->zErrMsg ? vtab->zErrMsg : "mmkv: cannot read");
        return SQLITE_OK;
    }
    if (mmkv_check(vt->conn, use) != MMKV_OK)
        *report = sqlite3_mprintf("%s: %s", table, mmkv_errmsg(vt->conn));
    return SQLITE_OK;
}
#endif

/*
** xUpdate for a WITHOUT ROWID table:
**   DELETE  argc 1: argv[0] the key of the row
**   INSERT  argv[0] NULL, argv[1] NULL, argv[2] key, argv[3] value, argv[4] command
**   UPDATE  argv[0] the old key, argv[1] the new key, argv[2..4] as for INSERT
** A constraint failure returns before anything changes (SQLITE_VTAB_CONSTRAINT_SUPPORT), so that
** SQLite can apply OR IGNORE/ABORT/FAIL/ROLLBACK itself; OR REPLACE is done here.
*/
static int mmkvUpdate(sqlite3_vtab *vtab, int argc, sqlite3_value **argv, sqlite3_int64 *rowid)
{
    mmkv_vtab *vt = (mmkv_vtab *)vtab;
    /* SQLite sets last_insert_rowid() from *rowid after an INSERT; a WITHOUT ROWID table leaves
    ** it as it was. */
    *rowid = sqlite3_last_insert_rowid(vt->db);
    mmkv_datum old_key, key, value;
    sqlite3_int64 old_number, number, value_number;
    int rc;

    if (argc == 1) {
        if ((rc = datum_from_value(argv[0], &old_key, &old_number)) != SQLITE_OK) return rc;
        if ((rc = ensure_writing(vt)) != SQLITE_OK) return rc;
        rc = mmkv_delete(vt->conn, &old_key);
        return rc == MMKV_OK || rc == MMKV_NOTFOUND ? SQLITE_OK : engine_error(vt, rc);
    }
    int inserting = sqlite3_value_type(argv[0]) == SQLITE_NULL;
    if (inserting && sqlite3_value_type(argv[4]) != SQLITE_NULL) return run_command(vt, argv[4]);
    if (sqlite3_value_type(argv[2]) == SQLITE_NULL)
        return constraint_error(vt, SQLITE_CONSTRAINT_NOTNULL, "NOT NULL");
    if ((rc = datum_from_value(argv[2], &key, &number)) != SQLITE_OK) return rc;
    if ((rc = datum_from_value(argv[3], &value, &value_number)) != SQLITE_OK) return rc;
    int replace = sqlite3_vtab_on_conflict(vt->db) == SQLITE_REPLACE;
    if ((rc = ensure_writing(vt)) != SQLITE_OK) return rc;

    if (inserting) {
        rc = mmkv_put(vt->conn, &key, &value, replace ? MMKV_PUT_REPLACE : MMKV_PUT_INSERT);
    } else {
        if ((rc = datum_from_value(argv[0], &old_key, &old_number)) != SQLITE_OK) return rc;
        if (mmkv_key_equal(&old_key, &key)) {
            rc = mmkv_put(vt->conn, &key, &value, MMKV_PUT_REPLACE);
        } else {
            /* A new key: claim it first, so that a conflict fails before any change. */
            rc = mmkv_put(vt->conn, &key, &value, replace ? MMKV_PUT_REPLACE : MMKV_PUT_INSERT);
            if (rc == MMKV_OK) {
                rc = mmkv_delete(vt->conn, &old_key);
                if (rc == MMKV_NOTFOUND) rc = MMKV_OK;
            }
        }
    }
    if (rc == MMKV_CONSTRAINT) return constraint_error(vt, SQLITE_CONSTRAINT_PRIMARYKEY, "UNIQUE");
    return rc == MMKV_OK ? SQLITE_OK : engine_error(vt, rc);
}

/* ---- transactions: all durable work in xSync; xCommit and xRollback cannot fail ---- */

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
static int begin_waiting(mmkv_vtab *vt)
{
    static const int delays_ms[] = {1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100};
    const int n_delays = (int)(sizeof delays_ms / sizeof delays_ms[0]);
    int rc = mmkv_txn_begin(vt->conn);
    if (rc != MMKV_BUSY) return rc;
    int timeout = busy_timeout_ms(vt->db), waited = 0;
    for (int i = 0; rc == MMKV_BUSY && waited < timeout; i++) {
        int delay = delays_ms[i < n_delays ? i : n_delays - 1];
        if (delay > timeout - waited) delay = timeout - waited;
        sqlite3_sleep(delay);
        waited += delay;
        rc = mmkv_txn_begin(vt->conn);
    }
    return rc;
}

/* A table in a database file begins from the commit its database records. SQLite already holds
** the database's write lock: a statement that writes a virtual table begins a write transaction
** on the table's database first, so writers across processes queue on that lock, and the busy
** timeout applies as usual. */
static int mmkvBegin(sqlite3_vtab *vtab)
{
    mmkv_vtab *vt = (mmkv_vtab *)vtab;
    if (mmkv_txn_active(vt->conn)) return SQLITE_OK;
    int rc;
    if (vt->owned) {
        mmkv_commit state;
        sqlite3_free(vtab->zErrMsg);
        vtab->zErrMsg = NULL;
        if ((rc = mmkv_record_read(&vt->record, &state, &vtab->zErrMsg)) != SQLITE_OK) return rc;
        rc = mmkv_txn_begin_at(vt->conn, &state);
    } else {
        rc = begin_waiting(vt);
    }
    return rc == MMKV_OK ? SQLITE_OK : engine_error(vt, rc);
}

/* The records are made durable, then the commit is recorded in the database, in the transaction
** SQLite is about to commit: one commit for mmkv and native tables. */
static int mmkvSync(sqlite3_vtab *vtab)
{
    mmkv_vtab *vt = (mmkv_vtab *)vtab;
    if (!mmkv_txn_active(vt->conn)) return SQLITE_OK;
    int rc = mmkv_txn_prepare(vt->conn);
    if (rc != MMKV_OK) return engine_error(vt, rc);
    if (!vt->owned) return SQLITE_OK;
    mmkv_commit before, after;
    mmkv_txn_outcome(vt->conn, &after);
    sqlite3_free(vtab->zErrMsg);
    vtab->zErrMsg = NULL;
    rc = mmkv_record_read(&vt->record, &before, &vtab->zErrMsg);
    if (rc == SQLITE_OK && memcmp(&before, &after, sizeof after) != 0)
        rc = mmkv_record_write(&vt->record, &after, &vtab->zErrMsg);
    return rc;
}

static int mmkvCommit(sqlite3_vtab *vtab)
{
    mmkv_txn_commit(((mmkv_vtab *)vtab)->conn);
    return SQLITE_OK;
}

static int mmkvRollback(sqlite3_vtab *vtab)
{
    mmkv_txn_rollback(((mmkv_vtab *)vtab)->conn);
    return SQLITE_OK;
}

static int mmkvSavepoint(sqlite3_vtab *vtab, int level)
{
    mmkv_vtab *vt = (mmkv_vtab *)vtab;
    int rc = mmkv_txn_savepoint(vt->conn, level);
    return rc == MMKV_OK ? SQLITE_OK : engine_error(vt, rc);
}

static int mmkvRelease(sqlite3_vtab *vtab, int level)
{
    mmkv_txn_release(((mmkv_vtab *)vtab)->conn, level);
    return SQLITE_OK;
}

static int mmkvRollbackTo(sqlite3_vtab *vtab, int level)
{
    mmkv_txn_rollback_to(((mmkv_vtab *)vtab)->conn, level);
    return SQLITE_OK;
}

/* ALTER TABLE RENAME: files named after the table take the new name. */
static int mmkvRename(sqlite3_vtab *vtab, const char *new_name)
{
    mmkv_vtab *vt = (mmkv_vtab *)vtab;
    if (vt->temp || vt->named_after_table) {
        int rc = refuse_inside_transaction(vt, "rename");
        if (rc != SQLITE_OK) return rc;
    }
    char *new_table = sqlite3_mprintf("%s", new_name);
    if (!new_table) return SQLITE_NOMEM;
    if (vt->owned) {
        sqlite3_free(vt->base.zErrMsg);
        vt->base.zErrMsg = NULL;
        int rc = mmkv_record_rename(&vt->record, new_name, &vt->base.zErrMsg);
        if (rc != SQLITE_OK) {
            sqlite3_free(new_table);
            return rc;
        }
    }
    if (vt->temp) {
        sqlite3_free(vt->temp->name);
        vt->temp->name = sqlite3_mprintf("%s", new_name);
    } else if (vt->named_after_table) {
        int temporary;
        char *new_path = resolve_data_path(vt->db, vt->schema, new_name, NULL, &temporary);
        char *message = NULL;
        int rc = new_path ? mmkv_rename_files(vt->data_path, new_path, &message) : SQLITE_NOMEM;
        if (rc != MMKV_OK) {
            if (message) set_error(vtab, rc, message);
            free(message);
            sqlite3_free(new_path);
            sqlite3_free(new_table);
            return rc;
        }
        sqlite3_free(vt->data_path);
        vt->data_path = new_path;
    }
    sqlite3_free(vt->name);
    vt->name = new_table;
    return SQLITE_OK;
}

/* The commit record is a shadow table: read-only to SQL under SQLITE_DBCONFIG_DEFENSIVE. */
static int mmkvShadowName(const char *suffix)
{
    return sqlite3_stricmp(suffix, MMKV_COMMIT_SUFFIX) == 0;
}

static const sqlite3_module mmkv_module = {
#if SQLITE_VERSION_NUMBER >= 3044000
    .iVersion = 4,
    .xIntegrity = mmkvIntegrity,
#else
    .iVersion = 3,
#endif
    .xCreate = mmkvCreate,
    .xConnect = mmkvConnect,
    .xBestIndex = mmkvBestIndex,
    .xDisconnect = mmkvDisconnect,
    .xDestroy = mmkvDestroy,
    .xOpen = mmkvOpen,
    .xClose = mmkvClose,
    .xFilter = mmkvFilter,
    .xNext = mmkvNext,
    .xEof = mmkvEof,
    .xColumn = mmkvColumn,
    .xRowid = mmkvRowid,
    .xUpdate = mmkvUpdate,
    .xBegin = mmkvBegin,
    .xSync = mmkvSync,
    .xCommit = mmkvCommit,
    .xRollback = mmkvRollback,
    .xRename = mmkvRename,
    .xSavepoint = mmkvSavepoint,
    .xRelease = mmkvRelease,
    .xRollbackTo = mmkvRollbackTo,
    .xShadowName = mmkvShadowName,
};

int mmkv_vtab_register(sqlite3 *db)
{
    mmkv_module_state *state = sqlite3_malloc(sizeof *state);
    if (!state) return SQLITE_NOMEM;
    memset(state, 0, sizeof *state);
    return sqlite3_create_module_v2(db, "mmkv", &mmkv_module, state, module_state_free);
}
