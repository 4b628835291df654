/*
** mmkv.h: the engine's whole public surface.
**
** The engine stores key-value records in a memory-mapped, append-only data file and finds them
** through a hash index in a second mapped file. It knows nothing of SQLite; the SQL face (vtab.c)
** is one client. Result codes use SQLite's numbers so that the face can pass them through.
**
** One mmkv_engine exists per file per process, shared by every mmkv_conn that opened that file
** (closing any descriptor would drop the process's POSIX locks, and one mapping serves all).
** A connection reads through a snapshot and writes through the one write transaction the engine
** allows at a time.
*/
#ifndef MMKV_H
#define MMKV_H

#include <stddef.h>
#include <stdint.h>

#define MMKV_VERSION "0.1.0"

/* Result codes: SQLite's values. */
#define MMKV_OK 0
#define MMKV_ERROR 1
#define MMKV_BUSY 5
#define MMKV_NOMEM 7
#define MMKV_READONLY 8
#define MMKV_IOERR 10
#define MMKV_CORRUPT 11
#define MMKV_NOTFOUND 12
#define MMKV_FULL 13
#define MMKV_CANTOPEN 14
#define MMKV_CONSTRAINT 19
#define MMKV_MISUSE 21
#define MMKV_NOTADB 26

/* Datum types: SQLite's fundamental type numbers. */
#define MMKV_INTEGER 1
#define MMKV_FLOAT 2
#define MMKV_TEXT 3
#define MMKV_BLOB 4
#define MMKV_NULL 5

/* Durability of a commit; mirrors PRAGMA synchronous. */
typedef enum mmkv_sync {
    MMKV_SYNC_OFF = 0,    /* no syncs: survives nothing but a clean close, never corrupts */
    MMKV_SYNC_NORMAL = 1, /* records synced before the meta slot: survives a process crash */
    MMKV_SYNC_FULL = 2    /* records and meta slot synced: survives power loss */
} mmkv_sync;

/* A key or a value. INTEGER and FLOAT point at 8 bytes (int64_t / double); NULL has no bytes. */
typedef struct mmkv_datum {
    int type;
    uint32_t len;
    const void *bytes;
} mmkv_datum;

/* A state of the log to read: everything committed in [start, tail). */
typedef struct mmkv_snapshot {
    uint64_t start; /* where its log begins: compaction moves it (format.h, START) */
    uint64_t tail;
    uint64_t garbage_bytes; /* 0: every record below tail is its key's live version */
    /* Records below it are committed: their bytes never change while the snapshot is read, and
    ** stay mapped and in the file until no reader anywhere reads a state that holds them (the
    ** tail, or for a writer's own snapshot the tail its transaction began at: its own records
    ** above can be rolled back and written over). */
    uint64_t stable;
} mmkv_snapshot;

/* One version found by a read; the bytes stay valid until the connection's next write, and for
** as long as its snapshot is read if its offset is below the snapshot's `stable`. */
typedef struct mmkv_row {
    mmkv_datum key;
    mmkv_datum value;
    uint64_t offset;
} mmkv_row;

typedef struct mmkv_conn mmkv_conn;
typedef struct mmkv_scan mmkv_scan;

/* A committed state of the log: what an owning database records in its own transaction. */
typedef struct mmkv_commit {
    uint64_t txid;
    uint64_t start; /* where its log begins (0 is read as 4096, the first record's offset) */
    uint64_t tail;
    uint64_t live_count;
    uint64_t record_count;
    uint64_t garbage_bytes;
    uint64_t compactions; /* compactions finished */
} mmkv_commit;

/* Bytes [from, from + len) of a log, as an owning database kept them. */
typedef struct mmkv_redo {
    uint64_t from;
    const void *bytes;
    uint64_t len;
} mmkv_redo;

typedef struct mmkv_open_options {
    mmkv_sync sync;
    int temporary;     /* create an anonymous file set that vanishes at close */
    uint64_t owner_id; /* the database that decides what is committed; 0: the files decide */
    int must_exist;    /* MMKV_CANTOPEN if the data file is absent, rather than making it */
    int text_encoding; /* of the caller's text: MMKV_TEXT_UTF8 (also 0), _UTF16LE or _UTF16BE;
                       ** a new file takes it, a file holding another is refused (MMKV_ERROR) */
    const char *home;  /* a new owned file's database path, for its home note (format.h) */
    const char *user;  /* who opens it, named in other users' messages ("main.kv of 'x.db'") */
    int readonly;      /* open for reading only: nothing is ever written to the files */
    /* For an open of an owned file: the state its database records. The open brings the meta slots
    ** and the index up to it if a crash left them behind; a read-only open uses the index on disk
    ** only if it reflects exactly that state (else it builds one of its own in memory). */
    const mmkv_commit *committed;
    /* An owning database that keeps the records of small commits itself until they are durable in
    ** the file (the SQL face's redo, commit_record.h): prepare then leaves them unsynced, and the
    ** owner either keeps their bytes in its own transaction (mmkv_txn_records) or has them synced
    ** (mmkv_sync_records) before its commit. */
    int owner_keeps_records;
    /* For an open of an owned file: the bytes the database kept, which the log must hold. The
    ** first open in the process writes back whatever a power cut took of them (read-only: reports
    ** that the file needs recovery). */
    const mmkv_redo *redo;
} mmkv_open_options;


/* Text encodings (SQLite's numbers). */
#define MMKV_TEXT_UTF8 1
#define MMKV_TEXT_UTF16LE 2
#define MMKV_TEXT_UTF16BE 3

/* What a data file says about itself, read without writing anything (mmkv_inspect). */
#define MMKV_HOME_PATH_BYTES 472
typedef struct mmkv_file_info {
    uint64_t file_id;
    uint64_t owner_id;     /* 0: shared by in-memory databases, its meta slots decide */
    int format_version;
    int text_encoding;
    int has_home;          /* home is the owning database's path (format version 2 files) */
    char home[MMKV_HOME_PATH_BYTES];
    uint32_t home_flags;   /* MMKV_HOME_DROP_PENDING */
    uint64_t txid, tail;   /* the newest commit its meta slots name */
    int never_committed;   /* no record was ever written to it */
    char open_by[256];     /* the user of the engine this process has open on it, or "" */
    int open_elsewhere;    /* another process has it open */
    uint32_t links;        /* its hard links */
} mmkv_file_info;
#define MMKV_HOME_DROP_PENDING 0x01

/* Paths, for the SQL face's checks. mmkv_path_identity: 1 and the file's device and inode if it
** exists. mmkv_path_locked_by_process: 1 if this process holds a POSIX lock on it (as SQLite does
** on its files), so that opening and closing a descriptor on it would drop that lock. */
int mmkv_path_identity(const char *path, uint64_t *dev, uint64_t *ino);
int mmkv_path_locked_by_process(const char *path);
/* 1 if both paths exist and name one file. */
int mmkv_same_file(const char *a, const char *b);

/* Reads what the data file at path says about itself. Never writes, and never opens a descriptor
** on a file this process already has open. OK, NOTFOUND, NOTADB (not an mmkv data file), or an
** I/O error, with a message. Any thread. */
int mmkv_inspect(const char *data_path, mmkv_file_info *info, char **errmsg);


/* Opening and closing. */
int mmkv_open(const char *data_path, const mmkv_open_options *options, mmkv_conn **out,
              char **errmsg);
void mmkv_close(mmkv_conn *conn);
int mmkv_remove_files(const char *data_path, char **errmsg);
/* Records in the file's home note the owning database's path and flags (MMKV_HOME_DROP_PENDING),
** durably, under the writer's lock (waiting for a writer finishing up). */
int mmkv_mark_home(mmkv_conn *conn, const char *home, uint32_t flags);
/* The file's home note: 1 and its path and flags if it has one. */
int mmkv_home_of(mmkv_conn *conn, char *path, size_t path_size, uint32_t *flags);
/* Gives the files a second name (hard links): both names reach the same files until one goes.
** ERROR if a file has the new name. */
int mmkv_link_files(const char *data_path, const char *new_data_path, char **errmsg);
/* Removes the name data_path (and its index's), which must be another name of the files at
** remaining_path; engines opened under it go by remaining_path from then on. */
int mmkv_drop_name(const char *data_path, const char *remaining_path, char **errmsg);
/* Removes every other name of the files at data_path in its directory that starts with prefix and
** ends with suffix (second names a RENAME left when a crash came between its commit and the
** removal of the old name). Returns how many went. */
int mmkv_drop_other_names(const char *data_path, const char *prefix, const char *suffix);
/* Moves the files to a new name; ERROR if a file has it. */
int mmkv_rename_files(const char *old_data_path, const char *new_data_path, char **errmsg);
const char *mmkv_errmsg(mmkv_conn *conn);
const char *mmkv_data_path(mmkv_conn *conn);
/* 1 if no other connection of this process and no other process has the file open. */
int mmkv_sole_user(mmkv_conn *conn);
/* 1 if the connection is read-only: asked to be, or the data file cannot be written (then
** every write fails with MMKV_READONLY). */
int mmkv_readonly(mmkv_conn *conn);
/* The encoding of the file's TEXT (MMKV_TEXT_UTF8, _UTF16LE or _UTF16BE). */
int mmkv_text_encoding(mmkv_conn *conn);

/* The committed state as the data file's meta slots record it. */
int mmkv_committed(mmkv_conn *conn, mmkv_commit *commit);

/* Reading. A snapshot is taken for each read; the writer's own snapshot includes its writes.
** mmkv_snapshot_at reads the state an owning database says is committed. */
int mmkv_snapshot_take(mmkv_conn *conn, mmkv_snapshot *snapshot);
int mmkv_snapshot_at(mmkv_conn *conn, const mmkv_commit *committed, mmkv_snapshot *snapshot);
int mmkv_get(mmkv_conn *conn, const mmkv_snapshot *snapshot, const mmkv_datum *key, mmkv_row *row);
int mmkv_scan_open(mmkv_conn *conn, const mmkv_snapshot *snapshot, mmkv_scan **out);
int mmkv_scan_next(mmkv_scan *scan,
                   mmkv_row *row); /* MMKV_OK, MMKV_NOTFOUND at the end, or error */
void mmkv_scan_close(mmkv_scan *scan);
uint64_t mmkv_live_count(mmkv_conn *conn);

/* Writing, inside a write transaction. */
#define MMKV_PUT_INSERT 0  /* fail with MMKV_CONSTRAINT if the key exists */
#define MMKV_PUT_REPLACE 1 /* insert or overwrite */
int mmkv_put(mmkv_conn *conn, const mmkv_datum *key, const mmkv_datum *value, int mode);
int mmkv_delete(mmkv_conn *conn, const mmkv_datum *key); /* MMKV_NOTFOUND if absent */

/* Transactions: the commit protocol (txn.c). prepare does all durable work and may fail;
** commit and rollback cannot fail. */
int mmkv_txn_begin(mmkv_conn *conn);
/* Begins from the state an owning database says is committed, first bringing the log and the
** index to it if they differ (a crash between the two commits rolls either way). */
int mmkv_txn_begin_at(mmkv_conn *conn, const mmkv_commit *committed);
int mmkv_txn_savepoint(mmkv_conn *conn, int level);
void mmkv_txn_release(mmkv_conn *conn, int level);
void mmkv_txn_rollback_to(mmkv_conn *conn, int level);
int mmkv_txn_prepare(mmkv_conn *conn);
/* After prepare: the state this transaction commits, for the owning database to record. */
void mmkv_txn_outcome(mmkv_conn *conn, mmkv_commit *commit);
/* After prepare: the transaction's records as the log holds them, [*from, *from + *len) (valid
** until the transaction ends), for an owner that keeps them (owner_keeps_records). */
void mmkv_txn_records(mmkv_conn *conn, const void **bytes, uint64_t *from, uint64_t *len);
/* Makes the log's bytes [from, to) durable in the file (an owner that keeps records, when it stops
** keeping them). */
int mmkv_sync_records(mmkv_conn *conn, uint64_t from, uint64_t to);
void mmkv_txn_commit(mmkv_conn *conn);
void mmkv_txn_rollback(mmkv_conn *conn);
int mmkv_txn_active(mmkv_conn *conn);

/* Compaction (compact.c; format.h, START). A step, inside a write transaction, drains up to budget
** bytes (0: no limit) of the log from its start, but never past `until` (0: the committed tail):
** live versions are copied to the end, garbage dropped, and tombstones of transactions at or
** below safe_txid (no reader reads a state older than that) dropped with their keys' slots. Its
** commit moves the state's start. mmkv_reclaim then gives the bytes below the start of `safe`, a
** committed state that is durable and that every reader anywhere reads or has passed, back to
** the file system (*given_back: bytes punched); nothing if another reclaimer is at work. paced:
** others may be using the file, so the punching leaves its lock free most of the time (slower). */
typedef struct mmkv_compact_result {
    uint64_t drained_bytes; /* of the log's start walked */
    uint64_t copied_bytes;  /* of live versions (and kept tombstones) copied to the end */
    uint64_t dropped;       /* tombstones dropped */
    uint64_t start;         /* the start it moved to */
    int done;               /* reached `until` (or the committed tail) */
} mmkv_compact_result;
int mmkv_compact_step(mmkv_conn *conn, uint64_t budget, uint64_t until, uint64_t safe_txid,
                      mmkv_compact_result *out);
int mmkv_reclaim(mmkv_conn *conn, const mmkv_commit *safe, int paced, uint64_t *given_back);

/* The policy, shared by every connection of the process to the file. A pass asked for covers the
** log up to the committed tail when its first step runs; it runs once mmkv_compact_set_safe has said how far
** tombstones may go (ready). mmkv_compact_on_commit, inside a write transaction before its
** prepare, takes a step if a pass was asked for and is ready, or if garbage makes up at least
** threshold_pct percent of the log (0: never automatically; an automatic pass then goes on until
** it is under nine tenths of that): a budget of four times the bytes the transaction wrote, within
** [64 KiB, 4 MiB] (or `budget` if not 0), so that compaction outpaces writing at a cost
** bounded per commit. *stepped is 1 if it moved the start. A pass that ends adds one to the
** state's compactions. */
void mmkv_compact_request(mmkv_conn *conn);
/* Takes back a pass asked for whose first step has not run (its transaction rolled back). */
void mmkv_compact_cancel(mmkv_conn *conn);
/* Whether a pass asked for is still to run (1), and up to where. */
int mmkv_compact_pending(mmkv_conn *conn, uint64_t *until);
/* Whether a pass asked for waits for mmkv_compact_set_safe to say how far tombstones may go. */
int mmkv_compact_waiting(mmkv_conn *conn);
void mmkv_compact_set_safe(mmkv_conn *conn, uint64_t safe_txid, int ready);
uint64_t mmkv_compact_safe_txid(mmkv_conn *conn);
int mmkv_compact_on_commit(mmkv_conn *conn, int threshold_pct, uint64_t budget, int *stepped);
/* Whether the connection's table compacts or gives space back now, and the counts of its state. */
int mmkv_compact_auto_active(mmkv_conn *conn);

/* Checking (check.c). mmkv_check verifies the log up to the committed state (an owning
** database's, or the meta slots' if NULL; a writer's own) and that the index leads to each key's
** newest version: MMKV_OK, or MMKV_CORRUPT with a message saying what is wrong. mmkv_rebuild
** rebuilds the index from the log, inside a write transaction. */
int mmkv_check(mmkv_conn *conn, const mmkv_commit *committed);
int mmkv_rebuild(mmkv_conn *conn);

/* Keys: equality and hashing with SQLite's rules (1 = 1.0, '1' <> 1, BINARY collation). */
int mmkv_key_equal(const mmkv_datum *a, const mmkv_datum *b);
uint64_t mmkv_key_hash(const mmkv_datum *key);
/* If SQLite's NUMERIC affinity would turn this TEXT, in the given encoding (a file's:
** MMKV_TEXT_UTF8, _UTF16LE or _UTF16BE), into a number, stores the number in *number (its bytes in
** *storage) and returns 1; else 0. Only ASCII can form a number: in UTF-16, code units below 0x80
** (a stray last byte is ignored, as SQLite ignores it). A NUL ends the text, as in newer SQLite,
** which reads '1' NUL 'x' as 1 where older SQLite reads no number: a superset of both, for
** callers that let SQLite compare. Any thread. */
int mmkv_text_as_number(const mmkv_datum *text, int encoding, mmkv_datum *number,
                        uint64_t *storage);

/* The rows whose key SQLite could find equal to probe once it applies a column affinity to the
** stored key (a comparison with a typed column or a CAST): the key equal to probe, TEXT keys that
** read as probe's number, and numbers that probe's text reads as (TEXT, probe's too, is in the
** file's encoding, mmkv_text_encoding, and read by mmkv_text_as_number). A superset: the caller
** keeps SQLite's own comparison. emit returns a result code; anything but MMKV_OK stops the
** walk. */
typedef int (*mmkv_emit_fn)(void *ctx, const mmkv_row *row);
int mmkv_get_similar(mmkv_conn *conn, const mmkv_snapshot *snapshot, const mmkv_datum *probe,
                     mmkv_emit_fn emit, void *ctx);

/* Copies (copy.c): a data file copied into a new one of its own, for a backup, while writers go
** on. The copy holds the source open as a reader; each mmkv_copy_to copies what a reader of a
** recorded commit reads, appending only the bytes not copied before (a committed log is never
** rewritten); mmkv_copy_finish seals the copy at the state last copied (both meta slots, synced)
** and builds its index. Any thread, one at a time per copy. */
typedef struct mmkv_copy mmkv_copy;
typedef struct mmkv_copy_options {
    uint64_t source_owner;   /* the owner id the source's commit record names */
    uint64_t target_owner;   /* the copy's own owner id (not 0) */
    const char *target_home; /* the copy's database path, for its home note */
    const char *user;        /* who copies, named in other users' messages */
    /* The source's commit as its database records it, and the records the database keeps for it
    ** (mmkv_open_options.committed and .redo: the first open in the process writes back what a
    ** power cut took). Either may be NULL. */
    const mmkv_commit *source_committed;
    const mmkv_redo *source_redo;
} mmkv_copy_options;
/* Opens the source (must exist, owned by source_owner) and makes the target data file. OK, or an
** error with a message: ERROR if the target exists (it is left alone), the source's open errors. */
int mmkv_copy_open(const char *source_path, const char *target_path,
                   const mmkv_copy_options *options, mmkv_copy **out, char **errmsg);
/* Copies the log up to what a reader of the recorded commit reads, that state into *copied (the
** record, or salvage's state where the log was left short of it). FULL on a full disk; CORRUPT if
** the source lacks the records or its log went back. */
int mmkv_copy_to(mmkv_copy *copy, const mmkv_commit *recorded, mmkv_commit *copied,
                 char **errmsg);
/* Seals the copy at the state last copied and builds its index; the source is closed. */
int mmkv_copy_finish(mmkv_copy *copy, char **errmsg);
/* Ends a copy; its files are removed unless it was finished. */
void mmkv_copy_close(mmkv_copy *copy);
/* Gives the file `built` the name final_path (never replacing a file: ERROR if one exists), then
** removes the name built, durably. */
int mmkv_path_publish(const char *built, const char *final_path, char **errmsg);

#endif
