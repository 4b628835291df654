"""Shared helpers for mmkv's SQL-level tests.

Every test file runs as a plain script under Debian's python3 (whose sqlite3 module can load
extensions) and prints one line per check: "PASS: name" or "FAIL: name: why". test/run.sh
counts them. The extension path comes from $MMKV_EXTENSION (set by test/run.sh), defaulting
to build/mmkv next to this tree.

Environment (the same for the C tests; see README.md, "Tests"):
    MMKV_TEST=name        run only the test functions whose name contains name
    MMKV_SEED=N           every randomised test derives its seeds from N (unset or 0: each test's
                          own fixed seeds; "random": a new N, printed)
    MMKV_EXPECT_SQLITE=V  fail unless the sqlite3 module runs on SQLite V (make test-sqlite)
"""
import ctypes
import json
import os
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EXTENSION = os.environ.get("MMKV_EXTENSION", os.path.join(ROOT, "build", "mmkv"))
SEED_MAX = 2**32 - 1  # the C tests take an unsigned int: one MMKV_SEED is good for both


def _seed_from_environment():
    """MMKV_SEED as a number; "random" is drawn here once, and put back into the environment so
    that every child process derives its seeds from the same number."""
    value = os.environ.get("MMKV_SEED", "")
    if value == "random":
        value = str(random.SystemRandom().randrange(1, 2**31))
        os.environ["MMKV_SEED"] = value
    if not value:
        return 0
    if not value.isdigit() or int(value) > SEED_MAX:
        sys.exit("MMKV_SEED=%s: expected a number from 0 to %d, or random" % (value, SEED_MAX))
    return int(value)


SEED = _seed_from_environment()
SELECTED = os.environ.get("MMKV_TEST", "")

PYTHON = sys.executable or "/usr/bin/python3"
CHILD_ENV = dict(os.environ, MMKV_EXTENSION=EXTENSION)

# Encoding shared with the child processes: a value becomes a JSON list naming its type, so that
# 1 and 1.0, 'a' and x'61', -0.0 and 0.0 stay different; long strings become length and digest.
ENC_SRC = r'''
import hashlib
def enc(v, full=False):
    if v is None:
        return ["null"]
    if isinstance(v, int):
        return ["int", str(v)]
    if isinstance(v, float):
        return ["real", v.hex()]
    if isinstance(v, str):
        b, t = v.encode("utf-8", "surrogatepass"), "text"
    elif isinstance(v, bytes):
        b, t = v, "blob"
    else:
        return ["?", repr(v)]
    if len(b) > 48 and not full:
        return [t, len(b), hashlib.sha256(b).hexdigest()]
    return [t, b.hex()]
def dec(e):
    t = e[0]
    if t == "null":
        return None
    if t == "int":
        return int(e[1])
    if t == "real":
        return float.fromhex(e[1])
    if t == "text":
        return bytes.fromhex(e[1]).decode("utf-8", "surrogatepass")
    if t == "blob":
        return bytes.fromhex(e[1])
    raise ValueError(e)
def enc_rows(rows):
    return [[enc(v) for v in r] for r in rows]
'''
_ns = {}
exec(ENC_SRC, _ns)
enc, dec, enc_rows = _ns["enc"], _ns["dec"], _ns["enc_rows"]

passed = 0
failed = 0
current_case = None  # the name of the test function running, for the replay hint
_seed_printed_for = None


def crc32c(data, crc=0):
    """CRC32C (Castagnoli), as ext/crc32c.c computes it: to forge or check the files' checksums."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def canon(rows):
    """Rows (lists of enc() values) in an order-free form, to compare two results as sets."""
    return sorted(json.dumps(r) for r in rows)


def rows_diff(got, expected):
    """'' if the two lists of encoded rows hold the same rows (in any order), else a summary."""
    g, e = canon(got), canon(expected)
    if g == e:
        return ""
    gs, es = set(g), set(e)
    missing = [x[:200] for x in e if x not in gs][:3]
    extra = [x[:200] for x in g if x not in es][:3]
    return "%d rows, expected %d; missing %s; unexpected %s" % (len(g), len(e), missing, extra)


def seed_of(stream):
    """The seed for one random stream of a test: the test's own fixed seed `stream` (an int or a
    string), or under MMKV_SEED=N a string made of N and stream (each stream stays distinct).
    Prints the seed once per test function, so that a failure can be replayed."""
    global _seed_printed_for
    if _seed_printed_for != current_case:
        _seed_printed_for = current_case
        name = current_case or os.path.basename(sys.argv[0])
        if SEED:
            print("# %s: MMKV_SEED=%d" % (name, SEED))
        else:
            print("# %s: MMKV_SEED unset: the test's fixed seeds" % name)
        sys.stdout.flush()
    return "%d/%s" % (SEED, stream) if SEED else stream


def rng(stream):
    """random.Random(seed_of(stream))."""
    return random.Random(seed_of(stream))


def connect(path=":memory:", **kwargs):
    """A connection with mmkv loaded; autocommit mode (isolation_level=None) unless asked.
    A path "memory:FILE" stands for an in-memory database whose table kv has its data in FILE."""
    kwargs.setdefault("isolation_level", None)
    memory_file = path[len("memory:"):] if path.startswith("memory:") else None
    db = sqlite3.connect(":memory:" if memory_file else path, **kwargs)
    db.enable_load_extension(True)
    db.load_extension(EXTENSION)
    db.enable_load_extension(False)
    if memory_file:
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % memory_file)
    return db


def sync_kept_records(db, table="kv"):
    """Has the records of table's recent small commits, which its database keeps for it (the redo
    row, commit_record.h), synced into the data file, so that damage done to the file afterwards
    hits records no copy of which survives: a transaction too large to keep, which writes and
    deletes one row, leaving the rows as they were."""
    db.execute("BEGIN")
    db.execute("INSERT INTO %s VALUES(x'6d6d6b762d73796e63', zeroblob(70000))" % table)
    db.execute("DELETE FROM %s WHERE key = x'6d6d6b762d73796e63'" % table)
    db.execute("COMMIT")


SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION = 1005
SQLITE_DBCONFIG_DEFENSIVE = 1010


def exec_defensive(path, sql):
    """Runs sql on a new connection to path, with mmkv loaded, under SQLITE_DBCONFIG_DEFENSIVE
    (which this python3's sqlite3 module cannot set); returns SQLite's error message, or None.
    The connection goes through the C API of the very library the sqlite3 module runs on."""
    lib = ctypes.CDLL("libsqlite3.so.0")
    lib.sqlite3_libversion.restype = ctypes.c_char_p
    lib.sqlite3_errmsg.restype = ctypes.c_char_p
    if lib.sqlite3_libversion().decode() != sqlite3.sqlite_version:
        return "libsqlite3.so.0 is SQLite %s, the sqlite3 module's %s" % (
            lib.sqlite3_libversion().decode(), sqlite3.sqlite_version)
    db = ctypes.c_void_p()
    err = ctypes.c_char_p()
    try:
        if lib.sqlite3_open(path.encode(), ctypes.byref(db)) != 0:
            return "open: " + lib.sqlite3_errmsg(db).decode()
        for op in (SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, SQLITE_DBCONFIG_DEFENSIVE):
            if lib.sqlite3_db_config(db, op, ctypes.c_int(1), None) != 0:
                return "sqlite3_db_config(%d): %s" % (op, lib.sqlite3_errmsg(db).decode())
        if lib.sqlite3_load_extension(db, EXTENSION.encode(), None, ctypes.byref(err)) != 0:
            return "load_extension: " + (err.value or b"?").decode()
        if lib.sqlite3_exec(db, sql.encode(), None, None, ctypes.byref(err)) != 0:
            return (err.value or lib.sqlite3_errmsg(db)).decode()
        return None
    finally:
        if err.value:
            lib.sqlite3_free(err)
        lib.sqlite3_close(db)


def check(name, condition, detail=""):
    """Records one check; returns the condition so callers can stop early. The detail of a
    failure says what was expected and what came."""
    global passed, failed
    if condition:
        passed += 1
        print("PASS: " + name)
    else:
        failed += 1
        print("FAIL: %s: %s" % (name, detail or "condition is false"))
        if current_case:
            print("# replay: %smake test T=%s" % ("MMKV_SEED=%d " % SEED if SEED else "",
                                                 current_case))
    sys.stdout.flush()
    return bool(condition)


def check_equal(name, got, expected):
    return check(name, got == expected, "got %r, expected %r" % (got, expected))


def check_error(name, fn, contains=None, error_type=sqlite3.Error):
    """Checks that fn() raises error_type whose message contains `contains` (if given)."""
    try:
        fn()
    except error_type as e:
        if contains is None or contains in str(e):
            return check(name, True)
        return check(name, False, "error %r does not contain %r" % (str(e), contains))
    except Exception as e:  # a different exception type is a failure, not a crash
        return check(name, False, "raised %s: %s" % (type(e).__name__, e))
    return check(name, False, "no error raised")


def run_case(fn):
    """Runs one test function; an unexpected exception is one failure, not an abort."""
    global current_case
    current_case = fn.__name__
    try:
        fn()
    except Exception:
        check(fn.__name__, False, "unexpected exception:\n" + traceback.format_exc())


# A child that executes one SQL statement per request line (JSON {"sql", "params"}) and answers
# one JSON line: {"rows": [...]} or {"error": class name, "msg": ...}; {"exit": 1} ends it.
# Parameters and values travel in enc()'s typed form, in full.
PEER_SRC = ENC_SRC + r'''
import json, os, sqlite3, sys
# "memory:PATH": an in-memory database whose table kv shares the data file PATH.
MEMORY = sys.argv[1].startswith("memory:")
db = sqlite3.connect(":memory:" if MEMORY else sys.argv[1], isolation_level=None,
                     timeout=float(sys.argv[2]))
db.enable_load_extension(True)
db.load_extension(os.environ["MMKV_EXTENSION"])
if MEMORY:
    db.execute("CREATE VIRTUAL TABLE kv USING mmkv(file='%s')" % sys.argv[1][len("memory:"):])
print(json.dumps({"ready": 1}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req.get("exit"):
        db.close()
        break
    try:
        rows = db.execute(req["sql"], [dec(p) for p in req.get("params", [])]).fetchall()
        resp = {"rows": [[enc(v, True) for v in r] for r in rows]}
    except sqlite3.Error as e:
        resp = {"error": type(e).__name__, "msg": str(e)}
    print(json.dumps(resp), flush=True)
'''


class Peer:
    """Another process holding one connection to db_path (or "memory:FILE", see connect()), with
    the given busy timeout in seconds. ask() sends a statement and waits for its answer; send()
    and recv() split it, so that the caller can act while the peer waits for a lock. A hang or a
    dead peer is answered {"timeout": seconds} (the peer is then killed) or {"died": status}."""

    def __init__(self, db_path, busy_timeout=0.0):
        self.proc = subprocess.Popen([PYTHON, "-c", PEER_SRC, db_path, str(busy_timeout)],
                                     env=CHILD_ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.buf = b""
        first = self.recv(30)
        if first != {"ready": 1}:
            raise RuntimeError("peer did not start: %r %s" % (first, self.stderr()))

    def send(self, sql, params=()):
        try:
            line = json.dumps({"sql": sql, "params": [enc(p, True) for p in params]}) + "\n"
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # recv() reports the dead peer

    def recv(self, timeout=20):
        deadline = time.time() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.time()
            ready = select.select([fd], [], [], left)[0] if left > 0 else []
            if not ready:
                self.kill()
                return {"timeout": timeout}
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return {"died": self.proc.wait()}
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        resp = json.loads(line)
        if "rows" in resp:
            resp["rows"] = [[dec(v) for v in r] for r in resp["rows"]]
        return resp

    def ask(self, sql, params=(), timeout=20):
        self.send(sql, params)
        return self.recv(timeout)

    def stderr(self):
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")[-2000:]

    def close(self):
        """Ends the peer; returns its exit status."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"exit": 1}\n')
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


class TempDir:
    """A temporary directory removed on exit: with TempDir() as d: os.path.join(d, ...).

    in_memory: on /dev/shm where there is one, for tests that create and sync many files whose
    durability does not matter (creating an mmkv table syncs its file and its directory)."""

    def __init__(self, in_memory=False):
        self.parent = "/dev/shm" if in_memory and os.access("/dev/shm", os.W_OK) else None

    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="mmkv-test-", dir=self.parent)
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)


def selected(name):
    """Whether the test function `name` runs: all do, unless MMKV_TEST names some."""
    return SELECTED in name


def check_sqlite_version():
    """Under MMKV_EXPECT_SQLITE (make test-sqlite), that this process runs on that SQLite: a silent
    fallback to the system's library must fail, not pass as a run on the newer one."""
    expected = os.environ.get("MMKV_EXPECT_SQLITE")
    print("# python3 %s, sqlite3 module on SQLite %s" % (sys.version.split()[0],
                                                       sqlite3.sqlite_version))
    if not expected:
        return True
    return check("python3's sqlite3 module runs on SQLite %s" % expected,
                 sqlite3.sqlite_version == expected,
                 "expected SQLite %s, got %s (is LD_LIBRARY_PATH set?)"
                 % (expected, sqlite3.sqlite_version))


def watchdog(fn, seconds):
    """fn, failing and ending the program if it has not returned after seconds (a hang)."""
    def run():
        timer = threading.Timer(seconds, _timed_out, args=(fn.__name__, seconds))
        timer.daemon = True
        timer.start()
        try:
            fn()
        finally:
            timer.cancel()
    run.__name__ = fn.__name__
    return run


def _timed_out(name, seconds):
    print("FAIL: %s: no answer after %d s (hang?)" % (name, seconds))
    sys.stdout.flush()
    os._exit(1)


def main(cases):
    """Runs every case (or those MMKV_TEST selects); exits non-zero if any check failed."""
    chosen = [fn for fn in cases if selected(fn.__name__)]
    if chosen and not check_sqlite_version():
        sys.exit(1)
    for fn in chosen:
        run_case(fn)
    sys.exit(1 if failed else 0)
