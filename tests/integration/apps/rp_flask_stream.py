"""
rp_flask_stream.py - Flask's stream_with_context under concurrency (the issue's reproducer).

  GET /stream?id=ID&n=N[&pad=P]   N lines "<ID> <i> <P x's>\\n" (i = 0..N-1), streamed by a
                                  generator that reads request.args at every step

stream_with_context pushes the request context in the view's thread and context; the generator
then needs every later step, and the pop at its end, to run in that same thread/context.
Otherwise request.args is another request's (or raises "Working outside of request context"),
and the pop raises "ValueError: <Token ...> was created in a different Context".
"""
import sys

from flask import Flask, Response, request, stream_with_context

sys.setswitchinterval(1e-5)  # switch threads often: requests interleave as much as they can

app = Flask(__name__)


@app.get("/stream")
def stream():
    def gen():
        for i in range(int(request.args["n"])):
            # request.args at every step: this request's, or the response is visibly wrong
            yield "%s %d %s\n" % (request.args["id"], i, "x" * int(request.args.get("pad", 4000)))
    return Response(stream_with_context(gen()), mimetype="text/plain")


application = app
