/*
** The one writer of a file: txn.owner within the process, an exclusive lock on a byte of the data
** file across processes (file.h, MMKV_LOCK_WRITER). For an owned file, the database's write lock,
** which SQLite takes first, already serialises writers; this lock also keeps out the rare writes
** that do not go through SQLite (a catch-up at open, a home note). See engine.h.
*/
#include "engine.h"
#include "error.h"

#include <time.h>

/* How long a writer that holds its database's write lock waits for the previous writer to finish
** releasing mmkv's: SQLite calls xCommit and xRollback only after it has released the database's
** lock, so the next writer can arrive a moment before the last one is done. */
#define HANDOVER_WAIT_MS 5000
#define HANDOVER_POLL_US 50

static void pause_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

int mmkv_writer_take(mmkv_conn *conn, int handover)
{
    mmkv_engine *e = conn->engine;
    long waited_us = 0, step_us = HANDOVER_POLL_US;
    for (;;) {
        pthread_mutex_lock(&e->mutex);
        const char *who = NULL;
        if (e->txn.owner && e->txn.owner != conn)
            who = "connection";
        else if (!e->txn.owner && mmkv_lock_try(e->log.map.fd, MMKV_LOCK_WRITER, 1) != MMKV_OK)
            who = "process";
        if (!who) return MMKV_OK;
        pthread_mutex_unlock(&e->mutex);
        if (!handover || waited_us >= (long)HANDOVER_WAIT_MS * 1000)
            return mmkv_error(&conn->errmsg, MMKV_BUSY,
                              "mmkv: '%s' is locked: another %s is writing it", e->data_path, who);
        pause_us(step_us);
        waited_us += step_us;
        if (step_us < 1000) step_us *= 2;
    }
}

void mmkv_writer_release(mmkv_engine *e)
{
    mmkv_unlock(e->log.map.fd, MMKV_LOCK_WRITER);
    pthread_mutex_unlock(&e->mutex);
}
