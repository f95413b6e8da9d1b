"""neurosim's PyTorch path on CUDA: CUBA N=4000, 1 s, at several batch sizes.

Run on a machine with a GPU; prints Markdown rows for ``benchmarks/results/engine.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_engine import neurosim_time
from benchmarks.common import machine_description
from neurosim.sim import Backend


def main() -> None:
    torch.set_num_threads(1)
    single = neurosim_time(4000)[0]
    print(f"machine: {machine_description()}, GPU: {torch.cuda.get_device_name()}")
    print(f"single compiled cpu: {single:.3f} s")
    for fmt in ("sparse", "dense"):
        for batch in [int(b) for b in sys.argv[1:]] or [1, 32, 256, 1024]:
            wall, rate = neurosim_time(4000, batch=batch, backend=Backend.TORCH, device="cuda", weight_format=fmt)
            print(
                f"| torch, cuda, {fmt} weights | {batch} | {wall:.3f} | {wall / batch:.5f} "
                f"| {wall / batch / single:.3f} "
                f"| rate {rate:.2f} Hz |",
                flush=True,
            )


if __name__ == "__main__":
    main()
