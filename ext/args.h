/*
** args.h: the arguments of CREATE VIRTUAL TABLE ... USING mmkv(name=value, ...).
*/
#ifndef MMKV_ARGS_H
#define MMKV_ARGS_H

#include "mmkv.h"

typedef struct mmkv_args {
    char *file;     /* file=PATH, dequoted; NULL if not given */
    mmkv_sync sync; /* sync=full|normal|off; MMKV_SYNC_FULL if not given */
} mmkv_args;

/* Parses the module arguments (argv[3..] of xCreate). On error returns MMKV_ERROR with a message
** (malloc'd) naming the bad argument. */
int mmkv_args_parse(int argc, const char *const *argv, mmkv_args *args, char **errmsg);
void mmkv_args_free(mmkv_args *args);

#endif
