"""Sans-I/O parser and encoder for the ``text/event-stream`` (server-sent events) format.

The decoder follows the WHATWG HTML Living Standard, §9.2.5 "Parsing an event stream" and
§9.2.6 "Interpreting an event stream". It does no I/O: feed it the raw bytes of a response
body in chunks of any size and it returns the events completed by each chunk.

The hot path works on whole decoded chunks with ``str.split``/``str.find`` and keeps an
unfinished line as a list of fragments, so the total cost is linear in the stream length
however the bytes are chunked.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


__all__ = ["SSEDecoder", "ServerSentEvent", "encode_comment", "encode_event"]

_BOM = "\ufeff"
# Longest retry value accepted; int() refuses > 4300 digits by default anyway.
_MAX_RETRY_DIGITS = 4000


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event, as a browser's ``MessageEvent`` would expose it.

    Attributes:
        event: The event type; ``"message"`` unless an ``event`` field set another one.
        data: The data lines joined with LF (the final LF removed).
        id: The decoder's last event ID string at dispatch time (``lastEventId``).
    """

    event: str = "message"
    data: str = ""
    id: str = ""

    def __repr__(self) -> str:
        """Show only the fields that differ from their defaults, to keep logs short."""
        parts = []
        if self.event != "message":
            parts.append(f"event={self.event!r}")
        if self.data:
            parts.append(f"data={self.data!r}")
        if self.id:
            parts.append(f"id={self.id!r}")
        return f"ServerSentEvent({', '.join(parts)})"


# A frozen dataclass's __init__ assigns each field through object.__setattr__, which costs
# about as much as the rest of the per-event parsing. The decoder's hot loop instead fills
# the slots through their member descriptors: same resulting object, about half the cost.
_new_event = object.__new__
_set_event_type = ServerSentEvent.__dict__["event"].__set__
_set_event_data = ServerSentEvent.__dict__["data"].__set__
_set_event_id = ServerSentEvent.__dict__["id"].__set__


class SSEDecoder:
    """Incremental, sans-I/O event-stream parser (WHATWG HTML §9.2.5-§9.2.6).

    Call :meth:`feed` with each chunk of the response body. An event is only dispatched
    when its block is ended by a blank line; there is deliberately no flush method,
    because §9.2.6 discards an unterminated block at end of stream.

    Attributes:
        last_event_id: The spec's "last event ID string": set from the last event ID
            buffer at every blank line and copied into each dispatched event. Send it
            as the ``Last-Event-ID`` header when reconnecting.
        retry: The last valid ``retry`` field value (reconnection time in ms), or
            ``None`` if the stream has not sent one.
    """

    __slots__ = (
        "_data",
        "_decoder",
        "_event_type",
        "_id_buffer",
        "_pending",
        "_skip_lf",
        "_started",
        "last_event_id",
        "retry",
    )

    def __init__(self, *, last_event_id: str = "") -> None:
        """Create a decoder for one stream (one HTTP response).

        Args:
            last_event_id: Initial value of the last event ID string *and* buffer, so a
                decoder for a resumed connection keeps the ID that was sent as
                ``Last-Event-ID`` until the server sends a new one. The spec initialises
                the buffer to "" per stream (§9.2.6); the default keeps that behaviour.
        """
        self.last_event_id: str = last_event_id
        self.retry: int | None = None
        # §9.2.5: the stream is always UTF-8, decoded with replacement of bad sequences.
        # An incremental decoder keeps multi-byte sequences split across chunks intact.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False  # True once the first character (maybe a BOM) was seen.
        self._skip_lf = False  # True if the last character seen was a CR.
        self._pending: list[str] = []  # Fragments of the current, unfinished line.
        self._data: list[str] = []  # Data buffer, kept as lines: "\n".join() at dispatch.
        self._event_type = ""
        self._id_buffer = last_event_id

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Parse the next chunk of the stream and return the events it completes.

        Args:
            chunk: Any slice of the byte stream; chunk boundaries may fall anywhere,
                even inside a multi-byte character or between the CR and LF of a CRLF.

        Returns:
            The events dispatched by blank lines in this chunk, in stream order.
        """
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            # §9.2.5: one leading U+FEFF BOM is ignored; only the very first character.
            if text[0] == _BOM:
                text = text[1:]
                if not text:
                    return []
        if self._skip_lf:
            # §9.2.5: CRLF is one line ending, even if the LF arrives in a later chunk.
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
                if not text:
                    return []
        if "\r" in text:
            # Slow path: a CR ends its line at once (§9.2.5 end-of-line), so normalise CRLF and lone
            # CR to LF. A CR at the very end may be the first half of a split CRLF.
            self._skip_lf = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        pending = self._pending
        if len(lines) == 1:
            # No line terminator in this chunk: just remember the fragment (no rescans).
            pending.append(text)
            return []
        if pending:
            pending.append(lines[0])
            lines[0] = "".join(pending)
            pending.clear()
        tail = lines.pop()
        if tail:
            pending.append(tail)
        return self._process_lines(lines)

    def _process_lines(self, lines: list[str]) -> list[ServerSentEvent]:
        """Interpret complete lines per §9.2.6 and return the dispatched events."""
        events: list[ServerSentEvent] = []
        # Buffers live in locals inside the loop (this is the hot path) and are written
        # back once at the end.
        data = self._data
        event_type = self._event_type
        id_buffer = self._id_buffer
        for line in lines:
            if not line:
                # Blank line: "dispatch the event" (§9.2.6). Step 1: the last event ID
                # string is set from the buffer even if nothing ends up dispatched.
                self.last_event_id = id_buffer
                if data:
                    # The data buffer is kept as lines, so joining with LF equals "append
                    # value + LF per line, then remove the one trailing LF".
                    event = _new_event(ServerSentEvent)
                    _set_event_type(event, event_type or "message")
                    _set_event_data(event, "\n".join(data))
                    _set_event_id(event, id_buffer)
                    events.append(event)
                    data = []
                # Step 2 (empty data buffer) and the final step both reset the type.
                event_type = ""
                continue
            if line.startswith("data:"):
                # Fast path for the most common line; one leading space is removed.
                value = line[5:]
                data.append(value[1:] if value[:1] == " " else value)
                continue
            colon = line.find(":")
            if colon == 0:
                continue  # §9.2.6: a line starting with a colon is a comment.
            if colon < 0:
                # §9.2.6: no colon, the whole line is the field name, the value is "".
                field, value = line, ""
            else:
                field = line[:colon]
                value = line[colon + 1 :]
                if value[:1] == " ":
                    value = value[1:]
            # §9.2.6 "process the field"; any other field name is ignored.
            if field == "data":
                data.append(value)
            elif field == "event":
                event_type = value
            elif field == "id":
                # A value containing U+0000 NULL is ignored entirely (not truncated).
                if "\x00" not in value:
                    id_buffer = value
            elif field == "retry":
                # Only ASCII digits: no sign, no spaces, no other Unicode digits, and not
                # empty. Leading zeros are dropped so that only absurd values hit int()'s
                # digit limit (gh-95778); those are ignored rather than raising.
                if value and value.isascii() and value.isdigit():
                    digits = value.lstrip("0") or "0"
                    if len(digits) <= _MAX_RETRY_DIGITS:
                        self.retry = int(digits)
        self._data = data
        self._event_type = event_type
        self._id_buffer = id_buffer
        return events


def _split_lines(text: str) -> list[str]:
    """Split on CRLF, CR and LF only (not on U+2028, U+0085 etc. like str.splitlines)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def encode_event(
    data: str,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """Encode one event block for the wire, ended by a blank line.

    Multi-line data becomes one ``data:`` line per line (CRLF and CR count as line breaks,
    as the decoder would see them), so the decoded data equals ``data`` with line endings
    normalised to LF.

    Args:
        data: The event payload; may be empty or contain line breaks.
        event: Event type; ``None`` (or ``""``) means the default type ``"message"``.
        id: Event ID to set on the client; ``""`` resets its last event ID.
        retry: Reconnection time in milliseconds, a non-negative integer.

    Returns:
        The UTF-8 bytes of the block.

    Raises:
        ValueError: If ``event`` or ``id`` contains CR or LF (it would split the line),
            ``id`` contains NUL (the client would ignore it, §9.2.6), or ``retry`` is
            negative. A ``UnicodeEncodeError`` if the text holds lone surrogates.
        TypeError: If ``retry`` is not an ``int``.
    """
    parts: list[str] = []
    if event is not None:
        if "\r" in event or "\n" in event:
            raise ValueError(f"event name must not contain CR or LF: {event!r}")
        parts.append(f"event: {event}\n" if event else "event:\n")
    if id is not None:
        if "\r" in id or "\n" in id:
            raise ValueError(f"event id must not contain CR or LF: {id!r}")
        if "\x00" in id:
            raise ValueError(f"event id must not contain NUL: {id!r}")
        parts.append(f"id: {id}\n" if id else "id:\n")
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int):
            raise TypeError(f"retry must be an int, not {type(retry).__name__}")
        if retry < 0:
            raise ValueError(f"retry must be non-negative: {retry}")
        parts.append(f"retry: {retry}\n")
    for line in _split_lines(data):
        parts.append(f"data: {line}\n" if line else "data:\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def encode_comment(text: str = "") -> bytes:
    """Encode a comment block, e.g. a keep-alive ping that clients ignore (§9.2.6).

    Each line of ``text`` becomes a ``: line`` comment; the block ends with a blank line,
    which clients treat as an (empty, undispatched) event boundary.

    Args:
        text: Comment text; may be empty or contain line breaks.

    Returns:
        The UTF-8 bytes of the block, e.g. ``b": ping\\n\\n"``.
    """
    lines = [f": {line}\n" if line else ":\n" for line in _split_lines(text)]
    lines.append("\n")
    return "".join(lines).encode("utf-8")
