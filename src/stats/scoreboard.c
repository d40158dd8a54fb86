/*
 * scoreboard.c - the shared-memory scoreboard (see scoreboard.h).
 */
#include "stats/scoreboard.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/log.h"
#include "util/xalloc.h"

struct scoreboard {
    int workers;
    int threads;
    size_t size;           /* bytes mapped at 'map' */
    struct sb_worker *wk;  /* [workers] */
    struct sb_slot *slots; /* [workers * threads] */
    void *map;
};

static_assert(sizeof(struct sb_slot) % 8 == 0, "sb_slot keeps 8-byte alignment");
static_assert(sizeof(struct sb_worker) % 8 == 0, "sb_worker keeps 8-byte alignment");

struct scoreboard *scoreboard_new(int workers, int threads)
{
    struct scoreboard *sb = xcalloc(1, sizeof(*sb));
    size_t wbytes = (size_t)workers * sizeof(struct sb_worker);

    sb->workers = workers;
    sb->threads = threads;
    sb->size = wbytes + (size_t)workers * (size_t)threads * sizeof(struct sb_slot);
    sb->map = mmap(NULL, sb->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sb->map == MAP_FAILED) {
        free(sb);
        return NULL;
    }
    sb->wk = sb->map;
    sb->slots = (struct sb_slot *)((char *)sb->map + wbytes);
    return sb;
}

void scoreboard_free(struct scoreboard *sb)
{
    if (!sb) return;
    munmap(sb->map, sb->size);
    free(sb);
}

struct sb_worker *scoreboard_worker(struct scoreboard *sb, int worker)
{
    return &sb->wk[worker];
}

struct sb_slot *scoreboard_slot(struct scoreboard *sb, int worker, int thread)
{
    return &sb->slots[(size_t)worker * (size_t)sb->threads + (size_t)thread];
}

int scoreboard_threads(const struct scoreboard *sb)
{
    return sb->threads;
}

int scoreboard_workers(const struct scoreboard *sb)
{
    return sb->workers;
}

void scoreboard_begin(struct sb_slot *slot, uint64_t now_ms, const char *method, size_t mlen,
                      const char *target, size_t tlen)
{
    size_t n = 0;
    if (mlen > SB_LINE_MAX / 4) mlen = SB_LINE_MAX / 4;
    memcpy(slot->line, method, mlen);
    n = mlen;
    slot->line[n++] = ' ';
    if (tlen > SB_LINE_MAX - 1 - n) tlen = SB_LINE_MAX - 1 - n;
    memcpy(slot->line + n, target, tlen);
    slot->line[n + tlen] = '\0';
    atomic_store_explicit(&slot->started_ms, now_ms ? now_ms : 1, memory_order_relaxed);
}

void scoreboard_line(const struct sb_slot *slot, char *dst, size_t cap)
{
    char line[SB_LINE_MAX];

    memcpy(line, slot->line, sizeof(line)); /* the worker may be writing it: copy first */
    line[sizeof(line) - 1] = '\0';
    log_escape(dst, cap, line, strlen(line));
}

void scoreboard_ask_recycle(struct sb_worker *w, enum sb_recycle why)
{
    int none = SB_RECYCLE_NONE;
    if (atomic_compare_exchange_strong(&w->recycle, &none, (int)why)) kill(getppid(), SIGUSR1);
}
