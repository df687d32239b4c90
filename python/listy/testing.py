"""Test helpers for projects that use Listy: a pytest plugin and a
``TestCase`` mixin.

Two things make a project's tests of cached code go wrong:

* the cache outlives the database: a ``TestCase`` (or pytest-django's ``db``)
  rolls the rows back after each test, but the lists the test cached stay in
  the store and are served to the next test. Each test must start from an
  empty store, with Listy's repair state and statistics cleared
  (:func:`reset`).
* a ``TestCase`` never commits, so the cache work Listy queues with
  ``transaction.on_commit`` never runs, and reads inside the test go to the
  database instead of the cache. :func:`live_commits` runs that work the way
  the live site does: at once when a write happens outside any atomic block
  of the test's own, and when the test's outermost ``atomic()`` block exits.

pytest (the plugin is registered under the name ``listy`` by an entry point;
it does nothing until asked)::

    # pytest.ini / pyproject.toml [tool.pytest.ini_options]
    listy_autouse = true          # every test gets the ``listy`` fixture
    listy_servers = local         # the embedded store (default); "settings": LISTY as configured

    def test_follow(listy, db):   # or ask for the fixture where it is needed
        Follow.cache.add(follower=me, followee=you)
        assert Follow.cache.get(follower=me)[0].followee_id == you.pk

unittest / Django::

    from listy.testing import ListyTestMixin

    class FollowTests(ListyTestMixin, TestCase):
        ...

See docs/testing.md.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from unittest import mock

if TYPE_CHECKING:
    import pytest

#: The value of ``listy_servers`` that keeps ``settings.LISTY`` as configured.
FROM_SETTINGS = "settings"


# ---------------------------------------------------------------- the store
def reset(servers: str | None = "local") -> None:
    """Starts Listy afresh: settings re-read, stores and engines rebuilt, the
    store flushed, repair state and hit/miss statistics cleared.

    ``servers``: ``"local"`` (default) points Listy at the embedded
    in-process store (through the ``LISTY_SERVERS`` environment variable,
    which overrides ``settings.LISTY["SERVERS"]``); a ``"host:port,..."``
    string at those memcached servers; None keeps the settings.
    """
    from listy import registry, repair, store
    from listy.conf import listy_settings

    if servers is not None:
        os.environ["LISTY_SERVERS"] = servers
    listy_settings.cache_clear()
    store.reset()
    store.get_store().flush_all()
    repair.reset()
    for model in registry.all_models():
        for client in registry.clients(model):
            client.reset_local_stats()


# ---------------------------------------------------------------- commits
def _at_test_level(connection: Any) -> bool:
    """True when every open atomic block is one a test case opened (the
    ones that stand in for autocommit on the live site)."""
    return all(getattr(block, "_from_testcase", False) for block in connection.atomic_blocks)


def _run_pending(connection: Any) -> None:
    """Runs the on_commit callbacks queued on ``connection``, as a commit does."""
    while connection.run_on_commit and not connection.needs_rollback:
        _, func, robust = connection.run_on_commit.pop(0)
        if robust:
            with contextlib.suppress(Exception):
                func()
        else:
            func()


@contextlib.contextmanager
def live_commits() -> Iterator[None]:
    """Inside a test case's transaction, runs ``on_commit`` callbacks when the
    live site would: at once for a write made at the test's own level (which
    would be autocommit there), and when the outermost ``atomic()`` block the
    test opened exits without an error (which would be its commit). Blocks
    rolled back take their callbacks with them, as Django does.

    Outside a test case's transaction it changes nothing: Django already runs
    the callbacks on commit."""
    from django.db import connections
    from django.db.transaction import Atomic

    original_exit = Atomic.__exit__

    def exit_and_commit(self: Atomic, exc_type: Any, exc_value: Any, traceback: Any) -> Any:
        result = original_exit(self, exc_type, exc_value, traceback)
        connection = connections[self.using or "default"]
        if exc_type is None and connection.in_atomic_block and _at_test_level(connection):
            _run_pending(connection)
        return result

    def run_now_at_test_level(conn: Any) -> Callable[..., None]:
        original_on_commit = conn.on_commit

        def on_commit(func: Callable[[], Any], robust: bool = False) -> None:
            original_on_commit(func, robust)
            if conn.in_atomic_block and _at_test_level(conn):
                _run_pending(conn)

        return on_commit

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(Atomic, "__exit__", exit_and_commit))
        for conn in connections.all():
            stack.enter_context(mock.patch.object(conn, "on_commit", run_now_at_test_level(conn)))
        yield


class ListyTestMixin:
    """For ``django.test.TestCase`` (and ``TransactionTestCase``) classes:
    each test starts from an empty embedded store (:func:`reset`) and runs,
    ``setUp`` included, under :func:`live_commits`.

    ``listy_servers`` (class attribute): ``"local"`` (default), memcached
    servers as ``"host:port,..."``, or None for ``settings.LISTY``."""

    listy_servers: str | None = "local"

    def _callSetUp(self) -> None:
        # a cleanup runs even when setUp fails (tearDown would not)
        self.addCleanup(_restore_servers, os.environ.get("LISTY_SERVERS"), self.listy_servers)  # type: ignore[attr-defined]
        reset(self.listy_servers)
        with live_commits():
            super()._callSetUp()  # type: ignore[misc]

    def _callTestMethod(self, method: Callable[[], Any]) -> None:
        with live_commits():
            super()._callTestMethod(method)  # type: ignore[misc]


def _restore_servers(previous: str | None, servers: str | None) -> None:
    if servers is None:
        return
    if previous is None:
        os.environ.pop("LISTY_SERVERS", None)
    else:
        os.environ["LISTY_SERVERS"] = previous
    from listy import store
    from listy.conf import listy_settings

    listy_settings.cache_clear()
    store.reset()


# ---------------------------------------------------------------- pytest plugin
def pytest_addoption(parser: pytest.Parser) -> None:
    """The plugin's ini options (it changes nothing unless asked)."""
    parser.addini(
        "listy_autouse",
        "give every test the `listy` fixture (empty store, live on_commit)",
        type="bool",
        default=False,
    )
    parser.addini(
        "listy_servers",
        "the store the `listy` fixtures use: 'local' (embedded, default), "
        "'host:port,...' (memcached) or 'settings' (settings.LISTY as configured)",
        default="local",
    )


def _servers(config: pytest.Config) -> str | None:
    value = str(config.getini("listy_servers")).strip() or "local"
    return None if value == FROM_SETTINGS else value


# pytest is a test dependency, not Listy's: the fixtures exist only where it
# is installed (it always is when pytest loads this module as a plugin).
try:
    import pytest as _pytest
except ImportError:  # pragma: no cover - imported without pytest
    _pytest = None  # type: ignore[assignment]

if _pytest is not None:

    @_pytest.fixture
    def listy_store(request: pytest.FixtureRequest) -> Iterator[None]:
        """An empty Listy store for this test (see ``listy_servers``), repair
        state and statistics cleared; the settings restored afterwards."""
        servers = _servers(request.config)
        previous = os.environ.get("LISTY_SERVERS")
        reset(servers)
        try:
            yield
        finally:
            _restore_servers(previous, servers)

    @_pytest.fixture
    def listy_live_commits() -> Iterator[None]:
        """Listy's on_commit work runs as on the live site, inside
        pytest-django's ``db`` transaction too (see :func:`live_commits`)."""
        with live_commits():
            yield

    @_pytest.fixture
    def listy(listy_store: None, listy_live_commits: None) -> None:
        """Both: an empty store and live on_commit work."""

    @_pytest.fixture(autouse=True)
    def _listy_autouse(request: pytest.FixtureRequest) -> None:
        """``listy`` for every test when ``listy_autouse = true``."""
        if request.config.getini("listy_autouse"):
            request.getfixturevalue("listy")


__all__ = ["FROM_SETTINGS", "ListyTestMixin", "live_commits", "reset"]
