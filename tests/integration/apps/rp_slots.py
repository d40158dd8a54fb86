"""
rp_slots.py - small endpoints for the accept/spreading tests.

  /pid          the worker's pid
  /sleep?s=S    sleeps S seconds (default 1), then answers "<pid> slept"
"""
import os
import time
from urllib.parse import parse_qs


def application(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ["PATH_INFO"]
    if path == "/pid":
        body = b"%d" % os.getpid()
    elif path == "/sleep":
        time.sleep(float(q.get("s", 1)))
        body = b"%d slept" % os.getpid()
    else:
        body = b"not found"
        start_response("404 Not Found", [("Content-Type", "text/plain"),
                                         ("Content-Length", str(len(body)))])
        return [body]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
