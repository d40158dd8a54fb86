"""app_fallback.py - defines only `app` (no `application`): the default callable's fallback."""


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])
    return [b"app-fallback"]
