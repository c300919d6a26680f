"""The hub's WebSocket endpoint: ``rxconn.v1`` sessions and plain-frame clients."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from .. import wire
from ..aio._tasks import TASKS
from ..session import ReplayGap
from ..transport import Payload
from ._session import Session


if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["handle_websocket"]

HELLO_TIMEOUT = 10.0
ACK_EVERY = 1024
ACK_DELAY = 0.05


class WebSocketServerLink:
    """The hub side of one WebSocket: a writer that drains the session log after ``cursor``."""

    transport = "websocket"

    def __init__(self, ws: web.WebSocketResponse, session: Session, v1: bool, cursor: int) -> None:
        self.ws = ws
        self.session = session
        self.v1 = v1
        self.cursor = cursor
        self._wake = asyncio.Event()
        self._ack: str | None = None  # only the newest ack matters: they are cumulative
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def ack(self, frame: str) -> None:
        self._ack = frame
        self._wake.set()

    def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            self.closed.set()
            self._wake.set()

    async def run_writer(self) -> None:
        ws, session, v1 = self.ws, self.session, self.v1
        while self.close_code is None:
            await self._wake.wait()
            self._wake.clear()
            if self.close_code is not None:
                return
            if self._ack is not None:
                frame, self._ack = self._ack, None
                await ws.send_str(frame)
            if session.link is not self:
                continue
            try:
                batch = list(session.log.after(self.cursor))
            except ReplayGap as gap:
                self.close(1008, str(gap))
                return
            for seq, payload in batch:
                if type(payload) is bytes:
                    await ws.send_bytes(payload)
                elif v1:
                    await ws.send_str(wire.encode_text(payload))  # type: ignore[arg-type]
                else:
                    await ws.send_str(payload)  # type: ignore[arg-type]
                self.cursor = seq
            if not v1 and batch:
                session.log.ack(self.cursor)  # plain clients cannot ask for replay


async def handle_websocket(request: web.Request, hub: Hub) -> web.StreamResponse:
    ws = web.WebSocketResponse(
        protocols=(wire.SUBPROTOCOL,),
        heartbeat=hub.ping_interval,
        max_msg_size=hub.max_message_size + 1,  # + the one-character rxconn.v1 tag
        timeout=2.0,
    )
    await ws.prepare(request)
    hub.links.add(ws_closer := _Closer(ws))
    try:
        if ws.ws_protocol == wire.SUBPROTOCOL:
            await _serve_v1(ws, hub, ws_closer)
        else:
            session = hub._create("websocket", "websocket")
            link = WebSocketServerLink(ws, session, v1=False, cursor=0)
            await _serve_link(ws, hub, session, link, ws_closer, v1=False, first_in=1)
    finally:
        hub.links.discard(ws_closer)
        if not ws.closed:
            code = ws_closer.code or aiohttp.WSCloseCode.GOING_AWAY
            with contextlib.suppress(Exception):
                await ws.close(code=code, message=ws_closer.reason.encode()[:120])
    return ws


class _Closer:
    """Lets the hub close a socket from outside its handler (shutdown, replacement)."""

    transport = "websocket"

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.code: int | None = None
        self.reason = ""
        self.link: WebSocketServerLink | None = None

    def close(self, code: int, reason: str) -> None:
        if self.code is None:
            self.code, self.reason = code, reason
        if self.link is not None:
            self.link.close(code, reason)
        elif not self.ws.closed:  # still waiting for a hello: closing ends the wait
            TASKS.spawn(self._close_now(), name="rxconn hub close")

    async def _close_now(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code=self.code or 1001, message=self.reason.encode()[:120])


async def _serve_v1(ws: web.WebSocketResponse, hub: Hub, closer: _Closer) -> None:
    """Wait for the hello (a probe sends none and just pings), then serve the session."""
    try:
        async with asyncio.timeout(HELLO_TIMEOUT):
            msg = await ws.receive()
    except TimeoutError:
        closer.close(1008, "no hello")
        return
    if msg.type is not aiohttp.WSMsgType.TEXT:
        return  # a probe closing, or a broken client
    try:
        hello = wire.decode_control(msg.data)
    except wire.WireError as exc:
        closer.close(1002, f"bad hello: {exc}"[:120])
        return
    if not isinstance(hello, wire.Hello):
        closer.close(1002, "expected a hello")
        return
    if hello.session is None:
        session = hub._create("rxconn", "websocket")
        resumed = False
    else:
        known = hub.session(hello.session)
        if known is None or known.kind != "rxconn" or not known.log.can_resume(hello.last):
            if known is not None and known.kind == "rxconn":
                known.end("client asked for messages no longer kept")
            await ws.send_str(wire.encode_refusal(wire.Refusal(410, "session unknown or expired")))
            closer.close(4410, "session gone")
            return
        session, resumed = known, True
    cursor = hello.last if resumed else 0
    if resumed:
        session.log.ack(hello.last)
    link = WebSocketServerLink(ws, session, v1=True, cursor=cursor)
    await ws.send_str(
        wire.encode_welcome(wire.Welcome(session.id, session.inbound.received, resumed))
    )
    await _serve_link(
        ws, hub, session, link, closer, v1=True, first_in=session.inbound.received + 1
    )


async def _serve_link(
    ws: web.WebSocketResponse,
    hub: Hub,
    session: Session,
    link: WebSocketServerLink,
    closer: _Closer,
    *,
    v1: bool,
    first_in: int,
) -> None:
    closer.link = link
    session.attach(link)
    link.wake()  # replay what the client has not seen
    # Children of this handler: awaited below, so they are not TASKS' to report.
    writer = asyncio.create_task(link.run_writer())
    reader = asyncio.create_task(_read(ws, session, link, v1, first_in))
    stop = asyncio.create_task(link.closed.wait())
    try:
        await asyncio.wait((writer, reader, stop), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (writer, reader, stop):
            task.cancel()
        await asyncio.gather(writer, reader, stop, return_exceptions=True)
        if v1 and not ws.closed:
            # A last cumulative ack, so a graceful close (shutdown, replacement)
            # leaves the client nothing to resend.
            with contextlib.suppress(Exception):
                await ws.send_str(wire.encode_ack(session.inbound.received))
        if link.close_code is not None and closer.code is None:
            closer.code, closer.reason = link.close_code, link.close_reason
        session.detach(link)


async def _read(
    ws: web.WebSocketResponse, session: Session, link: WebSocketServerLink, v1: bool, seq: int
) -> None:
    TEXT, BINARY = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY
    if not v1:
        deliver_next = session.deliver_next
        async for msg in ws:
            if msg.type is TEXT or msg.type is BINARY:
                deliver_next(msg.data)
            elif msg.type is aiohttp.WSMsgType.ERROR:
                return
        return
    loop = asyncio.get_running_loop()
    unacked = 0
    timer: asyncio.TimerHandle | None = None

    def ack() -> None:
        nonlocal unacked, timer
        timer = None
        unacked = 0
        link.ack(wire.encode_ack(session.inbound.received))

    try:
        async for msg in ws:
            kind = msg.type
            payload: Payload
            if kind is BINARY:
                payload = msg.data
            elif kind is TEXT and msg.data[:1] == wire.TAG_MESSAGE:
                payload = msg.data[1:]
            elif kind is TEXT:
                try:
                    control = wire.decode_control(msg.data)
                except wire.WireError as exc:
                    link.close(1002, f"malformed frame: {exc}"[:120])
                    return
                if control is None:
                    session.end("closed by the client")
                    return
                if type(control) is int:
                    session.log.ack(control)
                    continue
                link.close(1002, "unexpected control frame")
                return
            else:
                return
            if session.link is not link:
                return
            if session.deliver(seq, payload) is None:
                link.close(1002, "message out of sequence")
                return
            seq += 1
            unacked += 1
            if unacked >= ACK_EVERY:
                if timer is not None:
                    timer.cancel()
                ack()
            elif timer is None:
                timer = loop.call_later(ACK_DELAY, ack)
    finally:
        if timer is not None:
            timer.cancel()
