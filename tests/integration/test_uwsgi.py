"""
test_uwsgi.py - corral behind a real nginx, over the uwsgi protocol (`--socket`).

Every stack is browser -> nginx (uwsgi_pass, the standard uwsgi_params) -> corral --socket, on
TCP (127.0.0.1:PORT) and on a UNIX socket. Also: malformed packets sent straight to the socket
(uwsgi_client.py), socket permissions and --vacuum, --http and --socket in one instance, and a
uWSGI user's Django ini run unchanged. See docs/uwsgi-protocol.md and docs/migrating.md.
"""
import datetime
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import stat
import struct
import tempfile

import pytest
import requests

import helpers
import uwsgi_client
from helpers import pattern_bytes, sha256
from nginx import NginxFactory, attach_logs, nginx_factory

TRANSPORTS = ["tcp", "unix"]


# --- starting corral on a uwsgi socket ------------------------------------------------------

class Stack:
    """corral (srv) on a uwsgi socket (addr: (host, port) or a path; name: the listener as
    corral logs it; upstream: what nginx's uwsgi_pass gets), and the nginx in front (web)."""

    def __init__(self, srv, addr, web=None):
        self.srv = srv
        self.addr = addr
        self.web = web
        if isinstance(addr, str):
            self.name = addr
            self.upstream = "unix:" + addr
        else:
            self.name = "%s:%d" % addr
            self.upstream = self.name


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sock_path(tmp_path, name="corral.sock"):
    """A UNIX socket path in tmp_path, or in a fresh short dir when that would be too long."""
    p = str(tmp_path / name)
    if len(p.encode()) < 100:
        return p
    d = tempfile.mkdtemp(prefix="cru", dir="/tmp")
    return os.path.join(d, name)


def _connectable(addr):
    fam = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    try:
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(addr)
        return True
    except OSError:
        return False


def wait_socket(srv, addr, timeout=15.0):
    """Waits until corral accepts on addr (the readiness probe connects and closes at once:
    an empty connection, which corral drops silently)."""
    def ready():
        if not srv.alive():
            pytest.fail("corral exited with status %s before accepting on %s\nargv: %s\nlog:\n%s"
                        % (srv.proc.returncode, addr, srv.argv, srv.log()))
        return _connectable(addr)
    helpers.wait_for(ready, timeout, "corral to accept on %s" % (addr,), srv.log)


def start_uwsgi(corral, tmp_path, transport, app="uw_app.py", args=(), http=False):
    """corral with `--socket` on TCP or a UNIX socket (plus --http when http=True)."""
    for attempt in range(3):
        if transport == "tcp":
            addr = ("127.0.0.1", _free_port())
            sock_arg = "%s:%d" % addr
        else:
            addr = sock_path(tmp_path, "corral%d.sock" % attempt)
            sock_arg = addr
        srv = corral(app=app, args=["--socket", sock_arg] + list(args), http=http, wait=http)
        if transport == "tcp" and attempt < 2:
            # lost a race for the port with another test: try another one
            helpers.wait_for(lambda: _connectable(addr) or not srv.alive(), 15.0,
                             "corral to accept or exit")
            if not srv.alive() and "in use" in srv.log():
                continue
        wait_socket(srv, addr)
        return Stack(srv, addr)


@pytest.fixture
def nginx(request, tmp_path):
    """nginx(upstream) -> a started nginx.Nginx in front of corral (see nginx.py)."""
    yield from nginx_factory(request, tmp_path)


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    return request.param


@pytest.fixture(scope="module", params=TRANSPORTS)
def shared_stack(request, corral_module, tmp_path_factory):
    """uw_app.py on corral --socket with nginx in front, shared by the module's read-only
    tests (one per transport)."""
    ngx = NginxFactory(tmp_path_factory.mktemp("nginx"))
    try:
        st = start_uwsgi(corral_module, corral_module.tmp_path, request.param)
        st.web = ngx(st.upstream)
        yield st
    finally:
        ngx.stop_all()


@pytest.fixture
def stack(request, shared_stack):
    """shared_stack, with corral's and nginx's logs attached to this test's failure report."""
    attach_logs(request.node, shared_stack.srv)
    attach_logs(request.node, shared_stack.web)
    assert shared_stack.srv.alive() and shared_stack.web.alive()
    return shared_stack


def get_env(conn, path, headers=None):
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    assert resp.status == 200, data
    return json.loads(data)["env"]


# --- basic requests through nginx -----------------------------------------------------------

def test_get_environ(stack):
    conn = http.client.HTTPConnection("127.0.0.1", stack.web.port, timeout=30)
    try:
        env = get_env(conn, "/env/x?a=1&b=%C3%A9&c", headers={"X-Test": "yes"})
        client_port = conn.sock.getsockname()[1]
    finally:
        conn.close()
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["PATH_INFO"] == "/env/x"
    assert env["QUERY_STRING"] == "a=1&b=%C3%A9&c"  # never decoded
    assert env["REQUEST_URI"] == "/env/x?a=1&b=%C3%A9&c"
    assert env["SCRIPT_NAME"] == ""
    # the client's address as nginx saw it, not nginx's address on the uwsgi socket
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(client_port)
    assert env["SERVER_NAME"] == "localhost"
    assert env["SERVER_PORT"] == str(stack.web.port)
    assert env["HTTP_HOST"] == "127.0.0.1:%d" % stack.web.port
    assert env["HTTP_X_TEST"] == "yes"
    assert env["wsgi.url_scheme"] == "http"
    assert "HTTPS" not in env
    assert env["wsgi.version"] == "<tuple>"
    assert env["wsgi.input_terminated"] is True
    assert env["CONTENT_LENGTH"] == "" and env["CONTENT_TYPE"] == ""
    assert "HTTP_CONTENT_LENGTH" not in env and "HTTP_CONTENT_TYPE" not in env


def test_http10_and_methods(stack):
    with stack.web.raw() as c:
        c.send(b"GET /env?x=1 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        r = c.read_response()
    assert r.status == 200
    env = json.loads(r.body)["env"]
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert env["QUERY_STRING"] == "x=1"
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        status, _, body = stack.web.request(method, "/env", body=b"abc" if method != "DELETE"
                                            else None)
        assert status == 200, body
        out = json.loads(body)
        assert out["env"]["REQUEST_METHOD"] == method
        assert out["body_len"] == (0 if method == "DELETE" else 3)
    status, headers, body = stack.web.request("HEAD", "/headers")
    assert status == 201 and body == b""


# nginx decodes and normalises the path ($document_uri); corral gives the bytes as latin-1.
NGINX_PATHS = [
    (b"/env/a%20b/%41", "/env/a b/A"),
    (b"/env/caf%C3%A9", "/env/caf\u00c3\u00a9"),  # UTF-8 bytes appear as latin-1 code points
    (b"/env/%E2%82%AC/x", "/env/\u00e2\u0082\u00ac/x"),  # the euro sign's UTF-8 bytes
    (b"/env/%ffx%7E", "/env/\u00ffx~"),
    (b"/env/a%2Fb", "/env/a/b"),
    (b"/env/plus+sign", "/env/plus+sign"),
    (b"/env//merged///slashes", "/env/merged/slashes"),
    (b"/env/x/../y/./z", "/env/y/z"),
    (b"/env/caf\xc3\xa9", "/env/caf\u00c3\u00a9"),  # raw UTF-8 in the request line
]


def test_path_info_decoding(stack):
    """PATH_INFO is nginx's decoded path as latin-1 (PEP 3333); REQUEST_URI and QUERY_STRING
    are as sent. All on one keep-alive connection to nginx."""
    with stack.web.raw() as c:
        for target, expected in NGINX_PATHS:
            c.send(b"GET %s?q=caf%%C3%%A9+x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % target)
            r = c.read_response()
            assert r.status == 200, (target, r.body)
            env = json.loads(r.body)["env"]
            assert env["PATH_INFO"] == expected, target
            assert env["REQUEST_URI"] == (target + b"?q=caf%C3%A9+x").decode("latin-1")
            assert env["QUERY_STRING"] == "q=caf%C3%A9+x"
    # and what a framework does with it
    assert NGINX_PATHS[1][1].encode("latin-1").decode("utf-8") == "/env/café"


def test_form_post(stack):
    r = requests.post(stack.web.url("/form"), data={"name": "Zoë", "msg": "a&b=c d", "n": "1"},
                      timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["method"] == "POST"
    assert out["content_type"] == "application/x-www-form-urlencoded"
    assert out["form"] == {"name": ["Zoë"], "msg": ["a&b=c d"], "n": ["1"]}


def test_large_post_is_byte_exact(stack):
    data = pattern_bytes(10 * 1024 * 1024, seed=7)
    status, headers, body = stack.web.request(
        "POST", "/echo", body=data, headers={"Content-Type": "application/octet-stream"},
        timeout=60)
    assert status == 200, body
    assert body == b"%d %s" % (len(data), sha256(data).encode())
    assert headers["X-Content-Length"] == str(len(data))


def test_chunked_upload_reaches_app_with_content_length(stack):
    """The client sends chunked; nginx de-chunks it and passes CONTENT_LENGTH."""
    data = pattern_bytes(300001, seed=3)
    with stack.web.raw(timeout=60) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
               b"Content-Type: application/octet-stream\r\n\r\n"
               + helpers.chunked(data, [1, 4096, 70000, 17]))
        r = c.read_response("POST")
        assert r.status == 200, r.body
        assert r.body == b"%d %s" % (len(data), sha256(data).encode())
        assert r.header("x-content-length") == str(len(data))
        # an empty chunked body, on the same connection
        c.send(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"0\r\n\r\n")
        r = c.read_response("POST")
        assert r.status == 200 and r.body == b"0 " + sha256(b"").encode()


def test_streaming_response(stack):
    """A generator without Content-Length: corral ends it with the close, nginx re-frames it
    for the client (chunked for HTTP/1.1)."""
    expected = b"".join(b"line %d\n" % i for i in range(2000))
    with stack.web.raw() as c:
        c.send(b"GET /stream?n=2000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.complete
        assert r.framing == "chunked"
        assert r.body == expected
        assert r.header("x-streamed") == "yes"
        # the client connection survives the upstream close
        r = c.request("GET", "/stream?n=3")
        assert r.body == b"line 0\nline 1\nline 2\n"


def test_streaming_response_direct(stack):
    """On the uwsgi socket itself: Connection: close, never chunked, body until the close."""
    out = uwsgi_client.request(stack.addr, uwsgi_client.nginx_env(uri="/stream?n=4"))
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    names = {ln.split(":", 1)[0].strip().lower(): ln.split(":", 1)[1].strip() for ln in lines[1:]}
    assert names.get("connection", "").lower() == "close"
    assert "transfer-encoding" not in names
    assert body == b"line 0\nline 1\nline 2\nline 3\n"


def test_large_response_is_byte_exact(stack):
    """8 MiB, with and without Content-Length (nginx spools it to its uwsgi temp path)."""
    n = 8 * 1024 * 1024 + 3
    expected = sha256(pattern_bytes(n))
    for q in ("", "&nolength=1"):
        status, headers, body = stack.web.get("/big?n=%d%s" % (n, q), timeout=60)
        assert status == 200
        assert len(body) == n and sha256(body) == expected, q


def test_https_vars_set_url_scheme(stack):
    """What nginx sends for a TLS client (HTTPS=on, REQUEST_SCHEME=https), straight to the
    socket: wsgi.url_scheme is https."""
    for extra in ({"HTTPS": "on"}, {"REQUEST_SCHEME": "https"}, {"HTTPS": "1"}):
        env = dict(uwsgi_client.nginx_env(uri="/env"), **extra)
        out = uwsgi_client.request(stack.addr, env)
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), out[:200]
        assert json.loads(body)["env"]["wsgi.url_scheme"] == "https", extra
    out = uwsgi_client.request(stack.addr, uwsgi_client.nginx_env(uri="/env"))
    assert json.loads(out.partition(b"\r\n\r\n")[2])["env"]["wsgi.url_scheme"] == "http"


def test_limit_post_through_nginx(corral, nginx, tmp_path, transport):
    """A body above --limit-post: 413 reaches the client through nginx; smaller ones pass."""
    st = start_uwsgi(corral, tmp_path, transport, args=["--limit-post", "100k"])
    web = nginx(st.upstream)
    for size in (1000, 200 * 1024, 5 * 1024 * 1024):
        data = pattern_bytes(size, seed=size)
        status, _, body = web.request("POST", "/echo", body=data, timeout=60)
        if size <= 100 * 1024:
            assert status == 200 and body == b"%d %s" % (size, sha256(data).encode())
        else:
            assert status == 413, (size, status, body[:200])
    assert web.get("/pid")[0] == 200


def test_response_headers_and_cookies(stack):
    with stack.web.raw() as c:
        r = c.request("GET", "/headers")
    assert r.status == 201 and r.body == b"headers"
    assert r.header_all("set-cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly",
                                          "c=3; Path=/; Max-Age=60"]
    assert r.header("x-custom") == "custom value"
    assert r.header("x-latin") == "caf\u00e9"  # sent as the latin-1 byte 0xE9
    assert b"X-Latin: caf\xe9\r\n" in r.raw
    assert r.header("cache-control") == "no-store"
    assert r.header("content-type") == "text/plain; charset=utf-8"
    # requests sees three cookies too
    s = requests.Session()
    resp = s.get(stack.web.url("/headers"), timeout=30)
    assert resp.status_code == 201
    assert {k: v for k, v in s.cookies.items()} == {"a": "1", "b": "2", "c": "3"}


def test_keepalive_to_nginx(stack):
    """Several requests on one client connection; corral sees one uwsgi connection each."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.web.port, timeout=30)
    try:
        conn.connect()
        sock = conn.sock
        port = sock.getsockname()[1]
        ports = []
        for i in range(5):
            env = get_env(conn, "/env/%d?i=%d" % (i, i))
            assert env["PATH_INFO"] == "/env/%d" % i and env["QUERY_STRING"] == "i=%d" % i
            ports.append(env["REMOTE_PORT"])
            data = pattern_bytes(5000 + i, seed=i)
            conn.request("POST", "/echo", body=data)
            resp = conn.getresponse()
            assert resp.read() == b"%d %s" % (len(data), sha256(data).encode())
            conn.request("GET", "/stream?n=%d" % (i + 1))
            resp = conn.getresponse()
            assert resp.read() == b"".join(b"line %d\n" % k for k in range(i + 1))
            assert conn.sock is sock, "nginx closed the client connection after request %d" % i
        assert ports == [str(port)] * 5
    finally:
        conn.close()


# --- frameworks through nginx ---------------------------------------------------------------

def test_django_through_nginx(corral, nginx, tmp_path, transport):
    st = start_uwsgi(corral, tmp_path, transport, app="djproj",
                     args=["--pythonpath", tmp_path / "djproj", "--module", "djproj.wsgi"])
    web = nginx(st.upstream)
    s = requests.Session()
    url = web.url("/form/")
    r = s.get(url, timeout=30)
    assert r.status_code == 200, r.text
    assert "csrftoken" in s.cookies
    m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', r.text)
    assert m, r.text
    r = s.post(url, data={"csrfmiddlewaretoken": m.group(1), "message": "héllo nginx"},
               timeout=30)
    assert r.status_code == 200, r.text
    assert "You said: héllo nginx" in r.text
    # without the token
    r = s.post(url, data={"message": "no token"}, timeout=30)
    assert r.status_code == 403
    r = requests.get(web.url("/info/?a=1&b=%C3%A9"), timeout=30)
    assert r.status_code == 200
    assert r.json() == {"path": "/info/", "query": {"a": "1", "b": "é"},
                        "host": "127.0.0.1:%d" % web.port, "scheme": "http", "method": "GET"}
    # APPEND_SLASH: a redirect built from the environ nginx sent
    r = requests.get(web.url("/info"), allow_redirects=False, timeout=30)
    assert r.status_code == 301 and r.headers["Location"].endswith("/info/")


def test_flask_through_nginx(corral, nginx, tmp_path, transport):
    st = start_uwsgi(corral, tmp_path, transport, app="flaskapp.py", args=["--callable", "app"])
    web = nginx(st.upstream)
    r = requests.get(web.url("/api/json?x=1"), timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json()["ok"] is True and r.json()["args"] == {"x": "1"}
    payload = {"a": [1, 2, 3], "b": "ünïcode", "c": None}
    r = requests.post(web.url("/api/json"), json=payload, timeout=30)
    assert r.status_code == 200 and r.json() == {"echo": payload}
    # cookies
    s = requests.Session()
    r = s.get(web.url("/cookie/set?v=chocolate"), timeout=30)
    assert r.status_code == 200 and s.cookies.get("flavour") == "chocolate"
    assert s.get(web.url("/cookie/get"), timeout=30).text == "chocolate"
    assert requests.get(web.url("/cookie/get"), timeout=30).text == "<none>"
    # redirect
    r = requests.get(web.url("/redirect"), allow_redirects=False, timeout=30)
    assert r.status_code == 302
    assert r.headers["Location"] in ("/target", web.url("/target"))
    r = requests.get(web.url("/redirect"), timeout=30)
    assert r.status_code == 200 and r.text == "target reached"
    # multipart upload
    data = pattern_bytes(3 * 1024 * 1024 + 17, seed=11)
    r = requests.post(web.url("/upload"),
                      files={"file": ("blob.bin", data, "application/octet-stream")},
                      data={"note": "a note"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "blob.bin", "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(), "field": "a note"}
    # streaming
    with requests.get(web.url("/stream?n=300"), stream=True, timeout=30) as r:
        assert r.status_code == 200
        body = b"".join(r.iter_content(chunk_size=None)).decode()
    assert body == "".join("line %d of 300\n" % i for i in range(300))


# --- the socket file ------------------------------------------------------------------------

def test_chmod_socket_and_vacuum(corral, nginx, tmp_path):
    pidfile = tmp_path / "corral.pid"
    st = start_uwsgi(corral, tmp_path, "unix",
                     args=["--chmod-socket", "660", "--vacuum", "--pidfile", pidfile])
    st_mode = os.stat(st.addr).st_mode
    assert stat.S_ISSOCK(st_mode)
    assert stat.S_IMODE(st_mode) == 0o660, oct(stat.S_IMODE(st_mode))
    # the pidfile is written right after the sockets are bound: it may trail the first accept
    helpers.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "the pidfile")
    assert pidfile.read_text().strip() == str(st.srv.pid)
    web = nginx(st.upstream)
    assert web.get("/pid")[0] == 200
    st.srv.signal(signal.SIGTERM)
    assert st.srv.wait_exit() == 0, st.srv.log()
    assert not os.path.exists(st.addr), "--vacuum left the socket file"
    assert not pidfile.exists(), "--vacuum left the pidfile"
    # nginx now has nothing to talk to
    assert web.get("/pid")[0] == 502


def test_socket_path_never_deletes_a_regular_file(corral, tmp_path):
    """A stale socket file is replaced, but `--socket` pointing at a regular file (a typo, a
    swapped argument) must not delete it: corral refuses to start instead."""
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))  # a socket file nobody listens on, as a crash leaves behind
    srv = corral(app="uw_app.py", args=["--socket", stale], http=False, wait=False)
    wait_socket(srv, str(stale))
    srv.stop()

    precious = tmp_path / "settings.py"
    precious.write_text("SECRET = 1\n")
    srv = corral(app="uw_app.py", args=["--socket", precious], http=False, wait=False)
    helpers.wait_for(lambda: not srv.alive() or _connectable(str(precious))
                     or not precious.is_file(), 15, "corral to exit or listen")
    assert precious.is_file() and precious.read_text() == "SECRET = 1\n", \
        "corral replaced the regular file %s with its socket" % precious
    assert srv.wait_exit(10) not in (None, 0), srv.log()
    assert str(precious) in srv.log()


def test_chmod_socket_without_value_is_666(corral, tmp_path):
    st = start_uwsgi(corral, tmp_path, "unix", args=["--chmod-socket"])
    assert stat.S_IMODE(os.stat(st.addr).st_mode) == 0o666


# --- malformed packets straight to the socket -----------------------------------------------

def _var(k, v):
    return struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v


def _packet(block, modifier1=0, datasize=None):
    return struct.pack("<BHB", modifier1, len(block) if datasize is None else datasize, 0) + block


def _good_block():
    return uwsgi_client.encode(uwsgi_client.nginx_env(uri="/pid"))[4:]


MALFORMED = [
    ("bad-modifier1", _packet(_good_block(), modifier1=5), "modifier1 is not 0 (wsgi)"),
    ("modifier1-255", _packet(_good_block(), modifier1=255), "modifier1 is not 0 (wsgi)"),
    # 65535 bytes announced: more than the 16384-byte buffer; refused after the 4-byte header
    ("datasize-past-buffer", _packet(b"\x00" * 100, datasize=0xFFFF),
     "packet larger than buffer-size"),
    # a value whose length runs past the end of the block, with body bytes after the block
    ("value-past-block", _packet(b"\x0e\x00REQUEST_METHOD\xff\x00GET") + b"x" * 300,
     "var length runs past the vars block"),
    # a key length past the block
    ("key-past-block", _packet(_var(b"REQUEST_METHOD", b"GET") + b"\x40\x00PATH"),
     "var length runs past the vars block"),
    # one stray byte after the last value
    ("stray-byte", _packet(_good_block() + b"\x01"), "var length runs past the vars block"),
    ("empty-key", _packet(_var(b"REQUEST_METHOD", b"GET") + _var(b"", b"v")),
     "var with an empty key"),
    ("too-many-vars", _packet(_var(b"REQUEST_METHOD", b"GET")
                              + b"".join(_var(b"K%d" % i, b"v") for i in range(300))),
     "too many vars"),
    ("no-request-method", _packet(_var(b"PATH_INFO", b"/pid")), "no REQUEST_METHOD"),
    ("zero-vars", _packet(b""), "no REQUEST_METHOD"),
    ("bad-content-length", uwsgi_client.encode(dict(uwsgi_client.nginx_env(
        "POST", "/pid"), CONTENT_LENGTH="12a")), "bad CONTENT_LENGTH"),
    ("negative-content-length", uwsgi_client.encode(dict(uwsgi_client.nginx_env(
        "POST", "/pid"), CONTENT_LENGTH="-5")), "bad CONTENT_LENGTH"),
]


def test_malformed_packets_are_refused(corral, nginx, tmp_path, transport):
    st = start_uwsgi(corral, tmp_path, transport)
    web = nginx(st.upstream)
    pid = st.srv.wait_workers(1)
    for name, raw, reason in MALFORMED:
        line = "uwsgi packet from %s refused: %s" % (st.name, reason)
        before = st.srv.log().count(line)
        out = uwsgi_client.request(st.addr, None, raw=raw)
        assert out == b"", "%s: got a response: %r" % (name, out[:200])
        helpers.wait_for(lambda: st.srv.log().count(line) == before + 1, 10,
                         "%s: one log line %r" % (name, line), st.srv.log)
        # the next valid request, directly and through nginx, is served by the same worker
        out = uwsgi_client.request(st.addr, uwsgi_client.nginx_env(uri="/pid"))
        assert out.startswith(b"HTTP/1.1 200 "), (name, out[:200])
        status, _, body = web.get("/pid")
        assert status == 200, (name, body)
    assert st.srv.workers() == pid, "a worker died or was replaced"
    assert st.srv.alive()


def test_direct_packet_semantics(corral, tmp_path, transport):
    """Vars straight to the socket: last duplicate wins, SCRIPT_NAME kept, UWSGI_* vars passed
    through and not interpreted, HTTP_CONTENT_* dropped, a packet of exactly --buffer-size
    accepted and one byte more refused."""
    st = start_uwsgi(corral, tmp_path, transport, args=["--buffer-size", "4096"])

    def env_of(raw):
        out = uwsgi_client.request(st.addr, None, raw=raw)
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), out[:300]
        return json.loads(body)["env"]

    base = uwsgi_client.nginx_env(uri="/env/x")
    block = b"".join(_var(k.encode(), v.encode()) for k, v in base.items())
    env = env_of(_packet(block + _var(b"PATH_INFO", b"/env/second")
                         + _var(b"SCRIPT_NAME", b"/mount") + _var(b"UWSGI_FILE", b"/nope.py")
                         + _var(b"HTTP_CONTENT_LENGTH", b"5") + _var(b"X_CUSTOM", b"\xe9")))
    assert env["PATH_INFO"] == "/env/second"
    assert env["SCRIPT_NAME"] == "/mount"
    assert env["UWSGI_FILE"] == "/nope.py"
    assert env["X_CUSTOM"] == "\u00e9"
    assert "HTTP_CONTENT_LENGTH" not in env

    # REQUEST_METHOD alone: the rest are defaults
    env = env_of(_packet(_var(b"REQUEST_METHOD", b"GET")))
    assert env["PATH_INFO"] == "" and env["QUERY_STRING"] == "" and env["SCRIPT_NAME"] == ""
    if transport == "tcp":  # the listener's host and port, the peer's address
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == (st.addr[0], str(st.addr[1]))
        assert env["REMOTE_ADDR"] == "127.0.0.1"

    # a body after the packet, read exactly
    data = pattern_bytes(70000, seed=9)
    out = uwsgi_client.request(st.addr, uwsgi_client.nginx_env("POST", "/echo", body=data),
                               body=data)
    assert out.endswith(b"%d %s" % (len(data), sha256(data).encode())), out[:300]

    # size limit: header + vars block == buffer-size passes, one byte more is refused
    def sized(total):
        pad = total - 4 - len(block) - 4 - len(b"X_PAD")
        return _packet(block + _var(b"X_PAD", b"p" * pad))
    assert len(sized(4096)) == 4096
    env = env_of(sized(4096))
    assert len(env["X_PAD"]) == 4096 - 4 - len(block) - 4 - 5
    assert uwsgi_client.request(st.addr, None, raw=sized(4097)) == b""
    st.srv.wait_log("uwsgi packet from %s refused: packet larger than buffer-size" % st.name)


def test_access_log_shows_client_address(corral, nginx, tmp_path, transport):
    """The request log line names the client nginx reports in REMOTE_ADDR (as the environ
    does), not nginx's own address on the uwsgi socket, which on a UNIX socket is nothing."""
    st = start_uwsgi(corral, tmp_path, transport)
    env = dict(uwsgi_client.nginx_env(uri="/pid?direct=1"), REMOTE_ADDR="203.0.113.7")
    out = uwsgi_client.request(st.addr, env)
    assert out.startswith(b"HTTP/1.1 200 "), out[:200]
    web = nginx(st.upstream)
    assert web.get("/pid?via=nginx")[0] == 200
    helpers.wait_for(lambda: "GET /pid?via=nginx => 200" in st.srv.log(), 10,
                     "the access log line", st.srv.log)
    lines = [ln for ln in st.srv.log().splitlines() if "GET /pid?" in ln]
    assert len(lines) == 2, lines
    assert " info: 203.0.113.7 GET /pid?direct=1 => 200" in lines[0], lines[0]
    assert " info: 127.0.0.1 GET /pid?via=nginx => 200" in lines[1], lines[1]


def test_app_timezone_does_not_shift_log_times(corral, tmp_path):
    """Django sets TZ (TIME_ZONE, default America/Chicago) and calls tzset() when it loads:
    corral's own log timestamps must not jump by hours when the app does that."""
    st = start_uwsgi(corral, tmp_path, "tcp", app="djproj",
                     args=["--pythonpath", tmp_path / "djproj", "--module", "djproj.wsgi"])
    out = uwsgi_client.request(st.addr, uwsgi_client.nginx_env(uri="/info/"))
    assert out.startswith(b"HTTP/1.1 200 "), out[:300]
    st.srv.wait_log("GET /info/ => 200")
    stamps = []
    for ln in st.srv.log().splitlines():
        m = re.match(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d", ln)
        if m:
            stamps.append(datetime.datetime.strptime(m.group(0).replace("T", " "),
                                                     "%Y-%m-%d %H:%M:%S"))
    assert len(stamps) >= 3, st.srv.log()
    assert max(stamps) - min(stamps) < datetime.timedelta(hours=1), \
        "log times jump by hours:\n" + st.srv.log()


def test_truncated_packet_then_eof(corral, tmp_path, transport):
    """A packet cut short by the client's close: no response, the connection closes, and the
    server keeps serving."""
    st = start_uwsgi(corral, tmp_path, transport)
    full = uwsgi_client.encode(uwsgi_client.nginx_env(uri="/pid"))
    for cut in (2, 4, 10, len(full) - 1):
        fam = socket.AF_UNIX if isinstance(st.addr, str) else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(st.addr)
            s.sendall(full[:cut])
            s.shutdown(socket.SHUT_WR)
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                data = b""
            assert data == b"", (cut, data[:200])
        out = uwsgi_client.request(st.addr, uwsgi_client.nginx_env(uri="/pid"))
        assert out.startswith(b"HTTP/1.1 200 "), (cut, out[:200])
    assert st.srv.alive()


def test_oversized_packet_from_nginx_is_502(corral, nginx, tmp_path):
    """Headers bigger than --buffer-size: corral refuses the packet, nginx answers 502; the
    next request works."""
    st = start_uwsgi(corral, tmp_path, "tcp", args=["--buffer-size", "2048"])
    web = nginx(st.upstream)
    status, _, _ = web.get("/pid", headers={"X-Big": "x" * 3000})
    assert status == 502
    st.srv.wait_log("uwsgi packet from %s refused: packet larger than buffer-size" % st.name)
    assert web.get("/pid")[0] == 200


# --- --http and --socket together -----------------------------------------------------------

def test_http_and_socket_in_one_instance(corral, nginx, tmp_path, transport):
    st = start_uwsgi(corral, tmp_path, transport, http=True, args=["--processes", "2"])
    web = nginx(st.upstream)
    status, _, body = st.srv.get("/env/direct?via=http")
    assert status == 200
    env = json.loads(body)["env"]
    assert env["PATH_INFO"] == "/env/direct" and env["QUERY_STRING"] == "via=http"
    assert env["SERVER_PORT"] == str(st.srv.port)
    status, _, body = web.get("/env/proxied?via=uwsgi")
    assert status == 200
    env = json.loads(body)["env"]
    assert env["PATH_INFO"] == "/env/proxied" and env["QUERY_STRING"] == "via=uwsgi"
    assert env["SERVER_PORT"] == str(web.port)
    # interleaved, on both listeners, served by the same workers
    workers = set(st.srv.wait_workers(2))
    pids = set()
    for i in range(6):
        for get in (st.srv.get, web.get):
            status, _, body = get("/pid")
            assert status == 200
            pids.add(int(body))
    assert pids <= workers
    data = pattern_bytes(2 * 1024 * 1024, seed=5)
    for req in (st.srv.request, web.request):
        status, _, body = req("POST", "/echo", body=data, timeout=60)
        assert body == b"%d %s" % (len(data), sha256(data).encode())


# --- a uWSGI user's ini, unchanged ----------------------------------------------------------

DJANGO_UWSGI_INI = """\
# djproj_uwsgi.ini - the file from uWSGI's "Django and nginx" tutorial, for this project
[uwsgi]

# Django-related settings
# the base directory (full path)
chdir           = %d
# Django's wsgi file
module          = djproj.wsgi:application
env             = DJANGO_SETTINGS_MODULE=djproj.settings

# process-related settings
# master
master          = true
# maximum number of worker processes
processes       = 2
threads         = 2
# the socket (use the full path to be safe)
socket          = %d%n.sock
# ... with appropriate permissions
chmod-socket    = 660
# clear environment on exit
vacuum          = true

harakiri        = 30
max-requests    = 1000
thunder-lock    = true
"""


def ini_keys(text):
    keys = []
    for ln in text.splitlines():
        ln = ln.strip()
        if ln and ln[0] not in "#;[":
            keys.append(ln.split("=", 1)[0].strip())
    return keys


def test_uwsgi_ini_for_django_runs_unchanged(corral, nginx, tmp_path, run_corral):
    """A uWSGI user's ini starts corral as it is. Each uWSGI option corral does not have gives
    exactly one warning line naming it (which ones depends on the build: harakiri and
    max-requests were warned about until corral gained them), the others none."""
    help_text = run_corral(["--help"]).stdout
    unknown = [k for k in ini_keys(DJANGO_UWSGI_INI)
               if not re.search(r"--%s(?![\w-])" % re.escape(k), help_text)]
    assert "chmod-socket" not in unknown and "module" not in unknown, help_text
    assert "thunder-lock" in unknown  # keeps the warning path exercised

    srv = corral(app="djproj", ini=DJANGO_UWSGI_INI, ini_name="djproj/uwsgi.ini", wait=False)
    sock = str(tmp_path / "djproj" / "uwsgi.sock")
    if len(sock.encode()) >= 108:
        pytest.skip("tmp path too long for a UNIX socket: %s" % sock)
    wait_socket(srv, sock, timeout=30)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
    srv.wait_workers(2)

    log = srv.log()
    warned = [ln for ln in log.splitlines() if "warning" in ln and "uwsgi option" in ln]
    assert len(warned) == len(unknown), (unknown, log)
    for key in ini_keys(DJANGO_UWSGI_INI):
        lines = [ln for ln in warned if "'%s'" % key in ln]
        if key in unknown:
            assert len(lines) == 1, "%s: %r" % (key, warned)
            assert "uwsgi.ini:" in lines[0] and "not supported" in lines[0], lines[0]
        else:
            assert lines == [], "%s is a corral option but was warned about" % key

    web = nginx("unix:" + sock)
    s = requests.Session()
    r = s.get(web.url("/form/"), timeout=30)
    assert r.status_code == 200, r.text
    m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', r.text)
    assert m, r.text
    r = s.post(web.url("/form/"), data={"csrfmiddlewaretoken": m.group(1), "message": "uwsgi.ini"},
               timeout=30)
    assert r.status_code == 200 and "You said: uwsgi.ini" in r.text, r.text
    r = requests.get(web.url("/info/?from=ini"), timeout=30)
    assert r.json()["query"] == {"from": "ini"}

    srv.signal(signal.SIGTERM)  # uWSGI < 2.1 would reload here; corral stops
    assert srv.wait_exit() == 0, srv.log()
    assert not os.path.exists(sock), "vacuum = true left the socket file"
