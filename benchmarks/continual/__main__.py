"""Run the continual-learning regularisation benchmark and write its table, JSON and plot.

    .venv/bin/python -m benchmarks.continual                      # the full benchmark (see docs/continual.md)
    .venv/bin/python -m benchmarks.continual --quick --out /tmp/c  # a smoke run on 8x8 digits (about 1 min)
    .venv/bin/python -m benchmarks.continual --dataset mnist       # full MNIST, if the loader's cache has it
    .venv/bin/python -m benchmarks.continual --protocols permuted_domain_il --methods ewc \\
        --grid ewc=1,10 --extend                                   # widen one search, keep the rest

For each protocol: the regularisation strength of every regularised method is chosen on a
validation split (held out of each context's training data; the mean of 3 search runs per
strength on split, 1 on permuted), then every method runs with ``--seeds`` seeds and is
scored on the test sets. Writes ``continual.md``, ``continual.json`` and ``continual.png`` to ``--out``
(default ``benchmarks/results``). See ``docs/continual.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from benchmarks.continual.protocol import (
    MLP_METHODS,
    MNIST_MISSING_HINT,
    PROTOCOL_METHODS,
    PUBLISHED,
    REGULARISED,
    DatasetName,
    Method,
    OnlineFisher,
    Protocol,
    ProtocolName,
    Settings,
    add_feeding_arguments,
    default_iterations,
    load_dataset,
    protocol,
)
from benchmarks.continual.report import (
    SEARCH_SEED,
    SINGLE_RUNS,
    IncompatibleRecord,
    ProtocolRecord,
    evaluate_protocol,
    load_records,
    online_fisher_verdict,
    planned_iterations,
    plot,
    results_without_curves,
    single_runs_section,
    table,
)
from benchmarks.continual.sweep_runs import test_runner
from neurosim.datasets.mnist import MNISTUnavailable
from neurosim.sweep import local_cluster

RESULTS = Path(__file__).resolve().parents[1] / "results"
DOCS = Path(__file__).resolve().parents[2] / "docs"

# Strength grids of the validation search (lambda for the EWC variants, c for SI).
GRIDS: dict[ProtocolName, dict[Method, list[float]]] = {
    ProtocolName.SPLIT_TASK_IL: {
        Method.EWC: [1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12],
        Method.ONLINE_EWC: [1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13],
        Method.ONLINE_FISHER_EWC: [10.0, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11],
        Method.SI: [0.01, 0.1, 1.0, 10.0, 100.0, 1e3],
    },
    ProtocolName.PERMUTED_DOMAIN_IL: {
        Method.EWC: [1.0, 10.0, 1e2, 1e3, 1e4, 1e5],
        Method.ONLINE_EWC: [1.0, 10.0, 1e2, 1e3, 1e4, 1e5],
        Method.ONLINE_FISHER_EWC: [1.0, 10.0, 1e2, 1e3, 1e4, 1e5],
        Method.SI: [0.1, 1.0, 10.0, 100.0, 1e3, 1e4],
    },
    # declared before any test run (commit "consolidation layer"): 5 values each, 3 search runs
    # per value on validation; replay itself has no strength (buffer 2 % of the training data)
    ProtocolName.SPLIT_CLASS_IL: {
        Method.EWC: [1e2, 1e4, 1e6, 1e8, 1e10],
        Method.SI: [0.1, 1.0, 10.0, 100.0, 1e3],
        Method.REPLAY_ONLINE_FISHER_EWC: [1e2, 1e4, 1e6, 1e8, 1e10],
    },
}


# Online-Fisher EWC's EMA rate, checked on validation (3 search runs per strength): on split
# alpha 0.1 (about the last 10 steps) reached 0.996 at lambda 1e10, against 0.989 for 0.01 and
# 0.989 for 0.001 at their best; permuted keeps 0.01 (about the last 100 steps).
FISHER_ALPHA = {ProtocolName.SPLIT_TASK_IL: 0.1, ProtocolName.PERMUTED_DOMAIN_IL: 0.01,
                ProtocolName.SPLIT_CLASS_IL: 0.1}  # fmt: skip
# Validation runs per strength: split's validation sets are small (about 70 images per
# context), so one run's score is mostly noise there; permuted's are 400 per context.
SEARCH_SEEDS = {ProtocolName.SPLIT_TASK_IL: 3, ProtocolName.PERMUTED_DOMAIN_IL: 1, ProtocolName.SPLIT_CLASS_IL: 3}


def parse_grid(text: str) -> tuple[Method, list[float]]:
    """``METHOD=V1,V2,...`` (``--grid``)."""
    method, _, values = text.partition("=")
    try:
        chosen = Method(method.strip())
        strengths = [float(v) for v in values.split(",") if v.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: expected METHOD=V1,V2,... ({error})") from None
    if chosen not in REGULARISED or not strengths or min(strengths) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: METHOD is one of {', '.join(m.value for m in REGULARISED)}, with positive strengths"
        )
    return chosen, strengths


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=DatasetName, choices=list(DatasetName), default=DatasetName.MNIST_SUBSET)
    parser.add_argument("--protocols", type=ProtocolName, nargs="+", choices=list(ProtocolName),
                        default=list(ProtocolName))  # fmt: skip
    parser.add_argument("--methods", type=Method, nargs="+", choices=list(MLP_METHODS), default=list(MLP_METHODS),
                        help="run only these (the saved results of the others are kept)")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--search-seeds", type=int, default=None,
                        help="validation runs per strength (default: split 3, permuted 1)")  # fmt: skip
    parser.add_argument("--grid", type=parse_grid, action="append", default=[], metavar="METHOD=V1,V2,...",
                        help="this strength grid instead of the default (one protocol at a time)")  # fmt: skip
    parser.add_argument("--extend", action="store_true",
                        help="add to the saved results in --out: strengths already searched and test runs "
                             "at the chosen strength are not repeated")  # fmt: skip
    parser.add_argument("--iterations", type=int, default=None, help="per context (default: see the docs)")
    parser.add_argument("--fisher-every", type=positive_int, default=1, metavar="N",
                        help="online-Fisher EWC: feed the accumulator every N-th training step's gradient "
                             "(default 1: every step)")  # fmt: skip
    add_feeding_arguments(parser)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 8x8 digits, 100 hidden units, 20 iterations per context, 2 seeds, "
                             "2-value grids")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: PyTorch's)")
    parser.add_argument("--workers", type=int, default=0,
                        help="run each method's test seeds as a neurosim sweep on a Dask LocalCluster of this "
                             "many worker processes (one thread each; 0: one after the other here)")  # fmt: skip
    parser.add_argument("--report-only", action="store_true",
                        help="only rebuild continual.md/.json/.png from the per-protocol records in --out")  # fmt: skip
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.report_only:
        write_report(args.out)
        return
    if args.seeds < 1 or (args.search_seeds is not None and args.search_seeds < 1):
        parser.error("--seeds and --search-seeds must be >= 1")
    if args.grid and len(args.protocols) > 1:
        parser.error("--grid applies to one protocol: give --protocols with one name")
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = DatasetName.DIGITS if args.quick else args.dataset
    seeds = min(args.seeds, 2) if args.quick else args.seeds
    methods = {n: tuple(m for m in PROTOCOL_METHODS[n] if m in args.methods) for n in args.protocols}
    protos: dict[ProtocolName, Protocol] = {}
    grids: dict[ProtocolName, dict[Method, list[float]]] = {}
    for name in args.protocols:
        if args.quick:  # the pipeline end to end, at toy size: 100 hidden units, 20 iterations
            grids[name] = {m: values[1:3] for m, values in GRIDS[name].items()}
            protos[name] = dataclasses.replace(
                protocol(name, iterations=args.iterations or 20, hidden=100), fisher_samples=100
            )
        else:
            default = default_iterations(name, dataset)
            grids[name] = dict(GRIDS[name])
            protos[name] = protocol(name, iterations=args.iterations or default)
        grids[name].update(dict(args.grid))
    try:  # the data first: a missing data set is a one-line error, not a traceback mid-run
        load_dataset(dataset)
    except MNISTUnavailable as error:
        parser.error(f"{error}\n{MNIST_MISSING_HINT}")
    search_seeds = {n: 1 if args.quick else args.search_seeds or SEARCH_SEEDS[n] for n in protos}
    try:  # before anything runs: a record this run cannot add to is refused now, not hours later
        records = {n: ProtocolRecord.open(args.out, "continual", n, dataset, Settings.of(p)) for n, p in protos.items()}
    except IncompatibleRecord as error:
        parser.error(str(error))
    total = sum(planned_iterations(p, seeds, grids[n], methods[n], search_seeds[n]) for n, p in protos.items())
    command = "python -m benchmarks.continual " + " ".join(sys.argv[1:])
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=total, unit="it", desc="continual benchmark"))
        client = stack.enter_context(local_cluster(args.workers, dashboard_address=":0")) if args.workers else None
        for name, proto in protos.items():
            runner = None
            if client is not None:
                length = proto.iterations * proto.n_contexts
                runner = test_runner(proto, dataset, client, args.out, lambda n=length: bar.update(n))
            t0 = time.perf_counter()
            previous = records[name].previous() if args.extend else {}
            online_fisher = OnlineFisher(FISHER_ALPHA[name], args.fisher_every, args.fisher_labels,
                                         args.fisher_per_sample)  # fmt: skip
            summaries = evaluate_protocol(proto, dataset, seeds, grids[name], bar, methods=methods[name],
                                          search_seeds=search_seeds[name], previous=previous,
                                          online_fisher=online_fisher, test_runner=runner)  # fmt: skip
            records[name].save(name, dataset, Settings.of(proto), command, time.perf_counter() - t0, summaries,
                               PROTOCOL_METHODS[name], extended=args.extend)  # fmt: skip
    write_report(args.out)


def write_report(out: Path) -> None:
    """continual.json, continual.md and continual.png from the per-protocol records in ``out``."""
    records = load_records(out, "continual")
    datasets = sorted({r["dataset"] for r in records.values()})
    payload: dict[str, Any] = results_without_curves(records)
    payload.update({
        "dataset": ", ".join(datasets),
        "machine": next(iter(records.values()))["machine"],
        "wall_s": sum(r["wall_s"] for r in records.values()),
        "protocols": {n.value: r["settings"] for n, r in records.items()},
        "published": {n.value: {m.value: v for m, v in PUBLISHED[n].items()} for n in records},
    })  # fmt: skip
    single_runs = out / f"{SINGLE_RUNS}.json"
    single = json.loads(single_runs.read_text()) if single_runs.exists() else None
    if single is not None:
        payload["published_length_single_runs"] = single
    (out / "continual.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot(out / "continual.png", {n.value: r["methods"] for n, r in records.items()})
    sections = []
    for name, rec in records.items():
        st = rec["settings"]
        seeds = next(iter(rec["methods"].values()))["seeds"]
        searched = {r.get("search_seeds", 1) for r in rec["methods"].values() if r["validation_search"]}
        search = (
            f"Strengths scored by the mean validation accuracy of {' or '.join(map(str, sorted(searched)))} "
            f"search run(s) (seeds from {SEARCH_SEED}); the grids and scores are in the JSON.\n\n"
            if searched
            else ""
        )
        sections.append(
            f"## {name.value}: {st['contexts']} contexts, MLP 2 x {st['hidden']}, {st['iterations_per_context']} "
            f"iterations per context, {seeds} seeds\n\n"
            + search
            + f"Data set {rec['dataset']}; wall time {rec['wall_s'] / 60:.1f} min; command `{rec['command']}`.\n\n"
            + table(name, rec["methods"])
            + online_fisher_verdict(rec["methods"])
        )
    if single is not None:
        sections.append(single_runs_section(single))
    first = next(iter(records.values()))
    docs_link = Path(os.path.relpath(DOCS / "continual.md", out.resolve())).as_posix()
    text = f"""# Continual-learning benchmark: the published regularisation table

Protocol of van de Ven, Tuytelaars & Tolias (2022): average test accuracy over all contexts
after the last one, mean and standard deviation over seeds; strengths chosen on a
validation split held out of the training data, never on the test set. Adam, batch 128.
Machine: {first["machine"]}; torch {first["torch"]}, Python {first["python"]}.
How to reproduce, and what each method does: [docs/continual.md]({docs_link}).

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
