"""Monitors with bounded memory: spikes, state variables and weights.

Monitors never hold more than their bound: a spike monitor records a subset of neurons,
a time window, and at most ``max_spikes`` in memory (beyond that it stops recording, warns
once and counts what it dropped), or streams every chunk to disk; state and weight
monitors record a subset at an interval, up to ``max_samples``.

Timing follows Brian2's schedule: a spike of step ``n`` is recorded at ``t = n * dt``;
a state sample taken at step ``n`` holds the values at the start of that step (before its
update), like ``StateMonitor(when='start')``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import numpy.typing as npt

from neurosim.atomic import atomic_write
from neurosim.units import TIME, QuantityLike, to_si

if TYPE_CHECKING:
    from neurosim.sim.engine import Simulation

Int64Array = npt.NDArray[np.int64]
Float32Array = npt.NDArray[np.float32]


class SpikeChunk(NamedTuple):
    """Spikes of one source during one chunk, on the host, ordered by (step, instance, index)."""

    steps: Int64Array
    indices: Int64Array
    instances: Int64Array

    @staticmethod
    def empty() -> SpikeChunk:
        z = np.zeros(0, dtype=np.int64)
        return SpikeChunk(z, z.copy(), z.copy())


class SpikeTrains(NamedTuple):
    """Recorded spikes: times (s), neuron indices and instance of each spike."""

    times: npt.NDArray[np.float64]
    indices: Int64Array
    instances: Int64Array


def rate_and_cv(
    times: npt.NDArray[np.float64], indices: Int64Array, n: int, start: float, stop: float
) -> tuple[float, float]:
    """Mean firing rate (Hz) of ``n`` neurons in ``[start, stop)`` and the mean coefficient of
    variation of the inter-spike intervals over the neurons with at least 3 spikes there
    (NaN when none has), for one instance's ``times`` and ``indices``."""
    keep = (times >= start) & (times < stop)
    order = np.lexsort((times[keep], indices[keep]))
    t, i = times[keep][order], indices[keep][order]
    same = i[1:] == i[:-1]
    isi, owner = np.diff(t)[same], i[1:][same]
    counts = np.bincount(owner, minlength=n)
    sums = np.bincount(owner, weights=isi, minlength=n)
    squares = np.bincount(owner, weights=isi**2, minlength=n)
    enough = counts >= 2
    mean = sums[enough] / counts[enough]
    std = np.sqrt(np.maximum(squares[enough] / counts[enough] - mean**2, 0.0))
    cv = float(np.mean(std / mean)) if enough.any() else math.nan
    return float(t.size / (n * (stop - start))), cv


@dataclass(frozen=True)
class ChunkResult:
    """What one chunk of steps produced: spikes per source (populations and inputs)."""

    start_step: int
    n_steps: int
    dt: float
    spikes: dict[str, SpikeChunk]
    wall_s: float = 0.0  # wall time the engine spent simulating the chunk (hooks excluded)

    @property
    def t_start(self) -> float:
        """Time (s) of the chunk's first step."""
        return self.start_step * self.dt

    @property
    def t_stop(self) -> float:
        """Time (s) just after the chunk's last step."""
        return (self.start_step + self.n_steps) * self.dt


class Monitor:
    """Base of all monitors: chunk-level and periodic recording hooks, both optional."""

    def bind(self, sim: Simulation) -> None:
        """Called once when added to a simulation; check names and sizes here."""

    def next_due(self, step: int) -> int | None:
        """First step >= ``step`` at which ``record`` must run, or None."""
        return None

    def record(self, sim: Simulation, step: int) -> None:
        """Record at the start of ``step`` (before its update)."""

    def on_chunk(self, result: ChunkResult) -> None:
        """Receive the spikes of a finished chunk."""

    def checkpoint(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        """``(arguments, recorded arrays)``: what ``neurosim.sim.checkpoint`` saves to rebuild
        this monitor with what it has recorded (a monitor type without it cannot be saved)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be checkpointed")

    def restore(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        """Put back what ``checkpoint`` returned (after ``bind``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be checkpointed")


def _index_filter(indices: Sequence[int] | None, n: int, what: str) -> Int64Array | None:
    if indices is None:
        return None
    arr = np.unique(np.asarray(indices, dtype=np.int64))
    if arr.size and (arr[0] < 0 or arr[-1] >= n):
        raise ValueError(f"{what}: indices must be in [0, {n}), got [{arr[0]}, {arr[-1]}]")
    return arr


def _finite_stop(stop: float) -> dict[str, float]:
    """A checkpoint's ``stop`` argument: left out when open-ended (JSON has no infinity)."""
    return {} if math.isinf(stop) else {"stop": stop}


def _steps_window(start: float, stop: float, dt: float) -> tuple[int, float]:
    first = math.ceil(start / dt - 1e-9)
    last = math.inf if math.isinf(stop) else stop / dt - 1e-9
    return first, last


class SpikeMonitor(Monitor):
    """Records spikes of a population or input.

    ``indices`` restricts to a subset; ``start``/``stop`` (s) to a window; ``stream_to`` a
    directory receives one ``chunk_NNNNNN.npz`` per chunk (atomically written) instead of
    keeping spikes in memory; read them back with ``SpikeMonitor.load``.
    """

    def __init__(
        self,
        source: str,
        *,
        indices: Sequence[int] | None = None,
        start: QuantityLike = 0.0,
        stop: QuantityLike = math.inf,
        stream_to: str | os.PathLike[str] | None = None,
        max_spikes: int = 20_000_000,
    ) -> None:
        start, stop = to_si(start, TIME, "SpikeMonitor.start"), to_si(stop, TIME, "SpikeMonitor.stop")
        if max_spikes <= 0:
            raise ValueError(f"SpikeMonitor.max_spikes must be positive, got {max_spikes}")
        if stop < start:
            raise ValueError(f"SpikeMonitor window must have start <= stop, got {start}, {stop}")
        self.source = source
        self._raw_indices = indices
        self._filter: Int64Array | None = None
        self.start, self.stop = start, stop
        self.stream_to = None if stream_to is None else Path(stream_to)
        self.max_spikes = max_spikes
        self.dt = math.nan
        self.count = 0  # spikes recorded (in memory or on disk)
        self.dropped = 0  # spikes not kept because max_spikes was reached
        self._chunks: list[SpikeChunk] = []
        self._n_files = 0

    def bind(self, sim: Simulation) -> None:
        if self.source not in sim.network.source_names():
            raise ValueError(
                f"SpikeMonitor: unknown source {self.source!r}; known: {', '.join(sim.network.source_names())}"
            )
        self._filter = _index_filter(self._raw_indices, sim.network.source_size(self.source), "SpikeMonitor")
        self.dt = sim.dt
        if self.stream_to is not None:
            self.stream_to.mkdir(parents=True, exist_ok=True)

    def on_chunk(self, result: ChunkResult) -> None:
        chunk = result.spikes.get(self.source)
        if chunk is None or chunk.steps.size == 0:
            return
        first, last = _steps_window(self.start, self.stop, result.dt)
        keep = (chunk.steps >= first) & (chunk.steps <= last)
        if self._filter is not None:
            keep &= np.isin(chunk.indices, self._filter)
        chunk = SpikeChunk(chunk.steps[keep], chunk.indices[keep], chunk.instances[keep])
        if chunk.steps.size == 0:
            return
        if self.stream_to is not None:
            self._write(self.stream_to, chunk)
            self.count += chunk.steps.size
            return
        room = self.max_spikes - self.count
        if chunk.steps.size > room:
            if self.dropped == 0:
                warnings.warn(
                    f"SpikeMonitor({self.source!r}) reached max_spikes={self.max_spikes}; further spikes are "
                    "dropped and counted. Record a subset, a window, or use stream_to=DIR.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            self.dropped += chunk.steps.size - room
            chunk = SpikeChunk(chunk.steps[:room], chunk.indices[:room], chunk.instances[:room])
        if chunk.steps.size:
            self._chunks.append(chunk)
            self.count += chunk.steps.size

    @property
    def recorded_indices(self) -> Int64Array | None:
        """The neurons recorded (sorted), or None for all of them (known once bound)."""
        return self._filter

    def checkpoint(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        indices = None if self._raw_indices is None else [int(i) for i in self._raw_indices]
        arguments = {"source": self.source, "indices": indices, "start": self.start, **_finite_stop(self.stop),
                     "stream_to": None if self.stream_to is None else str(self.stream_to),
                     "max_spikes": self.max_spikes}  # fmt: skip
        merged = SpikeChunk.empty() if self.stream_to is not None else self._merged()  # streamed: on disk already
        counters = np.array([self.count, self.dropped, self._n_files], dtype=np.int64)
        return arguments, {"steps": merged.steps, "indices": merged.indices, "instances": merged.instances,
                           "counters": counters}  # fmt: skip

    def restore(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        self.count, self.dropped, self._n_files = (int(v) for v in arrays["counters"])
        self._chunks = [SpikeChunk(arrays["steps"], arrays["indices"], arrays["instances"])]

    def _write(self, directory: Path, chunk: SpikeChunk) -> None:
        final = directory / f"chunk_{self._n_files:06d}.npz"
        with atomic_write(final) as fh:
            np.savez(fh, steps=chunk.steps, indices=chunk.indices, instances=chunk.instances, dt=np.float64(self.dt))
        self._n_files += 1

    def _merged(self) -> SpikeChunk:
        if self.stream_to is not None:
            steps, indices, instances, _ = self.load(self.stream_to)
            return SpikeChunk(steps, indices, instances)
        if not self._chunks:
            return SpikeChunk.empty()
        merged = SpikeChunk(*(np.concatenate(parts) for parts in zip(*self._chunks, strict=True)))
        self._chunks = [merged]
        return merged

    @property
    def steps(self) -> Int64Array:
        """Step of every recorded spike."""
        return self._merged().steps

    @property
    def times(self) -> npt.NDArray[np.float64]:
        """Time (s) of every recorded spike."""
        return (self._merged().steps * self.dt).astype(np.float64)

    @property
    def indices(self) -> Int64Array:
        """Neuron index of every recorded spike."""
        return self._merged().indices

    @property
    def instances(self) -> Int64Array:
        """Batch instance of every recorded spike."""
        return self._merged().instances

    def trains(self) -> SpikeTrains:
        """Every recorded spike as ``SpikeTrains`` (times in s, indices, instances)."""
        data = self._merged()
        return SpikeTrains((data.steps * self.dt).astype(np.float64), data.indices, data.instances)

    def spike_trains(self, instance: int = 0) -> dict[int, npt.NDArray[np.float64]]:
        """Spike times (s) per neuron index for one instance."""
        data = self._merged()
        sel = data.instances == instance
        times, idx = data.steps[sel] * self.dt, data.indices[sel]
        return {int(i): times[idx == i] for i in np.unique(idx)}

    @staticmethod
    def load(directory: str | os.PathLike[str]) -> tuple[Int64Array, Int64Array, Int64Array, float]:
        """Read a streamed directory: ``(steps, indices, instances, dt)``."""
        files = sorted(Path(directory).glob("chunk_*.npz"))
        if not files:
            z = np.zeros(0, np.int64)
            return z, z.copy(), z.copy(), math.nan
        parts = [np.load(f) for f in files]
        dt = float(parts[0]["dt"])
        return (
            np.concatenate([p["steps"] for p in parts]),
            np.concatenate([p["indices"] for p in parts]),
            np.concatenate([p["instances"] for p in parts]),
            dt,
        )


class _Periodic(Monitor):
    def __init__(
        self, every: QuantityLike, start: QuantityLike, stop: QuantityLike, max_samples: int, owner: str
    ) -> None:
        every = to_si(every, TIME, f"{owner}.every")
        start, stop = to_si(start, TIME, f"{owner}.start"), to_si(stop, TIME, f"{owner}.stop")
        if not every > 0:
            raise ValueError(f"{owner}.every must be > 0 s, got {every}")
        if max_samples <= 0:
            raise ValueError(f"{owner}.max_samples must be positive, got {max_samples}")
        if stop < start:
            raise ValueError(f"{owner} window must have start <= stop, got {start}, {stop}")
        self.every, self.start, self.stop, self.max_samples = every, start, stop, max_samples
        self._every_steps = 1
        self._first = 0
        self._last: float = math.inf
        self.sample_steps: list[int] = []
        self.dt = math.nan

    def _bind_timing(self, dt: float) -> None:
        self.dt = dt
        self._every_steps = max(1, round(self.every / dt))
        self._first, self._last = _steps_window(self.start, self.stop, dt)

    def next_due(self, step: int) -> int | None:
        if len(self.sample_steps) >= self.max_samples:
            return None
        base = max(step, self._first)
        k = -(-(base - self._first) // self._every_steps)
        due = self._first + k * self._every_steps
        return due if due <= self._last else None

    @property
    def times(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.sample_steps, dtype=np.float64) * self.dt


class StateMonitor(_Periodic):
    """Samples state variables of a subset of a population every ``every`` seconds.

    ``values[var]`` has shape ``(samples, batch, len(indices))``.
    """

    def __init__(
        self,
        population: str,
        variables: Sequence[str] = ("v",),
        *,
        indices: Sequence[int] | None = None,
        every: QuantityLike = 1e-4,
        start: QuantityLike = 0.0,
        stop: QuantityLike = math.inf,
        max_samples: int = 1_000_000,
    ) -> None:
        super().__init__(every, start, stop, max_samples, "StateMonitor")
        self.population = population
        self.variables = tuple(variables)
        self._raw_indices = indices
        self.indices: Int64Array = np.zeros(0, np.int64)
        self._samples: dict[str, list[Float32Array]] = {v: [] for v in self.variables}

    def bind(self, sim: Simulation) -> None:
        pop = sim.network.populations.get(self.population)
        if pop is None:
            raise ValueError(f"StateMonitor: unknown population {self.population!r}")
        known = type(sim.state[self.population])._fields
        for var in self.variables:
            if var not in known:
                raise ValueError(
                    f"StateMonitor: population {self.population!r} has no variable {var!r}; it has {', '.join(known)}"
                )
        chosen = _index_filter(self._raw_indices, pop.n, "StateMonitor")
        self.indices = np.arange(pop.n, dtype=np.int64) if chosen is None else chosen
        self._bind_timing(sim.dt)

    def record(self, sim: Simulation, step: int) -> None:
        state = sim.state[self.population]
        idx = sim.index_tensor(self.indices)
        for var in self.variables:
            self._samples[var].append(getattr(state, var).index_select(1, idx).detach().cpu().numpy().copy())
        self.sample_steps.append(step)

    def checkpoint(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        indices = None if self._raw_indices is None else [int(i) for i in self._raw_indices]
        arguments = {
            "population": self.population, "variables": list(self.variables), "indices": indices,
            "every": self.every, "start": self.start, **_finite_stop(self.stop), "max_samples": self.max_samples,
        }  # fmt: skip
        arrays = {f"values.{var}": v for var, v in self.values.items()}
        return arguments, {**arrays, "sample_steps": np.asarray(self.sample_steps, dtype=np.int64)}

    def restore(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        self.sample_steps = [int(s) for s in arrays["sample_steps"]]
        self._samples = {var: list(arrays[f"values.{var}"]) for var in self.variables}

    @property
    def values(self) -> dict[str, Float32Array]:
        """Each variable's samples, ``(samples, batch, len(indices))``."""
        return {
            var: np.stack(s) if s else np.zeros((0, 0, self.indices.size), np.float32)
            for var, s in self._samples.items()
        }


class WeightMonitor(_Periodic):
    """Snapshots of a projection's weights (synapse order) every ``every`` seconds."""

    def __init__(
        self,
        projection: str,
        *,
        every: QuantityLike = 1.0,
        start: QuantityLike = 0.0,
        stop: QuantityLike = math.inf,
        max_samples: int = 1000,
    ) -> None:
        super().__init__(every, start, stop, max_samples, "WeightMonitor")
        self.projection = projection
        self._snapshots: list[Float32Array] = []

    def bind(self, sim: Simulation) -> None:
        if self.projection not in sim.network.projections:
            raise ValueError(f"WeightMonitor: unknown projection {self.projection!r}")
        self._bind_timing(sim.dt)

    def record(self, sim: Simulation, step: int) -> None:
        w = sim.network.projections[self.projection].synapse_weights()
        self._snapshots.append(w.detach().cpu().numpy().astype(np.float32, copy=True))
        self.sample_steps.append(step)

    def checkpoint(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        arguments = {"projection": self.projection, "every": self.every, "start": self.start,
                     **_finite_stop(self.stop), "max_samples": self.max_samples}  # fmt: skip
        return arguments, {"weights": self.weights, "sample_steps": np.asarray(self.sample_steps, dtype=np.int64)}

    def restore(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        self.sample_steps = [int(s) for s in arrays["sample_steps"]]
        self._snapshots = list(arrays["weights"])

    @property
    def weights(self) -> Float32Array:
        """``(snapshots, n_synapses)``."""
        return np.stack(self._snapshots) if self._snapshots else np.zeros((0, 0), np.float32)
