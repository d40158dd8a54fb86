/*
 * uwsgi_request.h - a uwsgi packet's vars as a struct request: the adapter that lets the
 * connection and wsgi.c treat a request from nginx's uwsgi_pass like an HTTP one.
 *
 * Pure, like the parser: views into the packet, no allocation.
 */
#ifndef CORRAL_UWSGI_REQUEST_H
#define CORRAL_UWSGI_REQUEST_H

#include <stddef.h>

#include "http/request.h"
#include "uwsgi/uwsgi_proto.h"

/* The first var named key[0, len), or NULL. The one var lookup. */
const struct uwsgi_var *uwsgi_var_find(const struct uwsgi_var *vars, size_t n, const char *key,
                                       size_t len);

/* Why uwsgi_request_fill() refused the vars. */
enum uwsgi_request_error {
    UWSGI_REQ_OK = 0,
    UWSGI_REQ_NO_METHOD,  /* no REQUEST_METHOD */
    UWSGI_REQ_BAD_LENGTH, /* CONTENT_LENGTH is not a number */
};

/*
 * Fills r's head from vars[0, n): method (REQUEST_METHOD), target (REQUEST_URI, "" if absent)
 * split into path and query, minor_version (SERVER_PROTOCOL HTTP/1.1 or not), content_length
 * (CONTENT_LENGTH; absent or empty: -1); keep_alive false (nginx reads a uwsgi response until
 * the connection closes); headers none; vars/num_vars set. The connection's fields are left.
 */
enum uwsgi_request_error uwsgi_request_fill(struct request *r, const struct uwsgi_var *vars,
                                            size_t n);

/* A static, lowercase description of 'err'. */
const char *uwsgi_request_strerror(enum uwsgi_request_error err);

#endif
