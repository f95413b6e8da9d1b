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


def thread_pools(params: Mapping[str, Any], seed: int, out_dir: Path) -> dict[str, float]:
    """The thread counts a run sees on its worker: PyTorch's and the largest BLAS / OpenMP pool."""
    import threadpoolctl  # type: ignore[import-untyped]
    import torch

    pools = [int(info["num_threads"]) for info in threadpoolctl.threadpool_info()]
    return {"torch_threads": float(torch.get_num_threads()), "largest_pool": float(max(pools, default=1))}


def numba_after_pinning(params: Mapping[str, Any], seed: int, out_dir: Path) -> dict[str, float]:
    """Compiles a numba function after the run's threads were pinned (a compile re-reads numba's
    configuration from the environment); returns the thread count numba runs with."""
    import numba  # type: ignore[import-untyped]

    @numba.njit  # type: ignore[misc]
    def plus_one(x: int) -> int:
        return x + 1

    return {"value": float(plus_one(seed)), "numba_threads": float(numba.config.NUMBA_NUM_THREADS)}
