"""SPEC §5: what one add() costs. On cached lists it is one INSERT and one
pipelined memcached round trip when the database can answer add()'s no-op
check (a unique constraint over the given fields); otherwise the check reads
the cached (follower, followee) list first: one more round trip, no SELECT."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from listy.store import get_store
from tests.conftest import sql_statements
from tests.testapp.models import Follow, Friend

def _cost(call):  # type: ignore[no-untyped-def]
    """(result, SQL statements, store batches) of one call."""
    store = get_store()
    before = store.batches
    with CaptureQueriesContext(connection) as ctx:
        result = call()
    return result, sql_statements(ctx), store.batches - before


def test_add_with_a_unique_pair_is_one_insert_and_one_round_trip(users):
    me, you, him = users[:3]
    Friend.cache.add(follower=me, followee=you)
    # the lists the row will enter, cached (its pk list cannot be: it is
    # written whole)
    assert len(Friend.cache.get(follower=me)) == 1
    assert len(Friend.cache.get(follower=me, followee=him)) == 0
    made, sql, batches = _cost(lambda: Friend.cache.add(follower=me, followee=him))
    assert made is not None
    assert len(sql) == 1 and sql[0].upper().startswith("INSERT"), sql
    assert batches == 1
    # and every list is right, with no query
    with CaptureQueriesContext(connection) as ctx:
        assert [f.followee_id for f in Friend.cache.get(follower=me)] == [him.pk, you.pk]
        assert [f.pk for f in Friend.cache.get(follower=me, followee=him)] == [made.pk]
        assert Friend.cache.get_one(made.pk).followee_id == him.pk
        assert Friend.cache.count(follower=me) == 2
    assert sql_statements(ctx) == []


def test_a_new_unique_pair_list_not_cached_is_built_by_the_add(users):
    """The (follower, followee) list of a unique pair holds one row, but the
    add does not store it whole: by the time its write lands, the row may be
    gone and another hold the pair. Not cached, it is built (one SELECT), so
    the next read is a hit, as for any list."""
    me, you, him = users[:3]
    Friend.cache.add(follower=me, followee=him)  # the first add registers the model's indexes
    Friend.cache.get(follower=me)
    made, sql, _ = _cost(lambda: Friend.cache.add(follower=me, followee=you))
    assert [s.split(None, 1)[0].upper() for s in sql] == ["INSERT", "SELECT"], sql
    with CaptureQueriesContext(connection) as ctx:
        assert [f.pk for f in Friend.cache.get(follower=me, followee=you)] == [made.pk]
    assert sql_statements(ctx) == []


def test_add_without_a_unique_constraint_checks_the_cached_pair_list_first(users):
    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.get(follower=me, followee=him)
    made, sql, batches = _cost(lambda: Follow.cache.add(follower=me, followee=him))
    assert made is not None and len(sql) == 1 and sql[0].upper().startswith("INSERT")
    assert batches == 2  # the no-op check's read, then the write


def test_add_of_an_existing_unique_pair_is_a_no_op(users):
    me, you = users[:2]
    first = Friend.cache.add(follower=me, followee=you)
    assert Friend.cache.add(follower=me, followee=you) is None
    assert Friend.cache.add(follower_id=me.pk, followee_id=you.pk) is None
    assert Friend.objects.filter(follower=me).count() == 1
    assert [f.pk for f in Friend.cache.get(follower=me)] == [first.pk]
    assert Friend.cache.count(follower=me) == 1


def test_add_of_a_soft_deleted_unique_pair_revives_it(users):
    me, you = users[:2]
    first = Friend.cache.add(follower=me, followee=you)
    assert Friend.cache.delete(follower=me, followee=you) is True
    assert list(Friend.cache.get(follower=me)) == []
    revived = Friend.cache.add(follower=me, followee=you)
    assert revived is not None and revived.pk == first.pk
    assert [f.pk for f in Friend.cache.get(follower=me)] == [first.pk]
    assert Friend.objects.get(pk=first.pk).hidden is False


def test_a_conflict_inside_the_callers_transaction_leaves_it_usable(users):
    me, you, him = users[:3]
    Friend.cache.add(follower=me, followee=you)
    with transaction.atomic():
        assert Friend.cache.add(follower=me, followee=you) is None
        made = Friend.cache.add(follower=me, followee=him)
        assert made is not None
    assert sorted(f.followee_id for f in Friend.cache.get(follower=me)) == sorted([you.pk, him.pk])


def test_another_integrity_error_still_reaches_the_caller(users):
    """A failed INSERT that is not a duplicate (here a foreign key to no row)
    is tried once more by the checked path and raises as the ORM would."""
    me = users[0]
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            Friend.cache.add(follower=me, followee_id=10**9)
    assert list(Friend.cache.get(follower=me)) == []
    assert not Friend.objects.filter(follower=me).exists()


def test_a_check_constraint_is_not_taken_for_a_unique_one(users):
    """``Friend`` also has a CheckConstraint (no self-follow): only its
    UniqueConstraint lets add() insert first."""
    me = users[0]
    assert Friend.cache._unique_in_database({"follower": me, "followee": users[1]})
    assert not Friend.cache._unique_in_database({"follower": me})
    assert not Friend.cache._unique_in_database({"follower": me, "followee": None})
    assert Friend.cache._unique_in_database({"pk": 5})
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            Friend.cache.add(follower=me, followee=me)
