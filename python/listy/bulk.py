"""The batched write paths: ``QuerySet.update()``, ``bulk_update()``,
``bulk_create()``, queryset and cascade deletes (Django's ``Collector``),
many-to-many adds, and inlined copies following their related row.

Each path works the same way, at O(1) extra statements per call whatever the
number of rows: inside the write's transaction (one is opened when the
caller runs in autocommit) it reads the affected rows' states once, locked
(``SELECT ... FOR UPDATE`` where the backend has it), runs Django's write,
reads the new states once, and after commit hands every ``(old, new)`` pair
to each writer's ``Engine.change_many`` (one pipelined batch, one batched
settle read). Python decides nothing about lists: the engine does.

Above ``LISTY["BULK_REPAIR_THRESHOLD"]`` rows (or when the database does not
say which rows a write touched: ``bulk_create(ignore_conflicts=True)``, or
no primary keys returned; or when ``bulk_create()`` inserted rows under
primary keys the caller gave, which earlier rows' final tombstones would
hide) the model's lists are repaired wholesale instead: the generation bump
of ``flush_all()`` (``Engine.flush``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from functools import partial, reduce
from operator import or_
from typing import Any

from django.db import connections, models, transaction

from listy import _native, origin, registry
from listy.conf import listy_settings
from listy.fetch import delete_returning, pk_filter, update_returning
from listy.source import State
from listy.writes import Op, Writes, in_listy_delete

logger = logging.getLogger("listy")

#: Old states by writer: ``{writer: {pk: state}}``.
States = dict[Writes, dict[Any, State]]


def client_of(model: type[models.Model]) -> Writes | None:
    """The client whose ``writers()`` reach every enabled client of the
    model (``Model.cache``, or another when that one is disabled), or None
    when the model has no enabled ListCache."""
    model = model._meta.concrete_model or model
    client = registry.primary(model)
    if isinstance(client, Writes) and not client.disable_cache:
        return client
    return next((c for c in registry.clients(model) if isinstance(c, Writes) and not c.disable_cache), None)


def _read(writers: Sequence[Writes], rows: models.QuerySet[Any] | Iterable[Any], using: str, lock: bool) -> States:
    """Each writer's states of ``rows`` (one statement per writer, usually one)."""
    if not isinstance(rows, models.QuerySet):
        rows = list(rows)
    return {w: w.source.stored_states(rows, lock=lock, using=using) for w in writers}


def _threshold() -> int:
    return listy_settings().bulk_repair_threshold


def flush_ops(writers: Iterable[Writes]) -> list[Op]:
    """Cache work that repairs every list of the model at once."""
    return [(w, w.engine.flush) for w in writers]


def change_ops(olds: States, news: States | None, *, recount: bool = False) -> list[Op]:
    """Cache work for many row changes: per writer, one ``change_many`` of
    every ``(old, new)`` pair that touches lists (``news`` None: every row
    of ``olds`` was deleted; a pk absent from the old states: inserted).
    ``recount``: some "inserted" rows may have been inserted by a concurrent
    writer (an INSERT that ignores conflicts, an upsert that found no row to
    lock): the model-wide counters are recounted rather than moved, so that
    the row is not counted twice."""
    ops: list[Op] = []
    for w, old in olds.items():
        pairs: list[tuple[State | None, State | None]]
        generation: int | None = None
        if news is None:
            # every row deleted: the engine plans each (a delete is never
            # "nothing": tombstones, or a burial where no list held the row)
            pairs = [(o, None) for o in old.values()]
            # read before the COMMIT (this runs inside the delete's
            # transaction): lets the engine skip its read for rows inserted
            # again under their key meanwhile (Engine::change_many_since)
            generation = w.engine.generation_seen()
        else:
            new = news.get(w, {})
            pairs = []
            for pk in old.keys() | new.keys():
                o, n = old.get(pk), new.get(pk)
                if _native.change_plan(None if o is None else o[1], None if n is None else n[1]) != "nothing":
                    pairs.append((o, n))
        if pairs:
            source = w.source
            change = partial(
                w.engine.change_many, pairs, source.rows, source.states_by_pk, recount=recount, generation=generation
            )
            ops.append((w, change))
    return ops


def _schedule(client: Writes, using: str, ops: list[Op]) -> None:
    client._after_commit(using, ops)


# ---------------------------------------------------------------- update


def update(
    qs: models.QuerySet[Any], run: Callable[[models.QuerySet[Any]], int], values: dict[str, Any] | None = None
) -> int:
    """``qs.update(**values)`` (``run(qs)`` runs Django's) with every changed
    row reaching the lists: locked read, update of exactly the rows read,
    read of their new states (on PostgreSQL returned by the UPDATE itself),
    ``change_many`` after commit."""
    model = qs.model
    client = client_of(model)
    if client is None or origin.is_handled(model) or qs.query.is_sliced:
        return run(qs)
    using = qs.db
    writers = client.writers()
    with transaction.atomic(using=using, savepoint=False), origin.handled(model):
        if not writers:
            return run(qs)
        olds = _read(writers, qs, using, lock=True)
        pks = sorted(next(iter(olds.values())).keys())
        if not pks:
            return 0
        # exactly the rows locked: a row committed meanwhile that now
        # matches is left alone, as if this update ran first
        narrowed = pk_filter(qs, pks, using)
        target = narrowed[0] if len(narrowed) == 1 else qs
        returned = None
        if values is not None and len(pks) <= _threshold():
            returned = _update_returning(writers, target, using, values)
        if returned is not None:
            n, news = returned
            _schedule(client, using, change_ops(olds, news))
        else:
            n = run(target)
            if len(pks) > _threshold():
                _schedule(client, using, flush_ops(writers))
            else:
                _schedule(client, using, change_ops(olds, _read(writers, pks, using, lock=False)))
        follow_inlined(model, pks, using)
    return n


def _update_returning(
    writers: Sequence[Writes], qs: models.QuerySet[Any], using: str, values: dict[str, Any]
) -> tuple[int, States] | None:
    """``qs.update(**values)`` as one ``UPDATE ... RETURNING`` of every
    writer's state columns (PostgreSQL, states of the model's own columns):
    the rows updated and their new states. None, nothing run: the caller
    runs Django's update and reads the new states after it."""
    columns = [w.source.state_columns() for w in writers]
    if connections[using].vendor != "postgresql" or any(c is None for c in columns):
        return None
    attnames = list(dict.fromkeys(c for cols in columns if cols is not None for c in cols))
    rows = update_returning(qs, using, values, attnames)
    if rows is None:
        return None
    news: States = {}
    for w, cols in zip(writers, columns):
        pick = [attnames.index(c) for c in cols or []]
        news[w] = w.source.states_of([tuple(r[i] for i in pick) for r in rows])
    return len(rows), news


def bulk_update(qs: models.QuerySet[Any], objs: Sequence[models.Model], run: Callable[[], int]) -> int:
    """``bulk_update()`` like ``update()``: one locked read of every row,
    Django's batches of UPDATEs, one read of the new states."""
    model = qs.model
    client = client_of(model)
    if client is None or origin.is_handled(model):
        return run()
    using = qs.db
    writers = client.writers()
    pks = sorted({o.pk for o in objs if o.pk is not None})
    with transaction.atomic(using=using, savepoint=False), origin.handled(model):
        if not writers or not pks:
            return run()
        olds = _read(writers, pks, using, lock=True)
        n = run()
        if len(pks) > _threshold():
            _schedule(client, using, flush_ops(writers))
        else:
            _schedule(client, using, change_ops(olds, _read(writers, pks, using, lock=False)))
        follow_inlined(model, pks, using)
    return n


# ---------------------------------------------------------------- bulk_create


def bulk_create(
    qs: models.QuerySet[Any],
    objs: Sequence[models.Model],
    run: Callable[[], list[models.Model]],
    *,
    ignore_conflicts: bool,
    update_conflicts: bool,
    unique_fields: Sequence[str] | None,
) -> list[models.Model]:
    """``bulk_create()``: the rows inserted (or changed by an upsert) reach
    every list. Where the database does not say which rows those are
    (conflicts ignored, no primary keys returned), or rows were inserted
    under primary keys the caller gave (``_recreated``), the model's lists
    are repaired wholesale."""
    model = qs.model
    client = client_of(model)
    if client is None or origin.is_handled(model):
        return run()
    using = qs.db
    writers = client.writers()
    objs = list(objs)
    with transaction.atomic(using=using, savepoint=False), origin.handled(model):
        if not writers or not objs:
            return run()
        olds: States = {w: {} for w in writers}
        known = not ignore_conflicts and len(objs) <= _threshold()
        if known and update_conflicts:
            existing = _existing(qs, objs, unique_fields)
            if existing is None:
                known = False
            else:
                olds = _read(writers, existing, using, lock=True)
        given = {o.pk for o in objs if o.pk is not None}
        created = run()
        pks = [o.pk for o in created]
        if not known or any(pk is None for pk in pks) or _recreated(given, olds):
            _schedule(client, using, flush_ops(writers))
        else:
            # an upsert's rows that its locked read did not find may have
            # been inserted meanwhile by another writer, which counted them
            news = _read(writers, pks, using, lock=False)
            _schedule(client, using, change_ops(olds, news, recount=update_conflicts and _unlocked(olds, news)))
    return created


def _recreated(given: set[Any], olds: States) -> bool:
    """Whether rows were inserted under primary keys the caller gave (not
    those of rows an upsert updated): such a key may have been used before,
    and the earlier row's final tombstones would hide the new one in every
    list it joins. As for a single insert under a given key
    (``Engine.recreate``), the model's lists start afresh."""
    if not given:
        return False
    existing = set().union(*(states.keys() for states in olds.values()))
    return bool(given - existing)


def _unlocked(olds: States, news: States) -> bool:
    """Whether rows are stored now that the locked read before the write
    did not find."""
    return any(news.get(w, {}).keys() - old.keys() for w, old in olds.items())


def _existing(qs: models.QuerySet[Any], objs: Sequence[models.Model], unique_fields: Sequence[str] | None) -> models.QuerySet[Any] | None:
    """The rows an upsert of ``objs`` may update: those matching any
    object's ``unique_fields`` (None when they are not given)."""
    if not unique_fields:
        return None
    opts = qs.model._meta
    attnames = [opts.pk.attname if f == "pk" else opts.get_field(f).attname for f in unique_fields]
    terms = [models.Q(**{a: getattr(o, a) for a in attnames}) for o in objs]
    rows: models.QuerySet[Any] = qs.model._base_manager.using(qs.db).filter(reduce(or_, terms))
    return rows


# ---------------------------------------------------------------- deletes


def collector_delete(collector: Any, run: Callable[[], tuple[int, dict[str, int]]]) -> tuple[int, dict[str, int]]:
    """Django's ``Collector.delete()`` with every deleted row of a cached
    model reaching the lists: one locked read of the states per model (its
    collected instances) and per fast-deleted queryset, before the delete;
    the tombstones after commit. Rows of cached models whose foreign key a
    delete sets (``SET_NULL``, ``SET_DEFAULT``, ...) are read before and
    after likewise."""
    using = collector.using
    sources: list[tuple[Writes, models.QuerySet[Any] | list[Any]]] = []
    for model, instances in collector.data.items():
        client = client_of(model)
        if client is not None and not origin.is_handled(model):
            pks = [o.pk for o in instances if o.pk is not None and not in_listy_delete(model._meta.concrete_model, o.pk)]
            if pks:
                sources.append((client, pks))
    returning: list[_Returning] = []
    for qs in collector.fast_deletes:
        client = client_of(qs.model)
        if client is not None and not origin.is_handled(qs.model):
            capture = _returning_capture(client, qs, using)
            if capture is None:
                sources.append((client, qs))
            else:
                returning.append(capture)
    updated: list[tuple[Writes, list[Any]]] = []
    for (field, _value), lists in collector.field_updates.items():
        client = client_of(field.model)
        if client is None or origin.is_handled(field.model):
            continue
        pks = []
        for instances in lists:
            if isinstance(instances, models.QuerySet) and instances._result_cache is None:
                pks.extend(instances.values_list("pk", flat=True))
            else:
                pks.extend(o.pk for o in instances)
        updated.append((client, pks))
    if not sources and not updated and not returning:
        return run()
    models_ = [c.model for c, _ in sources + updated] + [r.client.model for r in returning]
    with transaction.atomic(using=using, savepoint=False), origin.handled(*models_):
        deleted = [(c, _read(c.writers(), rows, using, lock=True)) for c, rows in sources]
        for (_, rows), (_, olds) in zip(sources, deleted):
            if isinstance(rows, models.QuerySet):
                _delete_exactly(collector, rows, sorted(next(iter(olds.values()), {}).keys()), using)
        changed = [(c, pks, _read(c.writers(), pks, using, lock=True)) for c, pks in updated]
        # the collector calls each fast delete's ``_raw_delete``: on these
        # querysets (whatever their manager's class) it is the capture's
        for r in returning:
            setattr(r.qs, "_raw_delete", r.raw_delete)
        try:
            result = run()
        finally:
            for r in returning:
                r.qs.__dict__.pop("_raw_delete", None)
        deleted.extend((r.client, r.states()) for r in returning)
        for client, olds in deleted:
            total = max((len(s) for s in olds.values()), default=0)
            ops = flush_ops(olds) if total > _threshold() else change_ops(olds, None)
            _schedule(client, using, ops)
        for client, pks, olds in changed:
            if len(pks) > _threshold():
                _schedule(client, using, flush_ops(olds))
            else:
                _schedule(client, using, change_ops(olds, _read(list(olds), pks, using, lock=False)))
    return result


def _delete_exactly(collector: Any, qs: models.QuerySet[Any], pks: list[Any], using: str) -> None:
    """Narrows the collector's fast delete ``qs`` to the rows its locked
    read found: without row locks on rows not there yet, a row committed
    between that read and the ``DELETE`` (READ COMMITTED has no gap locks)
    would be deleted with no tombstone and stay listed. Left alone, as if
    this delete ran first (as ``update()`` does)."""
    at = next((i for i, q in enumerate(collector.fast_deletes) if q is qs), None)
    if at is not None:
        collector.fast_deletes[at : at + 1] = pk_filter(qs, pks, using)


class _Returning:
    """A fast delete of a cached model whose deleted rows' states its own
    statement returns (``DELETE ... RETURNING``, see ``collector_delete``):
    the rows land in ``rows`` when Django's collector runs it."""

    def __init__(self, client: Writes, qs: models.QuerySet[Any], writers: list[Writes], columns: list[list[str]]) -> None:
        self.client, self.qs, self.writers = client, qs, writers
        self.attnames = list(dict.fromkeys(c for cols in columns for c in cols))
        self.picks = [[self.attnames.index(c) for c in cols] for cols in columns]
        self.rows: list[tuple[Any, ...]] = []

    def raw_delete(self, using: str) -> int:
        """The queryset's ``_raw_delete(using)``, returning the rows."""
        self.rows = delete_returning(self.qs, using, self.attnames)
        return len(self.rows)

    def states(self) -> States:
        """Each writer's states of the rows deleted."""
        return {w: w.source.states_of(_picked(self.rows, pick)) for w, pick in zip(self.writers, self.picks)}


def _picked(rows: list[tuple[Any, ...]], pick: list[int]) -> list[tuple[Any, ...]]:
    """The columns ``pick`` of each row (the rows themselves when ``pick``
    is all of them, in order: one writer, the usual case)."""
    if rows and pick == list(range(len(rows[0]))):
        return rows
    return [tuple(r[i] for i in pick) for r in rows]


def _returning_capture(client: Writes, qs: models.QuerySet[Any], using: str) -> _Returning | None:
    """A capture for a fast delete that can return its rows' states itself:
    on PostgreSQL, when every writer's state is made of the model's own
    columns (an inlined field is read through a join: not returned by a
    DELETE). None: the states are read (locked) before the delete."""
    if connections[using].vendor != "postgresql":
        return None
    writers = client.writers()
    columns = [w.source.state_columns() for w in writers]
    if not writers or any(c is None for c in columns):
        return None
    return _Returning(client, qs, writers, [c for c in columns if c is not None])


def raw_delete(qs: models.QuerySet[Any], using: str, run: Callable[[], int]) -> int:
    """``QuerySet._raw_delete()`` called directly: read, delete, tombstones."""
    model = qs.model
    client = client_of(model)
    if client is None or origin.is_handled(model):
        return run()
    writers = client.writers()
    with transaction.atomic(using=using, savepoint=False), origin.handled(model):
        olds = _read(writers, qs, using, lock=True)
        n = run()
        total = max((len(s) for s in olds.values()), default=0)
        _schedule(client, using, flush_ops(writers) if total > _threshold() else change_ops(olds, None))
    return n


# ---------------------------------------------------------------- many-to-many


def m2m_added(through: type[models.Model], instance: models.Model, model: type[models.Model], pk_set: set[Any], reverse: bool, using: str) -> None:
    """Rows a many-to-many ``add()`` inserted into a cached through table
    whose default manager Listy does not follow (an auto-created one): one
    read of the new rows, ``change_many`` after commit."""
    client = client_of(through)
    if client is None or not pk_set:
        return
    source_field, target_field = _m2m_fields(through, type(instance), model, reverse)
    if source_field is None or target_field is None:
        # which columns hold which side is unknown: repair wholesale
        _schedule(client, using, flush_ops(client.writers()))
        return
    rows = through._base_manager.using(using).filter(
        **{source_field: instance.pk, f"{target_field}__in": list(pk_set)}
    )
    writers = client.writers()
    news = _read(writers, rows, using, lock=False)
    olds: States = {w: {} for w in writers}
    # Django's INSERT ignores conflicts: a row read here may be one a
    # concurrent add() inserted (and counted), this INSERT meeting it
    _schedule(client, using, change_ops(olds, news, recount=True))


def _m2m_fields(
    through: type[models.Model], instance_model: type[models.Model], model: type[models.Model], reverse: bool
) -> tuple[str | None, str | None]:
    """The through model's field names pointing at the instance's side and
    at the added objects' side."""
    for m in (instance_model, model):
        for f in m._meta.many_to_many:
            if f.remote_field.through is through:
                src, tgt = f.m2m_field_name(), f.m2m_reverse_field_name()
                return (tgt, src) if reverse else (src, tgt)
    return None, None


# ---------------------------------------------------------------- inlined copies


def inlined_referrers(model: type[models.Model]) -> list[tuple[Writes, str]]:
    """``(client, fk attname)`` of every cached model whose records carry an
    inlined copy of ``model``'s fields."""
    out = []
    concrete = model._meta.concrete_model
    for other in registry.all_models():
        client = client_of(other)
        if client is None:
            continue
        seen = set()
        for col in client.source.schema.columns:
            fk = col.fk
            if fk is not None and fk.related_model._meta.concrete_model is concrete and fk.attname not in seen:  # type: ignore[union-attr]  # a ForeignKey's related_model is set
                seen.add(fk.attname)
                out.append((client, fk.attname))
    return out


def follow_inlined(model: type[models.Model], pks: Sequence[Any], using: str) -> None:
    """After commit, rewrites in place every record that carries an inlined
    copy of the rows ``pks`` of ``model``: the referencing rows are read
    once (per referencing model) and handed to ``change_many`` as changes
    from themselves to themselves (update frames where they are). Above
    ``LISTY["INLINED_FANOUT_THRESHOLD"]`` referencing rows their model's
    lists are repaired wholesale."""
    referrers = inlined_referrers(model)
    if not referrers or not pks:
        return
    pks = list(pks)
    for client, attname in referrers:
        transaction.on_commit(partial(_refresh_copies, client, attname, pks, using), using=using)


def _refresh_copies(client: Writes, attname: str, pks: list[Any], using: str) -> None:
    limit = listy_settings().inlined_fanout_threshold
    writers = client.writers()
    qs = client.source.all_rows_queryset().using(using).filter(**{f"{attname}__in": pks})
    news = _read(writers, qs[: limit + 1], using, lock=False)
    if max((len(s) for s in news.values()), default=0) > limit:
        ops = flush_ops(writers)
    else:
        ops = [op for w, states in news.items() for op in change_ops({w: states}, {w: states})]
    for w, op in ops:
        w._run_safely(op)


__all__ = [
    "bulk_create",
    "bulk_update",
    "client_of",
    "collector_delete",
    "follow_inlined",
    "m2m_added",
    "raw_delete",
    "update",
]
