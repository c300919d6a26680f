"""Tests for rxconn.sse: the WHATWG event-stream decoder (HTML §9.2.5-§9.2.6) and encoder."""

from __future__ import annotations

import codecs
import dataclasses
import gc
import re
import time
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rxconn.sse import (
    ServerSentEvent,
    SSEDataDecoder,
    SSEDecoder,
    encode_comment,
    encode_event,
)


E = ServerSentEvent
BOM = "\ufeff".encode()


class Run(NamedTuple):
    """What a decoder produced for a whole stream: events plus final state."""

    events: list[ServerSentEvent]
    last_event_id: str
    retry: int | None


def feed_chunks(chunks: list[bytes]) -> Run:
    """Feed the chunks to a fresh decoder, collecting every event and the end state."""
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return Run(events, decoder.last_event_id, decoder.retry)


def reference_parse(stream: bytes) -> Run:
    """A slow, literal, character-by-character reading of the spec, used as an oracle."""
    text = stream.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\r":
            lines.append("".join(current))
            current = []
            if i + 1 < len(text) and text[i + 1] == "\n":
                i += 1
        elif char == "\n":
            lines.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    # Whatever is left in `current` is an unterminated line: it is never processed.
    data_buffer = event_type_buffer = id_buffer = last_event_id = ""
    retry: int | None = None
    events: list[ServerSentEvent] = []
    for line in lines:
        if line == "":
            last_event_id = id_buffer
            if data_buffer == "":
                event_type_buffer = ""
                continue
            if data_buffer.endswith("\n"):
                data_buffer = data_buffer[:-1]
            events.append(E(event_type_buffer or "message", data_buffer, last_event_id))
            data_buffer = event_type_buffer = ""
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = line, ""
        if name == "event":
            event_type_buffer = value
        elif name == "data":
            data_buffer += value + "\n"
        elif name == "id":
            if "\x00" not in value:
                id_buffer = value
        elif name == "retry":
            if re.fullmatch(r"[0-9]+", value):
                retry = int(value)
    return Run(events, last_event_id, retry)


class Case(NamedTuple):
    """One stream with the events and final decoder state it must produce."""

    name: str
    stream: bytes
    events: list[ServerSentEvent]
    last_event_id: str = ""
    retry: int | None = None


CASES = [
    # --- Examples from the WHATWG spec (§9.2.1 introduction and §9.2.6) ---
    Case(
        "spec_intro_three_messages",
        b"data: This is the first message.\n\n"
        b"data: This is the second message, it\ndata: has two lines.\n\n"
        b"data: This is the third message.\n\n",
        [
            E(data="This is the first message."),
            E(data="This is the second message, it\nhas two lines."),
            E(data="This is the third message."),
        ],
    ),
    Case(
        "spec_stock_typed_events",
        b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n",
        [E("add", "73857293"), E("remove", "2153"), E("add", "113411")],
    ),
    Case(
        "spec_yhoo_multiline",
        b"data: YHOO\ndata: +2\ndata: 10\n\n",
        [E(data="YHOO\n+2\n10")],
    ),
    Case(
        "spec_first_second_third_with_ids",
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
        b"data:  third event\n\n",
        [E(data="first event", id="1"), E(data="second event"), E(data=" third event")],
    ),
    Case(
        "spec_blank_data_blocks",
        b"data\n\ndata\ndata\n\ndata:",
        [E(data=""), E(data="\n")],
    ),
    Case("spec_space_after_colon", b"data:test\n\ndata: test\n\n", [E(data="test")] * 2),
    # --- Byte order mark (§9.2.5) ---
    Case("bom_stripped", BOM + b"data: a\n\n", [E(data="a")]),
    Case("second_bom_not_stripped", BOM + BOM + b"data: a\n\ndata: b\n\n", [E(data="b")]),
    Case("bom_in_value_kept", BOM + b"data: " + BOM + b"a\n\n", [E(data="\ufeffa")]),
    Case("bom_after_start_not_stripped", b"data: a\n\n" + BOM + b"data: b\n\n", [E(data="a")]),
    Case("bom_only_stream", BOM, []),
    # --- Line endings (§9.2.5 end-of-line) ---
    Case("lf_endings", b"data: a\ndata: b\n\n", [E(data="a\nb")]),
    Case("cr_endings", b"data: a\rdata: b\r\r", [E(data="a\nb")]),
    Case("crlf_endings", b"data: a\r\ndata: b\r\n\r\n", [E(data="a\nb")]),
    Case(
        "mixed_endings",
        b"data: a\r\n\rdata: b\n\r\ndata: c\r\r\ndata: d\n\r",
        [E(data="a"), E(data="b"), E(data="c"), E(data="d")],
    ),
    Case("lf_cr_is_two_line_endings", b"data: a\n\rdata: b\n\n", [E(data="a"), E(data="b")]),
    # --- Comments and field syntax (§9.2.6) ---
    Case("comments_ignored", b": hello\ndata: a\n:x:y\n:\n\n: only\n\n", [E(data="a")]),
    Case(
        "field_without_colon",
        b"data\n\nevent\ndata: x\n\nid: 3\ndata: y\n\nid\ndata: z\n\n",
        [E(data=""), E(data="x"), E(data="y", id="3"), E(data="z")],
    ),
    Case(
        "one_leading_space_only",
        b"data:  two\n\ndata:\ttab\n\nevent:  sp\ndata: a \n\n",
        [E(data=" two"), E(data="\ttab"), E(" sp", "a ")],
    ),
    Case("colons_in_value_kept", b"data: a:b: c\n\n", [E(data="a:b: c")]),
    Case(
        "unknown_and_miscased_fields_ignored",
        b"foo: bar\nDATA: x\nData: y\ndata : w\ndata: z\n\n",
        [E(data="z")],
    ),
    # --- Dispatch (§9.2.6 "dispatch the event") ---
    Case(
        "event_type_reset_after_dispatch",
        b"event: foo\ndata: 1\n\ndata: 2\n\n",
        [E("foo", "1"), E(data="2")],
    ),
    Case(
        "event_type_reset_by_block_without_data",
        b"event: foo\n\ndata: 2\n\n",
        [E(data="2")],
    ),
    Case("empty_event_type_is_message", b"event:\ndata: x\n\n", [E(data="x")]),
    Case("block_without_data_sets_last_event_id", b"id: 7\n\n", [], last_event_id="7"),
    Case(
        "id_only_block_applies_to_later_events",
        b"data: a\n\nid: 7\n\ndata: b\n\n",
        [E(data="a"), E(data="b", id="7")],
        last_event_id="7",
    ),
    Case(
        "id_persists_between_events",
        b"id: 1\ndata: a\n\ndata: b\n\n",
        [E(data="a", id="1"), E(data="b", id="1")],
        last_event_id="1",
    ),
    Case(
        "id_without_blank_line_not_yet_applied",
        b"data: a\n\nid: 5\n",
        [E(data="a")],
    ),
    Case(
        "empty_data_dispatches_empty_string",
        b"data:\n\ndata:\ndata:\n\n",
        [E(data=""), E(data="\n")],
    ),
    Case(
        "id_with_null_ignored",
        b"id: 1\n\nid: a\x00b\ndata: x\n\n",
        [E(data="x", id="1")],
        last_event_id="1",
    ),
    Case(
        "id_with_other_controls_kept",
        b"id: a\x01b\ndata: x\n\n",
        [E("message", "x", "a\x01b")],
        last_event_id="a\x01b",
    ),
    Case(
        "retry_digits_only",
        "retry: 1000\nretry: 10a\nretry:\nretry:  5\nretry: -1\nretry: +5\nretry: 1.5\n"
        "retry: \u0663\nretry\nretry: 5 \n\n".encode(),
        [],
        retry=1000,
    ),
    Case("retry_zero_and_leading_zeros", b"retry: 0\nretry: 007\n", [], retry=7),
    Case("retry_applies_without_blank_line", b"data: a\nretry: 5\n", [], retry=5),
    # --- Decoding (§9.2.5: UTF-8 decode with replacement) ---
    Case(
        "invalid_utf8_replaced",
        b"data: a\xffb\xc3\ndata: \xed\xa0\x80|\xf0\x9f\x98A|\xc0\xaf\n\n",
        [E(data="a\ufffdb\ufffd\n\ufffd\ufffd\ufffd|\ufffdA|\ufffd\ufffd")],
    ),
    Case(
        "multibyte_characters",
        "event: \u00e9v\u00e9nement\ndata: \u00e9\u20ac\U0001f600\n\n".encode(),
        [E("\u00e9v\u00e9nement", "\u00e9\u20ac\U0001f600")],
    ),
    Case(
        "unicode_line_separators_are_not_line_breaks",
        "data: a\u2028b\u2029c\u0085d\x0be\x0cf\x1cg\x1dh\x1ei\n\n".encode(),
        [E(data="a\u2028b\u2029c\u0085d\x0be\x0cf\x1cg\x1dh\x1ei")],
    ),
    Case("nul_in_data_kept", b"data: a\x00b\n\n", [E(data="a\x00b")]),
    # --- End of stream ---
    Case(
        "unterminated_trailing_event_not_dispatched",
        b"data: a\n\ndata: b\n",
        [E(data="a")],
    ),
    Case("unterminated_trailing_line_not_processed", b"data: a\n\nid: 9", [E(data="a")]),
    Case("empty_stream", b"", []),
]


def _case_id(case: Case) -> str:
    return case.name


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_case_whole_stream(case: Case) -> None:
    """Each case fed as one chunk yields its expected events, last_event_id and retry."""
    assert feed_chunks([case.stream]) == Run(case.events, case.last_event_id, case.retry)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_case_matches_reference(case: Case) -> None:
    """Each case's expectation agrees with the literal reference reading of the spec."""
    assert reference_parse(case.stream) == Run(case.events, case.last_event_id, case.retry)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_case_split_at_every_byte(case: Case) -> None:
    """Splitting each case into two chunks at any byte position changes nothing."""
    expected = Run(case.events, case.last_event_id, case.retry)
    stream = case.stream
    for cut in range(len(stream) + 1):
        assert feed_chunks([stream[:cut], stream[cut:]]) == expected, cut


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_case_one_byte_at_a_time(case: Case) -> None:
    """Feeding each case one byte per chunk changes nothing."""
    stream = case.stream
    chunks = [stream[i : i + 1] for i in range(len(stream))]
    assert feed_chunks(chunks) == Run(case.events, case.last_event_id, case.retry)


# --- Targeted behaviour tests ---


def test_events_returned_by_the_chunk_that_completes_them() -> None:
    """feed() returns an event only from the call that delivers its blank line."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\ndata: b\n") == [E(data="a")]
    assert decoder.feed(b"\n\n") == [E(data="b")]
    assert decoder.feed(b"\n") == []


def test_bom_split_across_chunks_stripped() -> None:
    """A BOM whose three bytes arrive in separate chunks is still stripped."""
    assert feed_chunks([b"\xef", b"\xbb", b"\xbfdata: a\n\n"]).events == [E(data="a")]


def test_crlf_split_across_chunks_is_one_line_ending() -> None:
    """A CR at the end of one chunk and an LF at the start of the next are one line end."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []  # the LF of the CRLF, not a blank line
    assert decoder.feed(b"data: b\r") == []
    assert decoder.feed(b"\r") == [E(data="a\nb")]  # a lone CR then a CR: blank line


def test_lf_skip_only_directly_after_cr() -> None:
    """Only the LF right after a CR is swallowed; an empty chunk in between changes nothing."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\n") == [E(data="a")]


def test_block_without_data_updates_last_event_id_attribute() -> None:
    """A block with only an id dispatches nothing but updates last_event_id at its blank line."""
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 42\n") == []
    assert decoder.last_event_id == ""  # only the buffer is set until the blank line
    assert decoder.feed(b"\n") == []
    assert decoder.last_event_id == "42"


def test_initial_last_event_id() -> None:
    """A decoder built with last_event_id keeps it until the stream sets another id."""
    decoder = SSEDecoder(last_event_id="9")
    assert decoder.last_event_id == "9"
    assert decoder.feed(b"data: a\n\nid\ndata: b\n\n") == [E(data="a", id="9"), E(data="b")]
    assert decoder.last_event_id == ""


def test_retry_initially_none_and_huge_values_ignored() -> None:
    """retry starts as None; absurdly long values are ignored, leading zeros are not counted."""
    decoder = SSEDecoder()
    assert decoder.retry is None
    decoder.feed(b"retry: 250\nretry: " + b"9" * 5000 + b"\n")
    assert decoder.retry == 250
    decoder.feed(b"retry: " + b"0" * 5000 + b"12\n")
    assert decoder.retry == 12


def test_event_repr_leaves_out_defaults() -> None:
    """The repr shows only non-default fields."""
    assert repr(E()) == "ServerSentEvent()"
    assert repr(E(data="x")) == "ServerSentEvent(data='x')"
    assert repr(E("add", "x", "1")) == "ServerSentEvent(event='add', data='x', id='1')"


def test_decoded_event_is_a_normal_frozen_dataclass() -> None:
    """Events built by the decoder equal, hash and replace like directly built ones."""
    (event,) = SSEDecoder().feed(b"event: t\nid: 1\ndata: x\n\n")
    direct = E("t", "x", "1")
    assert event == direct and hash(event) == hash(direct)
    assert type(event) is ServerSentEvent
    assert dataclasses.astuple(event) == ("t", "x", "1")
    assert dataclasses.replace(event, data="y") == E("t", "y", "1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.data = "z"  # type: ignore[misc]


def _time_bytewise_long_line(size: int) -> float:
    """Seconds to feed one `data:` line of `size` bytes to a decoder one byte at a time."""
    stream = b"data: " + b"x" * size + b"\n\n"
    chunks = [stream[i : i + 1] for i in range(len(stream))]
    decoder = SSEDecoder()
    feed = decoder.feed
    events: list[ServerSentEvent] = []
    gc.disable()
    try:
        start = time.perf_counter()
        for chunk in chunks:
            events += feed(chunk)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    assert len(events) == 1 and len(events[0].data) == size
    return elapsed


def test_long_line_in_one_byte_chunks_is_linear() -> None:
    """A 1 MiB line fed byte by byte finishes quickly and scales linearly, not quadratically."""
    small = min(_time_bytewise_long_line(256 * 1024) for _ in range(2))
    large = _time_bytewise_long_line(1024 * 1024)
    assert large < 10.0
    assert large / small < 8.0  # 4x the bytes: ~4x linear, ~16x quadratic


# --- Property tests ---

_VALUE_CHARS = st.sampled_from(
    ["a", "b", "1", "0", " ", ":", "\x00", "\ufeff", "\u2028", "\u0085", "\u00e9", "\U0001f600"]
)
_VALUES = st.text(_VALUE_CHARS, max_size=6)
_FIELD_NAMES = st.sampled_from(["data", "event", "id", "retry", "foo", "dat", "data "])
_FIELD_LINES = st.tuples(_FIELD_NAMES, st.sampled_from(["", ":", ": ", ":  "]), _VALUES).map(
    lambda parts: parts[0] + (parts[1] + parts[2] if parts[1] else "")
)
_LINES = st.one_of(
    _FIELD_LINES,
    _FIELD_LINES,
    _VALUES.map(lambda value: ":" + value),  # comment
    st.just(""),  # blank line: dispatch
)
_ENDINGS = st.sampled_from(["\n", "\r", "\r\n"])


@st.composite
def _streams(draw: st.DrawFn) -> bytes:
    """Random event streams: BOMs, field/comment/blank lines, any line endings, bad bytes."""
    text = draw(st.sampled_from(["", "\ufeff", "\ufeff\ufeff"]))
    for line, ending in draw(st.lists(st.tuples(_LINES, _ENDINGS), max_size=25)):
        text += line + ending
    text += draw(_LINES)  # maybe an unterminated tail
    stream = text.encode("utf-8")
    for position, junk in draw(
        st.lists(st.tuples(st.integers(0, len(stream)), st.binary(max_size=2)), max_size=3)
    ):
        stream = stream[:position] + junk + stream[position:]
    return stream


@st.composite
def _chunkings(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    """A random split of `stream` into chunks, empty chunks included."""
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@settings(database=None, deadline=None, max_examples=300)
@given(st.data())
def test_random_chunking_matches_whole_stream_and_reference(data: st.DataObject) -> None:
    """Any chunking of a random stream gives the same events and state as the whole stream."""
    stream = data.draw(_streams())
    whole = feed_chunks([stream])
    assert whole == reference_parse(stream)
    assert feed_chunks(data.draw(_chunkings(stream))) == whole


@settings(database=None, deadline=None, max_examples=200)
@given(st.data())
def test_random_chunking_of_arbitrary_bytes(data: st.DataObject) -> None:
    """Chunking invariance and spec agreement also hold for arbitrary binary input."""
    stream = data.draw(
        st.binary(max_size=64)
        | st.lists(
            st.sampled_from(
                [b"\r", b"\n", b"data", b":", b" ", b"id", b"\xef\xbb\xbf", b"\xc3", b"\xa9", b"x"]
            ),
            max_size=30,
        ).map(b"".join)
    )
    whole = feed_chunks([stream])
    assert whole == reference_parse(stream)
    assert feed_chunks(data.draw(_chunkings(stream))) == whole


# --- Encoder ---


def _decode_one(wire: bytes) -> tuple[ServerSentEvent, SSEDecoder]:
    """Decode a wire block that must contain exactly one event."""
    decoder = SSEDecoder()
    (event,) = decoder.feed(wire)
    return event, decoder


def test_encode_event_wire_format() -> None:
    """encode_event writes event, id, retry, one data line per line, then a blank line."""
    assert (
        encode_event("a\nb", event="x", id="1", retry=5)
        == b"event: x\nid: 1\nretry: 5\ndata: a\ndata: b\n\n"
    )
    assert encode_event("") == b"data:\n\n"
    assert encode_event("a\n", id="", event="") == b"event:\nid:\ndata: a\ndata:\n\n"
    assert encode_event("hi") == b"data: hi\n\n"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("hello", "hello"),
        ("", ""),
        ("line1\nline2\n", "line1\nline2\n"),
        ("\n\n", "\n\n"),
        ("a\r\nb\rc\n\rd", "a\nb\nc\n\nd"),
        (" leading space", " leading space"),
        ("  two: colons:", "  two: colons:"),
        (
            "h\u00e9llo \U0001f600 \u2028 \u0085 \ufeff \x00",
            "h\u00e9llo \U0001f600 \u2028 \u0085 \ufeff \x00",
        ),
    ],
)
def test_encode_event_round_trip_data(data: str, expected: str) -> None:
    """Encoded data decodes back unchanged, except CRLF and CR become LF."""
    event, _ = _decode_one(encode_event(data))
    assert event == E(data=expected)


def test_encode_event_round_trip_fields() -> None:
    """Event type, id and retry survive encoding, including leading spaces and unicode."""
    event, decoder = _decode_one(encode_event("d", event=" \u00e9v:t", id=" 7:\u2028", retry=3000))
    assert event == E(" \u00e9v:t", "d", " 7:\u2028")
    assert decoder.last_event_id == " 7:\u2028" and decoder.retry == 3000


def test_encode_event_empty_id_resets_last_event_id() -> None:
    """id='' is written and resets the client's last event ID; event='' means 'message'."""
    decoder = SSEDecoder()
    decoder.feed(encode_event("a", id="1"))
    assert decoder.feed(encode_event("b", id="", event="")) == [E(data="b")]
    assert decoder.last_event_id == ""


@settings(database=None, deadline=None)
@given(
    data=st.text(),
    event=st.none() | st.text().filter(lambda s: "\r" not in s and "\n" not in s),
    id_=st.none() | st.text().filter(lambda s: not {"\r", "\n", "\x00"} & set(s)),
    retry=st.none() | st.integers(min_value=0, max_value=10**12),
)
def test_encode_event_round_trip_property(
    data: str, event: str | None, id_: str | None, retry: int | None
) -> None:
    """Any encodable event decodes back to itself (with line endings normalised to LF)."""
    decoded, decoder = _decode_one(encode_event(data, event=event, id=id_, retry=retry))
    expected_data = data.replace("\r\n", "\n").replace("\r", "\n")
    assert decoded == E(event or "message", expected_data, id_ or "")
    assert decoder.retry == retry


def test_encode_comment() -> None:
    """encode_comment writes comment lines ended by a blank line; decoders ignore them."""
    assert encode_comment("ping") == b": ping\n\n"
    assert encode_comment() == b":\n\n"
    assert encode_comment("a\nb\r\nc") == b": a\n: b\n: c\n\n"
    decoder = SSEDecoder()
    wire = encode_comment("a\rdata: x") + encode_event("y", id="2") + encode_comment("z")
    assert decoder.feed(wire) == [E(data="y", id="2")]
    assert decoder.last_event_id == "2"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"event": "a\nb"},
        {"event": "a\rb"},
        {"id": "1\n"},
        {"id": "\r1"},
        {"id": "1\x002"},
        {"retry": -1},
    ],
)
def test_encode_event_rejects_bad_fields(kwargs: dict[str, object]) -> None:
    """Line breaks in event/id, NUL in id and negative retry raise ValueError."""
    with pytest.raises(ValueError):
        encode_event("x", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("retry", [True, 1.5, "5"])
def test_encode_event_rejects_non_int_retry(retry: object) -> None:
    """A retry that is not an int (bool, float, str) raises TypeError."""
    with pytest.raises(TypeError):
        encode_event("x", retry=retry)  # type: ignore[arg-type]


# --- Near-miss fuzz: the whole-chunk fast paths against the reference ---
#
# The decoder checks a chunk's middle as a whole against two common shapes ("data: X"
# blocks; "id: N" + "data: X" blocks). A check that is unsound for one odd block among
# many regular ones would go unnoticed by random streams, which are never regular, and
# by regular streams, which are never odd. These streams are one repeated shape with a
# few blocks altered in the ways a real stream might differ.

_NEAR_MISS_VALUES = [
    "x",
    "",
    "hello world",
    " leading space",
    "a:b: c",
    "data: not a field",
    "id: 7",
    "\u00e9\U0001f600\u2028\u0085",
    "nul\x00inside",
    "\ufeffbom",
]


def _id_value(i: int) -> str:
    return f"Ab3dEf9hIjKlMnOp:{i}"


def _regular_block(shape: str, i: int, value: str) -> list[str]:
    """The lines of one regular block (its blank line excluded)."""
    if shape == "data":
        return [f"data: {value}"]
    return [f"id: {_id_value(i)}", f"data: {value}"]


# Each alteration maps a block's lines to new lines; the block is still followed by a
# blank line unless the alteration says otherwise (by ending its list with None).
_ALTERATIONS: dict[str, object] = {
    "event_line_first": lambda lines: ["event: add", *lines],
    "event_line_last": lambda lines: [*lines, "event: add"],
    "empty_event_line": lambda lines: ["event:", *lines],
    "comment_line": lambda lines: [": ping", *lines],
    "comment_between_lines": lambda lines: [*lines[:1], ":", *lines[1:]],
    "comment_only_block": lambda lines: [": ping"],
    "retry_line": lambda lines: [*lines, "retry: 1500"],
    "bad_retry_line": lambda lines: ["retry: 15a", *lines],
    "id_with_nul": lambda lines: ["id: a\x00b", *lines[-1:]],
    "id_line_with_nul_value": lambda lines: [line.replace("id: ", "id: \x00", 1) for line in lines],
    "empty_id": lambda lines: ["id:", *lines[-1:]],
    "id_without_colon": lambda lines: ["id", *lines[-1:]],
    "data_without_colon": lambda lines: [*lines[:-1], "data"],
    "data_missing_space": lambda lines: [*lines[:-1], lines[-1].replace("data: ", "data:", 1)],
    "data_two_spaces": lambda lines: [*lines[:-1], lines[-1].replace("data: ", "data:  ", 1)],
    "id_missing_space": lambda lines: [line.replace("id: ", "id:", 1) for line in lines],
    "empty_data": lambda lines: [*lines[:-1], "data: "],
    "two_data_lines": lambda lines: [*lines, "data: second"],
    "no_data_line": lambda lines: lines[:-1] or [": nothing"],
    "id_only_block": lambda lines: ["id: only"],
    "swapped_lines": lambda lines: lines[::-1],
    "unknown_field": lambda lines: ["foo: bar", *lines],
    "miscased_field": lambda lines: [line.replace("data", "Data", 1) for line in lines],
    "space_before_colon": lambda lines: [line.replace("data:", "data :", 1) for line in lines],
    "line_split_in_two": lambda lines: [*lines[:-1], lines[-1][:3], lines[-1][3:]],
    "two_blocks_merged": lambda lines: [*lines, None],
    "blank_line_replaced_by_comment": lambda lines: [*lines, ":", None],
    "blank_line_replaced_by_field": lambda lines: [*lines, "event: add", None],
    "blank_line_replaced_by_data": lambda lines: [*lines, "data: more", None],
    "blank_line_replaced_by_id": lambda lines: [*lines, "id: 5", None],
    "extra_blank_line": lambda lines: [*lines, ""],
    "blank_line_before": lambda lines: ["", *lines],
}
_ENDING_ALTERATIONS = ["\r", "\r\n"]


@st.composite
def _near_miss_streams(draw: st.DrawFn) -> bytes:
    """One repeated common shape, with 0-2 blocks altered (fields, lines or line ends)."""
    shape = draw(st.sampled_from(["data", "id_data"]))
    count = draw(st.integers(1, 40))
    # Mostly short values; sometimes lines long enough for the decoder's long-line paths.
    value = draw(st.sampled_from([*_NEAR_MISS_VALUES[:4], "L" * 600, "M" * 2100]))
    altered = draw(st.lists(st.integers(0, count - 1), max_size=2, unique=True))
    text = draw(st.sampled_from(["", "", "", "\ufeff"]))
    for i in range(count):
        lines: list[str | None] = list(_regular_block(shape, i, value))
        ending = "\n"
        if i in altered:
            kind = draw(st.sampled_from([*_ALTERATIONS, "value", "ending"]))
            if kind == "value":
                other = draw(st.sampled_from(_NEAR_MISS_VALUES))
                lines = list(_regular_block(shape, i, other))
            elif kind == "ending":
                ending = draw(st.sampled_from(_ENDING_ALTERATIONS))
            else:
                lines = _ALTERATIONS[kind](lines)  # type: ignore[operator]
        blank = True
        if lines and lines[-1] is None:
            lines, blank = lines[:-1], False
        text += "".join(f"{line}{ending}" for line in lines if line is not None)
        if blank:
            text += ending
    text += draw(st.sampled_from(["", "", "data: unterminated", "id: 9\n", "data: x\n"]))
    return text.encode("utf-8")


def reference_pending(prefix: bytes) -> int:
    """What SSEDecoder.pending must be after `prefix`: data buffer + unfinished line."""
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(prefix)
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    unfinished = lines.pop()
    data_buffer = 0
    for line in lines:
        if line == "":
            data_buffer = 0
        elif line == "data" or line.startswith("data:"):
            value = line[5:]
            data_buffer += len(value[1:] if value.startswith(" ") else value) + 1
    return data_buffer + len(unfinished)


@settings(database=None, deadline=None, max_examples=400)
@given(st.data())
def test_near_miss_streams_match_reference(data: st.DataObject) -> None:
    """Regular streams with a few odd blocks decode like the reference, however chunked."""
    stream = data.draw(_near_miss_streams())
    expected = reference_parse(stream)
    assert feed_chunks([stream]) == expected
    chunks = data.draw(_chunkings(stream))
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    fed = b""
    for chunk in chunks:
        events += decoder.feed(chunk)
        fed += chunk
        assert decoder.pending == reference_pending(fed)
    assert Run(events, decoder.last_event_id, decoder.retry) == expected


def _altered_stream(shape: str, kind: str, where: int, count: int, value: str) -> bytes:
    """`count` regular blocks of `shape` whose block number `where` is altered by `kind`."""
    text = ""
    for i in range(count):
        lines: list[str | None] = list(_regular_block(shape, i, value))
        ending = "\n"
        if i == where:
            if kind in _ENDING_ALTERATIONS:
                ending = kind
            else:
                lines = _ALTERATIONS[kind](lines)  # type: ignore[operator]
        blank = not (lines and lines[-1] is None)
        text += "".join(f"{line}{ending}" for line in lines if line is not None)
        text += ending if blank else ""
    return text.encode()


@pytest.mark.parametrize("shape", ["data", "id_data"])
@pytest.mark.parametrize("kind", [*_ALTERATIONS, *_ENDING_ALTERATIONS])
def test_each_alteration_in_a_regular_stream(shape: str, kind: str) -> None:
    """Every alteration, at the start, middle and end of a long regular run, is decoded exactly.

    Fed whole, in fixed-size chunks, and in two chunks cut anywhere in or next to the odd
    block, so that it lands in a chunk's head, middle and tail.
    """
    count = 30
    for where in (0, count // 2, count - 1):
        stream = _altered_stream(shape, kind, where, count, "payload")
        expected = reference_parse(stream)
        for size in (len(stream), 64, 401):
            chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
            assert feed_chunks(chunks) == expected, (where, size)
        block = len(stream) // count
        for cut in range(max(0, (where - 1) * block), min(len(stream), (where + 2) * block)):
            assert feed_chunks([stream[:cut], stream[cut:]]) == expected, (where, cut)


@pytest.mark.parametrize("shape", ["data", "id_data"])
@pytest.mark.parametrize("kind", [*_ALTERATIONS, *_ENDING_ALTERATIONS])
def test_each_alteration_with_long_lines(shape: str, kind: str) -> None:
    """The same with lines of a few KiB, which the decoder cuts out one by one."""
    count = 6
    for where in (0, 3, count - 1):
        stream = _altered_stream(shape, kind, where, count, "0123456789" * 300)
        expected = reference_parse(stream)
        for size in (len(stream), 1000, 4500, 9001):
            chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
            assert feed_chunks(chunks) == expected, (where, size)


def test_regular_stream_fast_path_results() -> None:
    """Long regular runs of both shapes give the exact events and state (no odd block)."""
    data_stream = b"".join(b"data: %d\n\n" % i for i in range(1000))
    run = feed_chunks([data_stream[:5000], data_stream[5000:]])
    assert run == Run([E(data=str(i)) for i in range(1000)], "", None)
    id_stream = b"".join(b"id: s:%d\ndata: %d\n\n" % (i, i) for i in range(1000))
    run = feed_chunks([id_stream[:7001], id_stream[7001:]])
    assert run == Run([E(data=str(i), id=f"s:{i}") for i in range(1000)], "s:999", None)


# --- pending: what the decoder holds for the event being built ---


def test_pending_starts_at_zero_and_ignores_comments_and_completed_events() -> None:
    """Comments (pings) and dispatched events leave nothing pending."""
    decoder = SSEDecoder()
    assert decoder.pending == 0
    decoder.feed(b": ping\n\n" * 1000)
    assert decoder.pending == 0
    decoder.feed(b"id: 1\ndata: " + b"x" * 5000 + b"\n\n" + b"data: y\n\nretry: 5\n")
    assert decoder.pending == 0
    decoder.feed(b": " + b"p" * 10_000 + b"\n")
    assert decoder.pending == 0


def test_pending_counts_data_buffer_and_unfinished_line() -> None:
    """The data buffer counts value + LF per line; the unfinished line counts as received."""
    decoder = SSEDecoder()
    decoder.feed(b"data: abc")
    assert decoder.pending == len("data: abc")
    decoder.feed(b"def")
    assert decoder.pending == len("data: abcdef")
    decoder.feed(b"\n")
    assert decoder.pending == len("abcdef\n")
    decoder.feed(b": ping\n:\nevent: e\nid: 3\n")
    assert decoder.pending == len("abcdef\n")
    decoder.feed(b"data:\ndata: gh\n")
    assert decoder.pending == len("abcdef\n\ngh\n")
    assert decoder.feed(b"\n") == [E("e", "abcdef\n\ngh", "3")]
    assert decoder.pending == 0


def test_pending_grows_with_a_long_unfinished_data_line() -> None:
    """A data line that never ends grows pending by every character fed, one byte at a time."""
    decoder = SSEDecoder()
    decoder.feed(b"data: a\n\n")
    for size in range(1, 2001):
        decoder.feed(b"z" if size > 1 else b"d")
        assert decoder.pending == size


# --- SSEDataDecoder: the same stream, only the data of the wanted types ---

_TYPE_SETS = [("message",), ("message", "tick"), ("tick",), ()]


def _data_run(
    chunks: list[bytes], types: tuple[str, ...]
) -> tuple[list[str], int, str, int | None, list[int]]:
    """Feed both decoders chunk by chunk: the data decoder's results, and the check values."""
    full, only = SSEDecoder(), SSEDataDecoder(types)
    data: list[str] = []
    pending: list[int] = []
    for chunk in chunks:
        events = full.feed(chunk)
        got = only.feed(chunk)
        assert got == [e.data for e in events if e.event in types]
        data += got
        pending.append(only.pending - full.pending)
    assert (only.last_event_id, only.retry) == (full.last_event_id, full.retry)
    return data, only.skipped, only.last_event_id, only.retry, pending


def _expected_data(stream: bytes, types: tuple[str, ...]) -> tuple[list[str], int]:
    run = reference_parse(stream)
    return [e.data for e in run.events if e.event in types], sum(
        1 for e in run.events if e.event not in types
    )


@pytest.mark.parametrize("types", _TYPE_SETS)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_data_decoder_matches_the_full_decoder_on_every_case(
    case: Case, types: tuple[str, ...]
) -> None:
    """Every conformance case, whole and cut at every byte: the data of the wanted types,
    the others counted, and the same last_event_id, retry and pending as SSEDecoder."""
    stream = case.stream
    for cut in range(len(stream) + 1):
        data, skipped, *_, pending = _data_run([stream[:cut], stream[cut:]], types)
        assert (data, skipped) == _expected_data(stream, types), cut
        assert set(pending) <= {0}


@settings(database=None, deadline=None, max_examples=200)
@given(st.data())
def test_data_decoder_matches_on_random_and_near_miss_streams(data: st.DataObject) -> None:
    """Random and near-miss streams (which exercise the bulk paths), however chunked."""
    stream = data.draw(_streams() | _near_miss_streams())
    types = data.draw(st.sampled_from(_TYPE_SETS))
    result, skipped, *_ = _data_run(data.draw(_chunkings(stream)), types)
    assert (result, skipped) == _expected_data(stream, types)


def test_data_decoder_regular_runs_return_the_data_itself() -> None:
    """A long regular run of either shape yields plain strings, and nothing is skipped."""
    for block in ("data: {}\n\n", "id: {}\ndata: {}\n\n"):
        stream = "".join(block.format(i, i) for i in range(1000)).encode()
        decoder = SSEDataDecoder()
        got = decoder.feed(stream)
        assert got == [str(i) for i in range(1000)] and decoder.skipped == 0
        assert all(type(x) is str for x in got)
    other = SSEDataDecoder(["tick"])
    assert other.feed(b"data: a\n\ndata: b\n\nevent: tick\ndata: c\n\n") == ["c"]
    assert other.skipped == 2
