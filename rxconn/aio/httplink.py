"""The HTTP transport: Server-Sent Events down, sequenced batched POSTs up.

Lifecycle of one subscription (one link), all inside one task kept in
:data:`~rxconn.aio.TASKS`:

1. ``GET url`` with ``Accept: text/event-stream`` (and ``Last-Event-ID`` when
   resuming), bounded by ``open_timeout`` up to the response headers; no total
   timeout on the stream itself. A 200 ``text/event-stream`` answer opens the
   link; with the rxconn hub (response header ``X-Rxconn: v1``) the link opens
   at the first event, which names the session and the POST URL.
2. The body is read with ``iter_any()`` into the sans-I/O
   :class:`~rxconn.sse.SSEDecoder` (aiohttp's line reader splits on LF only).
   Dispatched events become payloads; bytes that dispatch nothing (comments,
   pings) prove life (``ALIVE``). The end of the stream is a lost link, retried
   after the server's ``retry:`` if it sent one.
3. With the hub, writes are POSTed in batches (one request in flight; what is
   sent meanwhile forms the next batch, bounded by ``max_batch`` messages and
   ``max_batch_bytes``), numbered so that a retried batch is applied once; the
   answer's ``last`` acknowledges. Against any other SSE server the link is
   receive-only: writes are never acknowledged, so ``send()`` keeps buffering.
4. Disposal cancels the task: the GET stream and any POST in flight are
   aborted and the responses closed, as is the ``ClientSession`` if rxconn
   created it (no keep-alive connection is left behind).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from reactivex import abc

from .. import wire
from ..errors import ConnectionLost, ProtocolError, TransportError, safe_url
from ..session import AckSchedule, HubSession
from ..sse import SSEDataDecoder, SSEDecoder
from ..transport import ALIVE, LinkContext, LinkEvent, Opened, Payloads
from ._acks import AckTimer
from ._base import Headers, PostingTransport
from ._errors import status_error, translate
from ._hubstream import adopt_session, deliver_events
from ._links import first_to_end
from ._posting import PostingLink


__all__ = ["HttpLink", "HttpTransport", "http"]

HttpLink = PostingLink
"""The writable side of an HTTP link (see :mod:`rxconn.aio._posting`)."""

ACK_DELAY: Final = 0.25
MAX_RETRY_MS: Final = 3_600_000
"""The longest SSE ``retry:`` advice taken, in ms (a 400-digit value is not an hour's wait)."""


@dataclass
class _StreamState:
    """What one connection's HTTP links remember between them (``LinkContext.connection``)."""

    last_event_id: str = ""
    retry: float | None = None  # the server's last ``retry:`` advice, in seconds


class HttpTransport(PostingTransport):
    """Describe HTTP links (SSE down, POST up) to the event stream at ``url``; opens nothing.

    Args:
        url: The SSE endpoint (``http(s)://…/rx/events`` for the hub).
        headers: Extra request headers (never logged): a mapping, or a
            callable (sync or async) returning one, called for every request
            of every link (the SSE ``GET`` and each ``POST``), so that a
            refreshed token is always used. A 401 calls it once more and
            retries at once (the ``GET`` through the connection's retry, a
            ``POST`` in place); a second 401 in a row is fatal.
        open_timeout: Bound on the GET until its response headers (and the hub's first event).
        event_types: Against a non-hub server, the SSE event types whose data
            become messages (``None``: all); others only prove life.
        max_batch: Most messages per POST.
        max_batch_bytes: Most payload bytes per POST (a larger single message goes alone);
            halved whenever the server answers 413 to a batch of several messages.
        max_message_size: The largest message either way: ``send()`` refuses larger
            payloads (``MessageTooLarge``), and a larger incoming event (or one that
            never ends) fails the link with ``ProtocolError``.
        post_timeout: Bound on each POST.
        heartbeat: Seconds of quiet after which a small POST is sent anyway (with
            the hub), to time the link for ``Connection.quality``; ``None``: never.
        hub: Ask for the hub session protocol (``X-Rxconn: v1``).
        session: An ``aiohttp.ClientSession`` to use (never closed by rxconn).
        ssl: Passed to aiohttp; certificates are verified by default.

    Raises:
        InvalidURL: for a URL without host or with another scheme.
    """

    kind = "http"
    dynamic_headers = True

    def __init__(
        self,
        url: str,
        *,
        headers: Headers | None = None,
        open_timeout: float = 10.0,
        event_types: Collection[str] | None = ("message",),
        max_batch: int = 1000,
        max_batch_bytes: int = 256 * 1024,
        max_message_size: int = 4 * 1024 * 1024,
        post_timeout: float = 30.0,
        heartbeat: float | None = 15.0,
        hub: bool = True,
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
            hub=hub,
            session=session,
            ssl=ssl,
        )
        self.event_types = None if event_types is None else frozenset(event_types)

    def _state(self, ctx: LinkContext) -> _StreamState:
        state = ctx.connection.get(self._key)
        if not isinstance(state, _StreamState):
            state = ctx.connection[self._key] = _StreamState()
        return state

    # ------------------------------------------------------------- the task

    async def _run(self, observer: abc.ObserverBase[LinkEvent], ctx: LinkContext) -> None:
        try:
            own = self.session is None
            http = aiohttp.ClientSession() if own else self.session
            assert http is not None
            link = PostingLink(self._post_options)
            try:
                await self._stream(http, link, observer, ctx)
            finally:
                link.closed = True
                try:
                    if link.quitting:
                        await link.quit_session(http)
                finally:  # even when cancelled again while quitting
                    if own:
                        await http.close()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = translate("http", self.url, exc, opening=False)
            if isinstance(error, TransportError) and error.retry_after is None:
                error.retry_after = self._state(ctx).retry
            observer.on_error(error)

    async def _request_headers(self, ctx: LinkContext) -> dict[str, str]:
        user = await self._user_headers()  # a callable's: called for every link
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **user}
        hub = ctx.session
        if self.hub:
            headers[wire.HUB_HEADER] = wire.HUB_VERSION
        if ctx.probe:  # no session, no resume point: a probe only proves bytes stream through
            headers[wire.PROBE_HEADER] = "1"
        elif self.hub and isinstance(hub, HubSession) and hub.id is not None:
            headers["Last-Event-ID"] = wire.encode_event_id(hub.id, hub.received)
            if hub.key is not None:
                headers[wire.KEY_HEADER] = hub.key
        elif last_event_id := self._state(ctx).last_event_id:
            headers["Last-Event-ID"] = last_event_id
        return headers

    async def _stream(
        self,
        http: aiohttp.ClientSession,
        link: PostingLink,
        observer: abc.ObserverBase[LinkEvent],
        ctx: LinkContext,
    ) -> None:
        try:
            async with asyncio.timeout(self.open_timeout):
                resp = await self._get(http, await self._request_headers(ctx))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = translate("http", self.url, exc, opening=True)
            if error is exc:  # an rxconn error (the headers callable's, say): as it is
                raise
            raise error from exc
        try:
            await self._check(resp)
            if ctx.probe:
                await self._probe(resp, link, observer)
            hub_mode = self.hub and resp.headers.get(wire.HUB_HEADER) == wire.HUB_VERSION
            if not hub_mode:
                observer.on_next(Opened(link, "http"))
            await self._read(http, resp, link, observer, ctx, hub_mode)
        finally:
            resp.close()  # close, not release: a half-read stream must not go back to a pool

    async def _probe(
        self,
        resp: aiohttp.ClientResponse,
        link: PostingLink,
        observer: abc.ObserverBase[LinkEvent],
    ) -> None:
        """Probe mode (an upgrade's check): open only once bytes stream through, carry nothing.

        Seeing the response is not enough: a proxy that buffers SSE answers at
        once and then holds every byte. The hub answers a probe with one comment
        and no session; any other SSE server's first bytes do as well. Nothing
        read here is delivered or remembered (no ``Last-Event-ID``).
        """
        async with asyncio.timeout(self.open_timeout):
            first = await resp.content.readany()
        if not first:
            raise ConnectionLost("http", "the probe's event stream ended at once")
        observer.on_next(Opened(link, "http"))
        async for _ in resp.content.iter_any():
            observer.on_next(ALIVE)
        raise ConnectionLost("http", "the probe's event stream ended")

    async def _get(
        self, http: aiohttp.ClientSession, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        """GET the stream, following redirects only on its origin.

        Always, not only with headers of the user's: a resuming GET carries the
        session key, which must not reach another origin either.
        """
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.open_timeout)
        return await self._get_on_origin(http, self._url, headers, timeout)

    async def _check(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status == 204:
            raise TransportError("http", "the server said stop (204 No Content)", status=204)
        if resp.status != 200:
            raise status_error("http", self.url, resp.status, resp.headers)
        if resp.content_type != "text/event-stream":
            raise ProtocolError(
                "http",
                f"{safe_url(self.url)} answered {resp.content_type!r}, not text/event-stream",
                fatal=True,
            )

    async def _read(
        self,
        http: aiohttp.ClientSession,
        resp: aiohttp.ClientResponse,
        link: PostingLink,
        observer: abc.ObserverBase[LinkEvent],
        ctx: LinkContext,
        hub_mode: bool,
    ) -> None:
        """Run the stream reader and (with the hub) the POST writer until either fails."""
        acker = AckTimer(AckSchedule(ACK_DELAY, every=None), link.ack_due)
        reader = asyncio.create_task(self._events(resp, link, observer, ctx, hub_mode, acker))
        tasks = [reader]
        if hub_mode:
            tasks.append(asyncio.create_task(link.run(http, observer, acker)))
        try:
            await first_to_end("http", tasks)
        finally:
            acker.cancel()

    async def _events(
        self,
        resp: aiohttp.ClientResponse,
        link: PostingLink,
        observer: abc.ObserverBase[LinkEvent],
        ctx: LinkContext,
        hub_mode: bool,
        acker: AckTimer,
    ) -> None:
        types = self.event_types
        # Without the hub, only the data of the wanted types matters (no event objects).
        data_only = not hub_mode and types is not None
        decoder: Any = SSEDataDecoder(types) if data_only and types is not None else SSEDecoder()
        state = self._state(ctx)
        on_next = observer.on_next
        hub: HubSession | None = None
        opening = asyncio.timeout(self.open_timeout if hub_mode else None)
        # Characters an unfinished event may hold: the largest message,
        # base64-encoded (binary events), plus room for the event's other lines.
        # Comments (pings) are not part of any event, so they never count.
        stream_limit = self.max_message_size * 4 // 3 + 4096
        limit = self.max_message_size
        async with opening:
            async for chunk in resp.content.iter_any():
                events = decoder.feed(chunk)
                if decoder.retry is not None:
                    state.retry = min(decoder.retry, MAX_RETRY_MS) / 1000
                if not events:
                    on_next(ALIVE)  # a comment, a ping, part of an event: the link lives
                elif data_only:
                    # SSEDataDecoder: the data of the wanted events, as strings.
                    state.last_event_id = decoder.last_event_id
                    if max(map(len, events)) > limit:
                        # What came before the oversized event is delivered, then the link fails.
                        sizes = list(map(len, events))
                        first_big = next(i for i, n in enumerate(sizes) if n > limit)
                        if first_big:
                            on_next(Payloads(events[:first_big]))
                        raise ProtocolError("http", f"an event exceeds max_message_size={limit}")
                    on_next(events[0] if len(events) == 1 else Payloads(events))
                elif not hub_mode:
                    state.last_event_id = decoder.last_event_id
                    for event in events:
                        if types is None or event.event in types:
                            if len(event.data) > limit:
                                raise ProtocolError(
                                    "http", f"an event exceeds max_message_size={limit}"
                                )
                            on_next(event.data)
                        else:
                            on_next(ALIVE)
                else:
                    if hub is None:
                        hub, post, next_seq = adopt_session(events[0], self._url, ctx, "http")
                        link.adopt(hub, post)
                        opening.reschedule(None)
                        on_next(Opened(link, "http", next_seq, acks_prove_life=False))
                        events = events[1:]
                    if events:
                        deliver_events(events, hub, on_next, limit, "http")
                        acker.delivered()
                if decoder.pending > stream_limit:  # an event that never ends
                    raise ProtocolError(
                        "http", f"an event exceeds max_message_size={self.max_message_size}"
                    )
        raise ConnectionLost("http", "the event stream ended", retry_after=state.retry)


http = HttpTransport
"""``rxconn.http(...)``: the public name of :class:`HttpTransport`."""
