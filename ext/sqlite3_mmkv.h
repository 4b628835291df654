/*
** sqlite3_mmkv.h: for applications that link mmkv statically (build/libmmkv.a).
**
**     #include "sqlite3_mmkv.h"
**     sqlite3_auto_extension((void (*)(void))sqlite3_mmkv_init);  // before opening connections
*/
#ifndef SQLITE3_MMKV_H
#define SQLITE3_MMKV_H

#include <sqlite3.h>

int sqlite3_mmkv_init(sqlite3 *db, char **err, const sqlite3_api_routines *api);

#endif
