"""``manage.py listy_warm app.Model [--index follower] [--batch 500]``: fills
a model's lists ahead of traffic (after a deploy, a flush, a new server).

For each index (every index of the model's cache, or the ones named with
``--index``) it reads the distinct values the database's rows hold and asks
for those lists ``--batch`` at a time with ``get_multi``: cached ones are
hits, missing ones are built from the database (each under its lease, as a
normal read would). Prints how many were built and the rate.

Exit code 0 when done, 1 when the cache is unavailable, 2 on a usage error.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from listy.cache import FallbackRecords
from listy.exceptions import CacheUnavailable
from listy.management.commands._util import Progress, clients_for, failed, index_of, usage


class Command(BaseCommand):
    help = (
        "Fills a model's cached lists ahead of traffic: every list the database's rows make, "
        "for every index (or --index), fetched --batch at a time with get_multi."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", metavar="app_label.Model")
        parser.add_argument(
            "--index", action="append", default=[], metavar="FIELD[,FIELD...]",
            help="warm this index only (e.g. --index follower or --index follower,followee); repeatable",
        )
        parser.add_argument("--batch", type=int, default=500, help="lists per get_multi round trip (default 500)")
        parser.add_argument("--limit", type=int, default=0, help="warm at most this many lists per index (0: all)")

    def handle(self, *args: Any, model: str, index: list[str], batch: int, limit: int, **options: Any) -> None:
        verbosity = int(options.get("verbosity", 1))
        if batch < 1:
            raise usage("--batch must be at least 1")
        ((m, client),) = clients_for([model])
        label = m._meta.label
        if client.disable_cache:
            self.stdout.write(f"{label}: the cache is disabled (disable_cache=True); nothing to warm")
            return
        indexes = [index_of(client, spec) for spec in index] if index else client.indexes
        source = client.source
        total_lists = total_built = 0
        started = time.monotonic()
        try:
            for idx in indexes:
                values = source.index_values(idx)
                if limit > 0:
                    values = values[:limit]
                misses_before = client.misses
                name = ",".join(idx)
                t0 = time.monotonic()
                with Progress(self.stderr, f"warming {label} ({name})", len(values), enabled=verbosity > 0) as bar:
                    for start in range(0, len(values), batch):
                        chunk = values[start : start + batch]
                        got = client.get_multi([dict(zip(idx, v)) for v in chunk], key_func=lambda f: tuple(f.values()))
                        if any(isinstance(r, FallbackRecords) for r in got.values()):
                            raise CacheUnavailable("the lists were read from the database only (see the 'listy' logger)")
                        bar.advance(len(chunk))
                built = client.misses - misses_before
                elapsed = time.monotonic() - t0
                rate = len(values) / elapsed if elapsed > 0 else 0.0
                self.stdout.write(
                    f"{label} ({name}): {len(values)} lists, {built} built, {len(values) - built} already cached, "
                    f"{elapsed:.2f}s, {rate:.0f} lists/s"
                )
                total_lists += len(values)
                total_built += built
        except CacheUnavailable as exc:
            raise failed(f"cache unavailable: {exc}") from None
        elapsed = time.monotonic() - started
        rate = total_lists / elapsed if elapsed > 0 else 0.0
        self.stdout.write(
            self.style.SUCCESS(
                f"warmed {label}: {total_lists} lists ({total_built} built) in {elapsed:.2f}s, {rate:.0f} lists/s"
            )
        )
