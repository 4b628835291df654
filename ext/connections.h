/*
** connections.h: which mmkv_connection (tables.h) serves a sqlite3 connection.
**
** SQLite hands a module's client data only to that module's own methods: a table-valued function
** of its own module (mmkv_stats) is given the sqlite3 handle alone, and SQLite before 3.44 keeps
** no other data per connection (sqlite3_set_clientdata). So every mmkv_connection is listed here
** for its whole life: pending.c, whose state each connection makes first and frees last, adds and
** removes it. Any thread; the list has its own lock.
*/
#ifndef MMKV_CONNECTIONS_H
#define MMKV_CONNECTIONS_H

#include "tables.h"

/* Lists c under c->db: OK, or SQLITE_NOMEM. */
int mmkv_connections_add(mmkv_connection *c);
void mmkv_connections_remove(mmkv_connection *c);
/* The mmkv_connection of db (the newest, if mmkv was loaded on it twice), or NULL. */
mmkv_connection *mmkv_connections_find(sqlite3 *db);

#endif
