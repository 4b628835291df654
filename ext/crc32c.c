/*
** CRC32C with the SSE4.2 instruction where the processor has it, and a table otherwise.
** Both give the same values; the choice is made once, on first use.
*/
#include "crc32c.h"

#include <pthread.h>
#include <sched.h>
#include <string.h>

#define CRC32C_POLY_REFLECTED 0x82f63b78u

static uint32_t crc_table[8][256];
static uint32_t (*crc_impl)(uint32_t, const unsigned char *, size_t);

static void crc_table_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ CRC32C_POLY_REFLECTED : c >> 1;
        crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int k = 1; k < 8; k++)
            crc_table[k][n] = (crc_table[k - 1][n] >> 8) ^ crc_table[0][crc_table[k - 1][n] & 0xff];
}

/* Slicing-by-8: eight table lookups per 8 bytes. */
static uint32_t crc_software(uint32_t crc, const unsigned char *p, size_t len)
{
    while (len >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        word ^= crc;
        crc = crc_table[7][word & 0xff] ^ crc_table[6][(word >> 8) & 0xff] ^
              crc_table[5][(word >> 16) & 0xff] ^ crc_table[4][(word >> 24) & 0xff] ^
              crc_table[3][(word >> 32) & 0xff] ^ crc_table[2][(word >> 40) & 0xff] ^
              crc_table[1][(word >> 48) & 0xff] ^ crc_table[0][word >> 56];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MMKV_HAVE_HW_CRC 1

/*
** Long buffers (an index's tables at open and clean close: 128 MB at 10M keys) go three lanes at a
** time: the instruction takes three cycles but can start one each cycle, so one chain of it runs
** at a third of the speed three independent ones do. The register's update is linear, so the
** lanes' checksums combine: crc(c, A B C) = shift_2L(crc(c, A)) ^ shift_L(crc(0, B)) ^ crc(0, C),
** where shift_n(x), the register x after n zero bytes, is itself linear in x: a table per byte
** of x, made once from the images of its 32 bits.
*/
#define LANE_BYTES 8192
static uint32_t shift_lane[2][4][256]; /* [0]: by LANE_BYTES, [1]: by twice that */
static const unsigned char zero_lane[LANE_BYTES];

__attribute__((target("sse4.2"))) static uint32_t crc_serial(uint32_t crc, const unsigned char *p,
                                                             size_t len)
{
    uint64_t c = crc;
    while (len >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = __builtin_ia32_crc32di(c, word);
        p += 8;
        len -= 8;
    }
    crc = (uint32_t)c;
    while (len--)
        crc = __builtin_ia32_crc32qi(crc, *p++);
    return crc;
}

static void shift_tables_init(void)
{
    for (int which = 0; which < 2; which++) {
        uint32_t bit_image[32];
        for (int i = 0; i < 32; i++) {
            uint32_t x = crc_serial(1u << i, zero_lane, LANE_BYTES);
            bit_image[i] = which ? crc_serial(x, zero_lane, LANE_BYTES) : x;
        }
        for (int k = 0; k < 4; k++)
            for (uint32_t b = 0; b < 256; b++) {
                uint32_t image = 0;
                for (int j = 0; j < 8; j++)
                    if (b & (1u << j)) image ^= bit_image[8 * k + j];
                shift_lane[which][k][b] = image;
            }
    }
}

static uint32_t shift(int which, uint32_t x)
{
    return shift_lane[which][0][x & 0xff] ^ shift_lane[which][1][(x >> 8) & 0xff] ^
           shift_lane[which][2][(x >> 16) & 0xff] ^ shift_lane[which][3][x >> 24];
}

/* The register x after `lanes` lanes of zero bytes: a table step per lane, a few microseconds for
** the megabytes a part of a wide checksum spans. */
static uint32_t shift_by_lanes(uint32_t x, size_t lanes)
{
    for (; lanes >= 2; lanes -= 2)
        x = shift(1, x);
    return lanes ? shift(0, x) : x;
}

__attribute__((target("sse4.2"))) static uint32_t crc_hardware(uint32_t crc, const unsigned char *p,
                                                               size_t len)
{
    while (len >= 3 * LANE_BYTES) {
        uint64_t a = crc, b = 0, c = 0;
        for (size_t i = 0; i < LANE_BYTES; i += 8) {
            uint64_t wa, wb, wc;
            memcpy(&wa, p + i, 8);
            memcpy(&wb, p + LANE_BYTES + i, 8);
            memcpy(&wc, p + 2 * LANE_BYTES + i, 8);
            a = __builtin_ia32_crc32di(a, wa);
            b = __builtin_ia32_crc32di(b, wb);
            c = __builtin_ia32_crc32di(c, wc);
        }
        crc = shift(1, (uint32_t)a) ^ shift(0, (uint32_t)b) ^ (uint32_t)c;
        p += 3 * LANE_BYTES;
        len -= 3 * LANE_BYTES;
    }
    return crc_serial(crc, p, len);
}
#endif

static void crc_choose(void)
{
#ifdef MMKV_HAVE_HW_CRC
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        shift_tables_init();
        __atomic_store_n(&crc_impl, crc_hardware, __ATOMIC_RELEASE);
        return;
    }
#endif
    crc_table_init();
    __atomic_store_n(&crc_impl, crc_software, __ATOMIC_RELEASE);
}

static uint32_t (*crc_chosen(void))(uint32_t, const unsigned char *, size_t)
{
    uint32_t (*impl)(uint32_t, const unsigned char *, size_t) =
        __atomic_load_n(&crc_impl, __ATOMIC_ACQUIRE);
    if (!impl) {
        crc_choose(); /* idempotent: racing threads compute the same tables and pick the same */
        impl = __atomic_load_n(&crc_impl, __ATOMIC_ACQUIRE);
    }
    return impl;
}

uint32_t mmkv_crc32c(uint32_t crc, const void *data, size_t len)
{
    return ~crc_chosen()(~crc, (const unsigned char *)data, len);
}

#ifdef MMKV_HAVE_HW_CRC
/*
** A wide checksum. Reading an index's tables at open is bound by memory, not by the instruction:
** measured on a 2-core VM, 128 MB took 14-16 ms on one thread and 8.7 ms on two. The buffer is cut
** into parts whose lengths after the first are whole lanes; each part's register, started at zero,
** is computed at once, and they combine as the lanes do (see above): the register over A B is
** shift_|B|(register over A) ^ register over B from zero.
*/
#define WIDE_PARTS_MAX 4

typedef struct wide_part {
    const unsigned char *p;
    size_t len;
    uint32_t reg;
} wide_part;

static void *wide_part_run(void *arg)
{
    wide_part *part = arg;
    part->reg = crc_hardware(part->reg, part->p, part->len);
    return NULL;
}

uint32_t mmkv_crc32c_wide(uint32_t crc, const void *data, size_t len)
{
    if (len < MMKV_CRC32C_WIDE_MIN || crc_chosen() != crc_hardware)
        return mmkv_crc32c(crc, data, len);
    cpu_set_t allowed; /* the processors this thread may run on, not all the machine has */
    int cpus = sched_getaffinity(0, sizeof allowed, &allowed) == 0 ? CPU_COUNT(&allowed) : 1;
    int parts = cpus > WIDE_PARTS_MAX ? WIDE_PARTS_MAX : cpus;
    if (parts < 2) return mmkv_crc32c(crc, data, len);
    const unsigned char *p = data;
    size_t lanes_each = len / LANE_BYTES / (size_t)parts;
    wide_part part[WIDE_PARTS_MAX];
    pthread_t thread[WIDE_PARTS_MAX];
    int started[WIDE_PARTS_MAX] = {0};
    size_t first = len - (size_t)(parts - 1) * lanes_each * LANE_BYTES;
    for (int i = 0; i < parts; i++) {
        part[i].p = i ? p + first + (size_t)(i - 1) * lanes_each * LANE_BYTES : p;
        part[i].len = i ? lanes_each * LANE_BYTES : first;
        part[i].reg = i ? 0 : ~crc;
        if (i) started[i] = pthread_create(&thread[i], NULL, wide_part_run, &part[i]) == 0;
    }
    wide_part_run(&part[0]);
    uint32_t reg = part[0].reg;
    for (int i = 1; i < parts; i++) {
        if (started[i])
            pthread_join(thread[i], NULL);
        else
            wide_part_run(&part[i]); /* no thread to be had: this one does it */
        reg = shift_by_lanes(reg, lanes_each) ^ part[i].reg;
    }
    return ~reg;
}
#else
uint32_t mmkv_crc32c_wide(uint32_t crc, const void *data, size_t len)
{
    return mmkv_crc32c(crc, data, len);
}
#endif
