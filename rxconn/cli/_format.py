r"""One message, one line: how ``listen`` and ``serve --print`` show payloads, and how
``send --binary`` reads them.

A line is either **binary** or **text**, never both, and never more than one line:

* binary: ``hex:`` followed by two lowercase hex digits per byte (``hex:00ff``);
* text: the text itself, with a backslash written ``\\``, newline, carriage
  return and tab written ``\n``, ``\r``, ``\t``, every other character that could
  break a line or drive the terminal (C0 and C1 controls, DEL, U+2028, U+2029,
  lone surrogates) written ``\xNN`` or ``\uNNNN``, and the colon of a leading
  ``hex:`` written ``\x3a`` so that text is never taken for binary.

:func:`parse_line` inverts :func:`format_message`. ``--json`` prints one JSON
object per message instead (``{"type": "text" | "binary", "data": ...}``, binary
data in base64); those lines are exact too and never contain a line break
(not even one of the Unicode ones that ``str.splitlines`` honours).
"""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path
from typing import Final

from ._console import UsageError


__all__ = ["BINARY_PREFIX", "binary_payload", "format_message", "parse_line"]

BINARY_PREFIX: Final = "hex:"

_NEEDS_ESCAPE: Final = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_SHORT: Final = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPED: Final = re.compile(r"\\(?:([\\nrt])|x([0-9a-f]{2})|u([0-9a-f]{4}))")
_UNSHORT: Final = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
_JSON_LINE_BREAKS: Final = re.compile("[\x85\u2028\u2029\ud800-\udfff]")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _escape_text(text: str) -> str:
    escaped = _NEEDS_ESCAPE.sub(_escape_char, text)
    if escaped.startswith(BINARY_PREFIX):
        escaped = "hex\\x3a" + escaped[len(BINARY_PREFIX) :]
    return escaped


def format_message(payload: str | bytes, as_json: bool) -> str:
    """The one output line for ``payload`` (see the module docstring)."""
    if as_json:
        if isinstance(payload, str):
            obj = {"type": "text", "data": payload}
        else:
            obj = {"type": "binary", "data": base64.b64encode(payload).decode("ascii")}
        line = json.dumps(obj, ensure_ascii=False)
        return _JSON_LINE_BREAKS.sub(lambda m: f"\\u{ord(m.group()):04x}", line)
    if isinstance(payload, str):
        return _escape_text(payload)
    return BINARY_PREFIX + payload.hex()


def _unescape_char(match: re.Match[str]) -> str:
    short, byte, unit = match.groups()
    if short is not None:
        return _UNSHORT[short]
    return chr(int(byte if byte is not None else unit, 16))


def parse_line(line: str) -> str | bytes:
    """The payload a (non-JSON) ``listen`` line shows: the inverse of :func:`format_message`.

    Raises:
        ValueError: for a ``hex:`` line whose digits are not hex.
    """
    if line.startswith(BINARY_PREFIX):
        return bytes.fromhex(line[len(BINARY_PREFIX) :])
    return _ESCAPED.sub(_unescape_char, line)


def binary_payload(argument: str) -> bytes:
    """A ``send --binary`` PAYLOAD: hex digits (spaces allowed between bytes), or
    ``@PATH`` for a file's bytes (``@-``: standard input).

    Raises:
        UsageError: for anything else, or a file that cannot be read.
    """
    if argument.startswith("@"):
        path = argument[1:]
        if path == "-":
            return sys.stdin.buffer.read()
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {argument}: {exc.strerror or exc}") from exc
    try:
        return bytes.fromhex(argument)
    except ValueError:
        raise UsageError(
            f"--binary payloads are hex digits (two per byte) or @FILE, got {argument!r}"
        ) from None
