/*
 * spool.c - request body storage (see spool.h).
 *
 * The temporary file is created with O_TMPFILE in $TMPDIR (or /tmp), so it has no name and
 * disappears when closed, even if the worker is killed.
 */
#include "util/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void spool_init(struct spool *s, uint64_t threshold)
{
    buf_init(&s->mem);
    s->fd = -1;
    s->size = 0;
    s->threshold = threshold;
    s->view = NULL;
    s->dir = NULL;
}

void spool_reset(struct spool *s)
{
    if (s->mem.cap > 256 * 1024)
        buf_destroy(&s->mem);
    else
        buf_reset(&s->mem);
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    s->size = 0;
    s->view = NULL;
}

void spool_destroy(struct spool *s)
{
    spool_reset(s);
    buf_destroy(&s->mem);
}

void spool_set_view(struct spool *s, const char *p, size_t n)
{
    s->view = p;
    s->size = n;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int spill(struct spool *s)
{
    const char *dir = s->dir ? s->dir : getenv("TMPDIR");
    int err;

    s->fd = open(dir && *dir ? dir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (s->fd < 0) return -errno;
    err = buf_used(&s->mem) ? write_all(s->fd, buf_start(&s->mem), buf_used(&s->mem)) : 0;
    buf_destroy(&s->mem);
    return err;
}

int spool_append(struct spool *s, const void *p, size_t n)
{
    int err;

    if (s->fd < 0 && s->size + n > s->threshold) {
        err = spill(s);
        if (err) return err;
    }
    if (s->fd >= 0) {
        err = write_all(s->fd, p, n);
        if (err) return err;
    } else {
        buf_append(&s->mem, p, n);
    }
    s->size += n;
    return 0;
}

char *spool_reserve(struct spool *s, size_t n)
{
    if (s->fd >= 0 || s->view || s->size + n > s->threshold) return NULL;
    return buf_reserve(&s->mem, n);
}

void spool_commit(struct spool *s, size_t n)
{
    s->mem.len += n;
    s->size += n;
}

const char *spool_memory(const struct spool *s, uint64_t off)
{
    if (s->view) return s->view + off;
    if (s->fd >= 0) return NULL;
    return buf_start(&s->mem) + off;
}

ssize_t spool_read(const struct spool *s, uint64_t off, void *dst, size_t n)
{
    const char *mem;

    if (off >= s->size) return 0;
    if (n > s->size - off) n = (size_t)(s->size - off);
    mem = spool_memory(s, off);
    if (mem) {
        memcpy(dst, mem, n);
        return (ssize_t)n;
    }
    for (;;) {
        ssize_t r = pread(s->fd, dst, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        return r < 0 ? -errno : r;
    }
}
