/*
 * conn.c - the connection state machine (see conn.h).
 *
 * Read buffer layout: rbuf[0, rlen) holds the bytes read. The current request's head starts
 * at 0 and is head_len long; body bytes after it are moved into the spool as they arrive
 * (or, when the whole body came with the head, used in place). When the request ends, the
 * bytes past it (a pipelined request) move to the front.
 *
 * Responses are appended to 'out' and written with one write(2) or writev(2) when the loop
 * has nothing else to parse, so pipelined responses share a syscall. A connection whose
 * client is not reading stops being read from until 'out' drains (back-pressure).
 */
#include "worker/conn.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <poll.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "http/http_response.h"
#include "python/wsgi.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/spool.h"
#include "util/xalloc.h"
#include "uwsgi/uwsgi_proto.h"

enum conn_state {
    CONN_HEAD,     /* waiting for (the rest of) a request head */
    CONN_BODY,     /* spooling the request body */
    CONN_APP,      /* on a Python thread (the loop reads ahead, touches nothing else) */
    CONN_RESPONSE, /* the app's response is being written (wsgi MORE outstanding) */
    CONN_LINGER,   /* error sent, write side shut: discarding input until EOF */
};

enum {
    CONN_READ_ROOM = 16384, /* read-buffer space beyond the head limit, for body bytes */
    CONN_MAX_VARS = 256,
    CONN_OUT_HIGH = 65536, /* stop parsing pipelined requests above this much unsent */
    CONN_ACCEPT_BATCH = 8, /* accepts per wake-up: leave some for idle siblings */
    CONN_LINGER_MS = 2000,
};

/* What a Python thread is asked to do with a connection's request. */
enum conn_task {
    TASK_CALL,   /* wsgi_call */
    TASK_RESUME, /* wsgi_resume: the client took the last part, produce more */
    TASK_ABORT,  /* wsgi_abort: the client is gone */
};

struct conn {
    int fd;
    struct conn_ctx *x;
    const struct listener *ls;
    enum conn_state state;
    bool want_write;        /* registered for writability (blocked on output) */
    bool keep_alive;        /* the connection may serve another request */
    bool close_after_write; /* close once 'out' has drained */

    char *rbuf; /* read buffer: cap = head limit + CONN_READ_ROOM */
    size_t rcap;
    size_t rlen;     /* bytes in rbuf */
    size_t head_len; /* the current request's head, once parsed */
    size_t pos;      /* end of what the current request has consumed */

    struct http_request req;     /* views into rbuf */
    struct http_header *headers; /* [CONN_MAX_HEADERS] for HTTP listeners */
    struct uwsgi_var *vars;      /* [CONN_MAX_VARS] for uwsgi listeners */
    size_t num_vars;

    struct spool body;
    bool has_body;
    bool chunked;
    uint64_t body_left; /* Content-Length bytes still to come */
    struct http_chunked dec;

    struct buf out; /* response bytes not yet written */
    struct wsgi_call call;
    enum wsgi_result pending;     /* what the app said last, while in CONN_RESPONSE */
    struct pool_task task;        /* with a pool: this connection's hand-off */
    enum conn_task task_kind;     /* what the thread should do (owner: loop until submitted) */
    enum wsgi_result task_result; /* what it got (owner: thread until done) */
    bool peer_closed;             /* EOF seen while the request was on a thread */
    bool unwatched;               /* taken out of the loop while the request was on a thread */
    bool registered;              /* the socket is in the loop (uwsgi: only once it has to wait) */

    uint64_t deadline;        /* loop ms when the current wait times out; 0 = none */
    uint64_t started_us;      /* when the request reached the app, for the access log */
    char addr[64];            /* REMOTE_ADDR */
    char port[8];             /* REMOTE_PORT */
    struct conn *prev, *next; /* x->all, or x->closed / x->spare via next */
};

static void on_event(struct loop *l, int fd, unsigned events, void *arg);
static void on_readable(struct conn *c);
static void watch(struct conn *c, unsigned events);
static void service(struct conn *c);
static void unwatch(struct conn *c);
static int flush(struct conn *c);

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

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
        buf_init(&c->out);
        spool_init(&c->body, (uint64_t)x->cfg->post_buffering);
    }
    c->x = x;
    c->ls = ls;
    c->peer_closed = c->unwatched = c->registered = false;
    wsgi_call_init(&c->call, &c->out);
    c->state = CONN_HEAD;
    c->want_write = c->close_after_write = false;
    c->keep_alive = true;
    c->rlen = c->head_len = c->pos = 0;
    c->deadline = 0;
    c->prev = NULL;
    c->next = x->all;
    if (x->all) x->all->prev = c;
    x->all = c;
    x->count++;
    return c;
}

static void conn_free(struct conn *c)
{
    buf_destroy(&c->out);
    spool_destroy(&c->body);
    free(c->rbuf);
    free(c->headers);
    free(c->vars);
    free(c);
}

/* Unregisters and closes the socket now; the struct is freed after the batch. */
static void conn_close(struct conn *c)
{
    struct conn_ctx *x = c->x;

    if (c->fd < 0) return;
    if (c->registered) loop_del(x->loop, c->fd);
    close(c->fd);
    c->fd = -1;
    if (c->prev)
        c->prev->next = c->next;
    else
        x->all = c->next;
    if (c->next) c->next->prev = c->prev;
    x->count--;
    if (wsgi_in_progress(&c->call)) {
        if (x->pool) {
            /* the iterable's close() needs the GIL: a thread runs it, then the conn is freed */
            c->task_kind = TASK_ABORT;
            c->state = CONN_APP;
            pool_submit(x->pool, &c->task);
            return;
        }
        wsgi_abort(&c->call);
    }
    c->next = x->closed;
    x->closed = c;
}

void conn_reap(struct conn_ctx *x)
{
    while (x->closed) {
        struct conn *c = x->closed;
        x->closed = c->next;
        spool_reset(&c->body);
        buf_reset(&c->out);
        if (c->out.cap > 256 * 1024) buf_destroy(&c->out);
        c->next = x->spare;
        x->spare = c;
    }
}

void conn_close_all(struct conn_ctx *x)
{
    while (x->all)
        conn_close(x->all);
    conn_reap(x);
    while (x->spare) {
        struct conn *c = x->spare;
        x->spare = c->next;
        conn_free(c);
    }
}

/*
 * Load-aware accept: with a pool, a worker takes new connections only while it has a free
 * Python thread or room in a short queue, so an idle sibling gets the work instead.
 */
static bool has_room(const struct conn_ctx *x)
{
    return !x->pool || pool_inflight(x->pool) < x->max_inflight;
}

/*
 * How many connections to take per wake-up. A single-threaded worker among siblings takes one:
 * it serves requests inline, so a second queued connection would wait behind the first while
 * an idle sibling (woken by EPOLLEXCLUSIVE while this one is busy) could serve it at once.
 */
static int accept_batch(const struct conn_ctx *x)
{
    return (!x->pool && x->cfg->processes > 1) ? 1 : CONN_ACCEPT_BATCH;
}

static void conn_accept(struct conn_ctx *x, const struct listener *ls)
{
    char addr[64], port[8];
    int batch = accept_batch(x);

    for (int i = 0; i < batch && !x->draining && has_room(x); i++) {
        int fd = sock_accept(ls, addr, sizeof(addr), port, sizeof(port));
        if (fd == -EAGAIN || fd == -ECONNABORTED) return;
        if (fd < 0) {
            log_warn("accept on %s: %s", ls->name, strerror(-fd));
            return;
        }
        struct conn *c = conn_get(x, ls);
        c->fd = fd;
        memcpy(c->addr, addr, sizeof(addr));
        memcpy(c->port, port, sizeof(port));
        c->deadline = loop_now(x->loop) + (uint64_t)x->cfg->http_timeout * 1000;
        /* nginx sends the packet right behind the connect: read and serve it now; the
         * socket joins the loop only if it has to wait (a one-shot uwsgi request that is
         * answered at once costs no epoll_ctl at all) */
        if (ls->proto == SOCK_PROTO_UWSGI) on_readable(c);
        if (c->fd >= 0 && !c->registered && !c->unwatched) watch(c, LOOP_READABLE);
    }
    if (!has_room(x)) conn_listen(x, false);
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

/* Puts the socket in the loop for 'events'. */
static void watch(struct conn *c, unsigned events)
{
    int err = loop_add(c->x->loop, c->fd, events, on_event, c);
    if (err) {
        log_error("cannot watch a connection: %s", strerror(-err));
        conn_close(c);
        return;
    }
    c->registered = true;
    c->want_write = (events & LOOP_WRITABLE) != 0;
}

static void want(struct conn *c, bool write)
{
    if (!c->registered) {
        if (!c->unwatched) watch(c, write ? LOOP_WRITABLE : LOOP_READABLE);
        return;
    }
    if (c->want_write == write) return;
    c->want_write = write;
    loop_mod(c->x->loop, c->fd, write ? LOOP_WRITABLE : LOOP_READABLE, on_event, c);
}

/*
 * Writes 'out', then the app's zero-copy block, then its file range.
 * Returns 0 when everything is written, 1 when the socket is full, -1 on a write error.
 */
static int flush(struct conn *c)
{
    struct wsgi_call *w = &c->call;

    while (buf_used(&c->out) > 0 || w->chunk_len > 0) {
        struct iovec iov[2];
        int n = 0;
        if (buf_used(&c->out)) iov[n++] = (struct iovec){buf_start(&c->out), buf_used(&c->out)};
        if (w->chunk_len) iov[n++] = (struct iovec){(void *)w->chunk, w->chunk_len};
        ssize_t k = n == 1 ? write(c->fd, iov[0].iov_base, iov[0].iov_len) : writev(c->fd, iov, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return errno == EAGAIN ? 1 : -1;
        }
        size_t from_out = (size_t)k < buf_used(&c->out) ? (size_t)k : buf_used(&c->out);
        buf_consume(&c->out, from_out);
        w->chunk += (size_t)k - from_out;
        w->chunk_len -= (size_t)k - from_out;
    }
    while (w->file_len > 0) {
        off_t off = (off_t)w->file_off;
        size_t n = w->file_len > (1u << 30) ? (1u << 30) : (size_t)w->file_len;
        ssize_t k = sendfile(c->fd, w->file_fd, &off, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return errno == EAGAIN ? 1 : -1;
        }
        if (k == 0) return -1; /* the file shrank under us */
        w->file_off += (uint64_t)k;
        w->file_len -= (uint64_t)k;
    }
    return 0;
}

/* The write() callable's back-pressure: block (GIL released by the caller) until drained. */
static int drain_blocking(void *arg)
{
    struct conn *c = arg;
    int timeout = c->x->cfg->http_timeout * 1000;

    for (;;) {
        int rc = flush(c);
        if (rc <= 0) return rc;
        struct pollfd p = {.fd = c->fd, .events = POLLOUT};
        if (poll(&p, 1, timeout) <= 0) return -1;
    }
}

/* Sends an error response and closes once the client has had a chance to read it. */
static void fail_request(struct conn *c, int status, const char *why)
{
    log_info("%s:%s: %d %s: %s", c->addr, c->port, status, http_reason(status), why);
    http_error_response(&c->out, status, true);
    c->keep_alive = false;
    c->close_after_write = true;
    c->state = CONN_LINGER;
    c->deadline = loop_now(c->x->loop) + CONN_LINGER_MS;
}

/* --- requests --------------------------------------------------------------------------- */

static uint64_t clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void log_access(struct conn *c)
{
    struct wsgi_call *w = &c->call;
    uint64_t us = clock_us() - c->started_us;

    const char *who = c->addr;
    int wlen = (int)strlen(c->addr);
    for (size_t i = 0; i < c->num_vars && c->vars; i++) /* behind nginx: the client's address */
        if (c->vars[i].key_len == 11 && memcmp(c->vars[i].key, "REMOTE_ADDR", 11) == 0) {
            who = c->vars[i].val;
            wlen = (int)c->vars[i].val_len;
        }
    log_info("%.*s %.*s %.*s => %d, %llu bytes in %llu.%03llu ms", wlen, who,
             (int)w->req.method_len, w->req.method, (int)w->req.target_len, w->req.target,
             w->status, (unsigned long long)w->body_bytes, (unsigned long long)(us / 1000),
             (unsigned long long)(us % 1000));
}

/* The request is over: drop its bytes and get ready for the next one on this connection. */
static void request_done(struct conn *c)
{
    struct conn_ctx *x = c->x;
    size_t rest = c->rlen - c->pos;

    uint64_t n = atomic_fetch_add_explicit(&x->sbw->requests, 1, memory_order_relaxed) + 1;
    if (x->max_requests && n >= x->max_requests)
        scoreboard_ask_recycle(x->sbw, SB_RECYCLE_MAX_REQUESTS);
    if (log_access_enabled()) log_access(c);
    if (!c->call.keep_alive) c->keep_alive = false;
    spool_reset(&c->body);
    if (rest > 0) memmove(c->rbuf, c->rbuf + c->pos, rest);
    c->rlen = rest;
    c->head_len = c->pos = 0;
    c->state = CONN_HEAD;
    c->deadline = loop_now(x->loop) + (uint64_t)x->cfg->keepalive_timeout * 1000;
    if (!c->keep_alive) c->close_after_write = true;
}

/* Runs one app step on the calling thread (GIL held), recorded in its scoreboard slot. */
static enum wsgi_result run_app(struct conn *c, enum conn_task kind, struct sb_slot *slot)
{
    struct timespec ts;
    enum wsgi_result r = WSGI_DONE;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    atomic_store_explicit(&slot->thread, (uint64_t)pthread_self(), memory_order_relaxed);
    scoreboard_begin(slot, (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000,
                     c->req.method, c->req.method_len, c->req.target, c->req.target_len);
    if (kind == TASK_CALL)
        r = wsgi_call(&c->call);
    else if (kind == TASK_RESUME)
        r = wsgi_resume(&c->call);
    else
        wsgi_abort(&c->call);
    scoreboard_end(slot);
    return r;
}

/*
 * Hands the connection's next app step to a Python thread. From here until conn_task_done()
 * the thread owns 'out' and the request: what is pending goes out first, and the loop stops
 * listening for writability (it may not flush while the thread appends).
 */
static void run_elsewhere(struct conn *c, enum conn_task kind)
{
    if (kind != TASK_ABORT && (buf_used(&c->out) || c->call.chunk_len))
        (void)flush(c); /* what it cannot write now goes after the thread's part */
    if (c->want_write && c->registered) unwatch(c);
    c->task_kind = kind;
    c->state = CONN_APP;
    pool_submit(c->x->pool, &c->task);
}

/* Follows the app's answer until it is done or waits for the client. */
static void respond(struct conn *c, enum wsgi_result r)
{
    for (;;) {
        if (r == WSGI_ABORT) {
            request_done(c);
            conn_close(c);
            return;
        }
        if (r == WSGI_DONE) {
            request_done(c);
            return;
        }
        int rc = flush(c);
        if (rc < 0) {
            conn_close(c); /* aborts the response: the iterable's close() runs */
            return;
        }
        if (rc > 0) {
            c->pending = r;
            c->state = CONN_RESPONSE;
            c->deadline = loop_now(c->x->loop) + (uint64_t)c->x->cfg->http_timeout * 1000;
            want(c, true);
            return;
        }
        if (c->x->pool) {
            run_elsewhere(c, TASK_RESUME);
            return;
        }
        r = run_app(c, TASK_RESUME, scoreboard_slot(c->x->sb, c->x->sb_index, 0));
    }
}

static void set_request(struct conn *c)
{
    struct wsgi_request *q = &c->call.req;
    const struct http_request *r = &c->req;

    q->method = r->method;
    q->method_len = r->method_len;
    q->target = r->target;
    q->target_len = r->target_len;
    q->path = r->path;
    q->path_len = r->path_len;
    q->query = r->query;
    q->query_len = r->query_len;
    q->minor_version = r->minor_version;
    q->headers = r->headers;
    q->num_headers = r->num_headers;
    q->vars = c->vars;
    q->num_vars = c->num_vars;
    q->remote_addr = c->addr;
    q->remote_port = c->port;
    q->ls = c->ls;
    q->body = &c->body;
    q->has_body = c->has_body;
}

/* Hands a complete request to the app (threads = 1: this thread, right now). */
static void dispatch(struct conn *c)
{
    struct conn_ctx *x = c->x;
    struct wsgi_call *w = &c->call;

    set_request(c);
    w->keep_alive = c->keep_alive && !x->draining;
    w->is_uwsgi = c->ls->proto == SOCK_PROTO_UWSGI;
    w->drain = drain_blocking;
    w->drain_arg = c;
    c->deadline = 0;
    if (log_access_enabled()) c->started_us = clock_us();
    if (x->pool)
        run_elsewhere(c, TASK_CALL);
    else
        respond(c, run_app(c, TASK_CALL, scoreboard_slot(x->sb, x->sb_index, 0)));
}

void conn_run_task(struct pool_task *t, int thread, void *arg)
{
    struct conn *c = container_of(t, struct conn, task);
    struct conn_ctx *x = arg;
    c->task_result = run_app(c, c->task_kind, scoreboard_slot(x->sb, x->sb_index, thread));
}

/* Back from a Python thread: continue where the loop left off. */
void conn_task_done(struct pool_task *t, void *arg)
{
    struct conn *c = container_of(t, struct conn, task);
    struct conn_ctx *x = arg;

    if (c->fd < 0) { /* closed while on the thread (TASK_ABORT): free it now */
        c->next = x->closed;
        x->closed = c;
    } else {
        c->state = CONN_HEAD; /* respond() and request_done() set what comes next */
        if (c->peer_closed) {
            c->keep_alive = false;
            c->call.keep_alive = false;
        }
        if (c->unwatched) {
            c->unwatched = false;
            watch(c, c->peer_closed ? LOOP_WRITABLE : LOOP_READABLE);
        }
        respond(c, c->task_result);
        if (c->fd >= 0 && c->state == CONN_HEAD) service(c);
    }
    if (!x->accepting && !x->draining && has_room(x)) conn_listen(x, true);
}

/* --- parsing ---------------------------------------------------------------------------- */

static int start_body(struct conn *c)
{
    const struct http_request *r = &c->req;

    c->has_body = r->chunked || r->content_length >= 0;
    c->chunked = r->chunked;
    c->body_left = r->content_length > 0 ? (uint64_t)r->content_length : 0;
    if (c->chunked) http_chunked_init(&c->dec);
    if (r->expect_continue && r->minor_version == 1 && (c->chunked || c->body_left > 0) &&
        c->rlen == c->head_len)
        buf_append(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    c->state = CONN_BODY;
    c->deadline = loop_now(c->x->loop) + (uint64_t)c->x->cfg->http_timeout * 1000;
    return 0;
}

/* The uwsgi vars that stand in for the HTTP request line. */
static void uwsgi_request_line(struct conn *c)
{
    struct http_request *r = &c->req;

    memset(r, 0, sizeof(*r));
    r->minor_version = 0;
    r->content_length = -1;
    for (size_t i = 0; i < c->num_vars; i++) {
        const struct uwsgi_var *v = &c->vars[i];
        if (v->key_len == 14 && memcmp(v->key, "REQUEST_METHOD", 14) == 0) {
            r->method = v->val;
            r->method_len = v->val_len;
        } else if (v->key_len == 11 && memcmp(v->key, "REQUEST_URI", 11) == 0) {
            r->target = v->val;
            r->target_len = v->val_len;
        } else if (v->key_len == 14 && memcmp(v->key, "CONTENT_LENGTH", 14) == 0) {
            int64_t n = 0;
            for (size_t k = 0; k < v->val_len && n >= 0; k++)
                n = (v->val[k] >= '0' && v->val[k] <= '9' && n < (INT64_MAX - 9) / 10)
                        ? n * 10 + (v->val[k] - '0')
                        : -2;
            r->content_length = v->val_len ? n : -1;
        } else if (v->key_len == 15 && memcmp(v->key, "SERVER_PROTOCOL", 15) == 0) {
            r->minor_version = (v->val_len == 8 && memcmp(v->val, "HTTP/1.1", 8) == 0);
        }
    }
    if (!r->target) r->target = "";
}

static int parse_uwsgi(struct conn *c)
{
    enum uwsgi_error err = UWSGI_OK;
    int n = uwsgi_parse_request(c->rbuf, c->rlen, (size_t)c->x->cfg->buffer_size, c->vars,
                                CONN_MAX_VARS, &c->num_vars, &err);

    if (n == PARSE_INCOMPLETE) return 0;
    if (n == PARSE_ERROR) {
        log_warn("uwsgi packet from %s refused: %s", c->ls->name, uwsgi_strerror(err));
        conn_close(c);
        return -1;
    }
    uwsgi_request_line(c);
    if (c->req.content_length < -1 || !c->req.method) {
        log_warn("uwsgi packet from %s refused: %s", c->ls->name,
                 c->req.method ? "bad CONTENT_LENGTH" : "no REQUEST_METHOD");
        conn_close(c);
        return -1;
    }
    if (c->x->cfg->limit_post && c->req.content_length > c->x->cfg->limit_post) {
        http_error_response(&c->out, 413, true);
        c->close_after_write = true;
        c->keep_alive = false;
        return -1;
    }
    c->keep_alive = false; /* nginx reads a uwsgi response until the connection closes */
    c->head_len = c->pos = (size_t)n;
    return start_body(c);
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
    return start_body(c);
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
    long long limit = c->x->cfg->limit_post;
    int err;

    if (limit && c->body.size + n > (uint64_t)limit) {
        fail_request(c, 413, "request body above --limit-post");
        return -1;
    }
    err = spool_append(&c->body, p, n);
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

    if (c->chunked) return body_chunked(c);
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
 * Parses and serves whatever complete requests are buffered. Returns true if it stopped only
 * because enough output is waiting (call again once it is written).
 */
static bool advance(struct conn *c)
{
    while (c->fd >= 0 && !c->close_after_write) {
        if (c->state == CONN_HEAD) {
            if (c->rlen == 0) return false;
            if (buf_used(&c->out) >= CONN_OUT_HIGH) return true;
            if (parse_head(c) <= 0 && c->state == CONN_HEAD) return false;
        } else if (c->state == CONN_BODY) {
            if (read_body(c) <= 0) return false;
            dispatch(c);
            if (c->state == CONN_APP) return false;
        } else {
            return false;
        }
    }
    return false;
}

/* --- events ----------------------------------------------------------------------------- */

/* Writes what is pending and decides what to wait for next. Returns flush()'s result. */
static int after_output(struct conn *c)
{
    int rc = flush(c);

    if (rc < 0) {
        conn_close(c);
        return rc;
    }
    if (rc > 0) {
        want(c, true);
        return rc;
    }
    if (c->close_after_write) {
        if (c->state == CONN_LINGER || c->rlen > c->pos) {
            shutdown(c->fd, SHUT_WR); /* let the client read the answer before we close */
            c->state = CONN_LINGER;
            c->deadline = loop_now(c->x->loop) + CONN_LINGER_MS;
            want(c, false);
            return rc;
        }
        conn_close(c);
        return -1;
    }
    want(c, false);
    return rc;
}

/* Serves buffered requests and writes their responses, as long as both make progress. */
static void service(struct conn *c)
{
    for (;;) {
        bool more = advance(c);
        if (c->fd < 0 || c->state == CONN_RESPONSE || c->state == CONN_APP) return;
        if (after_output(c) != 0 || !more) return;
    }
}

/*
 * A Content-Length body that fits in memory is read straight into the spool (one copy less,
 * and reads as large as the body instead of the read buffer's room). Returns true if it
 * handled the event.
 */
static bool read_body_direct(struct conn *c)
{
    char *p;
    ssize_t n;

    if (c->state != CONN_BODY || c->chunked || c->body_left == 0 || c->rlen != c->pos) return false;
    p = spool_reserve(&c->body, (size_t)c->body_left);
    if (!p) return false;
    n = read(c->fd, p, (size_t)c->body_left);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
        conn_close(c); /* the client left in the middle of its body */
        return true;
    }
    spool_commit(&c->body, (size_t)n);
    c->body_left -= (uint64_t)n;
    c->deadline = loop_now(c->x->loop) + (uint64_t)c->x->cfg->http_timeout * 1000;
    if (c->body_left == 0) service(c);
    return true;
}

/* While a thread has the request: stop hearing about input we cannot take now. */
static void unwatch(struct conn *c)
{
    if (c->registered) loop_del(c->x->loop, c->fd);
    c->registered = false;
    c->unwatched = true;
}

static void on_readable(struct conn *c)
{
    ssize_t n;

    if (c->state == CONN_LINGER) {
        char sink[4096];
        n = read(c->fd, sink, sizeof(sink));
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) conn_close(c);
        return;
    }
    if (c->rlen == c->rcap) {
        /* full: only while a thread holds the request (else the parser said why); wait */
        if (c->state == CONN_APP) unwatch(c);
        return;
    }
    if (read_body_direct(c)) return;
    n = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (c->state == CONN_APP) {
            /* the request is on a thread: answer it, then close (the client may read) */
            unwatch(c);
            c->peer_closed = true;
            return;
        }
        conn_close(c); /* EOF or reset: nothing to answer */
        return;
    }
    if (c->state == CONN_APP) { /* read ahead: the thread only looks at rbuf[0, pos) */
        c->rlen += (size_t)n;
        return;
    }
    if (c->state == CONN_HEAD && c->rlen == 0)
        c->deadline = loop_now(c->x->loop) + (uint64_t)c->x->cfg->http_timeout * 1000;
    else if (c->state == CONN_BODY)
        c->deadline = loop_now(c->x->loop) + (uint64_t)c->x->cfg->http_timeout * 1000;
    c->rlen += (size_t)n;
    service(c);
}

static void on_writable(struct conn *c)
{
    int rc = flush(c);

    if (rc < 0) {
        conn_close(c);
        return;
    }
    if (rc > 0) return;
    if (c->state == CONN_RESPONSE) {
        c->state = CONN_HEAD; /* respond() sets it again if the app has more */
        if (c->x->pool) {
            run_elsewhere(c, TASK_RESUME);
            return;
        }
        respond(c, run_app(c, TASK_RESUME, scoreboard_slot(c->x->sb, c->x->sb_index, 0)));
        if (c->fd < 0 || c->state == CONN_RESPONSE) return;
    }
    service(c);
}

static void on_event(struct loop *l, int fd, unsigned events, void *arg)
{
    struct conn *c = arg;
    (void)l;
    (void)fd;

    if (c->state == CONN_APP) {
        /* a thread owns the response: only read ahead (or notice the client leaving) */
        if (events & LOOP_READABLE) on_readable(c);
        return;
    }
    if (events & LOOP_WRITABLE)
        on_writable(c);
    else if (events & LOOP_READABLE)
        on_readable(c);
}

/* --- timers ----------------------------------------------------------------------------- */

static void expire(struct conn *c)
{
    if (c->state == CONN_HEAD && c->rlen > 0) {
        fail_request(c, 408, "request head not received in time");
        (void)after_output(c);
    } else if (c->state == CONN_BODY) {
        fail_request(c, 408, "request body not received in time");
        (void)after_output(c);
    } else {
        conn_close(c); /* idle keep-alive, stalled reader, or lingering close done */
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
        bool idle = c->state == CONN_HEAD && c->rlen == 0 && buf_used(&c->out) == 0;
        if (c->state == CONN_APP) continue; /* a thread has it; harakiri is the master's */
        if (x->draining && idle && !unread(c))
            conn_close(c);
        else if (c->deadline && now >= c->deadline)
            expire(c);
    }
}
