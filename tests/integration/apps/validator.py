"""
validator.py - an app wrapped in wsgiref.validate.validator, with WSGIWarning made an error.

Any PEP 3333 violation the validator sees in the server's environ, wsgi.input, wsgi.errors,
start_response or result handling raises inside the app (so the response is a 500 and the
traceback is in the log). The inner app uses every wsgi.input method the validator wraps,
writes to wsgi.errors, and answers with a body describing what it read.
"""
import warnings
from wsgiref.validate import WSGIWarning, validator

warnings.simplefilter("error", WSGIWarning)


def inner(environ, start_response):
    inp = environ["wsgi.input"]
    method = environ["REQUEST_METHOD"]
    parts = []
    if method in ("POST", "PUT"):
        first = inp.readline()
        if first:
            parts.append(first)
        chunk = inp.read(4)
        if chunk:
            parts.append(chunk)
        parts.extend(inp.readlines())
        parts.extend(line for line in inp)
        parts.append(inp.read(1 << 20))
    environ["wsgi.errors"].write("validator app: %s %s\n" % (method, environ["PATH_INFO"]))
    environ["wsgi.errors"].writelines(["validator app: done\n"])
    environ["wsgi.errors"].flush()
    body = b"method=%s path=%s body=%s" % (
        method.encode(), environ["PATH_INFO"].encode("latin-1"), b"".join(parts))
    write = start_response("200 OK", [("Content-Type", "text/plain"),
                                      ("Content-Length", str(len(body)))])
    assert callable(write)
    return [body]


application = validator(inner)
