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
import contextlib
import io
import json
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from reactivex import Observable, abc
from yarl import URL

from .. import wire
from ..errors import ConnectionLost, InvalidURL, ProtocolError, TransportError, safe_url
from ..session import ClientSession as HubSession
from ..sse import ServerSentEvent, SSEDecoder
from ..transport import ALIVE, Acked, LinkContext, LinkEvent, Opened, Payload
from ._errors import status_error, translate
from ._links import serial_links


__all__ = ["HttpLink", "HttpTransport", "http"]

RXCONN_HEADER: Final = "X-Rxconn"
ACK_DELAY: Final = 0.25
QUIT_TIMEOUT: Final = 1.0
LARGE_BODY: Final = 512 * 1024
"""Bodies this large go as a stream (aiohttp warns about big raw-bytes bodies)."""


def _http_url(url: str) -> URL:
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise InvalidURL(str(url), "cannot be parsed") from exc
    if parsed.scheme not in ("http", "https"):
        raise InvalidURL(url, "scheme must be http or https")
    if not parsed.host:
        raise InvalidURL(url, "no host")
    return parsed


@dataclass
class _StreamState:
    """What one connection's HTTP links remember between them (``LinkContext.connection``)."""

    last_event_id: str = ""
    retry: float | None = None  # the server's last ``retry:`` advice, in seconds


class HttpLink:
    """The writable side of one HTTP link: a queue drained by one POST at a time."""

    def __init__(self) -> None:
        self.queue: deque[tuple[int, Payload]] = deque()
        self.wake = asyncio.Event()
        self.ready = asyncio.Event()  # set once the hub named the session and POST URL
        self.hub: HubSession | None = None
        self.post: URL | None = None
        self.next_seq: int | None = None
        self.closed = False
        self.quitting = False

    def write(self, first_seq: int, payloads: Sequence[Payload]) -> None:
        if self.closed:
            return
        if self.next_seq is None or first_seq > self.next_seq:
            self.next_seq = first_seq
        skip = self.next_seq - first_seq
        for offset in range(max(skip, 0), len(payloads)):
            self.queue.append((first_seq + offset, payloads[offset]))
        self.next_seq = max(self.next_seq, first_seq + len(payloads))
        self.wake.set()

    def quit(self) -> None:
        """End the hub session when this link closes (``Connection.close()``)."""
        self.quitting = True


class HttpTransport:
    """Describe HTTP links (SSE down, POST up) to the event stream at ``url``; opens nothing.

    Args:
        url: The SSE endpoint (``http(s)://…/rx/events`` for the hub).
        headers: Extra request headers (never logged).
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
        hub: Ask for the hub session protocol (``X-Rxconn: v1``).
        session: An ``aiohttp.ClientSession`` to use (never closed by rxconn).
        ssl: Passed to aiohttp; certificates are verified by default.

    Raises:
        InvalidURL: for a URL without host or with another scheme.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        open_timeout: float = 10.0,
        event_types: Collection[str] | None = ("message",),
        max_batch: int = 1000,
        max_batch_bytes: int = 256 * 1024,
        max_message_size: int = 4 * 1024 * 1024,
        post_timeout: float = 30.0,
        hub: bool = True,
        session: aiohttp.ClientSession | None = None,
        ssl: Any = True,
    ) -> None:
        self._url = _http_url(url)
        self.url = str(self._url)
        if not open_timeout > 0:
            raise ValueError(f"open_timeout must be > 0, got {open_timeout!r}")
        if max_batch < 1 or max_batch_bytes < 1:
            raise ValueError("max_batch and max_batch_bytes must be >= 1")
        self.headers = dict(headers or {})
        self.open_timeout = open_timeout
        self.event_types = None if event_types is None else frozenset(event_types)
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.max_message_size = max_message_size
        self.max_send_size = max_message_size
        """The largest payload ``Connection.send()`` accepts for this transport."""
        self.post_timeout = post_timeout
        self.hub = hub
        self.session = session
        self.ssl = ssl
        self._key = f"http:{id(self)}"

    @property
    def name(self) -> str:
        return "http"

    def __repr__(self) -> str:
        return f"http({safe_url(self.url)!r})"

    def open(
        self, scheduler: abc.SchedulerBase, context: LinkContext | None = None
    ) -> Observable[LinkEvent]:
        return serial_links(self._key + ":link", f"rxconn http {self.url}", self._run, context)

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
            link = HttpLink()
            try:
                await self._stream(http, link, observer, ctx)
            finally:
                link.closed = True
                if link.quitting:
                    await self._quit(http, link)
                if own:
                    await http.close()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = translate("http", self.url, exc, opening=False)
            if isinstance(error, TransportError) and error.retry_after is None:
                error.retry_after = self._state(ctx).retry
            observer.on_error(error)

    def _request_headers(self, ctx: LinkContext) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **self.headers}
        hub = ctx.session
        if self.hub:
            headers[RXCONN_HEADER] = "v1"
        if self.hub and isinstance(hub, HubSession) and hub.id is not None:
            headers["Last-Event-ID"] = wire.encode_event_id(hub.id, hub.received)
        elif last_event_id := self._state(ctx).last_event_id:
            headers["Last-Event-ID"] = last_event_id
        return headers

    async def _stream(
        self,
        http: aiohttp.ClientSession,
        link: HttpLink,
        observer: abc.ObserverBase[LinkEvent],
        ctx: LinkContext,
    ) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.open_timeout)
        try:
            async with asyncio.timeout(self.open_timeout):
                resp = await http.get(
                    self._url, headers=self._request_headers(ctx), timeout=timeout, ssl=self.ssl
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate("http", self.url, exc, opening=True) from exc
        try:
            await self._check(resp)
            hub_mode = self.hub and resp.headers.get(RXCONN_HEADER) == "v1"
            if not hub_mode:
                observer.on_next(Opened(link, "http"))
            await self._read(http, resp, link, observer, ctx, hub_mode)
        finally:
            resp.close()  # close, not release: a half-read stream must not go back to a pool

    async def _check(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status == 204:
            raise TransportError("http", "the server said stop (204 No Content)", status=204)
        if resp.status != 200:
            raise status_error("http", self.url, resp.status, resp.headers)
        if resp.content_type != "text/event-stream":
            raise ProtocolError(
                "http", f"expected text/event-stream, got {resp.content_type!r}", fatal=True
            )

    async def _read(
        self,
        http: aiohttp.ClientSession,
        resp: aiohttp.ClientResponse,
        link: HttpLink,
        observer: abc.ObserverBase[LinkEvent],
        ctx: LinkContext,
        hub_mode: bool,
    ) -> None:
        """Run the stream reader and (with the hub) the POST writer until either fails."""
        acker = _Acker(link)
        reader = asyncio.create_task(self._events(resp, link, observer, ctx, hub_mode, acker))
        tasks = [reader]
        if hub_mode:
            tasks.append(asyncio.create_task(self._write(http, link, observer, acker)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            first = reader if reader in done else next(iter(done))
            first.result()
            raise ConnectionLost("http", "link task ended unexpectedly")
        finally:
            acker.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _events(
        self,
        resp: aiohttp.ClientResponse,
        link: HttpLink,
        observer: abc.ObserverBase[LinkEvent],
        ctx: LinkContext,
        hub_mode: bool,
        acker: _Acker,
    ) -> None:
        decoder = SSEDecoder()
        state = self._state(ctx)
        on_next = observer.on_next
        types = self.event_types
        hub: HubSession | None = None
        opening = asyncio.timeout(self.open_timeout if hub_mode else None)
        # Bytes that may arrive without completing an event: the largest message,
        # base64-encoded (binary events), plus room for the event's other lines.
        stream_limit = self.max_message_size * 4 // 3 + 4096
        undispatched = 0
        limit = self.max_message_size
        async with opening:
            async for chunk in resp.content.iter_any():
                events = decoder.feed(chunk)
                if decoder.retry is not None:
                    state.retry = decoder.retry / 1000
                if events:
                    undispatched = 0
                else:
                    # An event that never ends must not grow without bound.
                    undispatched += len(chunk)
                    if undispatched > stream_limit:
                        raise ProtocolError(
                            "http", f"an event exceeds max_message_size={self.max_message_size}"
                        )
                if not events:
                    on_next(ALIVE)  # a comment, a ping, part of an event: the link lives
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
                        hub, link.post, next_seq = self._welcome(events[0], ctx)
                        link.hub = hub
                        opening.reschedule(None)
                        link.ready.set()
                        on_next(Opened(link, "http", next_seq))
                        events = events[1:]
                    if events:
                        self._deliver(events, hub, on_next)
                        acker.due()
        raise ConnectionLost("http", "the event stream ended", retry_after=state.retry)

    def _welcome(self, event: Any, ctx: LinkContext) -> tuple[HubSession, URL, int]:
        if event.event != wire.SSE_SESSION_EVENT:
            raise ProtocolError("http", "the hub's first event must name the session", fatal=True)
        try:
            hello = json.loads(event.data)
            session_id, post, last = hello["session"], hello["post"], hello["last"]
            resumed = bool(hello.get("resumed", False))
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError("http", "malformed session event", fatal=True) from exc
        if type(session_id) is not str or type(post) is not str or type(last) is not int:
            raise ProtocolError("http", "malformed session event", fatal=True)
        hub = ctx.session if isinstance(ctx.session, HubSession) else HubSession()
        ctx.session = hub
        hub.start(session_id, resumed)
        return hub, self._url.join(URL(post)), last + 1

    def _deliver(self, events: list[ServerSentEvent], hub: HubSession, on_next: Any) -> None:
        """Deliver the hub's numbered events once each, in order (the hot path of the link)."""
        inbound = hub.inbound
        assert inbound is not None and hub.id is not None
        prefix = hub.id + ":"
        cut = len(prefix)
        limit = self.max_message_size
        for event in events:
            event_id = event.id
            number = event_id[cut:]
            if not event_id.startswith(prefix) or not number.isdigit() or not number.isascii():
                raise ProtocolError("http", f"event id {event_id!r} is not of this session")
            seq = int(number)
            expected = inbound.received + 1
            if seq == expected:
                kind = event.event
                payload: Payload = event.data
                if kind != "message":
                    try:
                        payload = wire.decode_sse_payload(kind, event.data)
                    except wire.WireError as exc:  # not counted: the resume asks for it again
                        raise ProtocolError("http", str(exc)) from exc
                if len(payload) > limit:
                    raise ProtocolError("http", f"a message exceeds max_message_size={limit}")
                inbound.received = seq
                on_next(payload)
            elif seq > expected:
                raise ProtocolError("http", f"gap in the event stream at {seq}")
            # seq < expected: a repeat after a resume; already delivered

    async def _write(
        self,
        http: aiohttp.ClientSession,
        link: HttpLink,
        observer: abc.ObserverBase[LinkEvent],
        acker: _Acker,
    ) -> None:
        """POST what the connection writes, one batch in flight; acks ride along."""
        await link.ready.wait()
        hub, post, queue = link.hub, link.post, link.queue
        assert hub is not None and hub.id is not None and post is not None
        timeout = aiohttp.ClientTimeout(total=self.post_timeout)
        headers = {"Content-Type": "application/json", **self.headers}
        limit = self.max_batch_bytes  # halved when a server refuses a batch as too large
        while True:
            await link.wake.wait()
            link.wake.clear()
            while queue or acker.pending:
                first = queue[0][0] if queue else (link.next_seq or 1)
                batch: list[Payload] = []
                size = 0
                while queue and len(batch) < self.max_batch:
                    payload = queue[0][1]
                    if batch and size + len(payload) > limit:
                        break
                    queue.popleft()
                    batch.append(payload)
                    size += len(payload)
                acker.sent()
                body = wire.encode_batch(wire.Batch(hub.id, first, tuple(batch), ack=hub.received))
                data: bytes | io.BytesIO = body if len(body) < LARGE_BODY else io.BytesIO(body)
                async with http.post(
                    post, data=data, headers=headers, timeout=timeout, ssl=self.ssl
                ) as resp:
                    if resp.status == 413 and len(batch) > 1:
                        # The server's body limit is below ours: split, never give up on it.
                        queue.extendleft(reversed([(first + i, p) for i, p in enumerate(batch)]))
                        limit = max(1, size // 2)
                        continue
                    last = await self._answer(resp)
                observer.on_next(Acked(last))

    async def _answer(self, resp: aiohttp.ClientResponse) -> int:
        if resp.status == 200:
            try:
                last = (await resp.json())["last"]
            except (ValueError, KeyError, TypeError, aiohttp.ContentTypeError) as exc:
                raise ProtocolError("http", "malformed POST answer") from exc
            if type(last) is not int:
                raise ProtocolError("http", "malformed POST answer")
            return last
        if resp.status == 409:
            raise ProtocolError("http", "the hub saw a gap in our messages (409)", status=409)
        if resp.status == 413:
            raise ProtocolError("http", "the hub refused a message as too large (413)", fatal=True)
        error = status_error("http", self.url, resp.status, resp.headers)
        if resp.status < 500 and resp.status not in (408, 410, 429):
            error.fatal = True
        raise error

    async def _quit(self, http: aiohttp.ClientSession, link: HttpLink) -> None:
        """Tell the hub the session is over (bounded; best effort, it expires anyway)."""
        hub, post = link.hub, link.post
        if hub is None or hub.id is None or post is None:
            return
        body = wire.encode_batch(wire.Batch(hub.id, 1, (), ack=hub.received, close=True))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(QUIT_TIMEOUT):
                async with http.post(
                    post, data=body, headers={"Content-Type": "application/json"}, ssl=self.ssl
                ) as resp:
                    await resp.read()


class _Acker:
    """Batches acknowledgements of received messages into a POST after a short delay."""

    def __init__(self, link: HttpLink) -> None:
        self._link = link
        self.pending = False
        self._timer: asyncio.TimerHandle | None = None

    def due(self) -> None:
        if self._timer is None and not self.pending:
            self._timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.pending = True
        self._link.wake.set()

    def sent(self) -> None:
        self.pending = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def cancel(self) -> None:
        self.sent()


http = HttpTransport
"""``rxconn.http(...)``: the public name of :class:`HttpTransport`."""
