"""The notebooks in examples/notebooks run from top to bottom on a real Jupyter kernel,
whose event loop is already running (so nothing in them may call asyncio.run)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import EXAMPLES

from neurosim.config import parse_continual
from neurosim.phases.schedule import run_experiment

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((EXAMPLES / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_notebook_runs_on_a_jupyter_kernel(path: Path, tmp_path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
              if o.output_type == "error"]  # fmt: skip
    assert not errors
    printed = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "chunks awaited" in printed and "average accuracy" in printed


def test_run_experiment_inside_a_running_loop_says_what_to_use_instead(tmp_path: Path) -> None:
    cfg = parse_continual({"experiment": {"name": "t"}, "data": {"n_tasks": 2, "train_per_task": 4}})

    async def inside() -> None:
        run_experiment(cfg, tmp_path)

    with pytest.raises(RuntimeError, match="await run_experiment_async"):
        asyncio.run(inside())
    assert not any(tmp_path.iterdir())  # refused before anything ran
