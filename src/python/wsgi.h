/*
 * wsgi.h - calling a PEP 3333 app for one request and producing its response bytes.
 *
 * The connection points a struct wsgi_call at its request and its output stage, then calls
 * wsgi_call() on the thread that owns the request. The result says what to do next:
 *   WSGI_DONE  - the whole response is in 'out' (the app's iterable is closed and released);
 *   WSGI_MORE  - send what is in 'out', then call wsgi_resume() for more. A block the app
 *                gave may be in 'out' by reference (out_append_block): it stays valid until
 *                wsgi_resume() or wsgi_abort();
 *   WSGI_ABORT - the app failed after part of the response was produced: cut the connection
 *                (the iterable is already closed and released).
 * wsgi_abort() ends a response early (client gone, worker stopping): close() is called.
 * A generator's block comes back as WSGI_MORE at once (PEP 3333: no block is delayed); a list
 * is produced until 'out' holds --response-buffer bytes. The write() callable appends to 'out'
 * and calls 'drain' once 'out' holds more than that.
 *
 * Every call of one request - wsgi_call, wsgi_resume, wsgi_abort, and the drain callback - is
 * made on the same thread (the rule of docs/threads.md), with the GIL held. The request views
 * must stay valid until the call returns DONE or ABORT.
 */
#ifndef CORRAL_WSGI_H
#define CORRAL_WSGI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "http/request.h"
#include "net/out.h"

struct _object;

enum wsgi_result {
    WSGI_DONE,
    WSGI_MORE,
    WSGI_ABORT,
};

/*
 * The write() callable's back-pressure: hands 'out' to the connection and blocks until the
 * client has taken enough of it. Called without the GIL, on the request's thread. Returns 0,
 * or -1 if the client is gone.
 */
typedef int wsgi_drain_cb(void *arg);

struct wsgi_call {
    /* in: set by the worker before wsgi_call() */
    const struct request *req;
    struct out *out; /* the response is appended here */
    bool keep_alive; /* in: the connection may persist; out: it still may */
    wsgi_drain_cb *drain;
    void *drain_arg;

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
    struct _object *block_obj; /* owner of a block in 'out' by reference */
    struct _object *status_line;
    struct _object *headers;  /* our copy of the app's header list, validated */
    struct _object *filelike; /* a wsgi.file_wrapper being sent with sendfile */
    int file_fd;              /* its descriptor and range */
    uint64_t file_off;
    uint64_t file_len;
    long seq_index;          /* next item when result is a list or tuple */
    int64_t known_total;     /* body length known before the head is written, or -1 */
    int64_t declared_length; /* Content-Length the app set, or -1 */
    size_t out_mark;         /* where this response starts in 'out' */
    bool sr_called;
    bool headers_sent;
    bool chunked;
    bool no_body;
    bool crlf_pending; /* a chunked block sent by reference still needs its CRLF */
    bool file_sent;
};

/* Creates the interned environ keys, constants and types. GIL: held; after py_load_app(). */
int wsgi_init(const struct config *cfg);
void wsgi_call_init(struct wsgi_call *c, struct out *out);
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
