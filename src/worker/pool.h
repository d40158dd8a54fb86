/*
 * pool.h - a worker's Python threads and the hand-off queue between them and the loop.
 *
 * Used only with --threads > 1. The loop thread submits a task (a connection whose request is
 * complete, or whose response wants more); a Python thread runs it with the GIL held and
 * queues it back; the loop collects finished tasks after each epoll batch (an eventfd wakes
 * it). A thread that finds more work queued keeps the GIL and goes on, so under load the GIL
 * stays with one thread instead of bouncing between threads (and cores). A sleeping thread
 * is woken only when no thread is running, or when queued work has made no progress for
 * POOL_STALL_MS (the running thread is blocked in the app: sleep, I/O, a lock), so a blocking
 * app still gets its T-way concurrency within a millisecond or two. Tasks are embedded in
 * their owner (struct conn): the pool allocates nothing.
 */
#ifndef CORRAL_POOL_H
#define CORRAL_POOL_H

#include "net/loop.h"

struct pool;

struct pool_task {
    struct pool_task *next; /* owner: whichever queue the task is on */
};

/* Runs on a Python thread with the GIL held; 'thread' is 0..threads-1. */
typedef void pool_run_cb(struct pool_task *t, int thread, void *arg);
/* Runs on the loop thread for each finished task, in completion order. */
typedef void pool_done_cb(struct pool_task *t, void *arg);

/* Starts 'threads' Python threads. Returns NULL (logged) on failure. Loop thread. */
struct pool *pool_new(int threads, struct loop *l, pool_run_cb *run, pool_done_cb *done, void *arg);
/* Queues a task for a Python thread. Loop thread. */
void pool_submit(struct pool *p, struct pool_task *t);
/*
 * Calls done() for every finished task, and wakes another thread if queued work is stalled.
 * Returns the ms after which it should be called again even without events (-1: no need).
 * Loop thread, after every batch.
 */
int pool_collect(struct pool *p);
/* Tasks submitted and not yet collected. Loop thread. */
int pool_inflight(const struct pool *p);

#endif
