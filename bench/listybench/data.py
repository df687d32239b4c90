"""The benchmark's data: users and a follow graph, identical in PostgreSQL and
SQLite, rebuilt from scratch on every run.

Followers and their list lengths:

- ``L100``, ``L1000``, ``L10000``: the three measured lists;
- ``mixed:<system>``: one 1,000-item list per system for the 99%/1% workload
  (each system writes only to its own list, so no system's writes invalidate
  or change another's);
- ``add:<system>``: 100-item lists for the "cost of one add()" measure
  (``add:FollowOne`` in the table of the 1-index model);
- ``bg<i>``: background followers (20 x 500) so that every list's rows are
  spread over the whole table.

Rows of all followers are interleaved on disk: every follower's rows are
spread evenly through the insertion order (a proportional round-robin), so
reading one list touches pages shared with other lists, as in a real table.
``created`` increases with the primary key (one second apart).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

LENGTHS = (100, 1_000, 10_000)
MIXED_LENGTH = 1_000
ADD_LENGTH = 100
BACKGROUND = (20, 500)
SPARE_FOLLOWEES = 3_000  # followees never followed at build time (for adds)
BASE_TIME = datetime.datetime(2025, 1, 6, tzinfo=datetime.UTC)


@dataclass
class Data:
    followers: dict[str, int] = field(default_factory=dict)
    """name → user id."""
    lengths: dict[str, int] = field(default_factory=dict)
    """name → list length at build time."""
    spare_followees: list[int] = field(default_factory=list)
    """user ids nobody follows at build time; adds take them in turn."""
    follow_rows: int = 0
    followone_rows: int = 0

    def take_followee(self) -> int:
        return self.spare_followees.pop(0)


@contextlib.contextmanager
def _explicit_created(*models: type) -> Iterator[None]:
    """Lets bulk_create keep the ``created`` values we give (auto_now_add
    would overwrite them with now())."""
    fields = [m._meta.get_field("created") for m in models]
    saved = [f.auto_now_add for f in fields]
    for f in fields:
        f.auto_now_add = False
    try:
        yield
    finally:
        for f, s in zip(fields, saved):
            f.auto_now_add = s


def ensure_postgres_database(name: str) -> str:
    """Creates the benchmark's own database if it does not exist; returns
    the name to use (falls back to ``test`` if it cannot be created)."""
    import psycopg

    host = os.environ.get("BENCH_PG_HOST", "127.0.0.1")
    port = int(os.environ.get("BENCH_PG_PORT", "5432"))
    user = os.environ.get("BENCH_PG_USER", "postgres")
    try:
        with psycopg.connect(host=host, port=port, user=user, dbname="test", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        return name
    except Exception as exc:  # pragma: no cover - depends on the server's rights
        print(f"[bench] cannot create database {name!r} ({exc}); using 'test'")
        return "test"


def _reset_schema() -> None:
    from django.core.management import call_command
    from django.db import connections

    with connections["default"].cursor() as cur:
        cur.execute(
            "DROP TABLE IF EXISTS follows_follow, follows_followone CASCADE"
        )
    # auth first: the unmigrated app's tables point at auth_user
    call_command("migrate", "auth", database="default", verbosity=0, interactive=False)
    call_command("migrate", database="default", run_syncdb=True, verbosity=0, interactive=False)
    with connections["default"].cursor() as cur:
        cur.execute("TRUNCATE auth_user, follows_follow, follows_followone RESTART IDENTITY CASCADE")

    path = connections["sqlite"].settings_dict["NAME"]
    connections["sqlite"].close()
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)
    call_command("migrate", "auth", database="sqlite", verbosity=0, interactive=False)
    call_command("migrate", database="sqlite", run_syncdb=True, verbosity=0, interactive=False)


def build(mixed_systems: list[str], add_systems: list[str]) -> Data:
    """Builds users and follows in both databases; returns who is who."""
    from django.contrib.auth.models import User
    from django.db import connections, transaction

    from benchproj.follows.models import Follow, FollowOne

    _reset_schema()
    data = Data()

    plan: list[tuple[str, int]] = [(f"L{n}", n) for n in LENGTHS]
    plan += [(f"mixed:{s}", MIXED_LENGTH) for s in mixed_systems]
    plan += [(f"add:{s}", ADD_LENGTH) for s in add_systems]
    plan += [(f"bg{i}", BACKGROUND[1]) for i in range(BACKGROUND[0])]
    plan_one = [("add:FollowOne", ADD_LENGTH)]

    n_followees = max(LENGTHS) + SPARE_FOLLOWEES
    names = [name for name, _ in plan + plan_one]
    users = [User(username=f"followee{i}", password="!") for i in range(n_followees)]
    users += [User(username=f"follower:{name}", password="!") for name in names]
    with transaction.atomic():
        User.objects.bulk_create(users, batch_size=5000)
    ids = list(User.objects.order_by("pk").values_list("pk", flat=True))
    followees, follower_ids = ids[:n_followees], ids[n_followees:]
    data.followers = dict(zip(names, follower_ids))
    data.lengths = {name: n for name, n in plan + plan_one}
    data.spare_followees = followees[max(LENGTHS):]

    def interleaved(items: list[tuple[str, int]]) -> list[tuple[int, int]]:
        slots = []
        for order, (name, n) in enumerate(items):
            for k in range(n):
                slots.append(((k + 0.5) / n, order, k, data.followers[name]))
        slots.sort()
        return [(follower, followees[k]) for _, _, k, follower in slots]

    rows = interleaved(plan)
    rows_one = interleaved(plan_one)
    t0 = BASE_TIME
    follows = [
        Follow(created=t0 + datetime.timedelta(seconds=i), follower_id=a, followee_id=b)
        for i, (a, b) in enumerate(rows)
    ]
    follows_one = [
        FollowOne(created=t0 + datetime.timedelta(seconds=i), follower_id=a, followee_id=b)
        for i, (a, b) in enumerate(rows_one)
    ]
    with _explicit_created(Follow, FollowOne), transaction.atomic():
        Follow.objects.bulk_create(follows, batch_size=5000)
        FollowOne.objects.bulk_create(follows_one, batch_size=5000)
    data.follow_rows, data.followone_rows = len(follows), len(follows_one)

    # The same rows, primary keys included, in SQLite.
    users_pg = list(User.objects.order_by("pk"))
    follows_pg = list(Follow.objects.order_by("pk"))
    with _explicit_created(Follow), transaction.atomic(using="sqlite"):
        User.objects.using("sqlite").bulk_create(users_pg, batch_size=2000)
        Follow.objects.using("sqlite").bulk_create(follows_pg, batch_size=2000)

    with connections["default"].cursor() as cur:
        cur.execute("ANALYZE")
        cur.execute("CHECKPOINT")
    with connections["sqlite"].cursor() as cur:
        cur.execute("ANALYZE")
    return data
