/*
** What a table's files hold, for inspection. See stats.h.
**
** The index is read as a lock-free reader reads it (index.h): its geometry under the header's
** sequence lock, its slots with atomic loads. A walk over the current table that saw the geometry
** change under it (the table grew, shrank or was rebuilt) is done again on the new one. Slots may
** change during the walk (a writer inserting, draining, rolling back): the result is then what
** some moment of the walk held, which is all a statistic of a live table can be.
*/
#include "stats.h"
#include "error.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

/* Walks over the index that saw its geometry change, before giving up (BUSY). */
#define WALK_RETRIES 100
/* Reads of the geometry that found it changing, before giving up (BUSY). */
#define GEOMETRY_RETRIES 1000
/* Times one slot may change under the walk before it is passed over. */
#define SLOT_RECHECKS 64
/* st_blocks counts units of this many bytes, whatever the file system's block size (POSIX). */
#define STAT_BLOCK_BYTES 512u

static uint64_t load64(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

/* Allocated and logical bytes of the file on fd. */
static int file_sizes(mmkv_conn *conn, int fd, const char *path, uint64_t *allocated,
                      uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return mmkv_error(&conn->errmsg, MMKV_IOERR, "mmkv: cannot examine '%s': %s", path,
                          strerror(errno));
    *allocated = (uint64_t)st.st_blocks * STAT_BLOCK_BYTES;
    *size = (uint64_t)st.st_size;
    return MMKV_OK;
}

/* The index's table geometry, read consistently: geometry_seq even and unchanged around it. */
typedef struct geometry {
    uint64_t seq;
    uint64_t table_offset, table_slots;
    uint64_t old_slots;
} geometry;

static int geometry_read(mmkv_index *index, geometry *g)
{
    mmkv_index_header *h = mmkv_index_header_of(index);
    for (int attempt = 0; attempt < GEOMETRY_RETRIES; attempt++) {
        g->seq = load64(&h->geometry_seq);
        if (g->seq % 2) continue;
        g->table_offset = load64(&h->table_offset);
        g->table_slots = load64(&h->table_slots);
        g->old_slots = load64(&h->old_offset) ? load64(&h->old_slots) : 0;
        if (load64(&h->geometry_seq) == g->seq) return MMKV_OK;
    }
    return MMKV_BUSY;
}

/* The current table's slots, mapped (another process may have grown the file); CORRUPT if the
** file does not hold the table the header names. */
static int table_slots_at(mmkv_index *index, const geometry *g, mmkv_slot **table)
{
    uint64_t slots = g->table_slots, offset = g->table_offset;
    if (slots == 0 || (slots & (slots - 1)) != 0 || offset < MMKV_INDEX_TABLES_START ||
        offset % MMKV_PAGE_SIZE != 0 || slots > (UINT64_MAX - offset) / sizeof(mmkv_slot))
        return MMKV_CORRUPT;
    uint64_t end = offset + slots * sizeof(mmkv_slot);
    if (end > mmkv_map_mapped(&index->map)) {
        int rc = mmkv_map_refresh(&index->map);
        if (rc != MMKV_OK) return rc;
    }
    if (end > mmkv_map_mapped(&index->map)) return MMKV_CORRUPT;
    *table = (mmkv_slot *)(mmkv_map_base(&index->map) + offset);
    return MMKV_OK;
}

/* The hash under which the entry s is filed: its key's own, or for a second slot its number's.
** 1 if its record could be read and filed there, else 0. */
static int entry_hash(mmkv_engine *e, const mmkv_commit *state, mmkv_slot s, uint64_t *hash)
{
    uint64_t offset = mmkv_slot_offset(s);
    mmkv_record record;
    int ok = mmkv_log_record(&e->log, offset, UINT64_MAX, &record);
    if (!ok && mmkv_map_refresh(&e->log.map) == MMKV_OK) /* another process grew the file? */
        ok = mmkv_log_record(&e->log, offset, UINT64_MAX, &record);
    /* Below the state's tail a record is never rewritten; past it, it may be, under the walk. */
    if (!ok || (offset >= state->tail && !mmkv_record_checksum_ok(&record))) return 0;
    mmkv_datum key;
    mmkv_record_key(&record, &key);
    if (!mmkv_slot_is_second(s)) {
        *hash = mmkv_key_hash(&key);
        return 1;
    }
    return mmkv_engine_second_hash(e, &key, hash);
}

/* How far the entry in slot i lies from where its probe begins, into *distance: 1, 0 if the slot
** holds no entry (or one being rewritten under the walk), or -CORRUPT with the message set if it
** names a committed record that is not its key's. */
static int entry_distance(mmkv_conn *conn, const mmkv_commit *state, mmkv_slot *table, uint64_t i,
                          uint64_t mask, uint64_t *distance)
{
    mmkv_engine *e = conn->engine;
    mmkv_slot s = load64(&table[i]);
    for (int n = 0; n < SLOT_RECHECKS && mmkv_slot_is_entry(s); n++) {
        uint64_t hash;
        if (entry_hash(e, state, s, &hash)) {
            *distance = (i - (hash & mask)) & mask;
            return 1;
        }
        mmkv_slot again = load64(&table[i]);
        if (again == s) {
            uint64_t offset = mmkv_slot_offset(s);
            if (offset >= state->start && offset < state->tail)
                return -mmkv_engine_corrupt_record(&conn->errmsg, e, offset);
            return 0;
        }
        s = again;
    }
    return 0;
}

/* One walk over the current table of geometry g: its entries and its longest probe. */
static int walk_table(mmkv_conn *conn, const mmkv_commit *state, const geometry *g, mmkv_stats *out)
{
    mmkv_engine *e = conn->engine;
    mmkv_slot *table;
    int rc = table_slots_at(&e->index, g, &table);
    if (rc != MMKV_OK) return mmkv_engine_index_error(&conn->errmsg, e, rc);
    uint64_t mask = g->table_slots - 1, entries = 0, max_probe = 0;
    for (uint64_t i = 0; i < g->table_slots; i++) {
        if (!mmkv_slot_is_entry(load64(&table[i]))) continue;
        entries++;
        uint64_t distance = 0;
        int found = entry_distance(conn, state, table, i, mask, &distance);
        if (found < 0) return -found;
        if (found && distance + 1 > max_probe) max_probe = distance + 1;
    }
    out->index_slots = g->table_slots;
    out->index_draining_slots = g->old_slots;
    out->index_entries = entries;
    out->load_factor = (double)entries / (double)g->table_slots;
    out->max_probe = max_probe;
    return MMKV_OK;
}

static int index_shape(mmkv_conn *conn, const mmkv_commit *state, mmkv_stats *out)
{
    mmkv_engine *e = conn->engine;
    mmkv_index_header *h = mmkv_index_header_of(&e->index);
    for (int attempt = 0; attempt < WALK_RETRIES; attempt++) {
        geometry g;
        int rc = geometry_read(&e->index, &g);
        if (rc == MMKV_OK) rc = walk_table(conn, state, &g, out);
        if (rc == MMKV_BUSY) return mmkv_engine_index_error(&conn->errmsg, e, rc);
        if (rc != MMKV_OK || load64(&h->geometry_seq) == g.seq) return rc;
    }
    return mmkv_engine_index_error(&conn->errmsg, e, MMKV_BUSY);
}

int mmkv_stats_read(mmkv_conn *conn, const mmkv_commit *state, mmkv_stats *out)
{
    mmkv_conn_clear_error(conn);
    mmkv_engine *e = conn->engine;
    memset(out, 0, sizeof *out);
    mmkv_commit committed = *state;
    if (committed.start == 0) committed.start = MMKV_DATA_START; /* a record from before START */
    out->txid = committed.txid;
    out->log_start = committed.start;
    out->log_tail = committed.tail;
    out->live_count = committed.live_count;
    out->garbage_bytes = committed.garbage_bytes;
    out->records = committed.record_count;
    out->compactions = committed.compactions;
    /* Saturating: a damaged state must not turn into a huge count. */
    uint64_t log_bytes = committed.tail > committed.start ? committed.tail - committed.start : 0;
    out->live_bytes = log_bytes > committed.garbage_bytes ? log_bytes - committed.garbage_bytes : 0;

    out->compacting = mmkv_compact_pending(conn, &out->compact_until);
    out->auto_compacting = mmkv_compact_auto_active(conn);
    /* A pass asked for but not yet begun covers what is committed when it begins: this tail at
    ** least (compact.c marks it with an end past any log). */
    if (out->compact_until > committed.tail) out->compact_until = committed.tail;

    int rc =
        file_sizes(conn, e->log.map.fd, e->data_path, &out->data_file_bytes, &out->data_file_size);
    if (rc == MMKV_OK)
        rc = file_sizes(conn, e->index.map.fd, e->index_path, &out->index_file_bytes,
                        &out->index_file_size);
    /* The log mapped up to the state, and a read-only engine's own index brought up to it. */
    if (rc == MMKV_OK) rc = mmkv_engine_cover(e, committed.tail, &conn->errmsg);
    if (rc == MMKV_OK) rc = mmkv_engine_reach(e, committed.start, committed.tail, &conn->errmsg);
    if (rc == MMKV_OK) rc = index_shape(conn, &committed, out);
    return rc;
}
