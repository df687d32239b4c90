"""Read your writes, everywhere: a second OS process shares the database
and the memcached server."""

from __future__ import annotations

import pytest

from tests.testapp.models import Follow

pytestmark = [pytest.mark.crossprocess, pytest.mark.memcached, pytest.mark.django_db(transaction=True)]


def test_another_process_add_is_seen_at_once_without_queries(users, other_process, django_assert_num_queries):
    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    # warm here: the lists, the ("follower", "followee") index, the counter
    assert len(Follow.cache.get(follower=me)) == 1
    assert Follow.cache.get(follower=me, followee=you)
    assert Follow.cache.count(follower=me) == 1
    (pk,) = other_process("add", me.pk, him.pk)
    with django_assert_num_queries(0):
        got = Follow.cache.get(follower=me)
        assert [f.pk for f in got] == [int(pk), got[1].pk]
        assert [f.followee_id for f in got] == [him.pk, you.pk]
        assert Follow.cache.get(follower=me, followee=him)
        assert Follow.cache.count(follower=me) == 2


def test_another_process_add_to_a_list_nobody_read_yet(users, other_process, django_assert_num_queries):
    me, you = users[:2]
    other_process("add", me.pk, you.pk)
    # the writer built the list: the first read here is already a hit
    with django_assert_num_queries(0):
        assert [f.followee_id for f in Follow.cache.get(follower=me)] == [you.pk]


def test_delete_removes_it_everywhere(users, other_process, django_assert_num_queries):
    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.add(follower=me, followee=him)
    assert len(Follow.cache.get(follower=me)) == 2
    assert Follow.cache.get(follower=me, followee=you)
    assert other_process("delete", me.pk, you.pk) == ["True"]
    with django_assert_num_queries(0):
        assert [f.followee_id for f in Follow.cache.get(follower=me)] == [him.pk]
        assert not Follow.cache.get(follower=me, followee=you)
    # and the other way round: a delete here is seen there, from the cache
    Follow.cache.delete(follower=me, followee=him)
    out = other_process("list", me.pk)
    assert out == ["queries=0"]


def test_the_other_process_reads_our_writes_from_the_cache(users, other_process):
    me, you, him = users[:3]
    assert not Follow.cache.get(follower=me)
    follow = Follow.cache.add(follower=me, followee=you)
    assert other_process("list", me.pk) == [str(follow.pk), "queries=0"]
    Follow.cache.delete(follower=me, followee=you)
    again = Follow.cache.add(follower=me, followee=him)
    assert other_process("list", me.pk) == [str(again.pk), "queries=0"]
