"""Writes through Listy: ``add()``, ``delete()``, and the cache work they and
the signal handlers (``listy.signals``) schedule.

Owns running ORM writes in the caller's transaction, reading each row as
stored before and after a write and handing both to every client's engine
(``plan_change``: ``Engine.change`` decides what that does to lists and
counters, and settles it), the fan-out to every client of the model
(``writers()``), running that work once
the transaction commits (``_after_commit``, ``_run_safely``: a failed cache
write is handed to ``listy.repair``), and telling reads when uncommitted
Listy writes make the cache unsafe to fill (``_pending_writes``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from functools import partial
from typing import Any

from django.db import IntegrityError, connections, models, transaction
from django.utils import timezone

from listy import _native, intents, origin, registry, worker
from listy import outage as _outage
from listy import recorder as _recorder
from listy import repair as _repairs
from listy.conf import listy_settings
from listy.declaration import Declaration, Index
from listy.exceptions import CacheUnavailable, ConfigError, NotCachableException
from listy.source import State, locked

logger = logging.getLogger("listy")

#: One piece of cache work: the client whose engine runs it, and the call.
Op = tuple["Writes", Callable[[], Any]]

#: (model, pk) pairs that Listy itself is deleting right now: the signal
#: handlers leave them alone (the cache work is already scheduled).
_deleting: ContextVar[frozenset[tuple[type, Any]]] = ContextVar("listy_deleting", default=frozenset())

#: Instance attribute that marks a save made by Listy itself.
SKIP_SIGNALS = "_listy_skip_signals"

class _WriteState(threading.local):
    """``pending`` is True in a thread that scheduled Listy cache work inside
    a transaction which may not have committed yet (database connections are
    per thread); reads then look at the connection's on-commit queue. A
    class default: a read's check raises and clears no AttributeError."""

    pending = False


_tls = _WriteState()


class Writes(Declaration):
    """The write half of a client (the facade ``listy.cache.ListCache`` adds reads)."""

    def _get(self, index: Index, values: tuple[Any, ...]) -> Sequence[Any]:
        """One list as a read serves it (``ListCache._get``): add()'s no-op
        check looks there first."""
        raise NotImplementedError

    def _insert(self, obj: models.Model, using: str) -> models.Model:
        """add()'s INSERT of a new live row; its lists follow on commit."""
        if self.soft_delete_field:
            setattr(obj, self.soft_delete_field, False)
        if self.enabled_field:
            setattr(obj, self.enabled_field, True)
        # A primary key given by the caller may have been used before.
        recreated = obj.pk is not None
        setattr(obj, SKIP_SIGNALS, True)
        try:
            obj.save(force_insert=True, using=using)
        finally:
            obj.__dict__.pop(SKIP_SIGNALS, None)
        # plan_change() reaches every enabled client, even from a disabled one
        self._after_commit(using, self.plan_change({}, obj, recreated=recreated))
        return obj

    def _unique_in_database(self, lookup: Mapping[str, Any]) -> bool:
        """Whether a unique field set lies within ``lookup``'s fields: then no
        two rows can match ``lookup`` and the database itself rejects a
        duplicate."""
        found = self._unique_field_sets()
        given = set()
        for name, value in lookup.items():
            f = self.model._meta.pk if name == "pk" else self._field(name)
            # NULLs are distinct to a unique constraint: they prove nothing.
            if f is not None and value is not None:
                given.add(f.attname)
        return any(unique <= given for unique in found)

    def _covering_index(self, lookup: Mapping[str, Any]) -> tuple[Index, tuple[Any, ...]] | None:
        """The cached index over exactly the fields given in ``lookup``, with
        their values: its (short) list holds every row identical to ``lookup``.
        A wider list would be read whole for one row; a SELECT is cheaper."""
        try:
            norm = self._normalise(lookup)
        except (NotCachableException, ValueError):
            return None
        index = self._resolve().by_set.get(frozenset(norm))
        return None if index is None else (index, tuple(norm[a] for a in index))

    def _identical_live_row_cached(self, lookup: Mapping[str, Any]) -> bool:
        """add()'s no-op check from the cache instead of a SELECT, when a
        cached list covers the given fields (and no soft-delete/enabled flag
        could make a matching row need reviving, which only the database
        knows)."""
        if self.soft_delete_field or self.enabled_field or self.disable_cache:
            return False
        covering = self._covering_index(lookup)
        if covering is None:
            return False
        norm = self._normalise(lookup)
        for obj in self._get(*covering):
            if all(getattr(obj, attname) == value for attname, value in norm.items()):
                return True
        return False

    def _constructor_kwargs(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """add()'s keyword arguments as the model's constructor takes them:
        a foreign key given by its id (``follower=5``, which the ORM's filters
        accept but its constructor does not) becomes ``follower_id=5``."""
        out: dict[str, Any] = {}
        for name, value in fields.items():
            f = self._field(name) if name != "pk" else None
            if (
                f is not None
                and f.is_relation
                and (f.many_to_one or f.one_to_one)
                and name == f.name
                and f.attname not in fields
                and value is not None
                and not isinstance(value, models.Model)
            ):
                name = f.attname
            out[name] = value
        return out

    def _live(self, obj: models.Model) -> bool:
        if self.enabled_field and not getattr(obj, self.enabled_field):
            return False
        if self.soft_delete_field and getattr(obj, self.soft_delete_field):
            return False
        return True

    def writers(self) -> list[Writes]:
        """This client and every other client of the model whose lists this
        one's writes would not reach: another store, or lists of another
        meaning (``filter_out_soft_deletes``). Clients that differ only in
        indexes or record schema share one registry in the cache, and the
        engine keeps all of their lists right from any one of them."""
        out: list[Writes] = []
        seen: set[tuple[int, str]] = set()
        # the registry knows clients by protocol; every one of them is a ListCache
        others = [c for c in registry.clients(self.model) if c is not self and isinstance(c, Writes)]
        for client in [self, *others]:
            if client.disable_cache:
                continue
            try:
                ident = client.store_identity()
            except ConfigError:
                continue
            if ident not in seen:
                seen.add(ident)
                out.append(client)
        return out

    def _run_safely(self, op: Callable[[], Any]) -> None:
        if not listy_settings().enabled:
            # LISTY["ENABLED"] is False: the cache is left alone, and the
            # model's lists are dropped (meta key deleted now, else queued for
            # every process) so that none that misses this write is served
            # once Listy is on again.
            _repairs.drop_lists(self)
            return
        try:
            report = op()
        except CacheUnavailable as exc:
            _outage.fault(exc, "write", self.model, f"{self.model._meta.label} written to the database only")
            _repairs.write_failed(self, None)
            return
        if isinstance(report, dict) and (report.get("failed_keys") or report.get("faults")):
            logger.warning(
                "listy: cache write of %s incomplete (%s); repairing %d keys",
                self.model._meta.label,
                "; ".join(report.get("faults") or []),
                len(report.get("failed_keys") or []),
            )
            # deleted now if the server answers, else queued in the
            # PendingRepair table for every process (listy.repair)
            _repairs.write_failed(self, report)

    def _after_commit(self, using: str, ops: list[Op]) -> None:
        """Runs ``ops`` once the transaction on ``using`` commits (at once
        outside one). Inside one, an intent is recorded with the write
        (``listy.intents``): if this process dies between COMMIT and the
        cache work, another process's worker starts the lists afresh."""
        if not ops:
            return
        worker.ensure_started()
        intent = intents.declare(using, self.model._meta.label)

        def work() -> None:
            for client, op in ops:
                client._run_safely(op)

        def run() -> None:
            run._listy_done = True  # type: ignore[attr-defined]
            worker.run_cache_work(using, intent, work)

        run._listy_model = self.model  # type: ignore[attr-defined]
        if connections[using].in_atomic_block:
            _tls.pending = True
        transaction.on_commit(run, using=using)

    def _pending_writes(self) -> bool:
        """True inside a transaction that has Listy writes of this model not
        yet committed: a list built now could hold rows that a rollback would
        take back, so reads go to the database without storing anything."""
        if not _tls.pending:
            return False
        conn = connections[self._resolve().db_alias]
        mine = others = False
        if conn.in_atomic_block:
            for item in conn.run_on_commit:
                func = item[1]
                model = getattr(func, "_listy_model", None)
                if model is None or getattr(func, "_listy_done", False):
                    continue
                if model is self.model:
                    mine = True
                else:
                    others = True
        if not (mine or others) and len(connections.all(initialized_only=True)) <= 1:
            _tls.pending = False
        return mine

    def plan_change(
        self,
        before: Mapping[Writes, State | None],
        obj: models.Model | None,
        *,
        after: Mapping[Writes, State | None] | None = None,
        recreated: bool = False,
    ) -> list[Op]:
        """Cache work for one row change, to run after commit. ``before`` maps
        each writer to the row as stored before the write (absent: the row
        did not exist), ``obj`` is the row after it (None: deleted), or
        ``after`` the stored state after it when it differs from ``obj``'s (a
        save of some fields only). ``recreated``: an insert under a primary
        key that may have been used before. Each writer's engine decides what
        that does to its lists and counters (``Engine.change``) and settles it."""
        ops: list[Op] = []
        for client in self.writers():
            source = client.source
            old = before.get(client)
            if after is not None and client in after:
                new = after[client]
            else:
                new = None if obj is None else source.state_of(obj)
            engine = client.engine
            if recreated and old is None and new is not None:
                # Even when the row is not listed (soft-deleted, disabled):
                # the earlier row's final tombstones would hide it once a
                # later change lists it (found by the contention stress).
                ops.append((client, partial(engine.recreate, new, source.rows, source.stored_state)))
                continue
            plan = _native.change_plan(None if old is None else old[1], None if new is None else new[1])
            if plan == "nothing":
                continue
            if old is None and new is not None:
                ops.append((client, partial(_insert, client, new)))
            else:
                ops.append((client, partial(engine.change, old, new, source.rows, source.stored_state)))
        return ops

    def plan_add(self, obj: models.Model) -> list[Op]:
        """Cache work for a new row (run it after commit)."""
        return self.plan_change({}, obj)

    def plan_delete(self, obj: models.Model) -> list[Op]:
        """Cache work for a row deleted for good, ``obj`` as stored when it
        went (read under the delete's lock): tombstones where lists held it,
        final ones where none did (so that a late frame of an earlier
        revival stays hidden)."""
        return self.plan_change(self.snapshot(obj, for_delete=True), None)

    def snapshot(
        self, obj: models.Model, clients: Iterable[Writes] | None = None, *, for_delete: bool = False
    ) -> dict[Writes, State]:
        """Each writer's (or each of ``clients``') view of ``obj``:
        ``(row, listed, day)``."""
        if clients is None:
            clients = self.writers()
        return {c: c.source.state_of(obj, for_delete=for_delete) for c in clients}

    def add(self, **fields: Any) -> models.Model | None:
        """Creates the row (or revives a soft-deleted / disabled one) and puts
        it in every list it belongs to once the transaction commits.

        Returns the instance, or None when an identical live row already
        existed. Unknown fields raise Django's own error before anything is
        written.
        """
        self._sync_only("add")
        if _recorder.active() is not None:  # the debug-toolbar panel
            return _recorder.record(self, "add", fields, lambda: self.add(**fields))
        resolved = self._resolve()
        model = self.model
        using = resolved.db_alias
        fields = self._constructor_kwargs(fields)
        obj = model(**fields)  # TypeError for unknown fields, before any write
        flags = {self.soft_delete_field, self.enabled_field, self.deleted_timestamp_field}
        lookup = {k: v for k, v in fields.items() if k not in flags}
        if lookup and self._unique_in_database(lookup):
            # The database answers the no-op check itself: a row identical to
            # ``lookup`` would break a unique constraint. Insert first; only a
            # conflict (or another integrity error) takes the path below.
            try:
                with transaction.atomic(using=using):
                    return self._insert(obj, using)
            except IntegrityError:
                obj = model(**fields)
        with transaction.atomic(using=using):
            existing: models.Model | None = None
            if lookup and self._identical_live_row_cached(lookup):
                return None
            if lookup and (self.soft_delete_field or self.enabled_field or not self._covering_index(lookup)):
                # Locked (where the database has row locks): a concurrent
                # delete of the row to revive waits, or is waited for and
                # then the row is not found: never a revival of a row gone.
                candidates = locked(model._base_manager.db_manager(using).filter(**lookup).order_by("-pk")[:20])
                for candidate in candidates:
                    if self._live(candidate):
                        return None
                    existing = existing or candidate
            if existing is None or not self._revive(existing, using):
                return self._insert(obj, using)
            return existing

    def _revive(self, existing: models.Model, using: str) -> bool:
        """add()'s revival of a soft-deleted or disabled row. False when the
        row was deleted meanwhile (no row locks: SQLite): the caller inserts
        afresh, as plain Django would have."""
        model = self.model
        before = self.snapshot(existing)
        changed = []
        if self.soft_delete_field:
            setattr(existing, self.soft_delete_field, False)
            changed.append(self.soft_delete_field)
            ts = self.deleted_timestamp_field
            if ts and model._meta.get_field(ts).null:
                setattr(existing, ts, None)
                changed.append(ts)
        if self.enabled_field:
            setattr(existing, self.enabled_field, True)
            changed.append(self.enabled_field)
        # An UPDATE of those fields by primary key: it reports how many rows
        # it changed, where save(update_fields=...) raises (and spoils the
        # transaction) when the row went meanwhile (no row locks: SQLite).
        with origin.handled(model):  # planned here, not raw SQL
            updated = (
                model._base_manager.db_manager(using)
                .filter(pk=existing.pk)
                .update(**{name: getattr(existing, name) for name in changed})
            )
        if not updated:
            return False
        self._after_commit(using, self.plan_change(before, existing))
        return True

    def delete(self, **filters: Any) -> bool:
        """Deletes (or soft-deletes) every matching row and removes it from
        every cached list once the transaction commits. True if anything was
        deleted."""
        self._sync_only("delete")
        if _recorder.active() is not None:  # the debug-toolbar panel
            return _recorder.record(self, "delete", filters, lambda: self.delete(**filters))
        resolved = self._resolve()
        model = self.model
        using = resolved.db_alias
        manager = model._base_manager.db_manager(using)
        with transaction.atomic(using=using):
            qs = manager.filter(**filters)
            if self.soft_delete_field:
                qs = qs.filter(**{self.soft_delete_field: False})
            objs = list(qs)
            if objs and connections[using].features.has_select_for_update:
                # Lock the rows by primary key, in pk order (no gap locks, no
                # deadlock between two deletes): a concurrent delete of the
                # same rows waits for this one, then finds them gone, so
                # their tombstones and counter decrements are sent once.
                locked = manager.select_for_update().filter(pk__in=[o.pk for o in objs])
                if self.soft_delete_field:
                    locked = locked.filter(**{self.soft_delete_field: False})
                # the rows as stored under the lock: their flags decide what
                # the cache is told, not a read that came before the lock
                objs = list(locked.order_by("pk"))
            if not objs:
                return False
            pks = [o.pk for o in objs]
            ops: list[Op] = []
            if self.soft_delete_field:
                before = [self.snapshot(o) for o in objs]
                changes: dict[str, Any] = {self.soft_delete_field: True}
                if self.deleted_timestamp_field:
                    changes[self.deleted_timestamp_field] = timezone.now()
                with origin.handled(model):  # planned here, not raw SQL
                    manager.filter(pk__in=pks).update(**changes)
                for i, obj in enumerate(objs):
                    for k, v in changes.items():
                        setattr(obj, k, v)
                    if before:
                        ops.extend(self.plan_change(before[i], obj))
            else:
                for obj in objs:
                    ops.extend(self.plan_delete(obj))
                token = _deleting.set(_deleting.get() | {(model, pk) for pk in pks})
                try:
                    with origin.handled(model):  # planned here (cascades are the collector's)
                        manager.filter(pk__in=pks).delete()
                finally:
                    _deleting.reset(token)
            self._after_commit(using, ops)
        return True


def _insert(client: Writes, new: State) -> Any:
    """An insert's cache work. The engine settles it at once when it can
    tell that a later change of the row landed first; else the background
    worker settles it at its next look, with its neighbours, in one read
    (in case an eviction hid that from the engine)."""
    source = client.source
    report = client.engine.change(None, new, source.rows, source.stored_state)
    if report.get("pk_list_found") is not True:
        worker.verify_later(client, new)
    return report


def in_listy_delete(model: type[models.Model], pk: Any) -> bool:
    """True while Listy itself deletes this row (signal handlers skip it)."""
    return (model, pk) in _deleting.get()


__all__ = ["SKIP_SIGNALS", "Op", "Writes", "in_listy_delete"]
