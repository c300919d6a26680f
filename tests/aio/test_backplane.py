"""The Redis backplane against a real ``redis-server``: its state is never silent, it is
subscribed again within a second of Redis answering, and a Redis that came back empty
is noticed. (The connection layer of the Redis hub, issue 13.)"""

from __future__ import annotations

import asyncio

import pytest

from rxconn.server._backplane import RedisBackplane
from tests.helpers import Recorder
from tests.redis_server import RedisServer


pytestmark = pytest.mark.asyncio(loop_scope="function")

CHECK = 0.2  # check_interval: seconds of quiet before a PING proves the link


async def test_state_goes_connecting_then_connected(redis_server: RedisServer) -> None:
    """A new backplane says "connecting", then "connected" once Redis answered."""
    plane = RedisBackplane(redis_server.url, check_interval=CHECK)
    states = Recorder(plane.state)
    assert states.items == ["connecting"]
    await plane.start()
    await states.until(lambda items: items[-1] == "connected")
    assert states.items == ["connecting", "connected"]
    states.dispose()
    await plane.stop()


async def test_redis_killed_is_lost_and_back_within_a_second(redis_server: RedisServer) -> None:
    """Redis killed: "lost"; back (empty): "connected" within ~1 s of answering, the wipe
    is reported, and messages flow again on the channels subscribed before."""
    plane = RedisBackplane(redis_server.url, check_interval=CHECK)
    other = RedisBackplane(redis_server.url, check_interval=CHECK)
    states = Recorder(plane.state)
    wiped = Recorder(plane.wiped)
    got = Recorder(plane.messages)
    await plane.start()
    await other.start()
    await plane.subscribe(plane.key("news"))
    await states.until(lambda items: items[-1] == "connected")
    await _published(other, plane.key("news"), b"before", got)

    await redis_server.stop()
    await states.until(lambda items: items[-1] == "lost", timeout=5.0)
    assert wiped.items == []
    await redis_server.start()
    loop = asyncio.get_running_loop()
    answered = loop.time()
    await states.until(lambda items: items[-1] == "connected", timeout=5.0)
    assert loop.time() - answered < 1.0  # resubscribed promptly, not after a long backoff
    await wiped.until(lambda items: len(items) == 1)  # the restart was empty: said so
    other_states = Recorder(other.state)
    await other_states.until(lambda items: items[-1] == "connected", timeout=5.0)
    other_states.dispose()
    await _published(other, plane.key("news"), b"after", got)
    assert [data for _, data in got.items] == [b"before", b"after"]
    for recorder in (states, wiped, got):
        recorder.dispose()
    await other.stop()
    await plane.stop()


async def test_a_redis_that_kept_its_data_is_not_reported_wiped(
    redis_server: RedisServer,
) -> None:
    """Only an empty Redis is a wipe: a second backplane on the same data sees none."""
    first = RedisBackplane(redis_server.url, check_interval=CHECK)
    await first.start()
    states = Recorder(first.state)
    await states.until(lambda items: items[-1] == "connected")
    await first.client.client_kill_filter(_type="pubsub")  # drop its link, not the data
    second = RedisBackplane(redis_server.url, check_interval=CHECK)
    wiped = (Recorder(first.wiped), Recorder(second.wiped))
    await second.start()
    second_states = Recorder(second.state)
    await second_states.until(lambda items: items[-1] == "connected")
    await states.until(lambda items: items[-1] == "connected")
    assert [w.items for w in wiped] == [[], []]
    for recorder in (states, second_states, *wiped):
        recorder.dispose()
    await second.stop()
    await first.stop()


async def _published(
    sender: RedisBackplane, channel: str, data: bytes, got: Recorder, timeout: float = 5.0
) -> None:
    """Publish until one subscriber got it (subscription is asynchronous), then wait for it."""
    async with asyncio.timeout(timeout):
        while await sender.publish(channel, data) == 0:
            await asyncio.sleep(0.01)
    await got.until(lambda items: (channel, data) in items)
