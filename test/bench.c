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
 * Next to each N's rows, measured in the same run, the limit of a lookup through SQL:
 *   vtab floor      a virtual table of bench's own (module bench_floor) that does no work: its
 *                   xBestIndex takes the key equality (idxNum 1, tiny cost, omitted, one row,
 *                   orderByConsumed), xFilter gives one constant row, xColumn its 100-byte value
 *                   (SQLITE_STATIC). It lives in a database file configured as mmkv's (--journal,
 *                   --synchronous) next to a real table, so that a lookup in autocommit pays for
 *                   the read transaction on the file (in WAL, the read lock and the schema check)
 *                   as mmkv's does. The statement is mmkv's, SELECT value FROM kv WHERE key=?1,
 *                   timed by the same code with the same keys in the same order: in one read
 *                   transaction and in autocommit, each after an untimed pass of its lookups.
 *   hash lookup     a C open-addressing hash table of the N keys (linear probing, at most 5/8
 *                   full), its 64-bit slots (a 24-bit tag, the offset / 8) pointing into an array
 *                   of records (key, value), as mmkv's index points into its log; the M lookups
 *                   of lookup (txn), each value checked byte for byte, each key depending on the
 *                   bytes the lookup before it found, so that the CPU cannot overlap them. Built
 *                   untimed, then every record checked through the checksum (the warm-up).
 *   limit (txn) = vtab floor (txn) + hash lookup, limit (auto) = vtab floor (auto) + hash lookup,
 *   and mmkv's lookups as a multiple of them (goals: at most 1.25x in a transaction, 1.15x in
 *   autocommit), and native+mmap's lookup (txn) against mmkv's (goal: 3x or more at N >= 1M).
 * Then LMDB through its C API (--no-lmdb; a bench built without <lmdb.h> says "not built"), one
 * file (MDB_NOSUBDIR), the same rows and keys:
 *   put (1 txn)     N mdb_put(MDB_NOOVERWRITE) in one write transaction, the commit included; the
 *                   env flags follow --sync: full = none (each commit syncs, as mmkv sync=full),
 *                   normal = MDB_NOMETASYNC, off = MDB_NOSYNC
 *   get (1 txn)     the M lookups of lookup (txn), mdb_get in one read transaction, each value
 *                   checked byte for byte
 *   cursor scan     every row (MDB_NEXT), per row its key's and value's sizes, as the timed scan
 * against mmkv's insert, lookup (txn) and full scan; the entries are counted (mdb_stat), and each
 * read is preceded by an untimed cursor scan checking every row through the checksum.
 *
 * Five further sections follow the table (each skippable):
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
 *   space (--no-space): how much disk each table takes over a long run of updates, and what
 *     compaction gives back and costs. --space-n rows are loaded, then --space-ops uniform random
 *     updates and then --space-ops operations of YCSB workload A (zipfian 0.99, scrambled as
 *     YCSB does; half reads, half updates), both in transactions of 100 operations, with
 *     journal_mode=wal and --space-sync for mmkv's sync= and every PRAGMA synchronous (default
 *     off: the section is about space, and at full the commits' syncs would swamp what compaction
 *     costs). Three runs, each in its own database: mmkv with default arguments (automatic
 *     compaction on), mmkv with autocompact=off, native+mmap. Every --space-sample operations
 *     (untimed) the allocated bytes (st_blocks * 512) of mmkv's data file and index, and of
 *     native's database and WAL after wal_checkpoint(TRUNCATE), are taken; the ratio mmkv/native
 *     is reported at each sample, and its largest value. After the workload, in each mmkv run,
 *     INSERT INTO kv(kv) VALUES('compact') and mmkv_stats' compacting polled until 0 (at most
 *     120 s): the time, the log drained (mmkv_stats' log_start before and after) per second, the
 *     allocated bytes then and once they settle (space may be given back later), and their ratio
 *     to native; meanwhile a reader (single-key SELECTs in autocommit, even rows) and a writer
 *     (1-row transactions, odd rows) on connections of their own are timed, and for a second
 *     before the command too. Then every row is deleted, the table compacted again, and its
 *     allocated bytes reported. Goals are printed as met or not; a step the extension refuses
 *     (an argument, a command or mmkv_stats it does not have yet) is reported as "not available:
 *     <error>" and the rest goes on. Checked: counts after the load and after the deletes, every
 *     lookup of the YCSB phase and of the reader, and after the workload and after 'compact'
 *     every row through the scan's checksum and 10000 random lookups byte for byte.
 *
 *   YCSB (--no-ycsb): --ycsb-n rows loaded in one transaction (untimed), then --ycsb-ops
 *     operations of each of YCSB's workloads A (50% reads, 50% updates), B (95% reads, 5%
 *     updates), C (reads only) and F (50% reads, 50% read-modify-writes: a row read, then updated
 *     to a new value, as one operation), in that order on the same table, rows chosen zipfian
 *     0.99, scrambled (the space section's generator), through SQL in transactions of 100
 *     operations, BEGIN to COMMIT timed. For mmkv (default arguments but sync=, from --sync) and
 *     native+mmap, with --journal and --synchronous as in the table; ops/s and their ratio. Each
 *     row's version is tracked as in the space section: every read checks the value it finds byte
 *     for byte, every update that it changed one row; before each workload, and after the last,
 *     an untimed scan checks every row through the checksum (and warms the caches before reads).
 *
 *   growth and memory (--no-growth): --growth-n rows (default 10M) loaded into mmkv (default
 *     arguments but sync=, from --sync; journal_mode=wal, --synchronous) with INSERT INTO kv
 *     VALUES(?, ?) in transactions of 10000 rows. The keys are the bench's, each made on its own
 *     (key_at) instead of held in an array, so that the process's own memory stays small. Every
 *     sqlite3_step of an insert and every COMMIT is timed on its own into a latency histogram
 *     (log-linear buckets, the maximum exact): insert p99, p99.9 and max, COMMIT p50, p99 and
 *     max, ns per insert overall (goal: no insert over 10 ms). After the commits that reach N/8,
 *     N/4, N/2 and N rows, the process's RssAnon, RssFile and RssShmem (/proc/self/status) and
 *     the files' allocated sizes (goal: RssAnon at N at most 1.5x RssAnon at N/8, plus 16 MB:
 *     mmkv's data lives in file-backed mappings). The connection is closed (the last close
 *     leaves the index clean), the files synced (syncfs, untimed), then 5 opens are timed, each
 *     sqlite3_open_v2 (mmkv comes in through sqlite3_auto_extension) up to the row of the first
 *     SELECT value FROM kv WHERE key = ? of a present key: min, median (goal: median < 10 ms) and
 *     each in order, against the same for a native table of 1000 rows in a small database of its
 *     own (the floor). Then INSERT INTO kv(kv) VALUES('rebuild-index') is timed: seconds, and
 *     seconds per million records. After the load, after the opens and after the rebuild,
 *     count(*) is checked and 500 random rows are looked up byte for byte.
 *
 *   build/bench [--n 100000,1000000] [--ops 1000000] [--sync full|normal|off]
 *               [--journal wal] [--synchronous LEVEL] [--cache-size C] [--mmap-size BYTES]
 *               [--dir DIR] [--seed S] [--no-table] [--no-concurrent] [--no-commit-cost]
 *               [--concurrent-ops M] [--commit-n N] [--commit-txns T] [--no-space]
 *               [--space-n N] [--space-ops M] [--space-sample K] [--space-sync LEVEL]
 *               [--no-lmdb] [--no-ycsb] [--ycsb-n N] [--ycsb-ops M] [--no-growth]
 *               [--growth-n N]
 */
#include <sqlite3.h>

/* LMDB where its header is; the Makefile links -llmdb then, and defines BENCH_NO_LMDB if not. */
#if defined(__has_include) && !defined(BENCH_NO_LMDB)
#if __has_include(<lmdb.h>)
#include <lmdb.h>
#define HAVE_LMDB 1
#endif
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
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
void mmkv_worker_wait_idle(void); /* libmmkv's: until its background thread has no job */

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
    int no_table, no_concurrent, no_commit_cost, no_space, no_lmdb, no_ycsb, no_growth;
    size_t
        concurrent_ops; /* lookups per measurement of the concurrent section: min(N, --ops, this) */
    size_t commit_n;    /* table size of the commit-cost section */
    size_t commit_txns; /* timed transactions of 1 and 10 rows; a tenth of it of 1000 rows */
    size_t space_n;     /* rows of the space section */
    size_t space_ops;   /* operations of each of its two workload phases */
    size_t space_sample;    /* operations between its samples of the files' sizes */
    const char *space_sync; /* mmkv sync= and PRAGMA synchronous there */
    size_t ycsb_n;          /* rows of the YCSB section */
    size_t ycsb_ops;        /* operations of each of its workloads */
    size_t growth_n;        /* rows loaded by the growth section */
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

#define SPLITMIX_GAMMA 0x9e3779b97f4a7c15ULL

static uint64_t splitmix64(uint64_t *state)
{
    return mix64(*state += SPLITMIX_GAMMA);
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

/* Where the keys of n rows under seed start: a splitmix64 state, two outputs to a key. */
static uint64_t key_stream(uint64_t seed, size_t n)
{
    return seed ^ ((uint64_t)n * SPLITMIX_GAMMA);
}

/* Row i's key of the stream, computed on its own (the 2i+1th and 2i+2th outputs), so that a
 * section can make its keys without holding them all in memory. */
static void key_at(uint64_t stream, size_t i, unsigned char out[KEY_LEN])
{
    uint64_t a = mix64(stream + (2 * (uint64_t)i + 1) * SPLITMIX_GAMMA);
    uint64_t b = mix64(stream + (2 * (uint64_t)i + 2) * SPLITMIX_GAMMA);
    memcpy(out, &a, 8);
    memcpy(out + 8, &b, 8);
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

/* Every statement of struct stmts, as the table, space and YCSB workloads use them. */
static void prepare_stmts(sqlite3 *db, struct stmts *s)
{
    s->begin = prepare(db, "BEGIN");
    s->commit = prepare(db, "COMMIT");
    s->insert = prepare(db, "INSERT INTO kv(key, value) VALUES(?1, ?2)");
    s->lookup = prepare(db, "SELECT value FROM kv WHERE key=?1");
    s->scan = prepare(db, "SELECT key, value FROM kv");
    s->update = prepare(db, "UPDATE kv SET value=?1 WHERE key=?2");
    s->count = prepare(db, "SELECT count(*) FROM kv");
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

/* The lookups of perm, each value compared with the row's (or, if one_value is not NULL, with
 * that: the floor table's one row). */
static double run_lookups(const struct stmts *s, const struct data *d, const uint32_t *perm,
                          int in_txn, const unsigned char *one_value, const char *what)
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
            const unsigned char *want = one_value ? one_value : value_of(i, 0);
            if (len != VALUE_LEN || memcmp(v, want, VALUE_LEN) != 0) wrong++;
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

/* --journal, --synchronous and --cache-size; the journal mode SQLite took into journal. */
static void set_pragmas(sqlite3 *db, const struct options *o, char *journal, size_t journal_len)
{
    char sql[256];
    snprintf(sql, sizeof sql, "PRAGMA journal_mode=%s", o->journal);
    query_text(db, sql, journal, journal_len);
    snprintf(sql, sizeof sql, "PRAGMA synchronous=%s", o->synchronous);
    exec_sql(db, sql);
    if (o->cache_set) {
        snprintf(sql, sizeof sql, "PRAGMA cache_size=%lld", o->cache_size);
        exec_sql(db, sql);
    }
}

static void configure(sqlite3 *db, int kind, const struct options *o)
{
    char sql[256], out[64];
    set_pragmas(db, o, g_journal_eff[kind], sizeof g_journal_eff[kind]);
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

/* What a plan that uses the key says: a virtual table's plan idxNum 1, the native primary key. */
static const char *key_plan(int kind)
{
    return kind == KIND_MMKV ? "INDEX 1" : "PRIMARY KEY";
}

/* The lookup must use the key: its plan must say expect. */
static void check_plan(sqlite3 *db, const char *who, const char *expect)
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
    if (!strstr(plan, expect))
        fprintf(stderr, "bench: warning: %s lookup plan does not use the key: %s\n", who, plan);
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
    prepare_stmts(db, &s);
    check_plan(db, kind_names[kind], key_plan(kind));

    const char *k = kind_names[kind];
    struct scan_result r;

    progress(k, d->n, "insert");
    ns[W_INSERT] = run_insert(&s, d);
    check_count(&s, d, "after insert");
    if (wal) exec_sql(db, "PRAGMA wal_checkpoint(TRUNCATE)");

    progress(k, d->n, "lookups in a transaction");
    verify_scan(&s, d, d->sum_before, "scan after insert");
    ns[W_LOOKUP_TXN] = run_lookups(&s, d, d->perm[0], 1, NULL, "lookup (txn)");

    progress(k, d->n, "lookups in autocommit");
    verify_scan(&s, d, d->sum_before, "scan before autocommit lookups");
    ns[W_LOOKUP_AUTO] = run_lookups(&s, d, d->perm[1], 0, NULL, "lookup (autocommit)");

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
    /* The update's one transaction left half the log garbage, and handed a pass to mmkv's
     * background thread: it ends before the files are measured and the next table is timed. */
    if (kind == KIND_MMKV) mmkv_worker_wait_idle();
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
    uint64_t stream = key_stream(seed, n);
    uint64_t state = stream + 2 * (uint64_t)n * SPLITMIX_GAMMA; /* past the keys' outputs */
    d->n = n;
    d->m = n < max_ops ? n : max_ops;
    d->keys = xmalloc(n * KEY_LEN);
    for (size_t i = 0; i < n; i++)
        key_at(stream, i, d->keys + i * KEY_LEN);
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

/* ---- the limit of a lookup through SQL: a floor virtual table, a hash table --------------- */

/*
** The floor: module bench_floor, a virtual table that does no work, so that a lookup through it
** costs what SQLite itself costs for mmkv's statement: the bound key, the VDBE program, xFilter
** and xColumn, and in autocommit the statement's read transaction. That transaction is on the
** database the table is in: on a database file in WAL mode it takes the WAL read lock and checks
** the schema, on :memory: it costs next to nothing. mmkv's table is in a database file, so the
** floor's is too, configured as mmkv's (set_pragmas) and next to a real table; an eponymous
** table in :memory: would put the autocommit floor too low.
**
** xBestIndex. The plans, by idxNum, and what xFilter receives in argv:
**
**   idxNum  plan      argv         cost
**   ------  --------  -----------  --------------------------------------------------------------
**   0       the row   (none)       FLOOR_ROW_COST
**   1       key = ?   [0] the key  FLOOR_LOOKUP_COST; one row (SCAN_UNIQUE); omitted, so SQLite
**                                  does not compare it again (mmkv's plan 1 leaves it to SQLite)
**
** Either plan gives one row, in every order (orderByConsumed). Its value is the first VALUE_LEN
** bytes of the pool; its key is NULL, and a lookup of a key that is not a KEY_LEN-byte value
** finds no row.
*/
#define FLOOR_COLUMN_KEY 0
#define FLOOR_COLUMN_VALUE 1
#define FLOOR_PLAN_ROW 0
#define FLOOR_PLAN_KEY 1
#define FLOOR_ROW_COST 10.0
#define FLOOR_LOOKUP_COST 1.0
#define FLOOR_VALUE g_pool

typedef struct floor_cursor floor_cursor;
struct floor_cursor {
    sqlite3_vtab_cursor base;
    int eof;
};

/* xConnect: the table has no state but its schema. */
static int floorConnect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                        sqlite3_vtab **out, char **err)
{
    (void)aux, (void)argc, (void)argv, (void)err;
    int rc = sqlite3_declare_vtab(db, "CREATE TABLE x(key, value)");
    if (rc != SQLITE_OK) return rc;
    sqlite3_vtab *vt = sqlite3_malloc(sizeof *vt);
    if (!vt) return SQLITE_NOMEM;
    memset(vt, 0, sizeof *vt);
    *out = vt;
    return SQLITE_OK;
}

/* xCreate: as xConnect; a function of its own, so that the module is not eponymous. */
static int floorCreate(sqlite3 *db, void *aux, int argc, const char *const *argv,
                       sqlite3_vtab **out, char **err)
{
    return floorConnect(db, aux, argc, argv, out, err);
}

/* xDisconnect and xDestroy. */
static int floorDisconnect(sqlite3_vtab *vtab)
{
    sqlite3_free(vtab);
    return SQLITE_OK;
}

/* xBestIndex: the plans are in the table above. */
static int floorBestIndex(sqlite3_vtab *vtab, sqlite3_index_info *info)
{
    (void)vtab;
    info->orderByConsumed = 1;
    info->estimatedRows = 1;
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        if (c->iColumn != FLOOR_COLUMN_KEY || c->op != SQLITE_INDEX_CONSTRAINT_EQ || !c->usable)
            continue;
        info->aConstraintUsage[i].argvIndex = 1;
        info->aConstraintUsage[i].omit = 1;
        info->idxNum = FLOOR_PLAN_KEY;
        info->idxFlags = SQLITE_INDEX_SCAN_UNIQUE;
        info->estimatedCost = FLOOR_LOOKUP_COST;
        return SQLITE_OK;
    }
    info->idxNum = FLOOR_PLAN_ROW;
    info->estimatedCost = FLOOR_ROW_COST;
    return SQLITE_OK;
}

/* xOpen. */
static int floorOpen(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out)
{
    (void)vtab;
    floor_cursor *cur = sqlite3_malloc(sizeof *cur);
    if (!cur) return SQLITE_NOMEM;
    memset(cur, 0, sizeof *cur);
    cur->eof = 1;
    *out = &cur->base;
    return SQLITE_OK;
}

/* xClose. */
static int floorClose(sqlite3_vtab_cursor *cursor)
{
    sqlite3_free(cursor);
    return SQLITE_OK;
}

/* xFilter: the one row, unless the key cannot be one of bench's (the lookups' check then fails). */
static int floorFilter(sqlite3_vtab_cursor *cursor, int idxNum, const char *idxStr, int argc,
                       sqlite3_value **argv)
{
    (void)idxStr;
    floor_cursor *cur = (floor_cursor *)cursor;
    cur->eof = idxNum == FLOOR_PLAN_KEY && argc == 1 && sqlite3_value_bytes(argv[0]) != KEY_LEN;
    return SQLITE_OK;
}

/* xNext: there is no second row. */
static int floorNext(sqlite3_vtab_cursor *cursor)
{
    ((floor_cursor *)cursor)->eof = 1;
    return SQLITE_OK;
}

/* xEof. */
static int floorEof(sqlite3_vtab_cursor *cursor)
{
    return ((floor_cursor *)cursor)->eof;
}

/* xColumn: the value, not copied; the key NULL. */
static int floorColumn(sqlite3_vtab_cursor *cursor, sqlite3_context *ctx, int column)
{
    (void)cursor;
    if (column == FLOOR_COLUMN_VALUE)
        sqlite3_result_blob(ctx, FLOOR_VALUE, VALUE_LEN, SQLITE_STATIC);
    return SQLITE_OK;
}

/* xRowid: the one row's. */
static int floorRowid(sqlite3_vtab_cursor *cursor, sqlite3_int64 *rowid)
{
    (void)cursor;
    *rowid = 1;
    return SQLITE_OK;
}

static const sqlite3_module floor_module = {
    .iVersion = 1,
    .xCreate = floorCreate,
    .xConnect = floorConnect,
    .xBestIndex = floorBestIndex,
    .xDisconnect = floorDisconnect,
    .xDestroy = floorDisconnect,
    .xOpen = floorOpen,
    .xClose = floorClose,
    .xFilter = floorFilter,
    .xNext = floorNext,
    .xEof = floorEof,
    .xColumn = floorColumn,
    .xRowid = floorRowid,
};

static sqlite3 *open_db(const char *path)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK)
        die("open %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
    return db;
}

/* ns per lookup through the floor table: [0] in one read transaction, [1] in autocommit. */
static void run_floor(const struct options *o, const struct data *d, double ns[2])
{
    char name[128], path[PATH_MAX + 256], journal[32];
    snprintf(name, sizeof name, "%sfloor.db", g_prefix);
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    sqlite3 *db = open_db(path);
    set_pragmas(db, o, journal, sizeof journal);
    if (strcasecmp(journal, g_journal_eff[KIND_MMKV]) != 0)
        die("vtab floor: journal_mode %s, mmkv's database %s", journal, g_journal_eff[KIND_MMKV]);
    if (sqlite3_create_module_v2(db, "bench_floor", &floor_module, NULL, NULL) != SQLITE_OK)
        die("vtab floor: sqlite3_create_module_v2: %s", sqlite3_errmsg(db));
    exec_sql(db, "CREATE TABLE beside(x); INSERT INTO beside VALUES(1)");
    exec_sql(db, "CREATE VIRTUAL TABLE kv USING bench_floor");
    check_plan(db, "vtab floor", "INDEX 1");

    struct stmts s = {0};
    s.begin = prepare(db, "BEGIN");
    s.commit = prepare(db, "COMMIT");
    s.lookup = prepare(db, "SELECT value FROM kv WHERE key=?1");
    for (int in_txn = 1; in_txn >= 0; in_txn--) {
        const uint32_t *perm = d->perm[in_txn ? 0 : 1];
        const char *what = in_txn ? "vtab floor (txn)" : "vtab floor (autocommit)";
        char warm[64];
        snprintf(warm, sizeof warm, "%s, warm-up", what);
        progress("vtab floor", d->n, in_txn ? "lookups in a transaction" : "lookups in autocommit");
        run_lookups(&s, d, perm, in_txn, FLOOR_VALUE, warm); /* untimed */
        ns[in_txn ? 0 : 1] = run_lookups(&s, d, perm, in_txn, FLOOR_VALUE, what);
    }
    finalize_stmts(&s);
    close_db(db, path);
    remove_files(name);
}

/*
** The hash lookup: the N keys in an open-addressing table laid out as mmkv's index and log are,
** without a file, a lock or SQL. A slot (64 bits, 0 = empty) holds the top HASH_TAG_BITS of the
** key's hash above the record's offset / 8; a record is the key, then the value. Both arrays are
** anonymous mappings in small pages, as mmkv's file mappings are (no transparent huge pages).
*/
#define HASH_LOAD_NUM 5u /* at most 5/8 of the slots used, as mmkv's index */
#define HASH_LOAD_DEN 8u
#define HASH_TAG_BITS 24
#define HASH_OFFSET_BITS (64 - HASH_TAG_BITS)
#define HASH_OFFSET_MASK ((UINT64_C(1) << HASH_OFFSET_BITS) - 1)
#define HASH_RECORD_BYTES ((KEY_LEN + VALUE_LEN + 7) / 8 * 8)
#define HASH_SEED 0x6a09e667f3bcc908ULL

struct hash_table {
    uint64_t *slots;
    size_t mask; /* slots - 1, a power of two less one */
    unsigned char *records;
    size_t slots_bytes, records_bytes;
};

static void *map_anonymous(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap %zu bytes: %s", bytes, strerror(errno));
#ifdef MADV_NOHUGEPAGE
    madvise(p, bytes, MADV_NOHUGEPAGE);
#endif
    return p;
}

static uint64_t key_hash(const unsigned char *key)
{
    return mix64(load64(key) ^ mix64(load64(key + 8) ^ HASH_SEED));
}

/* A slot's tag: never 0, so that no entry reads as empty. */
static uint64_t hash_tag(uint64_t hash)
{
    return (hash >> HASH_OFFSET_BITS) | 1;
}

static void hash_build(struct hash_table *t, const struct data *d)
{
    size_t slots = 1;
    while (slots * HASH_LOAD_NUM < d->n * HASH_LOAD_DEN)
        slots *= 2;
    t->mask = slots - 1;
    t->slots_bytes = slots * sizeof *t->slots;
    t->records_bytes = d->n * HASH_RECORD_BYTES;
    t->slots = map_anonymous(t->slots_bytes);
    t->records = map_anonymous(t->records_bytes);
    for (size_t i = 0; i < d->n; i++) {
        uint64_t offset = (uint64_t)i * HASH_RECORD_BYTES, h = key_hash(key_of(d, i));
        memcpy(t->records + offset, key_of(d, i), KEY_LEN);
        memcpy(t->records + offset + KEY_LEN, value_of(i, 0), VALUE_LEN);
        size_t p = (size_t)h & t->mask;
        while (t->slots[p])
            p = (p + 1) & t->mask;
        t->slots[p] = hash_tag(h) << HASH_OFFSET_BITS | offset >> 3;
    }
}

static void hash_free(struct hash_table *t)
{
    munmap(t->slots, t->slots_bytes);
    munmap(t->records, t->records_bytes);
}

/* The value stored for key, or NULL. */
static const unsigned char *hash_find(const struct hash_table *t, const unsigned char *key)
{
    uint64_t h = key_hash(key), tag = hash_tag(h);
    for (size_t p = (size_t)h & t->mask;; p = (p + 1) & t->mask) {
        uint64_t slot = t->slots[p];
        if (!slot) return NULL;
        if (slot >> HASH_OFFSET_BITS != tag) continue;
        const unsigned char *record = t->records + ((slot & HASH_OFFSET_MASK) << 3);
        if (memcmp(record, key, KEY_LEN) == 0) return record + KEY_LEN;
    }
}

/* Untimed, before the lookups: every record through its slot, against the checksum. */
static void hash_verify(const struct hash_table *t, const struct data *d)
{
    size_t rows = 0;
    uint64_t sum = 0;
    for (size_t p = 0; p <= t->mask; p++) {
        if (!t->slots[p]) continue;
        const unsigned char *record = t->records + ((t->slots[p] & HASH_OFFSET_MASK) << 3);
        sum += row_hash(record, record + KEY_LEN);
        rows++;
    }
    if (rows != d->n || sum != d->sum_before)
        mismatch("hash table: %zu entries (expected %zu), checksum %s", rows, d->n,
                 sum == d->sum_before ? "ok" : "differs");
}

/* ns per lookup of the hash table: the lookups of lookup (txn), one after another. */
static double run_hash(const struct data *d)
{
    struct hash_table t;
    progress("hash lookup", d->n, "build");
    hash_build(&t, d);
    hash_verify(&t, d);
    progress("hash lookup", d->n, "lookups");
    const uint32_t *perm = d->perm[0];
    size_t missing = 0, wrong = 0;
    unsigned carry = 0; /* 0 unless a value was wrong; the next key's row depends on it */
    uint64_t t0 = now_ns();
    for (size_t j = 0; j < d->m; j++) {
        size_t i = perm[j] ^ carry;
        if (i >= d->n) i = perm[j];
        const unsigned char *v = hash_find(&t, key_of(d, i)), *want = value_of(i, 0);
        if (!v) {
            missing++;
            continue;
        }
        if (memcmp(v, want, VALUE_LEN) != 0) wrong++;
        carry = v[VALUE_LEN - 1] ^ want[VALUE_LEN - 1];
    }
    uint64_t t1 = now_ns();
    if (missing || wrong)
        mismatch("hash lookup: %zu of %zu keys not found, %zu wrong values", missing, d->m, wrong);
    hash_free(&t);
    return (double)(t1 - t0) / (double)d->m;
}

/* ---- LMDB, through its C API -------------------------------------------------------------- */

enum { L_PUT, L_GET, L_SCAN, NLMDB };
static const char *const lmdb_names[NLMDB] = {"put (1 txn)", "get (1 txn)", "cursor scan"};
static const int lmdb_against[NLMDB] = {W_INSERT, W_LOOKUP_TXN, W_SCAN}; /* mmkv's workload */

#ifdef HAVE_LMDB
/* The map: up to this many bytes per row (a leaf node is 8 + 16 + 100 bytes, pages some 70% full
 * after random inserts, branch pages) and a base. The file grows only as far as it is used. */
#define LMDB_MAP_ROW_BYTES 512u
#define LMDB_MAP_BASE_BYTES ((size_t)64 << 20)
#define LMDB_FILE_MODE 0644

/* The env flags that --sync stands for. */
static unsigned lmdb_sync_flags(const char *sync)
{
    if (strcasecmp(sync, "off") == 0) return MDB_NOSYNC;
    if (strcasecmp(sync, "normal") == 0) return MDB_NOMETASYNC;
    return 0;
}

static const char *lmdb_sync_text(const char *sync)
{
    unsigned flags = lmdb_sync_flags(sync);
    return flags == MDB_NOSYNC       ? "MDB_NOSYNC: commits do not sync"
           : flags == MDB_NOMETASYNC ? "MDB_NOMETASYNC: commits sync the data, not the meta page"
                                     : "default: each commit syncs data and meta page";
}

static void lmdb_ok(int rc, const char *what)
{
    if (rc != MDB_SUCCESS) die("LMDB %s: %s", what, mdb_strerror(rc));
}

/* Untimed, before each read: every row through a cursor against the checksum, and the count. */
static void lmdb_verify(MDB_env *env, MDB_dbi dbi, const struct data *d, const char *what)
{
    MDB_txn *txn;
    MDB_cursor *cursor;
    MDB_stat st;
    MDB_val k, v;
    size_t rows = 0, bad = 0;
    uint64_t sum = 0;
    lmdb_ok(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), "mdb_txn_begin");
    lmdb_ok(mdb_stat(txn, dbi, &st), "mdb_stat");
    lmdb_ok(mdb_cursor_open(txn, dbi, &cursor), "mdb_cursor_open");
    int rc;
    for (rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT)) {
        if (k.mv_size == KEY_LEN && v.mv_size == VALUE_LEN)
            sum += row_hash(k.mv_data, v.mv_data);
        else
            bad++;
        rows++;
    }
    if (rc != MDB_NOTFOUND) lmdb_ok(rc, "mdb_cursor_get");
    mdb_cursor_close(cursor);
    mdb_txn_abort(txn);
    if (rows != d->n || st.ms_entries != d->n || bad || sum != d->sum_before)
        mismatch("LMDB %s: %zu rows, %zu entries (expected %zu), %zu with wrong lengths, checksum "
                 "%s",
                 what, rows, (size_t)st.ms_entries, d->n, bad,
                 sum == d->sum_before ? "ok" : "differs");
}

/* put, get and cursor scan in ns per row or lookup; the file's allocated MB afterwards. */
static void run_lmdb(const struct options *o, const struct data *d, double ns[NLMDB],
                     double *disk_mb)
{
    char name[128], path[PATH_MAX + 256];
    snprintf(name, sizeof name, "%slmdb.mdb", g_prefix); /* and its lock file, name-lock */
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    lmdb_ok(mdb_env_create(&env), "mdb_env_create");
    lmdb_ok(mdb_env_set_mapsize(env, LMDB_MAP_BASE_BYTES + d->n * LMDB_MAP_ROW_BYTES),
            "mdb_env_set_mapsize");
    lmdb_ok(mdb_env_open(env, path, MDB_NOSUBDIR | lmdb_sync_flags(o->sync), LMDB_FILE_MODE),
            "mdb_env_open");
    lmdb_ok(mdb_txn_begin(env, NULL, 0, &txn), "mdb_txn_begin");
    lmdb_ok(mdb_dbi_open(txn, NULL, 0, &dbi), "mdb_dbi_open");
    lmdb_ok(mdb_txn_commit(txn), "mdb_txn_commit");

    progress("lmdb", d->n, "put");
    uint64_t t0 = now_ns();
    lmdb_ok(mdb_txn_begin(env, NULL, 0, &txn), "mdb_txn_begin");
    for (size_t i = 0; i < d->n; i++) {
        MDB_val k = {KEY_LEN, (void *)key_of(d, i)}, v = {VALUE_LEN, (void *)value_of(i, 0)};
        lmdb_ok(mdb_put(txn, dbi, &k, &v, MDB_NOOVERWRITE), "mdb_put");
    }
    lmdb_ok(mdb_txn_commit(txn), "mdb_txn_commit");
    ns[L_PUT] = (double)(now_ns() - t0) / (double)d->n;

    progress("lmdb", d->n, "get");
    lmdb_verify(env, dbi, d, "scan after put");
    size_t missing = 0, wrong = 0;
    t0 = now_ns();
    lmdb_ok(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), "mdb_txn_begin");
    for (size_t j = 0; j < d->m; j++) {
        size_t i = d->perm[0][j];
        MDB_val k = {KEY_LEN, (void *)key_of(d, i)}, v;
        int rc = mdb_get(txn, dbi, &k, &v);
        if (rc == MDB_NOTFOUND)
            missing++;
        else if (rc != MDB_SUCCESS)
            lmdb_ok(rc, "mdb_get");
        else if (v.mv_size != VALUE_LEN || memcmp(v.mv_data, value_of(i, 0), VALUE_LEN) != 0)
            wrong++;
    }
    mdb_txn_abort(txn);
    ns[L_GET] = (double)(now_ns() - t0) / (double)d->m;
    if (missing || wrong)
        mismatch("LMDB get: %zu of %zu keys not found, %zu wrong values", missing, d->m, wrong);

    progress("lmdb", d->n, "cursor scan");
    lmdb_verify(env, dbi, d, "scan before the cursor scan");
    MDB_cursor *cursor;
    MDB_val k, v;
    size_t rows = 0;
    uint64_t bytes = 0;
    t0 = now_ns();
    lmdb_ok(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), "mdb_txn_begin");
    lmdb_ok(mdb_cursor_open(txn, dbi, &cursor), "mdb_cursor_open");
    int rc;
    for (rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT)) {
        bytes += k.mv_size + v.mv_size;
        rows++;
    }
    mdb_cursor_close(cursor);
    mdb_txn_abort(txn);
    uint64_t t1 = now_ns();
    if (rc != MDB_NOTFOUND) lmdb_ok(rc, "mdb_cursor_get");
    ns[L_SCAN] = rows ? (double)(t1 - t0) / (double)rows : 0;
    if (rows != d->n || bytes != (uint64_t)d->n * (KEY_LEN + VALUE_LEN))
        mismatch("LMDB cursor scan: %zu rows (expected %zu), %" PRIu64 " bytes", rows, d->n, bytes);

    mdb_env_close(env);
    *disk_mb = allocated_mb(name);
    remove_files(name);
}
#endif

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
    check_plan(db, kind_names[kind], key_plan(kind));
    snprintf(what, sizeof what, "concurrent %s: scan before lookups", k);
    verify_scan(&s, d, d->sum_before, what);
    /* Untimed: one pass of the lookups, so that the first timed pass does not pay for faulting
     * in the pages of a connection opened just now. */
    snprintf(what, sizeof what, "concurrent %s: warm-up lookups", k);
    run_lookups(&s, d, d->perm[0], 1, NULL, what);

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

/* ---- space: the files over a long run of updates, and compaction -------------------------- */

#define SPACE_TXN_OPS 100                  /* operations per transaction of both workload phases */
#define SPACE_SAMPLES 10                   /* samples per phase when --space-sample is not given */
#define SPACE_CHECKS 10000                 /* lookups checked byte for byte after the workload */
#define ZIPF_THETA 0.99                    /* YCSB's zipfian constant */
#define COMPACT_TIMEOUT_NS 120000000000ull /* the longest wait for compacting to read 0 */
#define COMPACT_POLL_US 2000               /* between polls of mmkv_stats' compacting */
#define BASELINE_NS 1000000000ull          /* reader and writer timed this long before 'compact' */
#define WRITER_GAP_US 1000          /* the compaction-time writer's pause between its commits */
#define SETTLE_NS 1000000000ull     /* the files have settled: no change in size for this long, */
#define SETTLE_MAX_NS 5000000000ull /* or this long after compacting read 0 */
/* Latency histograms: log-linear buckets of nanoseconds, exact below 2 * HIST_SUB_BUCKETS ns, then
 * HIST_SUB_BUCKETS to each power of two (each at most 1/HIST_SUB_BUCKETS, 3%, wide), up to 2^64. */
#define HIST_SUB_BITS 5
#define HIST_SUB_BUCKETS (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB_BUCKETS)
#define MIB (1024.0 * 1024.0)
/* The goals the section reports against (they decide nothing about the exit status). */
#define GOAL_ON_OFF 0.5          /* update throughput, autocompact on / off: at least */
#define GOAL_COMPACTED_RATIO 1.3 /* mmkv / native allocated after 'compact': at most */
#define GOAL_PAUSE_NS SLOW_NS    /* longest reader pause, longest writer commit: below */
#define GOAL_EMPTY_BYTES MIB     /* allocated after deleting every row and compacting: below */

enum { SP_LOAD, SP_UPDATE, SP_YCSB, SP_COMPACT, SP_EMPTY, NSPHASES };
static const char *const sp_names[NSPHASES] = {"load", "uniform updates", "YCSB A",
                                               "after 'compact'", "deleted + compact"};
enum { RUN_MMKV, RUN_MMKV_OFF, RUN_NATIVE, NRUNS };
static const char *const run_names[NRUNS] = {"mmkv", "mmkv autocompact=off", "native+mmap"};
static const char *const run_files[NRUNS] = {"space-mmkv", "space-mmkvoff", "space-native"};

struct latency {
    uint64_t *bucket; /* HIST_BUCKETS counts (hist_bucket) */
    uint64_t count, max_ns, slow;
    uint64_t failures; /* attempts that failed, not counted above */
};

/* One 'compact' command and the wait for it, with a reader and a writer timed meanwhile. */
struct space_compaction {
    char unavailable[512]; /* why a step could not be taken: "" if every step could */
    int started, finished;
    double seconds;
    int have_start;
    uint64_t start_before, start_after;           /* mmkv_stats' log_start */
    double alloc_before, alloc_peak, alloc_after; /* after: when compacting read 0 */
    double alloc_settled, settled_s;     /* once the size stayed put, and how long after that was */
    struct latency reader[2], writer[2]; /* [0] before 'compact', [1] while it runs */
    char reader_err[256], writer_err[256]; /* their first failures */
};

struct space_phase {
    double alloc;     /* bytes, at the end of the phase */
    double ops_per_s; /* rows, operations or MB (of log drained) per second; 0: none */
    double seconds;
};

struct space_run {
    int available;
    char unavailable[512];
    struct space_phase phase[NSPHASES];
    size_t nsamples;
    double *sample_alloc; /* bytes */
    uint64_t *sample_ops;
    int *sample_phase;
    struct space_compaction compact, compact_empty;
    char stats_before[1024], stats_after[1024], stats_empty[1024];
};

struct zipf {
    uint64_t n;
    double zetan, alpha, eta, half_pow;
};

/* Everything one run of the workload works with. */
struct space_ctx {
    const struct options *o;
    const struct data *d;
    int run, kind;
    sqlite3 *db;
    struct stmts s;
    char path[PATH_MAX + 256];
    uint32_t *ver;   /* each row's version: 0 as loaded, one more at each update */
    uint64_t expect; /* checksum of every row at its version */
    uint64_t ops_done;
    size_t sample_every;
    const struct zipf *z;
    struct space_run *r;
};

/* Row i's value at version v; version 0 is the one run_insert loads. */
static const unsigned char *space_value(size_t i, uint32_t v)
{
    if (v == 0) return value_of(i, 0);
    uint64_t h = mix64(g_value_seed ^ mix64(((uint64_t)i << 32 | v) ^ 0x5ace5ace5ace5aceULL));
    return g_pool + (size_t)(h >> 44);
}

static double uniform01(uint64_t *state)
{
    return (double)(splitmix64(state) >> 11) * 0x1.0p-53;
}

/* YCSB's ZipfianGenerator (Gray et al., "Quickly generating billion-record synthetic
 * databases"), item 0 the most popular. */
static void zipf_init(struct zipf *z, uint64_t n, double theta)
{
    double zeta2 = 1.0 + pow(0.5, theta);
    z->n = n;
    z->zetan = 0;
    for (uint64_t i = 1; i <= n; i++)
        z->zetan += 1.0 / pow((double)i, theta);
    z->alpha = 1.0 / (1.0 - theta);
    z->eta = (1.0 - pow(2.0 / (double)n, 1.0 - theta)) / (1.0 - zeta2 / z->zetan);
    z->half_pow = pow(0.5, theta);
}

/* A row: the zipfian item scrambled by a hash, as YCSB's ScrambledZipfianGenerator does, so that
 * the popular rows are not the first ones loaded. */
static size_t zipf_row(const struct zipf *z, uint64_t *state)
{
    double u = uniform01(state), uz = u * z->zetan;
    uint64_t item;
    if (uz < 1.0)
        item = 0;
    else if (uz < 1.0 + z->half_pow)
        item = 1;
    else
        item = (uint64_t)((double)z->n * pow(z->eta * u - z->eta + 1.0, z->alpha));
    if (item >= z->n) item = z->n - 1;
    return (size_t)(mix64(item ^ 0x7a1bf1a9ull) % z->n);
}

static void latency_init(struct latency *l)
{
    memset(l, 0, sizeof *l);
    l->bucket = calloc(HIST_BUCKETS, sizeof *l->bucket);
    if (!l->bucket) die("out of memory");
}

/* The bucket of a latency: below 2 * HIST_SUB_BUCKETS its own; above, by the power of two below it
 * and the HIST_SUB_BITS bits after its leading one. */
static size_t hist_bucket(uint64_t ns)
{
    if (ns < 2 * HIST_SUB_BUCKETS) return (size_t)ns;
    unsigned shift = (unsigned)(63 - __builtin_clzll(ns)) - HIST_SUB_BITS;
    return (size_t)shift * HIST_SUB_BUCKETS + (size_t)(ns >> shift);
}

/* The least latency above bucket b's, in ns. */
static double hist_upper_ns(size_t b)
{
    if (b < 2 * HIST_SUB_BUCKETS) return (double)(b + 1);
    unsigned shift = (unsigned)(b / HIST_SUB_BUCKETS) - 1;
    return ldexp((double)(b % HIST_SUB_BUCKETS + HIST_SUB_BUCKETS + 1), (int)shift);
}

static void latency_add(struct latency *l, uint64_t ns)
{
    l->bucket[hist_bucket(ns)]++;
    l->count++;
    if (ns > l->max_ns) l->max_ns = ns;
    if (ns > GOAL_PAUSE_NS) l->slow++;
}

/* The q-quantile in microseconds: its bucket's upper edge, at most the largest latency seen. */
static double latency_quantile_us(const struct latency *l, double q)
{
    uint64_t want = (uint64_t)(q * (double)l->count), seen = 0;
    double max_ns = (double)l->max_ns;
    for (size_t b = 0; b < HIST_BUCKETS; b++) {
        seen += l->bucket[b];
        if (seen > want) return fmin(hist_upper_ns(b), max_ns) / 1000.0;
    }
    return max_ns / 1000.0;
}

static void latency_print(const char *who, const struct latency *l)
{
    printf("    %-28s %9" PRIu64, who, l->count);
    if (l->count)
        printf(" | p50 %7.0f us  p99 %7.0f us  max %9.1f us | > %llu ms: %" PRIu64,
               latency_quantile_us(l, 0.50), latency_quantile_us(l, 0.99),
               (double)l->max_ns / 1000.0, GOAL_PAUSE_NS / 1000000, l->slow);
    if (l->failures) printf(" | FAILED: %" PRIu64, l->failures);
    printf("\n");
}

/* sql, not dying: SQLite's result code, and its message in err. */
static int try_sql(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) snprintf(err, errlen, "%s", msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return rc;
}

/* The first column of the first row of sql as an integer, not dying. */
static int try_int64(sqlite3 *db, const char *sql, uint64_t *out, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", sqlite3_errmsg(db));
        return rc;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = (uint64_t)sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    } else {
        snprintf(err, errlen, "%s", rc == SQLITE_DONE ? "no row" : sqlite3_errmsg(db));
        if (rc == SQLITE_DONE) rc = SQLITE_ERROR;
    }
    sqlite3_finalize(st);
    return rc;
}

/* mmkv_stats('kv') as "column=value ...", or why it is not available. */
static void stats_dump(sqlite3 *db, char *out, size_t len)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT * FROM mmkv_stats('kv')", -1, &st, NULL) != SQLITE_OK) {
        snprintf(out, len, "not available: %s", sqlite3_errmsg(db));
        return;
    }
    size_t used = 0;
    out[0] = 0;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        for (int c = 0; c < sqlite3_column_count(st); c++) {
            const unsigned char *t = sqlite3_column_text(st, c);
            int w = snprintf(out + used, len - used, "%s%s=%s", c ? " " : "",
                             sqlite3_column_name(st, c), t ? (const char *)t : "NULL");
            if (w < 0 || (size_t)w >= len - used) break;
            used += (size_t)w;
        }
    } else {
        snprintf(out, len, "not available: %s", rc == SQLITE_DONE ? "no row" : sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
}

static double file_allocated(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (double)st.st_blocks * 512.0 : 0;
}

/* Allocated bytes of the data file and the index of table kv of the database at db_path, named
 * as README's "Files" says. */
static void mmkv_allocated(const char *db_path, double *data, double *index)
{
    char p[PATH_MAX + 300];
    snprintf(p, sizeof p, "%s-kv.mmkv", db_path);
    *data = file_allocated(p);
    snprintf(p, sizeof p, "%s-kv.mmkv-index", db_path);
    *index = file_allocated(p);
}

/* Allocated bytes: mmkv's data file and index; native's database and WAL after a checkpoint that
 * empties the WAL. */
static double space_allocated(struct space_ctx *c)
{
    char p[PATH_MAX + 300];
    if (c->kind == KIND_MMKV) {
        double data, index;
        mmkv_allocated(c->path, &data, &index);
        return data + index;
    }
    exec_sql(c->db, "PRAGMA wal_checkpoint(TRUNCATE)");
    snprintf(p, sizeof p, "%s-wal", c->path);
    return file_allocated(c->path) + file_allocated(p);
}

static void space_sample(struct space_ctx *c, int phase)
{
    struct space_run *r = c->r;
    double a = space_allocated(c);
    r->sample_alloc[r->nsamples] = a;
    r->sample_ops[r->nsamples] = c->ops_done;
    r->sample_phase[r->nsamples] = phase;
    r->nsamples++;
    r->phase[phase].alloc = a;
}

/* One row updated to its next version, inside the caller's transaction. */
static void space_update(struct space_ctx *c, size_t i, size_t *unchanged)
{
    uint32_t v = c->ver[i] + 1;
    sqlite3_bind_blob(c->s.update, 1, space_value(i, v), VALUE_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(c->s.update, 2, key_of(c->d, i), KEY_LEN, SQLITE_STATIC);
    step_done(c->s.update);
    if (sqlite3_changes(c->db) != 1) (*unchanged)++;
    c->expect += row_hash(key_of(c->d, i), space_value(i, v));
    c->expect -= row_hash(key_of(c->d, i), space_value(i, c->ver[i]));
    c->ver[i] = v;
}

enum { LOOKUP_OK, LOOKUP_WRONG, LOOKUP_MISSING, LOOKUP_FAILED };

/* Row i looked up and compared with its version v. An error dies, or with err (a thread's) is
 * LOOKUP_FAILED with the message there. */
static int space_lookup(sqlite3_stmt *lookup, const struct data *d, size_t i, uint32_t v, char *err,
                        size_t errlen)
{
    sqlite3_bind_blob(lookup, 1, key_of(d, i), KEY_LEN, SQLITE_STATIC);
    int rc = sqlite3_step(lookup), result = LOOKUP_OK;
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_bytes(lookup, 0) != VALUE_LEN ||
            memcmp(sqlite3_column_blob(lookup, 0), space_value(i, v), VALUE_LEN) != 0)
            result = LOOKUP_WRONG;
    } else if (rc == SQLITE_DONE) {
        result = LOOKUP_MISSING;
    } else if (err) {
        snprintf(err, errlen, "lookup: %s", sqlite3_errmsg(sqlite3_db_handle(lookup)));
        result = LOOKUP_FAILED;
    } else {
        die("lookup: %s", sqlite3_errmsg(sqlite3_db_handle(lookup)));
    }
    sqlite3_reset(lookup);
    return result;
}

#define YCSB_TXN_OPS 100 /* operations per transaction */
#define PERCENT 100

struct ycsb_workload {
    const char *name, *mix;
    unsigned read_percent; /* the rest are updates, or read-modify-writes */
    int read_modify_write;
};

enum { YCSB_A, YCSB_B, YCSB_C, YCSB_F, NYCSB };
static const struct ycsb_workload ycsb_workloads[NYCSB] = {
    {"A", "50% read, 50% update", 50, 0},
    {"B", "95% read, 5% update", 95, 0},
    {"C", "100% read", 100, 0},
    {"F", "50% read, 50% read-modify-write", 50, 1},
};
/* What a run of operations found wrong (the caller reports it). */
struct op_tally {
    size_t unchanged, missing, wrong; /* updates not changing one row; lookups finding none, or
                                         a wrong value */
};

/* One operation of workload y on a zipfian row: a read, or an update (after a read, for a
** read-modify-write), each checked. */
static void ycsb_op(struct space_ctx *c, const struct ycsb_workload *y, uint64_t *state,
                    struct op_tally *t)
{
    size_t i = zipf_row(c->z, state);
    int read = splitmix64(state) % PERCENT < y->read_percent;
    if (read || y->read_modify_write) {
        int found = space_lookup(c->s.lookup, c->d, i, c->ver[i], NULL, 0);
        t->wrong += found == LOOKUP_WRONG;
        t->missing += found == LOOKUP_MISSING;
    }
    if (!read) space_update(c, i, &t->unchanged);
}

/* A phase of --space-ops operations in transactions of SPACE_TXN_OPS: uniform updates, or YCSB
 * workload A (zipfian rows, half reads, half updates). Sampled every sample_every operations;
 * the samples are not timed. */
static void space_workload(struct space_ctx *c, int phase)
{
    const struct data *d = c->d;
    uint64_t state = c->o->seed ^ mix64(0x5ace0000ull + (uint64_t)phase);
    size_t total = c->o->space_ops, done = 0, next = c->sample_every, progress_at = 0;
    struct op_tally t = {0};
    uint64_t timed = 0;
    char what[160];
    while (done < total) {
        size_t ops = total - done < SPACE_TXN_OPS ? total - done : SPACE_TXN_OPS;
        uint64_t t0 = now_ns();
        step_done(c->s.begin);
        for (size_t k = 0; k < ops; k++) {
            if (phase == SP_UPDATE)
                space_update(c, (size_t)(splitmix64(&state) % d->n), &t.unchanged);
            else
                ycsb_op(c, &ycsb_workloads[YCSB_A], &state, &t);
        }
        step_done(c->s.commit);
        timed += now_ns() - t0;
        done += ops;
        c->ops_done += ops;
        if (done >= next || done == total) {
            space_sample(c, phase);
            while (next <= done)
                next += c->sample_every;
        }
        if (done >= progress_at) {
            snprintf(what, sizeof what, "space: %s %zu/%zu", sp_names[phase], done, total);
            progress(run_names[c->run], d->n, what);
            progress_at = done + total / 100;
        }
    }
    c->r->phase[phase].seconds = (double)timed / 1e9;
    c->r->phase[phase].ops_per_s = timed ? (double)total * 1e9 / (double)timed : 0;
    if (t.unchanged || t.missing || t.wrong)
        mismatch("space %s: %s: %zu updates did not change exactly one row, %zu lookups found "
                 "no row, %zu a wrong value",
                 run_names[c->run], sp_names[phase], t.unchanged, t.missing, t.wrong);
}

/* The rows after a phase: every row through the scan's checksum, and SPACE_CHECKS random rows
 * looked up byte for byte. */
static void space_check_rows(struct space_ctx *c, const char *after)
{
    char what[160];
    snprintf(what, sizeof what, "space %s: scan after %s", run_names[c->run], after);
    verify_scan(&c->s, c->d, c->expect, what);
    snprintf(what, sizeof what, "space %s: after %s", run_names[c->run], after);
    check_count(&c->s, c->d, what);
    uint64_t state = c->o->seed ^ 0xc4ec4ull ^ c->ops_done;
    size_t missing = 0, wrong = 0, checks = c->d->n < SPACE_CHECKS ? c->d->n : SPACE_CHECKS;
    for (size_t j = 0; j < checks; j++) {
        size_t i = (size_t)(splitmix64(&state) % c->d->n);
        int found = space_lookup(c->s.lookup, c->d, i, c->ver[i], NULL, 0);
        wrong += found == LOOKUP_WRONG;
        missing += found == LOOKUP_MISSING;
    }
    if (missing || wrong)
        mismatch("space %s: lookups after %s: %zu of %zu keys not found, %zu wrong values",
                 run_names[c->run], after, missing, checks, wrong);
}

static sqlite3_int64 count_rows(const struct stmts *s)
{
    if (sqlite3_step(s->count) != SQLITE_ROW)
        die("count: %s", sqlite3_errmsg(sqlite3_db_handle(s->count)));
    sqlite3_int64 n = sqlite3_column_int64(s->count, 0);
    sqlite3_reset(s->count);
    return n;
}

/* A reader (single-key SELECTs in autocommit, of even rows, which stay as they are) or a writer
 * (1-row transactions of odd rows) on a connection of its own, while 'compact' runs. */
struct space_worker {
    pthread_t thread;
    int writer;
    sqlite3 *db;
    sqlite3_stmt *begin, *commit, *stmt;
    const struct data *d;
    uint32_t *ver; /* the writer owns the odd rows' entries meanwhile, the reader reads the even */
    uint64_t state;
    atomic_int *stop, *window;
    struct latency lat[2];
    size_t missing, wrong, unchanged;
    size_t tries, failures; /* lookups or transactions tried, and those that failed */
    uint64_t expect_delta;
    char err[256]; /* the first failure's message */
};

/* A step of the worker's loop, not dying: 0, or 1 with the message in w->err if it is the first. */
static int worker_step(struct space_worker *w, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(st);
        return 0;
    }
    if (!w->err[0])
        snprintf(w->err, sizeof w->err, "%s: %s", sqlite3_sql(st), sqlite3_errmsg(w->db));
    sqlite3_reset(st);
    return 1;
}

static void *worker_main(void *arg)
{
    struct space_worker *w = arg;
    size_t n = w->d->n, evens = (n + 1) / 2, odds = n / 2;
    uint64_t prev = now_ns();
    while (!atomic_load(w->stop)) {
        int window = atomic_load(w->window);
        if (!w->writer) {
            size_t i = (size_t)(splitmix64(&w->state) % evens) * 2;
            char err[sizeof w->err];
            int found = space_lookup(w->stmt, w->d, i, w->ver[i], err, sizeof err);
            w->tries++;
            if (found == LOOKUP_FAILED) {
                if (!w->failures++) memcpy(w->err, err, sizeof err);
                w->lat[window].failures++;
            }
            w->wrong += found == LOOKUP_WRONG;
            w->missing += found == LOOKUP_MISSING;
            uint64_t t = now_ns();
            latency_add(&w->lat[window], t - prev);
            prev = t;
            continue;
        }
        size_t i = (size_t)(splitmix64(&w->state) % odds) * 2 + 1;
        uint32_t v = w->ver[i] + 1;
        uint64_t t0 = now_ns();
        w->tries++;
        sqlite3_bind_blob(w->stmt, 1, space_value(i, v), VALUE_LEN, SQLITE_STATIC);
        sqlite3_bind_blob(w->stmt, 2, key_of(w->d, i), KEY_LEN, SQLITE_STATIC);
        if (worker_step(w, w->begin) || worker_step(w, w->stmt) || worker_step(w, w->commit)) {
            /* Not committed (a failed COMMIT leaves the transaction open): the row keeps its
             * version; go on, so that the rest of the compaction is timed too. */
            sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
            w->failures++;
            w->lat[window].failures++;
            usleep(WRITER_GAP_US);
            continue;
        }
        latency_add(&w->lat[window], now_ns() - t0);
        if (sqlite3_changes(w->db) != 1) w->unchanged++;
        w->expect_delta += row_hash(key_of(w->d, i), space_value(i, v));
        w->expect_delta -= row_hash(key_of(w->d, i), space_value(i, w->ver[i]));
        w->ver[i] = v;
        usleep(WRITER_GAP_US);
    }
    return NULL;
}

static void worker_start(struct space_worker *w, struct space_ctx *c, int writer, atomic_int *stop,
                         atomic_int *window)
{
    memset(w, 0, sizeof *w);
    w->writer = writer;
    w->db = open_wal(c->path, c->kind, c->o->space_sync, c->o);
    w->begin = prepare(w->db, "BEGIN IMMEDIATE");
    w->commit = prepare(w->db, "COMMIT");
    w->stmt = prepare(w->db, writer ? "UPDATE kv SET value=?1 WHERE key=?2"
                                    : "SELECT value FROM kv WHERE key=?1");
    w->d = c->d;
    w->ver = c->ver;
    w->state = c->o->seed ^ mix64(0x3011e2ull + (uint64_t)writer + c->ops_done);
    w->stop = stop;
    w->window = window;
    latency_init(&w->lat[0]);
    latency_init(&w->lat[1]);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) die("pthread_create failed");
}

/* Joins the worker and takes in what it found and wrote. */
static void worker_finish(struct space_worker *w, struct space_ctx *c, struct latency out[2],
                          char *err, size_t errlen)
{
    pthread_join(w->thread, NULL);
    const char *who = w->writer ? "writer" : "reader";
    if (w->failures)
        mismatch("space %s: %zu of %zu %s of the %s during compaction failed; the first: %s",
                 run_names[c->run], w->failures, w->tries, w->writer ? "transactions" : "lookups",
                 who, w->err);
    if (w->missing || w->wrong || w->unchanged)
        mismatch("space %s: the %s during compaction: %zu keys not found, %zu wrong values, %zu "
                 "updates that did not change one row",
                 run_names[c->run], who, w->missing, w->wrong, w->unchanged);
    c->expect += w->expect_delta;
    snprintf(err, errlen, "%s", w->err);
    out[0] = w->lat[0];
    out[1] = w->lat[1];
    sqlite3_finalize(w->begin);
    sqlite3_finalize(w->commit);
    sqlite3_finalize(w->stmt);
    close_db(w->db, c->path);
}

/* 'compact', then mmkv_stats' compacting polled until 0; with timed_load, a reader and a writer
 * run on connections of their own, timed for BASELINE_NS before the command and until it ends. */
static void space_compact(struct space_ctx *c, struct space_compaction *k, int timed_load)
{
    char err[256];
    k->have_start = try_int64(c->db, "SELECT log_start FROM mmkv_stats('kv')", &k->start_before,
                              err, sizeof err) == SQLITE_OK;
    k->alloc_before = k->alloc_peak = space_allocated(c);

    atomic_int stop = 0, window = 0;
    struct space_worker reader, writer;
    if (timed_load) {
        progress(run_names[c->run], c->d->n, "space: reader and writer before 'compact'");
        worker_start(&reader, c, 0, &stop, &window);
        worker_start(&writer, c, 1, &stop, &window);
        uint64_t t0 = now_ns();
        while (now_ns() - t0 < BASELINE_NS)
            usleep(COMPACT_POLL_US);
        atomic_store(&window, 1);
    }
    progress(run_names[c->run], c->d->n, "space: 'compact'");
    uint64_t t0 = now_ns();
    if (try_sql(c->db, "INSERT INTO kv(kv) VALUES('compact')", err, sizeof err) != SQLITE_OK) {
        snprintf(k->unavailable, sizeof k->unavailable, "'compact': %s", err);
    } else {
        k->started = 1;
        for (;;) {
            uint64_t compacting;
            if (try_int64(c->db, "SELECT compacting FROM mmkv_stats('kv')", &compacting, err,
                          sizeof err) != SQLITE_OK) {
                snprintf(k->unavailable, sizeof k->unavailable, "compacting: %s", err);
                break;
            }
            k->alloc_after = space_allocated(c);
            if (k->alloc_after > k->alloc_peak) k->alloc_peak = k->alloc_after;
            if (!compacting) {
                k->finished = 1;
                break;
            }
            if (now_ns() - t0 > COMPACT_TIMEOUT_NS) break;
            usleep(COMPACT_POLL_US);
        }
    }
    uint64_t ended = now_ns();
    k->seconds = (double)(ended - t0) / 1e9;
    if (timed_load) {
        atomic_store(&stop, 1);
        worker_finish(&reader, c, k->reader, k->reader_err, sizeof k->reader_err);
        worker_finish(&writer, c, k->writer, k->writer_err, sizeof k->writer_err);
    }
    if (k->have_start)
        k->have_start = try_int64(c->db, "SELECT log_start FROM mmkv_stats('kv')", &k->start_after,
                                  err, sizeof err) == SQLITE_OK;
    /* Space may be given back after compacting reads 0: follow the files until they settle. */
    uint64_t changed = ended;
    k->alloc_settled = space_allocated(c);
    if (!k->finished) k->alloc_after = k->alloc_settled;
    while (k->finished && now_ns() - changed < SETTLE_NS && now_ns() - ended < SETTLE_MAX_NS) {
        usleep(COMPACT_POLL_US);
        double a = space_allocated(c);
        if (a != k->alloc_settled) changed = now_ns();
        k->alloc_settled = a;
    }
    k->settled_s = (double)(changed - ended) / 1e9;
}

static void space_run_one(const struct options *o, const struct data *d, const struct zipf *z,
                          int run, struct space_run *r)
{
    struct space_ctx c = {.o = o, .d = d, .run = run, .z = z, .r = r};
    char name[128], sql[160], err[256], what[160];
    c.kind = run == RUN_NATIVE ? KIND_NATIVE_MMAP : KIND_MMKV;
    snprintf(name, sizeof name, "%s%s.db", g_prefix, run_files[run]);
    snprintf(c.path, sizeof c.path, "%s/%s", g_dir, name);
    size_t per_phase = (o->space_ops + o->space_sample - 1) / o->space_sample + 1;
    r->sample_alloc = xmalloc((2 * per_phase + 1) * sizeof *r->sample_alloc);
    r->sample_ops = xmalloc((2 * per_phase + 1) * sizeof *r->sample_ops);
    r->sample_phase = xmalloc((2 * per_phase + 1) * sizeof *r->sample_phase);
    c.sample_every = o->space_sample;

    c.db = open_wal(c.path, c.kind, o->space_sync, o);
    if (c.kind == KIND_NATIVE_MMAP)
        create_kv(c.db, c.kind, o->space_sync);
    else {
        snprintf(sql, sizeof sql, "CREATE VIRTUAL TABLE kv USING mmkv(sync=%s%s)", o->space_sync,
                 run == RUN_MMKV_OFF ? ", autocompact=off" : "");
        if (try_sql(c.db, sql, err, sizeof err) != SQLITE_OK) {
            snprintf(r->unavailable, sizeof r->unavailable, "%s: %s", sql, err);
            close_db(c.db, c.path);
            remove_files(name);
            return;
        }
    }
    r->available = 1;
    prepare_stmts(c.db, &c.s);
    check_plan(c.db, kind_names[c.kind], key_plan(c.kind));
    c.ver = calloc(d->n, sizeof *c.ver);
    if (!c.ver) die("out of memory");
    c.expect = d->sum_before;

    progress(run_names[run], d->n, "space: load");
    double ns = run_insert(&c.s, d);
    snprintf(what, sizeof what, "space %s: after load", run_names[run]);
    check_count(&c.s, d, what);
    r->phase[SP_LOAD].ops_per_s = ns > 0 ? 1e9 / ns : 0;
    r->phase[SP_LOAD].seconds = ns * (double)d->n / 1e9;
    space_sample(&c, SP_LOAD);

    space_workload(&c, SP_UPDATE);
    space_workload(&c, SP_YCSB);
    progress(run_names[run], d->n, "space: checking the rows");
    space_check_rows(&c, "the workload");

    if (c.kind == KIND_MMKV) {
        stats_dump(c.db, r->stats_before, sizeof r->stats_before);
        space_compact(&c, &r->compact, 1);
        stats_dump(c.db, r->stats_after, sizeof r->stats_after);
        space_check_rows(&c, "'compact'");
        r->phase[SP_COMPACT].alloc = r->compact.alloc_settled;
        r->phase[SP_COMPACT].seconds = r->compact.seconds;
        if (r->compact.have_start && r->compact.seconds > 0)
            r->phase[SP_COMPACT].ops_per_s =
                (double)(r->compact.start_after - r->compact.start_before) / MIB /
                r->compact.seconds;
    }

    progress(run_names[run], d->n, "space: delete every row");
    uint64_t t0 = now_ns();
    exec_sql(c.db, "DELETE FROM kv");
    double del_s = (double)(now_ns() - t0) / 1e9;
    sqlite3_int64 left = count_rows(&c.s);
    if (left != 0)
        mismatch("space %s: count(*) = %lld after deleting every row", run_names[run],
                 (long long)left);
    r->phase[SP_EMPTY].seconds = del_s;
    r->phase[SP_EMPTY].ops_per_s = del_s > 0 ? (double)d->n / del_s : 0;
    if (c.kind == KIND_MMKV) {
        space_compact(&c, &r->compact_empty, 0);
        stats_dump(c.db, r->stats_empty, sizeof r->stats_empty);
        left = count_rows(&c.s);
        if (left != 0)
            mismatch("space %s: count(*) = %lld after the compaction of the empty table",
                     run_names[run], (long long)left);
        r->phase[SP_EMPTY].alloc = r->compact_empty.alloc_settled;
    } else {
        r->phase[SP_EMPTY].alloc = space_allocated(&c);
    }
    free(c.ver);
    finalize_stmts(&c.s);
    close_db(c.db, c.path);
    remove_files(name);
}

static const char *goal(int met)
{
    return met ? "met" : "NOT met";
}

/* "1.23M ops/s"-style text of a rate. */
static void rate_text(char *out, size_t len, double v, const char *unit)
{
    if (v <= 0)
        snprintf(out, len, "-");
    else if (v >= 1e6)
        snprintf(out, len, "%.2fM %s", v / 1e6, unit);
    else if (v >= 1e3)
        snprintf(out, len, "%.1fk %s", v / 1e3, unit);
    else
        snprintf(out, len, "%.1f %s", v, unit);
}

/* The sample of run r whose ratio to native's sample at the same point is the largest. */
static size_t max_ratio_sample(const struct space_run *r, const struct space_run *native)
{
    size_t best = 0;
    for (size_t j = 0; j < r->nsamples && j < native->nsamples; j++)
        if (native->sample_alloc[j] > 0 && native->sample_alloc[best] > 0 &&
            r->sample_alloc[j] / native->sample_alloc[j] >
                r->sample_alloc[best] / native->sample_alloc[best])
            best = j;
    return best;
}

/* How a 'compact' ended: its time until compacting read 0, or why there is none. */
static void print_compact_outcome(const struct space_compaction *k)
{
    if (k->finished)
        printf("%.2f s until compacting read 0", k->seconds);
    else if (k->unavailable[0])
        printf("not available: %s", k->unavailable);
    else
        printf("NOT done: compacting still 1 after %.0f s", k->seconds);
}

/* The allocated bytes around a 'compact' (the caller ends the line). */
static void print_compact_space(const struct space_compaction *k)
{
    if (k->finished)
        printf("  allocated: %.2f MB before, at most %.2f MB while it ran, %.2f MB when compacting "
               "read 0,\n  %.2f MB settled (%.2f s later, then no change for %.1f s)",
               k->alloc_before / MIB, k->alloc_peak / MIB, k->alloc_after / MIB,
               k->alloc_settled / MIB, k->settled_s, (double)SETTLE_NS / 1e9);
    else
        printf("  allocated: %.2f MB", k->alloc_settled / MIB);
}

static void print_space_compaction(const struct space_run *r, const struct space_run *native)
{
    const struct space_compaction *k = &r->compact, *e = &r->compact_empty;
    double nat = native->phase[SP_YCSB].alloc, ratio = k->alloc_settled / nat;
    printf("  mmkv_stats before: %s\n", r->stats_before);
    printf("  'compact': ");
    print_compact_outcome(k);
    printf("\n");
    if (k->started && k->have_start)
        printf("  log drained: log_start %" PRIu64 " -> %" PRIu64 ": %.1f MB, %.1f MB/s\n",
               k->start_before, k->start_after, (double)(k->start_after - k->start_before) / MIB,
               r->phase[SP_COMPACT].ops_per_s);
    else if (k->started)
        printf("  log drained: not available (mmkv_stats' log_start)\n");
    print_compact_space(k);
    printf("; native %.2f MB: mmkv/native %.2f (goal <= %.1f: %s)\n", nat / MIB, ratio,
           GOAL_COMPACTED_RATIO, goal(ratio <= GOAL_COMPACTED_RATIO));
    if (k->started) {
        printf("  on connections of their own: reader = single-key SELECTs in autocommit "
               "(time between answers),\n  writer = 1-row transactions BEGIN IMMEDIATE to "
               "COMMIT, %d us apart; before = the %.0f s before 'compact'\n",
               WRITER_GAP_US, (double)BASELINE_NS / 1e9);
        printf("    %-28s %9s\n", "", "count");
        latency_print("reader, before", &k->reader[0]);
        latency_print("writer, before", &k->writer[0]);
        latency_print("reader, while it ran", &k->reader[1]);
        latency_print("writer, while it ran", &k->writer[1]);
        if (k->reader_err[0]) printf("  the reader's first failure: %s\n", k->reader_err);
        if (k->writer_err[0]) printf("  the writer's first failure: %s\n", k->writer_err);
        printf("  longest reader pause %.2f ms, longest writer commit %.2f ms while it ran "
               "(goal < %llu ms: %s)\n",
               (double)k->reader[1].max_ns / 1e6, (double)k->writer[1].max_ns / 1e6,
               GOAL_PAUSE_NS / 1000000,
               goal(k->reader[1].max_ns < GOAL_PAUSE_NS && k->writer[1].max_ns < GOAL_PAUSE_NS));
    }
    printf("  mmkv_stats after: %s\n", r->stats_after);
    printf("  every row deleted in %.2f s, then 'compact': ", r->phase[SP_EMPTY].seconds);
    print_compact_outcome(e);
    printf("\n");
    print_compact_space(e);
    printf(" (goal < %.0f MB: %s)\n", GOAL_EMPTY_BYTES / MIB,
           goal(e->alloc_settled < GOAL_EMPTY_BYTES));
    printf("  mmkv_stats then: %s\n", r->stats_empty);
}

static void print_space(const struct options *o, const struct space_run runs[NRUNS], double seconds)
{
    const struct space_run *native = &runs[RUN_NATIVE]; /* always there: no argument of mmkv's */
    printf("\nspace: N=%zu rows loaded in one transaction, then %zu uniform random updates, then "
           "%zu operations of YCSB A\n",
           o->space_n, o->space_ops, o->space_ops);
    printf("(zipfian %.2f, scrambled; half reads, half updates), both in transactions of %d; "
           "journal_mode=wal, synchronous=%s,\nmmkv sync=%s; allocated = st_blocks * 512: mmkv "
           "its data file and index, native+mmap its database and WAL\nafter "
           "wal_checkpoint(TRUNCATE); MB = 2^20 bytes; sampled every %zu operations, untimed;\n"
           "off = mmkv autocompact=off\n",
           ZIPF_THETA, SPACE_TXN_OPS, o->space_sync, o->space_sync, o->space_sample);
    for (int run = 0; run < RUN_NATIVE; run++)
        if (!runs[run].available)
            printf("%s: not available: %s\n", run_names[run], runs[run].unavailable);

    printf("\n%-16s %10s | %10s %10s %10s | %9s %9s\n", "phase", "ops done", "mmkv MB", "off MB",
           "native MB", "mmkv/nat", "off/nat");
    printf("------------------------------------------------------------------------------"
           "---\n");
    for (size_t j = 0; j < native->nsamples; j++) { /* every run samples at the same points */
        printf("%-16s %10" PRIu64 " |", sp_names[native->sample_phase[j]], native->sample_ops[j]);
        for (int run = 0; run < NRUNS; run++) {
            if (j < runs[run].nsamples)
                printf(" %10.1f", runs[run].sample_alloc[j] / MIB);
            else
                printf(" %10s", "n/a");
        }
        printf(" |");
        for (int run = 0; run < RUN_NATIVE; run++) {
            if (j < runs[run].nsamples && native->sample_alloc[j] > 0)
                printf(" %9.2f", runs[run].sample_alloc[j] / native->sample_alloc[j]);
            else
                printf(" %9s", "n/a");
        }
        printf("\n");
    }
    for (int run = 0; run < RUN_NATIVE; run++) {
        if (!runs[run].available) continue;
        size_t j = max_ratio_sample(&runs[run], native);
        printf("%s: largest mmkv/native %.2f, at %" PRIu64 " operations (%s)\n", run_names[run],
               runs[run].sample_alloc[j] / native->sample_alloc[j], runs[run].sample_ops[j],
               sp_names[runs[run].sample_phase[j]]);
    }

    const struct space_run *on = &runs[RUN_MMKV], *off = &runs[RUN_MMKV_OFF];
    if (on->available && off->available) {
        double u = on->phase[SP_UPDATE].ops_per_s / off->phase[SP_UPDATE].ops_per_s;
        double y = on->phase[SP_YCSB].ops_per_s / off->phase[SP_YCSB].ops_per_s;
        printf("throughput with autocompact on / off: uniform updates %.2f, YCSB A %.2f "
               "(goal >= %.1f: %s)\n",
               u, y, GOAL_ON_OFF, goal(u >= GOAL_ON_OFF && y >= GOAL_ON_OFF));
    } else {
        printf("throughput with autocompact on / off: not available\n");
    }

    for (int run = 0; run < RUN_NATIVE; run++) {
        if (!runs[run].available) continue;
        printf("\n%s, after the workload:\n", run_names[run]);
        print_space_compaction(&runs[run], native);
    }

    printf("\n%-18s %-8s | %9s %9s %6s | %13s %13s | %8s %8s\n", "phase", "table", "mmkv MB",
           "native MB", "ratio", "mmkv", "native", "mmkv", "native");
    printf("%-18s %-8s | %9s %9s %6s | %13s %13s | %8s %8s\n", "", "", "", "", "", "throughput",
           "throughput", "seconds", "seconds");
    printf("------------------------------------------------------------------------------------"
           "----------------\n");
    static const char *const units[NSPHASES] = {"rows/s", "ops/s", "ops/s", "MB/s", "rows/s"};
    for (int p = 0; p <= NSPHASES; p++) { /* p == NSPHASES: the largest ratio during the work */
        for (int run = 0; run < RUN_NATIVE; run++) {
            const struct space_run *r = &runs[run];
            printf("%-18s %-8s |",
                   run             ? ""
                   : p == NSPHASES ? "largest ratio"
                                   : sp_names[p],
                   run == RUN_MMKV ? "mmkv" : "mmkv off");
            if (!r->available) {
                printf(" not available\n");
                continue;
            }
            double m, n;
            if (p == NSPHASES) {
                size_t j = max_ratio_sample(r, native);
                m = r->sample_alloc[j];
                n = native->sample_alloc[j];
            } else {
                m = p == SP_COMPACT && !r->compact.started ? -1 : r->phase[p].alloc;
                n = native->phase[p == SP_COMPACT ? SP_YCSB : p]
                        .alloc; /* native has no compaction */
            }
            if (m < 0)
                printf(" %9s %9.1f %6s |", "n/a", n / MIB, "-");
            else
                printf(" %9.1f %9.1f %6.2f |", m / MIB, n / MIB, n > 0 ? m / n : 0);
            if (p == NSPHASES) {
                printf(" %13s %13s | %8s %8s\n", "-", "-", "-", "-");
                continue;
            }
            char a[32], b[32] = "-", ns[16] = "-";
            rate_text(a, sizeof a, r->phase[p].ops_per_s, units[p]);
            if (p != SP_COMPACT) {
                rate_text(b, sizeof b, native->phase[p].ops_per_s, units[p]);
                snprintf(ns, sizeof ns, "%.1f", native->phase[p].seconds);
            }
            char ms[16] = "-";
            if (p != SP_COMPACT || r->compact.started)
                snprintf(ms, sizeof ms, "%.1f", r->phase[p].seconds);
            printf(" %13s %13s | %8s %8s\n", a, b, ms, ns);
        }
    }
    printf("(native keeps its pages after the DELETE: SQLite returns them only with VACUUM)\n");
    printf("the space section took %.0f s\n", seconds);
    fflush(stdout);
}

static void run_space(const struct options *o)
{
    struct data d;
    struct zipf z;
    struct space_run runs[NRUNS];
    memset(runs, 0, sizeof runs);
    uint64_t start = now_ns();
    make_data(&d, o->space_n, 1, o->seed ^ 0x5ace0000ull);
    zipf_init(&z, o->space_n, ZIPF_THETA);
    for (int run = 0; run < NRUNS; run++)
        space_run_one(o, &d, &z, run, &runs[run]);
    if (isatty(2)) fprintf(stderr, "\r\033[K");
    print_space(o, runs, (double)(now_ns() - start) / 1e9);
    for (int run = 0; run < NRUNS; run++) {
        free(runs[run].sample_alloc);
        free(runs[run].sample_ops);
        free(runs[run].sample_phase);
        for (int w = 0; w < 2; w++) {
            free(runs[run].compact.reader[w].bucket);
            free(runs[run].compact.writer[w].bucket);
        }
    }
    free_data(&d);
}

/* ---- YCSB: workloads A, B, C and F through SQL -------------------------------------------- */

static const int ycsb_kinds[2] = {KIND_MMKV, KIND_NATIVE_MMAP};

/* --ycsb-ops operations of workload w on c's table, in transactions of YCSB_TXN_OPS: ops/s. The
 * rows and the operations are the same for every table kind. */
static double ycsb_workload(struct space_ctx *c, int w)
{
    const struct ycsb_workload *y = &ycsb_workloads[w];
    const char *k = kind_names[c->kind];
    uint64_t state = c->o->seed ^ mix64(0x7c5b0000ull + (uint64_t)w);
    size_t total = c->o->ycsb_ops, done = 0, progress_at = 0;
    struct op_tally t = {0};
    uint64_t timed = 0;
    char what[160];
    while (done < total) {
        size_t ops = total - done < YCSB_TXN_OPS ? total - done : YCSB_TXN_OPS;
        uint64_t t0 = now_ns();
        step_done(c->s.begin);
        for (size_t op = 0; op < ops; op++)
            ycsb_op(c, y, &state, &t);
        step_done(c->s.commit);
        timed += now_ns() - t0;
        done += ops;
        if (done >= progress_at) {
            snprintf(what, sizeof what, "YCSB %s %zu/%zu", y->name, done, total);
            progress(k, c->d->n, what);
            progress_at = done + total / 100;
        }
    }
    if (t.unchanged || t.missing || t.wrong)
        mismatch("YCSB %s %s: %zu updates did not change exactly one row, %zu lookups found no "
                 "row, %zu a wrong value",
                 k, y->name, t.unchanged, t.missing, t.wrong);
    return timed ? (double)total * 1e9 / (double)timed : 0;
}

/* Every workload in turn on one table kind: ops/s of each. */
static void ycsb_run_kind(const struct options *o, const struct data *d, const struct zipf *z,
                          int kind, double ops_per_s[NYCSB])
{
    struct space_ctx c = {.o = o, .d = d, .kind = kind, .z = z};
    char name[128], what[160];
    const char *k = kind_names[kind];
    snprintf(name, sizeof name, "%sycsb-%s.db", g_prefix, kind_files[kind]);
    snprintf(c.path, sizeof c.path, "%s/%s", g_dir, name);
    c.db = open_db(c.path);
    configure(c.db, kind, o);
    prepare_stmts(c.db, &c.s);
    check_plan(c.db, k, key_plan(kind));
    c.ver = calloc(d->n, sizeof *c.ver);
    if (!c.ver) die("out of memory");
    c.expect = d->sum_before;

    progress(k, d->n, "YCSB: load");
    run_insert(&c.s, d);
    snprintf(what, sizeof what, "YCSB %s: after load", k);
    check_count(&c.s, d, what);
    if (strcasecmp(g_journal_eff[kind], "wal") == 0)
        exec_sql(c.db, "PRAGMA wal_checkpoint(TRUNCATE)");
    for (int w = 0; w < NYCSB; w++) {
        snprintf(what, sizeof what, "YCSB %s: scan before workload %s", k, ycsb_workloads[w].name);
        verify_scan(&c.s, d, c.expect, what);
        ops_per_s[w] = ycsb_workload(&c, w);
    }
    snprintf(what, sizeof what, "YCSB %s: scan after workload %s", k,
             ycsb_workloads[NYCSB - 1].name);
    verify_scan(&c.s, d, c.expect, what);
    check_count(&c.s, d, what);
    free(c.ver);
    finalize_stmts(&c.s);
    close_db(c.db, c.path);
    remove_files(name);
}

static void run_ycsb(const struct options *o)
{
    struct data d;
    struct zipf z;
    double ops_per_s[2][NYCSB];
    uint64_t start = now_ns();
    make_data(&d, o->ycsb_n, 1, o->seed ^ 0x7c5b0000ull);
    zipf_init(&z, o->ycsb_n, ZIPF_THETA);
    for (int k = 0; k < 2; k++)
        ycsb_run_kind(o, &d, &z, ycsb_kinds[k], ops_per_s[k]);
    if (isatty(2)) fprintf(stderr, "\r\033[K");

    printf("\nYCSB: N=%zu rows loaded (untimed), then %zu operations of each workload in turn on "
           "the same table,\nrows zipfian %.2f scrambled, in transactions of %d operations (BEGIN "
           "to COMMIT timed); journal_mode=%s,\nsynchronous=%s; mmkv with default arguments but "
           "sync=%s; every row checked by an untimed scan\nbefore each workload and after the "
           "last\n",
           o->ycsb_n, o->ycsb_ops, ZIPF_THETA, YCSB_TXN_OPS, g_journal_eff[KIND_MMKV],
           o->synchronous, o->sync);
    printf("\n%-36s | %12s %12s | %11s\n", "workload", "mmkv", "native+mmap", "mmkv/native");
    printf("%-36s | %12s %12s | %11s\n", "", "ops/s", "ops/s", "(ops/s)");
    printf("------------------------------------------------------------------------------\n");
    for (int w = 0; w < NYCSB; w++) {
        char label[64];
        snprintf(label, sizeof label, "%s (%s)", ycsb_workloads[w].name, ycsb_workloads[w].mix);
        double m = ops_per_s[0][w], n = ops_per_s[1][w];
        printf("%-36s | %12.0f %12.0f | %10.2fx\n", label, m, n, n > 0 ? m / n : 0);
    }
    printf("the YCSB section took %.0f s\n", (double)(now_ns() - start) / 1e9);
    fflush(stdout);
    free_data(&d);
}

/* ---- growth and memory: a large load, resident memory, the open, the index rebuild -------- */

#define GROWTH_INSERT_SQL "INSERT INTO kv VALUES(?, ?)"
#define GROWTH_LOOKUP_SQL "SELECT value FROM kv WHERE key = ?"
#define GROWTH_TXN_ROWS 10000  /* inserts per transaction of the load */
#define GROWTH_POINTS 4        /* resident memory at N/8, N/4, N/2 and N rows */
#define GROWTH_CHECKS 500      /* random rows looked up byte for byte after each phase */
#define GROWTH_OPENS 5         /* timed opens of each table */
#define GROWTH_FLOOR_ROWS 1000 /* rows of the native table whose open is the floor */
#define GROWTH_SEED 0x970e7400ull
#define KIB 1024.0
/* The goals the section reports against (they decide nothing about the exit status). */
#define GOAL_INSERT_NS SLOW_NS        /* the longest insert: below */
#define GOAL_OPEN_NS 10000000ull      /* the median open with a current index: below */
#define GOAL_ANON_RATIO 1.5           /* RssAnon at N / RssAnon at N/8: at most, */
#define GOAL_ANON_SLACK_KB (16 * KIB) /* with this much more allowed */

/* The process's resident memory, from /proc/self/status; -1 where it does not say. */
struct rss {
    long long anon_kb, file_kb, shmem_kb;
};

struct growth_point {
    size_t rows; /* loaded when it was taken */
    struct rss rss;
    double data_bytes, index_bytes; /* allocated */
};

struct growth_run {
    char path[PATH_MAX + 256], floor_path[PATH_MAX + 256];
    uint64_t stream; /* row i's key is key_at(stream, i), its value value_of(i, 0) */
    size_t n, txns;
    struct latency insert, commit; /* each sqlite3_step of an insert, each COMMIT */
    uint64_t load_ns;              /* every transaction, BEGIN to COMMIT, the samples left out */
    struct growth_point point[GROWTH_POINTS];
    uint64_t open_ns[GROWTH_OPENS], floor_ns[GROWTH_OPENS]; /* in the order taken */
    int rebuilt;                                            /* 0: 'rebuild-index' failed */
    double rebuild_s;
};

static void read_rss(struct rss *r)
{
    static const char *const fields[3] = {"RssAnon:", "RssFile:", "RssShmem:"};
    long long *values[3] = {&r->anon_kb, &r->file_kb, &r->shmem_kb};
    char line[256];
    for (int f = 0; f < 3; f++)
        *values[f] = -1;
    FILE *fp = fopen("/proc/self/status", "r");
    if (!fp) return;
    while (fgets(line, sizeof line, fp))
        for (int f = 0; f < 3; f++)
            if (strncmp(line, fields[f], strlen(fields[f])) == 0)
                *values[f] = strtoll(line + strlen(fields[f]), NULL, 10);
    fclose(fp);
}

/* Rows from .. from + rows - 1 in one transaction; with insert and commit, each sqlite3_step of
 * an insert and the COMMIT timed into them. */
static void growth_txn(const struct stmts *s, uint64_t stream, size_t from, size_t rows,
                       struct latency *insert, struct latency *commit)
{
    unsigned char key[KEY_LEN];
    step_done(s->begin);
    for (size_t i = from; i < from + rows; i++) {
        key_at(stream, i, key);
        sqlite3_bind_blob(s->insert, 1, key, KEY_LEN, SQLITE_STATIC);
        sqlite3_bind_blob(s->insert, 2, value_of(i, 0), VALUE_LEN, SQLITE_STATIC);
        uint64_t t0 = now_ns();
        int rc = sqlite3_step(s->insert);
        uint64_t t1 = now_ns();
        if (rc != SQLITE_DONE)
            die("%s: %s", sqlite3_sql(s->insert), sqlite3_errmsg(sqlite3_db_handle(s->insert)));
        sqlite3_reset(s->insert);
        if (insert) latency_add(insert, t1 - t0);
    }
    uint64_t t0 = now_ns();
    step_done(s->commit);
    if (commit) latency_add(commit, now_ns() - t0);
}

/* count(*) must be n, and GROWTH_CHECKS random rows must have their values. */
static void growth_check(const struct stmts *s, const struct growth_run *g, int phase,
                         const char *after)
{
    sqlite3_int64 count = count_rows(s);
    if (count != (sqlite3_int64)g->n)
        mismatch("growth: count(*) = %lld after %s, expected %zu", (long long)count, after, g->n);
    uint64_t state = g->stream ^ mix64(0xc4ec4ull + (uint64_t)phase);
    size_t missing = 0, wrong = 0;
    unsigned char key[KEY_LEN];
    for (int j = 0; j < GROWTH_CHECKS; j++) {
        size_t i = (size_t)(splitmix64(&state) % g->n);
        key_at(g->stream, i, key);
        sqlite3_bind_blob(s->lookup, 1, key, KEY_LEN, SQLITE_STATIC);
        int rc = sqlite3_step(s->lookup);
        if (rc == SQLITE_ROW) {
            if (sqlite3_column_bytes(s->lookup, 0) != VALUE_LEN ||
                memcmp(sqlite3_column_blob(s->lookup, 0), value_of(i, 0), VALUE_LEN) != 0)
                wrong++;
        } else if (rc == SQLITE_DONE) {
            missing++;
        } else {
            die("growth: lookup: %s", sqlite3_errmsg(sqlite3_db_handle(s->lookup)));
        }
        sqlite3_reset(s->lookup);
    }
    if (missing || wrong)
        mismatch("growth: lookups after %s: %zu of %d keys not found, %zu wrong values", after,
                 missing, GROWTH_CHECKS, wrong);
}

/* The statements of the section on db. */
static void growth_stmts(sqlite3 *db, struct stmts *s)
{
    memset(s, 0, sizeof *s);
    s->begin = prepare(db, "BEGIN");
    s->commit = prepare(db, "COMMIT");
    s->insert = prepare(db, GROWTH_INSERT_SQL);
    s->lookup = prepare(db, GROWTH_LOOKUP_SQL);
    s->count = prepare(db, "SELECT count(*) FROM kv");
}

/* The load, in transactions of GROWTH_TXN_ROWS, resident memory taken (untimed) after the
 * commits that reach N/8, N/4, N/2 and N rows. */
static void growth_load(const struct options *o, struct growth_run *g)
{
    sqlite3 *db = open_wal(g->path, KIND_MMKV, o->synchronous, o);
    create_kv(db, KIND_MMKV, o->sync);
    struct stmts s;
    growth_stmts(db, &s);
    check_plan(db, "growth mmkv", key_plan(KIND_MMKV));
    latency_init(&g->insert);
    latency_init(&g->commit);
    size_t done = 0, point = 0, progress_at = 0;
    char what[128];
    while (done < g->n) {
        size_t rows = g->n - done < GROWTH_TXN_ROWS ? g->n - done : GROWTH_TXN_ROWS;
        uint64_t t0 = now_ns();
        growth_txn(&s, g->stream, done, rows, &g->insert, &g->commit);
        g->load_ns += now_ns() - t0;
        g->txns++;
        done += rows;
        for (; point < GROWTH_POINTS && done >= g->n >> (GROWTH_POINTS - 1 - point); point++) {
            struct growth_point *p = &g->point[point];
            p->rows = done;
            read_rss(&p->rss);
            mmkv_allocated(g->path, &p->data_bytes, &p->index_bytes);
        }
        if (done >= progress_at) {
            snprintf(what, sizeof what, "growth: load %zu/%zu", done, g->n);
            progress("mmkv", g->n, what);
            progress_at = done + g->n / 100;
        }
    }
    progress("mmkv", g->n, "growth: checking the rows");
    growth_check(&s, g, 0, "the load");
    finalize_stmts(&s);
    close_db(db, g->path); /* the last close: the index is left clean */
}

/* Nanoseconds from sqlite3_open_v2 (mmkv comes in through sqlite3_auto_extension) to the row of
 * the first GROWTH_LOOKUP_SQL, of row i's key; the value is checked afterwards. */
static uint64_t growth_open(const char *path, uint64_t stream, size_t i, const char *who)
{
    unsigned char key[KEY_LEN];
    key_at(stream, i, key);
    sqlite3 *db = NULL;
    sqlite3_stmt *st;
    uint64_t t0 = now_ns();
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
        die("open %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
    if (sqlite3_prepare_v2(db, GROWTH_LOOKUP_SQL, -1, &st, NULL) != SQLITE_OK)
        die("%s: prepare %s: %s", who, GROWTH_LOOKUP_SQL, sqlite3_errmsg(db));
    sqlite3_bind_blob(st, 1, key, KEY_LEN, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    uint64_t t1 = now_ns();
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != VALUE_LEN ||
            memcmp(sqlite3_column_blob(st, 0), value_of(i, 0), VALUE_LEN) != 0)
            mismatch("growth: %s: the first lookup after the open found a wrong value", who);
    } else if (rc == SQLITE_DONE) {
        mismatch("growth: %s: the first lookup after the open found no row", who);
    } else {
        die("growth: %s: the first lookup: %s", who, sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    close_db(db, path);
    return t1 - t0;
}

/* GROWTH_OPENS timed opens of the table at path of rows rows, each of a random row. */
static void growth_opens(const char *path, const struct growth_run *g, size_t rows,
                         uint64_t ns[GROWTH_OPENS], const char *who)
{
    uint64_t state = g->stream ^ mix64(0x0be2ull + rows);
    for (int k = 0; k < GROWTH_OPENS; k++)
        ns[k] = growth_open(path, g->stream, (size_t)(splitmix64(&state) % rows), who);
}

/* The floor of the open: a native table of GROWTH_FLOOR_ROWS rows (the first of the stream) in a
 * small database of its own. */
static void growth_floor(const struct options *o, struct growth_run *g)
{
    sqlite3 *db = open_wal(g->floor_path, KIND_NATIVE, o->synchronous, o);
    create_kv(db, KIND_NATIVE, o->sync);
    struct stmts s;
    growth_stmts(db, &s);
    size_t rows = g->n < GROWTH_FLOOR_ROWS ? g->n : GROWTH_FLOOR_ROWS;
    growth_txn(&s, g->stream, 0, rows, NULL, NULL);
    finalize_stmts(&s);
    close_db(db, g->floor_path);
    growth_opens(g->floor_path, g, rows, g->floor_ns, "native floor");
}

/* The index rebuilt from the log, timed, and the rows checked before and after it. */
static void growth_rebuild(const struct options *o, struct growth_run *g)
{
    char err[512];
    sqlite3 *db = open_wal(g->path, KIND_MMKV, o->synchronous, o);
    struct stmts s;
    growth_stmts(db, &s);
    progress("mmkv", g->n, "growth: checking the rows");
    growth_check(&s, g, 1, "the opens");
    progress("mmkv", g->n, "growth: 'rebuild-index'");
    uint64_t t0 = now_ns();
    g->rebuilt =
        try_sql(db, "INSERT INTO kv(kv) VALUES('rebuild-index')", err, sizeof err) == SQLITE_OK;
    g->rebuild_s = (double)(now_ns() - t0) / 1e9;
    if (!g->rebuilt) mismatch("growth: 'rebuild-index': %s", err);
    progress("mmkv", g->n, "growth: checking the rows");
    growth_check(&s, g, 2, "'rebuild-index'");
    finalize_stmts(&s);
    close_db(db, g->path);
}

static void print_mb_kb(long long kb)
{
    if (kb < 0)
        printf(" %11s", "n/a");
    else
        printf(" %11.1f", (double)kb / KIB);
}

/* min and median of GROWTH_OPENS opens, then each in the order taken (later ones may find ready
 * what the first paid for); returns the median. */
static uint64_t print_opens(const char *who, const uint64_t ns[GROWTH_OPENS])
{
    uint64_t sorted[GROWTH_OPENS];
    memcpy(sorted, ns, sizeof sorted);
    qsort(sorted, GROWTH_OPENS, sizeof *sorted, cmp_u64);
    uint64_t median = sorted[GROWTH_OPENS / 2];
    printf("    %-26s min %7.3f ms, median %7.3f ms\n    %-26s in the order taken, ms:", who,
           (double)sorted[0] / 1e6, (double)median / 1e6, "");
    for (int k = 0; k < GROWTH_OPENS; k++)
        printf(" %.3f", (double)ns[k] / 1e6);
    printf("\n");
    return median;
}

static void print_growth(const struct options *o, const struct growth_run *g, double seconds)
{
    printf("\ngrowth and memory: N=%zu rows loaded into mmkv (default arguments but sync=%s) "
           "with\n%s in transactions of %d rows; journal_mode=wal, synchronous=%s;\neach "
           "sqlite3_step of an insert and each COMMIT timed on its own (CLOCK_MONOTONIC); the "
           "keys\nmade row by row, not held in memory; count(*) and %d random lookups checked "
           "after the load,\nafter the opens and after the rebuild\n",
           g->n, o->sync, GROWTH_INSERT_SQL, GROWTH_TXN_ROWS, o->synchronous, GROWTH_CHECKS);
    const struct latency *in = &g->insert, *cm = &g->commit;
    printf("\n  load: %zu inserts in %zu transactions, %.1f s, %.1f ns/insert overall (BEGIN to "
           "COMMIT)\n",
           g->n, g->txns, (double)g->load_ns / 1e9, (double)g->load_ns / (double)g->n);
    printf("  insert (sqlite3_step): p99 %.1f us, p99.9 %.1f us, max %.1f us; over %llu ms: "
           "%" PRIu64 "\n",
           latency_quantile_us(in, 0.99), latency_quantile_us(in, 0.999),
           (double)in->max_ns / 1000.0, GOAL_INSERT_NS / 1000000, in->slow);
    printf("  COMMIT: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
           latency_quantile_us(cm, 0.50) / 1000.0, latency_quantile_us(cm, 0.99) / 1000.0,
           (double)cm->max_ns / 1e6);
    printf("  no insert over %llu ms (goal: max < %llu ms): %s (max %.2f ms)\n",
           GOAL_INSERT_NS / 1000000, GOAL_INSERT_NS / 1000000, goal(in->max_ns < GOAL_INSERT_NS),
           (double)in->max_ns / 1e6);

    printf("\n  the process's resident memory (/proc/self/status) as the table grows, taken "
           "after the COMMIT\n  that reaches each point; the files' allocated sizes; MB = 2^20 "
           "bytes\n");
    printf("  %-5s %10s | %11s %11s %11s | %12s %12s\n", "", "rows", "RssAnon MB", "RssFile MB",
           "RssShmem MB", "data file MB", "index MB");
    printf("  -------------------------------------------------------------------------------"
           "-------\n");
    static const char *const point_names[GROWTH_POINTS] = {"N/8", "N/4", "N/2", "N"};
    for (int p = 0; p < GROWTH_POINTS; p++) {
        const struct growth_point *q = &g->point[p];
        printf("  %-5s %10zu |", point_names[p], q->rows);
        print_mb_kb(q->rss.anon_kb);
        print_mb_kb(q->rss.file_kb);
        print_mb_kb(q->rss.shmem_kb);
        printf(" | %12.1f %12.1f\n", q->data_bytes / MIB, q->index_bytes / MIB);
    }
    long long first = g->point[0].rss.anon_kb, last = g->point[GROWTH_POINTS - 1].rss.anon_kb;
    if (first < 0 || last < 0) {
        printf("  RssAnon at N within %.1fx of RssAnon at N/8 + %.0f MB: not available (no RssAnon "
               "in /proc/self/status)\n",
               GOAL_ANON_RATIO, GOAL_ANON_SLACK_KB / KIB);
    } else {
        double limit_kb = GOAL_ANON_RATIO * (double)first + GOAL_ANON_SLACK_KB;
        printf("  RssAnon at N within %.1fx of RssAnon at N/8 + %.0f MB (%.1f MB, at most %.1f "
               "MB): %s\n",
               GOAL_ANON_RATIO, GOAL_ANON_SLACK_KB / KIB, (double)last / KIB, limit_kb / KIB,
               goal((double)last <= limit_kb));
    }

    printf("\n  open, %d times: sqlite3_open_v2 (mmkv through sqlite3_auto_extension), then the "
           "first\n  %s of a present key, to its row\n",
           GROWTH_OPENS, GROWTH_LOOKUP_SQL);
    char who[64];
    snprintf(who, sizeof who, "mmkv, N=%zu:", g->n);
    uint64_t median = print_opens(who, g->open_ns);
    snprintf(who, sizeof who, "native, %zu rows (floor):",
             g->n < GROWTH_FLOOR_ROWS ? g->n : (size_t)GROWTH_FLOOR_ROWS);
    print_opens(who, g->floor_ns);
    printf("  open with a current index (goal < %llu ms): %s (median %.3f ms)\n",
           GOAL_OPEN_NS / 1000000, goal(median < GOAL_OPEN_NS), (double)median / 1e6);

    if (g->rebuilt)
        printf("\n  INSERT INTO kv(kv) VALUES('rebuild-index'): %.2f s for %zu records, %.2f s per "
               "million records\n",
               g->rebuild_s, g->n, g->rebuild_s * 1e6 / (double)g->n);
    else
        printf("\n  INSERT INTO kv(kv) VALUES('rebuild-index'): FAILED after %.2f s (see stderr)\n",
               g->rebuild_s);
    printf("the growth section took %.1f s\n", seconds);
    fflush(stdout);
}

static void run_growth(const struct options *o)
{
    struct growth_run g;
    char name[128], floor_name[128];
    memset(&g, 0, sizeof g);
    uint64_t start = now_ns();
    g.n = o->growth_n;
    g.stream = key_stream(o->seed ^ GROWTH_SEED, g.n);
    snprintf(name, sizeof name, "%sgrowth.db", g_prefix);
    snprintf(floor_name, sizeof floor_name, "%sgrowth-floor.db", g_prefix);
    snprintf(g.path, sizeof g.path, "%s/%s", g_dir, name);
    snprintf(g.floor_path, sizeof g.floor_path, "%s/%s", g_dir, floor_name);

    growth_load(o, &g);
    flush_dir(); /* the kernel's writeback of the load is not to fall into the opens */
    progress("mmkv", g.n, "growth: opens");
    growth_opens(g.path, &g, g.n, g.open_ns, "mmkv");
    growth_floor(o, &g);
    growth_rebuild(o, &g);
    if (isatty(2)) fprintf(stderr, "\r\033[K");
    print_growth(o, &g, (double)(now_ns() - start) / 1e9);
    free(g.insert.bucket);
    free(g.commit.bucket);
    remove_files(name);
    remove_files(floor_name);
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
            "                    rows (default 200)\n"
            "  --no-space        skip the space section (the files over a run of updates,\n"
            "                    compaction)\n"
            "  --space-n N       rows there (default 1000000)\n"
            "  --space-ops M     operations of each of its two phases (default 5000000)\n"
            "  --space-sample K  the files' sizes every K operations (default M/10)\n"
            "  --space-sync LV   mmkv sync= and PRAGMA synchronous there (default off)\n"
            "  --no-lmdb         skip LMDB in the table (put, get, cursor scan; built only\n"
            "                    where <lmdb.h> is: Debian's liblmdb-dev)\n"
            "  --no-ycsb         skip the YCSB section (workloads A, B, C, F through SQL)\n"
            "  --ycsb-n N        rows there (default 1000000)\n"
            "  --ycsb-ops M      operations of each of its workloads (default 1000000)\n"
            "  --no-growth       skip the growth and memory section (a large load: insert and\n"
            "                    commit latency, resident memory, open time, index rebuild)\n"
            "  --growth-n N      rows loaded there (default 10000000; e.g. 10M)\n");
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
    o->no_table = o->no_concurrent = o->no_commit_cost = o->no_space = 0;
    o->no_lmdb = o->no_ycsb = o->no_growth = 0;
    o->concurrent_ops = 500000;
    o->commit_n = 100000;
    o->commit_txns = 200;
    o->space_n = 1000000;
    o->space_ops = 5000000;
    o->space_sample = 0;
    o->space_sync = "off";
    o->ycsb_n = 1000000;
    o->ycsb_ops = 1000000;
    o->growth_n = 10000000;
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
        if (strcmp(a, "--no-space") == 0) {
            o->no_space = 1;
            continue;
        }
        if (strcmp(a, "--no-lmdb") == 0) {
            o->no_lmdb = 1;
            continue;
        }
        if (strcmp(a, "--no-ycsb") == 0) {
            o->no_ycsb = 1;
            continue;
        }
        if (strcmp(a, "--no-growth") == 0) {
            o->no_growth = 1;
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
        } else if (strcmp(opt, "--space-n") == 0) {
            unsigned long long n = parse_count(v, opt);
            if (n < 2 || n > UINT32_MAX)
                die("--space-n: %llu out of range (2..%" PRIu32 ")", n, UINT32_MAX);
            o->space_n = (size_t)n;
        } else if (strcmp(opt, "--space-ops") == 0) {
            o->space_ops = (size_t)parse_count(v, opt);
            if (o->space_ops == 0) die("--space-ops: must be at least 1");
        } else if (strcmp(opt, "--space-sample") == 0) {
            o->space_sample = (size_t)parse_count(v, opt);
            if (o->space_sample == 0) die("--space-sample: must be at least 1");
        } else if (strcmp(opt, "--space-sync") == 0)
            o->space_sync = word_arg(v, opt);
        else if (strcmp(opt, "--ycsb-n") == 0) {
            unsigned long long n = parse_count(v, opt);
            if (n < 2 || n > UINT32_MAX)
                die("--ycsb-n: %llu out of range (2..%" PRIu32 ")", n, UINT32_MAX);
            o->ycsb_n = (size_t)n;
        } else if (strcmp(opt, "--ycsb-ops") == 0) {
            o->ycsb_ops = (size_t)parse_count(v, opt);
            if (o->ycsb_ops == 0) die("--ycsb-ops: must be at least 1");
        } else if (strcmp(opt, "--growth-n") == 0) {
            unsigned long long n = parse_count(v, opt);
            if (n < 1u << (GROWTH_POINTS - 1) || n > UINT32_MAX)
                die("--growth-n: %llu out of range (%u..%" PRIu32 ")", n, 1u << (GROWTH_POINTS - 1),
                    UINT32_MAX);
            o->growth_n = (size_t)n;
        } else {
            usage(stderr);
            die("unknown option %s", a);
        }
    }
    if (!o->synchronous) o->synchronous = o->sync;
    if (!o->space_sample)
        o->space_sample = o->space_ops / SPACE_SAMPLES ? o->space_ops / SPACE_SAMPLES : 1;
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
    printf("limit: vtab floor = a virtual table of bench's own that does no work, in a database "
           "file as mmkv's;\n       hash lookup = a C hash table of the keys in memory, "
           "one lookup after another\n");
#ifdef HAVE_LMDB
    int major, minor, patch;
    mdb_version(&major, &minor, &patch);
    if (!o->no_lmdb)
        printf("LMDB %d.%d.%d through its C API, no SQL: env flags %s\n", major, minor, patch,
               lmdb_sync_text(o->sync));
#else
    if (!o->no_lmdb) printf("LMDB: not built (install liblmdb-dev)\n");
#endif
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

/* The goals of the lookups' limit (they decide nothing about the exit status). */
#define GOAL_LIMIT_TXN 1.25         /* mmkv's lookup (txn) / limit (txn): at most */
#define GOAL_LIMIT_AUTO 1.15        /* mmkv's lookup (autocommit) / limit (auto): at most */
#define GOAL_OVER_NATIVE 3.0        /* native+mmap's lookup (txn) / mmkv's: at least */
#define GOAL_OVER_NATIVE_N 1000000u /* ... at this N and above */

/* floor_ns: the floor in a transaction and in autocommit; hash_ns: the hash lookup. */
static void print_limit(const struct data *d, double ns[NWORK][NKINDS], const double floor_ns[2],
                        double hash_ns)
{
    static const char *const modes[2] = {"txn", "auto"};
    static const int works[2] = {W_LOOKUP_TXN, W_LOOKUP_AUTO};
    static const double goals[2] = {GOAL_LIMIT_TXN, GOAL_LIMIT_AUTO};
    printf("  limit of a lookup through SQL, ns/op, and mmkv's lookup as a multiple of it:\n");
    for (int mode = 0; mode < 2; mode++) {
        double limit = floor_ns[mode] + hash_ns, ratio = ns[works[mode]][KIND_MMKV] / limit;
        printf("  limit (%s)%s = vtab floor (%s)%s + hash lookup = %.1f + %.1f = %.1f: mmkv "
               "%.2fx (goal <= %.2fx: %s)\n",
               modes[mode], mode ? "" : " ", modes[mode], mode ? "" : " ", floor_ns[mode], hash_ns,
               limit, ratio, goals[mode], goal(ratio <= goals[mode]));
    }
    double m = ns[W_LOOKUP_TXN][KIND_MMKV],
           over = m > 0 ? ns[W_LOOKUP_TXN][KIND_NATIVE_MMAP] / m : 0;
    printf("  lookup (1 txn), native+mmap / mmkv: %.2fx ", over);
    if (d->n >= GOAL_OVER_NATIVE_N)
        printf("(goal >= %.0fx: %s)\n", GOAL_OVER_NATIVE, goal(over >= GOAL_OVER_NATIVE));
    else
        printf("(goal >= %.0fx at N >= %u: none at this N)\n", GOAL_OVER_NATIVE,
               GOAL_OVER_NATIVE_N);
}

static void print_lmdb(double ns[NWORK][NKINDS], const double lmdb_ns[NLMDB])
{
    printf("  LMDB, ns/op, against mmkv's:\n");
    for (int l = 0; l < NLMDB; l++) {
        double m = ns[lmdb_against[l]][KIND_MMKV];
        printf("  %-18s %10.1f | mmkv %-20s %10.1f | lmdb/mmkv %6.2fx\n", lmdb_names[l], lmdb_ns[l],
               work_names[lmdb_against[l]], m, m > 0 ? lmdb_ns[l] / m : 0);
    }
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
    double disk[MAX_NS][NKINDS], disk_lmdb[MAX_NS];
    int printed_settings = 0, with_lmdb = 0;
#ifdef HAVE_LMDB
    with_lmdb = !o.no_lmdb;
#endif
    for (int t = 0; t < o.nn && !o.no_table; t++) {
        struct data d;
        double ns[NWORK][NKINDS], floor_ns[2], hash_ns, lmdb_ns[NLMDB];
        make_data(&d, o.ns[t], o.max_ops, o.seed);
        for (int kind = 0; kind < NKINDS; kind++) {
            double per_kind[NWORK];
            run_kind(&o, kind, &d, per_kind, &disk[t][kind]);
            for (int w = 0; w < NWORK; w++)
                ns[w][kind] = per_kind[w];
        }
        run_floor(&o, &d, floor_ns);
        hash_ns = run_hash(&d);
#ifdef HAVE_LMDB
        if (with_lmdb) run_lmdb(&o, &d, lmdb_ns, &disk_lmdb[t]);
#endif
        if (isatty(2)) fprintf(stderr, "\r\033[K");
        if (!printed_settings) {
            print_settings(&o);
            print_table_header();
            printed_settings = 1;
        }
        print_rows(&d, ns);
        print_limit(&d, ns, floor_ns, hash_ns);
        if (with_lmdb) print_lmdb(ns, lmdb_ns);
        free_data(&d);
    }

    if (!o.no_table) {
        printf("\nallocated on disk after the run (MB):");
        for (int t = 0; t < o.nn; t++) {
            printf("%s N=%zu: mmkv %.1f, native %.1f, native+mmap %.1f", t ? ";" : "", o.ns[t],
                   disk[t][KIND_MMKV], disk[t][KIND_NATIVE], disk[t][KIND_NATIVE_MMAP]);
            if (with_lmdb) printf(", lmdb %.1f", disk_lmdb[t]);
        }
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
    if (!o.no_space) run_space(&o);
    if (!o.no_ycsb) run_ycsb(&o);
    if (!o.no_growth) run_growth(&o);

    int sections =
        !o.no_concurrent || !o.no_commit_cost || !o.no_space || !o.no_ycsb || !o.no_growth;
    printf("%sratio > 1: mmkv is faster. total %.1f s. %s\n", sections ? "\n" : "",
           (double)(now_ns() - start) / 1e9,
           g_mismatches ? "CORRECTNESS MISMATCHES (see stderr)" : "all checks passed");

    cleanup();
    sqlite3_reset_auto_extension();
    sqlite3_shutdown();
    return g_mismatches ? 1 : 0;
}
