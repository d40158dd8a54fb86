/*
 * loop.c - epoll event loop (see loop.h for the contract).
 *
 * Level-triggered, so a callback may leave bytes unread and hear about them again next
 * iteration; that keeps one read(2) per readable event on the hot path. Callbacks are found
 * through a table indexed by fd. An fd removed by loop_del() during a batch has its slot
 * cleared, and the batch skips events for cleared slots. An eventfd lets other threads wake
 * the wait (loop_wake()).
 */
#include "net/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "util/xalloc.h"

enum { LOOP_BATCH = 256, LOOP_TICK_MS = 1000 };

struct loop_slot {
    loop_fd_cb *cb; /* NULL when the fd is not registered */
    void *arg;
    uint32_t gen; /* bumped on every add/del so stale batch entries are recognised */
};

struct loop {
    int epfd;
    int wakefd;              /* eventfd for loop_wake() */
    struct loop_slot *slots; /* indexed by fd */
    int nslots;
    bool stop;
    uint64_t now;       /* cached CLOCK_MONOTONIC ms */
    uint64_t next_tick; /* when 'tick' runs next */
    int max_wait;       /* one-shot cap on the next wait in ms, or -1 */
    loop_hook_cb *tick;
    loop_hook_cb *after;
    void *hook_arg;
};

static uint64_t clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct loop *loop_new(void)
{
    struct loop *l = xcalloc(1, sizeof(*l));
    struct epoll_event ev = {.events = EPOLLIN};

    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) goto out_free;
    l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->wakefd < 0) goto out_close_ep;
    ev.data.u64 = (uint64_t)-1;
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wakefd, &ev) < 0) goto out_close_wake;
    l->now = clock_ms();
    l->next_tick = l->now + LOOP_TICK_MS;
    l->max_wait = -1;
    return l;

out_close_wake:
    close(l->wakefd);
out_close_ep:
    close(l->epfd);
out_free:
    free(l);
    return NULL;
}

void loop_free(struct loop *l)
{
    if (!l) return;
    close(l->wakefd);
    close(l->epfd);
    free(l->slots);
    free(l);
}

static uint32_t to_epoll(unsigned events)
{
    uint32_t e = 0;
    if (events & LOOP_READABLE) e |= EPOLLIN;
    if (events & LOOP_WRITABLE) e |= EPOLLOUT;
    /* EPOLLEXCLUSIVE admits only EPOLLIN/EPOLLOUT beside it */
    if (events & LOOP_EXCLUSIVE)
        e |= EPOLLEXCLUSIVE;
    else if (events & LOOP_READABLE)
        e |= EPOLLRDHUP;
    return e;
}

static void grow_slots(struct loop *l, int fd)
{
    int n = l->nslots ? l->nslots : 64;
    while (n <= fd)
        n *= 2;
    l->slots = xrealloc(l->slots, (size_t)n * sizeof(*l->slots));
    for (int i = l->nslots; i < n; i++)
        l->slots[i] = (struct loop_slot){0};
    l->nslots = n;
}

/* epoll data: the fd in the low 32 bits, the slot generation in the high 32. */
static int ctl(struct loop *l, int op, int fd, unsigned events)
{
    struct epoll_event ev = {.events = to_epoll(events)};
    ev.data.u64 = ((uint64_t)l->slots[fd].gen << 32) | (uint32_t)fd;
    if (epoll_ctl(l->epfd, op, fd, &ev) < 0) return -errno;
    return 0;
}

int loop_add(struct loop *l, int fd, unsigned events, loop_fd_cb *cb, void *arg)
{
    int err;

    if (fd < 0) return -EBADF;
    if (fd >= l->nslots) grow_slots(l, fd);
    l->slots[fd].gen++;
    err = ctl(l, EPOLL_CTL_ADD, fd, events);
    if (err) {
        l->slots[fd].gen--; /* the existing registration (if any) keeps its generation */
        return err;
    }
    l->slots[fd].cb = cb;
    l->slots[fd].arg = arg;
    return 0;
}

int loop_mod(struct loop *l, int fd, unsigned events, loop_fd_cb *cb, void *arg)
{
    if (fd < 0 || fd >= l->nslots || !l->slots[fd].cb) return -ENOENT;
    l->slots[fd].cb = cb;
    l->slots[fd].arg = arg;
    return ctl(l, EPOLL_CTL_MOD, fd, events & ~(unsigned)LOOP_EXCLUSIVE);
}

int loop_del(struct loop *l, int fd)
{
    if (fd < 0 || fd >= l->nslots || !l->slots[fd].cb) return -ENOENT;
    l->slots[fd].cb = NULL;
    l->slots[fd].arg = NULL;
    l->slots[fd].gen++;
    if (epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL) < 0) return -errno;
    return 0;
}

void loop_set_hooks(struct loop *l, loop_hook_cb *tick, loop_hook_cb *after, void *arg)
{
    l->tick = tick;
    l->after = after;
    l->hook_arg = arg;
}

static void dispatch(struct loop *l, const struct epoll_event *ev)
{
    uint64_t v;
    int fd = (int)(uint32_t)ev->data.u64;
    uint32_t gen = (uint32_t)(ev->data.u64 >> 32);
    unsigned events = 0;

    if (ev->data.u64 == (uint64_t)-1) {
        if (read(l->wakefd, &v, sizeof(v)) < 0) {
            /* EAGAIN: already drained */
        }
        return;
    }
    if (fd >= l->nslots || !l->slots[fd].cb || l->slots[fd].gen != gen) return;
    if (ev->events & (EPOLLIN | EPOLLRDHUP)) events |= LOOP_READABLE;
    if (ev->events & EPOLLOUT) events |= LOOP_WRITABLE;
    if (ev->events & (EPOLLERR | EPOLLHUP)) events |= LOOP_ERROR | LOOP_READABLE;
    l->slots[fd].cb(l, fd, events, l->slots[fd].arg);
}

int loop_run(struct loop *l, const sigset_t *waitmask, void (*unlock)(void), void (*lock)(void))
{
    struct epoll_event evs[LOOP_BATCH];

    l->stop = false;
    while (!l->stop) {
        int timeout = (int)(l->next_tick > l->now ? l->next_tick - l->now : 0);
        int err = 0;
        if (l->max_wait >= 0 && l->max_wait < timeout) timeout = l->max_wait;
        l->max_wait = -1;
        if (unlock) unlock();
        int n = epoll_pwait(l->epfd, evs, LOOP_BATCH, timeout, waitmask);
        if (n < 0) err = errno;
        if (lock) lock();
        l->now = clock_ms();
        if (n < 0 && err != EINTR) return -err;
        for (int i = 0; i < n && !l->stop; i++)
            dispatch(l, &evs[i]);
        if (l->now >= l->next_tick) {
            l->next_tick = l->now + LOOP_TICK_MS;
            if (l->tick) l->tick(l, l->hook_arg);
        }
        if (l->after) l->after(l, l->hook_arg);
    }
    return 0;
}

void loop_wait_at_most(struct loop *l, int ms)
{
    if (l->max_wait < 0 || ms < l->max_wait) l->max_wait = ms;
}

void loop_stop(struct loop *l)
{
    l->stop = true;
}

uint64_t loop_now(const struct loop *l)
{
    return l->now;
}

void loop_wake(struct loop *l)
{
    uint64_t one = 1;
    if (write(l->wakefd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is already non-zero, so the loop wakes anyway */
    }
}
