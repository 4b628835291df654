/*
** Named failpoints, after bbolt's: in a build with MMKV_FAILPOINTS defined, a test can make the
** step of that name fail with MMKV_IOERR, to check that every step of the commit protocol fails
** cleanly. In every other build they compile to nothing.
**
**   before-data-sync     prepare, before the transaction's records are synced
**   before-meta-write    prepare, before the new meta slot is written
**   between-meta-syncs   a meta slot written but not yet synced
**   mid-index-growth     a bigger index table allocated, not yet switched in
**   mid-recovery         an index rebuild begun, not yet filled
**
** Crash points, after the same idea: in such a build, a process whose MMKV_CRASH_AT names one
** ends there at once (_exit), as a killed process would, so that tests can stop the life of a
** table between SQLite's commit and the file work that follows it (pending.c, placement.c):
**
**   drop-committed         a DROP TABLE committed, its files not yet deleted
**   rename-committed       a RENAME committed, the old name of its files not yet removed
**   create-undone          a CREATE rolled back, its files not yet removed
**   displaced              a CREATE set a dropped table's file aside, not yet made its own
**   displacement-undone    a rolled-back CREATE removed its files, the set-aside one not put back
*/
#ifndef MMKV_FAILPOINT_H
#define MMKV_FAILPOINT_H

#include "mmkv.h"

#ifdef MMKV_FAILPOINTS
/* MMKV_IOERR if name is armed and its countdown has run out, else MMKV_OK. */
int mmkv_failpoint(const char *name);
/* Arms name to fail after it has been passed `skip` times; NULL disarms. */
void mmkv_failpoint_arm(const char *name, int skip);
/* Ends the process if MMKV_CRASH_AT names this crash point. */
void mmkv_crash_point(const char *name);
#else
#define mmkv_failpoint(name) MMKV_OK
#define mmkv_crash_point(name) ((void)0)
#endif

#endif
