"""Models of the test-suite: the SPEC's Follow, a soft-deletable model, a
model with inlined foreign-key fields and one with every field kind."""

from django.contrib.auth.models import User
from django.db import models
from django.utils import timezone

import listy


class Follow(models.Model):
    """SPEC §2, verbatim."""

    created = models.DateTimeField(auto_now_add=True)
    follower = models.ForeignKey(User, on_delete=models.CASCADE, related_name="follows")
    followee = models.ForeignKey(User, on_delete=models.CASCADE, related_name="followers")

    objects = listy.CachingManager(
        [("pk",), ("follower",), ("follower", "followee")],
        timestamp_field="created",
    )


class Bookmark(models.Model):
    """Soft delete, deleted timestamp and enabled flag."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="bookmarks")
    url = models.CharField(max_length=200)
    created = models.DateTimeField(default=timezone.now)
    deleted = models.BooleanField(default=False)
    deleted_at = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)

    objects = listy.CachingManager(
        [("pk",), ("user",)],
        soft_delete_field="deleted",
        deleted_timestamp_field="deleted_at",
        enabled_field="enabled",
        timestamp_field="created",
    )


class Entry(models.Model):
    author = models.ForeignKey(User, on_delete=models.CASCADE, related_name="entries")
    title = models.CharField(max_length=100)
    body = models.TextField(default="")
    created = models.DateTimeField(default=timezone.now)

    objects = listy.CachingManager([("pk",), ("author",)], timestamp_field="created")


class Comment(models.Model):
    """Carries the entry's created and title in its record."""

    entry = models.ForeignKey(Entry, on_delete=models.CASCADE, related_name="comments")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="comments")
    text = models.TextField()
    created = models.DateTimeField(default=timezone.now)

    objects = listy.CachingManager(
        [("entry",), ("user",)],
        inlined_foreign_key_fields={"entry": ["created", "title"]},
        timestamp_field="created",
    )


class Sample(models.Model):
    """One field of every kind the codec knows, nullable ones too."""

    owner = models.ForeignKey(User, on_delete=models.CASCADE, related_name="samples")
    flag = models.BooleanField(default=False)
    ratio = models.FloatField(default=0.0)
    name = models.CharField(max_length=50, default="")
    blob = models.BinaryField(default=b"")
    at = models.DateTimeField(default=timezone.now)
    day = models.DateField(null=True)
    tm = models.TimeField(null=True)
    amount = models.DecimalField(max_digits=8, decimal_places=2, null=True)
    uid = models.UUIDField(null=True)
    data = models.JSONField(null=True)
    count = models.IntegerField(null=True)

    objects = listy.CachingManager([("pk",), ("owner",)])


class Friend(models.Model):
    """A follow graph whose pairs are unique in the database, with a soft
    delete: add() lets the database answer its no-op check."""

    created = models.DateTimeField(auto_now_add=True)
    follower = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    followee = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    hidden = models.BooleanField(default=False)

    objects = listy.CachingManager(
        [("pk",), ("follower",), ("follower", "followee")],
        soft_delete_field="hidden",
        timestamp_field="created",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["follower", "followee"], name="unique_friend_pair"),
            models.CheckConstraint(condition=~models.Q(follower=models.F("followee")), name="friend_not_self"),
        ]


class Team(models.Model):
    """Members through an auto-created table that has a ListCache."""

    name = models.CharField(max_length=50)
    members = models.ManyToManyField(User, related_name="teams")


TeamMembers = Team.members.through
TeamMembers.cache = listy.ListCache(TeamMembers, [("team",), ("user",)])  # type: ignore[attr-defined]  # an auto-created through model, given a client here


class Mark(models.Model):
    """The contention model of ``tests/test_contention.py`` (issue 16): soft
    deletes, an enabled flag and three indexes, so that a change of color
    moves a row between ``(entry, color)`` and ``(name, color)`` lists, and
    a flag flip takes it out of (or puts it back into) all of them. No
    unique constraint: ``add()`` answers its no-op check with a SELECT and
    revives a soft-deleted or disabled row."""

    entry = models.ForeignKey(Entry, on_delete=models.CASCADE, related_name="marks")
    name = models.CharField(max_length=20)
    color = models.IntegerField()
    created = models.DateTimeField(default=timezone.now)
    deleted = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)

    objects = listy.CachingManager(
        [("pk",), ("entry", "color"), ("name", "color")],
        soft_delete_field="deleted",
        enabled_field="enabled",
        timestamp_field="created",
    )
