"""count() and the daily/weekly/monthly/yearly counters, by local date."""

from __future__ import annotations

import datetime

import pytest
from dateutil.rrule import DAILY, MONTHLY, WEEKLY, YEARLY, rrule
from django.utils import timezone

from tests.testapp.models import Bookmark

pytestmark = pytest.mark.django_db(transaction=True)

PARIS = timezone.get_default_timezone()


def at(y: int, m: int, d: int, h: int = 12, minute: int = 0) -> datetime.datetime:
    """A datetime in the current time zone (Europe/Paris in the tests)."""
    return datetime.datetime(y, m, d, h, minute, tzinfo=PARIS)


@pytest.fixture
def marks(users):
    me, you = users[:2]
    stamps = [
        at(2024, 3, 4),  # Monday
        at(2024, 3, 4, 23, 30),  # still the 4th in Paris, the 4th in UTC too
        at(2024, 3, 5, 0, 30),  # the 5th in Paris, the 4th in UTC
        at(2024, 3, 10),  # Sunday: same ISO week
        at(2024, 3, 11),  # next week
        at(2024, 4, 1),
        at(2025, 1, 1, 0, 15),  # 2024-12-31 in UTC
    ]
    for i, ts in enumerate(stamps):
        Bookmark.cache.add(user=me, url=f"https://{i}", created=ts)
    Bookmark.cache.add(user=you, url="https://you", created=at(2024, 3, 4))
    return me, you


def test_period_counts_by_local_date(marks, django_assert_num_queries):
    me, you = marks
    assert Bookmark.cache.daily_count(user=me, created=at(2024, 3, 4, 8)) == 2
    assert Bookmark.cache.daily_count(user=me, created=datetime.date(2024, 3, 5)) == 1
    assert Bookmark.cache.weekly_count(user=me, created=at(2024, 3, 6)) == 4
    assert Bookmark.cache.monthly_count(user=me, created=at(2024, 3, 20)) == 5
    assert Bookmark.cache.yearly_count(user=me, created=at(2024, 7, 1)) == 6
    assert Bookmark.cache.yearly_count(user=me, created=at(2025, 7, 1)) == 1
    assert Bookmark.cache.daily_count(created=at(2024, 3, 4)) == 3
    with django_assert_num_queries(0):
        assert Bookmark.cache.daily_count(user=me, created=at(2024, 3, 4, 8)) == 2
        assert Bookmark.cache.monthly_count(user=me, created=at(2024, 3, 20)) == 5


def test_naive_datetimes_are_local(marks):
    me, _ = marks
    naive = datetime.datetime(2024, 3, 5, 0, 30)
    assert Bookmark.cache.daily_count(user=me, created=naive) == 1


def test_counts_follow_writes(marks, django_assert_num_queries):
    me, _ = marks
    day = at(2024, 3, 4, 8)
    assert Bookmark.cache.daily_count(user=me, created=day) == 2
    assert Bookmark.cache.count(user=me) == 7
    Bookmark.cache.add(user=me, url="https://new", created=at(2024, 3, 4, 18))
    Bookmark.cache.delete(user=me, url="https://0")
    with django_assert_num_queries(0):
        assert Bookmark.cache.daily_count(user=me, created=day) == 2
        assert Bookmark.cache.count(user=me) == 7
    Bookmark.cache.delete(user=me, url="https://1")
    with django_assert_num_queries(0):
        assert Bookmark.cache.daily_count(user=me, created=day) == 1
        assert Bookmark.cache.count(user=me) == 6


def test_period_counts_over_an_rrule(marks):
    me, _ = marks
    days = rrule(DAILY, dtstart=datetime.datetime(2024, 3, 3), until=datetime.datetime(2024, 3, 6))
    assert Bookmark.cache.daily_counts(user=me, created=days) == {
        datetime.date(2024, 3, 3): 0,
        datetime.date(2024, 3, 4): 2,
        datetime.date(2024, 3, 5): 1,
        datetime.date(2024, 3, 6): 0,
    }
    weeks = rrule(WEEKLY, dtstart=datetime.datetime(2024, 3, 6), count=2)
    assert Bookmark.cache.weekly_counts(user=me, created=weeks) == {
        datetime.date(2024, 3, 4): 4,
        datetime.date(2024, 3, 11): 1,
    }
    months = rrule(MONTHLY, dtstart=datetime.datetime(2024, 2, 15), count=3)
    assert Bookmark.cache.monthly_counts(user=me, created=months) == {
        datetime.date(2024, 2, 1): 0,
        datetime.date(2024, 3, 1): 5,
        datetime.date(2024, 4, 1): 1,
    }
    years = rrule(YEARLY, dtstart=datetime.datetime(2024, 1, 1), count=2)
    assert Bookmark.cache.yearly_counts(user=me, created=years) == {
        datetime.date(2024, 1, 1): 6,
        datetime.date(2025, 1, 1): 1,
    }
    assert Bookmark.cache.daily_counts(created=[datetime.date(2024, 3, 4)]) == {datetime.date(2024, 3, 4): 3}
