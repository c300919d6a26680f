"""Small shared types with no dependencies (usable by the sans-I/O layer)."""

from __future__ import annotations

from typing import TypeAlias


__all__ = ["Payload", "coerce_payload", "require_utf8"]

Payload: TypeAlias = str | bytes
"""A message: text as ``str``, binary as ``bytes``."""


def coerce_payload(payload: object) -> Payload:
    """``payload`` as ``str`` or ``bytes``, refusing what no link could carry.

    Bytes-like values become ``bytes`` and ``str`` subclasses plain ``str``.
    Text must be encodable as UTF-8: a ``str`` with a lone surrogate (which
    JSON and Python happily carry) would fail every write of every link and
    be retried forever, so it is refused here, at the caller.

    Raises:
        TypeError: for anything but text or bytes-like data.
        ValueError: for text that is not valid Unicode (lone surrogates).
    """
    kind = type(payload)
    if kind is not str and kind is not bytes:
        if isinstance(payload, str):
            payload = str(payload)
        elif isinstance(payload, bytes | bytearray | memoryview):
            return bytes(payload)
        else:
            raise TypeError(f"send() takes str or bytes, got {kind.__name__}")
    if type(payload) is str and not payload.isascii():
        require_utf8(payload)
    return payload  # type: ignore[return-value]


def require_utf8(text: str) -> None:
    """Refuse text no link could write: a ``str`` with a lone surrogate is not UTF-8.

    Raises:
        ValueError: naming the offending character and where it is.
    """
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"text cannot be encoded as UTF-8 ({exc.reason} {text[exc.start]!r} "
            f"at index {exc.start}); no link could ever write it"
        ) from None
