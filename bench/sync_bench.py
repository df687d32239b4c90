"""``listy_sync`` figures (SPEC §5): how long an outside write takes to show
in the lists at ~1,000 outside writes/s (p50/p99), and how many row changes
per second the follower applies when a backlog waits.

Run from the repository root with Listy built into ``.venv`` (``make build``):

    .venv/bin/python bench/sync_bench.py [--rate 1000] [--seconds 10] [--rows 100000]

It uses the running PostgreSQL (127.0.0.1:5432, user postgres, ``wal_level
= logical``), a database ``listy_sync_bench`` (created and migrated with the
test-suite's models), a memcached of its own, and a slot and publication it
drops at the end. Outside writes come from a plain psycopg connection; the
follower is ``manage.py listy_sync`` in its own process.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DB_NAME = "listy_sync_bench"
SLOT = f"listy_bench_{os.getpid()}"


def env_for(memcached: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LISTY_TEST_DB="postgres",
        LISTY_TEST_DB_NAME=DB_NAME,
        LISTY_SERVERS=memcached,
        DJANGO_SETTINGS_MODULE="tests.settings",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "python"), env.get("PYTHONPATH", "")]),
    )
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1000.0, help="outside writes per second")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long the latency run writes")
    ap.add_argument("--rows", type=int, default=100_000, help="row changes in the throughput backlog")
    ap.add_argument("--lists", type=int, default=200, help="follower lists written to")
    args = ap.parse_args()

    import psycopg

    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as c:
        if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone():
            c.execute(f"CREATE DATABASE {DB_NAME}")
        level = c.execute("SHOW wal_level").fetchone()[0]
        if level != "logical":
            raise SystemExit(f"wal_level is {level!r}: listy_sync needs 'logical'")

    sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "python")]
    from tests.conftest import Memcached

    server = Memcached().start()
    os.environ.update(env_for(server.address))
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from listy import sync
    from listy.conf import SyncSettings
    from tests.testapp.models import Follow

    call_command("migrate", verbosity=0)
    Follow.objects.all().delete()
    users = list(User.objects.filter(username__startswith="bench"))
    if len(users) < args.lists:
        User.objects.bulk_create(
            [User(username=f"bench{i}") for i in range(len(users), args.lists)], ignore_conflicts=True
        )
        users = list(User.objects.filter(username__startswith="bench"))
    conf = SyncSettings("default", SLOT, SLOT)
    sync.setup(conf, lambda _: None)
    follower = None
    try:
        follower = start(server.address)
        latency(args, users, Follow)
        stop(follower)
        follower = None
        throughput(args, users, conf)
    finally:
        if follower is not None:
            stop(follower)
        sync.drop(conf, lambda _: None)
        server.stop()


def start(memcached: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "django", "listy_sync", "--skip-checks", "--slot", SLOT, "--publication", SLOT,
         "--interval", "0.05"],
        env=env_for(memcached),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise SystemExit(f"listy_sync exited {proc.returncode}: {err}")


def outside():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(host="127.0.0.1", user="postgres", dbname=DB_NAME, autocommit=True)


def latency(args: argparse.Namespace, users: list, Follow: type) -> None:  # type: ignore[type-arg]
    """Paced single-row INSERTs (each its own transaction); an observer
    reads each written row's list from the cache until the row is there."""
    for u in users:  # cached before the run: the follower applies in place
        list(Follow.cache.get(follower=u))
    written: list[tuple[int, int, float]] = []  # (pk, follower, commit time), in commit order
    lock = threading.Lock()
    done = threading.Event()
    writers = 4  # connections: one alone falls short of 1,000 round trips/s on a busy machine

    def write(k: int) -> None:
        with outside() as conn:
            n = int(args.rate * args.seconds / writers)
            rate = args.rate / writers
            start = time.monotonic()
            for i in range(n):
                due = start + i / rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                j = i * writers + k
                f, g = users[j % len(users)].pk, users[(j * 7 + 1) % len(users)].pk
                pk = conn.execute(
                    "INSERT INTO testapp_follow (created, follower_id, followee_id) VALUES (now(), %s, %s) RETURNING id",
                    [f, g],
                ).fetchone()[0]
                with lock:
                    written.append((pk, f, time.monotonic()))

    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]

    def run_all() -> None:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()

    writer = threading.Thread(target=run_all)
    t0 = time.monotonic()
    writer.start()
    delays: list[float] = []
    seen = 0
    while not (done.is_set() and seen == len(written)):
        if seen == len(written):
            time.sleep(0.001)
            continue
        pk, f, committed = written[seen]
        records = Follow.cache.get(follower_id=f)
        if any(r.pk == pk for r in records[:64]):
            delays.append(time.monotonic() - committed)
            seen += 1
        else:
            time.sleep(0.002)
        if time.monotonic() - committed > 30:
            raise SystemExit(f"row {pk} not visible after 30 s")
    writer.join()
    elapsed = time.monotonic() - t0
    delays.sort()
    p = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))]  # noqa: E731
    print(
        f"visibility: {len(delays)} outside writes at {len(delays) / elapsed:.0f}/s achieved "
        f"(asked {args.rate:.0f}/s): p50 {p(0.5) * 1000:.0f} ms, p99 {p(0.99) * 1000:.0f} ms, "
        f"max {delays[-1] * 1000:.0f} ms, mean {statistics.mean(delays) * 1000:.0f} ms"
    )


def throughput(args: argparse.Namespace, users: list, conf) -> None:  # type: ignore[no-untyped-def]
    """A backlog written while no follower runs, then drained by one:
    ``rows`` inserts in one transaction, ``rows`` updates in one, and
    ``rows // 10`` single-row transactions."""
    from listy.sync import Follower

    ids = [u.pk for u in users]
    cases = [
        (
            "insert, one transaction",
            "INSERT INTO testapp_follow (created, follower_id, followee_id) "
            "SELECT now(), (%s::bigint[])[1 + i %% cardinality(%s::bigint[])], (%s::bigint[])[1] "
            "FROM generate_series(1, %s) AS i",
            [ids, ids, ids, args.rows],
            args.rows,
        ),
        ("update (moves between lists), one transaction",
         "UPDATE testapp_follow SET follower_id = (%s::bigint[])[1 + id %% cardinality(%s::bigint[])] "
         "WHERE id IN (SELECT id FROM testapp_follow ORDER BY id DESC LIMIT %s)", [ids, ids, args.rows], args.rows),
    ]
    with outside() as conn:
        for name, sql, params, rows in cases:
            conn.execute(sql, params)
            drain(name, rows, conf, Follower)
        n = args.rows // 10
        with conn.pipeline():
            for i in range(n):
                conn.execute(
                    "INSERT INTO testapp_follow (created, follower_id, followee_id) VALUES (now(), %s, %s)",
                    [ids[i % len(ids)], ids[0]],
                )
        drain(f"insert, {n} single-row transactions", n, conf, Follower)


def drain(name: str, rows: int, conf, Follower) -> None:  # type: ignore[no-untyped-def]
    follower = Follower(conf)
    t = time.monotonic()
    follower.run(once=True)
    elapsed = time.monotonic() - t
    assert follower.total_changes == rows, (follower.total_changes, rows)
    print(f"throughput, {name}: {rows} changes in {elapsed:.2f} s = {rows / elapsed:,.0f} changes/s")


if __name__ == "__main__":
    main()
