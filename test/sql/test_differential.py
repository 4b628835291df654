#!/usr/bin/python3
"""Seeded random differential test: an mmkv table against a native WITHOUT ROWID table.

In one database (':memory:' and a file database) we create
    kv  an mmkv virtual table, and
    nt  CREATE TABLE nt(key PRIMARY KEY NOT NULL, value) WITHOUT ROWID
plus a small static native table `probe` used by joins and INSERT ... SELECT. A seeded random
sequence of statements (inserts with every conflict clause, updates of values and keys, deletes,
point/IN/range/full-scan queries, aggregates, joins, transactions and nested savepoints) is run
against both tables: the same SQL with the table name swapped. Results (typed, byte-exact),
errors (class, primary code, constraint kind), change counts and the transaction state must
match, and after every write or transaction step the whole content of both tables must match.

Environment:
    MMKV_SEED=N           run only seed N (reproduce a failure); MMKV_SEED=random: a random one;
                          unset or 0: the fixed seeds below
    MMKV_DIFF_STEPS=N     statements per sequence (default 1000, 400 when SANITIZE=1)
    MMKV_DIFF_TIMEOUT=S   the whole run is killed (non-zero exit) after S seconds (default 600)
    MMKV_DIFF_DB=memory|file   run only one kind of database
    MMKV_DIFF_SELFTEST=1  kv is a second native table (checks the test itself: must pass)
    MMKV_DIFF_SELFTEST=rowid   kv is a native rowid table with a UNIQUE key: must pass too
                          (it visits rows in another order: checks the order-independence logic)
    MMKV_DIFF_SELFTEST=mutant  kv is a native table with TEXT affinity (must FAIL)
    MMKV_DIFF_VERBOSE=1   print every statement
    MMKV_DIFF_SKIP=REGEX  do not run statements whose SQL matches REGEX (to look past a known bug)
    MMKV_DIFF_IGNORE_CHANGES=1  do not compare change counts (to look past such a mismatch)
One line per (database kind, seed): PASS, or FAIL with the seed, step, SQL and both results of
the first mismatch (the sequence then stops).
"""
import faulthandler
import os
import random
import re
import sqlite3
import struct
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import TempDir, check  # noqa: E402
from differential_values import (  # noqa: E402
    KEY_POOL, TEXT_CHARS, norm_row, show_rows, show_params, text_factory)

DEFAULT_SEED = 20240607
FIXED_SEEDS = [1, 2, 3]
SELFTEST = os.environ.get("MMKV_DIFF_SELFTEST", "")
IGNORE_CHANGES = os.environ.get("MMKV_DIFF_IGNORE_CHANGES", "") not in ("", "0")
SKIP = re.compile(os.environ["MMKV_DIFF_SKIP"]) if os.environ.get("MMKV_DIFF_SKIP") else None
VERBOSE = os.environ.get("MMKV_DIFF_VERBOSE", "") not in ("", "0")
CLAUSES = ["", "OR REPLACE", "OR IGNORE", "OR ABORT", "OR FAIL", "OR ROLLBACK"]
BIG = 1 << 20


def default_steps():
    if os.environ.get("MMKV_DIFF_STEPS"):
        return max(1, int(os.environ["MMKV_DIFF_STEPS"]))
    return 400 if os.environ.get("SANITIZE") == "1" else 1000


def seeds():
    """MMKV_SEED (harness.SEED, "random" already drawn), or the fixed seeds."""
    return [harness.SEED] if harness.SEED else [DEFAULT_SEED] + FIXED_SEEDS


def kinds():
    k = os.environ.get("MMKV_DIFF_DB", "")
    return [k] if k else ["memory", "file"]


# ---------------------------------------------------------------------------------------------
# Outcomes of one statement


class Outcome:
    def __init__(self, rows=None, rowcount=None, error=None, message=None):
        self.rows = rows
        self.rowcount = rowcount
        self.error = error      # (class name, primary code, kind) or None
        self.message = message  # the raw error message

    def show(self, mode):
        if self.error is not None:
            return "error %s %r" % (self.error[0], self.message)
        if mode == "write":
            return "ok, %d change(s)" % self.rowcount
        return show_rows(self.rows)


def classify_error(e):
    code = getattr(e, "sqlite_errorcode", None)
    primary = code & 0xFF if code is not None else None
    msg = str(e)
    if isinstance(e, sqlite3.IntegrityError) or primary == 19:
        if "NOT NULL" in msg or code == 1299:
            kind = "NOT NULL"
        elif "UNIQUE" in msg or "PRIMARY KEY" in msg or code in (1555, 2067):
            kind = "UNIQUE/PRIMARY KEY"
        else:
            kind = "other constraint: " + msg
    else:
        kind = re.sub(r"\b(kv|nt)\b", "T", msg)
    return (type(e).__name__, primary, kind)


def execute(db, sql, params):
    try:
        cur = db.execute(sql, params)
        rows = [norm_row(r) for r in cur.fetchall()]
        return Outcome(rows=rows, rowcount=cur.rowcount)
    except sqlite3.Error as e:
        return Outcome(error=classify_error(e), message=str(e))


def compare(mode, a, b):
    """None if outcomes a (mmkv) and b (native) match for this statement mode, else a reason."""
    if (a.error is None) != (b.error is None):
        return "one raised an error and the other did not"
    if a.error is not None:
        if a.error != b.error:
            return "different errors: %r vs %r" % (a.error, b.error)
        return None
    if mode == "write":
        if a.rowcount != b.rowcount and not IGNORE_CHANGES:
            return "different change counts"
        return None
    if mode == "ordered":
        return None if a.rows == b.rows else "different rows (ordered)"
    if mode == "unordered":
        same = sorted(a.rows) == sorted(b.rows)
        return None if same else "different rows (as multisets)"
    if mode == "valseq":  # ORDER BY value only: ties (1 and 1.0 too) may come in any order
        if [sort_value(r[-1]) for r in a.rows] != [sort_value(r[-1]) for r in b.rows]:
            return "different value sequence for ORDER BY value"
        same = sorted(a.rows) == sorted(b.rows)
        return None if same else "different rows (as multisets)"
    raise AssertionError(mode)


def sort_value(t):
    """What ORDER BY sees of a normalised value: 1 and 1.0 (and -0.0 and 0) are ties."""
    if t[0] == "I":
        return ("num", t[1])
    if t[0] == "R":
        return ("num", struct.unpack(">d", bytes.fromhex(t[1]))[0])
    return t


# ---------------------------------------------------------------------------------------------
# Key equality as the primary key sees it (1 = 1.0, -0.0 = 0, '1' <> 1, x'61' <> 'a')


def canon(v):
    if v is None:
        return None
    if isinstance(v, tuple):  # text from text_factory
        return ("T", v[1])
    if isinstance(v, (int, float)):
        return ("num", v)  # Python compares int and float exactly, and hashes accordingly
    if isinstance(v, (bytes, bytearray, memoryview)):
        return ("B", bytes(v))
    raise TypeError(repr(v))


class Params:
    """Numbered parameters (?1, ?2, ...) so that fragments can be reused in other queries."""

    def __init__(self):
        self.values = []

    def __call__(self, v):
        self.values.append(v)
        return "?%d" % len(self.values)


class Stmt:
    def __init__(self, sql, params, mode, rollback_clause=False):
        self.sql = sql          # with {T} for the table under test
        self.params = params
        self.mode = mode        # write | ordered | unordered | valseq
        self.rollback_clause = rollback_clause


class Mismatch(Exception):
    pass


# ---------------------------------------------------------------------------------------------


class Sequence:
    def __init__(self, kind, seed, steps, tmpdir):
        self.kind = kind
        self.seed = seed
        self.steps = steps
        self.rng = random.Random("%d" % seed)
        self.path = ":memory:" if kind == "memory" else os.path.join(tmpdir, "diff-%d.db" % seed)
        self.began = False
        self.savepoints = []
        self.sp_counter = 0
        self.big_pending = 0
        self.stats = {"write": 0, "read": 0, "txn": 0, "skipped": 0, "errors": 0, "reopen": 0}
        self.step_no = 0
        self.db = None
        self.rows_seen = 0
        self.contents_compared = 0
        rng = self.rng
        self.pool = list(KEY_POOL) + [rng.randbytes(rng.randrange(1, 12)) for _ in range(4)]
        self.pool += ["long" * 80 + self.rand_text(5), rng.randbytes(2000)]  # long keys

    # -- connection -------------------------------------------------------------------------

    def connect(self, create):
        if SELFTEST:
            db = sqlite3.connect(self.path, isolation_level=None)
        else:
            db = harness.connect(self.path)
        db.text_factory = text_factory
        if create:
            if SELFTEST == "mutant":
                db.execute("CREATE TABLE kv(key TEXT PRIMARY KEY NOT NULL, value) WITHOUT ROWID")
            elif SELFTEST == "rowid":  # same semantics, rows visited in another order
                db.execute("CREATE TABLE kv(key NOT NULL UNIQUE, value)")
            elif SELFTEST:
                db.execute("CREATE TABLE kv(key PRIMARY KEY NOT NULL, value) WITHOUT ROWID")
            else:
                db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
            db.execute("CREATE TABLE nt(key PRIMARY KEY NOT NULL, value) WITHOUT ROWID")
            db.execute("CREATE TABLE probe(id INTEGER PRIMARY KEY, k, v)")
            rng = self.rng
            for i in range(1, 25):
                k = None if i in (7, 19) else rng.choice(self.pool)
                db.execute("INSERT INTO probe VALUES(?, ?, ?)", (i, k, self.draw_value(False)))
        self.db = db

    # -- random data --------------------------------------------------------------------------

    def rand_text(self, n):
        return "".join(self.rng.choice(TEXT_CHARS) for _ in range(n))

    def existing_key(self):
        n = self.db.execute("SELECT count(*) FROM nt").fetchone()[0]
        if n == 0:
            return self.rng.choice(self.pool)
        k = self.db.execute("SELECT key FROM nt ORDER BY key LIMIT 1 OFFSET ?",
                            (self.rng.randrange(n),)).fetchone()[0]
        if isinstance(k, tuple):  # text: bindable only if it is valid UTF-8
            try:
                return k[1].decode("utf-8")
            except UnicodeDecodeError:
                return self.rng.choice(self.pool)
        return k

    def variant(self, k):
        """An equal key of another type where one exists (1 <-> 1.0, -0.0 <-> 0)."""
        if isinstance(k, int) and abs(k) <= 2**53:
            return float(k)
        if isinstance(k, float) and k == k and abs(k) < 2**63 and k == int(k):
            return int(k)
        return k

    def draw_key(self):
        rng = self.rng
        r = rng.random()
        if r < 0.03:
            return None
        if r < 0.04:
            return float("nan")  # binds as NULL
        if r < 0.78:
            return rng.choice(self.pool)
        if r < 0.88:
            k = self.existing_key()
            return self.variant(k) if rng.random() < 0.3 else k
        r = rng.random()
        if r < 0.03:  # a long key
            n = rng.randrange(100, 5000)
            return self.rand_text(n // 2) if rng.random() < 0.5 else rng.randbytes(n)
        if r < 0.4:
            return rng.randrange(-60, 60)
        if r < 0.55:
            return rng.randrange(-60, 60) / 4.0
        if r < 0.8:
            return self.rand_text(rng.randrange(0, 5))
        return rng.randbytes(rng.randrange(0, 5))

    def draw_value(self, allow_big=False):
        rng = self.rng
        r = rng.random()
        if r < 0.13:
            return None
        if r < 0.50:
            return rng.choice(self.pool)
        if r < 0.58:
            return rng.randrange(-2**63, 2**63)
        if r < 0.64:
            return rng.uniform(-1e6, 1e6)
        if r < 0.76:
            return self.rand_text(rng.randrange(0, 20))
        if r < 0.90:
            return rng.randbytes(rng.randrange(0, 40))
        if r < 0.97 or not allow_big:
            n = rng.randrange(100, 9000)
            return rng.randbytes(n) if rng.random() < 0.5 else self.rand_text(n // 3)
        self.big_pending += 1
        if rng.random() < 0.5:
            return rng.randbytes(BIG)
        return "m" * (BIG - 3) + "\u00e9\x00"

    def clause(self):
        return self.rng.choice(CLAUSES)

    # -- WHERE conditions: functions of (key column, value column) ------------------------------

    def gen_cond(self, p):
        rng = self.rng
        c = rng.randrange(15)
        if c == 0 or c == 1:
            a = p(self.draw_key())
            return lambda k, v: "%s = %s" % (k, a)
        if c == 2:
            ps = [p(self.draw_key()) for _ in range(rng.randrange(1, 5))]
            return lambda k, v: "%s IN (%s)" % (k, ", ".join(ps))
        if c == 3:
            op = rng.choice(["<", "<=", ">", ">="])
            a = p(self.draw_key())
            return lambda k, v: "%s %s %s" % (k, op, a)
        if c == 4:
            a, b = p(self.draw_key()), p(self.draw_key())
            return lambda k, v: "%s BETWEEN %s AND %s" % (k, a, b)
        if c == 5:
            a, b = p(self.draw_key()), p(self.draw_key())
            return lambda k, v: "%s >= %s AND %s < %s" % (k, a, k, b)
        if c == 6:
            t = rng.choice(["integer", "real", "text", "blob"])
            return lambda k, v: "typeof(%s) = '%s'" % (k, t)
        if c == 7:
            return lambda k, v: "1"
        if c == 8:
            m = rng.randrange(2, 5)
            r = rng.randrange(m)
            return lambda k, v: "%s IN (SELECT k FROM probe WHERE id %% %d = %d)" % (k, m, r)
        if c == 9:
            t = rng.choice(["null", "integer", "real", "text", "blob"])
            return lambda k, v: "typeof(%s) = '%s'" % (v, t)
        if c == 10:
            a = p(self.draw_key())
            return lambda k, v: "%s IS %s" % (k, a)
        if c == 11:
            a, b = p(self.draw_key()), p(self.draw_key())
            return lambda k, v: "(%s = %s OR %s = %s)" % (k, a, k, b)
        if c == 12:
            a = p(self.draw_key())
            return lambda k, v: "%s = %s COLLATE NOCASE" % (k, a)
        if c == 13:
            return lambda k, v: "length(%s) > 1000" % v
        a = p(self.draw_key())
        return lambda k, v: "%s > %s AND typeof(%s) <> 'text'" % (k, a, k)

    def gen_value_expr(self, p, allow_big):
        rng = self.rng
        c = rng.randrange(16)
        if c < 4:
            a = p(self.draw_value(allow_big))
            return lambda k, v: a
        return [
            lambda k, v: "%s || 'x'" % v,
            lambda k, v: k,
            lambda k, v: "NULL",
            lambda k, v: "length(%s)" % v,
            lambda k, v: "-%s" % v,
            lambda k, v: "CAST(%s AS TEXT)" % v,
            lambda k, v: "CAST(%s AS BLOB)" % v,
            lambda k, v: "%s + 1" % v,
            lambda k, v: "zeroblob(3)",
            lambda k, v: "substr(%s, 2)" % v,
            lambda k, v: "(SELECT v FROM probe WHERE k = %s ORDER BY id LIMIT 1)" % k,
            lambda k, v: "(SELECT count(*) FROM {T})",
        ][c - 4]

    def gen_key_change(self, p):
        """(new key expression, restricting condition or None)."""
        rng = self.rng
        c = rng.randrange(13)
        if c < 3:
            a = p(self.draw_key())
            return (lambda k, v: a), None
        return [
            (lambda k, v: "%s + 1000000" % k,
             lambda k, v: "typeof(%s) = 'integer' AND %s BETWEEN -1000 AND 1000" % (k, k)),
            (lambda k, v: "%s - 1000000" % k,
             lambda k, v: "typeof(%s) = 'integer' AND %s BETWEEN 999000 AND 1001000" % (k, k)),
            (lambda k, v: "%s || 'x'" % k,
             lambda k, v: "typeof(%s) = 'text' AND length(%s) < 4" % (k, k)),
            (lambda k, v: "substr(%s, 1, length(%s) - 1)" % (k, k),
             lambda k, v: "typeof(%s) = 'text' AND %s GLOB '*x'" % (k, k)),
            (lambda k, v: "-%s" % k,
             lambda k, v: "typeof(%s) IN ('integer', 'real')" % k),
            (lambda k, v: "CAST(%s AS TEXT)" % k,
             lambda k, v: "typeof(%s) IN ('integer', 'real', 'blob')" % k),
            (lambda k, v: "CAST(%s AS BLOB)" % k,
             lambda k, v: "typeof(%s) = 'text'" % k),
            (lambda k, v: "CAST(%s AS INTEGER)" % k,
             lambda k, v: "typeof(%s) = 'real' AND abs(%s) < 100" % (k, k)),
            (lambda k, v: "%s * 1.0" % k,
             lambda k, v: "typeof(%s) = 'integer'" % k),
            (lambda k, v: v,
             lambda k, v: "(%s IS NULL OR length(%s) < 100)" % (v, v)),
        ][c - 3]

    # -- statements -----------------------------------------------------------------------------

    def gen_insert(self):
        rng = self.rng
        p = Params()
        clause = self.clause()
        verb = "INSERT %s" % clause if clause else "INSERT"
        if rng.random() < 0.04:
            verb, clause = "REPLACE", "OR REPLACE"
        c = rng.random()
        if c < 0.03:
            return self.gen_bulk_insert(p, verb, clause)
        if c < 0.06:
            # reads the table it writes: SQLite materialises the SELECT first
            sql = ("%s INTO {T}(key, value) SELECT key || 'y', value FROM {T} "
                   "WHERE length(key) < 6 ORDER BY key" % verb)
            return Stmt(sql, [], "write", clause == "OR ROLLBACK")
        if c < 0.45:
            sql = "%s INTO {T}(key, value) VALUES (%s, %s)" % (
                verb, p(self.draw_key()), p(self.draw_value(True)))
        elif c < 0.9:
            rows = [[self.draw_key(), self.draw_value(False)] for _ in range(rng.randrange(2, 7))]
            if rng.random() < 0.6:  # a duplicate half-way through
                j = rng.randrange(1, len(rows))
                i = rng.randrange(j)
                k = rows[i][0]
                rows[j][0] = self.variant(k) if rng.random() < 0.3 else k
            if rng.random() < 0.2:
                rows[rng.randrange(len(rows))][0] = self.existing_key()
            values = ", ".join("(%s, %s)" % (p(k), p(v)) for k, v in rows)
            sql = "%s INTO {T}(key, value) VALUES %s" % (verb, values)
        else:
            a = rng.randrange(1, 25)
            b = a + rng.randrange(0, 8)
            sql = ("%s INTO {T}(key, value) SELECT k, v FROM probe WHERE id BETWEEN %s AND %s "
                   "ORDER BY id" % (verb, p(a), p(b)))
        return Stmt(sql, p.values, "write", clause == "OR ROLLBACK")

    def gen_bulk_insert(self, p, verb, clause):
        """Hundreds of rows in one statement (grows the index; a conflict rolls them all back)."""
        rng = self.rng
        n = p(rng.randrange(50, 1500))
        base = p(rng.choice([0, 1000, -500, 2**62, 1e6]))
        key = rng.choice(["%s + i" % base, "%s + i * 0.5" % base, "printf('k%%05d', i)",
                          "CAST(printf('b%%d', i) AS BLOB)", "i %% 97", "printf('%%d', i)"])
        value = rng.choice(["i", "zeroblob(i %% 50)", "hex(i * 7919)", "NULL",
                            "printf('%%.*c', i %% 300, 'v')", "i * 0.25"])
        sql = ("WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < %s) "
               "%s INTO {T}(key, value) SELECT %s, %s FROM c" % (n, verb, key, value))
        return Stmt(sql, p.values, "write", clause == "OR ROLLBACK")

    def gen_update(self):
        rng = self.rng
        for _ in range(10):
            p = Params()
            clause = self.clause()
            verb = "UPDATE %s" % clause if clause else "UPDATE"
            if rng.random() < 0.4:  # values only
                single = rng.random() < 0.4
                if single:
                    a = p(self.draw_key())
                    cond = lambda k, v, a=a: "%s = %s" % (k, a)  # noqa: E731
                else:
                    cond = self.gen_cond(p)
                vexpr = self.gen_value_expr(p, single)
                sql = "%s {T} SET value = %s WHERE %s" % (verb, vexpr("key", "value"),
                                                          cond("key", "value"))
                return Stmt(sql, p.values, "write", clause == "OR ROLLBACK")
            # key change (maybe with the value too)
            if rng.random() < 0.5:
                a = p(self.draw_key())
                cond = lambda k, v, a=a: "%s = %s" % (k, a)  # noqa: E731
                kexpr, restrict = self.gen_key_change(p)
            else:
                kexpr, restrict = self.gen_key_change(p)
                if restrict is None or rng.random() < 0.4:
                    cond0 = self.gen_cond(p)
                    if restrict is None:
                        cond = cond0
                    else:
                        cond = (lambda k, v, r=restrict, c0=cond0:  # noqa: E731
                                "%s AND %s" % (r(k, v), c0(k, v)))
                else:
                    cond = restrict
            vexpr = self.gen_value_expr(p, False) if rng.random() < 0.3 else None
            sets = "key = %s" % kexpr("key", "value")
            if vexpr is not None:
                sets += ", value = %s" % vexpr("key", "value")
            if self.order_sensitive(cond, kexpr, vexpr, clause, p.values):
                self.stats["skipped"] += 1
                continue
            sql = "%s {T} SET %s WHERE %s" % (verb, sets, cond("key", "value"))
            return Stmt(sql, p.values, "write", clause == "OR ROLLBACK")
        return self.gen_delete()

    def order_sensitive(self, cond, kexpr, vexpr, clause, params):
        """True if the outcome of this key-changing UPDATE could depend on the (unspecified)
        order in which rows are visited. Computed on the native table, whose content equals
        the mmkv table's at this point."""
        cols = "a.key, %s" % kexpr("a.key", "a.value")
        if vexpr is not None:
            cols += ", %s" % vexpr("a.key", "a.value")
        sql = "SELECT %s FROM nt AS a WHERE %s" % (cols, cond("a.key", "a.value"))
        sql = sql.replace("{T}", "nt")
        try:
            rows = self.db.execute(sql, params).fetchall()
        except sqlite3.Error:
            return True  # let's not guess
        all_keys = set(canon(r[0]) for r in self.db.execute("SELECT key FROM nt"))
        olds = [canon(r[0]) for r in rows]
        news = [canon(r[1]) for r in rows]
        matched = set(olds)
        nulls = sum(1 for n in news if n is None)
        nonnull = [n for n in news if n is not None]
        dup_targets = len(set(nonnull)) < len(nonnull)
        hits_matched = any(n is not None and n != o and n in matched for o, n in zip(olds, news))
        static = sum(1 for o, n in zip(olds, news)
                     if n is not None and n != o and n in all_keys and n not in matched)
        abortive = clause in ("", "OR ABORT", "OR ROLLBACK")
        if hits_matched:
            return True
        if dup_targets:
            # Some conflict is then inevitable; with ABORT/ROLLBACK the statement fails whatever
            # the order, provided only one kind of error can happen.
            return not (abortive and nulls == 0 and not static)
        if clause == "OR FAIL" and len(rows) > 1 and (static or nulls):
            return True  # partial effects depend on the order
        if abortive and static and nulls:
            return True  # which error comes first depends on the order
        return False

    def gen_delete(self):
        p = Params()
        r = self.rng.random()
        small = self.db.execute("SELECT count(*) FROM nt").fetchone()[0] < 40
        if r < 0.015:
            return Stmt("DELETE FROM {T}", [], "write")
        if r < 0.05:
            return Stmt("DELETE FROM {T} WHERE key IN (SELECT key FROM {T} ORDER BY %s LIMIT %d)"
                        % (self.rng.choice(["key", "key DESC", "value, key"]),
                           self.rng.randrange(1, 5)), [], "write")
        if r < 0.5 or (small and r < 0.85):
            ps = [p(self.draw_key()) for _ in range(self.rng.choice([1, 1, 1, 2, 3]))]
            return Stmt("DELETE FROM {T} WHERE key IN (%s)" % ", ".join(ps), p.values, "write")
        cond = self.gen_cond(p)
        return Stmt("DELETE FROM {T} WHERE %s" % cond("key", "value"), p.values, "write")

    def gen_read(self):
        rng = self.rng
        p = Params()
        c = rng.randrange(34)
        K = self.draw_key
        if c == 0:
            return Stmt("SELECT key, value FROM {T} WHERE key = %s" % p(K()), p.values, "unordered")
        if c == 1:
            return Stmt("SELECT value, typeof(value), key, typeof(key) FROM {T} WHERE key = %s"
                        % p(self.variant(self.existing_key())), p.values, "unordered")
        if c == 2:
            ps = ", ".join(p(K()) for _ in range(rng.randrange(1, 7)))
            return Stmt("SELECT key, typeof(key), value, typeof(value) FROM {T} WHERE key IN (%s)"
                        % ps, p.values, "unordered")
        if c == 3:
            ps = ", ".join(p(K()) for _ in range(rng.randrange(1, 7)))
            return Stmt("SELECT key, value FROM {T} WHERE key IN (%s) ORDER BY key DESC" % ps,
                        p.values, "ordered")
        if c in (4, 5):
            op = rng.choice(["<", "<=", ">", ">="])
            order = rng.choice(["", " ORDER BY key", " ORDER BY key DESC"])
            limit = ""
            if order and rng.random() < 0.3:
                limit = " LIMIT %d OFFSET %d" % (rng.randrange(0, 6), rng.randrange(0, 4))
            return Stmt("SELECT key, typeof(key), value FROM {T} WHERE key %s %s%s%s"
                        % (op, p(K()), order, limit), p.values,
                        "ordered" if order else "unordered")
        if c == 6:
            order = rng.choice(["", " ORDER BY key"])
            return Stmt("SELECT key, value FROM {T} WHERE key BETWEEN %s AND %s%s"
                        % (p(K()), p(K()), order), p.values, "ordered" if order else "unordered")
        if c == 7:
            return Stmt("SELECT key, value FROM {T} WHERE key > %s AND key <= %s ORDER BY key"
                        % (p(K()), p(K())), p.values, "ordered")
        if c == 8:
            return Stmt("SELECT key, value FROM {T} WHERE key IS %s" % p(K()), p.values,
                        "unordered")
        if c == 9:
            return Stmt("SELECT key FROM {T} WHERE key IS NOT %s" % p(K()), p.values,
                        "unordered")
        if c == 10:
            return Stmt("SELECT key, value FROM {T} ORDER BY key", [], "ordered")
        if c == 11:
            return Stmt("SELECT key, typeof(key), value, typeof(value) FROM {T} ORDER BY key DESC",
                        [], "ordered")
        if c == 12:
            return Stmt("SELECT key, value FROM {T} ORDER BY value, key", [], "ordered")
        if c == 13:
            return Stmt("SELECT key, value FROM {T} ORDER BY value", [], "valseq")
        if c == 14:
            return Stmt("SELECT * FROM {T}", [], "unordered")
        if c == 15:
            return Stmt("SELECT count(*), count(value), min(key), max(key), count(DISTINCT value) "
                        "FROM {T}", [], "ordered")
        if c == 16:
            col = rng.choice(["value", "key", "length(value)", "key * 2"])
            return Stmt("SELECT sum(x), total(x), min(x), max(x), avg(x), count(x) FROM "
                        "(SELECT %s AS x FROM {T} ORDER BY key)" % col, [], "ordered")
        if c == 17:
            return Stmt("SELECT group_concat(x, '|') FROM (SELECT quote(key) || '=' || "
                        "quote(value) AS x FROM {T} ORDER BY key)", [], "ordered")
        if c == 18:
            return Stmt("SELECT group_concat(value) FROM (SELECT value FROM {T} "
                        "WHERE length(value) < 1000 ORDER BY key)", [], "ordered")
        if c == 19:
            return Stmt("SELECT typeof(key), typeof(value), count(*) FROM {T} GROUP BY 1, 2",
                        [], "unordered")
        if c == 20:
            return Stmt("SELECT sum(length(value)), sum(length(key)), max(length(value)) FROM {T}",
                        [], "ordered")
        if c == 21:
            return Stmt("SELECT a.key, a.value, b.value FROM {T} AS a JOIN nt AS b USING(key)",
                        [], "unordered")
        if c == 22:
            return Stmt("SELECT b.key, a.key, typeof(a.key), a.value FROM nt AS b "
                        "LEFT JOIN {T} AS a ON a.key = b.key", [], "unordered")
        if c == 23:
            return Stmt("SELECT p.id, p.k, t.key, typeof(t.key), t.value FROM probe AS p "
                        "JOIN {T} AS t ON t.key = p.k", [], "unordered")
        if c == 24:
            return Stmt("SELECT p.id, t.key, t.value FROM probe AS p "
                        "LEFT JOIN {T} AS t ON t.key = p.k ORDER BY p.id", [], "ordered")
        if c == 25:
            return Stmt("SELECT p.id, (SELECT value FROM {T} WHERE key = p.k) FROM probe AS p "
                        "ORDER BY p.id", [], "ordered")
        if c == 26:
            return Stmt("SELECT key, typeof(key) FROM {T} WHERE key IN (SELECT k FROM probe)",
                        [], "unordered")
        if c == 27:
            return Stmt("SELECT count(*) FROM {T} AS a, {T} AS b WHERE a.key = b.key", [],
                        "ordered")
        if c == 28:
            cond = self.gen_cond(p)
            return Stmt("SELECT key, length(value), hex(value) FROM {T} WHERE %s"
                        % cond("key", "value"), p.values, "unordered")
        if c == 29:
            cond = self.gen_cond(p)
            return Stmt("SELECT count(*), sum(length(value)) FROM {T} WHERE %s"
                        % cond("key", "value"), p.values, "ordered")
        if c == 30:
            return Stmt("SELECT key FROM {T} WHERE key = %s COLLATE NOCASE" % p(K()), p.values,
                        "unordered")
        if c == 31:
            pat = rng.choice(["a%", "%b", "_", "A%", "1%", "%"])
            op = rng.choice(["LIKE", "GLOB"])
            if op == "GLOB":
                pat = pat.replace("%", "*").replace("_", "?")
            return Stmt("SELECT key FROM {T} WHERE key %s '%s'" % (op, pat), [], "unordered")
        if c == 32:
            return Stmt("SELECT key, value FROM {T} WHERE key = %s AND value IS %s"
                        % (p(K()), p(self.draw_value(False))), p.values, "unordered")
        return Stmt("SELECT EXISTS (SELECT 1 FROM {T} WHERE key = %s), "
                    "(SELECT count(*) FROM {T} WHERE key < %s)" % (p(K()), p(K())), p.values,
                    "ordered")

    def gen_write(self):
        rng = self.rng
        if self.big_pending and (self.big_pending > 2 or rng.random() < 0.15):
            self.big_pending = 0
            return Stmt("DELETE FROM {T} WHERE length(value) > 100000", [], "write")
        n = self.db.execute("SELECT count(*) FROM nt").fetchone()[0]
        r = rng.random()
        if n > 400 and r < 0.3:  # after a bulk insert: cut the table down again
            p = Params()
            cond = rng.choice([
                "typeof(key) IN ('integer', 'real') AND key >= %s" % p(rng.choice([-600, 1000])),
                "key GLOB 'k*'", "typeof(key) = 'blob' AND length(key) < 10",
                "key BETWEEN %s AND %s" % (p(rng.choice([0, 2**62, 1e6])),
                                           p(rng.choice([500, 2**62 + 1000, 1e6 + 800])))])
            return Stmt("DELETE FROM {T} WHERE %s" % cond, p.values, "write")
        if n > 120 and r < 0.5:
            return self.gen_delete()
        if r < 0.5:
            return self.gen_insert()
        if r < 0.85:
            return self.gen_update()
        return self.gen_delete()

    # -- transactions ---------------------------------------------------------------------------

    def in_txn(self):
        return self.began or bool(self.savepoints)

    def gen_txn(self):
        rng = self.rng
        if not self.in_txn():
            if rng.random() < 0.7:
                self.began = True
                return rng.choice(["BEGIN", "BEGIN", "BEGIN IMMEDIATE", "BEGIN DEFERRED"])
            self.sp_counter += 1
            self.savepoints.append("sp%d" % self.sp_counter)
            return "SAVEPOINT sp%d" % self.sp_counter
        ops = ["commit", "commit", "rollback", "savepoint", "savepoint"]
        if self.savepoints:
            ops += ["release", "release", "rollback_to", "rollback_to"]
        op = rng.choice(ops)
        if op == "savepoint" and len(self.savepoints) >= 5:
            op = "release"
        if op == "commit":
            self.began = False
            self.savepoints = []
            return rng.choice(["COMMIT", "END"])
        if op == "rollback":
            self.began = False
            self.savepoints = []
            return "ROLLBACK"
        if op == "savepoint":
            self.sp_counter += 1
            self.savepoints.append("sp%d" % self.sp_counter)
            return "SAVEPOINT sp%d" % self.sp_counter
        i = rng.randrange(len(self.savepoints))
        name = self.savepoints[i]
        if op == "release":
            del self.savepoints[i:]
            return "RELEASE %s" % name if rng.random() < 0.5 else "RELEASE SAVEPOINT %s" % name
        del self.savepoints[i + 1:]
        return "ROLLBACK TO %s" % name if rng.random() < 0.5 else "ROLLBACK TO SAVEPOINT %s" % name

    # -- running ------------------------------------------------------------------------------

    def fail(self, what, detail):
        raise Mismatch("step %d: %s: %s" % (self.step_no, what, detail))

    def check_txn_state(self, what):
        if self.db.in_transaction != self.in_txn():
            self.fail(what, "in_transaction is %s, native semantics say %s"
                      % (self.db.in_transaction, self.in_txn()))

    def compare_content(self, what, extra=""):
        a = execute(self.db, "SELECT key, value FROM kv", ())
        b = execute(self.db, "SELECT key, value FROM nt", ())
        if a.error is not None or b.error is not None:
            self.fail(what, "reading the whole tables: mmkv -> %s; native -> %s"
                      % (a.show("unordered"), b.show("unordered")))
        ra = sorted(a.rows)
        rb = sorted(b.rows)
        if ra != rb:
            only_a = [r for r in ra if r not in rb]
            only_b = [r for r in rb if r not in ra]
            self.fail(what, "table contents differ afterwards (%d vs %d rows); only in mmkv: %s; "
                      "only in native: %s%s" % (len(ra), len(rb), show_rows(only_a),
                                                show_rows(only_b), extra))
        self.rows_seen += len(rb)
        self.contents_compared += 1

    def run_txn(self):
        sql = self.gen_txn()
        self.stats["txn"] += 1
        if VERBOSE:
            print("  %d: %s" % (self.step_no, sql))
        try:
            self.db.execute(sql)
        except sqlite3.Error as e:
            self.fail(sql, "raised %s: %s" % (type(e).__name__, e))
        self.check_txn_state(sql)
        self.compare_content(sql)

    def run_stmt(self, st):
        if SKIP is not None and SKIP.search(st.sql):
            self.stats["skipped"] += 1
            return
        in_txn = self.in_txn()
        sql_kv = st.sql.replace("{T}", "kv")
        sql_nt = st.sql.replace("{T}", "nt")
        substituted = st.rollback_clause and in_txn
        if substituted:
            # OR ROLLBACK would roll back the whole transaction (the mmkv table's changes too):
            # the native side runs with ABORT, which fails exactly when ROLLBACK would.
            sql_nt = sql_nt.replace("OR ROLLBACK", "OR ABORT")
        if VERBOSE:
            print("  %d: %s %s" % (self.step_no, sql_kv, show_params(st.params)))
        b = execute(self.db, sql_nt, st.params)
        a = execute(self.db, sql_kv, st.params)
        if b.error is not None:
            self.stats["errors"] += 1
        why = compare(st.mode, a, b)
        if why is not None:
            detail = "%s\n    SQL: %s\n    params: %s\n    mmkv   -> %s\n    native -> %s" % (
                why, sql_kv, show_params(st.params), a.show(st.mode), b.show(st.mode))
            if substituted:
                detail += "\n    (native ran: %s)" % sql_nt
            self.fail("mismatch", detail)
        if st.mode == "write":
            if st.rollback_clause and in_txn and b.error is not None \
                    and b.error[0] == "IntegrityError":
                self.began = False
                self.savepoints = []
            extra = "\n    SQL: %s\n    params: %s\n    mmkv   -> %s\n    native -> %s" % (
                sql_kv, show_params(st.params), a.show(st.mode), b.show(st.mode))
            self.check_txn_state(sql_kv)
            self.compare_content("after a write", extra)

    def reopen(self):
        self.db.close()
        self.connect(False)
        self.stats["reopen"] += 1
        self.compare_content("close and reopen the database")

    def run(self):
        self.connect(True)
        try:
            rng = self.rng
            for self.step_no in range(1, self.steps + 1):
                r = rng.random()
                if r < 0.07:
                    self.run_txn()
                elif r < 0.52:
                    self.stats["write"] += 1
                    self.run_stmt(self.gen_write())
                elif r < 0.523 and self.kind == "file" and not self.in_txn():
                    self.reopen()
                else:
                    self.stats["read"] += 1
                    self.run_stmt(self.gen_read())
            self.step_no += 1
            if self.in_txn():
                self.db.execute("COMMIT")
                self.began = False
                self.savepoints = []
                self.compare_content("final COMMIT")
            if self.kind == "file":
                self.reopen()
        finally:
            if getattr(self, "db", None) is not None:
                self.db.close()


def run_sequence(kind, seed, steps):
    name = "differential %s seed=%d" % (kind, seed)
    repro = ("(reproduce: MMKV_SEED=%d MMKV_DIFF_DB=%s MMKV_DIFF_STEPS=%d make test "
             "T=test_differential)" % (seed, kind, steps))
    print("# %s: running %s" % (name, repro))  # names the sequence if the process crashes
    sys.stdout.flush()
    t0 = time.time()
    with TempDir() as d:
        seq = Sequence(kind, seed, steps, d)
        try:
            seq.run()
        except Mismatch as e:
            return check(name, False, "%s %s" % (e, repro))
        except Exception:
            return check(name, False, "step %d: unexpected exception %s\n%s"
                         % (seq.step_no, repro, traceback.format_exc()))
    s = seq.stats
    return check("%s (%d steps: %d writes, %d errors, %d reads, %d txn, %d reopen, "
                 "%d skipped; %.0f rows on average; %.1fs)"
                 % (name, steps, s["write"], s["errors"], s["read"], s["txn"], s["reopen"],
                    s["skipped"], seq.rows_seen / max(1, seq.contents_compared),
                    time.time() - t0), True)


def test_differential():
    steps = default_steps()
    for kind in kinds():
        for seed in seeds():
            run_sequence(kind, seed, steps)


if __name__ == "__main__":
    # A hang inside the extension (a lock never released, a loop) must not hang the suite.
    faulthandler.dump_traceback_later(int(os.environ.get("MMKV_DIFF_TIMEOUT", "600")), exit=True)
    harness.main([test_differential])
