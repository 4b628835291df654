"""Read-only databases and files: reads work, writes are refused with SQLite's read-only error, and
mmkv writes nothing at all (every file keeps its bytes and its mtime).

- mode=ro, immutable=1, PRAGMA query_only, and a read-only attached database; with the index clean
  and current (used from disk, as it is), left in use by a killed process, or missing (then built
  in memory, the file on disk left alone or never made); while another process commits (the
  read-only connection sees its commits);
- a hostile schema whose file= names another database's mmkv file: that file stays untouched;
- database files and directory the user cannot write (run as an unprivileged user): native and
  mmkv tables both readable;
- PRAGMA query_only switched off again: the table takes writes.

Run one case: MMKV_TEST=<test function name>.
"""
import hashlib
import os
import shutil
import sqlite3
import subprocess
import textwrap

import harness
from harness import CHILD_ENV, PYTHON, TempDir, check, check_equal, connect

ROWS = [(i, "value %d" % i) for i in range(200)] + [("text", b"\x00\x01"), (1.5, None)]


def fingerprint(d):
    """mmkv's files. (SQLite's own are SQLite's to touch: a WAL reader maps and may write -shm, and
    the last connection to close checkpoints the WAL into the database, query_only or not.)"""
    out = {}
    for f in sorted(os.listdir(d)):
        p = os.path.join(d, f)
        if os.path.isfile(p) and ".mmkv" in f:
            st = os.stat(p)
            with open(p, "rb") as fh:
                out[f] = (st.st_size, st.st_mtime_ns, hashlib.sha256(fh.read()).hexdigest())
    return out


def make_db(d, journal="wal"):
    p = os.path.join(d, "app.db")
    db = connect(p)
    db.execute("PRAGMA journal_mode = %s" % journal)
    db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
    db.execute("CREATE TABLE native(key PRIMARY KEY, value)")
    db.execute("BEGIN")
    db.executemany("INSERT INTO kv VALUES(?, ?)", ROWS)
    db.executemany("INSERT INTO native VALUES(?, ?)", ROWS)
    db.execute("COMMIT")
    db.execute("DELETE FROM kv WHERE key = 7")
    db.execute("DELETE FROM native WHERE key = 7")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)") if journal == "wal" else None
    db.close()
    return p


def readonly_connect(p, how):
    if how == "mode=ro":
        return connect("file:%s?mode=ro" % p, uri=True)
    if how == "immutable=1":
        return connect("file:%s?immutable=1" % p, uri=True)
    if how == "query_only":
        db = connect(p)
        db.execute("PRAGMA query_only = 1")
        return db
    if how == "attached read-only":
        db = connect(":memory:")
        db.execute("ATTACH 'file:%s?mode=ro' AS a" % p)
        return db
    raise ValueError(how)


def reads(db, prefix):
    kv = prefix + "kv"
    return [
        db.execute("SELECT count(*) FROM %s" % kv).fetchone(),
        db.execute("SELECT value FROM %s WHERE key = 42" % kv).fetchall(),
        db.execute("SELECT value FROM %s WHERE key = 7" % kv).fetchall(),
        sorted(db.execute("SELECT value FROM %s WHERE key IN (1, 'text', 1.5)" % kv).fetchall(),
               key=repr),
        sorted(db.execute("SELECT * FROM %s" % kv).fetchall(), key=repr)[:5],
    ]


EXPECTED = [(len(ROWS) - 1,), [("value 42",)], [],
            sorted([("value 1",), (b"\x00\x01",), (None,)], key=repr),
            sorted([r for r in ROWS if r[0] != 7], key=repr)[:5]]


def index_state(d, state):
    """Leaves the index as asked: 'clean' (as a clean close leaves it), 'missing', or 'in use'
    (marked in use by a process that was killed)."""
    index = os.path.join(d, "app.db-kv.mmkv-index")
    if state == "missing":
        os.remove(index)
    elif state == "in use":
        code = textwrap.dedent('''
            import os, sqlite3
            db = sqlite3.connect(%r, isolation_level=None)
            db.enable_load_extension(True)
            db.load_extension(os.environ["MMKV_EXTENSION"])
            db.execute("INSERT INTO kv VALUES('killed', 1)")
            db.execute("DELETE FROM kv WHERE key = 'killed'")
            os._exit(9)
        ''' % os.path.join(d, "app.db"))
        subprocess.run([PYTHON, "-c", code], env=CHILD_ENV, timeout=30)


def test_readonly_modes():
    for how in ("mode=ro", "immutable=1", "query_only", "attached read-only"):
        for state in ("clean", "in use", "missing"):
            for journal in ("wal", "delete"):
                label = "%s, index %s, %s mode" % (how, state, journal)
                with TempDir() as d:
                    p = make_db(d, journal)
                    index_state(d, state)
                    before = fingerprint(d)
                    db = readonly_connect(p, how)
                    prefix = "a." if how == "attached read-only" else ""
                    check_equal("%s: reads as written" % label, reads(db, prefix), EXPECTED)
                    for stmt in ("INSERT INTO %skv VALUES('new', 1)" % prefix,
                                 "UPDATE %skv SET value = 0 WHERE key = 1" % prefix,
                                 "DELETE FROM %skv WHERE key = 2" % prefix,
                                 "INSERT INTO %skv(kv) VALUES('rebuild-index')" % prefix):
                        try:
                            db.execute(stmt)
                            check("%s: %s refused" % (label, stmt), False, "no error")
                        except sqlite3.Error as e:
                            check("%s: %s refused with SQLite's read-only error" % (label, stmt),
                                  "readonly" in str(e) or "read-only" in str(e), str(e))
                    db.close()
                    after = fingerprint(d)
                    check_equal("%s: no file written, no mtime moved" % label, after, before)


def test_readonly_sees_other_writers():
    """A read-only connection follows another process's commits, with its index in memory (the
    one on disk is left dirty by a killed writer) or on disk (clean)."""
    for state in ("clean", "in use"):
        label = "read-only reader, index %s, another process writing" % state
        with TempDir() as d:
            p = make_db(d, "wal")
            index_state(d, state)
            db = readonly_connect(p, "mode=ro")
            check_equal("%s: first read" % label, db.execute(
                "SELECT count(*) FROM kv").fetchone(), (len(ROWS) - 1,))
            code = textwrap.dedent('''
                import os, sqlite3
                db = sqlite3.connect(%r, isolation_level=None)
                db.enable_load_extension(True)
                db.load_extension(os.environ["MMKV_EXTENSION"])
                for i in range(100):
                    db.execute("INSERT INTO kv VALUES(?, ?)", ("w%%d" %% i, i))
                db.execute("UPDATE kv SET value = 'changed' WHERE key = 42")
                db.close()
            ''' % p)
            r = subprocess.run([PYTHON, "-c", code], env=CHILD_ENV, timeout=60,
                               capture_output=True, text=True)
            check("%s: the writer ran (%s)" % (label, r.stderr.strip()[-200:]), r.returncode == 0)
            check_equal("%s: the reader sees the commits" % label, [
                db.execute("SELECT count(*) FROM kv").fetchone(),
                db.execute("SELECT value FROM kv WHERE key = 42").fetchall(),
                db.execute("SELECT value FROM kv WHERE key = 'w99'").fetchall()],
                [(len(ROWS) + 99,), [("changed",)], [(99,)]])
            db.close()


def test_hostile_file_untouched():
    """A schema whose file= names another database's mmkv file: refused, and the file keeps its
    bytes and times, read-only or not."""
    for readonly in (True, False):
        label = "hostile file= (%s)" % ("read-only" if readonly else "writable")
        with TempDir() as d:
            victim_dir = os.path.join(d, "victim")
            os.mkdir(victim_dir)
            make_db(victim_dir)
            victim_file = os.path.join(victim_dir, "app.db-kv.mmkv")
            hostile = os.path.join(d, "hostile.db")
            h = sqlite3.connect(hostile)
            h.execute("PRAGMA writable_schema = ON")
            h.execute("INSERT INTO sqlite_schema VALUES('table', 'kv', 'kv', 0, "
                      "'CREATE VIRTUAL TABLE kv USING mmkv(file=''%s'')')" % victim_file)
            h.execute("CREATE TABLE kv_commit(owner, state)")
            import struct
            state = struct.pack("<QQQQQQQQ", 2, 0, 4096, 0, 0, 0, 0, 0) + bytes(32)
            h.execute("INSERT INTO kv_commit VALUES(12345, ?)", (state,))
            h.commit()
            h.close()
            before = fingerprint(victim_dir)
            db = readonly_connect(hostile, "mode=ro") if readonly else connect(hostile)
            try:
                db.execute("SELECT * FROM kv").fetchall()
                check("%s: refused" % label, False, "no error")
            except sqlite3.Error as e:
                check("%s: refused, naming the file" % label, victim_file in str(e), str(e))
            db.close()
            check_equal("%s: the other database's files are untouched" % label,
                        fingerprint(victim_dir), before)


def test_unwritable_files():
    """The database, its mmkv files and their directory belong to someone else and are read-only
    to the user (an unprivileged child): native and mmkv tables both read."""
    with TempDir() as d:
        sub = os.path.join(d, "ro")
        os.mkdir(sub)
        p = make_db(sub, "delete")
        index_state(sub, "in use")  # and its index is not current: it is rebuilt in memory
        for f in os.listdir(sub):
            os.chmod(os.path.join(sub, f), 0o444)
        os.chmod(sub, 0o555)
        os.chmod(d, 0o755)
        before = fingerprint(sub)
        code = textwrap.dedent('''
            import os, sqlite3
            db = sqlite3.connect(%r, isolation_level=None)
            db.enable_load_extension(True)
            db.load_extension(os.environ["MMKV_EXTENSION"])
            out = [db.execute("SELECT count(*) FROM native").fetchone()[0],
                   db.execute("SELECT count(*) FROM kv").fetchone()[0],
                   db.execute("SELECT value FROM kv WHERE key = 42").fetchone()[0]]
            try:
                db.execute("INSERT INTO kv VALUES('x', 1)")
                out.append("written")
            except sqlite3.Error as e:
                out.append("refused: " + str(e))
            print(repr(out))
        ''' % p)
        ext = os.environ.get("MMKV_EXTENSION", harness.EXTENSION)
        env = dict(CHILD_ENV, MMKV_EXTENSION=ext)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            PYTHON, "-c", code], env=env, capture_output=True, text=True,
                           timeout=60, cwd="/")
        out = r.stdout.strip()
        check("unwritable files: native and mmkv tables read (%s %s)" % (out, r.stderr[-300:]),
              out.startswith("[%d, %d, 'value 42', 'refused" % (len(ROWS) - 1, len(ROWS) - 1)))
        check("unwritable files: the write is refused as read-only (%s)" % out,
              "readonly" in out or "read-only" in out)
        os.chmod(sub, 0o755)
        check_equal("unwritable files: nothing written", fingerprint(sub), before)


def test_query_only_switched_off():
    with TempDir() as d:
        p = make_db(d)
        db = connect(p)
        db.execute("PRAGMA query_only = 1")
        check_equal("query_only: reads", db.execute("SELECT count(*) FROM kv").fetchone(),
                    (len(ROWS) - 1,))
        db.execute("PRAGMA query_only = 0")
        db.execute("INSERT INTO kv VALUES('after', 1)")
        check_equal("query_only switched off: the table takes writes",
                    db.execute("SELECT value FROM kv WHERE key = 'after'").fetchall(), [(1,)])
        db.close()
        db = connect(p)
        check_equal("query_only switched off: and keeps them",
                    db.execute("SELECT count(*) FROM kv").fetchone(), (len(ROWS),))
        db.execute("INSERT INTO kv(kv) VALUES('integrity-check')")
        db.close()


if __name__ == "__main__":
    harness.main([test_readonly_modes, test_readonly_sees_other_writers, test_hostile_file_untouched,
                  test_unwritable_files, test_query_only_switched_off])
