/*
** mmkv_backup(): a consistent hot copy of a database with all its mmkv tables.
**
**     .load build/mmkv
**     SELECT mmkv_backup('backups/app-copy.db');         -- the main database
**     SELECT mmkv_backup('aux', 'backups/aux-copy.db');  -- an attached one, by schema name
**
** The copy is a database file at the path given (relative paths are taken from the current
** directory, as VACUUM INTO takes them), with each mmkv table's files beside it under the default
** names ("<copy>-<table>.mmkv" and its -index), whatever file= the original named; it holds every
** native and mmkv table as of one moment, opens at once, and shares no file with the original.
** The function returns the copy's full path. Other connections and processes go on writing.
**
** How (the copy of a data file itself is the engine's: mmkv_copy_* in copy.c):
**   1. A connection of our own to the source (same file, same VFS; the caller's connection and
**      transaction are left alone) reads, in a short read transaction, the schema and each mmkv
**      table's commit record; each table's log is copied up to what that record names, holding
**      no lock (committed bytes of a log are never rewritten). This repeats while a round still
**      had much to copy (writers append meanwhile), a few times at most.
**   2. The final phase, in one read transaction of that connection: the schema and the commit
**      records are read again, each log is copied on up to its record, and SQLite's online backup
**      copies the native part, all of it as of that one transaction. In WAL mode a read
**      transaction blocks no writer; in rollback-journal mode it holds commits back, for as long
**      as this phase takes (what phase 1 left to copy, and the native part).
**   3. Then, holding nothing: the copy's schema is rewritten to name files of its own (each mmkv
**      table's CREATE VIRTUAL TABLE loses its file= argument; its commit record gets the copy's
**      owner id and the state copied), the data files are sealed and their indexes built, and the
**      copy's database, built under a temporary name, takes its name only once it is whole.
** A failure removes everything the backup made.
**
** The function is SQLITE_DIRECTONLY: it writes files, so a view or trigger in a database it did
** not write must not be able to call it.
*/
#include "backup.h"
#include "args.h"
#include "commit_record.h"
#include "mmkv.h"
#include "placement.h"
#include "tables.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

SQLITE_EXTENSION_INIT3

/* The lock-free rounds end when one copied less than this, or after this many. */
#define CATCH_UP_BYTES ((sqlite3_uint64)1 << 20)
#define CATCH_UP_ROUNDS 8
/* The longest pause between attempts while a table's file is not the snapshot's (copy_all). */
#define RETRY_PAUSE_MAX_MS 64
/* How long our connections wait for a lock, at least (more if the caller's busy_timeout says). */
#define BACKUP_BUSY_TIMEOUT_MS 5000
/* The copy's database is built under its name and this, and 16 hex digits, until it is whole. */
#define BUILDING_SUFFIX ".mmkv-backup-"

static const char *const sqlite_companions[][2] = {
    {"-journal", "rollback journal"},
    {"-wal", "write-ahead log"},
    {"-shm", "shared-memory file"},
};
#define N_COMPANIONS (sizeof sqlite_companions / sizeof *sqlite_companions)

/* One mmkv table of the source, as a snapshot names it, and its copy. */
typedef struct backup_table {
    char *name;
    char *copy_sql;    /* its CREATE VIRTUAL TABLE statement for the copy: no file= */
    char *source_path; /* its data file */
    sqlite3_uint64 source_owner;
    mmkv_commit recorded; /* its commit record in the snapshot */
    mmkv_redo kept;       /* the records the record keeps (commit_record.h), for the source's open */
    char *target_path;    /* the copy's data file */
    sqlite3_uint64 target_owner;
    mmkv_copy *copy;    /* NULL until it is started */
    mmkv_commit copied; /* the state the copy holds */
} backup_table;

typedef struct backup_tables {
    backup_table *items;
    int count, capacity;
} backup_tables;

typedef struct backup {
    sqlite3 *db;        /* the caller's connection */
    const char *schema; /* the database of it being copied */
    sqlite3_vfs *vfs;   /* that database's */
    const char *source_file;
    char *target_file;   /* the copy's full path */
    char *building_file; /* the copy's database until it is whole */
    int building_made;
    sqlite3 *source; /* our own connection to the source: query_only */
    sqlite3 *target; /* to the copy being built */
    int busy_timeout_ms;
    backup_tables tables; /* the tables being copied */
    int rc;
    char *err;        /* what went wrong, for the caller */
    int unsettled_rc; /* why the last table whose copy could not start could not */
    char *unsettled_err;
} backup;

/* ---- errors ---- */

/* Sets the error (the first one stays) and returns rc. message is sqlite3_malloc'd or NULL. */
static int fail(backup *b, int rc, char *message)
{
    if (b->rc == SQLITE_OK) {
        b->err = message;
        b->rc = message ? rc : SQLITE_NOMEM;
    } else {
        sqlite3_free(message);
    }
    return b->rc;
}

/* A message of mmkv's without its "mmkv: ", to follow "mmkv_backup: ...: ". */
static const char *reason(const char *message)
{
    static const char prefix[] = "mmkv: ";
    if (!message) return "error";
    return strncmp(message, prefix, sizeof prefix - 1) == 0 ? message + sizeof prefix - 1 : message;
}

/* An engine's message (malloc'd, freed here), after what failed ("cannot copy", of table name if
** not NULL). */
static int fail_engine(backup *b, int engine_rc, const char *what, const char *table, char *message)
{
    int rc = fail(
        b, mmkv_sqlite_rc(engine_rc),
        table ? sqlite3_mprintf("mmkv_backup: %s table \"%s\": %s", what, table, reason(message))
              : sqlite3_mprintf("mmkv_backup: %s: %s", what, reason(message)));
    free(message);
    return rc;
}

static int fail_sqlite(backup *b, sqlite3 *db, const char *what)
{
    int rc = sqlite3_errcode(db);
    return fail(b, rc == SQLITE_OK ? SQLITE_ERROR : rc,
                sqlite3_mprintf("mmkv_backup: %s: %s", what, sqlite3_errmsg(db)));
}

static int exec(backup *b, sqlite3 *db, const char *sql, const char *what)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? SQLITE_OK
                                                                : fail_sqlite(b, db, what);
}

/* ---- the statement SQLite keeps for a virtual table ---- */

/*
** sqlite_schema keeps "CREATE VIRTUAL TABLE " and then the statement as written from the table's
** name on (no IF NOT EXISTS, no schema name): the name, USING, the module's name, and the
** arguments in parentheses, each argument the text from its first token to its last, as the
** module's xCreate and xConnect receive it. So the copy's statement is made of the same pieces,
** less the file= argument, and its tables get the same arguments but that one.
*/
#define VTAB_PREFIX "CREATE VIRTUAL TABLE "

enum token_kind { TOKEN_SPACE, TOKEN_WORD, TOKEN_OTHER };

/* The length of the token at z (0 at the end, -1 for an unterminated quote) and its kind: white
** space and comments, a word or a quoted name or string, or one other character. */
static int token_at(const char *z, int *kind)
{
    int n = 0;
    unsigned char c = (unsigned char)z[0];
    *kind = TOKEN_SPACE;
    if (!c) return 0;
    if (isspace(c)) {
        while (isspace((unsigned char)z[n]))
            n++;
        return n;
    }
    if (c == '-' && z[1] == '-') {
        while (z[n] && z[n] != '\n')
            n++;
        return n;
    }
    if (c == '/' && z[1] == '*') {
        const char *end = strstr(z + 2, "*/");
        return end ? (int)(end - z) + 2 : (int)strlen(z);
    }
    *kind = TOKEN_WORD;
    if (c == '\'' || c == '"' || c == '`' || c == '[') {
        char close = c == '[' ? ']' : (char)c;
        for (n = 1; z[n]; n++) {
            if (z[n] != close) continue;
            if (close != ']' && z[n + 1] == close) {
                n++;
                continue;
            }
            return n + 1;
        }
        return -1;
    }
    if (isalnum(c) || c == '_' || c >= 0x80) {
        while (isalnum((unsigned char)z[n]) || z[n] == '_' || z[n] == '$' ||
               (unsigned char)z[n] >= 0x80)
            n++;
        return n;
    }
    *kind = TOKEN_OTHER;
    return 1;
}

/* The next token that is not white space or a comment, from *z on; *z moves past it. */
static int next_token(const char **z, const char **start, int *kind)
{
    for (;;) {
        int n = token_at(*z, kind);
        if (n <= 0) {
            *start = *z;
            return n;
        }
        *start = *z;
        *z += n;
        if (*kind != TOKEN_SPACE) return n;
    }
}

typedef struct vtab_statement {
    const char *name, *module; /* as written, quoted or not */
    int name_len, module_len;
    int n_args;
    char **args; /* each as the module receives it (sqlite3_malloc'd) */
} vtab_statement;

static void statement_free(vtab_statement *s)
{
    for (int i = 0; i < s->n_args; i++)
        sqlite3_free(s->args[i]);
    sqlite3_free(s->args);
    memset(s, 0, sizeof *s);
}

static int add_argument(vtab_statement *s, const char *start, const char *end)
{
    char **grown = sqlite3_realloc64(s->args, (sqlite3_uint64)(s->n_args + 1) * sizeof *grown);
    if (!grown) return SQLITE_NOMEM;
    s->args = grown;
    s->args[s->n_args] = sqlite3_mprintf("%.*s", (int)(end - start), start);
    return s->args[s->n_args++] ? SQLITE_OK : SQLITE_NOMEM;
}

/* Removes the quotes of a quoted name, in place. */
static void dequote(char *z)
{
    char open = z[0], close = open == '[' ? ']' : open;
    if (open != '\'' && open != '"' && open != '`' && open != '[') return;
    size_t out = 0;
    for (size_t i = 1; z[i]; i++) {
        if (z[i] == close) {
            if (close == ']' || z[i + 1] != close) break;
            i++;
        }
        z[out++] = z[i];
    }
    z[out] = 0;
}

/* Splits a virtual table's statement; SQLITE_ERROR if it does not read as one. */
static int statement_parse(const char *sql, vtab_statement *s)
{
    memset(s, 0, sizeof *s);
    if (sqlite3_strnicmp(sql, VTAB_PREFIX, (int)strlen(VTAB_PREFIX)) != 0) return SQLITE_ERROR;
    const char *z = sql + strlen(VTAB_PREFIX), *start;
    int kind, n = next_token(&z, &start, &kind);
    if (n <= 0 || kind != TOKEN_WORD) return SQLITE_ERROR;
    s->name = start;
    s->name_len = n;
    n = next_token(&z, &start, &kind);
    if (n != 5 || sqlite3_strnicmp(start, "USING", 5) != 0) return SQLITE_ERROR;
    n = next_token(&z, &start, &kind);
    if (n <= 0 || kind != TOKEN_WORD) return SQLITE_ERROR;
    s->module = start;
    s->module_len = n;
    n = next_token(&z, &start, &kind);
    if (n == 0) return SQLITE_OK;
    if (kind != TOKEN_OTHER || *start != '(') return SQLITE_ERROR;
    /* Arguments: split at commas outside parentheses, each from its first token to its last. */
    const char *arg_start = NULL, *arg_end = NULL;
    int depth = 1, rc = SQLITE_OK;
    while (depth > 0 && rc == SQLITE_OK) {
        n = token_at(z, &kind);
        if (n <= 0) break;
        start = z;
        z += n;
        if (kind == TOKEN_SPACE) continue;
        if (kind == TOKEN_OTHER && *start == '(') depth++;
        if (kind == TOKEN_OTHER && *start == ')') depth--;
        if (depth == 0 || (depth == 1 && kind == TOKEN_OTHER && *start == ',')) {
            if (arg_start) rc = add_argument(s, arg_start, arg_end);
            arg_start = NULL;
            continue;
        }
        if (!arg_start) arg_start = start;
        arg_end = z;
    }
    if (rc == SQLITE_OK && depth != 0) rc = SQLITE_ERROR;
    if (rc == SQLITE_OK && next_token(&z, &start, &kind) != 0) rc = SQLITE_ERROR;
    if (rc != SQLITE_OK) statement_free(s);
    return rc;
}

/* Whether one argument is file= (parsed as the module parses it). */
static int is_file_argument(const char *arg)
{
    mmkv_args one;
    char *message = NULL;
    const char *argv[1] = {arg};
    int is_file = mmkv_args_parse(1, argv, &one, &message) == MMKV_OK && one.file;
    mmkv_args_free(&one);
    free(message);
    return is_file;
}

/* The statement for the copy: the same, less file=. */
static char *statement_without_file(const vtab_statement *s)
{
    sqlite3_str *out = sqlite3_str_new(NULL);
    sqlite3_str_appendf(out, "%s%.*s USING %.*s", VTAB_PREFIX, s->name_len, s->name, s->module_len,
                        s->module);
    int kept = 0;
    for (int i = 0; i < s->n_args; i++) {
        if (is_file_argument(s->args[i])) continue;
        sqlite3_str_appendall(out, kept++ ? ", " : "(");
        sqlite3_str_appendall(out, s->args[i]);
    }
    if (kept) sqlite3_str_appendall(out, ")");
    return sqlite3_str_finish(out);
}

/* ---- the mmkv tables of a snapshot ---- */

static void table_free(backup_table *t)
{
    mmkv_copy_close(t->copy);
    sqlite3_free(t->name);
    sqlite3_free(t->copy_sql);
    sqlite3_free(t->source_path);
    sqlite3_free(t->target_path);
    sqlite3_free((void *)t->kept.bytes);
    memset(t, 0, sizeof *t);
}

static void tables_free(backup_tables *list)
{
    for (int i = 0; i < list->count; i++)
        table_free(&list->items[i]);
    sqlite3_free(list->items);
    memset(list, 0, sizeof *list);
}

static backup_table *tables_add(backup_tables *list)
{
    if (list->count == list->capacity) {
        int capacity = list->capacity ? list->capacity * 2 : 8;
        backup_table *grown =
            sqlite3_realloc64(list->items, (sqlite3_uint64)capacity * sizeof *grown);
        if (!grown) return NULL;
        list->items = grown;
        list->capacity = capacity;
    }
    backup_table *t = &list->items[list->count++];
    memset(t, 0, sizeof *t);
    return t;
}

/* Fills t from its name and statement, and reads its commit record, in the source's current read
** transaction. */
static int table_read(backup *b, backup_table *t, const vtab_statement *s)
{
    char *message = NULL;
    mmkv_args args;
    if (mmkv_args_parse(s->n_args, (const char *const *)s->args, &args, &message) != MMKV_OK) {
        char *m = sqlite3_mprintf("mmkv_backup: table \"%s\" cannot be copied: %s", t->name,
                                  reason(message));
        free(message);
        return fail(b, SQLITE_ERROR, m);
    }
    int temporary;
    t->source_path = mmkv_placement_path(b->source_file, t->name, args.file, &temporary);
    mmkv_args_free(&args);
    t->copy_sql = statement_without_file(s);
    if (!t->source_path || !t->copy_sql) return fail(b, SQLITE_NOMEM, NULL);
    mmkv_commit_record record;
    char *err = NULL;
    int rc = mmkv_record_open(&record, b->source, "main", t->name, &err);
    if (rc == SQLITE_OK) rc = mmkv_record_read(&record, &t->recorded, &err);
    if (rc == SQLITE_OK) rc = mmkv_record_redo_read(&record, &t->recorded, &t->kept, &err);
    t->source_owner = record.owner_id;
    mmkv_record_close(&record);
    if (rc == SQLITE_NOTFOUND)
        return fail(b, SQLITE_ERROR,
                    sqlite3_mprintf("mmkv_backup: table \"%s\" has no commit record (%s_%s is "
                                    "missing), so its data cannot be trusted; drop it, or copy "
                                    "the database without it",
                                    t->name, t->name, MMKV_COMMIT_SUFFIX));
    if (rc != SQLITE_OK) {
        rc = fail(b, rc, sqlite3_mprintf("mmkv_backup: table \"%s\": %s", t->name, reason(err)));
        sqlite3_free(err);
    }
    return rc;
}

/* The mmkv tables of the source as of its current read transaction, with their commit records. */
static int read_tables(backup *b, backup_tables *list)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(b->source,
                                "SELECT name, sql FROM main.sqlite_master WHERE type = 'table' "
                                "AND sql LIKE '" VTAB_PREFIX "%'",
                                -1, &stmt, NULL);
    if (rc != SQLITE_OK) return fail_sqlite(b, b->source, "cannot read the schema");
    while (b->rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(stmt, 0);
        const char *sql = (const char *)sqlite3_column_text(stmt, 1);
        vtab_statement s;
        if (!name || !sql) continue;
        if ((rc = statement_parse(sql, &s)) != SQLITE_OK) {
            /* Never skipped: it could be an mmkv table, whose copy would then lack its data. */
            if (rc == SQLITE_NOMEM) fail(b, SQLITE_NOMEM, NULL);
            fail(b, SQLITE_ERROR,
                 sqlite3_mprintf("mmkv_backup: cannot read the statement of table \"%s\" in the "
                                 "schema, to tell whether it is an mmkv table: %s",
                                 name, sql));
            break;
        }
        char *module = sqlite3_mprintf("%.*s", s.module_len, s.module);
        if (module) dequote(module);
        if (!module) {
            fail(b, SQLITE_NOMEM, NULL);
        } else if (sqlite3_stricmp(module, "mmkv") == 0) {
            backup_table *t = tables_add(list);
            if (!t || !(t->name = sqlite3_mprintf("%s", name)))
                fail(b, SQLITE_NOMEM, NULL);
            else
                table_read(b, t, &s);
        }
        sqlite3_free(module);
        statement_free(&s);
    }
    if (b->rc == SQLITE_OK && rc != SQLITE_DONE)
        fail_sqlite(b, b->source, "cannot read the schema");
    sqlite3_finalize(stmt);
    return b->rc;
}

/* ---- copying ---- */

static int file_exists(const char *path)
{
    uint64_t dev, ino;
    return mmkv_path_identity(path, &dev, &ino);
}

static sqlite3_uint64 new_owner_id(void)
{
    sqlite3_uint64 id = 0;
    while (id == 0)
        sqlite3_randomness(sizeof id, &id);
    return id;
}

/* Starts the copy of table t into its data file beside the copy. A source file that is missing or
** another table's is no error yet: the table may have been made anew since the snapshot was read
** (a DROP and a CREATE), or be between the two; the next snapshot tells (see copy_all). */
static int table_start(backup *b, backup_table *t)
{
    t->target_owner = new_owner_id();
    char *user = sqlite3_mprintf("mmkv_backup of table \"%s\" of '%s'", t->name, b->source_file);
    if (!user) return fail(b, SQLITE_NOMEM, NULL);
    mmkv_copy_options options = {t->source_owner, t->target_owner, b->target_file, user,
                                 &t->recorded, &t->kept};
    char *message = NULL;
    int rc = mmkv_copy_open(t->source_path, t->target_path, &options, &t->copy, &message);
    sqlite3_free(user);
    if (rc == MMKV_OK) return SQLITE_OK;
    if (rc != MMKV_CANTOPEN && rc != MMKV_ERROR)
        return fail_engine(b, rc, "cannot copy", t->name, message);
    sqlite3_free(b->unsettled_err);
    b->unsettled_err =
        sqlite3_mprintf("mmkv_backup: cannot copy table \"%s\": %s", t->name, reason(message));
    b->unsettled_rc = mmkv_sqlite_rc(rc);
    free(message);
    return b->unsettled_err ? SQLITE_OK : fail(b, SQLITE_NOMEM, NULL);
}

/*
** Brings the copies to the tables of a snapshot (read into *seen, which this empties): the copy of
** a table the snapshot names as before (its name, its commit record's owner, its data file) goes
** on; the others (a table dropped, renamed or made anew meanwhile) are discarded and started
** again. Each then copies up to what its commit record names; *bytes says how much that was, and
** *unsettled how many tables' copies could not start (table_start).
*/
static int copy_snapshot(backup *b, backup_tables *seen, sqlite3_uint64 *bytes, int *unsettled)
{
    *bytes = 0;
    *unsettled = 0;
    for (int i = 0; i < b->tables.count; i++) {
        backup_table *old = &b->tables.items[i];
        for (int j = 0; j < seen->count && old->copy; j++) {
            backup_table *t = &seen->items[j];
            if (t->copy || strcmp(t->name, old->name) != 0 ||
                t->source_owner != old->source_owner ||
                strcmp(t->source_path, old->source_path) != 0)
                continue;
            t->copy = old->copy;
            t->target_path = old->target_path;
            t->target_owner = old->target_owner;
            t->copied = old->copied;
            old->copy = NULL;
            old->target_path = NULL;
        }
    }
    tables_free(&b->tables); /* the copies left there are discarded, their files removed */
    b->tables = *seen;
    memset(seen, 0, sizeof *seen);
    /* Every new table's file is checked before any is made: a refusal costs no copying. */
    for (int i = 0; i < b->tables.count && b->rc == SQLITE_OK; i++) {
        backup_table *t = &b->tables.items[i];
        int temporary;
        if (t->copy) continue;
        t->target_path = mmkv_placement_path(b->target_file, t->name, NULL, &temporary);
        if (!t->target_path) return fail(b, SQLITE_NOMEM, NULL);
        if (file_exists(t->target_path))
            fail(b, SQLITE_ERROR,
                 sqlite3_mprintf("mmkv_backup: '%s' exists, where the copy's table \"%s\" would "
                                 "keep its data: remove it, or name another path for the copy",
                                 t->target_path, t->name));
    }
    for (int i = 0; i < b->tables.count && b->rc == SQLITE_OK; i++) {
        backup_table *t = &b->tables.items[i];
        if (!t->copy && table_start(b, t) != SQLITE_OK) break;
        if (!t->copy) {
            ++*unsettled;
            continue;
        }
        sqlite3_uint64 before = t->copied.tail;
        char *message = NULL;
        int rc = mmkv_copy_to(t->copy, &t->recorded, &t->copied, &message);
        if (rc != MMKV_OK) {
            fail_engine(b, rc, "cannot copy", t->name, message);
            break;
        }
        *bytes += t->copied.tail - before;
    }
    return b->rc;
}

/* The native part, with SQLite's online backup, in the source's current read transaction. */
static int copy_native(backup *b)
{
    sqlite3_backup *copy = sqlite3_backup_init(b->target, "main", b->source, "main");
    if (!copy) return fail_sqlite(b, b->target, "cannot copy the database");
    int rc = sqlite3_backup_step(copy, -1);
    int finish_rc = sqlite3_backup_finish(copy);
    if (rc == SQLITE_DONE && finish_rc == SQLITE_OK) return SQLITE_OK;
    return fail_sqlite(b, b->target, "cannot copy the database");
}

/* A snapshot read in a read transaction of the source's: in the last one (final set), the rest of
** the logs and the native part are copied before it ends, if every table's copy could start. */
static int copy_round(backup *b, int final, sqlite3_uint64 *bytes, int *unsettled)
{
    backup_tables seen;
    memset(&seen, 0, sizeof seen);
    if (exec(b, b->source, "BEGIN", "cannot read the database") != SQLITE_OK) return b->rc;
    read_tables(b, &seen);
    if (b->rc == SQLITE_OK && !final)
        exec(b, b->source, "COMMIT", "cannot read the database"); /* the copying holds nothing */
    if (b->rc == SQLITE_OK) copy_snapshot(b, &seen, bytes, unsettled);
    if (b->rc == SQLITE_OK && final && !*unsettled) copy_native(b);
    if (b->rc == SQLITE_OK && final) exec(b, b->source, "COMMIT", "cannot read the database");
    if (b->rc != SQLITE_OK && !sqlite3_get_autocommit(b->source))
        sqlite3_exec(b->source, "ROLLBACK", NULL, NULL, NULL);
    tables_free(&seen);
    return b->rc;
}

/*
** Lock-free rounds while there is much to copy (or a table's copy could not start), then the
** final one. If a table's copy could not start in the final one either, its file was not the
** snapshot's: missing, or another table's. That is what DDL racing the snapshot looks like (a
** DROP sets the file aside at once, a CREATE in the same transaction makes a new one, and the
** snapshot names the old table until the transaction commits), so the whole is tried again after
** a pause, as SQLite waits for a lock, up to the busy timeout; a file truly missing or another's
** then fails the backup with its own error.
*/
static int copy_all(backup *b)
{
    int waited_ms = 0, pause_ms = 1;
    for (;;) {
        sqlite3_uint64 bytes = CATCH_UP_BYTES;
        int unsettled = 1;
        for (int round = 0; round < CATCH_UP_ROUNDS && (bytes >= CATCH_UP_BYTES || unsettled);
             round++)
            if (copy_round(b, 0, &bytes, &unsettled) != SQLITE_OK) return b->rc;
        if (copy_round(b, 1, &bytes, &unsettled) != SQLITE_OK || !unsettled) return b->rc;
        if (waited_ms >= b->busy_timeout_ms) break;
        sqlite3_sleep(pause_ms);
        waited_ms += pause_ms;
        if (pause_ms < RETRY_PAUSE_MAX_MS) pause_ms *= 2;
    }
    char *message = b->unsettled_err;
    b->unsettled_err = NULL;
    return fail(b, b->unsettled_rc, message);
}

/* ---- the copy's database ---- */

/* The copy's schema names files of its own: each mmkv table's statement loses file= (the table
** then keeps its files under the default names beside the copy), and its commit record names the
** copy's owner id and the state copied. SQLite's writable_schema, on our own connection. */
static int rewrite_schema(backup *b)
{
    sqlite3 *db = b->target;
#ifdef SQLITE_DBCONFIG_DEFENSIVE
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 0, (int *)NULL);
#endif
    if (exec(b, db, "PRAGMA writable_schema = ON", "cannot rewrite the copy's schema") ||
        exec(b, db, "PRAGMA synchronous = FULL", "cannot rewrite the copy's schema") ||
        exec(b, db, "BEGIN IMMEDIATE", "cannot rewrite the copy's schema"))
        return b->rc;
    sqlite3_stmt *update = NULL;
    if (sqlite3_prepare_v2(db,
                           "UPDATE main.sqlite_master SET sql = ?1 WHERE type = 'table' AND "
                           "name = ?2",
                           -1, &update, NULL) != SQLITE_OK)
        fail_sqlite(b, db, "cannot rewrite the copy's schema");
    for (int i = 0; i < b->tables.count && b->rc == SQLITE_OK; i++) {
        backup_table *t = &b->tables.items[i];
        sqlite3_bind_text(update, 1, t->copy_sql, -1, SQLITE_STATIC);
        sqlite3_bind_text(update, 2, t->name, -1, SQLITE_STATIC);
        if (sqlite3_step(update) != SQLITE_DONE || sqlite3_changes(db) != 1) {
            fail_sqlite(b, db, "cannot rewrite the copy's schema");
            break;
        }
        sqlite3_reset(update);
        char *sql = sqlite3_mprintf("UPDATE main.\"%w_%w\" SET owner = %lld WHERE rowid = 1",
                                    t->name, MMKV_COMMIT_SUFFIX, (sqlite3_int64)t->target_owner);
        if (!sql) return fail(b, SQLITE_NOMEM, NULL);
        exec(b, db, sql, "cannot write the copy's commit record");
        sqlite3_free(sql);
        if (b->rc != SQLITE_OK) break;
        mmkv_commit_record record;
        char *err = NULL;
        int rc = mmkv_record_open(&record, db, "main", t->name, &err);
        if (rc == SQLITE_OK) rc = mmkv_record_write(&record, &t->copied, NULL, &err);
        mmkv_record_close(&record);
        if (rc != SQLITE_OK)
            fail(b, rc,
                 sqlite3_mprintf("mmkv_backup: cannot write the copy's commit record of "
                                 "table \"%s\": %s",
                                 t->name, reason(err)));
        sqlite3_free(err);
    }
    sqlite3_finalize(update);
    if (b->rc == SQLITE_OK) exec(b, db, "COMMIT", "cannot rewrite the copy's schema");
    if (b->rc != SQLITE_OK && !sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    if (b->rc == SQLITE_OK) exec(b, db, "PRAGMA writable_schema = OFF", "cannot close the copy");
    return b->rc;
}

/* Leaves the copy's database in its one file (a WAL checkpointed into it), and closes it. */
static int close_target(backup *b)
{
    sqlite3_stmt *stmt = NULL;
    int wal = 0;
    if (sqlite3_prepare_v2(b->target, "PRAGMA main.journal_mode", -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        wal = sqlite3_stricmp((const char *)sqlite3_column_text(stmt, 0), "wal") == 0;
    sqlite3_finalize(stmt);
    if (wal) {
        stmt = NULL;
        int done = sqlite3_prepare_v2(b->target, "PRAGMA main.wal_checkpoint(TRUNCATE)", -1, &stmt,
                                      NULL) == SQLITE_OK &&
                   sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_int(stmt, 0) == 0;
        sqlite3_finalize(stmt);
        if (!done) return fail_sqlite(b, b->target, "cannot checkpoint the copy");
    }
    if (sqlite3_close(b->target) != SQLITE_OK)
        return fail_sqlite(b, b->target, "cannot close the copy");
    b->target = NULL;
    return SQLITE_OK;
}

/* Removes what a failed backup made: the copy's database being built, and the tables' files. */
static void remove_made(backup *b)
{
    if (b->target) sqlite3_close_v2(b->target);
    b->target = NULL;
    if (b->building_made) {
        b->vfs->xDelete(b->vfs, b->building_file, 0);
        for (size_t i = 0; i < N_COMPANIONS; i++) {
            char *companion = sqlite3_mprintf("%s%s", b->building_file, sqlite_companions[i][0]);
            if (companion) b->vfs->xDelete(b->vfs, companion, 0);
            sqlite3_free(companion);
        }
    }
    for (int i = 0; i < b->tables.count; i++) {
        backup_table *t = &b->tables.items[i];
        if (!t->copy) continue;
        mmkv_copy_close(t->copy); /* removes an unfinished copy's files; a finished one's stay */
        t->copy = NULL;
        mmkv_remove_files(t->target_path, NULL);
    }
}

/* ---- checks and connections ---- */

/* The connection's busy timeout in milliseconds (PRAGMA busy_timeout). */
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

static int check_source(backup *b)
{
    const char *file = sqlite3_db_filename(b->db, b->schema);
    if (!file && sqlite3_stricmp(b->schema, "temp") == 0) file = ""; /* not made yet */
    if (!file)
        return fail(b, SQLITE_ERROR,
                    sqlite3_mprintf("mmkv_backup: no database \"%s\" is attached to this "
                                    "connection (PRAGMA database_list names those that are)",
                                    b->schema));
    if (!file[0])
        return fail(b, SQLITE_ERROR,
                    sqlite3_mprintf("mmkv_backup: database \"%s\" is in memory or temporary: it "
                                    "has no file to copy, and its mmkv tables' files vanish with "
                                    "it; mmkv_backup copies a database file",
                                    b->schema));
#if SQLITE_VERSION_NUMBER >= 3034000
    if (sqlite3_libversion_number() >= 3034000 &&
        sqlite3_txn_state(b->db, b->schema) == SQLITE_TXN_WRITE)
        return fail(b, SQLITE_ERROR,
                    sqlite3_mprintf("mmkv_backup: this connection has a write transaction open "
                                    "on \"%s\": commit or roll it back first (a backup copies "
                                    "what is committed)",
                                    b->schema));
#endif
    b->source_file = file;
    b->vfs = NULL;
    if (sqlite3_file_control(b->db, b->schema, SQLITE_FCNTL_VFS_POINTER, &b->vfs) != SQLITE_OK ||
        !b->vfs)
        b->vfs = sqlite3_vfs_find(NULL);
    b->busy_timeout_ms = busy_timeout_ms(b->db);
    if (b->busy_timeout_ms < BACKUP_BUSY_TIMEOUT_MS) b->busy_timeout_ms = BACKUP_BUSY_TIMEOUT_MS;
    return SQLITE_OK;
}

/* The copy's path: a file name that names no file yet, nor one of the source's. */
static int check_target(backup *b, const char *path)
{
    if (!path[0])
        return fail(b, SQLITE_ERROR,
                    sqlite3_mprintf("mmkv_backup: the copy's path is empty: name a file for the "
                                    "copy"));
    if (strcmp(path, ":memory:") == 0)
        return fail(b, SQLITE_ERROR,
                    sqlite3_mprintf("mmkv_backup: ':memory:' is not a file: name a file for the "
                                    "copy (a backup is a database file with its mmkv files "
                                    "beside it)"));
    if (sqlite3_strnicmp(path, "file:", 5) == 0)
        return fail(b, SQLITE_ERROR,
                    sqlite3_mprintf("mmkv_backup: '%s' is a URI: give the copy's path as a file "
                                    "name",
                                    path));
    int size = b->vfs->mxPathname + 1;
    b->target_file = sqlite3_malloc(size);
    if (!b->target_file) return fail(b, SQLITE_NOMEM, NULL);
    if (b->vfs->xFullPathname(b->vfs, path, size, b->target_file) != SQLITE_OK)
        return fail(b, SQLITE_CANTOPEN,
                    sqlite3_mprintf("mmkv_backup: cannot make a full path of '%s'", path));
    const char *target = b->target_file;
    if (strcmp(target, b->source_file) == 0 || mmkv_same_file(target, b->source_file))
        return fail(b, SQLITE_ERROR,
                    sqlite3_mprintf("mmkv_backup: '%s' is the database being backed up: name "
                                    "another file for the copy",
                                    target));
    for (size_t i = 0; i < N_COMPANIONS; i++) {
        char *companion = sqlite3_mprintf("%s%s", b->source_file, sqlite_companions[i][0]);
        if (!companion) return fail(b, SQLITE_NOMEM, NULL);
        if (strcmp(target, companion) == 0 || mmkv_same_file(target, companion))
            fail(b, SQLITE_ERROR,
                 sqlite3_mprintf("mmkv_backup: '%s' is the %s of the database being backed up: "
                                 "name another file for the copy",
                                 target, sqlite_companions[i][1]));
        sqlite3_free(companion);
    }
    if (b->rc == SQLITE_OK && file_exists(target))
        return fail(b, SQLITE_ERROR,
                    sqlite3_mprintf("mmkv_backup: '%s' exists; a backup never overwrites a "
                                    "file: remove it, or name another path for the copy",
                                    target));
    for (size_t i = 0; i < N_COMPANIONS && b->rc == SQLITE_OK; i++) {
        char *companion = sqlite3_mprintf("%s%s", target, sqlite_companions[i][0]);
        if (!companion) return fail(b, SQLITE_NOMEM, NULL);
        if (file_exists(companion))
            fail(b, SQLITE_ERROR,
                 sqlite3_mprintf("mmkv_backup: '%s' exists, and SQLite would take it for the "
                                 "copy's %s: remove it, or name another path for the copy",
                                 companion, sqlite_companions[i][1]));
        sqlite3_free(companion);
    }
    return b->rc;
}

static int open_connections(backup *b)
{
    /* Opened for writing only so that, like any reader, it can roll back a journal a writer
    ** that died left; it never writes (query_only). */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_PRIVATECACHE;
    if (sqlite3_open_v2(b->source_file, &b->source, flags, b->vfs->zName) != SQLITE_OK)
        return fail(b, SQLITE_CANTOPEN,
                    sqlite3_mprintf("mmkv_backup: cannot open '%s' to read it: %s", b->source_file,
                                    b->source ? sqlite3_errmsg(b->source) : "out of memory"));
    sqlite3_busy_timeout(b->source, b->busy_timeout_ms);
    if (exec(b, b->source, "PRAGMA query_only = 1", "cannot read the database")) return b->rc;
    sqlite3_uint64 tag;
    sqlite3_randomness(sizeof tag, &tag);
    b->building_file =
        sqlite3_mprintf("%s%s%016llx", b->target_file, BUILDING_SUFFIX, (unsigned long long)tag);
    if (!b->building_file) return fail(b, SQLITE_NOMEM, NULL);
    b->building_made = 1;
    flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_PRIVATECACHE;
    if (sqlite3_open_v2(b->building_file, &b->target, flags, b->vfs->zName) != SQLITE_OK)
        return fail(b, SQLITE_CANTOPEN,
                    sqlite3_mprintf("mmkv_backup: cannot make the copy '%s': %s (does its "
                                    "directory exist, and may it be written?)",
                                    b->target_file,
                                    b->target ? sqlite3_errmsg(b->target) : "out of memory"));
    /* Nothing counts on the copy until it is whole: its last transaction syncs it. */
    return exec(b, b->target, "PRAGMA synchronous = OFF", "cannot make the copy");
}

/* Seals the copies, closes the copy's database and gives it its name. */
static int finish(backup *b)
{
    for (int i = 0; i < b->tables.count && b->rc == SQLITE_OK; i++) {
        backup_table *t = &b->tables.items[i];
        char *message = NULL;
        int rc = mmkv_copy_finish(t->copy, &message);
        if (rc != MMKV_OK) fail_engine(b, rc, "cannot finish the copy of", t->name, message);
    }
    if (b->rc == SQLITE_OK) close_target(b);
    if (b->rc != SQLITE_OK) return b->rc;
    char *message = NULL;
    int rc = mmkv_path_publish(b->building_file, b->target_file, &message);
    if (rc != MMKV_OK) return fail_engine(b, rc, "cannot give the copy its name", NULL, message);
    b->building_made = 0;
    return SQLITE_OK;
}

/*
** mmkv_backup(path) or mmkv_backup(schema, path): copies the database `schema` ("main" if not
** given) with its mmkv tables to a new database at path. Returns the copy's full path.
*/
static void backup_function(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    backup b;
    memset(&b, 0, sizeof b);
    b.db = sqlite3_context_db_handle(ctx);
    if (argc != 1 && argc != 2) {
        char *m = sqlite3_mprintf("mmkv_backup: expected mmkv_backup('path') or "
                                  "mmkv_backup('schema', 'path'), not %d arguments",
                                  argc);
        fail(&b, SQLITE_ERROR, m);
    }
    for (int i = 0; i < argc && b.rc == SQLITE_OK; i++) {
        int type = sqlite3_value_type(argv[i]);
        if (type == SQLITE_TEXT) continue;
        fail(&b, SQLITE_MISMATCH,
             sqlite3_mprintf("mmkv_backup: the %s must be text, not %s: call "
                             "mmkv_backup('path') or mmkv_backup('schema', 'path')",
                             i == argc - 1 ? "path of the copy" : "schema name", mmkv_value_type_name(type)));
    }
    if (b.rc == SQLITE_OK) {
        b.schema = argc == 2 ? (const char *)sqlite3_value_text(argv[0]) : "main";
        const char *path = (const char *)sqlite3_value_text(argv[argc - 1]);
        if (!b.schema || !path)
            fail(&b, SQLITE_NOMEM, NULL);
        else if (check_source(&b) == SQLITE_OK && check_target(&b, path) == SQLITE_OK &&
                 open_connections(&b) == SQLITE_OK) {
            copy_all(&b);
            if (b.rc == SQLITE_OK) rewrite_schema(&b);
            if (b.rc == SQLITE_OK) finish(&b);
        }
    }
    if (b.rc == SQLITE_OK) {
        sqlite3_result_text(ctx, b.target_file, -1, SQLITE_TRANSIENT);
    } else if (b.rc == SQLITE_NOMEM) {
        sqlite3_result_error_nomem(ctx);
    } else {
        sqlite3_result_error(ctx, b.err, -1);
        sqlite3_result_error_code(ctx, b.rc);
    }
    if (b.rc != SQLITE_OK && b.vfs) remove_made(&b);
    tables_free(&b.tables);
    if (b.target) sqlite3_close_v2(b.target);
    if (b.source) sqlite3_close_v2(b.source);
    sqlite3_free(b.target_file);
    sqlite3_free(b.building_file);
    sqlite3_free(b.err);
    sqlite3_free(b.unsettled_err);
}

int mmkv_backup_register(sqlite3 *db)
{
    int flags = SQLITE_UTF8;
#ifdef SQLITE_DIRECTONLY
    flags |= SQLITE_DIRECTONLY; /* it writes files: never from a view or a trigger */
#endif
    return sqlite3_create_function(db, "mmkv_backup", -1, flags, NULL, backup_function, NULL, NULL);
}
