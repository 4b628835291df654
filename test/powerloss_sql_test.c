/*
** Simulated power loss for tables a database file owns, with native writes in the same commits.
**
** An mmkv table of a database file records its commits in the database (the "<table>_commit" row,
** written in xSync) and SQLite's own commit decides, so a power cut has to take unsynced writes
** from SQLite's files and mmkv's at the same moment. A child process runs a workload whose every
** transaction writes kv rows and a row of a native table in one BEGIN ... COMMIT. Its SQLite goes
** through a VFS that wraps the default one, and mmkv calls a hook before each of its syncs
** (ext/file.h, test builds); both count into one sync counter and keep a "durable image" of each
** file: its content as of its last sync. The files are the database, its -wal or -journal, and
** mmkv's data and index files (not the -shm: SQLite rebuilds it). The crash points are the syncs
** and the moments right after each acknowledged commit (under synchronous=NORMAL in WAL mode a
** commit syncs nothing, and its records may be kept in the database, unsynced: commit_record.h).
** At the Nth crash point (before the sync), the child writes the image a power cut would leave of every file (everything synced,
** plus, of each 4 KiB page written since, by chance the new page, a torn half, garbage in the
** bytes written, or still the old page) and dies on the spot. A truncation or a deletion is
** durable at once.
**
** The parent opens the image with plain SQLite as after a reboot (another boot id) and checks that
** it holds exactly one state s of the workload, the same on both sides: the kv table holds the
** rows of transaction s (by a scan and key by key), the native ledger holds transactions 1..s, both
** integrity checks pass, and a further transaction commits and survives a reopen. With sync=full
** and PRAGMA synchronous=FULL, s is the last acknowledged commit or the one in flight; with
** sync=normal and synchronous=NORMAL it may be an earlier one too. Every crash point of a whole run
** is tried with several choices of lost pages, in WAL and in rollback-journal mode. With sync=off
** (and synchronous=FULL) mmkv syncs nothing, so the kv table may come back at an earlier whole
** commit than the ledger's, which is the last acknowledged or the one in flight; nothing may be
** damaged or half there, and both tables must take further commits.
**
** The *-compacting cases follow every third commit with INSERT INTO kv(kv) VALUES('compact') and
** wait for mmkv's worker to finish it: its steps (transactions of its own), its checkpoint, and the
** punching of the space below the log's start all meet the power cut in turn.
**
** The workload's states: -1 before the tables' creation commits, 0 after, then 1..TXNS. The child
** runs once per crash point and leaves one image for each choice of lost pages (seed).
**
**     MMKV_POWERLOSS_SEEDS=N          choices of lost pages per crash point (default 6)
**     MMKV_POWERLOSS_CASE=wal-full    one case only (see `scenarios` for the names)
**     MMKV_POWERLOSS_POINT=N          one crash point only
**     MMKV_POWERLOSS_SEED=N           one choice of lost pages only
**     MMKV_POWERLOSS_KEEP=DIR         copy each image to DIR before it is opened (the last stays)
**     MMKV_POWERLOSS_KEEP_GOING=1     go on past a failing image, printing each one
**     MMKV_SEED=N                     lose other pages: N is mixed into every choice's seed
**     MMKV_TEST=wal-full              (make test T=wal-full) the same as MMKV_POWERLOSS_CASE
*/
#include "engine_util.h"
#include "file.h"
#include "format.h"
#include "sqlite3_mmkv.h"
#include "worker.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DB_NAME "test.db"
#define DATA_FILE_NAME DB_NAME "-kv.mmkv" /* the default name of table kv's files */
#define INDEX_FILE_NAME DB_NAME "-kv.mmkv-index"
#define LEDGER_SCHEMA "CREATE TABLE ledger(txn INTEGER PRIMARY KEY, note TEXT)"
#define TXNS 12
#define KEYS_PER_TXN 64 /* new keys per transaction: 768 in all, past the index's first growth */
#define UPDATED_KEY 1   /* of transaction t's keys, t + 1 rewrites this one */
#define DELETED_KEY 2   /* and deletes this one */
#define KEY_SPACE 1000  /* transaction t's keys are t * KEY_SPACE + 0..KEYS_PER_TXN-1 */
#define COUNTER_KEY "counter"         /* holds the number of the last transaction */
#define UPDATED_VALUE "updated by %d" /* what transaction t writes over a key of t - 1 */
#define LEDGER_NOTE "txn %d"          /* the note of transaction t's ledger row */
#define VALUE_BYTES 100               /* so that each commit spans several pages */
#define NO_SCHEMA (-1)                /* the state before the tables' creation committed */
#define RUN_END (-2)         /* on the pipe: the run is over, the number of syncs follows */
#define CHILD_FAILED INT_MIN /* the workload stopped on an error, not a power cut */
#define RECOVERY_DONE 5      /* the exit status of a recovery the power did not cut */
#define NOT_READ INT_MIN     /* a state the image gave no answer for */
#define PAGE_BYTES 4096
/* What a power cut does to a page written since the last sync, out of PAGE_FATES equal chances:
** below FATE_TORN it reached the disk, FATE_TORN only its first half, FATE_GARBAGE garbage, and
** above that it is lost. */
#define PAGE_FATES 8
#define FATE_TORN 4
#define FATE_GARBAGE 5
#define MAX_TRACKED 16
#define MESSAGE_BYTES 512

#define DEFAULT_LOSS_SEEDS 6 /* choices of lost pages per crash point */

typedef struct scenario {
    const char *name;
    const char *journal_mode;  /* PRAGMA journal_mode */
    const char *synchronous;   /* PRAGMA synchronous */
    const char *mmkv_sync;     /* the table's sync= */
    int may_lose_acknowledged; /* an acknowledged commit may be lost (but never half of one) */
    int kv_may_lag;            /* kv may hold an earlier commit than the ledger (sync=off) */
    int compacting;            /* every third commit is followed by a whole compaction */
} scenario;

static const scenario scenarios[] = {
    {"wal-full", "WAL", "FULL", "full", 0, 0, 0},
    {"wal-normal", "WAL", "NORMAL", "normal", 1, 0, 0},
    {"delete-full", "DELETE", "FULL", "full", 0, 0, 0},
    {"delete-normal", "DELETE", "NORMAL", "normal", 1, 0, 0},
    {"wal-off", "WAL", "FULL", "off", 1, 1, 0},
    {"delete-off", "DELETE", "FULL", "off", 1, 1, 0},
    {"wal-full-compacting", "WAL", "FULL", "full", 0, 0, 1},
    {"wal-normal-compacting", "WAL", "NORMAL", "normal", 1, 0, 1},
    {"delete-off-compacting", "DELETE", "FULL", "off", 1, 1, 1},
};

/* ---- the child's view of the disk ---- */

/* A file whose loss is simulated, known by inode: mmkv writes and syncs its data file under
** another name before it links it into place. */
typedef struct tracked_file {
    int in_use;
    ino_t ino;
    int fd;                 /* our own descriptor, to read the file at a sync or at the crash */
    char name[64];          /* the name its image takes in the crash directory */
    unsigned char *durable; /* the content as of its last sync */
    uint64_t durable_size;
} tracked_file;

static tracked_file tracked[MAX_TRACKED];
static long sync_count, crash_at;
static long first_seed, last_seed; /* the choices of lost pages to write an image for */
static unsigned loss_seed;
static char work_dir[PATH_MAX - 64], crash_dir[PATH_MAX - 64];

static int read_whole(int fd, unsigned char **buf, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return 0;
    *size = (uint64_t)st.st_size;
    *buf = calloc(1, *size + 1);
    return *buf && pread(fd, *buf, *size, 0) == (ssize_t)*size;
}

static tracked_file *tracked_find(ino_t ino)
{
    for (int i = 0; i < MAX_TRACKED; i++)
        if (tracked[i].in_use && tracked[i].ino == ino) return &tracked[i];
    return NULL;
}

/* Starts tracking the file open on fd (nothing of it durable yet), or finds it tracked. */
static tracked_file *track(int fd, const char *name)
{
    struct stat st;
    if (fstat(fd, &st) != 0) _exit(3);
    tracked_file *t = tracked_find(st.st_ino);
    if (t) return t;
    for (int i = 0; i < MAX_TRACKED && !t; i++)
        if (!tracked[i].in_use) t = &tracked[i];
    if (!t) _exit(3);
    memset(t, 0, sizeof *t);
    t->in_use = 1;
    t->ino = st.st_ino;
    t->fd = dup(fd);
    snprintf(t->name, sizeof t->name, "%s", name);
    return t;
}

static void untrack(tracked_file *t)
{
    close(t->fd);
    free(t->durable);
    memset(t, 0, sizeof *t);
}

/* Everything the file holds now is durable. */
static void make_durable(tracked_file *t)
{
    unsigned char *now;
    uint64_t size;
    if (!read_whole(t->fd, &now, &size)) _exit(3);
    free(t->durable);
    t->durable = now;
    t->durable_size = size;
}

static void make_range_durable(tracked_file *t, uint64_t offset, uint64_t len)
{
    struct stat st;
    if (fstat(t->fd, &st) != 0) _exit(3);
    uint64_t size = (uint64_t)st.st_size;
    if (size > t->durable_size) {
        t->durable = realloc(t->durable, size + 1);
        if (!t->durable) _exit(3);
        memset(t->durable + t->durable_size, 0, size - t->durable_size);
        t->durable_size = size;
    }
    uint64_t end = offset + len < size ? offset + len : size;
    if (offset < end &&
        pread(t->fd, t->durable + offset, end - offset, (off_t)offset) != (ssize_t)(end - offset))
        _exit(3);
}

/* What the disk may hold of a file after a power cut now: the durable image, and of each page
** written since, by chance the new page, a torn half, garbage, or still the old page. */
static void write_crash_image(const tracked_file *t, const char *dir)
{
    unsigned char *now;
    uint64_t size;
    if (!read_whole(t->fd, &now, &size)) _exit(3);
    unsigned char *image = calloc(1, size + 1);
    if (!image) _exit(3);
    if (t->durable) memcpy(image, t->durable, t->durable_size < size ? t->durable_size : size);
    for (uint64_t at = 0; at < size; at += PAGE_BYTES) {
        uint64_t n = size - at < PAGE_BYTES ? size - at : PAGE_BYTES;
        int changed = at + n > t->durable_size || memcmp(now + at, t->durable + at, n) != 0;
        if (!changed) continue;
        int fate = rand_r(&loss_seed) % PAGE_FATES;
        if (fate < FATE_TORN) {
            memcpy(image + at, now + at, n);
        } else if (fate == FATE_TORN) {
            memcpy(image + at, now + at, n / 2);
        } else if (fate == FATE_GARBAGE) {
            /* Garbage where the write was (powersafe overwrite: bytes not written keep their
            ** value, as SQLite's own crash model assumes by default). */
            for (uint64_t i = 0; i < n; i++)
                if (at + i >= t->durable_size || now[at + i] != t->durable[at + i])
                    image[at + i] = (unsigned char)rand_r(&loss_seed);
        } /* else lost: the old page stays */
    }
    char out[PATH_MAX + 64];
    snprintf(out, sizeof out, "%s/%s", dir, t->name);
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, image, size) != (ssize_t)size) _exit(3);
    close(fd);
    free(image);
    free(now);
}

/* An mmkv file that exists but was never synced (sync=off) may still hold any page written. */
static void track_if_present(const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", work_dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    track(fd, name);
    close(fd);
}

/* Where the image of one choice of lost pages goes. */
static void image_dir(long seed, char *out, size_t size)
{
    snprintf(out, size, "%s/%ld", crash_dir, seed);
}

/* The choice of lost pages `seed` makes at a crash point. */
static unsigned loss_seed_of(long crash_point, long seed)
{
    return seed_for((unsigned)(seed * 7919 + crash_point));
}

/* Counts a sync about to happen, and at the chosen one cuts the power: one image for each choice
** of lost pages, since what is durable is the same for all. */
static void power_cut_if_due(void)
{
    if (++sync_count != crash_at) return;
    track_if_present(DATA_FILE_NAME);
    track_if_present(INDEX_FILE_NAME);
    for (long seed = first_seed; seed <= last_seed; seed++) {
        char dir[PATH_MAX];
        image_dir(seed, dir, sizeof dir);
        loss_seed = loss_seed_of(crash_at, seed);
        for (int i = 0; i < MAX_TRACKED; i++)
            if (tracked[i].in_use) write_crash_image(&tracked[i], dir);
    }
    _exit(0); /* the power is gone: nothing after this point happens */
}

/* mmkv's sync hook: its files are told apart by their magic. */
static void on_mmkv_sync(int fd, uint64_t offset, uint64_t len)
{
    power_cut_if_due();
    char magic[MMKV_MAGIC_SIZE] = "";
    if (pread(fd, magic, sizeof magic, 0) != (ssize_t)sizeof magic) return;
    const char *name = memcmp(magic, MMKV_DATA_MAGIC, MMKV_MAGIC_SIZE) == 0    ? DATA_FILE_NAME
                       : memcmp(magic, MMKV_INDEX_MAGIC, MMKV_MAGIC_SIZE) == 0 ? INDEX_FILE_NAME
                                                                               : NULL;
    if (!name) return;
    tracked_file *t = track(fd, name);
    if (len == 0)
        make_durable(t);
    else
        make_range_durable(t, offset, len);
}

/* ---- a VFS over the default one that sees SQLite's syncs ---- */

static sqlite3_vfs *real_vfs;

typedef struct shim_file {
    sqlite3_file base;
    ino_t ino;
    sqlite3_file *real; /* the default VFS's file, just past this struct */
} shim_file;

#define REAL(f) (((shim_file *)(f))->real)

static int shimClose(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}

static int shimRead(sqlite3_file *f, void *buf, int n, sqlite3_int64 offset)
{
    return REAL(f)->pMethods->xRead(REAL(f), buf, n, offset);
}

static int shimWrite(sqlite3_file *f, const void *buf, int n, sqlite3_int64 offset)
{
    return REAL(f)->pMethods->xWrite(REAL(f), buf, n, offset);
}

static int shimTruncate(sqlite3_file *f, sqlite3_int64 size)
{
    int rc = REAL(f)->pMethods->xTruncate(REAL(f), size);
    tracked_file *t = tracked_find(((shim_file *)f)->ino);
    if (rc == SQLITE_OK && t && t->durable_size > (uint64_t)size) t->durable_size = (uint64_t)size;
    return rc;
}

static int shimSync(sqlite3_file *f, int flags)
{
    power_cut_if_due();
    int rc = REAL(f)->pMethods->xSync(REAL(f), flags);
    tracked_file *t = tracked_find(((shim_file *)f)->ino);
    if (rc == SQLITE_OK && t) make_durable(t);
    return rc;
}

static int shimFileSize(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}

static int shimLock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xLock(REAL(f), level);
}

static int shimUnlock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), level);
}

static int shimCheckReservedLock(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}

static int shimFileControl(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}

static int shimSectorSize(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}

static int shimDeviceCharacteristics(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

static int shimShmMap(sqlite3_file *f, int region, int size, int extend, void volatile **out)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), region, size, extend, out);
}

static int shimShmLock(sqlite3_file *f, int offset, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}

static void shimShmBarrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}

static int shimShmUnmap(sqlite3_file *f, int delete_flag)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), delete_flag);
}

/* Version 2: shared memory for WAL, no memory-mapped reads. */
static const sqlite3_io_methods shim_io = {
    .iVersion = 2,
    .xClose = shimClose,
    .xRead = shimRead,
    .xWrite = shimWrite,
    .xTruncate = shimTruncate,
    .xSync = shimSync,
    .xFileSize = shimFileSize,
    .xLock = shimLock,
    .xUnlock = shimUnlock,
    .xCheckReservedLock = shimCheckReservedLock,
    .xFileControl = shimFileControl,
    .xSectorSize = shimSectorSize,
    .xDeviceCharacteristics = shimDeviceCharacteristics,
    .xShmMap = shimShmMap,
    .xShmLock = shimShmLock,
    .xShmBarrier = shimShmBarrier,
    .xShmUnmap = shimShmUnmap,
};

/* The database, its journal and its WAL are tracked; any other file is the default VFS's own. */
static int shimOpen(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    (void)vfs;
    const int tracked_kinds = SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_WAL;
    if (!name || !(flags & tracked_kinds))
        return real_vfs->xOpen(real_vfs, name, f, flags, out_flags);
    shim_file *s = (shim_file *)f;
    s->base.pMethods = NULL;
    s->real = (sqlite3_file *)(s + 1);
    int rc = real_vfs->xOpen(real_vfs, name, s->real, flags, out_flags);
    if (rc != SQLITE_OK) return rc;
    int fd = open(name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) _exit(3);
    const char *base_name = strrchr(name, '/');
    s->ino = track(fd, base_name ? base_name + 1 : name)->ino;
    close(fd);
    s->base.pMethods = &shim_io;
    return SQLITE_OK;
}

static int shimDelete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    (void)vfs;
    struct stat st;
    tracked_file *t = stat(name, &st) == 0 ? tracked_find(st.st_ino) : NULL;
    if (t) untrack(t);
    return real_vfs->xDelete(real_vfs, name, sync_dir);
}

static int shimAccess(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    (void)vfs;
    return real_vfs->xAccess(real_vfs, name, flags, out);
}

static int shimFullPathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    (void)vfs;
    return real_vfs->xFullPathname(real_vfs, name, n, out);
}

static void *shimDlOpen(sqlite3_vfs *vfs, const char *name)
{
    (void)vfs;
    return real_vfs->xDlOpen(real_vfs, name);
}

static void shimDlError(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    real_vfs->xDlError(real_vfs, n, out);
}

static void (*shimDlSym(sqlite3_vfs *vfs, void *handle, const char *symbol))(void)
{
    (void)vfs;
    return real_vfs->xDlSym(real_vfs, handle, symbol);
}

static void shimDlClose(sqlite3_vfs *vfs, void *handle)
{
    (void)vfs;
    real_vfs->xDlClose(real_vfs, handle);
}

static int shimRandomness(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    return real_vfs->xRandomness(real_vfs, n, out);
}

static int shimSleep(sqlite3_vfs *vfs, int us)
{
    (void)vfs;
    return real_vfs->xSleep(real_vfs, us);
}

static int shimCurrentTime(sqlite3_vfs *vfs, double *out)
{
    (void)vfs;
    return real_vfs->xCurrentTime(real_vfs, out);
}

static int shimGetLastError(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    return real_vfs->xGetLastError(real_vfs, n, out);
}

static int shimCurrentTimeInt64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    (void)vfs;
    return real_vfs->xCurrentTimeInt64(real_vfs, out);
}

static sqlite3_vfs shim_vfs = {
    .iVersion = 2,
    .zName = "powerloss",
    .xOpen = shimOpen,
    .xDelete = shimDelete,
    .xAccess = shimAccess,
    .xFullPathname = shimFullPathname,
    .xDlOpen = shimDlOpen,
    .xDlError = shimDlError,
    .xDlSym = shimDlSym,
    .xDlClose = shimDlClose,
    .xRandomness = shimRandomness,
    .xSleep = shimSleep,
    .xCurrentTime = shimCurrentTime,
    .xGetLastError = shimGetLastError,
    .xCurrentTimeInt64 = shimCurrentTimeInt64,
};

/* ---- the workload and its model ---- */

/* The value transaction t first gives key i: distinct for every key. */
static void original_value(int t, int i, char *out, size_t size)
{
    int n = snprintf(out, size, "value %d.%d ", t, i);
    for (; n < VALUE_BYTES && (size_t)n + 1 < size; n++)
        out[n] = (char)('a' + (t + i + n) % 26);
    out[n] = 0;
}

static int key_of(int t, int i)
{
    return t * KEY_SPACE + i;
}

/* What key key_of(t, i) holds in state s: 0 if absent, else 1 with its value in out. */
static int model_value(int state, int t, int i, char *out, size_t size)
{
    if (t < 1 || t > state || (t < state && i == DELETED_KEY)) return 0;
    if (t < state && i == UPDATED_KEY)
        snprintf(out, size, UPDATED_VALUE, t + 1);
    else
        original_value(t, i, out, size);
    return 1;
}

/* The rows of state s: each transaction's keys, less one deleted by each later one, and the
** counter. */
static int model_rows(int state)
{
    return state <= 0 ? 0 : state * KEYS_PER_TXN - (state - 1) + 1;
}

static void die_on(sqlite3 *db, int went_wrong, const char *what)
{
    if (!went_wrong) return;
    fprintf(stderr, "child: %s: %s\n", what, sqlite3_errmsg(db));
    _exit(2);
}

static void exec_or_die(sqlite3 *db, const char *sql)
{
    die_on(db, sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK, sql);
}

static sqlite3_stmt *prepare_or_die(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt = NULL;
    die_on(db, sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK, sql);
    return stmt;
}

static void step_or_die(sqlite3 *db, sqlite3_stmt *stmt)
{
    die_on(db, sqlite3_step(stmt) != SQLITE_DONE, sqlite3_sql(stmt));
    sqlite3_reset(stmt);
}

static void report(int out, const void *what, size_t size)
{
    if (write(out, what, size) != (ssize_t)size) _exit(2);
}

/* In a child: SQLite's files go through the shim, and mmkv's syncs through the hook. */
static void watch_syncs(void)
{
    real_vfs = sqlite3_vfs_find(NULL);
    shim_vfs.szOsFile = (int)sizeof(shim_file) + real_vfs->szOsFile;
    shim_vfs.mxPathname = real_vfs->mxPathname;
    if (sqlite3_vfs_register(&shim_vfs, 1) != SQLITE_OK) _exit(2);
    mmkv_file_set_sync_hook(on_mmkv_sync);
}

/* The child: creates the tables (state 0) and commits TXNS transactions, reporting each
** acknowledged state on fd out. */
static void workload(const scenario *sc, int out)
{
    watch_syncs();

    char path[PATH_MAX], sql[256];
    snprintf(path, sizeof path, "%s/%s", work_dir, DB_NAME);
    sqlite3 *db = NULL;
    die_on(db, sqlite3_open(path, &db) != SQLITE_OK, "open");
    die_on(db, sqlite3_mmkv_init(db, NULL, NULL) != SQLITE_OK, "mmkv");
    snprintf(sql, sizeof sql, "PRAGMA journal_mode=%s; PRAGMA synchronous=%s", sc->journal_mode,
             sc->synchronous);
    exec_or_die(db, sql);
    snprintf(sql, sizeof sql,
             "BEGIN; " LEDGER_SCHEMA "; CREATE VIRTUAL TABLE kv USING mmkv(sync=%s); COMMIT",
             sc->mmkv_sync);
    exec_or_die(db, sql);
    int state = 0;
    report(out, &state, sizeof state);

    sqlite3_stmt *insert = prepare_or_die(db, "INSERT INTO kv(key, value) VALUES(?, ?)");
    sqlite3_stmt *update = prepare_or_die(db, "UPDATE kv SET value = ? WHERE key = ?");
    sqlite3_stmt *delete = prepare_or_die(db, "DELETE FROM kv WHERE key = ?");
    sqlite3_stmt *counter =
        prepare_or_die(db, "INSERT OR REPLACE INTO kv(key, value) VALUES('" COUNTER_KEY "', ?)");
    sqlite3_stmt *ledger = prepare_or_die(db, "INSERT INTO ledger(txn, note) VALUES(?, ?)");
    char value[VALUE_BYTES + 1];
    for (int t = 1; t <= TXNS; t++) {
        exec_or_die(db, "BEGIN");
        for (int i = 0; i < KEYS_PER_TXN; i++) {
            original_value(t, i, value, sizeof value);
            sqlite3_bind_int(insert, 1, key_of(t, i));
            sqlite3_bind_text(insert, 2, value, -1, SQLITE_TRANSIENT);
            step_or_die(db, insert);
        }
        if (t > 1) {
            snprintf(value, sizeof value, UPDATED_VALUE, t);
            sqlite3_bind_text(update, 1, value, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int(update, 2, key_of(t - 1, UPDATED_KEY));
            step_or_die(db, update);
            sqlite3_bind_int(delete, 1, key_of(t - 1, DELETED_KEY));
            step_or_die(db, delete);
        }
        sqlite3_bind_int(counter, 1, t);
        step_or_die(db, counter);
        snprintf(value, sizeof value, LEDGER_NOTE, t);
        sqlite3_bind_int(ledger, 1, t);
        sqlite3_bind_text(ledger, 2, value, -1, SQLITE_TRANSIENT);
        step_or_die(db, ledger);
        exec_or_die(db, "COMMIT");
        report(out, &t, sizeof t);
        power_cut_if_due(); /* also right after each acknowledged commit, synced or not */
        if (sc->compacting && t % 3 == 0) {
            /* The worker runs it (steps in transactions of its own, a checkpoint, the space given
            ** back); waiting for it keeps the crash points in one order. */
            exec_or_die(db, "INSERT INTO kv(kv) VALUES('compact')");
            mmkv_worker_wait_idle();
        }
    }
    sqlite3_finalize(insert);
    sqlite3_finalize(update);
    sqlite3_finalize(delete);
    sqlite3_finalize(counter);
    sqlite3_finalize(ledger);
    die_on(db, sqlite3_close(db) != SQLITE_OK, "close");
    int end = RUN_END;
    report(out, &end, sizeof end);
    report(out, &sync_count, sizeof sync_count);
    _exit(0);
}

/* The child of a second power cut: it opens an image as after a reboot, through the shim, and reads
** both tables, which runs SQLite's recovery (a hot journal, the WAL) and mmkv's (index rebuild,
** salvage, catching up with the database's record); the power fails at sync crash_at of that
** recovery. Every file of the image is durable as it stands. Exits RECOVERY_DONE if the recovery
** finished first. */
static void recovery_workload(void)
{
    static const uint8_t boot[16] = {0x6b, 0x6b, 0x6b}; /* neither the workload's nor the check's */
    watch_syncs();
    mmkv_file_set_boot_id(boot);
    static const char *names[] = {DB_NAME, DB_NAME "-wal", DB_NAME "-journal", DATA_FILE_NAME,
                                  INDEX_FILE_NAME};
    char path[PATH_MAX];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "%s/%s", work_dir, names[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        make_durable(track(fd, names[i]));
        close(fd);
    }
    snprintf(path, sizeof path, "%s/%s", work_dir, DB_NAME);
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
        sqlite3_mmkv_init(db, NULL, NULL) != SQLITE_OK)
        _exit(2);
    /* Errors are the check's to judge, on the image this leaves. */
    sqlite3_exec(db, "SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL);
    sqlite3_exec(db, "SELECT count(*) FROM ledger", NULL, NULL, NULL);
    sqlite3_exec(db, "SELECT value FROM kv WHERE key = '" COUNTER_KEY "'", NULL, NULL, NULL);
    sqlite3_exec(db, "SELECT count(*) FROM kv", NULL, NULL, NULL);
    sqlite3_close(db);
    _exit(RECOVERY_DONE);
}

/* ---- the parent: what the image holds ---- */

typedef struct recovered {
    int kv_state;     /* the counter's value, the kv table's rows having been found to match it */
    int ledger_state; /* the ledger's last transaction, 1..it all present */
    char error[MESSAGE_BYTES]; /* the first thing found wrong, or "" */
} recovered;

static int failed(recovered *r, const char *format, ...)
{
    if (r->error[0]) return 0;
    va_list ap;
    va_start(ap, format);
    vsnprintf(r->error, sizeof r->error, format, ap);
    va_end(ap);
    return 0;
}

static int sql_ok(sqlite3 *db, const char *sql, recovered *r)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK) return 1;
    return failed(r, "%s: %s", sql, sqlite3_errmsg(db));
}

/* The single integer a query returns, or 0 with r->error set. */
static int sql_int(sqlite3 *db, const char *sql, sqlite3_int64 *value, recovered *r)
{
    sqlite3_stmt *stmt = NULL;
    int ok = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK &&
             sqlite3_step(stmt) == SQLITE_ROW;
    if (ok)
        *value = sqlite3_column_int64(stmt, 0);
    else
        failed(r, "%s: %s", sql, sqlite3_errmsg(db));
    sqlite3_finalize(stmt);
    return ok;
}

static sqlite3 *open_image(const char *path, recovered *r)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
        sqlite3_mmkv_init(db, NULL, NULL) != SQLITE_OK) {
        failed(r, "open: %s", sqlite3_errmsg(db));
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

static int database_intact(sqlite3 *db, recovered *r)
{
    sqlite3_stmt *stmt = NULL;
    int ok = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &stmt, NULL) == SQLITE_OK &&
             sqlite3_step(stmt) == SQLITE_ROW;
    const char *answer = ok ? (const char *)sqlite3_column_text(stmt, 0) : NULL;
    if (!ok)
        failed(r, "PRAGMA integrity_check: %s", sqlite3_errmsg(db));
    else if (!answer || strcmp(answer, "ok") != 0)
        ok = failed(r, "PRAGMA integrity_check: %s", answer ? answer : "NULL");
    sqlite3_finalize(stmt);
    return ok;
}

/* The ledger's last transaction, checking that it holds exactly 1..that. */
static int read_ledger(sqlite3 *db, recovered *r)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, "SELECT txn, note FROM ledger ORDER BY txn", -1, &stmt, NULL) !=
        SQLITE_OK)
        return failed(r, "ledger: %s", sqlite3_errmsg(db));
    int n = 0, rc;
    char note[32];
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        snprintf(note, sizeof note, LEDGER_NOTE, n + 1);
        const char *have = (const char *)sqlite3_column_text(stmt, 1);
        if (sqlite3_column_int(stmt, 0) != n + 1 || !have || strcmp(have, note) != 0) {
            failed(r, "ledger row %d is (%d, %s)", n + 1, sqlite3_column_int(stmt, 0),
                   have ? have : "NULL");
            break;
        }
        n++;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) failed(r, "ledger: %s", sqlite3_errmsg(db));
    sqlite3_finalize(stmt);
    if (r->error[0]) return 0;
    r->ledger_state = n;
    return 1;
}

/* One row of a scan against the model of state s. */
static int row_expected(sqlite3_stmt *scan, int state, recovered *r)
{
    char want[VALUE_BYTES + 1];
    const char *have = (const char *)sqlite3_column_text(scan, 1);
    if (sqlite3_column_type(scan, 0) == SQLITE_TEXT) {
        if (strcmp((const char *)sqlite3_column_text(scan, 0), COUNTER_KEY) == 0 &&
            sqlite3_column_type(scan, 1) == SQLITE_INTEGER && sqlite3_column_int(scan, 1) == state)
            return 1;
        return failed(r, "a scan finds key '%s' = %s in state %d", sqlite3_column_text(scan, 0),
                      have ? have : "NULL", state);
    }
    int key = sqlite3_column_int(scan, 0);
    if (sqlite3_column_type(scan, 0) != SQLITE_INTEGER ||
        !model_value(state, key / KEY_SPACE, key % KEY_SPACE, want, sizeof want) || !have ||
        strcmp(have, want) != 0)
        return failed(r, "a scan finds key %d = '%s' in state %d", key, have ? have : "NULL",
                      state);
    return 1;
}

/* The counter's value as a full scan finds it (0 if absent). */
static int scan_counter(sqlite3 *db, sqlite3_int64 *counter, recovered *r)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, "SELECT key, value FROM kv", -1, &stmt, NULL) != SQLITE_OK)
        return failed(r, "scan: %s", sqlite3_errmsg(db));
    int rc;
    *counter = 0;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
        if (sqlite3_column_type(stmt, 0) == SQLITE_TEXT &&
            strcmp((const char *)sqlite3_column_text(stmt, 0), COUNTER_KEY) == 0)
            *counter = sqlite3_column_int64(stmt, 1);
    if (rc != SQLITE_DONE) failed(r, "scan: %s", sqlite3_errmsg(db));
    sqlite3_finalize(stmt);
    return rc == SQLITE_DONE;
}

/* The kv table's state: the counter's value, if every row matches it, by a scan and by key. */
static int read_kv(sqlite3 *db, recovered *r)
{
    sqlite3_int64 counter = 0, scanned_counter = 0;
    if (!sql_int(db, "SELECT coalesce(max(value), 0) FROM kv WHERE key = '" COUNTER_KEY "'",
                 &counter, r) ||
        !scan_counter(db, &scanned_counter, r))
        return 0;
    if (counter != scanned_counter)
        return failed(r, "the counter holds %lld by key, but a scan finds %lld", (long long)counter,
                      (long long)scanned_counter);
    int state = (int)counter;
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, "SELECT key, value FROM kv", -1, &stmt, NULL) != SQLITE_OK)
        return failed(r, "scan: %s", sqlite3_errmsg(db));
    int rows = 0, rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW && row_expected(stmt, state, r))
        rows++;
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) failed(r, "scan: %s", sqlite3_errmsg(db));
    sqlite3_finalize(stmt);
    if (!r->error[0] && rows != model_rows(state))
        failed(r, "a scan finds %d rows in state %d, not %d", rows, state, model_rows(state));
    if (r->error[0]) return 0;

    if (sqlite3_prepare_v2(db, "SELECT value FROM kv WHERE key = ?", -1, &stmt, NULL) != SQLITE_OK)
        return failed(r, "lookup: %s", sqlite3_errmsg(db));
    char want[VALUE_BYTES + 1];
    for (int t = 1; t <= TXNS && !r->error[0]; t++)
        for (int i = 0; i < KEYS_PER_TXN && !r->error[0]; i++) {
            sqlite3_bind_int(stmt, 1, key_of(t, i));
            rc = sqlite3_step(stmt);
            int present = model_value(state, t, i, want, sizeof want);
            const char *have = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(stmt, 0) : NULL;
            if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                failed(r, "lookup of %d: %s", key_of(t, i), sqlite3_errmsg(db));
            else if (present != (rc == SQLITE_ROW) || (present && (!have || strcmp(have, want))))
                failed(r, "key %d holds '%s' in state %d", key_of(t, i), have ? have : "(absent)",
                       state);
            sqlite3_reset(stmt);
        }
    sqlite3_finalize(stmt);
    if (r->error[0]) return 0;
    r->kv_state = state;
    return 1;
}

/* A transaction on both sides after the crash (where the tables never came to be, on the native
** side only), and a reopen that finds it. */
static void write_and_reopen(sqlite3 *db, const char *path, recovered *r)
{
    int have_kv = r->ledger_state != NO_SCHEMA;
    int ledger_before = have_kv ? r->ledger_state : 0;
    char sql[256];
    if (have_kv)
        snprintf(sql, sizeof sql,
                 "BEGIN; INSERT INTO kv VALUES('after', 'the crash');"
                 "INSERT INTO ledger VALUES(%d, 'after the crash'); COMMIT",
                 ledger_before + 1);
    else
        snprintf(sql, sizeof sql, "%s; INSERT INTO ledger VALUES(1, 'after the crash')",
                 LEDGER_SCHEMA);
    int ok = sql_ok(db, sql, r);
    sqlite3_close(db);
    if (!ok || !(db = open_image(path, r))) return;
    sqlite3_int64 rows = 0, ledger_rows = 0;
    if (sql_int(db, "SELECT count(*) FROM ledger", &ledger_rows, r) &&
        ledger_rows != ledger_before + 1)
        failed(r, "after a further commit and a reopen: %lld rows in the ledger",
               (long long)ledger_rows);
    if (have_kv && sql_int(db, "SELECT count(*) FROM kv", &rows, r) &&
        sql_ok(db, "INSERT INTO kv(kv) VALUES('integrity-check')", r) &&
        rows != model_rows(r->kv_state) + 1)
        failed(r, "after a further commit and a reopen: %lld rows in kv", (long long)rows);
    sqlite3_close(db);
}

/* Opens the image as after a reboot and reads the state it holds into r. */
static void check_image(const char *path, int kv_may_lag, recovered *r)
{
    static const uint8_t other_boot[16] = {0x5a, 0x5a, 0x5a};
    memset(r, 0, sizeof *r);
    r->kv_state = r->ledger_state = NOT_READ;
    mmkv_file_set_boot_id(other_boot); /* a power cut means a new boot */
    sqlite3 *db = open_image(path, r);
    sqlite3_int64 tables = 0;
    if (db && database_intact(db, r) &&
        sql_int(db, "SELECT count(*) FROM sqlite_schema WHERE name IN ('ledger', 'kv')", &tables,
                r)) {
        if (tables == 0) {
            /* The tables' creation never committed. (It may have left mmkv's data file behind:
            ** a new CREATE VIRTUAL TABLE takes it over if no commit reached it, as after a
            ** ROLLBACK, and otherwise refuses it as another database's: under synchronous=NORMAL
            ** the database can lose commits whose records mmkv had already made durable.) */
            r->kv_state = r->ledger_state = NO_SCHEMA;
            write_and_reopen(db, path, r);
            db = NULL;
        } else if (tables != 2) {
            failed(r, "only one of the two tables exists");
        } else if (read_ledger(db, r) && read_kv(db, r)) {
            if (kv_may_lag ? r->kv_state > r->ledger_state : r->kv_state != r->ledger_state)
                failed(r, "the kv table holds state %d, the ledger %d", r->kv_state,
                       r->ledger_state);
            else if (sql_ok(db, "INSERT INTO kv(kv) VALUES('integrity-check')", r)) {
                write_and_reopen(db, path, r);
                db = NULL;
            }
        }
    }
    sqlite3_close(db);
    mmkv_file_set_boot_id(NULL);
}

/* ---- running it ---- */

/* Empties (or makes) a directory of plain files. */
static int empty_dir(const char *path)
{
    DIR *dir = opendir(path);
    if (!dir) return mkdir(path, 0755) == 0;
    struct dirent *entry;
    char file[PATH_MAX + 256];
    while ((entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
        snprintf(file, sizeof file, "%s/%s", path, entry->d_name);
        unlink(file);
    }
    closedir(dir);
    return 1;
}

/* Runs the workload in a fresh directory, cutting the power at sync number crash_point (LONG_MAX:
** never) and leaving an image for each seed in image_dir(seed), made empty first. Returns the last
** acknowledged state, or CHILD_FAILED; *total gets the number of syncs of a whole run. */
static int run_child(const scenario *sc, long crash_point, long *total)
{
    char dir[PATH_MAX];
    for (long seed = first_seed; seed <= last_seed && crash_point != LONG_MAX; seed++) {
        image_dir(seed, dir, sizeof dir);
        if (!empty_dir(dir)) return CHILD_FAILED;
    }
    int pipefd[2];
    if (!empty_dir(work_dir) || pipe(pipefd) != 0) return CHILD_FAILED;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return CHILD_FAILED;
    if (pid == 0) {
        close(pipefd[0]);
        crash_at = crash_point;
        workload(sc, pipefd[1]);
    }
    close(pipefd[1]);
    int acknowledged = NO_SCHEMA, state = NO_SCHEMA;
    while (read(pipefd[0], &state, sizeof state) == sizeof state && state >= 0)
        acknowledged = state;
    if (total && (state != RUN_END || read(pipefd[0], total, sizeof *total) != sizeof *total))
        *total = 0;
    close(pipefd[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? acknowledged : CHILD_FAILED;
}

static long env_long(const char *name, long otherwise)
{
    const char *value = getenv(name);
    return value && *value ? strtol(value, NULL, 10) : otherwise;
}

/* Copies the files of an image, as the power cut left them, to keep for a closer look. */
static void keep_image(const char *from, const char *to)
{
    if (!empty_dir(to)) return;
    DIR *dir = opendir(from);
    struct dirent *entry;
    while (dir && (entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.') continue;
        char source[PATH_MAX + 256], target[PATH_MAX + 256];
        snprintf(source, sizeof source, "%s/%s", from, entry->d_name);
        snprintf(target, sizeof target, "%s/%s", to, entry->d_name);
        int in = open(source, O_RDONLY), out = open(target, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        unsigned char *content = NULL;
        uint64_t size = 0;
        if (in >= 0 && out >= 0 && read_whole(in, &content, &size) &&
            write(out, content, size) != (ssize_t)size)
            fprintf(stderr, "cannot keep %s\n", target);
        free(content);
        if (in >= 0) close(in);
        if (out >= 0) close(out);
    }
    if (dir) closedir(dir);
}

/* What the images of sync=off came to, for the report. */
typedef struct outcome_counts {
    int even, kv_lags;
} outcome_counts;

/* Judges the image of one crash point and seed: 0 if it fails, with why in failure. */
static int judge(const scenario *sc, long point, long seed, int acknowledged, outcome_counts *off,
                 recovered *got, char *failure, size_t failure_size)
{
    char dir[PATH_MAX], path[PATH_MAX + 16];
    image_dir(seed, dir, sizeof dir);
    const char *keep = getenv("MMKV_POWERLOSS_KEEP");
    if (keep) keep_image(dir, keep);
    snprintf(path, sizeof path, "%s/%s", dir, DB_NAME);
    recovered r;
    check_image(path, sc->kv_may_lag, &r);
    /* Both sides agree, or kv lags where it may (else r.error says so); the state must be one the
    ** cut allows. */
    int s = r.kv_state;
    if (!r.error[0] && (s > acknowledged + 1 || (!sc->may_lose_acknowledged && s < acknowledged)))
        failed(&r, "state %d after acknowledged %d", s, acknowledged);
    if (!r.error[0] && sc->kv_may_lag && r.ledger_state != NO_SCHEMA &&
        (r.ledger_state < acknowledged || r.ledger_state > acknowledged + 1))
        failed(&r, "the ledger holds state %d after acknowledged %d", r.ledger_state, acknowledged);
    *got = r;
    if (!r.error[0]) {
        if (r.kv_state < r.ledger_state)
            off->kv_lags++;
        else
            off->even++;
        return 1;
    }
    snprintf(failure, failure_size, "%s, crash point %ld, seed %ld (acknowledged %d): %s", sc->name,
             point, seed, acknowledged, r.error);
    return 0;
}

/* A second power cut, during the recovery of the image in `pristine`: at each sync of it in turn.
** Every image it leaves must recover to what the first recovery gave. Returns how many syncs the
** recovery made, or -1 with failure set. */
static int recovery_crashes(const scenario *sc, const char *pristine, const recovered *expected,
                            long point, char *failure, size_t failure_size)
{
    char again[sizeof crash_dir], again_image[PATH_MAX];
    snprintf(again, sizeof again, "%.*s-again", (int)sizeof again - 7, crash_dir);
    snprintf(again_image, sizeof again_image, "%s/1", again);
    for (long k = 1;; k++) {
        if (!empty_dir(again) || !empty_dir(again_image)) return -1;
        keep_image(pristine, work_dir);
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) return -1;
        if (pid == 0) {
            memcpy(crash_dir, again, sizeof crash_dir);
            first_seed = last_seed = 1;
            sync_count = 0;
            crash_at = k;
            recovery_workload();
        }
        int status;
        waitpid(pid, &status, 0);
        if (WIFEXITED(status) && WEXITSTATUS(status) == RECOVERY_DONE) return (int)(k - 1);
        recovered r;
        memset(&r, 0, sizeof r);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            failed(&r, "the recovering child failed (status %d)", status);
        } else {
            char path[PATH_MAX + 32];
            snprintf(path, sizeof path, "%s/%s", again_image, DB_NAME);
            check_image(path, sc->kv_may_lag, &r);
            if (!r.error[0] &&
                (r.kv_state != expected->kv_state || r.ledger_state != expected->ledger_state))
                failed(&r, "kv state %d and ledger %d, where the first recovery gave %d and %d",
                       r.kv_state, r.ledger_state, expected->kv_state, expected->ledger_state);
        }
        if (r.error[0]) {
            snprintf(failure, failure_size,
                     "%s, crash point %ld, then a power cut at sync %ld of "
                     "its recovery: %s",
                     sc->name, point, k, r.error);
            return -1;
        }
    }
}

#define TITLE_BYTES 200

static void scenario_title(const scenario *sc, char *title)
{
    snprintf(title, TITLE_BYTES,
             "power loss at every sync, journal_mode=%s, synchronous=%s, sync=%s: %s",
             sc->journal_mode, sc->synchronous, sc->mmkv_sync,
             sc->kv_may_lag ? "kv keeps one whole commit, never past the native table's"
                            : "kv and native tables keep one whole commit");
}

/* Whether the scenario runs: MMKV_POWERLOSS_CASE, or MMKV_TEST naming it (wal-full) or a part of
** its title, selects it. */
static int scenario_selected(const scenario *sc)
{
    const char *only_case = getenv("MMKV_POWERLOSS_CASE");
    char title[TITLE_BYTES];
    scenario_title(sc, title);
    return (!only_case || strcmp(only_case, sc->name) == 0) &&
           (test_selected(title) || test_selected(sc->name));
}

static void test_scenario(const scenario *sc)
{
    char title[TITLE_BYTES];
    scenario_title(sc, title);
    begin_test(title); /* main() chose the scenario */
    print_seed();      /* the choices of lost pages derive from it */
    snprintf(work_dir, sizeof work_dir, "%s/work-%s", test_dir, sc->name);
    snprintf(crash_dir, sizeof crash_dir, "%s/crash-%s", test_dir, sc->name);
    long seeds = env_long("MMKV_POWERLOSS_SEEDS", DEFAULT_LOSS_SEEDS);
    long only_point = env_long("MMKV_POWERLOSS_POINT", 0);
    long only_seed = env_long("MMKV_POWERLOSS_SEED", 0);
    int keep_going = getenv("MMKV_POWERLOSS_KEEP_GOING") != NULL;
    first_seed = only_seed ? only_seed : 1;
    last_seed = only_seed ? only_seed : seeds;

    char failure[MESSAGE_BYTES + 128] = "";
    long total = 0;
    int whole_run = empty_dir(crash_dir) ? run_child(sc, LONG_MAX, &total) : CHILD_FAILED;
    if (whole_run != TXNS || total <= TXNS)
        snprintf(failure, sizeof failure, "%s: a whole run reached state %d in %ld syncs", sc->name,
                 whole_run, total);
    outcome_counts off = {0, 0};
    int images = 0, failures_seen = 0, second_cuts = 0;
    char pristine[PATH_MAX];
    snprintf(pristine, sizeof pristine, "%s-pristine", crash_dir);
    for (long point = only_point ? only_point : 1; point <= total; point++) {
        if ((failure[0] && !keep_going) || (only_point && point != only_point)) break;
        int acknowledged = run_child(sc, point, NULL);
        if (acknowledged == CHILD_FAILED) {
            snprintf(failure, sizeof failure, "%s: the child failed before crash point %ld",
                     sc->name, point);
            break;
        }
        for (long seed = first_seed; seed <= last_seed; seed++) {
            char why[sizeof failure], dir[PATH_MAX];
            images++;
            /* The first choice of lost pages also gets a second cut, during its recovery. */
            int twice = seed == first_seed;
            image_dir(seed, dir, sizeof dir);
            if (twice) keep_image(dir, pristine);
            recovered r;
            int ok = judge(sc, point, seed, acknowledged, &off, &r, why, sizeof why);
            if (ok && twice) {
                int cuts = recovery_crashes(sc, pristine, &r, point, why, sizeof why);
                ok = cuts >= 0;
                if (ok) second_cuts += cuts;
            }
            if (ok) continue;
            if (failures_seen++ == 0) snprintf(failure, sizeof failure, "%s", why);
            if (keep_going)
                printf("# %s\n", why);
            else
                break;
        }
    }
    CHECK(!failure[0], "%s%s", failure,
          failures_seen > 1 ? " (and more: see the lines above)" : "");
    printf("# %s: %ld crash points, %d images checked, %d more after a second cut during recovery",
           sc->name, total, images, second_cuts);
    if (sc->kv_may_lag) printf(" (kv behind the native table in %d)", off.kv_lags);
    printf("\n");
    end_test();
}

/* Under MMKV_EXPECT_SQLITE=V (make test-sqlite): this program runs on SQLite V, compiled against
** V's headers, and not on a library found instead. */
static void test_sqlite_version(void)
{
    const char *expected = getenv("MMKV_EXPECT_SQLITE");
    printf("# SQLite %s (compiled against %s)\n", sqlite3_libversion(), SQLITE_VERSION);
    if (!expected) return;
    current = "runs on the SQLite expected (MMKV_EXPECT_SQLITE)";
    current_failed = 0;
    CHECK(strcmp(sqlite3_libversion(), expected) == 0 && strcmp(SQLITE_VERSION, expected) == 0,
          "got SQLite %s compiled against %s, expected %s", sqlite3_libversion(), SQLITE_VERSION,
          expected);
    end_test();
}

int main(void)
{
    if (!start_tests_in_memory()) return 1;
    int checked_version = 0;
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++) {
        if (!scenario_selected(&scenarios[i])) continue;
        if (!checked_version++) test_sqlite_version();
        test_scenario(&scenarios[i]);
    }
    return finish_tests();
}
