"""Listy: a deterministic list cache for Django.

Each cached list is kept in step with the database: every write through
Listy updates every affected list in place (one small packed record
prepended), so lists are never stale and never rebuilt on write. The engine
is Rust (``listy._native``); this package is the Django front.

Quick start::

    class Follow(models.Model):
        created = models.DateTimeField(auto_now_add=True)
        follower = models.ForeignKey(User, on_delete=models.CASCADE, related_name="follows")
        followee = models.ForeignKey(User, on_delete=models.CASCADE, related_name="followers")

        objects = listy.CachingManager(
            [("pk",), ("follower",), ("follower", "followee")],
            timestamp_field="created",
        )

    Follow.cache.add(follower=me, followee=you)
    Follow.cache.get(follower=me)            # newest first, from the cache
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from listy.cache import ListCache
from listy.exceptions import (
    CacheUnavailable,
    ConfigError,
    DecodeError,
    ListyError,
    NotCachableException,
    SyncCallInEventLoop,
)
from listy.manager import CachingManager
from listy.origin import bypass
from listy.source import DjangoBackingStore

try:
    __version__: str = _version("django-listy")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.1.0"

__all__ = [
    "CacheUnavailable",
    "CachingManager",
    "ConfigError",
    "DecodeError",
    "DjangoBackingStore",
    "ListCache",
    "ListyError",
    "NotCachableException",
    "SyncCallInEventLoop",
    "__version__",
    "bypass",
]
