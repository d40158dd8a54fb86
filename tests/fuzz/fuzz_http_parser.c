/*
 * fuzz_http_parser.c - libFuzzer harness for src/http/http_parser.c.
 *
 * Each input is parsed as a request head twice (roomy limits, then tight limits derived from
 * the input), and whatever follows the head (or the whole input, if there is no head) is run
 * through the chunked decoder. Beyond "no crash, no sanitizer report" it checks invariants of
 * each result and the every-split property: a prefix of the head parses as PARSE_INCOMPLETE or
 * as the same result, and the chunked bytes fed whole, split in two at a position derived from
 * the input, or one byte at a time decode to the same bytes and result. Every parse reads from
 * an exactly-sized heap copy, so ASan catches a read past the end.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -Isrc tests/fuzz/fuzz_http_parser.c
 *        src/http/http_parser.c   (or `make fuzz CC=clang`)
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_parser.h"

enum { MAX_HEADERS = 64 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
    if (!ok) abort();
}

/* FNV-1a: a position and limits that vary with the input but are stable for it. */
static uint64_t hash(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

/* Parses p[0, n) from an exactly-sized heap copy. */
static int parse_copy(const uint8_t *p, size_t n, struct request *r, struct http_header *h,
                      const struct http_limits *lim, int *status)
{
    char *buf = malloc(n ? n : 1);
    check(buf != NULL);
    if (n) memcpy(buf, p, n);
    *status = 0;
    int rc = http_parse_request(buf, n, r, h, lim, status);
    if (rc > 0) { /* views must not outlive the copy: check them now, against the copy */
        check((size_t)rc <= n && r->method >= buf && r->target + r->target_len <= buf + rc);
    }
    free(buf);
    return rc;
}

static bool has_edge_ows(const char *v, size_t n)
{
    return n && (v[0] == ' ' || v[0] == '\t' || v[n - 1] == ' ' || v[n - 1] == '\t');
}

/* What every successful parse must satisfy. */
static void check_request(const char *buf, int rc, const struct request *r,
                          const struct http_limits *lim)
{
    check((size_t)rc <= lim->max_head);
    check(r->method >= buf && r->method_len > 0 && r->target_len > 0);
    check(r->target + r->target_len <= buf + rc);
    check(r->path >= r->target && r->path + r->path_len <= r->target + r->target_len);
    check(r->query + r->query_len == r->target + r->target_len);
    check(!(r->method_len == 7 && memcmp(r->method, "CONNECT", 7) == 0)); /* always 501 */
    switch (r->form) {
    case REQUEST_FORM_ORIGIN:
        check(r->path == r->target && r->target[0] == '/' && !r->authority && !r->userinfo);
        break;
    case REQUEST_FORM_ASTERISK:
        check(r->target_len == 1 && r->target[0] == '*' && !r->authority && !r->userinfo);
        check(r->method_len == 7 && memcmp(r->method, "OPTIONS", 7) == 0);
        break;
    case REQUEST_FORM_ABSOLUTE: /* scheme "://" [userinfo] authority, then the path */
        check(r->authority && r->authority_len > 0 && r->authority > r->target + 6);
        check(r->authority + r->authority_len == r->path);
        check(!memchr(r->authority, '@', r->authority_len));
        check(!r->userinfo || r->userinfo + r->userinfo_len == r->authority);
        check(!r->userinfo || (r->userinfo_len > 0 && r->userinfo[r->userinfo_len - 1] == '@'));
        check(r->path_len == 0 || r->path[0] == '/');
        break;
    default:
        check(false);
    }
    check(r->minor_version == 0 || r->minor_version == 1);
    check(r->num_headers <= lim->max_headers);
    check(!r->chunked || r->content_length == -1);
    check(!r->chunked || r->minor_version == 1);
    check(lim->max_body == 0 || r->content_length <= (int64_t)lim->max_body);
    for (size_t i = 0; i < r->num_headers; i++) {
        const struct http_header *h = &r->headers[i];
        check(h->name >= buf && h->value + h->value_len <= buf + rc && h->name_len > 0);
        check(!memchr(h->value, '\r', h->value_len) && !memchr(h->value, '\n', h->value_len));
        check(!memchr(h->name, ':', h->name_len) && !has_edge_ows(h->value, h->value_len));
    }
}

static bool is_known_status(int s)
{
    return s == 400 || s == 413 || s == 414 || s == 431 || s == 501 || s == 505;
}

/* Parses the head whole and at one split position; returns the whole parse's result. */
static int fuzz_head(const uint8_t *data, size_t size, const struct http_limits *lim, size_t k)
{
    struct http_header h[MAX_HEADERS];
    struct request r;
    int status;
    char *buf = malloc(size ? size : 1);
    check(buf != NULL);
    if (size) memcpy(buf, data, size);
    int rc = http_parse_request(buf, size, &r, h, lim, &status);
    if (rc > 0) check_request(buf, rc, &r, lim);
    if (rc == PARSE_ERROR) check(is_known_status(status));
    if (rc == PARSE_INCOMPLETE) check(size < lim->max_head);
    free(buf);

    int status_k;
    int rc_k = parse_copy(data, k, &r, h, lim, &status_k);
    if (rc > 0 && k >= (size_t)rc)
        check(rc_k == rc);
    else if (rc_k == PARSE_ERROR)
        check(rc == PARSE_ERROR && status_k == status);
    else
        check(rc_k == PARSE_INCOMPLETE);
    return rc;
}

/* The outcome of decoding a chunked body. */
struct decoded {
    int result;
    uint8_t *body; /* as large as the input */
    size_t body_len;
    size_t consumed;
};

/* Decodes in[0, n) delivered in pieces of 'step' bytes, the first piece 'first' bytes long. */
static void decode(const uint8_t *in, size_t n, size_t first, size_t step, struct decoded *out)
{
    struct http_chunked d;
    http_chunked_init(&d);
    size_t off = 0;
    size_t avail = first < n ? first : n;
    out->body_len = 0;
    for (;;) {
        size_t used;
        const char *view;
        size_t vlen;
        char *win = malloc(avail - off ? avail - off : 1);
        check(win != NULL);
        memcpy(win, in + off, avail - off);
        int rc = http_chunked_decode(&d, win, avail - off, &used, &view, &vlen);
        check(used <= avail - off);
        if (rc == HTTP_CHUNK_DATA) {
            check(vlen > 0 && view >= win && view + vlen <= win + used);
            memcpy(out->body + out->body_len, view, vlen);
            out->body_len += vlen;
        }
        free(win);
        off += used;
        if (rc == HTTP_CHUNK_DATA) continue;
        if (rc == PARSE_INCOMPLETE && avail < n) {
            check(off == avail);
            avail = avail + step < n ? avail + step : n;
            continue;
        }
        out->result = rc;
        out->consumed = off;
        return;
    }
}

static void check_same(const struct decoded *a, const struct decoded *b)
{
    check(a->result == b->result && a->consumed == b->consumed);
    check(a->body_len == b->body_len && memcmp(a->body, b->body, a->body_len) == 0);
}

static void fuzz_chunked(const uint8_t *in, size_t n, size_t k)
{
    struct decoded whole = {.body = malloc(n + 1)};
    struct decoded split = {.body = malloc(n + 1)};
    check(whole.body && split.body);
    decode(in, n, n, n, &whole);
    check(whole.body_len <= n && whole.consumed <= n);
    decode(in, n, k, n, &split);
    check_same(&whole, &split);
    decode(in, n, 1, 1, &split); /* one byte at a time */
    check_same(&whole, &split);
    free(whole.body);
    free(split.body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t h = hash(data, size);
    size_t k = (size_t)(h % (size + 1));
    const struct http_limits roomy = {.max_head = 65536, .max_headers = MAX_HEADERS};
    const struct http_limits tight = {
        .max_head = 1 + (size_t)((h >> 20) % (size + 2)),
        .max_headers = (size_t)((h >> 40) % 4),
        .max_body = (h >> 50) % 2 ? 100 : 0,
    };
    int rc = fuzz_head(data, size, &roomy, k);
    fuzz_head(data, size, &tight, k);

    size_t off = rc > 0 ? (size_t)rc : 0;
    size_t k2 = (size_t)((h >> 32) % (size - off + 1));
    fuzz_chunked(data + off, size - off, k2);
    return 0;
}
