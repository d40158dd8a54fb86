"""
test_master.py - the master process: respawning dead workers, graceful reload on SIGHUP (under
load, with and without --lazy-apps, picking up new code), graceful and immediate stops, and
fork hooks in a preloaded app. Every wait is a bounded poll; nothing asserts on timing.
"""
import json
import os
import signal
import threading
import time

import pytest

import helpers
from helpers import Closed, build_request, wait_for


def served_pid(srv):
    status, _, body = srv.get("/pid")
    assert status == 200
    return int(body)


# --- respawn ------------------------------------------------------------------------------------

def lines_with(srv, *words):
    return [line for line in srv.log().splitlines() if all(w in line for w in words)]


@pytest.mark.parametrize("processes", [1, 2])
def test_sigkill_worker_is_respawned(corral, processes):
    srv = corral(app="routes.py", args=["--processes", processes])
    before = srv.wait_workers(processes)
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    after = srv.wait_workers(processes, exclude=[victim])
    assert victim not in after
    for _ in range(20):
        assert served_pid(srv) in after
    wait_for(lambda: lines_with(srv, str(victim), "SIGKILL"), 10,
             "a log line naming the dead worker's pid and SIGKILL", lambda: "log:\n" + srv.log())


@pytest.mark.parametrize("path,signame", [("/abort", "SIGABRT"), ("/segv", "SIGSEGV")])
def test_worker_crash_is_reported_and_replaced(corral, path, signame):
    srv = corral(app="routes.py")
    (victim,) = srv.wait_workers(1)
    with srv.raw() as c:
        c.send(build_request("GET", path + "?who=me"))
        try:
            r = c.read_response()
            assert r.status >= 500, "a request whose worker died cannot succeed: %r" % r
        except (Closed, ConnectionResetError):
            pass
    (new,) = srv.wait_workers(1, exclude=[victim])
    assert served_pid(srv) == new
    wait_for(lambda: lines_with(srv, signame, path, str(victim)), 10,
             "a log line naming the pid, %s and the request" % signame,
             lambda: "log:\n" + srv.log())


def test_two_processes(corral):
    srv = corral(app="routes.py", args=["--processes", "2"])
    workers = srv.wait_workers(2)
    assert srv.pid not in workers
    seen = {served_pid(srv) for _ in range(20)}
    assert seen <= set(workers), (seen, workers)


def test_workers_exit_with_master(corral):
    srv = corral(app="routes.py", args=["--processes", "3"])
    workers = srv.wait_workers(3)
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit(20) is not None
    wait_for(lambda: not any(helpers.pid_alive(w) for w in workers), 10,
             "workers to exit with the master")


@pytest.mark.parametrize("threads", [1, 4])
def test_workers_stop_when_the_master_is_killed(corral, threads):
    """SIGKILL the master (the OOM killer does): the workers notice at once, let the request in
    flight finish, and exit within 3 s; nothing is left holding the port."""
    srv = corral(app="rp_slots.py", args=["--processes", 2, "--threads", threads])
    workers = srv.wait_workers(2)
    result = {}

    def slow():
        result["r"] = srv.get("/sleep?s=1.5", timeout=20)
    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)  # the request is inside the app
    srv.signal(signal.SIGKILL)
    t.join(10)
    assert result["r"][0] == 200 and result["r"][2].endswith(b"slept"), result
    wait_for(lambda: not any(helpers.pid_alive(w) for w in workers), 3,
             "the orphaned workers to exit", srv.log)
    assert "the master (pid %d) is gone" % srv.pid in srv.log()


TINY = """
import os


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"""


def cpus_allowed(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Cpus_allowed_list:"):
                return line.split()[1]
    return None


def test_seventy_workers_have_seventy_numbers(corral):
    """Worker numbers go up to --processes (they were capped at 65 past the 64th), and pooled
    workers, which keep to one CPU chosen by their number, spread over the CPUs past 64 too."""
    srv = corral(source=TINY, args=["--processes", 70, "--threads", 2])
    spawned = {}

    def all_spawned():
        for line in lines_with(srv, "spawned worker"):
            words = line.split("spawned worker ", 1)[1].split()
            spawned[int(words[0])] = int(words[2].rstrip(")"))
        return len(spawned) >= 70
    wait_for(all_spawned, 60, "70 workers spawned", srv.log)
    assert sorted(spawned) == list(range(1, 71)), sorted(spawned)
    assert served_pid(srv) in spawned.values()
    if len(os.sched_getaffinity(0)) > 1:
        late = [pid for number, pid in spawned.items() if number > 64]
        wait_for(lambda: len({cpus_allowed(pid) for pid in late}) > 1, 20,
                 "workers 65..70 to keep to different CPUs",
                 lambda: str({pid: cpus_allowed(pid) for pid in late}))


# --- reload -------------------------------------------------------------------------------------

class Load:
    """Client threads looping GET /pid, each on a new connection, recording every outcome."""

    def __init__(self, srv, nthreads=2):
        self.srv = srv
        self.stop = threading.Event()
        self.ok = []
        self.failed = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(nthreads)]

    def run(self):
        while not self.stop.is_set():
            try:
                status, _, body = self.srv.get("/pid", timeout=60)
                with self.lock:
                    if status == 200:
                        self.ok.append(int(body))
                    else:
                        self.failed.append("status %d: %r" % (status, body[:200]))
            except Exception as e:  # any failure counts
                with self.lock:
                    self.failed.append(repr(e))

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
            return len(self.ok)

    def wait_more(self, n, timeout=30):
        target = self.count() + n
        wait_for(lambda: self.count() >= target, timeout, "%d more successful requests" % n,
                 lambda: "failures so far: %s" % self.failed[:5])


@pytest.mark.parametrize("lazy", [False, True], ids=["preload", "lazy-apps"])
def test_sighup_under_load_drops_nothing(corral, lazy):
    args = ["--processes", "2"] + (["--lazy-apps"] if lazy else [])
    srv = corral(app="routes.py", args=args)
    gen0 = set(srv.wait_workers(2))
    with Load(srv) as load:
        load.wait_more(20)
        srv.signal(signal.SIGHUP)
        gen1 = set(srv.wait_workers(2, exclude=gen0, timeout=30))
        load.wait_more(20)
        srv.signal(signal.SIGHUP)
        gen2 = set(srv.wait_workers(2, exclude=gen0 | gen1, timeout=30))
        load.wait_more(20)
    assert load.failed == [], "requests failed during reload: %s" % load.failed[:10]
    assert set(load.ok[-10:]) <= gen2, "the last requests are served by the new workers"
    assert srv.alive() and srv.pid not in gen2


@pytest.mark.parametrize("lazy", [False, True], ids=["preload", "lazy-apps"])
def test_sighup_reloads_changed_code(corral, tmp_path, lazy):
    src = ("VERSION = %r\n"
           "def application(environ, start_response):\n"
           "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
           "    return [VERSION.encode()]\n")
    srv = corral(source=src % "v1", args=["--lazy-apps"] if lazy else [])
    assert srv.get("/")[2] == b"v1"
    app = tmp_path / "app.py"
    app.write_text(src % "version-two")
    st = app.stat()
    os.utime(app, (st.st_atime + 10, st.st_mtime + 10))  # no stale bytecode, even by mtime
    srv.signal(signal.SIGHUP)
    wait_for(lambda: srv.get("/")[2] == b"version-two", 30, "the new code after SIGHUP",
             lambda: "now: %r" % srv.get("/")[2])


# --- stopping -----------------------------------------------------------------------------------

def start_slow_request(srv, tmp_path, seconds):
    """Starts GET /sleep in a thread; returns (thread, result dict) once the app is in it."""
    marker = tmp_path / ("slow-%s.started" % seconds)
    result = {}

    def run():
        try:
            result["response"] = srv.get("/sleep?s=%s&marker=%s" % (seconds, marker), timeout=90)
        except Exception as e:
            result["error"] = repr(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_for(marker.exists, 20, "the slow request to reach the app")
    return t, result


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_graceful_stop_finishes_inflight_request(corral, tmp_path, sig):
    srv = corral(app="routes.py")
    workers = srv.wait_workers(1)
    t, result = start_slow_request(srv, tmp_path, 2)
    srv.signal(sig)
    t.join(60)
    assert "error" not in result, result
    status, _, body = result["response"]
    assert status == 200 and body == b"slept"
    assert srv.wait_exit(30) is not None, "the master should exit after the graceful stop"
    wait_for(lambda: not any(helpers.pid_alive(w) for w in workers), 10, "workers to exit")


def test_graceful_timeout_bounds_the_stop(corral, tmp_path):
    srv = corral(app="routes.py", args=["--graceful-timeout", "1"])
    workers = srv.wait_workers(1)
    t, result = start_slow_request(srv, tmp_path, 120)
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit(30) is not None, "--graceful-timeout 1 must cut a 120 s request"
    wait_for(lambda: not any(helpers.pid_alive(w) for w in workers), 10, "workers to exit")
    t.join(30)
    assert "response" not in result or result["response"][0] != 200


def test_sigquit_exits_promptly(corral, tmp_path):
    srv = corral(app="routes.py", args=["--processes", "2"])
    workers = srv.wait_workers(2)
    t, result = start_slow_request(srv, tmp_path, 120)
    srv.signal(signal.SIGQUIT)
    assert srv.wait_exit(20) is not None, "SIGQUIT must not wait for a 120 s request"
    wait_for(lambda: not any(helpers.pid_alive(w) for w in workers), 10, "workers to exit")
    t.join(30)
    assert "response" not in result or result["response"][0] != 200


def test_stop_refuses_new_connections_afterwards(corral):
    srv = corral(app="routes.py")
    port = srv.port
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit(30) is not None

    def refused():
        try:
            helpers.http_request(port, "GET", "/hello", timeout=5)
            return False
        except OSError:
            return True
    wait_for(refused, 10, "the port to stop accepting")


# --- fork hooks ---------------------------------------------------------------------------------

def test_register_at_fork_runs_in_preloaded_workers(corral):
    srv = corral(app="atfork.py", args=["--processes", "2"])
    workers = srv.wait_workers(2)
    for _ in range(6):
        out = json.loads(srv.get("/")[2])
        assert out["pid"] in workers
        assert out["loaded_in"] == srv.pid, "without --lazy-apps the master imports the app"
        assert out["pid"] in out["fired"]["after_in_child"], out


def test_lazy_apps_import_in_each_worker(corral):
    srv = corral(app="atfork.py", args=["--processes", "2", "--lazy-apps"])
    workers = srv.wait_workers(2)
    out = json.loads(srv.get("/")[2])
    assert out["pid"] in workers
    assert out["loaded_in"] == out["pid"], "with --lazy-apps each worker imports the app"


def test_respawned_worker_has_fresh_state(corral):
    """A worker respawned after a crash gets the preloaded app again, with fork hooks run."""
    srv = corral(app="atfork.py")
    (w,) = srv.wait_workers(1)
    os.kill(w, signal.SIGKILL)
    (w2,) = srv.wait_workers(1, exclude=[w])
    out = json.loads(srv.get("/")[2])
    assert out["pid"] == w2 and w2 in out["fired"]["after_in_child"]
    assert w not in out["fired"]["after_in_child"]
