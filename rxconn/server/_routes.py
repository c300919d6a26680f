"""Route table of the hub, with the same-origin / allowed-origins check and CORS headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from .. import wire
from ._http import handle_events, handle_messages
from ._origins import is_same_origin
from ._poll import HOLD_HEADER, LINK_HEADER, handle_poll, handle_poll_delete
from ._ws import handle_websocket


if TYPE_CHECKING:
    from ._registry import Registry

__all__ = ["add_routes"]

CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_HEADERS = (
    f"Content-Type, Last-Event-ID, {wire.HUB_HEADER}, {wire.KEY_HEADER}, "
    f"{LINK_HEADER}, {HOLD_HEADER}, {wire.PROBE_HEADER}"
)


def _cors(request: web.Request, registry: Registry) -> dict[str, str] | None:
    """CORS headers to add, or None if the request's Origin is refused.

    Allowed: no ``Origin`` (not a browser's cross-origin request), an origin listed
    in ``allowed_origins`` (normalised at ``Hub(...)`` to the browser's form, so one
    lookup), and the request's own origin when its host is an IP literal or
    ``localhost``; a named host cannot prove it under DNS rebinding (see `_origins`).
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return {}  # not a browser cross-origin request
    if origin in registry.settings.allowed_origins:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    if is_same_origin(origin, request.scheme, request.host):
        return {}
    return None


def _forbidden() -> web.Response:
    return web.json_response({"error": "origin not allowed"}, status=403)


def add_routes(app: web.Application, registry: Registry) -> None:
    async def websocket(request: web.Request) -> web.StreamResponse:
        if _cors(request, registry) is None:
            return _forbidden()
        if not registry.websocket_enabled:
            return web.json_response({"error": "WebSocket disabled"}, status=503)
        return await handle_websocket(request, registry)

    async def events(request: web.Request) -> web.StreamResponse:
        cors = _cors(request, registry)
        if cors is None:
            return _forbidden()
        return await handle_events(request, registry, cors)

    async def messages(request: web.Request) -> web.StreamResponse:
        cors = _cors(request, registry)
        if cors is None:
            return _forbidden()
        return await handle_messages(request, registry, cors)

    async def poll(request: web.Request) -> web.StreamResponse:
        cors = _cors(request, registry)
        if cors is None:
            return _forbidden()
        return await handle_poll(request, registry, cors)

    async def poll_delete(request: web.Request) -> web.StreamResponse:
        cors = _cors(request, registry)
        if cors is None:
            return _forbidden()
        return await handle_poll_delete(request, registry, cors)

    async def preflight(request: web.Request) -> web.StreamResponse:
        cors = _cors(request, registry)
        if cors is None:
            return _forbidden()
        headers = {
            **cors,
            "Access-Control-Allow-Methods": CORS_METHODS,
            "Access-Control-Allow-Headers": CORS_HEADERS,
            "Access-Control-Max-Age": "600",
        }
        return web.Response(status=204, headers=headers)

    handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
    routes: list[tuple[str, str, handler, str | None]] = [
        ("GET", "/ws", websocket, "rxconn-ws"),
        ("GET", "/events", events, "rxconn-events"),
        ("POST", "/messages", messages, "rxconn-messages"),
        ("GET", "/poll", poll, "rxconn-poll"),
        ("DELETE", "/poll", poll_delete, None),
        ("OPTIONS", "/events", preflight, None),
        ("OPTIONS", "/poll", preflight, None),
        ("OPTIONS", "/messages", preflight, None),
    ]
    for method, path, fn, name in routes:
        app.router.add_route(method, path, fn, name=name)
