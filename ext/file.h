/*
** file.h: every call mmkv makes to the operating system's file API goes through here: opening,
** allocating, syncing, locking, and mapping. One seam, so that tests can fail or stop any step.
**
** A mapping is a series of views. Each view is an address range reserved for the file, a few times
** the file's size, into which the file is mapped piece by piece as it grows. When the file outgrows
** the newest view, a new, larger range is reserved, the whole file is mapped into it, and it is
** published as the base. Older views stay mapped (MAP_SHARED of the same file, so coherent with
** the newest) until the map is released: a pointer taken from any view stays valid and current,
** and nobody is ever remapped under. A process can so hold many mappings (one per open table)
** without reserving more address space than a small multiple of their files' sizes.
**
** The rule for readers in other threads: load mmkv_map_mapped first, then mmkv_map_base; an offset
** below the `mapped` seen is inside the view whose base is loaded after it (a writer publishes a
** new view's base before it raises `mapped`, and every view maps the whole file it knew of). A
** pointer made from a base loaded before `mapped` may lie in a view too small for the offset.
*/
#ifndef MMKV_FILE_H
#define MMKV_FILE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* A view is reserved at MMKV_MAP_GROWTH times the file it is made for (never less than the map's
** minimum), so that the file can grow that much before the next view; and since each view is then
** at least that many times the last, all the views of a map add up to at most
** GROWTH / (GROWTH - 1) times the newest, which is at most GROWTH times the file: 16/3 times
** the file's size in all (or the minimum, for a small file), in address space only (nothing is
** reserved in memory or swap). Only where address space runs short is a view reserved at the bare
** size needed, and then the next growth needs another. */
#define MMKV_MAP_GROWTH 4

/* Views one map may hold. Each new view is at least MMKV_MAP_GROWTH times the file it was made
** for, so 12 take a map from 16 MiB past the largest file (MMKV_MAX_FILE_SIZE); the rest are slack
** for views reserved at the bare size needed where address space was short. */
#define MMKV_MAP_MAX_VIEWS 32

typedef struct mmkv_map_view {
    unsigned char *base;
    uint64_t bytes; /* of address space reserved */
} mmkv_map_view;

typedef struct mmkv_map {
    int fd;
    int writable;         /* 0: mapped PROT_READ, and never grown by this process */
    unsigned char *base;  /* the newest view's start (read with mmkv_map_base) */
    uint64_t reserved;    /* bytes of address space in the newest view */
    uint64_t mapped;      /* bytes of the file mapped (read with mmkv_map_mapped) */
    uint64_t file_size;   /* bytes the file is known to have */
    uint64_t min_reserve; /* the smallest view to reserve */
    uint64_t grow_basis;  /* bytes in use: growth ahead is a 32nd of them (0: an 8th of the file) */
    unsigned n_views;     /* views[0 .. n_views) are mapped, the newest last */
    mmkv_map_view views[MMKV_MAP_MAX_VIEWS];
    pthread_mutex_t grow_lock; /* serialises growth of the mapping within the process */
} mmkv_map;

/* Lock bytes, placed past any real file content (POSIX allows locks beyond the end). */
#define MMKV_LOCK_WRITER ((int64_t)1 << 40)     /* held by the process writing */
#define MMKV_LOCK_OPEN (((int64_t)1 << 40) + 1) /* shared by every process that has it open */
#define MMKV_LOCK_RECLAIM (((int64_t)1 << 40) + 2) /* held while giving space back (compact.c) */

#define MMKV_OPEN_EXISTING 0   /* NOTFOUND if absent */
#define MMKV_OPEN_CREATE_NEW 1 /* BUSY if present */
#define MMKV_OPEN_ALWAYS 2     /* open, creating if absent */
#define MMKV_OPEN_READONLY 3   /* open for reading only; NOTFOUND if absent */
int mmkv_file_open(const char *path, int how, int *fd_out);
int mmkv_file_size(int fd, uint64_t *size);
int mmkv_file_read(int fd, void *buf, size_t len, uint64_t offset); /* short read: IOERR */
int mmkv_file_write(int fd, const void *buf, size_t len, uint64_t offset);
int mmkv_file_sync(int fd);                                   /* fdatasync */
/* The same, for a file that may hold much unwritten data while others write it: bytes [from,
** to), where that data is, are written back a few megabytes at a time first, so that no one
** write-back holds up a writer's page fault or commit for long (one fdatasync of 1.2 GB held a
** writer 70 ms). */
int mmkv_file_sync_paced(int fd, uint64_t from, uint64_t to);
int mmkv_file_sync_dir(const char *path);                     /* the directory of path */
int mmkv_file_allocate(int fd, uint64_t size);                /* FULL on ENOSPC */
int mmkv_file_allocate_range(int fd, uint64_t offset, uint64_t len); /* the same, for a range */
int mmkv_file_discard(int fd, uint64_t offset, uint64_t len); /* punch a hole (reads 0) */
int mmkv_file_truncate(int fd, uint64_t size); /* only with no other user of the file anywhere */

int mmkv_lock_try(int fd, int64_t byte, int exclusive); /* OK or BUSY, never waits */
/* 1 if a lock that would conflict with an exclusive one is held on byte by another descriptor
** (another process, or another open of the file): asks without taking anything. */
int mmkv_lock_held_elsewhere(int fd, int64_t byte);
int mmkv_lock_wait(int fd, int64_t byte, int exclusive);
void mmkv_unlock(int fd, int64_t byte);

/*
** Maps the file on fd: a first view of max(min_reserve_bytes, MMKV_MAP_GROWTH x its size) bytes,
** mapped PROT_READ | PROT_WRITE, or PROT_READ only if writable is 0 (for a descriptor opened with
** MMKV_OPEN_READONLY; such a map refuses to grow or truncate the file with MMKV_READONLY).
**
** These calls fail with a result code; mmkv_map_error then says what failed and why. A failure
** to reserve or map address space is MMKV_IOERR, as SQLite's own SQLITE_IOERR_MMAP is (SQLite
** reports an MMKV_NOMEM as "out of memory" and drops the message). Leaves nothing behind on error.
*/
int mmkv_map_init(mmkv_map *map, int fd, uint64_t min_reserve_bytes, int writable);
int mmkv_map_refresh(mmkv_map *map);                /* map whatever the file holds now */
int mmkv_map_truncate(mmkv_map *map);               /* empty the file; nobody else may use it */
int mmkv_map_extend(mmkv_map *map, uint64_t bytes); /* allocate the file to bytes and map it */
int mmkv_map_sync_range(mmkv_map *map, uint64_t offset, uint64_t len); /* msync, then durable */
/* Gives back the space allocated past keep (rounded up), which nobody may read or write until a
** later growth allocates it again: the one writer, with no other process using the file (another
** process's mapping would take the hole for allocated, and a write there could fault on a full
** disk). */
int mmkv_map_give_back(mmkv_map *map, uint64_t keep);
void mmkv_map_release(mmkv_map *map); /* unmaps every view; only with no other user */
/* Drops this process's page mappings of the whole pages in [from, to) of the newest view (where
** writes go): the bytes stay in the file and the page cache, and the next access maps them anew. */
void mmkv_map_drop_pages(mmkv_map *map, uint64_t from, uint64_t to);

/* Sets *errmsg to what the last failed map call of this thread on map did (rc being its result):
** what it asked for, how much address space the map holds, and the system's reason, naming the
** file as `what` (e.g. "data file") and path. Returns rc. */
int mmkv_map_error(const mmkv_map *map, char **errmsg, int rc, const char *what, const char *path);

static inline uint64_t mmkv_map_mapped(const mmkv_map *map)
{
    return __atomic_load_n(&map->mapped, __ATOMIC_ACQUIRE);
}

/* The newest view; valid for offsets below a mmkv_map_mapped loaded before it (see above). */
static inline unsigned char *mmkv_map_base(const mmkv_map *map)
{
    return __atomic_load_n(&map->base, __ATOMIC_ACQUIRE);
}

/* 1 if this process holds a classic POSIX lock on the file with that device and inode (as SQLite
** does on its database, journal and WAL files): closing any descriptor on it would drop the lock,
** so mmkv must never open such a file. 0 if not or if the system does not say. */
int mmkv_file_locked_by_process(uint64_t dev, uint64_t ino);

/* The file offset of p, a pointer into any of the map's views (UINT64_MAX if it is in none). */
static inline uint64_t mmkv_map_offset_of(const mmkv_map *map, const void *p)
{
    uintptr_t at = (uintptr_t)p;
    for (unsigned i = __atomic_load_n(&map->n_views, __ATOMIC_ACQUIRE); i-- > 0;) {
        uintptr_t base = (uintptr_t)map->views[i].base;
        if (at >= base && at - base < map->views[i].bytes) return (uint64_t)(at - base);
    }
    return UINT64_MAX;
}

/* Why this thread's last failed call here failed (strerror of its errno), for messages. A failpoint
** (failpoint.h) records itself as the reason with mmkv_os_fail_injected. */
#define MMKV_INJECTED_FAILURE (-1)
const char *mmkv_os_reason(void);
void mmkv_os_fail_injected(void);

/* The current boot's identity, so that a file marked in use by a dead process of this boot can be
** told from one that survived a power loss. Zeros if the system does not say. */
void mmkv_boot_id(uint8_t out[16]);

#ifdef MMKV_FAILPOINTS
/* Test builds only: a hook called before every sync with the range synced (len 0: the whole
** file), and an override of the boot id (NULL: the system's), to simulate a power cut. */
void mmkv_file_set_sync_hook(void (*hook)(int fd, uint64_t offset, uint64_t len));
void mmkv_file_set_boot_id(const uint8_t *id);
#endif

#endif
