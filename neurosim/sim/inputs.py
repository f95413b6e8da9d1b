"""Inputs: Poisson spike sources, given spike trains, injected currents, and Poisson drives.

Spike sources produce a boolean block ``(n_steps, batch, n)`` per chunk of steps. Random
draws come from one ``numpy.random.Generator`` per instance, so an instance of a batch run
with seed ``s + b`` is identical to a single run with seed ``s + b``, on any device and in
either engine path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from neurosim.sim.neurons import refractory_steps as _whole_steps
from neurosim.sim.synapses import Channel
from neurosim.units import CURRENT, RATE, TIME, QuantityLike, array_to_si, to_si

BoolBlock = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float32]


def _as_rates(name: str, rates: float | npt.ArrayLike, n: int) -> npt.NDArray[np.float64]:
    arr = array_to_si(rates, RATE, f"input {name!r}: rates")
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"input {name!r}: rates must be a scalar or have shape ({n},), got {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"input {name!r}: rates must be finite and >= 0 Hz")
    return arr


@dataclass
class PoissonInput:
    """``n`` independent Poisson spike trains; neuron ``i`` spikes in a step with probability
    ``rates[i] * dt`` (Brian2's ``PoissonGroup``). Rates can change between chunks."""

    name: str
    n: int
    rates: npt.NDArray[np.float64]

    def __init__(self, name: str, n: int, rates: float | npt.ArrayLike) -> None:
        if n <= 0:
            raise ValueError(f"input {name!r}: n must be positive, got {n}")
        self.name = name
        self.n = n
        self.rates = _as_rates(name, rates, n)

    def set_rates(self, rates: float | npt.ArrayLike) -> None:
        """New rates (Hz), effective from the next chunk."""
        self.rates = _as_rates(self.name, rates, self.n)

    def draw(self, rngs: Sequence[np.random.Generator], start_step: int, n_steps: int, dt: float) -> BoolBlock:
        """Spikes of steps ``start_step ..`` for each instance, from its own generator: ``(n_steps, batch, n)``."""
        p = (self.rates * dt).astype(np.float32)
        if np.any(p > 1.0):
            raise ValueError(f"input {self.name!r}: rate * dt exceeds 1; lower the rates or dt")
        out = np.empty((n_steps, len(rngs), self.n), dtype=np.bool_)
        for b, rng in enumerate(rngs):
            out[:, b, :] = rng.random((n_steps, self.n), dtype=np.float32) < p
        return out


@dataclass
class SpikeArrayInput:
    """Given spike times (s) and indices (Brian2's ``SpikeGeneratorGroup``); the same
    trains for every instance of a batch. A spike at time ``t`` is emitted at step
    ``round-down(t / dt)``."""

    name: str
    n: int
    times: npt.NDArray[np.float64]
    indices: npt.NDArray[np.int64]
    _steps: npt.NDArray[np.int64] = field(init=False, repr=False)
    _dt: float = field(init=False, repr=False, default=math.nan)

    def __init__(self, name: str, n: int, times: npt.ArrayLike, indices: npt.ArrayLike) -> None:
        if n <= 0:
            raise ValueError(f"input {name!r}: n must be positive, got {n}")
        t = array_to_si(times, TIME, f"input {name!r}: times").reshape(-1)
        i = np.asarray(indices, dtype=np.int64).reshape(-1)
        if t.shape != i.shape:
            raise ValueError(f"input {name!r}: times and indices must have the same length, got {t.size} and {i.size}")
        if t.size and (not np.all(np.isfinite(t)) or t.min() < 0):
            raise ValueError(f"input {name!r}: spike times must be finite and >= 0 s")
        if i.size and (i.min() < 0 or i.max() >= n):
            raise ValueError(f"input {name!r}: indices must be in [0, {n}), got [{i.min()}, {i.max()}]")
        order = np.lexsort((i, t))
        self.name, self.n, self.times, self.indices = name, n, t[order], i[order]
        self._dt = math.nan
        self._steps = np.zeros(0, np.int64)

    def _steps_for(self, dt: float) -> npt.NDArray[np.int64]:
        if self._dt != dt:
            steps = np.array([_whole_steps(float(t), dt) for t in self.times], dtype=np.int64)
            if steps.size > 1:
                same = (np.diff(steps) == 0) & (np.diff(self.indices) == 0)
                if same.any():
                    k = int(np.argmax(same))
                    raise ValueError(
                        f"input {self.name!r}: neuron {self.indices[k]} spikes twice in step {steps[k]} "
                        f"(t = {self.times[k]} s) at dt = {dt} s"
                    )
            self._steps, self._dt = steps, dt
        return self._steps

    def draw(self, rngs: Sequence[np.random.Generator], start_step: int, n_steps: int, dt: float) -> BoolBlock:
        """The given spikes that fall in steps ``start_step ..``: ``(n_steps, batch, n)``, the same for every
        instance."""
        steps = self._steps_for(dt)
        lo, hi = np.searchsorted(steps, [start_step, start_step + n_steps])
        block = np.zeros((n_steps, len(rngs), self.n), dtype=np.bool_)
        block[steps[lo:hi] - start_step, :, self.indices[lo:hi]] = True
        return block


SpikeSource = PoissonInput | SpikeArrayInput


@dataclass
class CurrentInput:
    """A current (A) injected into population ``target``: constant (scalar or per neuron),
    or piecewise constant in time from ``samples`` ``(T,)`` or ``(T, n)`` taken every
    ``sample_dt`` seconds; after the last sample the last value holds (as Brian2's
    ``TimedArray``)."""

    name: str
    target: str
    samples: npt.NDArray[np.float64]  # (T, n) or (T, 1)
    sample_dt: float

    def __init__(
        self, name: str, target: str, amplitude: QuantityLike | npt.ArrayLike, sample_dt: QuantityLike | None = None
    ) -> None:  # amplitude in A, sample_dt in s; quantities accepted (neurosim.units)
        arr = array_to_si(amplitude, CURRENT, f"current input {name!r}: amplitude")
        if sample_dt is not None:
            sample_dt = to_si(sample_dt, TIME, f"current input {name!r}: sample_dt")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"current input {name!r}: amplitudes must be finite")
        if sample_dt is None:
            if arr.ndim > 1:
                raise ValueError(f"current input {name!r}: a time-varying current needs sample_dt")
            arr = arr.reshape(1, -1)
            sample_dt = math.inf
        else:
            if not sample_dt > 0:
                raise ValueError(f"current input {name!r}: sample_dt must be > 0 s, got {sample_dt}")
            if arr.ndim == 1:
                arr = arr.reshape(-1, 1)
            if arr.ndim != 2 or arr.shape[0] == 0:
                raise ValueError(f"current input {name!r}: samples must have shape (T,) or (T, n), got {arr.shape}")
        self.name, self.target, self.samples, self.sample_dt = name, target, arr, float(sample_dt)

    def check_size(self, n: int) -> None:
        """Refuse a target of ``n`` neurons that the samples' width does not fit."""
        if self.samples.shape[1] not in (1, n):
            raise ValueError(
                f"current input {self.name!r}: {self.samples.shape[1]} values per sample for target "
                f"{self.target!r} of {n} neurons"
            )

    def block(self, start_step: int, n_steps: int, dt: float, n: int) -> npt.NDArray[np.float64]:
        """Currents for steps ``start_step .. start_step + n_steps - 1``, shape ``(n_steps, n)``."""
        t = (np.arange(start_step, start_step + n_steps, dtype=np.float64)) * dt
        if math.isinf(self.sample_dt):
            rows = np.zeros(n_steps, dtype=np.int64)
        else:
            rows = np.minimum((t / self.sample_dt + 1e-9).astype(np.int64), self.samples.shape[0] - 1)
        return np.broadcast_to(self.samples[rows], (n_steps, n)).astype(np.float64)


# Poisson counts whose tail beyond this probability is folded into the table's last entry.
_CDF_TAIL = 1e-15


@dataclass(frozen=True)
class PoissonDrive:
    """Background input from ``n_sources`` independent Poisson trains of ``rate`` (Hz) into
    every neuron of ``target``, each spike adding ``weight`` to the neuron's ``channel``
    (volts for ``CurrentLIF``, relative conductance otherwise), without simulating the
    sources (Brian2's ``PoissonInput``; a NEST ``poisson_generator`` of rate
    ``n_sources * rate`` connected to each neuron, as the background of Potjans & Diesmann
    2014).

    In each step every target neuron of every instance receives ``k ~ Poisson(n_sources *
    rate * dt)`` events, added in the ``synapses`` slot after the projections. The count is
    a pure function of (the run's seed and instance, the drive, the step, the neuron),
    drawn from a counter-based generator (SplitMix64 at position ``step * n + neuron`` of the
    drive's stream for the instance): the same numbers on both engine paths, whatever the
    chunking, and nothing to save in a checkpoint.
    """

    name: str
    target: str
    n_sources: int
    rate: float  # Hz per source
    weight: float
    channel: Channel = Channel.EXC

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", to_si(self.rate, RATE, f"Poisson drive {self.name!r}: rate"))
        object.__setattr__(self, "channel", Channel(self.channel))
        if self.n_sources < 0:
            raise ValueError(f"Poisson drive {self.name!r}: n_sources must be >= 0, got {self.n_sources}")
        if not (math.isfinite(self.rate) and self.rate >= 0):
            raise ValueError(f"Poisson drive {self.name!r}: rate must be a finite number of Hz >= 0, got {self.rate}")
        if not math.isfinite(self.weight):
            raise ValueError(f"Poisson drive {self.name!r}: weight must be finite, got {self.weight}")

    def mean_events(self, dt: float) -> float:
        """Expected events per neuron and step."""
        return self.n_sources * self.rate * dt

    def count_table(self, dt: float) -> npt.NDArray[np.float64]:
        """``P(k <= j)`` for ``j = 0, 1, ...`` of the step's event count, ending at exactly 1
        (the count is the first ``j`` with ``u < table[j]`` for a uniform ``u``)."""
        lam = self.mean_events(dt)
        if lam > 1000:
            raise ValueError(
                f"Poisson drive {self.name!r}: {lam:g} events per neuron and step; use a current input "
                "for a drive this strong, or a smaller dt"
            )
        length = int(lam + 12 * math.sqrt(lam) + 16)
        pmf = np.empty(length)
        pmf[0] = math.exp(-lam)
        for k in range(1, length):
            pmf[k] = pmf[k - 1] * lam / k
        table = np.cumsum(pmf)
        last = int(np.searchsorted(table, 1.0 - _CDF_TAIL)) + 1
        table = table[: min(last, length)].copy()
        table[-1] = 1.0
        return table

    def count_thresholds(self, dt: float) -> npt.NDArray[np.uint64]:
        """``count_table`` scaled to 64-bit integers: the count is the first ``j`` with
        ``z < thresholds[j]`` for a uniform 64-bit ``z`` (the last entry stops the search)."""
        table = self.count_table(dt)
        largest_below_2_64 = 2.0**64 - 2.0**11  # the largest float64 under 2**64, which uint64 holds
        thresholds: npt.NDArray[np.uint64] = np.minimum(np.floor(table * 2.0**64), largest_below_2_64).astype(np.uint64)
        thresholds[-1] = np.iinfo(np.uint64).max
        return thresholds
