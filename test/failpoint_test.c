/*
** Failpoint tests: each named step of the commit protocol (ext/failpoint.h) is made to fail in
** turn. The failing call must report the error, the transaction must roll back, and what was
** committed before must be intact: readable, passing the integrity check, and surviving a reopen.
** Built with MMKV_FAILPOINTS (make test builds it apart from the shipped objects).
*/
#include "engine_util.h"
#include "failpoint.h"
#include "format.h"
#include "mmkv.h"

#include <sys/wait.h>
#include <unistd.h>

#define BASE_KEYS 200
#define GROWTH_KEYS 5000 /* enough new keys in one transaction to double the index */

static int committed_intact(mmkv_conn *c, const char *when)
{
    for (int i = 0; i < BASE_KEYS; i++)
        if (get_int(c, i) != i * 3) {
            CHECK(0, "%s: key %d reads %lld", when, i, (long long)get_int(c, i));
            return 0;
        }
    CHECK_EQ(get_int(c, BASE_KEYS + 1), -1, "%s: an uncommitted key is visible", when);
    CHECK_RC(mmkv_check(c, NULL), MMKV_OK, "%s: integrity check: %s", when, mmkv_errmsg(c));
    return !current_failed;
}

static mmkv_conn *fresh_table_synced(const char *name, mmkv_sync sync)
{
    mmkv_conn *c = open_or_die(path_of(name), sync);
    if (!c) return NULL;
    CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "begin");
    for (int i = 0; i < BASE_KEYS; i++)
        put_int(c, i, i * 3, MMKV_PUT_INSERT);
    CHECK_RC(commit(c), MMKV_OK, "base commit");
    return c;
}

static mmkv_conn *fresh_table(const char *name)
{
    return fresh_table_synced(name, MMKV_SYNC_FULL);
}

/* Under sync=off, a commit that fails after its last record was marked as the transaction's end
** must take the mark off: if a power cut then took both meta slots, salvage would otherwise find
** the failed transaction whole and bring it back. */
static void test_failed_commit_not_salvaged(void)
{
    if (!begin_test(
            "failpoint before-data-sync, sync=off: salvage never brings the failed commit back"))
        return;
    const char *file = "unmarked.mmkv";
    mmkv_conn *c = fresh_table_synced(file, MMKV_SYNC_OFF);
    if (!c) {
        end_test();
        return;
    }
    mmkv_failpoint_arm("before-data-sync", 0);
    CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "begin");
    for (int i = 0; i < 10; i++)
        put_int(c, BASE_KEYS + 1 + i, i, MMKV_PUT_INSERT);
    CHECK_RC(mmkv_txn_prepare(c), MMKV_IOERR, "the failing step reports MMKV_IOERR");
    mmkv_txn_rollback(c);
    mmkv_failpoint_arm(NULL, 0);
    mmkv_close(c);
    /* Both meta slots lost, and the index, as a power cut could leave them. */
    char index[600];
    snprintf(index, sizeof index, "%s-index", path_of(file));
    unlink(index);
    FILE *f = fopen(path_of(file), "r+b");
    static const char zeros[64];
    CHECK(f && fseek(f, MMKV_META_OFFSET(0), SEEK_SET) == 0 && fwrite(zeros, 64, 1, f) == 1 &&
              fseek(f, MMKV_META_OFFSET(1), SEEK_SET) == 0 && fwrite(zeros, 64, 1, f) == 1,
          "zero the meta slots");
    if (f) fclose(f);
    c = open_or_die(path_of(file), MMKV_SYNC_OFF);
    if (c) {
        committed_intact(c, "after salvage");
        mmkv_close(c);
    }
    end_test();
}

/* A commit whose step `name` fails: the error reaches the caller and nothing of it remains. */
static void test_commit_step(const char *name, int keys)
{
    char title[128];
    snprintf(title, sizeof title, "failpoint %s: the commit fails cleanly", name);
    if (!begin_test(title)) return;
    char file[64];
    snprintf(file, sizeof file, "%s.mmkv", name);
    mmkv_conn *c = fresh_table(file);
    if (!c) {
        end_test();
        return;
    }
    mmkv_failpoint_arm(name, 0);
    CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "begin");
    int rc = MMKV_OK;
    for (int i = 0; i < keys && rc == MMKV_OK; i++)
        rc = put_int(c, BASE_KEYS + 1 + i, i, MMKV_PUT_INSERT);
    put_int(c, 0, -1, MMKV_PUT_REPLACE);
    if (rc == MMKV_OK) rc = mmkv_txn_prepare(c);
    CHECK_RC(rc, MMKV_IOERR, "the failing step reports MMKV_IOERR, got %d", rc);
    mmkv_txn_rollback(c);
    mmkv_failpoint_arm(NULL, 0);
    committed_intact(c, "after the rollback");
    CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "the next writer begins");
    CHECK_RC(put_int(c, BASE_KEYS + 1, 7, MMKV_PUT_INSERT), MMKV_OK, "write");
    mmkv_txn_rollback(c);
    mmkv_close(c);
    c = open_or_die(path_of(file), MMKV_SYNC_FULL);
    if (c) {
        committed_intact(c, "after reopening");
        mmkv_close(c);
    }
    end_test();
}

/* An index that cannot grow (a full disk) goes on in its slack: the write does not fail, and the
** table grows at a later write that finds room. */
static void test_growth_deferred(void)
{
    if (!begin_test("failpoint mid-index-growth: growth is deferred, the writes go on")) return;
    mmkv_conn *c = fresh_table("growth.mmkv");
    if (!c) {
        end_test();
        return;
    }
    mmkv_failpoint_arm("mid-index-growth", 0);
    CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "begin");
    int rc = MMKV_OK;
    for (int i = 0; i < GROWTH_KEYS && rc == MMKV_OK; i++)
        rc = put_int(c, BASE_KEYS + 1000 + i, i, MMKV_PUT_INSERT);
    CHECK_RC(rc, MMKV_OK, "inserts while growth fails: %d %s", rc, mmkv_errmsg(c));
    CHECK_RC(commit(c), MMKV_OK, "commit");
    mmkv_failpoint_arm(NULL, 0);
    CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "begin 2");
    for (int i = 0; i < GROWTH_KEYS && rc == MMKV_OK; i++)
        rc = put_int(c, BASE_KEYS + 100000 + i, i, MMKV_PUT_INSERT);
    CHECK_RC(rc, MMKV_OK, "inserts once growth works again: %s", mmkv_errmsg(c));
    CHECK_RC(commit(c), MMKV_OK, "commit once growth works again: %s", mmkv_errmsg(c));
    committed_intact(c, "after deferred growth");
    CHECK_EQ(get_int(c, BASE_KEYS + 1000 + 77), 77, "the new keys");
    CHECK_EQ(get_int(c, BASE_KEYS + 100000 + 99), 99, "the new keys");
    mmkv_close(c);
    end_test();
}

/* A rebuild of the index (after a writer died mid-transaction) that fails half-way: the next
** writer gets the error, and the one after that rebuilds and goes on. */
static void test_recovery_step(void)
{
    if (!begin_test("failpoint mid-recovery: a failed index rebuild is retried by the next writer"))
        return;
    mmkv_conn *c = fresh_table("recovery.mmkv");
    if (!c) {
        end_test();
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        mmkv_txn_begin(c); /* a writer that dies with slots published */
        for (int i = 0; i < 50; i++)
            put_int(c, i, -5, MMKV_PUT_REPLACE);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    mmkv_failpoint_arm("mid-recovery", 0);
    int rc = mmkv_txn_begin(c);
    CHECK_RC(rc, MMKV_IOERR, "the writer that meets the failed rebuild gets MMKV_IOERR, got %d",
             rc);
    mmkv_failpoint_arm(NULL, 0);
    CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "the next writer rebuilds: %s", mmkv_errmsg(c));
    mmkv_txn_rollback(c);
    committed_intact(c, "after the rebuild");
    mmkv_close(c);
    end_test();
}

/* A failed step's message says what failed and why, and the next call that succeeds leaves no
** stale message behind. */
static void test_messages(void)
{
    if (!begin_test("failpoint before-data-sync: the message names the file and the cause; a "
                    "success clears it"))
        return;
    mmkv_conn *c = fresh_table("messages.mmkv");
    if (!c) {
        end_test();
        return;
    }
    mmkv_failpoint_arm("before-data-sync", 0);
    CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "begin");
    put_int(c, BASE_KEYS + 1, 1, MMKV_PUT_INSERT);
    CHECK_RC(mmkv_txn_prepare(c), MMKV_IOERR, "the failing step reports MMKV_IOERR");
    const char *m = mmkv_errmsg(c);
    CHECK(strstr(m, "cannot sync") && strstr(m, path_of("messages.mmkv")) &&
              strstr(m, ": a failure injected by a test"),
          "expected \"cannot sync '<file>': a failure injected by a test\", got \"%s\"", m);
    mmkv_txn_rollback(c);
    mmkv_failpoint_arm(NULL, 0);
    CHECK_EQ(get_int(c, 0), 0, "a read after the failure");
    CHECK(strcmp(mmkv_errmsg(c), "mmkv: unknown error") == 0,
          "expected no message after a success, got \"%s\"", mmkv_errmsg(c));
    mmkv_close(c);
    end_test();
}

/* Each step of compaction made to fail: a step in its transaction (mid-compaction, and the
** commit's own steps), the giving back of space (before-start-note, before-punch). The failing
** call reports it; what was committed stays readable and whole, before and after a reopen; and
** a compaction without the failure then runs to its end. */
static void test_compaction_step(const char *name, int in_reclaim)
{
    char title[160];
    snprintf(title, sizeof title, "failpoint %s during compaction: reported, nothing lost",
             name);
    if (!begin_test(title)) return;
    char file[64];
    snprintf(file, sizeof file, "compact-%s.mmkv", name);
    mmkv_conn *c = fresh_table(file);
    if (!c) {
        end_test();
        return;
    }
    /* Garbage to compact: every key rewritten a few times, back to its committed value. */
    for (int round = 0; round < 4; round++) {
        CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "begin");
        for (int i = 0; i < BASE_KEYS; i++)
            put_int(c, i, round == 3 ? i * 3 : -round, MMKV_PUT_REPLACE);
        CHECK_RC(commit(c), MMKV_OK, "rewrite round %d", round);
    }
    mmkv_commit before;
    CHECK_RC(mmkv_committed(c, &before), MMKV_OK, "committed");
    mmkv_compact_result r;
    if (!in_reclaim) mmkv_failpoint_arm(name, 0);
    CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "begin the compaction");
    int rc = mmkv_compact_step(c, 0, 0, before.txid, &r);
    if (rc == MMKV_OK) rc = mmkv_txn_prepare(c);
    if (!in_reclaim) {
        CHECK_RC(rc, MMKV_IOERR, "the failing step reports MMKV_IOERR, got %d", rc);
        mmkv_txn_rollback(c);
        mmkv_commit after;
        CHECK_RC(mmkv_committed(c, &after), MMKV_OK, "committed");
        CHECK(after.start == before.start && after.txid == before.txid,
              "the failed compaction left its start: %llu -> %llu",
              (unsigned long long)before.start, (unsigned long long)after.start);
    } else {
        CHECK_RC(rc, MMKV_OK, "the compaction step: %s", mmkv_errmsg(c));
        mmkv_txn_commit(c);
        mmkv_commit after;
        CHECK_RC(mmkv_committed(c, &after), MMKV_OK, "committed");
        CHECK(after.start > before.start, "the compaction moved the start");
        mmkv_failpoint_arm(name, 0);
        CHECK_RC(mmkv_reclaim(c, &after, 1, NULL), MMKV_IOERR, "the failing reclaim reports it");
    }
    mmkv_failpoint_arm(NULL, 0);
    committed_intact(c, "after the failure");
    mmkv_close(c);
    c = open_or_die(path_of(file), MMKV_SYNC_FULL);
    if (c) {
        committed_intact(c, "after reopening");
        CHECK_RC(mmkv_committed(c, &before), MMKV_OK, "committed");
        CHECK_RC(mmkv_txn_begin(c), MMKV_OK, "begin");
        CHECK_RC(mmkv_compact_step(c, 0, 0, before.txid, &r), MMKV_OK, "a compaction: %s",
                 mmkv_errmsg(c));
        CHECK_RC(commit(c), MMKV_OK, "its commit");
        mmkv_commit after;
        CHECK_RC(mmkv_committed(c, &after), MMKV_OK, "committed");
        uint64_t given = 0;
        CHECK_RC(mmkv_reclaim(c, &after, 0, &given), MMKV_OK, "reclaim: %s", mmkv_errmsg(c));
        CHECK(after.garbage_bytes <= before.garbage_bytes / 4, "garbage %llu -> %llu",
              (unsigned long long)before.garbage_bytes, (unsigned long long)after.garbage_bytes);
        CHECK(given > 0, "the space below the start went back to the file system");
        committed_intact(c, "after a whole compaction");
        mmkv_close(c);
    }
    end_test();
}

int main(void)
{
    if (!start_tests()) return 1;
    test_commit_step("before-data-sync", 10);
    test_commit_step("before-meta-write", 10);
    test_commit_step("between-meta-syncs", 10);
    test_growth_deferred();
    test_recovery_step();
    test_failed_commit_not_salvaged();
    test_messages();
    test_compaction_step("mid-compaction", 0);
    test_compaction_step("before-data-sync", 0);
    test_compaction_step("before-meta-write", 0);
    test_compaction_step("before-start-note", 1);
    test_compaction_step("before-punch", 1);
    return finish_tests();
}
