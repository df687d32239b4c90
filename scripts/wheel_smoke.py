"""Smoke test of an installed wheel, run by ``scripts/test_wheel.sh`` inside
a fresh venv whose PATH holds no compiler.

Proves that no toolchain is reachable, that ``listy`` and its compiled engine
import from site-packages (not from a source tree), and that a cached read
works: a standalone ``ListCache(User, [("pk",)])`` on the embedded store,
read twice, the second time from the cache with no SQL.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

for tool in ("cc", "gcc", "clang", "cargo", "rustc", "zig", "ld"):
    found = shutil.which(tool)
    assert found is None, f"{tool} is on the PATH ({found}): the smoke test must run without a compiler"

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    USE_TZ=True,
    SECRET_KEY="smoke",
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "listy"],
    LISTY={"SERVERS": ["local"]},
    SILENCED_SYSTEM_CHECKS=["listy.W001"],
)
django.setup()

import listy
import listy._native
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

site = Path(listy.__file__).resolve().parents[1]
assert "site-packages" in str(site), f"listy was imported from {site}, not from the installed wheel"
assert listy.__version__ == listy._native.__version__, (listy.__version__, listy._native.__version__)

call_command("migrate", verbosity=0)
call_command("check", fail_level="ERROR")
users = listy.ListCache(User, [("pk",)])
alice = User.objects.create(username="alice")

first = users.get(pk=alice.pk)
with CaptureQueriesContext(connection) as queries:
    again = users.get(pk=alice.pk)
assert [u.username for u in first] == ["alice"], list(first)
assert [u.username for u in again] == ["alice"], list(again)
assert again.from_cache, "the second read was not served from the cache"
assert len(queries) == 0, queries.captured_queries
print(f"wheel smoke test passed: django-listy {listy.__version__} on Python {sys.version.split()[0]}, Django {django.get_version()}")
