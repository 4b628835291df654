/*
** Where a table's files live, and whether they are its own. See placement.h.
*/
#include "placement.h"
#include "pending.h"
#include "failpoint.h"

#include <stdlib.h>
#include <string.h>

SQLITE_EXTENSION_INIT3

/* How long a check of another database waits for its locks. */
#define HOME_PROBE_TIMEOUT_MS 2000
#define ORPHAN_NAME_TRIES 100

char *mmkv_placement_path(const char *db_file, const char *name, const char *file, int *temporary)
{
    int has_file = db_file && db_file[0];
    *temporary = 0;
    if (file) {
        const char *slash = has_file ? strrchr(db_file, '/') : NULL;
        if (file[0] == '/' || !slash) return sqlite3_mprintf("%s", file);
        return sqlite3_mprintf("%.*s/%s", (int)(slash - db_file), db_file, file);
    }
    if (!has_file) {
        *temporary = 1;
        return NULL;
    }
    return sqlite3_mprintf("%s-%s%s", db_file, name, MMKV_DATA_SUFFIX);
}

static int set_error(char **err, int rc, char *message)
{
    if (err) {
        sqlite3_free(*err);
        *err = message;
    } else {
        sqlite3_free(message);
    }
    return message ? rc : SQLITE_NOMEM;
}

#define same_file mmkv_same_file

/* Two names of one database: the same path, or the same file. */
static int same_database(const char *a, const char *b)
{
    return a && b && a[0] && b[0] && (strcmp(a, b) == 0 || same_file(a, b));
}

static int exists(const char *path)
{
    uint64_t dev, ino;
    return mmkv_path_identity(path, &dev, &ino);
}

/* ---- SQLite's own files ---- */

static const char *const sqlite_companions[][2] = {
    {"", "the database"},
    {"-journal", "the rollback journal of the database"},
    {"-wal", "the write-ahead log of the database"},
    {"-shm", "the shared-memory file of the database"},
};

int mmkv_placement_refuse_sqlite_file(sqlite3 *db, const char *path, char **err)
{
    uint64_t dev, ino;
    int present = mmkv_path_identity(path, &dev, &ino);
    sqlite3_stmt *list = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA database_list", -1, &list, NULL);
    if (rc != SQLITE_OK)
        return set_error(err, rc, sqlite3_mprintf("mmkv: cannot list the databases: %s",
                                                  sqlite3_errmsg(db)));
    char *refusal = NULL;
    while (!refusal && sqlite3_step(list) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(list, 1);
        const char *file = name ? sqlite3_db_filename(db, name) : NULL;
        if (!file || !file[0]) continue;
        for (size_t i = 0; !refusal && i < sizeof sqlite_companions / sizeof *sqlite_companions;
             i++) {
            char *companion = sqlite3_mprintf("%s%s", file, sqlite_companions[i][0]);
            if (!companion) break;
            uint64_t cdev, cino;
            if (strcmp(companion, path) == 0 ||
                (present && mmkv_path_identity(companion, &cdev, &cino) && cdev == dev &&
                 cino == ino))
                refusal = sqlite3_mprintf("mmkv: file '%s' is %s \"%s\" ('%s'); mmkv never uses "
                                          "a file of SQLite's: name another file with file=",
                                          path, sqlite_companions[i][1], name, file);
            sqlite3_free(companion);
        }
    }
    sqlite3_finalize(list);
    if (!refusal && present && mmkv_path_locked_by_process(path))
        refusal = sqlite3_mprintf("mmkv: file '%s' is locked by this process as SQLite locks its "
                                  "files (a database of another connection?); mmkv never opens "
                                  "such a file: name another file with file=",
                                  path);
    /* A journal, WAL or shm file of a database not attached here, by its name. */
    for (size_t i = 1; !refusal && i < sizeof sqlite_companions / sizeof *sqlite_companions; i++) {
        size_t n = strlen(path), k = strlen(sqlite_companions[i][0]);
        if (n <= k || strcmp(path + n - k, sqlite_companions[i][0]) != 0) continue;
        char *stem = sqlite3_mprintf("%.*s", (int)(n - k), path);
        if (stem && exists(stem))
            refusal = sqlite3_mprintf("mmkv: file '%s' would be %s '%s'; mmkv never uses a file "
                                      "of SQLite's: name another file with file=",
                                      path, sqlite_companions[i][1], stem);
        sqlite3_free(stem);
    }
    return refusal ? set_error(err, SQLITE_ERROR, refusal) : SQLITE_OK;
}

/* ---- the home database of a file ---- */

/* Whether the database at home holds a table whose commit record names owner: SQLITE_OK with the
** table's name, SQLITE_NOTFOUND, or an error (it could not be read). */
static int home_holds(const char *home, uint64_t owner, char **table, char **err)
{
    sqlite3 *other = NULL;
    *table = NULL;
    int rc = sqlite3_open_v2(home, &other, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(other, HOME_PROBE_TIMEOUT_MS);
        rc = mmkv_record_find_owner(other, "main", owner, table, err);
    } else {
        set_error(err, rc, sqlite3_mprintf("mmkv: cannot open '%s': %s", home,
                                           other ? sqlite3_errmsg(other) : "out of memory"));
    }
    sqlite3_close(other);
    return rc;
}

static char *aside_path(const char *path, const char *suffix, uint64_t owner)
{
    return sqlite3_mprintf("%s%s-%016llx", path, suffix, (unsigned long long)owner);
}

/* A data file no table uses: deleted if it never held a commit, else kept under a name that says
** so. */
static int set_aside(const char *path, const mmkv_file_info *info, char **err)
{
    char *message = NULL;
    int rc = MMKV_OK;
    if (info->never_committed) {
        rc = mmkv_remove_files(path, &message);
    } else {
        rc = MMKV_ERROR;
        for (int n = 0; rc != MMKV_OK && n < ORPHAN_NAME_TRIES; n++) {
            char *aside = n ? sqlite3_mprintf("%s%s-%016llx-%d", path, MMKV_ORPHAN_SUFFIX,
                                              (unsigned long long)info->owner_id, n)
                            : aside_path(path, MMKV_ORPHAN_SUFFIX, info->owner_id);
            if (!aside) return SQLITE_NOMEM;
            free(message);
            message = NULL;
            rc = exists(aside) ? MMKV_ERROR : mmkv_rename_files(path, aside, &message);
            sqlite3_free(aside);
        }
    }
    if (rc != MMKV_OK) {
        set_error(err, mmkv_sqlite_rc(rc),
                  sqlite3_mprintf("%s", message ? message : "mmkv: cannot set a file aside"));
        free(message);
        return mmkv_sqlite_rc(rc);
    }
    free(message);
    return SQLITE_OK;
}

static char *home_clause(const mmkv_file_info *info)
{
    return info->has_home && info->home[0] ? sqlite3_mprintf(" (of the database '%s')", info->home)
                                           : sqlite3_mprintf("%s", "");
}

int mmkv_placement_claim(mmkv_connection *c, mmkv_table *self, const char *schema,
                         const char *name, int owned, const char *path, mmkv_table **displaced,
                         char **displaced_path, char **err)
{
    (void)name;
    *displaced = NULL;
    *displaced_path = NULL;
    sqlite3 *db = c->db;
    const char *db_file = sqlite3_db_filename(db, schema);
    mmkv_file_info info;
    char *message = NULL;
    int rc = mmkv_inspect(path, &info, &message);
    if (rc == MMKV_NOTFOUND) return SQLITE_OK;
    if (rc != MMKV_OK) {
        char *m = rc == MMKV_NOTADB ? sqlite3_mprintf("mmkv: '%s' exists and is not an mmkv data "
                                                      "file: name another file with file=",
                                                      path)
                                    : sqlite3_mprintf("%s", message ? message : "mmkv: error");
        free(message);
        return set_error(err, rc == MMKV_NOTADB ? SQLITE_ERROR : mmkv_sqlite_rc(rc), m);
    }
    for (mmkv_table *t = c->tables, *next; t; t = next) {
        next = t->next;
        if (t == self || !t->data_path || !same_file(t->data_path, path)) continue;
        if (t->status == MMKV_TABLE_LIVE && !mmkv_table_still_there(t) &&
            mmkv_pending_discard_created(c, t)) {
            /* Made by a CREATE a savepoint rolled back: its files are gone now. */
            if (!exists(path)) return SQLITE_OK;
            continue;
        }
        if (t->status == MMKV_TABLE_DROPPED && t->owns_files) {
            /* Dropped earlier in this transaction: its file makes room, set aside until the
            ** transaction's outcome decides (pending.h). */
            char *aside = aside_path(path, MMKV_DROPPED_SUFFIX, info.owner_id);
            if (!aside) return SQLITE_NOMEM;
            rc = mmkv_rename_files(path, aside, &message);
            if (rc != MMKV_OK) {
                sqlite3_free(aside);
                rc = set_error(err, mmkv_sqlite_rc(rc), sqlite3_mprintf("%s", message));
                free(message);
                return rc;
            }
            mmkv_crash_point("displaced");
            sqlite3_free(t->data_path);
            t->data_path = aside;
            *displaced = t;
            *displaced_path = sqlite3_mprintf("%s", aside);
            return *displaced_path ? SQLITE_OK : SQLITE_NOMEM;
        }
        if (t->status == MMKV_TABLE_LIVE)
            return set_error(err, SQLITE_ERROR,
                             sqlite3_mprintf("mmkv: data file '%s' is the data file of table "
                                             "%s.%s: a data file is one table's alone; name "
                                             "another file with file=",
                                             path, t->schema, t->name));
    }
    if (!owned) {
        /* In-memory databases may share a file that no database owns, and only such a file. */
        if (info.owner_id == 0) return SQLITE_OK;
        return set_error(err, SQLITE_ERROR,
                         sqlite3_mprintf("mmkv: data file '%s' belongs to a database%s%s%s: open "
                                         "it from that database's table",
                                         path, info.has_home ? " ('" : "",
                                         info.has_home ? info.home : "", info.has_home ? "')" : ""));
    }
    if (info.open_by[0])
        return set_error(err, SQLITE_ERROR,
                         sqlite3_mprintf("mmkv: data file '%s' is in use by %s: a data file is "
                                         "one table's alone; name another file with file=",
                                         path, info.open_by));
    char *of_home = home_clause(&info);
    if (!of_home) return SQLITE_NOMEM;
    if (info.open_elsewhere) {
        rc = set_error(err, SQLITE_ERROR,
                       sqlite3_mprintf("mmkv: data file '%s' is in use by another process%s: a "
                                       "data file is one table's alone; name another file with "
                                       "file=",
                                       path, of_home));
        sqlite3_free(of_home);
        return rc;
    }
    sqlite3_free(of_home);
    if (info.owner_id == 0)
        return set_error(err, SQLITE_ERROR,
                         sqlite3_mprintf("mmkv: data file '%s' belongs to no database (it is "
                                         "shared by in-memory databases); name another file "
                                         "with file=",
                                         path));
    char *user = NULL;
    rc = mmkv_record_find_owner(db, schema, info.owner_id, &user, err);
    if (rc == SQLITE_OK) {
        /* A second name of that table's file, left by a RENAME that a crash interrupted? */
        int temporary;
        char *its_path = mmkv_placement_path(db_file, user, NULL, &temporary);
        int stale = its_path && info.links > 1 && strcmp(its_path, path) != 0 &&
                    same_file(its_path, path) &&
                    mmkv_drop_name(path, its_path, NULL) == MMKV_OK;
        sqlite3_free(its_path);
        if (!stale)
            rc = set_error(err, SQLITE_ERROR,
                           sqlite3_mprintf("mmkv: data file '%s' is used by table \"%s\" of this "
                                           "database: a data file is one table's alone; name "
                                           "another file with file=",
                                           path, user));
        sqlite3_free(user);
        return rc;
    }
    if (rc != SQLITE_NOTFOUND) return rc;
    /* No table of this database uses it: it is an orphan if this database is its home, or its
    ** home is gone, or its home holds no table that uses it. Even an empty file may be another
    ** database's table, made and not yet written. */
    int ours = info.has_home && same_database(info.home, db_file);
    if (ours && (info.home_flags & MMKV_HOME_DROP_PENDING)) {
        /* Its DROP committed and the process ended before the files went: they go now. */
        rc = mmkv_remove_files(path, &message);
        if (rc != MMKV_OK) set_error(err, mmkv_sqlite_rc(rc), sqlite3_mprintf("%s", message));
        free(message);
        return rc == MMKV_OK ? SQLITE_OK : mmkv_sqlite_rc(rc);
    }
    if (ours || (info.has_home && !exists(info.home))) return set_aside(path, &info, err);
    if (!info.has_home)
        return set_error(err, SQLITE_ERROR,
                         sqlite3_mprintf("mmkv: data file '%s' belongs to another database; it "
                                         "cannot be used from this one (if no table uses it, "
                                         "delete it and its -index file, or name another with "
                                         "file=)",
                                         path));
    rc = home_holds(info.home, info.owner_id, &user, err);
    if (rc == SQLITE_NOTFOUND) return set_aside(path, &info, err);
    if (rc == SQLITE_OK) {
        rc = set_error(err, SQLITE_ERROR,
                       sqlite3_mprintf("mmkv: data file '%s' belongs to table \"%s\" of the "
                                       "database '%s'; it cannot be used from this one: name "
                                       "another file with file=",
                                       path, user, info.home));
        sqlite3_free(user);
        return rc;
    }
    return rc;
}

/* ---- connecting ---- */

/* The table's data file went missing: put back a file a rolled-back CREATE set aside (its own,
** under "-dropped-<owner>"), or one an older mmkv set aside under "-dropped". */
static int restore_set_aside(mmkv_table *t, int writable)
{
    char *aside = aside_path(t->data_path, MMKV_DROPPED_SUFFIX, t->record.owner_id);
    char *legacy = sqlite3_mprintf("%s%s", t->data_path, MMKV_DROPPED_SUFFIX);
    int restored = 0;
    mmkv_file_info info;
    if (aside && writable && mmkv_inspect(aside, &info, NULL) == MMKV_OK &&
        info.owner_id == t->record.owner_id)
        restored = mmkv_rename_files(aside, t->data_path, NULL) == MMKV_OK;
    if (!restored && legacy && writable && mmkv_inspect(legacy, &info, NULL) == MMKV_OK &&
        info.owner_id == t->record.owner_id)
        restored = mmkv_rename_files(legacy, t->data_path, NULL) == MMKV_OK;
    sqlite3_free(aside);
    sqlite3_free(legacy);
    return restored;
}

static int missing_error(mmkv_table *t, char **err)
{
    mmkv_commit state;
    int commits = mmkv_record_read(&t->record, &state, NULL) == SQLITE_OK && state.txid > 0;
    return set_error(err, SQLITE_CANTOPEN,
                     commits ? sqlite3_mprintf(
                                   "mmkv: data file '%s' of table \"%s\" is missing, but the "
                                   "database records %llu commits in it: if this database is a "
                                   "copy, its mmkv data did not come with it (copies made by "
                                   "copying the database file, .backup or VACUUM INTO do not "
                                   "carry it: use SELECT mmkv_backup('path'))",
                                   t->data_path, t->name, (unsigned long long)state.txid)
                             : sqlite3_mprintf("mmkv: data file '%s' of table \"%s\" is missing",
                                               t->data_path, t->name));
}

int mmkv_placement_verify(mmkv_table *t, const char *file, int writable, char **err)
{
    const char *db_file = sqlite3_db_filename(t->connection->db, t->schema);
    t->owns_files = 0;
    int rc = mmkv_placement_refuse_sqlite_file(t->connection->db, t->data_path, err);
    if (rc != SQLITE_OK) return rc;
    mmkv_file_info info;
    char *message = NULL;
    rc = mmkv_inspect(t->data_path, &info, &message);
    if (rc == MMKV_NOTFOUND && restore_set_aside(t, writable))
        rc = mmkv_inspect(t->data_path, &info, &message);
    if (rc == MMKV_OK && info.owner_id != t->record.owner_id && writable) {
        /* A CREATE over a dropped table's file, rolled back by a crash: the new file goes aside,
        ** the old one comes back. */
        char *aside = aside_path(t->data_path, MMKV_DROPPED_SUFFIX, t->record.owner_id);
        mmkv_file_info old;
        if (aside && mmkv_inspect(aside, &old, NULL) == MMKV_OK &&
            old.owner_id == t->record.owner_id && !info.open_by[0] && !info.open_elsewhere &&
            set_aside(t->data_path, &info, NULL) == SQLITE_OK &&
            mmkv_rename_files(aside, t->data_path, NULL) == MMKV_OK)
            rc = mmkv_inspect(t->data_path, &info, &message);
        sqlite3_free(aside);
    }
    if (rc == MMKV_NOTFOUND) {
        free(message);
        return missing_error(t, err);
    }
    if (rc != MMKV_OK) {
        char *m = rc == MMKV_NOTADB
                      ? sqlite3_mprintf("mmkv: data file '%s' of table \"%s\" is not an mmkv "
                                        "data file",
                                        t->data_path, t->name)
                      : sqlite3_mprintf("%s", message ? message : "mmkv: error");
        free(message);
        return set_error(err, rc == MMKV_NOTADB ? SQLITE_CORRUPT_VTAB : mmkv_sqlite_rc(rc), m);
    }
    if (info.owner_id != t->record.owner_id) {
        char *of_home = home_clause(&info);
        rc = set_error(err, SQLITE_ERROR,
                       sqlite3_mprintf("mmkv: data file '%s' belongs to another table%s; table "
                                       "\"%s\" cannot use it (is this database a copy? use "
                                       "SELECT mmkv_backup('path') to copy databases)",
                                       t->data_path, of_home ? of_home : "", t->name));
        sqlite3_free(of_home);
        return rc;
    }
    if (writable && t->record.displaced_owner) {
        /* This table's CREATE set a dropped table's file aside, and committed: it goes. */
        char *aside = aside_path(t->data_path, MMKV_DROPPED_SUFFIX, t->record.displaced_owner);
        mmkv_file_info old;
        if (aside && mmkv_inspect(aside, &old, NULL) == MMKV_OK &&
            old.owner_id == t->record.displaced_owner && !old.open_by[0] && !old.open_elsewhere)
            mmkv_remove_files(aside, NULL);
        sqlite3_free(aside);
    }
    if (info.has_home && !same_database(info.home, db_file)) {
        /* Another database's file, by its home note. If the home database would find this same
        ** file for the table, and still holds the table, this database is a copy of it. */
        int temporary;
        char *home_path = mmkv_placement_path(info.home, t->name, file, &temporary);
        int shared = home_path && (strcmp(home_path, t->data_path) == 0 ||
                                   same_file(home_path, t->data_path));
        sqlite3_free(home_path);
        if (shared && exists(info.home)) {
            char *user = NULL;
            rc = home_holds(info.home, info.owner_id, &user, err);
            if (rc == SQLITE_OK) {
                rc = set_error(err, SQLITE_ERROR,
                               sqlite3_mprintf(
                                   "mmkv: table \"%s\": this database is a copy of '%s', whose "
                                   "table \"%s\" uses the data file '%s'; a copy never uses the "
                                   "original's files. Make copies with SELECT mmkv_backup('path'), "
                                   "which gives the copy files of its own",
                                   t->name, info.home, user, t->data_path));
                sqlite3_free(user);
                return rc;
            }
            if (rc != SQLITE_NOTFOUND) return rc;
        }
    }
    t->owns_files = 1;
    if (writable && t->named_after_table && info.links > 1 && db_file && db_file[0]) {
        /* A second name left by a RENAME whose commit a crash parted from the removal of the old
        ** name: the database says which name is the table's, the others go. */
        const char *base = strrchr(db_file, '/');
        char *prefix = sqlite3_mprintf("%s-", base ? base + 1 : db_file);
        if (prefix) mmkv_drop_other_names(t->data_path, prefix, MMKV_DATA_SUFFIX);
        sqlite3_free(prefix);
    }
    return SQLITE_OK;
}

void mmkv_placement_settle_home(mmkv_table *t)
{
    if (!t->conn || !t->owned || !t->owns_files) return;
    const char *db_file = sqlite3_db_filename(t->connection->db, t->schema);
    char home[MMKV_HOME_PATH_BYTES];
    uint32_t flags = 0;
    int has = mmkv_home_of(t->conn, home, sizeof home, &flags);
    if (has && same_database(home, db_file) && !(flags & MMKV_HOME_DROP_PENDING)) return;
    mmkv_mark_home(t->conn, db_file, 0);
}
