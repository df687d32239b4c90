"""The raw-SQL guard: writes to a cached model's table that no path Listy
follows made.

An ``execute_wrapper`` installed on every database connection
(``connection_created``) looks at each statement. A read costs one slice
and one ``startswith`` of its first word. A statement that writes
(``INSERT``/``UPDATE``/``DELETE``/``TRUNCATE``/``MERGE``/``COPY``/``REPLACE``,
or a ``WITH`` that does) and names the table of a cached model (or of a
model whose fields a cached model inlines), while no path Listy follows is
writing that table (``listy.origin``), makes Listy repair that model's
lists after commit (the generation bump of ``flush_all()``) and log one
WARNING per model per process naming the statement.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any

from django.db import models, transaction

from listy import bulk, origin, registry
from listy.writes import Writes

logger = logging.getLogger("listy")

_WRITES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "MERGE", "COPY", "REPLACE", "WITH")
_WITH_WRITE = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE)\b", re.I)

#: ``(pattern, {table: [models whose lists it feeds]})``, built on first use
#: and dropped when a model gets a ListCache.
_watch: tuple[re.Pattern[str], dict[str, list[type[models.Model]]]] | None = None
_warned: set[str] = set()


def _reset(_model: Any = None) -> None:
    global _watch
    _watch = None


def _watched() -> tuple[re.Pattern[str], dict[str, list[type[models.Model]]]]:
    """The tables to watch and the models whose lists each one feeds."""
    global _watch
    if _watch is None:
        tables: dict[str, list[type[models.Model]]] = {}
        for model in registry.all_models():
            if bulk.client_of(model) is None:
                continue
            tables.setdefault(model._meta.db_table.lower(), []).append(model)
            client = bulk.client_of(model)
            for fk_name in (client.inlined_foreign_key_fields or {}) if client else {}:
                related = model._meta.get_field(fk_name).related_model
                assert related is not None  # a ForeignKey (checked when the client was declared)
                tables.setdefault(related._meta.db_table.lower(), []).append(model)
        names = "|".join(re.escape(t) for t in sorted(tables, key=len, reverse=True)) or r"(?!x)x"
        pattern = re.compile(rf"(?<![\w$])[\"`\[]?({names})[\"`\]]?(?![\w$])", re.I)
        _watch = (pattern, tables)
    return _watch


def guard(execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: dict[str, Any]) -> Any:
    """The execute wrapper (see the module's doc)."""
    result = execute(sql, params, many, context)
    if isinstance(sql, str) and sql[:16].lstrip().upper().startswith(_WRITES):
        _check(sql, context)
    return result


def _check(sql: str, context: dict[str, Any]) -> None:
    if sql.lstrip()[:4].upper() == "WITH" and not _WITH_WRITE.search(sql):
        return
    pattern, tables = _watched()
    found = {m.group(1).lower() for m in pattern.finditer(sql)}
    if not found:
        return
    skip = {t.lower() for t in origin.handled_tables()}
    alias = context["connection"].alias
    for table in found - skip:
        for model in tables.get(table, []):
            client = bulk.client_of(model)
            if client is None:
                continue
            label = model._meta.label
            if label not in _warned:
                _warned.add(label)
                logger.warning(
                    "listy: SQL outside the paths Listy follows wrote to %s (%s): its lists are "
                    "repaired after commit (generation bump). Statement: %.300s",
                    label,
                    table,
                    sql,
                )
            transaction.on_commit(functools.partial(_repair, client), using=alias)


def _repair(client: Writes) -> None:
    for writer, op in bulk.flush_ops(client.writers()):
        writer._run_safely(op)


def install(connection: Any, **kwargs: Any) -> None:
    """Adds the guard to a connection (``connection_created`` receiver)."""
    if guard not in connection.execute_wrappers:
        connection.execute_wrappers.append(guard)


__all__ = ["guard", "install"]
