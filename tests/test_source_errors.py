"""A loader's exception crosses the engine unchanged: the binding carries
the Python exception inside the core's typed source error and raises that
very object again (not a ``ListyError`` with its text)."""

from __future__ import annotations

import pytest
from django.db import DatabaseError

from listy import ListyError
from tests.testapp.models import Follow

pytestmark = pytest.mark.django_db(transaction=True)


class LoaderFailed(Exception):
    pass


@pytest.mark.parametrize("exc", [LoaderFailed("no rows today"), DatabaseError("connection lost")])
def test_a_loader_exception_is_raised_again_as_it_was(users, exc):
    me = users[0]
    engine = Follow.cache.engine

    def loader(fields, values):
        raise exc

    with pytest.raises(type(exc)) as raised:
        engine.get(("follower_id",), (me.pk,), loader)
    assert raised.value is exc
    assert not isinstance(raised.value, ListyError)
    # nothing was stored: the next read goes to the loader again
    calls = []

    def counting(fields, values):
        calls.append(values)
        return []

    assert len(engine.get(("follower_id",), (me.pk,), counting)) == 0
    assert calls == [(me.pk,)]
