"""Durability across close and reopen: whatever was committed is there afterwards, in this process
and in a new one, and nothing else is (rolled-back work, work of a connection closed or a process
killed in the middle of a transaction).

Each scenario writes the same rows into an mmkv table `kv` and a native table
`ref(key PRIMARY KEY NOT NULL, value) WITHOUT ROWID`, so the native table is the expected
answer; rows are compared type for type and byte for byte (see enc()).
"""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (CHILD_ENV, ENC_SRC, PYTHON, TempDir, check, check_equal, connect,  # noqa: E402
                     enc, enc_rows, rows_diff)



# A child that opens a database, loads mmkv and runs queries given as JSON on stdin:
# [[sql, [encoded params]], ...] -> one JSON line: [{"rows": ...} | {"error": ..., "msg": ...}].
CHILD_QUERY = ENC_SRC + r'''
import json, os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
db.enable_load_extension(True)
db.load_extension(os.environ["MMKV_EXTENSION"])
out = []
for sql, params in json.loads(sys.stdin.read()):
    try:
        out.append({"rows": enc_rows(db.execute(sql, [dec(p) for p in params]).fetchall())})
    except sqlite3.Error as e:
        out.append({"error": type(e).__name__, "msg": str(e)})
db.close()
print(json.dumps(out))
'''


def child_query(db_path, queries, timeout=60):
    """Runs [(sql, params)] in a new process; returns (list of results, problem or None)."""
    payload = json.dumps([[sql, [enc(p, True) for p in params]] for sql, params in queries])
    try:
        p = subprocess.run([PYTHON, "-c", CHILD_QUERY, db_path], input=payload, env=CHILD_ENV,
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "child timed out after %ss" % timeout
    if p.returncode != 0:
        return None, "child exited with %d: %s" % (p.returncode, p.stderr[-2000:])
    try:
        return json.loads(p.stdout), None
    except ValueError:
        return None, "child printed %r (stderr %r)" % (p.stdout[-500:], p.stderr[-500:])


def check_rows(name, got, expected):
    d = rows_diff(got, expected)
    return check(name, not d, d)


ALL = "SELECT key, value FROM %s"


def table_rows(db, table):
    return enc_rows(db.execute(ALL % table).fetchall())


def setup(path, args=""):
    db = connect(path)
    # The native table is only the expected answer: its own syncs would just cost time.
    db.execute("PRAGMA journal_mode=MEMORY")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("CREATE VIRTUAL TABLE kv USING mmkv%s" % (("(%s)" % args) if args else ""))
    db.execute("CREATE TABLE ref(key PRIMARY KEY NOT NULL, value) WITHOUT ROWID")
    return db


def both(db, sql, params=()):
    """Runs one statement on kv and the same on ref."""
    db.execute(sql.replace("{t}", "kv"), params)
    db.execute(sql.replace("{t}", "ref"), params)


def both_many(db, sql, seq):
    seq = list(seq)
    db.executemany(sql.replace("{t}", "kv"), seq)
    db.executemany(sql.replace("{t}", "ref"), seq)


def verify(name, path, lookups=(), absent=(), new_process=True):
    """Reopens path in this process (and in a new one): kv must hold exactly ref's rows, and each
    key of lookups (and absent) must be found (not found) by a point lookup."""
    db = connect(path)
    try:
        expected = table_rows(db, "ref")
        ok = check_rows(name + ": reopened, same rows", table_rows(db, "kv"), expected)
        check_equal(name + ": reopened, count(*)",
                    db.execute("SELECT count(*) FROM kv").fetchone()[0], len(expected))
        bad = []
        for k in lookups:
            got = enc_rows(db.execute("SELECT key, value FROM kv WHERE key = ?", (k,)).fetchall())
            exp = enc_rows(db.execute("SELECT key, value FROM ref WHERE key = ?", (k,)).fetchall())
            if got != exp:
                bad.append((enc(k), got[:1], exp[:1]))
        for k in absent:
            got = db.execute("SELECT count(*) FROM kv WHERE key = ?", (k,)).fetchone()[0]
            if got != 0:
                bad.append((enc(k), "found", "absent"))
        if lookups or absent:
            check(name + ": reopened, point lookups", not bad,
                  "%d wrong, first: %s" % (len(bad), bad[:3]))
    finally:
        db.close()
    if not new_process:
        return ok
    queries = [(ALL % "kv", ()), (ALL % "ref", ()), ("SELECT count(*) FROM kv", ())]
    queries += [("SELECT key, value FROM kv WHERE key = ?", (k,)) for k in lookups]
    queries += [("SELECT key, value FROM ref WHERE key = ?", (k,)) for k in lookups]
    queries += [("SELECT count(*) FROM kv WHERE key = ?", (k,)) for k in absent]
    res, problem = child_query(path, queries)
    if not check(name + ": new process ran", res is not None, problem):
        return False
    errors = [r for r in res if "error" in r]
    if not check(name + ": new process, no error", not errors, str(errors[:3])):
        return False
    ok = check_rows(name + ": new process, same rows", res[0]["rows"], res[1]["rows"]) and ok
    check_equal(name + ": new process, count(*)", res[2]["rows"], [[enc(len(res[1]["rows"]))]])
    n = len(lookups)
    got, exp, ab = res[3:3 + n], res[3 + n:3 + 2 * n], res[3 + 2 * n:]
    bad = [i for i in range(n) if got[i] != exp[i]]
    bad += ["absent %d" % i for i, r in enumerate(ab) if r["rows"] != [[enc(0)]]]
    if lookups or absent:
        check(name + ": new process, point lookups", not bad, "wrong: %s" % bad[:5])
    return ok


# ---------------------------------------------------------------------------------------------

MB = 1024 * 1024
SAMPLE = [
    (1, None), (2, 0), (3, -1), (4, 2 ** 63 - 1), (5, -2 ** 63), (6, 1.5), (7, -0.0),
    (8, 1e308), (9, 5e-324), (10, ""), (11, b""), (12, "a\x00b"), (13, b"\x00\x01\xff"),
    (14, "h\u00e9llo \u2713 \U0001f600"), (15, "x" * MB), (16, bytes(range(256)) * (MB // 256)),
    (17, float("inf")), (18, float("-inf")), (19, 3.0), (20, "1"), (21, b"a"), (22, "a"),
    (1.5, "real key"), (-0.0, "minus zero key"), (1e300, "big real key"),
    ("text key", 1), ("", "empty text key"), (b"", "empty blob key"), (b"a", "blob a"),
    ("a", "text a"), ("1", "text one"), (9007199254740993, "2^53+1"),
    (9007199254740992.0, "2^53 real"), (-7, b"neg"), ("k\x00z", "nul key"),
    (b"\xff" * 1000, "long blob key"), ("long" * 1000, "long text key"),
    (float("-inf"), "minus inf key"), (-2 ** 63, "min int key"), (2 ** 63 - 1, "max int key"),
]
SAMPLE_KEYS = [k for k, _ in SAMPLE]
ABSENT_KEYS = [0.5, "2", b"1", "A", b"text key", "text key ", 9007199254740994, 23]


def test_all_types():
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        db = setup(path)
        both_many(db, "INSERT INTO {t} VALUES(?, ?)", SAMPLE)
        check_rows("all types: before close", table_rows(db, "kv"), table_rows(db, "ref"))
        db.close()
        check("all types: data file beside the database", os.path.exists(path + "-kv.mmkv"),
              "expected %s, found %s" % (path + "-kv.mmkv", sorted(os.listdir(d))))
        verify("all types", path, SAMPLE_KEYS, ABSENT_KEYS)
        # A second session that writes again, then a third that reads.
        db = connect(path)
        both(db, "INSERT INTO {t} VALUES(?, ?)", (23, "x" * (2 * MB)))
        both(db, "UPDATE {t} SET value = ? WHERE key = ?", (b"y" * MB, 15))
        db.close()
        verify("all types, second session", path, SAMPLE_KEYS + [23], ABSENT_KEYS[:-1])


def many_key(i):
    return i if i % 2 == 0 else "key%07d" % i


def many_value(i):
    r = i % 5
    if r == 0:
        return i * 3
    if r == 1:
        return "v%d" % i * (i % 13)
    if r == 2:
        return float(i) / 7
    if r == 3:
        return b"\x00" * (i % 40)
    return None


def test_many_keys():
    n = 50000
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        db = setup(path)
        for start in range(0, n, 10000):  # five commits of 10000 keys
            db.execute("BEGIN")
            both_many(db, "INSERT INTO {t} VALUES(?, ?)",
                      ((many_key(i), many_value(i)) for i in range(start, start + 10000)))
            db.execute("COMMIT")
        db.close()
        rnd = harness.rng(7)
        sample = [many_key(i) for i in rnd.sample(range(n), 500)] + [many_key(0), many_key(n - 1)]
        absent = [n, n + 1, "key%07d" % (n + 1), str(2), -1]
        verify("50k keys", path, sample, absent)
        db = connect(path)
        # Every key through the index: the join looks each ref key up in kv.
        check_equal("50k keys: every key found by lookup", db.execute(
            "SELECT count(*) FROM ref JOIN kv ON kv.key = ref.key WHERE kv.value IS ref.value"
        ).fetchone()[0], n)
        # Delete 20000, update 10000 (some to 10 kB values), change 5000 keys.
        db.execute("BEGIN")
        both(db, "DELETE FROM {t} WHERE key IN (SELECT key FROM ref WHERE typeof(key) = 'integer' "
                 "AND key % 5 = 0)")
        db.execute("COMMIT")
        db.execute("BEGIN")
        both_many(db, "UPDATE {t} SET value = ? WHERE key = ?",
                  (("u" * (10000 if i % 1000 == 1 else i % 50), many_key(i))
                   for i in range(1, n, 5)))
        both_many(db, "UPDATE {t} SET key = ? WHERE key = ?",
                  (("moved%d" % i, many_key(i)) for i in range(3, n, 10)))
        db.execute("COMMIT")
        db.close()
        gone = [many_key(i) for i in range(0, 2000, 10)] + [many_key(i) for i in range(3, 2000, 10)]
        moved = ["moved%d" % i for i in range(3, 2000, 10)]
        verify("50k keys after deletes, updates and key changes", path,
               sample + moved + [many_key(i) for i in range(1, 2000, 5)], absent + gone)
        db = connect(path)
        check_equal("50k keys after changes: every key found by lookup", db.execute(
            "SELECT count(*) FROM ref JOIN kv ON kv.key = ref.key WHERE kv.value IS ref.value"
        ).fetchone()[0], db.execute("SELECT count(*) FROM ref").fetchone()[0])
        db.close()


def test_updates_deletes_key_changes():
    """Several sessions, each changing rows and closing; every reopen shows the latest state."""
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        db = setup(path)
        db.execute("BEGIN")
        both_many(db, "INSERT INTO {t} VALUES(?, ?)", ((i, "v%d" % i) for i in range(300)))
        db.execute("COMMIT")
        db.close()
        rnd = harness.rng(11)
        for session in range(5):
            db = connect(path)
            db.execute("PRAGMA synchronous=OFF")
            keys = [r[0] for r in db.execute("SELECT key FROM ref").fetchall()]
            for k in rnd.sample(keys, 12):
                both(db, "UPDATE {t} SET value = ? WHERE key = ?",
                     (rnd.choice([None, 1, 2.5, "s%d" % session, b"b" * session]), k))
            for k in rnd.sample(keys, 6):
                both(db, "DELETE FROM {t} WHERE key = ?", (k,))
            keys = [r[0] for r in db.execute("SELECT key FROM ref").fetchall()]
            for k in rnd.sample(keys, 6):
                both(db, "UPDATE {t} SET key = ? WHERE key = ?", ("s%d-%r" % (session, k), k))
            db.execute("BEGIN")
            both(db, "INSERT OR REPLACE INTO {t} VALUES(?, ?)", (keys[0], "replaced%d" % session))
            both(db, "INSERT OR IGNORE INTO {t} VALUES(?, ?)", (keys[1], "ignored"))
            both(db, "INSERT INTO {t} VALUES(?, ?)", (1000 + session, session))
            both(db, "UPDATE {t} SET value = value || '!' WHERE typeof(value) = 'text' "
                     "AND length(value) < 3")
            db.execute("COMMIT")
            # Delete then reinsert the same key within one transaction.
            db.execute("BEGIN")
            both(db, "DELETE FROM {t} WHERE key = ?", (keys[2],))
            both(db, "INSERT INTO {t} VALUES(?, ?)", (keys[2], "reborn%d" % session))
            db.execute("COMMIT")
            all_keys = [r[0] for r in db.execute("SELECT key FROM ref").fetchall()]
            db.close()
            verify("session %d" % session, path, rnd.sample(all_keys, 30),
                   [-1, "nope", 999], new_process=(session % 2 == 1))


def test_rollbacks():
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        db = setup(path)
        both_many(db, "INSERT INTO {t} VALUES(?, ?)", ((i, "v%d" % i) for i in range(100)))
        db.execute("BEGIN")
        db.executemany("INSERT INTO kv VALUES(?, ?)", ((i, "rolled back") for i in range(100, 200)))
        db.execute("UPDATE kv SET value = 'rolled back' WHERE key < 50")
        db.execute("DELETE FROM kv WHERE key >= 50 AND key < 80")
        db.execute("UPDATE kv SET key = key + 1000 WHERE key >= 80 AND key < 100")
        db.execute("INSERT INTO kv VALUES('big', ?)", (b"r" * MB,))
        db.execute("ROLLBACK")
        check_rows("rollback: before close", table_rows(db, "kv"), table_rows(db, "ref"))
        # A committed transaction after the rolled-back one: only it persists.
        db.execute("BEGIN")
        both(db, "INSERT INTO {t} VALUES(?, ?)", (500, "after rollback"))
        db.execute("COMMIT")
        # A rolled-back transaction as the last thing before close.
        db.execute("BEGIN")
        db.execute("INSERT INTO kv VALUES(600, 'last, rolled back')")
        db.execute("DELETE FROM kv WHERE key = 1")
        db.execute("ROLLBACK")
        db.close()
        verify("rollback", path, [0, 1, 49, 50, 79, 80, 99, 500],
               [100, 150, 199, 1080, 1099, "big", 600])
        # A big rolled-back transaction (the log grew past the committed tail) then reopen.
        db = connect(path)
        db.execute("BEGIN")
        db.executemany("INSERT INTO kv VALUES(?, ?)", ((i, "x" * 100) for i in range(10000, 30000)))
        db.execute("ROLLBACK")
        db.close()
        verify("big rollback", path, [0, 500], [10000, 20000, 29999])
        db = connect(path)
        both(db, "INSERT INTO {t} VALUES(?, ?)", (10000, "committed after big rollback"))
        db.close()
        verify("commit after big rollback", path, [0, 500, 10000], [10001, 29999])


def test_savepoints():
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        db = setup(path)
        both_many(db, "INSERT INTO {t} VALUES(?, ?)", ((i, i) for i in range(20)))
        db.execute("BEGIN")
        both(db, "INSERT INTO {t} VALUES(100, 'kept')")
        db.execute("SAVEPOINT a")
        both(db, "INSERT INTO {t} VALUES(101, 'undone')")
        both(db, "DELETE FROM {t} WHERE key = 0")
        both(db, "UPDATE {t} SET value = 'undone' WHERE key = 1")
        db.execute("ROLLBACK TO a")
        both(db, "INSERT INTO {t} VALUES(102, 'kept after rollback to')")
        db.execute("SAVEPOINT b")
        both(db, "DELETE FROM {t} WHERE key = 2")
        both(db, "UPDATE {t} SET key = 200 WHERE key = 3")
        db.execute("SAVEPOINT c")
        both(db, "UPDATE {t} SET value = 'released' WHERE key = 4")
        db.execute("RELEASE c")
        db.execute("SAVEPOINT d")
        both(db, "INSERT INTO {t} VALUES(103, 'undone')")
        db.execute("ROLLBACK TO d")
        db.execute("RELEASE d")
        db.execute("RELEASE b")
        db.execute("COMMIT")
        # Savepoint as the outermost transaction.
        db.execute("SAVEPOINT outer_sp")
        both(db, "INSERT INTO {t} VALUES(104, 'released outer')")
        db.execute("RELEASE outer_sp")
        db.execute("SAVEPOINT outer_sp")
        db.execute("INSERT INTO kv VALUES(105, 'rolled back outer')")
        db.execute("ROLLBACK TO outer_sp")
        db.execute("RELEASE outer_sp")
        # Rows reflected in ref for the rolled-back kv-only statements: none.
        check_rows("savepoints: before close", table_rows(db, "kv"), table_rows(db, "ref"))
        db.close()
        verify("savepoints", path, [0, 1, 4, 100, 102, 104, 200], [101, 2, 3, 103, 105])


def test_failed_statements():
    """A statement that fails half-way is undone, and the undo persists."""
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        db = setup(path)
        both_many(db, "INSERT INTO {t} VALUES(?, ?)", ((i, i) for i in range(10)))
        db.execute("BEGIN")
        for t in ("kv", "ref"):
            try:
                db.execute("INSERT INTO %s VALUES(50, 'a'), (51, 'b'), (5, 'dup'), (52, 'c')" % t)
            except harness.sqlite3.IntegrityError:
                pass
        both(db, "INSERT INTO {t} VALUES(60, 'after failure')")
        db.execute("COMMIT")
        for t in ("kv", "ref"):  # autocommit statement failing half-way
            try:
                db.execute("UPDATE %s SET key = key + 1 WHERE key < 9" % t)
            except harness.sqlite3.IntegrityError:
                pass
        db.close()
        verify("failed statements", path, [5, 60, 0, 8], [50, 51, 52])


def test_closed_mid_transaction():
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        db = setup(path)
        both_many(db, "INSERT INTO {t} VALUES(?, ?)", ((i, i) for i in range(50)))
        db.execute("BEGIN")
        db.executemany("INSERT INTO kv VALUES(?, ?)", ((i, "uncommitted") for i in range(50, 90)))
        db.execute("DELETE FROM kv WHERE key < 10")
        db.execute("UPDATE kv SET value = 'uncommitted' WHERE key >= 10")
        db.close()  # never committed: rolled back
        verify("closed mid-transaction", path, [0, 9, 10, 49], [50, 89])
        # Again, with a savepoint open.
        db = connect(path)
        db.execute("BEGIN")
        both(db, "INSERT INTO {t} VALUES(90, 'x')")
        db.execute("COMMIT")
        db.execute("SAVEPOINT s")
        db.execute("INSERT INTO kv VALUES(91, 'uncommitted')")
        db.close()
        verify("closed inside a savepoint", path, [90, 0], [91])
        # A process that exits (no close, no rollback) in the middle of a transaction, and one that
        # exits through Python's normal shutdown with a transaction open.
        for how in ("os._exit(0)", "sys.exit(0)"):
            code = r'''
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.enable_load_extension(True)
db.load_extension(os.environ["MMKV_EXTENSION"])
db.execute("BEGIN")
db.executemany("INSERT INTO kv VALUES(?, ?)", ((i, "child") for i in range(1000, 1500)))
db.execute("DELETE FROM kv WHERE key < 20")
print("written", flush=True)
''' + how + "\n"
            p = subprocess.run([PYTHON, "-c", code, path], env=CHILD_ENV, capture_output=True,
                               text=True, timeout=60)
            check("child exiting mid-transaction via %s ran" % how,
                  p.returncode == 0 and "written" in p.stdout, p.stderr[-1000:])
            verify("child exited mid-transaction via %s" % how, path, [0, 19, 90],
                   [1000, 1499, 91])
        db = connect(path)
        both(db, "INSERT INTO {t} VALUES(1000, 'after the children')")
        db.close()
        verify("write after children exited mid-transaction", path, [0, 1000], [1001])


def test_index_deleted():
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        index = path + "-kv.mmkv-index"
        db = setup(path)
        db.execute("BEGIN")
        both_many(db, "INSERT INTO {t} VALUES(?, ?)", ((many_key(i), many_value(i))
                                                      for i in range(5000)))
        db.execute("COMMIT")
        both(db, "DELETE FROM {t} WHERE key IN (SELECT key FROM ref LIMIT 100)")
        both(db, "UPDATE {t} SET value = 'updated' WHERE key IN (SELECT key FROM ref LIMIT 100)")
        db.close()
        check("index file exists beside the data file", os.path.exists(index),
              "expected %s, found %s" % (index, sorted(os.listdir(os.path.dirname(index)))))
        keys = [many_key(i) for i in range(0, 5000, 37)]
        for round_ in range(3):
            if os.path.exists(index):
                os.remove(index)
            verify("index deleted (round %d)" % round_, path, keys, [5000, "key5000001"],
                   new_process=(round_ != 1))
            db = connect(path)
            both(db, "INSERT INTO {t} VALUES(?, ?)", (10000 + round_, "after rebuild"))
            both(db, "DELETE FROM {t} WHERE key = ?", (keys[round_],))
            db.close()
            verify("write after index rebuild (round %d)" % round_, path,
                   keys + [10000 + round_], [], new_process=False)
        # Deleted while another connection of this process has the table open.
        keeper = connect(path)
        keeper.execute("SELECT count(*) FROM kv").fetchone()
        db = connect(path)
        both(db, "INSERT INTO {t} VALUES('held', 1)")
        db.close()
        keeper.close()
        os.remove(index)
        verify("index deleted after a shared session", path, keys + ["held"], [])


def test_sync_modes():
    for mode in ("full", "normal", "off", "NORMAL"):
        with TempDir() as d:
            path = os.path.join(d, "app.db")
            db = setup(path, "sync=%s" % mode)
            both_many(db, "INSERT INTO {t} VALUES(?, ?)", ((i, "v%d" % i) for i in range(40)))
            db.execute("BEGIN")
            both_many(db, "INSERT INTO {t} VALUES(?, ?)", ((i, "v%d" % i) for i in range(40, 200)))
            db.execute("COMMIT")
            db.execute("BEGIN")
            both_many(db, "INSERT INTO {t} VALUES(?, ?)", ((i, b"b" * i) for i in range(200, 400)))
            both(db, "DELETE FROM {t} WHERE key < 50")
            db.execute("COMMIT")
            both(db, "INSERT INTO {t} VALUES('big', ?)", ("z" * MB,))
            both(db, "UPDATE {t} SET key = 'renamed' WHERE key = 60")
            db.close()
            verify("sync=%s" % mode, path, [0, 49, 50, 199, 200, 399, "big", "renamed"], [60, 400])
            db = connect(path)
            both(db, "UPDATE {t} SET value = 'second session' WHERE key = 100")
            db.close()
            verify("sync=%s, second session" % mode, path, [100, "big"], [60], new_process=False)


# A child that commits batches forever (until killed), printing "committed N" after each COMMIT
# returns. With "park" it stops after batch `last`: begins batch last+1, writes it, prints
# "writing", and sleeps inside the open transaction.
CHILD_COMMITTER = r'''
import os, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.enable_load_extension(True)
db.load_extension(os.environ["MMKV_EXTENSION"])
n, mode, last = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
while True:
    db.execute("BEGIN")
    db.executemany("INSERT INTO kv VALUES(?, ?)", ((n * 100 + i, n) for i in range(20)))
    db.execute("INSERT OR REPLACE INTO kv VALUES('last', ?)", (n,))
    if n > 1:
        db.execute("UPDATE kv SET value = ? WHERE key = ?", (-n, (n - 1) * 100))
    if mode == "park" and n == last + 1:
        print("writing %d" % n, flush=True)
        time.sleep(60)
        sys.exit(3)
    db.execute("COMMIT")
    print("committed %d" % n, flush=True)
    n += 1
'''

BATCH = 20


def expected_state(m):
    """The rows after batches 1..m."""
    rows = {}
    for n in range(1, m + 1):
        for i in range(BATCH):
            rows[n * 100 + i] = n
        rows["last"] = n
        if n > 1:
            rows[(n - 1) * 100] = -n
    return rows


def read_lines_until(proc, pred, timeout):
    """Reads proc's stdout lines until pred(line) holds; returns the lines read (None on timeout)."""
    import select
    lines, buf, deadline = [], b"", time.time() + timeout
    fd = proc.stdout.fileno()
    while time.time() < deadline:
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
        if not r:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            lines.append(line.decode())
            if pred(lines[-1]):
                proc.leftover = buf  # the start of the next line, if any
                return lines
    return None


def check_kill_state(name, path, acked, allow_next):
    """After a kill: the table holds batches 1..m, each whole, m = acked (or acked + 1 when the
    kill may have come between COMMIT and the print)."""
    db = connect(path)
    try:
        got = {}
        for k, v in db.execute("SELECT key, value FROM kv"):
            got[k] = v
    except harness.sqlite3.Error as e:
        db.close()
        check(name + ": reopened after SIGKILL", False, "error: %s" % e)
        return acked
    m = got.get("last", 0)
    ok_ms = (acked, acked + 1) if allow_next else (acked,)
    if m not in ok_ms:
        check(name + ": last committed batch", False,
              "table holds batch %r, %d were acknowledged" % (m, acked))
    else:
        check(name + ": every acknowledged commit there, nothing uncommitted",
              got == expected_state(m),
              "rows differ from batches 1..%d: %d rows, expected %d; e.g. %s" % (
                  m, len(got), len(expected_state(m)),
                  sorted(set(map(repr, got.items())) ^ set(map(repr, expected_state(m).items())))[:4]))
    # Point lookups agree too.
    bad = [k for k in (m * 100, m * 100 + BATCH - 1, (m + 1) * 100, 100)
           if db.execute("SELECT value FROM kv WHERE key = ?", (k,)).fetchall()
           != ([(expected_state(m)[k],)] if k in expected_state(m) else [])]
    check(name + ": point lookups after SIGKILL", not bad, "wrong for keys %s" % bad)
    db.close()
    return m


def test_sigkill():
    for mode in ("full", "normal"):
        with TempDir() as d:
            path = os.path.join(d, "app.db")
            db = connect(path)
            db.execute("CREATE VIRTUAL TABLE kv USING mmkv(sync=%s)" % mode)
            db.close()
            m = 0
            rnd = harness.rng(mode)
            for round_ in range(4):
                park = round_ == 3
                proc = subprocess.Popen(
                    [PYTHON, "-c", CHILD_COMMITTER, path, str(m + 1),
                     "park" if park else "loop", str(m + 10)],
                    env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                try:
                    target = m + 10 if not park else None
                    lines = read_lines_until(
                        proc, (lambda l: l.startswith("writing")) if park else
                        (lambda l, t=target: l == "committed %d" % t), 30)
                    if lines is None:
                        proc.kill()
                        _, err = proc.communicate(timeout=10)
                        check("sync=%s round %d: child committed" % (mode, round_), False,
                              "no progress; stderr: %s" % err.decode()[-2000:])
                        return
                    if not park:
                        time.sleep(rnd.random() * 0.01)
                    proc.send_signal(signal.SIGKILL)
                    rest, _ = proc.communicate(timeout=10)
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                lines += (proc.leftover + rest).decode().splitlines()
                acked = max([int(l.split()[1]) for l in lines if l.startswith("committed")] or [m])
                name = "sync=%s SIGKILL %s" % (mode, "inside an open transaction" if park
                                               else "while committing (round %d)" % round_)
                m = check_kill_state(name, path, acked, allow_next=not park)
                if park:
                    check_equal(name + ": the open transaction's batch is absent", m, acked)
            # Recovery: the table stays writable and the next session sees the write.
            db = connect(path)
            db.execute("INSERT INTO kv VALUES('after', 1)")
            db.close()
            res, problem = child_query(path, [("SELECT count(*) FROM kv", ()),
                                              ("SELECT value FROM kv WHERE key = 'after'", ())])
            check_equal("sync=%s: write after the kills, new process" % mode,
                        res and [r.get("rows") for r in res],
                        [[[enc(len(expected_state(m)) + 1)]], [[enc(1)]]])


if __name__ == "__main__":
    harness.main([
        test_all_types,
        test_many_keys,
        test_updates_deletes_key_changes,
        test_rollbacks,
        test_savepoints,
        test_failed_statements,
        test_closed_mid_transaction,
        test_index_deleted,
        test_sync_modes,
        test_sigkill,
    ])
