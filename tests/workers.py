"""OS processes for the stress and partition tests (see ``tests/crossproc.py``
for the simpler one-shot helper). They share the test database
(``LISTY_TEST_DB_NAME``) and memcached (``LISTY_SERVERS``) with pytest.

``python tests/workers.py stress SEED OPS USER_ID,USER_ID,... [TEAM_ID,TEAM_ID,...]``
    OPS random Listy operations on the users' follow graph: adds and deletes
    (through Listy and through the ORM's signals), rolled-back adds, every
    batched ORM write path (``QuerySet.update()`` moving rows between
    lists, ``bulk_create()`` with ``ignore_conflicts``/``update_conflicts``,
    ``bulk_update()``, queryset ``delete()``), a raw SQL write through
    ``connection.cursor()``, many-to-many ``add``/``remove`` of the teams'
    members (``Team.members``, whose through table has a ListCache), reads
    of every kind, ``Follow.cache.flush_all()`` and memcached ``flush_all``
    (these and the other writes that repair a model's lists wholesale are
    not in the last fifth of the operations).
    Prints one JSON line: operations done per kind, primary keys created.
    ``LISTY_STRESS_MODEL=Friend`` runs them on ``Friend`` (unique pairs,
    soft deletes) instead of ``Follow``; ``LISTY_STRESS_MIX=add,raw_sql,...``
    keeps only the writes named (reads stay).

``python tests/workers.py delete FOLLOWER FOLLOWEE listy|orm``
    One delete of the pair (the concurrent-delete test).

``python tests/workers.py insert_then_exit FOLLOWER FOLLOWEE``
    An add() whose row is then deleted behind Listy's back, and the process
    ends before its background worker's next look (the exit test).

``python tests/workers.py add_member A B m2m|upsert``
    One insert that may meet a concurrent insert of the same row (the
    concurrent-insert test): ``Team(pk=A).members.add(B)``, or an upsert
    of the ``Friend`` pair ``(A, B)``.

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
import time
import traceback
from collections import Counter
from contextlib import nullcontext

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.db import DatabaseError, connection, models, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from listy.store import get_store  # noqa: E402
from tests.testapp.models import Follow, Friend, Team, TeamMembers  # noqa: E402


class Rollback(Exception):
    pass


class OrmWrites:
    """The batched ORM write paths and a raw SQL write on the follow graph
    (``model``: ``Follow`` or ``Friend``), and many-to-many adds and
    removes of the teams' members. Each picks its rows at random among a
    few users, so that the processes' writes meet on the same rows."""

    def __init__(self, model: type[models.Model], rng: random.Random, users: list[int], teams: list[int]) -> None:
        self.model = model
        self.rng = rng
        self.users = users
        self.teams = teams
        self.soft = model is Friend  # soft deletes (hidden) and unique pairs

    def some(self, k: int) -> list[int]:
        return self.rng.sample(self.users, self.rng.randint(1, k))

    def update_move(self) -> None:
        """``QuerySet.update()`` of the rows matched by a filter: they move
        to another followee's (or, for ``Follow``, follower's) lists."""
        r, model = self.rng, self.model
        u = r.choice(self.users)
        qs = model.objects.filter(follower_id=u, followee_id__in=self.some(3))
        if self.soft and r.random() < 0.4:
            qs.update(hidden=r.random() < 0.5)  # in or out of every list
        elif not self.soft and r.random() < 0.3:
            qs.update(follower_id=r.choice(self.users))
        else:
            # Friend: a pair that exists already is an IntegrityError, as in plain Django
            qs.update(followee_id=r.choice(self.users))

    def bulk_create_ignore(self) -> list[int]:
        """``bulk_create(ignore_conflicts=True)``: Friend's existing pairs
        conflict; the database does not say which rows went in."""
        objs = [self.model(follower_id=u, followee_id=v) for u, v in self.pairs(3)]
        self.model.objects.bulk_create(objs, ignore_conflicts=True)
        return []

    def bulk_create_upsert(self) -> list[int]:
        """``bulk_create(update_conflicts=True)``: Friend's existing pairs
        are updated (``hidden``: revived or hidden); Follow's rows are
        given existing primary keys (some deleted meanwhile: inserted
        again) and move to another followee."""
        r, model = self.rng, self.model
        target = connection.features.supports_update_conflicts_with_target
        if self.soft:
            objs = [model(follower_id=u, followee_id=v, hidden=r.random() < 0.3) for u, v in self.pairs(3)]
            unique, fields = ["follower", "followee"], ["hidden"]
        else:
            pks = list(model._base_manager.order_by("?").values_list("pk", flat=True)[:2])
            objs = [model(pk=pk, follower_id=u, followee_id=v) for pk, (u, v) in zip(pks, self.pairs(len(pks)))]
            objs.append(model(follower_id=r.choice(self.users), followee_id=r.choice(self.users)))
            unique, fields = ["pk"], ["follower", "followee"]
        created = model.objects.bulk_create(
            objs, update_conflicts=True, unique_fields=unique if target else None, update_fields=fields
        )
        return [o.pk for o in created if o.pk is not None]

    def pairs(self, k: int) -> list[tuple[int, int]]:
        """Up to ``k`` distinct pairs (one upsert may not touch a row twice)."""
        found = {(self.rng.choice(self.users), self.rng.choice(self.users)) for _ in range(k)}
        return sorted(found)

    def bulk_update(self) -> None:
        """``bulk_update()`` of a few rows read a moment ago: Follow's move
        to another followee, Friend's are hidden or revived."""
        r, model = self.rng, self.model
        objs = list(model._base_manager.filter(follower_id=r.choice(self.users)).order_by("?")[:3])
        for o in objs:
            if self.soft:
                o.hidden = not o.hidden
            else:
                o.followee_id = r.choice(self.users)
        if objs:
            model.objects.bulk_update(objs, ["hidden"] if self.soft else ["followee"])

    def qs_delete(self) -> None:
        """A queryset ``delete()`` (hard, for Friend too) of a few pairs."""
        self.model.objects.filter(follower_id=self.rng.choice(self.users), followee_id__in=self.some(3)).delete()

    def raw_sql(self) -> list[int]:
        """One write of the model's table through ``connection.cursor()``:
        Listy repairs the model's lists after commit."""
        r, model = self.rng, self.model
        table = connection.ops.quote_name(model._meta.db_table)
        u, v = r.choice(self.users), r.choice(self.users)
        how = r.choice(["update", "delete", "insert"])
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as c:
            if how == "update":
                c.execute(f"UPDATE {table} SET followee_id = %s WHERE follower_id = %s AND followee_id = %s", [r.choice(self.users), u, v])
            elif how == "delete":
                c.execute(f"DELETE FROM {table} WHERE follower_id = %s AND followee_id = %s", [u, v])
            elif self.soft:
                c.execute(f"INSERT INTO {table} (created, follower_id, followee_id, hidden) VALUES (%s, %s, %s, %s)", [now, u, v, False])
            else:
                c.execute(f"INSERT INTO {table} (created, follower_id, followee_id) VALUES (%s, %s, %s)", [now, u, v])
        return []

    def m2m_add(self) -> None:
        """``team.members.add()`` (or ``user.teams.add()``): the m2m_changed path."""
        r = self.rng
        if r.random() < 0.5:
            Team(pk=r.choice(self.teams)).members.add(*self.some(3))
        else:
            User(pk=r.choice(self.users)).teams.add(*r.sample(self.teams, r.randint(1, 2)))

    def m2m_remove(self) -> None:
        """``team.members.remove()`` (or ``user.teams.remove()``): a queryset delete of the through table."""
        r = self.rng
        if r.random() < 0.5:
            Team(pk=r.choice(self.teams)).members.remove(*self.some(3))
        else:
            User(pk=r.choice(self.users)).teams.remove(*r.sample(self.teams, r.randint(1, 2)))


#: The writes that repair a model's lists wholesale (the generation bump of
#: ``flush_all()``): like the flushes, not in the calm last fifth.
WHOLESALE = {"bulk_create_ignore", "raw_sql"}


def stress(seed: int, n_ops: int, users: list[int], teams: list[int]) -> None:
    # LISTY_STRESS_MODEL=Friend: unique (follower, followee) pairs and soft deletes
    model = {"Follow": Follow, "Friend": Friend}[os.environ.get("LISTY_STRESS_MODEL", "Follow")]
    rng = random.Random(seed)
    done: Counter[str] = Counter()
    created: list[int] = []
    seen: list[int] = []
    errors: list[str] = []
    orm = OrmWrites(model, rng, users, teams)
    # an upsert without unique fields (MariaDB) cannot say which rows it
    # updated: a wholesale repair
    wholesale = WHOLESALE | (set() if connection.features.supports_update_conflicts_with_target else {"bulk_create_upsert"})

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
        # the batched ORM write paths, a raw SQL write, m2m adds and removes
        ("update_move", 4),
        ("bulk_create_ignore", 2),
        ("bulk_create_upsert", 3),
        ("bulk_update", 3),
        ("qs_delete", 3),
        ("raw_sql", 1),
        ("m2m_add", 4),
        ("m2m_remove", 3),
        ("get_team", 4),
    ]
    if not teams:
        ops = [(n, w) for n, w in ops if not n.startswith(("m2m_", "get_team"))]
    # LISTY_STRESS_MIX=add,raw_sql,...: only these writes (reads stay), to
    # narrow a divergence down to the kinds of operation it needs
    mix = os.environ.get("LISTY_STRESS_MIX")
    if mix:
        reads = {"get", "get_pair", "get_one", "get_multi", "count", "count_all", "get_team"}
        ops = [(n, w) for n, w in ops if n in set(mix.split(",")) | reads]
    names = [n for n, _ in ops]
    weights = [w for _, w in ops]
    calm = [w if not n.startswith("flush") and n not in wholesale else 0 for n, w in ops]
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
            elif op in ("bulk_create_ignore", "bulk_create_upsert", "raw_sql"):
                # a third of them inside a transaction of the caller's
                with transaction.atomic() if rng.random() < 0.33 else nullcontext():
                    created.extend(getattr(orm, op)())
            elif op in ("update_move", "bulk_update", "qs_delete", "m2m_add", "m2m_remove"):
                with transaction.atomic() if rng.random() < 0.33 else nullcontext():
                    getattr(orm, op)()
            elif op == "get_team":
                if rng.random() < 0.5:
                    TeamMembers.cache.get(team_id=rng.choice(teams))
                else:
                    TeamMembers.cache.count(user_id=u)
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


def add_member(team: int, user: int, how: str) -> None:
    """One insert of the membership: ``m2m`` (``team.members.add()``),
    ``upsert`` (``Friend`` pair ``team, user`` as users, through
    ``bulk_create(update_conflicts=True)``)."""
    print(json.dumps({"started": True}), flush=True)
    if how == "m2m":
        Team(pk=team).members.add(user)
    else:
        Friend.objects.bulk_create(
            [Friend(follower_id=team, followee_id=user)],
            update_conflicts=True,
            unique_fields=["follower", "followee"],
            update_fields=["hidden"],
        )
    print(json.dumps({"added": True}))


def insert_then_exit(follower: int, followee: int) -> None:
    """``Follow.cache.add()`` (its settle left to the background worker's
    next look), then the row deleted by a statement the raw-SQL guard does
    not see (as if its delete's tombstones went to an older generation), and
    the process ends at once, before that look."""
    from listy import rawsql

    Follow.cache.get(follower_id=follower)  # the worker starts; its first look runs now
    time.sleep(0.3)
    obj = Follow.cache.add(follower_id=follower, followee_id=followee)
    assert obj is not None
    connection.execute_wrappers.remove(rawsql.guard)
    with connection.cursor() as c:
        c.execute(f"DELETE FROM {connection.ops.quote_name(Follow._meta.db_table)} WHERE id = %s", [obj.pk])
    print(json.dumps({"pk": obj.pk}), flush=True)


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
        teams = [int(x) for x in sys.argv[5].split(",")] if len(sys.argv) > 5 else []
        stress(int(sys.argv[2]), int(sys.argv[3]), [int(x) for x in sys.argv[4].split(",")], teams)
    elif sys.argv[1] == "insert_then_exit":
        insert_then_exit(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1] == "add_member":
        add_member(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif sys.argv[1] == "delete":
        delete(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif sys.argv[1] == "serve":
        serve()
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")
