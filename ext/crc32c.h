/* CRC32C (Castagnoli), the checksum of every meta slot, header and record. */
#ifndef MMKV_CRC32C_H
#define MMKV_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continues a checksum: pass 0 to start. */
uint32_t mmkv_crc32c(uint32_t crc, const void *data, size_t len);

/* The same value; a buffer of MMKV_CRC32C_WIDE_MIN bytes or more is checksummed in parts at once,
** on threads started for it (one per processor the caller may run on, up to four), where the
** processor has the CRC32 instruction and threads can be started. For the few very long buffers
** that are memory-bound, such as an index's tables read at open. */
#define MMKV_CRC32C_WIDE_MIN ((size_t)16 << 20)
uint32_t mmkv_crc32c_wide(uint32_t crc, const void *data, size_t len);

#endif
