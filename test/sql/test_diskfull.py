"""Out of space and unreadable files ("Survives anything", part 3).

When a file cannot grow in the middle of a transaction, the statement fails with SQLITE_FULL,
the transaction can be rolled back, the table stays usable and nothing committed is lost; no
SIGBUS anywhere. Read errors and short files are errors, not crashes.

Space runs out in child processes that set RLIMIT_FSIZE (with SIGXFSZ ignored, so that growing a
file past the limit fails with EFBIG instead of killing the process) before opening the database.
The limits are chosen so that the limit is hit by mmkv's data file (which grows ahead: doubling,
in 1 MiB steps, else exactly what is needed), by its index file (whose hash tables double), and
by SQLite's own database, WAL or journal file; in WAL and rollback-journal mode, and for an
in-memory database whose table lives in file=PATH. Where the machine allows it (root, unshare),
the same runs happen once more on a small tmpfs that really fills up (ENOSPC). Under
RLIMIT_FSIZE, a write of SQLite's own that fails (EFBIG) is SQLITE_IOERR_WRITE, not SQLITE_FULL:
os_unix.c maps only ENOSPC to SQLITE_FULL, so there SQLite's own error is accepted; on the tmpfs
every error must be SQLITE_FULL.

Each run: the child commits rows, then in one transaction writes until a statement fails,
reports the error, rolls back, reads every committed row (scan and point lookups), does small
writes under the same limit and commits them. A second child without the limit then reopens the
files: exactly the committed rows (small writes included), nothing of the failed transaction, and
a further large transaction succeeds.

Then damaged files while the table is not open: a data file cut short, replaced by a directory or
a FIFO, a missing data file, an index replaced by a directory or a FIFO: a clear error naming the
file (or, where the data is all there, the right rows), never a crash, never a hang.
"""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (CHILD_ENV, ENC_SRC, PYTHON, TempDir, canon, check, check_equal,  # noqa: E402
                     connect, enc, rows_diff)

KB = 1024
MB = 1024 * 1024
CHILD_TIMEOUT = 30

# ---------------------------------------------------------------------------------------------
# The child that runs out of space. argv[1] is a JSON config:
#   db           database path or ":memory:"
#   file         the data file (file=PATH) for ":memory:"
#   journal      "wal" or "delete" (database files only)
#   limit        RLIMIT_FSIZE in bytes, or null
#   kind         "data": large values (and updates of committed keys to large values, deletes)
#                "index": many small rows, so that the index's tables double
#                "sqlite-spill": tiny kv rows and large native rows with a small page cache, so
#                   that SQLite writes its WAL / journal / database file mid-transaction
#                "sqlite-commit": the same with a large cache: SQLite's files fail at COMMIT
#   seed, cap    random seed; the most statements to try before giving up
#   ballast      a file to delete before the small writes (tmpfs runs), or null
# Prints "FILL <json>".
FILL = ENC_SRC + r'''
import json, os, random, resource, signal, sqlite3, sys
cfg = json.loads(sys.argv[1])
if cfg.get("limit"):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (cfg["limit"], cfg["limit"]))
out = {}
def emit():
    print("FILL " + json.dumps(out))
    sys.stdout.flush()

def err_info(e):
    return {"class": type(e).__name__, "msg": str(e),
            "code": getattr(e, "sqlite_errorname", None)}

rng = random.Random(cfg["seed"])
mem = cfg["db"] == ":memory:"
kind = cfg["kind"]
db = sqlite3.connect(cfg["db"], isolation_level=None, timeout=5)
db.enable_load_extension(True)
db.load_extension(os.environ["MMKV_EXTENSION"])
if not mem:
    out["journal_mode"] = db.execute("PRAGMA journal_mode=" + cfg["journal"]).fetchone()[0]
db.execute("CREATE VIRTUAL TABLE kv USING mmkv" + ("(file='%s')" % cfg["file"] if mem else ""))
db.execute("CREATE TABLE nat(k INTEGER PRIMARY KEY, v)")

# ---- committed rows (expected: enc(key) -> [key, value]) ----
expected = {}
def put(k, v):
    db.execute("INSERT INTO kv VALUES(?, ?)", (k, v))
    expected[json.dumps(enc(k, True))] = [k, v]
first = [(1, None), (-7, 0), (2 ** 62, 2.5), (1.5, "one and a half"), ("text", b"\x00blob"),
         ("1", "text one"), (b"\x00k", ""), ("", b""), ("big", rng.randbytes(10000)),
         ("t2k", "t" * 2000)]
for k, v in first:
    put(k, v)                                  # one autocommit statement each
db.execute("INSERT INTO nat VALUES(1, 'a')")
db.execute("BEGIN")
for i in range(12):
    put("c%02d" % i, rng.randbytes(rng.randint(0, 1500)) if i % 2 else "v%d" % i * (i + 1))
put("gone", "deleted below")
db.execute("INSERT INTO nat VALUES(2, 'b')")
db.execute("COMMIT")
db.execute("UPDATE kv SET value = ? WHERE key = ?", ("updated", "c03"))
expected[json.dumps(enc("c03", True))][1] = "updated"
db.execute("DELETE FROM kv WHERE key = ?", ("gone",))
del expected[json.dumps(enc("gone", True))]
committed_keys = [kv[0] for kv in expected.values()]
nat_committed = [1, 2]

# ---- the transaction that runs out of space ----
base = 10 ** 9
attempted = []
err = None
stage = "begin"
if not mem:
    db.execute("PRAGMA cache_size=%d" % (20 if kind == "sqlite-spill" else -65536))
try:
    db.execute("BEGIN")
    stage = "insert"
    n = 0
    native_bytes = 0
    while n < cfg["cap"]:
        k = base + n
        attempted.append(k)
        if kind == "data":
            db.execute("INSERT INTO kv VALUES(?, ?)", (k, rng.randbytes(rng.randint(20000, 70000))))
            if n % 3 == 2:   # a committed key gets a large new version
                ck = committed_keys[n % len(committed_keys)]
                db.execute("UPDATE kv SET value = ? WHERE key = ?", (rng.randbytes(30000), ck))
            if n % 5 == 4:   # and one is deleted
                db.execute("DELETE FROM kv WHERE key = ?", (committed_keys[(n * 7) % len(committed_keys)],))
        elif kind == "index":
            db.execute("INSERT INTO kv VALUES(?, NULL)", (k,))
        else:
            db.execute("INSERT INTO kv VALUES(?, ?)", (k, "tiny"))
            db.execute("INSERT INTO nat VALUES(?, ?)", (1000 + n, rng.randbytes(20000)))
            native_bytes += 20000
            if kind == "sqlite-commit" and native_bytes > 2 * cfg["limit"]:
                n += 1
                break
        n += 1
    stage = "commit"
    db.execute("COMMIT")
    stage = "committed"
except sqlite3.Error as e:
    err = err_info(e)
out["stage"] = stage
out["attempted"] = len(attempted)
out["error"] = err
out["in_txn_after_error"] = db.in_transaction
try:
    db.execute("ROLLBACK")
    out["rollback"] = "ok"
except sqlite3.Error as e:
    out["rollback"] = str(e)
out["in_txn_after_rollback"] = db.in_transaction

def read_state(tag):
    """Scan, count, point lookups of every expected key and of some failed keys, nat keys."""
    r = {}
    try:
        r["scan"] = enc_rows(db.execute("SELECT key, value FROM kv").fetchall())
    except sqlite3.Error as e:
        r["scan_error"] = err_info(e)
    try:
        r["count"] = db.execute("SELECT count(*) FROM kv").fetchone()[0]
    except sqlite3.Error as e:
        r["count_error"] = err_info(e)
    bad = []
    for ek, (k, v) in expected.items():
        try:
            got = enc_rows(db.execute("SELECT key, value FROM kv WHERE key = ?", (k,)).fetchall())
            if got != [[enc(k), enc(v)]]:
                bad.append([ek, got])
        except sqlite3.Error as e:
            bad.append([ek, str(e)])
    r["lookups_bad"] = bad[:5]
    r["lookups_bad_count"] = len(bad)
    found = []
    for k in sorted(set(attempted[:3] + attempted[len(attempted) // 2:len(attempted) // 2 + 1]
                        + attempted[-3:])):
        try:
            if db.execute("SELECT count(*) FROM kv WHERE key = ?", (k,)).fetchone()[0]:
                found.append(k)
        except sqlite3.Error as e:
            found.append([k, str(e)])
    r["failed_found"] = found
    try:
        r["nat"] = [x[0] for x in db.execute("SELECT k FROM nat ORDER BY k")]
    except sqlite3.Error as e:
        r["nat_error"] = err_info(e)
    r["expected"] = [[enc(k), enc(v)] for k, v in expected.values()]
    r["nat_expected"] = list(nat_committed)
    out[tag] = r

read_state("after_rollback")

# ---- small writes under the same limit ----
if cfg.get("ballast"):
    os.remove(cfg["ballast"])
steps = []
def step(sql, params=()):
    try:
        db.execute(sql, params)
        steps.append([sql, "ok"])
        return True
    except sqlite3.Error as e:
        steps.append([sql, err_info(e)])
        return False
if step("INSERT INTO kv VALUES(?, ?)", ("small-1", "s1")):
    expected[json.dumps(enc("small-1", True))] = ["small-1", "s1"]
if step("INSERT INTO kv VALUES(?, ?)", (77, b"s2")):
    expected[json.dumps(enc(77, True))] = [77, b"s2"]
# One transaction; at its first failure the rest of it is not tried (it may be rolled back).
txn_ok = step("BEGIN")
txn_ok = txn_ok and step("INSERT INTO kv VALUES(?, ?)", ("small-3", 3.25))
txn_ok = txn_ok and step("UPDATE kv SET value = ? WHERE key = ?", ("changed", "c05"))
txn_ok = txn_ok and step("DELETE FROM kv WHERE key = ?", ("c06",))
if not mem:
    txn_ok = txn_ok and step("INSERT INTO nat VALUES(3, 'c')")
txn_ok = txn_ok and step("COMMIT")
if txn_ok:
    expected[json.dumps(enc("small-3", True))] = ["small-3", 3.25]
    expected[json.dumps(enc("c05", True))][1] = "changed"
    del expected[json.dumps(enc("c06", True))]
    if not mem:
        nat_committed.append(3)
elif db.in_transaction:
    step("ROLLBACK")
out["small_writes"] = steps
read_state("after_small_writes")
db.close()
emit()
'''

# The child that reopens without a limit. argv[1]: the fill config plus
#   fill_out      the file holding the filling child's output (its expected rows, how many
#                 statements of the failed transaction it tried)
#   big_bytes     size of the final large transaction
#   ballast_verify  a file to delete first (tmpfs runs), or null
#   big_seed      the random seed of the large transaction's values
# Prints "VERIFY <json>".
VERIFY = ENC_SRC + r'''
import json, os, random, sqlite3, sys
cfg = json.loads(sys.argv[1])
out = {}
def err_info(e):
    return {"class": type(e).__name__, "msg": str(e),
            "code": getattr(e, "sqlite_errorname", None)}
fill = None
for line in open(cfg["fill_out"]):
    if line.startswith("FILL "):
        fill = json.loads(line[5:])
expected = fill["after_small_writes"]["expected"]
n, base = fill["attempted"], 10 ** 9
failed = sorted(set([base + i for i in range(min(n, 3))] + [base + n // 2]
                    + [base + i for i in range(max(0, n - 3), n)]))
try:
    mem = cfg["db"] == ":memory:"
    db = sqlite3.connect(cfg["db"], isolation_level=None, timeout=5)
    db.enable_load_extension(True)
    db.load_extension(os.environ["MMKV_EXTENSION"])
    if mem:
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % cfg["file"])
    out["scan"] = enc_rows(db.execute("SELECT key, value FROM kv").fetchall())
    out["count"] = db.execute("SELECT count(*) FROM kv").fetchone()[0]
    bad = []
    for ek, ev in expected:
        k = dec(ek)   # every key is short: enc() gives it in full
        got = enc_rows(db.execute("SELECT key, value FROM kv WHERE key = ?", (k,)).fetchall())
        if got != [[ek, ev]]:
            bad.append([ek, got])
    out["lookups_bad"] = bad[:5]
    out["lookups_bad_count"] = len(bad)
    out["failed_found"] = [k for k in failed
                           if db.execute("SELECT count(*) FROM kv WHERE key = ?", (k,)).fetchone()[0]]
    if not mem:
        out["nat"] = [x[0] for x in db.execute("SELECT k FROM nat ORDER BY k")]
    try:
        db.execute("INSERT INTO kv(kv) VALUES('integrity-check')")
        out["integrity"] = "ok"
    except sqlite3.Error as e:
        out["integrity"] = err_info(e)
    if cfg.get("ballast_verify"):
        os.remove(cfg["ballast_verify"])
    rng = random.Random(cfg["big_seed"])
    big = cfg["big_bytes"]
    n_big = max(1, big // (64 * 1024))
    try:
        db.execute("BEGIN")
        for i in range(n_big):
            db.execute("INSERT INTO kv VALUES(?, ?)", ("L%d" % i, rng.randbytes(64 * 1024)))
        for i in range(3000):
            db.execute("INSERT INTO kv VALUES(?, ?)", (-1000000 - i, i))
        db.execute("COMMIT")
        out["big"] = "ok"
    except sqlite3.Error as e:
        out["big"] = err_info(e)
    out["count_after_big"] = db.execute("SELECT count(*) FROM kv").fetchone()[0]
    out["n_big"] = n_big + 3000
    out["big_lookup"] = db.execute("SELECT length(value) FROM kv WHERE key = ?",
                                   ("L%d" % (n_big - 1),)).fetchone()
    db.close()
except sqlite3.Error as e:
    out["fatal"] = err_info(e)
print("VERIFY " + json.dumps(out))
'''


def signal_name(rc):
    try:
        return "killed by %s" % signal.Signals(-rc).name
    except ValueError:
        return "killed by signal %d" % -rc


def run_child(cmd, timeout=CHILD_TIMEOUT):
    """(returncode, or None if it hung and was killed; stdout; stderr). The child runs in its own
    process group, so that a hang is ended together with anything it started."""
    p = subprocess.Popen(cmd, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return None, out, "timed out after %ss; stderr: %s" % (timeout, err[-1000:])
    return p.returncode, out, err


def exit_problem(rc, stderr):
    if rc is None:
        return "child hung: " + stderr
    if rc < 0:
        return "child %s; stderr: %s" % (signal_name(rc), stderr[-1500:])
    if rc != 0:
        return "child exited with %d; stderr: %s" % (rc, stderr[-1500:])
    return ""


def parse_tagged(stdout, tag):
    for line in stdout.splitlines():
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1:])
    return None


# Which file a failed statement hit, for the coverage checks at the end.
hits = {}


def is_full_error(err):
    return (err["class"] in ("OperationalError", "DatabaseError") and err["code"] == "SQLITE_FULL"
            and ("full" in err["msg"].lower() or "space" in err["msg"].lower()))


def check_run(name, cfg, fill_rc, fill_out, fill_err, verify_rc, verify_out, verify_err,
              real_enospc=False):
    """All checks of one run, from the two children's outputs."""
    if not check(name + ": filling child exited normally (no SIGBUS, no signal)",
                 fill_rc == 0, exit_problem(fill_rc, fill_err)):
        return
    f = parse_tagged(fill_out, "FILL")
    if not check(name + ": filling child reported", f is not None,
                 "stdout %r stderr %r" % (fill_out[-500:], fill_err[-1500:])):
        return
    if cfg["db"] != ":memory:":
        check_equal(name + ": journal mode", f.get("journal_mode"), cfg["journal"])
    err = f["error"]
    detail = "stage %s after %d statements" % (f["stage"], f["attempted"])
    if not check(name + ": a statement failed when space ran out", err is not None,
                 "the whole transaction committed (%s)" % detail):
        return
    msg = err["msg"]
    data_file = cfg["file"] if cfg["db"] == ":memory:" else cfg["db"] + "-kv.mmkv"
    index_file = data_file + "-index"
    if "'%s'" % index_file in msg:
        hit = "index"
    elif "'%s'" % data_file in msg:
        hit = "data"
    elif msg.startswith("mmkv:"):
        hit = "mmkv-other"
    else:
        hit = "sqlite"
    hits.setdefault((cfg["mode"], cfg["how"]), []).append((cfg["kind"], hit, cfg.get("limit")))
    print("  %s: %s: %s %s: %s (%s)" % (name, hit, err["class"], err["code"], msg, detail))
    if hit == "sqlite" and not real_enospc:
        # SQLite's own VFS (os_unix.c unixWrite) reports a write that fails with anything but
        # ENOSPC, EFBIG included, as SQLITE_IOERR_WRITE; only mmkv's files are mmkv's to map.
        check(name + ": SQLite's own file hit the limit: SQLite's error (SQLITE_FULL, or "
              "SQLITE_IOERR_WRITE that os_unix.c gives for EFBIG)",
              err["class"] in ("OperationalError", "DatabaseError")
              and err["code"] in ("SQLITE_FULL", "SQLITE_IOERR_WRITE"),
              "%s %s: %s" % (err["class"], err["code"], msg))
    else:
        check(name + ": the error is SQLITE_FULL saying the disk is full / no space",
              is_full_error(err), "%s %s: %s" % (err["class"], err["code"], msg))
    if hit in ("data", "index", "mmkv-other"):
        check(name + ": mmkv's error names the file that could not grow",
              hit in ("data", "index"), msg)
    if cfg["kind"] == "sqlite-commit" and hit == "sqlite":
        check_equal(name + ": SQLite's files failed at COMMIT", f["stage"], "commit")
    rb = f["rollback"]
    check(name + ": the transaction rolled back",
          not f["in_txn_after_rollback"] and
          (rb == "ok" or (not f["in_txn_after_error"] and "no transaction is active" in rb)),
          "in transaction after the error: %s, ROLLBACK: %s, in transaction after: %s"
          % (f["in_txn_after_error"], rb, f["in_txn_after_rollback"]))

    def state_checks(tag, label, st):
        if "scan_error" in st:
            check(name + ": %s: scan" % label, False, "error %r" % st["scan_error"])
        else:
            d = rows_diff(st["scan"], st["expected"])
            check(name + ": %s: scan returns exactly the committed rows" % label, not d, d)
        check_equal(name + ": %s: count(*)" % label, st.get("count", st.get("count_error")),
                    len(st["expected"]))
        check(name + ": %s: point lookups of every committed key" % label,
              st["lookups_bad_count"] == 0,
              "%d wrong, first %s" % (st["lookups_bad_count"], st["lookups_bad"]))
        check(name + ": %s: rows of the failed transaction are absent" % label,
              not st["failed_found"], "found %s" % st["failed_found"])
        if cfg["db"] != ":memory:":
            check_equal(name + ": %s: native table holds its committed rows" % label,
                        st.get("nat", st.get("nat_error")), st["nat_expected"])

    state_checks("after_rollback", "after rollback", f["after_rollback"])
    bad_steps = [s for s in f["small_writes"] if s[1] != "ok"]
    check(name + ": small writes under the same limit succeed", not bad_steps,
          "failed: %s" % bad_steps)
    state_checks("after_small_writes", "after small writes", f["after_small_writes"])

    # ---- the reopening child ----
    if not check(name + ": reopening child exited normally", verify_rc == 0,
                 exit_problem(verify_rc, verify_err)):
        return
    v = parse_tagged(verify_out, "VERIFY")
    if not check(name + ": reopening child reported", v is not None,
                 "stdout %r stderr %r" % (verify_out[-500:], verify_err[-1500:])):
        return
    if not check(name + ": reopened without error", "fatal" not in v, str(v.get("fatal"))):
        return
    expected = f["after_small_writes"]["expected"]
    d = rows_diff(v["scan"], expected)
    check(name + ": reopened: exactly the committed rows, small writes included", not d, d)
    check_equal(name + ": reopened: count(*)", v["count"], len(expected))
    check(name + ": reopened: point lookups", v["lookups_bad_count"] == 0,
          "%d wrong, first %s" % (v["lookups_bad_count"], v["lookups_bad"]))
    check(name + ": reopened: nothing of the failed transaction", not v["failed_found"],
          "found keys %s" % v["failed_found"][:5])
    if cfg["db"] != ":memory:":
        check_equal(name + ": reopened: native table", v.get("nat"),
                    f["after_small_writes"]["nat_expected"])
    check_equal(name + ": reopened: integrity-check", v["integrity"], "ok")
    check_equal(name + ": reopened: a further large transaction commits", v["big"], "ok")
    if v["big"] == "ok":
        check_equal(name + ": reopened: the large transaction's rows are there",
                    [v["count_after_big"], v["big_lookup"]],
                    [len(expected) + v["n_big"], [64 * 1024]])


def fill_config(d, mode, kind, limit, seed, how="rlimit"):
    cfg = {"mode": mode, "kind": kind, "limit": limit, "seed": harness.seed_of(seed), "how": how,
           "cap": 200000 if kind == "index" else 3000, "ballast": None}
    if mode == "memory":
        cfg["db"] = ":memory:"
        cfg["file"] = os.path.join(d, "mem.mmkv")
    else:
        cfg["db"] = os.path.join(d, "app.db")
        cfg["journal"] = mode
    return cfg


def verify_config(cfg, fill_out_path, big_bytes, ballast=None):
    return dict(cfg, fill_out=fill_out_path, big_bytes=big_bytes, ballast_verify=ballast,
                big_seed=harness.seed_of(5))


def fkib(n):
    return "%dK" % (n // KB) if n % KB == 0 else "%d" % n


def one_rlimit_run(mode, kind, limit, seed):
    with TempDir() as d:
        cfg = fill_config(d, mode, kind, limit, seed)
        name = "%s/%s/limit=%s" % (mode, kind, fkib(limit))
        rc, out, err = run_child([PYTHON, "-c", FILL, json.dumps(cfg)])
        vrc, vout, verr = None, "", "not run"
        if rc == 0 and parse_tagged(out, "FILL"):
            fill_out = os.path.join(d, "fill.out")
            with open(fill_out, "w") as f:
                f.write(out)
            vcfg = verify_config(cfg, fill_out, 3 * MB)
            vrc, vout, verr = run_child([PYTHON, "-c", VERIFY, json.dumps(vcfg)])
        check_run(name, cfg, rc, out, err, vrc, vout, verr)


# The limits. mmkv's data file starts at 64 KiB and grows ahead to 1 MiB, 2 MiB, ... (else to
# exactly what is needed): limits below 1 MiB fail its first growth, then between 1 and 2 MiB the
# second. The index starts with 1024 slots and doubles at 5/8 full, appending each table: at
# 5120, 10240, 20480 keys (40-byte records: ~209K, ~414K, ~823K of data) its file reaches ~258K,
# ~520K, ~1044K, so the limits 245K, 490K, 960K fall while the index, not the data, is growing.
DATA_LIMITS = [256 * KB, 600 * KB + 4095, 1 * MB + 3, 1536 * KB + 1234]
INDEX_LIMITS = [245 * KB, 490 * KB, 960 * KB]
SPILL_LIMITS = [256 * KB + 1000, 700 * KB + 1000]
COMMIT_LIMITS = [400 * KB + 1000]


def test_rlimit():
    seed = 1
    for mode in ("wal", "delete", "memory"):
        for limit in DATA_LIMITS:
            one_rlimit_run(mode, "data", limit, seed)
            seed += 1
        for limit in INDEX_LIMITS:
            one_rlimit_run(mode, "index", limit, seed)
            seed += 1
        if mode == "memory":
            continue  # no file of SQLite's own
        for limit in SPILL_LIMITS:
            one_rlimit_run(mode, "sqlite-spill", limit, seed)
            seed += 1
        for limit in COMMIT_LIMITS:
            one_rlimit_run(mode, "sqlite-commit", limit, seed)
            seed += 1
    for mode in ("wal", "delete", "memory"):
        got = hits.get((mode, "rlimit"), [])
        check(mode + ": some limit was hit by mmkv's data file mid-transaction",
              any(h[1] == "data" for h in got), str(got))
        # An index that cannot grow goes on in its slack (up to 7/8 full), so a limit aimed at
        # the index is usually met by the data file first: either is a clean SQLITE_FULL.
        index_runs = [h for h in got if h[0] == "index"]
        check(mode + ": limits aimed at mmkv's index file end in a clean failure of one of its files",
              index_runs and all(h[1] in ("index", "data") for h in index_runs), str(got))
        if mode != "memory":
            check(mode + ": some limit was hit by SQLite's own files",
                  any(h[1] == "sqlite" for h in got), str(got))


# ---------------------------------------------------------------------------------------------
# A tmpfs that really fills up (ENOSPC), in a private mount namespace (needs root and unshare).

TMPFS_SIZE = 3 * MB
BALLAST1 = 256 * KB     # freed before the small writes
BALLAST2 = 1536 * KB    # freed before the reopening child's large transaction


def tmpfs_available():
    if not shutil.which("unshare") or os.geteuid() != 0:
        return False
    with TempDir() as d:
        try:
            p = subprocess.run(["unshare", "-m", "sh", "-c",
                                'mount -t tmpfs -o size=1m tmpfs "$1" && umount "$1"', "sh", d],
                               capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return p.returncode == 0


def one_tmpfs_run(mode, kind, seed):
    with TempDir() as d:
        mnt = os.path.join(d, "mnt")
        os.mkdir(mnt)
        fill_py = os.path.join(d, "fill.py")
        verify_py = os.path.join(d, "verify.py")
        with open(fill_py, "w") as f:
            f.write(FILL)
        with open(verify_py, "w") as f:
            f.write(VERIFY)
        cfg = fill_config(mnt, mode, kind, None, seed, how="tmpfs")  # no RLIMIT_FSIZE
        cfg["ballast"] = os.path.join(mnt, "ballast1")
        fill_out = os.path.join(d, "fill.out")
        vcfg = verify_config(cfg, fill_out, 1 * MB, os.path.join(mnt, "ballast2"))
        # Everything on the tmpfs happens inside one private mount namespace: it vanishes with it.
        script = r'''
mount -t tmpfs -o size=%d tmpfs "$1" || exit 97
head -c %d /dev/zero > "$1/ballast1" || exit 98
head -c %d /dev/zero > "$1/ballast2" || exit 98
"$2" "$3" "$4" > "$5"
echo "RC fill $?"
cat "$5"
"$2" "$6" "$7"
echo "RC verify $?"
''' % (TMPFS_SIZE, BALLAST1, BALLAST2)
        cmd = ["unshare", "-m", "sh", "-c", script, "sh", mnt, PYTHON, fill_py, json.dumps(cfg),
               fill_out, verify_py, json.dumps(vcfg)]
        name = "tmpfs/%s/%s" % (mode, kind)
        rc, out, err = run_child(cmd, timeout=2 * CHILD_TIMEOUT)
        if not check(name + ": namespace with a tmpfs ran", rc == 0,
                     exit_problem(rc, err) or "exit %s: %s" % (rc, err[-1000:])):
            return
        codes = {}
        for line in out.splitlines():
            if line.startswith("RC "):
                code = int(line.split()[2])
                codes[line.split()[1]] = -(code - 128) if code > 128 else code  # sh: 128+signal
        verify_rc = codes.get("verify") if parse_tagged(out, "FILL") else None
        check_run(name, cfg, codes.get("fill"), out, err, verify_rc, out, err, real_enospc=True)


def test_tmpfs():
    if not tmpfs_available():
        print("NOTE: no private tmpfs (needs root and unshare -m): real ENOSPC runs skipped")
        return
    seed = 100
    for mode in ("wal", "delete", "memory"):
        kinds = ["data", "index"] + ([] if mode == "memory" else ["sqlite-spill"])
        for kind in kinds:
            one_tmpfs_run(mode, kind, seed)
            seed += 1
    for mode in ("wal", "delete", "memory"):
        got = hits.get((mode, "tmpfs"), [])
        check("tmpfs/%s: some run was stopped by mmkv's data or index file" % mode,
              any(h[1] in ("data", "index") for h in got), str(got))
        if mode != "memory":
            check("tmpfs/%s: some run was stopped by SQLite's own files" % mode,
                  any(h[1] == "sqlite" for h in got), str(got))


# ---------------------------------------------------------------------------------------------
# Damaged files while the table is not open.

# Runs steps in a new process and prints "STEPS <json>": per step {"rows": ...} or {"error": ...}.
STEPS = ENC_SRC + r'''
import json, os, sqlite3, sys
cfg = json.loads(sys.argv[1])
db = sqlite3.connect(cfg["db"], isolation_level=None, timeout=5)
db.enable_load_extension(True)
db.load_extension(os.environ["MMKV_EXTENSION"])
out = []
for sql, params in cfg["steps"]:
    try:
        out.append({"rows": enc_rows(db.execute(sql, [dec(p) for p in params]).fetchall())})
    except sqlite3.Error as e:
        out.append({"error": type(e).__name__, "code": getattr(e, "sqlite_errorname", None),
                    "msg": str(e)})
db.close()
print("STEPS " + json.dumps(out))
'''

DAMAGE_ROWS = [(i, ("v%d-" % i) * 40) for i in range(40)] + [
    ("text", b"\x00\x01"), (1.5, None), (b"blob", 2.5), ("big", b"B" * 5000)]
META_MAGIC = 0x6174656d766b6d6d


def committed_tail(path):
    with open(path, "rb") as f:
        head = f.read(2048)
    best = None
    for off in (512, 1024):
        magic, txid, tail = struct.unpack_from("<QQQ", head, off)
        if magic == META_MAGIC and (best is None or txid > best[0]):
            best = (txid, tail)
    return best[1] if best else None


def run_steps(db, steps, timeout=10):
    cfg = {"db": db, "steps": [[sql, [enc(p, True) for p in params]] for sql, params in steps]}
    rc, out, err = run_child([PYTHON, "-c", STEPS, json.dumps(cfg)], timeout=timeout)
    problem = exit_problem(rc, err)
    res = parse_tagged(out, "STEPS") if not problem else None
    if not problem and res is None:
        problem = "child printed %r (stderr %r)" % (out[-300:], err[-1000:])
    return res, problem


def expected_scan(rows):
    return [[enc(k), enc(v)] for k, v in rows]


def step_ok_or_named_error(res, expected_rows, path, must_fail):
    """'' if res is the expected rows (unless must_fail) or an error naming path, else why."""
    if "error" in res:
        if res["error"] not in ("DatabaseError", "OperationalError"):
            return "error class %s: %s" % (res["error"], res["msg"])
        if "'%s'" % path not in res["msg"] and path not in res["msg"]:
            return "error does not name %s: %s %s: %s" % (path, res["error"], res["code"],
                                                          res["msg"])
        return ""
    if must_fail:
        return "no error: returned %s" % json.dumps(res["rows"])[:300]
    if expected_rows is not None and canon(res["rows"]) != canon(expected_rows):
        return "wrong rows: " + rows_diff(res["rows"], expected_rows)
    return ""


def damage_case(name, d, db, data_path, originals, damage, target, must_fail, memory=False):
    """Restores the files, applies damage, then reads and writes in a new process."""
    for p, blob in originals.items():
        if os.path.isdir(p) and not os.path.islink(p):
            os.rmdir(p)
        elif os.path.lexists(p):
            os.remove(p)
        if blob is not None:
            with open(p, "wb") as f:
                f.write(blob)
    damage()
    exp = expected_scan(DAMAGE_ROWS)
    steps = []
    if memory:
        steps.append(("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % data_path, ()))
    steps += [("SELECT key, value FROM kv", ()),
              ("SELECT count(*) FROM kv", ()),
              ("SELECT value FROM kv WHERE key = ?", (39,)),
              ("INSERT INTO kv VALUES(?, ?)", ("new", "row")),
              ("SELECT key, value FROM kv", ())]
    if not memory:
        steps.append(("SELECT count(*) FROM nat", ()))
    res, problem = run_steps(db, steps)
    if not check(name + ": no crash, no hang", not problem, problem):
        return
    if memory:
        r0 = res.pop(0)
        if "error" in r0:
            why = step_ok_or_named_error(r0, None, target, True)
            check(name + ": CREATE fails with an error naming the file", not why, why)
            return
    scan, count, lookup, insert, scan2 = res[:5]
    why = step_ok_or_named_error(scan, exp, target, must_fail)
    check(name + ": scan: " + ("error naming the file" if must_fail else
                               "the right rows or an error naming the file"), not why, why)
    why = step_ok_or_named_error(count, [[enc(len(DAMAGE_ROWS))]], target, must_fail)
    check(name + ": count(*): " + ("error naming the file" if must_fail else
                                   "right or an error naming the file"), not why, why)
    why = step_ok_or_named_error(lookup, [[enc(DAMAGE_ROWS[39][1])]], target, must_fail)
    check(name + ": point lookup: " + ("error naming the file" if must_fail else
                                       "right or an error naming the file"), not why, why)
    why = step_ok_or_named_error(insert, [], target, must_fail)
    check(name + ": insert: " + ("error naming the file" if must_fail else
                                 "works or an error naming the file"), not why, why)
    after = exp + ([[enc("new"), enc("row")]] if "error" not in insert else [])
    why = step_ok_or_named_error(scan2, after, target, must_fail)
    check(name + ": scan after the insert: " + ("error naming the file" if must_fail else
                                                "the right rows or an error naming the file"),
          not why, why)
    if not memory:
        check_equal(name + ": the database's other tables stay usable", res[5],
                    {"rows": [[enc(3)]]})
    return "error" not in insert


def test_damaged_files():
    with TempDir() as d:
        db_path = os.path.join(d, "app.db")
        data = db_path + "-kv.mmkv"
        index = data + "-index"
        db = connect(db_path)
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        db.execute("CREATE TABLE nat(k INTEGER PRIMARY KEY, v)")
        db.executemany("INSERT INTO nat VALUES(?, ?)", [(1, "a"), (2, "b"), (3, "c")])
        db.execute("BEGIN")
        db.executemany("INSERT INTO kv VALUES(?, ?)", DAMAGE_ROWS[:20])
        db.execute("COMMIT")
        db.executemany("INSERT INTO kv VALUES(?, ?)", DAMAGE_ROWS[20:])
        harness.sync_kept_records(db)  # the damage below hits records only the data file holds
        db.close()
        originals = {}
        for p in (db_path, data, index):
            with open(p, "rb") as f:
                originals[p] = f.read()
        for extra in ("-journal", "-wal", "-shm"):
            originals[db_path + extra] = None
        tail = committed_tail(data)
        size = len(originals[data])
        if not check("damage: committed tail read from the meta slots",
                     tail is not None and 4096 < tail <= size, "tail %r, size %d" % (tail, size)):
            return

        def truncate_to(n):
            return lambda: os.truncate(data, n)

        cases = []
        for n in (0, 100, 511, 600, 4095, 4096, 5000, tail - 100, tail - 8, tail - 1):
            cases.append(("data file truncated to %d bytes (commits reach %d)" % (n, tail),
                          truncate_to(n), data, True))
        for n in (tail, min(tail + 1000, size)):
            cases.append(("data file truncated to %d bytes, every commit still there" % n,
                          truncate_to(n), data, False))

        def to_dir(p):
            def f():
                os.remove(p)
                os.mkdir(p)
            return f

        def to_fifo(p):
            def f():
                os.remove(p)
                os.mkfifo(p)
            return f
        cases.append(("data file replaced by a directory", to_dir(data), data, True))
        cases.append(("data file replaced by a FIFO", to_fifo(data), data, True))
        cases.append(("data file missing", lambda: os.remove(data), data, True))
        cases.append(("index file replaced by a directory", to_dir(index), index, False))
        cases.append(("index file replaced by a FIFO", to_fifo(index), index, False))
        for label, damage, target, must_fail in cases:
            name = "damage: " + label
            inserted = damage_case(name, d, db_path, data, originals, damage, target, must_fail)
            # Put the data file back: the failed attempts must not have changed anything else.
            # (Where the insert did commit, the old copy lacks a commit the database recorded:
            # the database kept its records (the redo row), so the table comes back with it; an
            # error naming the data file would be right too.)
            for p in (data, index):
                if os.path.isdir(p):
                    os.rmdir(p)
                elif os.path.lexists(p) and (p == data or not os.path.isfile(p)):
                    os.remove(p)
            with open(data, "wb") as f:
                f.write(originals[data])
            res, problem = run_steps(db_path, [("SELECT key, value FROM kv", ())])
            if check(name + ": data file restored: reopens", not problem, problem):
                if inserted:
                    why = step_ok_or_named_error(res[0], expected_scan(DAMAGE_ROWS + [("new", "row")]),
                                                 data, False)
                    check(name + ": data file restored (older than the insert that committed): "
                          "the committed rows or an error naming the file", not why, why)
                else:
                    got = res[0].get("rows")
                    check(name + ": data file restored: exactly the committed rows",
                          got is not None and canon(got) == canon(expected_scan(DAMAGE_ROWS)),
                          str(res[0])[:300] if got is None else
                          rows_diff(got, expected_scan(DAMAGE_ROWS)))

    # An in-memory database's table in file=PATH, cut short.
    with TempDir() as d:
        data = os.path.join(d, "mem.mmkv")
        db = connect(":memory:")
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % data)
        db.executemany("INSERT INTO kv VALUES(?, ?)", DAMAGE_ROWS)
        db.close()
        originals = {}
        for p in (data, data + "-index"):
            with open(p, "rb") as f:
                originals[p] = f.read()
        tail = committed_tail(data)
        for n in (100, 4096, tail - 8):
            damage_case("damage: in-memory database, file= truncated to %d bytes (commits reach %d)"
                        % (n, tail), d, ":memory:", data, originals,
                        truncate_to_path(data, n), data, True, memory=True)
        damage_case("damage: in-memory database, file= is a directory", d, ":memory:", data,
                    originals, lambda: (os.remove(data), os.mkdir(data)), data, True, memory=True)


def truncate_to_path(p, n):
    return lambda: os.truncate(p, n)


if __name__ == "__main__":
    harness.main([test_rlimit, test_tmpfs, test_damaged_files])
