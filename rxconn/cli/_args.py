"""Argument types and shared options for the parser built in :mod:`rxconn.cli`.

They turn bad input into argparse usage errors (exit code 2) before any command runs.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Final, TypeVar


__all__ = ["TRANSPORTS", "URL_HELP", "add_client_options", "number_in", "positive", "url_prefix"]

TRANSPORTS: Final = ("auto", "websocket", "http")

_N = TypeVar("_N", int, float)


def number_in(kind: Callable[[str], _N], low: _N, high: _N | None = None) -> Callable[[str], _N]:
    """An argparse type: a number of ``kind`` (int or float) within ``[low, high]``
    (no upper bound when ``high`` is None)."""

    def parse(text: str) -> _N:
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if high is None and not low <= value:
            raise argparse.ArgumentTypeError(f"must be ≥ {low:g}, got {text}")
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be within [{low:g}, {high:g}], got {text}")
        return value

    return parse


def positive(text: str) -> float:
    """An argparse type: seconds > 0."""
    value = number_in(float, 0.0, math.inf)(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def url_prefix(text: str) -> str:
    """An argparse type: a URL prefix such as ``/rx``, or ``''`` (or ``/``) for the root."""
    if text in ("", "/"):
        return ""
    if not text.startswith("/") or text.endswith("/"):
        raise argparse.ArgumentTypeError(
            f"must start with '/' and not end with it (or be '' for the root): {text!r}"
        )
    return text


def add_client_options(
    parser: argparse.ArgumentParser, timeout_help: str, default_timeout: float | None
) -> None:
    """Options shared by ``listen`` and ``send``."""
    parser.add_argument("url", metavar="URL", help="hub base URL, or endpoint (see below)")
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="auto",
        help="auto: WebSocket with HTTP fallback (default); or one transport only",
    )
    parser.add_argument(
        "--exact-url",
        action="store_true",
        help="with --transport websocket/http, use URL as is (no /ws or /events appended)",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="no hub protocol (hub=False): any WebSocket server, or any SSE server "
        "(receive only); the URL is used as given",
    )
    parser.add_argument(
        "--timeout", type=positive, default=default_timeout, metavar="S", help=timeout_help
    )
    parser.add_argument(
        "--retries",
        type=number_in(int, 0),
        metavar="N",
        help="give up after N retries in a row, N+1 failed attempts (default: keep trying)",
    )


URL_HELP: Final = """\
URL: with --transport auto, the hub's base URL (http://host:8080/rx; a trailing
/ws or /events is dropped). With websocket or http, the endpoint: /ws or /events
is appended unless the path already ends with it (or --exact-url is given).
With --plain the URL is used as given; with --transport auto a ws(s):// URL means
WebSocket and an http(s):// URL Server-Sent Events.
Retries until --timeout (or --retries N retries in a row) and gives up at once
on a fatal error (e.g. 404).
Exit codes: 0 ok, 1 failure, 2 bad arguments or URL, 130 interrupted."""
