"""The client's side of the hub's numbered event stream, for every HTTP transport.

The hub writes the same events to an SSE stream and to long-poll answers: a
first ``session`` event that names the session and the POST URL, then data
events whose ids carry their sequence numbers. These two functions turn them
into the session the client adopts and the payloads it delivers, once each
and in order; the transports only move bytes.
"""

from __future__ import annotations

from collections.abc import Callable

from yarl import URL

from .. import wire
from ..errors import ProtocolError
from ..session import Accept, HubSession
from ..sse import ServerSentEvent
from ..transport import LinkContext, LinkEvent, Payload, Payloads


__all__ = ["adopt_session", "deliver_events"]


def adopt_session(
    event: ServerSentEvent, events_url: URL, ctx: LinkContext, transport: str
) -> tuple[HubSession, URL, int]:
    """Adopt the session the hub's first event names; returns it, the POST URL, the next seq.

    Raises:
        ProtocolError: fatal when the first event is not the session event (not
            the hub protocol at all) or names a POST URL on another origin (our
            headers and payloads go only where the stream came from); retryable
            when the event cannot be read (a broken hub).
    """
    if event.event != wire.SSE_SESSION_EVENT:
        raise ProtocolError(transport, "the hub's first event must name the session", fatal=True)
    try:
        info = wire.decode_session_event(event.data)
    except wire.WireError as exc:  # a broken (or hostile) answer: retried, with backoff
        raise ProtocolError(transport, f"malformed session event: {exc}") from exc
    try:
        post = events_url.join(URL(info.post))
        same_origin = post.origin() == events_url.origin()
    except ValueError:
        same_origin = False
    if not same_origin:
        raise ProtocolError(
            transport, "the hub named a POST URL on another origin; refusing it", fatal=True
        )
    hub = ctx.session = ctx.session or HubSession()
    hub.start(info.session, info.resumed, info.key)
    return hub, post, info.last + 1


def deliver_events(
    events: list[ServerSentEvent],
    hub: HubSession,
    on_next: Callable[[LinkEvent], None],
    limit: int,
    transport: str,
) -> None:
    """Deliver the hub's numbered events once each, in order (the hot path of the link).

    Raises:
        ProtocolError: (retryable) for an id of another session, a gap, a malformed
            or oversized payload; nothing of the failing event was counted, so the
            resume asks for it again.
    """
    inbound = hub.inbound
    assert inbound is not None and hub.id is not None
    numbered = wire.event_numbers(hub.id)
    GAP = Accept.GAP
    out: list[Payload] = []  # counted, so delivered even if a later event fails
    try:
        for event in events:
            seq = numbered(event.id)
            if seq is None:
                raise ProtocolError(transport, "an event id is not of this session")
            if seq <= inbound.received:
                continue  # a repeat after a resume: already delivered
            kind = event.event
            payload: Payload = event.data
            if kind != "message":
                try:
                    payload = wire.decode_sse_payload(kind, event.data)
                except wire.WireError as exc:
                    raise ProtocolError(transport, str(exc)) from exc
            if len(payload) > limit:
                raise ProtocolError(transport, f"a message exceeds max_message_size={limit}")
            if inbound.accept(seq) is GAP:
                raise ProtocolError(transport, f"gap in the event stream at {seq}")
            out.append(payload)
    finally:
        if out:  # one event for the whole chunk: it passes the operators once
            on_next(out[0] if len(out) == 1 else Payloads(out))
