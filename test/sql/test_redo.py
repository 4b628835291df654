"""The redo row: a small commit keeps its records in the database (the "<table>_commit" row 2) instead
of syncing the data file, and the first open after a power cut writes back what the file lost.

- the row holds exactly the data file's bytes [redo_from, tail) of the committed state, commit after
  commit, and a commit that would not fit syncs and starts afresh; sync=off keeps nothing;
- the records lost from the data file (zeroed, or the file cut short) come back at the next open,
  with the index left clean or left in use by a killed process, in WAL and rollback-journal mode;
  a read-only connection refuses such a file and says why, until a writable one has opened it;
- a table made before the row existed gets it at its first commit; a record that claims more than
  its row can keep is reported damaged; a copy made with mmkv_backup keeps nothing pending.

Run one case: MMKV_TEST=<test function name>.
"""
import os
import sqlite3
import struct
import subprocess
import textwrap

import harness
from harness import CHILD_ENV, PYTHON, TempDir, check, check_equal, check_error, connect

REDO_CAPACITY = 64 << 10
VALUE = "v" * 100


def record(db):
    """The commit record's fields: txid, tail, start, redo_from."""
    state = db.execute("SELECT state FROM kv_commit WHERE rowid = 1").fetchone()[0]
    txid, tail = struct.unpack_from("<QQ", state, 8)
    start, _, redo_from = struct.unpack_from("<QQQ", state, 64)
    return {"txid": txid, "tail": tail, "start": start, "redo_from": redo_from}


def redo_row(db):
    row = db.execute("SELECT state FROM kv_commit WHERE rowid = 2").fetchone()
    return row[0] if row else None


def data_bytes(d, start, end):
    with open(os.path.join(d, "app.db-kv.mmkv"), "rb") as f:
        f.seek(start)
        return f.read(end - start)


def kept_and_file(db, d):
    """What the redo row keeps of the committed state, and the data file's bytes there."""
    r = record(db)
    return redo_row(db)[:r["tail"] - r["redo_from"]], data_bytes(d, r["redo_from"], r["tail"])


def table_with_one_row(d, value="one"):
    """d/app.db with table kv holding key 1, closed; returns the database's path."""
    p = os.path.join(d, "app.db")
    db = connect(p)
    db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
    db.execute("INSERT INTO kv VALUES(1, ?)", (value,))
    db.close()
    return p


def edit_record(p, redo_from, drop_redo_row=False):
    """Rewrites the record's redo_from behind mmkv's back (SQLite alone), and drops the redo row
    if asked: redo_from 0 without the row is a table made before the row existed."""
    raw = sqlite3.connect(p)
    state = bytearray(raw.execute("SELECT state FROM kv_commit WHERE rowid = 1").fetchone()[0])
    struct.pack_into("<Q", state, 80, redo_from(state) if callable(redo_from) else redo_from)
    raw.execute("UPDATE kv_commit SET state = ? WHERE rowid = 1", (bytes(state),))
    if drop_redo_row:
        raw.execute("DELETE FROM kv_commit WHERE rowid = 2")
    raw.commit()
    raw.close()


def test_redo_keeps_exactly_the_unsynced_records():
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        db.execute("PRAGMA journal_mode = wal")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        check_equal("a new table has its redo row, of the documented size",
                    len(redo_row(db) or b""), REDO_CAPACITY)
        resets, ok, last_from = 0, True, 0
        for i in range(1200):
            db.execute("INSERT INTO kv VALUES(?, ?)", (i, VALUE))
            r = record(db)
            if r["redo_from"] == 0:
                resets += 1
                continue
            if r["redo_from"] < last_from:
                ok = check("redo_from never moves back", False, "it did at commit %d" % i)
            last_from = r["redo_from"]
            kept, in_file = kept_and_file(db, d)
            if kept != in_file:
                ok = False
                check("the redo row holds the data file's bytes [redo_from, tail)", False,
                      "commit %d: %d bytes kept from %d differ from the file's"
                      % (i, len(kept), r["redo_from"]))
                break
        if ok:
            check("the redo row holds the data file's bytes [redo_from, tail), 1200 commits", True)
        check("a commit that would not fit syncs and starts afresh (redo_from 0), about every "
              "400 small commits", 1 <= resets <= 6, "%d resets in 1200 commits" % resets)
        db.execute("BEGIN")
        db.executemany("INSERT INTO kv VALUES(?, ?)",
                       [("big %d" % i, VALUE) for i in range(1000)])
        db.execute("COMMIT")
        check_equal("a commit larger than the row syncs instead", record(db)["redo_from"], 0)
        db.close()


def test_sync_off_keeps_nothing():
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(sync=off)")
        for i in range(20):
            db.execute("INSERT INTO kv VALUES(?, ?)", (i, VALUE))
        check_equal("sync=off: no records kept", record(db)["redo_from"], 0)
        db.close()


def write_then_stop(d, journal, how, rows=50, synced_first=False):
    """A child commits rows one per transaction and then exits (cleanly, or killed: the index left
    in use). Returns nothing; the records are in the page cache only as far as mmkv is concerned.
    synced_first: a commit too large to keep comes first (the kept records then begin past it)."""
    code = textwrap.dedent('''
        import os, sqlite3
        db = sqlite3.connect(%r, isolation_level=None)
        db.enable_load_extension(True)
        db.load_extension(os.environ["MMKV_EXTENSION"])
        db.execute("PRAGMA journal_mode = %s")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        db.execute("CREATE TABLE native(key PRIMARY KEY, value)")
        if %r:
            db.execute("BEGIN")
            db.execute("INSERT INTO kv VALUES('synced', zeroblob(70000))")
            db.execute("DELETE FROM kv WHERE key = 'synced'")
            db.execute("COMMIT")
        for i in range(%d):
            db.execute("BEGIN")
            db.execute("INSERT INTO kv VALUES(?, ?)", (i, "value %%d" %% i))
            db.execute("INSERT INTO native VALUES(?, ?)", (i, "value %%d" %% i))
            db.execute("COMMIT")
        if %r == "killed":
            os._exit(9)
        db.close()
    ''' % (os.path.join(d, "app.db"), journal, synced_first, rows, how))
    subprocess.run([PYTHON, "-c", code], env=CHILD_ENV, timeout=60, check=how != "killed")


def lose_kept_records(d, cut):
    """What a power cut can do to records only the database kept: their bytes gone from the data
    file (zeros), or the file cut short where they begin."""
    raw = sqlite3.connect(os.path.join(d, "app.db"))
    state = raw.execute("SELECT state FROM kv_commit WHERE rowid = 1").fetchone()[0]
    raw.close()
    tail = struct.unpack_from("<Q", state, 16)[0]
    redo_from = struct.unpack_from("<Q", state, 80)[0]
    path = os.path.join(d, "app.db-kv.mmkv")
    with open(path, "r+b") as f:
        if cut:
            f.truncate(redo_from)
        else:
            f.seek(redo_from)
            f.write(b"\0" * (tail - redo_from))
    return redo_from, tail


def test_lost_records_come_back():
    for journal in ("wal", "delete"):
        for how in ("closed", "killed"):
            for cut in (False, True):
                label = "%s, %s, %s" % (journal, how, "file cut short" if cut else "bytes zeroed")
                with TempDir() as d:
                    write_then_stop(d, journal, how)
                    redo_from, tail = lose_kept_records(d, cut)
                    check("%s: the records of 50 small commits were kept, not synced" % label,
                          4096 <= redo_from < tail, "redo_from %d, tail %d" % (redo_from, tail))
                    db = connect(os.path.join(d, "app.db"))
                    expected = [(i, "value %d" % i) for i in range(50)]
                    check_equal("%s: every row is back, as the native table has them" % label,
                                db.execute("SELECT key, value FROM kv ORDER BY key").fetchall(),
                                db.execute("SELECT key, value FROM native ORDER BY key").fetchall())
                    check_equal("%s: by key too" % label,
                                [db.execute("SELECT value FROM kv WHERE key = ?", (i,)).fetchone()
                                 for i in (0, 25, 49)],
                                [("value 0",), ("value 25",), ("value 49",)])
                    check_equal("%s: integrity-check passes" % label,
                                db.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
                    db.execute("INSERT INTO kv VALUES('after', 1)")
                    db.close()
                    db = connect(os.path.join(d, "app.db"))
                    check_equal("%s: and the table takes further commits" % label,
                                db.execute("SELECT count(*) FROM kv").fetchone(), (len(expected) + 1,))
                    db.close()


def test_file_cut_before_kept_records_is_damage():
    """Kept records cannot stand in for bytes lost below them: the table reports the file cut
    short, naming it, and the file does not grow to what the record names."""
    with TempDir() as d:
        write_then_stop(d, "wal", "closed", synced_first=True)
        path = os.path.join(d, "app.db-kv.mmkv")
        raw = sqlite3.connect(os.path.join(d, "app.db"))
        state = raw.execute("SELECT state FROM kv_commit WHERE rowid = 1").fetchone()[0]
        raw.close()
        redo_from = struct.unpack_from("<Q", state, 80)[0]
        check("the kept records begin past the large commit", redo_from > 70000,
              "redo_from %d" % redo_from)
        os.truncate(path, redo_from - 200)
        db = connect(os.path.join(d, "app.db"))
        check_error("a data file cut before its kept records: an error naming the file",
                    lambda: db.execute("SELECT count(*) FROM kv").fetchall(), path)
        db.close()
        check("and the file was not grown back", os.path.getsize(path) == redo_from - 200,
              "size %d, cut to %d" % (os.path.getsize(path), redo_from - 200))


def test_backup_after_lost_records():
    """mmkv_backup as the first thing after a power cut took kept records: its own open of the
    source writes them back, and the copy holds every committed row."""
    with TempDir() as d:
        write_then_stop(d, "wal", "closed")
        lose_kept_records(d, False)
        db = connect(os.path.join(d, "app.db"))
        copy = os.path.join(d, "copy.db")
        db.execute("SELECT mmkv_backup(?)", (copy,)).fetchall()
        expected = [(i, "value %d" % i) for i in range(50)]
        c = connect(copy)
        check_equal("the copy holds every committed row",
                    c.execute("SELECT key, value FROM kv ORDER BY key").fetchall(), expected)
        c.close()
        check_equal("and so does the source", db.execute(
            "SELECT key, value FROM kv ORDER BY key").fetchall(), expected)
        db.close()


def test_readonly_refuses_lost_records():
    with TempDir() as d:
        write_then_stop(d, "wal", "closed")
        lose_kept_records(d, False)
        ro = connect("file:%s?mode=ro" % os.path.join(d, "app.db"), uri=True)
        check_error("read-only: a file that lost kept records needs a writable open first",
                    lambda: ro.execute("SELECT count(*) FROM kv").fetchall(),
                    "open it once from a connection that can write it")
        ro.close()
        db = connect(os.path.join(d, "app.db"))
        check_equal("a writable open writes them back", db.execute("SELECT count(*) FROM kv").fetchone(),
                    (50,))
        db.close()
        ro = connect("file:%s?mode=ro" % os.path.join(d, "app.db"), uri=True)
        check_equal("read-only: then reads", ro.execute("SELECT count(*) FROM kv").fetchone(), (50,))
        ro.close()


def test_table_without_redo_row_gets_one():
    with TempDir() as d:
        p = table_with_one_row(d)
        edit_record(p, 0, drop_redo_row=True)
        db = connect(p)
        check_equal("a table without the row still reads", db.execute(
            "SELECT value FROM kv WHERE key = 1").fetchall(), [("one",)])
        before = db.total_changes
        db.execute("INSERT INTO kv VALUES(2, 'two')")
        check_equal("its first small commit adds the row (one change more, once)",
                    (db.total_changes - before, len(redo_row(db) or b"")), (2, REDO_CAPACITY))
        before = db.total_changes
        db.execute("INSERT INTO kv VALUES(3, 'three')")
        check_equal("later commits change nothing but the user's rows", db.total_changes - before, 1)
        kept, in_file = kept_and_file(db, d)
        check_equal("and keep their records", kept, in_file)
        db.close()


def test_two_connections_add_the_redo_row_once():
    """A connection that saw no redo row, committing after another made it and kept records
    there, keeps its own after them and loses none of the other's."""
    with TempDir() as d:
        p = table_with_one_row(d)
        edit_record(p, 0, drop_redo_row=True)
        a, b = connect(p), connect(p)
        a.execute("SELECT count(*) FROM kv").fetchall()  # a has seen the table without the row
        for i in range(2, 5):
            b.execute("INSERT INTO kv VALUES(?, ?)", (i, VALUE))
        a.execute("INSERT INTO kv VALUES(100, ?)", (VALUE,))
        kept, in_file = kept_and_file(a, d)
        check_equal("the records of both connections' commits are kept, in order", kept, in_file)
        a.close()
        b.close()


def test_record_claiming_too_much_is_damaged():
    with TempDir() as d:
        p = table_with_one_row(d)
        edit_record(p, lambda state: struct.unpack_from("<Q", state, 16)[0] + 64)  # past the tail
        db = connect(p)
        check_error("a record keeping records past its tail is reported damaged",
                    lambda: db.execute("SELECT count(*) FROM kv").fetchall(),
                    "commit record \"kv_commit\" is damaged")
        db.close()


def test_backup_keeps_nothing_pending():
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        db = connect(p)
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        for i in range(30):
            db.execute("INSERT INTO kv VALUES(?, ?)", (i, VALUE))
        check("records are pending before the backup", record(db)["redo_from"] != 0)
        copy = os.path.join(d, "copy.db")
        db.execute("SELECT mmkv_backup(?)", (copy,)).fetchall()
        db.close()
        c = connect(copy)
        check_equal("the copy keeps no records pending (its data file holds them, synced)",
                    record(c)["redo_from"], 0)
        check_equal("the copy reads", c.execute("SELECT count(*) FROM kv").fetchone(), (30,))
        c.execute("INSERT INTO kv VALUES('after', 1)")
        check("and keeps its own commits' records", record(c)["redo_from"] != 0)
        c.close()


if __name__ == "__main__":
    harness.main([test_redo_keeps_exactly_the_unsynced_records, test_sync_off_keeps_nothing,
                  test_lost_records_come_back, test_file_cut_before_kept_records_is_damage,
                  test_readonly_refuses_lost_records,
                  test_table_without_redo_row_gets_one, test_two_connections_add_the_redo_row_once,
                  test_record_claiming_too_much_is_damaged,
                  test_backup_keeps_nothing_pending, test_backup_after_lost_records])
