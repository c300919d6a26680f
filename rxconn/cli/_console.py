"""Output: colourable lines that survive a closed pipe, one-line errors, state descriptions.

Every command prints through here, so broken pipes and colour are handled in one place.
"""

from __future__ import annotations

import os
import sys
from typing import Final, TextIO

import rxconn


__all__ = [
    "PROG",
    "STATE_COLOURS",
    "CliError",
    "Console",
    "UsageError",
    "describe",
    "explain",
    "print_error",
    "silence",
]

PROG: Final = "rxconn"


class CliError(Exception):
    """A runtime failure reported as one line on stderr, with exit code 1."""


class UsageError(CliError):
    """Bad input found after parsing (a payload, a URL's port): one line, exit code 2."""


class Console:
    """Line-oriented output that survives a closed pipe, with optional ANSI colour.

    Args:
        stream: Where lines go (stdout or stderr).
        colour: Whether to wrap text in ANSI colour codes.
    """

    CODES: Final = {
        "red": "31",
        "green": "32",
        "yellow": "33",
        "cyan": "36",
        "dim": "2",
        "bold": "1",
    }

    def __init__(self, stream: TextIO, colour: bool = False) -> None:
        self.stream = stream
        self.colour = colour
        self.broken = False

    @classmethod
    def for_stdout(cls) -> Console:
        """Colour only when stdout is a terminal and ``NO_COLOR`` is unset."""
        return cls(sys.stdout, colour=sys.stdout.isatty() and "NO_COLOR" not in os.environ)

    def paint(self, text: str, colour: str | None) -> str:
        """``text`` in ``colour`` (a key of ``CODES``) when colour is on."""
        if not self.colour or colour is None:
            return text
        return f"\x1b[{self.CODES[colour]}m{text}\x1b[0m"

    def line(self, text: str, colour: str | None = None) -> bool:
        """Write one line and flush; False once the reader went away (broken pipe)."""
        if self.broken:
            return False
        try:
            self.stream.write(self.paint(text, colour) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            self.broken = True
            silence(self.stream)
            return False
        return True


def silence(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at /dev/null so the exit-time flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # not a real file: nothing will be flushed to a dead pipe


def print_error(command: str, message: str) -> None:
    """Print the one-line error of ``command`` to stderr."""
    name = f"{PROG} {command}" if command else PROG
    Console(sys.stderr).line(f"{name}: error: {message}")


def explain(error: BaseException) -> str:
    """``str(error)``, then the notes of it and of its causes, ``; ``-separated.

    A fallback notes on its last transport's error why the ones before failed
    (PEP 678 notes), so this line names every transport's reason.
    """
    parts = [str(error)]
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.extend(str(note) for note in getattr(current, "__notes__", ()))
        current = current.__cause__
    return "; ".join(parts)


def describe(state: rxconn.State) -> str:
    """A short human description of a connection state."""
    if isinstance(state, rxconn.Connecting):
        return f"connecting over {state.transport} (attempt {state.attempt})"
    if isinstance(state, rxconn.Connected):
        return f"connected over {state.transport}"
    if isinstance(state, rxconn.Errored):
        then = "giving up" if state.retry_in is None else f"retrying in {state.retry_in:.2f} s"
        return f"attempt {state.attempt} failed: {explain(state.error)}; {then}"
    return "disconnected"


STATE_COLOURS: Final = {
    "connecting": "yellow",
    "connected": "green",
    "errored": "red",
    "disconnected": "dim",
}
