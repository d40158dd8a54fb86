"""import_error.py - fails at import time; corral must print the traceback once and exit."""
import os

# Each import attempt leaves a line in this file, so a test can count imports.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "imports.txt"), "a") as f:
    f.write("%d\n" % os.getpid())


def helper():
    raise ImportError("kaboom-import-marker")


helper()
application = None  # never reached
