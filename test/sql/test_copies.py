"""Copies of a database made with the tools SQLite users have: a copy never writes into, rolls back
or damages the original's files, the original never loses a commit because a copy exists, and a
copy that lacks the data says so on first use, never answering with an empty table.

Copies: cp of the closed database file, the backup API (the shell's .backup), VACUUM INTO, the
shell's .dump reloaded, serialize()/deserialize(); into a file (beside the original and in
another directory) and into :memory:. Tables: a default-named one (its files follow the database's
name, so the copy finds none) and one with an absolute file= (the copy names the original's file:
refused as a copy). A copy made with the data files copied too (cp of every file) has files of its
own and works; so does a database moved with its files.

Run one case: MMKV_TEST=<test function name>.
"""
import hashlib
import os
import shutil
import sqlite3
import subprocess

import harness
from harness import TempDir, check, check_equal, connect


def fingerprint(d):
    """Every mmkv file of the original: name, size, mtime and content digest."""
    out = {}
    for f in sorted(os.listdir(d)):
        if ".mmkv" in f:
            p = os.path.join(d, f)
            st = os.stat(p)
            with open(p, "rb") as fh:
                out[f] = (st.st_size, st.st_mtime_ns, hashlib.sha256(fh.read()).hexdigest())
    return out


def make_original(d):
    p = os.path.join(d, "app.db")
    db = connect(p)
    db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
    db.execute("CREATE VIRTUAL TABLE kv_abs USING mmkv(file='%s')"
               % os.path.join(d, "abs.mmkv"))
    db.execute("CREATE TABLE native(x)")
    for i in range(20):
        db.execute("INSERT INTO kv VALUES(?, ?)", (i, "v%d" % i))
        db.execute("INSERT INTO kv_abs VALUES(?, ?)", (i, "a%d" % i))
        db.execute("INSERT INTO native VALUES(?)", (i,))
    return p, db


def copy_by(method, src_path, src_db, target):
    """Makes a copy of the original at target (a path or ':memory:'); a connection to it."""
    if method == "cp":
        src_db.close()
        shutil.copy(src_path, target)
        return connect(target)
    if method == "backup API":
        dst = connect(target)
        src_db.backup(dst)
        return dst
    if method == "VACUUM INTO":
        src_db.execute("VACUUM INTO ?", (target,))
        return connect(target)
    if method in (".dump reloaded", "iterdump reloaded"):
        if method == ".dump reloaded":
            dump = shell_dump(src_path)
        else:
            dump = "\n".join(src_db.iterdump())
        dst = connect(target)
        dst.executescript(dump)
        if target != ":memory:":
            dst.close()  # the dump wrote the schema itself: a new connection reads it
            dst = connect(target)
        return dst
    if method == "serialize":
        data = src_db.serialize()
        dst = connect(":memory:")
        dst.deserialize(data)
        return dst
    raise ValueError(method)


def shell_dump(path):
    r = subprocess.run(["sqlite3", path, ".load " + harness.EXTENSION, ".dump"],
                       capture_output=True, text=True, timeout=30)
    return r.stdout if r.returncode == 0 else None


def shell_usable():
    """The sqlite3 shell runs only on the SQLite it was built for: not under make test-sqlite."""
    r = subprocess.run(["sqlite3", ":memory:", "SELECT 1"], capture_output=True, text=True,
                       timeout=30)
    return r.returncode == 0 and r.stdout.strip() == "1"


def first_use(db, table):
    try:
        rows = db.execute("SELECT count(*) FROM %s" % table).fetchall()
        return ("rows", rows)
    except sqlite3.Error as e:
        return ("error", str(e))


def test_copies_refuse():
    methods = [("cp", "file"), ("backup API", "file"), ("backup API", "memory"),
               ("VACUUM INTO", "file"), (".dump reloaded", "file"),
               (".dump reloaded", "memory"), ("iterdump reloaded", "file"),
               ("iterdump reloaded", "memory"), ("serialize", "memory")]
    shell = shell_usable()
    check("copies: the sqlite3 shell %s" % ("runs" if shell else
                                            "does not run on this SQLite: its .dump is skipped"),
          True)
    for method, into in methods:
        if method == ".dump reloaded" and not shell:
            continue
        for place in (("beside", "elsewhere") if into == "file" else ("memory",)):
            label = "%s into %s" % (method, place)
            with TempDir() as d:
                orig_dir = os.path.join(d, "orig")
                os.mkdir(orig_dir)
                p, db = make_original(orig_dir)
                db.close()
                # Reading the original changes none of its files, so this is what they must be
                # after everything the copy does.
                before = fingerprint(orig_dir)
                db = connect(p)
                if into == "memory":
                    target = ":memory:"
                elif place == "beside":
                    target = os.path.join(orig_dir, "copy.db")
                else:
                    os.mkdir(os.path.join(d, "other"))
                    target = os.path.join(d, "other", "copy.db")
                try:
                    copy = copy_by(method, p, db, target)
                except sqlite3.Error as e:
                    # Python's iterdump writes CREATE VIRTUAL TABLE (which makes the commit
                    # record itself), then the commit record's own CREATE TABLE, which fails.
                    # The table naming the original's file is refused on the spot.
                    check("%s: the reload fails loudly (%s)" % (label, e),
                          method == "iterdump reloaded" and
                          any(w in str(e) for w in ("kv_commit", "in use by", "belongs to")))
                    db.close()
                    after = fingerprint(orig_dir)
                    check_equal("%s: the original's files are untouched" % label,
                                {f: after.get(f) for f in before}, before)
                    continue
                if method.endswith("dump reloaded") and into == "memory":
                    # SQLite itself does not reload a schema a script wrote with writable_schema
                    # in the same connection (native or not): the tables are not there at all.
                    check_equal("%s: no table answers, empty or not" % label,
                                [first_use(copy, t)[1] for t in ("kv", "kv_abs")],
                                ["no such table: kv", "no such table: kv_abs"])
                    copy.close()
                    db.close()
                    check_equal("%s: the original's files are untouched" % label,
                                fingerprint(orig_dir), before)
                    continue
                kv = first_use(copy, "kv")
                check("%s: the default-named table says its data is missing, never answers "
                      "empty (%r)" % (label, kv),
                      kv[0] == "error" and ("copy" in kv[1] or "missing" in kv[1]) and
                      "mmkv_backup" in kv[1])
                ab = first_use(copy, "kv_abs")
                check("%s: the table naming the original's file is refused as a copy (%r)"
                      % (label, ab), ab[0] == "error" and "copy" in ab[1])
                for stmt in ("INSERT INTO kv_abs VALUES('from the copy', 1)",
                             "DELETE FROM kv_abs", "INSERT INTO kv VALUES('x', 1)"):
                    try:
                        copy.execute(stmt)
                        check("%s: %s is refused" % (label, stmt), False, "no error")
                    except sqlite3.Error:
                        pass
                # DROP TABLE in the copy works, and never deletes the original's files.
                copy.execute("DROP TABLE kv_abs")
                copy.execute("DROP TABLE kv")
                copy.close()
                if method != "cp":
                    db.close()
                check_equal("%s: the original's files are untouched" % label,
                            fingerprint(orig_dir), before)
                db = connect(p)
                check_equal("%s: the original keeps every row" % label,
                            [db.execute("SELECT count(*) FROM %s" % t).fetchone()[0]
                             for t in ("kv", "kv_abs", "native")], [20, 20, 20])
                db.execute("INSERT INTO kv_abs VALUES('after the copy', 1)")
                db.execute("INSERT INTO kv VALUES('after the copy', 1)")
                for t in ("kv", "kv_abs"):
                    db.execute("INSERT INTO %s(%s) VALUES('integrity-check')" % (t, t))
                db.close()
                db = connect(p)
                check_equal("%s: and takes new commits" % label,
                            db.execute("SELECT value FROM kv_abs WHERE key = 'after the copy'")
                            .fetchall(), [(1,)])
                db.close()


def test_copy_with_its_files():
    """cp of the database and its data files: the copy's default-named table has files of its
    own and works; the original is untouched by it. A table naming an absolute file= still
    names the original's file, and is refused."""
    with TempDir() as d:
        orig = os.path.join(d, "orig")
        os.mkdir(orig)
        p, db = make_original(orig)
        db.close()
        other = os.path.join(d, "copy")
        os.mkdir(other)
        for f in os.listdir(orig):
            if f.startswith("app.db"):
                shutil.copy(os.path.join(orig, f), os.path.join(other, f))
        before = fingerprint(orig)
        c = connect(os.path.join(other, "app.db"))
        check_equal("a full copy: its own table reads", c.execute(
            "SELECT count(*) FROM kv").fetchone(), (20,))
        c.execute("INSERT INTO kv VALUES('copy only', 1)")
        ab = first_use(c, "kv_abs")
        check("a full copy: the absolute file= table is refused as a copy (%r)" % (ab,),
              ab[0] == "error" and "copy" in ab[1])
        c.close()
        c = connect(os.path.join(other, "app.db"))
        check_equal("a full copy: its write stays after a reopen",
                    c.execute("SELECT value FROM kv WHERE key = 'copy only'").fetchall(), [(1,)])
        c.close()
        check_equal("a full copy: the original's files are untouched", fingerprint(orig), before)
        db = connect(p)
        check_equal("a full copy: the original does not see the copy's row",
                    db.execute("SELECT count(*) FROM kv WHERE key = 'copy only'").fetchone(),
                    (0,))
        db.close()


def test_moved_database():
    """A database moved with its files (a rename of each) keeps working: its data files follow
    its name, and their home becomes the new path."""
    with TempDir() as d:
        p, db = make_original(d)
        db.close()
        for f in os.listdir(d):
            if f.startswith("app.db"):
                os.rename(os.path.join(d, f), os.path.join(d, "moved" + f[len("app"):]))
        m = connect(os.path.join(d, "moved.db"))
        check_equal("moved: its default-named table reads",
                    m.execute("SELECT count(*) FROM kv").fetchone(), (20,))
        check_equal("moved: its absolute file= table reads (the original is gone)",
                    m.execute("SELECT count(*) FROM kv_abs").fetchone(), (20,))
        m.execute("INSERT INTO kv_abs VALUES('moved', 1)")
        m.close()
        m = connect(os.path.join(d, "moved.db"))
        check_equal("moved: and keeps its writes",
                    m.execute("SELECT count(*) FROM kv_abs").fetchone(), (21,))
        m.close()


def test_copy_after_original_deleted():
    """A copy whose original is gone may take the absolute file= table's file over."""
    with TempDir() as d:
        orig = os.path.join(d, "orig")
        os.mkdir(orig)
        p, db = make_original(orig)
        db.execute("VACUUM INTO ?", (os.path.join(d, "copy.db"),))
        db.close()
        os.remove(p)
        c = connect(os.path.join(d, "copy.db"))
        check_equal("the original deleted: the copy reads the file it names",
                    c.execute("SELECT count(*) FROM kv_abs").fetchone(), (20,))
        c.close()


if __name__ == "__main__":
    harness.main([test_copies_refuse, test_copy_with_its_files, test_moved_database,
                  test_copy_after_original_deleted])
