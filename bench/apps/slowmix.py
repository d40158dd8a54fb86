"""Fast and slow endpoints for the tail-latency scenario (app "slowmix" in bench/run).

/      answers "ok" at once (wrk hammers it with 200 keep-alive connections);
/slow  sleeps 0.2 s, then answers "slow" (4 client threads of bench/run request it in a loop).
A server whose threads are all held by /slow stops answering / until one comes back.
"""

import time

SLOW_SECONDS = 0.2
FAST = b"ok"
SLOW = b"slow"


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/slow":
        time.sleep(SLOW_SECONDS)
        body = SLOW
    else:
        body = FAST
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
