"""
test_conformance.py - request-target forms, repeated fields and trusted proxies (issue #12).

Every app here runs inside wsgiref.validate (apps/cf_environ.py), so an environ that breaks
PEP 3333 answers 500. Covered (docs/http-parser.md lists each rule with its RFC section):
- the four request-target forms of RFC 9112 §3.2: absolute-form (http, https, IPv6 literal,
  userinfo, empty path) mapped to PATH_INFO / QUERY_STRING / HTTP_HOST; asterisk-form only
  with OPTIONS; authority-form and CONNECT (501); origin-form must start with '/';
- repeated fields: a singleton field with two values is 400, the same value twice is seen
  once; list fields are joined with ", " (Cookie with "; "); the uwsgi protocol joins
  nginx's repeated HTTP_* vars the same way, through a real nginx and with raw packets;
- --forwarded-allow-ips: X-Forwarded-For / X-Forwarded-Proto / Forwarded from a trusted peer
  set REMOTE_ADDR and wsgi.url_scheme, from any other peer they change nothing;
- the rules kept as they were: HTTP/1.1 without Host is 400, an unknown transfer coding 501,
  trailer fields never reach the environ.
Raw sockets throughout (http.client cannot send most of these heads).
"""
import http.client
import json
import os
import tempfile

import pytest

import helpers
import uwsgi_client
from nginx import nginx_factory

APP = "cf_environ.py"


@pytest.fixture(scope="module")
def srv(corral_module):
    """cf_environ.py on --http, shared by the module's read-only tests; default
    --forwarded-allow-ips (127.0.0.1, which the tests connect from)."""
    return corral_module(app=APP)


@pytest.fixture
def nginx(request, tmp_path):
    yield from nginx_factory(request, tmp_path)


def send(port, head, body=b""):
    """Sends the raw head (str, lines joined with CRLF, the final CRLF added) and reads one
    response on a connection of its own."""
    data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    with helpers.RawConn(port) as c:
        c.send(data)
        return c.read_response(head[0].split(" ", 1)[0])


def environ(port, head, body=b""):
    resp = send(port, head, body)
    assert resp.status == 200, resp.body
    return json.loads(resp.body)["env"]


# --- request-target forms (RFC 9112 §3.2) ---------------------------------------------------

ABSOLUTE = [
    # target, PATH_INFO, QUERY_STRING, HTTP_HOST, REQUEST_URI
    ("http://example.com/foo?q=1", "/foo", "q=1", "example.com", "http://example.com/foo?q=1"),
    ("https://example.com:8443/a%20b?x=%41", "/a b", "x=%41", "example.com:8443",
     "https://example.com:8443/a%20b?x=%41"),
    ("http://[::1]:8080/foo", "/foo", "", "[::1]:8080", "http://[::1]:8080/foo"),
    ("http://user:secret@host.example/x?y", "/x", "y", "host.example", "http://host.example/x?y"),
    ("http://example.com", "/", "", "example.com", "http://example.com"),
    ("HTTP://Example.COM?k=v", "/", "k=v", "Example.COM", "HTTP://Example.COM?k=v"),
]


@pytest.mark.parametrize("target,path,query,host,uri", ABSOLUTE,
                         ids=["http", "https-port", "ipv6", "userinfo", "empty-path", "upper"])
def test_absolute_form(srv, target, path, query, host, uri):
    env = environ(srv.port, ["GET %s HTTP/1.1" % target, "Host: ignored.example",
                             "Connection: close"])
    assert env["PATH_INFO"] == path
    assert env["QUERY_STRING"] == query
    assert env["HTTP_HOST"] == host  # RFC 9112 §3.2.2: the Host field is ignored
    assert env["REQUEST_URI"] == uri
    assert env["wsgi.url_scheme"] == "http"  # the connection's scheme, even for https://
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == str(srv.port)
    # the userinfo (credentials) never reaches the app
    assert not any("secret" in v or "user:" in v for v in env.values())


def test_absolute_form_http10_without_host(srv):
    env = environ(srv.port, ["GET http://example.com/p HTTP/1.0"])
    assert env["PATH_INFO"] == "/p" and env["HTTP_HOST"] == "example.com"


def test_absolute_form_still_needs_host_in_http11(srv):
    assert send(srv.port, ["GET http://example.com/p HTTP/1.1"]).status == 400


@pytest.mark.parametrize("target", ["ftp://example.com/x", "http:///x", "http://:80/x",
                                    'http://a"b/', "http://[::1/x", "http://h:8x/"])
def test_absolute_form_invalid(srv, target):
    assert send(srv.port, ["GET %s HTTP/1.1" % target, "Host: a"]).status == 400


def test_options_asterisk(srv):
    env = environ(srv.port, ["OPTIONS * HTTP/1.1", "Host: a", "Connection: close"])
    assert env["REQUEST_METHOD"] == "OPTIONS"
    assert env["PATH_INFO"] == ""  # "*" is no path: the application root
    assert env["REQUEST_URI"] == "*"


@pytest.mark.parametrize("method", ["GET", "POST", "options"])
def test_asterisk_form_other_methods(srv, method):
    resp = send(srv.port, ["%s * HTTP/1.1" % method, "Host: a", "Content-Length: 0"])
    assert resp.status == 400


@pytest.mark.parametrize("target", ["example.com:443", "/", "http://example.com/"])
def test_connect_not_implemented(srv, target):
    resp = send(srv.port, ["CONNECT %s HTTP/1.1" % target, "Host: example.com:443"])
    assert resp.status == 501
    assert resp.body.strip() == b"Not Implemented"
    assert resp.header("connection") == "close"


def test_authority_form_other_method(srv):
    assert send(srv.port, ["GET example.com:443 HTTP/1.1", "Host: a"]).status == 400


@pytest.mark.parametrize("target", ["foo/bar", "foo", "?x=1", "%2Ffoo"])
def test_origin_form_needs_slash(srv, target):
    assert send(srv.port, ["GET %s HTTP/1.1" % target, "Host: a"]).status == 400


# --- repeated fields (RFC 9110 §5.3) --------------------------------------------------------

@pytest.mark.parametrize("name,a,b", [
    ("Content-Type", "text/plain", "application/json"),
    ("Authorization", "Basic YTpi", "Basic Yzpk"),
    ("User-Agent", "one", "two"),
    ("Referer", "http://a/", "http://b/"),
    ("If-Modified-Since", "Sat, 29 Oct 1994 19:43:31 GMT", "Sun, 30 Oct 1994 19:43:31 GMT"),
    ("Range", "bytes=0-1", "bytes=2-3"),
])
def test_repeated_singleton_differs(srv, name, a, b):
    resp = send(srv.port, ["POST / HTTP/1.1", "Host: a", "%s: %s" % (name, a),
                           "%s: %s" % (name, b), "Content-Length: 0"])
    assert resp.status == 400


def test_repeated_singleton_same_value(srv):
    env = environ(srv.port, ["POST / HTTP/1.1", "Host: a", "Content-Type: text/plain",
                             "User-Agent: ua", "Content-Type: text/plain", "User-Agent: ua",
                             "Content-Length: 2", "Connection: close"], b"hi")
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["HTTP_USER_AGENT"] == "ua"


def test_repeated_list_fields_joined(srv):
    env = environ(srv.port, ["GET / HTTP/1.1", "Host: a", "X-Multi: a", "Cookie: a=1",
                             "X-Multi: b", "Cookie: b=2", "Accept: x/y", "Accept: z/w",
                             "Connection: close"])
    assert env["HTTP_X_MULTI"] == "a, b"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_ACCEPT"] == "x/y, z/w"


# --- kept as they were (docs/http-parser.md) ------------------------------------------------

def test_http11_without_host_is_400(srv):
    assert send(srv.port, ["GET / HTTP/1.1"]).status == 400


def test_unknown_transfer_coding_is_501(srv):
    resp = send(srv.port, ["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip, chunked"],
                b"0\r\n\r\n")
    assert resp.status == 501


def test_trailers_never_reach_environ(srv):
    resp = send(srv.port, ["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked",
                           "Connection: close"],
                b"2\r\nhi\r\n0\r\nX-Trailer: t\r\nContent-Type: x/y\r\n\r\n")
    assert resp.status == 200, resp.body
    out = json.loads(resp.body)
    assert out["body"] == "hi"
    assert "HTTP_X_TRAILER" not in out["env"] and "CONTENT_TYPE" not in out["env"]


# --- the uwsgi protocol: repeated vars join as repeated fields do ---------------------------

def short_sock(tmp_path, name):
    p = str(tmp_path / name)
    if len(p.encode()) < 100:
        return p
    return os.path.join(tempfile.mkdtemp(prefix="cfu", dir="/tmp"), name)


def env_via(port, headers):
    """GET /env through http.client with 'headers' as a list of (name, value) field lines."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("GET", "/env?x=1", skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 200, data
        return json.loads(data)["env"]
    finally:
        conn.close()


def test_uwsgi_repeated_vars_behind_nginx(corral, nginx, tmp_path):
    sock = short_sock(tmp_path, "cf.sock")
    srv = corral(app=APP, args=["--socket", sock])  # --http as well: the same app both ways
    helpers.wait_for(lambda: os.path.exists(sock), 15, "the uwsgi socket")
    web = nginx("unix:" + sock)
    fields = [("X-Multi", "a"), ("Cookie", "a=1"), ("X-Multi", "b"), ("Cookie", "b=2"),
              ("User-Agent", "ua"), ("User-Agent", "ua")]
    direct = env_via(srv.port, fields)
    behind = env_via(web.port, fields)
    for key in ("HTTP_X_MULTI", "HTTP_COOKIE", "HTTP_USER_AGENT", "PATH_INFO", "QUERY_STRING"):
        assert behind[key] == direct[key], key
    assert behind["HTTP_X_MULTI"] == "a, b"
    assert behind["HTTP_COOKIE"] == "a=1; b=2"
    assert behind["HTTP_USER_AGENT"] == "ua"


def test_uwsgi_repeated_vars_raw(corral, tmp_path):
    sock = short_sock(tmp_path, "cf.sock")
    corral(app=APP, args=["--socket", sock], http=False, wait=False)
    helpers.wait_for(lambda: os.path.exists(sock), 15, "the uwsgi socket")
    env = uwsgi_client.nginx_env(uri="/r?z=1")
    packet = uwsgi_client.encode(env)
    extra = [("HTTP_X_MULTI", "a"), ("HTTP_COOKIE", "a=1"), ("HTTP_X_MULTI", "b"),
             ("HTTP_COOKIE", "b=2"), ("HTTP_AUTHORIZATION", "Basic x"),
             ("HTTP_AUTHORIZATION", "Basic x")]
    packet = add_vars(packet, extra)
    out = helpers.wait_for(lambda: try_uwsgi(sock, packet), 15, "a uwsgi answer")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), out[:300]
    got = json.loads(body)["env"]
    assert got["HTTP_X_MULTI"] == "a, b"
    assert got["HTTP_COOKIE"] == "a=1; b=2"
    assert got["HTTP_AUTHORIZATION"] == "Basic x"

    # a singleton header var with two values: refused (the HTTP listener's 400)
    bad = add_vars(uwsgi_client.encode(env), [("HTTP_USER_AGENT", "a"), ("HTTP_USER_AGENT", "b")])
    assert uwsgi_client.request(sock, None, raw=bad) == b""


def add_vars(packet, extra):
    """The packet with more vars appended (uwsgi_client.encode takes a dict: no repeats)."""
    block = packet[4:] + b"".join(uwsgi_client._field(k) + uwsgi_client._field(v)
                                  for k, v in extra)
    return bytes([packet[0]]) + len(block).to_bytes(2, "little") + bytes([packet[3]]) + block


def try_uwsgi(sock, packet):
    try:
        return uwsgi_client.request(sock, None, raw=packet) or None
    except OSError:
        return None


# --- trusted proxies (--forwarded-allow-ips) ------------------------------------------------

def test_forwarded_for_from_trusted_peer(srv):
    env = environ(srv.port, ["GET / HTTP/1.1", "Host: a", "Connection: close",
                             "X-Forwarded-For: 198.51.100.7, 203.0.113.9",
                             "X-Forwarded-Proto: https"])
    assert env["REMOTE_ADDR"] == "203.0.113.9"  # the rightmost untrusted hop
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTP_X_FORWARDED_FOR"] == "198.51.100.7, 203.0.113.9"  # still there
    # the access log names the same client
    srv.wait_log("203.0.113.9 GET / => 200")


def test_forwarded_trusted_hops_skipped(srv):
    env = environ(srv.port, ["GET / HTTP/1.1", "Host: a", "Connection: close",
                             "X-Forwarded-For: 203.0.113.9, 127.0.0.1"])
    assert env["REMOTE_ADDR"] == "203.0.113.9"
    assert env["wsgi.url_scheme"] == "http"


def test_rfc7239_forwarded(srv):
    env = environ(srv.port, ["GET / HTTP/1.1", "Host: a", "Connection: close",
                             'Forwarded: for="[2001:db8::1]:4711";proto=https;by=_lb',
                             "X-Forwarded-For: 198.51.100.1"])
    assert env["REMOTE_ADDR"] == "2001:db8::1"
    assert env["REMOTE_PORT"] == "4711"
    assert env["wsgi.url_scheme"] == "https"


def test_forwarded_from_untrusted_peer(corral):
    srv = corral(app=APP, args=["--forwarded-allow-ips", "10.0.0.0/8, fd00::/8"])
    env = environ(srv.port, ["GET / HTTP/1.1", "Host: a", "Connection: close",
                             "X-Forwarded-For: 203.0.113.9", "X-Forwarded-Proto: https",
                             "Forwarded: for=203.0.113.10;proto=https"])
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.9"
    assert env["HTTP_X_FORWARDED_PROTO"] == "https"
    assert env["HTTP_FORWARDED"] == "for=203.0.113.10;proto=https"


def test_forwarded_allow_ips_star(corral):
    srv = corral(app=APP, args=["--forwarded-allow-ips", "*"])
    env = environ(srv.port, ["GET / HTTP/1.1", "Host: a", "Connection: close",
                             "X-Forwarded-For: 203.0.113.9"])
    assert env["REMOTE_ADDR"] == "203.0.113.9"


def test_forwarded_allow_ips_invalid(run_corral, tmp_path):
    (tmp_path / "app.py").write_text("def application(e, s):\n    return []\n")
    res = run_corral(["--http", "127.0.0.1:0", "--wsgi-file", str(tmp_path / "app.py"),
                      "--forwarded-allow-ips", "10.0.0.0/33"])
    assert res.returncode != 0
    assert "--forwarded-allow-ips" in res.stderr and "10.0.0.0/33" in res.stderr
