"""RedisBackplane: a hub's supervised connection to Redis, whose trouble is never silent.

This is the connection layer of the Redis hub (issue 13): one ``redis.asyncio``
client (with its pool) per hub, and one supervisor task that

* reports the connection on :attr:`RedisBackplane.state`: ``"connecting"``,
  ``"connected"``, ``"lost"`` (then ``"connected"`` again), never silently: a
  listener task that dies is the classic failure of Redis adapters
  (python-socketio #1581 ran 24 h with a dead listener);
* proves the link when pub/sub is quiet (a PING every ``check_interval``
  seconds: a half-open socket is noticed) and reconnects with a short, capped
  delay, so it is subscribed again within about a second of Redis answering;
* detects a Redis that came back **empty** (restarted without persistence, or
  flushed) through an epoch key, and says so on :attr:`RedisBackplane.wiped`:
  every session state kept there is gone, and the hub must give its clients a
  new session (410) rather than pretend.

Pub/sub has no buffer, so it is only ever used to wake hubs, never as the only
copy of a message. ``redis`` (redis-py >= 8.1) is the optional extra
``rxconn[redis]``; this module imports it, so import it only when you use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable
from typing import Any, Final, Literal

import redis.asyncio as aioredis
from reactivex import Observable
from reactivex.subject import BehaviorSubject
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._multicast import Multicast
from ..aio._tasks import TASKS
from ..errors import safe_url


__all__ = ["BackplaneState", "RedisBackplane"]

logger = logging.getLogger("rxconn.server")

BackplaneState = Literal["connecting", "connected", "lost"]
MAX_RETRY_DELAY: Final = 0.5
"""Longest wait between reconnect attempts: resubscribed within ~1 s of Redis answering."""


POOL_SIZE: Final = 100
"""Redis connections one hub opens at most (more requests wait for one)."""


class RedisBackplane:
    """A supervised connection to the Redis at ``url`` (keys and channels under ``prefix``).

    Args:
        url: ``redis://host:port/db`` (credentials in the URL are never logged).
        prefix: The namespace of every key and channel this hub uses.
        check_interval: Seconds of pub/sub silence after which a PING proves
            the link (and the client's health check interval).
        retry_delay: First wait before reconnecting; doubles up to
            :data:`MAX_RETRY_DELAY`.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "rx",
        check_interval: float = 1.0,
        retry_delay: float = 0.05,
    ) -> None:
        if not check_interval > 0 or not retry_delay > 0:
            raise ValueError("check_interval and retry_delay must be > 0")
        self.url = url
        self.prefix = prefix
        self.check_interval = check_interval
        self.retry_delay = retry_delay
        self._client: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._state: BehaviorSubject[BackplaneState] = BehaviorSubject("connecting")
        self._wiped: Multicast[None] = Multicast("backplane.wiped")
        self._messages: Multicast[tuple[str, bytes]] = Multicast("backplane.messages")
        self._channels: set[str] = {self.key("control")}
        self._resubscribe = asyncio.Event()
        self._epoch: bytes | str | None = None

    def __repr__(self) -> str:
        return f"<RedisBackplane {safe_url(self.url)} {self._state.value}>"

    def key(self, *parts: str) -> str:
        """A key or channel name in this backplane's namespace."""
        return ":".join((self.prefix, *parts))

    # ---------------------------------------------------------------- public

    @property
    def state(self) -> Observable[BackplaneState]:
        """The connection's state now, then each change (not interest: it opens nothing)."""
        return self._state

    @property
    def current_state(self) -> BackplaneState:
        return self._state.value

    @property
    def wiped(self) -> Observable[None]:
        """Hot: Redis came back without the data it had (every stored session is gone)."""
        return self._wiped.observable

    @property
    def messages(self) -> Observable[tuple[str, bytes]]:
        """Hot: ``(channel, data)`` of what arrives on the subscribed channels."""
        return self._messages.observable

    @property
    def client(self) -> aioredis.Redis:
        """The Redis client (after :meth:`start`)."""
        if self._client is None:
            raise RuntimeError("the backplane is not started")
        return self._client

    async def start(self) -> None:
        """Create the client and start supervising (returns at once; see :attr:`state`)."""
        if self._task is not None:
            return
        # A blocking pool: a burst (a hub's share of clients reconnecting at once after
        # another hub died) waits for a connection instead of failing with "too many
        # connections", which clients would see as "try again later".
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=POOL_SIZE,
            timeout=2 * self.check_interval,
            socket_connect_timeout=self.check_interval,
            socket_timeout=2 * self.check_interval,
            health_check_interval=self.check_interval,
            # A pooled connection that died with a Redis restart fails its next
            # command: try again on a fresh one (twice, quickly) before giving up.
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), 2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        self._client = aioredis.Redis.from_pool(pool)
        self._task = TASKS.spawn(self._supervise(), name="rxconn redis backplane")

    async def stop(self) -> None:
        """Stop supervising and close the client and its pool."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait((task,), timeout=2 * self.check_interval)  # bounded
        client, self._client = self._client, None
        if client is not None:
            await _bounded_close(client.aclose(), None, self.check_interval)

    async def subscribe(self, channel: str) -> None:
        """Receive ``channel`` on :attr:`messages` (kept across reconnects)."""
        if channel not in self._channels:
            self._channels.add(channel)
            self._resubscribe.set()

    async def publish(self, channel: str, data: bytes | str) -> int:
        """Publish ``data`` on ``channel``; returns how many subscribers got it.

        Raises:
            redis.exceptions.RedisError: while Redis is away (the caller decides).
        """
        received: int = await self.client.publish(channel, data)
        return received

    # ------------------------------------------------------------ the task

    def _set(self, state: BackplaneState) -> None:
        if self._state.value != state:
            self._state.on_next(state)

    async def _supervise(self) -> None:
        delay = self.retry_delay
        while True:
            _unless_cancelled()
            try:
                await self._connected()  # returns only by raising
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                _unless_cancelled()  # redis-py reported our cancellation as an error
                if self._state.value == "connected":
                    logger.warning("rxconn: Redis backplane lost: %s", type(exc).__name__)
                    delay = self.retry_delay  # it worked until now: the schedule starts over
                self._set("lost")
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)

    async def _connected(self) -> None:
        """One connection: check the epoch, subscribe, listen until something fails."""
        client = self.client
        await client.ping()
        await self._check_epoch(client)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(*self._channels)
            self._resubscribe.clear()
            self._set("connected")
            loop = asyncio.get_running_loop()
            checked = loop.time()
            while True:
                _unless_cancelled()
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=self.check_interval
                )
                if message is not None:
                    self._deliver(message)
                elif self._resubscribe.is_set():
                    self._resubscribe.clear()
                    await pubsub.subscribe(*self._channels)
                if loop.time() - checked >= self.check_interval:
                    # Prove the link (a half-open socket), and notice a Redis that came
                    # back empty so fast that redis-py's retries hid the restart.
                    await self._check_epoch(client)
                    checked = loop.time()
        finally:
            closing = pubsub.aclose()  # type: ignore[no-untyped-call]
            await _bounded_close(closing, pubsub.connection, self.check_interval)

    async def _check_epoch(self, client: aioredis.Redis) -> None:
        """Notice a Redis that lost its data: the epoch key we saw is not there any more."""
        key = self.key("epoch")
        await client.set(key, secrets.token_hex(8), nx=True)
        current = await client.get(key)  # bytes (the client does not decode responses)
        if self._epoch is not None and current != self._epoch:
            logger.warning("rxconn: Redis came back without its data: every session is new")
            self._wiped.send(None)
        self._epoch = current

    def _deliver(self, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        data = message.get("data")
        if isinstance(channel, bytes):
            channel = channel.decode()
        if isinstance(channel, str) and isinstance(data, bytes):
            self._messages.send((channel, data))


def _unless_cancelled() -> None:
    """Re-raise a cancellation that redis-py swallowed or reported as a Redis error."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _bounded_close(closing: Awaitable[object], connection: Any, seconds: float) -> None:
    """Close within ``seconds``, then drop the socket without waiting.

    redis-py's close awaits ``wait_closed()``, which can hang on a socket whose peer
    vanished (redis/redis-py#3941); a supervisor that hangs there never reconnects and
    never stops.
    """
    try:
        async with asyncio.timeout(seconds):
            await closing
    except TimeoutError:
        logger.debug("rxconn: closing a Redis connection timed out; dropped it")
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)
    except Exception:  # closing a broken link: nothing more to do with it
        logger.debug("rxconn: closing a Redis connection failed", exc_info=True)
