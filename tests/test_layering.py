"""The package's layers import one way: ``sim`` and ``learning`` never import ``config``
(configs are built from the library's classes, not the reverse), and ``Phase`` imports
nothing else of the package."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(m for m in sys.modules if m.startswith('neurosim')))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(out.split())


@pytest.mark.parametrize(
    "statement",
    [
        "import neurosim.sim",
        "import neurosim.learning.consolidation, neurosim.learning.ewc, neurosim.learning.si",
        "import neurosim.learning.replay, neurosim.learning.merge, neurosim.learning.neuromodulation",
        "import neurosim.learning.drift, neurosim.learning.sleep, neurosim.learning.learner",
    ],
)
def test_the_simulator_and_the_learners_never_import_the_config(statement: str) -> None:
    loaded = _loaded_after(statement)
    assert "neurosim.config" not in loaded and "neurosim.phases.machine" not in loaded, sorted(loaded)


def test_phase_imports_nothing_else() -> None:
    assert _loaded_after("import neurosim.phases.phase") == {"neurosim", "neurosim.phases", "neurosim.phases.phase"}
