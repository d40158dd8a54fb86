"""WSGI entry point of the Django test project (serve with --module djproj.wsgi)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproj.settings")

application = get_wsgi_application()
