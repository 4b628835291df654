/*
** The data file: creation, validation, meta slots and records. The format is in format.h.
*/
#include "log.h"
#include "crc32c.h"
#include "error.h"
#include "failpoint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static uint64_t random_u64(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        v = ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    }
    return v ? v : 1;
}

void mmkv_meta_seal(mmkv_meta *meta)
{
    meta->magic = MMKV_META_MAGIC;
    if (meta->log_start < MMKV_DATA_START) meta->log_start = MMKV_DATA_START;
    meta->flags |= MMKV_META_HAS_START;
    meta->checksum = mmkv_crc32c(0, meta, offsetof(mmkv_meta, checksum));
    meta->start_checksum = mmkv_crc32c(0, meta, offsetof(mmkv_meta, start_checksum));
}

uint64_t mmkv_meta_start(const mmkv_meta *meta)
{
    return (meta->flags & MMKV_META_HAS_START) ? meta->log_start : MMKV_DATA_START;
}

static uint32_t home_checksum(const mmkv_home *home)
{
    return mmkv_crc32c(0, home, offsetof(mmkv_home, checksum));
}

/* Fills a home note naming the database at path (not recorded if it does not fit). */
static void home_fill(mmkv_home *home, uint64_t sequence, uint64_t owner_id, const char *path,
                      uint32_t flags)
{
    memset(home, 0, sizeof *home);
    home->magic = MMKV_HOME_MAGIC;
    home->sequence = sequence;
    home->owner_id = owner_id;
    home->flags = flags;
    size_t len = path ? strlen(path) : 0;
    if (len <= MMKV_HOME_PATH_MAX) {
        home->path_len = (uint32_t)len;
        if (len) memcpy(home->path, path, len);
    }
    home->checksum = home_checksum(home);
}

int mmkv_home_newest(const unsigned char *page, mmkv_home *out)
{
    int best = -1;
    for (int copy = 0; copy < 2; copy++) {
        mmkv_home h;
        memcpy(&h, page + MMKV_HOME_OFFSET(copy), sizeof h);
        if (h.magic == MMKV_HOME_MAGIC && h.checksum == home_checksum(&h) &&
            h.path_len <= MMKV_HOME_PATH_MAX && h.path[h.path_len] == 0 &&
            (best < 0 || h.sequence > out->sequence)) {
            *out = h;
            best = copy;
        }
    }
    return best;
}

int mmkv_log_home(mmkv_log *log, mmkv_home *home)
{
    return mmkv_home_newest(mmkv_map_base(&log->map), home) >= 0;
}

int mmkv_log_write_home(mmkv_log *log, const char *path, uint32_t flags)
{
    mmkv_home old;
    int copy = mmkv_home_newest(mmkv_map_base(&log->map), &old);
    uint64_t sequence = copy < 0 ? 1 : old.sequence + 1;
    copy = copy < 0 ? 0 : copy ^ 1;
    mmkv_home h;
    home_fill(&h, sequence, log->owner_id, path, flags);
    memcpy(mmkv_map_base(&log->map) + MMKV_HOME_OFFSET(copy), &h, sizeof h);
    return mmkv_map_sync_range(&log->map, MMKV_HOME_OFFSET(copy), sizeof h);
}

int mmkv_log_create(const char *path, const mmkv_log_identity *identity, mmkv_sync sync,
                    char **errmsg)
{
    unsigned char page[MMKV_PAGE_SIZE];
    memset(page, 0, sizeof page);
    mmkv_file_header *header = (mmkv_file_header *)page;
    memcpy(header->magic, MMKV_DATA_MAGIC, MMKV_MAGIC_SIZE);
    header->format_version = MMKV_FORMAT_VERSION;
    header->page_size = MMKV_PAGE_SIZE;
    header->file_id = random_u64();
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    header->created_unix_ms = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
    header->owner_id = identity->owner_id;
    header->text_encoding = (uint32_t)identity->text_encoding;
    header->checksum = mmkv_crc32c(0, header, offsetof(mmkv_file_header, checksum));
    mmkv_meta *meta = (mmkv_meta *)(page + MMKV_META_OFFSET(0));
    meta->committed_tail = MMKV_DATA_START;
    meta->txn_start = MMKV_DATA_START;
    mmkv_meta_seal(meta);
    if (identity->owner_id)
        home_fill((mmkv_home *)(page + MMKV_HOME_OFFSET(0)), 1, identity->owner_id, identity->home,
                  0);

    char *aside = NULL;
    if (asprintf(&aside, "%s-new-%llx", path, (unsigned long long)random_u64()) < 0)
        return mmkv_error(errmsg, MMKV_NOMEM, "out of memory");
    int fd;
    int rc = mmkv_file_open(aside, MMKV_OPEN_CREATE_NEW, &fd);
    if (rc != MMKV_OK) {
        rc = mmkv_error(errmsg, MMKV_CANTOPEN, "mmkv: cannot create data file '%s': %s", path,
                        strerror(errno));
        free(aside);
        return rc;
    }
    rc = mmkv_file_write(fd, page, sizeof page, 0);
    if (rc == MMKV_OK) rc = mmkv_file_allocate(fd, MMKV_LOG_INITIAL_SIZE);
    if (rc == MMKV_OK && sync != MMKV_SYNC_OFF) rc = mmkv_file_sync(fd);
    close(fd);
    if (rc == MMKV_OK) {
        /* link() refuses to replace: a file that appeared meanwhile is never overwritten. */
        if (link(aside, path) != 0) rc = access(path, F_OK) == 0 ? MMKV_BUSY : MMKV_CANTOPEN;
    }
    unlink(aside);
    free(aside);
    if (rc == MMKV_OK && sync != MMKV_SYNC_OFF) rc = mmkv_file_sync_dir(path);
    if (rc != MMKV_OK && rc != MMKV_BUSY)
        mmkv_error_os(errmsg, rc, "mmkv: cannot create data file '%s'", path);
    return rc;
}

int mmkv_log_open(mmkv_log *log, int fd, const char *path, int writable, char **errmsg)
{
    memset(log, 0, sizeof *log);
    log->path = path;
    log->map.fd = -1;
    uint64_t size;
    mmkv_file_header header;
    int rc = mmkv_file_size(fd, &size);
    if (rc != MMKV_OK) return mmkv_error_os(errmsg, rc, "mmkv: cannot read '%s'", path);
    if (size < sizeof header || mmkv_file_read(fd, &header, sizeof header, 0) != MMKV_OK ||
        memcmp(header.magic, MMKV_DATA_MAGIC, MMKV_MAGIC_SIZE) != 0)
        return mmkv_error(errmsg, MMKV_NOTADB, "mmkv: '%s' is not an mmkv data file", path);
    if (header.format_version < MMKV_FORMAT_VERSION_OLDEST ||
        header.format_version > MMKV_FORMAT_VERSION)
        return mmkv_error(errmsg, MMKV_NOTADB,
                          "mmkv: '%s' has format version %u; this build reads versions %u to %u",
                          path, header.format_version, MMKV_FORMAT_VERSION_OLDEST,
                          MMKV_FORMAT_VERSION);
    if (header.checksum != mmkv_crc32c(0, &header, offsetof(mmkv_file_header, checksum)))
        return mmkv_error(errmsg, MMKV_CORRUPT,
                          "mmkv: '%s' is damaged: its file header fails its checksum", path);
    if (header.page_size != MMKV_PAGE_SIZE || size < MMKV_DATA_START)
        return mmkv_error(errmsg, MMKV_CORRUPT, "mmkv: '%s' is damaged: file is truncated", path);
    /* Checksummed, so written so: by a build that knows an encoding this one does not. */
    if (header.text_encoding > MMKV_TEXT_UTF16BE)
        return mmkv_error(errmsg, MMKV_NOTADB,
                          "mmkv: '%s' names text encoding %u; this build knows 1 to %u (UTF-8, "
                          "UTF-16le, UTF-16be)",
                          path, header.text_encoding, MMKV_TEXT_UTF16BE);
    log->file_id = header.file_id;
    log->owner_id = header.owner_id;
    log->format_version = header.format_version;
    log->text_encoding = header.text_encoding ? (int)header.text_encoding : MMKV_TEXT_UTF8;
    rc = mmkv_map_init(&log->map, fd, MMKV_LOG_MIN_RESERVE, writable);
    if (rc != MMKV_OK) {
        log->map.fd = -1;
        return mmkv_map_error(&log->map, errmsg, rc, "data file", path);
    }
    mmkv_meta meta;
    int slot;
    /* A file whose commits skipped their syncs, or whose database owns it (and which does not
    ** sync its meta slots), may have lost both to a power cut: recovery rebuilds them. */
    if (mmkv_log_meta(log, &meta, &slot, NULL) == MMKV_CORRUPT &&
        (log->owner_id != 0 || mmkv_log_notice(log, NULL)))
        return MMKV_OK;
    return mmkv_log_meta(log, &meta, &slot, errmsg);
}

static uint32_t notice_checksum(const mmkv_notice *notice)
{
    return mmkv_crc32c(0, notice, offsetof(mmkv_notice, checksum));
}

/* A note of page 0 kept in two copies (the unsynced-commits notice, the start note): where its
** copies are and what its magic is. */
typedef struct note_kind {
    uint32_t offset[2];
    uint64_t magic;
} note_kind;

static const note_kind unsynced_notice = {{MMKV_NOTICE_OFFSET(0), MMKV_NOTICE_OFFSET(1)},
                                          MMKV_NOTICE_MAGIC};
static const note_kind start_note = {{MMKV_START_NOTE_OFFSET(0), MMKV_START_NOTE_OFFSET(1)},
                                     MMKV_START_NOTE_MAGIC};

/* The newest intact copy of a note, or -1. */
static int newest_note(mmkv_log *log, const note_kind *kind, mmkv_notice *out)
{
    int best = -1;
    for (int copy = 0; copy < 2; copy++) {
        mmkv_notice n;
        memcpy(&n, mmkv_map_base(&log->map) + kind->offset[copy], sizeof n);
        if (n.magic == kind->magic && n.checksum == notice_checksum(&n) &&
            (best < 0 || n.sequence > out->sequence)) {
            *out = n;
            best = copy;
        }
    }
    return best;
}

/* Writes the note's value durably into the copy not holding the newest. */
static int write_note(mmkv_log *log, const note_kind *kind, uint64_t value)
{
    mmkv_notice n;
    int copy = newest_note(log, kind, &n);
    uint64_t sequence = copy < 0 ? 1 : n.sequence + 1;
    copy = copy < 0 ? 0 : copy ^ 1;
    memset(&n, 0, sizeof n);
    n.magic = kind->magic;
    n.sequence = sequence;
    n.durable_tail = value;
    n.checksum = notice_checksum(&n);
    memcpy(mmkv_map_base(&log->map) + kind->offset[copy], &n, sizeof n);
    return mmkv_map_sync_range(&log->map, kind->offset[copy], sizeof n);
}

int mmkv_log_notice(mmkv_log *log, uint64_t *durable_tail)
{
    mmkv_notice n;
    if (newest_note(log, &unsynced_notice, &n) < 0) return 0;
    if (durable_tail) *durable_tail = n.durable_tail;
    return 1;
}

int mmkv_log_write_notice(mmkv_log *log, uint64_t durable_tail)
{
    return write_note(log, &unsynced_notice, durable_tail);
}

uint64_t mmkv_log_reclaimed_start(mmkv_log *log)
{
    mmkv_notice n;
    if (newest_note(log, &start_note, &n) < 0) return MMKV_DATA_START;
    if (n.durable_tail < MMKV_DATA_START || n.durable_tail % MMKV_RECORD_ALIGN) return MMKV_DATA_START;
    return n.durable_tail;
}

int mmkv_log_write_reclaimed_start(mmkv_log *log, uint64_t start)
{
    return write_note(log, &start_note, start);
}

static void record_seal(unsigned char *p, uint64_t at)
{
    mmkv_record_header *record = (mmkv_record_header *)p;
    uint64_t used = sizeof *record + (uint64_t)record->key_len + record->value_len;
    record->checksum =
        mmkv_record_crc(at, p + sizeof record->checksum, used - sizeof record->checksum);
}

void mmkv_log_mark_txn_end(mmkv_log *log, uint64_t offset, int end)
{
    unsigned char *p = mmkv_map_base(&log->map) + offset; /* our own record: mapped */
    mmkv_record_header *record = (mmkv_record_header *)p;
    record->flags =
        (uint8_t)(end ? record->flags | MMKV_RECORD_TXN_END : record->flags & ~MMKV_RECORD_TXN_END);
    record_seal(p, offset);
}

int mmkv_log_write_pad(mmkv_log *log, uint64_t at, uint64_t end, uint64_t txid)
{
    int rc = mmkv_map_extend(&log->map, end);
    if (rc != MMKV_OK) return rc;
    unsigned char *base = mmkv_map_base(&log->map); /* after the extend: it covers end */
    while (at < end) {
        uint64_t n = end - at;
        if (n - sizeof(mmkv_record_header) > MMKV_MAX_PAD_VALUE) {
            n = sizeof(mmkv_record_header) + MMKV_MAX_PAD_VALUE;
            if (end - at - n < sizeof(mmkv_record_header)) n -= sizeof(mmkv_record_header);
        }
        unsigned char *p = base + at;
        memset(p, 0, n);
        mmkv_record_header *record = (mmkv_record_header *)p;
        record->key_type = MMKV_BLOB;
        record->value_type = MMKV_BLOB;
        record->flags = MMKV_RECORD_PAD | (at + n == end ? MMKV_RECORD_TXN_END : 0);
        record->value_len = (uint32_t)(n - sizeof *record);
        record->txid = txid;
        record_seal(p, at);
        at += n;
    }
    return MMKV_OK;
}

void mmkv_log_close(mmkv_log *log)
{
    mmkv_map_release(&log->map);
}

#define META_READ_ATTEMPTS 64

/* A meta slot whose checksum holds and whose fields make sense, wherever the file ends. */
static int meta_intact(const mmkv_meta *m)
{
    if (m->magic != MMKV_META_MAGIC ||
        m->checksum != mmkv_crc32c(0, m, offsetof(mmkv_meta, checksum)))
        return 0;
    /* A slot written before format version 3 has zeros past its first 64 bytes. */
    if ((m->flags & MMKV_META_HAS_START) &&
        (m->start_checksum != mmkv_crc32c(0, m, offsetof(mmkv_meta, start_checksum)) ||
         m->log_start < MMKV_DATA_START || m->log_start % MMKV_RECORD_ALIGN != 0 ||
         m->log_start > m->committed_tail))
        return 0;
    return m->committed_tail >= MMKV_DATA_START && m->committed_tail % MMKV_RECORD_ALIGN == 0 &&
           m->committed_tail <= MMKV_MAX_FILE_SIZE && m->txn_start >= MMKV_DATA_START &&
           m->txn_start <= m->committed_tail;
}

/*
** The newest intact meta slot is the committed state. A torn write (the other slot's checksum
** failing) leaves the previous commit in force; but a committed tail past the end of the file means
** the file lost committed records, which is reported, never quietly replaced by the older commit.
*/
int mmkv_log_meta(mmkv_log *log, mmkv_meta *meta, int *slot, char **errmsg)
{
    int best = -1;
    mmkv_meta copies[2];
    /* A reader descheduled between its two copies can meet both slots half written, by two
    ** commits in turn: look again a few times before calling the file damaged. */
    for (int attempt = 0; attempt < META_READ_ATTEMPTS && best < 0; attempt++) {
        for (int i = 0; i < 2; i++) {
            /* Copy first: a writer may be filling the other slot right now. */
            memcpy(&copies[i], mmkv_map_base(&log->map) + MMKV_META_OFFSET(i), sizeof(mmkv_meta));
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (meta_intact(&copies[i]) && (best < 0 || copies[i].txid > copies[best].txid))
                best = i;
        }
    }
    if (best < 0)
        return mmkv_error(errmsg, MMKV_CORRUPT, "mmkv: '%s' is damaged: no valid meta slot",
                          log->path);
    if (copies[best].committed_tail > mmkv_map_mapped(&log->map)) {
        /* Another process may have grown the file past our mapping: look again. */
        int rc = mmkv_map_refresh(&log->map);
        if (rc != MMKV_OK) return mmkv_map_error(&log->map, errmsg, rc, "data file", log->path);
        if (copies[best].committed_tail > mmkv_map_mapped(&log->map)) {
            uint64_t size = 0;
            mmkv_file_size(log->map.fd, &size);
            return mmkv_error(errmsg, MMKV_CORRUPT,
                              "mmkv: '%s' is damaged: it is truncated (%llu bytes, but commits "
                              "reach %llu)",
                              log->path, (unsigned long long)size,
                              (unsigned long long)copies[best].committed_tail);
        }
    }
    *meta = copies[best];
    *slot = best;
    return MMKV_OK;
}

int mmkv_log_write_meta(mmkv_log *log, int slot, const mmkv_meta *meta, int sync)
{
    unsigned char *at = mmkv_map_base(&log->map) + MMKV_META_OFFSET(slot);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(at, meta, sizeof *meta);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    if (!sync) return MMKV_OK;
    int rc = mmkv_failpoint("between-meta-syncs");
    return rc == MMKV_OK ? mmkv_map_sync_range(&log->map, MMKV_META_OFFSET(slot), sizeof *meta)
                         : rc;
}

int mmkv_log_write_record(mmkv_log *log, uint64_t at, const mmkv_datum *key,
                          const mmkv_datum *value, int flags, uint64_t txid, uint64_t prev_offset,
                          uint64_t *size_out)
{
    uint64_t size = mmkv_record_size(key->len, value->len);
    if (at + size > MMKV_MAX_FILE_SIZE) return MMKV_FULL;
    int rc = mmkv_map_extend(&log->map, at + size);
    if (rc != MMKV_OK) return rc;
    unsigned char *p = mmkv_map_base(&log->map) + at; /* after the extend: it covers the record */
    mmkv_record_header *record = (mmkv_record_header *)p;
    record->key_type = (uint8_t)key->type;
    record->value_type = (uint8_t)value->type;
    record->flags = (uint8_t)flags;
    record->reserved = 0;
    record->key_len = key->len;
    record->value_len = value->len;
    record->txid = txid;
    record->prev_offset = prev_offset;
    unsigned char *body = p + sizeof *record;
    if (key->len) memcpy(body, key->bytes, key->len);
    if (value->len) memcpy(body + key->len, value->bytes, value->len);
    uint64_t used = sizeof *record + (uint64_t)key->len + value->len;
    memset(p + used, 0, size - used);
    record_seal(p, at);
    *size_out = size;
    return MMKV_OK;
}

static int valid_type(int type, int allow_null)
{
    return (type >= MMKV_INTEGER && type <= MMKV_BLOB) || (allow_null && type == MMKV_NULL);
}

static int valid_length(int type, uint32_t len)
{
    if (type == MMKV_INTEGER || type == MMKV_FLOAT) return len == 8;
    if (type == MMKV_NULL) return len == 0;
    return 1;
}

int mmkv_log_record(mmkv_log *log, uint64_t offset, uint64_t limit, mmkv_record *record)
{
    uint64_t mapped = mmkv_map_mapped(&log->map);
    if (limit > mapped) limit = mapped;
    if (offset < MMKV_DATA_START || offset % MMKV_RECORD_ALIGN != 0 ||
        offset + sizeof(mmkv_record_header) > limit)
        return 0;
    /* The base after `mapped`: the view it names holds every offset below what was read. */
    const unsigned char *base = mmkv_map_base(&log->map);
    mmkv_record_header *h = &record->header;
    memcpy(h, base + offset, sizeof *h);
    if (!valid_type(h->key_type, 0) || !valid_type(h->value_type, 1) ||
        !valid_length(h->key_type, h->key_len) || !valid_length(h->value_type, h->value_len) ||
        offset + mmkv_record_size(h->key_len, h->value_len) > limit)
        return 0;
    record->offset = offset;
    record->bytes = base + offset;
    return 1;
}

uint32_t mmkv_record_crc(uint64_t offset, const void *after_checksum, size_t len)
{
    return mmkv_crc32c(mmkv_crc32c(0, &offset, sizeof offset), after_checksum, len);
}

int mmkv_record_checksum_ok(const mmkv_record *record)
{
    const mmkv_record_header *h = &record->header;
    uint64_t used = sizeof *h + (uint64_t)h->key_len + h->value_len;
    size_t skip = sizeof h->checksum;
    return h->checksum == mmkv_record_crc(record->offset, record->bytes + skip, used - skip);
}

void mmkv_record_key(const mmkv_record *record, mmkv_datum *key)
{
    key->type = record->header.key_type;
    key->len = record->header.key_len;
    key->bytes = record->bytes + sizeof(mmkv_record_header);
}

void mmkv_record_value(const mmkv_record *record, mmkv_datum *value)
{
    value->type = record->header.value_type;
    value->len = record->header.value_len;
    value->bytes = record->bytes + sizeof(mmkv_record_header) + record->header.key_len;
}
