"""Hub sessions: one per client, outliving its links, with replay and de-duplication.

A session has at most one link at a time. Attaching a new link (a reconnect,
a transport switch) closes the old one first, so the hub never writes a
session's messages to two links. Outgoing messages go into the session's
:class:`~rxconn.session.ReplayLog`; each link's writer sends what follows its
cursor. Incoming messages pass the session's :class:`~rxconn.session.Inbound`
counter, so a message the client sends again after a cut is delivered once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from reactivex import Observable

from .._multicast import Multicast
from ..errors import BufferFullError, ConnectionClosedError
from ..session import Inbound, ReplayLog
from ..transport import Payload


if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["ServerLink", "Session"]

logger = logging.getLogger("rxconn.server")


class ServerLink(Protocol):
    """The hub side of one client link (a WebSocket or an SSE stream)."""

    transport: str
    cursor: int
    """Sequence number of the last message written to (or known to) the client."""

    def wake(self) -> None:
        """New messages are in the session's log: write them."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Stop the link (WebSocket close code, or end of the SSE stream)."""
        ...


class Session:
    """One client of the hub, for as long as its session lives.

    Attributes:
        id: The session id (what the client presents to resume).
        kind: ``"rxconn"`` (session protocol), ``"websocket"`` (plain frames:
            ends with its link) or ``"eventsource"`` (SSE without the
            session protocol, e.g. a browser; resumes with ``Last-Event-ID``).
    """

    def __init__(self, hub: Hub, session_id: str, kind: str, transport: str) -> None:
        self.id = session_id
        self.kind = kind
        self._hub = hub
        self.log = ReplayLog(hub.replay_limit)
        self.inbound = Inbound()
        self.link: ServerLink | None = None
        self._transport = transport
        self._grace: asyncio.TimerHandle | None = None
        self.ended = False
        self._messages: Multicast[Payload] = Multicast("session messages")
        self.messages: Observable[Payload] = self._messages.observable
        """Hot: payloads exactly as the client sent them, once each, in order; completes at end."""

    def __repr__(self) -> str:
        ended = " ended" if self.ended else ""
        return f"<Session {self.id} {self.kind} {self._transport or '-'}{ended}>"

    @property
    def transport(self) -> str:
        """The transport of the current (or last) link: ``"websocket"`` or ``"http"``."""
        return self._transport

    @property
    def resumable(self) -> bool:
        return self.kind != "websocket"

    # ----------------------------------------------------------- outgoing

    def send(self, payload: Payload) -> None:
        """Queue ``payload`` for the client; it survives link cuts within the grace period.

        Raises:
            ConnectionClosedError: if the session has ended.
            BufferFullError: if ``replay_limit`` messages already wait for this
                client (it is not keeping up); nothing was queued.
            TypeError: for anything but ``str`` or ``bytes``.
        """
        if self.ended:
            raise ConnectionClosedError()
        if type(payload) is not str and type(payload) is not bytes:
            if isinstance(payload, bytes | bytearray | memoryview):
                payload = bytes(payload)
            elif isinstance(payload, str):
                payload = str(payload)
            else:
                raise TypeError(f"send() takes str or bytes, got {type(payload).__name__}")
        link = self.link
        # A browser EventSource never acknowledges: its log is a replay window
        # over what was already written. Everyone else's messages stay until
        # acknowledged, and a full log refuses more (BufferFullError).
        written = link.cursor if link is not None and self.kind == "eventsource" else 0
        self.log.push(payload, evict_upto=written)
        if link is not None:
            link.wake()

    # ----------------------------------------------------------- incoming

    def deliver(self, seq: int, payload: Payload) -> bool | None:
        """Apply client message ``seq``: True delivered, False repeat, None gap."""
        verdict = self.inbound.accept(seq)
        if verdict:
            self._messages.send(payload)
            if self._hub.echo and not self.ended:
                self.offer(payload)
        return verdict

    def offer(self, payload: Payload) -> bool:
        """Send, or end the session if this client is too far behind; True if queued.

        The hub's own sends (echo, broadcast) use this: one slow client must
        not make them fail for everyone, so it is disconnected instead (1008)
        and, with its session gone, told so when it comes back (410 or a
        fresh session), rather than silently missing messages.
        """
        try:
            self.send(payload)
        except BufferFullError:
            self.end(f"client fell {self.log.limit} messages behind", code=1008)
            return False
        return True

    def deliver_next(self, payload: Payload) -> None:
        """Apply the next message of a link that numbers nothing (plain frames)."""
        self.deliver(self.inbound.received + 1, payload)

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
        grace = self._hub.session_grace
        self._grace = asyncio.get_running_loop().call_later(grace, self._expire)

    def _expire(self) -> None:
        self._grace = None
        if self.link is None:
            self.end(f"no link for {self._hub.session_grace:g} s")

    def end(self, reason: str, *, code: int = 1000) -> None:
        """End the session: close its link, forget it, complete ``messages``."""
        if self.ended:
            return
        self.ended = True
        logger.debug("session %s ended: %s", self.id, reason)
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        link, self.link = self.link, None
        if link is not None:
            link.close(code, reason)
        self._hub._forget(self)
        self._messages.complete()
