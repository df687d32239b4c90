"""Observability: the ``listy`` logger, the call recorder and the
django-debug-toolbar panel."""

from __future__ import annotations

import logging
import subprocess
import sys
from time import perf_counter

import pytest
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from listy import recorder
from listy.store import get_store
from tests.testapp.models import Follow

pytestmark = pytest.mark.django_db(transaction=True)


def test_logger_has_debug_lines_for_misses_rebuilds_and_flushes(users, caplog):
    me, you = users[:2]
    Follow.objects.bulk_create([Follow(follower=me, followee=you)])  # builds no list
    caplog.set_level(logging.DEBUG, logger="listy")
    Follow.cache.get(follower=me)  # a miss
    Follow.cache.get(follower=me)  # a hit: no line
    Follow.cache.get_multi([{"follower": you}])  # a miss through get_multi
    Follow.cache.rebuild(follower=me)
    key = Follow.cache.key(follower=you)
    Follow.cache.flush_all()
    messages = [r.getMessage() for r in caplog.records if r.name == "listy"]
    assert sum("listy: miss testapp.Follow" in m for m in messages) == 2
    assert any(m.startswith(f"listy: miss testapp.Follow {key}: read from the database") for m in messages)
    assert any(m.startswith("listy: rebuild testapp.Follow {'follower'") for m in messages)
    assert "listy: flush_all testapp.Follow (a new generation)" in messages
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "listy")


def test_recorder_records_only_when_active(users):
    me, you = users[:2]
    Follow.cache.get(follower=me)
    assert recorder.active() is None
    started = perf_counter()
    with recorder.recording() as rec:
        Follow.cache.add(follower=me, followee=you)  # builds me's lists on commit
        Follow.cache.get(follower=me)  # hit
        Follow.cache.get(follower=you)  # miss
        Follow.cache.get_multi([{"follower": me}, {"follower": you}])  # 2 hits
        Follow.cache.delete(follower=me, followee=users[3])  # nothing to delete
        with pytest.raises(Exception):
            Follow.cache.get(followee=you)  # no such index
    elapsed_ms = (perf_counter() - started) * 1000
    assert recorder.active() is None
    Follow.cache.get(follower=me)  # not recorded
    calls = [(c.method, c.hits, c.misses, c.result) for c in rec.calls]
    assert calls == [
        ("add", 0, 0, "written"),
        ("get", 1, 0, ""),
        ("get", 0, 1, ""),
        ("get_multi", 2, 0, "2 lists"),
        ("delete", 0, 0, "no-op"),
        ("get", 0, 0, ""),
    ]
    assert rec.calls[1].args == f"follower={me.pk}"
    # bytes: the lists read, as stored; ms: each call's own wall time
    stored = {u: len(get_store().get_raw(Follow.cache.key(follower=u))) for u in (me, you)}
    assert rec.calls[1].bytes == stored[me] > 0
    assert rec.calls[3].bytes == stored[me] + stored[you]
    assert all(0 < c.ms for c in rec.calls)
    assert rec.ms == sum(c.ms for c in rec.calls) < elapsed_ms
    assert rec.calls[3].args.startswith("2 lists: follower=")
    assert "NotCachableException" in rec.calls[-1].error
    assert (rec.hits, rec.misses) == (3, 1)
    assert rec.bytes == sum(c.bytes for c in rec.calls) > 0


def test_debug_toolbar_panel_renders_the_requests_calls(users):
    pytest.importorskip("debug_toolbar")
    from django.conf import settings

    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)

    def view(request):  # type: ignore[no-untyped-def]
        Follow.cache.get(follower=me)
        Follow.cache.get(follower=you)
        return HttpResponse("ok")

    # INSTALLED_APPS is applied before the other settings of one override
    with override_settings(DEBUG=True, STATIC_URL="/static/", DEBUG_TOOLBAR_PANELS=["listy.panels.ListyPanel"]), \
            override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, "django.contrib.staticfiles", "debug_toolbar"]):
        from debug_toolbar.toolbar import DebugToolbar

        request = RequestFactory().get("/")
        toolbar = DebugToolbar(request, view)
        panel = toolbar.get_panel_by_id("ListyPanel")
        assert panel.enabled
        panel.enable_instrumentation()
        response = toolbar.process_request(request)
        panel.generate_stats(request, response)
        panel.disable_instrumentation()
        assert recorder.active() is None
        stats = panel.get_stats()
        assert [c["method"] for c in stats["calls"]] == ["get", "get"]
        assert (stats["hits"], stats["misses"]) == (1, 1)
        stored = [len(get_store().get_raw(Follow.cache.key(follower=u))) for u in (me, you)]
        assert stats["bytes"] == sum(stored) and all(stored)
        assert panel.nav_subtitle.startswith("2 calls, 1 hits, 1 misses in ")
        html = panel.content
    assert "testapp.Follow" in html
    assert f"follower={me.pk}" in html and f"follower={you.pk}" in html
    assert "<code>get</code>" in html


def test_panel_module_imports_debug_toolbar_lazily():
    """django-debug-toolbar is optional: importing ``listy.panels`` does not
    import it, asking for ``ListyPanel`` does. A fresh interpreter, since this
    one may have imported debug_toolbar already (the panel test above)."""
    pytest.importorskip("debug_toolbar")
    probe = (
        "import sys, django; from django.conf import settings; settings.configure(); django.setup()\n"
        "import listy.panels\n"
        "assert 'debug_toolbar' not in sys.modules, 'imported at once'\n"
        "try:\n"
        "    listy.panels.Nope\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('listy.panels.Nope exists')\n"
        "assert 'debug_toolbar' not in sys.modules, 'imported by a failed lookup'\n"
        "panel = listy.panels.ListyPanel\n"
        "assert 'debug_toolbar.panels' in sys.modules\n"
        "assert panel.__module__ == 'listy.panels' and panel is listy.panels.ListyPanel\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr
