"""
A small Flask app served by corral: `make run`, then open http://127.0.0.1:8000/.

  GET  /            an HTML greeting
  GET  /api/status  JSON: the worker's pid and the server software
  GET  /guestbook   a form; POST /guestbook adds a message (kept per worker, in memory)
"""
import os
import threading

from flask import Flask, jsonify, redirect, render_template, request, url_for

app = Flask(__name__)

_lock = threading.Lock()
_messages = []  # per worker process: a demo, not a database


@app.get("/")
def hello():
    return render_template("hello.html", pid=os.getpid())


@app.get("/api/status")
def status():
    return jsonify(pid=os.getpid(), server=request.environ.get("SERVER_SOFTWARE", "corral"),
                   multiprocess=request.environ.get("wsgi.multiprocess"),
                   multithread=request.environ.get("wsgi.multithread"))


@app.route("/guestbook", methods=["GET", "POST"])
def guestbook():
    if request.method == "POST":
        name = request.form.get("name", "").strip() or "anonymous"
        text = request.form.get("message", "").strip()
        if text:
            with _lock:
                _messages.append((name[:40], text[:200]))
                del _messages[:-20]
        return redirect(url_for("guestbook"))
    with _lock:
        messages = list(reversed(_messages))
    return render_template("guestbook.html", messages=messages, pid=os.getpid())
