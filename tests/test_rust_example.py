"""The Rust example ``crates/listy-core/examples/shared_lists.rs`` shares
lists with Django over the session's memcached: it reads a list Django
cached (same pks, same values), refuses to invent a list that is not cached,
and a row it adds after the test inserted it into the database behind
Listy's back shows in ``Follow.cache.get(...)`` and in the counts, with no
query. The example is built with cargo (its own target dir is the only cache
between runs) and configured from ``manage.py listy_schema --json``.
"""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
from io import StringIO
from pathlib import Path

import pytest

import listy
from django.core.management import call_command
from django.db import connection

from listy.source import instant_micros
from listy.store import get_store
from tests.conftest import ROOT, STORE
from tests.testapp.models import Follow

pytestmark = [
    pytest.mark.memcached,
    pytest.mark.skipif(STORE != "memcached", reason="shares a memcached server (LISTY_TEST_STORE=memcached)"),
    pytest.mark.django_db(transaction=True),
]

NO_DATABASE = (
    "this service has no database to build a list that is not cached "
    "(Django builds it on its next read, or `manage.py listy_warm`)"
)


@pytest.fixture(scope="module")
def example() -> Path:
    """The example's executable, built now."""
    cargo = shutil.which("cargo")
    assert cargo, "cargo is needed to build the Rust example"
    done = subprocess.run(
        [cargo, "build", "-p", "listy-core", "--example", "shared_lists", "--message-format=json-render-diagnostics"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "shared_lists":
            return Path(message["executable"])
    raise AssertionError(f"cargo built no shared_lists executable:\n{done.stdout}")


@pytest.fixture
def rust(example, memcached_server, tmp_path):  # type: ignore[no-untyped-def]
    """Runs the example against the session's memcached with Follow's
    contract; returns (exit code, stdout lines, stderr)."""
    out = StringIO()
    call_command("listy_schema", "testapp.Follow", "--json", stdout=out)
    schema = tmp_path / "schema.json"
    schema.write_text(out.getvalue())

    def run(*args: str) -> tuple[int, list[str], str]:
        done = subprocess.run(
            [str(example), "--server", memcached_server.address, "--schema", str(schema), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, done.stdout.splitlines(), done.stderr

    return run


def row_of(follow: Follow) -> dict:
    """A Follow in the canonical JSON form of docs/rust.md."""
    return {
        "id": follow.pk,
        "created": instant_micros(follow.created),
        "follower_id": follow.follower_id,
        "followee_id": follow.followee_id,
    }


def test_rust_reads_the_list_django_cached(users, rust):
    me, you, them = users[:3]
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.add(follower=me, followee=them)
    cached = list(Follow.cache.get(follower=me))
    assert len(cached) == 2

    code, lines, err = rust("get", f"follower_id={me.pk}")
    assert code == 0, err
    assert [json.loads(line) for line in lines] == [row_of(f) for f in cached]
    code, lines, err = rust("get", f"followee_id={you.pk}", f"follower_id={me.pk}")
    assert code == 0, err
    assert [json.loads(line) for line in lines] == [row_of(cached[1])]


def test_rust_does_not_invent_a_list_that_is_not_cached(users, rust):
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    key = Follow.cache.key(follower=you)
    assert get_store().get_raw(key) is None
    code, lines, err = rust("get", f"follower_id={you.pk}")
    assert code != 0 and lines == []
    assert err == f"shared_lists: {NO_DATABASE}\n"
    assert get_store().get_raw(key) is None  # no lease left behind, no empty list
    assert list(Follow.cache.get(follower=you)) == []


def test_a_row_rust_adds_shows_in_django_with_no_query(users, rust, django_assert_num_queries):
    me, you, them, other = users[:4]
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.add(follower=me, followee=them)
    before = [f.pk for f in Follow.cache.get(follower=me)]
    # 23:30 UTC is the next day in Paris (TIME_ZONE): the model-wide day
    # counter the add bumps is the Paris day's, as Django's would be.
    yesterday = datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=1)
    created = datetime.datetime.combine(yesterday, datetime.time(23, 30), tzinfo=datetime.UTC)
    assert Follow.cache.count() == 2
    on_that_day = Follow.cache.daily_count(created=created)

    # The service's own write: one row in the database, behind Listy's back
    # (``bypass``: the raw-SQL guard would start the model's lists afresh).
    with listy.bypass(Follow), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Follow._meta.db_table} (created, follower_id, followee_id) VALUES (%s, %s, %s)",
            [connection.ops.adapt_datetimefield_value(created), me.pk, other.pk],
        )
    new = Follow.objects.get(follower=me, followee=other)
    assert new.created == created
    code, lines, err = rust("add", json.dumps(row_of(new)))
    assert code == 0, err
    # The (followee, follower) list of the new pair was not cached: the
    # example has no database to build it from, so it stays missing.
    pair = Follow.cache.key(follower=me, followee=other)
    assert err.splitlines() == [f"testapp.Follow: {pair} left uncached: {NO_DATABASE}"]
    assert get_store().get_raw(pair) is None

    with django_assert_num_queries(0):
        got = Follow.cache.get(follower=me)
        assert [f.pk for f in got] == [new.pk, *before]
        assert (got[0].created, got[0].followee_id) == (created, other.pk)
        assert Follow.cache.get_one(new.pk).followee_id == other.pk
        assert Follow.cache.count(follower=me) == 3
        assert Follow.cache.count() == 3
        assert Follow.cache.daily_count(created=created) == on_that_day + 1
    code, lines, err = rust("get", f"follower_id={me.pk}")
    assert code == 0, err
    assert json.loads(lines[0]) == row_of(new)
    with django_assert_num_queries(1):
        assert [f.pk for f in Follow.cache.get(follower=me, followee=other)] == [new.pk]
