"""Listy's settings: ``settings.LISTY``, every key optional.

``LISTY = {"SERVERS": [...], "KEY_PREFIX": "", "CONNECT_TIMEOUT": 0.25, "TIMEOUT": 0.5,
"REPAIR_CHECK_INTERVAL": 1.0, "INTENT_WINDOW": 10.0, "COUNTER_EPOCH": 3600, "ENABLED": True,
"OUTAGE_LOG_INTERVAL": 60, "STATS_INTERVAL": 10}``

``BULK_REPAIR_THRESHOLD`` (default 10,000): a batched write
(``QuerySet.update()``, ``bulk_update()``, ``bulk_create()``, a queryset or
cascade delete) touching more rows than this repairs the model's lists
wholesale (the generation bump of ``flush_all()``) instead of updating them
row by row. ``INLINED_FANOUT_THRESHOLD`` (default 10,000): likewise for the
rows that carry an inlined copy of a changed related row.

``TLS``: speak TLS to memcached (``memcached -Z``, managed services with
in-transit encryption). ``True`` trusts the system's root certificates;
a dict names ``CA_FILE`` (PEM roots to trust instead), ``CERT_FILE`` and
``KEY_FILE`` (a client certificate, both or neither) and ``SERVER_NAME`` (the
name every server's certificate must carry, sent as SNI; default: each
server's host). The server is always verified. ``None`` (default):
plaintext.

``STATS_INTERVAL``: seconds between two turns of a process adding its hit
and miss counts to the counters every process shares in the store (read by
``manage.py listy_stats``); one batched round trip per turn. ``None``: off.

``ENABLED``: the incident switch. False sends every read to the database and
makes writes leave the cache alone; lists written while it was off are never
served once it is on again (turning it on moves every model to a new
generation, see ``listy.switch``).

``CONNECT_TIMEOUT``/``TIMEOUT``: seconds (> 0) for a TCP connect to
memcached and for each later read or write on it.

``OUTAGE_LOG_INTERVAL``: seconds between two WARNING lines about one
unreachable memcached server (others go to DEBUG); a line says when it
answers again. ``0`` logs every fault.

``REPAIR_CHECK_INTERVAL``: at most this many seconds between two looks of a
process's background worker (``listy.worker``) at the table of keys that
failed writes left to repair (``listy.repair``) and at the intents of
writers that died after COMMIT (``listy.intents``). The look never runs on
the request path. ``None``: no worker; a process repairs on the read path,
only after a cache fault of its own.

``INTENT_WINDOW``: a transaction that writes a cached model records an
intent in the same transaction (one INSERT); the writer marks it done once
its cache work ran. An intent older than this many seconds belongs to a
writer that died between COMMIT and its cache work, and the worker starts
that model's lists afresh. ``None``: no intents.

``COUNTER_EPOCH``: the model-wide counters (``count()`` and period counts
without filters) are counted afresh from the database this often, in
seconds, which bounds how long an untagged write (autocommit ``save()``,
intents off) in flight while one was built can leave it one off (see
docs/architecture.md, "Known gaps"); ``None`` never (one COUNT per counter
ever, until ``flush_all()``).

``ASYNC_INLINE_TIMEOUT``: seconds an async read (``aget`` and the other
list reads) may hold the event loop's thread to serve a hit on a pooled
connection (about one round trip); past it, or with ``0``/``None``, the read
is made in a worker thread instead (see ``listy.aio``).

``SYNC``: ``manage.py listy_sync`` follows this deployment's PostgreSQL
change stream (``True``, or a dict with any of ``DATABASE`` (alias, default
``"default"``), ``SLOT`` and ``PUBLICATION`` (names, default ``"listy"``));
see docs/deployment.md. ``None`` or ``False`` (the default): no sync.

``SERVERS`` absent, empty or ``["local"]`` selects the embedded in-process
store. The environment variable ``LISTY_SERVERS`` (``"127.0.0.1:11211,..."``
or ``"local"``) overrides ``SERVERS``; the demo and the test-suite use it.

Settings are read through :func:`listy_settings`, cached, and the cache is
cleared when Django's ``setting_changed`` signal names ``LISTY`` (tests that
use ``override_settings``).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from listy.exceptions import ConfigError

#: The value of ``SERVERS`` that selects the embedded store.
LOCAL = "local"

DEFAULTS: dict[str, Any] = {
    "SERVERS": None,
    "KEY_PREFIX": "",
    "CONNECT_TIMEOUT": 0.25,
    "TIMEOUT": 0.5,
    "REPAIR_CHECK_INTERVAL": 1.0,
    "INTENT_WINDOW": 10.0,
    "COUNTER_EPOCH": 3600,
    "BULK_REPAIR_THRESHOLD": 10_000,
    "INLINED_FANOUT_THRESHOLD": 10_000,
    "ASYNC_INLINE_TIMEOUT": 0.002,
    "SYNC": None,
    "ENABLED": True,
    "OUTAGE_LOG_INTERVAL": 60,
    "STATS_INTERVAL": 10,
    "TLS": None,
}

#: The keys of a ``SYNC`` dict and their defaults.
SYNC_DEFAULTS: dict[str, str] = {"DATABASE": "default", "SLOT": "listy", "PUBLICATION": "listy"}


@dataclass(frozen=True)
class SyncSettings:
    """Where ``listy_sync`` reads the change stream (``LISTY["SYNC"]``)."""

    database: str
    """The database alias whose change stream is followed."""
    slot: str
    """The logical replication slot's name."""
    publication: str
    """The publication's name."""

#: The keys of ``LISTY["TLS"]`` when it is a dict.
TLS_KEYS = ("CA_FILE", "CERT_FILE", "KEY_FILE", "SERVER_NAME")


@dataclass(frozen=True)
class TlsSettings:
    """``LISTY["TLS"]``, checked: paths that exist, a certificate with its key."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class ListySettings:
    """The effective settings (defaults applied, environment override read)."""

    servers: tuple[str, ...]
    """memcached servers; empty tuple means the embedded store."""
    key_prefix: str
    connect_timeout: float
    timeout: float
    repair_check_interval: float | None = 1.0
    """Seconds between two looks at the pending repairs (None: only after a fault)."""
    counter_epoch: float | None = 3600
    """Seconds a model-wide counter is kept before it is counted afresh (None: forever)."""
    intent_window: float | None = 10.0
    """Seconds after which a write intent left behind is a dead writer's (None: no intents)."""
    bulk_repair_threshold: int = 10_000
    """Rows above which one batched write repairs the model's lists wholesale."""
    inlined_fanout_threshold: int = 10_000
    """Referencing rows above which a related row's change repairs their lists wholesale."""
    async_inline_timeout: float | None = 0.002
    """Seconds an async read may hold the loop's thread (None: never)."""
    sync: SyncSettings | None = None
    """The change stream ``listy_sync`` follows (None: not configured)."""
    enabled: bool = True
    """False: every call goes to the database (the incident switch)."""
    outage_log_interval: float = 60.0
    """Seconds between two WARNINGs about one unreachable server."""
    stats_interval: float | None = 10.0
    """Seconds between two publications of this process's hits and misses (None: never)."""
    tls: TlsSettings | None = None
    """TLS to memcached (None: plaintext)."""

    @property
    def is_local(self) -> bool:
        """True when the embedded in-process store is in use."""
        return not self.servers


def _seconds(name: str, value: Any, *, zero: bool = False) -> float:
    """``value`` as a number of seconds (> 0, or >= 0 with ``zero``), else a
    ConfigError naming the setting."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if zero else value > 0)
    if not ok or value != value or value == float("inf"):
        bound = ">= 0" if zero else "> 0"
        raise ConfigError(f"LISTY[{name!r}] must be a number of seconds {bound}, not {value!r}")
    return float(value)


def _parse_tls(value: Any) -> TlsSettings | None:
    if value is None or value is False:
        return None
    if value is True:
        return TlsSettings()
    if not isinstance(value, dict):
        raise ConfigError(f"LISTY['TLS'] must be None, True or a dict with {', '.join(TLS_KEYS)}, not {value!r}")
    unknown = set(value) - set(TLS_KEYS)
    if unknown:
        raise ConfigError(f"unknown LISTY['TLS'] keys: {', '.join(sorted(unknown))} (known: {', '.join(TLS_KEYS)})")
    for key in ("CA_FILE", "CERT_FILE", "KEY_FILE"):
        path = value.get(key)
        if path is not None and not (isinstance(path, (str, os.PathLike)) and os.path.isfile(path)):
            raise ConfigError(f"LISTY['TLS'][{key!r}]: {path!r} is not a readable file")
    if (value.get("CERT_FILE") is None) != (value.get("KEY_FILE") is None):
        raise ConfigError("LISTY['TLS']: CERT_FILE and KEY_FILE go together (a client certificate and its key)")
    name = value.get("SERVER_NAME")
    if name is not None and not (isinstance(name, str) and name):
        raise ConfigError(f"LISTY['TLS']['SERVER_NAME'] must be a host name, not {name!r}")
    paths = {k: None if value.get(k) is None else os.fspath(value[k]) for k in ("CA_FILE", "CERT_FILE", "KEY_FILE")}
    return TlsSettings(paths["CA_FILE"], paths["CERT_FILE"], paths["KEY_FILE"], name)


def _parse_servers(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [s for s in (p.strip() for p in value.split(",")) if s]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"LISTY['SERVERS'] must be a list of 'host:port' strings, not {value!r}")
    servers = tuple(str(s).strip() for s in value)
    if not servers or servers == (LOCAL,):
        return ()
    if LOCAL in servers:
        raise ConfigError("LISTY['SERVERS']: 'local' cannot be mixed with memcached servers")
    return servers


_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _parse_sync(value: Any) -> SyncSettings | None:
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"LISTY['SYNC'] must be None, True or a dict, not {value!r}")
    unknown = set(value) - set(SYNC_DEFAULTS)
    if unknown:
        raise ConfigError(
            f"unknown LISTY['SYNC'] keys: {', '.join(sorted(unknown))} (known: {', '.join(SYNC_DEFAULTS)})"
        )
    merged = {**SYNC_DEFAULTS, **value}
    for key in ("SLOT", "PUBLICATION"):
        if not isinstance(merged[key], str) or not _NAME.match(merged[key]):
            raise ConfigError(
                f"LISTY['SYNC']['{key}'] must be a lower-case PostgreSQL name "
                f"(letters, digits, _; at most 63), not {merged[key]!r}"
            )
    return SyncSettings(database=str(merged["DATABASE"]), slot=merged["SLOT"], publication=merged["PUBLICATION"])


@functools.cache
def listy_settings() -> ListySettings:
    """The current Listy settings (cached until ``LISTY`` changes)."""
    user = getattr(settings, "LISTY", None) or {}
    if not isinstance(user, dict):
        raise ConfigError("settings.LISTY must be a dict")
    unknown = set(user) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown LISTY settings: {', '.join(sorted(unknown))}")
    merged = {**DEFAULTS, **user}
    env = os.environ.get("LISTY_SERVERS")
    servers = _parse_servers(env if env else merged["SERVERS"])
    prefix = merged["KEY_PREFIX"] or ""
    if not isinstance(prefix, str):
        raise ConfigError("LISTY['KEY_PREFIX'] must be a string")
    interval = merged["REPAIR_CHECK_INTERVAL"]
    if interval is not None:
        try:
            interval = float(interval)
        except (TypeError, ValueError):
            interval = -1.0
        if interval < 0:
            raise ConfigError(
                f"LISTY['REPAIR_CHECK_INTERVAL'] must be None or a number of seconds >= 0, "
                f"not {merged['REPAIR_CHECK_INTERVAL']!r}"
            )
    window = merged["INTENT_WINDOW"]
    if window is not None and (isinstance(window, bool) or not isinstance(window, (int, float)) or window <= 0):
        raise ConfigError(f"LISTY['INTENT_WINDOW'] must be None or a number of seconds > 0, not {window!r}")
    epoch = merged["COUNTER_EPOCH"]
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, (int, float)) or epoch <= 0):
        raise ConfigError(f"LISTY['COUNTER_EPOCH'] must be None or a number of seconds > 0, not {epoch!r}")
    thresholds = {}
    for name in ("BULK_REPAIR_THRESHOLD", "INLINED_FANOUT_THRESHOLD"):
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"LISTY[{name!r}] must be a whole number of rows >= 0, not {value!r}")
        thresholds[name.lower()] = value
    inline = merged["ASYNC_INLINE_TIMEOUT"]
    if inline is not None and (isinstance(inline, bool) or not isinstance(inline, (int, float)) or inline < 0):
        raise ConfigError(
            f"LISTY['ASYNC_INLINE_TIMEOUT'] must be None or a number of seconds >= 0, not {inline!r}"
        )
    enabled = merged["ENABLED"]
    if not isinstance(enabled, bool):
        raise ConfigError(f"LISTY['ENABLED'] must be True or False, not {enabled!r}")
    return ListySettings(
        servers=servers,
        key_prefix=prefix,
        connect_timeout=_seconds("CONNECT_TIMEOUT", merged["CONNECT_TIMEOUT"]),
        timeout=_seconds("TIMEOUT", merged["TIMEOUT"]),
        repair_check_interval=interval,
        counter_epoch=None if epoch is None else float(epoch),
        intent_window=None if window is None else float(window),
        **thresholds,
        async_inline_timeout=float(inline) if inline else None,
        sync=_parse_sync(merged["SYNC"]),
        enabled=enabled,
        outage_log_interval=_seconds("OUTAGE_LOG_INTERVAL", merged["OUTAGE_LOG_INTERVAL"], zero=True),
        stats_interval=None if merged["STATS_INTERVAL"] is None else _seconds("STATS_INTERVAL", merged["STATS_INTERVAL"]),
        tls=_parse_tls(merged["TLS"]),
    )


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    # The stores built on the old settings are dropped by ``listy.store``'s
    # own receiver: this module sits below it and does not import it.
    if setting == "LISTY":
        listy_settings.cache_clear()
