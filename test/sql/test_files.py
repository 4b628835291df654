"""Files that belong to someone else: SQLite's own files, another table's data file, and the files
of a database that is gone.

- file= naming the database, its -journal, -wal or -shm (in rollback-journal and WAL mode, given
  as an absolute or a relative path), or the database of another connection of the process: the
  CREATE is refused with a message that says what the file is, the file is left as it was, and
  no lock SQLite holds is dropped (another process still cannot write while this process's
  connection holds its write lock, and that connection's commit stands).
- Two tables naming one data file, in one database, in two databases of one process, across
  processes, with the first table empty or not, connected or not: the second CREATE is refused,
  naming the file and its user, and the first table loses nothing.
- A database deleted on its own and made anew at the same path (as sqlitedict's flag='n' does):
  a new table at the default path goes ahead, and the old files are set aside under a name that
  says so, never deleted.

Run one case: MMKV_TEST=<test function name>.
"""
import os
import sqlite3
import subprocess
import textwrap

import harness
from harness import CHILD_ENV, PYTHON, TempDir, check, check_equal, check_error, connect


def run_child(code, timeout=30):
    """Runs python code in a child process with mmkv's path in MMKV_EXTENSION; its stdout."""
    prelude = textwrap.dedent('''
        import os, sqlite3, sys
        def connect(path, **kw):
            kw.setdefault("isolation_level", None)
            db = sqlite3.connect(path, **kw)
            db.enable_load_extension(True)
            db.load_extension(os.environ["MMKV_EXTENSION"])
            return db
    ''')
    r = subprocess.run([PYTHON, "-c", prelude + textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=timeout, env=CHILD_ENV)
    return r.stdout.strip() + (("\n" + r.stderr.strip()) if r.returncode else "")


def stat_of(path):
    """Size, mtime and a digest of the file, read by a child process: opening and closing a file
    here would drop this process's POSIX locks on it, the very thing under test."""
    st = os.stat(path)
    digest = run_child('''
        import hashlib
        print(hashlib.sha256(open(%r, "rb").read()).hexdigest())
    ''' % path)
    return (st.st_size, st.st_mtime_ns, digest)


def other_process_can_write(path):
    """Whether another process can take the database's write lock right now."""
    out = run_child('''
        db = sqlite3.connect(%r, isolation_level=None, timeout=0)
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES('intruder')")
            db.execute("COMMIT")
            print("wrote")
        except sqlite3.OperationalError as e:
            print("blocked")
    ''' % path)
    return out == "wrote"


COMPANIONS = [("", "the database"), ("-journal", "the rollback journal"),
              ("-wal", "the write-ahead log"), ("-shm", "the shared-memory file")]


def test_sqlite_files_refused():
    """The connection's own database files, while it holds its write lock."""
    for journal in ("delete", "wal"):
        for suffix, what in COMPANIONS:
            for relative in (False, True):
                label = "%s mode, file= its own database%s (%s)" % (
                    journal, suffix or " itself", "relative" if relative else "absolute")
                with TempDir() as d:
                    p = os.path.join(d, "app.db")
                    db = connect(p)
                    db.execute("PRAGMA journal_mode = %s" % journal)
                    db.execute("CREATE TABLE t(x)")
                    db.execute("INSERT INTO t VALUES('committed before')")
                    db.execute("BEGIN IMMEDIATE")
                    db.execute("INSERT INTO t VALUES('in the transaction')")
                    target = p + suffix
                    existed = os.path.exists(target)
                    before = stat_of(target) if existed else None
                    name = os.path.basename(target) if relative else target
                    check_error("%s: CREATE refused, saying what the file is" % label,
                                lambda: db.execute(
                                    "CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % name),
                                what)
                    if existed and suffix != "-journal":
                        # (The journal takes the pages SQLite's own statement wrote before
                        # mmkv refused it, as for any failed statement in a transaction.)
                        check_equal("%s: the file is left as it was" % label, stat_of(target),
                                    before)
                    check("%s: no lock of SQLite's was dropped: another process still "
                          "cannot write" % label, not other_process_can_write(p))
                    db.execute("COMMIT")
                    check_equal("%s: the transaction commits" % label,
                                db.execute("SELECT count(*) FROM t").fetchone(), (2,))
                    check("%s: and another process can write after it" % label,
                          other_process_can_write(p))
                    db.close()


def test_other_connections_files_refused():
    """Another connection of this process holds the lock; this one names its files."""
    for journal in ("delete", "wal"):
        for suffix, what in COMPANIONS:
            label = "%s mode, file= another connection's database%s" % (journal,
                                                                      suffix or " itself")
            with TempDir() as d:
                p = os.path.join(d, "app.db")
                writer = sqlite3.connect(p, isolation_level=None)
                writer.execute("PRAGMA journal_mode = %s" % journal)
                writer.execute("CREATE TABLE t(x)")
                writer.execute("INSERT INTO t VALUES('committed before')")
                writer.execute("BEGIN IMMEDIATE")
                writer.execute("INSERT INTO t VALUES('in the writer''s transaction')")
                target = p + suffix
                existed = os.path.exists(target)
                before = stat_of(target) if existed else None
                db = connect(os.path.join(d, "other.db"))
                check_error("%s: CREATE refused" % label, lambda: db.execute(
                    "CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % target), "mmkv: file '")
                if existed:
                    check_equal("%s: the file is left as it was" % label, stat_of(target),
                                before)
                check("%s: the writer's lock still holds" % label,
                      not other_process_can_write(p))
                writer.execute("COMMIT")
                check_equal("%s: the writer's commit stands" % label,
                            writer.execute("SELECT count(*) FROM t").fetchone(), (2,))
                db.close()
                writer.close()


def test_another_connections_database_refused():
    """The database of another connection of this process, not attached to this one: its locks
    are seen by device and inode, and the file is never opened."""
    with TempDir() as d:
        other = os.path.join(d, "other.db")
        o = sqlite3.connect(other, isolation_level=None)
        o.execute("CREATE TABLE t(x)")
        o.execute("BEGIN IMMEDIATE")
        o.execute("INSERT INTO t VALUES(1)")
        before = stat_of(other)
        db = connect(os.path.join(d, "app.db"))
        check_error("another connection's locked database as file=: refused",
                    lambda: db.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % other),
                    "locked by this process")
        check_equal("another connection's database: left as it was", stat_of(other), before)
        check("another connection's database: its write lock still holds",
              not other_process_can_write(other))
        o.execute("COMMIT")
        # Without a lock held, it is opened, read, and refused as what it is.
        check_error("another connection's idle database as file=: refused as not mmkv's",
                    lambda: db.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % other),
                    "not an mmkv data file")
        check_equal("the refused CREATE left no table",
                    db.execute("SELECT count(*) FROM sqlite_schema").fetchone(), (0,))
        o.close()
        db.close()


def test_two_tables_one_file_same_database():
    for rows in (0, 3):
        for reopen in (False, True):
            label = "one database, first table %s, %s" % (
                "empty" if not rows else "with rows", "reopened" if reopen else "connected")
            with TempDir() as d:
                p = os.path.join(d, "app.db")
                shared = os.path.join(d, "shared.mmkv")
                db = connect(p)
                db.execute("CREATE VIRTUAL TABLE t1 USING mmkv(file='%s')" % shared)
                for i in range(rows):
                    db.execute("INSERT INTO t1 VALUES(?, ?)", (i, "v%d" % i))
                if reopen:
                    db.close()
                    db = connect(p)
                check_error("%s: a second table on the same file is refused, naming the first"
                            % label, lambda: db.execute(
                                "CREATE VIRTUAL TABLE t2 USING mmkv(file='%s')" % shared), "t1")
                db.execute("INSERT INTO t1 VALUES('after', 'refusal')")
                check_equal("%s: the first table loses nothing" % label,
                            db.execute("SELECT count(*) FROM t1").fetchone(), (rows + 1,))
                db.close()
                db = connect(p)
                check_equal("%s: nor after a reopen" % label,
                            db.execute("SELECT count(*) FROM t1").fetchone(), (rows + 1,))
                db.close()


def test_two_tables_one_file_two_databases():
    for rows in (0, 3):
        for first_open in (True, False):
            label = "two databases of one process, first %s, %s" % (
                "empty" if not rows else "with rows", "open" if first_open else "closed")
            with TempDir() as d:
                shared = os.path.join(d, "shared.mmkv")
                a = connect(os.path.join(d, "a.db"))
                a.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % shared)
                for i in range(rows):
                    a.execute("INSERT INTO kv VALUES(?, ?)", (i, "v%d" % i))
                if not first_open:
                    a.close()
                b = connect(os.path.join(d, "b.db"))
                check_error("%s: refused, naming the file" % label, lambda: b.execute(
                    "CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % shared), shared)
                if first_open:
                    a.execute("INSERT INTO kv VALUES('after', 'refusal')")
                else:
                    a = connect(os.path.join(d, "a.db"))
                    a.execute("INSERT INTO kv VALUES('after', 'refusal')")
                check_equal("%s: the first table loses nothing" % label,
                            a.execute("SELECT count(*) FROM kv").fetchone(), (rows + 1,))
                a.close()
                b.close()


def test_two_tables_one_file_two_processes():
    for rows in (0, 3):
        label = "two processes, first %s" % ("empty" if not rows else "with rows")
        with TempDir() as d:
            shared = os.path.join(d, "shared.mmkv")
            a = connect(os.path.join(d, "a.db"))
            a.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % shared)
            for i in range(rows):
                a.execute("INSERT INTO kv VALUES(?, ?)", (i, "v%d" % i))
            code = '''
                b = connect(%r)
                try:
                    b.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')")
                    print("created")
                except sqlite3.Error as e:
                    print("refused:", e)
            ''' % (os.path.join(d, "b.db"), shared)
            out = run_child(code)
            check("%s, first open: refused as in use by another process (%s)" % (label, out),
                  out.startswith("refused") and "another process" in out)
            a.close()
            out = run_child(code)
            check("%s, first closed: refused, naming its database (%s)" % (label, out),
                  out.startswith("refused") and "a.db" in out)
            a = connect(os.path.join(d, "a.db"))
            check_equal("%s: the first table loses nothing" % label,
                        a.execute("SELECT count(*) FROM kv").fetchone(), (rows,))
            a.close()


def test_database_made_anew():
    """sqlitedict's flag='n': the database file alone is deleted, and a new one made in its
    place takes the default path again; the old files are set aside, never deleted."""
    for rows in (0, 5):
        label = "a database deleted and made anew (old table %s)" % (
            "empty" if not rows else "with rows")
        with TempDir() as d:
            p = os.path.join(d, "app.db")
            db = connect(p)
            db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
            for i in range(rows):
                db.execute("INSERT INTO kv VALUES(?, ?)", (i, "old%d" % i))
            db.close()
            os.remove(p)
            db = connect(p)
            db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
            check_equal("%s: the new table starts empty" % label,
                        db.execute("SELECT count(*) FROM kv").fetchone(), (0,))
            db.execute("INSERT INTO kv VALUES('new', 1)")
            files = sorted(f for f in os.listdir(d) if ".mmkv" in f)
            aside = [f for f in files if "-orphan-" in f and not f.endswith("-index")]
            if rows:
                check("%s: the old data file is set aside under an orphan name (%s)"
                      % (label, files), len(aside) == 1)
                if aside:
                    # The set-aside file still holds the old rows, readable by anyone who wants
                    # them (from an in-memory database, which does not own it).
                    out = run_child('''
                        import struct
                        with open(%r, "rb") as f:
                            print("mmkv" if f.read(16) == b"mmkv data file\\0\\0" else "other")
                    ''' % os.path.join(d, aside[0]))
                    check_equal("%s: and it is the old data file" % label, out, "mmkv")
            else:
                check("%s: an old file with no commit is simply replaced (%s)" % (label, files),
                      not aside)
            db.close()
            db = connect(p)
            check_equal("%s: the new table's row after a reopen" % label,
                        db.execute("SELECT key, value FROM kv").fetchall(), [("new", 1)])
            db.close()


def test_shared_file_lives_while_shared():
    """In-memory databases sharing a file: one's DROP or rolled-back CREATE never deletes the file
    another still uses; the last one's DROP does."""
    with TempDir() as d:
        f = os.path.join(d, "shared.mmkv")
        a = connect(":memory:")
        a.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % f)
        a.execute("INSERT INTO kv VALUES(1, 'one')")
        b = connect(":memory:")
        b.execute("BEGIN")
        b.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % f)
        b.execute("ROLLBACK")
        check("shared file: a rolled-back CREATE over it leaves it", os.path.exists(f))
        check_equal("shared file: the first still reads",
                    a.execute("SELECT count(*) FROM kv").fetchone(), (1,))
        b.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % f)
        a.execute("DROP TABLE kv")
        check("shared file: one database's DROP leaves it while another uses it",
              os.path.exists(f))
        check_equal("shared file: the other still reads",
                    b.execute("SELECT count(*) FROM kv").fetchone(), (1,))
        b.execute("DROP TABLE kv")
        check("shared file: the last one's DROP deletes it", not os.path.exists(f))
        a.close()
        b.close()


def test_orphan_of_this_database():
    """A data file at the default path that no table of this database records (left by a
    crash between a DROP's commit and the deletion, or by a CREATE that never committed) is
    set aside by the next CREATE there; one that a table does record is refused."""
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        db = connect(p)
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        db.execute("INSERT INTO kv VALUES(1, 'one')")
        db.execute("CREATE VIRTUAL TABLE keep USING mmkv")
        db.close()
        # The database forgets kv (as if its DROP committed and the process died before the
        # files went).
        import shutil
        shutil.copy(os.path.join(d, "app.db-kv.mmkv"), os.path.join(d, "saved"))
        db = connect(p)
        db.execute("DROP TABLE kv")
        db.close()
        shutil.copy(os.path.join(d, "saved"), os.path.join(d, "app.db-kv.mmkv"))
        db = connect(p)
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        check_equal("an orphan of this database: the new table starts empty",
                    db.execute("SELECT count(*) FROM kv").fetchone(), (0,))
        check("an orphan of this database: set aside, not deleted",
              any("-orphan-" in f for f in os.listdir(d)))
        check_error("a file a table of this database records: refused, naming the table",
                    lambda: db.execute("CREATE VIRTUAL TABLE other USING mmkv(file='%s')"
                                       % os.path.join(d, "app.db-keep.mmkv")), "keep")
        db.close()


if __name__ == "__main__":
    harness.main([test_sqlite_files_refused, test_other_connections_files_refused,
                  test_another_connections_database_refused,
                  test_two_tables_one_file_same_database, test_two_tables_one_file_two_databases,
                  test_two_tables_one_file_two_processes, test_database_made_anew,
                  test_shared_file_lives_while_shared,
                  test_orphan_of_this_database])
