"""Caching a model you do not own (``auth.User``, a third-party app's model).

A model you own gets ``objects = listy.CachingManager([...])``. One you do
not own cannot: :func:`cache_model` gives it the same three things after the
fact, in one call from your ``AppConfig.ready()``::

    class MyAppConfig(AppConfig):
        def ready(self):
            listy.cache_model(User, [("pk",)])

- ``User.cache``, a :class:`listy.ListCache` (``User.cache.get_one(pk)``);
- ``User.objects.get(pk=...)`` (and every manager of the model) served from
  the ``("pk",)`` list, as ``CachingManager`` does, the manager's own
  methods kept (``create_user`` ...);
- foreign keys pointing at it (``follow.followee``) served from that list.

:func:`uncache_model` undoes it (tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar, Unpack

from django.apps import apps
from django.db import models

from listy.cache import ListCache
from listy.declaration import Options
from listy.exceptions import ConfigError
from listy import signals
from listy.manager import CachingManager, install_fk_hooks

M = TypeVar("M", bound=models.Model)

_classes: dict[type, type] = {}


def _caching_class(cls: type) -> type:
    """``cls`` with :class:`CachingManager`'s reads in front of its own methods."""
    if issubclass(cls, CachingManager):
        return cls
    found = _classes.get(cls)
    if found is None:
        found = type(f"Listy{cls.__name__}", (CachingManager, cls), {"__module__": cls.__module__})
        _classes[cls] = found
    return found


def cache_model(model: type[M], caches: Iterable[Sequence[str]], **options: Unpack[Options]) -> ListCache[M]:
    """Installs ``model.cache`` (a ``ListCache(model, caches, **options)``),
    makes its managers read ``get(pk=...)`` through it and hooks the foreign
    keys that point at it. Returns the cache."""
    existing = model.__dict__.get("cache")
    if isinstance(existing, ListCache):
        raise ConfigError(f"{model._meta.label} already has a Listy cache (Model.cache)")
    if existing is not None:
        raise ConfigError(f"{model._meta.label}.cache exists and is not a ListCache: Listy will not replace it")
    cache = ListCache(model, caches, **options)
    model.cache = cache  # type: ignore[attr-defined]
    # the registry connects a model's receivers with its first client; after
    # an uncache_model() an old client may linger until it is collected
    signals.connect(model)
    for manager in model._meta.managers:
        manager.__class__ = _caching_class(type(manager))
    if apps.ready:
        install_fk_hooks(apps.get_models())
    # else: listy's AppConfig.ready() hooks every model once the registry is ready
    return cache


def uncache_model(model: type[models.Model]) -> None:
    """Undoes :func:`cache_model`: the managers get their own class back,
    ``model.cache`` goes (foreign keys then read through the database) and
    Listy's save/delete receivers for the model are disconnected."""
    signals.disconnect(model)
    for manager in model._meta.managers:
        for original, made in _classes.items():
            if type(manager) is made:
                manager.__class__ = original
    if isinstance(model.__dict__.get("cache"), ListCache):
        delattr(model, "cache")


__all__ = ["cache_model", "uncache_model"]
