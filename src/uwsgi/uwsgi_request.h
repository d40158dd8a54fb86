/*
 * uwsgi_request.h - a uwsgi packet's vars as a struct request: the adapter that lets the
 * connection and wsgi.c treat a request from nginx's uwsgi_pass like an HTTP one.
 *
 * Pure, like the parser: views into the packet, no allocation.
 */
#ifndef CORRAL_UWSGI_REQUEST_H
#define CORRAL_UWSGI_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include "http/request.h"
#include "uwsgi/uwsgi_proto.h"

/* The first var named key[0, len), or NULL. The one var lookup. */
const struct uwsgi_var *uwsgi_var_find(const struct uwsgi_var *vars, size_t n, const char *key,
                                       size_t len);

/* True if v is a request header as nginx passes it: "HTTP_" and a non-empty name. */
bool uwsgi_var_is_header(const struct uwsgi_var *v);

/* True if v is a request header (HTTP_USER_AGENT, ...) of a field RFC 9110 defines as a single
 * value (http_field_is_singleton: '_' in the var stands for '-' in the field name). */
bool uwsgi_var_is_singleton(const struct uwsgi_var *v);

/* Why uwsgi_request_fill() refused the vars. */
enum uwsgi_request_error {
    UWSGI_REQ_OK = 0,
    UWSGI_REQ_NO_METHOD,  /* no REQUEST_METHOD */
    UWSGI_REQ_BAD_LENGTH, /* CONTENT_LENGTH is not a number */
    UWSGI_REQ_AMBIGUOUS,  /* a singleton header var (HTTP_AUTHORIZATION, ...) repeated with a
                             different value: the HTTP listener answers such a head 400 */
};

/*
 * Fills r's head from vars[0, n): method (REQUEST_METHOD), target (REQUEST_URI, "" if absent)
 * split into path and query, minor_version (SERVER_PROTOCOL HTTP/1.1 or not), content_length
 * (CONTENT_LENGTH; absent or empty: -1); keep_alive false (nginx reads a uwsgi response until
 * the connection closes); headers none; form origin (nginx passes REQUEST_URI in origin-form
 * even when the client sent absolute-form), no authority or userinfo; vars/num_vars set. The
 * connection's fields are left. Repeated HTTP_* vars are request headers nginx passed one per
 * field line: a singleton one (uwsgi_var_is_singleton) repeated with a different value is
 * UWSGI_REQ_AMBIGUOUS (the other repeats are joined in the environ, see wsgi.c).
 */
enum uwsgi_request_error uwsgi_request_fill(struct request *r, const struct uwsgi_var *vars,
                                            size_t n);

/* A static, lowercase description of 'err'. */
const char *uwsgi_request_strerror(enum uwsgi_request_error err);

#endif
