"""Hub session state in a real Redis (issue 13, part): numbering, acknowledgement and
replay, broadcasts interleaved in one order every hub agrees on, the echo applied with
its message in one atomic step, fencing of an old owner, each hub's inbox, retries that
apply once, bounded replay, and keys that expire after the grace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from rxconn.errors import BufferFullError
from rxconn.server._store import Appended, Fenced, RedisSessionStore, UnknownSession
from tests.redis_server import RedisServer


pytestmark = pytest.mark.asyncio(loop_scope="function")


@pytest_asyncio.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_server.url)
    try:
        yield redis
    finally:
        await redis.aclose()


def store(client: aioredis.Redis, owner: str = "", **kw: float) -> RedisSessionStore:
    options = {"grace": 30.0, "replay_limit": 100, **kw}
    return RedisSessionStore(
        client, grace=options["grace"], replay_limit=int(options["replay_limit"]), owner=owner
    )


async def pending(sessions: RedisSessionStore, sid: str, key: str, last: int) -> list[Any]:
    """What a claim with cursor ``last`` replays."""
    return (await sessions.claim(sid, key, last)).outgoing.messages


async def test_a_session_numbers_keeps_and_replays_until_acknowledged(
    client: aioredis.Redis,
) -> None:
    """Hub messages are numbered 1, 2, ...; a claim with the client's last acknowledges
    and the rest is replayed; text stays text, bytes stay bytes."""
    sessions = store(client)
    created = await sessions.create("rxconn")
    sid, key = created.state.id, created.state.key
    assert created.token is None
    assert [(await sessions.append(sid, p)).seq for p in ("a", b"\x00b", "c")] == [1, 2, 3]
    claimed = await sessions.claim(sid, key, last=1)
    assert (claimed.state.received, claimed.state.sent) == (0, 3)
    assert claimed.outgoing.messages == [(2, b"\x00b"), (3, "c")]
    assert await sessions.ack(claimed.state, 2) == 1
    assert await pending(sessions, sid, key, 2) == [(3, "c")]
    assert await client.xlen(sessions.keys(sid)[1]) == 1  # acknowledged ones are gone


async def test_broadcasts_and_direct_messages_interleave_in_one_order(
    client: aioredis.Redis,
) -> None:
    """A broadcast is one entry, not a copy per session, yet each session numbers it in
    the order Redis saw it among its direct messages; a session gets only the broadcasts
    after it began; acknowledging covers both kinds."""
    sessions = store(client)
    first = await sessions.create("rxconn")
    one = first.state.id
    counters = sessions.counters(4)
    await sessions.append(one, "d1")
    await sessions.broadcast("b1", counters[0])
    later = await sessions.create("rxconn")
    two = later.state.id
    assert (first.joined, later.joined) == (0, 1)
    await sessions.append(one, "d2")
    await sessions.broadcast("b2", counters[1])
    await sessions.append(two, "only two")
    await sessions.broadcast(b"b3", counters[2])
    assert await pending(sessions, one, first.state.key, 0) == [
        (1, "d1"),
        (2, "b1"),
        (3, "d2"),
        (4, "b2"),
        (5, b"b3"),
    ]
    assert await pending(sessions, two, later.state.key, 0) == [
        (1, "b2"),
        (2, "only two"),
        (3, b"b3"),
    ]
    assert await pending(sessions, one, first.state.key, 3) == [(4, "b2"), (5, b"b3")]
    assert await client.xlen(sessions.keys(one)[1]) == 0  # d1 and d2 acknowledged
    claimed = await sessions.claim(one, first.state.key, 3)
    epoch, acked, outgoing = await sessions.read(one, 4, 2, claimed.joined)
    assert (epoch, acked) == (claimed.state.epoch, 3)
    assert outgoing is not None and outgoing.messages == [(5, b"b3")]


async def test_the_key_is_needed_and_a_lost_message_is_refused(client: aioredis.Redis) -> None:
    """A claim with the wrong key, of an unknown session, or asking for what was never
    sent, is UnknownSession (410) and changes nothing."""
    sessions = store(client)
    created = await sessions.create("rxconn")
    sid, key = created.state.id, created.state.key
    await sessions.append(sid, "a")
    await sessions.append(sid, "b")
    first = (await sessions.claim(sid, key, last=1)).state  # acknowledges message 1
    for session, secret, last in (
        (sid, "guess", 1),
        ("nope", key, 0),
        (sid, key, 9),
    ):
        with pytest.raises(UnknownSession):
            await sessions.claim(session, secret, last)
    await sessions.touch(first)  # still the owner: nothing above changed the epoch
    assert await pending(sessions, sid, key, 1) == [(2, "b")]


async def test_a_cursor_below_the_ack_is_stale_not_a_gap(client: aioredis.Redis) -> None:
    """A claim whose cursor a later ack overtook (another link, another hub) resumes after
    the ack: the client already has those messages. The state says what is acknowledged."""
    sessions = store(client)
    created = await sessions.create("rxconn")
    sid, key = created.state.id, created.state.key
    for p in "abc":
        await sessions.append(sid, p)
    first = (await sessions.claim(sid, key, last=0)).state
    assert await sessions.ack(first, 2) == 1
    stale = await sessions.claim(sid, key, last=1)
    state = stale.state
    assert (state.id, state.key, state.acked, state.sent) == (sid, key, 2, 3)
    assert state.epoch == first.epoch + 1
    assert stale.outgoing.messages == [(3, "c")]


async def test_client_messages_apply_once_with_their_echo_in_one_step(
    client: aioredis.Redis,
) -> None:
    """A batch sent twice (a retried POST, a resend after a cut) is applied once; the echo
    is appended with each applied message, so it exists exactly once too."""
    sessions = store(client)
    created = await sessions.create("rxconn")
    sid, key = created.state.id, created.state.key
    claimed = (await sessions.claim(sid, key, last=0)).state
    first = await sessions.apply(claimed, 1, ["m1", "m2"], echo=True)
    assert (first.received, first.first, first.count, first.full) == (2, 0, 2, False)
    again = await sessions.apply(claimed, 1, ["m1", "m2", "m3"], echo=True)
    assert (again.received, again.first, again.count) == (3, 2, 1)  # only m3 is new
    assert again.echoes is not None and again.echoes.index == 3  # the third echo
    gap = await sessions.apply(claimed, 9, ["far"], echo=True)
    assert (gap.received, gap.count) == (3, 0)  # a gap applies nothing
    assert await pending(sessions, sid, key, 0) == [(1, "m1"), (2, "m2"), (3, "m3")]


async def test_a_takeover_fences_the_old_owner(client: aioredis.Redis) -> None:
    """Another hub claims the session: the old owner's late writes are refused."""
    sessions = store(client)
    created = await sessions.create("rxconn")
    sid, key = created.state.id, created.state.key
    old = (await sessions.claim(sid, key, last=0)).state
    new = (await sessions.claim(sid, key, last=0)).state
    assert new.epoch > old.epoch
    for late in (
        sessions.apply(old, 1, ["late"], echo=True),
        sessions.ack(old, 0),
        sessions.touch(old),
    ):
        with pytest.raises(Fenced):
            await late
    applied = await sessions.apply(new, 1, ["fresh"], echo=False)
    assert applied.received == 1


async def test_replay_is_bounded_and_never_drops(client: aioredis.Redis) -> None:
    """replay_limit unacknowledged messages (broadcasts count too): append raises
    BufferFullError, an echo that finds the replay full stops the batch (the caller ends
    the session), and a claim that would need more is refused."""
    sessions = store(client, replay_limit=2)
    created = await sessions.create("rxconn")
    sid, key = created.state.id, created.state.key
    await sessions.append(sid, "a")
    await sessions.broadcast("b", sessions.counters(1)[0])
    with pytest.raises(BufferFullError):
        await sessions.append(sid, "c")
    claimed = (await sessions.claim(sid, key, last=0)).state
    applied = await sessions.apply(claimed, 1, ["x", "y"], echo=True)
    assert (applied.received, applied.count, applied.full) == (0, 0, True)
    assert await pending(sessions, sid, key, 0) == [(1, "a"), (2, "b")]
    await sessions.broadcast("more", sessions.counters(1)[0])
    with pytest.raises(UnknownSession):
        await sessions.claim(sid, key, last=0)  # 3 pending: more than it may keep
    assert await pending(sessions, sid, key, 1) == [(2, "b"), (3, "more")]


async def test_a_retry_with_the_same_counter_applies_once(client: aioredis.Redis) -> None:
    """A hub whose reply was lost sends again with the same counter: Redis applies it
    once (the second answer says so), for appends and broadcasts alike."""
    sessions = store(client, owner="A")
    created = await sessions.create("rxconn")
    sid, key = created.state.id, created.state.key
    counters = sessions.counters(2)
    items = [(sid, "once"), (sid, "twice?")]
    first = await sessions.append_many(items, counters)
    second = await sessions.append_many(items, counters)
    assert [r.seq for r in first if isinstance(r, Appended)] == [1, 2]
    assert [r.entry for r in second if isinstance(r, Appended)] == [-1, -1]
    counter = sessions.counters(1)[0]
    assert (await sessions.broadcast("all", counter))[0] == 1
    assert await sessions.broadcast("all", counter) == (0, 0)
    assert await pending(sessions, sid, key, 0) == [(1, "once"), (2, "twice?"), (3, "all")]


async def test_each_live_hub_reads_what_concerns_it_in_its_inbox(
    client: aioredis.Redis,
) -> None:
    """A registered hub's inbox gets, numbered 1, 2, ...: direct messages for sessions it
    owns (with the payloads), every broadcast, a takeover of its session ("!" with the new
    epoch), and an ack taken by another hub. A hub that is not registered gets nothing."""
    hub_a = store(client, owner="A")
    hub_b = store(client, owner="B")
    assert await hub_a.beat(0)  # new
    assert not await hub_a.beat(0)  # renewed
    created = await hub_a.create("rxconn")
    sid, key = created.state.id, created.state.key
    await hub_b.append(sid, "from B")
    await hub_b.broadcast("everyone", hub_b.counters(1)[0])
    taken = (await hub_b.claim(sid, key, last=0)).state  # B takes the link over
    await hub_b.append(sid, "A is not told")
    state = (await hub_a.claim(sid, key, last=0)).state  # A takes it back
    await hub_b.ack(state, 2)
    raw = await client.xrange(hub_a.inbox)
    entries = [(int(i.split(b"-")[0]), f) for i, f in raw]
    assert [n for n, _ in entries] == [1, 2, 3, 4]
    (_, direct), (_, broadcast), (_, fence), (_, ack) = entries
    assert (direct[b"k"], direct[b"s"], direct[b"i"], direct[b"d0"]) == (
        b"m",
        sid.encode(),
        b"1",
        b"from B",
    )
    assert (broadcast[b"k"], broadcast[b"b"], broadcast[b"d0"]) == (b"b", b"1", b"everyone")
    assert (fence[b"k"], fence[b"e"]) == (b"!", str(taken.epoch).encode())
    assert (ack[b"k"], ack[b"a"]) == (b"a", b"2")
    assert await client.exists(hub_b.inbox) == 0  # B never registered
    await hub_a.leave()
    assert await client.exists(hub_a.inbox) == 0


async def test_every_key_expires_after_the_grace(client: aioredis.Redis) -> None:
    """After the grace no key of any session is left (checked with SCAN), however many
    sessions were opened, used and abandoned; touching keeps an owned one alive."""
    sessions = store(client, grace=1.0)
    kept_created = await sessions.create("rxconn")
    kept_sid = kept_created.state.id
    kept = (await sessions.claim(kept_sid, kept_created.state.key, last=0)).state
    for i in range(200):
        created = await sessions.create("eventsource" if i % 2 else "rxconn")
        sid = created.state.id
        await sessions.append(sid, f"m{i}")
        claimed = (await sessions.claim(sid, created.state.key, last=0)).state
        await sessions.apply(claimed, 1, [f"c{i}"], echo=True)
    async with asyncio.timeout(10.0):
        while [k async for k in client.scan_iter(match="rx:{*")] != [
            k.encode() for k in sessions.keys(kept_sid)[:1]
        ]:
            await sessions.touch(kept)
            await asyncio.sleep(0.1)
    await sessions.end(kept_sid)
    assert [k async for k in client.scan_iter(match="rx:{*")] == []


async def test_a_browser_session_resumes_with_its_token_over_a_window(
    client: aioredis.Redis,
) -> None:
    """An EventSource session is claimed with its resume token (which acknowledges
    nothing), and its replay is a window: appends past the limit drop the oldest."""
    sessions = store(client, replay_limit=2)
    created = await sessions.create("eventsource")
    sid, token = created.state.id, created.token
    assert token is not None
    for p in "abc":
        await sessions.append(sid, p)
    stored = await sessions.claim(sid, token, last=1)
    assert (stored.kind, stored.token, stored.state.acked) == ("eventsource", token, 1)
    assert stored.outgoing.messages == [(2, "b"), (3, "c")]
    assert (await sessions.claim(sid, token, last=2)).outgoing.messages == [(3, "c")]
    with pytest.raises(UnknownSession):
        await sessions.claim(sid, "not the token", last=2)
    with pytest.raises(UnknownSession):
        await sessions.claim(sid, token, last=0)  # message 1 left the window: a gap
