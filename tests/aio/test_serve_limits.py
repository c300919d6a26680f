"""serve()'s read limits and connection cap, against raw sockets on 127.0.0.1.

Slowloris-style clients (silent, slow headers, slow body, idle keep-alive) must be
closed by the hub within the configured timeout, while SSE streams and WebSockets,
whose requests are being handled, are never cut. Every wait is bounded by
``asyncio.timeout``; the tests wait for the server to close the socket (EOF), never
sleep to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from rxconn.server import Hub, LimitedSite, serve


pytestmark = pytest.mark.asyncio

BOUND = 5.0
"""Upper bound on any wait below: far above every configured timeout."""

LONG = 30.0
"""A timeout that must not be the one that fires in a test."""

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _open(port: int) -> Conn:
    return await asyncio.open_connection("127.0.0.1", port)


async def _close(conn: Conn) -> None:
    writer = conn[1]
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


@asynccontextmanager
async def _connections(port: int, n: int) -> AsyncIterator[list[Conn]]:
    conns: list[Conn] = []
    try:
        for _ in range(n):
            conns.append(await _open(port))
        yield conns
    finally:
        for conn in conns:
            await _close(conn)


async def _closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (bounded)."""
    async with asyncio.timeout(BOUND):
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""  # closed while our unread bytes were in flight: a reset


async def _response(reader: asyncio.StreamReader) -> int:
    """Read one whole HTTP response with a Content-Length; returns its status."""
    async with asyncio.timeout(BOUND):
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        assert length is not None, head
        await reader.readexactly(int(length[1]))
    return int(head.split(b" ", 2)[1])


GET_404 = b"GET /rx/nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
GET_404_CLOSE = b"GET /rx/nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


# ------------------------------------------------------------------ header timeout


async def test_silent_connections_are_closed_after_header_timeout() -> None:
    """50 connections that send nothing are all closed, and their fds freed, in time."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("counts file descriptors through /proc")
    async with serve(Hub(), header_timeout=0.3) as server:
        loop = asyncio.get_running_loop()
        before = _fds()
        start = loop.time()
        async with _connections(server.port, 50) as conns:
            assert _fds() == before + 100  # both ends of every connection
            eofs = await asyncio.gather(*(_closed_by_server(r) for r, _ in conns))
            assert eofs == [b""] * 50
            assert loop.time() - start >= 0.25  # the timeout closed them, not a refusal
            assert _fds() == before + 50  # the server's ends are gone
        assert _fds() == before


async def test_headers_trickling_in_are_cut_at_header_timeout() -> None:
    """Header bytes that keep arriving do not extend the header deadline (slowloris)."""
    async with serve(Hub(), header_timeout=0.3, idle_timeout=LONG) as server:
        reader, writer = conn = await _open(server.port)

        async def trickle() -> None:
            writer.write(b"GET /rx/events HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            for i in range(200):  # 10 s of headers if nothing stops it
                writer.write(b"X-Slow-%d: 1\r\n" % i)
                await writer.drain()
                await asyncio.sleep(0.05)  # the attack's pace, not synchronisation

        slow = asyncio.create_task(trickle())
        try:
            start = asyncio.get_running_loop().time()
            assert await _closed_by_server(reader) == b""
            assert asyncio.get_running_loop().time() - start < 2.0
        finally:
            slow.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await slow
            await _close(conn)


async def test_a_later_requests_headers_get_header_timeout_not_idle_timeout() -> None:
    """After a request, the first byte of the next one starts its header deadline."""
    async with serve(Hub(), header_timeout=0.3, idle_timeout=LONG) as server:
        reader, writer = conn = await _open(server.port)
        try:
            writer.write(GET_404)
            assert await _response(reader) == 404
            writer.write(b"GET /rx/nope HTTP/1.1\r\nHost: 12")  # and nothing more
            assert await _closed_by_server(reader) == b""
        finally:
            await _close(conn)


# ------------------------------------------------------------------ idle timeout


async def test_idle_keep_alive_connection_is_closed_after_idle_timeout() -> None:
    """A keep-alive connection that sends no further request is closed."""
    async with serve(Hub(), header_timeout=LONG, idle_timeout=0.3) as server:
        reader, writer = conn = await _open(server.port)
        try:
            writer.write(GET_404)
            assert await _response(reader) == 404
            assert await _closed_by_server(reader) == b""
        finally:
            await _close(conn)


async def test_pipelined_requests_are_all_answered_then_idle_applies() -> None:
    """Requests sent back to back on one connection are each answered before it idles."""
    async with serve(Hub(), header_timeout=LONG, idle_timeout=0.3) as server:
        reader, writer = conn = await _open(server.port)
        try:
            writer.write(GET_404 * 3)
            assert [await _response(reader) for _ in range(3)] == [404, 404, 404]
            assert await _closed_by_server(reader) == b""
        finally:
            await _close(conn)


# ------------------------------------------------------------------ body timeout


def _post_head(length: int) -> bytes:
    return (
        b"POST /rx/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % length
    )


async def test_a_body_that_stops_arriving_is_cut_at_body_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A POST whose body never completes is closed, quietly, and the hub serves on."""
    caplog.set_level(logging.WARNING)
    async with serve(Hub(), header_timeout=LONG, body_timeout=0.3) as server:
        reader, writer = conn = await _open(server.port)
        try:
            writer.write(_post_head(1000) + b'{"session": ')
            assert await _closed_by_server(reader) == b""  # no 500, no answer at all
        finally:
            await _close(conn)
        reader, writer = conn = await _open(server.port)
        try:
            writer.write(GET_404)
            assert await _response(reader) == 404
        finally:
            await _close(conn)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_body_that_completes_in_time_is_handled() -> None:
    """A body sent in pieces but completely, within body_timeout, gets its answer."""
    body = b'{"session": "nope", "seq": 1, "messages": []}'
    async with serve(Hub(), header_timeout=LONG, body_timeout=BOUND) as server:
        reader, writer = conn = await _open(server.port)
        try:
            writer.write(_post_head(len(body)) + body[:10])
            await writer.drain()
            writer.write(body[10:])
            status = await _response(reader)
            assert 400 <= status < 500  # an unknown session: the hub answered
        finally:
            await _close(conn)


# ------------------------------------------------------------------ long-lived links


async def test_sse_streams_and_websockets_outlive_every_timeout() -> None:
    """Once its request is being handled, a link is never cut by the read limits."""
    hub = Hub(echo=True, ping_interval=0.1)
    limits = {"header_timeout": 0.2, "body_timeout": 0.2, "idle_timeout": 0.2}
    async with serve(hub, **limits) as server, aiohttp.ClientSession() as http:  # type: ignore[arg-type]
        async with http.ws_connect(server.url + "/ws") as ws:
            # receive() answers the hub's pings (every 0.1 s), so keep one running
            received = asyncio.create_task(ws.receive())
            async with http.get(server.url + "/events") as stream:
                pings = 0
                async with asyncio.timeout(BOUND):
                    while pings < 10:  # 10 pings: at least 1 s, 5 times every timeout
                        line = await stream.content.readline()
                        assert line, "the SSE stream was closed"
                        pings += line == b": ping\n"
                assert not received.done(), received.result()  # the WebSocket is still open
                await ws.send_str("still here")
                async with asyncio.timeout(BOUND):
                    echo = await received
                assert echo.type is aiohttp.WSMsgType.TEXT and echo.data == "still here"
                assert not stream.content.at_eof()


# ------------------------------------------------------------------ connection cap


async def test_connections_beyond_max_connections_are_closed_at_once() -> None:
    """Past the cap a new connection is closed on accept; a freed slot is reused."""
    async with (
        serve(Hub(), max_connections=2, header_timeout=LONG, idle_timeout=LONG) as server,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(server.url + "/events") as stream:  # slot 1: a live SSE stream
            await stream.content.readuntil(b"\n\n")
            reader, writer = second = await _open(server.port)  # slot 2: keep-alive
            try:
                writer.write(GET_404)
                assert await _response(reader) == 404
                refused = await _open(server.port)
                try:
                    # header and idle timeouts are 30 s: only the cap closes it this soon
                    assert await _closed_by_server(refused[0]) == b""
                finally:
                    await _close(refused)
                writer.write(
                    b"GET /rx/nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                assert await _response(reader) == 404
                assert await _closed_by_server(reader) == b""  # the server freed slot 2
            finally:
                await _close(second)
            reader, writer = third = await _open(server.port)
            try:
                writer.write(GET_404)
                assert await _response(reader) == 404
            finally:
                await _close(third)
            assert not stream.content.at_eof()


@pytest.mark.parametrize(
    "options",
    [
        {"header_timeout": 0},
        {"body_timeout": -1.0},
        {"idle_timeout": float("nan")},
        {"max_connections": 0},
        {"max_connections": 1.5},
    ],
)
async def test_bad_limits_are_refused_before_serving(options: dict[str, float]) -> None:
    """Non-positive timeouts and caps raise ValueError from serve()."""
    with pytest.raises(ValueError):
        async with serve(Hub(), **options):  # type: ignore[arg-type]
            pass  # pragma: no cover


# ------------------------------------------------------------------ embedding


async def test_limited_site_protects_a_hub_mounted_in_your_own_app() -> None:
    """LimitedSite gives an embedded hub the same limits; other sites pass through."""
    hub = Hub(echo=True)
    app = web.Application(client_max_size=hub.max_body_size)
    app.add_subapp("/rx", hub.app())
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        site = LimitedSite(runner, "127.0.0.1", 0, header_timeout=0.3, max_connections=100)
        plain = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        await plain.start()
        port = URL(site.name).port
        assert port
        async with _connections(port, 3) as conns:
            assert site.connections == 3
            assert [await _closed_by_server(r) for r, _ in conns] == [b""] * 3
            assert site.connections == 0
        plain_port = plain._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as http:
            for base in (f"http://127.0.0.1:{port}/rx", f"http://127.0.0.1:{plain_port}/rx"):
                async with http.ws_connect(base + "/ws") as ws:
                    await ws.send_str("hi")
                    async with asyncio.timeout(BOUND):
                        assert (await ws.receive()).data == "hi"
    finally:
        await runner.cleanup()


async def test_a_cut_body_is_quiet_without_handler_cancellation_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Embedded with aiohttp's default runner, a body cut by the limit logs no traceback."""
    caplog.set_level(logging.WARNING)
    hub = Hub()
    app = web.Application()
    app.add_subapp("/rx", hub.app())
    runner = web.AppRunner(app, access_log=None)  # handler_cancellation=False
    await runner.setup()
    try:
        site = LimitedSite(runner, "127.0.0.1", 0, body_timeout=0.3)
        await site.start()
        port = URL(site.name).port
        assert port
        reader, writer = conn = await _open(port)
        try:
            writer.write(_post_head(1000) + b"{")
            assert await _closed_by_server(reader) == b""
        finally:
            await _close(conn)
        reader, writer = conn = await _open(port)  # the hub serves on
        try:
            writer.write(GET_404)
            assert await _response(reader) == 404
        finally:
            await _close(conn)
    finally:
        await runner.cleanup()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_limited_site_refuses_host_and_sock_together() -> None:
    """A site listens either on host and port or on a given socket."""
    runner = web.AppRunner(web.Application())
    await runner.setup()
    try:
        with socket.socket() as sock, pytest.raises(ValueError):
            LimitedSite(runner, "127.0.0.1", 0, sock=sock)
    finally:
        await runner.cleanup()
