"""Listy's exceptions.

They are defined by the engine (``listy._native``) so that Rust and Python
raise the same classes; this module only re-exports them. The tree::

    ListyError
    ├── NotCachableException   filters that match no index, unknown field names
    ├── CacheUnavailable       memcached down or timed out (reads fall back to the DB)
    ├── DecodeError            cached bytes that are not a list for this schema
    ├── ConfigError            bad LISTY settings or index declarations
    └── SyncCallInEventLoop    a sync call inside a running event loop (also a
                               Django ``SynchronousOnlyOperation``): use its
                               ``a…`` twin
"""

from django.core.exceptions import SynchronousOnlyOperation

from listy._native import (
    CacheUnavailable,
    ConfigError,
    DecodeError,
    ListyError,
    NotCachableException,
)


class SyncCallInEventLoop(ListyError, SynchronousOnlyOperation):
    """A synchronous Listy call made inside a running event loop. It would
    block the loop on cache I/O and, on a miss, run the ORM there (Django
    raises ``SynchronousOnlyOperation`` then): it is refused every time, not
    only on a miss. Await the call's ``a…`` twin instead
    (``await Follow.cache.aget(...)``)."""

__all__ = [
    "CacheUnavailable",
    "ConfigError",
    "DecodeError",
    "ListyError",
    "NotCachableException",
    "SyncCallInEventLoop",
]
