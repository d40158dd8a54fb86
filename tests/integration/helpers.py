"""
helpers.py - clients and process helpers shared by the integration tests.

- http_request(): one request over http.client (a new connection), returns (status, headers, body).
- RawConn: a raw socket with a receive buffer, for keep-alive, pipelining and malformed input;
  read_response() parses exactly one response (Content-Length, chunked or close-delimited
  bodies; 1xx interim responses) and keeps any bytes after it for the next call.
- children()/wait_for(): worker pids from /proc and bounded polling. No fixed sleeps.
"""
import glob
import hashlib
import http.client
import os
import socket
import threading
import time


# --- polling and processes ------------------------------------------------------------------

def wait_for(pred, timeout, what, detail=None, interval=0.05):
    """Calls pred() until it returns a truthy value (returned) or 'timeout' seconds pass
    (AssertionError naming 'what', plus detail() if given)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            msg = "timed out after %ss waiting for %s" % (timeout, what)
            if detail:
                msg += "; " + detail()
            raise AssertionError(msg)
        time.sleep(interval)


def children(pid):
    """Pids of the live (non-zombie) children of 'pid'."""
    kids = set()
    for path in glob.glob("/proc/%d/task/*/children" % pid):
        try:
            with open(path) as f:
                kids.update(int(x) for x in f.read().split())
        except OSError:
            pass
    return sorted(k for k in kids if pid_alive(k))


def proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    # "pid (comm) S ppid ...": comm may contain spaces and parentheses
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1])


def pid_alive(pid):
    st = proc_state(pid)
    return st is not None and st[0] not in ("Z", "X")


def exe_of(pid):
    try:
        target = os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return None
    if target.endswith(" (deleted)"):  # the binary was rebuilt while it ran
        target = target[:-len(" (deleted)")]
    try:
        return os.path.realpath(target)
    except OSError:
        return None


def parent_of(pid):
    st = proc_state(pid)
    return st[1] if st else None


# --- http.client ----------------------------------------------------------------------------

def http_request(port, method, path, body=None, headers=None, timeout=30.0):
    """One request on a new connection. Returns (status, HTTPMessage headers, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.headers, data
    finally:
        conn.close()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def pattern_bytes(n, seed=0):
    """n deterministic, non-repeating-looking bytes (the same function as in apps/routes.py)."""
    out = bytearray()
    block = 0
    while len(out) < n:
        out += hashlib.sha256(b"%d:%d" % (seed, block)).digest() * 64
        block += 1
    return bytes(out[:n])


# --- raw sockets ----------------------------------------------------------------------------

class Response:
    """One parsed response. headers: list of (name lowercased, value) str pairs."""

    def __init__(self, version, status, reason, headers, body, raw, framing):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.raw = raw  # the head bytes as received
        self.framing = framing  # "length", "chunked", "close" or "none"
        self.complete = True  # False: connection closed before the body's end

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_all(self, name):
        return [v for k, v in self.headers if k == name.lower()]

    def __repr__(self):
        return "<Response %s %s %s framing=%s len=%d>" % (
            self.version, self.status, self.reason, self.framing, len(self.body))


class Closed(Exception):
    """The connection ended (EOF or reset) before a complete response head."""


class RawConn:
    """A raw client socket with a buffer of received bytes."""

    def __init__(self, port, timeout=30.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def local_port(self):
        return self.sock.getsockname()[1]

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, timeout=None):
        """Reads more bytes into buf; returns False on EOF. Raises socket.timeout."""
        if self.eof:
            return False
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _read_until(self, sep):
        while sep not in self.buf:
            if not self._fill():
                raise Closed("connection closed; got %r" % self.buf[:300])
        i = self.buf.index(sep) + len(sep)
        data, self.buf = self.buf[:i], self.buf[i:]
        return data

    def _read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise Closed("connection closed after %d of %d body bytes" % (len(self.buf), n))
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_head(self):
        """Reads one response head. Returns (version, status, reason, headers, raw)."""
        raw = self._read_until(b"\r\n\r\n")
        lines = raw[:-4].split(b"\r\n")
        version, status, *reason = lines[0].decode("latin-1").split(" ", 2)
        headers = []
        for line in lines[1:]:
            k, _, v = line.decode("latin-1").partition(":")
            headers.append((k.strip().lower(), v.strip()))
        return version, int(status), (reason[0] if reason else ""), headers, raw

    def read_response(self, method="GET", interim=False):
        """Reads one response. 1xx responses are skipped unless interim=True (then a 1xx is
        returned as it is). A close-delimited body is read to EOF; a truncated body sets
        resp.complete = False instead of raising."""
        while True:
            version, status, reason, headers, raw = self.read_head()
            if 100 <= status < 200 and not interim:
                continue
            break
        resp = Response(version, status, reason, headers, b"", raw, "none")
        self._partial = b""
        if method == "HEAD" or 100 <= status < 200 or status in (204, 304):
            return resp
        te = resp.header("transfer-encoding")
        cl = resp.header("content-length")
        try:
            if te is not None and "chunked" in te.lower():
                resp.framing = "chunked"
                resp.body = self._read_chunked()
            elif cl is not None:
                resp.framing = "length"
                resp.body = self._read_exact(int(cl))
            else:
                resp.framing = "close"
                while self._fill():
                    pass
                resp.body, self.buf = self.buf, b""
        except Closed:
            resp.complete = False
            resp.body, self.buf = self._partial + self.buf, b""
        return resp

    def _read_chunked(self):
        body = self._partial = b""
        while True:
            line = self._read_until(b"\r\n")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while self._read_until(b"\r\n") != b"\r\n":
                    pass  # trailer fields
                return body
            body += self._read_exact(size)
            self._partial = body
            if self._read_exact(2) != b"\r\n":
                raise AssertionError("chunk not followed by CRLF")

    def request(self, method, path, body=b"", headers=None, version="HTTP/1.1"):
        """Sends a well-formed request (Host and Content-Length added) and reads the response."""
        self.send(build_request(method, path, body, headers, version))
        return self.read_response(method)

    def wait_closed(self, timeout=10.0):
        """Polls for the peer's close, ignoring nothing: returns the bytes that arrived before
        EOF. Raises AssertionError on timeout, ConnectionResetError on a reset."""
        deadline = time.monotonic() + timeout
        extra = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("connection still open after %ss (got %r)"
                                     % (timeout, (self.buf + extra)[:200]))
            try:
                if not self._fill(min(left, 1.0)):
                    extra, self.buf = self.buf, b""
                    return extra
            except socket.timeout:
                continue


def build_request(method, path, body=b"", headers=None, version="HTTP/1.1", host=True):
    head = ["%s %s %s" % (method, path, version)]
    hdrs = dict(headers or {})
    names = {k.lower() for k in hdrs}
    if host and "host" not in names:
        head.append("Host: 127.0.0.1")
    if (body or method in ("POST", "PUT")) and "content-length" not in names \
            and "transfer-encoding" not in names:
        head.append("Content-Length: %d" % len(body))
    for k, v in hdrs.items():
        head.append("%s: %s" % (k, v))
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")


def chunked(body, sizes, ext=b""):
    """Encodes 'body' as a chunked body with chunk sizes cycling through 'sizes'."""
    out = b""
    i = 0
    k = 0
    while i < len(body):
        n = sizes[k % len(sizes)]
        k += 1
        piece = body[i:i + n]
        i += n
        out += b"%x%s\r\n%s\r\n" % (len(piece), ext, piece)
    return out + b"0\r\n\r\n"


def server_socket_of(pid, client):
    """The worker's end of 'client' (a connected socket), as a local socket.socket duplicated
    with pidfd_getfd(2), so a test can read the options the server set on it."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir("/proc/%d/fd" % pid):
            try:
                if not os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = libc.syscall(438, pidfd, int(name), 0)  # SYS_pidfd_getfd
            if fd < 0:
                continue
            s = socket.socket(fileno=fd)
            try:
                if s.getpeername() == client.getsockname():
                    return s
            except OSError:
                pass
            s.close()
    finally:
        os.close(pidfd)
    return None


def run_clients(n, fn, join_timeout=60):
    """Runs fn(i) in n threads at once; returns (results by i, errors as 'i: repr')."""
    results = [None] * n
    errors = []

    def run(i):
        try:
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - reported by the caller
            errors.append("%d: %r" % (i, e))
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + join_timeout
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
        assert not t.is_alive(), "a client thread is still running after %d s" % join_timeout
    return results, errors
