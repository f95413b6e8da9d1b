"""The consolidation protocol: one interface for every method that protects or restores
what was learned.

A consolidator is told when a task (or a drift-delimited block) begins and ends, observes
the learning steps, and contributes a **penalty** for a PyTorch module (a loss term) and/or
a **pull** on STDP weights (the per-step change an online learner applies)::

    consolidation.begin_task("t1", params)
    for x, y in batches:                                 # prepare, penalty, observe: see train_step
        train_step(consolidation, optimiser, params, model(x), y, inputs=x)
    consolidation.end_task("t1", params, TaskData(x_task, y_task, log_prob))
    apply_proposed_weights(consolidation, params)        # methods that rewrite weights (merging)

The members, one file each: ``ewc.EWC`` (separate and online modes), ``ewc.OnlineFisherEWC``
(the Fisher from a ``FisherAccumulator`` EMA fed during training), ``si.SI``,
``replay.ExperienceReplay`` (a reservoir buffer), ``merge.FisherMerge``,
``neuromodulation.GammaGatedFisherEWC`` (a gain from training signals scales Fisher
accumulation), ``drift.PageHinkley`` (task-free boundaries) and ``sleep`` (replay during
SLEEP, driven by the phase orchestrator, ``neurosim.phases.orchestrator``).

Plugins return contributions; ``Consolidation`` adds them up. None mutates another's state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import torch

Tensor = torch.Tensor
Parameters = Mapping[str, Tensor]


class TrainingSignals(NamedTuple):
    """What a training step says about how learning goes (neuromodulation reads these)."""

    loss: float | None = None
    accuracy: float | None = None
    gradient_norm: float | None = None
    entropy: float | None = None  # mean predictive entropy (nats)
    reward: float | None = None  # a reward / dopamine-like signal (reward-modulated STDP)


class LearningStep(NamedTuple):
    """One observed learning step (a mini-batch, or one STDP sample)."""

    gradients: Mapping[str, Tensor]  # d task loss / d theta, mean over the batch
    deltas: Mapping[str, Tensor] = {}  # theta after the step - theta before (SI needs them)
    batch_size: int = 1
    inputs: Tensor | None = None  # the step's samples (experience replay may store them)
    labels: Tensor | None = None
    tasks: Tensor | None = None  # each sample's task index (task-incremental heads)
    signals: TrainingSignals = TrainingSignals()


class TaskData(NamedTuple):
    """A task's training data at its end: what methods estimating a Fisher or storing
    samples need. ``log_prob(x)`` gives the model's ``(batch, classes)`` log p(y|x) from the
    live parameters; ``task`` is the task's index (replay keeps it for task heads)."""

    inputs: Tensor
    labels: Tensor
    log_prob: Callable[[Tensor], Tensor] | None = None
    task: int = 0


@runtime_checkable
class Consolidator(Protocol):
    """The protocol every consolidation method implements (``ConsolidatorBase`` gives no-op
    defaults for the hooks a method does not use)."""

    wants_deltas: bool  # observe() needs LearningStep.deltas (the loop then keeps a copy)

    def begin_task(self, task_id: str, parameters: Parameters) -> None:
        """A task starts: note the parameters' values (an anchor, a path integral's start)."""

    def prepare(self, logits: Tensor, labels: Tensor, parameters: Parameters) -> None:
        """Before the backward pass of a step, for a method that needs the graph (per-sample gradients, sampled
        labels)."""

    def observe(self, step: LearningStep) -> None:
        """After a step: its task gradients, weight changes and training signals."""

    def end_task(self, task_id: str, parameters: Parameters, data: TaskData | None = None) -> None:
        """A task ends (leaving LEARNING): consolidate it, with its data where the method needs it."""

    def penalty(self, parameters: Parameters) -> Tensor | None:
        """The loss term protecting earlier tasks, for a PyTorch module (None: none)."""

    def pull(self, name: str, weights: Tensor) -> Tensor | None:
        """New weights after the pull towards earlier tasks' values, for STDP weights (None: no pull)."""

    def proposed_weights(self) -> dict[str, Tensor]:
        """Weights the method wants set now (merging), by parameter name; empty for most methods."""

    def close(self) -> None:
        """Release what the method holds (accumulators' writer threads)."""


class ConsolidatorBase:
    """No-op defaults: a method overrides only the hooks it uses."""

    wants_deltas = False

    def begin_task(self, task_id: str, parameters: Parameters) -> None:
        """A task (or a drift-delimited block) starts learning."""

    def prepare(self, logits: Tensor, labels: Tensor, parameters: Parameters) -> None:
        """Before the training backward: take what is needed from the step's graph."""

    def observe(self, step: LearningStep) -> None:
        """After a learning step."""

    def end_task(self, task_id: str, parameters: Parameters, data: TaskData | None = None) -> None:
        """A learning boundary: consolidate the task."""

    def penalty(self, parameters: Parameters) -> Tensor | None:
        """A differentiable loss term for a PyTorch module; None: nothing to add."""
        return None

    def pull(self, name: str, weights: Tensor) -> Tensor | None:
        """The per-step change an online (STDP) learner applies to ``name``; None: none."""
        return None

    def proposed_weights(self) -> dict[str, Tensor]:
        """Weights the method proposes after ``end_task`` (merging); empty: keep them."""
        return {}

    def close(self) -> None:
        """Release what the method holds (writer threads); it is not used afterwards."""


class Consolidation(ConsolidatorBase):
    """Several consolidators as one: every event goes to each member (in order), penalties
    and pulls are summed, proposals are combined (a later member's wins a shared name)."""

    def __init__(self, members: Sequence[Consolidator] = ()) -> None:
        for m in members:
            if not isinstance(m, Consolidator):
                raise TypeError(f"{type(m).__name__} does not implement the Consolidator protocol")
        self.members: tuple[Consolidator, ...] = tuple(members)

    @property
    def wants_deltas(self) -> bool:  # type: ignore[override]
        return any(m.wants_deltas for m in self.members)

    def begin_task(self, task_id: str, parameters: Parameters) -> None:
        for m in self.members:
            m.begin_task(task_id, parameters)

    def prepare(self, logits: Tensor, labels: Tensor, parameters: Parameters) -> None:
        for m in self.members:
            m.prepare(logits, labels, parameters)

    def observe(self, step: LearningStep) -> None:
        for m in self.members:
            m.observe(step)

    def end_task(self, task_id: str, parameters: Parameters, data: TaskData | None = None) -> None:
        for m in self.members:
            m.end_task(task_id, parameters, data)

    def penalty(self, parameters: Parameters) -> Tensor | None:
        terms = [p for m in self.members if (p := m.penalty(parameters)) is not None]
        return torch.stack(terms).sum() if terms else None

    def pull(self, name: str, weights: Tensor) -> Tensor | None:
        terms = [p for m in self.members if (p := m.pull(name, weights)) is not None]
        if not terms:
            return None
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return total

    def proposed_weights(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for m in self.members:
            out.update(m.proposed_weights())
        return out

    def close(self) -> None:
        for m in self.members:
            m.close()


class LearnerFeed:
    """A consolidator fed by a spiking learner: give it as ``STDPOnlineLearner.accumulator``
    (a gradient sink); each step's surrogate gradients become a ``LearningStep`` whose deltas
    are the weights' change since the previous step (so SI's path integral, a gamma-gated
    Fisher or any other observer runs on STDP learning). ``signals`` gives the step's
    training signals (a reward, say), if any. The learner then takes its PyTorch path; a
    ``FisherAccumulator`` given directly keeps the compiled one."""

    def __init__(self, method: Consolidator, weights: Callable[[], Tensor], name: str,
                 signals: Callable[[], TrainingSignals] | None = None) -> None:  # fmt: skip
        self.method, self.weights, self.name, self.signals = method, weights, name, signals
        self._previous: Tensor | None = None

    async def update(self, gradients: Mapping[str, Tensor] | Mapping[str, object]) -> None:
        """A spiking learner's step gradients (the ``GradientSink`` interface): ``observe_step``."""
        self.observe_step(gradients)

    def observe_step(self, gradients: Mapping[str, Tensor] | Mapping[str, object]) -> None:
        """Hand the method one ``LearningStep``: these gradients and the weight change since the last step."""
        now = self.weights().detach().clone()
        before = self._previous if self._previous is not None else now
        self._previous = now
        tensors = {k: v if isinstance(v, Tensor) else torch.as_tensor(v) for k, v in gradients.items()}
        signals = self.signals() if self.signals is not None else TrainingSignals()
        self.method.observe(LearningStep(tensors, {self.name: now - before}, 1, signals=signals))


class StepOutcome(NamedTuple):
    """What ``train_step`` did: the task loss and the seconds the method's hooks took."""

    loss: float
    consolidation_s: float  # prepare + observe: the cost of estimating Fisher / importance


def train_step(method: Consolidator, optimiser: torch.optim.Optimizer, parameters: Parameters, logits: Tensor,
               labels: Tensor, *, inputs: Tensor | None = None,
               tasks: Tensor | None = None) -> StepOutcome:  # fmt: skip
    """One optimiser step on the cross-entropy of ``logits`` plus the method's penalty, each
    hook where it belongs: ``prepare`` while the graph exists; the task gradients recorded
    before the penalty's are added (Fisher and SI's importance are of the task loss alone);
    a copy of the weights before the step only when the method observes deltas."""
    t0 = time.perf_counter()
    method.prepare(logits, labels, parameters)
    spent = time.perf_counter() - t0
    optimiser.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()  # type: ignore[no-untyped-call]
    gradients = {k: p.grad.detach().clone() for k, p in parameters.items() if p.grad is not None}
    penalty = method.penalty(parameters)
    if penalty is not None:
        penalty.backward()  # type: ignore[no-untyped-call]
    before = {k: p.detach().clone() for k, p in parameters.items()} if method.wants_deltas else {}
    optimiser.step()
    t0 = time.perf_counter()
    deltas = {k: parameters[k].detach() - before[k] for k in before}
    value = float(loss.detach())
    method.observe(LearningStep(gradients, deltas, len(labels), inputs=inputs, labels=labels, tasks=tasks,
                                signals=TrainingSignals(loss=value)))  # fmt: skip
    return StepOutcome(value, spent + time.perf_counter() - t0)


@torch.no_grad()
def apply_proposed_weights(method: Consolidator, parameters: Parameters) -> None:
    """Copy the weights the method proposes at a task's end (merging) into ``parameters``."""
    for name, weights in method.proposed_weights().items():
        parameters[name].copy_(weights)


def require_data(method: str, task_id: str, data: TaskData | None, *, log_prob: bool = False) -> TaskData:
    """The task's data, or a precise error naming the method and what it needs."""
    if data is None:
        raise ValueError(f"{method}.end_task({task_id!r}) needs the task's data (TaskData)")
    if log_prob and data.log_prob is None:
        raise ValueError(f"{method}.end_task({task_id!r}) needs TaskData.log_prob to estimate the Fisher")
    if data.inputs.shape[0] != data.labels.shape[0]:
        raise ValueError(
            f"{method}.end_task({task_id!r}): {data.inputs.shape[0]} inputs but {data.labels.shape[0]} labels"
        )
    return data
