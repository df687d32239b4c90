"""``manage.py listy_sync``: writes made by a plain psycopg connection (no
Django) reach every cached list and counter through PostgreSQL's logical
change stream, with no call to ``rebuild``.

Runs with ``LISTY_TEST_DB=postgres`` on a server with ``wal_level =
logical`` (scripts/test.sh sets it); skipped otherwise. Each test sets up
its own slot and publication and drops them afterwards (a slot left behind
keeps WAL on disk).
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from tests.conftest import ROOT, Memcached, process_env, reset_listy
from tests.testapp.models import Bookmark, Follow

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("LISTY_TEST_DB") != "postgres",
        reason="listy_sync follows PostgreSQL's change stream: LISTY_TEST_DB=postgres only",
    ),
    pytest.mark.django_db(transaction=True),
]

PARIS = timezone.get_default_timezone()


def at(y: int, m: int, d: int, h: int = 12) -> datetime.datetime:
    return datetime.datetime(y, m, d, h, tzinfo=PARIS)


class Outside:
    """A plain psycopg connection to the test database: the writer Django
    never hears of."""

    def __init__(self) -> None:
        import psycopg

        s = connection.settings_dict
        self.conn = psycopg.connect(
            host=s["HOST"], port=s["PORT"], user=s["USER"], dbname=s["NAME"], autocommit=True
        )

    def run(self, sql: str, params: Any = None) -> None:
        self.conn.execute(sql, params)

    def transaction(self) -> Any:
        return self.conn.transaction()

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def sync(users, settings) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """``LISTY["SYNC"]`` with a slot and publication of this test's own,
    set up; dropped afterwards."""
    from listy import sync as listy_sync

    if listy_sync.wal_level("default") != "logical":
        pytest.skip("wal_level is not 'logical' (scripts/test.sh sets it: ALTER SYSTEM, then a restart)")
    name = f"listy_test_{os.getpid()}"
    conf = {"SLOT": name, "PUBLICATION": name}
    settings.LISTY = {**settings.LISTY, "SYNC": conf}
    stale = listy_sync.sync_settings()
    listy_sync.drop(stale, lambda _: None)  # a slot an interrupted run left
    call_command("listy_sync", "--setup", verbosity=0)
    try:
        yield {"conf": listy_sync.sync_settings(), "name": name}
    finally:
        listy_sync.drop(stale, lambda _: None)


@pytest.fixture
def outside() -> Iterator[Outside]:
    o = Outside()
    try:
        yield o
    finally:
        o.close()


def once() -> None:
    call_command("listy_sync", "--once", verbosity=0)


def follow_lists(users) -> list[tuple[str, Callable[[], list[int]], Callable[[], list[int]]]]:  # type: ignore[no-untyped-def]
    """(name, cached pks, database pks) of every Follow list of the users."""
    out = []
    for u in users:
        out.append(
            (
                f"follower={u.pk}",
                lambda u=u: sorted(f.pk for f in Follow.cache.get(follower=u)),
                lambda u=u: sorted(Follow.objects.filter(follower=u).values_list("pk", flat=True)),
            )
        )
        for v in users:
            out.append(
                (
                    f"follower={u.pk},followee={v.pk}",
                    lambda u=u, v=v: sorted(f.pk for f in Follow.cache.get(follower=u, followee=v)),
                    lambda u=u, v=v: sorted(
                        Follow.objects.filter(follower=u, followee=v).values_list("pk", flat=True)
                    ),
                )
            )
    return out


def warm_follows(users) -> None:  # type: ignore[no-untyped-def]
    for _, cached, _ in follow_lists(users):
        cached()
    Follow.cache.count()


def assert_follows_converged(users, django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    """Every list and count equals the database, the lists and their counts
    served from the cache (the model-wide counter the stream touched is
    counted afresh: one query)."""
    lists = follow_lists(users)
    with django_assert_num_queries(0):
        cached = [(name, c()) for name, c, _ in lists]
        counts = [(u.pk, Follow.cache.count(follower=u)) for u in users]
    with django_assert_num_queries(1, exact=False):
        total = Follow.cache.count()
    for (name, got), (_, _, db) in zip(cached, lists):
        assert got == db(), name
    for pk, n in counts:
        assert n == Follow.objects.filter(follower_id=pk).count(), f"count follower={pk}"
    assert total == Follow.objects.count(), "model-wide count"


def test_setup_sets_replica_identity_publication_and_slot(sync):
    with connection.cursor() as cur:
        cur.execute(
            "SELECT relreplident FROM pg_class WHERE relname IN ('testapp_follow', 'testapp_bookmark')"
        )
        assert [r[0] for r in cur.fetchall()] == ["f", "f"]
        cur.execute("SELECT tablename FROM pg_publication_tables WHERE pubname = %s", [sync["name"]])
        tables = {r[0] for r in cur.fetchall()}
    assert {"testapp_follow", "testapp_bookmark", "testapp_comment"} <= tables
    from listy.sync import status

    found = status(sync["conf"])
    assert found is not None and found["plugin"] == "pgoutput" and found["lag_bytes"] >= 0
    call_command("listy_sync", "--setup", verbosity=0)  # idempotent


def test_insert_move_and_delete_from_outside(sync, users, outside, django_assert_num_queries):
    me, you, other = users[:3]
    kept = Follow.cache.add(follower=me, followee=you)
    warm_follows(users)
    now = timezone.now()
    outside.run(
        "INSERT INTO testapp_follow (created, follower_id, followee_id) VALUES (%s, %s, %s), (%s, %s, %s)",
        [now, me.pk, other.pk, now, you.pk, me.pk],
    )
    once()
    assert_follows_converged(users, django_assert_num_queries)
    assert len(Follow.objects.filter(follower=me)) == 2
    # an UPDATE that moves a row from me's lists to other's
    outside.run("UPDATE testapp_follow SET follower_id = %s WHERE id = %s", [other.pk, kept.pk])
    once()
    assert_follows_converged(users, django_assert_num_queries)
    assert kept.pk not in [f.pk for f in Follow.cache.get(follower=me)]
    outside.run("DELETE FROM testapp_follow WHERE follower_id = %s", [you.pk])
    once()
    assert_follows_converged(users, django_assert_num_queries)


def bookmark_state(users) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    days = [at(2024, 3, 4), at(2024, 3, 5), at(2024, 3, 11)]
    return {
        "lists": {u.pk: sorted(b.pk for b in Bookmark.cache.get(user=u)) for u in users[:2]},
        "count": Bookmark.cache.count(),
        "daily": [Bookmark.cache.daily_count(created=d) for d in days],
        "weekly": [Bookmark.cache.weekly_count(created=d) for d in days],
    }


def bookmark_truth(users) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    live = Bookmark.objects.filter(deleted=False, enabled=True)
    days = [datetime.date(2024, 3, 4), datetime.date(2024, 3, 5), datetime.date(2024, 3, 11)]

    def in_days(start: datetime.date, n: int) -> int:
        lo = datetime.datetime.combine(start, datetime.time.min, tzinfo=PARIS)
        return live.filter(created__gte=lo, created__lt=lo + datetime.timedelta(days=n)).count()

    return {
        "lists": {u.pk: sorted(live.filter(user=u).values_list("pk", flat=True)) for u in users[:2]},
        "count": live.count(),
        "daily": [in_days(d, 1) for d in days],
        "weekly": [in_days(d - datetime.timedelta(days=d.weekday()), 7) for d in days],
    }


def test_soft_delete_flips_and_counter_buckets(sync, users, outside, django_assert_num_queries):
    me, you = users[:2]
    marks = [
        Bookmark.cache.add(user=me, url="a", created=at(2024, 3, 4)),
        Bookmark.cache.add(user=me, url="b", created=at(2024, 3, 5)),
        Bookmark.cache.add(user=you, url="c", created=at(2024, 3, 11)),
    ]
    once()  # Django's own adds reach the stream too: nothing changes, nothing counts twice
    assert bookmark_state(users) == bookmark_truth(users)
    steps = [
        ("UPDATE testapp_bookmark SET deleted = true, deleted_at = now() WHERE id = %s", [marks[0].pk]),
        ("UPDATE testapp_bookmark SET deleted = false, deleted_at = NULL WHERE id = %s", [marks[0].pk]),
        ("UPDATE testapp_bookmark SET enabled = false WHERE id = %s", [marks[1].pk]),
        # a timestamp update that moves the row to other day, week buckets
        ("UPDATE testapp_bookmark SET created = %s WHERE id = %s", [at(2024, 3, 11, 9), marks[0].pk]),
        ("UPDATE testapp_bookmark SET user_id = %s, created = %s WHERE id = %s", [me.pk, at(2024, 3, 5), marks[2].pk]),
    ]
    for sql, params in steps:
        outside.run(sql, params)
        once()
        with django_assert_num_queries(0):
            lists = {u.pk: sorted(b.pk for b in Bookmark.cache.get(user=u)) for u in users[:2]}
        got = bookmark_state(users)  # recounts the model-wide counters the change touched
        assert got["lists"] == lists
        assert got == bookmark_truth(users), sql


def test_a_rolled_back_transaction_never_appears(sync, users, outside, django_assert_num_queries):
    me, you = users[:2]
    warm_follows(users)
    with pytest.raises(RuntimeError):
        with outside.transaction():
            outside.run(
                "INSERT INTO testapp_follow (created, follower_id, followee_id) VALUES (now(), %s, %s)",
                [me.pk, you.pk],
            )
            raise RuntimeError("roll back")
    from listy.sync import Follower

    follower = Follower(sync["conf"])
    assert follower.drain().changes == 0
    assert_follows_converged(users, django_assert_num_queries)
    assert list(Follow.cache.get(follower=me)) == []


def test_a_100000_row_transaction(sync, users, outside, django_assert_num_queries):
    """One outside transaction of 100,000 rows spread over every list; then
    one DELETE of a fifth of them."""
    warm_follows(users)
    n = 100_000
    ids = [u.pk for u in users]
    with outside.transaction():
        outside.run(
            "INSERT INTO testapp_follow (created, follower_id, followee_id) "
            "SELECT now() - (i || ' seconds')::interval, (%s::bigint[])[1 + i %% 5], (%s::bigint[])[1 + (i / 5) %% 5] "
            "FROM generate_series(1, %s) AS i",
            [ids, ids, n],
        )
    once()
    assert_follows_converged(users, django_assert_num_queries)
    assert Follow.cache.count() == n
    outside.run("DELETE FROM testapp_follow WHERE followee_id = %s", [users[1].pk])
    once()
    assert_follows_converged(users, django_assert_num_queries)
    assert Follow.cache.count() == n - n // 5


def test_truncate_flushes_the_model(sync, users, outside, django_assert_num_queries):
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    warm_follows(users)
    assert Follow.cache.count() == 1
    outside.run("TRUNCATE testapp_follow")
    once()
    assert list(Follow.cache.get(follower=me)) == []  # rebuilt from the database: a new generation
    assert Follow.cache.count() == 0
    assert Follow.cache.count(follower=me) == 0


def test_django_writes_are_not_counted_twice(sync, users, django_assert_num_queries):
    """Django's writes reach the stream too: their frames again (no visible
    change), their counter moves only from the stream. A QuerySet.update(),
    which no signal reports, is caught by the stream."""
    me, you, other = users[:3]
    warm_follows(users)
    kept = Follow.cache.add(follower=me, followee=you)
    f = Follow(follower=you, followee=me)
    f.save()  # signals
    Follow.objects.filter(pk=kept.pk).update(follower=other)  # no signal
    once()
    assert_follows_converged(users, django_assert_num_queries)
    once()  # nothing left: nothing moves
    assert_follows_converged(users, django_assert_num_queries)


def test_a_second_follower_exits_or_waits(sync, outside):
    """The lock is held by another session (another follower): a second
    one exits with a clear message, or with --wait takes over when it goes."""
    from listy.sync import LOCK_CLASS, Follower

    outside.run("SELECT pg_advisory_lock(%s, hashtext(%s))", [LOCK_CLASS, sync["name"]])
    with pytest.raises(CommandError, match="another listy_sync is following"):
        call_command("listy_sync", "--once", verbosity=0)
    waited: list[bool] = []

    def wait() -> None:
        from django.db import connections

        try:
            waited.append(Follower(sync["conf"]).lock(wait=True, poll=0.05))
        finally:
            connections.close_all()  # this thread's own

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.3)
    assert not waited, "the second follower took the lock while the first held it"
    outside.run("SELECT pg_advisory_unlock(%s, hashtext(%s))", [LOCK_CLASS, sync["name"]])
    t.join(10)
    assert waited == [True]


def test_missing_privilege_names_the_grant(sync):
    from listy.sync import SyncError, setup

    role = f"listy_noperm_{os.getpid()}"
    with connection.cursor() as cur:
        cur.execute(f"DROP ROLE IF EXISTS {role}")
        cur.execute(f"CREATE ROLE {role}")
        cur.execute(f"SET ROLE {role}")
    try:
        with pytest.raises(SyncError, match="ownership of the table"):
            setup(sync["conf"], lambda _: None)
    finally:
        with connection.cursor() as cur:
            cur.execute("RESET ROLE")
            cur.execute(f"DROP ROLE {role}")


def test_listy_stats_shows_lag_and_throughput(sync, users, outside):
    from io import StringIO

    outside.run(
        "INSERT INTO testapp_follow (created, follower_id, followee_id) VALUES (now(), %s, %s)",
        [users[0].pk, users[1].pk],
    )
    out = StringIO()
    call_command("listy_stats", stdout=out)
    before = out.getvalue()
    assert re.search(rf"sync slot {sync['name']} \(pgoutput, inactive\): acknowledged \S+, current \S+, lag \d", before)
    assert "lag 0 B" not in before, before  # the insert is not acknowledged yet
    assert "follower:" not in before
    once()
    out = StringIO()
    call_command("listy_stats", stdout=out)
    after = out.getvalue()
    assert "follower: 1 changes in 1 transactions applied" in after, after


def test_not_set_up_says_what_to_do(users, settings):
    settings.LISTY = {**settings.LISTY, "SYNC": {"SLOT": "listy_never_made", "PUBLICATION": "listy_never_made"}}
    with pytest.raises(CommandError, match="--setup"):
        call_command("listy_sync", "--once", verbosity=0)


def test_system_check_is_quiet_when_wal_level_is_logical(sync):
    from listy.checks import check_sync

    assert check_sync(databases=["default"]) == []


# ---------------------------------------------------------------- a real process
def wait_until(condition: Callable[[], bool], seconds: float = 15.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if condition():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"not converged within {seconds} s")


def start_follower(env: dict[str, str], name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "django", "listy_sync", "--skip-checks", "--slot", name, "--publication", name, "--interval", "0.05"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_follower(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, f"listy_sync exited {proc.returncode}:\n{out}\n{err}"
    return out + err


def test_the_long_running_process_stop_write_restart(sync, users, outside, memcached_server):
    """While listy_sync runs, outside writes show within seconds; stopped
    with SIGTERM, writes wait in the slot; restarted, nothing is lost."""
    if memcached_server is None:
        pytest.skip("a second process needs the shared memcached (LISTY_TEST_STORE=memcached)")
    me, you = users[:2]
    warm_follows(users)
    env = process_env(memcached_server.address)
    proc = start_follower(env, sync["name"])
    try:
        outside.run(
            "INSERT INTO testapp_follow (created, follower_id, followee_id) VALUES (now(), %s, %s)", [me.pk, you.pk]
        )
        wait_until(lambda: len(Follow.cache.get(follower=me)) == 1)
    finally:
        log = stop_follower(proc)
    assert "applied 1 changes" in log
    outside.run(
        "INSERT INTO testapp_follow (created, follower_id, followee_id) VALUES (now(), %s, %s)", [you.pk, me.pk]
    )
    time.sleep(0.3)
    assert list(Follow.cache.get(follower=you)) == [], "nothing follows while stopped"
    proc = start_follower(env, sync["name"])
    try:
        wait_until(lambda: len(Follow.cache.get(follower=you)) == 1)
        assert Follow.cache.count() == Follow.objects.count() == 2
    finally:
        stop_follower(proc)


def test_memcached_frozen_during_sync(sync, users, outside, monkeypatch, django_assert_num_queries):
    """The store stops answering while outside writes come: the follower
    keeps its place and retries; once the store answers, nothing is stale."""
    from listy.sync import Follower

    server = Memcached().start()
    monkeypatch.setenv("LISTY_SERVERS", server.address)
    monkeypatch.setattr("django.conf.settings.LISTY", {**_fast(), "SYNC": {"SLOT": sync["name"], "PUBLICATION": sync["name"]}})
    reset_listy()
    follower = Follower(sync["conf"])

    def follow() -> None:
        from django.db import connections

        try:
            follower.run(interval=0.05)
        finally:
            connections.close_all()  # this thread's own

    thread = threading.Thread(target=follow)
    try:
        me, you = users[:2]
        Follow.cache.add(follower=you, followee=me)
        warm_follows(users)
        os.kill(server.pid, signal.SIGSTOP)
        try:
            thread.start()
            outside.run(
                "INSERT INTO testapp_follow (created, follower_id, followee_id) VALUES (now(), %s, %s)",
                [me.pk, you.pk],
            )
            outside.run("DELETE FROM testapp_follow WHERE follower_id = %s", [you.pk])
            time.sleep(1.0)
            from listy.sync import status

            assert status(sync["conf"])["lag_bytes"] > 0, "the slot kept its place"
        finally:
            os.kill(server.pid, signal.SIGCONT)
        # Django's add, the outside insert and delete
        wait_until(lambda: follower.total_changes >= 3)
        assert_follows_converged(users, django_assert_num_queries)
    finally:
        follower.stop.set()
        if thread.is_alive():
            thread.join(30)
        from django.db import connections

        connections.close_all()
        server.stop()
        reset_listy()


def _fast() -> dict[str, Any]:
    from tests.conftest import FAST_SETTINGS

    return {**FAST_SETTINGS, "COUNTER_EPOCH": None}


@pytest.mark.timeout(600)
def test_stress_with_outside_writers_and_the_sync_process(sync, memcached_server, outside, capsys):
    """The stress test's Django processes (tests/workers.py), a writer
    outside Django (inserts, updates that move rows, deletes) and a running
    listy_sync, all at once: afterwards every list and count equals the
    database."""
    import json
    import random

    from django.contrib.auth.models import User

    from listy import repair
    from tests.test_stress import divergences, worker_env

    if memcached_server is None:
        pytest.skip("processes share lists through memcached only (LISTY_TEST_STORE=memcached)")
    users = [User.objects.create(username=f"stress{i}") for i in range(6)]
    ids = [u.pk for u in users]
    env = worker_env(memcached_server)
    follower = start_follower(process_env(memcached_server.address), sync["name"])
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "workers.py"), "stress", str(seed), "200", ",".join(map(str, ids))],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(3)
    ]
    rng = random.Random(7)
    outside_ops = {"insert": 0, "move": 0, "delete": 0}

    def write_outside(n: int, pause: float) -> None:
        for _ in range(n):
            op = rng.choices(list(outside_ops), [5, 3, 2])[0]
            if op == "insert":
                outside.run(
                    "INSERT INTO testapp_follow (created, follower_id, followee_id) VALUES (now(), %s, %s)",
                    [rng.choice(ids), rng.choice(ids)],
                )
            elif op == "move":
                outside.run(
                    "UPDATE testapp_follow SET follower_id = %s WHERE id = "
                    "(SELECT id FROM testapp_follow ORDER BY random() LIMIT 1)",
                    [rng.choice(ids)],
                )
            else:
                outside.run(
                    "DELETE FROM testapp_follow WHERE id = (SELECT id FROM testapp_follow ORDER BY random() LIMIT 1)"
                )
            outside_ops[op] += 1
            time.sleep(pause)

    try:
        # outside writes all along the workers' run ...
        while any(p.poll() is None for p in procs):
            write_outside(10, 0.01)
        results = []
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, f"worker failed ({p.returncode}):\n{out}\n{err}"
            results.append(json.loads(out.strip().splitlines()[-1]))
        # ... and after it, on lists the workers left cached (read them all)
        divergences(users, set())
        write_outside(100, 0.0)
        time.sleep(1.0)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        stop_follower(follower)
    once()  # whatever the follower had not reached when it stopped: nothing is lost
    assert repair.run_pass("default") == frozenset()
    known = {pk for r in results for pk in r["created"]}
    found, checked = divergences(users, known)
    again, _ = divergences(users, known)
    with capsys.disabled():
        print(
            f"\nstress with listy_sync: 3 processes x 200 ops, outside {outside_ops}; checked {checked}; "
            f"divergences {len(found)} (second look {len(again)})"
        )
    assert not found and not again, "\n".join([*found, "second look:", *again])


def test_every_field_kind_and_inlined_fields_from_outside(sync, users, outside, django_assert_num_queries):
    """The text values of the stream become what a SELECT returns, for
    every kind the codec knows; inlined foreign-key fields are read from
    the related row."""
    import decimal
    import json
    import uuid

    from tests.testapp.models import Comment, Entry, Sample

    me = users[0]
    entry = Entry.objects.create(author=me, title="the entry")
    list(Sample.cache.get(owner=me))
    list(Comment.cache.get(entry=entry))
    outside.run(
        "INSERT INTO testapp_sample (owner_id, flag, ratio, name, blob, at, day, tm, amount, uid, data, count) "
        "VALUES (%s, true, 0.1, 'é ☃', %s, '2024-03-04 23:30:00.25+01', '2024-03-05', '12:34:56.5', 12.5, %s, %s, -7),"
        " (%s, false, -1e300, '', '', now(), NULL, NULL, NULL, NULL, NULL, NULL)",
        [me.pk, b"\x00\xff\\x", uuid.UUID(int=5), json.dumps({"a": [1, None, "x"]}), me.pk],
    )
    outside.run(
        "INSERT INTO testapp_comment (entry_id, user_id, text, created) VALUES (%s, %s, 'hi', now())", [entry.pk, me.pk]
    )
    once()
    fields = [f.attname for f in Sample._meta.concrete_fields]
    with django_assert_num_queries(0):
        cached = [tuple(getattr(s, f) for f in fields) for s in Sample.cache.get(owner=me)]
        comments = [(c.pk, c.text, c.entry.title) for c in Comment.cache.get(entry=entry)]
    db = [tuple(getattr(s, f) for f in fields) for s in Sample.objects.filter(owner=me).order_by("-pk")]
    assert cached == db
    assert cached[1][fields.index("amount")] == decimal.Decimal("12.50")
    assert comments == [(c.pk, "hi", "the entry") for c in Comment.objects.filter(entry=entry)]
