/* Error messages: every message mmkv reports is made here, so that they read alike. */
#ifndef MMKV_ERROR_H
#define MMKV_ERROR_H

/* Replaces *errmsg (if errmsg is not NULL) with a formatted message; returns rc. */
int mmkv_error(char **errmsg, int rc, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

#endif
