"""Type stub of ``listy._native``, the PyO3 binding of ``listy-core``.

The Django side (the ``listy`` package) is the only caller. Everything here is
engine: keys, codec, the memcached client, the list protocol. Python supplies
rows (``Loader``) and counts (``CountLoader``) on a miss.
"""

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, TypedDict, overload

# ---------------------------------------------------------------- exceptions
class ListyError(Exception):
    """Root of every Listy exception."""

class NotCachableException(ListyError):
    """Filters that match no configured index, or unknown field names."""

class CacheUnavailable(ListyError):
    """memcached is down or timed out (the Django side falls back to the DB)."""

class DecodeError(ListyError):
    """Bytes in the cache that are not a valid list for this schema."""

class ConfigError(ListyError):
    """Bad LISTY settings or a bad index declaration."""

# ---------------------------------------------------------------- store
class Store:
    """A memcached pool or the embedded in-process store."""

    kind: str
    batches: int
    """Batches sent by this process (one pipelined round trip per server each)."""

    @staticmethod
    def local(name: str = "default", max_item_size: int = 1048576) -> Store:
        """The embedded store named ``name`` (one per process and name)."""
    @staticmethod
    def memcached(
        servers: list[str],
        connect_timeout: float = 0.25,
        timeout: float = 0.5,
        max_item_size: int = 1048576,
    ) -> Store:
        """A pool over ``servers`` ("host:port", "host:port weight", "/socket")."""
    kind: Literal["local", "memcached"]
    def flush_all(self) -> None: ...
    def get_raw(self, key: str) -> bytes | None: ...
    def set_raw(self, key: str, value: bytes) -> None: ...
    def delete_raw(self, key: str) -> bool: ...
    def server_for(self, key: str) -> str: ...
    def stats(self) -> list[tuple[str, str, str]]:
        """(server, stat name, value) for every server."""

# ---------------------------------------------------------------- schema
FieldKind = Literal[
    "int", "bool", "float", "str", "bytes", "datetime", "date", "time",
    "decimal", "uuid", "json",
]

class Schema:
    """The packed layout of one model's records.

    ``fields`` is ``[(attname, kind, nullable), ...]``; the first field is the
    integer primary key. Inlined foreign-key fields are named
    ``"<fk attname>.<related attname>"`` (e.g. ``"entry_id.title"``) and are
    built into the related instance (see ``Engine(related=...)``).
    ``datetime`` values are aware UTC datetimes (or naive when ``aware`` is
    False) and are stored as microseconds.
    """

    def __init__(self, fields: list[tuple[str, FieldKind, bool]], aware: bool = True) -> None: ...
    fingerprint: int
    attnames: list[str]
    def pack(self, row: tuple[Any, ...], omit: list[str] = ...) -> bytes:
        """One record frame (for tests and the benchmark)."""

# ---------------------------------------------------------------- reads
class Records(Sequence[Any]):
    """A lazy, read-only list of model instances, newest first.

    Decoding happens on access; ``len()``/``bool()`` walk frame headers only.
    """

    key: str
    """The memcached key of the list (the head key for a segmented list)."""
    size: int
    """Bytes stored for this list, all parts (0 when served from the database)."""
    from_cache: bool
    complete: bool
    """False while only the head of a segmented list has been read."""
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...
    def values(self) -> list[tuple[Any, ...]]:
        """Rows as tuples in schema order (no model instances)."""
    def pks(self) -> list[int]: ...
    def index(self, value: Any) -> int: ...
    def count(self, value: Any) -> int: ...

# A loader returns the live rows of one list, newest first, each a tuple in
# schema order. Arguments: the index's field names and their values.
Loader = Callable[[tuple[str, ...], tuple[Any, ...]], list[tuple[Any, ...]]]
# A count loader returns the number of live rows of one list, optionally only
# those whose timestamp's local date is in [start_day, end_day) (days since
# 1970-01-01). Arguments: index fields, values, start_day, end_day.
CountLoader = Callable[[tuple[str, ...], tuple[Any, ...], int | None, int | None], int]

Period = Literal["day", "week", "month", "year"]

class WriteReport(TypedDict):
    """What a write could not do. ``failed_keys`` may now hold values that
    miss the write: repair them (``Engine.repair``) before serving them."""

    failed_keys: list[str]
    faults: list[str]

class Engine:
    """The list protocol for one model.

    ``indexes`` are tuples of attnames (sorted by the caller; the pk is the
    schema's first attname). ``model`` is the model label ("app.Model").
    ``model_class``/``state_class``/``db_alias`` tell the reader how to build
    instances: ``object.__new__(model_class)`` with ``__dict__`` filled from
    the record (plus the list's own key fields) and ``_state`` an instance of
    ``state_class`` with ``adding=False, db=db_alias``. ``related`` maps an FK
    attname (``"entry_id"``) to ``(field name, related model class, the related
    attname the FK value fills)`` for
    inlined foreign-key fields. ``on_build`` (optional) is called with each
    built instance and may return a replacement (the per-request registry).
    ``unique`` lists the attname sets no two rows share (the database's
    unique constraints): a list whose key fixes one holds one row at most and
    is written whole by an add, like a primary-key list. ``counter_epoch``:
    seconds after which the model-wide counters are counted afresh (None:
    never).
    """

    def __init__(
        self,
        store: Store,
        *,
        prefix: str,
        model: str,
        schema: Schema,
        indexes: list[tuple[str, ...]],
        model_class: type,
        state_class: type,
        db_alias: str = "default",
        related: dict[str, tuple[str, type, str]] | None = None,
        on_build: Callable[[Any], Any] | None = None,
        unique: list[list[str]] | None = None,
        counter_epoch: float | None = None,
    ) -> None: ...

    hits: int
    misses: int
    def reset_stats(self) -> None: ...
    @property
    def contract(self) -> dict[str, Any]:
        """What another client of these lists must match, as this engine
        holds it: ``engine_label``, ``key_prefix``, ``fields`` (``(name,
        kind, nullable)`` in record order), ``schema_fingerprint``,
        ``indexes`` and ``unique`` (sorted attnames), ``counter_epoch``
        (seconds, None: never ends). See ``manage.py listy_schema``."""

    def key(self, index: tuple[str, ...], values: tuple[Any, ...]) -> str:
        """The literal memcached key of a list (prefix and generation included)."""

    def get(
        self, index: tuple[str, ...], values: tuple[Any, ...], loader: Loader, complete: bool = False
    ) -> Records:
        """The list; on a miss, takes the lease, calls ``loader`` and stores it.
        If the cache is unavailable, returns the loader's rows uncached. A list
        stored in segments is read head first (the newest records) unless
        ``complete``; the rest is fetched when an access goes past the head."""
    def get_multi(
        self, requests: list[tuple[tuple[str, ...], tuple[Any, ...]]], loader: Loader
    ) -> list[Records]:
        """Several lists in one batched round trip; misses are rebuilt."""

    def add(self, row: tuple[Any, ...], loader: Loader, day: int | None = None) -> WriteReport:
        """A new row: prepend its record to every list of every registered
        index it belongs to (one pipelined round trip); lists not cached are
        built with ``loader``. ``day`` is the local date of the timestamp
        field (days since epoch) for the period counters."""
    def delete(self, row: tuple[Any, ...], day: int | None = None, hard: bool = True) -> WriteReport:
        """A removed row: prepend a tombstone to every list it was in.
        ``hard=True`` (a real DELETE: the pk never comes back) makes the
        tombstone win over any record of that pk, whatever order they arrive
        in; ``hard=False`` (soft delete, disable) lets a later ``add`` revive it."""
    def bury(self, row: tuple[Any, ...]) -> WriteReport:
        """A row deleted for good that no list held when it went (soft-deleted
        or disabled): final tombstones hide any late frame of it; counters
        stay as they are."""
    def update(
        self, old: tuple[Any, ...], new: tuple[Any, ...], loader: Loader,
        old_day: int | None = None, new_day: int | None = None,
    ) -> WriteReport:
        """A changed row: lists it left get a tombstone, lists it is in get the
        new record; counters move only where the row changed lists/buckets."""
    def rebuild(self, index: tuple[str, ...], values: tuple[Any, ...], loader: Loader) -> None: ...
    def flush(self) -> None:
        """Drops every list and counter of this model at once (new generation)."""
    def repair(self, keys: list[str]) -> list[str]:
        """Deletes keys a failed write may have left stale (``failed_keys`` of a
        write report); returns the keys still unreachable."""

    def count(
        self, index: tuple[str, ...], values: tuple[Any, ...], loader: Loader, counter: CountLoader
    ) -> int:
        """Live rows of the list, counted from the list itself (read or built
        with ``loader``; the count is cached beside a list in segments, tagged
        with its head). ``index=()``: the whole model, from a counter built
        with ``counter`` and kept by every write's ``incr``/``decr``."""
    def period_counts(
        self,
        index: tuple[str, ...],
        values: tuple[Any, ...],
        period: Period,
        timestamp: str,
        buckets: list[tuple[tuple[int, int], tuple[int, int]]],
        loader: Loader,
        counter: CountLoader,
    ) -> list[int]:
        """Counts of the rows whose ``timestamp`` falls in each bucket, given as
        ``((start_day, end_day), (start_us, end_us))``: local days since the
        epoch (the database and the model-wide counters use them) and the same
        span as stored instants, microseconds since the epoch (a list is
        counted by them)."""

    def inspect(self, index: tuple[str, ...], values: tuple[Any, ...]) -> dict[str, Any]:
        """{"key", "server", "size" (of the head), "raw": bytes|None, "frames": [...],
        "complete": a valid head, "segments": how many segments it names, "error"}."""
    def registered_indexes(self) -> list[tuple[str, ...]]:
        """The union of every client's indexes kept in the cache."""

def bucket_start(period: Period, day: int) -> int:
    """The first day (days since epoch) of the bucket containing ``day``."""
