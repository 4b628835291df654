"""A table's life around the engine: DDL under every transaction shape and ending, and schema
reloads inside a transaction, each run on an mmkv table and on a native WITHOUT ROWID table doing
the same, which must end alike: the same step outcomes, the same rows in every table, after a
reopen too; and the mmkv files on disk are exactly those of the tables that exist.

The matrix: DDL (DROP, RENAME, CREATE, DROP then CREATE of the same name, CREATE then DROP, RENAME
and back, RENAME then DROP) x shape (autocommit, BEGIN, a savepoint inside BEGIN, a savepoint as
the transaction) x ending (COMMIT, ROLLBACK, ROLLBACK TO a savepoint taken before the DDL and
COMMIT, a COMMIT that fails on a deferred foreign key and is retried or rolled back, a COMMIT that
is busy behind a reader and is retried or rolled back), with writes to the table before the DDL
in the same transaction and native writes beside them; in rollback-journal and WAL mode.

Run one case: MMKV_TEST=ddl_matrix (and MMKV_CASE=<substring of a case name>).
"""
import os
import sqlite3
import sys
import textwrap

import harness
from harness import TempDir, check, check_equal, connect

MMKV = "CREATE VIRTUAL TABLE {name} USING mmkv"
NATIVE = "CREATE TABLE {name}(key PRIMARY KEY NOT NULL, value) WITHOUT ROWID"
CASE_FILTER = os.environ.get("MMKV_CASE", "")

SETUP = [
    "PRAGMA foreign_keys = ON",
    "CREATE TABLE parent(id INTEGER PRIMARY KEY)",
    "CREATE TABLE child(p REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)",
    "CREATE TABLE log(n)",
    "{create:kv}",
    "INSERT INTO kv VALUES(1, 'one'), (2, 'two')",
    "INSERT INTO log VALUES(0)",
]

# The DDL under test, and the statements after it that use what it left.
DDL = {
    "drop": ["DROP TABLE kv"],
    "rename": ["ALTER TABLE kv RENAME TO kv2", "INSERT INTO kv2 VALUES(20, 'after rename')"],
    "create": ["{create:kv3}", "INSERT INTO kv3 VALUES(30, 'in new table')"],
    "drop+create": ["DROP TABLE kv", "{create:kv}", "INSERT INTO kv VALUES(40, 'recreated')"],
    "create+drop": ["{create:kv3}", "INSERT INTO kv3 VALUES(30, 'x')", "DROP TABLE kv3"],
    "rename+back": ["ALTER TABLE kv RENAME TO kv2", "INSERT INTO kv2 VALUES(21, 'a')",
                    "ALTER TABLE kv2 RENAME TO kv", "INSERT INTO kv VALUES(22, 'b')"],
    "rename+drop": ["ALTER TABLE kv RENAME TO kv2", "DROP TABLE kv2"],
    "drop+rename-into": ["{create:kv3}", "INSERT INTO kv3 VALUES(31, 'c')", "DROP TABLE kv3",
                         "ALTER TABLE kv RENAME TO kv3", "INSERT INTO kv3 VALUES(32, 'd')"],
    "create, rolled back to a savepoint, again": [
        "SAVEPOINT z", "{create:kv3}", "INSERT INTO kv3 VALUES(33, 'e')", "ROLLBACK TO z",
        "RELEASE z", "{create:kv3}", "INSERT INTO kv3 VALUES(34, 'f')"],
}

WRITE_BEFORE = ["INSERT INTO kv VALUES(10, 'before ddl')", "INSERT INTO log VALUES(10)"]
WRITE_IN_SAVEPOINT = ["INSERT INTO kv VALUES(11, 'in savepoint')", "INSERT INTO log VALUES(11)"]
PROBE = ["SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE '%\\_commit' "
         "ESCAPE '\\' ORDER BY name",
         "SELECT count(*) FROM log"]


def shapes(ddl):
    """(name, statements, ending-kind) for each transaction shape and ending."""
    out = []
    out.append(("autocommit", ddl, None))
    for ending in ("COMMIT", "ROLLBACK"):
        out.append(("BEGIN ... " + ending, ["BEGIN"] + WRITE_BEFORE + ddl + [ending], None))
        out.append(("BEGIN, savepoint ... RELEASE, " + ending,
                    ["BEGIN"] + WRITE_BEFORE + ["SAVEPOINT s"] + WRITE_IN_SAVEPOINT + ddl +
                    ["RELEASE s", ending], None))
        out.append(("SAVEPOINT as the transaction ... " +
                    ("RELEASE" if ending == "COMMIT" else "ROLLBACK"),
                    ["SAVEPOINT t"] + WRITE_BEFORE + ddl +
                    (["RELEASE t"] if ending == "COMMIT" else ["ROLLBACK TO t", "RELEASE t"]),
                    None))
    out.append(("BEGIN, ROLLBACK TO a savepoint before the DDL, COMMIT",
                ["BEGIN"] + WRITE_BEFORE + ["SAVEPOINT s"] + WRITE_IN_SAVEPOINT + ddl +
                ["ROLLBACK TO s"] + PROBE + ["RELEASE s", "COMMIT"], None))
    out.append(("nested savepoints, inner rolled back, outer kept",
                ["BEGIN", "SAVEPOINT a"] + WRITE_BEFORE + ["SAVEPOINT b"] + ddl +
                ["ROLLBACK TO b", "SAVEPOINT c"] + ddl + ["RELEASE c", "RELEASE a", "COMMIT"],
                None))
    out.append(("commit fails on a deferred foreign key, fixed, committed",
                ["BEGIN"] + WRITE_BEFORE + ddl + ["INSERT INTO child VALUES(99)", "COMMIT",
                                                  "INSERT INTO parent VALUES(99)", "COMMIT"],
                None))
    out.append(("commit fails on a deferred foreign key, rolled back",
                ["BEGIN"] + WRITE_BEFORE + ddl + ["INSERT INTO child VALUES(99)", "COMMIT",
                                                  "ROLLBACK"], None))
    out.append(("commit busy behind a reader, retried", ["BEGIN"] + WRITE_BEFORE + ddl +
                ["{reader:hold}", "COMMIT", "{reader:release}", "COMMIT"], "busy"))
    out.append(("commit busy behind a reader, rolled back", ["BEGIN"] + WRITE_BEFORE + ddl +
                ["{reader:hold}", "COMMIT", "{reader:release}", "ROLLBACK"], "busy"))
    out.append(("autocommit DDL busy behind a reader", ["{reader:hold}"] + ddl[:1] +
                ["{reader:release}"] + ddl[1:], "busy"))
    return out


class Side:
    """One database running the scenario: mmkv or native. where: "file" (the tables in the main
    database file), "attached" (in an attached database file, the native ones in main: unqualified
    names find them there) or "memory" (an in-memory database, whose mmkv tables are temporary)."""

    def __init__(self, d, kind, journal, where):
        self.kind = kind
        self.where = where
        self.dir = os.path.join(d, kind)
        os.mkdir(self.dir)
        self.path = ":memory:" if where == "memory" else os.path.join(self.dir, "app.db")
        self.prefix = "aux." if where == "attached" else ""
        self.reader = None
        self.open()
        for schema in ("main", "aux") if where == "attached" else ("main",):
            self.db.execute("PRAGMA %s.journal_mode = %s" % (schema, journal))

    def open(self):
        self.db = connect(self.path, timeout=0)
        if self.where == "attached":
            self.db.execute("ATTACH '%s' AS aux" % os.path.join(self.dir, "aux.db"))

    def sql(self, text):
        for name in ("kv", "kv2", "kv3"):
            text = text.replace("{create:%s}" % name, (MMKV if self.kind == "mmkv" else NATIVE)
                                .format(name=self.prefix + name))
        return text

    def run(self, stmt):
        if stmt == "{reader:hold}":
            self.reader = sqlite3.connect(self.path, isolation_level=None, timeout=0)
            self.reader.execute("BEGIN")
            self.reader.execute("SELECT count(*) FROM log").fetchall()
            return ("reader",)
        if stmt == "{reader:release}":
            self.reader.execute("COMMIT")
            self.reader.close()
            self.reader = None
            return ("reader",)
        try:
            rows = self.db.execute(self.sql(stmt)).fetchall()
            return ("ok", sorted(map(repr, rows)) if stmt.startswith("SELECT") else None)
        except sqlite3.Error as e:
            msg = str(e)
            # Errors compare by kind; the words of a table-level error are SQLite's own.
            kind = "no such table" if "no such table" in msg else type(e).__name__
            if "locked" in msg or "busy" in msg.lower():
                kind = "busy"
            if "FOREIGN KEY" in msg:
                kind = "foreign key"
            return ("error", kind)

    def schemas(self):
        return ("main", "aux") if self.where == "attached" else ("main",)

    def state(self):
        out = {}
        for schema in self.schemas():
            tables = [r[0] for r in self.db.execute(
                "SELECT name FROM %s.sqlite_schema WHERE type = 'table' AND name NOT LIKE "
                "'sqlite%%' AND name NOT LIKE '%%\\_commit' ESCAPE '\\' ORDER BY name" % schema)]
            for t in tables:
                out[t] = sorted(map(repr, self.db.execute(
                    'SELECT * FROM %s."%s"' % (schema, t)).fetchall()))
        return out

    def mmkv_tables(self):
        schema = "aux" if self.where == "attached" else "main"
        return sorted(r[0] for r in self.db.execute(
            "SELECT name FROM %s.sqlite_schema WHERE sql LIKE 'CREATE VIRTUAL TABLE%%mmkv%%'"
            % schema))

    def files(self):
        return sorted(f for f in os.listdir(self.dir) if ".mmkv" in f)

    def expected_files(self):
        if self.where == "memory":
            return []
        db = "aux.db" if self.where == "attached" else "app.db"
        out = []
        for t in self.mmkv_tables():
            out += ["%s-%s.mmkv" % (db, t), "%s-%s.mmkv-index" % (db, t)]
        return sorted(out)

    def reopen(self):
        self.db.close()
        self.open()

    def close(self):
        if self.reader:
            self.reader.close()
        self.db.close()


def run_scenario(label, statements, journal, where="file"):
    try:
        scenario(label, statements, journal, where)
    except Exception as e:  # one scenario's failure must not hide the others
        check("%s: runs" % label, False, "%s: %s" % (type(e).__name__, e))


def scenario(label, statements, journal, where):
    with TempDir() as d:
        sides = [Side(d, "native", journal, where), Side(d, "mmkv", journal, where)]
        for stmt in SETUP:
            for s in sides:
                s.run(stmt)
        ok = True
        for i, stmt in enumerate(statements):
            native, mmkv = (s.run(stmt) for s in sides)
            if native != mmkv:
                check("%s: step %d %r" % (label, i, stmt), False,
                      "native %r, mmkv %r" % (native, mmkv))
                ok = False
                break
        for s in sides:
            if s.reader:
                s.run("{reader:release}")
        if ok:
            ok = check_equal("%s: every table as native" % label, sides[1].state(),
                             sides[0].state())
        m = sides[1]
        if ok:
            # What the ended transaction decided is done by the next call into mmkv at the latest
            # (at once where mmkv joined the transaction); reading mmkv_pending is one.
            check_equal("%s: nothing left pending" % label,
                        m.db.execute("SELECT * FROM mmkv_pending").fetchall(), [])
            check_equal("%s: the files are those of the tables that exist" % label, m.files(),
                        m.expected_files())
            for t in m.mmkv_tables():
                try:
                    m.db.execute("INSERT INTO %s(%s) VALUES('integrity-check')" % (t, t))
                except sqlite3.Error as e:
                    check("%s: %s passes integrity-check" % (label, t), False, str(e))
        if where != "memory":
            for s in sides:
                s.reopen()
        if ok and where != "memory":
            check_equal("%s: after a reopen, every table as native" % label, sides[1].state(),
                        sides[0].state())
            check_equal("%s: after a reopen, the files are the tables'" % label, m.files(),
                        m.expected_files())
        for s in sides:
            s.close()


def test_ddl_matrix():
    for where, journals in (("file", ("delete", "wal")), ("attached", ("delete", "wal")),
                            ("memory", ("memory",))):
        for journal in journals:
            for ddl_name, ddl in DDL.items():
                for shape, statements, needs in shapes(ddl):
                    if needs == "busy" and journal != "delete":
                        continue  # only a rollback-journal reader blocks a commit
                    label = "%s/%s/%s/%s" % (where, journal, ddl_name, shape)
                    if CASE_FILTER and CASE_FILTER not in label:
                        continue
                    run_scenario(label, statements, journal, where)


# ---------------------------------------------------------------------------------------------
# schema reloads inside a transaction

RELOADS = {
    "ALTER TABLE ADD COLUMN": ["ALTER TABLE log ADD COLUMN z"],
    "CREATE TABLE": ["CREATE TABLE t2(x)"],
    "CREATE INDEX": ["CREATE INDEX log_n ON log(n)"],
    "DROP TABLE of another": ["DROP TABLE child"],
    "ALTER TABLE RENAME of another": ["ALTER TABLE log RENAME TO log2",
                                      "ALTER TABLE log2 RENAME TO log"],
    "a failed CREATE VIRTUAL TABLE": ["CREATE VIRTUAL TABLE bad USING mmkv(nonsense=1)"],
    "a savepoint rolled back over CREATE TABLE": ["SAVEPOINT a", "CREATE TABLE t2(x)",
                                                  "ROLLBACK TO a", "RELEASE a"],
    "a CREATE VIRTUAL TABLE of another": ["{create:kv3}", "INSERT INTO kv3 VALUES(1, 1)"],
}


def test_schema_reloads():
    for where, journal in (("file", "delete"), ("file", "wal"), ("attached", "wal"),
                           ("memory", "memory")):
        for name, reload in RELOADS.items():
            for ending in ("COMMIT", "ROLLBACK"):
                label = "%s/%s/reload by %s/%s" % (where, journal, name, ending)
                if CASE_FILTER and CASE_FILTER not in label:
                    continue
                statements = (["BEGIN", "INSERT INTO kv VALUES(3, 'three')",
                               "INSERT INTO log VALUES(3)"] + reload +
                              ["SELECT * FROM kv ORDER BY key",
                               "SELECT value FROM kv WHERE key = 3",
                               "INSERT INTO kv VALUES(4, 'four')",
                               "UPDATE kv SET value = 'uno' WHERE key = 1",
                               "SAVEPOINT b", "DELETE FROM kv WHERE key = 2", "ROLLBACK TO b",
                               "RELEASE b",
                               "SELECT * FROM kv ORDER BY key", ending])
                run_scenario(label, statements, journal, where)


def test_reload_does_not_stall():
    """After a schema reload the next write goes on at once, in the same transaction."""
    import time
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        db.execute("CREATE TABLE other(x)")
        db.execute("BEGIN")
        db.execute("INSERT INTO kv VALUES(1, 'a')")
        db.execute("ALTER TABLE other ADD COLUMN z")
        start = time.monotonic()
        db.execute("INSERT INTO kv VALUES(2, 'b')")
        took = time.monotonic() - start
        check("a write after a schema reload does not wait (took %.3fs)" % took, took < 1.0)
        db.execute("ROLLBACK")
        check_equal("and the rollback takes both writes back",
                    db.execute("SELECT count(*) FROM kv").fetchone(), (0,))
        db.close()


def test_ddl_behind_open_select():
    """The issue's own case: DROP or RENAME in autocommit, rollback-journal mode, while another
    connection (of this process, or another process) has a SELECT on kv open: SQLite refuses with
    'database is locked', the table stays, and so do its files; once the reader is done, the DDL
    goes through and the files follow."""
    for ddl, after in (("DROP TABLE kv", []), ("ALTER TABLE kv RENAME TO kv2", ["kv2"])):
        for where in ("this process", "another process"):
            label = "%s behind an open SELECT of %s" % (ddl, where)
            if CASE_FILTER and CASE_FILTER not in label:
                continue
            with TempDir() as d:
                p = os.path.join(d, "app.db")
                db = connect(p, timeout=0)
                db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
                db.executemany("INSERT INTO kv VALUES(?, ?)", [(i, i) for i in range(50)])
                if where == "this process":
                    reader = connect(p, timeout=0)
                    cur = reader.execute("SELECT * FROM kv")
                    cur.fetchone()  # the statement stays open, holding its read lock
                    child = None
                else:
                    import subprocess, sys
                    code = textwrap.dedent('''
                        import os, sqlite3, sys
                        db = sqlite3.connect(%r, isolation_level=None)
                        db.enable_load_extension(True)
                        db.load_extension(os.environ["MMKV_EXTENSION"])
                        cur = db.execute("SELECT * FROM kv")
                        cur.fetchone()
                        print("reading", flush=True)
                        sys.stdin.readline()
                    ''' % p)
                    child = subprocess.Popen([harness.PYTHON, "-c", code], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, text=True,
                                             env=harness.CHILD_ENV)
                    child.stdout.readline()
                try:
                    db.execute(ddl)
                    check("%s: refused while the reader reads" % label, False, "no error")
                except sqlite3.OperationalError as e:
                    check("%s: refused as locked (%s)" % (label, e), "locked" in str(e))
                check_equal("%s: the table and its rows stay" % label,
                            db.execute("SELECT count(*) FROM kv").fetchone(), (50,))
                check_equal("%s: and its files" % label,
                            sorted(f for f in os.listdir(d) if ".mmkv" in f),
                            ["app.db-kv.mmkv", "app.db-kv.mmkv-index"])
                if child:
                    child.communicate("done\n", timeout=30)
                else:
                    cur.close()
                    reader.close()
                db.execute(ddl)
                check_equal("%s: once the reader is done, the files follow" % label,
                            sorted(f for f in os.listdir(d) if ".mmkv" in f),
                            sorted(f for t in after for f in ("app.db-%s.mmkv" % t,
                                                               "app.db-%s.mmkv-index" % t)))
                db.close()


def test_unjoined_transactions():
    """DDL on an attached database in transactions that never write main, where mmkv settles
    from the database instead of joining: the same CREATE rolled back to a savepoint and made
    again, DROP and RENAME rolled back to a savepoint, all inside one transaction."""
    cases = {
        "CREATE rolled back to a savepoint, made again": [
            "BEGIN", "SAVEPOINT z", "{create:kv3}", "INSERT INTO kv3 VALUES(1, 1)",
            "ROLLBACK TO z", "{create:kv3}", "INSERT INTO kv3 VALUES(2, 2)", "COMMIT"],
        "DROP rolled back to a savepoint": [
            "BEGIN", "SAVEPOINT z", "DROP TABLE kv", "ROLLBACK TO z",
            "INSERT INTO kv VALUES(5, 'five')", "COMMIT"],
        "RENAME rolled back to a savepoint, renamed again": [
            "BEGIN", "SAVEPOINT z", "ALTER TABLE kv RENAME TO kv2", "ROLLBACK TO z",
            "ALTER TABLE kv RENAME TO kv3", "INSERT INTO kv3 VALUES(6, 'six')", "COMMIT"],
    }
    for journal in ("delete", "wal"):
        for name, statements in cases.items():
            label = "attached, main not written/%s/%s" % (journal, name)
            if CASE_FILTER and CASE_FILTER not in label:
                continue
            run_scenario(label, statements, journal, "attached")


# ---------------------------------------------------------------------------------------------
# DDL interrupted part-way: all or nothing

INTERRUPTED = {
    "DROP": ("DROP TABLE kv", lambda tables: "kv" not in tables),
    "CREATE": ("CREATE VIRTUAL TABLE kv3 USING mmkv", lambda tables: "kv3" in tables),
    "RENAME": ("ALTER TABLE kv RENAME TO kv2", lambda tables: "kv2" in tables),
}


def test_interrupted_ddl():
    """A progress handler stops the DDL statement after n virtual-machine steps, for every n
    until it completes (SQLite's interrupt, which also stops the SQL mmkv runs inside it): the
    statement then happened whole or not at all, the table that exists reads its rows, and the
    files are those of the tables that exist; then the transaction commits or rolls back."""
    for name, (ddl, happened) in INTERRUPTED.items():
        for shape in ("autocommit", "BEGIN ... COMMIT", "BEGIN ... ROLLBACK"):
            completed = False
            for n in list(range(1, 120, 3)) + list(range(120, 6000, 41)):
                label = "interrupted %s (%s) after %d steps" % (name, shape, n)
                if CASE_FILTER and CASE_FILTER not in label:
                    continue
                with TempDir() as d:
                    p = os.path.join(d, "app.db")
                    db = connect(p)
                    db.execute(MMKV.format(name="kv"))
                    db.execute("INSERT INTO kv VALUES(1, 'one'), (2, 'two')")
                    if shape != "autocommit":
                        db.execute("BEGIN")
                        db.execute("INSERT INTO kv VALUES(3, 'three')")
                    steps = [0]

                    def stop():
                        steps[0] += 1
                        return steps[0] >= n

                    db.set_progress_handler(stop, 1)
                    try:
                        db.execute(ddl)
                        completed = True
                    except sqlite3.Error:
                        pass
                    db.set_progress_handler(None, 1)
                    # An interrupt rolls back the whole transaction it happens in (SQLite's rule).
                    committed = shape == "BEGIN ... COMMIT" and db.in_transaction
                    if db.in_transaction:
                        db.execute("COMMIT" if shape == "BEGIN ... COMMIT" else "ROLLBACK")
                    db.execute("SELECT * FROM mmkv_pending").fetchall()
                    tables = sorted(r[0] for r in db.execute(
                        "SELECT name FROM sqlite_schema WHERE sql LIKE 'CREATE VIRTUAL%'"))
                    rows = 3 if committed else 2
                    ok = True
                    for t in tables:
                        want = 0 if t == "kv3" else rows
                        got = db.execute("SELECT count(*) FROM %s" % t).fetchone()[0]
                        ok = check_equal("%s: %s reads its rows" % (label, t), got, want) and ok
                    files = sorted(f for f in os.listdir(d) if ".mmkv" in f)
                    want = sorted(f for t in tables for f in ("app.db-%s.mmkv" % t,
                                                             "app.db-%s.mmkv-index" % t))
                    ok = check_equal("%s: the files are the tables'" % label, files, want) and ok
                    db.close()
                    db = connect(p)
                    again = sorted(r[0] for r in db.execute(
                        "SELECT name FROM sqlite_schema WHERE sql LIKE 'CREATE VIRTUAL%'"))
                    ok = check_equal("%s: the same after a reopen" % label, again, tables) and ok
                    db.close()
                if completed:
                    break
            check("interrupted %s (%s): some run let the statement complete" % (name, shape),
                  completed or CASE_FILTER)


if __name__ == "__main__":
    harness.main([test_ddl_matrix, test_schema_reloads, test_reload_does_not_stall,
                  test_ddl_behind_open_select, test_unjoined_transactions,
                  test_interrupted_ddl])
