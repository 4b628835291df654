"""Many connections and many processes at once on one mmkv table.

1. Transfers: writer processes move amounts between accounts held in kv (and log each transfer in
   a native table of the same database) while reader processes check, in single statements and in
   read transactions, that the total never changes and that kv and the native table agree. In WAL,
   in the rollback journal, and in in-memory databases sharing one data file with file=.
   Then writers that hand SQLite's write lock to each other as fast as they can: once a writer
   holds the database's write lock (BEGIN IMMEDIATE), its writes to kv must not meet a lock.
2. Busy: a writer blocked by another process's open write transaction waits for its busy timeout,
   then fails with "locked"; it succeeds once the other commits, and one that waits long enough
   gets through without an error.
3. Growth: a writer grows the data file and the index many times (200k keys, large values) while
   a reader looks up what it knows was committed and counts.

Every process is a child (python3) bounded by a timeout; the parent never blocks without one.
"""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import CHILD_ENV, PYTHON, Peer, TempDir, check, check_equal, connect  # noqa: E402

# ---------------------------------------------------------------------------------------------
# The child processes. One script; argv[1] is a JSON configuration whose "role" picks the work.
# Every child prints one JSON line (its summary) on stdout and exits 0 unless it crashed.

CHILD = r'''
import json, os, random, sqlite3, sys, time

cfg = json.loads(sys.argv[1])
MEMORY = cfg["path"].startswith("memory:")
HARD_DEADLINE = time.time() + cfg.get("hard_seconds", 30)

def connect():
    db = sqlite3.connect(":memory:" if MEMORY else cfg["path"], isolation_level=None,
                         timeout=cfg.get("timeout", 5))
    db.enable_load_extension(True)
    db.load_extension(os.environ["MMKV_EXTENSION"])
    if MEMORY:
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % cfg["path"][len("memory:"):])
    return db

def wait_go():
    open(cfg["ready"], "w").close()
    while not os.path.exists(cfg["go"]):
        if time.time() > HARD_DEADLINE:
            raise SystemExit("never told to go")
        time.sleep(0.002)

def stopped():
    return os.path.exists(cfg["stop"]) or time.time() > HARD_DEADLINE

def is_lock(e):
    m = str(e).lower()
    return "locked" in m or "busy" in m

def end_txn(db):
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

def one(db, sql, params=()):
    return db.execute(sql, params).fetchone()

# ---- transfers ------------------------------------------------------------------------------

def transfer_writer():
    db = connect()
    rnd = random.Random(cfg["seed"])
    N = cfg["n"]
    commits = lock_retries = 0
    odd_locks, errors = [], []
    wait_go()
    end = time.time() + cfg["seconds"]
    while time.time() < end and commits < cfg["max"] and time.time() < HARD_DEADLINE:
        src, dst = rnd.sample(range(N), 2)
        amount = rnd.randint(1, 50)
        # BEGIN IMMEDIATE waits for the write lock up front (busy timeout); a deferred BEGIN
        # reads first and may find its snapshot stale when it comes to write.
        begin = "BEGIN IMMEDIATE" if (not MEMORY and rnd.random() < 0.5) else "BEGIN"
        stage = begin
        try:
            db.execute(begin)
            if MEMORY:
                # No database lock here: the first write takes mmkv's lock, and reads after it
                # see the latest commit.
                stage = "UPDATE n (takes the lock)"
                db.execute("UPDATE kv SET value = value + 1 WHERE key = 'n'")
            stage = "SELECT balances"
            bal = dict(db.execute("SELECT key, value FROM kv WHERE key IN (?, ?)", (src, dst)))
            if sorted(bal) != sorted([src, dst]):
                errors.append("balances of %d, %d read as %r" % (src, dst, bal))
                end_txn(db)
                continue
            stage = "UPDATE balances"
            db.execute("UPDATE kv SET value = ? WHERE key = ?", (bal[src] - amount, src))
            db.execute("UPDATE kv SET value = ? WHERE key = ?", (bal[dst] + amount, dst))
            if not MEMORY:
                stage = "UPDATE n"
                db.execute("UPDATE kv SET value = value + 1 WHERE key = 'n'")
                stage = "INSERT transfers"
                db.execute("INSERT INTO transfers(src, dst, amount) VALUES(?, ?, ?)",
                           (src, dst, amount))
            stage = "COMMIT"
            db.execute("COMMIT")
            commits += 1
            # A short pause between transactions, as an application has: neither SQLite's busy
            # handler nor mmkv's lock is fair, and a writer that never pauses starves the others.
            time.sleep(rnd.random() * 0.003)
        except sqlite3.Error as e:
            end_txn(db)
            if isinstance(e, sqlite3.OperationalError) and is_lock(e):
                lock_retries += 1
                # In a database file, SQLite's lock decides: its message is "database is
                # locked"; anything else (mmkv's own lock) means the busy timeout did not apply.
                if not MEMORY and str(e) != "database is locked" and len(odd_locks) < 10:
                    odd_locks.append("%s (at %s): %s" % (type(e).__name__, stage, e))
                time.sleep(rnd.random() * 0.002)
            elif len(errors) < 10:
                errors.append("%s (at %s): %s" % (type(e).__name__, stage, e))
            else:
                errors.append("...")
    db.close()
    print(json.dumps({"commits": commits, "lock_retries": lock_retries, "odd_locks": odd_locks,
                      "errors": errors[:11], "nerrors": len(errors)}))

def transfer_reader():
    db = connect()
    rnd = random.Random(cfg["seed"])
    N, total = cfg["n"], cfg["n"] * cfg["initial"]
    accounts = ",".join(map(str, range(N)))
    bad, errors = [], []
    lock_errors = nerrors = 0
    counts = {"statements": 0, "txns": 0}
    ns = set()
    last_n = 0
    def fail(msg):
        if len(bad) < 20:
            bad.append(msg)
    def see_n(n, where):
        nonlocal last_n
        if n is None or n < last_n:
            fail("%s: n went back from %d to %r" % (where, last_n, n))
        else:
            last_n = n
            ns.add(n)
    wait_go()
    final_round = False
    while True:
        if stopped():
            final_round = True  # one more round after the writers stopped
        stage = ""
        try:
            # Single statements.
            stage = "scan sum"
            s = one(db, "SELECT sum(value) FROM kv WHERE key <> 'n'")[0]
            if s != total:
                fail("single statement: sum(value) = %r, expected %d" % (s, total))
            stage = "IN sum"
            s = one(db, "SELECT sum(value), count(*) FROM kv WHERE key IN (%s)" % accounts)
            if tuple(s) != (total, N):
                fail("single statement: key IN (all accounts) gave sum, count %r, expected %r"
                     % (tuple(s), (total, N)))
            stage = "scan sum and n"
            s, n, c = one(db, "SELECT sum(CASE WHEN key = 'n' THEN 0 ELSE value END), "
                              "max(CASE WHEN key = 'n' THEN value END), count(*) FROM kv")
            if (s, c) != (total, N + 1):
                fail("single statement scan: sum %r count %r, expected %d, %d"
                     % (s, c, total, N + 1))
            see_n(n, "scan")
            if not MEMORY:
                stage = "n and count(transfers) in one statement"
                n, c = one(db, "SELECT (SELECT value FROM kv WHERE key = 'n'), "
                               "(SELECT count(*) FROM transfers)")
                if n != c:
                    fail("single statement: kv['n'] = %r but count(transfers) = %r" % (n, c))
                see_n(n, "n with count")
            counts["statements"] += 1
            # A read transaction: every statement sees one state (database files only; an
            # in-memory database has no read transaction, so there each statement is checked
            # on its own).
            stage = "BEGIN"
            db.execute("BEGIN")
            stage = "txn: scan sum"
            s1 = one(db, "SELECT sum(value) FROM kv WHERE key <> 'n'")[0]
            stage = "txn: n"
            n1 = one(db, "SELECT value FROM kv WHERE key = 'n'")[0]
            see_n(n1, "txn")
            picks = rnd.sample(range(N), 5)
            stage = "txn: point lookups"
            v1 = [one(db, "SELECT value FROM kv WHERE key = ?", (a,))[0] for a in picks]
            c1 = ledger = None
            if not MEMORY:
                stage = "txn: count(transfers)"
                c1 = one(db, "SELECT count(*) FROM transfers")[0]
                stage = "txn: ledger"
                ledger = dict(db.execute(
                    "SELECT a, sum(d) FROM (SELECT src AS a, -amount AS d FROM transfers "
                    "UNION ALL SELECT dst, amount FROM transfers) GROUP BY a"))
            time.sleep(rnd.random() * 0.01)  # let writers commit meanwhile
            stage = "txn: all balances"
            bal = dict(db.execute("SELECT key, value FROM kv WHERE key IN (%s)" % accounts))
            stage = "txn: point lookups again"
            v2 = [one(db, "SELECT value FROM kv WHERE key = ?", (a,))[0] for a in picks]
            stage = "txn: scan sum again"
            s2 = one(db, "SELECT sum(value) FROM kv WHERE key <> 'n'")[0]
            stage = "txn: n again"
            n2 = one(db, "SELECT value FROM kv WHERE key = 'n'")[0]
            see_n(n2, "txn again")
            c2 = None
            if not MEMORY:
                stage = "txn: count(transfers) again"
                c2 = one(db, "SELECT count(*) FROM transfers")[0]
            stage = "COMMIT"
            db.execute("COMMIT")
            if s1 != total or s2 != total or sum(bal.values()) != total:
                fail("read txn: sums %r, %r, %r, expected %d" % (s1, s2, sum(bal.values()), total))
            if not MEMORY:
                if not (n1 == n2 == c1 == c2):
                    fail("read txn: kv['n'] %r then %r, count(transfers) %r then %r"
                         % (n1, n2, c1, c2))
                if v1 != v2:
                    fail("read txn: accounts %r read %r then %r" % (picks, v1, v2))
                if [bal.get(a) for a in picks] != v1:
                    fail("read txn: accounts %r: lookups %r, key IN %r"
                         % (picks, v1, [bal.get(a) for a in picks]))
                wrong = [(a, bal.get(a), cfg["initial"] + ledger.get(a, 0)) for a in range(N)
                         if bal.get(a) != cfg["initial"] + ledger.get(a, 0)]
                if wrong:
                    fail("read txn: balances disagree with the transfers table "
                         "(account, kv, ledger): %r" % wrong[:5])
            counts["txns"] += 1
        except sqlite3.Error as e:
            end_txn(db)
            if isinstance(e, sqlite3.OperationalError) and is_lock(e) and cfg.get("locks_ok"):
                lock_errors += 1
                time.sleep(0.002)
            else:
                nerrors += 1
                if len(errors) < 10:
                    errors.append("%s (at %s): %s" % (type(e).__name__, stage, e))
        if final_round:
            break
    db.close()
    print(json.dumps({"bad": bad, "errors": errors, "nerrors": nerrors,
                      "lock_errors": lock_errors, "states": len(ns), "last_n": last_n, **counts}))

# ---- write-lock handover -----------------------------------------------------------------------

def handover_writer():
    # Spins on SQLite's write lock (no busy timeout) and, once BEGIN IMMEDIATE holds it, writes
    # kv: with the database's write lock held, that write must never meet a lock.
    db = connect()
    commits = begin_busy = commit_busy = 0
    errors = []
    wait_go()
    end = time.time() + cfg["seconds"]
    # Past the contended second, a writer that never got the lock (spinning without a busy
    # timeout can starve on two cores, natively too) goes on until its first commit.
    while time.time() < end or (not commits and time.time() < end + 10):
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if not is_lock(e):
                errors.append("BEGIN IMMEDIATE: %s" % e)
                break
            begin_busy += 1
            continue
        stage = "UPDATE kv"
        try:
            db.execute("UPDATE kv SET value = value + 1 WHERE key = 'n'")
            stage = "COMMIT"
            db.execute("COMMIT")
            commits += 1
        except sqlite3.Error as e:
            end_txn(db)
            if stage == "COMMIT" and str(e) == "database is locked":
                # Native behaviour without a busy timeout: in the rollback journal COMMIT needs
                # the exclusive lock, and the other writer's BEGIN IMMEDIATE briefly holds a
                # shared one. The transaction is rolled back and is not counted.
                commit_busy += 1
            else:
                errors.append("%s (at %s, holding the database's write lock): %s"
                              % (type(e).__name__, stage, e))
    db.close()
    print(json.dumps({"commits": commits, "begin_busy": begin_busy, "commit_busy": commit_busy,
                      "errors": errors[:5], "nerrors": len(errors)}))

# ---- growth ---------------------------------------------------------------------------------

def gval(k):
    if k % 97 == 0:
        return ("x%d." % k) * 300
    return k * 7 if k % 2 else "v%d" % k

def big(b, j):
    size = 40000 + 90000 * ((b + j) % 4)
    return bytes([(b * 7 + j) % 251]) * size

def growth_writer():
    db = connect()
    B, batches, nbig = cfg["batch"], cfg["batches"], cfg["nbig"]
    errors = []
    done = lock_retries = 0
    wait_go()
    b = 0
    while b < batches and time.time() < HARD_DEADLINE:
        try:
            db.execute("BEGIN")
            db.executemany("INSERT INTO kv VALUES(?, ?)",
                           ((k, gval(k)) for k in range(b * B, (b + 1) * B)))
            for j in range(nbig):
                db.execute("INSERT INTO kv VALUES(?, ?)", ("big-%d-%d" % (b, j), big(b, j)))
            db.execute("INSERT OR REPLACE INTO kv VALUES('p', ?)", (b + 1,))
            db.execute("COMMIT")
            b += 1
            done = b
        except sqlite3.Error as e:
            end_txn(db)
            if isinstance(e, sqlite3.OperationalError) and is_lock(e):
                lock_retries += 1
                time.sleep(0.005)
            else:
                errors.append("%s (batch %d): %s" % (type(e).__name__, b, e))
                break
    db.close()
    print(json.dumps({"batches": done, "errors": errors, "lock_retries": lock_retries}))

def growth_reader():
    db = connect()
    rnd = random.Random(cfg["seed"])
    B, batches, nbig = cfg["batch"], cfg["batches"], cfg["nbig"]
    def expected(p):
        return p * (B + nbig) + (1 if p else 0)
    bad, errors = [], []
    lock_errors = nerrors = rounds = 0
    seen = set()
    last_p = last_c = 0
    def fail(msg):
        if len(bad) < 20:
            bad.append(msg)
    def lookups(p, where):
        # Keys of committed batches are found, with their values, by key = ? and key IN (...).
        keys = [rnd.randrange(p * B) for _ in range(40)] + [p * B - 1, 0]
        for k in keys[:8]:
            got = db.execute("SELECT value FROM kv WHERE key = ?", (k,)).fetchall()
            if got != [(gval(k),)]:
                fail("%s: key %d (batch %d <= %d) gave %r" % (where, k, k // B + 1, p, got[:1]))
        got = dict(db.execute("SELECT key, value FROM kv WHERE key IN (%s)"
                              % ",".join(map(str, keys))))
        wrong = [k for k in keys if got.get(k) != gval(k)]
        if wrong:
            fail("%s: key IN (...) missed or misread %d of %d keys, e.g. %r -> %r"
                 % (where, len(wrong), len(keys), wrong[0], got.get(wrong[0])))
        b = rnd.randrange(p)
        j = rnd.randrange(nbig)
        row = db.execute("SELECT length(value), substr(value, 1, 1), substr(value, -1, 1) "
                         "FROM kv WHERE key = ?", ("big-%d-%d" % (b, j),)).fetchall()
        v = big(b, j)
        if row != [(len(v), v[:1], v[-1:])]:
            fail("%s: big value big-%d-%d gave %r" % (where, b, j, row))
    wait_go()
    final_round = False
    while True:
        if stopped():
            final_round = True
        stage = ""
        try:
            stage = "progress"
            r = db.execute("SELECT value FROM kv WHERE key = 'p'").fetchall()
            p = r[0][0] if r else 0
            if p < last_p:
                fail("progress went back from %d to %d" % (last_p, p))
            last_p = max(p, last_p)
            stage = "count(*)"
            c = one(db, "SELECT count(*) FROM kv")[0]
            if c < last_c or c not in [expected(q) for q in range(p, batches + 1)]:
                fail("count(*) %d after progress %d (expected %d, last count %d)"
                     % (c, p, expected(p), last_c))
            last_c = max(c, last_c)
            if p:
                stage = "lookups"
                lookups(p, "statement")
            if not MEMORY:
                stage = "progress and count in one statement"
                p2, c2 = one(db, "SELECT (SELECT value FROM kv WHERE key = 'p'), "
                                 "(SELECT count(*) FROM kv)")
                if c2 != expected(p2 or 0):
                    fail("one statement: progress %r with count %d, expected %d"
                         % (p2, c2, expected(p2 or 0)))
                stage = "BEGIN"
                db.execute("BEGIN")
                stage = "txn: progress"
                r = db.execute("SELECT value FROM kv WHERE key = 'p'").fetchall()
                p3 = r[0][0] if r else 0
                if p3:
                    stage = "txn: lookups"
                    lookups(p3, "read txn")
                stage = "txn: count(*)"
                c3 = one(db, "SELECT count(*) FROM kv")[0]
                stage = "txn: next batch"
                nxt = one(db, "SELECT count(*) FROM kv WHERE key IN (%s)" % ",".join(
                    str(p3 * B + i) for i in range(0, B, 97)))[0]
                stage = "txn: range count"
                rc = one(db, "SELECT count(*) FROM kv WHERE key >= ? AND key < ?",
                         (0, p3 * B))[0]
                stage = "COMMIT"
                db.execute("COMMIT")
                if (c3, nxt, rc) != (expected(p3), 0, p3 * B):
                    fail("read txn at progress %d: count %d (expected %d), %d keys of the next "
                         "batch (expected 0), range count %d (expected %d)"
                         % (p3, c3, expected(p3), nxt, rc, p3 * B))
            seen.add(p)
            rounds += 1
        except sqlite3.Error as e:
            end_txn(db)
            if isinstance(e, sqlite3.OperationalError) and is_lock(e) and cfg.get("locks_ok"):
                lock_errors += 1
                time.sleep(0.002)
            else:
                nerrors += 1
                if len(errors) < 10:
                    errors.append("%s (at %s): %s" % (type(e).__name__, stage, e))
        if final_round:
            break
    db.close()
    print(json.dumps({"bad": bad, "errors": errors, "nerrors": nerrors, "lock_errors": lock_errors,
                      "rounds": rounds, "states": len(seen), "last_p": last_p}))

{"transfer_writer": transfer_writer, "transfer_reader": transfer_reader,
 "handover_writer": handover_writer,
 "growth_writer": growth_writer, "growth_reader": growth_reader}[cfg["role"]]()
'''


class Group:
    """Child processes started together: each connects, says it is ready, and waits for "go"."""

    def __init__(self, d, label):
        self.d, self.label = d, label
        self.procs = []  # (name, Popen, cfg)
        self.go = os.path.join(d, "go")
        self.stop = os.path.join(d, "stop")

    def start(self, name, **cfg):
        cfg.update(ready=os.path.join(self.d, "ready-" + name), go=self.go, stop=self.stop)
        p = subprocess.Popen([PYTHON, "-c", CHILD, json.dumps(cfg)], env=CHILD_ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append((name, p, cfg))

    def begin(self):
        deadline = time.time() + 20
        while not all(os.path.exists(c["ready"]) for _, _, c in self.procs):
            if time.time() > deadline or any(p.poll() is not None for _, p, _ in self.procs):
                return False
            time.sleep(0.005)
        open(self.go, "w").close()
        return True

    def finish(self, names, timeout):
        """Waits for the named children; returns {name: (status, summary or None, stderr)}."""
        out = {}
        deadline = time.time() + timeout
        for name, p, _ in self.procs:
            if name not in names:
                continue
            try:
                o, e = p.communicate(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                o, e = p.communicate()
                out[name] = ("hung (killed after %ds)" % timeout, None, e.decode(errors="replace"))
                continue
            summary = None
            try:
                summary = json.loads(o.decode().strip().split("\n")[-1])
            except (ValueError, IndexError):
                pass
            out[name] = (p.returncode, summary, e.decode(errors="replace")[-1500:])
        return out

    def kill_all(self):
        for _, p, _ in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def check_child(name, result):
    """The child exited 0 (no crash, no SIGBUS, no hang) and printed its summary."""
    status, summary, err = result
    return check(name + ": exits cleanly", status == 0 and summary is not None,
                 "status %s%s, stderr: %s" % (
                     status, " (signal %s)" % signal.Signals(-status).name
                     if isinstance(status, int) and status < 0 else "", err.strip()[-1500:]))


# ---------------------------------------------------------------------------------------------
# 1. Transfers

N_ACCOUNTS, INITIAL = 20, 1000
WRITERS, READERS = 3, 2
WRITE_SECONDS = 2.0


def setup_transfers(d, mode):
    """Returns the path the children open ("memory:FILE" for the shared-file case)."""
    if mode == "memory":
        data = os.path.join(d, "shared.mmkv")
        path = "memory:" + data
        db = connect(path)
    else:
        path = os.path.join(d, "bank.db")
        db = connect(path)
        got = db.execute("PRAGMA journal_mode=%s" % ("wal" if mode == "wal" else "delete")
                         ).fetchone()[0]
        check_equal("transfers (%s): journal mode" % mode, got,
                    "wal" if mode == "wal" else "delete")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        db.execute("CREATE TABLE transfers(id INTEGER PRIMARY KEY, src, dst, amount)")
    db.execute("BEGIN")
    db.executemany("INSERT INTO kv VALUES(?, ?)", ((i, INITIAL) for i in range(N_ACCOUNTS)))
    db.execute("INSERT INTO kv VALUES('n', 0)")
    db.execute("COMMIT")
    db.close()
    return path


def run_transfers(mode):
    label = "transfers (%s)" % mode
    memory = mode == "memory"
    with TempDir() as d:
        path = setup_transfers(d, mode)
        g = Group(d, label)
        common = dict(path=path, n=N_ACCOUNTS, initial=INITIAL, timeout=5, hard_seconds=30)
        try:
            for i in range(WRITERS):
                g.start("writer%d" % i, role="transfer_writer", seed=harness.seed_of(100 + i),
                        seconds=WRITE_SECONDS, max=100000, **common)
            for i in range(READERS):
                # In the rollback journal a reader may meet a writer's exclusive lock: it retries.
                g.start("reader%d" % i, role="transfer_reader", seed=harness.seed_of(200 + i),
                        locks_ok=(mode == "rollback"), **common)
            if not g.begin():
                check(label + ": every process started", False,
                      "%s" % g.finish([n for n, _, _ in g.procs], 5))
                return
            writers = g.finish(["writer%d" % i for i in range(WRITERS)], WRITE_SECONDS + 20)
            open(g.stop, "w").close()
            readers = g.finish(["reader%d" % i for i in range(READERS)], 20)
        finally:
            g.kill_all()

        commits = 0
        odd = []
        for name in sorted(writers):
            if not check_child("%s: %s" % (label, name), writers[name]):
                continue
            w = writers[name][1]
            commits += w["commits"]
            check(label + ": %s committed transfers (%d, %d lock retries)"
                  % (name, w["commits"], w["lock_retries"]), w["commits"] > 0, "none committed")
            check(label + ": %s got no error but locked/busy" % name, not w["nerrors"],
                  "%d errors, e.g. %s" % (w["nerrors"], w["errors"][:3]))
            odd += ["%s: %s" % (name, m) for m in w["odd_locks"]]
        if not memory:
            # SQLite's write lock serialises writers of a database file, so the only lock error
            # a writer may see is SQLite's own, after its busy timeout (or a stale snapshot).
            check(label + ": writers' lock errors are all SQLite's \"database is locked\"",
                  not odd, "%d writer statements failed on mmkv's own lock while holding the "
                  "database's write lock (no busy wait), e.g. %s" % (len(odd), odd[:3]))
        for name in sorted(readers):
            if not check_child("%s: %s" % (label, name), readers[name]):
                continue
            r = readers[name][1]
            what = "%d statement rounds, %d read txns, %d states, %d lock retries" % (
                r["statements"], r["txns"], r["states"], r["lock_errors"])
            check(label + ": %s saw a constant total and consistent reads (%s)" % (name, what),
                  not r["bad"], "%s" % r["bad"][:5])
            check(label + ": %s got no error%s"
                  % (name, " but locked" if mode == "rollback" else ""), not r["nerrors"],
                  "%d errors, e.g. %s" % (r["nerrors"], r["errors"][:3]))
            check(label + ": %s read while writers wrote" % name,
                  r["txns"] >= 3 and r["states"] >= 3,
                  "only %d read txns, %d distinct states of kv['n']" % (r["txns"], r["states"]))

        db = connect(path)
        total, count = db.execute("SELECT sum(value), count(*) FROM kv WHERE key <> 'n'").fetchone()
        check_equal(label + ": final total", (total, count), (N_ACCOUNTS * INITIAL, N_ACCOUNTS))
        n = db.execute("SELECT value FROM kv WHERE key = 'n'").fetchone()[0]
        check_equal(label + ": kv['n'] = the writers' commits", n, commits)
        if not memory:
            t = db.execute("SELECT count(*) FROM transfers").fetchone()[0]
            check_equal(label + ": transfers rows = the writers' commits", t, commits)
            ledger = dict(db.execute(
                "SELECT a, sum(d) FROM (SELECT src AS a, -amount AS d FROM transfers "
                "UNION ALL SELECT dst, amount FROM transfers) GROUP BY a"))
            bal = dict(db.execute("SELECT key, value FROM kv WHERE key <> 'n'"))
            wrong = [(a, bal.get(a), INITIAL + ledger.get(a, 0)) for a in range(N_ACCOUNTS)
                     if bal.get(a) != INITIAL + ledger.get(a, 0)]
            check(label + ": every balance = initial + the transfers table's ledger", not wrong,
                  "(account, kv, ledger): %r" % wrong[:5])
            check_equal(label + ": integrity_check",
                        db.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
        db.close()


def test_transfers_wal():
    run_transfers("wal")


def test_transfers_rollback_journal():
    run_transfers("rollback")


def test_transfers_memory_shared_file():
    run_transfers("memory")


def run_handover(mode):
    """Writers hand SQLite's write lock to each other as fast as they can: a writer that holds it
    (BEGIN IMMEDIATE succeeded) must be able to write kv at once. mmkv must not keep a lock of
    its own past the moment the database's write lock is released."""
    label = "write-lock handover (%s)" % mode
    with TempDir() as d:
        path = setup_transfers(d, mode)
        g = Group(d, label)
        try:
            for i in range(2):
                g.start("writer%d" % i, role="handover_writer", path=path, timeout=0,
                        hard_seconds=20, seconds=1.0)
            if not g.begin():
                check(label + ": every process started", False,
                      "%s" % g.finish([n for n, _, _ in g.procs], 5))
                return
            writers = g.finish(["writer0", "writer1"], 20)
        finally:
            g.kill_all()
        commits = 0
        errors = []
        for name in sorted(writers):
            if check_child("%s: %s" % (label, name), writers[name]):
                w = writers[name][1]
                commits += w["commits"]
                errors += ["%s: %s" % (name, e) for e in w["errors"]]
                check(label + ": %s committed (%d commits, %d BEGIN IMMEDIATE busy, %d COMMIT "
                      "busy)" % (name, w["commits"], w["begin_busy"], w["commit_busy"]),
                      w["commits"] > 0, "none")
                check(label + ": %s's writes under the database's write lock never failed"
                      % name, not w["nerrors"], "%d of %d transactions failed, e.g. %s"
                      % (w["nerrors"], w["nerrors"] + w["commits"], w["errors"][:2]))
        db = connect(path)
        check_equal(label + ": kv['n'] = the commits",
                    db.execute("SELECT value FROM kv WHERE key = 'n'").fetchone()[0], commits)
        db.close()


def test_handover_wal():
    run_handover("wal")


def test_handover_rollback_journal():
    run_handover("rollback")


# ---------------------------------------------------------------------------------------------
# 2. Busy behaviour


def ok(name, resp, rows=None):
    if "rows" not in resp:
        return check(name, False, "got %r" % resp)
    if rows is not None:
        return check_equal(name, resp["rows"], rows)
    return check(name, True)


def timed(peer, sql, params=(), timeout=20):
    t = time.time()
    r = peer.ask(sql, params, timeout)
    return r, time.time() - t


def check_refused_after_timeout(name, resp, elapsed, low=0.2, high=3.0):
    msg = resp.get("msg", "")
    check(name + ": refused with an error containing \"locked\"",
          "error" in resp and "locked" in msg.lower(), "got %r" % resp)
    check(name + ": refused after waiting its 300 ms busy timeout (%.2fs)" % elapsed,
          low <= elapsed <= high, "took %.3fs (expected %.1fs..%.1fs)" % (elapsed, low, high))


def run_busy(mode):
    label = "busy (%s)" % mode
    with TempDir() as d:
        if mode == "memory":
            path = "memory:" + os.path.join(d, "shared.mmkv")
            connect(path).close()
        else:
            path = os.path.join(d, "app.db")
            db = connect(path)
            db.execute("PRAGMA journal_mode=%s" % ("wal" if mode == "wal" else "delete"))
            db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
            db.close()
        a = Peer(path, 0)
        b = Peer(path, 0.3)
        c = None
        try:
            ok(label + ": A begins", a.ask("BEGIN"))
            ok(label + ": A inserts (holds the write)", a.ask("INSERT INTO kv VALUES(1, 'A')"))
            r, t = timed(b, "INSERT INTO kv VALUES(2, 'B')")
            check_refused_after_timeout(label + ": B's INSERT", r, t)
            r, t = timed(b, "UPDATE kv SET value = 'B' WHERE key = 1")
            check_refused_after_timeout(label + ": B's UPDATE", r, t)
            b.ask("BEGIN")
            r, t = timed(b, "INSERT INTO kv VALUES(2, 'B')")
            check_refused_after_timeout(label + ": B's INSERT inside BEGIN", r, t)
            b.ask("ROLLBACK")
            ok(label + ": B reads while A holds the write", b.ask("SELECT count(*) FROM kv"), [[0]])
            ok(label + ": A commits", a.ask("COMMIT"))
            r, t = timed(b, "INSERT INTO kv VALUES(2, 'B')")
            ok(label + ": B's INSERT succeeds after A committed", r)
            check(label + ": ... at once (%.2fs)" % t, t < 0.2, "took %.3fs" % t)
            # A writer whose timeout outlasts the other's transaction waits and gets through.
            c = Peer(path, 5)
            ok(label + ": A begins again", a.ask("BEGIN"))
            ok(label + ": A inserts again", a.ask("INSERT INTO kv VALUES(3, 'A')"))
            t = time.time()
            c.send("INSERT INTO kv VALUES(4, 'C')")
            time.sleep(0.5)
            ok(label + ": A commits while C waits", a.ask("COMMIT"))
            r = c.recv(10)
            t = time.time() - t
            ok(label + ": C (busy timeout 5 s) waited and its INSERT succeeded", r)
            check(label + ": C waited for A's commit (%.2fs)" % t, 0.4 <= t <= 3,
                  "took %.3fs (A committed after 0.5 s)" % t)
            ok(label + ": final rows", a.ask("SELECT key, value FROM kv ORDER BY key"),
               [[1, "A"], [2, "B"], [3, "A"], [4, "C"]])
        finally:
            for p, n in ((a, "A"), (b, "B"), (c, "C")):
                if p is not None:
                    check_equal(label + ": %s exits cleanly" % n, p.close(), 0)


def test_busy_wal():
    run_busy("wal")


def test_busy_rollback_journal():
    run_busy("rollback")


def test_busy_memory_shared_file():
    run_busy("memory")


# ---------------------------------------------------------------------------------------------
# 3. Growth across processes

GROWTH = dict(batch=10000, batches=20, nbig=3)


def run_growth(mode):
    label = "growth (%s)" % mode
    with TempDir() as d:
        if mode == "memory":
            path = "memory:" + os.path.join(d, "shared.mmkv")
            connect(path).close()
            data = path[len("memory:"):]
        else:
            path = os.path.join(d, "app.db")
            db = connect(path)
            db.execute("PRAGMA journal_mode=%s" % ("wal" if mode == "wal" else "delete"))
            db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
            db.close()
            data = path + "-kv.mmkv"
        size0 = os.path.getsize(data)
        index0 = os.path.getsize(data + "-index") if os.path.exists(data + "-index") else 0
        g = Group(d, label)
        try:
            g.start("writer", role="growth_writer", path=path, timeout=5, hard_seconds=40,
                    **GROWTH)
            g.start("reader", role="growth_reader", path=path, timeout=5, hard_seconds=40,
                    seed=harness.seed_of(7), locks_ok=(mode == "rollback"), **GROWTH)
            if not g.begin():
                check(label + ": both processes started", False,
                      "%s" % g.finish(["writer", "reader"], 5))
                return
            w = g.finish(["writer"], 40)["writer"]
            open(g.stop, "w").close()
            r = g.finish(["reader"], 20)["reader"]
        finally:
            g.kill_all()
        if check_child(label + ": writer", w):
            check(label + ": writer committed every batch",
                  w[1]["batches"] == GROWTH["batches"] and not w[1]["errors"],
                  "%d batches, errors %s" % (w[1]["batches"], w[1]["errors"]))
        if check_child(label + ": reader", r):
            s = r[1]
            check(label + ": reader's results were consistent (%d rounds, %d states)"
                  % (s["rounds"], s["states"]), not s["bad"], "%s" % s["bad"][:5])
            check(label + ": reader got no error%s" % (" but locked" if mode == "rollback" else ""),
                  not s["nerrors"], "%d errors, e.g. %s" % (s["nerrors"], s["errors"][:3]))
            check(label + ": reader read during the growth and saw the end",
                  s["states"] >= 3 and s["last_p"] == GROWTH["batches"],
                  "%d distinct states, last progress %d" % (s["states"], s["last_p"]))
        size1 = os.path.getsize(data)
        index1 = os.path.getsize(data + "-index") if os.path.exists(data + "-index") else 0
        check(label + ": data file and index grew many times over (data %d -> %d, index %d -> %d)"
              % (size0, size1, index0, index1),
              size1 >= 8 * max(size0, 1) and index1 >= 4 * max(index0, 1),
              "data %d -> %d bytes, index %d -> %d bytes" % (size0, size1, index0, index1))
        db = connect(path)
        B, n = GROWTH["batch"], GROWTH["batches"]
        check_equal(label + ": final count", db.execute("SELECT count(*) FROM kv").fetchone()[0],
                    n * (B + GROWTH["nbig"]) + 1)
        check_equal(label + ": final integer keys",
                    db.execute("SELECT count(*), min(key), max(key) FROM kv "
                               "WHERE typeof(key) = 'integer'").fetchone(), (n * B, 0, n * B - 1))
        db.close()


def test_growth_rollback_journal():
    run_growth("rollback")


def test_growth_memory_shared_file():
    run_growth("memory")


if __name__ == "__main__":
    harness.main([
        test_transfers_wal,
        test_transfers_rollback_journal,
        test_transfers_memory_shared_file,
        test_handover_wal,
        test_handover_rollback_journal,
        test_busy_wal,
        test_busy_rollback_journal,
        test_busy_memory_shared_file,
        test_growth_rollback_journal,
        test_growth_memory_shared_file,
    ])
