"""``manage.py listy_check [app.Model ...] [--fix]``: compares every cached
list with the database.

Walks ``Model.cache.determine_coherency(check_against_db=True)`` for every
model with a Listy cache (or the ones named): one report per list the
database's rows make, for every index any client registered. Prints a
summary table per model and the keys of the incoherent lists. ``--fix``
rebuilds those from the database (``ListCache.rebuild``) and checks again.

Exit code 0 when every cached list is coherent, 1 when some are not (after
``--fix``: when some still are not) or the cache is unavailable, 2 on a
usage error. Lists that are not cached are not a problem: the next read
builds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import models

from listy.cache import CoherencyReport, ListCache
from listy.exceptions import CacheUnavailable
from listy.inspection import human_bytes
from listy.management.commands._util import Progress, clients_for, failed, table


@dataclass
class Summary:
    """What one walk over a model's lists found."""

    label: str
    lists: int = 0
    cached: int = 0
    coherent: int = 0
    incoherent: list[CoherencyReport] = field(default_factory=list)
    bytes: int = 0
    records: int = 0

    def add(self, report: CoherencyReport) -> None:
        self.lists += 1
        if report.cached:
            self.cached += 1
            self.bytes += report.size
            self.records += report.count
        if report.coherent is True:
            self.coherent += 1
        elif report.coherent is False:
            self.incoherent.append(report)

    def row(self) -> list[Any]:
        return [self.label, self.lists, self.cached, self.coherent, len(self.incoherent), human_bytes(self.bytes), self.records]


HEADER = ["model", "lists", "cached", "coherent", "incoherent", "bytes", "records"]


def _total(client: ListCache[Any]) -> int | None:
    """How many lists the walk will visit (for the progress bar)."""
    try:
        indexes = client._all_indexes()
        qs = client.source.live_queryset()
        return sum(qs.order_by().values(*index).distinct().count() for index in indexes)
    except Exception:  # the bar then counts without a total
        return None


class Command(BaseCommand):
    help = (
        "Compares every cached list of the given models (default: all cached models) with the database "
        "and prints a summary per model; exit code 1 if a cached list is incoherent. "
        "--fix rebuilds the incoherent lists and checks again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("models", nargs="*", metavar="app_label.Model")
        parser.add_argument("--fix", action="store_true", help="rebuild incoherent lists from the database, then re-check")
        parser.add_argument(
            "--show", type=int, default=20, metavar="N",
            help="print the keys of at most N incoherent lists per model (default 20; -v 2 prints all)",
        )

    def walk(self, model: type[models.Model], client: ListCache[Any], verb: str) -> Summary:
        summary = Summary(model._meta.label)
        if client.disable_cache:
            return summary
        with Progress(self.stderr, f"{verb} {summary.label}", _total(client), enabled=self.verbosity > 0) as bar:
            for report in client.determine_coherency(check_against_db=True):
                summary.add(report)
                bar.advance()
        return summary

    def report(self, summaries: list[Summary], show: int) -> None:
        rows = [s.row() for s in summaries]
        if len(summaries) > 1:
            total = Summary("total")
            for s in summaries:
                total.lists += s.lists
                total.cached += s.cached
                total.coherent += s.coherent
                total.incoherent.extend(s.incoherent)
                total.bytes += s.bytes
                total.records += s.records
            rows.append(total.row())
        for line in table(rows, HEADER):
            self.stdout.write(line)
        for s in summaries:
            limit = len(s.incoherent) if self.verbosity > 1 else show
            for r in s.incoherent[:limit]:
                where = ", ".join(f"{f}={v!r}" for f, v in zip(r.index, r.values))
                self.stdout.write(self.style.ERROR(f"incoherent: {s.label} ({where}) {r.key}"))
            if len(s.incoherent) > limit:
                self.stdout.write(f"... and {len(s.incoherent) - limit} more incoherent lists of {s.label}")

    def handle(self, *args: Any, models: list[str], fix: bool, show: int, **options: Any) -> None:
        self.verbosity = int(options.get("verbosity", 1))
        targets = clients_for(models)
        if not targets:
            self.stdout.write("no model has a Listy cache")
            return
        try:
            summaries = [self.walk(model, client, "checking") for model, client in targets]
            self.report(summaries, show)
            bad = [(t, s) for t, s in zip(targets, summaries) if s.incoherent]
            if bad and fix:
                for (model, client), s in bad:
                    with Progress(self.stderr, f"rebuilding {s.label}", len(s.incoherent), enabled=self.verbosity > 0) as bar:
                        for r in s.incoherent:
                            client.rebuild(**dict(zip(r.index, r.values)))
                            bar.advance()
                    self.stdout.write(f"rebuilt {len(s.incoherent)} incoherent lists of {s.label}")
                again = [self.walk(model, client, "re-checking") for (model, client), _ in bad]
                self.stdout.write("after --fix:")
                self.report(again, show)
                bad = [(t, s) for t, s in zip([t for t, _ in bad], again) if s.incoherent]
        except CacheUnavailable as exc:
            raise failed(f"cache unavailable: {exc}") from None
        if bad:
            n = sum(len(s.incoherent) for _, s in bad)
            hint = "" if fix else " (listy_check --fix rebuilds them)"
            raise failed(f"{n} incoherent cached lists{hint}")
        self.stdout.write(self.style.SUCCESS("all cached lists are coherent"))
