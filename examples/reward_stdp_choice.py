"""A two-choice task learned by reward-modulated STDP.

Izhikevich, E. M. (2007). Solving the distal reward problem through linkage of STDP and
dopamine signaling. Cereb. Cortex 17(10), 2443-2452; Fremaux, N. & Gerstner, W. (2016).
Neuromodulated spike-timing-dependent plasticity, and theory of three-factor learning
rules. Front. Neural Circuits 9:85.

Two stimuli (A: inputs 0-99 at 40 Hz and the rest at 2 Hz; B: the reverse) drive two
conductance LIF output neurons (Song et al. 2000's neuron)::

    dv/dt  = (ge (Ee - v) + El - v) / taum   [V]     taum 10 ms, Ee 0 mV, El -74 mV
    dge/dt = -ge / taue                      [1]     taue 5 ms; spike: v > -54 mV -> -60 mV

For 200 ms per trial. The network's choice is the output neuron that fired more (a tie: a
coin flip); the task is A -> neuron 0, B -> neuron 1. The plastic input weights follow
reward-modulated pair STDP: during a trial the pair rule's changes collect in an
eligibility trace ``c`` (tau_c = 0.5 s) instead of the weights, and at the end of the
trial the reward ``R = +1`` (right) or ``-1`` (wrong) turns it into a weight change,
``w += learning_rate * R * c`` (``learner.reward_episode(R)``). Nothing else tells the
network which neuron is meant for which stimulus; mutual inhibition between the two output
neurons makes the choice (and the credit) mostly one neuron's. Prints the accuracy per block
of 20 trials, with the control that does not learn (``learning_rate = 0``), and writes
``learning.png`` to ``--out``. Seeds 1-3, 100 trials: the first 20 trials 0.9-1.0 and the
last 40 all right; without learning 0.55-0.68.

    python examples/reward_stdp_choice.py [--trials 200] [--out runs/reward-choice]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from neurosim.learning import PairSTDP, RewardSTDP, STDPOnlineLearner
from neurosim.outputs import prepare_output_dir
from neurosim.sim import (
    Channel,
    ConductanceLIF,
    Network,
    PoissonInput,
    Population,
    Projection,
    Simulation,
    SpikeMonitor,
)
from neurosim.sim import connectivity as conn

mV, ms = 1e-3, 1e-3
N_IN, GMAX = 200, 0.05
INHIBITION = 1.0  # lateral inhibitory conductance per spike (units of the leak)
LEARNING_RATE = 0.1
TRIAL, REST = 0.2, 0.1  # s


def stimulus(kind: int) -> np.ndarray:
    """Input rates (Hz) of stimulus A (0) or B (1)."""
    rates = np.full(N_IN, 2.0)
    half = slice(0, N_IN // 2) if kind == 0 else slice(N_IN // 2, N_IN)
    rates[half] = 40.0
    return rates


def build(seed: int) -> Network:
    net = Network()
    net.add_input(PoissonInput("input", N_IN, 0.0))
    neuron = ConductanceLIF(tau_m=10 * ms, v_rest=-74 * mV, v_threshold=-54 * mV, v_reset=-60 * mV, tau_exc=5 * ms,
                            tau_inh=10 * ms, e_inh=-80 * mV)  # fmt: skip
    net.add_population(Population("out", 2, neuron))
    pre, post = conn.all_to_all(N_IN, 2)
    weights = conn.uniform_weights(pre.size, 0.3 * GMAX, 0.7 * GMAX, np.random.default_rng(seed))
    net.add_projection(Projection.from_pairs("input_out", "input", "out", N_IN, 2, pre, post, weights))
    # mutual inhibition: the neuron that fires first holds the other back, so a trial's
    # eligibility (and the reward's credit) goes mostly to the neuron that made the choice
    net.add_projection(Projection.from_pairs("lateral", "out", "out", 2, 2, np.array([0, 1]), np.array([1, 0]),
                                             np.full(2, INHIBITION), channel=Channel.INH))  # fmt: skip
    return net


def run(trials: int, seed: int, learning_rate: float = LEARNING_RATE) -> list[bool]:
    """Run the task; whether each trial's choice was right (``learning_rate = 0``: the
    control, the same network and stimuli without learning)."""
    net = build(seed)
    sim = Simulation(net, dt=0.1 * ms, seed=seed)
    pair = PairSTDP(tau_pre=20 * ms, tau_post=20 * ms, a_plus=0.02 * GMAX, a_minus=0.01 * GMAX, w_max=GMAX)
    learner = STDPOnlineLearner(
        net.projections["input_out"], RewardSTDP(pair=pair, tau_eligibility=0.5, learning_rate=learning_rate), dt=sim.dt
    )
    learner.attach(sim)
    rng = np.random.default_rng(seed)
    inputs = net.inputs["input"]
    assert isinstance(inputs, PoissonInput)
    right: list[bool] = []
    for _ in range(trials):
        kind = int(rng.integers(2))
        monitor = sim.add_monitor(SpikeMonitor("out", start=sim.t))
        inputs.set_rates(stimulus(kind))
        sim.run(TRIAL)
        sim.monitors.remove(monitor)
        counts = np.bincount(monitor.trains().indices, minlength=2)
        choice = int(rng.integers(2)) if counts[0] == counts[1] else int(np.argmax(counts))
        right.append(choice == kind)
        learner.reward_episode(1.0 if choice == kind else -1.0)
        inputs.set_rates(0.0)
        sim.run(REST)
    return right


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/reward-choice"))
    args = parser.parse_args()
    out = prepare_output_dir(args.out, overwrite=True)
    curves = {}
    for label, rate in (("reward-modulated STDP", LEARNING_RATE), ("no learning (control)", 0.0)):
        right = np.asarray(run(args.trials, args.seed, rate), dtype=np.float64)
        curves[label] = right[: right.size // 20 * 20].reshape(-1, 20).mean(1)
        print(f"{label}: accuracy per block of 20 trials:", " ".join(f"{a:.2f}" for a in curves[label]))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for label, blocks in curves.items():
        ax.plot(np.arange(blocks.size) * 20 + 10, blocks, marker="o", label=label)
    ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax.set_xlabel("trial")
    ax.set_ylabel("accuracy (blocks of 20 trials)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("two-choice task learned by reward-modulated STDP", fontsize=9, loc="left")
    fig.tight_layout()
    fig.savefig(out / "learning.png", dpi=120)
    print(f"wrote {out / 'learning.png'}")


if __name__ == "__main__":
    main()
