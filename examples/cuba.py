"""CUBA network from Python: 4000 current-based LIF neurons, 80/20 excitatory/inhibitory.

Vogels, T. P. & Abbott, L. F. (2005). Signal propagation and logic gating in networks of
integrate-and-fire neurons. J. Neurosci. 25(46), 10786-10795; the same setup as Brian2's
``examples/CUBA.py`` (Brette et al. 2007, benchmark 2)::

    dv/dt  = (ge + gi - (v - El)) / taum   [V]   (unless refractory)
    dge/dt = -ge / taue                    [V]
    dgi/dt = -gi / taui                    [V]

taum 20 ms, taue 5 ms, taui 10 ms, Vt -50 mV, Vr -60 mV, El -49 mV, refractory 5 ms,
we = 1.62 mV, wi = -9 mV, 2% connectivity, v0 ~ U(Vr, Vt). Brian2 reports about 5.6 Hz.

Run:  python examples/cuba.py [--duration 1.0] [--out runs/cuba-py]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from neurosim.outputs import plot_raster, prepare_output_dir
from neurosim.sim import Channel, CurrentLIF, Network, Population, Projection, Simulation, SpikeMonitor, Uniform
from neurosim.sim import connectivity as conn

mV, ms = 1e-3, 1e-3


def build_cuba(n: int = 4000, seed: int = 1) -> Network:
    params = CurrentLIF(
        tau_m=20 * ms,
        v_rest=-49 * mV,
        v_threshold=-50 * mV,
        v_reset=-60 * mV,
        t_ref=5 * ms,
        tau_exc=5 * ms,
        tau_inh=10 * ms,
    )
    n_exc = int(0.8 * n)
    sizes = {"exc": n_exc, "inh": n - n_exc}
    net = Network()
    for name, size in sizes.items():
        net.add_population(Population(name, size, params, {"v": Uniform(-60 * mV, -50 * mV)}))
    rng = np.random.default_rng(seed)
    weight = {"exc": 60 * 0.27 / 10 * mV, "inh": -20 * 4.5 / 10 * mV}
    for src, n_src in sizes.items():
        for tgt, n_tgt in sizes.items():
            pre, post = conn.probability(n_src, n_tgt, 0.02, rng)
            w = conn.constant_weights(pre.size, weight[src])
            channel = Channel.EXC if src == "exc" else Channel.INH
            net.add_projection(
                Projection.from_pairs(f"{src}_{tgt}", src, tgt, n_src, n_tgt, pre, post, w, channel=channel)
            )
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path("runs/cuba-py"))
    args = parser.parse_args()
    sim = Simulation(build_cuba(), dt=0.1 * ms, seed=1)
    monitors = {name: SpikeMonitor(name) for name in ("exc", "inh")}
    for mon in monitors.values():
        sim.add_monitor(mon)
    stats = sim.run(args.duration, progress=True)
    total = sum(stats.spikes[name] for name in monitors)
    print(f"{args.duration} s simulated in {stats.wall_s:.2f} s; mean rate {total / 4000 / args.duration:.2f} Hz")
    out = prepare_output_dir(args.out, overwrite=True)
    plot_raster(out / "raster.png", {k: m.trains() for k, m in monitors.items()}, {"exc": 3200, "inh": 800}, sim.t)
    print(f"raster in {out / 'raster.png'}")


if __name__ == "__main__":
    main()
