/*
 * conn_state.h - the states of a connection and what each one waits for: the table that
 * conn_enter() (conn.c) applies, as a pure function a unit test can call.
 *
 *                 +---------------- keep-alive: the next (pipelined) request ------------------+
 *                 v                                                                            |
 *   accept --> HEAD --(head parsed)--> BODY --(body complete)--> APP --(response done)---------+
 *               |  \                    |                         |  ^           \
 *               |   (400/408/413/...)   | (408/413/400)           |  | (drained:  (client gone,
 *               |          v            v                  (output|  |  same      write error)
 *               |        error response, then LINGER       above  |  |  thread      |
 *               |          (shutdown, read until EOF)      limit) v  |  goes on)    v
 *               |                       |                        SEND             CLOSED
 *               +--(idle, EOF, error)---+--------------------------------------->  (freed once no
 *                                                                                  thread has it)
 *
 * HEAD   waiting for a request head (idle keep-alive when nothing is buffered); also writing
 *        the previous response, if it is not all written yet (then it does not read).
 * BODY   reading the body into the spool; the app sees nothing yet.
 * APP    the app has the request: a Python thread of the pool (queued for one, running, or
 *        waiting in the hand-off), or the loop thread itself (threads = 1). The loop meanwhile
 *        writes what the app produced so far and reads ahead.
 * SEND   the response holds more than --response-buffer unsent bytes (or a block or file the
 *        app still owns): the loop writes it; the app's thread waits, running nothing else,
 *        and goes on in APP once the output is below half the buffer.
 * LINGER an error response was sent and the write side shut: input is read and dropped
 *        until EOF, so the client sees the response, not a reset.
 */
#ifndef CORRAL_CONN_STATE_H
#define CORRAL_CONN_STATE_H

#include <stdbool.h>
#include <stdint.h>

enum conn_state {
    CONN_HEAD,
    CONN_BODY,
    CONN_APP,
    CONN_SEND,
    CONN_LINGER,
    CONN_STATES, /* count */
};

/* What the state's interest and deadline depend on, besides the state. */
struct conn_facts {
    bool output;      /* response bytes wait to be written */
    bool input;       /* part of a request is buffered */
    bool served;      /* the connection has served a request: idle means keep-alive */
    bool read_closed; /* APP: the client closed, or the read buffer is full: stop reading */
};

/* The timeouts, in ms (from the config). Each is an inactivity timeout: conn.c enters the
 * state again on progress, which restarts it (a request head's is the exception: it runs from
 * the head's first byte). */
struct conn_timeouts {
    uint32_t request_ms;   /* --http-timeout: a head, a body, a client taking a response */
    uint32_t keepalive_ms; /* --http-keepalive-timeout: idle between requests */
    uint32_t linger_ms;    /* draining input after an error response */
};

struct conn_plan {
    unsigned interest;   /* LOOP_READABLE | LOOP_WRITABLE, or 0 */
    uint32_t timeout_ms; /* 0: none (the app has the request: harakiri's business) */
};

struct conn_plan conn_plan(enum conn_state s, const struct conn_facts *f,
                           const struct conn_timeouts *t);
const char *conn_state_name(enum conn_state s);

#endif
