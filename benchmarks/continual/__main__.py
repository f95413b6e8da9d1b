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
        Method.EWC: [1e4, 1e5, 1e6, 1e7, 1e8],
        Method.ONLINE_EWC: [1e4, 1e5, 1e6, 1e7, 1e8],
        Method.ONLINE_FISHER_EWC: [1e3, 1e4, 1e5, 1e6, 1e7],
        Method.SI: [0.1, 1.0, 10.0, 100.0, 1e3],
    },
    ProtocolName.PERMUTED_DOMAIN_IL: {
        Method.EWC: [1e2, 1e3, 1e4, 1e5],
        Method.ONLINE_EWC: [1.0, 10.0, 1e2, 1e3, 1e4, 1e5],
        Method.ONLINE_FISHER_EWC: [1e2, 1e3, 1e4, 1e5],
        Method.SI: [0.1, 1.0, 10.0, 100.0],
    },
}
# Iterations per context on the 5,000-image subset: about the published number of epochs
# per context or more (split: 2000 x 128 / 12,000 = 21 epochs, here 300 x 128 / 705 = 54;
# permuted: 5000 x 128 / 60,000 = 10.7, here 300 x 128 / 3,600 = 10.7); the published counts
# on full MNIST.
SUBSET_ITERATIONS = {ProtocolName.SPLIT_TASK_IL: 300, ProtocolName.PERMUTED_DOMAIN_IL: 300}


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
    parser.add_argument("--report-only", action="store_true",
                        help="only rebuild continual.md/.json/.png from the per-protocol records in --out")  # fmt: skip
    args = parser.parse_args()
    if args.report_only:
        write_report(args.out)
        return
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = DatasetName.DIGITS if args.quick else args.dataset
    seeds = min(args.seeds, 2) if args.quick else args.seeds
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
    with tqdm(total=total, unit="it", desc="continual benchmark") as bar:
        for name, proto in protos.items():
            t0 = time.perf_counter()
            summaries = evaluate_protocol(proto, dataset, seeds, grids[name], bar, methods=MLP_METHODS)
            save_protocol(args.out, name, proto, dataset, summaries, time.perf_counter() - t0)
    write_report(args.out)


def save_protocol(out: Path, name: ProtocolName, p: Protocol, dataset: DatasetName,
                  summaries: dict[Method, MethodSummary], wall: float) -> None:  # fmt: skip
    """One protocol's results, so protocols can run separately (even in parallel) and combine."""
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "protocol": name.value,
        "dataset": dataset.value,
        "machine": machine_description(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": "python -m benchmarks.continual " + " ".join(sys.argv[1:]),
        "wall_s": wall,
        "settings": {"hidden": p.hidden, "contexts": p.n_contexts, "iterations_per_context": p.iterations,
                     "lr": p.lr, "batch_size": p.batch_size, "fisher_samples": p.fisher_samples},
        "methods": {m.value: s.as_json() for m, s in summaries.items()},
    }  # fmt: skip
    (out / f"continual_{name.value}.json").write_text(json.dumps(record, indent=2) + "\n")


def write_report(out: Path) -> None:
    """continual.json, continual.md and continual.png from the per-protocol records in ``out``."""
    records = {}
    for name in ProtocolName:
        path = out / f"continual_{name.value}.json"
        if path.exists():
            records[name] = json.loads(path.read_text())
    if not records:
        raise SystemExit(f"no per-protocol results (continual_<protocol>.json) in {out}")
    datasets = sorted({r["dataset"] for r in records.values()})
    payload: dict[str, Any] = {
        name.value: {m: {k: v for k, v in r.items() if k != "curve_seed0"} for m, r in rec["methods"].items()}
        for name, rec in records.items()
    }
    payload.update({
        "dataset": ", ".join(datasets),
        "machine": next(iter(records.values()))["machine"],
        "wall_s": sum(r["wall_s"] for r in records.values()),
        "protocols": {n.value: r["settings"] for n, r in records.items()},
        "published": {n.value: {m.value: v for m, v in PUBLISHED[n].items()} for n in records},
    })  # fmt: skip
    (out / "continual.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot(out / "continual.png", {n.value: r["methods"] for n, r in records.items()})
    sections = []
    for name, rec in records.items():
        st = rec["settings"]
        seeds = next(iter(rec["methods"].values()))["seeds"]
        sections.append(
            f"## {name.value}: {st['contexts']} contexts, MLP 2 x {st['hidden']}, {st['iterations_per_context']} "
            f"iterations per context, {seeds} seeds\n\n"
            f"Data set {rec['dataset']}; wall time {rec['wall_s'] / 60:.1f} min; command `{rec['command']}`.\n\n"
            + table(name, rec["methods"])
        )
    first = next(iter(records.values()))
    text = f"""# Continual-learning benchmark: the published regularisation table

Protocol of van de Ven, Tuytelaars & Tolias (2022): average test accuracy over all contexts
after the last one, mean and standard deviation over seeds; strengths chosen on a
validation split (seed {SEARCH_SEED}), never on the test set. Adam, batch 128.
Machine: {first["machine"]}; torch {first["torch"]}, Python {first["python"]}.
How to reproduce, and what each method does: [docs/continual.md](../../docs/continual.md).

"Fisher / importance cost" is the time spent estimating the Fisher information (EWC and
online EWC: a per-sample pass over up to 1,000 training samples after each context;
online-Fisher EWC: the `FisherAccumulator` updates during training plus its snapshots) or
SI's path integral.

{(chr(10) * 2).join(sections)}

![accuracy per context over training](continual.png)
"""
    (out / "continual.md").write_text(text)
    print(f"wrote {out / 'continual.md'}, continual.json, continual.png")


if __name__ == "__main__":
    main()
