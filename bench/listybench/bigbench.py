"""The 1,000,000-item list (SPEC §5): first page, deep slice, ``len()``,
``count()``, a keyset page, full read, cold build and peak RSS of iterating
it, with the raw socket round trip of a small value measured in the same run.

The list is built once per run: one follower with a million follows (and a
million followees, the follow graph's unique pair), inserted by
``generate_series`` in PostgreSQL; kept between runs when it is already
there. Run inside the benchmark (``listybench.main``) or alone:
``cd bench && BENCH_MEMCACHED=host:port python -m listybench.bigbench``.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

BIG = 1_000_000
SMALL = 10
BIG_USER, SMALL_USER = "lb-big-1m", "lb-big-10"


def _ensure_follows(username: str, n: int, first_followee: int) -> int:
    """The id of a follower with exactly ``n`` follows (inserted in SQL)."""
    from django.contrib.auth.models import User
    from django.db import connection, transaction

    import listy
    from benchproj.follows.models import Follow

    user, _ = User.objects.get_or_create(username=username)
    if Follow.objects.filter(follower=user).count() == n:
        return int(user.pk)
    # Listy does not follow these statements (the benchmark flushes the
    # model's lists before it measures): no repair of the model's lists.
    with transaction.atomic(), listy.bypass(Follow), connection.cursor() as cur:
        cur.execute("DELETE FROM follows_follow WHERE follower_id = %s", [user.pk])
        cur.execute(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff,"
            " is_active, date_joined) SELECT '', false, 'lb-big-followee-' || i, '', '', '', false, true, now()"
            " FROM generate_series(%s, %s) i ON CONFLICT (username) DO NOTHING",
            [first_followee, first_followee + n - 1],
        )
        cur.execute(
            "INSERT INTO follows_follow (created, follower_id, followee_id)"
            " SELECT now() - (%s - i) * interval '1 second', %s, u.id FROM generate_series(%s, %s) i"
            " JOIN auth_user u ON u.username = 'lb-big-followee-' || i ORDER BY i",
            [first_followee + n, user.pk, first_followee, first_followee + n - 1],
        )
        cur.execute("ANALYZE follows_follow")
    return int(user.pk)


class RawMemcached:
    """One socket, the text protocol by hand: the floor of a round trip."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def set(self, key: str, value: bytes) -> None:
        self.sock.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (key.encode(), len(value), value))
        assert self.sock.recv(64) == b"STORED\r\n"

    def get(self, key: str) -> bytes:
        self.sock.sendall(b"get %s\r\n" % key.encode())
        buf = b""
        while not buf.endswith(b"END\r\n"):
            buf += self.sock.recv(65536)
        return buf


def _median_us(fn: Callable[[], Any], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000


def _peak_rss(follower: int, small: int) -> dict[str, int]:
    """Iterates the list in a fresh process: its RSS before, and its peak.
    A fresh process serves reads from the database until its first repair
    check (``listy.repair``): it reads a small list until that one is a hit."""
    code = (
        "import os, json, time, django; django.setup()\n"
        "from benchproj.follows.models import Follow\n"
        f"while not Follow.cache.get(follower_id={small}).from_cache: time.sleep(0.05)\n"
        f"r = Follow.cache.get(follower_id={follower}); r[:20]; assert r.from_cache\n"
        "import gc; gc.collect()\n"
        "base = int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n"
        "n = 0\n"
        f"for f in Follow.cache.get(follower_id={follower}): n += 1\n"
        # VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's peak.
        "peak = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) * 1024\n"
        "print(json.dumps({'base': base, 'peak': peak, 'n': n}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(memcached: str, log: Callable[[str], None], reps: int = 200) -> dict[str, Any]:
    """Every measure of the big list, in µs (medians) and bytes."""
    from benchproj.follows.models import Follow

    t0 = time.time()
    big = _ensure_follows(BIG_USER, BIG, 10_000_000)
    small = _ensure_follows(SMALL_USER, SMALL, 20_000_000)
    log(f"1M list: data ready in {time.time() - t0:.1f}s")
    raw = RawMemcached(memcached)
    raw.set("lb-big:small", b"0123456789")
    out: dict[str, Any] = {"n": BIG}
    out["rt_raw_us"] = _median_us(lambda: raw.get("lb-big:small"), reps)
    # Cold build: the list is gone (a flush of the model's lists), one read builds it.
    cold = []
    for _ in range(2):
        Follow.cache.flush_all()
        t = time.perf_counter_ns()
        first = Follow.cache.get(follower_id=big)[:20]
        cold.append((time.perf_counter_ns() - t) / 1000)
        assert len(first) == 20
    out["cold_build_us"] = min(cold)
    Follow.cache.get(follower_id=small)[:1]
    t = time.perf_counter_ns()
    orm = list(Follow.objects.filter(follower_id=big).order_by("-pk"))
    out["orm_full_us"] = (time.perf_counter_ns() - t) / 1000
    want_mid = [f.pk for f in orm[500_000:500_020]]
    del orm
    out["stored_bytes"] = Follow.cache.get(follower_id=big).size
    out["first20_us"] = _median_us(lambda: Follow.cache.get(follower_id=big)[:20], reps)
    out["first20_small_us"] = _median_us(lambda: Follow.cache.get(follower_id=small)[:20], reps)
    out["deep_slice_us"] = _median_us(lambda: Follow.cache.get(follower_id=big)[500_000:500_020], 20)
    assert [f.pk for f in Follow.cache.get(follower_id=big)[500_000:500_020]] == want_mid
    out["len_us"] = _median_us(lambda: len(Follow.cache.get(follower_id=big)), 50)
    out["count_us"] = _median_us(lambda: Follow.cache.count(follower_id=big), 50)
    assert len(Follow.cache.get(follower_id=big)) == Follow.cache.count(follower_id=big) == BIG
    cursor = want_mid[0]
    out["keyset_us"] = _median_us(lambda: Follow.cache.get(follower_id=big).after(cursor, 20), 20)
    assert [f.pk for f in Follow.cache.get(follower_id=big).after(cursor, 19)] == want_mid[1:]

    def full() -> None:
        for _ in Follow.cache.get(follower_id=big):
            pass

    out["full_us"] = _median_us(full, 3)
    out["rss"] = _peak_rss(big, small)
    assert out["rss"]["n"] == BIG
    log(f"1M list: measured in {time.time() - t0:.1f}s")
    return out


def table(r: dict[str, Any]) -> str:
    """The report's section on the 1M list."""
    rt = r["rt_raw_us"]
    rss = r["rss"]
    grown = rss["peak"] - rss["base"]
    rows = [
        ("raw socket round trip (small value)", rt, "1.00 RT", ""),
        ("first 20 (`[:20]`)", r["first20_us"], f"{r['first20_us'] / rt:.2f} RT",
         f"{r['first20_us'] / r['first20_small_us']:.2f}x the first 20 of a 10-item list"),
        ("first 20 of a 10-item list", r["first20_small_us"], f"{r['first20_small_us'] / rt:.2f} RT", ""),
        ("deep slice `[500_000:500_020]`", r["deep_slice_us"], f"{r['deep_slice_us'] / rt:.2f} RT", ""),
        ("keyset page `.after(pk, 20)` mid-list", r["keyset_us"], f"{r['keyset_us'] / rt:.2f} RT", ""),
        ("`len()`", r["len_us"], f"{r['len_us'] / rt:.2f} RT", ""),
        ("`count()`", r["count_us"], f"{r['count_us'] / rt:.2f} RT", ""),
        ("full read (iterate, instances)", r["full_us"], "", f"{r['orm_full_us'] / r['full_us']:.1f}x faster than the ORM"),
        ("plain ORM full read (PostgreSQL)", r["orm_full_us"], "", ""),
        ("cold build (miss: read, encode, store)", r["cold_build_us"], "",
         f"{r['cold_build_us'] / r['orm_full_us']:.2f}x the ORM's full read"),
    ]
    lines = ["| measure | median | in round trips | note |", "|---|---:|---:|---|"]
    for name, us, rts, note in rows:
        shown = f"{us / 1000:.1f} ms" if us >= 1000 else f"{us:.0f} µs"
        lines.append(f"| {name} | {shown} | {rts} | {note} |")
    lines.append(
        f"| peak RSS growth iterating it | {grown / 2**20:.0f} MiB | | {grown / r['stored_bytes']:.1f}x the "
        f"{r['stored_bytes'] / 2**20:.1f} MiB stored ({r['stored_bytes'] / r['n']:.1f} B/record) |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproj.settings")
    from listybench import data as data_mod

    os.environ["BENCH_PG_NAME"] = data_mod.ensure_postgres_database(os.environ.get("BENCH_PG_NAME", "listy_bigbench"))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "auth", verbosity=0, interactive=False)
    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
    result = run(os.environ["BENCH_MEMCACHED"], lambda m: print(f"[bigbench] {m}", flush=True))
    print(json.dumps(result, indent=1))
    print(table(result))
