"""The systems under test and the measuring loops that run next to them.

A ``System`` answers the same questions whatever caches it: ``full(u)`` (the
list of follower ``u`` as model instances, touching ``followee_id`` of each),
``first20(u)``, ``values(u)`` (tuples, no instances), ``invalidate(u)`` (make
the next read a miss), ``add(u, v)`` (one new follow) and ``stored(u)`` (the
raw bytes the cache holds for the list).

``Runner`` holds the systems of one process and runs the measuring loops
*in* that process, so that a timing never includes the pipe to another
process: the main process has one for the ORM, the pickled lists and Listy,
each peer's worker process (``listybench.worker``) one for that peer.
"""

from __future__ import annotations

import gc
import pickle
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

FIELDS = ("id", "created", "follower_id", "followee_id")
ns = time.perf_counter_ns


def _follow():
    from benchproj.follows.models import Follow

    return Follow


def _qs(u: int, using: str | None = None):
    qs = _follow().objects.filter(follower_id=u).order_by("-pk")
    return qs.using(using) if using else qs


def _mc_client(address: str):
    from pymemcache.client.base import Client

    host, port = address.rsplit(":", 1)
    # no serde: values are bytes in, bytes out
    return Client((host, int(port)), no_delay=True, connect_timeout=2, timeout=5)


class SqlCounter:
    """Counts SQL statements on every database connection of the process
    (``connection.execute_wrapper``), keeping the statements' first words.
    ``count`` counts every statement, ``list_count`` those on the follow
    tables (a read that ran one was not served from the cache); the others
    are e.g. Listy's periodic look at its table of pending repairs."""

    def __init__(self) -> None:
        self.count = 0
        self.list_count = 0
        self.statements: list[str] = []
        self.other: list[str] = []

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        text = str(sql)
        self.statements.append(" ".join(text.split()[:1]).upper())
        if "follows_" in text:
            self.list_count += 1
        else:
            self.other.append(" ".join(text.split()[:8])[:120])
        return execute(sql, params, many, context)

    def __enter__(self) -> SqlCounter:
        from django.db import connections

        self._stack = ExitStack()
        for alias in connections:
            self._stack.enter_context(connections[alias].execute_wrapper(self))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()


# ---------------------------------------------------------------- systems
class System:
    key = ""
    label = ""
    has_full = True
    has_first20 = True
    has_values = True
    has_add = True

    def activate(self) -> None:
        """Called (untimed) before each batch of measures of this system."""

    def full(self, u: int) -> list[int]:
        raise NotImplementedError

    def first20(self, u: int) -> list[int]:
        raise NotImplementedError

    def values(self, u: int) -> list[tuple]:
        raise NotImplementedError

    def invalidate(self, u: int) -> None:
        """Makes the next read of the list of ``u`` a miss."""

    def add(self, u: int, v: int) -> None:
        raise NotImplementedError

    def stored(self, u: int) -> dict[str, Any] | None:
        return None

    def pks(self, u: int) -> list[int]:
        """The list as this system serves it (for the correctness check)."""
        return [f.pk for f in self._items(u)]

    def _items(self, u: int):
        raise NotImplementedError


class OrmSystem(System):
    def __init__(self, key: str, label: str, using: str, add_with_signals: bool) -> None:
        self.key, self.label, self.using = key, label, using
        self.add_with_signals = add_with_signals

    def _items(self, u):
        return _qs(u, self.using)

    def full(self, u):
        return [f.followee_id for f in _qs(u, self.using)]

    def first20(self, u):
        return [f.followee_id for f in _qs(u, self.using)[:20]]

    def values(self, u):
        return list(_qs(u, self.using).values_list(*FIELDS))

    def add(self, u, v):
        Follow = _follow()
        if self.add_with_signals:
            # Peers' processes: their invalidation hangs off the ORM's save.
            Follow.objects.using(self.using).create(follower_id=u, followee_id=v)
        else:
            # Main process: bulk_create sends no post_save, so Listy's signal
            # handler does not charge its own work to the ORM's add.
            Follow.objects.using(self.using).bulk_create([Follow(follower_id=u, followee_id=v)])


class CacheopsSystem(OrmSystem):
    """django-cacheops, ``ops: all`` on ``follows.follow`` (every ORM read
    of Follow is cached in Redis, invalidated by conditions on save)."""

    def __init__(self) -> None:
        super().__init__("cacheops", "django-cacheops (Redis)", None, True)

    def invalidate(self, u):
        from cacheops.redis import redis_client

        redis_client.delete(_qs(u)._cache_key())

    def stored(self, u):
        from cacheops.redis import redis_client

        key = _qs(u)._cache_key()
        return {"bytes": redis_client.strlen(key), "how": f"Redis STRLEN of the queryset's key {key}"}


class CachalotSystem(OrmSystem):
    """django-cachalot on Django's PyMemcacheCache (every SQL result of a
    cachable table is cached, the whole table invalidated on any write)."""

    def __init__(self, memcached: str) -> None:
        super().__init__("cachalot", "django-cachalot (memcached)", None, True)
        self.memcached = memcached

    def invalidate(self, u):
        from cachalot.api import invalidate

        invalidate(_follow())

    def stored(self, u):
        from django.core.cache import caches

        cache = caches["default"]
        seen: dict[str, Any] = {}
        original = cache.set_many

        def spy(data, *args, **kwargs):
            seen.update(data)
            return original(data, *args, **kwargs)

        cache.set_many = spy
        try:
            self.invalidate(u)
            self.full(u)
        finally:
            del cache.set_many
        keys = [k for k, v in seen.items() if isinstance(v, tuple)]  # (timestamp, rows)
        if len(keys) != 1:
            return {"bytes": None, "how": f"expected one result key, saw {len(seen)} keys"}
        raw_key = cache.make_and_validate_key(keys[0])
        raw = _mc_client(self.memcached).get(raw_key)
        return {"bytes": len(raw) if raw is not None else None, "how": "raw memcached value of the query's result key"}


class PickledInstances(System):
    """A hand cache: ``pickle.dumps(list(qs))`` in memcached (pymemcache),
    deleted on write, rebuilt on the next read."""

    key = "pickle_inst"
    label = "pickled instances (pymemcache)"
    has_values = False

    def __init__(self, memcached: str) -> None:
        self.mc = _mc_client(memcached)

    def _key(self, u):
        return f"lb-pickle:inst:{u}"

    def _load(self, u):
        raw = self.mc.get(self._key(u))
        if raw is not None:
            return pickle.loads(raw)
        objs = list(_qs(u))
        self.mc.set(self._key(u), pickle.dumps(objs, pickle.HIGHEST_PROTOCOL))
        return objs

    _items = _load

    def full(self, u):
        return [f.followee_id for f in self._load(u)]

    def first20(self, u):
        return [f.followee_id for f in self._load(u)[:20]]

    def invalidate(self, u):
        self.mc.delete(self._key(u))

    def add(self, u, v):
        Follow = _follow()
        Follow.objects.bulk_create([Follow(follower_id=u, followee_id=v)])
        self.mc.delete(self._key(u))

    def stored(self, u):
        self._load(u)
        return {"bytes": len(self.mc.get(self._key(u))), "how": "raw memcached value"}


class PickledValues(System):
    """A hand cache of tuples: ``pickle.dumps(list(qs.values_list(...)))``."""

    key = "pickle_vl"
    label = "pickled values_list (pymemcache)"
    has_full = False
    has_first20 = False
    has_add = False

    def __init__(self, memcached: str) -> None:
        self.mc = _mc_client(memcached)

    def _key(self, u):
        return f"lb-pickle:vl:{u}"

    def values(self, u):
        raw = self.mc.get(self._key(u))
        if raw is not None:
            return pickle.loads(raw)
        rows = list(_qs(u).values_list(*FIELDS))
        self.mc.set(self._key(u), pickle.dumps(rows, pickle.HIGHEST_PROTOCOL))
        return rows

    def invalidate(self, u):
        self.mc.delete(self._key(u))

    def pks(self, u):
        return [r[0] for r in self.values(u)]

    def stored(self, u):
        self.values(u)
        return {"bytes": len(self.mc.get(self._key(u))), "how": "raw memcached value"}


class ListySystem(System):
    """Listy through its public API (``Model.cache``); ``servers`` is the
    ``LISTY["SERVERS"]`` this system runs with (switched with
    ``override_settings``, which makes Listy reset its store)."""

    _active = None  # the override_settings in force, shared by every ListySystem

    def __init__(
        self, key: str, label: str, servers: list[str], memcached: str | None, model: str = "Follow"
    ) -> None:
        self.key, self.label, self.servers = key, label, servers
        self.memcached = memcached
        self.model_name = model

    @property
    def model(self):
        from benchproj.follows import models

        return getattr(models, self.model_name)

    def activate(self):
        from django.conf import settings
        from django.test.utils import override_settings

        wanted = {**settings.LISTY, "SERVERS": self.servers}
        if settings.LISTY == wanted:
            return
        if ListySystem._active is not None:
            ListySystem._active.disable()
            ListySystem._active = None
        if settings.LISTY != wanted:
            ListySystem._active = override_settings(LISTY=wanted)
            ListySystem._active.enable()

    def _items(self, u):
        return self.model.cache.get(follower=u)

    def full(self, u):
        return [f.followee_id for f in self.model.cache.get(follower=u)]

    def first20(self, u):
        return [f.followee_id for f in self.model.cache.get(follower=u)[:20]]

    def values(self, u):
        return self.model.cache.get(follower=u).values()

    def invalidate(self, u):
        from listy.store import get_store

        get_store().delete_raw(self.model.cache.key(follower=u))

    def add(self, u, v):
        self.model.cache.add(follower_id=u, followee_id=v)

    def prepare_add(self, u, v):
        """Reads every list the new row will enter that can be cached before
        it exists (the follower's list and the (follower, followee) pair's,
        empty), so that the add finds them cached."""
        cache = self.model.cache
        cache.get(follower=u)
        if ("followee_id", "follower_id") in cache.indexes:
            cache.get(follower=u, followee=v)

    def stored(self, u):
        cache = self.model.cache
        records = cache.get(follower=u)
        deadline = time.monotonic() + 5
        while not records.from_cache and time.monotonic() < deadline:
            # a fault's repair look runs in the background worker: meanwhile
            # reads are served from the database
            time.sleep(0.05)
            records = cache.get(follower=u)
        out = {
            "bytes": int(records.size),
            "how": "Records.size (all parts of the list)",
            "key": records.key,
        }
        if self.memcached:
            out.update(raw_listy_bytes(_mc_client(self.memcached), records.key))
            out["how"] += "; cross-checked against the raw memcached values (pymemcache)"
        return out


def raw_listy_bytes(mc, head_key: str) -> dict[str, Any]:
    """The raw bytes of a Listy list read straight from memcached: the head
    and, when its trailer names segments, each segment. Relies on the wire
    format of crates/listy-core/src/codec.rs and keys.rs (trailer = 0xAF,
    version, fingerprint u32, part u16, build id u32, "LY"; segment i at
    "<head key>@<id:08x>.<i>"); reports what it could not follow."""
    if not head_key:  # served from the database (a process's first reads)
        return {"raw_bytes": None, "raw_note": "list served from the database"}
    head = mc.get(head_key)
    if head is None:
        return {"raw_bytes": None, "raw_note": "head not in memcached"}
    out: dict[str, Any] = {"raw_head_bytes": len(head)}
    t = head[-14:]
    if len(head) < 14 or t[0] != 0xAF or t[12:14] != b"LY":
        out["raw_bytes"] = len(head)
        out["raw_note"] = "unrecognised trailer: head only"
        return out
    part = int.from_bytes(t[6:8], "little")
    build = int.from_bytes(t[8:12], "little")
    segments = 0 if part & 0x8000 else part
    total = len(head)
    for i in range(segments):
        key = f"{head_key}@{build:08x}.{i}"
        value = mc.get(key) if len(key) <= 250 else None
        if value is None:
            out["raw_note"] = f"segment {i} not found at {key!r}"
            return out
        total += len(value)
    out["raw_segments"] = segments
    out["raw_bytes"] = total
    return out


# ---------------------------------------------------------------- measuring
def _percentile(sorted_values: list[int], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


class Runner:
    """Runs measuring loops against the systems of this process."""

    def __init__(self, systems: dict[str, System], extras: dict[str, Callable[[], Any]] | None = None) -> None:
        self.systems = systems
        self.extras = extras or {}

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self, method)(*args)

    @staticmethod
    def _time(fn: Callable[[], Any], reps: int, expect: int | None = None) -> dict[str, Any]:
        first = fn()  # warm-up, and the check that the read returns the list
        if expect is not None and len(first) != expect:
            raise AssertionError(f"read returned {len(first)} items, expected {expect}")
        gc.collect()
        samples = []
        with SqlCounter() as sql:
            for _ in range(reps):
                t0 = ns()
                fn()
                samples.append(ns() - t0)
        return {"ns": samples, "sql": sql.list_count, "other_sql": sql.count - sql.list_count, "other": sql.other[:3]}

    def round(self, key: str, plan: list[tuple[str, int, int, int]]) -> list[dict[str, Any]]:
        """``plan``: (measure, follower, expected length, reps). Returns one
        result per entry: samples in ns and SQL statements during them."""
        system = self.systems[key]
        system.activate()
        out = []
        for measure, u, expect, reps in plan:
            fn = getattr(system, measure)
            n = 20 if measure == "first20" else expect
            out.append(self._time(lambda: fn(u), reps, n))
        return out

    def extra(self, name: str, reps: int) -> dict[str, Any]:
        """A reference timing (e.g. one memcached round trip)."""
        return self._time(self.extras[name], reps)

    def cold(self, key: str, u: int, expect: int, reps: int) -> dict[str, Any]:
        system = self.systems[key]
        system.activate()
        system.full(u)
        gc.collect()
        samples, sqls = [], []
        for _ in range(reps):
            system.invalidate(u)
            with SqlCounter() as sql:
                t0 = ns()
                got = system.full(u)
                samples.append(ns() - t0)
            sqls.append(sql.list_count)
            if len(got) != expect:
                raise AssertionError(f"cold read returned {len(got)} items, expected {expect}")
        return {"ns": samples, "sql": sqls}

    def mixed(self, key: str, u: int, ops: list[int | None]) -> dict[str, Any]:
        """A chunk of the 99%/1% workload: ``None`` = read, an int = add of
        that followee. Reads are full reads (instances, followee_id)."""
        system = self.systems[key]
        system.activate()
        reads, read_sql, read_other, adds, add_sql = [], [], [], [], []
        others: list[str] = []
        for op in ops:
            with SqlCounter() as sql:
                t0 = ns()
                if op is None:
                    system.full(u)
                else:
                    system.add(u, op)
                dt = ns() - t0
            if op is None:
                reads.append(dt)
                read_sql.append(sql.list_count)
                read_other.append(sql.count - sql.list_count)
                if sql.other and len(others) < 3:
                    others.extend(sql.other[:1])
            else:
                adds.append(dt)
                add_sql.append(sql.count)
        return {
            "read_ns": reads, "read_sql": read_sql, "read_other_sql": read_other, "add_ns": adds,
            "add_sql": add_sql, "other_examples": others,
        }

    def warm(self, key: str, u: int) -> int:
        system = self.systems[key]
        system.activate()
        if system.has_full:
            return len(system.full(u))
        return len(system.values(u))

    def stored(self, key: str, u: int) -> dict[str, Any] | None:
        system = self.systems[key]
        system.activate()
        return system.stored(u)

    def prepare_add(self, key: str, u: int, v: int) -> None:
        system = self.systems[key]
        system.activate()
        prepare = getattr(system, "prepare_add", None)
        if prepare is not None:
            prepare(u, v)
        elif system.has_full:
            system.full(u)

    def add_once(self, key: str, u: int, v: int) -> dict[str, Any]:
        """One add, with the SQL statements it ran (the caller reads the
        cache servers' counters around it)."""
        system = self.systems[key]
        system.activate()
        with SqlCounter() as sql:
            t0 = ns()
            system.add(u, v)
            dt = ns() - t0
        return {"ns": dt, "sql": sql.count, "statements": sql.statements}

    def pks(self, key: str, u: int) -> list[int]:
        system = self.systems[key]
        system.activate()
        return list(system.pks(u))

    def db_pks(self, u: int) -> list[int]:
        return list(_qs(u).values_list("pk", flat=True))


def summarize(samples: list[int]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "n": len(s),
        "median_ms": _percentile(s, 0.5) / 1e6,
        "min_ms": s[0] / 1e6 if s else float("nan"),
        "max_ms": s[-1] / 1e6 if s else float("nan"),
        "mean_ms": (sum(s) / len(s) / 1e6) if s else float("nan"),
        "p99_ms": _percentile(s, 0.99) / 1e6,
    }
