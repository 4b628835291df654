/*
** CRC32C with the SSE4.2 instruction where the processor has it, and a table otherwise.
** Both give the same values; the choice is made once, on first use.
*/
#include "crc32c.h"

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
__attribute__((target("sse4.2"))) static uint32_t crc_hardware(uint32_t crc, const unsigned char *p,
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
#endif

static void crc_choose(void)
{
#ifdef MMKV_HAVE_HW_CRC
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        __atomic_store_n(&crc_impl, crc_hardware, __ATOMIC_RELEASE);
        return;
    }
#endif
    crc_table_init();
    __atomic_store_n(&crc_impl, crc_software, __ATOMIC_RELEASE);
}

uint32_t mmkv_crc32c(uint32_t crc, const void *data, size_t len)
{
    uint32_t (*impl)(uint32_t, const unsigned char *, size_t) =
        __atomic_load_n(&crc_impl, __ATOMIC_ACQUIRE);
    if (!impl) {
        crc_choose(); /* idempotent: racing threads compute the same tables and pick the same */
        impl = __atomic_load_n(&crc_impl, __ATOMIC_ACQUIRE);
    }
    return ~impl(~crc, (const unsigned char *)data, len);
}
