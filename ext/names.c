/*
** The files' names: deleting, renaming and linking a data file with its index, and keeping the
** process's engines told of a new name.
*/
#include "engine.h"
#include "error.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define INDEX_SUFFIX "-index"

/* ---- the files' names ---- */

static int unlink_if_present(const char *path)
{
    return unlink(path) == 0 || errno == ENOENT ? MMKV_OK : MMKV_IOERR;
}

static char *index_path_of(const char *data_path)
{
    char *index_path = NULL;
    return asprintf(&index_path, "%s%s", data_path, INDEX_SUFFIX) < 0 ? NULL : index_path;
}

int mmkv_remove_files(const char *data_path, char **errmsg)
{
    char *index_path = index_path_of(data_path);
    if (!index_path) return mmkv_error(errmsg, MMKV_NOMEM, "out of memory");
    int rc = unlink_if_present(data_path);
    if (rc == MMKV_OK) rc = unlink_if_present(index_path);
    if (rc != MMKV_OK)
        mmkv_error(errmsg, rc, "mmkv: cannot delete '%s': %s", data_path, strerror(errno));
    free(index_path);
    return rc;
}

/* A second name for one file; an index already under the new name is stale and goes. */
static int link_pair(const char *old_data, const char *old_index, const char *new_data,
                     const char *new_index, char **errmsg)
{
    if (link(old_data, new_data) != 0) {
        if (errno == EEXIST)
            return mmkv_error(errmsg, MMKV_ERROR, "mmkv: cannot use the name '%s': a file of "
                              "that name exists", new_data);
        return mmkv_error(errmsg, MMKV_IOERR, "mmkv: cannot give '%s' the name '%s': %s",
                          old_data, new_data, strerror(errno));
    }
    unlink(new_index);
    if (link(old_index, new_index) != 0 && errno != ENOENT) {
        /* derived data: without it under the new name, the index is rebuilt there */
    }
    return MMKV_OK;
}

int mmkv_link_files(const char *data_path, const char *new_data_path, char **errmsg)
{
    char *old_index = index_path_of(data_path), *new_index = index_path_of(new_data_path);
    int rc = old_index && new_index
                 ? link_pair(data_path, old_index, new_data_path, new_index, errmsg)
                 : mmkv_error(errmsg, MMKV_NOMEM, "out of memory");
    free(old_index);
    free(new_index);
    return rc;
}

int mmkv_rename_files(const char *old_data_path, const char *new_data_path, char **errmsg)
{
    /* A link and an unlink rather than rename(2), which would replace a file of the new name. */
    int rc = mmkv_link_files(old_data_path, new_data_path, errmsg);
    if (rc != MMKV_OK) return rc;
    rc = mmkv_remove_files(old_data_path, errmsg);
    if (rc == MMKV_OK) mmkv_registry_rename(old_data_path, new_data_path);
    return rc;
}

int mmkv_drop_other_names(const char *data_path, const char *prefix, const char *suffix)
{
    struct stat own;
    if (stat(data_path, &own) != 0 || own.st_nlink < 2) return 0;
    char *dir_copy = strdup(data_path);
    if (!dir_copy) return 0;
    const char *slash = strrchr(data_path, '/');
    if (slash)
        dir_copy[slash - data_path] = 0;
    else
        strcpy(dir_copy, ".");
    DIR *dir = opendir(slash && slash == data_path ? "/" : dir_copy);
    int dropped = 0;
    size_t plen = strlen(prefix), slen = strlen(suffix);
    for (struct dirent *entry; dir && (entry = readdir(dir)) != NULL;) {
        const char *name = entry->d_name;
        size_t n = strlen(name);
        if (n <= plen + slen || strncmp(name, prefix, plen) != 0 ||
            strcmp(name + n - slen, suffix) != 0)
            continue;
        char *other = NULL;
        if (asprintf(&other, "%s/%s", slash ? dir_copy : ".", name) < 0) break;
        struct stat st;
        if (strcmp(other, data_path) != 0 && stat(other, &st) == 0 && st.st_dev == own.st_dev &&
            st.st_ino == own.st_ino && mmkv_drop_name(other, data_path, NULL) == MMKV_OK)
            dropped++;
        free(other);
    }
    if (dir) closedir(dir);
    free(dir_copy);
    return dropped;
}

int mmkv_drop_name(const char *data_path, const char *remaining_path, char **errmsg)
{
    struct stat a, b;
    if (stat(data_path, &a) != 0) return MMKV_OK;
    if (stat(remaining_path, &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino)
        return mmkv_error(errmsg, MMKV_ERROR,
                          "mmkv: '%s' is not another name of '%s'; it was left in place",
                          data_path, remaining_path);
    int rc = mmkv_remove_files(data_path, errmsg);
    if (rc == MMKV_OK) mmkv_registry_rename(data_path, remaining_path);
    return rc;
}
