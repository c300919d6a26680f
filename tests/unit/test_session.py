"""The sans-I/O session protocol: numbering, acknowledgement, replay, de-duplication."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rxconn import BufferFullError
from rxconn.session import (
    Accept,
    AckSchedule,
    HubSession,
    Inbound,
    ReplayGap,
    ReplayLog,
    SessionProtocol,
    SessionState,
)


def test_inbound_delivers_the_next_drops_repeats_and_flags_gaps() -> None:
    """accept(): DELIVER for received+1, REPEAT for a repeat, GAP for a gap."""
    inbound = Inbound()
    assert inbound.accept(1) is Accept.DELIVER
    assert inbound.accept(1) is Accept.REPEAT
    assert inbound.accept(3) is Accept.GAP
    assert inbound.accept(2) is Accept.DELIVER
    assert inbound.received == 2


@given(st.lists(st.integers(min_value=1, max_value=30), max_size=200))
def test_inbound_delivers_each_number_once_and_in_order(arrivals: list[int]) -> None:
    """Whatever arrives (repeats, out of order), what is delivered is 1, 2, 3, … once each."""
    inbound = Inbound()
    delivered = [seq for seq in arrivals if inbound.accept(seq) is Accept.DELIVER]
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


def test_replay_log_treats_a_cursor_below_the_ack_as_stale_not_a_gap() -> None:
    """A request that left before a later ack overtook it (another link) names an old cursor:
    the peer already holds everything acknowledged, so it resumes after the ack, never ends."""
    log = ReplayLog(limit=10)
    for p in "abcde":
        log.push(p)
    log.ack(3)
    assert log.acked == 3 and log.can_resume(1) and log.can_resume(0)
    assert list(log.after(1)) == [(4, "d"), (5, "e")]
    log.ack(2)  # a stale ack does not move it back
    assert log.acked == 3
    assert not log.can_resume(6)  # a cursor from the future still fails
    log.ack(99)  # an ack past the end counts only what was sent
    assert log.acked == 5 and len(log) == 0


def test_replay_log_after_is_linear() -> None:
    """after() walks the log once (no quadratic deque indexing)."""
    log = ReplayLog(limit=300_000)
    for _ in range(200_000):
        log.push(b"x")
    assert sum(1 for _ in log.after(0)) == 200_000


def test_client_session_keeps_or_resets_numbering() -> None:
    """A resumed session keeps its inbound counter; a new one starts at zero."""
    session = HubSession()
    session.start("s1", resumed=False)
    assert session.inbound is not None
    session.inbound.accept(1)
    session.start("s1", resumed=True)
    assert session.received == 1
    session.start("s2", resumed=False)
    assert session.received == 0
    session.forget()
    assert session.id is None


def test_ack_schedule_coalesces_by_count_and_by_delay() -> None:
    """Both ends acknowledge on one schedule: arm on the first, at once at `every`."""
    acks = AckSchedule(delay=0.05, every=3)
    assert [acks.delivered(), acks.delivered(), acks.delivered()] == ["arm", None, "now"]
    acks.sent()
    assert acks.unacked == 0 and acks.delivered() == "arm"
    by_time_only = AckSchedule(delay=0.25, every=None)
    assert [by_time_only.delivered() for _ in range(5000)].count("arm") == 1


def test_session_state_is_plain_data_that_round_trips() -> None:
    """SessionState maps onto a Redis hash (str or bytes fields) and back exactly."""
    state = SessionState("s1", "secret", received=7, sent=12, acked=9, epoch=3)
    fields = state.to_fields()
    assert all(type(k) is str and type(v) is str for k, v in fields.items())
    assert SessionState.from_fields(fields) == state
    as_bytes = {k.encode(): v.encode() for k, v in fields.items()}  # what redis-py returns
    assert SessionState.from_fields(as_bytes) == state
    with pytest.raises(ValueError, match="not a session state"):
        SessionState.from_fields({"id": "s1"})
    with pytest.raises(ValueError, match="not a session state"):
        SessionState.from_fields({**fields, "in": "seven"})


def test_both_ends_are_one_protocol_object_and_a_hub_end_restores_from_state() -> None:
    """The client's HubSession and a hub's end are SessionProtocols; a hub end kept as
    state (and its unacknowledged messages) continues where it stopped, in another process."""
    log = ReplayLog(10)
    hub = SessionProtocol(log, "s1", "secret")
    client = HubSession("s1", "secret")
    assert isinstance(client, SessionProtocol)
    for p in "abc":
        log.push(p)
    for seq in (1, 2):
        assert client.receive(seq) is Accept.DELIVER
    log.ack(client.received)
    assert hub.receive(1) is Accept.DELIVER  # one client message applied

    state = hub.state()
    assert (state.received, state.sent, state.acked) == (1, 3, 2)
    kept = [p for _, p in log.after(state.acked)]
    fresh = ReplayLog(10)  # another process: only the state and the kept messages survive
    again = SessionProtocol.restore(SessionState.from_fields(state.to_fields()), fresh)
    for p in kept:
        fresh.push(p)
    assert again.receive(1) is Accept.REPEAT and again.receive(2) is Accept.DELIVER
    assert list(fresh.after(client.received)) == [(3, "c")]
    assert fresh.push("d") == 4
    with pytest.raises(ValueError):
        HubSession().state()  # not named by a hub yet
