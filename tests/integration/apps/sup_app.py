"""
sup_app.py - endpoints for tests/integration/test_supervision.py (harakiri, recycling,
adaptive workers, privileges).

  /pid                      the worker's pid
  /ids                      "pid ppid uid euid gid egid" of the worker
  /spin?marker=M            a pure-Python endless loop that even swallows Exception; on the way
                            out (HarakiriTimeout) writes "<exception class> <pid>" to M
  /block?marker=M           writes "started <pid>" to M, then time.sleep(3600) (stuck in C)
  /sleep?s=S[&marker=M]     writes "started <pid>" to M, sleeps S seconds, answers the pid
  /grow?mb=N                keeps N MiB of touched memory alive in this worker
"""
import os
import time
from urllib.parse import parse_qs

HOARD = []


def touch(path, text):
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


def text(start_response, body, status="200 OK"):
    body = body.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def spin_forever():
    n = 0
    while True:
        try:
            while True:
                n += 1
        except Exception:  # HarakiriTimeout derives from BaseException: not caught here
            continue


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    marker = q.get("marker")

    if path == "/pid":
        return text(start_response, str(os.getpid()))
    if path == "/ids":
        return text(start_response, "%d %d %d %d %d %d" % (
            os.getpid(), os.getppid(), os.getuid(), os.geteuid(), os.getgid(), os.getegid()))
    if path == "/spin":
        touch(marker + ".started" if marker else None, "started %d" % os.getpid())
        try:
            spin_forever()
        except BaseException as e:
            cls = type(e)
            touch(marker, "%s.%s %d" % (cls.__module__, cls.__qualname__, os.getpid()))
            raise
    if path == "/block":
        touch(marker, "started %d" % os.getpid())
        time.sleep(3600)
        return text(start_response, "woke up")
    if path == "/sleep":
        touch(marker, "started %d" % os.getpid())
        time.sleep(float(q.get("s", 1)))
        return text(start_response, str(os.getpid()))
    if path == "/grow":
        HOARD.append(b"x" * (int(q["mb"]) << 20))
        return text(start_response, str(os.getpid()))
    return text(start_response, "not found: %r" % path, "404 Not Found")
