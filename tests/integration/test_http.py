"""
test_http.py - HTTP/1.1 semantics over raw sockets: keep-alive, pipelining, chunked request
bodies, Expect: 100-continue, HEAD, response framing, Connection handling, every error status
(each followed by a clean close), large bodies and the two timeouts.
"""
import json
import socket
import threading

import pytest

import helpers
from helpers import build_request, chunked, pattern_bytes, sha256

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def echo_srv(corral_module):
    """A shared echo.py server for tests that leave no state behind."""
    return corral_module(app="echo.py")


@pytest.fixture(scope="module")
def routes_srv(corral_module):
    return corral_module(app="routes.py")


# --- keep-alive and pipelining ------------------------------------------------------------------

def test_keepalive_100_requests(routes_srv):
    srv = routes_srv
    with srv.raw() as c:
        pids = set()
        for i in range(100):
            r = c.request("GET", "/pid")
            assert r.status == 200, "request %d: %r" % (i, r)
            pids.add(r.body)
        assert len(pids) == 1  # one connection, one worker
        r = c.request("GET", "/hello")
        assert r.body == b"hello"


def test_keepalive_mixed_methods_and_bodies(echo_srv):
    srv = echo_srv
    with srv.raw() as c:
        for i in range(30):
            body = pattern_bytes(i * 997, seed=i)
            r = c.request("POST", "/?mode=read", body)
            assert r.status == 200 and r.body == body, i
            r = c.request("GET", "/?mode=read")
            assert r.status == 200 and r.body == b""


def test_pipelining_responses_in_order(corral):
    srv = corral(app="environ.py")
    reqs = [build_request("GET", "/p0"),
            build_request("POST", "/p1", b"body-one"),
            build_request("HEAD", "/p2"),
            build_request("POST", "/p3", b"", {"Transfer-Encoding": "chunked"})
            + chunked(b"chunked-body-three", [5]),
            build_request("GET", "/p4?last=1")]
    with srv.raw() as c:
        c.send(b"".join(reqs))
        for i in range(5):
            r = c.read_response("HEAD" if i == 2 else "GET")
            assert r.status == 200, (i, r)
            if i == 2:
                assert r.body == b""
                continue
            out = json.loads(r.body)
            assert out["env"]["PATH_INFO"] == "/p%d" % i
            assert out["body"] == {1: "body-one", 3: "chunked-body-three"}.get(i, "")
        assert c.request("GET", "/after").status == 200


def test_pipelining_byte_by_byte(echo_srv):
    """Two requests trickled in tiny pieces still parse (the every-split property, live)."""
    srv = echo_srv
    data = build_request("POST", "/?mode=read", b"abcdef") + build_request("GET", "/?mode=read")
    with srv.raw() as c:
        for i in range(0, len(data), 3):
            c.send(data[i:i + 3])
        r1, r2 = c.read_response(), c.read_response()
    assert (r1.status, r1.body, r2.status, r2.body) == (200, b"abcdef", 200, b"")


# --- chunked request bodies ---------------------------------------------------------------------

@pytest.mark.parametrize("sizes,ext", [
    ([1], b""),
    ([7, 3, 1000], b""),
    ([4096], b";name=value"),
    ([100000], b";flag"),
    ([10, 20], b';q="quoted value"'),
    ([65536, 1], b";a=1;b=2"),
])
def test_chunked_request_body(echo_srv, sizes, ext):
    srv = echo_srv
    body = pattern_bytes(3001 if max(sizes) == 1 else 150001, seed=len(sizes))
    with srv.raw() as c:
        c.send(build_request("POST", "/?mode=read", b"", {"Transfer-Encoding": "chunked"})
               + chunked(body, sizes, ext))
        r = c.read_response()
        assert r.status == 200
        assert r.header("x-body-sha256") == sha256(body) and r.body == body
        assert c.request("GET", "/?mode=read").status == 200


def test_chunked_uppercase_hex_and_trailers(echo_srv):
    srv = echo_srv
    body = b"A" * 26 + b"b" * 255
    raw = (b"1A\r\n" + b"A" * 26 + b"\r\nFf\r\n" + b"b" * 255 + b"\r\n"
           b"0\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n")
    with srv.raw() as c:
        c.send(build_request("POST", "/?mode=read", b"", {"Transfer-Encoding": "chunked"}) + raw)
        r = c.read_response()
        assert r.status == 200 and r.body == body
        assert c.request("GET", "/?mode=read").status == 200


def test_chunked_transfer_encoding_is_case_insensitive(echo_srv):
    srv = echo_srv
    with srv.raw() as c:
        c.send(build_request("POST", "/?mode=read", b"", {"Transfer-Encoding": "Chunked"})
               + chunked(b"hello world", [4]))
        r = c.read_response()
    assert r.status == 200 and r.body == b"hello world"


# --- Expect: 100-continue -----------------------------------------------------------------------

def test_expect_100_continue(echo_srv):
    srv = echo_srv
    body = pattern_bytes(50000, seed=3)
    with srv.raw() as c:
        c.send(build_request("POST", "/?mode=read", b"", {"Content-Length": str(len(body)),
                                                          "Expect": "100-continue"}))
        interim = c.read_response(interim=True)  # nothing sent yet: must not block
        assert (interim.version, interim.status) == ("HTTP/1.1", 100)
        c.send(body)
        r = c.read_response()
        assert r.status == 200 and r.body == body
        # a second request on the same connection, without Expect
        assert c.request("POST", "/?mode=read", b"again").body == b"again"


def test_expect_100_continue_chunked(echo_srv):
    srv = echo_srv
    with srv.raw() as c:
        c.send(build_request("POST", "/?mode=read", b"", {"Transfer-Encoding": "chunked",
                                                          "Expect": "100-continue"}))
        assert c.read_response(interim=True).status == 100
        c.send(chunked(b"continued body", [3]))
        r = c.read_response()
    assert r.status == 200 and r.body == b"continued body"


def test_expect_100_continue_over_limit_gets_413(corral):
    srv = corral(app="echo.py", args=["--limit-post", "1000"])
    with srv.raw() as c:
        c.send(build_request("POST", "/?mode=read", b"", {"Content-Length": "5000",
                                                          "Expect": "100-continue"}))
        r = c.read_response()  # a 100 first is tolerated, the final status is not
        assert r.status == 413
        assert c.wait_closed(10) == b""


# --- response framing ---------------------------------------------------------------------------

def test_head_has_no_body(routes_srv):
    srv = routes_srv
    with srv.raw() as c:
        r = c.request("HEAD", "/hello")
        assert r.status == 200 and r.header("content-length") == "5"
        r = c.request("HEAD", "/stream?n=3")
        assert r.status == 200
        r = c.request("HEAD", "/big?n=100000")
        assert r.header("content-length") == "100000"
        # any stray body byte from the HEADs would corrupt this response
        r = c.request("GET", "/hello")
        assert r.status == 200 and r.body == b"hello"


def test_no_content_length_is_chunked_for_http11(routes_srv):
    srv = routes_srv
    with srv.raw() as c:
        r = c.request("GET", "/stream?n=20")
        assert r.framing == "chunked", r.headers
        assert r.body == b"".join(b"chunk-%d\n" % i for i in range(20))
        assert c.request("GET", "/hello").body == b"hello"  # still open


def test_no_content_length_is_close_delimited_for_http10(routes_srv):
    srv = routes_srv
    for extra in ({}, {"Connection": "keep-alive"}):
        with srv.raw() as c:
            c.send(build_request("GET", "/stream?n=20", b"", extra, "HTTP/1.0"))
            r = c.read_response()
            assert r.status == 200 and r.version in ("HTTP/1.0", "HTTP/1.1")
            assert r.header("transfer-encoding") is None
            assert r.framing == "close" and c.eof
            assert r.body == b"".join(b"chunk-%d\n" % i for i in range(20))


def test_accepted_sockets_have_nodelay(routes_srv):
    """TCP_NODELAY is set on the listener (sock_listen, for --http and --socket alike) and
    inherited by each accepted socket: no setsockopt per connection, and no Nagle delay."""
    with socket.create_connection(("127.0.0.1", routes_srv.port)) as c:
        worker = helpers.wait_for(routes_srv.workers, 10, "a worker")[0]
        s = helpers.wait_for(lambda: helpers.server_socket_of(worker, c), 10,
                             "the worker's end of the connection")
        with s:
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_connection_close_honoured(routes_srv):
    srv = routes_srv
    with srv.raw() as c:
        r = c.request("GET", "/hello", headers={"Connection": "close"})
        assert r.status == 200 and r.body == b"hello"
        assert "close" in (r.header("connection") or "").lower()
        assert c.wait_closed(10) == b""


def test_http10_keepalive(routes_srv):
    srv = routes_srv
    with srv.raw() as c:
        for _ in range(3):
            c.send(build_request("GET", "/hello", b"", {"Connection": "keep-alive"}, "HTTP/1.0"))
            r = c.read_response()
            assert r.status == 200 and r.body == b"hello"
            assert "keep-alive" in (r.header("connection") or "").lower()
    with srv.raw() as c:  # and without it, HTTP/1.0 closes
        c.send(build_request("GET", "/hello", b"", {}, "HTTP/1.0"))
        assert c.read_response().body == b"hello"
        assert c.wait_closed(10) == b""


def test_http10_without_host_is_fine(routes_srv):
    srv = routes_srv
    with srv.raw() as c:
        c.send(b"GET /hello HTTP/1.0\r\n\r\n")
        assert c.read_response().body == b"hello"


# --- errors -------------------------------------------------------------------------------------

H = b"Host: x\r\n"
CHUNKED_POST = b"POST /?mode=read HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
ERRORS = [
    ("garbage-request-line", b"GARBAGE\r\n\r\n", 400),
    ("no-version", b"GET /\r\n\r\n", 400),
    ("cl-and-te", b"POST / HTTP/1.1\r\n" + H +
     b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-and-cl", b"POST / HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("duplicate-cl", b"POST / HTTP/1.1\r\n" + H +
     b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("duplicate-cl-same", b"POST / HTTP/1.1\r\n" + H +
     b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("cl-not-a-number", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\n", 400),
    ("cl-negative", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    ("cl-plus", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    ("cl-list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!", 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\n" + H + b"X-Foo : bar\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-Foo: a\r\n  b\r\n\r\n", 400),
    ("bare-lf-in-headers", b"GET / HTTP/1.1\r\n" + b"Host: x\nX-A: b\r\n\r\n", 400),
    ("bare-lf-after-request-line", b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400),
    ("bare-cr-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", 400),
    ("missing-host-http11", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("chunk-size-not-hex", CHUNKED_POST + b"zz\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-negative", CHUNKED_POST + b"-1\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-empty", CHUNKED_POST + b"\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-overflow", CHUNKED_POST + b"1" + b"0" * 20 + b"\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-0x", CHUNKED_POST + b"0x5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-ext-bare-cr", CHUNKED_POST + b"5;a\rb\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-data-too-long", CHUNKED_POST + b"5\r\nhelloXX\r\n0\r\n\r\n", 400),
    ("te-gzip", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", 501),
    ("te-gzip-chunked", b"POST / HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("http-2.0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("http-1.2", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505),
    ("http-3.0", b"GET / HTTP/3.0\r\n" + H + b"\r\n", 505),
    ("request-line-too-long-414",
     b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("head-too-large-431", b"GET / HTTP/1.1\r\n" + H +
     b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 7000) for i in range(3)) + b"\r\n", 431),
    ("too-many-headers-431", b"GET / HTTP/1.1\r\n" + H +
     b"".join(b"h%04d:1\r\n" % i for i in range(1500)) + b"\r\n", 431),
    ("content-length-over-limit-413",
     b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 200000\r\n\r\n", 413),
    ("chunked-over-limit-413", CHUNKED_POST + chunked(b"z" * 150000, [10000]), 413),
]


@pytest.fixture(scope="module")
def strict_srv(corral_module):
    """One server for the whole error table: default --buffer-size, --limit-post 100000."""
    return corral_module(app="echo.py", args=["--limit-post", "100000"])


@pytest.mark.parametrize("raw,status", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_error_status_then_clean_close(strict_srv, raw, status):
    with strict_srv.raw(timeout=15) as c:
        try:
            c.send(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer before reading everything; the response must be there
        r = c.read_response()
        assert r.status == status, r
        assert c.wait_closed(10) == b"", "the connection must close after an error response"
    assert strict_srv.get("/?mode=read")[0] == 200, "the server keeps serving"


def test_error_after_good_request_on_same_connection(strict_srv):
    with strict_srv.raw() as c:
        assert c.request("POST", "/?mode=read", b"ok").body == b"ok"
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Foo : bar\r\n\r\n")
        assert c.read_response().status == 400
        assert c.wait_closed(10) == b""


def test_body_at_limit_is_accepted(strict_srv):
    body = pattern_bytes(100000, seed=11)
    status, headers, got = strict_srv.request("POST", "/?mode=hash", body)
    assert status == 200 and got == b"100000 " + sha256(body).encode()


# --- large bodies -------------------------------------------------------------------------------

def test_10mib_request_body(echo_srv):
    srv = echo_srv
    body = pattern_bytes(10 * MIB, seed=5)
    status, _, got = srv.request("POST", "/?mode=hash", body, timeout=120)
    assert status == 200 and got == b"%d %s" % (len(body), sha256(body).encode())


def test_10mib_chunked_request_body(echo_srv):
    srv = echo_srv
    body = pattern_bytes(10 * MIB, seed=6)
    with srv.raw(timeout=120) as c:
        data = build_request("POST", "/?mode=hash", b"", {"Transfer-Encoding": "chunked"}) + \
            chunked(body, [65536, 1000, 300000])
        sender = threading.Thread(target=c.send, args=(data,), daemon=True)
        sender.start()
        r = c.read_response()
        sender.join(60)
    assert r.status == 200 and r.body == b"%d %s" % (len(body), sha256(body).encode())


@pytest.mark.parametrize("chunk", [65536, 10 * MIB], ids=["64k-items", "one-item"])
def test_10mib_response_body(routes_srv, chunk):
    srv = routes_srv
    n = 10 * MIB
    with srv.raw(timeout=120) as c:
        r = c.request("GET", "/big?n=%d&chunk=%d" % (n, chunk))
        assert r.status == 200 and len(r.body) == n
        assert sha256(r.body) == sha256(pattern_bytes(n))
        assert c.request("GET", "/hello").body == b"hello"


def test_10mib_echo_round_trip(echo_srv):
    srv = echo_srv
    body = pattern_bytes(10 * MIB, seed=9)
    status, _, got = srv.request("POST", "/?mode=readn&n=100000", body, timeout=120)
    assert status == 200 and sha256(got) == sha256(body)


# --- timeouts (bounded polls, no timing assertions) ---------------------------------------------

def test_keepalive_idle_timeout_closes(corral):
    srv = corral(app="routes.py", args=["--http-keepalive-timeout", "1"])
    with srv.raw() as c:
        assert c.request("GET", "/hello").body == b"hello"
        assert c.wait_closed(15) == b""
    assert srv.get("/hello")[2] == b"hello"


def test_header_read_timeout_on_stalled_head(corral):
    srv = corral(app="routes.py", args=["--http-timeout", "1"])
    with srv.raw() as c:
        c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Partial: ")
        rest = c.wait_closed(15)
        assert rest.startswith(b"HTTP/1.1 408"), rest[:200]
    assert srv.get("/hello")[2] == b"hello"


def test_body_read_timeout_on_stalled_body(corral):
    srv = corral(app="echo.py", args=["--http-timeout", "1"])
    with srv.raw() as c:
        c.send(build_request("POST", "/?mode=read", b"", {"Content-Length": "1000"}) + b"x" * 10)
        rest = c.wait_closed(15)
        assert not rest.startswith(b"HTTP/1.1 200"), rest[:200]
    assert srv.request("POST", "/?mode=read", b"fine")[2] == b"fine"


def test_idle_connections_do_not_block_others(corral):
    """Ten idle keep-alive connections and a stalled head do not stop a new client."""
    srv = corral(app="routes.py")
    idle = [srv.raw() for _ in range(10)]
    try:
        idle[0].send(b"GET / HTTP/1.1\r\nHost")
        assert srv.get("/hello", timeout=30)[2] == b"hello"
    finally:
        for c in idle:
            c.close()


def test_many_sequential_connections(routes_srv):
    srv = routes_srv
    for i in range(200):
        status, _, body = srv.get("/hello")
        assert status == 200 and body == b"hello", i


def test_client_reset_midrequest_does_not_break_server(corral):
    srv = corral(app="echo.py")
    for _ in range(5):
        c = helpers.RawConn(srv.port)
        c.send(build_request("POST", "/?mode=read", b"", {"Content-Length": "100000"}) + b"x" * 5)
        c.close()
    assert srv.request("POST", "/?mode=read", b"still fine")[2] == b"still fine"
