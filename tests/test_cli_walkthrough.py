"""The README's three-terminal walk-through of the command line runs as written.

The "Command line" section of README.md shows five indented blocks: terminal 1
starts `serve`, terminal 2 starts `listen`, terminal 3 runs `send` twice (each
`$ ` line is a command, the lines under it its output), then what terminals 1
and 2 show afterwards. This test runs those commands on a free port instead of
8080 and checks every line of output they print (lines starting `rxconn:` are
stderr); session ids, random in practice, are matched by the order in which
the sessions opened.
"""

from __future__ import annotations

import re
import shlex
import signal
from pathlib import Path

import pytest

from .test_cli import Proc, free_port, started


README = Path(__file__).resolve().parent.parent / "README.md"
README_PORT = "8080"
OPENED = re.compile(r"rxconn: session (\S+) opened")


def section(text: str, title: str) -> str:
    """The body of the `## title` section of a Markdown text."""
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def indented_blocks(text: str) -> list[list[str]]:
    """The indented (4-space) code blocks of a Markdown text, as lists of lines.

    A block starts with an indented line after a blank line and runs while lines
    stay indented.
    """
    blocks: list[list[str]] = []
    inside, previous = False, ""
    for line in text.splitlines():
        if line.startswith("    ") and (inside or not previous.strip()):
            if not inside:
                blocks.append([])
                inside = True
            blocks[-1].append(line[4:])
        else:
            inside = False
        previous = line
    return blocks


def commands(block: list[str]) -> list[tuple[list[str], list[str]]]:
    """Each `$ command` of a block with the output lines shown under it."""
    result: list[tuple[list[str], list[str]]] = []
    for line in block:
        if line.startswith("$ "):
            result.append((shlex.split(line[2:]), []))
        else:
            result[-1][1].append(line)
    return result


def argv(words: list[str], port: int) -> list[str]:
    """The arguments of a README command (`started` runs them with this interpreter),
    on `port` instead of 8080."""
    assert words[:3] == ["python", "-m", "rxconn"], words
    args = [word.replace(f":{README_PORT}/", f":{port}/") for word in words[3:]]
    if args[0] == "serve":
        args += ["--port", str(port)]
    return args


def split_streams(lines: list[str]) -> tuple[list[str], list[str]]:
    """(stdout lines, stderr lines): the walk-through's stderr lines start with `rxconn:`."""
    return (
        [line for line in lines if not line.startswith("rxconn:")],
        [line for line in lines if line.startswith("rxconn:")],
    )


def anonymised(stdout: list[str], stderr: list[str]) -> tuple[list[str], list[str]]:
    """Session ids replaced by S1, S2, ... in the order their sessions opened."""
    names = {}
    for line in stderr:
        if match := OPENED.match(line):
            names[match[1]] = f"S{len(names) + 1}"

    def rename(line: str) -> str:
        for session, name in names.items():
            line = line.replace(session, name)
        return line

    return [rename(line) for line in stdout], [rename(line) for line in stderr]


async def lines(proc: Proc, stream: str, count: int) -> list[str]:
    return [await proc.line(stream) for _ in range(count)]


def test_the_walkthrough_has_the_expected_shape() -> None:
    """Five blocks: serve, listen, two sends, then what terminals 1 and 2 show."""
    blocks = indented_blocks(section(README.read_text(encoding="utf-8"), "Command line"))
    assert len(blocks) == 5
    assert [words[3] for words, _ in commands(blocks[0] + blocks[1] + blocks[2])] == [
        "serve",
        "listen",
        "send",
        "send",
    ]
    assert not any(line.startswith("$") for line in blocks[3] + blocks[4])


@pytest.mark.asyncio
async def test_readme_three_terminal_walkthrough() -> None:
    """serve --print --broadcast / listen / send, exactly as the README shows them."""
    blocks = indented_blocks(section(README.read_text(encoding="utf-8"), "Command line"))
    ((serve_cmd, serve_out),) = commands(blocks[0])
    ((listen_cmd, listen_err),) = commands(blocks[1])
    sends = commands(blocks[2])
    later_out, later_err = split_streams(blocks[3])
    port = free_port()
    at_port = [line.replace(f":{README_PORT}/", f":{port}/") for line in serve_out]

    async with started(*argv(serve_cmd, port)) as hub:
        assert await lines(hub, "stdout", len(at_port)) == at_port
        async with started(*argv(listen_cmd, port)) as listen:
            assert await lines(listen, "stderr", len(listen_err)) == listen_err
            for words, shown in sends:
                async with started(*argv(words, port)) as send:
                    assert await send.finish() == 0, send.stderr
                assert split_streams(shown) == (
                    send.stdout.splitlines(),
                    send.stderr.splitlines(),
                )
            assert await lines(listen, "stdout", len(blocks[4])) == blocks[4]
            stdout = await lines(hub, "stdout", len(later_out))
            stderr = await lines(hub, "stderr", len(later_err))
            assert anonymised(stdout, stderr) == anonymised(later_out, later_err)
            listen.process.send_signal(signal.SIGINT)
            assert await listen.finish() == 130
        hub.process.send_signal(signal.SIGINT)
        assert await hub.finish() == 0
    for proc in (hub, listen):
        assert proc.stdout == ""  # nothing beyond what the README shows
        assert proc.stderr == ""
