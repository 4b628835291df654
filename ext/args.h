/*
** args.h: the arguments of CREATE VIRTUAL TABLE ... USING mmkv(name=value, ...).
*/
#ifndef MMKV_ARGS_H
#define MMKV_ARGS_H

#include "mmkv.h"

typedef struct mmkv_args {
    char *file;     /* file=PATH, dequoted; NULL if not given */
    mmkv_sync sync; /* sync=full|normal|off; MMKV_SYNC_FULL if not given */
    /* autocompact=PERCENT|off: compaction starts when garbage is that share of the log (10 to 90);
    ** 0 for off. MMKV_AUTOCOMPACT_DEFAULT if not given: see docs/operations.md for why. */
    int autocompact;
} mmkv_args;

#define MMKV_AUTOCOMPACT_DEFAULT 30
#define MMKV_AUTOCOMPACT_MIN 10
#define MMKV_AUTOCOMPACT_MAX 90

/* Parses the module arguments (argv[3..] of xCreate). On error returns MMKV_ERROR with a message
** (malloc'd) naming the bad argument. */
int mmkv_args_parse(int argc, const char *const *argv, mmkv_args *args, char **errmsg);
void mmkv_args_free(mmkv_args *args);

#endif
