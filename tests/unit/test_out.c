/*
 * test_out.c - unit tests for a connection's output (src/net/out.c).
 *
 * Every test writes into a real AF_UNIX stream socketpair (the out's end nonblocking) and
 * compares what the reader gets with a reference: byte i of the whole response is pat(i), so
 * the copied bytes, the block and the file range are consecutive stretches of one pattern
 * and any loss, repeat or reordering shows up. The file range is read from an unlinked
 * temporary file whose pattern starts after 'skip' junk bytes, so the offset matters.
 *
 * A real socket cannot be made to fill after exactly N bytes, so write(2), writev(2) and
 * sendfile(2) are interposed (see "the fake" below): off, the default, they pass straight
 * through; on, they take a given number of bytes in total and then fail with EAGAIN, so a
 * partial write can stop at every byte. The tests of a genuinely full socket use a small
 * SO_SNDBUF instead. SIGPIPE is ignored (main) so the EPIPE test gets an error, not a signal.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cmocka.h>

#include "net/out.h"
#include "util/buf.h"

/* ---------------------------------------------------------------- the fake */

/*
 * When 'on', write(), writev() and sendfile() let at most 'budget' bytes through in total,
 * then fail with EAGAIN (a socket that is full after exactly that many bytes); each call
 * takes at most 'per_call' bytes (0: no cap), and the first 'eintr' calls fail with EINTR.
 * The bytes let through go to the real socket. out.c is linked into this binary, so its calls
 * bind to these definitions; off, they call the next definition (libc's, or ASan's wrapper).
 */
static struct {
    bool on;
    size_t budget;
    size_t per_call;
    int eintr;
    int calls;
} fake;

static void fake_on(size_t budget)
{
    fake.on = true;
    fake.budget = budget;
    fake.per_call = 0;
    fake.eintr = 0;
    fake.calls = 0;
}

static void fake_off(void)
{
    fake.on = false;
}

/* How many of 'want' bytes this call may write: > 0, or -1 with errno EINTR or EAGAIN. */
static ssize_t fake_allow(size_t want)
{
    fake.calls++;
    if (fake.eintr > 0) {
        fake.eintr--;
        errno = EINTR;
        return -1;
    }
    if (want == 0) return 0;
    if (fake.budget == 0) {
        errno = EAGAIN;
        return -1;
    }
    size_t n = want < fake.budget ? want : fake.budget;
    if (fake.per_call && n > fake.per_call) n = fake.per_call;
    return (ssize_t)n;
}

typedef ssize_t writev_fn(int, const struct iovec *, int);
typedef ssize_t sendfile_fn(int, int, off_t *, size_t);

static writev_fn *next_writev(void)
{
    static writev_fn *fn;
    if (!fn) fn = (writev_fn *)dlsym(RTLD_NEXT, "writev");
    assert_non_null(fn);
    return fn;
}

static sendfile_fn *next_sendfile(void)
{
    static sendfile_fn *fn;
    if (!fn) fn = (sendfile_fn *)dlsym(RTLD_NEXT, "sendfile");
    assert_non_null(fn);
    return fn;
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    if (!fake.on) return next_writev()(fd, iov, iovcnt);
    size_t want = 0;
    for (int i = 0; i < iovcnt; i++)
        want += iov[i].iov_len;
    ssize_t allow = fake_allow(want);
    if (allow <= 0) return allow;
    struct iovec cut[8];
    int n = 0;
    size_t left = (size_t)allow;
    for (int i = 0; i < iovcnt && left > 0 && n < 8; i++) {
        size_t k = iov[i].iov_len < left ? iov[i].iov_len : left;
        if (k == 0) continue;
        cut[n++] = (struct iovec){iov[i].iov_base, k};
        left -= k;
    }
    ssize_t k = next_writev()(fd, cut, n);
    if (k > 0) fake.budget -= (size_t)k;
    return k;
}

ssize_t write(int fd, const void *p, size_t n)
{
    struct iovec v = {(void *)p, n};
    if (!fake.on) return next_writev()(fd, &v, 1);
    return writev(fd, &v, 1);
}

ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count)
{
    if (!fake.on) return next_sendfile()(out_fd, in_fd, offset, count);
    ssize_t allow = fake_allow(count);
    if (allow <= 0) return allow;
    ssize_t k = next_sendfile()(out_fd, in_fd, offset, (size_t)allow);
    if (k > 0) fake.budget -= (size_t)k;
    return k;
}

/* ---------------------------------------------------------------- helpers */

/* Byte i of the reference: not periodic at any power of two, so shifts show up. */
static unsigned char pat(size_t i)
{
    return (unsigned char)((i * 131u + (i >> 8) * 7u + (i >> 16)) & 0xff);
}

static void fill_pat(char *p, size_t start, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (char)pat(start + i);
}

/* Checks that p[0, n) is the pattern starting at 'start'. */
static void check_pat(const char *p, size_t start, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)p[i] != pat(start + i)) {
            print_error("byte %zu of %zu (pattern offset %zu) differs\n", i, n, start + i);
            fail();
        }
    }
}

/* Copies pattern bytes [start, start + n) into o. */
static void append_pat(struct out *o, size_t start, size_t n)
{
    char tmp[4096];
    while (n > 0) {
        size_t k = n < sizeof(tmp) ? n : sizeof(tmp);
        fill_pat(tmp, start, k);
        out_append(o, tmp, k);
        start += k;
        n -= k;
    }
}

/* A block of pattern bytes [start, start + n) in its own heap block (ASan sees overreads). */
static char *pat_block(size_t start, size_t n)
{
    char *p = malloc(n ? n : 1);
    assert_non_null(p);
    fill_pat(p, start, n);
    return p;
}

/* An unlinked temporary file: 'skip' bytes of '#', then pattern bytes [start, start + n). */
static int pat_file(size_t skip, size_t start, size_t n)
{
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char name[4096];
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(name, sizeof(name), "%s/test_out.XXXXXX", dir);
        fd = mkstemp(name);
        assert_true(fd >= 0);
        unlink(name);
    }
    char tmp[4096];
    memset(tmp, '#', sizeof(tmp));
    for (size_t left = skip; left > 0;) {
        size_t k = left < sizeof(tmp) ? left : sizeof(tmp);
        assert_int_equal(pwrite(fd, tmp, k, (off_t)(skip - left)), k);
        left -= k;
    }
    for (size_t done = 0; done < n;) {
        size_t k = n - done < sizeof(tmp) ? n - done : sizeof(tmp);
        fill_pat(tmp, start + done, k);
        assert_int_equal(pwrite(fd, tmp, k, (off_t)(skip + done)), k);
        done += k;
    }
    return fd;
}

/* The descriptor is closed (and its number not reused since). */
static bool fd_closed(int fd)
{
    errno = 0;
    return fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}

/* ---------------------------------------------------------------- fixture */

struct ctx {
    int sv[2];      /* sv[0]: the out's end (nonblocking), sv[1]: the reader's */
    struct out o;   /* the out under test */
    struct buf got; /* what the reader has read so far */
    char *block;    /* a block the test appended (freed by teardown) */
};

static int setup(void **state)
{
    struct ctx *c = calloc(1, sizeof(*c));
    if (!c) return -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, c->sv) < 0) return -1;
    out_init(&c->o);
    buf_init(&c->got);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    fake_off();
    out_destroy(&c->o);
    buf_destroy(&c->got);
    free(c->block);
    if (c->sv[0] >= 0) close(c->sv[0]);
    if (c->sv[1] >= 0) close(c->sv[1]);
    free(c);
    return 0;
}

/* Reads everything the socket holds now into c->got; returns the count. */
static size_t drain(struct ctx *c)
{
    size_t total = 0;
    for (;;) {
        char *p = buf_reserve(&c->got, 65536);
        ssize_t k = read(c->sv[1], p, 65536);
        if (k <= 0) {
            assert_true(k == 0 || errno == EAGAIN);
            return total;
        }
        c->got.len += (size_t)k;
        total += (size_t)k;
    }
}

/* Flushes o with the fake off (a roomy socket): everything goes out in one call. */
static void flush_all(struct ctx *c, struct out *o)
{
    uint64_t pending = out_pending(o), w = 12345;
    fake_off();
    assert_int_equal(out_flush(o, c->sv[0], &w), 0);
    assert_int_equal(w, pending);
    assert_int_equal(out_pending(o), 0);
    drain(c);
}

/* The reader got exactly pattern bytes [0, n). */
static void check_got(struct ctx *c, size_t n)
{
    assert_int_equal(buf_used(&c->got), n);
    if (n) check_pat(buf_start(&c->got), 0, n);
}

/*
 * Appends pattern [at, at + nb) as bytes, then the next nk bytes as a block (c->block) or the
 * next nf bytes as a file range starting 'skip' bytes into a temp file: not both, as nothing
 * can be appended after a block until it is written. Returns the file's fd (-1 if nf = 0).
 */
static int append_layout(struct ctx *c, size_t at, size_t nb, size_t nk, size_t nf, size_t skip)
{
    int fd = -1;
    assert_false(nk && nf);
    append_pat(&c->o, at, nb);
    if (nk) {
        free(c->block);
        c->block = pat_block(at + nb, nk);
        out_append_block(&c->o, c->block, nk);
    }
    if (nf) {
        fd = pat_file(skip, at + nb, nf);
        out_append_file(&c->o, fd, skip, nf);
    }
    return fd;
}

/* ---------------------------------------------------------------- empty, bytes, order */

/* A new out holds nothing, flushes nothing, and survives reset and a double destroy. */
static void test_empty(void **state)
{
    struct ctx *c = *state;
    uint64_t w = 12345;

    assert_int_equal(out_pending(&c->o), 0);
    assert_int_equal(out_buffered(&c->o), 0);
    assert_false(out_has_block(&c->o));
    assert_false(out_closed(&c->o));
    assert_int_equal(out_mark(&c->o), 0);
    assert_non_null(out_bytes(&c->o));
    assert_int_equal(out_flush(&c->o, c->sv[0], &w), 0);
    assert_int_equal(w, 0);
    assert_int_equal(drain(c), 0);
    out_reset(&c->o);
    out_destroy(&c->o);
    out_destroy(&c->o);
    assert_int_equal(out_pending(&c->o), 0);
    assert_false(out_closed(&c->o));
}

/* Copied bytes go out in order, counted exactly; zero-length appends add nothing. */
static void test_bytes_flush(void **state)
{
    struct ctx *c = *state;
    uint64_t w = 0;

    out_append(&c->o, "hello, ", 7);
    out_append(&c->o, "", 0);
    buf_append_str(out_bytes(&c->o), "world"); /* formatting straight into the bytes */
    assert_int_equal(out_pending(&c->o), 12);
    assert_int_equal(out_buffered(&c->o), 12);
    assert_false(out_closed(&c->o));
    assert_int_equal(out_flush(&c->o, c->sv[0], &w), 0);
    assert_int_equal(w, 12);
    assert_int_equal(out_pending(&c->o), 0);
    assert_int_equal(drain(c), 12);
    assert_memory_equal(buf_start(&c->got), "hello, world", 12);

    /* used again after a flush, and 'written' may be NULL */
    out_append(&c->o, "!", 1);
    assert_int_equal(out_flush(&c->o, c->sv[0], NULL), 0);
    assert_int_equal(drain(c), 1);
    assert_memory_equal(buf_start(&c->got), "hello, world!", 13);
}

/*
 * Bytes, then the block; once the block is written, more bytes, then the file range from its
 * offset: the reader gets one stream in that order. The out is closed while the block or the
 * file is pending, open again once it is written.
 */
static void test_order_bytes_block_file(void **state)
{
    struct ctx *c = *state;
    enum { NB = 1000, NK = 3000, NB2 = 500, NF = 5000, SKIP = 777 };

    append_pat(&c->o, 0, NB);
    assert_false(out_closed(&c->o));
    c->block = pat_block(NB, NK);
    out_append_block(&c->o, c->block, NK);
    assert_true(out_has_block(&c->o));
    assert_true(out_closed(&c->o));
    assert_int_equal(out_pending(&c->o), NB + NK);
    assert_int_equal(out_buffered(&c->o), NB + NK);
    flush_all(c, &c->o);
    check_got(c, NB + NK);
    assert_false(out_has_block(&c->o));
    assert_false(out_closed(&c->o));
    assert_null(c->o.block);

    append_pat(&c->o, NB + NK, NB2);
    int fd = pat_file(SKIP, NB + NK + NB2, NF);
    out_append_file(&c->o, fd, SKIP, NF);
    assert_true(out_closed(&c->o));
    assert_false(out_has_block(&c->o));
    assert_int_equal(out_pending(&c->o), NB2 + NF);
    assert_int_equal(out_buffered(&c->o), NB2);
    flush_all(c, &c->o);
    check_got(c, NB + NK + NB2 + NF);
    assert_false(out_closed(&c->o));
    assert_int_equal(out_buffered(&c->o), 0);
    assert_true(fd_closed(fd)); /* written: the out closed it */

    /* open again: appends work and go out alone */
    out_append(&c->o, "z", 1);
    flush_all(c, &c->o);
    assert_int_equal(buf_used(&c->got), NB + NK + NB2 + NF + 1);
    assert_int_equal(buf_start(&c->got)[NB + NK + NB2 + NF], 'z');
}

/* A block with no bytes before it, and a file range with nothing before it. */
static void test_block_alone_file_alone(void **state)
{
    struct ctx *c = *state;

    c->block = pat_block(0, 500);
    out_append_block(&c->o, c->block, 500);
    assert_int_equal(out_pending(&c->o), 500);
    flush_all(c, &c->o);
    check_got(c, 500);
    assert_false(out_has_block(&c->o));

    int fd = pat_file(4096 + 3, 500, 10000); /* the offset crosses a page */
    out_append_file(&c->o, fd, 4096 + 3, 10000);
    assert_int_equal(out_pending(&c->o), 10000);
    assert_int_equal(out_buffered(&c->o), 0);
    assert_true(out_closed(&c->o));
    assert_false(out_has_block(&c->o));
    flush_all(c, &c->o);
    check_got(c, 10500);
    assert_true(fd_closed(fd));
}

/* A zero-length block adds nothing and leaves the out open. */
static void test_empty_block(void **state)
{
    struct ctx *c = *state;

    out_append(&c->o, "ab", 2);
    out_append_block(&c->o, "xyz", 0);
    assert_false(out_has_block(&c->o));
    assert_false(out_closed(&c->o));
    assert_int_equal(out_pending(&c->o), 2);
    out_append(&c->o, "c", 1);
    flush_all(c, &c->o);
    assert_memory_equal(buf_start(&c->got), "abc", 3);
}

/* ---------------------------------------------------------------- the file's descriptor */

/* A file range of length 0 closes the descriptor at once and leaves the out open. */
static void test_file_len_zero_closes_at_once(void **state)
{
    struct ctx *c = *state;
    int fd = pat_file(0, 0, 100);

    out_append(&c->o, "a", 1);
    out_append_file(&c->o, fd, 10, 0);
    assert_true(fd_closed(fd));
    assert_false(out_closed(&c->o));
    assert_int_equal(out_pending(&c->o), 1);
    out_append(&c->o, "b", 1);
    flush_all(c, &c->o);
    assert_memory_equal(buf_start(&c->got), "ab", 2);
}

/* out_reset() closes a pending file; the out is open and empty. */
static void test_reset_closes_file(void **state)
{
    struct ctx *c = *state;
    int fd = append_layout(c, 0, 100, 0, 300, 5);

    assert_false(fd_closed(fd));
    out_reset(&c->o);
    assert_true(fd_closed(fd));
    assert_int_equal(out_pending(&c->o), 0);
    assert_false(out_closed(&c->o));
    append_pat(&c->o, 0, 10); /* only what comes after the reset goes out */
    flush_all(c, &c->o);
    check_got(c, 10);
}

/* out_reset() forgets a pending block (and the bytes); the out is open and empty. */
static void test_reset_forgets_block(void **state)
{
    struct ctx *c = *state;

    append_layout(c, 0, 100, 200, 0, 0);
    out_reset(&c->o);
    assert_int_equal(out_pending(&c->o), 0);
    assert_int_equal(out_buffered(&c->o), 0);
    assert_false(out_has_block(&c->o));
    assert_false(out_closed(&c->o));
    free(c->block); /* nothing refers to it any more (ASan would see a use after free) */
    c->block = NULL;
    append_pat(&c->o, 0, 10);
    flush_all(c, &c->o);
    check_got(c, 10);
}

/* out_destroy() closes a pending file, even one partly written. */
static void test_destroy_closes_file(void **state)
{
    struct ctx *c = *state;
    uint64_t w = 0;
    int fd = append_layout(c, 0, 0, 0, 300, 5);

    fake_on(100);
    assert_int_equal(out_flush(&c->o, c->sv[0], &w), 1);
    fake_off();
    assert_int_equal(w, 100);
    assert_false(fd_closed(fd)); /* partly written: still the out's */
    out_destroy(&c->o);
    assert_true(fd_closed(fd));
    assert_int_equal(out_pending(&c->o), 0);
    assert_false(out_closed(&c->o));
}

/* A file shorter than its range: the bytes that exist go out, then -1 with EIO. */
static void test_file_shrank_eio(void **state)
{
    struct ctx *c = *state;
    uint64_t w = 0;
    int fd = pat_file(20, 5, 100); /* 120 bytes: the range [20, 220) has 100 */

    append_pat(&c->o, 0, 5);
    out_append_file(&c->o, fd, 20, 200);
    errno = 0;
    assert_int_equal(out_flush(&c->o, c->sv[0], &w), -1);
    assert_int_equal(errno, EIO);
    assert_int_equal(w, 105);
    drain(c);
    check_got(c, 105);
    assert_false(fd_closed(fd)); /* still the out's until reset/destroy */
    out_reset(&c->o);
    assert_true(fd_closed(fd));
}

/* A range that starts past the end of the file: EIO at once, nothing written. */
static void test_file_offset_past_end_eio(void **state)
{
    struct ctx *c = *state;
    uint64_t w = 12345;
    int fd = pat_file(0, 0, 100);

    out_append_file(&c->o, fd, 500, 10);
    errno = 0;
    assert_int_equal(out_flush(&c->o, c->sv[0], &w), -1);
    assert_int_equal(errno, EIO);
    assert_int_equal(w, 0);
    assert_int_equal(drain(c), 0);
}

/* ---------------------------------------------------------------- partial writes */

/*
 * One layout (bytes then a block, or bytes then a file range) written by a socket that takes
 * s bytes and is then full, for every s: the flush reports 1 (0 once s covers it all) and s
 * bytes written, the out's state matches what is left, and a second flush sends exactly the
 * rest.
 */
static void split_everywhere(struct ctx *c, size_t nb, size_t nk, size_t nf)
{
    const size_t all = nb + nk + nf;

    for (size_t s = 0; s <= all; s++) {
        uint64_t w = 12345;
        out_reset(&c->o);
        buf_reset(&c->got);
        int fd = append_layout(c, 0, nb, nk, nf, 3);

        fake_on(s);
        assert_int_equal(out_flush(&c->o, c->sv[0], &w), s < all ? 1 : 0);
        fake_off();
        assert_int_equal(w, s);
        assert_int_equal(out_pending(&c->o), all - s);
        assert_int_equal(out_buffered(&c->o), s < nb + nk ? nb + nk - s : 0);
        assert_int_equal(out_has_block(&c->o), s < nb + nk && nk > 0);
        assert_int_equal(out_closed(&c->o), s < all && (nk > 0 || nf > 0));
        if (nf) assert_int_equal(fd_closed(fd), s == all);
        drain(c);
        check_got(c, s);

        flush_all(c, &c->o);
        check_got(c, all);
        if (nf) assert_true(fd_closed(fd));
        assert_false(out_closed(&c->o));
    }
}

/* writev of bytes + block stopping at every byte (and then write of the block's rest). */
static void test_split_bytes_block(void **state)
{
    split_everywhere(*state, 5, 4, 0);
}

/* write of the bytes, then sendfile, stopping at every byte. */
static void test_split_bytes_file(void **state)
{
    split_everywhere(*state, 5, 0, 6);
}

/* A block alone, a file alone, bytes alone, stopping at every byte. */
static void test_split_single_parts(void **state)
{
    split_everywhere(*state, 0, 7, 0);
    split_everywhere(*state, 0, 0, 7);
    split_everywhere(*state, 7, 0, 0);
}

/* Short writes that are not EAGAIN (n bytes a call) are continued until all is written. */
static void test_short_writes_continue(void **state)
{
    struct ctx *c = *state;
    const size_t layouts[][3] = {{5, 4, 0}, {5, 0, 6}};

    for (size_t l = 0; l < 2; l++) {
        size_t all = layouts[l][0] + layouts[l][1] + layouts[l][2];
        for (size_t per_call = 1; per_call <= all; per_call++) {
            uint64_t w = 0;
            out_reset(&c->o);
            buf_reset(&c->got);
            int fd = append_layout(c, 0, layouts[l][0], layouts[l][1], layouts[l][2], 7);
            fake_on(SIZE_MAX);
            fake.per_call = per_call;
            assert_int_equal(out_flush(&c->o, c->sv[0], &w), 0);
            fake_off();
            assert_int_equal(w, all);
            assert_int_equal(out_pending(&c->o), 0);
            assert_false(out_closed(&c->o));
            if (fd >= 0) assert_true(fd_closed(fd));
            drain(c);
            check_got(c, all);
        }
    }
}

/* EINTR from write, writev and sendfile is retried, not reported. */
static void test_eintr_retried(void **state)
{
    struct ctx *c = *state;
    uint64_t w = 0;

    /* writev (bytes + block), then write (the rest of the block) */
    append_layout(c, 0, 5, 4, 0, 0);
    fake_on(SIZE_MAX);
    fake.eintr = 1;
    fake.per_call = 7;
    assert_int_equal(out_flush(&c->o, c->sv[0], &w), 0);
    assert_int_equal(fake.eintr, 0);
    assert_int_equal(fake.calls, 3); /* EINTR, 7 bytes, 2 bytes */
    assert_int_equal(w, 9);

    /* sendfile */
    int fd = pat_file(0, 9, 10);
    out_append_file(&c->o, fd, 0, 10);
    fake.eintr = 2;
    fake.per_call = 0;
    assert_int_equal(out_flush(&c->o, c->sv[0], &w), 0);
    fake_off();
    assert_int_equal(w, 10);
    drain(c);
    check_got(c, 19);
}

/*
 * Flushes into a full socket until o is empty, draining the reader after each round. Each
 * round writes something (the reader emptied the socket) and leaves out_pending() right; the
 * first full round is followed by a flush that writes nothing. Returns the rounds that ended
 * with the socket full; *file_partial is set when one ended with only file bytes left.
 */
static int flush_full_rounds(struct ctx *c, uint64_t all, int fd, bool *file_partial)
{
    uint64_t total = 0;
    int rounds = 0;

    for (;;) {
        uint64_t w = 12345;
        int rc = out_flush(&c->o, c->sv[0], &w);
        assert_true(rc == 0 || rc == 1);
        total += w;
        assert_int_equal(out_pending(&c->o), all - total);
        if (rc == 0) break;
        assert_true(w > 0);
        if (rounds++ == 0) { /* still full: nothing more goes */
            assert_int_equal(out_flush(&c->o, c->sv[0], &w), 1);
            assert_int_equal(w, 0);
            assert_int_equal(out_pending(&c->o), all - total);
        }
        if (fd >= 0 && out_buffered(&c->o) == 0) { /* stopped in the file range */
            *file_partial = true;
            assert_false(fd_closed(fd));
        }
        assert_true(drain(c) > 0);
        assert_true(rounds < 100000);
    }
    drain(c);
    assert_int_equal(total, all);
    return rounds;
}

/*
 * A full socket (small SO_SNDBUF, nobody reading): 1 with some but not all bytes written, 1
 * with nothing written while still full, and after each drain the flush goes on where it
 * stopped, through bytes and block, then (appended once the block is written) bytes and a
 * file range, until the reader has it all, in order.
 */
static void test_full_socket_resumes(void **state)
{
    struct ctx *c = *state;
    enum { NB = 40000, NK = 60000, NB2 = 30000, NF = 80000, SKIP = 4321 };
    int sndbuf = 4096;
    bool file_partial = false;

    assert_int_equal(setsockopt(c->sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
    append_layout(c, 0, NB, NK, 0, 0);
    assert_true(flush_full_rounds(c, NB + NK, -1, &file_partial) >= 3);
    check_got(c, NB + NK);
    assert_false(out_closed(&c->o));

    int fd = append_layout(c, NB + NK, NB2, 0, NF, SKIP);
    assert_true(flush_full_rounds(c, NB2 + NF, fd, &file_partial) >= 3);
    check_got(c, NB + NK + NB2 + NF);
    assert_true(file_partial);
    assert_true(fd_closed(fd));
    assert_false(out_closed(&c->o));
}

/* The reader is gone: -1 with EPIPE (SIGPIPE ignored), nothing counted, nothing dropped. */
static void test_epipe(void **state)
{
    struct ctx *c = *state;
    uint64_t w = 12345;

    close(c->sv[1]);
    c->sv[1] = -1;
    append_pat(&c->o, 0, 100);
    errno = 0;
    assert_int_equal(out_flush(&c->o, c->sv[0], &w), -1);
    assert_int_equal(errno, EPIPE);
    assert_int_equal(w, 0);
    assert_int_equal(out_pending(&c->o), 100);

    /* the same from sendfile; the file stays the out's */
    out_reset(&c->o);
    int fd = pat_file(0, 0, 100);
    out_append_file(&c->o, fd, 0, 100);
    w = 12345;
    errno = 0;
    assert_int_equal(out_flush(&c->o, c->sv[0], &w), -1);
    assert_int_equal(errno, EPIPE);
    assert_int_equal(w, 0);
    assert_int_equal(out_pending(&c->o), 100);
    assert_false(fd_closed(fd));
    out_destroy(&c->o);
    assert_true(fd_closed(fd));
}

/* ---------------------------------------------------------------- mark and rollback */

/* Rolling back to a mark drops the bytes appended after it, keeps those before. */
static void test_rollback_bytes(void **state)
{
    struct ctx *c = *state;

    append_pat(&c->o, 0, 50);
    size_t m = out_mark(&c->o);
    assert_int_equal(m, 50);
    append_pat(&c->o, 1000, 70);
    out_rollback(&c->o, m);
    assert_int_equal(out_pending(&c->o), 50);
    out_rollback(&c->o, out_mark(&c->o)); /* to the present: nothing dropped */
    assert_int_equal(out_pending(&c->o), 50);
    append_pat(&c->o, 50, 10); /* appends continue from the mark */
    flush_all(c, &c->o);
    check_got(c, 60);
}

/* A mark at 0 drops everything. */
static void test_rollback_to_zero(void **state)
{
    struct ctx *c = *state;

    size_t m = out_mark(&c->o);
    append_pat(&c->o, 500, 300);
    out_rollback(&c->o, m);
    assert_int_equal(out_pending(&c->o), 0);
    append_pat(&c->o, 0, 20);
    flush_all(c, &c->o);
    check_got(c, 20);
}

/* A block appended after the mark is dropped too, and the out is open again. */
static void test_rollback_drops_block(void **state)
{
    struct ctx *c = *state;

    append_pat(&c->o, 0, 10);
    size_t m = out_mark(&c->o);
    append_pat(&c->o, 999, 5);
    c->block = pat_block(999, 100);
    out_append_block(&c->o, c->block, 100);
    assert_true(out_closed(&c->o));
    out_rollback(&c->o, m);
    assert_false(out_has_block(&c->o));
    assert_false(out_closed(&c->o));
    assert_int_equal(out_pending(&c->o), 10);
    append_pat(&c->o, 10, 5);
    flush_all(c, &c->o);
    check_got(c, 15);
}

/* A file range appended after the mark is dropped and its descriptor closed. */
static void test_rollback_drops_file(void **state)
{
    struct ctx *c = *state;

    append_pat(&c->o, 0, 10);
    size_t m = out_mark(&c->o);
    int fd = pat_file(0, 999, 100);
    out_append_file(&c->o, fd, 0, 100);
    assert_true(out_closed(&c->o));
    out_rollback(&c->o, m);
    assert_true(fd_closed(fd));
    assert_false(out_closed(&c->o));
    assert_int_equal(out_pending(&c->o), 10);
    flush_all(c, &c->o);
    check_got(c, 10);
}

/*
 * The mark is relative to the unsent bytes: after a partial flush consumed a prefix, a mark,
 * then an append that makes buf_reserve() move the bytes to the front of the block, the
 * rollback still cuts exactly at the mark.
 */
static void test_rollback_after_bytes_moved(void **state)
{
    struct ctx *c = *state;
    uint64_t w = 0;

    append_pat(&c->o, 0, 300); /* a 512-byte block */
    fake_on(100);
    assert_int_equal(out_flush(&c->o, c->sv[0], &w), 1);
    fake_off();
    assert_int_equal(w, 100);
    assert_int_equal(c->o.bytes.off, 100);
    size_t cap = c->o.bytes.cap;
    size_t m = out_mark(&c->o);
    assert_int_equal(m, 200);
    append_pat(&c->o, 7000, cap - 300 + 1); /* one byte more than the room at the end */
    assert_int_equal(c->o.bytes.off, 0);    /* the scenario: the bytes were moved */
    assert_int_equal(c->o.bytes.cap, cap);
    out_rollback(&c->o, m);
    assert_int_equal(out_pending(&c->o), 200);
    append_pat(&c->o, 300, 20);
    flush_all(c, &c->o);
    check_got(c, 320);
}

/* ---------------------------------------------------------------- settle */

/* At or below the limit a pending block is copied: its owner may reuse the memory. */
static void test_settle_at_limit_copies(void **state)
{
    struct ctx *c = *state;

    append_layout(c, 0, 10, 20, 0, 0);
    assert_false(out_settle(&c->o, 30)); /* buffered == limit */
    assert_false(out_has_block(&c->o));
    assert_false(out_closed(&c->o));
    assert_int_equal(out_buffered(&c->o), 30);
    memset(c->block, 0, 20); /* the owner lets go of it */
    flush_all(c, &c->o);
    check_got(c, 30);
}

/* Above the limit nothing is copied: the block stays pending, the owner must keep it. */
static void test_settle_above_limit_keeps_block(void **state)
{
    struct ctx *c = *state;

    append_layout(c, 0, 10, 20, 0, 0);
    assert_true(out_settle(&c->o, 29));
    assert_true(out_has_block(&c->o));
    assert_int_equal(buf_used(&c->o.bytes), 10);
    assert_int_equal(out_buffered(&c->o), 30);
    assert_true(out_settle(&c->o, 0));
    flush_all(c, &c->o);
    check_got(c, 30);
}

/* After a partial write into the block, settle copies only the block's unsent rest. */
static void test_settle_after_partial_block(void **state)
{
    struct ctx *c = *state;
    uint64_t w = 0;

    append_layout(c, 0, 10, 20, 0, 0);
    fake_on(15);
    assert_int_equal(out_flush(&c->o, c->sv[0], &w), 1);
    fake_off();
    assert_int_equal(w, 15);
    assert_false(out_settle(&c->o, 15));
    assert_false(out_has_block(&c->o));
    assert_int_equal(out_buffered(&c->o), 15);
    memset(c->block, 0, 20);
    flush_all(c, &c->o);
    check_got(c, 30);
}

/* With no block, settle changes nothing, whatever the limit, also with a file pending. */
static void test_settle_without_block(void **state)
{
    struct ctx *c = *state;

    append_pat(&c->o, 0, 10);
    assert_false(out_settle(&c->o, 100));
    assert_false(out_settle(&c->o, 0));
    assert_int_equal(out_pending(&c->o), 10);
    assert_false(out_closed(&c->o));

    int fd = pat_file(11, 10, 30);
    out_append_file(&c->o, fd, 11, 30);
    assert_false(out_settle(&c->o, 1000));
    assert_false(out_settle(&c->o, 0));
    assert_true(out_closed(&c->o)); /* the file range is still pending */
    assert_int_equal(out_pending(&c->o), 40);
    assert_int_equal(out_buffered(&c->o), 10);
    flush_all(c, &c->o);
    check_got(c, 40);
    assert_true(fd_closed(fd));
}

/* ---------------------------------------------------------------- move */

/* dst without bytes: the byte buffers are swapped (no copy); block and file move too. */
static void test_move_swaps_into_empty(void **state)
{
    struct ctx *c = *state;
    struct out src;

    out_append(&c->o, "junk", 4); /* the wire had bytes once: it has a block of memory */
    flush_all(c, &c->o);
    buf_reset(&c->got);
    char *dst_data = c->o.bytes.data;
    assert_non_null(dst_data);

    out_init(&src);
    append_pat(&src, 0, 100);
    char *src_data = src.bytes.data;
    c->block = pat_block(100, 50);
    out_append_block(&src, c->block, 50);

    out_move(&c->o, &src);
    assert_ptr_equal(c->o.bytes.data, src_data);
    assert_ptr_equal(src.bytes.data, dst_data);
    assert_int_equal(out_pending(&src), 0);
    assert_false(out_closed(&src));
    assert_false(out_has_block(&src));
    assert_int_equal(out_pending(&c->o), 150);
    assert_true(out_has_block(&c->o));
    flush_all(c, &c->o);
    check_got(c, 150);

    /* the same with a file range; src is open and usable after each move */
    out_append(&src, "", 0);
    append_pat(&src, 150, 10);
    int fd = pat_file(9, 160, 60);
    out_append_file(&src, fd, 9, 60);
    src_data = src.bytes.data;
    dst_data = c->o.bytes.data;
    out_move(&c->o, &src);
    assert_ptr_equal(c->o.bytes.data, src_data);
    assert_ptr_equal(src.bytes.data, dst_data);
    assert_int_equal(out_pending(&src), 0);
    assert_false(out_closed(&src));
    assert_int_equal(src.file_fd, -1);
    assert_int_equal(out_pending(&c->o), 70);
    out_append(&src, "x", 1);
    assert_int_equal(out_pending(&src), 1);
    out_destroy(&src);
    assert_false(fd_closed(fd)); /* the file is dst's now */

    flush_all(c, &c->o);
    check_got(c, 220);
    assert_true(fd_closed(fd));
}

/* dst with unsent bytes (partly written): src's bytes are copied after them, then the block. */
static void test_move_copies_after_bytes(void **state)
{
    struct ctx *c = *state;
    struct out src;
    uint64_t w = 0;

    append_pat(&c->o, 0, 50);
    fake_on(20);
    assert_int_equal(out_flush(&c->o, c->sv[0], &w), 1);
    fake_off();
    assert_int_equal(w, 20);

    out_init(&src);
    append_pat(&src, 50, 30);
    char *src_data = src.bytes.data;
    c->block = pat_block(80, 20);
    out_append_block(&src, c->block, 20);

    out_move(&c->o, &src);
    assert_ptr_equal(src.bytes.data, src_data); /* copied, not swapped */
    assert_int_equal(out_pending(&src), 0);
    assert_false(out_closed(&src));
    assert_int_equal(out_pending(&c->o), 30 + 30 + 20);
    assert_true(out_has_block(&c->o));
    out_destroy(&src);

    flush_all(c, &c->o);
    check_got(c, 100);
}

/* src with only a file range: it goes after dst's bytes. */
static void test_move_file_only(void **state)
{
    struct ctx *c = *state;
    struct out src;

    append_pat(&c->o, 0, 10);
    out_init(&src);
    int fd = pat_file(3, 10, 40);
    out_append_file(&src, fd, 3, 40);
    out_move(&c->o, &src);
    assert_int_equal(out_pending(&src), 0);
    assert_false(out_closed(&src));
    assert_int_equal(src.file_fd, -1);
    assert_int_equal(out_pending(&c->o), 50);
    out_destroy(&src);
    assert_false(fd_closed(fd));
    flush_all(c, &c->o);
    check_got(c, 50);
    assert_true(fd_closed(fd));
}

/* An empty src is a no-op, even into a dst that is closed (block or file pending). */
static void test_move_empty_is_noop(void **state)
{
    struct ctx *c = *state;
    struct out src;

    out_init(&src);
    append_pat(&src, 0, 5); /* src has a block of memory but no bytes */
    out_reset(&src);
    char *src_data = src.bytes.data;
    append_layout(c, 0, 10, 20, 0, 0); /* dst closed by a block */
    char *dst_data = c->o.bytes.data;

    out_move(&c->o, &src);
    assert_ptr_equal(c->o.bytes.data, dst_data);
    assert_ptr_equal(src.bytes.data, src_data);
    assert_int_equal(out_pending(&c->o), 30);
    assert_true(out_has_block(&c->o));
    flush_all(c, &c->o);
    check_got(c, 30);

    int fd = append_layout(c, 30, 10, 0, 20, 0); /* dst closed by a file range */
    out_move(&c->o, &src);
    assert_ptr_equal(src.bytes.data, src_data);
    assert_int_equal(out_pending(&c->o), 30);
    assert_true(out_closed(&c->o));
    assert_false(fd_closed(fd));
    out_destroy(&src);

    out_init(&src); /* never used */
    out_move(&c->o, &src);
    assert_int_equal(out_pending(&c->o), 30);
    flush_all(c, &c->o);
    check_got(c, 60);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytes_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order_bytes_block_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_block_alone_file_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_len_zero_closes_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_closes_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_forgets_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_closes_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_shrank_eio, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_offset_past_end_eio, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_bytes_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_bytes_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_single_parts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_writes_continue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eintr_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_socket_resumes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_epipe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_to_zero, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_drops_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_drops_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_after_bytes_moved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_at_limit_copies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_above_limit_keeps_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_after_partial_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_without_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_move_swaps_into_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_move_copies_after_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_move_file_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_move_empty_is_noop, setup, teardown),
    };
    signal(SIGPIPE, SIG_IGN); /* test_epipe: the error, not the signal */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
