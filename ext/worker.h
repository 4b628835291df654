/*
** worker.h: mmkv's background thread, which finishes what a commit cannot do inside its own
** transaction, for tables in database files (compaction.c decides what; see docs/operations.md):
**
**   - a compaction asked for with INSERT INTO kv(kv) VALUES('compact') runs as a series of short
**     write transactions, each one bounded step ('compact-step'), on a connection of the worker's
**     own to the same database, so that other writers interleave with it and it finishes without
**     further activity of the user's;
**   - space is given back (mmkv_reclaim) for a state the worker has shown no reader still reads
**     older than: it reads the commit record, then runs passive checkpoints; one that has copied
**     as many frames as the WAL held when the state was read proves that no reader anywhere holds
**     an older snapshot (SQLite cannot backfill a frame a reader still needs) and that the state
**     is durable. In rollback-journal mode every reader reads the newest commit, so the state read
**     is safe at once. A compaction asked for gives space back this way as it goes, not only at
**     its end.
**
** One thread per process, started on the first job; it keeps its connection only while jobs for
** the same table follow one another (closed after 50 ms idle).
*/
#ifndef MMKV_WORKER_H
#define MMKV_WORKER_H

#include <stdint.h>

#define MMKV_JOB_RECLAIM 0 /* give space back */
#define MMKV_JOB_COMPACT 1 /* run the compaction asked for, then give space back */

typedef struct mmkv_job_target {
    const char *db_path;   /* the database file, as SQLite names it */
    const char *vfs;       /* its VFS's name, or NULL for the default */
    const char *table;     /* the mmkv table's name in it */
    const char *data_path; /* the table's data file */
    uint64_t owner_id;     /* the table's owner id (its commit record's) */
} mmkv_job_target;

/* Queues a job (copying the target), unless one of that kind for that data file is queued.
** SQLITE_OK, or SQLITE_NOMEM. */
int mmkv_worker_submit(const mmkv_job_target *target, int kind);

/* Waits until no job is queued or running (tests, and the benchmark's measurements). */
void mmkv_worker_wait_idle(void);

#endif
