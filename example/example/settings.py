"""A tiny project that shows Listy on the SPEC's Follow model.

No LISTY setting: the embedded in-process store is used, so the demo works
with no server. ``LISTY_SERVERS=127.0.0.1:11211`` switches to memcached.
"""

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "listy-example-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "listy",
    "social",
]
MIDDLEWARE = ["listy.middleware.RequestContextCacheMiddleware"]
ROOT_URLCONF = "example.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
    }
}
