"""Writes made outside Listy: ``instance.save()``, ``instance.delete()``, the
admin, cascades.

For every model with a ListCache, ``pre_save`` and ``pre_delete`` read the
row as it is stored (one query by primary key, ``FOR UPDATE`` where the
database has row locks: saves of cached models run in a transaction, see
``atomic_saves``), and ``post_save`` / ``post_delete`` hand the row as
stored before and after the write to the engine (``Engine.change``, through
``ListCache.plan_change``) once the transaction commits. The engine decides
what that does to lists and counters; this module only reads rows. Writes
that Listy itself makes are skipped: their cache work is already scheduled.

``QuerySet.update()``, ``bulk_create()`` and raw SQL send no signals; repair
with ``Model.cache.rebuild(**filters)`` or ``Model.cache.flush_all()``.

Receivers are connected per model (``sender=Model``) so that models without a
cache keep Django's fast-delete path.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from django.db import connections, models, router, transaction
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

from listy import registry
from listy.cache import ListCache
from listy.source import State
from listy.writes import SKIP_SIGNALS, Writes, in_listy_delete

logger = logging.getLogger("listy")

_OLD = "_listy_old_rows"


def _client(model: type[models.Model]) -> ListCache | None:
    """The client whose ``writers()`` reach every enabled client of the
    model: ``Model.cache``, or another one when that one is disabled."""
    client = registry.primary(model)
    if not isinstance(client, ListCache) or client.disable_cache:
        return next((c for c in registry.clients(model) if isinstance(c, ListCache) and not c.disable_cache), None)
    return client


def _skip(instance: models.Model) -> bool:
    return bool(instance.__dict__.get(SKIP_SIGNALS))


def _lock(using: str) -> bool:
    """Whether reads on ``using`` can lock rows until the transaction ends."""
    conn = connections[using]
    return bool(conn.features.has_select_for_update and conn.in_atomic_block)


def _stored(client: ListCache, pk: Any, using: str) -> dict[Writes, State | None]:
    """Each writer's view of row ``pk`` as stored now; read under a row lock
    where the database has one (the first read takes it), so that no other
    writer changes the row between this read and this transaction's end."""
    lock = _lock(using)
    out: dict[Writes, State | None] = {}
    for writer in client.writers():
        out[writer] = writer.source.stored_state(pk, lock=lock)
        lock = False
    return out


def on_pre_save(
    sender: type[models.Model], instance: models.Model, raw: bool = False, using: str | None = None, **kwargs: Any
) -> None:
    """Reads the stored row of an instance about to be saved, under a row
    lock (saves of cached models run in a transaction: ``atomic_saves``):
    what lists held is the database's word, not a stale instance's."""
    if _skip(instance) or instance.pk is None:
        return
    client = _client(sender)
    if client is None:
        return
    instance.__dict__[_OLD] = _stored(client, instance.pk, using or router.db_for_write(sender))


def on_post_save(
    sender: type[models.Model],
    instance: models.Model,
    created: bool,
    raw: bool = False,
    using: str | None = None,
    update_fields: frozenset[str] | None = None,
    **kwargs: Any,
) -> None:
    """Schedules the cache work of a save made outside Listy: the row as
    stored before and after, handed to the engine."""
    old = instance.__dict__.pop(_OLD, None)
    if _skip(instance):
        return
    client = _client(sender)
    if client is None:
        return
    using = using or router.db_for_write(sender)
    before = {w: s for w, s in (old or {}).items() if s is not None}
    after: dict[Writes, State | None] | None = None
    if update_fields and before:
        # Only these fields were written: a stale instance's others were not.
        after = {w: w.source.state_after(instance, s, update_fields) for w, s in before.items()}
    # A primary key given to an insert may have been used before (a stale
    # instance re-creating a row deleted meanwhile, fixtures): the engine
    # starts the lists afresh so that the earlier row's tombstones hide nothing.
    recreated = old is not None and not before
    client._after_commit(using, client.plan_change(before, instance, after=after, recreated=recreated))


_STATE = "_listy_stored"


def on_pre_delete(sender: type[models.Model], instance: models.Model, using: str | None = None, **kwargs: Any) -> None:
    """Reads the row about to be deleted as stored, under a row lock where
    the database has one (``FOR UPDATE``): its tombstones go to the lists
    the stored row is in, not a stale instance's; and a concurrent delete of
    the same row waits for this one, then finds the row gone (Django still
    sends ``post_delete``): its tombstones and counter moves are not sent
    twice."""
    if _skip(instance) or instance.pk is None or in_listy_delete(sender, instance.pk):
        return
    client = _client(sender)
    if client is None:
        return
    instance.__dict__[_STATE] = _stored(client, instance.pk, using or router.db_for_write(sender))


def on_post_delete(sender: type[models.Model], instance: models.Model, using: str | None = None, **kwargs: Any) -> None:
    """Schedules the tombstones of a delete made outside Listy: the stored
    row before, nothing after; the engine decides (final tombstones also for
    a row no list held: an earlier revival's frames may land after these)."""
    stored = instance.__dict__.pop(_STATE, None)
    if _skip(instance) or in_listy_delete(sender, instance.pk):
        return
    client = _client(sender)
    if client is None or stored is None:
        return
    before = {w: s for w, s in stored.items() if s is not None}
    if before:  # else: gone already (another delete got there first)
        client._after_commit(using or router.db_for_write(sender), client.plan_change(before, None))


def atomic_saves(model: type[models.Model]) -> None:
    """Runs every ``save()`` of ``model`` in a transaction (one already open
    is joined, no savepoint), as Django does for models with parents: the
    row read before the write is then locked until the write commits."""
    original = model.save_base
    if getattr(original, "_listy_atomic", False):
        return

    @functools.wraps(original)
    def save_base(self: models.Model, *args: Any, **kwargs: Any) -> Any:
        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        with transaction.atomic(using=using, savepoint=False):
            return original(self, *args, **kwargs)

    save_base._listy_atomic = True  # type: ignore[attr-defined]
    model.save_base = save_base  # type: ignore[method-assign]


_connected: set[type] = set()


def connect(model: type[models.Model]) -> None:
    """Connects the receivers for ``model`` (once)."""
    if model in _connected:
        return
    _connected.add(model)
    atomic_saves(model)
    uid = f"listy:{model._meta.label}"
    pre_save.connect(on_pre_save, sender=model, weak=False, dispatch_uid=uid)
    post_save.connect(on_post_save, sender=model, weak=False, dispatch_uid=uid)
    pre_delete.connect(on_pre_delete, sender=model, weak=False, dispatch_uid=uid)
    post_delete.connect(on_post_delete, sender=model, weak=False, dispatch_uid=uid)


def connect_all() -> None:
    """Connects every model that has (or will get) a ListCache."""
    registry.on_new_model(connect)
