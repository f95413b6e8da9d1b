"""``STDPOnlineLearner``: one projection, one STDP rule, updated once per simulation step.

The learner is a thin stateful shell over the pure rules of ``neurosim.learning.stdp``:
it holds the traces, writes the new weights into its projection, and, when it can,
computes the step's surrogate gradient of ``log p(y|x)`` for each weight (the online
eligibility gradient of ``neurosim.learning.surrogate``) and hands it to a Fisher
accumulator. Plug it into a simulation with ``learner.attach(sim)``.

Order inside ``step``: the STDP change (scaled by ``scale``; none while ``enabled`` is
False, though the traces keep running), then the regulariser's pull (EWC), then the
rule's weight bounds.

Two paths run it. On the PyTorch path ``on_step`` calls ``step`` and folds the gradients into
a ``FisherAccumulator`` through its synchronous core (no coroutine per step). On the CPU with
one instance, ``compiled_form`` hands the whole learning step (rule, pull, gradient, Fisher
EMA, reward) to the compiled loop (``neurosim.sim.compiled_learning``), which needs no
Python per step; it falls back to the PyTorch path for ``scale != 1``, a regulariser without
a linear pull, or an accumulator that is not a ``FisherAccumulator``.

Reward for ``RewardSTDP`` comes three ways: ``step(..., reward=r)`` per step (PyTorch path),
a reward source (``reward_source``: a population or input whose spikes each deliver
``reward_per_spike``, as dopamine; both paths), or per sample with ``reward_episode(r)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import torch

from neurosim.learning import stdp
from neurosim.learning.fisher_online import FisherAccumulator, NonFinitePolicy
from neurosim.learning.readout import LinearReadout
from neurosim.learning.surrogate import Surrogate, SurrogateKind, online_gradient
from neurosim.sim.compiled_learning import (
    CompiledLearner,
    CompiledOutcome,
    FisherTerms,
    GradientTerms,
    Kernel,
    PairKernel,
    PullTerms,
    RewardKernel,
    SurrogateCode,
    TripletKernel,
)
from neurosim.sim.neurons import AdaptiveLIFState
from neurosim.sim.synapses import Projection

if TYPE_CHECKING:
    from neurosim.sim.engine import Simulation, StepContext

Tensor = torch.Tensor
Gradients = Mapping[str, Tensor] | Mapping[str, npt.NDArray[np.float32]]


class GradientSink(Protocol):
    """Anything that takes one step's gradients, e.g. a ``FisherAccumulator``."""

    async def update(self, gradients: Gradients) -> None:
        """Take one step's gradients by parameter name."""


class WeightPull(Protocol):
    """A regulariser's per-step pull on a parameter (e.g. EWC: ``-lambda F (w - w*)``)."""

    def pull(self, name: str, weights: Tensor) -> Tensor | None:
        """New weights for parameter ``name`` after the pull, or None for no pull."""


@runtime_checkable
class LinearWeightPull(Protocol):
    """A pull of the form ``-coefficient * (w - centre)``, which the compiled loop can run:
    ``pull_terms`` gives ``(coefficient, centre)`` per synapse, or None for no pull."""

    def pull(self, name: str, weights: Tensor) -> Tensor | None:
        """New weights for parameter ``name`` after the pull, or None for no pull."""

    def pull_terms(self, name: str, weights: Tensor) -> tuple[Tensor, Tensor] | None:
        """The pull as ``(c, centre)``, ``w <- w - c (w - centre)``, so the compiled loop can apply it; None for
        no pull."""


class NoGradientSource(RuntimeError):
    """An accumulator was given, but the learner has no surrogate, readout or labels."""


_NO_GRADIENT = (
    "an accumulator needs gradients: give the learner a surrogate and a readout, call begin_sample(labels), "
    "and pass post_v"
)


def _warn_if_bounds_do_not_fit(name: str, rule: stdp.STDPRule, w: Tensor) -> None:
    """The rule's bounds (and amplitudes, in the same units) against the projection's weights:
    weights outside the bounds are clipped at the first update; bounds orders of magnitude
    above the weights mean the rule was written for other units (e.g. 1.0 for volts)."""
    bounded = rule.pair if isinstance(rule, stdp.RewardSTDP) else rule
    if w.numel() == 0:
        return
    lo, hi = float(w.min()), float(w.max())
    span = bounded.w_max - bounded.w_min
    if lo < bounded.w_min - 1e-6 * span or hi > bounded.w_max + 1e-6 * span:
        warnings.warn(
            f"projection {name!r}: weights in [{lo:.3g}, {hi:.3g}] lie outside the rule's bounds "
            f"[{bounded.w_min:.3g}, {bounded.w_max:.3g}]; the first update clips them",
            RuntimeWarning,
            stacklevel=3,
        )
    elif hi > 0 and span > 100 * hi:
        warnings.warn(
            f"projection {name!r}: the rule's w_max = {bounded.w_max:.3g} is {span / hi:.0f}x the largest weight "
            f"({hi:.3g}); bounds and amplitudes are in the projection's weight units: set them for these units",
            RuntimeWarning,
            stacklevel=3,
        )


class STDPOnlineLearner:
    """Online STDP on ``projection`` with ``rule``.

    ``surrogate`` and ``readout`` enable gradients: before each sample call
    ``begin_sample(labels)`` with one label per instance; the readout then turns the
    post-synaptic rates so far into the learning signal.
    """

    def __init__(
        self,
        projection: Projection,
        rule: stdp.STDPRule,
        *,
        dt: float,
        batch: int = 1,
        scale: float = 1.0,
        surrogate: Surrogate | None = None,
        readout: LinearReadout | None = None,
        reward_source: str | None = None,
        reward_per_spike: float = 1.0,
    ) -> None:
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        if reward_source is not None and not isinstance(rule, stdp.RewardSTDP):
            raise ValueError(f"reward_source={reward_source!r} needs a RewardSTDP rule, got {type(rule).__name__}")
        if not math.isfinite(reward_per_spike):
            raise ValueError(f"reward_per_spike must be finite, got {reward_per_spike!r}")
        if projection.synapse_delays is not None:
            raise ValueError(
                f"projection {projection.name!r} has per-synapse delays; STDP learners run on projections "
                "with one delay for all synapses"
            )
        if readout is not None and readout.weight.shape[1] != projection.n_post:
            raise ValueError(
                f"readout takes {readout.weight.shape[1]} inputs but projection {projection.name!r} "
                f"has {projection.n_post} post neurons"
            )
        self.projection = projection
        self.rule = rule
        self.dt = dt
        self.batch = batch
        self.scale = scale
        self._enabled = True
        self._accumulator: GradientSink | None = None
        self.surrogate = surrogate
        self.readout = readout
        self.regulariser: WeightPull | None = None
        self.reward_source = reward_source
        self.reward_per_spike = float(reward_per_spike)
        self.synapses = stdp.Synapses(projection.pre_index, projection.post_index)
        w = projection.synapse_weights()
        _warn_if_bounds_do_not_fit(projection.name, rule, w)
        self.state = stdp.initial_state(
            rule, batch, projection.n_pre, projection.n_post, projection.n_synapses, dtype=w.dtype, device=w.device
        )
        self.labels: Tensor | None = None
        self._counts = torch.zeros((batch, projection.n_post), dtype=w.dtype, device=w.device)
        self._sample_steps = 0

    @property
    def enabled(self) -> bool:
        """Plasticity on (LEARNING) or off (WAKE). While off the learner does not run at all;
        switching it back on starts from zero traces."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        if value and not self._enabled:
            w = self.projection.synapse_weights()
            p = self.projection
            self.state = stdp.initial_state(
                self.rule, self.batch, p.n_pre, p.n_post, p.n_synapses, dtype=w.dtype, device=w.device
            )
        self._enabled = value

    @property
    def active(self) -> bool:
        """Whether the learner runs (``enabled``)."""
        return self._enabled

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        """What a checkpoint keeps of this learner: whether it is on, the sample's step count,
        (JSON) and its traces, eligibility, post-synaptic counts and labels (arrays)."""
        state = self.state
        flat = (*state.traces, state.eligibility) if isinstance(state, stdp.RewardState) else tuple(state)
        arrays = {f"state{j}": t.detach().cpu().numpy().copy() for j, t in enumerate(flat)}
        arrays["counts"] = self._counts.detach().cpu().numpy().copy()
        if self.labels is not None:
            arrays["labels"] = self.labels.detach().cpu().numpy().copy()
        info = {"enabled": self._enabled, "sample_steps": self._sample_steps, "n_state": len(flat)}
        return info, arrays

    def restore_state(self, info: Mapping[str, Any], arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        """Put back what ``checkpoint_state`` returned (on a learner built the same way)."""
        w = self.projection.synapse_weights()

        def tensor(key: str) -> Tensor:
            return torch.from_numpy(arrays[key]).to(device=w.device, dtype=w.dtype)

        self._enabled = bool(info["enabled"])
        flat = [tensor(f"state{j}") for j in range(int(info["n_state"]))]
        if isinstance(self.state, stdp.RewardState):
            self.state = stdp.RewardState(stdp.PairTraces(flat[0], flat[1]), flat[2])
        else:
            self.state = type(self.state)(*flat)
        self._counts = tensor("counts")
        self.labels = torch.from_numpy(arrays["labels"]).to(w.device) if "labels" in arrays else None
        self._sample_steps = int(info["sample_steps"])

    @property
    def accumulator(self) -> GradientSink | None:
        """Where each step's gradients go (set per task by an orchestrator), or None."""
        return self._accumulator

    @accumulator.setter
    def accumulator(self, value: GradientSink | None) -> None:
        self._accumulator = value

    @property
    def parameter_name(self) -> str:
        """The name its gradients and pulls use: ``<projection>.weight``."""
        return f"{self.projection.name}.weight"

    def begin_sample(self, labels: Tensor | None) -> None:
        """Start a new sample: reset the post-synaptic counts; ``labels`` ``(batch,)``."""
        if labels is not None and labels.shape != (self.batch,):
            raise ValueError(f"labels must have shape ({self.batch},), got {tuple(labels.shape)}")
        self.labels = labels
        self._counts.zero_()
        self._sample_steps = 0

    @property
    def _bounds(self) -> tuple[float, float]:
        rule = self.rule.pair if isinstance(self.rule, stdp.RewardSTDP) else self.rule
        return rule.w_min, rule.w_max

    def _rule_step(self, w: Tensor, pre: Tensor, post: Tensor, reward: float | Tensor | None) -> Tensor:
        rule, state, syn = self.rule, self.state, self.synapses
        if isinstance(rule, stdp.PairSTDP) and isinstance(state, stdp.PairTraces):
            w_new, self.state = stdp.pair_stdp_step(w, state, pre, post, syn, rule, self.dt)
        elif isinstance(rule, stdp.TripletSTDP) and isinstance(state, stdp.TripletTraces):
            w_new, self.state = stdp.triplet_stdp_step(w, state, pre, post, syn, rule, self.dt)
        elif isinstance(rule, stdp.RewardSTDP) and isinstance(state, stdp.RewardState):
            w_new, self.state = stdp.reward_stdp_step(w, state, pre, post, syn, rule, self.dt, reward)
        else:
            raise TypeError(f"learner state {type(state).__name__} does not fit rule {type(rule).__name__}")
        return w_new

    def _pre_trace(self) -> Tensor:
        state = self.state
        if isinstance(state, stdp.TripletTraces):
            return state.r1
        if isinstance(state, stdp.RewardState):
            return state.traces.pre
        return state.pre

    @torch.no_grad()
    def step(
        self,
        pre: Tensor,
        post: Tensor,
        *,
        post_v: Tensor | None = None,
        post_threshold: Tensor | float | None = None,
        reward: float | Tensor | None = None,
    ) -> dict[str, Tensor] | None:
        """One STDP update from this step's spikes ``(batch, n)``. Returns the step's
        gradients ``{parameter_name: (n_synapses,)}`` when a surrogate, a readout, labels
        and the post membrane potential are available, else None."""
        if not self._enabled:
            return None
        w = self.projection.synapse_weights()
        w_new = self._rule_step(w, pre, post, reward)
        w_next = w_new if self.scale == 1.0 else w + self.scale * (w_new - w)
        if self.regulariser is not None:
            pull = self.regulariser.pull(self.parameter_name, w_next)
            if pull is not None:
                w_next = torch.clamp(w_next + pull, *self._bounds)
        self.projection.set_synapse_weights(w_next)
        self._counts += post.to(self._counts.dtype)
        self._sample_steps += 1
        if self.surrogate is None or self.readout is None or self.labels is None or post_v is None:
            return None
        threshold = 0.0 if post_threshold is None else post_threshold
        psi = self.surrogate.derivative(post_v, threshold)
        rates = self._counts / (self._sample_steps * self.dt)
        signal = self.readout.learning_signal(rates, self.labels) / (self._sample_steps * self.dt)
        g = online_gradient(psi, self._pre_trace(), signal, self.synapses.pre_index, self.synapses.post_index)
        return {self.parameter_name: g.mean(0)}

    async def update(
        self,
        pre: Tensor,
        post: Tensor,
        *,
        post_v: Tensor | None = None,
        post_threshold: Tensor | float | None = None,
        reward: float | Tensor | None = None,
        accumulator: GradientSink | None = None,
    ) -> None:
        """``step`` and, when ``accumulator`` is given, ``await accumulator.update(grads)``.
        Without ``accumulator`` it does exactly what it did before the keyword existed."""
        grads = self.step(pre, post, post_v=post_v, post_threshold=post_threshold, reward=reward)
        if accumulator is None:
            return
        if grads is None:
            raise NoGradientSource(_NO_GRADIENT)
        await accumulator.update(grads)

    def reward_episode(self, reward: float) -> None:
        """End of a sample (episode) of a ``RewardSTDP`` learner: ``w += learning_rate * reward
        * c``, then the eligibility is cleared (``stdp.apply_episode_reward``)."""
        rule, state = self.rule, self.state
        if not isinstance(rule, stdp.RewardSTDP) or not isinstance(state, stdp.RewardState):
            raise TypeError(f"reward_episode needs a RewardSTDP learner, this one runs {type(rule).__name__}")
        if not math.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward!r}")
        w, self.state = stdp.apply_episode_reward(self.projection.synapse_weights(), state, reward, rule)
        self.projection.set_synapse_weights(w)

    def _source_reward(self, ctx: StepContext) -> float | None:
        """The reward source's spikes of this step as a reward rate (mean over instances)."""
        if self.reward_source is None:
            return None
        spikes = ctx.spikes[self.reward_source]
        n = float(spikes.sum()) / spikes.shape[0]
        return self.reward_per_spike * n / self.dt if n > 0 else None

    def on_step(self, ctx: StepContext) -> Awaitable[None] | None:
        """The engine's plasticity slot: this step's spikes and the post membrane potential."""
        pre = ctx.spikes[self.projection.source]
        post = ctx.spikes[self.projection.target]
        state = ctx.sim.state[self.projection.target]
        params = ctx.sim.network.populations[self.projection.target].params
        threshold = params.v_threshold + state.theta if isinstance(state, AdaptiveLIFState) else params.v_threshold
        reward = self._source_reward(ctx)
        sink = self._accumulator
        if sink is None:
            self.step(pre, post, post_v=state.v, post_threshold=threshold, reward=reward)
            return None
        if isinstance(sink, FisherAccumulator):  # its synchronous core: no coroutine per step
            grads = self.step(pre, post, post_v=state.v, post_threshold=threshold, reward=reward)
            if grads is None:
                raise NoGradientSource(_NO_GRADIENT)
            sink.fold(grads)
            return None
        return self.update(pre, post, post_v=state.v, post_threshold=threshold, reward=reward, accumulator=sink)

    # ------------------------------------------------------------------ the compiled loop
    def _kernel(self) -> Kernel | None:
        rule, state = self.rule, self.state

        def view(t: Tensor) -> npt.NDArray[np.floating]:
            return t.numpy()[0] if t.dim() == 2 else t.numpy()

        if isinstance(rule, stdp.TripletSTDP) and isinstance(state, stdp.TripletTraces):
            return TripletKernel(
                view(state.r1), view(state.r2), view(state.o1), view(state.o2),
                decay_r1=math.exp(-self.dt / rule.tau_plus), decay_r2=math.exp(-self.dt / rule.tau_x),
                decay_o1=math.exp(-self.dt / rule.tau_minus), decay_o2=math.exp(-self.dt / rule.tau_y),
                a2_plus=rule.a2_plus, a3_plus=rule.a3_plus, a2_minus=rule.a2_minus, a3_minus=rule.a3_minus,
                w_min=rule.w_min, w_max=rule.w_max,
            )  # fmt: skip
        pair_rule = rule.pair if isinstance(rule, stdp.RewardSTDP) else rule
        traces = state.traces if isinstance(state, stdp.RewardState) else state
        if not isinstance(pair_rule, stdp.PairSTDP) or not isinstance(traces, stdp.PairTraces):
            return None
        pair = PairKernel(
            pre_trace=view(traces.pre),
            post_trace=view(traces.post),
            decay_pre=math.exp(-self.dt / pair_rule.tau_pre),
            decay_post=math.exp(-self.dt / pair_rule.tau_post),
            a_plus=pair_rule.a_plus,
            a_minus=pair_rule.a_minus,
            w_min=pair_rule.w_min,
            w_max=pair_rule.w_max,
            multiplicative=pair_rule.dependence is stdp.WeightDependence.MULTIPLICATIVE,
            nearest=pair_rule.traces is stdp.TraceMode.NEAREST,
        )
        if isinstance(rule, stdp.RewardSTDP) and isinstance(state, stdp.RewardState):
            return RewardKernel(
                pair,
                eligibility=view(state.eligibility),
                decay_eligibility=math.exp(-self.dt / rule.tau_eligibility),
                learning_rate=rule.learning_rate,
                reward_source=self.reward_source,
                reward_per_spike=self.reward_per_spike,
            )
        return pair

    def _gradient_terms(self, sim: Simulation) -> GradientTerms | None:
        if self.surrogate is None or self.readout is None or self.labels is None:
            return None
        w = self.projection.synapse_weights()
        return GradientTerms(
            readout_weight=self.readout.weight.detach().to(w.dtype).contiguous().numpy(),
            readout_bias=self.readout.bias.detach().to(w.dtype).contiguous().numpy(),
            label=int(self.labels[0]),
            counts=self._counts.numpy()[0],
            sample_steps=self._sample_steps,
            surrogate=SurrogateCode.FAST_SIGMOID
            if self.surrogate.kind is SurrogateKind.FAST_SIGMOID
            else SurrogateCode.ARCTAN,
            width=self.surrogate.width,
            adaptive_threshold=isinstance(sim.state[self.projection.target], AdaptiveLIFState),
        )

    def compiled_form(self, sim: Simulation) -> CompiledLearner | None:
        """The whole learning step for the compiled loop (one CPU instance), or None when this
        learner needs the PyTorch path."""
        w = self.projection.synapse_weights()
        if self.batch != 1 or self.scale != 1.0 or w.device.type != "cpu":
            return None
        kernel = self._kernel()
        if kernel is None:
            return None
        pull = None
        if self.regulariser is not None:
            if not isinstance(self.regulariser, LinearWeightPull):
                return None
            terms = self.regulariser.pull_terms(self.parameter_name, w)
            if terms is not None:
                pull = PullTerms(terms[0].contiguous().numpy(), terms[1].contiguous().numpy())
        gradient = self._gradient_terms(sim)
        fisher = None
        max_steps = None
        sink = self._accumulator
        if sink is not None:
            if not isinstance(sink, FisherAccumulator) or gradient is None:
                return None  # the PyTorch path feeds it (or says why it cannot)
            fisher = FisherTerms(
                ema=sink.external_buffer(self.parameter_name, self.projection.n_synapses),
                alpha=sink.config.alpha,
                stop_on_non_finite=sink.config.non_finite is NonFinitePolicy.RAISE,
            )
            max_steps = sink.steps_until_snapshot()
        return CompiledLearner(self.projection, kernel, pull=pull, gradient=gradient, fisher=fisher,
                               max_steps=max_steps)  # fmt: skip

    def after_compiled(self, outcome: CompiledOutcome) -> None:
        """Book a compiled stretch: the sample's step count and the Fisher steps folded."""
        if self.surrogate is not None and self.readout is not None and self.labels is not None:
            self._sample_steps = outcome.sample_steps
        else:
            self._sample_steps += outcome.steps
        sink = self._accumulator
        if isinstance(sink, FisherAccumulator):
            sink.fold_external(outcome.fisher_steps, outcome.non_finite)

    def attach(self, sim: Simulation, *, accumulator: GradientSink | None = None) -> None:
        """Run this learner in the plasticity slot of every step of ``sim`` (compiled on the
        CPU with one instance, see the module docs). ``sim.run`` works with a
        ``FisherAccumulator``; another gradient sink is awaited: use ``sim.run_async``."""
        if sim.dt != self.dt or sim.batch != self.batch:
            raise ValueError(
                f"learner built for dt={self.dt}, batch={self.batch}; simulation has dt={sim.dt}, batch={sim.batch}"
            )
        self._accumulator = accumulator
        sim.add_plasticity(self)
