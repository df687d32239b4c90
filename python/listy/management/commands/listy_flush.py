"""``manage.py listy_flush app.Model [...]``: drop every cached list of models."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from listy.management.commands._util import clients_for


class Command(BaseCommand):
    help = "Drops everything Listy has cached for the given models (a new generation); lists rebuild on their next read."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("models", nargs="*", metavar="app_label.Model")
        parser.add_argument("--all", action="store_true", help="every model with a Listy cache")

    def handle(self, *args: Any, models: list[str], all: bool, **options: Any) -> None:
        if not models and not all:
            raise CommandError("name at least one app_label.Model, or pass --all")
        for model, client in clients_for([] if all else models):
            client.flush_all()
            self.stdout.write(f"flushed {model._meta.label}")
