/*
** The operating-system seam: files, locks and mappings. See file.h.
*/
#include "file.h"
#include "mmkv.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define MAP_GRANULE ((uint64_t)1 << 20) /* map in steps of at least 1 MiB */
#define MIN_RESERVE ((uint64_t)1 << 28) /* never reserve less than 256 MiB of address space */

static uint64_t system_page_size(void)
{
    static uint64_t page;
    if (!page) page = (uint64_t)sysconf(_SC_PAGESIZE);
    return page;
}

static uint64_t round_up(uint64_t n, uint64_t to)
{
    return (n + to - 1) / to * to;
}

static int io_error(int err)
{
    if (err == ENOSPC || err == EDQUOT || err == EFBIG) return MMKV_FULL;
    if (err == ENOMEM) return MMKV_NOMEM;
    return MMKV_IOERR;
}

int mmkv_file_open(const char *path, int how, int *fd_out)
{
    int flags = (how == MMKV_OPEN_READONLY ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    if (how == MMKV_OPEN_CREATE_NEW) flags |= O_CREAT | O_EXCL;
    if (how == MMKV_OPEN_ALWAYS) flags |= O_CREAT;
    int fd;
    do
        fd = open(path, flags, 0644);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        *fd_out = -1;
        if (errno == EEXIST) return MMKV_BUSY; /* the caller decides what an existing file means */
        if (errno == ENOENT && (how == MMKV_OPEN_EXISTING || how == MMKV_OPEN_READONLY))
            return MMKV_NOTFOUND;
        return errno == EACCES || errno == EROFS ? MMKV_READONLY : MMKV_CANTOPEN;
    }
    *fd_out = fd;
    return MMKV_OK;
}

int mmkv_file_size(int fd, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return MMKV_IOERR;
    *size = (uint64_t)st.st_size;
    return MMKV_OK;
}

int mmkv_file_read(int fd, void *buf, size_t len, uint64_t offset)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)offset);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return MMKV_IOERR;
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return MMKV_OK;
}

int mmkv_file_write(int fd, const void *buf, size_t len, uint64_t offset)
{
    const unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)offset);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return io_error(errno);
        if (n == 0) return MMKV_IOERR;
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return MMKV_OK;
}

#ifdef MMKV_FAILPOINTS
/* Test builds: a hook told of every sync before it happens, and a boot id a test can change. */
static void (*sync_hook)(int fd, uint64_t offset, uint64_t len);
static const uint8_t *boot_id_override;

void mmkv_file_set_sync_hook(void (*hook)(int fd, uint64_t offset, uint64_t len))
{
    sync_hook = hook;
}

void mmkv_file_set_boot_id(const uint8_t *id)
{
    boot_id_override = id;
}
#define BEFORE_SYNC(fd, offset, len)                                                               \
    do {                                                                                           \
        if (sync_hook) sync_hook(fd, offset, len);                                                 \
    } while (0)
#else
#define BEFORE_SYNC(fd, offset, len) ((void)0)
#endif

int mmkv_file_sync(int fd)
{
    BEFORE_SYNC(fd, 0, 0);
    int rc;
    do
        rc = fdatasync(fd);
    while (rc != 0 && errno == EINTR);
    return rc == 0 ? MMKV_OK : MMKV_IOERR;
}

int mmkv_file_sync_dir(const char *path)
{
    char *copy = strdup(path);
    if (!copy) return MMKV_NOMEM;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0) return MMKV_IOERR;
    int rc = fsync(fd) == 0 || errno == EINVAL ? MMKV_OK : MMKV_IOERR;
    close(fd);
    return rc;
}

int mmkv_file_allocate(int fd, uint64_t size)
{
    int err = posix_fallocate(fd, 0, (off_t)size);
    if (err == EINTR) err = posix_fallocate(fd, 0, (off_t)size);
    return err == 0 ? MMKV_OK : io_error(err);
}

int mmkv_file_discard(int fd, uint64_t offset, uint64_t len)
{
#ifdef FALLOC_FL_PUNCH_HOLE
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len) == 0)
        return MMKV_OK;
#else
    (void)fd, (void)offset, (void)len;
#endif
    return MMKV_IOERR;
}

/* Open file description locks belong to the descriptor, not the process, where available. */
#ifdef F_OFD_SETLK
#define LOCK_SET F_OFD_SETLK
#define LOCK_SET_WAIT F_OFD_SETLKW
#else
#define LOCK_SET F_SETLK
#define LOCK_SET_WAIT F_SETLKW
#endif

static int lock_op(int fd, int64_t byte, short type, int command)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)byte;
    fl.l_len = 1;
    int rc;
    do
        rc = fcntl(fd, command, &fl);
    while (rc != 0 && errno == EINTR && command == LOCK_SET_WAIT);
    if (rc == 0) return MMKV_OK;
    return errno == EAGAIN || errno == EACCES || errno == EINTR ? MMKV_BUSY : MMKV_IOERR;
}

int mmkv_lock_try(int fd, int64_t byte, int exclusive)
{
    return lock_op(fd, byte, exclusive ? F_WRLCK : F_RDLCK, LOCK_SET);
}

int mmkv_lock_held_elsewhere(int fd, int64_t byte)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)byte;
    fl.l_len = 1;
#ifdef F_OFD_GETLK
    int command = F_OFD_GETLK;
#else
    int command = F_GETLK;
#endif
    if (fcntl(fd, command, &fl) != 0) return 0;
    return fl.l_type != F_UNLCK;
}

int mmkv_file_locked_by_process(uint64_t dev, uint64_t ino)
{
    /* /proc/locks lines: "1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF", device numbers in
    ** hex. Open file description locks (mmkv's own) show as OFDLCK with no process. */
    FILE *f = fopen("/proc/locks", "re");
    if (!f) return 0;
    char line[256];
    long me = (long)getpid();
    int held = 0;
    unsigned maj = major((dev_t)dev), min = minor((dev_t)dev);
    while (!held && fgets(line, sizeof line, f)) {
        char kind[16];
        long pid;
        unsigned lmaj, lmin;
        unsigned long long lino;
        if (sscanf(line, "%*d: %15s %*s %*s %ld %x:%x:%llu", kind, &pid, &lmaj, &lmin, &lino) != 5)
            continue;
        held = strcmp(kind, "POSIX") == 0 && pid == me && lmaj == maj && lmin == min &&
               lino == ino;
    }
    fclose(f);
    return held;
}

int mmkv_path_identity(const char *path, uint64_t *dev, uint64_t *ino)
{
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    *dev = (uint64_t)st.st_dev;
    *ino = (uint64_t)st.st_ino;
    return 1;
}

int mmkv_same_file(const char *a, const char *b)
{
    uint64_t da, ia, db, ib;
    return mmkv_path_identity(a, &da, &ia) && mmkv_path_identity(b, &db, &ib) && da == db &&
           ia == ib;
}

int mmkv_path_locked_by_process(const char *path)
{
    uint64_t dev, ino;
    return mmkv_path_identity(path, &dev, &ino) && mmkv_file_locked_by_process(dev, ino);
}

int mmkv_lock_wait(int fd, int64_t byte, int exclusive)
{
    return lock_op(fd, byte, exclusive ? F_WRLCK : F_RDLCK, LOCK_SET_WAIT);
}

void mmkv_unlock(int fd, int64_t byte)
{
    lock_op(fd, byte, F_UNLCK, LOCK_SET);
}

int mmkv_map_init(mmkv_map *map, int fd, uint64_t reserve_bytes)
{
    memset(map, 0, sizeof *map);
    map->fd = fd;
    /* Where address space is scarce (a 32-bit process, a tool that tracks every mapping), settle
    ** for less: the file then cannot grow past what was reserved, and says so (MMKV_FULL). */
    void *base = MAP_FAILED;
    for (; base == MAP_FAILED && reserve_bytes >= MIN_RESERVE; reserve_bytes /= 4)
        base = mmap(NULL, reserve_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
                    0);
    reserve_bytes *= 4;
    if (base == MAP_FAILED) return MMKV_NOMEM;
    map->base = base;
    map->reserved = reserve_bytes;
    pthread_mutex_init(&map->grow_lock, NULL);
    return mmkv_map_refresh(map);
}

/* Maps [mapped, bytes) of the file into the reserved range; the caller holds grow_lock. */
static int map_cover(mmkv_map *map, uint64_t bytes)
{
    uint64_t have = round_up(map->mapped, system_page_size());
    if (bytes <= map->mapped) return MMKV_OK;
    if (bytes > map->reserved) return MMKV_FULL;
    uint64_t want = round_up(bytes, system_page_size());
    if (want > have) {
        void *at = mmap(map->base + have, want - have, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_FIXED, map->fd, (off_t)have);
        if (at == MAP_FAILED) return io_error(errno);
    }
    __atomic_store_n(&map->mapped, bytes, __ATOMIC_RELEASE);
    return MMKV_OK;
}

int mmkv_map_refresh(mmkv_map *map)
{
    uint64_t size;
    pthread_mutex_lock(&map->grow_lock);
    int rc = mmkv_file_size(map->fd, &size);
    if (rc == MMKV_OK) {
        if (size > map->file_size) map->file_size = size;
        if (size > map->reserved) size = map->reserved;
        rc = map_cover(map, size);
    }
    pthread_mutex_unlock(&map->grow_lock);
    return rc;
}

static int map_extend(mmkv_map *map, uint64_t bytes);

int mmkv_map_truncate(mmkv_map *map)
{
    pthread_mutex_lock(&map->grow_lock);
    int rc = ftruncate(map->fd, 0) == 0 ? MMKV_OK : io_error(errno);
    if (rc == MMKV_OK) {
        /* The pages stay mapped but hold nothing: forget them, so growth maps them anew. */
        __atomic_store_n(&map->mapped, 0, __ATOMIC_RELEASE);
        map->file_size = 0;
    }
    pthread_mutex_unlock(&map->grow_lock);
    return rc;
}

int mmkv_map_extend(mmkv_map *map, uint64_t bytes)
{
    if (bytes <= mmkv_map_mapped(map)) return MMKV_OK;
    pthread_mutex_lock(&map->grow_lock);
    int rc = map_extend(map, bytes);
    pthread_mutex_unlock(&map->grow_lock);
    return rc;
}

static int map_extend(mmkv_map *map, uint64_t bytes)
{
    if (bytes <= map->mapped) return MMKV_OK;
    if (bytes > map->reserved) return MMKV_FULL;
    if (bytes > map->file_size) {
        /* Grow ahead so that appends rarely need the file system: double, capped per step. */
        uint64_t target = map->file_size * 2;
        if (target > map->file_size + ((uint64_t)1 << 30))
            target = map->file_size + ((uint64_t)1 << 30);
        if (target < bytes) target = bytes;
        target = round_up(target, MAP_GRANULE);
        if (target > map->reserved) target = map->reserved;
        int rc = mmkv_file_allocate(map->fd, target);
        if (rc != MMKV_OK && target > bytes) {
            target = bytes; /* not enough room to grow ahead: take only what is needed */
            rc = mmkv_file_allocate(map->fd, target);
        }
        if (rc != MMKV_OK) return rc;
        map->file_size = target;
    }
    return map_cover(map, map->file_size);
}

int mmkv_map_sync_range(mmkv_map *map, uint64_t offset, uint64_t len)
{
    uint64_t page = system_page_size();
    uint64_t start = offset / page * page;
    uint64_t end = offset + len;
    if (end > map->mapped) end = map->mapped;
    if (end <= start) return MMKV_OK;
    BEFORE_SYNC(map->fd, start, end - start);
    int rc;
    do
        rc = msync(map->base + start, end - start, MS_SYNC);
    while (rc != 0 && errno == EINTR);
    return rc == 0 ? MMKV_OK : MMKV_IOERR;
}

void mmkv_map_release(mmkv_map *map)
{
    if (map->base) {
        munmap(map->base, map->reserved);
        pthread_mutex_destroy(&map->grow_lock);
    }
    map->base = NULL;
    map->mapped = 0;
}

void mmkv_boot_id(uint8_t out[16])
{
#ifdef MMKV_FAILPOINTS
    if (boot_id_override) {
        memcpy(out, boot_id_override, 16);
        return;
    }
#endif
    memset(out, 0, 16);
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (!f) return;
    char text[64];
    if (fgets(text, sizeof text, f)) {
        int n = 0;
        for (const char *p = text; *p && n < 32; p++) {
            int v;
            if (*p >= '0' && *p <= '9')
                v = *p - '0';
            else if (*p >= 'a' && *p <= 'f')
                v = *p - 'a' + 10;
            else
                continue;
            out[n / 2] = (uint8_t)(out[n / 2] << 4 | v);
            n++;
        }
    }
    fclose(f);
}
