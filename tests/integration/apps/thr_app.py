"""
thr_app.py - what the threads tests observe from inside the app.

  /hit                     counts the call (module global, under a lock); "<pid> <count>"
  /count                   the count so far, without counting this call; "<pid> <count>"
  /barrier?n=N[&t=T]       waits (T s max, default 20) until N requests are inside the app at
                           once; JSON {pid, thread, met, max_inside}
  /counter?mode=M&iters=N  N read-modify-write rounds on a module-global counter (+1 each):
                           M=unlocked (the user report) or locked (the docs' fix);
                           "<pid> <value after>"
  /counter/value?mode=M    "<pid> <value>"
  /block?tag=X&dir=D       writes D/in-X, then waits (30 s max) on an Event nobody sets
  /kill?sig=S&tag=X&dir=D&n=N   writes D/in-X, waits (20 s max) until N files D/in-* exist,
                           then os.kill(os.getpid(), S)  (S: SIGSEGV, SIGABRT, ...)
  /gen?n=N&chunk=C[&as=list]  N pattern bytes, C bytes per item: from a generator without
                           Content-Length, or (as=list) a list with Content-Length

sys.setswitchinterval(1e-6) at import makes the interpreter switch threads as often as it can,
so that unprotected read-modify-write sequences race when they run in several threads.
"""
import glob
import hashlib
import json
import os
import signal
import sys
import threading
import time
from urllib.parse import parse_qs

sys.setswitchinterval(1e-6)

# --- /hit, /count -------------------------------------------------------------------------------

hits = 0
hits_lock = threading.Lock()

# --- /barrier -----------------------------------------------------------------------------------

inside = 0
max_inside = 0
inside_lock = threading.Lock()
barriers = {}

# --- /counter -----------------------------------------------------------------------------------

count = 0          # mode=unlocked: the version from the user report
locked_count = 0   # mode=locked: the version from docs/threads.md
count_lock = threading.Lock()


def double(x):
    return x * 2


def count_unlocked(iters):
    global count
    for _ in range(iters):
        count -= 1
        count += 2
        count = double(count) // 2   # a call between read and write, as real code has
    return count


def count_locked(iters):
    global locked_count
    for _ in range(iters):
        with count_lock:
            locked_count -= 1
            locked_count += 2
            locked_count = double(locked_count) // 2
    with count_lock:
        return locked_count


# --- /block, /kill ------------------------------------------------------------------------------

never = threading.Event()


def touch(d, tag):
    with open(os.path.join(d, "in-" + tag), "w") as f:
        f.write("%d %d\n" % (os.getpid(), threading.get_ident()))


def blocked_in_app(d, tag):
    touch(d, tag)
    never.wait(30)


def kill_self(d, tag, n, sig):
    touch(d, tag)
    end = time.monotonic() + 20
    while len(glob.glob(os.path.join(d, "in-*"))) < n and time.monotonic() < end:
        time.sleep(0.01)
    sys.stderr.flush()
    os.kill(os.getpid(), sig)
    time.sleep(5)  # a fatal signal does not return; SIGKILL/SIGSEGV arrive before this ends


# --- /gen ---------------------------------------------------------------------------------------

def pattern_bytes(n, seed=0):
    """The same bytes as helpers.pattern_bytes and routes.py's."""
    out = bytearray()
    block = 0
    while len(out) < n:
        out += hashlib.sha256(b"%d:%d" % (seed, block)).digest() * 64
        block += 1
    return bytes(out[:n])


def pattern_chunks(n, chunk):
    data = pattern_bytes(n)
    for i in range(0, n, chunk):
        yield data[i:i + chunk]


def text(start_response, body, status="200 OK", ctype="text/plain"):
    body = body.encode() if isinstance(body, str) else body
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    global hits, inside, max_inside
    path = environ["PATH_INFO"]
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    pid = os.getpid()

    if path == "/hit":
        with hits_lock:
            hits += 1
            n = hits
        return text(start_response, "%d %d" % (pid, n))
    if path == "/count":
        with hits_lock:
            n = hits
        return text(start_response, "%d %d" % (pid, n))
    if path == "/barrier":
        n = int(q.get("n", 4))
        with inside_lock:
            inside += 1
            max_inside = max(max_inside, inside)
        try:
            try:
                barriers.setdefault(n, threading.Barrier(n)).wait(float(q.get("t", 20)))
                met = True
            except threading.BrokenBarrierError:
                met = False
            with inside_lock:
                seen = max_inside
        finally:
            with inside_lock:
                inside -= 1
        out = json.dumps({"pid": pid, "thread": threading.get_ident(), "met": met,
                          "max_inside": seen})
        return text(start_response, out, "200 OK" if met else "500 Internal Server Error",
                    "application/json")
    if path == "/counter":
        iters = int(q.get("iters", 5000))
        value = count_locked(iters) if q.get("mode") == "locked" else count_unlocked(iters)
        return text(start_response, "%d %d" % (pid, value))
    if path == "/counter/value":
        if q.get("mode") == "locked":
            with count_lock:
                value = locked_count
        else:
            value = count
        return text(start_response, "%d %d" % (pid, value))
    if path == "/block":
        blocked_in_app(q["dir"], q["tag"])
        return text(start_response, "released")
    if path == "/kill":
        kill_self(q["dir"], q["tag"], int(q.get("n", 1)), getattr(signal, q.get("sig", "SIGSEGV")))
        return text(start_response, "still alive", "500 Internal Server Error")
    if path == "/gen":
        n = int(q["n"])
        chunks = pattern_chunks(n, int(q.get("chunk", 65536)))
        if q.get("as") == "list":
            start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                      ("Content-Length", str(n))])
            return list(chunks)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return chunks
    return text(start_response, "not found: %r" % path, "404 Not Found")
