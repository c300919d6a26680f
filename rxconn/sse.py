"""Sans-I/O parser and encoder for the ``text/event-stream`` (server-sent events) format.

The decoder follows the WHATWG HTML Living Standard, §9.2.5 "Parsing an event stream" and
§9.2.6 "Interpreting an event stream"
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).
It does no I/O: feed it the raw bytes of a response body in chunks of any size and it
returns the events completed by each chunk.

How it is fast and still exact (issue 18): each chunk is decoded and its line endings are
normalised to LF once. The text is then cut into a *head* (up to the first blank line),
a *middle* of whole blocks and a *tail*. After a blank line the interpretation state is
always the same (empty data and event type buffers, ID buffer = last event ID), so the
middle can be checked as a whole, with a few C-level ``str`` operations, against the
two shapes almost every server sends: ``data: X`` blocks and ``id: N`` + ``data: X``
blocks. If it matches, all its events are built without a Python loop per line or per
event. Otherwise, if the middle starts like one of them, a loop over its blocks turns the
regular ones into events and hands the others to the general line interpreter, which
reads everything else (the head and tail, other shapes, long lines). Every path is
linear in the stream length, however the bytes are chunked, and the near-miss tests in
``tests/test_sse.py`` compare them all with a literal reading of the spec.
"""

from __future__ import annotations

import codecs
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat
from typing import Final


__all__ = ["SSEDataDecoder", "SSEDecoder", "ServerSentEvent", "encode_comment", "encode_event"]

_BOM: Final = "\ufeff"
# Longest retry value accepted; int() refuses > 4300 digits by default anyway.
_MAX_RETRY_DIGITS: Final = 4000
# Separators used by the whole-middle shape checks (see SSEDecoder._middle).
_DATA_BLOCKS: Final = "\n\ndata: "
_DATA_LINE: Final = "\ndata: "
_ID_BLOCKS: Final = "\n\nid: "
_ID_LINE: Final = "\nid: "
_NUL: Final = "\x00"
# str.split() and multi-character searches cost a few tenths of a ns per character, while
# a one-character find() is a memchr() and nearly free. So where lines are long, finding
# line ends one by one is cheaper than any pass over the whole text (see _split_lines_at).
_LONG_LINE: Final = 512
_LONG_BLOCK: Final = 2048


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
# more than the rest of the per-event parsing. The decoder instead creates the objects and
# fills their slots through the member descriptors, in bulk with map() where it can: the
# same resulting objects (equal, hashable, frozen) at about a third of the cost.
_new_event = object.__new__
_set_event_type = ServerSentEvent.__dict__["event"].__set__
_set_event_data = ServerSentEvent.__dict__["data"].__set__
_set_event_id = ServerSentEvent.__dict__["id"].__set__
_sink: deque[object] = deque(maxlen=0)
_consume = _sink.extend  # runs an iterator to its end at C speed, keeping nothing


def _events(count: int, data: list[str], ids: list[str] | None, id_: str) -> list[ServerSentEvent]:
    """Build ``count`` events of type ``message`` in bulk, with no Python loop per event.

    Args:
        count: How many events; ``len(data)``.
        data: Their data strings.
        ids: Their ids, or ``None`` if all of them carry ``id_``.
        id_: The id of every event when ``ids`` is ``None``.
    """
    events: list[ServerSentEvent] = list(map(_new_event, repeat(ServerSentEvent, count)))
    _consume(map(_set_event_type, events, repeat("message", count)))
    _consume(map(_set_event_data, events, data))
    _consume(map(_set_event_id, events, repeat(id_, count) if ids is None else ids))
    return events


def _split_lines_at(text: str, start: int, end: int) -> list[str]:
    """Return ``text[start:end].split("\\n")``, in the cheaper way for the line lengths.

    While the lines seen average at least ``_LONG_LINE`` characters, each is cut out at
    its memchr-found end; once they are shorter, one ``split`` does the rest.
    """
    lines: list[str] = []
    origin = start
    while True:
        nl = text.find("\n", start, end)
        if nl < 0:
            lines.append(text[start:end])
            return lines
        lines.append(text[start:nl])
        start = nl + 1
        if start - origin < len(lines) * _LONG_LINE:
            lines += text[start:end].split("\n")
            return lines


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
        pending: Characters held for the event being built (see :attr:`pending`).
    """

    __slots__ = (
        "_data",
        "_data_len",
        "_decode",
        "_event_type",
        "_id_buffer",
        "_line",
        "_line_len",
        "_skip_lf",
        "_started",
        "_wanted",
        "last_event_id",
        "retry",
        "skipped",
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
        self._decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        self._started = False  # True once the first character (maybe a BOM) was seen.
        self._skip_lf = False  # True if the last character seen was a CR.
        self._line: list[str] = []  # Fragments of the current, unfinished line.
        self._line_len = 0  # Their total length.
        self._data: list[str] = []  # Data buffer, kept as lines: "\n".join() at dispatch.
        self._data_len = 0  # Length of the spec's data buffer: each line plus its LF.
        self._event_type = ""
        self._id_buffer = last_event_id
        self._wanted: frozenset[str] | None = None  # SSEDataDecoder: the types it returns
        self.skipped = 0
        """Events dispatched but not returned (:class:`SSEDataDecoder`: other types)."""

    @property
    def pending(self) -> int:
        """Characters held for the event being built: its data buffer and the unfinished line.

        The data buffer counts as the spec builds it (each ``data`` value plus one LF),
        so with no unfinished line the event's data would be ``pending - 1`` characters
        long if a blank line came now. Comment lines, other fields and dispatched events
        do not count once their line has ended; an unfinished line counts whatever it
        turns out to be, since it is held in memory all the same. A client can compare
        this with its size limit after each :meth:`feed` to bound an event that never
        ends, without counting the server's keep-alive comments. O(1).
        """
        return self._data_len + self._line_len

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Parse the next chunk of the stream and return the events it completes.

        Args:
            chunk: Any slice of the byte stream; chunk boundaries may fall anywhere,
                even inside a multi-byte character or between the CR and LF of a CRLF.

        Returns:
            The events dispatched by blank lines in this chunk, in stream order.
        """
        text = self._decode(chunk)
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
            # A CR ends its line at once (§9.2.5 end-of-line), so normalise CRLF and lone
            # CR to LF. A CR at the very end may be the first half of a split CRLF.
            self._skip_lf = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")

        events: list[ServerSentEvent] = []
        pos = 0
        first: list[str] = []  # the unfinished line, once this chunk completes it
        if self._line:
            nl = text.find("\n")
            if nl < 0:
                # No line end yet: just remember the fragment (no rescans, so linear).
                self._line.append(text)
                self._line_len += len(text)
                return events
            self._line.append(text[:nl])
            first.append("".join(self._line))
            self._line = []
            self._line_len = 0
            pos = nl + 1

        # Head: unless the state is already what it is after a blank line, interpret
        # the lines up to and including the first blank line one by one.
        if first or self._data or self._event_type or self._id_buffer != self.last_event_id:
            if text.startswith("\n", pos):
                end = pos + 1
            else:
                end = text.find("\n\n", pos)
                if end < 0:
                    self._tail(first, text, pos, events)
                    return events
                end += 2
            first += _split_lines_at(text, pos, end - 1)  # ends with "", the blank line
            self._lines(first, events)
            first = []
            pos = end

        # Middle: whole blocks, from the first position after the head up to and
        # including the last blank line of the chunk.
        last = text.rfind("\n\n", pos)
        if last >= 0:
            self._middle(text, pos, last, events)
            pos = last + 2
        if pos < len(text):
            self._tail(first, text, pos, events)
        return events

    def _bulk(
        self, count: int, data: list[str], ids: list[str] | None, id_: str
    ) -> list[ServerSentEvent]:
        """The ``message`` events of a regular run (see :func:`_events`), in bulk."""
        wanted = self._wanted
        if wanted is None:
            return _events(count, data, ids, id_)
        if "message" in wanted:  # SSEDataDecoder returns the data itself
            return data  # type: ignore[return-value]
        self.skipped += count
        return []

    def _tail(self, first: list[str], text: str, pos: int, events: list[ServerSentEvent]) -> None:
        """Interpret the complete lines of ``text[pos:]`` and keep its unfinished line."""
        lines = _split_lines_at(text, pos, len(text))
        rest = lines.pop()
        if rest:
            self._line = [rest]  # the chunk completed any earlier unfinished line
            self._line_len = len(rest)
        if first:
            lines[:0] = first
        if lines:
            self._lines(lines, events)

    def _middle(self, text: str, start: int, last: int, events: list[ServerSentEvent]) -> None:
        """Interpret ``text[start : last + 2]``: whole blocks, the last ended by ``"\\n\\n"``.

        The state at ``start`` is the one after a blank line (empty data and event type
        buffers, ID buffer equal to ``last_event_id``), so each block is interpreted on
        its own. First try the two common shapes on the whole region at once. Each check
        pins down every line of the region (where the line breaks are, which lines are
        blank, what each other line starts with), so that one block with an extra or a
        missing line, another field, or an ignored id cannot slip through.
        """
        if text.find("\n", start, last + 1) - start >= _LONG_BLOCK:
            # Long lines: the whole-region passes below would cost more per character
            # than interpreting the few lines one by one.
            self._lines(_split_lines_at(text, start, last + 1), events)
            return
        if text.startswith("data: ", start):
            # Shape "data: X\n\n" * n. Splitting at block starts gives the n values. If
            # none holds a line break, each block is exactly one data line and a blank
            # line. (One memchr over the joined values is much cheaper than str.count.)
            data = text[start + 6 : last].split(_DATA_BLOCKS)
            if "\n" not in "".join(data):
                events += self._bulk(len(data), data, None, self.last_event_id)
            else:
                self._runs(data, "data: ", events)
        elif text.startswith("id: ", start):
            # Shape "id: I\ndata: X\n\n" * n. Split into lines: 3n - 1 of them, every
            # third one blank, the others alternately id and data lines. Then each
            # block is exactly an id line, a data line and a blank line.
            lines = text[start:last].split("\n")
            count = (len(lines) + 1) // 3
            if len(lines) == 3 * count - 1 and lines[2::3].count("") == count - 1:
                # All id lines start with "id: " (none holds a line break, so each
                # "\nid: " of the joined lines starts one) and hold no NUL (§9.2.6:
                # such an id is ignored, which the general interpreter handles).
                id_lines = "\n".join(lines[0::3])
                if id_lines.count(_ID_LINE) == count - 1 and _NUL not in id_lines:
                    # All data lines start with "data: ": removeprefix() took 6 characters
                    # from each. Their total length follows from the region's length.
                    data_lines = lines[1::3]
                    data = list(map(str.removeprefix, data_lines, repeat("data: ", count)))
                    data_len = last - start - (3 * count - 2) - (len(id_lines) - (count - 1))
                    if sum(map(len, data)) == data_len - 6 * count:
                        ids = id_lines.split(_ID_LINE)
                        ids[0] = ids[0][4:]
                        events += self._bulk(count, data, ids, "")
                        # §9.2.6: each block set the buffer, and its blank line the string.
                        self.last_event_id = self._id_buffer = ids[-1]
                        return
            self._runs(text[start + 4 : last].split(_ID_BLOCKS), "id: ", events)
        else:
            # Some other shape (typed events, comments, multi-line data ...): read it
            # line by line, as a loop over blocks would only add to the cost.
            self._lines(_split_lines_at(text, start, last + 1), events)

    def _runs(self, pieces: list[str], field: str, events: list[ServerSentEvent]) -> None:
        """Interpret a region that is mostly one common shape, block by block.

        ``pieces`` is the region (which starts with ``field`` and a clean state) without
        its final ``"\\n\\n"``, split at every ``"\\n\\n" + field``, so the region is
        ``field + piece + "\\n\\n"`` for each piece in turn. A piece that is one block of
        the common shape becomes an event here; any other piece holds one or more
        complete blocks (e.g. a data block and a comment block, or extra blank lines)
        and goes to the general interpreter. Runs of regular blocks are built in bulk.
        """
        is_data = field == "data: "
        other: list[str] = []  # lines of irregular pieces, not yet interpreted
        data: list[str] = []
        ids: list[str] = []
        last_id = self.last_event_id  # stored back before the general interpreter runs
        for piece in pieces:
            if is_data:
                if "\n" not in piece:
                    if other:
                        last_id = self._interpret_other(other, data, ids, last_id, events)
                    data.append(piece)
                    ids.append(last_id)
                    continue
            elif piece.count("\n") == 1:
                id_value, found, value = piece.partition(_DATA_LINE)
                if found and _NUL not in id_value:
                    if other:
                        self._interpret_other(other, data, ids, last_id, events)
                    last_id = id_value
                    data.append(value)
                    ids.append(last_id)
                    continue
            lines = piece.split("\n")
            lines[0] = field + lines[0]
            other += lines
            other.append("")  # the blank line that ended the piece's last block
        if data:
            events += self._bulk(len(data), data, ids, "")
        self.last_event_id = self._id_buffer = last_id
        if other:
            self._lines(other, events)

    def _interpret_other(
        self,
        other: list[str],
        data: list[str],
        ids: list[str],
        last_id: str,
        events: list[ServerSentEvent],
    ) -> str:
        """Emit the events collected by :meth:`_runs`, then interpret ``other``; clear both.

        Returns:
            The last event ID string afterwards (the lines may have set it).
        """
        if data:
            events += self._bulk(len(data), data, ids, "")
            data.clear()
            ids.clear()
        self.last_event_id = self._id_buffer = last_id
        self._lines(other, events)
        other.clear()
        return self.last_event_id

    def _lines(self, lines: list[str], events: list[ServerSentEvent]) -> None:
        """Interpret complete lines per §9.2.6, appending the dispatched events."""
        # Buffers live in locals inside the loop and are written back once at the end.
        data = self._data
        held = len(data)  # data lines already counted in self._data_len
        event_type = self._event_type
        id_buffer = self._id_buffer
        wanted = self._wanted
        for line in lines:
            if not line:
                # Blank line: "dispatch the event" (§9.2.6). Step 1: the last event ID
                # string is set from the buffer even if nothing ends up dispatched.
                self.last_event_id = id_buffer
                if data and wanted is not None:  # SSEDataDecoder: the data, or nothing
                    if (event_type or "message") in wanted:
                        events.append("\n".join(data))  # type: ignore[arg-type]
                    else:
                        self.skipped += 1
                    data = []
                elif data:
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
                data.append(line[6:] if line[5:6] == " " else line[5:])
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
                if _NUL not in value:
                    id_buffer = value
            elif field == "retry":
                # Only ASCII digits: no sign, no spaces, no other Unicode digits, and not
                # empty. Leading zeros are dropped so that only absurd values hit int()'s
                # digit limit (gh-95778); those are ignored rather than raising.
                if value and value.isascii() and value.isdigit():
                    digits = value.lstrip("0") or "0"
                    if len(digits) <= _MAX_RETRY_DIGITS:
                        self.retry = int(digits)
        # Keep pending O(1) to read: count only the data lines added since the last
        # count (or all of them after a dispatch started a new buffer).
        if data is not self._data:
            self._data = data
            self._data_len = sum(map(len, data)) + len(data)
        elif len(data) > held:
            self._data_len += sum(map(len, data[held:])) + len(data) - held
        self._event_type = event_type
        self._id_buffer = id_buffer


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


class SSEDataDecoder(SSEDecoder):
    """An :class:`SSEDecoder` that returns only the data of the events of ``types``.

    For clients that need nothing but the data (``message`` events, by default):
    regular runs of blocks then cost no object per event, just the strings. The
    stream is interpreted exactly as :class:`SSEDecoder` does (``last_event_id``,
    ``retry`` and ``pending`` are the same after every chunk); events of other
    types are counted in :attr:`skipped`.

    Args:
        types: The event types whose data :meth:`feed` returns.
        last_event_id: As for :class:`SSEDecoder`.
    """

    __slots__ = ()

    def __init__(self, types: Iterable[str] = ("message",), *, last_event_id: str = "") -> None:
        super().__init__(last_event_id=last_event_id)
        self._wanted = frozenset(types)

    def feed(self, chunk: bytes) -> list[str]:  # type: ignore[override]
        """Parse the next chunk; return the data of the events of ``types`` it completes."""
        return super().feed(chunk)  # type: ignore[return-value]
