/*
 * diff_llhttp.c - a test-only differential check and benchmark of corral's HTTP/1.x request
 * parser (src/http/http_parser.c) against llhttp 8.1.0, the parser of Node.js, as Debian's
 * node-llhttp package ships it (sources in /usr/share/llhttp, header in
 * /usr/share/include/llhttp; compiled in from there, never copied, never part of corral).
 *
 * Each request (built in, or one per file named on the command line) goes to both parsers.
 * Both readings are put in one form (accept/reject, method, target, version, header fields,
 * Content-Length, chunked, keep-alive, and the decoded chunked body) and compared. A
 * disagreement that matches one of the known, deliberate differences (each printed with its
 * reason: mostly llhttp leniencies that RFC 9112 says to reject) is listed as such; any
 * other makes the program exit 1.
 * --mutate also compares every one-byte deletion, duplication and substitution of the
 * built-in requests. --bench times both parsers (ns per parse) on two typical requests.
 *
 * Build: cc -O2 -std=c11 -D_GNU_SOURCE -Isrc -I/usr/share/include/llhttp -o build/diff_llhttp
 *        tests/fuzz/diff_llhttp.c src/http/http_parser.c /usr/share/llhttp/llhttp.c
 *        /usr/share/llhttp/api.c /usr/share/llhttp/http.c
 * Usage: build/diff_llhttp [--mutate] [--bench] [FILE...]
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "llhttp.h"

#include "http/http_parser.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

enum {
    MAX_FIELDS = 64,
    MAX_INPUT = 1 << 16,
};

enum outcome { NONE, ACCEPT, REJECT, INCOMPLETE };
static const char *const outcome_name[] = {"none", "accept", "reject", "incomplete"};

struct span {
    const char *p;
    size_t n;
};

/* One parser's reading of a request, in a form both parsers can fill. */
struct reading {
    enum outcome head;             /* the request head */
    size_t head_len;               /* bytes through the empty line */
    struct span method;            /* views into the input */
    struct span target;            /* request-target */
    int major;                     /* HTTP-version */
    int minor;                     /* HTTP-version */
    size_t nfields;                /* header fields */
    struct span name[MAX_FIELDS];  /* field names */
    struct span value[MAX_FIELDS]; /* field values, OWS-trimmed */
    int64_t content_length;        /* -1: none */
    bool chunked;                  /* Transfer-Encoding: chunked */
    bool keep_alive;               /* the connection persists */
    enum outcome body;             /* the chunked body (NONE if not chunked) */
    char *body_bytes;              /* the decoded body (MAX_INPUT bytes of room) */
    size_t body_len;               /* its length */
    size_t body_error_at;          /* corral: input bytes consumed when the body failed */
    size_t data_end;               /* corral: where the last complete chunk's data ended */
    size_t error_pos;              /* llhttp: where it stopped on an error */
    char why[96];                  /* the rejecting parser's reason */
};

static void reading_reset(struct reading *v)
{
    char *bytes = v->body_bytes;
    *v = (struct reading){.content_length = -1, .body_bytes = bytes};
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static struct span trim(struct span s)
{
    while (s.n && is_ows(s.p[0])) {
        s.p++;
        s.n--;
    }
    while (s.n && is_ows(s.p[s.n - 1]))
        s.n--;
    return s;
}

/* ---- corral ---- */

static void decode_ours(const char *in, size_t len, struct reading *v)
{
    struct http_chunked d;
    http_chunked_init(&d);
    size_t off = 0;
    for (;;) {
        size_t used;
        const char *data;
        size_t n;
        int rc = http_chunked_decode(&d, in + off, len - off, &used, &data, &n);
        off += used;
        if (rc == HTTP_CHUNK_DATA) {
            memcpy(v->body_bytes + v->body_len, data, n);
            v->body_len += n;
            if (d.remaining == 0) v->data_end = v->head_len + off;
            continue;
        }
        v->body = rc == HTTP_CHUNK_DONE ? ACCEPT : rc == PARSE_ERROR ? REJECT : INCOMPLETE;
        v->body_error_at = v->head_len + off;
        if (rc == PARSE_ERROR) snprintf(v->why, sizeof(v->why), "chunked body error");
        return;
    }
}

static void run_ours(const char *in, size_t len, struct reading *v)
{
    const struct http_limits lim = {.max_head = MAX_INPUT, .max_headers = MAX_FIELDS};
    struct http_header h[MAX_FIELDS];
    struct request r;
    int status = 0;
    reading_reset(v);
    int rc = http_parse_request(in, len, &r, h, &lim, &status);
    if (rc <= 0) {
        v->head = rc == PARSE_ERROR ? REJECT : INCOMPLETE;
        snprintf(v->why, sizeof(v->why), "status %d", status);
        return;
    }
    v->head = ACCEPT;
    v->head_len = (size_t)rc;
    v->method = (struct span){r.method, r.method_len};
    v->target = (struct span){r.target, r.target_len};
    v->major = 1;
    v->minor = r.minor_version;
    v->nfields = r.num_headers;
    for (size_t i = 0; i < r.num_headers; i++) {
        v->name[i] = (struct span){h[i].name, h[i].name_len};
        v->value[i] = (struct span){h[i].value, h[i].value_len};
    }
    v->content_length = r.content_length;
    v->chunked = r.chunked;
    v->keep_alive = r.keep_alive;
    if (r.chunked) decode_ours(in + rc, len - (size_t)rc, v);
}

/* ---- llhttp ---- */

/* What the callbacks fill; 'last' tells a new header field from the rest of the last one. */
struct ll_ctx {
    struct reading *v;
    int last;       /* 0, 'n' after a name span, 'v' after a value span */
    bool head_done; /* later field spans are trailer fields: ignored */
    bool complete;  /* the message ended */
};

static void extend(struct span *s, const char *at, size_t n)
{
    if (!s->p) s->p = at;
    s->n = (size_t)(at + n - s->p);
}

static int ll_method(llhttp_t *p, const char *at, size_t n)
{
    struct ll_ctx *c = p->data;
    extend(&c->v->method, at, n);
    return 0;
}

static int ll_url(llhttp_t *p, const char *at, size_t n)
{
    struct ll_ctx *c = p->data;
    extend(&c->v->target, at, n);
    return 0;
}

static int ll_field(llhttp_t *p, const char *at, size_t n)
{
    struct ll_ctx *c = p->data;
    struct reading *v = c->v;
    if (c->head_done) return 0;
    if (c->last != 'n') {
        if (v->nfields == MAX_FIELDS) return -1;
        v->nfields++;
    }
    c->last = 'n';
    extend(&v->name[v->nfields - 1], at, n);
    return 0;
}

static int ll_value(llhttp_t *p, const char *at, size_t n)
{
    struct ll_ctx *c = p->data;
    if (c->head_done) return 0;
    c->last = 'v';
    extend(&c->v->value[c->v->nfields - 1], at, n);
    return 0;
}

/* Pauses at the end of the head, so the caller learns where it ends. */
static int ll_headers_complete(llhttp_t *p)
{
    struct ll_ctx *c = p->data;
    struct reading *v = c->v;
    c->head_done = true;
    v->major = llhttp_get_http_major(p);
    v->minor = llhttp_get_http_minor(p);
    v->content_length = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : -1;
    v->chunked = (p->flags & F_CHUNKED) != 0;
    v->keep_alive = llhttp_should_keep_alive(p);
    return HPE_PAUSED;
}

static int ll_body(llhttp_t *p, const char *at, size_t n)
{
    struct ll_ctx *c = p->data;
    memcpy(c->v->body_bytes + c->v->body_len, at, n);
    c->v->body_len += n;
    return 0;
}

static int ll_message_complete(llhttp_t *p)
{
    struct ll_ctx *c = p->data;
    c->complete = true;
    return HPE_PAUSED;
}

static llhttp_settings_t ll_settings(void)
{
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_method = ll_method;
    s.on_url = ll_url;
    s.on_header_field = ll_field;
    s.on_header_value = ll_value;
    s.on_headers_complete = ll_headers_complete;
    s.on_body = ll_body;
    s.on_message_complete = ll_message_complete;
    return s;
}

static void ll_reason(llhttp_t *p, llhttp_errno_t err, struct reading *v, const char *in)
{
    if (llhttp_get_error_pos(p)) v->error_pos = (size_t)(llhttp_get_error_pos(p) - in);
    snprintf(v->why, sizeof(v->why), "%s: %s", llhttp_errno_name(err),
             llhttp_get_error_reason(p) ? llhttp_get_error_reason(p) : "");
}

static void run_llhttp(const char *in, size_t len, struct reading *v)
{
    llhttp_settings_t s = ll_settings();
    llhttp_t p;
    struct ll_ctx c = {.v = v};
    reading_reset(v);
    llhttp_init(&p, HTTP_REQUEST, &s);
    p.data = &c;
    llhttp_errno_t err = llhttp_execute(&p, in, len);
    if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
        v->head = err == HPE_OK ? INCOMPLETE : REJECT;
        ll_reason(&p, err, v, in);
        return;
    }
    v->head = ACCEPT;
    v->head_len = (size_t)(llhttp_get_error_pos(&p) - in);
    for (size_t i = 0; i < v->nfields; i++)
        v->value[i] = trim(v->value[i]);
    if (!v->chunked || err == HPE_PAUSED_UPGRADE) return;
    llhttp_resume(&p);
    err = llhttp_execute(&p, in + v->head_len, len - v->head_len);
    v->body = c.complete ? ACCEPT : err == HPE_OK ? INCOMPLETE : REJECT;
    if (v->body == REJECT) ll_reason(&p, err, v, in);
}

/* ---- comparison ---- */

static bool span_eq(struct span a, struct span b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

/* Describes the first difference between two readings into 'out'; false if they agree. */
static bool differ(const struct reading *a, const struct reading *b, char *out, size_t cap)
{
    if (a->head != b->head) {
        snprintf(out, cap, "head: corral %s (%s), llhttp %s (%s)", outcome_name[a->head], a->why,
                 outcome_name[b->head], b->why);
        return true;
    }
    if (a->head != ACCEPT) return false;
    const char *what = NULL;
    if (a->head_len != b->head_len) what = "head length";
    if (!span_eq(a->method, b->method)) what = "method";
    if (!span_eq(a->target, b->target)) what = "target";
    if (a->major != b->major || a->minor != b->minor) what = "version";
    if (a->nfields != b->nfields) what = "number of header fields";
    for (size_t i = 0; !what && i < a->nfields; i++) {
        if (!span_eq(a->name[i], b->name[i]) || !span_eq(a->value[i], b->value[i]))
            what = "a header field";
    }
    if (a->content_length != b->content_length) what = "content-length";
    if (a->chunked != b->chunked) what = "chunked";
    if (a->keep_alive != b->keep_alive) what = "keep-alive";
    if (!what && a->body != b->body) {
        snprintf(out, cap, "chunked body: corral %s (%s), llhttp %s (%s)", outcome_name[a->body],
                 a->why, outcome_name[b->body], b->why);
        return true;
    }
    if (a->body == ACCEPT &&
        (a->body_len != b->body_len || memcmp(a->body_bytes, b->body_bytes, a->body_len) != 0))
        what = "decoded body";
    if (what) snprintf(out, cap, "%s", what);
    return what != NULL;
}

/* ---- known, deliberate differences ---- */

/*
 * A disagreement is classified by where corral failed: the every-split property makes the
 * smallest failing prefix of a head well defined, so its last byte is the byte that proved
 * the error; for a body, the decoder consumes up to and including that byte. Each rule then
 * names a construct that RFC 9112 says to reject and that llhttp's lenient build lets
 * through (or, for the last rules, a construct llhttp rejects and corral accepts).
 */
struct seen {
    const char *in;             /* the input */
    size_t len;                 /* its length */
    const struct reading *ours; /* corral's reading */
    const struct reading *ll;   /* llhttp's reading */
    size_t err;                 /* the byte that proved corral's error; SIZE_MAX if none */
    bool err_in_body;           /* that byte is in the chunked body */
    int status;                 /* corral's status for a rejected head */
};

/* The byte at which corral's head parse first fails (binary search over prefixes). */
static size_t head_error_at(const char *in, size_t len, int *status)
{
    const struct http_limits lim = {.max_head = MAX_INPUT, .max_headers = MAX_FIELDS};
    struct http_header h[MAX_FIELDS];
    struct request r;
    size_t lo = 0;   /* prefixes of length <= lo do not fail */
    size_t hi = len; /* the prefix of length hi fails */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (http_parse_request(in, mid, &r, h, &lim, status) == PARSE_ERROR)
            hi = mid;
        else
            lo = mid;
    }
    http_parse_request(in, hi, &r, h, &lim, status);
    return hi - 1;
}

static void locate_error(struct seen *s)
{
    s->err = SIZE_MAX;
    if (s->ours->head == REJECT) s->err = head_error_at(s->in, s->len, &s->status);
    if (s->ours->head == ACCEPT && s->ours->body == REJECT) {
        s->err = s->ours->body_error_at - 1;
        s->err_in_body = true;
    }
}

/* llhttp let the input through: accepted it, or waits for more. */
static bool ll_lets_through(const struct seen *s)
{
    return s->err != SIZE_MAX && (s->err_in_body ? s->ll->body : s->ll->head) != REJECT;
}

/* The line holding the error byte: [*start, *end), without its line break. */
static void error_line(const struct seen *s, const char **start, const char **end)
{
    const char *p = s->in + s->err;
    while (p > s->in && p[-1] != '\n')
        p--;
    *start = p;
    *end = memchr(p, '\n', (size_t)(s->in + s->len - p));
    if (!*end) *end = s->in + s->len;
}

/* The error byte is in the request line (the first line that is not empty), its LF included. */
static bool err_in_request_line(const struct seen *s)
{
    const char *p = s->in;
    while (s->len - (size_t)(p - s->in) >= 2 && p[0] == '\r' && p[1] == '\n')
        p += 2;
    const char *nl = memchr(p, '\n', s->len - (size_t)(p - s->in));
    return !s->err_in_body && s->in + s->err >= p && (!nl || s->in + s->err <= nl);
}

/* Where the trailer section of the chunked body starts: the framing before the error byte
 * is valid (corral accepted it), so a plain walk over sizes and data finds it. */
static size_t trailer_start(const struct seen *s)
{
    size_t p = s->ours->head_len;
    while (p < s->len) {
        uint64_t size = 0;
        for (; p < s->len && strchr("0123456789abcdefABCDEF", s->in[p]) && s->in[p]; p++)
            size = size * 16 +
                   (uint64_t)(s->in[p] <= '9' ? s->in[p] - '0' : (s->in[p] | 0x20) - 'a' + 10);
        const char *nl = memchr(s->in + p, '\n', s->len - p);
        if (!nl) return SIZE_MAX;
        p = (size_t)(nl - s->in) + 1;
        if (size == 0) return p;
        if (size > s->len) return SIZE_MAX;
        p += (size_t)size + 2;
    }
    return SIZE_MAX;
}

/* The error byte is in the head's field lines or in the trailer section. */
static bool err_in_field_lines(const struct seen *s)
{
    if (s->err_in_body) return s->err >= trailer_start(s);
    return !err_in_request_line(s);
}

/* The error byte is in the name part of a header or trailer line (before its colon). */
static bool err_in_field_name(const struct seen *s)
{
    const char *start;
    const char *end;
    if (!err_in_field_lines(s)) return false;
    error_line(s, &start, &end);
    const char *colon = memchr(start, ':', (size_t)(end - start));
    return !colon || s->in + s->err <= colon;
}

static bool match_bare_lf(const struct seen *s)
{
    size_t e = s->err;
    return ll_lets_through(s) && s->in[e] == '\n' && (e == 0 || s->in[e - 1] != '\r');
}

static bool match_bare_cr(const struct seen *s)
{
    size_t e = s->err;
    return ll_lets_through(s) && e > 0 && s->in[e - 1] == '\r' && s->in[e] != '\n';
}

static bool match_request_line_ws(const struct seen *s)
{
    return ll_lets_through(s) && err_in_request_line(s) && is_ows(s->in[s->err]);
}

static bool match_obs_fold(const struct seen *s)
{
    const char *start;
    const char *end;
    if (!ll_lets_through(s) || !err_in_field_lines(s)) return false;
    error_line(s, &start, &end);
    return s->in + s->err == start && is_ows(*start);
}

static bool match_ws_before_colon(const struct seen *s)
{
    if (!ll_lets_through(s) || !err_in_field_name(s)) return false;
    const char *p = s->in + s->err;
    while (is_ows(*p))
        p++;
    return *p == ':' && p > s->in + s->err;
}

static bool is_tchar(char c)
{
    if ((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* corral failed on a byte of a name that cannot be in a token (so never on a valid name). */
static bool match_field_name(const struct seen *s)
{
    return ll_lets_through(s) && err_in_field_name(s) && !is_tchar(s->in[s->err]);
}

/* The error byte is one of the two that must be CRLF after a chunk's data. */
static bool match_data_crlf(const struct seen *s)
{
    size_t end = s->ours->data_end;
    return ll_lets_through(s) && s->err_in_body && end && (s->err == end || s->err == end + 1);
}

/* The fields named 'name' (case-insensitive) in llhttp's reading; the last one in *last. */
static size_t count_fields(const struct reading *v, const char *name, struct span *last)
{
    size_t count = 0;
    size_t n = strlen(name);
    for (size_t i = 0; i < v->nfields; i++) {
        if (v->name[i].n == n && strncasecmp(v->name[i].p, name, n) == 0) {
            count++;
            if (last) *last = v->value[i];
        }
    }
    return count;
}

static bool host_byte_ok(unsigned char c)
{
    if ((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) return true;
    return c != '\0' && strchr("-._~%!$&'()*+,;=:[]", c) != NULL;
}

static bool host_value_ok(struct span h)
{
    for (size_t i = 0; i < h.n; i++) {
        if (!host_byte_ok((unsigned char)h.p[i])) return false;
    }
    return true;
}

/* Host missing (HTTP/1.1), repeated, or invalid; llhttp does not check Host. */
static bool match_host(const struct seen *s)
{
    struct span host = {NULL, 0};
    if (!ll_lets_through(s) || s->err_in_body || s->status != 400) return false;
    size_t n = count_fields(s->ll, "host", &host);
    return (s->ll->minor == 1 && n == 0) || n > 1 || (n == 1 && !host_value_ok(host));
}

/* corral answers 501 only to Transfer-Encoding it does not implement. */
static bool match_transfer_coding(const struct seen *s)
{
    return ll_lets_through(s) && !s->err_in_body && s->status == 501;
}

/* corral rejects any Transfer-Encoding field next to a Content-Length, even an empty one;
 * llhttp ignores an empty Transfer-Encoding and frames by Content-Length. */
static bool match_te_with_cl(const struct seen *s)
{
    return ll_lets_through(s) && !s->err_in_body && s->status == 400 &&
           count_fields(s->ll, "transfer-encoding", NULL) > 0 &&
           count_fields(s->ll, "content-length", NULL) > 0;
}

static bool match_te_http10(const struct seen *s)
{
    return s->ours->head == REJECT && s->ll->head == ACCEPT && s->ll->minor == 0 &&
           count_fields(s->ll, "transfer-encoding", NULL) > 0;
}

static bool match_version(const struct seen *s)
{
    return ll_lets_through(s) && !s->err_in_body && s->status == 505;
}

/* An empty chunk-ext-name or value (";;", ";=v", "a=;"): llhttp accepts it; both are
 * tokens (or, for a value, a quoted-string). */
static bool match_chunk_ext_empty(const struct seen *s)
{
    size_t e = s->err;
    return ll_lets_through(s) && s->err_in_body && e > 0 && strchr(";=", s->in[e - 1]) &&
           s->in[e] && strchr(";=\r", s->in[e]);
}

/* llhttp 8.1.0 rejects BWS around a chunk extension's ';' or '=' ("5 ;a", "5; a"), which
 * RFC 9112 §7.1.1 allows; it stops on the whitespace or the byte after it. */
static bool match_chunk_ext_bws(const struct seen *s)
{
    size_t at = s->ll->error_pos;
    return s->ours->head == ACCEPT && s->ours->body != REJECT && s->ll->body == REJECT &&
           at < s->len && (is_ows(s->in[at]) || (at > 0 && is_ows(s->in[at - 1])));
}

/* llhttp 8.1.0 rejects a quoted-pair in a quoted chunk extension value: it stops on the byte
 * after the backslash. */
static bool match_chunk_ext_quoted_pair(const struct seen *s)
{
    return s->ours->head == ACCEPT && s->ours->body != REJECT && s->ll->body == REJECT &&
           strstr(s->ll->why, "quoted value") && s->ll->error_pos > 0 &&
           s->in[s->ll->error_pos - 1] == '\\';
}

/* The input ends inside a line that llhttp already rejected byte by byte (a bad
 * Content-Length digit, say); corral decides such a line when it ends, so it still waits. */
static bool match_early_reject(const struct seen *s)
{
    bool body = s->ours->head == ACCEPT;
    enum outcome ours = body ? s->ours->body : s->ours->head;
    enum outcome ll = body ? s->ll->body : s->ll->head;
    size_t at = s->ll->error_pos;
    if (ours != INCOMPLETE || ll != REJECT || at >= s->len) return false;
    return memchr(s->in + at, '\n', s->len - at) == NULL;
}

/* A request line without a version: llhttp reads it as an HTTP/0.9 simple-request (or waits
 * for the rest of one); corral fails where the SP before the version should be. */
static bool match_http09(const struct seen *s)
{
    if (s->ll->head == ACCEPT) return s->ll->major == 0 && s->ll->minor == 9;
    return ll_lets_through(s) && err_in_request_line(s) &&
           (s->in[s->err] == '\r' || s->in[s->err] == '\n');
}

/* corral accepts any token as a method (RFC 9110 §9.1); llhttp knows a fixed list. */
static bool match_method(const struct seen *s)
{
    const struct span m = s->ours->method;
    if (s->ours->head == REJECT || s->ll->head != REJECT) return false;
    if (s->ours->head == INCOMPLETE) return strstr(s->ll->why, "HPE_INVALID_METHOD") != NULL;
    for (int i = 0; i <= HTTP_FLUSH; i++) { /* llhttp numbers its methods 0 .. HTTP_FLUSH */
        const char *name = llhttp_method_name((llhttp_method_t)i);
        if (strlen(name) == m.n && memcmp(name, m.p, m.n) == 0) return false;
    }
    return true;
}

/* corral checks a target's bytes (visible ASCII, obs-text) and its form (RFC 9112 §3.2), not
 * the characters of its path and query; llhttp's URL parser rejects some of those. */
static bool match_target_form(const struct seen *s)
{
    return s->ours->head != REJECT && s->ll->head == REJECT &&
           strstr(s->ll->why, "HPE_INVALID_URL") != NULL;
}

/* The request line's first byte (after any leading empty lines). */
static const char *request_line_start(const struct seen *s)
{
    const char *p = s->in;
    while (s->len - (size_t)(p - s->in) >= 2 && p[0] == '\r' && p[1] == '\n')
        p += 2;
    return p;
}

/* corral answers CONNECT 501 whatever its target (it is no proxy); llhttp parses it. */
static bool match_connect(const struct seen *s)
{
    const char *p = request_line_start(s);
    return ll_lets_through(s) && !s->err_in_body && s->status == 501 &&
           s->len - (size_t)(p - s->in) > 8 && memcmp(p, "CONNECT ", 8) == 0;
}

/* corral checks the target's form against the method (RFC 9112 §3.2): "*" only with OPTIONS,
 * absolute-form only http or https with a valid authority, no authority-form; llhttp takes
 * any of them with any method. corral fails on the SP after a target that is not '/...'. */
static bool match_target_method(const struct seen *s)
{
    if (!ll_lets_through(s) || s->status != 400 || !err_in_request_line(s)) return false;
    const char *p = request_line_start(s);
    const char *end = s->in + s->err;
    const char *sp = memchr(p, ' ', (size_t)(end - p));
    return *end == ' ' && sp && sp + 1 < end && sp[1] != '/';
}

/* A singleton field (Content-Type, Authorization, ...) repeated with a different value:
 * corral answers 400 (RFC 9110 §5.3), llhttp reports both. corral fails at the LF of the
 * second field line. */
static bool match_singleton(const struct seen *s)
{
    const char *start;
    const char *end;
    if (!ll_lets_through(s) || s->err_in_body || s->status != 400 || !err_in_field_lines(s))
        return false;
    error_line(s, &start, &end);
    const char *colon = memchr(start, ':', (size_t)(end - start));
    if (!colon || !http_field_is_singleton(start, (size_t)(colon - start))) return false;
    char name[64];
    size_t n = (size_t)(colon - start);
    if (n >= sizeof(name)) return false;
    memcpy(name, start, n);
    name[n] = '\0';
    return count_fields(s->ll, name, NULL) > 1;
}

/* llhttp 8.1.0 rejects a chunk extension that follows one with a value ("5;a=b;c=d"). */
static bool match_chunk_ext_list(const struct seen *s)
{
    if (s->ours->head != ACCEPT || s->ours->body == REJECT || s->ll->body != REJECT) return false;
    const char *p = s->in + s->ours->head_len;
    const char *end = s->in + s->len;
    bool value = false;
    for (; p < end; p++) {
        if (*p == '\n') value = false;
        if (*p == '=') value = true;
        if (*p == ';' && value) return true;
    }
    return false;
}

struct known {
    const char *id;
    const char *why;
    bool (*match)(const struct seen *s);
};

/* In order: the first rule that matches names the difference. */
static const struct known known[] = {
    {"ws-before-colon",
     "whitespace between a header name and its colon: llhttp accepts it, corral answers 400 "
     "(RFC 9112 §5.1)",
     match_ws_before_colon},
    {"bare-cr",
     "a CR not followed by LF (in the head, in or after a chunk extension, after a chunk size, "
     "in the final CRLF): llhttp takes CR plus any byte as a line end, corral rejects it "
     "(RFC 9112 §2.2, §7.1.1)",
     match_bare_cr},
    {"bare-lf", "a line ended by a bare LF: llhttp accepts it, corral rejects it (RFC 9112 §2.2)",
     match_bare_lf},
    {"obs-fold",
     "a header or trailer line that starts with SP or HTAB (obs-fold, or whitespace after the "
     "request line): llhttp accepts it, corral rejects it (RFC 9112 §5.2, §2.2)",
     match_obs_fold},
    {"connect",
     "the method CONNECT: llhttp parses it (and its authority-form target), corral answers "
     "501, being no proxy (RFC 9110 §9.3.6, §15.6.2)",
     match_connect},
    {"target-method",
     "a target whose form does not suit the method (\"GET *\", \"GET a:1\", \"GET "
     "ftp://a/\", \"GET http:///a\"): llhttp accepts it, corral answers 400 (RFC 9112 §3.2)",
     match_target_method},
    {"request-line-ws",
     "extra or misplaced whitespace in the request line: llhttp skips it, corral answers 400 "
     "(RFC 9112 §3)",
     match_request_line_ws},
    {"field-name",
     "a header or trailer name that is empty or not a token (\"C nnection\", \":x\"): "
     "llhttp accepts it, corral rejects it (RFC 9110 §5.1)",
     match_field_name},
    {"data-crlf",
     "chunk data not followed by exactly CRLF: llhttp skips any two bytes, corral rejects the "
     "body (RFC 9112 §7.1)",
     match_data_crlf},
    {"host",
     "an HTTP/1.1 request without Host, with two Host fields or an invalid Host: llhttp does "
     "not check Host, corral answers 400 (RFC 9112 §3.2)",
     match_host},
    {"singleton",
     "a singleton field (Content-Type, Authorization, User-Agent, ...) repeated with a "
     "different value: llhttp reports both, corral answers 400 (RFC 9110 §5.3)",
     match_singleton},
    {"transfer-coding",
     "a Transfer-Encoding other than a lone \"chunked\" (\"gzip, chunked\", \"chunked, "
     "chunked\", two fields): llhttp accepts a list ending in chunked, corral answers 501 "
     "(RFC 9112 §6.1)",
     match_transfer_coding},
    {"te-with-cl",
     "Transfer-Encoding (even an empty one) together with Content-Length: llhttp ignores an "
     "empty Transfer-Encoding, corral answers 400 (RFC 9112 §6.3)",
     match_te_with_cl},
    {"te-in-http10",
     "Transfer-Encoding in an HTTP/1.0 request: llhttp accepts it, corral answers 400 "
     "(RFC 9112 §6.1)",
     match_te_http10},
    {"version",
     "a well-formed version other than HTTP/1.0 or 1.1 (0.9, 2.0, ...): llhttp accepts some, "
     "corral answers 505",
     match_version},
    {"chunk-ext-empty",
     "an empty chunk extension name or value (\"5;;a\", \"5;=v\", \"5;a=;b\"): llhttp "
     "accepts it, corral rejects the body (RFC 9112 §7.1.1)",
     match_chunk_ext_empty},
    {"chunk-ext-bws",
     "whitespace (BWS) around a chunk extension's ';' or '=' (\"5 ;a\", \"5; a\"): llhttp "
     "8.1.0 rejects the body, corral accepts it as RFC 9112 §7.1.1 allows",
     match_chunk_ext_bws},
    {"chunk-ext-quoted-pair",
     "a quoted-pair (backslash escape) in a quoted chunk extension value: llhttp 8.1.0 "
     "rejects the body, corral accepts it as RFC 9112 §7.1.1 allows",
     match_chunk_ext_quoted_pair},
    {"early-reject",
     "the input ends inside a line llhttp has already rejected: corral decides a line when it "
     "ends (or at its first invalid byte), so it still waits for more",
     match_early_reject},
    {"http09",
     "a request line without a version (\"GET /x\"): llhttp reads an HTTP/0.9 simple-request, "
     "corral answers 400 (RFC 9112 §3)",
     match_http09},
    {"method",
     "a method that is a token but not in llhttp's list (\"GETa\", \"M\"): corral accepts it "
     "(RFC 9110 §9.1), llhttp rejects it",
     match_method},
    {"target-form",
     "a target of the right form with a byte llhttp's URL parser refuses in its path or "
     "query: corral checks only the target's bytes and form, llhttp rejects it",
     match_target_form},
    {"chunk-ext-list",
     "a chunk extension after one with a value (\"5;a=b;c=d\"): llhttp 8.1.0 rejects the "
     "body, corral accepts it as RFC 9112 §7.1.1 allows",
     match_chunk_ext_list},
};

/* ---- the built-in requests ---- */

struct req {
    const char *name;
    const char *text;
};

static const struct req builtin[] = {
    {"simple GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n"},
    {"browser GET",
     "GET /articles/2024/06/http-parsers.html?ref=home HTTP/1.1\r\nHost: www.example.com\r\n"
     "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Firefox/115.0\r\n"
     "Accept: text/html,*/*\r\nAccept-Encoding: gzip, br\r\n\r\n"},
    {"HTTP/1.0", "GET /x HTTP/1.0\r\n\r\n"},
    {"HTTP/1.0 keep-alive", "GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"},
    {"close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"},
    {"connection list", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, Close\r\n\r\n"},
    {"POST body", "POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"},
    {"OWS", "GET / HTTP/1.1\r\nHost:a\r\nX-A: \t v a l \t\r\nX-E:\r\n\r\n"},
    {"query", "GET /a?b?c HTTP/1.1\r\nHost: a\r\n\r\n"},
    {"absolute-form", "GET http://a.example/b?c HTTP/1.1\r\nHost: a.example\r\n\r\n"},
    {"leading CRLF", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"},
    {"pipelined", "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"},
    {"expect", "PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"},
    {"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n"},
    {"chunked ext and trailer", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                                "5;a=b;c=\"d\"\r\nhello\r\n0\r\nX-T: v\r\n\r\n"},
    {"chunked bad size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "x\r\nhello\r\n0\r\n\r\n"},
    {"chunked data too long", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5\r\nhelloX\r\n0\r\n\r\n"},
    {"CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
    {"CL twice", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"},
    {"CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n"},
    {"CL sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n"},
    {"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"},
    {"bare LF", "GET / HTTP/1.1\nHost: a\n\n"},
    {"bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"},
    {"CTL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01"
                     "b\r\n\r\n"},
    {"SP in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"},
    {"two SP", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n"},
    {"lowercase version", "GET / http/1.1\r\nHost: a\r\n\r\n"},
    /* known differences */
    {"ws before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n"},
    {"bare CR in chunk ext", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "5;a\r\rhello\r\n0\r\n\r\n"},
    {"bare CR after chunk size",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\rXhello\r\n0\r\n\r\n"},
    {"bare CR in final CRLF",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\rX"},
    {"no Host", "GET / HTTP/1.1\r\nX: a\r\n\r\n"},
    {"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
    {"gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                      "0\r\n\r\n"},
    {"empty TE with CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                         "Transfer-Encoding:\r\n\r\nG"},
    {"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
    {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n"},
    {"bare LF ends the head", "GET / HTTP/1.1\r\nHost: a\r\n\n"},
    {"space inside a name", "GET / HTTP/1.1\r\nHost: a\r\nC nnection: close\r\n\r\n"},
    {"chunk data then XX", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "5\r\nhelloXX0\r\n\r\n"},
    {"empty chunk extension", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5;;a\r\nhello\r\n0\r\n\r\n"},
    {"quoted-pair in chunk ext", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 "5;a=\"x\\\"y\"\r\nhello\r\n0\r\n\r\n"},
    {"HTTP/0.9 line", "GET /x\r\n\r\n"},
    {"BWS in chunk extension", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "5 ; a=b\r\nhello\r\n0\r\n\r\n"},
    {"extension method", "FOO / HTTP/1.1\r\nHost: a\r\n\r\n"},
    {"target not a URL", "GET a HTTP/1.1\r\nHost: a\r\n\r\n"},
    {"truncated bad Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x"},
    {"CONNECT", "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"},
    {"asterisk-form with GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n"},
    {"authority-form with GET", "GET a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n"},
    {"ftp absolute-form", "GET ftp://a.example/b HTTP/1.1\r\nHost: a\r\n\r\n"},
    {"two Content-Types", "POST / HTTP/1.1\r\nHost: a\r\nContent-Type: a\r\n"
                          "Content-Type: b\r\nContent-Length: 0\r\n\r\n"},
    {"two User-Agents", "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: a\r\nUser-Agent: b\r\n\r\n"},
    /* agreements on the forms corral accepts */
    {"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"},
    {"absolute-form https, port, userinfo",
     "GET https://u:p@a.example:8443/b?c HTTP/1.1\r\nHost: a.example\r\n\r\n"},
    {"absolute-form IPv6", "GET http://[::1]:8080/foo HTTP/1.1\r\nHost: a\r\n\r\n"},
    {"same Content-Type twice", "POST / HTTP/1.1\r\nHost: a\r\nContent-Type: a\r\n"
                                "Content-Type: a\r\nContent-Length: 0\r\n\r\n"},
    {"repeated list field", "GET / HTTP/1.1\r\nHost: a\r\nX-M: a\r\nX-M: b\r\n\r\n"},
};

/* ---- driver ---- */

struct tally {
    unsigned cases;
    unsigned agree;
    unsigned known[ARRAY_SIZE(known)];
    unsigned unexpected;
    bool quiet; /* print only unexpected differences */
};

static void compare_one(const char *name, const char *in, size_t len, struct tally *t)
{
    static struct reading ours;
    static struct reading ll;
    static char ours_body[MAX_INPUT];
    static char ll_body[MAX_INPUT];
    char what[256];
    ours.body_bytes = ours_body;
    ll.body_bytes = ll_body;
    run_ours(in, len, &ours);
    run_llhttp(in, len, &ll);
    t->cases++;
    if (!differ(&ours, &ll, what, sizeof(what))) {
        t->agree++;
        if (!t->quiet) printf("agree    %s\n", name);
        return;
    }
    struct seen s = {in, len, &ours, &ll, SIZE_MAX, false, 0};
    locate_error(&s);
    for (size_t i = 0; i < ARRAY_SIZE(known); i++) {
        if (known[i].match(&s)) {
            t->known[i]++;
            if (!t->quiet) printf("known    %s: %s (%s)\n", name, known[i].id, what);
            return;
        }
    }
    t->unexpected++;
    printf("DIFFER   %s: %s\n", name, what);
    printf("         input: ");
    for (size_t i = 0; i < len; i++)
        printf(in[i] >= 0x20 && in[i] < 0x7f ? "%c" : "\\x%02x", (unsigned char)in[i]);
    printf("\n");
}

/* Every one-byte deletion, duplication and substitution of 'in'. */
static void mutate(const char *name, const char *in, size_t len, struct tally *t)
{
    static const char subst[] = {' ', '\t', '\r', '\n', ':', ';', '"', '\0', '\x7f', '\x80', 'a'};
    static char buf[MAX_INPUT];
    char label[160];
    for (size_t i = 0; i < len && len + 1 < sizeof(buf); i++) {
        memcpy(buf, in, i);
        memcpy(buf + i, in + i + 1, len - i - 1);
        snprintf(label, sizeof(label), "%s [delete %zu]", name, i);
        compare_one(label, buf, len - 1, t);
        memcpy(buf, in, i + 1);
        memcpy(buf + i + 1, in + i, len - i);
        snprintf(label, sizeof(label), "%s [duplicate %zu]", name, i);
        compare_one(label, buf, len + 1, t);
        for (size_t j = 0; j < sizeof(subst); j++) {
            memcpy(buf, in, len);
            buf[i] = subst[j];
            snprintf(label, sizeof(label), "%s [byte %zu = 0x%02x]", name, i,
                     (unsigned char)subst[j]);
            compare_one(label, buf, len, t);
        }
    }
}

static bool compare_file(const char *path, struct tally *t)
{
    static char buf[MAX_INPUT];
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return false;
    }
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    compare_one(path, buf, n, t);
    return true;
}

/* ---- benchmark ---- */

static const char bench_browser[] =
    "GET /articles/2024/06/http-parsers.html?ref=home HTTP/1.1\r\nHost: www.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Firefox/115.0\r\n"
    "Accept: text/html,*/*\r\nAccept-Encoding: gzip, br\r\n\r\n";
static const char bench_keepalive[] =
    "GET /api/v1/items/42 HTTP/1.1\r\nHost: api.example.com\r\nConnection: keep-alive\r\n"
    "Accept: application/json\r\nAccept-Encoding: gzip\r\nUser-Agent: bench/1.0\r\n"
    "X-Request-Id: 7f3c2a\r\n\r\n";

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static volatile size_t sink; /* keeps the loops from being optimised away */

static double bench_ours(const char *req, size_t len, long iters)
{
    const struct http_limits lim = {.max_head = 8192, .max_headers = MAX_FIELDS};
    struct http_header h[MAX_FIELDS];
    struct request r;
    int status;
    double t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        int rc = http_parse_request(req, len, &r, h, &lim, &status);
        sink += (size_t)rc + r.num_headers;
    }
    return (now_ns() - t0) / (double)iters;
}

/* llhttp with the callbacks that collect the same views corral returns. */
static double bench_llhttp(const char *req, size_t len, long iters, bool callbacks)
{
    static struct reading v;
    static char body[MAX_INPUT];
    llhttp_settings_t s;
    if (callbacks) {
        s = ll_settings();
    } else {
        llhttp_settings_init(&s);
    }
    llhttp_t p;
    struct ll_ctx c = {.v = &v};
    llhttp_init(&p, HTTP_REQUEST, &s);
    v.body_bytes = body;
    double t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        reading_reset(&v);
        c.last = 0;
        c.head_done = false;
        llhttp_init(&p, HTTP_REQUEST, &s);
        p.data = &c;
        llhttp_errno_t err = llhttp_execute(&p, req, len);
        sink += (size_t)err + v.nfields;
    }
    return (now_ns() - t0) / (double)iters;
}

static double min2(double a, double b)
{
    return a < b ? a : b;
}

/* Each figure is the best of 5 rounds of iters / 5 parses, interleaved so that a busy
 * neighbour on a shared machine slows all three alike. */
static void bench(long iters)
{
    static const struct {
        const char *name;
        const char *req;
        size_t len;
    } reqs[] = {
        {"browser GET", bench_browser, sizeof(bench_browser) - 1},
        {"keep-alive GET (6 headers)", bench_keepalive, sizeof(bench_keepalive) - 1},
    };
    printf("%-28s %6s %12s %18s %18s\n", "request", "bytes", "corral ns", "llhttp+views ns",
           "llhttp bare ns");
    for (size_t i = 0; i < ARRAY_SIZE(reqs); i++) {
        const char *req = reqs[i].req;
        size_t len = reqs[i].len;
        double a = 1e30;
        double b = 1e30;
        double c = 1e30;
        bench_ours(req, len, iters / 10); /* warm up */
        for (int round = 0; round < 5; round++) {
            a = min2(a, bench_ours(req, len, iters / 5));
            b = min2(b, bench_llhttp(req, len, iters / 5, true));
            c = min2(c, bench_llhttp(req, len, iters / 5, false));
        }
        printf("%-28s %6zu %12.1f %18.1f %18.1f\n", reqs[i].name, len, a, b, c);
    }
}

static void print_summary(const struct tally *t)
{
    unsigned nknown = 0;
    for (size_t i = 0; i < ARRAY_SIZE(known); i++)
        nknown += t->known[i];
    printf("\nknown, deliberate differences:\n");
    for (size_t i = 0; i < ARRAY_SIZE(known); i++)
        printf("  %-22s %6u  %s\n", known[i].id, t->known[i], known[i].why);
    printf("\n%u cases: %u agree, %u known differences, %u unexpected differences\n", t->cases,
           t->agree, nknown, t->unexpected);
}

int main(int argc, char **argv)
{
    struct tally t = {.cases = 0};
    bool do_mutate = false;
    bool do_bench = false;
    bool files = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mutate") == 0) {
            do_mutate = true;
        } else if (strcmp(argv[i], "--bench") == 0) {
            do_bench = true;
        } else {
            files = true;
            if (!compare_file(argv[i], &t)) return 2;
        }
    }
    if (do_bench && !files && !do_mutate) {
        bench(3000000);
        return 0;
    }
    for (size_t i = 0; i < ARRAY_SIZE(builtin); i++)
        compare_one(builtin[i].name, builtin[i].text, strlen(builtin[i].text), &t);
    t.quiet = true;
    for (size_t i = 0; do_mutate && i < ARRAY_SIZE(builtin); i++)
        mutate(builtin[i].name, builtin[i].text, strlen(builtin[i].text), &t);
    print_summary(&t);
    if (do_bench) bench(3000000);
    return t.unexpected ? 1 : 0;
}
