/*
 * request.h - one request, whatever protocol brought it: the one representation that the
 * parsers fill, the connection keeps, and wsgi.c reads in place.
 *
 * HTTP: http_parse_request() fills the head part (method .. expect_continue) with views into
 * the connection's read buffer. uwsgi: uwsgi_request_fill() derives the same fields from the
 * packet's vars (views into the same buffer) and sets vars/num_vars. The connection then sets
 * the rest (peer, listener, body). Owner: the loop until the request is handed to the app,
 * then the app's thread until the response is complete (see worker/conn.h).
 */
#ifndef CORRAL_REQUEST_H
#define CORRAL_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_header;
struct uwsgi_var;
struct listener;
struct spool;

/* The form of a request-target (RFC 9112 §3.2). The parser accepts authority-form only to
 * refuse it (CONNECT: 501), so a parsed request never has it. */
enum request_form {
    REQUEST_FORM_ORIGIN = 0, /* "/path?query": path starts with '/' (uwsgi: always this) */
    REQUEST_FORM_ABSOLUTE,   /* "http://host/path?query": path is the part after the authority,
                                maybe empty (the app sees "/") */
    REQUEST_FORM_ASTERISK,   /* "*", OPTIONS only: path is "*" (the app sees PATH_INFO "") */
};

struct request {
    /* the head (http_parse_request, or uwsgi_request_fill from the vars) */
    const char *method; /* e.g. "GET" */
    size_t method_len;
    const char *target; /* request-target as sent (REQUEST_URI), e.g. "/a%20b?x=1" */
    size_t target_len;
    const char *path; /* target up to the first '?' (still percent-encoded); absolute-form:
                         from the end of the authority */
    size_t path_len;
    const char *query; /* after the first '?', without it; never NULL (len 0 if none) */
    size_t query_len;
    enum request_form form; /* the request-target's form (RFC 9112 §3.2) */
    const char *authority;  /* absolute-form: the target's host[:port], userinfo dropped;
                               NULL otherwise (origin-form, asterisk-form, uwsgi) */
    size_t authority_len;
    const char *userinfo; /* absolute-form: "user:pass@" inside the target (with its '@'),
                             never shown to the app; NULL when there is none */
    size_t userinfo_len;
    int minor_version;           /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
    struct http_header *headers; /* HTTP: the connection's array, num_headers filled */
    size_t num_headers;
    int64_t content_length; /* -1 when there is none */
    bool chunked;           /* Transfer-Encoding: chunked */
    bool keep_alive;        /* persistent per version and Connection (RFC 9112 §9.3) */
    bool expect_continue;   /* Expect: 100-continue */

    /* uwsgi: the packet's vars, the CGI environ as nginx built it (NULL for HTTP) */
    const struct uwsgi_var *vars;
    size_t num_vars;

    /* set by the connection */
    const struct listener *ls;
    const char *remote_addr; /* the peer (behind nginx: nginx; the client is in the vars) */
    const char *remote_port;
    const struct spool *body; /* the complete body */
    bool has_body;            /* the request had Content-Length or chunked framing */
};

#endif
