/*
 * test_uwsgi_proto.c - unit tests for src/uwsgi/uwsgi_proto.c (cmocka).
 *
 * Table-driven: every row of 'valid' and 'invalid' is one named test. Packets are written in a
 * small notation that shows the wire format as it is: hex byte pairs, text between single
 * quotes copied as is, spaces ignored. So "00 0a00 00 0300 'FOO' 0300 'bar'" is modifier1 0,
 * datasize 10 (little-endian), modifier2 0, then the var FOO=bar.
 *
 * Each row is also checked for the every-split property: each prefix of the input, placed
 * just before a PROT_NONE guard page, is PARSE_INCOMPLETE or the final result, and once the
 * final result appears it stays for every longer input (including extra body bytes). Feeding
 * the bytes one at a time, or in two pieces split anywhere, is the same sequence of calls,
 * since the caller always passes the whole buffer received so far.
 *
 * The 16-bit limits (datasize 0 and 65535, key and value lengths 0xffff, the max_packet
 * boundary, the most vars a packet can hold) and the encoder are tested by hand-built packets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "guard.h"
#include "uwsgi/uwsgi_proto.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

enum {
    MAXP = UWSGI_MAX_PACKET, /* max_packet for rows that do not test it */
    MAXV = 16,               /* max_vars for rows that do not test it */
    SPEC_MAX = 512,          /* the largest packet a table row describes */
    EXTRA = 7,               /* body bytes appended to check that results are stable */
};

static const char body_bytes[EXTRA] = "xyz\0\xff\x01Z";

/* An expected var; val_len 0 means strlen(val). */
struct kv {
    const char *key;
    const char *val;
    size_t val_len;
};

struct row {
    const char *name;
    const char *spec;  /* the input, in the notation above */
    size_t max_packet; /* passed to the parser */
    size_t max_vars;   /* passed to the parser */
    int want;          /* the packet size (rows with err set want PARSE_ERROR) */
    enum uwsgi_error err;
    size_t nvars;
    struct kv vars[4];
};

static const struct row valid[] = {
    {.name = "zero vars", .spec = "00 0000 00", .max_packet = MAXP, .max_vars = MAXV, .want = 4},
    {.name = "zero vars, max_vars 0", .spec = "00 0000 00", .max_packet = MAXP, .want = 4},
    {.name = "one var",
     .spec = "00 0a00 00 0300 'FOO' 0300 'bar'",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .want = 14,
     .nvars = 1,
     .vars = {{"FOO", "bar"}}},
    {.name = "empty value",
     .spec = "00 1000 00 0c00 'QUERY_STRING' 0000",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .want = 20,
     .nvars = 1,
     .vars = {{"QUERY_STRING", ""}}},
    {.name = "modifier2 ignored",
     .spec = "00 0a00 ff 0300 'FOO' 0300 'bar'",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .want = 14,
     .nvars = 1,
     .vars = {{"FOO", "bar"}}},
    {.name = "body after the packet is not consumed",
     .spec = "00 0a00 00 0300 'FOO' 0300 'bar' 'hello'",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .want = 14,
     .nvars = 1,
     .vars = {{"FOO", "bar"}}},
    {.name = "duplicate keys kept in order",
     .spec = "00 0c00 00 0100 'A' 0100 '1' 0100 'A' 0100 '2'",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .want = 16,
     .nvars = 2,
     .vars = {{"A", "1"}, {"A", "2"}}},
    {.name = "binary value bytes",
     .spec = "00 0800 00 0100 'K' 0300 00ff0a",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .want = 12,
     .nvars = 1,
     .vars = {{"K", "\0\xff\n", 3}}},
    {.name = "binary key bytes",
     .spec = "00 0600 00 0100 ff 0100 'v'",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .want = 10,
     .nvars = 1,
     .vars = {{"\xff", "v"}}},
    {.name = "exactly max_vars",
     .spec = "00 1200 00 0100 'A' 0100 '1' 0100 'B' 0100 '2' 0100 'C' 0100 '3'",
     .max_packet = MAXP,
     .max_vars = 3,
     .want = 22,
     .nvars = 3,
     .vars = {{"A", "1"}, {"B", "2"}, {"C", "3"}}},
    {.name = "packet exactly max_packet",
     .spec = "00 0a00 00 0300 'FOO' 0300 'bar'",
     .max_packet = 14,
     .max_vars = MAXV,
     .want = 14,
     .nvars = 1,
     .vars = {{"FOO", "bar"}}},
    {.name = "max_packet above the protocol limit",
     .spec = "00 0a00 00 0300 'FOO' 0300 'bar'",
     .max_packet = SIZE_MAX,
     .max_vars = MAXV,
     .want = 14,
     .nvars = 1,
     .vars = {{"FOO", "bar"}}},
    {.name = "datasize high byte",
     .spec = "00 0601 00 0100 'K' 0101"
             "'0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'"
             "'0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'"
             "'0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'"
             "'0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef' 'z'",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .want = 266,
     .nvars = 1,
     .vars = {{"K", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdefz"}}},
};

static const struct row invalid[] = {
    {.name = "modifier1 5 (psgi)",
     .spec = "05 0000 00",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .err = UWSGI_ERR_MODIFIER},
    {.name = "modifier1 72 with a valid block",
     .spec = "48 0a00 00 0300 'FOO' 0300 'bar'",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .err = UWSGI_ERR_MODIFIER},
    {.name = "modifier1 checked before datasize",
     .spec = "01 ffff 00",
     .max_packet = 64,
     .max_vars = MAXV,
     .err = UWSGI_ERR_MODIFIER},
    {.name = "datasize above max_packet, header only",
     .spec = "00 ffff 00",
     .max_packet = 1024,
     .max_vars = MAXV,
     .err = UWSGI_ERR_TOO_LARGE},
    {.name = "packet one byte over max_packet",
     .spec = "00 0a00 00 0300 'FOO' 0300 'bar'",
     .max_packet = 13,
     .max_vars = MAXV,
     .err = UWSGI_ERR_TOO_LARGE},
    {.name = "max_packet below the header size",
     .spec = "00 0000 00",
     .max_packet = 3,
     .max_vars = MAXV,
     .err = UWSGI_ERR_TOO_LARGE},
    {.name = "one byte left in the block",
     .spec = "00 0b00 00 0300 'FOO' 0300 'bar' 41",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .err = UWSGI_ERR_TRUNCATED},
    {.name = "block of one byte",
     .spec = "00 0100 00 41",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .err = UWSGI_ERR_TRUNCATED},
    {.name = "only a key length",
     .spec = "00 0200 00 0100",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .err = UWSGI_ERR_TRUNCATED},
    {.name = "key without a value length",
     .spec = "00 0500 00 0300 'FOO'",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .err = UWSGI_ERR_TRUNCATED},
    {.name = "half a value length",
     .spec = "00 0600 00 0300 'FOO' 00",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .err = UWSGI_ERR_TRUNCATED},
    {.name = "key runs past the block though bytes follow",
     .spec = "00 0400 00 0300 'FO' 'O' 0300 'bar'",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .err = UWSGI_ERR_TRUNCATED},
    {.name = "value runs past the block though bytes follow",
     .spec = "00 0a00 00 0300 'FOO' 0400 'bar' 'x'",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .err = UWSGI_ERR_TRUNCATED},
    {.name = "key length 0xffff",
     .spec = "00 0600 00 ffff 'ABCD'",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .err = UWSGI_ERR_TRUNCATED},
    {.name = "value length 0xffff",
     .spec = "00 0800 00 0100 'K' ffff 'abc'",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .err = UWSGI_ERR_TRUNCATED},
    {.name = "empty key",
     .spec = "00 0600 00 0000 0200 'ab'",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .err = UWSGI_ERR_EMPTY_KEY},
    {.name = "empty key and value",
     .spec = "00 0400 00 0000 0000",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .err = UWSGI_ERR_EMPTY_KEY},
    {.name = "empty key at the block end",
     .spec = "00 0200 00 0000",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .err = UWSGI_ERR_EMPTY_KEY},
    {.name = "empty key after a good var",
     .spec = "00 0e00 00 0300 'FOO' 0300 'bar' 0000 0000",
     .max_packet = MAXP,
     .max_vars = MAXV,
     .err = UWSGI_ERR_EMPTY_KEY},
    {.name = "too many vars",
     .spec = "00 1200 00 0100 'A' 0100 '1' 0100 'B' 0100 '2' 0100 'C' 0100 '3'",
     .max_packet = MAXP,
     .max_vars = 2,
     .err = UWSGI_ERR_TOO_MANY_VARS},
    {.name = "one var, max_vars 0",
     .spec = "00 0a00 00 0300 'FOO' 0300 'bar'",
     .max_packet = MAXP,
     .err = UWSGI_ERR_TOO_MANY_VARS},
};

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    fail_msg("bad hex digit '%c' in a packet spec", c);
    return 0;
}

/* Decodes 'spec' (the notation in the file comment) into out[0, SPEC_MAX); returns the length. */
static size_t unhex(const char *spec, char *out)
{
    size_t n = 0;
    const char *s = spec;

    while (*s) {
        if (*s == ' ') {
            s++;
        } else if (*s == '\'') {
            const char *close = strchr(s + 1, '\'');
            assert_non_null(close);
            assert_true(n + (size_t)(close - s - 1) <= SPEC_MAX);
            memcpy(out + n, s + 1, (size_t)(close - s - 1));
            n += (size_t)(close - s - 1);
            s = close + 1;
        } else {
            assert_true(n < SPEC_MAX && s[1] != '\0');
            out[n++] = (char)(hex_digit(s[0]) << 4 | hex_digit(s[1]));
            s += 2;
        }
    }
    return n;
}

/* One parse's outcome, with views stored as offsets so results over copies can be compared. */
struct result {
    int rc;
    enum uwsgi_error err;
    size_t n;
    size_t key_off[MAXV];
    size_t key_len[MAXV];
    size_t val_off[MAXV];
    size_t val_len[MAXV];
};

/* Parses in[0, len) placed just before a guard page and records the outcome in *r. */
static void parse_guarded(const char *in, size_t len, size_t max_packet, size_t max_vars,
                          struct result *r)
{
    struct guard g;
    const char *buf = guard_copy(&g, in, len);
    struct uwsgi_var vars[MAXV];

    assert_true(max_vars <= MAXV);
    memset(r, 0, sizeof(*r));
    r->rc = uwsgi_parse_request(buf, len, max_packet, vars, max_vars, &r->n, &r->err);
    for (size_t i = 0; i < r->n; i++) {
        assert_true(vars[i].key >= buf && vars[i].key + vars[i].key_len <= buf + len);
        assert_true(vars[i].val >= buf && vars[i].val + vars[i].val_len <= buf + len);
        r->key_off[i] = (size_t)(vars[i].key - buf);
        r->key_len[i] = vars[i].key_len;
        r->val_off[i] = (size_t)(vars[i].val - buf);
        r->val_len[i] = vars[i].val_len;
    }
    guard_free(&g);
}

static void assert_same_result(const struct result *a, const struct result *b, const char *name,
                               size_t k)
{
    if (a->rc != b->rc || a->err != b->err || a->n != b->n)
        fail_msg("%s: prefix %zu gives rc %d err %d n %zu, the whole gives rc %d err %d n %zu",
                 name, k, a->rc, (int)a->err, a->n, b->rc, (int)b->err, b->n);
    for (size_t i = 0; i < a->n; i++) {
        assert_int_equal(a->key_off[i], b->key_off[i]);
        assert_int_equal(a->key_len[i], b->key_len[i]);
        assert_int_equal(a->val_off[i], b->val_off[i]);
        assert_int_equal(a->val_len[i], b->val_len[i]);
    }
}

/* Checks the whole input's result against the row's expectations. */
static void check_row_result(const struct row *t, const char *in, const struct result *r)
{
    int want = t->err == UWSGI_OK ? t->want : PARSE_ERROR;

    if (r->rc != want || r->err != t->err)
        fail_msg("%s: rc %d err %d (%s), want rc %d err %d", t->name, r->rc, (int)r->err,
                 uwsgi_strerror(r->err), want, (int)t->err);
    assert_int_equal(r->n, t->nvars);
    for (size_t i = 0; i < t->nvars; i++) {
        const struct kv *e = &t->vars[i];
        size_t vlen = e->val_len ? e->val_len : strlen(e->val);
        assert_int_equal(r->key_len[i], strlen(e->key));
        assert_memory_equal(in + r->key_off[i], e->key, r->key_len[i]);
        assert_int_equal(r->val_len[i], vlen);
        assert_memory_equal(in + r->val_off[i], e->val, vlen);
    }
}

/*
 * The every-split property: each prefix is INCOMPLETE (with no vars and no error) until the
 * result first appears, then every longer input gives that same result; the whole input, and
 * the whole plus extra body bytes, give the row's expected result.
 */
static void test_row(void **state)
{
    const struct row *t = *state;
    char in[SPEC_MAX + EXTRA];
    size_t len = unhex(t->spec, in);
    struct result whole;
    struct result r;
    bool settled = false;

    memcpy(in + len, body_bytes, EXTRA);
    parse_guarded(in, len, t->max_packet, t->max_vars, &whole);
    check_row_result(t, in, &whole);
    for (size_t k = 0; k <= len + EXTRA; k++) {
        parse_guarded(in, k, t->max_packet, t->max_vars, &r);
        if (!settled && r.rc == PARSE_INCOMPLETE) {
            assert_int_equal(r.err, UWSGI_OK);
            assert_int_equal(r.n, 0);
            continue;
        }
        settled = true;
        assert_same_result(&r, &whole, t->name, k);
    }
}

/* Writes v as a little-endian 16-bit value. */
static void le16(char *p, size_t v)
{
    p[0] = (char)(v & 0xff);
    p[1] = (char)(v >> 8);
}

/*
 * Builds in a fresh buffer of 4 + datasize bytes a packet holding one var "K" whose value fills
 * the block (datasize 0: no vars; datasize 1..4 cannot hold a var and is not used).
 */
static char *one_var_packet(size_t datasize)
{
    char *p = malloc(UWSGI_HEADER_SIZE + datasize);

    assert_non_null(p);
    assert_true(datasize == 0 || (datasize >= 5 && datasize <= 0xffff));
    p[0] = 0;
    le16(p + 1, datasize);
    p[3] = 0;
    if (datasize == 0) return p;
    le16(p + 4, 1);
    p[6] = 'K';
    le16(p + 7, datasize - 5);
    memset(p + 9, 'v', datasize - 5);
    return p;
}

static int parse_simple(const char *in, size_t len, size_t max_packet, enum uwsgi_error *err)
{
    struct result r;

    parse_guarded(in, len, max_packet, MAXV, &r);
    *err = r.err;
    return r.rc;
}

static void test_datasize_max(void **state)
{
    char *p = one_var_packet(0xffff);
    struct result r;
    enum uwsgi_error err;
    const size_t sample[] = {0, 1, 3, 4, 5, 9, 300, 65537, 65538};

    (void)state;
    parse_guarded(p, UWSGI_MAX_PACKET, UWSGI_MAX_PACKET, MAXV, &r);
    assert_int_equal(r.rc, UWSGI_MAX_PACKET);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.key_len[0], 1);
    assert_int_equal(r.val_off[0], 9);
    assert_int_equal(r.val_len[0], 65530);
    assert_int_equal(parse_simple(p, UWSGI_MAX_PACKET, SIZE_MAX, &err), UWSGI_MAX_PACKET);
    for (size_t i = 0; i < ARRAY_SIZE(sample); i++)
        assert_int_equal(parse_simple(p, sample[i], UWSGI_MAX_PACKET, &err), PARSE_INCOMPLETE);
    /* One under the limit: refused from the header alone. */
    assert_int_equal(parse_simple(p, 4, UWSGI_MAX_PACKET - 1, &err), PARSE_ERROR);
    assert_int_equal(err, UWSGI_ERR_TOO_LARGE);
    free(p);
}

static void test_datasize_zero(void **state)
{
    struct result r;

    (void)state;
    parse_guarded("\0\0\0\0", 4, 4, 0, &r);
    assert_int_equal(r.rc, 4);
    assert_int_equal(r.n, 0);
    parse_guarded("\0\0\0\0", 3, 4, 0, &r);
    assert_int_equal(r.rc, PARSE_INCOMPLETE);
}

static void test_max_packet_boundary(void **state)
{
    const size_t sizes[] = {0, 5, 10, 251, 252, 255, 256, 4092, 16380, 0xfffe, 0xffff};
    enum uwsgi_error err;

    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
        size_t total = UWSGI_HEADER_SIZE + sizes[i];
        char *p = one_var_packet(sizes[i]);
        assert_int_equal(parse_simple(p, total, total, &err), (int)total);
        assert_int_equal(parse_simple(p, total, total - 1, &err), PARSE_ERROR);
        assert_int_equal(err, UWSGI_ERR_TOO_LARGE);
        assert_int_equal(parse_simple(p, 4, total - 1, &err), PARSE_ERROR);
        assert_int_equal(parse_simple(p, total - 1, total, &err), PARSE_INCOMPLETE);
        free(p);
    }
}

/* The largest key a packet can hold: 65531 bytes with an empty value fill datasize 65535. */
static void test_largest_key(void **state)
{
    char *p = malloc(UWSGI_MAX_PACKET);
    struct result r;

    (void)state;
    assert_non_null(p);
    memcpy(p, "\0\xff\xff\0", 4);
    le16(p + 4, 65531);
    memset(p + 6, 'k', 65531);
    le16(p + 6 + 65531, 0);
    parse_guarded(p, UWSGI_MAX_PACKET, UWSGI_MAX_PACKET, MAXV, &r);
    assert_int_equal(r.rc, UWSGI_MAX_PACKET);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.key_len[0], 65531);
    assert_int_equal(r.val_len[0], 0);
    assert_int_equal(r.val_off[0], UWSGI_MAX_PACKET);
    free(p);
}

/* datasize 65535 whose first key (or value) length is 0xffff: runs past the block's end. */
static void check_ffff_past_block(bool in_value)
{
    char *p = malloc(UWSGI_MAX_PACKET + EXTRA);
    struct result r;

    assert_non_null(p);
    memset(p, 'x', UWSGI_MAX_PACKET + EXTRA);
    memcpy(p, "\0\xff\xff\0", 4);
    if (in_value) {
        memcpy(p + 4, "\x01\0K", 3);
        le16(p + 7, 0xffff);
    } else {
        le16(p + 4, 0xffff);
    }
    parse_guarded(p, UWSGI_MAX_PACKET - 1, UWSGI_MAX_PACKET, MAXV, &r);
    assert_int_equal(r.rc, PARSE_INCOMPLETE);
    parse_guarded(p, UWSGI_MAX_PACKET, UWSGI_MAX_PACKET, MAXV, &r);
    assert_int_equal(r.rc, PARSE_ERROR);
    assert_int_equal(r.err, UWSGI_ERR_TRUNCATED);
    parse_guarded(p, UWSGI_MAX_PACKET + EXTRA, UWSGI_MAX_PACKET, MAXV, &r);
    assert_int_equal(r.err, UWSGI_ERR_TRUNCATED);
    free(p);
}

static void test_key_len_ffff(void **state)
{
    (void)state;
    check_ffff_past_block(false);
}

static void test_val_len_ffff(void **state)
{
    (void)state;
    check_ffff_past_block(true);
}

/* The most vars a packet holds: 10922 of 6 bytes ("K" = "v") in 65532 bytes. */
static void test_most_vars(void **state)
{
    enum { N = 0xffff / 6 };
    char *p = malloc(4 + N * 6);
    struct uwsgi_var *vars = calloc(N, sizeof(*vars));
    struct guard g;
    const char *buf;
    size_t n;
    enum uwsgi_error err;

    (void)state;
    assert_true(p && vars);
    memcpy(p, "\0\0\0\0", 4);
    le16(p + 1, N * 6);
    for (size_t i = 0; i < N; i++)
        memcpy(p + 4 + i * 6, "\x01\0K\x01\0v", 6);
    buf = guard_copy(&g, p, 4 + N * 6);
    assert_int_equal(uwsgi_parse_request(buf, 4 + N * 6, MAXP, vars, N, &n, &err), 4 + N * 6);
    assert_int_equal(n, N);
    assert_ptr_equal(vars[N - 1].val, buf + 4 + N * 6 - 1);
    assert_int_equal(uwsgi_parse_request(buf, 4 + N * 6, MAXP, vars, N - 1, &n, &err), PARSE_ERROR);
    assert_int_equal(err, UWSGI_ERR_TOO_MANY_VARS);
    assert_int_equal(n, 0);
    guard_free(&g);
    free(vars);
    free(p);
}

static void test_len_zero_null_buf(void **state)
{
    size_t n = 99;
    enum uwsgi_error err = UWSGI_ERR_MODIFIER;

    (void)state;
    assert_int_equal(uwsgi_parse_request(NULL, 0, MAXP, NULL, 0, &n, &err), PARSE_INCOMPLETE);
    assert_int_equal(n, 0);
    assert_int_equal(err, UWSGI_OK);
}

/* What nginx sends with "include uwsgi_params;" plus the request headers, for a POST. */
static const struct uwsgi_var nginx_vars[] = {
    {"QUERY_STRING", 12, "a=1&b=%20", 9},
    {"REQUEST_METHOD", 14, "POST", 4},
    {"CONTENT_TYPE", 12, "application/x-www-form-urlencoded", 33},
    {"CONTENT_LENGTH", 14, "7", 1},
    {"REQUEST_URI", 11, "/form/%C3%A9?a=1&b=%20", 22},
    {"PATH_INFO", 9, "/form/\xc3\xa9", 8},
    {"DOCUMENT_ROOT", 13, "/usr/share/nginx/html", 21},
    {"SERVER_PROTOCOL", 15, "HTTP/1.1", 8},
    {"REQUEST_SCHEME", 14, "https", 5},
    {"HTTPS", 5, "on", 2},
    {"REMOTE_ADDR", 11, "192.0.2.10", 10},
    {"REMOTE_PORT", 11, "51234", 5},
    {"SERVER_PORT", 11, "443", 3},
    {"SERVER_NAME", 11, "example.org", 11},
    {"HTTP_HOST", 9, "example.org", 11},
    {"HTTP_USER_AGENT", 15, "curl/7.88.1", 11},
    {"HTTP_ACCEPT", 11, "*/*", 3},
    {"HTTP_CONTENT_TYPE", 17, "application/x-www-form-urlencoded", 33},
    {"HTTP_CONTENT_LENGTH", 19, "7", 1},
    {"HTTP_X_EMPTY", 12, "", 0},
};

static void assert_vars_equal(const struct uwsgi_var *a, const struct uwsgi_var *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(a[i].key_len, b[i].key_len);
        assert_memory_equal(a[i].key, b[i].key, a[i].key_len);
        assert_int_equal(a[i].val_len, b[i].val_len);
        if (a[i].val_len) assert_memory_equal(a[i].val, b[i].val, a[i].val_len);
    }
}

static void test_round_trip_nginx(void **state)
{
    enum { N = ARRAY_SIZE(nginx_vars) };
    char out[1024];
    size_t len = uwsgi_encode_vars(out, sizeof(out), nginx_vars, N, 0);
    struct guard g;
    const char *buf;
    struct uwsgi_var vars[N];
    size_t n;
    enum uwsgi_error err;

    (void)state;
    assert_true(len > 4);
    assert_int_equal((unsigned char)out[1] | (unsigned char)out[2] << 8, len - 4);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[3], 0);
    buf = guard_copy(&g, out, len);
    assert_int_equal(uwsgi_parse_request(buf, len, len, vars, N, &n, &err), (int)len);
    assert_int_equal(n, N);
    assert_vars_equal(vars, nginx_vars, N);
    assert_int_equal(uwsgi_parse_request(buf, len, len, vars, N - 1, &n, &err), PARSE_ERROR);
    assert_int_equal(err, UWSGI_ERR_TOO_MANY_VARS);
    guard_free(&g);
}

/* encode(parse(x)) == x for each valid row, modifier2 aside (the encoder writes 0). */
static void test_round_trip_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(valid); i++) {
        char in[SPEC_MAX];
        char out[SPEC_MAX];
        size_t len = unhex(valid[i].spec, in);
        struct guard g;
        const char *buf = guard_copy(&g, in, len);
        struct uwsgi_var vars[MAXV];
        size_t n;
        enum uwsgi_error err;
        int rc = uwsgi_parse_request(buf, len, MAXP, vars, MAXV, &n, &err);
        assert_true(rc > 0);
        assert_int_equal(uwsgi_encode_vars(out, sizeof(out), vars, n, 0), (size_t)rc);
        guard_free(&g);
        in[3] = 0;
        assert_memory_equal(in, out, (size_t)rc);
    }
}

static void test_encode_limits(void **state)
{
    char *out = malloc(UWSGI_MAX_PACKET + 1);
    char *big = calloc(1, 0x10000);
    struct uwsgi_var v[2] = {{"K", 1, big, 65530}, {"k", 1, NULL, 0}};

    (void)state;
    assert_true(out && big);
    /* A block of exactly 65535 bytes fits, in exactly its size and no less. */
    assert_int_equal(uwsgi_encode_vars(out, UWSGI_MAX_PACKET, v, 1, 0), UWSGI_MAX_PACKET);
    assert_int_equal(uwsgi_encode_vars(out, UWSGI_MAX_PACKET - 1, v, 1, 0), 0);
    /* 65536 bytes of vars cannot be expressed. */
    v[0].val_len = 65531;
    assert_int_equal(uwsgi_encode_vars(out, UWSGI_MAX_PACKET + 1, v, 1, 0), 0);
    v[0].val_len = 65526;
    assert_int_equal(uwsgi_encode_vars(out, UWSGI_MAX_PACKET + 1, v, 2, 0), 0);
    /* Any single length above 0xffff. */
    v[0].val_len = 0x10000;
    assert_int_equal(uwsgi_encode_vars(out, UWSGI_MAX_PACKET + 1, v, 1, 0), 0);
    v[0] = (struct uwsgi_var){big, 0x10000, NULL, 0};
    assert_int_equal(uwsgi_encode_vars(out, UWSGI_MAX_PACKET + 1, v, 1, 0), 0);
    /* No vars: just the header; modifier1 as given; too small a buffer. */
    assert_int_equal(uwsgi_encode_vars(out, 4, NULL, 0, 5), 4);
    assert_memory_equal(out, "\x05\0\0\0", 4);
    assert_int_equal(uwsgi_encode_vars(out, 3, NULL, 0, 0), 0);
    assert_int_equal(uwsgi_encode_vars(NULL, 0, NULL, 0, 0), 0);
    free(big);
    free(out);
}

/* The encoder does not validate keys, so tests can build an empty-key packet with it. */
static void test_encode_empty_key(void **state)
{
    const struct uwsgi_var v = {"", 0, "x", 1};
    char out[16];
    struct guard g;
    const char *buf;
    struct uwsgi_var vars[1];
    size_t n;
    enum uwsgi_error err;

    (void)state;
    assert_int_equal(uwsgi_encode_vars(out, sizeof(out), &v, 1, 0), 9);
    assert_memory_equal(out, "\0\x05\0\0\0\0\x01\0x", 9);
    buf = guard_copy(&g, out, 9);
    assert_int_equal(uwsgi_parse_request(buf, 9, MAXP, vars, 1, &n, &err), PARSE_ERROR);
    assert_int_equal(err, UWSGI_ERR_EMPTY_KEY);
    guard_free(&g);
}

static void test_strerror(void **state)
{
    const enum uwsgi_error all[] = {UWSGI_OK,
                                    UWSGI_ERR_MODIFIER,
                                    UWSGI_ERR_TOO_LARGE,
                                    UWSGI_ERR_TRUNCATED,
                                    UWSGI_ERR_EMPTY_KEY,
                                    UWSGI_ERR_TOO_MANY_VARS};

    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(all); i++) {
        assert_non_null(uwsgi_strerror(all[i]));
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(uwsgi_strerror(all[i]), uwsgi_strerror(all[j]));
    }
    assert_string_equal(uwsgi_strerror((enum uwsgi_error)99), "unknown error");
}

/* One named test per table row, with the row as the test's state. */
static void add_rows(struct CMUnitTest *tests, size_t *n, const struct row *rows, size_t count)
{
    for (size_t i = 0; i < count; i++)
        tests[(*n)++] = (struct CMUnitTest){
            .name = rows[i].name, .test_func = test_row, .initial_state = (void *)&rows[i]};
}

int main(void)
{
    struct CMUnitTest rows[ARRAY_SIZE(valid) + ARRAY_SIZE(invalid)];
    size_t n = 0;
    const struct CMUnitTest limits[] = {
        cmocka_unit_test(test_datasize_zero),
        cmocka_unit_test(test_datasize_max),
        cmocka_unit_test(test_max_packet_boundary),
        cmocka_unit_test(test_largest_key),
        cmocka_unit_test(test_key_len_ffff),
        cmocka_unit_test(test_val_len_ffff),
        cmocka_unit_test(test_most_vars),
        cmocka_unit_test(test_len_zero_null_buf),
        cmocka_unit_test(test_round_trip_nginx),
        cmocka_unit_test(test_round_trip_table),
        cmocka_unit_test(test_encode_limits),
        cmocka_unit_test(test_encode_empty_key),
        cmocka_unit_test(test_strerror),
    };
    int failed = 0;

    add_rows(rows, &n, valid, ARRAY_SIZE(valid));
    add_rows(rows, &n, invalid, ARRAY_SIZE(invalid));
    failed += _cmocka_run_group_tests("uwsgi_proto_table", rows, n, NULL, NULL);
    failed += cmocka_run_group_tests_name("uwsgi_proto_limits", limits, NULL, NULL);
    return failed ? 1 : 0;
}
