"""Every `listen` / `send` / `serve` flag, driven as real subprocesses on 127.0.0.1.

Servers run in the test (the rxconn hub, a plain `websockets` server, a plain SSE
endpoint); every wait is bounded and waits for an output line or an event.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from reactivex.disposable import CompositeDisposable
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.typing import Subprotocol

from rxconn.server import Hub, Session, serve

from .test_cli import (
    RUN_TIMEOUT,
    RXCONN,
    assert_one_line_error,
    free_port,
    hub_that_greets,
    run,
    started,
)


SESSION_ID = r"[A-Za-z0-9_-]+"
WAIT = 10.0


@asynccontextmanager
async def recording_hub(
    port: int = 0, *greetings: str
) -> AsyncIterator[tuple[str, asyncio.Queue[str | bytes]]]:
    """A hub (URL, queue of every payload its sessions received); greets each new session."""
    hub = Hub(ping_interval=1.0)
    received: asyncio.Queue[str | bytes] = asyncio.Queue()
    inner = CompositeDisposable()

    def on_session(session: Session) -> None:
        inner.add(session.messages.subscribe(received.put_nowait))
        for greeting in greetings:
            session.send(greeting)

    outer = hub.sessions.subscribe(on_session)
    try:
        async with serve(hub, "127.0.0.1", port) as server:
            yield server.url, received
    finally:
        outer.dispose()
        inner.dispose()


async def take(queue: asyncio.Queue[str | bytes], n: int) -> list[str | bytes]:
    """The next `n` items of `queue`, waiting at most WAIT seconds in all."""
    async with asyncio.timeout(WAIT):
        return [await queue.get() for _ in range(n)]


# ------------------------------------------------------------------ usage errors


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["listen", "http://127.0.0.1:1/rx", "--count", "0"], "--count: must be ≥ 1, got 0"),
        (["listen", "http://127.0.0.1:1/rx", "--retries", "-1"], "--retries: must be ≥ 0"),
        (["send", "http://127.0.0.1:99999/rx", "x"], "port 99999 is out of range (0-65535)"),
        (["listen", "http://127.0.0.1:http/rx"], "port 'http' is not a number"),
        (["serve", "--port", "70000"], "must be within [0, 65535], got 70000"),
        (["send", "--binary", "http://127.0.0.1:1/rx", "0g"], "hex digits (two per byte)"),
        (["send", "--binary", "http://127.0.0.1:1/rx", "@/nonexistent"], "cannot read @/none"),
        (["serve", "--echo", "--broadcast"], "not allowed with argument"),
        (["send", "--plain", "http://127.0.0.1:1/events", "x"], "accepts no messages"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_line(args: list[str], fragment: str) -> None:
    """Bad numbers, ports, binary payloads, conflicting flags: exit 2 and say what is wrong."""
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert "9.22337e+18" not in result.stderr


# ------------------------------------------------------------------------ serve


@pytest.mark.asyncio
async def test_serve_print_shows_each_payload_with_its_session() -> None:
    """`serve --print`: one stdout line per received payload, after its session id."""
    async with started("serve", "--port", "0", "--print", "--ping-interval", "1") as hub:
        url = (await hub.line()).removeprefix("rxconn hub on ")
        async with started("send", url, "plain", "two\nlines") as send:
            assert await send.finish() == 0, send.stderr
        opened = await hub.line_matching(lambda line: "opened" in line, stream="stderr")
        session = re.fullmatch(rf"rxconn: session ({SESSION_ID}) opened \(rxconn\)", opened)
        assert session is not None, opened
        assert await hub.line() == f"{session[1]}: plain"
        assert await hub.line() == f"{session[1]}: two\\nlines"
        async with started("send", "--binary", url, "00ff") as send:
            assert await send.finish() == 0, send.stderr
        assert re.fullmatch(rf"{SESSION_ID}: hex:00ff", await hub.line())
        hub.process.send_signal(signal.SIGINT)
        assert await hub.finish() == 0


@pytest.mark.asyncio
async def test_serve_broadcast_sends_every_payload_to_every_session() -> None:
    """`serve --broadcast`: what one client sends reaches every client, the sender too."""
    async with started("serve", "--port", "0", "--broadcast") as hub:
        url = (await hub.line()).removeprefix("rxconn hub on ")
        async with (
            started("listen", url, "--count", "2") as one,
            started("listen", url, "--count", "2", "--transport", "http") as two,
        ):
            for listener in (one, two):
                await listener.line_matching(lambda line: "connected" in line, stream="stderr")
            async with started("send", url, "hi", "all") as send:
                assert await send.finish() == 0, send.stderr
            for listener in (one, two):
                assert await listener.finish() == 0, listener.stderr
                assert listener.stdout.splitlines() == ["hi", "all"]


@pytest.mark.asyncio
@pytest.mark.parametrize("prefix", ["", "/"])
async def test_serve_prefix_empty_serves_at_the_root(prefix: str) -> None:
    """`serve --prefix ''` (or '/'): /ws and /events at the root, over both transports."""
    async with started("serve", "--port", "0", "--prefix", prefix) as hub:
        url = (await hub.line()).removeprefix("rxconn hub on ")
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), url
        for transport in ("websocket", "http"):
            async with started("send", url, "x", "--transport", transport) as send:
                assert await send.finish() == 0, send.stderr
        hub.process.send_signal(signal.SIGTERM)
        assert await hub.finish() == 0


# ---------------------------------------------------------- retries and timeouts


@pytest.mark.asyncio
async def test_listen_keeps_trying_by_default() -> None:
    """Without --timeout or --retries, `listen` retries past the old 3-attempt limit."""
    async with started("listen", f"http://127.0.0.1:{free_port()}/rx") as listen:
        await listen.line_matching(lambda line: "attempt 4 failed" in line, stream="stderr")
        assert listen.process.returncode is None
        listen.process.send_signal(signal.SIGINT)
        assert await listen.finish() == 130


@pytest.mark.parametrize("command", ["listen", "send"])
def test_retries_n_gives_up_after_n_plus_1_attempts(command: str) -> None:
    """`--retries 1`: two failed attempts, then exit 1 naming them."""
    payload = ["x"] if command == "send" else []
    result = run(command, f"http://127.0.0.1:{free_port()}/rx", *payload, "--retries", "1")
    assert result.returncode == 1
    assert "gave up after 2 failed attempts" in result.stderr
    assert "attempt 2 failed" not in result.stderr


def test_listen_timeout_gives_up_without_a_link_and_says_why() -> None:
    """`listen --timeout 1`: no link within 1 s -> exit 1, naming the last failure."""
    result = run("listen", f"http://127.0.0.1:{free_port()}/rx", "--timeout", "1")
    assert result.returncode == 1
    error = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert_one_line_error(error[0], "no link open for 1 s", "cannot connect")


@pytest.mark.asyncio
async def test_listen_timeout_counts_from_the_loss_of_the_link() -> None:
    """`listen --timeout 1` outlives a long connected period, and gives up 1 s after the
    hub went away for good."""
    port = free_port()
    async with started("listen", f"http://127.0.0.1:{port}/rx", "--timeout", "1") as listen:
        async with recording_hub(port, "hello"):
            assert await listen.line() == "hello"
            await asyncio.sleep(1.5)  # connected for longer than --timeout: still listening
            assert listen.process.returncode is None
        assert await listen.finish(timeout=WAIT) == 1
    error = [line for line in listen.stderr.splitlines() if ": error: " in line]
    assert_one_line_error(error[0], "no link open for 1 s", "cannot connect")


def test_send_retries_until_its_timeout_and_names_each_transport() -> None:
    """`send --timeout 1.5` to nobody: retries until then; the error says why each
    transport of the fallback failed."""
    result = run("send", f"http://127.0.0.1:{free_port()}/rx", "x", "--timeout", "1.5")
    assert result.returncode == 1
    assert "attempt 2 failed" in result.stderr  # reported as they happen
    error = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert_one_line_error(
        error[0],
        "1 of 1 payload(s) not accepted within 1.5 s",
        "http: cannot connect",
        "fallback tried first: websocket: cannot connect",
    )


@pytest.mark.asyncio
async def test_send_waits_for_a_hub_that_starts_late() -> None:
    """`send` started before the hub keeps trying and delivers once the hub is up."""
    port = free_port()
    async with started("send", f"http://127.0.0.1:{port}/rx", "late", "--timeout", "15") as send:
        await send.line_matching(lambda line: "attempt 3 failed" in line, stream="stderr")
        async with recording_hub(port) as (_, received):
            assert await send.finish(timeout=WAIT) == 0, send.stderr
            assert await take(received, 1) == ["late"]


@pytest.mark.asyncio
async def test_listen_survives_a_hub_restart() -> None:
    """A hub that stops and starts again on the same port: `listen` reconnects (a new
    hub session) and goes on printing."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/rx"
    async with started("listen", url, "--count", "2") as listen:
        async with recording_hub(port, "before"):
            assert await listen.line() == "before"
        async with recording_hub(port, "after"):
            assert await listen.finish(timeout=WAIT) == 0, listen.stderr
    assert listen.stdout.splitlines() == ["after"]
    assert "failed" in listen.stderr  # it did lose the link in between


# ------------------------------------------------------------------ line format


@pytest.mark.asyncio
async def test_listen_prints_one_line_per_message_escaped() -> None:
    """Text with line breaks, tabs, backslashes and controls stays on one line; `hex:` text
    is told apart from binary."""
    messages = ["line1\r\nline2", "tab\tand\\", "ls\u2028ps\u2029nel\x85", "hex:00"]
    async with hub_that_greets(*messages, b"\x00") as server:
        async with started("listen", server.url, "--count", "5") as listen:
            assert await listen.finish() == 0, listen.stderr
    assert listen.stdout.split("\n") == [
        "line1\\r\\nline2",
        "tab\\tand\\\\",
        "ls\\u2028ps\\u2029nel\\x85",
        "hex\\x3a00",
        "hex:00",
        "",
    ]


@pytest.mark.asyncio
async def test_listen_json_is_exact() -> None:
    """`listen --json`: the exact payloads, one JSON object per line."""
    messages: list[str | bytes] = ["line1\r\nline2", "ls\u2028", b"\x00\xff"]
    async with hub_that_greets(*messages) as server:
        async with started("listen", server.url, "--json", "--count", "3") as listen:
            assert await listen.finish() == 0, listen.stderr
    lines = listen.stdout.split("\n")
    assert lines[-1] == ""
    assert [json.loads(line) for line in lines[:-1]] == [
        {"type": "text", "data": "line1\r\nline2"},
        {"type": "text", "data": "ls\u2028"},
        {"type": "binary", "data": "AP8="},
    ]


@pytest.mark.asyncio
async def test_send_binary_from_hex_file_and_stdin(tmp_path: Path) -> None:
    """`send --binary`: hex digits and @FILE become bytes, in order; @- reads stdin."""
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\x01\x02\x03")
    async with recording_hub() as (url, received):
        async with started("send", "--binary", url, "00ff", "68 69", f"@{blob}") as send:
            assert await send.finish() == 0, send.stderr
        assert await take(received, 3) == [b"\x00\xff", b"hi", b"\x01\x02\x03"]
        process = await asyncio.create_subprocess_exec(
            *RXCONN,
            "send",
            "--binary",
            url,
            "@-",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        async with asyncio.timeout(RUN_TIMEOUT):
            _, err = await process.communicate(b"\xfe\xed")
        assert process.returncode == 0, err
        assert await take(received, 1) == [b"\xfe\xed"]


# ---------------------------------------------------------------- plain servers


@asynccontextmanager
async def plain_websocket_server(
    *greetings: str, any_subprotocol: bool = False
) -> AsyncIterator[tuple[str, asyncio.Queue[str | bytes]]]:
    """A `websockets` server (not the hub): greets each client, records what it receives.

    With `any_subprotocol` it accepts whatever subprotocol the client offers, as
    some servers do (Node's `ws` with a permissive handler).
    """
    received: asyncio.Queue[str | bytes] = asyncio.Queue()

    async def handler(connection: ServerConnection) -> None:
        for greeting in greetings:
            await connection.send(greeting)
        async for message in connection:
            received.put_nowait(message)

    def select(_: ServerConnection, offered: object) -> Subprotocol | None:
        return offered[0] if isinstance(offered, list | tuple) and offered else None

    options: dict[str, Callable[..., Subprotocol | None]] = {}
    if any_subprotocol:
        options["select_subprotocol"] = select
    async with ws_serve(handler, "127.0.0.1", 0, **options) as server:  # type: ignore[arg-type]
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/", received


@pytest.mark.asyncio
async def test_plain_listen_and_send_with_a_websockets_server() -> None:
    """`--plain` speaks plain frames: listen prints what the server sends, send delivers."""
    async with plain_websocket_server("hello", "world") as (url, received):
        async with started("listen", "--plain", url, "--count", "2") as listen:
            assert await listen.finish() == 0, listen.stderr
        assert listen.stdout.splitlines() == ["hello", "world"]
        assert "connected over websocket" in listen.stderr
        async with started("send", "--plain", url, "a", "b") as send:
            assert await send.finish() == 0, send.stderr
        assert await take(received, 2) == ["a", "b"]


@pytest.mark.asyncio
async def test_without_plain_a_foreign_server_is_explained() -> None:
    """A server that accepts any subprotocol but is not the hub: exit 1, say so, hint --plain."""
    async with plain_websocket_server("hello", any_subprotocol=True) as (url, _):
        args = ("send", url, "x", "--transport", "websocket", "--exact-url")
        async with started(*args) as send:
            assert await send.finish() == 1
    assert_one_line_error(send.stderr, "bad welcome", "use --plain")


@asynccontextmanager
async def plain_sse_server(*events: str) -> AsyncIterator[str]:
    """An SSE endpoint that is not the hub: sends `events`, then holds the stream open."""
    hold = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in events:
            await response.write(f"data: {event}\n\n".encode())
        await hold.wait()
        return response

    app = web.Application()
    app.router.add_get("/stream", stream)
    runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}/stream"
    finally:
        hold.set()
        await runner.cleanup()


@pytest.mark.asyncio
async def test_plain_listen_with_an_sse_server() -> None:
    """`listen --plain http://…` receives from any Server-Sent Events endpoint."""
    async with plain_sse_server("one", "two") as url:
        async with started("listen", "--plain", url, "--count", "2") as listen:
            assert await listen.finish() == 0, listen.stderr
    assert listen.stdout.splitlines() == ["one", "two"]
    assert "connected over http" in listen.stderr


@pytest.mark.asyncio
async def test_send_to_a_receive_only_sse_server_says_it_accepts_no_messages() -> None:
    """`send` over HTTP to an SSE server that is not the hub: exit 1, explained."""
    async with plain_sse_server() as url:
        args = ("send", url, "x", "--transport", "http", "--exact-url", "--timeout", "1")
        async with started(*args) as send:
            assert await send.finish() == 1
    assert_one_line_error(send.stderr, "not accepted within 1 s", "accepts no messages")
