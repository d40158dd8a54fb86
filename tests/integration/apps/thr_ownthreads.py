"""
thr_ownthreads.py - an app that runs threads of its own beside corral's.

A daemon "heartbeat" thread is started at import; it counts and writes the count to the file
beat-<pid> in the current directory. Threads do not survive fork(), so when the
app is preloaded (imported by the master, then forked) os.register_at_fork starts a new one in
each worker; with --lazy-apps the import itself runs in the worker.

  /beat                JSON {pid, beat_pid, beats, threads}: the heartbeat's process and count
  /spawn?path=P        starts a daemon thread that writes P and then sleeps 600 s; answers at once
"""
import json
import os
import threading
import time
from urllib.parse import parse_qs

beat = {"pid": None, "n": 0}


def heartbeat():
    """Counts, and writes the count to ./beat-<pid> (the server's cwd) so that a test sees every
    worker's heartbeat without having to route a request to each."""
    path = os.path.join(os.getcwd(), "beat-%d" % os.getpid())
    while True:
        beat["n"] += 1
        with open(path + ".tmp", "w") as f:
            f.write("%d\n" % beat["n"])
        os.replace(path + ".tmp", path)
        time.sleep(0.02)


def start_heartbeat():
    beat["pid"] = os.getpid()
    beat["n"] = 0
    threading.Thread(target=heartbeat, name="heartbeat", daemon=True).start()


start_heartbeat()
os.register_at_fork(after_in_child=start_heartbeat)


def background(path):
    with open(path, "w") as f:
        f.write("%d %s\n" % (os.getpid(), threading.current_thread().name))
    time.sleep(600)


def application(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if environ["PATH_INFO"] == "/spawn":
        threading.Thread(target=background, args=(q["path"],), name="per-request",
                         daemon=True).start()
        body = b"spawned"
    else:
        body = json.dumps({"pid": os.getpid(), "beat_pid": beat["pid"], "beats": beat["n"],
                           "threads": sorted(t.name for t in threading.enumerate())}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
