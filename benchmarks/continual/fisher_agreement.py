"""How closely the online Fisher EMA tracks the true Fisher that EWC computes, on one context.

Online-Fisher EWC (``FisherAccumulator``) and EWC differ only in the diagonal Fisher that
weights the penalty ``lambda/2 sum_i F_i (theta_i - theta*_i)^2``. This script trains the
benchmark's MLP on one context, as the protocol does, while feeding one accumulator per
``--online alpha:every`` setting the way online-Fisher EWC feeds it (each fed step's
mini-batch task gradient times ``sqrt(batch)``). At the context's end it computes EWC's
estimate (the true Fisher over ``fisher_samples`` training samples), the empirical Fisher
(observed labels) over as many, and a reference: the true Fisher over
``--reference-samples``. Every estimate is then held against the reference with
``neurosim.learning.fisher.compare_fisher``: its scale (sum over the reference's sum; ``1 /
scale`` says how far to move lambda when switching estimates) and the Pearson correlations
of ``log F`` (does it rank parameters as the reference does) and of ``F`` (the largest entries).

    .venv/bin/python -m benchmarks.continual.fisher_agreement --dataset mnist \\
        --protocol permuted_domain_il --iterations 5000 \\
        --out benchmarks/results/mnist/fisher_agreement_permuted_5000.md

writes the table (and a scatter plot beside it, ``.png``).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from prometheus_client import CollectorRegistry
from torch import nn
from tqdm.auto import tqdm

from benchmarks.common import machine_description
from benchmarks.continual.protocol import (
    MNIST_MISSING_HINT,
    Context,
    DatasetName,
    OnlineFisher,
    Protocol,
    ProtocolName,
    build_contexts,
    default_iterations,
    load_dataset,
    masked_logits,
    minibatches,
    mlp,
    protocol,
    task_logits,
)
from neurosim.datasets.mnist import MNISTUnavailable
from neurosim.learning.consolidation import LearningStep
from neurosim.learning.ewc import EWCConfig, OnlineFisherEWC
from neurosim.learning.fisher import FisherAgreement, FisherKind, compare_fisher, estimate_fisher, flatten_fisher
from neurosim.metrics import Metrics

Tensor = torch.Tensor
Fisher = dict[str, npt.NDArray[np.float32]]
DEFAULT_ONLINE = (
    OnlineFisher(0.1, 10),
    OnlineFisher(0.05, 20),
    OnlineFisher(0.02, 20),
    OnlineFisher(0.01, 1),
    OnlineFisher(0.1, 50, FisherKind.TRUE),
    OnlineFisher(0.1, 50, FisherKind.TRUE, per_sample=True),
    OnlineFisher(0.3, 50, FisherKind.TRUE, per_sample=True),
)


@dataclass(frozen=True)
class Agreement:
    """One estimate held against the reference Fisher."""

    estimate: str
    agreement: FisherAgreement
    seconds: float  # to compute it (for an online EMA: its updates during training)


def parse_online(text: str) -> OnlineFisher:
    try:
        alpha, every, *options = text.split(":")
        labels = [FisherKind(o) for o in options if o != "per-sample"]
        if len(labels) > 1 or options.count("per-sample") > 1:
            raise ValueError("each option at most once")
        kind = labels[0] if labels else FisherKind.EMPIRICAL
        setting = OnlineFisher(float(alpha), int(every), kind, per_sample="per-sample" in options)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ALPHA:EVERY[:empirical|true][:per-sample], e.g. "
                                         f"0.05:20 or 0.1:50:true:per-sample ({error})") from error  # fmt: skip
    return setting


def measure(proto: Protocol, context: Context, online: tuple[OnlineFisher, ...], reference_samples: int,
            seed: int) -> tuple[list[Agreement], dict[str, Fisher]]:  # fmt: skip
    """Train on ``context`` feeding the accumulators; the agreements, and each estimate's entries."""
    torch.manual_seed(seed)
    model = mlp(context.train_x.shape[1], proto.hidden, 10)
    params = dict(model.named_parameters())
    optimiser = torch.optim.Adam(model.parameters(), lr=proto.lr, betas=(0.9, 0.999))
    metrics = Metrics(CollectorRegistry())
    # lambda 0: the consolidators only accumulate; each draws its own label stream (seeded as a run
    # of its own), so its draws do not depend on the other settings measured beside it
    fishers = [OnlineFisherEWC(EWCConfig(lambda_=0.0), o, model=model, seed=seed, metrics=metrics) for o in online]
    for f in fishers:
        f.begin_task(context.name, params)
    online_s = [0.0] * len(online)
    rng = np.random.default_rng(seed)
    heads = [context.classes]
    owner = torch.zeros(len(context.train_y), dtype=torch.long)
    batches = minibatches(len(context.train_y), proto.batch_size, proto.iterations, rng)
    for idx in tqdm(batches, unit="it", desc=f"training {context.name}"):
        index = torch.from_numpy(idx)
        logits, labels = task_logits(model, context.train_x[index], context.train_y[index], owner[index], heads,
                                      proto.task_incremental)  # fmt: skip
        for k, f in enumerate(fishers):
            t0 = time.perf_counter()
            f.prepare(logits, labels, params)  # as online-Fisher EWC feeds it
            online_s[k] += time.perf_counter() - t0
        optimiser.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(logits, labels).backward()  # type: ignore[no-untyped-call]
        task = {name: p.grad.detach() for name, p in params.items() if p.grad is not None}
        for k, f in enumerate(fishers):
            t0 = time.perf_counter()
            f.observe(LearningStep(task, batch_size=len(idx)))
            online_s[k] += time.perf_counter() - t0
        optimiser.step()

    def log_prob(x: Tensor) -> Tensor:
        return torch.log_softmax(masked_logits(model(x), context.classes), dim=1)

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(context.train_y), generator=generator)

    def full_batch(kind: FisherKind, pick: Tensor) -> tuple[Fisher, float]:
        t0 = time.perf_counter()
        fisher = estimate_fisher(params, log_prob, [(context.train_x[pick], context.train_y[pick])], kind=kind,
                                 generator=generator)  # fmt: skip
        return fisher, time.perf_counter() - t0

    # EWC's samples from the front of one permutation, the reference's from its back: disjoint
    # when the context has enough, so the reference is not the estimate being judged
    n_ewc = min(proto.fisher_samples, len(context.train_y))
    reference, _ = full_batch(FisherKind.TRUE, order[-min(reference_samples, len(context.train_y)) :])
    estimates: dict[str, tuple[Fisher, float]] = {
        f"true Fisher, {n_ewc} samples (EWC)": full_batch(FisherKind.TRUE, order[:n_ewc]),
        f"empirical Fisher, {n_ewc} samples": full_batch(FisherKind.EMPIRICAL, order[:n_ewc]),
    }
    for setting, fisher, seconds in zip(online, fishers, online_s, strict=True):
        label = (f"online EMA, rate {setting.alpha:g}, every {setting.every} steps"
                 + (", sampled labels" if setting.labels is FisherKind.TRUE else "")
                 + (", per-sample squares" if setting.per_sample else ""))  # fmt: skip
        assert fisher.accumulator is not None
        estimates[label] = ({k: v.cpu().numpy() for k, v in fisher.accumulator.fisher.items()}, seconds)
        fisher.close()
    rows = [
        Agreement(name, compare_fisher(values, reference), seconds) for name, (values, seconds) in estimates.items()
    ]
    return rows, {"reference": reference, **{name: values for name, (values, _) in estimates.items()}}


def table(rows: list[Agreement]) -> str:
    lines = ["| estimate | scale (sum / reference sum) | lambda factor (1 / scale) | log correlation | "
             "linear correlation | seconds |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        a = r.agreement
        lines.append(f"| {r.estimate} | {a.scale:.3g} | {1 / a.scale:.3g} | {a.log_correlation:.3f} | "
                     f"{a.linear_correlation:.3f} | {r.seconds:.1f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(path: Path, fishers: dict[str, Fisher], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = {name: flatten_fisher(f) for name, f in fishers.items()}
    reference = entries["reference"]
    names = [n for n in entries if n != "reference"]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4 * rows), squeeze=False, sharex=True, sharey=True)
    rng = np.random.default_rng(0)
    shown = rng.choice(reference.size, size=min(20000, reference.size), replace=False)
    positive = reference[shown] > 0
    lo, hi = reference[shown][positive].min(), reference[shown].max()
    for ax, name in zip(axes.flat, names, strict=False):
        values = entries[name][shown]
        keep = positive & (values > 0)
        ax.loglog(reference[shown][keep], values[keep], ",", alpha=0.4)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="equal")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("reference: true Fisher")
        ax.set_ylabel("estimate")
        ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=DatasetName, choices=list(DatasetName), default=DatasetName.MNIST_SUBSET)
    parser.add_argument("--protocol", type=ProtocolName, choices=list(ProtocolName), required=True)
    parser.add_argument("--iterations", type=int, default=None, help="per context (default: as the benchmark)")
    parser.add_argument("--context", type=int, default=0, help="which context to train on (0: the first)")
    parser.add_argument("--online", type=parse_online, nargs="+", default=list(DEFAULT_ONLINE),
                        metavar="ALPHA:EVERY[:LABELS]", help="accumulator feedings to measure")  # fmt: skip
    parser.add_argument("--reference-samples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1000, help="a validation seed: this informs the search")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the table here (and the plot as .png)")
    args = parser.parse_args()
    if (args.iterations is not None and args.iterations < 1) or args.reference_samples < 1:
        parser.error("--iterations and --reference-samples must be >= 1")
    try:
        proto = protocol(args.protocol, iterations=args.iterations or default_iterations(args.protocol, args.dataset))
        load_dataset(args.dataset)
    except MNISTUnavailable as error:
        parser.error(f"{error}\n{MNIST_MISSING_HINT}")
    if not 0 <= args.context < proto.n_contexts:
        parser.error(f"--context must be in 0 ... {proto.n_contexts - 1}")
    torch.set_num_threads(args.threads)
    context = build_contexts(proto, args.dataset)[args.context]
    t0 = time.perf_counter()
    rows, entries = measure(proto, context, tuple(args.online), args.reference_samples, args.seed)
    n_ref = min(args.reference_samples, len(context.train_y))
    disjoint = "disjoint from" if n_ref + proto.fisher_samples <= len(context.train_y) else "overlapping"
    text = table(rows)
    print(text, end="")
    if args.out is not None:
        title = (f"{proto.name.value}, {args.dataset.value}, context {context.name}, "
                 f"{proto.iterations} iterations, seed {args.seed}; "
                 f"reference: true Fisher over {n_ref} training samples, {disjoint} EWC's")  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# Fisher estimates against the true Fisher\n\n{title}.\n\n{text}\n"
                            f"{time.perf_counter() - t0:.0f} s on {machine_description()}. Written by "
                            "`python -m benchmarks.continual.fisher_agreement`; see docs/continual.md.\n")  # fmt: skip
        plot(args.out.with_suffix(".png"), entries, title)
        print(f"written to {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
