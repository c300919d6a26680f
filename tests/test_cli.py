"""The command line, driven as real subprocesses (`python -m rxconn ...`) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from reactivex.disposable import CompositeDisposable

from rxconn.cli import base_url, endpoint_url, format_message
from rxconn.server import Hub, Server, Session, serve
from tests.redis_server import require_redis_server


RXCONN = (sys.executable, "-W", "default", "-m", "rxconn")
RUN_TIMEOUT = 20.0
LINE_TIMEOUT = 10.0


def run(*args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run `rxconn args...` to completion (killed after `timeout`), capturing its output."""
    return subprocess.run(
        [*RXCONN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    """`stderr` is exactly one `rxconn <cmd>: error: ...` line containing every fragment."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "error: " in lines[0]
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0]


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Proc:
    """A running `rxconn` subprocess whose lines a test awaits with a bound."""

    process: asyncio.subprocess.Process
    stdout: str = ""
    stderr: str = ""

    async def line(self, stream: str = "stdout", timeout: float = LINE_TIMEOUT) -> str:
        """The next line of `stream` ("stdout" or "stderr"); fails on EOF or timeout."""
        reader = self.process.stdout if stream == "stdout" else self.process.stderr
        assert reader is not None
        async with asyncio.timeout(timeout):
            raw = await reader.readline()
        assert raw, f"{stream} ended"
        return raw.decode().rstrip("\n")

    async def line_matching(self, predicate: Callable[[str], bool], stream: str = "stdout") -> str:
        """Skip lines of `stream` until one satisfies `predicate`."""
        while not predicate(line := await self.line(stream)):
            pass
        return line

    async def finish(self, timeout: float = LINE_TIMEOUT) -> int:
        """Wait for the exit, collect the rest of the output, return the exit code."""
        async with asyncio.timeout(timeout):
            out, err = await self.process.communicate()
        self.stdout, self.stderr = out.decode(), err.decode()
        assert self.process.returncode is not None
        return self.process.returncode


@asynccontextmanager
async def started(*args: str) -> AsyncIterator[Proc]:
    """Start `rxconn args...`; whatever happens, it is killed and reaped at the end."""
    process = await asyncio.create_subprocess_exec(
        *RXCONN,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    proc = Proc(process)
    try:
        yield proc
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()


@asynccontextmanager
async def hub_that_greets(*greetings: str | bytes) -> AsyncIterator[Server]:
    """An in-test hub that broadcasts `greetings` as soon as a session appears."""
    hub = Hub(ping_interval=1.0)

    def greet(_: Session) -> None:
        for greeting in greetings:
            hub.broadcast(greeting)

    subscription = hub.sessions.subscribe(greet)
    try:
        async with serve(hub, "127.0.0.1", 0) as server:
            yield server
    finally:
        subscription.dispose()


# ------------------------------------------------------------- arguments


@pytest.mark.parametrize("command", [[], ["demo"], ["serve"], ["listen"], ["send"]])
def test_help_exits_zero(command: list[str]) -> None:
    """`--help` of rxconn and of each subcommand prints usage and exits 0."""
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: rxconn {' '.join(command)}".rstrip())


def test_missing_subcommand_is_a_usage_error() -> None:
    """`rxconn` without a subcommand exits 2 with argparse's usage message."""
    result = run()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("url", "transport", "expected"),
    [
        ("http://h:1/rx", "websocket", "http://h:1/rx/ws"),
        ("http://h:1/rx/", "http", "http://h:1/rx/events"),
        ("http://h:1/rx/ws", "websocket", "http://h:1/rx/ws"),
        ("http://h:1/rx/events?x=1", "http", "http://h:1/rx/events?x=1"),
    ],
)
def test_endpoint_url_appends_the_suffix_unless_present(
    url: str, transport: str, expected: str
) -> None:
    """/ws or /events is appended to a base URL, never doubled, and the query is kept."""
    assert endpoint_url(url, transport) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h:1/rx", "http://h:1/rx"),
        ("http://h:1/rx/events", "http://h:1/rx"),
        ("ws://h:1/rx/ws", "http://h:1/rx"),
        ("wss://h/", "https://h"),
    ],
)
def test_base_url_drops_an_endpoint_suffix(url: str, expected: str) -> None:
    """For --transport auto, a trailing /ws or /events is dropped and ws(s) becomes http(s)."""
    assert base_url(url) == expected


def test_format_message_text_binary_json() -> None:
    """Text prints as is, binary as hex:, --json as {"type", "data"} objects (base64)."""
    assert format_message("héllo", as_json=False) == "héllo"
    assert format_message(b"\x00\xff", as_json=False) == "hex:00ff"
    assert json.loads(format_message(b"\x00\xff", as_json=True)) == {
        "type": "binary",
        "data": "AP8=",
    }
    assert json.loads(format_message("héllo", as_json=True)) == {"type": "text", "data": "héllo"}


# --------------------------------------------------------------------- demo


def test_demo_falls_back_upgrades_and_loses_nothing() -> None:
    """`demo --duration 6`: fall back to HTTP, upgrade back, lost 0 / duplicated 0, exit 0."""
    result = run("demo", "--duration", "6", timeout=25.0)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "WebSocket blocked, as by a proxy" in out
    assert "connected over http  <- fell back to HTTP" in out
    assert "connected over websocket  <- upgraded back to WebSocket" in out
    assert out.index("fell back to HTTP") < out.index("upgraded back to WebSocket")
    assert out.count("lost 0, duplicated 0, out of order 0") == 2
    assert "(websocket -> http -> websocket)" in out
    assert "PASS: nothing lost or duplicated" in out
    assert "\x1b[" not in out  # no colour when piped
    assert result.stderr == ""


def test_demo_mute_sse_falls_back_to_long_polling_and_loses_nothing() -> None:
    """`demo --mute-sse`: WebSocket blocked and SSE muted by a proxy -> long polling -> back."""
    result = run("demo", "--duration", "6", "--mute-sse", timeout=25.0)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "SSE muted: the proxy holds every byte after the headers" in out
    assert "connected over longpoll  <- fell back to long polling" in out
    assert "connected over http" not in out  # a mute stream never counts as open
    assert out.index("fell back to long polling") < out.index("upgraded back to WebSocket")
    assert out.count("lost 0, duplicated 0, out of order 0") == 2
    assert "(websocket -> longpoll -> websocket)" in out
    assert "PASS: nothing lost or duplicated; fell back to long polling" in out
    assert result.stderr == ""


def test_demo_cluster_kills_the_hub_holding_the_link_and_loses_nothing() -> None:
    """`demo --cluster`: redis-server, three hub processes behind a balancer, the client's
    hub killed with SIGKILL mid-stream: 0 lost, 0 duplicated, in order, one session."""
    require_redis_server()
    result = run("demo", "--cluster", "--duration", "3", "--rate", "50", timeout=60.0)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "3 hub processes on ports" in out
    assert "killed hub" in out and "(kill -9)" in out
    assert out.count("lost 0, duplicated 0, out of order 0") == 2
    assert "session resets: 0" in out
    assert "the session continued on hub" in out
    assert "OK: 0 lost, 0 duplicated, in order, one session" in out
    assert result.stderr == ""


# ------------------------------------------------------------ serve, send


@pytest.mark.asyncio
async def test_serve_prints_its_url_takes_sends_and_stops_on_sigint() -> None:
    """`serve --port 0` prints the bound URL; `send` to it exits 0; SIGINT exits 0 quietly."""
    async with started("serve", "--port", "0", "--echo", "--ping-interval", "1") as hub:
        first = await hub.line()
        assert first.startswith("rxconn hub on http://127.0.0.1:")
        url = first.removeprefix("rxconn hub on ")
        assert url.endswith("/rx")
        async with started("send", url, "a", "b", "c") as send:
            assert await send.finish() == 0, send.stderr
        assert "3 payload(s) accepted" in send.stderr
        await hub.line_matching(lambda line: "session" in line, stream="stderr")
        hub.process.send_signal(signal.SIGINT)
        assert await hub.finish() == 0
        assert "Traceback" not in hub.stderr
        assert "Warning" not in hub.stderr


@pytest.mark.asyncio
@pytest.mark.parametrize("transport", ["auto", "websocket", "http"])
async def test_send_delivers_payloads_in_order(transport: str) -> None:
    """`send URL a b c` delivers a, b, c to the hub session, in order, then exits 0."""
    hub = Hub(ping_interval=1.0)
    received: list[str | bytes] = []
    inner = CompositeDisposable()
    outer = hub.sessions.subscribe(lambda s: inner.add(s.messages.subscribe(received.append)))
    try:
        async with serve(hub, "127.0.0.1", 0) as server:
            args = ("send", server.url, "a", "b", "c", "--transport", transport)
            async with started(*args) as send:
                assert await send.finish() == 0, send.stderr
        assert received == ["a", "b", "c"]
    finally:
        outer.dispose()
        inner.dispose()


# -------------------------------------------------------------------- listen


@pytest.mark.asyncio
@pytest.mark.parametrize("transport", ["auto", "websocket", "http"])
async def test_listen_prints_messages_and_exits_after_count(transport: str) -> None:
    """`listen --count 3` prints text as is and binary as hex:, then exits 0."""
    async with hub_that_greets("hello", "wörld", b"\x00\x01") as server:
        args = ("listen", server.url, "--count", "3", "--transport", transport)
        async with started(*args) as listen:
            assert await listen.finish() == 0, listen.stderr
    assert listen.stdout.splitlines() == ["hello", "wörld", "hex:0001"]
    assert f"connected over {'websocket' if transport == 'auto' else transport}" in listen.stderr


@pytest.mark.asyncio
async def test_listen_json_lines() -> None:
    """`listen --json` prints one {"type", "data"} JSON object per message."""
    async with hub_that_greets("hi", b"\xff") as server:
        async with started("listen", server.url, "--json", "--count", "2") as listen:
            assert await listen.finish() == 0, listen.stderr
    assert [json.loads(line) for line in listen.stdout.splitlines()] == [
        {"type": "text", "data": "hi"},
        {"type": "binary", "data": "/w=="},
    ]


@pytest.mark.asyncio
async def test_listen_exits_130_quietly_on_ctrl_c() -> None:
    """SIGINT to a connected `listen` closes it and exits 130 without a traceback."""
    async with hub_that_greets() as server, started("listen", server.url) as listen:
        await listen.line_matching(lambda line: "connected over" in line, stream="stderr")
        listen.process.send_signal(signal.SIGINT)
        assert await listen.finish() == 130
    assert "Traceback" not in listen.stderr
    assert "Warning" not in listen.stderr


# -------------------------------------------------------------------- errors


@pytest.mark.parametrize("command", ["listen", "send"])
@pytest.mark.parametrize("url", ["ftp://127.0.0.1/rx", "http:///rx", "127.0.0.1:8080/rx"])
def test_bad_url_exits_2_with_one_line(command: str, url: str) -> None:
    """An unusable URL: exit 2, one `invalid URL` line on stderr, no traceback."""
    payload = ["x"] if command == "send" else []
    result = run(command, url, *payload)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, f"rxconn {command}: error: invalid URL")


@pytest.mark.parametrize("command", ["listen", "send"])
def test_refused_port_exits_1_with_one_line(command: str) -> None:
    """Nobody listening, `--retries 2`: exit 1 after 3 attempts, one error line on stderr
    (the attempts' state lines aside)."""
    payload = ["x"] if command == "send" else []
    result = run(command, f"http://127.0.0.1:{free_port()}/rx", *payload, "--retries", "2")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.stderr
    assert_one_line_error(errors[0], "gave up after 3 failed attempts", "cannot connect")
    assert "Traceback" not in result.stderr


@pytest.mark.asyncio
@pytest.mark.parametrize("transport", ["auto", "websocket", "http"])
async def test_not_found_path_exits_1(transport: str) -> None:
    """A path the server does not have (HTTP 404) is fatal: exit 1 at once, one error line."""
    async with serve(Hub(ping_interval=1.0), "127.0.0.1", 0) as server:
        url = server.url.removesuffix("/rx") + "/nope"
        async with started("send", url, "x", "--transport", transport) as send:
            assert await send.finish() == 1
    assert_one_line_error(send.stderr, "rxconn send: error: ", "404")


def test_serve_port_in_use_exits_1() -> None:
    """`serve` on a port already taken: exit 1, one line naming the address."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run("serve", "--port", str(port))
    assert result.returncode == 1
    assert_one_line_error(result.stderr, f"cannot listen on 127.0.0.1:{port}")
