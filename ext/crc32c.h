/* CRC32C (Castagnoli), the checksum of every meta slot, header and record. */
#ifndef MMKV_CRC32C_H
#define MMKV_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continues a checksum: pass 0 to start. */
uint32_t mmkv_crc32c(uint32_t crc, const void *data, size_t len);

#endif
