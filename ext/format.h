/*
** The on-disk format of mmkv's two files.
**
** All integers are stored in the machine's byte order, which mmkv requires to be little-endian
** (checked at compile time below), so every structure here can be read in place from the mapping.
**
** THE DATA FILE (for example app.db-kv.mmkv) is an append-only log:
**
**     offset 0      file header (mmkv_file_header), written once at creation
**     offset 512    meta slot 0 (mmkv_meta)
**     offset 1024   meta slot 1 (mmkv_meta)
**     offset 2048   the unsynced-commits notice (mmkv_notice, two copies), once a commit skipped
**                   its syncs
**     offset 2560   the home note (mmkv_home, two copies, at 2560 and 3072): the database that
**                   owns the file, by path (format version 2)
**     offset 3584   the start note (mmkv_notice layout, two copies), once compaction gave the
**                   bytes below the log's start back to the file system (format version 3)
**     offset 4096   records, each 8-byte aligned, from the log's start up to the committed tail
**
** The meta slot with the highest transaction id whose checksum holds is the committed state of a
** file that is its own authority (owner_id 0); a commit writes the other slot, so a torn meta write
** leaves the previous commit in force. A file a database owns (owner_id set) answers to that
** database's commit record, which the meta slots follow; they are not synced there, and when both
** are lost, recovery writes them anew from the log. Bytes below the committed tail are never
** rewritten. Past the tail lie the records of the transaction in progress (or garbage left by one
** that never committed), which no reader trusts.
**
** A record is a header (mmkv_record_header), the key bytes, the value bytes, and zero padding to
** the next multiple of 8. A transaction's records are contiguous, carry its txid, and the last one
** is flagged MMKV_RECORD_TXN_END. An update appends a new version whose prev_offset names the
** version before it; a delete appends a tombstone (flag MMKV_RECORD_TOMBSTONE, no value). INTEGER
** and REAL keys and values are stored as 8 bytes (int64 / IEEE double); NULL has no bytes; TEXT is
** in the text encoding the file header names (the encoding of the database that created the file:
** UTF-8, UTF-16le or UTF-16be, so that text round-trips byte for byte), and is only read or written
** in it. A second slot (below) is filed for TEXT that reads as a number in that encoding.
**
** START. Compaction (compact.c) keeps the log near the size of its live records without ever
** moving a byte under a reader: it copies the live records at the log's start to its end, in an
** ordinary write transaction that also moves the start past them, and once no reader anywhere can
** still read a state older than that commit, it punches the bytes below the start out of the file
** (they read as zeros and take no space). So a committed state is (txid, start, tail): its log is
** [start, tail), and every record of it that is some key's live version lies there. A relocated
** copy's prev_offset names the record it copies, below start, for readers of older states. The
** start is in each meta slot (mmkv_meta.log_start, format version 3) and in the database's commit
** record; the start note records, durably, before any punching, the start below which bytes may be
** gone, so that salvage, which cannot trust the meta slots, walks the log from there.
**
** HOME. A file a database owns records which database that is (the home note: its owner id and
** the database file's path), so that a copy of the database that names the same file (an absolute
** file=, a backup, VACUUM INTO, a dump reloaded) is told from the owner and refused, and a file
** whose database is gone is told from one in use. Two copies are written in turn, like the meta
** slots, each with a sequence number and a checksum; the intact copy with the higher sequence
** counts. The header itself is written once. A home note flagged MMKV_HOME_DROP_PENDING names a
** file whose table a DROP TABLE removed in a transaction whose outcome was not yet known: if the
** database no longer records the owner, the DROP committed and the file is deleted; if it does,
** the flag is cleared. Files of format version 1 (mmkv 0.1) have no home note and hold UTF-8.
**
** SALVAGE. A commit made under sync=off syncs nothing, so a power cut may keep any part of it and
** of the commits before it: meta slots as well as records. Before the first such commit, the notice
** at offset 2048 is written and synced. Recovery of a file that carries it (after a power cut, or
** whenever the index must be rebuilt) keeps the longest prefix of the log made of whole
** transactions: records whose checksums hold, each transaction's txid above the one before, ending
** with its TXN_END record; but never shorter than the notice's durable_tail, below which every
** record was made durable (when the notice was first written, and at each clean close), so that
** damage there is reported rather than taken for lost writes. It clears the rest of the file and
** writes both meta slots to that state (MMKV_META_SALVAGED). Where a database owns the file and its
** commit record names more than survived, readers of that record see the salvaged state, and the
** next writer fills the lost bytes with pad records (MMKV_RECORD_PAD: a key of no bytes and a value
** of zeros, never a row) up to the recorded tail, so that the record names a whole log again; the
** counts of a salvaged meta slot are then the log's, not the record's.
**
** THE INDEX FILE (data file name + "-index") is derived data: a hash table from key to the offset
** of the newest version of that key, rebuilt from the log whenever it is missing, stale or damaged.
**
**     offset 0      index header (mmkv_index_header)
**     offset 4096   hash tables: the current one and, while it is being drained into the current
**                   one, the previous one. Each is an array of 64-bit slots (mmkv_slot).
**
** A slot packs a 24-bit tag and the record offset divided by 8 (40 bits, so data files up to
** 8 TiB). The tag is the top 24 bits of the slot's hash, whose top bit says which of a key's slots
** it is: 0 for the key's own, 1 for the second slot of a TEXT key that reads as a number ('1.0'),
** filed under that number's hash so that SQLite's NUMERIC affinity comparisons can find it. Slot
** values 0, 1 and 2 are never offsets (records start at 4096): empty, deleted (a key whose insert
** was rolled back) and moved (drained into the current table).
*/
#ifndef MMKV_FORMAT_H
#define MMKV_FORMAT_H

#include "mmkv.h" /* the datum types, text encodings and home flags are the public ones */

#include <stddef.h>
#include <stdint.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "mmkv's file format is little-endian; this machine is not"
#endif

#define MMKV_FORMAT_VERSION 3        /* of the data file: written by this build */
#define MMKV_FORMAT_VERSION_OLDEST 1 /* the oldest data file version this build reads */
/* Of the index file. 2: a drained table's place is given back later (give_back_*); a build that
** knew only 1 might place a table there and see it punched, so each rebuilds the other's. */
#define MMKV_INDEX_FORMAT_VERSION 2
#define MMKV_PAGE_SIZE 4096u
#define MMKV_MAGIC_SIZE 16

/* ---- data file ---- */

#define MMKV_DATA_MAGIC "mmkv data file\0"    /* 15 characters and a NUL: 16 bytes */
#define MMKV_META_MAGIC 0x6174656d766b6d6dULL /* "mmkvmeta" */
#define MMKV_META_OFFSET(slot) (512u * (1u + (slot)))
#define MMKV_DATA_START MMKV_PAGE_SIZE /* offset of the first record */
#define MMKV_RECORD_ALIGN 8u

typedef struct mmkv_file_header {
    char magic[MMKV_MAGIC_SIZE]; /* MMKV_DATA_MAGIC */
    uint32_t format_version;     /* MMKV_FORMAT_VERSION_OLDEST to MMKV_FORMAT_VERSION */
    uint32_t page_size;          /* MMKV_PAGE_SIZE */
    uint64_t file_id;            /* random at creation; the index file records it */
    uint64_t created_unix_ms;    /* informational */
    uint64_t owner_id;           /* the database whose commit record decides; 0: the meta slots */
    uint32_t text_encoding;      /* MMKV_TEXT_UTF8 (0 in version 1 files), _UTF16LE or _UTF16BE */
    uint8_t reserved[456];       /* zero; room for later fields */
    uint32_t checksum;           /* CRC32C of every byte above */
} mmkv_file_header;              /* 512 bytes */


typedef struct mmkv_meta {
    uint64_t magic;          /* MMKV_META_MAGIC */
    uint64_t txid;           /* id of the last committed transaction; 0 for a new file */
    uint64_t committed_tail; /* offset one past the last committed record */
    uint64_t live_count;     /* keys whose newest version is not a tombstone */
    uint64_t record_count;   /* records in the log, tombstones and old versions included */
    uint64_t garbage_bytes;  /* bytes held by superseded versions and tombstones */
    uint64_t txn_start;      /* where the last transaction's records begin (its starting tail) */
    uint32_t flags;          /* MMKV_META_SALVAGED, MMKV_META_HAS_START */
    uint32_t checksum;       /* CRC32C of every byte above */
    /* Format version 3 (written by builds that compact; zeros in slots written before): */
    uint64_t log_start;      /* where the log begins (START above); with MMKV_META_HAS_START */
    uint64_t compactions;    /* compactions finished (compact.c), with MMKV_META_HAS_START */
    uint8_t reserved[44];    /* zero */
    uint32_t start_checksum; /* CRC32C of every byte above, the first 64 included */
} mmkv_meta;                 /* 128 bytes */

#define MMKV_META_SALVAGED 0x01  /* written by salvage: the counts are the surviving log's */
#define MMKV_META_HAS_START 0x02 /* log_start and start_checksum hold; else the start is 4096 */

/* Two copies, written in turn: the intact one with the higher sequence counts. */
#define MMKV_NOTICE_OFFSET(copy) (2048u + 64u * (copy))
#define MMKV_NOTICE_MAGIC 0x636e79736e766b6dULL /* "mkvnsync" */

typedef struct mmkv_notice {
    uint64_t magic;        /* MMKV_NOTICE_MAGIC */
    uint64_t sequence;     /* 1 for the first copy written, then one more each time */
    uint64_t durable_tail; /* every record below this offset was made durable */
    uint32_t reserved;     /* zero */
    uint32_t checksum;     /* CRC32C of every byte above */
} mmkv_notice;             /* 32 bytes */

/* The start note (START): an mmkv_notice whose durable_tail field holds the start below which
** bytes may have been given back. */
#define MMKV_START_NOTE_OFFSET(copy) (3584u + 64u * (copy))
#define MMKV_START_NOTE_MAGIC 0x7472617473766b6dULL /* "mkvstart" */

/* Two copies of the home note, written in turn: the intact one with the higher sequence counts. */
#define MMKV_HOME_OFFSET(copy) (2560u + 512u * (copy))
#define MMKV_HOME_MAGIC 0x656d6f68766b6d6dULL /* "mmkvhome" */
#define MMKV_HOME_PATH_MAX 471                /* bytes of path; a longer path is not recorded */

typedef struct mmkv_home {
    uint64_t magic;                      /* MMKV_HOME_MAGIC */
    uint64_t sequence;                   /* 1 for the first copy written, then one more each time */
    uint64_t owner_id;                   /* the file header's owner id, repeated */
    uint32_t flags;                      /* MMKV_HOME_DROP_PENDING */
    uint32_t path_len;                   /* bytes of path; 0: not recorded (too long) */
    char path[MMKV_HOME_PATH_MAX + 1];   /* the owning database file's path, NUL-terminated */
    uint32_t reserved;                   /* zero */
    uint32_t checksum;                   /* CRC32C of every byte above */
} mmkv_home;                             /* 512 bytes */


#define MMKV_RECORD_TOMBSTONE 0x01
#define MMKV_RECORD_TXN_END 0x02 /* the last record of its transaction */
#define MMKV_RECORD_PAD 0x04     /* fills bytes a power cut lost: no key, a value of zeros */

typedef struct mmkv_record_header {
    uint32_t checksum;    /* CRC32C of the record's offset (8 bytes), then of the rest of the
                          ** header, the key and the value: a record copied elsewhere fails it */
    uint8_t key_type;     /* MMKV_INTEGER, MMKV_FLOAT, MMKV_TEXT or MMKV_BLOB */
    uint8_t value_type;   /* any type; MMKV_NULL for a tombstone */
    uint8_t flags;        /* MMKV_RECORD_TOMBSTONE, MMKV_RECORD_TXN_END, MMKV_RECORD_PAD */
    uint8_t reserved;     /* zero */
    uint32_t key_len;     /* bytes of key */
    uint32_t value_len;   /* bytes of value */
    uint64_t txid;        /* the transaction that wrote this version */
    uint64_t prev_offset; /* the previous version of the same key, or 0 */
} mmkv_record_header;     /* 32 bytes, then key, value, padding */

/* ---- index file ---- */

#define MMKV_INDEX_MAGIC "mmkv index file" /* 15 characters and a NUL: 16 bytes */
#define MMKV_INDEX_TABLES_START MMKV_PAGE_SIZE

#define MMKV_INDEX_CLEAN 1  /* closed cleanly: the tables reflect log_position exactly */
#define MMKV_INDEX_IN_USE 2 /* open somewhere, or its last user died */

typedef struct mmkv_index_header {
    char magic[MMKV_MAGIC_SIZE]; /* MMKV_INDEX_MAGIC */
    uint32_t format_version;     /* MMKV_INDEX_FORMAT_VERSION */
    uint32_t state;              /* MMKV_INDEX_CLEAN or MMKV_INDEX_IN_USE */
    uint64_t data_file_id;       /* file_id of the data file this index belongs to */
    uint64_t log_position;       /* committed tail of the log that the tables reflect */
    uint8_t boot_id[16];         /* the boot in which state became IN_USE */
    uint32_t writer_active;      /* 1 while a write transaction may have published slots */
    uint32_t reserved0;
    /* Table geometry. Writers change it inside a sequence lock (geometry_seq odd while
    ** changing), so that lock-free readers in any process read a consistent copy. */
    uint64_t geometry_seq;
    uint64_t table_offset;    /* current table */
    uint64_t table_slots;     /* its size in slots, a power of two */
    uint64_t old_offset;      /* table being drained into the current one; 0 if none */
    uint64_t old_slots;       /* its size in slots */
    uint64_t drain_cursor;    /* old slots below this have been moved */
    uint64_t used_slots;      /* non-empty slots of the current table */
    uint64_t file_end;        /* bytes of the file in use by tables */
    uint32_t tables_checksum; /* CRC32C of the tables' slots; set, and checked, only when CLEAN */
    uint32_t reserved2;
    uint8_t reserved3[56]; /* zero: keeps slots_sum off the cache line readers load */
    /* The sum, modulo 2^64, of a mix of each slot's file offset and value over both tables, slots
    ** empty or moved counting nothing. Every slot write keeps it, so an index whose last user died
    ** between transactions can be checked in one pass before it is trusted (see index.c). */
    uint64_t slots_sum;
    /* A drained table's place, all its slots moved, given back to the file system a piece at a
    ** time by later writes (index.c, giving back); none pending if give_back_end is 0. No table is
    ** placed over it before it is all given back. */
    uint64_t give_back_offset;
    uint64_t give_back_end;
    uint8_t reserved[3872]; /* zero */
    uint32_t checksum;      /* CRC32C of every byte above; checked only when state is CLEAN */
    uint32_t reserved1;
} mmkv_index_header; /* 4096 bytes */

typedef uint64_t mmkv_slot;

#define MMKV_SLOT_EMPTY 0u
#define MMKV_SLOT_DELETED 1u
#define MMKV_SLOT_MOVED 2u
#define MMKV_SLOT_OFFSET_BITS 40
#define MMKV_SLOT_OFFSET_MASK ((UINT64_C(1) << MMKV_SLOT_OFFSET_BITS) - 1)
#define MMKV_MAX_FILE_SIZE (MMKV_SLOT_OFFSET_MASK * MMKV_RECORD_ALIGN)

#define mmkv_slot_pack(tag, offset) (((uint64_t)(tag) << MMKV_SLOT_OFFSET_BITS) | ((offset) >> 3))
#define mmkv_slot_offset(slot) (((slot)&MMKV_SLOT_OFFSET_MASK) << 3)
#define mmkv_slot_tag(slot) ((slot) >> MMKV_SLOT_OFFSET_BITS)
#define mmkv_slot_is_entry(slot) ((slot) > MMKV_SLOT_MOVED)
#define mmkv_hash_tag(hash) ((hash) >> MMKV_SLOT_OFFSET_BITS)
#define MMKV_HASH_SECOND_SLOT (UINT64_C(1) << 63) /* in a hash and so in its tag: see above */
#define mmkv_slot_is_second(slot) (((slot)&MMKV_HASH_SECOND_SLOT) != 0)

_Static_assert(sizeof(mmkv_file_header) == 512, "file header is one sector");
_Static_assert(sizeof(mmkv_meta) == 128, "meta slot size");
_Static_assert(MMKV_META_OFFSET(1) + sizeof(mmkv_meta) <= MMKV_NOTICE_OFFSET(0), "meta slots fit");
_Static_assert(sizeof(mmkv_notice) == 32, "notice size");
_Static_assert(sizeof(mmkv_home) == 512, "home note size");
_Static_assert(MMKV_HOME_PATH_MAX + 1 == MMKV_HOME_PATH_BYTES, "mmkv_file_info holds a home path");
_Static_assert(MMKV_HOME_OFFSET(1) + sizeof(mmkv_home) <= MMKV_START_NOTE_OFFSET(0), "home notes fit");
_Static_assert(MMKV_START_NOTE_OFFSET(1) + sizeof(mmkv_notice) <= MMKV_DATA_START, "page 0 holds all");
_Static_assert(sizeof(mmkv_record_header) == 32, "record header size");
_Static_assert(sizeof(mmkv_index_header) == MMKV_PAGE_SIZE, "index header is one page");
_Static_assert(offsetof(mmkv_index_header, slots_sum) / 64 >
                   offsetof(mmkv_index_header, file_end) / 64,
               "slots_sum is off the cache lines of the geometry that readers load");

#endif
