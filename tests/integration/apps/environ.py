"""
environ.py - answers with the WSGI environ as JSON.

{"env": {key: value}, "types": {key: type name}, "process": {...}}. Values that JSON cannot
hold (wsgi.input, wsgi.errors, wsgi.file_wrapper) are given as their type name. Strings are
kept exactly (json escapes every non-ASCII code point), so latin-1 semantics can be checked.
"process" has the cwd, sys.path, the pid and the process environment.
"""
import json
import os
import sys


def jsonable(v):
    if isinstance(v, (str, bool, int, float)) or v is None:
        return v
    if isinstance(v, tuple):
        return [jsonable(x) for x in v]
    return "<%s>" % type(v).__name__


def application(environ, start_response):
    inp = environ["wsgi.input"]
    errors = environ["wsgi.errors"]
    env = {k: jsonable(v) for k, v in environ.items()}
    out = {
        "env": env,
        "types": {k: type(v).__name__ for k, v in environ.items()},
        "input_api": {m: callable(getattr(inp, m, None))
                      for m in ("read", "readline", "readlines", "__iter__")},
        "errors_api": {m: callable(getattr(errors, m, None))
                       for m in ("write", "writelines", "flush")},
        "file_wrapper_callable": callable(environ.get("wsgi.file_wrapper")),
        "body": inp.read().decode("latin-1"),
        "process": {"cwd": os.getcwd(), "sys_path": sys.path, "pid": os.getpid(),
                    "environ": dict(os.environ)},
    }
    body = json.dumps(out).encode("ascii")
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
