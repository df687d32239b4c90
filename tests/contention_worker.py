"""OS processes of the high-contention tests (``tests/test_contention.py``,
``tests/test_kill.py``; issue 16). They share the test database
(``LISTY_TEST_DB_NAME``) and memcached (``LISTY_SERVERS``) with pytest, and
work on ``Mark`` (soft deletes, an enabled flag, indexes ``(entry, color)``,
``(name, color)`` and ``pk``) over a tiny key space.

``python tests/contention_worker.py stress SEED OPS ENTRY_ID,ENTRY_ID,...``
    OPS random ordinary calls on ``Mark``: ``Mark.cache.add()`` (may revive),
    ``Mark.cache.delete()`` (a soft delete), ``save(update_fields=["color"])``
    of a possibly stale instance (a move between lists), soft-delete and
    enabled flips through ``save(update_fields=...)``, ``instance.delete()``,
    a plain ``save()`` of a stale instance (Django re-creates a row deleted
    meanwhile under its old primary key), the batched ORM write paths
    (``QuerySet.update()`` moving rows or flipping flags, ``bulk_update()``
    of stale instances, ``bulk_create()`` of new rows and, with
    ``ignore_conflicts``/``update_conflicts``, of rows under primary keys
    seen before (the primary key is the unique constraint met: a row
    deleted meanwhile is inserted again), queryset ``delete()``), a raw
    SQL write through ``connection.cursor()``, and reads; a third of the
    writes inside ``transaction.atomic()``; the writes that repair the lists
    wholesale not in the last fifth. Prints one JSON line: operations per
    kind, errors per class, primary keys seen, and up to 5 tracebacks.
    ``LISTY_CONTENTION_MIX=add,move,...`` keeps only the writes named
    (reads stay).

    Errors are classed as Django would have raised them without Listy
    (``django:...``: ``save(update_fields=...)`` of a row that is gone, a
    duplicate primary key when a re-creating ``save()`` races another; the
    database's own deadlocks and lock timeouts, ``db:...``) or not
    (``listy:<op>:<exception>``): the test asserts there are none of those.

``python tests/contention_worker.py kill POINT WRITE ENTRY_ID PK[,PK]``
    One write of ``Mark`` inside ``transaction.atomic()`` (WRITE: ``add`` a
    new row (name ``e``), ``revive`` (add() of a soft-deleted row PK), ``move``
    (``save(update_fields=["color"])`` of PK), ``soft_delete``
    (``Mark.cache.delete(pk=PK)``), ``hard_delete`` (``instance.delete()``),
    ``delete_two`` (``Mark.cache.delete()`` of the two rows PK,PK)), and the
    process dies with ``os._exit(0)`` at POINT:

    - ``before_commit``: after the write's SQL, before COMMIT;
    - ``after_commit``: after COMMIT, before any cache work (an
      ``on_commit`` hook registered before the write runs before Listy's);
    - ``after_frames``: once the change's frames were sent, at its settle
      read (``DjangoBackingStore.stored_state``, the engine's row loader):
      for ``delete_two``, after the first row's frames, before the
      second's (the engine sends one row's frames in one pipelined batch:
      that is the finest "between two lists" the binding exposes);
    - ``under_lease``: no write; a read of the ``(entry, color 1)`` list,
      which is not cached, dies in the database read the engine makes
      holding the build lease (``DjangoBackingStore.rows``: just after
      ``HookPoint::LeaseTaken``; the binding exposes no hook).

    Prints ``{"survived": true}`` if the point was not reached (a change
    that does not settle has no ``after_frames`` point).

``python tests/contention_worker.py compact ENTRY_ID``
    Prints ``{"ready": true}``, waits for a line on stdin, then reads the
    ``(entry, color 1)`` list in a loop, forever: the test gave the list
    dead frames, so the first read compacts it; the test SIGKILLs the
    process a random few milliseconds after the line (a reader only: a
    writer killed mid-write is ``kill``'s business).

``python tests/contention_worker.py evict STOPFILE ENTRY_ID,ENTRY_ID,...``
    Deletes random list keys of ``Mark`` (every index) from memcached until
    STOPFILE exists. Prints one JSON line: keys deleted.
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
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

import listy  # noqa: E402
from listy.store import get_store  # noqa: E402
from tests.testapp.models import Mark  # noqa: E402

NAMES = ["a", "b", "c", "d"]
COLORS = [1, 2, 3]

#: What Django itself raises for ``save(update_fields=...)`` of a gone row.
GONE = "did not affect any rows"


def django_would_raise(op: str, exc: BaseException) -> str | None:
    """The class of an error Django would raise without Listy for this call,
    or None: then Listy raised it."""
    text = str(exc)
    if isinstance(exc, OperationalError) or "deadlock" in text.lower() or "lock wait timeout" in text.lower():
        return f"db:{op}:{type(exc).__name__}"
    if op in ("move", "flip_deleted", "flip_enabled") and isinstance(exc, DatabaseError) and GONE in text:
        return f"django:{op}:gone"
    if op in ("stale_save", "raw_sql") and isinstance(exc, IntegrityError):
        # the UPDATE matched nothing (deleted meanwhile), the INSERT under the
        # old pk met another process's re-creation of it
        return f"django:{op}:duplicate_pk"
    return None


class Stress:
    """One worker's random operations (``stress`` mode)."""

    OPS = [
        ("add", 18),
        ("cache_delete", 9),
        ("move", 14),
        ("flip_deleted", 7),
        ("flip_enabled", 3),
        ("hard_delete", 6),
        ("stale_save", 7),
        ("qs_move", 5),
        ("qs_flip", 3),
        ("bulk_update", 4),
        ("bulk_create", 3),
        ("bulk_create_ignore", 2),
        ("bulk_create_upsert", 3),
        ("qs_delete", 3),
        ("raw_sql", 2),
        ("refresh", 8),
        ("get_entry", 8),
        ("get_name", 6),
        ("get_one", 6),
        ("count", 4),
    ]

    def __init__(self, seed: int, entries: list[int]) -> None:
        self.rng = random.Random(seed)
        self.entries = entries
        self.pool: list[Mark] = []  # instances, fetched some time ago: stale
        self.seen: set[int] = set()
        self.done: Counter[str] = Counter()
        self.errors: list[str] = []

    def triple(self) -> dict[str, Any]:
        r = self.rng
        return {"entry_id": r.choice(self.entries), "name": r.choice(NAMES), "color": r.choice(COLORS)}

    def instance(self) -> Mark | None:
        if not self.pool or self.rng.random() < 0.2:
            self.refresh()
        return self.rng.choice(self.pool) if self.pool else None

    def refresh(self) -> None:
        obj = Mark._base_manager.filter(entry_id=self.rng.choice(self.entries)).order_by("?").first()
        if obj is not None:
            self.seen.add(obj.pk)
            self.pool.append(obj)
            del self.pool[:-12]

    def write(self, op: str) -> None:
        r = self.rng
        if op == "add":
            obj = Mark.cache.add(**self.triple())
            if obj is not None:
                self.seen.add(obj.pk)
                self.pool.append(obj)
        elif op == "cache_delete":
            Mark.cache.delete(**self.triple())
        elif op == "hard_delete":
            obj = self.instance()
            if obj is not None:
                pk = obj.pk
                obj.delete()
                obj.pk = pk  # the stale instance may be saved again: Django re-creates it
        else:
            obj = self.instance()
            if obj is None:
                return
            if op == "move":
                obj.color = r.choice(COLORS)
                obj.save(update_fields=["color"])
            elif op == "flip_deleted":
                obj.deleted = not obj.deleted
                obj.save(update_fields=["deleted"])
            elif op == "flip_enabled":
                obj.enabled = not obj.enabled
                obj.save(update_fields=["enabled"])
            elif op == "stale_save":
                if r.random() < 0.5:
                    obj.color = r.choice(COLORS)
                obj.save()

    def batched(self, op: str) -> None:
        """The batched ORM write paths and a raw SQL write."""
        r = self.rng
        if op == "qs_move":
            # the rows of one (entry, name) move to a color's lists
            t = self.triple()
            Mark.objects.filter(entry_id=t["entry_id"], name=t["name"]).update(color=t["color"])
        elif op == "qs_flip":
            t = self.triple()
            field = "deleted" if r.random() < 0.6 else "enabled"
            Mark.objects.filter(entry_id=t["entry_id"], color=t["color"]).update(**{field: r.random() < 0.5})
        elif op == "bulk_update":
            objs = {o.pk: o for o in (self.instance() for _ in range(3)) if o is not None}
            for o in objs.values():
                o.color = r.choice(COLORS)
                if r.random() < 0.3:
                    o.deleted = not o.deleted
            if objs:
                Mark.objects.bulk_update(list(objs.values()), ["color", "deleted"])
        elif op == "bulk_create":
            made = Mark.objects.bulk_create([Mark(**self.triple()) for _ in range(r.randint(1, 3))])
            self.seen.update(o.pk for o in made if o.pk is not None)
        elif op in ("bulk_create_ignore", "bulk_create_upsert"):
            # rows under primary keys seen before: live ones conflict, those
            # hard-deleted meanwhile are inserted again under their old key
            pks = r.sample(sorted(self.seen), min(len(self.seen), r.randint(1, 3)))
            objs = [Mark(pk=pk, **self.triple()) for pk in pks] + [Mark(**self.triple())]
            if op == "bulk_create_ignore":
                Mark.objects.bulk_create(objs, ignore_conflicts=True)
            else:
                target = connection.features.supports_update_conflicts_with_target
                made = Mark.objects.bulk_create(
                    objs, update_conflicts=True, unique_fields=["pk"] if target else None, update_fields=["color", "deleted"]
                )
                self.seen.update(o.pk for o in made if o.pk is not None)
        elif op == "qs_delete":
            t = self.triple()
            Mark.objects.filter(entry_id=t["entry_id"], name=t["name"], color=t["color"]).delete()
        elif op == "raw_sql":
            self.raw_sql()

    def raw_sql(self) -> None:
        """One write of Mark's table through ``connection.cursor()``: Listy
        repairs the lists after commit."""
        r = self.rng
        table = connection.ops.quote_name(Mark._meta.db_table)
        t = self.triple()
        how = r.choice(["move", "flip", "delete", "insert"])
        with connection.cursor() as c:
            if how == "move":
                c.execute(f"UPDATE {table} SET color = %s WHERE entry_id = %s AND name = %s", [t["color"], t["entry_id"], t["name"]])
            elif how == "flip":
                c.execute(f"UPDATE {table} SET deleted = NOT deleted WHERE name = %s AND color = %s", [t["name"], t["color"]])
            elif how == "delete" and self.seen:
                c.execute(f"DELETE FROM {table} WHERE id = %s", [r.choice(sorted(self.seen))])
            else:
                now = connection.ops.adapt_datetimefield_value(timezone.now())
                c.execute(
                    f"INSERT INTO {table} (entry_id, name, color, created, deleted, enabled) VALUES (%s, %s, %s, %s, %s, %s)",
                    [t["entry_id"], t["name"], t["color"], now, False, True],
                )

    def read(self, op: str) -> None:
        r = self.rng
        if op == "get_entry":
            self.seen.update(m.pk for m in Mark.cache.get(entry_id=r.choice(self.entries), color=r.choice(COLORS)))
        elif op == "get_name":
            self.seen.update(m.pk for m in Mark.cache.get(name=r.choice(NAMES), color=r.choice(COLORS)))
        elif op == "get_one":
            if self.seen:
                Mark.cache.get_one(r.choice(sorted(self.seen)))
        elif op == "count":
            if r.random() < 0.5:
                Mark.cache.count(entry_id=r.choice(self.entries), color=r.choice(COLORS))
            else:
                Mark.cache.count()

    def run(self, n_ops: int) -> dict[str, Any]:
        # LISTY_CONTENTION_MIX=add,move,...: only these writes (reads stay),
        # to narrow a divergence down to the kinds of operation it needs
        mix = os.environ.get("LISTY_CONTENTION_MIX")
        ops = self.OPS
        if mix:
            allowed = set(mix.split(",")) | {"refresh", "get_entry", "get_name", "get_one", "count"}
            ops = [(n, w) for n, w in ops if n in allowed]
        names = [n for n, _ in ops]
        weights = [w for _, w in ops]
        # the writes that repair the lists wholesale (a generation bump) are
        # not in the last fifth: most lists end up cached and updated in
        # place, so the final check compares lists, not fresh rebuilds
        wholesale = {"raw_sql", "bulk_create_ignore"}
        if not connection.features.supports_update_conflicts_with_target:
            wholesale.add("bulk_create_upsert")  # an upsert without unique fields (MariaDB)
        calm = [0 if n in wholesale else w for n, w in ops]
        writes = {"add", "cache_delete", "move", "flip_deleted", "flip_enabled", "hard_delete", "stale_save"}
        batched = {n for n, _ in self.OPS} - writes - {"refresh", "get_entry", "get_name", "get_one", "count"}
        for i in range(n_ops):
            op = self.rng.choices(names, weights if i < n_ops * 4 // 5 else calm)[0]
            try:
                if op == "refresh":
                    self.refresh()
                elif op in writes or op in batched:
                    block = transaction.atomic() if self.rng.random() < 0.33 else nullcontext()
                    with block:
                        if op in writes:
                            self.write(op)
                        else:
                            self.batched(op)
                else:
                    self.read(op)
                self.done[op] += 1
            except Exception as exc:  # noqa: BLE001 - classed and reported to the test
                kind = django_would_raise(op, exc)
                if kind is None:
                    kind = f"listy:{op}:{type(exc).__name__}"
                    if len(self.errors) < 5:
                        self.errors.append(f"{op}: {traceback.format_exc()}")
                self.done[kind] += 1
        return {"ops": sum(self.done.values()), "done": dict(self.done), "seen": sorted(self.seen), "errors": self.errors}


def list_keys(entries: list[int], pks: list[int]) -> list[str]:
    keys = [Mark.cache.key(entry_id=e, color=c) for e in entries for c in COLORS]
    keys += [Mark.cache.key(name=n, color=c) for n in NAMES for c in COLORS]
    keys += [Mark.cache.key(pk=pk) for pk in pks]
    return keys


def evict(stopfile: str, entries: list[int]) -> None:
    """Deletes random list keys until ``stopfile`` exists."""
    rng = random.Random(os.getpid())
    store = get_store()
    deleted = 0
    while not os.path.exists(stopfile):
        top = Mark._base_manager.order_by("-pk").values_list("pk", flat=True).first() or 0
        keys = list_keys(entries, list(range(1, top + 1)))
        for key in rng.sample(keys, min(3, len(keys))):
            deleted += bool(store.delete_raw(key))
        time.sleep(rng.uniform(0.002, 0.02))
    print(json.dumps({"deleted": deleted}))


def die() -> None:
    sys.stdout.flush()
    os._exit(0)


def kill(point: str, write: str, entry: int, pks: list[int]) -> None:
    """One write (or read) that dies at ``point`` (see the module doc)."""
    from listy.source import DjangoBackingStore

    armed = False
    if point == "after_frames":
        settle_read = DjangoBackingStore.stored_state

        def stored_state(self: DjangoBackingStore, pk: Any, **kwargs: Any) -> Any:
            if armed:
                die()
            return settle_read(self, pk, **kwargs)

        DjangoBackingStore.stored_state = stored_state  # type: ignore[method-assign]
    if point == "under_lease":
        DjangoBackingStore.rows = lambda self, fields, values: die()  # type: ignore[assignment,method-assign]
        Mark.cache.get(entry_id=entry, color=1)
        print(json.dumps({"survived": True}))
        return

    def arm() -> None:
        nonlocal armed
        if point == "after_commit":
            die()
        if point == "exit_after_add_moved":
            # a later change of the row, committed and (as if) landed and
            # evicted before this add's frames: they list the row as added
            # (color 1) while the database holds color 2; only the settle
            # that the background worker queued can tell
            with listy.bypass(Mark):
                Mark._base_manager.filter(entry_id=entry, name="e").update(color=2)
        armed = True

    with transaction.atomic():
        transaction.on_commit(arm)  # before Listy's own hook: runs first
        if write == "add":
            obj = Mark.cache.add(entry_id=entry, name="e", color=1)
            assert obj is not None
            print(json.dumps({"pk": obj.pk}), flush=True)
        elif write == "revive":
            assert Mark.cache.add(**Mark._base_manager.filter(pk=pks[0]).values("entry_id", "name", "color")[0])
        elif write == "move":
            obj = Mark._base_manager.get(pk=pks[0])
            obj.color = 2
            obj.save(update_fields=["color"])
        elif write == "soft_delete":
            assert Mark.cache.delete(pk=pks[0])
        elif write == "hard_delete":
            Mark._base_manager.get(pk=pks[0]).delete()
        elif write == "delete_two":
            assert Mark.cache.delete(pk__in=pks)
        else:
            raise SystemExit(f"unknown write {write!r}")
        if point == "before_commit":
            die()
    if point == "exit_after_add_moved":
        # a graceful exit (a worker's restart), long before the next look
        Mark.cache.count()
        return
    print(json.dumps({"survived": True}))


def compact(entry: int) -> None:
    """Reads one list forever once told to (killed by the test)."""
    Mark.cache.count()  # connections made, engine built: the read is all that is left
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    while True:
        Mark.cache.get(entry_id=entry, color=1)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "stress":
        result = Stress(int(sys.argv[2]), [int(x) for x in sys.argv[4].split(",")]).run(int(sys.argv[3]))
        print(json.dumps(result))
    elif mode == "kill":
        kill(sys.argv[2], sys.argv[3], int(sys.argv[4]), [int(x) for x in sys.argv[5].split(",") if x])
    elif mode == "compact":
        compact(int(sys.argv[2]))
    elif mode == "evict":
        evict(sys.argv[2], [int(x) for x in sys.argv[3].split(",")])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
