"""The hub's HTTP endpoints: the SSE stream (``GET /events``) and batched ``POST /messages``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Final, Literal

from aiohttp import web

from .. import wire
from ..errors import ConnectionClosedError
from ..session import Accept, ReplayGap
from ..sse import encode_comment
from ._events import encode_entries, encode_session
from ._session import Session
from ._settings import RETRY_AFTER, Unavailable


if TYPE_CHECKING:
    from ._registry import Registry

__all__ = ["handle_events", "handle_messages"]

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
    wire.HUB_HEADER: wire.HUB_VERSION,  # tells an rxconn client to wait for the session event
}


class _Stalled(Exception):
    """The client did not take a write within the bound: the link is dropped."""


class SseServerLink:
    """The hub side of one SSE stream: writes the session log after ``cursor`` as events.

    Every write must make progress: a client that stops reading (its TCP
    window full) would otherwise hold the handler, its buffers and its pings
    forever. A write during which nothing leaves the socket's buffer for
    ``write_timeout`` (a slow reader that still reads keeps its link, however
    big the message), or a ``close()`` while a write is blocked, aborts the
    connection, so the handler ends and the session starts its grace period.
    """

    transport: Final[Literal["http"]] = "http"

    def __init__(
        self,
        request: web.BaseRequest,
        resp: web.StreamResponse,
        session: Session,
        cursor: int,
        write_timeout: float,
    ) -> None:
        self.resp = resp
        self.session = session
        self.cursor = cursor
        self._socket = request.transport
        self._write_timeout = write_timeout
        self._writing = False
        self._wake = asyncio.Event()
        self.closed = False

    def wake(self) -> None:
        self._wake.set()

    def close(self, code: int, reason: str) -> None:
        self.closed = True
        self._wake.set()
        if self._writing:  # a blocked write would never see the flag
            self._abort()

    def _abort(self) -> None:
        sock = self._socket
        if sock is not None and not sock.is_closing():
            sock.abort()

    async def write(self, data: bytes) -> None:
        """Write ``data``; abort the connection if the client stopped taking bytes."""
        self._writing = True
        writing = asyncio.ensure_future(self.resp.write(data))
        try:
            buffered: int | None = None
            while True:
                done, _ = await asyncio.wait((writing,), timeout=self._write_timeout)
                if done:
                    writing.result()
                    return
                sock = self._socket
                now = sock.get_write_buffer_size() if sock is not None else 0
                if buffered is not None and now >= buffered:
                    self._abort()  # nothing left the buffer for a whole write_timeout
                    raise _Stalled
                buffered = now
        finally:
            self._writing = False
            if not writing.done():
                writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)

    async def run(self, ping_interval: float) -> None:
        session = self.session
        ping = encode_comment("ping")
        token = session.resume_token
        while not self.closed:
            try:
                async with asyncio.timeout(ping_interval):
                    await self._wake.wait()
            except TimeoutError:
                await self.write(ping)
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
            await self.write(encode_entries(session.id, batch, token))
            self.cursor = batch[-1][0]


def _unavailable(cors: dict[str, str]) -> web.Response:
    """503: the shared session state (Redis) is away; the client tries again (Retry-After)."""
    return _json(503, {"error": "try again later"}, {**cors, "Retry-After": str(RETRY_AFTER)})


def _json(status: int, body: dict[str, object], headers: dict[str, str]) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


async def _answer_probe(resp: web.StreamResponse, ping_interval: float) -> None:
    """An upgrade probe: one comment that must reach the client while the stream is open
    (a proxy that buffers SSE holds it), then the stream stays open until the client,
    having seen it, lets go, or one ping interval passed. No session is made."""
    async with asyncio.timeout(ping_interval):
        await resp.write(encode_comment("probe"))
        await asyncio.Event().wait()  # until the client leaves (the handler is cancelled)


async def _resume(registry: Registry, request: web.Request) -> tuple[Session | None, int]:
    """The session a ``GET /events`` may resume, and from where; ``(None, 0)`` for a fresh one.

    Only a request that proves it is the session's client (its key, or a
    browser session's resume token in the event id) may resume it, and only
    the key may end it (by asking for messages no longer kept). Anything else
    (an unknown id, a wrong secret, a token with a number that was never
    written or is no longer kept) gets a fresh session and leaves the named
    one alone: it ends by itself after its grace period if nobody resumes it.
    """
    last_event_id = request.headers.get("Last-Event-ID") or request.query.get("lastEventId", "")
    parsed = wire.decode_event_id(last_event_id) if last_event_id else None
    if parsed is None:
        return None, 0
    key = request.headers.get(wire.KEY_HEADER)
    known = await registry.find(parsed.session, key or parsed.token, parsed.seq, "http")
    if known is None or not known.resumable:
        return None, 0
    if not known.may_resume_stream(parsed.token, key):
        return None, 0
    if not known.log.can_resume(parsed.seq):
        if known.authenticate(key):
            known.end("client asked for messages no longer kept")
        return None, 0
    known.acknowledged(parsed.seq)
    return known, parsed.seq


async def handle_events(
    request: web.Request, registry: Registry, cors: dict[str, str]
) -> web.StreamResponse:
    is_rxconn = request.headers.get(wire.HUB_HEADER) == wire.HUB_VERSION
    resp = web.StreamResponse(status=200, headers={**SSE_HEADERS, **cors})
    try:
        await resp.prepare(request)
        if wire.PROBE_HEADER in request.headers:
            await _answer_probe(resp, registry.settings.ping_interval)
            return resp
    except (ConnectionError, RuntimeError, TimeoutError):
        return resp  # the client left before the answer began: no session was made
    try:
        session, cursor = await _resume(registry, request)
        resumed = session is not None
        if session is None:
            session = await registry.open("rxconn" if is_rxconn else "eventsource", "http")
    except Unavailable:
        # Shared sessions and Redis is away: the stream ends, advising when to come back
        # (the 200 and its headers are out already, so no 503 with Retry-After).
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write(f"retry: {RETRY_AFTER * 1000}\n\n".encode())
        return resp

    ping_interval = registry.settings.ping_interval
    link = SseServerLink(request, resp, session, cursor, write_timeout=ping_interval)
    post = str(request.app.router["rxconn-messages"].url_for())
    hello = wire.SessionInfo(
        session.id, post, session.inbound.received, resumed, None if resumed else session.key
    )
    registry.links.add(link)
    session.attach(link)
    announced = False
    try:
        await link.write(encode_session(hello, cursor, session.resume_token))
        announced = True
        link.wake()
        await link.run(ping_interval)
    except (ConnectionError, RuntimeError, _Stalled):
        pass  # the client went away, or stopped reading: the grace period starts below
    finally:
        registry.links.discard(link)
        session.detach(link)
        if not announced and not resumed:
            # The client never learned the session's id: nobody can ever resume it.
            session.end("client left before its first event")
    return resp


async def handle_messages(
    request: web.Request, registry: Registry, cors: dict[str, str]
) -> web.Response:
    if request.content_type != "application/json":
        return _json(415, {"error": "Content-Type must be application/json"}, cors)
    body = await request.read()  # aiohttp answers 413 past max_body_size
    try:
        batch = wire.decode_batch(body, max_messages=registry.settings.max_batch)
    except wire.BatchTooLarge as exc:
        return _json(413, {"error": str(exc)}, cors)
    except wire.WireError as exc:
        return _json(400, {"error": str(exc)}, cors)
    try:
        session = await registry.visit(batch.session, batch.key)
    except Unavailable:
        return _unavailable(cors)
    if session is None or not session.resumable or not session.authenticate(batch.key):
        # A wrong key is answered like an unknown session, and changes nothing.
        return _json(410, {"error": "session unknown or expired"}, cors)
    limit = registry.settings.max_message_size
    for payload in batch.messages:
        size = len(payload.encode()) if isinstance(payload, str) else len(payload)
        if size > limit:
            return _json(413, {"error": f"a message is larger than {limit} bytes"}, cors)
    if batch.ack is not None:
        session.acknowledged(batch.ack)
    try:
        verdict = await session.receive(batch.seq, batch.messages)
    except Unavailable:
        return _unavailable(cors)  # nothing was applied: the client sends it again
    except ConnectionClosedError:
        return _json(410, {"error": "session unknown or expired"}, cors)
    if verdict is Accept.GAP:
        return _json(409, {"error": "gap in sequence", "last": session.inbound.received}, cors)
    last = session.inbound.received
    if batch.close:
        session.end("closed by the client")
    return _json(200, {"last": last}, cors)
