/*
 * http_parser.h - a pure, zero-copy, strict HTTP/1.x request-head parser and chunked-body
 * decoder (RFC 9110, RFC 9112), in the picohttpparser model.
 *
 * Pure: no I/O, no allocation, no logging, no globals. Input is (buf, len); output is views
 * into buf, valid as long as buf is. Incremental: the caller calls again with the same buffer
 * grown by the bytes that arrived since. Strict against request smuggling: anything RFC 9112
 * says to reject (Content-Length with Transfer-Encoding, duplicate or malformed Content-Length,
 * whitespace before a header colon, obs-fold, bare CR or LF, invalid chunk sizes, bare CR in a
 * chunk extension, ...) is an error, never a guess. Any thread may call these functions.
 */
#ifndef CORRAL_HTTP_PARSER_H
#define CORRAL_HTTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/request.h"
#include "util/parse.h"

/* One header field: views into the caller's buffer. The value has no leading/trailing OWS. */
struct http_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

struct http_limits {
    size_t max_head;    /* a head longer than this is an error (--buffer-size); must be > 0 */
    size_t max_headers; /* more header fields than this: 431 */
    uint64_t max_body;  /* Content-Length above this: 413; 0 = no limit (--limit-post) */
};

/*
 * Parses the request head at buf[0, len). It keeps no state between calls: call it again with
 * the same buffer grown by the bytes that arrived since; it parses from buf[0] each time.
 * Returns the head's length in bytes (> 0, through the empty line) when it is complete; bytes
 * after it (a body, a pipelined request) are not looked at;
 * PARSE_INCOMPLETE when more bytes are needed and len < lim->max_head (a head still
 * incomplete once len >= lim->max_head cannot fit, and is an error: 414 or 431);
 * PARSE_ERROR with *status set to the HTTP status to answer with:
 *   400 malformed or smuggling-prone (including a target whose form does not suit the method,
 *   and a singleton field repeated with a different value), 413 Content-Length above
 *   lim->max_body,
 *   414 request line not ended within lim->max_head bytes, 431 head longer than
 *   lim->max_head or more than lim->max_headers fields, 501 a transfer coding other than a
 *   lone "chunked" (including a second Transfer-Encoding field) or the method CONNECT (corral
 *   is no proxy), 505 a well-formed version
 *   other than HTTP/1.0 or HTTP/1.1.
 * Only the first lim->max_head bytes are ever read. Empty lines (CRLF) before the request
 * line are skipped and counted in the head's length (RFC 9112 §2.2). An error is reported at
 * the first byte that proves it, so a prefix of an input parses as PARSE_INCOMPLETE or as the
 * same error as the whole input. On PARSE_INCOMPLETE or PARSE_ERROR, *r is unspecified.
 * 'headers' has room for lim->max_headers entries; r->headers points to it on success.
 *
 * The target (RFC 9112 §3.2) is origin-form ("/..."), asterisk-form ("*", OPTIONS only) or
 * absolute-form ("http://" or "https://" authority, any case): r->form says which. For
 * absolute-form, r->path and r->query are the parts after the authority (the path may be
 * empty), r->authority is host[:port], and r->userinfo the "user:pass@" the target may carry
 * (its bytes stay in r->target, which is the target as sent).
 */
int http_parse_request(const char *buf, size_t len, struct request *r, struct http_header *headers,
                       const struct http_limits *lim, int *status);

/*
 * True if the field named name[0, len) (any case) is one RFC 9110 defines as a single value:
 * Host, Content-Length, Authorization, Proxy-Authorization, Content-Type, Content-Location,
 * Content-Range, Date, From, If-Modified-Since, If-Unmodified-Since, If-Range, Max-Forwards,
 * Range, Referer, User-Agent. http_parse_request() rejects such a field repeated with a
 * different value (Host and Content-Length: repeated at all), so a repeat that passed holds
 * the same value again, and the environ shows it once.
 */
bool http_field_is_singleton(const char *name, size_t len);

/*
 * Content-Length = 1*DIGIT (RFC 9110 §8.6): the value of p[0, n), or -1 when it is empty, has
 * anything but digits (a sign, spaces, a list) or does not fit in an int64_t. The one
 * Content-Length parser, for HTTP heads and uwsgi vars alike.
 */
int64_t http_parse_content_length(const char *p, size_t n);

/* Chunked transfer-coding decoder state (RFC 9112 §7.1). Zero it, or call _init, per body. */
struct http_chunked {
    int state;          /* internal: where in the chunk grammar we are */
    uint64_t remaining; /* data bytes left in the current chunk; in the trailer section,
                           the trailer bytes consumed so far */
    size_t line_len;    /* bytes of the current size/trailer line consumed so far */
};

void http_chunked_init(struct http_chunked *d);

enum {
    HTTP_CHUNK_DATA = 1, /* *data, *data_len is a view of body bytes */
    HTTP_CHUNK_DONE = 2, /* the last chunk and trailers are consumed: the body is complete */
};

/*
 * Decodes raw chunked bytes at in[0, len). Always sets *consumed to the raw bytes used, which
 * the caller drops before calling again with the rest (plus whatever arrives later). Every
 * byte it looks at is consumed (the state remembers it), so bytes may arrive split anywhere.
 * Returns HTTP_CHUNK_DATA with a view of decoded body bytes inside 'in' (as soon as any are
 * available; a chunk may come back in several views);
 * HTTP_CHUNK_DONE once the terminating chunk and trailer section are consumed (bytes after
 * that belong to the next request); again on later calls, consuming nothing;
 * PARSE_INCOMPLETE when all of in[0, len) was consumed without finishing a view (call again
 * with more);
 * PARSE_ERROR (the body is malformed: answer 400 and close); again on later calls.
 * A chunk-size line with its extensions, and each trailer line, is limited to 4096 bytes
 * plus CRLF; the trailer section, final CRLF included, to 8192 bytes. Chunk sizes must be
 * below 2^62. Extensions are validated and ignored; trailer fields are validated like header
 * fields and dropped.
 */
int http_chunked_decode(struct http_chunked *d, const char *in, size_t len, size_t *consumed,
                        const char **data, size_t *data_len);

#endif
