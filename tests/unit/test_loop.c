/*
 * test_loop.c - unit tests for the epoll loop (src/net/loop.c).
 *
 * Tests count callbacks (libuv style) and never sleep. Each run of the loop is bounded: the
 * 'after' hook stops it after a given number of iterations (capping every wait with
 * loop_wait_at_most() when the test wants idle iterations to be quick), and tests that wait
 * for something arm a watchdog timerfd whose callback stops the loop, so a broken loop fails
 * the test instead of hanging it (and an alarm() in main() ends a binary that hangs anyway).
 * Only test_tick takes about a second (1.2 s).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cmocka.h>

#include "net/loop.h"

/* ---------------------------------------------------------------- fixture */

/* What a test's hooks do and what they saw; also the arg of the hooks. */
struct ctx {
    struct loop *l;
    int after;       /* 'after' hook calls (= loop iterations) */
    int stop_after;  /* the after hook stops the loop at this count (0: never) */
    int wait_ms;     /* >= 0: the after hook caps the next wait to this */
    int ticks;       /* tick hook calls */
    bool tick_stops; /* the tick hook stops the loop */
    uint64_t tick_now[4];
    int watchdog; /* watchdog timer expirations (each stops the loop) */
    int wd_fd;
};

/* One registered fd and what its callback saw. */
struct rec {
    struct ctx *c;
    int calls;
    unsigned events;   /* union of the events seen */
    unsigned last;     /* the events of the last call */
    int after_at[8];   /* the ctx's after count at each of the first calls */
    int drain_on;      /* the call on which to drain the fd (0: never) */
    int del_fd;        /* fd to loop_del() from the callback, or -1 */
    bool stop;         /* loop_stop() from the callback */
    bool del_self_err; /* loop_del() itself on LOOP_ERROR */
};

static void rec_init(struct rec *r, struct ctx *c)
{
    memset(r, 0, sizeof(*r));
    r->c = c;
    r->del_fd = -1;
}

static void tick_hook(struct loop *l, void *arg)
{
    struct ctx *c = arg;
    if (c->ticks < 4) c->tick_now[c->ticks] = loop_now(l);
    c->ticks++;
    if (c->tick_stops) loop_stop(l);
}

static void after_hook(struct loop *l, void *arg)
{
    struct ctx *c = arg;
    c->after++;
    if (c->stop_after && c->after >= c->stop_after)
        loop_stop(l); /* and no cap left over for the next loop_run() */
    else if (c->wait_ms >= 0)
        loop_wait_at_most(l, c->wait_ms);
}

static int setup(void **state)
{
    struct ctx *c = calloc(1, sizeof(*c));
    if (!c) return -1;
    c->l = loop_new();
    if (!c->l) return -1;
    c->wait_ms = -1;
    c->wd_fd = -1;
    loop_set_hooks(c->l, tick_hook, after_hook, c);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    if (c->wd_fd >= 0) close(c->wd_fd);
    loop_free(c->l);
    free(c);
    return 0;
}

/* Runs 'iterations' loop iterations, no wait longer than wait_ms (-1: no cap). */
static void run_iterations(struct ctx *c, int iterations, int wait_ms)
{
    c->stop_after = c->after + iterations;
    c->wait_ms = wait_ms;
    if (wait_ms >= 0) loop_wait_at_most(c->l, wait_ms);
    assert_int_equal(loop_run(c->l, NULL, NULL, NULL), 0);
}

static void drain(int fd)
{
    char b[65536];
    while (read(fd, b, sizeof(b)) > 0) {
    }
}

static void nonblock_pipe(int p[2])
{
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
}

/* A new pipe whose read end is fd number 'num' (which must be free). */
static void pipe_at(int num, int p[2])
{
    nonblock_pipe(p);
    if (p[0] != num) {
        assert_int_equal(dup3(p[0], num, O_CLOEXEC), num);
        close(p[0]);
        p[0] = num;
    }
}

static void put(int fd)
{
    assert_int_equal(write(fd, "x", 1), 1);
}

/* Records, drains or stops as struct rec says. */
static void rec_cb(struct loop *l, int fd, unsigned events, void *arg)
{
    struct rec *r = arg;
    if (r->calls < 8) r->after_at[r->calls] = r->c->after;
    r->calls++;
    r->events |= events;
    r->last = events;
    if (r->drain_on && r->calls == r->drain_on) drain(fd);
    if (r->del_fd >= 0) {
        assert_int_equal(loop_del(l, r->del_fd), 0);
        r->del_fd = -1;
    }
    if (r->del_self_err && (events & LOOP_ERROR)) assert_int_equal(loop_del(l, fd), 0);
    if (r->stop) loop_stop(l);
}

static void watchdog_cb(struct loop *l, int fd, unsigned events, void *arg)
{
    struct ctx *c = arg;
    uint64_t n;
    (void)events;
    if (read(fd, &n, sizeof(n)) == (ssize_t)sizeof(n)) c->watchdog += (int)n;
    loop_stop(l);
}

/* Arms a one-shot timer of 'ms' whose expiry stops the loop (and is counted). */
static void arm_watchdog(struct ctx *c, int ms)
{
    struct itimerspec its = {.it_value = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L}};
    if (c->wd_fd < 0) {
        c->wd_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        assert_true(c->wd_fd >= 0);
        assert_int_equal(loop_add(c->l, c->wd_fd, LOOP_READABLE, watchdog_cb, c), 0);
    }
    assert_int_equal(timerfd_settime(c->wd_fd, 0, &its, NULL), 0);
}

/* ---------------------------------------------------------------- tests */

static void test_new_free(void **state)
{
    (void)state;
    struct loop *l = loop_new();
    assert_non_null(l);
    assert_true(loop_now(l) > 0);
    loop_free(l);
    loop_free(NULL);

    /* a loop without hooks runs and stops from a callback */
    l = loop_new();
    assert_non_null(l);
    int p[2];
    nonblock_pipe(p);
    struct ctx c = {0};
    struct rec r;
    rec_init(&r, &c);
    r.stop = true;
    put(p[1]);
    assert_int_equal(loop_add(l, p[0], LOOP_READABLE, rec_cb, &r), 0);
    assert_int_equal(loop_run(l, NULL, NULL, NULL), 0);
    assert_int_equal(r.calls, 1);
    loop_free(l);
    close(p[0]);
    close(p[1]);
}

/* Nothing fires before data; then READABLE on every iteration until the fd is drained. */
static void test_readable_level_triggered(void **state)
{
    struct ctx *c = *state;
    struct rec r;
    int p[2];

    nonblock_pipe(p);
    rec_init(&r, c);
    r.drain_on = 3;
    assert_int_equal(loop_add(c->l, p[0], LOOP_READABLE, rec_cb, &r), 0);

    run_iterations(c, 3, 0);
    assert_int_equal(r.calls, 0);

    put(p[1]);
    run_iterations(c, 6, 0);
    assert_int_equal(r.calls, 3); /* not drained on calls 1 and 2: it fires again */
    assert_int_equal(r.events, LOOP_READABLE);
    assert_int_equal(r.after_at[0], 3); /* one call per iteration, in consecutive ones */
    assert_int_equal(r.after_at[1], 4);
    assert_int_equal(r.after_at[2], 5);

    assert_int_equal(loop_del(c->l, p[0]), 0);
    close(p[0]);
    close(p[1]);
}

/* WRITABLE while a pipe has room, not when it is full, again once drained. */
static void test_writable(void **state)
{
    struct ctx *c = *state;
    struct rec r;
    int p[2];

    nonblock_pipe(p);
    rec_init(&r, c);
    assert_int_equal(loop_add(c->l, p[1], LOOP_WRITABLE, rec_cb, &r), 0);
    run_iterations(c, 2, 0);
    assert_int_equal(r.calls, 2);
    assert_int_equal(r.events, LOOP_WRITABLE);

    char block[4096];
    memset(block, 'w', sizeof(block));
    while (write(p[1], block, sizeof(block)) > 0) {
    }
    assert_int_equal(errno, EAGAIN);
    r.calls = 0;
    run_iterations(c, 2, 0);
    assert_int_equal(r.calls, 0);

    drain(p[0]);
    run_iterations(c, 1, 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.last, LOOP_WRITABLE);

    assert_int_equal(loop_del(c->l, p[1]), 0);
    close(p[0]);
    close(p[1]);
}

/* loop_mod switches the interest, and the callback and arg with it. */
static void test_mod(void **state)
{
    struct ctx *c = *state;
    struct rec r, r2;
    int sv[2];

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    rec_init(&r, c);
    rec_init(&r2, c);
    assert_int_equal(loop_add(c->l, sv[0], LOOP_READABLE, rec_cb, &r), 0);
    run_iterations(c, 2, 0);
    assert_int_equal(r.calls, 0); /* writable, but only READABLE asked */

    assert_int_equal(loop_mod(c->l, sv[0], LOOP_WRITABLE, rec_cb, &r), 0);
    run_iterations(c, 2, 0);
    assert_int_equal(r.calls, 2);
    assert_int_equal(r.events, LOOP_WRITABLE);

    assert_int_equal(loop_mod(c->l, sv[0], LOOP_READABLE, rec_cb, &r), 0);
    r.calls = 0;
    r.events = 0;
    run_iterations(c, 2, 0);
    assert_int_equal(r.calls, 0);

    put(sv[1]);
    run_iterations(c, 1, 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.events, LOOP_READABLE);

    /* both, and a new arg: only r2 hears about it from now on */
    assert_int_equal(loop_mod(c->l, sv[0], LOOP_READABLE | LOOP_WRITABLE, rec_cb, &r2), 0);
    run_iterations(c, 1, 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r2.last, LOOP_READABLE | LOOP_WRITABLE);

    /* no events at all: registered but silent */
    assert_int_equal(loop_mod(c->l, sv[0], 0, rec_cb, &r2), 0);
    run_iterations(c, 2, 0);
    assert_int_equal(r2.calls, 1);

    assert_int_equal(loop_del(c->l, sv[0]), 0);
    close(sv[0]);
    close(sv[1]);
}

/* The peer going away gives READABLE | ERROR (EPOLLHUP), even with no data. */
static void test_hangup(void **state)
{
    struct ctx *c = *state;
    struct rec r;
    int p[2];

    nonblock_pipe(p);
    rec_init(&r, c);
    r.del_self_err = true;
    assert_int_equal(loop_add(c->l, p[0], LOOP_READABLE, rec_cb, &r), 0);
    close(p[1]);
    run_iterations(c, 3, 0);
    assert_int_equal(r.calls, 1); /* deleted itself on the first call */
    assert_int_equal(r.last, LOOP_READABLE | LOOP_ERROR);
    close(p[0]);
}

/* Two fds ready in the same batch; whichever callback runs first deletes the other. */
static void test_del_in_batch(void **state)
{
    struct ctx *c = *state;
    struct rec a, b;
    int pa[2], pb[2];

    nonblock_pipe(pa);
    nonblock_pipe(pb);
    rec_init(&a, c);
    rec_init(&b, c);
    a.del_fd = pb[0];
    b.del_fd = pa[0];
    put(pa[1]);
    put(pb[1]);
    assert_int_equal(loop_add(c->l, pa[0], LOOP_READABLE, rec_cb, &a), 0);
    assert_int_equal(loop_add(c->l, pb[0], LOOP_READABLE, rec_cb, &b), 0);

    run_iterations(c, 1, 0);
    assert_int_equal(a.calls + b.calls, 1);

    /* the survivor keeps firing (not drained), the deleted one never again */
    struct rec *alive = a.calls ? &a : &b;
    struct rec *gone = a.calls ? &b : &a;
    int alive_fd = a.calls ? pa[0] : pb[0];
    int gone_fd = a.calls ? pb[0] : pa[0];
    run_iterations(c, 3, 0);
    assert_int_equal(alive->calls, 4);
    assert_int_equal(gone->calls, 0);
    assert_int_equal(loop_del(c->l, gone_fd), -ENOENT);

    assert_int_equal(loop_del(c->l, alive_fd), 0);
    close(pa[0]);
    close(pa[1]);
    close(pb[0]);
    close(pb[1]);
}

/*
 * Generation check inside a batch: A's callback deletes and closes B's fd, puts a new, readable
 * pipe under the same number and registers it. B's stale event later in the batch must reach
 * neither B's callback nor the new one; the new registration fires from the next iteration on.
 */
struct swap {
    struct rec rec;
    struct rec *newrec;
    int victim;    /* fd number to replace */
    int newpipe_w; /* write end of the replacement */
    bool done;
};

static void swap_cb(struct loop *l, int fd, unsigned events, void *arg)
{
    struct swap *s = arg;
    int np[2];

    rec_cb(l, fd, events, &s->rec);
    if (s->done) return;
    s->done = true;
    assert_int_equal(loop_del(l, s->victim), 0);
    assert_int_equal(close(s->victim), 0);
    pipe_at(s->victim, np);
    s->newpipe_w = np[1];
    put(np[1]);
    assert_int_equal(loop_add(l, s->victim, LOOP_READABLE, rec_cb, s->newrec), 0);
}

static void test_readd_in_batch(void **state)
{
    struct ctx *c = *state;
    struct swap sa, sb;
    struct rec na, nb;
    int pa[2], pb[2];

    nonblock_pipe(pa);
    nonblock_pipe(pb);
    memset(&sa, 0, sizeof(sa));
    memset(&sb, 0, sizeof(sb));
    rec_init(&sa.rec, c);
    rec_init(&sb.rec, c);
    rec_init(&na, c);
    rec_init(&nb, c);
    sa.victim = pb[0];
    sa.newrec = &nb; /* the replacement of B's fd */
    sa.newpipe_w = -1;
    sb.victim = pa[0];
    sb.newrec = &na;
    sb.newpipe_w = -1;
    put(pa[1]);
    put(pb[1]);
    assert_int_equal(loop_add(c->l, pa[0], LOOP_READABLE, swap_cb, &sa), 0);
    assert_int_equal(loop_add(c->l, pb[0], LOOP_READABLE, swap_cb, &sb), 0);

    run_iterations(c, 1, 0);
    /* exactly one of A and B ran; nothing else, although the new fd is readable */
    assert_int_equal(sa.rec.calls + sb.rec.calls, 1);
    assert_int_equal(na.calls + nb.calls, 0);

    run_iterations(c, 1, 0);
    struct swap *first = sa.rec.calls ? &sa : &sb;
    struct swap *second = sa.rec.calls ? &sb : &sa;
    struct rec *repl = first->newrec;
    assert_int_equal(repl->calls, 1); /* the new registration, from the next iteration */
    assert_int_equal(repl->after_at[0], 1);
    assert_int_equal(second->rec.calls, 0);
    assert_int_equal(first->rec.calls, 2); /* level-triggered: still readable */

    assert_int_equal(loop_del(c->l, pa[0]), 0);
    assert_int_equal(loop_del(c->l, pb[0]), 0);
    close(first->newpipe_w);
    close(pa[0]);
    close(pa[1]);
    close(pb[0]);
    close(pb[1]);
}

/* The same fd number re-added after close gets the new callback, with or without loop_del. */
static void test_readd_after_close(void **state)
{
    struct ctx *c = *state;
    struct rec r1, r2, r3;
    int p[2], q[2];

    rec_init(&r1, c);
    rec_init(&r2, c);
    rec_init(&r3, c);
    nonblock_pipe(p);
    int num = p[0];
    put(p[1]);
    assert_int_equal(loop_add(c->l, num, LOOP_READABLE, rec_cb, &r1), 0);
    run_iterations(c, 1, 0);
    assert_int_equal(r1.calls, 1);

    /* loop_del, close, a new file under the same number */
    assert_int_equal(loop_del(c->l, num), 0);
    close(p[0]);
    close(p[1]);
    pipe_at(num, q);
    put(q[1]);
    assert_int_equal(loop_add(c->l, num, LOOP_READABLE, rec_cb, &r2), 0);
    run_iterations(c, 1, 0);
    assert_int_equal(r1.calls, 1);
    assert_int_equal(r2.calls, 1);

    /* closed without loop_del (epoll drops it by itself), then re-added */
    close(num);
    close(q[1]);
    pipe_at(num, p);
    put(p[1]);
    assert_int_equal(loop_add(c->l, num, LOOP_READABLE, rec_cb, &r3), 0);
    run_iterations(c, 1, 0);
    assert_int_equal(r1.calls, 1);
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r3.calls, 1);

    assert_int_equal(loop_del(c->l, num), 0);
    close(num);
    close(p[1]);
}

static void test_del_errors(void **state)
{
    struct ctx *c = *state;
    struct rec r;
    int p[2];

    nonblock_pipe(p);
    rec_init(&r, c);
    assert_int_equal(loop_del(c->l, p[0]), -ENOENT); /* never added */
    assert_int_equal(loop_del(c->l, -1), -ENOENT);
    assert_int_equal(loop_del(c->l, 100000), -ENOENT);
    assert_int_equal(loop_add(c->l, p[0], LOOP_READABLE, rec_cb, &r), 0);
    assert_int_equal(loop_del(c->l, p[0]), 0);
    assert_int_equal(loop_del(c->l, p[0]), -ENOENT); /* twice */
    put(p[1]);
    run_iterations(c, 2, 0);
    assert_int_equal(r.calls, 0);

    /* a closed fd cannot be added */
    int dead = p[0];
    close(p[0]);
    assert_int_equal(loop_add(c->l, dead, LOOP_READABLE, rec_cb, &r), -EBADF);
    close(p[1]);
}

/* A rejected second loop_add of a registered fd must leave the first registration working. */
static void test_add_twice(void **state)
{
    struct ctx *c = *state;
    struct rec r, other;
    int p[2];

    nonblock_pipe(p);
    rec_init(&r, c);
    rec_init(&other, c);
    assert_int_equal(loop_add(c->l, p[0], LOOP_READABLE, rec_cb, &r), 0);
    assert_int_equal(loop_add(c->l, p[0], LOOP_READABLE, rec_cb, &other), -EEXIST);
    put(p[1]);
    run_iterations(c, 2, 0);
    assert_int_equal(other.calls, 0);
    assert_int_equal(r.calls, 2);

    loop_del(c->l, p[0]);
    close(p[0]);
    close(p[1]);
}

/* fd numbers above the initial table and more ready fds than one epoll batch. */
static void test_many_fds(void **state)
{
    enum { N = 300 };
    struct ctx *c = *state;
    static struct rec recs[N];
    int fds[N];

    for (int i = 0; i < N; i++) {
        fds[i] = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC); /* readable from the start */
        assert_true(fds[i] >= 0);
        rec_init(&recs[i], c);
        recs[i].drain_on = 1;
        assert_int_equal(loop_add(c->l, fds[i], LOOP_READABLE, rec_cb, &recs[i]), 0);
    }
    /* and one high number */
    int hi = fcntl(fds[0], F_DUPFD_CLOEXEC, 5000);
    assert_true(hi >= 5000);
    struct rec rhi;
    rec_init(&rhi, c);
    assert_int_equal(loop_add(c->l, hi, LOOP_WRITABLE, rec_cb, &rhi), 0);

    run_iterations(c, 4, 0);
    for (int i = 0; i < N; i++) {
        if (recs[i].calls != 1) {
            print_error("fd %d: %d calls\n", fds[i], recs[i].calls);
            fail();
        }
    }
    assert_true(rhi.calls >= 3); /* each iteration, from the batch that reaches it */

    assert_int_equal(loop_del(c->l, hi), 0);
    close(hi);
    for (int i = 0; i < N; i++) {
        assert_int_equal(loop_del(c->l, fds[i]), 0);
        close(fds[i]);
    }
}

/* The after hook runs once per iteration, after that iteration's callbacks. */
static void test_after_hook(void **state)
{
    struct ctx *c = *state;
    struct rec a, b;
    int pa[2], pb[2];

    nonblock_pipe(pa);
    nonblock_pipe(pb);
    rec_init(&a, c);
    rec_init(&b, c);
    a.drain_on = 2;
    put(pa[1]);
    put(pb[1]);
    assert_int_equal(loop_add(c->l, pa[0], LOOP_READABLE, rec_cb, &a), 0);
    assert_int_equal(loop_add(c->l, pb[0], LOOP_READABLE, rec_cb, &b), 0);
    run_iterations(c, 4, 0);
    assert_int_equal(c->after, 4); /* also for the idle iterations */
    assert_int_equal(a.calls, 2);
    assert_int_equal(b.calls, 4);
    /* both callbacks of one batch see the same after count: the hook ran after both */
    assert_int_equal(a.after_at[0], 0);
    assert_int_equal(b.after_at[0], 0);
    assert_int_equal(a.after_at[1], 1);
    assert_int_equal(b.after_at[1], 1);
    assert_int_equal(b.after_at[3], 3);

    loop_del(c->l, pa[0]);
    loop_del(c->l, pb[0]);
    close(pa[0]);
    close(pa[1]);
    close(pb[0]);
    close(pb[1]);
}

/* The tick: once, about a second after loop_new(), for a 1.2 s run. */
static void test_tick(void **state)
{
    struct ctx *c = *state;
    uint64_t start = loop_now(c->l);

    /* a one-shot short wait first: it must not shorten the waits after it */
    loop_wait_at_most(c->l, 5);
    arm_watchdog(c, 1200);
    assert_int_equal(loop_run(c->l, NULL, NULL, NULL), 0);
    assert_int_equal(c->watchdog, 1);
    assert_int_equal(c->ticks, 1);
    assert_true(c->tick_now[0] >= start + 1000);
    /*
     * 5 ms wait, waits until the tick (a coarse clock may need a short extra one), the
     * watchdog. A sticky 5 ms cap would give about 240 iterations.
     */
    assert_true(c->after >= 3);
    assert_true(c->after <= 10);
}

/* An idle loop with a capped wait iterates quickly: many iterations before a 500 ms watchdog. */
static void test_wait_at_most(void **state)
{
    struct ctx *c = *state;

    arm_watchdog(c, 500);
    run_iterations(c, 10, 2);
    assert_int_equal(c->after, 10);
    assert_int_equal(c->watchdog, 0);
    assert_int_equal(c->ticks, 0);

    /*
     * Several calls keep the smallest (0: a poll). Keeping the first or the last would wait
     * past the watchdog.
     */
    c->wait_ms = -1;
    c->stop_after = c->after + 1;
    loop_wait_at_most(c->l, 600);
    loop_wait_at_most(c->l, 0);
    loop_wait_at_most(c->l, 700);
    assert_int_equal(loop_run(c->l, NULL, NULL, NULL), 0);
    assert_int_equal(c->after, 11);
    assert_int_equal(c->watchdog, 0);
}

/* loop_now() is cached per iteration and moves forward. */
static void test_now_advances(void **state)
{
    struct ctx *c = *state;
    uint64_t seen[5];

    for (int i = 0; i < 5; i++) {
        seen[i] = loop_now(c->l);
        run_iterations(c, 1, 20); /* each iteration waits 20 ms */
    }
    for (int i = 1; i < 5; i++)
        assert_true(seen[i] > seen[i - 1]);
    assert_true(loop_now(c->l) > seen[4]);
}

/* loop_stop() from a callback ends loop_run(); loop_run() can be called again. */
static void test_stop_from_callback(void **state)
{
    struct ctx *c = *state;
    struct rec r;
    int p[2];

    nonblock_pipe(p);
    rec_init(&r, c);
    r.stop = true;
    put(p[1]);
    assert_int_equal(loop_add(c->l, p[0], LOOP_READABLE, rec_cb, &r), 0);
    assert_int_equal(loop_run(c->l, NULL, NULL, NULL), 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(c->after, 1);
    assert_int_equal(loop_run(c->l, NULL, NULL, NULL), 0);
    assert_int_equal(r.calls, 2); /* still readable */
    assert_int_equal(c->after, 2);

    loop_del(c->l, p[0]);
    close(p[0]);
    close(p[1]);
}

/* unlock()/lock() around each wait; callbacks and hooks run "locked". */
static int n_unlock, n_lock;
static bool locked;
static bool cb_saw_unlocked;

static void test_unlock(void)
{
    if (!locked) cb_saw_unlocked = true; /* unlock twice in a row */
    locked = false;
    n_unlock++;
}

static void test_lock(void)
{
    if (locked) cb_saw_unlocked = true; /* lock twice in a row */
    locked = true;
    n_lock++;
}

static void locked_cb(struct loop *l, int fd, unsigned events, void *arg)
{
    if (!locked) cb_saw_unlocked = true;
    rec_cb(l, fd, events, arg);
}

static void locked_after(struct loop *l, void *arg)
{
    if (!locked) cb_saw_unlocked = true;
    after_hook(l, arg);
}

static void test_unlock_lock(void **state)
{
    struct ctx *c = *state;
    struct rec r;
    int p[2];

    nonblock_pipe(p);
    rec_init(&r, c);
    put(p[1]);
    n_unlock = n_lock = 0;
    locked = true;
    cb_saw_unlocked = false;
    loop_set_hooks(c->l, tick_hook, locked_after, c);
    assert_int_equal(loop_add(c->l, p[0], LOOP_READABLE, locked_cb, &r), 0);
    c->stop_after = 5;
    c->wait_ms = 0;
    loop_wait_at_most(c->l, 0);
    assert_int_equal(loop_run(c->l, NULL, test_unlock, test_lock), 0);
    assert_int_equal(c->after, 5);
    assert_int_equal(n_unlock, 5);
    assert_int_equal(n_lock, 5);
    assert_true(locked);
    assert_int_equal(r.calls, 5);
    assert_false(cb_saw_unlocked);

    loop_del(c->l, p[0]);
    close(p[0]);
    close(p[1]);
}

/* loop_wake() from another thread ends a wait that would otherwise last until the tick. */
static sem_t waiting;

static void post_waiting(void)
{
    static bool posted;
    if (!posted) sem_post(&waiting); /* the first wait is about to start */
    posted = true;
}

static void *waker(void *arg)
{
    while (sem_wait(&waiting) < 0 && errno == EINTR) {
    }
    loop_wake(arg);
    return NULL;
}

static void test_wake_from_thread(void **state)
{
    struct ctx *c = *state;
    pthread_t t;

    assert_int_equal(sem_init(&waiting, 0, 0), 0);
    arm_watchdog(c, 500);
    c->stop_after = 1;
    assert_int_equal(pthread_create(&t, NULL, waker, c->l), 0);
    assert_int_equal(loop_run(c->l, NULL, post_waiting, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    sem_destroy(&waiting);
    assert_int_equal(c->after, 1);
    assert_int_equal(c->watchdog, 0);
    assert_int_equal(c->ticks, 0);
}

/* A wake before loop_run() ends the first wait; wakes coalesce and are consumed. */
static void test_wake_before_run(void **state)
{
    struct ctx *c = *state;

    loop_wake(c->l);
    loop_wake(c->l);
    loop_wake(c->l);
    arm_watchdog(c, 100);
    c->stop_after = 1;
    assert_int_equal(loop_run(c->l, NULL, NULL, NULL), 0);
    assert_int_equal(c->after, 1);
    assert_int_equal(c->watchdog, 0);

    /* the wake is used up: the next iteration blocks until the watchdog */
    c->stop_after = 0;
    assert_int_equal(loop_run(c->l, NULL, NULL, NULL), 0);
    assert_int_equal(c->watchdog, 1);
    assert_int_equal(c->after, 2);
}

/* The wait mask: a signal blocked outside the wait is delivered inside it, ending the wait. */
static volatile sig_atomic_t sig_count, sig_in_wait;
static volatile sig_atomic_t waiting_now;

static void on_usr1(int sig)
{
    (void)sig;
    sig_count++;
    if (waiting_now) sig_in_wait++;
}

static void mark_unlock(void)
{
    waiting_now = 1;
}

static void mark_lock(void)
{
    waiting_now = 0;
}

static void test_signal_mask(void **state)
{
    struct ctx *c = *state;
    struct sigaction sa, old_sa;
    sigset_t block, old_mask, waitmask;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGUSR1, &sa, &old_sa), 0);
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    assert_int_equal(pthread_sigmask(SIG_BLOCK, &block, &old_mask), 0);
    waitmask = old_mask;
    sigdelset(&waitmask, SIGUSR1);

    sig_count = sig_in_wait = 0;
    assert_int_equal(pthread_kill(pthread_self(), SIGUSR1), 0); /* stays pending: blocked */
    assert_int_equal(sig_count, 0);

    arm_watchdog(c, 500);
    c->stop_after = 1;
    assert_int_equal(loop_run(c->l, &waitmask, mark_unlock, mark_lock), 0);
    assert_int_equal(sig_count, 1);
    assert_int_equal(sig_in_wait, 1);
    assert_int_equal(c->after, 1); /* EINTR: the loop went on to the after hook */
    assert_int_equal(c->watchdog, 0);

    assert_int_equal(pthread_sigmask(SIG_SETMASK, &old_mask, NULL), 0);
    assert_int_equal(sigaction(SIGUSR1, &old_sa, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_free),
        cmocka_unit_test_setup_teardown(test_readable_level_triggered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mod, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hangup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_del_in_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readd_in_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readd_after_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_del_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_add_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_fds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_after_hook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tick, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_at_most, setup, teardown),
        cmocka_unit_test_setup_teardown(test_now_advances, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_from_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unlock_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wake_from_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wake_before_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signal_mask, setup, teardown),
    };
    alarm(30); /* a loop that never stops kills the binary rather than hanging make test */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
