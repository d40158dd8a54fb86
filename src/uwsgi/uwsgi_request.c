/*
 * uwsgi_request.c - a uwsgi packet's vars as a struct request (see uwsgi_request.h).
 */
#include "uwsgi/uwsgi_request.h"

#include <string.h>

#include "http/http_parser.h"

/* Longer than the longest singleton field name (proxy-authorization, 19). */
enum { UWSGI_FIELD_NAME_MAX = 32 };

#define VAR(vars, n, lit) uwsgi_var_find(vars, n, lit, sizeof(lit) - 1)

const struct uwsgi_var *uwsgi_var_find(const struct uwsgi_var *vars, size_t n, const char *key,
                                       size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (vars[i].key_len == len && memcmp(vars[i].key, key, len) == 0) return &vars[i];
    return NULL;
}

bool uwsgi_var_is_header(const struct uwsgi_var *v)
{
    return v->key_len > 5 && memcmp(v->key, "HTTP_", 5) == 0;
}

bool uwsgi_var_is_singleton(const struct uwsgi_var *v)
{
    char name[UWSGI_FIELD_NAME_MAX];
    size_t n = v->key_len - 5;

    if (!uwsgi_var_is_header(v) || n > sizeof(name)) return false;
    for (size_t i = 0; i < n; i++) {
        char c = v->key[5 + i];
        if (c == '-') return false; /* HTTP_X-Y is no name nginx writes */
        name[i] = c == '_' ? '-' : c;
    }
    return http_field_is_singleton(name, n);
}

/* A singleton header var repeated with a different value (the HTTP listener's 400). Only
 * singleton vars are compared with the rest, so this costs little for the usual packet. */
static bool ambiguous(const struct uwsgi_var *vars, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!uwsgi_var_is_singleton(&vars[i])) continue;
        for (size_t j = i + 1; j < n; j++)
            if (vars[j].key_len == vars[i].key_len &&
                memcmp(vars[j].key, vars[i].key, vars[i].key_len) == 0 &&
                (vars[j].val_len != vars[i].val_len ||
                 memcmp(vars[j].val, vars[i].val, vars[i].val_len) != 0))
                return true;
    }
    return false;
}

enum uwsgi_request_error uwsgi_request_fill(struct request *r, const struct uwsgi_var *vars,
                                            size_t n)
{
    const struct uwsgi_var *method = VAR(vars, n, "REQUEST_METHOD");
    const struct uwsgi_var *uri = VAR(vars, n, "REQUEST_URI");
    const struct uwsgi_var *length = VAR(vars, n, "CONTENT_LENGTH");
    const struct uwsgi_var *proto = VAR(vars, n, "SERVER_PROTOCOL");
    const char *q;

    r->method = method ? method->val : NULL;
    r->method_len = method ? method->val_len : 0;
    r->target = uri ? uri->val : "";
    r->target_len = uri ? uri->val_len : 0;
    q = r->target_len ? memchr(r->target, '?', r->target_len) : NULL;
    r->path = r->target;
    r->path_len = q ? (size_t)(q - r->target) : r->target_len;
    r->query = q ? q + 1 : r->target + r->target_len;
    r->query_len = q ? r->target_len - r->path_len - 1 : 0;
    r->form = REQUEST_FORM_ORIGIN;
    r->authority = NULL;
    r->authority_len = 0;
    r->userinfo = NULL;
    r->userinfo_len = 0;
    r->minor_version = proto && proto->val_len == 8 && memcmp(proto->val, "HTTP/1.1", 8) == 0;
    r->headers = NULL;
    r->num_headers = 0;
    r->content_length = -1;
    r->chunked = false;
    r->keep_alive = false;
    r->expect_continue = false;
    r->vars = vars;
    r->num_vars = n;
    if (!method) return UWSGI_REQ_NO_METHOD;
    if (length && length->val_len > 0) {
        r->content_length = http_parse_content_length(length->val, length->val_len);
        if (r->content_length < 0) return UWSGI_REQ_BAD_LENGTH;
    }
    if (ambiguous(vars, n)) return UWSGI_REQ_AMBIGUOUS;
    return UWSGI_REQ_OK;
}

const char *uwsgi_request_strerror(enum uwsgi_request_error err)
{
    switch (err) {
    case UWSGI_REQ_OK:
        return "no error";
    case UWSGI_REQ_NO_METHOD:
        return "no REQUEST_METHOD";
    case UWSGI_REQ_BAD_LENGTH:
        return "bad CONTENT_LENGTH";
    case UWSGI_REQ_AMBIGUOUS:
        return "a singleton header var repeated with a different value";
    }
    return "unknown error";
}
