"""Concurrent OS processes against one database and one memcached: after
random adds, deletes, reads and flushes, mixed with every batched ORM write
path (``update()`` moving rows, ``bulk_create()`` with conflicts,
``bulk_update()``, queryset deletes), a raw SQL write and many-to-many
adds and removes (issue 11), every list and counter equals the database
(SPEC §3.1 convergence, §3.3 no stale set, §3.5 eviction).

4 processes x 300 operations on 6 users (``LISTY_STRESS_PROCS`` /
``LISTY_STRESS_OPS`` change it, ``LISTY_STRESS_SEED`` the first worker's
random seed). PostgreSQL and MariaDB with memcached only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from django.contrib.auth.models import User

from listy import repair
from listy.models import PendingRepair
from tests.conftest import ROOT, STORE, process_env
from tests.testapp.models import Follow, Friend, Team, TeamMembers

DB = os.environ.get("LISTY_TEST_DB", "sqlite")

pytestmark = [
    pytest.mark.crossprocess,
    pytest.mark.memcached,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(STORE != "memcached", reason="the embedded store is not shared between processes"),
    pytest.mark.skipif(
        DB == "sqlite",
        reason="SQLite locks the whole database file: concurrent writers fail with 'database is locked'",
    ),
]

PROCS = int(os.environ.get("LISTY_STRESS_PROCS", "4"))
OPS = int(os.environ.get("LISTY_STRESS_OPS", "300"))
SEED = int(os.environ.get("LISTY_STRESS_SEED", "0"))
N_USERS = 6
N_TEAMS = 3
#: Marks a divergence of the model-wide counter (see the end of the test).
COUNTER = "model-wide counter: "


def worker_env(memcached_server) -> dict[str, str]:  # type: ignore[no-untyped-def]
    # as in production: each worker also looks at the PendingRepair table
    return process_env(memcached_server.address, repair_interval=0.5)


def divergences(users: list[User], known_pks: set[int], model=Follow) -> tuple[list[str], dict[str, int]]:  # type: ignore[no-untyped-def]
    """Every list and counter of ``model`` compared with the database's live rows."""
    out: list[str] = []
    checked = {"lists": 0, "from_cache": 0, "get_one": 0, "counts": 0}
    rows = {f.pk: f for f in model._base_manager.filter(**model.cache.source.live_filter())}

    def compare(what: str, got, want: list) -> None:  # type: ignore[no-untyped-def]
        checked["lists"] += 1
        checked["from_cache"] += bool(got.from_cache)
        mine = {f.pk: (f.follower_id, f.followee_id, f.created) for f in got}
        theirs = {f.pk: (f.follower_id, f.followee_id, f.created) for f in want}
        if len(got) != len(want) or mine != theirs:
            out.append(
                f"{what}: cache {sorted(mine)} (len {len(got)}, from_cache={got.from_cache}) != db {sorted(theirs)}"
            )

    for u in users:
        want = [f for f in rows.values() if f.follower_id == u.pk]
        compare(f"get(follower={u.pk})", model.cache.get(follower=u), want)
        for v in users:
            want_pair = [f for f in want if f.followee_id == v.pk]
            compare(f"get(follower={u.pk}, followee={v.pk})", model.cache.get(follower=u, followee=v), want_pair)
        n = model.cache.count(follower=u)
        checked["counts"] += 1
        if n != len(want):
            out.append(f"count(follower={u.pk}) = {n} != db {len(want)}")
    n = model.cache.count()
    checked["counts"] += 1
    if n != len(rows):
        out.append(f"{COUNTER}count() = {n} != db {len(rows)}")
    # every primary key the run may have used (raw SQL and upserts insert
    # rows no worker knows of)
    pks = known_pks | set(rows)
    for pk in range(min(pks, default=1), max(pks, default=0) + 1):
        got = model.cache.get_one(pk)
        checked["get_one"] += 1
        want_one = rows.get(pk)
        if (got is None) != (want_one is None) or (
            got is not None and (got.follower_id, got.followee_id) != (want_one.follower_id, want_one.followee_id)
        ):
            out.append(f"get_one({pk}) = {got!r} != db {want_one!r}")
    for report in model.cache.determine_coherency(check_against_db=True):
        if report.cached and report.coherent is False:
            out.append(f"determine_coherency: {report.key} is not coherent")
    return out, checked


def member_divergences(users: list[User], teams: list[Team], checked: dict[str, int]) -> list[str]:
    """Every list and counter of the many-to-many through table (indexes
    ``team`` and ``user``; it has no ``pk`` one) compared with the database."""
    out: list[str] = []
    rows = list(TeamMembers._base_manager.all())
    for field, owners in (("team", teams), ("user", users)):
        for owner in owners:
            want = sorted((m.pk, m.team_id, m.user_id) for m in rows if getattr(m, f"{field}_id") == owner.pk)
            got = TeamMembers.cache.get(**{field: owner})
            checked["lists"] += 1
            checked["from_cache"] += bool(got.from_cache)
            mine = sorted((m.pk, m.team_id, m.user_id) for m in got)
            if mine != want:
                out.append(f"TeamMembers.get({field}={owner.pk}): cache {mine} (from_cache={got.from_cache}) != db {want}")
            n = TeamMembers.cache.count(**{field: owner})
            checked["counts"] += 1
            if n != len(want):
                out.append(f"TeamMembers.count({field}={owner.pk}) = {n} != db {len(want)}")
    n = TeamMembers.cache.count()
    checked["counts"] += 1
    if n != len(rows):
        out.append(f"{COUNTER}TeamMembers.count() = {n} != db {len(rows)}")
    return out


@pytest.mark.timeout(600)  # ~6 s at the default size; LISTY_STRESS_PROCS/OPS scale it up
@pytest.mark.parametrize("model", [Follow, Friend], ids=["Follow", "Friend"])
def test_concurrent_processes_leave_every_list_equal_to_the_database(  # type: ignore[no-untyped-def]
    memcached_server, transactional_db, capsys, model
):
    """Follow: lists of many rows, hard deletes. Friend: unique (follower,
    followee) pairs, whose lists hold one row, and soft deletes revived by add."""
    users = [User.objects.create(username=f"stress{i}") for i in range(N_USERS)]
    teams = [Team.objects.create(name=f"team{i}") for i in range(N_TEAMS)]
    ids = ",".join(str(u.pk) for u in users)
    team_ids = ",".join(str(t.pk) for t in teams)
    env = worker_env(memcached_server)
    env["LISTY_STRESS_MODEL"] = model.__name__
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "workers.py"), "stress", str(seed), str(OPS), ids, team_ids],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(SEED, SEED + PROCS)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, f"worker failed ({p.returncode}):\n{out}\n{err}"
        results.append(json.loads(out.strip().splitlines()[-1]))
    elapsed = time.monotonic() - started
    ops = sum(r["ops"] for r in results)
    kinds: dict[str, int] = {}
    for r in results:
        for k, n in r["done"].items():
            kinds[k] = kinds.get(k, 0) + n
    known = {pk for r in results for pk in r["created"]}
    errors = [e for r in results for e in r["errors"]]
    # Only an explicit cache call may raise for the cache (flush_all with the
    # server timing out under load); every read and write must not.
    unexpected = {k: n for k, n in kinds.items() if k.startswith("error:") and not k.startswith("error:flush")}

    # This process saw no fault of its own and runs with no periodic look:
    # repair what failed writes of the workers queued, as any process would
    # within REPAIR_CHECK_INTERVAL.
    queued = PendingRepair.objects.count()
    assert repair.run_pass("default") == frozenset()
    found, checked = divergences(users, known, model)
    found += member_divergences(users, teams, checked)
    # and once more: the first pass may have rebuilt lists; now all are hits
    again, checked_again = divergences(users, known, model)
    again += member_divergences(users, teams, checked_again)
    summary = (
        f"stress {model.__name__} {DB}+memcached: {PROCS} processes, {ops} operations in {elapsed:.1f}s {kinds}; "
        f"keys queued for repair {queued}; checked {checked}; "
        f"divergences {len(found)} (second look {len(again)})"
    )
    with capsys.disabled():
        print("\n" + summary)
    assert not unexpected, "\n".join([summary, *errors])
    assert ops == PROCS * OPS
    lists = [d for d in found + again if not d.startswith(COUNTER)]
    assert not lists, "\n".join([summary, *found, "second look:", *again])
    if found or again:
        # Known gap, with a deterministic repro (tests/test_repair.py::
        # test_a_model_wide_counter_built_while_a_write_is_in_flight_counts_it_once):
        # the model-wide counter, which has no list to be counted from, built
        # while a committed write's incr/decr is in flight, counts that row
        # twice. Every list and every list's count above was right.
        pytest.xfail("model-wide counter race (known gap): " + "; ".join(found))


@pytest.mark.parametrize("how", ["listy", "orm"])
def test_two_processes_deleting_one_row_count_it_once(users, memcached_server, how):
    """A delete waits for a concurrent delete of the same row (row lock),
    then finds nothing left to delete: the counters go down once, not twice."""
    from django.db import transaction

    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.add(follower=me, followee=him)
    assert Follow.cache.count(follower=me) == 2 and Follow.cache.count() == 2
    with transaction.atomic():
        assert Follow.cache.delete(follower=me, followee=you) is True
        # the other process finds the row still there (not committed), and
        # its DELETE waits for our lock
        other = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "workers.py"), "delete", str(me.pk), str(you.pk), how],
            env=worker_env(memcached_server),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert other.stdout is not None
        started = other.stdout.readline()  # Django is set up, the delete begins
        assert started, other.stderr.read() if other.stderr else ""
        time.sleep(0.5)  # its row lock is waiting on ours
    out, err = other.communicate(timeout=60)
    assert other.returncode == 0, err
    out = out.strip().splitlines()[-1]
    assert Follow.objects.filter(follower=me).count() == 1
    assert Follow.cache.count(follower=me) == 1, f"the other process said {out}"
    assert out in ('{"deleted": false}', '{"deleted": 0}')
    assert Follow.cache.count() == 1
    assert [f.followee_id for f in Follow.cache.get(follower=me)] == [him.pk]


@pytest.mark.parametrize("how", ["m2m", "upsert"])
def test_two_processes_inserting_one_row_count_it_once(users, memcached_server, how):
    """An insert that waits for a concurrent insert of the same unique row
    (a many-to-many ``add()``, whose INSERT ignores conflicts; an upsert),
    then finds it there: the model-wide counter goes up once, not twice."""
    from django.db import connection, transaction

    if how == "upsert" and not connection.features.supports_update_conflicts_with_target:
        pytest.skip("an upsert without unique fields repairs the lists wholesale")
    me, you = users[:2]
    team = Team.objects.create(name="t")
    model = TeamMembers if how == "m2m" else Friend
    assert model.cache.count() == 0  # the model-wide counter, cached
    with transaction.atomic():
        if how == "m2m":
            team.members.add(you)
            a = team.pk
        else:
            Friend.objects.bulk_create([Friend(follower=me, followee=you)], update_conflicts=True,
                                       unique_fields=["follower", "followee"], update_fields=["hidden"])
            a = me.pk
        # the other process finds no such row (not committed): its INSERT
        # waits for ours, then meets it
        other = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "workers.py"), "add_member", str(a), str(you.pk), how],
            env=worker_env(memcached_server),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert other.stdout is not None
        started = other.stdout.readline()
        assert started, other.stderr.read() if other.stderr else ""
        time.sleep(0.5)  # its INSERT is waiting on our row
    out, err = other.communicate(timeout=60)
    assert other.returncode == 0, err
    assert model._base_manager.count() == 1
    assert model.cache.count() == 1


def test_an_insert_left_to_the_background_settle_is_settled_when_the_process_ends(users, memcached_server):
    """An insert whose settle waits for the background worker's next look
    (``listy.worker.verify_later``) is settled when its process ends before
    that look: its row, deleted meanwhile by a path that left no tombstone
    where the insert's frames landed, is not left listed."""
    me, you = users[:2]
    assert len(Follow.cache.get(follower=me)) == 0  # cached, empty
    env = process_env(memcached_server.address, repair_interval=60)  # no look before the exit
    other = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "workers.py"), "insert_then_exit", str(me.pk), str(you.pk)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert other.returncode == 0, other.stderr
    pk = json.loads(other.stdout.strip().splitlines()[-1])["pk"]
    assert not Follow.objects.filter(pk=pk).exists()
    got = Follow.cache.get(follower=me)
    assert got.from_cache
    assert [f.pk for f in got] == []
    assert Follow.cache.get_one(pk) is None
