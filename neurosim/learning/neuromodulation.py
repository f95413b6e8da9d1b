"""Neuromodulated ("gamma-gated") consolidation: a gain computed from training signals
scales how much each step counts towards a task's Fisher, and the plasticity.

A neuromodulator reads one signal of every step (loss, accuracy, gradient norm, predictive
entropy, or a reward / dopamine-like signal, as in reward-modulated STDP; Izhikevich 2007,
Cereb. Cortex 17:2443; Fremaux & Gerstner 2016, Front. Neural Circuits 9:85) and compares it
with its running expectation, a prediction error::

    z      = s * (x - mean) / sqrt(var + eps)        s = +1 where higher is better (accuracy,
                                                     reward), -1 where lower is (loss, entropy,
                                                     gradient norm)
    gain   = clip(1 + sensitivity * tanh(z), min_gain, max_gain)
    mean  <- mean + rate * (x - mean);  var <- (1 - rate) * (var + rate * (x - mean)^2)

(the statistics are updated after the gain, so the gain is a *prediction* error). A step that
goes better than expected (the network has got the task) counts more in the Fisher, the
importance of what was just consolidated; a surprising failure counts less. The same gain is
offered as a plasticity factor (``Neuromodulator.gain``: a learning-rate or STDP scale,
``STDPOnlineLearner.scale``). During ``warmup`` steps the gain is 1 while the expectation
forms.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch

from neurosim.learning.consolidation import LearningStep, TrainingSignals
from neurosim.learning.ewc import OnlineFisherEWC

Tensor = torch.Tensor


class ModulatorSignal(enum.StrEnum):
    """The training signal a ``Neuromodulator`` reads: loss, accuracy, gradient norm, entropy or reward."""

    LOSS = "loss"
    ACCURACY = "accuracy"
    GRADIENT_NORM = "gradient_norm"
    ENTROPY = "entropy"
    REWARD = "reward"


HIGHER_IS_BETTER = {
    ModulatorSignal.LOSS: False,
    ModulatorSignal.ACCURACY: True,
    ModulatorSignal.GRADIENT_NORM: False,
    ModulatorSignal.ENTROPY: False,
    ModulatorSignal.REWARD: True,
}


@dataclass(frozen=True)
class NeuromodulationConfig:
    """Which training signal drives the gain, the EMA rate of its expected value, the gain's sensitivity
    and bounds, and the warm-up steps (gain 1) while the expectation forms."""

    signal: ModulatorSignal = ModulatorSignal.LOSS
    rate: float = 0.05  # EMA rate of the expectation (about the last 1 / rate steps)
    sensitivity: float = 1.0
    min_gain: float = 0.0
    max_gain: float = 2.0
    warmup: int = 10  # steps with gain 1 while the expectation forms

    def __post_init__(self) -> None:
        if not 0.0 < self.rate <= 1.0:
            raise ValueError(f"NeuromodulationConfig.rate must be in (0, 1], got {self.rate!r}")
        if not (math.isfinite(self.sensitivity) and self.sensitivity >= 0):
            raise ValueError(f"NeuromodulationConfig.sensitivity must be >= 0, got {self.sensitivity!r}")
        if not 0.0 <= self.min_gain <= 1.0 <= self.max_gain or not math.isfinite(self.max_gain):
            raise ValueError(
                f"NeuromodulationConfig needs 0 <= min_gain <= 1 <= max_gain < inf, got {self.min_gain!r}, "
                f"{self.max_gain!r}"
            )
        if self.warmup < 0:
            raise ValueError(f"NeuromodulationConfig.warmup must be >= 0, got {self.warmup!r}")


@dataclass(frozen=True)
class ModulatorState:
    """The signal's running mean and variance (its expected value) and the steps seen."""

    mean: float = 0.0
    var: float = 0.0
    steps: int = 0


def modulation_step(value: float, state: ModulatorState, cfg: NeuromodulationConfig) -> tuple[float, ModulatorState]:
    """``(gain, new_state)`` for one signal value (see the module docs); pure."""
    if not math.isfinite(value):
        raise ValueError(f"neuromodulation signal {cfg.signal.value} is not finite: {value!r}")
    if state.steps == 0:
        return 1.0, ModulatorState(value, 0.0, 1)
    gain = 1.0
    if state.steps >= cfg.warmup:
        sign = 1.0 if HIGHER_IS_BETTER[cfg.signal] else -1.0
        z = sign * (value - state.mean) / math.sqrt(state.var + 1e-12)
        gain = min(max(1.0 + cfg.sensitivity * math.tanh(z), cfg.min_gain), cfg.max_gain)
    diff = value - state.mean
    mean = state.mean + cfg.rate * diff
    var = (1.0 - cfg.rate) * (state.var + cfg.rate * diff * diff)
    return gain, ModulatorState(mean, var, state.steps + 1)


class Neuromodulator:
    """Thin stateful shell over ``modulation_step``."""

    def __init__(self, config: NeuromodulationConfig | None = None) -> None:
        self.config = config if config is not None else NeuromodulationConfig()
        self.state = ModulatorState()
        self.gain = 1.0  # the latest gain (plasticity factor)

    def update(self, signals: TrainingSignals) -> float:
        """Read this step's signal, return the new gain."""
        value = getattr(signals, self.config.signal.value)
        if value is None:
            raise ValueError(f"the neuromodulator reads {self.config.signal.value!r}, which this step did not give")
        self.gain, self.state = modulation_step(float(value), self.state, self.config)
        return self.gain


class GammaGatedFisherEWC(OnlineFisherEWC):
    """Online-Fisher EWC whose accumulator is fed ``gain * g^2`` (``sqrt(gain) * g``), the gain
    from the step's ``LearningStep.signals`` (see the module docs): gamma-gated EWC."""

    def __init__(self, *args: object, modulation: NeuromodulationConfig | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.modulator = Neuromodulator(modulation)

    def observe(self, step: LearningStep) -> None:
        gain = self.modulator.update(step.signals)
        root = math.sqrt(gain)
        if self._fisher_input is not None:
            factor = gain if self.feed.per_sample else root
            self._fisher_input = {k: v * factor for k, v in self._fisher_input.items()}
        super().observe(step._replace(gradients={k: g * root for k, g in step.gradients.items()}))
