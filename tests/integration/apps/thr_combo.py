"""
thr_combo.py - the core suite's apps behind one server, for the processes x threads matrix.

  /echo...     echo.py (the request body back; ?mode= as there)
  /environ...  environ.py (the environ as JSON)
  anything else: routes.py (/pid, /hello, /big, /raise/before, ...)

The other apps are imported from the directory given with --pythonpath (tests/integration/apps),
so this file only dispatches; every behaviour is the core suite's own.
"""
import echo
import environ as environ_app
import routes


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/echo"):
        return echo.application(environ, start_response)
    if path.startswith("/environ"):
        return environ_app.application(environ, start_response)
    return routes.application(environ, start_response)
