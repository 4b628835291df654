/* Named failpoints: see failpoint.h. Nothing here exists outside a MMKV_FAILPOINTS build. */
#include "failpoint.h"
#include "file.h"

#ifdef MMKV_FAILPOINTS
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The exit status of a process stopped at a crash point, as a SIGKILL would leave it. */
#define CRASH_EXIT_STATUS 137

void mmkv_crash_point(const char *name)
{
    const char *at = getenv("MMKV_CRASH_AT");
    if (at && strcmp(at, name) == 0) _exit(CRASH_EXIT_STATUS);
}

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
