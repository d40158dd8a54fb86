"""
thr_memcache.py - memcached through pylibmc (libmemcached), the way the user report did it and
the way docs/threads.md says to.

  /?mode=shared       one module-level pylibmc.Client, created at import and used by every
                      thread of the worker at once (libmemcached is not thread-safe: this can
                      abort the worker, e.g. "ptr->query_id == query_id + 1")
  /?mode=local        one client per thread (threading.local), created on first use
  /?mode=request      a new client for every request
  &ops=N              N set/get pairs (default 20) on a key of this pid and thread

Answers "ok <pid> <thread>" when every get returned what the set before it stored, else 500.
The memcached address comes from the environment variable THR_MEMCACHED ("host:port").
"""
import os
import threading
from urllib.parse import parse_qs

import pylibmc

SERVERS = [os.environ["THR_MEMCACHED"]]
BEHAVIORS = {"connect_timeout": 2000, "_poll_timeout": 2000}  # ms: a confused client gives up


def new_client():
    return pylibmc.Client(SERVERS, behaviors=BEHAVIORS)


shared = new_client()  # at import: in the master before fork, or once per worker

local = threading.local()


def thread_client():
    client = getattr(local, "client", None)
    if client is None:
        client = local.client = new_client()
    return client


def application(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    mode = q.get("mode", "local")
    ops = int(q.get("ops", 20))
    if mode == "shared":
        client = shared
    elif mode == "local":
        client = thread_client()
    else:
        client = new_client()
    key = "thr-%d-%d" % (os.getpid(), threading.get_ident())
    bad = 0
    for i in range(ops):
        value = ("%s:%d;" % (key, i)) * 16
        client.set(key, value)
        if client.get(key) != value:
            bad += 1
    body = ("ok %d %d" % (os.getpid(), threading.get_ident()) if not bad
            else "%d of %d gets returned something else" % (bad, ops)).encode()
    start_response("200 OK" if not bad else "500 Internal Server Error",
                   [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
