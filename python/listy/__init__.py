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

from listy.adopt import cache_model
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
from listy.records import CachedList
from listy.source import DjangoBackingStore

from listy._native import __version__ as _engine_version

#: The version of the package: Cargo's ``workspace.package.version``, the one
#: source of it (maturin writes it into the wheel's metadata and compiles it
#: into ``listy._native``).
__version__: str = _engine_version

__all__ = [
    "CachedList",
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
    "cache_model",
]
