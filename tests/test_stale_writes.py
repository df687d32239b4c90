"""Deterministic, single-process repros of what the contention stress
(``tests/test_contention.py``) finds (issue 16): a stale instance's
``delete()`` after another write moved its row, a stale instance's
``save()`` re-creating a deleted row under its old primary key, and
``add()`` reviving a row that a concurrent delete removed between its
SELECT and its UPDATE. They run on every database and store.

Each failed before issue 16's fixes; the root causes are in the closing
note and docs/guarantees.md.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db.models.signals import pre_save

from tests.testapp.models import Entry, Mark

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def entry(transactional_db: None) -> Entry:
    return Entry.objects.create(author=User.objects.create(username="stale"), title="e")


def cached(entry: Entry, color: int) -> list[int]:
    got = Mark.cache.get(entry_id=entry.pk, color=color)
    return sorted(m.pk for m in got)


def db(entry: Entry, color: int) -> list[int]:
    return sorted(Mark._base_manager.filter(entry=entry, color=color, deleted=False, enabled=True).values_list("pk", flat=True))


def test_a_stale_instance_deleted_after_a_move_leaves_no_list_holding_it(entry):  # type: ignore[no-untyped-def]
    obj = Mark.cache.add(entry_id=entry.pk, name="a", color=1)
    stale = Mark._base_manager.get(pk=obj.pk)  # fetched by one request...
    assert cached(entry, 1) == [obj.pk] and cached(entry, 2) == []
    mover = Mark._base_manager.get(pk=obj.pk)  # ...while another moves the row
    mover.color = 2
    mover.save(update_fields=["color"])
    assert cached(entry, 2) == [obj.pk]
    stale.delete()  # the first one deletes it, with its color 1 in memory
    assert db(entry, 2) == []
    assert cached(entry, 2) == db(entry, 2)
    assert Mark.cache.count(entry_id=entry.pk, color=2) == 0


def test_a_row_recreated_by_a_stale_save_is_listed_again(entry):  # type: ignore[no-untyped-def]
    obj = Mark.cache.add(entry_id=entry.pk, name="a", color=1)
    pk = obj.pk
    stale = Mark._base_manager.get(pk=pk)
    Mark._base_manager.get(pk=pk).delete()
    assert Mark.cache.get_one(pk) is None
    stale.save()  # Django: the UPDATE matched nothing, so it INSERTs under the old pk
    assert Mark._base_manager.filter(pk=pk, deleted=False).exists()
    assert Mark.cache.get_one(pk) is not None
    assert cached(entry, 1) == db(entry, 1) == [pk]
    assert Mark.cache.count() == 1


def test_a_row_recreated_unlisted_shows_once_a_later_save_lists_it(entry):  # type: ignore[no-untyped-def]
    """The same re-creation of a soft-deleted stale instance: the row comes
    back unlisted, so no list changes, but the lists must still start
    afresh. Else the earlier row's final tombstones hid it for good once a
    later save listed it again (found by the contention stress on MariaDB:
    a live row missing from its own pk list)."""
    obj = Mark.cache.add(entry_id=entry.pk, name="a", color=1)
    pk = obj.pk
    stale = Mark._base_manager.get(pk=pk)
    stale.deleted = True
    Mark._base_manager.get(pk=pk).delete()  # its pk list holds the final tombstone
    assert Mark.cache.get_one(pk) is None
    stale.save()  # re-created under its old pk, soft-deleted: unlisted
    assert Mark.cache.get_one(pk) is None
    stale.deleted = False
    stale.save(update_fields=["deleted"])  # listed again
    assert Mark.cache.get_one(pk) is not None
    assert [m.pk for m in Mark.cache.get(pk=pk)] == [pk]
    assert cached(entry, 1) == db(entry, 1) == [pk]
    assert Mark.cache.count() == 1


def test_add_reviving_a_row_deleted_meanwhile_does_not_raise(entry):  # type: ignore[no-untyped-def]
    obj = Mark.cache.add(entry_id=entry.pk, name="a", color=1)
    assert Mark.cache.delete(pk=obj.pk)  # soft-deleted: add() will revive it

    def deleted_meanwhile(sender: Any, instance: Mark, **kwargs: Any) -> None:
        # another process deletes the row between add()'s SELECT and its
        # UPDATE (here in add()'s own transaction: the UPDATE then finds nothing)
        if instance.pk == obj.pk and kwargs.get("update_fields"):
            Mark._base_manager.filter(pk=obj.pk)._raw_delete(Mark._base_manager.db)

    pre_save.connect(deleted_meanwhile, sender=Mark, dispatch_uid="deleted_meanwhile")
    try:
        revived = Mark.cache.add(entry_id=entry.pk, name="a", color=1)
    finally:
        pre_save.disconnect(sender=Mark, dispatch_uid="deleted_meanwhile")
    assert revived is not None
    assert cached(entry, 1) == db(entry, 1) == [revived.pk]
