"""A Flask JSON endpoint (Flask from Debian's python3-flask)."""
from flask import Flask, jsonify

app = Flask(__name__)


@app.route("/")
def index():
    return jsonify(message="Hello, World!", items=list(range(10)), ok=True)


application = app
