"""Cost of the EWC penalty per training step as earlier tasks accumulate.

Separate-mode EWC (Kirkpatrick et al. 2017) penalises every earlier task's anchor:
``L = lambda/2 sum_t sum_i F_t,i (theta_i - theta*_t,i)^2``. Written term by term (one pass
over the parameters per anchor, as continual-learning libraries usually do) a step costs
O(tasks). ``EWCRegulariser`` keeps the sum as one merged quadratic,
``F (theta - m)^2 + c``, so a step costs the same after any number of tasks.

For the permuted-MNIST MLP of the continual benchmark (784-1000-1000-10, 1.8M parameters)
and 1 .. 50 earlier tasks: the median time of penalty + backward, merged
(``EWCRegulariser.penalty``) against term by term (``quadratic_penalty``, the definition),
and the largest relative difference of their gradients. One thread.
Writes ``benchmarks/results/ewc.md``.

    .venv/bin/python benchmarks/bench_ewc.py [--tasks 1 5 10 50] [--repeats 20]
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_description
from neurosim.learning.ewc import EWCConfig, EWCRegulariser, quadratic_penalty

RESULTS = Path(__file__).resolve().parent / "results"


def median_ms(step: Callable[[], torch.Tensor], params: dict[str, torch.Tensor], repeats: int) -> float:
    times = []
    for _ in range(repeats + 2):  # two warm-up calls
        for p in params.values():
            p.grad = None
        t0 = time.perf_counter()
        step().backward()  # type: ignore[no-untyped-call]
        times.append(time.perf_counter() - t0)
    return float(np.median(times[2:])) * 1e3


def gradients(step: Callable[[], torch.Tensor], params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for p in params.values():
        p.grad = None
    step().backward()  # type: ignore[no-untyped-call]
    return {k: p.grad.clone() for k, p in params.items() if p.grad is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 5, 10, 50])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 1000), nn.ReLU(), nn.Linear(1000, 1000), nn.ReLU(), nn.Linear(1000, 10))
    params: dict[str, torch.Tensor] = dict(model.named_parameters())
    n_params = sum(p.numel() for p in params.values())
    rows = []
    for n_tasks in args.tasks:
        reg = EWCRegulariser(EWCConfig(lambda_=10.0))
        for t in range(n_tasks):
            anchor = {k: v.detach() + 0.01 * torch.randn_like(v) for k, v in params.items()}
            reg.consolidate(f"task{t}", anchor, {k: torch.rand_like(v) for k, v in params.items()})
        merged = functools.partial(reg.penalty, params)
        term_by_term = functools.partial(quadratic_penalty, params, list(reg.anchors.values()), 10.0)

        fast, slow = median_ms(merged, params, args.repeats), median_ms(term_by_term, params, args.repeats)
        g_fast, g_slow = gradients(merged, params), gradients(term_by_term, params)
        rel = max(float((g_fast[k] - g_slow[k]).abs().max() / g_slow[k].abs().max()) for k in g_slow)
        rows.append(f"| {n_tasks} | {fast:.2f} | {slow:.2f} | {slow / fast:.1f}x | {rel:.1e} |")
        print(rows[-1], flush=True)
    text = f"""# EWC penalty per training step, merged against term by term

`python benchmarks/bench_ewc.py {" ".join(sys.argv[1:])}`. Machine: {machine_description()}; one
thread, torch {torch.__version__}, Python {platform.python_version()}. Model: the permuted-MNIST
MLP of the continual benchmark (784-1000-1000-10, {n_params:,} parameters). Median of
{args.repeats} calls of penalty + backward: merged is `EWCRegulariser.penalty`, term by term
`quadratic_penalty` (the definition). The gradient column is the largest difference between
the two gradients relative to the largest gradient entry (float32).

| earlier tasks | merged, ms | term by term, ms | speed-up | gradient difference |
|---|---|---|---|---|
{chr(10).join(rows)}
"""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ewc.md").write_text(text)
    print(f"wrote {RESULTS / 'ewc.md'}")


if __name__ == "__main__":
    main()
