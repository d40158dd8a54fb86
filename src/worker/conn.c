/*
 * conn.c - the connection state machine (see conn.h and conn_state.h).
 *
 * Read buffer layout: rbuf[0, rlen) holds the bytes read. The current request's head starts
 * at 0 and is head_len long; body bytes after it are moved into the spool as they arrive
 * (or, when the whole body came with the head, used in place). When the request ends, the
 * bytes past it (a pipelined request) move to the front.
 *
 * Every state change goes through conn_enter(), which sets the state, its deadline and the
 * events it wants from the table in conn_state.c; the loop registration follows once per
 * event (commit()), so a request served at once costs no epoll_ctl at all. Handlers decide
 * the next state; no handler calls another state's handler.
 */
#include "worker/conn.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http/http_response.h"
#include "net/out.h"
#include "python/py.h"
#include "python/wsgi.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/spool.h"
#include "util/xalloc.h"
#include "uwsgi/uwsgi_request.h"
#include "worker/balance.h"

enum {
    CONN_READ_ROOM = 16384, /* read-buffer space beyond the head limit, for body bytes */
    CONN_MAX_VARS = 256,
    CONN_OUT_HIGH = 65536,       /* stop parsing pipelined requests above this much unsent */
    CONN_FRESH_MS = 1000,        /* a new connection counts as load this long without a request */
    CONN_ACCEPT_BATCH = 16,      /* accepts per wake-up, at most */
    CONN_ACCEPT_PAUSE_MS = 100,  /* no accepting for this long when out of descriptors */
    CONN_BODY_STEP = 65536,      /* a body read straight into memory grows by this at least */
    CONN_SPARE_OUT = 256 * 1024, /* a kept connection's output buffers above this are freed */
};

/* What the app's thread is told when it comes back from the hand-off (pool_yield). */
enum { APP_GO_ON = 0, APP_ABORT = -1 };

/* The steps of a request in the app, all on one thread (wsgi.h). */
enum app_step { STEP_CALL, STEP_RESUME, STEP_ABORT };

struct conn {
    int fd;
    struct conn_ctx *x;
    const struct listener *ls;
    enum conn_state state;
    unsigned want;     /* the events the state wants (conn_enter) */
    unsigned interest; /* the events registered in the loop (0: not registered) */
    uint64_t deadline; /* loop ms when the current wait times out; 0 = none */
    bool keep_alive;   /* the connection may serve another request */
    bool closing;      /* close once 'wire' is written (Connection: close, or an error) */
    bool linger;       /* ... after reading the client's input until EOF (an error) */
    bool served;       /* it has served a request: idle means keep-alive */
    bool fresh;        /* accepted, no request yet (counted in x->fresh) */
    bool peer_gone;    /* APP: EOF or an error seen while the app had the request */
    bool on_thread;    /* a Python thread owns the request: queued, running or yielded */
    bool responding;   /* between dispatch and the end of the response's production */
    uint64_t accepted_ms;

    char *rbuf; /* read buffer: cap = head limit + CONN_READ_ROOM */
    size_t rcap;
    size_t rlen;     /* bytes in rbuf */
    size_t head_len; /* the current request's head, once parsed */
    size_t pos;      /* end of what the current request has consumed */

    struct request req;          /* views into rbuf */
    struct http_header *headers; /* [CONN_MAX_HEADERS] for HTTP listeners */
    struct uwsgi_var *vars;      /* [CONN_MAX_VARS] for uwsgi listeners */
    struct spool body;
    uint64_t body_left; /* Content-Length bytes still to come */
    struct http_chunked dec;

    struct out wire;  /* being written; owner: the loop (wire_mu while a thread has the request) */
    struct out stage; /* being produced; owner: the request's thread while in APP */
    pthread_mutex_t wire_mu; /* with a pool: the thread passes output onto the wire under it */
    struct pool_task note;   /* that thread's "the wire has more" to the loop (pool_notify) */
    bool note_queued;        /* 'note' is on its way to the loop; guarded by wire_mu */
    struct wsgi_call call;
    struct pool_task task;  /* with a pool: this request's hand-off */
    enum wsgi_result final; /* what the app's last step said (set by its thread) */

    uint64_t started_us;      /* when the request reached the app, for the access log */
    uint64_t sent;            /* bytes written since the request reached the app */
    char what[128];           /* "GET /path" of that request, for a cut response's log line */
    char addr[64];            /* REMOTE_ADDR */
    char port[8];             /* REMOTE_PORT */
    struct conn *prev, *next; /* x->all, or x->closed / x->spare via next */
};

static void on_event(struct loop *l, int fd, unsigned events, void *arg);
static void service(struct conn *c);
static void conn_close(struct conn *c, const char *why);

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* --- the one transition function ---------------------------------------------------------- */

/* While a pool thread has the request it may pass output onto the wire (pass_on()): the loop
 * holds wire_mu whenever it looks at the wire then. */
static void lock_wire(struct conn *c)
{
    if (c->on_thread) pthread_mutex_lock(&c->wire_mu);
}

static void unlock_wire(struct conn *c)
{
    if (c->on_thread) pthread_mutex_unlock(&c->wire_mu);
}

/* Sets the state, its deadline (from now) and the events it wants. The only writer of state. */
static void conn_enter(struct conn *c, enum conn_state s)
{
    struct conn_facts f = {
        .input = c->rlen > 0,
        .served = c->served,
        .read_closed = c->peer_gone || c->rlen == c->rcap,
    };
    struct conn_plan p;

    lock_wire(c);
    f.output = out_pending(&c->wire) > 0;
    unlock_wire(c);
    p = conn_plan(s, &f, &c->x->timeouts);

    c->state = s;
    c->want = p.interest;
    c->deadline = p.timeout_ms ? loop_now(c->x->loop) + p.timeout_ms : 0;
}

/* Makes the loop registration match what the state wants. Once per event, at its end. */
static void commit(struct conn *c)
{
    struct loop *l = c->x->loop;
    int err = 0;

    if (c->fd < 0 || c->want == c->interest) return;
    if (c->want == 0)
        err = loop_del(l, c->fd);
    else if (c->interest == 0)
        err = loop_add(l, c->fd, c->want, on_event, c);
    else
        err = loop_mod(l, c->fd, c->want, on_event, c);
    if (err) {
        log_error("cannot watch a connection: %s", strerror(-err));
        conn_close(c, "cannot watch the connection");
        return;
    }
    c->interest = c->want;
}

/* --- life cycle ------------------------------------------------------------------------- */

static struct conn *conn_get(struct conn_ctx *x, const struct listener *ls)
{
    struct conn *c = x->spare;
    size_t rcap = (size_t)x->cfg->buffer_size + CONN_READ_ROOM;

    if (c && c->ls->proto == ls->proto) {
        x->spare = c->next;
    } else {
        c = xcalloc(1, sizeof(*c));
        c->rcap = rcap;
        c->rbuf = xmalloc(rcap);
        if (ls->proto == SOCK_PROTO_UWSGI)
            c->vars = xcalloc(CONN_MAX_VARS, sizeof(*c->vars));
        else
            c->headers = xcalloc(CONN_MAX_HEADERS, sizeof(*c->headers));
        out_init(&c->wire);
        out_init(&c->stage);
        pthread_mutex_init(&c->wire_mu, NULL);
        spool_init(&c->body, (uint64_t)x->cfg->post_buffering);
        c->body.dir = x->cfg->spool_dir;
    }
    c->x = x;
    c->ls = ls;
    c->interest = c->want = 0;
    c->keep_alive = true;
    c->closing = c->linger = c->served = c->peer_gone = c->on_thread = c->responding = false;
    c->fresh = true;
    x->fresh++;
    c->accepted_ms = loop_now(x->loop);
    wsgi_call_init(&c->call, &c->stage);
    c->rlen = c->head_len = c->pos = 0;
    c->prev = NULL;
    c->next = x->all;
    if (x->all) x->all->prev = c;
    x->all = c;
    x->count++;
    conn_enter(c, CONN_HEAD);
    return c;
}

static void conn_free(struct conn *c)
{
    pthread_mutex_destroy(&c->wire_mu);
    out_destroy(&c->wire);
    out_destroy(&c->stage);
    spool_destroy(&c->body);
    free(c->rbuf);
    free(c->headers);
    free(c->vars);
    free(c);
}

/* Empties the body for the next request, and counts its file out of the worker's total. */
static void reset_body(struct conn *c)
{
    if (c->body.fd >= 0) c->x->spooled -= c->body.size;
    spool_reset(&c->body);
}

static void not_fresh(struct conn *c)
{
    if (!c->fresh) return;
    c->fresh = false;
    c->x->fresh--;
}

/*
 * Unregisters and closes the socket now; the struct is freed after the batch, or, when a
 * Python thread has the request, once that thread has called close() and let go of it. A
 * response not sent in full is logged, with 'why' and the bytes that did go out.
 */
static void conn_close(struct conn *c, const char *why)
{
    struct conn_ctx *x = c->x;

    if (c->fd < 0) return;
    lock_wire(c);
    uint64_t unsent = out_pending(&c->wire);
    unlock_wire(c);
    if (c->responding || unsent > 0)
        log_warn("%s:%s: %s: response cut after %llu bytes: %s", c->addr, c->port, c->what,
                 (unsigned long long)c->sent, why);
    if (c->interest) loop_del(x->loop, c->fd);
    c->interest = c->want = 0;
    close(c->fd);
    c->fd = -1;
    not_fresh(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        x->all = c->next;
    if (c->next) c->next->prev = c->prev;
    x->count--;
    if (c->on_thread) {
        /* the thread calls close() on the response itself; a waiting one is told to */
        if (c->state == CONN_SEND) pool_resume(x->pool, &c->task, APP_ABORT);
        return;
    }
    if (wsgi_in_progress(&c->call)) wsgi_abort(&c->call); /* threads = 1: we hold the GIL */
    c->next = x->closed;
    x->closed = c;
}

static void recycle_out(struct out *o)
{
    out_reset(o);
    if (out_bytes(o)->cap > CONN_SPARE_OUT) out_destroy(o);
}

void conn_reap(struct conn_ctx *x)
{
    while (x->closed) {
        struct conn *c = x->closed;
        x->closed = c->next;
        reset_body(c);
        recycle_out(&c->wire);
        recycle_out(&c->stage);
        c->next = x->spare;
        x->spare = c;
    }
}

void conn_close_all(struct conn_ctx *x)
{
    while (x->all)
        conn_close(x->all, "the worker is exiting");
    conn_reap(x);
    while (x->spare) {
        struct conn *c = x->spare;
        x->spare = c->next;
        conn_free(c);
    }
}

/* --- accepting -------------------------------------------------------------------------- */

static uint64_t clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int busy(const struct conn_ctx *x)
{
    return x->pool ? pool_inflight(x->pool) : x->inline_busy;
}

/* What the siblings read of this worker (may_accept). Cheap: relaxed stores to its own entry. */
static void publish(struct conn_ctx *x)
{
    struct sb_worker *w = x->sbw;
    int b = busy(x);
    bool full = b >= x->cfg->threads;

    atomic_store_explicit(&w->conns, x->count, memory_order_relaxed);
    atomic_store_explicit(&w->busy, b, memory_order_relaxed);
    atomic_store_explicit(&w->fresh, x->fresh, memory_order_relaxed);
    if (full != (atomic_load_explicit(&w->full_since, memory_order_relaxed) != 0))
        atomic_store_explicit(&w->full_since, full ? clock_ms() : 0, memory_order_relaxed);
}

/* The rule of balance.h over the scoreboard: this worker against its live siblings. */
static bool may_accept(struct conn_ctx *x)
{
    struct balance_load others[64];
    struct balance_load me = {x->count, busy(x), x->fresh,
                              atomic_load_explicit(&x->sbw->full_since, memory_order_relaxed)};
    int n = 0;

    if (x->draining || loop_now(x->loop) < x->accept_paused_until) return false;
    publish(x);
    for (int i = 0; i < scoreboard_workers(x->sb) && n < (int)ARRAY_SIZE(others); i++) {
        struct sb_worker *w = scoreboard_worker(x->sb, i);
        if (i == x->sb_index || !atomic_load_explicit(&w->pid, memory_order_relaxed) ||
            !atomic_load_explicit(&w->ready, memory_order_relaxed) ||
            atomic_load_explicit(&w->stopping, memory_order_relaxed))
            continue;
        others[n++] =
            (struct balance_load){atomic_load_explicit(&w->conns, memory_order_relaxed),
                                  atomic_load_explicit(&w->busy, memory_order_relaxed),
                                  atomic_load_explicit(&w->fresh, memory_order_relaxed),
                                  atomic_load_explicit(&w->full_since, memory_order_relaxed)};
    }
    return balance_may_accept(&me, others, n, x->cfg->threads, x->cfg->thread_queue, clock_ms());
}

bool conn_balance(struct conn_ctx *x)
{
    if (!x->draining) conn_listen(x, may_accept(x));
    return !x->accepting && !x->draining;
}

static void on_readable(struct conn *c);

static void conn_accept(struct conn_ctx *x, const struct listener *ls)
{
    char addr[64], port[8];

    /* One at a time: after each, this worker's load changes, and so may the answer. A few
     * per wake-up at most: the connections already held get their turn in between. */
    for (int i = 0; i < CONN_ACCEPT_BATCH && may_accept(x); i++) {
        int fd = sock_accept(ls, addr, sizeof(addr), port, sizeof(port));
        if (fd == -EAGAIN || fd == -ECONNABORTED) return;
        if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM) {
            /* out of descriptors or memory: the listener stays readable, so stop watching it
             * for a moment instead of spinning (and say so once per pause) */
            log_warn("accept on %s: %s: not accepting for %d ms", ls->name, strerror(-fd),
                     CONN_ACCEPT_PAUSE_MS);
            x->accept_paused_until = loop_now(x->loop) + CONN_ACCEPT_PAUSE_MS;
            break;
        }
        if (fd < 0) {
            log_warn("accept on %s: %s", ls->name, strerror(-fd));
            return;
        }
        struct conn *c = conn_get(x, ls);
        c->fd = fd;
        memcpy(c->addr, addr, sizeof(addr));
        memcpy(c->port, port, sizeof(port));
        /* the request usually came with the connection (nginx sends it right behind the
         * connect): read and serve it now. The socket joins the loop only if it has to wait,
         * so a one-shot request answered at once costs no epoll_ctl at all. */
        on_readable(c);
        commit(c);
    }
    if (!may_accept(x)) conn_listen(x, false);
}

static void on_accept(struct loop *l, int fd, unsigned events, void *arg)
{
    struct conn_ctx *x = arg;
    (void)l;
    (void)events;
    for (int i = 0; i < x->nls; i++)
        if (x->ls[i].fd == fd) conn_accept(x, &x->ls[i]);
}

int conn_listen(struct conn_ctx *x, bool on)
{
    if (on == x->accepting) return 0;
    for (int i = 0; i < x->nls; i++) {
        int err = on ? loop_add(x->loop, x->ls[i].fd, LOOP_READABLE | LOOP_EXCLUSIVE, on_accept, x)
                     : loop_del(x->loop, x->ls[i].fd);
        if (err) {
            log_error("cannot %s %s: %s", on ? "watch" : "unwatch", x->ls[i].name, strerror(-err));
            return err;
        }
    }
    x->accepting = on;
    return 0;
}

/* --- output ----------------------------------------------------------------------------- */

/*
 * Writes the wire. Returns 0 when all is written, 1 when the socket is full, -1 when the
 * connection was closed (write error). Progress restarts the state's inactivity timeout.
 */
static int write_wire(struct conn *c)
{
    uint64_t n = 0;
    int rc;

    lock_wire(c);
    rc = out_pending(&c->wire) ? out_flush(&c->wire, c->fd, &n) : 0;
    unlock_wire(c);
    c->sent += n;
    if (rc < 0) {
        char why[96];
        snprintf(why, sizeof(why), "writing failed: %s", strerror(errno));
        conn_close(c, why);
        return -1;
    }
    if (n) conn_enter(c, c->state);
    return rc;
}

/*
 * The app may go on: no block of its own is still on the wire (for a waiting thread, one that
 * fits the buffer is copied there first, so the thread goes on sooner), and the wire holds at
 * most half the buffer. A file range does not count: the wire owns its own descriptor and
 * sends it at the client's pace.
 */
static bool drained(struct conn *c)
{
    uint64_t limit = (uint64_t)c->x->cfg->response_buffer;
    bool ok;

    lock_wire(c);
    /* only a thread waiting on the block is worth a copy; the loop itself just waits */
    ok = !(c->on_thread ? out_settle(&c->wire, limit) : out_has_block(&c->wire)) &&
         out_buffered(&c->wire) <= limit / 2;
    unlock_wire(c);
    return ok;
}

/* After a response, or between requests: write, then close or linger if that was the last. */
static void finish_output(struct conn *c)
{
    if (write_wire(c) != 0 || !c->closing) return;
    if (c->linger || c->rlen > c->pos) {
        shutdown(c->fd, SHUT_WR); /* let the client read the answer before we close */
        conn_enter(c, CONN_LINGER);
        return;
    }
    conn_close(c, "done");
}

/* Sends an error response and closes once the client has had a chance to read it. */
static void fail_request(struct conn *c, int status, const char *why)
{
    log_info("%s:%s: %d %s: %s", c->addr, c->port, status, http_reason(status), why);
    http_error_response(out_bytes(&c->wire), status, true);
    reset_body(c); /* nobody will read it: its memory and file go now, not after lingering */
    c->keep_alive = false;
    c->closing = c->linger = true;
    not_fresh(c);
    conn_enter(c, CONN_HEAD);
}

/* --- requests --------------------------------------------------------------------------- */

static uint64_t clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/*
 * "METHOD target" of the request into dst (truncated), for log lines. A uwsgi var may hold
 * any byte: those are escaped (an HTTP head that parsed has no control bytes).
 */
static void request_line(char *dst, size_t cap, const struct request *r)
{
    size_t m = r->method_len < cap / 4 ? r->method_len : cap / 4;
    size_t t = r->target_len < cap - m - 2 ? r->target_len : cap - m - 2;

    if (r->vars) {
        size_t n = log_escape(dst, cap / 4, r->method, r->method_len);
        dst[n++] = ' ';
        log_escape(dst + n, cap - n, r->target, r->target_len);
        return;
    }
    memcpy(dst, r->method, m);
    dst[m] = ' ';
    if (r->userinfo_len) { /* an absolute-form target's "user:pass@" is no one's business */
        size_t before = (size_t)(r->userinfo - r->target);
        snprintf(dst + m + 1, cap - m - 1, "%.*s%.*s", (int)before, r->target,
                 (int)(r->target_len - before - r->userinfo_len), r->userinfo + r->userinfo_len);
        return;
    }
    memcpy(dst + m + 1, r->target, t);
    dst[m + 1 + t] = '\0';
}

static void log_access(struct conn *c)
{
    const struct request *r = &c->req;
    struct wsgi_call *w = &c->call;
    uint64_t us = clock_us() - c->started_us;
    const struct uwsgi_var *v = uwsgi_var_find(r->vars, r->num_vars, "REMOTE_ADDR", 11);
    char who[64], what[1024];

    struct forwarded_result f;

    if (v) /* behind nginx: the client's address, as nginx's vars say */
        log_escape(who, sizeof(who), v->val, v->val_len);
    else if (!r->vars &&
             forwarded_resolve(&c->x->proxies, c->addr, r->headers, r->num_headers, &f) &&
             f.addr) /* behind a trusted HTTP proxy: the client it names, as the app sees */
        log_escape(who, sizeof(who), f.addr, f.addr_len);
    else
        memcpy(who, c->addr, sizeof(c->addr));
    request_line(what, sizeof(what), r);
    log_info("%s %s => %d, %llu bytes in %llu.%03llu ms", who, what, w->status,
             (unsigned long long)w->body_bytes, (unsigned long long)(us / 1000),
             (unsigned long long)(us % 1000));
}

/* The request is over: count it, drop its bytes, and wait for the next one (or close). */
static void request_done(struct conn *c)
{
    struct conn_ctx *x = c->x;
    size_t rest = c->rlen - c->pos;

    uint64_t n = atomic_fetch_add_explicit(&x->sbw->requests, 1, memory_order_relaxed) + 1;
    if (x->max_requests && n >= x->max_requests)
        scoreboard_ask_recycle(x->sbw, SB_RECYCLE_MAX_REQUESTS);
    if (log_access_enabled()) log_access(c);
    if (!c->call.keep_alive) c->keep_alive = false;
    if (!c->keep_alive) c->closing = true;
    reset_body(c);
    if (rest > 0) memmove(c->rbuf, c->rbuf + c->pos, rest);
    c->rlen = rest;
    c->head_len = c->pos = 0;
    c->served = true;
    c->peer_gone = false;
    c->on_thread = false;
    c->responding = false;
    conn_enter(c, CONN_HEAD);
}

/* Set in a process the app forked (os.fork()) from inside a request. */
static volatile sig_atomic_t forked_by_app;

static void mark_forked(void)
{
    forked_by_app = 1;
}

void conn_watch_forks(void)
{
    pthread_atfork(NULL, NULL, mark_forked);
}

/* Runs one app step on the calling thread (GIL held), recorded in its scoreboard slot. */
static enum wsgi_result run_app(struct conn *c, enum app_step step, struct sb_slot *slot)
{
    struct timespec ts;
    enum wsgi_result r = WSGI_ABORT;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    atomic_store_explicit(&slot->thread, (uint64_t)pthread_self(), memory_order_relaxed);
    scoreboard_begin(slot, (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000,
                     c->req.method, c->req.method_len, c->req.target, c->req.target_len);
    if (step == STEP_CALL)
        r = wsgi_call(&c->call);
    else if (step == STEP_RESUME)
        r = wsgi_resume(&c->call);
    else
        wsgi_abort(&c->call);
    if (forked_by_app) {
        /* a child the app forked came back from the app into corral: it must not serve */
        log_warn("pid %d, forked by the app during %s, returned from the app: it exits",
                 (int)getpid(), c->what);
        _exit(0);
    }
    scoreboard_end(slot);
    return r;
}

static struct sb_slot *loop_slot(struct conn *c)
{
    return scoreboard_slot(c->x->sb, c->x->sb_index, 0);
}

/*
 * After an app step, on the loop thread: moves what the app produced onto the wire and
 * decides what comes next. With threads = 1 the loop runs the next step itself, for as long as
 * the client keeps up; with a pool it lets the waiting thread go on (or leaves it waiting).
 */
static void step_done(struct conn *c, enum wsgi_result r)
{
    for (;;) {
        lock_wire(c);
        out_move(&c->wire, &c->stage);
        unlock_wire(c);
        if (r != WSGI_MORE) {
            request_done(c);
            if (r == WSGI_ABORT) conn_close(c, "the app failed after the response began");
            return;
        }
        if (write_wire(c) < 0) return; /* closed: the app is told to stop (conn_close) */
        if (!drained(c)) {
            conn_enter(c, CONN_SEND);
            return;
        }
        conn_enter(c, CONN_APP);
        if (c->on_thread) {
            pool_resume(c->x->pool, &c->task, APP_GO_ON);
            return;
        }
        r = run_app(c, STEP_RESUME, loop_slot(c));
    }
}

/* write() past the buffer, threads = 1: the loop thread writes this one socket until the
 * client has taken enough. Every other connection of the worker waits meanwhile. */
static int drain_inline(void *arg)
{
    struct conn *c = arg;

    out_move(&c->wire, &c->stage);
    for (;;) {
        uint64_t n;
        if (c->fd < 0) return -1;
        int rc = out_flush(&c->wire, c->fd, &n);
        if (rc < 0) return -1;
        if (drained(c)) return 0;
        struct pollfd p = {.fd = c->fd, .events = POLLOUT};
        if (poll(&p, 1, (int)c->x->timeouts.request_ms) <= 0) return -1;
    }
}

/* write() past the buffer, on a pool thread (no GIL): the same hand-off as a yield. */
static int drain_pooled(void *arg)
{
    struct conn *c = arg;
    return pool_yield(c->x->pool, &c->task) == APP_GO_ON ? 0 : -1;
}

/* A complete request goes to the app: this thread now (threads = 1), or the pool's next. */
static void dispatch(struct conn *c)
{
    struct conn_ctx *x = c->x;
    struct wsgi_call *w = &c->call;
    struct request *r = &c->req;

    r->ls = c->ls;
    r->remote_addr = c->addr;
    r->remote_port = c->port;
    r->body = &c->body;
    w->req = r;
    w->keep_alive = c->keep_alive && !x->draining;
    w->drain = x->pool ? drain_pooled : drain_inline;
    w->drain_arg = c;
    not_fresh(c);
    if (log_access_enabled()) c->started_us = clock_us();
    request_line(c->what, sizeof(c->what), r); /* for the log line if the response is cut */
    c->sent = 0;
    c->responding = true;
    conn_enter(c, CONN_APP);
    if (x->pool) {
        c->on_thread = true;
        pool_submit(x->pool, &c->task);
        return;
    }
    x->inline_busy = 1;
    publish(x);
    enum wsgi_result res = run_app(c, STEP_CALL, loop_slot(c));
    step_done(c, res);
    x->inline_busy = 0;
    publish(x);
}

/*
 * On the request's thread: passes what the app produced onto the wire without waiting, when
 * nothing in it is the app's own (a block, a file) and the wire stays within half the buffer;
 * the loop is told to write it. Returns false when the thread must yield instead.
 */
static bool pass_on(struct conn *c)
{
    uint64_t half = (uint64_t)c->x->cfg->response_buffer / 2;
    bool ok, notify = false;

    if (out_closed(&c->stage)) return false;
    pthread_mutex_lock(&c->wire_mu);
    ok = !out_closed(&c->wire) && out_buffered(&c->wire) + out_buffered(&c->stage) <= half;
    if (ok) {
        out_move(&c->wire, &c->stage);
        notify = !c->note_queued;
        c->note_queued = true;
    }
    pthread_mutex_unlock(&c->wire_mu);
    if (notify) pool_notify(c->x->pool, &c->note);
    return ok;
}

/* The pool thread's whole request: the app call, every later step, and close(). */
void conn_run_task(struct pool_task *t, int thread, void *arg)
{
    struct conn *c = container_of(t, struct conn, task);
    struct conn_ctx *x = arg;
    struct sb_slot *slot = scoreboard_slot(x->sb, x->sb_index, thread);
    enum wsgi_result r = run_app(c, STEP_CALL, slot);

    while (r == WSGI_MORE) {
        if (pass_on(c)) { /* the loop writes it while the app goes on */
            r = run_app(c, STEP_RESUME, slot);
            continue;
        }
        py_release_gil();
        int go = pool_yield(x->pool, t); /* the loop writes; we run nothing else meanwhile */
        py_acquire_gil();
        r = run_app(c, go == APP_GO_ON ? STEP_RESUME : STEP_ABORT, slot);
    }
    c->final = r;
}

/* A pool thread passed output on: write it (and wait for the socket if it is full). */
static void note_done(struct conn *c)
{
    pthread_mutex_lock(&c->wire_mu);
    c->note_queued = false;
    pthread_mutex_unlock(&c->wire_mu);
    if (c->fd < 0 || write_wire(c) < 0) return;
    conn_enter(c, c->state); /* APP: write interest while output waits */
    commit(c);
}

/* On the loop thread: a pool thread yielded output, passed some on, or let go of the
 * request. */
void conn_task_done(struct pool_task *t, enum pool_event event, void *arg)
{
    struct conn *c = container_of(t, struct conn, task);
    struct conn_ctx *x = arg;
    bool finished = event == POOL_FINISHED;

    if (event == POOL_NOTIFIED) {
        note_done(container_of(t, struct conn, note));
        return;
    }
    if (c->fd < 0) { /* closed while a thread had the request */
        if (!finished) {
            pool_resume(x->pool, t, APP_ABORT);
            return;
        }
        c->on_thread = false;
        c->next = x->closed;
        x->closed = c;
        return;
    }
    if (c->peer_gone) c->keep_alive = false; /* answer, then close */
    step_done(c, finished ? c->final : WSGI_MORE);
    if (c->fd >= 0 && c->state == CONN_HEAD) service(c);
    commit(c);
}

/* --- parsing ---------------------------------------------------------------------------- */

static void start_body(struct conn *c)
{
    const struct request *r = &c->req;

    c->body_left = r->content_length > 0 ? (uint64_t)r->content_length : 0;
    c->req.has_body = r->chunked || r->content_length >= 0;
    if (r->chunked) http_chunked_init(&c->dec);
    if (r->expect_continue && r->minor_version == 1 && (r->chunked || c->body_left > 0) &&
        c->rlen == c->head_len)
        out_append(&c->wire, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    conn_enter(c, CONN_BODY);
}

/* Returns 1 when a head was parsed (now in BODY), 0 for more bytes, -1 when refused. */
static int parse_uwsgi(struct conn *c)
{
    enum uwsgi_error err = UWSGI_OK;
    size_t nvars = 0;
    int n = uwsgi_parse_request(c->rbuf, c->rlen, (size_t)c->x->cfg->buffer_size, c->vars,
                                CONN_MAX_VARS, &nvars, &err);
    enum uwsgi_request_error rerr;

    if (n == PARSE_INCOMPLETE) return 0;
    if (n == PARSE_ERROR) {
        log_warn("uwsgi packet from %s refused: %s", c->ls->name, uwsgi_strerror(err));
        conn_close(c, "refused");
        return -1;
    }
    rerr = uwsgi_request_fill(&c->req, c->vars, nvars);
    if (rerr != UWSGI_REQ_OK) {
        log_warn("uwsgi packet from %s refused: %s", c->ls->name, uwsgi_request_strerror(rerr));
        conn_close(c, "refused");
        return -1;
    }
    c->keep_alive = false; /* nginx reads a uwsgi response until the connection closes */
    if (c->x->cfg->limit_post && c->req.content_length > c->x->cfg->limit_post) {
        fail_request(c, 413, "request body above --limit-post");
        return -1;
    }
    c->head_len = c->pos = (size_t)n;
    start_body(c);
    return 1;
}

static int parse_head(struct conn *c)
{
    int status = 400;
    int n;

    if (c->ls->proto == SOCK_PROTO_UWSGI) return parse_uwsgi(c);
    n = http_parse_request(c->rbuf, c->rlen, &c->req, c->headers, &c->x->limits, &status);
    if (n == PARSE_INCOMPLETE) return 0;
    if (n == PARSE_ERROR) {
        fail_request(c, status, "malformed request head");
        return -1;
    }
    c->keep_alive = c->req.keep_alive;
    c->head_len = c->pos = (size_t)n;
    start_body(c);
    return 1;
}

/* Keeps the head, drops the body bytes already spooled: makes room to read more. */
static void compact(struct conn *c)
{
    size_t rest = c->rlen - c->pos;
    if (c->pos == c->head_len) return;
    memmove(c->rbuf + c->head_len, c->rbuf + c->pos, rest);
    c->rlen = c->head_len + rest;
    c->pos = c->head_len;
}

static int spool(struct conn *c, const char *p, size_t n)
{
    struct conn_ctx *x = c->x;
    long long limit = x->cfg->limit_post;
    bool to_file = c->body.fd >= 0 || c->body.size + n > c->body.threshold;
    uint64_t in_file = c->body.fd >= 0 ? c->body.size : 0;
    int err;

    if (limit && c->body.size + n > (uint64_t)limit) {
        fail_request(c, 413, "request body above --limit-post");
        return -1;
    }
    if (to_file && x->cfg->spool_max &&
        x->spooled - in_file + c->body.size + n > (uint64_t)x->cfg->spool_max) {
        fail_request(c, 503, "the worker's spooled bodies would pass --spool-max");
        return -1;
    }
    err = spool_append(&c->body, p, n);
    if (c->body.fd >= 0) x->spooled += c->body.size - in_file;
    if (err) {
        log_error("cannot store a request body: %s", strerror(-err));
        fail_request(c, 500, "cannot store the request body");
        return -1;
    }
    return 0;
}

/* Chunked: decode what is buffered. Returns 1 when the body is complete, 0 for more, -1. */
static int body_chunked(struct conn *c)
{
    for (;;) {
        const char *data;
        size_t used = 0, dlen = 0;
        int r =
            http_chunked_decode(&c->dec, c->rbuf + c->pos, c->rlen - c->pos, &used, &data, &dlen);
        c->pos += used;
        if (r == HTTP_CHUNK_DATA) {
            if (spool(c, data, dlen) < 0) return -1;
            continue;
        }
        if (r == HTTP_CHUNK_DONE) return 1;
        if (r == PARSE_INCOMPLETE) {
            compact(c);
            return 0;
        }
        fail_request(c, 400, "malformed chunked body");
        return -1;
    }
}

/* Moves body bytes from rbuf into the spool. Returns 1 when complete, 0 for more, -1. */
static int read_body(struct conn *c)
{
    size_t avail = c->rlen - c->pos;
    size_t take;

    if (c->req.chunked) return body_chunked(c);
    if (c->body_left == 0) return 1;
    take = avail < c->body_left ? avail : (size_t)c->body_left;
    if (take == c->body_left && c->body.size == 0) {
        spool_set_view(&c->body, c->rbuf + c->pos, take); /* all here: use it in place */
    } else if (take > 0 && spool(c, c->rbuf + c->pos, take) < 0) {
        return -1;
    }
    c->pos += take;
    c->body_left -= take;
    if (c->body_left == 0) return 1;
    compact(c);
    return 0;
}

/*
 * Parses and serves whatever complete requests are buffered, until one goes to a thread, the
 * output waiting is worth writing first, or more bytes are needed.
 */
static void advance(struct conn *c)
{
    while (c->fd >= 0 && !c->closing) {
        if (c->state == CONN_HEAD) {
            if (c->rlen == 0 || out_pending(&c->wire) >= CONN_OUT_HIGH || out_closed(&c->wire))
                return; /* write what is waiting first */
            if (parse_head(c) <= 0) return;
        } else if (c->state == CONN_BODY) {
            if (read_body(c) <= 0) return;
            dispatch(c);
        } else {
            return;
        }
    }
}

/* Serves buffered requests and writes their responses, as long as both make progress. */
static void service(struct conn *c)
{
    for (;;) {
        advance(c);
        if (c->fd < 0 || c->state == CONN_APP || c->state == CONN_SEND) return;
        /* advance() waits for the output when it is large: write it, then go on parsing */
        bool paused = c->state == CONN_HEAD && c->rlen > 0 && !c->closing &&
                      (out_pending(&c->wire) >= CONN_OUT_HIGH || out_closed(&c->wire));
        finish_output(c);
        if (c->fd < 0 || !paused || out_pending(&c->wire) > 0) return;
    }
}

/* --- events ----------------------------------------------------------------------------- */

/*
 * A Content-Length body that fits in memory is read straight into the spool (one copy less,
 * and reads as large as the body instead of the read buffer's room). Returns true if it
 * handled the event.
 */
static bool read_body_direct(struct conn *c)
{
    char *p;
    size_t want;
    ssize_t n;

    if (c->state != CONN_BODY || c->req.chunked || c->body_left == 0 || c->rlen != c->pos)
        return false;
    /* memory grows with the data that came, not with what the client declared: a slow or
     * lying client holds what it sent, no more */
    want = c->body.size > CONN_BODY_STEP ? (size_t)c->body.size : CONN_BODY_STEP;
    if (want > c->body_left) want = (size_t)c->body_left;
    p = spool_reserve(&c->body, want);
    if (!p) return false;
    n = read(c->fd, p, want);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
        conn_close(c, "the client left"); /* in the middle of its body */
        return true;
    }
    spool_commit(&c->body, (size_t)n);
    c->body_left -= (uint64_t)n;
    conn_enter(c, CONN_BODY); /* progress */
    if (c->body_left == 0) service(c);
    return true;
}

/* APP on a thread: read ahead (the next pipelined request), or notice the client leaving. */
static void read_ahead(struct conn *c)
{
    ssize_t n = 0;

    if (c->rlen < c->rcap) {
        n = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen); /* the thread reads [0, pos) */
        if (n > 0)
            c->rlen += (size_t)n;
        else if (n == 0 || (errno != EAGAIN && errno != EINTR))
            c->peer_gone = true; /* answer this one, then close */
    }
    conn_enter(c, CONN_APP); /* stops reading when the buffer is full or the client left */
}

static void on_readable(struct conn *c)
{
    ssize_t n;

    switch (c->state) {
    case CONN_LINGER: {
        char sink[4096];
        n = read(c->fd, sink, sizeof(sink));
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) conn_close(c, "done");
        return;
    }
    case CONN_APP:
        read_ahead(c);
        return;
    case CONN_SEND: /* an error on the socket: the write says which */
        if (write_wire(c) > 0 && c->fd >= 0) conn_enter(c, CONN_SEND);
        return;
    case CONN_HEAD:
    case CONN_BODY:
    case CONN_STATES:
        break;
    }
    if (c->rlen == c->rcap) return; /* full: the parser has already said why */
    if (read_body_direct(c)) return;
    n = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        conn_close(c, "the client left"); /* EOF or reset: nothing to answer */
        return;
    }
    c->rlen += (size_t)n;
    if (c->state == CONN_BODY || c->rlen == (size_t)n)
        conn_enter(c, c->state); /* a body's progress, or a head's first bytes: the clock starts */
    service(c);
}

static void on_writable(struct conn *c)
{
    int rc = write_wire(c);

    if (rc < 0) return;
    if (c->state == CONN_APP) return; /* the thread's earlier output; it goes on meanwhile */
    if (c->state == CONN_SEND) {
        if (!drained(c)) return;
        conn_enter(c, CONN_APP);
        if (c->on_thread) {
            pool_resume(c->x->pool, &c->task, APP_GO_ON);
            return;
        }
        c->x->inline_busy = 1;
        step_done(c, run_app(c, STEP_RESUME, loop_slot(c)));
        c->x->inline_busy = 0;
        if (c->fd >= 0 && c->state == CONN_HEAD) service(c);
        return;
    }
    if (rc > 0) return;
    service(c); /* HEAD, BODY, LINGER: the rest of a response, an error, a 100 Continue */
}

static void on_event(struct loop *l, int fd, unsigned events, void *arg)
{
    struct conn *c = arg;
    (void)l;
    (void)fd;

    if (events & LOOP_WRITABLE)
        on_writable(c);
    else if (events & LOOP_READABLE)
        on_readable(c);
    commit(c);
}

/* --- timers ----------------------------------------------------------------------------- */

static void expire(struct conn *c)
{
    if (c->state == CONN_HEAD && c->rlen > 0 && out_pending(&c->wire) == 0 && !c->closing) {
        fail_request(c, 408, "request head not received in time");
        finish_output(c);
    } else if (c->state == CONN_BODY) {
        fail_request(c, 408, "request body not received in time");
        finish_output(c);
    } else { /* idle keep-alive, a client not reading, or lingering done */
        char why[64];
        snprintf(why, sizeof(why), "no progress for %u ms", c->x->timeouts.request_ms);
        conn_close(c, why);
    }
}

/* Bytes the client sent that the loop has not read yet (a request racing our close). */
static bool unread(const struct conn *c)
{
    int n = 0;
    return ioctl(c->fd, FIONREAD, &n) == 0 && n > 0;
}

void conn_sweep(struct conn_ctx *x)
{
    uint64_t now = loop_now(x->loop);
    struct conn *next;

    http_date_update(time(NULL));
    for (struct conn *c = x->all; c; c = next) {
        next = c->next;
        bool idle = c->state == CONN_HEAD && c->rlen == 0 && out_pending(&c->wire) == 0;
        if (c->fresh && now - c->accepted_ms >= CONN_FRESH_MS) not_fresh(c);
        if (x->draining && idle && !unread(c))
            conn_close(c, "the worker is stopping");
        else if (c->deadline && now >= c->deadline)
            expire(c);
        if (c->fd >= 0) commit(c);
    }
}
