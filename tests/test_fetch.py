"""The batched write paths' fast reads (``listy.fetch``, ``DayCache``) give
exactly what the plain ORM reads and ``day_number`` give.

Runs on the database ``LISTY_TEST_DB`` selects; the PostgreSQL-only paths
(psycopg's own timestamptz loader, ``= ANY``, ``DELETE ... RETURNING``) are
compared with Django's own reads there.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
import zoneinfo

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import override_settings

from listy import fetch
from listy.source import DayCache, day_number
from tests.testapp.models import Follow, Sample

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("zone_name", ["Europe/Paris", "America/St_Johns", "Australia/Lord_Howe", "Asia/Kathmandu", "UTC"])
def test_day_cache_gives_day_number(zone_name):
    """Every 7 minutes over two years (every DST change, zones with half-hour
    and 45-minute offsets, Lord Howe's half-hour DST), and again through one
    cache: the same day as ``day_number``."""
    tz = zoneinfo.ZoneInfo(zone_name)
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    days = DayCache(tz)
    step = datetime.timedelta(minutes=7, seconds=13, microseconds=17)
    value = start
    checked = 0
    values: list[datetime.datetime | datetime.date | None] = []
    while value < start + datetime.timedelta(days=730):
        for v in (value, value.astimezone(tz)):
            assert days(v) == day_number(v, tz), v
            values.append(v)
        value += step
        checked += 1
    assert checked > 140_000
    assert days(None) is None
    assert days(datetime.date(2025, 3, 30)) == day_number(datetime.date(2025, 3, 30), tz)
    # the batched form (UTC datetimes' arithmetic done natively), through a
    # fresh cache and through the one used above
    values += [None, datetime.date(2025, 3, 30), datetime.datetime(2025, 3, 30, 23, 59, 59, 999999)]
    expected = [None if v is None else day_number(v, tz) for v in values]
    assert DayCache(tz).many(values) == expected
    assert days.many(values) == expected


def test_day_cache_of_naive_values():
    """USE_TZ off: naive datetimes, the day as written."""
    with override_settings(USE_TZ=False):
        days = DayCache(None)
        value = datetime.datetime(2025, 3, 30, 23, 59)
        assert days(value) == day_number(value) == (datetime.date(2025, 3, 30) - datetime.date(1970, 1, 1)).days
        # an aware value with USE_TZ off: its own date, as day_number takes it
        aware = datetime.datetime(2025, 3, 30, 23, 59, tzinfo=datetime.UTC)
        assert days.many([value, aware, None]) == [day_number(value), day_number(aware), None]


@pytest.fixture
def samples(transactional_db: None) -> list[Sample]:
    owner = User.objects.create(username="owner")
    made = [
        Sample.objects.create(
            owner=owner,
            flag=bool(i % 2),
            ratio=i / 3,
            name=f"n{i} é",
            blob=bytes([i, 0, 255]),
            at=datetime.datetime(2025, 3, 30, 0, 30, i, 17, tzinfo=datetime.UTC),
            day=datetime.date(2025, 1, 1 + i) if i else None,
            tm=datetime.time(1, 2, i) if i else None,
            amount=decimal.Decimal(f"{i}.5") if i else None,
            uid=uuid.uuid4() if i else None,
            data={"i": i, "l": [1, None]} if i else None,
            count=i if i else None,
        )
        for i in range(5)
    ]
    return made


def test_values_are_the_orms(samples):
    paths = Sample.cache.source._paths
    qs = Sample.objects.order_by("pk").values_list(*paths)
    assert fetch.values(qs, connection.alias) == [tuple(r) for r in qs]


def test_pk_filter_is_pk_in(samples):
    pks = [s.pk for s in samples[1:4]] + [10**9]
    base = Sample.objects.all()
    found = [pk for q in fetch.pk_filter(base, pks, connection.alias) for pk in q.values_list("pk", flat=True)]
    assert sorted(found) == sorted(base.filter(pk__in=pks).values_list("pk", flat=True)) == [s.pk for s in samples[1:4]]
    assert fetch.pk_filter(base, [], connection.alias) == []


def test_stored_states_by_pk_and_by_queryset_agree(samples):
    source = Sample.cache.source
    by_pk = source.stored_states([s.pk for s in samples])
    by_qs = source.stored_states(Sample.objects.all())
    assert by_pk == by_qs
    assert sorted(by_pk) == [s.pk for s in samples]
    for s in samples:
        row, listed, _day = by_pk[s.pk]
        assert listed is True
        assert row == source.row_of(Sample.objects.get(pk=s.pk))


def test_delete_returning_gives_the_rows_as_they_were(samples):
    if connection.vendor != "postgresql":
        pytest.skip("DELETE ... RETURNING: PostgreSQL")
    source = Sample.cache.source
    cols = source.state_columns()
    assert cols is not None
    before = source.stored_states(Sample.objects.all())
    with transaction.atomic():
        rows = fetch.delete_returning(Sample.objects.filter(flag=True), connection.alias, cols)
    assert source.states_of(rows) == {pk: s for pk, s in before.items() if s[0][2] is True}
    assert not Sample.objects.filter(flag=True).exists()
    assert fetch.delete_returning(Sample.objects.filter(pk__in=[]), connection.alias, cols) == []


def test_state_columns_leave_out_inlined_fields():
    from tests.testapp.models import Comment

    assert Follow.cache.source.state_columns() == ["id", "created", "follower_id", "followee_id"]
    assert Comment.cache.source.state_columns() is None
