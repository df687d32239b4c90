"""Lists stored in segments, read without reading them whole: ``len()``,
``count()``, slices deep inside, iteration one segment at a time, and keyset
pages (``after``/``before``), each compared with the ORM, after soft and hard
deletes of rows in the head and in the segments, updates, revivals, adds
between pages, and the head's re-split (a compaction).

The rows are long (a 190-character URL) so that a few thousand of them take
several 1 MB segments.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.testapp.models import Bookmark

pytestmark = pytest.mark.django_db(transaction=True)

N = 12_000


def url(i: int) -> str:
    return f"https://example.com/{'x' * 170}/{i}"


def orm_pks(user: Any) -> list[int]:
    """The list as the ORM has it (newest first: the pk order a build keeps)."""
    rows = Bookmark.objects.filter(user=user, deleted=False, enabled=True).order_by("-pk")
    return list(rows.values_list("pk", flat=True))


def pks(items: Any) -> list[int]:
    return [b.pk for b in items]


@pytest.fixture
def big(users: list) -> Any:
    """A user with N bookmarks, their list built and stored in segments."""
    me = users[0]
    Bookmark.objects.bulk_create([Bookmark(user=me, url=url(i)) for i in range(N)], batch_size=2000)
    Bookmark.cache.rebuild(user=me)
    assert Bookmark.cache.engine.inspect(("user_id",), (me.pk,))["segments"] >= 2, "the list is in segments"
    return me


def check(me: Any, label: str) -> None:
    """len, count, slices, indexing and iteration against the ORM, served
    from the cache without SQL and without reading the list whole for
    anything but the iteration."""
    want = orm_pks(me)
    n = len(want)
    with CaptureQueriesContext(connection) as sql:
        assert len(Bookmark.cache.get(user=me)) == n, label
        assert Bookmark.cache.count(user=me) == n, label
        records = Bookmark.cache.get(user=me)
        for a, b in [(0, 20), (n // 2, n // 2 + 20), (n - 30, n + 5), (n + 3, n + 9), (1, 3)]:
            assert pks(records[a:b]) == want[a:b], f"{label}: [{a}:{b}]"
        assert records[n // 3].pk == want[n // 3], label
        assert records[-1].pk == want[-1], label
        # Slices across every segment boundary: step through the list.
        step = max(1, n // 9)
        for a in range(0, n, step):
            assert pks(Bookmark.cache.get(user=me)[a - 3 : a + 3] if a >= 3 else records[:3]) == (
                want[a - 3 : a + 3] if a >= 3 else want[:3]
            ), f"{label}: around {a}"
        assert pks(Bookmark.cache.get(user=me)) == want, f"{label}: iteration"
        assert records.from_cache
    assert [q["sql"] for q in sql.captured_queries] == [], f"{label}: hits run no SQL"


def test_len_count_slices_and_iteration_of_a_list_in_segments_match_the_orm(big: Any) -> None:
    me = big
    records = Bookmark.cache.get(user=me)
    assert len(records) == N and not records.complete, "counted without reading every segment"
    assert pks(records[N // 2 : N // 2 + 20]) == orm_pks(me)[N // 2 : N // 2 + 20]
    assert not records.complete, "a deep slice reads the segment it is in, not the list"
    check(me, "as built")
    newest, oldest = orm_pks(me)[0], orm_pks(me)[-1]
    middle = orm_pks(me)[N // 2]
    # Soft deletes of rows in the head and in segments, twice over one.
    for pk in (newest, oldest, middle, middle):
        Bookmark.cache.delete(pk=pk)
    # Hard deletes (final tombstones), one in a segment.
    Bookmark.objects.filter(pk__in=[orm_pks(me)[100], orm_pks(me)[-7]]).delete()
    check(me, "after deletes")
    # An update of a row in a segment keeps its place with its new content.
    moved = Bookmark.objects.get(pk=orm_pks(me)[N // 3])
    moved.url = "https://example.com/updated"
    moved.save()
    at = orm_pks(me).index(moved.pk)
    assert Bookmark.cache.get(user=me)[at].url == "https://example.com/updated"
    assert [b.url for b in Bookmark.cache.get(user=me).after(moved.pk + 1, 1)] == [moved.url]
    # A revival: the soft-deleted middle row comes back, prepended.
    revived = Bookmark.objects.get(pk=middle)
    Bookmark.cache.add(user=me, url=revived.url)
    assert Bookmark.objects.get(pk=middle).deleted is False
    got = pks(Bookmark.cache.get(user=me))
    assert sorted(got) == sorted(orm_pks(me)) and got[0] == middle, "the revived row comes first"
    assert len(Bookmark.cache.get(user=me)) == len(orm_pks(me))
    assert Bookmark.cache.count(user=me) == len(orm_pks(me))


def test_len_and_count_stay_right_through_a_re_split_of_the_head(big: Any) -> None:
    me = big
    old = orm_pks(me)[-50:]
    for i in range(120):  # about 26 KB of prepends: past head_split
        Bookmark.cache.add(user=me, url=url(N + i))
    Bookmark.cache.delete(pk=old[0])
    Bookmark.objects.filter(pk=old[1]).delete()
    head = Bookmark.cache.engine.inspect(("user_id",), (me.pk,))
    records = Bookmark.cache.get(user=me)  # the grown head is split again
    assert len(records) == len(orm_pks(me))
    after = Bookmark.cache.engine.inspect(("user_id",), (me.pk,))
    assert after["size"] < head["size"] or after["segments"] != head["segments"], (head, after)
    check(me, "after the head's re-split")


def test_keyset_pages_across_segments_with_adds_between_pages_match_the_orm(big: Any) -> None:
    me = big
    first = orm_pks(me)
    Bookmark.cache.delete(pk=first[500])  # a hole in a page
    Bookmark.objects.filter(pk=first[-3]).delete()
    start = orm_pks(me)
    walked: list[int] = []
    cursor: int | None = None
    page_size = 700  # a few pages per segment: pages straddle boundaries
    while True:
        page = Bookmark.cache.get(user=me).after(cursor, page_size)
        orm = Bookmark.objects.filter(user=me, deleted=False, enabled=True)
        if cursor is not None:
            orm = orm.filter(pk__lt=cursor)
        assert pks(page) == list(orm.order_by("-pk").values_list("pk", flat=True)[:page_size])
        if not page:
            break
        walked += pks(page)
        cursor = page[-1].pk
        Bookmark.cache.add(user=me, url=url(10**6 + len(walked)))  # a new row, newer than every page
    assert walked == start, "every row once, in order, whatever was added meanwhile"
    # before(): the page a reverse cursor shows, largest pk first.
    pivot = start[len(start) // 2]
    back = Bookmark.cache.get(user=me).before(pivot, 30)
    orm = Bookmark.objects.filter(user=me, deleted=False, enabled=True, pk__gt=pivot).order_by("pk")[:30]
    assert pks(back) == list(reversed(list(orm.values_list("pk", flat=True))))
    assert Bookmark.cache.get(user=me).after(start[-1]) == []
    assert pks(Bookmark.cache.get(user=me).after(None, 3)) == orm_pks(me)[:3]
