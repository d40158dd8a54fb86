"""
cf_environ.py - the environ as JSON, from inside wsgiref.validate (test_conformance.py).

Every request goes through wsgiref.validate.validator with WSGIWarning made an error, so an
environ that breaks PEP 3333 (a PATH_INFO not starting with '/', a bad wsgi.url_scheme, ...)
answers 500 with the traceback in the log. The body is {"env": {key: str value}} for every
str value (wsgi.url_scheme included), and "body": the request body read from wsgi.input.
"""
import json
import warnings
from wsgiref.validate import WSGIWarning, validator

warnings.simplefilter("error", WSGIWarning)


def inner(environ, start_response):
    env = {k: v for k, v in environ.items() if isinstance(v, str)}
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    out = json.dumps({"env": env, "body": body.decode("latin-1")}).encode("ascii")
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])
    return [out]


application = validator(inner)
