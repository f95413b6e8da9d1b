"""Run the continual-learning regularisation benchmark and write its table, JSON and plot.

    .venv/bin/python -m benchmarks.continual                      # the full benchmark (see docs/continual.md)
    .venv/bin/python -m benchmarks.continual --quick --out /tmp/c  # a smoke run on 8x8 digits (about 1 min)
    .venv/bin/python -m benchmarks.continual --dataset mnist       # full MNIST, if the loader's cache has it
    .venv/bin/python -m benchmarks.continual --network spiking     # the spiking network (spiking.py)
    .venv/bin/python -m benchmarks.continual --protocols permuted_domain_il --methods ewc \\
        --grid ewc=1,10,100                                        # one method again, a wider search

For each protocol: the regularisation strength of every regularised method is chosen on a
validation split (held out of each context's training data; the mean of 3 search runs per
strength on split, 1 on permuted), then every method runs with ``--seeds`` seeds and is
scored on the test sets. Every run is kept under ``--out``/sweeps (``sweep_runs.py``), so a
rerun only runs what is missing. Writes ``continual.md``, ``continual.json`` and
``continual.png`` to ``--out`` (default ``benchmarks/results``). See ``docs/continual.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from benchmarks.continual import spiking
from benchmarks.continual.protocol import (
    MLP_METHODS,
    MNIST_MISSING_HINT,
    PROTOCOL_METHODS,
    REGULARISED,
    DatasetName,
    Method,
    Network,
    OnlineFisher,
    Protocol,
    ProtocolName,
    Settings,
    default_iterations,
    load_dataset,
    protocol,
)
from benchmarks.continual.report import IncompatibleRecord, ProtocolRecord, write_report
from benchmarks.continual.sweep_runs import Runner, evaluate_method
from neurosim.datasets.mnist import MNISTUnavailable
from neurosim.learning.fisher import FisherKind
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
    parser.add_argument("--network", type=Network, choices=list(Network), default=Network.MLP,
                        help="spiking: the protocols on spiking.py's network (continual_spiking.md)")  # fmt: skip
    parser.add_argument("--dataset", type=DatasetName, choices=list(DatasetName), default=DatasetName.MNIST_SUBSET)
    parser.add_argument("--protocols", type=ProtocolName, nargs="+", choices=list(ProtocolName))
    parser.add_argument("--methods", type=Method, nargs="+", choices=list(Method),
                        help="run only these (the saved results of the others are kept)")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--search-seeds", type=int, default=None,
                        help="validation runs per strength (default: split 3, permuted 1; spiking 1)")  # fmt: skip
    parser.add_argument("--grid", type=parse_grid, action="append", default=[], metavar="METHOD=V1,V2,...",
                        help="this strength grid instead of the default (one protocol at a time)")  # fmt: skip
    parser.add_argument("--iterations", type=int, default=None, help="per context (default: see the docs)")
    parser.add_argument("--fisher-alpha", type=float, default=None, metavar="A",
                        help="online-Fisher EWC: the accumulator's EMA rate (default: the protocol's)")  # fmt: skip
    parser.add_argument("--fisher-every", type=positive_int, default=1, metavar="N",
                        help="online-Fisher EWC: feed the accumulator every N-th training step's gradient "
                             "(default 1: every step)")  # fmt: skip
    parser.add_argument("--fisher-labels", type=FisherKind, choices=list(FisherKind), default=OnlineFisher.labels,
                        help="online-Fisher EWC: feed the task gradient (empirical, free) or the gradient at "
                             "labels sampled from the model (true, one extra backward pass per update)")  # fmt: skip
    parser.add_argument("--fisher-per-sample", action="store_true",
                        help="online-Fisher EWC: feed the mean of the batch's per-sample squared gradients "
                             "instead of one squared mean gradient (one extra backward pass per update)")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 8x8 digits, 100 hidden units (spiking 50), 20 iterations per context "
                             "(spiking 10), 2 seeds, 2-value grids")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: PyTorch's)")
    parser.add_argument("--workers", type=int, default=0,
                        help="run each method's seeds on a Dask LocalCluster of this many worker processes "
                             "(one thread each; 0: one after the other here)")  # fmt: skip
    parser.add_argument("--report-only", action="store_true",
                        help="only rebuild the report from the per-protocol records in --out")  # fmt: skip
    return parser


Grids = dict[Method, list[float]]


def configure(args: argparse.Namespace) -> tuple[dict[ProtocolName, Protocol], dict[ProtocolName, Grids],
                                                 dict[ProtocolName, tuple[Method, ...]]]:  # fmt: skip
    """Per protocol: its settings, strength grids and methods, for the network and options given."""
    spiking_net = args.network is Network.SPIKING
    dataset = DatasetName.DIGITS if args.quick else args.dataset
    protos, grids, methods = {}, {}, {}
    for name in args.protocols:
        if spiking_net:  # Adam at 1e-3 for both protocols: the spiking network does not learn at the MLP's 1e-4
            iterations, hidden = (10, 50) if args.quick else (spiking.ITERATIONS[name], spiking.HIDDEN)
            proto = dataclasses.replace(protocol(name, iterations=args.iterations or iterations, hidden=hidden),
                                        fisher_samples=200, lr=1e-3)  # fmt: skip
            grid = {m: v[:2] if args.quick else v for m, v in spiking.GRIDS.items()}
            available = spiking.SPIKING_METHODS
        elif args.quick:  # the pipeline end to end, at toy size: 100 hidden units, 20 iterations
            proto = dataclasses.replace(protocol(name, iterations=args.iterations or 20, hidden=100),
                                        fisher_samples=100)  # fmt: skip
            grid = {m: values[1:3] for m, values in GRIDS[name].items()}
            available = PROTOCOL_METHODS[name]
        else:
            proto = protocol(name, iterations=args.iterations or default_iterations(name, dataset))
            grid, available = dict(GRIDS[name]), PROTOCOL_METHODS[name]
        protos[name] = proto
        grids[name] = {**grid, **dict(args.grid)}
        methods[name] = tuple(m for m in available if args.methods is None or m in args.methods)
    return protos, grids, methods


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    spiking_net = args.network is Network.SPIKING
    if args.report_only:
        write_report(args.out, args.network)
        return
    if args.seeds < 1 or (args.search_seeds is not None and args.search_seeds < 1):
        parser.error("--seeds and --search-seeds must be >= 1")
    args.protocols = args.protocols or list(spiking.ITERATIONS if spiking_net else ProtocolName)
    if spiking_net and not set(args.protocols) <= set(spiking.ITERATIONS):
        parser.error(f"the spiking network runs {', '.join(spiking.ITERATIONS)}")
    offered = spiking.SPIKING_METHODS if spiking_net else MLP_METHODS
    if args.methods and not set(args.methods) <= set(offered):
        parser.error(f"the {args.network} network's methods: {', '.join(m.value for m in offered)}")
    if args.fisher_alpha is not None and not 0 < args.fisher_alpha <= 1:
        parser.error("--fisher-alpha must be in (0, 1]")
    if args.grid and len(args.protocols) > 1:
        parser.error("--grid applies to one protocol: give --protocols with one name")
    dataset = DatasetName.DIGITS if args.quick else args.dataset
    seeds = min(args.seeds, 2) if args.quick else args.seeds
    protos, grids, methods = configure(args)
    try:  # the data first: a missing data set is a one-line error, not a traceback mid-run
        load_dataset(dataset)
    except MNISTUnavailable as error:
        parser.error(f"{error}\n{MNIST_MISSING_HINT}")
    search_seeds = {n: args.search_seeds or (1 if args.quick or spiking_net else SEARCH_SEEDS[n]) for n in protos}
    try:  # before anything runs: a record this run cannot add to is refused now, not hours later
        records = {n: ProtocolRecord.open(args.out, args.network.record_prefix, n, dataset, Settings.of(p))
                   for n, p in protos.items()}  # fmt: skip
    except IncompatibleRecord as error:
        parser.error(str(error))
    runs = {n: seeds * len(methods[n]) + search_seeds[n] * sum(len(grids[n].get(m, ())) for m in methods[n])
            for n in protos}  # fmt: skip
    total = sum(runs[n] * p.iterations * p.n_contexts for n, p in protos.items())
    command = "python -m benchmarks.continual " + " ".join(sys.argv[1:])
    if args.threads:
        torch.set_num_threads(args.threads)
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=total, unit="it", desc="continual benchmark"))
        client = stack.enter_context(local_cluster(args.workers, dashboard_address=":0")) if args.workers else None
        for name, proto in protos.items():
            runner = Runner(proto, dataset, args.out, bar, client, 1 if client else torch.get_num_threads(),
                            args.network)  # fmt: skip
            alpha = args.fisher_alpha or (OnlineFisher.alpha if spiking_net else FISHER_ALPHA[name])
            online = OnlineFisher(alpha, args.fisher_every, args.fisher_labels, args.fisher_per_sample)
            t0 = time.perf_counter()
            summaries = {}
            for method in methods[name]:
                bar.set_description(f"{name.value}: {method.value}")
                summaries[method] = evaluate_method(runner, method, grids[name].get(method, ()), seeds=seeds,
                                                    search_seeds=search_seeds[name], online_fisher=online,
                                                    curves_every=max(1, proto.iterations // 2),
                                                    label=f"{name.value} ")  # fmt: skip
            order = spiking.SPIKING_METHODS if spiking_net else PROTOCOL_METHODS[name]
            records[name].save(name, dataset, Settings.of(proto), command, time.perf_counter() - t0, summaries, order)
    write_report(args.out, args.network)


if __name__ == "__main__":
    main()
