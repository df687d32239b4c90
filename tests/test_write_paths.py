"""Every write path through Django reaches the lists (SPEC §3.6): each test
writes through one path, then compares every cached list and count with the
database; a rolled-back transaction of each path leaves no trace; SQL
statements are counted (O(1) extra per call, not one per row).

Runs on the database ``LISTY_TEST_DB`` selects (sqlite, postgres, mariadb)
and the store ``LISTY_TEST_STORE`` selects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, models, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import listy
from tests.conftest import sql_statements
from tests.testapp.models import Bookmark, Comment, Entry, Follow, Friend, Team, TeamMembers

pytestmark = pytest.mark.django_db(transaction=True)


class Rollback(Exception):
    pass


def warm(model: type[models.Model], index: tuple[str, ...], values: list[Any]) -> None:
    """Reads (and so caches) the lists of ``index`` for each of ``values``,
    and the model-wide count."""
    for v in values:
        model.cache.get(**{index[0]: v})
        model.cache.count(**{index[0]: v})
    model.cache.count()


def assert_coherent(model: type[models.Model], index: str, values: list[Any]) -> None:
    """Every cached list of the model equals the database; the lists and
    counts of ``index`` for ``values`` too (read now, from the cache)."""
    bad = [r for r in model.cache.determine_coherency(check_against_db=True) if r.coherent is False]
    assert not bad, bad
    live = model.cache.source.live_queryset()
    for v in values:
        want = sorted(live.filter(**{index: v}).values_list("pk", flat=True))
        assert sorted(o.pk for o in model.cache.get(**{index: v})) == want, (index, v)
        assert model.cache.count(**{index: v}) == len(want), (index, v)
    assert model.cache.count() == live.count()


def rolled_back(write: Callable[[], Any]) -> None:
    with pytest.raises(Rollback), transaction.atomic():
        write()
        raise Rollback


@pytest.fixture
def people(transactional_db: None) -> list[User]:
    return [User.objects.create(username=f"p{i}") for i in range(6)]


@pytest.fixture
def graph(people: list[User]) -> list[User]:
    """Each of the first three follows each of the others; lists warm."""
    for a in people[:3]:
        for b in people[3:]:
            Follow.cache.add(follower=a, followee=b)
    warm(Follow, ("follower",), people)
    return people


def extra_sql(write: Callable[[], Any], plain: Callable[[], Any]) -> tuple[int, int]:
    """Statements of ``write`` and of ``plain`` (the same call made under
    ``listy.bypass``, as on a model without Listy), transaction control
    left out."""
    with CaptureQueriesContext(connection) as with_listy:
        write()
    bypassed = (Follow, Bookmark, Comment, Entry, Friend, TeamMembers)
    with listy.bypass(*bypassed):
        with CaptureQueriesContext(connection) as without:
            plain()
    for model in bypassed:  # the bypassed write's lists
        model.cache.flush_all()
    return len(sql_statements(with_listy)), len(sql_statements(without))


# ---------------------------------------------------------------- update()


def test_update_moves_rows_between_lists(graph):
    a, b, c, x, y, z = graph
    Follow.objects.filter(follower=a, followee__username__in=["p3", "p4"]).update(follower=b)
    assert_coherent(Follow, "follower", graph)
    Follow.objects.filter(follower=b).update(created=F("created") - timezone.timedelta(days=3))
    assert_coherent(Follow, "follower", graph)
    assert Follow.cache.daily_count(follower=b, created=timezone.now()) == 0


def test_update_costs_o1_statements(graph):
    a, b = graph[:2]
    with_listy, plain = extra_sql(
        lambda: Follow.objects.filter(follower=a).update(follower=b),
        lambda: Follow.objects.filter(follower=b).update(follower=a),
    )
    assert with_listy - plain <= 3, (with_listy, plain)
    assert_coherent(Follow, "follower", graph)


def test_update_returns_the_new_states_on_postgresql(graph):
    """On PostgreSQL the UPDATE returns the new states itself: the locked
    read of the old ones, the UPDATE, the settle read; expressions too."""
    if connection.vendor != "postgresql":
        pytest.skip("UPDATE ... RETURNING of the states: PostgreSQL")
    a, b = graph[:2]
    with CaptureQueriesContext(connection) as ctx:
        Follow.objects.filter(follower=a).update(follower=b, created=F("created") - timezone.timedelta(days=2))
    sql = sql_statements(ctx)
    assert [s.split(None, 1)[0].upper() for s in sql] == ["SELECT", "UPDATE", "SELECT"], sql
    assert "FOR UPDATE" in sql[0].upper() and "RETURNING" in sql[1].upper()
    assert_coherent(Follow, "follower", graph)
    assert len(Follow.cache.get(follower=b)) == 6
    assert Follow.cache.daily_count(follower=b, created=timezone.now() - timezone.timedelta(days=2)) == 3
    rolled_back(lambda: Follow.objects.filter(follower=b).update(follower=a))
    assert len(Follow.cache.get(follower=b)) == 6
    assert_coherent(Follow, "follower", graph)


def test_update_of_rows_with_inlined_fields(people):
    """Records that carry another table's fields: the new states are read
    after the UPDATE, on every database."""
    me, you = people[:2]
    entry = Entry.objects.create(author=me, title="Draft")
    for i in range(3):
        Comment.cache.add(entry=entry, user=me, text=f"c{i}")
    warm(Comment, ("user",), [me, you])
    Comment.objects.filter(user=me, text__in=["c0", "c1"]).update(user=you)
    assert sorted(c.text for c in Comment.cache.get(user=you)) == ["c0", "c1"]
    assert_coherent(Comment, "user", [me, you])


def test_update_rolled_back_leaves_no_trace(graph):
    a, b = graph[:2]
    before = [f.pk for f in Follow.cache.get(follower=a)]
    rolled_back(lambda: Follow.objects.filter(follower=a).update(follower=b))
    assert [f.pk for f in Follow.cache.get(follower=a)] == before
    assert_coherent(Follow, "follower", graph)


def test_update_of_the_flags(people):
    me = people[0]
    marks = [Bookmark.cache.add(user=me, url=f"u{i}") for i in range(6)]
    warm(Bookmark, ("user",), [me])
    Bookmark.objects.filter(pk__in=[m.pk for m in marks[:2]]).update(deleted=True)
    Bookmark.objects.filter(pk__in=[m.pk for m in marks[2:4]]).update(enabled=False)
    assert_coherent(Bookmark, "user", [me])
    Bookmark.objects.filter(pk=marks[0].pk).update(deleted=False)
    Bookmark.objects.all().update(enabled=True)
    assert_coherent(Bookmark, "user", [me])
    assert len(Bookmark.cache.get(user=me)) == 5


def test_update_above_the_threshold_repairs_wholesale(graph, settings):
    a, b = graph[:2]
    settings.LISTY = {**(getattr(settings, "LISTY", None) or {}), "BULK_REPAIR_THRESHOLD": 1}
    Follow.objects.filter(follower=a).update(follower=b)
    assert_coherent(Follow, "follower", graph)


# ---------------------------------------------------------------- bulk_update(), bulk_create()


def test_bulk_update(graph):
    a, b, c = graph[:3]
    rows = list(Follow.objects.filter(follower=a))
    for r in rows:
        r.follower = c
    Follow.objects.bulk_update(rows, ["follower"], batch_size=2)
    assert_coherent(Follow, "follower", graph)
    rows = list(Follow.objects.filter(follower=c))
    for r in rows:
        r.follower = a
    rolled_back(lambda: Follow.objects.bulk_update(rows, ["follower"]))
    assert_coherent(Follow, "follower", graph)


def test_bulk_create(graph):
    a, b, c, x, y, z = graph
    Follow.objects.bulk_create([Follow(follower=x, followee=y), Follow(follower=x, followee=z), Follow(follower=a, followee=a)])
    assert_coherent(Follow, "follower", graph)
    assert len(Follow.cache.get(follower=x)) == 2
    rolled_back(lambda: Follow.objects.bulk_create([Follow(follower=y, followee=z)]))
    assert_coherent(Follow, "follower", graph)
    assert len(Follow.cache.get(follower=y)) == 0


def test_bulk_create_costs_o1_statements(graph):
    x, y, z = graph[3:]
    with_listy, plain = extra_sql(
        lambda: Follow.objects.bulk_create([Follow(follower=x, followee=y) for _ in range(20)]),
        lambda: Follow.objects.bulk_create([Follow(follower=y, followee=z) for _ in range(20)]),
    )
    assert with_listy - plain <= 3, (with_listy, plain)


def test_bulk_create_ignoring_conflicts(people):
    me, you, him = people[:3]
    Friend.cache.add(follower=me, followee=you)
    warm(Friend, ("follower",), people)
    Friend.objects.bulk_create(
        [Friend(follower=me, followee=you), Friend(follower=me, followee=him)], ignore_conflicts=True
    )
    assert_coherent(Friend, "follower", people)
    assert len(Friend.cache.get(follower=me)) == 2


@pytest.mark.skipif(not connection.features.supports_update_conflicts_with_target, reason="no upsert target")
def test_bulk_create_updating_conflicts(people):
    me, you, him = people[:3]
    Friend.cache.add(follower=me, followee=you)
    Friend.objects.filter(follower=me).update(hidden=True)
    warm(Friend, ("follower",), people)
    assert len(Friend.cache.get(follower=me)) == 0
    Friend.objects.bulk_create(
        [Friend(follower=me, followee=you, hidden=False), Friend(follower=me, followee=him)],
        update_conflicts=True,
        unique_fields=["follower", "followee"],
        update_fields=["hidden"],
    )
    assert_coherent(Friend, "follower", people)
    assert len(Friend.cache.get(follower=me)) == 2


@pytest.mark.parametrize("how", ["plain", "upsert"])
def test_bulk_create_under_a_deleted_rows_primary_key(graph, how):
    """``bulk_create()`` given the primary key of a row deleted before (as
    a stale instance's ``save()`` may re-create one): the deleted row's
    final tombstones must not hide the new row in any list it joins."""
    a, b, c, x, y, z = graph
    gone = Follow.cache.get(follower=a)[0]
    Follow.objects.filter(pk=gone.pk).delete()
    warm(Follow, ("follower",), graph)
    assert gone.pk not in [f.pk for f in Follow.cache.get(follower=a)]
    assert Follow.cache.get_one(gone.pk) is None
    again = Follow(pk=gone.pk, follower=a, followee_id=gone.followee_id)
    if how == "plain":
        Follow.objects.bulk_create([again])
    elif connection.features.supports_update_conflicts_with_target:
        Follow.objects.bulk_create([again], update_conflicts=True, unique_fields=["pk"], update_fields=["followee"])
    else:
        Follow.objects.bulk_create([again], update_conflicts=True, update_fields=["followee"])
    assert_coherent(Follow, "follower", graph)
    assert gone.pk in [f.pk for f in Follow.cache.get(follower=a)]
    assert gone.pk in [f.pk for f in Follow.cache.get(follower=a, followee=gone.followee_id)]
    got = Follow.cache.get_one(gone.pk)
    assert got is not None and got.followee_id == gone.followee_id


# ---------------------------------------------------------------- deletes


def test_queryset_delete_is_batched(graph):
    a, b = graph[:2]
    with_listy, plain = extra_sql(
        lambda: Follow.objects.filter(follower=a).delete(),
        lambda: Follow.objects.filter(follower=b).delete(),
    )
    assert with_listy - plain <= 3, (with_listy, plain)
    assert_coherent(Follow, "follower", graph)
    assert len(Follow.cache.get(follower=a)) == 0


def test_a_queryset_delete_deletes_exactly_the_rows_its_locked_read_found(graph, monkeypatch):
    """Where a fast delete reads its rows' states before the ``DELETE``
    (MariaDB, SQLite), a row committed in between that matches the filter
    (no gap locks) used to be deleted with no tombstone and stay listed:
    found by the contention stress on MariaDB. The ``DELETE`` now deletes
    exactly the rows read; the other stays, as if the delete ran first."""
    from listy import bulk

    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL: DELETE ... RETURNING gives the rows it deleted")
    a, late = graph[0], graph[1]
    read = bulk._read
    arrived: list[Follow] = []

    def read_then_a_row_arrives(writers, rows, using, lock):  # type: ignore[no-untyped-def]
        found = read(writers, rows, using, lock)
        if isinstance(rows, models.QuerySet) and not arrived:
            # the same transaction's insert stands in for another writer's
            # commit between the read and the DELETE: the read missed it
            arrived.append(Follow.objects.create(follower=a, followee=late))
        return found

    monkeypatch.setattr(bulk, "_read", read_then_a_row_arrives)
    Follow.objects.filter(follower=a).delete()
    assert arrived
    assert list(Follow.objects.filter(follower=a).values_list("pk", flat=True)) == [arrived[0].pk]
    assert [f.pk for f in Follow.cache.get(follower=a)] == [arrived[0].pk]
    assert_coherent(Follow, "follower", graph)


def test_queryset_delete_returns_its_rows_on_postgresql(graph):
    """On PostgreSQL a fast delete reads the deleted rows' states from its own
    ``DELETE ... RETURNING``: no locked SELECT before it, exactly the rows
    it deleted."""
    if connection.vendor != "postgresql":
        pytest.skip("DELETE ... RETURNING of the states: PostgreSQL")
    a = graph[0]
    with CaptureQueriesContext(connection) as ctx:
        Follow.objects.filter(follower=a).delete()
    sql = sql_statements(ctx)
    # the delete alone: no read after it for rows inserted again under their
    # key, since no generation started after its transaction saw the model
    assert [s.split(None, 1)[0].upper() for s in sql] == ["DELETE"], sql
    assert "RETURNING" in sql[0].upper()
    assert_coherent(Follow, "follower", graph)
    assert len(Follow.cache.get(follower=a)) == 0
    rolled_back(lambda: Follow.objects.filter(follower=graph[1]).delete())
    assert len(Follow.cache.get(follower=graph[1])) == 3
    assert_coherent(Follow, "follower", graph)


def test_queryset_delete_of_rows_with_inlined_fields(people):
    """A model whose records carry another table's fields: its states are
    read (locked) before the delete, on every database."""
    me, you = people[:2]
    entry = Entry.objects.create(author=me, title="Draft")
    for i in range(3):
        Comment.cache.add(entry=entry, user=me if i else you, text=f"c{i}")
    warm(Comment, ("entry",), [entry])
    warm(Comment, ("user",), [me, you])
    Comment.objects.filter(user=me).delete()
    assert [c.text for c in Comment.cache.get(entry=entry)] == ["c0"]
    assert_coherent(Comment, "entry", [entry])
    assert_coherent(Comment, "user", [me, you])


def test_cascade_delete_of_a_related_row(graph):
    a, b, c, x, y, z = graph
    with CaptureQueriesContext(connection) as ctx:
        x.delete()  # cascades to the follows of three lists
    assert len(sql_statements(ctx)) < 20  # not one per row (Django's own cascade statements)
    assert_coherent(Follow, "follower", [a, b, c, y, z])
    assert all(f.followee_id != x.pk for f in Follow.cache.get(follower=a))


def test_delete_rolled_back_and_instance_delete(graph):
    a = graph[0]
    rolled_back(lambda: Follow.objects.filter(follower=a).delete())
    assert len(Follow.cache.get(follower=a)) == 3
    Follow.objects.filter(follower=a).first().delete()
    assert_coherent(Follow, "follower", graph)


def test_raw_delete(graph):
    a = graph[0]
    Follow.objects.filter(follower=a)._raw_delete(connection.alias)
    assert_coherent(Follow, "follower", graph)


# ---------------------------------------------------------------- many-to-many


def test_many_to_many_from_both_sides(people):
    me, you, him = people[:3]
    team, other = Team.objects.create(name="t"), Team.objects.create(name="o")
    warm(TeamMembers, ("team",), [team, other])
    warm(TeamMembers, ("user",), people)
    team.members.add(me, you)
    him.teams.add(team, other)
    assert_coherent(TeamMembers, "team", [team, other])
    assert_coherent(TeamMembers, "user", people)
    assert len(TeamMembers.cache.get(team=team)) == 3
    team.members.remove(you)
    other.members.clear()
    assert_coherent(TeamMembers, "team", [team, other])
    me.teams.set([other])
    assert_coherent(TeamMembers, "user", people)
    rolled_back(lambda: team.members.add(you))
    assert_coherent(TeamMembers, "team", [team, other])


# ---------------------------------------------------------------- inlined copies


def test_inlined_copies_follow_the_related_row(people):
    me = people[0]
    entry = Entry.objects.create(author=me, title="Draft")
    for i in range(3):
        Comment.cache.add(entry=entry, user=me, text=f"c{i}")
    warm(Comment, ("entry",), [entry])
    entry.title = "Published"
    entry.save()
    assert {c.entry.title for c in Comment.cache.get(entry=entry)} == {"Published"}
    Entry.objects.filter(pk=entry.pk).update(title="Edited")
    assert {c.entry.title for c in Comment.cache.get(entry=entry)} == {"Edited"}
    assert_coherent(Comment, "entry", [entry])


# ---------------------------------------------------------------- raw SQL


def test_raw_sql_is_repaired_after_commit(graph, caplog):
    a, b = graph[:2]
    table = Follow._meta.db_table
    with caplog.at_level(logging.WARNING, logger="listy"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET follower_id = %s WHERE follower_id = %s", [b.pk, a.pk])
    assert_coherent(Follow, "follower", graph)
    assert len(Follow.cache.get(follower=a)) == 0
    rolled_back(lambda: connection.cursor().execute(f"DELETE FROM {table}"))
    assert_coherent(Follow, "follower", graph)


def test_reads_and_orm_writes_are_not_taken_for_raw_sql(graph, caplog):
    a = graph[0]
    with caplog.at_level(logging.WARNING, logger="listy"):
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {Follow._meta.db_table}")
        Follow.objects.filter(follower=a).update(created=timezone.now())
        f = Follow.objects.filter(follower=a).first()
        f.save()
    assert not [r for r in caplog.records if "outside the paths" in r.getMessage()]


# ---------------------------------------------------------------- Django's meaning kept


def test_get_or_create_and_update_or_create(graph):
    x, y = graph[3:5]
    obj, created = Follow.objects.get_or_create(follower=x, followee=y)
    assert created
    again, created = Follow.objects.get_or_create(follower=x, followee=y)
    assert not created and again.pk == obj.pk
    obj, created = Follow.objects.update_or_create(pk=obj.pk, defaults={"follower": y})
    assert not created and obj.follower_id == y.pk
    assert_coherent(Follow, "follower", graph)


def test_select_for_update_refresh_and_read_your_writes(graph):
    a, b = graph[:2]
    with transaction.atomic():
        locked = list(Follow.objects.select_for_update().filter(follower=a))
        assert len(locked) == 3
        Follow.objects.filter(follower=a).update(follower=b)
        # inside the transaction: the database's answer, not the cache's
        assert Follow.objects.filter(follower=a).count() == 0
        assert len(Follow.cache.get(follower=b)) == 6
        row = locked[0]
        row.refresh_from_db()
        assert row.follower_id == b.pk
    assert_coherent(Follow, "follower", graph)
