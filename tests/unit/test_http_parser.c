/*
 * test_http_parser.c - unit tests for the HTTP/1.x head parser and the chunked decoder
 * (src/http/http_parser.c).
 *
 * Table-driven: each case is {name, input, expected result or status, expected views}. Every
 * case is also checked for the every-split property: each prefix of a head parses as
 * PARSE_INCOMPLETE or as the same error as the whole input, and a chunked body fed whole,
 * split in two at every position, or one byte at a time decodes to the same bytes and result.
 * Every parse reads its input from just before a PROT_NONE guard page (guard.h), so reading
 * one byte too far crashes the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_parser.h"
#include "guard.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

enum { MAX_HEADERS = 8 };

static const struct http_limits lim_default = {
    .max_head = 8192, .max_headers = MAX_HEADERS, .max_body = 0};
static const struct http_limits lim_body_10 = {
    .max_head = 8192, .max_headers = MAX_HEADERS, .max_body = 10};
static const struct http_limits lim_head_40 = {
    .max_head = 40, .max_headers = MAX_HEADERS, .max_body = 0};
static const struct http_limits lim_head_39 = {
    .max_head = 39, .max_headers = MAX_HEADERS, .max_body = 0};
static const struct http_limits lim_head_41 = {
    .max_head = 41, .max_headers = MAX_HEADERS, .max_body = 0};
static const struct http_limits lim_head_20 = {
    .max_head = 20, .max_headers = MAX_HEADERS, .max_body = 0};
static const struct http_limits lim_headers_2 = {.max_head = 8192, .max_headers = 2};

/* A head case. Views are checked only when the expected string is non-NULL. */
struct head_case {
    const char *name;
    const char *input;
    size_t input_len;              /* 0: strlen(input) */
    int status;                    /* 0: success; else the expected error status */
    size_t head_len;               /* success: the expected return; 0: the whole input */
    const struct http_limits *lim; /* NULL: lim_default */
    const char *line;              /* "method target path=P query=Q 1.minor" */
    const char *sem;               /* "cl=N chunked=B keep_alive=B expect=B" */
    const char *headers;           /* "name=value|name=value" */
    const char *form;              /* "origin|absolute|asterisk authority=A userinfo=U" */
};

/* 19 + 19 + 2 bytes: exactly 40 (for the max_head boundary cases). */
#define REQ40 "GET /abc HTTP/1.1\r\nHost: example.org\r\n\r\n"

static struct head_case head_cases[] = {
    /* ---- valid requests ---- */
    {"simple GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", .line = "GET / path=/ query= 1.1",
     .sem = "cl=-1 chunked=0 keep_alive=1 expect=0", .headers = "Host=a"},
    {"GET with query", "GET /p/a%20b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\n\r\n",
     .line = "GET /p/a%20b?x=1&y=2 path=/p/a%20b query=x=1&y=2 1.1"},
    {"empty query", "GET /p? HTTP/1.1\r\nHost: a\r\n\r\n", .line = "GET /p? path=/p query= 1.1"},
    {"query split at first ?", "GET /a?b?c HTTP/1.1\r\nHost: a\r\n\r\n",
     .line = "GET /a?b?c path=/a query=b?c 1.1"},
    {"browser-like GET",
     "GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0\r\n"
     "Accept: text/html,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\n"
     "Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n\r\n",
     .sem = "cl=-1 chunked=0 keep_alive=1 expect=0",
     .headers = "Host=www.example.com|User-Agent=Mozilla/5.0|Accept=text/html,*/*;q=0.8|"
                "Accept-Language=en-US,en;q=0.5|Accept-Encoding=gzip, deflate|"
                "Connection=keep-alive"},
    {"POST with body (stops at head)",
     "POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", .head_len = 51,
     .line = "POST /form path=/form query= 1.1", .sem = "cl=5 chunked=0 keep_alive=1 expect=0"},
    {"pipelined GETs (stops at first)",
     "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n", .head_len = 28,
     .line = "GET /1 path=/1 query= 1.1"},
    {"HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", .line = "GET / path=/ query= 1.0",
     .sem = "cl=-1 chunked=0 keep_alive=0 expect=0", .headers = ""},
    {"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
     .sem = "cl=-1 chunked=0 keep_alive=1 expect=0"},
    {"HTTP/1.0 keep-alive and close", "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
     .sem = "cl=-1 chunked=0 keep_alive=0 expect=0"},
    {"HTTP/1.0 keep-alive in a list", "GET / HTTP/1.0\r\nConnection: TE ,\t keep-alive ,\r\n\r\n",
     .sem = "cl=-1 chunked=0 keep_alive=1 expect=0"},
    {"HTTP/1.1 close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
     .sem = "cl=-1 chunked=0 keep_alive=0 expect=0"},
    {"HTTP/1.1 close in second field",
     "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nConnection: Upgrade, CLOSE\r\n\r\n",
     .sem = "cl=-1 chunked=0 keep_alive=0 expect=0"},
    {"close as a substring is not close",
     "GET / HTTP/1.1\r\nHost: a\r\nConnection: closed, xclose\r\n\r\n",
     .sem = "cl=-1 chunked=0 keep_alive=1 expect=0"},
    {"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
     .sem = "cl=-1 chunked=1 keep_alive=1 expect=0"},
    {"chunked any case with OWS",
     "POST / HTTP/1.1\r\nHost: a\r\ntransfer-ENCODING: \t ChUnKeD \t\r\n\r\n",
     .sem = "cl=-1 chunked=1 keep_alive=1 expect=0"},
    {"expect 100-continue",
     "PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n",
     .sem = "cl=3 chunked=0 keep_alive=1 expect=1"},
    {"expect ignored in HTTP/1.0",
     "PUT /x HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
     .sem = "cl=3 chunked=0 keep_alive=0 expect=0"},
    {"other expectation ignored", "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continuex\r\n\r\n",
     .sem = "cl=-1 chunked=0 keep_alive=1 expect=0"},
    {"OWS trimmed, inner kept", "GET / HTTP/1.1\r\nHost:a\r\nX-A: \t v a l \t\r\nX-E:\r\n\r\n",
     .headers = "Host=a|X-A=v a l|X-E="},
    {"value of only OWS", "GET / HTTP/1.1\r\nHost: a\r\nX:  \t \r\n\r\n", .headers = "Host=a|X="},
    {"colon inside value", "GET / HTTP/1.1\r\nHost: a:80\r\nX: a:b: c\r\n\r\n",
     .headers = "Host=a:80|X=a:b: c"},
    {"all tchars in a name", "GET / HTTP/1.1\r\nHost: a\r\nX-!#$%&'*+-.^_`|~09az: v\r\n\r\n",
     .headers = "Host=a|X-!#$%&'*+-.^_`|~09az=v"},
    {"obs-text in target and value", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\nX: \xff\x80\r\n\r\n",
     .line = "GET /caf\\xc3\\xa9 path=/caf\\xc3\\xa9 query= 1.1", .headers = "Host=a|X=\\xff\\x80"},
    {"leading empty lines skipped", "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
     .line = "GET / path=/ query= 1.1"},
    {"extension method", "M-SEARCH /x HTTP/1.1\r\nHost: a\r\n\r\n",
     .line = "M-SEARCH /x path=/x query= 1.1"},
    {"lowercase method is a token", "get / HTTP/1.1\r\nHost: a\r\n\r\n",
     .line = "get / path=/ query= 1.1"},

    /* ---- request-target forms (RFC 9112 §3.2) ---- */
    {"origin-form", "GET /a?b HTTP/1.1\r\nHost: a\r\n\r\n", .form = "origin authority= userinfo="},
    {"absolute-form", "GET http://a.example/b?c HTTP/1.1\r\nHost: a.example\r\n\r\n",
     .line = "GET http://a.example/b?c path=/b query=c 1.1",
     .form = "absolute authority=a.example userinfo="},
    {"absolute-form https, any case, port",
     "POST HTTPS://A.example:8443/p/q%20r HTTP/1.1\r\nHost: other\r\n\r\n",
     .line = "POST HTTPS://A.example:8443/p/q%20r path=/p/q%20r query= 1.1",
     .form = "absolute authority=A.example:8443 userinfo="},
    {"absolute-form IPv6 literal", "GET http://[::1]:8080/foo HTTP/1.1\r\nHost: x\r\n\r\n",
     .line = "GET http://[::1]:8080/foo path=/foo query= 1.1",
     .form = "absolute authority=[::1]:8080 userinfo="},
    {"absolute-form userinfo", "GET http://user:pass@host/x HTTP/1.1\r\nHost: host\r\n\r\n",
     .line = "GET http://user:pass@host/x path=/x query= 1.1",
     .form = "absolute authority=host userinfo=user:pass@"},
    {"absolute-form empty path", "GET http://a.example HTTP/1.1\r\nHost: a\r\n\r\n",
     .line = "GET http://a.example path= query= 1.1",
     .form = "absolute authority=a.example userinfo="},
    {"absolute-form empty path, query", "GET http://a.example?x=/y HTTP/1.1\r\nHost: a\r\n\r\n",
     .line = "GET http://a.example?x=/y path= query=x=/y 1.1",
     .form = "absolute authority=a.example userinfo="},
    {"absolute-form empty port", "GET http://a:/ HTTP/1.0\r\n\r\n",
     .form = "absolute authority=a: userinfo="},
    {"absolute-form in HTTP/1.0 without Host", "GET http://a/b HTTP/1.0\r\n\r\n",
     .line = "GET http://a/b path=/b query= 1.0", .form = "absolute authority=a userinfo="},
    {"asterisk-form with OPTIONS", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
     .line = "OPTIONS * path=* query= 1.1", .form = "asterisk authority= userinfo="},
    {"CONNECT authority-form", "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
     .status = 501},
    {"CONNECT origin-form", "CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", .status = 501},
    {"CONNECT 501 before header errors", "CONNECT a:1 HTTP/1.1\r\nHost : a\r\n\r\n", .status = 501},
    {"connect is not CONNECT", "connect a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"authority-form with GET", "GET a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"asterisk-form with GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"asterisk-form with options", "options * HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"asterisk-form with extension method", "M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n",
     .status = 400},
    {"asterisk then more", "OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"origin-form without slash", "GET foo/bar HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"origin-form query only", "GET ?x HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"absolute-form other scheme", "GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"absolute-form no slashes", "GET http:/a/b HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"absolute-form scheme only", "GET http:// HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"absolute-form empty host", "GET http:///b HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"absolute-form port only", "GET http://:80/b HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"absolute-form empty host after userinfo", "GET http://u@/b HTTP/1.1\r\nHost: a\r\n\r\n",
     .status = 400},
    {"absolute-form bad port", "GET http://a:8x/b HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"absolute-form two colons", "GET http://a:1:2/b HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"absolute-form unclosed IPv6", "GET http://[::1/b HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"absolute-form empty IPv6", "GET http://[]/b HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"absolute-form junk after IPv6", "GET http://[::1]x/b HTTP/1.1\r\nHost: a\r\n\r\n",
     .status = 400},
    {"absolute-form obs-text host", "GET http://caf\xc3\xa9/ HTTP/1.1\r\nHost: a\r\n\r\n",
     .status = 400},
    {"absolute-form bad userinfo", "GET http://a\"b@c/ HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"absolute-form two @", "GET http://a@b@c/ HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"absolute-form still needs Host in 1.1", "GET http://a/b HTTP/1.1\r\n\r\n", .status = 400},

    /* ---- repeated fields (RFC 9110 §5.3) ---- */
    {"repeated list field kept", "GET / HTTP/1.1\r\nHost: a\r\nX-M: a\r\nX-M: b\r\n\r\n",
     .headers = "Host=a|X-M=a|X-M=b"},
    {"repeated singleton, same value",
     "GET / HTTP/1.1\r\nHost: a\r\nContent-Type: a\r\ncontent-type:  a \r\n\r\n",
     .headers = "Host=a|Content-Type=a|content-type=a"},
    {"repeated Content-Type differs",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n", .status = 400},
    {"repeated Content-Type differs in case",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Type: a\r\nContent-Type: A\r\n\r\n", .status = 400},
    {"repeated Authorization differs",
     "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic x\r\nX: 1\r\nauthorization: Basic y\r\n"
     "\r\n",
     .status = 400},
    {"repeated Proxy-Authorization differs",
     "GET / HTTP/1.1\r\nHost: a\r\nProxy-Authorization: a\r\nProxy-Authorization: b\r\n\r\n",
     .status = 400},
    {"repeated User-Agent differs",
     "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: a\r\nUser-Agent: b\r\n\r\n", .status = 400},
    {"repeated Referer differs", "GET / HTTP/1.1\r\nHost: a\r\nReferer: a\r\nReferer: b\r\n\r\n",
     .status = 400},
    {"repeated Range differs", "GET / HTTP/1.1\r\nHost: a\r\nRange: a\r\nRange: b\r\n\r\n",
     .status = 400},
    {"repeated If-Range differs", "GET / HTTP/1.1\r\nHost: a\r\nIf-Range: a\r\nIf-Range: b\r\n\r\n",
     .status = 400},
    {"repeated If-Modified-Since differs",
     "GET / HTTP/1.1\r\nHost: a\r\nIf-Modified-Since: a\r\nIf-Modified-Since: b\r\n\r\n",
     .status = 400},
    {"repeated If-Unmodified-Since differs",
     "GET / HTTP/1.1\r\nHost: a\r\nIf-Unmodified-Since: a\r\nIf-Unmodified-Since: b\r\n\r\n",
     .status = 400},
    {"repeated Date differs", "GET / HTTP/1.1\r\nHost: a\r\nDate: a\r\nDate: b\r\n\r\n",
     .status = 400},
    {"repeated From differs", "GET / HTTP/1.1\r\nHost: a\r\nFrom: a\r\nFrom: b\r\n\r\n",
     .status = 400},
    {"repeated Max-Forwards differs",
     "GET / HTTP/1.1\r\nHost: a\r\nMax-Forwards: 1\r\nMax-Forwards: 2\r\n\r\n", .status = 400},
    {"repeated Content-Location differs",
     "PUT / HTTP/1.1\r\nHost: a\r\nContent-Location: a\r\nContent-Location: b\r\n\r\n",
     .status = 400},
    {"repeated Content-Range differs",
     "PUT / HTTP/1.1\r\nHost: a\r\nContent-Range: a\r\nContent-Range: b\r\n\r\n", .status = 400},
    {"repeated Cookie is a list", "GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
     .headers = "Host=a|Cookie=a=1|Cookie=b=2"},
    {"singleton near misses are lists",
     "GET / HTTP/1.1\r\nHost: a\r\nContent-Typf: a\r\nContent-Typf: b\r\nDatf: a\r\nDatf: b\r\n"
     "\r\n",
     .headers = "Host=a|Content-Typf=a|Content-Typf=b|Datf=a|Datf=b"},
    {"Host IPv6 literal and port", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
     .headers = "Host=[::1]:8080"},
    {"empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", .headers = "Host="},
    {"names are case-insensitive", "POST / HTTP/1.1\r\nHOST: a\r\ncontent-LENGTH: 0\r\n\r\n",
     .sem = "cl=0 chunked=0 keep_alive=1 expect=0"},
    {"Content-Length leading zeros", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n",
     .sem = "cl=7 chunked=0 keep_alive=1 expect=0"},
    {"Content-Length INT64_MAX",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n",
     .sem = "cl=9223372036854775807 chunked=0 keep_alive=1 expect=0"},
    {"Content-Length OWS", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\t12 \r\n\r\n",
     .sem = "cl=12 chunked=0 keep_alive=1 expect=0"},
    {"Content-Length at max_body", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n",
     .lim = &lim_body_10, .sem = "cl=10 chunked=0 keep_alive=1 expect=0"},
    {"similar names are not special",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Lengthx: x\r\nTransfer-Encodin: x\r\nHosts: x y\r\n"
     "\r\n",
     .sem = "cl=-1 chunked=0 keep_alive=1 expect=0"},
    {"same-length near misses are not special",
     "POST / HTTP/1.1\r\nHost: a\r\nHosu: x y\r\nContent_Length: x\r\nContent-Lengtj: x\r\n"
     "Transfer-Encodinf: x\r\nConnectioo: close\r\nExpecu: 100-continue\r\n\r\n",
     .sem = "cl=-1 chunked=0 keep_alive=1 expect=0"},
    {"near-miss values are not special",
     "GET / HTTP/1.0\r\nConnection: keep_alive, closf, keep-alivf\r\nExpect: 100-continuf\r\n"
     "\r\n",
     .sem = "cl=-1 chunked=0 keep_alive=0 expect=0"},
    {"upper-case names and values",
     "PUT / HTTP/1.1\r\nHOST: a\r\nCONNECTION: CLOSE\r\nEXPECT: 100-CONTINUE\r\n"
     "TRANSFER-ENCODING: CHUNKED\r\n\r\n",
     .sem = "cl=-1 chunked=1 keep_alive=0 expect=1"},
    {"max_headers fields exactly", "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n",
     .lim = &lim_headers_2, .headers = "Host=a|X=1"},
    {"head of exactly max_head", REQ40, .lim = &lim_head_40},
    {"head one byte under max_head", REQ40, .lim = &lim_head_41},
    {"max_head counts only the head", REQ40 "GET / HTTP/1.1\r\n", .head_len = 40,
     .lim = &lim_head_40},

    /* ---- 400: request line ---- */
    {"bare LF ends request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", .status = 400},
    {"bare CR ends request line", "GET / HTTP/1.1\rHost: a\r\n\r\n", .status = 400},
    {"CR CR LF", "GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", .status = 400},
    {"bare LF before request line", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"bare CR before request line", "\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"SP before method", " GET / HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"two SP after method", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"HTAB after method", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"two SP before version", "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"SP after version", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", .status = 400},
    {"no version", "GET /\r\nHost: a\r\n\r\n", .status = 400},
    {"method only", "GET\r\n\r\n", .status = 400},
    {"non-token method", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"lowercase HTTP-name", "GET / http/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"version junk", "GET / HTTP/1.1x\r\nHost: a\r\n\r\n", .status = 400},
    {"version without minor", "GET / HTTP/1\r\nHost: a\r\n\r\n", .status = 400},
    {"version two-digit major", "GET / HTTP/11.1\r\nHost: a\r\n\r\n", .status = 400},
    {"version without dot", "GET / HTTP/1.\r\nHost: a\r\n\r\n", .status = 400},
    {"DEL in target", "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"CTL in target", "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"NUL in target", "GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n", 30, .status = 400},
    {"HTAB in target", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", .status = 400},
    {"NUL in method", "G\0T / HTTP/1.1\r\nHost: a\r\n\r\n", 27, .status = 400},
    {"505 needs a well-formed line", "GET / HTTP/2.0x\r\n", .status = 400},

    /* ---- 400: header fields ---- */
    {"SP before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", .status = 400},
    {"HTAB before colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", .status = 400},
    {"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", .status = 400},
    {"obs-fold with HTAB", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", .status = 400},
    {"whitespace after request line", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", .status = 400},
    {"empty name", "GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", .status = 400},
    {"no colon", "GET / HTTP/1.1\r\nHost a\r\n\r\n", .status = 400},
    {"name only", "GET / HTTP/1.1\r\nHost\r\n\r\n", .status = 400},
    {"non-token name", "GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", .status = 400},
    {"obs-text in name", "GET / HTTP/1.1\r\nH\xe9: a\r\nHost: a\r\n\r\n", .status = 400},
    {"bare LF ends field", "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", .status = 400},
    {"bare LF ends head", "GET / HTTP/1.1\r\nHost: a\r\n\n", .status = 400},
    {"bare LF only", "GET / HTTP/1.1\nHost: a\n\n", .status = 400},
    {"bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", .status = 400},
    {"bare CR ends head", "GET / HTTP/1.1\r\nHost: a\r\n\rX", .status = 400},
    {"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 35, .status = 400},
    {"DEL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", .status = 400},
    {"CTL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: \x1b[0m\r\n\r\n", .status = 400},

    /* ---- 400: Content-Length (RFC 9112 §6.3) ---- */
    {"CL negative", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", .status = 400},
    {"CL plus sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", .status = 400},
    {"CL inner space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", .status = 400},
    {"CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", .status = 400},
    {"CL list no space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5\r\n\r\n",
     .status = 400},
    {"CL hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", .status = 400},
    {"CL letters", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1a\r\n\r\n", .status = 400},
    {"CL empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", .status = 400},
    {"CL only OWS", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  \r\n\r\n", .status = 400},
    {"CL overflow int64",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", .status = 400},
    {"CL overflow uint64",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
     .status = 400},
    {"CL twice equal",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello",
     .status = 400},
    {"CL twice different",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", .status = 400},
    {"CL then TE",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
     .status = 400},
    {"TE then CL",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
     .status = 400},
    {"CL then empty TE",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding:\r\n\r\nG",
     .status = 400},
    {"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", .status = 400},

    /* ---- 400: Host (RFC 9112 §3.2) ---- */
    {"HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX: a\r\n\r\n", .status = 400},
    {"two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", .status = 400},
    {"two Host fields in 1.0", "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", .status = 400},
    {"Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", .status = 400},
    {"Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", .status = 400},
    {"Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", .status = 400},
    {"Host with obs-text", "GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n", .status = 400},

    /* ---- 413, 414, 431 ---- */
    {"CL above max_body", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n",
     .lim = &lim_body_10, .status = 413},
    {"head one byte over max_head", REQ40, .lim = &lim_head_39, .status = 431},
    {"head far over max_head", REQ40, .lim = &lim_head_20, .status = 431},
    {"request line over max_head", "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
     .lim = &lim_head_20, .status = 414},
    {"request line ends at max_head", "GET /aaaa HTTP/1.1\r\nHost: a\r\n\r\n", .lim = &lim_head_20,
     .status = 431},
    {"request line one over max_head", "GET /aaaaa HTTP/1.1\r\nHost: a\r\n\r\n",
     .lim = &lim_head_20, .status = 414},
    {"empty lines count toward max_head", "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET /",
     .lim = &lim_head_20, .status = 414},
    {"too many fields", "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nY: 2\r\n\r\n", .lim = &lim_headers_2,
     .status = 431},

    /* ---- 501: transfer codings ---- */
    {"TE gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", .status = 501},
    {"TE gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
     .status = 501},
    {"TE chunked, chunked",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", .status = 501},
    {"TE identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
     .status = 501},
    {"TE with parameter", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
     .status = 501},
    {"TE empty", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", .status = 501},
    {"TE near miss", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkee\r\n\r\n",
     .status = 501},
    {"TE chunkedx", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx\r\n\r\n",
     .status = 501},
    {"TE twice",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
     "\r\n",
     .status = 501},

    /* ---- 505 ---- */
    {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", .status = 505},
    {"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", .status = 505},
    {"HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", .status = 505},
    {"505 before header errors", "GET / HTTP/3.1\r\nHost : a\r\n\r\n", .status = 505},
};

/* ---- helpers ---- */

/* A small string builder; bytes outside printable ASCII are written as \xNN. */
struct sb {
    char s[4096];
    size_t n;
};

static void sb_add(struct sb *b, const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        int w;
        if (c >= 0x20 && c < 0x7f)
            w = snprintf(b->s + b->n, sizeof(b->s) - b->n, "%c", c);
        else
            w = snprintf(b->s + b->n, sizeof(b->s) - b->n, "\\x%02x", c);
        assert_true(w > 0 && (size_t)w < sizeof(b->s) - b->n);
        b->n += (size_t)w;
    }
}

static void sb_str(struct sb *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void check_line(const struct request *r, const char *want)
{
    struct sb b = {.n = 0};
    char minor[8];
    sb_add(&b, r->method, r->method_len);
    sb_str(&b, " ");
    sb_add(&b, r->target, r->target_len);
    sb_str(&b, " path=");
    sb_add(&b, r->path, r->path_len);
    sb_str(&b, " query=");
    sb_add(&b, r->query, r->query_len);
    snprintf(minor, sizeof(minor), " 1.%d", r->minor_version);
    sb_str(&b, minor);
    assert_string_equal(b.s, want);
}

static void check_form(const struct request *r, const char *want)
{
    static const char *const names[] = {"origin", "absolute", "asterisk"};
    struct sb b = {.n = 0};
    sb_str(&b, names[r->form]);
    sb_str(&b, " authority=");
    if (r->authority) sb_add(&b, r->authority, r->authority_len);
    sb_str(&b, " userinfo=");
    if (r->userinfo) sb_add(&b, r->userinfo, r->userinfo_len);
    assert_string_equal(b.s, want);
}

static void check_sem(const struct request *r, const char *want)
{
    char got[128];
    snprintf(got, sizeof(got), "cl=%lld chunked=%d keep_alive=%d expect=%d",
             (long long)r->content_length, r->chunked, r->keep_alive, r->expect_continue);
    assert_string_equal(got, want);
}

static void check_headers(const struct request *r, const char *want)
{
    struct sb b = {.n = 0};
    for (size_t i = 0; i < r->num_headers; i++) {
        if (i) sb_str(&b, "|");
        sb_add(&b, r->headers[i].name, r->headers[i].name_len);
        sb_str(&b, "=");
        sb_add(&b, r->headers[i].value, r->headers[i].value_len);
    }
    b.s[b.n] = '\0';
    assert_string_equal(b.s, want);
}

static bool view_in(const char *v, size_t n, const char *buf, size_t len)
{
    return v >= buf && v + n <= buf + len;
}

/* Every view of a successful parse lies inside the head. */
static void check_views_inside(const struct request *r, const char *buf, size_t head)
{
    assert_true(view_in(r->method, r->method_len, buf, head));
    assert_true(view_in(r->target, r->target_len, buf, head));
    assert_true(view_in(r->path, r->path_len, buf, head));
    assert_true(view_in(r->query, r->query_len, buf, head));
    assert_true(r->path >= r->target && r->path + r->path_len <= r->target + r->target_len);
    if (r->authority)
        assert_true(view_in(r->authority, r->authority_len, r->target, r->target_len));
    if (r->userinfo) assert_true(view_in(r->userinfo, r->userinfo_len, r->target, r->target_len));
    assert_int_equal(r->form == REQUEST_FORM_ABSOLUTE, r->authority != NULL);
    for (size_t i = 0; i < r->num_headers; i++) {
        const struct http_header *h = &r->headers[i];
        assert_true(view_in(h->name, h->name_len, buf, head));
        assert_true(view_in(h->value, h->value_len, buf, head));
    }
}

/* Parses in[0, len) from just before a guard page; 'end' is the guard page. */
static int parse_at(char *end, const char *in, size_t len, struct request *r, struct http_header *h,
                    const struct http_limits *lim, int *status)
{
    memcpy(end - len, in, len);
    *status = 0;
    return http_parse_request(end - len, len, r, h, lim, status);
}

/* Each prefix parses as PARSE_INCOMPLETE, as the same error as the whole input, or (once it
 * holds the whole head) as the same head; an error, once reported, stays. */
static void check_head_splits(char *end, const char *in, size_t len, const struct http_limits *lim,
                              int whole_rc, int whole_status)
{
    struct request r;
    struct http_header h[MAX_HEADERS];
    bool errored = false;
    for (size_t k = 0; k < len; k++) {
        int status;
        int rc = parse_at(end, in, k, &r, h, lim, &status);
        if (whole_rc > 0 && k >= (size_t)whole_rc) {
            assert_int_equal(rc, whole_rc);
        } else if (rc == PARSE_ERROR) {
            assert_int_equal(whole_rc, PARSE_ERROR);
            assert_int_equal(status, whole_status);
            errored = true;
        } else {
            assert_false(errored);
            assert_int_equal(rc, PARSE_INCOMPLETE);
        }
    }
}

static void test_head_case(void **state)
{
    const struct head_case *c = *state;
    size_t len = c->input_len ? c->input_len : strlen(c->input);
    const struct http_limits *lim = c->lim ? c->lim : &lim_default;
    struct guard g;
    char *end = guard_copy(&g, c->input, len) + len;
    struct request r;
    struct http_header h[MAX_HEADERS];
    int status;

    int rc = parse_at(end, c->input, len, &r, h, lim, &status);
    if (c->status) {
        assert_int_equal(rc, PARSE_ERROR);
        assert_int_equal(status, c->status);
    } else {
        assert_int_equal(rc, c->head_len ? c->head_len : len);
        check_views_inside(&r, end - len, (size_t)rc);
        if (c->line) check_line(&r, c->line);
        if (c->sem) check_sem(&r, c->sem);
        if (c->headers) check_headers(&r, c->headers);
        if (c->form) check_form(&r, c->form);
    }
    check_head_splits(end, c->input, len, lim, rc, status);
    guard_free(&g);
}

/* ---- chunked decoder ---- */

struct chunk_case {
    const char *name;
    const char *input;
    size_t input_len; /* 0: strlen(input) */
    int result;       /* HTTP_CHUNK_DONE, PARSE_ERROR, or PARSE_INCOMPLETE at the end */
    const char *body; /* the decoded bytes (for any result) */
    size_t body_len;  /* 0: strlen(body) */
    size_t end;       /* raw bytes consumed in all; 0: the whole input */
};

static struct chunk_case chunk_cases[] = {
    {"one chunk", "5\r\nhello\r\n0\r\n\r\n", .result = HTTP_CHUNK_DONE, .body = "hello"},
    {"two chunks", "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n", .result = HTTP_CHUNK_DONE,
     .body = "abcdefg"},
    {"empty body", "0\r\n\r\n", .result = HTTP_CHUNK_DONE, .body = ""},
    {"hex sizes", "A\r\n0123456789\r\nb\r\nabcdefghijk\r\n0\r\n\r\n", .result = HTTP_CHUNK_DONE,
     .body = "0123456789abcdefghijk"},
    {"leading zeros", "0005\r\nhello\r\n000\r\n\r\n", .result = HTTP_CHUNK_DONE, .body = "hello"},
    {"CRLF inside data", "4\r\n\r\n\r\n\r\n0\r\n\r\n", .result = HTTP_CHUNK_DONE,
     .body = "\r\n\r\n"},
    {"binary data", "3\r\n\0\xff\n\r\n0\r\n\r\n", 13, HTTP_CHUNK_DONE, "\0\xff\n", 3},
    {"bytes after the end", "1\r\na\r\n0\r\n\r\nGET / HTTP/1.1\r\n", .result = HTTP_CHUNK_DONE,
     .body = "a", .end = 11},
    {"extension name", "5;a\r\nhello\r\n0\r\n\r\n", .result = HTTP_CHUNK_DONE, .body = "hello"},
    {"extension token value", "5;a=b\r\nhello\r\n0\r\n\r\n", .result = HTTP_CHUNK_DONE,
     .body = "hello"},
    {"extensions with BWS and quoted",
     "5 \t; a = b ;c=\"q\\\"x; y\"\t;d\r\nhello\r\n0;last=\"\"\r\n\r\n", .result = HTTP_CHUNK_DONE,
     .body = "hello"},
    {"extension obs-text in quoted", "1;a=\"\xe9\"\r\nx\r\n0\r\n\r\n", .result = HTTP_CHUNK_DONE,
     .body = "x"},
    {"trailers", "2\r\nhi\r\n0\r\nX-Sum: abc\r\nY:\r\nZ: \t v \r\n\r\n", .result = HTTP_CHUNK_DONE,
     .body = "hi"},
    {"incomplete in data", "5\r\nhel", .result = PARSE_INCOMPLETE, .body = "hel"},
    {"incomplete in size", "1f", .result = PARSE_INCOMPLETE, .body = ""},
    {"incomplete before final CRLF", "1\r\na\r\n0\r\nX: y\r\n", .result = PARSE_INCOMPLETE,
     .body = "a"},
    {"largest size", "3fffffffffffffff\r\nab", .result = PARSE_INCOMPLETE, .body = "ab"},

    {"empty size", "\r\nhello\r\n0\r\n\r\n", .result = PARSE_ERROR, .body = "", .end = 1},
    {"non-hex size", "x\r\n", .result = PARSE_ERROR, .body = "", .end = 1},
    {"0x prefix", "0x10\r\n", .result = PARSE_ERROR, .body = "", .end = 2},
    {"plus sign", "+5\r\nhello\r\n", .result = PARSE_ERROR, .body = "", .end = 1},
    {"minus sign", "-5\r\nhello\r\n", .result = PARSE_ERROR, .body = "", .end = 1},
    {"leading space", " 5\r\nhello\r\n", .result = PARSE_ERROR, .body = "", .end = 1},
    {"trailing space", "5 \r\nhello\r\n", .result = PARSE_ERROR, .body = "", .end = 3},
    {"garbage after size", "5x\r\nhello\r\n", .result = PARSE_ERROR, .body = "", .end = 2},
    {"size overflow", "4000000000000000\r\n", .result = PARSE_ERROR, .body = "", .end = 16},
    {"size overflow long", "10000000000000000000\r\n", .result = PARSE_ERROR, .body = "",
     .end = 17},
    {"bare LF after size", "5\nhello\r\n", .result = PARSE_ERROR, .body = "", .end = 2},
    {"bare CR after size", "5\rhello\r\n", .result = PARSE_ERROR, .body = "", .end = 3},
    {"empty extension", "5;\r\nhello\r\n", .result = PARSE_ERROR, .body = "", .end = 3},
    {"extension name then SP then name", "5;a b\r\n", .result = PARSE_ERROR, .body = "", .end = 5},
    {"extension empty value", "5;a=\r\n", .result = PARSE_ERROR, .body = "", .end = 5},
    {"extension BWS before CRLF", "5;a=b \r\n", .result = PARSE_ERROR, .body = "", .end = 7},
    {"bare CR in extension name", "5;a\rb\r\nhello\r\n", .result = PARSE_ERROR, .body = "",
     .end = 5},
    {"bare CR in extension value", "5;a=b\rc\r\n", .result = PARSE_ERROR, .body = "", .end = 7},
    {"bare LF in extension", "5;a\nhello\r\n", .result = PARSE_ERROR, .body = "", .end = 4},
    {"CR in quoted extension", "5;a=\"x\rb\"\r\n", .result = PARSE_ERROR, .body = "", .end = 7},
    {"CTL in quoted extension", "5;a=\"x\x01\"\r\n", .result = PARSE_ERROR, .body = "", .end = 7},
    {"NUL in extension", "5;a\0\r\n", 6, PARSE_ERROR, "", .end = 4},
    {"non-token extension", "5;a@b\r\n", .result = PARSE_ERROR, .body = "", .end = 4},
    {"data too long", "5\r\nhelloX\r\n0\r\n\r\n", .result = PARSE_ERROR, .body = "hello", .end = 9},
    {"data too short", "5\r\nhell\r\n0\r\n\r\n", .result = PARSE_ERROR, .body = "hell\r", .end = 9},
    {"bare LF after data", "5\r\nhello\n0\r\n\r\n", .result = PARSE_ERROR, .body = "hello",
     .end = 9},
    {"bare CR after data", "5\r\nhello\r0\r\n\r\n", .result = PARSE_ERROR, .body = "hello",
     .end = 10},
    {"trailer obs-fold", "0\r\nX: a\r\n b\r\n\r\n", .result = PARSE_ERROR, .body = "", .end = 10},
    {"trailer SP before colon", "0\r\nX : a\r\n\r\n", .result = PARSE_ERROR, .body = "", .end = 5},
    {"trailer no colon", "0\r\nX\r\n\r\n", .result = PARSE_ERROR, .body = "", .end = 5},
    {"trailer empty name", "0\r\n: a\r\n\r\n", .result = PARSE_ERROR, .body = "", .end = 4},
    {"trailer bare LF", "0\r\nX: a\n\r\n", .result = PARSE_ERROR, .body = "", .end = 8},
    {"trailer bare CR", "0\r\nX: a\rb\r\n\r\n", .result = PARSE_ERROR, .body = "", .end = 9},
    {"trailer NUL", "0\r\nX: a\0\r\n\r\n", 12, PARSE_ERROR, "", .end = 8},
    {"final bare LF", "0\r\n\n", .result = PARSE_ERROR, .body = "", .end = 4},
    {"final CR then junk", "0\r\n\rX", .result = PARSE_ERROR, .body = "", .end = 5},
};

/* What a decode run produced. */
struct decoded {
    int result;
    char *body; /* malloc'd, as long as the input */
    size_t body_len;
    size_t consumed; /* raw bytes consumed in all */
};

/* Decodes in[0, len) delivered in pieces ending at cuts[0] < cuts[1] < ... = len. Each call
 * sees the unconsumed bytes received so far, just before a guard page. */
static void decode_pieces(char *gend, const char *in, const size_t *cuts, size_t ncuts,
                          struct decoded *out)
{
    struct http_chunked d;
    http_chunked_init(&d);
    size_t off = 0;
    size_t cut = 0;
    out->body_len = 0;
    for (;;) {
        size_t avail = cuts[cut];
        size_t used;
        const char *data;
        size_t dlen;
        char *win = gend - (avail - off);
        memcpy(win, in + off, avail - off);
        int rc = http_chunked_decode(&d, win, avail - off, &used, &data, &dlen);
        assert_true(used <= avail - off);
        off += used;
        if (rc == HTTP_CHUNK_DATA) {
            assert_true(dlen > 0 && data >= win && data + dlen <= win + used);
            memcpy(out->body + out->body_len, data, dlen);
            out->body_len += dlen;
            continue;
        }
        if (rc == PARSE_INCOMPLETE) {
            assert_int_equal(off, avail); /* an incomplete line is consumed into the state */
            if (++cut < ncuts) continue;
        }
        out->result = rc;
        out->consumed = off;
        return;
    }
}

static void check_decoded(const struct decoded *got, const struct chunk_case *c, size_t len)
{
    size_t body_len = c->body_len ? c->body_len : strlen(c->body);
    assert_int_equal(got->result, c->result);
    assert_int_equal(got->body_len, body_len);
    assert_memory_equal(got->body, c->body, body_len);
    assert_int_equal(got->consumed, c->end ? c->end : len);
}

static void test_chunk_case(void **state)
{
    const struct chunk_case *c = *state;
    size_t len = c->input_len ? c->input_len : strlen(c->input);
    struct guard g;
    char *gend = guard_copy(&g, c->input, len) + len;
    size_t *cuts = calloc(len + 1, sizeof(*cuts));
    struct decoded got = {.body = malloc(len + 1)};
    assert_non_null(cuts);
    assert_non_null(got.body);

    size_t whole[1] = {len};
    decode_pieces(gend, c->input, whole, 1, &got);
    check_decoded(&got, c, len);
    for (size_t k = 1; k < len; k++) { /* split in two at every position */
        size_t two[2] = {k, len};
        decode_pieces(gend, c->input, two, 2, &got);
        check_decoded(&got, c, len);
    }
    for (size_t k = 0; k < len; k++) /* one byte at a time */
        cuts[k] = k + 1;
    if (len) decode_pieces(gend, c->input, cuts, len, &got);
    check_decoded(&got, c, len);

    free(got.body);
    free(cuts);
    guard_free(&g);
}

/* Runs a generated chunk case (for inputs too long for the table). */
static void run_chunk(const char *input, size_t len, int result, const char *body, size_t end)
{
    struct chunk_case c = {"generated", input, len, result, body, 0, end};
    void *state = &c;
    test_chunk_case(&state);
}

/* A size line with extensions is limited to 4096 bytes plus CRLF. */
static void test_chunk_line_limit(void **state)
{
    (void)state;
    char in[4200];
    size_t n = 0;
    memcpy(in, "1;", 2);
    memset(in + 2, 'a', 4094); /* the line is "1;aaa..." of exactly 4096 bytes */
    n = 4096;
    memcpy(in + n, "\r\nx\r\n0\r\n\r\n", 10);
    run_chunk(in, n + 10, HTTP_CHUNK_DONE, "x", 0);
    in[n] = 'a'; /* now 4097 bytes: the 4097th byte fails */
    memcpy(in + n + 1, "\r\nx\r\n0\r\n\r\n", 10);
    run_chunk(in, n + 11, PARSE_ERROR, "", 4097);
}

/* A trailer line is limited to 4096 bytes plus CRLF, the whole section to 8192 bytes. */
static void test_chunk_trailer_limits(void **state)
{
    (void)state;
    static char in[16384];
    memcpy(in, "0\r\nX:", 5);
    memset(in + 5, 'v', 4094); /* "X:" + 4094 bytes = a 4096-byte line */
    memcpy(in + 4099, "\r\n\r\n", 4);
    run_chunk(in, 4103, HTTP_CHUNK_DONE, "", 0);
    memcpy(in + 4099, "v\r\n\r\n", 5);
    run_chunk(in, 4104, PARSE_ERROR, "", 4100);

    /* Two 4096-byte lines = 8196 bytes with their CRLFs: over the 8192-byte section. */
    memcpy(in + 4099, "\r\nY:", 4);
    memset(in + 4103, 'v', 4094);
    memcpy(in + 8197, "\r\n\r\n", 4);
    run_chunk(in, 8201, PARSE_ERROR, "", 3 + 8193);
    /* 8190 bytes of trailer lines plus the final CRLF: exactly 8192 bytes. */
    memcpy(in + 8197 - 6, "\r\n\r\n", 4);
    run_chunk(in, 8195, HTTP_CHUNK_DONE, "", 0);
}

/* A finished or failed decoder stays so, consuming nothing. */
static void test_chunk_sticky(void **state)
{
    (void)state;
    struct http_chunked d;
    size_t used;
    const char *data;
    size_t dlen;
    http_chunked_init(&d);
    assert_int_equal(http_chunked_decode(&d, "0\r\n\r\n", 5, &used, &data, &dlen), HTTP_CHUNK_DONE);
    assert_int_equal(used, 5);
    assert_int_equal(http_chunked_decode(&d, "1\r\n", 3, &used, &data, &dlen), HTTP_CHUNK_DONE);
    assert_int_equal(used, 0);
    http_chunked_init(&d);
    assert_int_equal(http_chunked_decode(&d, "z", 1, &used, &data, &dlen), PARSE_ERROR);
    assert_int_equal(http_chunked_decode(&d, "0\r\n\r\n", 5, &used, &data, &dlen), PARSE_ERROR);
    assert_int_equal(used, 0);
    /* A zeroed struct is a fresh decoder too. */
    memset(&d, 0, sizeof(d));
    assert_int_equal(http_chunked_decode(&d, "1\r\nz", 4, &used, &data, &dlen), HTTP_CHUNK_DATA);
    assert_int_equal(dlen, 1);
    assert_int_equal(*data, 'z');
    assert_int_equal(http_chunked_decode(&d, "", 0, &used, &data, &dlen), PARSE_INCOMPLETE);
}

/* Parses a generated head and checks the result and the every-split property. */
static void run_head(const char *input, size_t len, const struct http_limits *lim, int status)
{
    struct head_case c = {"generated", input, len, status, 0, lim, NULL, NULL, NULL};
    void *state = &c;
    test_head_case(&state);
}

/* max_head boundaries on a long head: exactly at the limit, one byte over. */
static void test_head_limit_boundary(void **state)
{
    (void)state;
    static char in[5000];
    size_t n = (size_t)snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\nX: ");
    memset(in + n, 'v', 4000);
    n += 4000;
    memcpy(in + n, "\r\n\r\n", 4);
    n += 4;
    struct http_limits lim = {.max_head = n, .max_headers = MAX_HEADERS};
    run_head(in, n, &lim, 0);
    lim.max_head = n - 1;
    run_head(in, n, &lim, 431);
    lim.max_head = n + 1;
    run_head(in, n, &lim, 0);
}

/* A request line too long for max_head is 414 even when the head would end later. */
static void test_head_long_target(void **state)
{
    (void)state;
    static char in[5000];
    size_t n = (size_t)snprintf(in, sizeof(in), "GET /");
    memset(in + n, 'a', 4090);
    n += 4090;
    n += (size_t)snprintf(in + n, sizeof(in) - n, " HTTP/1.1\r\nHost: a\r\n\r\n");
    struct http_limits lim = {.max_head = 4096, .max_headers = MAX_HEADERS};
    run_head(in, n, &lim, 414);
    lim.max_head = n;
    run_head(in, n, &lim, 0);
}

/* max_headers fields fill the caller's array exactly. */
static void test_head_max_headers(void **state)
{
    (void)state;
    char in[512];
    size_t n = (size_t)snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 1; i < MAX_HEADERS; i++)
        n += (size_t)snprintf(in + n, sizeof(in) - n, "X-%d: %d\r\n", i, i);
    memcpy(in + n, "\r\n", 2);
    run_head(in, n + 2, &lim_default, 0);
    n += (size_t)snprintf(in + n, sizeof(in) - n, "X-Last: 1\r\n\r\n");
    run_head(in, n, &lim_default, 431);
}

/* Parsing an empty buffer needs more bytes; nothing is read from it. */
static void test_head_empty(void **state)
{
    (void)state;
    struct guard g;
    char *end = guard_copy(&g, "", 0);
    struct request r;
    struct http_header h[MAX_HEADERS];
    int status = 0;
    assert_int_equal(http_parse_request(end, 0, &r, h, &lim_default, &status), PARSE_INCOMPLETE);
    guard_free(&g);
}

/*
 * http_parse_content_length(): 1*DIGIT up to INT64_MAX is the value; empty, a sign, spaces, a
 * list, hex or one past INT64_MAX is -1. Each input ends at a guard page, so a read past it
 * crashes.
 */
static void test_content_length(void **state)
{
    static const struct {
        const char *in;
        int64_t want;
    } cases[] = {
        {"", -1},
        {"0", 0},
        {"7", 7},
        {"007", 7},
        {"123", 123},
        {"9223372036854775807", INT64_MAX},
        {"09223372036854775807", INT64_MAX},
        {"9223372036854775808", -1},
        {"9223372036854775810", -1},
        {"18446744073709551616", -1},
        {"99999999999999999999", -1},
        {"+1", -1},
        {"-1", -1},
        {"-0", -1},
        {"1 ", -1},
        {" 1", -1},
        {"1,1", -1},
        {"1, 1", -1},
        {"0x10", -1},
        {"1a", -1},
        {"1/", -1}, /* the bytes either side of the digits */
        {"1:", -1},
    };
    (void)state;

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct guard g;
        size_t n = strlen(cases[i].in);
        char *p = guard_copy(&g, cases[i].in, n);
        int64_t got = http_parse_content_length(p, n);
        guard_free(&g);
        if (got != cases[i].want) {
            print_error("\"%s\": %lld, want %lld\n", cases[i].in, (long long)got,
                        (long long)cases[i].want);
            fail();
        }
    }
}

/* Only p[0, n) counts: digits after n are not read, and n = 0 is empty even with digits. */
static void test_content_length_bounded(void **state)
{
    (void)state;
    assert_int_equal(http_parse_content_length("12345", 2), 12);
    assert_int_equal(http_parse_content_length("12345", 0), -1);
    assert_int_equal(http_parse_content_length("5x", 1), 5);
    assert_int_equal(http_parse_content_length("92233720368547758070", 19), INT64_MAX);
}

/* The singleton list wsgi.c and the uwsgi adapter share with the parser. */
static void test_field_is_singleton(void **state)
{
    static const char *const yes[] = {
        "Host",
        "content-length",
        "Authorization",
        "PROXY-AUTHORIZATION",
        "Content-Type",
        "Content-Location",
        "Content-Range",
        "Date",
        "From",
        "If-Modified-Since",
        "If-Unmodified-Since",
        "If-Range",
        "Max-Forwards",
        "Range",
        "Referer",
        "User-Agent",
    };
    static const char *const no[] = {
        "Cookie", "Accept",     "X-Forwarded-For",   "Forwarded",
        "Expect", "Connection", "Transfer-Encoding", "Hosts",
        "Dat",    "User_Agent", "Content-Typ",       "Via",
        "",
    };
    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(yes); i++)
        assert_true(http_field_is_singleton(yes[i], strlen(yes[i])));
    for (size_t i = 0; i < ARRAY_SIZE(no); i++)
        assert_false(http_field_is_singleton(no[i], strlen(no[i])));
}

int main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_chunk_line_limit),
        cmocka_unit_test(test_chunk_trailer_limits),
        cmocka_unit_test(test_chunk_sticky),
        cmocka_unit_test(test_head_limit_boundary),
        cmocka_unit_test(test_head_long_target),
        cmocka_unit_test(test_head_max_headers),
        cmocka_unit_test(test_head_empty),
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_content_length_bounded),
        cmocka_unit_test(test_field_is_singleton),
    };
    static struct CMUnitTest
        tests[ARRAY_SIZE(head_cases) + ARRAY_SIZE(chunk_cases) + ARRAY_SIZE(fixed)];
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(head_cases); i++)
        tests[n++] = (struct CMUnitTest){.name = head_cases[i].name,
                                         .test_func = test_head_case,
                                         .initial_state = &head_cases[i]};
    for (size_t i = 0; i < ARRAY_SIZE(chunk_cases); i++)
        tests[n++] = (struct CMUnitTest){.name = chunk_cases[i].name,
                                         .test_func = test_chunk_case,
                                         .initial_state = &chunk_cases[i]};
    for (size_t i = 0; i < ARRAY_SIZE(fixed); i++)
        tests[n++] = fixed[i];
    return _cmocka_run_group_tests("http_parser", tests, n, NULL, NULL);
}
