/*
 * conn.h - one client connection, as a state machine driven by the worker's loop.
 *
 *   HEAD ─(head parsed)→ BODY ─(body spooled)→ APP ─(wsgi DONE)→ HEAD (keep-alive, pipelining)
 *                                               └─(wsgi MORE)→ RESPONSE ─(drained)→ APP/HEAD
 * The loop thread owns every connection: its socket, buffers and timers. The app sees a request
 * only once its head and body are complete, so a slow client never holds a Python thread; a
 * long response is pulled from the app only as fast as the client reads it. Closing is
 * deferred: conn_close() unregisters and marks, conn_reap() frees after the epoll batch.
 */
#ifndef CORRAL_CONN_H
#define CORRAL_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "http/http_parser.h"
#include "net/loop.h"
#include "net/sock.h"
#include "stats/scoreboard.h"
#include "worker/pool.h"

struct conn;

/* Header fields a request may carry: the parser's limit and each connection's array size. */
enum { CONN_MAX_HEADERS = 100 };

/* What every connection of a worker shares. Owner: the loop thread. */
struct conn_ctx {
    struct loop *loop;
    const struct config *cfg;
    struct http_limits limits;
    struct sb_worker *sbw; /* this worker's scoreboard entry */
    struct scoreboard *sb;
    int sb_index;              /* this worker's index in the scoreboard */
    struct pool *pool;         /* --threads > 1: the Python threads; NULL: the loop calls */
    int max_inflight;          /* with a pool: stop accepting at this many queued requests */
    const struct listener *ls; /* the listeners, [nls] */
    int nls;
    bool accepting;        /* the listeners are in the loop */
    uint64_t max_requests; /* recycle after this many requests (with jitter); 0: never */
    bool draining;         /* stopping: no new requests on kept-alive connections */
    struct conn *all;      /* every open connection (timeouts, draining) */
    struct conn *closed;   /* closed, waiting for conn_reap() */
    struct conn *spare;    /* freed connections kept for reuse */
    int count;             /* open connections */
};

/* Puts the listeners in the loop (or takes them out). Returns 0 or -errno. Loop thread. */
int conn_listen(struct conn_ctx *x, bool on);
/* The pool's callbacks (a Python thread runs a connection's app step; the loop goes on). */
pool_run_cb conn_run_task;
pool_done_cb conn_task_done;
/* Once a second: timeouts, and closing idle connections while draining. */
void conn_sweep(struct conn_ctx *x);
/* After each epoll batch: frees connections closed during it. */
void conn_reap(struct conn_ctx *x);
/* Closes every connection at once (worker exit). */
void conn_close_all(struct conn_ctx *x);

#endif
