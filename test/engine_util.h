/*
** engine_util.h: what the engine's C tests share: the PASS/FAIL protocol of test/run.sh, a private
** directory, and short ways to read and write integer keys.
*/
#ifndef MMKV_ENGINE_UTIL_H
#define MMKV_ENGINE_UTIL_H

#include "mmkv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

static int failures;
static char test_dir[64]; /* made by start_tests() */
static const char *current;
static int current_failed;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond) && !current_failed) {                                                          \
            current_failed = 1;                                                                    \
            printf("FAIL: %s: line %d: %s: ", current, __LINE__, #cond);                           \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

static inline void begin_test(const char *name)
{
    current = name;
    current_failed = 0;
}

static inline void end_test(void)
{
    if (current_failed) failures++;
    else printf("PASS: %s\n", current);
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
