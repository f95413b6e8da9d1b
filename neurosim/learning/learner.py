"""``STDPOnlineLearner``: one projection, one STDP rule, updated once per simulation step.

The learner is a thin stateful shell over the pure rules of ``neurosim.learning.stdp``:
it holds the traces, writes the new weights into its projection, and, when it can,
computes the step's surrogate gradient of ``log p(y|x)`` for each weight (the online
eligibility gradient of ``neurosim.learning.surrogate``) and hands it to a Fisher
accumulator. Plug it into a simulation with ``learner.attach(sim)``.

Order inside ``step``: the STDP change (scaled by ``scale``; none while ``enabled`` is
False, though the traces keep running), then the regulariser's pull (EWC), then the
rule's weight bounds.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt
import torch

from neurosim.learning import stdp
from neurosim.learning.readout import LinearReadout
from neurosim.learning.surrogate import Surrogate, online_gradient
from neurosim.sim.compiled import CompiledPairSTDP
from neurosim.sim.neurons import AdaptiveLIFState
from neurosim.sim.synapses import Projection

if TYPE_CHECKING:
    from neurosim.sim.engine import Simulation, StepContext

Tensor = torch.Tensor
Gradients = Mapping[str, Tensor] | Mapping[str, npt.NDArray[np.float32]]


class GradientSink(Protocol):
    """Anything that takes one step's gradients, e.g. a ``FisherAccumulator``."""

    async def update(self, gradients: Gradients) -> None: ...


class WeightPull(Protocol):
    """A regulariser's per-step pull on a parameter (e.g. EWC: ``-lambda F (w - w*)``)."""

    def pull(self, name: str, weights: Tensor) -> Tensor | None: ...


class NoGradientSource(RuntimeError):
    """An accumulator was given, but the learner has no surrogate, readout or labels."""


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
    ) -> None:
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
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
        self.synapses = stdp.Synapses(projection.pre_index, projection.post_index)
        w = projection.synapse_weights()
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
        return self._enabled

    @property
    def accumulator(self) -> GradientSink | None:
        """Where each step's gradients go (set per task by an orchestrator), or None."""
        return self._accumulator

    @accumulator.setter
    def accumulator(self, value: GradientSink | None) -> None:
        self._accumulator = value

    @property
    def parameter_name(self) -> str:
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
            raise NoGradientSource(
                "an accumulator needs gradients: give the learner a surrogate and a readout, call "
                "begin_sample(labels), and pass post_v"
            )
        await accumulator.update(grads)

    def on_step(self, ctx: StepContext) -> Awaitable[None] | None:
        """The engine's plasticity slot: this step's spikes and the post membrane potential."""
        pre = ctx.spikes[self.projection.source]
        post = ctx.spikes[self.projection.target]
        state = ctx.sim.state[self.projection.target]
        params = ctx.sim.network.populations[self.projection.target].params
        threshold = params.v_threshold + state.theta if isinstance(state, AdaptiveLIFState) else params.v_threshold
        if self._accumulator is None:
            self.step(pre, post, post_v=state.v, post_threshold=threshold)
            return None
        return self.update(pre, post, post_v=state.v, post_threshold=threshold, accumulator=self._accumulator)

    def compiled_form(self, sim: Simulation) -> CompiledPairSTDP | None:
        """Pair STDP on one CPU instance, with nothing else to compute, runs compiled."""
        rule, state = self.rule, self.state
        if not isinstance(rule, stdp.PairSTDP) or not isinstance(state, stdp.PairTraces):
            return None
        if self.batch != 1 or self._accumulator is not None or self.regulariser is not None or self.scale != 1.0:
            return None
        if state.pre.device.type != "cpu":
            return None
        return CompiledPairSTDP(
            projection=self.projection,
            pre_trace=state.pre.numpy()[0],
            post_trace=state.post.numpy()[0],
            decay_pre=math.exp(-self.dt / rule.tau_pre),
            decay_post=math.exp(-self.dt / rule.tau_post),
            a_plus=rule.a_plus,
            a_minus=rule.a_minus,
            w_min=rule.w_min,
            w_max=rule.w_max,
            multiplicative=rule.dependence is stdp.WeightDependence.MULTIPLICATIVE,
            nearest=rule.traces is stdp.TraceMode.NEAREST,
        )

    def attach(self, sim: Simulation, *, accumulator: GradientSink | None = None) -> None:
        """Run this learner in the plasticity slot of every step of ``sim``. With an
        accumulator the learner runs on the PyTorch path and is async: use
        ``sim.run_async``."""
        if sim.dt != self.dt or sim.batch != self.batch:
            raise ValueError(
                f"learner built for dt={self.dt}, batch={self.batch}; simulation has dt={sim.dt}, batch={sim.batch}"
            )
        self._accumulator = accumulator
        sim.add_plasticity(self)
