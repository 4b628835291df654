/*
** PRAGMA integrity_check and quick_check on mmkv tables (SQLite 3.44 and later call a virtual
** table's xIntegrity; mmkv runs the same check as INSERT INTO kv(kv) VALUES('integrity-check')).
**
** Built against the system's SQLite by `make test`, and against any amalgamation by
** `make test-sqlite AMALGAMATION=dir`. Where the SQLite it runs on (or was compiled against) is
** older than 3.44, the pragma cannot see into mmkv tables: then only what holds everywhere is
** checked (an intact table reads "ok", and the command still finds the damage).
**
** Its checks are steps of one scenario, so MMKV_TEST (make test T=name) naming any of them runs
** them all. Under MMKV_EXPECT_SQLITE=V (make test-sqlite) it also checks that it runs on SQLite V,
** compiled against V's headers.
*/
#include "sqlite3_mmkv.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
static char dir[] = "/tmp/mmkv-integrity-XXXXXX";

/* Every check's name: MMKV_TEST selects the scenario by any of them. */
static const char *const check_names[] = {
    "runs on the SQLite expected",
    "a table with 200 rows",
    "PRAGMA integrity_check: an intact table is ok",
    "PRAGMA quick_check: an intact table is ok",
    "damage a record",
    "the integrity-check command finds the damage",
    "PRAGMA integrity_check reports the damage as the command does",
    "PRAGMA quick_check reports the damage as the command does",
    "PRAGMA main.integrity_check reports the damage as the command does",
    "PRAGMA integrity_check(native) still checks only that table",
};
#define N_CHECKS (sizeof check_names / sizeof check_names[0])

static int selected(void)
{
    const char *selection = getenv("MMKV_TEST");
    if (!selection || !*selection) return 1;
    for (size_t i = 0; i < N_CHECKS; i++)
        if (strstr(check_names[i], selection)) return 1;
    return 0;
}

/* One check; a failure's detail says what was expected and what came. */
static void check(int ok, const char *name, const char *detail)
{
    size_t i = 0;
    while (i < N_CHECKS && strcmp(check_names[i], name) != 0)
        i++;
    if (i == N_CHECKS) {
        printf("FAIL: %s: not in check_names (the test itself is wrong)\n", name);
        failures++;
    }
    if (ok)
        printf("PASS: %s\n", name);
    else
        printf("FAIL: %s: %s\n", name, detail ? detail : "");
    failures += !ok;
}

/* check() of a query's rows against what they should be. */
static void check_rows(const char *got, const char *expected, const char *name)
{
    char *detail = sqlite3_mprintf("expected '%s', got '%s'", expected, got);
    check(strcmp(got, expected) == 0, name, detail);
    sqlite3_free(detail);
}

/* The rows of a one-column query, joined by newlines, or the error. */
static char *rows_of(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt = NULL;
    char *out = sqlite3_mprintf("%s", "");
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
        return sqlite3_mprintf("error: %s", sqlite3_errmsg(db));
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
        out = sqlite3_mprintf("%z%s%s", out, *out ? "\n" : "", sqlite3_column_text(stmt, 0));
    if (rc != SQLITE_DONE) out = sqlite3_mprintf("%z\nerror: %s", out, sqlite3_errmsg(db));
    sqlite3_finalize(stmt);
    return out;
}

static sqlite3 *open_db(const char *path)
{
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK) {
        printf("FAIL: open %s: %s\n", path, sqlite3_errmsg(db));
        exit(1);
    }
    return db;
}

int main(void)
{
    if (!selected()) return 0;
    if (!mkdtemp(dir)) return 1;
    char db_path[128], data_path[160];
    snprintf(db_path, sizeof db_path, "%s/app.db", dir);
    snprintf(data_path, sizeof data_path, "%s-kv.mmkv", db_path);
    sqlite3_auto_extension((void (*)(void))sqlite3_mmkv_init);
    int pragma_sees_mmkv =
        SQLITE_VERSION_NUMBER >= 3044000 && sqlite3_libversion_number() >= 3044000;
    printf("# SQLite %s (compiled against %s): PRAGMA integrity_check %s mmkv tables\n",
           sqlite3_libversion(), SQLITE_VERSION, pragma_sees_mmkv ? "checks" : "cannot check");
    const char *expected_version = getenv("MMKV_EXPECT_SQLITE");
    if (expected_version) {
        char *detail = sqlite3_mprintf("expected SQLite %s, got %s compiled against %s",
                                       expected_version, sqlite3_libversion(), SQLITE_VERSION);
        check(strcmp(sqlite3_libversion(), expected_version) == 0 &&
                  strcmp(SQLITE_VERSION, expected_version) == 0,
              "runs on the SQLite expected", detail);
        sqlite3_free(detail);
    }

    sqlite3 *db = open_db(db_path);
    char *err = NULL;
    int rc =
        sqlite3_exec(db,
                     "CREATE TABLE native(a INTEGER PRIMARY KEY, b);"
                     "CREATE VIRTUAL TABLE kv USING mmkv;"
                     "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)"
                     "  INSERT INTO kv SELECT i, printf('value %d', i) FROM n;"
                     "INSERT INTO native VALUES(1, 'x');"
                     /* A commit too large for the database to keep its records (the redo row)
                     ** syncs them all: the damage below then hits records only the file holds. */
                     "BEGIN; INSERT INTO kv VALUES('sync', zeroblob(70000));"
                     "DELETE FROM kv WHERE key = 'sync'; COMMIT;",
                     NULL, NULL, &err);
    check(rc == SQLITE_OK, "a table with 200 rows", err ? err : "?");
    sqlite3_free(err);
    char *got = rows_of(db, "PRAGMA integrity_check");
    check_rows(got, "ok", "PRAGMA integrity_check: an intact table is ok");
    sqlite3_free(got);
    got = rows_of(db, "PRAGMA quick_check");
    check_rows(got, "ok", "PRAGMA quick_check: an intact table is ok");
    sqlite3_free(got);
    sqlite3_close(db);

    /* A byte of the first record's value (after its 32-byte header and 8-byte key), behind mmkv's
     * back. */
    int fd = open(data_path, O_RDWR);
    unsigned char byte = 0;
    off_t at = 4096 + 40;
    int damaged =
        fd >= 0 && pread(fd, &byte, 1, at) == 1 && (byte ^= 0x20, pwrite(fd, &byte, 1, at) == 1);
    if (fd >= 0) close(fd);
    char *why =
        sqlite3_mprintf("expected to flip a byte at offset %lld of %s", (long long)at, data_path);
    check(damaged, "damage a record", why);
    sqlite3_free(why);

    db = open_db(db_path);
    err = NULL;
    rc = sqlite3_exec(db, "INSERT INTO kv(kv) VALUES('integrity-check')", NULL, NULL, &err);
    why = sqlite3_mprintf("expected SQLITE_CORRUPT or SQLITE_CORRUPT_VTAB, got %d: %s", rc,
                          err ? err : "no error");
    check(rc == SQLITE_CORRUPT_VTAB || rc == SQLITE_CORRUPT,
          "the integrity-check command finds the damage", why);
    sqlite3_free(why);
    char *command_message = sqlite3_mprintf("%s", err ? err : "");
    sqlite3_free(err);
    if (pragma_sees_mmkv) {
        static const char *pragmas[] = {"PRAGMA integrity_check", "PRAGMA quick_check",
                                        "PRAGMA main.integrity_check"};
        for (size_t i = 0; i < sizeof pragmas / sizeof *pragmas; i++) {
            got = rows_of(db, pragmas[i]);
            char name[96];
            snprintf(name, sizeof name, "%s reports the damage as the command does", pragmas[i]);
            /* One row: "kv: " and the command's message, naming the file and the offset. */
            why = sqlite3_mprintf("expected 'kv: %s' naming %s, got '%s'", command_message,
                                  data_path, got);
            check(strncmp(got, "kv: ", 4) == 0 && strstr(got, command_message) &&
                      strstr(got, data_path),
                  name, why);
            sqlite3_free(why);
            sqlite3_free(got);
        }
        got = rows_of(db, "PRAGMA integrity_check(native)");
        check_rows(got, "ok", "PRAGMA integrity_check(native) still checks only that table");
        sqlite3_free(got);
    }
    sqlite3_free(command_message);
    sqlite3_close(db);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("# could not remove %s\n", dir);
    return failures != 0;
}
