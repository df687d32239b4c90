"""Which ORM writes Listy is handling right now.

Every write path Listy follows (``save()`` through the signals, the batched
paths of ``listy.bulk``, many-to-many adds, Listy's own ``add()`` and
``delete()``) marks the tables it writes for as long as it runs. The raw-SQL
guard (``listy.rawsql``) leaves statements on a marked table alone and
treats every other write to a cached model's table as raw SQL: the model's
lists are repaired after commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.db import models

#: ``db_table`` names of the models whose writes are being handled.
_handled: ContextVar[frozenset[str]] = ContextVar("listy_handled", default=frozenset())


@contextmanager
def handled(*models_: type[models.Model]) -> Iterator[None]:
    """Marks the tables of ``models_`` as written by a path Listy follows."""
    tables = frozenset(m._meta.db_table for m in models_)
    token = _handled.set(_handled.get() | tables)
    try:
        yield
    finally:
        _handled.reset(token)


def bypass(*models_: type[models.Model]) -> Any:
    """A block whose writes to ``models_`` Listy does not follow (a data
    migration that repairs afterwards, a test that needs a write the cache
    did not see): their lists are stale until repaired
    (``Model.cache.rebuild(**filters)``, ``flush_all()``, ``listy_check --fix``)."""
    return handled(*models_)


def is_handled(model: type[models.Model]) -> bool:
    """True while a path Listy follows writes ``model``'s table."""
    return model._meta.db_table in _handled.get()


def handled_tables() -> frozenset[str]:
    """The tables being written by paths Listy follows (the raw-SQL guard's view)."""
    return _handled.get()


__all__ = ["bypass", "handled", "handled_tables", "is_handled"]
