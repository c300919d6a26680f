"""The example notebooks run top to bottom, with clean outputs, and match their generator.

Each committed notebook is executed again with nbclient on a ``python3``
kernel that runs *this* interpreter (see ``kernel`` below), with
``notebooks/`` as its working directory. Notebooks 02, 03 and 04 must draw
their pictures (an ``image/png`` output), and no cell may write to stderr (that
is where warnings and stray tracebacks go). Notebook 04 runs a real
``redis-server``: without one it is skipped, saying how to install it (under
``CI=true`` it fails instead, as the other Redis tests do).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import nbformat
import pytest

from tests.redis_server import require_redis_server


NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = [
    "01-quickstart.ipynb",
    "02-fallback-and-upgrade.ipynb",
    "03-marble-testing.ipynb",
    "04-hubs-on-redis.ipynb",
]
DRAWS = {"02-fallback-and-upgrade.ipynb", "03-marble-testing.ipynb", "04-hubs-on-redis.ipynb"}
NEEDS_REDIS = {"04-hubs-on-redis.ipynb"}
CELL_TIMEOUT = 60


def load_generator() -> ModuleType:
    """``notebooks/_build.py`` (not a package, so loaded from its path)."""
    spec = importlib.util.spec_from_file_location("rxconn_notebooks_build", NOTEBOOKS / "_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The name of a kernel that runs this interpreter, where rxconn is installed.

    ``pip install -e '.[dev]'`` brings ipykernel, whose ``python3`` spec is
    found even if none is registered; but a ``python3`` spec that another
    environment registered in the user's Jupyter directory would win and run
    the notebooks without rxconn. So the spec is written to a temporary
    directory put first on ``JUPYTER_PATH`` (nothing is installed for the user).

    ``JUPYTER_PLATFORM_DIRS=1`` is set *before* anything imports
    ``jupyter_core.paths`` (hence the imports inside this fixture and the
    test): jupyter_core up to 5.8 (5.4.0 to 5.8.1 checked; 5.9.1 is quiet)
    warns on that import ("Jupyter is migrating its paths ...", a
    DeprecationWarning), which ``filterwarnings = error`` turns into a failure.
    Opting in is the fix that warning asks for; no path this test relies on
    changes with it.
    """
    root = tmp_path_factory.mktemp("jupyter")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("JUPYTER_PLATFORM_DIRS", "1")
        search = [str(root), os.environ.get("JUPYTER_PATH", "")]
        env.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, search)))
        from ipykernel.kernelspec import write_kernel_spec

        write_kernel_spec(root / "kernels" / "python3")
        yield "python3"


def outputs(nb: Any) -> list[Any]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_clean(name: str, kernel: str) -> None:
    """Every cell runs without error; no stderr; the plots are images."""
    from nbclient import NotebookClient

    if name in NEEDS_REDIS:
        require_redis_server()  # skips without it (fails under CI=true)

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name=kernel,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback

    produced = outputs(nb)
    assert not [o for o in produced if o.output_type == "error"]
    stderr = [o.text for o in produced if o.output_type == "stream" and o.name == "stderr"]
    assert stderr == [], f"{name} wrote to stderr"
    images = [o for o in produced if "image/png" in o.get("data", {})]
    if name in DRAWS:
        assert images, f"{name} should display a PNG image"


def test_notebooks_match_their_generator_and_carry_outputs() -> None:
    """The committed notebooks are what ``notebooks/_build.py`` builds, executed."""
    generator = load_generator()
    assert sorted(generator.NOTEBOOKS) == sorted(NAMES)
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3"
        cells = [(cell.cell_type, cell.source) for cell in nb.cells]
        assert cells == generator.NOTEBOOKS[name], (
            f"{name} is out of date: run python notebooks/_build.py"
        )
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert all(cell.execution_count is not None for cell in code), f"{name} was not executed"
        images = [o for o in outputs(nb) if "image/png" in o.get("data", {})]
        assert bool(images) == (name in DRAWS), f"{name}: unexpected images"


def test_plotting_lives_in_a_linted_module() -> None:
    """The cells draw through ``notebooks/plots.py`` (no matplotlib code of their own),
    and that module passes ruff's checks and formatting."""
    generator = load_generator()
    code = [src for cells in generator.NOTEBOOKS.values() for kind, src in cells if kind == "code"]
    for source in code:
        assert "plt." not in source and "import matplotlib" not in source, source
    assert any("from plots import" in source for source in code)
    for command in (["check"], ["format", "--check"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *command, str(NOTEBOOKS / "plots.py")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
