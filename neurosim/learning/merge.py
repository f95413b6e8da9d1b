"""Fisher-weighted merging of per-task weights (Matena & Raffel 2022, "Merging models with
Fisher-weighted averaging", NeurIPS; the diagonal-Fisher form)::

    theta_merged,i = sum_t F_t,i theta_t,i / (sum_t F_t,i + eps)

Each parameter moves towards the task that is most sensitive to it; where no task cares
(``sum_t F_t,i`` near 0) the weight of the latest task is kept, not pulled to zero.
``FisherMerge`` records each task's weights and Fisher at its end and proposes the merge
(``proposed_weights``), which the training loop (or the orchestrator) loads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import torch

from neurosim.learning.consolidation import ConsolidatorBase, Parameters, TaskData
from neurosim.learning.ewc import task_fisher
from neurosim.learning.fisher import FisherKind

Tensor = torch.Tensor


@torch.no_grad()
def fisher_weighted_merge(
    weights: Sequence[Mapping[str, Tensor]], fishers: Sequence[Mapping[str, Tensor]], eps: float = 1e-8
) -> dict[str, Tensor]:
    """``(sum_t F_t w_t + eps w_last) / (sum_t F_t + eps)`` per parameter: the Fisher-weighted
    mean, falling back to the last task's weight where the Fishers vanish."""
    if not weights or len(weights) != len(fishers):
        raise ValueError(
            f"fisher_weighted_merge needs one Fisher per weight set, got {len(weights)} and {len(fishers)}"
        )
    if not eps > 0:
        raise ValueError(f"fisher_weighted_merge eps must be > 0, got {eps!r}")
    out: dict[str, Tensor] = {}
    for name, last in weights[-1].items():
        numerator = eps * last
        denominator = torch.full_like(last, eps)
        for t, (w, f) in enumerate(zip(weights, fishers, strict=True)):
            if name not in w or name not in f:
                raise ValueError(f"fisher_weighted_merge: task {t} has no weight or Fisher for {name!r}")
            if f[name].shape != last.shape or w[name].shape != last.shape:
                raise ValueError(f"fisher_weighted_merge: {name!r} has different shapes across tasks")
            if float(f[name].min()) < 0:
                raise ValueError(f"fisher_weighted_merge: task {t}'s Fisher of {name!r} is negative")
            numerator = numerator + f[name] * w[name]
            denominator = denominator + f[name]
        out[name] = numerator / denominator
    return out


class FisherMerge(ConsolidatorBase):
    """At each task's end: the weights and their diagonal Fisher (from the task's data, like
    ``EWC``, or given), then the Fisher-weighted merge of every task so far as the proposal."""

    def __init__(self, *, fisher_samples: int = 1000, fisher_kind: FisherKind = FisherKind.TRUE, eps: float = 1e-8,
                 seed: int = 0) -> None:  # fmt: skip
        self.fisher_samples = fisher_samples
        self.fisher_kind = fisher_kind
        self.eps = eps
        self.seed = seed
        self.weights: list[dict[str, Tensor]] = []
        self.fishers: list[dict[str, Tensor]] = []

    def add(self, parameters: Parameters, fisher: Mapping[str, Tensor | npt.NDArray[np.float32]]) -> None:
        """Record one task's weights and Fisher directly."""
        params = {k: v.detach().clone() for k, v in parameters.items()}
        self.weights.append(params)
        self.fishers.append({k: torch.as_tensor(np.asarray(fisher[k])).to(v) for k, v in params.items()})

    def end_task(self, task_id: str, parameters: Parameters, data: TaskData | None = None) -> None:
        self.add(parameters, task_fisher("FisherMerge", task_id, parameters, data, samples=self.fisher_samples,
                                         kind=self.fisher_kind, seed=self.seed))  # fmt: skip

    def proposed_weights(self) -> dict[str, Tensor]:
        if len(self.weights) < 2:
            return {}
        return fisher_weighted_merge(self.weights, self.fishers, self.eps)
