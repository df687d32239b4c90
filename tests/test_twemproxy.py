"""Listy through twemproxy (nutcracker), with the configuration that
``docs/deployment.md`` recommends: ``example/twemproxy.yml``, ports swapped
for free ones. Skipped only when nutcracker is not installed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from listy.exceptions import CacheUnavailable
from listy.store import get_store
from tests.conftest import Memcached, free_port, reset_listy
from tests.testapp.models import Follow

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "example" / "twemproxy.yml"
NUTCRACKER = shutil.which("nutcracker") or ("/usr/sbin/nutcracker" if os.path.exists("/usr/sbin/nutcracker") else None)

pytestmark = [
    pytest.mark.skipif(NUTCRACKER is None, reason="nutcracker (twemproxy) is not installed"),
    pytest.mark.django_db(transaction=True),
]


def wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"nutcracker exited with {proc.returncode}") from None
            time.sleep(0.05)
    raise RuntimeError("nutcracker did not start")


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[str, Memcached]]:
    """A memcached of its own behind nutcracker; Listy pointed at the proxy."""
    server = Memcached().start()
    listen = free_port()
    text = CONFIG.read_text()
    assert "127.0.0.1:22121" in text and "127.0.0.1:11211:1" in text
    text = text.replace("127.0.0.1:22121", f"127.0.0.1:{listen}")
    text = text.replace("127.0.0.1:11211:1", f"{server.address}:1")
    conf = tmp_path / "twemproxy.yml"
    conf.write_text(text)
    check = subprocess.run([NUTCRACKER, "-t", "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen(
        [NUTCRACKER, "-c", str(conf), "-s", str(free_port()), "-o", str(tmp_path / "nutcracker.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    before = os.environ.get("LISTY_SERVERS")
    try:
        wait_for_port(listen, proc)
        os.environ["LISTY_SERVERS"] = f"127.0.0.1:{listen}"
        reset_listy()
        yield f"127.0.0.1:{listen}", server
    finally:
        if before is None:
            os.environ.pop("LISTY_SERVERS", None)
        else:
            os.environ["LISTY_SERVERS"] = before
        reset_listy()
        proc.terminate()
        proc.wait(10)
        server.stop()


def test_add_get_delete_through_twemproxy(users, proxy, django_assert_num_queries):
    address, server = proxy
    me, you, other = users[:3]
    assert get_store().kind == "memcached"
    assert get_store().server_for(Follow.cache.key(follower=me)) == address

    assert Follow.cache.add(follower=me, followee=you) is not None
    Follow.cache.add(follower=me, followee=other)
    assert Follow.cache.count(follower=me) == 2  # builds the counter
    Follow.cache.reset_local_stats()
    with django_assert_num_queries(0):  # add() built the list: a hit, through the proxy
        assert [f.followee_id for f in Follow.cache.get(follower=me)] == [other.pk, you.pk]
        assert bool(Follow.cache.get(follower=me, followee=you))
        assert Follow.cache.count(follower=me) == 2
    assert Follow.cache.delete(follower=me, followee=you)
    with django_assert_num_queries(0):
        assert [f.followee_id for f in Follow.cache.get(follower=me)] == [other.pk]
        assert not Follow.cache.get(follower=me, followee=you)
    assert Follow.cache.misses == 0

    # the values really are on the server behind the proxy
    import listy._native as native

    direct = native.Store.memcached([server.address])
    assert direct.get_raw(Follow.cache.key(follower=me)) is not None

    # flush_all() of a model is a new generation (one cas), so it works through
    # the proxy; the next read rebuilds from the database
    Follow.cache.flush_all()
    with django_assert_num_queries(1):
        assert len(Follow.cache.get(follower=me)) == 1
    assert list(Follow.cache.determine_coherency(check_against_db=True))


def test_twemproxy_does_not_forward_stats_or_flush_all(users, proxy):
    from io import StringIO

    from django.core.management import call_command

    with pytest.raises(CacheUnavailable):
        get_store().stats()
    with pytest.raises(CacheUnavailable):
        get_store().flush_all()
    out = StringIO()
    call_command("listy_stats", stdout=out)
    assert "server statistics unavailable" in out.getvalue()
    # the proxy still serves Listy after refusing them
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    assert len(Follow.cache.get(follower=me)) == 1
