/*
** pending.h: DDL whose files wait on the outcome of SQLite's transaction.
**
** An mmkv table's files live outside the database, so SQLite's rollback cannot undo what a DROP,
** a CREATE or a RENAME does to them. So those statements change no file that the database could
** still need, and record what is left to do here:
**
**   DROP TABLE      the files stay; at COMMIT they are deleted; at ROLLBACK (or ROLLBACK TO a
**                   savepoint taken before it, or a failed commit) the table comes back as it was,
**                   its transaction in progress included;
**   CREATE          the new files are deleted if the CREATE is rolled back; if it made room by
**                   setting a dropped table's file aside, that file is put back;
**   ALTER RENAME    the files get their new name as a second name (a hard link); at COMMIT the old
**                   name goes, at ROLLBACK the new one.
**
** To learn the outcome, mmkv joins SQLite's transaction as a participant: an eponymous virtual
** table, mmkv_pending, which a DDL statement writes to (a nested INSERT), so that SQLite calls its
** xSavepoint, xRollbackTo, xSync, xCommit and xRollback like any table's. It also drives the
** transactions of tables whose own sqlite3_vtab SQLite no longer calls (one dropped and brought
** back by ROLLBACK TO). `SELECT * FROM mmkv_pending` lists what is pending.
**
** The participant is an eponymous table, so it lives in the main database, and writing it makes
** the commit take main's write lock. So it joins only where that costs nothing (DDL on main, or a
** transaction that writes main anyway, or a main database without a file) or where nothing else
** can carry on (a dropped table with writes of its transaction in progress). Otherwise (DDL on
** an attached database) the outcome is read from the database itself once the transaction has
** ended (is the table's commit record there?), at the next call into mmkv on the connection
** (connecting or planning a table, reading mmkv_pending, closing). A crash in
** between leaves the files for the next user: a dropped table's data file carries a drop-pending
** flag in its home note (format.h), and whoever next meets it asks the database whether the table
** is still there.
*/
#ifndef MMKV_PENDING_H
#define MMKV_PENDING_H

#include "tables.h"

#define MMKV_PENDING_MODULE "mmkv_pending"

mmkv_pending *mmkv_pending_new(mmkv_connection *c);
void mmkv_pending_free(mmkv_pending *p);
/* Registers the participant's module on the connection. */
int mmkv_pending_register(mmkv_connection *c);

/* A CREATE made t's files; `displaced` (or NULL) is a dropped table whose file it set aside at
** displaced_path to make room. */
int mmkv_pending_create(mmkv_connection *c, mmkv_table *t, mmkv_table *displaced,
                        const char *displaced_path);
/* A DROP TABLE dropped t. */
int mmkv_pending_drop(mmkv_connection *c, mmkv_table *t);
/* An ALTER TABLE RENAME renamed t from old_name; old_path is the name its files had (NULL if
** they keep theirs), linked whether their new name was made for it (not one they still had from
** an earlier RENAME in the transaction); displaced as for a CREATE, at the new name. */
int mmkv_pending_rename(mmkv_connection *c, mmkv_table *t, const char *old_name,
                        const char *old_path, int linked, mmkv_table *displaced,
                        const char *displaced_path);

/* t's CREATE was rolled back by a savepoint that SQLite did not tell t about (the participant
** did not join): undoes it now. 1 if t had a pending CREATE. */
int mmkv_pending_discard_created(mmkv_connection *c, mmkv_table *t);
/* Whether t's CREATE is still to be settled (made in the transaction now open). */
int mmkv_pending_created(mmkv_connection *c, mmkv_table *t);

/* Settles what a transaction that has ended left pending, when the participant could not learn
** its outcome. Call with no transaction open. */
void mmkv_pending_settle(mmkv_connection *c);

#endif
