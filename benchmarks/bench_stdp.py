"""STDP (Song, Miller & Abbott 2000) for 10 s of biological time: neurosim against Brian2.

Brian2's ``examples/synapses/STDP.py`` setup (1000 Poisson inputs at 15 Hz, all-to-all
additive pair STDP) onto 1 neuron, and a larger plastic case onto 100 neurons (100,000
plastic synapses). One thread; compile and build excluded (neurosim and Brian2 runtime are
warmed up with a short run first; C++ standalone reports its own run time). Brian2 uses
``method='exponential_euler'`` so that both integrate the same way. Writes
``benchmarks/results/stdp.md``.

    .venv/bin/python benchmarks/bench_stdp.py [--duration 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import EXAMPLES, best_of, machine_description, run_brian2_standalone, table_header
from neurosim.build import build_simulation
from neurosim.config import load_config, parse_config
from neurosim.learning import STDPOnlineLearner

RESULTS = Path(__file__).resolve().parent / "results"


def neurosim_song(n_post: int, duration: float) -> tuple[float, float, float]:
    """Wall time, output rate (Hz) and mean final weight of a warmed-up run."""
    data = load_config(EXAMPLES / "song2000_stdp.toml").model_dump(mode="json")
    data["network"]["populations"][0]["n"] = n_post
    data["record"] = {"spikes": [], "state": []}
    cfg = parse_config(data)
    sim = build_simulation(cfg)
    proj = sim.network.projections["input_neuron"]
    STDPOnlineLearner(proj, cfg.plasticity[0].rule.to_rule(), dt=sim.dt).attach(sim)
    sim.run(0.01)
    t0 = time.perf_counter()
    stats = sim.run(duration)
    wall = time.perf_counter() - t0
    return wall, stats.spikes["neuron"] / (n_post * duration), float(proj.synapse_weights().mean())


def brian2_song(n_post: int, duration: float, standalone: bool) -> tuple[float, float, float]:
    import brian2 as b2

    b2.start_scope()
    b2.prefs.codegen.target = "cython"
    if standalone:
        b2.set_device("cpp_standalone", build_on_run=False)
    else:
        b2.set_device("runtime")
    ms, mV, hz = b2.ms, b2.mV, b2.Hz
    gmax = 0.01
    ns = {"taum": 10 * ms, "taupre": 20 * ms, "taupost": 20 * ms, "Ee": 0 * mV, "vt": -54 * mV,
          "vr": -60 * mV, "El": -74 * mV, "taue": 5 * ms, "gmax": gmax, "dApre": 0.01 * gmax,
          "dApost": -0.01 * gmax * 1.05}  # fmt: skip
    b2.defaultclock.dt = 0.1 * ms
    inp = b2.PoissonGroup(1000, rates=15 * hz)
    neurons = b2.NeuronGroup(
        n_post, "dv/dt = (ge * (Ee-v) + El - v) / taum : volt\ndge/dt = -ge / taue : 1",
        threshold="v>vt", reset="v = vr", method="exponential_euler", namespace=ns,
    )  # fmt: skip
    neurons.v = -74 * mV
    syn = b2.Synapses(
        inp, neurons,
        "w : 1\ndApre/dt = -Apre / taupre : 1 (event-driven)\ndApost/dt = -Apost / taupost : 1 (event-driven)",
        on_pre="ge += w\nApre += dApre\nw = clip(w + Apost, 0, gmax)",
        on_post="Apost += dApost\nw = clip(w + Apre, 0, gmax)",
        namespace=ns,
    )  # fmt: skip
    syn.connect()
    syn.w = "rand() * gmax"
    mon = b2.SpikeMonitor(neurons)
    net = b2.Network(inp, neurons, syn, mon)
    if standalone:
        net.run(duration * b2.second)
        return run_brian2_standalone(
            "brian2_stdp_", lambda wall: (wall, mon.num_spikes / (n_post * duration), float(np.mean(syn.w[:])))
        )
    net.run(10 * ms)
    t0 = time.perf_counter()
    net.run(duration * b2.second)
    wall = time.perf_counter() - t0
    return wall, mon.num_spikes / (n_post * (duration + 0.01)), float(np.mean(syn.w[:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "stdp.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for n_post in (1, 100):
        ns = best_of(args.repeats, neurosim_song, n_post, args.duration)
        cy = best_of(args.repeats, brian2_song, n_post, args.duration, False)
        sa = best_of(args.repeats, brian2_song, n_post, args.duration, True)
        rows.append(
            f"| 1000 -> {n_post} ({1000 * n_post} plastic) | {ns[0]:.3f} | {cy[0]:.3f} | {sa[0]:.3f} | "
            f"{ns[0] / cy[0]:.2f} | {ns[0] / sa[0]:.2f} | {ns[1]:.1f} / {cy[1]:.1f} / {sa[1]:.1f} | "
            f"{ns[2] * 1e3:.2f} / {cy[2] * 1e3:.2f} / {sa[2] * 1e3:.2f} |"
        )
        print(rows[-1], flush=True)
    header = table_header(
        "network",
        "neurosim (s)",
        "Brian2 Cython (s)",
        "Brian2 standalone (s)",
        "neurosim / Cython",
        "neurosim / standalone",
        "output rate Hz (neurosim / Cython / standalone)",
        "mean final weight x1e3 (same order)",
    )
    text = f"""# STDP benchmark: Song, Miller & Abbott (2000), {args.duration:g} s of biological time

Machine: {machine_description()}; one thread. Brian2 {__import__("brian2").__version__} (Cython runtime;
C++ standalone without OpenMP), torch {torch.__version__}, numpy {np.__version__}, Python {platform.python_version()}.
Best of {args.repeats}; compile and build excluded. Command: `python benchmarks/bench_stdp.py {" ".join(sys.argv[1:])}`.

1000 Poisson inputs at 15 Hz, all-to-all additive pair STDP (taupre = taupost = 20 ms,
gmax = 0.01, dApre = 0.01 gmax, dApost = -1.05 dApre), conductance LIF targets, dt = 0.1 ms.
neurosim runs its compiled path with compiled pair STDP (`backend="auto"`).

{header}
{chr(10).join(rows)}

Target: neurosim at most Brian2 Cython's wall time. The random streams differ between
simulators, so rates and weights agree statistically, not spike for spike.
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
