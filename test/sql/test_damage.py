"""Bad files: foreign files are refused and left untouched; a damaged data file gives an error
naming the file or the exact rows (never wrong rows, never a crash); a damaged, missing, stale or
foreign index file is rebuilt and queries return exactly the right rows.

Offsets come from ext/format.h: file header at 0 (format_version at 16, checksum at 508), meta
slots at 512 and 1024 (64 bytes: magic, txid, committed_tail at +16, ..., checksum at +60),
records from 4096 (32-byte header: checksum, key_type, value_type, flags, reserved, key_len,
value_len, txid, prev_offset; then key, value, padding to 8). Index header 4096 bytes, then
tables of 64-bit slots.

Every damaged case runs in a child process that handles many cases in turn; a child that crashes
or hangs fails the case it was on and a new child carries on with the next case.
"""
import json
import os
import random
import select
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (CHILD_ENV, ENC_SRC, PYTHON, TempDir, check, connect, crc32c, dec,  # noqa: E402
                     enc)

DATA = "app.db-kv.mmkv"
INDEX = DATA + "-index"


# The child: reads a JSON list of cases from the file argv[1], starting at index argv[2]. For each:
# prints "START i", (re)creates the case directory from src, applies the damage, opens
# dir/app.db and runs the steps, prints "RESULT i <json list of step results>".
CHILD = ENC_SRC + r'''
import json, os, random, shutil, sqlite3, sys
cases = json.load(open(sys.argv[1]))
ext = os.environ["MMKV_EXTENSION"]

def connect(path):
    db = sqlite3.connect(path, isolation_level=None, timeout=0)
    db.enable_load_extension(True)
    db.load_extension(ext)
    return db

def damage(d, op):
    kind, name = op[0], os.path.join(d, op[1])
    if kind == "delete":
        os.remove(name)
        return
    if kind == "copy":  # copy another file over this one
        shutil.copyfile(os.path.join(d, op[2]) if not os.path.isabs(op[2]) else op[2], name)
        return
    with open(name, "r+b") as f:
        if kind == "xor":  # [xor, file, offset, mask]
            f.seek(op[2]); b = f.read(1)
            if b:
                f.seek(op[2]); f.write(bytes([b[0] ^ op[3]]))
        elif kind == "write":  # [write, file, offset, hex]
            f.seek(op[2]); f.write(bytes.fromhex(op[3]))
        elif kind == "truncate":  # [truncate, file, length]
            f.truncate(op[2])
        elif kind == "append":  # [append, file, nbytes, seed or None for zeros]
            f.seek(0, 2)
            f.write(bytes(op[2]) if op[3] is None else random.Random(op[3]).randbytes(op[2]))
        elif kind == "garbage":  # [garbage, file, offset, nbytes, seed]
            f.seek(op[2]); f.write(random.Random(op[4]).randbytes(op[3]))
        else:
            raise ValueError(op)

pristine = {}

def copy_dir(src, d):
    """Copies the files of src into a fresh d, writing only the non-zero pages (the index file
    is mostly zeros): much cheaper than copying it whole for every case."""
    if src not in pristine:
        files = []
        for name in sorted(os.listdir(src)):
            with open(os.path.join(src, name), "rb") as f:
                b = f.read()
            pages = [(o, b[o:o + 4096]) for o in range(0, len(b), 4096)
                     if b[o:o + 4096].count(0) != len(b[o:o + 4096])]
            files.append((name, len(b), pages))
        pristine[src] = files
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, size, pages in pristine[src]:
        with open(os.path.join(d, name), "wb") as f:
            f.truncate(size)
            for o, page in pages:
                f.seek(o)
                f.write(page)

for i in range(int(sys.argv[2]), len(cases)):
    case = cases[i]
    print("START %d" % i, flush=True)
    d = case["dir"]
    if case.get("src"):
        copy_dir(case["src"], d)
    for op in case.get("damage", []):
        damage(d, op)
    out = []
    db = connect(os.path.join(d, "app.db"))
    for step in case["steps"]:
        if step == "reopen":
            db.close()
            db = connect(os.path.join(d, "app.db"))
            out.append(None)
            continue
        sql, params = step
        try:
            rows = db.execute(sql, [dec(p) for p in params]).fetchall()
            out.append({"rows": [[enc(v) for v in r] for r in rows]})
        except sqlite3.Error as e:
            out.append({"error": type(e).__name__, "msg": str(e),
                        "corrupt": isinstance(e, sqlite3.DatabaseError)})
    db.close()
    if case.get("src") and not case.get("keep"):
        shutil.rmtree(d, ignore_errors=True)
    print("RESULT %d %s" % (i, json.dumps(out)), flush=True)
'''


def run_cases(cases, workdir, per_case_timeout=20):
    """Runs the cases in child processes; returns one result per case: a list of step results,
    or {"crash": detail}."""
    spec = os.path.join(workdir, "cases-%d.json" % random.randrange(1 << 30))
    with open(spec, "w") as f:
        json.dump(cases, f)
    results = [None] * len(cases)
    start = 0
    while start < len(cases):
        proc = subprocess.Popen([PYTHON, "-c", CHILD, spec, str(start)], env=CHILD_ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        fd, buf, current = proc.stdout.fileno(), b"", start
        deadline = time.time() + per_case_timeout
        ended = None
        while ended is None:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.decode()
                if line.startswith("START "):
                    current = int(line.split()[1])
                    deadline = time.time() + per_case_timeout
                elif line.startswith("RESULT "):
                    _, i, payload = line.split(" ", 2)
                    results[int(i)] = json.loads(payload)
                    current = int(i) + 1
            if current >= len(cases):
                ended = "done"
                break
            r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
            if not r:
                ended = "hang"
                break
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                ended = "exit"
                break
            buf += chunk
        if ended == "hang":
            proc.send_signal(signal.SIGKILL)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if current < len(cases) and results[current] is None:
            how = ("hung for %ss" % per_case_timeout if ended == "hang"
                   else "child died with status %s" % proc.returncode)
            results[current] = {"crash": "%s: %s" % (how, err.decode(errors="replace")[-1500:])}
            current += 1
        start = current
    os.remove(spec)
    return results


def fstat(path):
    st = os.stat(path)
    with open(path, "rb") as f:
        return (f.read(), st.st_size, st.st_mtime_ns)


def info(msg):
    print("INFO: " + msg)
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# The pristine table: several commits, with updates, deletes and key changes, so that the log
# holds live records, superseded versions and tombstones; the last commit is small.

def value_for(i):
    return [i, "text%d" % i, float(i) + 0.25, b"\x00blob%d" % i, None, "x" * (i % 300)][i % 6]


def key_for(i):
    return [i, "k%d" % i, float(i) + 0.5, b"b%d" % i][i % 4]


def build_pristine(d, name="app.db", nrows=160, seed=1):
    """Creates d/name with table kv (and native ref holding the same rows); returns the list of
    states (encoded row sets after each commit) and the keys worth looking up."""
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, name)
    db = connect(path)
    db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
    db.execute("CREATE TABLE ref(key PRIMARY KEY NOT NULL, value) WITHOUT ROWID")
    rnd = harness.rng(seed)
    states = []
    index_after = []

    def both(sql, params=()):
        db.execute(sql.replace("{t}", "kv"), params)
        db.execute(sql.replace("{t}", "ref"), params)

    def commit():
        db.execute("COMMIT")
        states.append(sorted(json.dumps([enc(k), enc(v)]) for k, v in
                             db.execute("SELECT key, value FROM ref").fetchall()))

    db.execute("BEGIN")
    for i in range(nrows):
        both("INSERT INTO {t} VALUES(?, ?)", (key_for(i), value_for(i)))
    both("INSERT INTO {t} VALUES('large', ?)", (bytes(range(256)) * 80,))
    commit()
    db.execute("BEGIN")
    for i in rnd.sample(range(nrows), min(30, nrows // 2)):
        both("UPDATE {t} SET value = ? WHERE key = ?", ("updated%d" % i, key_for(i)))
    for i in range(1, nrows, 9):
        both("DELETE FROM {t} WHERE key = ?", (key_for(i),))
    for i in range(2, nrows, 17):
        both("UPDATE {t} SET key = ? WHERE key = ?", ("moved%d" % i, key_for(i)))
    commit()
    db.close()
    # The index as it was after commit 2 (closed cleanly): a stale index later.
    shutil.copyfile(path + "-kv.mmkv-index", os.path.join(d, "stale-index"))
    index_after.append(os.path.join(d, "stale-index"))
    db = connect(path)
    db.execute("BEGIN")
    for i in range(nrows, nrows + 8):
        both("INSERT INTO {t} VALUES(?, ?)", (key_for(i), "last%d" % i))
    both("UPDATE {t} SET value = 'last update' WHERE key = ?", (key_for(0),))
    both("DELETE FROM {t} WHERE key = ?", (key_for(3),))
    commit()
    harness.sync_kept_records(db)  # damage below then hits records only the data file holds
    db.close()
    lookups = [key_for(0), key_for(1), key_for(2), key_for(3), key_for(4), key_for(5),
               key_for(7), key_for(nrows - 1), key_for(nrows), key_for(nrows + 7), "moved2",
               "large", "absent", 10 ** 6, b"b1", 1.0]
    return states, lookups


def steps_for(lookups):
    steps = [["SELECT count(*) FROM kv", []], ["SELECT key, value FROM kv", []]]
    steps += [["SELECT key, value FROM kv WHERE key = ?", [enc(k, True)]] for k in lookups]
    steps.append(["SELECT key, value FROM kv WHERE key IN (%s)" % ",".join("?" * len(lookups)),
                  [enc(k, True) for k in lookups]])
    steps.append(["SELECT count(*) FROM kv WHERE value IS NOT NULL", []])
    steps.append([MISMATCH, []])
    return steps


# Every key of the native copy looked up in kv (the plan is a scan of ref and index lookups in
# kv): the keys whose lookup does not give ref's value, type for type.
MISMATCH = ("SELECT ref.key FROM ref LEFT JOIN kv ON kv.key = ref.key WHERE kv.key IS NULL "
            "OR kv.value IS NOT ref.value OR typeof(kv.value) <> typeof(ref.value)")


def expected_results(state, lookups, final):
    """Expected result of each step of steps_for() against a state (list of json rows), when the
    native table ref holds the state `final`."""
    rows = [json.loads(r) for r in state]
    by_key = {}
    for k, v in rows:
        by_key[json.dumps(canon_key(dec(k)))] = [k, v]
    exp = [[[enc(len(rows))]], sorted(json.dumps(r) for r in rows)]
    found = []
    for k in lookups:
        r = by_key.get(json.dumps(canon_key(k)))
        exp.append([r] if r else [])
        if r and r not in found:
            found.append(r)
    exp.append(sorted(json.dumps(r) for r in found))
    exp.append([[enc(sum(1 for k, v in rows if v != ["null"]))]])
    present = set(state)
    exp.append(sorted(json.dumps([json.loads(r)[0]]) for r in final if r not in present))
    return exp


def canon_key(k):
    """Keys equal under SQLite's rules map to the same value (1 = 1.0; text <> blob)."""
    if isinstance(k, float) and k == int(k):
        return ["num", str(int(k))]
    if isinstance(k, (int, float)):
        return ["num", repr(k)]
    if isinstance(k, bytes):
        return ["blob", k.hex()]
    return ["text", k]


def judge(result, states, lookups, allow_previous=False, allow_error=True):
    """'' if every step either succeeded with the right rows or (if allowed) failed with a
    DatabaseError naming the data file; else what went wrong."""
    if isinstance(result, dict):
        return result["crash"]
    final = states[-1]
    candidates = [expected_results(final, lookups, final)]
    if allow_previous:
        candidates.append(expected_results(states[-2], lookups, final))
    problems = []
    n_in = 2 + len(lookups)
    n_mismatch = n_in + 2
    for i, r in enumerate(result):
        if r is None:
            continue
        if "error" in r:
            if not allow_error:
                problems.append("step %d: error %s: %s" % (i, r["error"], r["msg"]))
            elif not r["corrupt"] or DATA not in r["msg"]:
                problems.append("step %d: error %s does not name the file: %s" % (
                    i, r["error"], r["msg"]))
            continue
        got = r["rows"]
        if i in (1, n_in, n_mismatch):
            got = sorted(json.dumps(x) for x in got)
        if not any(i < len(c) and got == c[i] for c in candidates):
            exp = candidates[0][i] if i < len(candidates[0]) else "?"
            what = "wrong rows"
            for k, st in enumerate(states[:-1]):
                e = expected_results(st, lookups, final)
                if i < len(e) and got == e[i]:
                    what = "rows of the older commit %d of %d" % (k + 1, len(states))
            problems.append("step %d (%s): %s: got %s, expected %s" % (
                i, result_step_name(i, lookups), what, str(got)[:200], str(exp)[:200]))
    return "; ".join(problems[:3]) + (" (+%d more)" % (len(problems) - 3)
                                      if len(problems) > 3 else "")


def result_step_name(i, lookups):
    if i == 0:
        return "count(*)"
    if i == 1:
        return "full scan"
    if i < 2 + len(lookups):
        return "lookup %r" % (lookups[i - 2],)
    if i == 2 + len(lookups):
        return "key IN (...)"
    if i == 3 + len(lookups):
        return "count(value)"
    return "every key looked up (keys whose lookup is wrong)"


# ---------------------------------------------------------------------------------------------
# Layout of the pristine data file.

def parse_data(path):
    with open(path, "rb") as f:
        data = f.read()
    metas = []
    for slot in (0, 1):
        base = 512 * (1 + slot)
        magic, txid, tail = struct.unpack_from("<QQQ", data, base)
        ok = struct.unpack_from("<I", data, base + 60)[0] == crc32c(data[base:base + 60])
        metas.append({"base": base, "txid": txid, "tail": tail, "ok": ok})
    newest = max((m for m in metas if m["ok"]), key=lambda m: m["txid"])
    tail = newest["tail"]
    records = []
    off = 4096
    while off < tail:
        _, kt, vt, flags, _, klen, vlen, txid, prev = struct.unpack_from("<IBBBBIIQQ", data, off)
        records.append({"off": off, "klen": klen, "vlen": vlen, "flags": flags, "txid": txid})
        off += (32 + klen + vlen + 7) // 8 * 8
    return data, metas, newest, records


def data_cases(pdir, work, states, lookups):
    """(name, damage ops, allow_previous) for the data file."""
    data, metas, newest, records = parse_data(os.path.join(pdir, DATA))
    tail, size = newest["tail"], len(data)
    rnd = harness.rng(5)
    cases = []

    def flip(name, off, mask=0xFF, extra=(), allow_prev=False):
        cases.append(("flip %s (offset %d, xor 0x%02x)" % (name, off, mask),
                      [["xor", DATA, off, mask]] + list(extra), allow_prev))

    # File header.
    for off, what in ((0, "magic"), (5, "magic"), (15, "magic NUL"), (16, "format_version"),
                      (17, "format_version"), (20, "page_size"), (24, "file_id"),
                      (31, "file_id"), (32, "created_unix_ms"), (40, "reserved"),
                      (300, "reserved"), (507, "reserved"), (508, "header checksum"),
                      (511, "header checksum")):
        flip("header " + what, off, 0x01 if off % 2 else 0xFF)
    # Meta slots: the newest one may fall back to the previous commit (the format's torn-meta
    # rule); the other one must not matter.
    for m in metas:
        is_newest = m is newest
        label = "newest" if is_newest else "older"
        for rel, what in ((0, "magic"), (8, "txid"), (16, "committed_tail"), (17, "committed_tail"),
                          (24, "live_count"), (32, "record_count"), (40, "garbage_bytes"),
                          (48, "txn_start"), (56, "reserved"), (60, "checksum"), (63, "checksum")):
            flip("%s meta slot %s" % (label, what), m["base"] + rel, 0x04,
                 allow_prev=is_newest)
        flip("%s meta slot, bytes after it" % label, m["base"] + 100, 0xFF)
    # Both meta slots.
    cases.append(("flip both meta slots' checksums",
                  [["xor", DATA, 512 + 60, 1], ["xor", DATA, 1024 + 60, 1]], False))
    for off in (1100, 2000, 4000, 4095):
        flip("unused first page", off, 0xFF)
    # Records: every header field of the first, a middle, and the last record; then key, value
    # and padding bytes of many records.
    picks = sorted({0, len(records) // 2, len(records) - 1})
    fields = ((0, "checksum"), (4, "key_type"), (5, "value_type"), (6, "flags"), (7, "reserved"),
              (8, "key_len"), (9, "key_len"), (12, "value_len"), (14, "value_len"), (16, "txid"),
              (24, "prev_offset"), (27, "prev_offset"))
    for p in picks:
        r = records[p]
        for rel, what in fields:
            flip("record %d/%d %s" % (p, len(records), what), r["off"] + rel, 0x01)
    for p in sorted(rnd.sample(range(len(records)), min(40, len(records)))):
        r = records[p]
        rel = 32 + rnd.randrange(max(1, r["klen"])) if r["klen"] else 4
        flip("record %d key byte" % p, r["off"] + rel, 0x20)
        if r["vlen"]:
            flip("record %d value byte" % p, r["off"] + 32 + r["klen"] + rnd.randrange(r["vlen"]),
                 0x01)
        pad = (32 + r["klen"] + r["vlen"] + 7) // 8 * 8 - (32 + r["klen"] + r["vlen"])
        if pad and p % 3 == 0:
            flip("record %d padding" % p, r["off"] + 32 + r["klen"] + r["vlen"], 0x80)
    for off in sorted(rnd.sample(range(4096, tail), 80)):
        flip("log byte", off, 1 << rnd.randrange(8))
    # Whole pages of records zeroed (a lost or unwritten page), and a page of garbage.
    for page in sorted({4096, (4096 + tail) // 2 // 4096 * 4096, (tail - 1) // 4096 * 4096}):
        n = min(4096, tail - page)
        cases.append(("records page at %d zeroed" % page, [["write", DATA, page, bytes(n).hex()]],
                      False))
    cases.append(("records page of garbage", [["garbage", DATA, 4096, min(4096, tail - 4096),
                                                   harness.seed_of(5)]],
                  False))
    # Past the committed tail.
    for off in sorted({tail, tail + 1, tail + 31, tail + 100, size - 1}):
        if off < size:
            flip("past the tail", off, 0xFF)
    cases.append(("garbage just past the tail",
                  [["garbage", DATA, tail, 4096, harness.seed_of(1)]], False))
    cases.append(("a fake record past the tail",
                  [["write", DATA, tail, data[records[-1]["off"]:tail].hex()]], False))
    # Truncations.
    lens = {0, 1, 16, 100, 511, 512, 600, 1023, 1024, 1087, 1088, 2048, 4095, 4096, 4097,
            4096 + 32, tail // 2, tail - 1, tail - 8, tail - 33, tail, tail + 1, tail + 4096,
            size - 1, (size + tail) // 2}
    lens |= {records[p]["off"] for p in picks} | {records[p]["off"] + 20 for p in picks}
    for n in sorted(lens):
        if n < size:
            cases.append(("truncate to %d bytes (tail %d, size %d)" % (n, tail, size),
                          [["truncate", DATA, n]], False))
    # Appended garbage, zeros, growth.
    cases.append(("append 100 random bytes", [["append", DATA, 100, harness.seed_of(2)]],
                  False))
    cases.append(("append 1 MB random bytes", [["append", DATA, 1 << 20, harness.seed_of(3)]],
                  False))
    cases.append(("append 5000 zero bytes", [["append", DATA, 5000, None]], False))
    cases.append(("append 3 zero bytes", [["append", DATA, 3, None]], False))
    # Some of the above with the index deleted, so that the rebuild reads the damaged log.
    with_index = list(cases)
    for name, ops, prev in rnd.sample(with_index, 40):
        cases.append((name + ", index deleted", ops + [["delete", INDEX]], prev))
    return cases, tail, size


def test_data_damage():
    with TempDir() as work:
        pdir = os.path.join(work, "pristine")
        states, lookups = build_pristine(pdir)
        os.remove(os.path.join(pdir, "stale-index"))
        data, metas, newest, records = parse_data(os.path.join(pdir, DATA))
        if not check("data file: layout as in format.h",
                     data[:16] == b"mmkv data file\0\0" and newest["ok"] and records,
                     "magic %r, metas %r, %d records" % (data[:16], metas, len(records))):
            return
        cases, tail, size = data_cases(pdir, work, states, lookups)
        info("data file: %d bytes, committed tail %d, %d records, %d damage cases" % (
            size, tail, len(records), len(cases)))
        steps = steps_for(lookups)
        # Sanity: the undamaged copy gives the exact rows.
        specs = [{"src": pdir, "dir": os.path.join(work, "case"), "damage": [], "steps": steps}]
        specs += [{"src": pdir, "dir": os.path.join(work, "case"), "damage": ops, "steps": steps}
                  for _, ops, _ in cases]
        # A write at the end (in every third case: commits are slow) may fail but must not
        # crash; it is not judged.
        for s in specs[1::3]:
            s["steps"] = steps + [["INSERT OR REPLACE INTO kv VALUES('new key', 1)", []]]
        t = time.time()
        results = run_cases(specs, work)
        info("data damage cases ran in %.1fs" % (time.time() - t))
        check("data file undamaged: exact rows", not judge(results[0], states, lookups,
                                                           allow_error=False),
              judge(results[0], states, lookups, allow_error=False))
        failures, previous = [], []
        errors = exact = 0
        for (name, ops, prev), res in zip(cases, results[1:]):
            if isinstance(res, dict):
                failures.append((name, "CRASH " + res["crash"]))
                continue
            res = res[:len(steps)]
            problem = judge(res, states, lookups, allow_previous=prev)
            if problem:
                failures.append((name, problem))
            elif prev and judge(res, states, lookups):
                previous.append(name)
            if any(r and "error" in r for r in res):
                errors += 1
            else:
                exact += 1
        info("data damage: %d cases answered without error, %d with errors" % (exact, errors))
        if previous:
            info("data damage: the previous commit's rows (allowed for the newest meta slot): %s"
                 % ", ".join(previous))
        # One line per failing case, so each bug shows by name.
        for name, problem in failures:
            check("damaged data file: " + name, False, problem)
        check("damaged data file: every case gave an error naming the file or the exact rows "
              "(%d cases)" % len(cases), not failures, "%d cases failed" % len(failures))


# ---------------------------------------------------------------------------------------------

def index_cases(pdir, other_index, rnd):
    with open(os.path.join(pdir, INDEX), "rb") as f:
        idx = f.read()
    size = len(idx)
    cases = []
    hdr = ((0, "magic"), (15, "magic NUL"), (16, "format_version"), (20, "state"),
           (24, "data_file_id"), (32, "log_position"), (33, "log_position"), (40, "boot_id"),
           (56, "writer_active"), (64, "geometry_seq"), (72, "table_offset"),
           (80, "table_slots"), (88, "old_offset"), (96, "old_slots"), (104, "drain_cursor"),
           (112, "used_slots"), (120, "file_end"), (500, "reserved"), (4088, "checksum"))
    for off, what in hdr:
        for mask in (0x01, 0x80):
            cases.append(("flip header %s (offset %d, xor 0x%02x)" % (what, off, mask),
                          [["xor", INDEX, off, mask]]))
    cases.append(("header state IN_USE", [["write", INDEX, 20, struct.pack("<I", 2).hex()]]))
    cases.append(("header state 0", [["write", INDEX, 20, struct.pack("<I", 0).hex()]]))
    cases.append(("header writer_active 1", [["write", INDEX, 56, struct.pack("<I", 1).hex()]]))
    # Slots: entries and empty slots of the tables.
    entries = [o for o in range(4096, size - 7, 8) if struct.unpack_from("<Q", idx, o)[0] > 2]
    empties = [o for o in range(4096, size - 7, 8) if struct.unpack_from("<Q", idx, o)[0] == 0]
    info("index file: %d bytes, %d entry slots, %d empty slots" % (size, len(entries), len(empties)))
    for o in rnd.sample(entries, min(40, len(entries))):
        bit = rnd.choice([0, 1, 2, 5, 9, 20, 39, 41, 50, 63])
        cases.append(("flip bit %d of the entry slot at %d" % (bit, o),
                      [["xor", INDEX, o + bit // 8, 1 << (bit % 8)]]))
    for o in rnd.sample(entries, min(6, len(entries))):
        for val, what in ((0, "empty"), (1, "deleted"), (2, "moved")):
            cases.append(("entry slot at %d set to %s" % (o, what),
                          [["write", INDEX, o, struct.pack("<Q", val).hex()]]))
    if len(entries) >= 2:
        a, b = rnd.sample(entries, 2)
        cases.append(("two entry slots swapped", [
            ["write", INDEX, a, idx[b:b + 8].hex()], ["write", INDEX, b, idx[a:a + 8].hex()]]))
        cases.append(("an entry slot copied over another", [
            ["write", INDEX, a, idx[b:b + 8].hex()]]))
    for o in rnd.sample(empties, min(8, len(empties))):
        cases.append(("empty slot at %d made an entry" % o,
                      [["write", INDEX, o, idx[entries[0]:entries[0] + 8].hex()
                        if entries else "ffffffffffffffff"]]))
    cases.append(("all slots zeroed", [["write", INDEX, 4096, bytes(size - 4096).hex()]]))
    for n in sorted({0, 1, 100, 4095, 4096, 4104, size // 2, size - 8, size - 1}):
        if n < size:
            cases.append(("truncate to %d bytes (of %d)" % (n, size), [["truncate", INDEX, n]]))
    cases.append(("garbage of the same size", [["garbage", INDEX, 0, size, harness.seed_of(7)]]))
    cases.append(("garbage after a valid header", [["garbage", INDEX, 4096, size - 4096,
                                                            harness.seed_of(8)]]))
    cases.append(("garbage header, tables kept",
                  [["garbage", INDEX, 0, 4096, harness.seed_of(9)]]))
    cases.append(("replaced by 10 bytes of text", [["truncate", INDEX, 0],
                                                   ["write", INDEX, 0, b"not index\n".hex()]]))
    cases.append(("appended garbage", [["append", INDEX, 10000, harness.seed_of(10)]]))
    cases.append(("deleted", [["delete", INDEX]]))
    cases.append(("swapped with another table's index (same database)",
                  [["copy", INDEX, "app.db-other.mmkv-index"]]))
    cases.append(("swapped with another database's table's index", [["copy", INDEX, other_index]]))
    cases.append(("stale: the index as it was one commit earlier", [["copy", INDEX, "stale-index"]]))
    cases.append(("replaced by the data file", [["copy", INDEX, DATA]]))
    return cases


def test_index_damage():
    with TempDir() as work:
        pdir = os.path.join(work, "pristine")
        states, lookups = build_pristine(pdir)
        # Another table in the same database (different rows), and a table elsewhere with the
        # same number of rows, so that foreign indexes have plausible geometry.
        db = connect(os.path.join(pdir, "app.db"))
        db.execute("CREATE VIRTUAL TABLE other USING mmkv")
        db.executemany("INSERT INTO other VALUES(?, ?)", ((i * 7 + 1, i) for i in range(300)))
        db.close()
        odir = os.path.join(work, "otherdb")
        build_pristine(odir, nrows=160, seed=2)
        other_index = os.path.join(odir, INDEX)
        if not check("index file exists", os.path.exists(os.path.join(pdir, INDEX)),
                     "expected %s in %s, found %s" % (INDEX, pdir, sorted(os.listdir(pdir)))):
            return
        cases = index_cases(pdir, other_index, harness.rng(3))
        steps = steps_for(lookups)
        # After the queries: a write, a reopen, the queries again (the index must be repaired).
        post = [["INSERT INTO kv VALUES('post', 'write')", []], "reopen"] + steps
        specs = [{"src": pdir, "dir": os.path.join(work, "case"), "damage": ops,
                  "steps": steps + post} for _, ops in cases]
        t = time.time()
        results = run_cases(specs, work)
        info("%d index damage cases ran in %.1fs" % (len(cases), time.time() - t))
        post_states = states + [sorted(states[-1] + [json.dumps([enc("post"), enc("write")])])]
        failures = []
        n = len(steps)
        for (name, _), res in zip(cases, results):
            if isinstance(res, dict):
                failures.append((name, "CRASH " + res["crash"]))
                continue
            problem = judge(res[:n], states, lookups, allow_error=False)
            if not problem and res[n] and "error" in res[n]:
                problem = "the write after it failed: %s" % res[n]["msg"]
            if not problem:
                p2 = judge(res[n + 2:], post_states, lookups, allow_error=False)
                if p2:
                    problem = "after a write and a reopen: " + p2
            if problem:
                failures.append((name, problem))
        for name, problem in failures:
            check("damaged index: " + name, False, problem)
        check("damaged index: every case gave the exact rows (%d cases)" % len(cases),
              not failures, "%d cases failed" % len(failures))


# ---------------------------------------------------------------------------------------------
# Foreign files.

def test_foreign_files():
    with TempDir() as work:
        pdir = os.path.join(work, "pristine")
        build_pristine(pdir, nrows=20)
        d = os.path.join(work, "foreign")
        os.makedirs(d)
        db = connect(os.path.join(d, "app.db"))
        db.execute("CREATE TABLE native(a, b)")
        db.execute("INSERT INTO native VALUES(1, 'one'), (2, 'two')")
        db.close()
        files = {}

        def put(name, content):
            p = os.path.join(d, name)
            with open(p, "wb") as f:
                f.write(content)
            os.utime(p, ns=(1_000_000_000 * 10 ** 9, 1_000_000_000 * 10 ** 9))
            files[name] = p
            return p

        put("notes.txt", b"These are my notes.\nDo not overwrite them.\n" * 50)
        other = sqlite3.connect(os.path.join(d, "other.db"))
        other.execute("CREATE TABLE t(x)")
        other.executemany("INSERT INTO t VALUES(?)", ((i,) for i in range(500)))
        other.commit()
        other.close()
        put("sqlite.db", open(os.path.join(d, "other.db"), "rb").read())
        os.remove(os.path.join(d, "other.db"))
        with open(os.path.join(pdir, DATA), "rb") as f:
            real = f.read()

        def with_version(v):
            b = bytearray(real)
            struct.pack_into("<I", b, 16, v)
            struct.pack_into("<I", b, 508, crc32c(bytes(b[:508])))
            return bytes(b)

        # Sanity: the header checksum as computed here matches the real file's.
        check("foreign: header checksum computed as the extension does",
              struct.unpack_from("<I", real, 508)[0] == crc32c(real[:508]),
              "the file has %08x, crc32c here gives %08x"
              % (struct.unpack_from("<I", real, 508)[0], crc32c(real[:508])))
        put("version2.mmkv", with_version(2))
        put("version0.mmkv", with_version(0))
        put("versionmax.mmkv", with_version(0xFFFFFFFF))
        put("shortheader.mmkv", real[:100])
        put("magiconly.mmkv", real[:16])
        put("index-as-data.mmkv", open(os.path.join(pdir, INDEX), "rb").read())
        put("empty.mmkv", b"")
        put("zeros.mmkv", bytes(8192))
        os.makedirs(os.path.join(d, "adir"))

        refused = ["notes.txt", "sqlite.db", "version2.mmkv", "version0.mmkv", "versionmax.mmkv",
                   "shortheader.mmkv", "magiconly.mmkv", "index-as-data.mmkv"]
        maybe = ["empty.mmkv", "zeros.mmkv"]
        specs = []
        for i, name in enumerate(refused + maybe):
            specs.append({"dir": d, "steps": [
                ["CREATE VIRTUAL TABLE t%d USING mmkv(file='%s')" % (i, name), []],
                ["SELECT count(*) FROM sqlite_master WHERE name = 't%d'" % i, []],
                ["INSERT INTO t%d VALUES('k', 'v')" % i, []],
                "reopen",
                ["SELECT key, value FROM t%d" % i, []],
            ]})
        specs.append({"dir": d, "steps": [
            ["CREATE VIRTUAL TABLE tself USING mmkv(file='app.db')", []],
            ["PRAGMA integrity_check", []], ["SELECT * FROM native ORDER BY a", []]]})
        specs.append({"dir": d, "steps": [
            ["CREATE VIRTUAL TABLE tdir USING mmkv(file='adir')", []]]})
        before = {name: fstat(p) for name, p in files.items()}
        results = run_cases(specs, work)
        for name, res in zip(refused + maybe, results):
            if isinstance(res, dict):
                check("foreign %s: no crash" % name, False, res["crash"])
                continue
            after = fstat(files[name])
            untouched = after == before[name]
            detail = "" if untouched else "size %d -> %d, mtime %d -> %d, bytes %s" % (
                before[name][1], after[1], before[name][2], after[2],
                "same" if after[0] == before[name][0] else "changed")
            if name in refused:
                check("foreign %s: refused with an error" % name, "error" in res[0],
                      "CREATE succeeded; then %r" % res[1:])
                if "error" in res[0]:
                    info("foreign %s refused: %s: %s" % (name, res[0]["error"], res[0]["msg"]))
                check("foreign %s: no table left in the schema" % name,
                      res[1].get("rows") == [[enc(0)]], "got %r" % res[1])
                check("foreign %s: left byte for byte untouched" % name, untouched, detail)
                check("foreign %s: no index file created beside it" % name,
                      not os.path.exists(files[name] + "-index"), "found %s-index" % name)
            else:
                if "error" in res[0]:
                    info("foreign %s: REFUSED (%s)" % (name, res[0]["msg"]))
                    check("foreign %s: refused and left untouched" % name, untouched, detail)
                else:
                    info("foreign %s: accepted as a new mmkv file" % name)
                    check("foreign %s: accepted, then works (write, reopen, read)" % name,
                          res[2].get("rows") == [] and
                          res[4].get("rows") == [[enc("k"), enc("v")]], "got %r" % res)
        res = results[len(refused) + len(maybe)]
        if not isinstance(res, dict):
            check("foreign: the database's own file as file= is refused", "error" in res[0],
                  "got %r" % res[0])
            check("foreign: the database is intact after that",
                  res[1].get("rows") == [[enc("ok")]] and
                  res[2].get("rows") == [[enc(1), enc("one")], [enc(2), enc("two")]],
                  "got %r" % res[1:])
        else:
            check("foreign: the database's own file as file=: no crash", False, res["crash"])
        res = results[-1]
        check("foreign: a directory as file= is refused",
              not isinstance(res, dict) and "error" in res[0], "got %r" % (res,))

        # An existing table whose data file was replaced between sessions (the connect path).
        for label, content in (("text", b"plain text, not mmkv\n" * 10),
                               ("sqlite database", before["sqlite.db"][0]),
                               ("version 4, from a later mmkv", with_version(4))):
            cdir = os.path.join(work, "replaced")
            shutil.rmtree(cdir, ignore_errors=True)
            shutil.copytree(pdir, cdir)
            p = os.path.join(cdir, DATA)
            with open(p, "wb") as f:
                f.write(content)
            os.utime(p, ns=(10 ** 18, 10 ** 18))
            os.remove(os.path.join(cdir, INDEX))
            b = fstat(p)
            res = run_cases([{"dir": cdir, "steps": [["SELECT count(*) FROM kv", []],
                                                     ["SELECT * FROM kv WHERE key = 1", []],
                                                     ["INSERT INTO kv VALUES('x', 1)", []]]}],
                            work)[0]
            if isinstance(res, dict):
                check("replaced by %s: no crash" % label, False, res["crash"])
                continue
            check("data file replaced by %s: every query refused" % label,
                  all("error" in r for r in res), "got %r" % res)
            check("data file replaced by %s: error names the file" % label,
                  all(DATA in r.get("msg", "") for r in res), "got %r" % res)
            after = fstat(p)
            check("data file replaced by %s: left untouched" % label, after == b,
                  "expected %d bytes, mtime %d; got %d bytes%s, mtime %d"
                  % (b[1], b[2], after[1], "" if after[0] == b[0] else " (changed)", after[2]))


def test_damage_error_code():
    """Damage found by a read is SQLITE_CORRUPT_VTAB, and the message names the file and the
    offset of the record that fails."""
    with TempDir() as d:
        p = os.path.join(d, "app.db")
        db = connect(p)
        db.execute("CREATE VIRTUAL TABLE kv USING mmkv")
        db.execute("INSERT INTO kv VALUES(1, 'one'), (2, 'two')")
        harness.sync_kept_records(db)
        db.close()
        data = os.path.join(d, "app.db-kv.mmkv")
        with open(data, "r+b") as f:
            f.seek(4096 + 40)  # inside the first record's key and value
            f.write(b"\xff\xff\xff\xff")
        db = connect(p)
        try:
            db.execute("SELECT * FROM kv").fetchall()
            check("damage: a scan fails", False, "no error")
        except sqlite3.DatabaseError as e:
            code = getattr(e, "sqlite_errorcode", None)
            check("damage: SQLITE_CORRUPT_VTAB (267), got %r: %s" % (code, e),
                  code in (None, 267) and "offset 4096" in str(e) and data in str(e))
        db.close()


if __name__ == "__main__":
    harness.main([
        test_damage_error_code,
        test_foreign_files,
        test_data_damage,
        test_index_damage,
    ])
