"""mmkv's CREATE VIRTUAL TABLE arguments: file=, sync=, and every way to get them wrong.

Errors must name the bad argument or value; a refused CREATE must leave neither a table nor a
file behind. Run with Debian's python3: /usr/bin/python3 test/sql/test_args.py
"""
import os
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import TempDir, check, check_equal, connect  # noqa: E402

CASE_TIMEOUT = 30


def create(db, args, table="kv"):
    """Runs CREATE VIRTUAL TABLE; returns the sqlite3.Error raised, or None."""
    sql = "CREATE VIRTUAL TABLE %s USING mmkv%s" % (table, "" if args is None else "(%s)" % args)
    try:
        db.execute(sql)
        return None
    except sqlite3.Error as e:
        return e


def tables(db):
    return [r[0] for r in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]


def tree(d):
    out = []
    for root, dirs, fs in os.walk(d):
        for f in fs:
            out.append(os.path.relpath(os.path.join(root, f), d))
    return sorted(out)


def mmkv_files(d):
    return [f for f in tree(d) if "mmkv" in f]


def clean(d):
    """Removes everything but app.db, so one leftover does not fail the next check too."""
    for f in tree(d):
        if f != "app.db":
            os.remove(os.path.join(d, f))


WORKS_FAILED = "expected the row (1, 'one') back from the table, got another answer"


def works(db, table="kv"):
    """A created table takes a row and gives it back."""
    db.execute('INSERT INTO "%s" VALUES(1, \'one\')' % table)
    return db.execute('SELECT key, value FROM "%s" WHERE key = 1' % table).fetchall() == [
        (1, "one")]


def expect_error(name, args, *needles):
    """CREATE ... USING mmkv(args) fails, naming every needle, leaving no table and no file."""
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        e = create(db, args)
        if e is None:
            check(name, False, "mmkv(%s) was accepted" % args)
        else:
            msg = str(e)
            missing = [n for n in needles if n.lower() not in msg.lower()]
            check(name, not missing, "mmkv(%s): message %r does not name %r" % (args, msg, missing))
        check(name + " (no table, no file left)", tables(db) == [] and mmkv_files(d) == [],
              "tables %r, files %r" % (tables(db), tree(d)))
        db.close()


def expect_ok(name, args, expected_files=None):
    """CREATE ... USING mmkv(args) works; optionally exactly these files appear beside app.db."""
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        e = create(db, args)
        if not check(name, e is None and works(db), "mmkv(%s): %s" % (args, e)):
            db.close()
            return
        if expected_files is not None:
            check_equal(name + " (files)", [f for f in tree(d) if f != "app.db"], expected_files)
        db.close()


# ---------------------------------------------------------------------------------------------


def test_bad_arguments():
    expect_error("unknown argument foo=1 is named", "foo=1", "foo")
    expect_error("unknown argument after a good one is named", "sync=off, bar=2", "bar")
    expect_error("unknown argument FILE2=x is named", "file2=x", "file2")
    expect_error("duplicate sync= is an error naming sync", "sync=full, sync=off", "sync")
    expect_error("duplicate file= is an error naming file", "file=a.mmkv, file=b.mmkv", "file")
    expect_error("same sync= twice is still a duplicate", "sync=off, sync=off", "sync")
    expect_error("malformed 'nonsense' (no '=') is named", "nonsense", "nonsense")
    expect_error("malformed '=x' (no name) is named", "=x", "=x")
    expect_error("malformed 'file=' (empty path) is an error naming file", "file=", "file")
    expect_error("malformed 'file=\"\"' (empty quoted path) is an error naming file", 'file=""',
                 "file")
    expect_error("malformed 'sync=' (empty value) is an error naming sync", "sync=", "sync")
    expect_error("bad sync value is named", "sync=maybe", "maybe")
    expect_error("bad quoted sync value is named", "sync='sometimes'", "sometimes")
    expect_error("sync=1 is not a sync value", "sync=1", "sync")


def test_good_arguments():
    expect_ok("no arguments", None, ["app.db-kv.mmkv", "app.db-kv.mmkv-index"])
    expect_ok("empty argument list mmkv()", "", ["app.db-kv.mmkv", "app.db-kv.mmkv-index"])
    for v in ("full", "normal", "off", "FULL", "Normal", "oFF", "'off'", '"NORMAL"', "'Full'"):
        expect_ok("sync=%s accepted (case-insensitive, quoted or not)" % v, "sync=" + v,
                  ["app.db-kv.mmkv", "app.db-kv.mmkv-index"])
    expect_ok("file= and sync= together", "file=both.mmkv, sync=off",
              ["both.mmkv", "both.mmkv-index"])
    expect_ok("file='single quoted' loses its quotes", "file='q1.mmkv'",
              ["q1.mmkv", "q1.mmkv-index"])
    expect_ok('file="double quoted" loses its quotes', 'file="q2.mmkv"',
              ["q2.mmkv", "q2.mmkv-index"])
    expect_ok("file='a,b.mmkv': a comma inside quotes is part of the value", "file='a,b.mmkv'",
              ["a,b.mmkv", "a,b.mmkv-index"])
    expect_ok("file='with space.mmkv'", "file='with space.mmkv'",
              ["with space.mmkv", "with space.mmkv-index"])
    expect_ok("file='it''s.mmkv': doubled quote is one quote (SQL quoting)", "file='it''s.mmkv'",
              ["it's.mmkv", "it's.mmkv-index"])


def test_relative_and_absolute_paths():
    with TempDir() as d:
        dbdir = os.path.join(d, "dbdir")
        elsewhere = os.path.join(d, "elsewhere")
        os.makedirs(os.path.join(dbdir, "sub"))
        os.mkdir(elsewhere)
        cwd = os.getcwd()
        os.chdir(elsewhere)
        try:
            p = os.path.join(dbdir, "app.db")
            db = connect(p)
            e1 = create(db, "file=rel.mmkv", "t1")
            e2 = create(db, "file='sub/rel2.mmkv'", "t2")
            e3 = create(db, "file='%s'" % os.path.join(d, "abs.mmkv"), "t3")
            check("file= relative path: created", e1 is None and works(db, "t1"), str(e1))
            check("file= relative path resolves beside the database, not the cwd",
                  os.path.exists(os.path.join(dbdir, "rel.mmkv")) and tree(elsewhere) == [],
                  "db dir %r, cwd %r" % (tree(dbdir), tree(elsewhere)))
            check("file= relative path with a subdirectory",
                  e2 is None and works(db, "t2") and os.path.exists(
                      os.path.join(dbdir, "sub", "rel2.mmkv")), "%s; %r" % (e2, tree(dbdir)))
            check("file= absolute path", e3 is None and works(db, "t3")
                  and os.path.exists(os.path.join(d, "abs.mmkv")), "%s; %r" % (e3, tree(d)))
            db.close()
            os.chdir(d)
            db = connect(p)
            got = [db.execute("SELECT value FROM %s WHERE key = 1" % t).fetchall()
                   for t in ("t1", "t2", "t3")]
            check_equal("file= relative paths still resolve after reopen from another cwd",
                        got, [[("one",)]] * 3)
            check_equal("reopen from another cwd created no file there",
                        sorted(f for f in os.listdir(d) if "mmkv" in f),
                        ["abs.mmkv", "abs.mmkv-index"])
            db.close()

            os.chdir(elsewhere)
            db = connect(":memory:")
            e = create(db, "file=mem.mmkv")
            check(":memory: with a relative file= resolves against the cwd",
                  e is None and works(db) and os.path.exists(os.path.join(elsewhere, "mem.mmkv")),
                  "%s; cwd %r" % (e, tree(elsewhere)))
            db.close()

            os.chdir(dbdir)
            db = connect("app.db")  # a relative database path
            e = create(db, "file=rel3.mmkv", "t4")
            check("relative database path: file= resolves beside it",
                  e is None and works(db, "t4") and os.path.exists(
                      os.path.join(dbdir, "rel3.mmkv")), "%s; %r" % (e, tree(dbdir)))
            db.close()
        finally:
            os.chdir(cwd)


def test_missing_directory():
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        e = create(db, "file='nodir/x.mmkv'")
        check("file= in a directory that does not exist is an error",
              isinstance(e, sqlite3.Error), "no error")
        check("file= in a missing directory: message names the path",
              e is not None and "nodir" in str(e), "message %r" % (str(e) if e else None))
        check("file= in a missing directory: no table, no directory created",
              tables(db) == [] and tree(d) == ["app.db"], "tables %r, files %r"
              % (tables(db), tree(d)))
        e = create(db, "file='/nonexistent-mmkv-dir/x.mmkv'")
        check("file= absolute in a missing directory: error naming the path",
              e is not None and "nonexistent-mmkv-dir" in str(e), "error %r" % (e,))
        db.close()


def test_table_named_like_a_column():
    # The hidden column is named after the table, so a table called key or value clashes with
    # a real column. Either an error or a working table is acceptable; a crash is not.
    for name in ("key", "value", "KEY", "Value"):
        with TempDir() as d:
            db = connect(os.path.join(d, "app.db"))
            e = create(db, None, table='"%s"' % name)
            if e is None:
                ok = works(db, name)
                x = db.execute('PRAGMA table_xinfo("%s")' % name).fetchall()
                check("table named %s: works (%r)" % (name, [r[1] for r in x]), ok, WORKS_FAILED)
                print("NOTE: table named %s: accepted, columns %r" % (name, [r[1] for r in x]))
            else:
                check("table named %s: refused with a message" % name, str(e) != "",
                      "empty message")
                check("table named %s: refused cleanly (no table, no file)" % name,
                      tables(db) == [] and mmkv_files(d) == [],
                      "tables %r, files %r" % (tables(db), tree(d)))
                print("NOTE: table named %s: refused: %s" % (name, e))
            sys.stdout.flush()
            db.close()


def test_long_names():
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        name = "n" * 300 + ".mmkv"
        e = create(db, "file='%s'" % name)
        check("file name longer than NAME_MAX is an error",
              isinstance(e, sqlite3.Error), "accepted")
        check("file name longer than NAME_MAX: message names the file or says it is too long",
              e is not None and ("n" * 20 in str(e) or "too long" in str(e).lower()),
              "message %r" % (str(e) if e else None))
        check("file name longer than NAME_MAX: no table, no file left",
              tables(db) == [] and tree(d) == ["app.db"],
              "tables %r, files %r" % (tables(db), tree(d)))

        longpath = "/".join(["p" * 200] * 25) + "/x.mmkv"  # > PATH_MAX
        e = create(db, "file='%s'" % longpath)
        check("path longer than PATH_MAX is an error", isinstance(e, sqlite3.Error), "accepted")

        clean(d)
        # 255 bytes is a legal data file name, but then "<data file>-index" is too long: either
        # the table works or it is refused cleanly.
        name = "m" * 250 + ".mmkv"
        e = create(db, "file='%s'" % name)
        if e is None:
            check("file name of 255 bytes: works", works(db), WORKS_FAILED)
            db.execute("DROP TABLE kv")
        else:
            check("file name of 255 bytes: refused cleanly (no table, no file left)",
                  tables(db) == [] and tree(d) == ["app.db"] and str(e) != "",
                  "error %r, tables %r, files %r" % (str(e), tables(db), tree(d)))
        clean(d)

        # default naming with a long table name: <db>-<table>.mmkv-index gets too long
        for n in (200, 250):
            t = "t" * n
            e = create(db, None, table=t)
            if e is None:
                check("table name of %d chars (default file names): works" % n, works(db, t),
                      WORKS_FAILED)
                db.execute("DROP TABLE %s" % t)
            else:
                check("table name of %d chars: refused cleanly (message, no table, no file)" % n,
                      tables(db) == [] and tree(d) == ["app.db"] and str(e) != "",
                      "error %r, tables %r, files %r" % (str(e), tables(db), tree(d)))
            clean(d)
        db.close()




CASES = [test_bad_arguments, test_good_arguments, test_relative_and_absolute_paths,
         test_missing_directory, test_table_named_like_a_column, test_long_names]

if __name__ == "__main__":
    harness.main([harness.watchdog(c, CASE_TIMEOUT) for c in CASES])
