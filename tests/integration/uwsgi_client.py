"""uwsgi_client.py - a minimal uwsgi-protocol client for corral's integration tests.

It speaks what nginx's uwsgi_pass speaks (docs/uwsgi-protocol.md): a 4-byte header
(modifier1, little-endian 16-bit size of the vars, modifier2), the vars as 16-bit-length-prefixed
key/value pairs, then the request body; the answer is raw HTTP, read until the server closes.
Values may be str (sent as UTF-8) or bytes (sent as is). Standard library only (python3 3.11).
"""
import socket
import struct


def _field(s):
    b = s if isinstance(s, bytes) else str(s).encode("utf-8")
    if len(b) > 0xFFFF:
        raise ValueError("uwsgi key or value longer than 65535 bytes")
    return struct.pack("<H", len(b)) + b


def encode(env, modifier1=0, modifier2=0):
    """Returns the packet for the dict 'env' (insertion order kept), without a body."""
    block = b"".join(_field(k) + _field(v) for k, v in env.items())
    if len(block) > 0xFFFF:
        raise ValueError("uwsgi vars block longer than 65535 bytes")
    return struct.pack("<BHB", modifier1, len(block), modifier2) + block


def nginx_env(method="GET", uri="/", body=b"", headers=None, scheme="http"):
    """The vars nginx sends with 'include uwsgi_params;' plus HTTP_* request headers."""
    path, _, query = uri.partition("?")
    env = {"QUERY_STRING": query, "REQUEST_METHOD": method, "CONTENT_TYPE": "",
           "CONTENT_LENGTH": str(len(body)) if body else "", "REQUEST_URI": uri,
           "PATH_INFO": path, "DOCUMENT_ROOT": "/usr/share/nginx/html",
           "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": scheme,
           "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "SERVER_PORT": "80",
           "SERVER_NAME": "localhost", "HTTP_HOST": "localhost"}
    if scheme == "https":
        env["HTTPS"] = "on"
    for name, value in (headers or {}).items():
        env["HTTP_" + name.upper().replace("-", "_")] = value
    return env


def request(addr, env, body=b"", timeout=10.0, raw=None):
    """Sends encode(env) + body (or the bytes 'raw' instead) to 'addr' -- a (host, port) tuple
    or a UNIX socket path -- and returns all the server sends until it closes (a reset counts
    as a close: a refused packet may be answered by one)."""
    if isinstance(addr, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(addr)
    else:
        s = socket.create_connection(addr, timeout)
    chunks = []
    with s:
        s.sendall(raw if raw is not None else encode(env) + body)
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)
