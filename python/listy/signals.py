"""Writes made outside Listy: ``instance.save()``, ``instance.delete()``, the
admin, cascades.

For every model with a ListCache, ``pre_save`` reads the row as it is stored
(one query by primary key), ``post_save`` and ``post_delete`` schedule the
cache work with ``transaction.on_commit``: a created row is added, a changed
row updated (lists it left get a tombstone, lists it joined the record), a
deleted row tombstoned. Writes that Listy itself makes are skipped: their
cache work is already scheduled. ``pre_delete`` locks the row (``SELECT ...
FOR UPDATE``, one query; not on SQLite) so that two processes deleting the
same row do not both send its tombstones and counter decrements.

``QuerySet.update()``, ``bulk_create()`` and raw SQL send no signals; repair
with ``Model.cache.rebuild(**filters)`` or ``Model.cache.flush_all()``.

Receivers are connected per model (``sender=Model``) so that models without a
cache keep Django's fast-delete path.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import connections, models, router
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

from listy import registry
from listy.cache import ListCache
from listy.writes import SKIP_SIGNALS, in_listy_delete

logger = logging.getLogger("listy")

_OLD = "_listy_old_rows"


def _client(model: type[models.Model]) -> ListCache[Any] | None:
    """The client whose ``writers()`` reach every enabled client of the
    model: ``Model.cache``, or another one when that one is disabled."""
    client = registry.primary(model)
    if not isinstance(client, ListCache) or client.disable_cache:
        return next((c for c in registry.clients(model) if isinstance(c, ListCache) and not c.disable_cache), None)
    return client


def _skip(instance: models.Model) -> bool:
    return bool(instance.__dict__.get(SKIP_SIGNALS))


def on_pre_save(sender: type[models.Model], instance: models.Model, raw: bool = False, **kwargs: Any) -> None:
    """Reads the stored row of an instance about to be updated."""
    if _skip(instance) or instance.pk is None:
        return
    client = _client(sender)
    if client is None:
        return
    instance.__dict__[_OLD] = {writer: writer.source.stored_state(instance.pk) for writer in client.writers()}


def on_post_save(
    sender: type[models.Model], instance: models.Model, created: bool, raw: bool = False, using: str | None = None, **kwargs: Any
) -> None:
    """Schedules the cache work of a save made outside Listy."""
    old = instance.__dict__.pop(_OLD, None)
    if _skip(instance):
        return
    client = _client(sender)
    if client is None:
        return
    using = using or router.db_for_write(sender)
    # no old state: created, or an update of a row that was not there
    client._after_commit(using, client.plan_change(old or {}, instance))


_GONE = "_listy_gone"
_LISTED = "_listy_listed"


def on_pre_delete(sender: type[models.Model], instance: models.Model, using: str | None = None, **kwargs: Any) -> None:
    """Locks the row about to be deleted (``FOR UPDATE``, where the database
    has it): a concurrent delete of the same row makes this one wait, then
    find the row gone, and Django would still send ``post_delete``; its
    tombstones and counter decrements are then skipped (not sent twice).
    Reads the row's flags under the lock: whether lists hold it is the
    database's word, not the (maybe stale) instance's."""
    if _skip(instance) or instance.pk is None or in_listy_delete(sender, instance.pk):
        return
    client = _client(sender)
    if client is None:
        return
    using = using or router.db_for_write(sender)
    conn = connections[using]
    if not (conn.features.has_select_for_update and conn.in_atomic_block):
        return
    flags = [f for f in (client.enabled_field, client.soft_delete_field) if f]
    found = sender._base_manager.using(using).select_for_update().filter(pk=instance.pk).values_list("pk", *flags)
    row = found.first()
    if row is None:
        instance.__dict__[_GONE] = True
    elif flags:
        # The flags as stored, not as this (maybe stale) instance has them.
        instance.__dict__[_LISTED] = client.source._listed(dict(zip(flags, row[1:])))


def on_post_delete(sender: type[models.Model], instance: models.Model, using: str | None = None, **kwargs: Any) -> None:
    """Schedules the tombstones of a delete made outside Listy."""
    if instance.__dict__.pop(_GONE, False) or _skip(instance) or in_listy_delete(sender, instance.pk):
        return
    client = _client(sender)
    if client is None:
        return
    # Listed or not (then final tombstones only: an earlier revival's frames
    # may land after this delete's), the engine decides.
    ops = client.plan_delete(instance, instance.__dict__.pop(_LISTED, None))
    client._after_commit(using or router.db_for_write(sender), ops)


_connected: set[type] = set()


def connect(model: type[models.Model]) -> None:
    """Connects the receivers for ``model`` (once)."""
    if model in _connected:
        return
    _connected.add(model)
    uid = f"listy:{model._meta.label}"
    pre_save.connect(on_pre_save, sender=model, weak=False, dispatch_uid=uid)
    post_save.connect(on_post_save, sender=model, weak=False, dispatch_uid=uid)
    pre_delete.connect(on_pre_delete, sender=model, weak=False, dispatch_uid=uid)
    post_delete.connect(on_post_delete, sender=model, weak=False, dispatch_uid=uid)


def disconnect(model: type[models.Model]) -> None:
    """Disconnects the receivers of ``model`` (``listy.adopt.uncache_model``):
    Django's fast deletes come back for it."""
    _connected.discard(model)
    uid = f"listy:{model._meta.label}"
    for signal in (pre_save, post_save, pre_delete, post_delete):
        signal.disconnect(sender=model, dispatch_uid=uid)


def connect_all() -> None:
    """Connects every model that has (or will get) a ListCache."""
    registry.on_new_model(connect)
