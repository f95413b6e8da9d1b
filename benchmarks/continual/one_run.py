"""One run of the continual benchmark's protocol, as a JSON line, for checks too slow for a table.

Permuted MNIST at the published 5,000 iterations per context takes about 21 minutes per run
on one core of the machine of the results, so a full table (30 runs) is out of reach there;
single runs still say how far the published training length gets:

    .venv/bin/python -m benchmarks.continual.one_run --dataset mnist --protocol permuted_domain_il \\
        --iterations 5000 --method ewc --strength 100 --seed 1000 --split val \\
        --out benchmarks/results/mnist/permuted_published_iterations.jsonl

The line is printed and, with ``--out``, appended to that file. Choose strengths with
``--split val`` (seeds from 1000, as the benchmark's searches) and score them on ``test``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from benchmarks.common import machine_description
from benchmarks.continual.protocol import (
    MLP_METHODS,
    MNIST_MISSING_HINT,
    DatasetName,
    Method,
    OnlineFisher,
    ProtocolName,
    RunConfig,
    Settings,
    add_feeding_arguments,
    build_contexts,
    default_iterations,
    load_dataset,
    protocol,
    run,
)
from neurosim.datasets.mnist import MNISTUnavailable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=DatasetName, choices=list(DatasetName), default=DatasetName.MNIST_SUBSET)
    parser.add_argument("--protocol", type=ProtocolName, choices=list(ProtocolName), required=True)
    parser.add_argument("--method", type=Method, choices=list(MLP_METHODS), required=True)
    parser.add_argument("--strength", type=float, default=0.0, help="lambda (EWC variants) or c (SI)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--iterations", type=int, default=None,
                        help="per context (default: as the benchmark)")  # fmt: skip
    parser.add_argument("--fisher-alpha", type=float, default=OnlineFisher.alpha)
    parser.add_argument("--fisher-every", type=int, default=OnlineFisher.every)
    add_feeding_arguments(parser)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="append the JSON line to this file")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.strength < 0 or (args.iterations is not None and args.iterations < 1):
        parser.error("--strength must be >= 0 and --iterations >= 1")
    try:
        online = OnlineFisher(args.fisher_alpha, args.fisher_every, args.fisher_labels, args.fisher_per_sample)
        proto = protocol(args.protocol, iterations=args.iterations or default_iterations(args.protocol, args.dataset))
        load_dataset(args.dataset)
    except ValueError as error:
        parser.error(str(error))
    except MNISTUnavailable as error:
        parser.error(f"{error}\n{MNIST_MISSING_HINT}")
    torch.set_num_threads(args.threads)
    contexts = build_contexts(proto, args.dataset)
    cfg = RunConfig(args.method, args.strength, seed=args.seed, split=args.split, online_fisher=online)
    t0 = time.perf_counter()
    desc = f"{proto.name.value}: {args.method.value} {args.strength:g}, seed {args.seed} ({args.split})"
    with tqdm(total=proto.iterations * proto.n_contexts, unit="it", desc=desc) as bar:  # stderr: stdout is the line
        result = run(proto, contexts, cfg, bar.update)
    line = json.dumps({
        "protocol": proto.name.value, "dataset": args.dataset.value, "settings": dataclasses.asdict(Settings.of(proto)),
        "method": args.method.value, "strength": args.strength, "seed": args.seed, "split": args.split,
        **(online.as_record() if args.method is Method.ONLINE_FISHER_EWC else {}),
        "average": result.average_accuracy, "per_context": result.final_accuracy,
        "wall_s": time.perf_counter() - t0, "fisher_s": result.fisher_s, "machine": machine_description(),
    })  # fmt: skip
    print(line)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as fh:
            fh.write(line + "\n")


if __name__ == "__main__":
    main()
