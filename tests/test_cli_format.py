"""One message, one line: the line format of `listen` / `serve --print`, and `send --binary`."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rxconn.cli import format_message, parse_line
from rxconn.cli._console import UsageError
from rxconn.cli._format import binary_payload


# Everything str.splitlines() breaks on: no output line may contain one of them.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()))  # surrogates too


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("line1\r\nline2", "line1\\r\\nline2"),
        ("tab\there", "tab\\there"),
        ("back\\slash", "back\\\\slash"),
        ("bell\x07 esc\x1b[31m del\x7f", "bell\\x07 esc\\x1b[31m del\\x7f"),
        ("nel\x85 ls\u2028 ps\u2029", "nel\\x85 ls\\u2028 ps\\u2029"),
        ("hex:00ff", "hex\\x3a00ff"),  # text never looks like binary
        ("héllo wörld ✓", "héllo wörld ✓"),  # printable Unicode as is
        ("", ""),
    ],
)
def test_text_is_escaped_onto_one_line(text: str, line: str) -> None:
    """Line breaks, tabs, controls and backslashes are escaped; the rest is printed as is."""
    assert format_message(text, as_json=False) == line
    assert parse_line(line) == text


@pytest.mark.parametrize(
    ("data", "line"), [(b"\x00\xff", "hex:00ff"), (b"", "hex:"), (b"hi\n", "hex:68690a")]
)
def test_binary_is_hex_after_a_prefix(data: bytes, line: str) -> None:
    """Binary prints as `hex:` + two lowercase hex digits per byte."""
    assert format_message(data, as_json=False) == line
    assert parse_line(line) == data


@given(st.one_of(ANY_TEXT, st.binary()))
def test_every_payload_is_one_line_and_reads_back(payload: str | bytes) -> None:
    """Any text or bytes: exactly one line, no line break inside, and parse_line inverts it."""
    line = format_message(payload, as_json=False)
    assert not any(char in line for char in LINE_BREAKS)
    assert parse_line(line) == payload
    assert type(parse_line(line)) is type(payload)


@given(st.one_of(ANY_TEXT, st.binary()))
def test_json_lines_are_exact_and_single_lines(payload: str | bytes) -> None:
    """`--json`: one line, no line break inside, and the object gives the payload back."""
    line = format_message(payload, as_json=True)
    assert not any(char in line for char in LINE_BREAKS)
    obj = json.loads(line)
    if isinstance(payload, str):
        assert obj == {"type": "text", "data": payload}
    else:
        assert obj["type"] == "binary"
        assert base64.b64decode(obj["data"]) == payload


def test_binary_payload_hex_and_files(tmp_path: Path) -> None:
    """`send --binary` takes hex (spaces between bytes allowed) or @FILE."""
    assert binary_payload("00ff") == b"\x00\xff"
    assert binary_payload("68 69") == b"hi"
    path = tmp_path / "blob"
    path.write_bytes(b"\x01\x02\x03")
    assert binary_payload(f"@{path}") == b"\x01\x02\x03"


@pytest.mark.parametrize("argument", ["zz", "0", "hex:00", "@/nonexistent/blob"])
def test_bad_binary_payloads_are_usage_errors(argument: str) -> None:
    """Not hex, odd digits, or an unreadable file: a UsageError (exit code 2) naming it."""
    with pytest.raises(UsageError, match=argument.removeprefix("@")):
        binary_payload(argument)
