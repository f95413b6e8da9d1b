"""The same continual-learning protocols on a spiking network trained with surrogate gradients.

The network: Poisson-encoded pixels (``neurosim.datasets.poisson_rates``: up to 500 Hz) for
``STEPS`` steps of 1 ms -> a hidden layer of neurosim ``CurrentLIF`` neurons, advanced by
``neurosim.sim.neurons.step`` (exact integration of ``tau_m dv/dt = -(v - v_rest) + R I``,
Lapicque/Stein; here in normalised units: v_rest = v_reset = 0, v_threshold = 1, R = 1,
tau_m = 10 ms) with a ``Surrogate`` (fast sigmoid, SuperSpike; Zenke & Ganguli 2018), so that
backpropagation through time reaches the input weights -> a linear readout of the hidden
spike rates. Training, contexts, heads, Adam and batch 128 are those of ``protocol.py``.

Methods: ``none``; ``ewc`` (full-batch true Fisher after each context, through the spiking
forward pass); ``online_fisher_ewc`` (the ``FisherAccumulator`` EMA of the training
gradients); ``sleep``: after each context, sleep replay consolidation in the spirit of
Tadros et al. (2022): the hidden layer runs on Poisson noise with the mean rates of the
contexts seen so far, thresholds raised, and ``neurosim.learning.sleep.sleep_update``
potentiates input synapses whose pre neuron fired just before a hidden spike and depresses
the others (``strength`` = potentiation per pairing; depression = strength / 10).

    .venv/bin/python -m benchmarks.continual --network spiking [--quick] [--out DIR] ...

runs them (``__main__``: the same search, seeds, records and report as the MLP's, with this
module's grids and sizes) into ``continual_spiking_<protocol>.json`` and ``continual_spiking.md``.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from benchmarks.continual.protocol import AfterContext, Context, Method, ProtocolName, RunConfig
from neurosim.datasets import poisson_rates
from neurosim.learning.sleep import SleepConfig, sleep_dense_layer
from neurosim.learning.surrogate import Surrogate
from neurosim.sim.neurons import CurrentLIF, initial_state, step
from neurosim.units import ImplausibleQuantityWarning

STEPS = 10  # 1 ms steps per presentation
DT = 1e-3
MAX_RATE = 500.0  # Hz for a white pixel
with warnings.catch_warnings():  # normalised units on purpose: R = 1, the threshold 1 above rest
    warnings.simplefilter("ignore", ImplausibleQuantityWarning)
    HIDDEN_LIF = CurrentLIF(tau_m=10e-3, v_rest=0.0, v_threshold=1.0, v_reset=0.0, t_ref=0.0, r_m=1.0)


class SpikingNetwork(nn.Module):
    """Poisson input -> CurrentLIF hidden layer (surrogate spikes) -> linear readout of rates."""

    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.inputs = nn.Linear(n_in, hidden)
        self.readout = nn.Linear(hidden, n_out)
        with torch.no_grad():  # start where the neurons fire: input currents of order the threshold
            self.inputs.weight.mul_(6.0)
        self.surrogate = Surrogate(width=0.5)

    def rates(self, x: torch.Tensor) -> torch.Tensor:
        """Mean hidden spike count per step, ``(batch, hidden)``."""
        spikes_in = (torch.rand((STEPS, *x.shape)) < x * (MAX_RATE * DT)).to(x.dtype)
        currents = self.inputs(spikes_in)  # every step's input current in one matrix product
        state = initial_state(HIDDEN_LIF, x.shape[0], self.inputs.out_features, dtype=x.dtype, device=x.device)
        total = torch.zeros_like(currents[0])
        for t in range(STEPS):
            z, state = step(state, currents[t], HIDDEN_LIF, DT, surrogate=self.surrogate)
            total = total + z
        return total / STEPS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.readout(self.rates(x))
        return logits


def sleep_after_contexts(cfg: RunConfig) -> AfterContext | None:
    """The sleep method's hook (``cfg.strength`` = potentiation per pairing; depression a tenth):
    after each context, ``sleep_dense_layer`` on the input synapses, driven by noise at the mean
    image of the contexts seen (the original threshold was 1 above a rest of 0: the library's
    relative threshold scale is the same number)."""
    if cfg.method is not Method.SLEEP:
        return None
    config = SleepConfig(duration=0.5, inc=cfg.strength, dec=cfg.strength / 10, threshold_scale=1.5)

    def after(model: nn.Module, seen: list[Context]) -> None:
        if not isinstance(model, SpikingNetwork):
            raise TypeError(f"sleep replay acts on a SpikingNetwork's input synapses, not a {type(model).__name__}")
        mean_image = torch.cat([c.train_x for c in seen]).mean(0).numpy()
        rates = torch.from_numpy(poisson_rates(mean_image, MAX_RATE * config.rate_scale)).float()
        sleep_dense_layer(model.inputs.weight.data, model.inputs.bias.data, HIDDEN_LIF, rates, config, DT)

    return after


SPIKING_METHODS = (Method.NONE, Method.EWC, Method.ONLINE_FISHER_EWC, Method.SLEEP)
GRIDS = {
    Method.EWC: [0.1, 1.0, 10.0, 1e2, 1e3, 1e4],
    Method.ONLINE_FISHER_EWC: [0.1, 1.0, 10.0, 1e2, 1e3, 1e4],
    Method.SLEEP: [1e-6, 1e-5, 1e-4, 1e-3, 1e-2],
}
ITERATIONS = {ProtocolName.SPLIT_TASK_IL: 200, ProtocolName.PERMUTED_DOMAIN_IL: 200}
HIDDEN = 200
