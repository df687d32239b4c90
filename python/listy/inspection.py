"""Reading a cached list's bytes for people: the trailer, the frames, a hex
dump. Used by ``manage.py listy_inspect`` and ``determine_coherency``.

The engine's ``Engine.inspect(index, values)`` returns ``{"key", "server",
"size", "raw", "frames", "complete", "error"}``; this module adds what a
person wants to see on top of it. Nothing here writes to the cache, and
nothing here reads bytes itself: the wire format is the engine's
(``crates/listy-core/src/codec.rs``), asked through ``listy._native``
(``trailer``, ``is_lease``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from listy import _native


@dataclass(frozen=True)
class Trailer:
    """The trailer of one stored part, as the engine reads it."""

    version: int
    fingerprint: int
    head: bool
    """A head: a whole list, or the first part of a segmented one."""
    segments: int
    """Segments that follow this head (0: the whole list is here)."""
    segment: int | None
    """The index of this segment, None for a head."""
    build_id: int
    offset: int
    """Where the trailer starts in the value."""
    len: int

    def describe(self) -> str:
        if self.head:
            n = self.segments
            what = f"head of a list with {n} segment{'s' if n != 1 else ''}" if n else "a whole list"
        else:
            what = f"segment {self.segment}"
        return (
            f"{what}; format v{self.version}, layout fingerprint {self.fingerprint:08x}, "
            f"build id {self.build_id:08x}"
        )


def trailer(raw: bytes | None) -> Trailer | None:
    """The trailer at the end of ``raw`` (whatever layout wrote it), or None
    when it has none (a lease marker, a value still being written, another
    kind of value)."""
    found = _native.trailer(raw) if raw else None
    return None if found is None else Trailer(**found)


def is_lease(raw: bytes | None) -> bool:
    """True when ``raw`` ends with a builder's lease marker (a list being
    built from the database right now; prepends may sit in front of it)."""
    return bool(raw) and _native.is_lease(raw)  # type: ignore[arg-type]


def is_list(info: Mapping[str, Any]) -> bool:
    """True when an ``Engine.inspect`` answer is a readable list of the
    reader's layout: a whole list, or the head of a segmented one.

    (The engine's ``complete`` flag is False for a segmented head; the
    engine checks the trailer against the layout, and reports an ``error``
    when it is not the reader's, so a head with no error is one.)
    """
    raw = info.get("raw")
    if raw is None:
        return False
    if info.get("complete"):
        return True
    found = trailer(raw)
    return found is not None and found.head and not info.get("error")


def frames(info: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The engine's frames, newest first, each a dict with ``offset``,
    ``len``, ``kind`` (``record``, ``update``, ``tombstone``,
    ``final-tombstone``), ``pk`` and ``live``."""
    return [dict(f) for f in info.get("frames") or []]


def hexdump(raw: bytes, width: int = 16) -> Iterator[str]:
    """``offset | hex | ascii`` lines, ``width`` bytes a row."""
    for off in range(0, len(raw), width):
        chunk = raw[off : off + width]
        hexpart = " ".join(f"{b:02x}" for b in chunk)
        if width > 8 and len(chunk) > 8:
            hexpart = hexpart[: 8 * 3 - 1] + "  " + hexpart[8 * 3 :]
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        yield f"{off:08x} | {hexpart:<{width * 3}} | {text}"


def human_bytes(n: int) -> str:
    """``1234`` → ``"1.2 KiB"``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


__all__ = ["Trailer", "frames", "hexdump", "human_bytes", "is_lease", "is_list", "trailer"]
