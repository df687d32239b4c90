"""``manage.py listy_stats [app.Model ...]``: the store in use, per-server
memcached statistics (items, bytes, evictions, get hits/misses and the hit
ratio), per model the hits and misses of every process that served it
(``listy.shared_stats``: each process adds its counts to shared counters in
the store every ``LISTY["STATS_INTERVAL"]`` seconds), and with
``LISTY["SYNC"]`` set the change stream follower's lag (WAL not yet
acknowledged, WAL the slot retains) and throughput (``listy_sync``).

Through twemproxy (which does not forward ``stats``) the server part says so
and the command still exits 0. Exit code 2 on a usage error.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from listy.conf import listy_settings
from listy.exceptions import CacheUnavailable
from listy.inspection import human_bytes
from listy.management.commands._util import clients_for, table
from listy.shared_stats import shared
from listy.store import get_store

#: memcached stats summarised per server.
SUMMARY = ("curr_items", "bytes", "limit_maxbytes", "evictions", "get_hits", "get_misses")


def hit_ratio(hits: int, misses: int) -> str:
    total = hits + misses
    return f"{100.0 * hits / total:.1f}%" if total else "-"


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


class Command(BaseCommand):
    help = (
        "Shows the Listy store (embedded or memcached servers), per-server statistics "
        "(items, bytes, evictions, get hits/misses, hit ratio) and the hits and misses per model of every process."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("models", nargs="*", metavar="app_label.Model")
        parser.add_argument("--all-stats", action="store_true", help="also print every raw memcached stat")

    def handle(self, *args: Any, models: list[str], all_stats: bool, **options: Any) -> None:
        targets = clients_for(models)
        conf = listy_settings()
        store = get_store()
        where = "embedded in-process store" if conf.is_local else ", ".join(conf.servers)
        self.stdout.write(f"store: {store.kind} ({where}); key prefix {conf.key_prefix!r}")
        try:
            raw = store.stats()
        except CacheUnavailable as exc:
            self.stdout.write(
                self.style.WARNING(
                    f"  server statistics unavailable: {exc} "
                    "(a proxy such as twemproxy does not forward 'stats': ask the servers behind it)"
                )
            )
            raw = []
        servers: dict[str, dict[str, str]] = {}
        for server, name, value in raw:
            servers.setdefault(server, {})[name] = value
        if servers:
            rows = []
            for server, st in servers.items():
                hits, misses = _int(st.get("get_hits")), _int(st.get("get_misses"))
                limit = _int(st.get("limit_maxbytes"))
                rows.append(
                    [
                        server,
                        _int(st.get("curr_items")),
                        human_bytes(_int(st.get("bytes"))),
                        human_bytes(limit) if limit else "-",
                        st.get("evictions", "-"),
                        st.get("get_hits", "-"),
                        st.get("get_misses", "-"),
                        hit_ratio(hits, misses),
                    ]
                )
            header = ["server", "items", "bytes", "limit", "evictions", "get_hits", "get_misses", "hit ratio"]
            for line in table(rows, header):
                self.stdout.write("  " + line)
        if all_stats:
            for server, name, value in raw:
                self.stdout.write(f"  {server} {name} {value}")
        interval = conf.stats_interval
        for model, client in targets:
            indexes = ", ".join("(" + ", ".join(i) + ")" for i in client.caches)
            try:
                counts = shared(client.engine_label)
            except CacheUnavailable:
                counts = None
            if counts is not None:
                hits, misses = counts
                seen = f"hits {hits}, misses {misses}, hit ratio {hit_ratio(hits, misses)} (all processes)"
            elif interval is None:
                seen = "shared counts off (LISTY['STATS_INTERVAL'] is None)"
            else:
                seen = "no process has published counts yet"
            self.stdout.write(f"{model._meta.label}: indexes {indexes}; {seen}")
        self._sync()

    def _sync(self) -> None:
        """The change stream's slot and follower, when ``LISTY["SYNC"]`` is set."""
        from django.db import DatabaseError

        from listy.management.commands.listy_sync import format_status
        from listy.sync import SyncError, status

        conf = listy_settings().sync
        if conf is None:
            return
        try:
            found = status(conf)
        except (DatabaseError, SyncError) as exc:
            self.stdout.write(self.style.WARNING(f"sync: slot status unavailable: {exc}"))
            return
        if found is None:
            self.stdout.write(self.style.WARNING(f"sync: no slot {conf.slot!r}: run `manage.py listy_sync --setup`"))
            return
        for line in format_status(found):
            self.stdout.write(line)
