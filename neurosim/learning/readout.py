"""Readouts from spike counts: a softmax linear readout and Diehl & Cook's voting readout."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

Tensor = torch.Tensor


class LinearReadout:
    """``p(y | r) = softmax(W r + b)`` on a population's rates ``r`` (Hz, or any fixed scale).

    Gives the class probabilities and the learning signal ``L = d log p(y|r) / d r`` that the
    online eligibility gradient needs. With zero weights (the default, for a readout you fit
    or assign yourself) that signal is zero, and so is every gradient a Fisher accumulator
    gets from it (it warns); ``init_std > 0`` starts from seeded Gaussian weights instead,
    ``init_std`` per unit of the rate scale (e.g. 1e-3 for rates of tens of Hz).
    """

    def __init__(
        self,
        n_inputs: int,
        n_classes: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: str = "cpu",
        init_std: float = 0.0,
        seed: int = 0,
    ) -> None:
        if n_inputs <= 0 or n_classes < 2:
            raise ValueError(f"LinearReadout needs n_inputs > 0 and n_classes >= 2, got {n_inputs}, {n_classes}")
        if not (math.isfinite(init_std) and init_std >= 0):
            raise ValueError(f"LinearReadout init_std must be >= 0, got {init_std!r}")
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn((n_classes, n_inputs), generator=generator, dtype=torch.float64) * init_std
        self.weight = weight.to(dtype=dtype, device=device)
        self.bias = torch.zeros(n_classes, dtype=dtype, device=device)

    @property
    def n_classes(self) -> int:
        """Number of classes (output units)."""
        return int(self.weight.shape[0])

    def logits(self, rates: Tensor) -> Tensor:
        """``W r + b`` for rates ``r`` ``(batch, n_in)``."""
        return rates.to(self.weight.dtype) @ self.weight.T + self.bias

    def log_prob(self, rates: Tensor) -> Tensor:
        """``(batch, n_classes)`` log-probabilities."""
        return torch.log_softmax(self.logits(rates), dim=-1)

    def predict(self, rates: Tensor) -> Tensor:
        """The class with the largest logit, per row."""
        return self.logits(rates).argmax(dim=-1)

    @torch.no_grad()
    def learning_signal(self, rates: Tensor, labels: Tensor) -> Tensor:
        """``d log p(y|r) / d r = W[y] - sum_k p_k W[k]``, shape ``(batch, n_inputs)``."""
        p = torch.softmax(self.logits(rates), dim=-1)
        return self.weight[labels] - p @ self.weight

    def fit(self, rates: Tensor, labels: Tensor, *, epochs: int = 200, weight_decay: float = 1e-4) -> float:
        """Fit by full-batch L-BFGS on the cross-entropy; returns the final training loss."""
        x = rates.to(self.weight.dtype)
        scale = x.abs().max().clamp_min(1e-12)
        w = torch.zeros_like(self.weight, requires_grad=True)
        b = torch.zeros_like(self.bias, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=epochs, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy((x / scale) @ w.T + b, labels) + weight_decay * (w**2).sum()
            loss.backward()  # type: ignore[no-untyped-call]
            return loss

        loss = opt.step(closure)  # type: ignore[no-untyped-call]
        with torch.no_grad():
            self.weight.copy_(w / scale)
            self.bias.copy_(b)
        return float(loss)


class VotingReadout:
    """Diehl & Cook (2015): each neuron is assigned the class to which it responded most on
    average; a sample is classified as the class whose assigned neurons fire most on average.
    Neurons that never fired during assignment stay unassigned (-1) and do not vote."""

    def __init__(self, n_classes: int, n_neurons: int | None = None) -> None:
        self.n_classes = n_classes
        self.assignments: Tensor | None = None
        # running class responses for online use (``observe``): sums of spike counts per class
        self._response_sum: npt.NDArray[np.float64] | None = (
            np.zeros((n_classes, n_neurons)) if n_neurons is not None else None
        )
        self._response_count = np.zeros(n_classes)

    def checkpoint_state(self) -> dict[str, npt.NDArray[Any]]:
        """The responses observed so far and the assignments, as arrays (an experiment checkpoint)."""
        arrays: dict[str, npt.NDArray[Any]] = {"response_count": self._response_count.copy()}
        if self._response_sum is not None:
            arrays["response_sum"] = self._response_sum.copy()
        if self.assignments is not None:
            arrays["assignments"] = self.assignments.numpy().copy()
        return arrays

    def restore_state(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        """Put back what ``checkpoint_state`` returned."""
        self._response_count = np.array(arrays["response_count"], dtype=np.float64)
        self._response_sum = np.array(arrays["response_sum"], dtype=np.float64) if "response_sum" in arrays else None
        self.assignments = torch.from_numpy(np.array(arrays["assignments"])) if "assignments" in arrays else None

    def observe(self, counts: npt.NDArray[np.int64], label: int) -> None:
        """Add one training presentation's spike counts ``(n,)`` to class ``label``'s response."""
        if not 0 <= label < self.n_classes:
            raise ValueError(f"label {label} outside [0, {self.n_classes})")
        if self._response_sum is None:
            self._response_sum = np.zeros((self.n_classes, counts.shape[0]))
        self._response_sum[label] += counts
        self._response_count[label] += 1

    @property
    def observed(self) -> npt.NDArray[np.float64]:
        """How many presentations of each class ``observe`` has seen."""
        return self._response_count.copy()

    def assignments_among(self, classes: Sequence[int]) -> npt.NDArray[np.int64]:
        """Each neuron's class among ``classes``, by its mean observed response; -1 if it never
        responded to any of them (online form of ``assign``)."""
        if self._response_sum is None:
            raise RuntimeError("VotingReadout.assignments_among before observe()")
        means = self._response_sum[classes] / np.maximum(self._response_count[classes], 1)[:, None]
        assigned: npt.NDArray[np.int64] = np.asarray(classes, dtype=np.int64)[means.argmax(0)]
        assigned[means.max(0) <= 0] = -1
        return assigned

    def vote(
        self, responses: npt.NDArray[np.int64], classes: Sequence[int], assigned: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """Predictions among ``classes`` for ``responses`` ``(samples, n)``: the class whose
        assigned neurons fire most on average. A neuron assigned to a class outside
        ``classes`` does not vote, so restricting the choice (task-incremental) can only help
        a response that the wider vote gets right."""
        scores = np.full((responses.shape[0], len(classes)), -1.0)
        for k, c in enumerate(classes):
            members = assigned == c
            if members.any():
                scores[:, k] = responses[:, members].mean(1)
        predicted: npt.NDArray[np.int64] = np.asarray(classes, dtype=np.int64)[scores.argmax(1)]
        return predicted

    def softmax_among(self, classes: Sequence[int], beta: float, dtype: torch.dtype) -> Tensor:
        """``softmax_weights`` of the assignments among ``classes``."""
        return self.softmax_weights(self.assignments_among(classes), beta, dtype=dtype)

    def softmax_weights(self, assigned: npt.NDArray[np.int64], beta: float, *, dtype: torch.dtype) -> Tensor:
        """The vote as a linear softmax readout ``(n_classes, n)``: ``logit_c = beta * mean
        rate of the neurons assigned to c`` (``p(y|x)`` and the surrogate learning signal)."""
        weight = torch.zeros((self.n_classes, assigned.shape[0]), dtype=dtype)
        for c in range(self.n_classes):
            members = np.flatnonzero(assigned == c)
            if members.size:
                weight[c, torch.from_numpy(members)] = beta / members.size
        return weight

    def assign(self, counts: Tensor, labels: Tensor) -> Tensor:
        """``counts`` ``(samples, n)``; returns and keeps the class of every neuron."""
        means = torch.stack(
            [
                counts[labels == c].float().mean(0) if bool((labels == c).any()) else torch.zeros(counts.shape[1])
                for c in range(self.n_classes)
            ]
        )
        assignments = means.argmax(0)
        assignments[means.sum(0) == 0] = -1
        self.assignments = assignments
        return assignments

    def predict(self, counts: Tensor) -> Tensor:
        """The class whose assigned neurons fired most on average, per row of spike counts."""
        if self.assignments is None:
            raise RuntimeError("VotingReadout.predict before assign(): assign neurons to classes first")
        scores = torch.full((counts.shape[0], self.n_classes), -1.0)
        for c in range(self.n_classes):
            members = self.assignments == c
            if bool(members.any()):
                scores[:, c] = counts[:, members].float().mean(1)
        return scores.argmax(1)
