"""The public surface and the import boundaries between layers."""

from __future__ import annotations

import ast
from pathlib import Path

import rxconn


PACKAGE = Path(rxconn.__file__).parent

CONTRACT = [
    "Backoff",
    "BufferFullError",
    "Connected",
    "Connecting",
    "Connection",
    "ConnectionClosedError",
    "ConnectionLost",
    "Disconnected",
    "Errored",
    "OpenTimeout",
    "ProtocolError",
    "RetriesExhausted",
    "RxconnError",
    "TransportError",
    "connection",
    "fallback",
    "http",
    "longpoll",
    "testing",
    "websocket",
]

# Layer 1 (sans-I/O) may import only the stdlib and itself; layer 2 (core) adds reactivex.
SANS_IO = {"errors", "states", "sse", "backoff", "wire", "session", "_types", "quality", "_sender"}
CORE = {"transport", "operators", "connection", "_multicast", "_scheduler", "testing"}
FOREIGN_FOR_SANS_IO = {"reactivex", "aiohttp", "asyncio", "yarl"}
FOREIGN_FOR_CORE = {"aiohttp", "yarl"}


def test_design_contract_names_are_exported() -> None:
    """Every name DESIGN.md's contract uses exists on the package and is in __all__."""
    for name in CONTRACT:
        assert hasattr(rxconn, name), name
        assert name in rxconn.__all__, name
    assert rxconn.Disconnected().kind == "disconnected"


def test_all_names_resolve() -> None:
    """Everything in __all__ of the package and its public modules exists."""
    modules = [rxconn, rxconn.errors, rxconn.states, rxconn.transport, rxconn.testing]
    for module in modules:
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level >= 1:
                found.add("." + (node.module or ""))
    return found


def test_sans_io_modules_import_no_io_or_rx() -> None:
    """errors, states, sse, backoff, wire, session: stdlib only (tested statically)."""
    for name in SANS_IO:
        imports = _imports(PACKAGE / f"{name}.py")
        assert not imports & FOREIGN_FOR_SANS_IO, (name, imports)
        relative = {i for i in imports if i.startswith(".")}
        assert all(i.lstrip(".") in SANS_IO | {""} for i in relative), (name, relative)


def test_core_never_imports_aiohttp() -> None:
    """The pure-Rx core (and _core/) stays free of aiohttp; asyncio only in _scheduler."""
    paths = [PACKAGE / f"{name}.py" for name in CORE] + list((PACKAGE / "_core").glob("*.py"))
    for path in paths:
        imports = _imports(path)
        assert not imports & FOREIGN_FOR_CORE, (path.name, imports)
        assert not any(i.startswith(".aio") or i.startswith(".server") for i in imports), path
        if path.name != "_scheduler.py":
            assert "asyncio" not in imports, path.name


def test_nothing_imports_reactivex_internal() -> None:
    """reactivex.internal is private to RxPY (STYLE.md): never imported."""
    for path in PACKAGE.rglob("*.py"):
        assert "reactivex.internal" not in path.read_text(encoding="utf-8"), path


def test_package_is_typed() -> None:
    """py.typed ships with the package."""
    assert (PACKAGE / "py.typed").exists()
