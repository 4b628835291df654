/* backup.h: the SQL function mmkv_backup(), a hot copy of a database with its mmkv tables. */
#ifndef MMKV_BACKUP_H
#define MMKV_BACKUP_H

#include "sqlite3ext.h"

/* Registers mmkv_backup(path) and mmkv_backup(schema, path) on db. */
int mmkv_backup_register(sqlite3 *db);

#endif
