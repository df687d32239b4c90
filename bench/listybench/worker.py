"""A peer's own process.

django-cacheops and django-cachalot patch Django's ORM for the whole process,
so each runs in a process of its own (``spawn``: a fresh interpreter that
never saw the other peer nor Listy's signal handlers), with its own settings
module. The main process sends it the same calls as its local ``Runner``
(``("round", key, plan)``, ``("cold", ...)``, ...) one at a time, so the
peers' measures interleave with the others' round by round while only one
process works at any moment. Timings are taken inside the worker.
"""

from __future__ import annotations

import os
import traceback
from typing import Any


def serve(conn: Any, settings_module: str, env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    import django

    django.setup()
    from listybench.systems import CachalotSystem, CacheopsSystem, Runner

    if settings_module.endswith("cacheops"):
        systems = {"cacheops": CacheopsSystem()}
    else:
        systems = {"cachalot": CachalotSystem(os.environ["BENCH_MEMCACHED"])}
    runner = Runner(systems)
    conn.send(("ok", os.getpid()))
    while True:
        msg = conn.recv()
        if msg is None:
            break
        method, args = msg
        try:
            conn.send(("ok", runner.call(method, *args)))
        except BaseException:  # report, keep serving
            conn.send(("error", traceback.format_exc()))
    conn.close()


class RemoteRunner:
    """The main process's handle on a worker: ``call(method, *args)`` like
    ``Runner.call``."""

    def __init__(self, settings_module: str, env: dict[str, str]) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(child, settings_module, env), daemon=True)
        self.process.start()
        child.close()
        self.pid = self._reply()

    def _reply(self) -> Any:
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"worker failed:\n{value}")
        return value

    def call(self, method: str, *args: Any) -> Any:
        self.conn.send((method, args))
        return self._reply()

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=10)
