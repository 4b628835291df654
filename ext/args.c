/*
** Parsing CREATE VIRTUAL TABLE arguments, in the manner of SQLite's csv extension: each argument is
** name=value, white space around either is ignored, and the value may be quoted with '', "" or
** `` (doubled quotes inside stand for one) or [] . Unknown, repeated and malformed arguments are
** errors that name the argument.
*/
#include "args.h"
#include "error.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *skip_space(const char *p)
{
    while (isspace((unsigned char)*p))
        p++;
    return p;
}

/* A copy of [start, end) with trailing space removed. */
static char *copy_trimmed(const char *start, const char *end)
{
    while (end > start && isspace((unsigned char)end[-1]))
        end--;
    char *s = malloc((size_t)(end - start) + 1);
    if (!s) return NULL;
    memcpy(s, start, (size_t)(end - start));
    s[end - start] = 0;
    return s;
}

/* Removes one level of SQL quoting in place; returns 0 if a quote is unbalanced. */
static int dequote(char *s)
{
    char open = s[0], close = open == '[' ? ']' : open;
    if (open != '\'' && open != '"' && open != '`' && open != '[') return 1;
    size_t n = strlen(s);
    if (n < 2 || s[n - 1] != close) return 0;
    size_t out = 0;
    for (size_t i = 1; i < n - 1; i++) {
        if (s[i] == close && close != ']') {
            if (s[i + 1] != close || i + 1 >= n - 1) return 0;
            i++;
        }
        s[out++] = s[i];
    }
    s[out] = 0;
    return 1;
}

static int parse_sync(const char *value, mmkv_sync *sync)
{
    if (strcasecmp(value, "full") == 0)
        *sync = MMKV_SYNC_FULL;
    else if (strcasecmp(value, "normal") == 0)
        *sync = MMKV_SYNC_NORMAL;
    else if (strcasecmp(value, "off") == 0)
        *sync = MMKV_SYNC_OFF;
    else
        return 0;
    return 1;
}

/* off, or a whole percentage (a trailing % allowed) within the limits. */
static int parse_autocompact(const char *value, int *pct)
{
    if (strcasecmp(value, "off") == 0) {
        *pct = 0;
        return 1;
    }
    char *end;
    long n = strtol(value, &end, 10);
    if (end == value || !isdigit((unsigned char)*value)) return 0;
    if (*end == '%') end++;
    if (*end || n < MMKV_AUTOCOMPACT_MIN || n > MMKV_AUTOCOMPACT_MAX) return 0;
    *pct = (int)n;
    return 1;
}

int mmkv_args_parse(int argc, const char *const *argv, mmkv_args *args, char **errmsg)
{
    memset(args, 0, sizeof *args);
    args->sync = MMKV_SYNC_FULL;
    args->autocompact = MMKV_AUTOCOMPACT_DEFAULT;
    int have_sync = 0, have_autocompact = 0;
    int rc = MMKV_OK;
    for (int i = 0; i < argc && rc == MMKV_OK; i++) {
        const char *arg = skip_space(argv[i]);
        const char *eq = strchr(arg, '=');
        char *name = eq ? copy_trimmed(arg, eq) : NULL;
        char *value = eq ? copy_trimmed(skip_space(eq + 1), eq + 1 + strlen(eq + 1)) : NULL;
        if (eq && (!name || !value)) {
            rc = mmkv_error(errmsg, MMKV_NOMEM, "out of memory");
        } else if (!eq || !*name) {
            rc = mmkv_error(errmsg, MMKV_ERROR,
                            "mmkv: malformed argument \"%s\": expected name=value", argv[i]);
        } else if (!dequote(value)) {
            rc = mmkv_error(errmsg, MMKV_ERROR, "mmkv: unbalanced quotes in argument \"%s\"",
                            argv[i]);
        } else if (strcasecmp(name, "file") == 0) {
            if (args->file) {
                rc = mmkv_error(errmsg, MMKV_ERROR, "mmkv: duplicate argument \"file\"");
            } else if (!*value) {
                rc = mmkv_error(errmsg, MMKV_ERROR, "mmkv: argument \"file\" needs a path");
            } else {
                args->file = value;
                value = NULL;
            }
        } else if (strcasecmp(name, "sync") == 0) {
            if (have_sync)
                rc = mmkv_error(errmsg, MMKV_ERROR, "mmkv: duplicate argument \"sync\"");
            else if (!parse_sync(value, &args->sync))
                rc = mmkv_error(errmsg, MMKV_ERROR,
                                "mmkv: argument \"sync\" must be full, normal or off, not \"%s\"",
                                value);
            have_sync = 1;
        } else if (strcasecmp(name, "autocompact") == 0) {
            if (have_autocompact)
                rc = mmkv_error(errmsg, MMKV_ERROR, "mmkv: duplicate argument \"autocompact\"");
            else if (!parse_autocompact(value, &args->autocompact))
                rc = mmkv_error(errmsg, MMKV_ERROR,
                                "mmkv: argument \"autocompact\" must be off or a percentage of "
                                "garbage from %d to %d (default %d), not \"%s\"",
                                MMKV_AUTOCOMPACT_MIN, MMKV_AUTOCOMPACT_MAX,
                                MMKV_AUTOCOMPACT_DEFAULT, value);
            have_autocompact = 1;
        } else {
            rc = mmkv_error(errmsg, MMKV_ERROR, "mmkv: unknown argument \"%s\"", name);
        }
        free(name);
        free(value);
    }
    if (rc != MMKV_OK) mmkv_args_free(args);
    return rc;
}

void mmkv_args_free(mmkv_args *args)
{
    free(args->file);
    args->file = NULL;
}
