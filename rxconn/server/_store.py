"""RedisSessionStore: hub session state kept in Redis, changed only by atomic scripts.

The state of a hub session (issue 13) in two keys that share a hash tag:

* ``{prefix}:{<sid>}:meta``, a hash: ``id``, ``key`` (the secret), ``kind``,
  ``token`` (a browser session's resume token), ``in`` (the last client message
  applied), ``epoch`` (the fencing token of the hub that owns the session's
  link), ``owner`` (that hub's id), and the outgoing side: ``dn`` (direct
  messages appended), ``joined`` (the broadcast count when the session began),
  ``acked`` (the last hub message the client acknowledged) and ``ad`` (how many
  direct messages that acknowledgement covers);
* ``{prefix}:{<sid>}:out``, a stream of the *direct* hub messages (sends to this
  session, echoes) not yet acknowledged, with entry ids ``<n>-0`` (the n-th
  direct message) and a field ``b``: how many broadcasts there were when it was
  appended.

Broadcasts are not copied into each session: they are numbered ``1, 2, …`` in
one capped stream ``{prefix}:broadcast``. A session's hub messages are then
*every* broadcast after ``joined`` and its direct messages, in the one order
Redis gave them (a direct message tagged ``b`` comes after broadcast ``b`` and
before ``b + 1``), so every hub numbers them the same way (:func:`merge`): the
client's sequence number of a message is a function of what Redis holds, and a
hub that dies after delivering one loses nothing another hub cannot rebuild.

Each live hub has an *inbox* stream ``{prefix}:inbox:<hub>`` with entry ids
``<n>-0`` (``n`` counts up by one, so a hub sees a missed entry), fed in the
same script as the change it reports: a direct message for a session it owns
(with the payloads: no read back), every broadcast, a takeover of one of its
sessions (``!``, it is fenced), an acknowledgement taken by another hub. A hub
reads its inbox in order, which is the order Redis applied those changes in, so
broadcasts and direct messages interleave in each view exactly as :func:`merge`
says. Live hubs are the members of the sorted set ``{prefix}:hubs`` (score: the
time their registration expires), renewed by each hub's heartbeat (:meth:`beat`).

Every change is one Lua script, so nothing is ever half done when a hub dies:
applying a client batch advances ``in`` *and* appends the echoes in one step
(an echo exists exactly once per client message, cluster-wide); a hub's sends
and broadcasts carry a per-hub counter, so a script retried after a lost reply
applies once; and every write that only the link's owner may make checks the
caller's ``epoch``: a takeover (:meth:`claim`) increments it, and the old
owner's late writes are refused (Kleppmann's fencing tokens). Every session key
expires ``grace`` seconds after it was last touched; the owner touches them
while it holds the link.

The scripts touch keys outside one hash slot (the broadcast stream, inboxes):
one Redis server (or a replicated pair behind Sentinel), not Redis Cluster.
redis-py's ``Script`` objects send EVALSHA and load the script again on
NOSCRIPT, which is exactly what happens after Redis restarts.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
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
    "Outgoing",
    "RedisSessionStore",
    "Stored",
    "UnknownSession",
    "decode_payload",
    "encode_payload",
    "merge",
]

Args = list[bytes | str | int]
"""A script's arguments."""

TEXT: Final = b"t"
BINARY: Final = b"b"
HUB_TTL: Final = 15.0
"""Seconds a hub stays registered (and its inbox kept) after its last heartbeat."""
BROADCAST_KEEP: Final = 10_000
"""Broadcasts kept for sessions that resume (at least the replay limit)."""
INBOX_KEEP: Final = 200_000
"""Entries an inbox keeps unread before the oldest are trimmed (the hub then re-reads)."""


class UnknownSession(Exception):
    """No such session (expired, ended, Redis lost it), or the key is not its key: 410."""


class Fenced(Exception):
    """The caller's epoch is stale: another hub took the session's link over."""


@dataclass(slots=True)
class Outgoing:
    """A session's hub messages read from Redis after a position, and the position after them.

    A position is ``(seq, directs)``: the last message numbered and how many of
    the messages up to it were direct ones (the rest are broadcasts).
    """

    messages: list[tuple[int, Payload]] = field(default_factory=list)
    seq: int = 0
    directs: int = 0


@dataclass(frozen=True, slots=True)
class Stored:
    """A session created or claimed in Redis: its state, and what its view starts from."""

    state: SessionState
    kind: SessionKind
    """``"eventsource"`` for a browser session, else ``"rxconn"``."""
    token: str | None
    joined: int
    """Broadcasts before the session began (its first is ``joined + 1``)."""
    since: int
    """The owner's inbox entry last before the claim: later ones are news to the view."""
    outgoing: Outgoing
    """What the client lacks (after its cursor), and the position after the last of it."""


@dataclass(frozen=True, slots=True)
class Appended:
    """Where :meth:`RedisSessionStore.append` put a message: direct index, tag, inbox entry."""

    index: int
    tag: int
    """How many broadcasts came before it."""
    entry: int
    """This hub's inbox entry that carries it (0: another hub or none owns the session;
    -1: a repeat of an append that happened, whose reply was lost)."""
    seq: int
    """Its sequence number for the client (0 for a repeat)."""


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
    """The echo found the session's replay full: the rest of the batch was not applied."""
    echoes: Appended | None = None
    """Where the echoes went (the first one's index; ``seq`` is 0), if any were appended."""


# Shared by every script: the time, inbox entries, and the acknowledgement rule.
_PRELUDE: Final = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- An entry for hub `hub`, if it is alive; returns its number, or 0.
local function notify(prefix, hub, fields)
  if not hub or hub == '' then return 0 end
  local expires = redis.call('ZSCORE', prefix .. ':hubs', hub)
  if not expires or tonumber(expires) < now_ms() then return 0 end
  local n = redis.call('HINCRBY', prefix .. ':hub:' .. hub, 'n', 1)
  local inbox = prefix .. ':inbox:' .. hub
  redis.call('XADD', inbox, 'MAXLEN', '~', {INBOX_KEEP}, n .. '-0', unpack(fields))
  redis.call('PEXPIRE', inbox, {HUB_TTL_MS})
  return n
end
-- The client has every hub message up to `a`: forget the direct ones it covers.
-- meta: {joined, dn, ad, acked}; returns the new {ad, acked}.
local function ack_to(out, joined, dn, ad, acked, a)
  if a <= acked then return ad, acked end
  -- at most a - acked direct messages are covered: read no more than that
  for _, e in ipairs(redis.call('XRANGE', out, (ad + 1) .. '-0', '+', 'COUNT', a - acked)) do
    local tag = 0
    for j = 1, #e[2], 2 do
      if e[2][j] == 'b' then tag = tonumber(e[2][j + 1]) end
    end
    if ad + 1 + tag - joined > a then break end
    ad = ad + 1
  end
  redis.call('XTRIM', out, 'MINID', ad + 1)
  return ad, a
end
local function broadcasts(prefix)
  return tonumber(redis.call('GET', prefix .. ':bcount') or '0')
end
""".replace("{INBOX_KEEP}", str(INBOX_KEEP)).replace("{HUB_TTL_MS}", str(int(HUB_TTL * 1000)))

# KEYS[1] meta; ARGV: id, key, kind, token, grace(ms), owner, prefix -> {joined, since} | 0
_CREATE: Final = (
    _PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local joined = broadcasts(ARGV[7])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'key', ARGV[2], 'kind', ARGV[3], 'token', ARGV[4],
           'in', 0, 'dn', 0, 'ad', 0, 'acked', 0, 'joined', joined, 'epoch', 1, 'owner', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {joined, tonumber(redis.call('HGET', ARGV[7] .. ':hub:' .. ARGV[6], 'n') or '0')}
"""
)

# KEYS[1] meta, KEYS[2] out; ARGV: secret, last (hub messages the client has), grace(ms),
#   owner, prefix, limit
# -> {meta hash (flat), broadcasts, since, directs after ad, broadcasts after the ack}
#    | error UNKNOWN | error GAP
# The secret is the key (whose cursor acknowledges), or a browser session's resume token
# (which acknowledges nothing). A `last` below `acked` is a stale cursor (a later ack
# overtook it) for a key, a window that moved on for a token. The previous owner gets
# an inbox entry "!" (it is fenced).
_CLAIM: Final = (
    _PRELUDE
    + """
local meta = redis.call('HMGET', KEYS[1], 'key', 'token', 'owner', 'joined', 'dn', 'ad',
                        'acked', 'id', 'kind')
if not meta[1] then return redis.error_reply('UNKNOWN') end
local by_key = meta[1] == ARGV[1]
if not by_key and (not meta[2] or meta[2] == '' or meta[2] ~= ARGV[1]) then
  return redis.error_reply('UNKNOWN')
end
local prefix, limit = ARGV[5], tonumber(ARGV[6])
local joined, dn, ad, acked = tonumber(meta[4]), tonumber(meta[5]), tonumber(meta[6]),
                              tonumber(meta[7])
local count = broadcasts(prefix)
local total = dn + count - joined
local last = tonumber(ARGV[2])
if last > total then return redis.error_reply('GAP') end
if last < acked then
  if not by_key or meta[9] == 'eventsource' then return redis.error_reply('GAP') end
  last = acked
end
if by_key then
  ad, acked = ack_to(KEYS[2], joined, dn, ad, acked, last)
  redis.call('HSET', KEYS[1], 'ad', ad, 'acked', acked)
end
if total - last > limit then return redis.error_reply('GAP') end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[4])
if meta[3] and meta[3] ~= ARGV[4] then
  notify(prefix, meta[3], {'k', '!', 's', meta[8], 'e', epoch})
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local since = tonumber(redis.call('HGET', prefix .. ':hub:' .. ARGV[4], 'n') or '0')
local ab = acked - ad + joined
return {redis.call('HGETALL', KEYS[1]), count, since,
        redis.call('XRANGE', KEYS[2], (ad + 1) .. '-0', '+'),
        redis.call('XRANGE', prefix .. ':broadcast', (ab + 1) .. '-0', count .. '-0')}
"""
)

# KEYS[1] meta, KEYS[2] out; ARGV: prefix, directs (the view has), broadcasts (ditto)
# -> {epoch, acked, broadcasts, directs after, broadcasts after} | error UNKNOWN
_READ: Final = (
    _PRELUDE
    + """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'acked')
if not meta[1] then return redis.error_reply('UNKNOWN') end
local count = broadcasts(ARGV[1])
return {tonumber(meta[1]), tonumber(meta[2]), count,
        redis.call('XRANGE', KEYS[2], (tonumber(ARGV[2]) + 1) .. '-0', '+'),
        redis.call('XRANGE', ARGV[1] .. ':broadcast', (tonumber(ARGV[3]) + 1) .. '-0',
                   count .. '-0')}
"""
)

# Append `n` direct messages (pairs in `args` from `from`), or fewer if the replay is
# full; a browser session's replay is a window instead (its oldest are dropped).
# Returns how many, the first index, the broadcast count, the inbox entry (if `caller` owns
# the session, else 0) and the first one's sequence number.
_APPEND_DIRECT: Final = """
local function append_direct(prefix, meta, out, args, from, n, limit, caller)
  local m = redis.call('HMGET', meta, 'owner', 'kind', 'id', 'dn', 'ad', 'acked', 'joined')
  local dn, ad, acked, joined = tonumber(m[4]), tonumber(m[5]), tonumber(m[6]),
                                tonumber(m[7])
  local count = broadcasts(prefix)
  local pending = dn + count - joined - acked
  if pending + n > limit then
    if m[2] == 'eventsource' then
      ad, acked = ack_to(out, joined, dn, ad, acked, acked + math.min(pending, pending + n - limit))
      redis.call('HSET', meta, 'ad', ad, 'acked', acked)
    else
      n = math.max(0, limit - pending)
    end
  end
  if n == 0 then return 0, dn + 1, count, 0, 0 end
  local fields = {'k', 'm', 's', m[3], 'i', dn + 1, 'b', count}
  for j = 0, n - 1 do
    local t, d = args[from + 2 * j], args[from + 2 * j + 1]
    redis.call('XADD', out, (dn + 1 + j) .. '-0', 't', t, 'd', d, 'b', count)
    fields[#fields + 1] = 't' .. j
    fields[#fields + 1] = t
    fields[#fields + 1] = 'd' .. j
    fields[#fields + 1] = d
  end
  redis.call('HSET', meta, 'dn', dn + n)
  local ttl = redis.call('PTTL', meta)
  if ttl > 0 then redis.call('PEXPIRE', out, ttl) end
  local entry = notify(prefix, m[1], fields)
  if m[1] ~= caller then entry = 0 end
  return n, dn + 1, count, entry, dn + 1 + count - joined
end
"""

# KEYS[1] meta, KEYS[2] out; ARGV: epoch (0: any hub, unfenced), first seq, echo(0/1),
#   limit, grace(ms), prefix, caller, then pairs (type, data)
#   -> {in, index in the batch of the first applied, applied, full(0/1), the caller's
#       inbox entry of the echoes, their first direct index, their tag}
# Any hub may apply client messages (each is applied once, whoever applies it); echoes
# are direct messages, reported in the owner's inbox.
_APPLY: Final = (
    _PRELUDE
    + _APPEND_DIRECT
    + """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'in')
if not meta[1] then return redis.error_reply('UNKNOWN') end
if ARGV[1] ~= '0' and tonumber(meta[1]) ~= tonumber(ARGV[1]) then
  return redis.error_reply('FENCED')
end
local received = tonumber(meta[2])
local seq, echo, limit = tonumber(ARGV[2]), ARGV[3] == '1', tonumber(ARGV[4])
local skip = math.max(0, received + 1 - seq)
local offered = (#ARGV - 7) / 2
local applied = 0
if seq + skip == received + 1 then applied = math.max(0, offered - skip) end
local full, entry, index, tag = 0, 0, 0, 0
if echo and applied > 0 then
  local n
  n, index, tag, entry = append_direct(ARGV[6], KEYS[1], KEYS[2], ARGV, 8 + 2 * skip,
                                       applied, limit, ARGV[7])
  if n < applied then full = 1; applied = n end
end
received = received + applied
redis.call('HSET', KEYS[1], 'in', received)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
return {received, skip, applied, full, entry, index, tag}
"""
)

# KEYS[1] meta, KEYS[2] out; ARGV: type, data, limit, prefix, sender hub, sender counter
# -> {index, tag, the sender's inbox entry, seq} | error UNKNOWN | error FULL. A counter
# the sender already used is a retry of an append that happened: {0, 0, -1, 0}.
_APPEND: Final = (
    _PRELUDE
    + _APPEND_DIRECT
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('UNKNOWN') end
local sent = 'x:' .. ARGV[5]
if tonumber(redis.call('HGET', KEYS[1], sent) or '0') >= tonumber(ARGV[6]) then
  return {0, 0, -1, 0}
end
local n, index, count, entry, seq = append_direct(ARGV[4], KEYS[1], KEYS[2], ARGV, 1, 1,
                                                  tonumber(ARGV[3]), ARGV[5])
if n == 0 then return redis.error_reply('FULL') end
redis.call('HSET', KEYS[1], sent, ARGV[6])
return {index, count, entry, seq}
"""
)

# KEYS[1] meta, KEYS[2] out; ARGV: epoch (0: any hub, unfenced), seq, caller, prefix
#   -> pending | error. An ack taken by another hub than the owner (a POST that landed
#   elsewhere) is reported in the owner's inbox, which then forgets what it kept.
_ACK: Final = (
    _PRELUDE
    + """
local m = redis.call('HMGET', KEYS[1], 'epoch', 'joined', 'dn', 'ad', 'acked', 'owner', 'id')
if not m[1] then return redis.error_reply('UNKNOWN') end
if ARGV[1] ~= '0' and tonumber(m[1]) ~= tonumber(ARGV[1]) then
  return redis.error_reply('FENCED')
end
local joined, dn, ad, acked = tonumber(m[2]), tonumber(m[3]), tonumber(m[4]), tonumber(m[5])
local total = dn + broadcasts(ARGV[4]) - joined
local seq = math.min(tonumber(ARGV[2]), total)
if seq > acked then
  ad, acked = ack_to(KEYS[2], joined, dn, ad, acked, seq)
  redis.call('HSET', KEYS[1], 'ad', ad, 'acked', acked)
  if m[6] and m[6] ~= ARGV[3] then
    notify(ARGV[4], m[6], {'k', 'a', 's', m[7], 'a', acked})
  end
end
return total - acked
"""
)

# KEYS[1] meta, KEYS[2] out; ARGV: epoch, grace(ms)
_TOUCH: Final = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return redis.error_reply('UNKNOWN') end
if tonumber(epoch) ~= tonumber(ARGV[1]) then return redis.error_reply('FENCED') end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 1
"""

# ARGV: prefix, type, data, keep, sender hub, sender counter -> {the broadcast's number,
# the sender's inbox entry} ({0, 0}: a retry of one that happened). One entry in the
# broadcast stream, one in each live hub's inbox (with the payload).
_BROADCAST: Final = (
    _PRELUDE
    + """
local prefix = ARGV[1]
local me = prefix .. ':hub:' .. ARGV[5]
if tonumber(redis.call('HGET', me, 'x') or '0') >= tonumber(ARGV[6]) then return {0, 0} end
redis.call('HSET', me, 'x', ARGV[6])
local count = redis.call('INCR', prefix .. ':bcount')
redis.call('XADD', prefix .. ':broadcast', 'MAXLEN', '~', ARGV[4], count .. '-0',
           't', ARGV[2], 'd', ARGV[3])
local fields = {'k', 'b', 'b', count, 't0', ARGV[2], 'd0', ARGV[3]}
local mine = 0
for _, hub in ipairs(redis.call('ZRANGEBYSCORE', prefix .. ':hubs', now_ms(), '+inf')) do
  local n = notify(prefix, hub, fields)
  if hub == ARGV[5] then mine = n end
end
return {count, mine}
"""
)

# ARGV: prefix, hub, inbox entries read, ttl(ms) -> 1 if the hub was not registered (it
# is new, or it was away long enough to be dropped: it re-reads its sessions), else 0.
# Hubs whose registration lapsed are dropped with their inbox.
_BEAT: Final = (
    _PRELUDE
    + """
local prefix, hub = ARGV[1], ARGV[2]
local hubs, now = prefix .. ':hubs', now_ms()
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', hubs, '-inf', '(' .. now)) do
  redis.call('DEL', prefix .. ':inbox:' .. gone, prefix .. ':hub:' .. gone)
end
redis.call('ZREMRANGEBYSCORE', hubs, '-inf', '(' .. now)
local added = redis.call('ZADD', hubs, now + tonumber(ARGV[4]), hub)
local me = prefix .. ':hub:' .. hub
if added == 1 and tonumber(redis.call('HGET', me, 'n') or '0') < tonumber(ARGV[3]) then
  redis.call('HSET', me, 'n', ARGV[3])
end
redis.call('PEXPIRE', me, ARGV[4])
redis.call('PEXPIRE', prefix .. ':inbox:' .. hub, ARGV[4])
return added
"""
)


class RedisSessionStore:
    """Hub sessions in Redis; see the module docstring for the keys and the rules.

    Args:
        client: The backplane's Redis client (``RedisBackplane.client``).
        prefix: The namespace of the keys.
        grace: Seconds every key of a session lives after it was last touched.
        replay_limit: The most unacknowledged hub messages a session keeps
            (:class:`~rxconn.errors.BufferFullError` past it; never dropped).
        owner: This hub's id (sessions it creates or claims report to its inbox).
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
        """This hub's id: the owner a claim records, so changes from any hub reach its inbox."""
        self.inbox = f"{prefix}:inbox:{owner}"
        """This hub's inbox stream."""
        self.grace_ms = max(1, int(grace * 1000))
        self.replay_limit = replay_limit
        self._sent = 0  # this hub's counter of sends and broadcasts (retries apply once)
        self._create = client.register_script(_CREATE)
        self._claim = client.register_script(_CLAIM)
        self._read = client.register_script(_READ)
        self._apply = client.register_script(_APPLY)
        self._append = client.register_script(_APPEND)
        self._ack = client.register_script(_ACK)
        self._touch = client.register_script(_TOUCH)
        self._broadcast = client.register_script(_BROADCAST)
        self._beat = client.register_script(_BEAT)

    def keys(self, session: str) -> list[str]:
        """The session's keys: ``[meta, out]``, in one hash slot."""
        tag = f"{self.prefix}:{{{session}}}"
        return [f"{tag}:meta", f"{tag}:out"]

    # ---------------------------------------------------------------- hubs

    async def beat(self, read: int) -> bool:
        """Keep this hub registered (its inbox fed) for :data:`HUB_TTL` more seconds;
        ``read``: the last inbox entry it read. True if it was not registered."""
        args: Args = [self.prefix, self.owner, read, int(HUB_TTL * 1000)]
        return bool(await self._beat(keys=[], args=args))

    async def leave(self) -> None:
        """This hub stops: no more inbox entries for it."""
        await self._client.zrem(f"{self.prefix}:hubs", self.owner)
        await self._client.delete(self.inbox, f"{self.prefix}:hub:{self.owner}")

    async def broadcast(self, payload: Payload, counter: int) -> tuple[int, int]:
        """Number ``payload`` for every session (any hub): its broadcast number, and this
        hub's inbox entry for it (0 if none; both 0 for a repeat of ``counter``, one of
        :meth:`counters`, after a lost reply).

        :data:`BROADCAST_KEEP` (at least ``replay_limit``) are kept for sessions
        that resume; each live hub's inbox gets it at once.
        """
        kind, data = encode_payload(payload)
        keep = max(self.replay_limit, BROADCAST_KEEP)
        args: Args = [self.prefix, kind, data, keep, self.owner, counter]
        count, entry = await self._broadcast(keys=[], args=args)
        return int(count), int(entry)

    # ------------------------------------------------------------ sessions

    async def create(self, kind: str) -> Stored:
        """A new session owned by this hub (``kind`` ``"eventsource"`` gets a resume token)."""
        while True:
            session, key = secrets.token_urlsafe(12), secrets.token_urlsafe(18)
            token = secrets.token_urlsafe(12) if kind == "eventsource" else ""
            args: Args = [session, key, kind, token, self.grace_ms, self.owner, self.prefix]
            created = await self._create(keys=self.keys(session)[:1], args=args)
            if created:
                joined, since = (int(x) for x in created)
                state = SessionState(session, key, epoch=1)
                stored_kind: SessionKind = "eventsource" if kind == "eventsource" else "rxconn"
                return Stored(state, stored_kind, token or None, joined, since, Outgoing())

    async def claim(self, session: str, key: str, last: int) -> Stored:
        """Take the session's link over (fencing every earlier owner); ``last``: what the
        client has of the hub's messages, which is acknowledged (``key`` may be a browser
        session's resume token, which acknowledges nothing).

        Returns the session's state, whose ``epoch`` the caller presents with
        every later write (:meth:`apply`, :meth:`ack`, :meth:`touch`), and the
        messages after ``last``.

        Raises:
            UnknownSession: no such session, the wrong key, or ``last`` asks for
                messages no longer kept (or never sent).
        """
        args: Args = [key, last, self.grace_ms, self.owner, self.prefix, self.replay_limit]
        try:
            flat, count, since, directs, sent = await self._claim(
                keys=self.keys(session), args=args
            )
        except ResponseError as exc:
            raise UnknownSession(str(exc)) from exc
        pairs = zip(flat[::2], flat[1::2], strict=True)
        fields = {bytes(k).decode(): bytes(v).decode() for k, v in pairs}
        joined, acked, ad = int(fields["joined"]), int(fields["acked"]), int(fields["ad"])
        outgoing = merge(
            acked, ad, joined, _directs(directs), _broadcasts(sent), int(count), after=last
        )
        if outgoing is None:
            raise UnknownSession(f"GAP: messages after {last} of {session} are gone")
        fields["out"] = str(outgoing.seq)
        kind: SessionKind = "eventsource" if fields.get("kind") == "eventsource" else "rxconn"
        state = SessionState.from_fields(fields)
        return Stored(state, kind, fields.get("token") or None, joined, int(since), outgoing)

    async def read(
        self, session: str, seq: int, directs: int, joined: int
    ) -> tuple[int, int, Outgoing | None]:
        """The session's epoch, acknowledgement, and its messages after position
        ``(seq, directs)`` (None if some of them are gone).

        Raises:
            UnknownSession: the session is gone.
        """
        args: Args = [self.prefix, directs, seq - directs + joined]
        try:
            epoch, acked, count, entries, sent = await self._read(
                keys=self.keys(session), args=args
            )
        except ResponseError as exc:
            raise UnknownSession(str(exc)) from exc
        outgoing = merge(
            seq, directs, joined, _directs(entries), _broadcasts(sent), int(count), after=seq
        )
        return int(epoch), int(acked), outgoing

    async def view(self, session: str, key: str) -> Stored:
        """The session's state, read without taking its link (for a POST on any hub).

        Raises:
            UnknownSession: no such session, or ``key`` is not its key.
        """
        raw: Any = await self._client.hgetall(self.keys(session)[0])
        fields = {bytes(k).decode(): bytes(v).decode() for k, v in raw.items()}
        if not fields or not secrets.compare_digest(fields.get("key", ""), key):
            raise UnknownSession(session)
        kind: SessionKind = "eventsource" if fields.get("kind") == "eventsource" else "rxconn"
        state = SessionState.from_fields(fields)
        return Stored(state, kind, fields.get("token") or None, 0, 0, Outgoing())

    async def apply(
        self, claimed: SessionState, first_seq: int, payloads: list[Payload], *, echo: bool
    ) -> Applied:
        """Apply client messages numbered from ``first_seq``: repeats are skipped, a gap stops.

        With ``echo`` each applied message is appended to the session's outgoing
        messages in the same atomic step (so an echo exists exactly once per client
        message, whichever hub applied it); a full replay stops the batch there
        (``Applied.full``: the caller ends the session, as a local hub does).
        The caller delivers ``payloads[applied.first : applied.first + applied.count]``
        to its application.

        Raises:
            Fenced: another hub owns the link now (nothing was applied).
            UnknownSession: the session is gone.
        """
        args: Args = [
            claimed.epoch,
            first_seq,
            int(echo),
            self.replay_limit,
            self.grace_ms,
            self.prefix,
            self.owner,
        ]
        for payload in payloads:
            args += encode_payload(payload)
        received, first, count, full, entry, index, tag = await self._run(
            self._apply, claimed.id, args
        )
        if count == 0:
            return Applied(int(received), 0, 0, bool(full))
        echoes = Appended(int(index), int(tag), int(entry), 0) if echo else None
        return Applied(int(received), int(first), int(count), bool(full), echoes)

    async def append(self, session: str, payload: Payload) -> Appended:
        """Add ``payload`` to the session's hub messages (any hub may), reported to the
        hub that owns the session's link.

        Raises:
            BufferFullError: ``replay_limit`` messages already wait (nothing appended).
            UnknownSession: the session is gone.
        """
        (result,) = await self.append_many([(session, payload)], self.counters(1))
        if isinstance(result, BaseException):
            raise result
        return result

    def _append_args(self, payload: Payload, counter: int) -> Args:
        kind, data = encode_payload(payload)
        return [kind, data, self.replay_limit, self.prefix, self.owner, counter]

    async def append_many(
        self, items: Sequence[tuple[str, Payload]], counters: Sequence[int]
    ) -> list[Appended | BaseException]:
        """:meth:`append` each ``(session, payload)`` in order, in one round trip; each
        result is where it went, or the error (``BufferFullError``, ``UnknownSession``).

        ``counters`` (from :meth:`counters`) make a retry after a lost reply append
        nothing twice: Redis skips a counter of this hub it already applied
        (``entry == -1``), so retry with the same ones.
        """
        async with self._client.pipeline(transaction=False) as pipe:
            for (session, payload), counter in zip(items, counters, strict=True):
                args = self._append_args(payload, counter)
                await self._append(keys=self.keys(session), args=args, client=pipe)
            results = await pipe.execute(raise_on_error=False)
        out: list[Appended | BaseException] = []
        for result in results:
            if isinstance(result, ResponseError):
                full = "FULL" in str(result)
                out.append(
                    BufferFullError(self.replay_limit) if full else UnknownSession(str(result))
                )
            elif isinstance(result, BaseException):
                out.append(result)
            else:
                out.append(Appended(*(int(x) for x in result)))
        return out

    def counters(self, n: int) -> range:
        """``n`` fresh send counters of this hub (for :meth:`append_many`, :meth:`broadcast`)."""
        first = self._sent + 1
        self._sent += n
        return range(first, first + n)

    async def ack(self, claimed: SessionState, seq: int) -> int:
        """The client has every hub message up to ``seq``: forget them; returns how many remain."""
        args: Args = [claimed.epoch, seq, self.owner, self.prefix]
        return int(await self._run(self._ack, claimed.id, args))

    async def ack_many(self, acks: Sequence[tuple[str, int]]) -> list[BaseException | None]:
        """Unfenced :meth:`ack` of each ``(session, seq)``, in one round trip; each result
        is None, or the error (``UnknownSession``: nothing left to trim)."""
        async with self._client.pipeline(transaction=False) as pipe:
            for session, seq in acks:
                args: Args = [0, seq, self.owner, self.prefix]
                await self._ack(keys=self.keys(session), args=args, client=pipe)
            results = await pipe.execute(raise_on_error=False)
        return [
            UnknownSession(str(r))
            if isinstance(r, ResponseError)
            else None
            if not isinstance(r, BaseException)
            else r
            for r in results
        ]

    async def touch(self, claimed: SessionState) -> None:
        """The owner still holds the link: every key lives ``grace`` more seconds."""
        await self._run(self._touch, claimed.id, [claimed.epoch, self.grace_ms])

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


def merge(
    seq: int,
    directs: int,
    joined: int,
    direct: dict[int, tuple[int, Payload]],
    broadcast: dict[int, Payload],
    count: int,
    *,
    after: int,
) -> Outgoing | None:
    """A session's hub messages after position ``(seq, directs)`` in the one order every
    hub agrees on, numbered on from ``seq``, keeping those numbered ``> after``.

    ``direct`` maps each later direct message's index to ``(tag, payload)``, where
    the tag is how many broadcasts came before it; ``broadcast`` maps broadcast
    numbers to payloads (up to ``count``). A direct message tagged ``b`` comes
    right after broadcast ``b``. None if a message numbered ``> after`` is missing
    (trimmed): the client can no longer get it.
    """
    out = Outgoing(seq=seq, directs=directs)
    messages = out.messages
    b = seq - directs + joined
    d = directs
    while True:
        nxt = direct.get(d + 1)
        if nxt is not None and nxt[0] <= b:
            d += 1
            payload: Payload | None = nxt[1]
        elif b < count:
            b += 1
            payload = broadcast.get(b)
        else:
            break
        seq += 1
        if seq > after:
            if payload is None:
                return None
            messages.append((seq, payload))
    out.seq, out.directs = seq, d
    return out


def iter_entry_payloads(fields: dict[bytes, bytes]) -> Iterator[Payload]:
    """The payloads an inbox entry carries (``t0``/``d0``, ``t1``/``d1``, …), in order."""
    j = 0
    while True:
        kind = fields.get(b"t%d" % j)
        if kind is None:
            return
        yield decode_payload(kind, fields[b"d%d" % j])
        j += 1


def encode_payload(payload: Payload) -> tuple[bytes, bytes]:
    """A payload as a stream entry's type and data fields (text stays text, bytes bytes)."""
    if type(payload) is bytes:
        return BINARY, payload
    return TEXT, payload.encode()  # type: ignore[union-attr]


def decode_payload(kind: bytes, data: bytes) -> Payload:
    """The inverse of :func:`encode_payload`."""
    return bytes(data) if kind == BINARY else bytes(data).decode()


def _directs(entries: Any) -> dict[int, tuple[int, Payload]]:
    """Direct-message stream entries as ``{index: (tag, payload)}``."""
    out: dict[int, tuple[int, Payload]] = {}
    for entry_id, fields in entries:
        pairs = dict(zip(fields[::2], fields[1::2], strict=True))
        index = int(bytes(entry_id).split(b"-", 1)[0])
        out[index] = (int(pairs[b"b"]), decode_payload(pairs[b"t"], pairs[b"d"]))
    return out


def _broadcasts(entries: Any) -> dict[int, Payload]:
    """Broadcast stream entries as ``{number: payload}``."""
    out: dict[int, Payload] = {}
    for entry_id, fields in entries:
        pairs = dict(zip(fields[::2], fields[1::2], strict=True))
        out[int(bytes(entry_id).split(b"-", 1)[0])] = decode_payload(pairs[b"t"], pairs[b"d"])
    return out
