"""Type stub of ``listy._native``, the PyO3 binding of ``listy-core``.

The Django side (the ``listy`` package) is the only caller. Everything here is
engine: keys, codec, the memcached client, the list protocol. Python supplies
rows (``Loader``) and counts (``CountLoader``) on a miss.
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, TypedDict, TypeVar, final, overload

_T = TypeVar("_T")

__version__: str
"""Cargo's package version, compiled in (``listy.__version__`` is this)."""

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
@final
class Store:
    """A memcached pool or the embedded in-process store."""

    kind: Literal["local", "memcached"]
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
        tls: bool = False,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        tls_server_name: str | None = None,
    ) -> Store:
        """A pool over ``servers`` ("host:port", "host:port weight", "/socket").
        ``tls``: every connection speaks TLS, the server verified against
        ``tls_ca_file`` (PEM; the system's roots when None) and
        ``tls_server_name`` (default: each server's host, sent as SNI);
        ``tls_cert_file``/``tls_key_file``: a client certificate."""
    def flush_all(self) -> None: ...
    def get_raw(self, key: str) -> bytes | None: ...
    def set_raw(self, key: str, value: bytes) -> None: ...
    def delete_raw(self, key: str) -> bool: ...
    def add_counts(self, deltas: list[tuple[str, int]]) -> list[int | None]:
        """Adds each delta to its counter (created at 0), one batched round
        trip; the new values (None: not written)."""
    def server_for(self, key: str) -> str: ...
    def stats(self) -> list[tuple[str, str, str]]:
        """(server, stat name, value) for every server."""

# ---------------------------------------------------------------- schema
FieldKind = Literal[
    "int", "bool", "float", "str", "bytes", "datetime", "date", "time",
    "decimal", "uuid", "json",
]

@final
class Schema:
    """The packed layout of one model's records.

    ``fields`` is ``[(attname, kind, nullable), ...]``; the first field is the
    integer primary key. Inlined foreign-key fields are named
    ``"<fk attname>.<related attname>"`` (e.g. ``"entry_id.title"``) and are
    built into the related instance (see ``Engine(related=...)``).
    ``datetime`` values are aware UTC datetimes (or naive when ``aware`` is
    False) and are stored as microseconds.
    """

    def __new__(cls, fields: list[tuple[str, FieldKind, bool]], aware: bool = True) -> Schema: ...
    fingerprint: int
    attnames: list[str]
    def pack(self, row: tuple[Any, ...], omit: list[str] = ...) -> bytes:
        """One record frame (for tests and the benchmark)."""

# ---------------------------------------------------------------- reads
@final
class Records(Sequence[Any]):
    """A lazy, read-only list of model instances, newest first.

    Decoding happens on access. A list stored in segments is read by parts:
    ``len()``/``bool()`` count from the head's index (two round trips at
    most), an index or a slice reads the segments it falls in, iteration
    reads one segment at a time, and ``after``/``before`` read the segments
    whose pk range can hold the page.
    """

    key: str
    """The memcached key of the list (the head key for a segmented list)."""
    size: int
    """Bytes stored for this list, all parts (0 when served from the database)."""
    from_cache: bool
    fault: FaultKind | None
    """Why the cache was bypassed for this list, or None."""
    complete: bool
    """False while only the head of a segmented list has been read."""
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, i: int, /) -> Any: ...
    @overload
    def __getitem__(self, i: slice, /) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...
    def values(self) -> list[tuple[Any, ...]]:
        """Rows as tuples in schema order (no model instances)."""
    def pks(self) -> list[int]: ...
    def after(self, pk: int | None, limit: int = 20) -> list[Any]:
        """A keyset page: up to ``limit`` instances whose pk is below ``pk``
        (from the top when None), largest pk first, as the ORM's
        ``filter(pk__lt=pk).order_by("-pk")[:limit]``."""
    def before(self, pk: int | None, limit: int = 20) -> list[Any]:
        """The ``limit`` instances with the smallest pks above ``pk``,
        largest pk first (the page a reverse cursor shows)."""
    def index(self, value: Any) -> int: ...  # type: ignore[override]  # no start/stop
    def count(self, value: Any) -> int: ...
    def __contains__(self, value: object, /) -> bool: ...

@final
class RecordsIter(Iterator[Any]):
    """The iterator of a ``Records`` (instances built one at a time)."""

    def __iter__(self) -> RecordsIter: ...
    def __next__(self) -> Any: ...

# A loader returns the live rows of one list, newest first, each a tuple in
# schema order. Arguments: the index's field names and their values.
Loader = Callable[[tuple[str, ...], tuple[Any, ...]], list[tuple[Any, ...]]]
# A count loader returns the number of live rows of one list, optionally only
# those whose timestamp's local date is in [start_day, end_day) (days since
# 1970-01-01). Arguments: index fields, values, start_day, end_day.
RowState = tuple[tuple[Any, ...], bool, int | None]
"""A row as one engine sees it: its values in schema order, whether lists
hold it, and the local day of its timestamp field (days since 1970-01-01)."""

CountLoader = Callable[[tuple[str, ...], tuple[Any, ...], int | None, int | None], int]
#: ``model_counter(start_day, end_day)``: the whole model's live rows and the
#: tags (write intent ids) of the writes committed in the same snapshot.
ModelCountLoader = Callable[[int | None, int | None], tuple[int, list[int]]]

Period = Literal["day", "week", "month", "year"]

FaultKind = Literal["unreachable", "protocol", "too_large", "contended", "other"]
"""Why a read bypassed the cache or a write fell short (``listy_core::fault``)."""

EngineEvent = Literal["lease_lost", "compacted", "segment_split"]
"""What ``Engine(on_event=...)`` is called with, as ``(kind, key, detail)``:
detail is 0, the dead frames dropped, or the parts stored."""

class WriteReport(TypedDict):
    """What a write could not do. ``failed_keys`` may now hold values that
    miss the write: repair them (``Engine.repair``) before serving them."""

    failed_keys: list[str]
    faults: list[str]
    """What happened, for the log (one message per fault)."""
    fault_kinds: list[FaultKind]
    """The kind of each fault, in the same order: decide on these."""
    pk_list_found: bool | None
    """For an insert: whether its row's primary-key list existed already
    (the engine then settled it); None when none was written."""
    may_leave_stale_keys: bool
    """Some fault may have left keys without this write (unreachable or
    protocol): they need repair even when ``failed_keys`` is empty."""

@final
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
    never). ``on_event(kind, key, detail)`` is called for each engine event
    (lease lost, compaction, segment split).
    """

    def __new__(
        cls,
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
        on_event: Callable[[EngineEvent, str, int], object] | None = None,
    ) -> Engine: ...

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

    def instances(self, rows: Iterable[tuple[Any, ...]]) -> list[Any]:
        """Model instances from rows in schema order (a loader's rows, values
        used as they are), built as cached records are: inlined foreign keys
        in ``_state.fields_cache``, each passed to ``on_build``. The list
        served when the cache is disabled or unavailable."""

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

    def settle_many(
        self, states: list[RowState], loader: Loader, rows_loader: Callable[[list[Any]], list[RowState]]
    ) -> WriteReport:
        """Settles rows written earlier in one batch: reads them again with
        ``rows_loader(pks)`` and writes the state of those the database holds
        otherwise now (frames only; rows gone are buried)."""
    def recreate(self, new: RowState, loader: Loader, row_loader: Callable[[Any], RowState | None]) -> WriteReport:
        """A row inserted under a primary key that may have been used before
        (a stale instance's save re-creating a deleted row, fixtures, an
        explicit pk): the earlier row's final tombstones would hide it, so
        the model's lists start afresh (new generation), then it is added."""
    def get_cached(
        self,
        requests: list[tuple[tuple[str, ...], tuple[Any, ...]]],
        loader: Loader,
        budget: float | None = None,
    ) -> list[Records | None] | None:
        """Lists served from the cache only, in one batched round trip:
        complete ``Records`` (segments included) for a list found whole, None
        for one that is missing, broken or being built elsewhere. Never takes
        a lease, never calls ``loader`` (kept by the records only). Raises
        ``CacheUnavailable`` when the store fails. With ``budget`` (seconds)
        the call holds its thread at most about so long, on pooled
        connections only; past it, the whole call returns None (try again
        without a budget, off the thread that cannot wait)."""

    def change(
        self,
        old: RowState | None,
        new: RowState | None,
        loader: Loader,
        row_loader: Callable[[Any], RowState | None],
    ) -> WriteReport:
        """A row change, after its commit: ``old``/``new`` are the row as
        stored before and after the write, ``(row, listed, day)`` (None: the
        row did not exist / was deleted). The engine sends every frame and
        counter move (records where the row is listed, tombstones where it
        left, final ones when it is gone, lists not cached built with
        ``loader``), then settles a change to an existing row: reads it again
        with ``row_loader(pk)`` and writes the database's state if another
        writer changed it meanwhile."""
    def change_many(
        self,
        pairs: Iterable[tuple[RowState | None, RowState | None]],
        loader: Loader,
        rows_loader: Callable[[list[Any]], Iterable[RowState]],
        recount: bool = False,
        generation: int | None = None,
    ) -> WriteReport:
        """Many row changes, after their commit, in one pipelined batch:
        each pair is ``(old, new)`` as for ``change``. Frames bound for one
        list go as one prepend, counter moves as one sum per counter; lists
        found missing are left to the next read. Changes of existing rows
        are settled with one ``rows_loader(pks)`` call per round (the
        states of the rows still stored, in any order). ``recount``: the
        model-wide counters the changes touch are deleted (counted afresh
        by the next read) instead of moved, for a writer that cannot tell
        whether its insert inserted the row or met the one a concurrent
        writer inserted."""
    def follow_changes(self, changes: list[tuple[RowState | None, RowState | None]]) -> WriteReport:
        """Row changes read from the database's change stream, in commit
        order, applied as its follower does: one pipelined batch of frames
        (idempotent per primary key), the model-wide counters they touch
        deleted (recounted on the next read) instead of moved, no settle, no
        list built."""
    def rebuild(self, index: tuple[str, ...], values: tuple[Any, ...], loader: Loader) -> None: ...
    def flush(self) -> None:
        """Drops every list and counter of this model at once (new generation)."""
    def repair(self, keys: list[str]) -> list[str]:
        """Deletes keys a failed write may have left stale (``failed_keys`` of a
        write report); returns the keys still unreachable."""

    def generation_seen(self) -> int | None:
        """The model's generation as this engine last saw it (no round trip;
        None before its first contact): read before a delete commits, for
        ``change_many(..., generation=...)``, which then skips its read for
        rows inserted again under their key when no generation started
        meanwhile."""
    def count(
        self,
        index: tuple[str, ...],
        values: tuple[Any, ...],
        loader: Loader,
        counter: CountLoader,
        model_counter: ModelCountLoader | None = None,
    ) -> int:
        """Live rows of the list, counted from the list itself (read or built
        with ``loader``; the count is cached beside a list in segments, tagged
        with its head). ``index=()``: the whole model, from a counter built
        with ``model_counter`` (or ``counter``) and moved by every write's
        tagged prepend (``with_write_tag``)."""
    def period_counts(
        self,
        index: tuple[str, ...],
        values: tuple[Any, ...],
        period: Period,
        timestamp: str,
        buckets: list[tuple[tuple[int, int], tuple[int, int]]],
        loader: Loader,
        counter: CountLoader,
        model_counter: ModelCountLoader | None = None,
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

def decode_pgoutput(data: bytes) -> tuple[Any, ...]:
    """One pgoutput message (protocol 1) as a tuple, its type first:
    ``("B", final_lsn, commit_time, xid)``, ``("C", commit_lsn, end_lsn,
    commit_time)``, ``("O", lsn, name)``, ``("R", oid, namespace, name,
    replica_identity, [(column, type_oid, typmod, is_key), ...])``, ``("Y",
    oid, namespace, name)``, ``("I"|"U"|"D", oid, old, new)`` with ``old`` =
    ``(image "K"|"O", values)`` or None and values ``bytes`` (text form),
    None (NULL) or ``...`` (unchanged TOAST), ``("T", options, [oid, ...])``,
    ``("M", transactional, lsn, prefix, content)``. ValueError names the
    offset of a message it cannot decode."""

def format_lsn(lsn: int) -> str:
    """A pg_lsn in PostgreSQL's text form (``16/B374D848``)."""

def change_plan(old_listed: bool | None, new_listed: bool | None) -> Literal["nothing", "add", "remove", "delete", "bury", "move"]:
    """What ``Engine.change`` does for a row that lists held (or not) before
    and after (None: absent)."""

def utc_days(
    values: Iterable[Any], offset: Callable[[int], int | None], fallback: Callable[[Any], int | None]
) -> list[int | None]:
    """The local day numbers of ``values`` (``DayCache.many``): a datetime
    in ``datetime.timezone.utc`` by ``offset(hour)`` (the zone's UTC offset
    in microseconds for that hour since the epoch, asked once per hour;
    None: it changes within the hour), None as None, anything else by
    ``fallback(value)``."""

def bucket_start(period: Period, day: int) -> int:
    """The first day (days since epoch) of the bucket containing ``day``."""

def bucket_end(period: Period, day: int) -> int:
    """The first day after the bucket containing ``day``."""

class ParsedKey(TypedDict):
    model: str
    fingerprint: int
    generation: int
    fields: list[str]
    values: list[str | None]
    """Each value's text form, None for a null value."""

def meta_key(prefix: str, model: str) -> str:
    """The meta key of a model (deleting it moves the model to a new generation)."""

def parse_key(prefix: str, key: str) -> ParsedKey | None:
    """A list key read back into its parts; None for any other key (meta,
    counter, segment, a key shortened to a digest, another prefix)."""

def segment_key(head_key: str, build_id: int, index: int) -> str:
    """The key of segment ``index`` of the build ``build_id`` of a list."""

def canonical_index(fields: list[str]) -> list[str]:
    """The fields of an index in the engine's canonical order (sorted, each once)."""

class TrailerInfo(TypedDict):
    version: int
    fingerprint: int
    head: bool
    segments: int
    segment: int | None
    build_id: int
    offset: int
    len: int

def trailer(raw: bytes) -> TrailerInfo | None:
    """The trailer ``raw`` ends with (any layout), or None."""

def with_write_tag(tag: int, work: Callable[[], _T]) -> _T:
    """Calls ``work()`` with the model-wide counter moves of every write it
    makes on this thread tagged ``tag`` (a committed write's intent id; 0:
    untagged), so that a counter built while they are in flight counts them
    once. Returns what ``work`` returns."""

def is_lease(raw: bytes) -> bool:
    """True when ``raw`` ends with a builder's lease marker."""
