"""not_callable.py - `application` is not callable: corral must refuse to start."""
application = 42
