"""Read limits for the HTTP server: header, body and idle deadlines, and a connection cap.

What aiohttp's server (3.14) already bounds, and what it does not:

- a connection that sends nothing, or only part of its request headers, is
  closed only by ``keepalive_timeout``, counted from the connect and not
  extended by the bytes that trickle in, and 3,630 s (an hour) by default;
- header *size* is bounded (``max_line_size``, ``max_field_size``,
  ``max_headers``), but a request body that arrives slowly is not bounded in
  time at all: ``await request.read()`` waits as long as the client keeps the
  socket open;
- nothing caps the number of connections: past the process's file descriptor
  limit, ``accept()`` fails for everyone.

`LimitedSite` is a ``web.BaseSite`` that adds these bounds around an ordinary
``AppRunner``. Each accepted connection gets a small protocol, `_Guard`, that
forwards every event to aiohttp's own ``RequestHandler`` and keeps one
deadline whose meaning depends on where the connection is:

======================  ===============================  =====================
state                   from                             deadline
======================  ===============================  =====================
waiting for headers     connect; first byte after idle   ``header_timeout``
reading the body        the handler starts               ``body_timeout``
handling                the body is complete             none
idle (keep-alive)       the handler returned             ``idle_timeout``
======================  ===============================  =====================

A handler starts exactly when aiohttp has parsed a request's headers, so the
site wraps the runner server's ``request_handler`` once to learn when each
request starts and ends. While a handler runs and its body is complete there
is no deadline at all: SSE streams and WebSockets live as long as they like.
A connection past its deadline is closed (aborted if a response is still
stuck in its write buffer), which also ends a handler blocked in
``request.read()``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from yarl import URL


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from ssl import SSLContext

    from aiohttp.web_protocol import RequestHandler
    from aiohttp.web_request import BaseRequest

    _RequestHandlerFn = Callable[[BaseRequest], Awaitable[web.StreamResponse]]

__all__ = [
    "BODY_TIMEOUT",
    "HEADER_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_CONNECTIONS",
    "LimitedSite",
]

logger = logging.getLogger("rxconn.server")

HEADER_TIMEOUT = 10.0
"""Seconds for a request's headers to arrive, from the connect or the request's first byte."""

BODY_TIMEOUT = 30.0
"""Seconds for a request's whole body to arrive once its headers have."""

IDLE_TIMEOUT = 60.0
"""Seconds a keep-alive connection may sit between requests (longer than aiohttp's
client pool keeps an idle connection, 15 s, so the client is normally the one to close)."""

MAX_CONNECTIONS: int | None = None
"""No cap by default: the hub serves 10,000 connections and more; set one below the
process's file descriptor limit (``ulimit -n``) so that ``accept()`` never fails."""


@dataclass(frozen=True, slots=True)
class _Limits:
    """The validated read limits of one site (``None`` switches a limit off)."""

    header_timeout: float | None = HEADER_TIMEOUT
    body_timeout: float | None = BODY_TIMEOUT
    idle_timeout: float | None = IDLE_TIMEOUT
    max_connections: int | None = MAX_CONNECTIONS

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "idle_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value!r}")
        cap = self.max_connections
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"max_connections must be an int >= 1 or None, got {cap!r}")


class _State(enum.Enum):
    HEADERS = "waiting for request headers"
    BODY = "reading a request body"
    HANDLING = "handling a request"
    IDLE = "idle between requests"


class _Handlers:
    """The runner server's request handler, wrapped to tell each guard when a request
    starts (its headers are complete) and when its handler returns.

    Installed once per runner server, by the first `LimitedSite` started on it; requests
    on connections that no `LimitedSite` accepted pass straight through.
    """

    def __init__(self, inner: _RequestHandlerFn) -> None:
        self._inner = inner
        self.guards: dict[RequestHandler, _Guard] = {}

    async def __call__(self, request: BaseRequest) -> web.StreamResponse:
        guard = self.guards.get(request.protocol)
        if guard is None:
            return await self._inner(request)
        guard.request_started(request)
        try:
            return await self._inner(request)
        except ConnectionError:
            if not guard.expired:
                raise
            # The guard cut this connection (body_timeout), so the handler's read failed:
            # answer 408 (undeliverable, and dropped quietly by aiohttp) instead of letting
            # aiohttp log a 500 with a traceback. With handler_cancellation=True the
            # handler is cancelled instead and never gets here.
            return web.Response(status=408, text="request body not received in time")
        finally:
            guard.request_finished()


class _Guard(asyncio.Protocol):
    """One accepted connection: forwards every event to aiohttp's ``RequestHandler``
    and enforces the deadline of the connection's current state (module docstring)."""

    def __init__(self, site: LimitedSite, handlers: _Handlers) -> None:
        self._site = site
        self._handlers = handlers
        self._loop = asyncio.get_running_loop()
        self._limits = site.limits
        self._inner: RequestHandler | None = None
        self._transport: asyncio.Transport | None = None
        self._state = _State.HEADERS
        self._request: BaseRequest | None = None
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.expired = False
        """Whether the guard closed the connection for passing its deadline."""

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        server = self._site._runner.server
        cap = self._limits.max_connections
        if server is None or (cap is not None and len(self._site._guards) >= cap):
            # Refused before any RequestHandler exists: it costs one accept and one close.
            logger.debug("connection refused: max_connections (%s) reached", cap)
            transport.close()
            return
        inner = server()
        self._inner = inner
        self._transport = transport
        self._site._guards.add(self)
        self._handlers.guards[inner] = self
        self._arm(self._limits.header_timeout)
        inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._state is _State.IDLE:
            # The next request has begun: its headers get header_timeout from now,
            # however slowly the rest of them trickles in.
            self._state = _State.HEADERS
            self._arm(self._limits.header_timeout)
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> None:
        # Returning None lets asyncio close the transport after a FIN, as aiohttp does.
        if self._inner is not None:
            self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        inner = self._inner
        if inner is None:
            return  # refused by the cap: nothing was set up
        self._inner = None
        self._transport = None
        self._request = None
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._handlers.guards.pop(inner, None)
        self._site._guards.discard(self)
        inner.connection_lost(exc)

    # ------------------------------------------------------------ request events

    def request_started(self, request: BaseRequest) -> None:
        """A request's headers are complete: bound the arrival of its body, if any."""
        self._request = request
        body = request.content
        if body.is_eof():
            self._handling()
            return
        self._state = _State.BODY
        self._arm(self._limits.body_timeout)
        body.on_eof(lambda: self._body_complete(request))

    def _body_complete(self, request: BaseRequest) -> None:
        if self._request is request and self._state is _State.BODY:
            self._handling()

    def _handling(self) -> None:
        """No deadline while a handler runs with its whole request (SSE, WebSocket)."""
        self._state = _State.HANDLING
        self._deadline = None

    def request_finished(self) -> None:
        """The handler returned: the connection idles until the next request begins."""
        self._request = None
        if self._transport is None:
            return  # the connection is already gone
        self._state = _State.IDLE
        self._arm(self._limits.idle_timeout)

    # ------------------------------------------------------------ the deadline

    def _arm(self, delay: float | None) -> None:
        """Set the deadline ``delay`` seconds from now (None: no deadline).

        One timer per connection, moved lazily: a later deadline keeps the pending
        timer, which re-arms itself when it fires early (as aiohttp's keep-alive timer
        does), so requests on a busy connection cost no timer churn.
        """
        if delay is None:
            self._deadline = None
            return
        deadline = self._loop.time() + delay
        self._deadline = deadline
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        deadline = self._deadline
        transport = self._transport
        if deadline is None or transport is None:
            return
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._expire)
            return
        self._deadline = None
        self.expired = True
        logger.debug("closing a connection past its deadline (%s)", self._state.value)
        if transport.get_write_buffer_size():
            transport.abort()  # a response stuck behind a client that does not read
        else:
            transport.close()


class LimitedSite(web.BaseSite):
    """A TCP site (like ``web.TCPSite``, or ``web.SockSite`` given ``sock``) whose
    connections have read deadlines and an optional cap; `serve` uses it.

    Use it in place of ``web.TCPSite`` to give a hub mounted in your own application
    (``app.add_subapp("/rx", hub.app())``) the protection that `serve` has::

        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        site = LimitedSite(runner, "0.0.0.0", 8080, max_connections=50_000)
        await site.start()

    Args:
        runner: A runner after ``setup()``. Its server's request handler is wrapped
            (once) so the site learns when each request's headers are complete.
        host, port: Where to listen (as for ``web.TCPSite``); or give ``sock``.
        sock: An already bound socket to listen on (as for ``web.SockSite``).
        header_timeout: Seconds for a request's headers to arrive, counted from the
            connect, or from the first byte of a later request on the connection
            (10 s). A TLS handshake gets the same bound.
        body_timeout: Seconds for a request's whole body to arrive, counted from the
            end of its headers (30 s, so at least about 140 KB/s for a 4 MiB message).
        idle_timeout: Seconds a connection may stay open between requests (60 s).
        max_connections: Connections open at once; one more is closed as soon as it
            is accepted (None, the default: no cap).

    Every timeout may be None to switch it off. Once a request's headers and body have
    arrived, no limit applies while its handler runs: SSE streams and WebSockets are
    never cut by them. A connection past a deadline is closed, which also ends a handler
    blocked in ``await request.read()``.
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None = None,
        port: int | None = None,
        *,
        sock: socket.socket | None = None,
        header_timeout: float | None = HEADER_TIMEOUT,
        body_timeout: float | None = BODY_TIMEOUT,
        idle_timeout: float | None = IDLE_TIMEOUT,
        max_connections: int | None = MAX_CONNECTIONS,
        ssl_context: SSLContext | None = None,
        backlog: int = 128,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
    ) -> None:
        self.limits = _Limits(header_timeout, body_timeout, idle_timeout, max_connections)
        if sock is not None and (host is not None or port is not None):
            raise ValueError("give either host and port, or sock, not both")
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._bind_host = host
        self._bind_port = 8443 if port is None and ssl_context else 8080 if port is None else port
        self._sock = sock
        self._reuse_address = reuse_address
        self._reuse_port = reuse_port
        self._guards: set[_Guard] = set()
        self._listening: asyncio.Server | None = None

    @property
    def name(self) -> str:
        """The URL this site listens on (its bound address once started)."""
        scheme = "https" if self._ssl_context else "http"
        if self._listening is not None and self._listening.sockets:
            host, port = self._listening.sockets[0].getsockname()[:2]
        elif self._sock is not None:
            host, port = self._sock.getsockname()[:2]
        else:
            host, port = self._bind_host or "0.0.0.0", self._bind_port
        return str(URL.build(scheme=scheme, host=host, port=port))

    @property
    def connections(self) -> int:
        """How many connections this site has open now."""
        return len(self._guards)

    async def start(self) -> None:
        """Listen; from now on every accepted connection is guarded."""
        await super().start()
        server = self._runner.server
        assert server is not None  # BaseSite refuses a runner that was not set up
        handlers = server.request_handler
        if not isinstance(handlers, _Handlers):
            handlers = _Handlers(handlers)
            server.request_handler = handlers

        def guard() -> _Guard:
            return _Guard(self, handlers)

        loop = asyncio.get_running_loop()
        tls = self._ssl_context
        handshake = self.limits.header_timeout if tls is not None else None
        if self._sock is not None:
            listening = await loop.create_server(
                guard,
                sock=self._sock,
                ssl=tls,
                backlog=self._backlog,
                ssl_handshake_timeout=handshake,
            )
        else:
            listening = await loop.create_server(
                guard,
                self._bind_host,
                self._bind_port,
                ssl=tls,
                backlog=self._backlog,
                reuse_address=self._reuse_address,
                reuse_port=self._reuse_port,
                ssl_handshake_timeout=handshake,
            )
        self._server = self._listening = listening
