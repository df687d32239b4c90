"""Batched writes of 5,000 rows, with Listy and without (SPEC §5, issue 11).

``update()``, ``bulk_update()``, ``bulk_create()`` and a queryset
``delete()`` of 5,000 ``Follow`` rows on PostgreSQL + memcached, against the
same calls on a table of the same shape that has no Listy cache. Each call
runs in its own transaction; its SQL statements are counted with
``connection.execute_wrapper`` (transaction control through the driver is not
a statement there) and its wall time includes the cache work after COMMIT.
Listy's lists (``follower``, ``(follower, followee)``, ``pk``) are cached
before each call, so every call updates them in place.

Run: ``.venv/bin/python bench/bulk_writes.py`` (PostgreSQL at 127.0.0.1:5432,
memcached started on a free port). Prints a Markdown table.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "python")]
N = int(os.environ.get("BULK_ROWS", "5000"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    port = free_port()
    args = [shutil.which("memcached") or "/usr/bin/memcached", "-l", "127.0.0.1", "-p", str(port), "-m", "256", "-U", "0"]
    if os.geteuid() == 0:
        args += ["-u", "root"]
    mc = subprocess.Popen(args)
    try:
        time.sleep(0.3)
        os.environ.update(
            DJANGO_SETTINGS_MODULE="tests.settings",
            LISTY_TEST_DB="postgres",
            LISTY_TEST_DB_NAME="listy_bulk_bench",
            LISTY_SERVERS=f"127.0.0.1:{port}",
        )
        run()
    finally:
        mc.terminate()
        mc.wait()


def run() -> None:
    import django
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS listy_bulk_bench")
        c.execute("CREATE DATABASE listy_bulk_bench")
    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection, models, transaction

    call_command("migrate", verbosity=0)
    from tests.testapp.models import Follow

    class PlainFollow(models.Model):
        """``Follow``'s shape, no Listy."""

        created = models.DateTimeField()
        follower = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
        followee = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")

        class Meta:
            app_label = "testapp"

    with connection.schema_editor() as editor:
        editor.create_model(PlainFollow)
    users = [User.objects.create(username=f"bulk{i}") for i in range(N + 2)]
    me, other = users[0], users[1]
    followees = users[2:]

    def timed(fn: Any) -> tuple[float, int]:
        statements: list[str] = []

        def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            statements.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(count):
            t0 = time.perf_counter()
            with transaction.atomic():
                fn()
            elapsed = time.perf_counter() - t0
        return elapsed * 1000, len(statements)

    def warm() -> None:
        Follow.cache.get(follower=me)
        Follow.cache.get(follower=other)

    results: dict[str, dict[str, tuple[float, int]]] = {}
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    for name, model in (("plain", PlainFollow), ("listy", Follow)):
        cached = model is Follow
        r: dict[str, tuple[float, int]] = {}
        rows = [model(created=now, follower=me, followee=u) for u in followees]
        r["bulk_create"] = timed(lambda: model.objects.bulk_create(rows))
        if cached:
            warm()
        r["update"] = timed(lambda: model.objects.filter(follower=me).update(follower=other))
        if cached:
            warm()
        objs = list(model.objects.filter(follower=other))
        for o in objs:
            o.follower = me
        r["bulk_update"] = timed(lambda: model.objects.bulk_update(objs, ["follower"], batch_size=1000))
        if cached:
            warm()
        r["delete"] = timed(lambda: model.objects.filter(follower=me).delete())
        results[name] = r
    if Follow.cache.count(follower=me) != Follow.objects.filter(follower=me).count():
        raise SystemExit("the cached count differs from the database")
    print(f"| call ({N:,} rows, PostgreSQL) | without Listy: ms, statements | with Listy: ms, statements | time ratio | extra statements |")
    print("|---|---:|---:|---:|---:|")
    for call in ("update", "delete", "bulk_create", "bulk_update"):
        (pt, ps), (lt, ls) = results["plain"][call], results["listy"][call]
        print(f"| `{call}()` | {pt:.1f} ms, {ps} | {lt:.1f} ms, {ls} | {lt / pt:.2f}x | {ls - ps} |")


if __name__ == "__main__":
    main()
