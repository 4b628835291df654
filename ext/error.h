/* Error messages: every message mmkv reports is made here, so that they read alike. */
#ifndef MMKV_ERROR_H
#define MMKV_ERROR_H

/* Replaces *errmsg (if errmsg is not NULL) with a formatted message; returns rc. */
int mmkv_error(char **errmsg, int rc, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* The same, with ": <why the last OS call failed>" appended (file.h, mmkv_os_reason). */
int mmkv_error_os(char **errmsg, int rc, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

#endif
