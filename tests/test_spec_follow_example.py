"""The SPEC's Follow example end to end."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.contrib.auth.models import User

import listy
from tests.conftest import sql_statements
from tests.testapp.models import Follow

pytestmark = pytest.mark.django_db(transaction=True)


def follow_all(me: User, others: list[User]) -> list[Follow]:
    return [Follow.cache.add(follower=me, followee=o) for o in others]


def test_add_returns_the_instance_and_writes_the_row(users):
    me, you = users[:2]
    follow = Follow.cache.add(follower=me, followee=you)
    assert isinstance(follow, Follow)
    assert follow.pk is not None
    assert Follow.objects.filter(pk=follow.pk, follower=me, followee=you).exists()


def test_get_is_newest_first_and_served_from_cache(users, django_assert_num_queries):
    me, *others = users
    added = follow_all(me, others)
    Follow.cache.get(follower=me)  # warm
    with django_assert_num_queries(0):
        got = Follow.cache.get(follower=me)
        assert [f.pk for f in got] == [f.pk for f in reversed(added)]
        assert [f.followee_id for f in got] == [o.pk for o in reversed(others)]
        assert all(f.follower_id == me.pk for f in got)
        assert got.from_cache


def test_get_builds_instances_equal_to_the_orm(users):
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    cached = Follow.cache.get(follower=me)[0]
    orm = Follow.objects.filter(follower=me).get()
    assert cached == orm
    assert cached.created == orm.created
    assert cached.followee_id == orm.followee_id
    assert cached._state.adding is False
    assert cached._state.db == "default"
    assert cached.followee == you  # a normal FK access (User has no cache)


def test_a_list_is_built_once_then_hit(users, django_assert_num_queries):
    me, you = users[:2]
    Follow.objects.create(follower=me, followee=you)
    Follow.cache.flush_all()  # the create built the lists (signals); start cold
    Follow.cache.reset_local_stats()
    with django_assert_num_queries(1):
        assert len(Follow.cache.get(follower=me)) == 1
    with django_assert_num_queries(0):
        assert len(Follow.cache.get(follower=me)) == 1
    assert Follow.cache.misses == 1
    assert Follow.cache.hits == 1


def test_add_to_a_cached_list_needs_no_rebuild(users, django_assert_num_queries):
    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    assert len(Follow.cache.get(follower=me)) == 1
    Follow.cache.add(follower=me, followee=him)
    with django_assert_num_queries(0):
        assert [f.followee_id for f in Follow.cache.get(follower=me)] == [him.pk, you.pk]


def test_do_i_follow_you(users, django_assert_num_queries):
    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    assert Follow.cache.get(follower=me, followee=you)
    assert not Follow.cache.get(follower=me, followee=him)
    # the index's field order does not matter, nor the ORM spelling
    assert len(Follow.cache.get(followee=you, follower=me)) == 1
    assert len(Follow.cache.get(follower_id=me.pk, followee_id=you.pk)) == 1
    assert len(Follow.cache.get(follower=me.pk, followee=str(you.pk))) == 1
    with django_assert_num_queries(0):
        assert Follow.cache.get(follower=me, followee=you)


def test_add_builds_lists_not_cached_yet(users, django_assert_num_queries):
    """SPEC §2 add(): "a list not cached yet is built from the database (as
    the seed does), so the next read is a hit" - even on a fresh store."""
    me, you = users[:2]
    follow = Follow.cache.add(follower=me, followee=you)
    with django_assert_num_queries(0):
        assert [f.pk for f in Follow.cache.get(follower=me)] == [follow.pk]
        assert Follow.cache.get(follower=me, followee=you)
        assert Follow.cache.get_one(follow.pk) == follow


def test_add_of_an_identical_live_row_is_a_no_op(users):
    me, you = users[:2]
    assert Follow.cache.add(follower=me, followee=you) is not None
    assert Follow.cache.add(follower=me, followee=you) is None
    assert Follow.objects.count() == 1
    assert len(Follow.cache.get(follower=me)) == 1


def test_delete_removes_the_row_from_every_list(users, django_assert_num_queries):
    me, you, him = users[:3]
    follow_all(me, [you, him])
    assert len(Follow.cache.get(follower=me)) == 2
    assert Follow.cache.get(follower=me, followee=you)
    assert Follow.cache.delete(follower=me, followee=you) is True
    assert not Follow.objects.filter(follower=me, followee=you).exists()
    with django_assert_num_queries(0):
        assert [f.followee_id for f in Follow.cache.get(follower=me)] == [him.pk]
        assert not Follow.cache.get(follower=me, followee=you)
    assert Follow.cache.delete(follower=me, followee=you) is False


def test_counts_of_lists_and_of_the_model_follow_writes(users, django_assert_num_queries):
    me, you, *rest = users
    follow_all(me, [you, *rest])
    Follow.cache.add(follower=you, followee=me)
    assert Follow.cache.count(follower=me) == 4
    assert Follow.cache.count(follower=you) == 1
    assert Follow.cache.count() == 5
    assert Follow.cache.count(follower=me, followee=you) == 1
    with django_assert_num_queries(0):
        assert Follow.cache.count(follower=me) == 4
    Follow.cache.delete(follower=me, followee=you)
    Follow.cache.add(follower=rest[0], followee=me)
    with django_assert_num_queries(0):
        assert Follow.cache.count(follower=me) == 3
        assert Follow.cache.count() == 5


def test_lazy_sequence(users):
    me, *others = users
    added = follow_all(me, others)
    got = Follow.cache.get(follower=me)
    assert len(got) == 4 and bool(got)
    assert got[0].pk == added[-1].pk
    assert got[-1].pk == added[0].pk
    assert [f.pk for f in got[1:3]] == [added[2].pk, added[1].pk]
    assert got.pks() == [f.pk for f in reversed(added)]
    assert [r[0] for r in got.values()] == got.pks()
    with pytest.raises(IndexError):
        got[10]
    assert not Follow.cache.get(follower=others[0])


def test_get_one_get_first_and_manager_get(users, django_assert_num_queries):
    me, you, him = users[:3]
    first = Follow.cache.add(follower=me, followee=you)
    second = Follow.cache.add(follower=me, followee=him)
    assert Follow.cache.get_one(first.pk) == first
    assert Follow.cache.get_one(10**9) is None
    assert Follow.cache.get_first(follower=me) == second
    assert Follow.cache.get_first(follower=him) is None
    Follow.cache.get_one(second.pk)
    with django_assert_num_queries(0):
        assert Follow.objects.get(pk=second.pk).followee_id == him.pk
        assert Follow.objects.get(id=second.pk) == second
    with pytest.raises(Follow.DoesNotExist):
        Follow.objects.get(pk=10**9)
    # related managers keep the ORM semantics
    assert me.follows.get(pk=first.pk) == first
    with pytest.raises(Follow.DoesNotExist):
        you.follows.get(pk=first.pk)


def test_get_multi_and_get_multi_list(users, django_assert_num_queries):
    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.add(follower=me, followee=him)
    Follow.cache.add(follower=you, followee=him)
    filters = [{"follower": me}, {"follower": you}, {"follower": him}]
    got = Follow.cache.get_multi(filters, lambda f: f["follower"].pk)
    assert {k: [f.followee_id for f in v] for k, v in got.items()} == {
        me.pk: [him.pk, you.pk],
        you.pk: [him.pk],
        him.pk: [],
    }
    with django_assert_num_queries(0):
        again = Follow.cache.get_multi(filters, lambda f: f["follower"].pk)
        assert [len(v) for v in again.values()] == [2, 1, 0]
        flat = Follow.cache.get_multi_list(filters)
    assert [f.followee_id for f in flat] == [him.pk, you.pk, him.pk]
    default_keys = Follow.cache.get_multi([{"follower": me}])
    assert list(default_keys) == [(("follower", me.pk),)]


def test_rebuild_repairs_writes_the_cache_did_not_see(users):
    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.get(follower=me)
    Follow.cache.get(follower=me, followee=you)
    # a write the cache did not see
    with listy.bypass(Follow):
        Follow.objects.filter(follower=me).update(followee=him)
    assert [f.followee_id for f in Follow.cache.get(follower=me)] == [you.pk]
    Follow.cache.rebuild(follower=me)
    assert [f.followee_id for f in Follow.cache.get(follower=me)] == [him.pk]
    assert not Follow.cache.get(follower=me, followee=you)
    assert Follow.cache.get(follower=me, followee=him)


def test_flush_all_drops_every_list(users, django_assert_num_queries):
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.get(follower=me)
    Follow.cache.flush_all()
    with django_assert_num_queries(1):
        assert len(Follow.cache.get(follower=me)) == 1
    with django_assert_num_queries(0):
        assert len(Follow.cache.get(follower=me)) == 1


def test_determine_coherency(users):
    me, you, him = users[:3]
    mine_row = Follow.cache.add(follower=me, followee=you)
    theirs = Follow.cache.add(follower=you, followee=him)
    Follow.cache.get(follower=me)
    reports = list(Follow.cache.determine_coherency(check_against_db=True))
    by_list = {(r.index, r.values): r for r in reports}
    mine = by_list[(("follower_id",), (me.pk,))]
    assert mine.cached and mine.count == 1 and mine.size > 0 and mine.coherent is True
    assert mine.key == Follow.cache.key(follower=me)
    # a write that bypassed Listy makes the list incoherent
    with listy.bypass(Follow):
        Follow.objects.filter(follower=me).update(followee=him)
    mine = next(
        r for r in Follow.cache.determine_coherency(check_against_db=True)
        if r.index == ("follower_id",) and r.values == (me.pk,)
    )
    assert mine.coherent is False
    Follow.cache.rebuild(follower=me)
    after = {(r.index, r.values): r.coherent for r in Follow.cache.determine_coherency(check_against_db=True)}
    assert after == {
        (("follower_id",), (me.pk,)): True,  # rebuilt
        (("follower_id",), (you.pk,)): True,
        (("followee_id", "follower_id"), (him.pk, me.pk)): True,
        (("followee_id", "follower_id"), (him.pk, you.pk)): True,
        (("id",), (theirs.pk,)): True,
        # the moved row's own list stays wrong until it is rebuilt too
        (("id",), (mine_row.pk,)): False,
    }


def test_listy_client_without_a_manager(users):
    me, you = users[:2]
    other = listy.ListCache(Follow, [("followee",)], timestamp_field="created")
    Follow.cache.add(follower=me, followee=you)
    assert [f.follower_id for f in other.get(followee=you)] == [me.pk]
    # each client keeps the other's lists right
    Follow.cache.delete(follower=me, followee=you)
    assert not other.get(followee=you)
    other.add(follower=you, followee=me)
    assert [f.followee_id for f in Follow.cache.get(follower=you)] == [me.pk]
    with pytest.raises(listy.NotCachableException):
        other.get(follower=me)


def test_add_on_cached_lists_is_one_insert(users, django_assert_num_queries):
    """SPEC §5: add() on cached lists costs one INSERT (the no-op check is
    answered by the cached (follower, followee) list, not a SELECT)."""
    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.get(follower=me, followee=him)
    with CaptureQueriesContext(connection) as ctx:
        assert Follow.cache.add(follower=me, followee=him) is not None
    statements = sql_statements(ctx)
    assert len(statements) == 1 and statements[0].upper().startswith("INSERT"), statements
    with CaptureQueriesContext(connection) as ctx:
        assert Follow.cache.add(follower=me, followee=him) is None
        assert [f.followee_id for f in Follow.cache.get(follower=me)] == [him.pk, you.pk]
    assert sql_statements(ctx) == []


def test_records_index_count_and_in_compare_by_primary_key(users):
    me, you, him = users[:3]
    first, second = Follow.cache.add(follower=me, followee=you), Follow.cache.add(follower=me, followee=him)
    records = Follow.cache.get(follower=me)
    assert records.index(first) == 1 and records.index(second) == 0
    assert records.count(first) == 1 and first in records
    other = Follow.cache.add(follower=you, followee=him)
    assert records.count(other) == 0 and other not in records and "x" not in records
    with pytest.raises(ValueError):
        records.index(other)
