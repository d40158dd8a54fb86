/*
 * test_conn_state.c - unit tests for the connection state table (src/worker/conn_state.c).
 *
 * conn_plan() is pure, so every state is checked against every combination of the four facts
 * (16 each), with three distinct timeouts so that a wrong one shows. The expected plan is
 * written out below from the state descriptions in conn_state.h, one state per test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "net/loop.h"
#include "worker/conn_state.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

enum { REQUEST_MS = 1111, KEEPALIVE_MS = 2222, LINGER_MS = 3333 };

static const struct conn_timeouts timeouts = {
    .request_ms = REQUEST_MS, .keepalive_ms = KEEPALIVE_MS, .linger_ms = LINGER_MS};

/* Facts number i: bit 0 output, bit 1 input, bit 2 served, bit 3 read_closed. */
static struct conn_facts facts(unsigned i)
{
    return (struct conn_facts){.output = i & 1,
                               .input = (i >> 1) & 1,
                               .served = (i >> 2) & 1,
                               .read_closed = (i >> 3) & 1};
}

/* What the header says state s wants with facts f. */
typedef struct conn_plan expect_fn(const struct conn_facts *f);

/* Checks conn_plan(s) against 'expect' for all 16 combinations of the facts. */
static void check_state(enum conn_state s, expect_fn *expect)
{
    for (unsigned i = 0; i < 16; i++) {
        struct conn_facts f = facts(i);
        struct conn_plan want = expect(&f);
        struct conn_plan got = conn_plan(s, &f, &timeouts);
        if (got.interest != want.interest || got.timeout_ms != want.timeout_ms) {
            print_error("%s output=%d input=%d served=%d read_closed=%d: "
                        "interest %u timeout %u, want interest %u timeout %u\n",
                        conn_state_name(s), f.output, f.input, f.served, f.read_closed,
                        got.interest, (unsigned)got.timeout_ms, want.interest,
                        (unsigned)want.timeout_ms);
            fail();
        }
    }
}

/*
 * HEAD: writing the previous response while output is pending, and then not reading; else
 * reading a head, under the request timeout once a head has begun (input) or on a new
 * connection, and under the keep-alive timeout when idle between requests.
 */
static struct conn_plan expect_head(const struct conn_facts *f)
{
    if (f->output) return (struct conn_plan){LOOP_WRITABLE, REQUEST_MS};
    if (f->served && !f->input) return (struct conn_plan){LOOP_READABLE, KEEPALIVE_MS};
    return (struct conn_plan){LOOP_READABLE, REQUEST_MS};
}

/* BODY: reading the body (and writing any pending output), under the request timeout. */
static struct conn_plan expect_body(const struct conn_facts *f)
{
    return (struct conn_plan){LOOP_READABLE | (f->output ? LOOP_WRITABLE : 0), REQUEST_MS};
}

/*
 * APP: the loop writes what the app produced and reads ahead unless reading stopped
 * (read_closed); no timeout, the app has the request.
 */
static struct conn_plan expect_app(const struct conn_facts *f)
{
    unsigned interest = (f->read_closed ? 0 : LOOP_READABLE) | (f->output ? LOOP_WRITABLE : 0);
    return (struct conn_plan){interest, 0};
}

/* SEND: writing only (the app waits), under the request timeout. */
static struct conn_plan expect_send(const struct conn_facts *f)
{
    (void)f;
    return (struct conn_plan){LOOP_WRITABLE, REQUEST_MS};
}

/* LINGER: reading and dropping input until EOF (the write side is shut), linger timeout. */
static struct conn_plan expect_linger(const struct conn_facts *f)
{
    (void)f;
    return (struct conn_plan){LOOP_READABLE, LINGER_MS};
}

static void test_head(void **state)
{
    (void)state;
    check_state(CONN_HEAD, expect_head);
}

static void test_body(void **state)
{
    (void)state;
    check_state(CONN_BODY, expect_body);
}

static void test_app(void **state)
{
    (void)state;
    check_state(CONN_APP, expect_app);
}

static void test_send(void **state)
{
    (void)state;
    check_state(CONN_SEND, expect_send);
}

static void test_linger(void **state)
{
    (void)state;
    check_state(CONN_LINGER, expect_linger);
}

/* Spot checks of the table's key rows, independent of the expect_* functions. */
static void test_key_rows(void **state)
{
    const struct conn_facts idle = {.served = true};
    const struct conn_facts fresh = {0};
    const struct conn_facts pipelined = {.output = true, .input = true, .served = true};
    const struct conn_facts app_stalled = {.output = true, .read_closed = true};
    (void)state;

    /* an idle keep-alive connection: keep-alive timeout, reading */
    assert_int_equal(conn_plan(CONN_HEAD, &idle, &timeouts).timeout_ms, KEEPALIVE_MS);
    assert_int_equal(conn_plan(CONN_HEAD, &idle, &timeouts).interest, LOOP_READABLE);
    /* a new connection: the request timeout */
    assert_int_equal(conn_plan(CONN_HEAD, &fresh, &timeouts).timeout_ms, REQUEST_MS);
    /* the next request is buffered but the last response is not written: write only */
    assert_int_equal(conn_plan(CONN_HEAD, &pipelined, &timeouts).interest, LOOP_WRITABLE);
    /* the app has it, the client stopped reading input: write only, no timeout */
    assert_int_equal(conn_plan(CONN_APP, &app_stalled, &timeouts).interest, LOOP_WRITABLE);
    assert_int_equal(conn_plan(CONN_APP, &app_stalled, &timeouts).timeout_ms, 0);
    /* the app has it with nothing to write and nothing to read: no interest at all */
    const struct conn_facts app_quiet = {.read_closed = true};
    assert_int_equal(conn_plan(CONN_APP, &app_quiet, &timeouts).interest, 0);
}

/* The timeouts come from the argument: other values give other deadlines. */
static void test_timeouts_from_argument(void **state)
{
    const struct conn_timeouts t = {.request_ms = 7, .keepalive_ms = 8, .linger_ms = 9};
    const struct conn_facts idle = {.served = true};
    const struct conn_facts none = {0};
    (void)state;

    assert_int_equal(conn_plan(CONN_HEAD, &idle, &t).timeout_ms, 8);
    assert_int_equal(conn_plan(CONN_HEAD, &none, &t).timeout_ms, 7);
    assert_int_equal(conn_plan(CONN_BODY, &none, &t).timeout_ms, 7);
    assert_int_equal(conn_plan(CONN_SEND, &none, &t).timeout_ms, 7);
    assert_int_equal(conn_plan(CONN_LINGER, &none, &t).timeout_ms, 9);
    assert_int_equal(conn_plan(CONN_APP, &none, &t).timeout_ms, 0);
}

/* Every state has its own name; a value outside the enum gets a placeholder, not a crash. */
static void test_state_names(void **state)
{
    static const char *const want[] = {"HEAD", "BODY", "APP", "SEND", "LINGER"};
    (void)state;

    assert_int_equal(ARRAY_SIZE(want), CONN_STATES);
    for (int s = 0; s < CONN_STATES; s++)
        assert_string_equal(conn_state_name((enum conn_state)s), want[s]);
    const enum conn_state bad[] = {CONN_STATES, (enum conn_state)(CONN_STATES + 7),
                                   (enum conn_state) - 1};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        const char *name = conn_state_name(bad[i]);
        assert_non_null(name);
        for (int s = 0; s < CONN_STATES; s++)
            assert_string_not_equal(name, want[s]);
    }
}

/* A value outside the enum plans nothing: no interest, no deadline. */
static void test_plan_out_of_range(void **state)
{
    (void)state;
    for (unsigned i = 0; i < 16; i++) {
        struct conn_facts f = facts(i);
        struct conn_plan p = conn_plan(CONN_STATES, &f, &timeouts);
        assert_int_equal(p.interest, 0);
        assert_int_equal(p.timeout_ms, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_body),
        cmocka_unit_test(test_app),
        cmocka_unit_test(test_send),
        cmocka_unit_test(test_linger),
        cmocka_unit_test(test_key_rows),
        cmocka_unit_test(test_timeouts_from_argument),
        cmocka_unit_test(test_state_names),
        cmocka_unit_test(test_plan_out_of_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
