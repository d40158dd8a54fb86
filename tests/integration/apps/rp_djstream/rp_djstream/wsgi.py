"""WSGI entry point of rp_djstream (serve with --pythonpath <dir>/rp_djstream
--module rp_djstream.wsgi)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rp_djstream.settings")

application = get_wsgi_application()
