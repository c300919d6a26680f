"""The wire codecs: round trips, malformed and crafted input (bounded numbers and JSON), secrets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rxconn import wire


HUGE = "9" * 5000


def test_numbers_are_bounded() -> None:
    """A number of more than MAX_DIGITS digits is malformed, not an OverflowError/ValueError."""
    assert wire.decode_number("9" * wire.MAX_DIGITS, "n") == 10**wire.MAX_DIGITS - 1
    for text in ("", "9" * (wire.MAX_DIGITS + 1), HUGE, "-1", "1.0", "٣"):
        with pytest.raises(wire.WireError):
            wire.decode_number(text, "n")


@pytest.mark.parametrize(
    "frame",
    [
        "a" + HUGE,  # an ack with thousands of digits
        'h{"session": "s", "last": ' + HUGE + "}",
        'w{"session": "s", "last": ' + HUGE + ', "resumed": true}',
        "h" + "[" * 100_000 + "]" * 100_000,  # RecursionError inside json
        'h{"session": "s", "key": 5}',
        'w{"session": "s", "last": 0, "resumed": false}',  # a new session without its key
        'w{"session": "s", "last": 0, "resumed": "yes"}',
    ],
)
def test_crafted_control_frames_raise_wire_error(frame: str) -> None:
    """Crafted control frames raise WireError (which the hub answers with close 1002)."""
    with pytest.raises(wire.WireError):
        wire.decode_control(frame)


@pytest.mark.parametrize(
    "body",
    [
        b'{"session": "s", "seq": 1, "messages": [{"t": "\\ud800"}]}',  # lone surrogate
        b'{"session": "s", "close": "false"}',
        b'{"session": "s", "close": 0}',
        b'{"session": "s", "key": 5}',
        b'{"session": "s", "seq": ' + HUGE.encode() + b"}",
        b'{"session": "s", "ack": ' + HUGE.encode() + b"}",
        b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
)
def test_crafted_batches_raise_wire_error(body: bytes) -> None:
    """Crafted POST bodies are a WireError (400), never a crash (500)."""
    with pytest.raises(wire.WireError):
        wire.decode_batch(body)


def test_batch_key_and_close_round_trip() -> None:
    """The key and the close flag survive encoding."""
    batch = wire.Batch("s", 1, ("a",), ack=2, close=True, key="k")
    assert wire.decode_batch(wire.encode_batch(batch)) == batch


def test_batches_past_max_messages_are_refused() -> None:
    """More messages than allowed is BatchTooLarge (413), also when counted before parsing."""
    body = wire.encode_batch(wire.Batch("s", 1, ("x",) * 11))
    assert len(wire.decode_batch(body, max_messages=11).messages) == 11
    with pytest.raises(wire.BatchTooLarge):
        wire.decode_batch(body, max_messages=10)
    # Elements that are not messages count too: 200,000 empty lists are refused unparsed.
    crafted = b'{"session": "s", "x": [' + b",".join([b"[]"] * 200_000) + b"]}"
    with pytest.raises(wire.BatchTooLarge):
        wire.decode_batch(crafted, max_messages=10)


def test_element_count_ignores_what_is_inside_strings() -> None:
    """Commas, brackets and escaped quotes inside texts do not count as JSON elements."""
    text = 'a,[{b\\"c' * 10_000 + "\\"
    body = wire.encode_batch(wire.Batch("s", 1, (text, '"', '\\\\"')))
    assert wire.decode_batch(body, max_messages=3).messages == (text, '"', '\\\\"')


def test_event_ids_with_absurd_numbers_are_not_ours() -> None:
    """An event id with a 5,000-digit number is simply not one of ours (fresh session)."""
    assert wire.decode_event_id("s:" + HUGE) is None
    assert wire.decode_event_id("s:1:") is None
    assert wire.decode_event_id(":1") is None


def test_session_event_round_trip() -> None:
    """The SSE session event has a codec; a new session's event must carry its key."""
    fresh = wire.SessionInfo("s", "/rx/messages", 0, False, "k")
    assert wire.decode_session_event(wire.encode_session_event(fresh)) == fresh
    resumed = wire.SessionInfo("s", "/rx/messages", 4, True)
    assert wire.decode_session_event(wire.encode_session_event(resumed)) == resumed
    for data in (
        json.dumps({"session": "s", "post": "/p", "last": 0, "resumed": False}),
        json.dumps({"session": "s", "post": "/p", "last": -1, "resumed": True}),
        '{"session": "s", "post": "/p", "resumed": true, "last": ' + HUGE + "}",
        "[" * 100_000,
    ):
        with pytest.raises(wire.WireError):
            wire.decode_session_event(data)


def test_control_frames_round_trip() -> None:
    """hello, welcome, refusal, ack and quit frames decode to what was encoded."""
    hello = wire.Hello("abc", 7)
    welcome = wire.Welcome("abc", 3, True)
    fresh = wire.Welcome("abc", 0, False, "secret")
    assert wire.decode_control(wire.encode_welcome(fresh)) == fresh
    keyed = wire.Hello("abc", 7, "secret")
    assert wire.decode_control(wire.encode_hello(keyed)) == keyed
    refusal = wire.Refusal(410, "gone")
    assert wire.decode_control(wire.encode_hello(hello)) == hello
    assert wire.decode_control(wire.encode_hello(wire.Hello(None, 0))) == wire.Hello(None, 0)
    assert wire.decode_control(wire.encode_welcome(welcome)) == welcome
    assert wire.decode_control(wire.encode_refusal(refusal)) == refusal
    assert wire.decode_control(wire.encode_ack(42)) == 42
    assert wire.decode_control("q") is None


@pytest.mark.parametrize(
    "frame",
    [
        "",
        "z",
        "a",
        "a-1",
        "a1x",
        "h{",
        "h[]",
        'h{"last": -1}',
        'h{"session": 5}',
        "w{}",
        "x{}",
        "qq",
    ],
)
def test_malformed_control_frames_raise_wire_error(frame: str) -> None:
    """Anything that is not a valid control frame raises WireError (never anything else)."""
    with pytest.raises(wire.WireError):
        wire.decode_control(frame)


@given(st.one_of(st.text(), st.binary()))
def test_sse_payload_mapping_is_lossless(payload: str | bytes) -> None:
    """Any text (CRs included) or bytes survive the SSE event mapping."""
    event, data = wire.encode_sse_payload(payload)
    assert "\r" not in data and ("\n" not in data or event == "message")
    assert wire.decode_sse_payload(event, data) == payload


@given(st.lists(st.one_of(st.text(), st.binary()), max_size=20), st.integers(1, 10**6))
def test_batches_round_trip(payloads: list[str | bytes], seq: int) -> None:
    """A POST batch decodes to what was encoded."""
    batch = wire.Batch("s", seq, tuple(payloads), ack=3)
    assert wire.decode_batch(wire.encode_batch(batch)) == batch


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"session": ""}',
        b'{"session": "s", "seq": -1}',
        b'{"session": "s", "messages": {}}',
        b'{"session": "s", "messages": [{"t": 1}]}',
        b'{"session": "s", "messages": [{"b": "not base64!"}]}',
        b'{"session": "s", "messages": [{"t": "a", "b": "YQ=="}]}',
        b'{"session": "s", "ack": "3"}',
        b"\xff\xfe",
    ],
)
def test_malformed_batches_raise_wire_error(body: bytes) -> None:
    """Malformed POST bodies raise WireError with a reason."""
    with pytest.raises(wire.WireError):
        wire.decode_batch(body)


def test_event_ids() -> None:
    """SSE ids carry session and seq; foreign ids are recognised as such."""
    assert wire.decode_event_id(wire.encode_event_id("ab", 5)) == wire.EventId("ab", 5)
    assert wire.decode_event_id(wire.encode_event_id("ab", 5, "t")) == wire.EventId("ab", 5, "t")
    assert wire.decode_event_id("a:b:5:c") is None
    assert wire.decode_event_id("42") is None
    assert wire.decode_event_id("s:x") is None
