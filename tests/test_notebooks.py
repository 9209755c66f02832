"""Execute every teaching notebook (``notebooks/*.py``, jupytext percent format) in a kernel.

Each notebook runs top to bottom with ``ZOO_NOTEBOOK_SMALL=1`` (its first code cell then picks
tiny sizes), in the notebooks directory, and fails the test on any cell error or on any
warning.

Warnings. The suite turns warnings into errors (``filterwarnings = error``), but the kernel
is a subprocess that pytest's filter does not reach. The kernel is therefore started with
``PYTHONWARNINGS=error``, so a warning raised by a notebook's code fails its cell exactly as
it would fail a test, including the DeprecationWarnings that a kernel would otherwise hide
when they come from library code. One warning is exempt: ipykernel's own
PendingDeprecationWarning about ``do_shutdown`` returning no awaitable, which ipykernel
raises in its shutdown handler after the notebook has finished (it is about ipykernel's
code, not ours, and as an error it would only make shutdown slower). As a second net, any
stderr output containing "Warning" (a warning printed rather than raised, e.g. by a
library that catches and reports it) fails the test too.

``JUPYTER_PLATFORM_DIRS=1`` opts in to the platformdirs locations, which is what
jupyter_core's DeprecationWarning about migrating paths asks for (versions that still emit
it would otherwise fail under ``-W error``); the import here is guarded for the same
warning.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():
    # Older jupyter_core warns at import that its paths move to platformdirs (see above).
    warnings.filterwarnings("ignore", message=".*Jupyter is migrating its paths.*", category=DeprecationWarning)
    import jupytext
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

NOTEBOOK_DIRECTORY = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIRECTORY.glob("*.py"))
#: Seconds any one cell may take in small mode (the slowest takes a few seconds unloaded);
#: generous because the tests share two cores with sweeps and reference builds.
CELL_TIMEOUT = 300
#: ipykernel's shutdown-handler notice (see the module docstring); PYTHONWARNINGS matches
#: the start of the message, literally.
_IPYKERNEL_SHUTDOWN = "ignore:For consistency across implementations:PendingDeprecationWarning"


def _kernel_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ZOO_NOTEBOOK_SMALL="1",
        PYTHONWARNINGS=f"error,{_IPYKERNEL_SHUTDOWN}",
        JUPYTER_PLATFORM_DIRS="1",
    )
    return env


def test_notebooks_are_found() -> None:
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIRECTORY}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path) -> None:
    notebook = jupytext.read(path)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    assert "ZOO_NOTEBOOK_SMALL" in code[0].source, f"{path.name}: the first code cell must read ZOO_NOTEBOOK_SMALL"
    client = NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    try:
        client.execute(env=_kernel_environment())
    except CellExecutionError as error:
        pytest.fail(f"{path.name} failed in a cell:\n{error}", pytrace=False)
    elapsed = time.perf_counter() - start
    warned = [(index, output.get("text", "")) for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"
              for output in cell.get("outputs", [])
              if output.get("output_type") == "stream" and output.get("name") == "stderr"
              and "Warning" in output.get("text", "")]
    assert not warned, f"{path.name} wrote warnings to stderr: {warned}"
    print(f"{path.name}: {elapsed:.1f} s")
