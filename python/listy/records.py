"""The list objects a read returns: ``CachedList`` (the type ``get()``
returns: the engine's lazy ``Records``, or ``FallbackRecords``, a list served
from the database) and ``CoherencyReport`` (one list's state, from
``determine_coherency``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from listy import _native
from listy.declaration import Index
from listy.source import Row


M = TypeVar("M")


class CachedList(Sequence[M]):
    """What ``ListCache.get()`` returns: a lazy, read-only sequence of
    instances, newest first, with keyset pages (``after``/``before``, for
    cursor pagination), ``values()`` and ``pks()``."""

    __slots__ = ()

    key: str
    """The literal memcached key (prefix included; a segmented list's head)."""
    from_cache: bool
    size: int

    @abstractmethod
    def values(self) -> list[Row]:
        """Rows as tuples in schema order."""

    @abstractmethod
    def pks(self) -> list[int]:
        """Primary keys, newest first."""

    @abstractmethod
    def after(self, pk: int | None, limit: int = 20) -> list[M]:
        """A keyset page: up to ``limit`` instances whose pk is below ``pk``
        (from the top when None), largest pk first, as the ORM's
        ``filter(pk__lt=pk).order_by("-pk")[:limit]``."""

    @abstractmethod
    def before(self, pk: int | None, limit: int = 20) -> list[M]:
        """The ``limit`` instances with the smallest pks above ``pk``,
        largest pk first (the page a reverse cursor shows)."""


class FallbackRecords(CachedList[Any]):
    """A list served from the database (cache disabled or unavailable).

    Same interface as the engine's ``Records``: ``key``, ``size`` (0),
    ``from_cache`` (False), ``values()`` and ``pks()``.
    """

    __slots__ = ("_items", "_rows", "from_cache", "key", "size")

    def __init__(self, key: str, rows: list[Row], items: list[Any]) -> None:
        self.key = key
        self.size = 0
        self.from_cache = False
        self._rows = rows
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...
    def __getitem__(self, i: int | slice) -> Any:
        return self._items[i]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __repr__(self) -> str:
        return f"<FallbackRecords {self.key!r} len={len(self)}>"

    def values(self) -> list[Row]:
        """Rows as tuples in schema order."""
        return list(self._rows)

    def pks(self) -> list[int]:
        """Primary keys, newest first."""
        return [r[0] for r in self._rows]

    def after(self, pk: int | None, limit: int = 20) -> list[Any]:
        """Up to ``limit`` instances whose pk is below ``pk`` (from the top
        when None), largest pk first: ``filter(pk__lt=pk).order_by("-pk")``."""
        page = [o for o in self._items if pk is None or o.pk < pk]
        return sorted(page, key=lambda o: o.pk, reverse=True)[:limit]

    def before(self, pk: int | None, limit: int = 20) -> list[Any]:
        """The ``limit`` instances with the smallest pks above ``pk``,
        largest pk first (the page a reverse cursor shows)."""
        page = sorted((o for o in self._items if pk is None or o.pk > pk), key=lambda o: o.pk)[:limit]
        return page[::-1]


# The engine's lazy list is a CachedList, like FallbackRecords.
CachedList.register(_native.Records)


@dataclass(frozen=True)
class CoherencyReport:
    """The state of one list in the cache (see ``determine_coherency``)."""

    key: str
    """The literal memcached key (prefix included; a segmented list's head)."""
    cached: bool
    size: int
    """Bytes stored."""
    count: int
    """Live records in the cached list (0 when not cached)."""
    coherent: bool | None
    """With ``check_against_db``: does the cached list equal the database's
    rows? None when not checked or not cached."""
    index: Index
    values: tuple[Any, ...]



__all__ = ["CachedList", "CoherencyReport", "FallbackRecords"]
