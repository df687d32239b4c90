"""What TLS costs per memcached round trip: ``python bench/tls_round_trip.py``
(from the repository's root, with ``.venv`` built: ``make build``).

Starts two memcached servers of its own on 127.0.0.1 - plaintext and ``-Z``
with a certificate made for the run by ``openssl`` - and times, for each,
the same pipelined round trips through ``listy._native.Store``: a get of a
small value and a get of a 10,000-record list (~130 KB). Connections are
kept (the pool reuses them): the handshake is paid once per connection and
is timed separately. Prints a Markdown table of medians (and p90).
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from listy import _native

ROUNDS = 3000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        ["memcached", "-U", "0", "-l", "127.0.0.1", "-p", str(port), "-m", "64", "-u", "root", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("memcached did not start")


def certificates(where: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=bench CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (where / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "ext")


def timed(store: _native.Store, key: str) -> list[float]:
    samples = []
    for _ in range(ROUNDS):
        start_time = time.perf_counter()
        store.get_raw(key)
        samples.append((time.perf_counter() - start_time) * 1e6)
    return samples


def summary(samples: list[float]) -> str:
    samples = sorted(samples)
    return f"{statistics.median(samples):.1f} µs (p90 {samples[int(len(samples) * 0.9)]:.1f})"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        certificates(where)
        plain_proc, plain = start([])
        tls_proc, tls = start(["-Z", "-o", f"ssl_chain_cert={where / 'server.pem'},ssl_key={where / 'server.key'}"])
        try:
            stores = {
                "plaintext": lambda: _native.Store.memcached([plain]),
                "TLS (rustls)": lambda: _native.Store.memcached([tls], tls=True, tls_ca_file=str(where / "ca.pem")),
            }
            big = b"\x01" * 130_000
            print("| connection | first request (connect, handshake) | get, 20 B value | get, 130 KB value |")
            print("|---|---:|---:|---:|")
            for name, make in stores.items():
                store = make()
                start_time = time.perf_counter()
                store.set_raw("small", b"x" * 20)
                first = (time.perf_counter() - start_time) * 1e6
                store.set_raw("big", big)
                small_t, big_t = timed(store, "small"), timed(store, "big")
                print(f"| {name} | {first:.0f} µs | {summary(small_t)} | {summary(big_t)} |")
        finally:
            for proc in (plain_proc, tls_proc):
                proc.terminate()
                proc.wait(10)
    print(f"\n{ROUNDS} round trips each, Python {sys.version.split()[0]}, memcached on 127.0.0.1.")


if __name__ == "__main__":
    main()
