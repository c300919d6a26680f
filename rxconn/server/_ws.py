"""The hub's WebSocket endpoint: ``rxconn.v1`` sessions and plain-frame clients.

One :class:`WebSocketServerLink` per socket, from the upgrade to the close: it
can be closed from outside (shutdown, replacement, a switch that disables
WebSocket) while it waits for the hello as well as while it serves a session,
and it remembers the close code the handler then uses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, Literal

import aiohttp
from aiohttp import web

from .. import wire
from .._types import Payload
from ..aio._acks import AckTimer
from ..aio._frames import FrameWriter
from ..errors import ConnectionClosedError
from ..session import Accept, AckSchedule, ReplayGap
from ._session import Session
from ._settings import RETRY_AFTER, Unavailable


if TYPE_CHECKING:
    from ._registry import Registry

__all__ = ["WebSocketServerLink", "handle_websocket"]

HELLO_TIMEOUT: Final = 10.0
CLOSE_REASON_BYTES: Final = 120
APPLY_BATCH: Final = 1000
"""Most client messages applied in Redis in one script (shared sessions)."""


class WebSocketServerLink(FrameWriter):
    """The hub side of one WebSocket: writes the session's log after ``cursor``."""

    transport: Final[Literal["websocket"]] = "websocket"

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.v1 = ws.ws_protocol == wire.SUBPROTOCOL
        super().__init__(ws, self.v1)
        self.ws = ws
        self.session: Session | None = None
        self.cursor = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed = asyncio.Event()

    def close(self, code: int, reason: str) -> None:
        """End the link with ``code`` (the first close wins); safe at any time."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            self.closed.set()
            self.stop()

    # FrameWriter: what is due is the session's log after the cursor.

    def due(self) -> Iterable[tuple[int, Payload]]:
        session = self.session
        if session is None or session.link is not self:
            return ()
        try:
            return list(session.log.after(self.cursor))  # a snapshot: sends may append
        except ReplayGap as gap:
            self.close(1008, str(gap))
            return ()

    def written(self, seq: int) -> None:
        self.cursor = seq

    def flushed(self) -> None:
        if not self.v1 and self.session is not None:
            self.session.log.ack(self.cursor)  # plain clients cannot ask for replay

    async def finish(self) -> None:
        """Close the socket with the recorded code (1001 if none); a last ack first (v1)."""
        ws = self.ws
        if ws.closed:
            return
        if self.v1 and self.session is not None:
            # A graceful close (shutdown, replacement) leaves the client nothing to resend.
            with contextlib.suppress(Exception):
                await ws.send_str(wire.encode_ack(self.session.inbound.received))
        code = self.close_code or aiohttp.WSCloseCode.GOING_AWAY
        with contextlib.suppress(Exception):  # closing also stops aiohttp's heartbeat timer
            await ws.close(code=code, message=self.close_reason.encode()[:CLOSE_REASON_BYTES])


async def handle_websocket(request: web.Request, registry: Registry) -> web.StreamResponse:
    settings = registry.settings
    ws = web.WebSocketResponse(
        protocols=(wire.SUBPROTOCOL,),
        heartbeat=settings.ping_interval,
        max_msg_size=settings.max_message_size + 1,  # + the one-character rxconn.v1 tag
        timeout=2.0,
    )
    await ws.prepare(request)
    link = WebSocketServerLink(ws)
    registry.links.add(link)
    try:
        if link.v1:
            session = await _hello(link, registry)
        else:
            session = registry.create("websocket", "websocket")
        if session is not None:
            await _serve(link, session)
    except Unavailable:
        link.close(1013, f"try again in {RETRY_AFTER}")  # shared sessions, Redis away
    finally:
        registry.links.discard(link)
        await link.finish()
    return ws


async def _hello(link: WebSocketServerLink, registry: Registry) -> Session | None:
    """Wait for the hello (a probe sends none and just pings); the session it names, or None."""
    ws = link.ws
    receive = asyncio.ensure_future(ws.receive())
    closed = asyncio.ensure_future(link.closed.wait())
    try:
        done, _ = await asyncio.wait(
            (receive, closed), timeout=HELLO_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (receive, closed):
            task.cancel()
        await asyncio.gather(receive, closed, return_exceptions=True)
    if link.close_code is not None:
        return None  # closed from outside (shutdown, WebSocket disabled) while waiting
    if receive not in done:
        link.close(1008, "no hello")
        return None
    msg = receive.result()
    if msg.type is not aiohttp.WSMsgType.TEXT:
        return None  # a probe closing, or a broken client
    try:
        hello = wire.decode_control(msg.data)
    except wire.WireError as exc:
        link.close(1002, f"bad hello: {exc}")
        return None
    if not isinstance(hello, wire.Hello):
        link.close(1002, "expected a hello")
        return None
    if hello.session is None:
        session = await registry.open("rxconn", "websocket")
        await ws.send_str(wire.encode_welcome(wire.Welcome(session.id, 0, False, session.key)))
        return session
    known = await registry.find(hello.session, hello.key, hello.last, "websocket")
    # Only the session's own client (it knows the key) may resume it, or end it by
    # asking for what is no longer kept; anyone else is told 410 and changes nothing.
    owner = known is not None and known.kind == "rxconn" and known.authenticate(hello.key)
    if known is None or not owner or not known.log.can_resume(hello.last):
        if known is not None and owner:
            known.end("client asked for messages no longer kept")
        await ws.send_str(wire.encode_refusal(wire.Refusal(410, "session unknown or expired")))
        link.close(wire.SESSION_GONE_CODE, "session gone")
        return None
    known.acknowledged(hello.last)
    link.cursor = hello.last
    welcome = wire.Welcome(known.id, known.inbound.received, True)
    await ws.send_str(wire.encode_welcome(welcome))
    return known


async def _serve(link: WebSocketServerLink, session: Session) -> None:
    """Attach ``link`` to ``session`` and run its writer and reader until either ends."""
    link.session = session
    session.attach(link)
    if link.close_code is not None:  # closed from outside while the hello was answered
        session.detach(link)  # the grace period starts (a plain session ends)
        return
    link.wake()  # replay what the client has not seen
    # Children of this handler: awaited below, so they are not TASKS' to report.
    writer = asyncio.create_task(link.run())
    reader = asyncio.create_task(_read(link, session))
    stop = asyncio.create_task(link.closed.wait())
    try:
        await asyncio.wait((writer, reader, stop), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (writer, reader, stop):
            task.cancel()
        await asyncio.gather(writer, reader, stop, return_exceptions=True)
        session.detach(link)


async def _read(link: WebSocketServerLink, session: Session) -> None:
    TEXT, BINARY = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY
    ws = link.ws
    if not link.v1:
        deliver_next = session.deliver_next
        async for msg in ws:
            if msg.type is TEXT or msg.type is BINARY:
                deliver_next(msg.data)
            elif msg.type is aiohttp.WSMsgType.ERROR:
                return
        return
    acks = AckTimer(AckSchedule(), lambda: link.ack(session.inbound.received))
    try:
        if session.shared is not None:
            await _read_shared(link, session, acks)
            return
        seq = session.inbound.received + 1
        tag = wire.TAG_MESSAGE  # wire.is_text_data / decode_text, inlined: the hot path
        async for msg in ws:
            kind = msg.type
            payload: Payload
            if kind is BINARY:
                payload = msg.data
            elif kind is TEXT and msg.data[:1] == tag:
                payload = msg.data[1:]
            elif kind is TEXT:
                if not _control(link, session, msg.data):
                    return
                continue
            else:
                return
            if session.link is not link:
                return
            if session.deliver(seq, payload) is Accept.GAP:
                link.close(1002, "message out of sequence")
                return
            seq += 1
            acks.delivered()
    finally:
        acks.cancel()


async def _read_shared(link: WebSocketServerLink, session: Session, acks: AckTimer) -> None:
    """The reader of a session shared in Redis: frames that arrive while a batch is being
    applied there form the next batch (one round trip for many messages), and each is
    acknowledged only once Redis has applied it."""
    TEXT, BINARY = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY
    tag = wire.TAG_MESSAGE
    pending: list[Payload] = []
    ready = asyncio.Event()
    idle = asyncio.Event()
    idle.set()
    seq = session.inbound.received + 1

    async def apply() -> None:
        nonlocal seq
        while True:
            await ready.wait()
            ready.clear()
            while pending:
                batch = pending[:APPLY_BATCH]
                del pending[:APPLY_BATCH]
                try:
                    verdict = await session.receive(seq, batch)
                except Unavailable:
                    link.close(1013, f"try again in {RETRY_AFTER}")  # resent: not acked
                    return
                except ConnectionClosedError:
                    link.close(1012, "session moved or ended")
                    return
                if verdict is Accept.GAP:
                    link.close(1002, "message out of sequence")
                    return
                seq += len(batch)
                for _ in batch:
                    acks.delivered()
            idle.set()

    applier = asyncio.create_task(apply())
    try:
        async for msg in link.ws:
            kind = msg.type
            if kind is BINARY:
                pending.append(msg.data)
            elif kind is TEXT and msg.data[:1] == tag:
                pending.append(msg.data[1:])
            elif kind is TEXT:
                if msg.data == wire.QUIT:  # the client's last data is applied first
                    await idle.wait()
                if not _control(link, session, msg.data):
                    return
                continue
            else:
                return
            if session.link is not link or applier.done():
                return
            idle.clear()
            ready.set()
    finally:
        applier.cancel()
        await asyncio.gather(applier, return_exceptions=True)


def _control(link: WebSocketServerLink, session: Session, frame: str) -> bool:
    """Apply a control frame from the client; False when the link must end."""
    try:
        control = wire.decode_control(frame)
    except wire.WireError as exc:
        link.close(1002, f"malformed frame: {exc}")
        return False
    if control is None:
        session.end("closed by the client")
        return False
    if type(control) is int:
        session.acknowledged(control)
        return True
    link.close(1002, "unexpected control frame")
    return False
