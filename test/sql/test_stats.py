"""mmkv_stats(): every column against a truth counted independently.

The counts are checked against the rows (SELECT), and against the bytes and records the test
itself wrote; the file columns against os.stat; the index columns against the index file read
here, slot by slot, with mmkv's key hash (ext/keyhash.c) computed in Python. Run with Debian's
python3: /usr/bin/python3 test/sql/test_stats.py
"""
import os
import re
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import TempDir, check, check_equal, check_error, connect  # noqa: E402

CASE_TIMEOUT = 60
COMPACTION_WAIT_SECONDS = 20

# ext/format.h
DATA_START = 4096
RECORD_HEADER_BYTES = 32
RECORD_ALIGN = 8
MIN_SLOTS = 1024
SLOT_OFFSET_BITS = 40
SLOT_OFFSET_MASK = (1 << SLOT_OFFSET_BITS) - 1
SLOT_MOVED = 2
SECOND_SLOT = 1 << 63
# mmkv_index_header: geometry_seq at 64, then table_offset, table_slots, old_offset, old_slots
INDEX_GEOMETRY_AT = 64
KEY_INTEGER, KEY_FLOAT, KEY_TEXT, KEY_BLOB = 1, 2, 3, 4

COLUMNS = ["live_count", "live_bytes", "garbage_bytes", "records", "txid", "log_start",
           "log_tail", "data_file_bytes", "data_file_size", "index_file_bytes",
           "index_file_size", "index_slots", "index_draining_slots", "index_entries",
           "load_factor", "max_probe", "sync", "compactions", "compacting", "compact_until", "auto_compacting"]


def stats(db, *args):
    """The row of mmkv_stats(args...) as a dict of its visible columns."""
    cur = db.execute("SELECT * FROM mmkv_stats(%s)" % ", ".join("?" * len(args)), args)
    rows = cur.fetchall()
    if len(rows) != 1:
        raise AssertionError("mmkv_stats returned %d rows: %r" % (len(rows), rows))
    return dict(zip([d[0] for d in cur.description], rows[0]))


# ---- what the rows take in the log -----------------------------------------------------------


def datum_bytes(v, text_codec="utf-8"):
    """Bytes of a key or value in a record: 8 for numbers, none for NULL, text in the file's
    encoding."""
    if v is None:
        return 0
    if isinstance(v, (int, float)):
        return 8
    if isinstance(v, str):
        return len(v.encode(text_codec, "surrogatepass"))
    return len(v)


def record_size(key, value, text_codec="utf-8"):
    n = RECORD_HEADER_BYTES + datum_bytes(key, text_codec) + datum_bytes(value, text_codec)
    return (n + RECORD_ALIGN - 1) // RECORD_ALIGN * RECORD_ALIGN


def tombstone_size(key, text_codec="utf-8"):
    return record_size(key, None, text_codec)


def rows_bytes(db, table, text_codec="utf-8"):
    return sum(record_size(k, v, text_codec)
               for k, v in db.execute('SELECT key, value FROM %s' % table))


class Log:
    """What the test wrote through one table, counted as it writes: records and their bytes."""

    def __init__(self, db, table="kv", codec="utf-8"):
        self.db, self.table, self.codec = db, table, codec
        self.records = 0
        self.bytes = 0

    def put(self, key, value):
        self.db.execute("INSERT OR REPLACE INTO %s VALUES(?, ?)" % self.table, (key, value))
        self.records += 1
        self.bytes += record_size(key, value, self.codec)

    def delete(self, key):
        found = self.db.execute("DELETE FROM %s WHERE key = ?" % self.table, (key,)).rowcount
        if found:
            self.records += 1
            self.bytes += tombstone_size(key, self.codec)


# ---- mmkv's key hash (ext/keyhash.c), for the index's probe distances -------------------------

M64 = (1 << 64) - 1
SEED_NUMBER = 0x9e3779b97f4a7c15
SEED_REAL = 0xc2b2ae3d27d4eb4f
SEED_TEXT = 0x165667b19e3779f9
SEED_BLOB = 0x27d4eb2f165667c5
MIX_MULTIPLIER = 0xff51afd7ed558ccd
TWO_POW_63 = 2.0 ** 63


def mix64(x):
    x ^= x >> 33
    x = (x * MIX_MULTIPLIER) & M64
    x ^= x >> 33
    x = (x * 0xc4ceb9fe1a85ec53) & M64
    x ^= x >> 33
    return x


def hash_bytes(b, seed):
    h = seed ^ ((len(b) * MIX_MULTIPLIER) & M64)
    whole = len(b) // 8 * 8
    for p in range(0, whole, 8):
        h = ((h ^ mix64(int.from_bytes(b[p:p + 8], "little"))) * SEED_NUMBER) & M64
        h ^= h >> 29
    rest = len(b) - whole
    if rest:
        word = int.from_bytes(b[whole:], "little") ^ (rest << 56)
        h = ((h ^ mix64(word)) * SEED_NUMBER) & M64
    return mix64(h)


def hash_integer(i):
    return mix64((i & M64) ^ SEED_NUMBER)


def key_hash(key_type, raw):
    if key_type == KEY_INTEGER:
        h = hash_integer(struct.unpack("<q", raw)[0])
    elif key_type == KEY_FLOAT:
        r = struct.unpack("<d", raw)[0]
        if -TWO_POW_63 <= r < TWO_POW_63 and float(int(r)) == r:
            h = hash_integer(int(r))
        else:
            h = mix64(struct.unpack("<Q", raw)[0] ^ SEED_REAL)
    elif key_type == KEY_TEXT:
        h = hash_bytes(raw, SEED_TEXT)
    else:
        h = hash_bytes(raw, SEED_BLOB)
    return h & ~SECOND_SLOT


SQL_SPACE = " \t\n\v\f\r"
NUMERIC_LITERAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")


def second_slot_hash(raw):
    """The hash of a UTF-8 TEXT key's second slot (it reads as a number), or None."""
    literal = raw.decode("utf-8", "replace").strip(SQL_SPACE)
    if not NUMERIC_LITERAL.match(literal):
        return None
    if re.fullmatch(r"[+-]?\d+", literal) and -2 ** 63 <= int(literal) < 2 ** 63:
        h = hash_integer(int(literal))
    else:
        h = key_hash(KEY_FLOAT, struct.pack("<d", float(literal)))
    return h | SECOND_SLOT


def index_geometry(data_path):
    """(table_offset, table_slots, old_offset, old_slots) from the index file's header."""
    with open(data_path + "-index", "rb") as f:
        header = f.read(INDEX_GEOMETRY_AT + 40)
    return struct.unpack_from("<4Q", header, INDEX_GEOMETRY_AT + 8)


def index_truth(data_path):
    """The index's current table read from its file: slots, draining slots, entries, second slots
    among them, and the longest probe (as mmkv_stats counts it)."""
    with open(data_path + "-index", "rb") as f:
        index = f.read()
    with open(data_path, "rb") as f:
        log = f.read()
    table_offset, slots, old_offset, old_slots = index_geometry(data_path)
    entries = seconds = max_probe = 0
    for i in range(slots):
        slot = struct.unpack_from("<Q", index, table_offset + 8 * i)[0]
        if slot <= SLOT_MOVED:
            continue
        entries += 1
        at = (slot & SLOT_OFFSET_MASK) << 3
        key_type, _, _, _, key_len = struct.unpack_from("<BBBBI", log, at + 4)
        raw = log[at + RECORD_HEADER_BYTES:at + RECORD_HEADER_BYTES + key_len]
        if slot & SECOND_SLOT:
            seconds += 1
            h = second_slot_hash(raw)
        else:
            h = key_hash(key_type, raw)
        max_probe = max(max_probe, ((i - (h & (slots - 1))) & (slots - 1)) + 1)
    return {"index_slots": slots, "index_draining_slots": old_slots if old_offset else 0,
            "index_entries": entries, "seconds": seconds, "max_probe": max_probe}


def check_index(name, s, data_path):
    """The index columns of row s against the index file of the table at data_path."""
    truth = index_truth(data_path)
    for column in ("index_slots", "index_draining_slots", "index_entries", "max_probe"):
        check_equal("%s: %s as the index file holds it" % (name, column), s[column],
                    truth[column])
    slots = s["index_slots"]
    check("%s: index_slots is a power of two, at least %d" % (name, MIN_SLOTS),
          isinstance(slots, int) and slots >= MIN_SLOTS and slots & (slots - 1) == 0,
          "got %r" % slots)
    expected = truth["index_entries"] / truth["index_slots"] if truth["index_slots"] else None
    check("%s: load_factor is entries / slots, in [0, 1)" % name,
          isinstance(s["load_factor"], float) and s["load_factor"] == expected
          and 0 <= s["load_factor"] < 1,
          "got %r, expected %r" % (s["load_factor"], expected))
    return truth


def check_counts(name, db, s, table="kv", codec="utf-8", log=None):
    """The count columns of row s against the table's rows (and what `log` wrote)."""
    check_equal(name + ": live_count is count(*)", s["live_count"],
                db.execute("SELECT count(*) FROM %s" % table).fetchone()[0])
    check_equal(name + ": live_bytes is the live rows' record bytes", s["live_bytes"],
                rows_bytes(db, table, codec))
    check("%s: garbage_bytes >= 0 and (log_tail - log_start) - live_bytes" % name,
          s["garbage_bytes"] >= 0
          and s["garbage_bytes"] == s["log_tail"] - s["log_start"] - s["live_bytes"],
          "garbage %r, log [%r, %r), live %r" % (s["garbage_bytes"], s["log_start"],
                                                 s["log_tail"], s["live_bytes"]))
    if log is not None:
        check_equal(name + ": log_tail - log_start is the bytes written", s["log_tail"] -
                    s["log_start"], log.bytes)
        check_equal(name + ": records is the records written", s["records"], log.records)


def check_files(name, s, data_path):
    for column, path in (("data_file", data_path), ("index_file", data_path + "-index")):
        st = os.stat(path)
        check_equal("%s: %s_bytes is st_blocks * 512 of %s" % (name, column,
                                                               os.path.basename(path)),
                    s[column + "_bytes"], st.st_blocks * 512)
        check_equal("%s: %s_size is st_size of %s" % (name, column, os.path.basename(path)),
                    s[column + "_size"], st.st_size)


# ---------------------------------------------------------------------------------------------


def test_columns():
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        cur = db.execute("SELECT * FROM mmkv_stats('kv')")
        rows = cur.fetchall()
        check_equal("SELECT * gives the documented columns, in order",
                    [c[0] for c in cur.description], COLUMNS)
        check_equal("one row", len(rows), 1)
        check_equal("the hidden columns hold the arguments",
                    db.execute("SELECT name, schema FROM mmkv_stats('kv')").fetchall(),
                    [("kv", "main")])
        types = db.execute("SELECT %s FROM mmkv_stats('kv')"
                           % ", ".join("typeof(%s)" % c for c in COLUMNS)).fetchone()
        expected = ["real" if c == "load_factor" else "text" if c == "sync" else "integer"
                    for c in COLUMNS]
        check_equal("each column's type", list(types), expected)
        s = stats(db, "kv")
        check_equal("an empty table: live_count, live_bytes, garbage_bytes, records",
                    (s["live_count"], s["live_bytes"], s["garbage_bytes"], s["records"]),
                    (0, 0, 0, 0))
        check_equal("an empty table: its log is [4096, 4096)", (s["log_start"], s["log_tail"]),
                    (DATA_START, DATA_START))
        check_equal("an empty table: no entries, max_probe 0, load_factor 0.0",
                    (s["index_entries"], s["max_probe"], s["load_factor"]), (0, 0, 0.0))
        check_equal("an empty table: nothing compacted or compacting",
                    (s["compactions"], s["compacting"], s["compact_until"]), (0, 0, 0))
        check_index("empty table", s, os.path.join(d, "app.db-kv.mmkv"))
        db.close()


def test_counts():
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(autocompact=off)")
        log = Log(db)
        r = harness.rng("counts")
        values = [None, 0, -7, 2.5, "", "short", "é" * 13, b"", b"\x00" * 5, b"x" * 300]
        for i in range(300):
            key = [i, i + 0.5, "k%d" % i, b"b%d" % i][i % 4]
            log.put(key, r.choice(values))
        s = stats(db, "kv")
        check_counts("after inserts", db, s, log=log)
        check_equal("after inserts: no garbage", s["garbage_bytes"], 0)
        check_equal("after inserts: the log starts at 4096", s["log_start"], DATA_START)
        keys = [k for (k,) in db.execute("SELECT key FROM kv")]
        for key in r.sample(keys, 60):
            log.put(key, r.choice(values))  # a new version: the old one is garbage
        for key in r.sample(keys, 80):
            log.delete(key)  # the version and the tombstone are garbage
        log.delete("no such key")
        s = stats(db, "kv")
        check_counts("after updates and deletes", db, s, log=log)
        check("after updates and deletes: garbage_bytes > 0", s["garbage_bytes"] > 0,
              "got %r" % s["garbage_bytes"])
        live = [k for (k,) in db.execute("SELECT key FROM kv")]
        db.execute("DELETE FROM kv")
        log.records += len(live)
        log.bytes += sum(tombstone_size(k) for k in live)
        s = stats(db, "kv")
        check_counts("after DELETE FROM kv", db, s, log=log)
        check_equal("after DELETE FROM kv: live_count and live_bytes",
                    (s["live_count"], s["live_bytes"]), (0, 0))
        check_equal("after DELETE FROM kv: everything in the log is garbage",
                    s["garbage_bytes"], s["log_tail"] - s["log_start"])
        db.close()


def test_files():
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        path = os.path.join(d, "app.db-kv.mmkv")
        check_files("a new table", stats(db, "kv"), path)
        db.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)"
                   " INSERT INTO kv SELECT i, randomblob(200) FROM n")
        s = stats(db, "kv")
        check_files("after 5000 rows", s, path)
        check("after 5000 rows: the data file holds the log", s["data_file_size"] >= s["log_tail"],
              "data_file_size %r, log_tail %r" % (s["data_file_size"], s["log_tail"]))
        db.close()


def test_index():
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        path = os.path.join(d, "app.db-kv.mmkv")
        # Keys of every type, and TEXT that reads as a number (a second slot each).
        keys = list(range(200)) + [i + 0.25 for i in range(100)] + \
            ["key %d" % i for i in range(100)] + [b"blob %d" % i for i in range(50)] + \
            ["%d" % (10 ** 6 + i) for i in range(30)] + [" 7 ", "-3", "2.5", "1e3", "+12"]
        db.executemany("INSERT INTO kv VALUES(?, 1)", [(k,) for k in keys])
        s = stats(db, "kv")
        truth = check_index("mixed keys", s, path)
        check("mixed keys: numeric TEXT keys have second slots", truth["seconds"] == 35,
              "second slots in the index file: %r" % truth["seconds"])
        check("mixed keys: max_probe >= 1", s["max_probe"] >= 1, "got %r" % s["max_probe"])
        check_counts("mixed keys", db, s)
        # Past 5/8 of its slots the index grows into a table twice the size, and drains the old
        # one into it a few slots per write: caught while draining, and once it has finished.
        db.execute("BEGIN")
        key = 10 ** 7
        while not index_geometry(path)[3] and key < 10 ** 7 + 5000:
            db.execute("INSERT INTO kv VALUES(?, 2)", (key,))
            key += 1
        s = stats(db, "kv")
        truth = check_index("draining", s, path)
        check("draining: the index grew and is draining its old table",
              truth["index_slots"] > MIN_SLOTS and truth["index_draining_slots"] == MIN_SLOTS,
              "index file: %r" % truth)
        check_counts("draining, inside the transaction", db, s)
        db.execute("COMMIT")
        while index_geometry(path)[3] and key < 10 ** 7 + 10000:
            db.execute("INSERT INTO kv VALUES(?, 3)", (key,))
            key += 1
        s = stats(db, "kv")
        truth = check_index("grown", s, path)
        check("grown: the drain has finished", truth["index_slots"] > MIN_SLOTS and
              truth["index_draining_slots"] == 0, "index file: %r" % truth)
        db.execute("DELETE FROM kv WHERE typeof(key) = 'integer'")
        check_index("after deletes (tombstones keep their slots)", stats(db, "kv"), path)
        db.close()


def test_txid():
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        db = connect(p)
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        other = connect(p)

        def txid(conn=db):
            return stats(conn, "kv")["txid"]

        t0 = txid()
        db.execute("INSERT INTO kv VALUES(1, 'a')")
        check_equal("an INSERT in autocommit: txid + 1", txid(), t0 + 1)
        db.execute("INSERT INTO kv VALUES(2, 'b'), (3, 'c'), (4, 'd')")
        check_equal("one statement of three rows: txid + 1", txid(), t0 + 2)
        db.execute("BEGIN")
        for k in range(10, 15):
            db.execute("INSERT INTO kv VALUES(?, 'x')", (k,))
        inside = stats(db, "kv")
        check_equal("inside a write transaction: its own txid", inside["txid"], t0 + 3)
        check_counts("inside a write transaction", db, inside)
        check_equal("inside a write transaction: another connection sees the commit before",
                    (txid(other), stats(other, "kv")["live_count"]), (t0 + 2, 4))
        db.execute("COMMIT")
        check_equal("five INSERTs in one transaction: txid + 1", txid(), t0 + 3)
        check_equal("another connection sees it", txid(other), t0 + 3)
        db.execute("SELECT * FROM kv").fetchall()
        check_equal("a read commits nothing", txid(), t0 + 3)
        db.execute("BEGIN")
        db.execute("INSERT INTO kv VALUES(99, 'gone')")
        db.execute("ROLLBACK")
        after = stats(db, "kv")
        check_equal("a rolled-back transaction: txid and live_count as before",
                    (after["txid"], after["live_count"]), (t0 + 3, 9))
        check_error("a duplicate key fails", lambda: db.execute("INSERT INTO kv VALUES(1, 'z')"),
                    "UNIQUE")
        check_equal("a failed statement commits nothing", txid(), t0 + 3)
        db.execute("UPDATE kv SET value = 'y' WHERE key = 1")
        check_equal("an UPDATE: txid + 1", txid(), t0 + 4)
        other.close()
        db.close()


def test_read_transaction():
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        db = connect(p)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        db.execute("INSERT INTO kv VALUES(1, 'a')")
        writer = connect(p)
        db.execute("BEGIN")
        db.execute("SELECT count(*) FROM kv").fetchone()  # the read transaction starts
        before = stats(db, "kv")
        writer.execute("INSERT INTO kv VALUES(2, 'b')")
        inside = stats(db, "kv")
        check_equal("in a read transaction: the state it reads, whatever commits meanwhile",
                    (inside["txid"], inside["live_count"], inside["log_tail"]),
                    (before["txid"], 1, before["log_tail"]))
        check_counts("in a read transaction", db, inside)
        db.execute("COMMIT")
        after = stats(db, "kv")
        check_equal("after it: the new commit", (after["txid"], after["live_count"]),
                    (before["txid"] + 1, 2))
        writer.close()
        db.close()


def test_sync():
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        for table, arg, expected in (("a", "", "full"), ("b", "(sync=full)", "full"),
                                     ("c", "(sync=normal)", "normal"), ("d", "(sync=off)", "off"),
                                     ("e", "(sync='NORMAL')", "normal")):
            db.execute("CREATE VIRTUAL TABLE %s USING mmkv%s" % (table, arg))
            check_equal("sync of mmkv%s" % (arg or " (no arguments)"), stats(db, table)["sync"],
                        expected)
        db.close()


def test_fresh_connection():
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        db = connect(p)
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        db.executemany("INSERT INTO kv VALUES(?, ?)", [(i, "v" * i) for i in range(100)])
        expected = stats(db, "kv")
        db.close()
        fresh = connect(p)
        s = stats(fresh, "kv")  # its first statement: the table is not connected yet
        check_equal("a connection that never used the table: the same counts",
                    {c: s[c] for c in ("live_count", "live_bytes", "txid", "log_tail")},
                    {c: expected[c] for c in ("live_count", "live_bytes", "txid", "log_tail")})
        check_counts("a fresh connection", fresh, s)
        fresh.close()


def test_attached_schema():
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        db.execute("ATTACH ? AS aux", (os.path.join(d, "other.db"),))
        db.execute("CREATE VIRTUAL TABLE aux.kv2 USING mmkv(sync=off)")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        db.execute("CREATE VIRTUAL TABLE aux.kv USING mmkv")
        db.executemany("INSERT INTO aux.kv2 VALUES(?, ?)", [(i, "x" * i) for i in range(50)])
        db.executemany("INSERT INTO aux.kv VALUES(?, ?)", [(i, i) for i in range(7)])
        db.execute("INSERT INTO main.kv VALUES('only', 'one')")
        s = stats(db, "kv2", "aux")
        check_counts("aux.kv2", db, s, table="aux.kv2")
        check_files("aux.kv2", s, os.path.join(d, "other.db-kv2.mmkv"))
        check_index("aux.kv2", s, os.path.join(d, "other.db-kv2.mmkv"))
        check_equal("aux.kv2: sync", s["sync"], "off")
        check_equal("the schema's case does not matter", stats(db, "KV2", "AUX")["live_count"], 50)
        check_equal("kv of aux and of main are told apart",
                    (stats(db, "kv", "aux")["live_count"], stats(db, "kv")["live_count"],
                     stats(db, "kv", "main")["live_count"]), (7, 1, 1))
        check_error("kv2 is not in main", lambda: stats(db, "kv2"),
                    'no mmkv table "kv2" in schema "main"')
        db.close()


def test_temp_table():
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        db.execute("CREATE VIRTUAL TABLE temp.tk USING mmkv")
        log = Log(db, "temp.tk")
        for i in range(40):
            log.put("k%d" % i, b"v" * i)
        log.delete("k3")
        s = stats(db, "tk", "temp")
        check_counts("temp.tk", db, s, table="temp.tk", log=log)
        check("temp.tk: its files hold the log and the index",
              s["data_file_size"] >= s["log_tail"] and s["data_file_bytes"] > 0
              and s["index_slots"] >= MIN_SLOTS and s["index_entries"] == 40
              and s["max_probe"] >= 1,
              "got %r" % s)
        check_error("temp.tk is not in main", lambda: stats(db, "tk"),
                    'no mmkv table "tk" in schema "main"')
        db.close()


def test_memory_database():
    """A table of an in-memory database on a file of its own: its meta slots decide what is
    committed, and 'compact' runs to its end in the statement."""
    with TempDir() as d:
        path = os.path.join(d, "shared.mmkv")
        db = connect(":memory:")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s', autocompact=off)" % path)
        log = Log(db)
        for i in range(200):
            log.put(i, "value %d" % i)
        for i in range(0, 200, 2):
            log.delete(i)
        s = stats(db, "kv")
        check_counts("in-memory database", db, s, log=log)
        check_files("in-memory database", s, path)
        check_index("in-memory database", s, path)
        t0 = s["txid"]
        db.execute("INSERT INTO kv VALUES(-1, 'new')")
        check_equal("in-memory database: txid + 1 per commit", stats(db, "kv")["txid"], t0 + 1)
        before = stats(db, "kv")
        db.execute("INSERT INTO kv(kv) VALUES('compact')")
        after = stats(db, "kv")
        check_counts("after 'compact'", db, after)
        check_equal("after 'compact': compactions + 1, and done",
                    (after["compactions"], after["compacting"], after["compact_until"]),
                    (before["compactions"] + 1, 0, 0))
        check("after 'compact': the log starts past the garbage, and holds less of it",
              after["log_start"] > DATA_START and after["garbage_bytes"] < before["garbage_bytes"],
              "before %r, after %r" % (before, after))
        check_files("after 'compact'", after, path)
        check_index("after 'compact'", after, path)
        db.close()


def test_requested_compaction():
    """A table in a database file: 'compact' is run by the worker, in transactions of its own."""
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(autocompact=off)")
        db.executemany("INSERT INTO kv VALUES(?, randomblob(100))", [(i,) for i in range(500)])
        db.execute("DELETE FROM kv WHERE key % 3 <> 0")
        before = stats(db, "kv")
        db.execute("INSERT INTO kv(kv) VALUES('compact')")
        seen, s = [], stats(db, "kv")
        deadline = time.time() + COMPACTION_WAIT_SECONDS
        while (s["compacting"] or s["compactions"] == before["compactions"]) and \
                time.time() < deadline:
            seen.append((s["compacting"], s["compact_until"], s["log_tail"]))
            time.sleep(0.02)
            s = stats(db, "kv")
        check_equal("'compact' finishes: compactions + 1, nothing compacting",
                    (s["compactions"], s["compacting"], s["compact_until"]),
                    (before["compactions"] + 1, 0, 0))
        check("while it runs: compacting is 1 exactly when compact_until is set, within the log",
              all((c == 1) == (u > 0) and u <= tail for c, u, tail in seen), "seen %r" % seen)
        check_counts("after 'compact'", db, s)
        check("after 'compact': the log starts past the garbage",
              s["log_start"] > DATA_START and s["garbage_bytes"] < before["garbage_bytes"],
              "before %r, after %r" % (before, s))
        db.close()


def test_utf16():
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        db.execute("PRAGMA encoding = 'UTF-16le'")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        log = Log(db, codec="utf-16-le")
        for i in range(50):
            log.put("clé %d" % i, "välue" * i)
        s = stats(db, "kv")
        check_counts("a UTF-16le database: TEXT counts its UTF-16 bytes", db, s,
                     codec="utf-16-le", log=log)
        db.close()


def test_readonly():
    """A read-only connection while another process writes (the index on disk is in use): it
    reads an index of its own, in memory, brought up to each commit it reads."""
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        writer = harness.Peer(p, busy_timeout=5)
        answers = [writer.ask("CREATE VIRTUAL TABLE kv USING mmkv"),
                   writer.ask("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                              "WHERE i < 100) INSERT INTO kv SELECT i, 'v' || i FROM n")]
        if not check("the writer made the table", all("rows" in a for a in answers),
                     "answers %r" % answers):
            writer.close()
            return
        ro = connect("file:%s?mode=ro" % p, uri=True)
        s = stats(ro, "kv")
        check_counts("read-only", ro, s)
        check_equal("read-only: index_entries, one per key", s["index_entries"], 100)
        answer = writer.ask("INSERT INTO kv SELECT -key, 'w' FROM kv WHERE key <= 50")
        check("the writer wrote again", "rows" in answer, "answer %r" % answer)
        s = stats(ro, "kv")
        check_counts("read-only, after another commit", ro, s)
        check_equal("read-only, after another commit: index_entries", s["index_entries"], 150)
        check("read-only: max_probe >= 1 and index_slots a power of two",
              s["max_probe"] >= 1 and s["index_slots"] >= MIN_SLOTS
              and s["index_slots"] & (s["index_slots"] - 1) == 0, "got %r" % s)
        ro.close()
        writer.close()


def test_broken_table():
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        db = connect(p)
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        db.close()
        os.remove(os.path.join(d, "app.db-kv.mmkv"))
        db = connect(p)
        check_error("a table whose data file is missing: the error names the file",
                    lambda: stats(db, "kv"), "app.db-kv.mmkv")
        db.close()


def test_bad_arguments():
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        db.execute("CREATE TABLE native(a)")
        db.execute("CREATE VIEW v AS SELECT 1")
        cases = [
            ("no argument", "SELECT * FROM mmkv_stats", (), "name the table"),
            ("no argument ()", "SELECT * FROM mmkv_stats()", (), "name the table"),
            ("a NULL name", "SELECT * FROM mmkv_stats(NULL)", (), "must be text, not NULL"),
            ("an integer name", "SELECT * FROM mmkv_stats(1)", (), "must be text, not an integer"),
            ("a real name", "SELECT * FROM mmkv_stats(1.5)", (), "must be text, not a real"),
            ("a blob name", "SELECT * FROM mmkv_stats(x'6b76')", (), "must be text, not a blob"),
            ("a NULL schema", "SELECT * FROM mmkv_stats('kv', NULL)", (),
             "schema must be text, not NULL"),
            ("an integer schema", "SELECT * FROM mmkv_stats('kv', 0)", (),
             "schema must be text, not an integer"),
            ("an unknown schema", "SELECT * FROM mmkv_stats('kv', 'nosuch')", (),
             'no database "nosuch"'),
            ("no such table", "SELECT * FROM mmkv_stats('nokv')", (),
             'no mmkv table "nokv" in schema "main"'),
            ("no such table in temp", "SELECT * FROM mmkv_stats('kv', 'temp')", (),
             'no mmkv table "kv" in schema "temp"'),
            ("a native table", "SELECT * FROM mmkv_stats('native')", (),
             '"native" in schema "main" is not an mmkv table'),
            ("a view", "SELECT * FROM mmkv_stats('v')", (), '"v" in schema "main" is not an mmkv'),
            ("the commit record", "SELECT * FROM mmkv_stats('kv_commit')", (),
             '"kv_commit" in schema "main" is not an mmkv table'),
            ("a bound NULL", "SELECT * FROM mmkv_stats(?)", (None,), "must be text, not NULL"),
            ("three arguments", "SELECT * FROM mmkv_stats('kv', 'main', 3)", (),
             "too many arguments"),
        ]
        for name, sql, params, needle in cases:
            check_error("error for %s names it (%s)" % (name, needle),
                        lambda: db.execute(sql, params).fetchall(), needle)
        check_equal("after the errors the function still works", stats(db, "kv")["live_count"], 0)
        # Like the mmkv module, SQLITE_VTAB_DIRECTONLY: a view of a schema cannot reach the files.
        db.execute("CREATE VIEW stats_view AS SELECT * FROM mmkv_stats('kv')")
        check_error("mmkv_stats cannot be used from a view",
                    lambda: db.execute("SELECT * FROM stats_view").fetchall(), "unsafe use")
        db.close()


def test_join():
    with TempDir() as d:
        db = connect(os.path.join(d, "app.db"))
        db.execute("CREATE VIRTUAL TABLE a USING mmkv")
        db.execute("CREATE VIRTUAL TABLE b USING mmkv")
        db.execute("INSERT INTO a VALUES(1, 1), (2, 2)")
        got = db.execute("SELECT t.n, s.live_count FROM (SELECT 'a' AS n UNION ALL SELECT 'b') t, "
                         "mmkv_stats(t.n) s ORDER BY t.n").fetchall()
        check_equal("mmkv_stats(t.name) in a join, one row per table", got, [("a", 2), ("b", 0)])
        db.close()




CASES = [test_columns, test_counts, test_files, test_index, test_txid, test_read_transaction,
         test_sync, test_fresh_connection, test_attached_schema, test_temp_table,
         test_memory_database, test_requested_compaction, test_utf16, test_readonly,
         test_broken_table, test_bad_arguments, test_join]

if __name__ == "__main__":
    harness.main([harness.watchdog(c, CASE_TIMEOUT) for c in CASES])
