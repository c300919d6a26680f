"""A loopback TCP proxy that injects network faults between an rxconn client and a hub.

Reliability tests put a :class:`FaultProxy` between the client and the hub and then break the
link on purpose: cut it (FIN or RST), make it a black hole, refuse new connections, add latency,
throttle it, or reset it after so many bytes. Everything runs on the test's event loop, listens
on a loopback address only, and :meth:`FaultProxy.close` leaves no task and no socket behind, so
tests can run with ``-W error`` (ResourceWarning fails them) and check for leaked tasks.

Design, per accepted connection (a *link*): one task owns the link; it wraps the accepted socket
in asyncio streams, connects upstream, then runs two *directions* (client to upstream, upstream
to client). Each direction is two tasks joined by a bounded queue: a reader that stamps every
chunk with the time it may leave (now + latency), and a writer that waits for that time, for the
black hole to lift and for the throttle, then writes and drains. Two stages give real latency
(chunks are in flight together, each delayed once, order preserved) instead of a delay that
accumulates per chunk; the bounded queue keeps backpressure end to end.

The listening socket is driven with ``loop.add_reader`` rather than ``asyncio.start_server`` so
that :meth:`FaultProxy.refuse` can stop and resume listening synchronously, on the same port.
This needs an event loop with ``add_reader`` (asyncio's default selector loop on Linux/macOS).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Final, Self


__all__ = ["FaultProxy"]

logger = logging.getLogger(__name__)

CHUNK: Final = 64 * 1024
"""Bytes read per forwarded chunk."""

_QUEUE_CHUNKS: Final = 64
"""Chunks in flight per direction (between read and write); bounds memory, keeps backpressure."""

_THROTTLE_SLICE: Final = 0.02
"""Seconds of traffic written at once when throttled, so a big chunk does not burst."""

_CLOSE_GRACE: Final = 1.0
"""Seconds a graceful close (cut, EOF both ways) may take to flush before it is aborted."""

_SHUTDOWN_GRACE: Final = 0.25
"""The same for FaultProxy.close(), which a test awaits in its teardown."""

_ACCEPT_BATCH: Final = 64
"""Most connections accepted per readiness callback, so one burst cannot starve the loop."""

_BACKLOG: Final = 128

_LINGER_RST: Final = struct.pack("ii", 1, 0)
"""SO_LINGER on with a zero timeout: close() then sends RST instead of FIN."""

_Item = tuple[float, bytes] | None
"""What flows from a direction's reader to its writer: (send-at time, data), or None for EOF."""


def _check_loopback(host: str, what: str) -> None:
    """Refuse anything but an IPv4 loopback literal, so a test can never expose a port."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{what} must be an IPv4 loopback address, not {host!r}") from None
    if address.version != 4 or not address.is_loopback:
        raise ValueError(f"{what} must be an IPv4 loopback address, not {host!r}")


def _reset_raw(sock: socket.socket) -> None:
    """Close a plain socket with RST (SO_LINGER 0) rather than FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    sock.close()


def _shut(writer: asyncio.StreamWriter, *, rst: bool) -> None:
    """Start closing a stream: FIN after flushing, or RST at once, dropping anything buffered."""
    if not rst:
        writer.close()
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed: nothing left to reset
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    writer.transport.abort()


class _Link:
    """One accepted client connection and, once connected, its upstream connection."""

    def __init__(self, sock: socket.socket, number: int) -> None:
        self.sock: socket.socket | None = sock
        """The accepted socket until the link task hands it to a transport (then None)."""
        self.number = number
        self.client: asyncio.StreamWriter | None = None
        self.upstream: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.down_bytes = 0
        """Bytes forwarded upstream to client so far (what drop_after counts)."""
        self.closed = False
        self.rst = False
        self.muted: bool | None = None
        """Whether the response is held after its headers (decided by the request's first bytes)."""
        self.head = b""
        """The last bytes of the response headers forwarded so far (to find their end)."""
        self.headers_done = False
        self.held = bytearray()
        """Response bytes held back after the headers, forwarded only when the response ends."""

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]


class _Direction:
    """Per-direction throttle state: the earliest time the next slice may be written."""

    def __init__(self, name: str, downstream: bool) -> None:
        self.name = name
        self.downstream = downstream
        self.next_free = 0.0


class FaultProxy:
    """A TCP proxy on a loopback address that forwards to ``upstream`` and injects faults.

    Faults are switched by plain (synchronous) methods, so a test can flip them between awaits:
    :meth:`cut`, :meth:`blackhole`, :meth:`refuse`, :meth:`set_latency`, :meth:`set_throttle`,
    :meth:`drop_after` and :meth:`mute_after_headers`. Use it as
    ``async with FaultProxy(host, port) as proxy:`` and point the client at :meth:`url`.
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        """Configure the proxy; nothing is bound until :meth:`start`.

        Both ``host`` (where the proxy listens) and ``upstream_host`` must be IPv4 loopback
        literals: this is a test tool and must never open or reach a port beyond the machine.
        """
        _check_loopback(host, "host")
        _check_loopback(upstream_host, "upstream_host")
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = host
        self.port = port
        """The listening port: the requested one before :meth:`start`, the bound one after."""
        self.total_connections = 0
        """Client connections ever accepted (including those reset by ``refuse(rst=True)``)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closers: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}
        """One task per stream that ends when its socket is closed (see _adopt)."""
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._flowing = asyncio.Event()  # set while not black-holed
        self._flowing.set()
        self._refusing = False
        self._refuse_rst = False
        self._latency = 0.0
        self._rate: float | None = None
        self._drop_after: int | None = None
        self._mute_marker: bytes | None = None
        self.held_bytes = 0
        """Response bytes held back by :meth:`mute_after_headers`, over every connection."""
        self._started = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and listen; :attr:`port` is the bound port afterwards."""
        if self._started:
            raise RuntimeError("FaultProxy already started")
        self._loop = asyncio.get_running_loop()
        self._listen()
        self._started = True

    async def close(self) -> None:
        """Stop listening, close every connection and await every task the proxy started.

        Connections get a graceful close (FIN); one whose peer does not read what is left to
        flush is aborted after a quarter of a second. When this returns, every socket the
        proxy owned is closed. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self._stop_listening()
        for link in list(self._links):
            self._drop(link, rst=False)
        for _ in range(3):  # a cancelled link task never spawns more; bounded regardless
            tasks = list(self._tasks)
            if not tasks:
                break
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(self._finish(w, _SHUTDOWN_GRACE) for w in list(self._closers)))
        stuck = list(self._closers.values())  # none expected: every stream was aborted
        for closer in stuck:
            closer.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(RuntimeError("FaultProxy closed"))
        self._waiters.clear()
        # Let connection_lost callbacks scheduled by cancelled connects run (they close sockets).
        await asyncio.sleep(0)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- addresses and counters ------------------------------------------------------------

    @property
    def url_host_port(self) -> tuple[str, int]:
        """(host, port) the client should connect to; only meaningful after :meth:`start`."""
        if not self._started:
            raise RuntimeError("FaultProxy not started")
        return self.host, self.port

    def url(self, scheme: str = "http", path: str = "") -> str:
        """A URL through the proxy, e.g. ``url("ws", "/rx")`` -> ``"ws://127.0.0.1:PORT/rx"``."""
        host, port = self.url_host_port
        if path and not path.startswith("/"):
            path = "/" + path
        return f"{scheme}://{host}:{port}{path}"

    @property
    def connections(self) -> int:
        """Client connections currently open (held, connecting upstream or forwarding)."""
        return len(self._links)

    @property
    def muted_connections(self) -> int:
        """Client connections open now whose response :meth:`mute_after_headers` holds."""
        return sum(1 for link in self._links if link.muted)

    async def wait_connections(self, n: int, timeout: float = 5.0) -> None:
        """Wait until at least ``n`` client connections are open at once.

        Woken by the proxy on every accept (no polling). Raises TimeoutError after ``timeout``.
        """
        if len(self._links) >= n:
            return
        if self._closed:
            raise RuntimeError("FaultProxy closed")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, waiter)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise TimeoutError(
                f"{len(self._links)} connections open after {timeout}s, waited for {n}"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    # -- faults ----------------------------------------------------------------------------

    def cut(self, *, rst: bool = False) -> int:
        """Close every current connection now, on both sides; return how many were cut.

        ``rst=False`` closes gracefully: the client and the upstream each read EOF (the kernel
        still sends RST instead of FIN if the proxy had unread bytes from that peer, e.g. while
        black-holed). ``rst=True`` aborts with SO_LINGER 0, so both sides see a reset (a read
        raises ConnectionResetError). Bytes still delayed inside the proxy are dropped.
        """
        links = list(self._links)
        for link in links:
            self._drop(link, rst=rst)
        return len(links)

    def blackhole(self, on: bool = True) -> None:
        """Simulate a half-open link: while on, no byte (nor EOF) is forwarded either way.

        Existing connections stay open; the proxy stops reading them, so the peers' buffers
        fill up as they would behind a dead link. New connections are accepted (the client's
        connect succeeds) and held without connecting upstream. Bytes are held, not dropped:
        when the hole closes, held data flows on in order, as TCP retransmission would deliver
        it. To model a link that never recovers, :meth:`cut` while black-holed.

        This is an application-level black hole: each kernel still ACKs what reaches it, so it
        shows to heartbeats and timeouts above TCP, not to TCP keepalive or retransmission.
        """
        if on:
            self._flowing.clear()
        else:
            self._flowing.set()

    def refuse(self, on: bool = True, *, rst: bool = False) -> None:
        """While on, new connections fail at once; existing connections are not touched.

        By default the proxy stops listening, so a client's connect fails immediately with
        ConnectionRefusedError (the kernel answers the SYN with RST), just like a server that is
        down; the port is bound again, synchronously, when refusing ends (this raises OSError in
        the unlikely case that something else took the port meanwhile). With ``rst=True`` the
        proxy keeps listening but resets each new connection as soon as it is accepted: the
        connect succeeds and the client's first read or write fails with a reset.
        """
        self._refusing = on
        self._refuse_rst = on and rst
        if self._closed or not self._started:
            return
        if on and not rst:
            self._stop_listening()
        elif self._listener is None:
            self._listen()

    def set_latency(self, seconds: float) -> None:
        """Delay every chunk read from now on by ``seconds`` in each direction, order preserved.

        Chunks are delayed from the moment the proxy reads them, in parallel, so a round trip
        through the proxy takes at least twice the latency.
        """
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self._latency = seconds

    def set_throttle(self, bytes_per_second: float | None) -> None:
        """Limit forwarding to ``bytes_per_second`` per connection and direction (None: off).

        Written in slices of about 20 ms of traffic; no burst credit accumulates while idle.
        """
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError("throttle must be > 0 bytes per second, or None")
        self._rate = bytes_per_second

    def drop_after(self, nbytes: int | None) -> None:
        """Reset (RST, both sides) each connection once it forwarded ``nbytes`` to the client.

        Counts bytes sent upstream-to-client since the connection was accepted; the proxy
        forwards exactly ``nbytes``, flushes them, then resets. Connections already past the
        limit are reset now. None turns it off. On loopback the client receives the bytes before
        the reset as long as it keeps reading.
        """
        if nbytes is not None and nbytes < 0:
            raise ValueError("drop_after must be >= 0, or None")
        self._drop_after = nbytes
        if nbytes is not None:
            for link in list(self._links):
                if link.down_bytes >= nbytes and link.upstream is not None:
                    self._drop(link, rst=True)

    def mute_after_headers(self, marker: bytes | None) -> None:
        """Buffer responses the way some proxies buffer Server-Sent Events (None: off).

        A connection accepted from now on whose request (its first bytes from the client)
        contains ``marker`` gets its response's status line and headers, and then nothing:
        the proxy holds every later byte until the upstream ends the response (EOF), and only
        then forwards it. An SSE stream never ends, so its client sees a 200 and silence.
        """
        self._mute_marker = marker

    def _hold(self, link: _Link, data: bytes) -> bytes:
        """The part of a muted response's ``data`` to forward now (headers); hold the rest."""
        if link.headers_done:
            link.held += data
            self.held_bytes += len(data)
            return b""
        seen = link.head + data
        end = seen.find(b"\r\n\r\n")
        if end < 0:
            link.head = seen[-3:]
            return data
        cut = end + 4 - len(link.head)
        link.headers_done = True
        link.held += data[cut:]
        self.held_bytes += len(data) - cut
        return data[:cut]

    # -- listening -------------------------------------------------------------------------

    def _listen(self) -> None:
        """Bind (the same port again after a refusal) and start accepting on the loop."""
        assert self._loop is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(_BACKLOG)
            sock.setblocking(False)
            self._loop.add_reader(sock.fileno(), self._on_acceptable)
        except BaseException:
            sock.close()
            raise
        self._listener = sock
        self.port = sock.getsockname()[1]
        if self._refusing and not self._refuse_rst:  # refuse() before start()
            self._stop_listening()

    def _stop_listening(self) -> None:
        sock, self._listener = self._listener, None
        if sock is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(sock.fileno())
        sock.close()  # connections still in the backlog are reset by the kernel

    def _on_acceptable(self) -> None:
        """Accept what is pending (bounded) and start a link task for each connection."""
        for _ in range(_ACCEPT_BATCH):
            listener = self._listener
            if listener is None:
                return
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ECONNABORTED, EMFILE: skip this round
                logger.warning("FaultProxy accept failed: %r", exc)
                return
            self.total_connections += 1
            if self._refuse_rst:
                _reset_raw(sock)
                continue
            sock.setblocking(False)
            link = _Link(sock, self.total_connections)
            self._links.add(link)
            link.task = self._spawn(self._run_link(link), f"link{link.number}")
            self._notify()

    # -- links -----------------------------------------------------------------------------

    def _spawn(
        self,
        coro: Coroutine[Any, Any, None],
        name: str,
        group: asyncio.TaskGroup | None = None,
    ) -> asyncio.Task[None]:
        """Start a task the proxy tracks until it ends (close() cancels and awaits it)."""
        assert self._loop is not None
        full_name = f"FaultProxy:{self.port}:{name}"
        if group is None:
            task = self._loop.create_task(coro, name=full_name)
        else:
            task = group.create_task(coro, name=full_name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("FaultProxy task %s failed", task.get_name(), exc_info=exc)

    def _notify(self) -> None:
        """Wake wait_connections() callers whose count is reached."""
        open_now = len(self._links)
        for n, waiter in self._waiters:
            if open_now >= n and not waiter.done():
                waiter.set_result(None)

    def _drop(self, link: _Link, *, rst: bool) -> None:
        """Close a link on both sides (FIN or RST) and stop its tasks. Idempotent."""
        if link.closed:
            return
        link.closed = True
        link.rst = rst
        self._links.discard(link)
        if link.sock is not None:  # its task never started: the socket is still ours
            if rst:
                _reset_raw(link.sock)
            else:
                link.sock.close()
            link.sock = None
        for writer in link.writers():
            _shut(writer, rst=rst)
        if link.task is not None and link.task is not asyncio.current_task():
            link.task.cancel()

    def _adopt(self, link: _Link, writer: asyncio.StreamWriter) -> None:
        """Track a new stream of ``link``; close it at once if the link was cut meanwhile."""
        assert self._loop is not None
        # StreamWriter.wait_closed() awaits one future shared by all its callers, and
        # cancelling any caller cancels that future for everyone. So only this task, which
        # nothing cancels (bar a last resort in close()), awaits it; others asyncio.wait() on
        # the task, which a cancellation or timeout leaves alone.
        closer = self._loop.create_task(
            self._closed_quietly(writer), name=f"FaultProxy:{self.port}:closer{link.number}"
        )
        self._closers[writer] = closer
        closer.add_done_callback(lambda _: self._closers.pop(writer, None))
        # No transport buffering: drain() then means "handed to the kernel", which keeps the
        # throttle honest and lets drop_after flush exactly its bytes before the reset.
        writer.transport.set_write_buffer_limits(high=0)
        if link.closed:
            _shut(writer, rst=link.rst)

    @staticmethod
    async def _closed_quietly(writer: asyncio.StreamWriter) -> None:
        """Return once the stream's socket is closed, however the connection ended."""
        with contextlib.suppress(Exception):  # lost with an error: closed all the same
            await writer.wait_closed()

    async def _finish(self, writer: asyncio.StreamWriter, grace: float = _CLOSE_GRACE) -> None:
        """Close a stream and wait until its socket is; abort it if flushing takes too long."""
        closer = self._closers.get(writer)
        if not writer.is_closing():
            writer.close()
        if closer is None:
            return
        done, _ = await asyncio.wait({closer}, timeout=grace)
        if not done:  # the peer does not read what is left to flush: give up on it
            writer.transport.abort()
            await asyncio.wait({closer}, timeout=_CLOSE_GRACE)

    async def _run_link(self, link: _Link) -> None:
        """Own one link: wrap the client socket, connect upstream, forward until it ends."""
        sock, link.sock = link.sock, None
        assert sock is not None
        try:
            client_reader, client_writer = await asyncio.open_connection(sock=sock, limit=CHUNK)
            link.client = client_writer
            self._adopt(link, client_writer)
            await self._flowing.wait()  # black hole: hold new connections before upstream
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port, limit=CHUNK
                )
            except OSError:  # upstream refuses or is gone: the client sees a reset
                self._drop(link, rst=True)
                return
            link.upstream = up_writer
            self._adopt(link, up_writer)
            if link.closed:
                return
            async with asyncio.TaskGroup() as group:
                up = _Direction("up", downstream=False)
                down = _Direction("down", downstream=True)
                for src, dst, direction in (
                    (client_reader, up_writer, up),
                    (up_reader, client_writer, down),
                ):
                    queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=_QUEUE_CHUNKS)
                    tag = f"link{link.number}:{direction.name}"
                    self._spawn(self._read_side(link, src, queue, direction), f"{tag}:read", group)
                    self._spawn(
                        self._write_side(link, dst, queue, direction), f"{tag}:write", group
                    )
            self._drop(link, rst=False)  # both directions reached EOF
        finally:
            if not link.closed:  # cancelled by close(), or an unexpected error
                self._drop(link, rst=False)
            if not self._closed:  # else close() finishes the streams, with a shorter grace
                for writer in link.writers():
                    await self._finish(writer)

    async def _read_side(
        self,
        link: _Link,
        src: asyncio.StreamReader,
        queue: asyncio.Queue[_Item],
        direction: _Direction,
    ) -> None:
        """Read chunks and queue them, stamped with the time they may be forwarded."""
        loop = asyncio.get_running_loop()
        while True:  # ends on EOF, on error, or when the link task is cancelled
            await self._flowing.wait()
            try:
                data = await src.read(CHUNK)
            except OSError:  # the peer reset: mirror the reset to the other side
                self._drop(link, rst=True)
                return
            if not data:
                await queue.put(None)
                return
            if link.muted is None and not direction.downstream:
                marker = self._mute_marker
                link.muted = marker is not None and marker in data
            await queue.put((loop.time() + self._latency, data))

    async def _write_side(
        self,
        link: _Link,
        dst: asyncio.StreamWriter,
        queue: asyncio.Queue[_Item],
        direction: _Direction,
    ) -> None:
        """Forward queued chunks once due, honouring black hole, throttle and drop_after."""
        loop = asyncio.get_running_loop()
        while True:  # ends on EOF, on error, on drop_after, or when cancelled
            item = await queue.get()
            if item is None:
                await self._flowing.wait()
                with contextlib.suppress(OSError):
                    if direction.downstream and link.held:  # a muted response ended
                        dst.write(bytes(link.held))
                        link.held.clear()
                    if dst.can_write_eof():
                        dst.write_eof()  # half-close, as the peer did
                return
            due, data = item
            while (delay := due - loop.time()) > 0:  # sleep may wake a hair early
                await asyncio.sleep(delay)
            if direction.downstream and link.muted:
                data = self._hold(link, data)
                if not data:
                    continue
            try:
                if not await self._send(link, dst, memoryview(data), direction):
                    return
            except OSError:  # the receiving peer is gone: reset the other side too
                self._drop(link, rst=True)
                return

    async def _send(
        self, link: _Link, dst: asyncio.StreamWriter, view: memoryview, direction: _Direction
    ) -> bool:
        """Write one chunk in throttle-sized slices; False once drop_after reset the link."""
        loop = asyncio.get_running_loop()
        while view:  # every pass writes at least one byte or returns
            await self._flowing.wait()
            size = len(view)
            rate = self._rate
            if rate is not None:
                size = min(size, max(1, int(rate * _THROTTLE_SLICE)))
                now = loop.time()
                start = max(now, direction.next_free)
                if start > now:
                    await asyncio.sleep(start - now)
                direction.next_free = start + size / rate
                await self._flowing.wait()  # the hole may have opened while throttled
            limit = self._drop_after
            if direction.downstream and limit is not None:
                room = limit - link.down_bytes
                if room <= 0:
                    self._drop(link, rst=True)
                    return False
                size = min(size, room)
            dst.write(view[:size])
            view = view[size:]
            await dst.drain()
            if direction.downstream:
                link.down_bytes += size
                if limit is not None and link.down_bytes >= limit:
                    self._drop(link, rst=True)
                    return False
        return True
