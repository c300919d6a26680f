"""The long-polling transport: held GET polls down, sequenced batched POSTs up.

For networks whose proxies buffer or cut Server-Sent Events, every answer of a
poll is a complete HTTP response, which such proxies pass. Lifecycle of one
subscription (one link), all inside one task kept in :data:`~rxconn.aio.TASKS`:

1. The **open poll**, ``GET url`` with ``X-Rxconn: v1`` (and ``Last-Event-ID``
   with ``X-Rxconn-Key`` when resuming), bounded by ``open_timeout``: the hub
   answers at once with the session event (which names the session and the
   POST URL) and whatever waits, plus the link's id in ``X-Rxconn-Link``. The
   link opens at the session event.
2. Then one poll at a time, each presenting the link id, the session key and,
   in ``Last-Event-ID``, the last message received (which acknowledges it):
   the hub answers as soon as anything waits, with everything that waits
   (``200``, event-stream bytes decoded by :class:`~rxconn.sse.SSEDecoder`), or
   after ``hold`` seconds with ``204`` and no body (``ALIVE``). The next poll
   leaves as soon as an answer was read. A poll not answered within ``hold +
   open_timeout`` seconds fails the link.
3. Writes are POSTed as for the SSE link (:mod:`rxconn.aio._posting`): one
   batch in flight, acknowledged by the answer's ``last``.
4. Disposal cancels the task: the poll and any POST in flight are aborted and
   the ``ClientSession`` closed if rxconn created it. After ``quit()``, a
   ``DELETE`` ends the hub session (bounded by 1 s).

Answers: 409 (the hub gave the session to a newer link, or saw two polls of
this link at once) and 5xx fail the link, retried; 410 is ``SessionExpired``
(a new session at once); 401/403/404 are fatal; a 200 that is not an event
stream is a fatal ``ProtocolError``. The session secret travels only in
headers, never in the URL; redirects are followed only on the URL's origin.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any, Final

import aiohttp
from reactivex import abc

from .. import wire
from ..errors import ConnectionLost, ProtocolError, RxconnError, TransportError, safe_url
from ..session import AckSchedule, HubSession
from ..sse import SSEDecoder
from ..transport import ALIVE, LinkContext, LinkEvent, Opened
from ._acks import AckTimer
from ._base import PostingTransport
from ._errors import status_error, translate
from ._hubstream import adopt_session, deliver_events
from ._links import first_to_end
from ._posting import QUIT_TIMEOUT, PostingLink


__all__ = ["LongPollTransport", "longpoll"]

LINK_HEADER: Final = "X-Rxconn-Link"
HOLD_HEADER: Final = "X-Rxconn-Hold"
NAME: Final = "longpoll"


class LongPollTransport(PostingTransport):
    """Describe long-poll links to the hub's poll endpoint at ``url``; opens nothing.

    Args:
        url: The poll endpoint (``http(s)://…/rx/poll``).
        hold: Seconds the hub may hold a poll that has nothing to answer
            (20 s: under common proxy idle cuts; the hub caps it with its
            ``poll_hold``). Keep it below the connection's ``idle_timeout``.
        headers: Extra request headers (never logged).
        open_timeout: Bound on the open poll, up to the session event.
        max_batch: Most messages per POST.
        max_batch_bytes: Most payload bytes per POST (halved on a 413).
        max_message_size: The largest message either way (``send()`` raises
            ``MessageTooLarge`` beyond it; a larger incoming one fails the link).
        post_timeout: Bound on each POST.
        heartbeat: Seconds of quiet after which a small POST is sent anyway (with
            the hub), to time the link for ``Connection.quality``; ``None``: never.
        session: An ``aiohttp.ClientSession`` to use (never closed by rxconn).
        ssl: Passed to aiohttp; certificates are verified by default.

    Raises:
        InvalidURL: for a URL without host or with another scheme.
        ValueError: for ``hold`` or ``open_timeout`` not > 0.
    """

    kind = NAME
    dynamic_headers = True

    def __init__(
        self,
        url: str,
        *,
        hold: float = 20.0,
        headers: Mapping[str, str] | None = None,
        open_timeout: float = 10.0,
        max_batch: int = 1000,
        max_batch_bytes: int = 256 * 1024,
        max_message_size: int = 4 * 1024 * 1024,
        post_timeout: float = 30.0,
        heartbeat: float | None = 15.0,
        session: aiohttp.ClientSession | None = None,
        ssl: Any = True,
    ) -> None:
        super().__init__(
            url,
            headers=headers,
            open_timeout=open_timeout,
            max_message_size=max_message_size,
            max_batch=max_batch,
            max_batch_bytes=max_batch_bytes,
            post_timeout=post_timeout,
            heartbeat=heartbeat,
            hub=True,
            session=session,
            ssl=ssl,
        )
        if not hold > 0:
            raise ValueError(f"hold must be > 0, got {hold!r}")
        self.hold = hold
        # No byte for this long while a poll waits: the link is dead.
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=open_timeout, sock_read=hold + open_timeout
        )
        self._stream_limit = max_message_size * 4 // 3 + 4096  # see httplink: base64 + lines

    # ------------------------------------------------------------- the task

    async def _run(self, observer: abc.ObserverBase[LinkEvent], ctx: LinkContext) -> None:
        try:
            own = self.session is None
            http = aiohttp.ClientSession() if own else self.session
            assert http is not None
            link = PostingLink(self._post_options)
            try:
                if ctx.probe:
                    await self._probe(http, link, observer)
                else:
                    await self._link(http, link, observer, ctx)
            finally:
                link.closed = True
                if link.quitting:
                    await self._quit(http, link)
                if own:
                    await http.close()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            observer.on_error(translate(NAME, self.url, exc, opening=False))

    async def _link(
        self,
        http: aiohttp.ClientSession,
        link: PostingLink,
        observer: abc.ObserverBase[LinkEvent],
        ctx: LinkContext,
    ) -> None:
        """The open poll, then the poller and the POST writer until either fails."""
        opening = asyncio.timeout(self.open_timeout)
        resp: aiohttp.ClientResponse | None = None
        try:
            async with opening:
                resp = await self._get(http, await self._headers(ctx.session, None))
                self._check(resp)
                if resp.headers.get(wire.HUB_HEADER) != wire.HUB_VERSION:
                    raise ProtocolError(
                        NAME, f"{safe_url(self.url)} is not a hub's poll endpoint", fatal=True
                    )
                link_id = resp.headers.get(LINK_HEADER, "")
                if not link_id:
                    raise ProtocolError(NAME, "the hub's open answer names no link")
                hub = await self._answer(resp, ctx, link, observer, None, opening)
        except (asyncio.CancelledError, RxconnError):
            raise  # (an RxconnError is already ours: "from" itself would make a cause cycle)
        except Exception as exc:  # OpenTimeout until the session event, then ConnectionLost
            raise translate(NAME, self.url, exc, opening=link.hub is None) from exc
        finally:
            if resp is not None:
                resp.close()
        acker = AckTimer(AckSchedule(every=None), link.ack_due)  # acks ride on the next poll
        tasks = [
            asyncio.create_task(self._polls(http, hub, link_id, ctx, link, observer)),
            asyncio.create_task(link.run(http, observer, acker)),
        ]
        try:
            await first_to_end(NAME, tasks)
        finally:
            acker.cancel()

    async def _polls(
        self,
        http: aiohttp.ClientSession,
        hub: HubSession,
        link_id: str,
        ctx: LinkContext,
        link: PostingLink,
        observer: abc.ObserverBase[LinkEvent],
    ) -> None:
        """One poll at a time, each sent as soon as the previous answer was read."""
        on_next = observer.on_next
        while True:
            resp = await self._get(http, await self._headers(hub, link_id))
            try:
                if resp.status == 204:
                    await resp.read()  # nothing: the connection goes back to the pool
                    on_next(ALIVE)
                else:
                    self._check(resp)
                    await self._answer(resp, ctx, link, observer, hub, None)
                    resp.release()
            finally:
                resp.close()  # no-op after a release; aborts a half-read answer

    async def _headers(self, hub: object, link_id: str | None) -> dict[str, str]:
        """A poll's headers: the user's (resolved now), the hub protocol, the resume point."""
        headers = {
            "Accept": "text/event-stream",
            "Cache-Control": "no-cache",
            **await self._user_headers(),
            wire.HUB_HEADER: wire.HUB_VERSION,
            HOLD_HEADER: f"{self.hold:g}",
        }
        if isinstance(hub, HubSession) and hub.id is not None:
            headers["Last-Event-ID"] = wire.encode_event_id(hub.id, hub.received)
            if hub.key is not None:
                headers[wire.KEY_HEADER] = hub.key
        if link_id is not None:
            headers[LINK_HEADER] = link_id
        return headers

    async def _get(
        self, http: aiohttp.ClientSession, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        """GET a poll; follow only redirects on the URL's origin (the key goes nowhere else)."""
        return await self._get_on_origin(http, self._url, headers, self._timeout)

    def _check(self, resp: aiohttp.ClientResponse) -> None:
        """Raise for any answer but a 200 event stream (204 is handled by the caller)."""
        status = resp.status
        if status == 409:
            raise ConnectionLost(NAME, "the hub closed this long-poll link (409)")
        if status == 204:  # an open poll answered with nothing: not the hub
            raise TransportError(
                NAME, f"{safe_url(self.url)} answered 204 to an open poll", status=204, fatal=True
            )
        if status != 200:
            raise status_error(NAME, self.url, status, resp.headers)
        if resp.content_type != "text/event-stream":
            raise ProtocolError(
                NAME,
                f"{safe_url(self.url)} answered {resp.content_type!r}, not text/event-stream",
                fatal=True,
            )

    async def _answer(
        self,
        resp: aiohttp.ClientResponse,
        ctx: LinkContext,
        link: PostingLink,
        observer: abc.ObserverBase[LinkEvent],
        hub: HubSession | None,
        opening: asyncio.Timeout | None,
    ) -> HubSession:
        """Deliver one answer's events, as they arrive; the open answer's first names the session.

        Raises:
            ProtocolError: (retryable) for an answer that ends in the middle of
                an event, names no session, or holds an oversized event.
        """
        decoder = SSEDecoder()
        on_next = observer.on_next
        limit = self.max_message_size
        async for chunk in resp.content.iter_any():
            events = decoder.feed(chunk)
            if events and hub is None:
                hub, post, next_seq = adopt_session(events[0], self._url, ctx, NAME)
                link.adopt(hub, post)
                if opening is not None:
                    opening.reschedule(None)
                on_next(Opened(link, NAME, next_seq, acks_prove_life=False))
                events = events[1:]
            if events:
                assert hub is not None
                deliver_events(events, hub, on_next, limit, NAME)
            if decoder.pending > self._stream_limit:
                raise ProtocolError(NAME, f"an event exceeds max_message_size={limit}")
        if hub is None:
            raise ProtocolError(NAME, "the hub's answer named no session")
        if decoder.pending:
            raise ProtocolError(NAME, "a poll answer ended in the middle of an event")
        return hub

    async def _probe(
        self,
        http: aiohttp.ClientSession,
        link: PostingLink,
        observer: abc.ObserverBase[LinkEvent],
    ) -> None:
        """An upgrade probe: one round trip to the hub that makes no session, then wait."""
        headers = {
            **await self._user_headers(),
            wire.HUB_HEADER: wire.HUB_VERSION,
            wire.PROBE_HEADER: "1",
        }
        try:
            async with asyncio.timeout(self.open_timeout):
                resp = await self._get(http, headers)
                async with resp:
                    await resp.read()
        except (asyncio.CancelledError, RxconnError):
            raise
        except Exception as exc:
            raise translate(NAME, self.url, exc, opening=True) from exc
        if resp.status != 204 or resp.headers.get(wire.HUB_HEADER) != wire.HUB_VERSION:
            raise status_error(NAME, self.url, resp.status, resp.headers)
        observer.on_next(Opened(link, NAME))
        await asyncio.get_running_loop().create_future()  # until disposed

    async def _quit(self, http: aiohttp.ClientSession, link: PostingLink) -> None:
        """``DELETE`` the session (bounded; best effort, it expires anyway)."""
        hub = link.hub
        if hub is None or hub.id is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(QUIT_TIMEOUT):
                headers = {
                    **await self._user_headers(),
                    wire.HUB_HEADER: wire.HUB_VERSION,
                    "Last-Event-ID": wire.encode_event_id(hub.id, hub.received),
                    wire.KEY_HEADER: hub.key or "",
                }
                async with http.delete(
                    self._url, headers=headers, ssl=self.ssl, allow_redirects=False
                ) as resp:
                    await resp.read()


longpoll = LongPollTransport
"""``rxconn.longpoll(...)``: the public name of :class:`LongPollTransport`."""
