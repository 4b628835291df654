/*
** engine_util.h: what the engine's C tests share: the PASS/FAIL protocol of test/run.sh, the
** choice of tests (MMKV_TEST) and of seeds (MMKV_SEED), a private directory, and short ways to
** read and write integer keys.
*/
#ifndef MMKV_ENGINE_UTIL_H
#define MMKV_ENGINE_UTIL_H

#include "mmkv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

static int failures;
static char test_dir[64]; /* made by start_tests() */
static const char *current;
static int current_failed;

/* A failed check prints what it expected (the condition) and, in its message, what came; only a
** test's first failure is printed, since later ones tend to follow from it. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond) && !current_failed) {                                                          \
            current_failed = 1;                                                                    \
            printf("FAIL: %s: line %d: ", current, __LINE__);                                      \
            if (strcmp(#cond, "0") != 0) printf("expected %s: ", #cond);                           \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

/* CHECK(got == expected), saying both values; got and expected are evaluated once. */
#define CHECK_EQ(got, expected, ...)                                                               \
    do {                                                                                           \
        long long got_ = (long long)(got), expected_ = (long long)(expected);                      \
        if (got_ != expected_ && !current_failed) {                                                \
            current_failed = 1;                                                                    \
            printf("FAIL: %s: line %d: expected %s == %s: got %lld, expected %lld: ", current,     \
                   __LINE__, #got, #expected, got_, expected_);                                    \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

/* CHECK_EQ for result codes, by name. */
#define CHECK_RC(got, expected, ...)                                                               \
    do {                                                                                           \
        int got_ = (got), expected_ = (expected);                                                  \
        if (got_ != expected_ && !current_failed) {                                                \
            current_failed = 1;                                                                    \
            printf("FAIL: %s: line %d: expected %s == %s: got %s, expected %s: ", current,         \
                   __LINE__, #got, #expected, rc_name(got_), rc_name(expected_));                  \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

static inline const char *rc_name(int rc)
{
    static const struct {
        int rc;
        const char *name;
    } names[] = {{MMKV_OK, "MMKV_OK"},
                 {MMKV_ERROR, "MMKV_ERROR"},
                 {MMKV_BUSY, "MMKV_BUSY"},
                 {MMKV_NOMEM, "MMKV_NOMEM"},
                 {MMKV_READONLY, "MMKV_READONLY"},
                 {MMKV_IOERR, "MMKV_IOERR"},
                 {MMKV_CORRUPT, "MMKV_CORRUPT"},
                 {MMKV_NOTFOUND, "MMKV_NOTFOUND"},
                 {MMKV_FULL, "MMKV_FULL"},
                 {MMKV_CANTOPEN, "MMKV_CANTOPEN"},
                 {MMKV_CONSTRAINT, "MMKV_CONSTRAINT"},
                 {MMKV_MISUSE, "MMKV_MISUSE"},
                 {MMKV_NOTADB, "MMKV_NOTADB"}};
    static char other[32];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].rc == rc) return names[i].name;
    snprintf(other, sizeof other, "result code %d", rc);
    return other;
}

/* ---- which tests run, and on which seeds (test/run.sh; README, "Tests") ----
**
** MMKV_TEST=name runs only the tests whose name contains name. MMKV_SEED=N mixes N into the fixed
** seed of every random stream of every randomised test; unset or 0 leaves each test its own fixed
** seeds; "random" draws an N, which the test prints. */

/* Whether the test `name` runs. */
static inline int test_selected(const char *name)
{
    const char *selection = getenv("MMKV_TEST");
    return !selection || !*selection || strstr(name, selection) != NULL;
}

/* MMKV_SEED as a number, 0 if unset. */
static inline unsigned seed_base(void)
{
    static int known;
    static unsigned base;
    if (known) return base;
    known = 1;
    const char *value = getenv("MMKV_SEED");
    if (value && strcmp(value, "random") == 0) {
        base = (unsigned)time(NULL) * 2654435761u ^ (unsigned)getpid();
        if (!base) base = 1;
        char text[16];
        snprintf(text, sizeof text, "%u", base);
        setenv("MMKV_SEED", text, 1); /* for the child processes a test may start */
    } else if (value && *value) {
        char *end;
        unsigned long long n = strtoull(value, &end, 10);
        if (*end || value[0] == '-' || n > 0xffffffffull) {
            fprintf(stderr, "MMKV_SEED=%s: expected a number from 0 to 4294967295, or random\n",
                    value);
            exit(2);
        }
        base = (unsigned)n;
    }
    return base;
}

/* The seed of a random stream whose fixed seed is `stream`: the fixed seed itself, or under
** MMKV_SEED=N a mix of both (splitmix64's finaliser), so that each stream stays distinct. */
static inline unsigned seed_for(unsigned stream)
{
    unsigned base = seed_base();
    if (!base) return stream;
    uint64_t x = ((uint64_t)base << 32 | stream) + 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    return (unsigned)x ? (unsigned)x : 1;
}

/* Prints the seed a randomised test runs on, so that a failure can be replayed. */
static inline void print_seed(void)
{
    if (seed_base())
        printf("# %s: MMKV_SEED=%u\n", current, seed_base());
    else
        printf("# %s: MMKV_SEED unset: the test's fixed seeds\n", current);
}

/* Starts the test `name`; returns 0 (and the test is skipped) unless MMKV_TEST selects it. */
static inline int begin_test(const char *name)
{
    current = name;
    current_failed = 0;
    return test_selected(name);
}

static inline void end_test(void)
{
    if (current_failed) {
        failures++;
        if (seed_base())
            printf("# replay: MMKV_SEED=%u make test T='%s'\n", seed_base(), current);
        else
            printf("# replay: make test T='%s'\n", current);
    } else {
        printf("PASS: %s\n", current);
    }
    fflush(stdout);
}

static inline char *path_of(const char *name)
{
    static char buf[4][512];
    static int n;
    char *p = buf[n++ % 4];
    snprintf(p, 512, "%s/%s", test_dir, name);
    return p;
}

static inline mmkv_datum int_datum(int64_t *storage, int64_t v)
{
    *storage = v;
    mmkv_datum d = {MMKV_INTEGER, 8, storage};
    return d;
}

static inline mmkv_datum real_datum(double *storage, double v)
{
    *storage = v;
    mmkv_datum d = {MMKV_FLOAT, 8, storage};
    return d;
}

static inline mmkv_datum text_datum(const char *s)
{
    mmkv_datum d = {MMKV_TEXT, (uint32_t)strlen(s), s};
    return d;
}

static inline mmkv_datum blob_datum(const void *p, uint32_t n)
{
    mmkv_datum d = {MMKV_BLOB, n, p};
    return d;
}

static inline mmkv_conn *open_or_die(const char *path, mmkv_sync sync)
{
    mmkv_open_options options = {.sync = sync};
    mmkv_conn *conn = NULL;
    char *err = NULL;
    int rc = mmkv_open(path, &options, &conn, &err);
    CHECK(rc == MMKV_OK, "open %s: %d %s", path, rc, err ? err : "");
    free(err);
    return conn;
}

/* Looks key up in a fresh snapshot; returns the value's int, -1 if absent, -2 on error. */
static inline int64_t get_int(mmkv_conn *conn, int64_t k)
{
    int64_t ks;
    mmkv_datum key = int_datum(&ks, k);
    mmkv_snapshot snap;
    if (mmkv_snapshot_take(conn, &snap) != MMKV_OK) return -2;
    mmkv_row row;
    int rc = mmkv_get(conn, &snap, &key, &row);
    if (rc == MMKV_NOTFOUND) return -1;
    if (rc != MMKV_OK || row.value.type != MMKV_INTEGER) return -2;
    int64_t v;
    memcpy(&v, row.value.bytes, 8);
    return v;
}

static inline int put_int(mmkv_conn *conn, int64_t k, int64_t v, int mode)
{
    int64_t ks, vs;
    mmkv_datum key = int_datum(&ks, k), value = int_datum(&vs, v);
    return mmkv_put(conn, &key, &value, mode);
}

static inline int del_int(mmkv_conn *conn, int64_t k)
{
    int64_t ks;
    mmkv_datum key = int_datum(&ks, k);
    return mmkv_delete(conn, &key);
}

static inline int commit(mmkv_conn *conn)
{
    int rc = mmkv_txn_prepare(conn);
    if (rc == MMKV_OK) mmkv_txn_commit(conn);
    else mmkv_txn_rollback(conn);
    return rc;
}

static inline int count_rows(mmkv_conn *conn)
{
    mmkv_snapshot snap;
    mmkv_scan *scan;
    mmkv_row row;
    int n = 0, rc;
    if (mmkv_snapshot_take(conn, &snap) != MMKV_OK || mmkv_scan_open(conn, &snap, &scan) != MMKV_OK)
        return -1;
    while ((rc = mmkv_scan_next(scan, &row)) == MMKV_OK) n++;
    mmkv_scan_close(scan);
    return rc == MMKV_NOTFOUND ? n : -1;
}

/* Makes the private directory under base; returns 0 on failure. */
static inline int start_tests_under(const char *base)
{
    snprintf(test_dir, sizeof test_dir, "%s/mmkv-engine-test-XXXXXX", base);
    if (mkdtemp(test_dir)) return 1;
    perror("mkdtemp");
    return 0;
}

static inline int start_tests(void)
{
    return start_tests_under("/tmp");
}

/* For tests that only make images of files and sync a great deal (the simulated power cuts):
** in memory where the machine has a roomy tmpfs, since what reaches the real disk does not matter. */
static inline int start_tests_in_memory(void)
{
    struct statvfs fs;
    int roomy = access("/dev/shm", W_OK) == 0 && statvfs("/dev/shm", &fs) == 0 &&
                (uint64_t)fs.f_bavail * fs.f_frsize >= ((uint64_t)512 << 20);
    return start_tests_under(roomy ? "/dev/shm" : "/tmp");
}

/* Removes the directory; the exit status for main. */
static inline int finish_tests(void)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", test_dir);
    return failures ? 1 : 0;
}

#endif
