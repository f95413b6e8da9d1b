"""Synaptic Intelligence (Zenke, Poole & Ganguli 2017).

During a task, every parameter accumulates its contribution to the decrease of the *task*
loss along the learning trajectory (the path integral, from the task-loss gradient, not the
regularised total)::

    omega_i += -g_i(t) * delta_theta_i(t)

At the task's end its importance grows by ``Omega_i += omega_i / (Delta_i^2 + xi)``, with
``Delta_i`` the parameter's total change over the task and ``xi`` the damping, and the anchor
moves to the current parameters. The penalty is ``c * sum_i Omega_i (theta_i - theta*_i)^2``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from neurosim.learning.consolidation import ConsolidatorBase, LearningStep, Parameters, TaskData
from neurosim.learning.ewc import quadratic_pull

Tensor = torch.Tensor


@dataclass(frozen=True)
class SIConfig:
    """Synaptic Intelligence settings: strength ``c``, damping ``xi``, and the pull rate on STDP weights."""

    strength: float = 0.1  # c (Zenke et al. use 0.1 on split MNIST)
    damping: float = 1e-3  # xi
    pull_rate: float = 1e-3  # learner: fraction of -dL/dtheta applied per step

    def __post_init__(self) -> None:
        for name in ("strength", "damping", "pull_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"SIConfig.{name} must be >= 0, got {value!r}")
        if self.damping == 0:
            raise ValueError("SIConfig.damping must be > 0 (it keeps Omega finite for unchanged parameters)")


@torch.no_grad()
def path_integral_step(omega: Tensor, task_gradient: Tensor, delta: Tensor) -> Tensor:
    """``omega - g * delta``: one step of the path integral (``g`` is d task loss / d theta)."""
    return omega - task_gradient * delta


@torch.no_grad()
def importance_update(importance: Tensor, omega: Tensor, total_change: Tensor, damping: float) -> Tensor:
    """``Omega + max(omega, 0) / (Delta^2 + xi)``: a parameter whose path integral is negative
    (it moved against the task loss) gains no importance, so Omega never goes negative."""
    return importance + torch.clamp(omega, min=0.0) / (total_change**2 + damping)


class SynapticIntelligence:
    """Thin stateful shell: ``begin_task``, ``accumulate`` each step, ``consolidate`` at the end."""

    def __init__(self, config: SIConfig) -> None:
        self.config = config
        self.importance: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}
        self._omega: dict[str, Tensor] = {}
        self._start: dict[str, Tensor] = {}

    def begin_task(self, parameters: Mapping[str, Tensor]) -> None:
        """A task starts: remember the parameters and zero the path integral."""
        self._start = {k: v.detach().clone() for k, v in parameters.items()}
        self._omega = {k: torch.zeros_like(v) for k, v in self._start.items()}

    def accumulate(self, task_gradients: Mapping[str, Tensor], deltas: Mapping[str, Tensor]) -> None:
        """One step: ``task_gradients`` of the task loss, ``deltas`` the parameter changes."""
        if not self._omega:
            raise RuntimeError("SynapticIntelligence.accumulate before begin_task()")
        for name, g in task_gradients.items():
            self._omega[name] = path_integral_step(self._omega[name], g.detach(), deltas[name].detach())

    def consolidate(self, parameters: Mapping[str, Tensor]) -> None:
        """A task ends: add its importance (path integral over squared change plus damping) and move the anchor."""
        if not self._omega:
            raise RuntimeError("SynapticIntelligence.consolidate before begin_task()")
        for name, theta in parameters.items():
            change = theta.detach() - self._start[name]
            base = self.importance.get(name, torch.zeros_like(change))
            self.importance[name] = importance_update(base, self._omega[name], change, self.config.damping)
            self.anchor[name] = theta.detach().clone()
        self.begin_task(parameters)

    def penalty(self, parameters: Mapping[str, Tensor]) -> Tensor:
        """``c sum Omega (theta - theta*)^2`` over the consolidated parameters."""
        total = torch.zeros(())
        for name, theta in parameters.items():
            if name in self.importance:
                total = total + (self.importance[name] * (theta - self.anchor[name]) ** 2).sum()
        return self.config.strength * total

    def pull(self, name: str, weights: Tensor) -> Tensor | None:
        """The penalty's pull on STDP weights (``pull_rate`` steps of its gradient), or None."""
        if name not in self.importance or self.config.pull_rate == 0:
            return None
        # L = c sum Omega (theta - theta*)^2 = 0.5 (2c) sum Omega (...)^2: the EWC form with strength 2c
        return quadratic_pull(
            weights, self.anchor[name], self.importance[name], 2 * self.config.strength, self.config.pull_rate
        )


class SI(ConsolidatorBase):
    """Synaptic Intelligence as a consolidator: the path integral from each observed step's
    task gradient and parameter change (``LearningStep.gradients`` and ``.deltas``), the
    importance and anchor updated at each task's end."""

    wants_deltas = True

    def __init__(self, config: SIConfig | None = None) -> None:
        self.si = SynapticIntelligence(config if config is not None else SIConfig())

    def begin_task(self, task_id: str, parameters: Parameters) -> None:
        self.si.begin_task(parameters)

    def observe(self, step: LearningStep) -> None:
        missing = set(step.gradients) - set(step.deltas)
        if missing:
            raise ValueError(
                f"SI.observe needs the step's parameter changes (LearningStep.deltas); none for {sorted(missing)}"
            )
        self.si.accumulate(step.gradients, step.deltas)

    def end_task(self, task_id: str, parameters: Parameters, data: TaskData | None = None) -> None:
        self.si.consolidate(parameters)

    def penalty(self, parameters: Parameters) -> Tensor | None:
        return self.si.penalty(parameters) if self.si.importance else None

    def pull(self, name: str, weights: Tensor) -> Tensor | None:
        return self.si.pull(name, weights)
