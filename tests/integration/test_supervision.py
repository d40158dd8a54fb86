"""
test_supervision.py - what docs/supervision.md promises: harakiri (an exception in the stuck
thread, then the whole worker), recycling without dropping a request (--max-requests, directly
and behind nginx, --max-worker-lifetime, --reload-on-rss), graceful and chain reloads under load
(new code picked up, a broken new version leaves the old one serving), adaptive workers
(--cheaper), --uid/--gid, and systemd's socket activation and NOTIFY_SOCKET.

Load is a few client threads looping on keep-alive connections; every outcome is recorded and
"zero failed requests" means every request got a complete 200 answer (a server that ends a
kept-alive connection must say `Connection: close` on the last response, never just drop it).
Every wait is a bounded poll; nothing asserts on how long something took.
"""
import grp
import http.client
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

import conftest
import helpers
from helpers import wait_for
from nginx import nginx_factory

APP = "sup_app.py"
VERSIONED = "sup_version.py"


# --- helpers --------------------------------------------------------------------------------

def lines_with(srv, *words):
    return [line for line in srv.log().splitlines() if all(w in line for w in words)]


def log_index(lines, *words, start=0):
    """Index of the first line at or after 'start' containing every word, or None."""
    for i in range(start, len(lines)):
        if all(w in lines[i] for w in words):
            return i
    return None


def get_text(port, path, timeout=30.0):
    status, _, body = helpers.http_request(port, "GET", path, timeout=timeout)
    assert status == 200, (path, status, body[:300])
    return body.decode()


def wait_all_serving(srv, pids, timeout=30.0):
    """Polls until every worker in 'pids' answers (a --lazy-apps worker serves only once its
    import is done): eight connections held open at once must spread over the workers that
    are ready (each holds at most its fair share), so all of them answer once all are ready."""
    def serving():
        conns = [srv.raw(timeout=10) for _ in range(8)]
        try:
            seen = set()
            for c in conns:
                r = c.request("GET", "/")
                seen.add(int(r.body.split()[1]))
            return seen >= set(pids)
        finally:
            for c in conns:
                c.close()
    wait_for(serving, timeout, "workers %s all serving" % sorted(pids), srv.log)


def served_pid(srv):
    return int(get_text(srv.port, "/pid"))


class Load:
    """Client threads, each looping GET 'path' on a keep-alive http.client connection (a new
    one only when the server closed the previous one after saying Connection: close).
    Every outcome is recorded per thread: bodies of 200s in ok[t], anything else in failed."""

    def __init__(self, port, path="/pid", nthreads=3):
        self.port = port
        self.path = path
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = [[] for _ in range(nthreads)]
        self.failed = []
        self.connections = 0  # connections opened
        self.closes = 0  # responses with Connection: close
        self.threads = [threading.Thread(target=self.run, args=(t,), daemon=True)
                        for t in range(nthreads)]

    def run(self, t):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                    conn.connect()
                    with self.lock:
                        self.connections += 1
                conn.request("GET", self.path)
                resp = conn.getresponse()
                body = resp.read()
                with self.lock:
                    if resp.status == 200:
                        self.ok[t].append(body.decode())
                    else:
                        self.failed.append("status %d: %r" % (resp.status, body[:200]))
                    if resp.will_close:
                        self.closes += 1
                if resp.will_close:
                    conn.close()
                    conn = None
            except Exception as e:  # any failure counts: a reset, an early close, a timeout
                with self.lock:
                    self.failed.append(repr(e))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(90)

    def count(self):
        with self.lock:
            return sum(len(x) for x in self.ok)

    def all_ok(self):
        with self.lock:
            return [b for x in self.ok for b in x]

    def wait_more(self, n, timeout=30):
        """Waits until every thread has had n more successful requests."""
        with self.lock:
            targets = [len(x) + n for x in self.ok]

        def done():
            with self.lock:
                return all(len(x) >= k for x, k in zip(self.ok, targets))
        wait_for(done, timeout, "%d more successful requests per client thread" % n,
                 lambda: "failures so far: %s" % self.failed[:5])

    def last(self, n):
        """The last n bodies of every thread."""
        with self.lock:
            return [b for x in self.ok for b in x[-n:]]

    def report(self):
        return "%d ok, %d failed (%s), %d connections, %d Connection: close" % (
            self.count(), len(self.failed), self.failed[:5], self.connections, self.closes)


def assert_successor_first(srv, why):
    """For every 'recycling' line of a worker that has since exited: a 'spawned worker' line
    comes after it and before that worker's exit (capacity never drops)."""
    lines = srv.log().splitlines()
    checked = 0
    for i, line in enumerate(lines):
        if why not in line or "recycling it once its successor is ready" not in line:
            continue
        pid = line.rsplit("(pid ", 1)[1].split(")", 1)[0]
        exit_i = log_index(lines, "(pid %s)" % pid, "exited", start=i + 1)
        if exit_i is None:
            continue  # still draining at the end of the test
        spawn_i = log_index(lines, "spawned worker", start=i + 1)
        assert spawn_i is not None and spawn_i < exit_i, (
            "worker pid %s exited before a successor was spawned:\n%s"
            % (pid, "\n".join(lines[i:exit_i + 1])))
        assert "exited with status" not in lines[exit_i], lines[exit_i]
        checked += 1
    return checked


def check_recycles(srv, why, timeout=30):
    """Waits (bounded) until at least one recycled worker has exited, then checks the order of
    every finished recycle (assert_successor_first); returns how many were checked."""
    return wait_for(lambda: assert_successor_first(srv, why), timeout,
                    "a worker recycled for %s to exit" % why, srv.log)


def no_errors(srv):
    bad = [line for line in srv.log().splitlines() if " error: " in line or "killed by" in line]
    assert not bad, "unexpected error lines in the log:\n" + "\n".join(bad[:10])


def rewrite(path, text):
    """Replaces a file's content and moves its mtime forward (no stale bytecode or mtime)."""
    old = os.stat(path)
    with open(path, "w") as f:
        f.write(text)
    os.utime(path, (old.st_atime + 10, old.st_mtime + 10))


def touch_later(path):
    """Moves path's mtime forward by 10 s (one-second mtime granularity cannot hide it)."""
    st = os.stat(path)
    os.utime(path, (st.st_atime + 10, st.st_mtime + 10))


def versioned_source(version):
    with open(os.path.join(conftest.APPS, VERSIONED)) as f:
        src = f.read()
    assert 'VERSION = "v1"' in src
    return src.replace('VERSION = "v1"', 'VERSION = "%s"' % version)


BROKEN_SOURCE = 'VERSION = "broken"\n\ndef application(environ, start_response:\n    pass\n'


def version_of(port):
    return get_text(port, "/").split()[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connectable(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_listening(srv, port, timeout=15.0):
    def ready():
        if not srv.alive():
            pytest.fail("corral exited with status %s before accepting on %d\nlog:\n%s"
                        % (srv.proc.returncode, port, srv.log()))
        return connectable(port)
    wait_for(ready, timeout, "corral to accept on port %d" % port, srv.log)


@pytest.fixture
def nginx(request, tmp_path):
    yield from nginx_factory(request, tmp_path)


@pytest.fixture
def public_dir():
    """A fresh directory under /tmp that user nobody can traverse (pytest's tmp dirs are
    0700 root): mode 0755, removed afterwards."""
    d = tempfile.mkdtemp(prefix="corral-sup-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# --- harakiri ---------------------------------------------------------------------------------

def start_request(port, path, timeout=60.0):
    """GET path in a thread; returns (thread, result): result gets "response" or "error"."""
    result = {}

    def run():
        try:
            result["response"] = helpers.http_request(port, "GET", path, timeout=timeout)
        except Exception as e:
            result["error"] = repr(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def test_harakiri_raises_in_thread_then_kills_stuck_worker(corral, tmp_path):
    srv = corral(app=APP, args=["--threads", "4", "--harakiri", "2", "--harakiri-grace", "2"])
    (w1,) = srv.wait_workers(1)

    # 1. A pure-Python endless loop (which even catches Exception): HarakiriTimeout is raised
    #    in its thread only; the siblings served meanwhile by the same worker are fine.
    spin_marker = tmp_path / "spin"
    spin_t, spin = start_request(srv.port, "/spin?marker=%s" % spin_marker)
    wait_for(lambda: os.path.exists(str(spin_marker) + ".started"), 20,
             "the spinning request to reach the app")
    siblings = [start_request(srv.port, "/sleep?s=0.5") for _ in range(2)]
    for _ in range(3):
        assert served_pid(srv) == w1
    for t, res in siblings:
        t.join(60)
        assert "response" in res, res
        assert res["response"][0] == 200 and int(res["response"][2]) == w1, res
    spin_t.join(60)
    assert "response" in spin, "the spinning request got no answer: %s" % spin
    assert spin["response"][0] == 504, spin["response"]
    with open(str(spin_marker)) as f:
        assert f.read().split() == ["corral.HarakiriTimeout", str(w1)], \
            "the app unwinds with corral.HarakiriTimeout (its except/finally blocks run)"
    assert srv.workers() == [w1], "a harakiri that worked does not cost the worker"
    for _ in range(3):
        assert served_pid(srv) == w1

    # 2. Stuck in C (time.sleep(3600)): the exception cannot land, so after harakiri + grace
    #    the master kills the worker and starts a replacement.
    block_marker = tmp_path / "block"
    block_t, block = start_request(srv.port, "/block?marker=%s" % block_marker)
    wait_for(block_marker.exists, 20, "the blocking request to reach the app")
    (w2,) = srv.wait_workers(1, exclude=[w1], timeout=30)
    block_t.join(60)
    assert "response" not in block or block["response"][0] != 200, block
    wait_for(lambda: served_pid(srv) == w2, 20, "the replacement worker to answer")

    # The log names both requests, with where the thread was.
    log = srv.log()
    spin_lines = lines_with(srv, "harakiri: GET /spin?marker=", "ran over 2 s", "HarakiriTimeout")
    assert spin_lines, "no harakiri line for /spin:\n" + log
    assert "worker 1 (pid %d)" % w1 in spin_lines[0]
    after = log[log.index(spin_lines[0]) + len(spin_lines[0]):]
    assert 'sup_app.py", line' in after.split("\n\n")[0] and "spin_forever" in after, \
        "the /spin harakiri line is followed by the thread's Python traceback:\n" + log
    block_lines = lines_with(srv, "harakiri: GET /block?marker=", "HarakiriTimeout")
    assert block_lines, "no harakiri line for /block:\n" + log
    after = log[log.index(block_lines[0]) + len(block_lines[0]):]
    assert "time.sleep(3600)" in after.split("\n\n")[0], \
        "the /block harakiri line shows where the thread was stuck:\n" + log
    assert lines_with(srv, "harakiri: worker 1 (pid %d) thread" % w1, "still on GET /block",
                      "killing the worker"), log
    killed = lines_with(srv, "worker 1 (pid %d) killed by SIGKILL while serving" % w1)
    assert killed and "GET /block" in killed[0], log


# --- recycling ----------------------------------------------------------------------------------

def test_max_requests_keepalive_zero_failures(corral):
    srv = corral(app=APP, args=["--processes", "2", "--max-requests", "50",
                                "--max-requests-jitter", "10"])
    gen0 = set(srv.wait_workers(2))
    with Load(srv.port, nthreads=3) as load:
        wait_for(lambda: len(lines_with(srv, "max-requests reached: recycling it")) >= 8 or
                 load.failed, 60, "eight recycles", load.report)
        load.wait_more(10)
    assert load.failed == [], "requests failed while workers recycled: " + load.report()
    pids = {int(b) for b in load.all_ok()}
    assert len(pids - gen0) >= 2, "successors served requests: %s vs %s" % (pids, gen0)
    assert load.connections < load.count() / 2, "keep-alive was used: " + load.report()
    assert load.closes >= 1, "a recycled worker ends its kept-alive connections with " \
        "Connection: close: " + load.report()
    assert len(lines_with(srv, "max-requests reached: recycling it once its successor is "
                               "ready")) >= 2
    check_recycles(srv, "max-requests reached")
    no_errors(srv)


def test_max_requests_through_nginx_zero_failures(corral, nginx):
    for attempt in range(3):
        port = free_port()
        srv = corral(app=APP, args=["--socket", "127.0.0.1:%d" % port, "--processes", "2",
                                    "--max-requests", "50"], http=False, wait=False)
        wait_for(lambda: connectable(port) or not srv.alive(), 15, "corral to accept or exit")
        if srv.alive() or "in use" not in srv.log() or attempt == 2:
            break
    wait_listening(srv, port)
    gen0 = set(srv.wait_workers(2))
    web = nginx("127.0.0.1:%d" % port)
    with Load(web.port, nthreads=3) as load:
        wait_for(lambda: len(lines_with(srv, "max-requests reached: recycling it")) >= 8 or
                 load.failed, 60, "eight recycles", load.report)
        load.wait_more(10)
    assert load.failed == [], "requests failed through nginx while workers recycled: " + \
        load.report()
    pids = {int(b) for b in load.all_ok()}
    assert len(pids - gen0) >= 2, (pids, gen0)
    assert not [line for line in web.access().splitlines() if '" 200 ' not in line], \
        "nginx saw only 200s"
    check_recycles(srv, "max-requests reached")
    no_errors(srv)


def test_max_worker_lifetime_recycles_without_failures(corral):
    srv = corral(app=APP, args=["--max-worker-lifetime", "2"])
    (w1,) = srv.wait_workers(1)
    with Load(srv.port, nthreads=2) as load:
        wait_for(lambda: any(int(b) != w1 for b in load.all_ok()) or load.failed, 30,
                 "a new worker to answer the steady client", load.report)
        load.wait_more(10)
    assert load.failed == [], load.report()
    assert lines_with(srv, "worker 1 (pid %d): max-worker-lifetime reached: recycling it" % w1)
    check_recycles(srv, "max-worker-lifetime reached")
    no_errors(srv)


def test_reload_on_rss_recycles_a_grown_worker(corral):
    srv = corral(app=APP, args=["--reload-on-rss", "96"])
    (w1,) = srv.wait_workers(1)
    with Load(srv.port, nthreads=2) as load:
        load.wait_more(5)
        assert int(get_text(srv.port, "/grow?mb=160")) == w1
        wait_for(lambda: any(int(b) != w1 for b in load.all_ok()) or load.failed, 30,
                 "a new worker to answer after the old one grew", load.report)
        load.wait_more(10)
    assert load.failed == [], load.report()
    assert lines_with(srv, "worker 1 (pid %d): reload-on-rss exceeded: recycling it" % w1)
    assert check_recycles(srv, "reload-on-rss exceeded") == 1
    no_errors(srv)


# --- reloads ------------------------------------------------------------------------------------

RELOADS = [("preload", "SIGHUP"), ("lazy-apps", "SIGHUP"), ("preload", "touch-reload")]


@pytest.mark.parametrize("mode,trigger", RELOADS, ids=["-".join(r) for r in RELOADS])
def test_reload_under_load_picks_up_new_code(corral, tmp_path, mode, trigger):
    touch = tmp_path / "reload.touch"
    touch.write_text("")
    args = ["--processes", "2"]
    if mode == "lazy-apps":
        args.append("--lazy-apps")
    if trigger == "touch-reload":
        args += ["--touch-reload", str(touch)]
    srv = corral(app=VERSIONED, args=args)
    gen0 = set(srv.wait_workers(2))
    wait_all_serving(srv, gen0)  # gen0 has read the old code before it changes
    app = str(tmp_path / VERSIONED)
    with Load(srv.port, path="/", nthreads=3) as load:
        load.wait_more(10)
        assert {b.split()[0] for b in load.all_ok()} == {"v1"}
        rewrite(app, versioned_source("v2"))
        if trigger == "SIGHUP":
            srv.signal(signal.SIGHUP)
        else:
            touch_later(str(touch))
        wait_for(lambda: version_of(srv.port) == "v2", 30, "the new code to answer",
                 lambda: "now: %s; %s" % (version_of(srv.port), load.report()))
        gen1 = set(srv.wait_workers(2, exclude=gen0, timeout=30))
        load.wait_more(10)
    assert load.failed == [], "requests failed during the reload: " + load.report()
    last = load.last(5)
    assert all(b.split()[0] == "v2" and int(b.split()[1]) in gen1 for b in last), last
    # the master keeps its pid (a preloaded app's master re-executes itself in place)
    assert srv.alive() and all(int(b.split()[2]) == srv.pid for b in last), (srv.pid, last)
    if mode == "preload":
        assert lines_with(srv, "reload check", "the new code imports cleanly"), srv.log()
        assert lines_with(srv, "re-executing the master with the new code"), srv.log()
    else:
        assert lines_with(srv, "reloading: new workers first"), srv.log()
    assert lines_with(srv, "the new workers are serving; the old ones finish and exit")
    no_errors(srv)


@pytest.mark.parametrize("trigger", ["SIGUSR2", "touch-chain-reload"])
def test_chain_reload_one_worker_at_a_time(corral, tmp_path, trigger):
    touch = tmp_path / "chain.touch"
    touch.write_text("")
    args = ["--processes", "2", "--lazy-apps"]
    if trigger != "SIGUSR2":
        args += ["--touch-chain-reload", str(touch)]
    srv = corral(app=VERSIONED, args=args)
    gen0 = set(srv.wait_workers(2))
    app = str(tmp_path / VERSIONED)
    with Load(srv.port, path="/", nthreads=3) as load:
        load.wait_more(10)
        rewrite(app, versioned_source("v2"))
        if trigger == "SIGUSR2":
            srv.signal(signal.SIGUSR2)
        else:
            touch_later(str(touch))
        srv.wait_log("chain reload done", timeout=40)
        gen1 = set(srv.wait_workers(2, exclude=gen0, timeout=30))
        wait_for(lambda: version_of(srv.port) == "v2", 30, "the new code to answer")
        load.wait_more(10)
    assert load.failed == [], "requests failed during the chain reload: " + load.report()
    last = load.last(5)
    assert all(b.split()[0] == "v2" and int(b.split()[1]) in gen1 for b in last), last

    lines = srv.log().splitlines()
    start = log_index(lines, "chain reload: one worker at a time")
    assert start is not None, srv.log()
    replacing = [i for i, line in enumerate(lines) if "chain reload: replacing worker" in line]
    done = log_index(lines, "chain reload done")
    spawned = [i for i, line in enumerate(lines) if "spawned worker" in line and i > start]
    assert len(replacing) == 2, "\n".join(lines)
    replaced = {int(lines[i].rsplit("(pid ", 1)[1].split(")")[0]) for i in replacing}
    assert replaced == gen0, (replaced, gen0)
    # one at a time: replace, its successor, (it serves), the next, its successor, done
    assert len(spawned) >= 2
    assert start < replacing[0] < spawned[0] < replacing[1] < spawned[1] < done, \
        "\n".join(lines[start:])
    no_errors(srv)


@pytest.mark.parametrize("lazy", [False, True], ids=["preload", "lazy-apps"])
def test_broken_new_code_keeps_old_version_serving(corral, tmp_path, lazy):
    args = ["--processes", "2"] + (["--lazy-apps"] if lazy else [])
    srv = corral(app=VERSIONED, args=args)
    gen0 = set(srv.wait_workers(2))
    app = str(tmp_path / VERSIONED)
    with Load(srv.port, path="/", nthreads=2) as load:
        load.wait_more(10)
        rewrite(app, BROKEN_SOURCE)
        srv.signal(signal.SIGHUP)
        srv.wait_log("reload aborted: the new code does not load", timeout=30)
        load.wait_more(10)
        wait_for(lambda: set(srv.workers()) == gen0, 20, "only the old workers left",
                 lambda: "children: %s, old ones: %s" % (srv.workers(), gen0))
        for _ in range(10):
            body = get_text(srv.port, "/")
            assert body.split()[0] == "v1" and int(body.split()[1]) in gen0, body
        assert "SyntaxError" in srv.log(), "the import error's traceback is logged"
        if not lazy:
            assert lines_with(srv, "reload check"), srv.log()

        # fixed: the next reload goes through
        rewrite(app, versioned_source("v3"))
        srv.signal(signal.SIGHUP)
        wait_for(lambda: version_of(srv.port) == "v3", 30, "the fixed code to answer")
        srv.wait_workers(2, exclude=gen0, timeout=30)
        load.wait_more(5)
    assert load.failed == [], "requests failed around the aborted reload: " + load.report()
    assert srv.alive()


# --- reloads while workers recycle, crashes (issue #10) -----------------------------------------

RECYCLING = [("preload", "SIGHUP"), ("preload", "touch-reload"), ("lazy-apps", "SIGHUP"),
             ("lazy-apps", "SIGUSR2")]


def lines_after(srv, mark, *words):
    return [line for line in srv.log().splitlines()[mark:] if all(w in line for w in words)]


@pytest.mark.parametrize("mode,trigger", RECYCLING, ids=["-".join(r) for r in RECYCLING])
def test_reload_during_continuous_recycling_is_not_lost(corral, tmp_path, mode, trigger):
    """--max-requests 50 under keep-alive load keeps some worker being recycled almost all the
    time. A reload asked for meanwhile is queued, never dropped: it runs (the log says so), the
    new code answers, and no request fails. For SIGUSR2 a second chain reload arrives while the
    first one is still replacing workers: it is carried out too, with the newer code."""
    touch = tmp_path / "reload.touch"
    touch.write_text("")
    args = ["--processes", "2", "--max-requests", "50"]
    if mode == "lazy-apps":
        args.append("--lazy-apps")
    if trigger == "touch-reload":
        args += ["--touch-reload", str(touch)]
    srv = corral(app=VERSIONED, args=args)
    srv.wait_workers(2)
    app = str(tmp_path / VERSIONED)
    final = "v3" if trigger == "SIGUSR2" else "v2"
    with Load(srv.port, path="/", nthreads=3) as load:
        wait_for(lambda: len(lines_with(srv, "max-requests reached: recycling it")) >= 6 or
                 load.failed, 60, "workers recycling", load.report)
        assert {b.split()[0] for b in load.all_ok()} == {"v1"}
        rewrite(app, versioned_source("v2"))
        mark = len(srv.log().splitlines())
        if trigger == "SIGHUP":
            srv.signal(signal.SIGHUP)
        elif trigger == "touch-reload":
            touch_later(str(touch))
        else:
            srv.signal(signal.SIGUSR2)
            wait_for(lambda: lines_after(srv, mark, "SIGUSR2", "chain reload"), 10,
                     "the first chain reload to start", srv.log)
            rewrite(app, versioned_source("v3"))
            srv.signal(signal.SIGUSR2)
        wait_for(lambda: version_of(srv.port) == final, 30, "the new code to answer",
                 lambda: "now: %s; %s" % (version_of(srv.port), load.report()))
        if trigger == "SIGUSR2":
            def both_done():
                lines = srv.log().splitlines()
                second = [i for i in range(mark, len(lines))
                          if "SIGUSR2" in lines[i] and "chain reload" in lines[i]][1:]
                return second and log_index(lines, "chain reload done", start=second[0])
            wait_for(both_done, 30, "the second chain reload to be carried out", srv.log)
        else:
            why = "SIGHUP" if trigger == "SIGHUP" else "reload.touch touched"

            def reloaded():
                lines = srv.log().splitlines()
                began = log_index(lines, why, "reloading:", start=mark)
                return began and log_index(lines, "the new workers are serving", start=began)
            wait_for(reloaded, 30, "the reload to be carried out", srv.log)
        load.wait_more(10)
    assert load.failed == [], "requests failed during the reload: " + load.report()
    assert all(b.split()[0] == final for b in load.last(5)), load.last(5)
    assert srv.alive()
    if mode == "preload":
        assert lines_after(srv, mark, "re-executing the master with the new code"), srv.log()
    no_errors(srv)


CRASHY = """
import os
import signal


def application(environ, start_response):
    if environ["PATH_INFO"] == "/crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def test_crash_storm_is_no_outage(corral):
    """An app where 1 request in 10 segfaults its worker, for 6 s, 8 clients: a worker that
    served requests before it crashed is replaced at once (no start-up back-off), so the other
    requests keep succeeding and a request right after the storm is answered at once."""
    srv = corral(source=CRASHY, args=["--processes", "2", "--threads", "2"])
    srv.wait_workers(2)
    stop = threading.Event()
    lock = threading.Lock()
    tally = {"ok": 0, "failed": [], "crashes": 0}

    def client(seed):
        rnd = random.Random(seed)
        while not stop.is_set():
            crash = rnd.random() < 0.1
            try:
                status, _, _ = helpers.http_request(srv.port, "GET", "/crash" if crash else "/pid",
                                                    timeout=5)
                good = status == 200
            except Exception as e:  # noqa: BLE001 - a crashing worker resets connections
                good, status = False, repr(e)
            with lock:
                if crash:
                    tally["crashes"] += 1
                elif good:
                    tally["ok"] += 1
                else:
                    tally["failed"].append(status)
            stop.wait(0.02)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    stop.wait(6)
    stop.set()
    for t in threads:
        t.join(30)
    others = tally["ok"] + len(tally["failed"])
    report = "%d of %d other requests ok, %d crash requests; failures: %s" % (
        tally["ok"], others, tally["crashes"], tally["failed"][:5])
    deaths = lines_with(srv, "killed by SIGSEGV")
    assert len(deaths) >= 10, "the storm crashed workers: " + report
    # A crash takes the requests in flight in that worker with it; under the sanitizer build
    # every request is several times slower, so more are in flight per crash.
    share = 0.8 if "/asan/" in os.environ.get("CORRAL_BIN", "") else 0.9
    assert tally["ok"] >= share * others and others >= 100, report
    time.sleep(1)
    status, _, body = helpers.http_request(srv.port, "GET", "/pid", timeout=2)
    assert status == 200 and int(body) in srv.workers()
    assert not lines_with(srv, "respawning in"), "no back-off for workers that served"


def test_lazy_import_failure_after_a_recycle_does_not_stop_the_server(corral, tmp_path):
    """--lazy-apps with recycling: the app file breaks, so recycled workers' successors cannot
    import it. That is not "the app is broken" (it loaded before): the master backs off and
    retries, the old workers keep serving, and once the file is fixed the new code is served."""
    srv = corral(app=VERSIONED, args=["--processes", "2", "--lazy-apps", "--max-requests", "30"])
    srv.wait_workers(2)
    app = str(tmp_path / VERSIONED)
    with Load(srv.port, path="/", nthreads=2) as load:
        load.wait_more(10)
        rewrite(app, BROKEN_SOURCE)
        srv.wait_log("could not load the app", timeout=30)
        load.wait_more(40)
        assert srv.alive(), srv.log()
        rewrite(app, versioned_source("v3"))
        wait_for(lambda: version_of(srv.port) == "v3", 40, "the fixed code to answer",
                 lambda: load.report())
        load.wait_more(10)
    assert load.failed == [], load.report()
    assert srv.alive()
    assert not lines_with(srv, "the app cannot be loaded"), srv.log()


# --- adaptive workers -----------------------------------------------------------------------

def test_cheaper_adds_workers_when_busy_and_retires_idle_ones(corral, tmp_path):
    srv = corral(app=APP, args=["--processes", "3", "--cheaper", "1", "--cheaper-idle", "2",
                                "--threads", "1"])
    (w1,) = srv.wait_workers(1)
    first = tmp_path / "first"
    reqs = [start_request(srv.port, "/sleep?s=4&marker=%s" % first)]
    wait_for(first.exists, 20, "the first slow request to reach the app")
    reqs += [start_request(srv.port, "/sleep?s=1.5") for _ in range(3)]
    wait_for(lambda: len(srv.workers()) >= 2, 20, "a second worker while all are busy",
             srv.log)
    served_by = []
    for t, res in reqs:
        t.join(60)
        assert "response" in res and res["response"][0] == 200, res
        served_by.append(int(res["response"][2]))
    assert lines_with(srv, "cheaper: all 1 worker(s) busy: starting one more (2 of at most 3)")
    assert len(set(served_by)) >= 2, "the added worker took some of the queued requests"
    assert srv.wait_workers(1, timeout=25) == [w1], "back to the --cheaper minimum"
    assert lines_with(srv, "idle for 2 s: retiring it")
    assert served_pid(srv) == w1
    no_errors(srv)


# --- privileges -------------------------------------------------------------------------------

def proc_ids(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split()[1:]
    return None


def low_free_port():
    """A free port below 1024 (only root can bind it), or None."""
    for port in random.sample(range(700, 1000), 60):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_uid_gid_dropped_after_binding(public_dir, corral):
    try:
        uid = pwd.getpwnam("nobody").pw_uid
        gid = grp.getgrnam("nogroup").gr_gid
    except KeyError:
        pytest.skip("no user nobody / group nogroup")
    app = os.path.join(public_dir, APP)
    shutil.copy(os.path.join(conftest.APPS, APP), app)
    os.chmod(app, 0o644)
    port = low_free_port()
    assert port, "no free port below 1024"
    srv = corral(args=["--http", "127.0.0.1:%d" % port, "--wsgi-file", app, "--chdir",
                       public_dir, "--processes", "2", "--uid", "nobody", "--gid", "nogroup"],
                 http=False, wait=False)
    srv.port = port
    wait_listening(srv, port)
    workers = srv.wait_workers(2)
    assert lines_with(srv, "running as uid %d, gid %d" % (uid, gid)), srv.log()
    for pid in [srv.pid] + workers:
        assert proc_ids(pid, "Uid") == [str(uid)] * 4, (pid, proc_ids(pid, "Uid"))
        assert proc_ids(pid, "Gid") == [str(gid)] * 4, (pid, proc_ids(pid, "Gid"))
        assert proc_ids(pid, "Groups") == [], "supplementary groups dropped too"
    ids = [int(x) for x in get_text(port, "/ids").split()]
    assert ids[0] in workers and ids[1] == srv.pid and ids[2:] == [uid, uid, gid, gid], ids

    # a graceful reload still works once the master is no longer root
    srv.signal(signal.SIGHUP)
    new = srv.wait_workers(2, exclude=workers, timeout=30)
    ids = [int(x) for x in get_text(port, "/ids").split()]
    assert ids[0] in new and ids[2:] == [uid, uid, gid, gid], ids
    assert proc_ids(srv.pid, "Uid") == [str(uid)] * 4


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_unix_socket_belongs_to_the_workers_user(public_dir, corral):
    """With --uid/--gid, a UNIX socket the master creates as root is handed to that user and
    group (nginx running as it can connect); a --vacuum that cannot remove it says why."""
    try:
        uid = pwd.getpwnam("nobody").pw_uid
        gid = grp.getgrnam("nogroup").gr_gid
    except KeyError:
        pytest.skip("no user nobody / group nogroup")
    app = os.path.join(public_dir, APP)
    shutil.copy(os.path.join(conftest.APPS, APP), app)
    os.chmod(app, 0o644)
    path = os.path.join(public_dir, "app.sock")
    srv = corral(args=["--http", path, "--wsgi-file", app, "--chdir", public_dir, "--uid",
                       "nobody", "--gid", "nogroup", "--vacuum"], http=False, wait=False)
    wait_for(lambda: os.path.exists(path) or not srv.alive(), 15, "the socket file", srv.log)
    workers = srv.wait_workers(1)
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (uid, gid), (st.st_uid, st.st_gid, srv.log())

    def answered():
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    return data
                data += chunk
    reply = answered()
    assert reply.startswith(b"HTTP/1.1 200") and int(reply.split(b"\r\n\r\n")[1]) in workers
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit(20) is not None
    # the master runs as nobody now, and public_dir is root's: it cannot remove the file
    assert lines_with(srv, "vacuum: cannot remove %s: Permission denied" % path), srv.log()


# --- systemd ----------------------------------------------------------------------------------

class ActivatedServer(conftest.Server):
    """A corral started the way systemd starts a socket-activated service: the listening
    socket as descriptor 3, LISTEN_FDS=1 and LISTEN_PID=<its own pid> (set by a /bin/sh
    that then execs corral, keeping the pid)."""

    def __init__(self, name, corral_args, cwd, log_path, port, env, listen_fd):
        self.name = name
        self.dir = cwd
        self.log_path = log_path
        self.port = port
        self.seen_workers = set()
        self.exe = os.path.realpath(conftest.corral_bin())
        self.argv = ["/bin/sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', "sh",
                     conftest.corral_bin()] + corral_args
        self._logf = open(log_path, "ab")
        env = dict(env, LISTEN_FDS="1")
        env.pop("LISTEN_PID", None)
        self.proc = subprocess.Popen(
            self.argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._logf,
            stderr=subprocess.STDOUT, env=env, start_new_session=True,
            close_fds=False, preexec_fn=lambda: self._fd3(listen_fd))
        self.pid = self.proc.pid

    @staticmethod
    def _fd3(fd):
        """In the child before exec: the socket becomes descriptor 3, inheritable."""
        if fd != 3:
            os.dup2(fd, 3)
        os.set_inheritable(3, True)


def test_socket_activation_uses_the_passed_socket(request, tmp_path):
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(128)
    port = lsock.getsockname()[1]
    shutil.copy(os.path.join(conftest.APPS, APP), str(tmp_path / APP))
    srv = ActivatedServer("server1", ["--http", "127.0.0.1:%d" % port, "--wsgi-file",
                                      str(tmp_path / APP), "--processes", "2"],
                          str(tmp_path), str(tmp_path / "server1.log"), port,
                          conftest.server_env(), lsock.fileno())
    request.node.corral_servers = [srv]
    try:
        # The port already accepts (our socket): wait for an answer, not a connect.
        def answers():
            if not srv.alive():
                pytest.fail("corral exited with status %s\nlog:\n%s"
                            % (srv.proc.returncode, srv.log()))
            try:
                return int(get_text(port, "/pid", timeout=3))
            except (OSError, AssertionError):
                return None
        wait_for(answers, 15, "corral to answer on the passed socket (a blocking one, as "
                 "systemd passes by default)", srv.log)
        workers = srv.wait_workers(2)
        assert {served_pid(srv) for _ in range(10)} <= set(workers)
        assert lines_with(srv, "listening on 127.0.0.1:%d (http), inherited" % port), srv.log()
        assert srv.proc.poll() is None
        lsock.close()  # corral keeps serving on its own copy
        assert served_pid(srv) in workers
    finally:
        lsock.close()
        srv.stop()


def recv_or_fail(sock, srv, what):
    try:
        return sock.recv(4096).decode()
    except socket.timeout:
        pytest.fail("no %s datagram on NOTIFY_SOCKET within %ss\nlog:\n%s"
                    % (what, sock.gettimeout(), srv.log()))


def test_notify_socket_ready_and_stopping(corral):
    d = tempfile.mkdtemp(prefix="crn", dir="/tmp")
    path = os.path.join(d, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        sock.settimeout(20)
        srv = corral(app=APP, args=["--processes", "2"], env={"NOTIFY_SOCKET": path},
                     wait=False)
        msg = recv_or_fail(sock, srv, "READY=1")
        assert "READY=1" in msg.split("\n"), msg
        # READY=1 means the workers accept: a request is answered right away
        assert len(srv.workers()) == 2
        assert served_pid(srv) in srv.workers()
        srv.signal(signal.SIGTERM)
        msg = recv_or_fail(sock, srv, "STOPPING=1")
        assert "STOPPING=1" in msg.split("\n"), msg
        assert srv.wait_exit(20) is not None
    finally:
        sock.close()
        shutil.rmtree(d, ignore_errors=True)
