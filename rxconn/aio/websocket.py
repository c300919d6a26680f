"""The WebSocket transport over aiohttp.

Lifecycle of one subscription (one link), all inside one task kept in
:data:`~rxconn.aio.TASKS`:

1. ``ClientSession.ws_connect`` (offering the ``rxconn.v1`` subprotocol unless
   ``hub=False``), bounded by ``open_timeout``; with ``rxconn.v1`` the
   hello/welcome exchange is part of the open.
2. ``Opened``; then received frames become payloads (text ``str``, binary
   ``bytes``), pongs and pings become ``ALIVE``; a writer task sends what the
   connection writes; a heartbeat task pings every ``heartbeat`` seconds and
   fails the link when a pong is missing for that long.
3. A close 1000/1001 completes; 1012/1013 fail with the advised delay; 1009
   (too big) and oversized frames fail with ``ProtocolError``; anything else
   fails with ``ConnectionLost``. Handshake 403/404 are fatal, a 401 is
   retried once at once (with the ``headers`` callable called again), 429/503
   honour ``Retry-After``, 410 is ``SessionExpired``.
4. Disposal cancels the task; its ``finally`` closes the socket, the
   response and the ``ClientSession`` if rxconn created it (a user-supplied
   session is never closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import aiohttp
from reactivex import abc
from yarl import URL

from .. import wire
from ..errors import (
    ConnectionLost,
    InvalidURL,
    ProtocolError,
    SessionExpired,
    TransportError,
    safe_url,
)
from ..quality import RoundTrip
from ..session import Accept, AckSchedule, HubSession, LinkQueue
from ..transport import ALIVE, Acked, LinkContext, LinkEvent, Opened, Payload
from ._acks import AckTimer
from ._base import AioTransport, Headers
from ._errors import translate
from ._frames import FrameWriter
from ._links import first_to_end
from ._tasks import TASKS


__all__ = ["WebSocketLink", "WebSocketTransport", "websocket"]

CLEAN_CLOSE_CODES: Final = frozenset({1000, 1001})
ADVISED_DELAY: Final = {1012: 2.0, 1013: 5.0}
"""Seconds to wait after close 1012 (restart) / 1013 (try later) when the reason names none."""
SESSION_GONE_CODE: Final = wire.SESSION_GONE_CODE
CLOSE_TIMEOUT: Final = 2.0


def _ws_url(url: str) -> str:
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise InvalidURL(str(url), "cannot be parsed") from exc
    scheme = {"http": "ws", "https": "wss"}.get(parsed.scheme, parsed.scheme)
    if scheme not in ("ws", "wss"):
        raise InvalidURL(url, "scheme must be ws, wss, http or https")
    if not parsed.host:
        raise InvalidURL(url, "no host")
    return str(parsed.with_scheme(scheme))


_HTTP_SCHEME: Final = {"ws": "http", "wss": "https"}


def _origin(url: URL) -> URL:
    """``url``'s origin, with ws(s) counted as http(s) (a handshake may redirect across them)."""
    return url.with_scheme(_HTTP_SCHEME.get(url.scheme, url.scheme)).origin()


def _same_origin_redirects(url: str) -> aiohttp.TraceConfig:
    """A trace hook that refuses a redirect to another origin (before aiohttp follows it)."""
    origin = _origin(URL(url))

    async def on_redirect(
        _: aiohttp.ClientSession, __: Any, params: aiohttp.TraceRequestRedirectParams
    ) -> None:
        try:
            target = params.url.join(URL(params.response.headers.get("Location", "")))
            same = _origin(target) == origin
        except ValueError:
            same = False
        if not same:
            params.response.close()
            raise TransportError(
                "websocket",
                f"{safe_url(url)} redirects to another origin; not following it "
                "with the transport's headers",
                status=params.response.status,
                fatal=True,
            )

    trace = aiohttp.TraceConfig()
    trace.on_request_redirect.append(on_redirect)
    return trace


class _Done(Exception):
    """Internal: the peer closed cleanly."""


class WebSocketLink(FrameWriter):
    """The writable side of one open WebSocket link; see :class:`rxconn.transport.Link`."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, observer: abc.ObserverBase[LinkEvent]
    ) -> None:
        super().__init__(ws, v1=False)
        self._observer = observer
        self.hub: HubSession | None = None
        self._queue = LinkQueue()
        self._last_written = 0
        self._unreported = False
        self.closed = False
        self.quitting = False
        self.in_seq = 0
        """Sequence number of the last hub message seen on this link."""

    def speak_v1(self, hub: HubSession) -> None:
        """The handshake made this a session link: tag text, let the hub acknowledge."""
        self.hub = hub
        self.v1 = True

    def quit(self) -> None:
        """End the hub session when this link closes (``Connection.close()``)."""
        self.quitting = True

    def close_writes(self) -> None:
        """The link is ending: later writes are ignored (the connection rewinds its outbox)."""
        self.closed = True

    def write(self, first_seq: int, payloads: Sequence[Payload]) -> None:
        if self.closed:
            return  # the link is being replaced; the connection rewinds its outbox
        if self._queue.put(first_seq, payloads):
            self.wake()

    def due(self) -> Iterator[tuple[int, Payload]]:
        queue = self._queue
        while queue:
            seq = queue.head_seq
            yield seq, queue.popleft()

    def written(self, seq: int) -> None:
        self._last_written = seq
        self._unreported = True

    def flushed(self) -> None:
        # Plain links: what the socket took counts as accepted, even if a later
        # frame of the batch failed (so it is not sent twice).
        if self._unreported and self.hub is None:
            self._unreported = False
            self._observer.on_next(Acked(self._last_written))


class WebSocketTransport(AioTransport):
    """Describe WebSocket links to ``url`` (``ws(s)://`` or ``http(s)://``); opens nothing.

    Args:
        url: The endpoint; ``http(s)`` is turned into ``ws(s)``.
        protocols: Extra subprotocols to offer.
        headers: Extra handshake headers (never logged): a mapping, or a
            callable (sync or async) returning one, called for every link
            open so that a refreshed token is always used. A 401 on open
            calls it once more and retries at once; a second 401 in a row
            is fatal.
        heartbeat: Ping every ``heartbeat`` s; a pong missing that long is a dead link.
        open_timeout: Bound on the handshake (and the hub welcome).
        max_message_size: Larger inbound messages fail the link with ``ProtocolError``.
        hub: Offer the ``rxconn.v1`` session subprotocol (plain frames if the server declines).
        session: An ``aiohttp.ClientSession`` to use (never closed by rxconn).
        ssl: Passed to aiohttp; certificates are verified by default.
        max_send_size: The server's message size limit, if known: ``send()``
            then refuses larger payloads at once (``MessageTooLarge``). A server
            that closes with 1009 (message too big) stops the connection
            (fatal ``ProtocolError``) rather than being sent the payload forever.

    Raises:
        InvalidURL: for a URL without host or with another scheme.
    """

    kind = "websocket"
    dynamic_headers = True

    def __init__(
        self,
        url: str,
        *,
        protocols: Sequence[str] = (),
        headers: Headers | None = None,
        heartbeat: float | None = 15.0,
        open_timeout: float = 10.0,
        max_message_size: int = 4 * 1024 * 1024,
        hub: bool = True,
        session: aiohttp.ClientSession | None = None,
        ssl: Any = True,
        max_send_size: int | None = None,
    ) -> None:
        super().__init__(
            _ws_url(url),
            headers=headers,
            open_timeout=open_timeout,
            max_message_size=max_message_size,
            max_send_size=max_send_size,
            hub=hub,
            session=session,
            ssl=ssl,
        )
        if heartbeat is not None and not heartbeat > 0:
            raise ValueError(f"heartbeat must be > 0 or None, got {heartbeat!r}")
        self.protocols = tuple(protocols)
        self.heartbeat = heartbeat

    # ------------------------------------------------------------- the task

    async def _run(self, observer: abc.ObserverBase[LinkEvent], ctx: LinkContext) -> None:
        try:
            await self._link(observer, ctx)
        except asyncio.CancelledError:
            raise  # disposal: the finally blocks below closed everything
        except _Done:
            observer.on_completed()
        except Exception as exc:
            observer.on_error(translate("websocket", self.url, exc, opening=False))

    async def _link(self, observer: abc.ObserverBase[LinkEvent], ctx: LinkContext) -> None:
        own = self.session is None
        # With headers of the user's, a handshake redirect to another origin is refused
        # (aiohttp would carry every header but Authorization there). A user-supplied
        # session follows its own redirect policy.
        guard = [_same_origin_redirects(self.url)] if self.has_headers else []
        http = aiohttp.ClientSession(trace_configs=guard) if own else self.session
        assert http is not None
        try:
            await self._connected(http, observer, ctx)
        finally:
            if own:
                await http.close()

    async def _connected(
        self,
        http: aiohttp.ClientSession,
        observer: abc.ObserverBase[LinkEvent],
        ctx: LinkContext,
    ) -> None:
        offer = self.protocols
        if self.hub and wire.SUBPROTOCOL not in offer:
            offer = (wire.SUBPROTOCOL, *offer)
        try:
            async with asyncio.timeout(self.open_timeout):
                headers = await self._user_headers()  # a callable's: called for every link
                ws = await http.ws_connect(
                    self.url,
                    protocols=offer,
                    headers=headers,
                    autoping=False,
                    heartbeat=None,
                    max_msg_size=self.max_message_size,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT),
                    ssl=self.ssl,
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = translate("websocket", self.url, exc, opening=True)
            if error is exc:  # an rxconn error (the headers callable's, say): as it is
                raise
            raise error from exc
        link = WebSocketLink(ws, observer)
        try:
            await self._serve(ws, link, observer, ctx)
        finally:
            link.closed = True
            await self._close(ws, link)

    async def _close(self, ws: aiohttp.ClientWebSocketResponse, link: WebSocketLink) -> None:
        if ws.closed:
            return
        try:
            # Shielded (and kept in TASKS): a second cancellation cannot cut the handshake
            # half-way, and the close goes on, bounded by CLOSE_TIMEOUT.
            await asyncio.shield(TASKS.spawn(self._goodbye(ws, link), name="rxconn ws close"))
        except asyncio.CancelledError:
            # Cancelled again while closing: drop the connection without the handshake.
            with contextlib.suppress(Exception):
                ws._response.close()  # noqa: SLF001  (aiohttp's own cancellation path)
            raise
        except Exception:  # the socket is already gone: nothing left to release
            with contextlib.suppress(Exception):
                ws._response.close()  # noqa: SLF001

    async def _goodbye(self, ws: aiohttp.ClientWebSocketResponse, link: WebSocketLink) -> None:
        if link.quitting and link.hub is not None:
            with contextlib.suppress(Exception):
                await ws.send_str(wire.QUIT)
        await ws.close()

    async def _serve(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        link: WebSocketLink,
        observer: abc.ObserverBase[LinkEvent],
        ctx: LinkContext,
    ) -> None:
        hub: HubSession | None = None
        next_seq: int | None = None
        if ws.protocol == wire.SUBPROTOCOL and not ctx.probe:  # a probe sends no hello
            hub = ctx.session = ctx.session or HubSession()
            next_seq = await self._handshake(ws, hub, link)
        if hub is not None:
            link.speak_v1(hub)
        if ctx.probe:
            await self._probe(ws)
        observer.on_next(Opened(link, "websocket", next_seq))
        pongs = [0]  # pongs received so far, shared by the reader and the heartbeat
        pinged = [0.0]  # when the heartbeat's unanswered ping left (0: none)
        # Children of this task: awaited below, so they are not TASKS' to report.
        tasks = [
            asyncio.create_task(self._read(ws, link, hub, observer, pongs, pinged)),
            asyncio.create_task(link.run()),
        ]
        if self.heartbeat is not None:
            tasks.append(asyncio.create_task(self._heartbeat(ws, pongs, pinged, observer)))
        await first_to_end("websocket", tasks, settle=CLOSE_TIMEOUT, on_end=link.close_writes)

    async def _handshake(
        self, ws: aiohttp.ClientWebSocketResponse, hub: HubSession, link: WebSocketLink
    ) -> int:
        """rxconn.v1: present the session, wait for the welcome; return the next seq to send."""
        last = hub.received if hub.id is not None else 0
        await ws.send_str(wire.encode_hello(wire.Hello(hub.id, last, hub.key)))
        try:
            async with asyncio.timeout(self.open_timeout):
                msg = await ws.receive()
                # A busy hub's heartbeat may ping before its welcome (its claim on a
                # shared session waits for Redis): answer, and wait on.
                while msg.type in _CONTROL:
                    if msg.type is aiohttp.WSMsgType.PING:
                        await ws.pong(msg.data)
                    msg = await ws.receive()
        except TimeoutError as exc:
            raise translate("websocket", self.url, exc, opening=True) from exc
        if msg.type is aiohttp.WSMsgType.TEXT:
            tag = msg.data[:1]
            try:
                control = wire.decode_control(msg.data)
            except wire.WireError as exc:
                # A welcome or refusal we cannot read is a broken hub (retried, with
                # backoff); any other first frame means the peer does not speak rxconn.v1.
                broken_hub = tag in (wire.TAG_WELCOME, wire.TAG_REFUSAL)
                raise ProtocolError(
                    "websocket", f"bad welcome: {exc}", fatal=not broken_hub
                ) from exc
            if isinstance(control, wire.Welcome):
                hub.start(control.session, control.resumed, control.key)
                # The hub numbers what it sends from our "last" on (from 0 when new).
                link.in_seq = last if control.resumed else 0
                return control.last + 1
            if isinstance(control, wire.Refusal):
                if control.status == 410:
                    hub.forget()
                    raise SessionExpired(
                        "websocket", control.reason or "session unknown", status=410, retry_after=0
                    )
                raise TransportError("websocket", control.reason, status=control.status)
        # A link that breaks or closes before the welcome (a hub killed mid-handshake) is
        # retried like any lost link; only a peer that answers something else is not rxconn.
        raise (
            self._closed_error(ws, msg)
            if msg.type in _CLOSING or msg.type is aiohttp.WSMsgType.ERROR
            else ProtocolError(
                "websocket", "the hub did not answer the hello with a welcome", fatal=True
            )
        )

    async def _probe(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """One verified round trip (ping → pong) before the probe counts as open."""
        await ws.ping(b"rxconn-probe")
        async with asyncio.timeout(self.open_timeout):
            while True:
                msg = await ws.receive()
                if msg.type is aiohttp.WSMsgType.PONG:
                    return
                if msg.type is aiohttp.WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type in _CLOSING or msg.type is aiohttp.WSMsgType.ERROR:
                    raise self._closed_error(ws, msg)

    async def _heartbeat(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        pongs: list[int],
        pinged: list[float],
        observer: abc.ObserverBase[LinkEvent],
    ) -> None:
        """Ping every ``heartbeat`` seconds; the reader times each pong (``RoundTrip``)."""
        assert self.heartbeat is not None
        loop = asyncio.get_running_loop()
        while True:
            seen = pongs[0]
            pinged[0] = loop.time()
            await ws.ping()
            await asyncio.sleep(self.heartbeat)
            if pongs[0] == seen:
                observer.on_next(RoundTrip(None))
                raise ConnectionLost("websocket", f"no pong within {self.heartbeat:g} s")

    async def _read(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        link: WebSocketLink,
        hub: HubSession | None,
        observer: abc.ObserverBase[LinkEvent],
        pongs: list[int],
        pinged: list[float],
    ) -> None:
        on_next = observer.on_next
        TEXT, BINARY = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY
        if hub is None:
            while True:
                msg = await ws.receive()
                kind = msg.type
                if kind is TEXT or kind is BINARY:
                    on_next(msg.data)
                else:
                    await self._not_data(ws, msg, pongs, pinged, on_next)
        inbound = hub.inbound
        assert inbound is not None
        seq = link.in_seq
        acks = AckTimer(AckSchedule(), lambda: link.ack(inbound.received))
        delivered = acks.delivered
        DELIVER, GAP = Accept.DELIVER, Accept.GAP
        tag = wire.TAG_MESSAGE  # wire.is_text_data / decode_text, inlined: the hot path
        try:
            while True:
                msg = await ws.receive()
                kind = msg.type
                if kind is BINARY or (kind is TEXT and msg.data[:1] == tag):
                    data = msg.data if kind is BINARY else msg.data[1:]
                    seq += 1
                    verdict = inbound.accept(seq)
                    if verdict is DELIVER:
                        on_next(data)
                    elif verdict is GAP:
                        raise ProtocolError("websocket", f"gap in the hub's messages at {seq}")
                    delivered()
                elif kind is TEXT:
                    try:
                        control = wire.decode_control(msg.data)
                    except wire.WireError as exc:
                        raise ProtocolError("websocket", f"malformed frame: {exc}") from exc
                    if type(control) is int:
                        on_next(Acked(control))
                    elif isinstance(control, wire.Refusal) and control.status == 410:
                        hub.forget()
                        raise SessionExpired("websocket", control.reason, status=410, retry_after=0)
                    else:
                        raise ProtocolError(
                            "websocket", f"unexpected control frame {msg.data[:1]!r}"
                        )
                else:
                    await self._not_data(ws, msg, pongs, pinged, on_next)
        finally:
            acks.cancel()

    async def _not_data(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        msg: aiohttp.WSMessage,
        pongs: list[int],
        pinged: list[float],
        on_next: Callable[[LinkEvent], None],
    ) -> None:
        """Pings and pongs prove life (a ping is answered; the heartbeat's pong is timed);
        anything else ends the link."""
        if msg.type is aiohttp.WSMsgType.PONG:
            pongs[0] += 1
            if pinged[0]:
                rtt = asyncio.get_running_loop().time() - pinged[0]
                pinged[0] = 0.0
                on_next(RoundTrip(rtt))
                return
        elif msg.type is aiohttp.WSMsgType.PING:
            await ws.pong(msg.data)
        else:
            raise self._closed_error(ws, msg)
        on_next(ALIVE)

    def _closed_error(
        self, ws: aiohttp.ClientWebSocketResponse, msg: aiohttp.WSMessage
    ) -> Exception:
        """Turn the end of the frame stream into _Done or the right rxconn error."""
        if msg.type is aiohttp.WSMsgType.ERROR:
            exc = msg.data if isinstance(msg.data, BaseException) else ws.exception()
            code = getattr(exc, "code", None)
            if code == 1009 or isinstance(exc, aiohttp.WebSocketError) and code == 1009:
                error: Exception = ProtocolError(
                    "websocket", f"message larger than max_message_size={self.max_message_size}"
                )
            elif isinstance(exc, aiohttp.WebSocketError):
                error = ProtocolError("websocket", f"invalid frame: {exc}")
            elif isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
                error = ConnectionLost("websocket", "no pong from the server")
            else:
                error = ConnectionLost("websocket", f"read failed: {exc}")
            error.__cause__ = exc
            return error
        code = ws.close_code
        reason = msg.extra if msg.type is aiohttp.WSMsgType.CLOSE and msg.extra else ""
        if code in CLEAN_CLOSE_CODES:
            return _Done()
        if code == SESSION_GONE_CODE:
            return SessionExpired(
                "websocket", reason or "session unknown", status=410, retry_after=0
            )
        if code in ADVISED_DELAY:
            delay = ADVISED_DELAY[code]
            with contextlib.suppress(ValueError, IndexError):
                named = float(str(reason).split()[-1])
                if math.isfinite(named) and named >= 0:  # nan, inf, -1: not advice
                    delay = named
            return ConnectionLost("websocket", f"closed by the server ({code})", retry_after=delay)
        if code == 1009:
            # The server refused one of *our* messages as too big: sending it again on
            # the next link would loop forever, so stop (close() hands it back).
            return ProtocolError(
                "websocket", "the server refused a message as too big (1009)", fatal=True
            )
        exc = ws.exception()
        lost = ConnectionLost("websocket", f"closed abnormally (code {code})")
        lost.__cause__ = exc
        return lost


_CONTROL: Final = frozenset({aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG})
_CLOSING: Final = frozenset(
    {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED}
)


websocket = WebSocketTransport
"""``rxconn.websocket(...)``: the public name of :class:`WebSocketTransport`."""
