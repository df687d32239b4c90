"""Cache updates happen after commit; a rollback leaves the cache as it was."""

from __future__ import annotations

import pytest
from django.db import transaction

from tests.testapp.models import Follow

pytestmark = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


def test_rollback_leaves_the_cache_untouched(users, django_assert_num_queries):
    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    assert len(Follow.cache.get(follower=me)) == 1
    key = Follow.cache.key(follower=me)
    from listy.store import get_store

    before = get_store().get_raw(key)
    with pytest.raises(Boom), transaction.atomic():
        Follow.cache.add(follower=me, followee=him)
        Follow.cache.delete(follower=me, followee=you)
        raise Boom
    assert get_store().get_raw(key) == before
    with django_assert_num_queries(0):
        assert [f.followee_id for f in Follow.cache.get(follower=me)] == [you.pk]
    assert not Follow.cache.get(follower=me, followee=him)
    assert list(Follow.objects.values_list("followee_id", flat=True)) == [you.pk]


def test_the_cache_changes_when_the_transaction_commits(users, django_assert_num_queries):
    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    assert len(Follow.cache.get(follower=me)) == 1
    from listy.store import get_store

    key = Follow.cache.key(follower=me)
    with transaction.atomic():
        Follow.cache.add(follower=me, followee=him)
        # not in the cache yet ...
        before = get_store().get_raw(key)
        # ... but this transaction reads its own write (from the database)
        assert [f.followee_id for f in Follow.cache.get(follower=me)] == [him.pk, you.pk]
        assert get_store().get_raw(key) == before
    with django_assert_num_queries(0):
        assert [f.followee_id for f in Follow.cache.get(follower=me)] == [him.pk, you.pk]


def test_rollback_to_a_savepoint(users):
    me, you, him = users[:3]
    with transaction.atomic():
        Follow.cache.add(follower=me, followee=you)
        with pytest.raises(Boom), transaction.atomic():
            Follow.cache.add(follower=me, followee=him)
            raise Boom
    assert [f.followee_id for f in Follow.cache.get(follower=me)] == [you.pk]
    assert not Follow.cache.get(follower=me, followee=him)


@pytest.mark.django_db(transaction=False)
def test_writes_in_the_test_transaction_with_captured_callbacks(
    django_capture_on_commit_callbacks, django_assert_num_queries
):
    from django.contrib.auth.models import User

    me, you = User.objects.create(username="me"), User.objects.create(username="you")
    assert not Follow.cache.get(follower=me)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        Follow.cache.add(follower=me, followee=you)
    assert len(callbacks) == 1
    with django_assert_num_queries(0):
        assert [f.followee_id for f in Follow.cache.get(follower=me)] == [you.pk]
