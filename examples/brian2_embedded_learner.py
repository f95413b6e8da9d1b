"""neurosim's online learner and Fisher accumulator inside a plain Brian2 network.

A Brian2 network (written in plain Brian2: 200 Poisson inputs onto 10 conductance-based
LIF neurons, as in Song, Miller & Abbott 2000) runs the dynamics; a ``network_operation``
hands every step's spikes and membrane potentials to neurosim's ``STDPOnlineLearner``,
which applies pair STDP to a mirror of the Brian2 synapses, writes the weights back, and
feeds its surrogate gradients to a ``FisherAccumulator``. The accumulator's snapshots land
in a ``DirectoryFisherStore``.

    python examples/brian2_embedded_learner.py [--duration 1.0] [--out runs/brian2-embedded]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import brian2 as b2
import numpy as np
import torch

from neurosim.learning import LinearReadout, PairSTDP, STDPOnlineLearner, Surrogate
from neurosim.learning.fisher import DirectoryFisherStore
from neurosim.learning.fisher_online import FisherAccumulator, FisherAccumulatorConfig
from neurosim.sim import Projection

N_IN, N_OUT, GMAX = 200, 10, 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path("runs/brian2-embedded"))
    args = parser.parse_args()
    result = run(args.duration, args.out)
    print(f"{result['output_spikes']} output spikes; mean |dw| = {np.abs(result['w'] - result['w0']).mean():.2e}")
    print(f"Fisher snapshots for task-0: versions {result['versions']}, latest at step {result['snapshot_step']}, "
          f"max F = {result['fisher'].max():.3e}")  # fmt: skip


def run(duration: float, out: Path) -> dict:
    """Simulate ``duration`` seconds in Brian2 with neurosim learning; Fisher snapshots in
    ``out/fisher``. Returns the weights before and after, the output spikes and the Fisher."""
    b2.start_scope()
    b2.prefs.codegen.target = "numpy"
    b2.seed(1)
    mV = b2.mV

    # ---- a plain Brian2 network
    inputs = b2.PoissonGroup(N_IN, rates=20 * b2.Hz)
    neurons = b2.NeuronGroup(
        N_OUT,
        "dv/dt = (ge * (0*mV - v) + (-74*mV) - v) / (10*ms) : volt\ndge/dt = -ge / (5*ms) : 1",
        threshold="v > -54*mV", reset="v = -60*mV", method="exponential_euler",
    )  # fmt: skip
    neurons.v = -74 * mV
    synapses = b2.Synapses(inputs, neurons, "w : 1", on_pre="ge_post += w")
    synapses.connect()
    synapses.w = "rand() * 0.05"

    # ---- neurosim's learner on a mirror of those synapses
    step_seconds = float(b2.defaultclock.dt / b2.second)
    pre, post = np.asarray(synapses.i[:], np.int64), np.asarray(synapses.j[:], np.int64)
    mirror = Projection.from_pairs("in_out", "inputs", "neurons", N_IN, N_OUT, pre, post,
                                   np.asarray(synapses.w[:], np.float32))  # fmt: skip
    readout = LinearReadout(N_OUT, 2)
    readout.weight = torch.randn((2, N_OUT), generator=torch.Generator().manual_seed(0))
    learner = STDPOnlineLearner(mirror, PairSTDP(w_max=GMAX, a_plus=5e-4, a_minus=5.25e-4), dt=step_seconds,
                                surrogate=Surrogate(width=2e-3), readout=readout)  # fmt: skip
    store = DirectoryFisherStore(out / "fisher", keep_last=5)
    accumulator = FisherAccumulator(
        FisherAccumulatorConfig(alpha=0.01, snapshot_every=1000, max_staleness_steps=3000), store, "task-0"
    )
    steps = {"n": 0}

    @b2.network_operation(when="end")
    def learn() -> None:
        if steps["n"] % 1000 == 0:  # a new "sample" every 100 ms, labelled 0, 1, 0, ...
            learner.begin_sample(torch.tensor([(steps["n"] // 1000) % 2]))
        pre_spikes = torch.zeros((1, N_IN), dtype=torch.bool)
        pre_spikes[0, torch.as_tensor(np.asarray(inputs.spikes, dtype=np.int64))] = True
        post_spikes = torch.zeros((1, N_OUT), dtype=torch.bool)
        post_spikes[0, torch.as_tensor(np.asarray(neurons.spikes, dtype=np.int64))] = True
        v = torch.from_numpy(np.asarray(neurons.v[:] / b2.volt, np.float32)).reshape(1, N_OUT)
        # synchronous on purpose: a network_operation may run inside an event loop (a notebook)
        gradients = learner.step(pre_spikes, post_spikes, post_v=v, post_threshold=-0.054)
        if gradients is not None:
            accumulator.fold(gradients)
        synapses.w[:] = mirror.synapse_weights().numpy()  # neurosim learns, Brian2 simulates
        steps["n"] += 1

    spikes = b2.SpikeMonitor(neurons)
    w0 = np.asarray(synapses.w[:]).copy()
    b2.run(duration * b2.second)
    snapshot = accumulator.snapshot_now()
    accumulator.close()
    return {"w0": w0, "w": np.asarray(synapses.w[:]).copy(), "output_spikes": int(spikes.num_spikes),
            "spike_times": np.asarray(spikes.t / b2.second), "spike_indices": np.asarray(spikes.i[:]),
            "versions": store.versions("task-0"), "snapshot_step": snapshot.step,
            "fisher": np.asarray(snapshot.arrays["in_out.weight"]), "pre": pre, "post": post}  # fmt: skip


if __name__ == "__main__":
    main()
