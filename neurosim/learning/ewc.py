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
from dataclasses import replace as dataclasses_replace
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from neurosim.learning.consolidation import (
    ConsolidatorBase,
    LearningStep,
    Parameters,
    TaskData,
    require_data,
)
from neurosim.learning.fisher import (
    FisherKind,
    FisherMatrixBase,
    FisherSnapshot,
    InMemoryFisherStore,
    LinearTaps,
    SnapshotReason,
    estimate_fisher,
)
from neurosim.learning.fisher_online import FisherAccumulator, FisherAccumulatorConfig
from neurosim.metrics import Metrics

Tensor = torch.Tensor
FisherLike = Mapping[str, Tensor] | Mapping[str, npt.NDArray[np.float32]]


class EWCMode(enum.StrEnum):
    """``separate``: one anchor and Fisher per task; ``online``: one running, gamma-decayed Fisher (Schwarz
    et al. 2018)."""

    SEPARATE = "separate"
    ONLINE = "online"


@dataclass(frozen=True)
class EWCConfig:
    """EWC settings: the penalty strength ``lambda_`` (``lambda`` in configs), separate or online mode,
    online decay ``gamma``, whether the Fisher comes from the online accumulator's snapshots, and the
    pull rate on STDP weights."""

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
    """One consolidated task (or the online running one): the weights to pull towards and their Fisher."""

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

    def restore_anchors(self, anchors: Mapping[str, Anchor], tasks: list[str]) -> None:
        """Take up the anchors and consolidated tasks of a checkpoint."""
        self._anchors = dict(anchors)
        self._merged = merge_anchors(list(self._anchors.values()))
        self._pull_cache.clear()
        self.tasks = list(tasks)

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


# --------------------------------------------------------------------------- consolidators
def task_fisher(
    method: str,
    task_id: str,
    parameters: Parameters,
    data: TaskData | None,
    *,
    samples: int,
    kind: FisherKind,
    seed: int,
) -> dict[str, npt.NDArray[np.float32]]:
    """The diagonal Fisher of up to ``samples`` of a task's data (a seeded draw, ``seed`` plus
    the task's index), one gradient each: what EWC and merging record at a task's end."""
    data = require_data(method, task_id, data, log_prob=True)
    assert data.log_prob is not None  # checked by require_data; narrows the type
    generator = torch.Generator().manual_seed(seed + data.task)
    n = min(samples, int(data.labels.shape[0]))
    pick = torch.randperm(int(data.labels.shape[0]), generator=generator)[:n]
    return estimate_fisher(parameters, data.log_prob, [(data.inputs[pick], data.labels[pick])], kind=kind,
                           generator=generator)  # fmt: skip


class _Anchored(ConsolidatorBase):
    """The penalty and pull of an ``EWCRegulariser`` (``self.regulariser``), as a consolidator's."""

    regulariser: EWCRegulariser

    def penalty(self, parameters: Parameters) -> Tensor | None:
        return self.regulariser.penalty(parameters) if self.regulariser.anchors else None

    def pull(self, name: str, weights: Tensor) -> Tensor | None:
        return self.regulariser.pull(name, weights)

    def pull_terms(self, name: str, weights: Tensor) -> tuple[Tensor, Tensor] | None:
        return self.regulariser.pull_terms(name, weights)


class EWC(_Anchored):
    """EWC as a consolidator (separate or online mode, ``config.mode``): at each task's end
    the diagonal Fisher of the task's data (``fisher_samples`` samples, one gradient each;
    true Fisher by default: labels drawn from the model) and the parameters become an anchor.
    For a Fisher fed during training instead, use ``OnlineFisherEWC``."""

    def __init__(
        self,
        config: EWCConfig | None = None,
        *,
        fisher_samples: int = 1000,
        fisher_kind: FisherKind = FisherKind.TRUE,
        seed: int = 0,
    ) -> None:
        config = config if config is not None else EWCConfig()
        if config.online_fisher:
            raise ValueError("EWC estimates its Fisher at each task's end; for a Fisher fed online use OnlineFisherEWC")
        if not (isinstance(fisher_samples, int) and fisher_samples >= 1):
            raise ValueError(f"EWC fisher_samples must be a positive integer, got {fisher_samples!r}")
        self.regulariser = EWCRegulariser(config)
        self.fisher_samples = fisher_samples
        self.fisher_kind = fisher_kind
        self.seed = seed

    def end_task(self, task_id: str, parameters: Parameters, data: TaskData | None = None) -> None:
        fisher = task_fisher("EWC", task_id, parameters, data, samples=self.fisher_samples, kind=self.fisher_kind,
                             seed=self.seed)  # fmt: skip
        self.regulariser.consolidate(task_id, parameters, fisher)


@dataclass(frozen=True)
class OnlineFisherFeed:
    """What feeds ``OnlineFisherEWC``'s accumulator at a training step."""

    alpha: float = 0.01  # EMA rate: about the last 1 / alpha updates count
    every: int = 1  # one update per this many training steps (the others cost nothing)
    # EMPIRICAL: the step's task gradient (observed labels, free); TRUE: the gradient at labels
    # drawn from the model's own p(y|x), one extra backward pass per update
    labels: FisherKind = FisherKind.EMPIRICAL
    # False: one squared mean gradient per update, times the batch size; True: the mean of the
    # batch's per-sample squared gradients (``LinearTaps``), one extra backward pass to the
    # layers' outputs per update; needs a model of ``nn.Linear`` layers
    per_sample: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.every, int) and self.every >= 1):
            raise ValueError(f"OnlineFisherFeed.every must be a positive integer, got {self.every!r}")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"OnlineFisherFeed.alpha must be in (0, 1], got {self.alpha!r}")

    def feeds_on(self, step: int) -> bool:
        """Whether training step ``step`` (0: a task's first) updates the accumulator."""
        return step % self.every == 0

    @property
    def uses_task_gradient(self) -> bool:
        """Fed the step's own task gradient (no extra backward pass)."""
        return self.labels is FisherKind.EMPIRICAL and not self.per_sample

    def as_record(self) -> dict[str, float | int | str | bool]:
        """The fields a saved result keeps."""
        return {"fisher_alpha": self.alpha, "fisher_every": self.every, "fisher_labels": self.labels.value,
                "fisher_per_sample": self.per_sample}  # fmt: skip

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> OnlineFisherFeed:
        """The feeding a saved record names; a field older records lack takes its default."""
        return cls(float(record.get("fisher_alpha", cls.alpha)), int(record.get("fisher_every", cls.every)),
                   FisherKind(record.get("fisher_labels", cls.labels)),
                   bool(record.get("fisher_per_sample", cls.per_sample)))  # fmt: skip

    def label(self) -> str:
        """In words, as tables print it."""
        return (f"EMA rate {self.alpha:g}" + ("" if self.every == 1 else f", every {self.every} steps")
                + (", sampled labels" if self.labels is FisherKind.TRUE else "")
                + (", per-sample squares" if self.per_sample else ""))  # fmt: skip


def sample_labels(logits: Tensor, generator: torch.Generator | None) -> Tensor:
    """One label per sample, drawn from the model's own p(y|x)."""
    with torch.no_grad():
        return torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator).squeeze(1)


def mean_gradients(loss: Tensor, parameters: Parameters) -> dict[str, Tensor]:
    """The gradient of ``loss``, keeping its graph so the training step can still backpropagate."""
    names = list(parameters)
    grads = torch.autograd.grad(loss, [parameters[n] for n in names], retain_graph=True, allow_unused=True)
    return {n: g for n, g in zip(names, grads, strict=True) if g is not None}


class OnlineFisherEWC(_Anchored):
    """EWC whose Fisher is a ``FisherAccumulator`` EMA fed during training (one accumulator
    per task, snapshotted at the task's end into ``store``), instead of a pass over the data.

    From a PyTorch loop the accumulator is fed by ``observe`` (see ``OnlineFisherFeed``: the
    squared mean gradient times the batch size, which estimates the per-sample Fisher
    ``mean_b g_b^2``: without bias at sampled labels, roughly at observed ones; or per-sample
    squares). A spiking learner feeds ``accumulator`` itself (``STDPOnlineLearner.accumulator``,
    compiled) and takes the pull through ``pull_terms``. With ``config.lambda_ = 0`` it only
    accumulates (the Fisher that sleep protection and diagnostics read) and pulls nothing."""

    def __init__(
        self,
        config: EWCConfig | None = None,
        feed: OnlineFisherFeed | None = None,
        *,
        store: FisherMatrixBase | None = None,
        accumulator: FisherAccumulatorConfig | None = None,
        model: torch.nn.Module | None = None,
        seed: int = 0,
        metrics: Metrics | None = None,
    ) -> None:
        config = config if config is not None else EWCConfig()
        self.feed = feed if feed is not None else OnlineFisherFeed()
        self.store: FisherMatrixBase = store if store is not None else InMemoryFisherStore(keep_last=1)
        self.regulariser = EWCRegulariser(dataclasses_replace(config, online_fisher=True), self.store)
        # by default a snapshot only at the task's end (forced): the EMA at the boundary is the task's Fisher
        self.accumulator_config = accumulator or FisherAccumulatorConfig(
            alpha=self.feed.alpha, min_samples=1, snapshot_every=10**9, max_staleness_steps=10**9
        )
        self.metrics = metrics
        if self.feed.per_sample and model is None:
            raise ValueError("per-sample online Fisher squares need the model: OnlineFisherEWC(..., model=model)")
        self.taps = LinearTaps(model) if self.feed.per_sample and model is not None else None
        self.label_generator = torch.Generator().manual_seed(seed)
        self.accumulators: dict[str, FisherAccumulator] = {}
        self.accumulator: FisherAccumulator | None = None  # the current task's
        self._step = 0
        self._fisher_input: dict[str, Tensor] | None = None

    @property
    def active(self) -> bool:
        """Whether the pull / penalty does anything (an anchor exists and lambda > 0)."""
        return bool(self.regulariser.anchors) and self.regulariser.config.lambda_ > 0

    def begin_task(self, task_id: str, parameters: Parameters) -> None:
        self._step = 0
        acc = self.accumulators.get(task_id)
        if acc is None:
            acc = FisherAccumulator(self.accumulator_config, self.store, task_id, metrics=self.metrics)
            self.accumulators[task_id] = acc
        self.accumulator = acc

    def prepare(self, logits: Tensor, labels: Tensor, parameters: Parameters) -> None:
        """What a fed step needs from the graph before the training backward frees it: the
        mean gradient at sampled labels, or per-sample squares (none for the task gradient)."""
        self._fisher_input = None
        if self.accumulator is None or not self.feed.feeds_on(self._step) or self.feed.uses_task_gradient:
            return
        targets = sample_labels(logits, self.label_generator) if self.feed.labels is FisherKind.TRUE else labels
        loss = torch.nn.functional.cross_entropy(logits, targets)
        if not self.feed.per_sample:
            self._fisher_input = mean_gradients(loss, parameters)
        else:
            assert self.taps is not None  # required at construction for per_sample
            self._fisher_input = self.taps.per_sample_squares(loss, len(labels))

    def observe(self, step: LearningStep) -> None:
        if self.accumulator is None:
            raise RuntimeError("OnlineFisherEWC.observe before begin_task()")
        if self.feed.feeds_on(self._step):
            fed, self._fisher_input = self._fisher_input, None
            if fed is None:
                if not self.feed.uses_task_gradient:
                    raise ValueError("this online Fisher feed needs prepare(logits, labels, parameters) each fed step")
                fed = dict(step.gradients)
            if self.feed.per_sample:
                self.accumulator.fold_squares(fed)
            else:
                # B * mean_b(g)^2 estimates the per-sample Fisher mean_b(g^2) (see the class docs)
                scale = math.sqrt(step.batch_size)
                self.accumulator.fold({k: g * scale for k, g in fed.items()})
        self._step += 1

    def snapshot_pending(self, reason: SnapshotReason = SnapshotReason.SLEEP) -> None:
        """Snapshot every accumulator with unsnapshotted steps (entering SLEEP)."""
        for acc in self.accumulators.values():
            if acc.pending_steps > 0:
                acc.snapshot_now(reason)

    async def snapshot_pending_async(self, reason: SnapshotReason = SnapshotReason.SLEEP) -> None:
        """``snapshot_pending`` without blocking the event loop on the writes."""
        for acc in self.accumulators.values():
            if acc.pending_steps > 0:
                await acc.force_snapshot(reason)

    def end_task(self, task_id: str, parameters: Parameters, data: TaskData | None = None) -> None:
        acc = self._ending(task_id)
        if acc is not None:
            self._consolidate(task_id, acc, acc.snapshot_now(SnapshotReason.FORCED), parameters)

    async def end_task_async(self, task_id: str, parameters: Parameters) -> None:
        """``end_task`` without blocking the event loop on the snapshot's write (a phase listener)."""
        acc = self._ending(task_id)
        if acc is not None:
            self._consolidate(task_id, acc, await acc.force_snapshot(SnapshotReason.FORCED), parameters)

    def _ending(self, task_id: str) -> FisherAccumulator | None:
        acc = self.accumulators.get(task_id)
        return acc if acc is not None and acc.stats().steps > 0 else None

    def _consolidate(
        self, task_id: str, acc: FisherAccumulator, snapshot: FisherSnapshot, parameters: Parameters
    ) -> None:
        self.regulariser.consolidate(task_id, parameters, snapshot.arrays)
        if self.accumulator is acc:
            self.accumulator = None

    def stored_fishers(self, name: str) -> dict[str, npt.NDArray[np.float32]]:
        """Each task's latest stored Fisher of ``name``, in the order the tasks began (tasks
        with no snapshot yet are left out)."""
        out = {}
        for task_id in self.accumulators:
            try:
                out[task_id] = self.store.load(task_id).arrays[name]
            except KeyError:
                continue
        return out

    def close(self) -> None:
        for acc in self.accumulators.values():
            acc.close()
