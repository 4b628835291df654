"""Shared helpers for mmkv's SQL-level tests.

Every test file runs as a plain script under Debian's python3 (whose sqlite3 module can load
extensions) and prints one line per check: "PASS: name" or "FAIL: name: why". test/run.sh
counts them. The extension path comes from $MMKV_EXTENSION (set by test/run.sh), defaulting
to build/mmkv next to this tree.
"""
import os
import shutil
import sqlite3
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EXTENSION = os.environ.get("MMKV_EXTENSION", os.path.join(ROOT, "build", "mmkv"))

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


def connect(path=":memory:", **kwargs):
    """A connection with mmkv loaded; autocommit mode (isolation_level=None) unless asked."""
    kwargs.setdefault("isolation_level", None)
    db = sqlite3.connect(path, **kwargs)
    db.enable_load_extension(True)
    db.load_extension(EXTENSION)
    db.enable_load_extension(False)
    return db


def check(name, condition, detail=""):
    """Records one check; returns the condition so callers can stop early."""
    global passed, failed
    if condition:
        passed += 1
        print("PASS: " + name)
    else:
        failed += 1
        print("FAIL: %s: %s" % (name, detail or "condition is false"))
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
    try:
        fn()
    except Exception:
        check(fn.__name__, False, "unexpected exception:\n" + traceback.format_exc())


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


def main(cases):
    """Runs every case; exits non-zero if any check failed."""
    for fn in cases:
        run_case(fn)
    sys.exit(1 if failed else 0)
