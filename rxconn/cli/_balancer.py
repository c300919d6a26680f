"""RoundRobinProxy: a tiny load balancer in front of several hubs (no sticky sessions).

Each new client connection goes to the next hub in turn; a hub that refuses
(it is down) or was marked down is skipped, as a load balancer's health check
would. Loopback only: ``demo --cluster`` and the cluster tests use it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


__all__ = ["RoundRobinProxy"]


class RoundRobinProxy:
    """Forwards every new TCP connection to the next of ``upstreams`` (``(host, port)``)."""

    def __init__(self, upstreams: list[tuple[str, int]]) -> None:
        for host, _ in upstreams:
            if host != "127.0.0.1":
                raise ValueError("loopback upstreams only")
        self.upstreams = list(upstreams)
        self.port = 0
        self.connections = 0
        """Client connections accepted so far."""
        self.chosen: list[int] = []
        """The upstream index each accepted connection went to, in order."""
        self._next = 0
        self.down: set[int] = set()
        """Upstreams a health check took out of rotation (see :meth:`mark`)."""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def mark(self, index: int, *, up: bool) -> None:
        """Take upstream ``index`` out of rotation (or back), as a health check would."""
        if up:
            self.down.discard(index)
        else:
            self.down.add(index)

    def url(self, scheme: str, path: str) -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> RoundRobinProxy:
        # A large queue, as a real balancer's: clients of a dead hub reconnect at once.
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            for _ in range(len(self.upstreams)):
                index = self._next % len(self.upstreams)
                self._next += 1
                if index in self.down:
                    continue
                host, port = self.upstreams[index]
                try:
                    up_reader, upstream = await asyncio.open_connection(host, port)
                except OSError:
                    continue  # that hub is down: the next one
                self.chosen.append(index)
                break
            if upstream is None:
                return
            self._writers.add(upstream)
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        if writer.can_write_eof():
            writer.write_eof()
