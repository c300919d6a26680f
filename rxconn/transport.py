"""The Transport protocol: how the core talks to links, and the events links emit.

A :class:`Transport` describes how to open a link; creating one opens nothing.
``transport.open(scheduler, context)`` returns a **cold** observable of
:data:`LinkEvent`; each subscription opens one physical link:

* ``Trying(name)`` (optional, only from transports that try several kinds of
  link, such as a fallback): the attempt is now trying a link of ``name``;
* ``Opened(link, transport)`` once the link is open (it may be emitted again by
  a fallback that switched to a better link: the new link replaces the old);
* each received payload as a plain ``str`` (text) or ``bytes`` (binary), in order;
* ``Acked(seq)`` when every written payload with sequence number ``<= seq``
  was accepted (by the socket for plain links, by the hub with sessions);
* ``ALIVE`` when something that is not a message shows the link is alive
  (a pong, an SSE comment);
* a :class:`~rxconn.quality.RoundTrip` when the link timed one of its
  heartbeats (or missed one): the connection turns them into ``Connection.quality``;
* a :class:`~rxconn.diagnostics.Diagnostic` when a multi-link transport did
  something worth reporting (fell back, started or lost an upgrade probe,
  upgraded): the connection passes it to ``Connection.diagnostics``. It is
  not a proof of life and changes no state;
* ``on_completed`` when the peer closed the link cleanly, ``on_error`` with an
  :class:`~rxconn.errors.RxconnError` when it failed;
* disposing the subscription closes the link and releases all of its resources.

Writing is ``Opened.link.write(first_seq, payloads)``: it hands payloads over
and never blocks; success is reported later by ``Acked`` and failure by the
link's observable erroring (the link is then replaced and unacknowledged
payloads are written again on the next link, oldest first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeAlias, runtime_checkable

from reactivex import Observable, abc

from ._types import Payload
from .diagnostics import Diagnostic
from .quality import RoundTrip
from .session import HubSession


__all__ = [
    "ALIVE",
    "Acked",
    "Alive",
    "Diagnostic",
    "Link",
    "LinkContext",
    "LinkEvent",
    "Opened",
    "Payload",
    "Payloads",
    "QuittableLink",
    "RoundTrip",
    "SizedTransport",
    "Transport",
    "Trying",
]


@runtime_checkable
class Link(Protocol):
    """An open link, as handed out by ``Opened``."""

    def write(self, first_seq: int, payloads: Sequence[Payload]) -> None:
        """Hand ``payloads`` (numbered from ``first_seq``) to the link; never blocks.

        Acceptance is reported by ``Acked`` events, failure by the link's
        observable erroring. A link that cannot send (a receive-only SSE link)
        simply never acknowledges.
        """
        ...


@runtime_checkable
class QuittableLink(Protocol):
    """A link that can end its hub session as it closes (optional for links).

    ``Connection.close()`` calls :meth:`quit` on the open link, so that the hub
    forgets the session at once instead of letting it expire.
    """

    def quit(self) -> None: ...


@runtime_checkable
class SizedTransport(Protocol):
    """A transport that knows the largest payload its peer takes (optional).

    ``Connection.send()`` then refuses a larger payload at once
    (``MessageTooLarge``) instead of failing the link with it forever.
    """

    @property
    def max_send_size(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Opened:
    """The link is open; ``transport`` names its kind (``"websocket"``, ``"http"``).

    ``next_seq`` is set by links that speak the hub session protocol: the
    sequence number the hub expects next. Everything before it was received
    (the outbox releases it); if it is lower than the outbox's numbering
    (a new session), the outbox is renumbered from it and resent.

    ``acks_prove_life`` is False for links whose acknowledgements (and their
    round trips) come on another connection than what they receive (HTTP:
    POST answers beside the event stream): only what arrives on the receiving
    side then feeds the idle timeout, so a stream gone silent is noticed even
    while POSTs still succeed.
    """

    link: Link
    transport: str
    next_seq: int | None = None
    acks_prove_life: bool = True


@dataclass(frozen=True, slots=True)
class Trying:
    """A multi-link transport (a fallback) moved on to try a link of ``transport``."""

    transport: str


@dataclass(frozen=True, slots=True)
class Acked:
    """Every written payload with sequence number ``<= seq`` was accepted."""

    seq: int


class Alive:
    """Proof of life that is not a message (a pong, an SSE comment). Use :data:`ALIVE`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ALIVE"


ALIVE: Final = Alive()


class Payloads(list[Payload]):
    """Several payloads that arrived together, in order: the same as emitting each one.

    A link that reads many messages at once (an SSE chunk) emits them as one
    event, so they pass the operators between the link and the connection once
    rather than once each.
    """

    __slots__ = ()


LinkEvent: TypeAlias = (
    str | bytes | Payloads | Opened | Trying | Acked | Alive | Diagnostic | RoundTrip
)


@dataclass(eq=False)
class LinkContext:
    """What the connection shares with the links it opens.

    Attributes:
        memory: Scratch space that lives for one period of interest; a
            fallback remembers there which transport failed, so that
            reconnects skip it, while new interest starts fresh.
        session: The connection's hub session state (shared by every link of
            every transport), or ``None`` for links that speak plain frames.
        probe: True when the link is opened only to check that it works (an
            upgrade probe): it must carry no messages.
        connection: Scratch space that lives as long as the connection (across
            periods of interest): what a transport must remember between the
            links of one connection (its last link, an SSE ``Last-Event-ID``).
            Keeping it here rather than on the transport object lets several
            connections share one transport.
    """

    memory: dict[str, Any] = field(default_factory=dict)
    session: HubSession | None = None
    probe: bool = False
    connection: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Transport(Protocol):
    """Describes how to open links of one kind; see the module docstring for the events."""

    @property
    def name(self) -> str:
        """The transport's name, used in states (``"websocket"``, ``"http"``, ``"fallback"``)."""
        ...

    def open(
        self, scheduler: abc.SchedulerBase, context: LinkContext | None = None
    ) -> Observable[LinkEvent]:
        """Return a cold observable: each subscription opens one physical link."""
        ...
