"""The one ``_native.Store`` of this process for the current settings.

``get_store()`` returns the store for ``settings.LISTY`` (the embedded store or
a memcached pool); ``get_store("host:port")`` one for a model's ``address``
override. Stores are made once per process and per configuration; the
memcached pool notices a fork by itself. ``epoch()`` changes whenever the
settings change, so that engines built on an old store are rebuilt.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from listy import _native
from listy.conf import listy_settings

_lock = threading.Lock()
_stores: dict[tuple[str, ...], _native.Store] = {}
_epoch = 0


def _normalise_address(address: str) -> str:
    address = address.strip()
    if address.startswith("/") or ":" in address:
        return address
    return f"{address}:11211"


def get_store(address: str | None = None) -> _native.Store:
    """The store for the current settings, or for ``address`` ("host[:port]")."""
    conf = listy_settings()
    servers = (_normalise_address(address),) if address else conf.servers
    with _lock:
        store = _stores.get(servers)
        if store is None:
            if not servers:
                store = _native.Store.local("default")
            else:
                tls = conf.tls
                store = _native.Store.memcached(
                    list(servers),
                    connect_timeout=conf.connect_timeout,
                    timeout=conf.timeout,
                    tls=tls is not None,
                    tls_ca_file=tls.ca_file if tls else None,
                    tls_cert_file=tls.cert_file if tls else None,
                    tls_key_file=tls.key_file if tls else None,
                    tls_server_name=tls.server_name if tls else None,
                )
            _stores[servers] = store
        return store


def epoch() -> int:
    """A number that changes whenever the stores are reset."""
    return _epoch


def reset() -> None:
    """Forgets every store (called when ``LISTY`` changes)."""
    global _epoch
    with _lock:
        _stores.clear()
        _epoch += 1


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    """New settings (``LISTY``; ``MIDDLEWARE`` and ``USE_TZ``, which engines
    are built with): every engine is rebuilt on a new epoch."""
    if setting in ("LISTY", "MIDDLEWARE", "USE_TZ"):
        reset()
