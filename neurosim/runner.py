"""``neurosim run`` for a plain simulation config: build, run, write every output.

Outputs in ``DIR``: ``config.json`` (the resolved config, written first), ``spikes.npz``,
``summary.json``, ``raster.png``, and with plasticity ``weights.npz`` and ``weights.png``,
with recorded state ``state.npz``. If the run fails, what was recorded so far is still
written and ``summary.json`` says ``"status": "failed"`` with the error. The same files
come out of either backend (neurosim's engine or Brian2).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import neurosim
from neurosim.build import build_network, build_simulation
from neurosim.config import SimulationConfig
from neurosim.events.bus import EventBus
from neurosim.events.mqtt import BrokerSettings, MQTTPublisher
from neurosim.events.schema import Event
from neurosim.events.spikes import SpikeStream
from neurosim.learning.learner import STDPOnlineLearner
from neurosim.metrics import METRICS, Metrics
from neurosim.outputs import (
    plot_raster,
    plot_rates,
    plot_state,
    plot_weight_histograms,
    prepare_output_dir,
    write_arrays,
    write_json,
    write_spikes,
)
from neurosim.sim.monitors import SpikeMonitor, SpikeTrains, StateMonitor


class RunBackend(enum.StrEnum):
    NEUROSIM = "neurosim"
    BRIAN2 = "brian2"


@dataclass(frozen=True)
class LiveOptions:
    """Where a run reports while it runs: Prometheus metrics, and MQTT when a broker is given."""

    mqtt: BrokerSettings | None = None
    run_id: str = "run"
    metrics: Metrics = field(default_factory=lambda: METRICS)


@dataclass
class RunRecord:
    """What a run produced, whichever backend ran it."""

    duration_s: float
    wall_s: float
    batch: int
    spikes: dict[str, SpikeTrains]
    sizes: dict[str, int]
    initial_weights: dict[str, np.ndarray] = field(default_factory=dict)
    final_weights: dict[str, np.ndarray] = field(default_factory=dict)
    synapses: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    state: dict[str, np.ndarray] = field(default_factory=dict)


def summarise(cfg: SimulationConfig, record: RunRecord, status: str, backend: RunBackend) -> dict[str, Any]:
    pops: dict[str, Any] = {}
    for name, trains in record.spikes.items():
        n, spikes = record.sizes[name], int(trains.times.size)
        exposure = n * record.duration_s * record.batch
        pops[name] = {"n": n, "spikes": spikes, "rate_hz": spikes / exposure if exposure > 0 else 0.0}
    return {
        "status": status,
        "backend": backend.value,
        "duration_s": record.duration_s,
        "wall_s": record.wall_s,
        "dt": cfg.run.dt,
        "batch": record.batch,
        "seed": cfg.run.seed,
        "device": cfg.run.device,
        "neurosim_version": neurosim.__version__,
        "populations": pops,
    }


def write_outputs(out_dir: Path, cfg: SimulationConfig, record: RunRecord, summary: Mapping[str, Any]) -> None:
    write_spikes(out_dir / "spikes.npz", record.spikes)
    if record.state:
        write_arrays(out_dir / "state.npz", record.state)
        plot_state(out_dir / "state.png", record.state)
    if record.final_weights:
        weights: dict[str, np.ndarray] = {}
        for name, w in record.final_weights.items():
            weights[name] = w
            weights[f"{name}_initial"] = record.initial_weights[name]
            weights[f"{name}_pre"], weights[f"{name}_post"] = record.synapses[name]
        write_arrays(out_dir / "weights.npz", weights)
        w_max = {pl.projection: pl.rule.w_max for pl in cfg.plasticity}
        plot_weight_histograms(
            out_dir / "weights.png", record.initial_weights, record.final_weights, record.duration_s, w_max
        )
    write_json(out_dir / "summary.json", dict(summary))
    plot_raster(out_dir / "raster.png", record.spikes, record.sizes, record.duration_s)
    plot_rates(out_dir / "rates.png", record.spikes, record.sizes, record.duration_s)


def _run_neurosim(cfg: SimulationConfig, progress: bool, record_out: list[RunRecord], live: LiveOptions) -> None:
    sim = build_simulation(cfg)
    sim.add_chunk_hook(live.metrics.observe_chunk)
    bus: EventBus[Event] = EventBus()
    if live.mqtt is not None:
        SpikeStream(bus).attach(sim)
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
    for learner in learners:
        learner.attach(sim)
    record = RunRecord(
        duration_s=0.0,
        wall_s=0.0,
        batch=sim.batch,
        spikes={},
        sizes={name: sim.network.source_size(name) for name in monitors},
        initial_weights={ln.projection.name: ln.projection.synapse_weights().cpu().numpy().copy() for ln in learners},
        synapses={
            ln.projection.name: (ln.projection.pre_index.cpu().numpy(), ln.projection.post_index.cpu().numpy())
            for ln in learners
        },
    )
    record_out.append(record)
    wall0 = time.perf_counter()

    async def publishing(mqtt: BrokerSettings) -> None:
        async with MQTTPublisher(mqtt, live.run_id, bus, metrics=live.metrics) as publisher:
            await publisher.ready()
            await sim.run_async(cfg.run.duration, progress=progress)

    try:
        if live.mqtt is None:
            sim.run(cfg.run.duration, progress=progress)
        else:
            asyncio.run(publishing(live.mqtt))
    finally:  # whatever happened, the record holds what was simulated
        record.duration_s, record.wall_s = sim.t, time.perf_counter() - wall0
        record.spikes = {name: mon.trains() for name, mon in monitors.items()}
        record.final_weights = {
            name: sim.network.projections[name].synapse_weights().cpu().numpy() for name in record.initial_weights
        }
        for s in states:
            record.state.update({f"{s.population}_{var}": vals for var, vals in s.values.items()})
            record.state[f"{s.population}_times"] = s.times


def _run_brian2(cfg: SimulationConfig, target: str, record_out: list[RunRecord]) -> None:
    from neurosim.backends.brian2 import run_brian2

    structure = build_network(cfg)  # the same structure Brian2 gets, for sizes and initial weights
    plastic = [pl.projection for pl in cfg.plasticity]
    result = run_brian2(cfg, target="cython" if target == "cython" else "numpy")
    record = RunRecord(
        duration_s=result.duration_s,
        wall_s=result.wall_s,
        batch=1,
        spikes=result.spikes,
        sizes={name: structure.source_size(name) for name in result.spikes},
        initial_weights={n: structure.projections[n].synapse_weights().cpu().numpy() for n in plastic},
        final_weights=dict(result.weights),
        synapses={
            n: (structure.projections[n].pre_index.cpu().numpy(), structure.projections[n].post_index.cpu().numpy())
            for n in plastic
        },
    )
    for pop, values in result.state.items():
        record.state.update({f"{pop}_{var}": vals[:, None, :] for var, vals in values.items()})
        record.state[f"{pop}_times"] = result.state_times[pop]
    record_out.append(record)


def run_simulation(
    cfg: SimulationConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    backend: RunBackend = RunBackend.NEUROSIM,
    brian2_target: str = "cython",
    live: LiveOptions | None = None,
) -> dict[str, Any]:
    live = live or LiveOptions()
    if backend is RunBackend.BRIAN2 and live.mqtt is not None:
        raise ValueError("publishing over MQTT needs the neurosim backend (Brian2 runs the whole simulation at once)")
    if backend is RunBackend.BRIAN2:
        from neurosim.backends.brian2 import UnsupportedByBrian2, unsupported_features

        problems = unsupported_features(cfg)
        if problems:  # refuse before creating anything
            raise UnsupportedByBrian2("the Brian2 backend cannot run this config:\n- " + "\n- ".join(problems))
    out_dir = prepare_output_dir(out, overwrite=overwrite)
    write_json(out_dir / "config.json", cfg.model_dump(mode="json"))
    records: list[RunRecord] = []
    error: str | None = None
    try:
        if backend is RunBackend.BRIAN2:
            _run_brian2(cfg, brian2_target, records)
        else:
            _run_neurosim(cfg, progress, records, live)
    except BaseException as err:
        error = f"{type(err).__name__}: {err}"
        raise
    finally:
        if records:
            summary = summarise(cfg, records[0], "completed" if error is None else "failed", backend)
            if error is not None:
                summary["error"] = error
            write_outputs(out_dir, cfg, records[0], summary)
        elif error is not None:
            write_json(out_dir / "summary.json", {"status": "failed", "backend": backend.value, "error": error})
    return summary
