"""What each call costs, in SQL statements and memcached round trips,
measured: the table in docs/costs.md is checked against these numbers.

The model is ``Friend`` (tests/testapp/models.py: the README's ``Follow``,
its ``UniqueConstraint`` and a soft-delete flag) and, for the rows that say
so, ``Follow`` (no unique constraint, hard deletes); every list a call
touches is cached beforehand unless the row says otherwise. A round trip is one pipelined batch to one server
(``Store.batches``); with several memcached servers a batch that spans
them is one round trip per server, sent together.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from listy.store import get_store
from tests.conftest import sql_statements
from tests.testapp.models import Follow, Friend

pytestmark = pytest.mark.django_db(transaction=True)

DOC = Path(__file__).resolve().parents[1] / "docs" / "costs.md"


def cost(call: Callable[[], Any]) -> tuple[list[str], int]:
    """(SQL statements, round trips) of one call."""
    store = get_store()
    before = store.batches
    with CaptureQueriesContext(connection) as ctx:
        call()
    return sql_statements(ctx), store.batches - before


def kinds(sql: list[str]) -> str:
    """``"1 SELECT + 1 INSERT"``: the statements by verb, in order of first use."""
    verbs: dict[str, int] = {}
    for statement in sql:
        verb = statement.split(None, 1)[0].upper()
        verbs[verb] = verbs.get(verb, 0) + 1
    return " + ".join(f"{n} {v}" for v, n in verbs.items()) or "0"


def measure(users: list[Any]) -> dict[str, tuple[str, int]]:
    me, you, him, her = users[:4]
    warm = Friend.cache.add(follower=me, followee=you)
    assert warm is not None
    Friend.cache.get(follower=me)
    Friend.cache.get(follower=me, followee=him)
    Friend.cache.get(follower=me, followee=her)
    Friend.cache.get_one(warm.pk)
    Friend.cache.count(follower=me)
    found: dict[str, tuple[str, int]] = {}

    def row(name: str, call: Callable[[], Any]) -> None:
        sql, trips = cost(call)
        found[name] = (kinds(sql), trips)

    row("get, cached", lambda: Friend.cache.get(follower=me))
    row("get, not cached (built)", lambda: Friend.cache.get(follower=you))
    row("get_one / objects.get(pk=...), cached", lambda: Friend.objects.get(pk=warm.pk))
    row("count, cached list", lambda: Friend.cache.count(follower=me))
    row("cache.add, lists cached", lambda: Friend.cache.add(follower=me, followee=him))
    row("objects.create (signals)", lambda: Friend.objects.create(follower=me, followee=her))
    row(
        "objects.create, its pair's list not cached (built)",
        lambda: Friend.objects.create(follower=you, followee=her),
    )
    made = Friend.objects.get(follower=me, followee=her)
    made.hidden = True
    row("instance.save(), a change (signals)", made.save)
    row("cache.delete", lambda: Friend.cache.delete(follower=me, followee=him))
    row("instance.delete() (signals)", Friend.objects.get(pk=warm.pk).delete)
    # Follow: no unique constraint over the pair, no soft delete
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.get(follower=me)
    Follow.cache.get(follower=me, followee=him)
    row("Follow: cache.add, no unique constraint", lambda: Follow.cache.add(follower=me, followee=him))
    row("Follow: cache.delete (hard)", lambda: Follow.cache.delete(follower=me, followee=him))
    return found


def documented() -> dict[str, tuple[str, int]]:
    """The rows of the table in docs/costs.md for this database: columns
    call | SQL on SQLite | SQL on PostgreSQL and MariaDB | round trips."""
    column = 1 if connection.vendor == "sqlite" else 2
    table: dict[str, tuple[str, int]] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"\d+", cells[3]):
            table[cells[0].strip("`")] = (cells[column], int(cells[3]))
    return table


def test_costs_match_the_documented_table(users):
    measured = measure(users)
    assert documented() == measured, "\n".join(f"| {k} | {s} | {t} |" for k, (s, t) in measured.items())
