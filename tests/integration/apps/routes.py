"""
routes.py - one WSGI app with an endpoint per server behaviour under test.

  /pid                     the worker's pid
  /hello                   "hello" with Content-Length
  /stream?n=N              a generator of N chunks, no Content-Length
  /write                   the start_response write() callable, then an iterable
  /file?path=P[&len=1][&marker=M]   wsgi.file_wrapper over P (marker written on close)
  /big?n=N[&chunk=C]       N pattern bytes (see pattern_bytes), with Content-Length
  /close?marker=M          an iterable whose close() writes M
  /endless?marker=M        a 64 KiB-chunk stream for up to 60 s; close() writes M
  /raise/before            raises before start_response
  /raise/exc-info          start_response, then start_response again with exc_info (allowed)
  /raise/twice             start_response twice without exc_info (must fail)
  /raise/iter?marker=M     yields one chunk, then raises; close() writes M
  /raise/late-exc-info     sends a chunk, then start_response(exc_info): re-raises, cut
  /bad/<kind>              a bad status or header (see BAD)
  /abort                   os.abort()
  /segv                    a segmentation fault (reads address 0 through ctypes)
  /sleep?s=S[&marker=M]    writes M, sleeps S seconds, answers "slept"
  /barrier?n=N             waits (20 s max) until N requests are inside the app at once
  /errors?msg=X            writes X to wsgi.errors
  /osenv?k=NAME            os.environ[NAME]
  /nolength                a two-item list without Content-Length
"""
import hashlib
import os
import sys
import threading
import time
from urllib.parse import parse_qs


def pattern_bytes(n, seed=0):
    out = bytearray()
    block = 0
    while len(out) < n:
        out += hashlib.sha256(b"%d:%d" % (seed, block)).digest() * 64
        block += 1
    return bytes(out[:n])


def touch(path, text="closed"):
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


class Tracked:
    """An iterable whose close() writes a marker file."""

    def __init__(self, chunks, marker, fail_after=None):
        self.chunks = chunks
        self.marker = marker
        self.fail_after = fail_after

    def __iter__(self):
        for i, c in enumerate(self.chunks):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("boom-in-iteration")
            yield c

    def close(self):
        touch(self.marker)


class TrackedFile:
    """A file-like object for wsgi.file_wrapper whose close() writes a marker file."""

    def __init__(self, path, marker):
        self.f = open(path, "rb")
        self.marker = marker

    def read(self, n=-1):
        return self.f.read(n)

    def fileno(self):
        return self.f.fileno()

    def close(self):
        self.f.close()
        touch(self.marker)


def text(start_response, body, status="200 OK", ctype="text/plain"):
    body = body.encode() if isinstance(body, str) else body
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


BAD = {
    "status": ("abc", [("Content-Type", "text/plain")]),
    "status-bytes": (b"200 OK", [("Content-Type", "text/plain")]),
    "status-short": ("20 OK", [("Content-Type", "text/plain")]),
    "header-crlf": ("200 OK", [("X-Bad", "a\r\nInjected: 1")]),
    "header-name": ("200 OK", [("Bad Name", "x")]),
    "header-bytes": ("200 OK", [("X-Bad", b"bytes")]),
    "header-notuple": ("200 OK", ["X-Bad: x"]),
}


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    marker = q.get("marker")

    if path == "/pid":
        return text(start_response, str(os.getpid()))
    if path == "/hello":
        return text(start_response, "hello")
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"chunk-%d\n" % i for i in range(int(q.get("n", 5))))
    if path == "/nolength":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"abc", b"def"]
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"part1-")
        write(b"part2-")
        return [b"part3"]
    if path == "/file":
        fpath = q["path"]
        headers = [("Content-Type", "application/octet-stream")]
        if q.get("len"):
            headers.append(("Content-Length", str(os.path.getsize(fpath))))
        start_response("200 OK", headers)
        filelike = TrackedFile(fpath, marker)
        return environ["wsgi.file_wrapper"](filelike, 8192)
    if path == "/big":
        n = int(q["n"])
        data = pattern_bytes(n)
        step = int(q.get("chunk", n or 1))
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(n))])
        return [data[i:i + step] for i in range(0, n, step)]
    if path == "/close":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Tracked([b"a", b"b", b"c"], marker)
    if path == "/endless":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        block = b"x" * 65536

        def gen():
            end = time.monotonic() + 60
            while time.monotonic() < end:
                yield block
                time.sleep(0.01)
        return Tracked(gen(), marker)
    if path == "/raise/before":
        raise RuntimeError("boom-before-start")
    if path == "/raise/exc-info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("handled-error")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")],
                           sys.exc_info())
        return [b"replaced by exc_info"]
    if path == "/raise/twice":
        start_response("200 OK", [("Content-Type", "text/plain")])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"should not be sent"]
    if path == "/raise/iter":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Tracked([b"first-chunk", b"never"], marker, fail_after=1)
    if path == "/raise/late-exc-info":
        def gen():
            yield b"first-chunk"
            try:
                raise ValueError("late-error")
            except ValueError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                               sys.exc_info())
            yield b"not reached"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path.startswith("/bad/"):
        status, headers = BAD[path[5:]]
        start_response(status, headers)
        return [b"bad"]
    if path == "/abort":
        sys.stderr.flush()
        os.abort()
    if path == "/segv":
        import ctypes
        sys.stderr.flush()
        ctypes.string_at(0)
    if path == "/sleep":
        touch(marker, "started %d" % os.getpid())
        time.sleep(float(q.get("s", 1)))
        return text(start_response, "slept")
    if path == "/barrier":
        n = int(q.get("n", 2))
        try:
            BARRIERS.setdefault(n, threading.Barrier(n)).wait(20)
        except threading.BrokenBarrierError:
            return text(start_response, "barrier broken", "500 Internal Server Error")
        return text(start_response, "met %d" % n)
    if path == "/errors":
        environ["wsgi.errors"].write(q.get("msg", "") + "\n")
        environ["wsgi.errors"].flush()
        return text(start_response, "logged")
    if path == "/osenv":
        return text(start_response, os.environ.get(q["k"], "<unset>"))
    return text(start_response, "not found: %r" % path, "404 Not Found")


BARRIERS = {}
