"""WSGI file for the minimal Django project in djangosite/ (a template page with a loop)."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangosite.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
