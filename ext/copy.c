/*
** Copies of data files, for backups: a table's log copied into a new data file of its own, while
** writers go on. See mmkv.h ("Copies").
**
** Why a copy can be made without a lock: bytes of a log below a committed tail are never
** rewritten (format.h), so the records up to the tail a reader of the commit reads can be copied
** while writers append past it, and a later call copies only what was appended since. A record's
** checksum covers its own offset, so the copy keeps every record where it was, byte for byte from
** the log's start (format.h, START), pads, tombstones and old versions included; below the start
** the copy is a hole, as the source may be. Compaction may give back bytes of an earlier call's
** state while it is copied (no lock is held between calls), but only bytes below the start of a
** later state, and the copy is sealed at the last state copied, whose start is at least that: what
** the copy took of them, zeros or not, lies below its own start and is never read.
**
** What the copy says about itself is its own: a new file header (a new file id and owner id, the
** source's text encoding), a home note naming the copy's database, and both meta slots naming the
** state copied, with no SALVAGED flag and no unsynced-commits notice, since every byte of it is
** made durable before the copy is done. Which state that is: what a reader of the database's
** commit record reads in the source (mmkv_engine_effective). That is the record itself, also where
** the source's meta slots lag it (its records were made durable before the database committed);
** where salvage left the log short of the record, the meta slot's state, with the log's counts,
** which is what the source's readers see. The copy's database records that same state.
**
** Order of finishing: the records, then the meta slots, then a sync of the file and its directory;
** only then is the index built, by opening the copy through the engine as any reader would.
*/
#include "engine.h"
#include "error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Bytes written per call: large enough for the file system to stream, small enough that a copy
** never asks the kernel for one huge write out of the mapping. */
#define COPY_CHUNK_BYTES ((uint64_t)8 << 20)
/* The copy is synced whenever this much more was written: a file system that flushes every file's
** dirty data at a commit (ext4's data=ordered) would otherwise make the next fsync of a writer of
** the source wait for the whole copy. */
#define COPY_SYNC_BYTES ((uint64_t)16 << 20)

struct mmkv_copy {
    mmkv_conn *source; /* the source, opened as a reader: shares this process's engine for it */
    char *target_path;
    int target_fd;
    int made; /* the target data file is ours: removed unless the copy is finished */
    uint64_t target_owner;
    char *user;
    uint64_t copied_to; /* the target holds the source's log up to here (from its start) */
    uint64_t synced_to; /* and those below this are durable */
    int have_state;
    mmkv_commit state; /* the state those bytes hold (mmkv_copy_to) */
    int finished;      /* sealed: the target stays */
};

int mmkv_copy_open(const char *source_path, const char *target_path,
                   const mmkv_copy_options *options, mmkv_copy **out, char **errmsg)
{
    *out = NULL;
    mmkv_copy *copy = calloc(1, sizeof *copy);
    if (!copy) return mmkv_error(errmsg, MMKV_NOMEM, "out of memory");
    copy->target_fd = -1;
    copy->target_owner = options->target_owner;
    copy->target_path = strdup(target_path);
    copy->user = strdup(options->user ? options->user : "a copy");
    if (!copy->target_path || !copy->user) {
        mmkv_copy_close(copy);
        return mmkv_error(errmsg, MMKV_NOMEM, "out of memory");
    }
    mmkv_open_options source_options = {.sync = MMKV_SYNC_FULL,
                                        .owner_id = options->source_owner,
                                        .must_exist = 1,
                                        .user = copy->user,
                                        .committed = options->source_committed,
                                        .redo = options->source_redo};
    int rc = mmkv_open(source_path, &source_options, &copy->source, errmsg);
    mmkv_log_identity identity = {options->target_owner, 0, options->target_home};
    if (rc == MMKV_OK) {
        identity.text_encoding = mmkv_text_encoding(copy->source);
        rc = mmkv_log_create(target_path, &identity, MMKV_SYNC_FULL, errmsg);
        if (rc == MMKV_BUSY)
            rc = mmkv_error(errmsg, MMKV_ERROR,
                            "mmkv: cannot make the copy's data file '%s': a file of that name "
                            "exists (remove it, or copy to another path)",
                            target_path);
        copy->made = rc == MMKV_OK;
    }
    if (rc == MMKV_OK) {
        rc = mmkv_file_open(target_path, MMKV_OPEN_EXISTING, &copy->target_fd);
        if (rc != MMKV_OK)
            rc = mmkv_error(errmsg, rc, "mmkv: cannot open the copy's data file '%s': %s",
                            target_path, strerror(errno));
    }
    if (rc != MMKV_OK) {
        mmkv_copy_close(copy);
        return rc;
    }
    *out = copy;
    return MMKV_OK;
}

int mmkv_copy_to(mmkv_copy *copy, const mmkv_commit *recorded, mmkv_commit *copied, char **errmsg)
{
    mmkv_engine *e = copy->source->engine;
    mmkv_commit state;
    mmkv_commit_effective(e, recorded, &state);
    if (state.tail < copy->copied_to)
        return mmkv_error(errmsg, MMKV_CORRUPT,
                          "mmkv: the log of '%s' went back from byte %llu to %llu during its copy",
                          e->data_path, (unsigned long long)copy->copied_to,
                          (unsigned long long)state.tail);
    int rc = mmkv_engine_cover(e, state.tail, errmsg);
    if (rc != MMKV_OK) return rc;
    /* From the log's start: the bytes below it may have been given back (format.h, START), and
    ** the copy leaves them a hole too. */
    uint64_t start = state.start > MMKV_DATA_START ? state.start : MMKV_DATA_START;
    uint64_t from = copy->copied_to > start ? copy->copied_to : start;
    if (state.tail > from &&
        (rc = mmkv_file_allocate_range(copy->target_fd, from, state.tail - from)) != MMKV_OK)
        return mmkv_error(errmsg, rc,
                          "mmkv: cannot grow the copy's data file '%s' to %llu bytes: %s",
                          copy->target_path, (unsigned long long)state.tail, strerror(errno));
    for (uint64_t at = from; at < state.tail;) {
        uint64_t n = state.tail - at < COPY_CHUNK_BYTES ? state.tail - at : COPY_CHUNK_BYTES;
        /* Below the committed tail: mapped (mmkv_engine_cover), and never rewritten. */
        const unsigned char *base = mmkv_map_base(&e->log.map);
        rc = mmkv_file_write(copy->target_fd, base + at, (size_t)n, at);
        at += n;
        if (rc == MMKV_OK && at - copy->synced_to >= COPY_SYNC_BYTES) {
            rc = mmkv_file_sync(copy->target_fd);
            copy->synced_to = at;
        }
        if (rc != MMKV_OK)
            return mmkv_error(errmsg, rc, "mmkv: cannot write the copy's data file '%s': %s",
                              copy->target_path, strerror(errno));
    }
    copy->copied_to = state.tail;
    copy->state = state;
    copy->have_state = 1;
    if (copied) *copied = state;
    return MMKV_OK;
}

int mmkv_copy_finish(mmkv_copy *copy, char **errmsg)
{
    if (!copy->have_state)
        return mmkv_error(errmsg, MMKV_MISUSE, "mmkv: a copy finished before anything was copied");
    mmkv_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.txid = copy->state.txid;
    meta.committed_tail = copy->state.tail;
    meta.live_count = copy->state.live_count;
    meta.record_count = copy->state.record_count;
    meta.garbage_bytes = copy->state.garbage_bytes;
    meta.txn_start = copy->state.tail;
    meta.log_start = copy->state.start;
    meta.compactions = copy->state.compactions;
    mmkv_meta_seal(&meta);
    int rc = MMKV_OK;
    for (int slot = 0; slot < 2 && rc == MMKV_OK; slot++)
        rc = mmkv_file_write(copy->target_fd, &meta, sizeof meta, MMKV_META_OFFSET(slot));
    if (rc == MMKV_OK) rc = mmkv_file_sync(copy->target_fd);
    if (rc == MMKV_OK) rc = mmkv_file_sync_dir(copy->target_path);
    if (rc != MMKV_OK)
        return mmkv_error(errmsg, rc, "mmkv: cannot write the copy's data file '%s': %s",
                          copy->target_path, strerror(errno));
    /* The engine opens its own descriptor: ours goes first. */
    close(copy->target_fd);
    copy->target_fd = -1;
    mmkv_close(copy->source);
    copy->source = NULL;
    /* Opened alone, the engine finds no index and builds one from the log, checking every record's
    ** checksum; the last close leaves it clean, so that the copy's tables open at once. */
    mmkv_open_options options = {.sync = MMKV_SYNC_FULL,
                                 .owner_id = copy->target_owner,
                                 .must_exist = 1,
                                 .user = copy->user};
    mmkv_conn *target = NULL;
    rc = mmkv_open(copy->target_path, &options, &target, errmsg);
    if (rc != MMKV_OK) return rc;
    /* Its bytes below the start are a hole: the start note says so, for salvage (format.h). */
    uint64_t start = copy->state.start > MMKV_DATA_START ? copy->state.start : MMKV_DATA_START;
    if (start > MMKV_DATA_START) rc = mmkv_log_write_reclaimed_start(&target->engine->log, start);
    mmkv_close(target);
    if (rc != MMKV_OK)
        return mmkv_error(errmsg, rc, "mmkv: cannot write the copy's data file '%s': %s",
                          copy->target_path, strerror(errno));
    copy->finished = 1;
    return MMKV_OK;
}

void mmkv_copy_close(mmkv_copy *copy)
{
    if (!copy) return;
    if (copy->source) mmkv_close(copy->source);
    if (copy->target_fd >= 0) close(copy->target_fd);
    if (copy->made && !copy->finished) mmkv_remove_files(copy->target_path, NULL);
    free(copy->target_path);
    free(copy->user);
    free(copy);
}

int mmkv_path_publish(const char *built, const char *final_path, char **errmsg)
{
    /* link() never replaces a file: one that appeared meanwhile stays as it was. */
    if (link(built, final_path) != 0) {
        if (errno == EEXIST)
            return mmkv_error(errmsg, MMKV_ERROR, "mmkv: '%s' appeared while the copy was made",
                              final_path);
        return mmkv_error(errmsg, MMKV_IOERR, "mmkv: cannot give '%s' the name '%s': %s", built,
                          final_path, strerror(errno));
    }
    if (unlink(built) != 0 && errno != ENOENT)
        return mmkv_error(errmsg, MMKV_IOERR, "mmkv: cannot remove the name '%s': %s", built,
                          strerror(errno));
    if (mmkv_file_sync_dir(final_path) != MMKV_OK)
        return mmkv_error(errmsg, MMKV_IOERR, "mmkv: cannot sync the directory of '%s': %s",
                          final_path, strerror(errno));
    return MMKV_OK;
}
