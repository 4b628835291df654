/*
** placement.h: where a table's files live, and whether they are its own.
**
** The one home for these decisions:
**   - the path: file= resolved against the database's directory, or "<database file>-<table>.mmkv";
**   - never a file SQLite holds: the connection's databases, their journals, WAL and shm files,
**     and any file this process holds a POSIX lock on are refused by device and inode, before a
**     descriptor is ever opened on them (closing one would drop SQLite's locks);
**   - never another table's file: CREATE refuses a data file that a table of this process (the
**     engine registry knows), of another process (its open lock), or of a database (its commit
**     record names the file's owner) uses; a file no table can be using (its DROP committed, its
**     CREATE never did, or its database is gone) is deleted if it never held a commit, else set
**     aside as "<file>-orphan-<owner>", never deleted;
**   - never shared by a copy: a data file records its home database (format.h, HOME); a database
**     at another path that names the same file (an absolute file=, a backup, VACUUM INTO, a dump
**     reloaded) is a copy if the home database still holds the table, and is refused; if the home
**     is gone, or the copy came with files of its own, the opener becomes the file's home.
*/
#ifndef MMKV_PLACEMENT_H
#define MMKV_PLACEMENT_H

#include "tables.h"

#define MMKV_DATA_SUFFIX ".mmkv"
#define MMKV_DROPPED_SUFFIX "-dropped" /* "<file>-dropped-<owner>": a dropped table's, set aside */
#define MMKV_ORPHAN_SUFFIX "-orphan"   /* "<file>-orphan-<owner>": no table's, kept for the user */

/* The data file of table `name` of database file db_file (NULL or "" for none) given file= (or
** NULL): sqlite3_malloc'd; NULL with *temporary set where the table's files are anonymous. */
char *mmkv_placement_path(const char *db_file, const char *name, const char *file, int *temporary);

/* SQLITE_OK if path may be opened as an mmkv file, else an error saying what the file is. */
int mmkv_placement_refuse_sqlite_file(sqlite3 *db, const char *path, char **err);

/* For CREATE VIRTUAL TABLE and RENAME: makes path free for table `name` of `schema` (owned: its
** database keeps a commit record; self: the table asking), or refuses. A dropped table of this connection whose DROP is
** pending has its file set aside: *displaced names it (NULL if none) and *displaced_path where
** its file now is (sqlite3_malloc'd). */
int mmkv_placement_claim(mmkv_connection *c, mmkv_table *self, const char *schema,
                         const char *name, int owned, const char *path, mmkv_table **displaced,
                         char **displaced_path, char **err);

/* For xConnect of an owned table whose commit record is open: finds its data file (putting back
** one a rolled-back CREATE set aside), and checks that it is the table's own and not a copy's.
** writable: the database may be written, so leftovers may be repaired and the home note updated.
** SQLITE_OK with t->owns_files set, or an error; file is the table's file= argument (or NULL). */
int mmkv_placement_verify(mmkv_table *t, const char *file, int writable, char **err);

/* After the engine is open: the home note names this database (a file moved with its database, a
** copy with files of its own, a file of mmkv 0.1), and a DROP whose transaction rolled back no
** longer flags it. */
void mmkv_placement_settle_home(mmkv_table *t);

#endif
