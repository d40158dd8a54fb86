"""Minimal Django settings: no database, no middleware, one template directory."""
import os

BASE_DIR = os.path.dirname(os.path.abspath(__file__))

SECRET_KEY = "corral-bench-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djangosite.urls"
INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {}
USE_TZ = True
USE_I18N = False
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [os.path.join(BASE_DIR, "templates")],
        "APP_DIRS": False,
        "OPTIONS": {"context_processors": []},
    }
]
