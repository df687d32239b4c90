"""``ListCache``: the public calls of Listy on one model (SPEC §2).

This module checks arguments, turns filters into an index and its values,
runs ORM writes in the caller's transaction and hands the cache work to the
engine (``listy._native.Engine``) once the transaction commits. It holds no
protocol: keys, records, leases and prepends are the engine's.

Filters are equality filters given as keyword arguments. A foreign key may be
named ``follower=<instance or id>`` or ``follower_id=<id>``, the primary key
``pk`` or by its own name. Each index is kept as the sorted tuple of its
attnames (``("followee_id", "follower_id")``) and the values in that order.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, overload

from django.conf import settings
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import IntegrityError, connections, models, router, transaction
from django.db.models.base import ModelState
from django.utils import timezone

from listy import _native, registry
from listy import repair as _repairs
from listy import recorder as _recorder
from listy import store as _store
from listy.conf import listy_settings
from listy.exceptions import CacheUnavailable, ConfigError, NotCachableException
from listy.inspection import is_list
from listy.schema import ModelSchema, build_schema
from listy.source import (
    DjangoBackingStore,
    Row,
    date_of_day,
    day_number,
    instant_micros,
    local_midnight,
    same_zone,
)

logger = logging.getLogger("listy")

Period = Literal["day", "week", "month", "year"]
Index = tuple[str, ...]
#: One piece of cache work: the client whose engine runs it, and the call.
Op = tuple["ListCache", Callable[[], Any]]

#: (model, pk) pairs that Listy itself is deleting right now: the signal
#: handlers leave them alone (the cache work is already scheduled).
_deleting: ContextVar[frozenset[tuple[type, Any]]] = ContextVar("listy_deleting", default=frozenset())

#: Instance attribute that marks a save made by Listy itself.
SKIP_SIGNALS = "_listy_skip_signals"

#: ``pending`` is True in a thread that scheduled Listy cache work inside a
#: transaction which may not have committed yet (database connections are
#: per thread); reads then look at the connection's on-commit queue.
_tls = threading.local()


# ---------------------------------------------------------------- helpers
def _middleware_on_build() -> Callable[[Any], Any] | None:
    from listy import middleware

    return middleware.on_build if middleware.installed() else None


def _bucket_span(period: Period, day: int, zone: datetime.tzinfo | None) -> tuple[tuple[int, int], tuple[int, int]]:
    """The bucket of ``period`` holding ``day``: its local days ``[start, end)``
    and the same span as stored instants (microseconds since the epoch)."""
    start = _native.bucket_start(period, day)
    end = bucket_end(period, start)
    instants = (instant_micros(local_midnight(start, zone)), instant_micros(local_midnight(end, zone)))
    return (start, end), instants


def bucket_end(period: Period, start_day: int) -> int:
    """The first day after the bucket that starts on ``start_day``."""
    if period == "day":
        return start_day + 1
    if period == "week":
        return start_day + 7
    d = date_of_day(start_day)
    if period == "month":
        nxt = datetime.date(d.year + (d.month == 12), d.month % 12 + 1, 1)
    else:
        nxt = datetime.date(d.year + 1, 1, 1)
    return day_number(nxt)


_INT_TYPES = frozenset(
    {"AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField"}
)


def _default_key(filters: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(
        sorted((k, v.pk if isinstance(v, models.Model) else v) for k, v in filters.items())
    )


class FallbackRecords(Sequence[Any]):
    """A list served from the database (cache disabled or unavailable).

    Same interface as the engine's ``Records``: ``key``, ``size`` (0),
    ``from_cache`` (False), ``values()`` and ``pks()``.
    """

    __slots__ = ("_items", "_rows", "from_cache", "key", "size")

    def __init__(self, key: str, rows: list[Row], items: list[Any]) -> None:
        self.key = key
        self.size = 0
        self.from_cache = False
        self._rows = rows
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...
    def __getitem__(self, i: int | slice) -> Any:
        return self._items[i]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __repr__(self) -> str:
        return f"<FallbackRecords {self.key!r} len={len(self)}>"

    def values(self) -> list[Row]:
        """Rows as tuples in schema order."""
        return list(self._rows)

    def pks(self) -> list[int]:
        """Primary keys, newest first."""
        return [r[0] for r in self._rows]


# The engine's lazy list is a read-only sequence, like FallbackRecords.
Sequence.register(_native.Records)


@dataclass(frozen=True)
class CoherencyReport:
    """The state of one list in the cache (see ``determine_coherency``)."""

    key: str
    """The literal memcached key (prefix included; a segmented list's head)."""
    cached: bool
    size: int
    """Bytes stored."""
    count: int
    """Live records in the cached list (0 when not cached)."""
    coherent: bool | None
    """With ``check_against_db``: does the cached list equal the database's
    rows? None when not checked or not cached."""
    index: Index
    values: tuple[Any, ...]


@dataclass(frozen=True)
class _Resolved:
    """What a ListCache knows once the model's fields are ready."""

    schema: ModelSchema
    source: DjangoBackingStore
    indexes: list[Index]
    by_set: dict[frozenset[str], Index]
    db_alias: str
    pk_index: Index | None


_PERIOD_DOC = """Count of live rows whose ``timestamp_field`` falls in the {what} of
        the date/datetime given as ``<timestamp_field>=value``; the other
        keyword arguments are the list's filters (none: the whole model)."""


class ListCache:
    """The cached lists of one model.

    ``ListCache(Model, caches, **options)`` takes the same arguments as
    :class:`listy.CachingManager`; every client of one model keeps the others'
    lists right.
    """

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
        self._field_cache: dict[str, models.Field] = {}
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

    def _field(self, name: str) -> models.Field | None:
        found = self._field_cache.get(name)
        if found is None:
            found = self._find_field(name)
            if found is not None:
                self._field_cache[name] = found
        return found

    def _find_field(self, name: str) -> models.Field | None:
        opts = self.model._meta
        if name == "pk":
            return opts.pk
        try:
            f = opts.get_field(name)
        except FieldDoesNotExist:
            f = None
        if f is not None and getattr(f, "concrete", False) and not f.many_to_many:
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
                attnames = tuple(sorted({self._field(n).attname for n in names}))  # type: ignore[union-attr]
                if frozenset(attnames) not in by_set:
                    by_set[frozenset(attnames)] = attnames
                    indexes.append(attnames)
            pk_attname = self.model._meta.pk.attname
            pk_index = (pk_attname,) if frozenset([pk_attname]) in by_set else None
            resolved = _Resolved(schema, source, indexes, by_set, db_alias, pk_index)
            self._drop_engine()
            self._state = (epoch, resolved, None)
            return resolved

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
            )
            self._state = (epoch, resolved, engine)
            return engine

    @property
    def engine_label(self) -> str:
        """The model name the engine puts in keys. Lists that keep
        soft-deleted rows (``filter_out_soft_deletes=False``) mean something
        else than filtered ones, so they live under their own name."""
        label = self.model._meta.label
        if self.soft_delete_field and not self.filter_out_soft_deletes:
            return f"{label}+softdeleted"
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
        """This client's indexes as sorted attname tuples."""
        return list(self._resolve().indexes)

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
    def _coerce(name: str, f: models.Field, value: Any) -> Any:
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

    def _index_for(self, filters: Mapping[str, Any], *, allow_all: bool = False) -> tuple[Index, tuple[Any, ...]]:
        resolved = self._resolve()
        norm = self._normalise(filters)
        if not norm and allow_all:
            return (), ()
        index = resolved.by_set.get(frozenset(norm))
        if index is None:
            given = ", ".join(filters) or "no filters"
            raise self._not_cachable(f"no cached index matches the filters ({given})")
        return index, tuple([norm[a] for a in index])

    # ------------------------------------------------------------ reads
    def _from_db(self, index: Index, values: tuple[Any, ...], key: str = "") -> FallbackRecords:
        rows = self._resolve().source.rows(index, values)
        # The engine's builder makes the instances, as it does for cached
        # records (inlined foreign keys, the middleware's ``on_build``);
        # making an engine does no I/O, so this works with the cache down.
        return FallbackRecords(key, rows, self._engine().instances(rows))

    def _unavailable(self, exc: Exception) -> None:
        _repairs.note_fault()
        logger.warning("listy: cache unavailable for %s, using the database: %s", self.model._meta.label, exc)

    def _use_db(self) -> bool:
        """Reads go to the database: cache disabled, uncommitted Listy writes
        in this transaction, or keys a failed write left (here or in another
        process) that are not repaired yet (``listy.repair``)."""
        if self.disable_cache or self._pending_writes():
            return True
        return not _repairs.ready(self, self._resolve().db_alias)

    def _get(self, index: Index, values: tuple[Any, ...]) -> Sequence[Any]:
        if self._use_db():
            return self._from_db(index, values)
        try:
            engine = self._engine()
            records = engine.get(index, values, self._resolve().source.rows)
        except CacheUnavailable as exc:
            self._unavailable(exc)
            return self._from_db(index, values)
        if not records.from_cache:
            _repairs.note_read(records)
            logger.debug("listy: miss %s %s: read from the database (%d bytes stored)", self.model._meta.label, records.key, records.size)
        return records

    def get(self, **filters: Any) -> Sequence[Any]:
        """The list of live instances matching ``filters``, newest first.

        A lazy, read-only sequence: ``len()``, ``bool()``, indexing and
        slicing work without building every instance. ``filters`` must match
        one configured index exactly, else ``NotCachableException``.
        """
        if _recorder.active() is not None:  # the debug-toolbar panel
            return _recorder.record(self, "get", filters, lambda: self.get(**filters))
        index, values = self._index_for(filters)
        return self._get(index, values)

    def get_one(self, pk: Any) -> models.Model | None:
        """The instance with primary key ``pk``, or None (needs a ``("pk",)`` index)."""
        resolved = self._resolve()
        if resolved.pk_index is None:
            raise self._not_cachable("get_one() needs a ('pk',) index")
        pk = self._coerce("pk", self.model._meta.pk, pk)
        from listy import middleware

        found = middleware.lookup(self.model, pk)
        if found is not None:
            return found
        return next(iter(self._get(resolved.pk_index, (pk,))), None)

    def get_first(self, **filters: Any) -> models.Model | None:
        """The first (newest) instance of the list, or None."""
        records = self.get(**filters)
        return records[0] if records else None

    def _get_many(self, filters: list[Mapping[str, Any]]) -> list[Sequence[Any]]:
        requests = [self._index_for(f) for f in filters]
        if self._use_db():
            return [self._from_db(i, v) for i, v in requests]
        try:
            found = list(self._engine().get_multi(requests, self._resolve().source.rows))
        except CacheUnavailable as exc:
            self._unavailable(exc)
            return [self._from_db(i, v) for i, v in requests]
        for records in found:
            if not records.from_cache:
                _repairs.note_read(records)
                logger.debug("listy: miss %s %s: read from the database (%d bytes stored)", self.model._meta.label, records.key, records.size)
        return found

    def get_multi(
        self,
        filters: Iterable[Mapping[str, Any]],
        key_func: Callable[[Mapping[str, Any]], Any] | None = None,
    ) -> dict[Any, Sequence[Any]]:
        """``{key_func(f): list}`` for each filter dict, fetched in one
        batched round trip; missing lists are rebuilt from the database.
        ``key_func`` defaults to the sorted ``(name, value)`` pairs."""
        filters = list(filters)
        if _recorder.active() is not None:  # the debug-toolbar panel
            return _recorder.record(self, "get_multi", {"filters": filters}, lambda: self.get_multi(filters, key_func))
        key = key_func or _default_key
        return {key(f): r for f, r in zip(filters, self._get_many(filters))}

    def get_multi_list(self, filters: Iterable[Mapping[str, Any]]) -> list[Any]:
        """All instances of all the lists, in order, as one flat list."""
        out: list[Any] = []
        for records in self._get_many(list(filters)):
            out.extend(records)
        return out

    # ------------------------------------------------------------ counts
    def count(self, **filters: Any) -> int:
        """Number of live rows matching ``filters`` (none: the whole model)."""
        index, values = self._index_for(filters, allow_all=True)
        source = self._resolve().source
        if self._use_db():
            return source.count(index, values)
        try:
            return self._engine().count(index, values, source.rows, source.count)
        except CacheUnavailable as exc:
            self._unavailable(exc)
            return source.count(index, values)

    def _split_timestamp(self, filters: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
        if not self.timestamp_field:
            raise ConfigError(f"{self.model._meta.label}: period counts need timestamp_field")
        ts = self._field(self.timestamp_field)
        names = {self.timestamp_field, ts.attname if ts is not None else self.timestamp_field}
        rest = {k: v for k, v in filters.items() if k not in names}
        given = [v for k, v in filters.items() if k in names]
        if len(given) != 1:
            raise TypeError(
                f"{self.model._meta.label}: give the date as {self.timestamp_field}=<date or datetime>"
            )
        return rest, given[0]

    def _period_counts(self, period: Period, filters: Mapping[str, Any], many: bool) -> Any:
        rest, when = self._split_timestamp(filters)
        index, values = self._index_for(rest, allow_all=True)
        dates = list(when) if many else [when]
        days = [day_number(d) for d in dates]  # in the current time zone
        source = self._resolve().source
        zone = timezone.get_current_timezone() if settings.USE_TZ else None
        spans = [_bucket_span(period, d, zone) for d in days]
        counts: list[int] | None = None
        # A list is counted from its own records, in any zone. The model-wide
        # counters bucket by the default time zone: while a request has
        # activated another one, its days are the database's.
        foreign_zone = zone is not None and not same_zone(zone, timezone.get_default_timezone())
        if not (foreign_zone and not index) and not self._use_db():
            counter = partial(source.count, tz=zone)
            try:
                engine = self._engine()
                timestamp = self._field(self.timestamp_field).attname
                counts = list(engine.period_counts(index, values, period, timestamp, spans, source.rows, counter))
            except CacheUnavailable as exc:
                self._unavailable(exc)
        if counts is None:
            counts = [source.count(index, values, s, e, tz=zone) for (s, e), _ in spans]
        if not many:
            return counts[0]
        return {date_of_day(_native.bucket_start(period, d)): c for d, c in zip(days, counts)}

    def daily_count(self, **filters: Any) -> int:
        return self._period_counts("day", filters, False)

    def weekly_count(self, **filters: Any) -> int:
        return self._period_counts("week", filters, False)

    def monthly_count(self, **filters: Any) -> int:
        return self._period_counts("month", filters, False)

    def yearly_count(self, **filters: Any) -> int:
        return self._period_counts("year", filters, False)

    daily_count.__doc__ = _PERIOD_DOC.format(what="local day")
    weekly_count.__doc__ = _PERIOD_DOC.format(what="ISO week")
    monthly_count.__doc__ = _PERIOD_DOC.format(what="month")
    yearly_count.__doc__ = _PERIOD_DOC.format(what="year")

    def daily_counts(self, **filters: Any) -> dict[datetime.date, int]:
        """``{day: count}`` for each date of the iterable given as
        ``<timestamp_field>=iterable`` (a ``dateutil.rrule`` or any iterable
        of dates/datetimes)."""
        return self._period_counts("day", filters, True)

    def weekly_counts(self, **filters: Any) -> dict[datetime.date, int]:
        """``{Monday of the ISO week: count}`` for each date of the iterable."""
        return self._period_counts("week", filters, True)

    def monthly_counts(self, **filters: Any) -> dict[datetime.date, int]:
        """``{1st of the month: count}`` for each date of the iterable."""
        return self._period_counts("month", filters, True)

    def yearly_counts(self, **filters: Any) -> dict[datetime.date, int]:
        """``{January 1st: count}`` for each date of the iterable."""
        return self._period_counts("year", filters, True)

    # ------------------------------------------------------------ writes
    def _insert(self, obj: models.Model, using: str) -> models.Model:
        """add()'s INSERT of a new live row; its lists follow on commit."""
        if self.soft_delete_field:
            setattr(obj, self.soft_delete_field, False)
        if self.enabled_field:
            setattr(obj, self.enabled_field, True)
        setattr(obj, SKIP_SIGNALS, True)
        try:
            obj.save(force_insert=True, using=using)
        finally:
            obj.__dict__.pop(SKIP_SIGNALS, None)
        # plan_add() reaches every enabled client, even from a disabled one
        if self.source.is_listed(obj):
            self._after_commit(using, self.plan_add(obj))
        return obj

    def _unique_field_sets(self) -> list[frozenset[str]]:
        """The attname sets no two rows share: unique fields, ``unique_together``
        and unconditional ``UniqueConstraint`` objects."""
        found = self._unique_sets
        if found is None:
            opts = self.model._meta
            sets = [frozenset([f.attname]) for f in opts.concrete_fields if f.unique]
            sets += [frozenset(opts.get_field(n).attname for n in names) for names in opts.unique_together]
            for c in opts.constraints:
                if not isinstance(c, models.UniqueConstraint) or not c.fields:
                    continue
                if c.condition is None and not c.expressions and c.deferrable is None:
                    sets.append(frozenset(opts.get_field(n).attname for n in c.fields))
            found = self._unique_sets = sets
        return found

    def _unique_in_database(self, lookup: Mapping[str, Any]) -> bool:
        """Whether a unique field set lies within ``lookup``'s fields: then no
        two rows can match ``lookup`` and the database itself rejects a
        duplicate."""
        found = self._unique_field_sets()
        given = set()
        for name, value in lookup.items():
            f = self.model._meta.pk if name == "pk" else self._field(name)
            # NULLs are distinct to a unique constraint: they prove nothing.
            if f is not None and value is not None:
                given.add(f.attname)
        return any(unique <= given for unique in found)

    def _covering_index(self, lookup: Mapping[str, Any]) -> tuple[Index, tuple[Any, ...]] | None:
        """The cached index over exactly the fields given in ``lookup``, with
        their values: its (short) list holds every row identical to ``lookup``.
        A wider list would be read whole for one row; a SELECT is cheaper."""
        try:
            norm = self._normalise(lookup)
        except (NotCachableException, ValueError):
            return None
        index = self._resolve().by_set.get(frozenset(norm))
        return None if index is None else (index, tuple(norm[a] for a in index))

    def _identical_live_row_cached(self, lookup: Mapping[str, Any]) -> bool:
        """add()'s no-op check from the cache instead of a SELECT, when a
        cached list covers the given fields (and no soft-delete/enabled flag
        could make a matching row need reviving, which only the database
        knows)."""
        if self.soft_delete_field or self.enabled_field or self.disable_cache:
            return False
        covering = self._covering_index(lookup)
        if covering is None:
            return False
        norm = self._normalise(lookup)
        for obj in self._get(*covering):
            if all(getattr(obj, attname) == value for attname, value in norm.items()):
                return True
        return False

    def _constructor_kwargs(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """add()'s keyword arguments as the model's constructor takes them:
        a foreign key given by its id (``follower=5``, which the ORM's filters
        accept but its constructor does not) becomes ``follower_id=5``."""
        out: dict[str, Any] = {}
        for name, value in fields.items():
            f = self._field(name) if name != "pk" else None
            if (
                f is not None
                and f.is_relation
                and (f.many_to_one or f.one_to_one)
                and name == f.name
                and f.attname not in fields
                and value is not None
                and not isinstance(value, models.Model)
            ):
                name = f.attname
            out[name] = value
        return out

    def _live(self, obj: models.Model) -> bool:
        if self.enabled_field and not getattr(obj, self.enabled_field):
            return False
        if self.soft_delete_field and getattr(obj, self.soft_delete_field):
            return False
        return True

    def _identity(self) -> tuple[int, str]:
        st = _store.get_store(self.address() if self.address is not None else None)
        return (id(st), self.engine_label)

    def writers(self) -> list[ListCache]:
        """This client and every other client of the model whose lists this
        one's writes would not reach: another store, or lists of another
        meaning (``filter_out_soft_deletes``). Clients that differ only in
        indexes or record schema share one registry in the cache, and the
        engine keeps all of their lists right from any one of them."""
        out: list[ListCache] = []
        seen: set[tuple[int, str]] = set()
        for client in [self] + [c for c in registry.clients(self.model) if c is not self]:
            if client.disable_cache:
                continue
            try:
                ident = client._identity()
            except ConfigError:
                continue
            if ident not in seen:
                seen.add(ident)
                out.append(client)
        return out

    def _run_safely(self, op: Callable[[], Any]) -> None:
        try:
            report = op()
        except CacheUnavailable as exc:
            logger.warning(
                "listy: cache unavailable, %s written to the database only: %s",
                self.model._meta.label,
                exc,
            )
            _repairs.write_failed(self, None)
            return
        if isinstance(report, dict) and (report.get("failed_keys") or report.get("faults")):
            logger.warning(
                "listy: cache write of %s incomplete (%s); repairing %d keys",
                self.model._meta.label,
                "; ".join(report.get("faults") or []),
                len(report.get("failed_keys") or []),
            )
            # deleted now if the server answers, else queued in the
            # PendingRepair table for every process (listy.repair)
            _repairs.write_failed(self, report)

    def _after_commit(self, using: str, ops: list[Op]) -> None:
        if not ops:
            return

        def run() -> None:
            run._listy_done = True  # type: ignore[attr-defined]
            for client, op in ops:
                client._run_safely(op)

        run._listy_model = self.model  # type: ignore[attr-defined]
        if connections[using].in_atomic_block:
            _tls.pending = True
        transaction.on_commit(run, using=using)

    def _pending_writes(self) -> bool:
        """True inside a transaction that has Listy writes of this model not
        yet committed: a list built now could hold rows that a rollback would
        take back, so reads go to the database without storing anything."""
        if not getattr(_tls, "pending", False):
            return False
        conn = connections[self._resolve().db_alias]
        mine = others = False
        if conn.in_atomic_block:
            for item in conn.run_on_commit:
                func = item[1]
                model = getattr(func, "_listy_model", None)
                if model is None or getattr(func, "_listy_done", False):
                    continue
                if model is self.model:
                    mine = True
                else:
                    others = True
        if not (mine or others) and len(connections.all(initialized_only=True)) <= 1:
            _tls.pending = False
        return mine

    def plan_add(self, obj: models.Model) -> list[Op]:
        """Cache work for a row that entered the lists (run it after commit)."""
        ops: list[Op] = []
        for client in self.writers():
            source = client.source
            row, day, engine = source.row_of(obj), source.day_of(obj), client.engine
            ops.append((client, partial(engine.add, row, source.rows, day)))
        return ops

    def plan_delete(self, obj: models.Model) -> list[Op]:
        """Cache work for a row that left the lists (run it after commit)."""
        ops: list[Op] = []
        for client in self.writers():
            source = client.source
            row, day, engine = source.row_of(obj, for_delete=True), source.day_of(obj), client.engine
            ops.append((client, partial(engine.delete, row, day, True)))
        return ops

    def plan_bury(self, obj: models.Model) -> list[Op]:
        """Cache work for a row deleted while no list held it: final
        tombstones, so that a late frame of an earlier revival stays hidden."""
        ops: list[Op] = []
        for client in self.writers():
            ops.append((client, partial(client.engine.bury, client.source.row_of(obj, for_delete=True))))
        return ops

    def plan_change(
        self, old: dict[ListCache, tuple[Row, bool]], obj: models.Model
    ) -> list[Op]:
        """Cache work for a changed row. ``old`` maps each writer to the row
        as it was and whether its lists held it."""
        ops: list[Op] = []
        for client, (old_row, was_listed) in old.items():
            source, engine = client.source, client.engine
            listed = source.is_listed(obj)
            if was_listed and listed:
                new_row = source.row_of(obj)
                ops.append(
                    (
                        client,
                        partial(
                            engine.update,
                            old_row,
                            new_row,
                            source.rows,
                            source.day_of_row(old_row),
                            source.day_of_row(new_row),
                        ),
                    )
                )
            elif was_listed:
                # not a hard delete: the row may come back (revival)
                ops.append((client, partial(engine.delete, old_row, source.day_of_row(old_row), False)))
            elif listed:
                new_row = source.row_of(obj)
                ops.append((client, partial(engine.add, new_row, source.rows, source.day_of_row(new_row))))
        if ops:
            written = self.snapshot(obj, old)
            ops.append((self, partial(self._settle, obj.pk, written)))
        return ops

    def _settle(self, pk: Any, written: dict[ListCache, tuple[Row, bool]]) -> None:
        """The last step of a change to an existing row, after its frames
        went out: two processes changing one row (a soft delete and a revival,
        two saves) commit in one order and may reach the cache in the other.
        So each looks at the row once more after its own frames landed, and
        if the database holds another state now, writes that state: whoever
        writes last has seen the database's last word. A row gone for good
        needs nothing: its final tombstone wins anywhere."""
        manager = self.model._base_manager.db_manager(self._resolve().db_alias)
        for _ in range(8):
            current = manager.filter(pk=pk).first()
            if current is None:
                return
            now = self.snapshot(current, written)
            if now == written:
                return
            logger.debug("listy: %s pk=%s changed again meanwhile: writing its state now", self.model._meta.label, pk)
            for client, op in self.plan_change(written, current)[:-1]:  # its own settle is this loop
                client._run_safely(op)
            written = now

    def snapshot(
        self, obj: models.Model, clients: Iterable[ListCache] | None = None
    ) -> dict[ListCache, tuple[Row, bool]]:
        """Each writer's (or each of ``clients``') view of ``obj``: its row,
        and whether its lists hold it."""
        if clients is None:
            clients = self.writers()
        return {c: (c.source.row_of(obj), c.source.is_listed(obj)) for c in clients}

    def add(self, **fields: Any) -> models.Model | None:
        """Creates the row (or revives a soft-deleted / disabled one) and puts
        it in every list it belongs to once the transaction commits.

        Returns the instance, or None when an identical live row already
        existed. Unknown fields raise Django's own error before anything is
        written.
        """
        if _recorder.active() is not None:  # the debug-toolbar panel
            return _recorder.record(self, "add", fields, lambda: self.add(**fields))
        resolved = self._resolve()
        model = self.model
        using = resolved.db_alias
        fields = self._constructor_kwargs(fields)
        obj = model(**fields)  # TypeError for unknown fields, before any write
        flags = {self.soft_delete_field, self.enabled_field, self.deleted_timestamp_field}
        lookup = {k: v for k, v in fields.items() if k not in flags}
        if lookup and self._unique_in_database(lookup):
            # The database answers the no-op check itself: a row identical to
            # ``lookup`` would break a unique constraint. Insert first; only a
            # conflict (or another integrity error) takes the path below.
            try:
                with transaction.atomic(using=using):
                    return self._insert(obj, using)
            except IntegrityError:
                obj = model(**fields)
        with transaction.atomic(using=using):
            existing = None
            if lookup and self._identical_live_row_cached(lookup):
                return None
            if lookup and (self.soft_delete_field or self.enabled_field or not self._covering_index(lookup)):
                for candidate in model._base_manager.db_manager(using).filter(**lookup).order_by("-pk")[:20]:
                    if self._live(candidate):
                        return None
                    existing = existing or candidate
            if existing is None:
                return self._insert(obj, using)
            # revive a soft-deleted or disabled row
            before = self.snapshot(existing)
            changed = []
            if self.soft_delete_field:
                setattr(existing, self.soft_delete_field, False)
                changed.append(self.soft_delete_field)
                ts = self.deleted_timestamp_field
                if ts and model._meta.get_field(ts).null:
                    setattr(existing, ts, None)
                    changed.append(ts)
            if self.enabled_field:
                setattr(existing, self.enabled_field, True)
                changed.append(self.enabled_field)
            setattr(existing, SKIP_SIGNALS, True)
            try:
                existing.save(update_fields=changed, using=using)
            finally:
                existing.__dict__.pop(SKIP_SIGNALS, None)
            self._after_commit(using, self.plan_change(before, existing))
            return existing

    def delete(self, **filters: Any) -> bool:
        """Deletes (or soft-deletes) every matching row and removes it from
        every cached list once the transaction commits. True if anything was
        deleted."""
        if _recorder.active() is not None:  # the debug-toolbar panel
            return _recorder.record(self, "delete", filters, lambda: self.delete(**filters))
        resolved = self._resolve()
        model = self.model
        using = resolved.db_alias
        manager = model._base_manager.db_manager(using)
        with transaction.atomic(using=using):
            qs = manager.filter(**filters)
            if self.soft_delete_field:
                qs = qs.filter(**{self.soft_delete_field: False})
            objs = list(qs)
            if objs and connections[using].features.has_select_for_update:
                # Lock the rows by primary key, in pk order (no gap locks, no
                # deadlock between two deletes): a concurrent delete of the
                # same rows waits for this one, then finds them gone, so
                # their tombstones and counter decrements are sent once.
                locked = manager.select_for_update().filter(pk__in=[o.pk for o in objs])
                if self.soft_delete_field:
                    locked = locked.filter(**{self.soft_delete_field: False})
                # the rows as stored under the lock: their flags decide what
                # the cache is told, not a read that came before the lock
                objs = list(locked.order_by("pk"))
            if not objs:
                return False
            pks = [o.pk for o in objs]
            ops: list[Op] = []
            if self.soft_delete_field:
                before = [self.snapshot(o) for o in objs]
                changes: dict[str, Any] = {self.soft_delete_field: True}
                if self.deleted_timestamp_field:
                    changes[self.deleted_timestamp_field] = timezone.now()
                manager.filter(pk__in=pks).update(**changes)
                for i, obj in enumerate(objs):
                    for k, v in changes.items():
                        setattr(obj, k, v)
                    if before:
                        ops.extend(self.plan_change(before[i], obj))
            else:
                for obj in objs:
                    listed = self.source.is_listed(obj)
                    ops.extend(self.plan_delete(obj) if listed else self.plan_bury(obj))
                token = _deleting.set(_deleting.get() | {(model, pk) for pk in pks})
                try:
                    manager.filter(pk__in=pks).delete()
                finally:
                    _deleting.reset(token)
            self._after_commit(using, ops)
        return True

    # ------------------------------------------------------------ maintenance
    def _all_indexes(self) -> list[Index]:
        own = self._resolve().indexes
        try:
            registered = [tuple(i) for i in self._engine().registered_indexes()]
        except CacheUnavailable:
            registered = []
        return list(dict.fromkeys(own + registered))

    def rebuild(self, **filters: Any) -> None:
        """Re-reads from the database every cached list the filters name: the
        list of the index the filters match, and the lists of every index
        with more fields whose other values the database's (or the cached
        list's) rows hold. With no filters, drops every list (``flush_all``)
        so that each is rebuilt on its next read."""
        if self.disable_cache:
            return
        logger.debug("listy: rebuild %s %s", self.model._meta.label, filters or "(everything: a new generation)")
        norm = self._normalise(filters)
        engine = self._engine()
        source = self.source
        if not norm:
            engine.flush()
            return
        keys = frozenset(norm)
        indexes = self._all_indexes()
        attnames = self.schema.attnames
        exact = [i for i in indexes if frozenset(i) == keys]
        wider = [i for i in indexes if keys < frozenset(i)]
        if not exact and not wider:
            raise self._not_cachable(f"no cached index contains the fields ({', '.join(filters)})")
        cached_rows: list[Row] = []
        if exact and wider:
            values = tuple(norm[a] for a in exact[0])
            cached_rows = engine.get(exact[0], values, source.rows).values()
        for index in exact:
            engine.rebuild(index, tuple(norm[a] for a in index), source.rows)
        for index in wider:
            targets = set(source.index_values(index, norm))
            pos = [attnames.index(a) for a in index]
            targets.update(tuple(r[p] for p in pos) for r in cached_rows)
            for values in sorted(targets, key=repr):
                engine.rebuild(index, values, source.rows)

    def flush_all(self) -> None:
        """Drops everything this model has cached, at once (new generation),
        for every client of the model in this process."""
        logger.debug("listy: flush_all %s (a new generation)", self.model._meta.label)
        for client in self.writers():
            client.engine.flush()

    def determine_coherency(self, check_against_db: bool = False) -> Iterator[CoherencyReport]:
        """Yields one report per list that the database's rows make, for
        every index: key, cached, size, count, and (with
        ``check_against_db``) whether the cached list equals the database."""
        engine = self._engine()
        source = self.source
        for index in self._all_indexes():
            for values in source.index_values(index):
                info = engine.inspect(index, values)
                cached = is_list(info)  # a whole list, or the head of a segmented one
                count = 0
                coherent: bool | None = None
                if cached:
                    records = engine.get(index, values, source.rows)
                    cached_rows = records.values()
                    count = len(cached_rows)
                    if check_against_db:
                        db_rows = source.rows(index, values)
                        coherent = {r[0]: r for r in cached_rows} == {r[0]: r for r in db_rows} and len(
                            cached_rows
                        ) == len(db_rows)
                yield CoherencyReport(
                    key=info["key"],
                    cached=cached,
                    size=records.size if cached else int(info.get("size") or 0),  # all parts
                    count=count,
                    coherent=coherent,
                    index=index,
                    values=values,
                )

    def key(self, **filters: Any) -> str:
        """The literal memcached key of the list the filters name."""
        index, values = self._index_for(filters, allow_all=True)
        return self._engine().key(index, values)

    # ------------------------------------------------------------ statistics
    @property
    def hits(self) -> int:
        """Lists served from the cache by this process."""
        state = self._state
        live = state[2].hits if state is not None and state[2] is not None else 0
        return self._stats[0] + live

    @property
    def misses(self) -> int:
        """Lists this process had to build from the database."""
        state = self._state
        live = state[2].misses if state is not None and state[2] is not None else 0
        return self._stats[1] + live

    def reset_local_stats(self) -> None:
        """Sets ``hits`` and ``misses`` back to zero."""
        self._stats = [0, 0]
        state = self._state
        if state is not None and state[2] is not None:
            state[2].reset_stats()


def in_listy_delete(model: type[models.Model], pk: Any) -> bool:
    """True while Listy itself deletes this row (signal handlers skip it)."""
    return (model, pk) in _deleting.get()


__all__ = ["CoherencyReport", "FallbackRecords", "ListCache", "bucket_end"]
