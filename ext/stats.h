/*
** stats.h: what a table's files hold, for inspection (the SQL face shows it as mmkv_stats).
**
** The counts come from a committed state the caller names (an owning database's commit record, the
** meta slots, or a write transaction's own outcome); the file sizes and the index's shape are read
** from the files as they are now, without a lock, so that reading them never waits for a writer.
** A read-only engine that built an index of its own in memory (open.c, READ-ONLY) reports that
** index, brought up to the state first.
*/
#ifndef MMKV_STATS_H
#define MMKV_STATS_H

#include "engine.h"

typedef struct mmkv_stats {
    /* Of the committed state. */
    uint64_t txid;
    uint64_t log_start; /* where its log begins (4096 before any compaction) */
    uint64_t log_tail;
    uint64_t live_count;    /* keys whose newest version is not a tombstone */
    uint64_t live_bytes;    /* bytes of their newest versions: (tail - start) - garbage */
    uint64_t garbage_bytes; /* bytes of superseded versions, tombstones and pads */
    uint64_t records;       /* records in the log */
    uint64_t compactions;   /* compactions finished */
    /* Compaction now: a pass asked for (up to compact_until), or an automatic one. */
    int compacting;      /* a pass asked for ('compact') is under way */
    int auto_compacting; /* an automatic pass is under way (it goes on with the commits) */
    uint64_t compact_until; /* 0 if none was asked for; the state's tail until it begins */
    /* The files: bytes allocated on disk (st_blocks) and their logical size (st_size). */
    uint64_t data_file_bytes, data_file_size;
    uint64_t index_file_bytes, index_file_size;
    /* The index's current table, and the table being drained into it (0 if none). */
    uint64_t index_slots;
    uint64_t index_draining_slots;
    uint64_t index_entries; /* slots of the current table that hold an offset */
    double load_factor;     /* index_entries / index_slots */
    uint64_t max_probe;     /* probes to reach the entry farthest from its home slot; 0 if none */
} mmkv_stats;

/* Fills *out for the committed state `state`. Any thread; waits for no writer (it takes the
** engine's mutex only to read the compaction policy, or to bring an index in memory up). OK, or
** an error with mmkv_errmsg(conn) saying what: IOERR if a file cannot be examined, CORRUPT if the
** index names a committed record that is not there, BUSY if the index's tables kept moving under
** the reader. */
int mmkv_stats_read(mmkv_conn *conn, const mmkv_commit *state, mmkv_stats *out);

#endif
