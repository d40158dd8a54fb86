/*
 * wsgi.h - calling a PEP 3333 app for one request and producing its response bytes.
 *
 * The worker fills a struct wsgi_call's request part and output buffer, then calls
 * wsgi_call(). The result says what to do next:
 *   WSGI_DONE  - the whole response is in 'out' (the app's iterable is closed and released);
 *   WSGI_MORE  - send 'out', then c->chunk (a zero-copy block) and the file range
 *                c->file_fd/file_off/file_len if set, then call wsgi_resume() for more;
 *   WSGI_ABORT - the app failed after bytes of the response were sent: cut the connection
 *                (the iterable is already closed and released).
 * wsgi_abort() ends a response early (client gone, worker stopping): close() is called.
 * The loop, not the app, drives a long response: between WSGI_MORE and wsgi_resume() nothing
 * of the request holds a Python thread, so a slow reader costs memory, not a thread.
 *
 * All functions: GIL held, by the thread serving the request. The request views must stay
 * valid until the call returns DONE or ABORT (the connection keeps its buffer until then).
 */
#ifndef CORRAL_WSGI_H
#define CORRAL_WSGI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "http/http_parser.h"
#include "net/sock.h"
#include "util/buf.h"
#include "util/spool.h"
#include "uwsgi/uwsgi_proto.h"

struct _object;

/* The request, as the worker parsed it. HTTP listeners set headers; uwsgi listeners vars. */
struct wsgi_request {
    const char *method;
    size_t method_len;
    const char *target; /* REQUEST_URI */
    size_t target_len;
    const char *path; /* still percent-encoded */
    size_t path_len;
    const char *query;
    size_t query_len;
    int minor_version; /* SERVER_PROTOCOL HTTP/1.<minor> */
    const struct http_header *headers;
    size_t num_headers;
    const struct uwsgi_var *vars;
    size_t num_vars;
    const char *remote_addr;
    const char *remote_port;
    const struct listener *ls;
    const struct spool *body; /* the complete body */
    bool has_body;            /* the request had Content-Length or chunked framing */
};

enum wsgi_result {
    WSGI_DONE,
    WSGI_MORE,
    WSGI_ABORT,
};

/*
 * Blocks until 'out' has been written (write() callable only). Called without the GIL.
 * Returns 0, or -1 if the client is gone.
 */
typedef int wsgi_drain_cb(void *arg);

struct wsgi_call {
    /* in: set by the worker before wsgi_call() */
    struct wsgi_request req;
    struct buf *out; /* response bytes are appended here */
    bool keep_alive; /* in: the connection may persist; out: it still may */
    bool is_uwsgi;   /* the request came over the uwsgi protocol */
    wsgi_drain_cb *drain;
    void *drain_arg;

    /* out: what to send after 'out' on WSGI_MORE */
    const char *chunk; /* a large block, sent without copying */
    size_t chunk_len;
    int file_fd; /* -1, or a file to send with sendfile() */
    uint64_t file_off;
    uint64_t file_len;

    /* out: for the access log */
    int status;          /* the response status code */
    uint64_t body_bytes; /* body bytes produced */

    /* private to wsgi.c */
    struct _object *environ;
    struct _object *sr;     /* start_response */
    struct _object *writer; /* the write() callable, once start_response returned it */
    struct _object *input;
    struct _object *result;    /* what the app returned (close() is called on it) */
    struct _object *iter;      /* iterator over result, when it is not a list or tuple */
    struct _object *chunk_obj; /* owner of 'chunk' */
    struct _object *status_line;
    struct _object *headers;
    struct _object *filelike; /* a wsgi.file_wrapper being sent with sendfile */
    long seq_index;           /* next item when result is a list or tuple */
    int64_t known_total;      /* body length known before the head is written, or -1 */
    int64_t declared_length;  /* Content-Length the app set, or -1 */
    size_t out_mark;          /* where this response starts in 'out' */
    bool sr_called;
    bool headers_sent;
    bool chunked;
    bool no_body;
    bool crlf_pending; /* a chunked block sent zero-copy still needs its CRLF */
    bool file_sent;
};

/* Creates the interned environ keys, constants and types. GIL: held; after py_load_app(). */
int wsgi_init(const struct config *cfg);
void wsgi_call_init(struct wsgi_call *c, struct buf *out);
enum wsgi_result wsgi_call(struct wsgi_call *c);
enum wsgi_result wsgi_resume(struct wsgi_call *c);
void wsgi_abort(struct wsgi_call *c);
/*
 * Harakiri, step one: logs the Python traceback of thread 'ident' (serving 'request') and
 * raises corral.HarakiriTimeout in it, so the app unwinds and the client gets 504. Called from
 * the worker's watchdog thread; takes the GIL itself.
 */
void wsgi_harakiri(uint64_t ident, const char *request, int seconds);

/* True while a response is between WSGI_MORE and its end. */
bool wsgi_in_progress(const struct wsgi_call *c);

#endif
