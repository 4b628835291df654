/*
** Engine unit tests: the engine alone, through mmkv.h, with no SQLite.
** Each test prints "PASS: name" or "FAIL: name: why" (test/run.sh counts them).
*/
#include "crc32c.h"
#include "engine_util.h"
#include "format.h"
#include "index.h"
#include "log.h"
#include "mmkv.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_crc32c(void)
{
    if (!begin_test("crc32c known answer")) return;
    CHECK(mmkv_crc32c(0, "123456789", 9) == 0xe3069283u, "got %08x",
          mmkv_crc32c(0, "123456789", 9));
    uint32_t split = mmkv_crc32c(mmkv_crc32c(0, "1234", 4), "56789", 5);
    CHECK(split == 0xe3069283u, "continued crc %08x", split);
    /* Long buffers go three lanes at a time (crc32c.c): the same as byte by byte, at every
    ** length around a block's and from every alignment. */
    static unsigned char buf[3 * 3 * 8192 + 64];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)((x = x * 1103515245u + 12345u) >> 16);
    size_t lengths[] = {0, 7, 8192, 3 * 8192 - 1, 3 * 8192, 3 * 8192 + 1, 3 * 8192 + 13,
                        6 * 8192, 6 * 8192 + 9, 9 * 8192 + 63};
    for (size_t l = 0; l < sizeof lengths / sizeof *lengths; l++)
        for (size_t off = 0; off < 3 && lengths[l] + off <= sizeof buf; off++) {
            uint32_t whole = mmkv_crc32c(7, buf + off, lengths[l]), bytes = 7;
            for (size_t i = 0; i < lengths[l]; i++)
                bytes = mmkv_crc32c(bytes, buf + off + i, 1);
            CHECK(whole == bytes, "length %zu at offset %zu: %08x in one call, %08x byte by byte",
                  lengths[l], off, whole, bytes);
        }
    /* Wide buffers go in parts on threads of their own: the same as in one part. */
    size_t wide = 2 * MMKV_CRC32C_WIDE_MIN + 3 * 8192 + 64;
    unsigned char *big = malloc(wide);
    CHECK(big != NULL, "malloc %zu", wide);
    for (size_t i = 0; big && i < wide; i++)
        big[i] = (unsigned char)((x = x * 1103515245u + 12345u) >> 16);
    size_t wide_lengths[] = {MMKV_CRC32C_WIDE_MIN - 1, MMKV_CRC32C_WIDE_MIN,
                             MMKV_CRC32C_WIDE_MIN + 1, MMKV_CRC32C_WIDE_MIN + 3 * 8192 + 5,
                             2 * MMKV_CRC32C_WIDE_MIN + 3 * 8192 + 63};
    for (size_t l = 0; big && l < sizeof wide_lengths / sizeof *wide_lengths; l++)
        for (size_t off = 0; off < 2; off++) {
            uint32_t parts = mmkv_crc32c_wide(7, big + off, wide_lengths[l]);
            uint32_t one = mmkv_crc32c(7, big + off, wide_lengths[l]);
            CHECK(parts == one, "wide, length %zu at offset %zu: %08x in parts, %08x in one",
                  wide_lengths[l], off, parts, one);
        }
    free(big);
    end_test();
}

static void test_key_rules(void)
{
    if (!begin_test("key equality follows SQLite")) return;
    int64_t i1, i2, i3;
    double r1, r2, r3, r4;
    mmkv_datum one = int_datum(&i1, 1), one_real = real_datum(&r1, 1.0);
    mmkv_datum zero = int_datum(&i2, 0), minus_zero = real_datum(&r2, -0.0);
    mmkv_datum big = int_datum(&i3, 9007199254740993LL),
               big_real = real_datum(&r3, 9007199254740992.0);
    mmkv_datum half = real_datum(&r4, 0.5);
    mmkv_datum text_one = text_datum("1"), text_a = text_datum("a"), blob_a = blob_datum("a", 1);
    mmkv_datum empty_text = text_datum(""), empty_blob = blob_datum("", 0);
    CHECK(mmkv_key_equal(&one, &one_real) && mmkv_key_hash(&one) == mmkv_key_hash(&one_real),
          "1 = 1.0");
    CHECK(mmkv_key_equal(&zero, &minus_zero) && mmkv_key_hash(&zero) == mmkv_key_hash(&minus_zero),
          "0 = -0.0");
    CHECK(!mmkv_key_equal(&big, &big_real), "2^53+1 <> 2^53 as real");
    CHECK(!mmkv_key_equal(&one, &text_one), "1 <> '1'");
    CHECK(!mmkv_key_equal(&text_a, &blob_a), "'a' <> x'61'");
    CHECK(!mmkv_key_equal(&empty_text, &empty_blob), "'' <> x''");
    CHECK(!mmkv_key_equal(&half, &zero), "0.5 <> 0");
    CHECK(mmkv_key_equal(&text_a, &text_a), "'a' = 'a'");
    end_test();
}

static void test_basic_crud(void)
{
    if (!begin_test("put, get, delete, commit, reopen")) return;
    const char *path = path_of("crud.mmkv");
    mmkv_conn *c = open_or_die(path, MMKV_SYNC_FULL);
    if (!c) {
        end_test();
        return;
    }
    CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "begin");
    for (int i = 0; i < 100; i++)
        CHECK_RC(put_int(c, i, i * 10, MMKV_PUT_INSERT), MMKV_OK, "put %d", i);
    CHECK_RC(put_int(c, 5, 0, MMKV_PUT_INSERT), MMKV_CONSTRAINT, "duplicate insert refused");
    CHECK_RC(put_int(c, 5, 55, MMKV_PUT_REPLACE), MMKV_OK, "replace");
    CHECK_RC(del_int(c, 7), MMKV_OK, "delete");
    CHECK_RC(del_int(c, 7), MMKV_NOTFOUND, "delete again");
    CHECK_EQ(get_int(c, 5), 55, "own writes visible");
    CHECK_EQ(get_int(c, 7), -1, "own writes visible");
    CHECK_RC(commit(c), MMKV_OK, "commit");
    CHECK_EQ(count_rows(c), 99, "scan count");
    mmkv_close(c);
    c = open_or_die(path, MMKV_SYNC_FULL);
    if (!c) {
        end_test();
        return;
    }
    CHECK_EQ(get_int(c, 5), 55, "after reopen");
    CHECK_EQ(get_int(c, 7), -1, "after reopen");
    CHECK_EQ(get_int(c, 99), 990, "after reopen");
    CHECK_EQ(mmkv_live_count(c), 99, "live count");
    mmkv_close(c);
    end_test();
}

static void test_savepoints(void)
{
    if (!begin_test("savepoints and rollback")) return;
    mmkv_conn *c = open_or_die(path_of("sp.mmkv"), MMKV_SYNC_NORMAL);
    if (!c) {
        end_test();
        return;
    }
    CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "begin");
    put_int(c, 1, 1, MMKV_PUT_INSERT);
    mmkv_txn_savepoint(c, 0);
    put_int(c, 2, 2, MMKV_PUT_INSERT);
    put_int(c, 1, 11, MMKV_PUT_REPLACE);
    mmkv_txn_savepoint(c, 1);
    del_int(c, 1);
    put_int(c, 3, 3, MMKV_PUT_INSERT);
    mmkv_txn_rollback_to(c, 1);
    CHECK_EQ(get_int(c, 1), 11, "rollback to 1");
    CHECK_EQ(get_int(c, 3), -1, "rollback to 1");
    CHECK_EQ(get_int(c, 2), 2, "rollback to 1");
    mmkv_txn_rollback_to(c, 0);
    CHECK_EQ(get_int(c, 1), 1, "rollback to 0");
    CHECK_EQ(get_int(c, 2), -1, "rollback to 0");
    put_int(c, 4, 4, MMKV_PUT_INSERT);
    mmkv_txn_release(c, 0);
    CHECK_RC(commit(c), MMKV_OK, "commit");
    CHECK_EQ(get_int(c, 1), 1, "committed state");
    CHECK_EQ(get_int(c, 4), 4, "committed state");
    CHECK_EQ(count_rows(c), 2, "committed state");
    CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "begin 2");
    put_int(c, 9, 9, MMKV_PUT_INSERT);
    del_int(c, 1);
    mmkv_txn_rollback(c);
    CHECK_EQ(get_int(c, 9), -1, "full rollback");
    CHECK_EQ(get_int(c, 1), 1, "full rollback");
    CHECK_EQ(count_rows(c), 2, "full rollback");
    mmkv_close(c);
    end_test();
}

static void test_isolation_and_busy(void)
{
    if (!begin_test("second connection: snapshot and busy")) return;
    const char *path = path_of("iso.mmkv");
    mmkv_conn *a = open_or_die(path, MMKV_SYNC_OFF), *b = open_or_die(path, MMKV_SYNC_OFF);
    if (!a || !b) {
        end_test();
        return;
    }
    CHECK_RC(mmkv_txn_begin(a), MMKV_OK, "a begins");
    put_int(a, 1, 100, MMKV_PUT_INSERT);
    CHECK_EQ(get_int(b, 1), -1, "b does not see uncommitted");
    CHECK_RC(mmkv_txn_begin(b), MMKV_BUSY, "b is busy");
    CHECK_RC(commit(a), MMKV_OK, "a commits");
    CHECK_EQ(get_int(b, 1), 100, "b sees commit");
    CHECK_RC(mmkv_txn_begin(b), MMKV_OK, "b may write now");
    put_int(b, 1, 200, MMKV_PUT_REPLACE);
    CHECK_EQ(get_int(a, 1), 100, "a sees committed version during b's write");
    mmkv_txn_rollback(b);
    CHECK_EQ(get_int(a, 1), 100, "rollback restores, for a");
    CHECK_EQ(get_int(b, 1), 100, "rollback restores, for b");
    mmkv_close(a);
    mmkv_close(b);
    end_test();
}

static void test_growth(void)
{
    if (!begin_test("index grows incrementally to 300k keys")) return;
    const char *path = path_of("grow.mmkv");
    mmkv_conn *c = open_or_die(path, MMKV_SYNC_OFF);
    if (!c) {
        end_test();
        return;
    }
    const int n = 300000;
    CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "begin");
    for (int i = 0; i < n && !current_failed; i++) {
        CHECK_RC(put_int(c, (int64_t)i * 7919, i, MMKV_PUT_INSERT), MMKV_OK, "put %d", i);
        if (i % 9973 == 0)
            for (int j = 0; j <= i; j += 997)
                CHECK_EQ(get_int(c, (int64_t)j * 7919), j, "get %d at %d", j, i);
    }
    CHECK_RC(commit(c), MMKV_OK, "commit");
    for (int i = 0; i < n && !current_failed; i++)
        CHECK_EQ(get_int(c, (int64_t)i * 7919), i, "get %d", i);
    CHECK_EQ(get_int(c, 1), -1, "absent key");
    mmkv_close(c);
    /* The index is derived data: without it, the same rows come back. */
    char index_path[600];
    snprintf(index_path, sizeof index_path, "%s-index", path);
    CHECK(unlink(index_path) == 0, "unlink index");
    c = open_or_die(path, MMKV_SYNC_OFF);
    if (c) {
        for (int i = 0; i < n && !current_failed; i += 13)
            CHECK_EQ(get_int(c, (int64_t)i * 7919), i, "rebuilt get %d", i);
        CHECK_EQ(count_rows(c), n, "rows after rebuild");
        mmkv_close(c);
    }
    end_test();
}

/* The offset of the committed record whose INTEGER key is k (the first, walking from the start). */
static uint64_t record_of_int_key(const char *path, int64_t k)
{
    int fd = open(path, O_RDONLY);
    uint64_t found = 0;
    mmkv_record_header h;
    for (uint64_t pos = MMKV_DATA_START; fd >= 0 && !found; ) {
        int64_t key;
        if (pread(fd, &h, sizeof h, (off_t)pos) != (ssize_t)sizeof h || h.key_len == 0) break;
        if (h.key_type == MMKV_INTEGER && h.key_len == 8 &&
            pread(fd, &key, 8, (off_t)(pos + sizeof h)) == 8 && key == k)
            found = pos;
        pos += (sizeof h + h.key_len + h.value_len + MMKV_RECORD_ALIGN - 1) / MMKV_RECORD_ALIGN *
               MMKV_RECORD_ALIGN;
    }
    if (fd >= 0) close(fd);
    return found;
}

/* Growing the index moves each slot by its record's key, read without the record's checksum: the
** slot's tag checks the key. A damaged key stops the move with an error that names the record;
** damage elsewhere in the record moves the slot right and shows at the record's next read. */
/* Kilobytes of the data file at path resident in this process's mappings (/proc/self/smaps). */
static long mapped_kb(const char *path)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[4096];
    long kb = 0;
    int in_file = 0;
    size_t n = strlen(path);
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        if (len && line[len - 1] == '\n') line[--len] = 0;
        unsigned long from, to;
        long v;
        if (sscanf(line, "%lx-%lx ", &from, &to) == 2) /* a mapping's first line ends in its file */
            in_file = len >= n && strcmp(line + len - n, path) == 0;
        else if (in_file && sscanf(line, "Rss: %ld kB", &v) == 1)
            kb += v;
    }
    fclose(f);
    return kb;
}

/* Keys [0, n) whose value does not read back as len bytes of (unsigned char)key, in a new
** snapshot. */
static int blob_values_wrong(mmkv_conn *c, int n, unsigned char *value, size_t len)
{
    mmkv_snapshot snap;
    if (mmkv_snapshot_take(c, &snap) != MMKV_OK) return n;
    int wrong = 0;
    for (int i = 0; i < n; i++) {
        int64_t ks;
        mmkv_datum key = int_datum(&ks, i);
        mmkv_row row;
        memset(value, (unsigned char)i, len);
        wrong += mmkv_get(c, &snap, &key, &row) != MMKV_OK || row.value.len != len ||
                 memcmp(row.value.bytes, value, len) != 0;
    }
    return wrong;
}

static void test_written_pages_dropped(void)
{
    if (!begin_test("a commit unmaps the pages it wrote, and they read back right"))
        return;
    for (int full = 0; full < 2 && !current_failed; full++) {
        const char *what = full ? "sync=full" : "sync=off";
        const char *path = path_of(full ? "drop-full.mmkv" : "drop-off.mmkv");
        mmkv_conn *c = open_or_die(path, full ? MMKV_SYNC_FULL : MMKV_SYNC_OFF);
        if (!c) break;
        static unsigned char value[1000];
        /* 4000 records of about 1 KiB: 4 MiB of log, each written through the map. */
        CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "%s: begin", what);
        for (int i = 0; i < 4000 && !current_failed; i++) {
            int64_t ks;
            mmkv_datum key = int_datum(&ks, i);
            memset(value, (unsigned char)i, sizeof value);
            mmkv_datum v = blob_datum(value, sizeof value);
            CHECK_RC(mmkv_put(c, &key, &v, MMKV_PUT_INSERT), MMKV_OK, "%s: put %d", what, i);
        }
        long before = mapped_kb(path);
        CHECK_RC(commit(c), MMKV_OK, "%s: commit", what);
        long after = mapped_kb(path);
        CHECK(before >= 3000, "%s: before the commit the written pages are mapped: %ld kB",
              what, before);
        CHECK(after >= 0 && after < 512, "%s: after the commit at most 512 kB of the file stay "
              "mapped here: got %ld kB (%ld before)", what, after, before);
        CHECK_EQ(blob_values_wrong(c, 4000, value, sizeof value), 0,
                 "%s: values read wrong after the commit", what);
        mmkv_close(c);
        c = open_or_die(path, MMKV_SYNC_OFF);
        if (!c) break;
        CHECK_EQ(blob_values_wrong(c, 4000, value, sizeof value), 0,
                 "%s: values read wrong after reopening", what);
        mmkv_close(c);
    }
    end_test();
}

static void test_growth_reads_keys(void)
{
    if (!begin_test("index growth: a damaged key stops a slot's move, a damaged value does not"))
        return;
    for (int damage_key = 0; damage_key < 2 && !current_failed; damage_key++) {
        const char *what = damage_key ? "key damaged" : "value damaged";
        const char *path = path_of(damage_key ? "grow-key.mmkv" : "grow-value.mmkv");
        mmkv_conn *c = open_or_die(path, MMKV_SYNC_OFF);
        if (!c) break;
        CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "%s: begin", what);
        for (int i = 0; i < 600 && !current_failed; i++)
            CHECK_RC(put_int(c, i, i * 10, MMKV_PUT_INSERT), MMKV_OK, "%s: put %d", what, i);
        CHECK_RC(commit(c), MMKV_OK, "%s: commit", what);
        uint64_t at = record_of_int_key(path, 17);
        CHECK(at != 0, "%s: the record of key 17 is in the file", what);
        int fd = open(path, O_RDWR);
        unsigned char byte;
        off_t where = (off_t)(at + sizeof(mmkv_record_header) + (damage_key ? 0 : 8));
        CHECK(fd >= 0 && pread(fd, &byte, 1, where) == 1, "%s: read the byte", what);
        byte ^= 0x5a;
        CHECK(pwrite(fd, &byte, 1, where) == 1, "%s: damage it", what);
        close(fd);
        /* 1024 slots hold 640 keys: the table grows, and its 600 slots move as keys are added. */
        CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "%s: begin", what);
        int rc = MMKV_OK, i;
        for (i = 600; i < 3000 && rc == MMKV_OK; i++) rc = put_int(c, i, i * 10, MMKV_PUT_INSERT);
        if (damage_key) {
            char want[64];
            snprintf(want, sizeof want, "offset %llu fails its checks", (unsigned long long)at);
            CHECK_RC(rc, MMKV_CORRUPT, "%s: a put while the index grows", what);
            CHECK(strstr(mmkv_errmsg(c), want), "%s: the error names the record: expected '%s', "
                  "got '%s'", what, want, mmkv_errmsg(c));
            mmkv_txn_rollback(c);
        } else {
            CHECK_RC(rc, MMKV_OK, "%s: put %d: %s", what, i - 1, mmkv_errmsg(c));
            CHECK_RC(commit(c), MMKV_OK, "%s: commit", what);
            CHECK_EQ(get_int(c, 17), -2, "%s: key 17 read (an error expected)", what);
            int wrong = 0;
            for (int k = 0; k < 3000; k++) wrong += k != 17 && get_int(c, k) != k * 10;
            CHECK_EQ(wrong, 0, "%s: other keys read wrong", what);
        }
        mmkv_close(c);
    }
    end_test();
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

static void test_foreign_file(void)
{
    if (!begin_test("foreign and damaged files refused, untouched")) return;
    const char *path = path_of("foreign.txt");
    const char text[] = "this is not an mmkv file, and it must stay exactly like this\n";
    write_file(path, text, sizeof text);
    mmkv_open_options options = {.sync = MMKV_SYNC_FULL};
    mmkv_conn *c = NULL;
    char *err = NULL;
    int rc = mmkv_open(path, &options, &c, &err);
    CHECK(rc == MMKV_NOTADB && err && strstr(err, path), "rc %d err %s", rc, err ? err : "");
    free(err);
    err = NULL;
    char back[sizeof text + 10];
    FILE *f = fopen(path, "rb");
    size_t got = fread(back, 1, sizeof back, f);
    fclose(f);
    CHECK(got == sizeof text && memcmp(back, text, got) == 0, "file changed");

    /* Both meta slots damaged, in a file whose commits were synced: corrupt, named. */
    const char *dpath = path_of("twometa.mmkv");
    mmkv_conn *d = open_or_die(dpath, MMKV_SYNC_FULL);
    if (d) {
        mmkv_txn_begin(d);
        put_int(d, 1, 1, MMKV_PUT_INSERT);
        commit(d);
        mmkv_close(d);
        int fd = open(dpath, O_RDWR);
        char junk[64];
        memset(junk, 0x5a, sizeof junk);
        CHECK(pwrite(fd, junk, sizeof junk, MMKV_META_OFFSET(0)) == 64, "write");
        CHECK(pwrite(fd, junk, sizeof junk, MMKV_META_OFFSET(1)) == 64, "write");
        close(fd);
        rc = mmkv_open(dpath, &options, &c, &err);
        CHECK(rc == MMKV_CORRUPT && err && strstr(err, dpath), "rc %d err %s", rc, err ? err : "");
        free(err);
    }
    end_test();
}

static void test_torn_meta_falls_back(void)
{
    if (!begin_test("a torn newest meta slot leaves the previous commit")) return;
    const char *path = path_of("torn.mmkv");
    mmkv_conn *c = open_or_die(path, MMKV_SYNC_FULL);
    if (!c) {
        end_test();
        return;
    }
    mmkv_txn_begin(c);
    put_int(c, 1, 1, MMKV_PUT_INSERT);
    commit(c); /* txid 1 -> slot 1 */
    mmkv_txn_begin(c);
    put_int(c, 2, 2, MMKV_PUT_INSERT);
    commit(c); /* txid 2 -> slot 0 */
    mmkv_close(c);
    int fd = open(path, O_RDWR);
    char byte;
    CHECK(pread(fd, &byte, 1, MMKV_META_OFFSET(0) + 20) == 1, "read");
    byte ^= 0x40;
    CHECK(pwrite(fd, &byte, 1, MMKV_META_OFFSET(0) + 20) == 1, "write");
    close(fd);
    c = open_or_die(path, MMKV_SYNC_OFF);
    if (c) {
        CHECK_EQ(get_int(c, 1), 1, "state of txid 1");
        CHECK_EQ(get_int(c, 2), -1, "state of txid 1");
        mmkv_close(c);
    }
    end_test();
}

static void test_writer_death(void)
{
    if (!begin_test("a writer killed mid-transaction leaves nothing of itself")) return;
    const char *path = path_of("death.mmkv");
    mmkv_conn *c = open_or_die(path, MMKV_SYNC_NORMAL);
    if (!c) {
        end_test();
        return;
    }
    mmkv_txn_begin(c);
    for (int i = 0; i < 1000; i++)
        put_int(c, i, i, MMKV_PUT_INSERT);
    commit(c);
    pid_t pid = fork();
    if (pid == 0) {
        /* The child shares nothing of the parent's engine: it opens anew after fork in a real
        ** program; here it writes through the inherited one and dies without committing. */
        mmkv_txn_begin(c);
        for (int i = 0; i < 5000; i++)
            put_int(c, i, -i - 1, MMKV_PUT_REPLACE);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    mmkv_close(c);
    c = open_or_die(path, MMKV_SYNC_NORMAL);
    if (c) {
        int bad = 0;
        for (int i = 0; i < 5000; i++)
            bad += get_int(c, i) != (i < 1000 ? i : -1);
        CHECK(bad == 0, "%d wrong keys", bad);
        CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "next writer");
        CHECK_RC(put_int(c, 2000, 1, MMKV_PUT_INSERT), MMKV_OK, "write");
        CHECK_RC(commit(c), MMKV_OK, "commit: %s", mmkv_errmsg(c));
        CHECK_EQ(get_int(c, 2000), 1, "after the commit");
        CHECK_EQ(get_int(c, 999), 999, "after the commit");
        mmkv_close(c);
    }
    end_test();
}

static void test_values(void)
{
    if (!begin_test("values of every type round-trip")) return;
    mmkv_conn *c = open_or_die(path_of("values.mmkv"), MMKV_SYNC_OFF);
    if (!c) {
        end_test();
        return;
    }
    mmkv_txn_begin(c);
    size_t big_n = 1 << 20;
    unsigned char *big = malloc(big_n);
    for (size_t i = 0; i < big_n; i++)
        big[i] = (unsigned char)(i * 31 + 7);
    mmkv_datum key_big = text_datum("big"), value_big = blob_datum(big, (uint32_t)big_n);
    mmkv_datum key_nul = text_datum("nul"), value_nul = {MMKV_TEXT, 3, "a\0b"};
    mmkv_datum key_null = text_datum("null"), value_null = {MMKV_NULL, 0, NULL};
    mmkv_datum key_empty = blob_datum("", 0), value_empty = text_datum("");
    CHECK_RC(mmkv_put(c, &key_big, &value_big, MMKV_PUT_INSERT), MMKV_OK, "big");
    CHECK_RC(mmkv_put(c, &key_nul, &value_nul, MMKV_PUT_INSERT), MMKV_OK, "nul");
    CHECK_RC(mmkv_put(c, &key_null, &value_null, MMKV_PUT_INSERT), MMKV_OK, "null");
    CHECK_RC(mmkv_put(c, &key_empty, &value_empty, MMKV_PUT_INSERT), MMKV_OK, "empty");
    CHECK_RC(commit(c), MMKV_OK, "commit");
    mmkv_snapshot s;
    mmkv_row row;
    mmkv_snapshot_take(c, &s);
    /* Each value is looked at only if it was found (the CHECK_RC has failed the test if not). */
    int rc = mmkv_get(c, &s, &key_big, &row);
    CHECK_RC(rc, MMKV_OK, "big back");
    CHECK(rc != MMKV_OK || (row.value.type == MMKV_BLOB && row.value.len == big_n &&
                            memcmp(row.value.bytes, big, big_n) == 0),
          "big back: type %d, %u bytes", row.value.type, (unsigned)row.value.len);
    rc = mmkv_get(c, &s, &key_nul, &row);
    CHECK_RC(rc, MMKV_OK, "nul back");
    CHECK(rc != MMKV_OK || (row.value.len == 3 && memcmp(row.value.bytes, "a\0b", 3) == 0),
          "nul back: %u bytes", (unsigned)row.value.len);
    rc = mmkv_get(c, &s, &key_null, &row);
    CHECK_RC(rc, MMKV_OK, "null back");
    CHECK(rc != MMKV_OK || row.value.type == MMKV_NULL, "null back: type %d", row.value.type);
    rc = mmkv_get(c, &s, &key_empty, &row);
    CHECK_RC(rc, MMKV_OK, "empty back");
    CHECK(rc != MMKV_OK ||
              (row.value.type == MMKV_TEXT && row.value.len == 0 && row.key.type == MMKV_BLOB),
          "empty back: value type %d, %u bytes, key type %d", row.value.type,
          (unsigned)row.value.len, row.key.type);
    free(big);
    mmkv_close(c);
    end_test();
}

/* ---- threads: writers moving amounts between accounts, readers checking the total ---- */

#define ACCOUNTS 16
#define ACCOUNT_START 1000
#define THREAD_SECONDS 1.0

typedef struct thread_job {
    const char *path;
    int writer;
    long commits, reads;
    const char *error;
    unsigned seed; /* of the thread's choices; the interleaving is the scheduler's */
} thread_job;

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int64_t get_in(mmkv_conn *conn, const mmkv_snapshot *snap, int64_t k)
{
    int64_t ks, v;
    mmkv_datum key = int_datum(&ks, k);
    mmkv_row row;
    if (mmkv_get(conn, snap, &key, &row) != MMKV_OK || row.value.type != MMKV_INTEGER) return -1;
    memcpy(&v, row.value.bytes, 8);
    return v;
}

static void *thread_main(void *arg)
{
    thread_job *job = arg;
    mmkv_open_options options = {.sync = MMKV_SYNC_OFF};
    mmkv_conn *conn = NULL;
    if (mmkv_open(job->path, &options, &conn, NULL) != MMKV_OK) {
        job->error = "open";
        return NULL;
    }
    unsigned seed = job->seed;
    double end = seconds_now() + THREAD_SECONDS;
    while (seconds_now() < end && !job->error) {
        if (job->writer) {
            int rc = mmkv_txn_begin(conn);
            if (rc == MMKV_BUSY) {
                sched_yield();
                continue;
            }
            mmkv_snapshot snap;
            mmkv_snapshot_take(conn, &snap);
            int64_t a = rand_r(&seed) % ACCOUNTS, b = rand_r(&seed) % ACCOUNTS;
            int64_t va = get_in(conn, &snap, a), vb = get_in(conn, &snap, b);
            if (va < 0 || vb < 0) job->error = "writer read";
            int64_t amount = va ? rand_r(&seed) % (va + 1) : 0;
            if (a != b) {
                put_int(conn, a, va - amount, MMKV_PUT_REPLACE);
                put_int(conn, b, vb + amount, MMKV_PUT_REPLACE);
            }
            /* Filler keys make the index grow and drain under the readers. */
            put_int(conn, ACCOUNTS + rand_r(&seed) % 100000, 1, MMKV_PUT_REPLACE);
            if (rand_r(&seed) % 5 == 0)
                mmkv_txn_rollback(conn);
            else if (commit(conn) == MMKV_OK)
                job->commits++;
        } else {
            mmkv_snapshot snap;
            if (mmkv_snapshot_take(conn, &snap) != MMKV_OK) job->error = "snapshot";
            int64_t total = 0;
            for (int64_t k = 0; k < ACCOUNTS; k++) {
                int64_t v = get_in(conn, &snap, k);
                if (v < 0) job->error = "reader read";
                total += v;
            }
            if (total != (int64_t)ACCOUNTS * ACCOUNT_START) job->error = "total changed";
            job->reads++;
        }
    }
    mmkv_close(conn);
    return NULL;
}

static void test_threads(void)
{
    if (!begin_test("threads: two writers, two readers, totals never change")) return;
    const char *path = path_of("threads.mmkv");
    mmkv_conn *c = open_or_die(path, MMKV_SYNC_OFF);
    if (!c) {
        end_test();
        return;
    }
    mmkv_txn_begin(c);
    for (int i = 0; i < ACCOUNTS; i++)
        put_int(c, i, ACCOUNT_START, MMKV_PUT_INSERT);
    commit(c);
    print_seed();
    thread_job jobs[4] = {{path, 1, 0, 0, NULL, seed_for(1)},
                          {path, 1, 0, 0, NULL, seed_for(2)},
                          {path, 0, 0, 0, NULL, seed_for(3)},
                          {path, 0, 0, 0, NULL, seed_for(4)}};
    pthread_t threads[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&threads[i], NULL, thread_main, &jobs[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < 4; i++)
        CHECK(!jobs[i].error, "thread %d: %s", i, jobs[i].error);
    CHECK(jobs[0].commits + jobs[1].commits > 10, "commits %ld", jobs[0].commits + jobs[1].commits);
    CHECK(jobs[2].reads + jobs[3].reads > 10, "reads %ld", jobs[2].reads + jobs[3].reads);
    mmkv_snapshot snap;
    mmkv_snapshot_take(c, &snap);
    int64_t total = 0;
    for (int k = 0; k < ACCOUNTS; k++)
        total += get_in(c, &snap, k);
    CHECK(total == (int64_t)ACCOUNTS * ACCOUNT_START, "final total %lld", (long long)total);
    mmkv_close(c);
    end_test();
}

/* ---- simulation: random operations against a model, checked after every step ---- */

#define SIM_INTS 600
#define SIM_KEYS                                                                                   \
    (SIM_INTS * 2) /* key i < SIM_INTS is the integer i; key SIM_INTS + i is the text i */
#define SIM_SAVEPOINTS 4
#define SIM_STEPS 40000

typedef struct sim_model {
    int64_t value[SIM_KEYS]; /* -1: absent */
} sim_model;

static mmkv_datum sim_key(int k, int64_t *storage, char *text)
{
    if (k < SIM_INTS) return int_datum(storage, k);
    /* Texts that read as numbers get second slots: exercise them too. */
    snprintf(text, 24, (k % 3 == 0) ? " %d" : "%d", k - SIM_INTS);
    return text_datum(text);
}

static int sim_check_all(mmkv_conn *c, const sim_model *m, const char *when, int step)
{
    mmkv_snapshot snap;
    if (mmkv_snapshot_take(c, &snap) != MMKV_OK) {
        CHECK(0, "%s step %d: snapshot", when, step);
        return 0;
    }
    int live = 0;
    for (int k = 0; k < SIM_KEYS; k++) {
        int64_t ks;
        char text[24];
        mmkv_datum key = sim_key(k, &ks, text);
        mmkv_row row;
        int rc = mmkv_get(c, &snap, &key, &row);
        int64_t got = -1;
        if (rc == MMKV_OK) memcpy(&got, row.value.bytes, 8);
        if (got != m->value[k] || (rc != MMKV_OK && rc != MMKV_NOTFOUND)) {
            CHECK(0, "%s step %d: key %d: got %lld (rc %d), model %lld", when, step, k,
                  (long long)got, rc, (long long)m->value[k]);
            return 0;
        }
        live += m->value[k] >= 0;
    }
    int rows = count_rows(c);
    CHECK(rows == live, "%s step %d: scan %d rows, model %d", when, step, rows, live);
    return rows == live;
}

static void test_simulation(void)
{
    if (!begin_test("simulation: 40000 random operations match a model")) return;
    const char *path = path_of("sim.mmkv");
    mmkv_conn *c = open_or_die(path, MMKV_SYNC_OFF);
    if (!c) {
        end_test();
        return;
    }
    static sim_model committed, work, saved[SIM_SAVEPOINTS];
    for (int k = 0; k < SIM_KEYS; k++)
        committed.value[k] = -1;
    work = committed;
    print_seed();
    unsigned seed = seed_for(12345);
    int in_txn = 0, depth = 0;
    for (int step = 0; step < SIM_STEPS && !current_failed; step++) {
        int op = rand_r(&seed) % 100;
        if (!in_txn) {
            if (op < 2) {
                mmkv_close(c); /* reopen, sometimes without the index */
                if (op == 0) {
                    char index_path[600];
                    snprintf(index_path, sizeof index_path, "%s-index", path);
                    unlink(index_path);
                }
                c = open_or_die(path, MMKV_SYNC_OFF);
                if (!c) break;
                sim_check_all(c, &committed, "reopen", step);
                continue;
            }
            CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "begin at %d", step);
            in_txn = 1;
            depth = 0;
            continue;
        }
        int k = rand_r(&seed) % SIM_KEYS;
        int64_t ks;
        char text[24];
        mmkv_datum key = sim_key(k, &ks, text);
        if (op < 65 && rand_r(&seed) % 2) {
            /* Read the key, then write it, as an UPDATE or DELETE by key does: the write takes the
            ** slot the read found, if nothing moved it since. */
            mmkv_snapshot snap;
            mmkv_row row;
            int rc = mmkv_snapshot_take(c, &snap);
            if (rc == MMKV_OK) rc = mmkv_get(c, &snap, &key, &row);
            int expect = work.value[k] >= 0 ? MMKV_OK : MMKV_NOTFOUND;
            CHECK(rc == expect, "read before write, step %d key %d: rc %d expected %d", step, k,
                  rc, expect);
        }
        if (op < 45) {
            int64_t vs, v = rand_r(&seed) % 1000000;
            mmkv_datum value = int_datum(&vs, v);
            int insert = op < 20;
            int rc = mmkv_put(c, &key, &value, insert ? MMKV_PUT_INSERT : MMKV_PUT_REPLACE);
            int expect = insert && work.value[k] >= 0 ? MMKV_CONSTRAINT : MMKV_OK;
            CHECK(rc == expect, "put step %d key %d: rc %d expected %d", step, k, rc, expect);
            if (rc == MMKV_OK) work.value[k] = v;
        } else if (op < 65) {
            int rc = mmkv_delete(c, &key);
            int expect = work.value[k] >= 0 ? MMKV_OK : MMKV_NOTFOUND;
            CHECK(rc == expect, "delete step %d key %d: rc %d expected %d", step, k, rc, expect);
            work.value[k] = -1;
        } else if (op < 72 && depth < SIM_SAVEPOINTS) {
            mmkv_txn_savepoint(c, depth);
            saved[depth++] = work;
        } else if (op < 78 && depth > 0) {
            int level = rand_r(&seed) % depth;
            mmkv_txn_rollback_to(c, level);
            work = saved[level];
            depth = level + 1;
        } else if (op < 82 && depth > 0) {
            int level = rand_r(&seed) % depth;
            mmkv_txn_release(c, level);
            depth = level;
        } else if (op < 92) {
            CHECK_RC(commit(c), MMKV_OK, "commit at %d", step);
            committed = work;
            in_txn = 0;
        } else if (op < 96) {
            mmkv_txn_rollback(c);
            work = committed;
            in_txn = 0;
        }
        if (step % 997 == 0) sim_check_all(c, &work, "in transaction", step);
    }
    if (in_txn) {
        commit(c);
        committed = work;
    }
    sim_check_all(c, &committed, "end", SIM_STEPS);
    mmkv_close(c);
    c = open_or_die(path, MMKV_SYNC_OFF);
    if (c) {
        sim_check_all(c, &committed, "final reopen", SIM_STEPS);
        mmkv_close(c);
    }
    end_test();
}

/* A write after a read of the same key takes the slot the read found (mmkv_txn, last_hit): right
** while the index grows and drains under it, and after a savepoint rolled the read's version back.
** Each key is read and then rewritten after every insert, so that some of these updates are the
** write whose room-making places a bigger table or moves the read's slot. */
static void test_read_then_write(void)
{
    if (!begin_test("a write after a read of its key, through growth, drains and rollbacks")) return;
    const char *path = path_of("readwrite.mmkv");
    mmkv_conn *c = open_or_die(path, MMKV_SYNC_OFF);
    if (!c) {
        end_test();
        return;
    }
    enum { KEYS = 30000 };
    static int64_t model[KEYS];
    CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "begin");
    for (int i = 0; i < KEYS && !current_failed; i++) {
        CHECK_RC(put_int(c, i, i, MMKV_PUT_INSERT), MMKV_OK, "insert %d", i);
        model[i] = i;
        int k = i / 2;
        CHECK_EQ(get_int(c, k), model[k], "read of %d after insert %d", k, i);
        CHECK_RC(put_int(c, k, model[k] + KEYS, MMKV_PUT_REPLACE), MMKV_OK, "update %d", k);
        model[k] += KEYS;
        if (i % 1000 == 999) {
            /* The read's version rolled back, the same key written again at the same place. */
            mmkv_txn_savepoint(c, 0);
            CHECK_EQ(get_int(c, k), model[k], "read of %d in the savepoint", k);
            CHECK_RC(put_int(c, k, -5, MMKV_PUT_REPLACE), MMKV_OK, "update %d in the savepoint", k);
            CHECK_EQ(get_int(c, k), -5, "read of %d after its update", k);
            mmkv_txn_rollback_to(c, 0);
            mmkv_txn_release(c, 0);
            CHECK_RC(put_int(c, k, model[k] + 1, MMKV_PUT_REPLACE), MMKV_OK,
                     "update %d after the rollback", k);
            model[k] += 1;
            CHECK_EQ(get_int(c, k), model[k], "read of %d after the rollback", k);
            CHECK_RC(del_int(c, k), MMKV_OK, "delete %d after a read", k);
            CHECK_EQ(get_int(c, k), -1, "read of %d after its delete", k);
            CHECK_RC(put_int(c, k, model[k], MMKV_PUT_INSERT), MMKV_OK, "insert %d again", k);
        }
    }
    CHECK_RC(commit(c), MMKV_OK, "commit");
    for (int pass = 0; pass < 2 && !current_failed; pass++) {
        int wrong = 0, first = 0;
        int64_t read = 0;
        for (int i = 0; i < KEYS; i++) {
            int64_t v = get_int(c, i);
            if (v != model[i] && wrong++ == 0) {
                first = i;
                read = v;
            }
        }
        CHECK(wrong == 0, "%s: %d keys wrong, the first %d (%lld expected, %lld read)",
              pass ? "after reopening" : "after commit", wrong, first, (long long)model[first],
              (long long)read);
        CHECK_EQ(mmkv_live_count(c), KEYS, "live count");
        mmkv_close(c);
        c = open_or_die(path, MMKV_SYNC_OFF);
        if (!c) break;
    }
    if (c) mmkv_close(c);
    end_test();
}

/* ---- an owning database's record decides: the log follows it either way ---- */

static void test_owner_authority(void)
{
    if (!begin_test("owned file: the log rolls back and forward to the owner's record")) return;
    const char *path = path_of("owned.mmkv");
    mmkv_open_options options = {.sync = MMKV_SYNC_NORMAL, .owner_id = 42};
    mmkv_conn *c = NULL;
    char *err = NULL;
    int rc = mmkv_open(path, &options, &c, &err);
    CHECK_RC(rc, MMKV_OK, "open owned: %s", err ? err : "");
    free(err);
    if (!c) {
        end_test();
        return;
    }
    mmkv_commit before, after;
    CHECK_RC(mmkv_committed(c, &before), MMKV_OK, "committed");
    CHECK_RC(mmkv_txn_begin_at(c, &before), MMKV_OK, "begin 1");
    put_int(c, 1, 10, MMKV_PUT_INSERT);
    CHECK_RC(commit(c), MMKV_OK, "commit 1");
    mmkv_txn_outcome(c, &after);
    /* The database never recorded the next commit (it rolled back after mmkv's prepare): */
    CHECK_RC(mmkv_txn_begin_at(c, &after), MMKV_OK, "begin 2");
    put_int(c, 2, 20, MMKV_PUT_INSERT);
    put_int(c, 1, 11, MMKV_PUT_REPLACE);
    CHECK_RC(mmkv_txn_prepare(c), MMKV_OK, "prepare 2");
    mmkv_txn_commit(c);
    CHECK_RC(mmkv_txn_begin_at(c, &after), MMKV_OK, "begin 3 rolls back to commit 1");
    mmkv_txn_rollback(c);
    mmkv_snapshot snap;
    CHECK_RC(mmkv_snapshot_at(c, &after, &snap), MMKV_OK, "snapshot");
    CHECK_EQ(get_in(c, &snap, 1), 10, "state of commit 1");
    CHECK_EQ(get_in(c, &snap, 2), -1, "state of commit 1");
    CHECK_RC(mmkv_committed(c, &before), MMKV_OK, "meta slots follow the record");
    CHECK_EQ(before.txid, after.txid, "meta slots follow the record");
    CHECK_EQ(before.tail, after.tail, "meta slots follow the record");
    /* The database recorded a commit whose meta write was lost: roll forward. */
    CHECK_RC(mmkv_txn_begin_at(c, &after), MMKV_OK, "begin 4");
    put_int(c, 3, 30, MMKV_PUT_INSERT);
    CHECK_RC(mmkv_txn_prepare(c), MMKV_OK, "prepare 4");
    mmkv_commit recorded;
    mmkv_txn_outcome(c, &recorded);
    mmkv_txn_rollback(c); /* undoes the meta write, as a crash before it would have lost it */
    CHECK_RC(mmkv_txn_begin_at(c, &recorded), MMKV_OK, "begin 5 rolls forward");
    mmkv_txn_rollback(c);
    CHECK_RC(mmkv_snapshot_at(c, &recorded, &snap), MMKV_OK, "snapshot 2");
    CHECK_EQ(get_in(c, &snap, 3), 30, "rolled forward");
    CHECK_EQ(get_in(c, &snap, 1), 10, "rolled forward");
    mmkv_close(c);
    mmkv_open_options other = {.sync = MMKV_SYNC_NORMAL, .owner_id = 43},
                      none = {.sync = MMKV_SYNC_NORMAL};
    rc = mmkv_open(path, &other, &c, &err);
    CHECK(rc != MMKV_OK && err && strstr(err, "belongs to another table"), "another owner: %d %s", rc,
          err ? err : "");
    free(err);
    err = NULL;
    rc = mmkv_open(path, &none, &c, &err);
    CHECK(rc != MMKV_OK && err && strstr(err, "belongs to a database"), "no owner: %d %s", rc,
          err ? err : "");
    free(err);
    end_test();
}

/* ---- the integrity check finds what readers would trip on; a rebuild repairs the index ---- */

/* A child process opens path, commits keys 0..n-1 and dies between transactions: its index stays
** marked in use by this boot, with no writer active. */
static void die_between_transactions(const char *path, int n)
{
    pid_t pid = fork();
    if (pid == 0) {
        mmkv_conn *c = open_or_die(path, MMKV_SYNC_OFF);
        if (!c) _exit(1);
        mmkv_txn_begin(c);
        for (int i = 0; i < n; i++)
            put_int(c, i, i * 3, MMKV_PUT_INSERT);
        _exit(commit(c) == MMKV_OK ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
}

static mmkv_index_header read_index_header(int fd)
{
    mmkv_index_header h;
    memset(&h, 0, sizeof h);
    if (pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) memset(&h, 0, sizeof h);
    return h;
}

static void test_in_use_index_checked(void)
{
    if (!begin_test("an index left in use by a dead process is checked before it is trusted"))
        return;
    /* 700 keys: the table grew at 640 and is still draining the old one. */
    static const char *damage[] = {"none",
                                   "a slot zeroed",
                                   "an old slot zeroed",
                                   "a slot pointed elsewhere",
                                   "the drain cursor moved on",
                                   "the table size halved",
                                   "a range to give back over the table"};
    for (size_t d = 0; d < sizeof damage / sizeof *damage && !current_failed; d++) {
        char name[64];
        snprintf(name, sizeof name, "in-use-%zu.mmkv", d);
        const char *path = path_of(name);
        die_between_transactions(path, 700);
        char index_path[600];
        snprintf(index_path, sizeof index_path, "%s-index", path);
        int fd = open(index_path, O_RDWR);
        mmkv_index_header h = read_index_header(fd);
        CHECK(h.state == MMKV_INDEX_IN_USE && !h.writer_active && h.old_offset != 0,
              "%s: the child left an index in use, draining (state %u, old %llu)", damage[d],
              h.state, (unsigned long long)h.old_offset);
        uint64_t table = d == 2 ? h.old_offset : h.table_offset;
        uint64_t slots = d == 2 ? h.old_slots : h.table_slots;
        uint64_t at = 0, slot = 0;
        for (uint64_t i = d == 2 ? h.drain_cursor : 0; i < slots && !at; i++) {
            if (pread(fd, &slot, 8, (off_t)(table + i * 8)) == 8 && mmkv_slot_is_entry(slot))
                at = table + i * 8;
        }
        if (d == 1 || d == 2) {
            uint64_t zero = 0;
            CHECK(at && pwrite(fd, &zero, 8, (off_t)at) == 8, "%s", damage[d]);
        } else if (d == 3) {
            slot += 1; /* the next record's place */
            CHECK(at && pwrite(fd, &slot, 8, (off_t)at) == 8, "%s", damage[d]);
        } else if (d == 4) {
            h.drain_cursor = h.old_slots - 1;
            CHECK(pwrite(fd, &h, sizeof h, 0) == (ssize_t)sizeof h, "%s", damage[d]);
        } else if (d == 5) {
            h.table_slots /= 2;
            CHECK(pwrite(fd, &h, sizeof h, 0) == (ssize_t)sizeof h, "%s", damage[d]);
        } else if (d == 6) {
            h.give_back_offset = h.table_offset;
            h.give_back_end = h.table_offset + 4096;
            CHECK(pwrite(fd, &h, sizeof h, 0) == (ssize_t)sizeof h, "%s", damage[d]);
        }
        close(fd);
        mmkv_conn *c = open_or_die(path, MMKV_SYNC_OFF);
        if (!c) break;
        int bad = 0;
        for (int i = 0; i < 710; i++)
            bad += get_int(c, i) != (i < 700 ? i * 3 : -1);
        CHECK(bad == 0, "%s: %d keys wrong", damage[d], bad);
        CHECK_EQ(count_rows(c), 700, "%s: rows a scan finds", damage[d]);
        CHECK_RC(mmkv_check(c, NULL), MMKV_OK, "%s: %s", damage[d], mmkv_errmsg(c));
        fd = open(index_path, O_RDONLY);
        mmkv_index_header after = read_index_header(fd);
        close(fd);
        /* Trusted as it was, or (damaged) rebuilt into a table of its own. */
        CHECK((after.table_offset == h.table_offset) == (d == 0), "%s: table at %llu, was %llu",
              damage[d], (unsigned long long)after.table_offset,
              (unsigned long long)h.table_offset);
        CHECK(mmkv_txn_begin(c) == MMKV_OK && put_int(c, 5000, 1, MMKV_PUT_INSERT) == MMKV_OK &&
                  commit(c) == MMKV_OK && get_int(c, 5000) == 1 && get_int(c, 699) == 699 * 3,
              "%s: a write after: %s", damage[d], mmkv_errmsg(c));
        mmkv_close(c);
    }
    end_test();
}

/* A drained table's place goes back to the file system a piece at a time, by later writes, and
** every byte of it in the end; no table is placed over it meanwhile. */
static void test_drained_table_given_back(void)
{
    if (!begin_test("a drained index table is given back by the writes after its drain")) return;
    const char *path = path_of("give-back.mmkv");
    char index_path[600];
    snprintf(index_path, sizeof index_path, "%s-index", path);
    mmkv_conn *c = open_or_die(path, MMKV_SYNC_OFF);
    if (!c) {
        end_test();
        return;
    }
    CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "begin");
    int fd = open(index_path, O_RDONLY);
    int pending_seen = 0, given_back = 0, k = 0;
    uint64_t range_at = 0, range_end = 0;
    /* 80000 keys: the table doubles from 1024 slots to 131072, each drain followed by its give-back. */
    for (; k < 80000 && !current_failed; k++) {
        CHECK_RC(put_int(c, k, k * 3, MMKV_PUT_INSERT), MMKV_OK, "put %d", k);
        mmkv_index_header h = read_index_header(fd);
        if (h.give_back_end && !range_end) {
            pending_seen++;
            range_at = h.give_back_offset;
            range_end = h.give_back_end;
            CHECK(!h.old_offset, "key %d: a range to give back while a table drains", k);
            CHECK(range_end <= h.table_offset ||
                      range_at >= h.table_offset + h.table_slots * sizeof(mmkv_slot),
                  "key %d: the range [%llu, %llu) overlaps the table", k,
                  (unsigned long long)range_at, (unsigned long long)range_end);
        } else if (!h.give_back_end && range_end) {
            given_back++;
            range_end = 0;
        }
    }
    CHECK_RC(commit(c), MMKV_OK, "commit");
    CHECK(pending_seen >= 5, "drained tables given back later: %d seen", pending_seen);
    CHECK(given_back >= pending_seen - 1, "of %d ranges, %d all given back by later writes",
          pending_seen, given_back);
    int wrong = 0;
    for (int i = 0; i < k; i++) wrong += get_int(c, i) != i * 3;
    CHECK_EQ(wrong, 0, "keys read wrong");
    mmkv_close(c);
    /* Closed: nothing pending, and the file holds little more than its one table (1 MiB). */
    mmkv_index_header h = read_index_header(fd);
    struct stat st;
    CHECK(fstat(fd, &st) == 0, "stat the index");
    CHECK(!h.give_back_end, "after the close, [%llu, %llu) still to give back",
          (unsigned long long)h.give_back_offset, (unsigned long long)h.give_back_end);
    CHECK((uint64_t)st.st_blocks * 512 <= h.table_slots * sizeof(mmkv_slot) + (256u << 10),
          "index allocated %llu bytes for a table of %llu", (unsigned long long)st.st_blocks * 512,
          (unsigned long long)(h.table_slots * sizeof(mmkv_slot)));
    close(fd);
    end_test();
}

static void test_check_and_rebuild(void)
{
    if (!begin_test("integrity check: a damaged index is found, rebuild-index repairs it")) return;
    const char *path = path_of("check.mmkv");
    mmkv_conn *c = open_or_die(path, MMKV_SYNC_OFF);
    if (!c) {
        end_test();
        return;
    }
    mmkv_txn_begin(c);
    for (int i = 0; i < 500; i++)
        put_int(c, i, i, MMKV_PUT_INSERT);
    for (int i = 0; i < 100; i++)
        put_int(c, i, -i, MMKV_PUT_REPLACE);
    for (int i = 100; i < 150; i++)
        del_int(c, i);
    commit(c);
    CHECK_RC(mmkv_check(c, NULL), MMKV_OK, "clean: %s", mmkv_errmsg(c));
    /* Zero the index's tables behind the engine's back (the mapping is shared). */
    char index_path[600];
    snprintf(index_path, sizeof index_path, "%s-index", path);
    int fd = open(index_path, O_RDWR);
    struct stat st;
    fstat(fd, &st);
    size_t n = (size_t)st.st_size - MMKV_PAGE_SIZE;
    char *zeros = calloc(1, n);
    CHECK(pwrite(fd, zeros, n, MMKV_PAGE_SIZE) == (ssize_t)n, "zero the tables");
    free(zeros);
    close(fd);
    int rc = mmkv_check(c, NULL);
    CHECK(rc == MMKV_CORRUPT && strstr(mmkv_errmsg(c), "index") && strstr(mmkv_errmsg(c), path),
          "damaged: %d %s", rc, mmkv_errmsg(c));
    CHECK(mmkv_txn_begin(c) == MMKV_OK && mmkv_rebuild(c) == MMKV_OK, "rebuild: %s",
          mmkv_errmsg(c));
    commit(c);
    CHECK_RC(mmkv_check(c, NULL), MMKV_OK, "after rebuild: %s", mmkv_errmsg(c));
    CHECK_EQ(get_int(c, 5), -5, "rows");
    CHECK_EQ(get_int(c, 120), -1, "rows");
    CHECK_EQ(get_int(c, 300), 300, "rows");
    mmkv_close(c);
    end_test();
}

/* The offset of the first record of transaction txid in a data file, or 0. */
static uint64_t first_record_of(const char *path, uint64_t txid)
{
    int fd = open(path, O_RDONLY);
    uint64_t pos = MMKV_DATA_START, found = 0;
    mmkv_record_header h;
    while (!found && pread(fd, &h, sizeof h, (off_t)pos) == (ssize_t)sizeof h && h.key_type) {
        if (h.txid == txid) found = pos;
        pos += (sizeof h + h.key_len + h.value_len + 7) / 8 * 8;
    }
    close(fd);
    return found;
}

static void zero_bytes(const char *path, uint64_t at, size_t n)
{
    char zeros[64] = {0};
    int fd = open(path, O_RDWR);
    if (pwrite(fd, zeros, n, (off_t)at) != (ssize_t)n) printf("# cannot write %s\n", path);
    close(fd);
}

static char *index_of(const char *path)
{
    static char buf[600];
    snprintf(buf, sizeof buf, "%s-index", path);
    return buf;
}

/* Transaction t (1..5) inserts keys t*100..t*100+9 = t, replaces key (t-1)*100 with -t and
** deletes key (t-1)*100+9. The state after commit n, for key k: */
static int64_t salvage_model(int n, int64_t k)
{
    int t = (int)(k / 100), i = (int)(k % 100);
    if (t < 1 || t > n || i > 9) return -1;
    if (i == 9 && t < n) return -1;
    if (i == 0 && t < n) return -(t + 1);
    return t;
}

static void salvage_txn(mmkv_conn *c, int t)
{
    for (int i = 0; i < 10; i++)
        put_int(c, t * 100 + i, t, MMKV_PUT_INSERT);
    if (t > 1) {
        put_int(c, (t - 1) * 100, -t, MMKV_PUT_REPLACE);
        del_int(c, (t - 1) * 100 + 9);
    }
}

static int salvage_state_is(mmkv_conn *c, const mmkv_snapshot *snap, int n)
{
    int bad = 0;
    for (int64_t k = 0; k < 700; k++)
        bad += get_in(c, snap, k) != salvage_model(n, k);
    return bad;
}

/* A child process makes commits 1..5 and stops without closing (with sync=off, none of it was made
** durable); for an owned file (owner != 0) it sends the database's record of commit 5. */
static mmkv_commit commits_then_crash(const char *path, mmkv_sync sync, uint64_t owner)
{
    int fds[2];
    mmkv_commit record;
    memset(&record, 0, sizeof record);
    if (pipe(fds) != 0) return record;
    pid_t pid = fork();
    if (pid == 0) {
        mmkv_open_options options = {.sync = sync, .owner_id = owner};
        mmkv_conn *c = NULL;
        if (mmkv_open(path, &options, &c, NULL) != MMKV_OK) _exit(1);
        mmkv_committed(c, &record);
        for (int t = 1; t <= 5; t++) {
            if (owner ? mmkv_txn_begin_at(c, &record) : mmkv_txn_begin(c)) _exit(1);
            salvage_txn(c, t);
            if (mmkv_txn_prepare(c) != MMKV_OK) _exit(1);
            mmkv_txn_outcome(c, &record);
            mmkv_txn_commit(c);
        }
        _exit(write(fds[1], &record, sizeof record) == sizeof record ? 0 : 1);
    }
    close(fds[1]);
    if (read(fds[0], &record, sizeof record) != sizeof record) memset(&record, 0, sizeof record);
    close(fds[0]);
    waitpid(pid, NULL, 0);
    return record;
}

static void test_salvage(void)
{
    if (!begin_test(
            "sync=off: after lost writes, the longest whole prefix of transactions survives"))
        return;
    /* A file that is its own authority: lose a record of commit 4, or both meta slots. */
    for (int damage = 0; damage < 2 && !current_failed; damage++) {
        const char *path = path_of(damage ? "salvage-meta.mmkv" : "salvage-record.mmkv");
        CHECK_EQ(commits_then_crash(path, MMKV_SYNC_OFF, 0).txid, 5, "the child's commits");
        mmkv_conn *c;
        if (damage == 0)
            zero_bytes(path, first_record_of(path, 4) + 40, 8);
        else
            zero_bytes(path, MMKV_META_OFFSET(0), 64), zero_bytes(path, MMKV_META_OFFSET(1), 64);
        unlink(index_of(path)); /* as after a power cut: the index is rebuilt */
        c = open_or_die(path, MMKV_SYNC_OFF);
        if (!c) break;
        int want = damage ? 5 : 3;
        mmkv_snapshot snap;
        mmkv_snapshot_take(c, &snap);
        CHECK_EQ(salvage_state_is(c, &snap, want), 0, "damage %d: %d keys differ from commit %d",
                 damage, salvage_state_is(c, &snap, want), want);
        CHECK_RC(mmkv_check(c, NULL), MMKV_OK, "damage %d: %s", damage, mmkv_errmsg(c));
        mmkv_txn_begin(c);
        salvage_txn(c, want + 1);
        CHECK_RC(commit(c), MMKV_OK, "a commit after salvage");
        mmkv_close(c);
        unlink(index_of(path));
        c = open_or_die(path, MMKV_SYNC_OFF);
        if (!c) break;
        mmkv_snapshot_take(c, &snap);
        CHECK_EQ(salvage_state_is(c, &snap, want + 1), 0,
                 "damage %d: keys differ from commit %d after the next commit", damage, want + 1);
        CHECK_RC(mmkv_check(c, NULL), MMKV_OK, "damage %d: after the next commit and a rebuild: %s",
                 damage, mmkv_errmsg(c));
        mmkv_close(c);
    }
    /* The same damage in a file whose commits were synced, or that was closed cleanly since (which
    ** makes the log durable), is reported, never salvaged. */
    for (int synced_by = 0; synced_by < 2 && !current_failed; synced_by++) {
        const char *synced = path_of(synced_by ? "salvage-closed.mmkv" : "salvage-synced.mmkv");
        mmkv_conn *c = open_or_die(synced, synced_by ? MMKV_SYNC_OFF : MMKV_SYNC_FULL);
        if (!c) break;
        for (int t = 1; t <= 5; t++) {
            mmkv_txn_begin(c);
            salvage_txn(c, t);
            commit(c);
        }
        mmkv_close(c);
        zero_bytes(synced, first_record_of(synced, 4) + 40, 8);
        unlink(index_of(synced));
        mmkv_open_options options = {.sync = MMKV_SYNC_FULL};
        char *err = NULL;
        int rc = mmkv_open(synced, &options, &c, &err);
        CHECK(rc == MMKV_CORRUPT && err && strstr(err, synced), "synced by %s: %d %s",
              synced_by ? "a clean close" : "sync=full", rc, err ? err : "");
        free(err);
    }
    /* A file its database owns, whose record names commit 5 while the log lost part of commit 4:
    ** readers see commit 3, and the next writer pads the log up to the record and goes on. */
    const char *owned = path_of("salvage-owned.mmkv");
    mmkv_open_options options = {.sync = MMKV_SYNC_OFF, .owner_id = 77};
    char *err = NULL;
    mmkv_conn *c = NULL;
    mmkv_commit record = commits_then_crash(owned, MMKV_SYNC_OFF, 77);
    CHECK_EQ(record.txid, 5, "the child's commits");
    zero_bytes(owned, first_record_of(owned, 4) + 40, 8);
    unlink(index_of(owned));
    c = NULL;
    mmkv_open(owned, &options, &c, &err);
    free(err);
    if (!c) {
        end_test();
        return;
    }
    mmkv_snapshot snap;
    CHECK(mmkv_snapshot_at(c, &record, &snap) == MMKV_OK && salvage_state_is(c, &snap, 3) == 0,
          "readers of the record see commit 3");
    CHECK_RC(mmkv_check(c, &record), MMKV_OK, "check before the pad: %s", mmkv_errmsg(c));
    CHECK_RC(mmkv_txn_begin_at(c, &record), MMKV_OK, "begin at the record: %s", mmkv_errmsg(c));
    mmkv_txn_rollback(c);
    CHECK(mmkv_snapshot_at(c, &record, &snap) == MMKV_OK && salvage_state_is(c, &snap, 3) == 0,
          "padded: readers of the record still see commit 3");
    CHECK_RC(mmkv_check(c, &record), MMKV_OK, "check after the pad: %s", mmkv_errmsg(c));
    mmkv_txn_begin_at(c, &record);
    salvage_txn(c, 4);
    CHECK_RC(mmkv_txn_prepare(c), MMKV_OK, "prepare after the pad");
    mmkv_txn_outcome(c, &record);
    mmkv_txn_commit(c);
    CHECK(mmkv_snapshot_at(c, &record, &snap) == MMKV_OK && salvage_state_is(c, &snap, 4) == 0 &&
              mmkv_check(c, &record) == MMKV_OK,
          "the next commit: %s", mmkv_errmsg(c));
    mmkv_close(c);
    unlink(index_of(owned));
    c = NULL;
    mmkv_open(owned, &options, &c, &err);
    free(err);
    if (c) {
        CHECK(mmkv_snapshot_at(c, &record, &snap) == MMKV_OK &&
                  salvage_state_is(c, &snap, 4) == 0 && mmkv_check(c, &record) == MMKV_OK,
              "rebuilt again: %s", mmkv_errmsg(c));
        mmkv_close(c);
    }
    end_test();
}

/* An owned file whose newest meta slot was lost (it is never synced) while the records and the
** database's record of commit 5 survived: a reader of that record must see commit 5, although
** recovery rebuilt the index only as far as the meta slots go. */
static void test_reader_catches_up(void)
{
    if (!begin_test(
            "owned file: a reader of a record ahead of the meta slots sees the whole commit"))
        return;
    const char *path = path_of("catch-up.mmkv");
    mmkv_commit record = commits_then_crash(path, MMKV_SYNC_FULL, 91);
    CHECK_EQ(record.txid, 5, "the child's commits");
    int fd = open(path, O_RDWR);
    mmkv_meta m[2];
    CHECK(pread(fd, &m[0], sizeof m[0], MMKV_META_OFFSET(0)) == sizeof m[0] &&
              pread(fd, &m[1], sizeof m[1], MMKV_META_OFFSET(1)) == sizeof m[1],
          "read the meta slots");
    int newest = m[1].txid > m[0].txid;
    CHECK_EQ(m[newest].txid, 5, "the newest meta slot is commit 5's");
    char zeros[sizeof(mmkv_meta)] = {0};
    CHECK(pwrite(fd, zeros, sizeof zeros, MMKV_META_OFFSET(newest)) == sizeof zeros, "lose it");
    close(fd);
    unlink(index_of(path)); /* as after a power cut: the index is rebuilt, to commit 4 */
    mmkv_open_options options = {.sync = MMKV_SYNC_FULL, .owner_id = 91};
    mmkv_conn *c = NULL;
    char *err = NULL;
    CHECK_RC(mmkv_open(path, &options, &c, &err), MMKV_OK, "open: %s", err ? err : "");
    free(err);
    if (!c) {
        end_test();
        return;
    }
    mmkv_snapshot snap;
    CHECK_RC(mmkv_snapshot_at(c, &record, &snap), MMKV_OK, "snapshot: %s", mmkv_errmsg(c));
    CHECK_EQ(salvage_state_is(c, &snap, 5), 0, "%d keys differ from commit 5",
             salvage_state_is(c, &snap, 5));
    CHECK_RC(mmkv_check(c, &record), MMKV_OK, "integrity check: %s", mmkv_errmsg(c));
    mmkv_commit meta;
    CHECK_RC(mmkv_committed(c, &meta), MMKV_OK, "the meta slots caught up");
    CHECK_EQ(meta.txid, 5, "the meta slots caught up");
    CHECK_EQ(meta.tail, record.tail, "the meta slots caught up");
    mmkv_close(c);
    end_test();
}

/* ---- many tables in one process, and files growing through views under readers ---- */

#define MANY_TABLES 1000
#define DESCRIPTORS_PER_TABLE 2 /* the data file and the index */
#define SPARE_DESCRIPTORS 64    /* stdio, the test directory, /proc reads */

/* Raises the soft limit on descriptors (to the hard limit) if `need` exceed it; 0, with why set,
** if even the hard limit is too low. */
static int want_descriptors(rlim_t need, char *why, size_t why_size)
{
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0) {
        snprintf(why, why_size, "getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return 0;
    }
    if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < need) {
        if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < need) {
            snprintf(why, why_size,
                     "%llu descriptors are needed, and the hard limit (ulimit -Hn) is %llu: raise "
                     "it to run this test",
                     (unsigned long long)need, (unsigned long long)lim.rlim_max);
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &lim) != 0) {
            snprintf(why, why_size, "setrlimit(RLIMIT_NOFILE, %llu): %s",
                     (unsigned long long)lim.rlim_cur, strerror(errno));
            return 0;
        }
    }
    return 1;
}

/* The process's address space (VmSize) in KiB, or -1. */
static long vm_size_kib(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    if (!f) return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %ld kB", &kib) == 1) break;
    fclose(f);
    return kib;
}

/* How many views map the file at path: each maps the file from offset 0, so each has one line in
** /proc/self/maps at offset 0 (the kernel merges the pieces a view maps as the file grows). */
static int views_of(const char *path)
{
    char real[PATH_MAX];
    if (!realpath(path, real)) return -1;
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f) return -1;
    char line[PATH_MAX + 128];
    int views = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long offset;
        int name_at = 0;
        if (sscanf(line, "%*s %*s %llx %*s %*s %n", &offset, &name_at) < 1 || !name_at) continue;
        char *name = line + name_at;
        name[strcspn(name, "\n")] = 0;
        views += offset == 0 && strcmp(name, real) == 0;
    }
    fclose(f);
    return views;
}

/* The permissions /proc/self/maps shows for the first view of the file at path ("rw-s"), or "". */
static const char *view_permissions(const char *path)
{
    static char perms[8];
    char real[PATH_MAX];
    perms[0] = 0;
    FILE *f = realpath(path, real) ? fopen("/proc/self/maps", "re") : NULL;
    if (!f) return perms;
    char line[PATH_MAX + 128];
    while (fgets(line, sizeof line, f)) {
        char p[8];
        unsigned long long offset;
        int name_at = 0;
        if (sscanf(line, "%*s %7s %llx %*s %*s %n", p, &offset, &name_at) < 2 || !name_at) continue;
        line[strcspn(line, "\n")] = 0;
        if (offset == 0 && strcmp(line + name_at, real) == 0) {
            snprintf(perms, sizeof perms, "%s", p);
            break;
        }
    }
    fclose(f);
    return perms;
}

static void test_read_only_map(void)
{
    begin_test("a file opened read-only maps read-only and refuses to grow");
    const char *path = path_of("readonly.mmkv");
    int fd = -1;
    CHECK(mmkv_file_open(path, MMKV_OPEN_READONLY, &fd) == MMKV_NOTFOUND && fd == -1,
          "an absent file: fd %d", fd);
    mmkv_conn *c = open_or_die(path, MMKV_SYNC_FULL);
    if (!c) {
        end_test();
        return;
    }
    CHECK(mmkv_txn_begin(c) == MMKV_OK && put_int(c, 1, 42, MMKV_PUT_INSERT) == MMKV_OK &&
              commit(c) == MMKV_OK,
          "write: %s", mmkv_errmsg(c));
    mmkv_close(c);
    CHECK(mmkv_file_open(path, MMKV_OPEN_READONLY, &fd) == MMKV_OK, "open read-only");
    CHECK(fcntl(fd, F_GETFL) >= 0 && (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY, "O_RDONLY");
    mmkv_map map;
    int rc = mmkv_map_init(&map, fd, MMKV_LOG_MIN_RESERVE, 0);
    char *err = NULL;
    CHECK(rc == MMKV_OK, "map: %d", rc);
    if (rc == MMKV_OK) {
        uint64_t size = 0;
        mmkv_file_size(fd, &size);
        CHECK(mmkv_map_mapped(&map) == size, "mapped %llu of %llu",
              (unsigned long long)mmkv_map_mapped(&map), (unsigned long long)size);
        CHECK(memcmp(mmkv_map_base(&map), MMKV_DATA_MAGIC, MMKV_MAGIC_SIZE) == 0, "header");
        CHECK(strcmp(view_permissions(path), "r--s") == 0, "mapped %s", view_permissions(path));
        rc = mmkv_map_extend(&map, size + MMKV_PAGE_SIZE);
        CHECK(rc == MMKV_READONLY, "extend: %d", rc);
        mmkv_map_error(&map, &err, rc, "data file", path);
        CHECK(err && strstr(err, path) && strstr(err, "read-only"), "message %s", err);
        CHECK(mmkv_map_truncate(&map) == MMKV_READONLY, "truncate refused");
        uint64_t after = 0;
        mmkv_file_size(fd, &after);
        CHECK(after == size, "the file changed size: %llu", (unsigned long long)after);
        CHECK(mmkv_map_refresh(&map) == MMKV_OK, "refresh");
        mmkv_map_release(&map);
    }
    free(err);
    close(fd);
    end_test();
}

static void test_many_tables(void)
{
    begin_test("1,000 tables open at once in one process, each written and read");
    char why[256];
    int descriptors =
        want_descriptors(MANY_TABLES * DESCRIPTORS_PER_TABLE + SPARE_DESCRIPTORS, why, sizeof why);
    CHECK(descriptors, "%s", why);
    if (!descriptors) {
        end_test();
        return;
    }
    /* Creating a table syncs its file and directory: in memory where there is a tmpfs, since what
    ** reaches the disk does not matter here. */
    char dir[64];
    snprintf(dir, sizeof dir, "/dev/shm/mmkv-many-tables-XXXXXX");
    if (access("/dev/shm", W_OK) != 0 || !mkdtemp(dir)) snprintf(dir, sizeof dir, "%s", test_dir);
    mmkv_conn **conns = calloc(MANY_TABLES, sizeof *conns);
    long before_kib = vm_size_kib();
    int opened = 0;
    for (int i = 0; i < MANY_TABLES && !current_failed; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/tenant-%d.mmkv", dir, i);
        if (!(conns[i] = open_or_die(path, MMKV_SYNC_OFF))) break;
        opened++;
        CHECK(mmkv_txn_begin(conns[i]) == MMKV_OK, "begin %d: %s", i, mmkv_errmsg(conns[i]));
        CHECK(put_int(conns[i], i, i * 3, MMKV_PUT_INSERT) == MMKV_OK, "put in table %d: %s", i,
              mmkv_errmsg(conns[i]));
        CHECK(commit(conns[i]) == MMKV_OK, "commit %d: %s", i, mmkv_errmsg(conns[i]));
    }
    long during_kib = vm_size_kib();
    for (int i = 0; i < opened && !current_failed; i++)
        CHECK(get_int(conns[i], i) == i * 3 && get_int(conns[i], i + 1) == -1,
              "table %d reads %lld", i, (long long)get_int(conns[i], i));
    if (opened == MANY_TABLES && before_kib > 0 && during_kib > 0) {
        long per_table_kib = (during_kib - before_kib) / opened;
        printf("  %d tables open: address space grew by %ld MiB, %ld MiB per table\n", opened,
               (during_kib - before_kib) >> 10, per_table_kib >> 10);
        /* A data file's first view and an index's, and the little else a table holds. */
        long expected_kib = (long)((MMKV_LOG_MIN_RESERVE + MMKV_INDEX_MIN_RESERVE) >> 10);
        CHECK(per_table_kib <= expected_kib * 5 / 4, "%ld KiB of address space per table",
              per_table_kib);
    }
    for (int i = 0; i < opened; i++)
        mmkv_close(conns[i]);
    free(conns);
    if (strcmp(dir, test_dir) != 0) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    }
    end_test();
}

#define VIEW_VALUE_BYTES ((uint32_t)1 << 20)
#define VIEW_SMALL_KEYS 100
#define VIEW_SMALL_BYTES 1000u
/* Past the data file's second view (a file of 64 MiB and more gets one of 4 x 128 MiB): a third. */
#define VIEW_BIG_KEYS 544
#define VIEW_KEYS_PER_TXN 32

static unsigned char view_byte(int64_t key, uint32_t at)
{
    return (unsigned char)(key * 131 + at * 7 + (at >> 12));
}

static void view_fill(unsigned char *buf, int64_t key, uint32_t len)
{
    for (uint32_t i = 0; i < len; i++)
        buf[i] = view_byte(key, i);
}

/* Is value the value written for key (every byte, or every 4093rd of a big one)? */
static int view_value_ok(const mmkv_datum *value, int64_t key, uint32_t len)
{
    if (value->type != MMKV_BLOB || value->len != len) return 0;
    const unsigned char *p = value->bytes;
    uint32_t step = len > VIEW_SMALL_BYTES ? 4093 : 1;
    for (uint32_t i = 0; i < len; i += step)
        if (p[i] != view_byte(key, i)) return 0;
    return p[len - 1] == view_byte(key, len - 1);
}

typedef struct view_reader {
    const char *path;
    int committed_big; /* big keys the writer has committed: VIEW_SMALL_KEYS up to this */
    int stop;
    long reads;
    const char *error;
} view_reader;

/* Reads committed keys at random while the writer grows the file, holding one row across it. */
static void *view_reader_main(void *arg)
{
    view_reader *job = arg;
    mmkv_open_options options = {.sync = MMKV_SYNC_OFF};
    mmkv_conn *conn = NULL;
    if (mmkv_open(job->path, &options, &conn, NULL) != MMKV_OK) {
        job->error = "open";
        return NULL;
    }
    unsigned seed = 7;
    mmkv_row held = {0};
    int64_t held_key = -1;
    while (!__atomic_load_n(&job->stop, __ATOMIC_ACQUIRE) && !job->error) {
        int big = __atomic_load_n(&job->committed_big, __ATOMIC_ACQUIRE);
        mmkv_snapshot snap;
        if (mmkv_snapshot_take(conn, &snap) != MMKV_OK) {
            job->error = "snapshot";
            break;
        }
        int64_t k = rand_r(&seed) % (VIEW_SMALL_KEYS + big), ks;
        uint32_t len = k < VIEW_SMALL_KEYS ? VIEW_SMALL_BYTES : VIEW_VALUE_BYTES;
        mmkv_datum key = int_datum(&ks, k);
        mmkv_row row;
        if (mmkv_get(conn, &snap, &key, &row) != MMKV_OK || !view_value_ok(&row.value, k, len))
            job->error = "a committed value read wrong";
        if (held_key < 0) {
            held = row;
            held_key = k;
        }
        if (!view_value_ok(&held.value, held_key,
                           held_key < VIEW_SMALL_KEYS ? VIEW_SMALL_BYTES : VIEW_VALUE_BYTES))
            job->error = "a row held across growth changed";
        job->reads++;
    }
    mmkv_close(conn);
    return NULL;
}

static void test_growth_through_views(void)
{
    begin_test("a file grows through several views; rows read before it stay valid");
    const char *path = path_of("views.mmkv");
    mmkv_conn *w = open_or_die(path, MMKV_SYNC_OFF);
    mmkv_conn *r = w ? open_or_die(path, MMKV_SYNC_OFF) : NULL;
    unsigned char *buf = malloc(VIEW_VALUE_BYTES);
    if (!w || !r || !buf) {
        mmkv_close(w);
        free(buf);
        end_test();
        return;
    }
    CHECK(mmkv_txn_begin(w) == MMKV_OK, "begin");
    for (int64_t k = 0; k < VIEW_SMALL_KEYS; k++) {
        int64_t ks;
        view_fill(buf, k, VIEW_SMALL_BYTES);
        mmkv_datum key = int_datum(&ks, k), value = blob_datum(buf, VIEW_SMALL_BYTES);
        CHECK(mmkv_put(w, &key, &value, MMKV_PUT_INSERT) == MMKV_OK, "put %lld", (long long)k);
    }
    CHECK(commit(w) == MMKV_OK, "commit: %s", mmkv_errmsg(w));

    /* Rows taken before the growth: their bytes point into the first view. */
    mmkv_row held[VIEW_SMALL_KEYS];
    mmkv_snapshot snap;
    CHECK(mmkv_snapshot_take(r, &snap) == MMKV_OK, "snapshot");
    for (int64_t k = 0; k < VIEW_SMALL_KEYS; k++) {
        int64_t ks;
        mmkv_datum key = int_datum(&ks, k);
        CHECK(mmkv_get(r, &snap, &key, &held[k]) == MMKV_OK, "get %lld", (long long)k);
    }
    CHECK(views_of(path) == 1, "%d views before growth", views_of(path));

    view_reader job = {path, 0, 0, 0, NULL};
    pthread_t reader;
    pthread_create(&reader, NULL, view_reader_main, &job);
    int most_views = 1;
    for (int64_t k = VIEW_SMALL_KEYS; k < VIEW_SMALL_KEYS + VIEW_BIG_KEYS && !current_failed;) {
        CHECK(mmkv_txn_begin(w) == MMKV_OK, "begin at %lld", (long long)k);
        for (int n = 0; n < VIEW_KEYS_PER_TXN && k < VIEW_SMALL_KEYS + VIEW_BIG_KEYS; n++, k++) {
            int64_t ks;
            view_fill(buf, k, VIEW_VALUE_BYTES);
            mmkv_datum key = int_datum(&ks, k), value = blob_datum(buf, VIEW_VALUE_BYTES);
            CHECK(mmkv_put(w, &key, &value, MMKV_PUT_INSERT) == MMKV_OK, "put %lld: %s",
                  (long long)k, mmkv_errmsg(w));
        }
        CHECK(commit(w) == MMKV_OK, "commit at %lld: %s", (long long)k, mmkv_errmsg(w));
        __atomic_store_n(&job.committed_big, (int)(k - VIEW_SMALL_KEYS), __ATOMIC_RELEASE);
        int views = views_of(path);
        if (views > most_views) most_views = views;
        for (int64_t h = 0; h < VIEW_SMALL_KEYS; h++)
            CHECK(view_value_ok(&held[h].value, h, VIEW_SMALL_BYTES),
                  "row %lld held from the first view changed after growth to %d views",
                  (long long)h, views);
    }
    __atomic_store_n(&job.stop, 1, __ATOMIC_RELEASE);
    pthread_join(reader, NULL);
    CHECK(!job.error, "reader thread: %s", job.error);
    CHECK(job.reads > 0, "the reader thread read nothing");
    CHECK(most_views >= 3, "the file was mapped in %d views only", most_views);

    /* The new records, read through the newest view. */
    CHECK(mmkv_snapshot_take(r, &snap) == MMKV_OK, "snapshot after");
    for (int64_t k = 0; k < VIEW_SMALL_KEYS + VIEW_BIG_KEYS && !current_failed; k++) {
        int64_t ks;
        mmkv_datum key = int_datum(&ks, k);
        mmkv_row row;
        uint32_t len = k < VIEW_SMALL_KEYS ? VIEW_SMALL_BYTES : VIEW_VALUE_BYTES;
        CHECK(mmkv_get(r, &snap, &key, &row) == MMKV_OK && view_value_ok(&row.value, k, len),
              "key %lld after growth", (long long)k);
        CHECK(mmkv_key_equal(&row.key, &key), "key %lld's key bytes", (long long)k);
    }
    CHECK(count_rows(r) == VIEW_SMALL_KEYS + VIEW_BIG_KEYS, "scan counts %d", count_rows(r));
    for (int64_t h = 0; h < VIEW_SMALL_KEYS; h++) {
        int64_t ks;
        mmkv_datum key = int_datum(&ks, h);
        CHECK(mmkv_key_equal(&held[h].key, &key), "held key %lld", (long long)h);
    }
    mmkv_close(r);
    mmkv_close(w);
    free(buf);
    mmkv_remove_files(path, NULL); /* a gigabyte: not left until the end */
    end_test();
}

/* ---- text encodings ---- */

/* Whether text (len bytes in encoding) reads as a number, and as which: its int64 value if an
** integer, else its double truncated. Returns "int", "real" or "none". */
static const char *text_number(const void *bytes, uint32_t len, int encoding, double *value)
{
    mmkv_datum text = {MMKV_TEXT, len, bytes}, number;
    uint64_t storage;
    *value = 0;
    if (!mmkv_text_as_number(&text, encoding, &number, &storage)) return "none";
    if (number.type == MMKV_INTEGER) {
        int64_t i;
        memcpy(&i, number.bytes, 8);
        *value = (double)i;
        return "int";
    }
    memcpy(value, number.bytes, 8);
    return "real";
}

static void test_text_as_number(void)
{
    if (!begin_test("text reads as a number in its file's encoding, ASCII only")) return;
    static const struct {
        const char *bytes;
        uint32_t len;
        int encoding;
        const char *kind;
        double value;
    } cases[] = {
        {"1", 1, MMKV_TEXT_UTF8, "int", 1},
        {" 1.5 ", 5, MMKV_TEXT_UTF8, "real", 1.5},
        {"1\0x", 3, MMKV_TEXT_UTF8, "int", 1}, /* a NUL ends it (SQLite 3.54; 3.40: none) */
        {"1\x01", 2, MMKV_TEXT_UTF8, "none", 0},
        {"\x00\x31", 2, MMKV_TEXT_UTF8, "none", 0},
        {"10", 2, MMKV_TEXT_UTF8, "int", 10},
        {"1\0", 2, MMKV_TEXT_UTF16LE, "int", 1},
        {"\0001", 2, MMKV_TEXT_UTF16BE, "int", 1},
        {"\0001", 2, MMKV_TEXT_UTF16LE, "none", 0}, /* U+3100 */
        {"1\0", 2, MMKV_TEXT_UTF16BE, "none", 0},   /* U+3100 */
        {"10", 2, MMKV_TEXT_UTF16LE, "none", 0},    /* U+3031: its bytes are the digits 1 and 0 */
        {"\x20\x00\x31\x00\x2e\x00\x35\x00\x65\x00\x31\x00\x20\x00", 14, MMKV_TEXT_UTF16LE, "real",
         15},                                                  /* " 1.5e1 " */
        {"\x2d\x00\x37\x00", 4, MMKV_TEXT_UTF16LE, "int", -7}, /* "-7" */
        {"7\0\0\0x\0", 6, MMKV_TEXT_UTF16LE, "int", 7},        /* a NUL ends it */
        {"7\x01", 2, MMKV_TEXT_UTF16LE, "none", 0},            /* U+0137 */
        {"7\0\xa0\0", 4, MMKV_TEXT_UTF16LE, "none", 0},        /* U+00A0 is no SQL white space */
        {"\x00\xd8\x31\x00", 4, MMKV_TEXT_UTF16LE, "none", 0}, /* a lone surrogate, then 1 */
        {"\x38\x00\x78", 3, MMKV_TEXT_UTF16LE, "int", 8},      /* a stray last byte is left out */
        {"", 0, MMKV_TEXT_UTF16BE, "none", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double value;
        const char *kind = text_number(cases[i].bytes, cases[i].len, cases[i].encoding, &value);
        CHECK(strcmp(kind, cases[i].kind) == 0 && value == cases[i].value,
              "case %zu (encoding %d): %s %g, expected %s %g", i, cases[i].encoding, kind, value,
              cases[i].kind, cases[i].value);
    }
    end_test();
}

typedef struct found_keys {
    int n;
    uint64_t offsets[8];
} found_keys;

static int keep_offset(void *ctx, const mmkv_row *row)
{
    found_keys *f = ctx;
    if (f->n < 8) f->offsets[f->n] = row->offset;
    f->n++;
    return MMKV_OK;
}

static int similar_count(mmkv_conn *c, const mmkv_datum *probe)
{
    mmkv_snapshot snap;
    found_keys f = {0, {0}};
    if (mmkv_snapshot_take(c, &snap) != MMKV_OK) return -1;
    int rc = mmkv_get_similar(c, &snap, probe, keep_offset, &f);
    return rc == MMKV_OK ? f.n : -1;
}

/* Zeroes, behind the engine's back (the mapping is shared), every second slot of the index. */
static int drop_second_slots(const char *data_path)
{
    char index_path[600];
    snprintf(index_path, sizeof index_path, "%s-index", data_path);
    int fd = open(index_path, O_RDWR), dropped = 0;
    mmkv_index_header h;
    if (fd < 0 || pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) return -1;
    for (uint64_t i = 0; i < h.table_slots; i++) {
        mmkv_slot slot, empty = MMKV_SLOT_EMPTY;
        off_t at = (off_t)(h.table_offset + i * sizeof slot);
        if (pread(fd, &slot, sizeof slot, at) != (ssize_t)sizeof slot) break;
        if (mmkv_slot_is_entry(slot) && mmkv_slot_is_second(slot))
            dropped += pwrite(fd, &empty, sizeof empty, at) == (ssize_t)sizeof empty;
    }
    close(fd);
    return dropped;
}

static void test_utf16_files(void)
{
    if (!begin_test("UTF-16 files: numbers in text, encodings checked at open")) return;
    const char *path = path_of("utf16.mmkv");
    mmkv_open_options le = {.sync = MMKV_SYNC_OFF, .text_encoding = MMKV_TEXT_UTF16LE},
                      utf8 = {.sync = MMKV_SYNC_OFF, .text_encoding = MMKV_TEXT_UTF8}, be = le;
    be.text_encoding = MMKV_TEXT_UTF16BE;
    mmkv_conn *c = NULL, *other = NULL;
    char *err = NULL;
    CHECK_RC(mmkv_open(path, &le, &c, &err), MMKV_OK, "create: %s", err ? err : "");
    if (!c) {
        end_test();
        return;
    }
    CHECK_EQ(mmkv_text_encoding(c), MMKV_TEXT_UTF16LE, "the file records its encoding");
    int64_t is, vs;
    mmkv_datum one = int_datum(&is, 1), value = int_datum(&vs, 0);
    mmkv_datum text_one = {MMKV_TEXT, 2, "1\0"};
    mmkv_datum text_one_spaced = {MMKV_TEXT, 6, "\x20\x00\x31\x00\x20\x00"}; /* " 1 " */
    mmkv_datum digits = {MMKV_TEXT, 2, "10"}, ten = int_datum(&vs, 10);
    CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "begin");
    mmkv_put(c, &text_one, &value, MMKV_PUT_INSERT);
    mmkv_put(c, &text_one_spaced, &value, MMKV_PUT_INSERT);
    mmkv_put(c, &digits, &value, MMKV_PUT_INSERT);
    CHECK_RC(commit(c), MMKV_OK, "commit");
    /* 1 finds both texts that read as 1; 10 finds none (U+3031 reads as no number). */
    CHECK_EQ(similar_count(c, &one), 2, "get_similar(1)");
    CHECK_EQ(similar_count(c, &ten), 0, "get_similar(10)");
    CHECK_EQ(similar_count(c, &text_one), 2, "get_similar('1')");
    CHECK_RC(mmkv_check(c, NULL), MMKV_OK, "check: %s", mmkv_errmsg(c));

    /* Open in this process: a second opener in another encoding is refused, the first goes on. */
    int rc = mmkv_open(path, &utf8, &other, &err);
    CHECK(rc == MMKV_ERROR && !other && err && strstr(err, path) && strstr(err, "UTF-16le") &&
              strstr(err, "UTF-8"),
          "UTF-8 opener of an open UTF-16le file: %d %s", rc, err ? err : "");
    free(err);
    err = NULL;
    CHECK_EQ(similar_count(c, &one), 2, "the first opener is unharmed");
    CHECK_RC(mmkv_open(path, &le, &other, &err), MMKV_OK, "same encoding: %s", err ? err : "");
    mmkv_close(other);

    /* The integrity check finds a text key its number no longer leads to. */
    CHECK(drop_second_slots(path) == 2, "dropped the two second slots");
    rc = mmkv_check(c, NULL);
    CHECK(rc == MMKV_CORRUPT && strstr(mmkv_errmsg(c), "by the number") &&
              strstr(mmkv_errmsg(c), path),
          "check without second slots: %d %s", rc, mmkv_errmsg(c));
    CHECK(mmkv_txn_begin(c) == MMKV_OK && mmkv_rebuild(c) == MMKV_OK, "rebuild: %s",
          mmkv_errmsg(c));
    commit(c);
    CHECK_RC(mmkv_check(c, NULL), MMKV_OK, "check after rebuild: %s", mmkv_errmsg(c));
    CHECK_EQ(similar_count(c, &one), 2, "get_similar(1) after rebuild");
    mmkv_close(c);

    /* Closed: refused just the same, and the file is left as it was. */
    rc = mmkv_open(path, &be, &c, &err);
    CHECK(rc == MMKV_ERROR && !c && err && strstr(err, "UTF-16le") && strstr(err, "UTF-16be"),
          "UTF-16be opener: %d %s", rc, err ? err : "");
    free(err);
    err = NULL;
    CHECK_RC(mmkv_open(path, &le, &c, &err), MMKV_OK, "reopen: %s", err ? err : "");
    if (c) {
        CHECK_EQ(similar_count(c, &one), 2, "get_similar(1) after the reopen");
        mmkv_close(c);
    }
    free(err);

    /* A header naming an encoding this build does not know is refused, whatever is asked. */
    int fd = open(path, O_RDWR);
    mmkv_file_header header;
    CHECK(fd >= 0 && pread(fd, &header, sizeof header, 0) == (ssize_t)sizeof header, "header");
    header.text_encoding = 9;
    header.checksum = mmkv_crc32c(0, &header, offsetof(mmkv_file_header, checksum));
    CHECK(pwrite(fd, &header, sizeof header, 0) == (ssize_t)sizeof header, "write header");
    close(fd);
    err = NULL;
    rc = mmkv_open(path, &le, &c, &err);
    CHECK(rc == MMKV_NOTADB && !c && err && strstr(err, "text encoding 9"), "encoding 9: %d %s", rc,
          err ? err : "");
    free(err);
    end_test();
}

int main(void)
{
    if (!start_tests()) return 1;
    test_crc32c();
    test_key_rules();
    test_text_as_number();
    test_basic_crud();
    test_savepoints();
    test_isolation_and_busy();
    test_values();
    test_growth();
    test_growth_reads_keys();
    test_written_pages_dropped();
    test_foreign_file();
    test_torn_meta_falls_back();
    test_writer_death();
    test_threads();
    test_simulation();
    test_read_then_write();
    test_owner_authority();
    test_check_and_rebuild();
    test_in_use_index_checked();
    test_drained_table_given_back();
    test_salvage();
    test_reader_catches_up();
    test_read_only_map();
    test_many_tables();
    test_growth_through_views();
    test_utf16_files();
    return finish_tests();
}
