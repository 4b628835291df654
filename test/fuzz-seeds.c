/*
** Makes the seed corpus of the libFuzzer target (test/fuzz.c) with the real engine:
**
**     make fuzz-seeds        (runs build/fuzz/fuzz-seeds test/fuzz-corpus)
**
** Each seed is an input in the format of test/fuzz.h: a data file and an index file the engine
** wrote (an empty table; keys of every type; enough keys that the index grew, both while it is
** draining and after; a history of updates, deletes, savepoints and a rolled-back tail), a few
** damaged variants of them, and the same with the harness's checksum fix-ups switched on, so that
** mutations start from each of those modes. Every seed opens without any check failing.
**
** The seeds named v2-* are files of format version 2 (before compaction), made by an older build
** and kept as they are, so that the fuzzer keeps reaching the code that reads and upgrades them;
** this program does not remake them.
**
** The engine's random file id, creation time and boot id are replaced by fixed values (checksums
** recomputed), so that a rerun makes the same bytes.
*/
#include "crc32c.h"
#include "format.h"
#include "fuzz.h"
#include "mmkv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/mmkv-fuzz-seeds-XXXXXX";
static const char *out_dir;
static int made;

static void die(const char *what)
{
    fprintf(stderr, "fuzz-seeds: %s\n", what);
    exit(1);
}

typedef struct image {
    unsigned char *bytes;
    size_t size;
} image;

static image slurp(const char *path)
{
    image im = {NULL, 0};
    FILE *f = fopen(path, "rb");
    if (!f) return im;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) die("stat");
    im.size = (size_t)st.st_size;
    im.bytes = calloc(im.size ? im.size : 1, 1);
    if (!im.bytes || fread(im.bytes, 1, im.size, f) != im.size) die("read");
    fclose(f);
    return im;
}

static image copy(image im)
{
    image c = {malloc(im.size ? im.size : 1), im.size};
    if (!c.bytes) die("out of memory");
    memcpy(c.bytes, im.bytes, im.size);
    return c;
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* The script: a fixed pseudo-random sequence per seed, so that every seed drives every phase. */
static void make_script(unsigned char *script, size_t n, unsigned seed)
{
    uint32_t x = seed * 2654435761u + 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345;
        script[i] = (unsigned char)(x >> 16);
    }
}

/* Writes one input: trailing zeros of each image are left to the declared file size. */
static void emit(const char *name, unsigned flags, image data, image index)
{
    size_t data_len = data.size, index_len = index.size;
    while (data_len && !data.bytes[data_len - 1])
        data_len--;
    while (index_len && !index.bytes[index_len - 1])
        index_len--;
    unsigned char header[FUZZ_HEADER_SIZE], script[96];
    make_script(script, sizeof script, (unsigned)made + 1);
    header[0] = (unsigned char)flags;
    header[1] = sizeof script;
    put32(header + 2, (uint32_t)data_len);
    put32(header + 6, (uint32_t)(data.size > FUZZ_MAX_FILE ? FUZZ_MAX_FILE : data.size));
    put32(header + 10, (uint32_t)(index.size > FUZZ_MAX_FILE ? FUZZ_MAX_FILE : index.size));
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", out_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) die(path);
    fwrite(header, 1, sizeof header, f);
    fwrite(script, 1, sizeof script, f);
    if (data_len) fwrite(data.bytes, 1, data_len, f);
    if (index_len) fwrite(index.bytes, 1, index_len, f);
    if (fclose(f) != 0) die(path);
    made++;
    printf("%-28s %6zu bytes\n", name, sizeof header + sizeof script + data_len + index_len);
}

/* ---- tables made by the engine ---- */

static char *path_of(const char *name)
{
    static char buf[4][512];
    static int n;
    char *p = buf[n++ % 4];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

/* Synced commits, but for the tables made to show salvage (format.h), whose commits skip syncs. */
static mmkv_sync table_sync = MMKV_SYNC_FULL;

/* The text encoding of the tables being made. */
static int table_encoding = MMKV_TEXT_UTF8;

static mmkv_conn *open_table(const char *name)
{
    mmkv_open_options options = {.sync = table_sync, .text_encoding = table_encoding};
    mmkv_conn *conn = NULL;
    char *err = NULL;
    if (mmkv_open(path_of(name), &options, &conn, &err) != MMKV_OK) die(err ? err : "open");
    return conn;
}

static void begin(mmkv_conn *c)
{
    if (mmkv_txn_begin(c) != MMKV_OK) die("begin");
}

static void commit(mmkv_conn *c)
{
    if (mmkv_txn_prepare(c) != MMKV_OK) die("prepare");
    mmkv_txn_commit(c);
}

static void put(mmkv_conn *c, mmkv_datum key, mmkv_datum value)
{
    if (mmkv_put(c, &key, &value, MMKV_PUT_REPLACE) != MMKV_OK) die(mmkv_errmsg(c));
}

static mmkv_datum integer(int64_t *storage, int64_t v)
{
    *storage = v;
    mmkv_datum d = {MMKV_INTEGER, 8, storage};
    return d;
}

static mmkv_datum real(double *storage, double v)
{
    *storage = v;
    mmkv_datum d = {MMKV_FLOAT, 8, storage};
    return d;
}

static mmkv_datum text(const char *s)
{
    mmkv_datum d = {MMKV_TEXT, (uint32_t)strlen(s), s};
    return d;
}

static mmkv_datum blob(const void *p, uint32_t n)
{
    mmkv_datum d = {MMKV_BLOB, n, p};
    return d;
}

static const mmkv_datum null_value = {MMKV_NULL, 0, NULL};

/* Closes the table and takes its two files. */
static void take(mmkv_conn *c, const char *name, image *data, image *index)
{
    mmkv_close(c);
    char index_name[256];
    snprintf(index_name, sizeof index_name, "%s-index", name);
    *data = slurp(path_of(name));
    *index = slurp(path_of(index_name));
    if (!data->bytes || !index->bytes) die("files missing");
    if (data->size < MMKV_DATA_START || index->size < sizeof(mmkv_index_header)) die("short files");
    /* The same bytes at every run: a file id made from the name, no time, no boot id. */
    uint64_t id = 0xcbf29ce484222325ull;
    for (const char *p = name; *p; p++)
        id = (id ^ (unsigned char)*p) * 0x100000001b3ull;
    mmkv_file_header *fh = (mmkv_file_header *)data->bytes;
    fh->file_id = id;
    fh->created_unix_ms = 0;
    fh->checksum = mmkv_crc32c(0, fh, offsetof(mmkv_file_header, checksum));
    mmkv_index_header *ih = (mmkv_index_header *)index->bytes;
    ih->data_file_id = id;
    memset(ih->boot_id, 0, sizeof ih->boot_id);
    if (ih->state == MMKV_INDEX_CLEAN)
        ih->checksum = mmkv_crc32c(0, ih, offsetof(mmkv_index_header, checksum));
}

static void make_empty(image *data, image *index)
{
    take(open_table("empty.mmkv"), "empty.mmkv", data, index);
}

static void make_types(image *data, image *index)
{
    mmkv_conn *c = open_table("types.mmkv");
    int64_t i1, i2, i3, i4;
    double r1, r2, r3, r4;
    unsigned char bytes[1024];
    for (int i = 0; i < (int)sizeof bytes; i++)
        bytes[i] = (unsigned char)(i * 31 + 7);
    mmkv_datum text_nul = {MMKV_TEXT, 3, "a\0b"};
    begin(c);
    put(c, integer(&i1, 1), text("one"));
    put(c, integer(&i2, -9223372036854775807LL - 1), real(&r1, 2.5));
    put(c, real(&r2, 0.5), integer(&i3, 42));
    put(c, real(&r3, 1e300), null_value);
    put(c, text("alice"), blob(bytes, 16));
    put(c, text("2"), text("text that reads as a number"));
    put(c, text(" 3.0 "), text_nul);
    put(c, text("4e0"), real(&r4, -0.0));
    put(c, text(""), blob("", 0));
    put(c, blob("\x00\xff", 2), text(""));
    put(c, blob("", 0), blob(bytes, sizeof bytes));
    put(c, text("big"), integer(&i4, 7));
    commit(c);
    take(c, "types.mmkv", data, index);
}

/* TEXT in UTF-16 (table_encoding), from ASCII and \u escapes of four hex digits, in storage. */
static mmkv_datum text16(unsigned char *storage, const char *s)
{
    uint32_t n = 0;
    for (; *s; n += 2) {
        unsigned unit = (unsigned char)*s++;
        if (unit == '\\' && *s == 'u') {
            char hex[5] = {s[1], s[2], s[3], s[4], 0};
            unit = (unsigned)strtoul(hex, NULL, 16);
            s += 5;
        }
        int le = table_encoding == MMKV_TEXT_UTF16LE;
        storage[n + !le] = (unsigned char)unit;
        storage[n + le] = (unsigned char)(unit >> 8);
    }
    mmkv_datum d = {MMKV_TEXT, n, storage};
    return d;
}

/* A UTF-16 table: keys that read as numbers (second slots), and keys that do not although their
** bytes read as ASCII digits (a high byte is no zero: U+3031 is 31 30 in UTF-16le), lone
** surrogates, noncharacters and a NUL. */
static void make_utf16(const char *name, int encoding, image *data, image *index)
{
    static const char *keys[] = {"1",
                                 " 2 ",
                                 "3.0",
                                 "4e0",
                                 "-5",
                                 "+6",
                                 ".5",
                                 "abc",
                                 "\\ud800",
                                 "\\udc00x",
                                 "\\ud83d\\ude00",
                                 "\\ufffe",
                                 "\\uffff",
                                 "\\ufdd0",
                                 "\\ufffd",
                                 "7\\u0000",
                                 "\\u3031",
                                 "8\\u0130",
                                 "\\u00a09",
                                 ""};
    table_encoding = encoding;
    mmkv_conn *c = open_table(name);
    unsigned char storage[sizeof keys / sizeof keys[0]][64];
    int64_t vs;
    begin(c);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        put(c, text16(storage[i], keys[i]), integer(&vs, (int64_t)i));
    unsigned char value[64];
    put(c, integer(&vs, 1), text16(value, "one \\udbff"));
    commit(c);
    take(c, name, data, index);
    table_encoding = MMKV_TEXT_UTF8;
}

/* TEXT keys that read as numbers take two slots each: the index grows past 1024 slots soon. */
static void make_grown(const char *name, int keys, image *data, image *index)
{
    mmkv_conn *c = open_table(name);
    char key[32];
    begin(c);
    for (int i = 0; i < keys; i++) {
        snprintf(key, sizeof key, "%d", i);
        put(c, text(key), null_value);
    }
    commit(c);
    take(c, name, data, index);
    const mmkv_index_header *h = (const mmkv_index_header *)index->bytes;
    printf("  %s: index table of %llu slots%s, file end %llu\n", name,
           (unsigned long long)h->table_slots, h->old_offset ? " (old one draining)" : "",
           (unsigned long long)h->file_end);
}

static void make_history(const char *name, image *data, image *index)
{
    mmkv_conn *c = open_table(name);
    int64_t ks, vs;
    char key[32];
    for (int round = 0; round < 4; round++) {
        begin(c);
        for (int i = 0; i < 12; i++)
            put(c, integer(&ks, i), integer(&vs, round * 100 + i));
        snprintf(key, sizeof key, "%d", round);
        put(c, text(key), integer(&vs, round));
        if (round > 0) {
            mmkv_datum gone = integer(&ks, round * 3);
            if (mmkv_delete(c, &gone) != MMKV_OK) die("delete");
        }
        mmkv_txn_savepoint(c, 0);
        put(c, integer(&ks, 1000 + round), text("rolled back to the savepoint"));
        mmkv_txn_rollback_to(c, 0);
        put(c, text("after savepoint"), integer(&vs, round));
        commit(c);
    }
    /* A transaction that never commits leaves its records past the committed tail. */
    begin(c);
    for (int i = 0; i < 6; i++)
        put(c, integer(&ks, 500 + i), text("never committed"));
    mmkv_datum gone = integer(&ks, 1);
    if (mmkv_delete(c, &gone) != MMKV_OK) die("delete");
    mmkv_txn_rollback(c);
    take(c, name, data, index);
}

/* A history whose oldest part a compaction step shed: the log starts past 4096 (format.h, START).
** With `reclaim`, the bytes below the start are given back (zeros in the image); without, they
** still hold the old records, which no read may use. */
static void make_compacted(const char *name, int reclaim, image *data, image *index)
{
    mmkv_conn *c = open_table(name);
    int64_t ks, vs;
    for (int round = 0; round < 3; round++) {
        begin(c);
        for (int i = 0; i < 16; i++)
            put(c, integer(&ks, i), integer(&vs, round * 100 + i));
        if (round > 0) {
            mmkv_datum gone = integer(&ks, round);
            if (mmkv_delete(c, &gone) != MMKV_OK) die("delete");
        }
        commit(c);
    }
    mmkv_commit state;
    if (mmkv_committed(c, &state) != MMKV_OK) die("committed");
    begin(c);
    mmkv_compact_result r;
    if (mmkv_compact_step(c, 0, 0, state.txid, &r) != MMKV_OK) die(mmkv_errmsg(c));
    put(c, text("after compaction"), integer(&vs, 1));
    commit(c);
    if (reclaim) {
        uint64_t given_back = 0;
        if (mmkv_committed(c, &state) != MMKV_OK) die("committed");
        if (mmkv_reclaim(c, &state, 0, &given_back) != MMKV_OK) die(mmkv_errmsg(c));
    }
    take(c, name, data, index);
    printf("  %s: log starts at %llu\n", name, (unsigned long long)r.start);
}

/* ---- damage ---- */

static mmkv_meta *meta_at(image im, int slot)
{
    return (mmkv_meta *)(im.bytes + MMKV_META_OFFSET(slot));
}

static int newest_meta(image im)
{
    return meta_at(im, 1)->txid > meta_at(im, 0)->txid;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s corpus-directory\n", argv[0]);
        return 2;
    }
    out_dir = argv[1];
    mkdir(out_dir, 0755);
    if (!mkdtemp(dir)) die("mkdtemp");

    image none = {(unsigned char *)"", 0};
    image empty_d, empty_i, types_d, types_i, grown_d, grown_i, drain_d, drain_i, hist_d, hist_i;
    make_empty(&empty_d, &empty_i);
    make_types(&types_d, &types_i);
    make_grown("grown.mmkv", 400, &grown_d, &grown_i);
    make_grown("draining.mmkv", 330, &drain_d, &drain_i);
    make_history("history.mmkv", &hist_d, &hist_i);
    image unsynced_d, unsynced_i;
    table_sync = MMKV_SYNC_OFF;
    make_history("unsynced.mmkv", &unsynced_d, &unsynced_i);
    table_sync = MMKV_SYNC_FULL;

    /* As the engine left them. */
    emit("new-table", FUZZ_NO_INDEX, none, none);
    emit("empty", 0, empty_d, empty_i);
    emit("types", 0, types_d, types_i);
    emit("types-no-index", FUZZ_NO_INDEX | FUZZ_SECOND_CONN, types_d, none);
    emit("grown", FUZZ_DROP_INDEX, grown_d, grown_i);
    emit("draining", FUZZ_SECOND_CONN, drain_d, drain_i);
    emit("history", 0, hist_d, hist_i);

    /* Damaged. */
    image d = copy(hist_d);
    d.bytes[MMKV_META_OFFSET(newest_meta(d)) + 20] ^= 0x40; /* torn newest meta: the older wins */
    emit("history-torn-meta", FUZZ_SECOND_CONN | FUZZ_DROP_INDEX, d, hist_i);
    memset(d.bytes + MMKV_META_OFFSET(0), 0x5a, sizeof(mmkv_meta));
    memset(d.bytes + MMKV_META_OFFSET(1), 0x5a, sizeof(mmkv_meta));
    emit("history-no-meta", FUZZ_NO_INDEX, d, none);
    free(d.bytes);

    d = copy(hist_d);
    d.bytes[MMKV_DATA_START + 3 * 48 + 40] ^= 1;            /* a value byte of the fourth record */
    emit("history-bad-record", FUZZ_DROP_INDEX, d, hist_i); /* found by reads, then by rebuild */
    free(d.bytes);

    d = copy(types_d);
    d.size = meta_at(d, newest_meta(d))->committed_tail - 64; /* commits reach past the end */
    emit("types-truncated", FUZZ_NO_INDEX, d, none);
    d.bytes[0] ^= 0xff;
    emit("not-mmkv", FUZZ_NO_INDEX, d, none);
    free(d.bytes);

    emit("types-foreign-index", 0, types_d, empty_i); /* another file's index: rebuilt */

    /* Commits that skipped their syncs: the file carries the notice, and recovery salvages the
    ** longest whole prefix of transactions when records or both meta slots are lost. */
    emit("unsynced", FUZZ_DROP_INDEX, unsynced_d, unsynced_i);
    d = copy(unsynced_d);
    d.bytes[MMKV_DATA_START + 20 * 48 + 40] ^= 1; /* in the second transaction */
    emit("unsynced-bad-record", FUZZ_DROP_INDEX, d, unsynced_i);
    free(d.bytes);
    d = copy(unsynced_d);
    memset(d.bytes + MMKV_META_OFFSET(0), 0, sizeof(mmkv_meta));
    memset(d.bytes + MMKV_META_OFFSET(1), 0, sizeof(mmkv_meta));
    emit("unsynced-no-meta", FUZZ_NO_INDEX, d, none);
    free(d.bytes);

    image x = copy(grown_i);
    mmkv_index_header *h = (mmkv_index_header *)x.bytes;
    h->state = MMKV_INDEX_IN_USE; /* its last user died between transactions, in this boot */
    h->writer_active = 0;
    emit("grown-index-in-use", FUZZ_STAMP_BOOT, grown_d, x);
    free(x.bytes);
    x = copy(types_i);
    h = (mmkv_index_header *)x.bytes;
    h->state = MMKV_INDEX_IN_USE; /* ... in the middle of a transaction */
    h->writer_active = 1;
    emit("types-index-writer-died", FUZZ_STAMP_BOOT, types_d, x);
    h->state = MMKV_INDEX_CLEAN;
    h->writer_active = 0;
    h->table_slots = 1u << 20; /* a table that does not fit in the file */
    emit("types-index-bad-geometry", FUZZ_FIX_INDEX, types_d, x);
    free(x.bytes);

    /* The same files, with the harness fixing checksums after each mutation. */
    emit("history-forged", FUZZ_FIX_RECORDS | FUZZ_FIX_META | FUZZ_FIX_HEADER, hist_d, hist_i);
    emit("types-forged", FUZZ_FORGED, types_d, types_i);
    emit("draining-forged", FUZZ_FORGED | FUZZ_SECOND_CONN, drain_d, drain_i);
    emit("empty-forged", FUZZ_FORGED | FUZZ_DROP_INDEX, empty_d, empty_i);

    /* Reproducers of what the fuzzer found (see each). They fail until the engine is fixed. */

    /* An index marked in use by this boot, no writer active, is trusted unchecked: with the slot
    ** of the first record's key (INTEGER 1) emptied, get(1) misses a key the scan returns. */
    x = copy(types_i);
    h = (mmkv_index_header *)x.bytes;
    h->state = MMKV_INDEX_IN_USE;
    h->writer_active = 0;
    mmkv_slot *slots = (mmkv_slot *)(x.bytes + h->table_offset);
    for (uint64_t i = 0; i < h->table_slots; i++)
        if (mmkv_slot_is_entry(slots[i]) && mmkv_slot_offset(slots[i]) == MMKV_DATA_START)
            slots[i] = MMKV_SLOT_EMPTY;
    emit("repro-in-use-index-slot-lost", FUZZ_STAMP_BOOT, types_d, x);
    free(x.bytes);

    /* A table offset past the end of the index file passes table_fits (size - offset wraps):
    ** reads far outside the mapping. Trusted in-use index (genuine checksums): SEGV in a probe;
    ** clean index (checksums forged): SEGV in tables_checksum during mmkv_open. */
    x = copy(types_i);
    h = (mmkv_index_header *)x.bytes;
    h->state = MMKV_INDEX_IN_USE;
    h->writer_active = 0;
    h->table_offset = (uint64_t)1 << 30;
    emit("repro-table-past-end-in-use", FUZZ_STAMP_BOOT, types_d, x);
    h->state = MMKV_INDEX_CLEAN;
    emit("repro-table-past-end-clean", FUZZ_FIX_INDEX, types_d, x);
    free(x.bytes);

    /* A record copied over another (all checksums good: a misplaced block, say). The commit counts
    ** no old versions, so the scan returns every record without looking: key '52' twice. */
    d = copy(grown_d);
    memcpy(d.bytes + MMKV_DATA_START + 290 * 40, d.bytes + MMKV_DATA_START + 52 * 40, 40);
    emit("repro-copied-record-scanned-twice", FUZZ_NO_INDEX, d, none);
    free(d.bytes);

    /* A meta slot whose record_count is near 2^64: mmkv_index_rebuild_begin's sizing loop
    ** overflows and never ends when the index is rebuilt (here: another file's index). */
    d = copy(types_d);
    meta_at(d, newest_meta(d))->record_count = UINT64_C(0x1c00000000000000);
    emit("repro-record-count-hang", FUZZ_FIX_META, d, empty_i);
    /* ... and a record count of a billion sizes the rebuilt index table at 16 GiB, for a log of
    ** twelve records (the harness limits file sizes: libFuzzer reports "file size exceeded"). */
    meta_at(d, newest_meta(d))->record_count = 1000000000;
    emit("repro-record-count-huge-index", FUZZ_FIX_META, d, empty_i);
    free(d.bytes);

    /* UTF-16 files (added last, so that the seeds above keep their scripts). */
    image le_d, le_i, be_d, be_i;
    make_utf16("utf16le.mmkv", MMKV_TEXT_UTF16LE, &le_d, &le_i);
    make_utf16("utf16be.mmkv", MMKV_TEXT_UTF16BE, &be_d, &be_i);
    emit("utf16le", FUZZ_DROP_INDEX, le_d, le_i);
    emit("utf16be", FUZZ_SECOND_CONN, be_d, be_i);
    emit("utf16le-forged", FUZZ_FORGED, le_d, le_i);

    /* Compacted logs (added after the UTF-16 ones, for the same reason). A damaged record below
    ** the start is outside the log: the harness once held that against mmkv_check. */
    image cd, ci, kd, ki;
    make_compacted("compacted.mmkv", 1, &cd, &ci);
    make_compacted("compacted-unreclaimed.mmkv", 0, &kd, &ki);
    emit("compacted", 0, cd, ci);
    emit("compacted-forged", FUZZ_FORGED, cd, ci);
    d = copy(kd);
    d.bytes[MMKV_DATA_START + 40] ^= 1; /* a value byte of the first record, below the start */
    emit("repro-damage-below-start", FUZZ_DROP_INDEX, d, ki);
    free(d.bytes);

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    printf("%d seeds in %s\n", made, out_dir);
    return 0;
}
