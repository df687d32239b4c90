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
            "TEST": {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"},
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
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "listy",
    "tests.testapp",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "tests.urls"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# LISTY_SERVERS (set by the conftest for memcached) overrides SERVERS.
LISTY = {"SERVERS": ["local"], "KEY_PREFIX": "t"}
SILENCED_SYSTEM_CHECKS = ["listy.W001"] if STORE == "local" else []
