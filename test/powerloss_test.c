/*
** Simulated power loss for a file that is its own authority (an in-memory database sharing it).
**
** A child process runs a workload of commits with a hook on every sync (ext/file.h, test builds).
** The hook keeps a "durable image" of each mmkv file: what the disk holds once that sync returns.
** At the Nth sync the child writes the image a power cut would leave (everything synced, plus a
** random choice of the pages written since: some whole, some torn, some garbage) and dies on the
** spot. The parent then opens that image as after a reboot (another boot id) and checks that it
** holds exactly one state of the workload: under sync=full the last acknowledged commit or the one
** in flight; under sync=normal and sync=off any earlier commit too (off syncs nothing, so recovery
** salvages the longest whole prefix of the log); never a mixture; and that the integrity check
** passes. Every crash point of the workload is tried, with several choices of lost pages.
**
** (A database file's commit record lives in SQLite, whose side needs a VFS that loses unsynced
** writes the same way: not done yet.)
*/
#include "engine_util.h"
#include "file.h"
#include "mmkv.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TXNS 10
#define KEYS_PER_TXN 30
#define COUNTER_KEY 999999 /* holds the number of the last transaction */
#define PAGE 4096
#define MAX_FILES 4
#define LOSS_SEEDS 6 /* choices of lost pages per crash point */

typedef struct tracked {
    ino_t ino;
    int fd; /* our own descriptor, kept to read the file at the crash */
    unsigned char *durable;
    uint64_t durable_size;
} tracked;

static tracked files[MAX_FILES];
static int n_files;
static long sync_count, crash_at;
static char crash_dir[PATH_MAX - 64];
static unsigned loss_seed;

static int read_whole(int fd, unsigned char **buf, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return 0;
    *size = (uint64_t)st.st_size;
    *buf = calloc(1, *size + 1);
    return *buf && pread(fd, *buf, *size, 0) == (ssize_t)*size;
}

/* Files by inode: a data file is written and synced under another name before it is linked into
** place, and that first sync is what makes its header durable. */
static tracked *track(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return NULL;
    for (int i = 0; i < n_files; i++)
        if (files[i].ino == st.st_ino) return &files[i];
    if (n_files == MAX_FILES) return NULL;
    tracked *t = &files[n_files++];
    t->ino = st.st_ino;
    t->fd = dup(fd);
    return t;
}

/* The name an image goes under in the crash directory, by what the file is. */
static const char *image_name(const unsigned char *content, uint64_t size)
{
    if (size >= 16 && memcmp(content, "mmkv data file", 14) == 0) return "kv.mmkv";
    if (size >= 16 && memcmp(content, "mmkv index file", 15) == 0) return "kv.mmkv-index";
    return NULL;
}

/* What the disk may hold after a power cut now: the durable image, and of each page written
** since, by chance the new page, a torn mix, garbage, or still the old one. */
static void write_crash_images(void)
{
    for (int f = 0; f < n_files; f++) {
        tracked *t = &files[f];
        unsigned char *now;
        uint64_t size;
        if (!read_whole(t->fd, &now, &size)) _exit(3);
        unsigned char *image = calloc(1, size + 1);
        memcpy(image, t->durable, t->durable_size < size ? t->durable_size : size);
        for (uint64_t at = 0; at < size; at += PAGE) {
            uint64_t n = size - at < PAGE ? size - at : PAGE;
            int changed = at + n > t->durable_size || memcmp(now + at, t->durable + at, n) != 0;
            if (!changed) continue;
            switch (rand_r(&loss_seed) % 8) {
            case 0:
            case 1:
            case 2:
            case 3:
                memcpy(image + at, now + at, n);
                break;
            case 4:
                memcpy(image + at, now + at, n / 2);
                break; /* torn */
            case 5:    /* garbage where the write was (powersafe overwrite: bytes not written keep
                       ** their value, as SQLite's own crash model assumes by default) */
                for (uint64_t i = 0; i < n; i++)
                    if (at + i >= t->durable_size || now[at + i] != t->durable[at + i])
                        image[at + i] = (unsigned char)rand_r(&loss_seed);
                break;
            default:
                break; /* lost */
            }
        }
        const char *name = image_name(now, size);
        if (!name) name = image_name(t->durable, t->durable_size);
        if (!name) continue;
        char out[PATH_MAX + 64];
        snprintf(out, sizeof out, "%s/%s", crash_dir, name);
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || write(fd, image, size) != (ssize_t)size) _exit(3);
        close(fd);
    }
}

/* Counts a moment the power may fail; at the chosen one, it does. */
static void crash_point(void)
{
    if (++sync_count == crash_at) {
        write_crash_images();
        _exit(0); /* the power is gone: nothing after this point happens */
    }
}

static void on_sync(int fd, uint64_t offset, uint64_t len)
{
    crash_point();
    tracked *t = track(fd);
    if (!t) return;
    unsigned char *now;
    uint64_t size;
    if (!read_whole(fd, &now, &size)) _exit(3);
    if (len == 0) {
        free(t->durable);
        t->durable = now;
        t->durable_size = size;
        return;
    }
    if (size > t->durable_size) {
        t->durable = realloc(t->durable, size + 1);
        memset(t->durable + t->durable_size, 0, size - t->durable_size);
        t->durable_size = size;
    }
    uint64_t end = offset + len < size ? offset + len : size;
    if (offset < end) memcpy(t->durable + offset, now + offset, end - offset);
    free(now);
}

/* Under sync=off there are hardly any syncs to fail at: the power also fails after each write. */
static int put_and_maybe_crash(mmkv_conn *c, int64_t k, int64_t v, int mode, mmkv_sync sync)
{
    static int puts;
    int rc = put_int(c, k, v, mode);
    if (sync == MMKV_SYNC_OFF && ++puts % 5 == 0) crash_point();
    return rc;
}

/* After a commit: a compaction of the whole log in a transaction of its own (copies of the live
** versions, the rest dropped), then the space below the new start given back. Nobody else reads
** the file, so every commit is safe to reclaim. */
static void compact_all(mmkv_conn *c)
{
    mmkv_commit before, after;
    if (mmkv_committed(c, &before) != MMKV_OK || mmkv_txn_begin(c) != MMKV_OK) _exit(2);
    mmkv_compact_result r;
    if (mmkv_compact_step(c, 0, 0, before.txid, &r) != MMKV_OK || commit(c) != MMKV_OK) _exit(2);
    if (mmkv_committed(c, &after) != MMKV_OK || mmkv_reclaim(c, &after, 1, NULL) != MMKV_OK) _exit(2);
}

/* The child: commits TXNS transactions, reporting each acknowledged one on fd out (compacting
** after each if asked). */
static int compacting;

static void workload(const char *path, mmkv_sync sync, int out)
{
    mmkv_file_set_sync_hook(on_sync);
    mmkv_open_options options = {.sync = sync};
    mmkv_conn *c = NULL;
    if (mmkv_open(path, &options, &c, NULL) != MMKV_OK) _exit(2);
    for (int t = 1; t <= TXNS; t++) {
        if (mmkv_txn_begin(c) != MMKV_OK) _exit(2);
        for (int i = 0; i < KEYS_PER_TXN; i++)
            put_and_maybe_crash(c, t * 1000 + i, t, MMKV_PUT_INSERT, sync);
        /* rewrite a key of the last commit */
        put_and_maybe_crash(c, (t - 1) * 1000, -t, MMKV_PUT_REPLACE, sync);
        put_and_maybe_crash(c, COUNTER_KEY, t, MMKV_PUT_REPLACE, sync);
        if (commit(c) != MMKV_OK) _exit(2);
        if (write(out, &t, sizeof t) != sizeof t) _exit(2);
        if (sync == MMKV_SYNC_OFF) crash_point();
        if (compacting) {
            compact_all(c);
            if (sync == MMKV_SYNC_OFF) crash_point();
        }
    }
    mmkv_close(c);
    int end = -1;
    long total = sync_count;
    if (write(out, &end, sizeof end) != sizeof end ||
        write(out, &total, sizeof total) != sizeof total)
        _exit(2);
    _exit(0);
}

/* Which commit the image holds, or -1 if it holds none exactly. */
static int recovered_state(const char *path, char *why, size_t why_len)
{
    mmkv_open_options options = {.sync = MMKV_SYNC_FULL};
    mmkv_conn *c = NULL;
    char *err = NULL;
    if (access(path, F_OK) != 0) return 0; /* the crash came before the file was made */
    if (mmkv_open(path, &options, &c, &err) != MMKV_OK) {
        snprintf(why, why_len, "open: %s", err ? err : "?");
        free(err);
        return -1;
    }
    int64_t k = get_int(c, COUNTER_KEY);
    int state = k < 0 ? 0 : (int)k;
    if (state > 0 && get_int(c, 0) != (state == 1 ? -1 : -1)) {
        snprintf(why, why_len, "key 0 holds %lld in state %d", (long long)get_int(c, 0), state);
        state = -1;
    }
    for (int t = 1; t <= TXNS && state >= 0; t++)
        for (int i = 0; i < KEYS_PER_TXN; i++) {
            int64_t want = t > state ? -1 : (i == 0 && t < state) ? -(t + 1) : t;
            if (get_int(c, t * 1000 + i) != want) {
                snprintf(why, why_len, "key %d holds %lld in state %d", t * 1000 + i,
                         (long long)get_int(c, t * 1000 + i), state);
                state = -1;
                break;
            }
        }
    /* Each commit adds its keys; the first also adds key 0 and the counter. */
    if (state >= 0 && count_rows(c) != state * KEYS_PER_TXN + (state > 0 ? 2 : 0)) {
        snprintf(why, why_len, "a scan finds %d rows in state %d", count_rows(c), state);
        state = -1;
    }
    if (state >= 0 && mmkv_check(c, NULL) != MMKV_OK) {
        snprintf(why, why_len, "integrity check: %s", mmkv_errmsg(c));
        state = -1;
    }
    mmkv_close(c);
    return state;
}

/* Runs the workload in a fresh directory, crashing at sync number crash_point (LONG_MAX: never).
** Returns the last acknowledged commit; *total gets the number of syncs of a full run. */
static int run_child(const char *work, mmkv_sync sync, long crash_point, unsigned seed, long *total)
{
    char cmd[2 * PATH_MAX + 32];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", work, work);
    if (system(cmd) != 0) return -1;
    int pipefd[2];
    if (pipe(pipefd) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        crash_at = crash_point;
        loss_seed = seed;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/kv.mmkv", work);
        workload(path, sync, pipefd[1]);
    }
    close(pipefd[1]);
    int acknowledged = 0, t;
    while (read(pipefd[0], &t, sizeof t) == sizeof t && t > 0)
        acknowledged = t;
    if (total && t == -1 && read(pipefd[0], total, sizeof *total) != sizeof *total) *total = 0;
    close(pipefd[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? acknowledged : -1;
}

static void test_power_loss(mmkv_sync sync, const char *name, int compact)
{
    char title[160];
    snprintf(title, sizeof title, "power loss at every sync, sync=%s%s: one whole commit survives",
             name, compact ? ", compacting after each commit" : "");
    compacting = compact;
    if (!begin_test(title)) return;
    print_seed(); /* the choices of lost pages derive from it */
    char work[PATH_MAX];
    snprintf(work, sizeof work, "%s/work-%s", test_dir, name);
    snprintf(crash_dir, sizeof crash_dir, "%s/crash-%s", test_dir, name);
    long total = 0;
    int whole_run = run_child(work, sync, LONG_MAX, 1, &total);
    CHECK(whole_run == TXNS && total > TXNS,
          "a whole run acknowledged %d of %d commits in %ld syncs", whole_run, TXNS, total);
    static const uint8_t other_boot[16] = {0x5a, 0x5a, 0x5a};
    int tried = 0;
    for (long point = 1; point <= total && !current_failed; point++) {
        /* sync=off has a crash point at every fifth write: fewer choices of lost pages each. */
        unsigned seeds = sync == MMKV_SYNC_OFF ? LOSS_SEEDS / 2 : LOSS_SEEDS;
        for (unsigned seed = 1; seed <= seeds && !current_failed; seed++) {
            char cmd[2 * PATH_MAX + 32];
            snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", crash_dir, crash_dir);
            if (system(cmd) != 0) break;
            int acknowledged =
                run_child(work, sync, point, seed_for(seed * 7919 + (unsigned)point), NULL);
            CHECK(acknowledged >= 0, "child at crash point %ld failed", point);
            char image[PATH_MAX + 16], why[512] = "";
            snprintf(image, sizeof image, "%s/kv.mmkv", crash_dir);
            mmkv_file_set_boot_id(other_boot); /* a power cut means a new boot */
            int state = recovered_state(image, why, sizeof why);
            mmkv_file_set_boot_id(NULL);
            CHECK(state >= 0, "crash point %ld, seed %u: no whole state: %s", point, seed, why);
            if (sync == MMKV_SYNC_FULL)
                CHECK(state == acknowledged || state == acknowledged + 1,
                      "crash point %ld, seed %u: state %d, acknowledged %d", point, seed, state,
                      acknowledged);
            else
                CHECK(state <= acknowledged + 1, "crash point %ld, seed %u: state %d past %d",
                      point, seed, state, acknowledged + 1);
            tried++;
        }
    }
    printf("# %s: %ld crash points, %d images recovered\n", name, total, tried);
    end_test();
}

int main(void)
{
    if (!start_tests_in_memory()) return 1;
    test_power_loss(MMKV_SYNC_FULL, "full", 0);
    test_power_loss(MMKV_SYNC_NORMAL, "normal", 0);
    test_power_loss(MMKV_SYNC_OFF, "off", 0);
    test_power_loss(MMKV_SYNC_FULL, "full", 1);
    test_power_loss(MMKV_SYNC_NORMAL, "normal", 1);
    test_power_loss(MMKV_SYNC_OFF, "off", 1);
    return finish_tests();
}
