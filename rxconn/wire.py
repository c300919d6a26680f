"""Wire formats of the hub protocol, sans-I/O: pure encode/decode functions.

WebSocket subprotocol ``rxconn.v1`` (negotiated with ``Sec-WebSocket-Protocol``):

* binary frames are data messages, unchanged;
* text frames start with a one-character tag:
  ``m<text>`` a text data message; ``a<seq>`` a cumulative acknowledgement;
  ``h<json>`` hello (client → hub: ``{"session": id | null, "key": secret, "last": n}``);
  ``w<json>`` welcome (hub → client: ``{"session": id, "last": m, "resumed": bool}``,
  plus ``"key"``, the session's secret, when the session is new);
  ``x<json>`` refusal (hub → client: ``{"status": 410, "reason": "..."}``, then close);
  ``q`` quit (client → hub: end the session now).

Data messages are numbered implicitly per link: after the welcome the hub
sends message ``n + 1``, ``n + 2``, … (``n``: the hello's ``last``) and the
client sends ``m + 1``, ``m + 2``, … (``m``: the welcome's ``last``).

HTTP: the SSE stream's event ids are ``"<session>:<seq>"`` (a browser
``EventSource`` session's ids add its resume token: ``"<session>:<seq>:<token>"``);
its first event is ``event: session`` with JSON ``{"session", "post", "last",
"resumed"}`` plus ``"key"`` for a new session; text data is a ``message`` event
(or ``rxconn.text`` with JSON data when it holds a CR, which SSE cannot carry),
binary data a ``rxconn.binary`` event in base64. POST bodies are JSON
``{"session", "key", "seq", "messages": [{"t": text} | {"b": base64}], "ack"?,
"close"?}`` answered with ``{"last": m}``; a resuming GET presents the key in
the ``X-Rxconn-Key`` header.

The session id is public (logs, apps, event ids); the key is the session's
secret, known only to the hub and the client, and required to act as the
session (resume, POST, acknowledge, end). Numbers on the wire have at most
:data:`MAX_DIGITS` digits, and JSON is bounded in depth by the parser: crafted
input is a :class:`WireError`, never an ``OverflowError`` or ``RecursionError``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ._types import Payload


__all__ = [
    "HUB_HEADER",
    "HUB_VERSION",
    "KEY_HEADER",
    "PROBE_HEADER",
    "MAX_DIGITS",
    "SESSION_GONE_CODE",
    "SUBPROTOCOL",
    "Batch",
    "BatchTooLarge",
    "EventId",
    "Hello",
    "Refusal",
    "SessionInfo",
    "Welcome",
    "WireError",
    "decode_number",
    "decode_session_event",
    "decode_batch",
    "decode_control",
    "decode_event_id",
    "decode_sse_payload",
    "encode_ack",
    "encode_batch",
    "encode_event_id",
    "encode_hello",
    "encode_refusal",
    "encode_session_event",
    "encode_sse_payload",
    "encode_text",
    "is_text_data",
    "decode_text",
    "encode_welcome",
    "event_numbers",
]

SUBPROTOCOL: Final = "rxconn.v1"
SESSION_GONE_CODE: Final = 4410
"""WebSocket close code after a 410 refusal (the hub does not know the session)."""
HUB_HEADER: Final = "X-Rxconn"
"""Request header ``X-Rxconn: v1`` (client: "I speak the session protocol") and the same
response header (hub: "wait for my session event")."""
HUB_VERSION: Final = "v1"
PROBE_HEADER: Final = "X-Rxconn-Probe"
"""Request header of an upgrade probe's ``GET /events``: the hub answers with one comment
and makes no session (the probe only proves that bytes stream through)."""
KEY_HEADER: Final = "X-Rxconn-Key"
"""Request header carrying the session key on a resuming ``GET /events``."""
MAX_DIGITS: Final = 18
"""Longest decimal number accepted on the wire (sequence numbers, acks): below 10**18."""

TAG_MESSAGE: Final = "m"
TAG_ACK: Final = "a"
TAG_HELLO: Final = "h"
TAG_WELCOME: Final = "w"
TAG_REFUSAL: Final = "x"
QUIT: Final = "q"

SSE_SESSION_EVENT: Final = "session"
SSE_TEXT_EVENT: Final = "rxconn.text"
SSE_BINARY_EVENT: Final = "rxconn.binary"


class WireError(ValueError):
    """Input that does not follow the wire format (the adapters turn it into ProtocolError)."""


@dataclass(frozen=True, slots=True)
class Hello:
    """Client → hub, first frame of a session link: which session, its key, what it has."""

    session: str | None
    last: int
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Welcome:
    """Hub → client: the session the link serves and the last client message the hub has.

    ``key`` (the session's secret) is sent only when the session is new.
    """

    session: str
    last: int
    resumed: bool
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Hub → client: the hub refuses the link (410: unknown session)."""

    status: int
    reason: str


def encode_text(text: str) -> str:
    """A text data message as an ``rxconn.v1`` frame."""
    return TAG_MESSAGE + text


def is_text_data(frame: str) -> bool:
    """True for an ``rxconn.v1`` text frame that carries data (``m<text>``), not control."""
    return frame[:1] == TAG_MESSAGE


def decode_text(frame: str) -> str:
    """The text of an ``rxconn.v1`` data frame (see :func:`is_text_data`)."""
    return frame[1:]


def encode_ack(seq: int) -> str:
    """A cumulative acknowledgement frame."""
    return TAG_ACK + str(seq)


def encode_hello(hello: Hello) -> str:
    body: dict[str, Any] = {"session": hello.session, "last": hello.last}
    if hello.key is not None:
        body["key"] = hello.key
    return TAG_HELLO + json.dumps(body)


def encode_welcome(welcome: Welcome) -> str:
    body: dict[str, Any] = {
        "session": welcome.session,
        "last": welcome.last,
        "resumed": welcome.resumed,
    }
    if welcome.key is not None:
        body["key"] = welcome.key
    return TAG_WELCOME + json.dumps(body)


def encode_refusal(refusal: Refusal) -> str:
    return TAG_REFUSAL + json.dumps({"status": refusal.status, "reason": refusal.reason})


_LIMIT: Final = 10**MAX_DIGITS


def decode_number(text: str, what: str) -> int:
    """A non-negative decimal number of at most :data:`MAX_DIGITS` ASCII digits.

    Raises:
        WireError: for anything else (a 5,000-digit number is not "big", it is malformed).
    """
    if not text or len(text) > MAX_DIGITS or not text.isascii() or not text.isdigit():
        raise WireError(f"{what} must be a number of 1 to {MAX_DIGITS} digits")
    return int(text)


def _count(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value < _LIMIT:
        raise WireError(f"{what} must be a non-negative integer below 10**{MAX_DIGITS}")
    return value


def _loads(text: str | bytes, what: str) -> Any:
    """``json.loads`` whose every failure (deep nesting included) is a WireError."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise WireError(f"{what} is not valid JSON") from exc


def _object(text: str | bytes, what: str) -> dict[str, Any]:
    value = _loads(text, what)
    if not isinstance(value, dict):
        raise WireError(f"{what} must be a JSON object")
    return value


def _text(value: str, what: str) -> str:
    """``value`` if it can be sent on (encoded as UTF-8): JSON can smuggle lone surrogates."""
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            raise WireError(f"{what} is not valid Unicode (lone surrogate)") from exc
    return value


def _optional_key(obj: dict[str, Any], what: str) -> str | None:
    key = obj.get("key")
    if key is not None and (type(key) is not str or not key):
        raise WireError(f"{what}.key must be a non-empty string")
    return key


def decode_control(frame: str) -> Hello | Welcome | Refusal | int | None:
    """Decode a non-data text frame: a hello, welcome, refusal, an ack (int) or quit (None).

    Raises:
        WireError: for anything else (data frames, tagged ``m``, are not control).
    """
    tag, body = frame[:1], frame[1:]
    if tag == TAG_ACK:
        return decode_number(body, "ack")
    if tag == QUIT and not body:
        return None
    if tag == TAG_HELLO:
        obj = _object(body, "hello")
        session = obj.get("session")
        if session is not None and (type(session) is not str or not session):
            raise WireError("hello.session must be a non-empty string or null")
        key = _optional_key(obj, "hello")
        return Hello(session, _count(obj.get("last", 0), "hello.last"), key)
    if tag == TAG_WELCOME:
        obj = _object(body, "welcome")
        session = obj.get("session")
        if type(session) is not str or not session:
            raise WireError("welcome.session must be a non-empty string")
        resumed = obj.get("resumed", False)
        if type(resumed) is not bool:
            raise WireError("welcome.resumed must be a boolean")
        key = _optional_key(obj, "welcome")
        if not resumed and key is None:
            raise WireError("a welcome to a new session must carry its key")
        return Welcome(session, _count(obj.get("last"), "welcome.last"), resumed, key)
    if tag == TAG_REFUSAL:
        obj = _object(body, "refusal")
        status = obj.get("status")
        if type(status) is not int:
            raise WireError("refusal.status must be an integer")
        return Refusal(status, str(obj.get("reason", "")))
    raise WireError(f"unknown frame tag {tag!r}")


# ---------------------------------------------------------------- HTTP link


@dataclass(frozen=True, slots=True)
class EventId:
    """A decoded SSE event id: session, sequence number, and a browser session's resume token."""

    session: str
    seq: int
    token: str | None = None


def encode_event_id(session: str, seq: int, token: str | None = None) -> str:
    """The SSE event id of message ``seq`` of ``session`` (what ``Last-Event-ID`` echoes).

    ``token`` is the resume token of a browser ``EventSource`` session, which
    can present nothing but ``Last-Event-ID`` when it reconnects.
    """
    if token is None:
        return f"{session}:{seq}"
    return f"{session}:{seq}:{token}"


def decode_event_id(event_id: str) -> EventId | None:
    """Decode an SSE event id; None if it is not one of ours (or carries an absurd number)."""
    parts = event_id.split(":")
    if not 2 <= len(parts) <= 3 or not parts[0] or (len(parts) == 3 and not parts[2]):
        return None
    try:
        seq = decode_number(parts[1], "event id")
    except WireError:
        return None
    return EventId(parts[0], seq, parts[2] if len(parts) == 3 else None)


def event_numbers(session: str) -> Callable[[str], int | None]:
    """A fast reader of ``session``'s event ids: the seq of ``"<session>:<seq>"``, else None.

    The client's hot path: it knows which session its stream belongs to, so it
    only checks the prefix and the digits (:func:`decode_event_id` in full is
    for the hub, which must find the session first).
    """
    prefix = session + ":"
    cut = len(prefix)

    def number(event_id: str) -> int | None:
        digits = event_id[cut:]
        if (
            not event_id.startswith(prefix)
            or not digits.isdigit()
            or not digits.isascii()
            or len(digits) > MAX_DIGITS
        ):
            return None
        return int(digits)

    return number


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """The data of the SSE stream's first event: which session, where to POST, what the hub has.

    ``key`` (the session's secret) is present only when the session is new.
    """

    session: str
    post: str
    last: int
    resumed: bool
    key: str | None = None


def encode_session_event(info: SessionInfo) -> str:
    """The JSON data of the ``session`` event."""
    body: dict[str, Any] = {
        "session": info.session,
        "post": info.post,
        "last": info.last,
        "resumed": info.resumed,
    }
    if info.key is not None:
        body["key"] = info.key
    return json.dumps(body)


def decode_session_event(data: str) -> SessionInfo:
    """Inverse of :func:`encode_session_event`.

    Raises:
        WireError: for malformed data.
    """
    obj = _object(data, "session event")
    session, post = obj.get("session"), obj.get("post")
    if type(session) is not str or not session or type(post) is not str or not post:
        raise WireError("session event needs non-empty 'session' and 'post' strings")
    resumed = obj.get("resumed", False)
    if type(resumed) is not bool:
        raise WireError("session event 'resumed' must be a boolean")
    key = _optional_key(obj, "session event")
    if not resumed and key is None:
        raise WireError("a new session's event must carry its key")
    return SessionInfo(session, post, _count(obj.get("last"), "session event 'last'"), resumed, key)


def encode_sse_payload(payload: Payload) -> tuple[str, str]:
    """Map a payload to ``(event type, data)`` for an SSE stream, losslessly."""
    if type(payload) is bytes:
        return SSE_BINARY_EVENT, base64.b64encode(payload).decode("ascii")
    text = str(payload)
    if "\r" in text:  # SSE turns CR into line breaks: carry it as JSON instead
        return SSE_TEXT_EVENT, json.dumps(text)
    return "message", text


def decode_sse_payload(event: str, data: str) -> Payload:
    """Inverse of :func:`encode_sse_payload`.

    Raises:
        WireError: for a malformed binary or JSON text event.
    """
    if event == SSE_BINARY_EVENT:
        try:
            return base64.b64decode(data.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise WireError("malformed base64 in a binary event") from exc
    if event == SSE_TEXT_EVENT:
        text = _loads(data, "a text event")
        if type(text) is not str:
            raise WireError("a text event must hold a JSON string")
        return _text(text, "a text event")
    return data


@dataclass(frozen=True, slots=True)
class Batch:
    """A POSTed batch: messages numbered from ``seq`` on, plus an optional ack and quit.

    ``key`` is the session's secret: without it the batch is not the session's.
    """

    session: str
    seq: int
    messages: tuple[Payload, ...]
    ack: int | None = None
    close: bool = False
    key: str = ""


def encode_batch(batch: Batch) -> bytes:
    """Encode a batch as a JSON POST body."""
    items: list[dict[str, str]] = []
    for payload in batch.messages:
        if type(payload) is bytes:
            items.append({"b": base64.b64encode(payload).decode("ascii")})
        else:
            items.append({"t": str(payload)})
    body: dict[str, Any] = {"session": batch.session, "seq": batch.seq, "messages": items}
    if batch.key:
        body["key"] = batch.key
    if batch.ack is not None:
        body["ack"] = batch.ack
    if batch.close:
        body["close"] = True
    return json.dumps(body, separators=(",", ":")).encode()


class BatchTooLarge(WireError):
    """A POST body holding more messages (or JSON elements) than the receiver accepts (413)."""


def _too_many_elements(body: bytes, limit: int) -> bool:
    """True if ``body`` has more than ``limit`` JSON elements (``,``, ``[``, ``{`` outside strings).

    Decoding cost is dominated by the number of elements, not by bytes: 16 MiB
    of ``[],[],…`` takes ``json.loads`` 1.6 s, 16 MiB of text 0.05 s. Counting
    first with C-level byte operations (at most about 0.1 s for 16 MiB) keeps a
    crafted body from holding the event loop.
    """
    quick = body.count(b",") + body.count(b"[") + body.count(b"{")
    if quick <= limit:
        return False
    # Drop escaped backslashes, then escaped quotes (left to right, as JSON reads
    # escapes): every quote left delimits a string, so the even-numbered pieces
    # of a split on quotes are exactly the text outside strings.
    cleaned = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    if cleaned.count(b'"') > 2 * limit:
        return True
    outside = b"".join(cleaned.split(b'"')[0::2])
    return outside.count(b",") + outside.count(b"[") + outside.count(b"{") > limit


def decode_batch(body: bytes, *, max_messages: int | None = None) -> Batch:
    """Decode and validate a POST body.

    Args:
        body: The raw body.
        max_messages: Refuse (``BatchTooLarge``) a batch of more messages, before
            the body is even parsed when its element count already says so.

    Raises:
        BatchTooLarge: past ``max_messages`` (a 413 answer).
        WireError: with a reason fit for a 400 answer.
    """
    if max_messages is not None and _too_many_elements(body, 3 * max_messages + 64):
        raise BatchTooLarge(
            f"a batch may hold at most {max_messages} messages "
            f"(this body has more JSON elements than that many messages can)"
        )
    obj = _object(body, "body")
    session = obj.get("session")
    if type(session) is not str or not session:
        raise WireError("'session' must be a non-empty string")
    key = obj.get("key", "")
    if type(key) is not str:
        raise WireError("'key' must be a string")
    seq = _count(obj.get("seq", 1), "'seq'")
    raw = obj.get("messages", [])
    if not isinstance(raw, list):
        raise WireError("'messages' must be a list")
    if max_messages is not None and len(raw) > max_messages:
        raise BatchTooLarge(f"a batch may hold at most {max_messages} messages")
    messages: list[Payload] = []
    for item in raw:
        if not isinstance(item, dict) or len(item) != 1:
            raise WireError('each message must be {"t": text} or {"b": base64}')
        if "t" in item and type(item["t"]) is str:
            messages.append(_text(item["t"], "a text message"))
        elif "b" in item and type(item["b"]) is str:
            try:
                messages.append(base64.b64decode(item["b"].encode("ascii"), validate=True))
            except (binascii.Error, UnicodeEncodeError) as exc:
                raise WireError("malformed base64 in a binary message") from exc
        else:
            raise WireError('each message must be {"t": text} or {"b": base64}')
    if messages and seq < 1:
        raise WireError("'seq' must be >= 1")
    ack = obj.get("ack")
    if ack is not None:
        ack = _count(ack, "'ack'")
    close = obj.get("close", False)
    if type(close) is not bool:
        raise WireError("'close' must be a boolean")
    return Batch(session, seq, tuple(messages), ack, close, key)
