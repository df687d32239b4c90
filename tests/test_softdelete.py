"""soft_delete_field, deleted_timestamp_field, enabled_field,
filter_out_soft_deletes."""

from __future__ import annotations

import pytest

import listy
from tests.testapp.models import Bookmark

pytestmark = pytest.mark.django_db(transaction=True)


def urls(records) -> list[str]:
    return [b.url for b in records]


def test_delete_soft_deletes(users, django_assert_num_queries):
    me = users[0]
    a = Bookmark.cache.add(user=me, url="https://a")
    Bookmark.cache.add(user=me, url="https://b")
    assert urls(Bookmark.cache.get(user=me)) == ["https://b", "https://a"]
    assert Bookmark.cache.count(user=me) == 2
    assert Bookmark.cache.get_one(a.pk) == a
    assert Bookmark.cache.delete(user=me, url="https://a") is True
    a.refresh_from_db()
    assert a.deleted is True and a.deleted_at is not None
    with django_assert_num_queries(0):
        assert urls(Bookmark.cache.get(user=me)) == ["https://b"]
        assert Bookmark.cache.count(user=me) == 1
        assert Bookmark.cache.get_one(a.pk) is None
    # already soft-deleted: nothing left to delete
    assert Bookmark.cache.delete(user=me, url="https://a") is False
    # the ORM still finds the row by pk (cache miss falls back)
    assert Bookmark.objects.get(pk=a.pk).deleted is True


def test_add_revives_a_soft_deleted_row(users, django_assert_num_queries):
    me = users[0]
    a = Bookmark.cache.add(user=me, url="https://a")
    Bookmark.cache.delete(pk=a.pk)
    assert not Bookmark.cache.get(user=me)
    assert Bookmark.cache.count(user=me) == 0
    revived = Bookmark.cache.add(user=me, url="https://a")
    assert revived is not None and revived.pk == a.pk
    assert Bookmark.objects.count() == 1
    revived.refresh_from_db()
    assert revived.deleted is False and revived.deleted_at is None
    with django_assert_num_queries(0):
        assert urls(Bookmark.cache.get(user=me)) == ["https://a"]
        assert Bookmark.cache.count(user=me) == 1
    assert Bookmark.cache.add(user=me, url="https://a") is None


def test_disabled_rows_are_never_listed_and_add_enables(users, django_assert_num_queries):
    me = users[0]
    hidden = Bookmark.objects.create(user=me, url="https://hidden", enabled=False)
    Bookmark.objects.create(user=me, url="https://shown")
    assert urls(Bookmark.cache.get(user=me)) == ["https://shown"]
    assert Bookmark.cache.count(user=me) == 1
    back = Bookmark.cache.add(user=me, url="https://hidden")
    assert back is not None and back.pk == hidden.pk
    with django_assert_num_queries(0):
        assert sorted(urls(Bookmark.cache.get(user=me))) == ["https://hidden", "https://shown"]
        assert Bookmark.cache.count(user=me) == 2


def test_keeping_soft_deleted_rows_in_lists(users, django_assert_num_queries):
    me = users[0]
    everything = listy.ListCache(
        Bookmark,
        [("user",)],
        soft_delete_field="deleted",
        deleted_timestamp_field="deleted_at",
        enabled_field="enabled",
        filter_out_soft_deletes=False,
    )
    a = Bookmark.cache.add(user=me, url="https://a")
    Bookmark.cache.add(user=me, url="https://b")
    assert len(everything.get(user=me)) == 2
    assert len(Bookmark.cache.get(user=me)) == 2
    Bookmark.cache.delete(pk=a.pk)
    with django_assert_num_queries(0):
        kept = {b.url: b.deleted for b in everything.get(user=me)}
        assert kept == {"https://a": True, "https://b": False}
        assert urls(Bookmark.cache.get(user=me)) == ["https://b"]
    # the two clients' lists never share a key
    assert everything.key(user=me) != Bookmark.cache.key(user=me)
    everything.add(user=me, url="https://a")
    with django_assert_num_queries(0):
        assert {b.url: b.deleted for b in everything.get(user=me)} == {"https://a": False, "https://b": False}
        assert sorted(urls(Bookmark.cache.get(user=me))) == ["https://a", "https://b"]
