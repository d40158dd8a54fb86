/*
 * forwarded.h - the client's address and scheme from a trusted proxy's headers, the model of
 * gunicorn's --forwarded-allow-ips: X-Forwarded-For, X-Forwarded-Proto and RFC 7239 Forwarded
 * count only when the peer that sent the request is in the allow-list.
 *
 * Pure: no I/O, no allocation, no logging, no globals; output is views into the header values.
 * forwarded_allow_parse() runs once at start-up (config.c checks the option with it, each
 * worker's wsgi_init() keeps the parsed list); forwarded_resolve() runs per request, on the
 * request's thread, from wsgi.c's environ building. Any thread may call them.
 *
 * The rule, for X-Forwarded-For and for Forwarded's for= alike: each proxy appends the address
 * it received the request from, so the list is read from the right; trusted addresses are
 * proxies, and the rightmost address that is not trusted is the client (every address left of
 * it was written by the client itself, and is ignored). If every address is trusted, the
 * leftmost one is the client. An entry that is not an IP address ("unknown", an obfuscated
 * identifier, garbage) is never trusted: when it is the one chosen, the client's address stays
 * unknown (REMOTE_ADDR stays the peer's). A UNIX-socket peer (no address) is trusted, as in
 * gunicorn: only local processes can connect to it.
 */
#ifndef CORRAL_FORWARDED_H
#define CORRAL_FORWARDED_H

#include <stdbool.h>
#include <stddef.h>

#include "http/http_parser.h"

enum { FORWARDED_MAX_NETS = 32 }; /* entries an allow-list may hold */

/* One allowed network: an address and a prefix length (32 or 128 for a single address). */
struct forwarded_net {
    int family;             /* AF_INET or AF_INET6 */
    unsigned prefix;        /* 0..32 or 0..128 */
    unsigned char addr[16]; /* network byte order; 4 bytes for AF_INET */
};

/* A parsed --forwarded-allow-ips. */
struct forwarded_allow {
    bool any; /* "*": every peer is trusted */
    size_t n; /* nets[0, n) */
    struct forwarded_net nets[FORWARDED_MAX_NETS];
};

/*
 * Parses a comma-separated allow-list: IPv4 or IPv6 addresses, CIDR networks ("10.0.0.0/8",
 * "fd00::/8"), or "*" (OWS around entries is ignored; an empty string trusts nobody). Returns
 * 0, or -1 with a one-line reason in err (e.g. "'10.0.0.0/33' is not an address or network").
 */
int forwarded_allow_parse(const char *s, struct forwarded_allow *a, char *err, size_t errlen);

/* True if the textual address addr[0, len) (IPv4, IPv6, IPv4-mapped IPv6) is in the list.
 * Anything that is not an address is not in it. */
bool forwarded_allow_has(const struct forwarded_allow *a, const char *addr, size_t len);

enum forwarded_scheme {
    FORWARDED_SCHEME_NONE = 0, /* no usable proto: keep the connection's scheme */
    FORWARDED_SCHEME_HTTP,
    FORWARDED_SCHEME_HTTPS,
};

/* What the proxy headers say. Views into the header values. */
struct forwarded_result {
    const char *addr; /* the client's address (no brackets, no port); NULL: keep the peer's */
    size_t addr_len;
    const char *port; /* with addr: the port the header gave, or "" (len 0) */
    size_t port_len;
    enum forwarded_scheme scheme;
};

/*
 * From the head's fields h[0, n) of a request whose peer is 'peer' (REMOTE_ADDR as text; ""
 * for a UNIX socket): fills *out and returns true when the peer is trusted and a Forwarded,
 * X-Forwarded-For or X-Forwarded-Proto field is present; returns false (and *out says nothing)
 * otherwise: the fields then change nothing. Forwarded, when present and holding at least one
 * element, wins over the X-Forwarded-* pair: the chosen element's for= gives the address and
 * its proto= the scheme. Otherwise X-Forwarded-For gives the address and the rightmost
 * X-Forwarded-Proto value ("http" or "https", any case) the scheme. Repeated field lines are
 * one list, in order.
 */
bool forwarded_resolve(const struct forwarded_allow *a, const char *peer,
                       const struct http_header *h, size_t n, struct forwarded_result *out);

#endif
