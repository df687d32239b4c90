"""System checks (``manage.py check``).

- ``listy.E001``: an index (or a field option) names a field that does not exist.
- ``listy.E002``: the model's primary key is not an integer ``id``-like field.
- ``listy.E003``: a field of the model has a type Listy cannot cache.
- ``listy.E004``: ``settings.LISTY`` is not valid (whatever DEBUG is).
- ``listy.W001`` (deploy check, ``manage.py check --deploy``): the embedded
  in-process store is in use while DEBUG is False (it is not shared between
  processes: lists diverge across workers).
- ``listy.W002``: ``LISTY["SYNC"]`` is set but its database cannot carry a
  logical change stream (``wal_level`` is not ``logical``, or it is not
  PostgreSQL). A database check: ``manage.py check --database default``
  and ``migrate`` run it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.apps import apps as global_apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db.models import Model

from listy import registry
from listy.conf import listy_settings
from listy.exceptions import ConfigError, ListyError


@register(Tags.models)
def check_caches(
    app_configs: Sequence[AppConfig] | None = None,
    models: Sequence[type[Model]] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """E001/E002/E003 for every installed model with a ListCache (or for ``models``)."""
    from listy.schema import build_schema, field_kind

    messages: list[CheckMessage] = []
    if models is None:
        models = [m for m in registry.all_models() if m._meta.apps is global_apps]
    for model in models:
        if app_configs is not None and model._meta.app_config not in app_configs:
            continue
        for client in registry.clients(model):
            for problem in client.check_configuration():
                messages.append(
                    Error(
                        f"Listy: {problem}.",
                        hint="Name concrete fields of the model ('pk' for the primary key, a ForeignKey by its name).",
                        obj=model,
                        id="listy.E001",
                    )
                )
            pk = model._meta.pk
            try:
                pk_ok = field_kind(pk) == "int"
            except ConfigError:
                pk_ok = False
            if not pk_ok:
                messages.append(
                    Error(
                        f"Listy: the primary key {pk.name!r} of {model._meta.label} is not an integer.",
                        hint="Use an AutoField/BigAutoField primary key (the default 'id').",
                        obj=model,
                        id="listy.E002",
                    )
                )
                continue
            try:
                build_schema(model, client.inlined_foreign_key_fields)
            except ListyError as exc:
                messages.append(Error(f"Listy: {exc}", obj=model, id="listy.E003"))
    return messages


@register(Tags.caches)
def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E004 when ``settings.LISTY`` is not valid (unknown keys, timeouts that
    are not positive numbers, ...), in development as in production."""
    try:
        listy_settings()
    except ListyError as exc:
        return [
            Error(
                f"Listy: {exc}",
                hint="See listy.conf for every LISTY key and the values it takes.",
                id="listy.E004",
            )
        ]
    return []


@register(Tags.caches, deploy=True)
def check_store(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """W001 (``manage.py check --deploy``) when the embedded store would serve
    a production site."""
    if settings.DEBUG or not [m for m in registry.all_models() if m._meta.apps is global_apps]:
        return []
    try:
        local = listy_settings().is_local
    except ListyError:
        return []  # E004 says it
    if not local:
        return []
    return [
        Warning(
            "Listy is using its embedded in-process store while DEBUG is False: "
            "it is not shared between processes, so lists written by one worker "
            "are not seen by another.",
            hint="Set LISTY = {'SERVERS': ['host:11211', ...]} (memcached).",
            id="listy.W001",
        )
    ]


@register(Tags.database)
def check_sync(app_configs: Sequence[AppConfig] | None = None, databases: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W002 when ``listy_sync`` is configured but cannot follow its database."""
    from django.db import DatabaseError, connections

    try:
        conf = listy_settings().sync
    except ListyError:
        return []  # E004 reports the settings
    if conf is None or (databases is not None and conf.database not in databases):
        return []
    conn = connections[conf.database]
    if conn.vendor != "postgresql":
        problem = f"database {conf.database!r} is {conn.vendor}, and listy_sync follows PostgreSQL only"
        hint = "Remove LISTY['SYNC'] (repair outside writes with rebuild() or listy_check --fix)."
    else:
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW wal_level")
                level = cur.fetchone()[0]
        except DatabaseError as exc:
            return [Warning(f"Listy: could not read wal_level of {conf.database!r}: {exc}", id="listy.W002")]
        if level == "logical":
            return []
        problem = f"wal_level of database {conf.database!r} is {level!r}, not 'logical'"
        hint = (
            "ALTER SYSTEM SET wal_level = logical and restart PostgreSQL (RDS/Aurora: "
            "rds.logical_replication = 1; Cloud SQL: cloudsql.logical_decoding = on); see docs/deployment.md."
        )
    return [
        Warning(
            f"Listy: LISTY['SYNC'] is set but {problem}: outside writes will leave lists stale.",
            hint=hint,
            id="listy.W002",
        )
    ]
