#include "error.h"
#include "file.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int mmkv_error(char **errmsg, int rc, const char *format, ...)
{
    if (!errmsg) return rc;
    va_list ap;
    va_start(ap, format);
    char *message = NULL;
    if (vasprintf(&message, format, ap) < 0) message = NULL;
    va_end(ap);
    free(*errmsg);
    *errmsg = message;
    return rc;
}

int mmkv_error_os(char **errmsg, int rc, const char *format, ...)
{
    if (!errmsg) return rc;
    const char *reason = mmkv_os_reason();
    va_list ap;
    va_start(ap, format);
    char *message = NULL;
    if (vasprintf(&message, format, ap) < 0) message = NULL;
    va_end(ap);
    char *full = NULL;
    if (message && asprintf(&full, "%s: %s", message, reason) < 0) full = NULL;
    free(message);
    free(*errmsg);
    *errmsg = full;
    return rc;
}
