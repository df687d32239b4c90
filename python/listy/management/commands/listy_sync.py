"""``manage.py listy_sync``: follows PostgreSQL's logical change stream so
that every cached list converges whoever writes the database (psql, other
services, scripts; see ``listy.sync`` and docs/deployment.md).

- ``--setup``: ``REPLICA IDENTITY FULL`` on the cached models' tables, the
  publication, the replication slot (idempotent), then exits unless
  ``--once`` or ``--follow`` is given too.
- ``--drop``: drops the slot (it stops retaining WAL) and the publication.
- ``--once``: drains what is committed now and exits (cron jobs, tests).
- ``--wait``: when another follower holds the lock, wait for it instead of
  exiting with code 1.
- ``--status``: prints the slot's lag and retained WAL and exits.

Database, slot and publication come from ``LISTY["SYNC"]`` (defaults
``default``/``listy``/``listy``); ``--database``, ``--slot`` and
``--publication`` override them. SIGTERM stops it after the current batch.
Exit code 0, 1 on a failure (another follower running, stream not set up,
missing privilege: the message says what to do), 2 on a usage error.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, TextIO, cast

from django.core.management.base import BaseCommand, CommandParser

from listy.exceptions import ConfigError
from listy.management.commands._util import failed, usage
from listy.sync import Follower, SyncError, drop, setup, status, sync_settings


class Command(BaseCommand):
    help = (
        "Follows PostgreSQL's logical change stream and applies every committed row change of a cached "
        "model to the lists (writes from outside Django included). --setup first; --once drains and exits."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--setup", action="store_true", help="create/refresh the publication, slot, replica identity")
        parser.add_argument("--follow", action="store_true", help="with --setup: keep following afterwards")
        parser.add_argument("--drop", action="store_true", help="drop the slot and the publication, then exit")
        parser.add_argument("--once", action="store_true", help="drain what is committed now, then exit")
        parser.add_argument("--wait", action="store_true", help="wait while another listy_sync holds the lock")
        parser.add_argument("--status", action="store_true", help="print the slot's lag and retained WAL, then exit")
        parser.add_argument("--interval", type=float, default=0.1, help="seconds between polls when idle (0.1)")
        parser.add_argument("--batch", type=int, default=20_000, help="messages read per poll (whole transactions)")
        parser.add_argument("--database", default=None, help="database alias (LISTY['SYNC']['DATABASE'])")
        parser.add_argument("--slot", default=None, help="replication slot name (LISTY['SYNC']['SLOT'])")
        parser.add_argument("--publication", default=None, help="publication name (LISTY['SYNC']['PUBLICATION'])")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["interval"] <= 0 or options["batch"] < 1:
            raise usage("--interval must be > 0 and --batch >= 1")
        try:
            conf = sync_settings()
        except ConfigError as exc:
            raise usage(str(exc)) from exc
        conf = replace(
            conf,
            database=options["database"] or conf.database,
            slot=options["slot"] or conf.slot,
            publication=options["publication"] or conf.publication,
        )
        self._verbose(options["verbosity"])
        try:
            self._run(conf, options)
        except SyncError as exc:
            raise failed(str(exc)) from exc

    def _verbose(self, verbosity: int) -> None:
        """The follower's log (lag, throughput) on stderr unless the project
        configured the ``listy`` logger itself."""
        log = logging.getLogger("listy")
        if verbosity >= 1 and not log.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler(cast(TextIO, self.stderr._out))  # the wrapped stream (stubs: __getattr__)
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            log.addHandler(handler)
            log.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)

    def _run(self, conf: Any, options: dict[str, Any]) -> None:
        say = self.stdout.write
        if options["drop"]:
            drop(conf, say)
            return
        if options["status"]:
            self._status(conf)
            return
        if options["setup"]:
            setup(conf, say)
            if not (options["once"] or options["follow"]):
                return
        follower = Follower(conf, batch=options["batch"])
        follower.check()
        if not follower.lock(wait=options["wait"]):
            raise failed(
                f"another listy_sync is following slot {conf.slot!r} on database {conf.database!r} "
                "(one per deployment); use --wait to take over when it stops"
            )
        try:
            if not options["once"]:
                follower.stop_on_signals()
                say(f"listy_sync: following slot {conf.slot} (publication {conf.publication}); SIGTERM stops")
            follower.run(once=options["once"], interval=options["interval"])
        finally:
            follower.unlock()
        say(f"listy_sync: {follower.total_changes} changes in {follower.total_transactions} transactions applied")

    def _status(self, conf: Any) -> None:
        found = status(conf)
        if found is None:
            raise failed(f"no replication slot {conf.slot!r}: run `manage.py listy_sync --setup`")
        for line in format_status(found):
            self.stdout.write(line)


def format_status(found: dict[str, Any]) -> list[str]:
    """The slot's state as lines (``listy_sync --status``, ``listy_stats``)."""
    from listy.inspection import human_bytes

    lines = [
        f"sync slot {found['slot']} ({found['plugin']}, {'active' if found['active'] else 'inactive'}): "
        f"acknowledged {found['confirmed_flush_lsn']}, current {found['current_lsn']}, "
        f"lag {human_bytes(found['lag_bytes'])} of WAL, retained {human_bytes(found['retained_bytes'])}"
    ]
    f = found.get("follower")
    if f:
        lines.append(
            f"  follower: {f.get('changes')} changes in {f.get('transactions')} transactions applied, "
            f"{f.get('changes_per_s')} changes/s, last lag {f.get('last_lag_s')} s"
        )
    return lines
