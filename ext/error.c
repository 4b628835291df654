#include "error.h"

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
