"""Sleep replay consolidation, in the spirit of Tadros, Krishnan, Ramyaa & Bazhenov (2022),
"Sleep-like unsupervised replay reduces catastrophic forgetting in artificial neural
networks", Nature Communications 13:7742.

During SLEEP the input layer is driven by Poisson noise whose rates follow the mean input
of the tasks seen so far (``rate_scale`` times the mean rate per input neuron), the
learned layer's thresholds are raised (``v_threshold -> v_rest + threshold_scale *
(v_threshold - v_rest)``) so that only strongly driven neurons fire, and a simple
spike-triggered rule updates the plastic weights. At every post-synaptic spike, each
incoming synapse::

    w += inc                              if its pre neuron fired within ``window`` (s)
    w -= dec * protection                 otherwise
    protection = 1 / (1 + fisher_protection * F / max(F))   (F: the Fisher of the weight)

so synapses that the Fisher marks as important are depressed less
(``protection_scope="rule"``: potentiation is scaled by ``protection`` too, so they barely
change at all). With ``weight_scale > 0``, both changes are also weight-dependent as in
Tadros et al.'s own sleep code (their ``sleepnn``)::

    w += s(w) * change,    s(w) = 2 / (1 + exp(w / a)),    a = weight_scale * mean |w|

(``mean |w|``: the projection's mean absolute weight as the sleep begins; their ``a`` is
0.001 on normalised weights): ``s`` is 1 at ``w = 0`` and falls towards 0 for ``w >> a``,
so the strong synapses that carry what was learned hardly change and the weak ones are
reshaped. ``F`` sums the Fishers of the tasks seen; ``protection_fisher="per-task"``
divides each task's Fisher by its own maximum first, so the task with the largest gradients
does not decide alone which synapses count as important. Optionally all weights
are multiplied by ``downscale`` at the end of the sleep (synaptic downscaling, Tononi &
Cirelli 2014). Tadros et al. scale ``inc`` and ``dec`` to the layer's weights (their
``inc = 0.032``, ``dec = 0.003`` for normalised weights); here they are in weight units.

``sleep_episode`` runs one SLEEP: the drive is a sequence of blocks (``block`` s each), each
Poisson noise at one stored input statistic (the mean image of one task seen, or of one
class, or one stored episode: an image kept by a reservoir buffer, ``drive="episodes"``),
chosen at random; ``drive="uniform"`` replaces every statistic by a flat image of
the same mean rate (the non-data control). The input gain is calibrated before replay, with
plasticity off, by bisection on short probes until the layer fires at ``target_rate`` (by
default the mean rate of the layer during the last wake presentations: data-based
normalisation, as Tadros et al. normalise each layer's input scale by wake activity), so no
gain is set by hand per data set. The adaptive thresholds stop adapting during sleep and are
restored afterwards; with a normaliser, each neuron's input weights are renormalised after
every block, as after every wake image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import math
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from pydantic import Field

from neurosim.datasets.encoding import poisson_rates
from neurosim.sim.compiled_learning import CompiledLearner, CompiledOutcome, SleepKernel
from neurosim.sim.inputs import PoissonInput
from neurosim.sim.monitors import SpikeMonitor, SpikeTrains
from neurosim.sim.neurons import AdaptiveLIF, AdaptiveLIFState, CurrentLIF, initial_state, step
from neurosim.sim.synapses import Projection
from neurosim.strict import StrictModel
from neurosim.units import DURATION, RATE, SI, TRACE_TIME_CONSTANT

if TYPE_CHECKING:
    from neurosim.sim.engine import Simulation, StepContext

Tensor = torch.Tensor


class SleepDrive(enum.StrEnum):
    """What drives the input layer during sleep."""

    TASK_MEANS = "task-means"  # Poisson noise at the mean image of one task seen, per block
    CLASS_MEANS = "class-means"  # ... at the mean image of one class seen, per block
    EPISODES = "episodes"  # ... at one stored image (a reservoir buffer's episode), per block: hippocampal-style
    UNIFORM = "uniform"  # flat noise of the same mean rate: the control that carries no data


class SleepConfig(StrictModel):
    """Sleep replay parameters (see the module docs; defaults follow Tadros et al. 2022 in
    spirit, scaled to neurosim's weight units)."""

    # s of simulated replay per SLEEP phase (Tadros et al.: 15-35 s)
    duration: Annotated[float, SI(DURATION)] = Field(10.0, gt=0)
    drive: SleepDrive = SleepDrive.TASK_MEANS
    block: Annotated[float, SI(DURATION)] = Field(0.05, gt=0)  # s per drive block (one stored statistic each)
    plasticity: bool = True  # False: the control that replays without changing a weight
    calibrate: bool = True  # choose the input gain from wake activity; False: gain = rate_scale
    target_rate: Annotated[float | None, SI(RATE)] = Field(None, gt=0)  # Hz per neuron; None: the measured wake rate
    rate_scale: float = Field(1.0, gt=0)  # input gain when not calibrated (times the stored rates)
    threshold_scale: float = Field(1.0, gt=0)  # thresholds during sleep, relative to rest
    # True: adaptive thresholds keep adapting during sleep (homeostasis spreads the replay over
    # neurons); False: frozen. Either way they are restored to their wake values afterwards.
    adapt_thresholds: bool = False
    sleep_theta_plus: float | None = Field(None, ge=0)  # V per spike while adapting in sleep; None: the wake value
    # targeted replay (class statistics and the readout's assignments needed): in a block
    # replaying class c, neurons assigned to c learn by the rule, neurons assigned to another
    # class by the rule times -interference (they unlearn the replayed pattern), the rest not
    targeted: bool = False
    interference: float = Field(1.0, ge=0)
    inc: float = Field(1e-3, ge=0)  # potentiation per causal pairing (weight units)
    dec: float = Field(2e-4, ge=0)  # depression per non-causal post spike (weight units)
    window: Annotated[float, SI(TRACE_TIME_CONSTANT)] = Field(10e-3, gt=0)  # s: "pre fired before the post spike"
    fisher_protection: float = Field(10.0, ge=0)  # 0: no protection
    # what the protection scales: the depression of the inputs that did not take part, or the
    # whole rule (potentiation too: important synapses hardly change in sleep)
    protection_scope: Literal["depression", "rule"] = "depression"
    # how the tasks' Fishers make F: their sum, or the sum of each over its own maximum
    # (every task's most important synapses count alike, whatever its gradients' scale)
    protection_fisher: Literal["sum", "per-task"] = "sum"
    downscale: float = Field(1.0, gt=0, le=1.0)  # multiply weights at the end of sleep; 1: off
    # SRC's weight dependence: both changes times s(w) = 2 / (1 + exp(w / a)), a = weight_scale
    # x the layer's mean |w| as the sleep begins (strong synapses hardly change); 0: additive
    weight_scale: float = Field(0.0, ge=0)

    @property
    def replays_by_class(self) -> bool:
        """One statistic per class (class means; or uniform noise standing in for them in
        targeted replay, so the control keeps the same blocks and gains, without the data)."""
        return self.drive in (SleepDrive.CLASS_MEANS, SleepDrive.EPISODES) or (
            self.drive is SleepDrive.UNIFORM and self.targeted
        )


@torch.no_grad()
def sleep_update(
    w: Tensor,
    last_pre_spike: Tensor,
    post_spikes: Tensor,
    now: float,
    pre_index: Tensor,
    post_index: Tensor,
    protection: Tensor,
    cfg: SleepConfig,
    bounds: tuple[float, float],
    post_gain: Tensor | None = None,
    dependence_width: float = 0.0,
) -> Tensor:
    """One step of the spike-triggered sleep rule (batch mean), weights in synapse order,
    clipped to the plastic rule's ``bounds``.

    ``last_pre_spike`` ``(batch, n_pre)`` holds each pre neuron's last spike time (s);
    ``post_gain`` ``(n_post,)`` scales (and may flip) the rule per post neuron;
    ``dependence_width`` is the ``a`` of the weight dependence ``s(w)`` (0: additive)."""
    fired = post_spikes.to(w.dtype)[:, post_index]  # (batch, n_syn)
    if post_gain is not None:
        fired = fired * post_gain[post_index]
    causal = (now - last_pre_spike[:, pre_index] <= cfg.window).to(w.dtype)
    potentiation = cfg.inc * protection if cfg.protection_scope == "rule" else cfg.inc
    change = fired * (potentiation * causal - cfg.dec * protection * (1.0 - causal))
    if dependence_width > 0:
        change = change * weight_dependence(w, dependence_width)
    return torch.clamp(w + change.mean(0), *bounds)


def weight_dependence(w: Tensor, width: float) -> Tensor:
    """``s(w) = 2 / (1 + exp(w / width))``: 1 at ``w = 0``, towards 0 for ``w >> width``."""
    return 2.0 / (1.0 + torch.exp(w / width))


def dependence_width(w: Tensor, cfg: SleepConfig) -> float:
    """``a = weight_scale * mean |w|`` (0 when ``weight_scale`` is 0: additive); a layer whose
    weights are all zero has no scale to take it from."""
    if cfg.weight_scale == 0:
        return 0.0
    mean = float(w.abs().mean()) if w.numel() else 0.0
    if not (math.isfinite(mean) and mean > 0):
        raise ValueError(f"weight-dependent sleep (weight_scale) needs weights with a positive mean |w|, got {mean!r}")
    return cfg.weight_scale * mean


def combine_fishers(fishers: Sequence[Tensor], how: Literal["sum", "per-task"]) -> Tensor | None:
    """The ``F`` of ``fisher_protection`` from the tasks' Fishers (None without any): their sum,
    or (``per-task``) the sum of each over its own maximum (a task whose Fisher is all zero adds
    nothing)."""
    if not fishers:
        return None
    if how == "per-task":
        peaks = [float(f.max()) for f in fishers]
        fishers = [
            f / p if math.isfinite(p) and p > 0 else torch.zeros_like(f) for f, p in zip(fishers, peaks, strict=True)
        ]
    return torch.stack(list(fishers)).sum(0)


def fisher_protection(fisher: Tensor | None, strength: float) -> Tensor | None:
    """``1 / (1 + strength * F / max F)`` per synapse, or None without a Fisher."""
    if fisher is None:
        return None
    peak = float(fisher.max())
    if not math.isfinite(peak) or peak <= 0:
        return torch.ones_like(fisher)
    return 1.0 / (1.0 + strength * fisher / peak)


class SleepReplay:
    """The sleep rule on one projection, as a learner in the engine's plasticity slot."""

    def __init__(
        self,
        projection: Projection,
        cfg: SleepConfig,
        *,
        bounds: tuple[float, float] = (0.0, 1.0),
        batch: int = 1,
        fisher: Tensor | None = None,
    ) -> None:
        """``bounds``: the weight range of the projection's own plasticity rule."""
        self.projection = projection
        self.cfg = cfg
        self.bounds = bounds
        w = projection.synapse_weights()
        self._last_pre = torch.full((batch, projection.n_pre), -math.inf, dtype=w.dtype, device=w.device)
        protection = fisher_protection(fisher, cfg.fisher_protection)
        self._protection = torch.ones_like(w) if protection is None else protection.to(w)
        # share of synapses whose depression the protection at least halves (what sleep holds still)
        self.protected_fraction = float((self._protection <= 0.5).double().mean())
        # per post neuron: 1 applies the rule as written; targeted replay sets it per block
        self.post_gain = torch.ones(projection.n_post, dtype=w.dtype, device=w.device)
        self.dependence_width = dependence_width(w, cfg)
        self.active = True

    def on_step(self, ctx: StepContext) -> Awaitable[None] | None:
        """The sleep rule for one step (the PyTorch path): potentiate causal pairings, depress the rest, Fisher-
        protected."""
        now = ctx.step * ctx.sim.dt
        pre = ctx.spikes[self.projection.source]
        self._last_pre = torch.where(pre, torch.full_like(self._last_pre, now), self._last_pre)
        post = ctx.spikes[self.projection.target]
        if bool(post.any()):
            w = self.projection.synapse_weights()
            p = self.projection
            self.projection.set_synapse_weights(
                sleep_update(
                    w,
                    self._last_pre,
                    post,
                    now,
                    p.pre_index,
                    p.post_index,
                    self._protection,
                    self.cfg,
                    self.bounds,
                    self.post_gain,
                    self.dependence_width,
                )
            )
        return None

    def compiled_form(self, sim: Simulation) -> CompiledLearner | None:
        """The rule for the compiled loop (one CPU instance), or None for the PyTorch path."""
        if self._last_pre.shape[0] != 1 or self._last_pre.device.type != "cpu":
            return None
        kernel = SleepKernel(
            last_pre_spike=self._last_pre.numpy()[0],
            protection=self._protection.contiguous().numpy(),
            post_gain=self.post_gain.numpy(),
            inc=self.cfg.inc,
            dec=self.cfg.dec,
            window=self.cfg.window,
            w_min=self.bounds[0],
            w_max=self.bounds[1],
            protect_potentiation=self.cfg.protection_scope == "rule",
            dependence_width=self.dependence_width,
        )
        return CompiledLearner(self.projection, kernel)

    def after_compiled(self, outcome: CompiledOutcome) -> None:
        """Nothing to book: the rule's state is its arrays."""

    def finish(self) -> None:
        """End of sleep: synaptic downscaling, if configured."""
        if self.cfg.downscale < 1.0:
            self.projection.set_synapse_weights(self.projection.synapse_weights() * self.cfg.downscale)


@dataclasses.dataclass(frozen=True)
class SleepReport:
    """What one SLEEP did: the calibrated drive, the replay's spikes and the weight change."""

    drive: SleepDrive
    duration_s: float
    gain: float  # input gain (times the stored rates) found by calibration, or rate_scale
    target_rate_hz: float  # the rate calibration aimed at (nan without calibration)
    rate_hz: float  # mean rate per neuron of the layer during replay
    spikes_per_neuron: npt.NDArray[np.int64]
    trains: SpikeTrains  # the layer's replay spikes (times in s since the start of the run)
    start_s: float
    weight_change: Tensor  # w after - w before, in synapse order
    protected_fraction: float = 0.0  # synapses whose depression the Fisher protection at least halved


def _rate_hz(spikes: int, n: int, seconds: float) -> float:
    return spikes / max(n * seconds, 1e-12)


async def _probe(sim: Simulation, inputs: PoissonInput, population: str, rates: npt.NDArray[np.float64],
                 seconds: float) -> float:  # fmt: skip
    """The layer's mean rate (Hz) over ``seconds`` of drive at ``rates``."""
    before = sim.spike_counts[population]
    inputs.set_rates(rates)
    await sim.run_async(seconds)
    return _rate_hz(sim.spike_counts[population] - before, sim.network.source_size(population), seconds)


async def calibrate_gain(
    sim: Simulation,
    inputs: PoissonInput,
    population: str,
    rates: npt.NDArray[np.float64],
    target_rate: float,
    *,
    probe: float = 0.1,
    iterations: int = 8,
) -> float:
    """The gain ``g`` for which ``g * rates`` drives ``population`` at about ``target_rate``
    Hz per neuron: bisection in log(g) on ``iterations`` probes of ``probe`` s each (run with
    whatever plasticity the simulation has: attach none to calibrate without learning).
    The gain is capped where the brightest input would exceed one spike per step."""
    if not (math.isfinite(target_rate) and target_rate > 0):
        raise ValueError(f"target_rate must be a positive rate in Hz, got {target_rate!r}")
    peak = float(np.max(rates)) if rates.size else 0.0
    if peak <= 0:
        raise ValueError("calibrate_gain: the drive has no positive rate")
    lo, hi = math.log(1e-2), math.log(min(1e2, 0.5 / (peak * sim.dt)))
    if hi <= lo:
        return math.exp(hi)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if await _probe(sim, inputs, population, math.exp(mid) * rates, probe) < target_rate:
            lo = mid
        else:
            hi = mid
    inputs.set_rates(0.0)
    return math.exp(0.5 * (lo + hi))


@contextlib.contextmanager
def sleeping_layer(
    sim: Simulation, population: str, threshold_scale: float, *, adapt: bool = False, theta_plus: float | None = None
) -> Iterator[None]:
    """The layer's thresholds at ``v_rest + threshold_scale (v_threshold - v_rest)`` and its
    adaptive thresholds frozen (or, with ``adapt``, adapting) for the block; parameters and
    adaptive thresholds restored after."""
    params = sim.network.populations[population].params
    state = sim.state[population]
    saved_theta = state.theta.clone() if isinstance(state, AdaptiveLIFState) else None
    sleepy = dataclasses.replace(
        params, v_threshold=params.v_rest + threshold_scale * (params.v_threshold - params.v_rest)
    )
    if isinstance(sleepy, AdaptiveLIF):
        step = (sleepy.theta_plus if theta_plus is None else theta_plus) if adapt else 0.0
        sleepy = dataclasses.replace(sleepy, theta_plus=step)
    sim.set_population_params(population, sleepy)
    try:
        yield
    finally:
        sim.set_population_params(population, params)
        now = sim.state[population]
        if saved_theta is not None and isinstance(now, AdaptiveLIFState):
            sim.state[population] = now._replace(theta=saved_theta)


async def _replay(
    sim: Simulation,
    inputs: PoissonInput,
    drives: list[npt.NDArray[np.float64]],
    gain: float,
    seconds: float,
    block: float,
    rng: np.random.Generator,
    replay: SleepReplay | None,
    monitor: SpikeMonitor,
    normalise: Callable[[], None] | None,
    gains: list[Tensor] | None,
) -> None:
    """The replay proper: blocks of noise at one stored statistic each, the rule attached
    (with ``gains``, the rule's per-neuron gain of each statistic's blocks)."""
    monitor.start = sim.t
    sim.add_monitor(monitor)
    if replay is not None:
        sim.add_plasticity(replay)
    try:
        n_blocks = max(1, round(seconds / block))
        for _ in range(n_blocks):
            k = int(rng.integers(len(drives)))
            inputs.set_rates(gain * drives[k])
            if replay is not None and gains is not None:
                replay.post_gain.copy_(gains[k])
            await sim.run_async(seconds / n_blocks)
            if normalise is not None and replay is not None:
                normalise()
    finally:
        inputs.set_rates(0.0)
        if replay is not None:
            sim.remove_plasticity(replay)
        sim.monitors.remove(monitor)


async def sleep_episode(
    sim: Simulation,
    *,
    projection: Projection,
    inputs: PoissonInput,
    statistics: Sequence[npt.NDArray[np.float64]],
    cfg: SleepConfig,
    duration: float | None = None,
    wake_rate: float | None = None,
    rng: np.random.Generator,
    fisher: Tensor | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    normalise: Callable[[], None] | None = None,
    labels: Sequence[int] | None = None,
    assignments: npt.NDArray[np.int64] | None = None,
) -> SleepReport:
    """One SLEEP of ``duration`` s (default ``cfg.duration``) on ``projection``'s target layer
    (see the module docs). ``statistics``: the stored input rates (Hz at gain 1), one per task
    or class seen; ``wake_rate``: the layer's wake rate (Hz), the calibration target unless
    ``cfg.target_rate`` is set. The layer's parameters and adaptive thresholds are restored
    on the way out, whatever happens."""
    seconds = cfg.duration if duration is None else duration
    if not statistics:
        raise ValueError("sleep_episode needs at least one stored input statistic (a task's mean image)")
    drives = [np.asarray(s, dtype=np.float64) for s in statistics]
    if cfg.drive is SleepDrive.UNIFORM:
        drives = [np.full_like(d, float(d.mean())) for d in drives]
    population = projection.target
    w_before = projection.synapse_weights().clone()
    target = cfg.target_rate if cfg.target_rate is not None else wake_rate
    replay = SleepReplay(projection, cfg, bounds=bounds, batch=sim.batch, fisher=fisher) if cfg.plasticity else None
    if cfg.calibrate and target is None:
        raise ValueError("sleep calibration needs a target: the wake rate, or cfg.target_rate")
    gains = None
    if cfg.targeted and replay is not None:
        if labels is None or assignments is None or len(labels) != len(drives):
            raise ValueError("targeted replay needs one class label per statistic and the neurons' assignments")
        w = projection.synapse_weights()
        gains = [
            torch.from_numpy(np.where(assignments == c, 1.0, np.where(assignments >= 0, -cfg.interference, 0.0))).to(w)
            for c in labels
        ]
    monitor = SpikeMonitor(population, start=sim.t)
    with sleeping_layer(
        sim, population, cfg.threshold_scale, adapt=cfg.adapt_thresholds, theta_plus=cfg.sleep_theta_plus
    ):
        gain = (
            await calibrate_gain(sim, inputs, population, np.mean(drives, axis=0), target)
            if cfg.calibrate and target is not None
            else cfg.rate_scale
        )
        await _replay(sim, inputs, drives, gain, seconds, cfg.block, rng, replay, monitor, normalise, gains)
    if replay is not None:
        replay.finish()
        if normalise is not None:
            normalise()
    trains = monitor.trains()
    n = sim.network.source_size(population)
    start = monitor.start
    return SleepReport(
        drive=cfg.drive,
        duration_s=sim.t - start,
        gain=gain,
        target_rate_hz=float(target) if cfg.calibrate and target is not None else math.nan,
        rate_hz=_rate_hz(trains.times.size, n, sim.t - start),
        spikes_per_neuron=np.bincount(trains.indices, minlength=n).astype(np.int64),
        trains=trains,
        start_s=start,
        weight_change=projection.synapse_weights() - w_before,
        protected_fraction=0.0 if replay is None else replay.protected_fraction,
    )


@torch.no_grad()
def sleep_dense_layer(
    weights: Tensor,
    bias: Tensor | None,
    neuron: CurrentLIF,
    rates: Tensor,
    cfg: SleepConfig,
    dt: float,
    *,
    protection: Tensor | None = None,
    bounds: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sleep replay on a dense layer of a PyTorch model (a surrogate-gradient network's
    ``nn.Linear`` input weights ``(n_post, n_pre)``, changed in place and returned): the layer's
    neurons (``neuron``, thresholds raised by ``cfg.threshold_scale``) run for ``cfg.duration``
    s on Poisson noise at ``rates`` (Hz per input, ``cfg.rate_scale`` applied by the caller's
    choice of rates) and ``sleep_update`` reshapes the weights at every hidden spike. No gain
    calibration here: the model has no wake rate to calibrate against. ``bounds`` default to
    the weights' own range; ``protection`` per synapse (``fisher_protection``) or none."""
    n_post, n_pre = weights.shape
    if rates.shape != (n_pre,):
        raise ValueError(f"sleep_dense_layer: rates of shape {tuple(rates.shape)}, the layer has {n_pre} inputs")
    synapse = torch.arange(n_post * n_pre)
    pre_index, post_index = synapse % n_pre, synapse // n_pre  # synapse k = post * n_pre + pre
    bounds = bounds if bounds is not None else (float(weights.min()), float(weights.max()))
    sleepy = dataclasses.replace(
        neuron, v_threshold=neuron.v_rest + cfg.threshold_scale * (neuron.v_threshold - neuron.v_rest)
    )
    state = initial_state(sleepy, 1, n_post, dtype=weights.dtype, device=weights.device)
    last_pre = torch.full((1, n_pre), -1e9, dtype=weights.dtype)
    protect = protection if protection is not None else torch.ones(n_post * n_pre, dtype=weights.dtype)
    w = weights.reshape(-1).clone()
    width = dependence_width(w, cfg)
    for k in range(round(cfg.duration / dt)):
        now = k * dt
        spikes_in = torch.rand((1, n_pre), generator=generator) < rates * dt
        last_pre[spikes_in] = now
        current = spikes_in.to(w.dtype) @ w.view(n_post, n_pre).T
        if bias is not None:
            current = current + bias
        z, state = step(state, current, sleepy, dt)
        if cfg.plasticity and z.any():
            w = sleep_update(w, last_pre, z, now, pre_index, post_index, protect, cfg, bounds, None, width)
    weights.copy_(w.view(n_post, n_pre))
    return weights


class InputStatistics:
    """What SLEEP replays without keeping the data: the sum and count of the inputs shown per
    (task, class), from which the mean input of a class or of a task is drawn."""

    def __init__(self) -> None:
        self._sum: dict[tuple[int, int], npt.NDArray[np.float64]] = {}
        self._count: dict[tuple[int, int], int] = {}

    def checkpoint_state(self) -> tuple[list[list[int]], dict[str, npt.NDArray[Any]]]:
        """The (task, label, count) of every statistic, and its input sums (an experiment checkpoint)."""
        keys = [[task, label, self._count[(task, label)]] for task, label in self._sum]
        return keys, {f"sum{k}": self._sum[(t, c)] for k, (t, c, _) in enumerate(keys)}

    def restore_state(self, keys: list[list[int]], arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        """Put back what ``checkpoint_state`` returned."""
        self._sum = {(int(t), int(c)): np.array(arrays[f"sum{k}"]) for k, (t, c, _) in enumerate(keys)}
        self._count = {(int(t), int(c)): int(n) for t, c, n in keys}

    def add(self, task: int, label: int, image: npt.NDArray[np.float32]) -> None:
        """Count one image of ``label`` in ``task`` towards the means a SLEEP replays."""
        key = (task, label)
        self._sum[key] = self._sum.get(key, np.zeros(image.shape)) + image
        self._count[key] = self._count.get(key, 0) + 1

    def keys(self, *, excluding_task: int | None = None) -> list[tuple[int, int]]:
        """The (task, class) pairs seen, sorted; ``excluding_task``: without that task's,
        unless it is the only task seen."""
        keys = sorted(self._sum)
        if excluding_task is not None and len({k[0] for k in keys}) > 1:
            keys = [k for k in keys if k[0] != excluding_task]
        return keys

    def means(self, keys: Sequence[tuple[int, int]], *, by_class: bool) -> list[npt.NDArray[np.float64]]:
        """The mean input of each key (``by_class``), or of each task among ``keys``."""
        if by_class:
            return [self._sum[k] / self._count[k] for k in keys]
        out = []
        for t in sorted({k[0] for k in keys}):
            own = [k for k in keys if k[0] == t]
            out.append(np.sum([self._sum[k] for k in own], axis=0) / sum(self._count[k] for k in own))
        return out


def stored_drives(
    statistics: InputStatistics,
    cfg: SleepConfig,
    *,
    max_rate: float,
    exclude: int | None = None,
    episodes: tuple[Tensor, Tensor] | None = None,
) -> tuple[list[npt.NDArray[np.float64]], list[int]]:
    """What a SLEEP replays, as input rates (Hz) with the class of each: the mean input of each
    class or task in ``statistics`` (``exclude``: without that task's, see
    ``InputStatistics.keys``), or, for ``drive = "episodes"``, the stored ``episodes``
    (inputs, labels) of a replay buffer. Pixels are clipped to [0, 1] and scaled to ``max_rate``."""
    keys = statistics.keys(excluding_task=exclude)
    labels = [k[1] for k in keys]
    means = statistics.means(keys, by_class=cfg.replays_by_class)
    if cfg.drive is SleepDrive.EPISODES:
        if episodes is None:
            raise ValueError('sleep drive "episodes" needs the stored episodes of a replay buffer')
        means, labels = [x.double().numpy() for x in episodes[0]], episodes[1].tolist()
    return [poisson_rates(np.clip(m, 0.0, 1.0).astype(np.float32), max_rate) for m in means], labels
