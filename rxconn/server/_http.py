"""The hub's HTTP endpoints: the SSE stream (``GET /events``) and batched ``POST /messages``."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from aiohttp import web

from .. import wire
from ..session import ReplayGap
from ..sse import encode_comment, encode_event
from ._session import Session


if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["handle_events", "handle_messages"]

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
    "X-Rxconn": "v1",  # tells an rxconn client to wait for the session event
}
RXCONN_HEADER = "X-Rxconn"


class SseServerLink:
    """The hub side of one SSE stream: writes the session log after ``cursor`` as events."""

    transport = "http"

    def __init__(self, resp: web.StreamResponse, session: Session, cursor: int) -> None:
        self.resp = resp
        self.session = session
        self.cursor = cursor
        self._wake = asyncio.Event()
        self.closed = False

    def wake(self) -> None:
        self._wake.set()

    def close(self, code: int, reason: str) -> None:
        self.closed = True
        self._wake.set()

    async def run(self, ping_interval: float) -> None:
        session, resp = self.session, self.resp
        ping = encode_comment("ping")
        while not self.closed:
            try:
                async with asyncio.timeout(ping_interval):
                    await self._wake.wait()
            except TimeoutError:
                await resp.write(ping)
                continue
            self._wake.clear()
            if self.closed or session.link is not self:
                return
            try:
                batch = list(session.log.after(self.cursor))
            except ReplayGap as gap:
                session.end(str(gap), code=1008)
                return
            if not batch:
                continue
            parts = []
            for seq, payload in batch:
                event, data = wire.encode_sse_payload(payload)
                parts.append(
                    encode_event(
                        data,
                        event=None if event == "message" else event,
                        id=wire.encode_event_id(session.id, seq),
                    )
                )
            await resp.write(b"".join(parts))
            self.cursor = batch[-1][0]


def _json(status: int, body: dict[str, object], headers: dict[str, str]) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


async def handle_events(request: web.Request, hub: Hub, cors: dict[str, str]) -> web.StreamResponse:
    last_event_id = request.headers.get("Last-Event-ID") or request.query.get("lastEventId", "")
    is_rxconn = request.headers.get(RXCONN_HEADER) == "v1"
    session: Session | None = None
    cursor = 0
    parsed = wire.decode_event_id(last_event_id) if last_event_id else None
    if parsed is not None:
        known = hub.session(parsed[0])
        if known is not None and known.resumable and known.log.can_resume(parsed[1]):
            session, cursor = known, parsed[1]
            session.log.ack(cursor)
        elif known is not None and known.resumable:
            known.end("client asked for messages no longer kept")
    resumed = session is not None
    if session is None:
        session = hub._create("rxconn" if is_rxconn else "eventsource", "http")
    resp = web.StreamResponse(status=200, headers={**SSE_HEADERS, **cors})
    await resp.prepare(request)
    link = SseServerLink(resp, session, cursor)
    post = str(request.app.router["rxconn-messages"].url_for())
    hello = {
        "session": session.id,
        "post": post,
        "last": session.inbound.received,
        "resumed": resumed,
    }
    await resp.write(
        encode_event(
            json.dumps(hello),
            event=wire.SSE_SESSION_EVENT,
            id=wire.encode_event_id(session.id, cursor),
        )
    )
    hub.links.add(link)
    session.attach(link)
    link.wake()
    try:
        await link.run(hub.ping_interval)
    except (ConnectionError, RuntimeError):
        pass  # the client went away mid-write: the grace period starts below
    finally:
        hub.links.discard(link)
        session.detach(link)
    return resp


async def handle_messages(request: web.Request, hub: Hub, cors: dict[str, str]) -> web.Response:
    if request.content_type != "application/json":
        return _json(415, {"error": "Content-Type must be application/json"}, cors)
    body = await request.read()  # aiohttp answers 413 past max_body_size
    try:
        batch = wire.decode_batch(body)
    except wire.WireError as exc:
        return _json(400, {"error": str(exc)}, cors)
    session = hub.session(batch.session)
    if session is None or not session.resumable:
        return _json(410, {"error": "session unknown or expired"}, cors)
    for payload in batch.messages:
        size = len(payload.encode()) if isinstance(payload, str) else len(payload)
        if size > hub.max_message_size:
            limit = hub.max_message_size
            return _json(413, {"error": f"a message is larger than {limit} bytes"}, cors)
    if batch.ack is not None:
        session.log.ack(batch.ack)
    for offset, payload in enumerate(batch.messages):
        if session.deliver(batch.seq + offset, payload) is None:
            return _json(409, {"error": "gap in sequence", "last": session.inbound.received}, cors)
    last = session.inbound.received
    if batch.close:
        session.end("closed by the client")
    return _json(200, {"last": last}, cors)
