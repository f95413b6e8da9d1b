"""The documentation: every public name has a docstring, and the site builds with no warning
(API reference, user guide, gallery examples run, notebooks executed)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import shutil
import subprocess
from pathlib import Path

import pytest

import neurosim

ROOT = Path(__file__).resolve().parents[1]


def _public_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(neurosim.__path__, "neurosim.")]
    return ["neurosim", *(n for n in names if not any(part.startswith("_") for part in n.split(".")))]


def _undocumented(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    missing = [] if module.__doc__ else [module_name]
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        doc = obj.__doc__ or ""
        if not doc.strip() or (inspect.isclass(obj) and doc.startswith(f"{name}(")):  # a dataclass's generated one
            missing.append(f"{module_name}.{name}")
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
                    continue
                if not inspect.getdoc(member) and not any(
                    inspect.getdoc(getattr(base, attr, None)) for base in obj.__mro__[1:]
                ):
                    missing.append(f"{module_name}.{name}.{attr}")
    return missing


def test_every_public_module_class_function_and_method_has_a_docstring() -> None:
    missing = [name for module in _public_modules() for name in _undocumented(module)]
    assert missing == []


@pytest.mark.skipif(shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
                    reason="the live MQTT gallery example needs Debian's mosquitto")  # fmt: skip
def test_the_site_builds_with_no_warning_and_runs_the_gallery_and_notebooks(tmp_path: Path) -> None:
    pytest.importorskip("sphinx_gallery")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "build_docs.sh"), str(tmp_path / "html")],
                          check=False, capture_output=True, text=True, timeout=1500)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    site = tmp_path / "html"
    assert (site / "docs" / "index.html").is_file()
    api = (site / "docs" / "api" / "generated" / "neurosim.sim.engine.html").read_text()
    assert "Simulation" in api and "Write a checkpoint directory" in api  # from the docstrings
    for example in ("plot_01_cuba", "plot_02_song2000", "plot_03_diehl_cook", "plot_04_main_job",
                    "plot_05_live_mqtt", "plot_06_brian2_embedding", "plot_07_elephant"):  # fmt: skip
        figures = list((site / "_images").glob(f"sphx_glr_{example}_*.png"))
        assert figures, f"{example} made no figure"
    notebook = (site / "examples" / "notebooks" / "async_embedding.html").read_text()
    assert "chunks awaited" in notebook and "average accuracy" in notebook  # executed, outputs kept
