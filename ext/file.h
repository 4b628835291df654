/*
** file.h: every call mmkv makes to the operating system's file API goes through here: opening,
** allocating, syncing, locking, and mapping. One seam, so that tests can fail or stop any step.
**
** A mapping reserves a large address range once and maps the file into it piece by piece as the
** file grows, so the base address never changes and a reader is never remapped under.
*/
#ifndef MMKV_FILE_H
#define MMKV_FILE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mmkv_map {
    int fd;
    unsigned char *base;       /* start of the reserved range */
    uint64_t reserved;         /* bytes of address space reserved */
    uint64_t mapped;           /* bytes of the file mapped (read with mmkv_map_mapped) */
    uint64_t file_size;        /* bytes the file is known to have */
    pthread_mutex_t grow_lock; /* serialises growth of the mapping within the process */
} mmkv_map;

/* Lock bytes, placed past any real file content (POSIX allows locks beyond the end). */
#define MMKV_LOCK_WRITER ((int64_t)1 << 40)     /* held by the process writing */
#define MMKV_LOCK_OPEN (((int64_t)1 << 40) + 1) /* shared by every process that has it open */

#define MMKV_OPEN_EXISTING 0   /* NOTFOUND if absent */
#define MMKV_OPEN_CREATE_NEW 1 /* BUSY if present */
#define MMKV_OPEN_ALWAYS 2     /* open, creating if absent */
#define MMKV_OPEN_READONLY 3   /* open for reading only; NOTFOUND if absent */
int mmkv_file_open(const char *path, int how, int *fd_out);
int mmkv_file_size(int fd, uint64_t *size);
int mmkv_file_read(int fd, void *buf, size_t len, uint64_t offset); /* short read: IOERR */
int mmkv_file_write(int fd, const void *buf, size_t len, uint64_t offset);
int mmkv_file_sync(int fd);                                   /* fdatasync */
int mmkv_file_sync_dir(const char *path);                     /* the directory of path */
int mmkv_file_allocate(int fd, uint64_t size);                /* FULL on ENOSPC */
int mmkv_file_discard(int fd, uint64_t offset, uint64_t len); /* punch a hole (reads 0) */

int mmkv_lock_try(int fd, int64_t byte, int exclusive); /* OK or BUSY, never waits */
/* 1 if a lock that would conflict with an exclusive one is held on byte by another descriptor
** (another process, or another open of the file): asks without taking anything. */
int mmkv_lock_held_elsewhere(int fd, int64_t byte);
int mmkv_lock_wait(int fd, int64_t byte, int exclusive);
void mmkv_unlock(int fd, int64_t byte);

int mmkv_map_init(mmkv_map *map, int fd, uint64_t reserve_bytes);
int mmkv_map_refresh(mmkv_map *map);                /* map whatever the file holds now */
int mmkv_map_truncate(mmkv_map *map);               /* empty the file; nobody else may use it */
int mmkv_map_extend(mmkv_map *map, uint64_t bytes); /* allocate the file to bytes and map it */
int mmkv_map_sync_range(mmkv_map *map, uint64_t offset, uint64_t len); /* msync, then durable */
void mmkv_map_release(mmkv_map *map);

static inline uint64_t mmkv_map_mapped(const mmkv_map *map)
{
    return __atomic_load_n(&map->mapped, __ATOMIC_ACQUIRE);
}

static inline unsigned char *mmkv_map_base(const mmkv_map *map)
{
    return __atomic_load_n(&map->base, __ATOMIC_ACQUIRE);
}

/* 1 if this process holds a classic POSIX lock on the file with that device and inode (as SQLite
** does on its database, journal and WAL files): closing any descriptor on it would drop the lock,
** so mmkv must never open such a file. 0 if not or if the system does not say. */
int mmkv_file_locked_by_process(uint64_t dev, uint64_t ino);

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
