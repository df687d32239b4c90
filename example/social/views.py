"""The follow list of a user as JSON, twice: an ``async def`` view for an
ASGI server (``uvicorn example.asgi:application``) and the same view in sync
form. The async one awaits Listy's ``a…`` calls: a hit is read from the
cache off the event loop and never touches the database; a miss builds the
list through the ORM in Django's thread-sensitive executor."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from social.models import Follow


def _page(follows, total: int) -> dict:  # type: ignore[no-untyped-def]
    # Iterating the list is plain Python: no I/O, sync or async.
    return {"count": total, "followees": [f.followee_id for f in follows[:20]]}


async def following(request: HttpRequest, user_id: int) -> JsonResponse:
    """``/following/<user_id>/``: the newest 20 followees and the count."""
    follows = await Follow.cache.aget(follower_id=user_id)
    return JsonResponse(_page(follows, len(follows)))


def following_sync(request: HttpRequest, user_id: int) -> JsonResponse:
    """``/following-sync/<user_id>/``: the same page from a sync view."""
    follows = Follow.cache.get(follower_id=user_id)
    return JsonResponse(_page(follows, len(follows)))
