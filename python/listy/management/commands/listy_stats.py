"""``manage.py listy_stats``: the store in use, its server stats, and this
process's hit/miss counts per model."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from listy.conf import listy_settings
from listy.exceptions import CacheUnavailable
from listy.management.commands._util import clients_for
from listy.store import get_store

INTERESTING = {
    "curr_items", "bytes", "limit_maxbytes", "get_hits", "get_misses",
    "evictions", "curr_connections", "uptime", "version",
}


class Command(BaseCommand):
    help = "Shows the Listy store (embedded or memcached servers) and cache statistics."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("models", nargs="*", metavar="app_label.Model")
        parser.add_argument("--all-stats", action="store_true", help="every memcached stat, not a selection")

    def handle(self, *args: Any, models: list[str], all_stats: bool, **options: Any) -> None:
        conf = listy_settings()
        store = get_store()
        where = "embedded in-process store" if conf.is_local else ", ".join(conf.servers)
        self.stdout.write(f"store: {store.kind} ({where}); key prefix {conf.key_prefix!r}")
        try:
            for server, name, value in store.stats():
                if all_stats or name in INTERESTING:
                    self.stdout.write(f"  {server} {name} {value}")
        except CacheUnavailable as exc:
            self.stdout.write(self.style.WARNING(f"  unavailable: {exc}"))
        for model, client in clients_for(models):
            indexes = ", ".join("(" + ", ".join(i) + ")" for i in client.caches)
            self.stdout.write(
                f"{model._meta.label}: indexes {indexes}; hits {client.hits}, misses {client.misses} (this process)"
            )
