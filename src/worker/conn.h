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

struct conn;

/* What every connection of a worker shares. Owner: the loop thread. */
struct conn_ctx {
    struct loop *loop;
    const struct config *cfg;
    struct http_limits limits;
    struct sb_worker *sbw;     /* this worker's scoreboard entry */
    struct sb_slot *slot;      /* the request slot of the thread that runs the app */
    int worker_id;             /* 1-based, for logs */
    bool draining;             /* stopping: no new requests on kept-alive connections */
    struct conn *all;          /* every open connection (timeouts, draining) */
    struct conn *closed;       /* closed, waiting for conn_reap() */
    struct conn *spare;        /* freed connections kept for reuse */
    int count;                 /* open connections */
};

/* Accepts up to a few waiting connections on 'ls'. Loop thread. */
void conn_accept(struct conn_ctx *x, const struct listener *ls);
/* Once a second: timeouts, and closing idle connections while draining. */
void conn_sweep(struct conn_ctx *x);
/* After each epoll batch: frees connections closed during it. */
void conn_reap(struct conn_ctx *x);
/* Closes every connection at once (worker exit). */
void conn_close_all(struct conn_ctx *x);

#endif
