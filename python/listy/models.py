"""Listy's own tables: keys that failed cache writes left to repair, and the
intents of transactions whose cache work has not run yet.

A write whose cache update may not have reached memcached (a timeout, a
server down) reports the keys it could not update. Until they are deleted
from memcached they may hold lists that miss that write, so they are written
here, in the database every process shares, and every process deletes them
from memcached (``listy.repair``) before it serves lists again. Run
``manage.py migrate`` once for this table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models
from django.utils import timezone


class PendingRepair(models.Model):
    """One memcached key that must be deleted before lists are served."""

    id: models.BigAutoField[int, int] = models.BigAutoField(primary_key=True)
    key: models.CharField[str, str] = models.CharField(max_length=250, unique=True)
    """The literal memcached key (prefix included)."""
    model: models.CharField[str, str] = models.CharField(max_length=200)
    """The engine's model label (``app.Model``, ``+softdeleted`` for lists
    that keep soft-deleted rows): tells a process which clients repair it."""
    created: models.DateTimeField[Any, datetime] = models.DateTimeField(default=timezone.now)
    """Set again by every write that fails on the key: a repair deletes the
    row only if it is unchanged since it was read."""

    class Meta:
        app_label = "listy"
        verbose_name = "pending cache repair"

    def __str__(self) -> str:
        return str(self.key)


class WriteIntent(models.Model):
    """A transaction that wrote a cached model and whose cache work has not
    been seen to run. Inserted in that transaction (so it exists exactly
    when the write committed), deleted once the cache work ran. One older
    than ``LISTY["INTENT_WINDOW"]`` belongs to a writer that died between
    COMMIT and its cache work: the model's lists are started afresh."""

    id = models.BigAutoField(primary_key=True)
    model = models.CharField(max_length=200)
    """The model's label (``app.Model``): every client's lists of it."""
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        app_label = "listy"
        verbose_name = "cache write intent"

    def __str__(self) -> str:
        return f"{self.model} @ {self.created.isoformat()}"
