/*
** mmkv's background thread (worker.h): compactions asked for, and giving space back.
*/
#include "worker.h"
#include "commit_record.h"
#include "mmkv.h"
#include "sqlite3_mmkv.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

SQLITE_EXTENSION_INIT3

/* Between steps the database's lock is free for at least this long, and at least three times as
** long as the step held it: other writers, sleeping in their busy handlers (1, 2, 5 ms...), find
** it free when they look again, and the worker never takes more than a quarter of the time. */
#define STEP_PAUSE_US 4000
#define STEP_PAUSE_FACTOR 3
#define BUSY_PAUSE_US 10000    /* after a step found the database locked */
#define BUSY_TIMEOUT_MS 10000  /* the worker's connection waits this long for a lock */
#define STEP_FAILURES_MAX 100  /* steps that found the database locked, before giving up */
#define SAFE_POLL_MIN_US 500   /* between checkpoints that did not show a state safe: from this, */
#define SAFE_POLL_MAX_US 50000 /* doubling up to this */
#define SAFE_WAIT_MS 2000      /* how long a compaction waits to know its tombstones' safe point */
#define RECLAIM_WAIT_MS 60000  /* how long space waits for old readers before the job gives up */
#define SESSION_IDLE_MS 50     /* a connection kept for the next job closes after this long idle */
/* A pass asked for tries to show a state safe every this many steps (1 MiB of log walked at the
** worker's step budget), and gives its space back once shown, so that its copies and their
** originals are not both on disk for long: at 1M keys, a pass that gave space back only at its
** end held up to 2.7 times the space of a native table just before it. */
#define RECLAIM_EVERY_STEPS 4

typedef struct job {
    struct job *next;
    int kind;
    char *db_path, *vfs, *table, *data_path;
    uint64_t owner_id;
} job;

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t queue_idle = PTHREAD_COND_INITIALIZER;
static job *queue;
static int started, working;

static void pause_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000L + ts.tv_nsec / 1000;
}

static void job_free(job *j)
{
    free(j->db_path);
    free(j->vfs);
    free(j->table);
    free(j->data_path);
    free(j);
}

/* The thread runs code of this library for as long as the process lives: the library must stay
** loaded after the last connection that loaded it closes (SQLite unloads extensions then). */
static void pin_library(void)
{
    Dl_info info;
    if (dladdr((void *)pin_library, &info) && info.dli_fname)
        dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

/* Showing a committed state safe: durable, and no reader anywhere reads an older one (worker.h).
** The state is read from the commit record, and then a passive checkpoint tells how many frames
** the WAL holds: the state's commit is among them. Once a checkpoint has copied at least that many
** (this one or a later one), every reader's snapshot holds them: SQLite copies no frame past the
** oldest snapshot of any reader, and a new reader starts at the WAL's end. And they are durable:
** a checkpoint syncs the WAL before it copies. A WAL that restarted meanwhile (its count starts
** again) shows it too: it restarts only once every reader reads the copied database. Not waiting
** for the whole WAL to be copied matters while others write: a writer adds frames all the time,
** and a checkpoint then never copies them all. In rollback-journal mode every reader reads the
** newest commit, so the state read is safe at once (the checkpoint reports -1 frames). */
typedef struct safety_proof {
    mmkv_commit state;
    int frames; /* the WAL's frames when the state was read */
} safety_proof;

/* One checkpoint: 1 if it shows p->state safe, 0 if not yet. */
static int proof_check(sqlite3 *db, safety_proof *p)
{
    int log = -1, copied = -1;
    int rc = sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_PASSIVE, &log, &copied);
    if (rc != SQLITE_OK) return 0;
    if (p->frames == INT_MIN) p->frames = log; /* the first checkpoint after reading the state */
    /* Fewer frames than noted: the WAL restarted, which it does only once every reader has moved
    ** to the copied database, after a checkpoint that copied it all. */
    return copied >= p->frames || log < p->frames;
}

/* Reads the newest committed state into p and checks it once: as proof_check, or -1 if the state
** could not be read (the table went). */
static int proof_begin(sqlite3 *db, const char *table, safety_proof *p)
{
    mmkv_commit_record rec;
    if (mmkv_record_open(&rec, db, "main", table, NULL) != SQLITE_OK) return -1;
    int rc = mmkv_record_read(&rec, &p->state, NULL);
    mmkv_record_close(&rec);
    if (rc != SQLITE_OK) return -1;
    p->frames = INT_MIN;
    return proof_check(db, p);
}

/* The newest committed state of the table, and whether it is shown safe, waiting up to wait_ms
** for readers to move on. 1 if shown safe, 0 if not, -1 if it could not be read. */
static int safe_state(sqlite3 *db, const char *table, mmkv_commit *state, long wait_ms)
{
    safety_proof p;
    int shown = proof_begin(db, table, &p);
    long poll_us = SAFE_POLL_MIN_US;
    for (long waited_us = 0; shown == 0 && waited_us < wait_ms * 1000; waited_us += poll_us,
              poll_us = poll_us * 2 < SAFE_POLL_MAX_US ? poll_us * 2 : SAFE_POLL_MAX_US) {
        pause_us(poll_us); /* a reader holds an older snapshot, or another checkpoint runs */
        shown = proof_check(db, &p);
    }
    *state = p.state;
    return shown;
}

static int exec_step(sqlite3 *db, const char *table)
{
    char *sql =
        sqlite3_mprintf("INSERT INTO main.\"%w\"(\"%w\") VALUES('compact-step')", table, table);
    if (!sql) return SQLITE_NOMEM;
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_free(sql);
    return rc;
}

/* Gives space back for a state shown safe. */
static void give_back(mmkv_conn *conn, const mmkv_commit *state)
{
    mmkv_compact_set_safe(conn, state->txid, 0);
    mmkv_reclaim(conn, state, 1, NULL);
}

static void run_compaction(sqlite3 *db, mmkv_conn *conn, const job *j)
{
    mmkv_commit state;
    /* Tombstones go only as far as readers allow; the pass runs either way. */
    int shown = safe_state(db, j->table, &state, SAFE_WAIT_MS);
    if (shown < 0) return;
    mmkv_compact_set_safe(conn, shown ? state.txid : 0, 1);
    /* The copies a pass makes would otherwise sit beside their originals until it ends: every
    ** RECLAIM_EVERY_STEPS steps a state is read, and its space given back once shown safe (a
    ** checkpoint and a reclaim hold no lock a writer waits for). */
    safety_proof proof;
    int proving = 0;
    int failures = 0, steps = 0;
    while (mmkv_compact_pending(conn, NULL)) {
        if (mmkv_compact_waiting(conn)) {
            /* Asked for again meanwhile (a commit that left much garbage, another 'compact'):
            ** the pass goes on to the new end, with a safe point of its own. */
            shown = safe_state(db, j->table, &state, SAFE_WAIT_MS);
            if (shown < 0) break;
            mmkv_compact_set_safe(conn, shown ? state.txid : 0, 1);
        }
        long began = now_us();
        int rc = exec_step(db, j->table);
        if (rc == SQLITE_OK) {
            failures = 0;
            long held = now_us() - began;
            if (++steps % RECLAIM_EVERY_STEPS == 0) {
                int proved = proving ? proof_check(db, &proof) : proof_begin(db, j->table, &proof);
                proving = proved == 0;
                if (proved > 0) give_back(conn, &proof.state);
            }
            pause_us(held * STEP_PAUSE_FACTOR > STEP_PAUSE_US ? held * STEP_PAUSE_FACTOR
                                                              : STEP_PAUSE_US);
        } else if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) {
            if (++failures > STEP_FAILURES_MAX) break;
            pause_us(BUSY_PAUSE_US);
        } else {
            sqlite3_log(rc, "mmkv: compaction of %s stopped: %s", j->data_path, sqlite3_errmsg(db));
            break;
        }
    }
}

/* Whether mmkv is there already (an application's auto extension, when linked statically). */
static int registered(sqlite3 *db)
{
    sqlite3_stmt *stmt = NULL;
    int there = sqlite3_prepare_v2(db, "SELECT mmkv_version()", -1, &stmt, NULL) == SQLITE_OK;
    sqlite3_finalize(stmt);
    return there;
}

static int register_mmkv(sqlite3 *db)
{
#ifdef SQLITE_CORE
    return sqlite3_mmkv_init(db, NULL, NULL);
#else
    return sqlite3_mmkv_init(db, NULL, sqlite3_api);
#endif
}

/* The database and table the last job worked on, kept while jobs for them keep coming (a reclaim
** after every commit that compacted), and closed once the queue has been empty a moment. */
typedef struct session {
    char *data_path;
    sqlite3 *db;
    mmkv_conn *conn;
} session;

static session current;

static void session_close(void)
{
    if (current.conn) mmkv_close(current.conn);
    sqlite3_close(current.db);
    free(current.data_path);
    memset(&current, 0, sizeof current);
}

/* In WAL mode the worker's commits skip SQLite's sync of the WAL (synchronous=NORMAL): a step
** holds the database's write lock for its work alone, never for a sync that waits behind every
** page the user's writes left dirty (measured: 20 ms to 1 s with sync=off tables). Nothing is
** weakened. A step that a power cut takes back is a compaction that did not happen (its copies lie
** past the committed tail); a user's later commit that syncs the WAL syncs the step's frames with
** its own; and space is given back only for a state safe_state shows durable, through a checkpoint
** that syncs the WAL before it copies and the database after. In rollback-journal mode a commit's
** syncs are what keep the database whole: there every sync stays (FULL). Asked at each job: the
** journal mode may change while the connection is kept. */
static void match_sync_to_journal(sqlite3 *db)
{
    sqlite3_stmt *stmt = NULL;
    int wal = sqlite3_prepare_v2(db, "PRAGMA main.journal_mode", -1, &stmt, NULL) == SQLITE_OK &&
              sqlite3_step(stmt) == SQLITE_ROW &&
              sqlite3_stricmp((const char *)sqlite3_column_text(stmt, 0), "wal") == 0;
    sqlite3_finalize(stmt);
    sqlite3_exec(db, wal ? "PRAGMA main.synchronous = NORMAL" : "PRAGMA main.synchronous = FULL",
                 NULL, NULL, NULL);
}

static int session_open(const job *j)
{
    if (current.conn && strcmp(current.data_path, j->data_path) == 0) return 1;
    session_close();
    if (sqlite3_open_v2(j->db_path, &current.db, SQLITE_OPEN_READWRITE, j->vfs) != SQLITE_OK) {
        session_close();
        return 0;
    }
    sqlite3_busy_timeout(current.db, BUSY_TIMEOUT_MS);
    mmkv_open_options options = {.sync = MMKV_SYNC_FULL,
                                 .owner_id = j->owner_id,
                                 .must_exist = 1,
                                 .user = "mmkv's background compaction"};
    char *err = NULL;
    int ok = (registered(current.db) || register_mmkv(current.db) == SQLITE_OK) &&
             mmkv_open(j->data_path, &options, &current.conn, &err) == MMKV_OK &&
             (current.data_path = strdup(j->data_path)) != NULL;
    free(err);
    if (!ok) session_close();
    return ok;
}

static void run_job(const job *j)
{
    if (!session_open(j)) return;
    match_sync_to_journal(current.db);
    if (j->kind == MMKV_JOB_COMPACT) run_compaction(current.db, current.conn, j);
    mmkv_commit state;
    int shown = safe_state(current.db, j->table, &state, RECLAIM_WAIT_MS);
    if (shown < 0)
        session_close(); /* the table went (DROP, RENAME): nothing to keep open for */
    else if (shown)
        give_back(current.conn, &state);
}

static void *worker_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&queue_lock);
    for (;;) {
        while (!queue) {
            working = 0;
            pthread_cond_broadcast(&queue_idle);
            if (!current.db) {
                pthread_cond_wait(&queue_wake, &queue_lock);
                continue;
            }
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += SESSION_IDLE_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&queue_wake, &queue_lock, &until) != 0 && !queue) {
                pthread_mutex_unlock(&queue_lock);
                session_close();
                pthread_mutex_lock(&queue_lock);
            }
        }
        job *j = queue;
        queue = j->next;
        working = 1;
        pthread_mutex_unlock(&queue_lock);
        run_job(j);
        job_free(j);
        pthread_mutex_lock(&queue_lock);
    }
    return NULL;
}

static char *copy_text(const char *s)
{
    return s ? strdup(s) : NULL;
}

int mmkv_worker_submit(const mmkv_job_target *target, int kind)
{
    pthread_mutex_lock(&queue_lock);
    job **at = &queue;
    for (; *at; at = &(*at)->next)
        if ((*at)->kind >= kind && strcmp((*at)->data_path, target->data_path) == 0) {
            pthread_mutex_unlock(&queue_lock);
            return SQLITE_OK; /* one queued already does this */
        }
    job *j = calloc(1, sizeof *j);
    if (j) {
        j->kind = kind;
        j->db_path = copy_text(target->db_path);
        j->vfs = copy_text(target->vfs);
        j->table = copy_text(target->table);
        j->data_path = copy_text(target->data_path);
        j->owner_id = target->owner_id;
    }
    if (!j || !j->db_path || !j->table || !j->data_path || (target->vfs && !j->vfs)) {
        pthread_mutex_unlock(&queue_lock);
        if (j) job_free(j);
        return SQLITE_NOMEM;
    }
    if (!started) {
        pin_library();
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        started = pthread_create(&thread, &attr, worker_main, NULL) == 0;
        pthread_attr_destroy(&attr);
        if (!started) {
            pthread_mutex_unlock(&queue_lock);
            job_free(j);
            return SQLITE_NOMEM;
        }
    }
    *at = j;
    working = 1;
    pthread_cond_signal(&queue_wake);
    pthread_mutex_unlock(&queue_lock);
    return SQLITE_OK;
}

void mmkv_worker_wait_idle(void)
{
    pthread_mutex_lock(&queue_lock);
    while (started && (queue || working))
        pthread_cond_wait(&queue_idle, &queue_lock);
    pthread_mutex_unlock(&queue_lock);
}
