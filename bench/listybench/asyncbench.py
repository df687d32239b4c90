"""The async rows of SPEC §5: ``bench/run.sh async`` (or ``make bench-async``).

- an ``aget`` hit against the sync ``get`` hit, one call at a time on one
  list of 100 follows (call + the first 20 instances), and the same through
  ``sync_to_async(thread_sensitive=True)`` (what the docs suggested before
  the a-calls) for reference;
- 200 concurrent ``aget`` hits on one event loop (``asyncio.gather``)
  against 8 threads making the same 200 sync calls;
- requests/s of an async view of a cached list under uvicorn against the
  same view in sync form, 16 client threads on keep-alive connections.

Writes ``<out>/async.md`` and ``<out>/async.json``. Uses its own PostgreSQL
database (``<BENCH_PG_NAME>_async``) so the main benchmark's data is left alone.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

LISTS = 40  # followers, one list of LENGTH follows each
LENGTH = 100
CONCURRENT = 200
THREADS = 8


def log(msg: str) -> None:
    print(f"[bench-async {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def setup() -> list[int]:
    """Django on the benchmark's settings, a fresh database of its own,
    ``LISTS`` followers with ``LENGTH`` follows each; returns the followers."""
    from listybench import data as data_mod

    name = os.environ.get("BENCH_PG_NAME", "listy_bench") + "_async"
    os.environ["BENCH_PG_NAME"] = data_mod.ensure_postgres_database(name)
    os.environ.pop("LISTY_SERVERS", None)
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.db import transaction

    from benchproj.follows.models import Follow

    data_mod._reset_schema()
    users = [User(username=f"u{i}", password="!") for i in range(LISTS + LENGTH)]
    with transaction.atomic():
        User.objects.bulk_create(users, batch_size=5000)
    ids = list(User.objects.order_by("pk").values_list("pk", flat=True))
    followers, followees = ids[:LISTS], ids[LISTS:]
    with transaction.atomic():
        Follow.objects.bulk_create(
            [Follow(follower_id=a, followee_id=b) for a in followers for b in followees], batch_size=5000
        )
    Follow.cache.flush_all()
    for f in followers:
        Follow.cache.get(follower_id=f)  # warm: every read below is a hit
    return followers


def first20(seq: Any) -> int:
    return sum(1 for _ in seq[:20])


def worker_only():  # type: ignore[no-untyped-def]
    """Settings under which every async read goes through a worker thread
    (``ASYNC_INLINE_TIMEOUT = 0``): the design the inline read replaced."""
    from django.conf import settings
    from django.test import override_settings

    return override_settings(LISTY={**settings.LISTY, "ASYNC_INLINE_TIMEOUT": 0})


def per_call(followers: list[int], reps: int, rounds: int) -> dict[str, float]:
    """Median seconds per call (call + first 20 instances), one at a time."""
    from asgiref.sync import async_to_sync, sync_to_async

    from benchproj.follows.models import Follow

    who = followers[0]
    wrapped = sync_to_async(lambda: first20(Follow.cache.get(follower_id=who)), thread_sensitive=True)

    async def a_loop() -> float:
        t = time.perf_counter()
        for _ in range(reps):
            first20(await Follow.cache.aget(follower_id=who))
        return (time.perf_counter() - t) / reps

    async def wrapped_loop() -> float:
        t = time.perf_counter()
        for _ in range(reps):
            await wrapped()
        return (time.perf_counter() - t) / reps

    def s_loop() -> float:
        t = time.perf_counter()
        for _ in range(reps):
            first20(Follow.cache.get(follower_id=who))
        return (time.perf_counter() - t) / reps

    out: dict[str, list[float]] = {"get": [], "aget": [], "aget (worker thread)": [], "sync_to_async(get)": []}
    for _ in range(rounds):
        out["get"].append(s_loop())
        out["aget"].append(asyncio.run(a_loop()))
        with worker_only():
            out["aget (worker thread)"].append(asyncio.run(a_loop()))
        out["sync_to_async(get)"].append(async_to_sync(wrapped_loop)())
    return {k: statistics.median(v) for k, v in out.items()}


def concurrent(followers: list[int], rounds: int) -> dict[str, float]:
    """Median seconds for CONCURRENT hits over the lists: gathered on one
    loop, and spread over THREADS threads of sync calls."""
    from benchproj.follows.models import Follow

    targets = [followers[i % len(followers)] for i in range(CONCURRENT)]

    async def gathered() -> float:
        async def one(f: int) -> int:
            return first20(await Follow.cache.aget(follower_id=f))

        t = time.perf_counter()
        await asyncio.gather(*(one(f) for f in targets))
        return time.perf_counter() - t

    def threaded(pool: ThreadPoolExecutor) -> float:
        t = time.perf_counter()
        list(pool.map(lambda f: first20(Follow.cache.get(follower_id=f)), targets))
        return time.perf_counter() - t

    out: dict[str, list[float]] = {"aget x200 (one loop)": [], "get x200 (8 threads)": [], "aget x200 (worker threads)": []}
    with ThreadPoolExecutor(THREADS) as pool:
        loop = asyncio.new_event_loop()
        try:
            for _ in range(rounds):
                out["get x200 (8 threads)"].append(threaded(pool))
                out["aget x200 (one loop)"].append(loop.run_until_complete(gathered()))
                with worker_only():
                    out["aget x200 (worker threads)"].append(loop.run_until_complete(gathered()))
        finally:
            loop.close()
    return {k: statistics.median(v) for k, v in out.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchproj.asgi:application", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("uvicorn did not start")


def requests_per_second(port: int, path: str, followers: list[int], seconds: float, clients: int = 16) -> float:
    """Requests/s of ``path`` (``{}``: a follower) with ``clients`` keep-alive clients."""
    stop = time.monotonic() + seconds
    counts = [0] * clients

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        n = 0
        while time.monotonic() < stop:
            conn.request("GET", path.format(followers[(i + n) % len(followers)]))
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200, body[:200]
            n += 1
        counts[i] = n
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sum(counts) / (time.perf_counter() - t)


def asgi(followers: list[int], seconds: float, rounds: int) -> dict[str, float]:
    port = free_port()
    proc = serve(port)
    try:
        for path in ("/async/{}/", "/sync/{}/"):  # warm the server's connections and lists
            requests_per_second(port, path, followers, 0.5)
        out: dict[str, list[float]] = {"async view": [], "sync view": []}
        for _ in range(rounds):
            out["async view"].append(requests_per_second(port, "/async/{}/", followers, seconds))
            out["sync view"].append(requests_per_second(port, "/sync/{}/", followers, seconds))
        return {k: statistics.median(v) for k, v in out.items()}
    finally:
        proc.terminate()
        proc.wait(10)


def report(results: dict[str, Any]) -> str:
    calls, conc, views = results["per_call"], results["concurrent"], results["asgi"]
    us = 1e6
    lines = [
        "# Async (SPEC §5, async row)",
        "",
        f"Follow lists of {LENGTH} records in memcached, every read a hit, each read "
        "the call plus its first 20 instances; medians of the rounds. "
        f"Machine: {os.cpu_count()} cores; {results['uptime']}.",
        "",
        "| measure | time | ratio | target |",
        "|---|---:|---:|---|",
        f"| sync `get` hit | {calls['get'] * us:.1f} µs | 1.00x | |",
        f"| `aget` hit (inside a running loop) | {calls['aget'] * us:.1f} µs | "
        f"{calls['aget'] / calls['get']:.2f}x | at most 1.2x |",
        f"| `aget` hit through a worker thread (`ASYNC_INLINE_TIMEOUT = 0`) | {calls['aget (worker thread)'] * us:.1f} µs | "
        f"{calls['aget (worker thread)'] / calls['get']:.2f}x | |",
        f"| `sync_to_async(get)` hit (before the a-calls) | {calls['sync_to_async(get)'] * us:.1f} µs | "
        f"{calls['sync_to_async(get)'] / calls['get']:.2f}x | |",
        f"| {THREADS} threads, {CONCURRENT} sync `get` hits | {conc['get x200 (8 threads)'] * 1e3:.2f} ms | 1.00x | |",
        f"| one loop, {CONCURRENT} concurrent `aget` hits | {conc['aget x200 (one loop)'] * 1e3:.2f} ms | "
        f"{conc['aget x200 (one loop)'] / conc['get x200 (8 threads)']:.2f}x | at most 1x |",
        f"| the same through worker threads (`ASYNC_INLINE_TIMEOUT = 0`) | "
        f"{conc['aget x200 (worker threads)'] * 1e3:.2f} ms | "
        f"{conc['aget x200 (worker threads)'] / conc['get x200 (8 threads)']:.2f}x | |",
        "",
        "Under uvicorn (one worker, 16 keep-alive clients in threads of the same machine):",
        "",
        "| view | requests/s |",
        "|---|---:|",
        f"| async view, `await Follow.cache.aget(...)` | {views['async view']:.0f} |",
        f"| the same view in sync form, `Follow.cache.get(...)` | {views['sync view']:.0f} |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="listybench.asyncbench")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "out"))
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--reps", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    followers = setup()
    log(f"{len(followers)} lists of {LENGTH} follows, warm")
    results: dict[str, Any] = {"uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    results["per_call"] = per_call(followers, args.reps, args.rounds)
    log(f"per call: {results['per_call']}")
    results["concurrent"] = concurrent(followers, args.rounds * 3)
    log(f"concurrent: {results['concurrent']}")
    results["asgi"] = asgi(followers, args.seconds, max(1, args.rounds // 2))
    log(f"asgi: {results['asgi']}")
    text = report(results)
    with open(os.path.join(args.out, "async.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "async.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
