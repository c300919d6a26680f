"""The hub's settings and the shapes every part of the hub shares: the bottom of the package.

Nothing here imports another module of :mod:`rxconn.server`, so sessions, the
registry and the endpoints can all depend on it without an import circle.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias

from .._types import Payload
from ..session import Accept
from ._origins import normalize_origins


__all__ = ["HubSettings", "LinkTransport", "ServerLink", "SessionKind", "Shared", "Unavailable"]

SessionKind: TypeAlias = Literal["rxconn", "websocket", "eventsource"]
"""``"rxconn"``: the session protocol; ``"websocket"``: plain frames (ends with its link);
``"eventsource"``: SSE without the session protocol (a browser), resumed by event id."""

LinkTransport: TypeAlias = Literal["websocket", "http", "longpoll"]


class ServerLink(Protocol):
    """The hub side of one client link (a WebSocket, an SSE stream, or a long-poll link)."""

    @property
    def transport(self) -> LinkTransport: ...

    cursor: int
    """Sequence number of the last message written to (or known to) the client."""

    def wake(self) -> None:
        """New messages are in the session's log: write them."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Stop the link (WebSocket close code, or the end of the SSE stream)."""
        ...


class Unavailable(Exception):
    """The shared session state (Redis) cannot be reached now: try again later (503, 1013)."""


RETRY_AFTER = 1
"""Seconds a client is told to wait while Redis is away: ``Retry-After`` of a 503, the last
word of a 1013 close reason (without it rxconn clients would wait 5 s)."""


class Shared(Protocol):
    """Where sessions are shared with other hubs (Redis: ``_cluster.Cluster``).

    A session with a shared state applies client messages there, numbers its
    messages there, and reports acknowledgements and its end there.
    """

    def queue(self, session: Any, payload: Payload) -> None:
        """Send ``payload`` to ``session``'s client (in order with this hub's other sends)."""
        ...

    async def receive(self, session: Any, first_seq: int, payloads: Sequence[Payload]) -> Accept:
        """Apply client messages (see ``Session.receive``)."""
        ...

    def acknowledged(self, session: Any) -> None:
        """``session.log.acked`` moved on: record it."""
        ...

    def ended(self, session: Any, *, forget: bool) -> None:
        """``session`` ended on this hub (with ``forget``: for every hub)."""
        ...


@dataclass(kw_only=True, eq=False)
class HubSettings:
    """What a hub is configured with; see :class:`~rxconn.server.Hub` for each field.

    The fields stay writable (tests and demos flip ``echo``, say); sessions and
    endpoints read them when they need them.
    """

    echo: bool = False
    ping_interval: float = 15.0
    session_grace: float = 30.0
    replay_limit: int = 10_000
    replay_bytes: int = 32 * 1024 * 1024
    max_message_size: int = 4 * 1024 * 1024
    max_body_size: int = 16 * 1024 * 1024
    max_batch: int = 10_000
    poll_hold: float = 20.0
    allowed_origins: Collection[str] = ()
    backplane: Any = None

    def __post_init__(self) -> None:
        if not self.ping_interval > 0:
            raise ValueError(f"ping_interval must be > 0, got {self.ping_interval!r}")
        if not self.poll_hold > 0:
            raise ValueError(f"poll_hold must be > 0, got {self.poll_hold!r}")
        if not self.session_grace >= 0:
            raise ValueError(f"session_grace must be >= 0, got {self.session_grace!r}")
        for name in ("replay_limit", "replay_bytes", "max_batch", "max_message_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        # Serialized as browsers send Origin; ValueError for what is not an origin.
        self.allowed_origins = normalize_origins(self.allowed_origins)
