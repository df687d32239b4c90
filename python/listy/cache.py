"""``ListCache``: the public calls of Listy on one model (SPEC §2).

The facade: reads (``get``, ``get_multi``, ``count``, ...), maintenance
(``rebuild``, ``flush_all``, ``determine_coherency``) and statistics. The
rest stands below it, each in its own module: the declaration and the engine
(``listy.declaration``), writes and their cache work (``listy.writes``),
period counts (``listy.periods``), the lists served from the database
(``listy.records``). Nothing here is protocol: keys, records, leases and
prepends are the engine's (``listy._native.Engine``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, Generic, TypeVar, Unpack, cast

from django.db import models

from listy import events as _events
from listy import intents, middleware, registry, worker
from listy import outage as _outage
from listy import recorder as _recorder
from listy import repair as _repairs
from listy import shared_stats as _shared
from listy import store as _store
from listy.aio import AsyncCalls, default_key
from listy.conf import listy_settings
from listy.declaration import Index, Options, _middleware_on_build
from listy.exceptions import CacheUnavailable
from listy.inspection import is_list
from listy.periods import PeriodCounts
from listy.records import CachedList, CoherencyReport, FallbackRecords
from listy.source import Row
from listy.writes import SKIP_SIGNALS, Writes, in_listy_delete

logger = logging.getLogger("listy")


M = TypeVar("M", bound=models.Model)


class ListCache(Writes, PeriodCounts, AsyncCalls, Generic[M]):
    """The cached lists of one model.

    ``ListCache(Model, caches, **options)`` takes the same arguments as
    :class:`listy.CachingManager`; every client of one model keeps the others'
    lists right. Generic in the model: ``ListCache(User, [("pk",)])`` is a
    ``ListCache[User]`` whose ``get()`` is a ``Sequence[User]``.
    """

    model: type[M]

    def __init__(self, model: type[M], caches: Iterable[Sequence[str]], **options: Unpack[Options]) -> None:
        super().__init__(model, caches, **options)

    # ------------------------------------------------------------ reads
    def _from_db(self, index: Index, values: tuple[Any, ...], key: str = "") -> FallbackRecords:
        rows = self._resolve().source.rows(index, values)
        # The engine's builder makes the instances, as it does for cached
        # records (inlined foreign keys, the middleware's ``on_build``);
        # making an engine does no I/O, so this works with the cache down.
        records = FallbackRecords(key, rows, self._engine().instances(rows))
        _recorder.note(records)
        return records

    def _unavailable(self, exc: Exception) -> None:
        _repairs.note_fault()
        _outage.fault(exc, "read", self.model, f"read of {self.model._meta.label}")

    def _server_for(self, key: str) -> str:
        return _store.get_store(self.address() if self.address is not None else None).server_for(key)

    def _after_read(self, records: Any) -> None:
        """Counts, signals and logs what a read from the engine did: served
        from the cache, built from the database (``list_built``), or read
        from the database because of a fault (``cache_fault``)."""
        _recorder.note(records)
        if _shared.due():
            _shared.publish(_label_counts())
        if records.from_cache:
            if _outage.is_down():
                _outage.answered(self._server_for(records.key))
            return
        _repairs.note_read(records)
        fault = records.fault
        label = self.model._meta.label
        if fault is None:
            logger.debug("listy: miss %s %s: read from the database (%d bytes stored)", label, records.key, records.size)
            _events.send(_events.list_built, "lists_built", self.model, key=records.key, size=records.size, rows=len(records))
            if _outage.is_down():
                _outage.answered(self._server_for(records.key))
        elif fault in ("unreachable", "protocol"):
            server = self._server_for(records.key)
            _outage.fault_at(server, f"memcached server {server}: {fault} fault", "read", self.model, f"read of {label}")
        else:
            logger.debug("listy: %s %s served from the database (%s)", label, records.key, fault)

    def _use_db(self) -> bool:
        """Reads go to the database: cache disabled (this client, or all of
        Listy by ``LISTY["ENABLED"] = False``), uncommitted Listy writes in
        this transaction, or keys a failed write left (here or in another
        process) that are not repaired yet (``listy.repair``)."""
        if self.disable_cache or not listy_settings().enabled or self._pending_writes():
            return True
        worker.ensure_started()
        return not _repairs.ready(self, self._resolve().db_alias)

    def _get(self, index: Index, values: tuple[Any, ...], complete: bool = False) -> CachedList[M]:
        if self._use_db():
            return cast("CachedList[M]", self._from_db(index, values))
        try:
            engine = self._engine()
            records = engine.get(index, values, self._resolve().source.rows, complete)
        except CacheUnavailable as exc:
            self._unavailable(exc)
            return cast("CachedList[M]", self._from_db(index, values))
        self._after_read(records)
        return cast("CachedList[M]", records)

    def get(self, **filters: Any) -> CachedList[M]:
        """The list of live instances matching ``filters``, newest first.

        A lazy, read-only sequence: ``len()``, ``bool()``, indexing and
        slicing work without building every instance (a list stored in
        segments reads only the segments an access needs). ``after(pk)`` /
        ``before(pk)`` give keyset pages for cursor pagination. ``filters``
        must match one configured index exactly, else ``NotCachableException``.
        """
        self._sync_only("get")
        if _recorder.active() is not None:  # the debug-toolbar panel
            return _recorder.record(self, "get", filters, lambda: self.get(**filters))
        index, values = self._index_for(filters)
        return self._get(index, values)

    def get_one(self, pk: Any) -> M | None:
        """The instance with primary key ``pk``, or None (needs a ``("pk",)`` index)."""
        self._sync_only("get_one")
        return self._get_one(pk)

    def _get_one(self, pk: Any) -> M | None:
        """``get_one`` without the event-loop guard: also what serves
        ``objects.get(pk=...)`` and foreign-key access (``listy.manager``)."""
        if _recorder.active() is not None:  # the debug-toolbar panel
            return _recorder.record(self, "get_one", {"pk": pk}, lambda: self._get_one(pk))
        resolved = self._resolve()
        if resolved.pk_index is None:
            raise self._not_cachable("get_one() needs a ('pk',) index")
        pk = self._coerce("pk", self.model._meta.pk, pk)
        found = middleware.lookup(self.model, pk)
        if found is not None:
            return cast(M, found)
        return next(iter(self._get(resolved.pk_index, (pk,))), None)

    def get_first(self, **filters: Any) -> M | None:
        """The first (newest) instance of the list, or None."""
        self._sync_only("get_first")
        records = self.get(**filters)
        return records[0] if records else None

    def _get_many(self, filters: list[Mapping[str, Any]]) -> list[Sequence[M]]:
        requests = [self._index_for(f) for f in filters]
        if self._use_db():
            return [cast("Sequence[M]", self._from_db(i, v)) for i, v in requests]
        try:
            found = list(self._engine().get_multi(requests, self._resolve().source.rows))
        except CacheUnavailable as exc:
            self._unavailable(exc)
            return [cast("Sequence[M]", self._from_db(i, v)) for i, v in requests]
        for records in found:
            self._after_read(records)
        return cast("list[Sequence[M]]", found)

    def get_multi(
        self,
        filters: Iterable[Mapping[str, Any]],
        key_func: Callable[[Mapping[str, Any]], Any] | None = None,
    ) -> dict[Any, Sequence[M]]:
        """``{key_func(f): list}`` for each filter dict, fetched in one
        batched round trip; missing lists are rebuilt from the database.
        ``key_func`` defaults to the sorted ``(name, value)`` pairs."""
        self._sync_only("get_multi")
        filters = list(filters)
        if _recorder.active() is not None:  # the debug-toolbar panel
            return _recorder.record(self, "get_multi", {"filters": filters}, lambda: self.get_multi(filters, key_func))
        key = key_func or default_key
        return {key(f): r for f, r in zip(filters, self._get_many(filters))}

    def get_multi_list(self, filters: Iterable[Mapping[str, Any]]) -> list[M]:
        """All instances of all the lists, in order, as one flat list."""
        self._sync_only("get_multi_list")
        out: list[M] = []
        for records in self._get_many(list(filters)):
            out.extend(records)
        return out

    # ------------------------------------------------------------ counts
    def count(self, **filters: Any) -> int:
        """Number of live rows matching ``filters`` (none: the whole model)."""
        self._sync_only("count")
        if _recorder.active() is not None:  # the debug-toolbar panel
            return _recorder.record(self, "count", filters, lambda: self.count(**filters))
        index, values = self._index_for(filters, allow_all=True)
        source = self._resolve().source
        if self._use_db():
            return source.count(index, values)
        try:
            return self._engine().count(index, values, source.rows, source.count, partial(intents.model_count, source))
        except CacheUnavailable as exc:
            self._unavailable(exc)
            return source.count(index, values)

    # ------------------------------------------------------------ maintenance
    def _all_indexes(self) -> list[Index]:
        own = self._resolve().indexes
        try:
            registered = [tuple(i) for i in self._engine().registered_indexes()]
        except CacheUnavailable:
            registered = []
        return list(dict.fromkeys(own + registered))

    def rebuild(self, **filters: Any) -> None:
        """Re-reads from the database every cached list the filters name: the
        list of the index the filters match, and the lists of every index
        with more fields whose other values the database's (or the cached
        list's) rows hold. With no filters, drops every list (``flush_all``)
        so that each is rebuilt on its next read."""
        self._sync_only("rebuild")
        if self.disable_cache:
            return
        logger.debug("listy: rebuild %s %s", self.model._meta.label, filters or "(everything: a new generation)")
        norm = self._normalise(filters)
        engine = self._engine()
        source = self.source
        if not norm:
            engine.flush()
            return
        keys = frozenset(norm)
        indexes = self._all_indexes()
        attnames = self.schema.attnames
        exact = [i for i in indexes if frozenset(i) == keys]
        wider = [i for i in indexes if keys < frozenset(i)]
        if not exact and not wider:
            raise self._not_cachable(f"no cached index contains the fields ({', '.join(filters)})")
        cached_rows: list[Row] = []
        if exact and wider:
            values = tuple(norm[a] for a in exact[0])
            cached_rows = engine.get(exact[0], values, source.rows).values()
        for index in exact:
            engine.rebuild(index, tuple(norm[a] for a in index), source.rows)
        for index in wider:
            targets = set(source.index_values(index, norm))
            pos = [attnames.index(a) for a in index]
            targets.update(tuple(r[p] for p in pos) for r in cached_rows)
            for values in sorted(targets, key=repr):
                engine.rebuild(index, values, source.rows)

    def flush_all(self) -> None:
        """Drops everything this model has cached, at once (new generation),
        for every client of the model in this process."""
        self._sync_only("flush_all")
        logger.debug("listy: flush_all %s (a new generation)", self.model._meta.label)
        for client in self.writers():
            client.engine.flush()

    def determine_coherency(self, check_against_db: bool = False) -> Iterator[CoherencyReport]:
        """Yields one report per list that the database's rows make, for
        every index: key, cached, size, count, and (with
        ``check_against_db``) whether the cached list equals the database."""
        engine = self._engine()
        source = self.source
        for index in self._all_indexes():
            for values in source.index_values(index):
                info = engine.inspect(index, values)
                cached = is_list(info)  # a whole list, or the head of a segmented one
                count = 0
                coherent: bool | None = None
                if cached:
                    records = engine.get(index, values, source.rows)
                    cached_rows = records.values()
                    count = len(cached_rows)
                    if check_against_db:
                        db_rows = source.rows(index, values)
                        coherent = {r[0]: r for r in cached_rows} == {r[0]: r for r in db_rows} and len(
                            cached_rows
                        ) == len(db_rows)
                yield CoherencyReport(
                    key=info["key"],
                    cached=cached,
                    size=records.size if cached else int(info.get("size") or 0),  # all parts
                    count=count,
                    coherent=coherent,
                    index=index,
                    values=values,
                )

    def key(self, **filters: Any) -> str:
        """The literal memcached key of the list the filters name."""
        index, values = self._index_for(filters, allow_all=True)
        return self._engine().key(index, values)

    # ------------------------------------------------------------ statistics
    @property
    def hits(self) -> int:
        """Lists served from the cache by this process."""
        state = self._state
        live = state[2].hits if state is not None and state[2] is not None else 0
        return self._stats[0] + live

    @property
    def misses(self) -> int:
        """Lists this process had to build from the database."""
        state = self._state
        live = state[2].misses if state is not None and state[2] is not None else 0
        return self._stats[1] + live



def _engine_counts() -> tuple[int, int]:
    """(hits, misses) of every client of this process (``listy.events.metrics``)."""
    hits = misses = 0
    for model in registry.all_models():
        for client in registry.clients(model):
            if isinstance(client, ListCache):
                hits += client.hits
                misses += client.misses
    return hits, misses


def _label_counts() -> dict[str, tuple[int, int]]:
    """Engine label → (hits, misses) of this process (``listy.shared_stats``)."""
    out: dict[str, tuple[int, int]] = {}
    for model in registry.all_models():
        for client in registry.clients(model):
            if isinstance(client, ListCache) and client.address is None:
                hits, misses = out.get(client.engine_label, (0, 0))
                out[client.engine_label] = (hits + client.hits, misses + client.misses)
    return out


_events.engine_counts = _engine_counts

__all__ = ["SKIP_SIGNALS", "CoherencyReport", "FallbackRecords", "ListCache", "in_listy_delete"]
