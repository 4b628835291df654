/*
** commit_record.h: the database as the commit authority of an mmkv table.
**
** A table in a database file keeps, in a shadow table of that database ("<table>_commit", one row),
** the last committed state of its log. mmkv writes that row in xSync, inside the same SQLite
** transaction as everything else, so SQLite's own commit decides whether an mmkv transaction
** happened; and a reader takes its snapshot from the row inside SQLite's read transaction, so
** that it sees mmkv and native tables as of one moment.
*/
#ifndef MMKV_COMMIT_RECORD_H
#define MMKV_COMMIT_RECORD_H

#include "mmkv.h"
#include "sqlite3ext.h"

#define MMKV_COMMIT_SUFFIX "commit" /* the shadow table is "<table>_commit" (xShadowName) */

typedef struct mmkv_commit_record {
    sqlite3 *db;
    char *schema;
    char *table; /* the shadow table's name */
    uint64_t owner_id;
    sqlite3_stmt *read;
    unsigned data_version; /* of the database when cached was read */
    int have_cached;
    mmkv_commit cached;
} mmkv_commit_record;

/* Creates the shadow table with its one row (xCreate). */
int mmkv_record_create(mmkv_commit_record *rec, sqlite3 *db, const char *schema,
                       const char *vtab_name, uint64_t owner_id, const mmkv_commit *state,
                       char **err);
/* Opens an existing shadow table and reads the owner (xConnect). */
int mmkv_record_open(mmkv_commit_record *rec, sqlite3 *db, const char *schema,
                     const char *vtab_name, char **err);
void mmkv_record_close(mmkv_commit_record *rec);

/* The committed state as of the current SQLite transaction. */
int mmkv_record_read(mmkv_commit_record *rec, mmkv_commit *state, char **err);
/* The same, without running SQL when the database has not changed since the last read. */
int mmkv_record_read_cached(mmkv_commit_record *rec, mmkv_commit *state, char **err);
int mmkv_record_write(mmkv_commit_record *rec, const mmkv_commit *state, char **err);
int mmkv_record_rename(mmkv_commit_record *rec, const char *new_vtab_name, char **err);
int mmkv_record_drop(mmkv_commit_record *rec, char **err);

#endif
