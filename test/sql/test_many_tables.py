"""Many mmkv tables in one process, as with one table per tenant: 1,000 tables open at once, through
one connection and through 1,000 connections, each written and read; one table grown through
several mapping views while a SELECT on it is still stepping; and, where address space runs out
(RLIMIT_AS, in a child process), an error that names the file and the sizes.

Each open table maps its two files. A mapping reserves a few times its file's size and, when the
file outgrows that, reserves a larger view and keeps the old ones until the table closes
(ext/file.h); when each data file reserved 1 TiB and each index 256 GiB, about 110 tables filled
a process's address space and the next open failed with a bare "out of memory".

Each table holds two descriptors (data file and index); the soft limit on descriptors is raised to
the hard limit where 1,000 tables need more. Run with Debian's python3:
/usr/bin/python3 test/sql/test_many_tables.py
"""
import errno
import json
import os
import re
import resource
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import CHILD_ENV, PYTHON, TempDir, check, check_equal, connect  # noqa: E402

TABLES = 1000
DESCRIPTORS_PER_TABLE = 2  # the data file and its index
SPARE_DESCRIPTORS = 100    # stdio, the extension, SQLite's own files, /proc reads
MB = 1 << 20
# A table's first views: 64 MiB for its data file and 16 MiB for its index (MMKV_LOG_MIN_RESERVE,
# MMKV_INDEX_MIN_RESERVE), and a little for the rest.
FIRST_VIEWS_KIB = (64 + 16) * 1024
# Past the data file's second view (a file of 64 MiB and more gets one of 4 x 128 MiB): a third.
GROW_VALUES = 544
GROW_VALUES_PER_TXN = 32
CHILD_TIMEOUT = 120


def want_descriptors(need):
    """Raises the soft limit on descriptors to the hard limit if `need` exceed it. None, or why
    the test cannot run."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    if hard != resource.RLIM_INFINITY and hard < need:
        return ("%d descriptors are needed, and the hard limit (ulimit -Hn) is %d: raise it to run "
                "this test" % (need, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return None


def vm_size_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1])
    return None


def mmkv_descriptors():
    """Descriptors this process holds on mmkv files (data files and indexes)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        n += target.endswith(".mmkv") or target.endswith(".mmkv-index")
    return n


def views_of(path):
    """How many views map the file: each maps it from offset 0, so each has one line of
    /proc/self/maps at offset 0 (the kernel merges the pieces a view maps as the file grows)."""
    real = os.path.realpath(path)
    n = 0
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(None, 5)
            if len(fields) == 6 and int(fields[2], 16) == 0 and fields[5].rstrip("\n") == real:
                n += 1
    return n


def address_space_per_table(name, before_kib, tables):
    """Prints what the open tables reserve and checks it is about their first views."""
    per_table = (vm_size_kib() - before_kib) // tables
    print("  %s: %d tables open, %d MiB of address space per table" % (name, tables,
                                                                       per_table // 1024))
    check(name + ": each table reserves about its first views' address space",
          per_table <= FIRST_VIEWS_KIB * 5 // 4,
          "%d KiB per table, against %d KiB for the first views" % (per_table, FIRST_VIEWS_KIB))


def test_one_connection():
    name = "1,000 tables in one connection"
    why = want_descriptors(TABLES * DESCRIPTORS_PER_TABLE + SPARE_DESCRIPTORS)
    if not check(name + ": enough descriptors", why is None, why):
        return
    with TempDir(in_memory=True) as d:
        db = connect(os.path.join(d, "tenants.db"))
        db.execute("PRAGMA synchronous=OFF")
        before = vm_size_kib()
        failed = None
        db.execute("BEGIN")
        for i in range(TABLES):
            try:
                db.execute("CREATE VIRTUAL TABLE t%d USING mmkv(sync=off)" % i)
                db.execute("INSERT INTO t%d VALUES(?, ?)" % i, (i, "tenant %d" % i))
            except Exception as e:
                failed = "table %d: %s: %s" % (i, type(e).__name__, e)
                break
        if not check(name + ": every table is created and written", failed is None, failed):
            db.close()
            return
        db.execute("COMMIT")
        check(name + ": every table's two files are open at once",
              mmkv_descriptors() >= TABLES * DESCRIPTORS_PER_TABLE,
              "%d descriptors on mmkv files" % mmkv_descriptors())
        address_space_per_table(name, before, TABLES)
        bad = [i for i in range(TABLES)
               if db.execute("SELECT key, value FROM t%d" % i).fetchall() != [(i, "tenant %d" % i)]]
        check(name + ": each table reads back its row", not bad, "wrong in tables %s" % bad[:10])
        bad = [i for i in range(TABLES)
               if db.execute("SELECT value FROM t%d WHERE key = ?" % i, (i,)).fetchall()
               != [("tenant %d" % i,)]]
        check(name + ": each table finds its key by lookup", not bad,
              "wrong in tables %s" % bad[:10])
        db.close()


def test_many_connections():
    name = "1,000 tables in 1,000 connections"
    # Each connection also holds its database file (and its journal while it writes).
    why = want_descriptors(TABLES * (DESCRIPTORS_PER_TABLE + 2) + SPARE_DESCRIPTORS)
    if not check(name + ": enough descriptors", why is None, why):
        return
    with TempDir(in_memory=True) as d:
        dbs = []
        failed = None
        before = vm_size_kib()
        try:
            for i in range(TABLES):
                db = connect(os.path.join(d, "tenant-%d.db" % i))
                dbs.append(db)
                db.execute("PRAGMA synchronous=OFF")
                db.execute("CREATE VIRTUAL TABLE kv USING mmkv(sync=off)")
                db.execute("INSERT INTO kv VALUES(?, ?)", ("owner", "tenant %d" % i))
                db.execute("INSERT INTO kv VALUES(?, ?)", (i, i * 3))
        except Exception as e:
            failed = "tenant %d: %s: %s" % (len(dbs) - 1, type(e).__name__, e)
        if check(name + ": every tenant's table is created and written", failed is None, failed):
            check(name + ": every table's two files are open at once",
                  mmkv_descriptors() >= TABLES * DESCRIPTORS_PER_TABLE,
                  "%d descriptors on mmkv files" % mmkv_descriptors())
            address_space_per_table(name, before, TABLES)
            def reads_back(i, db):
                return (db.execute("SELECT value FROM kv WHERE key = 'owner'").fetchall()
                        == [("tenant %d" % i,)]
                        and db.execute("SELECT value FROM kv WHERE key = ?", (i,)).fetchall()
                        == [(i * 3,)]
                        and db.execute("SELECT count(*) FROM kv").fetchone()[0] == 2)
            bad = [i for i, db in enumerate(dbs) if not reads_back(i, db)]
            check(name + ": each tenant reads back its own rows", not bad,
                  "wrong for tenants %s" % bad[:10])
        for db in dbs:
            db.close()


def test_growth_under_open_select():
    name = "growth through views under an open SELECT"
    with TempDir() as d:
        path = os.path.join(d, "app.db")
        data_file = path + "-kv.mmkv"
        w = connect(path)
        w.execute("PRAGMA journal_mode=WAL")  # the writer commits while the SELECT reads
        w.execute("PRAGMA synchronous=OFF")
        w.execute("CREATE VIRTUAL TABLE kv USING mmkv(sync=off)")
        small = [(i, "v%d" % i) for i in range(1000)]
        w.execute("BEGIN")
        w.executemany("INSERT INTO kv VALUES(?, ?)", small)
        w.execute("COMMIT")
        r = connect(path)
        cursor = r.execute("SELECT key, value FROM kv")
        rows = [cursor.fetchone() for _ in range(10)]
        check_equal(name + ": the file starts in one view", views_of(data_file), 1)
        pattern = bytes(range(256)) * (MB // 256)
        most_views = 1
        for start in range(0, GROW_VALUES, GROW_VALUES_PER_TXN):
            w.execute("BEGIN")
            w.executemany("INSERT INTO kv VALUES(?, ?)",
                          [("big%d" % k, bytes([k % 256]) + pattern[1:])
                           for k in range(start, min(start + GROW_VALUES_PER_TXN, GROW_VALUES))])
            w.execute("COMMIT")
            most_views = max(most_views, views_of(data_file))
        check(name + ": the data file grew through at least three views", most_views >= 3,
              "%d views" % most_views)
        rows += cursor.fetchall()
        differ = next((i for i, (a, b) in enumerate(zip(rows, small)) if a != b), None)
        check(name + ": the SELECT open across the growth returns its snapshot, row for row",
              rows == small, "%d rows, first differing at %s" % (len(rows), differ))
        check_equal(name + ": a new SELECT sees every row",
                    r.execute("SELECT count(*) FROM kv").fetchone()[0], len(small) + GROW_VALUES)
        ends = ("SELECT length(value), substr(value, 1, 1), substr(value, -3, 3) FROM kv "
                "WHERE key = ?")
        bad = [k for k in range(0, GROW_VALUES, 17)
               if r.execute(ends, ("big%d" % k,)).fetchall()
               != [(MB, bytes([k % 256]), pattern[-3:])]]
        check(name + ": the values written past the first views read back", not bad,
              "wrong for big%s" % bad[:5])
        lookup = "SELECT value FROM kv WHERE key = ?"
        bad = [k for k in range(0, 1000, 37)
               if r.execute(lookup, (k,)).fetchall() != [("v%d" % k,)]]
        check(name + ": the rows of the first view still read back by lookup", not bad,
              "wrong for %s" % bad[:5])
        r.close()
        w.close()


# A child that fills two tables, limits its own address space to a little more than it uses, and
# then grows one table past its mapping and opens the other: it prints both errors as JSON.
LIMITED_CHILD = r'''
import json, os, resource, sqlite3, sys
d, headroom = sys.argv[1], int(sys.argv[2])
MB = 1 << 20
def connect():
    db = sqlite3.connect(os.path.join(d, "app.db"), isolation_level=None)
    db.enable_load_extension(True)
    db.load_extension(os.environ["MMKV_EXTENSION"])
    db.execute("PRAGMA synchronous=OFF")
    return db
def fill(db, table, n):
    db.execute("CREATE VIRTUAL TABLE %s USING mmkv(sync=off)" % table)
    db.execute("BEGIN")
    for i in range(n):
        db.execute("INSERT INTO %s VALUES(?, ?)" % table, (i, bytes([i % 256]) * MB))
    db.execute("COMMIT")
def error_of(fn):
    try:
        fn()
    except Exception as e:  # a MemoryError too: SQLite's "out of memory" is one
        return {"class": type(e).__name__, "code": getattr(e, "sqlite_errorname", ""),
                "msg": str(e)}
    return None
def vm_size():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmSize:")) * 1024
db = connect()
fill(db, "big", 100)  # a 128 MiB file, opened later under the limit
db.close()
db = connect()
fill(db, "grow", 60)  # left just short of its first view (64 MiB), which stays mapped
value = bytes([7]) * MB
inserted = []
def grow():
    for i in range(8):
        db.execute("INSERT INTO grow VALUES(?, ?)", (1000 + i, value))
        inserted.append(i)
resource.setrlimit(resource.RLIMIT_AS,
                   (vm_size() + headroom, resource.getrlimit(resource.RLIMIT_AS)[1]))
out = {"grow": error_of(grow), "inserted": len(inserted)}
out["open"] = error_of(lambda: db.execute("SELECT count(*) FROM big").fetchall())
out["rows"] = db.execute("SELECT count(*) FROM grow").fetchone()[0]
print("RESULT " + json.dumps(out), flush=True)
'''

# Less than the smallest view either failure needs (128 MiB), more than SQLite and Python need.
LIMITED_HEADROOM = 48 * MB


def check_address_space_error(name, err, path, at_least):
    """err must name the file, say how many bytes it tried to reserve for how many, and why."""
    if not check(name + ": fails", err is not None, "no error"):
        return
    msg = err["msg"]
    check(name + ": the message names the data file", "data file '%s'" % path in msg, msg)
    m = re.search(r"reserving (\d+) bytes of address space for its (\d+) bytes", msg)
    check(name + ": the message says how much it tried to reserve, and for how much",
          m is not None and int(m.group(1)) >= int(m.group(2)) >= at_least, msg)
    check(name + ": the message says why", os.strerror(errno.ENOMEM) in msg, msg)
    check(name + ": the error is SQLITE_IOERR, not a bare out-of-memory",
          err["class"] == "OperationalError" and err["code"] in ("", "SQLITE_IOERR")
          and "out of memory" not in msg, "%s %s: %s" % (err["class"], err["code"], msg))


def test_address_space_exhausted():
    name = "address space exhausted"
    with TempDir() as d:
        p = subprocess.Popen([PYTHON, "-c", LIMITED_CHILD, d, str(LIMITED_HEADROOM)],
                             env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = p.communicate(timeout=CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        out, err = out.decode(errors="replace"), err.decode(errors="replace")
        result = next((json.loads(l[len("RESULT "):]) for l in out.splitlines()
                       if l.startswith("RESULT ")), None)
        if not check(name + ": the limited child reports", p.returncode == 0 and result,
                     "exit %s, stdout %r, stderr %r" % (p.returncode, out[-500:], err[-1500:])):
            return
        for what in ("grow", "open"):
            e = result[what] or {}
            print("  %s: %s %s: %s" % (what, e.get("class"), e.get("code"), e.get("msg")))
        check_address_space_error(name + ": growing a table past its mapping", result["grow"],
                                  os.path.join(d, "app.db-grow.mmkv"), 64 * MB)
        check_address_space_error(name + ": opening a table", result["open"],
                                  os.path.join(d, "app.db-big.mmkv"), 100 * MB)
        check(name + ": the table that could not grow keeps its committed rows",
              result["inserted"] < 8 and result["rows"] == 60 + result["inserted"],
              "%d rows after %d inserts" % (result["rows"], result["inserted"]))


if __name__ == "__main__":
    harness.main([
        test_one_connection,
        test_many_connections,
        test_growth_under_open_select,
        test_address_space_exhausted,
    ])
