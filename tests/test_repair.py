"""Durable repair of failed writes (SPEC §3.7, ``listy.repair``): keys that a
failed write left go to the ``PendingRepair`` table, and every process
deletes them from the cache before it serves lists again (at once after a
fault of its own, else within ``REPAIR_CHECK_INTERVAL`` seconds)."""

from __future__ import annotations

import time

import pytest

from listy import bypass
from django.conf import settings
from django.db import transaction
from django.test import override_settings

from listy import repair
from listy.exceptions import ConfigError
from listy.models import PendingRepair
from listy.store import get_store
from tests.conftest import STORE, free_port, reset_listy
from tests.testapp.models import Follow

pytestmark = pytest.mark.django_db(transaction=True)

needs_memcached = pytest.mark.skipif(
    STORE != "memcached", reason="the periodic check is off with the embedded store (nothing is shared)"
)


def listy(**extra):  # type: ignore[no-untyped-def]
    """LISTY settings of the suite with some keys changed."""
    return {"SERVERS": ["local"], "KEY_PREFIX": "t", "REPAIR_CHECK_INTERVAL": None, **extra}


def stale_list(me, you, him):  # type: ignore[no-untyped-def]
    """A cached list of ``me`` that misses a row the database has (written
    without signals, as a write whose cache update was lost), and its key."""
    Follow.cache.add(follower=me, followee=you)
    assert [f.followee_id for f in Follow.cache.get(follower=me)] == [you.pk]
    with bypass(Follow):  # a write the cache misses
        Follow.objects.bulk_create([Follow(follower=me, followee=him)])
    assert [f.followee_id for f in Follow.cache.get(follower=me)] == [you.pk]
    return Follow.cache.key(follower=me)


def test_meta_key_is_the_engines(users):
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    assert get_store().get_raw(repair.meta_key("t", "testapp.Follow")) is not None
    assert repair.meta_key("t", "x" * 300).startswith("tly:" + "x" * 196)
    assert len(repair.meta_key("t", "x" * 300)) == 233
    assert repair.meta_key("a:b", "app.M+x") == "a%3Ably:app.M+x:m"


def test_a_fault_makes_the_next_read_repair_at_once(users, django_assert_num_queries):
    me, you, him = users[:3]
    key = stale_list(me, you, him)
    PendingRepair.objects.create(key=key, model="testapp.Follow")  # as another process would
    with django_assert_num_queries(0):  # no fault, no interval: the table is not read
        assert [f.followee_id for f in Follow.cache.get(follower=me)] == [you.pk]
    repair.note_fault()
    assert {f.followee_id for f in Follow.cache.get(follower=me)} == {you.pk, him.pk}
    assert repair.pending() == []
    with django_assert_num_queries(0):  # the pass was good: back to no queries
        assert len(Follow.cache.get(follower=me)) == 2


def served_from_cache(read, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    """``read()`` again until it is served from the cache (the background
    worker's first look done); returns it."""
    deadline = time.monotonic() + timeout
    while True:
        got = read()
        if got.from_cache or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


@needs_memcached
def test_the_background_worker_repairs_what_another_process_queued(users, django_assert_num_queries):
    """A key queued by another process is repaired by this process's worker
    within its interval, and no read runs SQL to look for it."""
    me, you, him = users[:3]
    key = stale_list(me, you, him)
    with override_settings(LISTY=listy(REPAIR_CHECK_INTERVAL=0.3)):
        assert len(served_from_cache(lambda: Follow.cache.get(follower=me))) == 1
        PendingRepair.objects.create(key=key, model="testapp.Follow")
        with django_assert_num_queries(0):  # a hit never looks at the table
            assert len(Follow.cache.get(follower=me)) == 1  # the window: until the next look
        deadline = time.monotonic() + 5
        while repair.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert repair.pending() == []
        got = served_from_cache(lambda: Follow.cache.get(follower=me))
        assert {f.followee_id for f in got} == {you.pk, him.pk} and got.from_cache
        with django_assert_num_queries(0):
            assert len(Follow.cache.get(follower=me)) == 2


@needs_memcached
def test_hits_run_no_sql_across_many_check_intervals(users, django_assert_num_queries):
    """SPEC §3.10: the look at the repairs runs in the background worker, so
    cached reads in a loop spanning several intervals run no SQL at all."""
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    with override_settings(LISTY=listy(REPAIR_CHECK_INTERVAL=0.05)):
        served_from_cache(lambda: Follow.cache.get(follower=me))
        Follow.cache.count(follower=me)
        deadline = time.monotonic() + 0.5  # ten intervals
        reads = 0
        with django_assert_num_queries(0):
            while time.monotonic() < deadline:
                assert [f.followee_id for f in Follow.cache.get(follower=me)] == [you.pk]
                assert Follow.cache.count(follower=me) == 1
                reads += 1
        assert reads > 10


def test_rows_of_models_this_process_does_not_serve_stay(users):
    me, you = users[:2]
    PendingRepair.objects.create(key="tly:other.Model:m", model="other.Model")
    repair.note_fault()
    Follow.cache.add(follower=me, followee=you)
    assert len(Follow.cache.get(follower=me)) == 1
    assert repair.pending() == ["tly:other.Model:m"]


def test_a_row_written_again_since_it_was_read_is_kept(users):
    repair._save("default", "testapp.Follow", ["k1", "k2"])
    rows = dict(PendingRepair.objects.values_list("key", "created"))
    first = {k: (pk, rows[k]) for k, pk in PendingRepair.objects.values_list("key", "pk")}
    time.sleep(0.002)
    repair._save("default", "testapp.Follow", ["k1"])  # a write failed on k1 again
    assert PendingRepair.objects.count() == 2
    repair._delete("default", [first["k1"], first["k2"]])
    assert repair.pending() == ["k1"]


def test_a_write_whose_keys_are_unknown_queues_the_meta_key(users, monkeypatch, caplog):
    """A fresh process writing while the server is down cannot name the
    keys it missed (the engine never read the registry): the model's meta
    key is queued, so the model moves to a new generation when it is back."""
    me, you = users[:2]
    monkeypatch.setenv("LISTY_SERVERS", f"127.0.0.1:{free_port()}")  # nothing listens
    reset_listy()
    try:
        with override_settings(LISTY=listy(CONNECT_TIMEOUT=0.05, TIMEOUT=0.1)):
            Follow.cache.add(follower=me, followee=you)
            assert repair.pending() == [repair.meta_key("t", "testapp.Follow")]
            # reads meanwhile come from the database
            got = Follow.cache.get(follower=me)
            assert not got.from_cache and [f.followee_id for f in got] == [you.pk]
    finally:
        monkeypatch.undo()
        reset_listy()
    # the server answers: the next read repairs (a new generation), then serves
    assert [f.followee_id for f in Follow.cache.get(follower=me)] == [you.pk]
    assert repair.pending() == []


def test_a_pass_inside_a_transaction_leaves_it_usable(users):
    me, you, him = users[:3]
    key = stale_list(me, you, him)
    PendingRepair.objects.create(key=key, model="testapp.Follow")
    repair.note_fault()
    with transaction.atomic():
        assert len(Follow.cache.get(follower=me)) == 2
        Follow.cache.add(follower=him, followee=me)
    assert repair.pending() == []
    assert len(Follow.cache.get(follower=him)) == 1


def test_reads_work_without_the_table(users, caplog):
    """A project that did not migrate the listy app: faults are still
    repaired by the process that saw them; nothing raises."""
    from django.db import connection

    me, you = users[:2]
    with connection.schema_editor() as editor:
        editor.delete_model(PendingRepair)
    try:
        repair._save("default", "testapp.Follow", ["k1"])  # logged, not raised
        repair.note_fault()
        Follow.cache.add(follower=me, followee=you)
        with transaction.atomic():
            assert len(Follow.cache.get(follower=me)) == 1
            assert Follow.objects.count() == 1  # the transaction is still usable
    finally:
        with connection.schema_editor() as editor:
            editor.create_model(PendingRepair)
    assert "cannot be used" in caplog.text


def test_interval_setting_is_checked():
    from listy.conf import listy_settings

    for bad in (-1, "soon"):
        with override_settings(LISTY=listy(REPAIR_CHECK_INTERVAL=bad)), pytest.raises(ConfigError):
            listy_settings()
    with override_settings(LISTY={"KEY_PREFIX": "t"}):
        assert listy_settings().repair_check_interval == 1.0


def test_a_count_built_while_a_write_is_in_flight_counts_it_once(users):
    """The write commits, a reader builds the list (its SELECT sees the row)
    and counts it, then the write's cache update arrives: the record reaches
    a list that already holds the row and changes nothing, so neither does it
    change the count. (An ``incr`` of a counter built from a COUNT would count
    it twice: found by tests/test_stress.py on MariaDB.)"""
    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.flush_all()  # nothing cached: the next count builds the list
    client = Follow.cache
    source = client.source
    in_flight: list[Follow] = []

    def rows_after_a_commit(*args):  # type: ignore[no-untyped-def]
        # another process's write: committed before our SELECT runs, its
        # cache update not sent yet
        if not in_flight:
            in_flight.extend(Follow.objects.bulk_create([Follow(follower=me, followee=him)]))
        return source.rows(*args)

    index, values = client._index_for({"follower": me})
    assert client.engine.count(index, values, rows_after_a_commit, source.count) == 2
    for writer, op in client.plan_add(in_flight[0]):  # the write's cache update arrives
        writer._run_safely(op)
    assert Follow.objects.filter(follower=me).count() == 2
    assert Follow.cache.count(follower=me) == 2
    day = in_flight[0].created
    assert Follow.cache.daily_count(follower=me, created=day) == 2


def _commit_without_cache_work(write):  # type: ignore[no-untyped-def]
    """Runs ``write`` in a transaction that commits (the row and its write
    intent) and returns its cache work, not run yet: a process whose
    ``on_commit`` work is still to come."""
    from django.db import connection

    with transaction.atomic():
        result = write()
        work = [item[1] for item in connection.run_on_commit]
        connection.run_on_commit.clear()
    return result, work


@pytest.mark.skipif(STORE != "memcached", reason="intents need a shared store and a background worker")
@pytest.mark.parametrize("bucket", ["total", "day"])
def test_a_model_wide_counter_built_while_a_write_is_in_flight_counts_it_once(users, bucket):
    """A committed write's cache work is still to come when another process
    counts the whole model: the counter holds the row from the COUNT, and
    the write's tagged move, landing after, is skipped. Later writes move it
    as usual. (Without the intent's tag the row was counted twice until the
    counters' epoch ended.)"""
    from listy import intents

    me, you, him = users[:3]
    interval = {"REPAIR_CHECK_INTERVAL": 3600.0, "INTENT_WINDOW": 3600.0}
    with override_settings(LISTY={**settings.LISTY, **interval}):
        assert intents.enabled()
        Follow.cache.add(follower=me, followee=you)
        Follow.cache.flush_all()
        row, in_flight = _commit_without_cache_work(lambda: Follow.cache.add(follower=me, followee=him))
        assert in_flight and intents.pending(), "the row and its intent are committed"

        def counted() -> int:
            if bucket == "day":
                return Follow.cache.daily_count(created=row.created)
            return Follow.cache.count()

        assert counted() == Follow.objects.count() == 2  # built now, the write in flight
        for work in in_flight:  # its cache work lands last
            work()
        assert counted() == Follow.objects.count() == 2
        Follow.cache.add(follower=you, followee=him)
        assert Follow.cache.delete(follower=me, followee=you)
        assert counted() == Follow.objects.count() == 2


def _base_change(client, pk, **values):  # type: ignore[no-untyped-def]
    """One process's committed change of row ``pk`` and its cache update,
    not sent yet."""
    model = client.model
    before = client.snapshot(model._base_manager.get(pk=pk))  # not from the cache
    model.objects.filter(pk=pk).update(**values)
    return client.plan_change(before, model._base_manager.get(pk=pk))


def test_a_soft_delete_arriving_after_a_later_revival_is_settled(users):
    """Two processes flip one row: a soft delete commits, then a revival; the
    revival's cache update lands first, the soft delete's tombstone last. The
    late writer looks at the row once more after its frames landed and writes
    the database's state: the row stays listed, as the database has it."""
    from tests.testapp.models import Friend

    me, you = users[:2]
    client = Friend.cache
    row = client.add(follower=me, followee=you)
    assert [f.pk for f in client.get(follower=me)] == [row.pk]
    assert client.count() == 1  # the model-wide counter is cached from here on
    soft_delete = _base_change(client, row.pk, hidden=True)  # in flight
    revival = _base_change(client, row.pk, hidden=False)
    for writer, op in revival:  # arrives first
        writer._run_safely(op)
    for writer, op in soft_delete:  # arrives last
        writer._run_safely(op)
    assert [f.pk for f in client.get(follower=me)] == [row.pk]
    assert [f.pk for f in client.get(follower=me, followee=you)] == [row.pk]
    assert client.count(follower=me) == 1
    # the settle moved frames only: each writer's counter move arrived once
    assert client.count() == Friend.objects.count() == 1


def test_two_saves_of_one_row_arriving_in_the_other_order_are_settled(users):
    """The same for two saves that move a row between lists."""
    me, you, him = users[:3]
    row = Follow.cache.add(follower=me, followee=you)
    first = _base_change(Follow.cache, row.pk, followee=him)
    second = _base_change(Follow.cache, row.pk, followee=you)
    for writer, op in second + first:  # the first save's update lands last
        writer._run_safely(op)
    assert [f.followee_id for f in Follow.cache.get(follower=me)] == [you.pk]
    assert [f.pk for f in Follow.cache.get(follower=me, followee=you)] == [row.pk]
    assert list(Follow.cache.get(follower=me, followee=him)) == []


def test_an_orm_delete_through_a_stale_instance_still_empties_the_lists(users):
    """The instance says soft-deleted, the database says revived since: the
    delete's cache work follows the database (or, without row locks, sends
    final tombstones anyway)."""
    from django.db import connection

    from tests.testapp.models import Friend

    me, you = users[:2]
    row = Friend.cache.add(follower=me, followee=you)
    assert Friend.cache.delete(follower=me, followee=you) is True
    stale = Friend._base_manager.get(pk=row.pk)
    assert stale.hidden is True
    assert Friend.cache.add(follower=me, followee=you).pk == row.pk  # revived
    assert [f.pk for f in Friend.cache.get(follower=me)] == [row.pk]
    stale.delete()
    assert list(Friend.cache.get(follower=me)) == []
    assert list(Friend.cache.get(follower=me, followee=you)) == []
    assert Friend.cache.get_one(row.pk) is None
    assert Friend.cache.count(follower=me) == 0
    if connection.features.has_select_for_update:
        assert Friend.cache.count() == Friend.objects.count() == 0


def test_a_revival_landing_after_the_row_was_deleted_stays_hidden(users):
    """Revived, soft-deleted, then deleted for good while no list held it;
    the revival's frames land last. The delete buried the row (final
    tombstones), so they stay hidden."""
    from tests.testapp.models import Friend

    me, you = users[:2]
    client = Friend.cache
    row = client.add(follower=me, followee=you)
    assert client.delete(follower=me, followee=you) is True
    revival = _base_change(client, row.pk, hidden=False)  # in flight
    for writer, op in _base_change(client, row.pk, hidden=True):
        writer._run_safely(op)
    Friend._base_manager.get(pk=row.pk).delete()  # no list holds it now
    for writer, op in revival:  # lands last
        writer._run_safely(op)
    assert list(client.get(follower=me)) == []
    assert list(client.get(follower=me, followee=you)) == []
    assert client.get_one(row.pk) is None


def test_counter_epoch_recounts_the_model_wide_counters(users, django_assert_num_queries):
    """``LISTY['COUNTER_EPOCH']``: a model-wide counter is counted afresh
    once its epoch ends (so the known race leaves it off for one epoch at
    most); a list's counts never need it."""
    from django.conf import settings

    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    with override_settings(LISTY={**settings.LISTY, "COUNTER_EPOCH": 0.5}):
        # start just after an epoch began, so that the next reads share it
        time.sleep(0.5 - time.time() % 0.5 + 0.01)
        assert Follow.cache.count() == 1  # built: one COUNT
        assert Follow.cache.count(follower=me) == 1
        with django_assert_num_queries(0):
            assert Follow.cache.count() == 1
        time.sleep(0.5)
        with django_assert_num_queries(1):  # a new epoch: counted again
            assert Follow.cache.count() == 1
        with django_assert_num_queries(0):
            assert Follow.cache.count(follower=me) == 1
    for bad in (0, -1, "x", True):
        with override_settings(LISTY={**settings.LISTY, "COUNTER_EPOCH": bad}), pytest.raises(ConfigError):
            Follow.cache.count()
