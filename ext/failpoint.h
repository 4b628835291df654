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
*/
#ifndef MMKV_FAILPOINT_H
#define MMKV_FAILPOINT_H

#include "mmkv.h"

#ifdef MMKV_FAILPOINTS
/* MMKV_IOERR if name is armed and its countdown has run out, else MMKV_OK. */
int mmkv_failpoint(const char *name);
/* Arms name to fail after it has been passed `skip` times; NULL disarms. */
void mmkv_failpoint_arm(const char *name, int skip);
#else
#define mmkv_failpoint(name) MMKV_OK
#endif

#endif
