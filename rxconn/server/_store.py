"""RedisSessionStore: hub session state kept in Redis, changed only by atomic scripts.

The state of a hub session (issue 13) in two keys that share a hash tag, so
that a later Redis Cluster keeps them in one slot:

* ``{prefix}:{<sid>}:meta``, a hash: the session's
  :class:`~rxconn.session.SessionState` fields (``id``, ``key`` — the secret,
  ``in`` — the last client message applied, ``out`` — the last hub message
  numbered, ``acked`` — the last one the client acknowledged, ``epoch`` — the
  fencing token of the hub that owns the session's link), plus ``kind`` and
  ``token`` (a browser session's resume token);
* ``{prefix}:{<sid>}:out``, a stream of the hub messages not yet acknowledged,
  with entry ids ``<seq>-0``, so that a replay is ``XRANGE (<last> +``.

The hash also names the ``owner``, the hub whose claim was last: every append
publishes the session id on that hub's channel (``{prefix}:hub:<owner>``) so it
reads the new messages at once, and a claim by another hub publishes ``!`` and
the id on the old owner's channel, so it lets the link go without waiting for
a refused write. Pub/sub only wakes hubs; the messages themselves are in the
stream, so a lost wake-up delays, never loses.

Every change is one Lua script, so nothing is ever half done when a hub dies:
applying a client batch advances ``in`` *and* appends the echoes in one step
(an echo exists exactly once per client message, cluster-wide), and every
write that only the link's owner may make checks the caller's ``epoch``: a
takeover (:meth:`claim`) increments it, and the old owner's late writes are
refused (Kleppmann's fencing tokens). Every key expires ``grace`` seconds after
it was last touched; the owner touches them while it holds the link.

redis-py's ``Script`` objects send EVALSHA and load the script again on
NOSCRIPT, which is exactly what happens after Redis restarts.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from .._types import Payload
from ..errors import BufferFullError
from ..session import SessionState
from ._settings import SessionKind


__all__ = [
    "Applied",
    "Fenced",
    "RedisSessionStore",
    "Stored",
    "UnknownSession",
    "encode_payload",
]

TEXT: Final = b"t"
BINARY: Final = b"b"


class UnknownSession(Exception):
    """No such session (expired, ended, Redis lost it), or the key is not its key: 410."""


class Fenced(Exception):
    """The caller's epoch is stale: another hub took the session's link over."""


@dataclass(frozen=True, slots=True)
class Stored:
    """A session claimed from Redis: its state, kind, and a browser session's resume token."""

    state: SessionState
    kind: SessionKind
    """``"eventsource"`` for a browser session, else ``"rxconn"``."""
    token: str | None


@dataclass(frozen=True, slots=True)
class Applied:
    """What :meth:`RedisSessionStore.apply` did with a batch of client messages."""

    received: int
    """The last client message the session has now (the acknowledgement to send)."""
    first: int
    """Index in the batch of the first message applied (the ones before were repeats)."""
    count: int
    """How many were applied (new): deliver exactly these to the application."""
    full: bool
    """The echo found the outgoing stream full: the rest of the batch was not applied."""
    sent: int = 0
    """The last hub message numbered afterwards (the echoes are the last ``count`` of them)."""


# KEYS[1] meta, KEYS[2] out; ARGV: id, key, kind, token, grace(ms), owner
_CREATE: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'key', ARGV[2], 'kind', ARGV[3], 'token', ARGV[4],
           'in', 0, 'out', 0, 'acked', 0, 'epoch', 1, 'owner', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS[1] meta, KEYS[2] out; ARGV: secret, last (hub messages the client has), grace(ms),
#   owner, channel prefix
# -> the meta hash as a flat list | error UNKNOWN | error GAP (what the client needs is gone)
# The secret is the key, or a browser session's resume token. A `last` below `acked` is a
# stale cursor (a later ack overtook it): the client has `acked`. The previous owner is
# told on its channel ("!" + id) that it is fenced.
_CLAIM: Final = """
local meta = redis.call('HMGET', KEYS[1], 'key', 'out', 'acked', 'token', 'owner')
if not meta[1] then return redis.error_reply('UNKNOWN') end
if meta[1] ~= ARGV[1] and (not meta[4] or meta[4] == '' or meta[4] ~= ARGV[1]) then
  return redis.error_reply('UNKNOWN')
end
local last, out, acked = tonumber(ARGV[2]), tonumber(meta[2]), tonumber(meta[3])
if last > out then return redis.error_reply('GAP') end
if last < acked then last = acked end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first > 0 then
  local oldest = tonumber(string.match(first[1][1], '^(%d+)'))
  if last + 1 < oldest then return redis.error_reply('GAP') end
end
if meta[1] == ARGV[1] then
  redis.call('XTRIM', KEYS[2], 'MINID', last + 1)
  redis.call('HSET', KEYS[1], 'acked', last)
end
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[4])
if meta[5] and meta[5] ~= ARGV[4] then
  redis.call('PUBLISH', ARGV[5] .. meta[5], '!' .. redis.call('HGET', KEYS[1], 'id'))
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] meta, KEYS[2] out; ARGV: epoch (0: any hub, unfenced), first seq, echo(0/1),
#   limit, grace(ms), caller, channel prefix, then pairs (type, data)
#   -> {in, index of the first applied, applied, full(0/1), out}
# Any hub may apply client messages (each is applied once, whoever applies it); echoes
# appended by another hub than the owner wake the owner.
_APPLY: Final = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'in', 'out', 'owner', 'id')
if not meta[1] then return redis.error_reply('UNKNOWN') end
if ARGV[1] ~= '0' and tonumber(meta[1]) ~= tonumber(ARGV[1]) then
  return redis.error_reply('FENCED')
end
local received, out = tonumber(meta[2]), tonumber(meta[3])
local seq, echo, limit = tonumber(ARGV[2]), ARGV[3] == '1', tonumber(ARGV[4])
local applied, first, full = 0, 0, 0
for i = 8, #ARGV, 2 do
  if seq == received + 1 then
    if echo then
      if redis.call('XLEN', KEYS[2]) >= limit then full = 1; break end
      out = out + 1
      redis.call('XADD', KEYS[2], out .. '-0', 't', ARGV[i], 'd', ARGV[i + 1])
    end
    if applied == 0 then first = (i - 8) / 2 end
    received = seq
    applied = applied + 1
  elseif seq > received + 1 then
    break
  end
  seq = seq + 1
end
redis.call('HSET', KEYS[1], 'in', received, 'out', out)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
if echo and applied > 0 and meta[4] and meta[4] ~= ARGV[6] then
  redis.call('PUBLISH', ARGV[7] .. meta[4], meta[5])
end
return {received, first, applied, full, out}
"""

# KEYS[1] meta, KEYS[2] out; ARGV: type, data, limit, channel prefix, notify (0/1)
# -> seq | error UNKNOWN | error FULL. The owner hub is woken on its channel (the id).
# A browser session (kind eventsource) never acknowledges: its stream is a window.
_APPEND: Final = """
local meta = redis.call('HMGET', KEYS[1], 'owner', 'kind', 'id')
if not meta[3] then return redis.error_reply('UNKNOWN') end
if redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[3]) then
  if meta[2] ~= 'eventsource' then return redis.error_reply('FULL') end
  redis.call('XTRIM', KEYS[2], 'MAXLEN', tonumber(ARGV[3]) - 1)
end
local seq = redis.call('HINCRBY', KEYS[1], 'out', 1)
redis.call('XADD', KEYS[2], seq .. '-0', 't', ARGV[1], 'd', ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
if ARGV[5] == '1' and meta[1] then redis.call('PUBLISH', ARGV[4] .. meta[1], meta[3]) end
return seq
"""

# KEYS[1] meta, KEYS[2] out; ARGV: epoch (0: any hub, unfenced), seq, caller, channel
#   prefix -> remaining | error. An ack taken by another hub than the owner (a POST that
#   landed elsewhere) wakes the owner, which then forgets what it kept.
_ACK: Final = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'acked', 'out', 'owner', 'id')
if not meta[1] then return redis.error_reply('UNKNOWN') end
if ARGV[1] ~= '0' and tonumber(meta[1]) ~= tonumber(ARGV[1]) then
  return redis.error_reply('FENCED')
end
local seq = math.min(tonumber(ARGV[2]), tonumber(meta[3]))
if seq > tonumber(meta[2]) then
  redis.call('HSET', KEYS[1], 'acked', seq)
  redis.call('XTRIM', KEYS[2], 'MINID', seq + 1)
  if meta[4] and meta[4] ~= ARGV[3] then redis.call('PUBLISH', ARGV[4] .. meta[4], meta[5]) end
end
return redis.call('XLEN', KEYS[2])
"""

# KEYS[1] meta, KEYS[2] out; ARGV: epoch, grace(ms)
_TOUCH: Final = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return redis.error_reply('UNKNOWN') end
if tonumber(epoch) ~= tonumber(ARGV[1]) then return redis.error_reply('FENCED') end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 1
"""


class RedisSessionStore:
    """Hub sessions in Redis; see the module docstring for the keys and the rules.

    Args:
        client: The backplane's Redis client (``RedisBackplane.client``).
        prefix: The namespace of the keys.
        grace: Seconds every key of a session lives after it was last touched.
        replay_limit: The most unacknowledged hub messages a session keeps
            (:class:`~rxconn.errors.BufferFullError` past it; never dropped).
        owner: This hub's id (sessions it creates or claims are woken on its channel).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "rx",
        grace: float,
        replay_limit: int,
        owner: str = "",
    ) -> None:
        self._client = client
        self.prefix = prefix
        self.owner = owner
        """This hub's id: the owner a claim records, so appends from any hub wake it."""
        self.channels = f"{prefix}:hub:"
        """Each hub's wake-up channel is this plus its id."""
        self.grace_ms = max(1, int(grace * 1000))
        self.replay_limit = replay_limit
        self._create = client.register_script(_CREATE)
        self._claim = client.register_script(_CLAIM)
        self._apply = client.register_script(_APPLY)
        self._append = client.register_script(_APPEND)
        self._ack = client.register_script(_ACK)
        self._touch = client.register_script(_TOUCH)

    def keys(self, session: str) -> list[str]:
        """The session's keys: ``[meta, out]``, in one hash slot."""
        tag = f"{self.prefix}:{{{session}}}"
        return [f"{tag}:meta", f"{tag}:out"]

    async def create(self, kind: str) -> tuple[str, str, str | None]:
        """A new session: its public id, its key, and (for ``"eventsource"``) its resume token."""
        while True:
            session, key = secrets.token_urlsafe(12), secrets.token_urlsafe(18)
            token = secrets.token_urlsafe(12) if kind == "eventsource" else ""
            args: list[str | int] = [session, key, kind, token, self.grace_ms, self.owner]
            if await self._create(keys=self.keys(session), args=args):
                return session, key, token or None

    async def claim(self, session: str, key: str, last: int) -> Stored:
        """Take the session's link over (fencing every earlier owner); ``last``: what the
        client has of the hub's messages, which is acknowledged (``key`` may be a browser
        session's resume token, which acknowledges nothing).

        Returns the session's state, whose ``epoch`` the caller presents with
        every later write (:meth:`apply`, :meth:`ack`, :meth:`touch`).

        Raises:
            UnknownSession: no such session, the wrong key, or ``last`` asks for
                messages no longer kept (or never sent).
        """
        args: list[str | int] = [key, last, self.grace_ms, self.owner, self.channels]
        try:
            flat = await self._claim(keys=self.keys(session), args=args)
        except ResponseError as exc:
            raise UnknownSession(str(exc)) from exc
        pairs = zip(flat[::2], flat[1::2], strict=True)
        fields = {bytes(k).decode(): bytes(v).decode() for k, v in pairs}
        return _stored(fields)

    async def view(self, session: str, key: str) -> Stored:
        """The session's state, read without taking its link (for a POST on any hub).

        Raises:
            UnknownSession: no such session, or ``key`` is not its key.
        """
        raw: Any = await self._client.hgetall(self.keys(session)[0])
        fields = {bytes(k).decode(): bytes(v).decode() for k, v in raw.items()}
        if not fields or not secrets.compare_digest(fields.get("key", ""), key):
            raise UnknownSession(session)
        return _stored(fields)

    async def apply(
        self, claimed: SessionState, first_seq: int, payloads: list[Payload], *, echo: bool
    ) -> Applied:
        """Apply client messages numbered from ``first_seq``: repeats are skipped, a gap stops.

        With ``echo`` each applied message is appended to the session's outgoing
        stream in the same atomic step (so an echo exists exactly once per client
        message, whichever hub applied it); a full stream stops the batch there
        (``Applied.full``: the caller ends the session, as a local hub does).
        The caller delivers ``payloads[applied.first : applied.first + applied.count]``
        to its application.

        Raises:
            Fenced: another hub owns the link now (nothing was applied).
            UnknownSession: the session is gone.
        """
        args: list[bytes | str | int] = [
            claimed.epoch,
            first_seq,
            int(echo),
            self.replay_limit,
            self.grace_ms,
            self.owner,
            self.channels,
        ]
        for payload in payloads:
            args += encode_payload(payload)
        received, first, count, full, sent = await self._run(self._apply, claimed.id, args)
        return Applied(int(received), int(first), int(count), bool(full), int(sent))

    async def append(self, session: str, payload: Payload, *, notify: bool = True) -> int:
        """Number ``payload`` for the client and keep it until acknowledged (any hub may);
        with ``notify`` the hub that owns the session's link is woken on its channel.

        Raises:
            BufferFullError: ``replay_limit`` messages already wait (nothing appended).
            UnknownSession: the session is gone.
        """
        kind, data = encode_payload(payload)
        args: list[bytes | str | int] = [kind, data, self.replay_limit, self.channels, int(notify)]
        try:
            seq = await self._append(keys=self.keys(session), args=args)
        except ResponseError as exc:
            if "FULL" in str(exc):
                raise BufferFullError(self.replay_limit) from exc
            raise UnknownSession(str(exc)) from exc
        return int(seq)

    async def append_many(
        self, sessions: Sequence[str], payload: Payload
    ) -> list[int | BaseException]:
        """:meth:`append` ``payload`` to each session (no wake-ups), in one round trip; each
        result is the seq, or the error (``BufferFullError``, ``UnknownSession``)."""
        kind, data = encode_payload(payload)
        args: list[bytes | str | int] = [kind, data, self.replay_limit, self.channels, 0]
        async with self._client.pipeline(transaction=False) as pipe:
            for session in sessions:
                await self._append(keys=self.keys(session), args=args, client=pipe)
            results = await pipe.execute(raise_on_error=False)
        out: list[int | BaseException] = []
        for result in results:
            if isinstance(result, ResponseError):
                full = "FULL" in str(result)
                out.append(
                    BufferFullError(self.replay_limit) if full else UnknownSession(str(result))
                )
            elif isinstance(result, BaseException):
                out.append(result)
            else:
                out.append(int(result))
        return out

    async def ack(self, claimed: SessionState, seq: int) -> int:
        """The client has every hub message up to ``seq``: forget them; returns how many remain."""
        args = [claimed.epoch, seq, self.owner, self.channels]
        remaining = await self._run(self._ack, claimed.id, args)
        return int(remaining)

    async def touch(self, claimed: SessionState) -> None:
        """The owner still holds the link: every key lives ``grace`` more seconds."""
        await self._run(self._touch, claimed.id, [claimed.epoch, self.grace_ms])

    async def pull(self, session: str, seq: int) -> tuple[int, list[tuple[int, Payload]]]:
        """What the client acknowledged, and the kept hub messages numbered ``> seq``.

        Raises:
            UnknownSession: the session is gone.
        """
        meta, out = self.keys(session)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hget(meta, "acked")
            pipe.xrange(out, min=f"({seq}-0", max="+")
            acked, entries = await pipe.execute()
        if acked is None:
            raise UnknownSession(session)
        return int(acked), _entries(entries)

    async def after(self, session: str, seq: int) -> list[tuple[int, Payload]]:
        """The kept hub messages numbered ``> seq``, in order."""
        entries: Any = await self._client.xrange(self.keys(session)[1], min=f"({seq}-0", max="+")
        return _entries(entries)

    async def end(self, session: str) -> None:
        """Forget the session now (the client quit)."""
        await self._client.delete(*self.keys(session))

    async def _run(self, script: Any, session: str, args: list[Any]) -> Any:
        try:
            return await script(keys=self.keys(session), args=args)
        except ResponseError as exc:
            if "FENCED" in str(exc):
                raise Fenced(session) from exc
            raise UnknownSession(str(exc)) from exc


def _stored(fields: dict[str, str]) -> Stored:
    kind: SessionKind = "eventsource" if fields.get("kind") == "eventsource" else "rxconn"
    return Stored(SessionState.from_fields(fields), kind, fields.get("token") or None)


def encode_payload(payload: Payload) -> tuple[bytes, bytes]:
    """A payload as a stream entry's type and data fields (text stays text, bytes bytes)."""
    if type(payload) is bytes:
        return BINARY, payload
    return TEXT, payload.encode()  # type: ignore[union-attr]


def _entries(entries: Any) -> list[tuple[int, Payload]]:
    """Stream entries as ``(seq, payload)``: text stays text, bytes stay bytes."""
    out: list[tuple[int, Payload]] = []
    for entry_id, fields in entries:  # bytes: the client does not decode responses
        number = int(bytes(entry_id).split(b"-", 1)[0])
        data = bytes(fields[b"d"])
        out.append((number, data if fields[b"t"] == BINARY else data.decode()))
    return out
