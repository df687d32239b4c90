"""Writes outside Listy (save(), delete(), cascades) keep the lists right."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import transaction

from tests.testapp.models import Bookmark, Follow

pytestmark = pytest.mark.django_db(transaction=True)


def followees(user: User) -> list[int]:
    return [f.followee_id for f in Follow.cache.get(follower=user)]


def test_create_outside_listy(users, django_assert_num_queries):
    me, you, him = users[:3]
    Follow.objects.create(follower=me, followee=you)
    assert followees(me) == [you.pk]
    assert Follow.cache.count(follower=me) == 1
    Follow(follower=me, followee=him).save()
    with django_assert_num_queries(0):
        assert followees(me) == [him.pk, you.pk]
        assert Follow.cache.count(follower=me) == 2


def test_update_moves_the_row_between_lists(users, django_assert_num_queries):
    me, you, him = users[:3]
    follow = Follow.cache.add(follower=me, followee=you)
    assert followees(me) == [you.pk]
    assert followees(you) == []
    assert Follow.cache.get(follower=me, followee=you)
    assert Follow.cache.count(follower=me) == 1
    assert Follow.cache.count(follower=you) == 0
    assert Follow.cache.get_one(follow.pk).follower_id == me.pk
    follow.follower = you
    follow.followee = him
    follow.save()
    with django_assert_num_queries(0):
        assert followees(me) == []
        assert followees(you) == [him.pk]
        assert not Follow.cache.get(follower=me, followee=you)
        assert Follow.cache.count(follower=me) == 0
        assert Follow.cache.count(follower=you) == 1
        assert Follow.cache.get_one(follow.pk).follower_id == you.pk


def test_delete_outside_listy(users, django_assert_num_queries):
    me, you, him = users[:3]
    first = Follow.cache.add(follower=me, followee=you)
    Follow.cache.add(follower=me, followee=him)
    assert len(followees(me)) == 2
    pk = first.pk
    Follow.cache.get_one(pk)
    first.delete()
    with django_assert_num_queries(0):
        assert followees(me) == [him.pk]
        assert Follow.cache.get_one(pk) is None


def test_queryset_delete_and_cascade(users, django_assert_num_queries):
    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.add(follower=me, followee=him)
    Follow.cache.add(follower=him, followee=me)
    assert len(followees(me)) == 2 and len(followees(him)) == 1
    assert Follow.cache.count() == 3
    him.delete()  # cascades to the follows
    with django_assert_num_queries(0):
        assert followees(me) == [you.pk]
        assert Follow.cache.count() == 1
    Follow.objects.filter(follower=me).delete()
    with django_assert_num_queries(0):
        assert followees(me) == []


def test_rolled_back_save_changes_nothing(users, django_assert_num_queries):
    me, you, him = users[:3]
    follow = Follow.cache.add(follower=me, followee=you)
    assert followees(me) == [you.pk]
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        follow.followee = him
        follow.save()
        1 / 0
    with django_assert_num_queries(0):
        assert followees(me) == [you.pk]


def test_soft_delete_by_save(users, django_assert_num_queries):
    me = users[0]
    mark = Bookmark.cache.add(user=me, url="https://a")
    Bookmark.cache.add(user=me, url="https://b")
    assert len(Bookmark.cache.get(user=me)) == 2
    mark.deleted = True
    mark.save()
    with django_assert_num_queries(0):
        assert [b.url for b in Bookmark.cache.get(user=me)] == ["https://b"]
    mark.deleted = False
    mark.save()
    with django_assert_num_queries(0):
        assert sorted(b.url for b in Bookmark.cache.get(user=me)) == ["https://a", "https://b"]
    mark.enabled = False
    mark.save()
    with django_assert_num_queries(0):
        assert [b.url for b in Bookmark.cache.get(user=me)] == ["https://b"]


def test_field_change_updates_the_record(users, django_assert_num_queries):
    me = users[0]
    mark = Bookmark.cache.add(user=me, url="https://old")
    assert Bookmark.cache.get(user=me)[0].url == "https://old"
    assert Bookmark.cache.get_one(mark.pk).url == "https://old"
    mark.url = "https://new"
    mark.save()
    with django_assert_num_queries(0):
        assert [b.url for b in Bookmark.cache.get(user=me)] == ["https://new"]
        assert Bookmark.cache.get_one(mark.pk).url == "https://new"
