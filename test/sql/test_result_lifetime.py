"""Values a statement returns stay what they were for as long as SQLite's contract says: until the
statement steps again, is reset or finalized. mmkv hands SQLite a committed record's bytes as they
lie in the mapping, uncopied, and copies only a writer's own records (which a ROLLBACK TO and the
next write can overwrite). Checked through the C API (sqlite3_column_blob pointers), on the very
library this python3's sqlite3 module runs on:

- a committed value's pointer, held while the same connection overwrites the key, deletes it,
  grows the file through new views and commits, and while another connection compacts;
- a value of the transaction's own, held across ROLLBACK TO and a write that reuses its place;
- max(value) over committed and own rows, against a native table.

Run one case: MMKV_TEST=<test function name>.
"""
import ctypes
import os
import sqlite3
import time

import harness
from harness import EXTENSION, TempDir, check, check_equal, connect

SQLITE_ROW = 100
SQLITE_DONE = 101


class CApi:
    """A connection through the C API, with mmkv loaded."""

    def __init__(self, path):
        self.lib = lib = ctypes.CDLL("libsqlite3.so.0")
        lib.sqlite3_libversion.restype = ctypes.c_char_p
        lib.sqlite3_errmsg.restype = ctypes.c_char_p
        lib.sqlite3_column_blob.restype = ctypes.c_void_p
        lib.sqlite3_column_blob.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.sqlite3_column_bytes.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.sqlite3_step.argtypes = [ctypes.c_void_p]
        lib.sqlite3_finalize.argtypes = [ctypes.c_void_p]
        lib.sqlite3_prepare_v2.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                           ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p]
        lib.sqlite3_exec.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p,
                                     ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p)]
        lib.sqlite3_errmsg.argtypes = [ctypes.c_void_p]
        self.same_library = lib.sqlite3_libversion().decode() == sqlite3.sqlite_version
        self.db = ctypes.c_void_p()
        assert lib.sqlite3_open(path.encode(), ctypes.byref(self.db)) == 0
        assert lib.sqlite3_db_config(self.db, 1005, ctypes.c_int(1), None) == 0
        err = ctypes.c_char_p()
        assert lib.sqlite3_load_extension(self.db, EXTENSION.encode(), None, ctypes.byref(err)) == 0

    def execute(self, sql):
        err = ctypes.c_char_p()
        if self.lib.sqlite3_exec(self.db, sql.encode(), None, None, ctypes.byref(err)) != 0:
            raise sqlite3.OperationalError("%s: %s" % (sql, err.value))

    def step_to_row(self, sql):
        stmt = ctypes.c_void_p()
        assert self.lib.sqlite3_prepare_v2(self.db, sql.encode(), -1, ctypes.byref(stmt), None) == 0
        rc = self.lib.sqlite3_step(stmt)
        if rc != SQLITE_ROW:
            raise AssertionError("%s: step gave %d: %s" % (sql, rc, self.lib.sqlite3_errmsg(self.db)))
        return stmt

    def column(self, stmt):
        """The pointer SQLite gives for column 0, and its length."""
        return self.lib.sqlite3_column_blob(stmt, 0), self.lib.sqlite3_column_bytes(stmt, 0)

    def finalize(self, stmt):
        self.lib.sqlite3_finalize(stmt)

    def close(self):
        self.lib.sqlite3_close(self.db)


def read(pointer, length):
    return ctypes.string_at(pointer, length)


def test_committed_value_outlives_writes():
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        db = connect(p)
        db.execute("PRAGMA journal_mode = wal")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        original = bytes(range(256)) * 4
        db.execute("INSERT INTO kv VALUES('held', ?)", (original,))
        db.close()
        c = CApi(p)
        if not check("the C API is the sqlite3 module's library", c.same_library):
            return
        c.execute("BEGIN")
        stmt = c.step_to_row("SELECT value FROM kv WHERE key = 'held'")
        pointer, length = c.column(stmt)
        c.execute("INSERT OR REPLACE INTO kv VALUES('held', zeroblob(1024))")
        c.execute("DELETE FROM kv WHERE key = 'held'")
        c.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) "
                  "INSERT INTO kv SELECT i, randomblob(200) FROM n")  # new views of the file
        check_equal("a committed value's bytes stay while its connection overwrites, deletes and "
                    "grows the table", read(pointer, length), original)
        c.execute("COMMIT")
        other = connect(p)
        other.execute("INSERT INTO kv(kv) VALUES('compact')")
        deadline = time.time() + 30
        while time.time() < deadline and other.execute(
                "SELECT compacting FROM mmkv_stats('kv')").fetchone()[0]:
            time.sleep(0.05)
        time.sleep(0.5)  # and the space given back, where readers allow it
        other.close()
        check_equal("and after the commit, while another connection compacts the table",
                    read(pointer, length), original)
        c.finalize(stmt)
        c.close()


def test_own_value_outlives_rollback_to():
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        db = connect(p)
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        db.close()
        c = CApi(p)
        if not check("the C API is the sqlite3 module's library", c.same_library):
            return
        c.execute("BEGIN; SAVEPOINT a; INSERT INTO kv VALUES('own', x'%s')" % ("ab" * 300))
        stmt = c.step_to_row("SELECT value FROM kv WHERE key = 'own'")
        pointer, length = c.column(stmt)
        c.execute("ROLLBACK TO a; INSERT INTO kv VALUES('other', x'%s')" % ("cd" * 300))
        check_equal("a value of the transaction's own stays what it was after ROLLBACK TO and a "
                    "write over its place", read(pointer, length), b"\xab" * 300)
        c.finalize(stmt)
        c.execute("COMMIT")
        c.close()


def test_max_over_committed_and_own_rows():
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        db = connect(p)
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        db.execute("CREATE TABLE native(key PRIMARY KEY NOT NULL, value) WITHOUT ROWID")
        rows = [(i, "v%05d" % ((i * 7919) % 1000)) for i in range(1000)]
        for t in ("kv", "native"):
            db.executemany("INSERT INTO %s VALUES(?, ?)" % t, rows)
        db.execute("BEGIN")
        for t in ("kv", "native"):
            db.execute("UPDATE %s SET value = 'v99999' WHERE key = 17" % t)
            db.execute("INSERT INTO %s VALUES(5000, 'v00000')" % t)
        got = [db.execute("SELECT max(value), min(value), max(key) FROM %s" % t).fetchone()
               for t in ("kv", "native")]
        check_equal("max() and min() over committed and own rows, as native", got[0], got[1])
        db.execute("ROLLBACK")
        got = [db.execute("SELECT max(value), min(value) FROM %s" % t).fetchone()
               for t in ("kv", "native")]
        check_equal("and after the rollback", got[0], got[1])
        db.close()


if __name__ == "__main__":
    harness.main([test_committed_value_outlives_writes, test_own_value_outlives_rollback_to,
                  test_max_over_committed_and_own_rows])
