"""The awaitable twins of the ``ListCache`` calls (SPEC §2, "Async").

Owns how an ``a…`` call runs next to an event loop:

- **Reads** first try the cache alone. Lists go through
  ``Engine.get_cached`` (never builds, never calls a loader): first on the
  loop's own thread within ``ASYNC_INLINE_TIMEOUT`` (default 2 ms: pooled
  connections only, each read bounded by what is left of it; a hit is one
  round trip, cheaper than a thread hop), then, if that ran out, in a
  worker thread of this module's pool with the full ``TIMEOUT``. Counts run
  in a worker under :func:`listy.source.cache_only` (any database read
  raises ``NeedsDatabase`` instead of running). A hit therefore never
  touches the database and holds the loop at most about
  ``ASYNC_INLINE_TIMEOUT``; a slow or stopped server costs a worker thread
  at most the configured ``TIMEOUT`` (then the server is marked dead and
  later calls fail fast).
- **Misses, writes and rebuilds** run the sync call through Django's
  ``sync_to_async(thread_sensitive=True)``, as Django's async ORM does: the
  ORM runs in the thread that holds the request's connection, so
  ``transaction.atomic`` and ``on_commit`` keep their meaning.

Lists come back complete (every segment of a list stored in segments is
fetched by the worker): iterating them in the loop does no I/O.

The pool is made on first use and made again in a forked child (gunicorn
with uvicorn workers), as the memcached pool drops its inherited sockets.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import functools
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar, cast

from asgiref.sync import sync_to_async
from django.db import models

from listy import middleware
from listy import repair as _repairs
from listy import worker
from listy.conf import listy_settings
from listy.declaration import Declaration, Index
from listy.exceptions import CacheUnavailable
from listy.source import NeedsDatabase, cache_only

T = TypeVar("T")

#: Worker threads of the cache-only reads. Each holds one request at a time
#: while the engine waits on the network with the GIL released.
WORKERS = 16

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    pool = _pool
    if pool is None:
        with _pool_lock:
            pool = _pool
            if pool is None:
                pool = _pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="listy-aio")
    return pool


def _forget_pool_in_child() -> None:
    # The parent's threads do not exist in a forked child: a new pool is
    # made on the child's first async call.
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)


async def off_loop(func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` in a worker thread of the pool, in a copy of the
    current context (the request's registry, the active time zone)."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, func, *args)
    return await loop.run_in_executor(_executor(), call)


def in_orm_thread(func: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """``func`` as an awaitable run where Django's async ORM runs its queries."""
    return sync_to_async(func, thread_sensitive=True)


class AsyncCalls(Declaration):
    """The ``a…`` calls of a client (mixed into ``listy.cache.ListCache``)."""

    # The sync calls these twins fall back to (``ListCache``).
    def _get(self, index: Index, values: tuple[Any, ...], complete: bool = False) -> Sequence[Any]:
        raise NotImplementedError

    def _unavailable(self, exc: Exception) -> None:
        raise NotImplementedError

    def _pending_writes(self) -> bool:
        raise NotImplementedError

    if TYPE_CHECKING:
        # The sync calls the twins run, defined by the other mixins of
        # ``ListCache`` (declared for the type checker only: at runtime the
        # mixins before this one in the MRO provide them).
        def count(self, **filters: Any) -> int: ...
        def daily_count(self, **filters: Any) -> int: ...
        def weekly_count(self, **filters: Any) -> int: ...
        def monthly_count(self, **filters: Any) -> int: ...
        def yearly_count(self, **filters: Any) -> int: ...
        def daily_counts(self, **filters: Any) -> dict[datetime.date, int]: ...
        def weekly_counts(self, **filters: Any) -> dict[datetime.date, int]: ...
        def monthly_counts(self, **filters: Any) -> dict[datetime.date, int]: ...
        def yearly_counts(self, **filters: Any) -> dict[datetime.date, int]: ...
        def add(self, **fields: Any) -> models.Model | None: ...
        def delete(self, **filters: Any) -> bool: ...
        def rebuild(self, **filters: Any) -> None: ...
        def flush_all(self) -> None: ...

    # ------------------------------------------------------------ plumbing
    def _cache_may_serve(self) -> bool:
        """Whether the cache alone may answer, decided without a database
        read (a due repair pass reads its table: the sync path runs it)."""
        # Not ``_use_db()``: its repair check may run a pass (a database
        # read) once the last one is due, which ``fresh`` never does.
        if self.disable_cache or self._pending_writes():
            return False
        worker.ensure_started()
        return _repairs.fresh(self._resolve().db_alias)

    def _cached_lists(
        self, requests: list[tuple[Index, tuple[Any, ...]]], budget: float | None = None
    ) -> list[Sequence[Any] | None] | None:
        """Each list the cache holds whole, else None in its place. With
        ``budget`` (on the loop's thread): None when the I/O would hold the
        thread longer than that."""
        if not self._cache_may_serve():
            return [None] * len(requests)
        try:
            found = self._engine().get_cached(requests, self._resolve().source.rows, budget)
        except CacheUnavailable as exc:
            self._unavailable(exc)
            return [None] * len(requests)
        return None if found is None else list(found)

    async def _lists(self, requests: list[tuple[Index, tuple[Any, ...]]]) -> list[Sequence[Any]]:
        # A hit is one round trip on a pooled connection: served on the
        # loop's thread when it takes less than ASYNC_INLINE_TIMEOUT (a
        # thread hop costs more than the round trip), else in a worker.
        budget = listy_settings().async_inline_timeout
        found = self._cached_lists(requests, budget) if budget else None
        if found is None:
            found = await off_loop(self._cached_lists, requests)
        assert found is not None
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            built = await in_orm_thread(self._build_lists)([requests[i] for i in missing])
            for i, records in zip(missing, built):
                found[i] = records
        return found  # type: ignore[return-value]

    def _build_lists(self, requests: list[tuple[Index, tuple[Any, ...]]]) -> list[Sequence[Any]]:
        """In the ORM's thread: the lists the cache did not hold, complete."""
        return [self._get(index, values, complete=True) for index, values in requests]

    def _cache_only(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T | NeedsDatabase:
        """In a worker thread: ``func`` with every database read refused."""
        if not self._cache_may_serve():
            return NeedsDatabase("the cache may not serve now")
        with cache_only():
            try:
                return func(*args, **kwargs)
            except NeedsDatabase as exc:
                return exc

    async def _answer(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``func``'s answer from the cache alone, or else from the ORM's thread."""
        found = await off_loop(functools.partial(self._cache_only, func, *args, **kwargs))
        if isinstance(found, NeedsDatabase):
            return await in_orm_thread(func)(*args, **kwargs)
        return found

    # ------------------------------------------------------------ reads
    async def aget(self, **filters: Any) -> Sequence[Any]:
        """``get()``, awaitable: the same lazy sequence, complete (iterating
        it does no I/O)."""
        index, values = self._index_for(filters)
        return (await self._lists([(index, values)]))[0]

    async def aget_one(self, pk: Any) -> models.Model | None:
        """``get_one()``, awaitable."""
        resolved = self._resolve()
        if resolved.pk_index is None:
            raise self._not_cachable("aget_one() needs a ('pk',) index")
        pk = self._coerce("pk", self.model._meta.pk, pk)
        found = middleware.lookup(self.model, pk)
        if found is not None:
            return cast(models.Model, found)
        records = (await self._lists([(resolved.pk_index, (pk,))]))[0]
        return records[0] if records else None

    async def aget_first(self, **filters: Any) -> models.Model | None:
        """``get_first()``, awaitable."""
        records = await self.aget(**filters)
        return records[0] if records else None

    async def aget_multi(
        self,
        filters: Iterable[Mapping[str, Any]],
        key_func: Callable[[Mapping[str, Any]], Any] | None = None,
    ) -> dict[Any, Sequence[Any]]:
        """``get_multi()``, awaitable: one batched round trip for the hits."""
        filters = list(filters)
        key = key_func or default_key
        found = await self._lists([self._index_for(f) for f in filters])
        return {key(f): r for f, r in zip(filters, found)}

    async def aget_multi_list(self, filters: Iterable[Mapping[str, Any]]) -> list[Any]:
        """``get_multi_list()``, awaitable."""
        out: list[Any] = []
        for records in await self._lists([self._index_for(f) for f in filters]):
            out.extend(records)
        return out

    async def acount(self, **filters: Any) -> int:
        """``count()``, awaitable."""
        return await self._answer(self.count, **filters)

    async def adaily_count(self, **filters: Any) -> int:
        """``daily_count()``, awaitable."""
        return await self._answer(self.daily_count, **filters)

    async def aweekly_count(self, **filters: Any) -> int:
        """``weekly_count()``, awaitable."""
        return await self._answer(self.weekly_count, **filters)

    async def amonthly_count(self, **filters: Any) -> int:
        """``monthly_count()``, awaitable."""
        return await self._answer(self.monthly_count, **filters)

    async def ayearly_count(self, **filters: Any) -> int:
        """``yearly_count()``, awaitable."""
        return await self._answer(self.yearly_count, **filters)

    async def adaily_counts(self, **filters: Any) -> dict[datetime.date, int]:
        """``daily_counts()``, awaitable."""
        return await self._answer(self.daily_counts, **_listed(filters))

    async def aweekly_counts(self, **filters: Any) -> dict[datetime.date, int]:
        """``weekly_counts()``, awaitable."""
        return await self._answer(self.weekly_counts, **_listed(filters))

    async def amonthly_counts(self, **filters: Any) -> dict[datetime.date, int]:
        """``monthly_counts()``, awaitable."""
        return await self._answer(self.monthly_counts, **_listed(filters))

    async def ayearly_counts(self, **filters: Any) -> dict[datetime.date, int]:
        """``yearly_counts()``, awaitable."""
        return await self._answer(self.yearly_counts, **_listed(filters))

    # ------------------------------------------------------------ writes
    async def aadd(self, **fields: Any) -> models.Model | None:
        """``add()``, awaitable: runs in the ORM's thread (``atomic`` and
        ``on_commit`` as in sync code)."""
        return await in_orm_thread(self.add)(**fields)

    async def adelete(self, **filters: Any) -> bool:
        """``delete()``, awaitable: runs in the ORM's thread."""
        return await in_orm_thread(self.delete)(**filters)

    async def arebuild(self, **filters: Any) -> None:
        """``rebuild()``, awaitable: runs in the ORM's thread."""
        await in_orm_thread(self.rebuild)(**filters)

    async def aflush_all(self) -> None:
        """``flush_all()``, awaitable: cache I/O only, off the loop."""
        await off_loop(self.flush_all)


def default_key(filters: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """``get_multi``'s default ``key_func``: the sorted ``(name, value)`` pairs."""
    return tuple(sorted((k, v.pk if isinstance(v, models.Model) else v) for k, v in filters.items()))


def _listed(filters: Mapping[str, Any]) -> dict[str, Any]:
    """Filters with any one-shot iterable (a generator of dates) made a
    list, so that a second try reads the same dates."""
    plain = (str, bytes, Mapping, models.Model)
    return {k: v if isinstance(v, plain) or not isinstance(v, Iterable) else list(v) for k, v in filters.items()}


__all__ = ["WORKERS", "AsyncCalls", "default_key", "in_orm_thread", "off_loop"]
