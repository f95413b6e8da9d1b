"""Competitive Hebbian learning through STDP, from Python.

Song, S., Miller, K. D. & Abbott, L. F. (2000). Competitive Hebbian learning through
spike-timing-dependent synaptic plasticity. Nat. Neurosci. 3(9), 919-926. The setup of
Brian2's ``examples/synapses/STDP.py``: 1000 Poisson inputs at 15 Hz onto one
conductance-based LIF neuron::

    dv/dt  = (ge (Ee - v) + El - v) / taum   [V]     taum 10 ms, Ee 0 mV, El -74 mV
    dge/dt = -ge / taue                      [1]     taue 5 ms; spike: v > -54 mV -> -60 mV

with additive pair STDP (taupre = taupost = 20 ms, gmax = 0.01, dApre = 0.01 gmax,
dApost = -1.05 dApre), weights initially uniform in [0, gmax]. After 100 s the weight
distribution is bimodal. Writes ``weights.npz`` and ``weights.png`` to ``--out``, like
``neurosim run examples/song2000_stdp.toml``.

    python examples/song2000_stdp.py [--duration 100] [--out runs/song2000-py]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from neurosim.learning import PairSTDP, STDPOnlineLearner
from neurosim.outputs import plot_weight_histograms, prepare_output_dir, write_arrays
from neurosim.sim import ConductanceLIF, Network, PoissonInput, Population, Projection, Simulation, SpikeMonitor
from neurosim.sim import connectivity as conn

mV, ms = 1e-3, 1e-3
GMAX = 0.01


def build(seed: int = 1) -> Network:
    net = Network()
    net.add_input(PoissonInput("input", 1000, 15.0))
    neuron = ConductanceLIF(tau_m=10 * ms, v_rest=-74 * mV, v_threshold=-54 * mV, v_reset=-60 * mV, tau_exc=5 * ms)
    net.add_population(Population("neuron", 1, neuron))
    pre, post = conn.all_to_all(1000, 1)
    weights = conn.uniform_weights(pre.size, 0.0, GMAX, np.random.default_rng(seed))
    net.add_projection(Projection.from_pairs("input_neuron", "input", "neuron", 1000, 1, pre, post, weights))
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/song2000-py"))
    args = parser.parse_args()
    net = build(args.seed)
    proj = net.projections["input_neuron"]
    initial = proj.synapse_weights().numpy().copy()
    sim = Simulation(net, dt=0.1 * ms, seed=args.seed)
    rule = PairSTDP(tau_pre=20 * ms, tau_post=20 * ms, a_plus=0.01 * GMAX, a_minus=1.05 * 0.01 * GMAX, w_max=GMAX)
    STDPOnlineLearner(proj, rule, dt=sim.dt).attach(sim)
    spikes = sim.add_monitor(SpikeMonitor("neuron"))
    stats = sim.run(args.duration, progress=True)
    final = proj.synapse_weights().numpy()
    out = prepare_output_dir(args.out, overwrite=True)
    write_arrays(out / "weights.npz", {"input_neuron": final, "input_neuron_initial": initial})
    plot_weight_histograms(out / "weights.png", {"input_neuron": initial}, {"input_neuron": final}, sim.t)
    near = np.mean((final < 0.1 * GMAX) | (final > 0.9 * GMAX))
    print(f"{args.duration:g} s in {stats.wall_s:.1f} s wall; output {spikes.count / args.duration:.1f} Hz; "
          f"{near:.0%} of weights within 10% of a bound")  # fmt: skip
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
