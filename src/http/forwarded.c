/*
 * forwarded.c - trusted proxies' X-Forwarded-For, X-Forwarded-Proto and Forwarded (RFC 7239)
 * headers, and the allow-list that says which peers are trusted (see forwarded.h).
 *
 * Addresses are recognised with inet_pton(3) on a NUL-terminated copy (pure: no I/O). Lists
 * are read in one pass from the left: the hop kept is the last one that is not trusted, which
 * is the rightmost untrusted hop; if there is none, the first hop.
 */
#include "http/forwarded.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* Longest textual address we look at: an IPv6 address with an embedded IPv4 one. */
enum { ADDR_TEXT_MAX = 45 };

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static const char *skip_ows(const char *p, const char *end)
{
    while (p < end && is_ows(*p))
        p++;
    return p;
}

static const char *trim_end(const char *start, const char *end)
{
    while (end > start && is_ows(end[-1]))
        end--;
    return end;
}

/* tchar (RFC 9110 §5.6.2). */
static bool is_tchar(char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Parses the textual address p[0, len) into family and bytes (an IPv4-mapped IPv6 address
 * becomes IPv4). False if it is not an address. */
static bool parse_addr(const char *p, size_t len, int *family, unsigned char out[16])
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    char tmp[ADDR_TEXT_MAX + 1];

    if (len == 0 || len > ADDR_TEXT_MAX || memchr(p, '\0', len)) return false;
    memcpy(tmp, p, len);
    tmp[len] = '\0';
    if (inet_pton(AF_INET, tmp, out) == 1) {
        *family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, tmp, out) != 1) return false;
    *family = AF_INET6;
    if (memcmp(out, mapped, sizeof(mapped)) == 0) {
        memmove(out, out + 12, 4);
        *family = AF_INET;
    }
    return true;
}

static bool net_has(const struct forwarded_net *net, int family, const unsigned char *addr)
{
    unsigned bits = net->prefix;
    size_t whole = bits / 8;

    if (net->family != family) return false;
    if (memcmp(net->addr, addr, whole) != 0) return false;
    if (bits % 8 == 0) return true;
    unsigned char mask = (unsigned char)(0xff << (8 - bits % 8));
    return ((net->addr[whole] ^ addr[whole]) & mask) == 0;
}

static bool allow_has_bytes(const struct forwarded_allow *a, int family, const unsigned char *b)
{
    if (a->any) return true;
    for (size_t i = 0; i < a->n; i++)
        if (net_has(&a->nets[i], family, b)) return true;
    return false;
}

bool forwarded_allow_has(const struct forwarded_allow *a, const char *addr, size_t len)
{
    unsigned char b[16];
    int family;
    if (!parse_addr(addr, len, &family, b)) return false;
    return allow_has_bytes(a, family, b);
}

/* The prefix length in d[0, n): 1 to 3 digits, at most 'max'; -1 otherwise. */
static int parse_prefix(const char *d, size_t n, unsigned max)
{
    unsigned v = 0;
    if (n == 0 || n > 3) return -1;
    for (size_t i = 0; i < n; i++) {
        if (d[i] < '0' || d[i] > '9') return -1;
        v = v * 10 + (unsigned)(d[i] - '0');
    }
    return v <= max ? (int)v : -1;
}

/* One allow-list entry p[0, len): "*", an address, or address "/" prefix. An IPv4-mapped IPv6
 * network ("::ffff:10.0.0.0/104") is kept as the IPv4 network it covers. */
static bool parse_entry(const char *p, size_t len, struct forwarded_allow *a)
{
    struct forwarded_net *net = &a->nets[a->n];
    const char *slash = memchr(p, '/', len);
    size_t alen = slash ? (size_t)(slash - p) : len;
    bool written_v6;
    int prefix;

    if (len == 1 && *p == '*') {
        a->any = true;
        return true;
    }
    if (!parse_addr(p, alen, &net->family, net->addr)) return false;
    written_v6 = memchr(p, ':', alen) != NULL;
    net->prefix = net->family == AF_INET ? 32 : 128;
    if (slash) {
        prefix = parse_prefix(slash + 1, len - alen - 1, written_v6 ? 128 : 32);
        if (prefix < 0) return false;
        if (written_v6 && net->family == AF_INET) prefix -= 96;
        if (prefix < 0) return false;
        net->prefix = (unsigned)prefix;
    }
    a->n++;
    return true;
}

int forwarded_allow_parse(const char *s, struct forwarded_allow *a, char *err, size_t errlen)
{
    const char *p = s;
    const char *end = s + strlen(s);

    memset(a, 0, sizeof(*a));
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        const char *e = skip_ows(p, stop);
        size_t n = (size_t)(trim_end(e, stop) - e);
        if (n) {
            if (a->n == FORWARDED_MAX_NETS) {
                snprintf(err, errlen, "more than %d entries", FORWARDED_MAX_NETS);
                return -1;
            }
            if (!parse_entry(e, n, a)) {
                snprintf(err, errlen, "'%.*s' is not an address, a network or *", (int)n, e);
                return -1;
            }
        }
        p = comma ? comma + 1 : end;
    }
    return 0;
}

/* One hop of a list: the address an entry names, and whether it is a trusted proxy. */
struct hop {
    const char *addr; /* NULL: not an address ("unknown", obfuscated, malformed) */
    size_t addr_len;
    const char *port; /* "" when none */
    size_t port_len;
    enum forwarded_scheme proto; /* Forwarded's proto= */
    bool trusted;
};

/* The hops of one list, read left to right: the first, and the last untrusted one. */
struct pick {
    size_t n;          /* hops seen */
    struct hop first;  /* the leftmost hop */
    struct hop chosen; /* the rightmost untrusted hop, when 'untrusted' */
    bool untrusted;
};

static void pick_add(struct pick *k, const struct hop *h)
{
    if (k->n++ == 0) k->first = *h;
    if (!h->trusted) {
        k->chosen = *h;
        k->untrusted = true;
    }
}

static const struct hop *pick_result(const struct pick *k)
{
    return k->untrusted ? &k->chosen : &k->first;
}

/* A node p[0, len) as X-Forwarded-For or Forwarded's for= write it: an IPv4 address, a bare
 * IPv6 address, "[IPv6]", each maybe followed by ":port" (IPv4 and bracketed forms). Fills
 * h's address (NULL when it is none), port and whether the allow-list holds the address. */
static void parse_node(const char *p, size_t len, struct hop *h, const struct forwarded_allow *a)
{
    const char *end = p + len;
    const char *addr = p, *addr_end = end, *port = end;
    unsigned char b[16];
    int family;

    h->addr = NULL;
    h->port = "";
    h->port_len = 0;
    h->trusted = false;
    if (len && *p == '[') {
        const char *close = memchr(p, ']', len);
        if (!close) return;
        addr = p + 1;
        addr_end = close;
        if (close + 1 < end) {
            if (close[1] != ':') return;
            port = close + 2;
        }
    } else {
        const char *colon = memchr(p, ':', len);
        if (colon && !memchr(colon + 1, ':', (size_t)(end - colon - 1))) { /* IPv4:port */
            addr_end = colon;
            port = colon + 1;
        }
    }
    if (!parse_addr(addr, (size_t)(addr_end - addr), &family, b)) return;
    if (*p == '[' && !memchr(addr, ':', (size_t)(addr_end - addr)))
        return; /* brackets hold an IPv6 address: "[192.0.2.1]" is not a form anyone writes */
    h->addr = addr;
    h->addr_len = (size_t)(addr_end - addr);
    h->trusted = allow_has_bytes(a, family, b);
    for (const char *q = port; q < end; q++)
        if (*q < '0' || *q > '9') return; /* an obfuscated port ("_abc"): dropped */
    h->port = port;
    h->port_len = (size_t)(end - port);
}

static enum forwarded_scheme scheme_of(const char *p, size_t n)
{
    if (n == 4 && strncasecmp(p, "http", 4) == 0) return FORWARDED_SCHEME_HTTP;
    if (n == 5 && strncasecmp(p, "https", 5) == 0) return FORWARDED_SCHEME_HTTPS;
    return FORWARDED_SCHEME_NONE;
}

/* X-Forwarded-For = 1#node: one field line's entries into the pick. */
static void scan_xff(const char *p, const char *end, struct pick *k,
                     const struct forwarded_allow *a)
{
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        const char *e = skip_ows(p, stop);
        size_t n = (size_t)(trim_end(e, stop) - e);
        struct hop h = {0};
        parse_node(e, n, &h, a);
        pick_add(k, &h);
        p = comma ? comma + 1 : end;
    }
}

/* X-Forwarded-Proto: the rightmost entry of the field line, if it is http or https. */
static void scan_xfp(const char *p, const char *end, enum forwarded_scheme *scheme)
{
    const char *comma = end;
    while (comma > p && comma[-1] != ',')
        comma--;
    const char *e = skip_ows(comma, end);
    size_t n = (size_t)(trim_end(e, end) - e);
    if (n) *scheme = scheme_of(e, n);
}

/* A forwarded-pair's value: token / quoted-string (without quoted-pairs, which no address or
 * scheme needs: one makes the element malformed). Returns the byte after it, or NULL. */
static const char *pair_value(const char *p, const char *end, const char **v, size_t *n)
{
    if (p < end && *p == '"') {
        const char *close = p + 1;
        while (close < end && *close != '"' && *close != '\\')
            close++;
        if (close == end || *close != '"') return NULL;
        *v = p + 1;
        *n = (size_t)(close - p - 1);
        return close + 1;
    }
    *v = p;
    while (p < end && is_tchar(*p))
        p++;
    *n = (size_t)(p - *v);
    return *n ? p : NULL;
}

/*
 * forwarded-element = [ forwarded-pair ] *( ";" [ forwarded-pair ] ), forwarded-pair = token
 * "=" value (RFC 7239 §4), from p up to its ',' or end. Fills h from for= and proto= (a
 * malformed element, or a repeated for= or proto=, is a hop with no address and no scheme).
 * Returns where the next element starts.
 */
static const char *scan_element(const char *p, const char *end, struct hop *h,
                                const struct forwarded_allow *a)
{
    bool ok = true, seen_for = false, seen_proto = false;
    const char *v;
    size_t n;

    *h = (struct hop){.port = ""};
    for (;;) {
        p = skip_ows(p, end);
        if (p == end || *p == ',') break;
        if (*p == ';') {
            p++;
            continue;
        }
        const char *name = p;
        while (p < end && is_tchar(*p))
            p++;
        size_t name_len = (size_t)(p - name);
        const char *next = name_len && p < end && *p == '=' ? pair_value(p + 1, end, &v, &n) : NULL;
        if (next) next = skip_ows(next, end);
        if (!next || (next < end && *next != ';' && *next != ',')) {
            ok = false;
            break;
        }
        p = next;
        if (name_len == 3 && strncasecmp(name, "for", 3) == 0) {
            ok = ok && !seen_for;
            seen_for = true;
            parse_node(v, n, h, a);
        } else if (name_len == 5 && strncasecmp(name, "proto", 5) == 0) {
            ok = ok && !seen_proto;
            seen_proto = true;
            h->proto = scheme_of(v, n);
        }
    }
    if (!ok) {
        *h = (struct hop){.port = ""};
        while (p < end && *p != ',')
            p++;
    }
    return p < end ? p + 1 : end;
}

static void scan_forwarded(const char *p, const char *end, struct pick *k,
                           const struct forwarded_allow *a)
{
    while (p < end) {
        struct hop h;
        const char *e = skip_ows(p, end);
        if (e < end && *e == ',') { /* an empty list element (RFC 9110 §5.6.1) */
            p = e + 1;
            continue;
        }
        p = scan_element(e, end, &h, a);
        if (e < end) pick_add(k, &h);
    }
}

static bool name_is(const struct http_header *h, const char *lit, size_t n)
{
    return h->name_len == n && strncasecmp(h->name, lit, n) == 0;
}

bool forwarded_resolve(const struct forwarded_allow *a, const char *peer,
                       const struct http_header *h, size_t n, struct forwarded_result *out)
{
    struct pick fwd = {0}, xff = {0};
    enum forwarded_scheme xfp = FORWARDED_SCHEME_NONE;
    bool trusted = false;
    const struct hop *hop;

    for (size_t i = 0; i < n; i++) {
        const char *v = h[i].value, *end = v + h[i].value_len;
        bool is_fwd = name_is(&h[i], "forwarded", 9);
        bool is_xff = !is_fwd && name_is(&h[i], "x-forwarded-for", 15);
        if (!is_fwd && !is_xff && !name_is(&h[i], "x-forwarded-proto", 17)) continue;
        if (!trusted && peer[0] && !forwarded_allow_has(a, peer, strlen(peer))) return false;
        trusted = true;
        if (is_fwd)
            scan_forwarded(v, end, &fwd, a);
        else if (is_xff)
            scan_xff(v, end, &xff, a);
        else
            scan_xfp(v, end, &xfp);
    }
    if (!trusted) return false;
    *out = (struct forwarded_result){.port = ""};
    if (fwd.n) {
        hop = pick_result(&fwd);
        out->scheme = hop->proto;
    } else {
        hop = xff.n ? pick_result(&xff) : NULL;
        out->scheme = xfp;
    }
    if (hop && hop->addr) {
        out->addr = hop->addr;
        out->addr_len = hop->addr_len;
        out->port = hop->port;
        out->port_len = hop->port_len;
    }
    return true;
}
