"""URLs of the test-suite: a follow list served by an async view and by the
same view in sync form (the ASGI end-to-end test, ``tests/test_asgi.py``)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path

from tests.testapp.models import Follow


async def follows(request: HttpRequest, user_id: int) -> JsonResponse:
    """The follows of a user; ``same`` tells whether the per-request
    registry gave the list's first instance again to ``aget_one``."""
    found = await Follow.cache.aget(follower_id=user_id)
    first = found[0] if found else None
    again = await Follow.cache.aget_one(first.pk) if first is not None else None
    return JsonResponse({"pks": [f.pk for f in found], "same": first is again, "cached": found.from_cache})


def follows_sync(request: HttpRequest, user_id: int) -> JsonResponse:
    """The same page from a sync view."""
    found = Follow.cache.get(follower_id=user_id)
    return JsonResponse({"pks": [f.pk for f in found], "cached": found.from_cache})


urlpatterns: list = [
    path("follows/<int:user_id>/", follows),
    path("follows-sync/<int:user_id>/", follows_sync),
]
