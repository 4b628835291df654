/*
** The hash index: probing, incremental growth and rebuilding. See index.h and format.h.
*/
#include "index.h"
#include "crc32c.h"
#include "failpoint.h"
#include "mmkv.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How often a reader looks again when the geometry moved under it before it gives up. */
#define GEOMETRY_RETRIES 1000

typedef struct geometry {
    uint64_t table_offset, table_slots;
    uint64_t old_offset, old_slots;
} geometry;

static uint64_t load64(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void store64(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* A table's slots, in the newest view; the caller has seen a `mapped` that covers the table. */
static mmkv_slot *table_at(mmkv_index *index, uint64_t offset)
{
    return (mmkv_slot *)(mmkv_map_base(&index->map) + offset);
}

static int table_fits(uint64_t offset, uint64_t slots, uint64_t size)
{
    return offset >= MMKV_INDEX_TABLES_START && offset % MMKV_PAGE_SIZE == 0 && offset <= size &&
           slots >= 1 && (slots & (slots - 1)) == 0 && slots <= (size - offset) / sizeof(mmkv_slot);
}

/* Do the bytes [at, at + bytes) overlap the table of `slots` slots at offset (none if 0)? */
static int overlaps(uint64_t at, uint64_t bytes, uint64_t offset, uint64_t slots)
{
    return offset && at < offset + slots * sizeof(mmkv_slot) && offset < at + bytes;
}

/* The writer's tables are mapped: another process's writer may have grown the file and moved the
** tables past what this process has mapped, and a slot outside the mapping is outside every view.
** CORRUPT if the file does not hold the tables the header names. */
static int tables_mapped(mmkv_index *index)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    uint64_t mapped = mmkv_map_mapped(&index->map);
    if (h->file_end > mapped) {
        int rc = mmkv_map_refresh(&index->map);
        if (rc != MMKV_OK) return rc;
        mapped = mmkv_map_mapped(&index->map);
    }
    if (!table_fits(h->table_offset, h->table_slots, mapped) ||
        (h->old_offset && !table_fits(h->old_offset, h->old_slots, mapped)))
        return MMKV_CORRUPT;
    return MMKV_OK;
}

/* What a slot adds to the header's slots_sum: a mix of where it is (its offset in the file) and
** what it holds. Empty and moved slots add nothing, so a table appended zeroed, or drained to the
** end, counts nothing. */
static uint64_t slot_weight(uint64_t slot_offset, mmkv_slot value)
{
    if (value == MMKV_SLOT_EMPTY || value == MMKV_SLOT_MOVED) return 0;
    uint64_t x = value ^ (slot_offset * UINT64_C(0x9e3779b97f4a7c15));
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

/* Every write of a slot goes through here (or slot_put, for a table not yet visible), keeping the
** sum. Only the one writer writes slots, so the sum needs no atomic update. */
static void slot_put(mmkv_index *index, uint64_t *sum, mmkv_slot *at, mmkv_slot value)
{
    /* The slot may be in an older view than the newest (the map grew since it was found). */
    uint64_t offset = mmkv_map_offset_of(&index->map, at);
    *sum += slot_weight(offset, value) - slot_weight(offset, *at);
    store64(at, value);
}

static void slot_write(mmkv_index *index, mmkv_slot *at, mmkv_slot value)
{
    slot_put(index, &mmkv_index_header_of(index)->slots_sum, at, value);
}

int mmkv_index_map(mmkv_index *index, int fd, const char *path, int writable)
{
    index->path = path;
    index->build_offset = 0;
    return mmkv_map_init(&index->map, fd, MMKV_INDEX_MIN_RESERVE, writable);
}

void mmkv_index_unmap(mmkv_index *index)
{
    mmkv_map_release(&index->map);
}

static uint32_t header_checksum(const mmkv_index_header *h)
{
    return mmkv_crc32c(0, h, offsetof(mmkv_index_header, checksum));
}

static uint32_t tables_checksum(mmkv_index *index)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    uint32_t crc =
        mmkv_crc32c_wide(0, table_at(index, h->table_offset), h->table_slots * sizeof(mmkv_slot));
    if (h->old_offset)
        crc = mmkv_crc32c_wide(crc, table_at(index, h->old_offset),
                               h->old_slots * sizeof(mmkv_slot));
    return crc;
}

int mmkv_index_header_usable(mmkv_index *index, uint64_t data_file_id, int need_clean)
{
    uint64_t size = mmkv_map_mapped(&index->map);
    if (size < MMKV_INDEX_TABLES_START) return 0;
    mmkv_index_header *h = mmkv_index_header_of(index);
    if (memcmp(h->magic, MMKV_INDEX_MAGIC, MMKV_MAGIC_SIZE) != 0 ||
        h->format_version != MMKV_INDEX_FORMAT_VERSION || h->data_file_id != data_file_id)
        return 0;
    if (h->state != MMKV_INDEX_CLEAN && (need_clean || h->state != MMKV_INDEX_IN_USE)) return 0;
    if (h->state == MMKV_INDEX_CLEAN && h->checksum != header_checksum(h)) return 0;
    if (h->geometry_seq % 2 != 0 || h->file_end > size ||
        !table_fits(h->table_offset, h->table_slots, h->file_end) ||
        h->table_slots < MMKV_INDEX_MIN_SLOTS || h->used_slots > h->table_slots)
        return 0;
    if (h->old_offset &&
        (!table_fits(h->old_offset, h->old_slots, h->file_end) || h->drain_cursor > h->old_slots))
        return 0;
    /* What is given back must lie clear of every table: a damaged range would punch slots. */
    if (h->give_back_end &&
        (h->give_back_offset < MMKV_INDEX_TABLES_START || h->give_back_offset > h->give_back_end ||
         h->give_back_end > h->file_end ||
         overlaps(h->give_back_offset, h->give_back_end - h->give_back_offset, h->table_offset,
                  h->table_slots) ||
         overlaps(h->give_back_offset, h->give_back_end - h->give_back_offset, h->old_offset,
                  h->old_slots)))
        return 0;
    if (h->state == MMKV_INDEX_CLEAN && h->tables_checksum != tables_checksum(index)) return 0;
    return 1;
}

typedef struct table_tally {
    uint64_t sum;       /* as slots_sum counts */
    uint64_t used;      /* slots not empty */
    uint64_t keys;      /* entries that are a key's own slot (not a second slot) */
    uint64_t undrained; /* slots below the drain cursor that still hold something */
} table_tally;

static void tally_table(mmkv_index *index, uint64_t offset, uint64_t slots, uint64_t drained,
                        table_tally *t)
{
    mmkv_slot *table = table_at(index, offset);
    for (uint64_t i = 0; i < slots; i++) {
        mmkv_slot s = table[i];
        if (s == MMKV_SLOT_EMPTY) continue;
        t->sum += slot_weight(offset + i * sizeof(mmkv_slot), s);
        t->used++;
        t->keys += mmkv_slot_is_entry(s) && !mmkv_slot_is_second(s);
        t->undrained += i < drained && s != MMKV_SLOT_MOVED;
    }
}

int mmkv_index_slots_verify(mmkv_index *index, uint64_t live_keys, uint64_t records)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    table_tally now = {0}, old = {0};
    tally_table(index, h->table_offset, h->table_slots, 0, &now);
    if (h->old_offset) tally_table(index, h->old_offset, h->old_slots, h->drain_cursor, &old);
    /* A slot damaged, lost or moved, or geometry that no longer names the tables written, shows
    ** in the sum; a drain cursor past slots never drained would drop them at the drain's end.
    ** Every key in the log has its own slot: at least one per live key, at most one per record. */
    uint64_t keys = now.keys + old.keys;
    if (now.sum + old.sum != h->slots_sum || old.undrained || keys < live_keys || keys > records)
        return 0;
    uint64_t used = now.used;
    h->used_slots =
        used; /* decides when to grow: a table with no free slot would never end a probe */
    return 1;
}

int mmkv_index_reset(mmkv_index *index, uint64_t data_file_id)
{
    uint64_t table_bytes = MMKV_INDEX_MIN_SLOTS * sizeof(mmkv_slot);
    uint64_t size = MMKV_INDEX_TABLES_START + table_bytes;
    /* Only the derived index is ever emptied: its contents can always be made again. */
    int rc = mmkv_map_truncate(&index->map);
    if (rc != MMKV_OK) return rc;
    rc = mmkv_map_extend(&index->map, size);
    if (rc != MMKV_OK) return rc;
    mmkv_index_header *h = mmkv_index_header_of(index);
    memset(h, 0, sizeof *h);
    memcpy(h->magic, MMKV_INDEX_MAGIC, MMKV_MAGIC_SIZE);
    h->format_version = MMKV_INDEX_FORMAT_VERSION;
    h->state = MMKV_INDEX_IN_USE;
    h->data_file_id = data_file_id;
    h->log_position = 0;
    h->table_offset = MMKV_INDEX_TABLES_START;
    h->table_slots = MMKV_INDEX_MIN_SLOTS;
    h->file_end = size;
    return MMKV_OK;
}

void mmkv_index_mark_clean(mmkv_index *index, uint64_t log_position)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    if (tables_mapped(index) != MMKV_OK) return; /* left in use: the next open checks it */
    mmkv_index_give_back(index, UINT64_MAX);
    mmkv_map_sync_range(&index->map, MMKV_INDEX_TABLES_START, h->file_end);
    h->log_position = log_position;
    h->writer_active = 0;
    h->tables_checksum = tables_checksum(index);
    h->state = MMKV_INDEX_CLEAN;
    h->checksum = header_checksum(h);
    mmkv_map_sync_range(&index->map, 0, sizeof *h);
}

int mmkv_index_mark_in_use(mmkv_index *index)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    h->state = MMKV_INDEX_IN_USE;
    mmkv_boot_id(h->boot_id);
    h->checksum = 0;
    /* Durable before any slot changes: after a power loss, the index cannot pass for clean. */
    return mmkv_map_sync_range(&index->map, 0, sizeof *h);
}

int mmkv_index_begin_writes(mmkv_index *index)
{
    if (mmkv_index_header_of(index)->state == MMKV_INDEX_IN_USE) return MMKV_OK;
    return mmkv_index_mark_in_use(index);
}

/* ---- reading ---- */

static int geometry_read(mmkv_index *index, geometry *g, uint64_t *seq_out)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    for (int attempt = 0; attempt < GEOMETRY_RETRIES; attempt++) {
        uint64_t seq = load64(&h->geometry_seq);
        if (seq % 2) continue;
        g->table_offset = load64(&h->table_offset);
        g->table_slots = load64(&h->table_slots);
        g->old_offset = load64(&h->old_offset);
        g->old_slots = load64(&h->old_slots);
        if (load64(&h->geometry_seq) != seq) continue;
        uint64_t end = g->table_offset + g->table_slots * sizeof(mmkv_slot);
        if (g->old_offset && g->old_offset + g->old_slots * sizeof(mmkv_slot) > end)
            end = g->old_offset + g->old_slots * sizeof(mmkv_slot);
        if (end > mmkv_map_mapped(&index->map)) {
            int rc = mmkv_map_refresh(&index->map); /* another process grew the file */
            if (rc != MMKV_OK) return rc;
        }
        uint64_t mapped = mmkv_map_mapped(&index->map);
        if (!table_fits(g->table_offset, g->table_slots, mapped) ||
            (g->old_offset && !table_fits(g->old_offset, g->old_slots, mapped)))
            return MMKV_CORRUPT;
        *seq_out = seq;
        return MMKV_OK;
    }
    return MMKV_BUSY;
}

#define SLOT_RECHECKS 64 /* times one slot may change under a reader before it gives up on it */

/* Does the entry s, read from *slot, hold the key? A reader may have read the slot just before a
** writer rolled it back and reused its record's place for another key: after a miss, the slot is
** read again, and a changed entry is matched anew. Sets *matched to the entry that matched. */
static int match_slot(mmkv_slot *slot, mmkv_slot s, uint64_t tag, const mmkv_index_ops *ops,
                      mmkv_slot *matched)
{
    for (int n = 0; n < SLOT_RECHECKS; n++) {
        if (!mmkv_slot_is_entry(s) || mmkv_slot_tag(s) != tag) return 0;
        int m = ops->match(ops->ctx, mmkv_slot_offset(s));
        if (m) {
            *matched = s;
            return m;
        }
        mmkv_slot again = load64(slot);
        if (again == s) return 0;
        s = again;
    }
    return 0;
}

/* Probes one table. Returns OK with *found set to the slot and *matched to the entry that held
** the key, NOTFOUND, or an error. If insert_at is given, sets it to the first reusable slot on the
** probe path. */
static int probe(mmkv_slot *table, uint64_t slots, uint64_t hash, const mmkv_index_ops *ops,
                 mmkv_slot **found, mmkv_slot *matched, mmkv_slot **insert_at)
{
    uint64_t mask = slots - 1;
    uint64_t tag = mmkv_hash_tag(hash);
    uint64_t i = hash & mask;
    if (insert_at) *insert_at = NULL;
    for (uint64_t n = 0; n < slots; n++, i = (i + 1) & mask) {
        mmkv_slot s = load64(&table[i]);
        if (s == MMKV_SLOT_EMPTY) {
            if (insert_at && !*insert_at) *insert_at = &table[i];
            return MMKV_NOTFOUND;
        }
        if (!mmkv_slot_is_entry(s)) {
            if (s == MMKV_SLOT_DELETED && insert_at && !*insert_at) *insert_at = &table[i];
            continue;
        }
        int m = match_slot(&table[i], s, tag, ops, matched);
        if (m < 0) return -m;
        if (m) {
            *found = &table[i];
            return MMKV_OK;
        }
    }
    return MMKV_NOTFOUND;
}

int mmkv_index_find(mmkv_index *index, uint64_t hash, const mmkv_index_ops *ops, uint64_t *offset,
                    mmkv_index_hit *hit)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    for (int attempt = 0; attempt < GEOMETRY_RETRIES; attempt++) {
        geometry g;
        uint64_t seq;
        int rc = geometry_read(index, &g, &seq);
        if (rc != MMKV_OK) return rc;
        mmkv_slot *slot = NULL, matched = 0;
        /* The old table first: a writer copies a slot to the new table before marking it moved,
        ** so a key missing from the old table is already in the new one. */
        rc = MMKV_NOTFOUND;
        int in_old = 0;
        if (g.old_offset) {
            rc =
                probe(table_at(index, g.old_offset), g.old_slots, hash, ops, &slot, &matched, NULL);
            in_old = rc == MMKV_OK;
        }
        if (rc == MMKV_NOTFOUND)
            rc = probe(table_at(index, g.table_offset), g.table_slots, hash, ops, &slot, &matched,
                       NULL);
        if (rc == MMKV_OK) {
            *offset = mmkv_slot_offset(matched);
            if (hit) *hit = (mmkv_index_hit){slot, matched, seq, in_old};
            return MMKV_OK;
        }
        if (rc != MMKV_NOTFOUND || load64(&h->geometry_seq) == seq) return rc;
    }
    return MMKV_BUSY;
}

void mmkv_offsets_init(mmkv_offsets *set)
{
    set->items = set->inline_items;
    set->count = 0;
    set->capacity = MMKV_OFFSETS_INLINE;
}

void mmkv_offsets_free(mmkv_offsets *set)
{
    if (set->items != set->inline_items) free(set->items);
    mmkv_offsets_init(set);
}

int mmkv_offsets_add(mmkv_offsets *set, uint64_t offset)
{
    for (size_t i = 0; i < set->count; i++)
        if (set->items[i] == offset) return MMKV_OK;
    if (set->count == set->capacity) {
        size_t capacity = set->capacity * 2;
        uint64_t *grown = malloc(capacity * sizeof *grown);
        if (!grown) return MMKV_NOMEM;
        memcpy(grown, set->items, set->count * sizeof *grown);
        if (set->items != set->inline_items) free(set->items);
        set->items = grown;
        set->capacity = capacity;
    }
    set->items[set->count++] = offset;
    return MMKV_OK;
}

/* Like probe, but walks the whole probe path and collects every match. */
static int probe_all(mmkv_slot *table, uint64_t slots, uint64_t hash, const mmkv_index_ops *ops,
                     mmkv_offsets *found)
{
    uint64_t mask = slots - 1;
    uint64_t tag = mmkv_hash_tag(hash);
    uint64_t i = hash & mask;
    for (uint64_t n = 0; n < slots; n++, i = (i + 1) & mask) {
        mmkv_slot s = load64(&table[i]);
        if (s == MMKV_SLOT_EMPTY) break;
        mmkv_slot matched;
        int m = match_slot(&table[i], s, tag, ops, &matched);
        if (m < 0) return -m;
        if (m && mmkv_offsets_add(found, mmkv_slot_offset(matched)) != MMKV_OK) return MMKV_NOMEM;
    }
    return MMKV_OK;
}

int mmkv_index_find_all(mmkv_index *index, uint64_t hash, const mmkv_index_ops *ops,
                        mmkv_offsets *found)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    for (int attempt = 0; attempt < GEOMETRY_RETRIES; attempt++) {
        geometry g;
        uint64_t seq;
        int rc = geometry_read(index, &g, &seq);
        if (rc != MMKV_OK) return rc;
        found->count = 0;
        if (g.old_offset)
            rc = probe_all(table_at(index, g.old_offset), g.old_slots, hash, ops, found);
        if (rc == MMKV_OK)
            rc = probe_all(table_at(index, g.table_offset), g.table_slots, hash, ops, found);
        if (rc != MMKV_OK || load64(&h->geometry_seq) == seq) return rc;
    }
    return MMKV_BUSY;
}

void mmkv_index_prefetch(mmkv_index *index, uint64_t hash)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    uint64_t offset = __atomic_load_n(&h->table_offset, __ATOMIC_RELAXED);
    uint64_t slots = __atomic_load_n(&h->table_slots, __ATOMIC_RELAXED);
    uint64_t at = offset + (hash & (slots - 1)) * sizeof(mmkv_slot);
    if (slots && at + sizeof(mmkv_slot) <= mmkv_map_mapped(&index->map))
        __builtin_prefetch(mmkv_map_base(&index->map) + at);
}

/* ---- writing (one writer at a time) ---- */

static void geometry_begin(mmkv_index_header *h)
{
    store64(&h->geometry_seq, h->geometry_seq + 1);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

static void geometry_end(mmkv_index_header *h)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    store64(&h->geometry_seq, h->geometry_seq + 1);
}

/* Places a zeroed table of `slots` slots in the file; returns its offset. First fit: where the
** tables begin if no table in use (the current one, one draining, one being built) lies there
** (discarded tables read as zeros and take no space), else past the last. */
static int table_allocate(mmkv_index *index, uint64_t slots, uint64_t *offset)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    uint64_t bytes = slots * sizeof(mmkv_slot);
    uint64_t at = MMKV_INDEX_TABLES_START;
    mmkv_index_give_back(index, UINT64_MAX); /* no table is placed over what is being given back */
    if (at + bytes <= h->file_end && !overlaps(at, bytes, h->table_offset, h->table_slots) &&
        !overlaps(at, bytes, h->old_offset, h->old_slots) &&
        !overlaps(at, bytes, index->build_offset, index->build_slots)) {
        int rc = mmkv_file_allocate_range(index->map.fd, at, bytes);
        if (rc != MMKV_OK) return rc;
        int rc2 = mmkv_map_extend(&index->map, h->file_end);
        if (rc2 != MMKV_OK) return rc2;
        memset(table_at(index, at), 0, bytes); /* discarded: zeros already, unless punching failed */
        *offset = at;
        return MMKV_OK;
    }
    at = (h->file_end + MMKV_PAGE_SIZE - 1) / MMKV_PAGE_SIZE * MMKV_PAGE_SIZE;
    uint64_t end = at + bytes;
    int rc = mmkv_map_extend(&index->map, end);
    /* Allocated here whatever the mapping thinks: the slack past the tables may have been given
    ** back (table_discard), and a write through the mapping must never meet a hole. */
    if (rc == MMKV_OK) rc = mmkv_file_allocate_range(index->map.fd, at, bytes);
    if (rc != MMKV_OK) return rc;
    h->file_end = end;
    *offset = at;
    return MMKV_OK;
}

/* The space the file grew ahead past the tables goes back (table_allocate allocates before it
** places a table there). */
static void give_back_slack(mmkv_index *index)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    uint64_t end = (h->file_end + MMKV_PAGE_SIZE - 1) / MMKV_PAGE_SIZE * MMKV_PAGE_SIZE;
    if (index->map.file_size > end) mmkv_file_discard(index->map.fd, end, index->map.file_size - end);
}

static void table_discard(mmkv_index *index, uint64_t offset, uint64_t slots)
{
    /* Readers holding an old geometry then find it empty and look again. */
    if (mmkv_file_discard(index->map.fd, offset, slots * sizeof(mmkv_slot)) != MMKV_OK)
        memset(table_at(index, offset), 0, slots * sizeof(mmkv_slot));
    give_back_slack(index);
}

/*
** Giving back a drained table's place. Punching holds the file's invalidate lock, and where the
** file system discards freed blocks at once (mount -o discard) the device's discard runs under it:
** measured on ext4, 7.7 ms for a 16 MiB table, 23 ms for 32 MiB, 54 ms for 64 MiB (the table
** drained at 5M keys), all inside the write that finished the drain. So the place is given back in pieces:
** GIVE_BACK_PIECE every GIVE_BACK_EVERY writes (a 64 MiB table in about 2000 writes), and by every
** compaction step, which does not count a pass done before it is all back. Nothing needs it sooner:
** its slots all say moved, which readers holding the old geometry read as they read zeros (move
** on, look in the current table), and table_allocate gives all of it back before it places a
** table. The range is in the header, so that whichever process writes next carries it on.
*/
#define GIVE_BACK_PIECE ((uint64_t)1 << 20)
#define GIVE_BACK_EVERY 32u

int mmkv_index_give_back(mmkv_index *index, uint64_t max_bytes)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    if (!h->give_back_end) return 0;
    uint64_t at = h->give_back_offset, end = h->give_back_end;
    uint64_t n = end - at < max_bytes ? end - at : max_bytes;
    if (n && mmkv_file_discard(index->map.fd, at, n) != MMKV_OK)
        n = end - at; /* cannot punch: the slots say moved, which is all they need to say */
    h->give_back_offset = at + n;
    if (at + n < end) return 1;
    h->give_back_offset = 0;
    h->give_back_end = 0;
    give_back_slack(index);
    return 0;
}

/* A drained table's place goes back in pieces from now on. */
static void give_back_later(mmkv_index *index, uint64_t offset, uint64_t slots)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    mmkv_index_give_back(index, UINT64_MAX); /* one at a time (table_allocate: none is left) */
    h->give_back_offset = offset;
    h->give_back_end = offset + slots * sizeof(mmkv_slot);
    index->writes_to_give_back = GIVE_BACK_EVERY;
}

/* The first free slot for hash in a table that does not hold the key. */
static mmkv_slot *free_slot(mmkv_slot *table, uint64_t slots, uint64_t hash)
{
    uint64_t mask = slots - 1;
    for (uint64_t i = hash & mask;; i = (i + 1) & mask) {
        mmkv_slot s = table[i];
        if (s == MMKV_SLOT_EMPTY || s == MMKV_SLOT_DELETED) return &table[i];
    }
}

static void drain_finish(mmkv_index *index)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    uint64_t offset = h->old_offset, slots = h->old_slots;
    geometry_begin(h);
    h->old_offset = 0;
    h->old_slots = 0;
    h->drain_cursor = 0;
    geometry_end(h);
    give_back_later(index, offset, slots);
}

/* Moves up to `count` old slots into the current table. */
static int drain(mmkv_index *index, const mmkv_index_ops *ops, uint64_t count)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    mmkv_slot *old = table_at(index, h->old_offset);
    mmkv_slot *table = table_at(index, h->table_offset);
    /* Each entry moved needs its record's key for its hash, a miss in a log larger than the
    ** caches: ask for them all first, so that they arrive together rather than one by one
    ** (measured: draining took a third of a bulk insert's time at 1M keys). */
    if (ops->prefetch)
        for (uint64_t i = h->drain_cursor; i < h->old_slots && i - h->drain_cursor < count; i++)
            if (mmkv_slot_is_entry(old[i])) ops->prefetch(ops->ctx, mmkv_slot_offset(old[i]));
    while (count-- && h->drain_cursor < h->old_slots) {
        mmkv_slot *from = &old[h->drain_cursor];
        mmkv_slot s = *from;
        if (mmkv_slot_is_entry(s)) {
            uint64_t hash;
            int rc = ops->hash_of(ops->ctx, s, &hash);
            if (rc != MMKV_OK) return rc;
            mmkv_slot *to = free_slot(table, h->table_slots, hash);
            if (*to == MMKV_SLOT_EMPTY) h->used_slots++;
            slot_write(index, to, s);
            slot_write(index, from, MMKV_SLOT_MOVED);
        } else if (s == MMKV_SLOT_DELETED) {
            slot_write(index, from, MMKV_SLOT_MOVED); /* a drained table adds nothing to the sum */
        }
        h->drain_cursor++;
    }
    if (h->drain_cursor >= h->old_slots) drain_finish(index);
    return MMKV_OK;
}

/* The table at offset becomes the current one, and the current one is drained into it. */
static void drain_begin(mmkv_index_header *h, uint64_t offset, uint64_t slots)
{
    geometry_begin(h);
    h->old_offset = h->table_offset;
    h->old_slots = h->table_slots;
    h->drain_cursor = 0;
    h->table_offset = offset;
    h->table_slots = slots;
    h->used_slots = 0;
    geometry_end(h);
}

int mmkv_index_drain_some(mmkv_index *index, const mmkv_index_ops *ops, uint64_t count)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    int rc = tables_mapped(index);
    if (rc != MMKV_OK || !h->old_offset) return rc;
    return drain(index, ops, count);
}

/* The slots a table needs for `entries`, with room to double before it must grow again. */
static uint64_t slots_for(uint64_t entries)
{
    uint64_t slots = MMKV_INDEX_MIN_SLOTS;
    while (slots * MMKV_INDEX_LOAD_NUM < (2 * entries + 1) * MMKV_INDEX_LOAD_DEN)
        slots *= 2;
    return slots;
}

int mmkv_index_shrink(mmkv_index *index, uint64_t live_keys)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    int rc = tables_mapped(index);
    if (rc != MMKV_OK) return rc;
    /* Keys with a second slot can at most double the live keys' entries. */
    if (h->old_offset || h->table_slots < 4 * slots_for(2 * live_keys)) return MMKV_OK;
    mmkv_slot *table = table_at(index, h->table_offset);
    uint64_t entries = 0;
    for (uint64_t i = 0; i < h->table_slots; i++)
        entries += mmkv_slot_is_entry(load64(&table[i]));
    uint64_t slots = slots_for(entries), offset;
    if (h->table_slots < 4 * slots) return MMKV_OK; /* deleted keys' tombstones still hold slots */
    if ((rc = table_allocate(index, slots, &offset)) != MMKV_OK) return rc;
    drain_begin(h, offset, slots);
    return MMKV_OK;
}

int mmkv_index_make_room(mmkv_index *index, const mmkv_index_ops *ops)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    int rc = tables_mapped(index);
    if (rc != MMKV_OK) return rc;
    if (h->old_offset && (rc = drain(index, ops, MMKV_INDEX_DRAIN_STEP)) != MMKV_OK) return rc;
    if (h->give_back_end && index->writes_to_give_back-- == 0) {
        index->writes_to_give_back = GIVE_BACK_EVERY;
        mmkv_index_give_back(index, GIVE_BACK_PIECE);
    }
    if ((h->used_slots + 1) * MMKV_INDEX_LOAD_DEN <= h->table_slots * MMKV_INDEX_LOAD_NUM)
        return MMKV_OK;
    /* Full: finish any drain still going (rare: draining outpaces filling), then double. */
    if (h->old_offset && (rc = drain(index, ops, h->old_slots)) != MMKV_OK) return rc;
    uint64_t slots = h->table_slots * 2, offset;
    rc = table_allocate(index, slots, &offset);
    if (rc == MMKV_OK) rc = mmkv_failpoint("mid-index-growth");
    if (rc != MMKV_OK) {
        /* No room to grow (a full disk): go on in the slack, with longer probes, until the table
        ** is nearly full; a write that needs no new slot must not fail for want of growth. */
        if ((h->used_slots + 1) * MMKV_INDEX_LOAD_DEN <= h->table_slots * MMKV_INDEX_HARD_NUM)
            return MMKV_OK;
        return rc;
    }
    drain_begin(h, offset, slots);
    return MMKV_OK;
}

int mmkv_index_locate(mmkv_index *index, uint64_t hash, const mmkv_index_ops *ops,
                      mmkv_slot_ref *ref)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    mmkv_slot matched;
    ref->slot = NULL;
    ref->in_old = 0;
    int rc = tables_mapped(index);
    if (rc != MMKV_OK) return rc;
    rc = MMKV_NOTFOUND;
    if (h->old_offset) {
        rc = probe(table_at(index, h->old_offset), h->old_slots, hash, ops, &ref->slot, &matched,
                   NULL);
        if (rc == MMKV_OK) ref->in_old = 1;
    }
    mmkv_slot *found = NULL;
    int rc2 = probe(table_at(index, h->table_offset), h->table_slots, hash, ops, &found, &matched,
                    &ref->insert_at);
    if (rc2 == MMKV_OK && !ref->slot) ref->slot = found;
    if (rc2 != MMKV_OK && rc2 != MMKV_NOTFOUND) return rc2;
    if (rc != MMKV_OK && rc != MMKV_NOTFOUND) return rc;
    if (!ref->insert_at)
        ref->insert_at = free_slot(table_at(index, h->table_offset), h->table_slots, hash);
    return ref->slot ? MMKV_OK : MMKV_NOTFOUND;
}

int mmkv_index_still_there(mmkv_index *index, const mmkv_index_hit *hit, mmkv_slot_ref *ref)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    if (!hit->slot || hit->in_old || h->old_offset || h->geometry_seq != hit->geometry_seq ||
        load64(hit->slot) != hit->value)
        return 0;
    ref->slot = hit->slot;
    ref->in_old = 0;
    ref->insert_at = NULL; /* the key is there: mmkv_index_store writes its slot */
    return 1;
}

void mmkv_index_store(mmkv_index *index, const mmkv_slot_ref *ref, uint64_t hash, uint64_t offset)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    mmkv_slot value = mmkv_slot_pack(mmkv_hash_tag(hash), offset);
    if (ref->slot && !ref->in_old) {
        slot_write(index, ref->slot, value);
        return;
    }
    if (*ref->insert_at == MMKV_SLOT_EMPTY) h->used_slots++;
    slot_write(index, ref->insert_at, value);
    if (ref->slot)
        slot_write(index, ref->slot, MMKV_SLOT_MOVED); /* after the copy: see mmkv_index_find */
}

void mmkv_index_forget(mmkv_index *index, const mmkv_slot_ref *ref)
{
    if (ref->slot) slot_write(index, ref->slot, ref->in_old ? MMKV_SLOT_MOVED : MMKV_SLOT_DELETED);
}

/* ---- rebuilding ---- */

int mmkv_index_rebuild_begin(mmkv_index *index, uint64_t keys)
{
    uint64_t slots = MMKV_INDEX_MIN_SLOTS;
    while (slots * MMKV_INDEX_LOAD_NUM < (keys + 1) * MMKV_INDEX_LOAD_DEN)
        slots *= 2;
    int rc = table_allocate(index, slots, &index->build_offset);
    if (rc != MMKV_OK) return rc;
    index->build_slots = slots;
    index->build_used = 0;
    index->build_sum = 0;
    return MMKV_OK;
}

int mmkv_index_rebuild_add(mmkv_index *index, uint64_t hash, const mmkv_index_ops *ops,
                           uint64_t offset)
{
    mmkv_slot *table = table_at(index, index->build_offset);
    mmkv_slot *found = NULL, *insert_at = NULL, matched;
    int rc = probe(table, index->build_slots, hash, ops, &found, &matched, &insert_at);
    if (rc == MMKV_OK) {
        slot_put(index, &index->build_sum, found, mmkv_slot_pack(mmkv_hash_tag(hash), offset));
        return MMKV_OK;
    }
    if (rc != MMKV_NOTFOUND) return rc;
    if ((index->build_used + 1) * MMKV_INDEX_LOAD_DEN > index->build_slots * MMKV_INDEX_LOAD_NUM) {
        /* More keys than the estimate: double into a fresh table and carry on there. */
        uint64_t slots = index->build_slots * 2, offset2;
        if ((rc = table_allocate(index, slots, &offset2)) != MMKV_OK) return rc;
        table = table_at(index, index->build_offset); /* in the newest view, as `bigger` is */
        mmkv_slot *bigger = table_at(index, offset2);
        index->build_sum = 0;
        for (uint64_t i = 0; i < index->build_slots; i++) {
            if (!mmkv_slot_is_entry(table[i])) continue;
            uint64_t h2;
            if ((rc = ops->hash_of(ops->ctx, table[i], &h2)) != MMKV_OK)
                return rc;
            slot_put(index, &index->build_sum, free_slot(bigger, slots, h2), table[i]);
        }
        table_discard(index, index->build_offset, index->build_slots);
        index->build_offset = offset2;
        index->build_slots = slots;
        table = bigger;
        insert_at = free_slot(table, slots, hash);
    }
    slot_put(index, &index->build_sum, insert_at, mmkv_slot_pack(mmkv_hash_tag(hash), offset));
    index->build_used++;
    return MMKV_OK;
}

void mmkv_index_rebuild_end(mmkv_index *index)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    uint64_t offset = h->table_offset, slots = h->table_slots;
    uint64_t old_offset = h->old_offset, old_slots = h->old_slots;
    geometry_begin(h);
    h->table_offset = index->build_offset;
    h->table_slots = index->build_slots;
    h->used_slots = index->build_used;
    h->slots_sum = index->build_sum;
    h->old_offset = 0;
    h->old_slots = 0;
    h->drain_cursor = 0;
    geometry_end(h);
    table_discard(index, offset, slots);
    if (old_offset) table_discard(index, old_offset, old_slots);
    index->build_offset = 0;
}
