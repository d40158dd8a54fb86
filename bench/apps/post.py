"""Reads the request body (wsgi.input) fully and returns its length as text."""


def application(environ, start_response):
    try:
        remaining = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        remaining = 0
    inp = environ["wsgi.input"]
    total = 0
    while remaining > 0:
        chunk = inp.read(min(remaining, 65536))
        if not chunk:
            break
        total += len(chunk)
        remaining -= len(chunk)
    body = str(total).encode()
    status = "200 OK" if remaining == 0 else "400 Bad Request"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
