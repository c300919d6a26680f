"""The client's upward half of an HTTP link: numbered batches POSTed one at a time.

Shared by every transport that talks to the hub over plain HTTP requests (the
SSE link, long polling): what the connection writes is queued, and one POST
at a time carries the next batch (bounded by ``max_batch`` messages and
``max_batch_bytes``), numbered so that a retried batch is applied once, with
the client's acknowledgement riding along; the answer's ``last`` acknowledges.
Every POST resolves the transport's headers afresh (a ``headers`` callable
is called each time); a POST answered 401 is sent again at once, once, with
headers resolved again, and a second 401 in a row fails the link (fatal).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from reactivex import abc
from yarl import URL

from .. import wire
from ..errors import ProtocolError
from ..quality import RoundTrip
from ..session import HubSession, LinkQueue
from ..transport import Acked, LinkEvent, Payload
from ._acks import AckTimer
from ._errors import status_error


__all__ = ["PostOptions", "PostingLink"]

QUIT_TIMEOUT: Final = 1.0
TIMED_BODY: Final = 4096
"""POSTs up to this size time the link (``RoundTrip``); bigger ones time the upload too."""
LARGE_BODY: Final = 512 * 1024
"""Bodies this large go as a stream (aiohttp warns about big raw-bytes bodies)."""


@dataclass(frozen=True, slots=True)
class PostOptions:
    """How a transport POSTs: its name and URL (for errors), limits, headers, TLS.

    ``resolve_headers``, when given, is awaited for every POST and its result
    used instead of ``headers`` (a transport's ``headers`` callable: a
    refreshed token goes with the very next POST).
    """

    transport: str
    url: str
    headers: Mapping[str, str]
    max_batch: int
    max_batch_bytes: int
    post_timeout: float
    ssl: Any
    resolve_headers: Callable[[], Awaitable[Mapping[str, str]]] | None = None
    heartbeat: float | None = None
    """Seconds of quiet after which a small POST is sent anyway, to time the link."""

    async def user_headers(self) -> Mapping[str, str]:
        """The user's headers for one request (resolved now, if they change)."""
        if self.resolve_headers is None:
            return self.headers
        return await self.resolve_headers()


class PostingLink:
    """The writable side of an HTTP link: a queue drained by one POST at a time."""

    def __init__(self, options: PostOptions) -> None:
        self.options = options
        self.queue = LinkQueue()
        self.wake = asyncio.Event()
        self.ready = asyncio.Event()  # set once the hub named the session and POST URL
        self.hub: HubSession | None = None
        self.post: URL | None = None
        self.closed = False
        self.quitting = False
        self.ack_pending = False  # an acknowledgement is due: POST even without data

    def adopt(self, hub: HubSession, post: URL) -> None:
        """The hub named the session and where to POST: the writer may start."""
        self.hub, self.post = hub, post
        self.ready.set()

    def ack_due(self) -> None:
        """An ack is due: the writer POSTs (an ack-only batch if need be)."""
        self.ack_pending = True
        self.wake.set()

    def write(self, first_seq: int, payloads: Sequence[Payload]) -> None:
        if self.closed:
            return
        if self.queue.put(first_seq, payloads):
            self.wake.set()

    def quit(self) -> None:
        """End the hub session when this link closes (``Connection.close()``)."""
        self.quitting = True

    def _next_batch(self, byte_limit: int) -> tuple[int, list[Payload], int]:
        """The first seq, payloads and size of the next batch (taken off the queue)."""
        queue = self.queue
        first = queue.head_seq
        batch: list[Payload] = []
        size = 0
        while queue and len(batch) < self.options.max_batch:
            payload = queue.peek()
            if batch and size + len(payload) > byte_limit:
                break
            queue.popleft()
            batch.append(payload)
            size += len(payload)
        return first, batch, size

    async def run(
        self,
        http: aiohttp.ClientSession,
        observer: abc.ObserverBase[LinkEvent],
        acks: AckTimer,
    ) -> None:
        """POST what the connection writes, one batch in flight; acks ride along."""
        await self.ready.wait()
        hub, post, options = self.hub, self.post, self.options
        assert hub is not None and hub.id is not None and post is not None
        timeout = aiohttp.ClientTimeout(total=options.post_timeout)
        limit = options.max_batch_bytes  # halved when a server refuses a batch as too large
        refused = False  # the last POST was answered 401 (it is sent again once, at once)
        headers: dict[str, str] | None = None  # static headers are built once per link
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout(options.heartbeat):
                    await self.wake.wait()
            except TimeoutError:
                self.ack_pending = True  # quiet for a heartbeat: a small POST, timed
            self.wake.clear()
            while self.queue or self.ack_pending:
                first, batch, size = self._next_batch(limit)
                acks.sent()  # the ack rides on this POST
                self.ack_pending = False
                body = wire.encode_batch(
                    wire.Batch(hub.id, first, tuple(batch), ack=hub.received, key=hub.key or "")
                )
                data: bytes | io.BytesIO = body if len(body) < LARGE_BODY else io.BytesIO(body)
                if headers is None or options.resolve_headers is not None:
                    headers = {"Content-Type": "application/json", **await options.user_headers()}
                started = loop.time()
                async with http.post(
                    post,
                    data=data,
                    headers=headers,
                    timeout=timeout,
                    ssl=options.ssl,
                    allow_redirects=False,  # a body with the user's headers goes nowhere else
                ) as resp:
                    if resp.status == 413 and len(batch) > 1:
                        # The server's body limit is below ours: split, never give up on it.
                        self._put_back(batch)
                        limit = max(1, size // 2)
                        continue
                    if resp.status == 401 and not refused:
                        # Credentials went stale: the same batch again at once, with
                        # headers resolved afresh; a second 401 in a row is fatal.
                        refused = True
                        self._put_back(batch)
                        continue
                    refused = False
                    last = await self._answer(resp)
                if len(body) <= TIMED_BODY:  # a small POST's answer times the round trip
                    observer.on_next(RoundTrip(loop.time() - started))
                observer.on_next(Acked(last))

    def _put_back(self, batch: list[Payload]) -> None:
        """Queue ``batch`` again, first in line (with its ack)."""
        self.queue.put_back(batch)
        self.ack_pending = True  # an ack-only POST is sent again too

    async def _answer(self, resp: aiohttp.ClientResponse) -> int:
        name = self.options.transport
        if resp.status == 200:
            try:
                last = (await resp.json())["last"]
            except (ValueError, KeyError, TypeError, aiohttp.ContentTypeError) as exc:
                raise ProtocolError(name, "malformed POST answer") from exc
            if type(last) is not int:
                raise ProtocolError(name, "malformed POST answer")
            return last
        if resp.status == 409:
            raise ProtocolError(name, "the hub saw a gap in our messages (409)", status=409)
        if resp.status == 413:
            raise ProtocolError(name, "the hub refused a message as too large (413)", fatal=True)
        raise status_error(name, self.options.url, resp.status, resp.headers, posting=True)

    async def quit_session(self, http: aiohttp.ClientSession) -> None:
        """Tell the hub the session is over (bounded; best effort, it expires anyway)."""
        hub, post = self.hub, self.post
        if hub is None or hub.id is None or post is None:
            return
        body = wire.encode_batch(
            wire.Batch(hub.id, 1, (), ack=hub.received, close=True, key=hub.key or "")
        )
        with contextlib.suppress(Exception):
            async with asyncio.timeout(QUIT_TIMEOUT):
                user = await self.options.user_headers()
                async with http.post(
                    post,
                    data=body,
                    headers={"Content-Type": "application/json", **user},
                    ssl=self.options.ssl,
                    allow_redirects=False,
                ) as resp:
                    await resp.read()
