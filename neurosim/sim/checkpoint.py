"""Checkpoints of a ``Simulation``: everything needed to go on exactly where it stopped.

``save_simulation(sim, path)`` (``sim.save(path)``) writes a directory ``path`` with two
files, neither of them a pickle:

- ``checkpoint.json``: format name and version, the run settings (``dt``, batch, seed,
  dtype, backend, chunk size), the step reached and the spike counts, the network's
  structure (populations with their model parameters, inputs, projections' metadata),
  every input's random-generator state per instance (numpy ``bit_generator.state``), the
  monitors' arguments and the learners' rules;
- ``arrays.npz``: every array, named ``<group>/<name>/<field>``: neuron state per
  population (``state/exc/v``), the spikes in flight (``history``), projections' weights,
  indices and per-synapse delays, inputs' rates, spike lists and currents, what each monitor has recorded,
  each learner's traces.

The directory is written next to ``path`` under a temporary name and renamed into place,
so a crash mid-save leaves the previous checkpoint whole. ``load_simulation(path)``
(``Simulation.load(path)``) rebuilds the simulation with its monitors and its
``STDPOnlineLearner`` objects: a run saved at any chunk boundary and loaded goes on with the same
spikes, state and weights as a run that never stopped, on both paths (held by tests).

Not saved, because they are code: step hooks, chunk hooks, and learners other than
``STDPOnlineLearner`` (saving refuses them rather than dropping them). A learner wired to
an accumulator, readout or regulariser belongs to an experiment: its parts are saved by
the experiment, not here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

import neurosim
from neurosim.learning import stdp
from neurosim.learning.learner import STDPOnlineLearner
from neurosim.sim import neurons
from neurosim.sim.engine import Backend, Simulation
from neurosim.sim.inputs import CurrentInput, PoissonDrive, PoissonInput, SpikeArrayInput
from neurosim.sim.monitors import Monitor, SpikeMonitor, StateMonitor, WeightMonitor
from neurosim.sim.network import InitialValue, Network, Normal, Population, Uniform
from neurosim.sim.synapses import Channel, Projection, Propagation, WeightFormat

if TYPE_CHECKING:
    pass

FORMAT = "neurosim.simulation-checkpoint"
VERSION = 1
MANIFEST, ARRAYS = "checkpoint.json", "arrays.npz"

__all__ = [
    "CheckpointError",
    "load_simulation",
    "read_arrays",
    "read_json_manifest",
    "restore_simulation_state",
    "save_simulation",
    "simulation_state",
    "to_numpy",
    "write_directory",
]


class CheckpointError(ValueError):
    """A simulation that cannot be saved as it is, or a directory that is not a checkpoint."""


_MODELS: dict[str, type[neurons.NeuronParams]] = {
    cls.__name__: cls for cls in (neurons.CurrentLIF, neurons.ConductanceLIF, neurons.AdaptiveLIF)
}
_RULES: dict[str, type[Any]] = {cls.__name__: cls for cls in (stdp.PairSTDP, stdp.TripletSTDP, stdp.RewardSTDP)}
_MONITORS: dict[str, type[Monitor]] = {cls.__name__: cls for cls in (SpikeMonitor, StateMonitor, WeightMonitor)}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def to_numpy(t: torch.Tensor) -> npt.NDArray[Any]:
    """A detached CPU copy of ``t`` as a numpy array (what a checkpoint stores)."""
    return t.detach().cpu().numpy().copy()


def _rule_json(rule: stdp.STDPRule) -> dict[str, Any]:
    fields = {f.name: getattr(rule, f.name) for f in dataclasses.fields(rule)}
    if isinstance(rule, stdp.RewardSTDP):
        fields["pair"] = _rule_json(rule.pair)
    return {"type": type(rule).__name__, **{k: v.value if hasattr(v, "value") else v for k, v in fields.items()}}


def _rule_from_json(data: Mapping[str, Any]) -> stdp.STDPRule:
    fields = dict(data)
    cls = _RULES[fields.pop("type")]
    if cls is stdp.RewardSTDP:
        fields["pair"] = _rule_from_json(fields["pair"])
    for f in dataclasses.fields(cls):
        if f.name in fields and isinstance(f.default, (stdp.WeightDependence, stdp.TraceMode)):
            fields[f.name] = type(f.default)(fields[f.name])
    rule: stdp.STDPRule = cls(**fields)
    return rule


def _initial_json(value: InitialValue) -> Any:
    if isinstance(value, Uniform):
        return {"uniform": [value.low, value.high]}
    if isinstance(value, Normal):
        return {"normal": [value.mean, value.std]}
    return float(value)


def save_simulation(sim: Simulation, path: str | os.PathLike[str]) -> Path:
    """Write ``sim`` (network, state, random generators, monitors, STDP learners) to the
    directory ``path`` (replaced atomically if it exists); returns it."""
    if sim.step_hooks:
        raise CheckpointError("the simulation has step hooks (code, not state): remove them before saving, "
                              "and add them again after loading")  # fmt: skip
    arrays: dict[str, npt.NDArray[Any]] = {}
    network = _save_network(sim.network, arrays)
    dynamic = simulation_state(sim, arrays)
    monitors = []
    for k, monitor in enumerate(sim.monitors):
        if type(monitor).__name__ not in _MONITORS:
            raise CheckpointError(f"monitor {k} is a {type(monitor).__name__}, which checkpoints cannot hold")
        arguments, recorded = monitor.checkpoint()
        monitors.append({"type": type(monitor).__name__, "arguments": arguments})
        arrays.update({f"monitor/{k}/{key}": value for key, value in recorded.items()})
    settings = {
        "dt": sim.dt, "batch": sim.batch, "seed": sim.seed, "dtype": str(sim.dtype).removeprefix("torch."),
        "backend": sim.backend.value, "chunk_steps": sim.chunk_steps, "threads": sim.threads,
        "device": sim.device.type,
    }  # fmt: skip
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "neurosim_version": neurosim.__version__,
        "settings": settings,
        **dynamic,
        "network": network,
        "monitors": monitors,
        "learners": [_save_learner(k, learner, arrays) for k, learner in enumerate(sim.plasticity)],
    }
    return write_directory(Path(path), manifest, arrays)


def simulation_state(sim: Simulation, arrays: dict[str, npt.NDArray[Any]]) -> dict[str, Any]:
    """What changes as a simulation runs (step, spike counts, neuron state, spikes in flight,
    input generators and rates, weights): JSON, with the arrays put into ``arrays``."""
    for name, state in sim.state.items():
        for var, tensor in zip(state._fields, state, strict=True):
            arrays[f"state/{name}/{var}"] = to_numpy(tensor)
    arrays["history"] = to_numpy(sim._history)
    for name, proj in sim.network.projections.items():
        arrays[f"projection/{name}/weights"] = to_numpy(proj.weights)
    for name, source in sim.network.inputs.items():
        if isinstance(source, PoissonInput):
            arrays[f"input/{name}/rates"] = source.rates
    return {
        "step": sim.step,
        "spike_counts": sim.spike_counts,
        "input_rngs": {name: [rng.bit_generator.state for rng in rngs] for name, rngs in sim._input_rngs.items()},
    }


def restore_simulation_state(sim: Simulation, saved: Mapping[str, Any], arrays: Mapping[str, npt.NDArray[Any]]) -> None:
    """Put ``simulation_state``'s content back into ``sim``, a simulation built the same way
    (same network structure, dt, batch and seed); a mismatch is a ``CheckpointError``."""
    for name, state in sim.state.items():
        restored = []
        for var, tensor in zip(state._fields, state, strict=True):
            value = arrays.get(f"state/{name}/{var}")
            if value is None or value.shape != tuple(tensor.shape):
                raise CheckpointError(f"the checkpoint's state of {name!r}.{var} does not fit this simulation")
            restored.append(torch.from_numpy(value).to(device=tensor.device, dtype=tensor.dtype))
        sim.state[name] = type(state)(*restored)
    sim._history = torch.from_numpy(arrays["history"]).to(sim.device)
    for name, proj in sim.network.projections.items():
        weights = torch.from_numpy(arrays[f"projection/{name}/weights"]).to(proj.weights.device, proj.weights.dtype)
        if weights.shape != proj.weights.shape:
            raise CheckpointError(f"the checkpoint's weights of {name!r} do not fit this simulation")
        proj.weights.copy_(weights)
    for name, source in sim.network.inputs.items():
        if isinstance(source, PoissonInput):
            source.set_rates(arrays[f"input/{name}/rates"])
    sim.step = int(saved["step"])
    sim.spike_counts = {k: int(v) for k, v in saved["spike_counts"].items()}
    for name, states in saved["input_rngs"].items():
        for rng, state in zip(sim._input_rngs[name], states, strict=True):
            rng.bit_generator.state = state
    sim.invalidate_compiled()


def _initial_value(saved: float | dict[str, list[float]]) -> InitialValue:
    if not isinstance(saved, dict):
        return saved
    if "normal" in saved:
        return Normal(*saved["normal"])
    return Uniform(*saved["uniform"])


def _save_network(net: Network, arrays: dict[str, npt.NDArray[Any]]) -> dict[str, Any]:
    """The network's structure as JSON; its arrays into ``arrays``."""
    populations = []
    for name, pop in net.populations.items():
        params = {f.name: getattr(pop.params, f.name) for f in dataclasses.fields(pop.params)}
        populations.append({"name": name, "n": pop.n, "model": type(pop.params).__name__, "params": params,
                            "initial": {k: _initial_json(v) for k, v in pop.initial.items()}})  # fmt: skip
    inputs = []
    for name, source in net.inputs.items():
        if isinstance(source, PoissonInput):
            inputs.append({"type": "poisson", "name": name, "n": source.n})
            arrays[f"input/{name}/rates"] = source.rates
        elif isinstance(source, SpikeArrayInput):
            inputs.append({"type": "spike_array", "name": name, "n": source.n})
            arrays[f"input/{name}/times"], arrays[f"input/{name}/indices"] = source.times, source.indices
        else:
            raise CheckpointError(f"input {name!r} is a {type(source).__name__}, which checkpoints cannot hold")
    currents = []
    for name, current in net.currents.items():
        constant = math.isinf(current.sample_dt)  # JSON has no infinity: a constant current has no sample_dt
        currents.append({"name": name, "target": current.target, "sample_dt": None if constant else current.sample_dt})
        arrays[f"current/{name}/samples"] = current.samples
    projections = []
    for name, proj in net.projections.items():
        projections.append({"name": name, "source": proj.source, "target": proj.target, "n_pre": proj.n_pre,
                            "n_post": proj.n_post, "channel": proj.channel.value, "delay_steps": proj.delay_steps,
                            "format": proj.format.value, "propagation": proj.propagation.value,
                            "mask": proj.mask is not None,
                            "synapse_delays": proj.synapse_delays is not None})  # fmt: skip
        for field in ("pre_index", "post_index", "indptr", "weights"):
            arrays[f"projection/{name}/{field}"] = to_numpy(getattr(proj, field))
        if proj.synapse_delays is not None:
            arrays[f"projection/{name}/synapse_delays"] = to_numpy(proj.synapse_delays)
        if proj.mask is not None:
            arrays[f"projection/{name}/mask"] = to_numpy(proj.mask)
    drives = [{"name": d.name, "target": d.target, "n_sources": d.n_sources, "rate": d.rate, "weight": d.weight,
               "channel": d.channel.value} for d in net.drives.values()]  # fmt: skip
    return {"populations": populations, "inputs": inputs, "currents": currents, "drives": drives,
            "projections": projections}  # fmt: skip


def _save_learner(k: int, learner: object, arrays: dict[str, npt.NDArray[Any]]) -> dict[str, Any]:
    if not isinstance(learner, STDPOnlineLearner):
        raise CheckpointError(f"learner {k} is a {type(learner).__name__}; a simulation checkpoint holds "
                              "STDPOnlineLearners only")  # fmt: skip
    wired = [n for n in ("accumulator", "readout", "regulariser", "surrogate", "reward_source")
             if getattr(learner, n) is not None]  # fmt: skip
    if wired:
        raise CheckpointError(f"learner {k} on {learner.projection.name!r} is wired to {', '.join(wired)}: "
                              "that is an experiment's state, saved with the experiment")  # fmt: skip
    info, learner_arrays = learner.checkpoint_state()
    arrays.update({f"learner/{k}/{key}": value for key, value in learner_arrays.items()})
    return {"projection": learner.projection.name, "rule": _rule_json(learner.rule), "scale": learner.scale,
            "reward_per_spike": learner.reward_per_spike, **info}  # fmt: skip


def write_directory(path: Path, manifest: Mapping[str, Any], arrays: Mapping[str, npt.NDArray[Any]]) -> Path:
    """Write ``manifest`` (JSON) and ``arrays`` (npz) into the directory ``path`` atomically:
    staged beside it, fsynced, then swapped in, so a crash leaves the old checkpoint whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        with open(staging / ARRAYS, "wb") as fh:
            np.savez(fh, **dict(arrays))  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
            fh.flush()
            os.fsync(fh.fileno())
        with open(staging / MANIFEST, "w") as fh:
            json.dump(manifest, fh, indent=1, allow_nan=False)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():  # swap: the old checkpoint stays whole until the new one is in place
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            staging.rename(path)
            shutil.rmtree(old)
        else:
            staging.rename(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def read_json_manifest(path: str | os.PathLike[str], fmt: str, version: int) -> dict[str, Any]:
    """A checkpoint directory's ``checkpoint.json``, checked for its format and version."""
    where = Path(path)
    try:
        manifest: dict[str, Any] = json.loads((where / MANIFEST).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{where}: not a checkpoint (no {MANIFEST})") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{where / MANIFEST}: not JSON ({error.msg})") from None
    if manifest.get("format") != fmt:
        raise CheckpointError(f"{where}: format {manifest.get('format')!r}, expected {fmt!r}")
    if manifest.get("version") != version:
        raise CheckpointError(f"{where}: version {manifest.get('version')!r}; this neurosim reads version {version}")
    return manifest


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A simulation checkpoint's ``checkpoint.json``, checked for its format and version."""
    return read_json_manifest(path, FORMAT, VERSION)


def read_arrays(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Every array of a checkpoint's ``arrays.npz`` (plain arrays: no pickle is allowed)."""
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def load_simulation(path: str | os.PathLike[str], *, device: str | torch.device | None = None) -> Simulation:
    """The simulation saved in ``path``, with its monitors and STDP learners, ready to run on
    (on ``device`` if given, else where it was saved)."""
    manifest = read_manifest(path)
    arrays = read_arrays(Path(path) / ARRAYS)
    settings = manifest["settings"]
    dtype = _DTYPES[settings["dtype"]]
    dev = torch.device(device if device is not None else settings["device"])

    def tensor(key: str) -> torch.Tensor:
        return torch.from_numpy(arrays[key]).to(dev)

    net = Network()
    spec = manifest["network"]
    for pop in spec["populations"]:
        initial = {k: _initial_value(v) for k, v in pop["initial"].items()}
        net.add_population(Population(pop["name"], pop["n"], _MODELS[pop["model"]](**pop["params"]), initial))
    for source in spec["inputs"]:
        name = source["name"]
        if source["type"] == "poisson":
            net.add_input(PoissonInput(name, source["n"], arrays[f"input/{name}/rates"]))
        else:
            net.add_input(SpikeArrayInput(name, source["n"], arrays[f"input/{name}/times"],
                                          arrays[f"input/{name}/indices"]))  # fmt: skip
    for current in spec["currents"]:
        name = current["name"]
        samples, sample_dt = arrays[f"current/{name}/samples"], current["sample_dt"]
        net.add_current(CurrentInput(name, current["target"], samples[0] if sample_dt is None else samples, sample_dt))
    for drive in spec.get("drives", []):
        net.add_drive(PoissonDrive(**{**drive, "channel": Channel(drive["channel"])}))
    for proj in spec["projections"]:
        name = proj["name"]
        net.add_projection(Projection(
            name=name, source=proj["source"], target=proj["target"], n_pre=proj["n_pre"], n_post=proj["n_post"],
            channel=Channel(proj["channel"]), delay_steps=proj["delay_steps"], format=WeightFormat(proj["format"]),
            pre_index=tensor(f"projection/{name}/pre_index"), post_index=tensor(f"projection/{name}/post_index"),
            indptr=tensor(f"projection/{name}/indptr"), weights=tensor(f"projection/{name}/weights").to(dtype),
            mask=tensor(f"projection/{name}/mask") if proj["mask"] else None,
            propagation=Propagation(proj["propagation"]),
            synapse_delays=tensor(f"projection/{name}/synapse_delays") if proj.get("synapse_delays") else None,
        ))  # fmt: skip
    sim = Simulation(net, dt=settings["dt"], batch=settings["batch"], seed=settings["seed"], device=dev, dtype=dtype,
                     backend=Backend(settings["backend"]), chunk_steps=settings["chunk_steps"],
                     threads=settings["threads"])  # fmt: skip
    restore_simulation_state(sim, manifest, arrays)
    for k, entry in enumerate(manifest["monitors"]):
        arguments = dict(entry["arguments"])
        monitor = _MONITORS[entry["type"]](**arguments)
        sim.add_monitor(monitor)
        prefix = f"monitor/{k}/"
        monitor.restore({key.removeprefix(prefix): v for key, v in arrays.items() if key.startswith(prefix)})
    for k, entry in enumerate(manifest["learners"]):
        _load_learner(sim, k, entry, arrays)
    return sim


def _load_learner(sim: Simulation, k: int, entry: Mapping[str, Any], arrays: Mapping[str, npt.NDArray[Any]]) -> None:
    rule = _rule_from_json(entry["rule"])
    learner = STDPOnlineLearner(sim.network.projections[entry["projection"]], rule, dt=sim.dt, batch=sim.batch,
                                scale=entry["scale"], reward_per_spike=entry["reward_per_spike"])  # fmt: skip
    prefix = f"learner/{k}/"
    learner.restore_state(entry, {key.removeprefix(prefix): v for key, v in arrays.items() if key.startswith(prefix)})
    learner.attach(sim)
