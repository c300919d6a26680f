"""The client against hostile or broken servers: credentials stay on their origin, secrets
stay out of task names and causes, and a 410 after a hub restart renews the session at once.

Each test here failed on the client before the hardening issue (#11) was fixed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from typing import Any

import pytest
from aiohttp import web

import rxconn
from rxconn.errors import ProtocolError, SessionExpired, TransportError
from rxconn.server import Hub, serve
from tests.helpers import FAST, Recorder, app_server, reach


pytestmark = pytest.mark.asyncio(loop_scope="function")

SECRET = "SECRET-TOKEN"


class Recording:
    """An aiohttp app that records every request it gets (the "other origin")."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    async def any(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.requests.append((request.method, request.path, dict(request.headers)))
        return web.json_response({"last": 0})

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self.any)


async def first_errored(conn: rxconn.Connection) -> rxconn.Errored:
    state = await reach(conn, lambda s: isinstance(s, rxconn.Errored))
    assert isinstance(state, rxconn.Errored)
    return state


async def test_a_session_event_naming_another_origin_gets_nothing() -> None:
    """A hub whose session event names a POST URL on another origin: fatal ProtocolError,
    and neither the transport's headers nor any payload reach that origin."""
    other = Recording()
    async with app_server(other.routes) as other_url:

        async def events(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "X-Rxconn": "v1"}
            )
            await resp.prepare(request)
            data = json.dumps(
                {"session": "s1", "post": other_url + "/steal", "last": 0, "resumed": False}
                | {"key": "k"}
            )
            await resp.write(f"event: session\nid: s1:0\ndata: {data}\n\n".encode())
            await asyncio.sleep(5)
            return resp

        async with app_server(lambda app: app.router.add_get("/events", events)) as url:
            conn = rxconn.Connection(
                rxconn.http(url + "/events", headers={"Authorization": f"Bearer {SECRET}"}),
                backoff=FAST,
            )
            conn.send("private payload")
            failure = await first_errored(conn)
            assert isinstance(failure.error, ProtocolError) and failure.retry_in is None
            assert conn.close() == ["private payload"]
    assert other.requests == []


@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_redirects_to_another_origin_are_not_followed_with_custom_headers(
    kind: str,
) -> None:
    """With headers of the user's, a redirect to another origin (or https → http, which is
    one) is refused before anything is sent there; a same-origin redirect is followed."""
    other = Recording()
    async with app_server(other.routes) as other_url:

        async def away(_: web.Request) -> web.StreamResponse:
            raise web.HTTPTemporaryRedirect(other_url + "/rx/events")

        async with app_server(lambda app: app.router.add_get("/rx/{any}", away)) as url:
            headers = {"X-Api-Key": SECRET}
            transport = (
                rxconn.http(url + "/rx/events", headers=headers)
                if kind == "http"
                else rxconn.websocket(url + "/rx/ws", headers=headers)
            )
            conn = rxconn.Connection(transport, backoff=FAST)
            failure = await first_errored(conn)
            conn.close()
            assert isinstance(failure.error, TransportError), failure.error
            assert failure.retry_in is None and "another origin" in str(failure.error)
            assert SECRET not in str(failure.error)
    assert other.requests == []


async def test_a_same_origin_redirect_is_followed_with_custom_headers() -> None:
    """The HTTP link follows a redirect that stays on its origin, headers and all."""
    hub = Hub(echo=True, ping_interval=5.0)
    root = web.Application()

    async def moved(_: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect("/rx/events")

    root.router.add_get("/old/events", moved)
    root.add_subapp("/rx", hub.app())
    async with app_server(root) as url:
        conn = rxconn.Connection(
            rxconn.http(url + "/old/events", headers={"X-Api-Key": SECRET}), backoff=FAST
        )
        received = Recorder(conn.messages)
        conn.send("through")
        assert await received.count(1) == ["through"]
        received.dispose()
        conn.close()
        hub.shutdown()


async def test_secrets_in_the_url_stay_out_of_task_names_and_error_causes() -> None:
    """user:pass and ?token= never appear in link task names or in a logged traceback."""

    async def refuse(_: web.Request) -> web.StreamResponse:
        return web.json_response({"error": "nope"}, status=503)

    async with app_server(lambda app: app.router.add_get("/rx/{any}", refuse)) as base:
        port = base.rsplit(":", 1)[1]
        url = f"http://user:{SECRET}@127.0.0.1:{port}/rx/ws?token={SECRET}"
        conn = rxconn.Connection(rxconn.websocket(url), backoff=FAST)
        states = Recorder(conn.state)
        names = [task.get_name() for task in asyncio.all_tasks()]
        failure = await first_errored(conn)
        names += [task.get_name() for task in asyncio.all_tasks()]
        printed = "".join(traceback.format_exception(failure.error))
        states.dispose()
        conn.close()
    assert any("rxconn websocket" in name for name in names)
    assert not [name for name in names if SECRET in name]
    assert failure.error.__cause__ is not None
    assert SECRET not in printed and "user" not in printed, printed


async def test_a_410_after_a_hub_restart_opens_the_new_session_at_once() -> None:
    """The hub comes back empty: the next attempt's 410 is followed by the new session
    immediately (Errored(..., retry_in=0.0)), not by the grown backoff delay."""
    slow = rxconn.Backoff(initial=0.5, factor=2.0, max_delay=5.0, jitter=0.0)
    async with serve(Hub(echo=True, ping_interval=5.0)) as first:
        port = first.port
        conn = rxconn.Connection(rxconn.websocket(first.url + "/ws"), backoff=slow)
        states = Recorder(conn.state)
        received = Recorder(conn.messages)
        conn.send("before")
        await received.count(1)
    await states.until(lambda items: isinstance(items[-1], rxconn.Errored))
    async with serve(Hub(echo=True, ping_interval=5.0), port=port):
        await states.until(lambda items: any(_expired(s) for s in items), timeout=10.0)
        expired = next(s for s in states.items if _expired(s))
        assert expired.retry_in == 0.0
        await states.until(lambda items: items[-1] == rxconn.Connected("websocket"), 2.0)
        conn.send("after")
        await received.count(2)
        assert received.items == ["before", "after"]
        assert conn.session_resets == 1
        states.dispose()
        received.dispose()
        conn.close()


def _expired(state: Any) -> bool:
    return isinstance(state, rxconn.Errored) and isinstance(state.error, SessionExpired)


async def test_the_library_logs_nothing_to_stderr_by_default() -> None:
    """The rxconn logger has a NullHandler: an app without logging config sees nothing."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import logging, rxconn; logging.getLogger('rxconn').warning('should not show')",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0 and out == b"" and err == b""
