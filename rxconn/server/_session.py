"""Hub sessions: one per client, outliving its links, with replay and de-duplication.

A session has at most one link at a time. Attaching a new link (a reconnect,
a transport switch) closes the old one first, so the hub never writes a
session's messages to two links. Outgoing messages go into the session's
:class:`~rxconn.session.ReplayLog`; each link's writer sends what follows its
cursor. Incoming messages pass the session's :class:`~rxconn.session.Inbound`
counter, so a message the client sends again after a cut is delivered once.
Both are held by the session's :class:`~rxconn.session.SessionProtocol`, the
same object the client drives at its end.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Final

from reactivex import Observable

from .._multicast import Multicast
from .._types import coerce_payload
from ..errors import BufferFullError, ConnectionClosedError
from ..session import Accept, ReplayLog, SessionProtocol, SessionState
from ..transport import Payload
from ._settings import HubSettings, LinkTransport, ServerLink, SessionKind, Shared


__all__ = ["Session"]

logger = logging.getLogger("rxconn.server")

YIELD_EVERY: Final = 1024
"""Messages of one batch delivered between two yields to the event loop."""


class Session:
    """One client of the hub, for as long as its session lives.

    Attributes:
        id: The session id: public (apps and logs may show it), never enough
            on its own to act as the session.
        key: The session's secret, known only to the hub and the client: every
            resume and POST must present it (``hmac.compare_digest``).
        resume_token: For ``"eventsource"`` sessions only: carried in the SSE
            event ids, so that a browser, which can present nothing but
            ``Last-Event-ID``, resumes its stream. It lets its holder resume
            the stream, never post, acknowledge beyond what was written, or end
            the session (see docs/protocol.md, "Session secrets").
        kind: ``"rxconn"`` (session protocol), ``"websocket"`` (plain frames:
            ends with its link) or ``"eventsource"`` (SSE without the
            session protocol, e.g. a browser; resumes with ``Last-Event-ID``).
    """

    def __init__(
        self,
        session_id: str,
        kind: SessionKind,
        transport: LinkTransport,
        settings: HubSettings,
        on_end: Callable[[Session], None],
        *,
        key: str | None = None,
        resume_token: str | None = None,
        shared: Shared | None = None,
    ) -> None:
        self.id = session_id
        self.key = key if key is not None else secrets.token_urlsafe(18)
        self.log = ReplayLog(settings.replay_limit, settings.replay_bytes)
        self.protocol: SessionProtocol[Payload] = SessionProtocol(self.log, session_id, self.key)
        """The session's end of the protocol (the same object type as the client's)."""
        if resume_token is None and kind == "eventsource":
            resume_token = secrets.token_urlsafe(12)
        self.resume_token = resume_token
        self.shared = shared
        """Where the session's state is shared with other hubs (Redis), or None."""
        self.kind: SessionKind = kind
        self._settings = settings
        self._on_end = on_end
        self.inbound = self.protocol.inbound
        self.link: ServerLink | None = None
        self._transport: LinkTransport = transport
        self._grace: asyncio.TimerHandle | None = None
        self.ended = False
        self._messages: Multicast[Payload] = Multicast("session messages")
        self.messages: Observable[Payload] = self._messages.observable
        """Hot: payloads exactly as the client sent them, once each, in order; completes at end."""

    def __repr__(self) -> str:
        ended = " ended" if self.ended else ""
        return f"<Session {self.id} {self.kind} {self._transport or '-'}{ended}>"

    @property
    def transport(self) -> LinkTransport:
        """The transport of the current (or last) link: websocket, http or longpoll."""
        return self._transport

    @property
    def resumable(self) -> bool:
        return self.kind != "websocket"

    def state(self) -> SessionState:
        """The session as plain data (:class:`~rxconn.session.SessionState`)."""
        return self.protocol.state()

    def authenticate(self, key: str | None) -> bool:
        """True if ``key`` is this session's secret (compared in constant time)."""
        return key is not None and hmac.compare_digest(key.encode(), self.key.encode())

    def may_resume_stream(self, token: str | None, key: str | None) -> bool:
        """True if an SSE resume may take this session's stream: its key, or a browser's token."""
        if self.authenticate(key):
            return True
        expected = self.resume_token
        return (
            expected is not None
            and token is not None
            and hmac.compare_digest(token.encode(), expected.encode())
        )

    # ----------------------------------------------------------- outgoing

    def send(self, payload: Payload) -> None:
        """Queue ``payload`` for the client; it survives link cuts within the grace period.

        Raises:
            ConnectionClosedError: if the session has ended.
            BufferFullError: if ``replay_limit`` messages (or ``replay_bytes``)
                already wait for this client (it is not keeping up); nothing was queued.
            TypeError: for anything but ``str`` or ``bytes``.
            ValueError: for text that is not valid Unicode (a lone surrogate),
                which no link could write.
        """
        if self.ended:
            raise ConnectionClosedError()
        payload = coerce_payload(payload)
        self._queue(payload)

    def _queue(self, payload: Payload) -> None:
        """Queue a payload already checked by :func:`coerce_payload`."""
        if self.shared is not None:
            self.shared.queue(self, payload)  # numbered in Redis, then read back into the log
            return
        link = self.link
        # A browser EventSource never acknowledges: its log is a replay window
        # over what was already written. Everyone else's messages stay until
        # acknowledged, and a full log refuses more (BufferFullError).
        written = link.cursor if link is not None and self.kind == "eventsource" else 0
        self.log.push(payload, evict_upto=written)
        if link is not None:
            link.wake()

    # ----------------------------------------------------------- incoming

    def deliver(self, seq: int, payload: Payload) -> Accept:
        """Apply client message ``seq`` (delivered once, in order; a gap is refused)."""
        verdict = self.protocol.receive(seq)
        if verdict is Accept.DELIVER:
            self._messages.send(payload)
            if self._settings.echo and not self.ended:
                self.offer(payload)
        return verdict

    def offer(self, payload: Payload) -> bool:
        """Send, or end the session if this client is too far behind; True if queued.

        ``payload`` must already be checked (:func:`coerce_payload`): echoes
        are what a client sent, and ``broadcast`` checks once for everyone.
        The hub's own sends (echo, broadcast) use this: one slow client must
        not make them fail for everyone, so it is disconnected instead (1008)
        and, with its session gone, told so when it comes back (410 or a
        fresh session), rather than silently missing messages.
        """
        if self.ended:
            return False
        try:
            self._queue(payload)
        except BufferFullError:
            self.end(f"client fell {self.log.limit} messages behind", code=1008)
            return False
        return True

    def deliver_next(self, payload: Payload) -> None:
        """Apply the next message of a link that numbers nothing (plain frames)."""
        self.deliver(self.inbound.received + 1, payload)

    async def receive(self, first_seq: int, payloads: Sequence[Payload]) -> Accept:
        """Apply client messages numbered from ``first_seq``; GAP if the first is not next.

        In one process this is :meth:`deliver` for each (yielding to the loop now
        and then); with a shared state (Redis) the batch is applied there in one
        atomic step, so each message is delivered once cluster-wide, before any
        acknowledgement covers it.
        """
        if self.shared is not None:
            return await self.shared.receive(self, first_seq, payloads)
        for offset, payload in enumerate(payloads):
            if self.ended:
                break  # e.g. its replay log overflowed: acknowledge only what the app got
            if self.deliver(first_seq + offset, payload) is Accept.GAP:
                return Accept.GAP
            if offset % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # a big batch must not hold the loop for everyone else
        return Accept.DELIVER

    def applied(self, payload: Payload) -> None:
        """A client message applied elsewhere (in Redis): hand it to the application."""
        self._messages.send(payload)

    def acknowledged(self, seq: int) -> None:
        """The client has every hub message up to ``seq``: forget them."""
        self.log.ack(seq)
        if self.shared is not None:
            self.shared.acknowledged(self)

    # --------------------------------------------------------------- links

    def attach(self, link: ServerLink) -> None:
        """Make ``link`` the session's only link (the previous one is closed)."""
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        old, self.link = self.link, link
        self._transport = link.transport
        if old is not None and old is not link:
            old.close(1000, "replaced by a newer link")

    def detach(self, link: ServerLink) -> None:
        """``link`` ended; start the grace period (or end a plain session)."""
        if self.link is not link:
            return
        self.link = None
        if self.ended:
            return
        if not self.resumable:
            self.end("link closed")
            return
        grace = self._settings.session_grace
        self._grace = asyncio.get_running_loop().call_later(grace, self._expire)

    def _expire(self) -> None:
        self._grace = None
        if self.link is None:
            # Shared: only this hub's view ends; Redis forgets the state by its own expiry
            # (another hub may have taken the session over meanwhile).
            self.end(f"no link for {self._settings.session_grace:g} s", here_only=True)

    def end(self, reason: str, *, code: int = 1000, here_only: bool = False) -> None:
        """End the session: close its link, forget it, complete ``messages``.

        With a shared state, ``here_only`` ends just this hub's view of it (the
        hub shuts down, another hub took it over): the session lives on in Redis.
        """
        if self.ended:
            return
        if self.shared is not None:
            self.shared.ended(self, forget=not here_only)
        self.ended = True
        logger.debug("session %s ended: %s", self.id, reason)
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        link, self.link = self.link, None
        if link is not None:
            link.close(code, reason)
        self._on_end(self)
        self._messages.complete()
