"""serve(): run a Hub on its own aiohttp app, as an async context manager."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from ._hub import Hub
from ._limits import (
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    LimitedSite,
    _Limits,
)


__all__ = ["Server", "serve"]

SHUTDOWN_TIMEOUT = 2.0
BACKLOG = 1024
"""Connections the kernel queues before the hub accepts them (aiohttp's default is 128):
when a hub dies, its clients reconnect to the others all at once, and a SYN dropped from a
full queue costs its client a 1 s retransmission."""


@dataclass(frozen=True)
class Server:
    """A running hub: ``url`` is ready for ``rxconn.connection(url)``."""

    hub: Hub
    host: str
    port: int
    prefix: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.prefix}"


@asynccontextmanager
async def serve(
    hub: Hub,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    prefix: str = "/rx",
    header_timeout: float | None = HEADER_TIMEOUT,
    body_timeout: float | None = BODY_TIMEOUT,
    idle_timeout: float | None = IDLE_TIMEOUT,
    max_connections: int | None = MAX_CONNECTIONS,
) -> AsyncIterator[Server]:
    """Serve ``hub`` under ``prefix`` on ``host:port`` (0: a free port) until the block ends.

    ``prefix=""`` serves the hub's routes at the root (``/ws``, ``/events``, …).

    Leaving the block closes every link at once (WebSocket close 1001, SSE
    streams ended), ends every session, and frees the port; the hub can be
    served again afterwards.

    The read limits keep idle or slow clients from holding connections (and file
    descriptors) forever; None switches one off. They never cut an SSE stream or
    a WebSocket once its request is being handled.

    Args:
        header_timeout: Seconds for a request's headers to arrive, from the
            connect or from the first byte of a later request (10 s).
        body_timeout: Seconds for a request's body to arrive once its headers
            have (30 s).
        idle_timeout: Seconds a connection may stay open between requests (60 s).
        max_connections: Connections open at once; more are closed as soon as
            they are accepted (None: no cap).
    """
    if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
        raise ValueError(f"prefix must be '' or start with '/' and not end with it, got {prefix!r}")
    _Limits(header_timeout, body_timeout, idle_timeout, max_connections)  # fail before binding
    if prefix:
        root = web.Application(client_max_size=hub.max_body_size)  # aiohttp checks the root app
        root.add_subapp(prefix, hub.app())
    else:
        root = hub.app()  # the hub's own application is the root
    # handler_cancellation: a client that goes away cancels its handler at once, so an
    # idle SSE stream's session starts its grace period without waiting for a ping.
    runner = web.AppRunner(
        root, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT, handler_cancellation=True
    )
    await runner.setup()
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            site = LimitedSite(
                runner,
                sock=sock,
                header_timeout=header_timeout,
                body_timeout=body_timeout,
                idle_timeout=idle_timeout,
                max_connections=max_connections,
                backlog=BACKLOG,
            )
            await site.start()  # the server owns the socket from here on
        except BaseException:
            sock.close()
            raise
        yield Server(hub, host, sock.getsockname()[1], prefix)
    finally:
        hub.shutdown()
        await runner.cleanup()
