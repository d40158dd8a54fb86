/*
 * scoreboard.h - shared memory where every worker records what each of its threads is
 * serving, so the master can say which requests died with a worker.
 *
 * The master creates the board before forking (MAP_SHARED | MAP_ANONYMOUS) and is the only one
 * who rebuilds it. A worker writes only its own slots; the master reads a worker's slots after
 * that worker has died (or to report a stuck request), so plain stores are enough for the text
 * and the counters are _Atomic. Layout is fixed: workers × threads request slots.
 */
#ifndef CORRAL_SCOREBOARD_H
#define CORRAL_SCOREBOARD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum { SB_LINE_MAX = 240 };

/* One thread's current request. */
struct sb_slot {
    _Atomic uint64_t started_ms; /* CLOCK_MONOTONIC ms when the request reached the app; 0 idle */
    _Atomic uint64_t thread;     /* the thread's Python ident (pthread_self), for harakiri */
    char line[SB_LINE_MAX];      /* "GET /path?query" (truncated), NUL-terminated */
};

/* One worker. */
struct sb_worker {
    _Atomic int pid;             /* 0 when the slot has no live worker */
    _Atomic uint64_t requests;   /* requests completed by this worker */
    _Atomic uint64_t started_ms; /* when the worker process started */
    _Atomic int ready;           /* set once the worker is accepting */
    _Atomic int recycle;         /* the worker asks to be replaced: enum sb_recycle */
    _Atomic int stopping;        /* draining: it takes no new connections */
    _Atomic int conns;           /* open connections (for siblings balancing accepts) */
    _Atomic int busy;            /* requests in the app */
    _Atomic int fresh;           /* connections accepted that have not sent a request yet */
    _Atomic uint64_t full_since; /* CLOCK_MONOTONIC ms since every thread is busy; 0: not */
};

/* Why a worker asks to be recycled. */
enum sb_recycle {
    SB_RECYCLE_NONE,
    SB_RECYCLE_MAX_REQUESTS,
    SB_RECYCLE_RSS,
    SB_RECYCLE_LIFETIME,
};

struct scoreboard;

/* Maps a board for 'workers' × 'threads'. Returns NULL with errno set. Master only. */
struct scoreboard *scoreboard_new(int workers, int threads);
void scoreboard_free(struct scoreboard *sb);
struct sb_worker *scoreboard_worker(struct scoreboard *sb, int worker);
struct sb_slot *scoreboard_slot(struct scoreboard *sb, int worker, int thread);
int scoreboard_threads(const struct scoreboard *sb);
/* Worker entries on the board (twice --processes: a reload runs two generations). */
int scoreboard_workers(const struct scoreboard *sb);

/* Records that 'slot' started serving method+target (worker side, on its own slot). */
void scoreboard_begin(struct sb_slot *slot, uint64_t now_ms, const char *method, size_t mlen,
                      const char *target, size_t tlen);
/*
 * The slot's request line into dst[0, cap), NUL-terminated, control bytes escaped (the line
 * came from the wire, and goes into log lines). For the master and the watchdog.
 */
void scoreboard_line(const struct sb_slot *slot, char *dst, size_t cap);
/* Asks the master (once) to replace this worker: sets 'recycle' and sends it SIGUSR1. */
void scoreboard_ask_recycle(struct sb_worker *w, enum sb_recycle why);

static inline void scoreboard_end(struct sb_slot *slot)
{
    atomic_store_explicit(&slot->started_ms, 0, memory_order_relaxed);
}

#endif
