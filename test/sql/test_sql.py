"""SQL-level behaviour of mmkv in one process, always compared with a native table.

The reference is `CREATE TABLE kv(key PRIMARY KEY NOT NULL, value) WITHOUT ROWID`: most checks
run the same statements against that native table (in its own connection, under the same name,
so error messages are comparable) and against `CREATE VIRTUAL TABLE kv USING mmkv`, and compare
every outcome: rows (type for type, via repr), error class and message, changes() and whether a
transaction is open. Run with Debian's python3: /usr/bin/python3 test/sql/test_sql.py
"""
import os
import signal
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import TempDir, check, check_equal, check_error, connect  # noqa: E402

NATIVE = "CREATE TABLE kv(key PRIMARY KEY NOT NULL, value) WITHOUT ROWID"
VTAB = "CREATE VIRTUAL TABLE kv USING mmkv"
CASE_TIMEOUT = 30  # seconds per case; a hang (e.g. a lock that never returns) fails that case

# ---------------------------------------------------------------------------------------------
# helpers


def short(x, limit=400):
    s = repr(x)
    return s if len(s) <= limit else s[:limit] + "...(%d chars)" % len(s)


def sig(v):
    """A type-exact, byte-exact signature of one SQL value as Python sees it."""
    return (type(v).__name__, repr(v))


def sigrows(rows):
    return [tuple(sig(v) for v in r) for r in rows]


def outcome(db, sql, params=()):
    """Everything observable about one statement; unordered results are sorted."""
    try:
        rows = db.execute(sql, params).fetchall()
        rows = sigrows(rows)
        if "ORDER BY" not in sql.upper():
            rows.sort()
        return ("ok", rows, db.execute("SELECT changes()").fetchone()[0], db.in_transaction)
    except sqlite3.Error as e:
        return ("error", type(e).__name__, str(e),
                db.execute("SELECT changes()").fetchone()[0], db.in_transaction)


def same_outcome(native, mine):
    """Equal, except that mmkv's error message need only contain the native one."""
    if native[0] != mine[0]:
        return False
    if native[0] == "ok":
        return native == mine
    return native[1] == mine[1] and native[2] in mine[2] and native[3:] == mine[3:]


def content(db, table="kv"):
    return sigrows(db.execute("SELECT key, value FROM %s ORDER BY key" % table).fetchall())


def normalize_steps(steps):
    out = []
    for s in steps:
        out.append((s, ()) if isinstance(s, str) else s)
    return out


def compare_steps(name, dn, dv, steps):
    """Runs steps on the native (dn) and mmkv (dv) connections; one check for all of them."""
    for i, (sql, params) in enumerate(normalize_steps(steps)):
        a = outcome(dn, sql, params)
        b = outcome(dv, sql, params)
        if not same_outcome(a, b):
            return check(name, False, "step %d: %s %s\n    native: %s\n    mmkv:   %s"
                         % (i, sql, short(params, 120), short(a), short(b)))
    a, b = content(dn), content(dv)
    return check(name, a == b, "final contents differ:\n    native: %s\n    mmkv:   %s"
                 % (short(a), short(b)))


def scenario(name, steps, setup=()):
    """compare_steps on two fresh :memory: databases holding the native and the mmkv kv."""
    dn, dv = connect(), connect()
    try:
        dn.execute(NATIVE)
        dv.execute(VTAB)
        for s, p in normalize_steps(setup):
            dn.execute(s, p)
            dv.execute(s, p)
        return compare_steps(name, dn, dv, steps)
    finally:
        dn.close()
        dv.close()


def same_query(name, db, sql, params=()):
    """One connection holding kv (mmkv) and nkv (native, same rows): {t} is the table."""
    a = outcome(db, sql.replace("{t}", "nkv"), params)
    b = outcome(db, sql.replace("{t}", "kv"), params)
    if a[0] == "error" and b[0] == "error":
        a = a[:2] + (a[2].replace("nkv", "kv"),) + a[3:]
    return check(name, same_outcome(a, b), "%s %s\n    native: %s\n    mmkv:   %s"
                 % (sql, short(params, 120), short(a), short(b)))


def files(d):
    return sorted(os.listdir(d))


def mmkv_files(d):
    return sorted(f for f in os.listdir(d) if "mmkv" in f)


def process_resources(exclude):
    """Open file descriptors' targets and mapped files of this process."""
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.add(os.readlink("/proc/self/fd/" + fd))
        except OSError:
            pass
    maps = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].strip():
                maps.add(parts[5].strip())
    both = {x for x in fds | maps if exclude not in x and "/proc/" not in x}
    return both


# Keys of every kind, including several that are equal to an earlier one under SQLite's rules.
KEYS = [
    0, 1, -1, 2, 5, 42, 2**31 - 1, 2**31, 2**32, 2**53, 2**53 + 1, 2**62, 2**63 - 1, -2**63,
    -2**63 + 1,
    1.0, -0.0, 0.0, 0.5, -1.5, 2.5, 5.0000001, 9007199254740992.0, 9007199254740994.0,
    9.223372036854775807e18, -9.223372036854775808e18, 1.8446744073709552e19, 1e308, -1e308,
    float("inf"), float("-inf"), 5e-324, 1e-300, 0.1, 0.30000000000000004, 0.3,
    "1", "1.0", "0", "", "a", "A", "b", "B", "abc", "ABC", "a\x00b", "a\x00c", "\x00", "h\u00e9llo",
    "H\u00c9LLO", "\u65e5\u672c\u8a9e", "\U0001F600", " 1", "-0", "5", "6",
    b"", b"a", b"1", b"\x00", b"\x00\x00", b"a\x00b", bytes(range(256)), b"\xff", b"A",
    1, 1.0, "a", b"a", 0, 9007199254740992,
]
PROBES = KEYS + [3, 1.0000000000000002, "2", b"2", 2**53 + 2, 9007199254740993.0, 4.999,
                 "\u00e9", "aa", b"aa", -2**63 + 2, float("nan"), None]


def isolated(fn):
    """Runs one case in a forked child: a crash or a hang fails that case, not the whole file."""
    def run():
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            harness.failed = 0
            harness.run_case(fn)
            sys.stdout.flush()
            os._exit(1 if harness.failed else 0)
        deadline = time.monotonic() + CASE_TIMEOUT
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                check(fn.__name__, False, "no answer after %d s (hang?); killed" % CASE_TIMEOUT)
                return
            time.sleep(0.01)
        if os.WIFSIGNALED(status):
            check(fn.__name__, False, "crashed with signal %d (after the last line above)"
                  % os.WTERMSIG(status))
        elif os.WEXITSTATUS(status) != 0:
            harness.failed += 1  # the child printed its FAIL lines already
    run.__name__ = fn.__name__
    return run


# ---------------------------------------------------------------------------------------------
# schema and files


def test_schema():
    db = connect()
    db.execute(VTAB)
    x = db.execute("PRAGMA table_xinfo(kv)").fetchall()
    check_equal("schema: table_xinfo column names", [r[1] for r in x], ["key", "value", "kv"])
    check_equal("schema: table_xinfo hidden flags", [r[6] for r in x], [0, 0, 1])
    key = [r for r in x if r[1] == "key"]
    check("schema: key is PRIMARY KEY NOT NULL", key and key[0][5] == 1 and key[0][3] == 1,
          "table_xinfo row for key: %r" % key)
    info = db.execute("PRAGMA table_info(kv)").fetchall()
    check_equal("schema: table_info shows key and value only", [r[1] for r in info],
                ["key", "value"])
    db.execute("INSERT INTO kv VALUES(1, 2)")
    cur = db.execute("SELECT * FROM kv")
    check_equal("schema: SELECT * has two columns", [d[0] for d in cur.description],
                ["key", "value"])
    check_equal("schema: SELECT * rows", cur.fetchall(), [(1, 2)])
    db.close()


def test_files_default_names():
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        db = connect(p)
        db.execute(VTAB)
        db.execute("INSERT INTO kv VALUES('k', 'v')")
        db.execute("SELECT value FROM kv WHERE key = 'k'").fetchall()
        check_equal("files: no-argument create makes <db>-kv.mmkv and <db>-kv.mmkv-index",
                    mmkv_files(d), ["app.db-kv.mmkv", "app.db-kv.mmkv-index"])
        db.close()
        db = connect(p)
        check_equal("files: data persists across reopen",
                    db.execute("SELECT key, value FROM kv").fetchall(), [("k", "v")])
        db.close()


def test_files_attached():
    with TempDir() as d:
        db = connect(os.path.join(d, "main.db"))
        db.execute("ATTACH ? AS aux", (os.path.join(d, "aux.db"),))
        db.execute("CREATE VIRTUAL TABLE aux.t USING mmkv")
        db.execute("INSERT INTO aux.t VALUES(1, 1)")
        check_equal("files: table in an attached database lives beside that file",
                    mmkv_files(d), ["aux.db-t.mmkv", "aux.db-t.mmkv-index"])
        db.close()


def test_files_memory_are_temporary():
    with TempDir() as d:
        cwd = os.getcwd()
        tmp = os.path.join(d, "tmp")
        work = os.path.join(d, "work")
        os.mkdir(tmp)
        os.mkdir(work)
        saved = {k: os.environ.get(k) for k in ("TMPDIR", "SQLITE_TMPDIR")}
        os.environ["TMPDIR"] = tmp
        os.environ["SQLITE_TMPDIR"] = tmp
        os.chdir(work)
        try:
            db = connect()
            before = process_resources(exclude=os.path.basename(harness.EXTENSION) + ".so")
            db.execute(VTAB)
            db.execute("CREATE VIRTUAL TABLE kv2 USING mmkv")
            db.execute("BEGIN")  # one commit: tables in :memory: still sync per commit
            db.executemany("INSERT INTO kv VALUES(?, ?)", [(i, "x" * 100) for i in range(2000)])
            db.execute("COMMIT")
            db.execute("INSERT INTO kv2 VALUES(1, 1)")
            check_equal(":memory: table works", db.execute("SELECT count(*) FROM kv").fetchone(),
                        (2000,))
            check_equal(":memory: no files appear in the cwd", files(work), [])
            other = connect()
            other.execute(VTAB)
            other.execute("INSERT INTO kv VALUES(1, 'other')")
            check_equal(":memory: two :memory: databases have separate tables",
                        db.execute("SELECT value FROM kv WHERE key = 1").fetchall(),
                        [("x" * 100,)])
            other.close()
            db.close()
            after = process_resources(exclude=os.path.basename(harness.EXTENSION) + ".so")
            check_equal(":memory: temp files vanish on close (no file left in $TMPDIR)",
                        files(tmp), [])
            check(":memory: no descriptor or mapping of a temp file survives close",
                  not (after - before), "still open or mapped: %r" % sorted(after - before))
            check_equal(":memory: still no files in the cwd after close", files(work), [])
        finally:
            os.chdir(cwd)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def test_files_temp_schema():
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        db.execute("CREATE VIRTUAL TABLE temp.tkv USING mmkv")
        db.execute("INSERT INTO tkv VALUES(1, 'one')")
        check_equal("temp schema: table works",
                    db.execute("SELECT value FROM tkv WHERE key = 1").fetchall(), [("one",)])
        check_equal("temp schema: no mmkv file beside the database", mmkv_files(d), [])
        db.close()
        check_equal("temp schema: nothing left after close", mmkv_files(d), [])


def test_drop_and_rename():
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        db = connect(p)
        db.execute(VTAB)
        db.execute("INSERT INTO kv VALUES(1, 'one')")
        db.execute("DROP TABLE kv")
        check_equal("DROP TABLE removes both files", mmkv_files(d), [])
        check_equal("DROP TABLE removes the table",
                    db.execute("SELECT name FROM sqlite_schema WHERE name = 'kv'").fetchall(), [])
        db.execute(VTAB)
        check_equal("create again after DROP starts empty",
                    db.execute("SELECT count(*) FROM kv").fetchone(), (0,))

        db.execute("BEGIN")
        db.executemany("INSERT INTO kv VALUES(?, ?)", [(i, str(i)) for i in range(100)])
        db.execute("COMMIT")
        db.execute("ALTER TABLE kv RENAME TO kv2")
        check_equal("RENAME: data kept",
                    db.execute("SELECT count(*), sum(key) FROM kv2").fetchone(), (100, 4950))
        check_equal("RENAME: lookup by key after rename",
                    db.execute("SELECT value FROM kv2 WHERE key = 42").fetchall(), [("42",)])
        check_equal("RENAME: default-named files move to the new name", mmkv_files(d),
                    ["app.db-kv2.mmkv", "app.db-kv2.mmkv-index"])
        x = db.execute("PRAGMA table_xinfo(kv2)").fetchall()
        check_equal("RENAME: hidden column follows the new table name", [r[1] for r in x],
                    ["key", "value", "kv2"])
        db.execute("INSERT INTO kv2 VALUES(100, '100')")
        db.close()
        db = connect(p)
        check_equal("RENAME: data under the new name after reopen",
                    db.execute("SELECT count(*), sum(key) FROM kv2").fetchone(), (101, 5050))
        db.execute("DROP TABLE kv2")
        check_equal("DROP TABLE after RENAME removes both files", mmkv_files(d), [])

        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='data.mmkv')")
        db.execute("INSERT INTO kv VALUES(1, 'one')")
        check_equal("file=: data and index file", mmkv_files(d),
                    ["data.mmkv", "data.mmkv-index"])
        db.execute("ALTER TABLE kv RENAME TO kv3")
        check_equal("RENAME: a file= table keeps its file name", mmkv_files(d),
                    ["data.mmkv", "data.mmkv-index"])
        db.close()
        db = connect(p)
        check_equal("RENAME: a file= table keeps its data after reopen",
                    db.execute("SELECT key, value FROM kv3").fetchall(), [(1, "one")])
        db.execute("DROP TABLE kv3")
        check_equal("DROP TABLE of a file= table removes both files", mmkv_files(d), [])
        db.close()


# ---------------------------------------------------------------------------------------------
# types and key semantics


def test_drop_and_rename_in_transactions():
    for where in ("file", "memory"):
        with TempDir() as d:
            db = connect(os.path.join(d, "app.db") if where == "file" else ":memory:")
            db.execute(VTAB)
            db.execute("INSERT INTO kv VALUES(1, 'one')")
            db.execute("BEGIN")
            db.execute("DROP TABLE kv")
            db.execute("ROLLBACK")
            check_equal("%s: DROP TABLE rolled back keeps the rows" % where,
                        db.execute("SELECT key, value FROM kv").fetchall(), [(1, "one")])
            db.execute("BEGIN")
            db.execute("DROP TABLE kv")
            db.execute("COMMIT")
            db.execute(VTAB)
            check_equal("%s: a table made after a committed DROP starts empty" % where,
                        db.execute("SELECT count(*) FROM kv").fetchone(), (0,))
            db.execute("INSERT INTO kv VALUES(2, 'two')")
            db.execute("BEGIN")
            db.execute("ALTER TABLE kv RENAME TO kv2")
            check_equal("%s: RENAME inside a transaction: the table reads under its new name" % where,
                        db.execute("SELECT key, value FROM kv2").fetchall(), [(2, "two")])
            db.execute("ROLLBACK")
            check_equal("%s: a rolled-back RENAME leaves the table as it was" % where,
                        db.execute("SELECT key, value FROM kv").fetchall(), [(2, "two")])
            if where == "file":
                check_equal("file: a rolled-back RENAME leaves the files under the old name",
                            mmkv_files(d), ["app.db-kv.mmkv", "app.db-kv.mmkv-index"])
            db.close()


def test_create_in_transactions():
    """A table created inside a transaction takes writes at once (SQLite calls no xBegin for it),
    and a rolled-back CREATE leaves no file that a later CREATE would refuse."""
    for where in ("file", "memory"):
        with TempDir() as d:
            db = connect(os.path.join(d, "app.db") if where == "file" else ":memory:")
            shared = "file='%s'" % os.path.join(d, "shared.mmkv")
            db.execute("BEGIN")
            db.execute("CREATE VIRTUAL TABLE kv USING mmkv(%s)" % shared)
            db.execute("INSERT INTO kv VALUES(1, 'one'), (2, 'two')")
            db.execute("UPDATE kv SET value = 'uno' WHERE key = 1")
            db.execute("DELETE FROM kv WHERE key = 2")
            check_equal("%s: a table created in a transaction takes writes in it" % where,
                        db.execute("SELECT key, value FROM kv").fetchall(), [(1, "uno")])
            db.execute("ROLLBACK")
            db.execute("CREATE VIRTUAL TABLE kv USING mmkv(%s)" % shared)
            check_equal("%s: CREATE again after a rolled-back CREATE starts empty" % where,
                        db.execute("SELECT count(*) FROM kv").fetchone(), (0,))
            db.execute("BEGIN")
            db.execute("CREATE VIRTUAL TABLE kv2 USING mmkv")
            db.execute("INSERT INTO kv2 VALUES('a', 1)")
            db.execute("INSERT INTO kv2(kv2) VALUES('rebuild-index')")
            db.execute("COMMIT")
            db.execute("INSERT INTO kv2(kv2) VALUES('integrity-check')")
            check_equal("%s: a table created and written in one transaction commits" % where,
                        db.execute("SELECT key, value FROM kv2").fetchall(), [("a", 1)])
            db.close()
            if where == "file":
                db = connect(os.path.join(d, "app.db"))
                check_equal("file: and survives a reopen",
                            db.execute("SELECT key, value FROM kv2").fetchall(), [("a", 1)])
                db.execute("INSERT INTO kv VALUES(3, 'three')")
                db.close()
                other = connect(os.path.join(d, "other.db"))
                check_error("file: another database still cannot take a committed table's file",
                            lambda: other.execute("CREATE VIRTUAL TABLE kv USING mmkv(%s)" % shared),
                            "belongs to table \"kv\" of the database '%s'" % os.path.join(d, "app.db"))
                other.close()


def test_keys_roundtrip_and_identity():
    steps = [("INSERT INTO kv VALUES(?, ?)", (k, i)) for i, k in enumerate(KEYS)]
    steps.append("SELECT key, typeof(key), hex(key), value FROM kv ORDER BY key")
    steps.append("SELECT count(*) FROM kv")
    scenario("keys: every type inserts, collides and round-trips as native", steps)


def test_key_lookups():
    setup = [("INSERT OR IGNORE INTO kv VALUES(?, ?)", (k, i)) for i, k in enumerate(KEYS)]
    steps = []
    for p in PROBES:
        steps.append(("SELECT key, typeof(key), value FROM kv WHERE key = ?", (p,)))
    scenario("keys: key = ? finds exactly what native finds, for every probe", steps, setup)
    literals = ["1", "1.0", "'1'", "x'31'", "x'61'", "'a'", "-0.0", "0", "0.0",
                "9007199254740992.0", "9007199254740993", "9007199254740992",
                "9223372036854775807", "-9223372036854775808", "9223372036854775807.0",
                "-9223372036854775808.0", "''", "x''", "'h\u00e9llo'", "2.5", "5", "'5'",
                "CAST('1' AS BLOB)", "NULL", "1e999", "-1e999", "CAST(5 AS TEXT)", "'5' || ''",
                "1 + 0", "abs(-1)"]
    steps = ["SELECT key, typeof(key), value FROM kv WHERE key = %s" % lit for lit in literals]
    steps += ["SELECT key, typeof(key), value FROM kv WHERE key IS %s" % lit for lit in literals]
    steps += ["SELECT key, typeof(key), value FROM kv WHERE %s = key" % lit for lit in literals]
    scenario("keys: key = <literal> (1.0 finds 1, '1' does not, ...) as native", steps, setup)
    # An expression with numeric affinity (CAST AS REAL/INTEGER, a typed column) makes SQLite
    # apply numeric affinity to the key column: text key '1' then equals 1.
    steps = ["SELECT key, typeof(key) FROM kv WHERE key = %s" % e for e in
             ("CAST(1 AS REAL)", "CAST(1 AS INTEGER)", "CAST('1' AS NUMERIC)", "CAST(5 AS REAL)")]
    scenario("keys: key = CAST(1 AS REAL) (numeric affinity: also matches text '1') as native",
             steps, setup)
    steps = [("DELETE FROM kv WHERE key = ?", (p,)) for p in PROBES[::-1]]
    scenario("keys: DELETE ... WHERE key = ? deletes as native", steps, setup)


def test_key_identity_named():
    # The individual rules, each on its own, so a failure says which rule broke.
    cases = [
        ("1 and 1.0 are the same key", [1, 1.0]),
        ("'1' and 1 are different keys", ["1", 1]),
        ("x'61' and 'a' are different keys", [b"a", "a"]),
        ("-0.0 and 0 are the same key", [-0.0, 0]),
        ("0 and -0.0 are the same key", [0, -0.0]),
        ("9007199254740993 and 9007199254740992.0 are different keys",
         [9007199254740993, 9007199254740992.0]),
        ("9007199254740992 and 9007199254740992.0 are the same key",
         [9007199254740992, 9007199254740992.0]),
        ("2**63-1 and 9.223372036854775807e18 are different keys",
         [2**63 - 1, 9.223372036854775807e18]),
        ("-2**63 and -9.223372036854775808e18 are the same key",
         [-2**63, -9.223372036854775808e18]),
        ("'' and x'' are different keys", ["", b""]),
        ("'a' and 'A' are different keys", ["a", "A"]),
        ("'a\\0b' and 'a\\0c' are different keys", ["a\x00b", "a\x00c"]),
        ("'a\\0b' and 'a' are different keys", ["a\x00b", "a"]),
    ]
    for name, keys in cases:
        steps = [("INSERT INTO kv VALUES(?, ?)", (k, i)) for i, k in enumerate(keys)]
        steps += [("SELECT key, typeof(key), value FROM kv WHERE key = ?", (k,)) for k in keys]
        steps.append("SELECT key, typeof(key), value FROM kv ORDER BY key")
        scenario("keys: " + name, steps)


def test_values_roundtrip():
    rng = harness.rng(7)
    big_text = "".join(rng.choices("abcxyz\u00e9\u65e5\U0001F600\x00 ", k=650000))
    big_text = big_text.encode("utf-8")[: 1 << 20].decode("utf-8", "ignore")
    big_blob = rng.randbytes(1 << 20)
    values = [None, float("nan")] + KEYS + [big_text, big_blob, "x" * (1 << 20)]
    steps = [("INSERT INTO kv VALUES(?, ?)", (i, v)) for i, v in enumerate(values)]
    steps.append("SELECT key, value, typeof(value), length(value) FROM kv ORDER BY key")
    steps.append("SELECT key, hex(value) FROM kv WHERE typeof(value) IN ('text', 'blob') "
                 "ORDER BY key")
    for i, v in enumerate(values):
        steps.append(("SELECT value, typeof(value) FROM kv WHERE key = ?", (i,)))
    # overwrite big with small and small with big, then back
    steps += [
        ("UPDATE kv SET value = ? WHERE key = ?", (big_blob, 0)),
        ("UPDATE kv SET value = ? WHERE key = ?", ("small", len(values) - 1)),
        ("UPDATE kv SET value = NULL WHERE key = ?", (len(values) - 2,)),
        ("INSERT OR REPLACE INTO kv VALUES(?, ?)", (1, big_text)),
        "SELECT key, value, typeof(value) FROM kv ORDER BY key",
    ]
    scenario("values: every type round-trips type for type, byte for byte (incl. 1 MB)", steps)

    db = connect()
    db.execute(VTAB)
    db.execute("INSERT INTO kv VALUES(1, ?), (2, ?), (3, ?)", (-0.0, big_text, big_blob))
    v = db.execute("SELECT value FROM kv WHERE key = 1").fetchone()[0]
    check("values: -0.0 comes back as -0.0 (as native does)",
          isinstance(v, float) and repr(v) == "-0.0", "got %r" % (v,))
    v = db.execute("SELECT value FROM kv WHERE key = 2").fetchone()[0]
    check("values: 1 MB text exact", v == big_text, "got %d chars" % len(v or ""))
    v = db.execute("SELECT value FROM kv WHERE key = 3").fetchone()[0]
    check("values: 1 MB blob exact", v == big_blob, "got %d bytes" % len(v or b""))
    db.close()


# ---------------------------------------------------------------------------------------------
# constraints, conflict modes, UPDATE, DELETE


def test_constraint_messages():
    db = connect()
    db.execute(VTAB)
    db.execute("INSERT INTO kv VALUES(1, 'a')")
    check_error("constraint: duplicate key is IntegrityError 'UNIQUE constraint failed: kv.key'",
                lambda: db.execute("INSERT INTO kv VALUES(1, 'b')"),
                "UNIQUE constraint failed: kv.key", sqlite3.IntegrityError)
    check_error("constraint: duplicate key via 1.0",
                lambda: db.execute("INSERT INTO kv VALUES(1.0, 'b')"),
                "UNIQUE constraint failed: kv.key", sqlite3.IntegrityError)
    check_error("constraint: NULL key is IntegrityError 'NOT NULL constraint failed: kv.key'",
                lambda: db.execute("INSERT INTO kv VALUES(NULL, 'b')"),
                "NOT NULL constraint failed: kv.key", sqlite3.IntegrityError)
    check_error("constraint: missing key is a NOT NULL error",
                lambda: db.execute("INSERT INTO kv(value) VALUES('b')"),
                "NOT NULL constraint failed: kv.key", sqlite3.IntegrityError)
    check_equal("constraint: failed inserts left the table alone",
                db.execute("SELECT key, value FROM kv").fetchall(), [(1, "a")])
    db.close()


def test_conflict_modes_autocommit():
    base = ["INSERT INTO kv VALUES(1, 'one'), (2, 'two'), ('1', 'text one')"]
    multi = "INSERT OR %s INTO kv VALUES(10, 'a'), (11, 'b'), (1, 'dup'), (12, 'c')"
    scenario("conflict: plain INSERT duplicate (ABORT) undoes the whole statement",
             ["INSERT INTO kv VALUES(10, 'a'), (11, 'b'), (1, 'dup'), (12, 'c')",
              "SELECT key, value FROM kv ORDER BY key"], base)
    for mode in ("ABORT", "FAIL", "IGNORE", "REPLACE", "ROLLBACK"):
        scenario("conflict: INSERT OR %s multi-row as native" % mode,
                 [multi % mode, "SELECT key, typeof(key), value FROM kv ORDER BY key"], base)
    scenario("conflict: OR REPLACE / REPLACE INTO / OR IGNORE single rows", [
        "INSERT OR REPLACE INTO kv VALUES(1, 'replaced')",
        "REPLACE INTO kv VALUES(1.0, 'real key replaces')",
        "SELECT key, typeof(key), value FROM kv ORDER BY key",
        "INSERT OR IGNORE INTO kv VALUES(1, 'ignored')",
        "INSERT OR IGNORE INTO kv VALUES(3, 'new')",
        "INSERT OR REPLACE INTO kv VALUES(4, 'new')",
        "INSERT OR REPLACE INTO kv VALUES(20, 'x'), (20, 'y'), (20.0, 'z')",
        "INSERT OR IGNORE INTO kv VALUES(21, 'x'), (21, 'y')",
        "INSERT OR REPLACE INTO kv VALUES(NULL, 'null key')",
        "INSERT OR IGNORE INTO kv VALUES(NULL, 'null key')",
        "SELECT key, typeof(key), value FROM kv ORDER BY key",
    ], base)


def test_conflict_modes_in_transaction():
    base = ["INSERT INTO kv VALUES(1, 'one'), (2, 'two')"]
    multi = "INSERT OR %s INTO kv VALUES(%d, 'a'), (1, 'dup'), (%d, 'c')"
    steps = ["BEGIN", "INSERT INTO kv VALUES(30, 'before')"]
    for i, mode in enumerate(("FAIL", "ABORT", "IGNORE", "REPLACE")):
        steps += [multi % (mode, 100 + 2 * i, 101 + 2 * i),
                  "SELECT key, value FROM kv ORDER BY key"]
    steps += ["INSERT INTO kv VALUES(40, 'a'), (2, 'dup')",
              "SELECT key, value FROM kv ORDER BY key",
              "COMMIT", "SELECT key, value FROM kv ORDER BY key"]
    scenario("conflict: OR FAIL/ABORT/IGNORE/REPLACE inside BEGIN as native", steps, base)
    scenario("conflict: OR ROLLBACK inside BEGIN ends the transaction, undoing all of it", [
        "BEGIN", "INSERT INTO kv VALUES(30, 'x')", "UPDATE kv SET value = 'changed' WHERE key = 1",
        "INSERT OR ROLLBACK INTO kv VALUES(31, 'y'), (2, 'dup'), (32, 'z')",
        "SELECT key, value FROM kv ORDER BY key",
        "COMMIT",  # native: no transaction is active
        "INSERT INTO kv VALUES(33, 'after')",
        "SELECT key, value FROM kv ORDER BY key",
    ], base)
    scenario("conflict: UPDATE OR ROLLBACK / OR FAIL / OR ABORT inside BEGIN", [
        "BEGIN", "INSERT INTO kv VALUES(30, 'x')",
        "UPDATE OR FAIL kv SET key = 2 WHERE key = 1",
        "UPDATE OR ABORT kv SET key = 2 WHERE key = 1",
        "UPDATE OR IGNORE kv SET key = 2 WHERE key = 1",
        "SELECT key, value FROM kv ORDER BY key",
        "UPDATE OR ROLLBACK kv SET key = 2 WHERE key = 1",
        "SELECT key, value FROM kv ORDER BY key",
    ], base)


def test_update_and_delete():
    base = ["INSERT INTO kv VALUES(1, 'one'), (2, 'two'), (3, 'three'), ('a', 'A'), "
            "(x'61', 'blob a'), (2.5, 'real'), (4, NULL)"]
    scenario("UPDATE: value, key to a free key, onto an existing key, OR REPLACE/IGNORE", [
        "UPDATE kv SET value = 'uno' WHERE key = 1",
        "UPDATE kv SET value = 'uno!' WHERE key = 1.0",
        "UPDATE kv SET value = 'none' WHERE key = '1'",
        "UPDATE kv SET key = 100 WHERE key = 1",
        "SELECT key, value FROM kv WHERE key = 100",
        "SELECT key, value FROM kv WHERE key = 1",
        "UPDATE kv SET key = 2 WHERE key = 100",
        "UPDATE kv SET key = 2.0 WHERE key = 100",
        "UPDATE kv SET key = NULL WHERE key = 100",
        "UPDATE OR IGNORE kv SET key = 2 WHERE key = 100",
        "SELECT key, typeof(key), value FROM kv ORDER BY key",
        "UPDATE OR REPLACE kv SET key = 2 WHERE key = 100",
        "SELECT key, typeof(key), value FROM kv ORDER BY key",
        "UPDATE kv SET key = key WHERE key = 3",
        "UPDATE kv SET key = 3.0 WHERE key = 3",
        "UPDATE kv SET key = '3' WHERE key = 3",
        "UPDATE kv SET key = 'b' WHERE key = x'61'",
        "UPDATE kv SET key = x'61' WHERE key = 'a'",
        "SELECT key, typeof(key), value FROM kv ORDER BY key",
        "UPDATE kv SET value = value || '!'",
        "UPDATE kv SET key = key + 1000 WHERE typeof(key) = 'integer'",
        "UPDATE kv SET value = NULL WHERE key > 1000",
        "SELECT key, typeof(key), value FROM kv ORDER BY key",
    ], base)
    scenario("DELETE: by key, by value, everything; changes() as native", [
        "DELETE FROM kv WHERE key = 1.0",
        "DELETE FROM kv WHERE key = '2'",
        "DELETE FROM kv WHERE key = 2",
        "DELETE FROM kv WHERE key = 2",
        "DELETE FROM kv WHERE value IS NULL",
        "DELETE FROM kv WHERE key IN ('a', x'61', 99)",
        "SELECT key, value FROM kv ORDER BY key",
        "DELETE FROM kv",
        "SELECT count(*) FROM kv",
        "INSERT INTO kv VALUES(1, 'again')",
        "SELECT key, value FROM kv ORDER BY key",
    ], base)


# ---------------------------------------------------------------------------------------------
# transactions


SAVEPOINT_STEPS = [
    "BEGIN", "INSERT INTO kv VALUES(1, 'a')",
    "SELECT key, value FROM kv ORDER BY key",
    "SAVEPOINT s1", "INSERT INTO kv VALUES(2, 'b')",
    "SAVEPOINT s2", "INSERT INTO kv VALUES(3, 'c')", "UPDATE kv SET value = 'A' WHERE key = 1",
    "SAVEPOINT s3", "DELETE FROM kv WHERE key = 2", "INSERT INTO kv VALUES(4, 'd')",
    "UPDATE kv SET key = 5 WHERE key = 3",
    "SELECT key, value FROM kv ORDER BY key",
    "ROLLBACK TO s3", "SELECT key, value FROM kv ORDER BY key",
    "INSERT INTO kv VALUES(6, 'f')", "RELEASE s3",
    "ROLLBACK TO s2", "SELECT key, value FROM kv ORDER BY key",
    "INSERT INTO kv VALUES(7, 'g')", "RELEASE s2",
    "SAVEPOINT s4", "INSERT INTO kv VALUES(8, 'h')", "RELEASE s4",
    "SELECT key, value FROM kv ORDER BY key",
    "ROLLBACK TO s1", "SELECT key, value FROM kv ORDER BY key",
    "INSERT INTO kv VALUES(9, 'i')", "RELEASE s1",
    "COMMIT", "SELECT key, value FROM kv ORDER BY key",
]

# A SAVEPOINT outside BEGIN opens the transaction; ROLLBACK TO it undoes everything since.
OUTER_SAVEPOINT_STEPS = [
    ["SAVEPOINT x", "INSERT INTO kv VALUES(10, 'j')", "ROLLBACK TO x",
     "SELECT key, value FROM kv ORDER BY key", "RELEASE x"],
    ["SAVEPOINT x", "INSERT INTO kv VALUES(10, 'j')", "SAVEPOINT y",
     "INSERT INTO kv VALUES(11, 'k')", "ROLLBACK TO x", "SELECT key, value FROM kv ORDER BY key",
     "INSERT INTO kv VALUES(12, 'l')", "RELEASE x", "SELECT key, value FROM kv ORDER BY key"],
    ["SAVEPOINT x", "SAVEPOINT y", "INSERT INTO kv VALUES(10, 'j')", "ROLLBACK TO x",
     "SELECT key, value FROM kv ORDER BY key", "RELEASE x"],
    ["BEGIN", "SAVEPOINT y", "INSERT INTO kv VALUES(10, 'j')", "ROLLBACK TO y",
     "SELECT key, value FROM kv ORDER BY key", "COMMIT"],
    ["SAVEPOINT z", "INSERT INTO kv VALUES(13, 'm')", "ROLLBACK",
     "SELECT key, value FROM kv ORDER BY key"],
    ["SAVEPOINT z", "INSERT INTO kv VALUES(13, 'm')", "RELEASE z",
     "SELECT key, value FROM kv ORDER BY key"],
]


def test_transactions():
    scenario("transactions: BEGIN/COMMIT, read-your-own-writes", [
        "BEGIN", "INSERT INTO kv VALUES(1, 'a')", "SELECT value FROM kv WHERE key = 1",
        "UPDATE kv SET value = 'b' WHERE key = 1", "SELECT value FROM kv WHERE key = 1",
        "INSERT INTO kv VALUES(2, 'c')", "DELETE FROM kv WHERE key = 2",
        "SELECT key, value FROM kv ORDER BY key", "SELECT count(*) FROM kv",
        "COMMIT", "SELECT key, value FROM kv ORDER BY key",
    ])
    scenario("transactions: ROLLBACK undoes inserts, updates, deletes", [
        "BEGIN", "INSERT INTO kv VALUES(3, 'x')", "UPDATE kv SET value = 'y' WHERE key = 1",
        "DELETE FROM kv WHERE key = 2", "UPDATE kv SET key = 20 WHERE key = 'k'",
        "SELECT key, value FROM kv ORDER BY key",
        "ROLLBACK", "SELECT key, value FROM kv ORDER BY key",
    ], ["INSERT INTO kv VALUES(1, 'a'), (2, 'b'), ('k', 'v')"])
    scenario("transactions: SAVEPOINT/RELEASE/ROLLBACK TO nested three deep", SAVEPOINT_STEPS)
    for steps in OUTER_SAVEPOINT_STEPS:
        scenario("transactions: savepoint as the transaction: %s" % "; ".join(
            x for x in steps if not x.startswith("SELECT")), steps,
            ["INSERT INTO kv VALUES(1, 'a')"])
    scenario("transactions: a statement failing half-way inside BEGIN leaves nothing of itself", [
        "BEGIN", "INSERT INTO kv VALUES(10, 'kept')",
        "INSERT INTO kv VALUES(11, 'x'), (12, 'y'), (1, 'dup'), (13, 'z')",
        "UPDATE kv SET key = 1 WHERE key = 10",
        "SELECT key, value FROM kv ORDER BY key",
        "INSERT INTO kv VALUES(14, 'kept too')",
        "COMMIT", "SELECT key, value FROM kv ORDER BY key",
    ], ["INSERT INTO kv VALUES(1, 'a')"])
    steps = ["BEGIN"] + [("INSERT INTO kv VALUES(?, ?)", (i, "v%d" % i)) for i in range(1000)]
    steps += ["SELECT count(*) FROM kv", "ROLLBACK", "SELECT count(*) FROM kv",
              "BEGIN", "DELETE FROM kv", "SELECT count(*) FROM kv", "ROLLBACK",
              "SELECT count(*) FROM kv"]
    scenario("transactions: 1000-row transaction rolled back", steps,
             [("INSERT INTO kv VALUES(?, ?)", (-i, i)) for i in range(1, 50)])


def test_transactions_file():
    with TempDir() as d:
        dn, dv = connect(os.path.join(d, "n1.db")), connect(os.path.join(d, "m1.db"))
        dn.execute(NATIVE)
        dv.execute(VTAB)
        compare_steps("transactions (file database): savepoints, nested three deep",
                      dn, dv, SAVEPOINT_STEPS)
        dn.close()
        dv.close()

        pn, pv = os.path.join(d, "n2.db"), os.path.join(d, "m2.db")
        dn, dv = connect(pn), connect(pv)
        dn.execute(NATIVE)
        dv.execute(VTAB)
        compare_steps("transactions (file database): commit, rollback, then uncommitted work",
                      dn, dv, ["INSERT INTO kv VALUES(1, 'a'), (2, 'b')",
                               "BEGIN", "INSERT INTO kv VALUES(3, 'c')", "COMMIT",
                               "BEGIN", "INSERT INTO kv VALUES(4, 'd')", "ROLLBACK",
                               "BEGIN", "INSERT INTO kv VALUES(100, 'uncommitted')",
                               "DELETE FROM kv WHERE key = 1"])
        dn.close()
        dv.close()
        dn, dv = connect(pn), connect(pv)
        a, b = content(dn), content(dv)
        check("transactions (file database): uncommitted work is lost on close", a == b,
              "native %s, mmkv %s" % (short(a), short(b)))
        dn.close()
        dv.close()


# ---------------------------------------------------------------------------------------------
# queries and plans


def make_query_db():
    db = connect()
    db.execute(VTAB)
    db.execute(NATIVE.replace("kv(", "nkv("))
    rows = [(k, i) for i, k in enumerate(KEYS)] + [(1000 + i, i) for i in range(1000)]
    db.execute("BEGIN")
    db.executemany("INSERT OR IGNORE INTO kv VALUES(?, ?)", rows)
    db.executemany("INSERT OR IGNORE INTO nkv VALUES(?, ?)", rows)
    db.execute("COMMIT")
    db.execute("CREATE TABLE nt(k)")
    db.executemany("INSERT INTO nt VALUES(?)", [(k,) for k in PROBES[:40]] + [(1500,), (7777,)])
    for t in ("kv", "nkv"):
        db.executemany("INSERT INTO %s VALUES(?, ?)" % t, [("2", "text 2"), ("3.0", "text 3.0")])
    db.execute("CREATE TABLE ti(k INTEGER)")
    db.execute("CREATE TABLE tt(k TEXT)")
    for t in ("ti", "tt"):
        db.executemany("INSERT INTO %s VALUES(?)" % t, [(i,) for i in range(8)])
    return db


def test_query_plans():
    db = make_query_db()
    plan = [r[3] for r in db.execute("EXPLAIN QUERY PLAN SELECT value FROM kv WHERE key = ?",
                                     (1,))]
    check("plan: key = ? uses VIRTUAL TABLE INDEX 1",
          len(plan) == 1 and "VIRTUAL TABLE INDEX 1:" in plan[0], "plan: %r" % plan)
    plan = [r[3] for r in db.execute(
        "EXPLAIN QUERY PLAN SELECT nt.k, kv.value FROM nt JOIN kv ON kv.key = nt.k")]
    check("plan: join scans nt and looks kv up with INDEX 1",
          len(plan) == 2 and plan[0].startswith("SCAN nt") and plan[1].startswith("SCAN kv")
          and "VIRTUAL TABLE INDEX 1:" in plan[1], "plan: %r" % plan)
    for outer in ("ipk(k INTEGER PRIMARY KEY, x)", "tpk(k TEXT PRIMARY KEY, x)"):
        name = outer.split("(")[0]
        db.execute("CREATE TABLE " + outer)
        db.execute("INSERT INTO %s(k) VALUES (1), (2), (1500)" % name)
        plan = [r[3] for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM %s JOIN kv ON kv.key = %s.k" % (name, name))]
        check("plan: a native table with a primary key (%s) is scanned and kv probed" % name,
              len(plan) == 2 and plan[0].startswith("SCAN " + name) and
              "VIRTUAL TABLE INDEX 1:" in plan[1], "plan: %r" % plan)
    same_query("query: join nt with kv on key returns native rows", db,
               "SELECT nt.k, typeof(nt.k), {t}.key, {t}.value FROM nt JOIN {t} ON {t}.key = nt.k")
    same_query("query: LEFT JOIN nt with kv on key returns native rows", db,
               "SELECT nt.k, {t}.key, {t}.value FROM nt LEFT JOIN {t} ON {t}.key = nt.k")
    db.close()


def test_queries_match_native():
    db = make_query_db()
    queries = [
        ("key IN (...)", "SELECT key, value FROM {t} WHERE key IN (1, '1', x'31', 2.0, 'a', "
         "x'61', -0.0, 1500, 99999, NULL, 1) ORDER BY key"),
        ("key IN (...) unordered", "SELECT key, value FROM {t} WHERE key IN (1, 1.0, 'abc', 5)"),
        ("key IN (subquery)", "SELECT key, value FROM {t} WHERE key IN (SELECT k FROM nt)"),
        ("key NOT IN (...)", "SELECT count(*) FROM {t} WHERE key NOT IN (1, 'a', x'61')"),
        ("key > 5", "SELECT key, typeof(key) FROM {t} WHERE key > 5 ORDER BY key"),
        ("key >= 5", "SELECT key FROM {t} WHERE key >= 5 ORDER BY key"),
        ("key < 2.5", "SELECT key FROM {t} WHERE key < 2.5 ORDER BY key"),
        ("key BETWEEN 2 AND 1005", "SELECT key FROM {t} WHERE key BETWEEN 2 AND 1005 "
         "ORDER BY key"),
        ("key > 'a'", "SELECT key FROM {t} WHERE key > 'a' ORDER BY key"),
        ("key < x'00'", "SELECT key FROM {t} WHERE key < x'00' ORDER BY key"),
        ("key > 1 AND key < 3", "SELECT key FROM {t} WHERE key > 1 AND key < 3"),
        ("key != 1", "SELECT count(*) FROM {t} WHERE key != 1"),
        ("key LIKE 'a%'", "SELECT key FROM {t} WHERE key LIKE 'a%' ORDER BY key"),
        ("key GLOB 'a*'", "SELECT key FROM {t} WHERE key GLOB 'a*' ORDER BY key"),
        ("key = 'A' COLLATE NOCASE", "SELECT key FROM {t} WHERE key = 'A' COLLATE NOCASE "
         "ORDER BY key"),
        ("key = 'abc' COLLATE NOCASE", "SELECT key FROM {t} WHERE key = 'abc' COLLATE NOCASE"),
        ("key COLLATE RTRIM = 'a  '", "SELECT key FROM {t} WHERE key COLLATE RTRIM = 'a  '"),
        ("key IS NULL", "SELECT key FROM {t} WHERE key IS NULL"),
        ("key IS NOT NULL", "SELECT count(*) FROM {t} WHERE key IS NOT NULL"),
        ("key = 1 OR key = 'a'", "SELECT key FROM {t} WHERE key = 1 OR key = 'a'"),
        ("+key = 1.0", "SELECT key FROM {t} WHERE +key = 1.0"),
        ("value = 5", "SELECT key FROM {t} WHERE value = 5"),
        ("key = value", "SELECT key FROM {t} WHERE key = value"),
        ("ORDER BY key", "SELECT key, value FROM {t} ORDER BY key"),
        ("ORDER BY key DESC", "SELECT key, value FROM {t} ORDER BY key DESC"),
        ("ORDER BY key LIMIT", "SELECT key FROM {t} ORDER BY key LIMIT 10 OFFSET 3"),
        ("min/max/count", "SELECT min(key), max(key), count(*), count(value) FROM {t}"),
        ("GROUP BY typeof", "SELECT typeof(key), count(*) FROM {t} GROUP BY 1 ORDER BY 1"),
        ("rowid", "SELECT rowid FROM {t}"),
        ("self-join", "SELECT a.key, b.value FROM {t} a JOIN {t} b ON b.key = a.value"),
        ("correlated subquery", "SELECT k, (SELECT value FROM {t} WHERE key = nt.k) FROM nt"),
        ("join on an INTEGER column (numeric affinity)",
         "SELECT ti.k, {t}.key FROM ti JOIN {t} ON {t}.key = ti.k"),
        ("join on a TEXT column (text affinity)",
         "SELECT tt.k, {t}.key FROM tt JOIN {t} ON {t}.key = tt.k"),
        ("key IN (SELECT integer column) (numeric affinity)",
         "SELECT key FROM {t} WHERE key IN (SELECT k FROM ti)"),
        ("key = CAST(2 AS INTEGER) (numeric affinity)",
         "SELECT key FROM {t} WHERE key = CAST(2 AS INTEGER)"),
    ]
    for name, sql in queries:
        same_query("query: %s as native" % name, db, sql)
    bad = []
    for p in PROBES:
        a = outcome(db, "SELECT key, typeof(key), value FROM nkv WHERE key = ?", (p,))
        b = outcome(db, "SELECT key, typeof(key), value FROM kv WHERE key = ?", (p,))
        if a != b:
            bad.append("probe %s: native %s, mmkv %s"
                       % (short(p, 40), short(a, 150), short(b, 150)))
    check("query: key = ? in a 1000-row table finds what native finds, for every probe",
          not bad, "\n    ".join(bad[:10]))
    db.close()


# ---------------------------------------------------------------------------------------------
# several connections in one process


def is_busy(e):
    m = str(e).lower()
    return isinstance(e, sqlite3.OperationalError) and ("locked" in m or "busy" in m)


def test_connections_shared_database():
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        a = connect(p)
        a.execute(VTAB)
        b = connect(p, timeout=0.2)
        a.execute("INSERT INTO kv VALUES(1, 'one')")
        check_equal("connections: a commit in one is visible in the other",
                    b.execute("SELECT key, value FROM kv").fetchall(), [(1, "one")])
        a.execute("BEGIN")
        a.execute("INSERT INTO kv VALUES(2, 'two')")
        a.execute("UPDATE kv SET value = 'uno' WHERE key = 1")
        check_equal("connections: uncommitted writes are not visible",
                    b.execute("SELECT key, value FROM kv ORDER BY key").fetchall(),
                    [(1, "one")])
        try:
            b.execute("INSERT INTO kv VALUES(3, 'three')")
            check("connections: second writer gets locked/busy", False, "no error raised")
        except sqlite3.Error as e:
            check("connections: second writer gets locked/busy", is_busy(e),
                  "%s: %s" % (type(e).__name__, e))
        check("connections: failed writer is left in autocommit", not b.in_transaction,
              "expected no open transaction, got one")
        a.execute("COMMIT")
        check_equal("connections: commit becomes visible",
                    b.execute("SELECT key, value FROM kv ORDER BY key").fetchall(),
                    [(1, "uno"), (2, "two")])
        b.execute("INSERT INTO kv VALUES(3, 'three')")
        check_equal("connections: second writer can write after the first commits",
                    a.execute("SELECT key, value FROM kv ORDER BY key").fetchall(),
                    [(1, "uno"), (2, "two"), (3, "three")])
        b.execute("BEGIN")
        b.execute("DELETE FROM kv WHERE key = 1")
        b.execute("ROLLBACK")
        check_equal("connections: a rolled-back transaction is never seen",
                    a.execute("SELECT count(*) FROM kv").fetchone(), (3,))
        c = connect(p)
        check_equal("connections: a third connection opened later sees everything",
                    c.execute("SELECT key, value FROM kv ORDER BY key").fetchall(),
                    [(1, "uno"), (2, "two"), (3, "three")])
        for x in (a, b, c):
            x.close()


def test_connections_shared_file():
    # A data file answers to one authority. Two database files cannot share one (each would keep
    # its own commit record); in-memory databases, which have none, share it under mmkv's own
    # meta slots and file lock.
    with TempDir() as d:
        shared = os.path.join(d, "shared.mmkv")
        a = connect(os.path.join(d, "a.db"))
        a.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % shared)
        a.execute("INSERT INTO kv VALUES(1, 'one')")
        b = connect(os.path.join(d, "b.db"), timeout=0.2)
        check_error("shared file: a second database file cannot take another's data file",
                    lambda: b.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % shared),
                    "is in use by table main.kv of '%s'" % os.path.join(d, "a.db"))
        check_equal("shared file: the refusal left no table behind",
                    b.execute("SELECT count(*) FROM sqlite_schema").fetchone(), (0,))
        m = connect(":memory:")
        check_error("shared file: an in-memory database cannot take a database's data file",
                    lambda: m.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % shared),
                    "belongs to a database")
        check_equal("shared file: the owner still reads its rows",
                    a.execute("SELECT key, value FROM kv").fetchall(), [(1, "one")])
        a.close()
        b.close()
        m.close()

        free = os.path.join(d, "free.mmkv")
        a = connect(":memory:")
        a.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % free)
        a.execute("INSERT INTO kv VALUES(1, 'one')")
        b = connect(":memory:", timeout=0.2)
        b.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % free)
        check_equal("shared file (in memory): a second database sees the rows",
                    b.execute("SELECT key, value FROM kv").fetchall(), [(1, "one")])
        b.execute("INSERT INTO kv VALUES(2, 'two')")
        check_equal("shared file (in memory): commit visible across databases",
                    a.execute("SELECT key, value FROM kv ORDER BY key").fetchall(),
                    [(1, "one"), (2, "two")])
        a.execute("BEGIN")
        a.execute("INSERT INTO kv VALUES(3, 'three')")
        check_equal("shared file (in memory): uncommitted writes are not visible",
                    b.execute("SELECT count(*) FROM kv").fetchone(), (2,))
        try:
            b.execute("INSERT INTO kv VALUES(4, 'four')")
            check("shared file (in memory): second writer gets locked/busy", False,
                  "no error raised")
        except sqlite3.Error as e:
            check("shared file (in memory): second writer gets locked/busy", is_busy(e),
                  "%s: %s" % (type(e).__name__, e))
        a.execute("COMMIT")
        b.execute("INSERT INTO kv VALUES(4, 'four')")
        check_equal("shared file (in memory): both writes present after the first commits",
                    a.execute("SELECT key FROM kv ORDER BY key").fetchall(),
                    [(1,), (2,), (3,), (4,)])
        f = connect(os.path.join(d, "c.db"))
        check_error("shared file (in memory): a database file cannot take it while others "
                    "share it", lambda: f.execute(
                        "CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % free),
                    "is in use by table main.kv of an in-memory database")
        a.close()
        b.close()
        f.close()


# ---------------------------------------------------------------------------------------------
# SQLITE_VTAB_DIRECTONLY, hidden column, misc


def test_directonly():
    db = connect()
    db.execute(VTAB)
    db.execute("INSERT INTO kv VALUES(1, 'one')")
    db.execute("CREATE TABLE t(a)")
    db.execute("CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO kv VALUES(new.a, 1); END")
    check_error("directonly: a trigger inserting into kv is refused",
                lambda: db.execute("INSERT INTO t VALUES(2)"),
                'unsafe use of virtual table "kv"')
    check_equal("directonly: the refused statement changed nothing",
                (db.execute("SELECT count(*) FROM t").fetchone(),
                 db.execute("SELECT count(*) FROM kv").fetchone()), ((0,), (1,)))
    db.execute("DROP TRIGGER tr")
    db.execute("CREATE TRIGGER tr AFTER INSERT ON t BEGIN "
               "UPDATE t SET a = (SELECT value FROM kv WHERE key = 1); END")
    check_error("directonly: a trigger reading kv is refused",
                lambda: db.execute("INSERT INTO t VALUES(2)"), 'unsafe use of virtual table "kv"')
    # SQLite 3.40 refuses DIRECTONLY tables in views of the schema, allows them in TEMP views.
    db.execute("CREATE VIEW v AS SELECT key, value FROM kv")
    check_error("directonly: a (schema) view over kv is refused",
                lambda: db.execute("SELECT * FROM v").fetchall(),
                'unsafe use of virtual table "kv"')
    db.execute("CREATE TEMP VIEW tv AS SELECT key, value FROM kv")
    check_equal("directonly: a TEMP view over kv works",
                db.execute("SELECT * FROM tv").fetchall(), [(1, "one")])
    check_equal("directonly: direct queries work",
                db.execute("SELECT * FROM kv WHERE key = 1").fetchall(), [(1, "one")])
    db.close()


def test_hidden_command():
    db = connect()
    db.execute(VTAB)
    db.execute("INSERT INTO kv VALUES(1, 'one')")
    check_error("hidden column: unknown command is an error naming it",
                lambda: db.execute("INSERT INTO kv(kv) VALUES('no-such-command')"),
                "no-such-command")
    check_equal("hidden column: unknown command changed nothing",
                db.execute("SELECT key, value FROM kv").fetchall(), [(1, "one")])
    db.close()


def test_last_insert_rowid():
    db = connect()
    db.execute(VTAB)
    db.execute("CREATE TABLE r(x)")
    db.execute("INSERT INTO r VALUES('a'), ('b')")
    db.execute("INSERT INTO kv VALUES(1, 'one')")
    check_equal("an INSERT into kv leaves last_insert_rowid() as a WITHOUT ROWID table does",
                db.execute("SELECT last_insert_rowid()").fetchone(), (2,))


def test_commit_record():
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        db = connect(p)
        db.execute(VTAB)
        db.execute("INSERT INTO kv VALUES(1, 'one')")
        names = lambda: [r[0] for r in db.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")]
        check_equal("commit record: a table in a database file has its shadow table",
                    names(), ["kv", "kv_commit"])
        db.close()
        # (Through the C API: the sqlite3 shell refuses to run on any SQLite but its own.)
        error = harness.exec_defensive(p, "UPDATE kv_commit SET owner = 0")
        check("commit record: read-only to SQL under SQLITE_DBCONFIG_DEFENSIVE (xShadowName)",
              error is not None and "may not be modified" in error,
              "expected an error saying the table may not be modified, got %r" % error)
        db = connect(p)
        check_equal("commit record: the table still reads after the refused write",
                    db.execute("SELECT key, value FROM kv").fetchall(), [(1, "one")])
        db.execute("ALTER TABLE kv RENAME TO kv2")
        check_equal("commit record: RENAME renames it", names(), ["kv2", "kv2_commit"])
        db.execute("DROP TABLE kv2")
        check_equal("commit record: DROP TABLE drops it", names(), [])
        m = connect(":memory:")
        m.execute(VTAB)
        check_equal("commit record: an in-memory table has none",
                    [r[0] for r in m.execute("SELECT name FROM sqlite_schema")], ["kv"])
        db.close()
        m.close()


def test_commands():
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        db = connect(p)
        db.execute(VTAB)
        db.executemany("INSERT INTO kv VALUES(?, ?)", [(i, "v%d" % i) for i in range(300)])
        db.execute("UPDATE kv SET value = 'x' WHERE key < 50")
        db.execute("DELETE FROM kv WHERE key >= 250")
        db.execute("INSERT INTO kv(kv) VALUES('integrity-check')")
        check("command: integrity-check passes on a sound table", True)
        db.execute("INSERT INTO kv(kv) VALUES('rebuild-index')")
        check_equal("command: rebuild-index keeps every row",
                    db.execute("SELECT count(*), sum(value = 'x') FROM kv").fetchone(), (250, 50))
        db.execute("BEGIN")
        db.execute("INSERT INTO kv VALUES(1000, 'new')")
        db.execute("INSERT INTO kv(kv) VALUES('rebuild-index')")
        db.execute("INSERT INTO kv(kv) VALUES('integrity-check')")
        db.execute("ROLLBACK")
        check_equal("command: rebuild-index inside a transaction keeps its rollback exact",
                    db.execute("SELECT count(*) FROM kv WHERE key = 1000").fetchone(), (0,))
        harness.sync_kept_records(db)
        db.close()
        data = p + "-kv.mmkv"
        with open(data, "r+b") as f:
            f.seek(4096 + 40)
            b = f.read(1)
            f.seek(4096 + 40)
            f.write(bytes([b[0] ^ 0xFF]))
        db = connect(p)
        check_error("command: integrity-check reports a damaged record, naming the file",
                    lambda: db.execute("INSERT INTO kv(kv) VALUES('integrity-check')"), data,
                    sqlite3.DatabaseError)
        db.close()


def test_version():
    db = connect()
    v = db.execute("SELECT mmkv_version(), typeof(mmkv_version())").fetchone()
    check("mmkv_version() returns a non-empty string", v[1] == "text" and v[0].strip() != "",
          "got %r" % (v,))
    db.close()


def test_mixed_workload():
    rng = harness.rng(2024)
    pool = ([i for i in range(60)] + [i + 0.5 for i in range(20)] + [float(i) for i in range(10)]
            + [str(i) for i in range(20)] + [("k%d" % i).encode() for i in range(20)]
            + ["k%d" % i for i in range(20)])
    steps = []
    in_txn = False
    for n in range(2500):
        r = rng.random()
        k = rng.choice(pool)
        v = rng.choice([None, n, n + 0.25, "v%d" % n, b"b%d" % n])
        if r < 0.25:
            steps.append(("INSERT INTO kv VALUES(?, ?)", (k, v)))
        elif r < 0.40:
            steps.append(("INSERT OR REPLACE INTO kv VALUES(?, ?)", (k, v)))
        elif r < 0.45:
            steps.append(("INSERT OR IGNORE INTO kv VALUES(?, ?)", (k, v)))
        elif r < 0.55:
            steps.append(("UPDATE kv SET value = ? WHERE key = ?", (v, k)))
        elif r < 0.62:
            steps.append(("UPDATE kv SET key = ? WHERE key = ?", (rng.choice(pool), k)))
        elif r < 0.64:
            steps.append(("UPDATE OR REPLACE kv SET key = ? WHERE key = ?", (rng.choice(pool), k)))
        elif r < 0.80:
            steps.append(("DELETE FROM kv WHERE key = ?", (k,)))
        elif r < 0.95:
            steps.append(("SELECT key, value FROM kv WHERE key = ?", (k,)))
        elif r < 0.97:
            steps.append("SELECT count(*) FROM kv")
        else:
            if in_txn:
                steps.append(rng.choice(["COMMIT", "ROLLBACK", "COMMIT"]))
            else:
                steps.append("BEGIN")
            in_txn = not in_txn
    if in_txn:
        steps.append("COMMIT")
    with TempDir() as d:
        dn, dv = connect(), connect(os.path.join(d, "app.db"))
        dn.execute(NATIVE)
        dv.execute(VTAB)
        compare_steps("workload: 2500 random statements behave as native", dn, dv, steps)
        check_equal("workload: count(*) equals native after the workload",
                    dv.execute("SELECT count(*) FROM kv").fetchone(),
                    dn.execute("SELECT count(*) FROM kv").fetchone())
        dv.close()
        dv = connect(os.path.join(d, "app.db"))
        a, b = content(dn), content(dv)
        check("workload: contents equal native after reopen", a == b,
              "native %s, mmkv %s" % (short(a), short(b)))
        dn.close()
        dv.close()


CASES = [
    test_schema, test_files_default_names, test_files_attached, test_files_memory_are_temporary,
    test_files_temp_schema, test_drop_and_rename, test_drop_and_rename_in_transactions,
    test_create_in_transactions,
    test_keys_roundtrip_and_identity, test_key_lookups, test_key_identity_named,
    test_values_roundtrip,
    test_constraint_messages, test_conflict_modes_autocommit, test_conflict_modes_in_transaction,
    test_update_and_delete,
    test_transactions, test_transactions_file,
    test_query_plans, test_queries_match_native,
    test_connections_shared_database, test_connections_shared_file,
    test_directonly, test_hidden_command, test_last_insert_rowid, test_commit_record, test_commands, test_version, test_mixed_workload,
]

if __name__ == "__main__":
    harness.main([isolated(c) for c in CASES])
