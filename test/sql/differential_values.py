"""Values, normalisation and display helpers for test_differential.py.

Every value read back from SQLite is normalised to a tagged tuple so that comparisons are exact
and typed: 1 and 1.0 differ, -0.0 and 0.0 differ (by their bit pattern), text and blob with the
same bytes differ, text is compared byte for byte (NUL bytes and invalid UTF-8 included).
"""
import struct

INF = float("inf")

# Keys that collide with each other in interesting ways (1 = 1.0, -0.0 = 0, -2**63 = its double,
# 9007199254740992 = 9007199254740992.0 but not 9007199254740993), and ones that do not
# ('1' <> 1, x'61' <> 'a', x'31' <> '1').
KEY_POOL = [
    0, 1, -1, 2, 3, 7, 42, -42, 1000, 1000000, 999999,
    2**63 - 1, -2**63, 9007199254740993, 9007199254740992,
    1.0, 2.0, -0.0, 0.0, 0.5, -1.5, 7.0, 1000000.0,
    9007199254740992.0, 9.223372036854776e18, -9.223372036854776e18,
    1e308, -1e308, INF, -INF, 5e-324,
    "1", "", "a", "A", "b", "ab", "1.0", " 1", "a\x00b", "a\x00c", "\x00", "\u00e9", "E\u0301",
    "\u65e5\u672c", "\U0001f600", "x",
    b"", b"a", b"1", b"\x00", b"\x00\x01", b"\xff\xfe", b"ab", b"a\x00b",
]

TEXT_CHARS = ["a", "b", "A", "x", "1", " ", "\x00", "\u00e9", "\u65e5", "\U0001f600", "%", "_"]


def text_factory(data):
    """Registered as connection.text_factory: keeps TEXT as its exact bytes, tagged."""
    return ("T", bytes(data))


def norm(v):
    """A typed, exactly comparable form of one result value."""
    if v is None:
        return ("N",)
    if isinstance(v, tuple):  # from text_factory
        return v
    if isinstance(v, int):
        return ("I", v)
    if isinstance(v, float):
        return ("R", struct.pack(">d", v).hex())
    if isinstance(v, (bytes, bytearray, memoryview)):
        return ("B", bytes(v))
    raise TypeError("unexpected value %r" % (v,))


def norm_row(row):
    """Normalised rows are tuples of tagged tuples: directly sortable (the tag decides between
    different types), so sorted() gives a canonical form of a multiset of rows."""
    return tuple(norm(v) for v in row)


def show_bytes(b, limit=40):
    s = repr(b[:limit])
    if len(b) > limit:
        s += "...(%d bytes)" % len(b)
    return s


def show_norm(t):
    """Human-readable form of one normalised value."""
    tag = t[0]
    if tag == "N":
        return "NULL"
    if tag == "I":
        return "%d" % t[1]
    if tag == "R":
        f = struct.unpack(">d", bytes.fromhex(t[1]))[0]
        return "%r(real)" % f
    if tag == "T":
        return "text:" + show_bytes(t[1])
    if tag == "B":
        return "blob:" + show_bytes(t[1])
    return repr(t)


def show_rows(rows, limit=12):
    parts = ["(" + ", ".join(show_norm(v) for v in row) + ")" for row in rows[:limit]]
    s = "[" + ", ".join(parts)
    if len(rows) > limit:
        s += ", ...(%d rows)" % len(rows)
    return s + "]"


def show_param(v):
    if isinstance(v, str):
        b = v.encode("utf-8")
        return "text:" + show_bytes(b)
    if isinstance(v, (bytes, bytearray)):
        return "blob:" + show_bytes(bytes(v))
    if isinstance(v, float):
        return "%r(real)" % v
    if v is None:
        return "NULL"
    return repr(v)


def show_params(params):
    return "[" + ", ".join(show_param(v) for v in params) + "]"
