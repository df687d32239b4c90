"""Write intents: a writer killed between COMMIT and its cache work leaves no
list stale for good (SPEC §3.1).

Listy's cache work runs in ``transaction.on_commit``, after the database has
the write. A process that dies at that moment (a worker timeout, the OOM
killer, a deploy's SIGKILL) would leave every list the write touched
without it, for good. So each write call that schedules cache work inside a
transaction also inserts a :class:`~listy.models.WriteIntent` row in that
transaction (one INSERT, ``declare``):

* the write rolls back (or its process dies before COMMIT): the intent goes
  with it, and there is nothing to repair;
* the write commits and its cache work runs: the writer marks the intent
  done (``finished``, in memory) and its background worker deletes done
  intents in batches (one DELETE per look);
* the write commits and its process dies before the cache work ran (or
  before its worker deleted the done intent): the intent stays. Every
  process's worker reads the intents each look (``resolve``); one it has
  seen for ``LISTY["INTENT_WINDOW"]`` seconds is a dead writer's, and the
  worker starts that model's lists afresh (a new generation, as
  ``flush_all()``), then deletes it.

The window counts from when a worker first *sees* the intent, which is
after its COMMIT: a long transaction's intent is not taken for a dead one.
Intents exist only where a worker looks at them (``REPAIR_CHECK_INTERVAL``
not None, a shared store).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, connections

from listy import registry, repair
from listy.conf import listy_settings

if TYPE_CHECKING:
    from listy.source import DjangoBackingStore

logger = logging.getLogger("listy")

_lock = threading.Lock()
#: Per database alias: intents whose cache work ran, to delete.
_done: dict[str, set[int]] = {}
#: Per alias: intent id → monotonic time this process first saw it.
_seen: dict[str, dict[int, float]] = {}
#: Per alias: whether the intents table can be written (checked once).
_usable: dict[str, bool] = {}
#: Intents read per look.
BATCH = 1000


def enabled() -> bool:
    """Whether writes record intents (a window is set and a worker looks)."""
    return listy_settings().intent_window is not None and repair.background_enabled()


def table_usable(alias: str) -> bool:
    """Whether the intents table exists on ``alias`` (migrated), read once per
    process: a failing INSERT would break the caller's transaction."""
    found = _usable.get(alias)
    if found is None:
        from listy.models import WriteIntent

        try:
            with connections[alias].cursor() as cursor:
                tables = connections[alias].introspection.table_names(cursor)
            found = WriteIntent._meta.db_table in tables
        except DatabaseError:
            found = False
        if not found:
            logger.warning("listy: no write-intent table on %r: run `manage.py migrate listy`", alias)
        _usable[alias] = found
    return found


def declare(alias: str, label: str) -> int | None:
    """Records, in the open transaction on ``alias``, that it wrote model
    ``label`` and owes the cache work: the intent's id, or None when no
    intent is needed (no transaction open, intents off)."""
    if not connections[alias].in_atomic_block or not enabled() or not table_usable(alias):
        return None
    from listy.models import WriteIntent

    return int(WriteIntent.objects.using(alias).create(model=label).pk)


def model_count(
    source: DjangoBackingStore, start_day: int | None = None, end_day: int | None = None
) -> tuple[int, list[int]]:
    """The model's live rows (dated in ``[start_day, end_day)`` if given)
    and, in the same snapshot, the ids of its intents still in the table:
    one statement. A model-wide counter built from it skips the counter
    moves those writes send (their rows are in the count already), so a
    counter built while a committed write's cache work is in flight counts
    that row once (``listy_core::engine::counters``). Without intents: the
    count alone."""
    alias = source.db_alias
    if not enabled() or not table_usable(alias):
        return source.count((), (), start_day, end_day), []
    from listy.models import WriteIntent

    connection = connections[alias]
    quote = connection.ops.quote_name
    rows = source.count_queryset((), (), start_day, end_day).order_by().values("pk")
    inner, params = rows.query.get_compiler(using=alias).as_sql()
    sql = (
        f"SELECT 0, COUNT(*) FROM ({inner}) listy_rows UNION ALL "
        f"SELECT 1, {quote('id')} FROM {quote(WriteIntent._meta.db_table)} WHERE {quote('model')} = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, (*params, source.model._meta.label))
        found = cursor.fetchall()
    count = next(int(n) for kind, n in found if int(kind) == 0)
    return count, sorted(int(i) for kind, i in found if int(kind) == 1)


def finished(alias: str, intent: int) -> None:
    """The cache work of ``intent`` ran: its row is deleted at the worker's
    next look."""
    with _lock:
        _done.setdefault(alias, set()).add(intent)


def delete_done(alias: str) -> int:
    """Deletes the intents whose cache work ran in this process (one
    statement). Returns how many."""
    from listy.models import WriteIntent

    with _lock:
        ids = _done.pop(alias, set())
    if not ids:
        return 0
    try:
        WriteIntent.objects.using(alias).filter(pk__in=sorted(ids)).delete()
    except DatabaseError:
        with _lock:
            _done.setdefault(alias, set()).update(ids)
        raise
    return len(ids)


def resolve(alias: str, window: float, now: float | None = None) -> list[str]:
    """One look at the intents on ``alias``: starts afresh the lists of every
    model whose intent this process has seen for ``window`` seconds (a dead
    writer's), and deletes those intents. Returns the labels flushed."""
    from listy.models import WriteIntent

    now = time.monotonic() if now is None else now
    rows = list(WriteIntent.objects.using(alias).order_by("id").values_list("id", "model")[:BATCH])
    with _lock:
        mine = _done.get(alias, set())
        seen = _seen.setdefault(alias, {})
        live = {i for i, _ in rows}
        for gone in set(seen) - live:
            del seen[gone]
        stale = []
        for intent, label in rows:
            if intent in mine:
                continue
            first = seen.setdefault(intent, now)
            if now - first >= window:
                stale.append((intent, label))
    flushed: list[str] = []
    for label in sorted({label for _, label in stale}):
        if _flush(label):
            flushed.append(label)
    resolved = [intent for intent, label in stale if label in flushed]
    if resolved:
        WriteIntent.objects.using(alias).filter(pk__in=resolved).delete()
        with _lock:
            for intent in resolved:
                seen.pop(intent, None)
        logger.warning(
            "listy: a writer died between COMMIT and its cache work (%d intents); started afresh: %s",
            len(resolved),
            ", ".join(flushed),
        )
    return flushed


def _flush(label: str) -> bool:
    """Starts every list of model ``label`` afresh (each store's engine, each
    meaning). False when this process has no client of it."""
    done = False
    for model in registry.all_models():
        if model._meta.label != label:
            continue
        for client in registry.clients(model):
            if client.disable_cache:
                continue
            try:
                client.engine.flush()
            except Exception as exc:  # noqa: BLE001 - the next look tries again
                logger.warning("listy: could not start %s afresh yet: %s", label, exc)
                return False
            done = True
    return done


def reset() -> None:
    """Forgets this process's intents state (tests)."""
    with _lock:
        _done.clear()
        _seen.clear()
        _usable.clear()


def pending(alias: str = "default") -> list[tuple[int, str]]:
    """The intents in the table (tests, management commands)."""
    from listy.models import WriteIntent

    return [(int(i), str(m)) for i, m in WriteIntent.objects.using(alias).order_by("id").values_list("id", "model")]


__all__: list[Any] = ["declare", "delete_done", "enabled", "finished", "model_count", "pending", "reset", "resolve"]
