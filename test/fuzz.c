/*
** A libFuzzer target for the engine: it opens arbitrary data and index file contents and runs reads
** and writes on them. `make fuzz` builds and runs it (see the Makefile); the input format is in
** test/fuzz.h and the seed corpus in test/fuzz-corpus/ (made by test/fuzz-seeds.c).
**
** For each input: the images are written to files in a private directory, mmkv_open opens them
** (in the text encoding the data file's header names, in which the harness also makes TEXT keys),
** and a short script drawn from the input runs: the integrity check (mmkv_check), a full scan,
** lookups of keys found by the scan and of keys made from the input, mmkv_get_similar, a write
** transaction (puts, deletes, a savepoint and a rollback to it, mmkv_check and mmkv_rebuild, then
** commit, rollback, or prepare and rollback) with a second connection reading alongside, reads
** again, a close and a reopen (sometimes without the index), and reads again. Each run takes
** milliseconds: scans stop at MAX_SCAN_ROWS, and lookups and writes are few.
**
** Anything wrong calls abort(), which libFuzzer reports as a crash. Always:
**
**   - an error without a message, MMKV_CORRUPT whose message does not name the file, MMKV_MISUSE
**     (the harness calls the API correctly), a failed open that returns a connection;
**   - a row whose types or lengths are implausible, that is not a checksummed, non-tombstone
**     record at its offset below the snapshot's tail (read back from the file by the harness),
**     whose bytes differ from that record's, or whose key is not the key asked for (get) or one
**     that reads as the same number (get_similar).
**
** And where reads are held to be consistent: when the input's checksums are genuine (no
** FUZZ_FIX_* flag), or else when mmkv_check passed (the engine vouches for the files):
**
**   - a scan that returns a key twice; a get that disagrees with a complete scan of the same
**     snapshot; get_similar missing a row of the scan that it should have found, or adding one;
**   - a difference from the harness's own reading of the log, as format.h defines it (the newest
**     intact meta slot gives the log's start and tail; each key's newest record between them is
**     its state): a complete scan must return exactly the live keys' newest records, each get must
**     agree, and a scan of a log with a damaged record between start and tail must fail with MMKV_CORRUPT; mmkv_check must not
**     pass such a log, and when it passes, the live count must be the log's;
**     (A read may fail instead of answering, with an explained error, where the index is not one
**     the engine checked: forged, or trusted unchecked. With genuine checksums and a checked or
**     rebuilt index, every read of an intact log must answer.)
**   - in the write transaction: an outcome other than the writer's own reads foretold (insert of
**     a present key, delete of an absent one), a write its writer's next read does not see, a
**     second connection that sees uncommitted writes or can begin a second write, and after
**     commit (or rollback), and again after the reopen, a key that does not hold exactly what was
**     written (or what was there before).
**
** With forged checksums the engine meets contents it has every reason to trust (a clean index
** that misses keys, commit counts that disagree with the log): then only the first list holds,
** unless mmkv_check passes. An index marked in use by this boot's last user (FUZZ_STAMP_BOOT) is
** held to the same rules as any other: the engine checks it against its slot sum before trusting
** it (the reproducer repro-in-use-index-slot-lost once showed a lost key there).
**
** MMKV_BUSY ("kept changing during a read") is accepted from reads: the engine answers so when an
** index slot leads past the committed tail to something that is not a record. Growing a file past
** FILE_SIZE_LIMIT (far above what any input needs) is reported, as libFuzzer's "file size
** exceeded" or as MMKV_FULL, rather than left to fill the disk or memory.
*/
#include "crc32c.h"
#include "engine.h" /* struct mmkv_conn: the harness clears errmsg before each call */
#include "format.h"
#include "fuzz.h"
#include "mmkv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bounds on the work one input may cause. */
#define MAX_SCAN_ROWS 1024
#define MAX_POOL 48
#define MAX_SCANNED_IN_POOL 24
#define MAX_SYNTH_KEYS 8
#define MAX_WRITES 16
#define MAX_TRACKED MAX_WRITES
#define MAX_PROBES 3
/* No file the engine makes from an input (at most FUZZ_MAX_FILE, and a few small writes) needs to
** grow far: growth past this size (RLIMIT_FSIZE) raises SIGXFSZ, which libFuzzer reports as "file
** size exceeded" with the stack of the growth (or, under -handle_xfsz=0, fails with EFBIG, which
** the engine returns as MMKV_FULL and the harness reports). */
#define FILE_SIZE_LIMIT ((rlim_t)64 << 20)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- failing ---- */

static void remove_work_dir(void);

static const char *stage = "start";
static const char *current_path = "";
/* The text encoding of the input's data file, as its header names it (UTF-8 for a new file): the
** harness opens the file in it, makes its TEXT keys in it and reads numbers from TEXT in it. */
static int text_encoding = MMKV_TEXT_UTF8;

__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char *format, ...)
{
    va_list ap;
    fprintf(stderr, "\nmmkv-fuzz: INVARIANT VIOLATED during %s (file %s):\n    ", stage,
            current_path);
    va_start(ap, format);
    vfprintf(stderr, format, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    remove_work_dir();
    abort();
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) fail("out of memory (%zu bytes)", n);
    return p;
}

/* ---- the private directory ---- */

static char work_dir[512];
static unsigned long iteration;

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *ent;
    char path[1024];
    while ((ent = readdir(d))) {
        if (!strcmp(ent->d_name, ".") || !strcmp(ent->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static void remove_work_dir(void)
{
    remove_dir(work_dir);
}

/* A crash leaves its process's directory behind (on tmpfs, in memory): the directories are named
** after their process, and those of processes that are gone are removed. */
static void remove_stale_dirs(const char *base)
{
    DIR *d = opendir(base);
    if (!d) return;
    struct dirent *ent;
    char path[1024];
    while ((ent = readdir(d))) {
        long pid;
        char rest[32];
        if (sscanf(ent->d_name, "mmkv-fuzz-%ld-%31s", &pid, rest) != 2 || pid <= 0) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        snprintf(path, sizeof path, "%s/%s", base, ent->d_name);
        remove_dir(path);
    }
    closedir(d);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    /* tmpfs if there is one: the engine msyncs its headers at every open and close. */
    const char *base = getenv("MMKV_FUZZ_TMPDIR");
    if (!base || !*base) base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    remove_stale_dirs(base);
    snprintf(work_dir, sizeof work_dir, "%s/mmkv-fuzz-%ld-XXXXXX", base, (long)getpid());
    if (!mkdtemp(work_dir)) {
        perror("mmkv-fuzz: mkdtemp");
        exit(1);
    }
    atexit(remove_work_dir);
    /* A file grown from a count the engine believed (a record count of a billion sizes an index
    ** table of 16 GiB) would fill the disk or, on tmpfs, memory: stop it at FILE_SIZE_LIMIT. */
    struct rlimit limit;
    if (getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur > FILE_SIZE_LIMIT) {
        limit.rlim_cur = FILE_SIZE_LIMIT;
        setrlimit(RLIMIT_FSIZE, &limit);
    }
    signal(SIGXFSZ, SIG_IGN); /* libFuzzer installs its own handler unless -handle_xfsz=0 */
    return 0;
}

/* ---- the script ---- */

typedef struct script {
    const uint8_t *p;
    size_t n, i;
} script;

static unsigned next(script *s)
{
    return s->i < s->n ? s->p[s->i++] : 0;
}

static uint64_t next64(script *s, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)next(s) << (8 * i);
    return v;
}

/* ---- owned datums ---- */

typedef struct owned {
    mmkv_datum d;
    unsigned char *buf;
} owned;

static owned own(const mmkv_datum *d)
{
    owned o;
    o.d = *d;
    o.buf = NULL;
    if (d->len) {
        o.buf = xmalloc(d->len);
        memcpy(o.buf, d->bytes, d->len);
    }
    o.d.bytes = o.buf;
    return o;
}

static owned own_bytes(int type, const void *p, uint32_t len)
{
    mmkv_datum d = {type, len, p};
    return own(&d);
}

static void disown(owned *o)
{
    free(o->buf);
    o->buf = NULL;
}

static int datum_same(const mmkv_datum *a, const mmkv_datum *b)
{
    return a->type == b->type && a->len == b->len &&
           (a->len == 0 || memcmp(a->bytes, b->bytes, a->len) == 0);
}

/* NaN keys equal nothing, themselves included (SQLite never stores one: it makes NaN a NULL). */
static int key_is_nan(const mmkv_datum *k)
{
    return !mmkv_key_equal(k, k);
}

static const char *type_name(int type)
{
    static const char *names[] = {"?", "INTEGER", "REAL", "TEXT", "BLOB", "NULL"};
    return type >= 1 && type <= 5 ? names[type] : "?";
}

/* A short printable rendering of a datum, for failure reports. */
static const char *show(const mmkv_datum *d)
{
    static char buf[4][96];
    static int n;
    char *out = buf[n++ % 4];
    if (d->type == MMKV_INTEGER && d->len == 8) {
        int64_t i;
        memcpy(&i, d->bytes, 8);
        snprintf(out, 96, "%lld", (long long)i);
    } else if (d->type == MMKV_FLOAT && d->len == 8) {
        double r;
        memcpy(&r, d->bytes, 8);
        snprintf(out, 96, "%.17g", r);
    } else {
        int k = snprintf(out, 96, "%s[%u]:", type_name(d->type), d->len);
        for (uint32_t i = 0; i < d->len && k < 90; i++) {
            unsigned char c = ((const unsigned char *)d->bytes)[i];
            k += snprintf(out + k, 96 - k, c >= 32 && c < 127 ? "%c" : "\\x%02x", c);
        }
    }
    return out;
}

/* ---- result codes and messages ---- */

typedef struct fuzz_ctx {
    const char *data_path;
    int data_fd; /* the harness's own descriptor, to read records behind the engine's back */
    int strict;  /* checksums genuine: compare with the harness's reading of the log */
    uint8_t flags;
    int consistent; /* strict, or vouched for by mmkv_check when opened: reads must agree */
} fuzz_ctx;

static void clear_error(mmkv_conn *conn)
{
    free(conn->errmsg);
    conn->errmsg = NULL;
}

static void check_message(const fuzz_ctx *ctx, int rc, const char *message, const char *what)
{
    if (rc == MMKV_MISUSE) fail("%s: MMKV_MISUSE (%s)", what, message ? message : "no message");
    if (!message || !*message) fail("%s returned %d without a message", what, rc);
    if (rc == MMKV_FULL)
        fail("%s: MMKV_FULL: a file would grow past %llu MiB, from an input of at most %u MiB: %s",
             what, (unsigned long long)(FILE_SIZE_LIMIT >> 20), FUZZ_MAX_FILE >> 20, message);
    if (rc == MMKV_CORRUPT && !strstr(message, ctx->data_path))
        fail("%s: MMKV_CORRUPT whose message does not name the file: %s", what, message);
}

/* After a call on conn: NOTFOUND (and CONSTRAINT for an insert) are answers; anything else but OK
** is an error that must explain itself. */
static void check_rc(const fuzz_ctx *ctx, mmkv_conn *conn, int rc, const char *what)
{
    if (rc == MMKV_OK || rc == MMKV_NOTFOUND || rc == MMKV_CONSTRAINT) return;
    check_message(ctx, rc, conn->errmsg, what);
}

/* A read. (MMKV_BUSY, "kept changing during a read", is let pass: it is what the engine says when
** an index slot leads past the committed tail to something that is not a record, which it takes
** for a writer's record being rewritten, although here no one else writes.) */
static void check_read_rc(const fuzz_ctx *ctx, mmkv_conn *conn, int rc, const char *what)
{
    check_rc(ctx, conn, rc, what);
    if (rc == MMKV_CONSTRAINT) fail("%s: MMKV_CONSTRAINT from a read", what);
}

/* ---- rows ---- */

static void check_types(const mmkv_row *row, const char *what)
{
    if (row->key.type < MMKV_INTEGER || row->key.type > MMKV_BLOB)
        fail("%s: row key has type %d", what, row->key.type);
    if (row->value.type < MMKV_INTEGER || row->value.type > MMKV_NULL)
        fail("%s: row value has type %d", what, row->value.type);
    const mmkv_datum *d[2] = {&row->key, &row->value};
    for (int i = 0; i < 2; i++) {
        int t = d[i]->type;
        if ((t == MMKV_INTEGER || t == MMKV_FLOAT) && d[i]->len != 8)
            fail("%s: %s %s of %u bytes", what, i ? "value" : "key", type_name(t), d[i]->len);
        if (t == MMKV_NULL && d[i]->len != 0) fail("%s: NULL value of %u bytes", what, d[i]->len);
        if (d[i]->len && !d[i]->bytes) fail("%s: %u bytes at NULL", what, d[i]->len);
    }
}

/* The row must be the non-tombstone record at row->offset below tail, checksum intact, with the
** same types and bytes: read from the file itself, not through the engine. */
static void check_row(const fuzz_ctx *ctx, const mmkv_row *row, uint64_t tail, const char *what)
{
    check_types(row, what);
    uint64_t at = row->offset;
    if (at < MMKV_DATA_START || at % MMKV_RECORD_ALIGN || at >= tail)
        fail("%s: row at offset %llu, outside [4096, tail %llu)", what, (unsigned long long)at,
             (unsigned long long)tail);
    mmkv_record_header h;
    if (pread(ctx->data_fd, &h, sizeof h, (off_t)at) != (ssize_t)sizeof h)
        fail("%s: no record header at offset %llu", what, (unsigned long long)at);
    if (h.key_type != row->key.type || h.value_type != row->value.type ||
        h.key_len != row->key.len || h.value_len != row->value.len)
        fail("%s: row (%s %u, %s %u) differs from the record at %llu (%d %u, %d %u)", what,
             type_name(row->key.type), row->key.len, type_name(row->value.type), row->value.len,
             (unsigned long long)at, h.key_type, h.key_len, h.value_type, h.value_len);
    if (h.flags & (MMKV_RECORD_TOMBSTONE | MMKV_RECORD_PAD))
        fail("%s: the record at %llu is a %s", what, (unsigned long long)at,
             h.flags & MMKV_RECORD_PAD ? "pad" : "tombstone");
    uint64_t n = (uint64_t)h.key_len + h.value_len;
    if (at + sizeof h + n > tail)
        fail("%s: the record at %llu ends past the tail %llu", what, (unsigned long long)at,
             (unsigned long long)tail);
    unsigned char *body = xmalloc(n);
    if (n && pread(ctx->data_fd, body, n, (off_t)(at + sizeof h)) != (ssize_t)n)
        fail("%s: short read of the record at %llu", what, (unsigned long long)at);
    uint64_t where = at;
    uint32_t crc =
        mmkv_crc32c(mmkv_crc32c(0, &where, sizeof where),
                    (const unsigned char *)&h + sizeof h.checksum, sizeof h - sizeof h.checksum);
    crc = mmkv_crc32c(crc, body, n);
    if (crc != h.checksum)
        fail("%s: returned the record at %llu, whose checksum fails", what, (unsigned long long)at);
    if ((h.key_len && memcmp(body, row->key.bytes, h.key_len)) ||
        (h.value_len && memcmp(body + h.key_len, row->value.bytes, h.value_len)))
        fail("%s: row bytes differ from the record at %llu", what, (unsigned long long)at);
    free(body);
}

/* ---- scans ---- */

typedef struct scan_row {
    owned key;
    uint64_t offset;
} scan_row;

typedef struct scan_out {
    scan_row *rows;
    size_t n;
    int rc;       /* how it ended: NOTFOUND (the end), an error, or OK (stopped at the cap) */
    int complete; /* it reached the end */
} scan_out;

static void scan_free(scan_out *s)
{
    for (size_t i = 0; i < s->n; i++)
        disown(&s->rows[i].key);
    free(s->rows);
    memset(s, 0, sizeof *s);
}

#define DUP_SLOTS 2048 /* a power of two, at least twice MAX_SCAN_ROWS */

static const scan_row *scan_lookup(const scan_out *s, const mmkv_datum *key)
{
    for (size_t i = 0; i < s->n; i++)
        if (mmkv_key_equal(&s->rows[i].key.d, key)) return &s->rows[i];
    return NULL;
}

/* A full scan (up to MAX_SCAN_ROWS rows), each row checked; with `enforce`, no key twice. */
static void do_scan(const fuzz_ctx *ctx, mmkv_conn *conn, const mmkv_snapshot *snap, scan_out *out,
                    int enforce, const char *what)
{
    memset(out, 0, sizeof *out);
    out->rows = xmalloc(MAX_SCAN_ROWS * sizeof *out->rows);
    static int32_t dup[DUP_SLOTS];
    memset(dup, -1, sizeof dup);
    mmkv_scan *scan = NULL;
    clear_error(conn);
    int rc = mmkv_scan_open(conn, snap, &scan);
    check_read_rc(ctx, conn, rc, what);
    if (rc != MMKV_OK) {
        out->rc = rc;
        return;
    }
    mmkv_row row;
    for (;;) {
        if (out->n == MAX_SCAN_ROWS) {
            rc = MMKV_OK;
            break;
        }
        clear_error(conn);
        rc = mmkv_scan_next(scan, &row);
        check_read_rc(ctx, conn, rc, what);
        if (rc != MMKV_OK) break;
        check_row(ctx, &row, snap->tail, what);
        if (enforce && !key_is_nan(&row.key)) {
            uint64_t h = mmkv_key_hash(&row.key);
            for (uint64_t i = h & (DUP_SLOTS - 1);; i = (i + 1) & (DUP_SLOTS - 1)) {
                if (dup[i] < 0) {
                    dup[i] = (int32_t)out->n;
                    break;
                }
                const scan_row *seen = &out->rows[dup[i]];
                if (mmkv_key_equal(&seen->key.d, &row.key))
                    fail("%s: key %s returned twice, at offsets %llu and %llu", what,
                         show(&row.key), (unsigned long long)seen->offset,
                         (unsigned long long)row.offset);
            }
        }
        out->rows[out->n].key = own(&row.key);
        out->rows[out->n].offset = row.offset;
        out->n++;
    }
    mmkv_scan_close(scan);
    out->rc = rc;
    out->complete = rc != MMKV_OK;
}

/* ---- the harness's own reading of the log (format.h) ---- */

typedef struct oracle_key {
    mmkv_datum key; /* points into image */
    uint64_t offset;
    int tombstone;
} oracle_key;

typedef struct oracle {
    int enforce;   /* compare reads with it */
    int errors_ok; /* a read may fail (explained) instead of answering: the index may be
                      damaged; otherwise, with an intact log, reads must answer */
    int valid;     /* an intact meta slot and a tail inside the file */
    int damaged;   /* a record below the tail does not parse or fails its checksum */
    uint64_t damaged_at;
    uint64_t tail;
    unsigned char *image; /* the file up to the tail */
    oracle_key *keys;
    int32_t *table;
    size_t n_keys, table_slots, n_live;
} oracle;

static void oracle_free(oracle *o)
{
    free(o->image);
    free(o->keys);
    free(o->table);
    memset(o, 0, sizeof *o);
}

/* As format.h defines it: a slot of format version 3 (MMKV_META_HAS_START) also carries the log's
** start under a second checksum, and the log is [start, tail). */
static int meta_intact(const mmkv_meta *m)
{
    if ((m->flags & MMKV_META_HAS_START) &&
        (m->start_checksum != mmkv_crc32c(0, m, offsetof(mmkv_meta, start_checksum)) ||
         m->log_start < MMKV_DATA_START || m->log_start % MMKV_RECORD_ALIGN != 0 ||
         m->log_start > m->committed_tail))
        return 0;
    return m->magic == MMKV_META_MAGIC &&
           m->checksum == mmkv_crc32c(0, m, offsetof(mmkv_meta, checksum)) &&
           m->committed_tail >= MMKV_DATA_START && m->committed_tail % MMKV_RECORD_ALIGN == 0 &&
           m->committed_tail <= MMKV_MAX_FILE_SIZE && m->txn_start >= MMKV_DATA_START &&
           m->txn_start <= m->committed_tail;
}

static oracle_key *oracle_find(const oracle *o, const mmkv_datum *key)
{
    if (!o->table_slots) return NULL;
    uint64_t mask = o->table_slots - 1;
    for (uint64_t i = mmkv_key_hash(key) & mask;; i = (i + 1) & mask) {
        if (o->table[i] < 0) return NULL;
        if (mmkv_key_equal(&o->keys[o->table[i]].key, key)) return &o->keys[o->table[i]];
    }
}

static void oracle_read(const fuzz_ctx *ctx, oracle *o)
{
    memset(o, 0, sizeof *o);
    struct stat st;
    if (fstat(ctx->data_fd, &st) != 0) fail("fstat of the data file");
    uint64_t size = (uint64_t)st.st_size;
    if (size < MMKV_DATA_START) return;
    mmkv_meta m[2];
    int best = -1;
    for (int i = 0; i < 2; i++) {
        if (pread(ctx->data_fd, &m[i], sizeof m[i], MMKV_META_OFFSET(i)) != (ssize_t)sizeof m[i])
            fail("reading meta slot %d", i);
        if (meta_intact(&m[i]) && (best < 0 || m[i].txid > m[best].txid)) best = i;
    }
    if (best < 0 || m[best].committed_tail > size) return;
    o->valid = 1;
    o->tail = m[best].committed_tail;
    uint64_t start =
        (m[best].flags & MMKV_META_HAS_START) ? m[best].log_start : (uint64_t)MMKV_DATA_START;
    o->image = xmalloc(o->tail);
    if (pread(ctx->data_fd, o->image, o->tail, 0) != (ssize_t)o->tail) fail("reading the log");
    size_t max_records = (o->tail - start) / 32 + 1;
    o->keys = xmalloc(max_records * sizeof *o->keys);
    for (o->table_slots = 16; o->table_slots < 2 * max_records;)
        o->table_slots *= 2;
    o->table = xmalloc(o->table_slots * sizeof *o->table);
    memset(o->table, -1, o->table_slots * sizeof *o->table);
    for (uint64_t pos = start; pos < o->tail;) {
        mmkv_record_header h;
        int ok = pos + sizeof h <= o->tail;
        if (ok) memcpy(&h, o->image + pos, sizeof h);
        ok = ok && h.key_type >= MMKV_INTEGER && h.key_type <= MMKV_BLOB &&
             h.value_type >= MMKV_INTEGER && h.value_type <= MMKV_NULL;
        ok = ok && ((h.key_type != MMKV_INTEGER && h.key_type != MMKV_FLOAT) || h.key_len == 8);
        ok = ok &&
             ((h.value_type != MMKV_INTEGER && h.value_type != MMKV_FLOAT) || h.value_len == 8);
        ok = ok && (h.value_type != MMKV_NULL || h.value_len == 0);
        uint64_t used = sizeof h + (uint64_t)h.key_len + h.value_len;
        uint64_t rsize = (used + 7) & ~(uint64_t)7;
        ok = ok && pos + rsize <= o->tail;
        uint64_t where = pos;
        ok = ok && h.checksum == mmkv_crc32c(mmkv_crc32c(0, &where, sizeof where),
                                             o->image + pos + 4, used - 4);
        if (!ok) {
            o->damaged = 1;
            o->damaged_at = pos;
            return;
        }
        if (h.flags & MMKV_RECORD_PAD) { /* fills bytes a power cut lost: no key */
            pos += rsize;
            continue;
        }
        mmkv_datum key = {h.key_type, h.key_len, o->image + pos + sizeof h};
        if (key_is_nan(&key)) {
            o->valid = 0; /* the engine can never find such a key: no truth to compare with */
            return;
        }
        oracle_key *k = oracle_find(o, &key);
        if (!k) {
            k = &o->keys[o->n_keys];
            k->key = key;
            uint64_t mask = o->table_slots - 1;
            uint64_t i = mmkv_key_hash(&key) & mask;
            while (o->table[i] >= 0)
                i = (i + 1) & mask;
            o->table[i] = (int32_t)o->n_keys++;
        } else {
            o->n_live -= !k->tombstone;
        }
        k->offset = pos;
        k->tombstone = h.flags & MMKV_RECORD_TOMBSTONE;
        o->n_live += !k->tombstone;
        pos += rsize;
    }
}

/* A complete scan must be exactly the live keys' newest records; one that meets a damaged record
** must fail with MMKV_CORRUPT. */
static void oracle_check_scan(const oracle *o, const mmkv_snapshot *snap, const scan_out *s,
                              const char *what)
{
    if (!o->enforce || !o->valid) return;
    if (snap->tail != o->tail)
        fail("%s: snapshot tail %llu, but the newest intact meta slot says %llu", what,
             (unsigned long long)snap->tail, (unsigned long long)o->tail);
    if (!s->complete) return;
    if (o->damaged) {
        if (s->rc != MMKV_CORRUPT && !(o->errors_ok && s->rc != MMKV_NOTFOUND))
            fail("%s: the record at %llu is damaged, but the scan ended with %d", what,
                 (unsigned long long)o->damaged_at, s->rc);
        return;
    }
    if (s->rc != MMKV_NOTFOUND && o->errors_ok) return;
    if (s->rc != MMKV_NOTFOUND) fail("%s: scan of an intact log failed with %d", what, s->rc);
    for (size_t i = 0; i < s->n; i++) {
        const oracle_key *k = oracle_find(o, &s->rows[i].key.d);
        if (!k || k->tombstone || k->offset != s->rows[i].offset)
            fail("%s: scan returned key %s at %llu; the log's newest version is %s at %llu", what,
                 show(&s->rows[i].key.d), (unsigned long long)s->rows[i].offset,
                 !k             ? "absent"
                 : k->tombstone ? "a tombstone"
                                : "live",
                 k ? (unsigned long long)k->offset : 0ull);
    }
    if (s->n != o->n_live)
        fail("%s: scan returned %zu rows; the log has %zu live keys", what, s->n, o->n_live);
}

/* ---- keys and values from the script ---- */

typedef struct pool {
    owned keys[MAX_POOL];
    size_t n;
} pool;

static void pool_add(pool *p, const mmkv_datum *key)
{
    if (p->n < MAX_POOL) p->keys[p->n++] = own(key);
}

static void pool_free(pool *p)
{
    for (size_t i = 0; i < p->n; i++)
        disown(&p->keys[i]);
    p->n = 0;
}

static owned synth_key(script *s)
{
    static const double reals[] = {1.0,
                                   -0.0,
                                   0.0,
                                   0.5,
                                   2.0,
                                   -1.0,
                                   1e300,
                                   9007199254740992.0,
                                   9007199254740993.0,
                                   1.0 / 0.0,
                                   -1.0 / 0.0,
                                   123.0,
                                   1e-300,
                                   9223372036854775808.0,
                                   -9223372036854775808.0,
                                   3.25};
    static const char *formats[] = {"%d", " %d", "%d.0", "%d ", "+%d", "%de0", "0%d", "%d.5"};
    unsigned t = next(s);
    unsigned char buf[16];
    char text[32];
    switch (t % 8) {
    case 0:
    case 1: {
        int64_t i = (int64_t)(int16_t)next64(s, 2) % 512;
        return own_bytes(MMKV_INTEGER, &i, 8);
    }
    case 2: {
        unsigned c = next(s);
        double r = c < 64 ? reals[c % 16] : (double)(int8_t)c / 4.0;
        return own_bytes(MMKV_FLOAT, &r, 8);
    }
    case 3: {
        int n = snprintf(text, sizeof text, formats[(t >> 3) % 8], (int)(next64(s, 2) % 512));
        if (text_encoding == MMKV_TEXT_UTF8) return own_bytes(MMKV_TEXT, text, (uint32_t)n);
        /* The same characters in UTF-16; now and then one with a high byte, which is no digit. */
        unsigned char wide[2 * sizeof text];
        int odd = (t >> 6) % 4 == 0 ? (int)(next(s) % (unsigned)n) : -1;
        for (int i = 0; i < n; i++) {
            unsigned char high = i == odd ? 0x01 : 0x00;
            wide[2 * i] = text_encoding == MMKV_TEXT_UTF16LE ? (unsigned char)text[i] : high;
            wide[2 * i + 1] = text_encoding == MMKV_TEXT_UTF16LE ? high : (unsigned char)text[i];
        }
        return own_bytes(MMKV_TEXT, wide, (uint32_t)(2 * n));
    }
    case 4:
    case 5: {
        uint32_t n = next(s) % 9;
        for (uint32_t i = 0; i < n; i++)
            buf[i] = (unsigned char)next(s);
        return own_bytes(t % 8 == 4 ? MMKV_TEXT : MMKV_BLOB, buf, n);
    }
    case 6:
        return own_bytes((t >> 3) & 1 ? MMKV_TEXT : MMKV_BLOB, "", 0);
    default: {
        int64_t i = (int64_t)next64(s, 8);
        return own_bytes(MMKV_INTEGER, &i, 8);
    }
    }
}

static owned synth_value(script *s)
{
    unsigned t = next(s);
    switch (t % 5) {
    case 0: {
        int64_t i = (int64_t)next64(s, 2);
        return own_bytes(MMKV_INTEGER, &i, 8);
    }
    case 1: {
        double r = (double)(int16_t)next64(s, 2) / 8.0;
        if ((t >> 3) % 4 == 0) r = -0.0;
        return own_bytes(MMKV_FLOAT, &r, 8);
    }
    case 2:
    case 3: {
        /* Mostly short; now and then long enough to grow the file. */
        uint32_t n = (t >> 3) % 8 == 7 ? 1000 + next(s) * 16 : next(s) % 40;
        unsigned char *buf = xmalloc(n);
        unsigned fill = next(s);
        for (uint32_t i = 0; i < n; i++)
            buf[i] = (unsigned char)(fill + i * 7);
        owned o = own_bytes(t % 5 == 2 ? MMKV_TEXT : MMKV_BLOB, buf, n);
        free(buf);
        return o;
    }
    default:
        return own_bytes(MMKV_NULL, NULL, 0);
    }
}

/* A key for an operation: one of the pool's, or a new one. */
static owned pick_key(script *s, const pool *p)
{
    unsigned c = next(s);
    if (p->n && c % 4 != 3) return own(&p->keys[(c / 4) % p->n].d);
    return synth_key(s);
}

/* ---- gets ---- */

/* A get, checked: the row's key is the key asked for, the row a good record below the tail. */
static int checked_get(const fuzz_ctx *ctx, mmkv_conn *conn, const mmkv_snapshot *snap,
                       const mmkv_datum *key, mmkv_row *row, const char *what)
{
    clear_error(conn);
    int rc = mmkv_get(conn, snap, key, row);
    check_read_rc(ctx, conn, rc, what);
    if (rc == MMKV_OK) {
        check_row(ctx, row, snap->tail, what);
        if (!mmkv_key_equal(&row->key, key))
            fail("%s: asked for key %s, got key %s", what, show(key), show(&row->key));
    }
    return rc;
}

/* Gets each pool key; each must agree with a complete scan of the same snapshot, and with the log.
 */
static void get_pool(const fuzz_ctx *ctx, mmkv_conn *conn, const mmkv_snapshot *snap, const pool *p,
                     const scan_out *s, const oracle *o, const char *what)
{
    for (size_t i = 0; i < p->n; i++) {
        const mmkv_datum *key = &p->keys[i].d;
        mmkv_row row;
        int rc = checked_get(ctx, conn, snap, key, &row, what);
        if (key_is_nan(key)) continue;
        if (o && o->errors_ok && rc != MMKV_OK && rc != MMKV_NOTFOUND) continue;
        if (o && o->enforce && s && s->complete && s->rc == MMKV_NOTFOUND) {
            const scan_row *r = scan_lookup(s, key);
            if (r && (rc != MMKV_OK || row.offset != r->offset))
                fail("%s: key %s: the scan found it at %llu, get says %d%s%llu", what, show(key),
                     (unsigned long long)r->offset, rc, rc == MMKV_OK ? " at " : "",
                     rc == MMKV_OK ? (unsigned long long)row.offset : 0ull);
            if (!r && rc == MMKV_OK)
                fail("%s: key %s: get found it at %llu, the scan did not", what, show(key),
                     (unsigned long long)row.offset);
        }
        if (o && o->enforce && o->valid && !o->damaged) {
            const oracle_key *k = oracle_find(o, key);
            int live = k && !k->tombstone;
            if (live ? rc != MMKV_OK || row.offset != k->offset : rc != MMKV_NOTFOUND)
                fail("%s: key %s: get says %d (at %llu); the log says %s (at %llu)", what,
                     show(key), rc, rc == MMKV_OK ? (unsigned long long)row.offset : 0ull,
                     live ? "live" : "absent", k ? (unsigned long long)k->offset : 0ull);
        }
    }
}

/* ---- get_similar ---- */

/* The number a key stands for under NUMERIC affinity: itself if a number, its reading if TEXT. */
static int as_number(const mmkv_datum *key, mmkv_datum *number, uint64_t *storage)
{
    if (key->type == MMKV_INTEGER || key->type == MMKV_FLOAT) {
        *number = *key;
        return 1;
    }
    return mmkv_text_as_number(key, text_encoding, number, storage);
}

/* What mmkv.h promises get_similar finds: the key equal to the probe, and keys that read as the
** same number as the probe under NUMERIC affinity. */
static int similar(const mmkv_datum *key, const mmkv_datum *probe)
{
    if (mmkv_key_equal(key, probe)) return 1;
    mmkv_datum a, b;
    uint64_t sa, sb;
    return as_number(key, &a, &sa) && as_number(probe, &b, &sb) && mmkv_key_equal(&a, &b);
}

typedef struct similar_ctx {
    const fuzz_ctx *ctx;
    const mmkv_snapshot *snap;
    const mmkv_datum *probe;
    uint64_t offsets[MAX_SCAN_ROWS];
    size_t n;
} similar_ctx;

static int similar_emit(void *arg, const mmkv_row *row)
{
    similar_ctx *sc = arg;
    check_row(sc->ctx, row, sc->snap->tail, "get_similar");
    if (!similar(&row->key, sc->probe))
        fail("get_similar: probe %s returned key %s", show(sc->probe), show(&row->key));
    for (size_t i = 0; i < sc->n; i++)
        if (sc->offsets[i] == row->offset)
            fail("get_similar: the row at %llu emitted twice", (unsigned long long)row->offset);
    if (sc->n < MAX_SCAN_ROWS) sc->offsets[sc->n++] = row->offset;
    return MMKV_OK;
}

static void check_similar(const fuzz_ctx *ctx, mmkv_conn *conn, const mmkv_snapshot *snap,
                          const mmkv_datum *probe, const scan_out *s, int enforce)
{
    static similar_ctx sc;
    sc.ctx = ctx;
    sc.snap = snap;
    sc.probe = probe;
    sc.n = 0;
    clear_error(conn);
    int rc = mmkv_get_similar(conn, snap, probe, similar_emit, &sc);
    check_read_rc(ctx, conn, rc, "get_similar");
    if (rc == MMKV_NOTFOUND) fail("get_similar returned MMKV_NOTFOUND");
    if (!enforce || rc != MMKV_OK || !s->complete || s->rc != MMKV_NOTFOUND || key_is_nan(probe))
        return;
    /* Every row of the same snapshot that is similar to the probe, and only those. */
    size_t expected = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (!similar(&s->rows[i].key.d, probe)) continue;
        expected++;
        size_t j = 0;
        while (j < sc.n && sc.offsets[j] != s->rows[i].offset)
            j++;
        if (j == sc.n)
            fail("get_similar: probe %s missed key %s at %llu, which the scan returned",
                 show(probe), show(&s->rows[i].key.d), (unsigned long long)s->rows[i].offset);
    }
    if (expected != sc.n)
        fail("get_similar: probe %s returned %zu rows; the scan has %zu similar keys", show(probe),
             sc.n, expected);
}

/* ---- the write transaction ---- */

/* What a key the transaction wrote should read as. */
typedef struct state {
    int known;   /* 0: a read of it failed (or was undone by a rebuild), so it cannot be checked */
    int written; /* known from the transaction's own write, not from a read */
    int present;
    owned value;
} state;

typedef struct tracked {
    owned key;
    state before; /* committed, before the transaction */
    state now;    /* in the transaction */
    state saved;  /* at the savepoint */
} tracked;

static void state_set(state *st, int known, int present, const mmkv_datum *value)
{
    disown(&st->value);
    st->known = known;
    st->written = 0;
    st->present = present;
    if (present && value) st->value = own(value);
}

static void state_copy(state *to, const state *from)
{
    state_set(to, from->known, from->present, from->present ? &from->value.d : NULL);
    to->written = from->written;
}

static void state_free(state *st)
{
    disown(&st->value);
}

/* A read of key must give what st says. */
static void check_state(const fuzz_ctx *ctx, mmkv_conn *conn, const mmkv_datum *key,
                        const state *st, const char *what)
{
    if (!st->known) return;
    mmkv_snapshot snap;
    clear_error(conn);
    int rc = mmkv_snapshot_take(conn, &snap);
    check_read_rc(ctx, conn, rc, what);
    if (rc != MMKV_OK) return;
    mmkv_row row;
    rc = checked_get(ctx, conn, &snap, key, &row, what);
    if (rc != MMKV_OK && rc != MMKV_NOTFOUND) return; /* an error, explained: fine */
    if (st->present && rc == MMKV_NOTFOUND)
        fail("%s: key %s should hold %s but is absent", what, show(key), show(&st->value.d));
    if (!st->present && rc == MMKV_OK)
        fail("%s: key %s should be absent but holds %s (at %llu)", what, show(key),
             show(&row.value), (unsigned long long)row.offset);
    if (st->present && !datum_same(&row.value, &st->value.d))
        fail("%s: key %s holds %s, not %s", what, show(key), show(&row.value), show(&st->value.d));
}

typedef struct txn_log {
    tracked keys[MAX_TRACKED];
    size_t n;
    int outcome; /* 1 committed, 0 rolled back, -1 unknown */
} txn_log;

static void txn_log_free(txn_log *t)
{
    for (size_t i = 0; i < t->n; i++) {
        disown(&t->keys[i].key);
        state_free(&t->keys[i].before);
        state_free(&t->keys[i].now);
        state_free(&t->keys[i].saved);
    }
    t->n = 0;
}

/* The key's entry, made on its first write from what the writer reads before it. */
static tracked *track(const fuzz_ctx *ctx, mmkv_conn *conn, txn_log *t, const mmkv_datum *key)
{
    for (size_t i = 0; i < t->n; i++)
        if (mmkv_key_equal(&t->keys[i].key.d, key)) return &t->keys[i];
    if (t->n == MAX_TRACKED) return NULL;
    tracked *k = &t->keys[t->n];
    memset(k, 0, sizeof *k);
    mmkv_snapshot snap;
    mmkv_row row;
    clear_error(conn);
    int rc = mmkv_snapshot_take(conn, &snap);
    check_read_rc(ctx, conn, rc, "snapshot before a write");
    if (rc == MMKV_OK) rc = checked_get(ctx, conn, &snap, key, &row, "get before a write");
    if (ctx->consistent && (rc == MMKV_OK || rc == MMKV_NOTFOUND))
        state_set(&k->now, 1, rc == MMKV_OK, &row.value);
    k->key = own(key);
    state_copy(&k->before, &k->now);
    state_copy(&k->saved, &k->now);
    t->n++;
    return k;
}

static void run_transaction(const fuzz_ctx *ctx, mmkv_conn *conn, mmkv_conn *other, script *s,
                            const pool *p, txn_log *t)
{
    stage = "write transaction";
    t->outcome = -1;
    clear_error(conn);
    int rc = mmkv_txn_begin(conn);
    check_rc(ctx, conn, rc, "mmkv_txn_begin");
    if (rc != MMKV_OK) return;
    if (other) {
        clear_error(other);
        int rc2 = mmkv_txn_begin(other);
        check_rc(ctx, other, rc2, "second connection's mmkv_txn_begin");
        if (rc2 != MMKV_BUSY) fail("a second writer began while the first was writing: %d", rc2);
    }
    int savepoint = 0, broken = 0;
    unsigned n_ops = 1 + next(s) % MAX_WRITES;
    for (unsigned op = 0; op < n_ops && !broken; op++) {
        unsigned kind = next(s) % 10;
        if (kind == 8 || kind == 9) { /* the integrity check, or an index rebuild, mid-write */
            clear_error(conn);
            rc = kind == 8 ? mmkv_check(conn, NULL) : mmkv_rebuild(conn);
            check_rc(ctx, conn, rc, kind == 8 ? "mmkv_check in a transaction" : "mmkv_rebuild");
            if (rc == MMKV_NOTFOUND || rc == MMKV_CONSTRAINT) fail("check or rebuild: %d", rc);
            if (kind == 9 && rc != MMKV_OK) broken = 1;
            if (kind == 9 && rc == MMKV_OK) {
                /* A rebuilt index may see the log differently from a damaged one: what was read
                ** through the old index no longer holds; what the transaction wrote still does. */
                for (size_t i = 0; i < t->n; i++) {
                    state *st[3] = {&t->keys[i].before, &t->keys[i].now, &t->keys[i].saved};
                    for (int j = 0; j < 3; j++)
                        if (!st[j]->written) st[j]->known = 0;
                }
            }
            continue;
        }
        if (kind == 6) { /* savepoint, or back to it */
            if (!savepoint) {
                clear_error(conn);
                rc = mmkv_txn_savepoint(conn, 0);
                check_rc(ctx, conn, rc, "mmkv_txn_savepoint");
                if (rc != MMKV_OK) break;
                for (size_t i = 0; i < t->n; i++)
                    state_copy(&t->keys[i].saved, &t->keys[i].now);
                savepoint = 1;
            } else {
                mmkv_txn_rollback_to(conn, 0);
                for (size_t i = 0; i < t->n; i++)
                    state_copy(&t->keys[i].now, &t->keys[i].saved);
            }
            continue;
        }
        owned key = pick_key(s, p);
        if (key_is_nan(&key.d)) { /* SQLite never writes one */
            disown(&key);
            continue;
        }
        tracked *k = track(ctx, conn, t, &key.d);
        if (!k) {
            disown(&key);
            break;
        }
        if (!savepoint) state_copy(&k->saved, &k->now);
        if (kind == 7) { /* just look */
            check_state(ctx, conn, &key.d, &k->now, "writer's read");
            disown(&key);
            continue;
        }
        owned value = synth_value(s);
        clear_error(conn);
        if (kind < 2) {
            rc = mmkv_put(conn, &key.d, &value.d, MMKV_PUT_INSERT);
            check_rc(ctx, conn, rc, "mmkv_put insert");
            if (k->now.known && (rc == MMKV_CONSTRAINT) != k->now.present &&
                (rc == MMKV_OK || rc == MMKV_CONSTRAINT))
                fail("insert of key %s %s: %d", show(&key.d),
                     k->now.present ? "(present)" : "(absent)", rc);
            if (rc == MMKV_NOTFOUND) fail("mmkv_put returned MMKV_NOTFOUND");
        } else if (kind < 5) {
            rc = mmkv_put(conn, &key.d, &value.d, MMKV_PUT_REPLACE);
            check_rc(ctx, conn, rc, "mmkv_put replace");
            if (rc == MMKV_CONSTRAINT || rc == MMKV_NOTFOUND)
                fail("replace of key %s returned %d", show(&key.d), rc);
        } else {
            rc = mmkv_delete(conn, &key.d);
            check_rc(ctx, conn, rc, "mmkv_delete");
            if (k->now.known && (rc == MMKV_OK || rc == MMKV_NOTFOUND) &&
                (rc == MMKV_OK) != k->now.present)
                fail("delete of key %s %s: %d", show(&key.d),
                     k->now.present ? "(present)" : "(absent)", rc);
            if (rc == MMKV_CONSTRAINT) fail("mmkv_delete returned MMKV_CONSTRAINT");
        }
        if (rc == MMKV_OK) {
            /* whatever it was, now it is this */
            state_set(&k->now, ctx->consistent, kind < 5, &value.d);
            k->now.written = 1;
            check_state(ctx, conn, &key.d, &k->now, "writer's read after its write");
        } else if (rc != MMKV_CONSTRAINT && rc != MMKV_NOTFOUND) {
            broken = 1; /* an error (explained): SQLite would roll back */
        }
        if (other) check_state(ctx, other, &key.d, &k->before, "second connection during a write");
        disown(&value);
        disown(&key);
    }
    unsigned end = next(s) % 4;
    if (broken || end == 0) {
        mmkv_txn_rollback(conn);
        t->outcome = 0;
    } else {
        clear_error(conn);
        rc = mmkv_txn_prepare(conn);
        check_rc(ctx, conn, rc, "mmkv_txn_prepare");
        if (rc != MMKV_OK || end == 1) {
            mmkv_txn_rollback(conn);
            t->outcome = 0;
        } else {
            mmkv_txn_commit(conn);
            t->outcome = 1;
        }
    }
    if (mmkv_txn_active(conn)) fail("the transaction is still active after it ended");
}

/* After the transaction: each key it wrote reads as it left it, or as before it. */
static void check_outcome(const fuzz_ctx *ctx, mmkv_conn *conn, const txn_log *t, const char *what)
{
    if (t->outcome < 0) return;
    for (size_t i = 0; i < t->n; i++)
        check_state(ctx, conn, &t->keys[i].key.d, t->outcome ? &t->keys[i].now : &t->keys[i].before,
                    what);
}

/* ---- files ---- */

static void fix_checksums(uint8_t flags, unsigned char *data, size_t data_size,
                          unsigned char *index, size_t index_size)
{
    if (data && (flags & FUZZ_FIX_RECORDS)) {
        for (uint64_t pos = MMKV_DATA_START; pos + sizeof(mmkv_record_header) <= data_size;) {
            mmkv_record_header h;
            memcpy(&h, data + pos, sizeof h);
            if (h.key_type < MMKV_INTEGER || h.key_type > MMKV_NULL ||
                h.value_type < MMKV_INTEGER || h.value_type > MMKV_NULL)
                break;
            uint64_t used = sizeof h + (uint64_t)h.key_len + h.value_len;
            uint64_t rsize = (used + 7) & ~(uint64_t)7;
            if (pos + rsize > data_size) break;
            uint64_t where = pos;
            h.checksum =
                mmkv_crc32c(mmkv_crc32c(0, &where, sizeof where), data + pos + 4, used - 4);
            memcpy(data + pos, &h.checksum, 4);
            pos += rsize;
        }
    }
    if (data && (flags & FUZZ_FIX_META)) {
        for (int i = 0; i < 2; i++) {
            if (MMKV_META_OFFSET(i) + sizeof(mmkv_meta) > data_size) break;
            unsigned char *m = data + MMKV_META_OFFSET(i);
            uint32_t crc = mmkv_crc32c(0, m, offsetof(mmkv_meta, checksum));
            memcpy(m + offsetof(mmkv_meta, checksum), &crc, 4);
            crc = mmkv_crc32c(0, m, offsetof(mmkv_meta, start_checksum));
            memcpy(m + offsetof(mmkv_meta, start_checksum), &crc, 4);
        }
    }
    if (data && (flags & FUZZ_FIX_HEADER) && data_size >= sizeof(mmkv_file_header)) {
        uint32_t crc = mmkv_crc32c(0, data, offsetof(mmkv_file_header, checksum));
        memcpy(data + offsetof(mmkv_file_header, checksum), &crc, 4);
    }
    if (!index || index_size < sizeof(mmkv_index_header)) return;
    mmkv_index_header h;
    memcpy(&h, index, sizeof h);
    if (flags & FUZZ_STAMP_BOOT) {
        mmkv_boot_id(h.boot_id);
        memcpy(index + offsetof(mmkv_index_header, boot_id), h.boot_id, sizeof h.boot_id);
    }
    if (flags & FUZZ_FIX_INDEX) {
        /* Only over tables that lie inside the image. */
        const uint64_t t[2][2] = {{h.table_offset, h.table_slots}, {h.old_offset, h.old_slots}};
        int fits = 1;
        for (int i = 0; i < 2 && fits; i++) {
            if (i == 1 && !t[1][0]) break;
            fits = t[i][0] >= MMKV_INDEX_TABLES_START && t[i][1] <= index_size / 8 &&
                   t[i][0] <= index_size && t[i][1] * 8 <= index_size - t[i][0];
        }
        if (fits) {
            uint32_t crc = mmkv_crc32c(0, index + h.table_offset, h.table_slots * 8);
            if (h.old_offset) crc = mmkv_crc32c(crc, index + h.old_offset, h.old_slots * 8);
            memcpy(index + offsetof(mmkv_index_header, tables_checksum), &crc, 4);
        }
        uint32_t crc = mmkv_crc32c(0, index, offsetof(mmkv_index_header, checksum));
        memcpy(index + offsetof(mmkv_index_header, checksum), &crc, 4);
    }
}

/* Writes the first n bytes (the input's and any the fix-ups touched), then extends the file to
** size with a hole. */
static void write_file(const char *path, const unsigned char *bytes, size_t n, size_t size)
{
    if (n > size) n = size;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail("cannot create %s", path);
    for (size_t done = 0; done < n;) {
        ssize_t w = write(fd, bytes + done, n - done);
        if (w <= 0) fail("cannot write %s", path);
        done += (size_t)w;
    }
    if (ftruncate(fd, (off_t)size) != 0) fail("cannot size %s", path);
    close(fd);
}

static uint32_t read32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* An image of at least len bytes (the input's), zero-extended to size (capped). */
static unsigned char *make_image(const uint8_t *bytes, size_t len, uint32_t size, size_t *out_size)
{
    size_t n = size > FUZZ_MAX_FILE ? FUZZ_MAX_FILE : size;
    if (n < len) n = len;
    unsigned char *image = calloc(n ? n : 1, 1);
    if (!image) fail("out of memory");
    if (len) memcpy(image, bytes, len);
    *out_size = n;
    return image;
}

/* ---- one input ---- */

/* Returns whether reads were held to agree with each other and with the log. */
static int read_phase(const fuzz_ctx *ctx, mmkv_conn *conn, script *s, pool *p, const char *what)
{
    stage = what;
    mmkv_commit committed;
    clear_error(conn);
    int rc = mmkv_committed(conn, &committed);
    check_read_rc(ctx, conn, rc, "mmkv_committed");
    mmkv_snapshot snap;
    clear_error(conn);
    rc = mmkv_snapshot_take(conn, &snap);
    check_read_rc(ctx, conn, rc, "mmkv_snapshot_take");
    if (rc != MMKV_OK) return 0;
    /* The integrity check vouches for a file: then reads must agree with the log, forged or not. */
    clear_error(conn);
    int checked = mmkv_check(conn, NULL);
    check_read_rc(ctx, conn, checked, "mmkv_check");
    if (checked == MMKV_NOTFOUND) fail("mmkv_check returned MMKV_NOTFOUND");
    oracle o;
    oracle_read(ctx, &o);
    o.enforce = ctx->strict || checked == MMKV_OK;
    o.errors_ok = !ctx->strict;
    if (checked == MMKV_OK && (!o.valid || o.damaged))
        fail("%s: mmkv_check passed a log with %s", what,
             o.valid ? "a damaged record" : "no usable meta slot");
    scan_out scan;
    do_scan(ctx, conn, &snap, &scan, o.enforce, what);
    oracle_check_scan(&o, &snap, &scan, what);
    /* The counts are the commit's word, which only the integrity check holds to the log (a meta
    ** slot and records from different files all have good checksums). */
    if (checked == MMKV_OK && o.valid && mmkv_live_count(conn) != o.n_live)
        fail("%s: mmkv_check passed, but the live count is %llu and the log has %zu live keys",
             what, (unsigned long long)mmkv_live_count(conn), o.n_live);

    if (p) {
        /* The pool: keys the scan found (some by the script's choice), and keys made up. */
        size_t first = scan.n < 8 ? scan.n : 8;
        for (size_t i = 0; i < first; i++)
            pool_add(p, &scan.rows[i].key.d);
        unsigned extra = next(s) % (MAX_SCANNED_IN_POOL - 7);
        for (unsigned i = 0; i < extra && scan.n; i++)
            pool_add(p, &scan.rows[next64(s, 2) % scan.n].key.d);
        unsigned synth = 1 + next(s) % MAX_SYNTH_KEYS;
        for (unsigned i = 0; i < synth && p->n < MAX_POOL; i++) {
            owned k = synth_key(s);
            p->keys[p->n++] = k;
        }
        get_pool(ctx, conn, &snap, p, &scan, &o, what);
        unsigned probes = 1 + next(s) % MAX_PROBES;
        for (unsigned i = 0; i < probes && p->n; i++)
            check_similar(ctx, conn, &snap, &p->keys[next(s) % p->n].d, &scan, o.enforce);
    } else {
        /* Every key the scan found must be found again by a get. */
        pool all = {.n = 0};
        for (size_t i = 0; i < scan.n && i < MAX_POOL; i++)
            pool_add(&all, &scan.rows[i].key.d);
        get_pool(ctx, conn, &snap, &all, &scan, &o, what);
        pool_free(&all);
    }
    scan_free(&scan);
    int enforced = o.enforce;
    oracle_free(&o);
    return enforced;
}

static mmkv_conn *open_conn(const fuzz_ctx *ctx, const char *what)
{
    mmkv_open_options options = {.sync = MMKV_SYNC_OFF, .text_encoding = text_encoding};
    mmkv_conn *conn = NULL;
    char *err = NULL;
    int rc = mmkv_open(ctx->data_path, &options, &conn, &err);
    if (rc == MMKV_OK && !conn) fail("%s: MMKV_OK without a connection", what);
    if (rc != MMKV_OK) {
        if (conn) fail("%s: failed (%d) but returned a connection", what, rc);
        check_message(ctx, rc, err, what);
        if (rc == MMKV_BUSY) fail("%s: MMKV_BUSY with no other user: %s", what, err);
    }
    free(err);
    return conn;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < FUZZ_HEADER_SIZE) return 0;
    uint8_t flags = data[0];
    size_t rest = size - FUZZ_HEADER_SIZE;
    size_t script_len = data[1] < rest ? data[1] : rest;
    rest -= script_len;
    size_t data_len = read32(data + 2) < rest ? read32(data + 2) : rest;
    size_t index_len = rest - data_len;
    const uint8_t *script_bytes = data + FUZZ_HEADER_SIZE;
    const uint8_t *data_bytes = script_bytes + script_len;
    const uint8_t *index_bytes = data_bytes + data_len;

    char data_path[600], index_path[640];
    snprintf(data_path, sizeof data_path, "%s/t%lu.mmkv", work_dir, ++iteration);
    snprintf(index_path, sizeof index_path, "%s-index", data_path);
    current_path = data_path;
    stage = "writing the files";

    size_t data_size = 0, index_size = 0;
    unsigned char *data_image = NULL, *index_image = NULL;
    if (data_len || read32(data + 6))
        data_image = make_image(data_bytes, data_len, read32(data + 6), &data_size);
    if (!(flags & FUZZ_NO_INDEX))
        index_image = make_image(index_bytes, index_len, read32(data + 10), &index_size);
    fix_checksums(flags, data_image, data_size, index_image, index_size);
    /* Open in the file's own encoding (0 reads as UTF-8; one this build does not know is refused
    ** whatever is asked). */
    text_encoding = MMKV_TEXT_UTF8;
    if (data_image && data_size >= sizeof(mmkv_file_header)) {
        uint32_t named = ((const mmkv_file_header *)data_image)->text_encoding;
        if (named >= MMKV_TEXT_UTF8 && named <= MMKV_TEXT_UTF16BE) text_encoding = (int)named;
    }
    /* The fix-ups write inside the images' first page or inside records, which are input bytes. */
    if (data_image) write_file(data_path, data_image, data_len > 4096 ? data_len : 4096, data_size);
    if (index_image)
        write_file(index_path, index_image, index_len > 4096 ? index_len : 4096, index_size);
    int strict = !(flags & FUZZ_FORGED);
    free(data_image);
    free(index_image);

    fuzz_ctx ctx = {data_path, -1, strict, flags, 0};
    script s = {script_bytes, script_len, 0};
    pool p = {.n = 0};
    txn_log t = {.n = 0};

    stage = "open";
    mmkv_conn *conn = open_conn(&ctx, "mmkv_open");
    if (conn) {
        ctx.data_fd = open(data_path, O_RDONLY | O_CLOEXEC);
        if (ctx.data_fd < 0) fail("mmkv_open succeeded, but the data file cannot be opened");
        mmkv_conn *other = NULL;
        if (flags & FUZZ_SECOND_CONN) {
            stage = "second open";
            other = open_conn(&ctx, "second mmkv_open");
            if (!other) fail("a second open of an open file failed");
        }
        if (strcmp(mmkv_data_path(conn), data_path) != 0) fail("mmkv_data_path differs");

        /* What the transaction reads, it reads through the index: if the index may be damaged
        ** (forged, or trusted unchecked) those reads say nothing about what the log holds, and
        ** the index may mend itself (growing, draining, rebuilding) under the transaction. */
        ctx.consistent = read_phase(&ctx, conn, &s, &p, "reads after open");
        run_transaction(&ctx, conn, other, &s, &p, &t);
        stage = "after the transaction";
        check_outcome(&ctx, conn, &t, "after the transaction");
        if (other) check_outcome(&ctx, other, &t, "second connection after the transaction");
        read_phase(&ctx, conn, &s, NULL, "reads after the transaction");

        stage = "close";
        mmkv_close(other);
        mmkv_close(conn);
        if (flags & FUZZ_DROP_INDEX) unlink(index_path);
        stage = "reopen";
        conn = open_conn(&ctx, "mmkv_open again");
        if (conn) {
            check_outcome(&ctx, conn, &t, "after the reopen");
            read_phase(&ctx, conn, &s, NULL, "reads after the reopen");
            mmkv_close(conn);
        }
        close(ctx.data_fd);
    }
    txn_log_free(&t);
    pool_free(&p);
    unlink(data_path);
    unlink(index_path);
    stage = "between inputs";
    return 0;
}
