"""The hub's numbered events, encoded once for every HTTP transport.

An SSE stream and a long-poll answer carry the same bytes: a ``session``
event that names the session (first on a new link), then one event per
message of the session's replay log, whose id is ``<session>:<seq>`` (plus a
browser session's resume token). Keeping the encoding here means the two
transports cannot drift, and the client decodes both with one
:class:`~rxconn.sse.SSEDecoder` and :mod:`rxconn.aio._hubstream`.
"""

from __future__ import annotations

from collections.abc import Iterable

from .. import wire
from ..sse import encode_event
from ..transport import Payload


__all__ = ["encode_entries", "encode_session"]


def encode_session(info: wire.SessionInfo, cursor: int, token: str | None = None) -> bytes:
    """The ``session`` event: the link continues after hub message ``cursor``."""
    return encode_event(
        wire.encode_session_event(info),
        event=wire.SSE_SESSION_EVENT,
        id=wire.encode_event_id(info.session, cursor, token),
    )


def encode_entries(
    session_id: str, entries: Iterable[tuple[int, Payload]], token: str | None = None
) -> bytes:
    """Replay-log entries ``(seq, payload)`` as data events, in order, in one buffer."""
    parts = []
    for seq, payload in entries:
        event, data = wire.encode_sse_payload(payload)
        parts.append(
            encode_event(
                data,
                event=None if event == "message" else event,
                id=wire.encode_event_id(session_id, seq, token),
            )
        )
    return b"".join(parts)
