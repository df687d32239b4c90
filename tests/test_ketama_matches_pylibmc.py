"""Several servers are spread like pylibmc/libmemcached (SPEC §2, ketama):
keys that pylibmc placed on three weighted memcached servers
(``behaviors={"ketama_weighted": True}``, Listy's distribution) are found by
Listy's client, each on the server Listy's ring chooses. (pylibmc's plain
``{"ketama": True}`` is another algorithm; the engine has it, the Python
``Store`` does not offer it.)"""

from __future__ import annotations

import random

import pytest

from listy import _native
from tests.conftest import STORE, Memcached

pylibmc = pytest.importorskip("pylibmc", reason="pip install pylibmc (requirements-dev.txt)")

pytestmark = [
    pytest.mark.memcached,
    pytest.mark.skipif(STORE != "memcached", reason="about memcached pools (runs with LISTY_TEST_STORE=memcached)"),
]

SERVERS = 3


@pytest.fixture(scope="module")
def servers():  # type: ignore[no-untyped-def]
    started = [Memcached().start() for _ in range(SERVERS)]
    try:
        yield started
    finally:
        for server in started:  # scratch servers: no need for a graceful stop
            if server.proc is not None:
                server.proc.kill()
                server.proc.wait()


def keys(n: int = 3000) -> list[str]:
    rng = random.Random(7)
    alphabet = [chr(c) for c in range(0x21, 0x7F)]
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append(f"key-{i}")
        elif kind == 1:
            out.append(f"tly:testapp.Follow:{rng.getrandbits(32):08x}:{i:x}:follower_id={i}")
        elif kind == 2:
            out.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 250))))
        else:
            out.append(f"clé-{i}-ü")
    return list(dict.fromkeys(k for k in out if len(k.encode()) <= 250))


@pytest.mark.parametrize("weights", [(1, 2, 3), (1, 1, 1), (5, 1, 2)])
def test_keys_placed_by_pylibmc_are_found_where_our_ring_puts_them(servers, weights):
    for server in servers:
        pylibmc.Client([server.address]).flush_all()
    theirs = pylibmc.Client(
        [f"{s.address}:{w}" for s, w in zip(servers, weights)], behaviors={"ketama_weighted": True}
    )
    ours = _native.Store.memcached([f"{s.address} {w}" for s, w in zip(servers, weights)])
    direct = {s.address: pylibmc.Client([s.address]) for s in servers}  # one server: no hashing
    names = keys()
    for key in names:
        assert theirs.set(key, key.encode()), key

    where: dict[str, str] = {}
    for address, client in direct.items():
        for start in range(0, len(names), 500):
            for key in client.get_multi(names[start : start + 500]):
                assert key not in where, f"{key!r} on two servers"
                where[key] = address
    assert len(where) == len(names)

    wrong = [k for k in names if ours.server_for(k) != where[k]]
    missing = [k for k in names if ours.get_raw(k) != k.encode()]
    per_server = {a: sum(1 for k in names if where[k] == a) for a in direct}
    assert not wrong, f"{len(wrong)} of {len(names)} keys on another server, e.g. {wrong[:3]}"
    assert not missing, f"{len(missing)} of {len(names)} keys not found, e.g. {missing[:3]}"
    counts = [per_server[s.address] for s in servers]
    heaviest, lightest = weights.index(max(weights)), weights.index(min(weights))
    assert all(counts), counts
    if max(weights) > min(weights):  # the weights show in the spread
        assert counts[heaviest] > counts[lightest], counts
