"""CUBA (Vogels & Abbott 2005) for 1 s of biological time: neurosim against Brian2.

Runs, in one script and on one CPU thread: neurosim (compiled path, and the PyTorch path
with a batch of 32 instances) and Brian2 2.9 (runtime with the Cython target, and C++
standalone), at N = 1000, 4000 and 16000. Compile and build times are excluded: neurosim
and Brian2 runtime are warmed up with a short run first; for C++ standalone the simulation
time is Brian2's own measurement of the run (``device._last_run_time``). Each time is the
best of ``--repeats`` runs. Writes ``benchmarks/results/engine.md``.

    .venv/bin/python benchmarks/bench_engine.py [--sizes 1000 4000 16000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cuba_config, machine_description, table_header
from neurosim.build import build_network
from neurosim.sim import Backend, Simulation

RESULTS = Path(__file__).resolve().parent / "results"


def best_of(repeats: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(repeats))


def neurosim_time(
    n: int, *, batch: int = 1, backend: Backend = Backend.AUTO, device: str = "cpu", weight_format: str = "auto"
) -> tuple[float, float]:
    """Wall time of a 1 s run (warmed up) and the mean rate."""
    cfg = cuba_config(n, weight_format=weight_format)
    net = build_network(cfg, device=device)
    sim = Simulation(net, dt=1e-4, batch=batch, seed=1, backend=backend, device=device)
    sim.run(0.01)  # compile / warm up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    stats = sim.run(1.0)
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    rate = sum(stats.spikes.values()) / (n * batch)
    return wall, rate


def brian2_cuba(n: int, standalone: bool) -> tuple[float, float]:
    import brian2 as b2

    b2.start_scope()
    b2.prefs.codegen.target = "cython"
    if standalone:
        b2.set_device("cpp_standalone", build_on_run=False)
        b2.prefs.devices.cpp_standalone.openmp_threads = 0
    else:
        b2.set_device("runtime")
    ms, mV = b2.ms, b2.mV
    ns = {"taum": 20 * ms, "taue": 5 * ms, "taui": 10 * ms, "Vt": -50 * mV, "Vr": -60 * mV, "El": -49 * mV,
          "we": 60 * 0.27 / 10 * mV, "wi": -20 * 4.5 / 10 * mV}  # fmt: skip
    eqs = """
    dv/dt  = (ge+gi-(v-El))/taum : volt (unless refractory)
    dge/dt = -ge/taue : volt
    dgi/dt = -gi/taui : volt
    """
    b2.defaultclock.dt = 0.1 * ms
    group = b2.NeuronGroup(n, eqs, threshold="v>Vt", reset="v = Vr", refractory=5 * ms, method="exact", namespace=ns)
    group.v = "Vr + rand() * (Vt - Vr)"
    n_exc = int(0.8 * n)
    ce = b2.Synapses(group, group, on_pre="ge += we", namespace=ns)
    ci = b2.Synapses(group, group, on_pre="gi += wi", namespace=ns)
    ce.connect(f"i<{n_exc}", p=0.02)
    ci.connect(f"i>={n_exc}", p=0.02)
    mon = b2.SpikeMonitor(group)
    net = b2.Network(group, ce, ci, mon)
    if standalone:
        net.run(1 * b2.second)
        build_dir = tempfile.mkdtemp(prefix="brian2_cuba_")
        try:
            b2.device.build(directory=build_dir, compile=True, run=True, debug=False)
            wall = float(b2.device._last_run_time)
            rate = mon.num_spikes / n
        finally:
            b2.device.reinit()
            b2.device.activate()
            b2.set_device("runtime")
            shutil.rmtree(build_dir, ignore_errors=True)
        return wall, rate
    net.run(1 * ms)  # compile the Cython code
    t0 = time.perf_counter()
    net.run(1 * b2.second)
    wall = time.perf_counter() - t0
    return wall, mon.num_spikes / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--cuda", action="store_true", help="also time the PyTorch path on CUDA")
    parser.add_argument("--out", type=Path, default=RESULTS / "engine.md")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows: list[str] = []
    for n in args.sizes:
        ns_wall = best_of(args.repeats, lambda n=n: neurosim_time(n)[0])
        ns_rate = neurosim_time(n)[1]
        cy_wall, cy_rate = min((brian2_cuba(n, standalone=False) for _ in range(args.repeats)), key=lambda r: r[0])
        sa_wall, sa_rate = min((brian2_cuba(n, standalone=True) for _ in range(args.repeats)), key=lambda r: r[0])
        rows.append(
            f"| {n} | {ns_wall:.3f} | {cy_wall:.3f} | {sa_wall:.3f} "
            f"| {ns_wall / cy_wall:.2f} | {ns_wall / sa_wall:.2f} "
            f"| {ns_rate:.2f} / {cy_rate:.2f} / {sa_rate:.2f} |"
        )
        print(rows[-1], flush=True)

    batch_rows: list[str] = []
    single_compiled = best_of(args.repeats, lambda: neurosim_time(4000)[0])
    single_torch = neurosim_time(4000, backend=Backend.TORCH)[0]
    for label, backend, device in (("compiled, cpu", Backend.COMPILED, "cpu"), ("torch, cpu", Backend.TORCH, "cpu")):
        wall = neurosim_time(4000, batch=args.batch, backend=backend, device=device)[0]
        batch_rows.append(
            f"| {label} | {args.batch} | {wall:.3f} | {wall / args.batch:.4f} | "
            f"{wall / args.batch / single_compiled:.3f} | {wall / args.batch / single_torch:.3f} |"
        )
        print(batch_rows[-1], flush=True)
    if args.cuda and torch.cuda.is_available():
        for batch in (1, args.batch, 1024):
            wall = neurosim_time(4000, batch=batch, backend=Backend.TORCH, device="cuda")[0]
            batch_rows.append(
                f"| torch, cuda | {batch} | {wall:.3f} | {wall / batch:.4f} | "
                f"{wall / batch / single_compiled:.3f} | {wall / batch / single_torch:.3f} |"
            )
            print(batch_rows[-1], flush=True)

    header = table_header(
        "N",
        "neurosim (s)",
        "Brian2 Cython runtime (s)",
        "Brian2 C++ standalone (s)",
        "neurosim / Cython",
        "neurosim / standalone",
        "mean rate Hz (neurosim / Cython / standalone)",
    )
    text = f"""# Engine benchmark: CUBA, 1 s of biological time

Machine: {machine_description()}; one thread (`torch.set_num_threads(1)`, Brian2 standalone
without OpenMP). Brian2 {__import__("brian2").__version__}, torch {torch.__version__}, numpy {np.__version__},
Python {platform.python_version()}. Best of {args.repeats}; compile and build excluded.
Command: `python benchmarks/bench_engine.py {" ".join(sys.argv[1:])}`.

CUBA as in Brian2's `examples/CUBA.py` (80/20 exc/inh, p = 0.02, dt = 0.1 ms).
neurosim runs its compiled path (`backend="auto"`, no per-step hooks).

{header}
{chr(10).join(rows)}

Targets at N = 4000: neurosim at most 0.5x Brian2 Cython runtime, at most 3x C++ standalone.

## Batches: {args.batch} instances of N = 4000 at once

Per-instance cost against one single-instance run of the compiled path
({single_compiled:.3f} s) and of the PyTorch path on the CPU ({single_torch:.3f} s).

| path | batch | wall (s) | per instance (s) | / single compiled | / single torch |
|---|---|---|---|---|---|
{chr(10).join(batch_rows)}

Target: per-instance cost at most 1/8 of a single run.
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
