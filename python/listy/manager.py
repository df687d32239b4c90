"""``CachingManager``: a normal Django manager that installs ``Model.cache``.

``Model.objects.get(pk=...)`` is served from the ``("pk",)`` list when the
model has that index (zero queries when cached), and foreign-key access to
such a model (``follow.follower``) likewise (see :func:`install_fk_hooks`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.db import models
from django.db.models.fields.related_descriptors import ForwardManyToOneDescriptor

from listy import middleware
from listy.cache import ListCache

_PK_LOOKUPS = ("pk", "pk__exact")


class CachingManager(models.Manager):
    """A manager that also installs ``Model.cache``, a :class:`ListCache`.

    ``caches`` is a list of tuples of field names, one tuple per cached index
    (``"pk"`` is the primary key, a foreign key is named by its field name).
    The keyword options are those of SPEC §2.
    """

    def __init__(
        self,
        caches: Sequence[Sequence[str]] = (),
        *,
        soft_delete_field: str | None = None,
        deleted_timestamp_field: str | None = None,
        enabled_field: str | None = None,
        timestamp_field: str | None = None,
        disable_cache: bool = False,
        address: Callable[[], str] | None = None,
        filter_out_soft_deletes: bool = True,
        inlined_foreign_key_fields: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        self.listy_caches = [tuple(c) if not isinstance(c, str) else (c,) for c in caches]
        self.listy_options: dict[str, Any] = {
            "soft_delete_field": soft_delete_field,
            "deleted_timestamp_field": deleted_timestamp_field,
            "enabled_field": enabled_field,
            "timestamp_field": timestamp_field,
            "disable_cache": disable_cache,
            "address": address,
            "filter_out_soft_deletes": filter_out_soft_deletes,
            "inlined_foreign_key_fields": inlined_foreign_key_fields,
        }

    def contribute_to_class(self, cls: type[models.Model], name: str) -> None:
        super().contribute_to_class(cls, name)
        if cls._meta.abstract or cls._meta.swapped:
            return
        if isinstance(cls.__dict__.get("cache"), ListCache):
            return  # a second CachingManager on the model: the first one wins
        cls.cache = ListCache(cls, self.listy_caches, **self.listy_options)  # type: ignore[attr-defined]

    def _listy_cache(self) -> ListCache | None:
        cache = self.model.__dict__.get("cache")
        return cache if isinstance(cache, ListCache) else None

    def get(self, *args: Any, **kwargs: Any) -> Any:
        """``QuerySet.get``; ``get(pk=...)`` (or the pk's own name) is served
        from the ``("pk",)`` list when there is one."""
        if (
            not args
            and len(kwargs) == 1
            and getattr(self, "_db", None) is None
            and not hasattr(self, "core_filters")  # a related manager
            and not getattr(self, "_hints", None)
        ):
            (name, value), = kwargs.items()
            pk = self.model._meta.pk
            if name in _PK_LOOKUPS or name in (pk.name, pk.attname, f"{pk.name}__exact"):
                cache = self._listy_cache()
                if cache is not None and not cache.disable_cache and cache._resolve().pk_index:
                    try:
                        found = cache.get_one(value)
                    except (ValueError, TypeError):
                        found = None
                    if found is not None:
                        return found
        return super().get(*args, **kwargs)


def pk_cache(model: type[models.Model]) -> ListCache | None:
    """The ``Model.cache`` of ``model`` if it has a ``("pk",)`` index."""
    cache = model.__dict__.get("cache")
    if not isinstance(cache, ListCache) or cache.disable_cache:
        return None
    try:
        return cache if cache._resolve().pk_index else None
    except Exception:
        return None


class _CachedForwardMixin:
    """Serves ``obj.fk`` from the related model's ``("pk",)`` list."""

    field: models.ForeignKey

    def get_object(self, instance: models.Model) -> Any:
        rel_model = self.field.remote_field.model
        cache = pk_cache(rel_model)
        if cache is not None and self.field.target_field.primary_key:
            value = getattr(instance, self.field.attname)
            found = middleware.lookup(rel_model, value)
            if found is None:
                found = cache.get_one(value)
            if found is not None:
                return found
        return super().get_object(instance)  # type: ignore[misc]


_hooked: dict[type, type] = {}


def install_fk_hooks(models_iter: Any) -> int:
    """Makes forward foreign-key descriptors pointing at a model with a
    ``("pk",)`` cache read through it. Returns how many were installed."""
    n = 0
    for model in models_iter:
        for f in model._meta.concrete_fields:
            if not (f.is_relation and f.many_to_one) or f.one_to_one:
                continue
            if pk_cache(f.remote_field.model) is None:
                continue
            desc = model.__dict__.get(f.name)
            if not isinstance(desc, ForwardManyToOneDescriptor) or isinstance(desc, _CachedForwardMixin):
                continue
            cls = type(desc)
            hooked = _hooked.get(cls)
            if hooked is None:
                hooked = type(f"Listy{cls.__name__}", (_CachedForwardMixin, cls), {})
                _hooked[cls] = hooked
            new = object.__new__(hooked)
            new.__dict__.update(desc.__dict__)
            setattr(model, f.name, new)
            n += 1
    return n


__all__ = ["CachingManager", "install_fk_hooks", "pk_cache"]

