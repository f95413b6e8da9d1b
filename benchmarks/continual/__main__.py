"""Run the continual-learning regularisation benchmark and write its table, JSON and plot.

    .venv/bin/python -m benchmarks.continual                      # the full benchmark (about 40 min, 2 cores)
    .venv/bin/python -m benchmarks.continual --quick --out /tmp/c  # a smoke run on 8x8 digits (about 1 min)
    .venv/bin/python -m benchmarks.continual --dataset mnist       # full MNIST, if the loader's cache has it

For each protocol: the regularisation strength of every regularised method is chosen on a
validation split (held out of each context's training data, one search seed), then every
method runs with ``--seeds`` seeds and is scored on the test sets. Writes
``continual.md``, ``continual.json`` and ``continual.png`` to ``--out``
(default ``benchmarks/results``). See ``docs/continual.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import machine_description
from benchmarks.continual.protocol import (
    MLP_METHODS,
    PUBLISHED,
    PUBLISHED_ITERATIONS,
    DatasetName,
    Method,
    Protocol,
    ProtocolName,
    protocol,
)
from benchmarks.continual.report import SEARCH_SEED, MethodSummary, evaluate_protocol, plot, table

RESULTS = Path(__file__).resolve().parents[1] / "results"

# Strength grids of the validation search (lambda for the EWC variants, c for SI).
GRIDS: dict[ProtocolName, dict[Method, list[float]]] = {
    ProtocolName.SPLIT_TASK_IL: {
        Method.EWC: [1e2, 1e3, 1e4, 1e5, 1e6],
        Method.ONLINE_EWC: [1e2, 1e3, 1e4, 1e5, 1e6],
        Method.ONLINE_FISHER_EWC: [1e2, 1e3, 1e4, 1e5, 1e6],
        Method.SI: [1.0, 10.0, 100.0, 1e3, 1e4],
    },
    ProtocolName.PERMUTED_DOMAIN_IL: {
        Method.EWC: [1e1, 1e2, 1e3, 1e4],
        Method.ONLINE_EWC: [1e1, 1e2, 1e3, 1e4],
        Method.ONLINE_FISHER_EWC: [1e1, 1e2, 1e3, 1e4],
        Method.SI: [1.0, 10.0, 100.0, 1e3],
    },
}
# Iterations per context on the 5,000-image subset: about the published number of epochs
# per context (split: 2000 x 128 / 12,000 = 21 epochs; permuted: 5000 x 128 / 60,000 = 10.7),
# rounded up; the published counts on full MNIST.
SUBSET_ITERATIONS = {ProtocolName.SPLIT_TASK_IL: 500, ProtocolName.PERMUTED_DOMAIN_IL: 300}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=DatasetName, choices=list(DatasetName), default=DatasetName.MNIST_SUBSET)
    parser.add_argument("--protocols", type=ProtocolName, nargs="+", choices=list(ProtocolName),
                        default=list(ProtocolName))  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=None, help="per context (default: see the docs)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 8x8 digits, 100 hidden units, 20 iterations per context, 2 seeds, "
                             "2-value grids")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: PyTorch's)")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = DatasetName.DIGITS if args.quick else args.dataset
    seeds = min(args.seeds, 2) if args.quick else args.seeds
    wall0 = time.perf_counter()
    protos: dict[ProtocolName, Protocol] = {}
    grids: dict[ProtocolName, dict[Method, list[float]]] = {}
    for name in args.protocols:
        if args.quick:  # the pipeline end to end, at toy size: 100 hidden units, 20 iterations
            grids[name] = {m: values[1:3] for m, values in GRIDS[name].items()}
            protos[name] = dataclasses.replace(
                protocol(name, iterations=args.iterations or 20, hidden=100), fisher_samples=100
            )
        else:
            default = PUBLISHED_ITERATIONS[name] if dataset is DatasetName.MNIST else SUBSET_ITERATIONS[name]
            grids[name] = GRIDS[name]
            protos[name] = protocol(name, iterations=args.iterations or default)
    total = sum(
        p.iterations * p.n_contexts * (seeds * len(MLP_METHODS) + sum(len(v) for v in grids[n].values()))
        for n, p in protos.items()
    )
    results: dict[ProtocolName, dict[Method, MethodSummary]] = {}
    with tqdm(total=total, unit="it", desc="continual benchmark") as bar:
        for name, proto in protos.items():
            results[name] = evaluate_protocol(proto, dataset, seeds, grids[name], bar, methods=MLP_METHODS)
    wall = time.perf_counter() - wall0
    write(args, dataset, protos, results, wall)


def write(args: argparse.Namespace, dataset: DatasetName, protos: dict[ProtocolName, Protocol],
          results: dict[ProtocolName, dict[Method, MethodSummary]], wall: float) -> None:  # fmt: skip
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_description()
    payload: dict[str, Any] = {
        name.value: {m.value: s.as_json() for m, s in summaries.items()} for name, summaries in results.items()
    }
    payload.update({
        "dataset": dataset.value,
        "machine": machine,
        "wall_s": wall,
        "protocols": {n.value: {"hidden": p.hidden, "contexts": p.n_contexts, "iterations_per_context": p.iterations,
                                "lr": p.lr, "batch_size": p.batch_size, "fisher_samples": p.fisher_samples}
                      for n, p in protos.items()},
        "published": {n.value: {m.value: v for m, v in PUBLISHED[n].items()} for n in protos},
    })  # fmt: skip
    (out / "continual.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot(out / "continual.png", results)
    sections = []
    for name, summaries in results.items():
        p = protos[name]
        sections.append(
            f"## {name.value}: {p.n_contexts} contexts, MLP 2 x {p.hidden}, {p.iterations} iterations per context\n\n"
            + table(p, summaries)
        )
    seeds = len(next(iter(next(iter(results.values())).values())).results)
    text = f"""# Continual-learning benchmark: the published regularisation table

Protocol of van de Ven, Tuytelaars & Tolias (2022): average test accuracy over all contexts
after the last one. Data set: **{dataset.value}**. Mean and standard deviation over {seeds}
seeds; strengths chosen on a validation split (seed {SEARCH_SEED}), never on the test set.
Adam, batch 128. Machine: {machine}; torch {torch.__version__}, Python {platform.python_version()}.
Total wall time {wall / 60:.1f} min. Command: `python -m benchmarks.continual {" ".join(sys.argv[1:])}`.

"Fisher / importance cost" is the time spent estimating the Fisher information (EWC and
online EWC: a per-sample pass over up to 1,000 training samples after each context;
online-Fisher EWC: the `FisherAccumulator` updates during training plus its snapshots) or
SI's path integral.

{chr(10).join(sections)}

![accuracy per context over training](continual.png)
"""
    (out / "continual.md").write_text(text)
    print(f"wrote {out / 'continual.md'}, continual.json, continual.png")


if __name__ == "__main__":
    main()
