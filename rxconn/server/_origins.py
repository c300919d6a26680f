"""Origins: normalising ``Hub(allowed_origins=...)``, and the hub's same-origin rule.

A browser sends ``Origin`` as a serialized origin: ``scheme://host[:port]`` with the
scheme and host in lower case, the host in ASCII (IDNA), IPv6 in brackets and
compressed, and no port when it is the scheme's default. Entries of
``allowed_origins`` are brought to that form once, at ``Hub(...)``, so that a check
is one set lookup and ``"https://Cfg.Example/"`` matches what a browser sends.

Same origin without configuration. Comparing ``Origin`` with ``scheme://Host`` is not
enough: under DNS rebinding, a page from ``http://evil.example:8080`` whose name the
attacker has pointed at this server's address sends ``Origin: http://evil.example:8080``
*and* ``Host: evil.example:8080``, so the two always agree. They prove the page came
from this server only when the host is a name that nobody can point elsewhere: an IP
literal (the browser connected to exactly that address, so that origin *is* this
server) or ``localhost`` and names under ``.localhost`` (RFC 6761: browsers resolve
them to the loopback address themselves, and no DNS zone can delegate them). Any
other host must be listed in ``allowed_origins``, even for pages the hub's own
server serves.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import NamedTuple


__all__ = ["is_same_origin", "normalize_origin", "normalize_origins"]

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

_ORIGIN = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<authority>[^/?#@\\\s]+)")
_PORT = re.compile(r"[0-9]{1,5}")


class _Origin(NamedTuple):
    """A tuple origin: lower-case scheme, canonical host (IPv6 without brackets), port."""

    scheme: str
    host: str
    port: int | None  # None: the scheme's default (or the scheme has none)

    def serialize(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (
            f"{self.scheme}://{host}"
            if self.port is None
            else f"{self.scheme}://{host}:{self.port}"
        )


def _canonical_host(host: str) -> str | None:
    """``host`` as a browser writes it in an origin, or None if it is not a host."""
    if host.startswith("["):
        if not host.endswith("]"):
            return None
        try:
            return ipaddress.IPv6Address(host[1:-1]).compressed
        except ValueError:
            return None
    if not host or ":" in host:
        return None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    host = host.lower()
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        return host


def _parse(text: str) -> _Origin | None:
    """Parse ``scheme://host[:port]`` (nothing else: no path, user info, query...), or None."""
    match = _ORIGIN.fullmatch(text)
    if match is None:
        return None
    scheme = match["scheme"].lower()
    authority = match["authority"]
    port: int | None = None
    host, colon, port_text = authority.rpartition(":")
    if not colon or (host.startswith("[") and not host.endswith("]")):
        host = authority  # no port ("[::1]" alone also splits at a colon)
    elif _PORT.fullmatch(port_text) and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        return None
    canonical = _canonical_host(host)
    if canonical is None:
        return None
    if port is not None and DEFAULT_PORTS.get(scheme) == port:
        port = None
    return _Origin(scheme, canonical, port)


def normalize_origin(entry: str) -> str:
    """One ``allowed_origins`` entry, serialized as a browser sends ``Origin``.

    Lower-cases the scheme and host, drops a trailing ``/`` and a default port
    (``:80`` for http, ``:443`` for https), writes an internationalised host in
    ASCII and an IP address canonically.

    Raises:
        ValueError: ``entry`` is not an origin: it has a path, query, fragment or
            user info, no host, a bad port, or is ``"*"`` or ``"null"`` (a wildcard
            would let every site in; ``null`` is the shared origin of every sandboxed
            or ``file:`` document, so listing it would let any of them in).
    """
    text = entry.strip()
    if text in ("*", "null"):
        raise ValueError(
            f"allowed_origins cannot contain {entry!r}: list each origin that may connect"
        )
    origin = _parse(text.removesuffix("/"))
    if origin is None:
        raise ValueError(
            f"allowed_origins entry {entry!r} is not an origin: expected "
            "scheme://host[:port], with no path, query, fragment or user info"
        )
    return origin.serialize()


def normalize_origins(entries: Iterable[str]) -> frozenset[str]:
    """Every entry normalised (see `normalize_origin`), as the set the hub looks up."""
    if isinstance(entries, str):
        raise TypeError("allowed_origins must be a list of origins, not a single string")
    return frozenset(normalize_origin(entry) for entry in entries)


def _rebinding_proof(host: str) -> bool:
    """Whether no one but this machine can make a browser reach ``host`` (see module doc)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_same_origin(origin: str, scheme: str, host: str) -> bool:
    """Whether an ``Origin`` header names this server itself, beyond DNS rebinding's reach.

    ``scheme`` and ``host`` are the request's own (``request.scheme``,
    ``request.host``). True only when the two agree *and* the host is an IP literal,
    ``localhost`` or a name under ``.localhost``: for any other name, an attacker's
    page can make them agree (see the module docstring).
    """
    theirs = _parse(origin)
    if theirs is None or not _rebinding_proof(theirs.host):
        return False
    return theirs == _parse(f"{scheme}://{host}")
