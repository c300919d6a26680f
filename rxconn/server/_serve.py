"""serve(): run a Hub on its own aiohttp app, as an async context manager."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from ._hub import Hub


__all__ = ["Server", "serve"]

SHUTDOWN_TIMEOUT = 2.0


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
    hub: Hub, host: str = "127.0.0.1", port: int = 0, *, prefix: str = "/rx"
) -> AsyncIterator[Server]:
    """Serve ``hub`` under ``prefix`` on ``host:port`` (0: a free port) until the block ends.

    Leaving the block closes every link at once (WebSocket close 1001, SSE
    streams ended), ends every session, and frees the port; the hub can be
    served again afterwards.
    """
    if not prefix.startswith("/") or prefix.endswith("/"):
        raise ValueError(f"prefix must start with '/' and not end with it, got {prefix!r}")
    root = web.Application(client_max_size=hub.max_body_size)  # aiohttp checks the root app
    root.add_subapp(prefix, hub.app())
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
            site = web.SockSite(runner, sock)
            await site.start()  # the server owns the socket from here on
        except BaseException:
            sock.close()
            raise
        yield Server(hub, host, sock.getsockname()[1], prefix)
    finally:
        hub.shutdown()
        await runner.cleanup()
