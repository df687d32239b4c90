"""Settings of the benchmark's main process: plain ORM (PostgreSQL and
SQLite), the hand-pickled lists in memcached and Listy.

django-cacheops and django-cachalot both patch the ORM for the whole process
(cacheops mixes itself into every QuerySet and Manager, cachalot wraps the SQL
compilers and cursors), so each runs in a process of its own with
``settings_cacheops`` / ``settings_cachalot``; the main process drives them
round by round (``listybench.worker``) and never imports them.

Everything that depends on the run comes from the environment, set by
``bench/run.sh``: ``BENCH_MEMCACHED`` (host:port of the benchmark's own
memcached), ``BENCH_REDIS_URL``, ``BENCH_PG_NAME``, ``BENCH_SQLITE_PATH``.
"""

import os
import tempfile

MEMCACHED = os.environ.get("BENCH_MEMCACHED", "127.0.0.1:11211")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
PG_NAME = os.environ.get("BENCH_PG_NAME", "listy_bench")
SQLITE_PATH = os.environ.get("BENCH_SQLITE_PATH", os.path.join(tempfile.gettempdir(), "listy-bench.sqlite3"))

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
        "PORT": int(os.environ.get("BENCH_PG_PORT", "5432")),
        "USER": os.environ.get("BENCH_PG_USER", "postgres"),
        "PASSWORD": os.environ.get("BENCH_PG_PASSWORD", ""),
        "NAME": PG_NAME,
        "CONN_MAX_AGE": None,
    },
    "sqlite": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": SQLITE_PATH,
    },
}

SECRET_KEY = "listy-bench"
DEBUG = False  # no query log: it would cost every system time
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "listy",
    "benchproj.follows",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "benchproj.urls"
LOGGING_CONFIG = None

# Listy on the benchmark's memcached; the "Listy (embedded)" system switches
# to {"SERVERS": ["local"]} with override_settings (python/listy/conf.py
# resets the store when LISTY changes).
LISTY = {"SERVERS": [MEMCACHED], "KEY_PREFIX": "lb"}
if os.environ.get("BENCH_ASYNC_INLINE_TIMEOUT"):  # listybench.asyncbench's knob
    LISTY["ASYNC_INLINE_TIMEOUT"] = float(os.environ["BENCH_ASYNC_INLINE_TIMEOUT"])
SILENCED_SYSTEM_CHECKS = ["listy.W001"]
