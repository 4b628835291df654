"""One commit for SQLite and mmkv: a transaction that writes an mmkv table and native tables of a
database file commits or rolls back as one, also across a SIGKILL at any moment, and a read
transaction sees mmkv and native tables as of one moment.

1. Cross-table atomicity in one process (WAL and rollback journal): seeded random transactions
   write kv and a native table `ledger` that records what was done to kv, and end in COMMIT,
   ROLLBACK, ROLLBACK TO a savepoint then COMMIT, or a failing statement then COMMIT/ROLLBACK.
   After each, kv must equal a model (updated only for committed work), ledger must equal its
   model, and ledger's last record per key must equal kv's content.
2. Crash atomicity: a child commits transactions each writing kv and ledger with one transaction
   number and is killed with SIGKILL at random moments (also in the middle of a transaction, of a
   multi-row statement, of a commit). Every acknowledged commit must be there, whole, in both
   tables; at most the one in-flight transaction more, whole; nothing partial; the next writer
   needs no manual step. WAL and rollback journal, mmkv sync=full, normal and off (a process
   crash loses nothing under any of them).
   MMKV_CRASH_ROUNDS scales the number of kills per configuration (default 15).
3. Snapshots across two connections: in WAL a read transaction keeps seeing the old state of kv
   and ledger while another connection commits to both; in rollback-journal mode the writer's
   commit gets "database is locked" while the read transaction is open and succeeds after.
"""
import os
import random
import select
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import CHILD_ENV, PYTHON, TempDir, check, connect, enc  # noqa: E402

sqlite3 = harness.sqlite3


def dict_diff(got, expected, limit=4):
    """'' if the two {key: value} dicts agree type for type, else a summary of the differences."""
    g = {k: enc(v) for k, v in got.items()}
    e = {k: enc(v) for k, v in expected.items()}
    if g == e:
        return ""
    missing = [k for k in e if k not in g]
    extra = [k for k in g if k not in e]
    changed = [k for k in e if k in g and g[k] != e[k]]
    out = "%d rows, expected %d" % (len(g), len(e))
    if missing:
        out += "; missing %d: %s" % (len(missing), [(k, e[k]) for k in missing[:limit]])
    if extra:
        out += "; unexpected %d: %s" % (len(extra), [(k, g[k]) for k in extra[:limit]])
    if changed:
        out += "; wrong value for %d: %s" % (
            len(changed), ["%r: got %s, expected %s" % (k, g[k], e[k]) for k in changed[:limit]])
    return out


class Failures:
    """Collects failures per check name; report() prints one PASS/FAIL line per name."""

    def __init__(self, prefix, names):
        self.prefix = prefix
        self.names = list(names)
        self.items = {n: [] for n in self.names}

    def add(self, name, detail):
        if name not in self.items:
            self.names.append(name)
            self.items[name] = []
        self.items[name].append(detail)

    def any(self):
        return any(self.items.values())

    def report(self):
        for n in self.names:
            f = self.items[n]
            check("%s: %s" % (self.prefix, n), not f,
                  "%d failure(s); first: %s" % (len(f), " || ".join(f[:3])))


# ---------------------------------------------------------------------------------------------
# 1. Cross-table atomicity in one process.

DELETED = b"\xde\xad<deleted>"  # ledger's v for a key deleted from kv; never a kv value
P1_KEYS = list(range(30)) + ["k%d" % i for i in range(15)]
P1_TRANSACTIONS = 250


def keyorder(k):
    return (0, k) if isinstance(k, int) else (1, k)


def p1_value(rnd):
    r = rnd.random()
    if r < 0.2:
        return rnd.randint(-10 ** 12, 10 ** 12)
    if r < 0.35:
        return rnd.random() * 1000 - 500.5
    if r < 0.55:
        return "t%d" % rnd.randint(0, 10 ** 6)
    if r < 0.7:
        return b"b" + bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 20)))
    if r < 0.8:
        return None
    if r < 0.84:
        return "L%d" % rnd.randint(0, 9) * rnd.randint(500, 30000)
    return rnd.randint(0, 3)


class CrossTable:
    """Random transactions on kv + ledger against a model of both."""

    def __init__(self, path, label, seed, fails):
        self.path, self.label, self.seed, self.fails = path, label, seed, fails
        self.rnd = random.Random(seed)
        self.db = connect(path)
        self.other = connect(path)  # a second connection that only reads
        self.model = {}    # committed kv
        self.ledger = []   # committed ledger rows (k, v); id = index + 1
        self.work = self.wled = None
        self.steps = []

    # -- writing ---------------------------------------------------------------------------------
    def led_rows(self, rows):
        base = len(self.wled)
        if rows:
            self.db.executemany("INSERT INTO ledger(id, k, v) VALUES(?, ?, ?)",
                                [(base + 1 + j, k, v) for j, (k, v) in enumerate(rows)])
        self.wled.extend(rows)

    def pair(self, kv_sql, params, rows):
        """Runs one kv statement and records rows in ledger, in random order."""
        if self.rnd.random() < 0.5:
            self.db.execute(kv_sql, params)
            self.led_rows(rows)
            self.steps.append("kv,ledger")
        else:
            self.led_rows(rows)
            self.db.execute(kv_sql, params)
            self.steps.append("ledger,kv")

    def op(self):
        rnd, db, w = self.rnd, self.db, self.work
        present = sorted(w, key=keyorder)
        absent = [k for k in P1_KEYS if k not in w]
        kind = rnd.choice(["insert", "insert", "update", "update", "delete", "replace", "replace",
                           "rekey", "multi_insert", "multi_update", "multi_delete", "ignore",
                           "from_ledger"])
        if kind in ("update", "delete", "rekey", "multi_update", "multi_delete", "from_ledger") \
                and not present:
            kind = "insert"
        if kind in ("insert", "rekey", "multi_insert") and not absent:
            kind = "replace"
        self.steps.append(kind)
        if kind == "insert":
            k, v = rnd.choice(absent), p1_value(rnd)
            self.pair("INSERT INTO kv VALUES(?, ?)", (k, v), [(k, v)])
            w[k] = v
        elif kind == "update":
            k, v = rnd.choice(present), p1_value(rnd)
            self.pair("UPDATE kv SET value = ? WHERE key = ?", (v, k), [(k, v)])
            w[k] = v
        elif kind == "delete":
            k = rnd.choice(present)
            self.pair("DELETE FROM kv WHERE key = ?", (k,), [(k, DELETED)])
            del w[k]
        elif kind == "replace":
            k, v = rnd.choice(P1_KEYS), p1_value(rnd)
            self.pair("INSERT OR REPLACE INTO kv VALUES(?, ?)", (k, v), [(k, v)])
            w[k] = v
        elif kind == "ignore":
            k, v = rnd.choice(P1_KEYS), p1_value(rnd)
            rows = [] if k in w else [(k, v)]
            self.pair("INSERT OR IGNORE INTO kv VALUES(?, ?)", (k, v), rows)
            if k not in w:
                w[k] = v
        elif kind == "rekey":
            k, k2 = rnd.choice(present), rnd.choice(absent)
            self.pair("UPDATE kv SET key = ? WHERE key = ?", (k2, k), [(k, DELETED), (k2, w[k])])
            w[k2] = w.pop(k)
        elif kind == "multi_insert":
            ks = rnd.sample(absent, rnd.randint(1, min(6, len(absent))))
            vs = [p1_value(rnd) for _ in ks]
            params = [x for kv in zip(ks, vs) for x in kv]
            self.pair("INSERT INTO kv VALUES " + ", ".join(["(?, ?)"] * len(ks)), params,
                      list(zip(ks, vs)))
            w.update(zip(ks, vs))
        elif kind == "multi_update":
            ks = sorted(rnd.sample(present, rnd.randint(1, min(8, len(present)))), key=keyorder)
            v = p1_value(rnd)
            sql = "UPDATE kv SET value = ? WHERE key IN (%s)" % ", ".join("?" * len(ks))
            if rnd.random() < 0.5:
                # kv first, then ledger records what kv now holds (read inside the transaction).
                db.execute(sql, [v] + ks)
                db.execute("INSERT INTO ledger(k, v) SELECT key, value FROM kv WHERE key IN (%s) "
                           "ORDER BY key" % ", ".join("?" * len(ks)), ks)
                self.wled.extend((k, v) for k in ks)
                self.steps.append("kv,ledger-from-kv")
            else:
                self.pair(sql, [v] + ks, [(k, v) for k in ks])
            for k in ks:
                w[k] = v
        elif kind == "multi_delete":
            ks = rnd.sample(present, rnd.randint(1, min(5, len(present))))
            self.pair("DELETE FROM kv WHERE key IN (%s)" % ", ".join("?" * len(ks)), ks,
                      [(k, DELETED) for k in ks])
            for k in ks:
                del w[k]
        elif kind == "from_ledger":
            # kv's new value is read from ledger inside the same statement.
            k = rnd.choice(present)
            db.execute("UPDATE kv SET value = (SELECT count(*) FROM ledger) WHERE key = ?", (k,))
            w[k] = len(self.wled)
            self.led_rows([(k, w[k])])

    def fail(self):
        """A statement that fails half-way; it must be undone and leave the transaction open."""
        rnd, db, w = self.rnd, self.db, self.work
        present = sorted(w, key=keyorder)
        absent = [k for k in P1_KEYS if k not in w]
        options = ["null_insert"]
        if present and absent:
            options += ["dup_insert", "dup_insert"]
        if present:
            options.append("null_update")
        if len(present) >= 2:
            options.append("dup_rekey")
        if self.wled:
            options.append("dup_ledger")
        kind = rnd.choice(options)
        self.steps.append("FAIL:" + kind)
        new = rnd.sample(absent, min(len(absent), rnd.randint(0, 3)))
        if kind == "dup_insert":
            ks = new + [rnd.choice(present)] + rnd.sample(absent, min(len(absent), 1))
            sql = "INSERT INTO kv VALUES " + ", ".join(["(?, ?)"] * len(ks))
            params = [x for k in ks for x in (k, "never")]
        elif kind == "null_insert":
            ks = new + [None]
            sql = "INSERT INTO kv VALUES " + ", ".join(["(?, ?)"] * len(ks))
            params = [x for k in ks for x in (k, "never")]
        elif kind == "null_update":
            ks = rnd.sample(present, min(len(present), rnd.randint(1, 4)))
            sql = "UPDATE kv SET key = NULL, value = 'never' WHERE key IN (%s)" % (
                ", ".join("?" * len(ks)))
            params = ks
        elif kind == "dup_rekey":
            a, b = rnd.sample(present, 2)
            sql, params = "UPDATE kv SET key = ?, value = 'never' WHERE key = ?", (b, a)
        else:  # dup_ledger: new ledger rows then an existing id
            n = len(self.wled)
            sql = "INSERT INTO ledger(id, k, v) VALUES (?, 'never', 1), (?, 'never', 2), (?, 'never', 3)"
            params = (n + 1, n + 2, rnd.randint(1, n))
        try:
            db.execute(sql, params)
        except sqlite3.IntegrityError:
            pass
        except sqlite3.Error as e:
            self.fails.add("failing statement raises IntegrityError",
                           "%s: %s raised %s: %s" % (self.where(), kind, type(e).__name__, e))
        else:
            self.fails.add("failing statement raises IntegrityError",
                           "%s: %s (%s %r) raised nothing" % (self.where(), kind, sql, params))
        if not db.in_transaction:
            self.fails.add("failing statement leaves the transaction open",
                           "%s: after %s the connection is in autocommit" % (self.where(), kind))
            return False
        # Inside the transaction, the failed statement left nothing behind.
        got = dict(db.execute("SELECT key, value FROM kv").fetchall())
        d = dict_diff(got, w)
        if d:
            self.fails.add("failed statement undone inside the transaction",
                           "%s: after %s: kv %s" % (self.where(), kind, d))
            self.work = got
        nled = db.execute("SELECT count(*) FROM ledger").fetchone()[0]
        if nled != len(self.wled):
            self.fails.add("failed statement undone inside the transaction",
                           "%s: after %s: ledger has %d rows, expected %d" % (
                               self.where(), kind, nled, len(self.wled)))
        return True

    def where(self):
        return "%s seed %r tx %d steps %s" % (self.label, self.seed, self.t, self.steps)

    # -- one transaction -------------------------------------------------------------------------
    def transaction(self, t):
        rnd, db = self.rnd, self.db
        self.t, self.steps = t, []
        self.work, self.wled = dict(self.model), list(self.ledger)
        ending = rnd.choice(["commit", "commit", "commit", "rollback", "rollback", "savepoint",
                             "savepoint", "fail_commit", "fail_rollback"])
        self.steps.append(ending)
        nops = rnd.randint(1, 6)
        outer_sp = ending in ("commit", "rollback") and rnd.random() < 0.25
        try:
            if outer_sp:
                db.execute("SAVEPOINT outer_sp")
            else:
                db.execute(rnd.choice(["BEGIN", "BEGIN", "BEGIN IMMEDIATE"]))
            sp_at = rnd.randint(0, nops) if ending == "savepoint" else None
            fail_at = rnd.randint(0, nops) if ending.startswith("fail") else None
            saved = None
            for i in range(nops + 1):
                if i == sp_at:
                    db.execute("SAVEPOINT sp")
                    saved = (dict(self.work), len(self.wled))
                if i == fail_at and not self.fail():
                    raise RuntimeError("transaction ended by the failing statement")
                if i < nops:
                    if ending == "savepoint" and sp_at is not None and i > sp_at and \
                            rnd.random() < 0.3:
                        # A nested savepoint, released or rolled back to.
                        db.execute("SAVEPOINT inner")
                        inner = (dict(self.work), len(self.wled))
                        self.op()
                        if rnd.random() < 0.5:
                            db.execute("RELEASE inner")
                            self.steps.append("release-inner")
                        else:
                            db.execute("ROLLBACK TO inner")
                            db.execute("RELEASE inner")
                            self.work, self.wled = inner[0], self.wled[:inner[1]]
                            self.steps.append("rollback-to-inner")
                    else:
                        self.op()
            if ending == "savepoint":
                db.execute("ROLLBACK TO sp")
                self.work, self.wled = saved[0], self.wled[:saved[1]]
                for _ in range(rnd.randint(0, 2)):
                    self.op()
                if rnd.random() < 0.5:
                    db.execute("RELEASE sp")
                db.execute("COMMIT")
                committed = True
            elif ending in ("commit", "fail_commit"):
                db.execute("RELEASE outer_sp" if outer_sp else "COMMIT")
                committed = True
            else:
                if outer_sp:
                    db.execute("ROLLBACK TO outer_sp")
                    db.execute("RELEASE outer_sp")
                else:
                    db.execute("ROLLBACK")
                committed = False
        except (sqlite3.Error, RuntimeError) as e:
            self.fails.add("no unexpected error", "%s: %s: %s" % (self.where(), type(e).__name__, e))
            if db.in_transaction:
                db.execute("ROLLBACK")
            self.resync()
            return
        if db.in_transaction:
            self.fails.add("transaction ended", "%s: still in a transaction" % self.where())
            db.execute("ROLLBACK")
        if committed:
            self.model, self.ledger = self.work, self.wled
        self.verify(self.db, "same connection")
        self.verify(self.other, "other connection")

    # -- checking --------------------------------------------------------------------------------
    def resync(self):
        self.model = dict(self.db.execute("SELECT key, value FROM kv").fetchall())
        self.ledger = [(k, v) for _, k, v in
                       self.db.execute("SELECT id, k, v FROM ledger ORDER BY id").fetchall()]

    def verify(self, conn, which):
        where = "%s (%s)" % (self.where(), which)
        try:
            got = dict(conn.execute("SELECT key, value FROM kv").fetchall())
            led = conn.execute("SELECT id, k, v FROM ledger ORDER BY id").fetchall()
            count = conn.execute("SELECT count(*) FROM kv").fetchone()[0]
            probes = self.rnd.sample(P1_KEYS, 5)
            looked = {k: conn.execute("SELECT value FROM kv WHERE key = ?", (k,)).fetchall()
                      for k in probes}
        except sqlite3.Error as e:
            self.fails.add("no unexpected error", "%s: reading: %s: %s" % (
                where, type(e).__name__, e))
            return
        bad = False
        d = dict_diff(got, self.model)
        if d:
            self.fails.add("kv equals the model of committed work", "%s: kv %s" % (where, d))
            bad = True
        exp_led = [(i + 1, enc(k), enc(v)) for i, (k, v) in enumerate(self.ledger)]
        got_led = [(i, enc(k), enc(v)) for i, k, v in led]
        if got_led != exp_led:
            first = next((j for j in range(min(len(got_led), len(exp_led)))
                          if got_led[j] != exp_led[j]), min(len(got_led), len(exp_led)))
            self.fails.add("ledger equals the model of committed work",
                           "%s: ledger has %d rows, expected %d; first difference at row %d: "
                           "got %s, expected %s" % (where, len(got_led), len(exp_led), first + 1,
                                                    got_led[first:first + 2],
                                                    exp_led[first:first + 2]))
            bad = True
        derived = {}
        for _, k, v in led:
            if v == DELETED:
                derived.pop(k, None)
            else:
                derived[k] = v
        d = dict_diff(got, derived)
        if d:
            self.fails.add("ledger's last record per key equals kv",
                           "%s: kv vs ledger: %s" % (where, d))
            bad = True
        if count != len(got):
            self.fails.add("count(*) equals the scan", "%s: count(*) %d, scan %d rows" % (
                where, count, len(got)))
        wrong = [(k, looked[k], self.model.get(k)) for k in probes
                 if [enc(v) for (v,) in looked[k]] != ([enc(self.model[k])] if k in self.model
                                                       else [])]
        if wrong:
            self.fails.add("point lookups equal the model",
                           "%s: key, got, expected: %s" % (where, wrong[:3]))
            bad = True
        if bad:
            self.resync()

    def run(self, n):
        for t in range(n):
            self.transaction(t)
            if t % 60 == 59:
                # A fresh connection (the table opened anew) sees the same.
                self.db.close()
                self.db = connect(self.path)
                self.verify(self.db, "reopened connection")
        self.db.close()
        self.other.close()
        db = connect(self.path)
        self.db = db
        self.verify(db, "after closing every connection")
        db.close()


def test_cross_table_atomicity():
    for journal in ("wal", "delete"):
        seed = harness.seed_of("atomic-%s-1" % journal)
        fails = Failures("cross-table, journal_mode=%s, seed %r" % (journal, seed), [
            "no unexpected error", "failing statement raises IntegrityError",
            "failing statement leaves the transaction open",
            "failed statement undone inside the transaction",
            "kv equals the model of committed work", "ledger equals the model of committed work",
            "ledger's last record per key equals kv", "count(*) equals the scan",
            "point lookups equal the model"])
        with TempDir() as d:
            path = os.path.join(d, "app.db")
            db = connect(path)
            mode = db.execute("PRAGMA journal_mode=%s" % journal).fetchone()[0]
            check("cross-table: journal_mode=%s set" % journal, mode == journal, "got %r" % mode)
            db.execute("CREATE TABLE ledger(id INTEGER PRIMARY KEY, k, v)")
            db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
            db.close()
            t0 = time.time()
            CrossTable(path, "journal_mode=%s" % journal, seed, fails).run(P1_TRANSACTIONS)
            print("info: cross-table journal_mode=%s: %d transactions in %.1f s" % (
                journal, P1_TRANSACTIONS, time.time() - t0))
        fails.report()


# ---------------------------------------------------------------------------------------------
# 2. Crash atomicity.

# Shared by the parent and the child: what transaction n writes. Transaction n inserts ledger row
# n (with its batch size), kv keys 'tx<n>' and n<n>:0 .. n<n>:<size-1>, sets kv 'last' = n
# (INSERT OR REPLACE) and deletes n<n-1>:0. With `rnd` (the child) the steps come in random order
# with random pauses between them and sometimes in the middle of the multi-row insert.
TX_SRC = r'''
import random, time
def tx_size(seed, n):
    return random.Random("%s/%d" % (seed, n)).choice([1, 2, 5, 20, 60, 150, 400])
def tx_key(n, i):
    return "n%d:%d" % (n, i)
def tx_value(n, i):
    return "v%d:%d:" % (n, i) + "p" * ((n * 31 + i * 7) % 300)
def tx_note(n):
    return "note%d:" % n + "q" * (n * 97 % 6000)
PAUSE = {"at": -1, "secs": 0.0}
def slow_value(n, i):
    if i == PAUSE["at"]:
        time.sleep(PAUSE["secs"])
    return tx_value(n, i)
def register(db):
    db.create_function("tx_key", 2, tx_key)
    db.create_function("slow_value", 2, slow_value)
def write_tx(db, seed, n, rnd=None):
    size = tx_size(seed, n)
    steps = ["ledger", "batch", "tx", "last", "delete"]
    if rnd is not None:
        rnd.shuffle(steps)
        PAUSE["at"] = rnd.randrange(size) if rnd.random() < 0.4 else -1
        PAUSE["secs"] = rnd.random() * 0.02
    else:
        PAUSE["at"] = -1
    def pause():
        if rnd is not None and rnd.random() < 0.3:
            time.sleep(rnd.random() * 0.01)
    db.execute("BEGIN")
    for s in steps:
        pause()
        if s == "ledger":
            db.execute("INSERT INTO ledger(n, size, note) VALUES(?, ?, ?)", (n, size, tx_note(n)))
        elif s == "batch":
            if rnd is None or rnd.random() < 0.6:
                db.execute("INSERT INTO kv(key, value) WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL "
                           "SELECT i + 1 FROM c WHERE i + 1 < ?) SELECT tx_key(?, i), "
                           "slow_value(?, i) FROM c", (size, n, n))
            else:
                def rows():
                    for i in range(size):
                        if i == PAUSE["at"]:
                            time.sleep(PAUSE["secs"])
                        yield tx_key(n, i), tx_value(n, i)
                db.executemany("INSERT INTO kv VALUES(?, ?)", rows())
        elif s == "tx":
            db.execute("INSERT INTO kv VALUES(?, ?)", ("tx%d" % n, n))
        elif s == "last":
            db.execute("INSERT OR REPLACE INTO kv VALUES('last', ?)", (n,))
        elif s == "delete" and n > 1:
            db.execute("DELETE FROM kv WHERE key = ?", (tx_key(n - 1, 0),))
    pause()
    if rnd is not None:
        print("committing %d" % n, flush=True)
    db.execute("COMMIT")
'''
_tx = {}
exec(TX_SRC, _tx)
tx_size, tx_key, tx_value, tx_note = _tx["tx_size"], _tx["tx_key"], _tx["tx_value"], _tx["tx_note"]

CHILD_WRITER = TX_SRC + r'''
import os, sqlite3, sys
path, seed, start, sync, child_seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
db = sqlite3.connect(path, isolation_level=None, timeout=10)
db.enable_load_extension(True)
db.load_extension(os.environ["MMKV_EXTENSION"])
register(db)
db.execute("PRAGMA synchronous=%s" % sync)
rnd = random.Random(child_seed)
n = start
while True:
    print("begin %d" % n, flush=True)
    write_tx(db, seed, n, rnd)
    print("committed %d" % n, flush=True)
    n += 1
'''


def expected_state(seed, m):
    rows = {}
    for n in range(1, m + 1):
        for i in range(tx_size(seed, n)):
            rows[tx_key(n, i)] = tx_value(n, i)
        rows["tx%d" % n] = n
        if n > 1:
            del rows[tx_key(n - 1, 0)]
    if m:
        rows["last"] = m
    return rows


def tx_of(key):
    """The transaction number a kv key belongs to ('last' -> 'last')."""
    if key == "last":
        return "last"
    if isinstance(key, str) and key.startswith("tx"):
        return int(key[2:])
    if isinstance(key, str) and key.startswith("n"):
        return int(key[1:].split(":")[0])
    return repr(key)


def crash_state(db, seed):
    """Reads the state: (m = highest ledger n, list of problems). Problems name what is partial."""
    problems = []
    led = db.execute("SELECT n, size, length(note) FROM ledger ORDER BY n").fetchall()
    kv = dict(db.execute("SELECT key, value FROM kv").fetchall())
    ns = [r[0] for r in led]
    m = ns[-1] if ns else 0
    if ns != list(range(1, m + 1)):
        problems.append("ledger rows are not 1..%d: missing %s" % (
            m, sorted(set(range(1, m + 1)) - set(ns))[:10]))
    bad_rows = [r for r in led if r[1] != tx_size(seed, r[0]) or r[2] != len(tx_note(r[0]))]
    if bad_rows:
        problems.append("ledger rows with wrong content: %s" % bad_rows[:3])
    exp = expected_state(seed, m)
    if kv != exp:
        missing = sorted({tx_of(k) for k in exp if k not in kv}, key=str)
        extra = sorted({tx_of(k) for k in kv if k not in exp}, key=str)
        wrong = sorted({tx_of(k) for k in exp if k in kv and kv[k] != exp[k]}, key=str)
        problems.append(
            "kv is not the state after transactions 1..%d (ledger's last): %d rows, expected %d; "
            "keys missing from tx %s; keys of tx %s present without them being committed; wrong "
            "values in tx %s; kv 'last' = %r" % (m, len(kv), len(exp), missing[:8], extra[:8],
                                                 wrong[:8], kv.get("last")))
    # Point lookups agree with the scan.
    probes = ["last", "tx%d" % m, "tx%d" % (m + 1), tx_key(m + 1, 0), tx_key(m, 0),
              tx_key(m, tx_size(seed, m) - 1) if m else "tx0", tx_key(1, 1)]
    for k in probes:
        got = db.execute("SELECT value FROM kv WHERE key = ?", (k,)).fetchall()
        if got != ([(exp[k],)] if k in exp else []):
            problems.append("point lookup of %r: got %r, expected %r" % (k, got, exp.get(k)))
    return m, problems


def read_until(proc, state, pred, deadline):
    """Reads lines from proc's stdout into state['lines'] until pred(line) (True), EOF or the
    deadline (False)."""
    fd = proc.stdout.fileno()
    while True:
        while b"\n" in state["buf"]:
            line, state["buf"] = state["buf"].split(b"\n", 1)
            state["lines"].append(line.decode())
            if pred(state["lines"][-1]):
                return True
        left = deadline - time.time()
        if left <= 0:
            return False
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            return False
        chunk = os.read(fd, 65536)
        if not chunk:
            return False
        state["buf"] += chunk


def crash_config(journal, sync, rounds):
    seed = harness.seed_of("crash-%s-%s" % (journal, sync))
    label = "crash, journal_mode=%s, sync=%s, seed %r" % (journal, sync, seed)
    fails = Failures(label, [
        "child ran", "database opens after SIGKILL",
        "every acknowledged commit is there",
        "at most the one in-flight transaction beyond the acknowledged ones",
        "nothing partial: kv and ledger hold exactly transactions 1..m",
        "next writer commits without manual steps", "state after the next write",
        "state after reopening"])
    rnd = random.Random(seed)
    stats = {"in_commit": 0, "kills": 0, "in_flight_present": 0}
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        db = connect(path)
        db.execute("PRAGMA journal_mode=%s" % journal)
        db.execute("CREATE TABLE ledger(n INTEGER PRIMARY KEY, size INTEGER NOT NULL, note TEXT)")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(sync=%s)" % sync)
        db.close()
        m = 0
        for round_ in range(rounds):
            start = m + 1
            where = "round %d (child started at tx %d)" % (round_, start)
            proc = subprocess.Popen(
                [PYTHON, "-c", CHILD_WRITER, path, seed, str(start), sync,
                 "%s/%d" % (seed, round_)],
                env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            state = {"lines": [], "buf": b""}
            try:
                how = rnd.choice(["acks", "acks", "begin", "time", "commit", "commit"])
                k = rnd.choice([0, 1, 1, 2, 3, 5])
                ok = True
                if how == "time":
                    time.sleep(0.05 + rnd.random() * 0.25)
                else:
                    target = start + k
                    line = {"acks": "committed %d" % (target - 1), "begin": "begin %d" % target,
                            "commit": "committing %d" % target}[how]
                    if how == "acks" and k == 0:
                        line = "begin %d" % start
                    ok = read_until(proc, state, lambda l: l == line, time.time() + 20)
                    if ok:
                        # "commit": the child is about to COMMIT; kill within a few ms of it.
                        time.sleep(rnd.choice([0, 0.0003, 0.0007, 0.0015, 0.003]) if
                                   how == "commit" else
                                   rnd.random() * {"acks": 0.03, "begin": 0.015}[how])
                proc.send_signal(signal.SIGKILL)
                rest, err = proc.communicate(timeout=20)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if not ok or proc.returncode != -signal.SIGKILL:
                fails.add("child ran", "%s: waited with %s/%d; child returned %r, output %r, "
                          "stderr %s" % (where, how, k, proc.returncode, state["lines"][-5:],
                                         err.decode()[-1500:]))
                break
            lines = state["lines"] + (state["buf"] + rest).decode().splitlines()
            acked = max([int(l.split()[1]) for l in lines if l.startswith("committed ")] or
                        [start - 1])
            begun = max([int(l.split()[1]) for l in lines if l.startswith("begin ")] or [0])
            committing = max([int(l.split()[1]) for l in lines if l.startswith("committing ")] or
                             [0])
            stats["kills"] += 1
            if committing > acked:
                stats["in_commit"] += 1
            where += ", killed after %s/%d, last acknowledged commit %d, last begun %d, last " \
                "COMMIT started %d" % (how, k, acked, begun, committing)
            write_first = round_ % 3 == 2
            db = None
            try:
                db = connect(path)
                _tx["register"](db)
                if write_first:
                    # The first thing after the crash is a write; it must recover by itself.
                    before = db.execute("SELECT coalesce(max(n), 0) FROM ledger").fetchone()[0]
                    _tx["write_tx"](db, seed, before + 1)
                    m_after, problems = crash_state(db, seed)
                    m = m_after - 1
                else:
                    m, problems = crash_state(db, seed)
            except sqlite3.Error as e:
                fails.add("database opens after SIGKILL", "%s: %s: %s" % (
                    where, type(e).__name__, e))
                if db is not None:
                    db.close()
                break
            if m < acked:
                fails.add("every acknowledged commit is there",
                          "%s: the database holds transactions up to %d" % (where, m))
            if m > acked + 1:
                fails.add("at most the one in-flight transaction beyond the acknowledged ones",
                          "%s: the database holds transactions up to %d" % (where, m))
            if m == acked + 1:
                stats["in_flight_present"] += 1
            if problems:
                fails.add("nothing partial: kv and ledger hold exactly transactions 1..m",
                          "%s%s: %s" % (where, " (after the next write)" if write_first else "",
                                        "; ".join(problems)))
                db.close()
                break  # the rest would only repeat this
            if not write_first:
                try:
                    _tx["write_tx"](db, seed, m + 1)
                except sqlite3.Error as e:
                    fails.add("next writer commits without manual steps", "%s: %s: %s" % (
                        where, type(e).__name__, e))
                    db.close()
                    break
                m2, problems = crash_state(db, seed)
                if m2 != m + 1 or problems:
                    fails.add("state after the next write", "%s: after writing tx %d: holds up "
                              "to %d; %s" % (where, m + 1, m2, "; ".join(problems)))
            m += 1
            db.close()
            db = connect(path)
            m3, problems = crash_state(db, seed)
            db.close()
            if m3 != m or problems:
                fails.add("state after reopening", "%s: expected transactions 1..%d, holds up "
                          "to %d; %s" % (where, m, m3, "; ".join(problems)))
                m = m3
    print("info: %s: %d kills, %d of them after COMMIT was started and before it was "
          "acknowledged; the unacknowledged transaction was found committed %d times; last tx %d"
          % (label, stats["kills"], stats["in_commit"], stats["in_flight_present"], m))
    fails.report()


def test_crash_atomicity():
    rounds = int(os.environ.get("MMKV_CRASH_ROUNDS", "15"))
    for journal in ("wal", "delete"):
        for sync in ("full", "normal", "off"):
            t0 = time.time()
            crash_config(journal, sync, rounds)
            print("info: crash journal_mode=%s sync=%s: %.1f s" % (journal, sync, time.time() - t0))


# ---------------------------------------------------------------------------------------------
# 3. Snapshot consistency across two connections.

def snap_setup(path, journal):
    db = connect(path)
    db.execute("PRAGMA journal_mode=%s" % journal)
    db.execute("CREATE TABLE ledger(id INTEGER PRIMARY KEY, k, v)")
    db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
    db.execute("BEGIN")
    db.executemany("INSERT INTO kv VALUES(?, ?)", ((i, "v0:%d" % i) for i in range(100)))
    db.executemany("INSERT INTO ledger(k, v) VALUES(?, ?)", ((i, "v0:%d" % i) for i in range(100)))
    db.execute("COMMIT")
    db.close()
    return ({i: "v0:%d" % i for i in range(100)},
            [(i + 1, i, "v0:%d" % i) for i in range(100)])


def snap_write(w, rnd, kvm, led, round_, autocommit=False):
    """W's changes to both tables (updates, deletes, inserts, a key change); returns the new
    models. In one transaction unless autocommit (then each statement commits by itself)."""
    kvm, led = dict(kvm), list(led)
    # Disjoint keys for each kind of change, so that the statements may run in any order.
    pool = sorted(kvm, key=keyorder)
    rnd.shuffle(pool)
    updated, deleted, moved = pool[:5], pool[5:8], pool[8]
    stmts = []
    for k in updated:
        v = "v%d:%s:upd" % (round_, k)
        stmts.append(("UPDATE kv SET value = ? WHERE key = ?", (v, k)))
        kvm[k] = v
        led.append((len(led) + 1, k, v))
    for k in deleted:
        stmts.append(("DELETE FROM kv WHERE key = ?", (k,)))
        del kvm[k]
        led.append((len(led) + 1, k, None))
    for j in range(3):
        k = "new%d_%d" % (round_, j)
        v = "v%d:%s" % (round_, k)
        stmts.append(("INSERT INTO kv VALUES(?, ?)", (k, v)))
        kvm[k] = v
        led.append((len(led) + 1, k, v))
    nk = "moved%d_%s" % (round_, moved)
    stmts.append(("UPDATE kv SET key = ? WHERE key = ?", (nk, moved)))
    kvm[nk] = kvm.pop(moved)
    led.append((len(led) + 1, moved, None))
    led.append((len(led) + 1, nk, kvm[nk]))
    new_led = led[len(led) - (5 + 3 + 3 + 2):]
    if not autocommit:
        w.execute("BEGIN")
    rnd.shuffle(stmts)
    for sql, params in stmts:
        w.execute(sql, params)
    w.executemany("INSERT INTO ledger(id, k, v) VALUES(?, ?, ?)", new_led)
    if not autocommit:
        w.execute("COMMIT")
    return kvm, led


def snap_read(r, probe_keys):
    """Everything R reads: kv scan, count, point lookups, IN lookup, ledger scan, a join."""
    out = {}
    out["kv"] = {k: v for k, v in r.execute("SELECT key, value FROM kv").fetchall()}
    out["count"] = r.execute("SELECT count(*) FROM kv").fetchone()[0]
    out["lookups"] = [r.execute("SELECT value FROM kv WHERE key = ?", (k,)).fetchall()
                      for k in probe_keys]
    out["in"] = sorted(r.execute("SELECT key, value FROM kv WHERE key IN (%s)" % ", ".join(
        "?" * len(probe_keys)), probe_keys).fetchall(), key=lambda kv: keyorder(kv[0]))
    out["ledger"] = r.execute("SELECT id, k, v FROM ledger ORDER BY id").fetchall()
    out["join"] = r.execute("SELECT count(*) FROM ledger JOIN kv ON kv.key = ledger.k "
                            "WHERE ledger.id = (SELECT max(id) FROM ledger l2 "
                            "WHERE l2.k = ledger.k)").fetchone()[0]
    return out


def snap_expected(kvm, led, probe_keys):
    return {
        "kv": kvm, "count": len(kvm),
        "lookups": [[(kvm[k],)] if k in kvm else [] for k in probe_keys],
        "in": sorted([(k, kvm[k]) for k in probe_keys if k in kvm], key=lambda kv: keyorder(kv[0])),
        "ledger": led,
        "join": len(kvm),
    }


def snap_diff(got, exp):
    out = []
    for part in ("kv", "count", "lookups", "in", "ledger", "join"):
        if part == "kv":
            d = dict_diff(got["kv"], exp["kv"])
            if d:
                out.append("kv scan: " + d)
        elif got[part] != exp[part]:
            g, e = got[part], exp[part]
            if part == "ledger":
                out.append("ledger: %d rows, expected %d; last got %s expected %s" % (
                    len(g), len(e), g[-2:], e[-2:]))
            else:
                out.append("%s: got %r, expected %r" % (part, g, e))
    return "; ".join(out)


def test_snapshot_wal():
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        kvm, led = snap_setup(path, "wal")
        r = connect(path, timeout=5)
        w = connect(path, timeout=0.5)
        rnd = harness.rng("snapshot-wal")
        fails = Failures("snapshot, WAL", [
            "writer commits while a read transaction is open",
            "read transaction keeps its snapshot of kv and ledger",
            "after COMMIT the reader sees the new state", "fresh connection sees the new state",
            "autocommit reader sees each commit", "snapshot starts at the first read"])
        variants = ["both", "kv-lookup", "kv-scan", "ledger", "late"]
        for round_ in range(1, 16):
            variant = variants[(round_ - 1) % len(variants)]
            where = "round %d (first read in R: %s)" % (round_, variant)
            old_kvm, old_led = kvm, led
            r.execute("BEGIN")
            # R's first read decides the snapshot (except "late": no read before W commits).
            if variant == "both":
                first = snap_read(r, [0, 50])
            elif variant == "kv-lookup":
                r.execute("SELECT value FROM kv WHERE key = ?", (rnd.choice(list(kvm)),)).fetchall()
            elif variant == "kv-scan":
                r.execute("SELECT count(*) FROM kv").fetchall()
            elif variant == "ledger":
                r.execute("SELECT max(id) FROM ledger").fetchall()
            try:
                kvm, led = snap_write(w, rnd, kvm, led, round_, autocommit=(round_ % 4 == 0))
                if round_ % 3 == 0:  # a second commit while R is still open
                    kvm, led = snap_write(w, rnd, kvm, led, 100 + round_)
            except sqlite3.Error as e:
                fails.add("writer commits while a read transaction is open",
                          "%s: %s: %s" % (where, type(e).__name__, e))
                if w.in_transaction:
                    w.execute("ROLLBACK")
                r.execute("COMMIT")
                kvm, led = old_kvm, old_led
                continue
            changed = [k for k in set(kvm) | set(old_kvm) if kvm.get(k, 0) != old_kvm.get(k, 0)]
            probes = sorted(set(rnd.sample(changed, min(8, len(changed))) + [0, 99]),
                            key=keyorder)
            if variant == "late":
                exp = snap_expected(kvm, led, probes)
            else:
                exp = snap_expected(old_kvm, old_led, probes)
            for rep in range(2):
                got = snap_read(r, probes)
                d = snap_diff(got, exp)
                if d:
                    fails.add("snapshot starts at the first read" if variant == "late" else
                              "read transaction keeps its snapshot of kv and ledger",
                              "%s, read %d inside R's transaction after W's commit: %s" % (
                                  where, rep + 1, d))
                    break
            if variant == "both":
                d = snap_diff(first, snap_expected(old_kvm, old_led, [0, 50]))
                if d:
                    fails.add("read transaction keeps its snapshot of kv and ledger",
                              "%s, first read: %s" % (where, d))
            r.execute("COMMIT")
            d = snap_diff(snap_read(r, probes), snap_expected(kvm, led, probes))
            if d:
                fails.add("after COMMIT the reader sees the new state", "%s: %s" % (where, d))
            fresh = connect(path)
            d = snap_diff(snap_read(fresh, probes), snap_expected(kvm, led, probes))
            fresh.close()
            if d:
                fails.add("fresh connection sees the new state", "%s: %s" % (where, d))
            # R in autocommit: each statement sees the latest commit.
            if round_ % 5 == 1:
                old_kvm2 = kvm
                kvm, led = snap_write(w, rnd, kvm, led, 200 + round_)
                changed = [k for k in set(kvm) | set(old_kvm2)
                           if kvm.get(k, 0) != old_kvm2.get(k, 0)]
                d = snap_diff(snap_read(r, changed), snap_expected(kvm, led, changed))
                if d:
                    fails.add("autocommit reader sees each commit", "%s: %s" % (where, d))
        r.close()
        w.close()
        fails.report()


def test_snapshot_rollback_journal():
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        kvm, led = snap_setup(path, "delete")
        r = connect(path, timeout=5)
        w = connect(path, timeout=0.2)
        fails = Failures("snapshot, rollback journal", [
            "writer gets 'database is locked' while a read transaction is open",
            "reader keeps its state while the writer waits",
            "writer succeeds after the reader's COMMIT",
            "both tables hold the writer's transaction exactly once",
            "autocommit write refused while reading leaves nothing behind"])
        for round_ in range(1, 7):
            retry = round_ % 2 == 1  # retry the same COMMIT, or ROLLBACK and write again
            where = "round %d (%s)" % (round_, "retry COMMIT" if retry else "ROLLBACK, redo")
            old_kvm, old_led = kvm, led
            r.execute("BEGIN")
            probes = [0, 1, 2, 50, 99]
            first = snap_read(r, probes)
            d = snap_diff(first, snap_expected(old_kvm, old_led, probes))
            if d:
                fails.add("reader keeps its state while the writer waits",
                          "%s, before W: %s" % (where, d))
            state = {}

            def attempt():
                """W's transaction; returns the stage where it got an error, or None."""
                stage = "BEGIN"
                try:
                    sub = harness.rng("%d" % round_)
                    w.execute("BEGIN")
                    stage = "writes"
                    state["models"] = snap_write_open(w, sub, old_kvm, old_led, round_)
                    stage = "COMMIT"
                    w.execute("COMMIT")
                    return None, None
                except sqlite3.OperationalError as e:
                    return stage, e
            t0 = time.time()
            stage, err = attempt()
            took = time.time() - t0
            if err is None or "database is locked" not in str(err):
                fails.add("writer gets 'database is locked' while a read transaction is open",
                          "%s: got %r at %s after %.2f s" % (where, err, stage, took))
            else:
                print("info: %s: W got %r at %s after %.2f s" % (where, str(err), stage, took))
            kvm_new, led_new = state.get("models", (old_kvm, old_led))
            probes2 = sorted(set(probes) | {k for k in set(kvm_new) | set(old_kvm)
                                            if kvm_new.get(k, 0) != old_kvm.get(k, 0)},
                             key=keyorder)
            d = snap_diff(snap_read(r, probes2), snap_expected(old_kvm, old_led, probes2))
            if d:
                fails.add("reader keeps its state while the writer waits",
                          "%s, after W's refused %s: %s" % (where, stage, d))
            r.execute("COMMIT")
            try:
                if err is None:
                    pass  # already committed (a failure reported above)
                elif stage == "COMMIT" and retry and w.in_transaction:
                    w.execute("COMMIT")
                else:
                    if w.in_transaction:
                        w.execute("ROLLBACK")
                    # Nothing of the refused transaction is visible.
                    d = snap_diff(snap_read(r, probes2), snap_expected(old_kvm, old_led, probes2))
                    if d:
                        fails.add("both tables hold the writer's transaction exactly once",
                                  "%s, after W's ROLLBACK: %s" % (where, d))
                    stage2, err2 = attempt()
                    if err2 is not None:
                        raise err2
                kvm, led = state["models"]
            except sqlite3.Error as e:
                fails.add("writer succeeds after the reader's COMMIT",
                          "%s: %s: %s" % (where, type(e).__name__, e))
                if w.in_transaction:
                    w.execute("ROLLBACK")
                kvm, led = old_kvm, old_led
            for who, conn in (("R", r), ("W", w), ("fresh connection", None)):
                c = conn or connect(path)
                d = snap_diff(snap_read(c, probes2), snap_expected(kvm, led, probes2))
                if conn is None:
                    c.close()
                if d:
                    fails.add("both tables hold the writer's transaction exactly once",
                              "%s, read by %s: %s" % (where, who, d))
            # An autocommit write refused while R reads must leave nothing behind.
            r.execute("BEGIN")
            r.execute("SELECT count(*) FROM ledger").fetchall()
            r.execute("SELECT count(*) FROM kv").fetchall()
            for sql, params in (("INSERT INTO kv VALUES(?, 'refused')", ("refused%d" % round_,)),
                                ("INSERT INTO ledger(k, v) VALUES(?, 'refused')",
                                 ("refused%d" % round_,))):
                try:
                    w.execute(sql, params)
                    fails.add("autocommit write refused while reading leaves nothing behind",
                              "%s: %s succeeded while R held a read transaction" % (where, sql))
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e):
                        fails.add("autocommit write refused while reading leaves nothing behind",
                                  "%s: %s: %s" % (where, sql, e))
                if w.in_transaction:
                    fails.add("autocommit write refused while reading leaves nothing behind",
                              "%s: W is left in a transaction after %s" % (where, sql))
                    w.execute("ROLLBACK")
            r.execute("COMMIT")
            for who, conn in (("R", r), ("W", w), ("fresh connection", None)):
                c = conn or connect(path)
                got = [c.execute("SELECT count(*) FROM kv WHERE key = ?",
                                 ("refused%d" % round_,)).fetchone()[0],
                       c.execute("SELECT count(*) FROM ledger WHERE k = ?",
                                 ("refused%d" % round_,)).fetchone()[0]]
                d = snap_diff(snap_read(c, probes), snap_expected(kvm, led, probes))
                if conn is None:
                    c.close()
                if got != [0, 0] or d:
                    fails.add("autocommit write refused while reading leaves nothing behind",
                              "%s, read by %s: refused rows found (kv, ledger) %s; %s" % (
                                  where, who, got, d))
        r.close()
        w.close()
        fails.report()


def snap_write_open(w, rnd, kvm, led, round_):
    """snap_write's statements inside W's already open transaction (no BEGIN/COMMIT)."""
    class NoTxn:
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, params=()):
            if sql in ("BEGIN", "COMMIT"):
                return None
            return self.conn.execute(sql, params)

        def executemany(self, sql, seq):
            return self.conn.executemany(sql, seq)
    return snap_write(NoTxn(w), rnd, kvm, led, round_)


if __name__ == "__main__":
    harness.main([
        test_cross_table_atomicity,
        test_snapshot_wal,
        test_snapshot_rollback_journal,
        test_crash_atomicity,
    ])
