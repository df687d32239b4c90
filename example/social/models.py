"""The SPEC's Follow model."""

from django.contrib.auth.models import User
from django.db import models

import listy


class Follow(models.Model):
    created = models.DateTimeField(auto_now_add=True)
    follower = models.ForeignKey(User, on_delete=models.CASCADE, related_name="follows")
    followee = models.ForeignKey(User, on_delete=models.CASCADE, related_name="followers")

    objects = listy.CachingManager(
        [("pk",), ("follower",), ("follower", "followee")],
        timestamp_field="created",
    )

    def __str__(self) -> str:
        return f"{self.follower_id} -> {self.followee_id}"
