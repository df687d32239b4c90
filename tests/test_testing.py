"""``listy.testing``: the pytest plugin (run in a pytest of its own with
``pytester``) and the ``TestCase`` mixin (used here as a user would).

What they must give a project's tests: an empty embedded store at the start
of each test, and Listy's on_commit work run inside the test's transaction
the way the live site runs it, so that reads after a write are served from
the cache (zero SQL statements), not from the database.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import TestCase
from django.test.utils import CaptureQueriesContext

from listy.store import get_store
from listy.testing import ListyTestMixin
from tests.testapp.models import Follow

ROOT = Path(__file__).resolve().parents[1]
PROBE = "listy-testing-probe"


class MixinTests(ListyTestMixin, TestCase):
    """A user's ``TestCase``: Django's transaction per test, Listy's mixin."""

    @classmethod
    def setUpTestData(cls) -> None:
        cls.me = User.objects.create(username="me")
        cls.you = User.objects.create(username="you")

    def test_a_write_at_test_level_reaches_the_cache_at_once(self) -> None:
        self.assertEqual(get_store().kind, "local")
        Follow.cache.add(follower=self.me, followee=self.you)
        with CaptureQueriesContext(connection) as queries:
            got = Follow.cache.get(follower=self.me)
        self.assertEqual([f.followee_id for f in got], [self.you.pk])
        self.assertTrue(got.from_cache)
        self.assertEqual(len(queries), 0, queries.captured_queries)
        get_store().set_raw(PROBE, b"left by test_a")

    def test_b_each_test_starts_from_an_empty_store(self) -> None:
        # test_a left a key (tests run in name order): reset() flushed it
        self.assertIsNone(get_store().get_raw(PROBE))
        self.assertEqual(Follow.cache.hits, 0)

    def test_c_work_waits_for_the_outermost_atomic_block(self) -> None:
        Follow.cache.get(follower=self.me)  # cached, empty
        with transaction.atomic():
            Follow.cache.add(follower=self.me, followee=self.you)
            inside = Follow.cache.get(follower=self.me)
            self.assertFalse(inside.from_cache)  # uncommitted: from the database
            self.assertEqual(len(inside), 1)
        after = Follow.cache.get(follower=self.me)
        self.assertTrue(after.from_cache)
        self.assertEqual([f.followee_id for f in after], [self.you.pk])

    def test_d_a_rolled_back_block_takes_its_work_with_it(self) -> None:
        Follow.cache.get(follower=self.me)
        with self.assertRaises(RuntimeError), transaction.atomic():
            Follow.cache.add(follower=self.me, followee=self.you)
            raise RuntimeError("rolled back")
        got = Follow.cache.get(follower=self.me)
        self.assertTrue(got.from_cache)
        self.assertEqual(len(got), 0)


class WithoutTheMixin(TestCase):
    """The control: the same write in a bare ``TestCase`` never reaches the
    cache (its on_commit work never runs), which is what the mixin is for."""

    def test_the_write_never_reaches_the_cache(self) -> None:
        me = User.objects.create(username="me")
        you = User.objects.create(username="you")
        Follow.cache.add(follower=me, followee=you)
        self.assertFalse(Follow.cache.get(follower=me).from_cache)


TEST_FILE = """
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from listy.store import get_store
from tests.testapp.models import Follow


def test_live(db):
    get_store().set_raw("probe", b"1")  # the next test must not see it
    me = User.objects.create(username="me")
    you = User.objects.create(username="you")
    Follow.cache.add(follower=me, followee=you)
    assert get_store().kind == "local"
    with CaptureQueriesContext(connection) as queries:
        got = Follow.cache.get(follower=me)
    assert [f.followee_id for f in got] == [you.pk]
    assert got.from_cache and len(queries) == 0, queries.captured_queries


def test_empty_store_again(db):
    assert get_store().get_raw("probe") is None
"""


@pytest.fixture
def run_pytest(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Runs a user's pytest (pytest-django, this suite's settings and models)
    with the given ini lines; returns the outcomes."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("LISTY_TEST_DB_NAME", raising=False)

    def run(ini: str, test_file: str = TEST_FILE) -> dict[str, int]:
        pytester.makeini("[pytest]\nDJANGO_SETTINGS_MODULE = tests.settings\n" + textwrap.dedent(ini))
        pytester.makepyfile(test_user=test_file)
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
        return result.parseoutcomes()

    return run


def test_plugin_does_nothing_until_asked(run_pytest) -> None:  # type: ignore[no-untyped-def]
    outcomes = run_pytest("")
    assert outcomes.get("failed") == 2, outcomes  # no live commits, no reset


def test_plugin_autouse_gives_every_test_an_empty_store_and_live_commits(run_pytest) -> None:  # type: ignore[no-untyped-def]
    assert run_pytest("listy_autouse = true\n") == {"passed": 2}


def test_plugin_fixture_on_demand(run_pytest) -> None:  # type: ignore[no-untyped-def]
    on_demand = TEST_FILE.replace("(db)", "(db, listy)")
    assert run_pytest("", on_demand) == {"passed": 2}
