"""A partition: memcached frozen (``kill -STOP``) while a write runs, then
thawed (``kill -CONT``). SPEC §3.7: the write reaches the database, reads
meanwhile come from the database, and afterwards no process serves the list
that missed the write: not this one (it saw the fault), nor a second OS
process that did nothing during the partition (the ``PendingRepair`` table
and its ``REPAIR_CHECK_INTERVAL`` look)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from django.test import override_settings

from listy import _native, repair
from listy.models import PendingRepair
from tests.conftest import FAST_SETTINGS, ROOT, STORE, process_env
from tests.testapp.models import Follow

pytestmark = [
    pytest.mark.crossprocess,
    pytest.mark.memcached,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(STORE != "memcached", reason="needs a memcached server to freeze"),
]

FAST = FAST_SETTINGS
INTERVAL = 0.2  # the second process's REPAIR_CHECK_INTERVAL


class Worker:
    """``tests/workers.py serve``: a process that stays up across the partition."""

    def __init__(self, memcached_address: str) -> None:
        env = process_env(memcached_address, repair_interval=INTERVAL)
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "workers.py"), "serve"],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.read() == {"ready": True}

    def read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"worker died: {self.proc.stderr.read() if self.proc.stderr else ''}")
        return json.loads(line)

    def ask(self, *command: object) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(map(str, command)) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("quit")
            except (AssertionError, OSError, ValueError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()  # else each is an unclosed file (ResourceWarning) when collected


def cached_read(worker: Worker, follower: int, expect: list[int] | None = None) -> dict:
    """The second process's read, asked again until it is served from the
    cache (within a few of its intervals); every answer must be right."""
    deadline = time.monotonic() + 20 * INTERVAL + 5
    while True:
        seen = worker.ask("get", follower)
        if expect is not None:
            assert seen["followees"] == expect, seen
        if seen["from_cache"] or time.monotonic() > deadline:
            return seen
        time.sleep(INTERVAL / 4)


def followees(records) -> list[int]:  # type: ignore[no-untyped-def]
    return [f.followee_id for f in records]


def test_partition_leaves_no_stale_read_in_any_process(users, memcached_server, django_assert_num_queries):
    me, you, him = users[:3]
    worker = Worker(memcached_server.address)
    stopped = False
    try:
        with override_settings(LISTY=FAST):
            first = Follow.cache.add(follower=me, followee=you)
            assert followees(Follow.cache.get(follower=me)) == [you.pk]
            assert Follow.cache.count(follower=me) == 1
            # the second process reads (and caches) the same list, then idles;
            # it serves from the cache once its background worker looked at
            # the repairs (reads before that go to the database)
            seen = cached_read(worker, me.pk)
            assert seen["followees"] == [you.pk] and seen["from_cache"] and seen["count"] == 1
            key = Follow.cache.key(follower=me)
            raw = _native.Store.memcached([memcached_server.address]).get_raw(key)
            assert raw is not None

            os.kill(memcached_server.pid, signal.SIGSTOP)
            stopped = True
            # a write while memcached is frozen: it reaches the database only
            second = Follow.cache.add(follower=me, followee=him)
            assert second is not None and Follow.objects.filter(pk=second.pk).exists()
            assert key in repair.pending()  # queued for every process
            # reads meanwhile fall back to the database, with the right data
            for _ in range(2):
                got = Follow.cache.get(follower=me)
                assert followees(got) == [him.pk, you.pk] and not got.from_cache
                assert Follow.cache.count(follower=me) == 2
                assert Follow.cache.get_one(second.pk) == second
            time.sleep(INTERVAL)  # the partition lasts longer than the interval
            os.kill(memcached_server.pid, signal.SIGCONT)
            stopped = False

            # memcached still holds the list as it was before the write
            # (unless the frozen prepend was processed on thaw)
            after = _native.Store.memcached([memcached_server.address]).get_raw(key)
            stale_in_cache = after == raw

            # the second process, which saw nothing of the partition, looks
            # at the table within its interval: never the stale list
            seen = worker.ask("get", me.pk)
            assert seen["followees"] == [him.pk, you.pk], seen
            assert seen["count"] == 2, seen
            assert worker.ask("one", second.pk) == {"pk": second.pk}
            again = cached_read(worker, me.pk, expect=[him.pk, you.pk])
            assert again["followees"] == [him.pk, you.pk] and again["from_cache"], again

            # this process: every read is right; once the server is marked
            # alive again, the cache is used
            deadline = time.monotonic() + 15
            while True:
                got = Follow.cache.get(follower=me)
                assert followees(got) == [him.pk, you.pk]
                assert Follow.cache.count(follower=me) == 2
                if got.from_cache or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert got.from_cache
            with django_assert_num_queries(0):
                assert followees(Follow.cache.get(follower=me)) == [him.pk, you.pk]
                assert Follow.cache.get_one(first.pk) == first
                assert Follow.cache.count(follower=me) == 2
            assert PendingRepair.objects.count() == 0
            print(f"\npartition: stale list left in memcached after CONT: {stale_in_cache}; "
                  "stale reads: 0 here, 0 in the second process")
    finally:
        if stopped:
            os.kill(memcached_server.pid, signal.SIGCONT)
        worker.close()
