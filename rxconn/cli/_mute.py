"""A loopback TCP proxy for ``demo --mute-sse``: it buffers SSE the way some proxies do.

While :attr:`MutingProxy.muting` is on, a connection whose request line asks for
``/events`` gets its response's status line and headers, and then nothing: every
later byte is held back (a buffering proxy releases them only when the response
ends, which an event stream never does). Other requests, WebSocket upgrades and
long polls included, pass untouched. Everything runs on the demo's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final


__all__ = ["MutingProxy"]

CHUNK: Final = 64 * 1024
HEAD_END: Final = b"\r\n\r\n"


class MutingProxy:
    """Forwards 127.0.0.1:``port`` to the upstream port; mutes SSE responses while asked."""

    def __init__(self, upstream_port: int, marker: bytes = b"/events") -> None:
        self.upstream_port = upstream_port
        self.marker = marker
        self.muting = False
        self.held = 0
        """Response bytes held back so far."""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and drop every connection (their tasks are awaited, bounded)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in list(self._writers):
            writer.transport.abort()  # each connection's task then ends by itself
        if self._tasks:
            # Not cancelled: on Python 3.11 asyncio's stream server reports a cancelled
            # handler task as an error ("Exception in callback ... CancelledError").
            await asyncio.wait(list(self._tasks), timeout=2.0)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            first = await reader.read(CHUNK)
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(upstream)
            request_line = first.split(b"\r\n", 1)[0]
            muted = self.muting and self.marker in request_line
            upstream.write(first)
            async with asyncio.TaskGroup() as pumps:  # one failing cancels the other
                pumps.create_task(self._pump(reader, upstream, muted=False))
                pumps.create_task(self._pump(up_reader, writer, muted))
        except* OSError:
            pass  # either side went away: the connection ends
        finally:
            for end in (writer, upstream):
                if end is not None:
                    end.transport.abort()
                    self._writers.discard(end)
            self._tasks.discard(task)

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, muted: bool
    ) -> None:
        """Copy ``src`` to ``dst``; a muted response stops after its headers."""
        head = b""
        holding = False
        while data := await src.read(CHUNK):
            if holding:
                self.held += len(data)
                continue
            if muted:
                seen = head + data
                end = seen.find(HEAD_END)
                if end >= 0:
                    cut = end + len(HEAD_END) - len(head)
                    self.held += len(data) - cut
                    data, holding = data[:cut], True
                else:
                    head = seen[-3:]
            dst.write(data)
            await dst.drain()
        with contextlib.suppress(OSError):
            if dst.can_write_eof():
                dst.write_eof()
