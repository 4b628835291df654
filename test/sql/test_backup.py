"""mmkv_backup(): a hot copy of a database with all its mmkv tables, in one snapshot.

- A database with native tables and mmkv tables of every kind (default names, relative and
  absolute file=, sync=off and sync=normal, renamed, empty, emptied, odd names): the copy opens
  in a fresh process (.load in the sqlite3 shell, load_extension in python3), passes
  PRAGMA integrity_check and every table's integrity-check, and equals the source row for row;
  its schema names files of its own (no file=, the other arguments kept), with new owner ids.
- The copy's files are its own: writing the copy leaves every file of the original as it was,
  and the original goes on working.
- Hot: another process commits transactions that write the same counter to a native table and
  two mmkv tables while the backup runs; the copy shows one counter everywhere (one snapshot),
  in WAL and rollback-journal mode, also while the writer drops and makes tables anew.
- A large table (MMKV_BACKUP_MB, 200 MB unless set) copied while a writer keeps committing:
  the copy rate and the writer's longest pause are measured and printed ("# ..." lines), in WAL
  and rollback-journal mode.
- An attached database by its schema name; UTF-16 databases; a hot journal a dead writer left
  (rolled back by the backup's own connection); a table salvage left behind its commit record
  (sync=off, a lost tail); every refusal, each naming the thing and what to do; and a failed
  backup leaves nothing behind.

Children run as subprocesses with timeouts; randomised parts print their seed and take MMKV_SEED.
Run one case: make test T=<test function name>.
"""
import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (CHILD_ENV, ENC_SRC, PYTHON, TempDir, check, check_equal,  # noqa: E402
                     check_error, connect, rows_diff)

DATA_MAGIC = b"mmkv data file\0\0"
NOTICE_MAGIC = struct.pack("<Q", 0x636e79736e766b6d)  # format.h: the unsynced-commits notice
NOTICE_OFFSETS = (2048, 2048 + 64)
HEADER_FILE_ID = 24  # format.h, mmkv_file_header: magic[16], format_version, page_size, file_id
HEADER_OWNER_ID = 40  # ... created_unix_ms, owner_id
LARGE_MB = int(os.environ.get("MMKV_BACKUP_MB", "200"))
PAUSE_LIMIT_S = 3.0  # the longest a writer may wait on a backup, with room for slow machines

PRELUDE = textwrap.dedent('''
    import json, os, sqlite3, sys, time
    def connect(path, **kw):
        kw.setdefault("isolation_level", None)
        db = sqlite3.connect(path, **kw)
        db.enable_load_extension(True)
        db.load_extension(os.environ["MMKV_EXTENSION"])
        return db
''') + ENC_SRC


def run_child(code, *args, timeout=120):
    """Runs python code in a child process (connect() loads mmkv); returns its stdout, or its
    stdout and stderr if it failed."""
    r = subprocess.run([PYTHON, "-c", PRELUDE + textwrap.dedent(code)] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout, env=CHILD_ENV)
    return r.stdout.strip() + (("\n" + r.stderr.strip()) if r.returncode else "")


def child_json(code, *args, timeout=120):
    out = run_child(code, *args, timeout=timeout)
    try:
        return json.loads(out.splitlines()[-1])
    except (ValueError, IndexError):
        return {"child failed": out[-3000:]}


# Everything a database holds, read by a fresh process: PRAGMA integrity_check, each mmkv
# table's integrity-check, each table's rows (mmkv tables: key and value; commit records
# left out, as they differ between copies by design) and the schema.
DUMP = r'''
import re
db = connect(sys.argv[1])
summary = sys.argv[2] == "summary"
out = {"integrity": [r[0] for r in db.execute("PRAGMA integrity_check")], "checks": {},
       "tables": {}, "schema": {}}
db.execute("BEGIN")
names = db.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
mmkv = [n for t, n, sql in names
        if t == "table" and re.match(r'(?is)CREATE VIRTUAL TABLE .* USING\s+"?mmkv\b', sql)]
for t, n, sql in names:
    out["schema"][n] = sql
    if t != "table" or n in {m + "_commit" for m in mmkv}:
        continue
    q = '"%s"' % n.replace('"', '""')
    if summary:
        out["tables"][n] = db.execute("SELECT count(*) FROM %s" % q).fetchone()[0]
    else:
        cols = "key, value" if n in mmkv else "*"
        out["tables"][n] = [[enc(v) for v in r] for r in db.execute("SELECT %s FROM %s" % (cols, q))]
if "counter" in out["tables"]:
    out["counter"] = db.execute("SELECT n FROM counter").fetchone()[0]
    out["counters"] = {m: (db.execute('SELECT value FROM "%s" WHERE key = \'counter\'' % m)
                           .fetchall() or [[None]])[0][0] for m in mmkv}
    if "events" in out["tables"]:
        out["events"] = db.execute("SELECT count(*), min(x), max(x) FROM events").fetchone()
db.execute("COMMIT")
for m in mmkv:
    try:
        q = '"%s"' % m.replace('"', '""')
        db.execute("INSERT INTO %s(%s) VALUES('integrity-check')" % (q, q))
        out["checks"][m] = "ok"
    except sqlite3.Error as e:
        out["checks"][m] = str(e)
print(json.dumps(out))
'''


def dump(path, summary=False):
    return child_json(DUMP, path, "summary" if summary else "full", timeout=300)


def check_copy_whole(label, copy, source=None, summary=False):
    """The copy passes every check in a fresh process and, given source's dump, equals it."""
    got = dump(copy, summary)
    if not check("%s: the copy opens in a fresh process" % label, "tables" in got, repr(got)):
        return got
    check_equal("%s: PRAGMA integrity_check of the copy" % label, got["integrity"], ["ok"])
    bad = {t: v for t, v in got["checks"].items() if v != "ok"}
    check("%s: every mmkv table of the copy passes its integrity-check (%d tables)"
          % (label, len(got["checks"])), not bad, repr(bad))
    if source is not None:
        check_equal("%s: the copy holds the same tables" % label, sorted(got["tables"]),
                    sorted(source["tables"]))
        diffs = {t: rows_diff(got["tables"].get(t, []), rows)
                 for t, rows in source["tables"].items()}
        diffs = {t: d for t, d in diffs.items() if d}
        check("%s: every table of the copy equals the source's, row for row" % label, not diffs,
              repr(diffs)[:2000])
    return got


def listing(d):
    return sorted(os.listdir(d))


def read_header(path):
    with open(path, "rb") as f:
        page = f.read(4096)
    return page


def shell_load(copy, sql):
    """Runs sql in the sqlite3 shell after .load of mmkv; returns (status, output), or (None, why)
    where there is no shell that runs on the SQLite under test (make test-sqlite runs the system's
    shell against another library, which it refuses)."""
    sqlite3_shell = shutil.which("sqlite3")
    if not sqlite3_shell:
        return None, "no sqlite3 shell"
    r = subprocess.run([sqlite3_shell, ":memory:", "SELECT sqlite_version()"], capture_output=True,
                       text=True, timeout=60, env=CHILD_ENV)
    if r.returncode or r.stdout.strip() != sqlite3.sqlite_version:
        return None, "the sqlite3 shell does not run on SQLite %s" % sqlite3.sqlite_version
    r = subprocess.run([sqlite3_shell, "-bail", copy], input=".load %s\n%s\n" % (
        harness.EXTENSION, sql), capture_output=True, text=True, timeout=120, env=CHILD_ENV)
    return r.returncode, (r.stdout + r.stderr).strip()


# ---- a database of every kind of table -----------------------------------------------------

def fill(db, table, r, n, updates=0, deletes=0):
    """n rows of random keys and values of every type, then updates and deletes."""
    keys = []
    quoted = '"%s"' % table.replace('"', '""')
    for i in range(n):
        key = r.choice([i, "k%d" % i, float(i) + 0.5, b"b%d" % i])
        value = r.choice([None, r.randint(-2**63, 2**63 - 1), r.random(), "t" * r.randrange(200),
                          bytes(r.randrange(256) for _ in range(r.randrange(3000)))])
        db.execute("INSERT INTO %s VALUES(?, ?)" % quoted, (key, value))
        keys.append(key)
    for key in r.sample(keys, min(updates, len(keys))):
        db.execute("UPDATE %s SET value = ? WHERE key = ?" % quoted, ("updated", key))
    for key in r.sample(keys, min(deletes, len(keys))):
        db.execute("DELETE FROM %s WHERE key = ?" % quoted, (key,))


def make_source(d, r, journal="wal"):
    """d/src/app.db with native tables and mmkv tables of every kind; returns its path."""
    os.makedirs(os.path.join(d, "src", "rel"))
    os.makedirs(os.path.join(d, "elsewhere"))
    p = os.path.join(d, "src", "app.db")
    db = connect(p)
    db.execute("PRAGMA journal_mode = %s" % journal)
    db.execute("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT, score REAL)")
    db.execute("CREATE TABLE notes(k TEXT PRIMARY KEY, body BLOB) WITHOUT ROWID")
    db.execute("CREATE INDEX users_name ON users(name)")
    db.execute("CREATE VIEW named AS SELECT name FROM users")
    db.execute("CREATE TRIGGER users_note AFTER INSERT ON users BEGIN "
               "INSERT OR REPLACE INTO notes VALUES('last', NEW.name); END")
    db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
    db.execute("CREATE VIRTUAL TABLE \"odd \"\"name\"\" ,x\" /* a comment, (with a paren */ "
               "USING mmkv( file = 'rel/odd name.mmkv' , sync = off )")
    db.execute("CREATE VIRTUAL TABLE [abs] USING MMKV(sync=normal, file=\"%s\")"
               % os.path.join(d, "elsewhere", "abs.mmkv"))
    db.execute("CREATE VIRTUAL TABLE empty USING mmkv")
    db.execute("CREATE VIRTUAL TABLE emptied USING mmkv")
    db.execute("CREATE VIRTUAL TABLE before_rename USING mmkv")
    db.execute("BEGIN")
    for i in range(300):
        db.execute("INSERT INTO users(name, score) VALUES(?, ?)", ("user%d" % i, r.random()))
    fill(db, "kv", r, 800, updates=200, deletes=100)
    db.execute("COMMIT")
    fill(db, 'odd "name" ,x', r, 300, updates=50, deletes=20)  # sync=off: commit by commit
    fill(db, "abs", r, 100, updates=10, deletes=10)
    fill(db, "emptied", r, 50)
    db.execute("DELETE FROM emptied")
    fill(db, "before_rename", r, 40, updates=5)
    db.execute("ALTER TABLE before_rename RENAME TO renamed")
    db.close()
    return p


def test_backup_copies_every_table():
    r = harness.rng("every table")
    with TempDir() as d:
        p = make_source(d, r)
        out = os.path.join(d, "out")
        os.makedirs(out)
        db = connect(p)
        got = db.execute("SELECT mmkv_backup('%s')" % os.path.join(out, "copy.db")).fetchone()[0]
        check_equal("mmkv_backup returns the copy's full path", got, os.path.join(out, "copy.db"))
        db.close()
        source = dump(p)
        copy = os.path.join(out, "copy.db")
        mmkv = ["kv", 'odd "name" ,x', "abs", "empty", "emptied", "renamed"]
        expected = ["copy.db"] + sorted(
            sum((["copy.db-%s.mmkv" % t, "copy.db-%s.mmkv-index" % t] for t in mmkv), []))
        check_equal("the copy and its tables' files, beside it under the default names, and "
                    "nothing else", listing(out), sorted(expected))
        got = check_copy_whole("every kind of table", copy, source)
        if "schema" in got:
            for t in mmkv:
                sql = got["schema"].get(t, "")
                check("the copy's statement for %r names no file (%s)" % (t, sql),
                      "file" not in sql.lower() and sql.startswith("CREATE VIRTUAL TABLE"))
            check_equal("sync= is kept where the original had it",
                        [got["schema"][t] for t in ('odd "name" ,x', "abs")],
                        ['CREATE VIRTUAL TABLE "odd ""name"" ,x" USING mmkv(sync = off)',
                         "CREATE VIRTUAL TABLE [abs] USING MMKV(sync=normal)"])
            same = {n: s for n, s in source["schema"].items() if n not in mmkv}
            check_equal("the native part of the schema is the source's",
                        {n: got["schema"].get(n) for n in same}, same)
        status, text = shell_load(copy, "SELECT count(*) FROM kv;\n"
                                  "INSERT INTO kv(kv) VALUES('integrity-check');\n"
                                  "PRAGMA integrity_check;")
        if status is None:
            print("# the sqlite3 shell check is skipped: %s" % text)
        else:
            check_equal("the sqlite3 shell opens the copy with .load", (status, text.split()),
                        (0, [str(len(source["tables"]["kv"])), "ok"]))
        # The copy's files say they are their own.
        src_files = {"kv": p + "-kv.mmkv", 'odd "name" ,x': os.path.join(d, "src", "rel",
                                                                         "odd name.mmkv"),
                     "abs": os.path.join(d, "elsewhere", "abs.mmkv")}
        src_db = sqlite3.connect(p)
        copy_db = sqlite3.connect(copy)
        for t, f in src_files.items():
            a, b = read_header(f), read_header(os.path.join(out, "copy.db-%s.mmkv" % t))
            owner = copy_db.execute('SELECT owner FROM "%s_commit"' % t.replace('"', '""')
                                    ).fetchone()[0]
            src_owner = src_db.execute('SELECT owner FROM "%s_commit"' % t.replace('"', '""')
                                       ).fetchone()[0]
            check("%r: the copy's data file has a new file id and owner id, the one its commit "
                  "record names" % t,
                  a[HEADER_FILE_ID:HEADER_FILE_ID + 8] != b[HEADER_FILE_ID:HEADER_FILE_ID + 8]
                  and struct.unpack_from("<q", b, HEADER_OWNER_ID)[0] == owner != src_owner,
                  "owner %d, source's %d" % (owner, src_owner))
            if t == 'odd "name" ,x':
                check("the sync=off original carries the unsynced notice",
                      any(a[o:o + 8] == NOTICE_MAGIC for o in NOTICE_OFFSETS))
            check("%r: the copy carries no unsynced notice: every byte of it is durable" % t,
                  all(b[o:o + 8] != NOTICE_MAGIC for o in NOTICE_OFFSETS))
        src_db.close()
        copy_db.close()
        # A copy of the copy, from the copy's own directory.
        out2 = os.path.join(d, "out2")
        os.makedirs(out2)
        c = connect(copy)
        c.execute("SELECT mmkv_backup(?)", (os.path.join(out2, "copy2.db"),))
        c.close()
        check_copy_whole("a copy of the copy", os.path.join(out2, "copy2.db"), source)


def test_copy_files_are_its_own():
    r = harness.rng("own files")
    with TempDir() as d:
        p = make_source(d, r, journal="delete")
        copy = os.path.join(d, "src", "copy.db")  # beside the original: relative file= clashes
        db = connect(p)
        db.execute("SELECT mmkv_backup('%s')" % copy)
        db.close()
        source = dump(p)
        originals = sorted(os.path.join(root, f) for root, _, files in os.walk(d) for f in files
                           if "copy.db" not in f)
        before = {f: open(f, "rb").read() for f in originals}
        out = run_child('''
            db = connect(sys.argv[1])
            for t in [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE sql LIKE "
                                                 "'CREATE VIRTUAL TABLE%'")]:
                q = '"%s"' % t.replace('"', '""')
                db.execute("BEGIN")
                db.execute("INSERT OR REPLACE INTO %s VALUES('written in the copy', 1)" % q)
                db.execute("UPDATE %s SET value = 'changed in the copy'" % q)
                db.execute("DELETE FROM %s WHERE key = (SELECT key FROM %s WHERE key <> "
                           "'written in the copy' LIMIT 1)" % (q, q))
                db.execute("COMMIT")
                db.execute("INSERT INTO %s(%s) VALUES('integrity-check')" % (q, q))
            print("written")
        ''', copy)
        check_equal("every table of the copy can be written", out, "written")
        after = {f: open(f, "rb").read() for f in originals}
        changed = [f for f in originals if before[f] != after[f]]
        check("writing the copy leaves every file of the original as it was (%d files)"
              % len(originals), not changed, repr(changed))
        check_equal("the original reads as before", dump(p)["tables"], source["tables"])
        db = connect(p)
        for t in ("kv", "abs", "renamed"):
            db.execute("INSERT INTO %s VALUES('written in the original', 2)" % t)
            check_equal("the original's %s goes on working" % t, db.execute(
                "SELECT value FROM %s WHERE key = 'written in the original'" % t).fetchall(),
                [(2,)])
        db.close()
        got = dump(copy)
        check("the copy does not see what the original wrote after",
              all(["text", "written in the original".encode().hex()] not in
                  [row[0] for row in rows] for rows in got["tables"].values()))
        check_copy_whole("the copy after writes to both", copy)
        check_copy_whole("the original after writes to both", p)


# ---- hot backups ----------------------------------------------------------------------------

# Commits, until the file argv[2] appears, transactions that write one counter n to the native
# table counter, to events, and to the mmkv tables kv and kv2 (kv2 also gets row n); with
# argv[4] = "churn", every fifth also drops and makes anew the mmkv table churn, holding n; with
# argv[5] = "fast", it never waits for the disk (PRAGMA synchronous = OFF). Prints the commits and
# each one's start and length.
WRITER = r'''
import random
db = connect(sys.argv[1], timeout=60)
stop, r, churn = sys.argv[2], random.Random(sys.argv[3]), sys.argv[4] == "churn"
if sys.argv[5] == "fast":
    db.execute("PRAGMA synchronous = OFF")
times = []
while not os.path.exists(stop):
    start = time.time()
    db.execute("BEGIN IMMEDIATE")
    db.execute("UPDATE counter SET n = n + 1")
    n = db.execute("SELECT n FROM counter").fetchone()[0]
    db.execute("INSERT INTO events VALUES(?)", (n,))
    db.execute("INSERT OR REPLACE INTO kv VALUES('counter', ?)", (n,))
    db.execute("INSERT OR REPLACE INTO kv2 VALUES('counter', ?)", (n,))
    db.execute("INSERT INTO kv2 VALUES(?, ?)", (n, os.urandom(r.randrange(1, 4000))))
    if churn and n % 5 == 0:
        db.execute("DROP TABLE IF EXISTS churn")
        db.execute("CREATE VIRTUAL TABLE churn USING mmkv")
        db.execute("INSERT INTO churn VALUES('counter', ?)", (n,))
    elif churn:
        db.execute("UPDATE churn SET value = ? WHERE key = 'counter'", (n,))
    db.execute("COMMIT")
    times.append((start, time.time() - start))
print(json.dumps({"times": times}))
'''


def make_hot_source(p, journal, big_rows, value_bytes, churn=False, sync="full"):
    db = connect(p)
    db.execute("PRAGMA journal_mode = %s" % journal)
    db.execute("CREATE TABLE counter(n INTEGER)")
    db.execute("INSERT INTO counter VALUES(0)")
    db.execute("CREATE TABLE events(x INTEGER)")
    db.execute("CREATE VIRTUAL TABLE kv USING mmkv(sync=%s)" % sync)
    db.execute("CREATE VIRTUAL TABLE kv2 USING mmkv(file='kv2 data.mmkv', sync=%s)" % sync)
    if churn:
        db.execute("CREATE VIRTUAL TABLE churn USING mmkv")
        db.execute("INSERT INTO churn VALUES('counter', 0)")
    db.execute("BEGIN")
    value = b"v" * value_bytes
    db.executemany("INSERT INTO kv VALUES(?, ?)", (("big%d" % i, value) for i in range(big_rows)))
    db.execute("COMMIT")
    db.close()


class Writer:
    """The WRITER child, started and then stopped; its commits' times."""

    def __init__(self, p, d, churn=False, fast=False):
        self.stop = os.path.join(d, "stop-writer")
        self.proc = subprocess.Popen(
            [PYTHON, "-c", PRELUDE + WRITER, p, self.stop, harness.seed_of("writer"),
             "churn" if churn else "plain", "fast" if fast else "durable"],
            env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self):
        open(self.stop, "w").close()
        try:
            out, err = self.proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            out, err = self.proc.communicate()
        try:
            return json.loads(out.strip().splitlines()[-1])["times"]
        except (ValueError, IndexError, KeyError):
            return {"writer failed": (out + err)[-3000:]}


def counter_of(p):
    c = sqlite3.connect(p, timeout=60)
    try:
        return c.execute("SELECT n FROM counter").fetchone()[0]
    finally:
        c.close()


def wait_for_commits(p, n, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if counter_of(p) >= n:
            return True
        time.sleep(0.01)
    return False


def hot_backup(label, d, p, copy, churn=False, summary=False, fast=False):
    """Backs up p to copy while a writer commits; checks one snapshot; returns the backup's
    seconds, the writer's longest commit during it and outside it, and its commits during it."""
    w = Writer(p, d, churn, fast)
    started = wait_for_commits(p, counter_of(p) + 20)
    before = counter_of(p)
    db = connect(p)
    db.execute("PRAGMA busy_timeout = 60000")
    t0 = time.time()
    error = None
    try:
        db.execute("SELECT mmkv_backup(?)", (copy,))
    except sqlite3.Error as e:
        error = str(e)
    t1 = time.time()
    db.close()
    wait_for_commits(p, counter_of(p) + 20)
    after = counter_of(p)
    times = w.finish()
    if os.path.exists(os.path.join(d, "stop-writer")):
        os.remove(os.path.join(d, "stop-writer"))
    check("%s: the writer was committing" % label, started and isinstance(times, list),
          repr(times)[:2000])
    if not check("%s: mmkv_backup succeeds under a writer" % label, error is None, error):
        return None
    got = check_copy_whole(label, copy, summary=summary)
    if "counter" not in got:
        return None
    n = got["counter"]
    counters = got["counters"]
    check("%s: one snapshot: the native counter and every mmkv table's are the same (%d)"
          % (label, n), all(v == n for v in counters.values()), repr(counters))
    check_equal("%s: and the native events are 1..%d" % (label, n), got["events"], [n, 1, n]
                if n else [0, None, None])
    check_equal("%s: kv2 holds the counter and one row per commit" % label,
                got["tables"]["kv2"] if summary else len(got["tables"]["kv2"]), n + 1)
    check("%s: the snapshot is one the backup saw (%d <= %d <= %d)" % (label, before, n, after),
          before <= n <= after)
    if not isinstance(times, list):
        return None
    during = [t for s, t in times if s < t1 and s + t > t0]
    outside = [t for s, t in times if not (s < t1 and s + t > t0)]
    return t1 - t0, max(during or [0]), max(outside or [0]), len(during)


def test_hot_backup_one_snapshot():
    for journal in ("wal", "delete"):
        for churn in (False, True):
            with TempDir() as d:
                p = os.path.join(d, "app.db")
                make_hot_source(p, journal, 20000, 1000, churn)
                for attempt in range(3):
                    label = "%s mode%s, backup %d" % (journal, ", tables dropped and made anew"
                                                      if churn else "", attempt + 1)
                    copy = os.path.join(d, "copy%d.db" % attempt)
                    result = hot_backup(label, d, p, copy, churn)
                    if result:
                        print("# %s: %.3f s, %d commits during it, longest %.1f ms "
                              "(%.1f ms outside it)" % (label, result[0], result[3],
                                                         result[1] * 1000, result[2] * 1000))


def test_large_table_hot_backup():
    """A LARGE_MB table copied while a writer commits: the rate, and the writer's longest pause.
    The writer waits for the disk at no commit (synchronous=OFF, sync=off), so that any wait
    the backup makes it do shows: in rollback-journal mode, the final phase's read lock."""
    value = 1000
    rows = LARGE_MB * (1 << 20) // (value + 48)
    for journal in ("wal", "delete"):
        with TempDir() as d:
            p = os.path.join(d, "app.db")
            make_hot_source(p, journal, rows, value, sync="off")
            copy = os.path.join(d, "copy.db")
            label = "%d MB table, %s mode" % (LARGE_MB, journal)
            result = hot_backup(label, d, p, copy, summary=True, fast=True)
            if not result:
                continue
            seconds, during, outside, commits = result
            size = os.path.getsize(copy + "-kv.mmkv")  # the log copied, up to its tail
            print("# %s: %.1f MB of log copied (and the copy's index built) in %.2f s: "
                  "%.0f MB/s; the writer committed %d times meanwhile, its longest commit "
                  "%.1f ms (%.1f ms outside the backup)"
                  % (label, size / 1e6, seconds, size / 1e6 / seconds, commits, during * 1000,
                     outside * 1000))
            check("%s: the writer went on committing during the backup (%d commits)"
                  % (label, commits), commits >= 10)
            check("%s: the writer waited at most %.1f s (%.3f s)" % (label, PAUSE_LIMIT_S, during),
                  during < PAUSE_LIMIT_S)
            check_equal("%s: the copy's big table has every row" % label,
                        dump(copy, summary=True)["tables"]["kv"] >= rows, True)


def test_attached_by_schema_name():
    r = harness.rng("attached")
    with TempDir() as d:
        main_db, aux = os.path.join(d, "main.db"), os.path.join(d, "aux.db")
        db = connect(main_db)
        db.execute("CREATE VIRTUAL TABLE mine USING mmkv")
        db.execute("INSERT INTO mine VALUES('main only', 1)")
        db.execute("ATTACH ? AS other", (aux,))
        db.execute("CREATE TABLE other.native(x)")
        db.execute("INSERT INTO other.native VALUES(1), (2)")
        db.execute("CREATE VIRTUAL TABLE other.kv USING mmkv")
        db.execute("CREATE VIRTUAL TABLE other.kv3 USING mmkv(file='aux kv3.mmkv')")
        fill(db, "kv", r, 200, updates=20, deletes=20)
        db.execute("INSERT INTO other.kv3 VALUES(1, 'one')")
        copy = os.path.join(d, "aux-copy.db")
        db.execute("SELECT mmkv_backup('OTHER', ?)", (copy,))
        db.close()
        source = dump(aux)
        check_copy_whole("an attached database by its schema name", copy, source)
        check_equal("its tables' files are beside the copy",
                    [f for f in listing(d) if f.startswith("aux-copy.db")],
                    ["aux-copy.db", "aux-copy.db-kv.mmkv", "aux-copy.db-kv.mmkv-index",
                     "aux-copy.db-kv3.mmkv", "aux-copy.db-kv3.mmkv-index"])


def test_utf16_database():
    """The copy's data files keep the text encoding of the original's (the database's)."""
    for encoding in ("UTF-16le", "UTF-16be"):
        with TempDir() as d:
            p = os.path.join(d, "app.db")
            db = connect(p)
            db.execute("PRAGMA encoding = '%s'" % encoding)
            db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
            db.execute("CREATE TABLE t(x)")
            for i, word in enumerate(["ascii", "caf\u00e9", "\u65e5\u672c", "\U0001f600 emoji"]):
                db.execute("INSERT INTO kv VALUES(?, ?)", (word, word * i))
                db.execute("INSERT INTO t VALUES(?)", (word,))
            db.execute("SELECT mmkv_backup(?)", (os.path.join(d, "copy.db"),))
            db.close()
            check_copy_whole("a %s database" % encoding, os.path.join(d, "copy.db"), dump(p))


def test_hot_journal_rolled_back():
    """A writer that died mid-transaction in rollback-journal mode left a hot journal: the backup's
    own connection, the first to read, rolls it back as any reader would, and copies what was
    committed."""
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        out = run_child('''
            import signal
            db = connect(sys.argv[1])
            db.execute("PRAGMA journal_mode = delete")
            db.execute("CREATE TABLE t(x)")
            db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
            db.execute("INSERT INTO t VALUES('committed')")
            db.execute("INSERT INTO kv VALUES('committed', 1)")
            db.execute("PRAGMA cache_size = 10")  # the transaction spills into the database file
            db.execute("BEGIN")
            db.executemany("INSERT INTO t VALUES(?)", ((b"x" * 1000,) for _ in range(2000)))
            db.execute("INSERT INTO kv VALUES('never committed', 2)")
            print(os.path.exists(sys.argv[1] + "-journal"), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        ''', p)
        check("a writer died mid-transaction, leaving its journal (%s)" % out.split()[:1],
              out.startswith("True") and os.path.exists(p + "-journal"))
        db = connect(p)
        copy = os.path.join(d, "copy.db")
        error = None
        try:
            db.execute("SELECT mmkv_backup(?)", (copy,))
        except sqlite3.Error as e:
            error = str(e)
        db.close()
        check("the backup rolls the hot journal back and succeeds", error is None, error)
        got = check_copy_whole("a backup after a writer died", copy, dump(p))
        check_equal("and the copy holds what was committed", got.get("tables", {}).get("kv"),
                    [[["text", b"committed".hex()], ["int", "1"]]])


def test_salvaged_table():
    """A sync=off table whose last commits a power cut took (as if: the process is killed, and the
    log's tail and the index are lost): its readers see what salvage kept, behind the commit
    record; the copy holds the same, and is whole."""
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        run_child('''
            import signal
            db = connect(sys.argv[1])
            db.execute("CREATE TABLE t(x)")
            db.execute("CREATE VIRTUAL TABLE kv USING mmkv(sync=off)")
            for i in range(40):
                db.execute("BEGIN")
                db.execute("INSERT INTO kv VALUES(?, ?)", (i, "value %d" % i))
                db.execute("INSERT INTO t VALUES(?)", (i,))
                db.execute("COMMIT")
            os.kill(os.getpid(), signal.SIGKILL)  # no clean close: the notice's mark stays low
        ''', p)
        data = p + "-kv.mmkv"
        with open(data, "r+b") as f:
            log = f.read()
            # Records start at 4096; keep about half of them, as if the rest never reached disk.
            cut = 4096 + (len(log.rstrip(b"\0")) - 4096) // 2 // 8 * 8
            f.seek(cut)
            f.write(b"\0" * (len(log) - cut))
        os.remove(data + "-index")
        source = dump(p)
        check("the damaged source reads what salvage kept, less than its commit record says",
              0 < len(source.get("tables", {}).get("kv", [])) < 40, repr(source)[:500])
        db = connect(p)
        db.execute("SELECT mmkv_backup(?)", (os.path.join(d, "copy.db"),))
        db.close()
        check_copy_whole("a table salvage left behind its record", os.path.join(d, "copy.db"),
                         source)
        c = connect(os.path.join(d, "copy.db"))
        c.execute("INSERT INTO kv VALUES('after', 1)")
        c.execute("INSERT INTO kv(kv) VALUES('integrity-check')")
        check_equal("the copy's table goes on from there",
                    c.execute("SELECT count(*) FROM kv").fetchone()[0],
                    len(source["tables"]["kv"]) + 1)
        c.close()


# ---- refusals -------------------------------------------------------------------------------

def test_refusals():
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        db = connect(p)
        db.execute("PRAGMA journal_mode = wal")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        db.execute("INSERT INTO kv VALUES(1, 'one')")
        os.makedirs(os.path.join(d, "out"))
        out = os.path.join(d, "out")

        def refused(label, sql, contains, params=(), conn=None):
            before = listing(out)
            check_error("%s: refused" % label, lambda: (conn or db).execute(sql, params),
                        contains)
            check_equal("%s: nothing is made" % label, listing(out), before)

        target = os.path.join(out, "copy.db")
        open(target, "w").close()
        refused("an existing (empty) target", "SELECT mmkv_backup(?)",
                "exists; a backup never overwrites a file", (target,))
        with open(target, "w") as f:
            f.write("precious")
        refused("an existing target", "SELECT mmkv_backup(?)", "remove it, or name another path",
                (target,))
        check_equal("the existing target is left as it was", open(target).read(), "precious")
        os.remove(target)
        for suffix, what in (("-journal", "SQLite would take it for the copy's rollback journal"),
                             ("-wal", "copy's write-ahead log")):
            open(target + suffix, "w").close()
            refused("a target whose %s exists" % suffix, "SELECT mmkv_backup(?)", what, (target,))
            os.remove(target + suffix)
        open(target + "-kv.mmkv", "w").close()
        refused("a target where a table's data file would go exists", "SELECT mmkv_backup(?)",
                "where the copy's table \"kv\" would keep its data", (target,))
        os.remove(target + "-kv.mmkv")
        for path, what in ((p, "is the database being backed up"),
                           ("app.db", "is the database being backed up"),
                           (p + "-wal", "is the write-ahead log of the database being backed up"),
                           (p + "-shm", "is the shared-memory file of the database"),
                           (p + "-journal", "is the rollback journal of the database")):
            cwd = os.getcwd()
            os.chdir(d)
            try:
                refused("the target %s" % path.replace(d, "DIR"), "SELECT mmkv_backup(?)", what,
                        (path,))
            finally:
                os.chdir(cwd)
        refused("an empty target path", "SELECT mmkv_backup('')", "the copy's path is empty")
        refused("a :memory: target", "SELECT mmkv_backup(':memory:')", "is not a file")
        refused("a URI target", "SELECT mmkv_backup('file:x.db?mode=rwc')", "is a URI")
        refused("a target in a missing directory", "SELECT mmkv_backup(?)",
                "does its directory exist", (os.path.join(out, "no", "such", "copy.db"),))
        refused("an unknown schema", "SELECT mmkv_backup('nosuch', ?)",
                "no database \"nosuch\" is attached", (target,))
        refused("the temp schema", "SELECT mmkv_backup('temp', ?)", "is in memory or temporary",
                (target,))
        mem = connect(":memory:")
        mem.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        refused("an in-memory database", "SELECT mmkv_backup(?)",
                "database \"main\" is in memory or temporary", (target,), conn=mem)
        mem.close()
        for args in ("", "'a', 'b', 'c'"):
            refused("%d arguments" % (len(args.split(",")) if args else 0),
                    "SELECT mmkv_backup(%s)" % args,
                    "expected mmkv_backup('path') or mmkv_backup('schema', 'path')")
        for value, what in (("NULL", "NULL"), ("1", "an integer"), ("1.5", "a real"),
                            ("x'00'", "a blob")):
            refused("a path that is %s" % what, "SELECT mmkv_backup(%s)" % value,
                    "the path of the copy must be text, not %s" % what)
            refused("a schema name that is %s" % what, "SELECT mmkv_backup(%s, ?)" % value,
                    "the schema name must be text, not %s" % what, (target,))
        db.execute("BEGIN")
        db.execute("INSERT INTO kv VALUES(2, 'two')")
        refused("inside a write transaction", "SELECT mmkv_backup(?)",
                "has a write transaction open on \"main\": commit or roll it back", (target,))
        db.execute("ROLLBACK")
        # SQLITE_DIRECTONLY: a view or a trigger of the schema may not call it.
        db.execute("CREATE VIEW sneaky AS SELECT mmkv_backup('%s') AS x" % target)
        db.execute("CREATE TABLE t(x)")
        db.execute("CREATE TRIGGER sneaky_trigger AFTER INSERT ON t BEGIN "
                   "SELECT mmkv_backup('%s'); END" % target)
        refused("a call from a view", "SELECT * FROM sneaky", "unsafe use of mmkv_backup()")
        refused("a call from a trigger", "INSERT INTO t VALUES(1)", "unsafe use of mmkv_backup()")
        db.execute("BEGIN")
        db.execute("SELECT count(*) FROM kv").fetchone()
        db.execute("SELECT mmkv_backup(?)", (target,))  # a read transaction is no obstacle
        db.execute("COMMIT")
        check_copy_whole("a backup called inside a read transaction", target)
        db.close()


def test_failed_backup_leaves_nothing():
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        db = connect(p)
        db.execute("CREATE VIRTUAL TABLE a USING mmkv")
        db.execute("CREATE VIRTUAL TABLE b USING mmkv")
        db.execute("CREATE VIRTUAL TABLE c USING mmkv(file='c.mmkv')")
        for t in "abc":
            db.execute("INSERT INTO %s VALUES(1, zeroblob(100000))" % t)
        db.close()
        out = os.path.join(d, "out")
        os.makedirs(out)
        os.rename(os.path.join(d, "c.mmkv"), os.path.join(d, "c.mmkv.moved"))
        db = connect(p)
        check_error("a table whose data file is missing: the backup fails, naming it",
                    lambda: db.execute("SELECT mmkv_backup(?)", (os.path.join(out, "x.db"),)),
                    "cannot copy table \"c\"")
        check_equal("and leaves nothing behind", listing(out), [])
        db.close()
        os.rename(os.path.join(d, "c.mmkv.moved"), os.path.join(d, "c.mmkv"))
        db = connect(p)
        db.execute("SELECT mmkv_backup(?)", (os.path.join(out, "x.db"),))
        check_equal("with the file back, the same backup succeeds", listing(out),
                    sorted(["x.db"] + ["x.db-%s.mmkv%s" % (t, s) for t in "abc"
                                       for s in ("", "-index")]))
        db.close()
        check_copy_whole("the backup made after a failed one", os.path.join(out, "x.db"),
                         dump(p))


if __name__ == "__main__":
    harness.main([test_backup_copies_every_table, test_copy_files_are_its_own,
                  test_hot_backup_one_snapshot, test_large_table_hot_backup,
                  test_attached_by_schema_name, test_utf16_database, test_hot_journal_rolled_back,
                  test_salvaged_table,
                  test_refusals,
                  test_failed_backup_leaves_nothing])
