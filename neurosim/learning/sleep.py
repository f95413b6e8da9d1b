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

so synapses that the Fisher marks as important are depressed less. Optionally all weights
are multiplied by ``downscale`` at the end of the sleep (synaptic downscaling, Tononi &
Cirelli 2014). Tadros et al. scale ``inc`` and ``dec`` to the layer's weights (their
``inc = 0.032``, ``dec = 0.003`` for normalised weights); here they are in weight units.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel, ConfigDict, Field

from neurosim.sim.compiled_learning import CompiledLearner, CompiledOutcome, SleepKernel
from neurosim.sim.synapses import Projection

if TYPE_CHECKING:
    from neurosim.sim.engine import Simulation, StepContext

Tensor = torch.Tensor


class SleepConfig(BaseModel):
    """Sleep replay parameters (see the module docs; defaults follow Tadros et al. 2022 in
    spirit, scaled to neurosim's weight units)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    duration: float = Field(0.5, gt=0)  # s of replay per SLEEP phase
    rate_scale: float = Field(1.0, gt=0)  # noise rate = rate_scale * mean input rate of the tasks seen
    threshold_scale: float = Field(1.5, gt=0)  # raised thresholds during sleep
    inc: float = Field(1e-3, ge=0)  # potentiation per causal pairing (weight units)
    dec: float = Field(2e-4, ge=0)  # depression per non-causal post spike (weight units)
    window: float = Field(10e-3, gt=0)  # s: "pre fired before the post spike"
    fisher_protection: float = Field(10.0, ge=0)  # 0: no protection
    downscale: float = Field(1.0, gt=0, le=1.0)  # multiply weights at the end of sleep; 1: off


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
) -> Tensor:
    """One step of the spike-triggered sleep rule (batch mean), weights in synapse order,
    clipped to the plastic rule's ``bounds``.

    ``last_pre_spike`` ``(batch, n_pre)`` holds each pre neuron's last spike time (s)."""
    fired = post_spikes.to(w.dtype)[:, post_index]  # (batch, n_syn)
    causal = (now - last_pre_spike[:, pre_index] <= cfg.window).to(w.dtype)
    change = fired * (cfg.inc * causal - cfg.dec * protection * (1.0 - causal))
    return torch.clamp(w + change.mean(0), *bounds)


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
        self.active = True

    def on_step(self, ctx: StepContext) -> Awaitable[None] | None:
        now = ctx.step * ctx.sim.dt
        pre = ctx.spikes[self.projection.source]
        self._last_pre = torch.where(pre, torch.full_like(self._last_pre, now), self._last_pre)
        post = ctx.spikes[self.projection.target]
        if bool(post.any()):
            w = self.projection.synapse_weights()
            p = self.projection
            self.projection.set_synapse_weights(
                sleep_update(
                    w, self._last_pre, post, now, p.pre_index, p.post_index, self._protection, self.cfg, self.bounds
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
            inc=self.cfg.inc,
            dec=self.cfg.dec,
            window=self.cfg.window,
            w_min=self.bounds[0],
            w_max=self.bounds[1],
        )
        return CompiledLearner(self.projection, kernel)

    def after_compiled(self, outcome: CompiledOutcome) -> None:
        """Nothing to book: the rule's state is its arrays."""

    def finish(self) -> None:
        """End of sleep: synaptic downscaling, if configured."""
        if self.cfg.downscale < 1.0:
            self.projection.set_synapse_weights(self.projection.synapse_weights() * self.cfg.downscale)
