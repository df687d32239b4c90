"""A per-context record of Listy calls, for the debug-toolbar panel and tests.

Every public call of ``ListCache`` - ``get``, ``get_one`` (and so
``Model.objects.get(pk=...)`` and foreign-key access served by Listy),
``get_multi``, ``count`` and the period counts, ``add`` and ``delete`` -
checks :data:`active` (one ``ContextVar.get``) and does nothing more unless
a :class:`Recorder` is active in the current context, so the cost is ~0
when nobody records::

    from listy.recorder import recording

    with recording() as rec:
        Follow.cache.get(follower=me)
    rec.calls[0].hits, rec.calls[0].bytes, rec.calls[0].ms

Context variables follow threads started with ``contextvars.copy_context``
and asyncio tasks; calls nested inside a recorded call (a signal handler
that writes, ``get_multi`` reading lists) are not recorded twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from django.db import models

T = TypeVar("T")


class Recorded(Protocol):
    """What a recorded call's client must have (``listy.ListCache`` has it)."""

    @property
    def model(self) -> type[models.Model]:
        """The model of the call."""
        ...


@dataclass
class Call:
    """One recorded Listy call."""

    model: str
    method: str
    args: str
    """The filters or fields, as text."""
    ms: float
    """Wall time of the call, milliseconds (writes: the database part; the
    cache work runs after commit)."""
    hits: int = 0
    """Lists served from the cache."""
    misses: int = 0
    """Lists built from the database (or read from it when the cache was unavailable)."""
    bytes: int = 0
    """Bytes of the lists read, as stored."""
    result: str = ""
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "method": self.method, "args": self.args, "ms": self.ms,
            "hits": self.hits, "misses": self.misses, "bytes": self.bytes,
            "result": self.result, "error": self.error,
        }


@dataclass
class Recorder:
    """The calls recorded in one context (a request, a ``with recording()``)."""

    calls: list[Call] = field(default_factory=list)

    @property
    def hits(self) -> int:
        return sum(c.hits for c in self.calls)

    @property
    def misses(self) -> int:
        return sum(c.misses for c in self.calls)

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.calls)

    @property
    def ms(self) -> float:
        return sum(c.ms for c in self.calls)


_current: ContextVar[Recorder | None] = ContextVar("listy_recorder", default=None)
#: The lists read during the call being recorded (``note``), else None.
_lists_read: ContextVar[list[Any] | None] = ContextVar("listy_recorder_lists", default=None)

#: ``active()`` is the recorder of the current context or None: the one check
#: ``ListCache`` makes on every public call.
active: Callable[[], Recorder | None] = _current.get


def start() -> tuple[Recorder, Any]:
    """Activates a new recorder; returns it and the token for :func:`stop`."""
    rec = Recorder()
    return rec, _current.set(rec)


def stop(token: Any) -> None:
    """Deactivates the recorder :func:`start` activated."""
    try:
        _current.reset(token)
    except ValueError:  # reset from another context: just switch recording off
        _current.set(None)


@contextlib.contextmanager
def recording() -> Iterator[Recorder]:
    """Records the Listy calls made inside the block."""
    rec, token = start()
    try:
        yield rec
    finally:
        stop(token)


def _describe(kwargs: Mapping[str, Any]) -> str:
    parts = []
    for k, v in kwargs.items():
        if isinstance(v, list):  # get_multi's filter dicts
            shown = "; ".join(_describe(f) for f in v[:3] if isinstance(f, Mapping))
            parts.append(f"{len(v)} lists: {shown}{'; ...' if len(v) > 3 else ''}")
            continue
        v = getattr(v, "pk", v)
        parts.append(f"{k}={v!r}")
    return ", ".join(parts)


def note(records: Any) -> None:
    """A list was read (from the cache or the database) during a recorded
    call: it counts as that call's hit or miss."""
    seen = _lists_read.get()
    if seen is not None:
        seen.append(records)


def _result(method: str, result: Any) -> str:
    if method in ("add", "delete"):
        return "no-op" if result in (None, False) else "written"
    if method == "get_multi":
        return f"{len(result)} lists"
    if method in ("count", "get_one") or method.endswith("_count"):
        return repr(getattr(result, "pk", result))
    return ""


def record(client: Recorded, method: str, kwargs: Mapping[str, Any], call: Callable[[], T]) -> T:
    """Runs ``call`` (the public method again) with recording switched off,
    and records it in the active recorder."""
    rec = _current.get()
    token = _current.set(None)
    lists: list[Any] = []
    lists_token = _lists_read.set(lists)
    error = ""
    result: Any = None
    start_time = perf_counter()
    try:
        done = call()
        result = done
        return done
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        ms = (perf_counter() - start_time) * 1000
        _lists_read.reset(lists_token)
        _current.reset(token)
        if rec is not None:
            entry = Call(client.model._meta.label, method, _describe(kwargs), ms, error=error)
            for records in lists if not error else ():
                if getattr(records, "from_cache", False):
                    entry.hits += 1
                else:
                    entry.misses += 1
                entry.bytes += int(getattr(records, "size", 0) or 0)
            if not error:
                entry.result = _result(method, result)
            rec.calls.append(entry)


__all__ = ["Call", "Recorder", "active", "note", "record", "recording", "start", "stop"]
