"""Hit and miss counts shared by every process (``manage.py listy_stats``).

Each process counts its hits and misses in its engines (no cost per read
beyond an atomic add). At most once per ``LISTY["STATS_INTERVAL"]`` seconds
(default 10; ``None`` turns this off), on a read,
it adds what it counted since its last turn to two counters per model in the
store (``<prefix>ly:stats:<label>:hits`` / ``:misses``), in one batched round
trip. ``listy_stats`` reads them back: the counts of every process that
served the model since the counters were made (memcached may evict them, and
a process's last few seconds are lost when it exits).
"""

from __future__ import annotations

import threading
import time

from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from listy.conf import listy_settings
from listy.store import get_store

_lock = threading.Lock()
_next = 0.0
_published: dict[str, tuple[int, int]] = {}


def key(label: str, what: str) -> str:
    """The store key of a model's shared counter (``what``: hits or misses)."""
    return f"{listy_settings().key_prefix}ly:stats:{label}:{what}"


def due() -> bool:
    """True when this process's turn has come (one float comparison)."""
    return time.monotonic() >= _next


def publish(counts: dict[str, tuple[int, int]]) -> None:
    """Adds ``counts`` (label → this process's total hits and misses) less
    what was published before to the shared counters."""
    global _next
    if not _lock.acquire(blocking=False):
        return  # another thread is publishing
    try:
        interval = listy_settings().stats_interval
        _next = float("inf") if interval is None else time.monotonic() + interval
        if interval is None:
            return
        deltas: list[tuple[str, int]] = []
        labels: list[str] = []
        for label, (hits, misses) in counts.items():
            old_hits, old_misses = _published.get(label, (0, 0))
            if hits < old_hits or misses < old_misses:  # counters were reset
                old_hits, old_misses = 0, 0
            if hits == old_hits and misses == old_misses:
                continue
            deltas += [(key(label, "hits"), hits - old_hits), (key(label, "misses"), misses - old_misses)]
            labels.append(label)
        if not deltas:
            return
        try:
            written = get_store().add_counts(deltas)
        except Exception:  # noqa: BLE001 - statistics never fail a read
            return
        for i, label in enumerate(labels):
            if written[2 * i] is not None and written[2 * i + 1] is not None:
                _published[label] = counts[label]
    finally:
        _lock.release()


def shared(label: str) -> tuple[int, int] | None:
    """(hits, misses) of every process for ``label``; None when no process
    has published any."""
    store = get_store()
    raw = [store.get_raw(key(label, what)) for what in ("hits", "misses")]
    if raw[0] is None and raw[1] is None:
        return None
    return tuple(int(r or b"0") for r in raw)  # type: ignore[return-value]


def reset() -> None:
    """Forgets what this process published; its next read publishes (also
    called when the settings change)."""
    global _next
    with _lock:
        _published.clear()
        _next = 0.0


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "LISTY":
        reset()


__all__ = ["due", "key", "publish", "reset", "shared"]
