/* vtab.h: the SQL face: the mmkv virtual-table module. */
#ifndef MMKV_VTAB_H
#define MMKV_VTAB_H

#include "sqlite3ext.h"

/* Registers the module "mmkv" on db. */
int mmkv_vtab_register(sqlite3 *db);

#endif
