"""A model you do not own: ``listy.cache_model(User, [("pk",)])`` serves
``User.objects.get(pk=...)`` and ``follow.followee`` from the cache, keeps
``User.objects``' own methods, and keeps the lists right through
``save()``/``delete()``. Cached lists also work with Django's ``Paginator``."""

from __future__ import annotations

import gc

import pytest
from django.contrib.auth.models import User, UserManager
from django.core.paginator import Paginator
from django.db import connection
from django.test.utils import CaptureQueriesContext

import listy
from listy.adopt import uncache_model
from listy.exceptions import ConfigError
from tests.conftest import sql_statements
from tests.testapp.models import Follow

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cached_users():  # type: ignore[no-untyped-def]
    cache = listy.cache_model(User, [("pk",)])
    yield cache
    uncache_model(User)
    del cache
    gc.collect()  # the registry holds clients weakly (pytest may still hold this one)
    from django.db.models.signals import pre_delete, pre_save

    assert "cache" not in User.__dict__
    assert not pre_delete.has_listeners(User)  # Django's fast deletes are back
    assert not pre_save.has_listeners(User) or not any(
        "listy" in str(r[0]) for r in pre_save.receivers
    )


def test_user_objects_get_and_foreign_keys_are_served_from_the_cache(users, cached_users):
    me, you = users[:2]
    assert isinstance(User.objects, UserManager)  # its own methods stay
    Follow.cache.add(follower=me, followee=you)
    follow = Follow.objects.filter(follower=me).get()  # from the database: no related cache
    assert User.objects.get(pk=you.pk) == you  # builds you's pk list
    assert User.cache.get_one(me.pk) == me  # and me's
    with CaptureQueriesContext(connection) as ctx:
        assert User.objects.get(pk=you.pk).username == you.username
        assert follow.followee.username == you.username
        assert [u.pk for u in User.cache.get(pk=me.pk)] == [me.pk]
    assert sql_statements(ctx) == [], sql_statements(ctx)


def test_user_lists_follow_saves(users, cached_users):
    me = users[0]
    assert User.cache.get_one(me.pk).username == me.username
    me.username = "renamed"
    me.save()
    with CaptureQueriesContext(connection) as ctx:
        assert User.objects.get(pk=me.pk).username == "renamed"
    assert sql_statements(ctx) == []
    fresh = User.objects.create_user("created-later")  # UserManager's own method
    assert User.cache.get_one(fresh.pk).username == "created-later"


def test_without_it_each_foreign_key_is_a_query(users):
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    follow = Follow.objects.filter(follower=me).get()
    with CaptureQueriesContext(connection) as ctx:
        assert follow.followee == you
    assert len(sql_statements(ctx)) == 1


def test_a_model_is_cached_once(cached_users):
    with pytest.raises(ConfigError, match="already has a Listy cache"):
        listy.cache_model(User, [("pk",)])


def test_paginator_pages_a_cached_list(users):
    me = users[0]
    for other in users[1:]:
        Follow.cache.add(follower=me, followee=other)
    followees = Follow.cache.get(follower=me)
    with CaptureQueriesContext(connection) as ctx:
        paginator = Paginator(followees, 3)
        assert paginator.count == 4 and paginator.num_pages == 2
        first, second = paginator.page(1), paginator.page(2)
        assert [f.followee_id for f in first] == [u.pk for u in reversed(users[2:])]
        assert [f.followee_id for f in second] == [users[1].pk]
        assert first.has_next() and not second.has_next()
    assert sql_statements(ctx) == []


@pytest.mark.parametrize("style", ["page_number", "limit_offset"])
def test_drf_pagination_pages_a_cached_list(users, style):
    """Django REST framework's page-number and limit-offset pagination over
    a cached list: the right page, the right total, no SQL."""
    pytest.importorskip("rest_framework")
    from rest_framework.pagination import LimitOffsetPagination, PageNumberPagination
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    me = users[0]
    for other in users[1:]:
        Follow.cache.add(follower=me, followee=other)
    followees = Follow.cache.get(follower=me)
    if style == "page_number":
        paginator: PageNumberPagination | LimitOffsetPagination = PageNumberPagination()
        paginator.page_size = 3
        query = "/?page=2"
    else:
        paginator = LimitOffsetPagination()
        query = "/?limit=3&offset=3"
    request = Request(APIRequestFactory().get(query))
    with CaptureQueriesContext(connection) as ctx:
        page = paginator.paginate_queryset(followees, request)
        response = paginator.get_paginated_response([f.followee_id for f in page])
    assert sql_statements(ctx) == []
    assert response.data["count"] == 4
    assert response.data["results"] == [users[1].pk]
    assert response.data["previous"] is not None and response.data["next"] is None
