"""The hub's long-poll endpoint: ``GET {prefix}/poll`` held until messages wait, ``DELETE`` to end.

Long polling is the third way down for networks whose proxies buffer or cut
SSE. A client *link* is a series of polls, one in flight at a time, and the
POSTs of :func:`~rxconn.server._http.handle_messages` go up as for the SSE link:

- The **open poll** (no ``X-Rxconn-Link`` header) starts a link. Like
  ``GET /events`` it resumes the session named by ``Last-Event-ID`` when it
  presents the key, and starts a fresh one otherwise; it is answered at once
  with the session event and whatever waits, plus the link's id in
  ``X-Rxconn-Link``. The new link takes the session over (the session's
  previous link is closed).
- A **poll** of that link presents the link id, the session's key and, in
  ``Last-Event-ID``, what the client received (which also acknowledges it).
  The hub answers at once with everything the log holds after it, or holds
  the poll until a message arrives or ``hold`` seconds pass (``204``, no body).
- A second poll of a link while one is held gets **409**, and the held poll
  and the session carry on (Engine.IO ends the session instead: a proxy that
  retries a GET must not cost the client its session). A poll of a link that
  is no longer the session's (a newer link took over) also gets 409.
- Between polls the link stays the session's link; if no poll comes for
  ``poll_hold`` seconds, the link lapses and the session's grace period starts.
- ``DELETE`` ends the session at once (any held poll is answered 410).
- A GET with ``X-Rxconn-Probe`` (an upgrade probe) gets 204 at once; no session.

Answers are event-stream bytes from :mod:`~rxconn.server._events`, the same
as the SSE stream's, so the client decodes both alike.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
from typing import TYPE_CHECKING, Final, Literal

from aiohttp import web

from .. import wire
from ..session import ReplayGap
from ..transport import Payload
from ._events import encode_entries, encode_session
from ._session import Session
from ._settings import RETRY_AFTER, Unavailable


if TYPE_CHECKING:
    from ._registry import Registry

__all__ = [
    "HOLD_HEADER",
    "LINK_HEADER",
    "PollServerLink",
    "handle_poll",
    "handle_poll_delete",
]

LINK_HEADER: Final = "X-Rxconn-Link"
"""The id of the client's long-poll link: issued by the open poll, presented by every poll."""
HOLD_HEADER: Final = "X-Rxconn-Hold"
"""Seconds the client lets a poll be held (the hub holds at most ``poll_hold``)."""

POLL_HEADERS: Final = {
    "Cache-Control": "no-store",  # a poll answer is never a cacheable copy of anything
    wire.HUB_HEADER: wire.HUB_VERSION,
}
EVENTS_TYPE: Final = "text/event-stream"
EXPOSED: Final = f"{wire.HUB_HEADER}, {LINK_HEADER}"


class _Closed(Exception):
    """The held poll's link was closed: answer ``status`` with ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class PollServerLink:
    """The hub side of one long-poll link: the session's link from its open poll on.

    It writes nothing by itself: each poll takes what the log holds after the
    client's cursor. ``wake()`` releases a held poll; ``close()`` answers it
    (409 when replaced, 410 when the session ended, 503 at shutdown).
    """

    transport: Final[Literal["longpoll"]] = "longpoll"

    def __init__(self, session: Session, registry: Registry, link_id: str | None = None) -> None:
        self.id = link_id if link_id is not None else secrets.token_urlsafe(12)
        self.session = session
        self.cursor = 0
        self.polling = False
        self.closed: _Closed | None = None
        self._registry = registry
        self._wake = asyncio.Event()
        self._lapse: asyncio.TimerHandle | None = None

    def wake(self) -> None:
        self._wake.set()

    def close(self, code: int, reason: str) -> None:
        if self.closed is not None:
            return
        if not self.session.ended:
            status = 409  # a newer link took the session over
        else:
            status = 503 if code == 1001 else 410
        self.closed = _Closed(status, reason)
        self._stop_lapse()
        self._registry.links.discard(self)
        self._wake.set()

    def start(self) -> None:
        """Attach to the session (closing its previous link); wait for the first poll."""
        self._registry.links.add(self)
        self.session.attach(self)
        self._arm_lapse()

    async def poll(self, cursor: int, hold: float) -> list[tuple[int, Payload]]:
        """What the log holds after ``cursor``, as soon as there is any, or [] after ``hold``.

        Raises:
            _Closed: the link was closed before or while the poll was held.
        """
        self.polling = True
        self._stop_lapse()
        try:
            try:
                async with asyncio.timeout(hold):
                    while True:
                        self._wake.clear()
                        if self.closed is not None:
                            raise self.closed
                        entries = self.take(cursor)
                        if entries:
                            return entries
                        await self._wake.wait()
            except TimeoutError:
                return []
        except asyncio.CancelledError:
            # The client went away mid-poll (aiohttp's handler cancellation): a
            # client link abandons a poll only when it ends, so this link is over.
            self.polling = False
            self._lapsed()
            raise
        finally:
            self.polling = False
            self._arm_lapse()

    def take(self, cursor: int) -> list[tuple[int, Payload]]:
        """Everything the log holds after ``cursor`` (now, without waiting)."""
        session = self.session
        try:
            entries = list(session.log.after(cursor))
        except ReplayGap as gap:
            session.end(str(gap), code=1008)
            raise _Closed(410, str(gap)) from None
        if entries:
            self.cursor = entries[-1][0]
        return entries

    def _arm_lapse(self) -> None:
        if self.closed is None and not self.polling and self._lapse is None:
            delay = self._registry.settings.poll_hold
            self._lapse = asyncio.get_running_loop().call_later(delay, self._lapsed)

    def _stop_lapse(self) -> None:
        if self._lapse is not None:
            self._lapse.cancel()
            self._lapse = None

    def _lapsed(self) -> None:
        """The client is gone (no poll for ``poll_hold`` s): the session's grace starts."""
        self._lapse = None
        if self.closed is None and not self.polling:
            self.closed = _Closed(409, "this long-poll link lapsed")
            self._registry.links.discard(self)
            self.session.detach(self)


def _json(status: int, body: dict[str, object], headers: dict[str, str]) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


def _headers(cors: dict[str, str], link: PollServerLink | None = None) -> dict[str, str]:
    headers = {**POLL_HEADERS, **cors}
    if cors:
        headers["Access-Control-Expose-Headers"] = EXPOSED
    if link is not None:
        headers[LINK_HEADER] = link.id
    return headers


def _hold(request: web.Request, registry: Registry) -> float | None:
    """The client's hold, capped by the hub's ``poll_hold``; None if malformed."""
    cap = registry.settings.poll_hold
    text = request.headers.get(HOLD_HEADER)
    if text is None:
        return cap
    try:
        hold = float(text) if len(text) <= 32 else math.nan
    except ValueError:
        return None
    if not (math.isfinite(hold) and hold > 0):
        return None
    return min(hold, cap)


async def _named(request: web.Request, registry: Registry, how: str) -> tuple[Session | None, int]:
    """The rxconn session the request names and proves (its key), and its ``Last-Event-ID`` seq.

    ``how``: ``"claim"`` (a new link: a shared session moves here), ``"visit"`` (wherever
    its link is) or ``"here"`` (only a session this hub holds: a poll of one of its links).
    """
    text = request.headers.get("Last-Event-ID", "")
    parsed = wire.decode_event_id(text) if text else None
    if parsed is None:
        return None, 0
    key = request.headers.get(wire.KEY_HEADER)
    if how == "claim":
        session = await registry.find(parsed.session, key, parsed.seq, "longpoll")
    elif how == "visit":
        session = await registry.visit(parsed.session, key)
    else:
        session = registry.get(parsed.session)
    if session is None or session.kind != "rxconn":
        return None, parsed.seq
    if not session.authenticate(key):
        return None, parsed.seq  # a wrong key is an unknown session, and changes nothing
    return session, parsed.seq


async def handle_poll(
    request: web.Request, registry: Registry, cors: dict[str, str]
) -> web.StreamResponse:
    """``GET {prefix}/poll``: open a long-poll link, or hold one poll of it."""
    if request.headers.get(wire.HUB_HEADER) != wire.HUB_VERSION:
        error = f"long polling needs the session protocol ({wire.HUB_HEADER}: {wire.HUB_VERSION})"
        return _json(400, {"error": error}, _headers(cors))
    if wire.PROBE_HEADER in request.headers:  # an upgrade probe: 204 at once, no session
        return web.Response(status=204, headers=_headers(cors))
    hold = _hold(request, registry)
    if hold is None:
        return _json(400, {"error": f"{HOLD_HEADER} must be seconds > 0"}, _headers(cors))
    link_id = request.headers.get(LINK_HEADER)
    try:
        session, seq = await _named(request, registry, "here" if link_id else "claim")
        if link_id is None:
            return await _open(request, registry, cors, session, seq)
    except Unavailable:
        return _unavailable(cors)
    if registry.source is not None:
        try:
            session = await _adopt(request, registry, session, link_id)
        except Unavailable:
            return _unavailable(cors)
    if session is None:
        return _json(410, {"error": "session unknown or expired"}, _headers(cors))
    link = session.link
    if not isinstance(link, PollServerLink) or link.id != link_id or link.closed is not None:
        return _json(409, {"error": "this long-poll link is closed"}, _headers(cors))
    if link.polling:
        return _json(409, {"error": "a poll of this link is already held"}, _headers(cors))
    if not session.log.can_resume(seq):
        session.end("client asked for messages no longer kept")
        return _json(410, {"error": "session unknown or expired"}, _headers(cors))
    session.acknowledged(seq)
    try:
        entries = await link.poll(seq, hold)
    except _Closed as closed:
        return _json(closed.status, {"error": closed.reason}, _headers(cors))
    if not entries:
        return web.Response(status=204, headers=_headers(cors, link))
    return _events(encode_entries(session.id, entries), cors, link)


async def _adopt(
    request: web.Request, registry: Registry, session: Session | None, link_id: str
) -> Session | None:
    """Shared sessions: a poll of a link whose earlier polls were answered by another hub
    (no stickiness) moves the link here, under its id, rather than failing it."""
    link = session.link if session is not None else None
    if isinstance(link, PollServerLink) and link.id == link_id:
        return session  # this hub holds the link (open, or closed: answered as before)
    session, _ = await _named(request, registry, "claim")
    if session is not None:
        PollServerLink(session, registry, link_id).start()
    return session


async def _open(
    request: web.Request,
    registry: Registry,
    cors: dict[str, str],
    session: Session | None,
    seq: int,
) -> web.Response:
    """The open poll: a new link of the named session (or of a fresh one), answered at once."""
    resumed = session is not None
    if session is not None and not session.log.can_resume(seq):
        session.end("client asked for messages no longer kept")
        session, resumed = None, False
    if session is None:
        session = await registry.open("rxconn", "longpoll")
        seq = 0
    else:
        session.acknowledged(seq)
    link = PollServerLink(session, registry)
    link.start()
    post = str(request.app.router["rxconn-messages"].url_for())
    hello = wire.SessionInfo(
        session.id, post, session.inbound.received, resumed, None if resumed else session.key
    )
    try:
        entries = link.take(seq)  # the open poll takes what waits, too
    except _Closed as closed:
        return _json(closed.status, {"error": closed.reason}, _headers(cors))
    return _events(encode_session(hello, seq) + encode_entries(session.id, entries), cors, link)


def _unavailable(cors: dict[str, str]) -> web.Response:
    """503: the shared session state (Redis) is away; the client tries again (Retry-After)."""
    return _json(
        503, {"error": "try again later"}, {**_headers(cors), "Retry-After": str(RETRY_AFTER)}
    )


def _events(body: bytes, cors: dict[str, str], link: PollServerLink) -> web.Response:
    headers = _headers(cors, link)
    headers["Content-Type"] = EVENTS_TYPE + "; charset=utf-8"
    return web.Response(status=200, body=body, headers=headers)


async def handle_poll_delete(
    request: web.Request, registry: Registry, cors: dict[str, str]
) -> web.Response:
    """``DELETE {prefix}/poll``: end the session named (with its key) in ``Last-Event-ID``."""
    try:
        session, _ = await _named(request, registry, "visit")
    except Unavailable:
        return _unavailable(cors)
    if session is None:
        return _json(410, {"error": "session unknown or expired"}, _headers(cors))
    session.end("closed by the client")
    return web.Response(status=204, headers=_headers(cors))
