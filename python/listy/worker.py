"""The background worker of a process: Listy's repairs, off the request path.

Every ``LISTY["REPAIR_CHECK_INTERVAL"]`` seconds (and at once when a read
or a write meets a cache fault) a daemon thread of each process:

0. settles the inserts this process wrote since its last look (one read
   per model), in case a later change of the row landed first;
1. deletes the write intents whose cache work this process ran
   (``listy.intents``; one statement);
2. looks at the intents left by writers that died between COMMIT and their
   cache work, and starts their models' lists afresh (one statement, more
   only when it finds one);
3. runs the repair pass: deletes from memcached the keys that failed writes
   left (``listy.repair``; one statement).

So a read served from the cache never runs SQL (SPEC §3.10); a process reads
from the database only while it knows of a fault it has not repaired, and
until its first pass is done. The thread starts with the first Listy call of
a process, not at import: a process that forks (``gunicorn --preload``)
starts its own in each child, and the parent opens no database connection
for it. It needs a shared store: with only the embedded store there is
nothing to repair and no thread.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Any

from django.db import connections

from listy import _native, intents, registry, repair
from listy.conf import listy_settings

logger = logging.getLogger("listy")

_lock = threading.Lock()
#: Inserts to settle at the next look: id(client) → (client, states written).
_verify: dict[int, tuple[Any, list[Any]]] = {}
#: Write intents (alias, id) held open until those inserts are settled: a
#: process that dies first leaves them for another process to resolve.
_held: set[tuple[str, int]] = set()
#: The intent whose cache work runs now on this thread (``run_cache_work``).
_running = threading.local()
_thread: threading.Thread | None = None
_pid: int | None = None
_wakeup = threading.Event()
_atexit_registered = False


def ensure_started() -> None:
    """Starts this process's worker if it should run and does not yet."""
    if _pid == os.getpid() and _thread is not None and _thread.is_alive():
        return
    if not repair.background_enabled():
        repair.background = False
        return
    _start()


def _start() -> None:
    global _thread, _pid, _atexit_registered
    if not _atexit_registered:
        # Stop the thread before the interpreter finalises: a daemon thread
        # still inside the engine then (GIL released) would be ended by
        # pthread_exit, which unwinds through Rust frames and aborts.
        atexit.register(stop)
        _atexit_registered = True
    with _lock:
        if _pid == os.getpid() and _thread is not None and _thread.is_alive():
            return
        _pid = os.getpid()
        _wakeup.clear()
        _thread = threading.Thread(target=_run, name="listy-worker", daemon=True)
        repair.wake = _wakeup.set
        repair.background = True
        _thread.start()


def stop() -> None:
    """Stops this process's worker (tests; settings that turn it off)."""
    global _thread, _pid
    with _lock:
        thread, _thread, _pid = _thread, None, None
        repair.background = False
        _wakeup.set()
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout=5)
    # A process that exits (a worker's graceful restart) settles what it
    # queued and deletes its done intents, rather than leave them to others.
    _step("settling inserts", settle_inserts)
    if thread is not None:
        for alias in aliases():
            if intents.enabled() and intents.table_usable(alias):
                _step("deleting done intents", intents.delete_done, alias)


def _run() -> None:
    me = threading.current_thread()
    while _thread is me:
        if not repair.background_enabled():  # the settings turned it off
            with _lock:
                if _thread is me:
                    repair.background = False
            break
        try:
            tick()
        except Exception:  # noqa: BLE001 - the worker must outlive any one look
            logger.exception("listy: the background repair look failed; trying again")
        interval = listy_settings().repair_check_interval
        # at most 100 looks a second, whatever the setting says
        _wakeup.wait(max(interval if interval is not None else 1.0, 0.01))
        _wakeup.clear()
    connections.close_all()


def run_cache_work(alias: str, intent: int | None, work: Any) -> None:
    """Runs a committed write's cache work, then marks its write intent done,
    unless an insert in it waits for its settle (``verify_later``): the
    intent then stays until that settle ran, so a process that dies in
    between leaves it to be resolved (``listy.intents``)."""
    _running.intent = None if intent is None else (alias, intent)
    _running.held = False
    try:
        # The intent's id tags the model-wide counter moves: a counter built
        # while they are in flight skips them (listy.intents.model_count).
        _native.with_write_tag(intent or 0, work)
        held = _running.held
    finally:
        _running.intent = None
    if intent is not None and not held:
        intents.finished(alias, intent)


def verify_later(client: Any, state: Any) -> None:
    """Settles an insert at the next look, with one read per client for all
    of them: an insert whose frames landed after a later change of its row
    would list it as it was (the engine settles an insert at once only when
    it can tell that a later change landed first)."""
    if not repair.background:
        return
    current = getattr(_running, "intent", None)
    with _lock:
        _verify.setdefault(id(client), (client, []))[1].append(state)
        if current is not None:
            _held.add(current)
            _running.held = True


def settle_inserts() -> int:
    """Settles the inserts queued by ``verify_later`` (one read per
    client). Returns how many."""
    with _lock:
        todo = list(_verify.values())
        _verify.clear()
        held = list(_held)
        _held.clear()
    done = 0
    settled = True
    for client, states in todo:
        source = client.source
        try:
            client.engine.settle_many(states, source.rows, source.states_by_pk)
        except Exception as exc:  # noqa: BLE001 - the look goes on; the rows are logged
            settled = False
            logger.warning("listy: could not settle %d inserts of %s: %s", len(states), client, exc)
        done += len(states)
    # Unsettled, their intents stay: resolved as a dead writer's (the
    # model's lists start afresh) once the window passed.
    for alias, intent in held if settled else ():
        intents.finished(alias, intent)
    return done


def aliases() -> list[str]:
    """The database aliases of every cached model."""
    found = set()
    for model in registry.all_models():
        for client in registry.clients(model):
            found.add(client.db_alias)
    return sorted(found)


def tick() -> None:
    """One look, on every alias: done intents deleted, dead writers'
    intents resolved, the repair pass. Callable directly (tests, commands)."""
    _step("settling inserts", settle_inserts)
    window = listy_settings().intent_window
    for alias in aliases():
        if intents.enabled() and intents.table_usable(alias):
            _step("deleting done intents", intents.delete_done, alias)
            if window is not None:
                _step("resolving dead writers' intents", intents.resolve, alias, window)
        repair.run_pass(alias)


def _step(what: str, fn: Any, *args: Any) -> None:
    """One step of a look: a failure is logged and the look goes on (the
    repair pass, which lets reads use the cache, must always run)."""
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - logged; the next look tries again
        logger.exception("listy: background look: %s failed", what)


__all__ = ["aliases", "ensure_started", "run_cache_work", "settle_inserts", "stop", "tick", "verify_later"]
