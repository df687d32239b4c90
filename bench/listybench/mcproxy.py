"""A counting TCP proxy in front of memcached (for the "cost of one add()"
measure only; never on a timed path).

Every byte is forwarded unchanged. Per client connection it counts:

- **round trips**: bursts of client→server bytes that follow a server reply
  (or open the connection). A pipelined batch — many commands written before
  the first reply is read — is one round trip; a client that waits for each
  reply before sending the next command makes one per command.
- **commands**: the memcached text-protocol commands in the client stream
  (classic ``get/set/prepend/cas/incr...`` and meta ``mg/ms/md/ma/mn``), the
  data blocks of storage commands skipped by their announced length.
"""

from __future__ import annotations

import collections
import select
import socket
import threading

_STORAGE = {b"set", b"add", b"replace", b"append", b"prepend", b"cas"}


class _Parser:
    """Splits a client byte stream into command names."""

    def __init__(self) -> None:
        self.buf = b""
        self.skip = 0
        self.commands: list[str] = []

    def feed(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.skip:
                n = min(self.skip, len(self.buf))
                self.buf = self.buf[n:]
                self.skip -= n
                if self.skip:
                    return
            end = self.buf.find(b"\r\n")
            if end < 0:
                return
            line, self.buf = self.buf[:end], self.buf[end + 2 :]
            parts = line.split()
            if not parts:
                continue
            name = parts[0].lower()
            self.commands.append(name.decode("ascii", "replace"))
            if name in _STORAGE and len(parts) >= 5:
                self.skip = int(parts[4]) + 2
            elif name == b"ms" and len(parts) >= 3:
                self.skip = int(parts[2]) + 2


class CountingProxy:
    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self._lock = threading.Lock()
        self._round_trips = 0
        self._commands: collections.Counter[str] = collections.Counter()
        self._connections = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True, name="mcproxy-accept").start()

    # ------------------------------------------------------------ counters
    def reset(self) -> None:
        with self._lock:
            self._round_trips = 0
            self._commands = collections.Counter()
            self._connections = 0

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "round_trips": self._round_trips,
                "commands": dict(self._commands),
                "new_connections": self._connections,
            }

    # ------------------------------------------------------------ plumbing
    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._pump, args=(client,), daemon=True, name="mcproxy-conn").start()

    def _pump(self, client: socket.socket) -> None:
        server = socket.create_connection(self.upstream)
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._connections += 1
        parser = _Parser()
        last = "server"  # a first client burst is a round trip
        try:
            while True:
                readable, _, _ = select.select([client, server], [], [])
                for s in readable:
                    data = s.recv(1 << 20)
                    if not data:
                        return
                    if s is client:
                        server.sendall(data)
                        before = len(parser.commands)
                        parser.feed(data)
                        with self._lock:
                            if last == "server":
                                self._round_trips += 1
                            self._commands.update(parser.commands[before:])
                        last = "client"
                    else:
                        client.sendall(data)
                        last = "server"
        except OSError:
            return
        finally:
            client.close()
            server.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()
