"""Every ListCache of this process, by model (weakly held).

Writes fan out to every client of a model whose record schema or store
differs (clients that share both share their lists: the engine keeps the
union of their indexes), and signals, checks and management commands find
the clients here.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.db import models

    from listy.cache import ListCache

_lock = threading.Lock()
_clients: dict[type, list[weakref.ref[ListCache]]] = {}
_listeners: list = []


def register(cache: ListCache) -> None:
    """Records a new client; tells the listeners (signal wiring)."""
    with _lock:
        refs = _clients.setdefault(cache.model, [])
        refs.append(weakref.ref(cache))
        first = len(refs) == 1
    if first:
        for listener in list(_listeners):
            listener(cache.model)


def on_new_model(listener) -> None:  # type: ignore[no-untyped-def]
    """Calls ``listener(model)`` for every model that has (or gets) a client."""
    _listeners.append(listener)
    for model in all_models():
        listener(model)


def clients(model: type[models.Model]) -> list[ListCache]:
    """The live clients of ``model``, the oldest (usually ``Model.cache``) first."""
    with _lock:
        refs = _clients.get(model, [])
        alive = [c for c in (r() for r in refs) if c is not None]
        if len(alive) != len(refs):
            _clients[model] = [weakref.ref(c) for c in alive]
        return alive


def all_models() -> list[type[models.Model]]:
    """Every model that has a client."""
    with _lock:
        return [m for m, refs in _clients.items() if any(r() is not None for r in refs)]


def primary(model: type[models.Model]) -> ListCache | None:
    """The client installed as ``Model.cache`` if any, else the oldest one."""
    installed = model.__dict__.get("cache")
    for c in clients(model):
        if c is installed:
            return c
    found = clients(model)
    return found[0] if found else None
