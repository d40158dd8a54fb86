/*
 * buf.h - a growable byte buffer with a consumed-prefix offset.
 *
 * Bytes live in data[off, len). Appending grows the buffer (xrealloc); consuming advances off,
 * and the buffer compacts itself when it is empty or when room is needed. Used for a
 * connection's outgoing bytes and for request bodies kept in memory. Not thread-safe: one owner
 * at a time (see conn.h for who owns a connection's buffers when).
 */
#ifndef CORRAL_BUF_H
#define CORRAL_BUF_H

#include <stddef.h>

struct buf {
    char *data; /* heap block of 'cap' bytes, or NULL */
    size_t off; /* first unconsumed byte */
    size_t len; /* end of the valid bytes */
    size_t cap; /* size of 'data' */
};

void buf_init(struct buf *b);
/* Frees the block; the buffer is empty and usable again. */
void buf_destroy(struct buf *b);
/* Drops all bytes but keeps the block for reuse. */
void buf_reset(struct buf *b);
/* Makes room for 'n' more bytes at data + len and returns a pointer there. */
char *buf_reserve(struct buf *b, size_t n);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_append_str(struct buf *b, const char *s);
/* Marks 'n' bytes at data + off as consumed. */
void buf_consume(struct buf *b, size_t n);

static inline size_t buf_used(const struct buf *b)
{
    return b->len - b->off;
}

static inline char *buf_start(const struct buf *b)
{
    return b->data ? b->data + b->off : NULL;
}

#endif
