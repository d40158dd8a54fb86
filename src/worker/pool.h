/*
 * pool.h - a worker's Python threads and the hand-off between them and the loop.
 *
 * Used only with --threads > 1. The loop thread submits a task (a connection whose request is
 * complete); an idle Python thread takes it and owns it until the task is finished: the app
 * call, every later step of its response and its close() run on that one thread. When the
 * response has produced enough output, the thread yields: the task goes back to the loop
 * (done(t, POOL_YIELDED)), which writes the output, and the thread waits - without the GIL, running
 * nothing else - until the loop resumes it (pool_resume). When the task is finished the loop
 * gets done(t, POOL_FINISHED). The loop collects yields and finished tasks after each epoll batch
 * (an eventfd wakes it).
 *
 * A thread that finds more work queued keeps the GIL and goes on, so under load the GIL stays
 * with one thread instead of bouncing between threads (and cores). A sleeping thread is woken
 * only when no thread is running, or when queued work has made no progress for POOL_STALL_MS
 * (the running thread is blocked in the app: sleep, I/O, a lock), so a blocking app still gets
 * its T-way concurrency within a millisecond or two. Tasks are embedded in their owner
 * (struct conn): the pool allocates nothing per request.
 */
#ifndef CORRAL_POOL_H
#define CORRAL_POOL_H

#include <stdbool.h>

#include "net/loop.h"

struct pool;
struct pool_thread;

/* Why done() is called. */
enum pool_event {
    POOL_YIELDED,  /* the thread waits in pool_yield() for pool_resume() */
    POOL_FINISHED, /* run() returned: the task is the loop's again */
    POOL_NOTIFIED, /* pool_notify(): the thread goes on; the loop has something to do */
};

struct pool_task {
    struct pool_task *next;     /* owner: whichever queue the task is on */
    struct pool_thread *thread; /* the thread that owns it, once taken */
    enum pool_event event;      /* what done() is told */
    int resume;                 /* pool_resume()'s value; guarded by the pool's mutex */
};

/* Runs on a Python thread with the GIL held; 'thread' is 0..threads-1. */
typedef void pool_run_cb(struct pool_task *t, int thread, void *arg);
/* Runs on the loop thread for each yield, notification and finished task, in order. */
typedef void pool_done_cb(struct pool_task *t, enum pool_event event, void *arg);

/* Starts 'threads' Python threads. Returns NULL (logged) on failure. Loop thread. */
struct pool *pool_new(int threads, struct loop *l, pool_run_cb *run, pool_done_cb *done, void *arg);
/* Queues a task for the next idle Python thread. Loop thread. */
void pool_submit(struct pool *p, struct pool_task *t);
/*
 * From inside run(), on the task's thread, WITHOUT the GIL: hands the task to the loop
 * (done(t, POOL_YIELDED) runs there) and waits until the loop calls pool_resume(t, value); returns
 * that value.
 */
int pool_yield(struct pool *p, struct pool_task *t);
/* Lets the thread waiting in pool_yield(t) go on. Loop thread, after done(t, POOL_YIELDED). */
void pool_resume(struct pool *p, struct pool_task *t, int value);
/*
 * From a Python thread, without waiting: queues 'note' (a node of its own, not a submitted
 * task, and not already queued) for done(note, POOL_NOTIFIED) on the loop thread.
 */
void pool_notify(struct pool *p, struct pool_task *note);
/*
 * Calls done() for every yield, notification and finished task, and wakes another thread if queued
 * work is stalled. Returns the ms after which it should be called again even without events (-1: no
 * need). Loop thread, after every batch.
 */
int pool_collect(struct pool *p);
/* Tasks submitted and not yet finished (queued, running or yielded). Loop thread. */
int pool_inflight(const struct pool *p);

#endif
