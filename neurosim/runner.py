"""``neurosim run`` for a plain simulation config: build, run, write every output.

Outputs in ``DIR``: ``config.json`` (the resolved config, written first), ``spikes.npz``,
``summary.json`` and ``raster.png``. If the run fails, what was recorded so far is still
written and ``summary.json`` says ``"status": "failed"`` with the error.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

import neurosim
from neurosim.config import SimulationConfig
from neurosim.learning.learner import STDPOnlineLearner
from neurosim.outputs import (
    plot_raster,
    plot_weight_histograms,
    prepare_output_dir,
    write_arrays,
    write_json,
    write_spikes,
)
from neurosim.sim.build import build_simulation
from neurosim.sim.engine import Simulation
from neurosim.sim.monitors import SpikeMonitor, StateMonitor


def summarise(sim: Simulation, monitors: dict[str, SpikeMonitor], wall_s: float, status: str) -> dict[str, Any]:
    duration = sim.t
    pops: dict[str, Any] = {}
    for name in monitors:
        n = sim.network.source_size(name)
        spikes = sim.spike_counts[name]
        pops[name] = {
            "n": n,
            "spikes": spikes,
            "rate_hz": spikes / (n * duration * sim.batch) if duration > 0 else 0.0,
        }
    return {
        "status": status,
        "duration_s": duration,
        "wall_s": wall_s,
        "dt": sim.dt,
        "batch": sim.batch,
        "seed": sim.seed,
        "device": str(sim.device),
        "neurosim_version": neurosim.__version__,
        "populations": pops,
    }


def run_simulation(
    cfg: SimulationConfig, out: str | Path, *, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    out_dir = prepare_output_dir(out, overwrite=overwrite)
    write_json(out_dir / "config.json", cfg.model_dump(mode="json"))
    sim = build_simulation(cfg)
    names = cfg.record.spikes if cfg.record.spikes is not None else [p.name for p in cfg.network.populations]
    monitors = {name: SpikeMonitor(name, max_spikes=cfg.record.max_spikes) for name in names}
    for mon in monitors.values():
        sim.add_monitor(mon)
    states = [StateMonitor(s.population, s.variables, indices=s.indices, every=s.every) for s in cfg.record.state]
    for sm in states:
        sim.add_monitor(sm)
    learners = [
        STDPOnlineLearner(
            sim.network.projections[pl.projection], pl.rule.to_rule(), dt=sim.dt, batch=sim.batch, scale=pl.scale
        )
        for pl in cfg.plasticity
    ]
    initial_weights = {ln.projection.name: ln.projection.synapse_weights().cpu().numpy().copy() for ln in learners}
    for learner in learners:
        learner.attach(sim)
    wall0 = time.perf_counter()
    error: str | None = None
    try:
        sim.run(cfg.run.duration, progress=progress)
    except BaseException as err:
        error = f"{type(err).__name__}: {err}"
        raise
    finally:
        summary = summarise(sim, monitors, time.perf_counter() - wall0, "completed" if error is None else "failed")
        if error is not None:
            summary["error"] = error
        write_spikes(out_dir / "spikes.npz", monitors)
        if states:
            arrays: dict[str, np.ndarray] = {
                f"{s.population}_{var}": vals for s in states for var, vals in s.values.items()
            }
            arrays.update({f"{s.population}_times": s.times for s in states})
            write_arrays(out_dir / "state.npz", arrays)
        if learners:
            final = {name: sim.network.projections[name].synapse_weights().cpu().numpy() for name in initial_weights}
            weights: dict[str, np.ndarray] = {}
            for name, w in final.items():
                proj = sim.network.projections[name]
                weights[name] = w
                weights[f"{name}_initial"] = initial_weights[name]
                weights[f"{name}_pre"] = proj.pre_index.cpu().numpy()
                weights[f"{name}_post"] = proj.post_index.cpu().numpy()
            write_arrays(out_dir / "weights.npz", weights)
            plot_weight_histograms(out_dir / "weights.png", initial_weights, final, sim.t)
        write_json(out_dir / "summary.json", summary)
        sizes = {name: sim.network.source_size(name) for name in monitors}
        plot_raster(out_dir / "raster.png", monitors, sizes, sim.t)
    return summary
