"""Two processes on one mmkv file: a reader never sees part of a commit and eventually sees all of
it; only one process writes at a time (the other gets SQLITE_BUSY at once, never hangs, and can
write once the first commits, rolls back or dies); index and data-file growth in one process is
seen by the other.

Every process is a child (python3) with a timeout, so nothing here can hang. Each scenario runs
twice: both processes on the same database file, and on two database files whose tables name the
same data file with file= (so only mmkv's own locking is between them).
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import CHILD_ENV, PYTHON, Peer, TempDir, check, check_equal, connect  # noqa: E402


def is_ok(resp):
    return "rows" in resp


def is_busy(resp):
    msg = resp.get("msg", "").lower()
    return resp.get("error") == "OperationalError" and ("lock" in msg or "busy" in msg)


def ok_rows(name, resp, expected):
    if "rows" not in resp:
        return check(name, False, "got %r" % resp)
    return check_equal(name, resp["rows"], expected)


class Setup:
    """Two database paths whose table kv is one mmkv data file: the same database twice
    ("same db"), or two in-memory databases whose tables name one data file with file=
    ("shared file", where mmkv's own meta slots and lock decide; a database file owns its data
    file and no other database may open it). A path "memory:FILE" stands for such an in-memory
    database: the child scripts create its table, and harness.connect() does too."""

    def __init__(self, d, shared, args=""):
        self.shared = shared
        if not shared:
            self.a = self.b = os.path.join(d, "app.db")
            db = connect(self.a)
            db.execute("CREATE VIRTUAL TABLE kv USING mmkv%s" % (("(%s)" % args) if args else ""))
            db.close()
            self.data = self.a + "-kv.mmkv"
        else:
            self.data = os.path.join(d, "shared.mmkv")
            self.a = self.b = "memory:" + self.data
            connect(self.a).close()
        self.label = "shared file" if shared else "same db"


# ---------------------------------------------------------------------------------------------

WRITER = r'''
import os, sqlite3, sys, time
# "memory:PATH": an in-memory database whose table kv shares the data file PATH.
MEMORY = sys.argv[1].startswith("memory:")
db = sqlite3.connect(":memory:" if MEMORY else sys.argv[1], isolation_level=None,
                     timeout=5)
db.enable_load_extension(True)
db.load_extension(os.environ["MMKV_EXTENSION"])
if MEMORY:
    db.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % sys.argv[1][len("memory:"):])
batches, per, ready = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
deadline = time.time() + 20
while not os.path.exists(ready):
    if time.time() > deadline:
        sys.exit("reader never became ready")
    time.sleep(0.002)
for b in range(1, batches + 1):
    db.execute("BEGIN")
    db.executemany("INSERT INTO kv VALUES(?, ?)", ((b * 1000 + i, b) for i in range(per)))
    db.executemany("UPDATE kv SET value = ? WHERE key = ?", ((b, i) for i in range(100)))
    if b % 5 == 0:  # a big value, so that the data file grows (and is remapped) under the reader
        db.execute("INSERT OR REPLACE INTO kv VALUES('big', ?)", (bytes([b]) * 300000,))
    db.execute("COMMIT")
    print("committed", b, flush=True)
    time.sleep(0.003)
'''

# The reader checks each statement sees whole batches only: batches present are exactly 1..m,
# each with all its keys; the 100 hot keys (rewritten by every batch) hold one value; what was
# seen once stays seen. Prints a JSON summary.
READER = r'''
import json, os, random, sqlite3, sys, time
# "memory:PATH": an in-memory database whose table kv shares the data file PATH.
MEMORY = sys.argv[1].startswith("memory:")
db = sqlite3.connect(":memory:" if MEMORY else sys.argv[1], isolation_level=None,
                     timeout=5)
db.enable_load_extension(True)
db.load_extension(os.environ["MMKV_EXTENSION"])
if MEMORY:
    db.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % sys.argv[1][len("memory:"):])
batches, per, ready, seconds = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
rnd = random.Random(json.loads(sys.argv[6]))
bad, errors, states = [], [], set()
reads = nerrors = 0
error_stages = {}
prev_m = prev_hot = 0
first = True
deadline = time.time() + seconds
done = False
while time.time() < deadline and not done:
    try:
        stage = "full scan GROUP BY value"
        rows = db.execute("SELECT value, count(*) FROM kv WHERE key >= 1000 AND key <> 'big' GROUP BY value").fetchall()
        counts = dict(rows)
        m = max(counts) if counts else 0
        if sorted(counts) != list(range(1, m + 1)) or any(c != per for c in counts.values()):
            bad.append("batches partly visible: %r" % sorted(counts.items())[:6])
        if m < prev_m:
            bad.append("went back from batch %d to %d" % (prev_m, m))
        prev_m = max(m, prev_m)
        stage = "scan of the hot keys"
        n, distinct, hot = db.execute(
            "SELECT count(*), count(DISTINCT value), min(value) FROM kv WHERE key < 100").fetchone()
        if (n, distinct) != (100, 1):
            bad.append("hot keys: %d rows, %d distinct values" % (n, distinct))
        if hot is not None and hot < prev_hot:
            bad.append("hot keys went back from %d to %d" % (prev_hot, hot))
        prev_hot = max(prev_hot, hot or 0)
        # Point lookups through the index, on a seen batch and on the next one.
        for b in ([rnd.randint(1, prev_m)] if prev_m else []) + [prev_m + 1]:
            keys = [b * 1000 + i for i in range(per)]
            stage = "key IN (...) lookups"
            c = db.execute("SELECT count(*) FROM kv WHERE key IN (%s)" % ",".join(map(str, keys))
                           ).fetchone()[0]
            if b <= prev_m and c != per:
                bad.append("lookups of seen batch %d found %d keys" % (b, c))
            elif c not in (0, per):
                bad.append("lookups of batch %d found %d keys" % (b, c))
            stage = "key = ? lookup"
            v = db.execute("SELECT value FROM kv WHERE key = ?", (b * 1000 + per - 1,)).fetchall()
            if b <= prev_m and v != [(b,)]:
                bad.append("lookup of a key of seen batch %d returned %r" % (b, v))
        stage = "key = 7 lookup"
        v = db.execute("SELECT value FROM kv WHERE key = 7").fetchone()
        if v is None or v[0] < prev_hot:
            bad.append("hot key 7 lookup returned %r after seeing %d" % (v, prev_hot))
        stage = "big value lookup"
        big = db.execute("SELECT length(value), substr(value, 1, 1) = substr(value, -1, 1) "
                         "FROM kv WHERE key = 'big'").fetchall()
        if big and big[0] != (300000, 1):
            bad.append("big value: length %r, same first and last byte %r" % big[0])
        states.add(m)
        reads += 1
        done = m == batches and prev_hot == batches
    except sqlite3.Error as e:
        nerrors += 1
        if len(errors) < 10:
            errors.append("%s (in %s): %s" % (type(e).__name__, stage, e))
        error_stages[stage] = error_stages.get(stage, 0) + 1
    if first:
        open(ready, "w").close()
        first = False
print(json.dumps({"reads": reads, "bad": bad[:20], "nbad": len(bad), "errors": errors, "nerrors": nerrors, "error_stages": error_stages,
                  "states": len(states), "final": prev_m, "final_hot": prev_hot}))
'''


def run_reader_writer(shared):
    batches, per = 40, 250
    with TempDir() as d:
        s = Setup(d, shared)
        db = connect(s.a)
        db.executemany("INSERT INTO kv VALUES(?, 0)", ((i,) for i in range(100)))
        db.close()
        ready = os.path.join(d, "reader-ready")
        reader = subprocess.Popen([PYTHON, "-c", READER, s.b, str(batches), str(per), ready, "25",
                                   json.dumps(harness.seed_of(1))],
                                  env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        writer = subprocess.Popen([PYTHON, "-c", WRITER, s.a, str(batches), str(per), ready],
                                  env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        name = "reader/writer (%s)" % s.label
        try:
            wout, werr = writer.communicate(timeout=40)
            rout, rerr = reader.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            for p in (reader, writer):
                if p.poll() is None:
                    p.kill()
                    p.wait()
            check(name + ": finished in time", False, "a process hung")
            return
        check(name + ": writer committed every batch",
              writer.returncode == 0 and wout.decode().split("\n")[-2:-1] == ["committed %d" %
                                                                               batches],
              "status %s, stderr %s" % (writer.returncode, werr.decode()[-1500:]))
        if not check(name + ": reader ran", reader.returncode == 0,
                     "status %s, stderr %s" % (reader.returncode, rerr.decode()[-1500:])):
            return
        r = json.loads(rout)
        check(name + ": reader saw whole batches only (%d reads)" % r["reads"], r["nbad"] == 0,
              "%d violations: %s" % (r["nbad"], r["bad"]))
        check(name + ": reader got no error", not r["nerrors"],
              "%d of %d reads failed (by query: %s), e.g. %s" % (
                  r["nerrors"], r["reads"] + r["nerrors"], r["error_stages"], r["errors"][:2]))
        check(name + ": reader eventually saw everything",
              r["final"] == batches and r["final_hot"] == batches,
              "last saw batch %d, hot %d" % (r["final"], r["final_hot"]))
        check(name + ": reader saw intermediate states", r["states"] >= 3,
              "only %d distinct states in %d reads" % (r["states"], r["reads"]))
        db = connect(s.b)
        check_equal(name + ": final count", db.execute("SELECT count(*) FROM kv").fetchone()[0],
                    100 + batches * per + 1)
        db.close()


def test_reader_writer_same_db():
    run_reader_writer(False)


def test_reader_writer_shared_file():
    run_reader_writer(True)


def run_second_writer(shared):
    with TempDir() as d:
        s = Setup(d, shared)
        db = connect(s.a)
        db.execute("INSERT INTO kv VALUES(1, 'one')")
        db.close()
        label = "second writer (%s)" % s.label
        a, b = Peer(s.a), Peer(s.b)
        try:
            ok_rows(label + ": A begins", a.ask("BEGIN"), [])
            ok_rows(label + ": A writes", a.ask("INSERT INTO kv VALUES(2, 'from A')"), [])
            a.ask("UPDATE kv SET value = 'changed by A' WHERE key = 1")
            # B reads the committed state, without error, while A holds the write.
            ok_rows(label + ": B reads while A writes", b.ask("SELECT key, value FROM kv"),
                    [[1, "one"]])
            ok_rows(label + ": B point lookup while A writes",
                    b.ask("SELECT value FROM kv WHERE key = 2"), [])
            t = time.time()
            r = b.ask("INSERT INTO kv VALUES(3, 'from B')")
            check(label + ": B's write is refused with busy/locked", is_busy(r), "got %r" % r)
            check(label + ": B's refusal is prompt", time.time() - t < 3,
                  "took %.1fs" % (time.time() - t))
            b.ask("BEGIN")
            r = b.ask("DELETE FROM kv WHERE key = 1")
            check(label + ": B's write inside BEGIN is refused with busy/locked", is_busy(r),
                  "got %r" % r)
            b.ask("ROLLBACK")
            r = b.ask("UPDATE kv SET value = 'B' WHERE key = 1")
            check(label + ": B's UPDATE is refused with busy/locked", is_busy(r), "got %r" % r)
            ok_rows(label + ": A commits", a.ask("COMMIT"), [])
            ok_rows(label + ": B sees A's commit", b.ask("SELECT key, value FROM kv ORDER BY key"),
                    [[1, "changed by A"], [2, "from A"]])
            ok_rows(label + ": B writes after A committed",
                    b.ask("INSERT INTO kv VALUES(3, 'from B')"), [])
            ok_rows(label + ": A sees B's commit", a.ask("SELECT value FROM kv WHERE key = 3"),
                    [["from B"]])
            # The other way round, ended by a rollback.
            b.ask("BEGIN")
            ok_rows(label + ": B holds the write", b.ask("INSERT INTO kv VALUES(4, 'B4')"), [])
            r = a.ask("INSERT INTO kv VALUES(5, 'A5')")
            check(label + ": A is refused while B writes", is_busy(r), "got %r" % r)
            ok_rows(label + ": B rolls back", b.ask("ROLLBACK"), [])
            ok_rows(label + ": A writes after B rolled back",
                    a.ask("INSERT INTO kv VALUES(5, 'A5')"), [])
            ok_rows(label + ": B's rolled-back row is not there",
                    a.ask("SELECT key FROM kv ORDER BY key"), [[1], [2], [3], [5]])
            # With a busy timeout, a refused writer still returns in bounded time.
            c = Peer(s.b, busy_timeout=0.5)
            try:
                a.ask("BEGIN")
                a.ask("INSERT INTO kv VALUES(6, 'A6')")
                t = time.time()
                r = c.ask("INSERT INTO kv VALUES(7, 'C7')", timeout=15)
                check(label + ": writer with a busy timeout is refused in bounded time",
                      is_busy(r) and time.time() - t < 10,
                      "got %r after %.1fs" % (r, time.time() - t))
                a.ask("COMMIT")
                ok_rows(label + ": writer with a busy timeout writes after the commit",
                        c.ask("INSERT INTO kv VALUES(7, 'C7')"), [])
            finally:
                c.close()
            # A writer killed while holding the write transaction: its lock goes with it.
            a.ask("BEGIN")
            ok_rows(label + ": A writes before being killed",
                    a.ask("INSERT INTO kv VALUES(8, 'never committed')"), [])
            a.kill()
            r = b.ask("INSERT INTO kv VALUES(9, 'B after kill')")
            deadline = time.time() + 3
            while is_busy(r) and time.time() < deadline:
                time.sleep(0.05)
                r = b.ask("INSERT INTO kv VALUES(9, 'B after kill')")
            check(label + ": B writes after the writer was killed", is_ok(r), "got %r" % r)
            ok_rows(label + ": killed writer's work is gone",
                    b.ask("SELECT key FROM kv ORDER BY key"), [[1], [2], [3], [5], [6], [7], [9]])
        finally:
            a.kill()
            check_equal(label + ": B exits cleanly", b.close(), 0)
        db = connect(s.a)
        check_equal(label + ": final rows", db.execute("SELECT key FROM kv ORDER BY key").fetchall(),
                    [(1,), (2,), (3,), (5,), (6,), (7,), (9,)])
        db.close()


def test_second_writer_same_db():
    run_second_writer(False)


def test_second_writer_shared_file():
    run_second_writer(True)


def run_growth(shared):
    """B maps the files while small; A grows index and data file a lot; B must find everything.
    Then the other way round."""
    with TempDir() as d:
        s = Setup(d, shared)
        label = "growth (%s)" % s.label
        a, b = Peer(s.a), Peer(s.b)
        try:
            ok_rows(label + ": B reads the empty table", b.ask("SELECT count(*) FROM kv"), [[0]])
            ok_rows(label + ": B looks up a missing key", b.ask("SELECT * FROM kv WHERE key = 1"),
                    [])
            n = 30000
            for start in range(0, n, 10000):
                a.ask("BEGIN")
                vals = ",".join("(%d, 'a%d')" % (i, i) for i in range(start, start + 10000))
                r = a.ask("INSERT INTO kv VALUES " + vals)
                if not ok_rows(label + ": A inserts keys %d.." % start, r, []):
                    return
                ok_rows(label + ": A commits", a.ask("COMMIT"), [])
            big = [bytes([i]) * (1 << 20) for i in range(1, 6)]
            for i, v in enumerate(big):
                r = a.ask("INSERT INTO kv VALUES(?, ?)", ("big%d" % i, v))
            ok_rows(label + ": B counts A's rows", b.ask("SELECT count(*) FROM kv"), [[n + 5]])
            keys = list(range(0, n, 7)) + [n - 1]
            r = b.ask("SELECT count(*) FROM kv WHERE key IN (%s)" % ",".join(map(str, keys)))
            ok_rows(label + ": B finds A's keys by lookup", r, [[len(keys)]])
            bad = [k for k in range(0, n, 997)
                   if b.ask("SELECT value FROM kv WHERE key = ?", (k,)).get("rows") != [["a%d" % k]]]
            check(label + ": B's point lookups return A's values", not bad, "wrong for %s" % bad)
            r = b.ask("SELECT key, length(value), hex(substr(value, 1, 1)), "
                      "hex(substr(value, -1, 1)) FROM kv WHERE key LIKE 'big%' ORDER BY key")
            ok_rows(label + ": B reads A's 1 MB values", r,
                    [["big%d" % i, 1 << 20, "%02X" % (i + 1), "%02X" % (i + 1)] for i in range(5)])
            # B now grows it further, A (with its older mappings) reads.
            b.ask("BEGIN")
            vals = ",".join("('b%d', %d)" % (i, i) for i in range(20000))
            ok_rows(label + ": B inserts 20000 keys", b.ask("INSERT INTO kv VALUES " + vals), [])
            ok_rows(label + ": B deletes", b.ask("DELETE FROM kv WHERE key < 1000"), [])
            ok_rows(label + ": B commits", b.ask("COMMIT"), [])
            ok_rows(label + ": A counts", a.ask("SELECT count(*) FROM kv"), [[n + 5 + 20000 - 1000]])
            keys = ",".join("'b%d'" % i for i in range(0, 20000, 3))
            ok_rows(label + ": A finds B's keys by lookup",
                    a.ask("SELECT count(*) FROM kv WHERE key IN (%s)" % keys),
                    [[len(range(0, 20000, 3))]])
            ok_rows(label + ": A does not find B's deleted keys",
                    a.ask("SELECT count(*) FROM kv WHERE key IN (0, 1, 500, 999)"), [[0]])
            ok_rows(label + ": A still finds its own keys",
                    a.ask("SELECT value FROM kv WHERE key = 1000"), [["a1000"]])
            # Alternating small commits: each sees the other's at once.
            bad = []
            for i in range(50):
                w, rd = (a, b) if i % 2 == 0 else (b, a)
                w.ask("INSERT INTO kv VALUES(?, ?)", ("alt%d" % i, i))
                got = rd.ask("SELECT value FROM kv WHERE key = ?", ("alt%d" % i,))
                if got.get("rows") != [[i]]:
                    bad.append((i, got))
            check(label + ": alternating commits are seen at once", not bad, str(bad[:3]))
        finally:
            check_equal(label + ": A exits cleanly", a.close(), 0)
            check_equal(label + ": B exits cleanly", b.close(), 0)


def run_write_after_growth(shared):
    """B maps the files while small; A grows the index far past B's mapping; B's next statement
    is a write, and then B closes: each must first map the tables A moved (both used to touch
    slots past B's mapping and crash the process)."""
    with TempDir() as d:
        s = Setup(d, shared)
        label = "write after growth (%s)" % s.label
        a, b = Peer(s.a), Peer(s.b)
        try:
            ok_rows(label + ": B reads the empty table", b.ask("SELECT count(*) FROM kv"), [[0]])
            n = 200000
            a.ask("BEGIN")
            vals = ",".join("(%d, %d)" % (i, i) for i in range(n))
            ok_rows(label + ": A inserts %d keys" % n, a.ask("INSERT INTO kv VALUES " + vals), [])
            ok_rows(label + ": A commits", a.ask("COMMIT"), [])
            ok_rows(label + ": B's first statement since is a write",
                    b.ask("INSERT INTO kv VALUES('b', 1)"), [])
            check_equal(label + ": B, the last to write, closes cleanly", b.close(), 0)
            ok_rows(label + ": A reads B's row and its own",
                    a.ask("SELECT key, value FROM kv WHERE key IN ('b', 7) ORDER BY key"),
                    [[7, 7], ["b", 1]])
            ok_rows(label + ": A counts", a.ask("SELECT count(*) FROM kv"), [[n + 1]])
            # C maps the files, A grows the index again and closes: C, the last user, marks the
            # index clean without having looked at it since.
            c = Peer(s.b)
            ok_rows(label + ": C counts", c.ask("SELECT count(*) FROM kv"), [[n + 1]])
            vals = ",".join("(%d, %d)" % (i, i) for i in range(n, 3 * n))
            ok_rows(label + ": A inserts %d more keys" % (2 * n),
                    a.ask("INSERT INTO kv VALUES " + vals), [])
            check_equal(label + ": A exits cleanly", a.close(), 0)
            check_equal(label + ": C, the last user, exits cleanly", c.close(), 0)
            d2 = Peer(s.a)
            ok_rows(label + ": the next process finds every row",
                    d2.ask("SELECT count(*) FROM kv WHERE key IN (0, 'b', %d, %d)" % (n, 3 * n - 1)),
                    [[4]])
            check_equal(label + ": it exits cleanly", d2.close(), 0)
        finally:
            a.close()
            b.close()


def test_growth_same_db():
    run_growth(False)


def test_growth_shared_file():
    run_growth(True)


def test_write_after_growth_same_db():
    run_write_after_growth(False)


def test_write_after_growth_shared_file():
    run_write_after_growth(True)


if __name__ == "__main__":
    harness.main([
        test_reader_writer_same_db,
        test_reader_writer_shared_file,
        test_second_writer_same_db,
        test_second_writer_shared_file,
        test_growth_same_db,
        test_growth_shared_file,
        test_write_after_growth_same_db,
        test_write_after_growth_shared_file,
    ])
