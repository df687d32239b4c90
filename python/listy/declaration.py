"""What a ``ListCache`` is declared as, and what that resolves to.

Owns the options of ``ListCache(Model, caches, **options)`` (SPEC §2), the
field lookup behind every filter, the resolution of the declaration into a
record schema, a database source and canonical indexes, the engine built on
them (rebuilt when the settings change), and the turning of filters into an
index and its values. Reads and writes (``listy.writes``, ``listy.cache``)
stand on it.

Filters are equality filters given as keyword arguments. A foreign key may be
named ``follower=<instance or id>`` or ``follower_id=<id>``, the primary key
``pk`` or by its own name. Each index is kept in the engine's canonical order
of its attnames (``("followee_id", "follower_id")``) and the values in that
order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, TypedDict

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models, router
from django.db.models.base import ModelState

from listy import _native, events, middleware, registry
from listy import store as _store
from listy.conf import listy_settings
from listy.exceptions import ConfigError, NotCachableException, SyncCallInEventLoop
from listy.schema import ModelSchema, build_schema
from listy.source import DjangoBackingStore

Index = tuple[str, ...]

#: Ends the engine label of lists that keep soft-deleted rows (see ``engine_label``).
SOFT_DELETED_SUFFIX = "+softdeleted"

_INT_TYPES = frozenset(
    {"AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField"}
)


logger = logging.getLogger("listy")

_EVENT_LINES = {
    "lease_lost": "lost its build lease on %s (another builder or a write came first): served from the database",
    "compacted": "compacted %s (%d dead frames dropped)",
    "segment_split": "split the grown head of %s again (%d parts)",
}


def _engine_event(kind: str, key: str, detail: int) -> None:
    """The engine's events (``Engine(on_event=...)``): counted in
    ``listy.events.metrics()`` and logged at DEBUG."""
    events.count(f"engine_{kind}")
    line = _EVENT_LINES.get(kind, kind + " %s")
    logger.debug("listy: engine " + line, key, *([detail] if line.count("%") > 1 else []))


def _middleware_on_build() -> Callable[[Any], Any] | None:
    return middleware.on_build if middleware.installed() else None


class Options(TypedDict, total=False):
    """The keyword options of ``ListCache(Model, caches, **options)`` (SPEC §2)."""

    soft_delete_field: str | None
    deleted_timestamp_field: str | None
    enabled_field: str | None
    timestamp_field: str | None
    disable_cache: bool
    address: Callable[[], str] | None
    filter_out_soft_deletes: bool
    inlined_foreign_key_fields: Mapping[str, Sequence[str]] | None


@dataclass(frozen=True)
class _Resolved:
    """What a ListCache knows once the model's fields are ready."""

    schema: ModelSchema
    source: DjangoBackingStore
    indexes: list[Index]
    by_set: dict[frozenset[str], Index]
    db_alias: str
    pk_index: Index | None
    #: Filter names (in call order) → their index and, in index order, the
    #: position of each name: the filters whose fields all take ints as
    #: they are (``Declaration._index_for``'s fast path).
    by_names: dict[tuple[str, ...], tuple[Index, tuple[int, ...]] | None] = dataclass_field(default_factory=dict)


class Declaration:
    """The declaration of one client: options, fields, indexes, engine."""

    def __init__(
        self,
        model: type[models.Model],
        caches: Iterable[Sequence[str]],
        *,
        soft_delete_field: str | None = None,
        deleted_timestamp_field: str | None = None,
        enabled_field: str | None = None,
        timestamp_field: str | None = None,
        disable_cache: bool = False,
        address: Callable[[], str] | None = None,
        filter_out_soft_deletes: bool = True,
        inlined_foreign_key_fields: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.model = model
        self.caches: list[tuple[str, ...]] = [
            (c,) if isinstance(c, str) else tuple(c) for c in caches
        ]
        self.soft_delete_field = soft_delete_field
        self.deleted_timestamp_field = deleted_timestamp_field
        self.enabled_field = enabled_field
        self.timestamp_field = timestamp_field
        self.disable_cache = disable_cache
        self.address = address
        self.filter_out_soft_deletes = filter_out_soft_deletes
        self.inlined_foreign_key_fields = {
            k: list(v) for k, v in (inlined_foreign_key_fields or {}).items()
        }
        self._lock = threading.RLock()
        self._field_cache: dict[str, models.Field[Any, Any]] = {}
        self._unique_sets: list[frozenset[str]] | None = None
        self._state: tuple[int, _Resolved, _native.Engine | None] | None = None
        self._stats = [0, 0]  # hits/misses of engines already dropped
        registry.register(self)

    def __repr__(self) -> str:
        return f"<ListCache {self.model._meta.label} {self.caches!r}>"

    # ------------------------------------------------------------ set-up
    def check_configuration(self) -> list[str]:
        """Problems of the declaration, as messages (used by the checks)."""
        problems: list[str] = []
        opts = self.model._meta
        for index in self.caches:
            if not index:
                problems.append("an index must name at least one field")
            for name in index:
                if self._field(name) is None:
                    problems.append(f"index {index!r} names {name!r}, which is not a field of {opts.label}")
        for option in ("soft_delete_field", "deleted_timestamp_field", "enabled_field", "timestamp_field"):
            name = getattr(self, option)
            if name is not None and self._field(name) is None:
                problems.append(f"{option}={name!r} is not a field of {opts.label}")
        return problems

    def _field(self, name: str) -> models.Field[Any, Any] | None:
        found = self._field_cache.get(name)
        if found is None:
            found = self._find_field(name)
            if found is not None:
                self._field_cache[name] = found
        return found

    def _find_field(self, name: str) -> models.Field[Any, Any] | None:
        opts = self.model._meta
        if name == "pk":
            return opts.pk
        try:
            f = opts.get_field(name)
        except FieldDoesNotExist:
            f = None
        if isinstance(f, models.Field) and f.concrete and not f.many_to_many:
            return f
        for f in opts.concrete_fields:
            if f.attname == name:
                return f
        return None

    def _resolve(self) -> _Resolved:
        state = self._state
        epoch = _store.epoch()
        if state is not None and state[0] == epoch:
            return state[1]
        with self._lock:
            state = self._state
            if state is not None and state[0] == epoch:
                return state[1]
            problems = self.check_configuration()
            if problems:
                raise ConfigError(f"{self.model._meta.label}: " + "; ".join(problems))
            schema = build_schema(self.model, self.inlined_foreign_key_fields)
            db_alias = router.db_for_write(self.model) or "default"
            source = DjangoBackingStore(
                self.model,
                schema,
                soft_delete_field=self.soft_delete_field,
                deleted_timestamp_field=self.deleted_timestamp_field,
                enabled_field=self.enabled_field,
                timestamp_field=self.timestamp_field,
                filter_out_soft_deletes=self.filter_out_soft_deletes,
                db_alias=db_alias,
            )
            indexes: list[Index] = []
            by_set: dict[frozenset[str], Index] = {}
            for names in self.caches:
                attnames = tuple(_native.canonical_index([self._field(n).attname for n in names]))  # type: ignore[union-attr]
                if frozenset(attnames) not in by_set:
                    by_set[frozenset(attnames)] = attnames
                    indexes.append(attnames)
            pk_attname = self.model._meta.pk.attname
            pk_index = (pk_attname,) if frozenset([pk_attname]) in by_set else None
            resolved = _Resolved(schema, source, indexes, by_set, db_alias, pk_index)
            self._drop_engine()
            self._state = (epoch, resolved, None)
            return resolved

    def reset_local_stats(self) -> None:
        """Sets ``hits`` and ``misses`` back to zero."""
        self._stats = [0, 0]
        state = self._state
        if state is not None and state[2] is not None:
            state[2].reset_stats()

    def _drop_engine(self) -> None:
        if self._state is not None and self._state[2] is not None:
            engine = self._state[2]
            self._stats[0] += engine.hits
            self._stats[1] += engine.misses

    def _engine(self) -> _native.Engine:
        resolved = self._resolve()
        state = self._state
        if state is not None and state[2] is not None and state[0] == _store.epoch():
            return state[2]
        with self._lock:
            state = self._state
            if state is not None and state[2] is not None and state[0] == _store.epoch():
                return state[2]
            epoch = state[0] if state is not None else _store.epoch()
            st = _store.get_store(self.address() if self.address is not None else None)
            engine = _native.Engine(
                st,
                prefix=listy_settings().key_prefix,
                model=self.engine_label,
                schema=resolved.schema.native,
                indexes=resolved.indexes,
                model_class=self.model,
                state_class=ModelState,
                db_alias=resolved.db_alias,
                related=resolved.schema.related or None,
                on_build=_middleware_on_build(),
                unique=[sorted(u) for u in self._unique_field_sets() if u <= set(resolved.schema.attnames)],
                counter_epoch=listy_settings().counter_epoch,
                on_event=_engine_event,
            )
            self._state = (epoch, resolved, engine)
            return engine

    def _unique_field_sets(self) -> list[frozenset[str]]:
        """The attname sets no two rows share: unique fields, ``unique_together``
        and unconditional ``UniqueConstraint`` objects."""
        found = self._unique_sets
        if found is None:
            opts = self.model._meta
            sets = [frozenset([f.attname]) for f in opts.concrete_fields if f.unique]
            field = self._field_attname
            sets += [frozenset(field(n) for n in names) for names in opts.unique_together]
            for c in opts.constraints:
                if not isinstance(c, models.UniqueConstraint) or not c.fields:
                    continue
                if c.condition is None and not c.expressions and c.deferrable is None:
                    sets.append(frozenset(field(n) for n in c.fields))
            found = self._unique_sets = sets
        return found

    def _field_attname(self, name: str) -> str:
        return str(getattr(self.model._meta.get_field(name), "attname"))

    @property
    def engine_label(self) -> str:
        """The model name the engine puts in keys. Lists that keep
        soft-deleted rows (``filter_out_soft_deletes=False``) mean something
        else than filtered ones, so they live under their own name."""
        label = self.model._meta.label
        if self.soft_delete_field and not self.filter_out_soft_deletes:
            return label + SOFT_DELETED_SUFFIX
        return label

    @property
    def engine(self) -> _native.Engine:
        """The engine of this client (built on first use)."""
        return self._engine()

    @property
    def source(self) -> DjangoBackingStore:
        """The database side (``DjangoBackingStore``) of this client."""
        return self._resolve().source

    @property
    def schema(self) -> ModelSchema:
        """The record schema of this client."""
        return self._resolve().schema

    @property
    def indexes(self) -> list[Index]:
        """This client's indexes as attname tuples in canonical order."""
        return list(self._resolve().indexes)

    @property
    def db_alias(self) -> str:
        """The database alias this client's model writes to."""
        return self._resolve().db_alias

    def store_identity(self) -> tuple[int, str]:
        """(store, engine label): clients with one identity share their lists."""
        st = _store.get_store(self.address() if self.address is not None else None)
        return (id(st), self.engine_label)

    # ------------------------------------------------------------ async
    def _sync_only(self, call: str, twin: str | None = None) -> None:
        """Refuses a synchronous call made inside a running event loop: it
        would block the loop on cache I/O and, on a miss, run the ORM there.
        Refused every time (not only on a miss), naming the awaitable twin;
        ``DJANGO_ALLOW_ASYNC_UNSAFE`` lifts it, as it does Django's check."""
        if asyncio._get_running_loop() is None or os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE"):
            return
        label = self.model._meta.label
        twin = twin or f"await {self.model.__name__}.cache.a{call}(...)"
        raise SyncCallInEventLoop(
            f"{label}: {call}() called inside a running event loop, where it would block the loop "
            f"and read the database on a miss; use {twin} (or wrap the sync code in "
            "asgiref.sync.sync_to_async)"
        )

    # ------------------------------------------------------------ filters
    def _describe_indexes(self) -> str:
        return ", ".join("(" + ", ".join(c) + ")" for c in self.caches) or "none"

    def _not_cachable(self, what: str) -> NotCachableException:
        return NotCachableException(
            f"{self.model._meta.label}: {what}; the cached indexes are {self._describe_indexes()}"
        )

    def _normalise(self, filters: Mapping[str, Any]) -> dict[str, Any]:
        """Filters → {attname: value}, values coerced as the ORM would."""
        out: dict[str, Any] = {}
        for name, value in filters.items():
            base = name[: -len("__exact")] if name.endswith("__exact") else name
            f = self._field(base)
            if f is None:
                raise self._not_cachable(f"{name!r} is not a field")
            if f.attname in out:
                raise self._not_cachable(f"{f.name!r} is given twice")
            out[f.attname] = self._coerce(name, f, value)
        return out

    @staticmethod
    def _coerce(name: str, f: Any, value: Any) -> Any:
        # f: a concrete field (a ForeignKey has target_field; django-stubs' Field has not)
        if value is None:
            return None
        is_fk = f.is_relation and (f.many_to_one or f.one_to_one)
        target = f.target_field if is_fk else f
        if type(value) is int and target.get_internal_type() in _INT_TYPES:
            return value
        if isinstance(value, models.Model):
            return getattr(value, target.attname)
        try:
            return target.to_python(value)
        except ValidationError as exc:
            raise ValueError(f"{name}={value!r}: {'; '.join(exc.messages)}") from None

    def _fast_index(self, names: tuple[str, ...], resolved: _Resolved) -> tuple[Index, tuple[int, ...]] | None:
        """What ``_index_for`` may reuse for filters named ``names``: their
        index and where each of its attnames is among the names; None when
        the names do not name one index of integer fields (the full path
        then checks, coerces and raises)."""
        attnames: list[str] = []
        for name in names:
            f: Any = self._field(name[: -len("__exact")] if name.endswith("__exact") else name)
            if f is None or f.attname in attnames:
                return None
            # f: a concrete field (a ForeignKey has target_field; django-stubs' Field has not)
            target = f.target_field if f.is_relation and (f.many_to_one or f.one_to_one) else f
            if target.get_internal_type() not in _INT_TYPES:
                return None
            attnames.append(f.attname)
        index = resolved.by_set.get(frozenset(attnames))
        if index is None:
            return None
        return index, tuple(attnames.index(a) for a in index)

    def _index_for(self, filters: Mapping[str, Any], *, allow_all: bool = False) -> tuple[Index, tuple[Any, ...]]:
        resolved = self._resolve()
        names = tuple(filters)
        try:
            fast = resolved.by_names[names]
        except KeyError:
            fast = self._fast_index(names, resolved)
            if len(resolved.by_names) < 256:  # names come from call sites: few
                resolved.by_names[names] = fast
        if fast is not None:
            # Ints given as they are need no coercion (as in ``_coerce``).
            # (A loop: a comprehension would make a function per call.)
            found: list[Any] = []
            for i in fast[1]:
                value = filters[names[i]]
                if type(value) is not int:
                    break
                found.append(value)
            else:
                return fast[0], tuple(found)
        norm = self._normalise(filters)
        if not norm and allow_all:
            return (), ()
        index = resolved.by_set.get(frozenset(norm))
        if index is None:
            given = ", ".join(filters) or "no filters"
            raise self._not_cachable(f"no cached index matches the filters ({given})")
        return index, tuple([norm[a] for a in index])


__all__ = ["SOFT_DELETED_SUFFIX", "Declaration", "Index", "Options"]
