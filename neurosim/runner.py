"""``neurosim run`` for a plain simulation config: build, run, write every output.

Outputs in ``DIR``: ``config.json`` (the resolved config, written first), ``spikes.npz``,
``summary.json``, ``raster.png``, and with plasticity ``weights.npz`` and ``weights.png``,
with recorded state ``state.npz``; on neurosim's engine also ``checkpoint/`` (the
simulation after the last finished segment, ``neurosim.sim.checkpoint``) and
``initial_weights.npz``, from which ``neurosim run --resume DIR`` goes on. If the run
fails, what was recorded so far is still written and ``summary.json`` says
``"status": "failed"`` with the error. The same files come out of either backend
(neurosim's engine or Brian2).
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import neurosim
from neurosim.build import build_network, build_simulation
from neurosim.config import SimulationConfig, parse_config
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
from neurosim.sim.checkpoint import read_manifest
from neurosim.sim.engine import Simulation
from neurosim.sim.monitors import SpikeMonitor, SpikeTrains, StateMonitor


class RunBackend(enum.StrEnum):
    """Which simulator runs a plain config: neurosim's engine or Brian2."""

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
    """``summary.json``'s content: status, backend, duration, wall time, settings and each population's spike
    count and rate."""
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
    """Write every output of a run (spikes, state, weights, summary, plots) into ``out_dir``."""
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


CHECKPOINT_DIR = "checkpoint"  # in the output directory: the simulation as of the last finished segment
INITIAL_WEIGHTS = "initial_weights.npz"  # the plastic projections' weights at the start (for weights.png)


def checkpoint_segment_steps(cfg: SimulationConfig, every: float | None, chunk_steps: int) -> int:
    """Steps between checkpoints: ``every`` simulated seconds (default a tenth of the run),
    rounded up to whole chunks."""
    seconds = cfg.run.duration / 10 if every is None else every
    chunks = max(1, -(-round(seconds / cfg.run.dt) // chunk_steps))
    return chunks * chunk_steps


def _new_simulation(cfg: SimulationConfig, out_dir: Path) -> Simulation:
    sim = build_simulation(cfg)
    names = cfg.record.spikes if cfg.record.spikes is not None else [p.name for p in cfg.network.populations]
    for name in names:
        sim.add_monitor(SpikeMonitor(name, max_spikes=cfg.record.max_spikes))
    for s in cfg.record.state:
        sim.add_monitor(StateMonitor(s.population, s.variables, indices=s.indices, every=s.every))
    for pl in cfg.plasticity:
        projection = sim.network.projections[pl.projection]
        STDPOnlineLearner(projection, pl.rule.to_rule(), dt=sim.dt, batch=sim.batch, scale=pl.scale).attach(sim)
    write_arrays(out_dir / INITIAL_WEIGHTS, {
        pl.projection: sim.network.projections[pl.projection].synapse_weights().cpu().numpy() for pl in cfg.plasticity
    })  # fmt: skip
    return sim


def _run_neurosim(cfg: SimulationConfig, progress: bool, record_out: list[RunRecord], live: LiveOptions,
                  out_dir: Path, *, resume: bool, checkpoint_every: float | None) -> None:  # fmt: skip
    sim = Simulation.load(out_dir / CHECKPOINT_DIR) if resume else _new_simulation(cfg, out_dir)
    sim.add_chunk_hook(live.metrics.observe_chunk)
    bus: EventBus[Event] = EventBus()
    if live.mqtt is not None:
        SpikeStream(bus).attach(sim)
    monitors = {m.source: m for m in sim.monitors if isinstance(m, SpikeMonitor)}
    states = [m for m in sim.monitors if isinstance(m, StateMonitor)]
    learners = [ln for ln in sim.plasticity if isinstance(ln, STDPOnlineLearner)]
    with np.load(out_dir / INITIAL_WEIGHTS) as initial:
        initial_weights = {name: initial[name] for name in initial.files}
    record = RunRecord(
        duration_s=0.0,
        wall_s=0.0,
        batch=sim.batch,
        spikes={},
        sizes={name: sim.network.source_size(name) for name in monitors},
        initial_weights=initial_weights,
        synapses={
            ln.projection.name: (ln.projection.pre_index.cpu().numpy(), ln.projection.post_index.cpu().numpy())
            for ln in learners
        },
    )
    record_out.append(record)
    wall0 = time.perf_counter()
    total = round(cfg.run.duration / cfg.run.dt)
    segment = checkpoint_segment_steps(cfg, checkpoint_every, sim.chunk_steps)

    def segments() -> Iterator[float]:
        """Simulated seconds of each segment still to run; a checkpoint after each."""
        with tqdm(total=total, initial=sim.step, unit="step", disable=not progress, desc="simulating") as bar:
            while sim.step < total:
                before = sim.step
                yield min(segment, total - sim.step) * sim.dt
                sim.save(out_dir / CHECKPOINT_DIR)
                bar.update(sim.step - before)

    async def publishing(mqtt: BrokerSettings) -> None:
        async with MQTTPublisher(mqtt, live.run_id, bus, metrics=live.metrics) as publisher:
            await publisher.ready()
            for seconds in segments():
                await sim.run_async(seconds)

    try:
        if live.mqtt is None:
            for seconds in segments():
                sim.run(seconds)
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
    checkpoint_every: float | None = None,
) -> dict[str, Any]:
    """Run ``cfg`` into the new directory ``out``. On neurosim's engine the run goes in
    segments of ``checkpoint_every`` simulated seconds (default a tenth of the run, whole
    chunks), saving ``out/checkpoint`` after each: ``resume_simulation(out)`` goes on from
    there after an interruption."""
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
    return _execute(cfg, out_dir, progress=progress, backend=backend, brian2_target=brian2_target, live=live,
                    resume=False, checkpoint_every=checkpoint_every)  # fmt: skip


def resume_simulation(
    out: str | Path,
    *,
    progress: bool = True,
    live: LiveOptions | None = None,
    checkpoint_every: float | None = None,
    duration: float | None = None,
) -> dict[str, Any]:
    """Go on with the run in ``out`` from its last checkpoint, to the config's duration (or
    ``duration``, to extend a finished run), and write its outputs as a whole run would."""
    out_dir = Path(out)
    if not (out_dir / "config.json").is_file():
        raise ValueError(f"{out_dir}: no config.json: not the output directory of a neurosim run")
    saved = json.loads((out_dir / "config.json").read_text())
    if "experiment" in saved:
        raise ValueError(f"{out_dir} holds a continual-learning experiment: resume it with `neurosim run --resume` "
                         "or neurosim.phases.schedule.run_experiment(..., resume=True)")  # fmt: skip
    if not (out_dir / CHECKPOINT_DIR).is_dir():
        raise ValueError(f"{out_dir}: no {CHECKPOINT_DIR}/: the run stopped before its first checkpoint; run it again")
    cfg = parse_config(saved)
    if duration is not None:
        cfg = parse_config({**cfg.model_dump(mode="json"), "run": {**cfg.run.model_dump(mode="json"),
                                                                   "duration": duration}})  # fmt: skip
        write_json(out_dir / "config.json", cfg.model_dump(mode="json"))
    reached = read_manifest(out_dir / CHECKPOINT_DIR)["step"] * cfg.run.dt
    if reached >= cfg.run.duration - cfg.run.dt / 2:
        raise ValueError(f"{out_dir}: the run is complete ({reached:g} s of {cfg.run.duration:g} s); "
                         "give a longer duration to extend it")  # fmt: skip
    return _execute(cfg, out_dir, progress=progress, backend=RunBackend.NEUROSIM, brian2_target="cython",
                    live=live or LiveOptions(), resume=True, checkpoint_every=checkpoint_every)  # fmt: skip


def _execute(cfg: SimulationConfig, out_dir: Path, *, progress: bool, backend: RunBackend, brian2_target: str,
             live: LiveOptions, resume: bool, checkpoint_every: float | None) -> dict[str, Any]:  # fmt: skip
    records: list[RunRecord] = []
    error: str | None = None
    try:
        if backend is RunBackend.BRIAN2:
            _run_brian2(cfg, brian2_target, records)
        else:
            _run_neurosim(cfg, progress, records, live, out_dir, resume=resume, checkpoint_every=checkpoint_every)
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
