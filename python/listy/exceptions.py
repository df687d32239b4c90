"""Listy's exceptions.

They are defined by the engine (``listy._native``) so that Rust and Python
raise the same classes; this module only re-exports them. The tree::

    ListyError
    ├── NotCachableException   filters that match no index, unknown field names
    ├── CacheUnavailable       memcached down or timed out (reads fall back to the DB)
    ├── DecodeError            cached bytes that are not a list for this schema
    └── ConfigError            bad LISTY settings or index declarations
"""

from listy._native import (
    CacheUnavailable,
    ConfigError,
    DecodeError,
    ListyError,
    NotCachableException,
)

__all__ = [
    "CacheUnavailable",
    "ConfigError",
    "DecodeError",
    "ListyError",
    "NotCachableException",
]
