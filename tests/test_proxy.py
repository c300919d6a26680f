"""Tests of the fault-injection proxy (tests/proxy.py) against a tiny loopback echo server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import warnings
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import tests.proxy
from tests.proxy import FaultProxy


pytestmark = pytest.mark.timeout(10)

BOUND = 2.0
"""Upper bound on any single wait in these tests; every test finishes well inside it."""

QUIET = 0.2
"""How long "nothing arrives" is watched for."""


class EchoServer:
    """Echoes every byte back; records how each connection ended ("eof" or "reset")."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self.ends: list[str] = []
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in self._writers:
            writer.transport.abort()  # a graceful close could wait forever on a stuck peer
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def ended(self, n: int = 1) -> list[str]:
        """Wait until ``n`` connections ended; return how they ended."""
        async with asyncio.timeout(BOUND):
            while len(self.ends) < n:
                self._changed.clear()
                await self._changed.wait()
        return self.ends

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.accepted += 1
        end = "eof"
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            end = "reset"
        finally:
            await close_writer(writer)
            self._writers.discard(writer)
            self._tasks.discard(task)
            self.ends.append(end)
            self._changed.set()


class Clients:
    """Opens client connections to the proxy and closes all of them at teardown."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self._writers: list[asyncio.StreamWriter] = []

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = self.proxy.url_host_port
        async with asyncio.timeout(BOUND):
            reader, writer = await asyncio.open_connection(host, port)
        self._writers.append(writer)
        return reader, writer

    async def close(self) -> None:
        for writer in self._writers:
            await close_writer(writer)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a stream gracefully, or abort it if it cannot flush within a short bound."""
    writer.close()
    try:
        async with asyncio.timeout(QUIET):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except OSError:
        pass


def proxy_tasks() -> list[asyncio.Task[object]]:
    """Tasks still alive whose coroutine comes from tests/proxy.py."""
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "cr_code", None) is not None
        and task.get_coro().cr_code.co_filename == tests.proxy.__file__  # type: ignore[union-attr]
    ]


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bytes:
    """Send ``data`` and read the same number of bytes back."""
    writer.write(data)
    async with asyncio.timeout(BOUND):
        await writer.drain()
        return await reader.readexactly(len(data))


async def read_to_end(reader: asyncio.StreamReader) -> tuple[bytes, str]:
    """Read until the stream ends; return the bytes and "eof" or "reset"."""
    chunks: list[bytes] = []
    async with asyncio.timeout(BOUND):
        try:
            while data := await reader.read(65536):
                chunks.append(data)
        except ConnectionResetError:
            return b"".join(chunks), "reset"
    return b"".join(chunks), "eof"


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest_asyncio.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    await server.start()
    yield server
    await server.close()


@pytest_asyncio.fixture
async def proxy(echo: EchoServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", echo.port) as fault_proxy:
        yield fault_proxy
    assert proxy_tasks() == []


@pytest_asyncio.fixture
async def clients(proxy: FaultProxy) -> AsyncIterator[Clients]:
    opened = Clients(proxy)
    yield opened
    await opened.close()


@pytest.mark.asyncio
async def test_forwards_both_ways_and_half_close(
    proxy: FaultProxy, clients: Clients, echo: EchoServer
) -> None:
    """Bytes go through in both directions, in order, and an EOF is passed on."""
    reader, writer = await clients.open()
    assert await roundtrip(reader, writer, b"hello") == b"hello"
    payload = bytes(range(256)) * 2048  # 512 KiB: many chunks, exercises backpressure
    assert await roundtrip(reader, writer, payload) == payload
    writer.write_eof()
    assert await read_to_end(reader) == (b"", "eof")
    assert await echo.ended() == ["eof"]
    assert proxy.total_connections == 1


@pytest.mark.asyncio
async def test_cut_fin(proxy: FaultProxy, clients: Clients, echo: EchoServer) -> None:
    """cut() closes both sides gracefully: the client and the upstream read EOF."""
    reader, writer = await clients.open()
    assert await roundtrip(reader, writer, b"x") == b"x"
    assert proxy.cut() == 1
    assert proxy.connections == 0
    assert await read_to_end(reader) == (b"", "eof")
    assert await echo.ended() == ["eof"]


@pytest.mark.asyncio
async def test_cut_rst(proxy: FaultProxy, clients: Clients, echo: EchoServer) -> None:
    """cut(rst=True) resets both sides: the client read fails with a reset (or ends)."""
    reader, writer = await clients.open()
    assert await roundtrip(reader, writer, b"x") == b"x"
    assert proxy.cut(rst=True) == 1
    data, end = await read_to_end(reader)
    assert data == b""
    assert end in ("reset", "eof")
    upstream_end = (await echo.ended())[0]
    assert "reset" in (end, upstream_end)  # a FIN would give "eof" on both sides
    assert proxy.cut() == 0


@pytest.mark.asyncio
async def test_blackhole_holds_traffic_and_new_connections(
    proxy: FaultProxy, clients: Clients, echo: EchoServer
) -> None:
    """A black hole forwards nothing, holds new connections, and lets both go on when lifted."""
    reader, writer = await clients.open()
    assert await roundtrip(reader, writer, b"before") == b"before"
    proxy.blackhole()
    writer.write(b"held")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(4), QUIET)
    reader2, writer2 = await clients.open()  # accepted, but kept from upstream
    await proxy.wait_connections(2, timeout=BOUND)
    assert echo.accepted == 1
    proxy.blackhole(False)
    async with asyncio.timeout(BOUND):
        assert await reader.readexactly(4) == b"held"
    assert await roundtrip(reader2, writer2, b"second") == b"second"
    assert echo.accepted == 2


@pytest.mark.asyncio
async def test_cut_held_connection(proxy: FaultProxy, clients: Clients, echo: EchoServer) -> None:
    """A connection held by the black hole (no upstream yet) is cut like any other."""
    proxy.blackhole()
    reader, _ = await clients.open()
    await proxy.wait_connections(1, timeout=BOUND)
    assert proxy.cut() == 1
    assert await read_to_end(reader) == (b"", "eof")
    proxy.blackhole(False)
    assert echo.accepted == 0


@pytest.mark.asyncio
async def test_refuse_stops_listening(proxy: FaultProxy, clients: Clients) -> None:
    """refuse() makes new connects fail at once, keeps old ones, and resumes on the same port."""
    reader, writer = await clients.open()
    proxy.refuse()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectionRefusedError):
        await clients.open()
    assert loop.time() - started < 0.5
    assert await roundtrip(reader, writer, b"still") == b"still"
    port = proxy.port
    proxy.refuse(False)
    assert proxy.port == port
    reader2, writer2 = await clients.open()
    assert await roundtrip(reader2, writer2, b"back") == b"back"


@pytest.mark.asyncio
async def test_refuse_rst_resets_new_connections(
    proxy: FaultProxy, clients: Clients, echo: EchoServer
) -> None:
    """refuse(rst=True) accepts and resets: connect or first read fails, upstream sees none."""
    proxy.refuse(rst=True)
    try:
        reader, _ = await clients.open()
    except ConnectionResetError:  # the reset can beat the connect callback
        pass
    else:
        data, end = await read_to_end(reader)
        assert data == b""
        assert end in ("reset", "eof")
    assert proxy.total_connections == 1
    assert proxy.connections == 0
    assert echo.accepted == 0


@pytest.mark.asyncio
async def test_latency_delays_each_direction(proxy: FaultProxy, clients: Clients) -> None:
    """With latency L an echo takes at least 2L (one L each way), and not much more."""
    reader, writer = await clients.open()
    latency = 0.1
    proxy.set_latency(latency)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await roundtrip(reader, writer, b"ping") == b"ping"
    elapsed = loop.time() - started
    assert 2 * latency <= elapsed < 2 * latency + 0.5
    payload = bytes(range(256)) * 2048  # 512 KiB, many chunks: each is delayed once, in order
    started = loop.time()
    assert await roundtrip(reader, writer, payload) == payload
    assert 2 * latency <= loop.time() - started < 2 * latency + 0.5
    proxy.set_latency(0)
    started = loop.time()
    assert await roundtrip(reader, writer, b"pong") == b"pong"
    assert loop.time() - started < 2 * latency


@pytest.mark.asyncio
async def test_throttle_limits_rate(proxy: FaultProxy, clients: Clients) -> None:
    """Echoing N bytes at R bytes/s per direction takes about N/R (loose bounds)."""
    reader, writer = await clients.open()
    rate = 100_000.0
    proxy.set_throttle(rate)
    payload = b"t" * 50_000  # 0.5 s each way, pipelined
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await roundtrip(reader, writer, payload) == payload
    elapsed = loop.time() - started
    assert 0.8 * len(payload) / rate <= elapsed < 1.5
    proxy.set_throttle(None)
    started = loop.time()
    assert await roundtrip(reader, writer, payload) == payload
    assert loop.time() - started < 0.5 * len(payload) / rate


@pytest.mark.asyncio
async def test_drop_after_resets_after_n_bytes(
    proxy: FaultProxy, clients: Clients, echo: EchoServer
) -> None:
    """drop_after(N) forwards exactly N bytes to each new client, then resets both sides."""
    limit = 10_000
    proxy.drop_after(limit)
    payload = bytes(range(256)) * 200  # 51_200 bytes
    for n in (1, 2):
        reader, writer = await clients.open()
        writer.write(payload)
        data, end = await read_to_end(reader)
        assert data == payload[:limit]
        assert end in ("reset", "eof")
        assert len(await echo.ended(n)) == n
    assert proxy.connections == 0


@pytest.mark.asyncio
async def test_drop_after_cuts_active_connection_past_limit(
    proxy: FaultProxy, clients: Clients
) -> None:
    """Setting drop_after below what a connection already forwarded resets it at once."""
    reader, writer = await clients.open()
    assert await roundtrip(reader, writer, b"a" * 100) == b"a" * 100
    proxy.drop_after(1_000)
    assert proxy.connections == 1
    proxy.drop_after(50)
    assert proxy.connections == 0
    _, end = await read_to_end(reader)
    assert end in ("reset", "eof")


@pytest.mark.asyncio
async def test_wait_connections(proxy: FaultProxy, clients: Clients) -> None:
    """wait_connections(n) returns once n connections are open, and times out otherwise."""
    await proxy.wait_connections(0)

    async def open_three() -> None:
        for _ in range(3):
            await clients.open()

    opener = asyncio.create_task(open_three())
    await proxy.wait_connections(3, timeout=BOUND)
    assert proxy.connections == 3
    await opener
    with pytest.raises(TimeoutError):
        await proxy.wait_connections(4, timeout=0.05)
    assert proxy.total_connections == 3


@pytest.mark.asyncio
async def test_upstream_down_resets_client() -> None:
    """If the upstream refuses, the proxy resets the client connection."""
    async with FaultProxy("127.0.0.1", free_port()) as lonely:
        lonely_clients = Clients(lonely)
        reader, _ = await lonely_clients.open()
        data, end = await read_to_end(reader)
        assert data == b""
        assert end in ("reset", "eof")
        await lonely_clients.close()
    assert proxy_tasks() == []


@pytest.mark.asyncio
async def test_close_leaves_no_tasks_or_sockets(echo: EchoServer) -> None:
    """close() ends every connection and task, and leaves no socket for the GC to warn about."""
    fault_proxy = FaultProxy("127.0.0.1", echo.port)
    await fault_proxy.start()
    clients = Clients(fault_proxy)
    reader1, writer1 = await clients.open()
    assert await roundtrip(reader1, writer1, b"one") == b"one"
    fault_proxy.set_latency(5.0)
    writer1.write(b"in flight")  # delayed inside the proxy when it closes
    fault_proxy.blackhole()
    reader2, _ = await clients.open()  # held before upstream
    await fault_proxy.wait_connections(2, timeout=BOUND)
    assert proxy_tasks() != []

    await fault_proxy.close()
    await fault_proxy.close()  # idempotent
    assert proxy_tasks() == []
    assert fault_proxy.connections == 0
    assert await read_to_end(reader1) == (b"", "eof")
    assert (await read_to_end(reader2))[0] == b""
    with pytest.raises(ConnectionRefusedError):
        await clients.open()
    await clients.close()
    await echo.ended(1)

    del fault_proxy, clients, reader1, writer1, reader2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


@pytest.mark.asyncio
async def test_close_with_stuck_peer_is_bounded(echo: EchoServer) -> None:
    """close() aborts a stream whose peer stops reading, instead of waiting for it to flush."""
    fault_proxy = FaultProxy("127.0.0.1", echo.port)
    await fault_proxy.start()
    clients = Clients(fault_proxy)
    try:
        _, writer = await clients.open()
        writer.transport.pause_reading()  # the client reads nothing more
        # Far more than all the buffers between client, proxy and echo server hold (some tens of
        # MB on Linux loopback), so the proxy is left with bytes it cannot flush to the client.
        writer.write(b"s" * 128 * 1024 * 1024)
        drained = asyncio.ensure_future(writer.drain())
        await asyncio.wait({drained}, timeout=QUIET)
        assert not drained.done()
        assert fault_proxy.cut() == 1  # its graceful close now waits on the stuck client...
        loop = asyncio.get_running_loop()
        started = loop.time()
        await fault_proxy.close()  # ...and close() must neither hang nor break on it
        assert loop.time() - started < 1.0
        assert proxy_tasks() == []
        writer.transport.abort()
        await asyncio.wait({drained}, timeout=BOUND)
        assert drained.done()
        with contextlib.suppress(ConnectionError):
            drained.result()
    finally:
        await fault_proxy.close()
        await clients.close()


def test_settings_are_validated() -> None:
    """Negative latency, non-positive throttle and negative drop_after are refused."""
    fault_proxy = FaultProxy("127.0.0.1", 1)
    with pytest.raises(ValueError):
        fault_proxy.set_latency(-0.1)
    with pytest.raises(ValueError):
        fault_proxy.set_throttle(0)
    with pytest.raises(ValueError):
        fault_proxy.drop_after(-1)
    with pytest.raises(RuntimeError):
        fault_proxy.url()


def test_only_loopback_addresses() -> None:
    """The proxy refuses to listen on, or forward to, anything but IPv4 loopback."""
    for host in ("0.0.0.0", "192.168.1.1", "::1", "localhost", ""):
        with pytest.raises(ValueError):
            FaultProxy("127.0.0.1", 1, host=host)
        with pytest.raises(ValueError):
            FaultProxy(host, 1)


@pytest.mark.asyncio
async def test_url(proxy: FaultProxy) -> None:
    """url() and url_host_port name the bound loopback port."""
    assert proxy.port != 0
    assert proxy.url_host_port == ("127.0.0.1", proxy.port)
    assert proxy.url("ws", "/rx") == f"ws://127.0.0.1:{proxy.port}/rx"
    assert proxy.url("http", "rx") == f"http://127.0.0.1:{proxy.port}/rx"
    assert proxy.url() == f"http://127.0.0.1:{proxy.port}"
