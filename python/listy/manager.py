"""``CachingManager``: a normal Django manager that installs ``Model.cache``.

``Model.objects.get(pk=...)`` is served from the ``("pk",)`` list when the
model has that index (zero queries when cached), and so is any queryset of
the manager that is nothing but a primary-key equality filter
(``filter(pk=...)``, ``filter(pk=...).first()``, ``[0]``, ``.get()``; see
:class:`ListyQuerySet`); foreign-key access to such a model
(``follow.follower``) likewise (see :func:`install_fk_hooks`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from django.db import models
from django.db.models import lookups
from django.db.models.expressions import Col
from django.db.models.fields.related_descriptors import ForwardManyToOneDescriptor
from django.db.models.query import ModelIterable

from listy import bulk, middleware
from listy.cache import ListCache

_PK_LOOKUPS = ("pk", "pk__exact")


def _pk_only(qs: models.QuerySet[Any]) -> tuple[ListCache[Any], Any] | None:
    """``(cache, pk)`` when evaluating ``qs`` means "the row with this
    primary key, as a model instance" and nothing else: one ``pk = value``
    condition, no joins, deferred fields, annotations, ``values()``,
    ``select_related``, ``select_for_update``, offset, related-manager
    filter, write intent (``get_or_create``, ``delete``) or other database.
    Anything else is the ORM's."""
    model = qs.model
    cache = model.__dict__.get("cache")
    if not isinstance(cache, ListCache) or cache.disable_cache:
        return None
    q = qs.query
    if (
        qs._iterable_class is not ModelIterable
        or qs._fields is not None  # type: ignore[attr-defined]
        or qs._for_write  # type: ignore[attr-defined]
        or qs._hints  # type: ignore[attr-defined]
        or qs._known_related_objects  # type: ignore[attr-defined]
        or q.model is not model
        or q.select_for_update
        or q.select_related is not False
        or q.annotations
        or q.extra
        or q.extra_tables
        or q.values_select
        or q.combinator is not None
        or q.distinct_fields
        or q.group_by is not None
        or q.deferred_loading[0]
        or not q.deferred_loading[1]
        or q.low_mark != 0
        or (q.high_mark is not None and q.high_mark < 1)
        or len(q.alias_map) > 1
    ):
        return None
    where = q.where
    if where.connector != "AND" or where.negated or len(where.children) != 1:
        return None
    (cond,) = where.children
    if not isinstance(cond, lookups.Exact) or not isinstance(cond.lhs, Col):
        return None
    if cond.lhs.target is not model._meta.pk or hasattr(cond.rhs, "resolve_expression"):
        return None
    try:
        resolved = cache._resolve()
    except Exception:
        return None
    if resolved.pk_index is None or qs.db != resolved.db_alias:
        return None
    return cache, cond.rhs


class ListyQuerySet(models.QuerySet[Any]):
    """The queryset of :class:`CachingManager`: a plain primary-key filter
    (see :func:`_pk_only`) is answered by ``Model.cache.get_one()`` - the
    per-request registry, then the ``("pk",)`` list - and by the database
    only when the cache does not list the row (missing, soft-deleted,
    disabled)."""

    def _fetch_all(self) -> None:
        if self._result_cache is None:
            # Inside a running event loop the ORM raises Django's own
            # SynchronousOnlyOperation below, every time.
            found = None if asyncio._get_running_loop() is not None else _pk_only(self)
            if found is not None:
                cache, pk = found
                try:
                    obj = cache._get_one(pk)
                except (ValueError, TypeError):
                    obj = None
                if obj is not None:
                    self._result_cache = [obj]
        super()._fetch_all()

    # The batched write paths (``listy.bulk``): every row they change reaches
    # the lists, at O(1) extra statements per call.

    def update(self, **kwargs: Any) -> int:
        """``QuerySet.update``; the changed rows reach every list after commit."""
        return bulk.update(self, lambda qs: super(ListyQuerySet, cast(ListyQuerySet, qs)).update(**kwargs), kwargs)

    def bulk_update(self, objs: Any, fields: Any, batch_size: int | None = None) -> int:
        """``QuerySet.bulk_update``; the changed rows reach every list after commit."""
        objs = list(objs)
        return bulk.bulk_update(self, objs, lambda: super(ListyQuerySet, self).bulk_update(objs, fields, batch_size))

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> list[models.Model]:
        """``QuerySet.bulk_create``; the rows inserted (or changed by an
        upsert) reach every list after commit."""
        objs = list(objs)
        names = ("batch_size", "ignore_conflicts", "update_conflicts", "update_fields", "unique_fields")
        opts = {**dict(zip(names, args)), **kwargs}
        return bulk.bulk_create(
            self,
            objs,
            lambda: super(ListyQuerySet, self).bulk_create(objs, **opts),
            ignore_conflicts=bool(opts.get("ignore_conflicts")),
            update_conflicts=bool(opts.get("update_conflicts")),
            unique_fields=opts.get("unique_fields"),
        )

    def _raw_delete(self, using: str) -> int:  # type: ignore[override]  # Django's Collector always passes an alias
        return bulk.raw_delete(self, using, lambda: super(ListyQuerySet, self)._raw_delete(using))

    update.alters_data = True  # type: ignore[attr-defined]
    bulk_update.alters_data = True  # type: ignore[attr-defined]
    bulk_create.alters_data = True  # type: ignore[attr-defined]
    _raw_delete.alters_data = True  # type: ignore[attr-defined]


_mixed: dict[type, type] = {}


def _listy_queryset_class(cls: type[models.QuerySet[Any]]) -> type[models.QuerySet[Any]]:
    """``cls`` with :class:`ListyQuerySet`'s lookups (``from_queryset()``)."""
    if issubclass(cls, ListyQuerySet):
        return cls
    found = _mixed.get(cls)
    if found is None:
        found = type(f"Listy{cls.__name__}", (ListyQuerySet, cls), {"__module__": cls.__module__})
        _mixed[cls] = found
    return found


class CachingManager(models.Manager[Any]):
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
        self.listy_caches = list(caches)  # ListCache normalises them
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

    _queryset_class = ListyQuerySet

    def get_queryset(self) -> models.QuerySet[Any]:
        cls = _listy_queryset_class(self._queryset_class)
        return cls(model=self.model, using=self._db, hints=self._hints)  # type: ignore[attr-defined]

    def _listy_cache(self) -> ListCache[Any] | None:
        cache = self.model.__dict__.get("cache")
        return cache if isinstance(cache, ListCache) else None

    def _pk_cache(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[ListCache[Any], Any] | None:
        """``(cache, pk)`` when ``get(*args, **kwargs)`` asks for one primary
        key of this manager's model and the ``("pk",)`` list can answer."""
        if (
            args
            or len(kwargs) != 1
            or getattr(self, "_db", None) is not None
            or hasattr(self, "core_filters")  # a related manager
            or getattr(self, "_hints", None)
        ):
            return None
        (name, value), = kwargs.items()
        pk = self.model._meta.pk
        if name not in _PK_LOOKUPS and name not in (pk.name, pk.attname, f"{pk.name}__exact"):
            return None
        cache = self._listy_cache()
        if cache is None or cache.disable_cache or not cache._resolve().pk_index:
            return None
        return cache, value

    def get(self, *args: Any, **kwargs: Any) -> Any:
        """``QuerySet.get``; ``get(pk=...)`` (or the pk's own name) is served
        from the ``("pk",)`` list when there is one."""
        found = self._pk_cache(args, kwargs)
        if found is not None:
            cache, value = found
            cache._sync_only("objects.get", f"await {self.model.__name__}.objects.aget(pk=...)")
            try:
                obj = cache._get_one(value)
            except (ValueError, TypeError):
                obj = None
            if obj is not None:
                return obj
        return super().get(*args, **kwargs)

    async def aget(self, *args: Any, **kwargs: Any) -> Any:
        """``QuerySet.aget``; ``aget(pk=...)`` is served from the ``("pk",)``
        list by ``Model.cache.aget_one()`` (a hit reads the cache off the
        loop and never the database)."""
        found = self._pk_cache(args, kwargs)
        if found is not None:
            cache, value = found
            try:
                obj = await cache.aget_one(value)
            except (ValueError, TypeError):
                obj = None
            if obj is not None:
                return obj
        return await super().aget(*args, **kwargs)


def pk_cache(model: type[models.Model]) -> ListCache[Any] | None:
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

    field: models.ForeignKey[Any, Any]

    def get_object(self, instance: models.Model) -> Any:
        rel_model = self.field.remote_field.model
        cache = pk_cache(rel_model)
        if cache is not None and self.field.target_field.primary_key:
            value = getattr(instance, self.field.attname)
            found = middleware.lookup(rel_model, value)
            if found is None:
                cache._sync_only(
                    f"{type(instance).__name__}.{self.field.name}",
                    f"await {rel_model.__name__}.cache.aget_one(pk) or select_related()",
                )
                found = cache._get_one(value)
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
            new: Any = object.__new__(hooked)
            new.__dict__.update(desc.__dict__)
            setattr(model, f.name, new)
            n += 1
    return n


__all__ = ["CachingManager", "ListyQuerySet", "install_fk_hooks", "pk_cache"]

