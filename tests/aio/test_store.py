"""Hub session state in a real Redis (issue 13, part): numbering, acknowledgement and
replay, the echo applied with its message in one atomic step, fencing of an old owner,
bounded replay, and keys that expire after the grace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from rxconn.errors import BufferFullError
from rxconn.server._store import Fenced, RedisSessionStore, UnknownSession
from tests.redis_server import RedisServer


pytestmark = pytest.mark.asyncio(loop_scope="function")


@pytest_asyncio.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_server.url)
    try:
        yield redis
    finally:
        await redis.aclose()


def store(client: aioredis.Redis, **kw: float) -> RedisSessionStore:
    options = {"grace": 30.0, "replay_limit": 100, **kw}
    return RedisSessionStore(
        client, grace=options["grace"], replay_limit=int(options["replay_limit"])
    )


async def test_a_session_numbers_keeps_and_replays_until_acknowledged(
    client: aioredis.Redis,
) -> None:
    """Hub messages are numbered 1, 2, ...; a claim with the client's last acknowledges
    and the rest is replayed; text stays text, bytes stay bytes."""
    sessions = store(client)
    sid, key, token = await sessions.create("rxconn")
    assert token is None
    assert [await sessions.append(sid, p) for p in ("a", b"\x00b", "c")] == [1, 2, 3]
    claimed = (await sessions.claim(sid, key, last=1)).state
    assert (claimed.received, claimed.sent) == (0, 3)
    assert await sessions.after(sid, 1) == [(2, b"\x00b"), (3, "c")]
    assert await sessions.ack(claimed, 2) == 1
    assert await sessions.after(sid, 0) == [(3, "c")]


async def test_the_key_is_needed_and_a_lost_message_is_refused(client: aioredis.Redis) -> None:
    """A claim with the wrong key, of an unknown session, or asking for what was never
    sent, is UnknownSession (410) and changes nothing."""
    sessions = store(client)
    sid, key, _ = await sessions.create("rxconn")
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
    assert await sessions.after(sid, 1) == [(2, "b")]
    await sessions.touch(first)  # still the owner: nothing above changed the epoch


async def test_a_cursor_below_the_ack_is_stale_not_a_gap(client: aioredis.Redis) -> None:
    """A claim whose cursor a later ack overtook (another link, another hub) resumes after
    the ack: the client already has those messages. The state says what is acknowledged."""
    sessions = store(client)
    sid, key, _ = await sessions.create("rxconn")
    for p in "abc":
        await sessions.append(sid, p)
    first = (await sessions.claim(sid, key, last=0)).state
    assert await sessions.ack(first, 2) == 1
    stale = (await sessions.claim(sid, key, last=1)).state
    assert (stale.id, stale.key, stale.acked, stale.sent) == (sid, key, 2, 3)
    assert stale.epoch == first.epoch + 1
    assert await sessions.after(sid, stale.acked) == [(3, "c")]


async def test_client_messages_apply_once_with_their_echo_in_one_step(
    client: aioredis.Redis,
) -> None:
    """A batch sent twice (a retried POST, a resend after a cut) is applied once; the echo
    is appended with each applied message, so it exists exactly once too."""
    sessions = store(client)
    sid, key, _ = await sessions.create("rxconn")
    claimed = (await sessions.claim(sid, key, last=0)).state
    first = await sessions.apply(claimed, 1, ["m1", "m2"], echo=True)
    assert (first.received, first.first, first.count, first.full) == (2, 0, 2, False)
    again = await sessions.apply(claimed, 1, ["m1", "m2", "m3"], echo=True)
    assert (again.received, again.first, again.count) == (3, 2, 1)  # only m3 is new
    gap = await sessions.apply(claimed, 9, ["far"], echo=True)
    assert (gap.received, gap.count) == (3, 0)  # a gap applies nothing
    assert await sessions.after(sid, 0) == [(1, "m1"), (2, "m2"), (3, "m3")]


async def test_a_takeover_fences_the_old_owner(client: aioredis.Redis) -> None:
    """Another hub claims the session: the old owner's late writes are refused."""
    sessions = store(client)
    sid, key, _ = await sessions.create("rxconn")
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
    """replay_limit unacknowledged messages: append raises BufferFullError, and an echo
    that finds the stream full stops the batch (the caller ends the session)."""
    sessions = store(client, replay_limit=2)
    sid, key, _ = await sessions.create("rxconn")
    await sessions.append(sid, "a")
    await sessions.append(sid, "b")
    with pytest.raises(BufferFullError):
        await sessions.append(sid, "c")
    claimed = (await sessions.claim(sid, key, last=0)).state
    applied = await sessions.apply(claimed, 1, ["x", "y"], echo=True)
    assert (applied.received, applied.count, applied.full) == (0, 0, True)
    assert await sessions.after(sid, 0) == [(1, "a"), (2, "b")]


async def test_every_key_expires_after_the_grace(client: aioredis.Redis) -> None:
    """After the grace no key of any session is left (checked with SCAN), however many
    sessions were opened, used and abandoned; touching keeps an owned one alive."""
    sessions = store(client, grace=1.0)
    kept_sid, kept_key, _ = await sessions.create("rxconn")
    kept = (await sessions.claim(kept_sid, kept_key, last=0)).state
    for i in range(200):
        sid, key, _ = await sessions.create("eventsource" if i % 2 else "rxconn")
        await sessions.append(sid, f"m{i}")
        claimed = (await sessions.claim(sid, key, last=0)).state
        await sessions.apply(claimed, 1, [f"c{i}"], echo=True)
    async with asyncio.timeout(10.0):
        while [k async for k in client.scan_iter(match="rx:{*")] != [
            k.encode() for k in sessions.keys(kept_sid)[:1]
        ]:
            await sessions.touch(kept)
            await asyncio.sleep(0.1)
    await sessions.end(kept_sid)
    assert [k async for k in client.scan_iter(match="rx:{*")] == []


async def test_appends_wake_the_owner_and_a_takeover_tells_the_old_owner(
    client: aioredis.Redis,
) -> None:
    """An append from any hub publishes the session id on its owner's channel; a claim by
    another hub publishes "!" + id on the old owner's channel (it is fenced)."""
    hub_a = RedisSessionStore(client, grace=30.0, replay_limit=100, owner="A")
    hub_b = RedisSessionStore(client, grace=30.0, replay_limit=100, owner="B")
    listener = client.pubsub()
    await listener.subscribe(hub_a.channels + "A", hub_a.channels + "B")
    await listener.get_message(timeout=1.0)
    await listener.get_message(timeout=1.0)  # the two subscribe confirmations

    async def next_message() -> tuple[bytes, bytes]:
        async with asyncio.timeout(2.0):
            while True:
                message = await listener.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    return message["channel"], message["data"]

    sid, key, _ = await hub_a.create("rxconn")  # A created it: A owns it
    await hub_b.append(sid, "from B")
    assert await next_message() == (b"rx:hub:A", sid.encode())
    await hub_b.append(sid, "quiet", notify=False)
    await hub_b.claim(sid, key, last=0)  # B takes the link over
    assert await next_message() == (b"rx:hub:A", b"!" + sid.encode())
    await hub_a.append(sid, "to B")
    assert await next_message() == (b"rx:hub:B", sid.encode())
    await listener.aclose()


async def test_a_browser_session_resumes_with_its_token_over_a_window(
    client: aioredis.Redis,
) -> None:
    """An EventSource session is claimed with its resume token (which acknowledges
    nothing), and its stream is a window: appends past the limit drop the oldest."""
    sessions = store(client, replay_limit=2)
    sid, key, token = await sessions.create("eventsource")
    assert token is not None
    for p in "abc":
        await sessions.append(sid, p)
    assert await sessions.after(sid, 0) == [(2, "b"), (3, "c")]
    stored = await sessions.claim(sid, token, last=2)
    assert (stored.kind, stored.token, stored.state.acked) == ("eventsource", token, 0)
    assert await sessions.after(sid, 2) == [(3, "c")]
    with pytest.raises(UnknownSession):
        await sessions.claim(sid, "not the token", last=2)
    with pytest.raises(UnknownSession):
        await sessions.claim(sid, token, last=0)  # message 1 left the window: a gap
