/* stats_vtab.h: the table-valued function mmkv_stats(), what an mmkv table's files hold. */
#ifndef MMKV_STATS_VTAB_H
#define MMKV_STATS_VTAB_H

#include "sqlite3ext.h"

/* Registers mmkv_stats(name) and mmkv_stats(name, schema) on db (after the mmkv module). */
int mmkv_stats_register(sqlite3 *db);

#endif
