"""Reading a cached list's bytes for people: the trailer, the frames, a hex
dump. Used by ``manage.py listy_inspect`` and ``determine_coherency``.

The engine's ``Engine.inspect(index, values)`` returns ``{"key", "server",
"size", "raw", "frames", "complete", "error"}``; this module adds what a
person wants to see on top of it. Nothing here writes to the cache.

Wire format (see ``crates/listy-core/src/codec.rs``): a value is a run of
self-delimiting frames, newest first, closed by a 14-byte trailer::

    0xAF | version u8 | layout fingerprint u32le | part u16le | build id u32le | "LY"

``part`` < 0x8000 is a head (a whole list, or the first part of a segmented
one) and gives the number of segments that follow; ``0x8000 | n`` is
segment ``n``. Frame tags: 0xA1 record, 0xA2 tombstone, 0xA3 final tombstone,
0xA4 update.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

TAG_RECORD = 0xA1
TAG_TOMBSTONE = 0xA2
TAG_FINAL_TOMBSTONE = 0xA3
TAG_UPDATE = 0xA4
TAG_TRAILER = 0xAF
TRAILER_LEN = 14
SEGMENT_BIT = 0x8000
#: A builder's lease marker ends a value: magic, token u64le, millis u64le.
LEASE_MAGIC = b"\0LEASE"
LEASE_LEN = 22

FRAME_KINDS = {
    TAG_RECORD: "record",
    TAG_TOMBSTONE: "tombstone",
    TAG_FINAL_TOMBSTONE: "final-tombstone",
    TAG_UPDATE: "update",
}


@dataclass(frozen=True)
class Trailer:
    """The trailer of one stored part."""

    version: int
    fingerprint: int
    part: int
    build_id: int

    @property
    def is_head(self) -> bool:
        return self.part < SEGMENT_BIT

    @property
    def segments(self) -> int:
        """Segments that follow this head (0: the whole list is here)."""
        return self.part if self.is_head else 0

    @property
    def segment_index(self) -> int | None:
        """The index of this segment, None for a head."""
        return None if self.is_head else self.part & ~SEGMENT_BIT

    def describe(self) -> str:
        if self.is_head:
            n = self.segments
            what = f"head of a list with {n} segment{'s' if n != 1 else ''}" if n else "a whole list"
        else:
            what = f"segment {self.segment_index}"
        return (
            f"{what}; format v{self.version}, layout fingerprint {self.fingerprint:08x}, "
            f"build id {self.build_id:08x}"
        )


def parse_trailer(raw: bytes | None) -> Trailer | None:
    """The trailer at the end of ``raw``, or None when it has none (a lease
    marker, a value still being written, another kind of value)."""
    if not raw or len(raw) < TRAILER_LEN:
        return None
    t = raw[-TRAILER_LEN:]
    if t[0] != TAG_TRAILER or t[12:14] != b"LY":
        return None
    version = t[1]
    fingerprint, part, build_id = struct.unpack("<IHI", t[2:12])
    return Trailer(version, fingerprint, part, build_id)


def is_lease(raw: bytes | None) -> bool:
    """True when ``raw`` ends with a builder's lease marker (a list being
    built from the database right now; prepends may sit in front of it)."""
    return bool(raw) and len(raw) >= LEASE_LEN and raw[-LEASE_LEN : -LEASE_LEN + 6] == LEASE_MAGIC  # type: ignore[index]


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
    trailer = parse_trailer(raw)
    return trailer is not None and trailer.is_head and not info.get("error")


def frames(info: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The engine's frames with their kind read from the tag byte itself
    (``update`` frames included), each a dict with ``offset``, ``len``,
    ``kind``, ``pk`` and ``live``."""
    raw = info.get("raw") or b""
    out = []
    for f in info.get("frames") or []:
        f = dict(f)
        off = f.get("offset", 0)
        if 0 <= off < len(raw):
            f["kind"] = FRAME_KINDS.get(raw[off], f.get("kind", "?"))
        out.append(f)
    return out


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


__all__ = [
    "FRAME_KINDS",
    "Trailer",
    "frames",
    "hexdump",
    "human_bytes",
    "is_lease",
    "is_list",
    "parse_trailer",
]
