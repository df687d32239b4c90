"""Durable repair of failed cache writes (SPEC §3.7).

A write whose cache update may not have reached memcached (timeout, server
down or frozen) gets a report from the engine: ``failed_keys``, the keys that
may now hold a list or a counter missing that write. Such a key must be
deleted from memcached (``Engine.repair``) before any process serves it
again. This module makes that durable and shared:

* the writer tries the repair at once; keys it cannot delete yet go to the
  ``listy.PendingRepair`` table (same database alias as the model, after the
  user's transaction: the cache work already runs in ``on_commit``) and to a
  set in memory (kept even if the table cannot be written);
* before serving from the cache, a process runs a *repair pass* (read the
  table, ``Engine.repair`` the keys, delete the rows that were repaired) when

  (a) it has seen a cache fault since its last good pass (a
      ``CacheUnavailable``, a read served from the database because of a
      fault, a write with failed keys), or
  (b) ``LISTY["REPAIR_CHECK_INTERVAL"]`` seconds (default 1.0; ``None``
      disables it) have passed since its last pass: this closes the case of
      a process that saw nothing of the partition.

  Otherwise the check is one integer comparison and one ``time.monotonic()``.
  While a model has keys that could not be repaired, its reads go to the
  database.

A write that fails before the engine knows the model's registry (a fresh
process while the server is down) cannot name its keys: the model's meta key
is queued instead, and deleting it moves the model to a new generation (a
flush). See ``docs/guarantees-repair.md`` for what this does not cover.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, connections, transaction
from django.db.models import Q
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from listy import _native, events, registry
from listy import store as _store
from listy.conf import listy_settings
from listy.exceptions import ConfigError

if TYPE_CHECKING:
    from listy.registry import Client

logger = logging.getLogger("listy")

_lock = threading.Lock()
#: Only one repair pass at a time; a reader that finds one running reads
#: from the database meanwhile.
_pass_lock = threading.Lock()
#: Cache faults this process has seen (only ever grows).
_faults = 0
#: Per database alias: [faults counted at the last good pass, monotonic time
#: of the next periodic pass (``inf``: none), settings epoch it was set in].
_states: dict[str, list[Any]] = {}
#: Per alias, per engine label: keys this process knows need repair (kept
#: in memory too, in case the table cannot be written or read).
_memory: dict[str, dict[str, set[str]]] = {}
#: Per alias: the labels whose keys the last pass could not repair.
_blocked: dict[str, frozenset[str]] = {}
_table_broken_logged = False


#: Rows read per pass (the rest waits for the next pass, which follows at
#: once: a pass that leaves rows does not count as good).
BATCH = 1000


# ---------------------------------------------------------------- keys
def meta_key(prefix: str, label: str) -> str:
    """The engine's meta key of a model (``keys::meta_key``): deleting it
    moves every list and counter of the model to a new generation."""
    return _native.meta_key(prefix, label)


# ---------------------------------------------------------------- faults
def note_fault() -> None:
    """This process saw a cache fault: the next read runs a repair pass."""
    global _faults
    with _lock:
        _faults += 1


def note_read(records: Any) -> None:
    """Notes a fault when the engine served a list from the database
    because a server failed (its ``fault`` is ``unreachable`` or
    ``protocol``): writes may have missed it meanwhile. A lease held by
    another process or a list too large is no sign of that."""
    if getattr(records, "fault", None) in ("unreachable", "protocol"):
        note_fault()


def reset() -> None:
    """Forgets this process's repair state (for tests)."""
    global _faults, _table_broken_logged
    with _lock:
        _faults = 0
        _table_broken_logged = False
        _states.clear()
        _memory.clear()
        _blocked.clear()


# ---------------------------------------------------------------- writes
def write_failed(client: Client, report: Mapping[str, Any] | None) -> None:
    """A write of ``client`` did not fully reach the cache: repairs its
    keys now if the server answers, else queues them (memory and table).

    ``report`` is the engine's write report, or None when the write raised
    ``CacheUnavailable`` (nothing is known of the keys it reached).
    """
    note_fault()
    keys = list((report or {}).get("failed_keys") or [])
    label = client.engine_label
    events.send(
        events.write_unreached,
        "writes_unreached",
        client.model,
        keys=keys,
        faults=list((report or {}).get("faults") or ["cache unavailable"]),
    )
    if not keys:
        if report is not None and not report.get("may_leave_stale_keys"):
            return  # e.g. a list too large to store: nothing stale was left
        # The server was not reached and the engine could not name the keys
        # (it never read the model's registry): the model's meta key stands
        # for all of them.
        keys = [meta_key(listy_settings().key_prefix, label)]
    _drop(client, keys)


def drop_lists(client: Client) -> None:
    """Every list and counter of ``client``'s model is dropped (new
    generation) now, or as soon as any process can reach the cache: a write
    made while ``LISTY["ENABLED"]`` is False, which no list has."""
    _drop(client, [meta_key(listy_settings().key_prefix, client.engine_label)])


def _drop(client: Client, keys: list[str]) -> None:
    """Deletes ``keys`` now, else queues them (memory and table)."""
    label = client.engine_label
    try:
        left = client.engine.repair(sorted(set(keys)))
    except Exception:  # noqa: BLE001 - the write must not raise for the cache
        left = keys
    if len(left) < len(set(keys)):
        events.send(events.repaired, "keys_repaired", None, len(set(keys)) - len(left), label=label, keys=sorted(set(keys) - set(left)))
    if not left:
        return
    alias = client.db_alias
    with _lock:
        _memory.setdefault(alias, {}).setdefault(label, set()).update(left)
    _save(alias, label, left)


def _guarded(alias: str, fn: Any) -> Any:
    """Runs ``fn`` inside a savepoint when a transaction is open, so that a
    failing query (table not migrated) leaves the caller's transaction usable."""
    if connections[alias].in_atomic_block:
        with transaction.atomic(using=alias):
            return fn()
    return fn()


def _table_failed(exc: Exception) -> None:
    global _table_broken_logged
    if not _table_broken_logged:
        _table_broken_logged = True
        logger.warning(
            "listy: the table of pending cache repairs cannot be used (%s); "
            "run `manage.py migrate listy`. Until then failed cache writes are "
            "repaired by the process that made them only.",
            exc,
        )


def _save(alias: str, label: str, keys: Iterable[str]) -> bool:
    """Upserts the keys into ``PendingRepair`` (``created`` set anew, so
    that a pass that read the old row does not delete it)."""
    from listy.models import PendingRepair

    now = timezone.now()
    objs = [PendingRepair(key=k, model=label, created=now) for k in sorted(set(keys))]
    features = connections[alias].features
    options: dict[str, Any] = {"update_conflicts": True, "update_fields": ["model", "created"]}
    if features.supports_update_conflicts_with_target:
        options["unique_fields"] = ["key"]

    def run() -> None:
        PendingRepair.objects.using(alias).bulk_create(objs, **options)

    try:
        _guarded(alias, run)
    except (DatabaseError, TransactionManagementError) as exc:
        _table_failed(exc)
        return False
    return True


# ---------------------------------------------------------------- reads
#: Set by ``listy.worker`` while this process's background worker runs: the
#: read path then never runs a pass itself (no SQL on the request path), it
#: wakes the worker.
background: bool = False
wake: Any = None


def background_enabled() -> bool:
    """Whether processes run a background worker for repairs: a look
    interval is set and some lists live in a shared store."""
    return _next_due(0.0) != math.inf


def ready(client: Client, alias: str) -> bool:
    """True when ``client`` may serve from the cache: no fault since the last
    good pass, no key of its model left unrepaired. The hot path: two
    comparisons, no SQL. With a background worker, a fault (or no pass yet)
    wakes it and reads go to the database until its pass is done; without
    one, the pass runs here, after a fault only."""
    state = _states.get(alias)
    if state is not None and state[0] == _faults and state[2] == _store.epoch():
        blocked = _blocked.get(alias)
        if not blocked or client.engine_label not in blocked:
            return True
    if background:
        if wake is not None:
            wake()
        # New settings (a test's override), no fault since the last good
        # pass: serve on while the worker looks again. A process that has
        # not looked yet (state None) reads from the database meanwhile.
        return state is not None and state[0] == _faults and client.engine_label not in _blocked.get(alias, frozenset())
    if state is None or state[2] != _store.epoch():
        if state is None or state[0] == _faults:
            # first read of this process (or new settings), no fault seen
            _states[alias] = [_faults if state is None else state[0], math.inf, _store.epoch()]
            return True
    return client.engine_label not in run_pass(alias)


def fresh(alias: str) -> bool:
    """True when :func:`ready` would answer True without running a pass
    (no database read): the async calls read the cache off the loop only
    then, and leave a pass to the worker or the sync path."""
    state = _states.get(alias)
    if state is not None and state[0] == _faults and state[2] == _store.epoch():
        return True
    if background:
        if wake is not None:
            wake()
        return state is not None and state[0] == _faults
    if state is None or state[2] != _store.epoch():
        return state is None or state[0] == _faults
    return False


def _next_due(delay_from: float) -> float:
    """When the next periodic pass is due (``inf``: never). Off with
    ``REPAIR_CHECK_INTERVAL = None``, and with the embedded store (nothing
    is shared) unless a model's ``address`` points at a memcached server."""
    conf = listy_settings()
    interval = conf.repair_check_interval
    if interval is None:
        return math.inf
    if conf.is_local and not any(
        c.address is not None for m in registry.all_models() for c in registry.clients(m)
    ):
        return math.inf
    return delay_from + interval


def _engines(label: str) -> list[_native.Engine]:
    """The engines of this process for lists of ``label``, one per store."""
    out: list[_native.Engine] = []
    seen: set[tuple[int, str]] = set()
    for model in registry.all_models():
        for client in registry.clients(model):
            if client.disable_cache or client.engine_label != label:
                continue
            try:
                ident = client.store_identity()
                if ident in seen:
                    continue
                seen.add(ident)
                out.append(client.engine)
            except ConfigError:
                continue
    return out


def run_pass(alias: str = "default") -> frozenset[str]:
    """Repairs every pending key this process can (the table's and its own)
    and deletes the rows of those repaired. Returns the engine labels that
    still have keys to repair (their reads go to the database). Another
    pass running in this process: returns every label (``{"*"}`` marks it)."""
    if not _pass_lock.acquire(blocking=False):
        return _Everything()
    try:
        return _run_pass(alias)
    finally:
        _pass_lock.release()


class _Everything(frozenset):  # type: ignore[type-arg]
    """Contains every label: a pass is running in another thread."""

    def __contains__(self, item: object) -> bool:
        return True


def _run_pass(alias: str) -> frozenset[str]:
    from listy.models import PendingRepair

    started_at = _faults
    todo: dict[str, dict[str, tuple[int, Any] | None]] = {}
    full = False

    def read() -> list[tuple[int, str, str, Any]]:
        return list(
            PendingRepair.objects.using(alias).order_by("id").values_list("id", "key", "model", "created")[:BATCH]
        )

    try:
        rows = _guarded(alias, read)
    except (DatabaseError, TransactionManagementError) as exc:
        _table_failed(exc)
        rows = []
    full = len(rows) >= BATCH
    for row_id, key, label, created in rows:
        todo.setdefault(label, {})[key] = (row_id, created)
    with _lock:
        for label, remembered in _memory.get(alias, {}).items():
            mine = todo.setdefault(label, {})
            for key in remembered:
                mine.setdefault(key, None)
    blocked: set[str] = set()
    done_rows: list[tuple[int, Any]] = []
    repaired: dict[str, set[str]] = {}
    for label, keys in todo.items():
        engines = _engines(label)
        if not engines:
            continue  # lists of a model this process does not serve
        left: set[str] = set()
        for engine in engines:
            try:
                left.update(engine.repair(sorted(keys)))
            except Exception:  # noqa: BLE001 - unreachable is what matters
                left.update(keys)
        if left:
            blocked.add(label)
        ok = set(keys) - left
        repaired[label] = ok
        done_rows.extend(row for row in (keys[k] for k in ok) if row is not None)
    with _lock:
        for label, ok in repaired.items():
            known = _memory.get(alias, {}).get(label)
            if known:
                known.difference_update(ok)
    for label, ok in repaired.items():
        if ok:
            events.send(events.repaired, "keys_repaired", None, len(ok), label=label, keys=sorted(ok))
    if done_rows:
        _delete(alias, done_rows)
    result = frozenset(blocked)
    _blocked[alias] = result
    if not blocked and not full:
        _states[alias] = [started_at, _next_due(time.monotonic()), _store.epoch()]
        if done_rows:
            logger.info("listy: repaired %d cache keys that failed writes left", len(done_rows))
    return result


def _delete(alias: str, rows: list[tuple[int, Any]]) -> None:
    """Deletes the rows repaired, each only if no write failed on its key
    again since it was read (``created`` unchanged)."""
    from listy.models import PendingRepair

    def run() -> None:
        for i in range(0, len(rows), 100):
            q = Q()
            for row_id, created in rows[i : i + 100]:
                q |= Q(pk=row_id, created=created)
            PendingRepair.objects.using(alias).filter(q).delete()

    try:
        _guarded(alias, run)
    except (DatabaseError, TransactionManagementError) as exc:
        _table_failed(exc)


def pending(alias: str = "default") -> list[str]:
    """The keys waiting in the table (for tests and management commands)."""
    from listy.models import PendingRepair

    return list(PendingRepair.objects.using(alias).order_by("key").values_list("key", flat=True))


__all__ = ["drop_lists", "fresh", "meta_key", "note_fault", "note_read", "pending", "ready", "reset", "run_pass", "write_failed"]
