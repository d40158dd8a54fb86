/*
 * spool.h - where a request body waits for the app: in memory up to a threshold, then in an
 * unlinked temporary file.
 *
 * The loop fills a spool as body bytes arrive (so a slow upload never holds a Python thread),
 * then wsgi.input reads it by offset. One owner at a time: the loop while the body arrives, the
 * request's Python thread while the app runs.
 */
#ifndef CORRAL_SPOOL_H
#define CORRAL_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/buf.h"

struct spool {
    struct buf mem;     /* the bytes while size <= threshold */
    int fd;             /* temporary file once above it, else -1 */
    uint64_t size;      /* bytes stored */
    uint64_t threshold; /* memory limit before spilling (--post-buffering) */
    const char *view;   /* zero-copy case: the whole body lies in the connection's buffer */
    const char *dir;    /* where the file goes (--spool-dir); NULL: $TMPDIR, else /tmp */
};

void spool_init(struct spool *s, uint64_t threshold);
/* Empties the spool for the next body: closes the file, keeps a small memory block. */
void spool_reset(struct spool *s);
/* Frees everything; the spool is empty (and still usable). */
void spool_destroy(struct spool *s);
/* Uses p[0, n) in place as the whole body (valid until spool_reset()). Spool must be empty. */
void spool_set_view(struct spool *s, const char *p, size_t n);
/* Appends bytes (copying). Returns 0 or -errno (could not create or write the file). */
int spool_append(struct spool *s, const void *p, size_t n);
/*
 * Zero-copy filling: room for n more bytes in memory, or NULL when the body is (or would then
 * be) past the memory threshold or a view. Write into it, then spool_commit() what was written.
 */
char *spool_reserve(struct spool *s, size_t n);
void spool_commit(struct spool *s, size_t n);
/*
 * Copies up to n bytes at offset 'off' into dst. Returns bytes copied (0 at the end) or
 * -errno. Safe to call without the GIL.
 */
ssize_t spool_read(const struct spool *s, uint64_t off, void *dst, size_t n);
/* A pointer to bytes [off, size) when the body is in memory, else NULL. */
const char *spool_memory(const struct spool *s, uint64_t off);

#endif
