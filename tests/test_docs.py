"""The documentation's examples run as written, and the README's set-up commands are CI's.

Every fenced ``python`` block of README.md and docs/*.md runs on its own, in a fresh
interpreter (``python -W error``) with a temporary working directory: blocks are
self-contained, start their own hub when they need one, and must finish in seconds with
nothing on stderr (no traceback, no "Task exception was never retrieved", no unclosed
resource). A block is skipped only when the line right before its fence is an explicit
``<!-- not-executed: reason -->`` comment.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]

DEMO_COMMAND = "python -m pip install -e . && python -m rxconn demo"
TEST_COMMAND = "python -m pip install -e '.[dev]' && python -m pytest"

FENCE = re.compile(
    r"^(?P<indent>[ ]*)```(?P<info>[^`\n]*)\n(?P<body>.*?)^(?P=indent)```[ ]*$",
    re.MULTILINE | re.DOTALL,
)
NOT_EXECUTED = re.compile(r"^\s*<!--\s*not-executed:\s*(?P<reason>\S.*?)\s*-->\s*$")
LINK = re.compile(r"\]\((?P<target>[^)#\s]+\.md)(?:#[^)]*)?\)")
BLOCK_TIMEOUT = 30.0


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int
    info: str
    code: str
    skip_reason: str | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, with the skip reason of a comment right before it."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip().rpartition("\n")[2]
        mark = NOT_EXECUTED.match(before)
        blocks.append(
            Block(
                path=path,
                line=text.count("\n", 0, match.start()) + 1,
                info=match["info"].strip(),
                code=textwrap.dedent(match["body"]),
                skip_reason=mark["reason"] if mark else None,
            )
        )
    return blocks


PYTHON_BLOCKS = [b for path in DOCUMENTS for b in fenced_blocks(path) if b.info == "python"]


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.name)
def test_python_block_runs(block: Block, tmp_path: Path) -> None:
    """The block runs alone in a fresh interpreter, succeeds quickly, and prints no error."""
    if block.skip_reason is not None:
        pytest.skip(f"not executed: {block.skip_reason}")
    script = tmp_path / "example.py"
    script.write_text(block.code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
    )
    assert done.returncode == 0, f"{block.name} failed:\n{done.stderr}"
    assert done.stderr == "", f"{block.name} wrote to stderr:\n{done.stderr}"


def test_every_document_has_balanced_fences() -> None:
    """No block is lost to an unclosed fence: each fence line opens or closes one block."""
    for path in DOCUMENTS:
        lines = path.read_text(encoding="utf-8").splitlines()
        fences = [line for line in lines if line.lstrip().startswith("```")]
        assert len(fences) == 2 * len(fenced_blocks(path)), path.name


def test_readme_and_every_doc_page_have_runnable_examples() -> None:
    """README.md and each page that teaches the API carry at least one executed python block."""
    executed = {b.path.name for b in PYTHON_BLOCKS if b.skip_reason is None}
    for name in ("README.md", "lifecycle.md", "transports.md", "protocol.md", "testing.md"):
        assert name in executed, name


def test_readme_has_exactly_the_two_setup_commands() -> None:
    """README code blocks are python, except the demo and test commands, each its own sh block."""
    blocks = fenced_blocks(README)
    assert {b.info for b in blocks} <= {"python", "sh"}
    shell = [b.code.strip() for b in blocks if b.info == "sh"]
    assert shell == [DEMO_COMMAND, TEST_COMMAND]
    text = README.read_text(encoding="utf-8")
    setup = text.split("\n## Set-up\n", 1)[1].split("\n## ", 1)[0]
    assert f"```sh\n{DEMO_COMMAND}\n```" in setup
    assert f"```sh\n{TEST_COMMAND}\n```" in setup


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run contains the README's test command verbatim."""
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_links_between_markdown_pages_resolve() -> None:
    """Every relative link to a .md file from README.md or docs/ points at an existing file."""
    for path in DOCUMENTS:
        for match in LINK.finditer(path.read_text(encoding="utf-8")):
            target = match["target"]
            if "://" not in target:
                assert (path.parent / target).is_file(), f"{path.name}: {target}"
