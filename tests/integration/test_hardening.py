"""
test_hardening.py - what a slow client, a hostile app or a broken response cannot do to corral:
long downloads are not cut while the client reads, a response cut for want of a reader is
logged, and the app cannot change (or break) the head after start_response checked it.
"""
import os
import socket
import subprocess
import time

import pytest

from helpers import RawConn, build_request, pattern_bytes, sha256

# --- long downloads --------------------------------------------------------------------------

DOWNLOAD_APP = r'''
import os

SIZE = int(os.environ["DL_SIZE"])
PATH = os.environ["DL_FILE"]
BLOB = bytes(range(256)) * (SIZE // 256)

def application(environ, start_response):
    kind = environ["PATH_INFO"].strip("/")
    if kind == "file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(PATH, "rb"))
    if kind == "bytes":
        start_response("200 OK", [("Content-Length", str(SIZE))])
        return [BLOB]
    def gen():
        for i in range(0, SIZE, 65536):
            yield BLOB[i:i + 65536]
    start_response("200 OK", [])
    return gen()
'''

DL_SIZE = 24 << 20  # 24 MiB at ~6 MiB/s: about 4 s, twice --http-timeout


def read_at_rate(port, path, rate, timeout=30.0):
    """GETs path and reads the response at about 'rate' bytes/s; returns (head, body)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    s.sendall(build_request("GET", path, headers={"Connection": "close"}))
    data = bytearray()
    start = time.monotonic()
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            ahead = len(data) / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    finally:
        s.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return head, body


def dechunk(body):
    out, pos = bytearray(), 0
    while True:
        eol = body.index(b"\r\n", pos)
        n = int(body[pos:eol], 16)
        if n == 0:
            return bytes(out)
        out += body[eol + 2:eol + 2 + n]
        pos = eol + 2 + n + 2


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("kind", ["file", "bytes", "generator"])
def test_long_download_is_not_cut_while_the_client_reads(corral, tmp_path, kind, threads):
    """--http-timeout 2 and a download that takes about 4 s at a steady rate: the client gets
    every byte (the timeout is one of inactivity, not a deadline for the whole response)."""
    blob = bytes(range(256)) * (DL_SIZE // 256)
    path = tmp_path / "big.bin"
    path.write_bytes(blob)
    srv = corral(source=DOWNLOAD_APP, args=["--http-timeout", 2, "--threads", threads],
                 env={"DL_SIZE": str(DL_SIZE), "DL_FILE": str(path)})
    head, body = read_at_rate(srv.port, "/" + kind, 6 << 20)
    assert head.startswith(b"HTTP/1.1 200"), head
    if b"chunked" in head.lower():
        body = dechunk(body)
    assert len(body) == DL_SIZE and sha256(body) == sha256(blob), \
        "got %d of %d bytes" % (len(body), DL_SIZE)
    assert "response cut" not in srv.log()


def test_a_client_that_stops_reading_is_dropped_and_logged(corral, tmp_path):
    """A client that reads nothing for --http-timeout is dropped, and the log says which
    response was cut, after how many bytes, and why."""
    srv = corral(source=DOWNLOAD_APP, args=["--http-timeout", 1],
                 env={"DL_SIZE": str(DL_SIZE), "DL_FILE": str(tmp_path / "none")})
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", srv.port))
    try:
        s.sendall(build_request("GET", "/bytes"))
        log = srv.wait_log("response cut", timeout=10)
    finally:
        s.close()
    line = [x for x in log.splitlines() if "response cut" in x][0]
    assert "GET /bytes" in line and "no progress" in line, line


# --- the app cannot change the head after start_response -------------------------------------

MUTATING_APP = r'''
def application(environ, start_response):
    how = environ["PATH_INFO"].strip("/")
    headers = [("Content-Type", "text/plain")]
    start_response("200 OK", headers)
    if how == "split":
        headers.append(("X-Evil", "a\r\nSet-Cookie: injected=1"))
    elif how == "desync":
        headers.append(("Content-Length", "0"))
    elif how == "junk":
        headers.append("not a tuple")
        headers.append((1, 2))
    elif how == "clear":
        headers.clear()
    return [b"body"]
'''


@pytest.mark.parametrize("how", ["split", "desync", "junk", "clear"])
def test_app_changing_its_header_list_later_changes_nothing(corral, how):
    """The head is built from corral's own checked copy of the list start_response got: what
    the app does to its list afterwards never reaches the client, and cannot crash the
    worker."""
    srv = corral(source=MUTATING_APP)
    pids = srv.wait_workers(1)
    with srv.raw() as c:
        r = c.request("GET", "/" + how)
        assert r.status == 200 and r.body == b"body"
        assert r.header("content-type") == "text/plain"
        assert r.header("x-evil") is None and r.header("set-cookie") is None
        assert r.header("content-length") == "4", r.headers
        assert c.request("GET", "/again").status == 200  # same connection, same worker
    assert srv.workers() == pids


BAD_FRAMING_APP = r'''
def application(environ, start_response):
    how = environ["PATH_INFO"].strip("/")
    if how == "two-lengths":
        start_response("200 OK", [("Content-Length", "4"), ("Content-Length", "0")])
    elif how == "interim":
        start_response("103 Early Hints", [("Link", "</a.css>; rel=preload")])
    elif how == "second-call":
        start_response("200 OK", [("Content-Length", "4")])
        try:
            start_response("500 Oops", [("Content-Length", "x")], (None, None, None))
        except Exception:
            pass
    return [b"body"]
'''


@pytest.mark.parametrize("how,status", [("two-lengths", 500), ("interim", 500),
                                        ("second-call", 200)])
def test_framing_the_app_cannot_send(corral, how, status):
    """Two Content-Length headers or a 1xx as the final status would desync a keep-alive
    connection (or a proxy in front): 500 instead. A second start_response that is rejected
    changes nothing of the first."""
    srv = corral(source=BAD_FRAMING_APP)
    with srv.raw() as c:
        r = c.request("GET", "/" + how)
        assert r.status == status, (r.status, r.headers, r.body)
        if status == 200:
            assert r.body == b"body" and r.header("content-length") == "4"
        assert c.request("GET", "/second-call").status == 200


# --- wsgi.input after its request ------------------------------------------------------------

KEEP_INPUT_APP = r'''
kept = []

def application(environ, start_response):
    if environ["PATH_INFO"] == "/keep":
        kept.append(environ["wsgi.input"])
        body = environ["wsgi.input"].read(2)
    else:
        old = kept.pop()
        body = b"%r %r %r %r" % (old.read(), old.read(5), old.readline(), old.readlines())
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


def test_wsgi_input_kept_after_its_request_reads_as_empty(corral):
    """An app that keeps wsgi.input past its request (for a background thread, or the next
    request) reads it as empty: no crash, no other request's bytes."""
    srv = corral(source=KEEP_INPUT_APP)
    with srv.raw() as c:
        assert c.request("POST", "/keep", b"abcdef").body == b"ab"
        r = c.request("POST", "/use", b"other request's body")
        assert r.status == 200 and r.body == b"b'' b'' b'' []", r.body


# --- out of file descriptors -----------------------------------------------------------------

def test_out_of_descriptors_pauses_accepting_instead_of_spinning(corral):
    """A worker that runs out of descriptors (RLIMIT_NOFILE 64, 120 connections) stops
    accepting for a moment instead of spinning on the listener: little CPU, a few log lines,
    and once the connections close it serves again."""
    srv = corral(app="rp_slots.py")
    (worker,) = srv.wait_workers(1)
    subprocess.run(["prlimit", "--pid", str(worker), "--nofile=64:64"], check=True)
    conns = []
    try:
        for _ in range(120):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            conns.append(s)
        cpu0 = proc_cpu_seconds(worker)
        time.sleep(2)
        cpu = proc_cpu_seconds(worker) - cpu0
        lines = [x for x in srv.log().splitlines() if "accept on" in x]
        assert cpu < 0.5, "the worker spun: %.2f s of CPU in 2 s" % cpu
        assert 0 < len(lines) <= 40, "%d accept lines in the log" % len(lines)
    finally:
        for s in conns:
            s.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            assert srv.get("/pid", timeout=5)[0] == 200
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def proc_cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


FILENO_APP = r'''
import io

class Liar(io.BytesIO):
    """A file-like object whose fileno() is not a descriptor of ours."""
    def fileno(self):
        return (1 << 32) + 2   # truncated to int, this would be stderr

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return environ["wsgi.file_wrapper"](Liar(b"the wrapped bytes"), 4)
'''


def test_file_wrapper_with_an_out_of_range_fileno_is_iterated(corral):
    """file_wrapper over an object whose fileno() is out of int range: corral reads the object
    instead of sending whatever descriptor the truncated number names."""
    srv = corral(source=FILENO_APP)
    status, _, body = srv.get("/")
    assert (status, body) == (200, b"the wrapped bytes")


# --- log lines cannot be forged ----------------------------------------------------------------

def test_uwsgi_vars_cannot_forge_log_lines(corral, tmp_path):
    """CR/LF in uwsgi vars (REQUEST_URI, REMOTE_ADDR) appear escaped in the access log: a
    client behind a careless proxy cannot write a line of its own into corral's log."""
    import uwsgi_client
    sock = str(tmp_path / "uw.sock")
    srv = corral(app="rp_slots.py", args=["--socket", sock], http=False, wait=False)
    helpers_wait_path(sock)
    forged = "2026-01-01 00:00:00.000Z master (pid 1) error: forged"
    env = dict(uwsgi_client.nginx_env(uri="/pid?x=\r\n" + forged),
               REMOTE_ADDR="10.0.0.1\r\n" + forged)
    out = uwsgi_client.request(sock, env)
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
    log = srv.wait_log("=> 200")
    assert not [line for line in log.splitlines() if line.startswith(forged[:20])], log
    assert "\\x0d\\x0a" in log, log


def helpers_wait_path(path, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, "%s did not appear" % path
        time.sleep(0.05)


# --- slow bodies ---------------------------------------------------------------------------------

def test_slow_bodies_hold_what_they_sent_not_what_they_declared(corral):
    """100 connections declare a 1 MiB body and send 10 bytes of it: the memory the worker
    takes for them (its data segment; untouched pages do not show in RSS) grows with what
    came, a few MiB at most, not with what was declared (100 MiB)."""
    srv = corral(app="echo.py")
    (worker,) = srv.wait_workers(1)
    before = data_kib(worker)
    conns = []
    try:
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(build_request("POST", "/?mode=read", b"", {"Content-Length": str(1 << 20)}))
            conns.append(s)
        time.sleep(0.5)  # the heads are in: the bodies trickle
        for s in conns:
            s.sendall(b"0123456789")
        time.sleep(1)
        grown = data_kib(worker) - before
        assert grown < 20 * 1024, "the worker grew by %d KiB for 1000 body bytes" % grown
    finally:
        for s in conns:
            s.close()


def data_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1])
    raise AssertionError("no VmData for %d" % pid)


def test_userinfo_of_an_absolute_target_stays_out_of_the_log(corral):
    """GET http://user:secret@host/... : the credentials never reach the access log."""
    srv = corral(app="rp_slots.py")
    with srv.raw() as c:
        c.send(b"GET http://user:secret@localhost/pid HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert c.read_response().status == 200
    log = srv.wait_log("=> 200")
    assert "secret" not in log and "GET http://localhost/pid" in log, log


# --- request bodies: limits ----------------------------------------------------------------------

def test_a_body_that_never_ends_is_cut_at_the_default_limit(corral, tmp_path):
    """With no --limit-post given, a chunked body that never ends gets 413 at 100 MiB (the
    default) instead of filling the disk; the spool goes to --spool-dir."""
    spool = tmp_path / "spool"
    spool.mkdir()
    srv = corral(app="echo.py", args=["--spool-dir", spool])
    (worker,) = srv.wait_workers(1)
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    try:
        s.sendall(build_request("POST", "/?mode=read", b"", {"Transfer-Encoding": "chunked"}))
        chunk = b"%x\r\n%s\r\n" % (1 << 20, b"x" * (1 << 20))
        sent = 0
        try:
            while sent < 200:
                s.sendall(chunk)
                sent += 1
                if sent == 5:
                    time.sleep(0.3)
                    links = [os.readlink("/proc/%d/fd/%s" % (worker, fd))
                             for fd in os.listdir("/proc/%d/fd" % worker)]
                    assert any(x.startswith(str(spool)) for x in links), links
        except OSError:
            pass  # the server answered and shut its side
        s.settimeout(10)
        got = s.recv(65536)
        assert got.startswith(b"HTTP/1.1 413"), (got[:100], sent)
    finally:
        s.close()


def test_spooled_bodies_of_a_worker_are_capped(corral, tmp_path):
    """--spool-max bounds what one worker's uploads hold in temporary files at once: a body
    that would pass it gets 503, the one already spooling is not hurt, and once it is done
    the next upload goes through."""
    srv = corral(app="echo.py", args=["--post-buffering", "64K", "--spool-max", "1M"])
    first = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    body = pattern_bytes(800 << 10, seed=5)
    try:
        first.sendall(build_request("POST", "/?mode=read", b"",
                                    {"Content-Length": str(len(body))}) + body[:700 << 10])
        time.sleep(0.5)  # 700 KiB of it spooled
        with srv.raw() as c:
            r = c.request("POST", "/?mode=read", body)
            assert r.status == 503, r.status
        first.sendall(body[700 << 10:])
        conn = RawConn.__new__(RawConn)
        conn.sock, conn.timeout, conn.buf, conn.eof = first, 30.0, b"", False
        r = conn.read_response()
        assert r.status == 200 and sha256(r.body) == sha256(body)
    finally:
        first.close()
    with srv.raw() as c:
        r = c.request("POST", "/?mode=read", body)
        assert r.status == 200 and sha256(r.body) == sha256(body)


# --- the app's own children ----------------------------------------------------------------------

FORK_APP = r'''
import os

def application(environ, start_response):
    if environ["PATH_INFO"] == "/fork":
        os.fork()  # both processes go on: the child returns into the server
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.mark.parametrize("threads", [1, 2])
def test_a_child_the_app_forks_does_not_serve(corral, threads):
    """An app that forks inside a request and lets the child return: the child leaves (it
    would otherwise serve on the inherited listeners, unsupervised); the worker answers."""
    srv = corral(source=FORK_APP, args=["--threads", threads])
    (worker,) = srv.wait_workers(1)
    status, _, body = srv.get("/fork")
    assert status == 200 and int(body) == worker
    srv.wait_log("returned from the app: it exits")
    pids = {int(srv.get("/")[2]) for _ in range(30)}
    assert pids == {worker}, pids


def test_a_forged_request_line_is_escaped_in_the_obituary(corral, tmp_path):
    """The master's line about a worker that died names its requests from the scoreboard:
    their control bytes are escaped there too."""
    import signal
    import threading
    import uwsgi_client
    sock = str(tmp_path / "uw.sock")
    srv = corral(app="rp_slots.py", args=["--socket", sock], http=False, wait=False)
    helpers_wait_path(sock)
    (worker,) = srv.wait_workers(1)
    forged = "2026-01-01 00:00:00.000Z master (pid 1) error: forged"
    env = uwsgi_client.nginx_env(uri="/sleep?s=5&x=\r\n" + forged)
    t = threading.Thread(target=lambda: uwsgi_client.request(sock, env, timeout=10), daemon=True)
    t.start()
    time.sleep(0.5)
    os.kill(worker, signal.SIGKILL)
    log = srv.wait_log("killed by SIGKILL")
    assert not [line for line in log.splitlines() if line.startswith(forged[:20])], log
    assert "\\x0d\\x0a" in [line for line in log.splitlines() if "killed by" in line][0]
