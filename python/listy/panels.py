"""A django-debug-toolbar panel: the Listy calls of this request.

Add it to the toolbar's panels (django-debug-toolbar is an optional
dependency; this module imports it only when the panel is asked for)::

    DEBUG_TOOLBAR_PANELS = [
        ...,
        "listy.panels.ListyPanel",
    ]

The panel activates a :class:`listy.recorder.Recorder` for the request;
``ListCache.get``, ``get_multi``, ``add`` and ``delete`` record each call
(model, filters, lists served from the cache or built from the database,
bytes read, time). When no recorder is active the cost is one
``ContextVar.get`` per call.
"""

from __future__ import annotations

from typing import Any

_panel_class: type | None = None


def _make_panel() -> type:
    from debug_toolbar.panels import Panel  # optional dependency: imported here only

    from listy import recorder

    class ListyPanel(Panel):  # type: ignore[misc, unused-ignore]  # untyped without django-debug-toolbar
        """The Listy calls of this request: hits, misses, bytes and time."""

        title = "Listy"
        nav_title = "Listy"
        template = "listy/panels/listy.html"
        is_async = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._recorder: recorder.Recorder | None = None
            self._token: Any = None

        @property
        def nav_subtitle(self) -> str:
            stats: dict[str, Any] = self.get_stats()  # type: ignore[no-untyped-call]
            calls = len(stats.get("calls", []))
            return (
                f"{calls} call{'s' if calls != 1 else ''}, {stats.get('hits', 0)} hits, "
                f"{stats.get('misses', 0)} misses in {stats.get('ms', 0.0):.2f} ms"
            )

        def enable_instrumentation(self) -> None:
            if self._token is None:
                self._recorder, self._token = recorder.start()

        def disable_instrumentation(self) -> None:
            if self._token is not None:
                recorder.stop(self._token)
                self._token = None

        def generate_stats(self, request: Any, response: Any) -> None:
            rec = self._recorder or recorder.Recorder()
            self.record_stats(  # type: ignore[no-untyped-call]
                {
                    "calls": [c.as_dict() for c in rec.calls],
                    "hits": rec.hits,
                    "misses": rec.misses,
                    "bytes": rec.bytes,
                    "ms": round(rec.ms, 3),
                }
            )

    ListyPanel.__module__ = __name__
    return ListyPanel


def __getattr__(name: str) -> Any:
    global _panel_class
    if name == "ListyPanel":
        if _panel_class is None:
            _panel_class = _make_panel()
        return _panel_class
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ListyPanel"]
