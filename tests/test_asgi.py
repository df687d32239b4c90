"""End to end under a real ASGI server: uvicorn serves ``tests.asgi`` (an
async view reading a cached list, with the registry middleware) in its own
process, sharing this test's database and memcached; clients in threads
drive it concurrently."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import ROOT, Memcached, free_port, process_env
from tests.testapp.models import Follow

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(transactional_db: None, memcached_server: Memcached | None) -> Iterator[str]:
    """``http://127.0.0.1:<port>``: uvicorn serving the test project."""
    if memcached_server is None:
        pytest.skip("the embedded store is not shared between processes")
    pytest.importorskip("uvicorn")
    port = free_port()
    env = process_env(memcached_server.address)
    env["LISTY_TEST_MIDDLEWARE"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.asgi:application", "--port", str(port), "--log-level", "warning"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    raise RuntimeError(f"uvicorn did not start:\n{out}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def fetch(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_an_async_view_serves_cached_lists_under_uvicorn(users: list, server: str) -> None:
    for i, follower in enumerate(users):
        for followee in users[: i + 1]:
            Follow.cache.add(follower=follower, followee=followee)
    expected = {u.pk: list(Follow.objects.filter(follower=u).order_by("-pk").values_list("pk", flat=True)) for u in users}
    Follow.cache.flush_all()  # the server's first reads are misses
    rng = random.Random(13)
    targets = [rng.choice(users).pk for _ in range(400)]

    def one(pk: int) -> tuple[int, dict]:
        return pk, fetch(f"{server}/follows/{pk}/")

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, targets))
    for pk, body in results:
        assert body["pks"] == expected[pk]
        assert body["same"] is True, "one instance per primary key inside a request"
    assert all(body["cached"] for _, body in results[-100:]), "warm: served from the cache"
    # a write here is seen by the server's next read (shared memcached)
    me = users[0]
    new = Follow.cache.add(follower=me, followee=users[-1])
    body = fetch(f"{server}/follows/{me.pk}/")
    assert body["pks"] == [new.pk, *expected[me.pk]] and body["cached"]
    assert fetch(f"{server}/follows-sync/{me.pk}/")["pks"] == body["pks"]
