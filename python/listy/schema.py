"""Django model → ``_native.Schema``.

The record of a model is its concrete fields in declaration order with the
integer primary key moved first; foreign keys are named by their attname
(``follower_id``) and stored as the related key's kind; inlined foreign-key
fields follow as ``"<fk attname>.<related attname>"`` (``"entry_id.title"``).
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import models

from listy import _native
from listy.exceptions import ConfigError

#: ``Field.get_internal_type()`` → codec kind.
KIND_BY_INTERNAL_TYPE: dict[str, str] = {
    "AutoField": "int",
    "BigAutoField": "int",
    "SmallAutoField": "int",
    "IntegerField": "int",
    "BigIntegerField": "int",
    "SmallIntegerField": "int",
    "PositiveIntegerField": "int",
    "PositiveBigIntegerField": "int",
    "PositiveSmallIntegerField": "int",
    "BooleanField": "bool",
    "NullBooleanField": "bool",
    "FloatField": "float",
    "CharField": "str",
    "TextField": "str",
    "SlugField": "str",
    "EmailField": "str",
    "URLField": "str",
    "FilePathField": "str",
    "FileField": "str",
    "ImageField": "str",
    "GenericIPAddressField": "str",
    "IPAddressField": "str",
    "BinaryField": "bytes",
    "DateTimeField": "datetime",
    "DateField": "date",
    "TimeField": "time",
    "DecimalField": "decimal",
    "UUIDField": "uuid",
    "JSONField": "json",
}

#: Placeholder per kind, used for inlined values that can no longer be read
#: (the related row is gone); they only ever travel inside a tombstone.
PLACEHOLDER: dict[str, Any] = {
    "int": 0,
    "bool": False,
    "float": 0.0,
    "str": "",
    "bytes": b"",
    "datetime": datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC),
    "date": datetime.date(1970, 1, 1),
    "time": datetime.time(0, 0),
    "decimal": decimal.Decimal(0),
    "uuid": uuid.UUID(int=0),
    "json": None,
}


def field_kind(f: models.Field[Any, Any]) -> str:
    """The codec kind of a concrete field (a foreign key takes its target's)."""
    if f.is_relation and (f.many_to_one or f.one_to_one):
        return field_kind(f.target_field)  # type: ignore[attr-defined]  # a ForeignKey's
    internal = f.get_internal_type()
    kind = KIND_BY_INTERNAL_TYPE.get(internal)
    if kind is None:
        raise ConfigError(
            f"{f.model._meta.label}.{f.name}: fields of type {internal} cannot be cached by Listy"
        )
    return kind


@dataclass(frozen=True)
class Column:
    """One field of the record."""

    attname: str
    """The name the codec knows (``follower_id``, ``entry_id.title``)."""
    kind: str
    nullable: bool
    path: str
    """The ``values_list()`` path that reads it (``follower_id``, ``entry__title``)."""
    field: models.Field[Any, Any]
    """The Django field (for an inlined column: the related model's field)."""
    fk: models.Field[Any, Any] | None = None
    """For an inlined column: the foreign key it hangs off."""


@dataclass(frozen=True)
class ModelSchema:
    """A model's record layout, its Django side and the native schema."""

    model: type[models.Model]
    columns: tuple[Column, ...]
    native: _native.Schema
    related: dict[str, tuple[str, type, str]] = field(default_factory=dict)
    """FK attname → (field name, related model, attname the FK value fills
    on the related instance), for the engine to build inlined instances."""

    @property
    def attnames(self) -> list[str]:
        return [c.attname for c in self.columns]

    @property
    def paths(self) -> list[str]:
        return [c.path for c in self.columns]

    @property
    def fingerprint(self) -> int:
        return self.native.fingerprint


def build_schema(
    model: type[models.Model],
    inlined_foreign_key_fields: Mapping[str, Sequence[str]] | None = None,
) -> ModelSchema:
    """Builds the record schema of ``model``.

    Raises ``ConfigError`` when the primary key is not an integer, a field has
    a type the codec does not know, or an inlined field does not exist.
    """
    opts = model._meta
    pk = opts.pk
    if pk is None or field_kind(pk) != "int":
        raise ConfigError(f"{opts.label}: Listy needs an integer primary key")
    fields = [pk] + [f for f in opts.concrete_fields if f is not pk]
    columns: list[Column] = [
        Column(f.attname, field_kind(f), bool(f.null), f.attname, f) for f in fields
    ]
    related: dict[str, tuple[str, type, str]] = {}
    for fk_name, names in (inlined_foreign_key_fields or {}).items():
        try:
            fk = opts.get_field(fk_name)
        except Exception as exc:
            raise ConfigError(f"{opts.label}: inlined_foreign_key_fields names unknown field {fk_name!r}") from exc
        if not (fk.is_relation and (fk.many_to_one or fk.one_to_one) and fk.concrete):
            raise ConfigError(f"{opts.label}.{fk_name}: inlined_foreign_key_fields needs a ForeignKey")
        rel_model: Any = fk.related_model  # a model class: fk is a ForeignKey
        related[fk.attname] = (fk.name, rel_model, fk.target_field.attname)  # type: ignore[attr-defined]
        for name in names:
            try:
                rf: Any = rel_model._meta.get_field(name)
            except Exception as exc:
                raise ConfigError(
                    f"{opts.label}: inlined field {fk_name}.{name}: {rel_model._meta.label} has no field {name!r}"
                ) from exc
            if not rf.concrete or rf.many_to_many:
                raise ConfigError(f"{opts.label}: inlined field {fk_name}.{name} is not a concrete field")
            if rf.primary_key:
                continue  # the key itself is the foreign key's value
            columns.append(
                Column(
                    f"{fk.attname}.{rf.attname}",
                    field_kind(rf),
                    bool(fk.null or rf.null),
                    f"{fk.name}__{rf.attname}",
                    rf,
                    fk,
                )
            )
    native = _native.Schema(
        [(c.attname, c.kind, c.nullable) for c in columns],  # type: ignore[misc]
        aware=bool(settings.USE_TZ),
    )
    return ModelSchema(model=model, columns=tuple(columns), native=native, related=related)
