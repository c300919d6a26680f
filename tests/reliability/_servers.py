"""Misbehaving loopback servers for the bad-input sweep: raw TCP (handmade WebSocket), aiohttp.

:class:`RawServer` runs ``handler(reader, writer, number)`` for each accepted connection
(``number`` counts from 1) and records when each was accepted, so a test can script a first
connection that misbehaves and later ones that behave, and can measure the attempt rate.
The WebSocket helpers speak just enough RFC 6455 to send any frame, valid or not.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from tests.helpers import app_server


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
HOLD = 10.0
"""Most seconds a scripted connection waits for the client (tests end far sooner)."""


class RawServer:
    """A TCP server on 127.0.0.1 running a scripted handler per connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.port = 0
        self.accepted: list[float] = []
        """Loop time of each accept, in order."""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.accepted.append(asyncio.get_running_loop().time())
        try:
            async with asyncio.timeout(HOLD):
                await self.handler(reader, writer, len(self.accepted))
        except (OSError, asyncio.IncompleteReadError, TimeoutError, asyncio.LimitOverrunError):
            pass  # the client went away, or never came back: the script is over
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
            self._tasks.discard(task)


def frame(opcode: int, payload: bytes, *, fin: bool = True, length: int | None = None) -> bytes:
    """A server-to-client frame (unmasked); ``length`` overrides the announced length."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload


def text(data: str | bytes) -> bytes:
    return frame(TEXT, data.encode() if isinstance(data, str) else data)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one client frame (masked); returns (opcode, unmasked payload)."""
    first, second = await reader.readexactly(2)
    n = second & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    mask = await reader.readexactly(4) if second & 0x80 else b"\0\0\0\0"
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(n)))
    return first & 0x0F, data


async def accept_websocket(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: str | None
) -> None:
    """Read the upgrade request and answer 101 (choosing ``protocol`` if given)."""
    request = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    key = next(
        line.split(":", 1)[1].strip()
        for line in request.split("\r\n")
        if line.lower().startswith("sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept}",
    ]
    if protocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()


def welcome(session: str = "s1", last: int = 0, resumed: bool = False) -> bytes:
    """An rxconn.v1 welcome (a new session's carries its key, as the hub's does)."""
    body: dict[str, Any] = {"session": session, "last": last, "resumed": resumed}
    if not resumed:
        body["key"] = f"key-of-{session}"
    return text("w" + json.dumps(body))


async def read_hello(reader: asyncio.StreamReader) -> dict[str, Any]:
    """Read frames until the rxconn.v1 hello; return its JSON."""
    while True:
        opcode, data = await read_frame(reader)
        if opcode == TEXT and data[:1] == b"h":
            hello: dict[str, Any] = json.loads(data[1:])
            return hello


async def until_close_frame(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Ignore client frames until its close frame; answer it, as RFC 6455 asks."""
    while True:
        opcode, data = await read_frame(reader)
        if opcode == CLOSE:
            writer.write(frame(CLOSE, data[:2]))
            await writer.drain()
            return


def aiohttp_server(routes: Callable[[web.Application], None]) -> AbstractAsyncContextManager[str]:
    """Serve a custom aiohttp app on 127.0.0.1; yields its base http URL."""
    return app_server(routes, shutdown_timeout=0.1)


async def sse_response(
    request: web.Request, content_type: str = "text/event-stream", **headers: str
) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": content_type, **headers})
    await resp.prepare(request)
    return resp


async def hold(resp: web.StreamResponse, seconds: float = HOLD) -> None:
    """Keep a stream open (the client ends it) without raising when it goes away."""
    with contextlib.suppress(Exception):
        await asyncio.sleep(seconds)
