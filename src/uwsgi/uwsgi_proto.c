/*
 * uwsgi_proto.c - the uwsgi request packet: parse (nginx uwsgi_pass -> vars) and encode
 * (vars -> packet, for tests and tools). The contract is in uwsgi_proto.h.
 *
 * Every length read from the wire is compared with the bytes left in the vars block before it
 * is used, as a size_t subtraction that cannot wrap: 'end - p' where p <= end always holds.
 * 16-bit fields are assembled byte by byte, so there are no unaligned loads and no dependence
 * on the host's byte order.
 */
#include "uwsgi/uwsgi_proto.h"

#include <stdbool.h>
#include <string.h>

/* The little-endian 16-bit value at p[0], p[1]. */
static size_t get_le16(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (size_t)u[0] | (size_t)u[1] << 8;
}

static void put_le16(char *p, size_t v)
{
    p[0] = (char)(v & 0xff);
    p[1] = (char)(v >> 8 & 0xff);
}

/* Checks the 4-byte header at buf; on success stores the vars block's size in *datasize. */
static enum uwsgi_error check_header(const char *buf, size_t max_packet, size_t *datasize)
{
    size_t size = get_le16(buf + 1);

    if (buf[0] != 0) return UWSGI_ERR_MODIFIER;
    if (max_packet < UWSGI_HEADER_SIZE || size > max_packet - UWSGI_HEADER_SIZE)
        return UWSGI_ERR_TOO_LARGE;
    *datasize = size;
    return UWSGI_OK;
}

/*
 * Reads one length-prefixed string at *p, which lies before 'end'. On success the view is
 * stored in *s, *len and *p moves past it; a prefix or string that runs past 'end' is
 * UWSGI_ERR_TRUNCATED (this includes a lone trailing byte where a prefix should start).
 */
static enum uwsgi_error read_string(const char **p, const char *end, const char **s, size_t *len)
{
    size_t n;

    if ((size_t)(end - *p) < 2) return UWSGI_ERR_TRUNCATED;
    n = get_le16(*p);
    *p += 2;
    if (n > (size_t)(end - *p)) return UWSGI_ERR_TRUNCATED;
    *s = *p;
    *len = n;
    *p += n;
    return UWSGI_OK;
}

/* Reads one var at *p (before 'end') into *v. */
static enum uwsgi_error read_var(const char **p, const char *end, struct uwsgi_var *v)
{
    enum uwsgi_error e = read_string(p, end, &v->key, &v->key_len);

    if (e != UWSGI_OK) return e;
    if (v->key_len == 0) return UWSGI_ERR_EMPTY_KEY;
    return read_string(p, end, &v->val, &v->val_len);
}

/* Splits the vars block [p, end) into vars[0, *n); the block must hold whole vars only. */
static enum uwsgi_error parse_vars(const char *p, const char *end, struct uwsgi_var *vars,
                                   size_t max_vars, size_t *n)
{
    size_t count = 0;

    while (p < end) {
        struct uwsgi_var v;
        enum uwsgi_error e = read_var(&p, end, &v);

        if (e != UWSGI_OK) return e;
        if (count == max_vars) return UWSGI_ERR_TOO_MANY_VARS;
        vars[count++] = v;
    }
    *n = count;
    return UWSGI_OK;
}

int uwsgi_parse_request(const char *buf, size_t len, size_t max_packet, struct uwsgi_var *vars,
                        size_t max_vars, size_t *num_vars, enum uwsgi_error *err)
{
    size_t datasize = 0;
    size_t n = 0;

    *num_vars = 0;
    *err = UWSGI_OK;
    if (len < UWSGI_HEADER_SIZE) return PARSE_INCOMPLETE;

    *err = check_header(buf, max_packet, &datasize);
    if (*err != UWSGI_OK) return PARSE_ERROR;
    if (len - UWSGI_HEADER_SIZE < datasize) return PARSE_INCOMPLETE;

    *err =
        parse_vars(buf + UWSGI_HEADER_SIZE, buf + UWSGI_HEADER_SIZE + datasize, vars, max_vars, &n);
    if (*err != UWSGI_OK) return PARSE_ERROR;
    *num_vars = n;
    return (int)(UWSGI_HEADER_SIZE + datasize);
}

/* The vars block's size for vars[0, n), or false when a piece exceeds the 16-bit limits. */
static bool vars_size(const struct uwsgi_var *vars, size_t n, size_t *size)
{
    size_t total = 0;

    for (size_t i = 0; i < n; i++) {
        if (vars[i].key_len > UWSGI_MAX_DATASIZE || vars[i].val_len > UWSGI_MAX_DATASIZE)
            return false;
        total += 4 + vars[i].key_len + vars[i].val_len;
        if (total > UWSGI_MAX_DATASIZE) return false;
    }
    *size = total;
    return true;
}

/* Writes a length-prefixed string at p; returns the position after it. */
static char *put_string(char *p, const char *s, size_t len)
{
    put_le16(p, len);
    if (len) memcpy(p + 2, s, len);
    return p + 2 + len;
}

size_t uwsgi_encode_vars(char *out, size_t cap, const struct uwsgi_var *vars, size_t n,
                         uint8_t modifier1)
{
    size_t datasize;
    char *p;

    if (!vars_size(vars, n, &datasize)) return 0;
    if (cap < UWSGI_HEADER_SIZE || datasize > cap - UWSGI_HEADER_SIZE) return 0;

    out[0] = (char)modifier1;
    put_le16(out + 1, datasize);
    out[3] = 0;
    p = out + UWSGI_HEADER_SIZE;
    for (size_t i = 0; i < n; i++) {
        p = put_string(p, vars[i].key, vars[i].key_len);
        p = put_string(p, vars[i].val, vars[i].val_len);
    }
    return UWSGI_HEADER_SIZE + datasize;
}

const char *uwsgi_strerror(enum uwsgi_error err)
{
    switch (err) {
    case UWSGI_OK:
        return "no error";
    case UWSGI_ERR_MODIFIER:
        return "modifier1 is not 0 (wsgi)";
    case UWSGI_ERR_TOO_LARGE:
        return "packet larger than buffer-size";
    case UWSGI_ERR_TRUNCATED:
        return "var length runs past the vars block";
    case UWSGI_ERR_EMPTY_KEY:
        return "var with an empty key";
    case UWSGI_ERR_TOO_MANY_VARS:
        return "too many vars";
    }
    return "unknown error";
}
