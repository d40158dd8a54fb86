/*
 * test_buf.c - unit tests for the byte buffer (src/util/buf.c) and the request body spool
 * (src/util/spool.c).
 *
 * Contents are always compared with a reference: a deterministic byte pattern for the buffer
 * tests, a plain FIFO model for the interleaved-operations test, and a reference array for the
 * spool (every offset and length crossing the end is read back, in memory, file and view mode).
 *
 * spool_reset() keeps a memory block of up to 256 KiB for the next body; spool_destroy()
 * frees everything. The tests release a spool with spool_done() (spool_destroy());
 * test_spool_destroy_frees_memory and test_spool_reset_keeps_small_block check both.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/buf.h"
#include "util/spool.h"

/* ---------------------------------------------------------------- helpers */

/* Byte i of the reference pattern: not periodic at any power of two, so shifts show up. */
static unsigned char pat(size_t i)
{
    return (unsigned char)((i * 131u + (i >> 8) * 7u + (i >> 16)) & 0xff);
}

static void fill_pat(unsigned char *p, size_t start, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = pat(start + i);
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

/* Deterministic LCG, so a failing sequence is reproducible. */
static uint32_t rnd(uint32_t *state)
{
    *state = *state * 1664525u + 1013904223u;
    return *state >> 8;
}

/* Appends pattern bytes [start, start + n) to b. */
static void append_pat(struct buf *b, size_t start, size_t n)
{
    unsigned char tmp[4096];
    while (n > 0) {
        size_t k = n < sizeof(tmp) ? n : sizeof(tmp);
        fill_pat(tmp, start, k);
        buf_append(b, tmp, k);
        start += k;
        n -= k;
    }
}

static void spool_done(struct spool *s)
{
    spool_destroy(s);
}

/* ---------------------------------------------------------------- buf */

static void test_buf_init_destroy_empty(void **state)
{
    struct buf b;
    (void)state;

    buf_init(&b);
    assert_null(b.data);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_int_equal(buf_used(&b), 0);

    buf_reset(&b); /* nothing to drop */
    assert_int_equal(buf_used(&b), 0);
    buf_destroy(&b); /* free(NULL) */
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
    buf_destroy(&b); /* twice is harmless: destroy leaves an initialised buffer */

    /* usable again after destroy */
    buf_append_str(&b, "again");
    assert_int_equal(buf_used(&b), 5);
    assert_memory_equal(buf_start(&b), "again", 5);
    buf_destroy(&b);
    assert_null(b.data);
    assert_int_equal(b.off + b.len + b.cap, 0);
}

static void test_buf_append_small(void **state)
{
    struct buf b;
    (void)state;

    buf_init(&b);
    buf_append(&b, "hello", 5);
    assert_int_equal(buf_used(&b), 5);
    assert_true(b.cap >= 5);
    buf_append_str(&b, ", world");
    assert_int_equal(buf_used(&b), 12);
    assert_memory_equal(buf_start(&b), "hello, world", 12);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 12);
    buf_destroy(&b);
}

static void test_buf_append_zero(void **state)
{
    struct buf b;
    (void)state;

    buf_init(&b);
    buf_append(&b, "x", 0);
    buf_append(&b, NULL, 0);
    buf_append_str(&b, "");
    assert_null(b.data); /* no block for zero bytes */
    assert_int_equal(b.cap, 0);
    assert_int_equal(buf_used(&b), 0);

    buf_append_str(&b, "abc");
    char *data = b.data;
    size_t cap = b.cap;
    buf_append(&b, "zzz", 0);
    buf_append(&b, NULL, 0);
    buf_append_str(&b, "");
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    assert_int_equal(buf_used(&b), 3);
    assert_memory_equal(buf_start(&b), "abc", 3);
    buf_destroy(&b);
}

/* One append of n bytes into an empty buffer, for n around every interesting size. */
static void test_buf_growth_sizes(void **state)
{
    static const size_t base[] = {
        1, 2, 3, 64, 128, 255, 256, 257, 511, 512, 513, 1000, 4096, 65536, (size_t)1 << 20};
    (void)state;

    for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++) {
        for (size_t d = 0; d < 3; d++) {
            size_t n = base[i] + d - 1; /* base - 1, base, base + 1 */
            struct buf b;
            buf_init(&b);
            append_pat(&b, 0, n);
            assert_int_equal(buf_used(&b), n);
            assert_true(b.cap >= b.len);
            if (n > 0) check_pat(buf_start(&b), 0, n); /* NULL + 0 is UB: see buf_start() */
            buf_destroy(&b);
        }
    }
}

/* Many appends of growing and odd sizes: every byte survives each reallocation. */
static void test_buf_growth_incremental(void **state)
{
    struct buf b;
    size_t total = 0;
    (void)state;

    buf_init(&b);
    for (size_t i = 0; i < 3000; i++) { /* one byte at a time */
        unsigned char c = pat(total);
        buf_append(&b, &c, 1);
        total++;
        assert_int_equal(buf_used(&b), total);
        assert_true(b.cap >= b.len);
    }
    check_pat(buf_start(&b), 0, total);
    for (size_t n = 1; n <= 400; n += 3) { /* then chunks of 1, 4, 7, ... bytes */
        append_pat(&b, total, n);
        total += n;
        assert_int_equal(buf_used(&b), total);
        assert_true(b.cap >= b.len);
    }
    check_pat(buf_start(&b), 0, total);
    buf_destroy(&b);
}

static void test_buf_consume_partial(void **state)
{
    struct buf b;
    (void)state;

    buf_init(&b);
    append_pat(&b, 0, 100);
    buf_consume(&b, 30);
    assert_int_equal(buf_used(&b), 70);
    assert_ptr_equal(buf_start(&b), b.data + 30);
    check_pat(buf_start(&b), 30, 70);
    buf_consume(&b, 0);
    assert_int_equal(buf_used(&b), 70);
    buf_consume(&b, 69);
    assert_int_equal(buf_used(&b), 1);
    check_pat(buf_start(&b), 99, 1);
    /* appending after a partial consume keeps the unconsumed bytes first */
    append_pat(&b, 100, 50);
    assert_int_equal(buf_used(&b), 51);
    check_pat(buf_start(&b), 99, 51);
    buf_destroy(&b);
}

static void test_buf_consume_to_empty_resets(void **state)
{
    struct buf b;
    (void)state;

    buf_init(&b);
    append_pat(&b, 0, 100);
    char *data = b.data;
    size_t cap = b.cap;
    buf_consume(&b, 40);
    assert_int_equal(b.off, 40);
    buf_consume(&b, 60);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(buf_used(&b), 0);
    assert_ptr_equal(b.data, data); /* the block is kept */
    assert_int_equal(b.cap, cap);
    /* the next append starts at the beginning of the block */
    append_pat(&b, 7, 10);
    assert_ptr_equal(buf_start(&b), data);
    check_pat(buf_start(&b), 7, 10);

    /* consuming everything in one call */
    buf_consume(&b, 10);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);
    buf_destroy(&b);
}

static void test_buf_reset_keeps_block(void **state)
{
    struct buf b;
    (void)state;

    buf_init(&b);
    append_pat(&b, 0, 1000);
    buf_consume(&b, 10);
    char *data = b.data;
    size_t cap = b.cap;
    buf_reset(&b);
    assert_int_equal(buf_used(&b), 0);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    append_pat(&b, 5000, 20);
    assert_ptr_equal(buf_start(&b), data);
    check_pat(buf_start(&b), 5000, 20);
    buf_destroy(&b);
}

static void test_buf_reserve_room(void **state)
{
    struct buf b;
    (void)state;

    buf_init(&b);
    char *p = buf_reserve(&b, 10);
    assert_non_null(p);
    assert_ptr_equal(p, b.data);
    assert_true(b.cap >= 10);
    assert_int_equal(buf_used(&b), 0); /* reserving does not add bytes */
    fill_pat((unsigned char *)p, 0, 10);
    b.len += 10;
    check_pat(buf_start(&b), 0, 10);

    /* there is room: same block, pointer at the end of the bytes */
    char *data = b.data;
    size_t cap = b.cap;
    p = buf_reserve(&b, b.cap - b.len);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    assert_ptr_equal(p, b.data + b.len);
    p = buf_reserve(&b, 0);
    assert_ptr_equal(p, b.data + b.len);

    /* one more than the room: grows, keeping the bytes */
    p = buf_reserve(&b, cap - b.len + 1);
    assert_true(b.cap >= cap + 1);
    assert_ptr_equal(p, b.data + b.len);
    check_pat(buf_start(&b), 0, 10);
    buf_destroy(&b);
}

/* With a consumed prefix, reserve moves the bytes down rather than growing the block. */
static void test_buf_reserve_compacts(void **state)
{
    struct buf b;
    (void)state;

    buf_init(&b);
    append_pat(&b, 0, 10);
    size_t cap = b.cap;
    append_pat(&b, 10, cap - 10); /* exactly full */
    assert_int_equal(b.len, cap);
    assert_int_equal(b.cap, cap);
    buf_consume(&b, 100);
    char *data = b.data;

    char *p = buf_reserve(&b, 100); /* fits only once the 100 consumed bytes are reclaimed */
    assert_int_equal(b.cap, cap);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, cap - 100);
    assert_ptr_equal(p, b.data + b.len);
    check_pat(buf_start(&b), 100, cap - 100);
    fill_pat((unsigned char *)p, cap, 100);
    b.len += 100;
    check_pat(buf_start(&b), 100, cap);

    /* needing more than compaction gives: compacts and grows, bytes intact */
    buf_consume(&b, 50);
    p = buf_reserve(&b, 51);
    assert_true(b.cap > cap);
    assert_int_equal(buf_used(&b), cap - 50);
    assert_ptr_equal(p, b.data + b.len);
    check_pat(buf_start(&b), 150, cap - 50);

    /* appends use the same path */
    size_t last = 150 + buf_used(&b) - 1; /* pattern index of the last byte */
    buf_consume(&b, buf_used(&b) - 1);
    size_t cap2 = b.cap;
    append_pat(&b, 7777, cap2 - 1); /* fits after compaction */
    assert_int_equal(b.cap, cap2);
    assert_int_equal(buf_used(&b), cap2);
    check_pat(buf_start(&b), last, 1);
    check_pat(buf_start(&b) + 1, 7777, cap2 - 1);
    buf_destroy(&b);
}

/* Random appends, consumes and reserves against a FIFO model. */
static void test_buf_against_model(void **state)
{
    enum { MODEL_MAX = 1 << 20 };
    struct buf b;
    uint32_t seed = 12345;
    size_t head = 0, tail = 0; /* the model holds pattern bytes [head, tail) */
    (void)state;

    buf_init(&b);
    for (int op = 0; op < 20000; op++) {
        uint32_t r = rnd(&seed);
        size_t used = tail - head;
        switch (r % 5) {
        case 0:
        case 1: { /* append 0..999 bytes */
            size_t n = rnd(&seed) % 1000;
            if (used + n > MODEL_MAX) n = 0;
            append_pat(&b, tail, n);
            tail += n;
            break;
        }
        case 2: { /* consume up to everything */
            size_t n = used ? rnd(&seed) % (used + 1) : 0;
            buf_consume(&b, n);
            head += n;
            break;
        }
        case 3: { /* reserve, write, publish part of it */
            size_t n = rnd(&seed) % 700;
            char *p = buf_reserve(&b, n);
            assert_true(b.cap - b.len >= n);
            assert_ptr_equal(p, b.data + b.len);
            size_t k = n ? rnd(&seed) % (n + 1) : 0;
            fill_pat((unsigned char *)p, tail, k);
            b.len += k;
            tail += k;
            break;
        }
        default:
            if (r % 97 == 0) { /* rarely: reset */
                buf_reset(&b);
                head = tail;
            }
            break;
        }
        assert_int_equal(buf_used(&b), tail - head);
        assert_true(b.off <= b.len && b.len <= b.cap);
        if (buf_used(&b) == 0) {
            assert_int_equal(b.off, 0);
        }
        if (op % 64 == 0 && buf_used(&b) > 0) check_pat(buf_start(&b), head, tail - head);
    }
    if (buf_used(&b) > 0) check_pat(buf_start(&b), head, tail - head);
    buf_destroy(&b);
}

/* ---------------------------------------------------------------- spool */

/* Reads back every offset with lengths that stop short, stop at and cross the end. */
static void check_spool_reads(const struct spool *s, const unsigned char *ref, size_t size)
{
    char *dst = malloc(size + 200);
    assert_non_null(dst);
    assert_int_equal(s->size, size);
    for (size_t off = 0; off <= size + 3; off++) {
        size_t left = off < size ? size - off : 0;
        size_t lens[] = {0, 1, 2, 3, 17, left ? left - 1 : 0, left, left + 1, left + 100};
        for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
            size_t n = lens[i];
            size_t want = n < left ? n : left;
            memset(dst, 0xAA, n);
            ssize_t r = spool_read(s, off, dst, n);
            if (r != (ssize_t)want) {
                print_error("spool_read(off %zu, n %zu) = %zd, want %zu\n", off, n, r, want);
                free(dst);
                fail();
            }
            if (want && memcmp(dst, ref + off, want) != 0) {
                print_error("spool_read(off %zu, n %zu): bytes differ\n", off, n);
                free(dst);
                fail();
            }
        }
    }
    free(dst);
}

static void test_spool_init(void **state)
{
    struct spool s;
    char c;
    (void)state;

    spool_init(&s, 100);
    assert_int_equal(s.size, 0);
    assert_int_equal(s.fd, -1);
    assert_int_equal(s.threshold, 100);
    assert_null(s.view);
    assert_int_equal(spool_read(&s, 0, &c, 1), 0);
    assert_int_equal(spool_read(&s, 5, &c, 1), 0);
    spool_done(&s);
}

static void test_spool_memory_below_threshold(void **state)
{
    unsigned char ref[1000];
    struct spool s;
    (void)state;

    fill_pat(ref, 0, sizeof(ref));
    spool_init(&s, 1000);
    assert_int_equal(spool_append(&s, ref, 10), 0);
    assert_int_equal(spool_append(&s, ref + 10, 20), 0);
    assert_int_equal(spool_append(&s, ref + 30, 0), 0);
    assert_int_equal(spool_append(&s, ref + 30, 300), 0);
    assert_int_equal(s.size, 330);
    assert_int_equal(s.fd, -1);
    const char *m = spool_memory(&s, 0);
    assert_non_null(m);
    assert_memory_equal(m, ref, 330);
    for (size_t off = 0; off < 330; off++)
        assert_ptr_equal(spool_memory(&s, off), m + off);
    check_spool_reads(&s, ref, 330);
    spool_done(&s);
}

/* size == threshold stays in memory; one byte more spills, with every byte carried over. */
static void test_spool_spill_exactly_at_threshold(void **state)
{
    unsigned char ref[101];
    struct spool s;
    (void)state;

    fill_pat(ref, 0, sizeof(ref));
    spool_init(&s, 100);
    assert_int_equal(spool_append(&s, ref, 40), 0);
    assert_int_equal(spool_append(&s, ref + 40, 60), 0);
    assert_int_equal(s.size, 100);
    assert_int_equal(s.fd, -1);
    assert_non_null(spool_memory(&s, 0));
    check_spool_reads(&s, ref, 100);

    assert_int_equal(spool_append(&s, ref + 100, 0), 0); /* nothing added: still in memory */
    assert_int_equal(s.fd, -1);

    assert_int_equal(spool_append(&s, ref + 100, 1), 0);
    assert_int_equal(s.size, 101);
    assert_true(s.fd >= 0);
    assert_null(spool_memory(&s, 0));
    assert_null(spool_memory(&s, 50));
    assert_null(spool_memory(&s, 100));
    check_spool_reads(&s, ref, 101);
    spool_done(&s);
}

/* An append that starts below the threshold and ends above it. */
static void test_spool_spill_across_threshold(void **state)
{
    unsigned char ref[300];
    struct spool s;
    (void)state;

    fill_pat(ref, 0, sizeof(ref));
    spool_init(&s, 100);
    assert_int_equal(spool_append(&s, ref, 60), 0);
    assert_int_equal(s.fd, -1);
    assert_int_equal(spool_append(&s, ref + 60, 60), 0);
    assert_true(s.fd >= 0);
    assert_null(spool_memory(&s, 0));
    check_spool_reads(&s, ref, 120);
    /* further appends go to the file */
    assert_int_equal(spool_append(&s, ref + 120, 1), 0);
    assert_int_equal(spool_append(&s, ref + 121, 179), 0);
    check_spool_reads(&s, ref, 300);
    spool_done(&s);
}

static void test_spool_first_append_over_threshold(void **state)
{
    unsigned char ref[250];
    struct spool s;
    (void)state;

    fill_pat(ref, 3, sizeof(ref));
    spool_init(&s, 100);
    assert_int_equal(spool_append(&s, ref, 101), 0);
    assert_true(s.fd >= 0);
    assert_null(spool_memory(&s, 0));
    check_spool_reads(&s, ref, 101);
    spool_done(&s);

    /* exactly the threshold in the first append stays in memory */
    spool_init(&s, 100);
    assert_int_equal(spool_append(&s, ref, 100), 0);
    assert_int_equal(s.fd, -1);
    check_spool_reads(&s, ref, 100);
    spool_done(&s);

    /* far above */
    spool_init(&s, 100);
    assert_int_equal(spool_append(&s, ref, 250), 0);
    assert_true(s.fd >= 0);
    check_spool_reads(&s, ref, 250);
    spool_done(&s);
}

static void test_spool_threshold_zero(void **state)
{
    unsigned char ref[64];
    struct spool s;
    (void)state;

    fill_pat(ref, 11, sizeof(ref));
    spool_init(&s, 0);
    assert_int_equal(spool_append(&s, ref, 0), 0); /* no bytes: nothing to spill */
    assert_int_equal(s.size, 0);
    assert_int_equal(s.fd, -1);
    assert_int_equal(spool_append(&s, ref, 1), 0);
    assert_true(s.fd >= 0);
    assert_int_equal(s.size, 1);
    assert_null(spool_memory(&s, 0));
    assert_int_equal(spool_append(&s, ref + 1, 63), 0);
    check_spool_reads(&s, ref, 64);
    spool_done(&s);
}

/* Zero-copy: the caller's bytes are the body, whatever the threshold. */
static void test_spool_view(void **state)
{
    unsigned char ref[300];
    struct spool s;
    (void)state;

    fill_pat(ref, 99, sizeof(ref));
    spool_init(&s, 10);
    spool_set_view(&s, (const char *)ref, sizeof(ref));
    assert_int_equal(s.size, sizeof(ref));
    assert_int_equal(s.fd, -1); /* above the threshold, yet no file */
    assert_ptr_equal(spool_memory(&s, 0), (const char *)ref);
    assert_ptr_equal(spool_memory(&s, 123), (const char *)ref + 123);
    check_spool_reads(&s, ref, sizeof(ref));

    /* reset forgets the view; the spool works normally afterwards */
    spool_reset(&s);
    assert_int_equal(s.size, 0);
    assert_null(s.view);
    char c = 0;
    assert_int_equal(spool_read(&s, 0, &c, 1), 0);
    assert_int_equal(spool_append(&s, ref, 5), 0);
    const char *m = spool_memory(&s, 0);
    assert_non_null(m);
    assert_ptr_not_equal(m, (const char *)ref); /* a copy, not the old view */
    assert_memory_equal(m, ref, 5);
    check_spool_reads(&s, ref, 5);
    spool_done(&s);

    /* a view of nothing */
    spool_init(&s, 10);
    spool_set_view(&s, (const char *)ref, 0);
    assert_int_equal(s.size, 0);
    assert_int_equal(spool_read(&s, 0, &c, 1), 0);
    spool_done(&s);
}

static void test_spool_reset_closes_file_and_reuses(void **state)
{
    unsigned char ref[500], ref2[500];
    struct spool s;
    (void)state;

    fill_pat(ref, 0, sizeof(ref));
    fill_pat(ref2, 100000, sizeof(ref2));
    spool_init(&s, 100);
    assert_int_equal(spool_append(&s, ref, 500), 0);
    int fd = s.fd;
    assert_true(fd >= 0);
    spool_reset(&s);
    assert_int_equal(s.fd, -1);
    assert_int_equal(s.size, 0);
    errno = 0;
    assert_int_equal(fcntl(fd, F_GETFD), -1); /* closed */
    assert_int_equal(errno, EBADF);
    assert_int_equal(s.threshold, 100); /* the threshold survives */

    /* reused below the threshold: memory again */
    assert_int_equal(spool_append(&s, ref2, 50), 0);
    assert_int_equal(s.fd, -1);
    check_spool_reads(&s, ref2, 50);
    /* and above: a new, empty file (none of the old bytes) */
    assert_int_equal(spool_append(&s, ref2 + 50, 450), 0);
    assert_true(s.fd >= 0);
    check_spool_reads(&s, ref2, 500);
    spool_reset(&s);
    assert_int_equal(s.size, 0);

    /* reset twice, reset of a fresh spool */
    spool_reset(&s);
    spool_done(&s);
    spool_init(&s, 5);
    spool_reset(&s);
    assert_int_equal(s.fd, -1);
    spool_done(&s);
}

/* spool.h: spool_reset() "Frees memory and closes the file". conn_free() relies on it. */
static void test_spool_destroy_frees_memory(void **state)
{
    unsigned char ref[64];
    struct spool s;
    (void)state;

    fill_pat(ref, 0, sizeof(ref));
    spool_init(&s, 1000);
    assert_int_equal(spool_append(&s, ref, sizeof(ref)), 0);
    spool_destroy(&s);
    bool freed = s.mem.data == NULL && s.size == 0 && s.fd == -1;
    buf_destroy(&s.mem); /* keep LeakSanitizer quiet whatever the result */
    assert_true(freed);
}

static void test_spool_reset_keeps_small_block(void **state)
{
    unsigned char ref[64];
    struct spool s;
    (void)state;

    fill_pat(ref, 0, sizeof(ref));
    spool_init(&s, 1000);
    assert_int_equal(spool_append(&s, ref, sizeof(ref)), 0);
    spool_reset(&s);
    assert_int_equal(s.size, 0);
    assert_non_null(s.mem.data); /* kept for the next body */
    assert_int_equal(spool_append(&s, ref, sizeof(ref)), 0);
    assert_memory_equal(spool_memory(&s, 0), ref, sizeof(ref));
    spool_destroy(&s);
}

/* A few MiB in odd-sized pieces, across the spill, read back in odd-sized chunks. */
static void check_big_body(uint64_t threshold, bool want_file)
{
    static const size_t pieces[] = {1, 3, 7, 4093, 65521, 131071, 17, 999, 262147, 12289, 5};
    const size_t total = (3u << 20) + 12345;
    unsigned char *ref = malloc(total);
    char *dst = malloc(70000);
    struct spool s;
    size_t done = 0, k = 0;
    bool spilled_at_right_time = true;

    assert_non_null(ref);
    assert_non_null(dst);
    fill_pat(ref, 0, total);
    spool_init(&s, threshold);
    while (done < total) {
        size_t n = pieces[k++ % (sizeof(pieces) / sizeof(pieces[0]))];
        if (n > total - done) n = total - done;
        assert_int_equal(spool_append(&s, ref + done, n), 0);
        done += n;
        if ((s.fd >= 0) != (done > threshold)) spilled_at_right_time = false;
    }
    assert_true(spilled_at_right_time);
    assert_int_equal(s.size, total);
    assert_int_equal(s.fd >= 0, want_file);
    if (!want_file) {
        const char *m = spool_memory(&s, 0);
        assert_non_null(m);
        assert_memory_equal(m, ref, total);
    }
    /* sequential reads in chunks of 65519 */
    for (size_t off = 0; off < total;) {
        ssize_t r = spool_read(&s, off, dst, 65519);
        size_t want = total - off < 65519 ? total - off : 65519;
        assert_int_equal(r, want);
        if (memcmp(dst, ref + off, want) != 0) {
            print_error("chunk at %zu differs\n", off);
            fail();
        }
        off += (size_t)r;
    }
    assert_int_equal(spool_read(&s, total, dst, 10), 0);
    /* scattered reads, some crossing the end */
    uint32_t seed = 777;
    for (int i = 0; i < 300; i++) {
        size_t off = rnd(&seed) % (total + 10);
        size_t n = rnd(&seed) % 70000;
        size_t left = off < total ? total - off : 0;
        size_t want = n < left ? n : left;
        assert_int_equal(spool_read(&s, off, dst, n), want);
        if (want && memcmp(dst, ref + off, want) != 0) {
            print_error("read at %zu (+%zu) differs\n", off, n);
            fail();
        }
    }
    spool_done(&s);
    free(dst);
    free(ref);
}

static void test_spool_big_body_file(void **state)
{
    (void)state;
    check_big_body(1u << 20, true);
}

static void test_spool_big_body_memory(void **state)
{
    (void)state;
    check_big_body(8u << 20, false);
}

/* The file goes in $TMPDIR, has no name there, and an unusable $TMPDIR gives -errno. */
static void test_spool_tmpdir(void **state)
{
    char dir[] = "/tmp/corral-test-spool-XXXXXX";
    unsigned char ref[300];
    char *old = getenv("TMPDIR");
    char *saved = old ? strdup(old) : NULL;
    struct spool s;
    (void)state;

    fill_pat(ref, 0, sizeof(ref));
    assert_non_null(mkdtemp(dir));

    /* a missing directory: the append fails, and the bytes already stored are intact */
    char missing[64];
    snprintf(missing, sizeof(missing), "%s/missing", dir);
    setenv("TMPDIR", missing, 1);
    spool_init(&s, 100);
    assert_int_equal(spool_append(&s, ref, 80), 0);
    int err = spool_append(&s, ref + 80, 40);
    assert_int_equal(err, -ENOENT);
    assert_int_equal(s.size, 80);
    assert_int_equal(s.fd, -1);
    check_spool_reads(&s, ref, 80);

    /* with a usable TMPDIR the same spool spills there, and the file has no name */
    setenv("TMPDIR", dir, 1);
    assert_int_equal(spool_append(&s, ref + 80, 220), 0);
    assert_true(s.fd >= 0);
    check_spool_reads(&s, ref, 300);
    int entries = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) entries++;
    closedir(d);
    spool_done(&s);

    if (saved) {
        setenv("TMPDIR", saved, 1);
        free(saved);
    } else {
        unsetenv("TMPDIR");
    }
    assert_int_equal(rmdir(dir), 0);
    assert_int_equal(entries, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_init_destroy_empty),
        cmocka_unit_test(test_buf_append_small),
        cmocka_unit_test(test_buf_append_zero),
        cmocka_unit_test(test_buf_growth_sizes),
        cmocka_unit_test(test_buf_growth_incremental),
        cmocka_unit_test(test_buf_consume_partial),
        cmocka_unit_test(test_buf_consume_to_empty_resets),
        cmocka_unit_test(test_buf_reset_keeps_block),
        cmocka_unit_test(test_buf_reserve_room),
        cmocka_unit_test(test_buf_reserve_compacts),
        cmocka_unit_test(test_buf_against_model),
        cmocka_unit_test(test_spool_init),
        cmocka_unit_test(test_spool_memory_below_threshold),
        cmocka_unit_test(test_spool_spill_exactly_at_threshold),
        cmocka_unit_test(test_spool_spill_across_threshold),
        cmocka_unit_test(test_spool_first_append_over_threshold),
        cmocka_unit_test(test_spool_threshold_zero),
        cmocka_unit_test(test_spool_view),
        cmocka_unit_test(test_spool_reset_closes_file_and_reuses),
        cmocka_unit_test(test_spool_destroy_frees_memory),
        cmocka_unit_test(test_spool_reset_keeps_small_block),
        cmocka_unit_test(test_spool_big_body_file),
        cmocka_unit_test(test_spool_big_body_memory),
        cmocka_unit_test(test_spool_tmpdir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
