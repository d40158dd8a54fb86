/*
 * fuzz_uwsgi_proto.c - libFuzzer harness for the uwsgi packet parser and encoder.
 *
 * Build: clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Isrc
 *        tests/fuzz/fuzz_uwsgi_proto.c src/uwsgi/uwsgi_proto.c src/uwsgi/uwsgi_request.c
 *        src/http/http_parser.c -o build/fuzz/fuzz_uwsgi_proto
 * Run:   build/fuzz/fuzz_uwsgi_proto tests/fuzz/corpus/uwsgi_proto
 *
 * For each input it checks (abort() on a violation, so libFuzzer keeps the input):
 *  - the result is one of the three documented outcomes, with *err and *num_vars consistent;
 *  - on success every var view lies inside the vars block, keys are non-empty, and the vars
 *    tile the block exactly in order (2-byte length, key, 2-byte length, value, ...);
 *  - the every-split property: each prefix is PARSE_INCOMPLETE until the result first appears,
 *    then every longer prefix gives the same result (same rc, error, and views);
 *  - encode(parse(x)) reproduces x's packet byte for byte (modifier2 aside: the encoder writes
 *    0), and does not fit in one byte less;
 *  - tighter limits (max_packet, max_vars) never turn an error into a success, and leave a
 *    success within them unchanged;
 *  - rc, error and var count agree with oracle(), a second, index-based statement of the
 *    grammar and of the documented error order (a differential check: the properties above
 *    cannot tell one error from another, the oracle can);
 *  - uwsgi_request_fill() on the parsed vars: its result is NO_METHOD exactly when there is no
 *    REQUEST_METHOD; target is REQUEST_URI (or ""), path and query lie within it and split it
 *    at the first '?' (path_len + 1 + query_len == target_len when there is one);
 *    content_length >= -1, and agrees with http_parse_content_length() when accepted; the
 *    form is origin-form with no authority; AMBIGUOUS exactly when (method and length being
 *    fine) a singleton HTTP_* var is repeated with a different value.
 * The input is copied into a buffer of exactly its size, so ASan catches any read past it.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_parser.h"
#include "http/request.h"
#include "uwsgi/uwsgi_proto.h"
#include "uwsgi/uwsgi_request.h"

enum {
    MAX_VARS = 64,    /* the generous limit */
    SMALL_VARS = 3,   /* the tight limit */
    SMALL_PACKET = 40 /* the tight max_packet */
};

struct outcome {
    int rc;
    enum uwsgi_error err;
    size_t n;
    struct uwsgi_var vars[MAX_VARS];
};

static void check(bool ok)
{
    if (!ok) abort();
}

static void parse(const char *buf, size_t len, size_t max_packet, size_t max_vars,
                  struct outcome *o)
{
    o->n = 12345;
    o->err = (enum uwsgi_error)77;
    o->rc = uwsgi_parse_request(buf, len, max_packet, o->vars, max_vars, &o->n, &o->err);
    check(o->rc == PARSE_INCOMPLETE || o->rc == PARSE_ERROR || o->rc > 0);
    check(o->rc > 0 || o->n == 0);
    check((o->rc == PARSE_ERROR) == (o->err != UWSGI_OK));
    check(o->n <= max_vars);
    check(o->rc <= (int)len && o->rc <= UWSGI_MAX_PACKET);
}

static bool same(const struct outcome *a, const struct outcome *b)
{
    if (a->rc != b->rc || a->err != b->err || a->n != b->n) return false;
    for (size_t i = 0; i < a->n; i++) {
        const struct uwsgi_var *x = &a->vars[i];
        const struct uwsgi_var *y = &b->vars[i];
        if (x->key != y->key || x->key_len != y->key_len) return false;
        if (x->val != y->val || x->val_len != y->val_len) return false;
    }
    return true;
}

static size_t le16_at(const char *p)
{
    return (size_t)(unsigned char)p[0] | (size_t)(unsigned char)p[1] << 8;
}

/* The vars of a successful parse tile buf[4, rc) exactly, each view inside that block. */
static void check_views(const char *buf, const struct outcome *o)
{
    const char *p = buf + UWSGI_HEADER_SIZE;
    const char *end = buf + o->rc;

    check((size_t)o->rc == UWSGI_HEADER_SIZE + le16_at(buf + 1));
    for (size_t i = 0; i < o->n; i++) {
        const struct uwsgi_var *v = &o->vars[i];
        check(end - p >= 2 && v->key == p + 2 && le16_at(p) == v->key_len);
        check(v->key_len > 0 && v->key_len <= (size_t)(end - v->key));
        p = v->key + v->key_len;
        check(end - p >= 2 && v->val == p + 2 && le16_at(p) == v->val_len);
        check(v->val_len <= (size_t)(end - v->val));
        p = v->val + v->val_len;
    }
    check(p == end);
}

/* Prefixes below the result's first appearance are INCOMPLETE, the rest all give 'whole'. */
static void check_prefixes(const char *buf, size_t len, const struct outcome *whole)
{
    static struct outcome o;
    size_t k = 0;

    for (; k <= len; k++) {
        parse(buf, k, UWSGI_MAX_PACKET, MAX_VARS, &o);
        if (o.rc != PARSE_INCOMPLETE) break;
        check(o.err == UWSGI_OK);
    }
    if (whole->rc == PARSE_INCOMPLETE) {
        check(k == len + 1);
        return;
    }
    /* A full pass over the longer prefixes would be quadratic: check the first few and the
     * last few, which is where an off-by-one would show. */
    for (size_t j = k; j <= len; j++) {
        if (j > k + 8 && j + 8 < len) j = len - 8;
        parse(buf, j, UWSGI_MAX_PACKET, MAX_VARS, &o);
        check(same(&o, whole));
    }
}

static void check_round_trip(const char *buf, const struct outcome *o)
{
    static char out[UWSGI_MAX_PACKET];
    size_t len = uwsgi_encode_vars(out, sizeof(out), o->vars, o->n, 0);

    check(len == (size_t)o->rc);
    check(out[0] == buf[0] && out[1] == buf[1] && out[2] == buf[2] && out[3] == 0);
    check(memcmp(out + 4, buf + 4, len - 4) == 0);
    check(uwsgi_encode_vars(out, len - 1, o->vars, o->n, 0) == 0);
}

/* Stores 'e' in *err and returns PARSE_ERROR. */
static int refuse(enum uwsgi_error *err, enum uwsgi_error e)
{
    *err = e;
    return PARSE_ERROR;
}

/* The reference: what uwsgi_parse_request() must return for b[0, len), by byte offsets. */
static int oracle(const unsigned char *b, size_t len, size_t max_packet, size_t max_vars,
                  enum uwsgi_error *err, size_t *nvars)
{
    size_t i = 4;
    size_t end;

    *err = UWSGI_OK;
    *nvars = 0;
    if (len < 4) return PARSE_INCOMPLETE;
    end = 4 + (size_t)b[1] + 256 * (size_t)b[2];
    if (b[0] != 0) return refuse(err, UWSGI_ERR_MODIFIER);
    if (end > max_packet) return refuse(err, UWSGI_ERR_TOO_LARGE);
    if (len < end) return PARSE_INCOMPLETE;
    for (size_t n = 0; i < end; n++) {
        size_t key_len;
        if (i + 2 > end) return refuse(err, UWSGI_ERR_TRUNCATED);
        key_len = b[i] + 256 * (size_t)b[i + 1];
        i += 2 + key_len;
        if (i > end) return refuse(err, UWSGI_ERR_TRUNCATED);
        if (key_len == 0) return refuse(err, UWSGI_ERR_EMPTY_KEY);
        if (i + 2 > end) return refuse(err, UWSGI_ERR_TRUNCATED);
        i += 2 + b[i] + 256 * (size_t)b[i + 1];
        if (i > end) return refuse(err, UWSGI_ERR_TRUNCATED);
        if (n == max_vars) return refuse(err, UWSGI_ERR_TOO_MANY_VARS);
        *nvars = n + 1;
    }
    return (int)end;
}

static void check_oracle(const char *buf, size_t len, size_t max_packet, size_t max_vars,
                         const struct outcome *o)
{
    enum uwsgi_error err;
    size_t n;
    int rc = oracle((const unsigned char *)buf, len, max_packet, max_vars, &err, &n);

    check(rc == o->rc && err == o->err);
    check(rc > 0 ? n == o->n : o->n == 0);
}

/* Tighter limits can only add errors; a packet within them parses the same. */
static void check_tight_limits(const char *buf, size_t len, const struct outcome *whole)
{
    static struct outcome o;

    parse(buf, len, SMALL_PACKET, SMALL_VARS, &o);
    check_oracle(buf, len, SMALL_PACKET, SMALL_VARS, &o);
    if (whole->rc == PARSE_ERROR) check(o.rc == PARSE_ERROR);
    if (whole->rc > 0 && whole->rc <= SMALL_PACKET && whole->n <= SMALL_VARS)
        check(same(&o, whole));
    if (o.rc > 0) check(same(&o, whole));
}

#define FIND(o, lit) uwsgi_var_find((o)->vars, (o)->n, lit, sizeof(lit) - 1)

/* A singleton header var given twice with different values (the plain statement). */
static bool has_ambiguous(const struct outcome *o)
{
    for (size_t i = 0; i < o->n; i++)
        for (size_t j = 0; j < i; j++)
            if (o->vars[i].key_len == o->vars[j].key_len &&
                memcmp(o->vars[i].key, o->vars[j].key, o->vars[i].key_len) == 0 &&
                uwsgi_var_is_singleton(&o->vars[i]) &&
                (o->vars[i].val_len != o->vars[j].val_len ||
                 memcmp(o->vars[i].val, o->vars[j].val, o->vars[i].val_len) != 0))
                return true;
    return false;
}

/* The request that uwsgi_request_fill() makes of a successful parse's vars. */
static void check_request_fill(const struct outcome *o)
{
    struct request r;
    const struct uwsgi_var *method = FIND(o, "REQUEST_METHOD");
    const struct uwsgi_var *uri = FIND(o, "REQUEST_URI");
    const struct uwsgi_var *length = FIND(o, "CONTENT_LENGTH");

    memset(&r, 0xa5, sizeof(r));
    enum uwsgi_request_error err = uwsgi_request_fill(&r, o->vars, o->n);
    check(err == UWSGI_REQ_OK || err == UWSGI_REQ_NO_METHOD || err == UWSGI_REQ_BAD_LENGTH ||
          err == UWSGI_REQ_AMBIGUOUS);
    check(uwsgi_request_strerror(err) != NULL);
    check((err == UWSGI_REQ_NO_METHOD) == (method == NULL));
    check(r.vars == o->vars && r.num_vars == o->n);
    check(r.headers == NULL && r.num_headers == 0);
    check(!r.keep_alive && !r.chunked && !r.expect_continue);
    check(r.minor_version == 0 || r.minor_version == 1);
    check(r.content_length >= -1);
    check(r.form == REQUEST_FORM_ORIGIN && r.authority == NULL && r.userinfo == NULL);

    /* target: REQUEST_URI, or "" */
    check(r.target != NULL);
    if (uri)
        check(r.target == uri->val && r.target_len == uri->val_len);
    else
        check(r.target_len == 0);
    /* path and query lie within the target and split it at the first '?' */
    const char *end = r.target + r.target_len;
    const char *q = r.target_len ? memchr(r.target, '?', r.target_len) : NULL;
    check(r.path == r.target && r.path_len <= r.target_len);
    check(r.query != NULL && r.query >= r.target && r.query <= end);
    check(r.query_len <= (size_t)(end - r.query) && r.query + r.query_len == end);
    if (q) {
        check(r.path + r.path_len == q && r.query == q + 1);
        check(r.path_len + 1 + r.query_len == r.target_len);
    } else {
        check(r.path_len == r.target_len && r.query_len == 0);
    }

    if (err == UWSGI_REQ_NO_METHOD) return;
    check(r.method == method->val && r.method_len == method->val_len);
    enum uwsgi_request_error fine = has_ambiguous(o) ? UWSGI_REQ_AMBIGUOUS : UWSGI_REQ_OK;
    if (!length || length->val_len == 0) {
        check(err == fine && r.content_length == -1);
        return;
    }
    int64_t v = http_parse_content_length(length->val, length->val_len);
    check((err == UWSGI_REQ_BAD_LENGTH) == (v < 0));
    if (v >= 0) check(err == fine && r.content_length == v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct outcome whole;
    char *buf = malloc(size ? size : 1);

    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    parse(buf, size, UWSGI_MAX_PACKET, MAX_VARS, &whole);
    check_oracle(buf, size, UWSGI_MAX_PACKET, MAX_VARS, &whole);
    if (whole.rc > 0) {
        check_views(buf, &whole);
        check_round_trip(buf, &whole);
        check_request_fill(&whole);
    }
    check_prefixes(buf, size, &whole);
    check_tight_limits(buf, size, &whole);
    free(buf);
    return 0;
}
