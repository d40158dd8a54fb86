/*
 * loop.h - the worker's event loop: one epoll instance, fd callbacks, a once-a-second tick
 * and a cached monotonic clock.
 *
 * Every epoll_* call in corral lives in loop.c. Callbacks run on the thread that called
 * loop_run(), one epoll batch at a time; after each batch the 'after' hook runs, which is where
 * deferred frees happen (a callback never frees an object a later event of the same batch may
 * still name). Only that thread may call loop functions, except loop_wake(), which any thread
 * may call. The loop knows nothing of connections, HTTP or Python.
 */
#ifndef CORRAL_LOOP_H
#define CORRAL_LOOP_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

struct loop;

enum {
    LOOP_READABLE = 1 << 0,
    LOOP_WRITABLE = 1 << 1,
    LOOP_ERROR = 1 << 2,     /* EPOLLERR or EPOLLHUP */
    LOOP_EXCLUSIVE = 1 << 3, /* EPOLLEXCLUSIVE: for listening sockets shared by workers */
};

/* Called with the events that fired (LOOP_* bits) and the arg given to loop_add(). */
typedef void loop_fd_cb(struct loop *l, int fd, unsigned events, void *arg);
/* Called once per loop iteration after a batch of events, and on every tick. */
typedef void loop_hook_cb(struct loop *l, void *arg);

/* Returns a new loop owned by the caller (free with loop_free()), or NULL with errno set. */
struct loop *loop_new(void);
void loop_free(struct loop *l);

/* Registers fd for 'events' (level-triggered). The arg is handed back to cb. 0 or -errno. */
int loop_add(struct loop *l, int fd, unsigned events, loop_fd_cb *cb, void *arg);
/* Changes the events of a registered fd (same cb and arg). 0 or -errno. */
int loop_mod(struct loop *l, int fd, unsigned events, loop_fd_cb *cb, void *arg);
/* Unregisters fd; its callback is not called again, even later in the current batch. */
int loop_del(struct loop *l, int fd);

/* 'tick' runs about once a second; 'after' runs after every batch. Either may be NULL. */
void loop_set_hooks(struct loop *l, loop_hook_cb *tick, loop_hook_cb *after, void *arg);

/*
 * Runs until loop_stop(). While waiting, 'waitmask' is the thread's signal mask
 * (epoll_pwait), so signals blocked elsewhere are delivered only inside the wait; 'unlock'
 * and 'lock' (may be NULL) are called around the wait: the worker releases the GIL there.
 * Returns 0, or -errno if epoll_pwait failed with something other than EINTR.
 */
int loop_run(struct loop *l, const sigset_t *waitmask, void (*unlock)(void), void (*lock)(void));
void loop_stop(struct loop *l);

/* The next wait lasts at most 'ms' (one-shot; the tick still runs on time). */
void loop_wait_at_most(struct loop *l, int ms);

/* Monotonic milliseconds, cached once per loop iteration (cheap to call often). */
uint64_t loop_now(const struct loop *l);

/* Makes a blocked loop_run() return from its wait; async-signal and thread safe. */
void loop_wake(struct loop *l);

#endif
