/*
 * out.h - a connection's output: response bytes on their way to a socket.
 *
 * An out holds, in the order they go out: copied bytes, then at most one block sent without
 * copying (a view of memory its owner keeps alive), then at most one file range (sendfile
 * from a descriptor the out owns and closes). Nothing may be appended after a block or a file
 * range until they are written: the producer (wsgi.c) hands the output over after each, and
 * appends again only once told the block is no longer needed.
 *
 * A connection has two: the app's thread appends to 'stage' (out_append*, out_mark,
 * out_rollback), the loop writes 'wire' (out_flush). out_move() hands a stage over to the wire
 * when the app yields; the two are never touched by two threads at once (see conn.h). Not
 * thread-safe by itself: one owner at a time.
 */
#ifndef CORRAL_OUT_H
#define CORRAL_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

struct out {
    struct buf bytes;  /* copied bytes, sent first */
    const char *block; /* then this view, sent without copying (NULL: none) */
    size_t block_len;
    int file_fd; /* then file_len bytes of this file from file_off (-1: none); owned */
    uint64_t file_off;
    uint64_t file_len;
};

void out_init(struct out *o);
/* Frees the byte buffer; the out is empty and usable again. */
void out_destroy(struct out *o);
/* Drops everything unsent (the block is forgotten, the file closed). */
void out_reset(struct out *o);

/* Copies p[0, n). Not while a block or a file range is pending (out_closed()). */
void out_append(struct out *o, const void *p, size_t n);
/* Sends p[0, n) without copying: p must stay valid while out_has_block() is true. */
void out_append_block(struct out *o, const void *p, size_t n);
/* Sends 'len' bytes of 'fd' from 'off' with sendfile(2). The out owns fd from here: it closes
 * it once the range is written, or on out_reset()/out_destroy() (also when len is 0). */
void out_append_file(struct out *o, int fd, uint64_t off, uint64_t len);

/* The copied bytes, for code that formats into a struct buf. Not while out_closed(). */
struct buf *out_bytes(struct out *o);

/* A point to roll back to: everything appended after it can be dropped while unsent. */
size_t out_mark(const struct out *o);
void out_rollback(struct out *o, size_t mark);

/* Bytes not yet written (copied bytes, block and file range). */
uint64_t out_pending(const struct out *o);
/* Bytes not yet written that take memory (copied bytes and block). */
uint64_t out_buffered(const struct out *o);
/* A block is still to be written: its owner must keep it alive. */
bool out_has_block(const struct out *o);
/* A block or a file range is pending: nothing can be appended until they are written. */
bool out_closed(const struct out *o);
/*
 * When a block is pending and the out buffers no more than 'limit' bytes, copies the block's
 * unsent rest into the bytes, so its owner may let go of it. Returns out_has_block().
 */
bool out_settle(struct out *o, uint64_t limit);

/*
 * Writes to the socket 'fd' until everything is written or it would block.
 * Returns 0 when nothing is pending, 1 when the socket is full, -1 on an error (errno set;
 * a file that shrank under us is EIO). *written, if not NULL, gets the bytes written.
 */
int out_flush(struct out *o, int fd, uint64_t *written);

/*
 * Appends everything in 'src' to 'dst' and empties 'src'. Unless 'src' is empty, 'dst' must
 * not be out_closed(). When 'dst' has no bytes the two byte buffers are swapped: no copy.
 */
void out_move(struct out *dst, struct out *src);

#endif
