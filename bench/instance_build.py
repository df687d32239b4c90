"""How long Listy takes to build one model instance, against ``Model.from_db``.

A 10,000-item cached list of the test-suite's ``Follow`` (SPEC §2's model),
read warm as ``[f.followee_id for f in Follow.cache.get(follower=u)]``, per
item; beside it the same rows turned into instances by ``Follow.from_db``
(the ORM's own per-row constructor, rows already fetched), and for scale the
plain ORM read and Listy's decode without instances (``.values()``).

    .venv/bin/python bench/instance_build.py [--items 10000] [--rounds 30]

Uses ``tests.settings`` (a throw-away SQLite database, the embedded store;
``LISTY_SERVERS=host:port`` for memcached). Prints a Markdown table; not a
test, nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "python")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.setdefault("LISTY_TEST_DB", "sqlite")


def timed(fn, rounds: int) -> list[float]:
    """Seconds per call, ``rounds`` times after one warm-up call (GC on, as
    in a real process)."""
    fn()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()

    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test.utils import setup_databases, teardown_databases

    from listy.store import get_store
    from tests.testapp.models import Follow

    old = setup_databases(verbosity=0, interactive=False)
    try:
        get_store().flush_all()
        me = User.objects.create(username="me")
        others = User.objects.bulk_create([User(username=f"u{i}") for i in range(args.items)])
        Follow.objects.bulk_create([Follow(follower=me, followee=o) for o in others], batch_size=2000)
        Follow.cache.rebuild(follower=me)
        n = len(Follow.cache.get(follower=me))
        assert n == args.items, n

        names = [f.attname for f in Follow._meta.concrete_fields]
        rows = list(Follow.objects.filter(follower=me).order_by("-pk").values_list(*names))
        alias = connection.alias

        def listy_instances() -> list[int]:
            return [f.followee_id for f in Follow.cache.get(follower=me)]

        def listy_values() -> list:
            return Follow.cache.get(follower=me).values()

        def from_db() -> list[int]:
            return [Follow.from_db(alias, names, row).followee_id for row in rows]

        def orm() -> list[int]:
            return [f.followee_id for f in Follow.objects.filter(follower=me).order_by("-pk")]

        assert listy_instances() == from_db() == orm()
        hits = Follow.cache.hits
        results = {
            "Listy: `[f.followee_id for f in Follow.cache.get(follower=u)]` (warm)": timed(listy_instances, args.rounds),
            "Listy: `.values()` (decode, no instances)": timed(listy_values, args.rounds),
            "`[Follow.from_db(alias, names, row).followee_id for row in rows]` (rows fetched)": timed(
                from_db, args.rounds
            ),
            f"plain ORM read ({connection.vendor}, for scale)": timed(orm, max(5, args.rounds // 3)),
        }
        assert Follow.cache.hits > hits and Follow.cache.misses <= 1
    finally:
        teardown_databases(old, verbosity=0)

    import django as dj

    print(
        f"\n{n:,} items, Python {sys.version.split()[0]}, Django {dj.get_version()}, "
        f"store {get_store().kind}, {args.rounds} rounds, GC {'on' if gc.isenabled() else 'off'}\n"
    )
    base = statistics.median(results[next(k for k in results if k.startswith("`[Follow.from_db"))])
    print("| what | median per list | per item | vs from_db |")
    print("|---|---:|---:|---:|")
    for what, samples in results.items():
        med = statistics.median(samples)
        print(f"| {what} | {med * 1e3:.2f} ms | {med / n * 1e9:,.0f} ns | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
