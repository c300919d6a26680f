"""Cluster: a hub whose sessions live in Redis, so that any hub serves any session (issue 13).

Each hub process keeps a *view* of the sessions whose link it holds (it *owns*
them: its claim was the last, see :mod:`._store`), built from the state in
Redis and kept in step with it:

* **client -> hub**: a message is applied in Redis (one script: the inbound
  mark and the echo together), then handed to this hub's application, then
  acknowledged. Any hub may apply a session's messages (an HTTP link's POSTs
  land anywhere); the script makes each one count once, cluster-wide.
* **hub -> client**: every send (``Session.send``, ``Hub.send`` from any hub,
  echo, broadcast) is numbered in the session's Redis stream first; the owner
  reads the stream into its view's :class:`~rxconn.session.ReplayLog` when woken
  on its channel, and its link writes from there. Acknowledgements trim both.
* **ownership**: a new link claims the session (fencing the previous owner,
  which is told on its channel and lets its link go); a refused write
  (``Fenced``) does the same.
* **broadcast**: one entry in a capped Redis stream that every hub reads with
  its own cursor (``XREAD``), so a hub that was away from Redis for a moment
  reads what it missed; each appends it to the sessions it owns.

When Redis cannot be reached, links that need it (a new link, a client
message) fail with "try again later", so clients keep what they sent and
resume; nothing is acknowledged that Redis does not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import Any, Final

from redis.exceptions import RedisError

from .._types import Payload
from ..aio._tasks import TASKS
from ..errors import BufferFullError, ConnectionClosedError
from ..session import Accept, SessionState
from ._backplane import RedisBackplane
from ._registry import Registry
from ._session import Session
from ._settings import LinkTransport, SessionKind, Unavailable
from ._store import BINARY, Fenced, RedisSessionStore, UnknownSession, encode_payload


__all__ = ["Cluster", "Unavailable"]

logger = logging.getLogger("rxconn.server")

OUTGOING_LIMIT: Final = 100_000
"""Sends waiting for Redis before ``Session.send`` refuses more (``BufferFullError``)."""
BROADCAST_KEEP: Final = 10_000
"""Broadcasts kept in the Redis stream for hubs that were away for a moment."""
RETRY: Final = 0.1
"""Seconds before a write to Redis that failed is tried again."""
STOP_TIMEOUT: Final = 2.0
"""Seconds ``stop()`` waits for its tasks to end once cancelled."""
FANOUT: Final = 256
"""Sessions a broadcast is appended to concurrently."""


class Cluster:
    """The shared-session engine of one hub (see the module docstring).

    Args:
        backplane: This hub's supervised Redis connection.
        registry: The hub's registry, whose sessions are the views this hub holds.
    """

    def __init__(self, backplane: RedisBackplane, registry: Registry) -> None:
        self.backplane = backplane
        self.id = secrets.token_urlsafe(9)
        """This hub's id in the cluster (its channel is ``{prefix}:hub:{id}``)."""
        self._registry = registry
        self._settings = registry.settings
        self._store: RedisSessionStore | None = None
        self._outgoing: deque[tuple[Session | None, Payload]] = deque()
        self._outgoing_ready = asyncio.Event()
        self._acks: dict[str, Session] = {}
        self._acks_ready = asyncio.Event()
        self._pulling: set[str] = set()
        self._pull_again: set[str] = set()
        self._visitors: dict[str, tuple[Session, asyncio.TimerHandle]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._spawned: set[asyncio.Task[Any]] = set()  # pulls and deletes, cancelled at stop
        self._subscriptions: list[Any] = []

    @property
    def store(self) -> RedisSessionStore:
        if self._store is None:
            raise RuntimeError("the cluster is not started")
        return self._store

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect to Redis and start this hub's readers and writers."""
        plane = self.backplane
        await plane.start()
        self._store = RedisSessionStore(
            plane.client,
            prefix=plane.prefix,
            grace=self._settings.session_grace,
            replay_limit=self._settings.replay_limit,
            owner=self.id,
        )
        await plane.subscribe(self.store.channels + self.id)
        self._subscriptions = [
            plane.messages.subscribe(self._on_message),
            plane.wiped.subscribe(lambda _: self._on_wiped()),
        ]
        self._tasks = [
            TASKS.spawn(self._send_loop(), name="rxconn cluster sends"),
            TASKS.spawn(self._ack_loop(), name="rxconn cluster acks"),
            TASKS.spawn(self._touch_loop(), name="rxconn cluster touch"),
            TASKS.spawn(self._broadcast_loop(), name="rxconn cluster broadcasts"),
        ]

    async def stop(self) -> None:
        """Stop reading and writing, and close the Redis connection."""
        for subscription in self._subscriptions:
            subscription.dispose()
        tasks, self._tasks = [*self._tasks, *self._spawned], []
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task stuck in a Redis call that ignores cancellation must not
            # keep the hub from stopping (TASKS still reports it if it ever fails).
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
        for _, timer in self._visitors.values():
            timer.cancel()
        self._visitors.clear()
        await self.backplane.stop()

    # --------------------------------------------------- SessionSource (registry)

    async def create(self, kind: SessionKind, transport: LinkTransport) -> Session:
        """A new session, stored in Redis and owned by this hub."""
        try:
            session_id, key, token = await self.store.create(kind)
        except RedisError as exc:
            raise Unavailable(str(exc)) from exc
        session = self._view(session_id, kind, transport, key, token)
        session.protocol.epoch = 1
        self._registry.register(session)
        return session

    async def claim(
        self, session_id: str, secret: str, last: int, transport: LinkTransport
    ) -> Session | None:
        """Take the session's link over: this hub's view, in step with Redis; None if unknown."""
        try:
            stored = await self.store.claim(session_id, secret, last)
            entries = await self.store.after(session_id, stored.state.acked)
        except UnknownSession:
            return None
        except RedisError as exc:
            raise Unavailable(str(exc)) from exc
        self._drop_visitor(session_id)
        state = stored.state
        session = self._registry.get(session_id)
        if session is None or session.ended:
            session = self._view(session_id, stored.kind, transport, state.key, stored.token)
            session.log.restart(state.acked + 1)
            self._registry.register(session)
        else:
            session.log.ack(state.acked)
        session.protocol.epoch = state.epoch
        session.inbound.received = max(session.inbound.received, state.received)
        self._fill(session, entries)
        return session

    async def visit(self, session_id: str, key: str | None) -> Session | None:
        """A view of the session for one request (a POST), without taking its link."""
        session = self._registry.get(session_id)
        if session is not None:
            return session
        visitor = self._visitors.get(session_id)
        if visitor is not None:
            session = visitor[0]
        else:
            try:
                stored = await self.store.view(session_id, key or "")
            except UnknownSession:
                return None
            except RedisError as exc:
                raise Unavailable(str(exc)) from exc
            session = self._view(session_id, stored.kind, "http", stored.state.key, stored.token)
            session.inbound.received = stored.state.received
        loop = asyncio.get_running_loop()
        self._drop_visitor(session_id)
        timer = loop.call_later(self._settings.session_grace, self._drop_visitor, session_id)
        self._visitors[session_id] = (session, timer)
        return session

    # ------------------------------------------------------- Shared (sessions)

    def queue(self, session: Any, payload: Payload) -> None:
        """Number ``payload`` for ``session`` in Redis, in order with this hub's other sends."""
        if len(self._outgoing) >= OUTGOING_LIMIT:
            raise BufferFullError(OUTGOING_LIMIT)
        self._outgoing.append((session, payload))
        self._outgoing_ready.set()

    async def receive(self, session: Any, first_seq: int, payloads: Sequence[Payload]) -> Accept:
        """Apply client messages in Redis (once, cluster-wide), then deliver them here."""
        # Unfenced (epoch 0): a client message is applied once whichever hub applies it.
        owned = session.protocol.epoch > 0 and self._registry.get(session.id) is session
        state = SessionState(session.id, session.key)
        try:
            applied = await self.store.apply(
                state, first_seq, list(payloads), echo=self._settings.echo
            )
        except UnknownSession:
            session.end("session unknown to Redis", code=1008, here_only=True)
            raise ConnectionClosedError() from None
        except RedisError as exc:
            raise Unavailable(str(exc)) from exc
        session.inbound.received = max(session.inbound.received, applied.received)
        for payload in payloads[applied.first : applied.first + applied.count]:
            session.applied(payload)
        if applied.full:
            session.end(f"client fell {self._settings.replay_limit} messages behind", code=1008)
        elif applied.count and self._settings.echo and owned:
            echoes = payloads[applied.first : applied.first + applied.count]
            self._numbered(session, applied.sent - applied.count + 1, echoes)
        if applied.count == 0 and first_seq > applied.received + 1:
            return Accept.GAP
        return Accept.DELIVER

    def acknowledged(self, session: Any) -> None:
        """Record the client's acknowledgement in Redis (coalesced, in the background)."""
        self._acks[session.id] = session
        self._acks_ready.set()

    def ended(self, session: Any, *, forget: bool) -> None:
        """``session`` ended here; with ``forget`` (the client quit, or it broke the rules)
        its state in Redis is deleted too."""
        self._acks.pop(session.id, None)
        if forget and self._store is not None:
            self._spawn(self._forget(session.id), "rxconn cluster forget")

    # ---------------------------------------------------------------- Hub API

    async def send(self, session_id: str, payload: Payload) -> int:
        """Number ``payload`` for ``session_id`` in Redis (wherever its link is); its seq.

        Raises:
            ConnectionClosedError: no such session.
            BufferFullError: its client is ``replay_limit`` messages behind.
            Unavailable: Redis cannot be reached.
        """
        local = self._registry.get(session_id)
        try:
            seq = await self.store.append(session_id, payload, notify=local is None)
        except UnknownSession:
            raise ConnectionClosedError() from None
        except RedisError as exc:
            raise Unavailable(str(exc)) from exc
        if local is not None:
            self._pull_soon(local)
        return seq

    def broadcast(self, payload: Payload) -> int:
        """Queue ``payload`` for every session of every hub; returns this hub's share."""
        self.queue(None, payload)
        return sum(1 for s in self._registry.live() if s.protocol.epoch > 0)

    def shutdown(self) -> None:
        """This hub leaves: its views end here only (clients resume on other hubs)."""
        for session in self._registry.live():
            session.end("hub shutting down", code=1001, here_only=True)

    # ------------------------------------------------------------- internals

    def _view(
        self,
        session_id: str,
        kind: SessionKind,
        transport: LinkTransport,
        key: str,
        token: str | None,
    ) -> Session:
        return Session(
            session_id,
            kind,
            transport,
            self._settings,
            self._registry.forget,
            key=key,
            resume_token=token,
            shared=self,
        )

    def _fill(self, session: Session, entries: list[tuple[int, Payload]]) -> None:
        """Put the messages read from Redis into the view's log, in order; wake the link."""
        log = session.log
        link = session.link
        written = link.cursor if link is not None and session.kind == "eventsource" else 0
        added = False
        for seq, payload in entries:
            if seq < log.next_seq:
                continue  # already here
            if seq > log.next_seq:  # a window moved on (browser session): start after it
                log.ack(log.next_seq - 1)
                log.restart(seq)
            log.push(payload, evict_upto=written)
            added = True
        if added and link is not None:
            link.wake()

    def _numbered(self, session: Session, first: int, payloads: Sequence[Payload]) -> None:
        """Redis numbered ``payloads`` from ``first``: add them to the view's log at once if
        they come next there (no read back), else read what is missing."""
        if first == session.log.next_seq and not session.ended and session.id not in self._pulling:
            self._fill(session, list(zip(itertools.count(first), payloads)))
        else:
            self._pull_soon(session)

    def _pull_soon(self, session: Session) -> None:
        if session.id in self._pulling:
            self._pull_again.add(session.id)
            return
        self._pulling.add(session.id)
        self._spawn(self._pull(session), "rxconn cluster pull")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        if not self._tasks:  # stopped (or not started): nothing more runs
            coro.close()
            return
        task = TASKS.spawn(coro, name=name)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    async def _pull(self, session: Session) -> None:
        """Read what Redis has for the session after the view's log (until nothing is new)."""
        try:
            while not session.ended:
                _unless_cancelled()
                self._pull_again.discard(session.id)
                try:
                    acked, entries = await self.store.pull(session.id, session.log.next_seq - 1)
                except UnknownSession:
                    session.end("session unknown to Redis", code=1008, here_only=True)
                    return
                except RedisError:
                    _unless_cancelled()
                    await asyncio.sleep(RETRY)
                    continue
                session.log.ack(acked)
                self._fill(session, entries)
                if session.id not in self._pull_again:
                    return
        finally:
            self._pulling.discard(session.id)

    def _on_message(self, message: tuple[str, bytes]) -> None:
        _, data = message
        if data.startswith(b"!"):
            session = self._registry.get(data[1:].decode())
            if session is not None:
                self._release(session, "taken over by another hub")
            return
        session = self._registry.get(data.decode())
        if session is not None and not session.ended:
            self._pull_soon(session)

    def _on_wiped(self) -> None:
        """Redis lost every session: end the views (clients get a new session, counted)."""
        for session in self._registry.live():
            session.end("Redis lost the session", code=4410, here_only=True)

    def _release(self, session: Session, reason: str) -> None:
        session.end(reason, code=1012, here_only=True)

    def _drop_visitor(self, session_id: str) -> None:
        visitor = self._visitors.pop(session_id, None)
        if visitor is not None:
            visitor[1].cancel()

    async def _forget(self, session_id: str) -> None:
        with contextlib.suppress(RedisError):
            await self.store.end(session_id)

    async def _send_loop(self) -> None:
        """Append queued sends to Redis in order; a failure is retried, never skipped."""
        outgoing = self._outgoing
        while True:
            _unless_cancelled()
            await self._outgoing_ready.wait()
            self._outgoing_ready.clear()
            while outgoing:
                session, payload = outgoing[0]
                try:
                    if session is None:
                        await self._publish_broadcast(payload)
                    else:
                        # Even if this hub's view ended meanwhile (another hub took the
                        # session over), the session lives on in Redis: append and wake.
                        here = not session.ended
                        seq = await self.store.append(session.id, payload, notify=not here)
                        if here:
                            self._numbered(session, seq, (payload,))
                except BufferFullError:
                    assert session is not None
                    session.end(f"client fell {self._settings.replay_limit} behind", code=1008)
                except UnknownSession:
                    if session is not None:
                        session.end("session unknown to Redis", code=1008, here_only=True)
                except RedisError:
                    _unless_cancelled()
                    await asyncio.sleep(RETRY)
                    continue
                outgoing.popleft()

    async def _ack_loop(self) -> None:
        """Write the latest acknowledgement of each session to Redis (coalesced)."""
        while True:
            _unless_cancelled()
            await self._acks_ready.wait()
            self._acks_ready.clear()
            batch, self._acks = self._acks, {}
            for session in batch.values():
                state = SessionState(session.id, session.key)  # acks are monotonic: unfenced
                try:
                    await self.store.ack(state, session.log.acked)
                except UnknownSession:
                    pass  # gone: nothing left to trim
                except RedisError:
                    _unless_cancelled()
                    self._acks.setdefault(session.id, session)  # again, once Redis answers
            if self._acks:
                await asyncio.sleep(RETRY)
                self._acks_ready.set()

    async def _touch_loop(self) -> None:
        """Keep the keys of the sessions whose link this hub holds from expiring."""
        period = max(self._settings.session_grace / 3, 0.05)
        while True:
            _unless_cancelled()
            await asyncio.sleep(period)
            for session in self._registry.live():
                if session.link is None or session.protocol.epoch == 0:
                    continue
                state = SessionState(session.id, session.key, epoch=session.protocol.epoch)
                try:
                    await self.store.touch(state)
                except Fenced:
                    self._release(session, "taken over by another hub")
                except (UnknownSession, RedisError):
                    _unless_cancelled()
                    pass  # gone (its link learns on its next write), or Redis is away

    async def _publish_broadcast(self, payload: Payload) -> None:
        kind, data = encode_payload(payload)
        await self.backplane.client.xadd(
            self.backplane.key("broadcast"),
            {"t": kind, "d": data},
            maxlen=BROADCAST_KEEP,
            approximate=True,
        )

    async def _broadcast_loop(self) -> None:
        """Read the broadcast stream from where this hub joined; fan each out to its sessions."""
        stream = self.backplane.key("broadcast")
        last = "$"
        while True:
            _unless_cancelled()
            try:
                client = self.backplane.client
                if last == "$":
                    info: Any = await client.xrevrange(stream, count=1)
                    last = info[0][0].decode() if info else "0-0"
                answer: Any = await client.xread({stream: last}, block=1000, count=100)
            except RedisError:
                _unless_cancelled()
                await asyncio.sleep(RETRY)
                continue
            for _, entries in answer or ():
                for entry_id, fields in entries:
                    last = bytes(entry_id).decode()
                    data = bytes(fields[b"d"])
                    payload: Payload = data if fields[b"t"] == BINARY else data.decode()
                    await self._fan_out(payload)

    async def _fan_out(self, payload: Payload) -> None:
        owned = [s for s in self._registry.live() if s.protocol.epoch > 0 and not s.ended]
        for start in range(0, len(owned), FANOUT):
            part = owned[start : start + FANOUT]
            try:
                results = await self.store.append_many([s.id for s in part], payload)
            except RedisError:
                _unless_cancelled()
                results = [Unavailable()] * len(part)
            for session, result in zip(part, results, strict=True):
                if isinstance(result, BufferFullError):
                    session.end(f"client fell {self._settings.replay_limit} behind", code=1008)
                elif isinstance(result, int):
                    self._numbered(session, result, (payload,))


def _unless_cancelled() -> None:
    """Re-raise a cancellation that redis-py reported as a Redis error, or swallowed (a
    loop that retries Redis errors would otherwise run on, and stopping would wait
    forever); called in every retry and at the top of every loop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def make_cluster(backplane: RedisBackplane | str, registry: Registry) -> Cluster:
    """A cluster engine for ``backplane`` (a URL or a :class:`RedisBackplane`)."""
    plane = RedisBackplane(backplane) if isinstance(backplane, str) else backplane
    return Cluster(plane, registry)
