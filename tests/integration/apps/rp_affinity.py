"""
rp_affinity.py - does a request stay on the Python thread that called the app, until close()?

  /stream?id=ID&n=N[&bs=B]   an iterable of N blocks of B bytes (default 16384) of
                             pattern_bytes(N*B, seed=ID), then one last item: b"OK\\n" or
                             b"WRONG: <details>\\n" (the checks made at every block so far)
  /write?id=ID&n=N[&bs=B]    the same bytes sent through the write() callable of
                             start_response (N calls of B bytes, default 65536), then an
                             iterable whose only item is the "OK"/"WRONG" line

At the app call, each request records threading.get_ident() and sets a threading.local
attribute and a contextvars.ContextVar to its own id. Before every block (and every write()
call) it checks that all three are still its own. The iterable's close() checks once more, after
the body has been produced, and reports through a side channel: it writes "OK" or "WRONG: ..."
to $RP_REPORT_DIR/close-<ID> (one file per request id, so it does not matter which worker
process served the request).

sys.setswitchinterval(1e-5) makes the interpreter switch threads often, so requests on
neighbouring threads interleave as much as they can.
"""
import contextvars
import hashlib
import os
import sys
import threading
from urllib.parse import parse_qs

sys.setswitchinterval(1e-5)

local = threading.local()
current = contextvars.ContextVar("rp_request_id")


def pattern_bytes(n, seed=0):
    """The same bytes as helpers.pattern_bytes."""
    out = bytearray()
    block = 0
    while len(out) < n:
        out += hashlib.sha256(b"%d:%d" % (seed, block)).digest() * 64
        block += 1
    return bytes(out[:n])


class Owner:
    """What a request owns at the app call: its thread, its threading.local value and its
    ContextVar value. check(where) records the first difference seen later."""

    def __init__(self, rid):
        self.rid = rid
        self.ident = threading.get_ident()
        local.rid = rid
        current.set(rid)
        self.problems = []

    def check(self, where):
        ident = threading.get_ident()
        lrid = getattr(local, "rid", None)
        crid = current.get(None)
        if ident != self.ident or lrid != self.rid or crid != self.rid:
            self.problems.append("%s: thread %d (app called on %d), threading.local %r, "
                                 "ContextVar %r, expected %r"
                                 % (where, ident, self.ident, lrid, crid, self.rid))

    def verdict(self):
        if not self.problems:
            return "OK"
        return "WRONG: %d bad checks; first: %s" % (len(self.problems), self.problems[0])


def report(rid, text):
    d = os.environ.get("RP_REPORT_DIR")
    if d:
        tmp = os.path.join(d, ".close-%s.tmp" % rid)
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.rename(tmp, os.path.join(d, "close-%s" % rid))  # readers never see half a file


class Stream:
    """The response iterable of /stream: an iterator with close(), checking at every step."""

    def __init__(self, owner, data, bs):
        self.owner = owner
        self.data = data
        self.bs = bs
        self.pos = 0
        self.done = False

    def __iter__(self):
        return self

    def __next__(self):
        if self.done:
            raise StopIteration
        self.owner.check("block at %d" % self.pos)
        if self.pos >= len(self.data):
            self.done = True
            return self.owner.verdict().encode() + b"\n"
        block = self.data[self.pos:self.pos + self.bs]
        self.pos += self.bs
        return block

    def close(self):
        owner = self.owner
        before = len(owner.problems)
        owner.check("close()")
        report(owner.rid, "OK" if len(owner.problems) == before else
               "WRONG: " + owner.problems[-1])


class Trailer:
    """The iterable returned after write() calls: one item, then close() checks."""

    def __init__(self, owner):
        self.owner = owner

    def __iter__(self):
        self.owner.check("iteration after write()")
        yield self.owner.verdict().encode() + b"\n"

    def close(self):
        Stream.close(self)


def application(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ["PATH_INFO"]
    if path == "/stream":
        rid, n, bs = q["id"], int(q["n"]), int(q.get("bs", 16384))
        owner = Owner(rid)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Stream(owner, pattern_bytes(n * bs, seed=int(rid)), bs)
    if path == "/write":
        rid, n, bs = q["id"], int(q["n"]), int(q.get("bs", 65536))
        owner = Owner(rid)
        data = pattern_bytes(n * bs, seed=int(rid))
        write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
        for i in range(0, len(data), bs):
            owner.check("write() at %d" % i)
            write(data[i:i + bs])
        return Trailer(owner)
    body = b"not found"
    start_response("404 Not Found", [("Content-Type", "text/plain"),
                                     ("Content-Length", str(len(body)))])
    return [body]
