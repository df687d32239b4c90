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
        ("add", 0, 1, "written"),  # its no-op check read the pair's list from the database
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
    assert (rec.hits, rec.misses) == (3, 2)
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


def test_recorder_records_every_call_kind(users):
    """get_one, ``objects.get(pk=...)``, foreign-key access, counts and
    period counts are recorded too, each with the lists it read."""
    from django.utils import timezone

    me, you = users[:2]
    follow = Follow.cache.add(follower=me, followee=you)
    assert follow is not None
    Follow.cache.get_one(follow.pk)  # cached
    fresh = Follow.objects.get(pk=follow.pk)  # served by the pk list, the ORM's way
    with recorder.recording() as rec:
        Follow.cache.get_one(follow.pk)
        Follow.objects.get(pk=follow.pk)
        Follow.cache.count(follower=me)
        Follow.cache.daily_count(follower=me, created=timezone.now())
        Follow.cache.get_first(follower=me)
    calls = [(c.method, c.args, c.hits, c.result) for c in rec.calls]
    assert calls[:2] == [("get_one", f"pk={follow.pk}", 1, repr(follow.pk))] * 2
    assert calls[2][0] == "count" and calls[2][3] == "1"
    assert calls[3][0] == "daily_count" and calls[3][3] == "1"
    assert calls[4][:2] == ("get", f"follower={me.pk}")
    # a foreign key to a model with a ("pk",) list (tests.testapp.Comment -> Entry)
    assert fresh.pk == follow.pk


def test_recorder_records_foreign_key_access(users):
    """``comment.entry`` read from Entry's ("pk",) list is a recorded get_one."""
    from tests.testapp.models import Comment, Entry

    entry = Entry.objects.create(author=users[0], title="t")
    comment = Comment.objects.create(entry=entry, user=users[1], text="b")
    fetched = Comment.objects.get(pk=comment.pk)  # from the database: no inlined entry
    with recorder.recording() as rec:
        assert fetched.entry.pk == entry.pk
    assert [(c.model, c.method, c.args) for c in rec.calls] == [("testapp.Entry", "get_one", f"pk={entry.pk}")]
    assert rec.calls[0].hits + rec.calls[0].misses == 1


def test_listy_signals_and_metrics(users):
    from listy import events

    me, you = users[:2]
    seen: list[tuple[str, dict]] = []

    def on(name):  # type: ignore[no-untyped-def]
        def receiver(sender, **kwargs):  # type: ignore[no-untyped-def]
            seen.append((name, {"sender": sender, **kwargs}))

        return receiver

    receivers = {name: on(name) for name in ("list_built", "cache_fault", "write_unreached", "repaired")}
    for name, fn in receivers.items():
        getattr(events, name).connect(fn)
    events.reset()
    Follow.cache.reset_local_stats()
    try:
        Follow.cache.get(follower=me)  # built
        Follow.cache.get(follower=me)  # hit
        before = events.metrics()
        assert before["lists_built"] == 1
        assert before["hits"] >= 1 and before["misses"] >= 1
        built = [kw for name, kw in seen if name == "list_built"]
        assert built[0]["sender"] is Follow and built[0]["key"] == Follow.cache.key(follower=me)
        assert built[0]["rows"] == 0
        assert set(before) >= {"cache_faults", "writes_unreached", "keys_repaired", "engine_compacted"}
    finally:
        for name, fn in receivers.items():
            getattr(events, name).disconnect(fn)


def test_a_write_that_cannot_reach_the_cache_is_signalled(users, monkeypatch):
    from listy import events
    from tests.conftest import FAST_SETTINGS, free_port, reset_listy

    me, you = users[:2]
    seen: list[dict] = []

    def receiver(sender, **kwargs):  # type: ignore[no-untyped-def]
        seen.append({"sender": sender, **kwargs})

    events.write_unreached.connect(receiver)
    faults: list[dict] = []

    def on_fault(sender, **kwargs):  # type: ignore[no-untyped-def]
        faults.append(kwargs)

    events.cache_fault.connect(on_fault)
    monkeypatch.setenv("LISTY_SERVERS", f"127.0.0.1:{free_port()}")
    reset_listy()
    try:
        with override_settings(LISTY=FAST_SETTINGS):
            Follow.cache.add(follower=me, followee=you)
            Follow.cache.get(follower=me)
    finally:
        events.write_unreached.disconnect(receiver)
        events.cache_fault.disconnect(on_fault)
        monkeypatch.undo()
        reset_listy()
    assert seen and seen[0]["sender"] is Follow and seen[0]["faults"]
    assert {f["operation"] for f in faults} >= {"write", "read"} or {f["operation"] for f in faults} >= {"read"}


def test_engine_events_reach_the_listy_logger_at_debug(users, caplog):
    """A list with more dead frames than live ones is compacted by the next
    read: the engine's event becomes a DEBUG line and a counter."""
    from listy import events

    me = users[0]
    others = users[1:] + [type(me).objects.create(username=f"x{i}") for i in range(40)]
    Follow.cache.get(follower=me)
    for other in others:
        Follow.cache.add(follower=me, followee=other)
    for other in others[:-4]:
        Follow.cache.delete(follower=me, followee=other)
    events.reset()
    with caplog.at_level(logging.DEBUG, logger="listy"):
        assert len(Follow.cache.get(follower=me)) == 4
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(line.startswith("listy: engine compacted ") for line in lines), lines
    assert events.metrics()["engine_compacted"] == 1
