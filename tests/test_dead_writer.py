"""A writer killed between COMMIT and its cache work (SPEC §3.1): its write
intent, committed with the row, is found by another process's background
worker, which starts the model's lists afresh; no list stays stale past
``INTENT_WINDOW`` plus one look. A writer that dies before COMMIT leaves
nothing (its intent rolls back with it)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from django.test import override_settings

from listy import intents
from tests.conftest import ROOT, STORE, process_env
from tests.testapp.models import Follow

pytestmark = [
    pytest.mark.crossprocess,
    pytest.mark.memcached,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(STORE != "memcached", reason="the embedded store dies with its process"),
]

INTERVAL = 0.1
WINDOW = 0.5


def settings(**extra):  # type: ignore[no-untyped-def]
    from django.conf import settings as django_settings

    return {**django_settings.LISTY, "REPAIR_CHECK_INTERVAL": INTERVAL, "INTENT_WINDOW": WINDOW, **extra}


def run_child(memcached_address: str, *args: object) -> subprocess.CompletedProcess[str]:
    env = process_env(memcached_address, repair_interval=INTERVAL)
    return subprocess.run(
        [sys.executable, str(ROOT / "tests" / "crossproc.py"), *map(str, args)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


def test_a_writer_killed_after_commit_leaves_no_list_stale(users, memcached_server):
    me, you, him = users[:3]
    with override_settings(LISTY=settings()):
        Follow.cache.add(follower=me, followee=you)
        deadline = time.monotonic() + 10
        while not Follow.cache.get(follower=me).from_cache and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [f.followee_id for f in Follow.cache.get(follower=me)] == [you.pk]

        done = run_child(memcached_server.address, "add-then-die", me.pk, him.pk)
        assert done.returncode == 0, done.stderr
        pk = int(done.stdout.split()[0])
        assert Follow.objects.filter(pk=pk).exists()  # committed
        assert [i for i in intents.pending() if i[1] == "testapp.Follow"]  # and its intent with it
        started = time.monotonic()
        while True:
            got = Follow.cache.get(follower=me)
            if {f.followee_id for f in got} == {you.pk, him.pk}:
                break
            assert time.monotonic() - started < WINDOW + 20 * INTERVAL + 5, "the list stayed stale"
            time.sleep(INTERVAL / 2)
        took = time.monotonic() - started
        assert Follow.cache.count(follower=me) == 2
        assert Follow.cache.get_one(pk) is not None
        deadline = time.monotonic() + 5
        while intents.pending() and time.monotonic() < deadline:
            time.sleep(INTERVAL)
        assert intents.pending() == []
        print(f"\ndead writer: list right again after {took:.2f} s (window {WINDOW} s, look every {INTERVAL} s)")


def test_a_write_whose_cache_work_ran_leaves_no_intent(users, memcached_server):
    me, you = users[:2]
    with override_settings(LISTY=settings()):
        Follow.cache.add(follower=me, followee=you)
        deadline = time.monotonic() + 5
        while intents.pending() and time.monotonic() < deadline:
            time.sleep(INTERVAL)
        assert intents.pending() == []
        flushed_gen = Follow.cache.key(follower=me)
        time.sleep(WINDOW + 3 * INTERVAL)
        assert Follow.cache.key(follower=me) == flushed_gen  # nothing was started afresh


def test_a_writer_killed_before_commit_leaves_nothing(users, memcached_server):
    me, you = users[:2]
    with override_settings(LISTY=settings()):
        done = run_child(memcached_server.address, "add-then-die-before-commit", me.pk, you.pk)
        assert done.returncode == 0, done.stderr
        assert not Follow.objects.filter(follower=me).exists()
        assert intents.pending() == []
        assert list(Follow.cache.get(follower=me)) == []
