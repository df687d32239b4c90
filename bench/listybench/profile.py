"""Where Listy's read time goes: a breakdown of one read into its steps,
and a py-spy profile of a loop of full 10,000-item reads.

``bench/run.sh profile [--seconds N] [--what full|first20]`` (same set-up as
the benchmark: its venv, memcached, databases). Writes
``bench/out/profile_<what>.svg`` (py-spy flame graph, ``--native`` so the
Rust frames show) and prints the breakdown.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time


def med_us(fn, reps: int) -> float:
    fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - t0)
    return statistics.median(out) / 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="listybench.profile")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--what", choices=["full", "first20"], default="full")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "out"))
    p.add_argument("--no-build", action="store_true", help="reuse the data of the last run")
    p.add_argument("--store", choices=["memcached", "local"], default="memcached", help="Listy's store for the py-spy loop")
    args = p.parse_args(argv)
    memcached = os.environ["BENCH_MEMCACHED"]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproj.settings")
    os.environ.setdefault("BENCH_SQLITE_PATH", os.path.join(args.out, "bench.sqlite3"))
    os.environ.pop("LISTY_SERVERS", None)

    import django

    django.setup()
    from django.contrib.auth.models import User

    from benchproj.follows.models import Follow
    from listy import _native
    from listy.store import get_store
    from listybench import data as data_mod
    from listybench.systems import _mc_client

    if not args.no_build:
        data_mod.build([], [])
    u = User.objects.get(username="follower:L10000").pk
    mc = _mc_client(memcached)
    mc.set("lb-ref:small", b"0123456789")
    store = _native.Store.memcached([memcached])

    records = Follow.cache.get(follower=u)
    assert len(records) == 10_000
    head_key = records.key
    print(f"list key {head_key!r}, {records.size:,} bytes stored, from_cache={records.from_cache}")
    listy_store = get_store()
    steps = [
        ("pymemcache get, 10-byte value", lambda: mc.get("lb-ref:small"), 2000),
        ("Listy Store.get_raw, 10-byte value", lambda: store.get_raw("lb-ref:small"), 2000),
        ("Listy Store.get_raw, the list's head value", lambda: listy_store.get_raw(head_key), 2000),
        ("Follow.cache.get(follower=u) (no access)", lambda: Follow.cache.get(follower=u), 1000),
        ("Follow.cache.engine.get(...) (no Django front)", lambda: Follow.cache.engine.get(("follower_id",), (u,), Follow.cache.source.rows), 1000),
        ("Follow.cache.get(follower=u)[:20]", lambda: Follow.cache.get(follower=u)[:20], 1000),
        ("Follow.cache.get(follower=u)[0]", lambda: Follow.cache.get(follower=u)[0], 1000),
        ("len(Follow.cache.get(follower=u))", lambda: len(Follow.cache.get(follower=u)), 300),
        ("Follow.cache.get(follower=u).pks()", lambda: Follow.cache.get(follower=u).pks(), 100),
        ("Follow.cache.get(follower=u).values()", lambda: Follow.cache.get(follower=u).values(), 50),
        ("list(Follow.cache.get(follower=u))", lambda: list(Follow.cache.get(follower=u)), 30),
        ("[f.followee_id for f in Follow.cache.get(follower=u)]", lambda: [f.followee_id for f in Follow.cache.get(follower=u)], 30),
        ("ORM: list(Follow.objects.filter(follower_id=u).order_by('-pk'))", lambda: list(Follow.objects.filter(follower_id=u).order_by("-pk")), 10),
    ]
    print()
    print("| step (10,000-item list) | median µs |")
    print("|---|---:|")
    for name, fn, reps in steps:
        print(f"| {name} | {med_us(fn, reps):,.1f} |")
    print()

    # Round trips and commands of one call, through the counting proxy.
    from django.test.utils import override_settings

    from listybench.mcproxy import CountingProxy

    proxy = CountingProxy(memcached)
    with override_settings(LISTY={"SERVERS": [proxy.address], "KEY_PREFIX": "lb"}):
        calls = [
            ("Follow.cache.get(follower=u)[:20]", lambda: Follow.cache.get(follower=u)[:20]),
            ("[f.followee_id for f in Follow.cache.get(follower=u)]", lambda: [f.followee_id for f in Follow.cache.get(follower=u)]),
            ("Follow.cache.get(follower=u).values()", lambda: Follow.cache.get(follower=u).values()),
        ]
        print("| call (warm, through a counting proxy) | round trips | commands |")
        print("|---|---:|---|")
        for name, fn in calls:
            fn()
            time.sleep(0.05)
            proxy.reset()
            fn()
            time.sleep(0.05)
            snap = proxy.snapshot()
            print(f"| {name} | {snap['round_trips']} | {snap['commands']} |")
    proxy.close()
    print()

    pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(pyspy):
        print("py-spy not installed: no profile")
        return 0
    what = args.what
    if args.store == "local":
        from django.test.utils import override_settings as _ov

        _ov(LISTY={"SERVERS": ["local"], "KEY_PREFIX": "lb"}).enable()
        what_file = f"{what}_local"
    else:
        what_file = what
    loop = (lambda: [f.followee_id for f in Follow.cache.get(follower=u)]) if what == "full" else (lambda: Follow.cache.get(follower=u)[:20])
    out = os.path.join(args.out, f"profile_{what_file}.svg")
    cmd = [pyspy, "record", "--pid", str(os.getpid()), "--duration", str(int(args.seconds)), "--rate", "500",
           "--native", "--output", out, "--format", "flamegraph"]
    print("running:", " ".join(cmd))
    spy = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    n = 0
    end = time.time() + args.seconds + 1
    while time.time() < end and spy.poll() is None:
        loop()
        n += 1
    text, _ = spy.communicate(timeout=60)
    print(text.strip()[-2000:])
    print(f"{n} iterations of the {what} read under py-spy; flame graph: {out}")
    # The same as text: py-spy top-like summary from a raw (collapsed) dump.
    raw = os.path.join(args.out, f"profile_{what_file}.txt")
    cmd_raw = [pyspy, "record", "--pid", str(os.getpid()), "--duration", str(int(args.seconds)), "--rate", "500",
               "--native", "--output", raw, "--format", "raw"]
    spy = subprocess.Popen(cmd_raw, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    end = time.time() + args.seconds + 1
    while time.time() < end and spy.poll() is None:
        loop()
    spy.communicate(timeout=60)
    if os.path.exists(raw):
        summarize_collapsed(raw)
    return 0


def summarize_collapsed(path: str, top: int = 25) -> None:
    """Self time and inclusive time per function from py-spy's raw
    (collapsed stacks) output."""
    from collections import Counter

    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            try:
                n = int(count)
            except ValueError:
                continue
            frames = stack.split(";")
            total += n
            self_t[frames[-1]] += n
            for fr in set(frames):
                incl[fr] += n
    print(f"\n{total} samples; top self time:")
    for fr, n in self_t.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {fr}")
    print("\ntop inclusive time:")
    for fr, n in incl.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {fr}")


if __name__ == "__main__":
    sys.exit(main())
