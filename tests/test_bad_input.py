"""Bad input gets a clear exception and writes nothing."""

from __future__ import annotations

import pytest
from django.core.exceptions import FieldError

import listy
from tests.testapp.models import Follow

pytestmark = pytest.mark.django_db(transaction=True)


def test_exception_tree():
    assert issubclass(listy.NotCachableException, listy.ListyError)
    assert issubclass(listy.CacheUnavailable, listy.ListyError)
    assert issubclass(listy.DecodeError, listy.ListyError)
    assert issubclass(listy.ConfigError, listy.ListyError)
    assert issubclass(listy.ListyError, Exception)


@pytest.mark.parametrize(
    "filters",
    [
        {"followee": 1},  # a field, but no index on it alone
        {"created": "2024-01-01T00:00:00Z"},
        {"follower": 1, "created": "2024-01-01T00:00:00Z"},
        {},
    ],
)
def test_filters_that_match_no_index(users, filters):
    with pytest.raises(listy.NotCachableException) as info:
        Follow.cache.get(**filters)
    message = str(info.value)
    assert "(pk), (follower), (follower, followee)" in message


def test_unknown_field_names(users):
    with pytest.raises(listy.NotCachableException, match="nope"):
        Follow.cache.get(nope=1)
    with pytest.raises(listy.NotCachableException, match="indexes"):
        Follow.cache.get(follower__username="x")
    with pytest.raises(listy.NotCachableException):
        Follow.cache.count(nope=1)
    with pytest.raises(listy.NotCachableException):
        Follow.cache.get_multi([{"follower": 1}, {"nope": 2}])


def test_the_same_field_twice(users):
    with pytest.raises(listy.NotCachableException):
        Follow.cache.get(follower=1, follower_id=1)


def test_add_with_unknown_fields_writes_nothing(users):
    me, you = users[:2]
    with pytest.raises((TypeError, FieldError)):
        Follow.cache.add(follower=me, followee=you, nope=3)
    assert Follow.objects.count() == 0
    assert Follow.cache.count(follower=me) == 0


def test_delete_with_unknown_fields(users):
    with pytest.raises(FieldError):
        Follow.cache.delete(nope=1)


def test_bad_values(users):
    with pytest.raises((ValueError, listy.ListyError)):
        Follow.cache.get(follower="not a number")


def test_period_counts_need_the_timestamp(users):
    with pytest.raises(TypeError, match="created"):
        Follow.cache.daily_count(follower=users[0])
