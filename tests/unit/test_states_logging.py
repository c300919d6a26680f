"""States are cleanly immutable and picklable; the library logs like a library."""

from __future__ import annotations

import copy
import dataclasses
import logging
import pickle

import pytest

import rxconn
from rxconn.errors import BufferFullError, ConnectionLost
from rxconn.session import HubSession, ReplayLog


STATES = [
    rxconn.Disconnected(),
    rxconn.Connecting("websocket", 1),
    rxconn.Connected("http"),
    rxconn.Errored(ConnectionLost("http", "cut"), 2, 0.5),
]


@pytest.mark.parametrize("state", STATES, ids=lambda s: s.kind)
@pytest.mark.parametrize("name", ["kind", "transport", "attempt", "error", "anything"])
def test_every_assignment_on_a_state_raises_frozen_instance_error(
    state: rxconn.State, name: str
) -> None:
    """Not the confusing TypeError of frozen slots dataclasses with a ClassVar."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(state, name, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(state, name)


@pytest.mark.parametrize("state", STATES, ids=lambda s: s.kind)
def test_states_stay_small_and_survive_copy_and_pickle(state: rxconn.State) -> None:
    """Slotted (no __dict__), and copy/pickle give an equal state (errors compare by str)."""
    assert not hasattr(state, "__dict__")
    for clone in (copy.copy(state), copy.deepcopy(state), pickle.loads(pickle.dumps(state))):
        assert type(clone) is type(state) and repr(clone) == repr(state)


def test_session_ids_are_never_logged_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A session reset is a WARNING without ids (they go to DEBUG); the key is never logged."""
    caplog.set_level(logging.DEBUG, logger="rxconn")
    session = HubSession()
    session.start("public-id-1", resumed=False, key="secret-key-1")
    session.start("public-id-2", resumed=False, key="secret-key-2")
    session.forget()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2
    assert not [w for w in warnings if "public-id" in w]
    assert not [r for r in caplog.records if "secret-key" in r.getMessage()]
    assert "secret-key" not in repr(session)


def test_the_rxconn_logger_has_a_null_handler() -> None:
    """So Python's last-resort handler never prints rxconn's warnings to stderr."""
    handlers = logging.getLogger("rxconn").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_replay_log_is_bounded_in_bytes() -> None:
    """max_bytes refuses a push past it, and an eviction window frees by bytes too."""
    log = ReplayLog(100, max_bytes=10)
    log.push("12345")
    log.push(b"678")
    with pytest.raises(BufferFullError):
        log.push("abc")
    assert log.bytes == 8 and len(log) == 2
    log.ack(1)
    assert log.bytes == 3
    log.push("abcdefg")  # 3 + 7 = 10: fits
    window = ReplayLog(100, max_bytes=4)
    for seq, text in enumerate(["aa", "bb", "cc"], start=1):
        window.push(text, evict_upto=seq - 1)  # written ones may be evicted
    assert list(window.after(1)) == [(2, "bb"), (3, "cc")] and window.bytes == 4
