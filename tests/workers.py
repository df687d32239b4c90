"""OS processes for the stress and partition tests (see ``tests/crossproc.py``
for the simpler one-shot helper). They share the test database
(``LISTY_TEST_DB_NAME``) and memcached (``LISTY_SERVERS``) with pytest.

``python tests/workers.py stress SEED OPS USER_ID,USER_ID,...``
    OPS random Listy operations on the users' follow graph: adds and deletes
    (through Listy and through the ORM's signals), rolled-back adds, reads
    of every kind, ``Follow.cache.flush_all()`` and memcached ``flush_all``
    (not in the last fifth of the operations).
    Prints one JSON line: operations done per kind, primary keys created.
    ``LISTY_STRESS_MODEL=Friend`` runs them on ``Friend`` (unique pairs,
    soft deletes) instead of ``Follow``.

``python tests/workers.py delete FOLLOWER FOLLOWEE listy|orm``
    One delete of the pair (the concurrent-delete test).

``python tests/workers.py serve``
    Reads commands from stdin, one per line, answers one JSON line each:
    ``get FOLLOWER`` (the list, its counter, whether it came from the
    cache), ``one PK``, ``quit``. Prints ``{"ready": true}`` first.
"""

from __future__ import annotations

import json
import os
import random
import sys
import traceback
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.db import DatabaseError, transaction  # noqa: E402

from listy.store import get_store  # noqa: E402
from tests.testapp.models import Follow, Friend  # noqa: E402


class Rollback(Exception):
    pass


def stress(seed: int, n_ops: int, users: list[int]) -> None:
    # LISTY_STRESS_MODEL=Friend: unique (follower, followee) pairs and soft deletes
    model = {"Follow": Follow, "Friend": Friend}[os.environ.get("LISTY_STRESS_MODEL", "Follow")]
    rng = random.Random(seed)
    done: Counter[str] = Counter()
    created: list[int] = []
    seen: list[int] = []
    errors: list[str] = []

    def pair() -> tuple[int, int]:
        return rng.choice(users), rng.choice(users)

    ops = [
        ("add", 24),
        ("orm_create", 5),
        ("rolled_back_add", 3),
        ("delete", 14),
        ("orm_delete", 5),
        ("get", 16),
        ("get_pair", 10),
        ("get_one", 6),
        ("get_multi", 3),
        ("count", 7),
        ("count_all", 3),
        ("flush_model", 3),
        ("flush_memcached", 1),
    ]
    names = [n for n, _ in ops]
    weights = [w for _, w in ops]
    calm = [w if not n.startswith("flush") else 0 for n, w in ops]
    for i in range(n_ops):
        # no flushes in the last fifth: most lists end up cached and updated
        # in place, so the final check compares lists, not fresh rebuilds
        op = rng.choices(names, weights if i < n_ops * 4 // 5 else calm)[0]
        u, v = pair()
        try:
            if op == "add":
                obj = model.cache.add(follower_id=u, followee_id=v)
                if obj is not None:
                    created.append(obj.pk)
            elif op == "orm_create":
                created.append(model.objects.create(follower_id=u, followee_id=v).pk)
            elif op == "rolled_back_add":
                try:
                    with transaction.atomic():
                        model.cache.add(follower_id=u, followee_id=v)
                        raise Rollback
                except Rollback:
                    pass
            elif op == "delete":
                model.cache.delete(follower_id=u, followee_id=v)
            elif op == "orm_delete":
                obj = model.objects.filter(follower_id=u).order_by("?").first()
                if obj is not None:
                    obj.delete()
            elif op == "get":
                seen.extend(f.pk for f in model.cache.get(follower_id=u))
            elif op == "get_pair":
                seen.extend(f.pk for f in model.cache.get(follower_id=u, followee_id=v))
            elif op == "get_one":
                pool = created + seen
                if pool:
                    model.cache.get_one(rng.choice(pool))
            elif op == "get_multi":
                model.cache.get_multi([{"follower_id": u}, {"follower_id": v, "followee_id": u}])
            elif op == "count":
                model.cache.count(follower_id=u)
            elif op == "count_all":
                model.cache.count()
            elif op == "flush_model":
                model.cache.flush_all()
            elif op == "flush_memcached":
                get_store().flush_all()
            done[op] += 1
        except DatabaseError as exc:  # deadlocks and the like: the database's own errors
            done[f"db_error:{type(exc).__name__}"] += 1
        except Exception as exc:  # noqa: BLE001 - reported to the test, which judges
            done[f"error:{op}:{type(exc).__name__}"] += 1
            if len(errors) < 5:
                errors.append(f"{op}: {traceback.format_exc()}")
    print(json.dumps({"ops": sum(done.values()), "done": dict(done), "created": created, "errors": errors}))


def serve() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "quit":
            break
        if parts[0] == "get":
            u = int(parts[1])
            got = Follow.cache.get(follower_id=u)
            answer = {
                "pks": [f.pk for f in got],
                "followees": [f.followee_id for f in got],
                "from_cache": got.from_cache,
                "count": Follow.cache.count(follower_id=u),
            }
        elif parts[0] == "one":
            obj = Follow.cache.get_one(int(parts[1]))
            answer = {"pk": obj.pk if obj is not None else None}
        else:
            answer = {"error": f"unknown command {parts[0]!r}"}
        print(json.dumps(answer), flush=True)


def delete(follower: int, followee: int, how: str) -> None:
    """One delete of the pair, through Listy or the ORM (signals)."""
    print(json.dumps({"started": True}), flush=True)
    if how == "listy":
        print(json.dumps({"deleted": Follow.cache.delete(follower_id=follower, followee_id=followee)}))
    else:
        n, _ = Follow.objects.filter(follower_id=follower, followee_id=followee).delete()
        print(json.dumps({"deleted": n}))


if __name__ == "__main__":
    if sys.argv[1] == "stress":
        stress(int(sys.argv[2]), int(sys.argv[3]), [int(x) for x in sys.argv[4].split(",")])
    elif sys.argv[1] == "delete":
        delete(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif sys.argv[1] == "serve":
        serve()
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")
