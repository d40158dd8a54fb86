"""Settings of the rp_djstream project: one sqlite database, whose file the test creates and
names in $RP_DJ_DB (a table "items" with a few rows); no apps, no middleware."""
import os

SECRET_KEY = "corral-integration-tests-not-secret-rp-djstream-0123456789abcdefghijklmn"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = []
MIDDLEWARE = []
ROOT_URLCONF = "rp_djstream.urls"
WSGI_APPLICATION = "rp_djstream.wsgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["RP_DJ_DB"],
        "CONN_MAX_AGE": 0,  # the default: closed at every request's start and end
    },
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
