/*
 * http_parser.c - the strict HTTP/1.x request-head parser and chunked-body decoder declared in
 * http_parser.h (RFC 9110, RFC 9112).
 *
 * The head parser keeps no state between calls: it parses from the start of the buffer every
 * time, as picohttpparser does. A head is at most lim->max_head bytes, so this costs little and
 * leaves nothing to fall out of sync. One 256-entry table classifies every byte. The meaning of
 * each field (Content-Length, Transfer-Encoding, Host, Connection, Expect) is derived as soon as
 * its line is complete, so callers never scan the headers again. An error is reported at the
 * first byte that proves it, so parsing any prefix of an input gives PARSE_INCOMPLETE or the
 * same error as the whole input (the every-split property the tests check).
 *
 * The chunked decoder is a byte-at-a-time state machine for size, extension and trailer lines;
 * chunk data is handed out in bulk as views into the caller's buffer.
 */
#include "http/http_parser.h"

#include <limits.h>
#include <string.h>
#include <strings.h>

/* Byte classes; a byte may be in several. */
enum {
    C_TCHAR = 0x01,  /* token character (RFC 9110 §5.6.2) */
    C_VALUE = 0x02,  /* field-value byte: HTAB, SP, VCHAR, obs-text (RFC 9110 §5.5) */
    C_TARGET = 0x04, /* request-target byte: VCHAR or obs-text (obs-text accepted, as nginx does) */
    C_HOST = 0x08,   /* Host byte: reg-name, IP-literal or ":" port (RFC 3986 §3.2.2) */
    C_QDTEXT = 0x10, /* unescaped quoted-string byte (RFC 9110 §5.6.4) */
    C_HEX = 0x20,    /* HEXDIG */
};

/* The classes of each byte value; rows of 8, each labelled with its first byte. */
/* clang-format off */
static const unsigned char cls[256] = {
    /* 00 */ 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    /* 08 */ 0x00, 0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    /* 10 */ 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    /* 18 */ 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    /* 20 */ 0x12, 0x1f, 0x06, 0x17, 0x1f, 0x1f, 0x1f, 0x1f,
    /* 28 */ 0x1e, 0x1e, 0x1f, 0x1f, 0x1e, 0x1f, 0x1f, 0x16,
    /* 30 */ 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f,
    /* 38 */ 0x3f, 0x3f, 0x1e, 0x1e, 0x16, 0x1e, 0x16, 0x16,
    /* 40 */ 0x16, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x1f,
    /* 48 */ 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f,
    /* 50 */ 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f,
    /* 58 */ 0x1f, 0x1f, 0x1f, 0x1e, 0x06, 0x1e, 0x17, 0x1f,
    /* 60 */ 0x17, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x1f,
    /* 68 */ 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f,
    /* 70 */ 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f,
    /* 78 */ 0x1f, 0x1f, 0x1f, 0x16, 0x17, 0x16, 0x1f, 0x00,
    /* 80 */ 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16,
    /* 88 */ 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16,
    /* 90 */ 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16,
    /* 98 */ 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16,
    /* a0 */ 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16,
    /* a8 */ 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16,
    /* b0 */ 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16,
    /* b8 */ 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16,
    /* c0 */ 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16,
    /* c8 */ 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16,
    /* d0 */ 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16,
    /* d8 */ 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16,
    /* e0 */ 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16,
    /* e8 */ 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16,
    /* f0 */ 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16,
    /* f8 */ 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16, 0x16,
};
/* clang-format on */

static inline bool in_class(char c, unsigned char mask)
{
    return (cls[(unsigned char)c] & mask) != 0;
}

static inline bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Returns the first byte in [p, end) that is not in the class 'mask', or end. */
static inline const char *skip_class(const char *p, const char *end, unsigned char mask)
{
    while (end - p >= 4) {
        if (!in_class(p[0], mask)) return p;
        if (!in_class(p[1], mask)) return p + 1;
        if (!in_class(p[2], mask)) return p + 2;
        if (!in_class(p[3], mask)) return p + 3;
        p += 4;
    }
    while (p < end && in_class(*p, mask))
        p++;
    return p;
}

static inline const char *skip_ows(const char *p, const char *end)
{
    while (p < end && is_ows(*p))
        p++;
    return p;
}

/* Returns the end of [start, end) with trailing OWS removed. */
static inline const char *trim_ows_end(const char *start, const char *end)
{
    while (end > start && is_ows(end[-1]))
        end--;
    return end;
}

static inline uint64_t load64(const char *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof(w));
    return w;
}

static inline uint32_t load32(const char *p)
{
    uint32_t w;
    memcpy(&w, p, sizeof(w));
    return w;
}

/*
 * True if s[0, n) equals the literal 'lit' (lowercase letters, '-' and digits only) ignoring
 * ASCII case. It ORs 0x20 into each byte instead of testing for A-Z, which is exact here:
 * besides a letter's two cases, only 0x0d maps to '-', and only 0x10 and 0x11 map to '0' and
 * '1'; those are CTLs, and s is always a validated field name or value, which has none.
 *
 * It compares in words, the last one overlapping the one before; n is at least 4.
 */
static inline bool equals_nocase(const char *s, const char *lit, size_t n)
{
    if (n < 8) {
        uint32_t diff = ((load32(s) | 0x20202020u) ^ load32(lit)) |
                        ((load32(s + n - 4) | 0x20202020u) ^ load32(lit + n - 4));
        return diff == 0;
    }
    uint64_t diff = 0;
    for (size_t i = 0; i + 8 <= n; i += 8)
        diff |= (load64(s + i) | 0x2020202020202020ull) ^ load64(lit + i);
    diff |= (load64(s + n - 8) | 0x2020202020202020ull) ^ load64(lit + n - 8);
    return diff == 0;
}

/* The head parser's internal results: OK, NEED_MORE, or an HTTP status (>= 400). */
enum {
    OK = 0,
    NEED_MORE = PARSE_INCOMPLETE,
};

/* How many fields the singletons[] table below has (scan.singles has one slot for each). */
enum { NUM_SINGLETONS = 14 };

/* One parse of a head: a cursor over the readable bytes plus what the fields said so far. */
struct scan {
    const char *p;                 /* next byte to read */
    const char *end;               /* buf + min(len, max_head): bytes beyond are never read */
    struct request *r;             /* the result being filled */
    const struct http_limits *lim; /* the caller's limits */
    bool in_fields;                /* the request line is complete */
    unsigned hosts;                /* Host field lines seen */
    bool te_seen;                  /* a Transfer-Encoding field was seen */
    bool conn_close;               /* a Connection field lists "close" */
    bool conn_keep_alive;          /* a Connection field lists "keep-alive" */
    /* the first field line of each singletons[] field, or NULL */
    const struct http_header *singles[NUM_SINGLETONS];
};

/* RFC 9112 §2.2: a server SHOULD ignore at least one empty line (CRLF) received before the
 * request-line (some clients send one after a POST body). We skip any number of them, as long
 * as they fit in max_head; a bare CR or LF there is still an error. */
static int skip_empty_lines(struct scan *s)
{
    while (s->p < s->end && *s->p == '\r') {
        if (s->end - s->p < 2) return NEED_MORE;
        if (s->p[1] != '\n') return 400;
        s->p += 2;
    }
    return OK;
}

/* method SP (RFC 9112 §3): a token followed by exactly one SP. */
static int parse_method(struct scan *s)
{
    const char *start = s->p;
    const char *p = skip_class(start, s->end, C_TCHAR);
    if (p == s->end) return NEED_MORE;
    if (p == start || *p != ' ') return 400;
    s->r->method = start;
    s->r->method_len = (size_t)(p - start);
    s->p = p + 1;
    return OK;
}

static bool is_method(const struct request *r, const char *lit, size_t n)
{
    return r->method_len == n && memcmp(r->method, lit, n) == 0;
}

/* host [":" port] of an absolute-form target (RFC 3986 §3.2.2, §3.2.3): a non-empty reg-name
 * or IPv4address, or an IP-literal in brackets, then an optional port of digits. */
static bool valid_host_port(const char *p, const char *end)
{
    const char *host_end;
    if (p == end) return false;
    if (*p == '[') {
        host_end = memchr(p, ']', (size_t)(end - p));
        if (!host_end || host_end == p + 1) return false;
        if (skip_class(p + 1, host_end, C_HOST) != host_end) return false;
        host_end++;
    } else {
        host_end = memchr(p, ':', (size_t)(end - p));
        if (!host_end) host_end = end;
        if (host_end == p) return false; /* an empty host (RFC 9110 §4.2.1: reject) */
        for (const char *q = p; q < host_end; q++)
            if (!in_class(*q, C_HOST) || *q == '[' || *q == ']') return false;
    }
    if (host_end == end) return true;
    if (*host_end != ':') return false;
    for (const char *q = host_end + 1; q < end; q++)
        if (*q < '0' || *q > '9') return false;
    return true;
}

/* absolute-form (RFC 9112 §3.2.2): "http" or "https" (any case) "://" authority, then
 * path-abempty and the query. The userinfo ("user:pass@", RFC 9110 §4.2.4) is set apart so it
 * never reaches the app; the authority is host[:port]; the path may be empty. */
static int parse_absolute(struct request *r, const char *t, const char *end)
{
    const char *a;
    size_t n = (size_t)(end - t);
    if (n > 7 && (load32(t) | 0x20202020u) == load32("http") && memcmp(t + 4, "://", 3) == 0)
        a = t + 7;
    else if (n > 8 && (load32(t) | 0x20202020u) == load32("http") && (t[4] | 0x20) == 's' &&
             memcmp(t + 5, "://", 3) == 0)
        a = t + 8;
    else
        return 400;
    const char *path_end = r->path + r->path_len; /* the first '?', or the end */
    const char *stop = a;
    while (stop < end && *stop != '/' && *stop != '?')
        stop++;
    const char *at = stop;
    while (at > a && at[-1] != '@')
        at--;
    if (at > a) { /* userinfo = *( unreserved / pct-encoded / sub-delims / ":" ) */
        for (const char *q = a; q < at - 1; q++)
            if (!in_class(*q, C_HOST) || *q == '[' || *q == ']') return 400;
        r->userinfo = a;
        r->userinfo_len = (size_t)(at - a);
    }
    if (!valid_host_port(at, stop)) return 400;
    r->form = REQUEST_FORM_ABSOLUTE;
    r->authority = at;
    r->authority_len = (size_t)(stop - at);
    r->path = stop;
    r->path_len = (size_t)(path_end - stop);
    return OK;
}

/* The target's form must suit the method (RFC 9112 §3.2): origin-form starts with '/';
 * asterisk-form is for OPTIONS only; authority-form is for CONNECT only, which corral, being
 * no proxy, does not implement (501, whatever the target); anything else is 400. */
static int check_target_form(struct request *r, const char *t, const char *end)
{
    if (is_method(r, "CONNECT", 7)) return 501;
    if (*t == '/') return OK;
    if (end - t == 1 && *t == '*') {
        if (!is_method(r, "OPTIONS", 7)) return 400;
        r->form = REQUEST_FORM_ASTERISK;
        return OK;
    }
    return parse_absolute(r, t, end);
}

/* request-target SP: visible ASCII or obs-text; CTLs, SP inside and DEL are errors. The
 * target is split into path and query at its first '?', and its form is checked against the
 * method. */
static int parse_target(struct scan *s)
{
    struct request *r = s->r;
    const char *start = s->p;
    const char *p = skip_class(start, s->end, C_TARGET);
    if (p == s->end) return NEED_MORE;
    if (p == start || *p != ' ') return 400;
    r->target = start;
    r->target_len = (size_t)(p - start);
    const char *q = memchr(start, '?', r->target_len);
    r->path = start;
    r->path_len = q ? (size_t)(q - start) : r->target_len;
    r->query = q ? q + 1 : p;
    r->query_len = q ? (size_t)(p - q - 1) : 0;
    int rc = check_target_form(r, start, p);
    if (rc != OK) return rc;
    s->p = p + 1;
    return OK;
}

/* HTTP-version CRLF (RFC 9112 §2.3): "HTTP/" DIGIT "." DIGIT, case-sensitive. Each available
 * byte is checked as it comes, so a malformed version fails at once; a well-formed one other
 * than 1.0 or 1.1 gets 505, but only once its CRLF proves it well-formed. */
static int parse_version(struct scan *s)
{
    static const char pattern[] = "HTTP/#.#\r\n"; /* '#' is any DIGIT */
    size_t n = sizeof(pattern) - 1;
    size_t avail = (size_t)(s->end - s->p);
    if (avail >= n && memcmp(s->p, "HTTP/1.", 7) == 0 && (s->p[7] == '0' || s->p[7] == '1') &&
        s->p[8] == '\r' && s->p[9] == '\n') { /* the common case, in one go */
        s->r->minor_version = s->p[7] - '0';
        s->p += n;
        return OK;
    }
    for (size_t i = 0; i < n && i < avail; i++) {
        char c = s->p[i];
        bool ok = pattern[i] == '#' ? (c >= '0' && c <= '9') : c == pattern[i];
        if (!ok) return 400;
    }
    if (avail < n) return NEED_MORE;
    if (s->p[5] != '1' || (s->p[7] != '0' && s->p[7] != '1')) return 505;
    s->r->minor_version = s->p[7] - '0';
    s->p += n;
    return OK;
}

static int parse_request_line(struct scan *s)
{
    int rc = skip_empty_lines(s);
    if (rc == OK) rc = parse_method(s);
    if (rc == OK) rc = parse_target(s);
    if (rc == OK) rc = parse_version(s);
    if (rc == OK) s->in_fields = true;
    return rc;
}

/* field-name ":" OWS field-value OWS CRLF (RFC 9112 §5). Fills *h with views. */
static int parse_field_line(struct scan *s, struct http_header *h)
{
    const char *end = s->end;
    const char *p = skip_class(s->p, end, C_TCHAR);
    if (p == end) return NEED_MORE;
    /* RFC 9112 §5.1: no whitespace between name and colon (400). A line that starts with SP or
     * HTAB is obs-fold (§5.2) or whitespace after the request line (§2.2): both rejected. */
    if (*p != ':' || p == s->p) return 400;
    h->name = s->p;
    h->name_len = (size_t)(p - s->p);
    h->value = skip_ows(p + 1, end);
    p = skip_class(h->value, end, C_VALUE);
    if (p == end) return NEED_MORE;
    /* NUL, DEL, bare LF and any other CTL in a value are errors (RFC 9110 §5.5). */
    if (*p != '\r') return 400;
    if (end - p < 2) return NEED_MORE;
    if (p[1] != '\n') return 400; /* bare CR (RFC 9112 §2.2) */
    h->value_len = (size_t)(trim_ows_end(h->value, p) - h->value);
    s->p = p + 2;
    return OK;
}

int64_t http_parse_content_length(const char *p, size_t n)
{
    uint64_t v = 0;
    if (n == 0) return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)p[i] - '0';
        if (d > 9 || v > ((uint64_t)INT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    return (int64_t)v;
}

/* Content-Length = 1*DIGIT (RFC 9110 §8.6). A list ("5, 5"), a sign, inner spaces, a second
 * field (even an equal one) or Content-Length with Transfer-Encoding are all 400: each is a
 * request-smuggling vector (RFC 9112 §6.3 items 3 and 5). */
static int on_content_length(struct scan *s, const struct http_header *h)
{
    struct request *r = s->r;
    if (r->content_length >= 0 || s->te_seen) return 400;
    int64_t v = http_parse_content_length(h->value, h->value_len);
    if (v < 0) return 400;
    if (s->lim->max_body && (uint64_t)v > s->lim->max_body) return 413;
    r->content_length = v;
    return OK;
}

/* Transfer-Encoding (RFC 9112 §6.1). Only a lone "chunked" is accepted. Any other coding or
 * list, and a second Transfer-Encoding field (its values would form a list), is 501: we
 * implement no other coding. With Content-Length, or in an HTTP/1.0 request, it is 400: such
 * a message is a smuggling attempt or a broken client (RFC 9112 §6.1 and §6.3 item 3). */
static int on_transfer_encoding(struct scan *s, const struct http_header *h)
{
    if (s->r->minor_version == 0) return 400;
    if (s->r->content_length >= 0) return 400;
    if (s->te_seen) return 501;
    s->te_seen = true;
    if (h->value_len != 7 || !equals_nocase(h->value, "chunked", 7)) return 501;
    s->r->chunked = true;
    return OK;
}

/* Host (RFC 9112 §3.2): more than one Host field line, or an invalid value, is 400. The value
 * is uri-host [":" port]; we accept the bytes of reg-name, IP-literal and port, and the empty
 * value a client sends when the target has no authority. */
static int on_host(struct scan *s, const struct http_header *h)
{
    if (++s->hosts > 1) return 400;
    const char *end = h->value + h->value_len;
    if (skip_class(h->value, end, C_HOST) != end) return 400;
    return OK;
}

/* Connection = #connection-option (RFC 9110 §7.6.1), options compared case-insensitively. */
static void on_connection(struct scan *s, const struct http_header *h)
{
    const char *p = h->value;
    const char *end = p + h->value_len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        const char *a = skip_ows(p, stop);
        size_t n = (size_t)(trim_ows_end(a, stop) - a);
        if (n == 5 && equals_nocase(a, "close", 5)) s->conn_close = true;
        if (n == 10 && equals_nocase(a, "keep-alive", 10)) s->conn_keep_alive = true;
        p = comma ? comma + 1 : end;
    }
}

/* Expect: 100-continue (RFC 9110 §10.1.1), which an HTTP/1.0 request cannot ask for. Other
 * expectations are ignored. */
static void on_expect(struct scan *s, const struct http_header *h)
{
    if (s->r->minor_version == 1 && h->value_len == 12 &&
        equals_nocase(h->value, "100-continue", 12))
        s->r->expect_continue = true;
}

/* The request fields RFC 9110 defines as one value, not a list (§5.3: only a list-based field
 * may be repeated). Host and Content-Length have their own, stricter rules above (any second
 * field is 400), so they are not in this table. Repeating one of these with a different value
 * is ambiguous: which one would a proxy in front have acted on? 400. */
static const struct {
    const char *name; /* lowercase */
    size_t len;
} singletons[] = {
    {"authorization", 13},       /* §11.6.2 */
    {"content-location", 16},    /* §8.7 */
    {"content-range", 13},       /* §14.4 */
    {"content-type", 12},        /* §8.3 */
    {"date", 4},                 /* §6.6.1 */
    {"from", 4},                 /* §10.1.2 */
    {"if-modified-since", 17},   /* §13.1.3 */
    {"if-range", 8},             /* §13.1.5 */
    {"if-unmodified-since", 19}, /* §13.1.4 */
    {"max-forwards", 12},        /* §7.6.2 */
    {"proxy-authorization", 19}, /* §11.7.2 */
    {"range", 5},                /* §14.2 */
    {"referer", 7},              /* §10.1.3 */
    {"user-agent", 10},          /* §10.1.5 */
};

_Static_assert(sizeof(singletons) / sizeof(singletons[0]) == NUM_SINGLETONS,
               "NUM_SINGLETONS is the size of singletons[]");

/* The index in singletons[] of a validated field name, or -1. */
static int singleton_index(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(singletons) / sizeof(singletons[0]); i++)
        if (singletons[i].len == len && equals_nocase(name, singletons[i].name, len)) return (int)i;
    return -1;
}

bool http_field_is_singleton(const char *name, size_t len)
{
    if (len == 4 && strncasecmp(name, "host", 4) == 0) return true;
    if (len == 14 && strncasecmp(name, "content-length", 14) == 0) return true;
    for (size_t i = 0; i < sizeof(singletons) / sizeof(singletons[0]); i++)
        if (singletons[i].len == len && strncasecmp(name, singletons[i].name, len) == 0)
            return true;
    return false;
}

/* A repeated singleton field: the same value again is harmless (the app sees it once); a
 * different one is 400. */
static int on_singleton(struct scan *s, const struct http_header *h)
{
    int i = singleton_index(h->name, h->name_len);
    if (i < 0) return OK;
    const struct http_header *first = s->singles[i];
    if (!first) {
        s->singles[i] = h;
        return OK;
    }
    if (first->value_len != h->value_len || memcmp(first->value, h->value, h->value_len) != 0)
        return 400;
    return OK;
}

/* Derives request semantics from one field; the name's length picks the candidate. */
static int apply_field(struct scan *s, const struct http_header *h)
{
    switch (h->name_len) {
    case 4:
        if (equals_nocase(h->name, "host", 4)) return on_host(s, h);
        break;
    case 6:
        if (equals_nocase(h->name, "expect", 6)) on_expect(s, h);
        return OK;
    case 10:
        if (!equals_nocase(h->name, "connection", 10)) break;
        on_connection(s, h);
        return OK;
    case 14:
        if (equals_nocase(h->name, "content-length", 14)) return on_content_length(s, h);
        break;
    case 17:
        if (equals_nocase(h->name, "transfer-encoding", 17)) return on_transfer_encoding(s, h);
        break;
    default:
        break;
    }
    return on_singleton(s, h);
}

/* Field lines up to and including the empty line that ends the head. */
static int parse_fields(struct scan *s, struct http_header *headers)
{
    struct request *r = s->r;
    for (;;) {
        if (s->p == s->end) return NEED_MORE;
        if (*s->p == '\r') {
            if (s->end - s->p < 2) return NEED_MORE;
            if (s->p[1] != '\n') return 400;
            s->p += 2;
            return OK;
        }
        if (r->num_headers == s->lim->max_headers) return 431;
        struct http_header *h = &headers[r->num_headers];
        int rc = parse_field_line(s, h);
        if (rc == OK) rc = apply_field(s, h);
        if (rc != OK) return rc;
        r->num_headers++;
    }
}

/* Checks that need the whole head, and the connection's persistence (RFC 9112 §9.3). */
static int finish_head(struct scan *s)
{
    struct request *r = s->r;
    if (r->minor_version == 1 && s->hosts == 0) return 400; /* RFC 9112 §3.2 */
    if (r->minor_version == 1)
        r->keep_alive = !s->conn_close;
    else
        r->keep_alive = s->conn_keep_alive && !s->conn_close;
    return OK;
}

static void request_reset(struct request *r, struct http_header *headers)
{
    r->method_len = 0;
    r->target_len = 0;
    r->path_len = 0;
    r->query_len = 0;
    r->form = REQUEST_FORM_ORIGIN;
    r->authority = NULL;
    r->authority_len = 0;
    r->userinfo = NULL;
    r->userinfo_len = 0;
    r->minor_version = 0;
    r->headers = headers;
    r->num_headers = 0;
    r->content_length = -1;
    r->chunked = false;
    r->keep_alive = false;
    r->expect_continue = false;
    r->vars = NULL;
    r->num_vars = 0;
}

int http_parse_request(const char *buf, size_t len, struct request *r, struct http_header *headers,
                       const struct http_limits *lim, int *status)
{
    size_t window = len < lim->max_head ? len : lim->max_head;
    if (window > INT_MAX) window = INT_MAX;
    struct scan s = {.p = buf, .end = buf + window, .r = r, .lim = lim};
    request_reset(r, headers);

    int rc = parse_request_line(&s);
    if (rc == OK) rc = parse_fields(&s, headers);
    if (rc == OK) rc = finish_head(&s);
    if (rc == OK) return (int)(s.p - buf);
    if (rc == NEED_MORE) {
        /* The head did not end within max_head bytes: with len >= max_head it cannot. */
        if (len < lim->max_head && len < INT_MAX) return PARSE_INCOMPLETE;
        rc = s.in_fields ? 431 : 414;
    }
    *status = rc;
    return PARSE_ERROR;
}

/* ---- chunked transfer coding (RFC 9112 §7.1) ---- */

/* Decoder states. Zero is the start, so a zeroed struct http_chunked is ready to use. */
enum chunk_state {
    CH_SIZE_FIRST = 0, /* the first HEXDIG of a chunk-size */
    CH_SIZE,           /* more HEXDIG, or what follows the size */
    CH_SIZE_BWS,       /* BWS after the size: only ';' may follow */
    CH_EXT_NAME_FIRST, /* after ';': BWS, then the first byte of a chunk-ext-name */
    CH_EXT_NAME,       /* inside a chunk-ext-name */
    CH_EXT_NAME_BWS,   /* BWS after a name: '=' or ';' may follow */
    CH_EXT_VAL_FIRST,  /* after '=': BWS, then a token or a quoted-string */
    CH_EXT_TOKEN,      /* inside a token value */
    CH_EXT_QUOTED,     /* inside a quoted-string value */
    CH_EXT_QUOTED_ESC, /* after a backslash in a quoted-string */
    CH_EXT_QUOTED_END, /* right after the closing quote */
    CH_EXT_VAL_BWS,    /* BWS after a value: only ';' may follow */
    CH_SIZE_LF,        /* the LF ending a size line */
    CH_DATA,           /* chunk data: d->remaining bytes left */
    CH_DATA_CR,        /* the CR after chunk data */
    CH_DATA_LF,        /* the LF after chunk data */
    CH_TRAILER_FIRST,  /* the start of a trailer line, or the CR of the final CRLF */
    CH_TRAILER_NAME,   /* inside a trailer field name */
    CH_TRAILER_VALUE,  /* inside a trailer field value */
    CH_TRAILER_LF,     /* the LF ending a trailer line */
    CH_FINAL_LF,       /* the LF of the final CRLF */
    CH_DONE,           /* the body is complete */
    CH_ERROR,          /* the body is malformed; stays so */
};

enum {
    CHUNK_LINE_MAX = 4096,     /* one size or trailer line, without its CRLF */
    CHUNK_TRAILERS_MAX = 8192, /* the trailer section, with the final CRLF */
    CHUNK_SIZE_SHIFT_MAX = 58, /* a size must stay below 2^62 */
};

void http_chunked_init(struct http_chunked *d)
{
    *d = (struct http_chunked){.state = CH_SIZE_FIRST};
}

static unsigned hex_value(unsigned char c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* chunk-size [chunk-ext] CRLF, the size part. The size is 1*HEXDIG with nothing before it
 * ("0x10", "+5", " 5" fail), and BWS after it is allowed only before a ';' (RFC 9112 §7.1). */
static int step_size(struct http_chunked *d, unsigned char c)
{
    switch (d->state) {
    case CH_SIZE_FIRST:
        if (!in_class((char)c, C_HEX)) return CH_ERROR;
        d->remaining = hex_value(c);
        return CH_SIZE;
    case CH_SIZE:
        if (in_class((char)c, C_HEX)) {
            if (d->remaining >> CHUNK_SIZE_SHIFT_MAX) return CH_ERROR;
            d->remaining = d->remaining << 4 | hex_value(c);
            return CH_SIZE;
        }
        if (c == ';') return CH_EXT_NAME_FIRST;
        if (is_ows((char)c)) return CH_SIZE_BWS;
        return c == '\r' ? CH_SIZE_LF : CH_ERROR;
    case CH_SIZE_BWS:
        if (is_ows((char)c)) return CH_SIZE_BWS;
        return c == ';' ? CH_EXT_NAME_FIRST : CH_ERROR;
    default: /* CH_SIZE_LF */
        if (c != '\n') return CH_ERROR;
        d->line_len = 0;
        return d->remaining ? CH_DATA : CH_TRAILER_FIRST;
    }
}

/* chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ), where a value is
 * a token or a quoted-string (RFC 9112 §7.1.1). Extensions are validated and ignored. A CR is
 * accepted only where the line may end, so a bare CR inside an extension is an error. */
static int step_ext(int state, unsigned char c)
{
    bool ows = is_ows((char)c);
    bool tchar = in_class((char)c, C_TCHAR);
    switch (state) {
    case CH_EXT_NAME_FIRST:
        if (ows) return CH_EXT_NAME_FIRST;
        return tchar ? CH_EXT_NAME : CH_ERROR;
    case CH_EXT_NAME:
    case CH_EXT_NAME_BWS:
        if (tchar && state == CH_EXT_NAME) return CH_EXT_NAME;
        if (ows) return CH_EXT_NAME_BWS;
        if (c == '=') return CH_EXT_VAL_FIRST;
        if (c == ';') return CH_EXT_NAME_FIRST;
        return c == '\r' && state == CH_EXT_NAME ? CH_SIZE_LF : CH_ERROR;
    case CH_EXT_VAL_FIRST:
        if (ows) return CH_EXT_VAL_FIRST;
        if (c == '"') return CH_EXT_QUOTED;
        return tchar ? CH_EXT_TOKEN : CH_ERROR;
    case CH_EXT_QUOTED:
        if (c == '"') return CH_EXT_QUOTED_END;
        if (c == '\\') return CH_EXT_QUOTED_ESC;
        return in_class((char)c, C_QDTEXT) ? CH_EXT_QUOTED : CH_ERROR;
    case CH_EXT_QUOTED_ESC: /* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
        return in_class((char)c, C_VALUE) ? CH_EXT_QUOTED : CH_ERROR;
    default: /* CH_EXT_TOKEN, CH_EXT_QUOTED_END, CH_EXT_VAL_BWS */
        if (tchar && state == CH_EXT_TOKEN) return CH_EXT_TOKEN;
        if (ows) return CH_EXT_VAL_BWS;
        if (c == ';') return CH_EXT_NAME_FIRST;
        return c == '\r' && state != CH_EXT_VAL_BWS ? CH_SIZE_LF : CH_ERROR;
    }
}

/* trailer-section = *( field-line CRLF ) CRLF (RFC 9112 §7.1.2): each line is checked like a
 * header field line (no obs-fold, no whitespace before the colon, no CTLs) and dropped. */
static int step_trailer(struct http_chunked *d, unsigned char c)
{
    switch (d->state) {
    case CH_TRAILER_FIRST:
        if (c == '\r') return CH_FINAL_LF;
        return in_class((char)c, C_TCHAR) ? CH_TRAILER_NAME : CH_ERROR;
    case CH_TRAILER_NAME:
        if (in_class((char)c, C_TCHAR)) return CH_TRAILER_NAME;
        return c == ':' ? CH_TRAILER_VALUE : CH_ERROR;
    case CH_TRAILER_VALUE:
        if (in_class((char)c, C_VALUE)) return CH_TRAILER_VALUE;
        return c == '\r' ? CH_TRAILER_LF : CH_ERROR;
    case CH_TRAILER_LF:
        d->line_len = 0;
        return c == '\n' ? CH_TRAILER_FIRST : CH_ERROR;
    default: /* CH_FINAL_LF */
        return c == '\n' ? CH_DONE : CH_ERROR;
    }
}

/* Consumes one byte outside chunk data, enforcing the line and trailer-section limits. The
 * grammar lets a CR or LF appear only in the CRLF that ends a line, so the line length counts
 * the other bytes, and a line fails at its first byte over the limit. During the trailer
 * section d->remaining (otherwise unused then) counts all of its bytes. */
static void chunk_step(struct http_chunked *d, unsigned char c)
{
    if (c != '\r' && c != '\n' && ++d->line_len > CHUNK_LINE_MAX) {
        d->state = CH_ERROR;
        return;
    }
    if (d->state >= CH_TRAILER_FIRST && ++d->remaining > CHUNK_TRAILERS_MAX) {
        d->state = CH_ERROR;
        return;
    }
    if (d->state <= CH_SIZE_BWS || d->state == CH_SIZE_LF) {
        d->state = step_size(d, c);
    } else if (d->state < CH_SIZE_LF) {
        d->state = step_ext(d->state, c);
    } else if (d->state == CH_DATA_CR) {
        d->state = c == '\r' ? CH_DATA_LF : CH_ERROR;
    } else if (d->state == CH_DATA_LF) {
        d->line_len = 0;
        d->state = c == '\n' ? CH_SIZE_FIRST : CH_ERROR;
    } else {
        d->state = step_trailer(d, c);
    }
}

int http_chunked_decode(struct http_chunked *d, const char *in, size_t len, size_t *consumed,
                        const char **data, size_t *data_len)
{
    size_t i = 0;
    *data = NULL;
    *data_len = 0;
    for (;;) {
        if (d->state == CH_DATA && i < len) {
            size_t n = len - i;
            if (n > d->remaining) n = (size_t)d->remaining;
            d->remaining -= n;
            if (d->remaining == 0) d->state = CH_DATA_CR;
            *data = in + i;
            *data_len = n;
            *consumed = i + n;
            return HTTP_CHUNK_DATA;
        }
        if (d->state == CH_DONE || d->state == CH_ERROR || i == len) break;
        chunk_step(d, (unsigned char)in[i++]);
    }
    *consumed = i;
    if (d->state == CH_DONE) return HTTP_CHUNK_DONE;
    return d->state == CH_ERROR ? PARSE_ERROR : PARSE_INCOMPLETE;
}
