"""A writer killed at any point leaves no list stale for good (issue 16).

A child OS process runs one write of ``Mark`` (``tests/contention_worker.py
kill``) and dies with ``os._exit(0)`` at one point of it: before COMMIT,
after COMMIT before any cache work, after a change's frames before its
settle (for a delete of two rows: between the two rows' frames), while it
builds a list under the lease. Every list was cached before; within the
documented window after the death, every list, count and ``get_one`` equals
the database (``tests/test_contention.py``'s ``divergences``).

The window is ``LISTY["INTENT_WINDOW"]`` when the settings define one
(``listy_settings().intent_window``), else ``LISTY_KILL_WINDOW`` seconds
(default 3). The test polls the lists during the window and fails if they
still differ from the database after it (plus ``SLACK``), printing the
divergences and the time it waited.

Also: a reader compacting a list, SIGKILLed at random moments (the binding
exposes no ``HookPoint::BeforeCompact`` hook: this is the proxy), and the
high-contention stress of ``test_contention.py`` with workers SIGKILLed
mid-operation and restarted.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from typing import Any

import pytest

from listy.store import get_store
from tests.conftest import STORE
from tests.test_contention import (
    DB,
    OPS,
    PROCS,
    SEED,
    collect,
    divergences,
    make_entries,
    spawn,
    summarize,
    worker_env,
)
from tests.testapp.models import Mark

pytestmark = [
    pytest.mark.crossprocess,
    pytest.mark.memcached,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(STORE != "memcached", reason="the embedded store is not shared between processes"),
    # SQLite locks the whole file: the children, this process and its worker
    # collide ('database is locked'); tests/test_dead_writer.py covers a
    # writer killed after COMMIT on SQLite.
    pytest.mark.skipif(DB == "sqlite", reason="SQLite: see tests/test_dead_writer.py"),
]

#: Seconds after the window the test still waits (a reader's pass, a lease).
SLACK = 3.0
#: This process's background worker looks this often, and takes an intent
#: it has seen this long for a dead writer's (the settings under test).
INTERVAL = 0.2
INTENT_WINDOW = 1.0


@pytest.fixture(autouse=True)
def background_worker():  # type: ignore[no-untyped-def]
    """As in production: this process runs its background worker, which
    resolves a dead writer's intents (``listy.intents``)."""
    from django.conf import settings
    from django.test import override_settings

    with override_settings(
        LISTY={**settings.LISTY, "REPAIR_CHECK_INTERVAL": INTERVAL, "INTENT_WINDOW": INTENT_WINDOW}
    ):
        yield
#: The engine's build lease (``Options::lease_ttl``): a builder that died
#: holding it blocks nobody longer than this.
LEASE_TTL = 3.0


def window() -> float:
    """The documented window after which a dead writer's lists are right."""
    from listy.conf import listy_settings

    documented = listy_settings().intent_window
    assert documented is not None
    # seen for the window by this process's worker, which looks every INTERVAL
    return float(documented) + 2 * INTERVAL


def seed_rows(entry: int) -> dict[str, int]:
    """Rows of one entry, committed through Listy: live ones in color 1, a
    soft-deleted one to revive."""
    pks = {}
    for name in ("a", "b", "d"):
        obj = Mark.cache.add(entry_id=entry, name=name, color=1)
        assert obj is not None
        pks[name] = obj.pk
    soft = Mark.cache.add(entry_id=entry, name="c", color=1)
    assert soft is not None and Mark.cache.delete(pk=soft.pk)
    pks["c"] = soft.pk
    return pks


def settle_within(entries: list[int], known: set[int], deadline: float) -> tuple[list[str], float]:
    """Polls every list until it equals the database or ``deadline`` passes;
    returns the last divergences and the seconds waited."""
    started = time.monotonic()
    while True:
        found, _ = divergences(entries, known)
        if not found or time.monotonic() >= deadline:
            return found, time.monotonic() - started
        time.sleep(0.2)


def warm(entries: list[int], known: set[int]) -> dict[str, int]:
    """Caches every list (a list not cached would be read from the database
    and prove nothing) and checks that they are (a process serves from the
    cache once its background worker has looked at the repairs)."""
    deadline = time.monotonic() + 10
    while True:
        found, checked = divergences(entries, known)
        assert not found, found
        if checked["from_cache"] == checked["lists"] or time.monotonic() > deadline:
            break
        time.sleep(INTERVAL)
    assert checked["from_cache"] == checked["lists"], checked
    return checked


def run_child(env: dict[str, str], args: list[str]) -> dict[str, Any]:
    proc = spawn(["kill", *args], env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{out}\n{err}"
    lines = [json.loads(line) for line in out.strip().splitlines() if line.startswith("{")]
    return {k: v for line in lines for k, v in line.items()}


WRITES = ["add", "revive", "move", "soft_delete", "hard_delete"]
CASES = (
    [pytest.param("before_commit", w, id=f"before_commit-{w}") for w in WRITES]
    + [pytest.param("after_commit", w, id=f"after_commit-{w}") for w in [*WRITES, "delete_two"]]
    + [pytest.param("after_frames", w, id=f"after_frames-{w}") for w in WRITES]
    # the first row's frames landed, the second row's never will
    + [pytest.param("after_frames", "delete_two", id="after_frames-delete_two")]
    + [pytest.param("under_lease", "add_meanwhile", id="under_lease-add_meanwhile")]
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("point", "write"), CASES)
def test_a_writer_killed_at_any_point_leaves_no_list_stale(  # type: ignore[no-untyped-def]
    memcached_server, transactional_db, capsys, point, write
):
    entries = [e.pk for e in make_entries()]
    pks = seed_rows(entries[0])
    known = set(pks.values())
    checked = warm(entries, known)
    targets = {
        "revive": [pks["c"]],
        "move": [pks["b"]],
        "soft_delete": [pks["b"]],
        "hard_delete": [pks["b"]],
        "delete_two": [pks["b"], pks["d"]],
    }.get(write, [])
    if point == "under_lease":
        # the list is not cached: the child's read builds it, and dies holding the lease
        get_store().delete_raw(Mark.cache.key(entry_id=entries[0], color=1))
    env = worker_env(memcached_server)
    said = run_child(env, [point, write, str(entries[0]), ",".join(map(str, targets))])
    died_at = time.monotonic()
    if "pk" in said:
        known.add(said["pk"])
    if point == "under_lease":
        # a write to the list whose build lease the dead child holds
        obj = Mark.cache.add(entry_id=entries[0], name="f", color=1)
        assert obj is not None
        known.add(obj.pk)
    limit = max(window(), LEASE_TTL if point == "under_lease" else 0.0)
    found, waited = settle_within(entries, known, died_at + limit + SLACK)
    outcome = "point not reached (the child survived)" if said.get("survived") else "child died"
    summary = (
        f"kill {point}/{write} {DB}+memcached: {outcome}; window {limit:.1f}s;"
        f" {'converged' if not found else 'STILL DIVERGED'} after {waited:.1f}s; checked {checked}"
    )
    with capsys.disabled():
        print("\n" + summary + "".join(f"\n  DIVERGED {line}" for line in found))
    assert not found, "\n".join([summary, *found])


@pytest.mark.timeout(120)
def test_a_writer_that_exits_settles_its_inserts_first(memcached_server, transactional_db, capsys):  # type: ignore[no-untyped-def]
    """An insert whose frames land while the database already holds a later
    state of the row (that change's frames landed first and were evicted)
    lists the row as inserted until the background worker's settle looks at
    it. A process that exits before that look (a graceful restart) settles
    it on its way out, and deletes its done intents: the lists are right at
    once, not only after another process resolves the intents."""
    from django.conf import settings
    from django.test import override_settings

    from listy.models import WriteIntent

    entries = [e.pk for e in make_entries()]
    known = set(seed_rows(entries[0]).values())
    warm(entries, known)
    # this process's worker would take the child's intent for a dead
    # writer's after the window and start the lists afresh: not within this test
    with override_settings(LISTY={**settings.LISTY, "REPAIR_CHECK_INTERVAL": INTERVAL, "INTENT_WINDOW": 600}):
        said = run_child(worker_env(memcached_server), ["exit_after_add_moved", "add", str(entries[0]), ""])
        known.add(said["pk"])
        found, _ = divergences(entries, known)
    assert Mark._base_manager.get(pk=said["pk"]).color == 2
    assert not found, found
    assert not WriteIntent.objects.exists()


@pytest.mark.timeout(180)
@pytest.mark.skipif(DB == "sqlite", reason="SQLite locks the whole database file: this process's writes and the readers' collide")
def test_a_reader_killed_while_compacting_leaves_the_list_right(  # type: ignore[no-untyped-def]
    memcached_server, transactional_db, capsys
):
    """Proxy for a death at ``HookPoint::BeforeCompact`` (the binding
    exposes no hook): ten times, this process gives the cached ``(entry,
    color 1)`` list 24 dead frames (rows added and soft-deleted through
    Listy), and a reader whose first read compacts it is SIGKILLed 0-2 ms
    into that read. Then every list equals the database."""
    entries = [e.pk for e in make_entries()]
    pks = seed_rows(entries[0])
    warm(entries, set(pks.values()))
    env = worker_env(memcached_server)
    rng = random.Random(SEED)
    engine = Mark.cache._engine()

    def frames() -> int:
        return len(engine.inspect(["entry_id", "color"], [entries[0], 1])["frames"])

    compacted = 0
    for i in range(10):
        for j in range(12):
            obj = Mark.cache.add(entry_id=entries[0], name=f"x{i}-{j}", color=1)
            assert obj is not None and Mark.cache.delete(pk=obj.pk)
        before = frames()
        proc = spawn(["compact", str(entries[0])], env, stdin=True)
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline(), proc.stderr.read() if proc.stderr else ""
        proc.stdin.write("go\n")
        proc.stdin.flush()
        time.sleep(rng.uniform(0, 0.002))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        compacted += frames() < before
    known = set(Mark._base_manager.values_list("pk", flat=True))
    found, waited = settle_within(entries, known, time.monotonic() + window() + SLACK)
    summary = (
        f"kill compaction {DB}+memcached: 10 readers SIGKILLed while compacting ({compacted} compacted first); "
        f"{'converged' if not found else 'STILL DIVERGED'} after {waited:.1f}s"
    )
    with capsys.disabled():
        print("\n" + summary + "".join(f"\n  DIVERGED {line}" for line in found))
    assert not found, "\n".join([summary, *found])


@pytest.mark.timeout(900)
@pytest.mark.skipif(DB == "sqlite", reason="SQLite locks the whole database file: concurrent writers fail")
@pytest.mark.skipif(
    DB == "mariadb" and os.environ.get("LISTY_STRESS") != "1",
    reason="MariaDB: runs with `make stress` (see tests/test_contention.py)",
)
def test_contended_rows_with_writers_sigkilled_and_restarted_end_right(  # type: ignore[no-untyped-def]
    memcached_server, transactional_db, capsys
):
    """``test_contention``'s stress, while a killer SIGKILLs a random worker
    every 0.3-1.0 s and starts another in its place (``LISTY_KILLS`` kills,
    default 8); within the window after the last worker ends, every list
    equals the database."""
    kills = int(os.environ.get("LISTY_KILLS", "8"))
    entries = [e.pk for e in make_entries()]
    warm(entries, set())
    ids = ",".join(map(str, entries))
    env = worker_env(memcached_server)
    rng = random.Random(SEED)
    seed = SEED
    running = []
    for _ in range(PROCS):
        running.append(spawn(["stress", str(seed), str(OPS), ids], env))
        seed += 1
    finished = []
    killed = 0
    started = time.monotonic()
    while killed < kills:
        time.sleep(rng.uniform(0.3, 1.0))
        alive = [p for p in running if p.poll() is None]
        if not alive:
            break
        victim = rng.choice(alive)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
        running.remove(victim)
        killed += 1
        running.append(spawn(["stress", str(seed), str(OPS), ids], env))
        seed += 1
    finished = collect(running)
    ended = time.monotonic()
    kinds, known, errors = summarize(finished)
    known |= set(Mark._base_manager.values_list("pk", flat=True))
    listy_errors = {k: n for k, n in kinds.items() if k.startswith("listy:")}
    diverged: dict[str, int] = {}
    found, waited = settle_within(entries, known, ended + window() + SLACK)
    divergences(entries, known, diverged)
    summary = (
        f"kill stress {DB}+memcached: {PROCS} processes, {killed} SIGKILLed and restarted, in"
        f" {ended - started:.1f}s; surviving workers did {kinds}; window {window():.1f}s;"
        f" {'converged' if not found else 'STILL DIVERGED'} after {waited:.1f}s;"
        f" divergences {len(found)} by kind {diverged}; errors Django would not raise {listy_errors}"
    )
    with capsys.disabled():
        print("\n" + summary + "".join(f"\n  DIVERGED {line}" for line in found))
    assert not found, "\n".join([summary, *found])
    assert not listy_errors, "\n".join([summary, *errors])
