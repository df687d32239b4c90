"""``manage.py listy_inspect app.Model field=value ...`` (or ``--key KEY``):
one cached list as it is stored — its key, the server it hashes to, its size,
a hex dump, the trailer and the decoded frames, live ones marked.

Reads only (``--rows`` reads the list as a ``get()`` would, which may compact
it). Exit code 0 when the list was shown (cached or not), 1 when the value is
not a readable list or the cache is unavailable, 2 on a usage error.
"""

from __future__ import annotations

from typing import Any, cast

from django.core.management.base import BaseCommand, CommandParser

from listy import _native, registry
from listy.cache import ListCache
from listy.conf import listy_settings
from listy.declaration import SOFT_DELETED_SUFFIX
from listy.exceptions import CacheUnavailable, NotCachableException
from listy.inspection import frames, hexdump, human_bytes, is_lease, is_list, trailer
from listy.management.commands._util import failed, model_for, usage
from listy.store import get_store


def _size(n: int) -> str:
    return f"{n} bytes" if n < 1024 else f"{n} bytes ({human_bytes(n)})"


class Command(BaseCommand):
    help = (
        "Shows one cached list as stored: key, server, size, hex dump, trailer and decoded frames. "
        "Name the list by model and filters (listy_inspect testapp.Follow follower=3) or by its raw key (--key)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", nargs="?", metavar="app_label.Model", help="the model whose list to show")
        parser.add_argument(
            "filters", nargs="*", metavar="field=value",
            help="equality filters naming one cached index, as in Model.cache.get(...)",
        )
        parser.add_argument("--key", help="a raw memcached key (as printed by listy_check or the debug panel)")
        parser.add_argument(
            "--hex-limit", type=int, default=1024, metavar="BYTES",
            help="dump at most this many bytes (default 1024; 0 = all)",
        )
        parser.add_argument("--no-hex", action="store_true", help="leave out the hex dump")
        parser.add_argument(
            "--max-frames", type=int, default=200, metavar="N",
            help="list at most N frames (default 200; 0 = all)",
        )
        parser.add_argument(
            "--rows", action="store_true",
            help="also decode the live records into rows (reads the list as get() does; may compact it)",
        )

    def handle(self, *args: Any, model: str | None, filters: list[str], key: str | None, **options: Any) -> None:
        if key is None and model is None:
            raise usage("name a model and filters (listy_inspect app.Model field=value ...) or pass --key KEY")
        if key is not None and filters:
            raise usage("give either --key or filters, not both")
        try:
            if key is not None:
                client, index, values = self._from_key(key, model)
                if client is None:
                    self._show_raw(key, options)
                    return
            else:
                assert model is not None
                client, index, values = self._from_filters(model, filters)
            self._show(client, index, values, options)
        except CacheUnavailable as exc:
            raise failed(f"cache unavailable: {exc}") from None

    # ------------------------------------------------------------ naming the list
    def _client(self, label: str) -> ListCache[Any]:
        m = model_for(label)
        client = cast("ListCache[Any] | None", registry.primary(m))
        if client is None:
            raise usage(f"{label} has no Listy cache (no CachingManager or ListCache)")
        return client

    def _from_filters(self, label: str, specs: list[str]) -> tuple[ListCache[Any], tuple[str, ...], tuple[Any, ...]]:
        client = self._client(label)
        given: dict[str, Any] = {}
        for spec in specs:
            name, sep, value = spec.partition("=")
            if not sep or not name:
                raise usage(f"{spec!r}: filters are field=value")
            given[name] = None if value in ("~", "None") else value
        try:
            index, values = client._index_for(given)
        except (NotCachableException, ValueError) as exc:
            raise usage(str(exc)) from None
        return client, index, values

    def _from_key(
        self, key: str, label: str | None
    ) -> tuple[ListCache[Any] | None, tuple[str, ...], tuple[Any, ...]]:
        """The list a raw key names, when it is a current list key of a
        cached model (else (None, (), ()): the value is shown raw)."""
        parsed = _native.parse_key(listy_settings().key_prefix, key)
        if parsed is None:
            return None, (), ()
        model_label = parsed["model"].removesuffix(SOFT_DELETED_SUFFIX)
        if label is not None and model_label != label:
            raise usage(f"the key belongs to {model_label}, not {label}")
        try:
            client = self._client(model_label)
        except Exception:
            return None, (), ()
        try:
            index, values = client._index_for(dict(zip(parsed["fields"], parsed["values"])))
            if client.engine.key(index, values) != key:
                return None, (), ()
        except Exception:
            return None, (), ()
        return client, index, values

    # ------------------------------------------------------------ output
    def _hex(self, raw: bytes, options: dict[str, Any]) -> None:
        if options["no_hex"]:
            return
        limit = options["hex_limit"]
        shown = raw if limit <= 0 else raw[:limit]
        self.stdout.write("hex dump (offset | hex | ascii):")
        for line in hexdump(shown):
            self.stdout.write("  " + line)
        if len(shown) < len(raw):
            self.stdout.write(f"  ... {len(raw) - len(shown)} more bytes (--hex-limit 0 shows all)")

    def _show_raw(self, key: str, options: dict[str, Any]) -> None:
        store = get_store()
        raw = store.get_raw(key)
        self.stdout.write(f"key:      {key}")
        self.stdout.write(f"server:   {store.server_for(key)}")
        if raw is None:
            self.stdout.write("state:    not cached (no value under this key)")
            return
        self.stdout.write(f"size:     {_size(len(raw))}")
        part = trailer(raw)
        if part is not None:
            self.stdout.write(f"trailer:  {part.describe()}")
        self.stdout.write(
            "state:    not a current list key of a cached model (a segment, a counter, a meta value, "
            "or an old generation): shown raw, frames not decoded"
        )
        self._hex(raw, options)

    def _show(self, client: ListCache[Any], index: tuple[str, ...], values: tuple[Any, ...], options: dict[str, Any]) -> None:
        engine = client.engine
        info = engine.inspect(index, values)
        raw: bytes | None = info.get("raw")
        label = client.model._meta.label
        where = ", ".join(f"{f}={v!r}" for f, v in zip(index, values))
        self.stdout.write(f"list:     {label} ({where})")
        self.stdout.write(f"key:      {info['key']}")
        self.stdout.write(f"server:   {info['server']}")
        if raw is None:
            self.stdout.write("state:    not cached (the next read builds it from the database)")
            return
        size = int(info.get("size") or len(raw))
        self.stdout.write(f"size:     {_size(size)}")
        part = trailer(raw)
        self.stdout.write(f"trailer:  {part.describe() if part else 'none (not a finished list)'}")
        if is_lease(raw):
            self.stdout.write(
                "state:    a build in progress (a lease marker, with any prepends that landed on it); "
                "readers treat it as a miss until the builder stores the list"
            )
            self._hex(raw, options)
            return
        fs = frames(info)
        live = sum(1 for f in fs if f.get("live"))
        readable = is_list(info)
        if readable and part is not None and part.segments:
            first = _native.segment_key(info["key"], part.build_id, 0)
            self.stdout.write(
                f"state:    cached, stored in {part.segments + 1} parts: this head and {part.segments} "
                f"segment{'s' if part.segments != 1 else ''} (keys {first} ...); shown: the head, "
                f"{live} live records of {len(fs)} frames"
            )
        elif readable:
            self.stdout.write(f"state:    cached, {live} live records of {len(fs)} frames")
        else:
            why = info.get("error") or "no valid trailer"
            self.stdout.write(f"state:    NOT a readable list ({why}); a reader treats it as a miss")
        self._hex(raw, options)
        rows: dict[int, tuple[Any, ...]] = {}
        if options["rows"] and readable:
            rows = {r[0]: r for r in engine.get(index, values, client.source.rows).values()}
        self.stdout.write("frames (newest first):")
        self.stdout.write(f"  {'offset':>8}  {'len':>5}  {'kind':<16} {'pk':>10}  live")
        limit = options["max_frames"]
        for f in fs if limit <= 0 else fs[:limit]:
            mark = "live" if f.get("live") else ""
            line = f"  {f['offset']:>8}  {f['len']:>5}  {f['kind']:<16} {f['pk']:>10}  {mark}"
            if mark and f["pk"] in rows:
                line += f"  {rows[f['pk']]!r}"
            self.stdout.write(line.rstrip())
        if 0 < limit < len(fs):
            self.stdout.write(f"  ... {len(fs) - limit} more frames (--max-frames 0 lists all)")
        if part is not None:
            self.stdout.write(f"  {part.offset:>8}  {part.len:>5}  {'trailer':<16} {'':>10}")
        if info.get("error"):
            self.stdout.write(self.style.ERROR(f"decode error: {info['error']}"))
            raise failed(f"{info['key']}: not a readable list: {info['error']}")
