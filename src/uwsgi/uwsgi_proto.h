/*
 * uwsgi_proto.h - a pure parser for the uwsgi binary protocol's request packet, as nginx's
 * uwsgi_pass sends it (modifier1 0: WSGI), and the matching encoder for tests and tools.
 *
 * Packet: a 4-byte header {uint8 modifier1, uint16 datasize (little-endian), uint8 modifier2}
 * then 'datasize' bytes of vars: repeated {uint16 key_len (LE), key, uint16 val_len (LE), val}.
 * The request body follows the packet (its length is the CONTENT_LENGTH var).
 *
 * Pure: no I/O, no allocation, no logging, no globals; output is views into the caller's
 * buffer. Incremental: call again with the same buffer grown. Any thread may call it.
 * See docs/uwsgi-protocol.md for what the server layer makes of the vars.
 */
#ifndef CORRAL_UWSGI_PROTO_H
#define CORRAL_UWSGI_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "util/parse.h"

enum {
    UWSGI_HEADER_SIZE = 4,        /* modifier1, datasize (2 bytes), modifier2 */
    UWSGI_MAX_DATASIZE = 0xffff,  /* datasize is a 16-bit field */
    UWSGI_MAX_PACKET = 4 + 0xffff /* the largest packet the protocol can express */
};

/* One variable: views into the caller's buffer (not NUL-terminated). */
struct uwsgi_var {
    const char *key; /* never empty in a parsed packet */
    size_t key_len;  /* 1..65535 */
    const char *val; /* may be empty: nginx sends e.g. QUERY_STRING "" */
    size_t val_len;  /* 0..65535 */
};

/* Why a packet was refused. */
enum uwsgi_error {
    UWSGI_OK = 0,
    UWSGI_ERR_MODIFIER,     /* modifier1 is not 0 (WSGI) */
    UWSGI_ERR_TOO_LARGE,    /* the packet (4 + datasize) is larger than the caller's max_packet */
    UWSGI_ERR_TRUNCATED,    /* a key or value length runs past the vars block */
    UWSGI_ERR_EMPTY_KEY,    /* a var with a zero-length key */
    UWSGI_ERR_TOO_MANY_VARS /* more vars than the caller's array holds */
};

/*
 * Parses the packet at buf[0, len). Bytes after the packet (the request body) are not looked at.
 *
 * Returns:
 *  - the packet's size (4 + datasize, so > 0) once the whole vars block is present and valid,
 *    with vars[0, *num_vars) filled in wire order and *err = UWSGI_OK. The views point into
 *    buf and are valid as long as buf is. Zero vars is a valid packet; duplicate keys are kept
 *    as sent (the server layer decides what is missing or repeated).
 *  - PARSE_INCOMPLETE when more bytes are needed (*num_vars = 0, *err = UWSGI_OK). Call again
 *    with the same bytes plus whatever arrived since.
 *  - PARSE_ERROR with *err set (*num_vars = 0). Header errors (UWSGI_ERR_MODIFIER, then
 *    UWSGI_ERR_TOO_LARGE) are reported as soon as the 4-byte header is present; errors inside
 *    the vars block once the whole block is. A given input always gives the same error, and a
 *    longer input starting with it gives that error too.
 *
 * 'max_packet' bounds the whole packet, header included: the caller's buffer size (at most
 * UWSGI_MAX_PACKET matters; anything larger is the same as UWSGI_MAX_PACKET). 'vars' has room
 * for 'max_vars' entries; it may be written to even when the result is an error. modifier2 is
 * ignored (nginx sends 0 unless uwsgi_modifier2 is set). 'buf' may be NULL when len is 0.
 */
int uwsgi_parse_request(const char *buf, size_t len, size_t max_packet, struct uwsgi_var *vars,
                        size_t max_vars, size_t *num_vars, enum uwsgi_error *err);

/*
 * Encodes a request packet with 'modifier1', modifier2 0 and vars[0, n) in order into
 * out[0, cap). Returns the packet's length (4 + datasize), or 0 when it does not fit in 'cap'
 * or when a key, a value or the vars block is longer than 65535 bytes (nothing is promised
 * about out's contents then). Keys are not checked, so tests can build packets with an empty
 * key; a NULL key or val is allowed when its length is 0. No body is written: the caller
 * appends it. Pure, like the parser.
 */
size_t uwsgi_encode_vars(char *out, size_t cap, const struct uwsgi_var *vars, size_t n,
                         uint8_t modifier1);

/* A static, lowercase description of 'err' for log lines ("unknown error" for other values). */
const char *uwsgi_strerror(enum uwsgi_error err);

#endif
