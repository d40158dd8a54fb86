"""
atfork.py - registers os.register_at_fork() callbacks at import. Preloaded by the master, so
after_in_child must run in each worker after fork; /  answers with what fired where.
"""
import json
import os

LOADED_IN = os.getpid()
FIRED = {"after_in_child": [], "before": [], "after_in_parent": []}

os.register_at_fork(
    before=lambda: FIRED["before"].append(os.getpid()),
    after_in_child=lambda: FIRED["after_in_child"].append(os.getpid()),
    after_in_parent=lambda: FIRED["after_in_parent"].append(os.getpid()),
)


def application(environ, start_response):
    body = json.dumps({"pid": os.getpid(), "loaded_in": LOADED_IN, "fired": FIRED}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
