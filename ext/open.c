/*
** Opening and closing: one engine per file per process (a registry), shared by every connection
** that opens the file, because closing any descriptor drops the process's POSIX locks and one
** mapping serves all. An open checks whose the file is before it writes anything, recovers the
** index if it is the first opener (recovery.c), and brings the log and index up to the commit
** its database records (commit.c). Read-only opens write nothing (READ-ONLY below).
*/
#include "engine.h"
#include "crc32c.h"
#include "error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define INDEX_SUFFIX "-index"

static pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static mmkv_engine *registry;

/* ---- opening and closing ---- */

static void engine_free(mmkv_engine *e)
{
    if (mmkv_map_base(&e->index.map)) mmkv_index_unmap(&e->index);
    if (mmkv_map_base(&e->log.map)) mmkv_log_close(&e->log);
    if (e->index.map.fd >= 0) close(e->index.map.fd);
    if (e->log.map.fd >= 0) close(e->log.map.fd);
    pthread_mutex_destroy(&e->mutex);
    pthread_mutex_destroy(&e->reclaim_mutex);
    free(e->txn.written);
    free(e->txn.forgotten);
    free(e->txn.savepoints);
    free(e->data_path);
    free(e->index_path);
    free(e->user);
    free(e);
}

static int engine_new(const char *data_path, const char *user, mmkv_engine **out)
{
    mmkv_engine *e = calloc(1, sizeof *e);
    if (!e) return MMKV_NOMEM;
    e->log.map.fd = -1;
    e->index.map.fd = -1;
    pthread_mutex_init(&e->mutex, NULL);
    pthread_mutex_init(&e->reclaim_mutex, NULL);
    e->reclaimed = MMKV_DATA_START;
    e->data_path = strdup(data_path);
    e->user = strdup(user ? user : "a table");
    if (e->data_path && asprintf(&e->index_path, "%s%s", data_path, INDEX_SUFFIX) < 0)
        e->index_path = NULL;
    if (!e->data_path || !e->index_path || !e->user) {
        engine_free(e);
        return MMKV_NOMEM;
    }
    *out = e;
    return MMKV_OK;
}

/* A data file answers to one authority: the database that owns it, or (owner 0) its own meta
** slots. Another database must not take it over, since the two would disagree on what is
** committed. Checked before anything is written to the file. */
static int check_owner(mmkv_engine *e, const mmkv_open_options *options, char **errmsg)
{
    uint64_t have = e->log.owner_id, want = options->owner_id;
    if (have == want) return MMKV_OK;
    mmkv_home home;
    int known = have && mmkv_log_home(&e->log, &home) && home.path_len;
    if (want == 0)
        return mmkv_error(errmsg, MMKV_ERROR,
                          "mmkv: data file '%s' belongs to %s%s%s: open it from that database's "
                          "table",
                          e->data_path, known ? "the database '" : "a database",
                          known ? home.path : "", known ? "'" : "");
    if (have == 0)
        return mmkv_error(errmsg, MMKV_ERROR,
                          "mmkv: data file '%s' belongs to no database (it is shared by in-memory "
                          "databases); it cannot be used from this one",
                          e->data_path);
    return mmkv_error(errmsg, MMKV_ERROR,
                      "mmkv: data file '%s' belongs to another table%s%s%s; it cannot be used "
                      "from this one",
                      e->data_path, known ? " (of the database '" : "", known ? home.path : "",
                      known ? "')" : "");
}

static const char *encoding_name(int encoding)
{
    return encoding == MMKV_TEXT_UTF16LE   ? "UTF-16le"
           : encoding == MMKV_TEXT_UTF16BE ? "UTF-16be"
                                           : "UTF-8";
}

/* TEXT is kept byte for byte in the file's encoding, which its creator chose. Text converted to
** another encoding would not come back byte for byte (lone surrogates, noncharacters and bytes
** that are not UTF-8 turn into U+FFFD), and distinct keys would collide: a file is used only in
** its own encoding (an in-memory database of another encoding sharing it, or a copy of a database
** reloaded in another one, is refused). A file of mmkv 0.1 (format version 1) kept all text in
** UTF-8 whatever its database's encoding, and is still used so, SQLite converting at the edge as
** it did then. */
static int check_encoding(const mmkv_engine *e, const mmkv_open_options *options, char **errmsg)
{
    int want = options->text_encoding; /* 0: the opener reads no text (a copy) */
    if (!want || e->log.text_encoding == want || e->log.format_version < 2) return MMKV_OK;
    const char *have = encoding_name(e->log.text_encoding);
    return mmkv_error(errmsg, MMKV_ERROR,
                      "mmkv: data file '%s' holds %s text and cannot be used from a %s database "
                      "(text would not round-trip between the two encodings): use it from a %s "
                      "database",
                      e->data_path, have, encoding_name(want), have);
}

/*
** REDO. An owning database may keep the records of its recent small commits in its own
** transaction instead of having each commit sync them (the SQL face's redo, commit_record.h):
** they are then durable exactly when the database's commit is, and a power cut can have taken
** them from the data file while the database kept them. The first open writes back whatever
** differs, before anything reads the log, and syncs it. Bytes below the log's start are left
** alone (given back, or about to be). Doing it again after a second cut writes the same bytes.
*/
static int redo_range(const mmkv_open_options *options, uint64_t *from, uint64_t *to)
{
    const mmkv_redo *redo = options->redo;
    if (!redo || !redo->len || !options->committed) return 0;
    uint64_t start = options->committed->start > MMKV_DATA_START ? options->committed->start
                                                                  : MMKV_DATA_START;
    *from = redo->from > start ? redo->from : start;
    *to = redo->from + redo->len;
    return *to > *from;
}

/* Whether the log holds every byte the database kept (read-only opens, which cannot repair). */
static int redo_matches(mmkv_engine *e, const mmkv_open_options *options)
{
    uint64_t from, to;
    if (!redo_range(options, &from, &to)) return 1;
    if (to > mmkv_map_mapped(&e->log.map) && mmkv_map_refresh(&e->log.map) != MMKV_OK) return 0;
    if (to > mmkv_map_mapped(&e->log.map)) return 0;
    const unsigned char *kept = (const unsigned char *)options->redo->bytes + (from - options->redo->from);
    return memcmp(mmkv_map_base(&e->log.map) + from, kept, to - from) == 0;
}

static int redo_write_back(mmkv_engine *e, const mmkv_open_options *options, char **errmsg)
{
    uint64_t from, to, size;
    if (!redo_range(options, &from, &to)) return MMKV_OK;
    /* A file that ends before the kept bytes begin lost more than they can give back: the checks
    ** that follow report it, and no record claims the file may grow to an arbitrary tail. */
    if (mmkv_file_size(e->log.map.fd, &size) != MMKV_OK || size < from) return MMKV_OK;
    int rc = mmkv_map_extend(&e->log.map, to);
    if (rc != MMKV_OK) return mmkv_map_error(&e->log.map, errmsg, rc, "data file", e->data_path);
    unsigned char *log = mmkv_map_base(&e->log.map);
    const unsigned char *kept = (const unsigned char *)options->redo->bytes + (from - options->redo->from);
    if (memcmp(log + from, kept, to - from) == 0) return MMKV_OK;
    memcpy(log + from, kept, to - from);
    rc = mmkv_map_sync_range(&e->log.map, from, to - from);
    if (rc != MMKV_OK)
        return mmkv_error_os(errmsg, rc, "mmkv: cannot write back the records of '%s' its "
                             "database kept", e->data_path);
    return MMKV_OK;
}

/*
** READ-ONLY. A read-only engine (a read-only database, PRAGMA query_only, or files the user cannot
** write) opens its files O_RDONLY, maps them PROT_READ and writes nothing, ever. It uses the index
** on disk if that is clean and reflects exactly the committed state it is told of (taking the
** open lock shared, so that no writer's open rebuilds it under it; writers elsewhere keep it up to
** date as they commit); otherwise it builds an index of its own in memory (a memfd) from the log,
** takes no open lock (so the next writer's open repairs the one on disk), and brings it up to
** each newer commit a reader asks for from the committed records (private_reach).
*/
static int open_private_index(mmkv_engine *e, uint64_t start, uint64_t tail, uint64_t live,
                              char **errmsg)
{
    int fd = memfd_create("mmkv-index", MFD_CLOEXEC);
    if (fd < 0)
        return mmkv_error(errmsg, MMKV_IOERR, "mmkv: cannot make an index in memory for '%s': %s",
                          e->data_path, strerror(errno));
    e->index.map.fd = fd;
    int rc = mmkv_index_map(&e->index, fd, e->index_path, 1);
    if (rc != MMKV_OK)
        return mmkv_map_error(&e->index.map, errmsg, rc, "index in memory", e->data_path);
    if ((rc = mmkv_index_reset(&e->index, e->log.file_id)) != MMKV_OK)
        return mmkv_engine_index_error(errmsg, e, rc);
    rc = mmkv_engine_rebuild_index(e, start, tail, live, errmsg);
    if (rc != MMKV_OK) return rc;
    e->private_index = 1;
    e->private_position = tail;
    e->private_start = start;
    return MMKV_OK;
}

static int open_readonly(mmkv_engine *e, int fd, const mmkv_open_options *options, char **errmsg)
{
    e->readonly = 1;
    int rc = mmkv_log_open(&e->log, fd, e->data_path, 0, errmsg);
    e->log.map.fd = fd;
    if (rc == MMKV_OK && !e->temporary) rc = check_owner(e, options, errmsg);
    if (rc == MMKV_OK) rc = check_encoding(e, options, errmsg);
    if (rc != MMKV_OK) return rc;
    mmkv_meta meta;
    int slot;
    if (mmkv_log_meta(&e->log, &meta, &slot, NULL) != MMKV_OK || mmkv_log_notice(&e->log, NULL) ||
        !redo_matches(e, options))
        return mmkv_error(errmsg, MMKV_READONLY,
                          "mmkv: '%s' needs recovery after a crash or power loss, which a "
                          "read-only connection cannot do: open it once from a connection that "
                          "can write it",
                          e->data_path);
    mmkv_commit state;
    mmkv_commit_from_meta(&meta, &state);
    if (options->committed) state = *options->committed;
    uint64_t tail = state.tail;
    int index_fd;
    if (mmkv_file_open(e->index_path, MMKV_OPEN_READONLY, &index_fd) == MMKV_OK) {
        e->index.map.fd = index_fd;
        int usable = mmkv_lock_wait(fd, MMKV_LOCK_OPEN, 0) == MMKV_OK &&
                     mmkv_index_map(&e->index, index_fd, e->index_path, 0) == MMKV_OK &&
                     mmkv_index_header_usable(&e->index, e->log.file_id, 1) &&
                     mmkv_index_header_of(&e->index)->log_position == tail;
        if (usable) return MMKV_OK;
        mmkv_unlock(fd, MMKV_LOCK_OPEN);
        if (e->index.map.base) mmkv_index_unmap(&e->index);
        close(index_fd);
        e->index.map.fd = -1;
    }
    rc = mmkv_engine_cover(e, tail, errmsg);
    return rc == MMKV_OK ? open_private_index(e, state.start, tail, state.live_count, errmsg) : rc;
}

/* Opens the data file (creating it if absent and asked to), checks whose it is, then opens the
** index and brings it up to date. Nothing is written before the owner is checked. A data file
** that cannot be written is opened read-only. */
static int engine_open_files(mmkv_engine *e, const mmkv_open_options *options, char **errmsg)
{
    int fd;
    int rc = mmkv_file_open(e->data_path,
                           options->readonly ? MMKV_OPEN_READONLY : MMKV_OPEN_EXISTING, &fd);
    if (rc == MMKV_NOTFOUND && !options->readonly && (!options->must_exist || e->temporary)) {
        /* Made durable whatever the sync mode (but for a temporary table's): a file that a power
        ** cut could leave without its header could never be opened again. */
        mmkv_log_identity identity = {options->owner_id, options->text_encoding, options->home};
        if (!identity.text_encoding) identity.text_encoding = MMKV_TEXT_UTF8;
        rc = mmkv_log_create(e->data_path, &identity,
                             e->temporary ? MMKV_SYNC_OFF : MMKV_SYNC_FULL, errmsg);
        if (rc == MMKV_BUSY) rc = MMKV_OK; /* created by someone else meanwhile */
        if (rc != MMKV_OK) return rc;
        rc = mmkv_file_open(e->data_path, MMKV_OPEN_EXISTING, &fd);
    }
    if (rc == MMKV_READONLY && !options->readonly)
        rc = mmkv_file_open(e->data_path, MMKV_OPEN_READONLY, &fd) == MMKV_OK ? MMKV_READONLY
                                                                               : MMKV_CANTOPEN;
    if (rc == MMKV_NOTFOUND)
        return mmkv_error(errmsg, MMKV_CANTOPEN, "mmkv: data file '%s' is missing", e->data_path);
    if (rc != MMKV_OK && rc != MMKV_READONLY)
        return mmkv_error(errmsg, rc, "mmkv: cannot open data file '%s': %s", e->data_path,
                          strerror(errno));
    e->log.map.fd = fd;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return mmkv_error(errmsg, MMKV_IOERR, "mmkv: cannot stat '%s': %s", e->data_path,
                          strerror(errno));
    e->dev = st.st_dev;
    e->ino = st.st_ino;
    if (options->readonly || rc == MMKV_READONLY) return open_readonly(e, fd, options, errmsg);
    rc = mmkv_log_open(&e->log, fd, e->data_path, 1, errmsg);
    e->log.map.fd = fd;
    if (rc == MMKV_OK && !e->temporary) rc = check_owner(e, options, errmsg);
    if (rc == MMKV_OK) rc = check_encoding(e, options, errmsg);
    if (rc == MMKV_OK && !e->temporary) rc = redo_write_back(e, options, errmsg);
    if (rc != MMKV_OK) return rc;

    int index_fd;
    rc = mmkv_file_open(e->index_path, MMKV_OPEN_ALWAYS, &index_fd);
    if (rc != MMKV_OK)
        return mmkv_error(errmsg, rc, "mmkv: cannot open index file '%s': %s", e->index_path,
                          strerror(errno));
    e->index.map.fd = index_fd;

    /* Alone (the open lock is free): repair the index. Otherwise, wait for whoever is repairing
    ** it and share what they made. */
    int alone = mmkv_lock_try(fd, MMKV_LOCK_OPEN, 1) == MMKV_OK;
    if (!alone && (rc = mmkv_lock_wait(fd, MMKV_LOCK_OPEN, 0)) != MMKV_OK)
        return mmkv_error(errmsg, rc, "mmkv: cannot lock '%s': %s", e->data_path,
                          strerror(errno));
    rc = mmkv_index_map(&e->index, index_fd, e->index_path, 1);
    if (rc != MMKV_OK)
        return mmkv_map_error(&e->index.map, errmsg, rc, "index file", e->index_path);
    if (alone && options->committed && !e->temporary)
        rc = mmkv_commit_open_at(e, options->committed, options->sync != MMKV_SYNC_OFF, errmsg);
    if (rc != MMKV_OK) return rc;
    if (alone) {
        rc = mmkv_recover_index(e, errmsg);
        if (rc == MMKV_OK) rc = mmkv_lock_try(fd, MMKV_LOCK_OPEN, 0); /* downgrade */
    } else if (!mmkv_index_header_usable(&e->index, e->log.file_id, 0)) {
        rc = mmkv_error(errmsg, MMKV_CORRUPT,
                        "mmkv: index file '%s' is damaged while another process uses it",
                        e->index_path);
    }
    return rc;
}

/* A clean index must not be ahead of the disk: after commits that skipped their syncs, the log
** and its meta slots are made durable first, and the notice moves its durable tail up. */
static int log_made_durable(mmkv_engine *e, const mmkv_meta *meta)
{
    uint64_t durable;
    if (!mmkv_log_notice(&e->log, &durable)) return 1;
    if (mmkv_map_sync_range(&e->log.map, 0, meta->committed_tail) != MMKV_OK) return 0;
    return durable == meta->committed_tail ||
           mmkv_log_write_notice(&e->log, meta->committed_tail) == MMKV_OK;
}

static void engine_close(mmkv_engine *e)
{
    if (mmkv_map_base(&e->log.map) && mmkv_map_base(&e->index.map) && !e->temporary &&
        mmkv_lock_try(e->log.map.fd, MMKV_LOCK_OPEN, 1) == MMKV_OK) {
        /* The last user anywhere: leave the index clean for the next open. */
        mmkv_meta meta;
        int slot;
        mmkv_index_header *h = mmkv_index_header_of(&e->index);
        int have_meta = mmkv_log_meta(&e->log, &meta, &slot, NULL) == MMKV_OK;
        if (h->state == MMKV_INDEX_IN_USE && have_meta && !h->writer_active &&
            log_made_durable(e, &meta))
            mmkv_index_mark_clean(&e->index, meta.committed_tail);
        /* And the space grown ahead of need goes back: nothing lies past the committed tail, or
        ** past the index's tables, that anyone needs.
        ** A table only read is left as it was. */
        if (have_meta && e->wrote && !h->writer_active) {
            uint64_t page = MMKV_PAGE_SIZE, size;
            uint64_t log_end = (meta.committed_tail + page - 1) / page * page;
            uint64_t index_end = (h->file_end + page - 1) / page * page;
            if (mmkv_file_size(e->log.map.fd, &size) == MMKV_OK && size > log_end)
                mmkv_file_truncate(e->log.map.fd, log_end);
            if (mmkv_file_size(e->index.map.fd, &size) == MMKV_OK && size > index_end)
                mmkv_file_truncate(e->index.map.fd, index_end);
        }
    }
    engine_free(e);
}

static int temporary_path(char **out)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    static unsigned counter;
    unsigned n = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
    return asprintf(out, "%s/mmkv-temp-%ld-%u", dir, (long)getpid(), n) < 0 ? MMKV_NOMEM : MMKV_OK;
}

static void registry_remove(mmkv_engine *e)
{
    mmkv_engine **p = &registry;
    while (*p && *p != e)
        p = &(*p)->next;
    if (*p) *p = e->next;
}

/* The engine this process has open on the file at path for reading and writing (or, readonly,
** for reading only), if any; registry_mutex held. */
static mmkv_engine *registry_find(const char *path, int readonly)
{
    struct stat st;
    if (stat(path, &st) != 0) return NULL;
    for (mmkv_engine *e = registry; e; e = e->next)
        if (e->dev == st.st_dev && e->ino == st.st_ino && e->readonly == readonly) return e;
    return NULL;
}

int mmkv_open(const char *data_path, const mmkv_open_options *options, mmkv_conn **out,
              char **errmsg)
{
    *out = NULL;
    mmkv_conn *conn = calloc(1, sizeof *conn);
    if (!conn) return mmkv_error(errmsg, MMKV_NOMEM, "out of memory");
    conn->sync = options->sync;
    mmkv_engine *e = NULL;
    int rc;
    if (options->temporary) {
        char *path = NULL;
        rc = temporary_path(&path);
        if (rc == MMKV_OK) rc = engine_new(path, options->user, &e);
        if (rc == MMKV_OK) {
            conn->sync = MMKV_SYNC_OFF; /* files that vanish at close need no durability */
            e->temporary = 1;
            e->refcount = 1;
            rc = engine_open_files(e, options, errmsg);
            /* Nobody else may ever open them: the names go now, the files at close. */
            unlink(e->data_path);
            unlink(e->index_path);
        } else {
            mmkv_error(errmsg, rc, "out of memory");
        }
        free(path);
    } else {
        pthread_mutex_lock(&registry_mutex);
        e = registry_find(data_path, options->readonly);
        if (e) {
            rc = check_owner(e, options, errmsg);
            if (rc == MMKV_OK) rc = check_encoding(e, options, errmsg);
            if (rc == MMKV_OK) e->refcount++;
            else
                e = NULL;
        } else {
            rc = engine_new(data_path, options->user, &e);
            if (rc == MMKV_OK)
                rc = engine_open_files(e, options, errmsg);
            else
                mmkv_error(errmsg, rc, "out of memory");
            if (rc == MMKV_OK) {
                e->refcount = 1;
                e->next = registry;
                registry = e;
            }
        }
        pthread_mutex_unlock(&registry_mutex);
    }
    if (rc != MMKV_OK) {
        if (e) engine_free(e);
        free(conn);
        return rc;
    }
    conn->engine = e;
    conn->external = options->owner_id != 0;
    conn->owner_keeps_records = conn->external && options->owner_keeps_records;
    /* The meta slots, and with them the index, behind the commit the database records (a power cut
    ** lost their unsynced write): brought up to it now, so that no read ever has to. */
    if (options->committed && !e->readonly && !e->temporary) {
        mmkv_meta meta;
        int slot;
        if (mmkv_log_meta(&e->log, &meta, &slot, NULL) == MMKV_OK &&
            !(meta.flags & MMKV_META_SALVAGED) && meta.txid < options->committed->txid &&
            (rc = mmkv_commit_catch_up(conn, options->committed)) != MMKV_OK) {
            if (errmsg) {
                free(*errmsg);
                *errmsg = conn->errmsg ? strdup(conn->errmsg) : NULL;
            }
            mmkv_close(conn);
            return rc;
        }
    }
    *out = conn;
    return MMKV_OK;
}

int mmkv_inspect(const char *data_path, mmkv_file_info *info, char **errmsg)
{
    memset(info, 0, sizeof *info);
    struct stat st;
    if (stat(data_path, &st) != 0)
        return errno == ENOENT ? MMKV_NOTFOUND
                               : mmkv_error(errmsg, MMKV_IOERR, "mmkv: cannot stat '%s': %s",
                                            data_path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return mmkv_error(errmsg, MMKV_CANTOPEN, "mmkv: '%s' is not a regular file", data_path);
    info->links = (uint32_t)st.st_nlink;
    unsigned char page[MMKV_DATA_START];
    pthread_mutex_lock(&registry_mutex);
    mmkv_engine *open_here = NULL;
    for (mmkv_engine *e = registry; e; e = e->next)
        if (e->dev == st.st_dev && e->ino == st.st_ino) open_here = e;
    int rc = MMKV_OK, fd = -1;
    if (open_here) {
        snprintf(info->open_by, sizeof info->open_by, "%s", open_here->user);
        memcpy(page, mmkv_map_base(&open_here->log.map), sizeof page);
    } else {
        rc = mmkv_file_open(data_path, MMKV_OPEN_READONLY, &fd);
        if (rc != MMKV_OK)
            rc = mmkv_error(errmsg, rc, "mmkv: cannot open '%s': %s", data_path, strerror(errno));
        memset(page, 0, sizeof page);
        uint64_t size = 0;
        if (rc == MMKV_OK && mmkv_file_size(fd, &size) == MMKV_OK && size >= sizeof page)
            rc = mmkv_file_read(fd, page, sizeof page, 0);
        if (rc != MMKV_OK && fd >= 0)
            rc = mmkv_error(errmsg, rc, "mmkv: cannot read '%s': %s", data_path, strerror(errno));
        if (rc == MMKV_OK) info->open_elsewhere = mmkv_lock_held_elsewhere(fd, MMKV_LOCK_OPEN);
    }
    pthread_mutex_unlock(&registry_mutex);
    if (fd >= 0) close(fd);
    if (rc != MMKV_OK) return rc;
    const mmkv_file_header *header = (const mmkv_file_header *)page;
    if (memcmp(header->magic, MMKV_DATA_MAGIC, MMKV_MAGIC_SIZE) != 0 ||
        header->checksum != mmkv_crc32c(0, header, offsetof(mmkv_file_header, checksum)))
        return mmkv_error(errmsg, MMKV_NOTADB, "mmkv: '%s' is not an mmkv data file", data_path);
    info->file_id = header->file_id;
    info->owner_id = header->owner_id;
    info->format_version = (int)header->format_version;
    info->text_encoding = header->text_encoding ? (int)header->text_encoding : MMKV_TEXT_UTF8;
    mmkv_home home;
    if (mmkv_home_newest(page, &home) >= 0 && home.owner_id == header->owner_id) {
        info->has_home = 1;
        info->home_flags = home.flags;
        memcpy(info->home, home.path, sizeof info->home);
    }
    /* Never committed: an intact meta slot names the empty log, and none names more. (Records
    ** past it are a transaction's that never committed.) */
    int empty = 0, written = 0;
    for (int slot = 0; slot < 2; slot++) {
        const mmkv_meta *m = (const mmkv_meta *)(page + MMKV_META_OFFSET(slot));
        if (m->magic != MMKV_META_MAGIC ||
            m->checksum != mmkv_crc32c(0, m, offsetof(mmkv_meta, checksum)))
            continue;
        if (m->txid == 0 && m->committed_tail == MMKV_DATA_START)
            empty = 1;
        else
            written = 1;
        if (m->txid > info->txid) {
            info->txid = m->txid;
            info->tail = m->committed_tail;
        }
    }
    info->never_committed = empty && !written;
    return MMKV_OK;
}

void mmkv_close(mmkv_conn *conn)
{
    if (!conn) return;
    mmkv_engine *e = conn->engine;
    if (e->txn.owner == conn) mmkv_txn_rollback(conn);
    pthread_mutex_lock(&registry_mutex);
    int last = --e->refcount == 0;
    if (last && !e->temporary) registry_remove(e);
    if (last) engine_close(e);
    pthread_mutex_unlock(&registry_mutex);
    free(conn->errmsg);
    free(conn);
}

const char *mmkv_errmsg(mmkv_conn *conn)
{
    return conn->errmsg ? conn->errmsg : "mmkv: unknown error";
}

const char *mmkv_data_path(mmkv_conn *conn)
{
    return conn->engine->data_path;
}

int mmkv_sole_user(mmkv_conn *conn)
{
    mmkv_engine *e = conn->engine;
    pthread_mutex_lock(&registry_mutex);
    int alone = e->refcount == 1 && !mmkv_lock_held_elsewhere(e->log.map.fd, MMKV_LOCK_OPEN);
    pthread_mutex_unlock(&registry_mutex);
    return alone;
}

int mmkv_readonly(mmkv_conn *conn)
{
    return conn->engine->readonly;
}

int mmkv_text_encoding(mmkv_conn *conn)
{
    return conn->engine->log.text_encoding;
}

/* Engines opened under old_path now go by new_path, in messages and in later renames. */
void mmkv_registry_rename(const char *old_path, const char *new_path)
{
    pthread_mutex_lock(&registry_mutex);
    for (mmkv_engine *e = registry; e; e = e->next) {
        if (strcmp(e->data_path, old_path) != 0) continue;
        char *data = strdup(new_path), *index = NULL;
        if (asprintf(&index, "%s%s", new_path, INDEX_SUFFIX) < 0) index = NULL;
        if (data && index) {
            free(e->data_path);
            free(e->index_path);
            e->data_path = data;
            e->index_path = index;
            e->log.path = data;
            e->index.path = index;
        } else {
            free(data);
            free(index);
        }
    }
    pthread_mutex_unlock(&registry_mutex);
}
