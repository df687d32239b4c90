"""Per-request object registry.

Inside one request (or one :func:`request_context` block) the same primary
key of a model yields the same instance: the engine hands every instance it
builds to :func:`on_build`, which returns the one already registered, and
``Model.objects.get(pk=...)`` / foreign-key access to a cached model look in
the registry before touching the cache.

Add ``"listy.middleware.RequestContextCacheMiddleware"`` to ``MIDDLEWARE``;
it works under WSGI and ASGI alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse

MIDDLEWARE_PATH = "listy.middleware.RequestContextCacheMiddleware"

_registry: ContextVar[dict[tuple[type, Any], Any] | None] = ContextVar("listy_registry", default=None)


def installed() -> bool:
    """True when the middleware is in ``settings.MIDDLEWARE``."""
    return MIDDLEWARE_PATH in (getattr(settings, "MIDDLEWARE", None) or ())


def on_build(obj: Any) -> Any:
    """The engine's ``on_build`` hook: the registered instance for this
    primary key, registering ``obj`` if it is the first."""
    registry = _registry.get()
    if registry is None:
        return obj
    return registry.setdefault((type(obj), obj.pk), obj)


def lookup(model: type, pk: Any) -> Any | None:
    """The instance of ``model`` with ``pk`` registered in this request, or None."""
    registry = _registry.get()
    if registry is None:
        return None
    return registry.get((model, pk))


def register(obj: Any) -> Any:
    """Registers ``obj`` (if a registry is active) and returns the canonical instance."""
    return on_build(obj)


@contextlib.contextmanager
def request_context() -> Iterator[dict[tuple[type, Any], Any]]:
    """A registry for code that runs outside a request (a task, a command)."""
    token = _registry.set({})
    try:
        registry = _registry.get()
        assert registry is not None
        yield registry
    finally:
        _registry.reset(token)


class RequestContextCacheMiddleware:
    """Gives each request its own object registry (sync and async)."""

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponse]
        | Callable[[HttpRequest], Awaitable[HttpResponse]],
    ) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self.__acall__(request)
        token = _registry.set({})
        try:
            return self.get_response(request)
        finally:
            _registry.reset(token)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        token = _registry.set({})
        try:
            return await self.get_response(request)  # type: ignore[misc, no-any-return]
        finally:
            _registry.reset(token)
