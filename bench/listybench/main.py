"""The benchmark: every system side by side, in one run, interleaved in rounds.

Run by ``bench/run.sh`` (which sets up the venv, memcached and the
environment); ``python -m listybench --help`` for the knobs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

LENGTHS = (100, 1_000, 10_000)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="listybench")
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds of the warm-read measures")
    p.add_argument("--cold-rounds", type=int, default=5)
    p.add_argument("--mixed-ops", type=int, default=2000, help="operations of the 99%%/1%% workload per system")
    p.add_argument("--mixed-chunks", type=int, default=5, help="the workload is interleaved across systems in this many chunks")
    p.add_argument("--add-samples", type=int, default=5)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "out"))
    p.add_argument("--quick", action="store_true", help="few rounds, for trying the harness")
    p.add_argument("--no-big", action="store_true", help="skip the 1,000,000-item list (about 40 s)")
    return p.parse_args(argv)


# Repetitions per round of one measure, by list length.
REPS = {100: 10, 1_000: 3, 10_000: 2}
FIRST20_REPS = 20
RT_REPS = 200


def memcached_stats(client) -> dict[str, int]:
    raw = client.stats()
    out = {}
    for k, v in raw.items():
        k = k.decode() if isinstance(k, bytes) else k
        if isinstance(v, (int, float)):
            out[k] = v
    return out


MC_COUNTERS = (
    "cmd_get", "cmd_set", "cmd_touch", "get_hits", "get_misses", "delete_hits", "delete_misses",
    "incr_hits", "incr_misses", "decr_hits", "decr_misses", "cas_hits", "cas_misses", "cas_badval",
    "total_connections",
)


def mc_delta(before: dict, after: dict) -> dict[str, int]:
    return {k: int(after.get(k, 0) - before.get(k, 0)) for k in MC_COUNTERS if after.get(k, 0) != before.get(k, 0)}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("django", "django-listy", "django-cacheops", "django-cachalot", "pymemcache", "redis", "psycopg", "matplotlib"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    return out


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release()}


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        la = os.getloadavg()
        return f"load average: {la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.rounds, args.cold_rounds, args.mixed_ops, args.add_samples = 3, 2, 400, 2
    os.makedirs(args.out, exist_ok=True)
    memcached = os.environ["BENCH_MEMCACHED"]
    os.environ.pop("LISTY_SERVERS", None)  # would override LISTY["SERVERS"]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproj.settings")
    os.environ.setdefault("BENCH_SQLITE_PATH", os.path.join(args.out, "bench.sqlite3"))

    from listybench import data as data_mod

    os.environ["BENCH_PG_NAME"] = data_mod.ensure_postgres_database(os.environ.get("BENCH_PG_NAME", "listy_bench"))

    import django

    django.setup()
    import redis as redis_lib
    from django.db import connection

    from listy import _native
    from listybench import report
    from listybench.mcproxy import CountingProxy
    from listybench.systems import (
        ListySystem,
        OrmSystem,
        PickledInstances,
        PickledValues,
        Runner,
        _mc_client,
    )
    from listybench.worker import RemoteRunner

    started = time.time()
    load_start = uptime()
    log(f"machine: {load_start}")
    mc = _mc_client(memcached)
    mc.flush_all()  # our own memcached, started by run.sh
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
    rds = redis_lib.Redis.from_url(redis_url)
    rds.flushdb()  # our own db number only

    # The plain ORM is left out of the mixed workload: its reads always run SQL
    # (0% hits by definition) and its 1,000-item read is in measure 1.
    MIXED = ["cacheops", "cachalot", "pickle_inst", "listy_mc", "listy_local"]
    log("building data (PostgreSQL and SQLite)")
    t0 = time.time()
    ADDERS = ["listy_proxy", "cacheops", "cachalot", "pickle_inst"]
    d = data_mod.build(MIXED, ADDERS)
    log(f"data built in {time.time() - t0:.1f}s: {d.follow_rows} follows, {len(d.followers)} followers")

    # ------------------------------------------------------------ systems
    proxy = CountingProxy(memcached)
    local = {
        "orm_pg": OrmSystem("orm_pg", "plain ORM, PostgreSQL", None, add_with_signals=False),
        "orm_sqlite": OrmSystem("orm_sqlite", "plain ORM, SQLite", "sqlite", add_with_signals=False),
        "pickle_inst": PickledInstances(memcached),
        "pickle_vl": PickledValues(memcached),
        "listy_mc": ListySystem("listy_mc", "Listy (memcached)", [memcached], memcached),
        "listy_local": ListySystem("listy_local", "Listy (embedded store)", ["local"], None),
        "listy_proxy": ListySystem("listy_proxy", "Listy (memcached, counted)", [proxy.address], memcached),
        "listy_proxy_one": ListySystem(
            "listy_proxy_one", "Listy (memcached, counted), 1 index", [proxy.address], memcached, model="FollowOne"
        ),
    }
    small_key = "lb-ref:small"
    mc.set(small_key, b"0123456789")
    listy_store = _native.Store.memcached([memcached])
    extras = {
        "rt_pymemcache": lambda: mc.get(small_key),
        "rt_listy_store": lambda: listy_store.get_raw(small_key),
    }
    runner = Runner(local, extras)
    env = {k: v for k, v in os.environ.items() if k.startswith("BENCH_")}
    log("starting the peers' processes (django-cacheops, django-cachalot)")
    workers = {
        "cacheops": RemoteRunner("benchproj.settings_cacheops", env),
        "cachalot": RemoteRunner("benchproj.settings_cachalot", env),
    }
    runners: dict[str, Any] = {k: runner for k in local} | workers
    labels = {k: s.label for k, s in local.items()} | {
        "cacheops": "django-cacheops (Redis)",
        "cachalot": "django-cachalot (memcached)",
    }
    full_systems = ["orm_pg", "orm_sqlite", "cacheops", "cachalot", "pickle_inst", "listy_mc", "listy_local"]
    values_systems = ["orm_pg", "cacheops", "cachalot", "pickle_vl", "listy_mc", "listy_local"]
    order = ["orm_pg", "orm_sqlite", "cacheops", "cachalot", "pickle_inst", "pickle_vl", "listy_mc", "listy_local"]
    fol = {n: d.followers[f"L{n}"] for n in LENGTHS}

    results: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "versions": versions(),
            "machine": machine(),
            "uptime_start": load_start,
            "rounds": args.rounds,
            "reps_per_round": {str(k): v for k, v in REPS.items()},
            "data": {"follows": d.follow_rows, "followers": len(d.followers), "lengths": list(LENGTHS)},
            "processes": {"main": os.getpid()} | {k: w.pid for k, w in workers.items()},
            "memcached": memcached,
            "redis": redis_url,
            "postgres_db": os.environ["BENCH_PG_NAME"],
            "labels": labels,
        }
    }
    with connection.cursor() as cur:
        cur.execute("SHOW server_version")
        results["meta"]["versions"]["postgresql"] = cur.fetchone()[0]
    results["meta"]["versions"]["memcached"] = mc.version().decode() if isinstance(mc.version(), bytes) else str(mc.version())
    results["meta"]["versions"]["redis-server"] = rds.info("server").get("redis_version", "?")

    try:
        # -------------------------------------------------------- warm-up
        log("warming every list of every system")
        for key in order:
            for n in LENGTHS:
                got = runners[key].call("warm", key, fol[n])
                assert got == n, (key, n, got)

        # -------------------------------------------------------- warm reads, interleaved
        log(f"warm reads: {args.rounds} rounds, systems interleaved")
        full = defaultdict(lambda: defaultdict(list))
        full_sql = defaultdict(lambda: defaultdict(int))
        other_sql: dict[str, int] = defaultdict(int)
        other_examples: dict[str, list[str]] = defaultdict(list)
        first20 = defaultdict(list)
        first20_sql = defaultdict(int)
        values = defaultdict(lambda: defaultdict(list))
        values_sql = defaultdict(lambda: defaultdict(int))
        for r in range(args.rounds):
            rot = order[r % len(order):] + order[: r % len(order)]
            for key in rot:
                plan = []
                if key in full_systems:
                    plan += [("full", fol[n], n, REPS[n]) for n in LENGTHS]
                    # the pickled list unpickles all 10,000 instances to slice 20: a few samples do
                    plan += [("first20", fol[10_000], 10_000, 2 if key == "pickle_inst" else FIRST20_REPS)]
                if key in values_systems:
                    plan += [("values", fol[n], n, REPS[n]) for n in LENGTHS]
                out = runners[key].call("round", key, plan)
                for (measure, u, n, _), res in zip(plan, out):
                    other_sql[key] += res["other_sql"]
                    if res["other"] and len(other_examples[key]) < 3:
                        other_examples[key] += res["other"][:1]
                    if measure == "full":
                        full[key][n] += res["ns"]
                        full_sql[key][n] += res["sql"]
                    elif measure == "first20":
                        first20[key] += res["ns"]
                        first20_sql[key] += res["sql"]
                    else:
                        values[key][n] += res["ns"]
                        values_sql[key][n] += res["sql"]
            for name in extras:
                first20[name] += runner.call("extra", name, RT_REPS)["ns"]
            if r == 0 or (r + 1) % 5 == 0:
                log(f"  round {r + 1}/{args.rounds} done")
        results["full"] = {k: {str(n): v for n, v in d_.items()} for k, d_ in full.items()}
        results["full_sql"] = {k: {str(n): v for n, v in d_.items()} for k, d_ in full_sql.items()}
        results["other_sql"] = dict(other_sql)
        results["other_sql_examples"] = dict(other_examples)
        results["first20"] = dict(first20)
        results["first20_sql"] = dict(first20_sql)
        results["values"] = {k: {str(n): v for n, v in d_.items()} for k, d_ in values.items()}
        results["values_sql"] = {k: {str(n): v for n, v in d_.items()} for k, d_ in values_sql.items()}

        # -------------------------------------------------------- bytes per record
        log("bytes per cached record")
        stored: dict[str, dict[str, Any]] = {}
        for key in ["cacheops", "cachalot", "pickle_inst", "pickle_vl", "listy_mc", "listy_local"]:
            stored[key] = {}
            for n in LENGTHS:
                info = runners[key].call("stored", key, fol[n])
                if info and info.get("bytes") is not None:
                    info["per_record"] = info["bytes"] / n
                stored[key][str(n)] = info
        results["stored"] = stored

        # -------------------------------------------------------- cold reads
        log(f"cold reads (miss + rebuild): {args.cold_rounds} rounds")
        cold = defaultdict(lambda: defaultdict(list))
        cold_sql = defaultdict(lambda: defaultdict(list))
        cold_systems = ["orm_pg", "cacheops", "cachalot", "pickle_inst", "listy_mc", "listy_local"]
        for r in range(args.cold_rounds):
            rot = cold_systems[r % len(cold_systems):] + cold_systems[: r % len(cold_systems)]
            for key in rot:
                for n in LENGTHS:
                    res = runners[key].call("cold", key, fol[n], n, 1)
                    cold[key][n] += res["ns"]
                    cold_sql[key][n] += res["sql"]
        results["cold"] = {k: {str(n): v for n, v in d_.items()} for k, d_ in cold.items()}
        results["cold_sql"] = {k: {str(n): v for n, v in d_.items()} for k, d_ in cold_sql.items()}

        # -------------------------------------------------------- 99% reads / 1% adds
        log(f"99% reads / 1% adds: {args.mixed_ops} operations per system, {args.mixed_chunks} interleaved chunks")
        mixed: dict[str, dict[str, list]] = {}
        schedules = {}
        for key in MIXED:
            ops: list[int | None] = []
            for i in range(args.mixed_ops):
                ops.append(d.take_followee() if i % 100 == 99 else None)
            schedules[key] = ops
            u = d.followers[f"mixed:{key}"]
            runners[key].call("warm", key, u)
            mixed[key] = {"read_ns": [], "read_sql": [], "read_other_sql": [], "add_ns": [], "add_sql": [], "other_examples": []}
        size = -(-args.mixed_ops // args.mixed_chunks)
        for c in range(args.mixed_chunks):
            rot = MIXED[c % len(MIXED):] + MIXED[: c % len(MIXED)]
            for key in rot:
                chunk = schedules[key][c * size : (c + 1) * size]
                res = runners[key].call("mixed", key, d.followers[f"mixed:{key}"], chunk)
                for k2, v2 in res.items():
                    if k2 == "other_examples":
                        mixed[key][k2] = (mixed[key][k2] + v2)[:3]
                    else:
                        mixed[key][k2] += v2
        results["mixed"] = mixed

        # -------------------------------------------------------- cost of one add()
        log("cost of one add(): SQL statements, cache round trips")
        add_cost: dict[str, list[dict[str, Any]]] = {}
        add_plan = [
            ("listy_proxy", d.followers["add:listy_proxy"], "Listy, 3 indexes (pk, follower, follower+followee)"),
            ("listy_proxy_one", d.followers["add:FollowOne"], "Listy, 1 index (follower)"),
            ("cacheops", d.followers["add:cacheops"], "django-cacheops"),
            ("cachalot", d.followers["add:cachalot"], "django-cachalot"),
            ("pickle_inst", d.followers["add:pickle_inst"], "pickled instances (delete on write)"),
        ]
        for key, u, _ in add_plan:
            add_cost[key] = []
            for i in range(args.add_samples):
                v = d.take_followee()
                runners[key].call("prepare_add", key, u, v)
                proxy.reset()
                mc_before = memcached_stats(mc)
                redis_before = rds.info("stats")["total_commands_processed"]
                res = runners[key].call("add_once", key, u, v)
                redis_after = rds.info("stats")["total_commands_processed"]
                time.sleep(0.05)  # let the proxy threads account the last bytes
                res["memcached_stats_delta"] = mc_delta(mc_before, memcached_stats(mc))
                res["redis_commands"] = redis_after - redis_before - 1  # minus the INFO itself
                if key.startswith("listy_proxy"):
                    res["proxy"] = proxy.snapshot()
                # the next read: served from the cache?
                res["next_read_sql"] = runners[key].call("mixed", key, u, [None])["read_sql"][0]
                add_cost[key].append(res)
        results["add_cost"] = add_cost
        results["add_plan"] = [(k, lbl) for k, _, lbl in add_plan]

        # -------------------------------------------------------- correctness
        log("checking every system's lists against the database")
        checks = []
        probes = [(key, fol[n], f"L{n}") for key in order for n in LENGTHS]
        probes += [(key, d.followers[f"mixed:{key}"], "mixed") for key in MIXED]
        probes += [(key, d.followers[f"add:{key}"], "add") for key in ADDERS]
        for key, u, what in probes:
            got = runners[key].call("pks", key, u)
            want = runner.call("db_pks", u)
            checks.append({"system": key, "list": what, "ok": got == want, "len": len(got), "db_len": len(want)})
        results["checks"] = checks
        bad = [c for c in checks if not c["ok"]]
        if bad:
            log(f"WARNING: lists that differ from the database: {bad}")

        # -------------------------------------------------------- the 1,000,000-item list
        if not args.no_big:
            from listybench import bigbench

            log("the 1,000,000-item list (built once)")
            local["listy_mc"].activate()
            results["big"] = bigbench.run(memcached, log)

        results["meta"]["listy_stats"] = {"hits": local["listy_mc"].model.cache.hits, "misses": local["listy_mc"].model.cache.misses}
    finally:
        for w in workers.values():
            w.close()
        proxy.close()

    results["meta"]["uptime_end"] = uptime()
    results["meta"]["elapsed_s"] = round(time.time() - started, 1)
    log(f"machine: {results['meta']['uptime_end']}")

    # ------------------------------------------------------------ report
    md = report.markdown(results)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    report.plot(results, os.path.join(args.out, "read_vs_length.png"))
    print()
    print(md)
    log(f"wrote {args.out}/results.md, results.json, read_vs_length.png in {results['meta']['elapsed_s']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
