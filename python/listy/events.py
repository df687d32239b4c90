"""Listy's own signals and counters: what a metrics exporter hooks into.

Signals (``django.dispatch.Signal``; sent only when something happened, and
cheap when nobody listens)::

    list_built       sender=model  key, size, rows        a list was read from the database and stored
    cache_fault      sender=model  server, error, operation ("read" | "write")
    write_unreached  sender=model  keys, faults           a committed write could not update every list
    repaired         sender=None   label, keys            keys a failed write left were deleted

Counters: :func:`metrics` returns a snapshot ``{name: int}`` of this process
(``hits``, ``misses``, ``lists_built``, ``cache_faults``, ``writes_unreached``,
``keys_repaired``, and the engine's ``engine_lease_lost``, ``engine_compacted``,
``engine_segment_split``), the numbers a Prometheus collector reads on each scrape::

    from prometheus_client.core import CounterMetricFamily, REGISTRY
    import listy.events

    class ListyCollector:
        def collect(self):
            for name, value in listy.events.metrics().items():
                yield CounterMetricFamily(f"listy_{name}", f"Listy {name}", value=value)

    REGISTRY.register(ListyCollector())

``hits`` and ``misses`` are the engines' own counts (no cost per read); the
others are counted when their signal is sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.dispatch import Signal

list_built = Signal()
"""A list was read from the database and stored: ``key``, ``size`` (bytes stored), ``rows``."""

cache_fault = Signal()
"""memcached could not be used: ``server``, ``error`` (text), ``operation`` ("read" or "write")."""

write_unreached = Signal()
"""A committed write could not update every list: ``keys`` (to repair), ``faults`` (messages)."""

repaired = Signal()
"""Keys a failed write left were deleted from memcached: ``label`` (engine label), ``keys``."""

_lock = threading.Lock()
_counts: dict[str, int] = {
    "lists_built": 0,
    "cache_faults": 0,
    "writes_unreached": 0,
    "keys_repaired": 0,
    # the engine's own events (``listy.declaration``), logged at DEBUG too
    "engine_lease_lost": 0,
    "engine_compacted": 0,
    "engine_segment_split": 0,
}

#: Returns ``(hits, misses)`` summed over this process's engines; set by
#: ``listy.cache`` (this module sits below it and knows no client).
engine_counts: Callable[[], tuple[int, int]] = lambda: (0, 0)  # noqa: E731


def count(name: str, n: int = 1) -> None:
    """Adds ``n`` to the counter ``name``."""
    with _lock:
        _counts[name] = _counts.get(name, 0) + n


def send(signal: Signal, name: str, sender: Any, n: int = 1, **kwargs: Any) -> None:
    """Counts ``name`` and sends ``signal`` (receivers' errors are logged by
    Django, never raised into the caller's read or write)."""
    count(name, n)
    if signal.receivers:
        signal.send_robust(sender, **kwargs)


def metrics() -> dict[str, int]:
    """A snapshot of this process's counters, ``hits`` and ``misses`` included."""
    hits, misses = engine_counts()
    with _lock:
        return {"hits": hits, "misses": misses, **_counts}


def reset() -> None:
    """Sets the counters kept here back to zero (for tests)."""
    with _lock:
        for name in _counts:
            _counts[name] = 0


__all__ = ["cache_fault", "count", "list_built", "metrics", "repaired", "reset", "send", "write_unreached"]
