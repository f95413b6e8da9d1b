from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from neurosim.config import SimulationConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def cuba_config(**run: Any) -> SimulationConfig:
    """The shipped CUBA example, with run settings overridden."""
    data = load_config(EXAMPLES / "cuba.toml").model_dump(mode="json")
    data["run"].update(run)
    return parse_config(data)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
