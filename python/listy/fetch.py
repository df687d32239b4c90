"""Many rows' values read fast: what the batched write paths' state reads
(``DjangoBackingStore.stored_states``) run.

``values(qs, using)`` is ``list(qs.values_list(...))`` (``qs`` already a
``values_list`` queryset) with two costs of Django's taken out where the
database allows it, and the same results:

* on PostgreSQL, Django loads every ``timestamptz`` with psycopg's pure-Python
  loader (to set the connection's time zone on it), several times the cost
  of the rest of a row. Where that zone is UTC (``USE_TZ``, Django's
  default) psycopg's C loader gives the same aware UTC datetimes, so the
  statement's cursor uses that one;
* ``pk__in=[...5,000 values]`` runs every value through the field's lookup
  preparation in Python and sends 5,000 placeholders;
  ``pk_filter`` makes it one ``= ANY(%s)`` array parameter on PostgreSQL.

On PostgreSQL ``delete_returning`` and ``update_returning`` run a
queryset's ``DELETE`` / ``UPDATE`` as Django would, plus ``RETURNING`` of
the rows' own columns: the states come with the write, no read beside it.

The statement still runs through Django's cursor (its execute wrappers, its
error translation, its query log) and each selected field's converters
(``from_db_value``) still apply.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections, models, transaction

def _c_tz_loader() -> Any:
    """psycopg's own ``timestamptz`` text loader (the C one when
    ``psycopg[binary]`` is installed: registering the Python class picks it)."""
    from psycopg.types.datetime import TimestamptzLoader

    return TimestamptzLoader


def _fast_tz(conn: Any) -> bool:
    """Whether psycopg's own loader gives what Django's does on ``conn``:
    PostgreSQL through psycopg 3, aware datetimes in UTC."""
    if conn.vendor != "postgresql":
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    if not is_psycopg3:
        return False
    tz = conn.timezone
    return tz is not None and tz.utcoffset(None) == datetime.timedelta(0) and conn.timezone_name == "UTC"


def _use_c_tz_loader(cursor: Any) -> None:
    """psycopg's own ``timestamptz`` loader on this cursor only (the
    connection's adapters stay Django's); a cursor wrapped so that its
    adapters cannot be reached keeps Django's loader."""
    adapters = getattr(getattr(cursor, "cursor", None), "adapters", None)
    if adapters is not None:
        adapters.register_loader("timestamptz", _c_tz_loader())


def values(qs: models.QuerySet[Any], using: str) -> list[tuple[Any, ...]]:
    """The rows of a ``values_list`` queryset, as ``list(qs)`` gives them
    (one statement; none when the filter can match nothing)."""
    conn = connections[using]
    if not _fast_tz(conn):
        return [tuple(r) for r in qs.using(using)]
    compiler = qs.query.get_compiler(using=using)
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:
        return []
    fields = [s[0] for s in compiler.select[: compiler.col_count]]
    converters = compiler.get_converters(fields)
    with conn.cursor() as cursor:
        _use_c_tz_loader(cursor)
        cursor.execute(sql, params)
        rows: list[tuple[Any, ...]] = cursor.fetchall()
    if converters:
        return [tuple(r) for r in compiler.apply_converters(rows, converters)]
    return rows


def delete_returning(qs: models.QuerySet[Any], using: str, attnames: Sequence[str]) -> list[tuple[Any, ...]]:
    """Runs ``qs._raw_delete(using)``'s ``DELETE`` as one statement that
    also returns the deleted rows' columns ``attnames`` (own columns of the
    model) as they were: ``DELETE ... RETURNING`` (PostgreSQL). Exactly the
    rows deleted, read under the delete's own row locks."""
    from django.db.models.sql import DeleteQuery

    query = qs.query.clone()
    query.__class__ = DeleteQuery
    compiler = query.get_compiler(using)
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:
        return []
    return _returning(compiler, sql, params, qs.model, attnames, using, contextlib.nullcontext())


def update_returning(
    qs: models.QuerySet[Any], using: str, values: dict[str, Any], attnames: Sequence[str]
) -> list[tuple[Any, ...]] | None:
    """Runs ``qs.update(**values)`` as one ``UPDATE ... RETURNING`` of the
    updated rows' columns ``attnames`` (own columns of the model), as they
    are after it (PostgreSQL). None, with nothing run, where Django's
    ``update()`` would not be one statement on the model's own table (fields
    of a parent model, an ordered update): the caller runs Django's."""
    from django.db.models.sql import UpdateQuery

    query: Any = qs.query.chain(UpdateQuery)
    query.add_update_values(values)
    if query.related_updates or query.order_by:
        return None
    query.annotations = {}
    compiler = query.get_compiler(using)
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:
        return []
    if not sql:
        return None
    guard = transaction.mark_for_rollback_on_error(using=using)
    return _returning(compiler, sql, params, qs.model, attnames, using, guard)


def _returning(
    compiler: Any,
    sql: str,
    params: Any,
    model: type[models.Model],
    attnames: Sequence[str],
    using: str,
    guard: Any,
) -> list[tuple[Any, ...]]:
    """Runs ``sql`` (a ``DELETE`` or ``UPDATE`` of ``model``'s table) with
    ``RETURNING`` of its own columns ``attnames``, the values converted as
    Django's reads convert them; ``guard`` wraps the statement."""
    conn = connections[using]
    opts: Any = model._meta
    table = conn.ops.quote_name(opts.db_table)  # a table, never an alias
    fields = [opts.get_field(a) for a in attnames]
    returning = ", ".join(f"{table}.{conn.ops.quote_name(f.column)}" for f in fields)
    converters = compiler.get_converters([f.get_col(opts.db_table) for f in fields])
    with guard, conn.cursor() as cursor:
        if _fast_tz(conn):
            _use_c_tz_loader(cursor)
        cursor.execute(f"{sql} RETURNING {returning}", params)
        rows = cursor.fetchall()
    if converters:
        return [tuple(r) for r in compiler.apply_converters(rows, converters)]
    return [tuple(r) for r in rows]


def pk_filter(qs: models.QuerySet[Any], pks: Sequence[Any], using: str) -> list[models.QuerySet[Any]]:
    """``qs`` narrowed to the primary keys ``pks``: one queryset with one
    ``= ANY(%s)`` parameter on PostgreSQL, else ``pk__in`` querysets of at
    most ``max_params`` keys each (no queryset when ``pks`` is empty)."""
    if not pks:
        return []
    conn = connections[using]
    if conn.vendor == "postgresql":
        return [qs.filter(_AnyPk(qs.model, list(pks)))]
    size = max_params(using)
    return [qs.filter(pk__in=pks[i : i + size]) for i in range(0, len(pks), size)]


def max_params(using: str) -> int:
    """How many query parameters one statement on ``using`` may take."""
    import sqlite3

    conn = connections[using]
    if conn.vendor == "sqlite":
        conn.ensure_connection()
        try:
            return int(conn.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)) - 10
        except (AttributeError, sqlite3.Error):
            return 999 - 10
    return conn.features.max_query_params or 60_000


class _AnyPk(models.Expression):
    """``<model's pk column> = ANY(%s)`` with the keys as one array (PostgreSQL)."""

    conditional = True
    output_field = models.BooleanField()

    col: Any = None

    def __init__(self, model: type[models.Model], pks: list[Any]) -> None:
        super().__init__()
        self.model = model
        self.pks = pks

    def resolve_expression(self, query: Any = None, *args: Any, **kwargs: Any) -> Any:
        c = super().resolve_expression(query, *args, **kwargs)
        c.col = models.F("pk").resolve_expression(query, *args, **kwargs)
        return c

    def as_sql(self, compiler: Any, connection: Any) -> Any:
        col_sql, col_params = compiler.compile(self.col)
        pk = self.model._meta.pk
        assert pk is not None  # every concrete model has one
        if all(type(v) is int for v in self.pks):
            # an integer key: an array literal is what psycopg would send,
            # built here without its per-value dumping (and the field's
            # per-value preparation, int() of an int)
            return f"{col_sql} = ANY(%s::bigint[])", [*col_params, "{" + ",".join(map(str, self.pks)) + "}"]
        prepared = [pk.get_db_prep_value(v, connection, prepared=False) for v in self.pks]
        return f"{col_sql} = ANY(%s)", [*col_params, prepared]


__all__ = ["delete_returning", "max_params", "pk_filter", "update_returning", "values"]
