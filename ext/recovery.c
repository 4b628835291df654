/*
** Recovery at open: bringing the index up to date with the log (used as it is when clean and
** current, replayed when behind, trusted after one checked pass when its last user died between
** transactions, rebuilt otherwise), and salvage after a power cut under sync=off (format.h,
** SALVAGE). Only the first opener of a file runs it, holding the open lock alone (open.c).
*/
#include "engine.h"
#include "error.h"

#include <string.h>

/* ---- salvage: the longest whole prefix of a log whose commits skipped their syncs ---- */

typedef struct salvaged {
    uint64_t stopped;   /* where the walk stopped: a record that fails, or the end */
    uint64_t tail;      /* end of the last whole transaction */
    uint64_t txid;      /* its id (0: none) */
    uint64_t txn_start; /* where its records begin */
    mmkv_counts counts; /* the log's counts up to tail */
} salvaged;

/* Adds record r to the counts as the writer did (mmkv_put, mmkv_delete, compaction). 0 if its
** previous version is not an earlier record, or it deletes a key that had none. */
static int count_record(mmkv_log *log, const mmkv_record *r, mmkv_counts *c)
{
    if (r->header.flags & MMKV_RECORD_PAD) {
        c->garbage += mmkv_record_bytes(r);
        return 1;
    }
    mmkv_record prev;
    uint64_t at = r->header.prev_offset;
    if (at && at < c->start) {
        /* A copy compaction made of a record below the log's start: a live key, or a tombstone
        ** kept for older readers. */
        if (r->header.flags & MMKV_RECORD_TOMBSTONE)
            c->garbage += mmkv_record_bytes(r);
        else
            c->live++;
        c->records++;
        return 1;
    }
    if (at && (at >= r->offset || !mmkv_log_record(log, at, r->offset, &prev))) return 0;
    int prev_live = at && !(prev.header.flags & MMKV_RECORD_TOMBSTONE);
    if (r->header.flags & MMKV_RECORD_TOMBSTONE) {
        if (!prev_live) return 0;
        c->live--;
        c->garbage += mmkv_record_bytes(&prev) + mmkv_record_bytes(r);
    } else if (prev_live) {
        c->garbage += mmkv_record_bytes(&prev);
    } else {
        c->live++;
    }
    c->records++;
    return 1;
}

/* Walks the log from its start while records hold their checksums and transactions follow one
** another whole (format.h, SALVAGE). Each record's checksum is checked once; reading a previous
** version's header needs no check, as it lies in the part already walked. Fails only if the
** whole file cannot be mapped: what lies past the mapping must never be taken for lost. */
static int salvage_walk(mmkv_engine *e, salvaged *out)
{
    mmkv_log *log = &e->log;
    int rc = mmkv_map_refresh(&log->map);
    if (rc != MMKV_OK) return rc;
    uint64_t end = mmkv_map_mapped(&log->map);
    memset(out, 0, sizeof *out);
    /* The log begins where the start note says bytes may have been given back (format.h, START):
    ** every later state's start is at least there, so nothing a whole prefix needs lies below. */
    uint64_t log_start = mmkv_log_reclaimed_start(log);
    out->tail = out->txn_start = out->counts.start = log_start;
    mmkv_counts counts = out->counts;
    uint64_t txid = 0, start = log_start;
    int in_txn = 0;
    uint64_t pos = log_start;
    for (; pos < end; out->stopped = pos) {
        mmkv_record r;
        if (!mmkv_log_record(log, pos, end, &r) || !mmkv_record_checksum_ok(&r)) break;
        if (in_txn ? r.header.txid != txid : r.header.txid <= out->txid) break;
        if (!in_txn) {
            in_txn = 1;
            txid = r.header.txid;
            start = pos;
            counts = out->counts;
        }
        if (!count_record(log, &r, &counts)) break;
        pos += mmkv_record_bytes(&r);
        if (r.header.flags & MMKV_RECORD_TXN_END) {
            out->tail = pos;
            out->txid = txid;
            out->txn_start = start;
            out->counts = counts;
            in_txn = 0;
        }
    }
    out->stopped = pos;
    return MMKV_OK;
}

/* Brings a file that carries the unsynced-commits notice to the longest whole prefix of its log,
** if the meta slots (or the lack of them) say otherwise: the rest of the file is cleared, so that
** nothing past it can ever pass for a later transaction, and both meta slots name the prefix.
**
** Without the notice (`unsynced` 0) only a file its database owns comes here, having lost both
** meta slots, which it does not sync: the slots are rewritten from the log and nothing is cleared,
** since the database's commit record decides, and records it names that the log lacks are damage
** to report, not to paper over. */
static int salvage(mmkv_engine *e, int unsynced, const mmkv_meta *found, mmkv_meta *meta,
                   char **errmsg)
{
    salvaged s;
    int rc = salvage_walk(e, &s);
    if (rc != MMKV_OK) return mmkv_map_error(&e->log.map, errmsg, rc, "data file", e->data_path);
    uint64_t durable = 0;
    if (unsynced && mmkv_log_notice(&e->log, &durable) && s.tail < durable)
        return mmkv_error(errmsg, MMKV_CORRUPT,
                          "mmkv: '%s' is damaged: the record at offset %llu fails its checks, "
                          "below byte %llu, up to which the log was made durable",
                          e->data_path, (unsigned long long)s.stopped, (unsigned long long)durable);
    /* The meta slots name the prefix already (marked as salvage's, where a database's record may
    ** name more: see mmkv_engine_effective). */
    if (found && found->txid == s.txid && found->committed_tail == s.tail &&
        (!unsynced || (found->flags & MMKV_META_SALVAGED))) {
        *meta = *found;
        return MMKV_OK;
    }
    /* The tail is cleared, durably, before the meta slots name the prefix: once they do, commits
    ** follow it, and stale whole transactions left past them could pass for later ones in the
    ** next salvage. */
    uint64_t size = 0;
    rc = unsynced ? mmkv_file_size(e->log.map.fd, &size) : MMKV_OK;
    if (rc == MMKV_OK && size > s.tail)
        rc = mmkv_file_discard(e->log.map.fd, s.tail, size - s.tail);
    if (rc == MMKV_OK && unsynced) rc = mmkv_file_sync(e->log.map.fd);
    if (rc != MMKV_OK) return mmkv_error_os(errmsg, rc, "mmkv: cannot salvage '%s'", e->data_path);
    memset(meta, 0, sizeof *meta);
    meta->txid = s.txid;
    meta->committed_tail = s.tail;
    meta->live_count = s.counts.live;
    meta->record_count = s.counts.records;
    meta->garbage_bytes = s.counts.garbage;
    meta->txn_start = s.txn_start;
    meta->log_start = s.counts.start;
    meta->flags = unsynced ? MMKV_META_SALVAGED : 0;
    mmkv_meta_seal(meta);
    for (int slot = 0; slot < 2 && rc == MMKV_OK; slot++)
        rc = mmkv_log_write_meta(&e->log, slot, meta, 1);
    if (rc != MMKV_OK) return mmkv_error_os(errmsg, rc, "mmkv: cannot salvage '%s'", e->data_path);
    return MMKV_OK;
}

static int same_boot(const mmkv_index_header *h)
{
    uint8_t now[16], zero[16] = {0};
    mmkv_boot_id(now);
    return memcmp(now, zero, 16) != 0 && memcmp(now, h->boot_id, 16) == 0;
}

/*
** With no other process using the files: make the index current, whatever state it is in. The
** header is marked in use, durably, and writer_active stays set while slots are being repaired, so
** that a crash in the middle can never leave a half-made index that passes for whole.
*/
int mmkv_recover_index(mmkv_engine *e, char **errmsg)
{
    mmkv_meta meta;
    int slot;
    /* Commits that skipped their syncs: a power cut may have lost meta slots and records alike.
    ** A file its database owns does not sync its meta slots at all. */
    int notice = mmkv_log_notice(&e->log, NULL);
    int rebuild_meta = notice || e->log.owner_id != 0;
    int rc = mmkv_log_meta(&e->log, &meta, &slot, rebuild_meta ? NULL : errmsg);
    if (rc != MMKV_OK && !rebuild_meta) return rc;
    int have_meta = rc == MMKV_OK;
    mmkv_index_header *h = mmkv_index_header_of(&e->index);
    uint64_t id = e->log.file_id;
    int usable = have_meta && mmkv_index_header_usable(&e->index, id, 0);
    /* Clean: current, or behind and replayed from where it stopped. */
    int replay = usable && h->state == MMKV_INDEX_CLEAN && h->log_position <= meta.committed_tail &&
                 h->log_position >= MMKV_DATA_START;
    /* Its last user died between transactions in this boot: every slot store reached the page
    ** cache, so it is whole, unless something else damaged it since; one pass checks that. */
    int trust = usable && h->state == MMKV_INDEX_IN_USE && !h->writer_active && same_boot(h) &&
                mmkv_index_slots_verify(&e->index, meta.live_count, meta.record_count);
    /* Clean and current: nothing to do, and nothing is written, so that a table only read leaves
    ** its files as they were. The first writer marks the index in use (mmkv_index_begin_writes). */
    if (replay && h->log_position == meta.committed_tail) return MMKV_OK;
    uint64_t from = replay ? h->log_position : 0; /* the header is only readable if usable */
    if (!replay && !trust && (notice || !have_meta) &&
        (rc = salvage(e, notice, have_meta ? &meta : NULL, &meta, errmsg)) != MMKV_OK)
        return rc;
    if (!replay && !trust && (rc = mmkv_index_reset(&e->index, id)) != MMKV_OK)
        return mmkv_engine_index_error(errmsg, e, rc);
    h->writer_active = !trust;
    if ((rc = mmkv_index_mark_in_use(&e->index)) != MMKV_OK)
        return mmkv_engine_index_error(errmsg, e, rc);
    if (replay)
        rc = mmkv_engine_replay(e, from, meta.committed_tail, 0, errmsg);
    else if (!trust)
        rc = mmkv_engine_rebuild_index(e, mmkv_meta_start(&meta), meta.committed_tail,
                                       meta.live_count, errmsg);
    if (rc != MMKV_OK) return rc;
    h->log_position = meta.committed_tail;
    h->writer_active = 0;
    return MMKV_OK;
}
