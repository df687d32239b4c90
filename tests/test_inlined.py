"""inlined_foreign_key_fields and foreign-key access through the pk cache."""

from __future__ import annotations

import pytest

from tests.testapp.models import Comment, Entry

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def entry(users):
    return Entry.cache.add(author=users[0], title="Hello", body="long text")


def test_inlined_fields_come_without_a_query(users, entry, django_assert_num_queries):
    you = users[1]
    Comment.cache.add(entry=entry, user=you, text="first!")
    Comment.cache.get(user=you)
    with django_assert_num_queries(0):
        (comment,) = Comment.cache.get(user=you)
        assert comment.entry_id == entry.pk
        assert comment.entry.title == "Hello"
        assert comment.entry.created == entry.created
        assert comment.entry.pk == entry.pk
    # other fields of the entry load lazily
    with django_assert_num_queries(1):
        assert comment.entry.body == "long text"


def test_inlined_fields_follow_the_related_row_only_on_rebuild(users, entry):
    you = users[1]
    Comment.cache.add(entry=entry, user=you, text="x")
    assert Comment.cache.get(user=you)[0].entry.title == "Hello"
    entry.title = "Changed"
    entry.save()
    Comment.cache.rebuild(user=you)
    assert Comment.cache.get(user=you)[0].entry.title == "Changed"


def test_deleting_the_related_row_cascades(users, entry, django_assert_num_queries):
    you = users[1]
    Comment.cache.add(entry=entry, user=you, text="x")
    assert len(Comment.cache.get(user=you)) == 1
    entry.delete()
    with django_assert_num_queries(0):
        assert not Comment.cache.get(user=you)


def test_fk_access_is_served_from_the_pk_cache(users, entry, django_assert_num_queries):
    comment = Comment.objects.create(entry=entry, user=users[1], text="x")
    fresh = Comment.objects.get(pk=comment.pk)  # Comment has no ("pk",) index
    Entry.cache.get_one(entry.pk)  # warm
    with django_assert_num_queries(0):
        assert fresh.entry.title == "Hello"
        assert Entry.objects.get(pk=entry.pk).title == "Hello"
