"""Cluster: a hub whose sessions live in Redis, so that any hub serves any session (issue 13).

Each hub process keeps a *view* of the sessions whose link it holds (it *owns*
them: its claim was the last, see :mod:`._store`), built from the state in
Redis and kept in step with it through the hub's *inbox* stream:

* **client -> hub**: a message is applied in Redis (one script: the inbound
  mark and the echo together), then handed to this hub's application, then
  acknowledged. Any hub may apply a session's messages (an HTTP link's POSTs
  land anywhere); the script makes each one count once, cluster-wide.
* **hub -> client**: every send (``Session.send``, ``Hub.send`` from any hub,
  echo) is a *direct* message appended to the session in Redis first, and every
  broadcast one entry of the broadcast stream; each is also an entry in the
  owner's inbox, with the payload. The owner reads its inbox in order and
  numbers what it reads into the view's :class:`~rxconn.session.ReplayLog`, in
  the order every hub derives from Redis alone (:func:`~._store.merge`), so a
  broadcast costs one script, not one write per session; a hub that sent a
  message itself takes it at once when it is the next entry. Its link writes
  from the log. Acknowledgements trim both.
* **ownership**: a new link claims the session (fencing the previous owner,
  which reads that in its inbox and lets its link go); a refused write
  (``Fenced``) does the same.
* **missed entries** (an inbox trimmed, a hub dropped from the registry after a
  long pause, a claim that raced its inbox): the view reads what it lacks from
  Redis (:meth:`~._store.RedisSessionStore.read`), by position.

When Redis cannot be reached, links that need it (a new link, a client
message) fail with "try again later", so clients keep what they sent and
resume; nothing is acknowledged that Redis does not have, and every write is
retried with the same counter, so it applies once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections import deque
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, Final, NamedTuple

from redis.exceptions import RedisError

from .._types import Payload
from ..aio._tasks import TASKS
from ..errors import BufferFullError, ConnectionClosedError
from ..session import Accept, SessionState
from ._backplane import RedisBackplane
from ._registry import Registry
from ._session import Session
from ._settings import LinkTransport, SessionKind, Unavailable
from ._store import (
    Appended,
    Fenced,
    Outgoing,
    RedisSessionStore,
    Stored,
    UnknownSession,
    iter_entry_payloads,
)


__all__ = ["Cluster", "Unavailable"]

logger = logging.getLogger("rxconn.server")

OUTGOING_LIMIT: Final = 100_000
"""Sends waiting for Redis before ``Session.send`` refuses more (``BufferFullError``)."""
RETRY: Final = 0.1
"""Seconds before a write to Redis that failed is tried again."""
STOP_TIMEOUT: Final = 2.0
"""Seconds ``stop()`` waits for its tasks to end once cancelled."""
SEND_BATCH: Final = 256
"""Queued sends appended in one round trip."""
SEND_PATIENCE: Final = 1.0
"""Seconds ``Hub.send`` retries a write whose reply was lost before it raises."""
BEAT_INTERVAL: Final = 1.0
"""Seconds between a hub's heartbeats (it stays registered ``HUB_TTL`` after the last)."""
EARLY_LIMIT: Final = 10_000
"""Own appends kept while an earlier inbox entry is awaited (more wait for the inbox)."""
REGISTER_TIMEOUT: Final = 2.0
"""Seconds a new link waits for the hub's first heartbeat before "try again later"."""


class _Send(NamedTuple):
    """A queued send: to a session (by id; None for a broadcast), and who waits for it."""

    session_id: str | None
    payload: Payload
    session: Session | None = None
    """This hub's view of it, ended if Redis refuses (a ``Session.send``)."""
    done: asyncio.Future[int] | None = None
    """Resolved with the seq for an awaited ``Hub.send``."""


class _View:
    """What the cluster knows of a session it owns beyond its log: the position in Redis."""

    __slots__ = ("directs", "joined", "session")

    def __init__(self, session: Session, joined: int, directs: int) -> None:
        self.session = session
        self.joined = joined
        """Broadcasts before the session began."""
        self.directs = directs
        """Direct messages among those the log has numbered so far."""

    @property
    def seq(self) -> int:
        """The last message numbered."""
        return self.session.log.next_seq - 1

    @property
    def broadcasts(self) -> int:
        """The last broadcast numbered."""
        return self.seq - self.directs + self.joined


class Cluster:
    """The shared-session engine of one hub (see the module docstring).

    Args:
        backplane: This hub's supervised Redis connection.
        registry: The hub's registry, whose sessions are the views this hub holds.
    """

    def __init__(self, backplane: RedisBackplane, registry: Registry) -> None:
        self.backplane = backplane
        self.id = secrets.token_urlsafe(9)
        """This hub's id in the cluster (its inbox is ``{prefix}:inbox:{id}``)."""
        self._registry = registry
        self._settings = registry.settings
        self._store: RedisSessionStore | None = None
        self._views: dict[str, _View] = {}
        self._read = 0  # the last inbox entry taken
        self._passed = 0  # the last one that a view created later may have missed
        self._beaten = asyncio.Event()  # registered once
        # This hub's own appends whose replies came before an earlier entry's: by entry.
        self._early: dict[int, tuple[str, int, int, Sequence[Payload]]] = {}
        self._woken: set[Session] = set()
        self._outgoing: deque[_Send] = deque()
        self._outgoing_ready = asyncio.Event()
        self._awaited: set[asyncio.Future[int]] = set()  # Hub.send calls in progress
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
        """Connect to Redis, register this hub, and start its readers and writers."""
        plane = self.backplane
        await plane.start()
        self._store = RedisSessionStore(
            plane.client,
            prefix=plane.prefix,
            grace=self._settings.session_grace,
            replay_limit=self._settings.replay_limit,
            owner=self.id,
        )
        self._subscriptions = [plane.wiped.subscribe(lambda _: self._on_wiped())]
        self._tasks = [
            TASKS.spawn(self._inbox_loop(), name="rxconn cluster inbox"),
            TASKS.spawn(self._send_loop(), name="rxconn cluster sends"),
            TASKS.spawn(self._ack_loop(), name="rxconn cluster acks"),
            TASKS.spawn(self._touch_loop(), name="rxconn cluster touch"),
        ]

    async def stop(self) -> None:
        """Leave the cluster, stop reading and writing, and close the Redis connection."""
        for subscription in self._subscriptions:
            subscription.dispose()
        tasks, self._tasks = [*self._tasks, *self._spawned], []
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task stuck in a Redis call that ignores cancellation must not
            # keep the hub from stopping (TASKS still reports it if it ever fails).
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
        for done in list(self._awaited):  # their writer is gone: nobody else settles them
            if not done.done():
                done.set_exception(Unavailable("the hub's backplane is closed"))
        for _, timer in self._visitors.values():
            timer.cancel()
        self._visitors.clear()
        if self._store is not None:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT):
                    await self._store.leave()
        await self.backplane.stop()

    # --------------------------------------------------- SessionSource (registry)

    async def create(self, kind: SessionKind, transport: LinkTransport) -> Session:
        """A new session, stored in Redis and owned by this hub."""
        await self._registered()
        try:
            stored = await self.store.create(kind)
        except RedisError as exc:
            raise Unavailable(str(exc)) from exc
        state = stored.state
        session = self._session(state.id, stored.kind, transport, state.key, stored.token)
        session.protocol.epoch = state.epoch
        self._registry.register(session)
        self._own(session, stored)
        return session

    async def claim(
        self, session_id: str, secret: str, last: int, transport: LinkTransport
    ) -> Session | None:
        """Take the session's link over: this hub's view, in step with Redis; None if unknown."""
        await self._registered()
        try:
            stored = await self.store.claim(session_id, secret, last)
        except UnknownSession:
            return None
        except RedisError as exc:
            raise Unavailable(str(exc)) from exc
        self._drop_visitor(session_id)
        state = stored.state
        session = self._registry.get(session_id)
        if session is None or session.ended:
            session = self._session(session_id, stored.kind, transport, state.key, stored.token)
            messages = stored.outgoing.messages
            session.log.restart(messages[0][0] if messages else stored.outgoing.seq + 1)
            self._registry.register(session)
        session.protocol.epoch = state.epoch
        session.inbound.received = max(session.inbound.received, state.received)
        session.log.ack(state.acked)
        self._own(session, stored)
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
            state = stored.state
            session = self._session(session_id, stored.kind, "http", state.key, stored.token)
            session.inbound.received = state.received
        loop = asyncio.get_running_loop()
        self._drop_visitor(session_id)
        timer = loop.call_later(self._settings.session_grace, self._drop_visitor, session_id)
        self._visitors[session_id] = (session, timer)
        return session

    # ------------------------------------------------------- Shared (sessions)

    def queue(self, session: Any, payload: Payload) -> None:
        """Append ``payload`` for ``session`` in Redis, in order with this hub's other sends."""
        self._enqueue(_Send(session.id if session is not None else None, payload, session))

    def _enqueue(self, item: _Send) -> None:
        if len(self._outgoing) >= OUTGOING_LIMIT:
            raise BufferFullError(OUTGOING_LIMIT)
        self._outgoing.append(item)
        self._outgoing_ready.set()

    async def receive(self, session: Any, first_seq: int, payloads: Sequence[Payload]) -> Accept:
        """Apply client messages in Redis (once, cluster-wide), then deliver them here."""
        # Unfenced (epoch 0): a client message is applied once whichever hub applies it.
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
        echoes = payloads[applied.first : applied.first + applied.count]
        for payload in echoes:
            session.applied(payload)
        if applied.full:
            session.end(f"client fell {self._settings.replay_limit} messages behind", code=1008)
        elif applied.echoes is not None and applied.echoes.entry > 0:
            placed = applied.echoes
            self._take(placed.entry, session.id, placed.index, placed.tag, echoes)
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
        view = self._views.get(session.id)
        if view is not None and view.session is session:
            del self._views[session.id]
        if forget and self._store is not None:
            self._spawn(self._forget(session.id), "rxconn cluster forget")

    # ---------------------------------------------------------------- Hub API

    async def send(self, session_id: str, payload: Payload) -> int:
        """Append ``payload`` for ``session_id`` in Redis (wherever its link is); its seq.

        Concurrent sends share round trips (they queue with this hub's other sends,
        in order). A write whose reply was lost is retried with the same counter
        (so it applies once) for up to :data:`SEND_PATIENCE` seconds.

        Raises:
            ConnectionClosedError: no such session.
            BufferFullError: its client is ``replay_limit`` messages behind.
            Unavailable: Redis could not be reached for ``SEND_PATIENCE`` seconds
                (the message may or may not have been appended).
        """
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._enqueue(_Send(session_id, payload, self._registry.get(session_id), done))
        self._awaited.add(done)
        done.add_done_callback(self._awaited.discard)
        return await done

    def broadcast(self, payload: Payload) -> int:
        """Queue ``payload`` for every session of every hub; returns this hub's share."""
        self.queue(None, payload)
        return len(self._views)

    def shutdown(self) -> None:
        """This hub leaves: its views end here only (clients resume on other hubs)."""
        for session in self._registry.live():
            session.end("hub shutting down", code=1001, here_only=True)

    # ------------------------------------------------------------ the views

    def _session(
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

    def _own(self, session: Session, stored: Stored) -> None:
        """``session`` is this hub's now: numbered on from what the claim read."""
        view = self._views.get(session.id)
        if view is None or view.session is not session:
            view = _View(session, stored.joined, stored.outgoing.directs)
            self._views[session.id] = view
        self._sync(view, stored.outgoing)
        if self._passed > stored.since:
            # Entries that may concern it were taken before the view existed (a
            # broadcast, a message for a session without a view): read what it lacks.
            self._pull_soon(session)

    def _sync(self, view: _View, outgoing: Outgoing) -> None:
        """Number what Redis says follows into the view (those it lacks), and wake its link."""
        if outgoing.seq <= view.seq:
            return
        messages = outgoing.messages
        start = messages[0][0] if messages else outgoing.seq + 1
        if start > view.seq + 1:
            # The client has more than this view numbered (another hub served it in
            # between, and this view had not heard yet): go on after what it has.
            log = view.session.log
            log.ack(view.seq)
            log.restart(start)
        for seq, payload in messages:
            if seq > view.seq and not self._push(view, payload):
                return
        view.directs = outgoing.directs
        self._wake(view.session)
        self._flush_wakes()

    def _push(self, view: _View, payload: Payload) -> bool:
        """Number ``payload`` next in the view's log; False if that ended the session."""
        session = view.session
        link = session.link
        written = link.cursor if link is not None and session.kind == "eventsource" else 0
        try:
            session.log.push(payload, evict_upto=written)
        except BufferFullError:
            session.end(f"client fell {self._settings.replay_limit} messages behind", code=1008)
            return False
        return True

    def _direct(self, view: _View, index: int, tag: int, payload: Payload) -> None:
        """The direct message ``index`` (after broadcast ``tag``) for ``view``'s session."""
        if index <= view.directs:
            return  # the view has it
        if index != view.directs + 1 or tag != view.broadcasts:
            self._pull_soon(view.session)  # something came before it that the view lacks
            return
        view.directs += 1
        if self._push(view, payload):
            self._wake(view.session)

    def _directs(self, view: _View, index: int, tag: int, payloads: Iterable[Payload]) -> None:
        """Direct messages ``index``, ``index + 1``, … (all after broadcast ``tag``)."""
        for offset, payload in enumerate(payloads):
            self._direct(view, index + offset, tag, payload)

    def _fan_out(self, number: int, payload: Payload) -> None:
        """Broadcast ``number`` (the inbox entry just taken) for every view."""
        for view in list(self._views.values()):
            self._broadcast(view, number, payload)
        self._passed = self._read  # a view claimed a moment later may lack it

    def _broadcast(self, view: _View, number: int, payload: Payload) -> None:
        """Broadcast ``number`` for ``view``'s session."""
        have = view.broadcasts
        if number <= have:
            return
        if number != have + 1:
            self._pull_soon(view.session)
            return
        if self._push(view, payload):
            self._wake(view.session)

    def _wake(self, session: Session) -> None:
        self._woken.add(session)

    def _flush_wakes(self) -> None:
        woken, self._woken = self._woken, set()
        for session in woken:
            link = session.link
            if link is not None and not session.ended:
                link.wake()

    # ------------------------------------------------------------ the inbox

    def _take(
        self, entry: int, session_id: str, index: int, tag: int, payloads: Sequence[Payload]
    ) -> None:
        """This hub's own append (inbox ``entry``): take it now if it is the next entry,
        with the replies that came early and follow it; else keep it until its turn (the
        inbox loop takes it then, or this does once the entries before it are in)."""
        if entry <= self._read:
            return
        if entry != self._read + 1:
            if len(self._early) < EARLY_LIMIT:
                self._early[entry] = (session_id, index, tag, payloads)
            return
        while True:
            self._read = entry
            view = self._views.get(session_id)
            if view is None:
                self._passed = entry
            else:
                self._directs(view, index, tag, payloads)
            early = self._early.pop(entry + 1, None)
            if early is None:
                break
            entry += 1
            session_id, index, tag, payloads = early
        self._flush_wakes()

    def _appended(self, session_id: str, payload: Payload, result: Appended) -> None:
        if result.entry > 0:
            self._take(result.entry, session_id, result.index, result.tag, (payload,))
        elif result.entry < 0:  # a retry of an append that happened: read it back
            view = self._views.get(session_id)
            if view is not None:
                self._pull_soon(view.session)

    async def _inbox_loop(self) -> None:
        """Read this hub's inbox in order; resync the views after a lapse."""
        clock = asyncio.get_running_loop()
        beaten = -BEAT_INTERVAL
        while True:
            _unless_cancelled()
            try:
                if clock.time() - beaten >= BEAT_INTERVAL:
                    if await self.store.beat(self._read) and self._beaten.is_set():
                        self._resync("this hub was dropped from the cluster's registry")
                    beaten = clock.time()
                    self._beaten.set()
                answer: Any = await self.backplane.client.xread(
                    {self.store.inbox: f"{self._read}-0"},
                    block=int(BEAT_INTERVAL * 1000),
                    count=1000,
                )
            except RedisError:
                _unless_cancelled()
                await asyncio.sleep(RETRY)
                continue
            for _, entries in answer or ():
                for entry_id, fields in entries:
                    number = int(bytes(entry_id).split(b"-", 1)[0])
                    if number <= self._read:
                        continue  # taken already (this hub's own append)
                    if number != self._read + 1:
                        self._resync("inbox entries were trimmed unread")
                    self._read = number
                    self._early.pop(number, None)
                    self._entry(fields)
            if self._early and min(self._early) <= self._read:
                self._early = {n: e for n, e in self._early.items() if n > self._read}
            self._flush_wakes()

    def _entry(self, fields: dict[bytes, bytes]) -> None:
        kind = fields[b"k"]
        if kind == b"b":
            number = int(fields[b"b"])
            self._fan_out(number, next(iter_entry_payloads(fields)))
            return
        view = self._views.get(fields[b"s"].decode())
        if view is None:
            if kind == b"m":
                self._passed = self._read
            return
        if kind == b"m":
            self._directs(view, int(fields[b"i"]), int(fields[b"b"]), iter_entry_payloads(fields))
        elif kind == b"a":
            view.session.log.ack(int(fields[b"a"]))
        elif kind == b"!" and int(fields[b"e"]) > view.session.protocol.epoch:
            self._release(view.session, "taken over by another hub")

    def _resync(self, why: str) -> None:
        logger.warning("rxconn: %s; reading every session's state again", why)
        for view in list(self._views.values()):
            self._pull_soon(view.session)

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
        """Read what Redis has for the view after its position (until nothing is new)."""
        try:
            while not session.ended:
                _unless_cancelled()
                self._pull_again.discard(session.id)
                view = self._views.get(session.id)
                if view is None or view.session is not session:
                    return
                try:
                    epoch, acked, outgoing = await self.store.read(
                        session.id, view.seq, view.directs, view.joined
                    )
                except UnknownSession:
                    session.end("session unknown to Redis", code=1008, here_only=True)
                    return
                except RedisError:
                    _unless_cancelled()
                    await asyncio.sleep(RETRY)
                    continue
                if epoch != session.protocol.epoch:
                    self._release(session, "taken over by another hub")
                    return
                session.log.ack(acked)
                if outgoing is None:
                    session.end("messages for the client are gone from Redis", code=1008)
                    return
                self._sync(view, outgoing)
                if session.id not in self._pull_again:
                    return
        finally:
            self._pulling.discard(session.id)

    async def _registered(self) -> None:
        """Wait (briefly) for this hub's first heartbeat: before it, no inbox is fed."""
        if not self._beaten.is_set():
            try:
                async with asyncio.timeout(REGISTER_TIMEOUT):
                    await self._beaten.wait()
            except TimeoutError:
                raise Unavailable("this hub is not registered with Redis yet") from None

    # ------------------------------------------------------------- internals

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
        """Append queued sends to Redis in order, many per round trip; a failure is retried
        with the same counters (so it applies once), never skipped."""
        outgoing = self._outgoing
        while True:
            _unless_cancelled()
            await self._outgoing_ready.wait()
            self._outgoing_ready.clear()
            while outgoing:
                if outgoing[0].session_id is None:
                    await self._publish_broadcast(outgoing[0].payload)
                    outgoing.popleft()
                    continue
                batch: list[_Send] = []
                for item in itertools.islice(outgoing, SEND_BATCH):
                    if item.session_id is None:
                        break
                    batch.append(item)
                for _ in batch:
                    outgoing.popleft()
                await self._append_batch(batch)

    async def _append_batch(self, batch: list[_Send]) -> None:
        counters = list(self.store.counters(len(batch)))
        clock = asyncio.get_running_loop()
        deadline = clock.time() + SEND_PATIENCE
        while batch:
            items = [(item.session_id or "", item.payload) for item in batch]
            try:
                results = await self.store.append_many(items, counters)
            except RedisError as exc:
                _unless_cancelled()
                if clock.time() >= deadline:
                    batch, counters = self._give_up_awaited(batch, counters, exc)
                await asyncio.sleep(RETRY)
                continue
            for n, (item, result) in enumerate(zip(batch, results, strict=True)):
                if not isinstance(result, Appended | BufferFullError | UnknownSession):
                    # Not an answer (a connection error inside the pipeline): this one
                    # and the rest again, with the same counters (a repeat is a no-op).
                    batch, counters = batch[n:], counters[n:]
                    await asyncio.sleep(RETRY)
                    break
                self._sent(item, result)
            else:
                return

    @staticmethod
    def _give_up_awaited(
        batch: list[_Send], counters: list[int], exc: Exception
    ) -> tuple[list[_Send], list[int]]:
        """Awaited sends give up (their callers learn it); queued ones wait on."""
        kept_batch, kept_counters = [], []
        for item, counter in zip(batch, counters, strict=True):
            if item.done is None:
                kept_batch.append(item)
                kept_counters.append(counter)
            elif not item.done.done():
                item.done.set_exception(Unavailable(str(exc)))
        return kept_batch, kept_counters

    def _sent(self, item: _Send, result: Appended | BaseException) -> None:
        session, done = item.session, item.done
        if isinstance(result, Appended):
            self._appended(item.session_id or "", item.payload, result)
            if done is not None and not done.done():
                done.set_result(result.seq)
            return
        if done is not None:
            if not done.done():
                gone = isinstance(result, UnknownSession)
                done.set_exception(ConnectionClosedError() if gone else result)
        elif isinstance(result, BufferFullError) and session is not None:
            session.end(f"client fell {self._settings.replay_limit} behind", code=1008)
        elif isinstance(result, UnknownSession) and session is not None:
            session.end("session unknown to Redis", code=1008, here_only=True)

    async def _publish_broadcast(self, payload: Payload) -> None:
        counter = self.store.counters(1)[0]
        while True:
            try:
                number, entry = await self.store.broadcast(payload, counter)
                break
            except RedisError:
                _unless_cancelled()
                await asyncio.sleep(RETRY)
        if entry and entry == self._read + 1:
            self._read = entry
            self._fan_out(number, payload)
            self._flush_wakes()

    async def _ack_loop(self) -> None:
        """Write the latest acknowledgement of each session to Redis (coalesced)."""
        while True:
            _unless_cancelled()
            await self._acks_ready.wait()
            self._acks_ready.clear()
            batch, self._acks = self._acks, {}
            sessions = list(batch.values())
            try:
                # Acks are monotonic: unfenced, and a repeat is harmless.
                results = await self.store.ack_many([(s.id, s.log.acked) for s in sessions])
            except RedisError:
                _unless_cancelled()
                results = [RedisError()] * len(sessions)
            for session, result in zip(sessions, results, strict=True):
                if result is not None and not isinstance(result, UnknownSession):
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
            for view in list(self._views.values()):
                session = view.session
                if session.link is None:
                    continue
                state = SessionState(session.id, session.key, epoch=session.protocol.epoch)
                try:
                    await self.store.touch(state)
                except Fenced:
                    self._release(session, "taken over by another hub")
                except (UnknownSession, RedisError):
                    _unless_cancelled()
                    pass  # gone (its link learns on its next write), or Redis is away


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
