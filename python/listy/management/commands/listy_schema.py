"""``manage.py listy_schema [app.Model ...] [--json]``: the contract a client
outside Django (a Rust service on ``listy-core``) must match to share a
model's lists, one entry per engine that writes them (see docs/rust.md).

Each entry: the model, the engine label and key prefix the keys carry, the
record's fields in order (name, kind, nullable) and the schema fingerprint,
the indexes and unique sets as the engine holds them (sorted attnames), the
timestamp field and the time zone its days are counted in for the model-wide
counters (``TIME_ZONE``; None with ``USE_TZ = False``: datetimes are then
naive wall time), the counter epoch, and which rows the lists hold (soft
delete and enabled flags). The generation is not in it: it lives in the
model's meta key, and every engine reads it there itself.

Exit code 2 on a usage error.
"""

from __future__ import annotations

import json
from typing import Any, cast

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from listy.cache import ListCache
from listy.management.commands._util import clients_for

#: Version of the ``--json`` document; bumped when a key changes meaning.
FORMAT = 1


def contract(client: ListCache[Any]) -> dict[str, Any]:
    """One engine's contract: the engine's own settings and the Django side
    (timestamp field, time zone, which rows are listed)."""
    held = client.engine.contract
    ts = client._field(client.timestamp_field) if client.timestamp_field else None
    return {
        "model": client.model._meta.label,
        "engine_label": held["engine_label"],
        "key_prefix": held["key_prefix"],
        "fields": [{"name": n, "kind": k, "nullable": null} for n, k, null in held["fields"]],
        "schema_fingerprint": held["schema_fingerprint"],
        "indexes": held["indexes"],
        "unique": held["unique"],
        "timestamp_field": ts.attname if ts is not None else None,
        "time_zone": timezone.get_default_timezone_name() if settings.USE_TZ else None,
        "counter_epoch": held["counter_epoch"],
        "soft_delete_field": client.soft_delete_field,
        "keeps_soft_deleted": bool(client.soft_delete_field) and not client.filter_out_soft_deletes,
        "enabled_field": client.enabled_field,
    }


def describe(entry: dict[str, Any]) -> list[str]:
    """The human-readable lines of one entry."""

    def sets(items: list[list[str]]) -> str:
        return ", ".join("(" + ", ".join(i) + ")" for i in items) or "none"

    fields = ", ".join(f"{f['name']} {f['kind']}{'?' if f['nullable'] else ''}" for f in entry["fields"])
    epoch = entry["counter_epoch"]
    zone = entry["time_zone"] or "naive wall time (USE_TZ = False)"
    lines = [
        f"{entry['model']}: engine {entry['engine_label']!r}, key prefix {entry['key_prefix']!r}, "
        f"schema fingerprint {entry['schema_fingerprint']:#010x}",
        f"  fields: {fields}",
        f"  indexes: {sets(entry['indexes'])}; unique: {sets(entry['unique'])}",
        f"  timestamp: {entry['timestamp_field'] or 'none'}; days in {zone}; "
        f"counter epoch: {'never ends' if epoch is None else f'{epoch:g} s'}",
    ]
    flags = [f"not {entry['soft_delete_field']}"] if entry["soft_delete_field"] and not entry["keeps_soft_deleted"] else []
    if entry["enabled_field"]:
        flags.append(entry["enabled_field"])
    lines.append(f"  lists hold rows: {' and '.join(flags) if flags else 'all'}")
    return lines


class Command(BaseCommand):
    help = (
        "Prints what a client outside Django must match to share a model's Listy lists: engine label, "
        "key prefix, fields, indexes, unique sets, timestamp field, time zone, counter epoch."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("models", nargs="*", metavar="app_label.Model")
        parser.add_argument("--json", action="store_true", dest="as_json", help="one JSON document (for listy-core clients)")

    def handle(self, *args: Any, models: list[str], as_json: bool, **options: Any) -> None:
        entries = [contract(cast("ListCache[Any]", writer)) for _, client in clients_for(models) for writer in client.writers()]
        if as_json:
            self.stdout.write(json.dumps({"format": FORMAT, "engines": entries}, indent=2))
            return
        for entry in entries:
            for line in describe(entry):
                self.stdout.write(line)

