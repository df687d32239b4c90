"""django-cachalot process: Django's PyMemcacheCache on the benchmark's
memcached, Listy's app not installed."""

from benchproj.settings import *  # noqa: F401,F403
from benchproj.settings import MEMCACHED

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "cachalot",
    "benchproj.follows",
]
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
        "LOCATION": MEMCACHED,
        "KEY_PREFIX": "cachalot",
        "TIMEOUT": 60 * 60,
    }
}
CACHALOT_DATABASES = ["default"]
# No CACHALOT_ONLY_CACHABLE_TABLES: cachalot counts the FK's table (auth_user)
# among a `filter(follower_id=...)` query's tables (Django keeps the trimmed
# join's alias), so a whitelist of the follows tables alone caches nothing.
