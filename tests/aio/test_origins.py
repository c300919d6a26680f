"""The hub's origin rule: DNS rebinding is refused, allowed_origins entries are normalised.

Same origin without configuration holds only for hosts that DNS rebinding cannot
forge (IP literals, ``localhost``); any named host must be listed. Entries of
``allowed_origins`` are compared in the form a browser sends them.
"""

from __future__ import annotations

import aiohttp
import pytest

from rxconn.server import Hub, serve
from rxconn.server._origins import is_same_origin, normalize_origin


PREFLIGHT = {"Access-Control-Request-Method": "POST"}


# ------------------------------------------------------------------ normalisation


@pytest.mark.parametrize(
    ("entry", "serialized"),
    [
        ("https://Cfg.Example/", "https://cfg.example"),
        ("HTTPS://APP.EXAMPLE", "https://app.example"),
        ("http://app.example:80", "http://app.example"),
        ("https://app.example:443/", "https://app.example"),
        ("https://app.example:8443", "https://app.example:8443"),
        ("http://app.example:443", "http://app.example:443"),
        ("http://[0:0::1]:8080", "http://[::1]:8080"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
        (" https://app.example ", "https://app.example"),
        ("capacitor://localhost", "capacitor://localhost"),
    ],
)
def test_allowed_origins_are_serialized_as_browsers_send_them(entry: str, serialized: str) -> None:
    """Scheme and host lower-cased, trailing slash and default port dropped, IDNA, IPs."""
    assert normalize_origin(entry) == serialized
    assert Hub(allowed_origins=[entry]).allowed_origins == {serialized}


@pytest.mark.parametrize(
    "entry",
    [
        "https://app.example/path",
        "https://app.example/?q=1",
        "https://app.example?",
        "https://app.example#top",
        "https://user:pw@app.example",
        "https://user@app.example",
        "app.example",
        "https://",
        "https://app.example:0",
        "https://app.example:65536",
        "https://app.example:http",
        "http://[::1",
        "*",
        "null",
    ],
)
def test_entries_that_are_not_origins_are_refused_at_hub(entry: str) -> None:
    """A path, query, fragment, user info, bad port, wildcard or null: ValueError."""
    with pytest.raises(ValueError, match="allowed_origins"):
        Hub(allowed_origins=["https://fine.example", entry])


def test_a_single_string_is_not_taken_for_a_list_of_characters() -> None:
    """allowed_origins="https://app.example" is a mistake worth a clear error."""
    with pytest.raises(TypeError, match="allowed_origins"):
        Hub(allowed_origins="https://app.example")


@pytest.mark.parametrize(
    ("origin", "scheme", "host", "same"),
    [
        ("http://127.0.0.1:8080", "http", "127.0.0.1:8080", True),
        ("http://[::1]:8080", "http", "[::1]:8080", True),
        ("http://localhost:8080", "http", "localhost:8080", True),
        ("http://app.localhost", "http", "app.localhost:80", True),
        ("http://localhost", "http", "LOCALHOST", True),
        ("http://evil.example:8080", "http", "evil.example:8080", False),  # DNS rebinding
        ("http://127.0.0.1.nip.io:8080", "http", "127.0.0.1.nip.io:8080", False),
        ("https://127.0.0.1:8080", "http", "127.0.0.1:8080", False),  # other scheme
        ("http://127.0.0.1:8081", "http", "127.0.0.1:8080", False),  # other port
        ("http://127.0.0.2:8080", "http", "127.0.0.1:8080", False),  # other host
        ("null", "http", "127.0.0.1:8080", False),
        ("http://127.0.0.1:8080/x", "http", "127.0.0.1:8080", False),
        ("", "http", "", False),
    ],
)
def test_same_origin_needs_a_host_that_dns_rebinding_cannot_forge(
    origin: str, scheme: str, host: str, same: bool
) -> None:
    """Origin == scheme://Host counts only for IP literals and localhost names."""
    assert is_same_origin(origin, scheme, host) is same


# ------------------------------------------------------------------ the hub's answers


@pytest.mark.asyncio
async def test_dns_rebinding_is_refused_on_every_endpoint() -> None:
    """Origin and Host naming the same attacker's name get 403, the upgrade included."""
    async with serve(Hub()) as server, aiohttp.ClientSession() as http:
        rebound = f"evil.example:{server.port}"
        headers = {"Origin": f"http://{rebound}", "Host": rebound}
        async with http.get(server.url + "/events", headers=headers) as resp:
            assert resp.status == 403
        async with http.post(server.url + "/messages", json={}, headers=headers) as resp:
            assert resp.status == 403
        async with http.options(server.url + "/messages", headers={**headers, **PREFLIGHT}) as resp:
            assert resp.status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with http.ws_connect(server.url + "/ws", headers=headers):
                pass  # pragma: no cover
        assert refused.value.status == 403


@pytest.mark.asyncio
async def test_a_named_host_is_same_origin_only_when_listed() -> None:
    """The hub's own named origin passes once it is in allowed_origins (any spelling)."""
    hub = Hub(allowed_origins=["HTTP://Hub.Example:80/"])
    async with serve(hub) as server, aiohttp.ClientSession() as http:
        url = server.url + "/messages"
        listed = {"Origin": "http://hub.example", "Host": "hub.example"}
        async with http.options(url, headers={**listed, **PREFLIGHT}) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "http://hub.example"
        other = {"Origin": "http://other.example", "Host": "other.example"}
        async with http.options(url, headers={**other, **PREFLIGHT}) as resp:
            assert resp.status == 403


@pytest.mark.asyncio
async def test_ip_literal_and_localhost_pages_are_same_origin_without_configuration() -> None:
    """A page served from the hub's own IP or localhost origin needs no allowed_origins."""
    async with serve(Hub()) as server, aiohttp.ClientSession() as http:
        url = server.url + "/messages"
        for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}"):
            headers = {"Origin": f"http://{host}", "Host": host, **PREFLIGHT}
            async with http.options(url, headers=headers) as resp:
                assert resp.status == 204, host
                assert "Access-Control-Allow-Origin" not in resp.headers
        async with http.ws_connect(
            server.url + "/ws", headers={"Origin": f"http://127.0.0.1:{server.port}"}
        ) as ws:
            assert not ws.closed
        mismatched = {"Origin": f"https://127.0.0.1:{server.port}", **PREFLIGHT}
        async with http.options(url, headers=mismatched) as resp:
            assert resp.status == 403  # another scheme is another origin


@pytest.mark.asyncio
async def test_normalised_entry_matches_the_browsers_origin() -> None:
    """ "https://Cfg.Example/" in allowed_origins admits Origin: https://cfg.example."""
    hub = Hub(allowed_origins=["https://Cfg.Example/"])
    async with serve(hub) as server, aiohttp.ClientSession() as http:
        headers = {"Origin": "https://cfg.example", **PREFLIGHT}
        async with http.options(server.url + "/events", headers=headers) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "https://cfg.example"
            assert resp.headers["Vary"] == "Origin"


@pytest.mark.asyncio
async def test_requests_without_origin_are_still_allowed() -> None:
    """Non-browser clients send no Origin, whatever their Host: allowed as before."""
    async with serve(Hub()) as server, aiohttp.ClientSession() as http:
        headers = {"Host": "anything.example", **PREFLIGHT}
        async with http.options(server.url + "/messages", headers=headers) as resp:
            assert resp.status == 204
