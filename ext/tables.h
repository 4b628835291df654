/*
** tables.h: a connection's open mmkv tables.
**
** SQLite makes a new sqlite3_vtab for a table whenever it reloads the schema (any ALTER TABLE, a
** failed CREATE, a savepoint rolled back over DDL), while the old one may stay in the transaction
** until it ends. So the state of a table (its engine connection, and with it the write transaction
** in progress) lives here, once per table and connection, and every sqlite3_vtab of that table
** shares it: reads through the new one see the transaction's writes, writes go on in it, and the
** commit stays one.
**
** A table's life in a transaction: LIVE; DROPPED by a DROP TABLE whose transaction has not ended
** (the files stay until SQLite commits it, see pending.h); DISCARDED when the CREATE that made it
** was rolled back (its vtab may still receive calls, which do nothing).
*/
#ifndef MMKV_TABLES_H
#define MMKV_TABLES_H

#include "commit_record.h"
#include "mmkv.h"
#include "sqlite3ext.h"

typedef struct mmkv_pending mmkv_pending;
typedef struct mmkv_table mmkv_table;

/* One per sqlite3 connection: the modules' client data. */
typedef struct mmkv_connection {
    sqlite3 *db;
    int refs; /* the modules registered with it */
    mmkv_table *tables;
    mmkv_pending *pending;
} mmkv_connection;

typedef enum mmkv_table_status {
    MMKV_TABLE_LIVE,
    MMKV_TABLE_DROPPED,
    MMKV_TABLE_DISCARDED
} mmkv_table_status;

struct mmkv_table {
    mmkv_table *next;
    mmkv_connection *connection;
    char *schema; /* "main", "temp" or an attached name */
    char *name;
    char *data_path;       /* where its files are now; NULL for a temporary table */
    int named_after_table; /* the files follow ALTER TABLE RENAME */
    int temporary;         /* a :memory: or temporary database's: anonymous files */
    int owned;             /* its database's commit record decides: see commit_record.h */
    int text_encoding;     /* of its text: MMKV_TEXT_UTF8, _UTF16LE or _UTF16BE */
    mmkv_sync sync;        /* its sync= argument */
    int autocompact;       /* its autocompact= argument: percent of garbage, 0 for off */
    uint64_t step_budget;  /* of the compaction step this transaction runs ('compact-step'), or 0 */
    int compacted;         /* this transaction moved the log's start: space to give back after */
    int compact_asked;     /* this transaction asked for a compaction ('compact') */
    mmkv_commit begun;     /* owned: the record its write transaction began from (and will
                           ** find unchanged at xSync: only xSync writes it, under SQLite's
                           ** write lock) */
    mmkv_commit_record record;
    mmkv_conn *conn; /* NULL when it cannot be used (broken) or was discarded */
    int broken_rc;   /* why conn is NULL: the error every use reports */
    char *broken;
    int owns_files;  /* its files are verified to be its own: a DROP may delete them */
    int made_files;  /* its CREATE made them (a file shared by in-memory databases may not be) */
    int refs;        /* sqlite3_vtabs and pending operations holding it */
    mmkv_table_status status;
    /* A file shared by in-memory databases: while any cursor is open, reads share one snapshot,
    ** so that a statement reads one state. */
    int open_cursors;
    int have_snapshot;
    mmkv_snapshot snapshot;
};

mmkv_connection *mmkv_connection_new(sqlite3 *db);
void mmkv_connection_unref(mmkv_connection *c);

/* The LIVE table of that name, or NULL. */
mmkv_table *mmkv_table_find(mmkv_connection *c, const char *schema, const char *name);
/* A new LIVE table holding one reference (schema and name copied), or NULL if out of memory. */
mmkv_table *mmkv_table_new(mmkv_connection *c, const char *schema, const char *name);
void mmkv_table_ref(mmkv_table *t);
/* Drops a reference; the last one closes the table, but a table in the middle of a transaction
** stays until it ends (a dropped table brought back by ROLLBACK TO has no vtab until SQLite makes
** one), and a temporary table that is LIVE stays open (its data lives only in its engine) until it
** is dropped or the connection closes. */
void mmkv_table_unref(mmkv_table *t);
/* Closes the tables nothing holds any more, once their transaction has ended. */
void mmkv_tables_sweep(mmkv_connection *c);
/* Whether the table is in its database's schema still (by its commit record, or by name for a
** table without one): a CREATE rolled back by a savepoint SQLite did not tell it of is not. */
int mmkv_table_still_there(mmkv_table *t);
/* Makes the table unusable with this error (the message is copied). */
void mmkv_table_break(mmkv_table *t, int rc, const char *message);
/* Closes its engine connection (a transaction in it rolls back). */
void mmkv_table_close(mmkv_table *t);

/* Its write transaction: begun by xBegin (or the first write), made durable and recorded by
** xSync, ended by xCommit or xRollback. A table not LIVE never commits: its transaction is only
** ever rolled back. Result codes are SQLite's, with the message in *err. */
int mmkv_table_begin(mmkv_table *t, char **err);
int mmkv_table_sync(mmkv_table *t, char **err);
void mmkv_table_commit(mmkv_table *t);
void mmkv_table_rollback(mmkv_table *t);
int mmkv_table_savepoint(mmkv_table *t, int level, char **err);
void mmkv_table_release(mmkv_table *t, int level);
void mmkv_table_rollback_to(mmkv_table *t, int level);

/* The same for every table of the connection that has a transaction (pending.c drives these for
** tables whose sqlite3_vtab SQLite no longer calls). */
int mmkv_tables_sync(mmkv_connection *c, char **err);
void mmkv_tables_commit(mmkv_connection *c);
void mmkv_tables_rollback(mmkv_connection *c);
int mmkv_tables_savepoint(mmkv_connection *c, int level, char **err);
void mmkv_tables_release(mmkv_connection *c, int level);
void mmkv_tables_rollback_to(mmkv_connection *c, int level);

/* The SQLite result code for an engine's. */
int mmkv_sqlite_rc(int engine_rc);
/* A value's type for messages about arguments: "an integer", "a real", "a blob", "NULL", "text". */
const char *mmkv_value_type_name(int type);
/* Replaces *err with the engine connection's message. */
int mmkv_table_error(mmkv_table *t, int engine_rc, char **err);

#endif
