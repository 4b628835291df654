/*
** log.h: the data file, an append-only log of records under two meta slots (format.h).
*/
#ifndef MMKV_LOG_H
#define MMKV_LOG_H

#include "file.h"
#include "format.h"
#include "mmkv.h"

/* The smallest view of a data file's mapping (file.h): room for a new file (64 KiB) to grow a
** thousandfold before it needs a second view, while a process with 1,000 tables open reserves
** 64 GiB for their data files, a small part of a 64-bit address space. */
#define MMKV_LOG_MIN_RESERVE ((uint64_t)64 << 20)
#define MMKV_LOG_INITIAL_SIZE ((uint64_t)64 << 10)
#define MMKV_MAX_KEY_BYTES 0x7fffffffu
#define MMKV_MAX_VALUE_BYTES 0x7fffffffu

typedef struct mmkv_log {
    mmkv_map map;
    const char *path; /* owned by the engine */
    uint64_t file_id;
    uint64_t owner_id;
    uint32_t format_version;
    int text_encoding; /* MMKV_TEXT_UTF8, _UTF16LE or _UTF16BE */
} mmkv_log;

/* What a new data file says about itself: who owns it and how its text is encoded. */
typedef struct mmkv_log_identity {
    uint64_t owner_id; /* 0: its meta slots decide */
    int text_encoding;
    const char *home; /* the owning database's path (owner_id set), for the home note */
} mmkv_log_identity;

/* Creates a new data file atomically (written aside, then linked into place). BUSY if a file of
** that name appeared meanwhile. */
int mmkv_log_create(const char *path, const mmkv_log_identity *identity, mmkv_sync sync,
                    char **errmsg);
/* Opens the data file on fd (mapped for reading only unless writable) and checks its header and
** meta slots. */
int mmkv_log_open(mmkv_log *log, int fd, const char *path, int writable, char **errmsg);
void mmkv_log_close(mmkv_log *log);

/* The newest valid meta slot, and which slot it is. CORRUPT (message set) if neither holds. */
int mmkv_log_meta(mmkv_log *log, mmkv_meta *meta, int *slot, char **errmsg);
/* Writes meta into the given slot; durable before returning if sync is set. */
int mmkv_log_write_meta(mmkv_log *log, int slot, const mmkv_meta *meta, int sync);
/* Seals a meta slot: its magic, its start (4096 if not set) and both checksums. */
void mmkv_meta_seal(mmkv_meta *meta);
/* Where the log of the state a meta slot names begins (format.h, START). */
uint64_t mmkv_meta_start(const mmkv_meta *meta);

/* The home note (format.h, HOME): the newest intact copy in a page-0 image (-1 if none, else the
** copy), in the mapping (1 if present), and written durably into the other copy. */
int mmkv_home_newest(const unsigned char *page, mmkv_home *out);
int mmkv_log_home(mmkv_log *log, mmkv_home *home);
int mmkv_log_write_home(mmkv_log *log, const char *path, uint32_t flags);

/* The unsynced-commits notice (format.h, SALVAGE): 1 if present (and its durable tail), and
** written durably (the copy not holding the newest). */
int mmkv_log_notice(mmkv_log *log, uint64_t *durable_tail);
int mmkv_log_write_notice(mmkv_log *log, uint64_t durable_tail);

/* The start note (format.h, START): the start below which the file's bytes may have been given
** back (4096 if none was written), and that start written durably, before any punching. */
uint64_t mmkv_log_reclaimed_start(mmkv_log *log);
int mmkv_log_write_reclaimed_start(mmkv_log *log, uint64_t start);

static inline uint64_t mmkv_record_size(uint32_t key_len, uint32_t value_len)
{
    uint64_t n = sizeof(mmkv_record_header) + (uint64_t)key_len + value_len;
    return (n + MMKV_RECORD_ALIGN - 1) & ~(uint64_t)(MMKV_RECORD_ALIGN - 1);
}

/* Appends a record at offset `at` (growing the file first). */
int mmkv_log_write_record(mmkv_log *log, uint64_t at, const mmkv_datum *key,
                          const mmkv_datum *value, int flags, uint64_t txid, uint64_t prev_offset,
                          uint64_t *size_out);

/* Sets (end 1) or clears the TXN_END flag of the record at offset, resealing it. */
void mmkv_log_mark_txn_end(mmkv_log *log, uint64_t offset, int end);
/* Fills [at, end) with pad records of transaction txid, the last flagged TXN_END. Both ends are
** 8-aligned and at least a record header apart. */
#define MMKV_MAX_PAD_VALUE ((uint64_t)1 << 30)
int mmkv_log_write_pad(mmkv_log *log, uint64_t at, uint64_t end, uint64_t txid);

/* A record read from the mapping. The header is a copy, so that a record being rewritten under a
** reader cannot change its lengths between the bounds check and their use. */
typedef struct mmkv_record {
    uint64_t offset;
    mmkv_record_header header;
    const unsigned char *bytes; /* the record in the mapping */
} mmkv_record;

/* Reads the record at offset if its header is well formed and it ends at or before limit and
** inside the mapping; returns 0 otherwise. Does not check the checksum. */
int mmkv_log_record(mmkv_log *log, uint64_t offset, uint64_t limit, mmkv_record *record);
int mmkv_record_checksum_ok(const mmkv_record *record);
/* A record's checksum: CRC32C of its own offset, then of the bytes after the checksum field, so
** that a record copied or misdirected to another place fails it. */
uint32_t mmkv_record_crc(uint64_t offset, const void *after_checksum, size_t len);
void mmkv_record_key(const mmkv_record *record, mmkv_datum *key);
void mmkv_record_value(const mmkv_record *record, mmkv_datum *value);

#endif
