"""The benchmark's two views of a follow list (``listybench.asyncbench``):
the same page as an ``async def`` view and in sync form, served by uvicorn."""

from django.http import HttpRequest, JsonResponse
from django.urls import path

from benchproj.follows.models import Follow


def _page(follows) -> dict:  # type: ignore[no-untyped-def]
    return {"count": len(follows), "followees": [f.followee_id for f in follows[:20]]}


async def follows_async(request: HttpRequest, user_id: int) -> JsonResponse:
    return JsonResponse(_page(await Follow.cache.aget(follower_id=user_id)))


def follows_sync(request: HttpRequest, user_id: int) -> JsonResponse:
    return JsonResponse(_page(Follow.cache.get(follower_id=user_id)))


urlpatterns: list = [
    path("async/<int:user_id>/", follows_async),
    path("sync/<int:user_id>/", follows_sync),
]
