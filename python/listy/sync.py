"""Following PostgreSQL's logical change stream: ``manage.py listy_sync``.

Owns what the follower of the stream does (SPEC §2, §3.6): setting the
stream up (``REPLICA IDENTITY FULL`` on the cached models' tables, a
publication for them, a ``pgoutput`` logical replication slot), reading it
through SQL (``pg_logical_slot_peek_binary_changes``), turning each row
image into the ``(row, listed, day)`` state of every client of its model,
handing each drained batch of committed transactions, in commit order, to
the engines (``Engine.follow_changes``), and acknowledging the slot only once
that cache work is done (``pg_replication_slot_advance``). It also holds the
deployment-wide advisory lock (one follower at a time) and reports the
slot's lag.

The binary messages are decoded by the engine's crate
(``listy._native.decode_pgoutput``); what a change does to lists and
counters is the engine's (``Engine.follow_changes``). Nothing here is protocol.

Why the SQL functions and not the streaming replication protocol: they need
an ordinary connection (no ``replication=database`` connection, no
feedback/keep-alive loop to keep), a peek is resumable by construction (the
slot only moves when we advance it, after the cache work), and a poll every
``interval`` seconds is well within the one-second visibility target. The
cost is that each peek decodes again from the slot's position; see
docs/deployment.md.

Idempotence: record and tombstone frames are idempotent per primary key (a
state already written changes nothing visible), so the follower applies
every committed change, also those a Django process already wrote (its
writes no signal reports are repaired that way too). Counter moves are not
idempotent, so the follower never moves a model-wide counter: it deletes the
ones its changes touch, and the next read counts them afresh under a lease
that the delete breaks if it lands during that count
(``ChangeOptions::follower`` in the engine). Django processes keep moving
them as before (read-your-writes).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from django.apps import apps as global_apps
from django.db import DatabaseError, connections, models

from listy import _native, registry
from listy import repair as _repairs
from listy import store as _store
from listy.conf import SyncSettings, listy_settings
from listy.exceptions import CacheUnavailable, ListyError
from listy.schema import PLACEHOLDER, Column
from listy.source import DjangoBackingStore, State
from listy.source import _from_db  # a value as the source's rows hold it
from listy.writes import Writes

logger = logging.getLogger("listy")

#: The first key of the advisory lock a follower holds (the second is the
#: slot name's hash): one follower per slot.
LOCK_CLASS = 0x4C5359  # "LSY"

#: Messages read per peek (whole transactions: a larger one comes whole).
BATCH_CHANGES = 20_000

#: Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
PG_EPOCH_MICROS = 946_684_800_000_000


class SyncError(ListyError):
    """The change stream cannot be followed; the message says what to do."""


def sync_settings() -> SyncSettings:
    """``LISTY["SYNC"]``, or the defaults when it is not set (a command
    line may still name a database, slot and publication)."""
    return listy_settings().sync or SyncSettings("default", "listy", "listy")


# ---------------------------------------------------------------- database
def _connection(alias: str) -> Any:
    conn = connections[alias]
    if conn.vendor != "postgresql":
        raise SyncError(
            f"listy_sync follows PostgreSQL's logical change stream; database {alias!r} is "
            f"{conn.vendor}. (MySQL/MariaDB binlog is not supported: repair with rebuild() / "
            "listy_check --fix after outside writes.)"
        )
    return conn


def _query(alias: str, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    with _connection(alias).cursor() as cur:
        cur.execute(sql, list(params))
        return list(cur.fetchall()) if cur.description else []


def wal_level(alias: str) -> str:
    """The server's ``wal_level`` (``logical`` is needed)."""
    return str(_query(alias, "SHOW wal_level")[0][0])


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def cached_models(alias: str) -> dict[str, type[models.Model]]:
    """Table name → model, for every model with an enabled ListCache whose
    writes go to ``alias``."""
    out: dict[str, type[models.Model]] = {}
    for model in registry.all_models():
        # models of the project's app registry only (not a test's isolated
        # apps), one table each (a proxy shares its concrete model's)
        if model._meta.apps is not global_apps or model._meta.proxy:
            continue
        client = _primary(model)
        if client is not None and client.db_alias == alias:
            out[model._meta.db_table] = model
    return out


def _primary(model: type[models.Model]) -> Writes | None:
    """The client whose ``writers()`` reach every enabled client of the model."""
    client = registry.primary(model)
    if isinstance(client, Writes) and not client.disable_cache:
        return client
    return next((c for c in registry.clients(model) if isinstance(c, Writes) and not c.disable_cache), None)


#: SQLSTATE → the grant that is missing, by what was being done.
_GRANTS = {
    "replica identity": "ownership of the table (ALTER TABLE ... REPLICA IDENTITY FULL): run --setup as the "
    "tables' owner, or ALTER TABLE <table> OWNER TO <user>",
    "publication": "CREATE on the database and ownership of the tables: GRANT CREATE ON DATABASE <db> TO <user>",
    "slot": "the REPLICATION attribute: ALTER ROLE <user> REPLICATION (on RDS/Aurora: GRANT rds_replication TO "
    "<user>; Cloud SQL: ALTER USER <user> WITH REPLICATION)",
    "read": "the REPLICATION attribute to read a slot: ALTER ROLE <user> REPLICATION",
    "lock": "nothing special (advisory locks are open to every user): check the connection",
}


def _run_privileged(alias: str, what: str, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    """Runs ``sql``; a permission error names the missing grant."""
    try:
        return _query(alias, sql, params)
    except DatabaseError as exc:
        cause = exc.__cause__ or exc
        if getattr(cause, "sqlstate", None) == "42501" or "permission denied" in str(exc).lower() or (
            "must be superuser or replication role" in str(exc)
        ):
            user = connections[alias].settings_dict.get("USER") or "the database user"
            raise SyncError(
                f"listy_sync: permission denied ({what}) for {user}: it needs {_GRANTS[what]}. ({exc})"
            ) from exc
        raise


def check_wal_level(alias: str) -> None:
    """Raises ``SyncError`` unless ``wal_level`` is ``logical``."""
    level = wal_level(alias)
    if level != "logical":
        raise SyncError(
            f"listy_sync needs wal_level = logical; database {alias!r} has {level!r}. Set it "
            "(ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL; on RDS/Aurora set the "
            "parameter rds.logical_replication = 1, on Cloud SQL the flag cloudsql.logical_decoding = on)."
        )


def setup(conf: SyncSettings, out: Callable[[str], None] = logger.info) -> None:
    """Creates or updates what the follower reads: ``REPLICA IDENTITY FULL``
    on every cached table (old row images), the publication of those
    tables, the logical replication slot. Idempotent."""
    alias = conf.database
    check_wal_level(alias)
    existing = set(_connection(alias).introspection.table_names())
    tables = sorted(t for t in cached_models(alias) if t in existing)
    missing = sorted(set(cached_models(alias)) - existing)
    if missing:
        out(f"not followed (no such table: run migrate, then --setup again): {', '.join(missing)}")
    if not tables:
        raise SyncError(f"listy_sync --setup: no model with a ListCache writes to database {alias!r}")
    for table in tables:
        _run_privileged(alias, "replica identity", f"ALTER TABLE {_quote(table)} REPLICA IDENTITY FULL")
    out(f"REPLICA IDENTITY FULL on {', '.join(tables)}")
    quoted = ", ".join(_quote(t) for t in tables)
    exists = _query(alias, "SELECT 1 FROM pg_publication WHERE pubname = %s", [conf.publication])
    verb = "ALTER PUBLICATION {} SET TABLE {}" if exists else "CREATE PUBLICATION {} FOR TABLE {}"
    _run_privileged(alias, "publication", verb.format(_quote(conf.publication), quoted))
    out(f"publication {conf.publication}: {len(tables)} tables")
    if _slot_row(conf) is None:
        _run_privileged(alias, "slot", "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [conf.slot])
        out(f"replication slot {conf.slot} created (pgoutput): changes from now on are followed")
    else:
        out(f"replication slot {conf.slot} exists: following resumes where it stopped")


def drop(conf: SyncSettings, out: Callable[[str], None] = logger.info) -> None:
    """Drops the slot (which stops retaining WAL) and the publication."""
    alias = conf.database
    if _slot_row(conf) is not None:
        _run_privileged(alias, "slot", "SELECT pg_drop_replication_slot(%s)", [conf.slot])
        out(f"replication slot {conf.slot} dropped")
    _run_privileged(alias, "publication", f"DROP PUBLICATION IF EXISTS {_quote(conf.publication)}")
    out(f"publication {conf.publication} dropped")


def _slot_row(conf: SyncSettings) -> tuple[Any, ...] | None:
    rows = _query(
        conf.database,
        "SELECT plugin, database, active, confirmed_flush_lsn::text, restart_lsn::text, "
        "pg_current_wal_lsn()::text, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
        "FROM pg_replication_slots WHERE slot_name = %s",
        [conf.slot],
    )
    return rows[0] if rows else None


def status(conf: SyncSettings) -> dict[str, Any] | None:
    """The slot's position and lag (None when there is no slot): the
    bytes of WAL written since the last acknowledged commit (``lag_bytes``)
    and the WAL it keeps on disk (``retained_bytes``), plus what the
    follower last reported (``follower``: changes applied, rate, lag)."""
    row = _slot_row(conf)
    if row is None:
        return None
    plugin, database, active, confirmed, restart, current, lag, retained = row
    out = {
        "slot": conf.slot,
        "plugin": plugin,
        "database": database,
        "active": bool(active),
        "confirmed_flush_lsn": confirmed,
        "current_lsn": current,
        "lag_bytes": int(lag or 0),
        "retained_bytes": int(retained or 0),
        "follower": None,
    }
    try:
        raw = _store.get_store().get_raw(_stats_key(conf))
    except CacheUnavailable:
        raw = None
    if raw:
        try:
            out["follower"] = json.loads(raw)
        except ValueError:
            pass
    return out


def _stats_key(conf: SyncSettings) -> str:
    return f"{listy_settings().key_prefix}listy_sync.{conf.database}.{conf.slot}"


# ---------------------------------------------------------------- row images
@dataclass
class _Writer:
    """One client of a relation's model and how to read its row from an image."""

    client: Writes
    source: DjangoBackingStore
    #: Per schema column: (image position or None for an inlined column, load, column).
    columns: list[tuple[int | None, Callable[[bytes], Any], Column]]
    #: (attname, image position, load) of the enabled / soft-delete flags.
    flags: list[tuple[str, int, Callable[[bytes], Any]]]
    changes: list[tuple[State | None, State | None]] = field(default_factory=list)


@dataclass
class _Relation:
    model: type[models.Model]
    writers: list[_Writer]


class _Loaders:
    """Text form → Python value, as the Django connection's psycopg loaders
    and the field's ``from_db_value`` make it (what a SELECT returns)."""

    def __init__(self, alias: str) -> None:
        from psycopg.pq import Format

        self.conn = connections[alias]
        self.conn.ensure_connection()
        self._raw = self.conn.connection
        self._format = Format.TEXT

    def for_column(self, type_oid: int, f: models.Field[Any, Any]) -> Callable[[bytes], Any]:
        cls = self._raw.adapters.get_loader(type_oid, self._format)
        load = cls(type_oid, self._raw).load if cls is not None else (lambda b: bytes(b).decode())
        convert = getattr(f, "from_db_value", None)
        conn = self.conn
        if convert is None:
            return load
        return lambda b: convert(load(b), None, conn)


def _relation(message: tuple[Any, ...], tables: dict[str, type[models.Model]], loaders: _Loaders) -> _Relation | None:
    _, _oid, _namespace, name, _identity, columns = message
    model = tables.get(name)
    if model is None:
        return None
    client = _primary(model)
    if client is None:
        return None
    position = {col[0]: i for i, col in enumerate(columns)}
    type_of = {col[0]: col[1] for col in columns}
    writers = []
    for w in client.writers():
        source = w.source
        cols: list[tuple[int | None, Callable[[bytes], Any], Column]] = []
        for col in source.schema.columns:
            if col.fk is not None:
                cols.append((None, bytes, col))
                continue
            db_col = col.field.column
            if db_col not in position:
                raise SyncError(
                    f"{model._meta.label}: column {db_col!r} is not in the change stream's relation "
                    f"{name!r} (a migration not applied?)"
                )
            cols.append((position[db_col], loaders.for_column(type_of[db_col], col.field), col))
        flags = []
        for attname in (source.enabled_field, source.soft_delete_field):
            if attname:
                f = cast("models.Field[Any, Any]", model._meta.get_field(attname))  # a concrete boolean field
                flags.append((attname, position[f.column], loaders.for_column(type_of[f.column], f)))
        writers.append(_Writer(w, source, cols, flags))
    return _Relation(model, writers)


class _Related:
    """Inlined foreign-key values, read once per batch and foreign key."""

    def __init__(self) -> None:
        self._found: dict[tuple[int, Any], dict[str, Any] | None] = {}

    def values(self, source: DjangoBackingStore, fk: Any, value: Any) -> dict[str, Any] | None:
        # fk: a ForeignKey (related_model, target_field), typed Any as django-stubs' Field has neither
        key = (id(fk), value)
        if key not in self._found:
            names = [c.field.attname for c in source.schema.columns if c.fk is fk]
            row = (
                fk.related_model._base_manager.db_manager(source.db_alias)
                .filter(**{fk.target_field.attname: value})
                .values_list(*names)
                .first()
            )
            self._found[key] = None if row is None else dict(zip(names, row))
        return self._found[key]


def _state(w: _Writer, image: tuple[Any, ...], related: _Related) -> State:
    """A row image (text values) as one writer's ``(row, listed, day)``."""
    row: list[Any] = []
    by_attname: dict[str, Any] = {}
    for pos, load, col in w.columns:
        if pos is None:
            continue
        raw = image[pos]
        value = None if raw is None else _from_db(col, load(raw))
        by_attname[col.attname] = value
    for pos, load, col in w.columns:
        if pos is not None:
            row.append(by_attname[col.attname])
            continue
        fk = col.fk
        assert fk is not None
        fk_value = by_attname.get(fk.attname)
        found = None if fk_value is None else related.values(w.source, fk, fk_value)
        if found is None:
            row.append(None if col.nullable else PLACEHOLDER[col.kind])
        else:
            row.append(found[col.field.attname])
    flags = {attname: (None if image[pos] is None else load(image[pos])) for attname, pos, load in w.flags}
    values = tuple(row)
    return values, w.source._listed(flags), w.source.day_of_row(values)


# ---------------------------------------------------------------- the follower
@dataclass
class Drained:
    """What one drain applied."""

    transactions: int = 0
    changes: int = 0
    truncates: int = 0
    flushes: int = 0
    #: Commit time (Unix seconds) of the last transaction applied.
    last_commit: float | None = None
    #: The LSN acknowledged (text form), if the slot moved.
    acknowledged: str | None = None
    #: Everything committed when the drain began was read (the batch did
    #: not cut it short).
    complete: bool = True


class Follower:
    """Reads the slot, applies committed transactions in commit order,
    acknowledges after the cache work. One per deployment (advisory lock)."""

    def __init__(self, conf: SyncSettings, *, batch: int = BATCH_CHANGES) -> None:
        self.conf = conf
        self.alias = conf.database
        self.batch = batch
        self.stop = threading.Event()
        self.total_changes = 0
        self.total_transactions = 0
        self.started = time.monotonic()
        self._locked = False

    # ------------------------------------------------------------ lock
    def lock(self, wait: bool = False, poll: float = 1.0) -> bool:
        """Takes the deployment-wide lock of this slot; with ``wait``, polls
        until it is free (or ``stop`` is set). False: another follower has it."""
        while True:
            got = _query(
                self.alias, "SELECT pg_try_advisory_lock(%s, hashtext(%s))", [LOCK_CLASS, self.conf.slot]
            )[0][0]
            if got:
                self._locked = True
                return True
            if not wait or self.stop.wait(poll):
                return False

    def unlock(self) -> None:
        """Releases the lock (it also goes with the connection)."""
        if self._locked:
            self._locked = False
            try:
                _query(self.alias, "SELECT pg_advisory_unlock(%s, hashtext(%s))", [LOCK_CLASS, self.conf.slot])
            except DatabaseError:
                pass

    # ------------------------------------------------------------ checks
    def check(self) -> None:
        """Raises ``SyncError`` when the stream is not set up."""
        check_wal_level(self.alias)
        row = _slot_row(self.conf)
        if row is None:
            raise SyncError(
                f"listy_sync: replication slot {self.conf.slot!r} does not exist: run "
                "`manage.py listy_sync --setup` first"
            )
        if row[0] != "pgoutput":
            raise SyncError(f"listy_sync: slot {self.conf.slot!r} uses plugin {row[0]!r}, not pgoutput")
        if not _query(self.alias, "SELECT 1 FROM pg_publication WHERE pubname = %s", [self.conf.publication]):
            raise SyncError(
                f"listy_sync: publication {self.conf.publication!r} does not exist: run "
                "`manage.py listy_sync --setup` first"
            )

    # ------------------------------------------------------------ stream
    def _peek(self) -> tuple[str, list[tuple[str, bytes]]]:
        """The current WAL position and the messages committed before it
        (at most ``batch``, whole transactions)."""
        upto = _query(self.alias, "SELECT pg_current_wal_lsn()::text")[0][0]
        rows = _run_privileged(
            self.alias,
            "read",
            "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, %s, "
            "'proto_version', '1', 'publication_names', %s)",
            [self.conf.slot, upto, self.batch, self.conf.publication],
        )
        return upto, [(lsn, bytes(data)) for lsn, data in rows]

    def _advance(self, lsn: str) -> None:
        _run_privileged(self.alias, "read", "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", [self.conf.slot, lsn])

    def _wait_for_cache(self, relations: Iterable[_Relation]) -> bool:
        """Waits while the store is unreachable (keeping the slot's place);
        False when asked to stop meanwhile."""
        delay = 0.2
        while True:
            try:
                for rel in relations:
                    for w in rel.writers:
                        w.client.engine.registered_indexes()
                return True
            except CacheUnavailable as exc:
                logger.warning("listy_sync: cache unavailable (%s); holding the slot's place, retrying", exc)
            if self.stop.wait(delay):
                return False
            delay = min(delay * 2, 5.0)

    def drain(self) -> Drained:
        """Applies what is committed now, at most ``batch`` messages' worth,
        and acknowledges it. Returns what it did."""
        upto, rows = self._peek()
        done = Drained()
        tables = cached_models(self.alias)
        loaders = _Loaders(self.alias)
        related = _Related()
        relations: dict[int, _Relation | None] = {}
        touched: dict[int, _Relation] = {}
        flushes: set[type[models.Model]] = set()
        end_lsn: str | None = None
        pending: list[tuple[str, int, Any, Any]] = []  # changes of the open transaction
        for _lsn, data in rows:
            msg = _native.decode_pgoutput(data)
            tag = msg[0]
            if tag == "R":
                relations[msg[1]] = _relation(msg, tables, loaders)
            elif tag in ("I", "U", "D"):
                pending.append(msg)
            elif tag == "T":
                for oid in msg[2]:
                    rel = relations.get(oid)
                    if rel is not None:
                        flushes.add(rel.model)
                done.truncates += 1
            elif tag == "B":
                pending = []
            elif tag == "C":
                for change in pending:
                    done.changes += self._collect(change, relations, touched, flushes, related)
                pending = []
                done.transactions += 1
                end_lsn = _native.format_lsn(msg[2])
                done.last_commit = (msg[3] + PG_EPOCH_MICROS) / 1e6
        if touched or flushes:
            if not self._wait_for_cache(touched.values()):
                return Drained()  # stopping: nothing acknowledged
            self._apply(touched, flushes)
            done.flushes = len(flushes)
        # Everything committed before ``upto`` came (unless the batch cut
        # it short): acknowledging ``upto`` also frees the WAL of
        # transactions that touched no cached table.
        done.complete = len(rows) < self.batch
        ack = upto if done.complete else end_lsn
        if ack is not None:
            self._advance(ack)
            done.acknowledged = ack
        self.total_changes += done.changes
        self.total_transactions += done.transactions
        return done

    def _collect(
        self,
        change: tuple[Any, ...],
        relations: dict[int, _Relation | None],
        touched: dict[int, _Relation],
        flushes: set[type[models.Model]],
        related: _Related,
    ) -> int:
        tag, oid, old, new = change
        rel = relations.get(oid)
        if rel is None or rel.model in flushes:
            return 0
        if (tag == "U" and old is None) or (old is not None and old[0] != "O"):
            # No whole old image (REPLICA IDENTITY is not FULL): which lists
            # the row left is unknown, so the model is flushed.
            logger.warning(
                "listy_sync: %s has no old row images (REPLICA IDENTITY FULL not set; run "
                "`manage.py listy_sync --setup`): flushing the model",
                rel.model._meta.label,
            )
            flushes.add(rel.model)
            return 0
        old_image = None if old is None else old[1]
        if new is not None and old_image is not None and Ellipsis in new:
            # unchanged TOASTed values come from the old image
            new = tuple(o if n is Ellipsis else n for n, o in zip(new, old_image))
        for w in rel.writers:
            before = None if old_image is None else _state(w, old_image, related)
            after = None if new is None else _state(w, new, related)
            w.changes.append((before, after))
        touched[oid] = rel
        return 1

    def _apply(self, touched: dict[int, _Relation], flushes: set[type[models.Model]]) -> None:
        """The cache work of one drain: each writer's changes in commit order
        in one batch; a truncated model flushed (a new generation). Keys a
        fault left behind go to ``listy.repair`` (deleted now, or queued for
        every process) before the slot moves, as a Django write's would."""
        for rel in touched.values():
            if rel.model in flushes:
                continue
            for w in rel.writers:
                if not w.changes:
                    continue
                try:
                    report = w.client.engine.follow_changes(w.changes)
                except CacheUnavailable:
                    _repairs.write_failed(w.client, None)
                    continue
                finally:
                    w.changes = []
                if report.get("failed_keys") or report.get("faults"):
                    logger.warning(
                        "listy_sync: cache write of %s incomplete (%s); repairing %d keys",
                        rel.model._meta.label,
                        "; ".join(report.get("faults") or []),
                        len(report.get("failed_keys") or []),
                    )
                    _repairs.write_failed(w.client, report)
        for model in flushes:
            client = _primary(model)
            if client is None:
                continue
            logger.info("listy_sync: %s truncated (or without old images): flushed", model._meta.label)
            for writer in client.writers():
                try:
                    writer.engine.flush()
                except CacheUnavailable:
                    _repairs.write_failed(writer, None)

    # ------------------------------------------------------------ loop
    def publish_stats(self, last: Drained, rate: float) -> None:
        """What ``listy_stats`` shows of the follower (kept in the store)."""
        lag = None if last.last_commit is None else max(0.0, time.time() - last.last_commit)
        doc = {
            "changes": self.total_changes,
            "transactions": self.total_transactions,
            "changes_per_s": round(rate, 1),
            "last_lag_s": None if lag is None else round(lag, 3),
            "acknowledged": last.acknowledged,
            "at": round(time.time(), 3),
        }
        try:
            _store.get_store().set_raw(_stats_key(self.conf), json.dumps(doc).encode())
        except CacheUnavailable:
            pass

    def run(self, *, once: bool = False, interval: float = 0.1) -> None:
        """Drains until ``stop`` is set (``once``: until nothing committed
        is left). A lost database connection is reopened and the lock taken
        again; ``once`` raises instead."""
        window_start, window_changes, rate = time.monotonic(), 0, 0.0
        while not self.stop.is_set():
            try:
                t0 = time.monotonic()
                done = self.drain()
            except DatabaseError as exc:
                if once:
                    raise
                logger.warning("listy_sync: database error (%s); reconnecting", exc)
                self._reconnect()
                continue
            now = time.monotonic()
            window_changes += done.changes
            if done.changes:
                self._log(done, now - t0)
            if now - window_start >= 1.0:
                rate = window_changes / (now - window_start)
                window_start, window_changes = now, 0
                self.publish_stats(done, rate)
            if done.complete:
                if once:
                    self.publish_stats(done, rate)
                    return
                self.stop.wait(interval)

    @staticmethod
    def _log(done: Drained, elapsed: float) -> None:
        lag = None if done.last_commit is None else time.time() - done.last_commit
        logger.info(
            "listy_sync: applied %d changes in %d transactions in %.3f s (%.0f changes/s); lag %s s; acknowledged %s",
            done.changes,
            done.transactions,
            elapsed,
            done.changes / elapsed if elapsed else 0.0,
            "-" if lag is None else f"{lag:.3f}",
            done.acknowledged,
        )

    def _reconnect(self) -> None:
        self._locked = False
        try:
            connections[self.alias].close()
        except DatabaseError:
            pass
        while not self.stop.wait(1.0):
            try:
                if self.lock(wait=True):
                    return
            except DatabaseError as exc:
                logger.warning("listy_sync: still no database (%s)", exc)
                try:
                    connections[self.alias].close()
                except DatabaseError:
                    pass

    def stop_on_signals(self) -> None:
        """SIGTERM and SIGINT end the loop after the current drain."""

        def handler(signum: int, frame: Any) -> None:
            logger.info("listy_sync: signal %d, stopping after the current batch", signum)
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


__all__ = ["Drained", "Follower", "SyncError", "check_wal_level", "drop", "setup", "status", "wal_level"]
