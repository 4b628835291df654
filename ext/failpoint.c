/* Named failpoints: see failpoint.h. Nothing here exists outside a MMKV_FAILPOINTS build. */
#include "failpoint.h"
#include "file.h"

#ifdef MMKV_FAILPOINTS
#include <string.h>

static const char *armed;
static int countdown;

void mmkv_failpoint_arm(const char *name, int skip)
{
    armed = name;
    countdown = skip;
}

int mmkv_failpoint(const char *name)
{
    if (!armed || strcmp(armed, name) != 0) return MMKV_OK;
    if (countdown-- > 0) return MMKV_OK;
    armed = NULL;
    mmkv_os_fail_injected();
    return MMKV_IOERR;
}
#else
typedef int mmkv_failpoints_are_compiled_out; /* ISO C wants something in a translation unit */
#endif
