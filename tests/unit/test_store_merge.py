"""The order every hub derives a session's hub messages in, from Redis alone (issue 13)."""

from __future__ import annotations

from rxconn.server._store import merge


def test_merge_orders_by_tag_and_refuses_a_missing_message() -> None:
    """The pure ordering rule: a direct message tagged b comes right after broadcast b;
    a missing message is None only if the client still needs it."""
    direct = {3: (5, "d3"), 4: (7, "d4")}
    broadcast = {6: "b6", 7: "b7", 8: "b8"}
    # position: 5 messages of which 2 direct, joined after broadcast 2 -> at broadcast 5
    out = merge(5, 2, 2, direct, broadcast, 8, after=5)
    assert out is not None
    assert out.messages == [(6, "d3"), (7, "b6"), (8, "b7"), (9, "d4"), (10, "b8")]
    assert (out.seq, out.directs) == (10, 4)
    assert merge(5, 2, 2, direct, {7: "b7", 8: "b8"}, 8, after=5) is None  # b6 is gone
    skipped = merge(5, 2, 2, direct, {7: "b7", 8: "b8"}, 8, after=7)  # the client has it
    assert skipped is not None and [s for s, _ in skipped.messages] == [8, 9, 10]
