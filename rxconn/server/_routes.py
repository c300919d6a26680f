"""Route table of the hub, with the same-origin / allowed-origins check and CORS headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from ._http import handle_events, handle_messages
from ._ws import handle_websocket


if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["add_routes"]

CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "Content-Type, Last-Event-ID, X-Rxconn"


def _cors(request: web.Request, hub: Hub) -> dict[str, str] | None:
    """CORS headers to add, or None if the request's Origin is refused."""
    origin = request.headers.get("Origin")
    if origin is None:
        return {}  # not a browser cross-origin request
    if origin == f"{request.scheme}://{request.host}":
        return {}
    if origin in hub.allowed_origins:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return None


def _forbidden() -> web.Response:
    return web.json_response({"error": "origin not allowed"}, status=403)


def add_routes(app: web.Application, hub: Hub) -> None:
    async def websocket(request: web.Request) -> web.StreamResponse:
        if _cors(request, hub) is None:
            return _forbidden()
        if not hub.websocket_enabled:
            return web.json_response({"error": "WebSocket disabled"}, status=503)
        return await handle_websocket(request, hub)

    async def events(request: web.Request) -> web.StreamResponse:
        cors = _cors(request, hub)
        if cors is None:
            return _forbidden()
        return await handle_events(request, hub, cors)

    async def messages(request: web.Request) -> web.StreamResponse:
        cors = _cors(request, hub)
        if cors is None:
            return _forbidden()
        return await handle_messages(request, hub, cors)

    async def preflight(request: web.Request) -> web.StreamResponse:
        cors = _cors(request, hub)
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
        ("OPTIONS", "/events", preflight, None),
        ("OPTIONS", "/messages", preflight, None),
    ]
    for method, path, fn, name in routes:
        app.router.add_route(method, path, fn, name=name)
