/*
 * out.c - a connection's output (see out.h).
 *
 * One write(2) when only bytes are pending, writev(2) for bytes followed by the block, then
 * sendfile(2) for the file range. A short write leaves the cursors where the socket stopped.
 */
#include "net/out.h"

#include <assert.h>
#include <errno.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/uio.h>
#include <unistd.h>

enum { OUT_SENDFILE_MAX = 1 << 30 }; /* bytes per sendfile(2) call */

static void drop_file(struct out *o)
{
    if (o->file_fd >= 0) close(o->file_fd);
    o->file_fd = -1;
    o->file_off = o->file_len = 0;
}

void out_init(struct out *o)
{
    buf_init(&o->bytes);
    o->block = NULL;
    o->block_len = 0;
    o->file_fd = -1;
    o->file_off = o->file_len = 0;
}

void out_destroy(struct out *o)
{
    drop_file(o);
    buf_destroy(&o->bytes);
    out_init(o);
}

void out_reset(struct out *o)
{
    buf_reset(&o->bytes);
    o->block = NULL;
    o->block_len = 0;
    drop_file(o);
}

void out_append(struct out *o, const void *p, size_t n)
{
    assert(!out_closed(o));
    buf_append(&o->bytes, p, n);
}

void out_append_block(struct out *o, const void *p, size_t n)
{
    assert(!out_closed(o));
    if (n == 0) return;
    o->block = p;
    o->block_len = n;
}

void out_append_file(struct out *o, int fd, uint64_t off, uint64_t len)
{
    assert(!out_closed(o));
    if (len == 0) {
        close(fd);
        return;
    }
    o->file_fd = fd;
    o->file_off = off;
    o->file_len = len;
}

struct buf *out_bytes(struct out *o)
{
    assert(!out_closed(o));
    return &o->bytes;
}

size_t out_mark(const struct out *o)
{
    assert(!out_closed(o));
    return buf_used(&o->bytes); /* relative: buf_reserve() may move the bytes to the front */
}

void out_rollback(struct out *o, size_t mark)
{
    assert(mark <= buf_used(&o->bytes));
    o->bytes.len = o->bytes.off + mark;
    if (mark == 0) buf_reset(&o->bytes);
    o->block = NULL;
    o->block_len = 0;
    drop_file(o);
}

uint64_t out_pending(const struct out *o)
{
    return buf_used(&o->bytes) + o->block_len + o->file_len;
}

uint64_t out_buffered(const struct out *o)
{
    return buf_used(&o->bytes) + o->block_len;
}

bool out_has_block(const struct out *o)
{
    return o->block_len > 0;
}

bool out_closed(const struct out *o)
{
    return o->block_len > 0 || o->file_fd >= 0;
}

bool out_settle(struct out *o, uint64_t limit)
{
    if (o->block_len == 0 || out_buffered(o) > limit) return o->block_len > 0;
    buf_append(&o->bytes, o->block, o->block_len);
    o->block = NULL;
    o->block_len = 0;
    return false;
}

int out_flush(struct out *o, int fd, uint64_t *written)
{
    uint64_t total = 0;
    int rc = 0;

    while (buf_used(&o->bytes) > 0 || o->block_len > 0) {
        struct iovec iov[2];
        int n = 0;
        size_t used = buf_used(&o->bytes);
        if (used) iov[n++] = (struct iovec){buf_start(&o->bytes), used};
        if (o->block_len) iov[n++] = (struct iovec){(void *)o->block, o->block_len};
        ssize_t k = n == 1 ? write(fd, iov[0].iov_base, iov[0].iov_len) : writev(fd, iov, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            rc = errno == EAGAIN ? 1 : -1;
            goto out;
        }
        total += (uint64_t)k;
        size_t from_bytes = (size_t)k < used ? (size_t)k : used;
        buf_consume(&o->bytes, from_bytes);
        if (o->block_len) {
            o->block += (size_t)k - from_bytes;
            o->block_len -= (size_t)k - from_bytes;
        }
    }
    if (!o->block_len) o->block = NULL;
    while (o->file_len > 0) {
        off_t off = (off_t)o->file_off;
        size_t n = o->file_len > OUT_SENDFILE_MAX ? OUT_SENDFILE_MAX : (size_t)o->file_len;
        ssize_t k = sendfile(fd, o->file_fd, &off, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            rc = errno == EAGAIN ? 1 : -1;
            goto out;
        }
        if (k == 0) { /* the file shrank under us */
            errno = EIO;
            rc = -1;
            goto out;
        }
        total += (uint64_t)k;
        o->file_off += (uint64_t)k;
        o->file_len -= (uint64_t)k;
    }
    drop_file(o);
out:
    if (written) *written = total;
    return rc;
}

void out_move(struct out *dst, struct out *src)
{
    if (out_pending(src) == 0 && src->file_fd < 0) return;
    assert(!out_closed(dst));
    if (buf_used(&dst->bytes) == 0) {
        struct buf tmp = dst->bytes;
        buf_reset(&tmp);
        dst->bytes = src->bytes;
        src->bytes = tmp;
    } else if (buf_used(&src->bytes) > 0) {
        buf_append(&dst->bytes, buf_start(&src->bytes), buf_used(&src->bytes));
        buf_reset(&src->bytes);
    }
    dst->block = src->block;
    dst->block_len = src->block_len;
    dst->file_fd = src->file_fd;
    dst->file_off = src->file_off;
    dst->file_len = src->file_len;
    src->block = NULL;
    src->block_len = 0;
    src->file_fd = -1;
    src->file_off = src->file_len = 0;
}
