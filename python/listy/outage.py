"""The log of memcached outages: one WARNING per server per interval.

A memcached server that is down makes every read and write that needs it
fall back to the database; logging each of them at WARNING would flood the
log (thousands of lines a second on a busy site). This module logs the first
fault of a server at WARNING, then at most one WARNING per
``LISTY["OUTAGE_LOG_INTERVAL"]`` seconds (with the number of faults since),
the rest at DEBUG, and one WARNING when the server answers again. Each fault
also sends ``listy.events.cache_fault``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from listy import events
from listy.conf import listy_settings

logger = logging.getLogger("listy")

_SERVER = re.compile(r"memcached (?:server (\S+) is unavailable|protocol error from (\S+?):)")


@dataclass
class _Outage:
    since: float
    logged: float
    faults: int = 1
    unlogged: int = 0


_lock = threading.Lock()
_down: dict[str, _Outage] = {}


def server_of(exc: BaseException) -> str:
    """The server an engine error names (``"?"`` when it names none)."""
    found = _SERVER.search(str(exc))
    return (found.group(1) or found.group(2)) if found else "?"


def fault(exc: BaseException, operation: str, model: Any, what: str) -> None:
    """A read or write (``operation``) of ``model`` raised ``exc`` (a
    ``CacheUnavailable``): memcached could not be used."""
    fault_at(server_of(exc), str(exc), operation, model, what)


def fault_at(server: str, error: str, operation: str, model: Any, what: str) -> None:
    """``server`` could not be used for a read or write of ``model``."""
    now = time.monotonic()
    interval = listy_settings().outage_log_interval
    with _lock:
        state = _down.get(server)
        if state is None:
            _down[server] = _Outage(since=now, logged=now)
            line: str | None = "first"
        elif now - state.logged >= interval:
            state.faults += 1
            line = f"still unavailable after {now - state.since:.0f} s: {state.unlogged + 1} faults since the last warning"
            state.logged = now
            state.unlogged = 0
        else:
            state.faults += 1
            state.unlogged += 1
            line = None
    events.send(events.cache_fault, "cache_faults", model, server=server, error=error, operation=operation)
    if line == "first":
        logger.warning(
            "listy: %s, using the database (%s); further faults of %s are logged at DEBUG for %g s",
            error, what, server, interval,
        )
    elif line is not None:
        logger.warning("listy: memcached %s %s (%s)", server, line, what)
    else:
        logger.debug("listy: %s (%s)", error, what)


def is_down() -> bool:
    """True while some server has faults and has not answered since (cheap)."""
    return bool(_down)


def answered(server: str) -> None:
    """``server`` served a request: ends its outage, with one WARNING line."""
    with _lock:
        state = _down.pop(server, None)
    if state is not None:
        logger.warning(
            "listy: memcached %s answers again after %.1f s (%d faults)",
            server, time.monotonic() - state.since, state.faults,
        )


def reset() -> None:
    """Forgets every outage (for tests)."""
    with _lock:
        _down.clear()


__all__ = ["answered", "fault", "fault_at", "is_down", "reset", "server_of"]
