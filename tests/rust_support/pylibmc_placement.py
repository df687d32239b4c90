#!/usr/bin/env python3
"""Record where pylibmc puts keys, for crates/listy-core/tests/ketama_compat.rs.

Each key is set through a pylibmc client configured with the given ketama
behavior on N real memcached servers; then every server is asked directly
(a single-server pylibmc client, which does no hashing) which keys it holds.
The output file has a header with the configuration and one "key<TAB>server"
line per key, "server" being "host:port" as Listy's pool names it:

    #pylibmc    1.6.3    libmemcached 1.0.16
    #behavior   ketama_weighted
    #servers    127.0.0.1:40001 1    127.0.0.1:40002 2
    key-0       127.0.0.1:40002

Usage (servers already running, "host:port[:weight]"):
    pylibmc_placement.py --behavior ketama_weighted \
        --servers 127.0.0.1:40001:1,127.0.0.1:40002:2 --out placements.tsv
or let the script start (and stop) memcached on free ports, one per weight:
    pylibmc_placement.py --behavior ketama --spawn 1,1,1 --out equal.tsv

Then: LISTY_PYLIBMC_PLACEMENTS=placements.tsv,equal.tsv \
        cargo test -p listy-core --test ketama_compat -- --nocapture
"""

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import pylibmc

MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"


def parse_server(spec):
    """'host:port[:weight]' -> (host, port, weight)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise SystemExit(f"bad server {spec!r}: expected host:port[:weight]")
    weight = int(parts[2]) if len(parts) == 3 else 1
    return parts[0], int(parts[1]), weight


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


@contextmanager
def spawned(weights):
    """Start one memcached per weight on free ports; yield their specs."""
    procs, servers = [], []
    try:
        for weight in weights:
            for _ in range(20):
                port = free_port()
                cmd = [MEMCACHED, "-U", "0", "-l", "127.0.0.1", "-p", str(port), "-m", "64"]
                if os.geteuid() == 0:
                    cmd += ["-u", "root"]  # memcached refuses root without -u
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
                if wait_listening(port, proc):
                    procs.append(proc)
                    servers.append(("127.0.0.1", port, weight))
                    break
                proc.kill()
                proc.wait()
            else:
                raise SystemExit("could not start memcached")
        yield servers
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def make_keys(count, seed):
    """Plain, Listy-like, long and non-ASCII keys (never spaces/controls)."""
    rng = random.Random(seed)
    alphabet = [chr(c) for c in range(0x21, 0x7F)]
    keys = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            key = f"key-{i}"
        elif kind == 1:
            key = f"listy:v1:app.model:{i}:{rng.getrandbits(32):08x}"
        elif kind == 2:
            key = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 200)))
        else:
            key = f"clé-{i}-ü-{rng.getrandbits(16)}"
        if len(key.encode()) <= 250 and key not in ("#pylibmc", "#behavior", "#servers"):
            keys.append(key)
    return list(dict.fromkeys(keys))


def placements(servers, behavior, keys):
    specs = [f"{h}:{p}:{w}" for h, p, w in servers]
    client = pylibmc.Client(specs, behaviors={behavior: True})
    directs = {f"{h}:{p}": pylibmc.Client([f"{h}:{p}"]) for h, p, _ in servers}
    for direct in directs.values():
        direct.flush_all()
    for key in keys:
        if not client.set(key, b"1"):
            raise SystemExit(f"pylibmc could not set {key!r}")
    holders = {key: [] for key in keys}
    for name, direct in directs.items():
        for start in range(0, len(keys), 500):
            for key in direct.get_multi(keys[start:start + 500]):
                holders[key].append(name)
    result = []
    for key in keys:
        if len(holders[key]) != 1:
            raise SystemExit(f"{key!r} found on {holders[key]}, expected exactly one server")
        result.append((key, holders[key][0]))
    return result


def write(out, servers, behavior, rows):
    out.write(f"#pylibmc\t{pylibmc.__version__}\tlibmemcached {pylibmc.libmemcached_version}\n")
    out.write(f"#behavior\t{behavior}\n")
    out.write("#servers\t" + "\t".join(f"{h}:{p} {w}" for h, p, w in servers) + "\n")
    for key, server in rows:
        out.write(f"{key}\t{server}\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--behavior", choices=["ketama", "ketama_weighted"], default="ketama_weighted")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--servers", help="comma-separated host:port[:weight] of running servers")
    source.add_argument("--spawn", help="comma-separated weights: start one memcached per weight")
    parser.add_argument("--keys", type=int, default=4000, help="number of keys (default 4000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", help="output file (default: stdout)")
    args = parser.parse_args()

    keys = make_keys(args.keys, args.seed)
    if args.servers:
        servers = [parse_server(s) for s in args.servers.split(",")]
        rows = placements(servers, args.behavior, keys)
    else:
        with spawned([int(w) for w in args.spawn.split(",")]) as servers:
            rows = placements(servers, args.behavior, keys)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            write(out, servers, args.behavior, rows)
    else:
        write(sys.stdout, servers, args.behavior, rows)
    counts = {}
    for _, server in rows:
        counts[server] = counts.get(server, 0) + 1
    print(f"{len(rows)} keys, {args.behavior}: " + ", ".join(f"{s}={n}" for s, n in sorted(counts.items())), file=sys.stderr)


if __name__ == "__main__":
    main()
