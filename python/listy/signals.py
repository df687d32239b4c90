"""Writes made outside Listy's own calls: ``instance.save()``, the admin,
deletes of every kind, many-to-many adds, inlined copies; and the patches
that route Django's write paths through Listy.

For every model with a ListCache, ``pre_save`` reads the row as it is stored
(one query by primary key, ``FOR UPDATE`` where the database has row locks:
saves of cached models run in a transaction, see ``_save_base``), and
``post_save`` hands the row as stored before and after the write to the
engine (``Engine.change``, through ``ListCache.plan_change``) once the
transaction commits. The engine decides what that does to lists and
counters; this module only reads rows. Writes
that Listy itself makes are skipped: their cache work is already scheduled.

Deletes are not followed by signals: Django's ``Collector.delete`` (every
``instance.delete()``, queryset delete and cascade) is wrapped so that one
locked read per model gives the states of the whole batch
(``listy.bulk.collector_delete``). With no ``pre_delete``/``post_delete``
receiver a cached model keeps Django's fast-delete path. ``QuerySet.update()``,
``bulk_create()`` and ``bulk_update()`` are followed by ``ListyQuerySet``
(``listy.manager``); a many-to-many ``add()`` into an auto-created through
table by ``m2m_changed``; raw SQL by the guard of ``listy.rawsql``, which
``save_base`` (patched here to mark the table it writes) keeps quiet.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import connections, models, router, transaction
from django.db.backends.signals import connection_created
from django.db.models.deletion import Collector
from django.db.models.signals import m2m_changed, post_save, pre_save

from listy import bulk, origin, rawsql, registry
from listy.cache import ListCache
from listy.manager import ListyQuerySet
from listy.source import State
from listy.writes import SKIP_SIGNALS, Writes

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


def _lock(using: str) -> bool:
    """Whether reads on ``using`` can lock rows until the transaction ends."""
    conn = connections[using]
    return bool(conn.features.has_select_for_update and conn.in_atomic_block)


def _stored(client: ListCache[Any], pk: Any, using: str) -> dict[Writes, State | None]:
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
    lock (saves of cached models run in a transaction): what lists held is
    the database's word, not a stale instance's."""
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


def on_m2m_changed(
    sender: type[models.Model],
    instance: models.Model,
    action: str,
    reverse: bool,
    model: type[models.Model],
    pk_set: set[Any] | None,
    using: str,
    **kwargs: Any,
) -> None:
    """A many-to-many ``add()`` into a cached through table whose default
    manager is not Listy's: its INSERT is Listy's to follow (marked between
    ``pre_add`` and ``post_add``), the rows inserted reach the lists after
    commit. ``remove()``/``clear()`` delete through a queryset: the
    ``Collector`` path follows them."""
    if _follows_bulk(sender):
        return
    if action == "pre_add":
        _m2m_tokens.append(origin._handled.set(origin._handled.get() | {sender._meta.db_table}))
    elif action == "post_add":
        if _m2m_tokens:
            origin._handled.reset(_m2m_tokens.pop())
        bulk.m2m_added(sender, instance, model, set(pk_set or ()), reverse, using)


#: Tokens of the ``pre_add`` marks, undone by ``post_add`` (nested adds: a stack).
_m2m_tokens: list[Any] = []


def _follows_bulk(through: type[models.Model]) -> bool:
    """True when the through model's default manager runs ``bulk_create``
    through Listy (then the m2m signal has nothing to add)."""
    try:
        return isinstance(through._default_manager.get_queryset(), ListyQuerySet)
    except Exception:
        return False


def on_related_saved(
    sender: type[models.Model], instance: models.Model, created: bool, using: str | None = None, **kwargs: Any
) -> None:
    """A row whose fields other cached models inline was saved: their
    records carrying the copy are rewritten after commit."""
    if created or instance.pk is None:
        return
    bulk.follow_inlined(sender, [instance.pk], using or router.db_for_write(sender))


def _save_base(self: models.Model, *args: Any, **kwargs: Any) -> Any:
    """``Model.save_base`` marking the model's table as written by a path
    Listy follows (``pre_save``/``post_save``), for the raw-SQL guard. A
    cached model's save runs in a transaction (one already open is joined,
    no savepoint), as Django does for models with parents: the row read
    before the write is then locked until the write commits."""
    model = type(self)._meta.concrete_model
    assert model is not None  # set for every model that can have instances
    with origin.handled(model):
        if type(self) not in _connected and model not in _connected:
            return _original_save_base(self, *args, **kwargs)
        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        with transaction.atomic(using=using, savepoint=False):
            return _original_save_base(self, *args, **kwargs)


def _collector_delete(self: Collector) -> Any:
    """``Collector.delete`` with the deleted rows of cached models batched
    (``listy.bulk.collector_delete``)."""
    return bulk.collector_delete(self, lambda: _original_delete(self))


_original_save_base = models.Model.save_base
_original_delete = Collector.delete


def patch_django() -> None:
    """Routes Django's delete collector and ``save_base`` through Listy
    (once), and installs the raw-SQL guard on every connection."""
    if Collector.delete is not _collector_delete:
        Collector.delete = _collector_delete  # type: ignore[method-assign]
    if models.Model.save_base is not _save_base:
        models.Model.save_base = _save_base  # type: ignore[method-assign]
    connection_created.connect(rawsql.install, weak=False, dispatch_uid="listy:rawsql")
    for conn in connections.all(initialized_only=True):
        rawsql.install(conn)


_connected: set[type] = set()


def connect(model: type[models.Model]) -> None:
    """Connects the receivers for ``model`` (once)."""
    if model in _connected:
        return
    _connected.add(model)
    uid = f"listy:{model._meta.label}"
    pre_save.connect(on_pre_save, sender=model, weak=False, dispatch_uid=uid)
    post_save.connect(on_post_save, sender=model, weak=False, dispatch_uid=uid)
    if model._meta.auto_created or any(
        f.remote_field.through is model for m in _all_models() for f in m._meta.many_to_many
    ):
        m2m_changed.connect(on_m2m_changed, sender=model, weak=False, dispatch_uid=uid)
    client = bulk.client_of(model)
    for fk_name in (client.inlined_foreign_key_fields if client is not None else {}) or {}:
        related = model._meta.get_field(fk_name).related_model
        assert related is not None  # a ForeignKey (checked when the client was declared)
        post_save.connect(on_related_saved, sender=related, weak=False, dispatch_uid=f"listy:inlined:{related._meta.label}")
    rawsql._reset()


def _all_models() -> list[type[models.Model]]:
    from django.apps import apps

    return list(apps.get_models(include_auto_created=True))


def disconnect(model: type[models.Model]) -> None:
    """Disconnects the receivers of ``model`` (``listy.adopt.uncache_model``)."""
    _connected.discard(model)
    uid = f"listy:{model._meta.label}"
    for signal in (pre_save, post_save, m2m_changed):
        signal.disconnect(sender=model, dispatch_uid=uid)


def connect_all() -> None:
    """Connects every model that has (or will get) a ListCache, and patches
    Django's write paths (``patch_django``)."""
    patch_django()
    registry.on_new_model(connect)
