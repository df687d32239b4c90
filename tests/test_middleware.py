"""The per-request object registry."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

import listy
from listy.middleware import RequestContextCacheMiddleware, request_context
from tests.testapp.models import Follow

pytestmark = pytest.mark.django_db(transaction=True)

MIDDLEWARE = ["listy.middleware.RequestContextCacheMiddleware"]


@override_settings(MIDDLEWARE=MIDDLEWARE)
def test_one_instance_per_pk_inside_a_request(users, django_assert_num_queries):
    me, you = users[:2]
    follow = Follow.cache.add(follower=me, followee=you)
    seen = {}

    def view(request):
        a = Follow.cache.get(follower=me)[0]
        b = Follow.cache.get(follower=me, followee=you)[0]
        with django_assert_num_queries(0):
            c = Follow.objects.get(pk=follow.pk)
            d = Follow.cache.get_one(follow.pk)
        seen["same"] = a is b is c is d
        return HttpResponse("ok")

    response = RequestContextCacheMiddleware(view)(RequestFactory().get("/"))
    assert response.status_code == 200
    assert seen["same"] is True
    # outside a request: fresh instances
    assert Follow.cache.get(follower=me)[0] is not Follow.cache.get(follower=me)[0]


@override_settings(MIDDLEWARE=MIDDLEWARE)
def test_async_requests_have_their_own_registry(users):
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)

    async def view(request):
        a = await sync_to_async(lambda: Follow.cache.get(follower=me)[0])()
        b = await sync_to_async(lambda: Follow.cache.get(follower=me, followee=you)[0])()
        await sync_to_async(connections.close_all)()  # the worker thread's connection
        return HttpResponse("same" if a is b else "different")

    middleware = RequestContextCacheMiddleware(view)
    assert asyncio.iscoroutinefunction(middleware)
    response = asyncio.run(middleware(RequestFactory().get("/")))
    assert response.content == b"same"


@override_settings(MIDDLEWARE=MIDDLEWARE)
def test_request_context_outside_requests(users):
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    with request_context() as registry:
        a = Follow.cache.get(follower=me)[0]
        assert Follow.cache.get(follower=me)[0] is a
        assert registry[(Follow, a.pk)] is a


@override_settings(MIDDLEWARE=MIDDLEWARE)
def test_lists_served_from_the_database_share_the_registry(users):
    """A disabled client's list is built by the same builder as cached
    records, so its instances go through the registry too."""
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    direct = listy.ListCache(Follow, [("follower",)], disable_cache=True)
    with request_context() as registry:
        (from_db,) = direct.get(follower=me)
        assert not direct.get(follower=me).from_cache
        assert registry[(Follow, from_db.pk)] is from_db
        assert Follow.cache.get(follower=me)[0] is from_db
        assert direct.get(follower=me)[0] is from_db
    assert direct.get(follower=me)[0] is not from_db
