"""The Django side of a miss: rows and counts read through the ORM.

:class:`DjangoBackingStore` is what the engine calls when a list or a counter
is not cached. Rows come back as tuples in schema order, newest first
(``order_by("-pk")``), live rows only: ``enabled_field`` True, and
soft-deleted rows left out when ``filter_out_soft_deletes`` is set. It also
turns a model instance into its row for the write path. (Rows become
instances in the engine's builder, ``Engine.instances``, cache or not.)

Day numbers are local dates (``timezone.localtime`` of an aware datetime, a
naive one taken as already local, as Django does) counted from 1970-01-01.
A list's period counts are taken from its records, in whichever zone is
active. The model-wide counters kept in the cache bucket rows by their date
in the *default* time zone (``settings.TIME_ZONE``), whichever zone a request
has activated when it writes, so that every process agrees; a model-wide read
made while another zone is active is counted by the database (see
``ListCache._period_counts``).
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from django.conf import settings
from django.db import connections, models
from django.utils import timezone

from listy import _native
from listy.fetch import max_params, pk_filter
from listy.fetch import values as fetch_values
from listy.schema import PLACEHOLDER, Column, ModelSchema

EPOCH = datetime.date(1970, 1, 1)

Row = tuple[Any, ...]
#: A row as one engine sees it: its values, whether lists hold it, and the
#: day of its timestamp for the model-wide counters (``Engine.change``).
State = tuple[Row, bool, "int | None"]


def day_number(value: datetime.date | datetime.datetime, tz: datetime.tzinfo | None = None) -> int:
    """The local date of ``value`` as days since 1970-01-01: its date in
    ``tz`` (default: the current time zone) when it is an aware datetime."""
    if isinstance(value, datetime.datetime):
        if timezone.is_aware(value):
            value = timezone.localtime(value, tz) if settings.USE_TZ else value
        value = value.date()
    elif not isinstance(value, datetime.date):
        raise TypeError(f"expected a date or datetime, got {type(value).__name__}")
    return (value - EPOCH).days


class DayCache:
    """``day_number(value, tz)`` for many values: a zone's UTC offset is
    looked up once per hour of UTC time (and reused for that hour when it is
    the same at both ends of the hour: no zone changes its offset twice
    within one hour), so a batch of 5,000 timestamps costs a few lookups,
    not 5,000 conversions. Naive datetimes and dates go through
    ``day_number`` itself."""

    def __init__(self, tz: datetime.tzinfo | None) -> None:
        self.tz = tz
        self._aware = bool(settings.USE_TZ)
        self._offsets: dict[int, int | None] = {}

    def __call__(self, value: datetime.date | datetime.datetime | None) -> int | None:
        if value is None:
            return None
        if not (self._aware and type(value) is datetime.datetime and value.tzinfo is not None):
            return day_number(value, self.tz)
        delta = value - _UTC_EPOCH
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        hour = micros // _HOUR
        if hour in self._offsets:
            offset = self._offsets[hour]
        else:
            offset = self._offsets[hour] = self._offset(hour)
        if offset is None:  # the offset changes within this hour
            return day_number(value, self.tz)
        return (micros + offset) // _DAY

    def many(self, values: Iterable[datetime.date | datetime.datetime | None]) -> list[int | None]:
        """``[self(v) for v in values]``, the arithmetic of UTC datetimes
        (what PostgreSQL's rows hold) done natively, the zone's offsets
        still looked up here, once per hour."""
        if not self._aware:
            return [self(v) for v in values]
        return _native.utc_days(values, self._offset_of, self)

    def _offset_of(self, hour: int) -> int | None:
        if hour not in self._offsets:
            self._offsets[hour] = self._offset(hour)
        return self._offsets[hour]

    def _offset(self, hour: int) -> int | None:
        tz = self.tz or timezone.get_current_timezone()
        start = _UTC_EPOCH + datetime.timedelta(microseconds=hour * _HOUR)
        end = start + datetime.timedelta(microseconds=_HOUR - 1)
        a, b = start.astimezone(tz).utcoffset(), end.astimezone(tz).utcoffset()
        if a is None or a != b:
            return None
        return (a.days * 86_400 + a.seconds) * 1_000_000 + a.microseconds


_HOUR = 3_600_000_000
_DAY = 86_400_000_000
_UTC_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def date_of_day(day: int) -> datetime.date:
    """The date of a day number."""
    return EPOCH + datetime.timedelta(days=day)


def local_midnight(day: int, tz: datetime.tzinfo | None = None) -> datetime.datetime:
    """The start of a local day (in ``tz``, default: the current time zone)
    as a datetime of the kind the database holds."""
    start = datetime.datetime.combine(date_of_day(day), datetime.time.min)
    if settings.USE_TZ:
        return timezone.make_aware(start, tz)
    return start


def instant_micros(value: datetime.datetime) -> int:
    """``value`` as the codec stores a datetime: microseconds since the epoch,
    an aware datetime taken to UTC, a naive one as it is."""
    if timezone.is_aware(value):
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    delta = value - datetime.datetime(1970, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def same_zone(a: datetime.tzinfo, b: datetime.tzinfo) -> bool:
    """Whether two time zones are one (``ZoneInfo`` keys, or equal objects)."""
    if a is b or a == b:
        return True
    key = getattr(a, "key", None)
    return key is not None and key == getattr(b, "key", None)


def _counter_zone() -> datetime.tzinfo | None:
    """The zone the cached counters bucket by: the default time zone."""
    return timezone.get_default_timezone() if settings.USE_TZ else None


def _from_db(column: Column, value: Any) -> Any:
    if value is None:
        return None
    if column.kind == "bytes" and not isinstance(value, bytes):
        return bytes(value)
    return value


_offline = threading.local()


class NeedsDatabase(Exception):
    """Raised by a read of :class:`DjangoBackingStore` made under
    :func:`cache_only`: the call cannot be answered from the cache alone
    (the async calls then run it again where the ORM may be used)."""


@contextlib.contextmanager
def cache_only() -> Iterator[None]:
    """Within the block (in this thread), every database read of a
    ``DjangoBackingStore`` raises :class:`NeedsDatabase` instead of running:
    the async calls try the cache in a worker thread this way, so that a hit
    never reaches the database."""
    before = getattr(_offline, "on", False)
    _offline.on = True
    try:
        yield
    finally:
        _offline.on = before


def _check_online() -> None:
    if getattr(_offline, "on", False):
        raise NeedsDatabase("a database read under cache_only()")


class DjangoBackingStore:
    """The rows and counts of one model's lists, read from the database.

    ``rows`` is the engine's ``Loader`` and ``count`` its ``CountLoader``.
    """

    def __init__(
        self,
        model: type[models.Model],
        schema: ModelSchema,
        *,
        soft_delete_field: str | None = None,
        deleted_timestamp_field: str | None = None,
        enabled_field: str | None = None,
        timestamp_field: str | None = None,
        filter_out_soft_deletes: bool = True,
        db_alias: str = "default",
    ) -> None:
        self.model = model
        self.schema = schema
        self.soft_delete_field = soft_delete_field
        self.deleted_timestamp_field = deleted_timestamp_field
        self.enabled_field = enabled_field
        self.timestamp_field = timestamp_field
        self.filter_out_soft_deletes = filter_out_soft_deletes
        self.db_alias = db_alias
        self._paths = schema.paths
        self._columns = schema.columns
        self._index = {c.attname: i for i, c in enumerate(schema.columns)}
        self._needs_conversion = any(c.kind == "bytes" for c in schema.columns)
        self._ts_attname = (
            model._meta.get_field(timestamp_field).attname if timestamp_field else None  # type: ignore[union-attr]
        )

    # ------------------------------------------------------------ queries
    def all_rows_queryset(self) -> models.QuerySet[Any]:
        """Every row of the model, listed or not."""
        return self.model._base_manager.db_manager(self.db_alias).all()

    def live_filter(self) -> dict[str, Any]:
        """The filter that selects the rows lists hold."""
        flt: dict[str, Any] = {}
        if self.enabled_field:
            flt[self.enabled_field] = True
        if self.soft_delete_field and self.filter_out_soft_deletes:
            flt[self.soft_delete_field] = False
        return flt

    def live_queryset(self) -> models.QuerySet[Any]:
        """The rows lists hold."""
        return self.all_rows_queryset().filter(**self.live_filter())

    def _convert(self, rows: Iterable[Row]) -> list[Row]:
        if not self._needs_conversion:
            return [tuple(r) for r in rows]
        cols = self._columns
        return [tuple(_from_db(c, v) for c, v in zip(cols, r)) for r in rows]

    def rows(self, fields: Sequence[str], values: Sequence[Any]) -> list[Row]:
        """The live rows of one list, newest first, as tuples in schema order."""
        _check_online()
        qs = self.live_queryset().filter(**dict(zip(fields, values)))
        # a cold build of a big list: psycopg's C loaders where they give
        # what Django's do (listy.fetch)
        return self._convert(fetch_values(qs.order_by("-pk").values_list(*self._paths), self.db_alias))

    __call__ = rows

    def count(
        self,
        fields: Sequence[str],
        values: Sequence[Any],
        start_day: int | None = None,
        end_day: int | None = None,
        *,
        tz: datetime.tzinfo | None = None,
    ) -> int:
        """Live rows of one list, optionally those whose timestamp's local
        date is in ``[start_day, end_day)``: local to ``tz``, by default the
        default time zone, which the cached counters use."""
        return self.count_queryset(fields, values, start_day, end_day, tz=tz).count()

    def count_queryset(
        self,
        fields: Sequence[str],
        values: Sequence[Any],
        start_day: int | None = None,
        end_day: int | None = None,
        *,
        tz: datetime.tzinfo | None = None,
    ) -> models.QuerySet[Any]:
        """The rows :meth:`count` counts."""
        _check_online()
        tz = tz or (timezone.get_default_timezone() if settings.USE_TZ else None)
        qs = self.live_queryset().filter(**dict(zip(fields, values)))
        if start_day is not None or end_day is not None:
            if not self._ts_attname:
                raise ValueError(f"{self.model._meta.label} has no timestamp_field")
            if start_day is not None:
                qs = qs.filter(**{f"{self._ts_attname}__gte": local_midnight(start_day, tz)})
            if end_day is not None:
                qs = qs.filter(**{f"{self._ts_attname}__lt": local_midnight(end_day, tz)})
        return qs

    def stored_row(self, pk: Any, *, lock: bool = False) -> tuple[Row, bool] | None:
        """The row with primary key ``pk`` as stored now and whether lists
        hold it, or None. ``lock``: read it ``FOR UPDATE`` (inside a
        transaction, where the database has row locks), so that no other
        writer changes it before this transaction ends."""
        _check_online()
        extra = [f for f in (self.enabled_field, self.soft_delete_field) if f]
        qs = self.all_rows_queryset().filter(pk=pk)
        if lock:
            qs = locked(qs)
        found = qs.values_list(*self._paths, *extra).first()
        if found is None:
            return None
        n = len(self._paths)
        row = self._convert([found[:n]])[0]
        flags = dict(zip(extra, found[n:]))
        return row, self._listed(flags)

    def stored_state(self, pk: Any, *, lock: bool = False) -> State | None:
        """The row with primary key ``pk`` as stored now, as the engine's
        settle read wants it (``(row, listed, day)``), or None when gone."""
        found = self.stored_row(pk, lock=lock)
        if found is None:
            return None
        row, listed = found
        return row, listed, self.day_of_row(row)

    def state_after(self, instance: models.Model, before: State, update_fields: Iterable[str]) -> State:
        """The row as stored after ``instance.save(update_fields=...)``: the
        saved fields from the instance, every other column as it was stored
        (a stale instance's other fields were not written)."""
        saved = set()
        for name in update_fields:
            f = self.model._meta.get_field(name)
            saved.add(f.attname)  # type: ignore[union-attr]  # update_fields names concrete fields only
        mine = self.row_of(instance)
        row = tuple(
            mine[i] if (c.fk is None and c.attname in saved) or (c.fk is not None and c.fk.attname in saved) else v
            for i, (c, v) in enumerate(zip(self._columns, before[0]))
        )
        flags = {f: row[self._index[f]] for f in (self.enabled_field, self.soft_delete_field) if f}
        return row, self._listed(flags), self.day_of_row(row)

    def stored_states(
        self,
        rows: models.QuerySet[Any] | Iterable[Any],
        *,
        lock: bool = False,
        using: str | None = None,
    ) -> dict[Any, State]:
        """The rows of a queryset of the model, or with these primary keys,
        as stored now: ``{pk: (row, listed, day)}``, rows that are gone left
        out. One statement (per ``max_query_params`` primary keys on a
        backend that bounds them). ``lock``: ``SELECT ... FOR UPDATE`` of
        the model's rows (where the backend has it), in primary-key order, so
        that two batched writers of one row wait for each other."""
        using = using or self.db_alias
        extra = [f for f in (self.enabled_field, self.soft_delete_field) if f]
        cols = [*self._paths, *extra]
        if isinstance(rows, models.QuerySet):
            queries = [self._own_rows(rows, using)]
        else:
            queries = pk_filter(self.all_rows_queryset().using(using), list(rows), using)
        out: dict[Any, State] = {}
        for qs in queries:
            if lock:
                qs = _locked(qs, using)
            out.update(self.states_of(fetch_values(qs.order_by("pk").values_list(*cols), using)))
        return out

    def state_columns(self) -> list[str] | None:
        """The columns a state is made of (``states_of``'s input), when they
        are all the model's own (no inlined field read through a join)."""
        local = {f.attname for f in self.model._meta.local_concrete_fields}
        names = {f.name: f.attname for f in self.model._meta.local_concrete_fields}
        cols = [*self._paths, *(f for f in (self.enabled_field, self.soft_delete_field) if f)]
        out = [c if c in local else names.get(c, "") for c in cols]
        return None if "" in out else out

    def states_of(self, found: Iterable[Row]) -> dict[Any, State]:
        """``{pk: (row, listed, day)}`` of rows read as ``state_columns``
        (the schema's paths, then the enabled and soft-delete flags)."""
        extra = [f for f in (self.enabled_field, self.soft_delete_field) if f]
        n = len(self._paths)
        listed = self._listed
        found = list(found)
        if extra:
            flags = [listed(dict(zip(extra, r[n:]))) for r in found]
            found = [r[:n] for r in found]
        else:
            flags = [True] * len(found)
        rows = self._convert(found)
        return {row[0]: (row, live, day) for row, live, day in zip(rows, flags, self._days_of(rows))}

    def _days_of(self, rows: list[Row]) -> list[int | None]:
        """``day_of_row`` of many rows (see :class:`DayCache`)."""
        if not self._ts_attname:
            return [None] * len(rows)
        i = self._index[self._ts_attname]
        return DayCache(_counter_zone()).many([row[i] for row in rows])

    def states_by_pk(self, pks: Sequence[Any]) -> list[State]:
        """The engine's batched settle read (``Engine.change_many``): the
        states of the rows with these primary keys still stored."""
        return list(self.stored_states(pks).values())

    def _own_rows(self, qs: models.QuerySet[Any], using: str) -> models.QuerySet[Any]:
        """``qs`` as a queryset the state read can run: as it is when it is
        a plain filter, else the model's rows whose pk it selects."""
        q = qs.query
        if q.is_sliced or q.distinct or q.combinator or q.annotations or q.group_by is not None:
            return self.all_rows_queryset().using(using).filter(pk__in=list(qs.values_list("pk", flat=True)))
        return qs.using(using)

    def state_of(self, instance: models.Model, *, for_delete: bool = False) -> State:
        """``instance`` as ``(row, listed, day)`` for ``Engine.change``."""
        row = self.row_of(instance, for_delete=for_delete)
        return row, self.is_listed(instance), self.day_of_row(row)

    def index_values(self, fields: Sequence[str], filters: dict[str, Any] | None = None) -> list[Row]:
        """The distinct values of ``fields`` among live rows (the lists the
        database's rows make), optionally narrowed by ``filters``."""
        _check_online()
        qs = self.live_queryset().filter(**(filters or {}))
        return [tuple(r) for r in qs.order_by().values_list(*fields).distinct()]

    # ------------------------------------------------------------ instances → rows
    def _listed(self, flags: dict[str, Any]) -> bool:
        if self.enabled_field and not flags.get(self.enabled_field):
            return False
        if self.soft_delete_field and self.filter_out_soft_deletes and flags.get(self.soft_delete_field):
            return False
        return True

    def is_listed(self, instance: models.Model) -> bool:
        """Whether lists hold ``instance`` (enabled, not filtered out)."""
        flags = {
            f: getattr(instance, f) for f in (self.enabled_field, self.soft_delete_field) if f
        }
        return self._listed(flags)

    def row_of(self, instance: models.Model, *, for_delete: bool = False) -> Row:
        """``instance`` as a row in schema order.

        Values are brought to what the database returns (aware UTC datetimes,
        quantised decimals, ...). Inlined foreign-key fields come from the
        related instance when it is loaded, else from one query; when the
        related row is gone (``for_delete``), placeholders stand in.
        """
        out: list[Any] = []
        related_values: dict[str, dict[str, Any] | None] = {}
        for col in self._columns:
            if col.fk is None:
                out.append(normalise(col, getattr(instance, col.attname)))
                continue
            fk = col.fk
            if fk.attname not in related_values:
                related_values[fk.attname] = self._related_values(instance, fk)
            values = related_values[fk.attname]
            if values is None:
                out.append(PLACEHOLDER[col.kind] if for_delete and not col.nullable else None)
            else:
                out.append(normalise(col, values[col.field.attname]))
        return tuple(out)

    def _related_values(self, instance: models.Model, fk: Any) -> dict[str, Any] | None:
        # fk: a ForeignKey (is_cached, target_field), typed Any as django-stubs' Field has neither
        value = getattr(instance, fk.attname)
        if value is None:
            return None
        cols = [c for c in self._columns if c.fk is fk]
        if fk.is_cached(instance):
            rel = fk.get_cached_value(instance)
            if rel is not None:
                return {c.field.attname: getattr(rel, c.field.attname) for c in cols}
        rel_model = fk.related_model
        names = [c.field.attname for c in cols]
        found = (
            rel_model._base_manager.db_manager(self.db_alias)
            .filter(**{fk.target_field.attname: value})
            .values_list(*names)
            .first()
        )
        if found is None:
            return None
        return dict(zip(names, found))

    def day_of_row(self, row: Row) -> int | None:
        """The day of the row's timestamp field in the default time zone
        (the cached counters' buckets), or None."""
        if not self._ts_attname:
            return None
        value = row[self._index[self._ts_attname]]
        return None if value is None else day_number(value, _counter_zone())

    def day_of(self, instance: models.Model) -> int | None:
        """The day of the instance's timestamp field in the default time
        zone (the cached counters' buckets), or None."""
        if not self._ts_attname:
            return None
        value = getattr(instance, self._ts_attname)
        return None if value is None else day_number(value, _counter_zone())


def locked(qs: models.QuerySet[Any]) -> models.QuerySet[Any]:
    """``qs`` read ``FOR UPDATE`` where the database has row locks (only the
    model's own rows where it can say so: inlined fields join other tables)."""
    return _locked(qs, qs.db)


def _locked(qs: models.QuerySet[Any], using: str) -> models.QuerySet[Any]:
    """``qs`` with ``FOR UPDATE`` of the model's own rows, where the backend
    locks rows (``of=("self",)`` where it can name them: an inlined column's
    outer join must not be locked)."""
    features = connections[using].features
    if not features.has_select_for_update:
        return qs
    if features.has_select_for_update_of:
        return qs.select_for_update(of=("self",))
    return qs.select_for_update()


def normalise(column: Column, value: Any) -> Any:
    """A Python value as the database would hand it back for ``column``."""
    if value is None:
        return None
    kind = column.kind
    f = column.field
    if kind == "int":
        return value if type(value) is int else int(value)
    if kind == "datetime":
        if not isinstance(value, datetime.datetime):
            value = f.to_python(value)
        if settings.USE_TZ:
            if timezone.is_naive(value):
                value = timezone.make_aware(value, timezone.get_default_timezone())
            return value.astimezone(datetime.UTC)
        if timezone.is_aware(value):
            value = timezone.make_naive(value, timezone.get_default_timezone())
        return value
    if kind == "bool":
        return bool(value)
    if kind == "str":
        return value if isinstance(value, str) else str(f.get_prep_value(value))
    if kind == "float":
        return float(value)
    if kind == "decimal":
        value = f.to_python(value)
        places = getattr(f, "decimal_places", None)
        if places is not None and value.is_finite():
            value = value.quantize(decimal.Decimal(1).scaleb(-places))
        return value
    if kind == "bytes":
        return bytes(value)
    if kind in ("date", "time", "uuid"):
        if kind == "date" and isinstance(value, datetime.datetime):
            return value.date()
        return f.to_python(value)
    return value
