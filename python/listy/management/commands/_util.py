"""Helpers shared by Listy's management commands.

Exit codes of every ``listy_*`` command: 0 when all went well, 1 when the
work failed or found incoherent lists (:func:`failed`), 2 for a usage error
(:func:`usage`): Django's ``CommandError`` carries the code, and
``manage.py`` exits with it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, IO, TypeVar, cast

from django.apps import apps
from django.core.management.base import CommandError
from django.db import models

from listy import _native, registry
from listy.cache import ListCache

T = TypeVar("T")

#: Exit code of a command whose work failed or found a problem.
EXIT_FAILED = 1
#: Exit code of a usage error (bad arguments).
EXIT_USAGE = 2


def usage(message: str) -> CommandError:
    """A usage error: ``manage.py`` prints it and exits with 2."""
    return CommandError(message, returncode=EXIT_USAGE)


def failed(message: str) -> CommandError:
    """A failure (incoherent lists, cache unavailable): exit code 1."""
    return CommandError(message, returncode=EXIT_FAILED)


def model_for(label: str) -> type[models.Model]:
    """The model named ``app_label.Model`` (a usage error if there is none)."""
    try:
        return apps.get_model(label)
    except (LookupError, ValueError) as exc:
        raise usage(f"{label}: {exc}") from None


def clients_for(labels: list[str]) -> list[tuple[type[models.Model], ListCache[Any]]]:
    """(model, primary client) for each ``app_label.Model`` (all models if empty)."""
    if not labels:
        out = []
        for model in registry.all_models():
            client = cast("ListCache[Any] | None", registry.primary(model))
            if client is not None:
                out.append((model, client))
        return sorted(out, key=lambda mc: mc[0]._meta.label)
    out = []
    for label in labels:
        model = model_for(label)
        client = cast("ListCache[Any] | None", registry.primary(model))
        if client is None:
            raise usage(f"{label} has no Listy cache (no CachingManager or ListCache)")
        out.append((model, client))
    return out


def index_of(client: ListCache[Any], spec: str) -> tuple[str, ...]:
    """The index (sorted attnames) named by ``"follower"`` or
    ``"follower,followee"`` (field names or attnames, any order)."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    attnames = []
    for name in names:
        field = client._field(name)
        if field is None:
            raise usage(f"{client.model._meta.label}: {name!r} is not a field")
        attnames.append(field.attname)
    wanted = tuple(_native.canonical_index(attnames))
    for index in client.indexes:
        if index == wanted:
            return index
    known = ", ".join(",".join(i) for i in client.indexes)
    raise usage(f"{client.model._meta.label}: no cached index ({spec}); the indexes are {known}")


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> list[str]:
    """Plain-text table lines: the first column left-aligned, numbers right."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(
            (c.ljust(w) if i == 0 else c.rjust(w)) for i, (c, w) in enumerate(zip(r, widths))
        ).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells[1:])
    return out


class Progress:
    """A dependency-free progress bar drawn on ``stream`` (stderr).

    It draws only when the stream is a terminal (``stream.isatty()``); into
    a pipe, a file or a test's ``StringIO`` it prints nothing, so logs and
    captured output stay clean. Redraws at most 10 times a second::

        checking testapp.Follow [##########----------]  512/1024  50%  2400/s

    ``total`` may be None (unknown): a counter and a rate are drawn instead.
    Use as a context manager, or call :meth:`close` at the end.
    """

    WIDTH = 24
    INTERVAL = 0.1

    def __init__(self, stream: IO[str] | Any, label: str, total: int | None = None, *, enabled: bool = True) -> None:
        # a command's self.stderr is an OutputWrapper that would end every
        # write with a newline: draw on the stream it wraps
        self.stream = getattr(stream, "_out", stream)
        self.label = label
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._last = 0.0
        self._drawn = False
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(enabled and isatty is not None and isatty())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        """Items per second so far."""
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.enabled:
            now = time.monotonic()
            if now - self._last >= self.INTERVAL or (self.total is not None and self.done >= self.total):
                self._last = now
                self._draw()

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        """Yields ``items``, advancing once per item."""
        for item in items:
            yield item
            self.advance()

    def render(self) -> str:
        """The bar as text (without the carriage return)."""
        rate = f"{self.rate:.0f}/s"
        if self.total:
            frac = min(1.0, self.done / self.total)
            filled = int(frac * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            n = len(str(self.total))
            return f"{self.label} [{bar}] {self.done:>{n}}/{self.total} {frac:4.0%} {rate:>8}"
        return f"{self.label} {self.done} {rate:>8}"

    def _draw(self) -> None:
        self.stream.write("\r" + self.render() + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Draws the final state and ends the line (only on a terminal)."""
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False


__all__ = [
    "EXIT_FAILED",
    "EXIT_USAGE",
    "Progress",
    "clients_for",
    "failed",
    "index_of",
    "model_for",
    "table",
    "usage",
]
