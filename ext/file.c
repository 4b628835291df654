/*
** The operating-system seam: files, locks and mappings. See file.h.
*/
#include "file.h"
#include "error.h"
#include "mmkv.h"

#include <dirent.h>
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

#define MAP_GRANULE ((uint64_t)1 << 20)    /* grow views in steps of at least 1 MiB */
#define ALLOC_GRANULE ((uint64_t)64 << 10) /* and files in steps of at least 64 KiB */
/* Grow a file ahead of need by an eighth of its size (a data file: a 32nd of its log in use, the
** grow_basis), within [256 KiB, 16 MiB] a step: appends rarely need the file system, and the space
** allocated ahead stays a small part of the whole. */
#define MAX_GROW_AHEAD ((uint64_t)16 << 20)
#define MIN_GROW_AHEAD ((uint64_t)256 << 10)

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

/* The errno of this thread's last failed call here, for messages (mmkv_os_reason). */
static _Thread_local int last_os_errno;

static int os_fail(int err)
{
    last_os_errno = err ? err : EIO;
    return io_error(last_os_errno);
}

const char *mmkv_os_reason(void)
{
    if (last_os_errno == MMKV_INJECTED_FAILURE) return "a failure injected by a test";
    return last_os_errno ? strerror(last_os_errno) : "unknown cause";
}

void mmkv_os_fail_injected(void)
{
    last_os_errno = MMKV_INJECTED_FAILURE;
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
        /* Refused for writing, it could perhaps be read; refused for reading, it cannot be used. */
        if (how != MMKV_OPEN_READONLY && (errno == EACCES || errno == EROFS)) return MMKV_READONLY;
        return MMKV_CANTOPEN;
    }
    *fd_out = fd;
    return MMKV_OK;
}

int mmkv_file_size(int fd, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return os_fail(errno);
    *size = (uint64_t)st.st_size;
    return MMKV_OK;
}

int mmkv_file_read(int fd, void *buf, size_t len, uint64_t offset)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)offset);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return os_fail(errno);
        if (n == 0) return os_fail(EIO); /* the file ended early */
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
        if (n < 0) return os_fail(errno);
        if (n == 0) return os_fail(EIO);
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
    return rc == 0 ? MMKV_OK : os_fail(errno);
}

/* Pieces a paced sync writes back one at a time before its fdatasync. */
#define SYNC_PIECE ((uint64_t)8 << 20)

static int write_back(int fd, uint64_t at, unsigned flags)
{
    int rc;
    do
        rc = sync_file_range(fd, (off_t)at, (off_t)SYNC_PIECE, flags);
    while (rc != 0 && errno == EINTR);
    return rc;
}

int mmkv_file_sync_paced(int fd, uint64_t from, uint64_t to)
{
    /* Each piece is started, then the one before it waited for: one piece is always on its way. */
    for (uint64_t at = from; at < to; at += SYNC_PIECE) {
        if (write_back(fd, at, SYNC_FILE_RANGE_WRITE) != 0) break; /* the fdatasync does it all */
        if (at > from && write_back(fd, at - SYNC_PIECE,
                             SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                 SYNC_FILE_RANGE_WAIT_AFTER) != 0)
            break;
    }
    return mmkv_file_sync(fd);
}

int mmkv_file_sync_dir(const char *path)
{
    char *copy = strdup(path);
    if (!copy) return MMKV_NOMEM;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0) return os_fail(errno);
    int rc = fsync(fd) == 0 || errno == EINVAL ? MMKV_OK : os_fail(errno);
    close(fd);
    return rc;
}

int mmkv_file_allocate(int fd, uint64_t size)
{
    int err = posix_fallocate(fd, 0, (off_t)size);
    if (err == EINTR) err = posix_fallocate(fd, 0, (off_t)size);
    if (err == 0) return MMKV_OK;
    errno = err; /* posix_fallocate returns its error: keep it where a caller looks for it */
    return os_fail(err);
}

int mmkv_file_allocate_range(int fd, uint64_t offset, uint64_t len)
{
    int err = posix_fallocate(fd, (off_t)offset, (off_t)len);
    if (err == EINTR) err = posix_fallocate(fd, (off_t)offset, (off_t)len);
    if (err == 0) return MMKV_OK;
    errno = err;
    return os_fail(err);
}

int mmkv_file_truncate(int fd, uint64_t size)
{
    return ftruncate(fd, (off_t)size) == 0 ? MMKV_OK : os_fail(errno);
}

int mmkv_file_discard(int fd, uint64_t offset, uint64_t len)
{
#ifdef FALLOC_FL_PUNCH_HOLE
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len) == 0)
        return MMKV_OK;
    return os_fail(errno);
#else
    (void)fd, (void)offset, (void)len;
    return os_fail(EOPNOTSUPP);
#endif
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

/* Whether a descriptor of this process is open on the file: without one, the process holds no
** POSIX lock on it (closing any descriptor of a file drops them all). Cheaper than /proc/locks,
** whose first read can take milliseconds. 1 where /proc/self/fd cannot be read. */
static int process_has_open(uint64_t dev, uint64_t ino)
{
    DIR *dir = opendir("/proc/self/fd");
    if (!dir) return 1;
    int found = 0;
    struct dirent *entry;
    while (!found && (entry = readdir(dir)) != NULL) {
        char *end;
        long fd = strtol(entry->d_name, &end, 10);
        struct stat st;
        if (*end || end == entry->d_name || fd == dirfd(dir) || fstat((int)fd, &st) != 0)
            continue;
        found = (uint64_t)st.st_dev == dev && (uint64_t)st.st_ino == ino;
    }
    closedir(dir);
    return found;
}

int mmkv_file_locked_by_process(uint64_t dev, uint64_t ino)
{
    if (!process_has_open(dev, ino)) return 0;
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

/* ---- mappings ---- */

/* What the last failed map call of a thread was doing, for mmkv_map_error: per thread, as errno
** is, so that a failure in one thread never describes another's. */
typedef enum map_step {
    STEP_STAT,     /* reading the file's size */
    STEP_ALLOCATE, /* allocating the file to `bytes` */
    STEP_RESERVE,  /* reserving `tried` (and then `fallback`) bytes of address space */
    STEP_MAP,      /* mapping `bytes` of the file at `offset` */
    STEP_VIEWS,    /* a new view was needed, and the map holds MMKV_MAP_MAX_VIEWS */
    STEP_READONLY, /* growing or truncating a read-only map */
    STEP_TRUNCATE
} map_step;

typedef struct map_failure {
    const mmkv_map *map; /* NULL: nothing to say */
    int rc;
    int err; /* errno of the call that failed, 0 if none */
    map_step step;
    uint64_t bytes, offset, tried, fallback;
    uint64_t reserved; /* address space the map held then, all views */
    unsigned views;
} map_failure;

static _Thread_local map_failure last_failure;

static uint64_t reserved_in_all(const mmkv_map *map)
{
    uint64_t sum = 0;
    for (unsigned i = 0; i < map->n_views; i++)
        sum += map->views[i].bytes;
    return sum;
}

/* Records a failure of a call on map (the caller holds grow_lock, or is alone), for the caller to
** add to and return ->rc. */
static map_failure *map_fail(mmkv_map *map, int rc, map_step step, int err, uint64_t bytes)
{
    map_failure *f = &last_failure;
    memset(f, 0, sizeof *f);
    f->map = map;
    f->rc = rc;
    f->err = err;
    f->step = step;
    f->bytes = bytes;
    f->reserved = reserved_in_all(map);
    f->views = map->n_views;
    return f;
}

int mmkv_map_error(const mmkv_map *map, char **errmsg, int rc, const char *what, const char *path)
{
    map_failure f = last_failure;
    last_failure.map = NULL;
    if (f.map != map || f.rc != rc) {
        /* Not a failure of this map's (the caller's rc came from elsewhere). */
        if (rc == MMKV_NOMEM) return mmkv_error(errmsg, rc, "out of memory");
        if (rc == MMKV_FULL)
            return mmkv_error(errmsg, rc, "mmkv: no space left to grow %s '%s'", what, path);
        return mmkv_error(errmsg, rc, "mmkv: I/O error on %s '%s'", what, path);
    }
    const char *reason = f.err ? strerror(f.err) : "";
    const char *sep = f.err ? ": " : "";
    unsigned long long bytes = f.bytes;
    char held[128] = ""; /* what the map holds already, if anything */
    if (f.views)
        snprintf(held, sizeof held, " (%llu bytes of address space are reserved for it in %u %s)",
                 (unsigned long long)f.reserved, f.views, f.views == 1 ? "view" : "views");
    switch (f.step) {
    case STEP_STAT:
        return mmkv_error(errmsg, rc, "mmkv: cannot read the size of %s '%s'%s%s", what, path, sep,
                          reason);
    case STEP_ALLOCATE:
        return mmkv_error(errmsg, rc, "mmkv: %s %s '%s' to %llu bytes%s%s",
                          rc == MMKV_FULL ? "no space left to grow" : "cannot grow", what, path,
                          bytes, sep, reason);
    case STEP_RESERVE:
        if (f.fallback)
            return mmkv_error(errmsg, rc,
                              "mmkv: cannot map %s '%s': reserving %llu bytes of address space "
                              "for its %llu bytes failed, and so did reserving %llu%s%s%s",
                              what, path, (unsigned long long)f.tried, bytes,
                              (unsigned long long)f.fallback, held, sep, reason);
        return mmkv_error(errmsg, rc,
                          "mmkv: cannot map %s '%s': reserving %llu bytes of address space for "
                          "its %llu bytes failed%s%s%s",
                          what, path, (unsigned long long)f.tried, bytes, held, sep, reason);
    case STEP_MAP:
        return mmkv_error(errmsg, rc,
                          "mmkv: cannot map %s '%s': mapping %llu bytes of it at offset %llu "
                          "failed%s%s%s",
                          what, path, bytes, (unsigned long long)f.offset, held, sep, reason);
    case STEP_VIEWS:
        return mmkv_error(errmsg, rc,
                          "mmkv: cannot map %s '%s': its %llu bytes need a new view, and its "
                          "mapping holds the most views it can already%s",
                          what, path, bytes, held);
    case STEP_READONLY:
        return mmkv_error(errmsg, rc,
                          "mmkv: %s '%s' is mapped read-only: it cannot grow to %llu bytes", what,
                          path, bytes);
    case STEP_TRUNCATE:
        return mmkv_error(errmsg, rc, "mmkv: cannot empty %s '%s'%s%s", what, path, sep, reason);
    }
    return rc;
}

static int map_protection(const mmkv_map *map)
{
    return map->writable ? PROT_READ | PROT_WRITE : PROT_READ;
}

/*
** Reserves a new view for a file of `bytes` and maps all of it there, then publishes the view: the
** base before `mapped`, so that a reader who sees the larger `mapped` sees this base or a later
** one, and every offset below what it saw lies inside. The older views stay as they are. The
** caller holds grow_lock (or is alone, in mmkv_map_init).
*/
static int map_new_view(mmkv_map *map, uint64_t bytes)
{
    if (map->n_views == MMKV_MAP_MAX_VIEWS)
        return map_fail(map, MMKV_IOERR, STEP_VIEWS, 0, bytes)->rc;
    uint64_t size =
        bytes > map->min_reserve / MMKV_MAP_GROWTH ? bytes * MMKV_MAP_GROWTH : map->min_reserve;
    size = round_up(size, MAP_GRANULE);
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    void *base = mmap(NULL, size, PROT_NONE, flags, -1, 0);
    uint64_t tried = size, fallback = 0;
    int err = errno;
    if (base == MAP_FAILED && bytes > 0 && round_up(bytes, MAP_GRANULE) < size) {
        /* Address space is short (a 32-bit process, RLIMIT_AS): settle for what the file needs
        ** now; its next growth then needs another view. */
        size = fallback = round_up(bytes, MAP_GRANULE);
        base = mmap(NULL, size, PROT_NONE, flags, -1, 0);
        err = errno;
    }
    if (base == MAP_FAILED) {
        map_failure *f = map_fail(map, MMKV_IOERR, STEP_RESERVE, err, bytes);
        f->tried = tried;
        f->fallback = fallback;
        return f->rc;
    }
    uint64_t length = round_up(bytes, system_page_size());
    if (length > 0 &&
        mmap(base, length, map_protection(map), MAP_SHARED | MAP_FIXED, map->fd, 0) == MAP_FAILED) {
        err = errno;
        munmap(base, size);
        return map_fail(map, MMKV_IOERR, STEP_MAP, err, length)->rc;
    }
    map->views[map->n_views].base = base;
    map->views[map->n_views].bytes = size;
    __atomic_store_n(&map->n_views, map->n_views + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&map->base, (unsigned char *)base, __ATOMIC_RELEASE);
    map->reserved = size;
    __atomic_store_n(&map->mapped, bytes, __ATOMIC_RELEASE);
    return MMKV_OK;
}

int mmkv_map_init(mmkv_map *map, int fd, uint64_t min_reserve_bytes, int writable)
{
    memset(map, 0, sizeof *map);
    map->fd = fd;
    map->writable = writable;
    map->min_reserve = min_reserve_bytes;
    uint64_t size;
    if (mmkv_file_size(fd, &size) != MMKV_OK)
        return map_fail(map, MMKV_IOERR, STEP_STAT, errno, 0)->rc;
    /* Even an empty file gets its view: the base never reads NULL once the map is made. */
    int rc = map_new_view(map, size);
    if (rc != MMKV_OK) return rc;
    map->file_size = size;
    pthread_mutex_init(&map->grow_lock, NULL);
    return MMKV_OK;
}

/* Maps [mapped, bytes) of the file: into the newest view while it has room, else into a new one.
** The caller holds grow_lock. */
static int map_cover(mmkv_map *map, uint64_t bytes)
{
    if (bytes <= map->mapped) return MMKV_OK;
    if (bytes > map->reserved) return map_new_view(map, bytes);
    uint64_t have = round_up(map->mapped, system_page_size());
    uint64_t want = round_up(bytes, system_page_size());
    if (want > have) {
        void *at = mmap(map->base + have, want - have, map_protection(map), MAP_SHARED | MAP_FIXED,
                        map->fd, (off_t)have);
        if (at == MAP_FAILED) {
            map_failure *f = map_fail(map, MMKV_IOERR, STEP_MAP, errno, want - have);
            f->offset = have;
            return f->rc;
        }
    }
    __atomic_store_n(&map->mapped, bytes, __ATOMIC_RELEASE);
    return MMKV_OK;
}

int mmkv_map_refresh(mmkv_map *map)
{
    uint64_t size;
    pthread_mutex_lock(&map->grow_lock);
    int rc = mmkv_file_size(map->fd, &size);
    if (rc != MMKV_OK) {
        rc = map_fail(map, rc, STEP_STAT, errno, 0)->rc;
    } else {
        if (size > map->file_size) map->file_size = size;
        rc = map_cover(map, size);
    }
    pthread_mutex_unlock(&map->grow_lock);
    return rc;
}

static int map_extend(mmkv_map *map, uint64_t bytes);

int mmkv_map_truncate(mmkv_map *map)
{
    pthread_mutex_lock(&map->grow_lock);
    int rc = MMKV_OK;
    if (!map->writable)
        rc = map_fail(map, MMKV_READONLY, STEP_READONLY, 0, 0)->rc;
    else if (ftruncate(map->fd, 0) != 0)
        rc = map_fail(map, io_error(errno), STEP_TRUNCATE, errno, 0)->rc;
    if (rc == MMKV_OK) {
        /* The pages stay mapped but hold nothing: forget them, so growth maps them anew. The
        ** newest view is kept; nobody else uses the map, so the older ones are never read. */
        __atomic_store_n(&map->mapped, 0, __ATOMIC_RELEASE);
        map->file_size = 0;
    }
    pthread_mutex_unlock(&map->grow_lock);
    return rc;
}

int mmkv_map_give_back(mmkv_map *map, uint64_t keep)
{
    keep = round_up(keep, ALLOC_GRANULE);
    pthread_mutex_lock(&map->grow_lock);
    int rc = MMKV_OK;
    if (map->writable && keep < map->file_size &&
        (rc = mmkv_file_discard(map->fd, keep, map->file_size - keep)) == MMKV_OK) {
        /* Past keep is a hole now: the next growth allocates it again before anything is written
        ** there (and maps it anew, which a view allows). */
        map->file_size = keep;
        if (map->mapped > keep) __atomic_store_n(&map->mapped, keep, __ATOMIC_RELEASE);
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
    if (!map->writable) return map_fail(map, MMKV_READONLY, STEP_READONLY, 0, bytes)->rc;
    if (bytes > map->file_size) {
        /* Grow ahead so that appends rarely need the file system (MAX_GROW_AHEAD), within the
        ** newest view while the bytes needed fit there. Only the new part is allocated: what lies
        ** below may be holes given back on purpose (compaction, format.h START). */
        uint64_t ahead = map->grow_basis ? map->grow_basis / 32 : map->file_size / 8;
        if (ahead < MIN_GROW_AHEAD) ahead = MIN_GROW_AHEAD;
        if (ahead > MAX_GROW_AHEAD) ahead = MAX_GROW_AHEAD;
        uint64_t target = map->file_size + ahead;
        if (target < bytes) target = bytes;
        target = round_up(target, ALLOC_GRANULE);
        if (bytes <= map->reserved && target > map->reserved) target = map->reserved;
        if (target < bytes) target = bytes;
        uint64_t from = map->file_size;
        int rc = mmkv_file_allocate_range(map->fd, from, target - from);
        int err = rc == MMKV_OK ? 0 : errno;
        if (rc != MMKV_OK && target > bytes) {
            target = bytes; /* not enough room to grow ahead: take only what is needed */
            rc = mmkv_file_allocate_range(map->fd, from, target - from);
            err = rc == MMKV_OK ? 0 : errno;
        }
        if (rc != MMKV_OK) return map_fail(map, rc, STEP_ALLOCATE, err, target)->rc;
        map->file_size = target;
    }
    return map_cover(map, map->file_size);
}

int mmkv_map_sync_range(mmkv_map *map, uint64_t offset, uint64_t len)
{
    uint64_t page = system_page_size();
    uint64_t start = offset / page * page;
    uint64_t end = offset + len;
    uint64_t mapped = mmkv_map_mapped(map);
    if (end > mapped) end = mapped;
    if (end <= start) return MMKV_OK;
    BEFORE_SYNC(map->fd, start, end - start);
    /* The newest view maps the whole file: one msync there writes back the file's pages, however
    ** they were dirtied (every view shares them). */
    unsigned char *base = mmkv_map_base(map);
    int rc;
    do
        rc = msync(base + start, end - start, MS_SYNC);
    while (rc != 0 && errno == EINTR);
    return rc == 0 ? MMKV_OK : os_fail(errno);
}

void mmkv_map_drop_pages(mmkv_map *map, uint64_t from, uint64_t to)
{
    uint64_t page = system_page_size();
    uint64_t mapped = mmkv_map_mapped(map);
    from = round_up(from, page);
    to = (to < mapped ? to : mapped) / page * page;
    /* On a shared file mapping this only unmaps: dirty pages stay dirty in the page cache. */
    if (to > from) madvise(mmkv_map_base(map) + from, to - from, MADV_DONTNEED);
}

void mmkv_map_release(mmkv_map *map)
{
    if (last_failure.map == map) last_failure.map = NULL; /* a later map may take its place */
    if (map->n_views) {
        for (unsigned i = 0; i < map->n_views; i++)
            munmap(map->views[i].base, map->views[i].bytes);
        pthread_mutex_destroy(&map->grow_lock);
    }
    map->n_views = 0;
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
