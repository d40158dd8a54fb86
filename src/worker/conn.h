/*
 * conn.h - one client connection, as a state machine driven by the worker's loop (the states
 * and the table of what each waits for: conn_state.h).
 *
 * The loop thread owns every connection: its socket, its read buffer, its timers and 'wire',
 * the bytes being written. The app sees a request only once its head and body are complete,
 * so a slow client never holds a Python thread. The app's thread owns the request and 'stage',
 * where wsgi.c appends the response (out.h), from the app call to close(); each time the app
 * yields (a generator's block, a list past the buffer, write() past the buffer) the stage is
 * moved onto the wire, and the same thread goes on once the wire is below the buffer (SEND
 * until then). Closing is deferred: conn_close() unregisters and marks, conn_reap() frees
 * after the epoll batch, or when the request's thread lets go of it.
 */
#ifndef CORRAL_CONN_H
#define CORRAL_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "http/forwarded.h"
#include "http/http_parser.h"
#include "net/loop.h"
#include "net/sock.h"
#include "stats/scoreboard.h"
#include "worker/conn_state.h"
#include "worker/pool.h"

struct conn;

enum {
    CONN_MAX_HEADERS = 100,    /* header fields a request may carry: parser limit, array size */
    CONN_BALANCE_POLL_MS = 50, /* with the listeners out, look at the siblings this often */
    CONN_LINGER_MS = 2000,     /* reading after an error response, before closing */
};

/* What every connection of a worker shares. Owner: the loop thread. */
struct conn_ctx {
    struct loop *loop;
    const struct config *cfg;
    struct http_limits limits;
    struct conn_timeouts timeouts;
    struct forwarded_allow proxies; /* --forwarded-allow-ips: the access log's client */
    struct sb_worker *sbw;          /* this worker's scoreboard entry */
    struct scoreboard *sb;
    int sb_index;              /* this worker's index in the scoreboard */
    struct pool *pool;         /* --threads > 1: the Python threads; NULL: the loop calls */
    const struct listener *ls; /* the listeners, [nls] */
    int nls;
    bool accepting;               /* the listeners are in the loop */
    uint64_t max_requests;        /* recycle after this many requests (with jitter); 0: never */
    bool draining;                /* stopping: no new requests on kept-alive connections */
    struct conn *all;             /* every open connection (timeouts, draining) */
    struct conn *closed;          /* closed, waiting for conn_reap() */
    struct conn *spare;           /* freed connections kept for reuse */
    int count;                    /* open connections */
    int fresh;                    /* of those, accepted and not yet with a request (balance.h) */
    uint64_t spooled;             /* body bytes in temporary files, all connections (--spool-max) */
    int inline_busy;              /* threads = 1: the loop thread is in the app */
    uint64_t accept_paused_until; /* loop ms: out of descriptors, not accepting until then */
};

/* Puts the listeners in the loop (or takes them out). Returns 0 or -errno. Loop thread. */
int conn_listen(struct conn_ctx *x, bool on);
/*
 * Publishes this worker's load in the scoreboard and takes the listeners in or out of the
 * loop by the rule of balance.h. Returns true if they are out (call again soon). Loop thread,
 * after every batch.
 */
bool conn_balance(struct conn_ctx *x);
/* The pool's callbacks: a Python thread runs a request from the app call to close(). */
pool_run_cb conn_run_task;
pool_done_cb conn_task_done;
/* A process the app forks during a request exits if it returns into corral. Call once. */
void conn_watch_forks(void);
/* Once a second: timeouts, and closing idle connections while draining. */
void conn_sweep(struct conn_ctx *x);
/* After each epoll batch: frees connections closed during it. */
void conn_reap(struct conn_ctx *x);
/* Closes every connection at once (worker exit, threads = 1). */
void conn_close_all(struct conn_ctx *x);

#endif
