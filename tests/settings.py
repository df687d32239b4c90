"""Django settings of Listy's test-suite.

``LISTY_TEST_DB`` = sqlite (default) | postgres | mariadb picks the database;
``LISTY_TEST_STORE`` = local (default) | memcached the store (the conftest
starts its own memcached and sets ``LISTY_SERVERS``). ``LISTY_TEST_DB_NAME``
points a second process (see ``tests/crossproc.py``) at the test database
the first one created.
"""

import os
import tempfile

DB = os.environ.get("LISTY_TEST_DB", "sqlite")
STORE = os.environ.get("LISTY_TEST_STORE", "local")
_shared_name = os.environ.get("LISTY_TEST_DB_NAME")

if DB == "sqlite":
    # A file, not :memory:, so that a second process sees the same rows.
    _path = _shared_name or os.path.join(tempfile.gettempdir(), f"listy-test-{os.getpid()}.sqlite3")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _path,
            "TEST": {"NAME": _path},
        }
    }
elif DB == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": 5432,
            "USER": "postgres",
            "PASSWORD": "",
            "NAME": _shared_name or "test",
            # one test database per run: concurrent runs do not drop each other's
            "TEST": {"NAME": f"test_listy_{os.getpid()}"},
        }
    }
elif DB == "mariadb":
    try:
        import MySQLdb  # noqa: F401  (mysqlclient)
    except ImportError:
        import pymysql

        pymysql.install_as_MySQLdb()
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "HOST": "127.0.0.1",
            "PORT": 3306,
            "USER": "root",
            "PASSWORD": "",
            "NAME": _shared_name or "test",
            "OPTIONS": {"charset": "utf8mb4"},
            "TEST": {"NAME": f"test_listy_{os.getpid()}", "CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"},
        }
    }
else:
    raise RuntimeError(f"LISTY_TEST_DB={DB!r}: expected sqlite, postgres or mariadb")

SECRET_KEY = "listy-tests"
DEBUG = False
USE_TZ = True
TIME_ZONE = "Europe/Paris"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.admin",  # the admin test (tests/test_django_api.py)
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "listy",
    "tests.testapp",
]
# The ASGI end-to-end test's server runs with the registry middleware.
MIDDLEWARE: list[str] = (
    ["listy.middleware.RequestContextCacheMiddleware"] if os.environ.get("LISTY_TEST_MIDDLEWARE") else []
)
ROOT_URLCONF = "tests.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# LISTY_SERVERS (set by the conftest for memcached) overrides SERVERS.
# REPAIR_CHECK_INTERVAL None: no periodic look at the PendingRepair table, so
# that the zero-query assertions hold; LISTY_TEST_REPAIR_INTERVAL (seconds)
# turns it on (the partition test's second process).
_interval = os.environ.get("LISTY_TEST_REPAIR_INTERVAL")
LISTY = {
    "SERVERS": ["local"],
    "KEY_PREFIX": "t",
    "REPAIR_CHECK_INTERVAL": float(_interval) if _interval else None,
    # no hourly recount: zero-query assertions must not meet an hour's end
    "COUNTER_EPOCH": None,
    # no shared hit counts: round-trip assertions must not meet a publication
    # (LISTY_TEST_STATS_INTERVAL turns them on in a second process)
    "STATS_INTERVAL": float(os.environ["LISTY_TEST_STATS_INTERVAL"]) if os.environ.get("LISTY_TEST_STATS_INTERVAL") else None,
}
SILENCED_SYSTEM_CHECKS = ["listy.W001"] if STORE == "local" else []
