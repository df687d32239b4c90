"""System checks listy.E001, E002, E004, W001."""

from __future__ import annotations

import gc

import pytest
from django.core import checks
from django.db import models
from django.test.utils import isolate_apps, override_settings

import listy
from listy.checks import check_caches, check_settings, check_store
from tests.testapp.models import Follow


def ids(messages) -> list[str]:
    return [m.id for m in messages]


@pytest.mark.django_db  # Django 6 runs the database checks of model fields
def test_the_test_models_are_clean():
    assert [m for m in checks.run_checks() if m.id and m.id.startswith("listy.E")] == []


def test_e001_index_names_a_missing_field():
    bad = listy.ListCache(Follow, [("follower", "nope")])
    try:
        messages = [m for m in check_caches() if m.obj is Follow]
        assert ids(messages) == ["listy.E001"]
        assert "nope" in messages[0].msg
        with pytest.raises(listy.ConfigError):
            bad.get(follower=1, nope=2)
    finally:
        del bad
        gc.collect()
    assert [m for m in check_caches() if m.obj is Follow] == []


@isolate_apps("tests.testapp")
def test_e002_pk_is_not_an_integer():
    class Token(models.Model):
        key = models.CharField(max_length=40, primary_key=True)
        objects = listy.CachingManager([("pk",)])

        class Meta:
            app_label = "testapp"

    messages = check_caches(models=[Token])
    assert ids(messages) == ["listy.E002"]


@isolate_apps("tests.testapp")
def test_e001_for_options():
    class Thing(models.Model):
        objects = listy.CachingManager([("pk",)], timestamp_field="missing")

        class Meta:
            app_label = "testapp"

    messages = check_caches(models=[Thing])
    assert ids(messages) == ["listy.E001"]


def test_w001_embedded_store_without_debug(monkeypatch):
    from tests.conftest import reset_listy

    monkeypatch.setenv("LISTY_SERVERS", "local")
    reset_listy()
    try:
        with override_settings(DEBUG=False):
            assert ids(check_store()) == ["listy.W001"]
        with override_settings(DEBUG=True):
            assert check_store() == []
        monkeypatch.setenv("LISTY_SERVERS", "127.0.0.1:11211")
        reset_listy()
        with override_settings(DEBUG=False):
            assert check_store() == []
    finally:
        monkeypatch.undo()
        reset_listy()


@pytest.mark.django_db
def test_w002_sync_configured_on_a_database_that_cannot_carry_it(settings):
    """``LISTY["SYNC"]`` set: a database other than PostgreSQL, or one with
    ``wal_level`` other than ``logical``, gets W002; no SYNC, no check."""
    import os

    from django.db import connection

    from listy.checks import check_sync

    assert check_sync(databases=["default"]) == []
    settings.LISTY = {**settings.LISTY, "SYNC": True}
    messages = check_sync(databases=["default"])
    if connection.vendor != "postgresql":
        assert ids(messages) == ["listy.W002"]
        assert f"is {connection.vendor}" in messages[0].msg
        return
    with connection.cursor() as cur:
        cur.execute("SHOW wal_level")
        level = cur.fetchone()[0]
    assert ids(messages) == ([] if level == "logical" else ["listy.W002"]), os.environ.get("LISTY_TEST_DB")
    assert check_sync(databases=["other"]) == []  # not this check's database


def test_w001_is_a_deploy_check(monkeypatch):
    """W001 is for production: ``check --deploy`` runs it, a plain ``check``
    (every runserver, every test run) does not."""
    from tests.conftest import reset_listy

    monkeypatch.setenv("LISTY_SERVERS", "local")
    reset_listy()
    try:
        with override_settings(DEBUG=False, SILENCED_SYSTEM_CHECKS=[]):
            assert "listy.W001" not in ids(checks.run_checks(tags=[checks.Tags.caches]))
            assert "listy.W001" in ids(checks.run_checks(tags=[checks.Tags.caches], include_deployment_checks=True))
    finally:
        monkeypatch.undo()
        reset_listy()


BAD_SETTINGS = [
    ({"TIMEOUT": 0}, "TIMEOUT"),
    ({"TIMEOUT": "fast"}, "TIMEOUT"),
    ({"CONNECT_TIMEOUT": -1}, "CONNECT_TIMEOUT"),
    ({"CONNECT_TIMEOUT": float("nan")}, "CONNECT_TIMEOUT"),
    ({"TIMEOUT": True}, "TIMEOUT"),
    ({"OUTAGE_LOG_INTERVAL": -5}, "OUTAGE_LOG_INTERVAL"),
    ({"ENABLED": "no"}, "ENABLED"),
    ({"SERVERS": 11211}, "SERVERS"),
    ({"NOT_A_KEY": 1}, "NOT_A_KEY"),
]


@pytest.mark.parametrize("debug", [True, False])
@pytest.mark.parametrize(("bad", "named"), BAD_SETTINGS)
def test_e004_bad_settings_whatever_debug_is(bad, named, debug, monkeypatch):
    from django.conf import settings

    monkeypatch.delenv("LISTY_SERVERS", raising=False)  # it would stand in for SERVERS
    with override_settings(DEBUG=debug, LISTY={**settings.LISTY, **bad}):
        messages = check_settings()
        assert ids(messages) == ["listy.E004"]
        assert named in messages[0].msg
        # and through the framework, as ``manage.py check`` runs it
        assert "listy.E004" in ids(checks.run_checks(tags=[checks.Tags.caches]))


def test_good_settings_pass():
    from django.conf import settings

    with override_settings(LISTY={**settings.LISTY, "TIMEOUT": 2, "CONNECT_TIMEOUT": 0.1, "ENABLED": False}):
        assert check_settings() == []
