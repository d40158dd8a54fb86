"""
uw_app.py - the WSGI app behind nginx in test_uwsgi.py.

  /env[/...], ""      the environ's str/bool/int values as JSON (other values: their type name)
  /echo               reads wsgi.input; answers "<length> <sha256>" (and the same in headers)
  /form               parses an application/x-www-form-urlencoded body; answers it as JSON
  /stream?n=N         a generator of N lines, no Content-Length (ends at the close)
  /headers            custom headers and three Set-Cookie headers
  /pid                the worker's pid
  /big?n=N            N pattern bytes (helpers.pattern_bytes) in 64 KiB pieces, with
                      Content-Length; &nolength=1: without it
"""
import hashlib
import json
import os
from urllib.parse import parse_qs


def pattern_bytes(n, seed=0):
    """The same bytes as helpers.pattern_bytes."""
    out = bytearray()
    block = 0
    while len(out) < n:
        out += hashlib.sha256(b"%d:%d" % (seed, block)).digest() * 64
        block += 1
    return bytes(out[:n])


def _json(start_response, obj, status="200 OK", extra=()):
    body = json.dumps(obj).encode("ascii")
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))] + list(extra))
    return [body]


def _env(environ):
    out = {}
    for k, v in environ.items():
        out[k] = v if isinstance(v, (str, bool, int)) else "<%s>" % type(v).__name__
    return out


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path.startswith("/env") or path == "":
        body = environ["wsgi.input"].read()
        return _json(start_response, {"env": _env(environ), "body_len": len(body)})
    if path == "/echo":
        inp = environ["wsgi.input"]
        h = hashlib.sha256()
        n = 0
        while True:
            b = inp.read(65536)
            if not b:
                break
            h.update(b)
            n += len(b)
        out = b"%d %s" % (n, h.hexdigest().encode())
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(out))),
                                  ("X-Body-Length", str(n)),
                                  ("X-Content-Length", environ.get("CONTENT_LENGTH", "<unset>"))])
        return [out]
    if path == "/form":
        raw = environ["wsgi.input"].read()
        # a urlencoded body is ASCII; its %-escapes are UTF-8
        fixed = parse_qs(raw.decode("ascii"), keep_blank_values=True, encoding="utf-8")
        return _json(start_response, {"form": fixed,
                                      "content_type": environ.get("CONTENT_TYPE"),
                                      "method": environ["REQUEST_METHOD"]})
    if path == "/stream":
        n = int(q.get("n", 5))
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Streamed", "yes")])
        return (b"line %d\n" % i for i in range(n))
    if path == "/headers":
        body = b"headers"
        start_response("201 Created", [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("X-Custom", "custom value"),
            ("X-Latin", "caf\u00e9"),
            ("Set-Cookie", "a=1; Path=/"),
            ("Set-Cookie", "b=2; Path=/; HttpOnly"),
            ("Set-Cookie", "c=3; Path=/; Max-Age=60"),
            ("Cache-Control", "no-store"),
        ])
        return [body]
    if path == "/big":
        n = int(q["n"])
        data = pattern_bytes(n)
        headers = [("Content-Type", "application/octet-stream")]
        if not q.get("nolength"):
            headers.append(("Content-Length", str(n)))
        start_response("200 OK", headers)
        return [data[i:i + 65536] for i in range(0, n, 65536)]
    if path == "/pid":
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    body = ("not found: %r" % path).encode("utf-8")
    start_response("404 Not Found", [("Content-Type", "text/plain"),
                                     ("Content-Length", str(len(body)))])
    return [body]
