"""memcached down: reads fall back to the database, writes still reach it,
and the next successful contact serves no list that missed a write."""

from __future__ import annotations

import logging
import time

import pytest
from django.test import override_settings

from tests.conftest import FAST_SETTINGS, Memcached, free_port, reset_listy
from tests.testapp.models import Follow

pytestmark = pytest.mark.django_db(transaction=True)

FAST = FAST_SETTINGS


@pytest.fixture
def servers(monkeypatch):
    """Points Listy at the given servers for one test."""

    def use(address: str) -> None:
        monkeypatch.setenv("LISTY_SERVERS", address)
        reset_listy()

    yield use
    monkeypatch.undo()
    reset_listy()


def test_no_server_at_all(users, servers, caplog):
    me, you = users[:2]
    servers(f"127.0.0.1:{free_port()}")  # nothing listens there
    with override_settings(LISTY=FAST), caplog.at_level(logging.WARNING, logger="listy"):
        follow = Follow.cache.add(follower=me, followee=you)
        assert follow is not None
        got = Follow.cache.get(follower=me)
        assert [f.followee_id for f in got] == [you.pk]
        assert Follow.cache.count(follower=me) == 1
        assert Follow.cache.get_one(follow.pk) == follow
        assert Follow.cache.delete(follower=me, followee=you) is True
        assert not Follow.cache.get(follower=me)
    assert Follow.objects.count() == 0


def test_server_restart_serves_no_list_that_missed_writes(users, servers):
    me, you, him = users[:3]
    server = Memcached().start()
    try:
        servers(server.address)
        with override_settings(LISTY=FAST):
            Follow.cache.add(follower=me, followee=you)
            assert len(Follow.cache.get(follower=me)) == 1
            server.stop()
            Follow.cache.add(follower=me, followee=him)  # database only
            assert [f.followee_id for f in Follow.cache.get(follower=me)] == [him.pk, you.pk]
            server = Memcached(server.port).start()
            assert [f.followee_id for f in Follow.cache.get(follower=me)] == [him.pk, you.pk]
            assert Follow.cache.count(follower=me) == 2
    finally:
        server.stop()


def test_disable_cache_goes_to_the_database(users, django_assert_num_queries):
    import listy

    me, you = users[:2]
    direct = listy.ListCache(Follow, [("follower",)], disable_cache=True)
    direct.add(follower=me, followee=you)
    with django_assert_num_queries(1):
        assert [f.followee_id for f in direct.get(follower=me)] == [you.pk]
    assert not direct.get(follower=me).from_cache


def test_a_stalled_server_leaves_no_stale_list(users, servers, django_assert_num_queries):
    """memcached frozen (SIGSTOP) while a write runs: the write reaches the
    database only, the list it missed is repaired before it is served again."""
    import os
    import signal

    me, you, him = users[:3]
    server = Memcached().start()
    try:
        servers(server.address)
        with override_settings(LISTY=FAST):
            Follow.cache.add(follower=me, followee=you)
            assert [f.followee_id for f in Follow.cache.get(follower=me)] == [you.pk]
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                Follow.cache.add(follower=me, followee=him)
                assert [f.followee_id for f in Follow.cache.get(follower=me)] == [him.pk, you.pk]
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            # the pool may keep the server marked dead for a moment: every
            # read meanwhile is right (from the database), then the cache is
            # used again
            deadline = time.monotonic() + 15
            while True:
                got = Follow.cache.get(follower=me)
                assert [f.followee_id for f in got] == [him.pk, you.pk]
                if got.from_cache or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            with django_assert_num_queries(0):
                assert [f.followee_id for f in Follow.cache.get(follower=me)] == [him.pk, you.pk]
    finally:
        server.stop()


def test_a_write_report_names_its_faults_by_kind(users, servers):
    """The engine's write report says what kind of fault a write met: the
    repair decides on ``may_leave_stale_keys``, never on the message text."""
    me, you = users[:2]
    server = Memcached().start()
    try:
        servers(server.address)
        with override_settings(LISTY=FAST):
            Follow.cache.get(follower=me)  # the model's meta is known
            row = Follow.objects.create(follower=me, followee=you)
            client = Follow.cache
            server.stop()
            ((writer, op),) = client.plan_add(row)[:1]
            report = op()
            assert report["fault_kinds"] and set(report["fault_kinds"]) == {"unreachable"}
            assert report["may_leave_stale_keys"] is True
            assert len(report["faults"]) == len(report["fault_kinds"])
    finally:
        server.stop()
