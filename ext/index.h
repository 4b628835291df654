/*
** index.h: the hash index from key to the newest version's offset in the log (format.h).
**
** Open addressing with linear probing over packed 64-bit slots. The index never reads the log
** itself: callers pass callbacks that compare a record's key and hash it. Growth is incremental:
** a table twice the size is appended to the file and the old one is drained into it a few slots
** per write, so no insert ever pays for a whole rehash.
**
** Readers take no lock. Writers (one at a time, serialised by the engine) store slots atomically,
** copy a slot into the new table before marking it moved in the old, and change the table geometry
** inside a sequence lock; a reader that misses while the geometry changed looks again.
*/
#ifndef MMKV_INDEX_H
#define MMKV_INDEX_H

#include "file.h"
#include "format.h"

/* The smallest view of an index's mapping (file.h): a new index is 12 KiB, and 16 MiB holds the
** tables of some 400,000 keys (8-byte slots at least 5/16 full, and the old table while it
** drains); past that the index gets a new view, as a data file does past MMKV_LOG_MIN_RESERVE. */
#define MMKV_INDEX_MIN_RESERVE ((uint64_t)16 << 20)
#define MMKV_INDEX_MIN_SLOTS 1024u
#define MMKV_INDEX_DRAIN_STEP 8u /* old slots moved per write while draining */
/* Load limit of a table, 5/8: linear probing stays short, and draining finishes in time. */
#define MMKV_INDEX_LOAD_NUM 5u
#define MMKV_INDEX_LOAD_DEN 8u
#define MMKV_INDEX_HARD_NUM                                                                        \
    7u /* 7/8: the load up to which a table that cannot grow is still used */

typedef struct mmkv_index_ops {
    /* 1 if the record at offset holds the key sought, 0 if not, or a negative result code. */
    int (*match)(void *ctx, uint64_t offset);
    /* The hash under which an entry slot is filed (its record's key's own, or with
    ** MMKV_HASH_SECOND_SLOT, its second); CORRUPT if the record cannot be read or its key's hash
    ** does not have the slot's tag; a result code. */
    int (*hash_of)(void *ctx, mmkv_slot slot, uint64_t *hash);
    void *ctx;
    /* Optional: starts loading the record at offset, which hash_of will soon read. */
    void (*prefetch)(void *ctx, uint64_t offset);
} mmkv_index_ops;

typedef struct mmkv_index {
    mmkv_map map;
    const char *path;      /* owned by the engine */
    uint64_t build_offset; /* the table a rebuild is filling, not yet visible to readers */
    uint64_t build_slots;
    uint64_t build_used;
    uint64_t build_sum; /* its slots_sum */
    uint32_t writes_to_give_back; /* writes left before the next piece of a drained table goes */
} mmkv_index;

/* Where a writer found a key: its slot (NULL if absent) and where an insert would go. */
typedef struct mmkv_slot_ref {
    mmkv_slot *slot;
    int in_old;           /* the slot is in the table being drained */
    mmkv_slot *insert_at; /* in the current table */
} mmkv_slot_ref;

static inline mmkv_index_header *mmkv_index_header_of(mmkv_index *index)
{
    return (mmkv_index_header *)mmkv_map_base(&index->map); /* the header is in every view */
}

int mmkv_index_map(mmkv_index *index, int fd, const char *path, int writable);
void mmkv_index_unmap(mmkv_index *index);
/* Empties the file and writes a fresh header with one empty table. Only with no other user. */
int mmkv_index_reset(mmkv_index *index, uint64_t data_file_id);
/* Checks the header of an index found on disk: 1 if usable for this data file, 0 if not. */
int mmkv_index_header_usable(mmkv_index *index, uint64_t data_file_id, int need_clean);
void mmkv_index_mark_clean(mmkv_index *index, uint64_t log_position);
/* One pass over the tables, checking them against the header's slots_sum and the log's counts (and
** recounting used_slots): 1 if they are as the writers left them, 0 if damaged. */
int mmkv_index_slots_verify(mmkv_index *index, uint64_t live_keys, uint64_t records);
int mmkv_index_mark_in_use(mmkv_index *index);
/* Before a writer changes any slot: an index still marked clean is marked in use, durably, so that
** a crash can never leave changed slots under a clean header. */
int mmkv_index_begin_writes(mmkv_index *index);

/* Gives back to the file system up to max_bytes of a drained table's place (the writer only);
** returns 1 if some is still pending after it. */
int mmkv_index_give_back(mmkv_index *index, uint64_t max_bytes);

/* Where a lookup found its key: the slot, what it held, and the tables' geometry then. */
typedef struct mmkv_index_hit {
    mmkv_slot *slot;
    mmkv_slot value;
    uint64_t geometry_seq;
    int in_old; /* in the table being drained */
} mmkv_index_hit;

/* Lock-free lookup: the offset stored for the key, and (if hit is not NULL) where. OK, NOTFOUND,
** or an error. */
int mmkv_index_find(mmkv_index *index, uint64_t hash, const mmkv_index_ops *ops, uint64_t *offset,
                    mmkv_index_hit *hit);
/* For the writer: whether hit, found by an earlier lookup, still names the key's slot in the
** current table (no table placed or drained since, and the slot holds what it held); if so sets
** ref to it, as mmkv_index_locate would. */
int mmkv_index_still_there(mmkv_index *index, const mmkv_index_hit *hit, mmkv_slot_ref *ref);

/* A growable set of offsets; the first few live inside it, so that a lookup needs no heap. */
#define MMKV_OFFSETS_INLINE 8
typedef struct mmkv_offsets {
    uint64_t *items; /* inline_items until more are needed */
    size_t count, capacity;
    uint64_t inline_items[MMKV_OFFSETS_INLINE];
} mmkv_offsets;

void mmkv_offsets_init(mmkv_offsets *set);
void mmkv_offsets_free(mmkv_offsets *set);
int mmkv_offsets_add(mmkv_offsets *set, uint64_t offset); /* no duplicates */

/* Lock-free: every distinct offset on hash's probe path whose record matches. OK or an error. */
int mmkv_index_find_all(mmkv_index *index, uint64_t hash, const mmkv_index_ops *ops,
                        mmkv_offsets *found);

/* A hint: start loading the slot where hash's probe begins. */
void mmkv_index_prefetch(mmkv_index *index, uint64_t hash);

/* Writer side. make_room before any locate that may lead to an insert. */
int mmkv_index_make_room(mmkv_index *index, const mmkv_index_ops *ops);
int mmkv_index_locate(mmkv_index *index, uint64_t hash, const mmkv_index_ops *ops,
                      mmkv_slot_ref *ref);
/* Moves up to count slots of a table being drained into the current one (a writer's extra share
** of the work, beyond the few each write moves). */
int mmkv_index_drain_some(mmkv_index *index, const mmkv_index_ops *ops, uint64_t count);
/* Sizes the index by its live keys: if the current table is four times what they need (keys were
** deleted and compaction dropped their tombstones), a smaller one takes its place, filled by the
** same incremental drain as growth. Nothing if a drain is going on. */
int mmkv_index_shrink(mmkv_index *index, uint64_t live_keys);
void mmkv_index_store(mmkv_index *index, const mmkv_slot_ref *ref, uint64_t hash, uint64_t offset);
/* Forgets a key whose first version is being rolled back. */
void mmkv_index_forget(mmkv_index *index, const mmkv_slot_ref *ref);

/* Rebuilding: a fresh table of at least `keys` capacity, filled by insert_newest in log order,
** then switched in atomically for every reader. */
int mmkv_index_rebuild_begin(mmkv_index *index, uint64_t keys);
int mmkv_index_rebuild_add(mmkv_index *index, uint64_t hash, const mmkv_index_ops *ops,
                           uint64_t offset);
void mmkv_index_rebuild_end(mmkv_index *index);

#endif
