"""
sup_version.py - answers "<VERSION> <pid> <ppid>" on every path. The reload tests rewrite the
VERSION line (or break the file) and then ask corral to reload.
"""
import os

VERSION = "v1"


def application(environ, start_response):
    body = ("%s %d %d" % (VERSION, os.getpid(), os.getppid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
