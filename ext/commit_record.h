/*
** commit_record.h: the database as the commit authority of an mmkv table.
**
** A table in a database file keeps, in a shadow table of that database ("<table>_commit", one row),
** the last committed state of its log. mmkv writes that row in xSync, inside the same SQLite
** transaction as everything else, so SQLite's own commit decides whether an mmkv transaction
** happened; and a reader takes its snapshot from the row inside SQLite's read transaction, so
** that it sees mmkv and native tables as of one moment.
**
** The row is (owner INTEGER, state BLOB). owner is the random id written into the data file's
** header when the table was made, so that a file and a record that do not belong together are
** told apart. state is little-endian 64-bit fields:
**
**   version 1 (mmkv 0.1), 40 bytes:  txid, tail, live count, record count, garbage bytes
**   version 2, 96 bytes:             [0] version (2) and flags (0) as two 32-bit words,
**                                    [8] txid, [16] tail, [24] live count, [32] record count,
**                                    [40] garbage bytes, [48] generation (0 until a table can
**                                    move to a new file), [56] displaced owner (the owner of a
**                                    dropped table whose file this table's CREATE set aside in
**                                    the same transaction: its leftover is deleted on sight),
**                                    [64] the log's start (data file format.h, START; 0 in
**                                    records older than compaction: the first record's offset),
**                                    [72] compactions finished, [80] where the records the
**                                    redo row keeps begin (0: it keeps none), [88..95] zero
**
** THE REDO ROW (rowid 2: owner NULL, state a blob of MMKV_REDO_CAPACITY bytes). A commit's
** records must be durable no later than the database's commit that records them. Syncing the data
** file in every commit costs a device flush each (10x a native commit under WAL and synchronous=
** NORMAL, where SQLite syncs nothing at commit). So a small commit instead copies its records into
** the redo row, in the same SQLite transaction as the record: they become durable exactly when the
** commit does, whatever the journal mode and synchronous setting. The row keeps the log's bytes
** [redo_from, tail) of the committed state, contiguously (each commit appends at the tail); when
** the next commit's would not fit, that commit syncs the data file from redo_from up to its own
** tail instead and records redo_from 0 (tables.c). The first open after a power cut writes back
** what the data file lost of them (mmkv_open_options.redo). A table made before the row existed
** gets it at its first commit that keeps records (one INSERT, counted by total_changes()); a
** version 1 record has no room for redo_from, and every commit of its table syncs.
**
** A commit rewrites only the commit fields in place (incremental blob I/O, which unlike an UPDATE
** leaves sqlite3_changes() to the user's statements); a version 1 record stays version 1 until its
** table first compacts, when one UPDATE makes it version 2 (a start must be recorded).
*/
#ifndef MMKV_COMMIT_RECORD_H
#define MMKV_COMMIT_RECORD_H

#include "mmkv.h"
#include "sqlite3ext.h"

#define MMKV_COMMIT_SUFFIX "commit" /* the shadow table is "<table>_commit" (xShadowName) */
#define MMKV_RECORD_FIRST_OFFSET 4096 /* a log's start before any compaction */
/* The redo row's size. A 1-row commit of a 100-byte value keeps about 150 bytes: some 400 such
** commits share one sync of the data file, whose cost then vanishes from each. */
#define MMKV_REDO_CAPACITY (64 << 10)

typedef struct mmkv_commit_record {
    sqlite3 *db;
    char *schema;
    char *table; /* the shadow table's name */
    uint64_t owner_id;
    int version;              /* of the state blob: 1 or 2 */
    uint64_t displaced_owner; /* version 2: see above; 0 if none */
    uint64_t redo_from;     /* as the last read found it, and as the next write records it */
    uint64_t redo_capacity; /* the redo row's bytes, once asked (0: none, or not asked yet) */
    sqlite3_stmt *read;
    unsigned data_version; /* of the database when cached was read */
    int have_cached;
    mmkv_commit cached;
} mmkv_commit_record;

/* Creates the shadow table with its one row (xCreate), as version 2. */
int mmkv_record_create(mmkv_commit_record *rec, sqlite3 *db, const char *schema,
                       const char *vtab_name, uint64_t owner_id, const mmkv_commit *state,
                       uint64_t displaced_owner, char **err);
/* Opens an existing shadow table and reads the owner (xConnect). NOTFOUND if it does not exist. */
int mmkv_record_open(mmkv_commit_record *rec, sqlite3 *db, const char *schema,
                     const char *vtab_name, char **err);
void mmkv_record_close(mmkv_commit_record *rec);

/* The committed state as of the current SQLite transaction. */
int mmkv_record_read(mmkv_commit_record *rec, mmkv_commit *state, char **err);
/* The same, without running SQL when the database has not changed since the last read. */
int mmkv_record_read_cached(mmkv_commit_record *rec, mmkv_commit *state, char **err);
/* Writes the state, with rec->redo_from, and (kept not NULL) the records kept in the redo row at
** their place from redo_from. */
int mmkv_record_write(mmkv_commit_record *rec, const mmkv_commit *state, const mmkv_redo *kept,
                      char **err);
/* How many bytes of records the redo row can keep: 0 if the record has no room for redo_from. */
uint64_t mmkv_record_redo_room(mmkv_commit_record *rec);
/* The records the redo row keeps for the state last read ([rec->redo_from, state->tail)), into a
** sqlite3_malloc'd kept->bytes (NULL, len 0 if none). */
int mmkv_record_redo_read(mmkv_commit_record *rec, const mmkv_commit *state, mmkv_redo *kept,
                          char **err);
int mmkv_record_rename(mmkv_commit_record *rec, const char *new_vtab_name, char **err);
/* Follows a rename made (or undone) elsewhere: only the names it uses change. */
int mmkv_record_renamed(mmkv_commit_record *rec, const char *vtab_name);
int mmkv_record_drop(mmkv_commit_record *rec, char **err);

/* The mmkv table of database `schema` whose commit record names owner: OK with its name in
** *vtab_name (sqlite3_malloc'd), NOTFOUND if none does, or an error. */
int mmkv_record_find_owner(sqlite3 *db, const char *schema, uint64_t owner, char **vtab_name,
                           char **err);

#endif
