"""Wire formats of the hub protocol, sans-I/O: pure encode/decode functions.

WebSocket subprotocol ``rxconn.v1`` (negotiated with ``Sec-WebSocket-Protocol``):

* binary frames are data messages, unchanged;
* text frames start with a one-character tag:
  ``m<text>`` a text data message; ``a<seq>`` a cumulative acknowledgement;
  ``h<json>`` hello (client → hub: ``{"session": id | null, "last": n}``);
  ``w<json>`` welcome (hub → client: ``{"session": id, "last": m, "resumed": bool}``);
  ``x<json>`` refusal (hub → client: ``{"status": 410, "reason": "..."}``, then close);
  ``q`` quit (client → hub: end the session now).

Data messages are numbered implicitly per link: after the welcome the hub
sends message ``n + 1``, ``n + 2``, … (``n``: the hello's ``last``) and the
client sends ``m + 1``, ``m + 2``, … (``m``: the welcome's ``last``).

HTTP: the SSE stream's event ids are ``"<session>:<seq>"``; its first event is
``event: session`` with JSON ``{"session", "post", "last", "resumed"}``; text
data is a ``message`` event (or ``rxconn.text`` with JSON data when it holds a
CR, which SSE cannot carry), binary data a ``rxconn.binary`` event in base64.
POST bodies are JSON ``{"session", "seq", "messages": [{"t": text} | {"b":
base64}], "ack"?, "close"?}`` answered with ``{"last": m}``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._types import Payload


__all__ = [
    "SUBPROTOCOL",
    "Batch",
    "Hello",
    "Refusal",
    "Welcome",
    "WireError",
    "decode_batch",
    "decode_control",
    "decode_event_id",
    "decode_sse_payload",
    "encode_ack",
    "encode_batch",
    "encode_event_id",
    "encode_hello",
    "encode_refusal",
    "encode_sse_payload",
    "encode_text",
    "encode_welcome",
]

SUBPROTOCOL: Final = "rxconn.v1"

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
    """Client → hub, first frame of a session link: which session, what it already has."""

    session: str | None
    last: int


@dataclass(frozen=True, slots=True)
class Welcome:
    """Hub → client: the session the link serves and the last client message the hub has."""

    session: str
    last: int
    resumed: bool


@dataclass(frozen=True, slots=True)
class Refusal:
    """Hub → client: the hub refuses the link (410: unknown session)."""

    status: int
    reason: str


def encode_text(text: str) -> str:
    """A text data message as an ``rxconn.v1`` frame."""
    return TAG_MESSAGE + text


def encode_ack(seq: int) -> str:
    """A cumulative acknowledgement frame."""
    return TAG_ACK + str(seq)


def encode_hello(hello: Hello) -> str:
    return TAG_HELLO + json.dumps({"session": hello.session, "last": hello.last})


def encode_welcome(welcome: Welcome) -> str:
    return TAG_WELCOME + json.dumps(
        {"session": welcome.session, "last": welcome.last, "resumed": welcome.resumed}
    )


def encode_refusal(refusal: Refusal) -> str:
    return TAG_REFUSAL + json.dumps({"status": refusal.status, "reason": refusal.reason})


def _count(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise WireError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise WireError(f"{what} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise WireError(f"{what} must be a JSON object")
    return value


def decode_control(frame: str) -> Hello | Welcome | Refusal | int | None:
    """Decode a non-data text frame: a hello, welcome, refusal, an ack (int) or quit (None).

    Raises:
        WireError: for anything else (data frames, tagged ``m``, are not control).
    """
    tag, body = frame[:1], frame[1:]
    if tag == TAG_ACK:
        if not body.isascii() or not body.isdigit():
            raise WireError("malformed ack frame")
        return int(body)
    if tag == QUIT and not body:
        return None
    if tag == TAG_HELLO:
        obj = _object(body, "hello")
        session = obj.get("session")
        if session is not None and (type(session) is not str or not session):
            raise WireError("hello.session must be a non-empty string or null")
        return Hello(session, _count(obj.get("last", 0), "hello.last"))
    if tag == TAG_WELCOME:
        obj = _object(body, "welcome")
        session = obj.get("session")
        if type(session) is not str or not session:
            raise WireError("welcome.session must be a non-empty string")
        return Welcome(session, _count(obj.get("last"), "welcome.last"), bool(obj.get("resumed")))
    if tag == TAG_REFUSAL:
        obj = _object(body, "refusal")
        status = obj.get("status")
        if type(status) is not int:
            raise WireError("refusal.status must be an integer")
        return Refusal(status, str(obj.get("reason", "")))
    raise WireError(f"unknown frame tag {tag!r}")


# ---------------------------------------------------------------- HTTP link


def encode_event_id(session: str, seq: int) -> str:
    """The SSE event id of message ``seq`` of ``session`` (what ``Last-Event-ID`` echoes)."""
    return f"{session}:{seq}"


def decode_event_id(event_id: str) -> tuple[str, int] | None:
    """Split an SSE event id into session and seq; None if it is not one of ours."""
    session, sep, seq = event_id.rpartition(":")
    if not sep or not session or not seq.isascii() or not seq.isdigit():
        return None
    return session, int(seq)


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
        try:
            text = json.loads(data)
        except ValueError as exc:
            raise WireError("malformed JSON in a text event") from exc
        if type(text) is not str:
            raise WireError("a text event must hold a JSON string")
        return text
    return data


@dataclass(frozen=True, slots=True)
class Batch:
    """A POSTed batch: messages numbered from ``seq`` on, plus an optional ack and quit."""

    session: str
    seq: int
    messages: tuple[Payload, ...]
    ack: int | None = None
    close: bool = False


def encode_batch(batch: Batch) -> bytes:
    """Encode a batch as a JSON POST body."""
    items: list[dict[str, str]] = []
    for payload in batch.messages:
        if type(payload) is bytes:
            items.append({"b": base64.b64encode(payload).decode("ascii")})
        else:
            items.append({"t": str(payload)})
    body: dict[str, Any] = {"session": batch.session, "seq": batch.seq, "messages": items}
    if batch.ack is not None:
        body["ack"] = batch.ack
    if batch.close:
        body["close"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def decode_batch(body: bytes) -> Batch:
    """Decode and validate a POST body.

    Raises:
        WireError: with a reason fit for a 400 answer.
    """
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError("body is not valid JSON") from exc
    if not isinstance(obj, dict):
        raise WireError("body must be a JSON object")
    session = obj.get("session")
    if type(session) is not str or not session:
        raise WireError("'session' must be a non-empty string")
    seq = _count(obj.get("seq", 1), "'seq'")
    raw = obj.get("messages", [])
    if not isinstance(raw, list):
        raise WireError("'messages' must be a list")
    messages: list[Payload] = []
    for item in raw:
        if not isinstance(item, dict) or len(item) != 1:
            raise WireError('each message must be {"t": text} or {"b": base64}')
        if "t" in item and type(item["t"]) is str:
            messages.append(item["t"])
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
    return Batch(session, seq, tuple(messages), ack, bool(obj.get("close", False)))


def batch_of(session: str, seq: int, payloads: Sequence[Payload], ack: int | None) -> Batch:
    """Convenience constructor used by the HTTP link."""
    return Batch(session, seq, tuple(payloads), ack)
