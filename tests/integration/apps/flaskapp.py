"""
flaskapp.py - a Flask app for the framework tests.

  GET  /api/json            {"ok": true, "pid": ..., "args": {...}}
  POST /api/json            echoes the JSON body as {"echo": ...}
  GET  /cookie/set?v=X      sets cookie flavour=X
  GET  /cookie/get          the flavour cookie's value
  GET  /redirect            302 to /target
  GET  /target              "target reached"
  POST /upload              multipart field "file": {"name", "size", "sha256"}
  GET  /stream?n=N          a streamed response (stream_with_context) of N lines
"""
import hashlib
import os

from flask import Flask, Response, jsonify, redirect, request, stream_with_context

app = Flask(__name__)


@app.get("/api/json")
def json_get():
    return jsonify(ok=True, pid=os.getpid(), args=request.args.to_dict())


@app.post("/api/json")
def json_post():
    return jsonify(echo=request.get_json())


@app.get("/cookie/set")
def cookie_set():
    resp = Response("cookie set")
    resp.set_cookie("flavour", request.args.get("v", "oatmeal"))
    return resp


@app.get("/cookie/get")
def cookie_get():
    return request.cookies.get("flavour", "<none>")


@app.get("/redirect")
def go():
    return redirect("/target", code=302)


@app.get("/target")
def target():
    return "target reached"


@app.post("/upload")
def upload():
    f = request.files["file"]
    data = f.read()
    return jsonify(name=f.filename, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                   field=request.form.get("note"))


@app.get("/stream")
def stream():
    n = int(request.args.get("n", 10))

    def gen():
        for i in range(n):
            # request is usable here only thanks to stream_with_context
            yield "line %d of %s\n" % (i, request.args.get("n", "10"))
    return Response(stream_with_context(gen()), mimetype="text/plain")
