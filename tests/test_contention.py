"""High contention (issue 16): several OS processes write the same few rows
of ``Mark`` at once through every ordinary call (add and its revival, soft
deletes, moves between lists, flag flips through ``save()``,
``instance.delete()``, a stale instance's ``save()`` that re-creates a
deleted row under its old primary key), with and without evictions.
Afterwards every list of every index, every count and every ``get_one(pk)``
equals the database (SPEC §3.1), and no call raised an error that plain
Django would not have raised.

Key space: 3 entries x 4 names x 3 colors. ``LISTY_CONTENTION_PROCS``
processes (default 6) x ``LISTY_CONTENTION_OPS`` operations (default 120;
the issue's figure is 600), ``LISTY_CONTENTION_SEED`` the first worker's
seed, ``LISTY_CONTENTION_MIX=add,cache_delete,move,...`` keeps only some
kinds of write (to narrow a divergence down). PostgreSQL and MariaDB with memcached only. On a divergence the test
prints a report: which list, which primary keys are extra or missing, the
row's final state in the database, and the cached record if it differs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import pytest
from django.contrib.auth.models import User

from listy import repair
from listy.models import PendingRepair
from tests.conftest import ROOT, STORE, process_env
from tests.testapp.models import Entry, Mark

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
    # In `make test` on PostgreSQL (about 15 s); `make stress` (LISTY_STRESS=1)
    # runs it STRESS_RUNS times on PostgreSQL and MariaDB. On MariaDB it
    # found two divergences this stop (both fixed, with single-process
    # tests); it joins the suite there once it has gone 20 runs clean.
    pytest.mark.skipif(
        DB == "mariadb" and os.environ.get("LISTY_STRESS") != "1",
        reason="MariaDB: runs with `make stress` (see the comment)",
    ),
]

PROCS = int(os.environ.get("LISTY_CONTENTION_PROCS", "6"))
OPS = int(os.environ.get("LISTY_CONTENTION_OPS", "120"))
SEED = int(os.environ.get("LISTY_CONTENTION_SEED", "0"))
NAMES = ["a", "b", "c", "d"]
COLORS = [1, 2, 3]
WORKER = ROOT / "tests" / "contention_worker.py"


def worker_env(memcached_server) -> dict[str, str]:  # type: ignore[no-untyped-def]
    # as in production: each worker also looks at the PendingRepair table
    return process_env(memcached_server.address, repair_interval=0.5)


def make_entries() -> list[Entry]:
    author = User.objects.create(username="contention")
    return [Entry.objects.create(author=author, title=f"entry {i}") for i in range(3)]


def _record(m: Mark) -> tuple[Any, ...]:
    return (m.pk, m.entry_id, m.name, m.color, m.created)


def _db_state(pk: int) -> str:
    row = Mark._base_manager.filter(pk=pk).values("entry_id", "name", "color", "deleted", "enabled").first()
    if row is None:
        return f"#{pk}: absent"
    return (
        f"#{pk}: entry={row['entry_id']} name={row['name']} color={row['color']}"
        f" deleted={row['deleted']} enabled={row['enabled']}"
    )


def _kind_of_extra(pk: int) -> str:
    """Why a list holds a row it should not: the row is gone, unlisted
    (soft-deleted or disabled), or listed elsewhere (a move)."""
    row = Mark._base_manager.filter(pk=pk).values("deleted", "enabled").first()
    if row is None:
        return "extra:gone"
    return "extra:unlisted" if row["deleted"] or not row["enabled"] else "extra:moved-away"


def divergences(
    entries: Sequence[int], known_pks: set[int], kinds: dict[str, int] | None = None
) -> tuple[list[str], dict[str, int]]:
    """Every list, count and ``get_one`` of ``Mark`` compared with the
    database's live rows; one line per divergence (``kinds`` tallies them)."""
    out: list[str] = []
    checked = {"lists": 0, "from_cache": 0, "counts": 0, "get_one": 0}
    live = {m.pk: m for m in Mark._base_manager.filter(deleted=False, enabled=True)}
    tally: dict[str, int] = {} if kinds is None else kinds

    def note(kind: str) -> None:
        tally[kind] = tally.get(kind, 0) + 1

    def compare(what: str, got: Sequence[Mark], want: list[Mark], count: int) -> None:
        checked["lists"] += 1
        checked["counts"] += 1
        from_cache = bool(getattr(got, "from_cache", False))
        checked["from_cache"] += from_cache
        mine = {m.pk: _record(m) for m in got}
        theirs = {m.pk: _record(m) for m in want}
        problems = []
        extra = sorted(set(mine) - set(theirs))
        missing = sorted(set(theirs) - set(mine))
        pk_list = what.startswith("get(pk=")
        for pk in extra:
            note(_kind_of_extra(pk) + (" (pk list)" if pk_list else ""))
        for _ in missing:
            note("missing:live" + (" (pk list)" if pk_list else ""))
        if extra:
            cached = "; ".join(f"#{pk} cached as {mine[pk][1:4]}" for pk in extra)
            problems.append(f"extra {extra} [db {'; '.join(_db_state(pk) for pk in extra)}] [{cached}]")
        if missing:
            problems.append(f"missing {missing} [db {'; '.join(_db_state(pk) for pk in missing)}]")
        for pk in sorted(set(mine) & set(theirs)):
            if mine[pk] != theirs[pk]:
                note("stale record")
                problems.append(f"stale record #{pk}: cache {mine[pk][1:4]} != db {theirs[pk][1:4]}")
        if len(got) != len(mine):
            note("duplicate records")
            problems.append(f"{len(got)} records for {len(mine)} primary keys")
        if count != len(want):
            note("count")
            problems.append(f"count() = {count} != db {len(want)}")
        if problems:
            out.append(f"{what} (from_cache={from_cache}): " + "; ".join(problems))

    for e in entries:
        for c in COLORS:
            want = [m for m in live.values() if m.entry_id == e and m.color == c]
            got = Mark.cache.get(entry_id=e, color=c)
            compare(f"get(entry={e}, color={c})", got, want, Mark.cache.count(entry_id=e, color=c))
    for n in NAMES:
        for c in COLORS:
            want = [m for m in live.values() if m.name == n and m.color == c]
            got = Mark.cache.get(name=n, color=c)
            compare(f"get(name={n!r}, color={c})", got, want, Mark.cache.count(name=n, color=c))
    top = max(known_pks | set(live) | {0})
    for pk in range(1, top + 1):
        want = [live[pk]] if pk in live else []
        compare(f"get(pk={pk})", Mark.cache.get(pk=pk), want, Mark.cache.count(pk=pk))
        one = Mark.cache.get_one(pk)
        checked["get_one"] += 1
        if (one is None) != (pk not in live) or (one is not None and _record(one) != _record(live[pk])):
            note("get_one")
            out.append(f"get_one({pk}) = {None if one is None else _record(one)[1:4]} != db [{_db_state(pk)}]")
    n = Mark.cache.count()
    checked["counts"] += 1
    if n != len(live):
        note("model-wide count")
        out.append(f"model-wide count() = {n} != db {len(live)}")
    return out, checked


def spawn(args: list[str], env: dict[str, str], stdin: bool = False) -> subprocess.Popen[str]:
    """A worker of ``tests/contention_worker.py`` (``stdin``: a pipe to it)."""
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        env=env,
        cwd=ROOT,
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def collect(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, f"worker failed ({p.returncode}):\n{out}\n{err}"
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def summarize(results: list[dict[str, Any]]) -> tuple[dict[str, int], set[int], list[str]]:
    kinds: dict[str, int] = {}
    for r in results:
        for k, n in r["done"].items():
            kinds[k] = kinds.get(k, 0) + n
    known = {pk for r in results for pk in r["seen"]}
    errors = [e for r in results for e in r["errors"]]
    return kinds, known, errors


def check_after_quiescence(
    entries: list[int], known: set[int], kinds: dict[str, int]
) -> tuple[list[str], list[str], dict[str, int], int]:
    """What failed cache writes queued is repaired, as any process would
    within REPAIR_CHECK_INTERVAL; then every list is compared twice (the
    first look may build lists; the second one reads them all cached)."""
    queued = PendingRepair.objects.count()
    assert repair.run_pass("default") == frozenset()
    found, checked = divergences(entries, known, kinds)
    again, _ = divergences(entries, known)
    return found, again, checked, queued


@pytest.mark.timeout(900)
@pytest.mark.parametrize("evictions", [False, True], ids=["no-evictions", "evictions"])
def test_contended_rows_end_with_every_list_equal_to_the_database(  # type: ignore[no-untyped-def]
    memcached_server, transactional_db, capsys, evictions
):
    entries = [e.pk for e in make_entries()]
    ids = ",".join(map(str, entries))
    env = worker_env(memcached_server)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        stop = os.path.join(tmp, "stop")
        evictor = spawn(["evict", stop, ids], env) if evictions else None
        procs = [spawn(["stress", str(seed), str(OPS), ids], env) for seed in range(SEED, SEED + PROCS)]
        results = collect(procs)
        if evictor is not None:
            open(stop, "w").close()
            evicted = collect([evictor])[0]["deleted"]
    elapsed = time.monotonic() - started
    kinds, known, errors = summarize(results)
    listy_errors = {k: n for k, n in kinds.items() if k.startswith("listy:")}
    diverged: dict[str, int] = {}
    found, again, checked, queued = check_after_quiescence(entries, known, diverged)
    summary = (
        f"contention {DB}+memcached{' with evictions' if evictions else ''}: {PROCS} processes x {OPS} operations"
        f"{' mix ' + os.environ['LISTY_CONTENTION_MIX'] if os.environ.get('LISTY_CONTENTION_MIX') else ''}"
        f" in {elapsed:.1f}s; seeds {SEED}..{SEED + PROCS - 1}; {kinds}"
        f"{f'; {evicted} keys evicted' if evictions else ''}; keys queued for repair {queued}; checked {checked};"
        f" divergences {len(found)} (second look {len(again)}) by kind {diverged};"
        f" errors Django would not raise {sum(listy_errors.values())} {listy_errors}"
    )
    with capsys.disabled():
        print("\n" + summary)
        for line in found:
            print("  DIVERGED " + line)
        for e in errors:
            print("  ERROR " + e.strip().replace("\n", "\n    "))
    assert sum(r["ops"] for r in results) == PROCS * OPS
    assert not found and not again, "\n".join([summary, *found, "second look:", *again])
    assert not listy_errors, "\n".join([summary, *errors])
