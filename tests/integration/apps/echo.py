"""
echo.py - echoes the request body, reading wsgi.input in the way ?mode= selects.

  read        input.read()
  read_cl     input.read(CONTENT_LENGTH)        (falls back to read() without one)
  readn&n=N   input.read(N) until b""
  readline    input.readline() until b""
  readline_n&n=N   input.readline(N) until b""
  readlines   input.readlines()
  iter        for line in input
  none        does not touch wsgi.input at all
  hash        read(65536) loop; answers "<length> <sha256>" instead of the body

After reading, every mode except none checks that further reads return b"" (the input never
reads past the body) and reports it in the X-Extra header ("" when all were empty).
Headers X-Body-Length and X-Body-Sha256 describe what was read.
"""
import hashlib
from urllib.parse import parse_qs


def read_body(inp, mode, q, environ):
    if mode == "read":
        return inp.read()
    if mode == "read_cl":
        cl = environ.get("CONTENT_LENGTH")
        return inp.read(int(cl)) if cl else inp.read()
    if mode in ("readn", "hash"):
        n = int(q.get("n", 65536))
        parts = []
        while True:
            b = inp.read(n)
            if not b:
                return b"".join(parts)
            assert len(b) <= n, "read(%d) returned %d bytes" % (n, len(b))
            parts.append(b)
    if mode == "readline":
        parts = []
        while True:
            line = inp.readline()
            if not line:
                return b"".join(parts)
            parts.append(line)
    if mode == "readline_n":
        n = int(q.get("n", 3))
        parts = []
        while True:
            line = inp.readline(n)
            if not line:
                return b"".join(parts)
            assert len(line) <= n, "readline(%d) returned %d bytes" % (n, len(line))
            parts.append(line)
    if mode == "readlines":
        return b"".join(inp.readlines())
    if mode == "iter":
        return b"".join(line for line in inp)
    raise ValueError("unknown mode %r" % mode)


def application(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    mode = q.get("mode", "read")
    inp = environ["wsgi.input"]
    if mode == "none":
        body = b""
        extra = ""
    else:
        body = read_body(inp, mode, q, environ)
        leftovers = [inp.read(), inp.read(10), inp.readline(), inp.readlines()]
        extra = "" if leftovers == [b"", b"", b"", []] else repr(leftovers)[:200]
    digest = hashlib.sha256(body).hexdigest()
    out = b"%d %s" % (len(body), digest.encode()) if mode == "hash" else body
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(out))),
                              ("X-Body-Length", str(len(body))),
                              ("X-Body-Sha256", digest),
                              ("X-Extra", extra)])
    return [out]
