/*
 * pool.c - Python threads and their hand-off queues (see pool.h).
 *
 * Two singly linked queues under one mutex: 'todo' (loop -> threads, FIFO: new requests only)
 * and 'done' (threads -> loop: yields and finished tasks). A yielded task's thread waits on its
 * own condition variable, so the loop's pool_resume() wakes exactly the thread that owns the
 * request. The loop is woken through loop_wake() only when 'done' goes from empty to
 * non-empty, and an idle thread is signalled only when needed, so a busy pool costs no
 * syscalls per request beyond the GIL itself.
 */
#include "worker/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "python/py.h"
#include "util/log.h"
#include "util/xalloc.h"

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* signalled when 'todo' gains a task and a thread idles */
    struct pool_task *todo_head; /* guarded by mu */
    struct pool_task *todo_tail;
    struct pool_task *done_head; /* guarded by mu; pushed in completion order */
    struct pool_task *done_tail;
    _Atomic bool has_done;  /* a hint for the loop, read without the mutex */
    int waiting;            /* threads asleep on cv, not yet woken; guarded by mu */
    int running;            /* threads awake (or woken); guarded by mu */
    int wakeups;            /* wake tokens not yet taken by a sleeper; guarded by mu */
    uint64_t stalled_since; /* ms when queued work last made progress; guarded by mu */
    int inflight;           /* owner: loop */
    struct loop *loop;
    pool_run_cb *run;
    pool_done_cb *done;
    void *arg;
};

enum { POOL_STALL_MS = 1 };

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct pool_thread {
    struct pool *p;
    int index;
    pthread_cond_t resumed; /* signalled by pool_resume() for the task this thread yielded */
};

enum { POOL_NOT_RESUMED = -1000 };

/* Takes the oldest task; taking one is progress. Called with mu held. */
static struct pool_task *pop_todo(struct pool *p)
{
    struct pool_task *t = p->todo_head;
    if (!t) return NULL;
    p->todo_head = t->next;
    if (!p->todo_head) p->todo_tail = NULL;
    p->stalled_since = p->todo_head ? now_ms() : 0;
    return t;
}

/* Wakes one sleeping thread. Called with mu held. */
static void wake_one(struct pool *p)
{
    p->waiting--;
    p->running++;
    p->wakeups++;
    pthread_cond_signal(&p->cv);
}

/* Waits for a task without the GIL: the one place a pool thread lets go of it. */
static struct pool_task *wait_task(struct pool *p)
{
    struct pool_task *t;

    py_release_gil();
    pthread_mutex_lock(&p->mu);
    for (;;) {
        t = pop_todo(p);
        if (t) break;
        p->running--;
        p->waiting++;
        while (p->wakeups == 0)
            pthread_cond_wait(&p->cv, &p->mu);
        p->wakeups--; /* wake_one() moved us from waiting to running */
    }
    pthread_mutex_unlock(&p->mu);
    py_acquire_gil();
    return t;
}

/* Queues t for the loop. Called with mu held; returns true if the loop must be woken. */
static bool push_done(struct pool *p, struct pool_task *t)
{
    bool was_empty = !p->done_head;

    t->next = NULL;
    if (p->done_tail)
        p->done_tail->next = t;
    else
        p->done_head = t;
    p->done_tail = t;
    atomic_store_explicit(&p->has_done, true, memory_order_release);
    return was_empty;
}

static void finish(struct pool *p, struct pool_task *t)
{
    bool wake;

    pthread_mutex_lock(&p->mu);
    t->event = POOL_FINISHED;
    wake = push_done(p, t);
    pthread_mutex_unlock(&p->mu);
    if (wake) loop_wake(p->loop);
}

int pool_yield(struct pool *p, struct pool_task *t)
{
    bool wake;
    int v;

    pthread_mutex_lock(&p->mu);
    t->resume = POOL_NOT_RESUMED;
    t->event = POOL_YIELDED;
    wake = push_done(p, t);
    /* this thread stops running Python: queued work may need another one */
    p->running--;
    if (p->running == 0 && p->todo_head && p->waiting > 0) wake_one(p);
    pthread_mutex_unlock(&p->mu);
    if (wake) loop_wake(p->loop);
    pthread_mutex_lock(&p->mu);
    while (t->resume == POOL_NOT_RESUMED)
        pthread_cond_wait(&t->thread->resumed, &p->mu);
    v = t->resume;
    p->running++;
    pthread_mutex_unlock(&p->mu);
    return v;
}

void pool_notify(struct pool *p, struct pool_task *note)
{
    bool wake;

    pthread_mutex_lock(&p->mu);
    note->event = POOL_NOTIFIED;
    wake = push_done(p, note);
    pthread_mutex_unlock(&p->mu);
    if (wake) loop_wake(p->loop);
}

void pool_resume(struct pool *p, struct pool_task *t, int value)
{
    pthread_mutex_lock(&p->mu);
    t->resume = value;
    pthread_cond_signal(&t->thread->resumed);
    pthread_mutex_unlock(&p->mu);
}

static void *thread_main(void *arg)
{
    struct pool_thread *pt = arg;
    struct pool *p = pt->p;

    py_thread_attach();
    for (;;) {
        pthread_mutex_lock(&p->mu);
        struct pool_task *t = pop_todo(p);
        pthread_mutex_unlock(&p->mu);
        if (!t) t = wait_task(p);
        t->thread = pt;
        p->run(t, pt->index, p->arg);
        finish(p, t);
    }
    return NULL;
}

struct pool *pool_new(int threads, struct loop *l, pool_run_cb *run, pool_done_cb *done, void *arg)
{
    struct pool *p = xcalloc(1, sizeof(*p));
    pthread_attr_t attr;

    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->running = threads; /* each goes to sleep by itself when it finds no work */
    p->loop = l;
    p->run = run;
    p->done = done;
    p->arg = arg;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < threads; i++) {
        struct pool_thread *pt = xmalloc(sizeof(*pt));
        pthread_t tid;
        pt->p = p;
        pt->index = i;
        pthread_cond_init(&pt->resumed, NULL);
        int err = pthread_create(&tid, &attr, thread_main, pt);
        if (err) {
            log_error("cannot start Python thread %d: %s", i + 1, strerror(err));
            return NULL; /* the worker exits; threads already started die with it */
        }
    }
    pthread_attr_destroy(&attr);
    return p;
}

void pool_submit(struct pool *p, struct pool_task *t)
{
    t->next = NULL;
    p->inflight++;
    pthread_mutex_lock(&p->mu);
    if (p->todo_tail)
        p->todo_tail->next = t;
    else
        p->todo_head = t;
    p->todo_tail = t;
    if (p->running == 0 && p->waiting > 0)
        wake_one(p);
    else if (!p->stalled_since)
        p->stalled_since = now_ms();
    pthread_mutex_unlock(&p->mu);
}

/* Queued work that made no progress for POOL_STALL_MS gets another thread. */
static int unstall(struct pool *p)
{
    int again = -1;

    if (p->inflight == 0) return -1;
    pthread_mutex_lock(&p->mu);
    if (p->todo_head && p->waiting > 0) {
        uint64_t now = now_ms();
        if (now - p->stalled_since >= POOL_STALL_MS) {
            wake_one(p);
            p->stalled_since = now;
        }
        again = POOL_STALL_MS;
    }
    pthread_mutex_unlock(&p->mu);
    return again;
}

int pool_collect(struct pool *p)
{
    struct pool_task *t;

    if (!atomic_load_explicit(&p->has_done, memory_order_acquire)) return unstall(p);
    pthread_mutex_lock(&p->mu);
    t = p->done_head;
    p->done_head = p->done_tail = NULL;
    atomic_store_explicit(&p->has_done, false, memory_order_relaxed);
    pthread_mutex_unlock(&p->mu);
    while (t) {
        struct pool_task *next = t->next;
        enum pool_event ev = t->event; /* read before done(), which may submit it again */
        if (ev == POOL_FINISHED) p->inflight--;
        p->done(t, ev, p->arg);
        t = next;
    }
    return unstall(p);
}

int pool_inflight(const struct pool *p)
{
    return p->inflight;
}
