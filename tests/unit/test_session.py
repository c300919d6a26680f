"""The sans-I/O session protocol and wire formats: numbering, acks, replay, de-duplication."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rxconn import BufferFullError, wire
from rxconn.session import ClientSession, Inbound, ReplayGap, ReplayLog


def test_inbound_delivers_the_next_drops_repeats_and_flags_gaps() -> None:
    """accept(): True for received+1, False for a repeat, None for a gap."""
    inbound = Inbound()
    assert inbound.accept(1) is True
    assert inbound.accept(1) is False
    assert inbound.accept(3) is None
    assert inbound.accept(2) is True
    assert inbound.received == 2


@given(st.lists(st.integers(min_value=1, max_value=30), max_size=200))
def test_inbound_delivers_each_number_once_and_in_order(arrivals: list[int]) -> None:
    """Whatever arrives (repeats, out of order), what is delivered is 1, 2, 3, … once each."""
    inbound = Inbound()
    delivered = [seq for seq in arrivals if inbound.accept(seq)]
    assert delivered == list(range(1, len(delivered) + 1))


def test_replay_log_numbers_keeps_until_acked_and_replays_after() -> None:
    """push numbers from 1; ack releases cumulatively; after(n) yields what follows n."""
    log = ReplayLog(limit=10)
    assert [log.push(p) for p in ("a", "b", b"c")] == [1, 2, 3]
    assert list(log.after(1)) == [(2, "b"), (3, b"c")]
    log.ack(2)
    assert len(log) == 1 and log.oldest == 3
    log.ack(1)  # stale ack: nothing happens
    assert list(log.after(2)) == [(3, b"c")]
    assert list(log.after(3)) == []


def test_replay_log_is_bounded_and_refuses_rather_than_drops() -> None:
    """A full log raises BufferFullError; nothing unacknowledged is dropped."""
    log = ReplayLog(limit=3)
    for i in range(3):
        log.push(str(i))
    with pytest.raises(BufferFullError):
        log.push("3")
    assert [p for _, p in log.after(0)] == ["0", "1", "2"]
    log.ack(1)
    log.push("3")
    assert log.oldest == 2


def test_replay_window_evicts_only_what_was_written_and_reports_gaps() -> None:
    """With evict_upto, the oldest written messages make room; a resume needing them fails."""
    log = ReplayLog(limit=3)
    for i in range(3):
        log.push(str(i))
    log.push("3", evict_upto=2)  # messages 1-2 were written: 1 may go
    log.push("4", evict_upto=2)  # 2 may go
    with pytest.raises(BufferFullError):
        log.push("5", evict_upto=2)  # 3 was not written yet
    assert log.oldest == 3 and log.can_resume(2) and not log.can_resume(1)
    with pytest.raises(ReplayGap):
        list(log.after(0))


def test_replay_log_after_is_linear() -> None:
    """after() walks the log once (no quadratic deque indexing)."""
    log = ReplayLog(limit=300_000)
    for _ in range(200_000):
        log.push(b"x")
    assert sum(1 for _ in log.after(0)) == 200_000


def test_client_session_keeps_or_resets_numbering() -> None:
    """A resumed session keeps its inbound counter; a new one starts at zero."""
    session = ClientSession()
    session.start("s1", resumed=False)
    assert session.inbound is not None
    session.inbound.accept(1)
    session.start("s1", resumed=True)
    assert session.received == 1
    session.start("s2", resumed=False)
    assert session.received == 0
    session.forget()
    assert session.id is None


def test_control_frames_round_trip() -> None:
    """hello, welcome, refusal, ack and quit frames decode to what was encoded."""
    hello = wire.Hello("abc", 7)
    welcome = wire.Welcome("abc", 3, True)
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
    assert wire.decode_event_id(wire.encode_event_id("a:b", 5)) == ("a:b", 5)
    assert wire.decode_event_id("42") is None
    assert wire.decode_event_id("s:x") is None
