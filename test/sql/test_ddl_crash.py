"""A process killed between SQLite's commit (or rollback) of DDL and mmkv's file work after it:
whatever is pending is finished or undone by the next connection, as the database decided.

Each case runs the DDL in a child process loaded with the extension built with crash points
(ext/failpoint.h), which ends it at once at the named point, as a kill would; then this process,
with the ordinary extension, checks that every table reads as the database says it should, that
the files on disk are those of the tables that exist, and that the next DDL at the same names
works.

Run one case: MMKV_TEST=crash (and MMKV_CASE=<substring of a case name>).
"""
import os
import subprocess
import textwrap

import harness
from harness import CHILD_ENV, PYTHON, TempDir, check, check_equal, connect

CRASH_EXTENSION = os.environ.get("MMKV_CRASH_EXTENSION",
                                 os.path.join(harness.ROOT, "build", "failpoint", "mmkv"))
CASE_FILTER = os.environ.get("MMKV_CASE", "")
CRASH_STATUS = 137


def child(path, statements, crash_at, attach=None):
    code = textwrap.dedent('''
        import os, sqlite3, sys
        db = sqlite3.connect(%r, isolation_level=None)
        db.enable_load_extension(True)
        db.load_extension(os.environ["MMKV_CRASH_EXTENSION"])
        if %r:
            db.execute("ATTACH %%r AS aux" %% %r)
        for s in %r:
            db.execute(s).fetchall()
        print("finished without reaching the crash point")
    ''' % (path, attach, attach, statements))
    env = dict(CHILD_ENV, MMKV_CRASH_EXTENSION=CRASH_EXTENSION, MMKV_CRASH_AT=crash_at)
    return subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)


def mmkv_files(d):
    return sorted(f for f in os.listdir(d) if ".mmkv" in f)


def setup(d):
    p = os.path.join(d, "app.db")
    db = connect(p)
    db.execute("CREATE TABLE native(x)")
    db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
    db.executemany("INSERT INTO kv VALUES(?, ?)", [(i, "old%d" % i) for i in range(10)])
    db.close()
    return p


# (name, crash point, statements, what the database decided: kv's rows by name afterwards)
CASES = [
    ("DROP in autocommit, killed after its commit", "drop-committed",
     ["DROP TABLE kv"], {}),
    ("DROP after writes in the transaction, killed after its commit", "drop-committed",
     ["BEGIN", "INSERT INTO kv VALUES('new', 1)", "DROP TABLE kv", "COMMIT"], {}),
    ("RENAME, killed after its commit", "rename-committed",
     ["ALTER TABLE kv RENAME TO kv2"], {"kv2": 10}),
    ("RENAME in a transaction with writes, killed after its commit", "rename-committed",
     ["BEGIN", "INSERT INTO kv VALUES('new', 1)", "ALTER TABLE kv RENAME TO kv2", "COMMIT"],
     {"kv2": 11}),
    ("CREATE and writes rolled back, killed before its files went", "create-undone",
     ["BEGIN", "CREATE VIRTUAL TABLE kv3 USING mmkv", "INSERT INTO kv3 VALUES(1, 1)",
      "ROLLBACK"], {"kv": 10}),
    ("CREATE rolled back to a savepoint, killed before its files went", "create-undone",
     ["BEGIN", "SAVEPOINT a", "CREATE VIRTUAL TABLE kv3 USING mmkv",
      "INSERT INTO kv3 VALUES(1, 1)", "ROLLBACK TO a", "COMMIT"], {"kv": 10}),
    ("DROP then CREATE of the same name, killed as the old file was set aside", "displaced",
     ["BEGIN", "DROP TABLE kv", "CREATE VIRTUAL TABLE kv USING mmkv"], {"kv": 10}),
    ("DROP then CREATE rolled back, killed before the old file came back", "displacement-undone",
     ["BEGIN", "INSERT INTO kv VALUES('in txn', 1)", "DROP TABLE kv",
      "CREATE VIRTUAL TABLE kv USING mmkv", "INSERT INTO kv VALUES('new', 1)", "ROLLBACK"],
     {"kv": 10}),
    ("DROP then CREATE committed, killed before the old file went", "drop-committed",
     ["BEGIN", "DROP TABLE kv", "CREATE VIRTUAL TABLE kv USING mmkv",
      "INSERT INTO kv VALUES('new', 1)", "COMMIT"], {"kv": 1}),
]


def test_crash():
    for label, point, statements, expected in CASES:
        if CASE_FILTER and CASE_FILTER not in label:
            continue
        with TempDir() as d:
            p = setup(d)
            r = child(p, statements, point)
            if not check("%s: the child ended at the crash point (status %d, %s)"
                         % (label, r.returncode, (r.stdout + r.stderr).strip()[-300:]),
                         r.returncode == CRASH_STATUS):
                continue
            db = connect(p)
            tables = sorted(n for (n,) in db.execute(
                "SELECT name FROM sqlite_schema WHERE sql LIKE 'CREATE VIRTUAL TABLE%'"))
            check_equal("%s: the tables the database kept" % label, tables, sorted(expected))
            for t, n in expected.items():
                try:
                    got = db.execute("SELECT count(*) FROM %s" % t).fetchone()[0]
                    check_equal("%s: %s has its rows" % (label, t), got, n)
                    db.execute("INSERT INTO %s(%s) VALUES('integrity-check')" % (t, t))
                except Exception as e:
                    check("%s: %s reads" % (label, t), False, str(e))
            # The files the database's tables use are there; a file left by the killed process
            # for a table the database does not have is cleared by the next CREATE of its name.
            for t in ("kv", "kv2", "kv3"):
                if t not in expected:
                    db.execute("CREATE VIRTUAL TABLE %s USING mmkv" % t)
                    check_equal("%s: a new %s starts empty" % (label, t),
                                db.execute("SELECT count(*) FROM %s" % t).fetchone(), (0,))
            names = sorted(n for (n,) in db.execute(
                "SELECT name FROM sqlite_schema WHERE sql LIKE 'CREATE VIRTUAL TABLE%'"))
            want = sorted(f for t in names for f in ("app.db-%s.mmkv" % t,
                                                     "app.db-%s.mmkv-index" % t))
            got = [f for f in mmkv_files(d) if "-orphan-" not in f]
            check_equal("%s: no stray files, only the tables'" % label, got, want)
            orphans = [f for f in mmkv_files(d) if "-orphan-" in f]
            check("%s: nothing committed was set aside as an orphan (%s)" % (label, orphans),
                  not orphans or point == "create-undone")
            db.close()


if __name__ == "__main__":
    harness.main([test_crash])
