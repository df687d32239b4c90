"""Fixtures of Listy's test-suite.

With ``LISTY_TEST_STORE=memcached`` the session starts its own
``memcached -U 0 -l 127.0.0.1 -p <free port>`` and points Listy at it through
``LISTY_SERVERS``; every test starts from an empty store.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STORE = os.environ.get("LISTY_TEST_STORE", "local")

# `pytester` runs a user's pytest with the listy.testing plugin (tests/test_testing.py)
pytest_plugins = ["pytester"]
MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"


#: Listy settings that give up on a dead or frozen server fast (fault tests).
FAST_SETTINGS = {
    "SERVERS": ["local"],
    "KEY_PREFIX": "t",
    "CONNECT_TIMEOUT": 0.05,
    "TIMEOUT": 0.2,
    "REPAIR_CHECK_INTERVAL": None,
}

_TX_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|SAVEPOINT|RELEASE|ROLLBACK)", re.I)


def sql_statements(captured) -> list[str]:  # type: ignore[no-untyped-def]
    """The SQL a ``CaptureQueriesContext`` saw, transaction control left out."""
    return [q["sql"] for q in captured.captured_queries if not _TX_CONTROL.match(q["sql"])]


def process_env(memcached_address: str, repair_interval: float | None = None) -> dict[str, str]:
    """The environment of a second OS process that shares this test's
    database and memcached server (``repair_interval``: its
    ``REPAIR_CHECK_INTERVAL``, as in production; none by default)."""
    from django.db import connection

    env = dict(os.environ)
    env["LISTY_TEST_DB_NAME"] = str(connection.settings_dict["NAME"])
    env["LISTY_SERVERS"] = memcached_address
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "python"), env.get("PYTHONPATH", "")])
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["PYTHONWARNINGS"] = "error"  # as pyproject's filterwarnings: a warning there fails too
    if repair_interval is not None:
        env["LISTY_TEST_REPAIR_INTERVAL"] = str(repair_interval)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Memcached:
    """A memcached server of our own on 127.0.0.1."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server's process id (``kill -STOP``/``-CONT`` partitions)."""
        assert self.proc is not None, "memcached is not running"
        return self.proc.pid

    def start(self) -> Memcached:
        self.proc = subprocess.Popen(
            [MEMCACHED, "-U", "0", "-l", "127.0.0.1", "-p", str(self.port), "-m", "64", "-u", "root"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"memcached exited with {self.proc.returncode}") from None
                time.sleep(0.05)
        raise RuntimeError("memcached did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def reset_listy() -> None:
    from listy import store
    from listy.conf import listy_settings

    listy_settings.cache_clear()
    store.reset()


@pytest.fixture(scope="session", autouse=True)
def memcached_server() -> Iterator[Memcached | None]:
    """The session's memcached (None with the embedded store)."""
    if STORE != "memcached":
        os.environ.pop("LISTY_SERVERS", None)
        yield None
        return
    server = Memcached().start()
    os.environ["LISTY_SERVERS"] = server.address
    reset_listy()
    try:
        yield server
    finally:
        server.stop()
        os.environ.pop("LISTY_SERVERS", None)


@pytest.fixture(autouse=True)
def empty_store(memcached_server: Memcached | None) -> Iterator[None]:
    """Every test starts from an empty store and zeroed statistics."""
    from listy import intents, registry, repair, worker
    from listy.store import get_store

    worker.stop()
    get_store().flush_all()
    repair.reset()
    intents.reset()
    for model in registry.all_models():
        for client in registry.clients(model):
            client.reset_local_stats()
    yield


@pytest.fixture
def users(transactional_db: None) -> list:
    """Five users, committed."""
    from django.contrib.auth.models import User

    return [User.objects.create(username=f"user{i}") for i in range(5)]


@pytest.fixture
def other_process(transactional_db: None, memcached_server: Memcached | None):  # type: ignore[no-untyped-def]
    """Runs ``tests/crossproc.py`` in a second OS process that shares the
    database and the memcached server; returns its stdout lines."""
    if memcached_server is None:
        pytest.skip("the embedded store is not shared between processes")
    env = process_env(memcached_server.address)

    def run(*args: object) -> list[str]:
        done = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "crossproc.py"), *map(str, args)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise AssertionError(f"second process failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done.stdout.split()

    return run
