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
 *   build/bench [--n 100000,1000000] [--ops 1000000] [--sync full|normal|off]
 *               [--journal wal] [--synchronous LEVEL] [--cache-size C] [--mmap-size BYTES]
 *               [--dir DIR] [--seed S]
 */
#include <sqlite3.h>

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
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
                                              "lookup (autocommit)", "full scan",
                                              "update (1 txn)"};

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
};

/* The data of one N: keys, value choice, the orders of the lookups and updates. */
struct data {
    size_t n, m;
    unsigned char *keys;     /* n * KEY_LEN */
    uint32_t *perm[3];       /* m row numbers each: lookups in a txn, autocommit, updates */
    unsigned char *updated;  /* n flags: row updated by the update workload */
    uint64_t sum_before;     /* checksum of all rows before the updates */
    uint64_t sum_after;      /* ... and after */
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

/* Effective settings, as SQLite reports them. */
static char g_journal_eff[NKINDS][32];
static long long g_mmap_eff = -1;

/* ---- utilities ---------------------------------------------------------------------------- */

static void remove_files(const char *name_prefix)
{
    DIR *dir = opendir(g_dir);
    if (!dir)
        return;
    size_t len = strlen(name_prefix);
    struct dirent *e;
    char path[PATH_MAX + 256];
    while ((e = readdir(dir)) != NULL) {
        if (strncmp(e->d_name, name_prefix, len) != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", g_dir, e->d_name);
        if (unlink(path) != 0)
            fprintf(stderr, "bench: cannot remove %s: %s\n", path, strerror(errno));
    }
    closedir(dir);
}

static double allocated_mb(const char *name_prefix)
{
    DIR *dir = opendir(g_dir);
    if (!dir)
        return 0;
    size_t len = strlen(name_prefix);
    struct dirent *e;
    struct stat st;
    char path[PATH_MAX + 256];
    double total = 0;
    while ((e = readdir(dir)) != NULL) {
        if (strncmp(e->d_name, name_prefix, len) != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", g_dir, e->d_name);
        if (lstat(path, &st) == 0)
            total += (double)st.st_blocks * 512.0;
    }
    closedir(dir);
    return total / (1024.0 * 1024.0);
}

static void cleanup(void)
{
    if (!g_dir[0])
        return;
    remove_files(g_prefix);
    if (g_made_dir && rmdir(g_dir) != 0)
        fprintf(stderr, "bench: cannot remove %s: %s\n", g_dir, strerror(errno));
    g_dir[0] = 0;
}

__attribute__((format(printf, 1, 2))) _Noreturn static void die(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "bench: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
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
    if (!p)
        die("out of memory (%zu bytes)", size);
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
    if (rc != SQLITE_DONE)
        die("%s: %s", sqlite3_sql(st), sqlite3_errmsg(sqlite3_db_handle(st)));
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
    if (in_txn)
        step_done(s->begin);
    for (size_t j = 0; j < d->m; j++) {
        size_t i = perm[j];
        sqlite3_bind_blob(s->lookup, 1, key_of(d, i), KEY_LEN, SQLITE_STATIC);
        int rc = sqlite3_step(s->lookup);
        if (rc == SQLITE_ROW) {
            const void *v = sqlite3_column_blob(s->lookup, 0);
            int len = sqlite3_column_bytes(s->lookup, 0);
            if (len != VALUE_LEN || memcmp(v, value_of(i, 0), VALUE_LEN) != 0)
                wrong++;
        } else if (rc == SQLITE_DONE) {
            missing++;
        } else {
            die("lookup: %s", sqlite3_errmsg(sqlite3_db_handle(s->lookup)));
        }
        sqlite3_reset(s->lookup);
    }
    if (in_txn)
        step_done(s->commit);
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
    if (rc != SQLITE_DONE)
        die("scan: %s", sqlite3_errmsg(sqlite3_db_handle(s->scan)));
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
    if (rc != SQLITE_DONE)
        die("scan: %s", sqlite3_errmsg(sqlite3_db_handle(s->scan)));
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
        if (sqlite3_changes(db) != 1)
            unchanged++;
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
    if (rc != SQLITE_ROW)
        die("count: %s", sqlite3_errmsg(sqlite3_db_handle(s->count)));
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
    if (kind == KIND_NATIVE_MMAP)
        g_mmap_eff = strtoll(out, NULL, 10);
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
        if (w > 0 && (size_t)w < sizeof plan - used)
            used += (size_t)w;
    }
    sqlite3_finalize(st);
    int ok = kind == KIND_MMKV ? strstr(plan, "INDEX 1") != NULL
                               : strstr(plan, "PRIMARY KEY") != NULL;
    if (!ok)
        fprintf(stderr, "bench: warning: %s lookup plan does not use the key: %s\n",
                kind_names[kind], plan);
    if (print)
        printf("  plan %-12s %s\n", kind_names[kind], plan);
}

static void progress(const char *kind, size_t n, const char *what)
{
    if (isatty(2))
        fprintf(stderr, "\r\033[K  N=%zu %s: %s", n, kind, what);
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
    if (wal)
        exec_sql(db, "PRAGMA wal_checkpoint(TRUNCATE)");

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
    if (wal)
        exec_sql(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    verify_scan(&s, d, d->sum_after, "scan after updates");
    check_count(&s, d, "after updates");
    progress(k, d->n, "done");

    sqlite3_stmt **all[] = {&s.begin, &s.commit, &s.insert, &s.lookup,
                            &s.scan,  &s.update, &s.count};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        sqlite3_finalize(*all[i]);
        *all[i] = NULL;
    }
    if (sqlite3_close(db) != SQLITE_OK)
        die("close %s: %s", path, sqlite3_errmsg(db));
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
    if (!d->updated)
        die("out of memory");
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
            "  --seed S          PRNG seed (default 42)\n");
}

static unsigned long long parse_count(const char *s, const char *opt)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno || *s == '-')
        die("%s: bad number '%s'", opt, s);
    if (*end == 'k' || *end == 'K') {
        v *= 1000;
        end++;
    } else if (*end == 'm' || *end == 'M') {
        v *= 1000000;
        end++;
    }
    if (*end)
        die("%s: bad number '%s'", opt, s);
    return v;
}

static const char *word_arg(const char *s, const char *opt)
{
    size_t len = strlen(s);
    if (len == 0 || len > 16)
        die("%s: bad value '%s'", opt, s);
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
        if (n == 0 || n > UINT32_MAX)
            die("--n: %llu out of range (1..%" PRIu32 ")", n, UINT32_MAX);
        if (o->nn == MAX_NS)
            die("--n: at most %d sizes", MAX_NS);
        o->ns[o->nn++] = (size_t)n;
    }
    if (o->nn == 0)
        die("--n: empty list");
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
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        char opt[64];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
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
            if (o->max_ops == 0)
                die("--ops: must be at least 1");
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
            if (end == v || *end || errno)
                die("--cache-size: bad number '%s'", v);
            o->cache_set = 1;
        } else if (strcmp(opt, "--dir") == 0)
            o->dir = v;
        else if (strcmp(opt, "--seed") == 0)
            o->seed = parse_count(v, opt);
        else {
            usage(stderr);
            die("unknown option %s", a);
        }
    }
    if (!o->synchronous)
        o->synchronous = o->sync;
}

/* ---- output ------------------------------------------------------------------------------- */

static void print_header(const struct options *o)
{
    char version[64];
    sqlite3 *db;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK)
        die("open :memory:");
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
    if (sqlite3_open(":memory:", &db) != SQLITE_OK)
        die("open :memory:");
    query_text(db, "PRAGMA cache_size", cache, sizeof cache);
    sqlite3_close(db);
    if (o->cache_set)
        snprintf(cache, sizeof cache, "%lld", o->cache_size);
    printf("settings: mmkv sync=%s; journal_mode=%s (native), %s (mmkv's database); "
           "synchronous=%s; cache_size=%s\n",
           o->sync, g_journal_eff[KIND_NATIVE], g_journal_eff[KIND_MMKV], o->synchronous, cache);
    printf("          native mmap_size=0; native+mmap mmap_size=%lld (asked %lld)%s\n",
           g_mmap_eff, o->mmap_size,
           strcasecmp(g_journal_eff[KIND_NATIVE], "wal") == 0
               ? "; native: untimed wal_checkpoint(TRUNCATE) after insert and update"
               : "");
}

static void print_table_header(void)
{
    printf("\n%-20s %9s %8s | %10s %10s %12s | %11s %11s\n", "workload", "N", "ops",
           "mmkv", "native", "native+mmap", "native/mmkv", "mmap/mmkv");
    printf("%-20s %9s %8s | %10s %10s %12s | %11s %11s\n", "", "", "", "ns/op", "ns/op",
           "ns/op", "", "");
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
        if (stat(o.dir, &st) != 0 || !S_ISDIR(st.st_mode))
            die("--dir %s: not a directory", o.dir);
        if (!realpath(o.dir, g_dir))
            die("--dir %s: %s", o.dir, strerror(errno));
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
    for (int t = 0; t < o.nn; t++) {
        struct data d;
        double ns[NWORK][NKINDS];
        make_data(&d, o.ns[t], o.max_ops, o.seed);
        for (int kind = 0; kind < NKINDS; kind++) {
            double per_kind[NWORK];
            run_kind(&o, kind, &d, per_kind, &disk[t][kind]);
            for (int w = 0; w < NWORK; w++)
                ns[w][kind] = per_kind[w];
        }
        if (isatty(2))
            fprintf(stderr, "\r\033[K");
        if (!printed_settings) {
            print_settings(&o);
            print_table_header();
            printed_settings = 1;
        }
        print_rows(&d, ns);
        free_data(&d);
    }

    printf("\nallocated on disk after the run (MB):");
    for (int t = 0; t < o.nn; t++)
        printf("%s N=%zu: mmkv %.1f, native %.1f, native+mmap %.1f", t ? ";" : "", o.ns[t],
               disk[t][KIND_MMKV], disk[t][KIND_NATIVE], disk[t][KIND_NATIVE_MMAP]);
    printf("\n");
    if (g_mmap_eff >= 0) {
        for (int t = 0; t < o.nn; t++)
            if (disk[t][KIND_NATIVE_MMAP] * 1024.0 * 1024.0 > (double)g_mmap_eff)
                printf("note: N=%zu native+mmap database is larger than mmap_size %lld: only "
                       "partly mapped\n",
                       o.ns[t], g_mmap_eff);
    }
    printf("ratio > 1: mmkv is faster. total %.1f s. %s\n",
           (double)(now_ns() - start) / 1e9,
           g_mismatches ? "CORRECTNESS MISMATCHES (see stderr)" : "all checks passed");

    cleanup();
    sqlite3_reset_auto_extension();
    sqlite3_shutdown();
    return g_mismatches ? 1 : 0;
}
