"""The sending side's one log type (client outbox, hub replay log) and a link's write queue."""

from __future__ import annotations

import pytest

from rxconn._core._outbox import Outbox
from rxconn.errors import BufferFullError
from rxconn.receipts import Delivered, Receipt, Via
from rxconn.session import LinkQueue, ReplayGap, ReplayLog, SenderLog


VIA = Via("websocket", True)


def receipts(*payloads: str) -> list[Receipt]:
    return [Receipt(p) for p in payloads]


def test_outbox_and_replay_log_are_one_log_type() -> None:
    """Both ends keep what they send in a SenderLog: numbered, cumulative acks, replay after."""
    outbox, replay = Outbox(10), ReplayLog(10)
    assert isinstance(outbox, SenderLog) and isinstance(replay, SenderLog)
    for r in receipts("a", "b", "c"):
        outbox.push(r)
    for p in "abc":
        replay.push(p)
    assert (outbox.oldest, outbox.next_seq) == (replay.oldest, replay.next_seq) == (1, 4)
    outbox.ack(2, VIA)
    replay.ack(2)
    assert (
        (outbox.oldest, outbox.acked, len(outbox)) == (replay.oldest, replay.acked, 1) == (3, 2, 1)
    )
    assert [seq for seq, _ in outbox.after(0)] == [seq for seq, _ in replay.after(0)] == [3]


def test_outbox_takes_pending_in_flight_and_rewinds() -> None:
    """take_pending hands everything pending to the link, numbered; a rewind hands it again."""
    box = Outbox(10)
    a, b, c = receipts("a", "b", "c")
    box.push(a)
    assert box.take_pending(owned=True) == (1, ["a"])
    box.push(b)
    box.push(c)
    assert box.has_pending and box.in_flight == 1
    assert box.take_pending(owned=True) == (2, ["b", "c"])
    assert not box.has_pending and box.in_flight == 3 and box.owned == 3
    box.rewind()
    assert box.in_flight == 0 and box.take_pending(owned=True) == (1, ["a", "b", "c"])


def test_outbox_ack_settles_receipts_once_with_their_numbers() -> None:
    """A cumulative ack settles every receipt up to it (pending ones too); stale acks do nothing."""
    box = Outbox(10)
    rs = receipts("a", "b", "c", "d")
    for r in rs:
        box.push(r)
    box.take_pending(owned=True)
    box.ack(1, VIA)  # the one-at-a-time fast path
    box.rewind()
    box.ack(3, VIA)  # the pending b and c: the peer had them from an earlier link
    box.ack(2, VIA)  # stale
    assert [r.outcome for r in rs[:3]] == [Delivered(1, "websocket"), Delivered(2, "websocket"),
                                            Delivered(3, "websocket")]  # fmt: skip
    assert not rs[3].done and box.oldest == 4 and box.acked == 3 and len(box) == 1


def test_outbox_is_bounded_and_renumbers_for_a_new_session() -> None:
    """A full outbox refuses (nothing dropped); a new session numbers what is kept from 1."""
    box = Outbox(2)
    for r in receipts("a", "b"):
        box.push(r)
    with pytest.raises(BufferFullError):
        box.push(Receipt("c"))
    box.take_pending(owned=True)
    box.ack(1, VIA)
    box.renumber(1)
    assert box.take_pending(owned=True) == (1, ["b"]) and box.acked == 0


def test_outbox_policies_spare_owned_and_in_flight_payloads() -> None:
    """Only payloads never handed to a hub link are candidates for drop_oldest and ttl."""
    box = Outbox(10)
    a, b, c = receipts("a", "b", "c")
    box.push(a)
    box.take_pending(owned=True)
    box.push(b)
    box.push(c)
    box.rewind()  # a is pending again, but owned: never a candidate
    assert box.oldest_candidate() is b
    assert box.evict_oldest() is b and box.receipts() == [a, c]


def test_replay_log_after_a_gap_raises() -> None:
    """A window (evict_upto) forgets unacknowledged messages: asking for them is a gap."""
    log = ReplayLog(2)
    log.push("a")
    log.push("b")
    log.push("c", evict_upto=1)
    with pytest.raises(ReplayGap):
        list(log.after(0))


def test_link_queue_skips_what_this_link_already_queued() -> None:
    """The connection hands a link all pending payloads each flush: each is queued once."""
    queue = LinkQueue()
    assert queue.put(1, ["a"]) and queue.head_seq == 1
    assert queue.put(1, ["a", "b"])  # only b is new
    assert not queue.put(1, ["a", "b"])
    assert [(queue.head_seq, queue.popleft()) for _ in range(2)] == [(1, "a"), (2, "b")]
    assert queue.head_seq == 3 and len(queue) == 0


def test_link_queue_put_back_keeps_numbers() -> None:
    """A batch taken and refused (413, 401) goes back first in line, under the same numbers."""
    queue = LinkQueue()
    queue.put(5, ["e", "f", "g"])
    batch = [queue.popleft(), queue.popleft()]
    queue.put_back(batch)
    assert queue.head_seq == 5 and queue.peek() == "e" and len(queue) == 3
