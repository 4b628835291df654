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
** touches files or mappings itself. A table's state lives in tables.c (shared by every vtab SQLite
** makes for it), where its files go and whose they are in placement.c, and what DDL leaves for
** SQLite's commit to decide in pending.c.
*/
#include "vtab.h"
#include "args.h"
#include "commit_record.h"
#include "compaction.h"
#include "mmkv.h"
#include "pending.h"
#include "placement.h"
#include "tables.h"

#include <stdlib.h>
#include <string.h>

SQLITE_EXTENSION_INIT3

#define COLUMN_KEY 0
#define COLUMN_VALUE 1
#define COLUMN_COMMAND 2

/* Query plans (idxNum); see mmkvBestIndex. */
#define PLAN_FULL_SCAN 0
#define PLAN_KEY_EQ 1
#define PLAN_KEY_IN 2

#define FULL_SCAN_ROW_COST 2.0    /* per row: walking the log and checking each version */
#define LOOKUP_COST 1.0
/* The size SQLite's planner assumes for a table it has no statistics for (LogEst 200). */
#define UNANALYZED_TABLE_ROWS 1048576.0
#define IN_LOOKUPS_GUESS 10.0


typedef struct mmkv_cursor mmkv_cursor;

typedef struct mmkv_vtab mmkv_vtab;
struct mmkv_vtab {
    sqlite3_vtab base;
    sqlite3 *db;
    mmkv_connection *connection;
    mmkv_table *table;   /* holds a reference */
    int catching_up;     /* joined a transaction its table was already in: see mmkvSavepoint */
    mmkv_cursor *spare;  /* a closed cursor kept for the next xOpen: a lookup statement opens and
                         ** closes one each time it runs, and should not pay malloc and free */
    int nochange;        /* SQLite says which columns an UPDATE leaves alone (3.22+) */
};

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

/* Reports the table's engine error (or why it cannot be used) on the vtab. */
static int engine_error(mmkv_vtab *vt, int rc)
{
    return mmkv_table_error(vt->table, rc, &vt->base.zErrMsg);
}

static void clear_error(mmkv_vtab *vt)
{
    sqlite3_free(vt->base.zErrMsg);
    vt->base.zErrMsg = NULL;
}

/* The table cannot be used (its files are missing, another's, or damaged): every use says why. */
static int unusable(mmkv_vtab *vt)
{
    mmkv_table *t = vt->table;
    if (t->conn) return SQLITE_OK;
    set_error(&vt->base, t->broken ? t->broken_rc : SQLITE_ERROR,
              t->broken ? t->broken : "mmkv: the table no longer exists");
    return t->broken ? t->broken_rc : SQLITE_ERROR;
}

/* The engine's view of an SQL value, TEXT in the table's encoding. Numbers are copied into
** *number, which must outlive datum. */
static int datum_from_value(sqlite3_value *value, int encoding, mmkv_datum *datum,
                            sqlite3_int64 *number)
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
        if (encoding == MMKV_TEXT_UTF16LE) {
            datum->bytes = sqlite3_value_text16le(value);
            datum->len = (uint32_t)sqlite3_value_bytes16(value);
        } else if (encoding == MMKV_TEXT_UTF16BE) {
            datum->bytes = sqlite3_value_text16be(value);
            datum->len = (uint32_t)sqlite3_value_bytes16(value);
        } else {
            datum->bytes = sqlite3_value_text(value);
            datum->len = (uint32_t)sqlite3_value_bytes(value);
        }
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

/* UTF-16 text as it is. SQLite takes two first bytes FF FE or FE FF of a UTF-16 result for a
** byte-order mark, removes them and reads the rest in that order; text that begins with U+FEFF or
** U+FFFE has those bytes, so it goes with a mark of its own encoding in front, for SQLite to
** remove (sqlite3.h: only the first is a mark). */
static void result_text16(sqlite3_context *ctx, const unsigned char *bytes, uint32_t len,
                          int encoding, sqlite3_destructor_type keep)
{
    unsigned char le = encoding == MMKV_TEXT_UTF16LE;
    int looks_marked = len >= 2 && ((bytes[0] == 0xfe && bytes[1] == 0xff) ||
                                    (bytes[0] == 0xff && bytes[1] == 0xfe));
    if (!looks_marked) {
        if (le)
            sqlite3_result_text16le(ctx, bytes, (int)len, keep);
        else
            sqlite3_result_text16be(ctx, bytes, (int)len, keep);
        return;
    }
    unsigned char *marked = sqlite3_malloc64((sqlite3_uint64)len + 2);
    if (!marked) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    marked[0] = le ? 0xff : 0xfe; /* U+FEFF in the table's byte order */
    marked[1] = le ? 0xfe : 0xff;
    memcpy(marked + 2, bytes, len);
    sqlite3_result_text64(ctx, (const char *)marked, (sqlite3_uint64)len + 2, sqlite3_free,
                          le ? SQLITE_UTF16LE : SQLITE_UTF16BE);
}

/* keep: SQLITE_STATIC for bytes that outlive every use SQLite may make of the result (see
** mmkvColumn), else SQLITE_TRANSIENT. */
static void result_datum(sqlite3_context *ctx, const mmkv_datum *d, int encoding,
                         sqlite3_destructor_type keep)
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
    case MMKV_TEXT: {
        const void *bytes = d->len ? d->bytes : "";
        if (encoding == MMKV_TEXT_UTF16LE || encoding == MMKV_TEXT_UTF16BE)
            result_text16(ctx, bytes, d->len, encoding, d->len ? keep : SQLITE_STATIC);
        else
            sqlite3_result_text(ctx, bytes, (int)d->len, d->len ? keep : SQLITE_STATIC);
        break;
    }
    case MMKV_BLOB:
        if (d->len)
            sqlite3_result_blob(ctx, d->bytes, (int)d->len, keep);
        else
            sqlite3_result_zeroblob(ctx, 0);
        break;
    default:
        sqlite3_result_null(ctx);
    }
}

/* ---- creating and connecting ---- */

/* Who a table is, in other users' messages: "main.kv of '/x/app.db'". */
static char *table_label(sqlite3 *db, const char *schema, const char *name)
{
    const char *file = sqlite3_db_filename(db, schema);
    return file && file[0] ? sqlite3_mprintf("table %s.%s of '%s'", schema, name, file)
                           : sqlite3_mprintf("table %s.%s of an in-memory database", schema, name);
}

/* The text encoding of the connection's databases (one for all: SQLite requires it). */
static int database_encoding(sqlite3 *db)
{
    sqlite3_stmt *stmt = NULL;
    int encoding = MMKV_TEXT_UTF8;
    if (sqlite3_prepare_v2(db, "PRAGMA encoding", -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(stmt, 0);
        if (name && sqlite3_stricmp(name, "UTF-16le") == 0) encoding = MMKV_TEXT_UTF16LE;
        if (name && sqlite3_stricmp(name, "UTF-16be") == 0) encoding = MMKV_TEXT_UTF16BE;
    }
    sqlite3_finalize(stmt);
    return encoding;
}

/* Whether mmkv may write to the table's files: its database is not read-only (mode=ro,
** immutable=1, a read-only file) and the connection is not PRAGMA query_only. */
static int database_writable(sqlite3 *db, const char *schema)
{
    if (sqlite3_db_readonly(db, schema) == 1) return 0;
    sqlite3_stmt *stmt = NULL;
    int query_only = 0;
    if (sqlite3_prepare_v2(db, "PRAGMA query_only", -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        query_only = sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    return !query_only;
}

static int declare(sqlite3 *db, const char *name)
{
    char *schema_sql = sqlite3_mprintf(
        "CREATE TABLE x(key PRIMARY KEY NOT NULL, value, \"%w\" HIDDEN) WITHOUT ROWID", name);
    int rc = schema_sql ? sqlite3_declare_vtab(db, schema_sql) : SQLITE_NOMEM;
    sqlite3_free(schema_sql);
    if (rc != SQLITE_OK) return rc;
    sqlite3_vtab_config(db, SQLITE_VTAB_CONSTRAINT_SUPPORT, 1);
#if SQLITE_VERSION_NUMBER >= 3031000
    if (sqlite3_libversion_number() >= 3031000) sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
#endif
    return SQLITE_OK;
}

static int vtab_new(sqlite3 *db, mmkv_connection *c, mmkv_table *t, sqlite3_vtab **out)
{
    mmkv_vtab *vt = sqlite3_malloc(sizeof *vt);
    if (!vt) return SQLITE_NOMEM;
    memset(vt, 0, sizeof *vt);
    vt->db = db;
#if SQLITE_VERSION_NUMBER >= 3022000
    vt->nochange = sqlite3_libversion_number() >= 3022000;
#endif
    vt->connection = c;
    vt->table = t;
    *out = &vt->base;
    return SQLITE_OK;
}

/* Parses the arguments and checks the name; *err set on failure. */
static int parse_arguments(int argc, const char *const *argv, mmkv_args *args, char **err)
{
    char *message = NULL;
    if (mmkv_args_parse(argc - 3, argv + 3, args, &message) != MMKV_OK) {
        *err = sqlite3_mprintf("%s", message);
        free(message);
        return SQLITE_ERROR;
    }
    const char *name = argv[2];
    if (sqlite3_stricmp(name, "key") == 0 || sqlite3_stricmp(name, "value") == 0) {
        *err = sqlite3_mprintf("mmkv: a table cannot be named \"%s\": its command column would "
                               "clash with the column of that name",
                               name);
        mmkv_args_free(args);
        return SQLITE_ERROR;
    }
    return SQLITE_OK;
}

/* Where t's files are (placement.h), and who decides what it has committed: its database's commit
** record if it has a file. Returns the database's file name. */
static const char *place(mmkv_table *t, sqlite3 *db, const mmkv_args *args)
{
    const char *db_file = sqlite3_db_filename(db, t->schema);
    t->data_path = mmkv_placement_path(db_file, t->name, args->file, &t->temporary);
    t->named_after_table = !args->file;
    t->owned = db_file && db_file[0];
    t->sync = args->sync;
    t->autocompact = args->autocompact;
    return db_file;
}

/* Opens t's engine connection; the message of a failure goes to *err. */
static int open_engine(mmkv_table *t, mmkv_open_options *options, char **err)
{
    char *message = NULL;
    char *label = table_label(t->connection->db, t->schema, t->name);
    if (!label) return SQLITE_NOMEM;
    options->user = label;
    int rc = mmkv_open(t->temporary ? "" : t->data_path, options, &t->conn, &message);
    sqlite3_free(label);
    if (rc != MMKV_OK) {
        sqlite3_free(*err);
        *err = sqlite3_mprintf("%s", message ? message : "mmkv: cannot open the table's files");
        free(message);
        return mmkv_sqlite_rc(rc);
    }
    return SQLITE_OK;
}

/*
** xCreate. argv[0] is the module name, argv[1] the schema, argv[2] the table name, and argv[3..]
** the arguments. Makes new files (a path in use is refused or freed: placement.h) and, in a
** database file, the commit record. If the CREATE is rolled back, pending.c removes the files.
*/
static int mmkvCreate(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out,
                      char **err)
{
    mmkv_connection *c = aux;
    const char *schema = argv[1], *name = argv[2];
    mmkv_args args;
    *out = NULL;
    int rc = parse_arguments(argc, argv, &args, err);
    if (rc != SQLITE_OK) return rc;
    mmkv_pending_settle(c);
    mmkv_table *t = mmkv_table_new(c, schema, name), *displaced = NULL;
    char *displaced_path = NULL;
    if (!t) {
        mmkv_args_free(&args);
        return SQLITE_NOMEM;
    }
    const char *db_file = place(t, db, &args);
    t->text_encoding = database_encoding(db);
    mmkv_open_options options = {.sync = args.sync,
                                 .temporary = t->temporary,
                                 .text_encoding = t->text_encoding,
                                 .home = db_file,
                                 .owner_keeps_records = t->owned};
    rc = t->temporary || t->data_path ? SQLITE_OK : SQLITE_NOMEM;
    if (rc == SQLITE_OK && !t->temporary)
        rc = mmkv_placement_refuse_sqlite_file(db, t->data_path, err);
    if (rc == SQLITE_OK && !t->temporary)
        rc = mmkv_placement_claim(c, t, schema, name, t->owned, t->data_path, &displaced,
                                  &displaced_path, err);
    if (rc == SQLITE_OK && t->owned) {
        while (options.owner_id == 0)
            sqlite3_randomness(sizeof options.owner_id, &options.owner_id);
    }
    uint64_t dev, ino;
    t->made_files = t->temporary || !mmkv_path_identity(t->data_path, &dev, &ino);
    if (rc == SQLITE_OK) rc = open_engine(t, &options, err);
    t->owns_files = rc == SQLITE_OK;
    if (rc == SQLITE_OK) t->text_encoding = mmkv_text_encoding(t->conn); /* a shared file's own */
    mmkv_commit state;
    if (rc == SQLITE_OK && t->owned) {
        rc = mmkv_committed(t->conn, &state) == MMKV_OK ? SQLITE_OK
                                                         : mmkv_table_error(t, MMKV_CORRUPT, err);
        if (rc == SQLITE_OK)
            rc = mmkv_record_create(&t->record, db, schema, name, options.owner_id, &state,
                                    displaced ? displaced->record.owner_id : 0, err);
    }
    if (rc == SQLITE_OK) rc = declare(db, name);
    if (rc == SQLITE_OK) rc = vtab_new(db, c, t, out);
    if (rc == SQLITE_OK && (rc = mmkv_pending_create(c, t, displaced, displaced_path)) != SQLITE_OK) {
        sqlite3_free(*out);
        *out = NULL;
    }
    if (rc != SQLITE_OK && t->status == MMKV_TABLE_LIVE) {
        /* Nothing of this CREATE may stay: its files go, a file it set aside comes back. */
        t->status = MMKV_TABLE_DISCARDED;
        mmkv_table_close(t);
        if (t->owns_files && t->made_files && t->data_path) mmkv_remove_files(t->data_path, NULL);
        if (displaced && mmkv_rename_files(displaced_path, t->data_path, NULL) == MMKV_OK) {
            sqlite3_free(displaced->data_path);
            displaced->data_path = sqlite3_mprintf("%s", t->data_path);
        }
    }
    if (rc != SQLITE_OK) mmkv_table_unref(t);
    sqlite3_free(displaced_path);
    mmkv_args_free(&args);
    return rc;
}

/*
** xConnect: the table's state is shared with every other vtab SQLite made for it on this
** connection (tables.h). Otherwise its files are found and checked (placement.h) and opened. A
** table whose files cannot be used still connects, so that it can be dropped; every use reports
** why it cannot be used.
*/
static int mmkvConnect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                       sqlite3_vtab **out, char **err)
{
    mmkv_connection *c = aux;
    const char *schema = argv[1], *name = argv[2];
    mmkv_args args;
    *out = NULL;
    int rc = parse_arguments(argc, argv, &args, err);
    if (rc != SQLITE_OK) return rc;
    mmkv_pending_settle(c);
    mmkv_table *t = mmkv_table_find(c, schema, name);
    if (t) {
        mmkv_table_ref(t);
    } else if ((t = mmkv_table_new(c, schema, name)) != NULL) {
        place(t, db, &args);
        int writable = database_writable(db, schema);
        mmkv_open_options options = {.sync = args.sync,
                                     .temporary = t->temporary,
                                     .must_exist = 1,
                                     .readonly = !writable && !t->temporary,
                                     .text_encoding = database_encoding(db),
                                     .owner_keeps_records = t->owned};
        mmkv_commit committed;
        mmkv_redo kept = {0, NULL, 0};
        char *why = NULL;
        int failed = t->temporary || t->data_path ? SQLITE_OK : SQLITE_NOMEM;
        if (failed == SQLITE_OK && t->owned) {
            failed = mmkv_record_open(&t->record, db, schema, name, &why);
            if (failed == SQLITE_NOTFOUND)
                why = sqlite3_mprintf("mmkv: table \"%s\" has no commit record (%s_%s is "
                                      "missing): its data cannot be trusted",
                                      name, name, MMKV_COMMIT_SUFFIX);
            options.owner_id = t->record.owner_id;
            if (failed == SQLITE_OK &&
                (failed = mmkv_record_read(&t->record, &committed, &why)) == SQLITE_OK)
                options.committed = &committed;
            if (failed == SQLITE_OK &&
                (failed = mmkv_record_redo_read(&t->record, &committed, &kept, &why)) == SQLITE_OK)
                options.redo = &kept;
        } else if (failed == SQLITE_OK && !t->owned &&
                   mmkv_record_open(&t->record, db, schema, name, NULL) == SQLITE_OK) {
            /* A database with no file holding a commit record: a copy (a backup or a
            ** deserialize into memory, a dump reloaded there), whose data stayed behind. */
            failed = SQLITE_CANTOPEN;
            why = sqlite3_mprintf("mmkv: table \"%s\" is in a copy of a database (it has a commit "
                                  "record but no database file), and its data did not come with "
                                  "it; copies of a database keep their mmkv data only when made "
                                  "with SELECT mmkv_backup('path')",
                                  name);
        }
        if (failed == SQLITE_OK && t->owned)
            failed = mmkv_placement_verify(t, args.file, writable, &why);
        if (failed == SQLITE_OK) {
            failed = open_engine(t, &options, &why);
            if (failed == SQLITE_OK) t->text_encoding = mmkv_text_encoding(t->conn);
        }
        sqlite3_free((void *)kept.bytes);
        if (failed == SQLITE_OK && writable) mmkv_placement_settle_home(t);
        if (failed == SQLITE_NOMEM) {
            rc = SQLITE_NOMEM;
        } else if (failed != SQLITE_OK) {
            mmkv_table_break(t, failed, why ? why : "mmkv: the table's files cannot be used");
            if (!t->broken) rc = SQLITE_NOMEM;
        }
        sqlite3_free(why);
    } else {
        rc = SQLITE_NOMEM;
    }
    if (rc == SQLITE_OK) rc = declare(db, name);
    if (rc == SQLITE_OK) rc = vtab_new(db, c, t, out);
    if (rc != SQLITE_OK && t) mmkv_table_unref(t);
    mmkv_args_free(&args);
    return rc;
}

static int mmkvDisconnect(sqlite3_vtab *vtab)
{
    mmkv_vtab *vt = (mmkv_vtab *)vtab;
    mmkv_table_unref(vt->table);
    mmkv_pending_settle(vt->connection);
    sqlite3_free(vt->spare);
    sqlite3_free(vt);
    return SQLITE_OK;
}

/* DROP TABLE: the commit record goes with the statement; the files stay until SQLite commits the
** DROP (pending.h), flagged in their home note in case this process dies before. */
static int mmkvDestroy(sqlite3_vtab *vtab)
{
    mmkv_vtab *vt = (mmkv_vtab *)vtab;
    mmkv_table *t = vt->table;
    clear_error(vt);
    if (t->owned) {
        int rc = mmkv_record_drop(&t->record, &vtab->zErrMsg);
        if (rc != SQLITE_OK) return rc;
    }
    if (t->conn && t->owned && t->owns_files && sqlite3_db_readonly(vt->db, t->schema) != 1)
        mmkv_mark_home(t->conn, sqlite3_db_filename(vt->db, t->schema), MMKV_HOME_DROP_PENDING);
    t->status = MMKV_TABLE_DROPPED;
    int rc = mmkv_pending_drop(vt->connection, t);
    if (rc != SQLITE_OK) {
        t->status = MMKV_TABLE_LIVE;
        return rc;
    }
    return mmkvDisconnect(vtab);
}

/* ALTER TABLE RENAME: files named after the table get the new name beside the old one, and keep
** only the one SQLite's commit decides (pending.h). */
static int mmkvRename(sqlite3_vtab *vtab, const char *new_name)
{
    mmkv_vtab *vt = (mmkv_vtab *)vtab;
    mmkv_table *t = vt->table;
    clear_error(vt);
    char *old_name = sqlite3_mprintf("%s", t->name), *new_table = sqlite3_mprintf("%s", new_name);
    char *new_path = NULL, *old_path = NULL, *displaced_path = NULL;
    mmkv_table *displaced = NULL;
    int rc = old_name && new_table ? SQLITE_OK : SQLITE_NOMEM, linked = 0;
    if (rc == SQLITE_OK && t->named_after_table && t->data_path && t->conn) {
        int temporary;
        new_path = mmkv_placement_path(sqlite3_db_filename(vt->db, t->schema), new_name, NULL,
                                       &temporary);
        rc = new_path ? mmkv_placement_refuse_sqlite_file(vt->db, new_path, &vtab->zErrMsg)
                      : SQLITE_NOMEM;
        /* Back to a name its files still have (renamed and back in one transaction). */
        int have_it = rc == SQLITE_OK && mmkv_same_file(new_path, t->data_path);
        linked = rc == SQLITE_OK && !have_it;
        if (linked)
            rc = mmkv_placement_claim(vt->connection, t, t->schema, new_name, t->owned, new_path,
                                      &displaced, &displaced_path, &vtab->zErrMsg);
        if (linked && rc == SQLITE_OK) {
            char *message = NULL;
            int link_rc = mmkv_link_files(t->data_path, new_path, &message);
            if (link_rc != MMKV_OK) {
                sqlite3_free(vtab->zErrMsg);
                vtab->zErrMsg = sqlite3_mprintf("%s", message);
                rc = mmkv_sqlite_rc(link_rc);
                if (displaced && mmkv_rename_files(displaced_path, new_path, NULL) == MMKV_OK) {
                    sqlite3_free(displaced->data_path);
                    displaced->data_path = sqlite3_mprintf("%s", new_path);
                }
                displaced = NULL;
            }
            free(message);
        }
    }
    if (rc == SQLITE_OK && t->owned) rc = mmkv_record_rename(&t->record, new_name, &vtab->zErrMsg);
    if (rc == SQLITE_OK && new_path) {
        old_path = t->data_path;
        t->data_path = new_path;
        new_path = NULL;
    }
    if (rc == SQLITE_OK) {
        sqlite3_free(t->name);
        t->name = new_table;
        new_table = NULL;
        rc = mmkv_pending_rename(vt->connection, t, old_name, old_path, linked, displaced,
                                 displaced_path);
    } else if (linked && new_path && t->data_path) {
        mmkv_drop_name(new_path, t->data_path, NULL);
    }
    sqlite3_free(old_name);
    sqlite3_free(new_table);
    sqlite3_free(new_path);
    sqlite3_free(old_path);
    sqlite3_free(displaced_path);
    return rc;
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
    double live = vt->table->conn ? (double)mmkv_live_count(vt->table->conn) : 0;
    int analyzed = sqlite3_table_column_metadata(vt->db, vt->table->schema, "sqlite_stat1", NULL, NULL,
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
    mmkv_pending_settle(vt->connection);
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
    mmkv_vtab *vt = (mmkv_vtab *)vtab;
    vt->catching_up = 0;
    int rc = unusable(vt);
    if (rc != SQLITE_OK) return rc;
    mmkv_cursor *cur = vt->spare ? vt->spare : sqlite3_malloc(sizeof *cur);
    if (!cur) return SQLITE_NOMEM;
    vt->spare = NULL;
    vt->table->open_cursors++;
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
    if (--vt->table->open_cursors == 0) vt->table->have_snapshot = 0;
    cursor_reset(cur);
    if (cur->found != cur->found_inline) sqlite3_free(cur->found);
    sqlite3_free(cur->emitted);
    if (vt->spare)
        sqlite3_free(cur);
    else
        vt->spare = cur;
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
    int rc = datum_from_value(key_value, vt->table->text_encoding, &key, &number);
    if (rc != SQLITE_OK) return rc;
    if (key.type == MMKV_BLOB) {
        mmkv_row row;
        rc = mmkv_get(vt->table->conn, &cur->snapshot, &key, &row);
        if (rc == MMKV_OK) rc = keep_found_row(cur, &row);
    } else {
        rc = mmkv_get_similar(vt->table->conn, &cur->snapshot, &key, keep_found_row, cur);
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
    mmkv_table *t = vt->table;
    int rc;
    if (!t->conn) return unusable(vt);
    if (mmkv_txn_active(t->conn)) {
        rc = mmkv_snapshot_take(t->conn, snapshot);
    } else if (t->owned) {
        mmkv_commit state;
        clear_error(vt);
        rc = mmkv_record_read_cached(&t->record, &state, &vt->base.zErrMsg);
        if (rc != SQLITE_OK) return rc;
        rc = mmkv_snapshot_at(t->conn, &state, snapshot);
    } else if (t->have_snapshot) {
        *snapshot = t->snapshot;
        rc = MMKV_OK;
    } else {
        rc = mmkv_snapshot_take(t->conn, snapshot);
        if (rc == MMKV_OK) {
            t->snapshot = *snapshot;
            t->have_snapshot = 1;
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
        rc = mmkv_scan_open(vt->table->conn, &cur->snapshot, &cur->scan);
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

/*
** A committed record's bytes are handed to SQLite as they lie in the mapping, uncopied
** (SQLITE_STATIC), which SQLite's contract allows for bytes that stay put as long as it may read
** them: until the statement steps again or ends (the application's sqlite3_column_* pointers, an
** aggregate's best value so far). They do. A record below the snapshot's `stable` offset is never
** written again, the mapping's views are never unmapped while the table is open, and its bytes
** leave the file only when no reader anywhere reads a state holding them (compaction.c,
** worker.c): while this statement runs, its cursor's SQLite read transaction holds such a state
** (in WAL mode its read mark keeps the checkpoint that would show the state safe from finishing;
** in rollback mode its shared lock keeps every other writer out), and a file without a database
** gives space back only while no cursor of it is open. A writer's own records, past `stable`,
** can be rolled back and written over by its next statement: SQLite gets a copy of those.
*/
static int mmkvColumn(sqlite3_vtab_cursor *cursor, sqlite3_context *ctx, int column)
{
    mmkv_cursor *cur = (mmkv_cursor *)cursor;
    mmkv_vtab *vt = (mmkv_vtab *)cursor->pVtab;
    int encoding = vt->table->text_encoding;
#if SQLITE_VERSION_NUMBER >= 3022000
    /* An UPDATE that leaves the key as it is asks for it twice, once as the row's old key (argv[0]
    ** of xUpdate) and once, like this, as the new one, which xUpdate then takes from argv[0]. */
    if (column != COLUMN_VALUE && vt->nochange && sqlite3_vtab_nochange(ctx)) return SQLITE_OK;
#endif
    sqlite3_destructor_type keep =
        cur->row.offset < cur->snapshot.stable ? SQLITE_STATIC : SQLITE_TRANSIENT;
    if (column == COLUMN_KEY)
        result_datum(ctx, &cur->row.key, encoding, keep);
    else if (column == COLUMN_VALUE)
        result_datum(ctx, &cur->row.value, encoding, keep);
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
    vt->base.zErrMsg = sqlite3_mprintf("%s constraint failed: %s.key", kind, vt->table->name);
    return rc;
}

/* The committed state a check should cover: the database's record for an owned table, else the
** meta slots' (NULL). */
static int check_state(mmkv_vtab *vt, mmkv_commit *state, const mmkv_commit **use)
{
    mmkv_table *t = vt->table;
    *use = NULL;
    if (!t->owned || mmkv_txn_active(t->conn)) return SQLITE_OK;
    clear_error(vt);
    int rc = mmkv_record_read(&t->record, state, &vt->base.zErrMsg);
    if (rc == SQLITE_OK) *use = state;
    return rc;
}

/* SQLite calls xBegin when a statement first writes a table in a transaction, but a table created
** earlier in the same transaction already counts as in it and gets none: begin here instead. */
static int ensure_writing(mmkv_vtab *vt)
{
    clear_error(vt);
    return mmkv_table_begin(vt->table, &vt->base.zErrMsg);
}

/*
** The hidden column: INSERT INTO kv(kv) VALUES('command').
**   integrity-check   verify the log and the index (SQLITE_CORRUPT_VTAB with what is wrong)
**   rebuild-index     rebuild the derived index from the log
**   compact           start compacting the whole log (compaction.h); returns at once
**   compact-step      one step of a compaction started (what the background worker runs)
*/
static int run_command(mmkv_vtab *vt, sqlite3_value *command)
{
    const char *text = (const char *)sqlite3_value_text(command);
    mmkv_conn *conn = vt->table->conn;
    int rc;
    if (text && sqlite3_stricmp(text, "integrity-check") == 0) {
        mmkv_commit state;
        const mmkv_commit *use;
        if ((rc = check_state(vt, &state, &use)) != SQLITE_OK) return rc;
        rc = mmkv_check(conn, use);
    } else if (text && sqlite3_stricmp(text, "rebuild-index") == 0) {
        if ((rc = ensure_writing(vt)) != SQLITE_OK) return rc;
        rc = mmkv_rebuild(conn);
    } else if (text && (sqlite3_stricmp(text, "compact") == 0 ||
                        sqlite3_stricmp(text, "compact-step") == 0)) {
        if ((rc = ensure_writing(vt)) != SQLITE_OK) return rc;
        return mmkv_compaction_command(vt->table, sqlite3_stricmp(text, "compact-step") == 0,
                                       &vt->base.zErrMsg);
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
    if (unusable(vt) != SQLITE_OK) {
        *report = sqlite3_mprintf("%s: %s", table, vtab->zErrMsg);
        return SQLITE_OK;
    }
    mmkv_commit state;
    const mmkv_commit *use;
    int rc = check_state(vt, &state, &use);
    if (rc != SQLITE_OK) {
        *report = sqlite3_mprintf("%s", vtab->zErrMsg ? vtab->zErrMsg : "mmkv: cannot read");
        return SQLITE_OK;
    }
    if (mmkv_check(vt->table->conn, use) != MMKV_OK)
        *report = sqlite3_mprintf("%s: %s", table, mmkv_errmsg(vt->table->conn));
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
    vt->catching_up = 0;
    int encoding = vt->table->text_encoding;
    /* SQLite sets last_insert_rowid() from *rowid after an INSERT; a WITHOUT ROWID table leaves
    ** it as it was. */
    *rowid = sqlite3_last_insert_rowid(vt->db);
    mmkv_datum old_key, key, value;
    sqlite3_int64 old_number, number, value_number;
    int rc = unusable(vt);
    if (rc != SQLITE_OK) return rc;
    mmkv_conn *conn = vt->table->conn;

    if (argc == 1) {
        if ((rc = datum_from_value(argv[0], encoding, &old_key, &old_number)) != SQLITE_OK)
            return rc;
        if ((rc = ensure_writing(vt)) != SQLITE_OK) return rc;
        rc = mmkv_delete(conn, &old_key);
        return rc == MMKV_OK || rc == MMKV_NOTFOUND ? SQLITE_OK : engine_error(vt, rc);
    }
    int inserting = sqlite3_value_type(argv[0]) == SQLITE_NULL;
    if (inserting && sqlite3_value_type(argv[4]) != SQLITE_NULL) return run_command(vt, argv[4]);
    sqlite3_value *new_key = argv[2];
#if SQLITE_VERSION_NUMBER >= 3022000
    if (!inserting && vt->nochange && sqlite3_value_nochange(new_key))
        new_key = argv[0]; /* the key is not changed (mmkvColumn) */
#endif
    if (sqlite3_value_type(new_key) == SQLITE_NULL)
        return constraint_error(vt, SQLITE_CONSTRAINT_NOTNULL, "NOT NULL");
    if ((rc = datum_from_value(new_key, encoding, &key, &number)) != SQLITE_OK) return rc;
    if ((rc = datum_from_value(argv[3], encoding, &value, &value_number)) != SQLITE_OK) return rc;
    int replace = sqlite3_vtab_on_conflict(vt->db) == SQLITE_REPLACE;
    if ((rc = ensure_writing(vt)) != SQLITE_OK) return rc;

    if (inserting) {
        rc = mmkv_put(conn, &key, &value, replace ? MMKV_PUT_REPLACE : MMKV_PUT_INSERT);
    } else {
        if ((rc = datum_from_value(argv[0], encoding, &old_key, &old_number)) != SQLITE_OK)
            return rc;
        if (mmkv_key_equal(&old_key, &key)) {
            rc = mmkv_put(conn, &key, &value, MMKV_PUT_REPLACE);
        } else {
            /* A new key: claim it first, so that a conflict fails before any change. */
            rc = mmkv_put(conn, &key, &value, replace ? MMKV_PUT_REPLACE : MMKV_PUT_INSERT);
            if (rc == MMKV_OK) {
                rc = mmkv_delete(conn, &old_key);
                if (rc == MMKV_NOTFOUND) rc = MMKV_OK;
            }
        }
    }
    if (rc == MMKV_CONSTRAINT) return constraint_error(vt, SQLITE_CONSTRAINT_PRIMARYKEY, "UNIQUE");
    return rc == MMKV_OK ? SQLITE_OK : engine_error(vt, rc);
}

/* ---- transactions: all durable work in xSync; xCommit and xRollback cannot fail ---- */

static int mmkvBegin(sqlite3_vtab *vtab)
{
    mmkv_vtab *vt = (mmkv_vtab *)vtab;
    clear_error(vt);
    vt->catching_up = vt->table->conn && mmkv_txn_active(vt->table->conn);
    return mmkv_table_begin(vt->table, &vtab->zErrMsg);
}

static int mmkvSync(sqlite3_vtab *vtab)
{
    mmkv_vtab *vt = (mmkv_vtab *)vtab;
    vt->catching_up = 0;
    clear_error(vt);
    return mmkv_table_sync(vt->table, &vtab->zErrMsg);
}

static int mmkvCommit(sqlite3_vtab *vtab)
{
    ((mmkv_vtab *)vtab)->catching_up = 0;
    mmkv_table_commit(((mmkv_vtab *)vtab)->table);
    return SQLITE_OK;
}

static int mmkvRollback(sqlite3_vtab *vtab)
{
    ((mmkv_vtab *)vtab)->catching_up = 0;
    mmkv_table_rollback(((mmkv_vtab *)vtab)->table);
    return SQLITE_OK;
}

/* Joining a transaction late, SQLite first names the innermost savepoint already open. For a
** table this vtab begins, that marks its start (txn.c); for a table already in the transaction
** through another vtab (a schema reload made this one), the table marked it when it began, and
** marking it again would move it past the writes since. */
static int mmkvSavepoint(sqlite3_vtab *vtab, int level)
{
    mmkv_vtab *vt = (mmkv_vtab *)vtab;
    clear_error(vt);
    if (vt->catching_up) {
        vt->catching_up = 0;
        return SQLITE_OK;
    }
    return mmkv_table_savepoint(vt->table, level, &vtab->zErrMsg);
}

static int mmkvRelease(sqlite3_vtab *vtab, int level)
{
    ((mmkv_vtab *)vtab)->catching_up = 0;
    mmkv_table_release(((mmkv_vtab *)vtab)->table, level);
    return SQLITE_OK;
}

static int mmkvRollbackTo(sqlite3_vtab *vtab, int level)
{
    ((mmkv_vtab *)vtab)->catching_up = 0;
    mmkv_table_rollback_to(((mmkv_vtab *)vtab)->table, level);
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

static void connection_release(void *c)
{
    mmkv_connection_unref(c);
}

int mmkv_vtab_register(sqlite3 *db)
{
    mmkv_connection *c = mmkv_connection_new(db);
    if (!c) return SQLITE_NOMEM;
    c->refs = 1;
    int rc = sqlite3_create_module_v2(db, "mmkv", &mmkv_module, c, connection_release);
    if (rc == SQLITE_OK) rc = mmkv_pending_register(c);
    return rc;
}
