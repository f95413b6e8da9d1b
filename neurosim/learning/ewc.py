"""Elastic weight consolidation (Kirkpatrick et al. 2017), separate and online.

At a learning boundary the regulariser records an anchor for the task: the parameters
``theta*`` and their diagonal Fisher ``F``. The penalty on later tasks is::

    separate: L = 0.5 * lambda * sum_t sum_i F_t,i (theta_i - theta*_t,i)^2   (one anchor per task)
    online:   F <- gamma * F + F_new;  theta* <- theta   (one running anchor; Schwarz et al. 2018)
              L = 0.5 * lambda * sum_i F_i (theta_i - theta*_i)^2

The separate penalty is a sum of quadratics in the same parameters, and so itself one
quadratic: ``sum_t F_t (theta - theta*_t)^2 = F (theta - m)^2 + c`` with ``F = sum_t F_t``,
``m`` the Fisher-weighted mean of the anchors and ``c`` a constant. The regulariser keeps
that merged form (``MergedAnchor``, rebuilt at each consolidation), so a training step costs
the same with one earlier task or a hundred.

``penalty()`` is differentiable and serves any torch model as a loss term; ``pull()`` is
the per-step weight change an online learner applies, ``-pull_rate * dL/dtheta``, capped so
that it never overshoots the anchor. With ``online_fisher=True`` the Fisher comes from the
task's latest snapshot in a ``FisherMatrixBase`` store (the ``FisherAccumulator`` EMA),
not from a full-batch pass.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from neurosim.learning.fisher import FisherMatrixBase

Tensor = torch.Tensor
FisherLike = Mapping[str, Tensor] | Mapping[str, npt.NDArray[np.float32]]


class EWCMode(enum.StrEnum):
    SEPARATE = "separate"
    ONLINE = "online"


@dataclass(frozen=True)
class EWCConfig:
    lambda_: float = 100.0  # penalty strength ("lambda")
    mode: EWCMode = EWCMode.SEPARATE
    gamma: float = 1.0  # online mode: decay of the earlier tasks' Fisher
    online_fisher: bool = False  # take F from the task's latest online snapshot in the store
    pull_rate: float = 1e-3  # learner: fraction of -dL/dtheta applied per step

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lambda_) and self.lambda_ >= 0):
            raise ValueError(f"EWCConfig.lambda_ must be >= 0, got {self.lambda_!r}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"EWCConfig.gamma must be in [0, 1], got {self.gamma!r}")
        if not (math.isfinite(self.pull_rate) and self.pull_rate >= 0):
            raise ValueError(f"EWCConfig.pull_rate must be >= 0, got {self.pull_rate!r}")
        object.__setattr__(self, "mode", EWCMode(self.mode))


class Anchor(NamedTuple):
    params: dict[str, Tensor]
    fisher: dict[str, Tensor]


def quadratic_penalty(parameters: Mapping[str, Tensor], anchors: Sequence[Anchor], strength: float) -> Tensor:
    """``0.5 * strength * sum_anchors sum_i F_i (theta_i - theta*_i)^2`` (differentiable), term by term.

    The definition; ``EWCRegulariser.penalty`` computes the same from the merged anchor."""
    total = torch.zeros(())
    for anchor in anchors:
        for name, theta in parameters.items():
            if name in anchor.fisher:
                total = total + (anchor.fisher[name] * (theta - anchor.params[name]) ** 2).sum()
    return 0.5 * strength * total


class MergedAnchor(NamedTuple):
    """Several anchors as one quadratic: ``sum_t F_t (theta - theta*_t)^2 = F (theta - centre)^2 + offset``."""

    fisher: dict[str, Tensor]  # F = sum_t F_t
    centre: dict[str, Tensor]  # sum_t F_t theta*_t / F (the last anchor's theta* where F = 0)
    offset: dict[str, float]  # sum_t sum_i F_t,i (theta*_t,i - centre_i)^2, per parameter


@torch.no_grad()
def merge_anchors(anchors: Sequence[Anchor]) -> MergedAnchor:
    """The merged quadratic of ``anchors``, accumulated in float64 (no cancellation in the constant)."""
    fisher: dict[str, Tensor] = {}
    centre: dict[str, Tensor] = {}
    offset: dict[str, float] = {}
    names = dict.fromkeys(name for anchor in anchors for name in anchor.fisher)
    for name in names:
        pairs = [(a.fisher[name].double(), a.params[name].double()) for a in anchors if name in a.fisher]
        total = torch.stack([f for f, _ in pairs]).sum(0)
        weighted = torch.stack([f * theta for f, theta in pairs]).sum(0)
        mean = torch.where(total > 0, weighted / total.clamp_min(1e-300), pairs[-1][1])
        offset[name] = float(sum(float((f * (theta - mean) ** 2).sum()) for f, theta in pairs))
        dtype = next(a.fisher[name].dtype for a in anchors if name in a.fisher)
        fisher[name], centre[name] = total.to(dtype), mean.to(dtype)
    return MergedAnchor(fisher, centre, offset)


@torch.no_grad()
def quadratic_pull(weights: Tensor, centre: Tensor, fisher: Tensor, strength: float, rate: float) -> Tensor:
    """``-rate * dL/dtheta = -rate * strength * F (theta - centre)`` for one quadratic (several
    anchors merged by ``merge_anchors``), the coefficient ``rate * strength * F`` capped at 1 so
    a step never passes the centre."""
    return -pull_coefficient(fisher, strength, rate) * (weights - centre)


@torch.no_grad()
def pull_coefficient(fisher: Tensor, strength: float, rate: float) -> Tensor:
    """``min(rate * strength * F, 1)``: the fraction of the way to the centre one step moves."""
    return torch.clamp(rate * strength * fisher, max=1.0)


def _as_tensor(value: Tensor | npt.NDArray[np.float32], like: Tensor) -> Tensor:
    t = torch.from_numpy(np.asarray(value)) if isinstance(value, np.ndarray) else value
    return t.detach().to(device=like.device, dtype=like.dtype).clone()


class EWCRegulariser:
    """Anchors per task (separate) or one running anchor (online); see the module docs."""

    def __init__(self, config: EWCConfig, store: FisherMatrixBase | None = None) -> None:
        if config.online_fisher and store is None:
            raise ValueError("online_fisher=True needs the store the FisherAccumulators write to")
        self.config = config
        self.store = store
        self._anchors: dict[str, Anchor] = {}  # separate mode: task -> anchor; online: "online" -> anchor
        self._merged = MergedAnchor({}, {}, {})
        self._pull_cache: dict[tuple[str, torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}
        self.tasks: list[str] = []

    @property
    def anchors(self) -> Mapping[str, Anchor]:
        """The recorded anchors (read-only: ``consolidate`` is the way to add one)."""
        return MappingProxyType(self._anchors)

    def consolidate(self, task_id: str, parameters: Mapping[str, Tensor], fisher: FisherLike | None = None) -> None:
        """Record the anchor of ``task_id`` (call at the end of its LEARNING phase)."""
        if fisher is None:
            if not self.config.online_fisher or self.store is None:
                raise ValueError(
                    f"consolidate({task_id!r}): pass the task's Fisher, or use online_fisher=True with a store"
                )
            fisher = self.store.load(task_id).arrays
        missing = set(parameters) - set(fisher)
        if missing:
            raise ValueError(f"consolidate({task_id!r}): no Fisher for {sorted(missing)}")
        params = {k: v.detach().clone() for k, v in parameters.items()}
        new_f = {k: _as_tensor(fisher[k], v) for k, v in params.items()}
        for name, f in new_f.items():
            if f.shape != params[name].shape:
                raise ValueError(
                    f"Fisher for {name!r} has shape {tuple(f.shape)}, parameter {tuple(params[name].shape)}"
                )
        if self.config.mode is EWCMode.ONLINE:
            old = self._anchors.get("online")
            if old is not None:
                new_f = {k: self.config.gamma * old.fisher[k] + f for k, f in new_f.items()}
            self._anchors["online"] = Anchor(params, new_f)
        else:
            self._anchors[task_id] = Anchor(params, new_f)
        self._merged = merge_anchors(list(self._anchors.values()))
        self._pull_cache.clear()
        self.tasks.append(task_id)

    def recentre(self, task_id: str, parameters: Mapping[str, Tensor]) -> None:
        """Move the anchor that ``task_id`` last consolidated into (online mode: the running
        anchor) to ``parameters``, keeping its Fisher: after a consolidation that changes the
        weights on purpose (sleep), later tasks are pulled towards the consolidated weights,
        not back to those before it."""
        key = "online" if self.config.mode is EWCMode.ONLINE else task_id
        anchor = self._anchors.get(key)
        if anchor is None or task_id not in self.tasks:
            raise KeyError(f"recentre({task_id!r}): no anchor consolidated for this task")
        if set(parameters) != set(anchor.params):
            raise ValueError(f"recentre({task_id!r}): parameters {sorted(parameters)}, anchor {sorted(anchor.params)}")
        params = {k: v.detach().clone().to(anchor.params[k]) for k, v in parameters.items()}
        self._anchors[key] = Anchor(params, anchor.fisher)
        self._merged = merge_anchors(list(self._anchors.values()))
        self._pull_cache.clear()

    def penalty(self, parameters: Mapping[str, Tensor]) -> Tensor:
        """``quadratic_penalty`` over every anchor, in one pass over the parameters."""
        merged = self._merged
        total = torch.zeros(())
        constant = 0.0
        for name, theta in parameters.items():
            if name in merged.fisher:
                total = total + (merged.fisher[name] * (theta - merged.centre[name]) ** 2).sum()
                constant += merged.offset[name]
        return 0.5 * self.config.lambda_ * (total + constant)

    def pull(self, name: str, weights: Tensor) -> Tensor | None:
        """The per-step change an online learner applies to parameter ``name``:
        ``quadratic_pull`` of the merged anchor."""
        terms = self.pull_terms(name, weights)
        if terms is None:
            return None
        coefficient, centre = terms
        return -coefficient * (weights - centre)

    @torch.no_grad()
    def pull_terms(self, name: str, weights: Tensor) -> tuple[Tensor, Tensor] | None:
        """The pull as ``-coefficient * (w - centre)``: ``(coefficient, centre)`` in the weights'
        dtype and device (``coefficient = min(pull_rate * lambda * F, 1)``), or None when
        there is nothing to pull. Computed once per consolidation (the compiled loop's form)."""
        if name not in self._merged.fisher or self.config.pull_rate == 0 or self.config.lambda_ == 0:
            return None
        key = (name, weights.dtype, weights.device)
        cached = self._pull_cache.get(key)
        if cached is None:
            merged = self._merged
            coefficient = pull_coefficient(merged.fisher[name], self.config.lambda_, self.config.pull_rate)
            cached = (coefficient.to(weights).contiguous(), merged.centre[name].to(weights).contiguous())
            self._pull_cache[key] = cached
        return cached
