"""
GET /stream/?id=ID&n=N[&pad=P]: a StreamingHttpResponse of N lines "<ID> <i> <name> <P x's>",
where <name> comes from a query run for that line (SELECT name FROM items WHERE id = ...),
then one last line: "OK" or "WRONG: <details>".

Django's database connection is per thread (django.db.connection resolves to the calling
thread's connections["default"]), and with CONN_MAX_AGE = 0 it is closed when a request starts
and when one finishes (request_started / request_finished, the latter sent by the response's
close()). So at every line the generator checks that it runs on the thread that called the
view, with the same DatabaseWrapper and the same sqlite3 connection object the view used. If a
line ran on another thread, or another request started or finished on this thread in between,
one of the three differs.
"""
import sys
import threading

from django.db import connection, connections
from django.http import StreamingHttpResponse

sys.setswitchinterval(1e-5)  # switch threads often: requests interleave as much as they can


def query(row):
    with connection.cursor() as c:
        c.execute("SELECT name FROM items WHERE id = %s", [row])
        return c.fetchone()[0]


def stream(request):
    rid = request.GET["id"]
    n = int(request.GET["n"])
    pad = "x" * int(request.GET.get("pad", 4000))
    rows = int(request.GET.get("rows", 10))
    query(1)  # opens this thread's connection for this request
    owner = (threading.get_ident(), connections["default"], connection.connection)

    def lines():
        problems = []
        for i in range(n):
            name = query(i % rows + 1)
            now = (threading.get_ident(), connections["default"], connection.connection)
            if now[0] != owner[0] or now[1] is not owner[1] or now[2] is not owner[2]:
                problems.append("line %d: thread %d (view on %d), same wrapper: %s, same sqlite3 "
                                "connection: %s" % (i, now[0], owner[0], now[1] is owner[1],
                                                    now[2] is owner[2]))
            yield "%s %d %s %s\n" % (rid, i, name, pad)
        if problems:
            yield "WRONG: %d bad lines; first: %s\n" % (len(problems), problems[0])
        else:
            yield "OK\n"

    return StreamingHttpResponse(lines(), content_type="text/plain")
