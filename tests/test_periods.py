"""daily/weekly/monthly/yearly count(s) across day, ISO week, month and year
boundaries, daylight-saving changes and time zones.

The expected counts are computed here in Python from the timestamps: a
datetime falls in the day it has in the current time zone (naive ones are
taken as already in it), buckets start on the day, the ISO week's Monday,
the 1st of the month and January 1st.
"""

from __future__ import annotations

import datetime
import zoneinfo

import pytest
from dateutil.rrule import DAILY, MONTHLY, WEEKLY, YEARLY, rrule
from django.test import override_settings
from django.utils import timezone

from tests.testapp.models import Bookmark

pytestmark = pytest.mark.django_db(transaction=True)

PERIODS = ("day", "week", "month", "year")
ONE_US = datetime.timedelta(microseconds=1)

#: Local midnights that start a day, an ISO week, a month or a year, around
#: the 2024 daylight-saving changes of Europe and the USA, a leap day, and an
#: ISO week that straddles a new year (2024-12-30 is the Monday of 2025-W01).
BOUNDARIES = [
    datetime.date(2024, 1, 1),
    datetime.date(2024, 2, 29),
    datetime.date(2024, 3, 1),
    datetime.date(2024, 3, 10),  # USA: DST starts
    datetime.date(2024, 3, 11),  # a Monday
    datetime.date(2024, 3, 31),  # Europe: DST starts (a 23-hour day)
    datetime.date(2024, 4, 1),
    datetime.date(2024, 10, 27),  # Europe: DST ends (a 25-hour day)
    datetime.date(2024, 10, 28),
    datetime.date(2024, 11, 3),  # USA: DST ends
    datetime.date(2024, 12, 30),
    datetime.date(2025, 1, 1),
    datetime.date(2025, 1, 6),
]

ZONES = ["Europe/Paris", "America/New_York", "Asia/Kolkata", "Pacific/Kiritimati", "UTC"]


def bucket(period: str, day: datetime.date) -> datetime.date:
    if period == "day":
        return day
    if period == "week":
        return day - datetime.timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def local_day(value: datetime.date | datetime.datetime) -> datetime.date:
    """The day of ``value`` in the current time zone (what the SPEC says)."""
    if isinstance(value, datetime.datetime):
        if timezone.is_aware(value):
            value = timezone.localtime(value)
        return value.date()
    return value


def stamps_around(zone: zoneinfo.ZoneInfo) -> list[datetime.datetime]:
    """The last microsecond before, and the first instant of, each boundary
    (local to ``zone``), plus a noon, as aware UTC datetimes."""
    out = []
    for day in BOUNDARIES:
        midnight = datetime.datetime.combine(day, datetime.time.min, tzinfo=zone)
        out += [midnight - ONE_US, midnight, midnight + datetime.timedelta(hours=12)]
    return [s.astimezone(datetime.UTC) for s in out]


def queries(zone: zoneinfo.ZoneInfo) -> list:
    """Dates, naive and aware datetimes (in several zones) to ask about."""
    out: list = []
    for day in BOUNDARIES:
        out.append(day)
        out.append(day - datetime.timedelta(days=1))
        out.append(datetime.datetime.combine(day, datetime.time(0, 0)))  # naive: local
        out.append(datetime.datetime.combine(day, datetime.time.min, tzinfo=zone) - ONE_US)
        out.append(datetime.datetime.combine(day, datetime.time(23, 30), tzinfo=zoneinfo.ZoneInfo("UTC")))
        out.append(datetime.datetime.combine(day, datetime.time(1, 0), tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo")))
    return out


def expected(period: str, stamps: list[datetime.datetime], when) -> int:
    key = bucket(period, local_day(when))
    return sum(1 for s in stamps if bucket(period, local_day(s)) == key)


def call(period: str, many: bool, **kwargs):
    name = {"day": "daily", "week": "weekly", "month": "monthly", "year": "yearly"}[period]
    return getattr(Bookmark.cache, f"{name}_count{'s' if many else ''}")(**kwargs)


def check_all(me, stamps: list[datetime.datetime], asks: list) -> None:
    for period in PERIODS:
        for when in asks:
            assert call(period, False, user=me, created=when) == expected(period, stamps, when), (period, when)
        got = call(period, True, user=me, created=asks)
        want = {bucket(period, local_day(w)): expected(period, stamps, w) for w in asks}
        assert got == want, period
        # the whole model (no filters)
        assert call(period, True, created=asks) == want, period


@pytest.mark.parametrize("zone_name", ZONES)
def test_periods_across_boundaries(users, zone_name, django_assert_num_queries):
    zone = zoneinfo.ZoneInfo(zone_name)
    me = users[0]
    with override_settings(TIME_ZONE=zone_name):
        stamps = stamps_around(zone)
        half = len(stamps) // 2
        for i, ts in enumerate(stamps[:half]):
            Bookmark.cache.add(user=me, url=f"https://{i}", created=ts)
        asks = queries(zone)
        check_all(me, stamps[:half], asks)  # cold: the database counts
        # writes after the counters exist: through Listy and outside it
        for i, ts in enumerate(stamps[half:], start=half):
            if i % 2:
                Bookmark.cache.add(user=me, url=f"https://{i}", created=ts)
            else:
                Bookmark.objects.create(user=me, url=f"https://{i}", created=ts)
        gone = stamps[0], stamps[half + 1]
        Bookmark.cache.delete(user=me, url="https://0")
        Bookmark.objects.get(url=f"https://{half + 1}").delete()
        live = [s for s in stamps if s not in gone]
        with django_assert_num_queries(0):
            check_all(me, live, asks)  # warm: every counter from the cache
        # moving a row across a boundary moves it between buckets
        moved = Bookmark.objects.get(url="https://1")
        old = moved.created
        moved.created = old + datetime.timedelta(days=40)
        moved.save()
        live = [s for s in live if s != old] + [moved.created]
        with django_assert_num_queries(0):
            check_all(me, live, asks)
        Bookmark.cache.flush_all()
        check_all(me, live, asks)  # rebuilt from the database


def test_an_rrule_with_time_zone_aware_occurrences(users):
    me = users[0]
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    stamps = stamps_around(paris)
    for i, ts in enumerate(stamps):
        Bookmark.cache.add(user=me, url=f"https://{i}", created=ts)
    for freq, period in ((DAILY, "day"), (WEEKLY, "week"), (MONTHLY, "month"), (YEARLY, "year")):
        for tz in (paris, zoneinfo.ZoneInfo("America/Los_Angeles"), None):
            start = datetime.datetime(2024, 2, 27, 23, 30, tzinfo=tz)
            rule = rrule(freq, dtstart=start, count=40)
            occurrences = list(rule)
            got = call(period, True, user=me, created=rule)
            assert got == {bucket(period, local_day(w)): expected(period, stamps, w) for w in occurrences}


def test_the_current_time_zone_decides_the_day(users, django_assert_num_queries):
    """With USE_TZ a datetime falls in the day it has in the *current* time
    zone (``timezone.activate``), whatever zone wrote the rows."""
    me = users[0]
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    tokyo = zoneinfo.ZoneInfo("Asia/Tokyo")
    stamps = stamps_around(paris) + stamps_around(tokyo)
    for i, ts in enumerate(stamps):
        with timezone.override(tokyo if i % 2 else paris):  # writes under either zone
            Bookmark.cache.add(user=me, url=f"https://{i}", created=ts)
    for zone in (None, tokyo, zoneinfo.ZoneInfo("America/Los_Angeles")):
        with timezone.override(zone):
            check_all(me, stamps, (queries(paris) + queries(tokyo))[::4])
    # the default zone's counters are still served from the cache
    check_all(me, stamps, queries(paris))
    with django_assert_num_queries(0):
        check_all(me, stamps, queries(paris))


@pytest.mark.parametrize("zone_name", ["Europe/Paris", "America/New_York"])
def test_periods_without_use_tz(users, zone_name, django_assert_num_queries):
    me = users[0]
    with override_settings(USE_TZ=False, TIME_ZONE=zone_name):
        naive = [s.astimezone(zoneinfo.ZoneInfo(zone_name)).replace(tzinfo=None) for s in stamps_around(zoneinfo.ZoneInfo(zone_name))]
        for i, ts in enumerate(naive):
            Bookmark.cache.add(user=me, url=f"https://{i}", created=ts)
        asks = [q for q in queries(zoneinfo.ZoneInfo(zone_name)) if not isinstance(q, datetime.datetime) or timezone.is_naive(q)]
        check_all(me, naive, asks)
        Bookmark.cache.add(user=me, url="https://late", created=datetime.datetime(2024, 12, 31, 23, 59, 59, 999999))
        naive.append(datetime.datetime(2024, 12, 31, 23, 59, 59, 999999))
        with django_assert_num_queries(0):
            check_all(me, naive, asks)
        assert timezone.is_naive(Bookmark.cache.get(user=me)[0].created)
