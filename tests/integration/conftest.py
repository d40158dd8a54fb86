"""
conftest.py - the `corral` fixture: starts a real corral binary for one test.

    def test_x(corral):
        srv = corral(app="routes.py", args=["--processes", "2"])
        status, headers, body = srv.get("/pid")

`corral(...)` copies an app from tests/integration/apps/ (or writes given source) and/or an ini
into the test's tmp dir, picks a free 127.0.0.1 port, starts $CORRAL_BIN with stdout and stderr
going to one log file, and waits (bounded) until the port accepts connections; if the process
exits first, the test fails with the log. On teardown every server is stopped by PID: SIGTERM,
a bounded wait, then SIGKILL (workers too, if the master left any behind). When a test fails,
each server's log is attached to the failure report as a "corral log" section.

Everything here is parallel-safe: no fixed ports, no fixed paths, every file in tmp_path.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import helpers  # noqa: E402  (needs HERE on sys.path)

REPO = os.path.dirname(os.path.dirname(HERE))
APPS = os.path.join(HERE, "apps")
START_TIMEOUT = 15.0  # seconds for the port to accept (Django imports on a loaded machine)
STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL on teardown


def corral_bin():
    return os.environ.get("CORRAL_BIN") or os.path.join(REPO, "build", "release", "corral")


def server_env(extra=None):
    """The environment corral runs with: ours, minus pyenv's Python variables."""
    env = dict(os.environ)
    for k in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYENV_VERSION"):
        env.pop(k, None)
    # No __pycache__ in the tmp dirs, and no stale bytecode when a reload test edits a file.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Stores each phase's report on the item and attaches server logs to failures."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.failed:
        servers = list(getattr(item, "corral_servers", []))
        servers += [v for v in getattr(item, "funcargs", {}).values()
                    if isinstance(v, Server) and v not in servers]
        for srv in servers:
            rep.sections.append(("corral log: %s" % srv.name, srv.log() or "(empty)"))


class Server:
    """One corral process. Attributes: port, pid, proc, dir, log_path."""

    def __init__(self, name, argv, cwd, log_path, port, env):
        self.name = name
        self.argv = argv
        self.dir = cwd
        self.log_path = log_path
        self.port = port
        self.seen_workers = set()
        self.exe = os.path.realpath(argv[0])
        self._logf = open(log_path, "ab")
        self.proc = subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._logf,
            stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.pid = self.proc.pid

    # --- inspection -------------------------------------------------------------------------
    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def alive(self):
        return self.proc.poll() is None

    def workers(self):
        """Pids of the master's current children (its workers)."""
        pids = helpers.children(self.pid)
        self.seen_workers.update(pids)
        return pids

    def wait_workers(self, n, timeout=15.0, exclude=()):
        """Polls until the master has exactly n children, none of them in 'exclude'."""
        def ok():
            w = self.workers()
            return w if len(w) == n and not set(w) & set(exclude) else None
        w = helpers.wait_for(ok, timeout, "%d workers (excluding %s)" % (n, sorted(exclude)),
                             lambda: "children now: %s" % self.workers())
        return w

    def wait_log(self, text, timeout=10.0):
        """Polls until 'text' appears in the log; returns the log."""
        helpers.wait_for(lambda: text in self.log(), timeout, "%r in the log" % text)
        return self.log()

    def wait_exit(self, timeout=STOP_TIMEOUT):
        """Waits for the master to exit; returns its status or None if still running."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig):
        os.kill(self.pid, sig)

    # --- requests ---------------------------------------------------------------------------
    def request(self, method, path, body=None, headers=None, timeout=30.0):
        return helpers.http_request(self.port, method, path, body, headers, timeout)

    def get(self, path, headers=None, timeout=30.0):
        return self.request("GET", path, None, headers, timeout)

    def raw(self, timeout=30.0):
        """A helpers.RawConn connected to this server."""
        return helpers.RawConn(self.port, timeout)

    # --- teardown ---------------------------------------------------------------------------
    def stop(self):
        if self.alive():
            self.workers()
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.wait_exit(STOP_TIMEOUT) is None:
                self.workers()
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        # A worker outliving its master is a bug the tests notice elsewhere; here we only
        # make sure nothing we started keeps running.
        for pid in self.seen_workers:
            if helpers.pid_alive(pid) and helpers.parent_of(pid) in (1, self.pid) \
                    and helpers.exe_of(pid) == self.exe:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._logf.close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(srv, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not srv.alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.05)
    return None


class Factory:
    """Starts servers in one directory and stops them all at the end (see `corral`)."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.servers = []

    def __call__(self, app=None, source=None, args=(), ini=None, http=True, env=None,
                 files=None, wait=True, ini_name="site.ini"):
        tmp_path = self.tmp_path
        for rel, data in (files or {}).items():
            p = tmp_path / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, bytes):
                p.write_bytes(data)
            else:
                p.write_text(data)
        base = []
        if app is not None:
            src = os.path.join(APPS, app)
            dst = str(tmp_path / app)
            if os.path.isdir(src):
                if not os.path.exists(dst):
                    shutil.copytree(src, dst)
            else:
                shutil.copy(src, dst)
                base += ["--wsgi-file", dst]
        if source is not None:
            (tmp_path / "app.py").write_text(source)
            base += ["--wsgi-file", str(tmp_path / "app.py")]
        for attempt in range(3):
            port = _free_port()
            argv = [corral_bin()]
            if ini is not None:
                ini_path = tmp_path / ini_name
                ini_path.write_text(ini.replace("{port}", str(port)))
                argv += ["--ini", str(ini_path)]
            elif http:
                argv += ["--http", "127.0.0.1:%d" % port]
            argv += base + [str(a) for a in args]
            name = "server%d" % (len(self.servers) + 1)
            log_path = str(tmp_path / ("%s.log" % name))
            srv = Server(name, argv, str(tmp_path), log_path, port, server_env(env))
            self.servers.append(srv)
            if not wait:
                return srv
            ready = _wait_ready(srv, START_TIMEOUT)
            if ready:
                srv.workers()
                return srv
            srv.stop()
            if ready is None:
                pytest.fail("corral did not accept on port %d within %ss\nargv: %s\nlog:\n%s"
                            % (port, START_TIMEOUT, argv, srv.log()))
            if "in use" in srv.log() and attempt < 2:
                continue  # lost a race for the port with another test: pick a new one
            pytest.fail("corral exited with status %s before accepting\nargv: %s\nlog:\n%s"
                        % (srv.proc.returncode, argv, srv.log()))

    def stop_all(self):
        for srv in self.servers:
            srv.stop()


@pytest.fixture
def corral(request, tmp_path):
    """Factory: corral(app=None, source=None, args=(), ini=None, http=True, env=None,
    files=None, wait=True, ini_name="site.ini") -> Server, stopped at the end of the test.

    app     a file or directory name under apps/, copied into tmp_path; a .py file becomes
            --wsgi-file, a directory is only copied (pass --module/--pythonpath in args)
    source  Python source written to tmp_path/app.py and served with --wsgi-file
    args    extra command-line arguments
    ini     text of an ini file written to tmp_path/<ini_name> (default site.ini) and passed
            as --ini instead of --http; "{port}" in it is replaced by the chosen port
    http    add --http 127.0.0.1:PORT (ignored with ini)
    env     extra environment variables for the corral process
    files   {relative name: str or bytes} written into tmp_path first
    wait    wait until the port accepts (False: return at once)
    """
    factory = Factory(tmp_path)
    request.node.corral_servers = factory.servers
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def corral_module(tmp_path_factory):
    """The same factory, for servers shared by all tests of a module (read-only tests such as
    the error table). Tests that use one get its log attached when they fail."""
    factory = Factory(tmp_path_factory.mktemp("corral"))
    yield factory
    factory.stop_all()


@pytest.fixture
def run_corral(tmp_path):
    """run_corral(args, timeout=15, env=None) -> CompletedProcess (text), for a corral that is
    expected to exit by itself (--help, config errors, import errors). Fails the test if it is
    still running after 'timeout' seconds (it is killed by PID, workers included)."""
    def run(args, timeout=15.0, env=None):
        argv = [corral_bin()] + [str(a) for a in args]
        proc = subprocess.Popen(argv, cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=server_env(env), start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kids = helpers.children(proc.pid)
            proc.kill()
            for pid in kids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            out, err = proc.communicate(10)
            pytest.fail("corral %s still running after %ss\nstdout:\n%s\nstderr:\n%s"
                        % (args, timeout, out.decode(errors="replace"),
                           err.decode(errors="replace")))
        return subprocess.CompletedProcess(argv, proc.returncode,
                                           out.decode("utf-8", "replace"),
                                           err.decode("utf-8", "replace"))
    return run
