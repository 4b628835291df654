/*
** The extension's entry point: registers the mmkv module and its SQL functions on a connection.
**
**     .load build/mmkv                       -- from the sqlite3 shell
**     conn.load_extension("build/mmkv")      -- from Python
**     sqlite3_auto_extension((void (*)(void))sqlite3_mmkv_init);   -- linked statically
*/
#include "backup.h"
#include "mmkv.h"
#include "sqlite3_mmkv.h"
#include "stats_vtab.h"
#include "vtab.h"

SQLITE_EXTENSION_INIT1

/* mmkv_version(): the version of this build. */
static void version_function(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    sqlite3_result_text(ctx, MMKV_VERSION, -1, SQLITE_STATIC);
}

#ifdef _WIN32
__declspec(dllexport)
#endif
    int sqlite3_mmkv_init(sqlite3 *db, char **err, const sqlite3_api_routines *api)
{
    SQLITE_EXTENSION_INIT2(api);
    (void)err;
    int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC;
#ifdef SQLITE_INNOCUOUS
    flags |= SQLITE_INNOCUOUS;
#endif
    int rc =
        sqlite3_create_function(db, "mmkv_version", 0, flags, NULL, version_function, NULL, NULL);
    if (rc == SQLITE_OK) rc = mmkv_vtab_register(db);
    if (rc == SQLITE_OK) rc = mmkv_backup_register(db);
    if (rc == SQLITE_OK) rc = mmkv_stats_register(db);
    return rc;
}
