"""The follow graph of the benchmark (SPEC §2's example model).

``Follow`` is what every system reads: the plain ORM, django-cacheops,
django-cachalot (each in its own process, see ``listybench.worker``), the
hand-pickled variants and Listy. ``FollowOne`` is the same table shape with a
single Listy index; it only serves the "cost of one add()" measure (1 index
versus 3). A follow graph holds each (follower, followee) pair once: both
tables say so with a unique constraint, which every system pays for on
insert, and which lets Listy's add() leave its no-op check to the database.
"""

from django.conf import settings
from django.db import models

import listy


class Follow(models.Model):
    created = models.DateTimeField(auto_now_add=True)
    follower = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="follows")
    followee = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="followers")

    objects = listy.CachingManager(
        [("pk",), ("follower",), ("follower", "followee")],
        timestamp_field="created",
    )

    class Meta:
        app_label = "follows"
        constraints = [models.UniqueConstraint(fields=["follower", "followee"], name="%(class)s_unique_pair")]


class FollowOne(models.Model):
    created = models.DateTimeField(auto_now_add=True)
    follower = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    followee = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")

    objects = listy.CachingManager([("follower",)], timestamp_field="created")

    class Meta:
        app_label = "follows"
        constraints = [models.UniqueConstraint(fields=["follower", "followee"], name="%(class)s_unique_pair")]
