"""``manage.py listy_flush app.Model [...]`` (or ``--all``): drop every cached
list of models (a new generation). Exit code 0 when done, 1 when the cache is
unavailable, 2 on a usage error."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from listy.exceptions import CacheUnavailable
from listy.management.commands._util import clients_for, failed, usage


class Command(BaseCommand):
    help = "Drops everything Listy has cached for the given models (a new generation); lists rebuild on their next read."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("models", nargs="*", metavar="app_label.Model")
        parser.add_argument("--all", action="store_true", help="every model with a Listy cache")

    def handle(self, *args: Any, models: list[str], all: bool, **options: Any) -> None:
        if not models and not all:
            raise usage("name at least one app_label.Model, or pass --all")
        for model, client in clients_for([] if all else models):
            try:
                client.flush_all()
            except CacheUnavailable as exc:
                raise failed(f"{model._meta.label}: cache unavailable: {exc}") from None
            self.stdout.write(f"flushed {model._meta.label}")
