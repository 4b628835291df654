"""Text in every database encoding: mmkv against a native table, byte for byte.

SQLite keeps a database's text in one encoding (PRAGMA encoding: UTF-8, UTF-16le or UTF-16be), and
an mmkv table keeps its text in its database's encoding as it came (the data file's header names
the encoding). Most checks run the same statements on a native table `nkv`
(CREATE TABLE nkv(key PRIMARY KEY NOT NULL, value) WITHOUT ROWID) and on the mmkv table `kv` of one
connection, for a database file and for :memory:, in each of the three encodings, and compare what
comes back.

Python's sqlite3 module reads text as UTF-8, which SQLite converts to (lone surrogates and bytes
that are not UTF-8 then turn into U+FFFD or fail to decode), so text is compared through what SQL
computes: hex(), typeof(), length(). Text is made in SQL from its bytes in the database's encoding:
CAST(x'00d8' AS TEXT) is a lone high surrogate in a UTF-16le database, CAST(x'd800' AS TEXT) in a
UTF-16be one. The texts below are Python strings, which may hold lone surrogates: encoded with
"surrogatepass" they give those bytes (in UTF-8, the three bytes ED A0 80 for U+D800, which a UTF-8
database keeps as they are).

Run with Debian's python3: /usr/bin/python3 test/sql/test_encoding.py
"""
import hashlib
import os
import sqlite3
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import TempDir, check, check_equal, connect, crc32c  # noqa: E402

ENCODINGS = ("UTF-8", "UTF-16le", "UTF-16be")
STORAGES = ("file", "memory")
NATIVE = "CREATE TABLE nkv(key PRIMARY KEY NOT NULL, value) WITHOUT ROWID"
PY_CODEC = {"UTF-8": "utf-8", "UTF-16le": "utf-16-le", "UTF-16be": "utf-16-be"}
# The data file header (ext/format.h): format_version at 16, text_encoding at 48, checksum at 508.
HEADER_FORMAT_VERSION, HEADER_TEXT_ENCODING, HEADER_CHECKSUM = 16, 48, 508

TEXTS = [
    ("ascii", "hello"), ("a", "a"), ("A", "A"),
    ("non-ASCII BMP", "h\u00e9llo"), ("CJK", "\u65e5\u672c\u8a9e"),
    ("astral", "\U0001F600"), ("astral inside", "a\U0001F600b"),
    ("lone high surrogate", "\ud800"), ("lone low surrogate", "\udc00"),
    ("high surrogate then text", "\ud800a"), ("text then high surrogate", "a\udbff"),
    ("low then high surrogate", "\udc00\ud800"), ("two high surrogates", "\ud800\ud800"),
    ("U+FFFE", "\ufffe"), ("U+FFFF", "\uffff"), ("U+FDD0", "\ufdd0"), ("U+FFFD", "\ufffd"),
    ("U+FFFE U+FFFF", "\ufffe\uffff"), ("U+1FFFF", "\U0001ffff"),
    ("NUL inside", "a\x00b"), ("NUL inside, other", "a\x00c"), ("NUL", "\x00"),
    ("NUL then 1", "\x001"), ("1 then NUL", "1\x00"), ("empty", ""),
    ("'1'", "1"), ("' 1'", " 1"), ("'1 '", "1 "), ("'1.0'", "1.0"), ("'1e3'", "1e3"),
    ("'+1'", "+1"), ("'-0'", "-0"), ("'1000'", "1000"), ("'.5'", ".5"), ("'1x'", "1x"),
    ("fullwidth 1", "\uff11"), ("NBSP then 1", "\u00a01"), ("1 then NBSP", "1\u00a0"),
    ("U+3031 (the bytes '10' in UTF-16le)", "\u3031"),
    ("U+3130 (the bytes '10' in UTF-16be)", "\u3130"),
    ("U+0131 (a high byte over '1')", "\u0131"),
]
# Texts no key holds, that a lossy conversion would confuse with some that do.
ABSENT = ["\ud801", "\udfff", "\ufffd\ufffd", "\ufffc", "\U0001F601", "a\x00", "2", "\u0130"]
OTHER_KEYS = [1, 1000, 1.5, 0, b"1", b"\x00\xd8", b""]
OTHER_VALUES = [None, 7, 2.5, b"\x00\xd8", b""]


def text_bytes(s, encoding):
    return s.encode(PY_CODEC[encoding], "surrogatepass")


def lit(v, encoding):
    """An SQL literal for v: text made from its bytes in the encoding; numbers and blobs as they
    are."""
    if isinstance(v, str):
        return "CAST(x'%s' AS TEXT)" % text_bytes(v, encoding).hex()
    if isinstance(v, bytes):
        return "x'%s'" % v.hex()
    if v is None:
        return "NULL"
    return repr(v)


def bindable(s):
    """Whether Python can bind s as text (it encodes to UTF-8 strictly: no lone surrogates)."""
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


class Pair:
    """One connection in a given encoding holding nkv (native) and kv (mmkv): a database file in
    directory d, or :memory: (kv's files then temporary, or `file` if given)."""

    def __init__(self, encoding, storage, d, file=None):
        self.encoding, self.storage, self.file = encoding, storage, file
        self.path = os.path.join(d, "app.db") if storage == "file" else ":memory:"
        self.db = self.open()
        self.db.execute(NATIVE)
        self.db.execute("CREATE VIRTUAL TABLE kv USING mmkv%s"
                        % ("(file='%s')" % file if file else ""))

    def open(self):
        db = connect(self.path)
        db.text_factory = bytes  # never decode: text is compared as SQL's hex()
        db.execute("PRAGMA encoding='%s'" % self.encoding)
        got = db.execute("PRAGMA encoding").fetchone()[0].decode()
        if got != self.encoding:
            raise RuntimeError("PRAGMA encoding is %s, expected %s" % (got, self.encoding))
        return db

    def reopen(self, drop_index=None):
        """Closes and opens the database again (in-memory: a new one, kv on the same file, nkv
        made anew and empty), deleting the index file drop_index between the two."""
        self.db.close()
        if drop_index:
            os.remove(drop_index)
        self.db = self.open()
        if self.storage == "memory":
            self.db.execute(NATIVE)
            self.db.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % self.file)

    def label(self, what):
        return "%s (%s, %s)" % (what, self.encoding, self.storage)

    def lit(self, v):
        return lit(v, self.encoding)

    def both(self, sql, params=()):
        for t in ("nkv", "kv"):
            self.db.execute(sql.replace("{t}", t), params)

    def outcome(self, sql, params=()):
        try:
            rows = [tuple(r) for r in self.db.execute(sql, params).fetchall()]
            if "ORDER BY" not in sql.upper():
                rows.sort(key=repr)
            return ("ok", rows, self.db.execute("SELECT changes()").fetchone()[0])
        except sqlite3.Error as e:
            return ("error", type(e).__name__, str(e).replace("nkv", "kv"))

    def differs(self, sql, params=()):
        """'' if the statement ({t} the table) does the same to nkv and kv, else what differs."""
        a = self.outcome(sql.replace("{t}", "nkv"), params)
        b = self.outcome(sql.replace("{t}", "kv"), params)
        if a == b:
            return ""
        return "%s %r\n    native: %s\n    mmkv:   %s" % (sql, params, short(a), short(b))

    def same(self, name, statements):
        """One check: every (sql, params) or sql does the same to nkv and kv."""
        for s in statements:
            sql, params = (s, ()) if isinstance(s, str) else s
            if "{t}" not in sql:  # BEGIN, SAVEPOINT, COMMIT: once, for both tables
                o = self.outcome(sql, params)
                if o[0] != "ok":
                    return check(self.label(name), False, "%s: %s" % (sql, o))
                continue
            why = self.differs(sql, params)
            if why:
                return check(self.label(name), False, why)
        return check(self.label(name), True)

    def close(self):
        self.db.close()


def short(x, limit=600):
    s = repr(x)
    return s if len(s) <= limit else s[:limit] + "...(%d chars)" % len(s)


def configurations():
    """(encoding, storage) for every encoding, a database file and :memory:."""
    return [(e, s) for e in ENCODINGS for s in STORAGES]


ROWS = ("SELECT hex(key), typeof(key), length(key), hex(value), typeof(value), length(value) "
        "FROM {t} ORDER BY key")


def fill(p):
    """Every text as a key (its value another text), and keys of the other types."""
    values = [t for _, t in TEXTS[1:]] + [TEXTS[0][1]] + OTHER_VALUES
    for i, (_, t) in enumerate(TEXTS):
        p.both("INSERT INTO {t} VALUES(%s, %s)" % (p.lit(t), p.lit(values[i % len(values)])))
    for i, k in enumerate(OTHER_KEYS):
        p.both("INSERT INTO {t} VALUES(%s, %s)" % (p.lit(k), p.lit(values[-1 - i])))


def integrity(p, name):
    try:
        p.db.execute("INSERT INTO kv(kv) VALUES('integrity-check')")
        rows = [r[0] for r in p.db.execute("PRAGMA integrity_check").fetchall()]
        check(p.label(name), rows == [b"ok"], "PRAGMA integrity_check says %r" % rows)
    except sqlite3.Error as e:
        check(p.label(name), False, "integrity-check: %s" % e)


# ---------------------------------------------------------------------------------------------


def test_roundtrip():
    """Every text comes back byte for byte, type for type, in native order, and stays distinct."""
    for encoding, storage in configurations():
        with TempDir() as d:
            p = Pair(encoding, storage, d)
            fill(p)
            p.same("roundtrip: keys and values come back byte for byte, ordered as native", [
                ROWS,
                "SELECT hex(key) FROM {t} WHERE typeof(key) = 'text' ORDER BY key DESC",
                "SELECT count(*), count(DISTINCT key), sum(length(key)) FROM {t}",
                "SELECT hex(key), hex(value) FROM {t} WHERE key > %s AND key < %s ORDER BY key"
                % (p.lit("\ud7ff"), p.lit("\ue000")),
                "SELECT max(key), min(key) FROM {t} WHERE typeof(key) = 'text'",
            ])
            check_equal(p.label("roundtrip: distinct keys stay distinct"),
                        p.db.execute("SELECT count(*) FROM kv").fetchone()[0],
                        len(TEXTS) + len(OTHER_KEYS))
            # The table's text is the database's: SQLite's own functions read it as native text.
            p.same("roundtrip: SQL functions read mmkv's text as native text", [
                "SELECT hex(key), hex(substr(key, 2)), hex(upper(key)), instr(key, %s), "
                "hex(key || %s) FROM {t} WHERE typeof(key) = 'text' ORDER BY key"
                % (p.lit("a"), p.lit("\ud800")),
                "SELECT hex(value), hex(CAST(value AS BLOB)), typeof(value) FROM {t} "
                "ORDER BY 1, 3",
            ])
            integrity(p, "roundtrip: integrity-check passes")
            p.close()


def test_lookups():
    """key = X, key IN (...), key IS X: exactly the rows native finds, for every text."""
    for encoding, storage in configurations():
        with TempDir() as d:
            p = Pair(encoding, storage, d)
            fill(p)
            probes = [t for _, t in TEXTS] + ABSENT
            q = "SELECT hex(key), typeof(key), hex(value) FROM {t} WHERE "
            p.same("lookups: key = CAST(x'..' AS TEXT) for every text",
                   [q + "key = %s" % p.lit(t) for t in probes])
            p.same("lookups: key = CAST(? AS TEXT) from the text's bytes",
                   [(q + "key = CAST(? AS TEXT)", (text_bytes(t, encoding),)) for t in probes])
            p.same("lookups: key = ? bound as text (SQLite converts it to the database's)",
                   [(q + "key = ?", (t,)) for t in probes if bindable(t)])
            p.same("lookups: X = key and key IS X",
                   [q + "%s = key" % p.lit(t) for t in probes] +
                   [q + "key IS %s" % p.lit(t) for t in probes])
            groups = [probes[i:i + 5] for i in range(0, len(probes), 5)]
            p.same("lookups: key IN (...) of texts, numbers and blobs",
                   [q + "key IN (%s)" % ", ".join(p.lit(t) for t in g + [1, b"1"])
                    for g in groups] +
                   [q + "key IN (SELECT %s UNION ALL SELECT %s)" % (p.lit(g[0]), p.lit(g[-1]))
                    for g in groups])
            lone = "x'00d8'" if encoding == "UTF-16le" else "x'd800'"
            if encoding != "UTF-8":
                p.same("lookups: WHERE key = CAST(%s AS TEXT) finds the lone surrogate" % lone, [
                    "SELECT hex(key), hex(value) FROM {t} WHERE key = CAST(%s AS TEXT)" % lone])
                got = p.db.execute("SELECT hex(key) FROM kv WHERE key = CAST(%s AS TEXT)"
                                   % lone).fetchall()
                check_equal(p.label("lookups: the lone surrogate is one row, its own"), got,
                            [(lone[2:6].upper().encode(),)])
            p.close()


def test_affinity():
    """Comparisons under affinity: a CAST or a typed column makes TEXT keys equal numbers."""
    for encoding, storage in configurations():
        with TempDir() as d:
            p = Pair(encoding, storage, d)
            fill(p)
            q = "SELECT hex(key), typeof(key) FROM {t} WHERE key = "
            p.same("affinity: key = CAST(n AS INTEGER/REAL/NUMERIC/TEXT) as native", [
                q + e for e in (
                    "CAST(1 AS INTEGER)", "CAST(1 AS REAL)", "CAST('1' AS NUMERIC)",
                    "CAST(1000 AS INTEGER)", "CAST(1e3 AS REAL)", "CAST(0.5 AS REAL)",
                    "CAST(0 AS INTEGER)", "CAST(-0.0 AS REAL)", "CAST(10 AS INTEGER)",
                    "CAST(2 AS INTEGER)", "CAST(1 AS TEXT)", "CAST(1000 AS TEXT)",
                    "CAST(1.5 AS TEXT)", "CAST(0 AS TEXT)", "CAST(%s AS NUMERIC)" % p.lit(" 1"),
                    "CAST(%s AS INTEGER)" % p.lit("\uff11"))])
            p.db.execute("CREATE TABLE typed(i INTEGER, r REAL, t TEXT, n NUMERIC, b BLOB, x)")
            for v in (1, 1000, 0, 0.5, 1.5, 10, "1", " 1", "1e3", "\u3031", "\u3130", "\ud800"):
                p.db.execute("INSERT INTO typed VALUES(%s)" % ", ".join([p.lit(v)] * 6))
            p.same("affinity: joins on typed columns find what native finds", [
                "SELECT hex(typed.%s), typeof(typed.%s), hex({t}.key), typeof({t}.key) "
                "FROM typed JOIN {t} ON {t}.key = typed.%s" % (c, c, c)
                for c in ("i", "r", "t", "n", "b", "x")] + [
                "SELECT hex({t}.key) FROM {t} WHERE {t}.key IN (SELECT %s FROM typed)" % c
                for c in ("i", "t", "x")])
            p.close()


def test_joins():
    """Joins against native tables, kv inner (a probe per row) and outer."""
    for encoding, storage in configurations():
        with TempDir() as d:
            p = Pair(encoding, storage, d)
            fill(p)
            p.db.execute("CREATE TABLE probes(p)")
            p.db.execute("CREATE TABLE tprobes(p TEXT)")
            for t in [t for _, t in TEXTS] + ABSENT + [1, 1000, b"1"]:
                p.db.execute("INSERT INTO probes VALUES(%s)" % p.lit(t))
                p.db.execute("INSERT INTO tprobes VALUES(%s)" % p.lit(t))
            p.same("joins: ON kv.key = native column, as native", [
                "SELECT hex(probes.p), hex({t}.value) FROM probes JOIN {t} ON {t}.key = probes.p",
                "SELECT hex(probes.p), hex({t}.key) FROM probes LEFT JOIN {t} "
                "ON {t}.key = probes.p",
                "SELECT hex(tprobes.p), hex({t}.key) FROM tprobes JOIN {t} "
                "ON {t}.key = tprobes.p",
                "SELECT hex({t}.key), count(probes.p) FROM {t} LEFT JOIN probes "
                "ON probes.p = {t}.key GROUP BY {t}.key",
                "SELECT hex(a.key), hex(b.key) FROM {t} AS a JOIN {t} AS b ON a.key = b.key",
                "SELECT hex(kv.key) FROM kv JOIN nkv ON nkv.key = kv.key "
                "WHERE kv.value IS NOT nkv.value",
            ])
            p.close()


def test_writes():
    """UPDATE, DELETE, INSERT OR REPLACE/IGNORE and the primary key, by texts that a lossy
    conversion would confuse, in and out of transactions."""
    for encoding, storage in configurations():
        with TempDir() as d:
            p = Pair(encoding, storage, d)
            fill(p)
            L = p.lit
            steps = [
                # Keys that lossy conversions turn into U+FFFD: each is its own.
                "INSERT INTO {t} VALUES(%s, 1)" % L("\ud800"),
                "INSERT INTO {t} VALUES(%s, 1)" % L("\udc00"),
                "INSERT INTO {t} VALUES(%s, 1)" % L("\ufffd"),
                "INSERT INTO {t} VALUES(%s, 1)" % L("\ud801"),
                "INSERT INTO {t} VALUES(%s, 1)" % L("\ufffc"),
                "INSERT OR IGNORE INTO {t} VALUES(%s, 2)" % L("\uffff"),
                "INSERT OR IGNORE INTO {t} VALUES(%s, 2)" % L("\udfff"),
                "INSERT OR REPLACE INTO {t} VALUES(%s, %s)" % (L("\ufffe"), L("\ud800")),
                "INSERT OR REPLACE INTO {t} VALUES(%s, %s)" % (L("\U0001F601"), L("\udc00x")),
                "UPDATE {t} SET value = %s WHERE key = %s" % (L("\udbff\udbff"), L("\ud800")),
                "UPDATE {t} SET value = key WHERE key = %s" % L("\uffff"),
                "UPDATE {t} SET key = %s WHERE key = %s" % (L("\ud800\udc00"), L("\udc00\ud800")),
                "UPDATE {t} SET key = %s WHERE key = %s" % (L("\ufffd"), L("\ufdd0")),
                "UPDATE OR REPLACE {t} SET key = %s WHERE key = %s" % (L("\ufffd"), L("\ufdd0")),
                "UPDATE OR REPLACE {t} SET key = %s WHERE key = %s" % (L("\ufffd"), L("\ufffe")),
                "DELETE FROM {t} WHERE key = %s" % L("\udc00"),
                "DELETE FROM {t} WHERE key = %s" % L("\ud801"),
                "DELETE FROM {t} WHERE key IN (%s, %s)" % (L("a\x00b"), L("\x00")),
                "DELETE FROM {t} WHERE key = %s" % L(""),
                "INSERT INTO {t} VALUES(%s, 3)" % L(""),
                "BEGIN",
                "INSERT INTO {t} VALUES(%s, 4)" % L("\udc00"),
                "UPDATE {t} SET value = 5 WHERE key = %s" % L("\udc00"),
                "SAVEPOINT s",
                "DELETE FROM {t} WHERE key = %s" % L("\ud800"),
                "INSERT OR REPLACE INTO {t} VALUES(%s, 6)" % L("\ud800"),
                "ROLLBACK TO s",
                "RELEASE s",
                "COMMIT",
                "BEGIN",
                "DELETE FROM {t} WHERE key = %s" % L("\ufffd"),
                "INSERT INTO {t} VALUES(%s, 7)" % L("\udbff"),
                "ROLLBACK",
                ROWS,
                "SELECT hex(key), hex(value) FROM {t} WHERE key = %s" % L("\udc00"),
            ]
            if p.same("writes: UPDATE, DELETE, OR REPLACE, OR IGNORE by surrogate keys", steps):
                # The primary key: each text already present fails as native does.
                p.same("writes: a duplicate of each text key fails with the native error", [
                    "INSERT INTO {t} VALUES(%s, 0)" % L(t) for _, t in TEXTS] + [ROWS])
            p.same("writes: after the writes, lookups agree", [
                "SELECT hex(key), hex(value) FROM {t} WHERE key = %s" % L(t)
                for t in [t for _, t in TEXTS] + ABSENT + ["\ud800\udc00", "\ufffe"]])
            integrity(p, "writes: integrity-check passes")
            p.close()


def test_reopen():
    """Across a close and a reopen (and an index rebuilt from the log) text keeps its bytes, and
    texts that read as numbers are still found by their numbers."""
    for encoding, storage in configurations():
        with TempDir() as d:
            file = os.path.join(d, "kv.mmkv") if storage == "memory" else None
            p = Pair(encoding, storage, d, file)
            fill(p)
            probes = [t for _, t in TEXTS] + ABSENT
            queries = [ROWS] + [
                "SELECT hex(key), hex(value) FROM {t} WHERE key = %s" % p.lit(t)
                for t in probes] + [
                "SELECT hex(key) FROM {t} WHERE key = CAST(%s AS INTEGER)" % n
                for n in (1, 1000, 0, 10)] + [
                "SELECT hex(key) FROM {t} WHERE key = CAST(0.5 AS REAL)"]

            def rows(q):
                return p.outcome(q.replace("{t}", "kv"))[:2]
            before = {q: rows(q) for q in queries}
            p.same("reopen: before closing, as native", queries)
            data = file or os.path.join(d, "app.db-kv.mmkv")
            for how in ("reopened", "reopened without its index", "after rebuild-index"):
                if how == "after rebuild-index":
                    p.db.execute("INSERT INTO kv(kv) VALUES('rebuild-index')")
                else:
                    p.reopen(drop_index=data + "-index" if "without" in how else None)
                diffs = [q for q in queries if rows(q) != before[q]]
                check(p.label("reopen: %s, every row and lookup as before" % how), not diffs,
                      "%d queries differ, first %s: before %s, now %s"
                      % (len(diffs), diffs[0], short(before[diffs[0]]), short(rows(diffs[0])))
                      if diffs else "")
                integrity(p, "reopen: %s, integrity-check passes" % how)
            if storage == "file":
                p.same("reopen: as native after the reopens", queries)
            p.close()


# ---- a randomised differential over random code unit sequences ----

UNIT_POOLS = [
    [0x30 + i for i in range(10)] + [0x20, 0x2B, 0x2D, 0x2E, 0x65, 0x09],  # numbers, spaces
    [0x61, 0x62, 0x41, 0x00, 0x7F],                                       # letters, NUL
    [0x80, 0xA0, 0xE9, 0xFF, 0x100, 0x131, 0x3031, 0x3130, 0xFF11],        # non-ASCII BMP
    [0xD800, 0xD83D, 0xDBFF],                                             # high surrogates
    [0xDC00, 0xDE00, 0xDFFF],                                             # low surrogates
    [0xFFFE, 0xFFFF, 0xFDD0, 0xFFFD, 0xFEFF],                             # noncharacters, BOM
]


def random_text(r):
    """A random sequence of UTF-16 code units (as a str, lone surrogates and all)."""
    n = r.choice((0, 1, 1, 2, 2, 3, 4, 6))
    units = []
    for _ in range(n):
        pool = UNIT_POOLS[0] if r.random() < 0.35 else r.choice(UNIT_POOLS)
        units.append(r.choice(pool) if r.random() < 0.9 else r.randrange(0x10000))
    return "".join(chr(u) for u in units)


def random_differential(encoding, storage, ops):
    r = harness.rng("encoding-differential-%s-%s" % (encoding, storage))
    with TempDir() as d:
        p = Pair(encoding, storage, d)
        keys = [random_text(r) for _ in range(60)] + ["1", " 1", "1.0"]
        L = p.lit
        steps = []
        for _ in range(ops):
            k, k2 = r.choice(keys), r.choice(keys)
            v = random_text(r) if r.random() < 0.7 else r.choice([None, 1, 2.5, b"\xff"])
            x = r.random()
            if x < 0.25:
                steps.append("INSERT INTO {t} VALUES(%s, %s)" % (L(k), L(v)))
            elif x < 0.4:
                steps.append("INSERT OR REPLACE INTO {t} VALUES(%s, %s)" % (L(k), L(v)))
            elif x < 0.45:
                steps.append("INSERT OR IGNORE INTO {t} VALUES(%s, %s)" % (L(k), L(v)))
            elif x < 0.55:
                steps.append("DELETE FROM {t} WHERE key = %s" % L(k))
            elif x < 0.62:
                steps.append("UPDATE {t} SET value = %s WHERE key = %s" % (L(v), L(k)))
            elif x < 0.67:
                steps.append("UPDATE OR IGNORE {t} SET key = %s WHERE key = %s" % (L(k2), L(k)))
            elif x < 0.82:
                steps.append("SELECT hex(key), hex(value) FROM {t} WHERE key = %s" % L(k))
            elif x < 0.9:
                steps.append("SELECT hex(key), hex(value) FROM {t} WHERE key IN (%s)"
                             % ", ".join(L(r.choice(keys)) for _ in range(4)))
            elif x < 0.96:
                steps.append("SELECT hex(key) FROM {t} WHERE key = CAST(%s AS INTEGER)"
                             % r.choice((0, 1, 2, 10, 11)))
            else:
                steps.append("SELECT hex(key) FROM {t} WHERE key = CAST(%s AS REAL)"
                             % r.choice((0.5, 1.0, 1.5)))
        steps += [ROWS, "SELECT count(*) FROM {t}"]
        p.same("differential: %d random statements on random code units as native" % ops, steps)
        integrity(p, "differential: integrity-check passes")
        p.close()


def test_random_differential():
    for encoding, storage in configurations():
        random_differential(encoding, storage, 600 if storage == "memory" else 300)


# ---- files of another encoding ----

def file_sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def memory_db(encoding, file, create=True):
    db = connect(":memory:")
    db.text_factory = bytes
    db.execute("PRAGMA encoding='%s'" % encoding)
    if create:
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % file)
    return db


def test_shared_file_other_encoding():
    """In-memory databases sharing a file (file= the same path in each): a database of another
    encoding than the file's is refused with a message naming the file and both encodings,
    while the file is open in another database and after; the file stays as it was; a database
    of the file's own encoding shares it."""
    for first in ENCODINGS:
        for second in ENCODINGS:
            if second == first:
                continue
            with TempDir() as d:
                f = os.path.join(d, "shared.mmkv")
                name = "shared file: a %s file from a %s in-memory database" % (first, second)
                a = memory_db(first, f)
                a.execute("INSERT INTO kv VALUES(%s, %s)" % (lit("\ud800", first),
                                                            lit("\udc00", first)))
                a.execute("INSERT INTO kv VALUES(%s, 1)" % lit("1", first))
                for state in ("while open", "after it closed"):
                    if state == "after it closed":
                        a.close()
                    sha = file_sha(f)
                    b = memory_db(second, f, create=False)
                    try:
                        b.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % f)
                        check(name + ": refused " + state, False, "CREATE succeeded")
                    except sqlite3.Error as e:
                        msg = str(e)
                        check(name + ": refused " + state,
                              f in msg and ("holds %s text" % first) in msg
                              and ("a %s database" % second) in msg,
                              "message %r should name the file, %s and %s" % (msg, first, second))
                    b.close()
                    check_equal(name + ": the file is unchanged " + state, file_sha(f), sha)
                c = memory_db(first, f)
                got = c.execute("SELECT hex(key), hex(value) FROM kv WHERE key = %s"
                                % lit("\ud800", first)).fetchall()
                check_equal(name + ": a %s database still reads the file" % first, got,
                            [(text_bytes("\ud800", first).hex().upper().encode(),
                              text_bytes("\udc00", first).hex().upper().encode())])
                c.close()
    # The same encoding shares it, and sees the other's rows byte for byte.
    for encoding in ENCODINGS:
        with TempDir() as d:
            f = os.path.join(d, "shared.mmkv")
            a, b = memory_db(encoding, f), memory_db(encoding, f)
            a.execute("INSERT INTO kv VALUES(%s, %s)" % (lit("\udc00", encoding),
                                                        lit("\ufffe", encoding)))
            a.execute("INSERT INTO kv VALUES(%s, 1)" % lit(" 1", encoding))
            got = b.execute("SELECT hex(key), hex(value) FROM kv ORDER BY key").fetchall()
            want = a.execute("SELECT hex(key), hex(value) FROM kv ORDER BY key").fetchall()
            check("shared file: two %s in-memory databases share it byte for byte" % encoding,
                  got == want and len(got) == 2, "got %r, expected %r" % (got, want))
            got = b.execute("SELECT hex(key) FROM kv WHERE key = CAST(1 AS INTEGER)").fetchall()
            check_equal("shared file: the other %s database finds ' 1' by 1" % encoding, got,
                        [(text_bytes(" 1", encoding).hex().upper().encode(),)])
            a.close()
            b.close()


def test_file_of_mmkv_0_1():
    """A data file of format version 1 (mmkv 0.1, which kept all text in UTF-8 whatever its
    database's encoding) is read as 0.1 read it, from a UTF-8 database and from a UTF-16 one
    (SQLite converting its text at the edge)."""
    with TempDir() as d:
        f = os.path.join(d, "old.mmkv")
        a = memory_db("UTF-8", f)
        a.execute("INSERT INTO kv VALUES('1', 'one')")
        a.close()
        with open(f, "r+b") as fh:
            header = bytearray(fh.read(512))
            struct.pack_into("<II", header, HEADER_FORMAT_VERSION, 1, struct.unpack_from(
                "<I", header, HEADER_FORMAT_VERSION + 4)[0])
            struct.pack_into("<I", header, HEADER_TEXT_ENCODING, 0)  # reserved in version 1
            struct.pack_into("<I", header, HEADER_CHECKSUM, crc32c(bytes(header[:508])))
            fh.seek(0)
            fh.write(header)
        for encoding in ("UTF-16le", "UTF-16be"):
            b = memory_db(encoding, f, create=False)
            b.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % f)
            check_equal("mmkv 0.1 file: a %s database reads its UTF-8 text as 0.1 did" % encoding,
                        b.execute("SELECT key, value, typeof(key) FROM kv WHERE key = '1'")
                        .fetchall(), [(b"1", b"one", b"text")])
            b.close()
        c = memory_db("UTF-8", f)
        check_equal("mmkv 0.1 file: a UTF-8 database reads it, '1' found by 1",
                    c.execute("SELECT key, value FROM kv WHERE key = CAST(1 AS INTEGER)")
                    .fetchall(), [(b"1", b"one")])
        c.close()


def test_copied_database_other_encoding():
    """A database copied into one of another encoding (its schema and commit record reloaded, as
    the sqlite3 shell's .dump does) whose original is gone, naming the same data file: the table
    is refused on use with a message naming the file and both encodings, and the file is left
    as it was."""
    for first, second in (("UTF-8", "UTF-16le"), ("UTF-16be", "UTF-8"), ("UTF-16le", "UTF-16be")):
        name = "copied database: a %s table's file from a %s copy" % (first, second)
        with TempDir() as d:
            f = os.path.join(d, "kv.mmkv")
            src = connect(os.path.join(d, "src.db"))
            src.execute("PRAGMA encoding='%s'" % first)
            src.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % f)
            src.execute("INSERT INTO kv VALUES(%s, 1)" % lit("\ud800", first))
            schema = src.execute("SELECT sql FROM sqlite_schema WHERE name = 'kv'").fetchone()[0]
            commit_rows = src.execute("SELECT owner, state FROM kv_commit").fetchall()
            src.close()
            os.remove(os.path.join(d, "src.db"))
            copy = connect(os.path.join(d, "copy.db"))
            copy.execute("PRAGMA encoding='%s'" % second)
            copy.execute("CREATE TABLE kv_commit(owner, state)")
            copy.executemany("INSERT INTO kv_commit VALUES(?, ?)", commit_rows)
            copy.execute("PRAGMA writable_schema=ON")
            copy.execute("INSERT INTO sqlite_schema(type, name, tbl_name, rootpage, sql) "
                         "VALUES('table', 'kv', 'kv', 0, ?)", (schema,))
            copy.execute("PRAGMA writable_schema=OFF")
            copy.close()
            sha = file_sha(f)
            copy = connect(os.path.join(d, "copy.db"))
            try:
                copy.execute("SELECT count(*) FROM kv").fetchall()
                check(name + ": refused", False, "the copy read the table")
            except sqlite3.Error as e:
                msg = str(e)
                check(name + ": refused", f in msg and ("holds %s text" % first) in msg
                      and ("a %s database" % second) in msg, "message %r" % msg)
            copy.close()
            check_equal(name + ": the file is unchanged", file_sha(f), sha)


CASES = [test_roundtrip, test_lookups, test_affinity, test_joins, test_writes, test_reopen,
         test_random_differential, test_shared_file_other_encoding, test_file_of_mmkv_0_1,
         test_copied_database_other_encoding]

if __name__ == "__main__":
    harness.main(CASES)
