/*
** fuzz.h: the input format of the libFuzzer target (test/fuzz.c), shared with the program that
** makes its seed corpus (test/fuzz-seeds.c).
**
** An input is a header, a script of operation bytes, the data file image and the index file image:
**
**     offset 0   flags (FUZZ_*, below)
**     offset 1   script length in bytes (0..255)
**     offset 2   data image length (u32, little-endian; clamped to what the input holds)
**     offset 6   data file size (u32): the file is the image, then zeros up to this size
**     offset 10  index file size (u32): likewise for the index image
**     offset 14  the script, then the data image, then the index image (the rest of the input)
**
** File sizes are capped (FUZZ_MAX_FILE), and a size below its image's length is ignored, so zero
** tails (the data file is allocated in 1 MiB steps, the index keeps drained tables as holes) cost
** nothing in the input. A data image and size of 0 leave the data file absent (mmkv_open creates a
** new one); FUZZ_NO_INDEX leaves the index file absent.
**
** CRC32C checksums are beyond a mutation-based fuzzer's reach, so flags may have the harness put
** them right before it writes the files: the engine then meets files that are wrong in their
** contents rather than in their checksums. Such files are forged: the engine trusts what its
** checksums vouch for, so with these flags the harness checks everything but the comparison with
** its own reading of the log (see fuzz.c).
*/
#ifndef MMKV_FUZZ_H
#define MMKV_FUZZ_H

#define FUZZ_HEADER_SIZE 14
#define FUZZ_MAX_FILE (2u << 20)

#define FUZZ_FIX_HEADER 0x01  /* recompute the data file header's checksum */
#define FUZZ_FIX_META 0x02    /* recompute both meta slots' checksums (and start checksums) */
#define FUZZ_FIX_RECORDS 0x04 /* recompute the checksum of each record that parses, from 4096 on */
#define FUZZ_FIX_INDEX 0x08   /* recompute the index header's tables and header checksums */
#define FUZZ_STAMP_BOOT 0x10  /* write this boot's id into the index header (the "last user died
                                 in this boot" case, where an index marked in use is trusted) */
#define FUZZ_NO_INDEX 0x20    /* no index file */
#define FUZZ_DROP_INDEX 0x40  /* delete the index file before the reopen */
#define FUZZ_SECOND_CONN 0x80 /* a second connection reads while the first one writes */

#define FUZZ_FORGED (FUZZ_FIX_HEADER | FUZZ_FIX_META | FUZZ_FIX_RECORDS | FUZZ_FIX_INDEX)

#endif
