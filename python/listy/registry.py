"""Every ListCache of this process, by model (weakly held).

Writes fan out to every client of a model whose record schema or store
differs (clients that share both share their lists: the engine keeps the
union of their indexes), and signals, checks, repairs and management
commands find the clients here. The registry sits below ``listy.cache``: it
knows a client by the :class:`Client` protocol only, never by its class.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from django.db import models

    from listy import _native


class Client(Protocol):
    """What the registry's users may ask of a client (``listy.ListCache``
    is one)."""

    @property
    def model(self) -> type[models.Model]:
        """The model whose lists the client keeps."""
        ...

    disable_cache: bool

    @property
    def inlined_foreign_key_fields(self) -> Mapping[str, Sequence[str]]:
        """Foreign key name → the related fields stored inline."""
        ...
    address: Callable[[], str] | None

    @property
    def engine_label(self) -> str:
        """The model name the client's engine puts in keys."""
        ...

    @property
    def engine(self) -> _native.Engine:
        """The client's engine (built on first use)."""
        ...

    @property
    def db_alias(self) -> str:
        """The database alias the model writes to."""
        ...

    def store_identity(self) -> tuple[int, str]:
        """(store, engine label): two clients with one identity share lists."""
        ...

    def check_configuration(self) -> list[str]:
        """Problems of the declaration, as messages."""
        ...

    def reset_local_stats(self) -> None:
        """Sets the client's hit and miss counts back to zero."""
        ...


_lock = threading.Lock()
_clients: dict[type, list[weakref.ref[Client]]] = {}
_listeners: list[Callable[[type[models.Model]], object]] = []


def register(cache: Client) -> None:
    """Records a new client; tells the listeners (signal wiring)."""
    with _lock:
        refs = _clients.setdefault(cache.model, [])
        refs.append(weakref.ref(cache))
        first = len(refs) == 1
    if first:
        for listener in list(_listeners):
            listener(cache.model)


def on_new_model(listener: Callable[[type[models.Model]], object]) -> None:
    """Calls ``listener(model)`` for every model that has (or gets) a client."""
    _listeners.append(listener)
    for model in all_models():
        listener(model)


def clients(model: type[models.Model]) -> list[Client]:
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


def primary(model: type[models.Model]) -> Client | None:
    """The client installed as ``Model.cache`` if any, else the oldest one."""
    installed: object = model.__dict__.get("cache")
    for c in clients(model):
        if c is installed:
            return c
    found = clients(model)
    return found[0] if found else None
