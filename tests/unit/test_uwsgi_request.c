/*
 * test_uwsgi_request.c - unit tests for the uwsgi vars to struct request adapter
 * (src/uwsgi/uwsgi_request.c).
 *
 * The vars arrays are built by hand (struct uwsgi_var views into string literals), as the
 * parser would hand them over. Every fill starts from a request full of sentinel values, so a
 * field the fill forgets, or one it must leave alone (the connection's), shows up.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "http/request.h"
#include "uwsgi/uwsgi_proto.h"
#include "uwsgi/uwsgi_request.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* A var from two string literals. */
#define V(k, v)                                                                                    \
    {                                                                                              \
        k, sizeof(k) - 1, v, sizeof(v) - 1                                                         \
    }

/* Stand-ins for the connection's fields: the fill must leave them as they are. */
static const struct listener *const LS = (const struct listener *)0x1234;
static const struct spool *const BODY = (const struct spool *)0x5678;
static struct http_header *const HEADERS = (struct http_header *)0x9abc;

/* A request whose every field holds a value the fill would not produce. */
static void scribble(struct request *r)
{
    memset(r, 0, sizeof(*r));
    r->method = r->target = r->path = r->query = "junk";
    r->method_len = r->target_len = r->path_len = r->query_len = 99;
    r->minor_version = 7;
    r->form = REQUEST_FORM_ASTERISK;
    r->authority = r->userinfo = "junk";
    r->authority_len = r->userinfo_len = 99;
    r->headers = HEADERS;
    r->num_headers = 42;
    r->content_length = 77;
    r->chunked = r->keep_alive = r->expect_continue = true;
    r->vars = (const struct uwsgi_var *)0x1;
    r->num_vars = 99;
    r->ls = LS;
    r->remote_addr = "10.0.0.1";
    r->remote_port = "4242";
    r->body = BODY;
    r->has_body = true;
}

/* Fills r from vars[0, n) starting from scribble(); returns the result. */
static enum uwsgi_request_error fill(struct request *r, const struct uwsgi_var *vars, size_t n)
{
    scribble(r);
    return uwsgi_request_fill(r, vars, n);
}

static void assert_view(const char *p, size_t len, const char *want)
{
    assert_non_null(p);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(p, want, len);
}

/* Fills from a REQUEST_METHOD GET and the given REQUEST_URI; checks target, path and query. */
static void check_split(const char *uri, const char *path, const char *query)
{
    struct uwsgi_var vars[] = {V("REQUEST_METHOD", "GET"), {"REQUEST_URI", 11, uri, strlen(uri)}};
    struct request r;

    assert_int_equal(fill(&r, vars, 2), UWSGI_REQ_OK);
    assert_ptr_equal(r.target, uri); /* a view, not a copy */
    assert_int_equal(r.target_len, strlen(uri));
    assert_ptr_equal(r.path, uri);
    assert_view(r.path, r.path_len, path);
    assert_view(r.query, r.query_len, query);
    if (strchr(uri, '?')) { /* the query starts right after the first '?' */
        assert_ptr_equal(r.query, uri + r.path_len + 1);
        assert_int_equal(r.path_len + 1 + r.query_len, r.target_len);
    } else {
        assert_int_equal(r.path_len, r.target_len);
    }
}

/* ---------------------------------------------------------------- fill */

/* A typical nginx request: every field as documented. */
static void test_fill_typical(void **state)
{
    const struct uwsgi_var vars[] = {
        V("QUERY_STRING", "a=1"),         V("REQUEST_METHOD", "POST"),
        V("CONTENT_TYPE", "text/plain"),  V("CONTENT_LENGTH", "123"),
        V("REQUEST_URI", "/p/q?a=1"),     V("PATH_INFO", "/p/q"),
        V("SERVER_PROTOCOL", "HTTP/1.1"), V("HTTP_HOST", "example.org"),
    };
    struct request r;
    (void)state;

    assert_int_equal(fill(&r, vars, ARRAY_SIZE(vars)), UWSGI_REQ_OK);
    assert_ptr_equal(r.method, vars[1].val);
    assert_view(r.method, r.method_len, "POST");
    assert_view(r.target, r.target_len, "/p/q?a=1");
    assert_view(r.path, r.path_len, "/p/q");
    assert_view(r.query, r.query_len, "a=1");
    assert_int_equal(r.minor_version, 1);
    assert_int_equal(r.content_length, 123);
    assert_false(r.chunked);
    assert_false(r.keep_alive); /* nginx reads a uwsgi response until the connection closes */
    assert_false(r.expect_continue);
    assert_null(r.headers);
    assert_int_equal(r.num_headers, 0);
    assert_int_equal(r.form, REQUEST_FORM_ORIGIN); /* nginx's REQUEST_URI is origin-form */
    assert_null(r.authority);
    assert_int_equal(r.authority_len, 0);
    assert_null(r.userinfo);
    assert_int_equal(r.userinfo_len, 0);
    assert_ptr_equal(r.vars, vars);
    assert_int_equal(r.num_vars, ARRAY_SIZE(vars));
    /* the connection's fields are left */
    assert_ptr_equal(r.ls, LS);
    assert_string_equal(r.remote_addr, "10.0.0.1");
    assert_string_equal(r.remote_port, "4242");
    assert_ptr_equal(r.body, BODY);
    assert_true(r.has_body);
}

/* The target splits at the first '?': none, one at the end, several, only '?'. */
static void test_fill_path_query_split(void **state)
{
    (void)state;
    check_split("/a/b", "/a/b", "");
    check_split("/a/b?", "/a/b", "");
    check_split("/a?x=1?y=2", "/a", "x=1?y=2");
    check_split("/a?x=1", "/a", "x=1");
    check_split("?", "", "");
    check_split("?q", "", "q");
    check_split("*", "*", "");
    check_split("/%3F?x", "/%3F", "x"); /* still percent-encoded */
}

/* No '?' at all: the query is an empty view at the target's end, never NULL. */
static void test_fill_query_never_null(void **state)
{
    const struct uwsgi_var vars[] = {V("REQUEST_METHOD", "GET"), V("REQUEST_URI", "/x")};
    struct request r;
    (void)state;

    assert_int_equal(fill(&r, vars, 2), UWSGI_REQ_OK);
    assert_non_null(r.query);
    assert_int_equal(r.query_len, 0);
    assert_ptr_equal(r.query, vars[1].val + 2);
}

/* Without REQUEST_URI the target is "" (and path and query empty, not NULL). */
static void test_fill_missing_uri(void **state)
{
    const struct uwsgi_var vars[] = {V("REQUEST_METHOD", "GET"), V("PATH_INFO", "/x")};
    struct request r;
    (void)state;

    assert_int_equal(fill(&r, vars, 2), UWSGI_REQ_OK);
    assert_non_null(r.target);
    assert_int_equal(r.target_len, 0);
    assert_string_equal(r.target, "");
    assert_non_null(r.path);
    assert_int_equal(r.path_len, 0);
    assert_non_null(r.query);
    assert_int_equal(r.query_len, 0);
}

/* An empty REQUEST_URI is the same as none. */
static void test_fill_empty_uri(void **state)
{
    const struct uwsgi_var vars[] = {V("REQUEST_METHOD", "GET"), V("REQUEST_URI", "")};
    struct request r;
    (void)state;

    assert_int_equal(fill(&r, vars, 2), UWSGI_REQ_OK);
    assert_int_equal(r.target_len, 0);
    assert_int_equal(r.path_len, 0);
    assert_non_null(r.query);
    assert_int_equal(r.query_len, 0);
}

/* SERVER_PROTOCOL: exactly HTTP/1.1 is minor version 1; anything else, or none, is 0. */
static void test_fill_protocol(void **state)
{
    static const struct {
        const char *proto; /* NULL: no SERVER_PROTOCOL var */
        int minor;
    } cases[] = {
        {"HTTP/1.1", 1},  {"HTTP/1.0", 0}, {NULL, 0},       {"", 0},
        {"HTTP/1.1 ", 0}, {"HTTP/1.", 0},  {"http/1.1", 0}, {"HTTP/2.0", 0},
    };
    struct request r;
    (void)state;

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct uwsgi_var vars[2] = {V("REQUEST_METHOD", "GET")};
        size_t n = 1;
        if (cases[i].proto)
            vars[n++] =
                (struct uwsgi_var){"SERVER_PROTOCOL", 15, cases[i].proto, strlen(cases[i].proto)};
        assert_int_equal(fill(&r, vars, n), UWSGI_REQ_OK);
        if (r.minor_version != cases[i].minor) {
            print_error("SERVER_PROTOCOL \"%s\": minor_version %d\n",
                        cases[i].proto ? cases[i].proto : "(none)", r.minor_version);
            fail();
        }
    }
}

/* CONTENT_LENGTH: absent or empty is -1; digits are the value. */
static void test_fill_content_length(void **state)
{
    static const struct {
        const char *val; /* NULL: no CONTENT_LENGTH var */
        int64_t want;
    } cases[] = {
        {NULL, -1},   {"", -1},   {"0", 0},
        {"123", 123}, {"007", 7}, {"9223372036854775807", INT64_MAX},
    };
    struct request r;
    (void)state;

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct uwsgi_var vars[2] = {V("REQUEST_METHOD", "PUT")};
        size_t n = 1;
        if (cases[i].val)
            vars[n++] =
                (struct uwsgi_var){"CONTENT_LENGTH", 14, cases[i].val, strlen(cases[i].val)};
        assert_int_equal(fill(&r, vars, n), UWSGI_REQ_OK);
        if (r.content_length != cases[i].want) {
            print_error("CONTENT_LENGTH \"%s\": %lld\n", cases[i].val ? cases[i].val : "(none)",
                        (long long)r.content_length);
            fail();
        }
    }
}

/* CONTENT_LENGTH that is not a number: UWSGI_REQ_BAD_LENGTH. */
static void test_fill_bad_content_length(void **state)
{
    static const char *const bad[] = {
        "12a", "-1", " 5", "5 ", "+5", "0x10", "1,1", "99999999999999999999", "9223372036854775808",
    };
    struct request r;
    (void)state;

    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        const struct uwsgi_var vars[] = {
            V("REQUEST_METHOD", "POST"),
            {"CONTENT_LENGTH", 14, bad[i], strlen(bad[i])},
        };
        enum uwsgi_request_error err = fill(&r, vars, 2);
        if (err != UWSGI_REQ_BAD_LENGTH) {
            print_error("CONTENT_LENGTH \"%s\": error %d\n", bad[i], (int)err);
            fail();
        }
    }
}

/* Without REQUEST_METHOD: UWSGI_REQ_NO_METHOD, also when the rest would be bad too. */
static void test_fill_no_method(void **state)
{
    const struct uwsgi_var vars[] = {V("REQUEST_URI", "/"), V("CONTENT_LENGTH", "12a")};
    struct request r;
    (void)state;

    assert_int_equal(fill(&r, vars, 1), UWSGI_REQ_NO_METHOD);
    assert_int_equal(fill(&r, vars, 2), UWSGI_REQ_NO_METHOD);
    assert_null(r.method);
    assert_int_equal(r.method_len, 0);
    /* a key that only starts like it is not it */
    const struct uwsgi_var near[] = {V("REQUEST_METHODX", "GET"), V("REQUEST_METHO", "GET")};
    assert_int_equal(fill(&r, near, 2), UWSGI_REQ_NO_METHOD);
}

/* No vars at all: a refused request that is still consistent (target "", vars set). */
static void test_fill_no_vars(void **state)
{
    struct request r;
    (void)state;

    assert_int_equal(fill(&r, NULL, 0), UWSGI_REQ_NO_METHOD);
    assert_int_equal(r.target_len, 0);
    assert_non_null(r.query);
    assert_int_equal(r.num_vars, 0);
    assert_false(r.keep_alive);
    assert_null(r.headers);
}

/* A repeated var: the first one counts (uwsgi_var_find's rule). */
static void test_fill_first_of_repeated(void **state)
{
    const struct uwsgi_var vars[] = {
        V("REQUEST_METHOD", "GET"),  V("REQUEST_URI", "/first"), V("REQUEST_METHOD", "POST"),
        V("REQUEST_URI", "/second"), V("CONTENT_LENGTH", "1"),   V("CONTENT_LENGTH", "x"),
    };
    struct request r;
    (void)state;

    assert_int_equal(fill(&r, vars, ARRAY_SIZE(vars)), UWSGI_REQ_OK);
    assert_view(r.method, r.method_len, "GET");
    assert_view(r.target, r.target_len, "/first");
    assert_int_equal(r.content_length, 1);
}

/* nginx passes a header repeated on the request as repeated HTTP_* vars. A list-based one, or
 * a singleton one with the same value again, is fine (the environ joins or keeps it once); a
 * singleton one with a different value is as ambiguous as the HTTP listener's 400. */
static void test_fill_repeated_headers(void **state)
{
    const struct uwsgi_var lists[] = {
        V("REQUEST_METHOD", "GET"),   V("HTTP_X_MULTI", "a"),       V("HTTP_COOKIE", "a=1"),
        V("HTTP_X_MULTI", "b"),       V("HTTP_COOKIE", "b=2"),      V("HTTP_USER_AGENT", "u"),
        V("HTTP_USER_AGENT", "u"),    V("HTTP_AUTHORIZATION", "x"), V("REQUEST_URI", "/1"),
        V("HTTP_AUTHORIZATION", "x"), V("REQUEST_URI", "/2"),       V("HTTP_X_USER_AGENT", "a"),
        V("HTTP_X_USER_AGENT", "b"),
    };
    static const char *const singletons[] = {
        "HTTP_AUTHORIZATION",
        "HTTP_PROXY_AUTHORIZATION",
        "HTTP_CONTENT_TYPE",
        "HTTP_CONTENT_LOCATION",
        "HTTP_CONTENT_RANGE",
        "HTTP_DATE",
        "HTTP_FROM",
        "HTTP_IF_MODIFIED_SINCE",
        "HTTP_IF_UNMODIFIED_SINCE",
        "HTTP_IF_RANGE",
        "HTTP_MAX_FORWARDS",
        "HTTP_RANGE",
        "HTTP_REFERER",
        "HTTP_USER_AGENT",
        "HTTP_HOST",
        "HTTP_CONTENT_LENGTH",
    };
    struct request r;
    (void)state;

    assert_int_equal(fill(&r, lists, ARRAY_SIZE(lists)), UWSGI_REQ_OK);
    for (size_t i = 0; i < ARRAY_SIZE(singletons); i++) {
        struct uwsgi_var vars[] = {
            V("REQUEST_METHOD", "GET"),
            {singletons[i], strlen(singletons[i]), "a", 1},
            V("HTTP_X", "1"),
            {singletons[i], strlen(singletons[i]), "b", 1},
        };
        assert_true(uwsgi_var_is_singleton(&vars[1]));
        assert_int_equal(fill(&r, vars, ARRAY_SIZE(vars)), UWSGI_REQ_AMBIGUOUS);
        vars[3].val = "a";
        assert_int_equal(fill(&r, vars, ARRAY_SIZE(vars)), UWSGI_REQ_OK);
    }
}

/* Which vars are request headers, and which of those are singleton fields. */
static void test_var_is_singleton(void **state)
{
    const struct uwsgi_var header[] = {V("HTTP_X", "1"), V("HTTP_COOKIE", "1")};
    const struct uwsgi_var not_header[] = {V("HTTP_", "1"), V("HTTP", "1"), V("CONTENT_TYPE", "1"),
                                           V("http_x", "1")};
    const struct uwsgi_var not_singleton[] = {
        V("HTTP_COOKIE", "1"),
        V("HTTP_X_FORWARDED_FOR", "1"),
        V("HTTP_USER-AGENT", "1"),
        V("HTTP_USER_AGENTS", "1"),
        V("CONTENT_TYPE", "1"),
        V("REQUEST_URI", "1"),
        V("HTTP_ACCEPT", "1"),
        V("HTTP_", "1"),
        V("HTTP_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "1"),
    };
    (void)state;

    for (size_t i = 0; i < ARRAY_SIZE(header); i++)
        assert_true(uwsgi_var_is_header(&header[i]));
    for (size_t i = 0; i < ARRAY_SIZE(not_header); i++)
        assert_false(uwsgi_var_is_header(&not_header[i]));
    for (size_t i = 0; i < ARRAY_SIZE(not_singleton); i++)
        assert_false(uwsgi_var_is_singleton(&not_singleton[i]));
}

/* ---------------------------------------------------------------- var_find, strerror */

/* The first var with exactly that key; NULL when absent; a prefix is a different key. */
static void test_var_find(void **state)
{
    const struct uwsgi_var vars[] = {
        V("CONTENT", "a"),        V("CONTENT_LENGTH", "b"),  V("HTTP_X", "c"),
        V("CONTENT_LENGTH", "d"), V("CONTENT_LENGTHS", "e"),
    };
    const size_t n = ARRAY_SIZE(vars);
    (void)state;

    assert_ptr_equal(uwsgi_var_find(vars, n, "CONTENT_LENGTH", 14), &vars[1]);
    assert_ptr_equal(uwsgi_var_find(vars, n, "CONTENT", 7), &vars[0]);
    assert_ptr_equal(uwsgi_var_find(vars, n, "CONTENT_LENGTHS", 15), &vars[4]);
    assert_ptr_equal(uwsgi_var_find(vars, n, "HTTP_X", 6), &vars[2]);
    assert_null(uwsgi_var_find(vars, n, "CONTENT_", 8));
    assert_null(uwsgi_var_find(vars, n, "HTTP", 4));
    assert_null(uwsgi_var_find(vars, n, "content_length", 14)); /* case matters */
    assert_null(uwsgi_var_find(vars, n, "MISSING", 7));
    /* the key's length counts, not a NUL: a longer buffer with a shorter len */
    assert_ptr_equal(uwsgi_var_find(vars, n, "CONTENT_LENGTH", 7), &vars[0]);
    /* only the first n vars are searched */
    assert_null(uwsgi_var_find(vars, 1, "CONTENT_LENGTH", 14));
    assert_ptr_equal(uwsgi_var_find(vars + 2, 2, "CONTENT_LENGTH", 14), &vars[3]);
    assert_null(uwsgi_var_find(NULL, 0, "CONTENT", 7));
}

/* Every error has its own lowercase-initial description; others get "unknown error". */
static void test_strerror(void **state)
{
    const enum uwsgi_request_error all[] = {UWSGI_REQ_OK, UWSGI_REQ_NO_METHOD, UWSGI_REQ_BAD_LENGTH,
                                            UWSGI_REQ_AMBIGUOUS};
    (void)state;

    for (size_t i = 0; i < ARRAY_SIZE(all); i++) {
        const char *s = uwsgi_request_strerror(all[i]);
        assert_non_null(s);
        assert_true(s[0] >= 'a' && s[0] <= 'z');
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(s, uwsgi_request_strerror(all[j]));
    }
    assert_string_equal(uwsgi_request_strerror((enum uwsgi_request_error)99), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fill_typical),
        cmocka_unit_test(test_fill_path_query_split),
        cmocka_unit_test(test_fill_query_never_null),
        cmocka_unit_test(test_fill_missing_uri),
        cmocka_unit_test(test_fill_empty_uri),
        cmocka_unit_test(test_fill_protocol),
        cmocka_unit_test(test_fill_content_length),
        cmocka_unit_test(test_fill_bad_content_length),
        cmocka_unit_test(test_fill_no_method),
        cmocka_unit_test(test_fill_no_vars),
        cmocka_unit_test(test_fill_first_of_repeated),
        cmocka_unit_test(test_fill_repeated_headers),
        cmocka_unit_test(test_var_is_singleton),
        cmocka_unit_test(test_var_find),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
