/*
 * bench: mmkv against native SQLite tables, through the same SQL and the same prepared statements.
 *
 * Three table kinds, each in its own database file in a temporary directory:
 *   mmkv         CREATE VIRTUAL TABLE kv USING mmkv(sync=...)
 *   native       CREATE TABLE kv(key PRIMARY KEY NOT NULL, value) WITHOUT ROWID, mmap_size=0
 *   native+mmap  the same table with PRAGMA mmap_size large enough for the whole database
 *
 * Workloads, for each N (16-byte random BLOB keys, 100-byte random BLOB values, fixed seed):
 *   insert          N inserts in one transaction, COMMIT included
 *   lookup (txn)    M point lookups of existing keys, random order, inside one read transaction
 *   lookup (auto)   M point lookups in autocommit (each SELECT its own transaction)
 *   scan            SELECT key, value over the whole table, per row: sqlite3_column_bytes()
 *   update (txn)    M updates of the value of existing keys in one transaction, COMMIT included
 * with M = min(N, --ops). Every read workload is preceded by an untimed scan (warm caches, and a
 * correctness check of every key/value pair through a checksum). Lookups check the value they
 * find byte for byte, updates check that they changed one row, counts are checked; any mismatch
 * makes the exit status 1.
 *
 * Two further sections follow the table (each skippable):
 *   lookups while another process writes (--no-concurrent): at the largest N, for mmkv and for
 *     native+mmap (both WAL, each in its own database file): the table is built, every connection
 *     is closed, then a child is forked that opens its own connection and loops BEGIN IMMEDIATE,
 *     100 INSERT OR REPLACE of random existing keys, COMMIT (busy_timeout 10 s) until the parent
 *     closes a pipe. The parent (its own connection, opened after the fork) times random point
 *     lookups one by one, in autocommit and in read transactions of 1000 lookups, first with the
 *     writer waiting (idle), then with it writing; it reports ns/op, p50/p99/max latency, lookups
 *     slower than 10 ms ("blocked"), and the writer's commits during the measurement (counted in
 *     memory shared with the child). Before the fork the files are synced (syncfs), before the
 *     timings one untimed pass of lookups warms the new connection. Lookups must find the inserted
 *     or the writer's value; the row count is checked after the writer stopped.
 *   commit cost (--no-commit-cost): transactions of 1, 10 and 1000 INSERT OR REPLACE of random
 *     existing keys (WAL, --commit-n rows) for mmkv sync=full|normal|off against native+mmap with
 *     PRAGMA synchronous=FULL|NORMAL|OFF (mmkv's database gets the same synchronous); µs per
 *     transaction, BEGIN to COMMIT. Afterwards every row is checked against the values written.
 *
 *   build/bench [--n 100000,1000000] [--ops 1000000] [--sync full|normal|off]
 *               [--journal wal] [--synchronous LEVEL] [--cache-size C] [--mmap-size BYTES]
 *               [--dir DIR] [--seed S] [--no-table] [--no-concurrent] [--no-commit-cost]
 *               [--concurrent-ops M] [--commit-n N] [--commit-txns T]
 */
#include <sqlite3.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int sqlite3_mmkv_init(sqlite3 *, char **, const sqlite3_api_routines *);

#define KEY_LEN 16
#define VALUE_LEN 100
#define POOL_SPAN (1u << 20) /* value offsets into the pool: 20 bits */
#define POOL_BYTES (POOL_SPAN + VALUE_LEN)
#define MAX_NS 16

enum { KIND_MMKV, KIND_NATIVE, KIND_NATIVE_MMAP, NKINDS };
enum { W_INSERT, W_LOOKUP_TXN, W_LOOKUP_AUTO, W_SCAN, W_UPDATE, NWORK };

static const char *const kind_names[NKINDS] = {"mmkv", "native", "native+mmap"};
static const char *const kind_files[NKINDS] = {"mmkv", "native", "nativemmap"};
static const char *const work_names[NWORK] = {"insert (1 txn)", "lookup (1 txn)",
                                              "lookup (autocommit)", "full scan", "update (1 txn)"};

struct options {
    size_t ns[MAX_NS];
    int nn;
    size_t max_ops;
    const char *dir;
    const char *sync;
    const char *journal;
    const char *synchronous;
    long long mmap_size;
    long long cache_size;
    int cache_set;
    uint64_t seed;
    int no_table, no_concurrent, no_commit_cost;
    size_t
        concurrent_ops; /* lookups per measurement of the concurrent section: min(N, --ops, this) */
    size_t commit_n;    /* table size of the commit-cost section */
    size_t commit_txns; /* timed transactions of 1 and 10 rows; a tenth of it of 1000 rows */
};

/* The data of one N: keys, value choice, the orders of the lookups and updates. */
struct data {
    size_t n, m;
    unsigned char *keys;    /* n * KEY_LEN */
    uint32_t *perm[3];      /* m row numbers each: lookups in a txn, autocommit, updates */
    unsigned char *updated; /* n flags: row updated by the update workload */
    uint64_t sum_before;    /* checksum of all rows before the updates */
    uint64_t sum_after;     /* ... and after */
};

struct stmts {
    sqlite3_stmt *begin, *commit, *insert, *lookup, *scan, *update, *count;
};

struct scan_result {
    size_t rows, bad_rows;
    uint64_t bytes, checksum;
};

static char g_dir[PATH_MAX];
static int g_made_dir;
static char g_prefix[64];
static unsigned char g_pool[POOL_BYTES];
static uint64_t g_value_seed;
static long long g_mismatches;

/* The writer child of the concurrent section: its pid in the parent (killed by cleanup), set in
 * the child itself, and the counters it shares with the parent. */
struct shared_counters {
    atomic_ullong commits, rows;
};
static pid_t g_child;
static int g_is_child;
static struct shared_counters *g_shared;

/* Effective settings, as SQLite reports them. */
static char g_journal_eff[NKINDS][32];
static long long g_mmap_eff = -1;

/* ---- utilities ---------------------------------------------------------------------------- */

static void remove_files(const char *name_prefix)
{
    DIR *dir = opendir(g_dir);
    if (!dir) return;
    size_t len = strlen(name_prefix);
    struct dirent *e;
    char path[PATH_MAX + 256];
    while ((e = readdir(dir)) != NULL) {
        if (strncmp(e->d_name, name_prefix, len) != 0) continue;
        snprintf(path, sizeof path, "%s/%s", g_dir, e->d_name);
        if (unlink(path) != 0)
            fprintf(stderr, "bench: cannot remove %s: %s\n", path, strerror(errno));
    }
    closedir(dir);
}

static double allocated_mb(const char *name_prefix)
{
    DIR *dir = opendir(g_dir);
    if (!dir) return 0;
    size_t len = strlen(name_prefix);
    struct dirent *e;
    struct stat st;
    char path[PATH_MAX + 256];
    double total = 0;
    while ((e = readdir(dir)) != NULL) {
        if (strncmp(e->d_name, name_prefix, len) != 0) continue;
        snprintf(path, sizeof path, "%s/%s", g_dir, e->d_name);
        if (lstat(path, &st) == 0) total += (double)st.st_blocks * 512.0;
    }
    closedir(dir);
    return total / (1024.0 * 1024.0);
}

static void cleanup(void)
{
    if (g_is_child) return;
    if (g_child > 0) {
        kill(g_child, SIGKILL);
        waitpid(g_child, NULL, 0);
        g_child = 0;
    }
    if (!g_dir[0]) return;
    remove_files(g_prefix);
    if (g_made_dir && rmdir(g_dir) != 0)
        fprintf(stderr, "bench: cannot remove %s: %s\n", g_dir, strerror(errno));
    g_dir[0] = 0;
}

__attribute__((format(printf, 1, 2))) _Noreturn static void die(const char *fmt, ...)
{
    va_list ap;
    if (!g_is_child) fflush(stdout);
    fprintf(stderr, g_is_child ? "bench (writer process): " : "bench: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    if (g_is_child) _exit(2); /* the files and the stdout buffer belong to the parent */
    cleanup();
    exit(2);
}

static void mismatch(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void mismatch(const char *fmt, ...)
{
    va_list ap;
    g_mismatches++;
    fflush(stdout);
    fprintf(stderr, "bench: MISMATCH: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t splitmix64(uint64_t *state)
{
    return mix64(*state += 0x9e3779b97f4a7c15ULL);
}

static uint64_t load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void *xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p) die("out of memory (%zu bytes)", size);
    return p;
}

static const unsigned char *key_of(const struct data *d, size_t i)
{
    return d->keys + i * KEY_LEN;
}

/* Row i's value: 100 random bytes from the pool; version 0 as inserted, 1 after the update. */
static const unsigned char *value_of(size_t i, unsigned version)
{
    uint64_t h = mix64(g_value_seed ^ (((uint64_t)i << 1) | version));
    return g_pool + (size_t)(h >> 44);
}

static uint64_t row_hash(const unsigned char *k, const unsigned char *v)
{
    uint64_t h = mix64(load64(k) ^ 0x243f6a8885a308d3ULL);
    h = mix64(h ^ load64(k + 8));
    h = mix64(h ^ load64(v));
    h = mix64(h ^ load64(v + 46));
    return mix64(h ^ load64(v + VALUE_LEN - 8));
}

/* ---- SQLite helpers ----------------------------------------------------------------------- */

static void exec_sql(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", err ? err : sqlite3_errmsg(db));
        sqlite3_free(err);
        die("%s: %s", sql, msg);
    }
}

/* The first column of the first row of sql, as text, into out. */
static void query_text(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        die("%s: %s", sql, sqlite3_errmsg(db));
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(out, outlen, "%s", t ? (const char *)t : "NULL");
    } else if (rc == SQLITE_DONE) {
        snprintf(out, outlen, "%s", "");
    } else {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(db));
        sqlite3_finalize(st);
        die("%s: %s", sql, msg);
    }
    sqlite3_finalize(st);
}

static sqlite3_stmt *prepare(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK)
        die("prepare %s: %s", sql, sqlite3_errmsg(db));
    return st;
}

static void step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) die("%s: %s", sqlite3_sql(st), sqlite3_errmsg(sqlite3_db_handle(st)));
    sqlite3_reset(st);
}

/* ---- workloads ---------------------------------------------------------------------------- */

static double run_insert(const struct stmts *s, const struct data *d)
{
    uint64_t t0 = now_ns();
    step_done(s->begin);
    for (size_t i = 0; i < d->n; i++) {
        sqlite3_bind_blob(s->insert, 1, key_of(d, i), KEY_LEN, SQLITE_STATIC);
        sqlite3_bind_blob(s->insert, 2, value_of(i, 0), VALUE_LEN, SQLITE_STATIC);
        step_done(s->insert);
    }
    step_done(s->commit);
    uint64_t t1 = now_ns();
    return (double)(t1 - t0) / (double)d->n;
}

static double run_lookups(const struct stmts *s, const struct data *d, const uint32_t *perm,
                          int in_txn, const char *what)
{
    size_t missing = 0, wrong = 0;
    uint64_t t0 = now_ns();
    if (in_txn) step_done(s->begin);
    for (size_t j = 0; j < d->m; j++) {
        size_t i = perm[j];
        sqlite3_bind_blob(s->lookup, 1, key_of(d, i), KEY_LEN, SQLITE_STATIC);
        int rc = sqlite3_step(s->lookup);
        if (rc == SQLITE_ROW) {
            const void *v = sqlite3_column_blob(s->lookup, 0);
            int len = sqlite3_column_bytes(s->lookup, 0);
            if (len != VALUE_LEN || memcmp(v, value_of(i, 0), VALUE_LEN) != 0) wrong++;
        } else if (rc == SQLITE_DONE) {
            missing++;
        } else {
            die("lookup: %s", sqlite3_errmsg(sqlite3_db_handle(s->lookup)));
        }
        sqlite3_reset(s->lookup);
    }
    if (in_txn) step_done(s->commit);
    uint64_t t1 = now_ns();
    if (missing || wrong)
        mismatch("%s: %zu of %zu keys not found, %zu wrong values", what, missing, d->m, wrong);
    return (double)(t1 - t0) / (double)d->m;
}

/* The timed scan: rows and the sum of the key and value lengths. */
static double run_scan(const struct stmts *s, struct scan_result *r)
{
    size_t rows = 0;
    uint64_t bytes = 0;
    int rc;
    uint64_t t0 = now_ns();
    while ((rc = sqlite3_step(s->scan)) == SQLITE_ROW) {
        bytes += (uint64_t)sqlite3_column_bytes(s->scan, 0);
        bytes += (uint64_t)sqlite3_column_bytes(s->scan, 1);
        rows++;
    }
    uint64_t t1 = now_ns();
    if (rc != SQLITE_DONE) die("scan: %s", sqlite3_errmsg(sqlite3_db_handle(s->scan)));
    sqlite3_reset(s->scan);
    r->rows = rows;
    r->bytes = bytes;
    return rows ? (double)(t1 - t0) / (double)rows : 0;
}

/* The untimed scan before each read workload: warms caches and checks every row. */
static void verify_scan(const struct stmts *s, const struct data *d, uint64_t expect,
                        const char *what)
{
    size_t rows = 0, bad = 0;
    uint64_t sum = 0;
    int rc;
    while ((rc = sqlite3_step(s->scan)) == SQLITE_ROW) {
        const unsigned char *k = sqlite3_column_blob(s->scan, 0);
        int klen = sqlite3_column_bytes(s->scan, 0);
        const unsigned char *v = sqlite3_column_blob(s->scan, 1);
        int vlen = sqlite3_column_bytes(s->scan, 1);
        if (klen == KEY_LEN && vlen == VALUE_LEN && k && v)
            sum += row_hash(k, v);
        else
            bad++;
        rows++;
    }
    if (rc != SQLITE_DONE) die("scan: %s", sqlite3_errmsg(sqlite3_db_handle(s->scan)));
    sqlite3_reset(s->scan);
    if (rows != d->n || bad || sum != expect)
        mismatch("%s: %zu rows (expected %zu), %zu with wrong lengths, checksum %s", what, rows,
                 d->n, bad, sum == expect ? "ok" : "differs");
}

static double run_updates(const struct stmts *s, const struct data *d)
{
    sqlite3 *db = sqlite3_db_handle(s->update);
    size_t unchanged = 0;
    uint64_t t0 = now_ns();
    step_done(s->begin);
    for (size_t j = 0; j < d->m; j++) {
        size_t i = d->perm[2][j];
        sqlite3_bind_blob(s->update, 1, value_of(i, 1), VALUE_LEN, SQLITE_STATIC);
        sqlite3_bind_blob(s->update, 2, key_of(d, i), KEY_LEN, SQLITE_STATIC);
        step_done(s->update);
        if (sqlite3_changes(db) != 1) unchanged++;
    }
    step_done(s->commit);
    uint64_t t1 = now_ns();
    if (unchanged)
        mismatch("update: %zu of %zu updates did not change exactly one row", unchanged, d->m);
    return (double)(t1 - t0) / (double)d->m;
}

static void check_count(const struct stmts *s, const struct data *d, const char *what)
{
    int rc = sqlite3_step(s->count);
    if (rc != SQLITE_ROW) die("count: %s", sqlite3_errmsg(sqlite3_db_handle(s->count)));
    sqlite3_int64 c = sqlite3_column_int64(s->count, 0);
    sqlite3_reset(s->count);
    if (c != (sqlite3_int64)d->n)
        mismatch("%s: count(*) = %lld, expected %zu", what, (long long)c, d->n);
}

/* ---- one table kind, one N ---------------------------------------------------------------- */

static void configure(sqlite3 *db, int kind, const struct options *o)
{
    char sql[256], out[64];
    snprintf(sql, sizeof sql, "PRAGMA journal_mode=%s", o->journal);
    query_text(db, sql, g_journal_eff[kind], sizeof g_journal_eff[kind]);
    snprintf(sql, sizeof sql, "PRAGMA synchronous=%s", o->synchronous);
    exec_sql(db, sql);
    if (o->cache_set) {
        snprintf(sql, sizeof sql, "PRAGMA cache_size=%lld", o->cache_size);
        exec_sql(db, sql);
    }
    if (kind == KIND_MMKV) {
        snprintf(sql, sizeof sql, "CREATE VIRTUAL TABLE kv USING mmkv(sync=%s)", o->sync);
        exec_sql(db, sql);
        return;
    }
    snprintf(sql, sizeof sql, "PRAGMA mmap_size=%lld", kind == KIND_NATIVE ? 0LL : o->mmap_size);
    exec_sql(db, sql);
    query_text(db, "PRAGMA mmap_size", out, sizeof out);
    if (kind == KIND_NATIVE && strtoll(out, NULL, 10) != 0)
        die("PRAGMA mmap_size=0 did not take (%s)", out);
    if (kind == KIND_NATIVE_MMAP) g_mmap_eff = strtoll(out, NULL, 10);
    exec_sql(db, "CREATE TABLE kv(key PRIMARY KEY NOT NULL, value) WITHOUT ROWID");
}

/* The lookup must use the key: the mmkv plan idxNum 1, the native primary key. */
static void check_plan(sqlite3 *db, int kind, int print)
{
    sqlite3_stmt *st = prepare(db, "EXPLAIN QUERY PLAN SELECT value FROM kv WHERE key=?1");
    char plan[512] = "";
    size_t used = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 3);
        int w = snprintf(plan + used, sizeof plan - used, "%s%s", used ? "; " : "",
                         t ? (const char *)t : "");
        if (w > 0 && (size_t)w < sizeof plan - used) used += (size_t)w;
    }
    sqlite3_finalize(st);
    int ok =
        kind == KIND_MMKV ? strstr(plan, "INDEX 1") != NULL : strstr(plan, "PRIMARY KEY") != NULL;
    if (!ok)
        fprintf(stderr, "bench: warning: %s lookup plan does not use the key: %s\n",
                kind_names[kind], plan);
    if (print) printf("  plan %-12s %s\n", kind_names[kind], plan);
}

static void progress(const char *kind, size_t n, const char *what)
{
    if (isatty(2)) fprintf(stderr, "\r\033[K  N=%zu %s: %s", n, kind, what);
}

static void run_kind(const struct options *o, int kind, const struct data *d, double ns[NWORK],
                     double *disk_mb)
{
    char name[128], path[PATH_MAX + 256];
    snprintf(name, sizeof name, "%s%s.db", g_prefix, kind_files[kind]);
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    int wal = 0;

    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK)
        die("open %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
    configure(db, kind, o);
    wal = strcasecmp(g_journal_eff[kind], "wal") == 0;

    struct stmts s;
    s.begin = prepare(db, "BEGIN");
    s.commit = prepare(db, "COMMIT");
    s.insert = prepare(db, "INSERT INTO kv(key, value) VALUES(?1, ?2)");
    s.lookup = prepare(db, "SELECT value FROM kv WHERE key=?1");
    s.scan = prepare(db, "SELECT key, value FROM kv");
    s.update = prepare(db, "UPDATE kv SET value=?1 WHERE key=?2");
    s.count = prepare(db, "SELECT count(*) FROM kv");
    check_plan(db, kind, 0);

    const char *k = kind_names[kind];
    struct scan_result r;

    progress(k, d->n, "insert");
    ns[W_INSERT] = run_insert(&s, d);
    check_count(&s, d, "after insert");
    if (wal) exec_sql(db, "PRAGMA wal_checkpoint(TRUNCATE)");

    progress(k, d->n, "lookups in a transaction");
    verify_scan(&s, d, d->sum_before, "scan after insert");
    ns[W_LOOKUP_TXN] = run_lookups(&s, d, d->perm[0], 1, "lookup (txn)");

    progress(k, d->n, "lookups in autocommit");
    verify_scan(&s, d, d->sum_before, "scan before autocommit lookups");
    ns[W_LOOKUP_AUTO] = run_lookups(&s, d, d->perm[1], 0, "lookup (autocommit)");

    progress(k, d->n, "scan");
    verify_scan(&s, d, d->sum_before, "scan before scan");
    ns[W_SCAN] = run_scan(&s, &r);
    if (r.rows != d->n || r.bytes != (uint64_t)d->n * (KEY_LEN + VALUE_LEN))
        mismatch("timed scan: %zu rows (expected %zu), %" PRIu64 " bytes", r.rows, d->n, r.bytes);

    progress(k, d->n, "updates");
    ns[W_UPDATE] = run_updates(&s, d);
    if (wal) exec_sql(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    verify_scan(&s, d, d->sum_after, "scan after updates");
    check_count(&s, d, "after updates");
    progress(k, d->n, "done");

    sqlite3_stmt **all[] = {&s.begin, &s.commit, &s.insert, &s.lookup,
                            &s.scan,  &s.update, &s.count};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        sqlite3_finalize(*all[i]);
        *all[i] = NULL;
    }
    if (sqlite3_close(db) != SQLITE_OK) die("close %s: %s", path, sqlite3_errmsg(db));
    *disk_mb = allocated_mb(name);
    remove_files(name);
}

/* ---- data --------------------------------------------------------------------------------- */

static void make_data(struct data *d, size_t n, size_t max_ops, uint64_t seed)
{
    uint64_t state = seed ^ ((uint64_t)n * 0x9e3779b97f4a7c15ULL);
    d->n = n;
    d->m = n < max_ops ? n : max_ops;
    d->keys = xmalloc(n * KEY_LEN);
    for (size_t i = 0; i < n; i++) {
        uint64_t a = splitmix64(&state), b = splitmix64(&state);
        memcpy(d->keys + i * KEY_LEN, &a, 8);
        memcpy(d->keys + i * KEY_LEN + 8, &b, 8);
    }
    uint32_t *idx = xmalloc(n * sizeof *idx);
    for (int p = 0; p < 3; p++) {
        for (size_t i = 0; i < n; i++)
            idx[i] = (uint32_t)i;
        for (size_t j = 0; j < d->m; j++) { /* partial Fisher-Yates: m distinct rows */
            size_t r = j + (size_t)(splitmix64(&state) % (n - j));
            uint32_t t = idx[j];
            idx[j] = idx[r];
            idx[r] = t;
        }
        d->perm[p] = xmalloc(d->m * sizeof *d->perm[p]);
        memcpy(d->perm[p], idx, d->m * sizeof *idx);
    }
    free(idx);
    d->updated = calloc(n ? n : 1, 1);
    if (!d->updated) die("out of memory");
    for (size_t j = 0; j < d->m; j++)
        d->updated[d->perm[2][j]] = 1;
    d->sum_before = d->sum_after = 0;
    for (size_t i = 0; i < n; i++) {
        d->sum_before += row_hash(key_of(d, i), value_of(i, 0));
        d->sum_after += row_hash(key_of(d, i), value_of(i, d->updated[i]));
    }
}

static void free_data(struct data *d)
{
    free(d->keys);
    for (int p = 0; p < 3; p++)
        free(d->perm[p]);
    free(d->updated);
    memset(d, 0, sizeof *d);
}

/* ---- sections after the table: shared helpers -------------------------------------------- */

#define UPSERT_SQL "INSERT OR REPLACE INTO kv(key, value) VALUES(?1, ?2)"
#define BUSY_TIMEOUT_MS 10000
#define SLOW_NS 10000000ull /* a lookup slower than 10 ms counts as blocked */
#define CONC_BATCH 1000     /* lookups per read transaction */
#define WRITER_ROWS 100     /* upserts per writer transaction */

/* A connection to path in WAL mode with the given synchronous level; native+mmap gets mmap_size. */
static sqlite3 *open_wal(const char *path, int kind, const char *synchronous,
                         const struct options *o)
{
    sqlite3 *db = NULL;
    char sql[128], out[32];
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK)
        die("open %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    query_text(db, "PRAGMA journal_mode=WAL", out, sizeof out);
    if (strcasecmp(out, "wal") != 0)
        die("%s: PRAGMA journal_mode=WAL did not take (%s)", path, out);
    snprintf(sql, sizeof sql, "PRAGMA synchronous=%s", synchronous);
    exec_sql(db, sql);
    if (o->cache_set) {
        snprintf(sql, sizeof sql, "PRAGMA cache_size=%lld", o->cache_size);
        exec_sql(db, sql);
    }
    if (kind == KIND_NATIVE_MMAP) {
        snprintf(sql, sizeof sql, "PRAGMA mmap_size=%lld", o->mmap_size);
        exec_sql(db, sql);
    }
    return db;
}

static void create_kv(sqlite3 *db, int kind, const char *sync)
{
    char sql[128];
    if (kind == KIND_MMKV)
        snprintf(sql, sizeof sql, "CREATE VIRTUAL TABLE kv USING mmkv(sync=%s)", sync);
    else
        snprintf(sql, sizeof sql, "CREATE TABLE kv(key PRIMARY KEY NOT NULL, value) WITHOUT ROWID");
    exec_sql(db, sql);
}

static void finalize_stmts(struct stmts *s)
{
    sqlite3_stmt **all[] = {&s->begin, &s->commit, &s->insert, &s->lookup,
                            &s->scan,  &s->update, &s->count};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        sqlite3_finalize(*all[i]);
        *all[i] = NULL;
    }
}

static void close_db(sqlite3 *db, const char *path)
{
    if (sqlite3_close(db) != SQLITE_OK) die("close %s: %s", path, sqlite3_errmsg(db));
}

/* Untimed: write the directory's dirty pages out now (syncfs of its file system). */
static void flush_dir(void)
{
    int fd = open(g_dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) die("open %s: %s", g_dir, strerror(errno));
    if (syncfs(fd) != 0) die("syncfs %s: %s", g_dir, strerror(errno));
    close(fd);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile of m sorted latencies. */
static uint32_t quantile(const uint32_t *sorted, size_t m, double q)
{
    size_t i = (size_t)(q * (double)m);
    return sorted[i < m ? i : m - 1];
}

/* ---- lookups while another process writes ------------------------------------------------- */

struct conc_stats {
    double ns;                  /* mean ns per lookup, timing included */
    uint32_t p50, p99;          /* ns */
    uint64_t max;               /* ns */
    size_t slow;                /* lookups slower than SLOW_NS */
    size_t fresh;               /* lookups that found the writer's value */
    unsigned long long commits; /* writer commits during the measurement */
    double seconds;
};

/* The writer child: its own connection, upsert transactions until the parent closes go_fd. */
_Noreturn static void writer_main(const char *path, int kind, const struct options *o,
                                  const struct data *d, int go_fd, int ready_fd)
{
    sqlite3 *db = open_wal(path, kind, o->synchronous, o);
    sqlite3_stmt *begin = prepare(db, "BEGIN IMMEDIATE");
    sqlite3_stmt *commit = prepare(db, "COMMIT");
    sqlite3_stmt *upsert = prepare(db, UPSERT_SQL);
    char c = 'r';
    if (write(ready_fd, &c, 1) != 1) die("cannot signal the parent: %s", strerror(errno));
    close(ready_fd);
    if (read(go_fd, &c, 1) == 1) { /* 0: the parent closed the pipe without starting us */
        uint64_t state = o->seed ^ 0x7772697465720000ull;
        struct pollfd pfd = {.fd = go_fd, .events = POLLIN};
        for (;;) {
            int r = poll(&pfd, 1, 0);
            if (r > 0 || (r < 0 && errno != EINTR)) break; /* the parent closed the pipe: stop */
            step_done(begin);
            for (int k = 0; k < WRITER_ROWS; k++) {
                size_t i = (size_t)(splitmix64(&state) % d->n);
                sqlite3_bind_blob(upsert, 1, key_of(d, i), KEY_LEN, SQLITE_STATIC);
                sqlite3_bind_blob(upsert, 2, value_of(i, 1), VALUE_LEN, SQLITE_STATIC);
                step_done(upsert);
                if (sqlite3_changes(db) != 1)
                    die("upsert changed %d rows, not 1", sqlite3_changes(db));
            }
            step_done(commit);
            atomic_fetch_add(&g_shared->commits, 1);
            atomic_fetch_add(&g_shared->rows, WRITER_ROWS);
        }
    }
    sqlite3_finalize(begin);
    sqlite3_finalize(commit);
    sqlite3_finalize(upsert);
    if (sqlite3_close(db) != SQLITE_OK) die("close: %s", sqlite3_errmsg(db));
    _exit(0);
}

/* m lookups of perm, each timed on its own; batch 0: autocommit, else read transactions of batch
 * lookups (BEGIN and COMMIT count towards the first and the last lookup of each). */
static void conc_lookups(const struct stmts *s, const struct data *d, const uint32_t *perm,
                         size_t m, size_t batch, uint32_t *lat, struct conc_stats *r,
                         const char *what)
{
    size_t missing = 0, wrong = 0, fresh = 0, slow = 0;
    uint64_t max = 0;
    unsigned long long c0 = atomic_load(&g_shared->commits);
    uint64_t start = now_ns(), prev = start;
    for (size_t j = 0; j < m; j++) {
        size_t i = perm[j];
        if (batch && j % batch == 0) step_done(s->begin);
        sqlite3_bind_blob(s->lookup, 1, key_of(d, i), KEY_LEN, SQLITE_STATIC);
        int rc = sqlite3_step(s->lookup);
        if (rc == SQLITE_ROW) {
            const void *v = sqlite3_column_blob(s->lookup, 0);
            int len = sqlite3_column_bytes(s->lookup, 0);
            if (len != VALUE_LEN)
                wrong++;
            else if (memcmp(v, value_of(i, 1), VALUE_LEN) == 0)
                fresh++;
            else if (memcmp(v, value_of(i, 0), VALUE_LEN) != 0)
                wrong++;
        } else if (rc == SQLITE_DONE) {
            missing++;
        } else {
            die("%s: lookup: %s", what, sqlite3_errmsg(sqlite3_db_handle(s->lookup)));
        }
        sqlite3_reset(s->lookup);
        if (batch && ((j + 1) % batch == 0 || j + 1 == m)) step_done(s->commit);
        uint64_t t = now_ns(), dt = t - prev;
        prev = t;
        lat[j] = dt > UINT32_MAX ? UINT32_MAX : (uint32_t)dt;
        if (dt > max) max = dt;
        if (dt > SLOW_NS) slow++;
    }
    unsigned long long c1 = atomic_load(&g_shared->commits);
    if (missing || wrong)
        mismatch("%s: %zu of %zu keys not found, %zu wrong values", what, missing, m, wrong);
    qsort(lat, m, sizeof *lat, cmp_u32);
    r->ns = (double)(prev - start) / (double)m;
    r->seconds = (double)(prev - start) / 1e9;
    r->p50 = quantile(lat, m, 0.50);
    r->p99 = quantile(lat, m, 0.99);
    r->max = max;
    r->slow = slow;
    r->fresh = fresh;
    r->commits = c1 - c0;
}

/* stats[mode][writing]: mode 0 autocommit, 1 read transactions; writing 0 idle, 1 writer on. */
static void run_concurrent_kind(const struct options *o, int kind, const struct data *d, size_t m,
                                struct conc_stats stats[2][2], unsigned long long *writer_rows)
{
    char name[128], path[PATH_MAX + 256], what[128];
    snprintf(name, sizeof name, "%sconc-%s.db", g_prefix, kind_files[kind]);
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    const char *k = kind_names[kind];

    /* Build the table, then close every connection: nothing SQLite or mmkv holds crosses fork. */
    progress(k, d->n, "concurrent: insert");
    sqlite3 *db = open_wal(path, kind, o->synchronous, o);
    create_kv(db, kind, o->sync);
    struct stmts s = {0};
    s.begin = prepare(db, "BEGIN");
    s.commit = prepare(db, "COMMIT");
    s.insert = prepare(db, "INSERT INTO kv(key, value) VALUES(?1, ?2)");
    s.count = prepare(db, "SELECT count(*) FROM kv");
    run_insert(&s, d);
    snprintf(what, sizeof what, "concurrent %s: after insert", k);
    check_count(&s, d, what);
    exec_sql(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    finalize_stmts(&s);
    close_db(db, path);
    flush_dir(); /* the kernel's writeback of the new files is not to fall into the timings */

    atomic_store(&g_shared->commits, 0);
    atomic_store(&g_shared->rows, 0);
    int go[2], ready[2];
    if (pipe(go) != 0 || pipe(ready) != 0) die("pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        g_is_child = 1;
        close(go[1]);
        close(ready[0]);
        writer_main(path, kind, o, d, go[0], ready[1]);
    }
    g_child = pid;
    close(go[0]);
    close(ready[1]);
    char c;
    if (read(ready[0], &c, 1) != 1) die("concurrent %s: the writer process failed to start", k);
    close(ready[0]);

    /* The parent's own connection, opened after the fork. */
    db = open_wal(path, kind, o->synchronous, o);
    s.begin = prepare(db, "BEGIN");
    s.commit = prepare(db, "COMMIT");
    s.lookup = prepare(db, "SELECT value FROM kv WHERE key=?1");
    s.scan = prepare(db, "SELECT key, value FROM kv");
    s.count = prepare(db, "SELECT count(*) FROM kv");
    check_plan(db, kind, 0);
    snprintf(what, sizeof what, "concurrent %s: scan before lookups", k);
    verify_scan(&s, d, d->sum_before, what);
    /* Untimed: one pass of the lookups, so that the first timed pass does not pay for faulting
     * in the pages of a connection opened just now. */
    snprintf(what, sizeof what, "concurrent %s: warm-up lookups", k);
    run_lookups(&s, d, d->perm[0], 1, what);

    uint32_t *lat = xmalloc(m * sizeof *lat);
    for (int writing = 0; writing < 2; writing++) {
        if (writing) {
            if (write(go[1], "g", 1) != 1)
                die("concurrent %s: cannot start the writer: %s", k, strerror(errno));
            uint64_t t0 = now_ns();
            while (atomic_load(&g_shared->commits) == 0) { /* the writer is under way */
                int status;
                if (waitpid(pid, &status, WNOHANG) == pid) {
                    g_child = 0;
                    die("concurrent %s: the writer process exited (status %d)", k, status);
                }
                if (now_ns() - t0 > 30000000000ull)
                    die("concurrent %s: the writer made no commit in 30 s", k);
                usleep(1000);
            }
        }
        for (int mode = 0; mode < 2; mode++) {
            snprintf(what, sizeof what, "concurrent %s: lookups (%s, %s)", k,
                     mode ? "read txns" : "autocommit", writing ? "writer on" : "idle");
            progress(k, d->n, what + strlen("concurrent ") + strlen(k) + 2);
            conc_lookups(&s, d, d->perm[mode ? 0 : 1], m, mode ? CONC_BATCH : 0, lat,
                         &stats[mode][writing], what);
            if (!writing && stats[mode][writing].fresh)
                mismatch("%s: %zu values of a writer that has not started", what,
                         stats[mode][writing].fresh);
        }
    }
    free(lat);

    /* Stop the writer: it sees the pipe close after its current transaction. */
    close(go[1]);
    int status;
    if (waitpid(pid, &status, 0) != pid) die("waitpid: %s", strerror(errno));
    g_child = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        mismatch("concurrent %s: the writer process failed (status %d)", k, status);
    *writer_rows = atomic_load(&g_shared->rows);
    snprintf(what, sizeof what, "concurrent %s: after the writer", k);
    check_count(&s, d, what);
    finalize_stmts(&s);
    close_db(db, path);
    remove_files(name);
}

static void run_concurrent(const struct options *o, size_t n)
{
    static const int kinds[2] = {KIND_MMKV, KIND_NATIVE_MMAP};
    struct data d;
    make_data(&d, n, o->max_ops < o->concurrent_ops ? o->max_ops : o->concurrent_ops, o->seed);
    struct conc_stats st[2][2][2]; /* [kind][mode][writing] */
    unsigned long long rows[2];
    for (int k = 0; k < 2; k++)
        run_concurrent_kind(o, kinds[k], &d, d.m, st[k], &rows[k]);
    if (isatty(2)) fprintf(stderr, "\r\033[K");

    printf("\nlookups while another process writes: N=%zu, %zu random lookups per row, "
           "journal_mode=wal, mmkv sync=%s, synchronous=%s\n",
           n, d.m, o->sync, o->synchronous);
    printf("writer: a forked process with its own connection looping BEGIN IMMEDIATE; %d x "
           "INSERT OR REPLACE\n        (random existing key); COMMIT, busy_timeout %d ms; "
           "'idle' = the writer process waits\n",
           WRITER_ROWS, BUSY_TIMEOUT_MS);
    printf("each lookup timed on its own (clock included); blocked = slower than %llu ms; "
           "read txn = BEGIN; %d lookups; COMMIT\n",
           SLOW_NS / 1000000, CONC_BATCH);
    printf("\n%-12s %-12s %-8s | %8s %8s %8s %9s %7s | %8s %9s %7s\n", "lookups", "table", "writer",
           "ns/op", "p50 ns", "p99 ns", "max us", "blocked", "commits", "commits/s", "new val");
    printf("-------------------------------------------------------------------------------"
           "---------------------------\n");
    for (int mode = 0; mode < 2; mode++) {
        for (int writing = 0; writing < 2; writing++) {
            for (int k = 0; k < 2; k++) {
                const struct conc_stats *c = &st[k][mode][writing];
                printf("%-12s %-12s %-8s | %8.1f %8" PRIu32 " %8" PRIu32 " %9.1f %7zu | ",
                       mode ? "read txn" : "autocommit", kind_names[kinds[k]],
                       writing ? "writing" : "idle", c->ns, c->p50, c->p99, (double)c->max / 1000.0,
                       c->slow);
                if (writing)
                    printf("%8llu %9.0f %6.1f%%\n", c->commits,
                           c->seconds > 0 ? (double)c->commits / c->seconds : 0,
                           100.0 * (double)c->fresh / (double)d.m);
                else
                    printf("%8s %9s %7s\n", "-", "-", "-");
            }
            double mm = st[0][mode][writing].ns, nat = st[1][mode][writing].ns;
            printf("%-12s %-12s %-8s | %7.2fx\n", "", "mmap/mmkv", writing ? "writing" : "idle",
                   mm > 0 ? nat / mm : 0);
        }
    }
    for (int k = 0; k < 2; k++) {
        size_t blocked = 0;
        for (int mode = 0; mode < 2; mode++)
            blocked += st[k][mode][1].slow;
        printf("%s%s: writer committed %llu rows in all; %zu lookups blocked > %llu ms while "
               "it wrote",
               k ? "; " : "", kind_names[kinds[k]], rows[k], blocked, SLOW_NS / 1000000);
    }
    printf("\n");
    fflush(stdout);
    free_data(&d);
}

/* ---- commit cost -------------------------------------------------------------------------- */

static const char *const sync_levels[3] = {"full", "normal", "off"};
static const size_t commit_rows[3] = {1, 10, 1000};

struct commit_cell {
    double mean_us, p50_us;
    size_t txns;
};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static size_t commit_txns(const struct options *o, int c)
{
    size_t t = commit_rows[c] >= 1000 ? o->commit_txns / 10 : o->commit_txns;
    return t ? t : 1;
}

static void run_commit_kind(const struct options *o, int kind, int level, const struct data *d,
                            struct commit_cell cells[3])
{
    char name[128], path[PATH_MAX + 256], what[128];
    const char *lv = sync_levels[level], *k = kind_names[kind];
    snprintf(name, sizeof name, "%scommit-%s-%s.db", g_prefix, kind_files[kind], lv);
    snprintf(path, sizeof path, "%s/%s", g_dir, name);

    snprintf(what, sizeof what, "commit cost %s: insert", lv);
    progress(k, d->n, what);
    sqlite3 *db = open_wal(path, kind, lv, o);
    create_kv(db, kind, lv);
    struct stmts s = {0};
    s.begin = prepare(db, "BEGIN");
    s.commit = prepare(db, "COMMIT");
    s.insert = prepare(db, "INSERT INTO kv(key, value) VALUES(?1, ?2)");
    s.update = prepare(db, UPSERT_SQL);
    s.scan = prepare(db, "SELECT key, value FROM kv");
    s.count = prepare(db, "SELECT count(*) FROM kv");
    run_insert(&s, d);
    snprintf(what, sizeof what, "commit cost %s sync=%s: after insert", k, lv);
    check_count(&s, d, what);
    exec_sql(db, "PRAGMA wal_checkpoint(TRUNCATE)");

    /* Each upsert flips its row between the two versions; expect follows the checksum. */
    unsigned char *ver = calloc(d->n, 1);
    if (!ver) die("out of memory");
    uint64_t expect = d->sum_before;
    size_t unchanged = 0;
    for (int c = 0; c < 3; c++) {
        size_t rows = commit_rows[c], txns = commit_txns(o, c), warm = txns / 20 ? txns / 20 : 1;
        uint64_t *lat = xmalloc(txns * sizeof *lat), total = 0;
        /* The same keys in the same order for both kinds. */
        uint64_t state = o->seed ^ mix64(0xc0331700ull + (uint64_t)level * 16 + (uint64_t)c);
        snprintf(what, sizeof what, "commit cost %s: %zu-row transactions", lv, rows);
        progress(k, d->n, what);
        for (size_t t = 0; t < warm + txns; t++) {
            uint64_t t0 = now_ns();
            step_done(s.begin);
            for (size_t r = 0; r < rows; r++) {
                size_t i = (size_t)(splitmix64(&state) % d->n);
                unsigned v = ver[i] ^ 1u;
                sqlite3_bind_blob(s.update, 1, key_of(d, i), KEY_LEN, SQLITE_STATIC);
                sqlite3_bind_blob(s.update, 2, value_of(i, v), VALUE_LEN, SQLITE_STATIC);
                step_done(s.update);
                if (sqlite3_changes(db) != 1) unchanged++;
                expect += row_hash(key_of(d, i), value_of(i, v));
                expect -= row_hash(key_of(d, i), value_of(i, ver[i]));
                ver[i] = (unsigned char)v;
            }
            step_done(s.commit);
            uint64_t t1 = now_ns();
            if (t >= warm) {
                lat[t - warm] = t1 - t0;
                total += t1 - t0;
            }
        }
        qsort(lat, txns, sizeof *lat, cmp_u64);
        cells[c].txns = txns;
        cells[c].mean_us = (double)total / (double)txns / 1000.0;
        cells[c].p50_us = (double)lat[txns / 2] / 1000.0;
        free(lat);
    }
    free(ver);
    if (unchanged)
        mismatch("commit cost %s sync=%s: %zu upserts did not change exactly one row", k, lv,
                 unchanged);
    snprintf(what, sizeof what, "commit cost %s sync=%s: scan after the upserts", k, lv);
    verify_scan(&s, d, expect, what);
    check_count(&s, d, what);
    finalize_stmts(&s);
    close_db(db, path);
    remove_files(name);
}

static void run_commit_cost(const struct options *o)
{
    struct data d;
    make_data(&d, o->commit_n, 1, o->seed ^ 0xc0331700ull);
    struct commit_cell cells[3][2][3]; /* [level][mmkv, native][row count] */
    for (int level = 0; level < 3; level++) {
        run_commit_kind(o, KIND_MMKV, level, &d, cells[level][0]);
        run_commit_kind(o, KIND_NATIVE_MMAP, level, &d, cells[level][1]);
    }
    if (isatty(2)) fprintf(stderr, "\r\033[K");

    printf("\ncommit cost: N=%zu, journal_mode=wal, transactions of INSERT OR REPLACE of random "
           "existing keys, BEGIN to COMMIT\n",
           o->commit_n);
    printf("mmkv sync=L in a database with synchronous=L; native+mmap with synchronous=L; "
           "a few untimed transactions first\n");
    printf("\n%-7s %8s %6s | %12s %12s | %12s %12s | %11s\n", "sync", "rows/txn", "txns", "mmkv",
           "mmkv", "native+mmap", "native+mmap", "native/mmkv");
    printf("%-7s %8s %6s | %12s %12s | %12s %12s | %11s\n", "", "", "", "us/txn", "p50 us",
           "us/txn", "p50 us", "(us/txn)");
    printf("-------------------------------------------------------------------------------"
           "-----------\n");
    for (int level = 0; level < 3; level++)
        for (int c = 0; c < 3; c++) {
            const struct commit_cell *m = &cells[level][0][c], *n = &cells[level][1][c];
            printf("%-7s %8zu %6zu | %12.1f %12.1f | %12.1f %12.1f | %10.2fx\n", sync_levels[level],
                   commit_rows[c], m->txns, m->mean_us, m->p50_us, n->mean_us, n->p50_us,
                   m->mean_us > 0 ? n->mean_us / m->mean_us : 0);
        }
    fflush(stdout);
    free_data(&d);
}

/* ---- options ------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench [options]\n"
            "  --n LIST          table sizes, comma-separated; K/M suffixes allowed\n"
            "                    (default 100000,1000000; e.g. --n 100K,1M,10M)\n"
            "  --ops M           lookups/updates per workload: min(N, M) (default 1000000)\n"
            "  --sync MODE       mmkv sync=full|normal|off (default full)\n"
            "  --journal MODE    PRAGMA journal_mode for the databases (default wal)\n"
            "  --synchronous LV  PRAGMA synchronous (default: the --sync mode)\n"
            "  --cache-size C    PRAGMA cache_size (pages, or -KiB) (default: SQLite's)\n"
            "  --mmap-size BYTES PRAGMA mmap_size of native+mmap (default 8589934592;\n"
            "                    SQLite caps it at its SQLITE_MAX_MMAP_SIZE)\n"
            "  --dir DIR         directory for the databases (default: a new /tmp/mmkv-bench-*)\n"
            "  --seed S          PRNG seed (default 42)\n"
            "  --no-table        skip the table of workloads\n"
            "  --no-concurrent   skip the lookups while another process writes\n"
            "  --no-commit-cost  skip the commit cost section\n"
            "  --concurrent-ops M  lookups per measurement there: min(N, --ops, M)\n"
            "                    (default 500000; N is the largest --n)\n"
            "  --commit-n N      table size of the commit cost section (default 100000)\n"
            "  --commit-txns T   timed transactions of 1 and of 10 rows there; T/10 of 1000\n"
            "                    rows (default 200)\n");
}

static unsigned long long parse_count(const char *s, const char *opt)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno || *s == '-') die("%s: bad number '%s'", opt, s);
    if (*end == 'k' || *end == 'K') {
        v *= 1000;
        end++;
    } else if (*end == 'm' || *end == 'M') {
        v *= 1000000;
        end++;
    }
    if (*end) die("%s: bad number '%s'", opt, s);
    return v;
}

static const char *word_arg(const char *s, const char *opt)
{
    size_t len = strlen(s);
    if (len == 0 || len > 16) die("%s: bad value '%s'", opt, s);
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')))
            die("%s: bad value '%s'", opt, s);
    return s;
}

static void parse_ns(struct options *o, const char *list)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    o->nn = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        unsigned long long n = parse_count(t, "--n");
        if (n == 0 || n > UINT32_MAX) die("--n: %llu out of range (1..%" PRIu32 ")", n, UINT32_MAX);
        if (o->nn == MAX_NS) die("--n: at most %d sizes", MAX_NS);
        o->ns[o->nn++] = (size_t)n;
    }
    if (o->nn == 0) die("--n: empty list");
}

static void parse_options(struct options *o, int argc, char **argv)
{
    o->ns[0] = 100000;
    o->ns[1] = 1000000;
    o->nn = 2;
    o->max_ops = 1000000;
    o->dir = NULL;
    o->sync = "full";
    o->journal = "wal";
    o->synchronous = NULL;
    o->mmap_size = 8LL << 30;
    o->cache_size = 0;
    o->cache_set = 0;
    o->seed = 42;
    o->no_table = o->no_concurrent = o->no_commit_cost = 0;
    o->concurrent_ops = 500000;
    o->commit_n = 100000;
    o->commit_txns = 200;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        char opt[64];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--no-table") == 0) {
            o->no_table = 1;
            continue;
        }
        if (strcmp(a, "--no-concurrent") == 0) {
            o->no_concurrent = 1;
            continue;
        }
        if (strcmp(a, "--no-commit-cost") == 0) {
            o->no_commit_cost = 1;
            continue;
        }
        const char *eq = strchr(a, '=');
        if (eq && (size_t)(eq - a) < sizeof opt) {
            memcpy(opt, a, (size_t)(eq - a));
            opt[eq - a] = 0;
            v = eq + 1;
        } else {
            snprintf(opt, sizeof opt, "%s", a);
            if (i + 1 >= argc) {
                usage(stderr);
                die("%s: missing value", a);
            }
            v = argv[++i];
        }
        if (strcmp(opt, "--n") == 0)
            parse_ns(o, v);
        else if (strcmp(opt, "--ops") == 0) {
            o->max_ops = (size_t)parse_count(v, opt);
            if (o->max_ops == 0) die("--ops: must be at least 1");
        } else if (strcmp(opt, "--sync") == 0)
            o->sync = word_arg(v, opt);
        else if (strcmp(opt, "--journal") == 0)
            o->journal = word_arg(v, opt);
        else if (strcmp(opt, "--synchronous") == 0)
            o->synchronous = word_arg(v, opt);
        else if (strcmp(opt, "--mmap-size") == 0)
            o->mmap_size = (long long)parse_count(v, opt);
        else if (strcmp(opt, "--cache-size") == 0) {
            char *end;
            errno = 0;
            o->cache_size = strtoll(v, &end, 10);
            if (end == v || *end || errno) die("--cache-size: bad number '%s'", v);
            o->cache_set = 1;
        } else if (strcmp(opt, "--dir") == 0)
            o->dir = v;
        else if (strcmp(opt, "--seed") == 0)
            o->seed = parse_count(v, opt);
        else if (strcmp(opt, "--concurrent-ops") == 0) {
            o->concurrent_ops = (size_t)parse_count(v, opt);
            if (o->concurrent_ops == 0) die("--concurrent-ops: must be at least 1");
        } else if (strcmp(opt, "--commit-n") == 0) {
            unsigned long long n = parse_count(v, opt);
            if (n == 0 || n > UINT32_MAX)
                die("--commit-n: %llu out of range (1..%" PRIu32 ")", n, UINT32_MAX);
            o->commit_n = (size_t)n;
        } else if (strcmp(opt, "--commit-txns") == 0) {
            o->commit_txns = (size_t)parse_count(v, opt);
            if (o->commit_txns == 0) die("--commit-txns: must be at least 1");
        } else {
            usage(stderr);
            die("unknown option %s", a);
        }
    }
    if (!o->synchronous) o->synchronous = o->sync;
}

/* ---- output ------------------------------------------------------------------------------- */

static void print_header(const struct options *o)
{
    char version[64];
    sqlite3 *db;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK) die("open :memory:");
    query_text(db, "SELECT mmkv_version()", version, sizeof version);
    sqlite3_close(db);

    printf("mmkv %s against native SQLite %s (%s)\n", version, sqlite3_libversion(),
           sqlite3_sourceid());
    printf("directory %s; keys %d-byte random BLOBs, values %d-byte random BLOBs, seed %" PRIu64
           "\n",
           g_dir, KEY_LEN, VALUE_LEN, o->seed);
    printf("ops per lookup/update workload: min(N, %zu); every read workload follows an "
           "untimed full scan\n",
           o->max_ops);
}

static void print_settings(const struct options *o)
{
    char cache[32];
    sqlite3 *db;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK) die("open :memory:");
    query_text(db, "PRAGMA cache_size", cache, sizeof cache);
    sqlite3_close(db);
    if (o->cache_set) snprintf(cache, sizeof cache, "%lld", o->cache_size);
    printf("settings: mmkv sync=%s; journal_mode=%s (native), %s (mmkv's database); "
           "synchronous=%s; cache_size=%s\n",
           o->sync, g_journal_eff[KIND_NATIVE], g_journal_eff[KIND_MMKV], o->synchronous, cache);
    printf("          native mmap_size=0; native+mmap mmap_size=%lld (asked %lld)%s\n", g_mmap_eff,
           o->mmap_size,
           strcasecmp(g_journal_eff[KIND_NATIVE], "wal") == 0
               ? "; native: untimed wal_checkpoint(TRUNCATE) after insert and update"
               : "");
}

static void print_table_header(void)
{
    printf("\n%-20s %9s %8s | %10s %10s %12s | %11s %11s\n", "workload", "N", "ops", "mmkv",
           "native", "native+mmap", "native/mmkv", "mmap/mmkv");
    printf("%-20s %9s %8s | %10s %10s %12s | %11s %11s\n", "", "", "", "ns/op", "ns/op", "ns/op",
           "", "");
    printf("--------------------------------------------------------------------------------"
           "--------------------\n");
}

static void print_rows(const struct data *d, double ns[NWORK][NKINDS])
{
    for (int w = 0; w < NWORK; w++) {
        size_t ops = (w == W_INSERT || w == W_SCAN) ? d->n : d->m;
        double m = ns[w][KIND_MMKV];
        printf("%-20s %9zu %8zu | %10.1f %10.1f %12.1f | %10.2fx %10.2fx\n", work_names[w], d->n,
               ops, m, ns[w][KIND_NATIVE], ns[w][KIND_NATIVE_MMAP],
               m > 0 ? ns[w][KIND_NATIVE] / m : 0, m > 0 ? ns[w][KIND_NATIVE_MMAP] / m : 0);
    }
    fflush(stdout);
}

/* ---- main --------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    struct options o;
    parse_options(&o, argc, argv);

    if (o.dir) {
        struct stat st;
        if (stat(o.dir, &st) != 0 || !S_ISDIR(st.st_mode)) die("--dir %s: not a directory", o.dir);
        if (!realpath(o.dir, g_dir)) die("--dir %s: %s", o.dir, strerror(errno));
    } else {
        snprintf(g_dir, sizeof g_dir, "/tmp/mmkv-bench-XXXXXX");
        if (!mkdtemp(g_dir)) {
            int e = errno;
            g_dir[0] = 0;
            die("mkdtemp: %s", strerror(e));
        }
        g_made_dir = 1;
    }
    snprintf(g_prefix, sizeof g_prefix, "bench-%ld-", (long)getpid());

    if (sqlite3_auto_extension((void (*)(void))sqlite3_mmkv_init) != SQLITE_OK)
        die("sqlite3_auto_extension failed");

    uint64_t state = o.seed;
    g_value_seed = splitmix64(&state);
    for (size_t i = 0; i < POOL_BYTES; i += 8) {
        uint64_t r = splitmix64(&state);
        memcpy(g_pool + i, &r, POOL_BYTES - i < 8 ? POOL_BYTES - i : 8);
    }

    uint64_t start = now_ns();
    print_header(&o);
    double disk[MAX_NS][NKINDS];
    int printed_settings = 0;
    for (int t = 0; t < o.nn && !o.no_table; t++) {
        struct data d;
        double ns[NWORK][NKINDS];
        make_data(&d, o.ns[t], o.max_ops, o.seed);
        for (int kind = 0; kind < NKINDS; kind++) {
            double per_kind[NWORK];
            run_kind(&o, kind, &d, per_kind, &disk[t][kind]);
            for (int w = 0; w < NWORK; w++)
                ns[w][kind] = per_kind[w];
        }
        if (isatty(2)) fprintf(stderr, "\r\033[K");
        if (!printed_settings) {
            print_settings(&o);
            print_table_header();
            printed_settings = 1;
        }
        print_rows(&d, ns);
        free_data(&d);
    }

    if (!o.no_table) {
        printf("\nallocated on disk after the run (MB):");
        for (int t = 0; t < o.nn; t++)
            printf("%s N=%zu: mmkv %.1f, native %.1f, native+mmap %.1f", t ? ";" : "", o.ns[t],
                   disk[t][KIND_MMKV], disk[t][KIND_NATIVE], disk[t][KIND_NATIVE_MMAP]);
        printf("\n");
    }
    if (g_mmap_eff >= 0) {
        for (int t = 0; t < o.nn; t++)
            if (disk[t][KIND_NATIVE_MMAP] * 1024.0 * 1024.0 > (double)g_mmap_eff)
                printf("note: N=%zu native+mmap database is larger than mmap_size %lld: only "
                       "partly mapped\n",
                       o.ns[t], g_mmap_eff);
    }
    if (!o.no_concurrent || !o.no_commit_cost) {
        void *mem =
            mmap(NULL, sizeof *g_shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) die("mmap: %s", strerror(errno));
        g_shared = mem;
        signal(SIGPIPE, SIG_IGN);
    }
    if (!o.no_concurrent) {
        size_t n = 0;
        for (int t = 0; t < o.nn; t++)
            if (o.ns[t] > n) n = o.ns[t];
        run_concurrent(&o, n);
    }
    if (!o.no_commit_cost) run_commit_cost(&o);

    printf("%sratio > 1: mmkv is faster. total %.1f s. %s\n",
           o.no_concurrent && o.no_commit_cost ? "" : "\n", (double)(now_ns() - start) / 1e9,
           g_mismatches ? "CORRECTNESS MISMATCHES (see stderr)" : "all checks passed");

    cleanup();
    sqlite3_reset_auto_extension();
    sqlite3_shutdown();
    return g_mismatches ? 1 : 0;
}
