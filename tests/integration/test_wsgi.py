"""
test_wsgi.py - PEP 3333 as seen by apps: the environ, wsgi.input, start_response, write(),
iteration, file_wrapper, close(), and error handling.
"""
import json
import socket
import threading

import pytest

from helpers import build_request, chunked, pattern_bytes, sha256, wait_for


def environ_via(c, raw_request):
    """Sends raw bytes on RawConn c, returns the environ.py JSON of the response."""
    c.send(raw_request)
    r = c.read_response()
    assert r.status == 200, r.body[:500]
    return json.loads(r.body)


# Servers shared by the read-only tests of this module (a failing test gets their log too).

@pytest.fixture(scope="module")
def environ_srv(corral_module):
    return corral_module(app="environ.py")


@pytest.fixture(scope="module")
def echo_srv(corral_module):
    return corral_module(app="echo.py")


@pytest.fixture(scope="module")
def routes_srv(corral_module):
    return corral_module(app="routes.py")


# --- wsgiref.validate ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_validator_passes(corral, method):
    srv = corral(app="validator.py")
    body = b"line one\nline two\nrest of it" if method == "POST" else b""
    headers = {"Content-Type": "text/plain"} if body else {}
    with srv.raw() as c:
        r = c.request(method, "/v/path?x=1", body, headers)
        assert r.status == 200, r.body
        if method == "HEAD":
            assert r.body == b""
            assert r.header("content-length") is not None
        elif method == "POST":
            assert r.body == b"method=POST path=/v/path body=" + body
        else:
            assert r.body == b"method=GET path=/v/path body="
        # the same connection still works: a HEAD left no stray body bytes behind
        r2 = c.request("GET", "/second")
        assert r2.status == 200 and r2.body == b"method=GET path=/second body="
    log = srv.wait_log("validator app: done")
    for bad in ("AssertionError", "WSGIWarning", "garbage collected without being closed"):
        assert bad not in log


# --- the environ --------------------------------------------------------------------------------

def test_environ_keys_and_types(environ_srv):
    srv = environ_srv
    with srv.raw() as c:
        req = (b"POST /some/path?x=1&y=%%20z HTTP/1.1\r\n"
               b"Host: 127.0.0.1:%d\r\n"
               b"Content-Type: text/x-test\r\n"
               b"Content-Length: 5\r\n"
               b"X-Custom: foo\r\n"
               b"X-Dash-Name: d\r\n"
               b"\r\nhello" % srv.port)
        out = environ_via(c, req)
        local_port = c.local_port()
    env, types = out["env"], out["types"]
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/some/path"
    assert env["QUERY_STRING"] == "x=1&y=%20z"
    assert env["REQUEST_URI"] == "/some/path?x=1&y=%20z"
    assert env["CONTENT_TYPE"] == "text/x-test"
    assert env["CONTENT_LENGTH"] == "5"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(srv.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(local_port)
    assert env["HTTP_HOST"] == "127.0.0.1:%d" % srv.port
    assert env["HTTP_X_CUSTOM"] == "foo"
    assert env["HTTP_X_DASH_NAME"] == "d"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["wsgi.version"] == [1, 0] and types["wsgi.version"] == "tuple"
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is False and types["wsgi.multithread"] == "bool"
    assert env["wsgi.multiprocess"] is False and types["wsgi.multiprocess"] == "bool"
    assert env["wsgi.run_once"] is False and types["wsgi.run_once"] == "bool"
    assert env["wsgi.input_terminated"] is True
    assert all(out["input_api"].values()), out["input_api"]
    assert all(out["errors_api"].values()), out["errors_api"]
    assert out["file_wrapper_callable"] is True
    assert out["body"] == "hello"
    not_str = {k: t for k, t in types.items() if "." not in k and t != "str"}
    assert not not_str, "CGI keys must be str: %s" % not_str


def test_environ_without_body_and_http10(environ_srv):
    srv = environ_srv
    with srv.raw() as c:
        env = environ_via(c, b"GET / HTTP/1.0\r\n\r\n")["env"]
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert env["PATH_INFO"] == "/"
    assert env["QUERY_STRING"] == ""
    assert env.get("CONTENT_LENGTH", "") == ""
    assert env.get("CONTENT_TYPE", "") == ""
    assert env["SERVER_NAME"]  # from the listener when there is no Host header


def test_repeated_headers_are_joined(environ_srv):
    srv = environ_srv
    with srv.raw() as c:
        env = environ_via(c, b"GET / HTTP/1.1\r\nHost: h\r\nX-Multi: a\r\nX-Multi: b\r\n\r\n")["env"]
    assert env["HTTP_X_MULTI"] == "a, b"


PATHS = [
    (b"/a%20b/%41", "/a b/A"),
    (b"/caf%C3%A9", "/caf\u00c3\u00a9"),  # UTF-8 bytes appear as latin-1 code points
    (b"/%E2%82%AC/x", "/\u00e2\u0082\u00ac/x"),  # the euro sign's UTF-8 bytes
    (b"/%ffx%7E", "/\u00ffx~"),
    (b"/a%2Fb", "/a/b"),
    (b"/plus+sign", "/plus+sign"),
]


@pytest.mark.parametrize("target,expected", PATHS, ids=[p[0].decode("latin-1") for p in PATHS])
def test_path_info_decoding(environ_srv, target, expected):
    srv = environ_srv
    with srv.raw() as c:
        env = environ_via(c, b"GET %s?q=caf%%C3%%A9+x HTTP/1.1\r\nHost: h\r\n\r\n" % target)["env"]
    assert env["PATH_INFO"] == expected
    assert env["REQUEST_URI"] == (target + b"?q=caf%C3%A9+x").decode("latin-1")
    assert env["QUERY_STRING"] == "q=caf%C3%A9+x"  # never decoded


def test_header_values_are_latin1(environ_srv):
    srv = environ_srv
    with srv.raw() as c:
        env = environ_via(c, b"GET / HTTP/1.1\r\nHost: h\r\nX-Latin: caf\xe9\r\n"
                             b"X-Utf8: caf\xc3\xa9\r\n\r\n")["env"]
    assert env["HTTP_X_LATIN"] == "caf\u00e9"
    assert env["HTTP_X_UTF8"] == "caf\u00c3\u00a9"


@pytest.mark.parametrize("args,multithread,multiprocess", [
    ([], False, False),
    (["--threads", "4"], True, False),
    (["--processes", "2"], False, True),
    (["--processes", "2", "--threads", "2"], True, True),
], ids=["p1t1", "p1t4", "p2t1", "p2t2"])
def test_multithread_multiprocess_flags(corral, args, multithread, multiprocess):
    srv = corral(app="environ.py", args=args)
    status, _, body = srv.get("/")
    assert status == 200
    env = json.loads(body)["env"]
    assert env["wsgi.multithread"] is multithread
    assert env["wsgi.multiprocess"] is multiprocess


# --- wsgi.input ---------------------------------------------------------------------------------

INPUT_BODY = b"alpha\nbeta\n\n" + b"x" * 10000 + b"\n" + b"y" * 70000 + b"\nlast line, no newline"
MODES = ["read", "read_cl", "readn", "readline", "readline_n", "readlines", "iter", "hash"]


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("mode", MODES)
def test_input_modes_stop_at_body_end(echo_srv, mode, framing):
    """Each wsgi.input API returns exactly the body; further reads give b"", and the next
    request, pipelined in the same send, is intact."""
    srv = echo_srv
    path = "/?mode=%s&n=7" % mode
    if framing == "length":
        first = build_request("POST", path, INPUT_BODY)
    else:
        first = build_request("POST", path, b"", {"Transfer-Encoding": "chunked"}) + \
            chunked(INPUT_BODY, [1, 4096, 33, 100000])
    second = build_request("POST", "/?mode=read", b"second body")
    with srv.raw() as c:
        c.send(first + second)
        r = c.read_response()
        assert r.status == 200, r.body[:300]
        assert r.header("x-extra") == "", "read past the body: %s" % r.header("x-extra")
        assert r.header("x-body-length") == str(len(INPUT_BODY))
        assert r.header("x-body-sha256") == sha256(INPUT_BODY)
        if mode != "hash":
            assert r.body == INPUT_BODY
        r2 = c.read_response()
        assert r2.status == 200 and r2.body == b"second body"


@pytest.mark.parametrize("size", [10, 100000, 2 * 1024 * 1024])
def test_unread_body_keeps_connection_usable(echo_srv, size):
    """An app that never touches wsgi.input: the server discards the body and the keep-alive
    connection serves the next request."""
    srv = echo_srv
    data = build_request("POST", "/?mode=none", pattern_bytes(size)) + \
        build_request("POST", "/?mode=read", b"after")
    with srv.raw() as c:
        sender = threading.Thread(target=c.send, args=(data,), daemon=True)
        sender.start()
        r = c.read_response()
        assert r.status == 200 and r.body == b""
        r2 = c.read_response()
        assert r2.status == 200 and r2.body == b"after"
        sender.join(30)


def test_empty_post_body(echo_srv):
    srv = echo_srv
    with srv.raw() as c:
        for mode in ("read", "readline", "readlines", "iter", "readn"):
            r = c.request("POST", "/?mode=%s" % mode, b"")
            assert r.status == 200 and r.body == b"" and r.header("x-extra") == "", mode


# --- responses ----------------------------------------------------------------------------------

def test_write_callable(routes_srv):
    srv = routes_srv
    status, _, body = srv.get("/write")
    assert status == 200 and body == b"part1-part2-part3"


def test_streaming_generator(routes_srv):
    srv = routes_srv
    with srv.raw() as c:
        r = c.request("GET", "/stream?n=200")
    assert r.status == 200
    assert r.body == b"".join(b"chunk-%d\n" % i for i in range(200))


def test_list_without_content_length(routes_srv):
    srv = routes_srv
    status, _, body = srv.get("/nolength")
    assert status == 200 and body == b"abcdef"


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "no-length"])
def test_file_wrapper(routes_srv, tmp_path, with_length):
    srv = routes_srv
    data = pattern_bytes(3 * 1024 * 1024 + 123, seed=7)
    f = tmp_path / "payload.bin"
    f.write_bytes(data)
    marker = tmp_path / "file.closed"
    path = "/file?path=%s&marker=%s%s" % (f, marker, "&len=1" if with_length else "")
    with srv.raw() as c:
        r = c.request("GET", path)
        assert r.status == 200
        assert len(r.body) == len(data) and sha256(r.body) == sha256(data)
        if with_length:
            assert r.header("content-length") == str(len(data))
        r2 = c.request("GET", "/hello")
        assert r2.body == b"hello"
    wait_for(marker.exists, 10, "file_wrapper's close() to close the file")


def test_close_is_called(routes_srv, tmp_path):
    srv = routes_srv
    marker = tmp_path / "close.marker"
    status, _, body = srv.get("/close?marker=%s" % marker)
    assert status == 200 and body == b"abc"
    wait_for(marker.exists, 10, "close() to be called")
    assert marker.read_text() == "closed\n"  # exactly once


def test_close_is_called_when_client_disconnects(corral, tmp_path):
    srv = corral(app="routes.py")
    marker = tmp_path / "endless.marker"
    c = srv.raw()
    c.send(build_request("GET", "/endless?marker=%s" % marker))
    c.read_head()
    c._fill()
    # Reset, not FIN: the unread data makes the kernel send RST on close.
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
    wait_for(marker.exists, 20, "close() after the client went away")
    status, _, body = srv.get("/hello")
    assert status == 200 and body == b"hello"


# --- errors -------------------------------------------------------------------------------------

def test_exception_before_start_response(corral):
    srv = corral(app="routes.py")
    _, _, pid = srv.get("/pid")
    status, _, _ = srv.get("/raise/before?q=1")
    assert status == 500
    log = srv.wait_log("boom-before-start")
    assert "Traceback" in log
    assert "GET /raise/before" in log, "the traceback should name the request"
    status, _, pid2 = srv.get("/pid")
    assert status == 200 and pid2 == pid, "the same worker keeps serving"


def test_exc_info_replaces_unsent_status(routes_srv):
    srv = routes_srv
    status, _, body = srv.get("/raise/exc-info")
    assert status == 503 and body == b"replaced by exc_info"


def test_start_response_twice_without_exc_info(routes_srv):
    srv = routes_srv
    status, _, body = srv.get("/raise/twice")
    assert status == 500 and b"should not be sent" not in body
    assert srv.get("/hello")[2] == b"hello"


@pytest.mark.parametrize("path,error", [
    ("/raise/iter", "boom-in-iteration"),
    ("/raise/late-exc-info", "late-error"),
])
def test_exception_during_iteration(corral, tmp_path, path, error):
    """Once the status line may have gone out, an error can only cut the connection; if the
    server had sent nothing yet, a 500 is fine too. Either way close() runs."""
    srv = corral(app="routes.py")
    marker = tmp_path / "iter.marker"
    with srv.raw() as c:
        c.send(build_request("GET", "%s?marker=%s" % (path, marker)))
        r = c.read_response()
        if r.status != 500:
            assert r.status == 200
            assert not r.complete, "an interrupted body must not look complete: %r" % r
            assert b"not reached" not in r.body and b"never" not in r.body
        c.wait_closed(10)
    srv.wait_log(error)
    if path == "/raise/iter":
        wait_for(marker.exists, 10, "close() after an iteration error")
    assert srv.get("/hello")[2] == b"hello"


@pytest.mark.parametrize("kind", ["status", "status-bytes", "status-short", "header-crlf",
                                  "header-name", "header-bytes", "header-notuple"])
def test_bad_status_or_header_gives_500(routes_srv, kind):
    srv = routes_srv
    with srv.raw() as c:
        r = c.request("GET", "/bad/" + kind)
        assert r.status == 500
        assert r.header("injected") is None and b"Injected" not in r.raw
    assert srv.get("/hello")[2] == b"hello"


def test_wsgi_errors_reach_the_log(corral):
    srv = corral(app="routes.py")
    status, _, _ = srv.get("/errors?msg=errors-stream-marker-42")
    assert status == 200
    srv.wait_log("errors-stream-marker-42")


def test_threads_run_requests_concurrently(corral):
    """With --threads 4, four requests are inside the app at the same time (a barrier that
    only opens when all four arrive; it gives up after 20 s)."""
    srv = corral(app="routes.py", args=["--threads", "4"])
    results = []

    def one():
        results.append(srv.get("/barrier?n=4", timeout=60))
    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r[0] for r in results] == [200] * 4, results
    assert all(r[2] == b"met 4" for r in results)


def test_environ_is_fresh_per_request(environ_srv):
    """Keys from one request (a header, a body) never leak into the next on the same
    connection."""
    srv = environ_srv
    with srv.raw() as c:
        e1 = environ_via(c, build_request("POST", "/one", b"xyz", {"X-Only-First": "1",
                                                                    "Content-Type": "a/b"}))
        e2 = environ_via(c, build_request("GET", "/two"))
    assert e1["env"]["HTTP_X_ONLY_FIRST"] == "1" and e1["body"] == "xyz"
    assert "HTTP_X_ONLY_FIRST" not in e2["env"]
    assert e2["env"].get("CONTENT_TYPE", "") == "" and e2["body"] == ""
    assert e2["env"]["PATH_INFO"] == "/two"


def test_os_environ_untouched_by_requests(corral):
    srv = corral(app="routes.py", env={"CORRAL_TEST_VAR": "from-env"})
    assert srv.get("/osenv?k=CORRAL_TEST_VAR")[2] == b"from-env"
    assert srv.get("/osenv?k=HTTP_HOST")[2] == b"<unset>"
    assert srv.get("/osenv?k=" + "PATH_INFO")[2] == b"<unset>"
