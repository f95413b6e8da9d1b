"""What a plain run's output directory holds, read back for export."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from neurosim.sim.monitors import SpikeTrains


@dataclass(frozen=True)
class RunOutputs:
    """A finished (or failed) run's spikes, sizes, duration and config."""

    directory: Path
    spikes: dict[str, SpikeTrains]  # per recorded source
    sizes: dict[str, int]
    duration_s: float
    batch: int
    config: dict[str, Any]
    summary: dict[str, Any]
    state: dict[str, npt.NDArray[Any]]  # state.npz, if the run recorded state variables

    @classmethod
    def read(cls, directory: str | Path) -> RunOutputs:
        where = Path(directory)
        missing = [name for name in ("summary.json", "spikes.npz", "config.json") if not (where / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{where}: no {', '.join(missing)}: not the output directory of `neurosim run` "
                                    "on a plain simulation config")  # fmt: skip
        summary = json.loads((where / "summary.json").read_text())
        config = json.loads((where / "config.json").read_text())
        with np.load(where / "spikes.npz") as npz:
            names = sorted({key.rsplit("_", 1)[0] for key in npz.files})
            spikes = {n: SpikeTrains(npz[f"{n}_times"], npz[f"{n}_indices"], npz[f"{n}_instances"]) for n in names}
        state: dict[str, npt.NDArray[Any]] = {}
        if (where / "state.npz").is_file():
            with np.load(where / "state.npz") as npz:
                state = {key: npz[key] for key in npz.files}
        sizes = {name: int(pop["n"]) for name, pop in summary["populations"].items()}
        return cls(where, spikes, sizes, float(summary["duration_s"]), int(summary.get("batch", 1)), config,
                   summary, state)  # fmt: skip
