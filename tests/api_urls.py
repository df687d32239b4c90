"""URLs of tests/test_django_api.py: an admin site for the cached models and
views that run a test's callback inside a real request (test client)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import path

from tests.testapp.models import Bookmark, Follow

site = admin.AdminSite(name="listy_test_admin")
site.register(Follow)
site.register(Bookmark)

#: What ``/run/`` calls with the request; set by the test.
CALLBACK: list[Callable[[HttpRequest], Any]] = []


def run(request: HttpRequest) -> HttpResponse:
    """Calls the test's callback; its return value is the response body."""
    return HttpResponse(str(CALLBACK[0](request)))


urlpatterns = [
    path("admin/", site.urls),
    path("run/", run),
]
