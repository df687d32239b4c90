"""Management commands."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.testapp.models import Follow

pytestmark = pytest.mark.django_db(transaction=True)


def test_listy_flush(users, django_assert_num_queries):
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.get(follower=me)
    out = StringIO()
    call_command("listy_flush", "testapp.Follow", stdout=out)
    assert "flushed testapp.Follow" in out.getvalue()
    with django_assert_num_queries(1):
        assert len(Follow.cache.get(follower=me)) == 1


def test_listy_flush_all_and_errors(users):
    out = StringIO()
    call_command("listy_flush", "--all", stdout=out)
    assert "testapp.Follow" in out.getvalue()
    with pytest.raises(CommandError):
        call_command("listy_flush")
    with pytest.raises(CommandError):
        call_command("listy_flush", "auth.User")


def test_listy_stats(users):
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.get(follower=me)
    Follow.cache.get(follower=me)
    out = StringIO()
    call_command("listy_stats", stdout=out)
    text = out.getvalue()
    assert text.startswith("store: ")
    assert "testapp.Follow: indexes (pk), (follower), (follower, followee); hits 2, misses 0" in text
