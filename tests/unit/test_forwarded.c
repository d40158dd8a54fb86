/*
 * test_forwarded.c - unit tests for the trusted-proxy headers and the allow-list
 * (src/http/forwarded.c).
 *
 * Table-driven: each resolve case is {name, allow-list, peer, header lines, expected result};
 * each allow-list case is {list, ok, addresses in it, addresses not in it}. Header values sit
 * just before a PROT_NONE guard page (guard.h), so reading past a value crashes the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/forwarded.h"
#include "guard.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

struct allow_case {
    const char *list;
    bool ok;
    const char *in[4];  /* addresses the list holds */
    const char *out[4]; /* addresses it does not */
};

static const struct allow_case allow_cases[] = {
    {"127.0.0.1", true, {"127.0.0.1", "::ffff:127.0.0.1"}, {"127.0.0.2", "::1", "", "x"}},
    {" 10.0.0.0/8 , fd00::/8,::1",
     true,
     {"10.255.1.2", "fd12::1", "::1", "::ffff:10.1.1.1"},
     {"11.0.0.1", "fe00::1", "::2"}},
    {"192.168.1.0/25", true, {"192.168.1.0", "192.168.1.127"}, {"192.168.1.128", "192.168.0.1"}},
    {"0.0.0.0/0", true, {"1.2.3.4", "255.255.255.255"}, {"::1"}},
    {"::ffff:10.0.0.0/104", true, {"10.1.2.3", "::ffff:10.9.9.9"}, {"11.0.0.1"}},
    {"*", true, {"1.2.3.4", "::1", "192.0.2.1"}, {"not-an-address"}},
    {"", true, {NULL}, {"127.0.0.1", "::1"}},
    {" , ,", true, {NULL}, {"127.0.0.1"}},
    {"127.0.0.1/33", false},
    {"::1/129", false},
    {"10.0.0.0/", false},
    {"10.0.0.0/1x", false},
    {"10.0.0.0/0008", false},
    {"localhost", false},
    {"10.0.0", false},
    {"1.2.3.4 5.6.7.8", false},
    {"fe80::1%eth0", false},
    {"**", false},
};

static void test_allow_case(void **state)
{
    const struct allow_case *c = *state;
    struct forwarded_allow a;
    char err[128] = "";

    int rc = forwarded_allow_parse(c->list, &a, err, sizeof(err));
    if (!c->ok) {
        assert_int_equal(rc, -1);
        assert_non_null(strstr(err, "is not an address"));
        return;
    }
    assert_int_equal(rc, 0);
    for (size_t i = 0; i < ARRAY_SIZE(c->in) && c->in[i]; i++)
        assert_true(forwarded_allow_has(&a, c->in[i], strlen(c->in[i])));
    for (size_t i = 0; i < ARRAY_SIZE(c->out) && c->out[i]; i++)
        assert_false(forwarded_allow_has(&a, c->out[i], strlen(c->out[i])));
}

static void test_allow_too_many(void **state)
{
    char list[FORWARDED_MAX_NETS * 16 + 16] = "";
    struct forwarded_allow a;
    char err[128];
    (void)state;

    for (int i = 0; i < FORWARDED_MAX_NETS; i++)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "10.0.0.%d,", i);
    assert_int_equal(forwarded_allow_parse(list, &a, err, sizeof(err)), 0);
    assert_int_equal(a.n, FORWARDED_MAX_NETS);
    assert_true(forwarded_allow_has(&a, "10.0.0.31", 9));
    strcat(list, "10.0.0.99");
    assert_int_equal(forwarded_allow_parse(list, &a, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "more than"));
}

struct resolve_case {
    const char *name;
    const char *allow; /* NULL: "127.0.0.1" */
    const char *peer;  /* NULL: "127.0.0.1" */
    const char *lines; /* "Name: value\n..." */
    const char *want;  /* "none", or "addr=A port=P scheme=S" (addr "-": none) */
};

static const struct resolve_case resolve_cases[] = {
    /* X-Forwarded-For / -Proto */
    {"no proxy headers", NULL, NULL, "Host: a\nX-Other: 1\n", "none"},
    {"untrusted peer", NULL, "10.0.0.1", "X-Forwarded-For: 1.2.3.4\nX-Forwarded-Proto: https\n",
     "none"},
    {"one hop", NULL, NULL, "X-Forwarded-For: 192.0.2.7\n", "addr=192.0.2.7 port= scheme=none"},
    {"proto only", NULL, NULL, "X-Forwarded-Proto: HTTPS\n", "addr=- port= scheme=https"},
    {"proto http", NULL, NULL, "X-Forwarded-Proto: http\n", "addr=- port= scheme=http"},
    {"proto other", NULL, NULL, "X-Forwarded-Proto: ftp\n", "addr=- port= scheme=none"},
    {"proto list: rightmost", NULL, NULL, "X-Forwarded-Proto: http, https\n",
     "addr=- port= scheme=https"},
    {"proto lines: last", NULL, NULL, "X-Forwarded-Proto: https\nX-Forwarded-Proto: http\n",
     "addr=- port= scheme=http"},
    {"rightmost untrusted", "10.0.0.0/8", "10.0.0.1",
     "X-Forwarded-For: 6.6.6.6, 192.0.2.9, 10.1.1.1, 10.2.2.2\n",
     "addr=192.0.2.9 port= scheme=none"},
    {"spoofed left part ignored", NULL, NULL, "X-Forwarded-For: 127.0.0.1, 203.0.113.5\n",
     "addr=203.0.113.5 port= scheme=none"},
    {"all trusted: leftmost", "10.0.0.0/8", "10.0.0.1", "X-Forwarded-For: 10.9.9.9, 10.1.1.1\n",
     "addr=10.9.9.9 port= scheme=none"},
    {"hops over two lines", "10.0.0.0/8", "10.0.0.1",
     "X-Forwarded-For: 192.0.2.1\nX-Forwarded-For: 192.0.2.2, 10.3.3.3\n",
     "addr=192.0.2.2 port= scheme=none"},
    {"IPv6 hop", NULL, NULL, "X-Forwarded-For: 2001:db8::1\n",
     "addr=2001:db8::1 port= scheme=none"},
    {"bracketed IPv6 with port", NULL, NULL, "X-Forwarded-For: [2001:db8::1]:4711\n",
     "addr=2001:db8::1 port=4711 scheme=none"},
    {"IPv4 with port", NULL, NULL, "X-Forwarded-For:  192.0.2.1:80 \n",
     "addr=192.0.2.1 port=80 scheme=none"},
    {"unknown hop keeps the peer", NULL, NULL, "X-Forwarded-For: 192.0.2.1, unknown\n",
     "addr=- port= scheme=none"},
    {"garbage hop", NULL, NULL, "X-Forwarded-For: 1.2.3.4.5\n", "addr=- port= scheme=none"},
    {"empty XFF", NULL, NULL, "X-Forwarded-For:\n", "addr=- port= scheme=none"},
    {"bracketed IPv4 is not a form", NULL, NULL, "X-Forwarded-For: [192.0.2.1]\n",
     "addr=- port= scheme=none"},
    {"bad port dropped", NULL, NULL, "X-Forwarded-For: 192.0.2.1:8x\n",
     "addr=192.0.2.1 port= scheme=none"},
    {"UNIX socket peer is trusted", NULL, "", "X-Forwarded-For: 192.0.2.1\n",
     "addr=192.0.2.1 port= scheme=none"},
    {"IPv4-mapped peer", NULL, "::ffff:127.0.0.1", "X-Forwarded-For: 192.0.2.1\n",
     "addr=192.0.2.1 port= scheme=none"},
    {"any peer with *", "*", "203.0.113.1", "X-Forwarded-For: 192.0.2.1\n",
     "addr=192.0.2.1 port= scheme=none"},
    {"nobody with an empty list", "", "127.0.0.1", "X-Forwarded-For: 192.0.2.1\n", "none"},
    {"names any case", NULL, NULL, "x-forwarded-for: 192.0.2.1\nX-FORWARDED-PROTO: https\n",
     "addr=192.0.2.1 port= scheme=https"},

    /* Forwarded (RFC 7239) */
    {"Forwarded for and proto", NULL, NULL, "Forwarded: for=192.0.2.60;proto=https;by=1.2.3.4\n",
     "addr=192.0.2.60 port= scheme=https"},
    {"Forwarded quoted IPv6 and port", NULL, NULL, "Forwarded: For=\"[2001:db8:cafe::17]:4711\"\n",
     "addr=2001:db8:cafe::17 port=4711 scheme=none"},
    {"Forwarded rightmost untrusted, its proto", "10.0.0.0/8", "10.0.0.1",
     "Forwarded: for=6.6.6.6;proto=http, for=192.0.2.1;proto=https, for=10.1.1.1;proto=http\n",
     "addr=192.0.2.1 port= scheme=https"},
    {"Forwarded wins over X-Forwarded", NULL, NULL,
     "X-Forwarded-For: 198.51.100.1\nForwarded: for=192.0.2.1\nX-Forwarded-Proto: https\n",
     "addr=192.0.2.1 port= scheme=none"},
    {"Forwarded proto only", NULL, NULL, "Forwarded: proto=https\n", "addr=- port= scheme=https"},
    {"Forwarded unknown", NULL, NULL, "Forwarded: for=unknown;proto=https\n",
     "addr=- port= scheme=https"},
    {"Forwarded obfuscated", NULL, NULL, "Forwarded: for=_hidden, for=\"_x:_y\"\n",
     "addr=- port= scheme=none"},
    {"Forwarded obfuscated port dropped", NULL, NULL, "Forwarded: for=\"192.0.2.1:_p\"\n",
     "addr=192.0.2.1 port= scheme=none"},
    {"Forwarded bare IPv6 is not a token", NULL, NULL, "Forwarded: for=2001:db8::1\n",
     "addr=- port= scheme=none"},
    {"Forwarded garbage left of a proxy's element", NULL, NULL,
     "Forwarded: ;;=x\"y, for=192.0.2.9\n", "addr=192.0.2.9 port= scheme=none"},
    {"Forwarded malformed rightmost element", NULL, NULL,
     "Forwarded: for=192.0.2.9, for=1.2.3.4;x\n", "addr=- port= scheme=none"},
    {"Forwarded repeated for= is malformed", NULL, NULL, "Forwarded: for=192.0.2.1;for=192.0.2.2\n",
     "addr=- port= scheme=none"},
    {"Forwarded quoted-pair is malformed", NULL, NULL, "Forwarded: for=\"192.0.2.\\1\"\n",
     "addr=- port= scheme=none"},
    {"Forwarded unterminated quote", NULL, NULL, "Forwarded: for=\"192.0.2.1\n",
     "addr=- port= scheme=none"},
    {"Forwarded empty elements and pairs", NULL, NULL, "Forwarded: , ;for=192.0.2.1; ,\n",
     "addr=192.0.2.1 port= scheme=none"},
    {"Forwarded quoted comma", "10.0.0.0/8", "10.0.0.1",
     "Forwarded: for=192.0.2.1;x=\"a,b\", for=10.1.1.1\n", "addr=192.0.2.1 port= scheme=none"},
    {"Forwarded over two lines", "10.0.0.0/8", "10.0.0.1",
     "Forwarded: for=192.0.2.1\nForwarded: for=10.1.1.1;proto=https\n",
     "addr=192.0.2.1 port= scheme=none"},
    {"Forwarded from untrusted peer", NULL, "192.0.2.200", "Forwarded: for=192.0.2.1\n", "none"},
    {"Forwarded empty value falls back", NULL, NULL, "Forwarded:\nX-Forwarded-For: 192.0.2.3\n",
     "addr=192.0.2.3 port= scheme=none"},
};

enum { MAX_LINES = 8 };

static void test_resolve_case(void **state)
{
    const struct resolve_case *c = *state;
    struct forwarded_allow a;
    struct http_header h[MAX_LINES];
    struct guard g[MAX_LINES];
    struct forwarded_result res;
    char err[128], got[256];
    size_t n = 0;

    assert_int_equal(forwarded_allow_parse(c->allow ? c->allow : "127.0.0.1", &a, err, sizeof(err)),
                     0);
    for (const char *p = c->lines; *p; n++) {
        const char *nl = strchr(p, '\n');
        const char *colon = memchr(p, ':', (size_t)(nl - p));
        const char *v = colon + 1;
        assert_true(n < MAX_LINES);
        while (*v == ' ')
            v++;
        h[n].name = p;
        h[n].name_len = (size_t)(colon - p);
        h[n].value_len = (size_t)(nl - v);
        h[n].value = guard_copy(&g[n], v, h[n].value_len);
        p = nl + 1;
    }
    if (!forwarded_resolve(&a, c->peer ? c->peer : "127.0.0.1", h, n, &res)) {
        snprintf(got, sizeof(got), "none");
    } else {
        static const char *const schemes[] = {"none", "http", "https"};
        snprintf(got, sizeof(got), "addr=%.*s port=%.*s scheme=%s",
                 res.addr ? (int)res.addr_len : 1, res.addr ? res.addr : "-", (int)res.port_len,
                 res.port, schemes[res.scheme]);
    }
    for (size_t i = 0; i < n; i++)
        guard_free(&g[i]);
    assert_string_equal(got, c->want);
}

int main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_allow_too_many),
    };
    static struct CMUnitTest
        tests[ARRAY_SIZE(allow_cases) + ARRAY_SIZE(resolve_cases) + ARRAY_SIZE(fixed)];
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(allow_cases); i++)
        tests[n++] = (struct CMUnitTest){.name = allow_cases[i].list[0] ? allow_cases[i].list
                                                                        : "(empty list)",
                                         .test_func = test_allow_case,
                                         .initial_state = (void *)&allow_cases[i]};
    for (size_t i = 0; i < ARRAY_SIZE(resolve_cases); i++)
        tests[n++] = (struct CMUnitTest){.name = resolve_cases[i].name,
                                         .test_func = test_resolve_case,
                                         .initial_state = (void *)&resolve_cases[i]};
    for (size_t i = 0; i < ARRAY_SIZE(fixed); i++)
        tests[n++] = fixed[i];
    return _cmocka_run_group_tests("forwarded", tests, n, NULL, NULL);
}
