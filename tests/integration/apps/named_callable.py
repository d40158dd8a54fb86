"""named_callable.py - the WSGI callable is `myapp` (serve with --callable myapp)."""


def myapp(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"myapp"]


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "11")])
    return [b"application"]
