"""Incidents: the ``LISTY["ENABLED"]`` switch and the outage log.

ENABLED False: every read goes to the database, writes leave the cache
alone, and no list written while it was off is served once it is on again.
A memcached outage logs one WARNING per server per interval and a recovery
line, not one per read.
"""

from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.test import override_settings

from listy import events, outage, repair
from tests.conftest import FAST_SETTINGS, Memcached, free_port, reset_listy, sql_statements
from tests.testapp.models import Follow

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def clean_outages():
    outage.reset()
    events.reset()
    yield
    outage.reset()


@pytest.fixture
def servers(monkeypatch):
    """Points Listy at the given servers for one test."""

    def use(address: str) -> None:
        monkeypatch.setenv("LISTY_SERVERS", address)
        reset_listy()

    yield use
    monkeypatch.undo()
    reset_listy()


def off(**more):  # type: ignore[no-untyped-def]
    return override_settings(LISTY={**settings.LISTY, "ENABLED": False, **more})


def followees(me) -> list[int]:  # type: ignore[no-untyped-def]
    return [f.followee_id for f in Follow.cache.get(follower=me)]


def test_disabled_reads_go_to_the_database(users, django_assert_num_queries):
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    assert Follow.cache.get(follower=me).from_cache
    with off():
        with django_assert_num_queries(1):
            got = Follow.cache.get(follower=me)
        assert not got.from_cache and [f.followee_id for f in got] == [you.pk]
        with django_assert_num_queries(1):
            assert Follow.cache.count(follower=me) == 1


def test_lists_written_while_off_are_never_served_once_on(users):
    me, you, him, her = users[:4]
    Follow.cache.add(follower=me, followee=you)
    assert followees(me) == [you.pk]  # cached
    key = Follow.cache.key(follower=me)
    with off():
        Follow.cache.add(follower=me, followee=him)  # through Listy
        Follow.objects.create(follower=me, followee=her)  # through the ORM (signals)
        Follow.objects.filter(followee=you).get().delete()
        assert followees(me) == [her.pk, him.pk]
    # on again: the old list (you) is gone with its generation
    got = Follow.cache.get(follower=me)
    assert [f.followee_id for f in got] == [her.pk, him.pk]
    assert Follow.cache.key(follower=me) != key
    assert Follow.cache.get(follower=me).from_cache
    assert Follow.cache.count(follower=me) == 2


def test_disabled_writes_do_not_touch_the_cache_lists(users):
    """While off, the cache is left alone: nothing is prepended to the list
    (the lists are dropped as a whole, by generation)."""
    me, you = users[:2]
    Follow.cache.get(follower=me)  # cached, empty
    raw_key = Follow.cache.key(follower=me)
    from listy.store import get_store

    before = get_store().get_raw(raw_key)
    with off():
        Follow.cache.add(follower=me, followee=you)
    assert get_store().get_raw(raw_key) == before


def test_disabled_while_memcached_is_down_queues_the_drop_for_every_process(users, servers):
    """Off because memcached is down: the write cannot drop the lists now, so
    the model's meta key waits in the PendingRepair table; any process that
    reaches the cache deletes it before it serves a list."""
    me, you = users[:2]
    servers(f"127.0.0.1:{free_port()}")
    with off(**{k: v for k, v in FAST_SETTINGS.items() if k != "SERVERS"}):
        Follow.cache.add(follower=me, followee=you)
        assert repair.pending() == [repair.meta_key(settings.LISTY["KEY_PREFIX"], "testapp.Follow")]


def test_outage_warnings_are_rate_limited_with_a_recovery_line(users, servers, caplog):
    me, you = users[:2]
    server = Memcached().start()
    try:
        servers(server.address)
        with override_settings(LISTY={**FAST_SETTINGS, "SERVERS": [server.address], "OUTAGE_LOG_INTERVAL": 3600}):
            Follow.cache.add(follower=me, followee=you)
            assert followees(me) == [you.pk]
            server.stop()
            with caplog.at_level(logging.DEBUG, logger="listy"):
                for _ in range(5):
                    assert followees(me) == [you.pk]  # from the database
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1, [r.getMessage() for r in warnings]
            assert server.address in warnings[0].getMessage()
            assert events.metrics()["cache_faults"] >= 5
            caplog.clear()
            server = Memcached(server.port).start()
            with caplog.at_level(logging.WARNING, logger="listy"):
                for _ in range(50):
                    if Follow.cache.get(follower=me).from_cache:
                        break
                    import time

                    time.sleep(0.1)
            lines = [r.getMessage() for r in caplog.records]
            assert any("answers again" in line and server.address in line for line in lines), lines
            assert not outage.is_down()
    finally:
        server.stop()


def test_a_second_warning_after_the_interval():
    """The interval is per server: after it, one more WARNING with the count."""
    exc = RuntimeError("memcached server 10.0.0.9:11211 is unavailable: refused")
    with override_settings(LISTY={**settings.LISTY, "OUTAGE_LOG_INTERVAL": 0}):
        logger = logging.getLogger("listy")
        records: list[logging.LogRecord] = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = records.append  # type: ignore[method-assign]
        logger.addHandler(handler)
        try:
            for _ in range(3):
                outage.fault(exc, "read", Follow, "read of testapp.Follow")
        finally:
            logger.removeHandler(handler)
    assert len(records) == 3  # interval 0: every fault
    assert "still unavailable" in records[1].getMessage()
    assert outage.server_of(exc) == "10.0.0.9:11211"
