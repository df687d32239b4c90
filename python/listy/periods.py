"""Period counts (SPEC §2: ``daily_count`` ... ``yearly_counts``).

Owns splitting the ``<timestamp_field>=date`` argument from a count's
filters, turning dates into local day numbers and bucket spans, and asking
the engine for the buckets' counts (the database when the cache cannot
answer). Where a bucket starts and ends is the engine's calendar
(``listy._native.bucket_start`` / ``bucket_end``).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from functools import partial
from typing import Any, Literal, cast

from django.conf import settings
from django.utils import timezone

from listy import _native, intents
from listy import recorder as _recorder
from listy.declaration import Declaration
from listy.exceptions import CacheUnavailable, ConfigError
from listy.source import date_of_day, day_number, instant_micros, local_midnight, same_zone

Period = Literal["day", "week", "month", "year"]

_ADVERB = {"day": "daily", "week": "weekly", "month": "monthly", "year": "yearly"}


def bucket_span(period: Period, day: int, zone: datetime.tzinfo | None) -> tuple[tuple[int, int], tuple[int, int]]:
    """The bucket of ``period`` holding ``day``: its local days ``[start, end)``
    and the same span as stored instants (microseconds since the epoch)."""
    start = _native.bucket_start(period, day)
    end = _native.bucket_end(period, start)
    instants = (instant_micros(local_midnight(start, zone)), instant_micros(local_midnight(end, zone)))
    return (start, end), instants


_PERIOD_DOC = """Count of live rows whose ``timestamp_field`` falls in the {what} of
        the date/datetime given as ``<timestamp_field>=value``; the other
        keyword arguments are the list's filters (none: the whole model)."""


_ADVERB = {"day": "daily", "week": "weekly", "month": "monthly", "year": "yearly"}


class PeriodCounts(Declaration):
    """The period counts of a client."""

    def _use_db(self) -> bool:
        """Whether reads go to the database (``ListCache._use_db``)."""
        raise NotImplementedError

    def _unavailable(self, exc: Exception) -> None:
        """Notes a cache fault (``ListCache._unavailable``)."""
        raise NotImplementedError

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
        name = f"{_ADVERB[period]}_count{'s' if many else ''}"
        self._sync_only(name)
        if _recorder.active() is not None:  # the debug-toolbar panel
            return _recorder.record(self, name, filters, lambda: self._period_counts(period, filters, many))
        rest, when = self._split_timestamp(filters)
        index, values = self._index_for(rest, allow_all=True)
        dates = list(when) if many else [when]
        days = [day_number(d) for d in dates]  # in the current time zone
        source = self._resolve().source
        zone = timezone.get_current_timezone() if settings.USE_TZ else None
        spans = [bucket_span(period, d, zone) for d in days]
        counts: list[int] | None = None
        # A list is counted from its own records, in any zone. The model-wide
        # counters bucket by the default time zone: while a request has
        # activated another one, its days are the database's.
        foreign_zone = zone is not None and not same_zone(zone, timezone.get_default_timezone())
        if not (foreign_zone and not index) and not self._use_db():
            counter = partial(source.count, tz=zone)
            try:
                engine = self._engine()
                found = self._field(str(self.timestamp_field))
                timestamp = found.attname if found is not None else str(self.timestamp_field)
                model_counter = partial(intents.model_count, source)
                counts = list(
                    engine.period_counts(index, values, period, timestamp, spans, source.rows, counter, model_counter)
                )
            except CacheUnavailable as exc:
                self._unavailable(exc)
        if counts is None:
            counts = [source.count(index, values, s, e, tz=zone) for (s, e), _ in spans]
        if not many:
            return counts[0]
        return {date_of_day(_native.bucket_start(period, d)): c for d, c in zip(days, counts)}

    def daily_count(self, **filters: Any) -> int:
        return int(self._period_counts("day", filters, False))

    def weekly_count(self, **filters: Any) -> int:
        return int(self._period_counts("week", filters, False))

    def monthly_count(self, **filters: Any) -> int:
        return int(self._period_counts("month", filters, False))

    def yearly_count(self, **filters: Any) -> int:
        return int(self._period_counts("year", filters, False))

    daily_count.__doc__ = _PERIOD_DOC.format(what="local day")
    weekly_count.__doc__ = _PERIOD_DOC.format(what="ISO week")
    monthly_count.__doc__ = _PERIOD_DOC.format(what="month")
    yearly_count.__doc__ = _PERIOD_DOC.format(what="year")

    def daily_counts(self, **filters: Any) -> dict[datetime.date, int]:
        """``{day: count}`` for each date of the iterable given as
        ``<timestamp_field>=iterable`` (a ``dateutil.rrule`` or any iterable
        of dates/datetimes)."""
        return cast("dict[datetime.date, int]", self._period_counts("day", filters, True))

    def weekly_counts(self, **filters: Any) -> dict[datetime.date, int]:
        """``{Monday of the ISO week: count}`` for each date of the iterable."""
        return cast("dict[datetime.date, int]", self._period_counts("week", filters, True))

    def monthly_counts(self, **filters: Any) -> dict[datetime.date, int]:
        """``{1st of the month: count}`` for each date of the iterable."""
        return cast("dict[datetime.date, int]", self._period_counts("month", filters, True))

    def yearly_counts(self, **filters: Any) -> dict[datetime.date, int]:
        """``{January 1st: count}`` for each date of the iterable."""
        return cast("dict[datetime.date, int]", self._period_counts("year", filters, True))


__all__ = ["Period", "PeriodCounts", "bucket_span"]
