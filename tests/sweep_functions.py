"""A function for the function-sweep tests (workers import it by name)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def noisy_quadratic(params: Mapping[str, Any], seed: int, out_dir: Path) -> dict[str, float]:
    """``(x - 2)^2 + seed / 10``, with a file written into the run's directory."""
    value = (params["x"] - 2.0) ** 2 * params["scale"]["a"] + seed / 10
    (out_dir / "value.txt").write_text(f"{value}\n")
    return {"loss": value}
