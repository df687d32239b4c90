"""Writes through stale instances and rows that come back: the cache
follows the row as the database stores it, never the instance's copy
(issue 16's defects, each pinned by a deterministic test)."""

from __future__ import annotations

import pytest

from tests.testapp.models import Follow, Friend

pytestmark = pytest.mark.django_db(transaction=True)


def followees(**filters):  # type: ignore[no-untyped-def]
    return sorted(f.followee_id for f in Follow.cache.get(**filters))


def test_a_stale_instance_deleted_after_a_move_leaves_no_list_holding_it(users):
    """Another process moved the row; this one deletes it through an
    instance loaded before the move: the tombstones go to the lists of the
    stored row, and the list it moved to is emptied."""
    me, you, him = users[:3]
    row = Follow.cache.add(follower=me, followee=you)
    stale = Follow.objects.get(pk=row.pk)
    assert followees(follower=me, followee=you) == [you.pk]
    moved = Follow._base_manager.get(pk=row.pk)
    moved.followee = him
    moved.save()
    assert followees(follower=me, followee=him) == [him.pk]
    stale.delete()  # stale.followee is still you
    assert followees(follower=me) == []
    assert followees(follower=me, followee=him) == []
    assert followees(follower=me, followee=you) == []
    assert Follow.cache.get_one(row.pk) is None
    assert Follow.cache.count(follower=me) == Follow.objects.filter(follower=me).count() == 0


def test_a_save_of_some_fields_through_a_stale_instance_keeps_the_stored_flags(users):
    """``save(update_fields=[...])`` writes those fields only: a row another
    process soft-deleted meanwhile stays out of the lists, and the
    model-wide counter is not moved by the stale instance's flag."""
    me, you, him = users[:3]
    row = Friend.cache.add(follower=me, followee=you)
    assert Friend.cache.count() == 1  # cached from here on
    stale = Friend.objects.get(pk=row.pk)
    assert Friend.cache.delete(follower=me, followee=you) is True  # soft delete elsewhere
    stale.followee = him  # stale.hidden is still False
    stale.save(update_fields=["followee"])
    assert list(Friend.cache.get(follower=me)) == []
    assert list(Friend.cache.get(follower=me, followee=him)) == []
    assert Friend.cache.count() == Friend.objects.filter(hidden=False).count() == 0
    assert Friend.cache.add(follower=me, followee=him).pk == row.pk  # revives the moved row
    assert [f.pk for f in Friend.cache.get(follower=me, followee=him)] == [row.pk]
    assert Friend.cache.count() == 1


def test_a_row_re_created_by_a_stale_save_shows_in_every_list(users):
    """Plain Django re-creates a row deleted meanwhile when a stale instance
    is saved: the earlier row's final tombstones must not hide it."""
    me, you = users[:2]
    row = Follow.cache.add(follower=me, followee=you)
    stale = Follow.objects.get(pk=row.pk)
    assert Follow.cache.delete(follower=me, followee=you) is True
    assert Follow.cache.get_one(row.pk) is None
    stale.save()  # UPDATE finds nothing: Django INSERTs it under its pk
    assert Follow.objects.filter(pk=row.pk).exists()
    assert Follow.cache.get_one(row.pk) == stale
    assert followees(follower=me) == [you.pk]
    assert followees(follower=me, followee=you) == [you.pk]
    assert Follow.cache.count(follower=me) == 1


def test_add_with_a_used_primary_key_shows_the_row(users):
    me, you = users[:2]
    row = Follow.cache.add(follower=me, followee=you)
    pk = row.pk
    assert Follow.cache.get_one(pk) is not None
    row.delete()
    assert Follow.cache.get_one(pk) is None
    again = Follow.cache.add(pk=pk, follower=me, followee=you)
    assert again is not None and again.pk == pk
    assert Follow.cache.get_one(pk) == again
    assert followees(follower=me) == [you.pk]


def test_a_revival_of_a_row_deleted_meanwhile_inserts_afresh(users):
    """add() found a soft-deleted row to revive; another process deleted it
    for good before the revival's write: add() inserts a new row, as plain
    Django would, instead of raising."""
    me, you = users[:2]
    row = Friend.cache.add(follower=me, followee=you)
    assert Friend.cache.delete(follower=me, followee=you) is True
    found = Friend._base_manager.get(pk=row.pk)
    Friend._base_manager.filter(pk=row.pk).delete()
    assert Friend.cache._revive(found, Friend.cache.db_alias) is False
    again = Friend.cache.add(follower=me, followee=you)
    assert again is not None and again.pk != row.pk
    assert [f.pk for f in Friend.cache.get(follower=me)] == [again.pk]
