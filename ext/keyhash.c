/*
** Keys: equality and hashing under SQLite's comparison rules for a column with no affinity and
** BINARY collation. Numbers compare by value across INTEGER and REAL (1 = 1.0, -0.0 = 0), exactly
** (9007199254740993 <> 9007199254740992.0); TEXT compares bytewise with TEXT only, BLOB with BLOB
** only. Equal keys must hash equally, so a REAL holding an integer value hashes as that integer.
*/
#include "mmkv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SEED_NUMBER 0x9e3779b97f4a7c15ULL
#define SEED_REAL 0xc2b2ae3d27d4eb4fULL
#define SEED_TEXT 0x165667b19e3779f9ULL
#define SEED_BLOB 0x27d4eb2f165667c5ULL
#define MIX_MULTIPLIER 0xff51afd7ed558ccdULL

/* 2^63 as a double: reals in [-2^63, 2^63) may equal an int64. */
#define TWO_POW_63 9223372036854775808.0

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= MIX_MULTIPLIER;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t hash_bytes(const unsigned char *p, size_t len, uint64_t seed)
{
    uint64_t h = seed ^ (len * MIX_MULTIPLIER);
    while (len >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        h = (h ^ mix64(word)) * SEED_NUMBER;
        h ^= h >> 29;
        p += 8;
        len -= 8;
    }
    if (len) {
        uint64_t word = 0;
        memcpy(&word, p, len);
        h = (h ^ mix64(word ^ ((uint64_t)len << 56))) * SEED_NUMBER;
    }
    return mix64(h);
}

static int64_t datum_int(const mmkv_datum *d)
{
    int64_t i;
    memcpy(&i, d->bytes, sizeof i);
    return i;
}

static double datum_real(const mmkv_datum *d)
{
    double r;
    memcpy(&r, d->bytes, sizeof r);
    return r;
}

/* If r holds exactly an int64 value, stores it in *out and returns 1. */
static int real_as_int(double r, int64_t *out)
{
    if (!(r >= -TWO_POW_63 && r < TWO_POW_63)) return 0;
    int64_t i = (int64_t)r;
    if ((double)i != r) return 0;
    *out = i;
    return 1;
}

static uint64_t key_hash(const mmkv_datum *key);

/* The top bit is left clear: it marks a key's second slot (format.h). */
uint64_t mmkv_key_hash(const mmkv_datum *key)
{
    return key_hash(key) & ~(UINT64_C(1) << 63);
}

static uint64_t key_hash(const mmkv_datum *key)
{
    int64_t i;
    switch (key->type) {
    case MMKV_INTEGER:
        return mix64((uint64_t)datum_int(key) ^ SEED_NUMBER);
    case MMKV_FLOAT: {
        double r = datum_real(key);
        if (real_as_int(r, &i)) return mix64((uint64_t)i ^ SEED_NUMBER);
        uint64_t bits;
        memcpy(&bits, &r, sizeof bits);
        return mix64(bits ^ SEED_REAL);
    }
    case MMKV_TEXT:
        return hash_bytes(key->bytes, key->len, SEED_TEXT);
    default:
        return hash_bytes(key->bytes, key->len, SEED_BLOB);
    }
}

static int numeric_equal(const mmkv_datum *a, const mmkv_datum *b)
{
    if (a->type == MMKV_INTEGER && b->type == MMKV_INTEGER) return datum_int(a) == datum_int(b);
    if (a->type == MMKV_FLOAT && b->type == MMKV_FLOAT) return datum_real(a) == datum_real(b);
    const mmkv_datum *integer = a->type == MMKV_INTEGER ? a : b;
    const mmkv_datum *real = a->type == MMKV_INTEGER ? b : a;
    int64_t i;
    return real_as_int(datum_real(real), &i) && i == datum_int(integer);
}

static int is_numeric(int type)
{
    return type == MMKV_INTEGER || type == MMKV_FLOAT;
}

int mmkv_key_equal(const mmkv_datum *a, const mmkv_datum *b)
{
    if (is_numeric(a->type) && is_numeric(b->type)) return numeric_equal(a, b);
    return a->type == b->type && a->len == b->len &&
           (a->len == 0 || memcmp(a->bytes, b->bytes, a->len) == 0);
}

static int is_sql_space(unsigned c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static int is_digit(unsigned c)
{
    return c >= '0' && c <= '9';
}

#define NOT_ASCII 0x100u /* a UTF-16 code unit above 0xff: never part of a number */

/* The i-th code unit of text in encoding: a byte of UTF-8, or a UTF-16 unit. Only ASCII can form a
** number (SQLite's sqlite3AtoF reads UTF-16 by its low bytes while the high bytes are zero), so a
** UTF-16 unit with a high byte reads as NOT_ASCII, and one from 0x80 to 0xff, like a UTF-8 byte
** of that value, as no character of the grammar. Inlined with a constant encoding, so that the
** UTF-8 loop reads bytes and nothing more. */
static inline __attribute__((always_inline)) unsigned unit_at(const unsigned char *p, size_t i,
                                                              int encoding)
{
    if (encoding == MMKV_TEXT_UTF16LE) return p[2 * i + 1] ? NOT_ASCII : p[2 * i];
    if (encoding == MMKV_TEXT_UTF16BE) return p[2 * i] ? NOT_ASCII : p[2 * i + 1];
    return p[i];
}

/* Reads SQLite's numeric literal grammar over n code units, with white space around it as NUMERIC
** affinity allows: [sign] (digits [. digits] | . digits) [e [sign] digits]. Sets *is_integer when
** there is no point and no exponent. Returns the length of the literal in units without the white
** space (its first unit in *start), or 0. The text may end at a NUL: newer SQLite (3.54) reads
** text as a C string, so '1' NUL 'x' is 1 there, where older ones (3.40) read no number; taking
** the number gives the superset that the callers need (their SQLite compares each row itself). */
static inline __attribute__((always_inline)) size_t
numeric_literal(const unsigned char *p, size_t n, int encoding, size_t *start, int *is_integer)
{
#define U(i) unit_at(p, (i), encoding)
    size_t i = 0, digits = 0;
    while (i < n && is_sql_space(U(i)))
        i++;
    *start = i;
    *is_integer = 1;
    if (i < n && (U(i) == '+' || U(i) == '-')) i++;
    while (i < n && is_digit(U(i)))
        i++, digits++;
    if (i < n && U(i) == '.') {
        *is_integer = 0;
        for (i++; i < n && is_digit(U(i)); i++)
            digits++;
    }
    if (!digits) return 0;
    if (i < n && (U(i) == 'e' || U(i) == 'E')) {
        size_t e = i + 1, exponent_digits = 0;
        if (e < n && (U(e) == '+' || U(e) == '-')) e++;
        while (e < n && is_digit(U(e)))
            e++, exponent_digits++;
        if (!exponent_digits) return 0;
        *is_integer = 0;
        i = e;
    }
    size_t end = i;
    while (i < n && is_sql_space(U(i)))
        i++;
    return i == n || U(i) == 0 ? end - *start : 0;
#undef U
}

int mmkv_text_as_number(const mmkv_datum *text, int encoding, mmkv_datum *number, uint64_t *storage)
{
    if (text->type != MMKV_TEXT || text->len == 0) return 0;
    const unsigned char *p = text->bytes;
    size_t start, len;
    int is_integer;
    if (encoding == MMKV_TEXT_UTF16LE || encoding == MMKV_TEXT_UTF16BE) {
        /* A stray last byte (never from SQLite) is left out, as sqlite3AtoF leaves it. */
        len = encoding == MMKV_TEXT_UTF16LE
                  ? numeric_literal(p, text->len / 2, MMKV_TEXT_UTF16LE, &start, &is_integer)
                  : numeric_literal(p, text->len / 2, MMKV_TEXT_UTF16BE, &start, &is_integer);
    } else {
        len = numeric_literal(p, text->len, MMKV_TEXT_UTF8, &start, &is_integer);
    }
    if (!len) return 0;
    char small[64];
    char *buf = len < sizeof small ? small : malloc(len + 1);
    if (!buf) return 0;
    for (size_t i = 0; i < len; i++) /* every unit of the literal is ASCII */
        buf[i] = (char)unit_at(p, start + i, encoding);
    buf[len] = 0;
    int done = 0;
    if (is_integer) {
        errno = 0;
        long long i = strtoll(buf, NULL, 10);
        if (errno != ERANGE) {
            int64_t v = i;
            memcpy(storage, &v, sizeof v);
            number->type = MMKV_INTEGER;
            done = 1;
        }
    }
    if (!done) {
        double r = strtod(buf, NULL);
        memcpy(storage, &r, sizeof r);
        number->type = MMKV_FLOAT;
    }
    number->len = 8;
    number->bytes = storage;
    if (buf != small) free(buf);
    return 1;
}
