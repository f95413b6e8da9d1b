"""The engine: owns the run-time state and runs the time loop in chunks.

Schedule of one step ``n`` (``t = n * dt``), the same in both paths and as Brian2's
default schedule:

1. ``start``: periodic monitors due at ``n`` record (state before the update);
2. ``groups``: every population integrates one step (``neurons.step``: state update,
   threshold, reset); inputs emit their spikes of step ``n``;
3. ``synapses``: every projection adds the weights of spikes emitted ``delay`` steps ago to
   its target channel, in the order the projections were added (with per-synapse delays,
   the spikes of every earlier step through the synapses of that delay);
4. ``plasticity``: per-step hooks run (learners), seeing the spikes of step ``n``;
5. ``end``: the step's spikes join the chunk record; after the last step of a chunk,
   spike monitors and chunk hooks receive it.

Two paths execute it. The PyTorch path runs on ``cpu`` or ``cuda``, over a batch of
independent instances, and calls per-step hooks. The compiled path (numba) runs whole
chunks in one compiled loop on the CPU; ``Backend.AUTO`` takes it whenever no per-step
hook is registered. Both read and write the same state, so they can alternate by chunk.

Randomness: instance ``b`` of a run with ``seed`` uses seed ``seed + b``; its initial
state and each input draw from their own streams of that seed, so instance ``b`` of a
batch equals a single run with seed ``seed + b``, and the chunking does not change the
numbers drawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import math
import os
import time
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
import torch
from tqdm.auto import tqdm

from neurosim.sim import neurons
from neurosim.sim.inputs import PoissonDrive
from neurosim.sim.monitors import ChunkResult, Monitor, SpikeChunk
from neurosim.sim.network import Network
from neurosim.sim.synapses import Channel
from neurosim.units import DURATION, TIME_STEP, QuantityLike, to_si

if TYPE_CHECKING:
    from neurosim.sim.compiled import CompiledRunner
    from neurosim.sim.compiled_learning import CompiledLearner, CompiledOutcome

Tensor = torch.Tensor

_MAX_CHUNK_RECORD_BYTES = 64 << 20


# Event-loop turns given away at each chunk boundary. Publishing one message takes the MQTT
# publisher a few turns (wake on its queue, register the socket write, write); with one turn
# per chunk a phase event waited behind the run for tenths of a second. A turn with nothing
# to do costs about 10 us.
YIELDS_PER_CHUNK = 4


class Backend(enum.StrEnum):
    """Which path runs a stretch: ``auto`` (compiled when no per-step hook needs PyTorch), ``torch`` or
    ``compiled``."""

    AUTO = "auto"
    TORCH = "torch"
    COMPILED = "compiled"


class StepContext(NamedTuple):
    """What a per-step hook sees: the simulation and the spikes ``(batch, n)`` of this step."""

    sim: Simulation
    step: int
    spikes: Mapping[str, Tensor]


StepHook = Callable[[StepContext], Awaitable[None] | None]


class Plasticity(Protocol):
    """A learner run in the plasticity slot of every step (``STDPOnlineLearner`` is one).

    ``on_step`` runs on the PyTorch path; ``compiled_form`` offers a form the compiled path
    runs instead (asked again before every compiled stretch), or None when this learner
    needs the PyTorch path; ``after_compiled`` books what a stretch did (Fisher steps, the
    sample's step count) and may raise what ``on_step`` would have raised. Inactive
    learners are skipped on both paths."""

    @property
    def active(self) -> bool:
        """Whether the learner runs now (inactive learners are skipped on both paths)."""

    def on_step(self, ctx: StepContext) -> Awaitable[None] | None:
        """The learner's work for one step on the PyTorch path."""

    def compiled_form(self, sim: Simulation) -> CompiledLearner | None:
        """The form the compiled loop runs instead, or None to need the PyTorch path."""

    def after_compiled(self, outcome: CompiledOutcome) -> None:
        """Book what a compiled stretch did; may raise what ``on_step`` would have raised."""


ChunkHook = Callable[[ChunkResult], Awaitable[None] | None]


@dataclass
class RunStats:
    """What a ``run`` did: steps, simulated and wall seconds, spikes per source, the paths that ran."""

    steps: int
    simulated_s: float
    wall_s: float
    spikes: dict[str, int] = field(default_factory=dict)
    backends: set[Backend] = field(default_factory=set)


class AsyncHookInSyncRun(TypeError):
    """A hook returned an awaitable during ``run()``; use ``run_async()`` for async hooks."""


def _resolve_device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch.cuda.is_available() is False on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {str(device)!r}")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _check_weights_placement(network: Network, dtype: torch.dtype, device: torch.device) -> None:
    for proj in network.projections.values():
        if proj.weights.device != device or proj.weights.dtype != dtype:
            raise ValueError(
                f"projection {proj.name!r} holds {proj.weights.dtype} weights on {proj.weights.device}; "
                f"the simulation runs {dtype} on {device}: build the projection with the same dtype and device"
            )


def _drive_keys(n_drives: int, seed: int, batch: int) -> npt.NDArray[np.uint64]:
    """One counter-based generator key per Poisson drive and instance (``PoissonDrive``)."""
    keys = [
        [np.random.SeedSequence(seed + b, spawn_key=(3, k)).generate_state(1, np.uint64)[0] for b in range(batch)]
        for k in range(n_drives)
    ]
    return np.array(keys, dtype=np.uint64).reshape(n_drives, batch)


class Simulation:
    """Runs a ``Network``: ``sim.run(1.0)`` simulates one second of biological time."""

    def __init__(
        self,
        network: Network,
        *,
        dt: QuantityLike = 1e-4,
        batch: int = 1,
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        backend: Backend = Backend.AUTO,
        chunk_steps: int = 1000,
        threads: int | None = 1,
    ) -> None:
        dt = to_si(dt, TIME_STEP, "Simulation.dt")
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if chunk_steps < 1:
            raise ValueError(f"chunk_steps must be >= 1, got {chunk_steps}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        # PyTorch's intra-op threads help large tensors, but on a step loop of small ops they
        # cost more than they give (and stall when another process holds the other cores):
        # runs use ``threads`` PyTorch threads (None: leave PyTorch's setting alone) and
        # restore the previous setting afterwards.
        self.threads = threads
        self.network = network
        self.dt = float(dt)
        self.batch = batch
        self.seed = seed
        self.device = _resolve_device(device)
        self.dtype = dtype
        self.backend = Backend(backend)
        if self.backend is Backend.COMPILED and self.device.type != "cpu":
            raise ValueError("the compiled backend runs on the CPU only; use backend='torch' for cuda")
        self.step = 0
        self.step_hooks: list[StepHook] = []
        self.plasticity: list[Plasticity] = []
        self.chunk_hooks: list[ChunkHook] = []
        self.monitors: list[Monitor] = []
        self.spike_counts: dict[str, int] = dict.fromkeys(network.source_names(), 0)

        self._offsets: dict[str, tuple[int, int]] = {}
        offset = 0
        for name in network.source_names():
            n = network.source_size(name)
            self._offsets[name] = (offset, offset + n)
            offset += n
        self.n_sources = offset
        max_delay = max((p.max_delay_steps for p in network.projections.values()), default=0)
        self._slots = max_delay + 1
        self._history = torch.zeros((self._slots, batch, self.n_sources), dtype=torch.bool, device=self.device)
        self.chunk_steps = max(1, min(chunk_steps, _MAX_CHUNK_RECORD_BYTES // max(1, batch * self.n_sources)))

        _check_weights_placement(network, dtype, self.device)

        seeds = [np.random.SeedSequence(seed + b) for b in range(batch)]
        init_rngs = [np.random.default_rng(s.spawn(1)[0]) for s in seeds]
        self._input_rngs: dict[str, list[np.random.Generator]] = {}
        for k, name in enumerate(network.inputs):
            self._input_rngs[name] = [
                np.random.default_rng(np.random.SeedSequence(seed + b, spawn_key=(1, k))) for b in range(batch)
            ]
        self.state: dict[str, neurons.NeuronState] = {
            name: self._initial_state(name, init_rngs) for name in network.populations
        }
        self._drive_keys = _drive_keys(len(network.drives), seed, batch)
        self._index_cache: dict[bytes, Tensor] = {}
        self._steps_back_cache: dict[int, Tensor] = {}
        self._compiled: CompiledRunner | None = None
        self._last_stats = RunStats(steps=0, simulated_s=0.0, wall_s=0.0)

    # ----------------------------------------------------------------------------- state
    def _initial_state(self, name: str, rngs: list[np.random.Generator]) -> neurons.NeuronState:
        pop = self.network.populations[name]
        base = neurons.initial_state(pop.params, self.batch, pop.n, dtype=self.dtype, device=self.device)
        np_dtype = np.float32 if self.dtype == torch.float32 else np.float64
        values = {}
        for var in base._fields:
            default = pop.params.v_rest if var == "v" else 0.0
            rows = np.stack([pop.draw_initial(var, rng, default) for rng in rngs]).astype(np_dtype)
            values[var] = torch.from_numpy(rows).to(self.device)
        return type(base)(**values)

    @property
    def t(self) -> float:
        """Simulated time (s) reached."""
        return self.step * self.dt

    # ----------------------------------------------------------------------------- checkpoints
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a checkpoint directory (network, state, random generators, monitors, STDP
        learners; format in ``neurosim.sim.checkpoint``) from which ``Simulation.load`` goes on
        exactly as this simulation would."""
        from neurosim.sim.checkpoint import save_simulation

        return save_simulation(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | torch.device | None = None) -> Simulation:
        """The simulation saved by ``save``, with its monitors and STDP learners."""
        from neurosim.sim.checkpoint import load_simulation

        return load_simulation(path, device=device)

    def index_tensor(self, indices: npt.NDArray[np.int64]) -> Tensor:
        """``indices`` as a tensor on the simulation's device (cached)."""
        key = indices.tobytes()
        cached = self._index_cache.get(key)
        if cached is None:
            cached = torch.from_numpy(indices).to(self.device)
            self._index_cache[key] = cached
        return cached

    @contextlib.contextmanager
    def separate_input_noise(self, stream: int) -> Iterator[None]:
        """Inputs draw their noise from stream ``stream`` of the run's seed inside the block,
        and pick up their own streams where they left them afterwards: what runs inside
        (a sleep, a probe) does not change the input spikes of what runs after it, so a run
        with the block and one without see the same inputs afterwards (common random numbers)."""
        if stream < 0:
            raise ValueError(f"stream must be >= 0, got {stream}")
        own = self._input_rngs
        self._input_rngs = {
            name: [np.random.default_rng(np.random.SeedSequence(self.seed + b, spawn_key=(2, k, stream)))
                   for b in range(self.batch)]
            for k, name in enumerate(own)
        }  # fmt: skip
        try:
            yield
        finally:
            self._input_rngs = own

    @contextlib.contextmanager
    def detached(self, stream: int) -> Iterator[None]:
        """A block that leaves no trace in the run's neuron state and input noise: inputs draw
        from their ``separate_input_noise`` stream, and every population's state (and the
        spikes in flight) is restored afterwards. Weights and other plasticity are kept. A
        sleep in such a block that changes no weight leaves the rest of the run exactly as
        if it had not happened (apart from the clock): the sharp control for sleep."""
        saved = {name: type(st)(*(t.clone() for t in st)) for name, st in self.state.items()}
        history, step = self._history.clone(), self.step
        try:
            with self.separate_input_noise(stream):
                yield
        finally:
            self.state.update(saved)
            # the delay ring buffer is indexed by step: rotate it to where the clock is now
            self._history.copy_(torch.roll(history, shifts=(self.step - step) % self._slots, dims=0))
            if self._compiled is not None:
                self._compiled.invalidate_spike_lists()

    def invalidate_compiled(self) -> None:
        """Forget the compiled path's tables (rebuilt from the state on the next compiled
        stretch): after the state, weights or parameters were replaced from outside."""
        self._compiled = None

    def source_slice(self, name: str) -> slice:
        """Where source ``name``'s neurons sit in the step's spike vector."""
        lo, hi = self._offsets[name]
        return slice(lo, hi)

    # ----------------------------------------------------------------------------- wiring
    def set_population_params(self, name: str, params: neurons.NeuronParams) -> None:
        """Swap a population's parameters between runs (e.g. freeze an adaptive threshold for
        testing). The model kind must stay the same, since the state does."""
        pop = self.network.populations.get(name)
        if pop is None:
            raise ValueError(f"unknown population {name!r}")
        if params.kind is not pop.params.kind:
            raise ValueError(f"population {name!r} is {pop.params.kind.name}; new params are {params.kind.name}")
        pop.params = params
        self._compiled = None  # its coefficient table is stale

    def add_monitor(self, monitor: Monitor) -> Monitor:
        """Record with ``monitor`` from now on (checked against the network); returns it."""
        monitor.bind(self)
        self.monitors.append(monitor)
        return monitor

    def add_plasticity(self, learner: Plasticity) -> None:
        """Run ``learner`` in the plasticity slot of every step."""
        self.plasticity.append(learner)

    def remove_plasticity(self, learner: Plasticity) -> None:
        """Stop running ``learner``."""
        self.plasticity.remove(learner)

    def add_step_hook(self, hook: StepHook) -> None:
        """Call ``hook`` after every step (forces the PyTorch path)."""
        self.step_hooks.append(hook)

    def add_chunk_hook(self, hook: ChunkHook) -> None:
        """Call ``hook`` with every finished chunk's spikes (both paths; awaited by ``run_async``)."""
        self.chunk_hooks.append(hook)

    def _compiled_plasticity(self) -> list[tuple[Plasticity, CompiledLearner]] | None:
        """The compiled forms of the active learners, or None if one has none."""
        forms = []
        for learner in self.plasticity:
            if learner.active:
                form = learner.compiled_form(self)
                if form is None:
                    return None
                forms.append((learner, form))
        return forms

    def _use_compiled(self) -> list[tuple[Plasticity, CompiledLearner]] | None:
        """The compiled path's plasticity when it runs the next stretch, else None."""
        if self.backend is Backend.TORCH or self.device.type != "cpu":
            return None
        forms = None if self.step_hooks else self._compiled_plasticity()
        if forms is None and self.backend is Backend.COMPILED:
            raise ValueError(
                "per-step hooks and learners without a compiled form need the torch backend; "
                "the compiled backend runs whole chunks"
            )
        return forms

    # ----------------------------------------------------------------------------- running
    def _n_steps(self, duration: QuantityLike) -> int:
        duration = to_si(duration, DURATION, "duration")
        if not (math.isfinite(duration) and duration >= 0):
            raise ValueError(f"duration must be a finite number of seconds >= 0, got {duration!r}")
        return round(duration / self.dt)

    def run(self, duration: QuantityLike, *, progress: bool = False) -> RunStats:
        """Simulate ``duration`` seconds. Hooks must be synchronous here."""
        gen = self._iterate(self._n_steps(duration), progress)
        for awaitable in gen:
            if awaitable is not None:
                if inspect.iscoroutine(awaitable):
                    awaitable.close()
                gen.close()
                raise AsyncHookInSyncRun("a hook returned an awaitable; use `await sim.run_async(...)` for async hooks")
        return self._last_stats

    async def run_async(self, duration: QuantityLike, *, progress: bool = False) -> RunStats:
        """Simulate ``duration`` seconds, yielding to the event loop after every chunk and
        awaiting hooks that return awaitables."""
        for awaitable in self._iterate(self._n_steps(duration), progress):
            if awaitable is None:
                for _ in range(YIELDS_PER_CHUNK):
                    await asyncio.sleep(0)
            else:
                await awaitable
        return self._last_stats

    def _iterate(self, n_steps: int, progress: bool) -> Generator[Awaitable[None] | None, None, None]:
        """The chunk loop. Yields hooks' awaitables, and ``None`` at every chunk boundary."""
        previous_threads = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            yield from self._chunks(n_steps, progress)
        finally:
            torch.set_num_threads(previous_threads)

    def _chunks(self, n_steps: int, progress: bool) -> Generator[Awaitable[None] | None, None, None]:
        wall0 = time.perf_counter()
        counts_before = dict(self.spike_counts)
        stats = RunStats(steps=n_steps, simulated_s=n_steps * self.dt, wall_s=0.0)
        end = self.step + n_steps
        with tqdm(
            total=round(n_steps * self.dt, 6),
            unit="s",
            unit_scale=False,
            disable=not progress,
            desc="simulating",
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.3f}/{total:.3f} s biological [{elapsed}<{remaining}]",
        ) as bar:
            while self.step < end:
                chunk_start, chunk_wall0 = self.step, time.perf_counter()
                chunk_end = min(end, self.step + self.chunk_steps)
                parts: list[npt.NDArray[np.int64]] = []
                while self.step < chunk_end:
                    self._record_due(self.step)
                    sub_end = min([chunk_end, *self._due_after(self.step)])
                    compiled_plasticity = self._use_compiled()
                    if compiled_plasticity is not None:
                        stats.backends.add(Backend.COMPILED)
                        limits = [f.max_steps for _, f in compiled_plasticity if f.max_steps is not None]
                        sub_end = min([sub_end, *(self.step + n for n in limits)])
                        parts.append(self._advance_compiled(sub_end - self.step, compiled_plasticity))
                    else:
                        stats.backends.add(Backend.TORCH)
                        parts.append((yield from self._advance_torch(sub_end - self.step)))
                result = self._chunk_result(chunk_start, chunk_end - chunk_start, parts, chunk_wall0)
                for monitor in self.monitors:
                    monitor.on_chunk(result)
                for hook in self.chunk_hooks:
                    maybe = hook(result)
                    if maybe is not None:
                        yield maybe
                bar.update(round((chunk_end - chunk_start) * self.dt, 6))
                yield None
        stats.wall_s = time.perf_counter() - wall0
        stats.spikes = {k: self.spike_counts[k] - counts_before[k] for k in self.spike_counts}
        self._last_stats = stats

    def _record_due(self, step: int) -> None:
        for monitor in self.monitors:
            if monitor.next_due(step) == step:
                monitor.record(self, step)

    def _due_after(self, step: int) -> list[int]:
        dues = [monitor.next_due(step + 1) for monitor in self.monitors]
        return [d for d in dues if d is not None]

    def _chunk_result(self, start: int, n_steps: int, parts: list[npt.NDArray[np.int64]], wall0: float) -> ChunkResult:
        records = np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)
        spikes: dict[str, SpikeChunk] = {}
        for name, (lo, hi) in self._offsets.items():
            sel = (records[:, 1] >= lo) & (records[:, 1] < hi)
            spikes[name] = SpikeChunk(records[sel, 0], records[sel, 1] - lo, records[sel, 2])
            self.spike_counts[name] += int(sel.sum())
        wall = time.perf_counter() - wall0
        return ChunkResult(start_step=start, n_steps=n_steps, dt=self.dt, spikes=spikes, wall_s=wall)

    def _external_block(self, name: str, n_steps: int) -> npt.NDArray[np.bool_]:
        return self.network.inputs[name].draw(self._input_rngs[name], self.step, n_steps, self.dt)

    def _current_block(self, pop_name: str, n_steps: int) -> npt.NDArray[np.float64] | None:
        n = self.network.populations[pop_name].n
        total: npt.NDArray[np.float64] | None = None
        for current in self.network.currents.values():
            if current.target == pop_name:
                block = current.block(self.step, n_steps, self.dt, n)
                total = block if total is None else total + block
        return total

    # ----------------------------------------------------------------------------- torch path
    def _advance_torch(self, n_steps: int) -> Generator[Awaitable[None], None, npt.NDArray[np.int64]]:
        net = self.network
        externals = {name: torch.from_numpy(self._external_block(name, n_steps)).to(self.device) for name in net.inputs}
        currents: dict[str, Tensor | None] = {}
        for name in net.populations:
            block = self._current_block(name, n_steps)
            currents[name] = None if block is None else torch.from_numpy(block).to(device=self.device, dtype=self.dtype)
        drive_events = self._drive_blocks(n_steps)
        record = torch.empty((n_steps, self.batch, self.n_sources), dtype=torch.bool, device=self.device)
        if self._compiled is not None:
            self._compiled.invalidate_spike_lists()
        for name, st in self.state.items():  # the compiled path leaves strided views
            if not all(t.is_contiguous() for t in st):
                self.state[name] = type(st)(*(t.contiguous() for t in st))
        slices = {name: self.source_slice(name) for name in self._offsets}
        for k in range(n_steps):
            step = self.step
            slot = self._history[step % self._slots]
            spikes: dict[str, Tensor] = {}
            for name, pop in net.populations.items():
                current = currents[name]
                spk, self.state[name] = neurons.step(
                    self.state[name], None if current is None else current[k], pop.params, self.dt
                )
                slot[:, slices[name]] = spk
                spikes[name] = slot[:, slices[name]]
            for name in net.inputs:
                slot[:, slices[name]] = externals[name][k]
                spikes[name] = slot[:, slices[name]]
            for proj in net.projections.values():
                target = self.state[proj.target]
                g = target.g_exc if proj.channel is Channel.EXC else target.g_inh
                if proj.delay_ptr is not None:  # per-synapse delays: the spikes of the last D + 1 steps
                    back = self._steps_back(proj.max_delay_steps)
                    proj.propagate_delayed_into(
                        g, self._history[(step - back) % self._slots][:, :, slices[proj.source]]
                    )
                    continue
                src = self._history[(step - proj.delay_steps) % self._slots][:, slices[proj.source]]
                proj.propagate_into(g, src)
            for drive, events in drive_events:
                driven = self.state[drive.target]
                (driven.g_exc if drive.channel is Channel.EXC else driven.g_inh).add_(events[k])
            if self.step_hooks or self.plasticity:
                yield from self._plasticity_and_hooks(StepContext(self, step, spikes))
            record[k] = slot
            self.step += 1
        nz = torch.nonzero(record).cpu().numpy().astype(np.int64)[:, [0, 2, 1]]
        nz[:, 0] += self.step - n_steps
        return nz

    def _drive_blocks(self, n_steps: int) -> list[tuple[PoissonDrive, Tensor]]:
        """Each Poisson drive's input ``weight * count`` for the next ``n_steps``, ``(n_steps, batch, n)``."""
        from neurosim.sim.kernels import poisson_counts  # numba: imported when a drive first runs

        blocks = []
        for keys, drive in zip(self._drive_keys, self.network.drives.values(), strict=True):
            n = self.network.populations[drive.target].n
            counts = np.empty((n_steps, self.batch, n), dtype=np.uint16)
            poisson_counts(keys, self.step, n_steps, n, drive.count_thresholds(self.dt), counts)
            events = torch.from_numpy(counts).to(device=self.device, dtype=self.dtype)
            blocks.append((drive, events * torch.tensor(drive.weight, dtype=self.dtype, device=self.device)))
        return blocks

    def _steps_back(self, longest: int) -> Tensor:
        """``0, 1, .., longest`` on the device (cached)."""
        cached = self._steps_back_cache.get(longest)
        if cached is None:
            cached = torch.arange(longest + 1, device=self.device)
            self._steps_back_cache[longest] = cached
        return cached

    def _plasticity_and_hooks(self, ctx: StepContext) -> Generator[Awaitable[None], None, None]:
        for learner in self.plasticity:
            if learner.active:
                maybe = learner.on_step(ctx)
                if maybe is not None:
                    yield maybe
        for hook in self.step_hooks:
            maybe = hook(ctx)
            if maybe is not None:
                yield maybe

    # ----------------------------------------------------------------------------- compiled path
    def _advance_compiled(
        self, n_steps: int, plasticity: list[tuple[Plasticity, CompiledLearner]]
    ) -> npt.NDArray[np.int64]:
        from neurosim.sim.compiled import CompiledRunner

        if self._compiled is None:
            np_dtype = np.float32 if self.dtype == torch.float32 else np.float64
            self._compiled = CompiledRunner(self.network, self.dt, np_dtype, self.batch)
        runner = self._compiled
        drive: npt.NDArray[np.floating] | None = None
        if self.network.currents:
            # constant currents: one row, which the compiled loop holds for every step
            constant = all(math.isinf(c.sample_dt) for c in self.network.currents.values())
            rows = 1 if constant else n_steps
            drive = np.zeros((rows, runner.n_neurons), dtype=runner.dtype)
            for name in self.network.populations:
                block = self._current_block(name, rows)
                if block is not None:
                    lo, hi = self._offsets[name]
                    drive[:, lo:hi] = block
        external = np.zeros((n_steps, self.batch, self.n_sources - runner.n_neurons), dtype=np.bool_)
        for name in self.network.inputs:
            lo, hi = self._offsets[name]
            external[:, :, lo - runner.n_neurons : hi - runner.n_neurons] = self._external_block(name, n_steps)
        records, done, outcomes = runner.advance(
            self.state,
            self._history.numpy(),
            self._drive_keys,
            self.step,
            n_steps,
            external,
            drive,
            [f for _, f in plasticity],
        )
        # fewer steps than asked only when a learner stopped the loop; its after_compiled raises
        self.step += done
        for (learner, _), outcome in zip(plasticity, outcomes, strict=True):
            learner.after_compiled(outcome)
        return records
