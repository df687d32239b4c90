"""What a user's code sees through a type checker: checked by ``make
typecheck`` (``mypy --strict``, django-stubs), never run.

``Model.cache`` is installed by ``CachingManager`` at class creation, which
no type checker can follow: the documented pattern is a ``ClassVar``
annotation on the model (docs/django.md, "Type checking")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, assert_type

from django.contrib.auth.models import User
from django.db import models

import listy


class Follow(models.Model):
    created = models.DateTimeField(auto_now_add=True)
    follower = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    followee = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")

    cache: ClassVar[listy.ListCache[Follow]]
    objects = listy.CachingManager([("pk",), ("follower",)], timestamp_field="created")

    class Meta:
        app_label = "typecheck_sample"


def reads(me: User) -> None:
    assert_type(Follow.cache.get(follower=me), listy.CachedList[Follow])
    assert_type(Follow.cache.get(follower=me).after(10, 20), list[Follow])
    assert_type(Follow.cache.get(follower=me).before(None), list[Follow])
    assert_type(Follow.cache.get_one(1), Follow | None)
    assert_type(Follow.cache.get_first(follower=me), Follow | None)
    assert_type(Follow.cache.get_multi([{"follower": me}]), dict[Any, Sequence[Follow]])
    assert_type(Follow.cache.get_multi_list([{"follower": me}]), list[Follow])
    assert_type(Follow.cache.count(follower=me), int)


def standalone() -> None:
    users = listy.ListCache(User, [("pk",)], timestamp_field="date_joined")
    assert_type(users, listy.ListCache[User])
    assert_type(users.get(pk=1), listy.CachedList[User])
    listy.ListCache(User, [("pk",)], not_an_option=True)  # type: ignore[call-arg]
