/*
** engine.h: the engine's internals, shared by its files: engine.c (reads, writes, the derived
** index), commit.c (what is committed), writer.c (the one writer), txn.c (the commit protocol),
** recovery.c (the index at open, salvage), open.c (opening, closing, the process's registry),
** names.c (the files' names), check.c. Not part of the public surface (mmkv.h).
*/
#ifndef MMKV_ENGINE_H
#define MMKV_ENGINE_H

#include "index.h"
#include "log.h"
#include "mmkv.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/types.h>

/* What a committed state says of its log [start, tail) besides its ends. */
typedef struct mmkv_counts {
    uint64_t start;   /* where the log begins (compaction moves it) */
    uint64_t live;    /* keys whose newest version is not a tombstone */
    uint64_t records; /* records in the log */
    uint64_t garbage; /* bytes of superseded versions, tombstones and pads in the log */
    uint64_t compactions; /* compactions finished */
} mmkv_counts;

typedef struct mmkv_savepoint {
    int level;
    uint64_t append_pos;
    size_t written;
    size_t forgotten;
    mmkv_counts counts;
} mmkv_savepoint;

/* The one write transaction an engine allows at a time. */
typedef struct mmkv_txn {
    mmkv_conn *owner;    /* NULL when none is open */
    uint64_t txid;       /* this transaction's id: the committed id plus one */
    uint64_t start;      /* the committed tail when it began */
    uint64_t append_pos; /* where its next record goes */
    mmkv_counts counts;
    mmkv_counts start_counts;
    uint64_t *written; /* offsets of its records, in order: the undo log */
    size_t n_written, cap_written;
    uint64_t *forgotten; /* tombstones compaction dropped from the index, for the undo */
    size_t n_forgotten, cap_forgotten;
    mmkv_savepoint *savepoints;
    size_t n_savepoints, cap_savepoints;
    int committed_slot;         /* meta slot of the commit it started from */
    int prepared;               /* its meta slot is written */
    int marked;                 /* its last record carries TXN_END (prepare began) */
    mmkv_meta overwritten_meta; /* what prepare replaced, for a rollback after it */
    /* The writer's last lookup that found its key's newest version (find_version): an UPDATE or
    ** DELETE by key reads the row, then writes it, and the write takes the slot and record from
    ** here rather than probe and check them again (mmkv_engine_locate). One use; every write and
    ** every undo clears it. */
    mmkv_index_hit last_hit;
    mmkv_record last_record;
} mmkv_txn;

typedef struct mmkv_engine mmkv_engine;
struct mmkv_engine {
    mmkv_engine *next; /* in the process's registry */
    int refcount;
    dev_t dev;
    ino_t ino;
    int temporary;
    int readonly;       /* opened for reading only: never writes (engine.c, READ-ONLY) */
    int wrote;          /* a write transaction of this process began on it */
    int private_index;  /* a read-only engine's index of its own, in memory */
    uint64_t private_position; /* the log position that private index reflects */
    uint64_t private_start;    /* and the log's start it was built from */
    char *user; /* who first opened it ("main.kv of '/x/app.db'"), for messages */
    char *data_path;
    char *index_path;
    mmkv_log log;
    mmkv_index index;
    pthread_mutex_t mutex; /* guards txn.owner */
    pthread_mutex_t reclaim_mutex; /* one reclaimer at a time (compact.c) */
    uint64_t reclaimed; /* this process punched the log's bytes below this (compact.c) */
    uint64_t pages_dropped_to; /* the writer unmapped the log's written pages below this (txn.c) */
    uint64_t reclaim_dropped_to; /* and the reclaimer, before its sync (compact.c) */
    /* Compaction in this process (compact.c), under mutex: a pass asked for ('compact'), up to
    ** compact_until, once compact_ready (the tombstones' safe point is known); an automatic pass
    ** going on; and the newest txid no reader anywhere reads a state older than. */
    uint64_t compact_until;
    int compact_ready;
    uint64_t compact_asked_ms; /* when it was asked for (monotonic clock) */
    int compact_auto;
    uint64_t compact_auto_end; /* an automatic pass is one sweep: it ends past this offset */
    uint64_t safe_txid;
    mmkv_txn txn;
};

struct mmkv_conn {
    mmkv_engine *engine;
    mmkv_sync sync;
    int external; /* an owning database records the commits; the meta slots only follow */
    int owner_keeps_records; /* prepare leaves the records unsynced (mmkv_open_options) */
    char *errmsg;
    /* The last record a read was taken at, and what it meant for the log (mmkv_snapshot_at): a
    ** record's meaning cannot change, so reads at the same record skip the meta slots. */
    int have_seen;
    uint64_t seen_txid, seen_tail;
    mmkv_commit seen_effective;
};

/* Every public call that can fail starts afresh: a message left by an earlier failure must never
** be read as this call's. */
static inline void mmkv_conn_clear_error(mmkv_conn *conn)
{
    if (__builtin_expect(conn->errmsg != NULL, 0)) {
        free(conn->errmsg);
        conn->errmsg = NULL;
    }
}

static inline uint64_t mmkv_record_bytes(const mmkv_record *r)
{
    return mmkv_record_size(r->header.key_len, r->header.value_len);
}

/* engine.c: reads, writes and the derived index, for the others. */
/* Undoes the transaction's records past the first keep, and its dropped tombstones past the first
** keep_forgotten. */
void mmkv_engine_undo(mmkv_engine *engine, size_t keep, size_t keep_forgotten);
/* The writer's steps, for compact.c: locate key (OK, or NOTFOUND with ref->insert_at), append a
** version after prev (value NULL: a tombstone), and remember a record in the undo log. */
int mmkv_engine_locate(mmkv_conn *conn, const mmkv_datum *key, uint64_t hash, mmkv_slot_ref *ref,
                       mmkv_record *newest);
/* Whether the record at offset, whose key has hash, is still its key's newest version, without
** reading any record: offsets are unique and a slot's tag is its hash's, so a slot on hash's probe
** path with that tag and offset is the key's own. OK with ref set to it; NOTFOUND if superseded
** (or a tombstone whose key was forgotten); or an error. make_room is done as by locate. */
int mmkv_engine_locate_version(mmkv_conn *conn, uint64_t hash, uint64_t offset, mmkv_slot_ref *ref);
int mmkv_engine_append(mmkv_conn *conn, const mmkv_slot_ref *ref, uint64_t hash,
                       const mmkv_datum *key, const mmkv_datum *value, uint64_t prev);
/* Forgets key's slots (its own, found at ref, and its second): compaction drops its tombstone. */
int mmkv_engine_forget(mmkv_conn *conn, const mmkv_datum *key, const mmkv_slot_ref *ref);
/* Appends offset to a growable list of a transaction's (its records, its dropped tombstones). */
int mmkv_engine_offset_push(uint64_t **items, size_t *count, size_t *capacity, uint64_t offset);
/* Moves up to count slots of an index table being drained. */
int mmkv_engine_drain_index(mmkv_engine *e, uint64_t count);
/* Rebuilds the index from the log [start, tail), sized by its live keys. */
int mmkv_engine_rebuild_index(mmkv_engine *engine, uint64_t start, uint64_t tail, uint64_t live,
                              char **errmsg);
/* Replays the committed log [from, to) into the index (rebuilding: into a table being built). */
int mmkv_engine_replay(mmkv_engine *e, uint64_t from, uint64_t to, int rebuilding, char **errmsg);
int mmkv_engine_cover(mmkv_engine *engine, uint64_t tail, char **errmsg);
/* A read-only engine's own index brought up to tail (open.c, READ-ONLY); nothing otherwise. */
int mmkv_engine_reach(mmkv_engine *e, uint64_t start, uint64_t tail, char **errmsg);
int mmkv_engine_corrupt_record(char **errmsg, mmkv_engine *engine, uint64_t offset);
int mmkv_engine_index_error(char **errmsg, mmkv_engine *e, int rc);
/* The newest version of key in snapshot, a tombstone included, found through its slot filed under
** hash (its own, mmkv_key_hash, or its second): OK, or NOTFOUND if that slot leads to none. */
int mmkv_engine_newest(mmkv_conn *conn, const mmkv_snapshot *snapshot, const mmkv_datum *key,
                       uint64_t hash, uint64_t verified, mmkv_record *record);
/* The hash of key's second slot (format.h): 1 if it has one, a TEXT key that reads as a number in
** the file's text encoding. */
int mmkv_engine_second_hash(const mmkv_engine *engine, const mmkv_datum *key, uint64_t *hash);

/* commit.c: what is committed. */
void mmkv_commit_from_meta(const mmkv_meta *meta, mmkv_commit *commit);
/* What a recorded commit means for the log: the record itself, unless salvage (format.h) left the
** log short of it, or padded it up to it, when the meta slot's state is what the log holds. */
void mmkv_commit_effective(mmkv_engine *engine, const mmkv_commit *recorded,
                           mmkv_commit *effective);
int mmkv_commit_begin_state(mmkv_conn *conn, const mmkv_commit *authority, mmkv_commit *state);
int mmkv_commit_catch_up(mmkv_conn *conn, const mmkv_commit *committed);
/* The first open anywhere of an owned file: meta slots ahead of the record are set back to it. */
int mmkv_commit_open_at(mmkv_engine *e, const mmkv_commit *recorded, int sync, char **errmsg);

/* writer.c: the writer's place. take returns with e->mutex held on success (handover: wait, within
** limits, for a writer finishing up); release gives both up. */
int mmkv_writer_take(mmkv_conn *conn, int handover);
void mmkv_writer_release(mmkv_engine *e);

/* recovery.c, for open.c: the index made current by the first opener. */
int mmkv_recover_index(mmkv_engine *e, char **errmsg);

/* open.c, for names.c: engines opened under old_path go by new_path. */
void mmkv_registry_rename(const char *old_path, const char *new_path);

#endif
