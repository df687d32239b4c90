"""The awaitable calls (SPEC §2, "Async"), each inside a running event loop.

Coroutines run through ``async_to_sync``, as Django's own test runner runs
``async def`` tests: the loop runs in another thread while the ORM's
thread-sensitive work comes back to the test's thread and its database
connection. Every SQL statement of every thread is counted (see
:func:`sql`), so "a hit never touches the database" is checked for the
worker threads too.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import transaction
from django.db.backends import utils as db_utils
from django.test import override_settings
from django.utils import timezone

import listy
from listy import aio
from tests.conftest import FAST_SETTINGS, Memcached, reset_listy
from tests.testapp.models import Bookmark, Follow

pytestmark = pytest.mark.django_db(transaction=True)


def run(coro: Any) -> Any:
    """Runs a coroutine to its end inside a running loop (``async_to_sync``)."""

    async def main() -> Any:
        return await coro

    return async_to_sync(main)()


class SQL:
    """Every statement any thread sends to the database, with its thread."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def add(self, sql: str) -> None:
        with self._lock:
            self.seen.append((threading.current_thread().name, sql))

    def reads(self) -> list[tuple[str, str]]:
        skip = ("SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "COMMIT")
        return [(t, s) for t, s in self.seen if not s.lstrip().upper().startswith(skip)]

    def clear(self) -> None:
        with self._lock:
            self.seen.clear()


@pytest.fixture
def sql(monkeypatch: pytest.MonkeyPatch) -> SQL:
    """Counts the SQL of every thread: the real cursor runs, its statements
    are noted on the way (connections are per thread, so a
    ``CaptureQueriesContext`` would only see the test's own)."""
    found = SQL()
    real = db_utils.CursorWrapper._execute_with_wrappers

    def counted(self, sql_text, params, many, executor):  # type: ignore[no-untyped-def]
        found.add(sql_text)
        return real(self, sql_text, params, many, executor)

    monkeypatch.setattr(db_utils.CursorWrapper, "_execute_with_wrappers", counted)
    return found


@pytest.fixture
def graph(users: list) -> dict[str, Any]:
    """Follows of three followers (lists of 3, 2 and 1), committed."""
    a, b, c, d, e = users
    follows = {
        a: [Follow.cache.add(follower=a, followee=x) for x in (b, c, d)],
        b: [Follow.cache.add(follower=b, followee=x) for x in (c, d)],
        c: [Follow.cache.add(follower=c, followee=e)],
    }
    return {"users": users, "follows": follows}


def pks(seq: Any) -> list[int]:
    return [o.pk for o in seq]


def flushed() -> None:
    Follow.cache.flush_all()
    Bookmark.cache.flush_all()


# ---------------------------------------------------------------- reads
def test_aget_on_a_miss_then_a_hit(graph: dict, sql: SQL) -> None:
    a = graph["users"][0]
    expected = [f.pk for f in reversed(graph["follows"][a])]
    flushed()
    sql.clear()
    got = run(Follow.cache.aget(follower=a))
    assert pks(got) == expected
    assert len(sql.reads()) == 1, "a miss reads its list once"
    assert all(t == threading.main_thread().name for t, _ in sql.reads()), "in the ORM's thread"
    sql.clear()
    hits = Follow.cache.hits
    got = run(Follow.cache.aget(follower=a))
    assert pks(got) == expected and got.from_cache
    assert Follow.cache.hits == hits + 1
    assert sql.reads() == [], "a hit never touches the database"
    # the lazy sequence works as in sync code, without I/O
    assert len(got) == 3 and bool(got) and got[0].pk == expected[0] and pks(got[1:]) == expected[1:]


def test_hits_do_not_wait_for_the_orm_thread(graph: dict) -> None:
    """A hit is read off the loop in Listy's own worker threads: it is
    served while the ORM's thread (``sync_to_async(thread_sensitive=True)``)
    is busy with something else."""
    a = graph["users"][0]
    expected = pks(Follow.cache.get(follower=a))
    count = Follow.cache.count(follower=a)

    async def scenario() -> tuple[list[int], int, bool]:
        release = threading.Event()
        busy = asyncio.ensure_future(sync_to_async(release.wait)())  # holds the ORM's thread
        try:
            await asyncio.sleep(0.01)
            got = await asyncio.wait_for(Follow.cache.aget(follower=a), 2)
            n = await asyncio.wait_for(Follow.cache.acount(follower=a), 2)
            still_busy = not busy.done()
        finally:
            release.set()
            await busy
        return pks(got), n, still_busy

    got, n, still_busy = run(scenario())
    assert (got, n, still_busy) == (expected, count, True)


def test_every_a_call_on_a_miss_and_a_hit(graph: dict, sql: SQL) -> None:
    a, b, c = graph["users"][:3]
    first = graph["follows"][a][0]
    now = timezone.now()
    days = [now.date() - datetime.timedelta(days=1), now.date()]
    calls: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        ("aget", lambda: Follow.cache.aget(follower=a), lambda: Follow.cache.get(follower=a)),
        ("aget_one", lambda: Follow.cache.aget_one(first.pk), lambda: Follow.cache.get_one(first.pk)),
        ("aget_first", lambda: Follow.cache.aget_first(follower=b), lambda: Follow.cache.get_first(follower=b)),
        (
            "aget_multi",
            lambda: Follow.cache.aget_multi([{"follower": a}, {"follower": c}], lambda f: f["follower"].pk),
            lambda: Follow.cache.get_multi([{"follower": a}, {"follower": c}], lambda f: f["follower"].pk),
        ),
        (
            "aget_multi_list",
            lambda: Follow.cache.aget_multi_list([{"follower": b}, {"follower": c}]),
            lambda: Follow.cache.get_multi_list([{"follower": b}, {"follower": c}]),
        ),
        ("acount", lambda: Follow.cache.acount(follower=a), lambda: Follow.cache.count(follower=a)),
        ("acount()", lambda: Follow.cache.acount(), lambda: Follow.cache.count()),
    ]
    for period in ("daily", "weekly", "monthly", "yearly"):
        one, many = f"{period}_count", f"{period}_counts"
        calls.append((
            f"a{one}",
            lambda one=one: getattr(Follow.cache, f"a{one}")(follower=a, created=now),
            lambda one=one: getattr(Follow.cache, one)(follower=a, created=now),
        ))
        calls.append((
            f"a{many}",
            lambda many=many: getattr(Follow.cache, f"a{many}")(created=iter(days)),
            lambda many=many: getattr(Follow.cache, many)(created=iter(days)),
        ))

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (int, type(None))):
            return value
        if hasattr(value, "pk"):
            return value.pk
        return pks(value)

    for name, acall, call in calls:
        expected = plain(call())
        flushed()
        sql.clear()
        assert plain(run(acall())) == expected, f"{name} on a miss"
        assert sql.reads(), f"{name}: a miss reads the database"
        assert {t for t, _ in sql.reads()} == {threading.main_thread().name}, f"{name}: in the ORM's thread"
        sql.clear()
        assert plain(run(acall())) == expected, f"{name} on a hit"
        assert sql.reads() == [], f"{name}: a hit never touches the database"


def test_objects_aget_by_pk_is_served_from_the_cache(graph: dict, sql: SQL) -> None:
    follow = graph["follows"][graph["users"][0]][0]
    Follow.cache.get_one(follow.pk)  # cached
    sql.clear()
    assert run(Follow.objects.aget(pk=follow.pk)) == follow
    assert run(Follow.objects.aget(id=follow.pk)) == follow
    assert run(Follow.objects.filter(pk=follow.pk).aget()) == follow
    assert sql.reads() == []
    # what the cache does not hold is the ORM's, as in sync code
    with pytest.raises(Follow.DoesNotExist):
        run(Follow.objects.aget(pk=10**9))
    assert run(Follow.objects.aget(follower=follow.follower, followee=follow.followee)) == follow


def test_a_list_in_segments_comes_back_whole(users: list, sql: SQL) -> None:
    """A long list is stored in segments; the async read fetches them all
    off the loop, so iterating it does no I/O (and no database read)."""
    me = users[0]
    n = 3000
    Bookmark.objects.bulk_create([Bookmark(user=me, url=f"https://example.com/{'x' * 40}/{i}") for i in range(n)])
    Bookmark.cache.rebuild(user=me)
    assert Bookmark.cache.engine.inspect(("user_id",), (me.pk,))["segments"] > 0, "the list is in segments"
    sql.clear()
    got = run(Bookmark.cache.aget(user=me))
    assert got.from_cache and len(got) == n
    assert [b.url.rsplit("/", 1)[1] for b in got] == [str(i) for i in reversed(range(n))]
    assert sql.reads() == []


# ---------------------------------------------------------------- writes
def test_aadd_and_adelete_on_cached_and_missing_lists(users: list, sql: SQL) -> None:
    me, you, him = users[:3]
    assert pks(run(Follow.cache.aget(follower=me))) == []  # cached, empty
    follow = run(Follow.cache.aadd(follower=me, followee=you))
    assert follow is not None and follow.pk
    assert run(Follow.cache.aadd(follower=me, followee=you)) is None, "an identical live row: a no-op"
    flushed()  # missing lists: the add builds them
    other = run(Follow.cache.aadd(follower=me, followee=him))
    sql.clear()
    assert pks(run(Follow.cache.aget(follower=me))) == [other.pk, follow.pk]
    assert sql.reads() == [], "the add left its lists cached"
    assert run(Follow.cache.adelete(follower=me, followee=you)) is True
    assert run(Follow.cache.adelete(follower=me, followee=you)) is False
    assert pks(run(Follow.cache.aget(follower=me))) == [other.pk]
    assert run(Follow.cache.acount(follower=me)) == 1


def test_writes_in_a_transaction_and_rolled_back(users: list) -> None:
    me, you, him = users[:3]

    class Rollback(Exception):
        pass

    def rolled_back() -> None:
        with transaction.atomic():
            Follow.cache.add(follower=me, followee=him)
            # inside the transaction, reads see the uncommitted row (from the database)
            assert len(Follow.cache.get(follower=me)) == 2
            raise Rollback

    def committed() -> list[int]:
        with transaction.atomic():
            f = Follow.cache.add(follower=me, followee=him)
            transaction.on_commit(lambda: seen.append("committed"))
        return [f.pk]

    seen: list[str] = []

    async def scenario() -> tuple[list[int], list[int], list[int]]:
        first = await Follow.cache.aadd(follower=me, followee=you)
        before = pks(await Follow.cache.aget(follower=me))
        with pytest.raises(Rollback):
            await sync_to_async(rolled_back)()
        after_rollback = pks(await Follow.cache.aget(follower=me))
        added = await sync_to_async(committed)()
        after_commit = pks(await Follow.cache.aget(follower=me))
        assert before == [first.pk]
        return after_rollback, added, after_commit

    after_rollback, added, after_commit = run(scenario())
    firsts = list(Follow.objects.filter(follower=me, followee=you).values_list("pk", flat=True))
    assert after_rollback == firsts, "a rolled-back add leaves the cached list alone"
    assert after_commit == added + firsts
    assert seen == ["committed"]


def test_arebuild_and_aflush_all(graph: dict) -> None:
    a, b = graph["users"][:2]
    Follow.cache.get(follower=a)
    Follow.objects.filter(follower=a, followee=b).update(created=timezone.now())  # outside Listy
    extra = Follow.objects.create(follower=a, followee=a)  # signals keep the list right
    run(Follow.cache.arebuild(follower=a))
    assert pks(Follow.cache.get(follower=a))[0] == extra.pk
    run(Follow.cache.aflush_all())
    assert Follow.cache.engine.inspect(("follower_id",), (a.pk,))["complete"] is False


# ---------------------------------------------------------------- concurrency
def test_200_concurrent_agets_over_several_lists(graph: dict, sql: SQL) -> None:
    users = graph["users"]
    expected = {u.pk: pks(Follow.objects.filter(follower=u).order_by("-pk")) for u in users}
    flushed()

    async def many() -> list[tuple[int, list[int]]]:
        async def one(i: int) -> tuple[int, list[int]]:
            u = users[i % len(users)]
            return u.pk, pks(await Follow.cache.aget(follower=u))

        return await asyncio.gather(*(one(i) for i in range(200)))

    results = run(many())
    assert len(results) == 200
    for pk, got in results:
        assert got == expected[pk]
    sql.clear()
    for pk, got in run(many()):  # all hits now
        assert got == expected[pk]
    assert sql.reads() == []


# ---------------------------------------------------------------- faults
@pytest.fixture
def own_memcached(monkeypatch: pytest.MonkeyPatch) -> Iterator[Memcached]:
    server = Memcached().start()
    monkeypatch.setenv("LISTY_SERVERS", server.address)
    reset_listy()
    try:
        with override_settings(LISTY=FAST_SETTINGS):
            yield server
    finally:
        if server.proc is not None:
            os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()
        monkeypatch.undo()
        reset_listy()


def test_a_frozen_server_does_not_stall_the_loop(graph: dict, own_memcached: Memcached) -> None:
    """memcached frozen (SIGSTOP): the a-calls fall back to the database
    while a ticker task keeps running on the loop."""
    users = graph["users"]
    expected = {u.pk: pks(Follow.objects.filter(follower=u).order_by("-pk")) for u in users}
    for u in users:
        Follow.cache.get(follower=u)  # cached
    os.kill(own_memcached.pid, signal.SIGSTOP)

    async def scenario() -> tuple[list[tuple[int, list[int]]], list[float], float]:
        ticks: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        start = time.monotonic()

        async def one(u: Any) -> tuple[int, list[int]]:
            return u.pk, pks(await Follow.cache.aget(follower=u))

        results = await asyncio.gather(*(one(u) for u in users * 4))
        elapsed = time.monotonic() - start
        stop.set()
        await task
        return results, ticks, elapsed

    results, ticks, elapsed = run(scenario())
    for pk, got in results:
        assert got == expected[pk], "served from the database"
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    # The reads waited for the server's timeout in worker threads: the
    # ticker kept ticking meanwhile (a blocked loop would not tick at all
    # during the timeout).
    assert elapsed >= FAST_SETTINGS["TIMEOUT"] * 0.9
    assert len(ticks) >= 5
    print(f"frozen server: {len(results)} reads in {elapsed * 1000:.0f} ms, ticker max gap {max(gaps) * 1000:.1f} ms")
    assert max(gaps) < FAST_SETTINGS["TIMEOUT"], "the loop was not blocked for a whole timeout"


# ---------------------------------------------------------------- sync calls in a loop
def test_sync_calls_inside_a_running_loop_name_their_twin(graph: dict) -> None:
    a = graph["users"][0]
    follow = graph["follows"][a][0]
    Follow.cache.get(follower=a)  # a hit would be served: it is refused all the same

    async def misuse(call: Callable[[], Any]) -> Exception:
        with pytest.raises(listy.SyncCallInEventLoop) as caught:
            call()
        return caught.value

    err = run(misuse(lambda: Follow.cache.get(follower=a)))
    assert "await Follow.cache.aget(" in str(err)
    from django.core.exceptions import SynchronousOnlyOperation

    assert isinstance(err, SynchronousOnlyOperation) and isinstance(err, listy.ListyError)
    for call, twin in [
        (lambda: Follow.cache.get_one(follow.pk), "aget_one"),
        (lambda: Follow.cache.count(follower=a), "acount"),
        (lambda: Follow.cache.weekly_counts(created=[timezone.now()]), "aweekly_counts"),
        (lambda: Follow.cache.add(follower=a, followee=a), "aadd"),
        (lambda: Follow.cache.delete(follower=a), "adelete"),
        (lambda: Follow.cache.flush_all(), "aflush_all"),
        (lambda: Follow.objects.get(pk=follow.pk), "Follow.objects.aget(pk="),
    ]:
        assert twin in str(run(misuse(call)))
    # nothing was written by the refused calls
    assert Follow.objects.filter(follower=a).count() == 3
    # the same calls from sync code run as before
    assert Follow.cache.get_one(follow.pk) == follow


def test_the_pool_is_made_again_in_a_forked_child(graph: dict) -> None:
    a = graph["users"][0]
    expected = pks(Follow.cache.get(follower=a))
    run(Follow.cache.acount(follower=a))  # counts are read in the pool's threads
    assert aio._pool is not None
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+: fork() of a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: a new loop, a new pool
        try:
            os.close(read)
            fresh = aio._pool is None
            got = asyncio.run(Follow.cache.aget(follower=a))
            n = asyncio.run(Follow.cache.acount(follower=a))
            ok = fresh and pks(got) == expected and n == len(expected) and aio._pool is not None
            os.write(write, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 10) == b"ok"
    os.close(read)


def test_repair_passes_run_in_the_background_worker_not_on_the_loop(
    graph: dict, own_memcached: Memcached, sql: SQL
) -> None:
    """With a repair look every 50 ms (it reads the PendingRepair table),
    async reads never read the table themselves, on the loop or in the ORM's
    thread: the process's background worker does (``listy.worker``)."""
    a = graph["users"][0]
    with override_settings(LISTY={**FAST_SETTINGS, "REPAIR_CHECK_INTERVAL": 0.05}):
        expected = pks(Follow.cache.get(follower=a))
        sql.clear()
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            assert pks(run(Follow.cache.aget(follower=a))) == expected
            assert run(Follow.cache.acount(follower=a)) == len(expected)
    reads = [(t, q) for t, q in sql.reads() if "listy_pendingrepair" in q.lower()]
    assert reads, "the worker looked at the table"
    assert {t for t, _ in reads} == {"listy-worker"}, reads
