"""Compaction: the files stay near the size of the live rows, online, and nothing is ever lost.

Space is measured as a user measures it (allocated blocks, os.stat().st_blocks * 512, of the
data and index files), against the bytes the live rows need in the log (32-byte header, key,
value, rounded to 8), so that the bounds hold whatever the machine. Every check compares the
table with a Python dict of what was committed, and runs 'integrity-check'.
Run with Debian's python3: /usr/bin/python3 test/sql/test_compaction.py
"""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import TempDir, check, check_equal, check_error, connect, rng  # noqa: E402

CASE_TIMEOUT = 240
VALUE_BYTES = 100
MIB = 1 << 20


def record_bytes(key, value):
    def size(v):
        if v is None:
            return 0
        if isinstance(v, (int, float)):
            return 8
        return len(v.encode() if isinstance(v, str) else v)
    n = 32 + size(key) + size(value)
    return (n + 7) // 8 * 8


def allocated(d, table="kv", db_name="app.db"):
    total = 0
    for suffix in (".mmkv", ".mmkv-index"):
        p = os.path.join(d, "%s-%s%s" % (db_name, table, suffix))
        total += os.stat(p).st_blocks * 512
    return total


def wait_compacted(db, table="kv", timeout=60):
    """Until the compaction asked for is over (mmkv_stats says so); False on a timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        row = db.execute("SELECT compacting FROM mmkv_stats('%s')" % table).fetchone()
        if row and row[0] == 0:
            return True
        time.sleep(0.05)
    return False


def wait_until(fn, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return True
        time.sleep(0.05)
    return fn()


def table_dict(db, table="kv"):
    return dict(db.execute('SELECT key, value FROM "%s"' % table).fetchall())


def integrity(db, name, table="kv"):
    try:
        db.execute("INSERT INTO \"%s\"(\"%s\") VALUES('integrity-check')" % (table, table))
        return check(name, True)
    except sqlite3.Error as e:
        return check(name, False, "integrity-check failed: %s" % e)


def load(db, r, n, truth):
    db.execute("BEGIN")
    for k in range(n):
        v = r.randbytes(VALUE_BYTES)
        db.execute("INSERT OR REPLACE INTO kv VALUES(?, ?)", (k, v))
        truth[k] = v
    db.execute("COMMIT")


def update_rounds(db, r, n, rounds, truth, per_txn=200, sample=None):
    """Random updates in transactions; sample() after each transaction (the largest ratio)."""
    worst = 0.0
    for _ in range(rounds):
        db.execute("BEGIN")
        for _ in range(per_txn):
            k = r.randrange(n)
            v = r.randbytes(VALUE_BYTES)
            db.execute("UPDATE kv SET value = ? WHERE key = ?", (v, k))
            truth[k] = v
        db.execute("COMMIT")
        if sample:
            worst = max(worst, sample())
    return worst


def live_bytes(truth):
    return sum(record_bytes(k, v) for k, v in truth.items())


def test_automatic_compaction_bounds_space():
    """Sustained updates: with the default autocompact the files stay within twice the live rows
    (plus the slack of growth); with autocompact=off they grow with every version."""
    r = rng("automatic")
    n = 20000
    for args, bounded in (("", True), ("autocompact=off", False)):
        with TempDir() as d:
            db = connect(os.path.join(d, "app.db"))
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE VIRTUAL TABLE kv USING mmkv(%s)" % args)
            truth = {}
            load(db, r, n, truth)
            live = live_bytes(truth)
            slack = 3 * MIB  # growth ahead, the index, page 0, a step's worth
            worst = update_rounds(db, r, n, 500, truth,
                                  sample=lambda: (allocated(d) - slack) / live)
            ok = table_dict(db) == truth
            check("autocompact %r: the table holds every committed value" % args, ok,
                  "the table differs from what was committed")
            if bounded:
                check("autocompact default: allocated stays within 2x the live rows + 3 MiB",
                      worst <= 2.0, "worst (allocated - 3 MiB) / live = %.2f" % worst)
            else:
                check("autocompact=off: the log keeps every version (grows past 4x)",
                      worst > 4.0, "worst ratio %.2f: did compaction run anyway?" % worst)
            stats = db.execute("SELECT live_count, garbage_bytes, compactions FROM "
                               "mmkv_stats('kv')").fetchone()
            check_equal("autocompact %r: live_count after the updates" % args, stats[0], n)
            if bounded:
                check("autocompact default: automatic passes are counted", stats[2] >= 1,
                      "compactions = %r" % stats[2])
            integrity(db, "autocompact %r: integrity-check after the updates" % args)
            db.close()


def test_compact_command_and_delete_all():
    """'compact' returns at once, finishes on its own, brings the files to about the live rows;
    deleting every row and compacting leaves under 1 MB."""
    r = rng("command")
    n = 20000
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(autocompact=off)")
        truth = {}
        load(db, r, n, truth)
        update_rounds(db, r, n, 300, truth)
        before = allocated(d)
        t0 = time.time()
        db.execute("INSERT INTO kv(kv) VALUES('compact')")
        took = time.time() - t0
        check("'compact' returns before the work is done (%.3f s)" % took, took < 0.5,
              "the command took %.3f s" % took)
        check("'compact' finishes without further writes", wait_compacted(db),
              "mmkv_stats still says compacting after 60 s")
        check("space is given back once the compaction ends",
              wait_until(lambda: allocated(d) <= 1.3 * live_bytes(truth) + 2 * MIB),
              "allocated %d bytes (before %d) for %d bytes of live rows"
              % (allocated(d), before, live_bytes(truth)))
        check("the table holds every committed value after 'compact'", table_dict(db) == truth,
              "the table differs from what was committed")
        stats = db.execute("SELECT compactions, garbage_bytes, live_bytes FROM "
                           "mmkv_stats('kv')").fetchone()
        check("a finished compaction is counted", stats[0] >= 1, "compactions = %r" % stats[0])
        integrity(db, "integrity-check after 'compact'")
        db.execute("DELETE FROM kv")
        truth.clear()
        db.execute("INSERT INTO kv(kv) VALUES('compact')")
        check("compaction after deleting every row finishes", wait_compacted(db))
        check("deleting every row and compacting leaves the files under 1 MB",
              wait_until(lambda: allocated(d) < 1000000),
              "allocated %d bytes" % allocated(d))
        check_equal("the table is empty", db.execute("SELECT count(*) FROM kv").fetchone()[0], 0)
        integrity(db, "integrity-check after deleting every row and compacting")
        # And it lives on: new rows go in and come back after a reopen.
        db.execute("INSERT INTO kv VALUES(1, 'one')")
        db.close()
        db = connect(os.path.join(d, "app.db"))
        check_equal("a compacted table reopens with its rows",
                    db.execute("SELECT key, value FROM kv").fetchall(), [(1, "one")])
        integrity(db, "integrity-check after reopening a compacted table")
        db.close()


def test_readers_keep_their_snapshots():
    """A read transaction open across a whole compaction reads the state it began with, and the
    space that state needs is not given back until it ends."""
    r = rng("snapshot")
    n = 5000
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        db = connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(autocompact=off)")
        truth = {}
        load(db, r, n, truth)
        update_rounds(db, r, n, 50, truth)
        reader = connect(path)
        reader.execute("BEGIN")
        seen = table_dict(reader)
        check("the reader sees the committed rows", seen == truth)
        old = dict(truth)
        update_rounds(db, r, n, 100, truth)
        db.execute("INSERT INTO kv(kv) VALUES('compact')")
        check("the compaction ends while a reader holds an old snapshot", wait_compacted(db))
        time.sleep(0.5)
        check("the old reader still reads its snapshot, whole, after the compaction",
              table_dict(reader) == old, "the reader's rows changed under it")
        probe = [r.randrange(n) for _ in range(200)]
        got = [reader.execute("SELECT value FROM kv WHERE key = ?", (k,)).fetchone()[0]
               for k in probe]
        check("the old reader's lookups find its snapshot's values",
              got == [old[k] for k in probe], "lookups returned other values")
        held = allocated(d)
        reader.execute("COMMIT")
        check("a new read sees the newest rows", table_dict(reader) == truth)
        db.execute("INSERT INTO kv VALUES(-1, 'after')")  # a commit: the worker looks again
        truth[-1] = "after"
        check("space comes back once the old reader is gone",
              wait_until(lambda: allocated(d) < held), "allocated stayed at %d" % held)
        check("rows intact after the space came back", table_dict(db) == truth)
        integrity(db, "integrity-check after the reader left")
        reader.close()
        db.close()


CRASH_CHILD = r"""
import os, random, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.enable_load_extension(True)
db.load_extension(os.environ["MMKV_EXTENSION"])
db.execute("PRAGMA busy_timeout=10000")
n, seed = int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
r = 0
while True:
    r += 1
    db.execute("BEGIN")
    for _ in range(300):
        k = rnd.randrange(n)
        db.execute("INSERT OR REPLACE INTO kv VALUES(?, ?)", (k, "%d:%d" % (r, k) + "x" * 90))
    if r % 7 == 0:
        db.execute("INSERT INTO kv(kv) VALUES('compact')")
    if r % 11 == 0:
        db.execute("DELETE FROM kv WHERE key % 5 = ?", (r % 5,))
    db.execute("COMMIT")
    print(r, flush=True)
"""


def test_kill_during_compaction():
    """kill -9 at random moments of sustained writes and compactions: what was committed is
    there after the next open, integrity-check passes, no stray file is left."""
    r = rng("kill")
    n = 3000
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        db = connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(autocompact=10)")
        db.close()
        for attempt in range(6):
            seed = r.randrange(1 << 30)
            child = subprocess.Popen([harness.PYTHON, "-c", CRASH_CHILD, path, str(n), str(seed)],
                                     env=harness.CHILD_ENV, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
            time.sleep(0.3 + r.random() * 1.5)
            child.send_signal(signal.SIGKILL)
            out, err = child.communicate()
            rounds = [int(x) for x in out.split()]
            # Replay the child's rounds (the same seed) to know what each committed round left.
            rnd = __import__("random").Random(seed)
            states = [{}]
            state = {}
            last = rounds[-1] if rounds else 0
            for rd in range(1, last + 2):
                for _ in range(300):
                    k = rnd.randrange(n)
                    state[k] = "%d:%d" % (rd, k) + "x" * 90
                if rd % 11 == 0:
                    state = {k: v for k, v in state.items() if k % 5 != rd % 5}
                states.append(dict(state))
            db = connect(path)
            got = dict(db.execute("SELECT key, value FROM kv").fetchall())
            ok = got == states[last] or got == states[last + 1]
            check("kill %d (after round %d): every committed write is there" % (attempt, last),
                  ok, "the table matches neither round %d nor %d (%d rows; stderr %r)"
                  % (last, last + 1, len(got), err[-300:]))
            integrity(db, "kill %d: integrity-check after reopening" % attempt)
            db.close()
            # The next child starts from an empty table, as the replay does.
            db = connect(path)
            db.execute("DELETE FROM kv")
            db.close()
        stray = [f for f in os.listdir(d) if f not in (
            "app.db", "app.db-wal", "app.db-shm", "app.db-kv.mmkv", "app.db-kv.mmkv-index")]
        check_equal("no stray files after the kills", stray, [])


def test_temporary_and_memory_tables_compact():
    """Tables of temporary and in-memory databases compact in the command itself."""
    r = rng("temp")
    for where in ("temp", "memory"):
        db = connect(":memory:")
        name = "temp.kv" if where == "temp" else "kv"
        db.execute("CREATE VIRTUAL TABLE %s USING mmkv(autocompact=off)" % name)
        truth = {}
        db.execute("BEGIN")
        for k in range(3000):
            truth[k] = r.randbytes(50)
            db.execute("INSERT INTO kv VALUES(?, ?)", (k, truth[k]))
        db.execute("COMMIT")
        for _ in range(20):
            db.execute("BEGIN")
            for _ in range(300):
                k = r.randrange(3000)
                truth[k] = r.randbytes(50)
                db.execute("UPDATE kv SET value = ? WHERE key = ?", (truth[k], k))
            db.execute("COMMIT")
        schema = "temp" if where == "temp" else "main"
        g0 = db.execute("SELECT garbage_bytes FROM mmkv_stats('kv', '%s')" % schema).fetchone()[0]
        db.execute("INSERT INTO kv(kv) VALUES('compact')")
        g1, done = db.execute("SELECT garbage_bytes, compacting FROM mmkv_stats('kv', '%s')"
                              % schema).fetchone()
        check("%s table: 'compact' drops the garbage (%d -> %d bytes)" % (where, g0, g1),
              g1 < g0 // 10 and done == 0, "garbage %d -> %d, compacting %r" % (g0, g1, done))
        check("%s table: rows intact after 'compact'" % where, table_dict(db) == truth)
        integrity(db, "%s table: integrity-check after 'compact'" % where)
        db.close()


def test_rollback_of_a_compacting_transaction():
    """A transaction whose commit ran a compaction step, rolled back by a failing commit of
    another table, leaves the table as it was (here: ROLLBACK after a step ran in a savepoint
    is not possible, so a failed commit: a deferred foreign key)."""
    r = rng("rollback")
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(autocompact=10)")
        db.execute("CREATE TABLE parent(id INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE child(p REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
        truth = {}
        load(db, r, 5000, truth)
        update_rounds(db, r, 5000, 40, truth)
        before = table_dict(db)
        db.execute("BEGIN")
        for k in range(0, 5000, 2):
            db.execute("UPDATE kv SET value = ? WHERE key = ?", (b"doomed", k))
        db.execute("INSERT INTO child VALUES(42)")
        check_error("the commit fails on the deferred foreign key",
                    lambda: db.execute("COMMIT"), "FOREIGN KEY")
        db.execute("ROLLBACK")
        check("a rolled-back commit leaves every row as it was", table_dict(db) == before)
        integrity(db, "integrity-check after the rolled-back commit")
        db.close()


def test_autocompact_argument():
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        for bad in ("autocompact=5", "autocompact=95", "autocompact=yes", "autocompact=",
                    "autocompact=30,autocompact=40", "autocompact=-1", "autocompact='3x'"):
            check_error("CREATE with %s is refused, naming the argument" % bad,
                        lambda: db.execute("CREATE VIRTUAL TABLE bad USING mmkv(%s)" % bad),
                        "autocompact")
        for good in ("autocompact=off", "autocompact=OFF", "autocompact=10", "autocompact=90",
                     "autocompact=30%", "autocompact = 50"):
            try:
                db.execute("CREATE VIRTUAL TABLE good USING mmkv(%s)" % good)
                db.execute("DROP TABLE good")
                check("CREATE with %s works" % good, True)
            except sqlite3.Error as e:
                check("CREATE with %s works" % good, False, str(e))
        db.close()


def test_backup_of_a_compacted_table():
    """A backup of a compacted table is a sparse copy: its files are as small as the table's."""
    r = rng("backup")
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(autocompact=off)")
        truth = {}
        load(db, r, 10000, truth)
        update_rounds(db, r, 10000, 200, truth)
        db.execute("INSERT INTO kv(kv) VALUES('compact')")
        wait_compacted(db)
        wait_until(lambda: allocated(d) <= 1.3 * live_bytes(truth) + 2 * MIB)
        copy = os.path.join(d, "copy.db")
        db.execute("SELECT mmkv_backup(?)", (copy,)).fetchall()
        c = connect(copy)
        check("the backup of a compacted table holds its rows", table_dict(c) == truth)
        integrity(c, "integrity-check of the backup of a compacted table")
        c.close()
        got = allocated(d, db_name="copy.db")
        check("the backup's files are about the live rows' size",
              got <= 1.3 * live_bytes(truth) + 3 * MIB,
              "backup allocated %d bytes for %d of live rows" % (got, live_bytes(truth)))
        db.close()


def fill_with_garbage(db, r, n=5000, rounds=30, table="kv"):
    truth = {}
    db.execute("BEGIN")
    for k in range(n):
        truth[k] = r.randbytes(VALUE_BYTES)
        db.execute('INSERT OR REPLACE INTO %s VALUES(?, ?)' % table, (k, truth[k]))
    db.execute("COMMIT")
    for _ in range(rounds):
        db.execute("BEGIN")
        for _ in range(200):
            k = r.randrange(n)
            truth[k] = r.randbytes(VALUE_BYTES)
            db.execute("UPDATE %s SET value = ? WHERE key = ?" % table, (truth[k], k))
        db.execute("COMMIT")
    return truth


def test_compaction_and_ddl():
    """'compact' meets DDL: asked for in a transaction that rolls back (nothing runs), followed by
    DROP TABLE while the worker runs (the table goes, with its files, and comes back anew), in an
    attached database, and on a read-only database (refused, with a message)."""
    r = rng("ddl")
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        db = connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=10000")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(autocompact=off)")
        truth = fill_with_garbage(db, r)
        g0 = db.execute("SELECT garbage_bytes FROM mmkv_stats('kv')").fetchone()[0]
        db.execute("BEGIN")
        db.execute("INSERT INTO kv(kv) VALUES('compact')")
        db.execute("ROLLBACK")
        time.sleep(0.5)
        g1, busy = db.execute("SELECT garbage_bytes, compacting FROM mmkv_stats('kv')").fetchone()
        check("'compact' in a transaction rolled back does not run",
              g1 == g0 and busy == 0, "garbage %d -> %d, compacting %r" % (g0, g1, busy))
        db.execute("SAVEPOINT s")
        db.execute("INSERT INTO kv(kv) VALUES('compact')")
        db.execute("RELEASE s")
        check("'compact' in a released savepoint runs", wait_compacted(db))
        check("rows intact", table_dict(db) == truth)
        # DROP while the worker compacts.
        update_rounds(db, r, 5000, 30, truth)
        db.execute("INSERT INTO kv(kv) VALUES('compact')")
        db.execute("DROP TABLE kv")
        time.sleep(1.0)
        left = sorted(f for f in os.listdir(d) if "mmkv" in f)
        check_equal("DROP TABLE during a compaction removes the files", left, [])
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv()")
        db.execute("INSERT INTO kv VALUES(1, 'new')")
        check_equal("the table made anew holds only its own row",
                    db.execute("SELECT key, value FROM kv").fetchall(), [(1, "new")])
        integrity(db, "integrity-check of the table made anew")
        # An attached database's table.
        aux = os.path.join(d, "aux.db")
        db.execute("ATTACH ? AS aux", (aux,))
        db.execute("PRAGMA aux.journal_mode=WAL")
        db.execute("CREATE VIRTUAL TABLE aux.kv USING mmkv(autocompact=off)")
        atruth = fill_with_garbage(db, r, table="aux.kv")
        g0 = db.execute("SELECT garbage_bytes FROM mmkv_stats('kv', 'aux')").fetchone()[0]
        db.execute("INSERT INTO aux.kv(kv) VALUES('compact')")
        deadline = time.time() + 60
        while time.time() < deadline and db.execute(
                "SELECT compacting FROM mmkv_stats('kv', 'aux')").fetchone()[0]:
            time.sleep(0.05)
        g1 = db.execute("SELECT garbage_bytes FROM mmkv_stats('kv', 'aux')").fetchone()[0]
        check("an attached database's table compacts (garbage %d -> %d)" % (g0, g1),
              g1 < g0 // 4, "garbage %d -> %d" % (g0, g1))
        check("the attached table's rows are intact",
              dict(db.execute("SELECT key, value FROM aux.kv").fetchall()) == atruth)
        db.close()
        # Read-only.
        ro = sqlite3.connect("file:%s?mode=ro" % path, uri=True, isolation_level=None)
        ro.enable_load_extension(True)
        ro.load_extension(harness.EXTENSION)
        check_error("'compact' on a read-only database is refused, saying why",
                    lambda: ro.execute("INSERT INTO kv(kv) VALUES('compact')"), "read")
        ro.close()


def test_other_process_reads_during_compaction():
    """Another process reads the table while this one compacts: every read sees a whole state."""
    r = rng("process")
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        db = connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(autocompact=off)")
        fill_with_garbage(db, r, n=3000)
        db.execute("CREATE TABLE total(n)")
        db.execute("INSERT INTO total VALUES(3000)")
        peer = harness.Peer(path, busy_timeout=10)
        bad = []
        for round_ in range(20):
            db.execute("BEGIN")
            db.execute("INSERT INTO kv VALUES(?, 'extra')", (100000 + round_,))
            db.execute("UPDATE total SET n = n + 1")
            db.execute("COMMIT")
            if round_ % 5 == 0:
                db.execute("INSERT INTO kv(kv) VALUES('compact')")
            res = peer.ask("SELECT (SELECT count(*) FROM kv) = (SELECT n FROM total)")
            if res.get("rows") != [[1]]:
                bad.append(res)
        check_equal("another process reads whole states during compactions", bad, [])
        wait_compacted(db)
        peer.close()
        integrity(db, "integrity-check after compactions with another process reading")
        db.close()


def test_index_sized_by_live_keys():
    """'rebuild-index' sizes the index by the live keys, not by the records ever written."""
    r = rng("index")
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(autocompact=off)")
        truth = fill_with_garbage(db, r, n=20000, rounds=100)
        db.execute("INSERT INTO kv(kv) VALUES('rebuild-index')")
        slots, entries = db.execute("SELECT index_slots, index_entries FROM mmkv_stats('kv')"
                                    ).fetchone()
        check("'rebuild-index' on 20000 live keys and 40000 records: at most 65536 slots",
              slots <= 65536 and entries == 20000, "slots %d, entries %d" % (slots, entries))
        check("rows intact after 'rebuild-index'", table_dict(db) == truth)
        db.execute("DELETE FROM kv")
        db.execute("INSERT INTO kv(kv) VALUES('compact')")
        check("the compaction after deleting every row ends", wait_until(
            lambda: db.execute("SELECT compacting FROM mmkv_stats('kv')").fetchone()[0] == 0))
        db.execute("INSERT INTO kv(kv) VALUES('rebuild-index')")
        slots = db.execute("SELECT index_slots FROM mmkv_stats('kv')").fetchone()[0]
        check_equal("'rebuild-index' with no rows left: the smallest table", slots, 1024)
        integrity(db, "integrity-check after rebuilding an empty table's index")
        db.close()


def test_compacting_a_table_of_mmkv_0_1():
    """A table whose commit record is version 1 (mmkv 0.1's 40 bytes) compacts: its record
    becomes version 2 in the compaction's commit, and everything reopens."""
    r = rng("v1")
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        db = connect(path)
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(autocompact=off)")
        truth = fill_with_garbage(db, r, n=3000)
        db.close()
        raw = sqlite3.connect(path)
        raw.execute("UPDATE kv_commit SET state = substr(state, 9, 40)")  # the v1 layout,
        raw.execute("DELETE FROM kv_commit WHERE rowid = 2")  # in mmkv 0.1's one row
        raw.commit()
        raw.close()
        db = connect(path)
        check("a version 1 record reads", table_dict(db) == truth)
        update_rounds(db, r, 3000, 5, truth)
        check_equal("a version 1 record stays version 1 while nothing compacts",
                    db.execute("SELECT length(state) FROM kv_commit").fetchone()[0], 40)
        db.execute("INSERT INTO kv(kv) VALUES('compact')")
        wait_compacted(db)
        check_equal("the compaction made the record version 2",
                    db.execute("SELECT length(state) FROM kv_commit").fetchone()[0], 96)
        check("rows intact after compacting a version 1 table", table_dict(db) == truth)
        db.close()
        db = connect(path)
        check("rows intact after reopening it", table_dict(db) == truth)
        integrity(db, "integrity-check of the compacted version 1 table")
        db.close()


READONLY_CHILD = r"""
import os, sqlite3, sys, json
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True, isolation_level=None)
db.enable_load_extension(True)
db.load_extension(os.environ["MMKV_EXTENSION"])
for line in sys.stdin:
    keys = json.loads(line)
    try:
        out = [db.execute("SELECT value FROM kv WHERE key = ?", (k,)).fetchone() for k in keys]
        out = [o[0] if o else None for o in out]
        n = db.execute("SELECT count(*) FROM kv").fetchone()[0]
        print(json.dumps({"values": out, "count": n}), flush=True)
    except sqlite3.Error as e:
        print(json.dumps({"error": str(e)}), flush=True)
"""


def test_read_only_reader_across_compactions():
    """A read-only connection of another process (with an index of its own in memory, the one on
    disk being in use) reads right across compactions that drop deleted keys' tombstones."""
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        db = connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(autocompact=off)")
        db.execute("BEGIN")
        truth = {}
        for k in range(4000):
            truth[k] = "v%d" % k
            db.execute("INSERT INTO kv VALUES(?, ?)", (k, truth[k]))
        db.execute("COMMIT")
        child = subprocess.Popen([harness.PYTHON, "-c", READONLY_CHILD, path], env=harness.CHILD_ENV,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        def ask(keys):
            child.stdin.write(json.dumps(keys) + "\n")
            child.stdin.flush()
            return json.loads(child.stdout.readline())
        probe = list(range(0, 4000, 7))
        first = ask(probe)
        check("the read-only reader reads the table",
              first.get("values") == [truth[k] for k in probe], "got %r" % first)
        for round_ in range(3):
            db.execute("DELETE FROM kv WHERE key % 3 = ?", (round_,))
            for k in [k for k in truth if k % 3 == round_]:
                del truth[k]
            for k in range(0, 4000, 11):
                if k in truth:
                    truth[k] = "r%d-%d" % (round_, k)
                    db.execute("UPDATE kv SET value = ? WHERE key = ?", (truth[k], k))
            db.execute("INSERT INTO kv(kv) VALUES('compact')")
            wait_compacted(db)
            got = ask(probe)
            check("round %d: the read-only reader sees the deletes and updates" % round_,
                  got.get("values") == [truth.get(k) for k in probe] and
                  got.get("count") == len(truth), "got %r" % (got.get("error") or got.get("count")))
        child.stdin.close()
        child.wait()
        db.close()




def test_space_comes_back_while_compact_runs_under_writes():
    """A pass asked for gives space back as it goes, while another connection commits all the
    time (so that no checkpoint ever copies the whole WAL): the files shrink before it ends, and
    every row is intact after."""
    import threading
    r = rng("compact-under-writes")
    n = 20000
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        db = connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(autocompact=off, sync=off)")
        truth = fill_with_garbage(db, r, n=n, rounds=150)
        writer = connect(path, check_same_thread=False)
        writer.execute("PRAGMA busy_timeout=10000")
        stop = threading.Event()
        written = {}
        errors = []

        def write():
            k = 0
            while not stop.is_set():
                try:
                    writer.execute("INSERT OR REPLACE INTO kv VALUES(?, ?)", (n + k % 100, "w%d" % k))
                    written[n + k % 100] = "w%d" % k
                    k += 1
                except sqlite3.Error as e:
                    errors.append(str(e))
                time.sleep(0.002)

        thread = threading.Thread(target=write)
        thread.start()
        try:
            before = allocated(d)
            db.execute("INSERT INTO kv(kv) VALUES('compact')")
            lowest = before
            deadline = time.time() + 60
            while time.time() < deadline:
                compacting = db.execute("SELECT compacting FROM mmkv_stats('kv')").fetchone()[0]
                if not compacting:
                    break
                lowest = min(lowest, allocated(d))
                time.sleep(0.01)
        finally:
            stop.set()
            thread.join()
        check_equal("the writer's commits all succeed", errors, [])
        check("the files shrink while the pass runs, not only at its end",
              lowest < before * 0.8, "before %d, lowest while compacting %d" % (before, lowest))
        truth.update(written)
        check("rows intact after the pass", table_dict(db) == truth)
        integrity(db, "integrity-check after compacting under writes")
        writer.close()
        db.close()


def test_large_transaction_compacts_without_later_commits():
    """One transaction that rewrites, then one that deletes, every row of a table leaves far more
    garbage than its own step takes away; with no commit after it, the worker compacts anyway:
    the files come back near the rows' size, then under 1 MB."""
    n = 150000
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        db = connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(sync=off)")
        db.execute("BEGIN")
        db.executemany("INSERT INTO kv VALUES(?, randomblob(100))", ((k,) for k in range(n)))
        db.execute("COMMIT")
        loaded = allocated(d)
        db.execute("UPDATE kv SET value = randomblob(100)")
        rewritten = allocated(d)
        check("the rewrite doubles the log", rewritten > loaded * 1.6,
              "loaded %d, rewritten %d" % (loaded, rewritten))
        check("without a later commit, the files come back near the rows' size",
              wait_until(lambda: allocated(d) < loaded * 1.3, timeout=60),
              "loaded %d, rewritten %d, now %d" % (loaded, rewritten, allocated(d)))
        check_equal("every row still there", db.execute("SELECT count(*) FROM kv").fetchone()[0], n)
        integrity(db, "integrity-check after the rewrite's compaction")
        db.execute("DELETE FROM kv")
        check("after a delete of every row, the files go under 1 MB without 'compact'",
              wait_until(lambda: allocated(d) < MIB, timeout=60), "now %d" % allocated(d))
        check_equal("no row left", db.execute("SELECT count(*) FROM kv").fetchone()[0], 0)
        db.close()


def test_large_transaction_of_a_temporary_table_compacts():
    """A table of a temporary or in-memory database has no worker: after one transaction that
    rewrites every row, then one that deletes them, the committing connection runs the pass
    itself, so that the files come back near the rows' size, then under 1 MB, with no later
    commit."""
    n = 100000
    for where in ("temp", "memory"):
        db = connect(":memory:")
        schema = "temp" if where == "temp" else "main"
        db.execute("CREATE VIRTUAL TABLE %s.kv USING mmkv" % schema)
        stats = "SELECT data_file_bytes + index_file_bytes, garbage_bytes, live_count " \
                "FROM mmkv_stats('kv', '%s')" % schema
        db.execute("BEGIN")
        db.executemany("INSERT INTO kv VALUES(?, randomblob(100))", ((k,) for k in range(n)))
        db.execute("COMMIT")
        loaded = db.execute(stats).fetchone()[0]
        # The new values, from a native table, so that every row can be checked after the pass.
        db.execute("CREATE TEMP TABLE ref(k INTEGER PRIMARY KEY, v BLOB)")
        db.executemany("INSERT INTO ref VALUES(?, randomblob(100))", ((k,) for k in range(n)))
        db.execute("BEGIN")
        db.execute("SAVEPOINT s")
        db.execute("UPDATE kv SET value = (SELECT v FROM ref WHERE k = kv.key)")
        db.execute("RELEASE s")
        db.execute("COMMIT")
        size, garbage, live = db.execute(stats).fetchone()
        check("%s table: the rewrite's commit compacts (loaded %d)" % (where, loaded),
              size < loaded * 1.3 and live == n,
              "loaded %d bytes, after the rewrite %d (garbage %d, %d rows)"
              % (loaded, size, garbage, live))
        integrity(db, "%s table: integrity-check after the rewrite" % where)
        joined = db.execute("SELECT count(*), total(v IS NOT value) FROM kv JOIN ref ON k = key"
                            ).fetchone()
        check_equal("%s table: every row has its new value after the pass (rows, wrong)" % where,
                    joined, (n, 0.0))
        db.execute("DELETE FROM kv")
        size, garbage, live = db.execute(stats).fetchone()
        check("%s table: a delete of every row leaves under 1 MB" % where,
              size < MIB and live == 0, "%d bytes (garbage %d, %d rows)" % (size, garbage, live))
        check_equal("%s table: no row left" % where,
                    db.execute("SELECT count(*) FROM kv").fetchone()[0], 0)
        db.close()


CASES = [test_automatic_compaction_bounds_space, test_compact_command_and_delete_all,
         test_readers_keep_their_snapshots, test_kill_during_compaction,
         test_temporary_and_memory_tables_compact, test_rollback_of_a_compacting_transaction,
         test_autocompact_argument, test_backup_of_a_compacted_table, test_compaction_and_ddl,
         test_other_process_reads_during_compaction, test_index_sized_by_live_keys,
         test_compacting_a_table_of_mmkv_0_1, test_read_only_reader_across_compactions,
         test_space_comes_back_while_compact_runs_under_writes,
         test_large_transaction_compacts_without_later_commits,
         test_large_transaction_of_a_temporary_table_compacts]

if __name__ == "__main__":
    harness.main([harness.watchdog(c, CASE_TIMEOUT) for c in CASES])
