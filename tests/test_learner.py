"""STDPOnlineLearner: the engine's plasticity slot, the accumulator keyword, WAKE switching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurosim.learning import LinearReadout, PairSTDP, STDPOnlineLearner, Surrogate
from neurosim.learning.learner import NoGradientSource
from neurosim.learning.stdp import Synapses, initial_state, pair_stdp_step
from neurosim.sim import ConductanceLIF, Network, PoissonInput, Population, Projection, Simulation
from neurosim.sim import connectivity as conn


def _network(seed: int = 0) -> Network:
    net = Network()
    net.add_input(PoissonInput("inp", 50, 80.0))
    net.add_population(Population("out", 4, ConductanceLIF()))
    pre, post = conn.all_to_all(50, 4)
    w = conn.uniform_weights(pre.size, 0.0, 0.1, np.random.default_rng(seed))
    net.add_projection(Projection.from_pairs("ff", "inp", "out", 50, 4, pre, post, w))
    return net


class RecordingAccumulator:
    def __init__(self) -> None:
        self.calls: list[dict[str, torch.Tensor]] = []

    async def update(self, gradients) -> None:
        self.calls.append(dict(gradients))


def _spikes(gen: torch.Generator, steps: int, batch: int, n: int, p: float) -> list[torch.Tensor]:
    return [torch.rand((batch, n), generator=gen) < p for _ in range(steps)]


async def test_stdp_backwards_compat_no_accumulator() -> None:
    """update() without the keyword changes the weights exactly as the pure rule does."""
    net = _network()
    proj = net.projections["ff"]
    rule = PairSTDP(w_max=0.1, a_plus=1e-3, a_minus=1.1e-3)
    learner = STDPOnlineLearner(proj, rule, dt=1e-4)
    w = proj.synapse_weights().clone()
    traces = initial_state(rule, 1, 50, 4, proj.n_synapses, dtype=torch.float32, device=torch.device("cpu"))
    gen = torch.Generator().manual_seed(1)
    pres, posts = _spikes(gen, 300, 1, 50, 0.05), _spikes(gen, 300, 1, 4, 0.05)
    for pre, post in zip(pres, posts, strict=True):
        await learner.update(pre, post)
        w, traces = pair_stdp_step(w, traces, pre, post, Synapses(proj.pre_index, proj.post_index), rule, 1e-4)
    assert torch.equal(proj.synapse_weights(), w)
    assert not torch.equal(w, _network().projections["ff"].synapse_weights())


async def test_stdp_learner_accumulator_kwarg() -> None:
    """With an accumulator, each update() hands it one dict of float32 gradients per step."""
    net = _network()
    proj = net.projections["ff"]
    readout = LinearReadout(4, 3)
    readout.weight = torch.randn((3, 4), generator=torch.Generator().manual_seed(0))
    learner = STDPOnlineLearner(proj, PairSTDP(w_max=0.1), dt=1e-4, batch=2, surrogate=Surrogate(), readout=readout)
    learner.begin_sample(torch.tensor([0, 2]))
    acc = RecordingAccumulator()
    gen = torch.Generator().manual_seed(2)
    steps = 25
    for pre, post in zip(_spikes(gen, steps, 2, 50, 0.1), _spikes(gen, steps, 2, 4, 0.1), strict=True):
        v = -0.06 + 0.01 * torch.rand((2, 4), generator=gen)
        await learner.update(pre, post, post_v=v, post_threshold=-0.054, accumulator=acc)
    assert len(acc.calls) == steps
    for grads in acc.calls:
        assert set(grads) == {"ff.weight"}
        g = grads["ff.weight"]
        assert g.shape == (proj.n_synapses,) and g.dtype == torch.float32 and torch.isfinite(g).all()
    assert any(float(c["ff.weight"].abs().max()) > 0 for c in acc.calls)


async def test_accumulator_without_gradient_source_is_a_clear_error() -> None:
    learner = STDPOnlineLearner(_network().projections["ff"], PairSTDP(w_max=0.1), dt=1e-4)
    with pytest.raises(NoGradientSource, match="surrogate and a readout"):
        await learner.update(torch.zeros((1, 50), dtype=torch.bool), torch.zeros((1, 4), dtype=torch.bool),
                             accumulator=RecordingAccumulator())  # fmt: skip


async def test_attached_learner_with_accumulator_runs_per_step_in_run_async() -> None:
    net = _network()
    readout = LinearReadout(4, 2)
    readout.weight = torch.tensor([[1.0, -1.0, 0.5, 0.0], [-1.0, 1.0, 0.0, 0.5]])
    learner = STDPOnlineLearner(
        net.projections["ff"], PairSTDP(w_max=0.1), dt=1e-4, surrogate=Surrogate(), readout=readout
    )
    learner.begin_sample(torch.tensor([1]))
    sim = Simulation(net, seed=3)
    acc = RecordingAccumulator()
    learner.attach(sim, accumulator=acc)
    await sim.run_async(0.05)
    assert len(acc.calls) == 500


def test_disabled_learner_leaves_weights_alone_and_runs_compiled() -> None:
    net = _network()
    proj = net.projections["ff"]
    before = proj.synapse_weights().clone()
    learner = STDPOnlineLearner(proj, PairSTDP(w_max=0.1, a_plus=1e-3, a_minus=1e-3), dt=1e-4)
    sim = Simulation(net, seed=0)
    learner.attach(sim)
    learner.enabled = False
    stats = sim.run(0.2)
    assert torch.equal(proj.synapse_weights(), before)
    learner.enabled = True
    sim.run(0.2)
    assert not torch.equal(proj.synapse_weights(), before)
    assert "compiled" in {b.value for b in stats.backends}


def test_scale_shrinks_the_change() -> None:
    changes = []
    for scale in (1.0, 0.25):
        net = _network()
        proj = net.projections["ff"]
        before = proj.synapse_weights().clone()
        rule = PairSTDP(w_min=-1.0, w_max=1.0, a_plus=1e-3, a_minus=1e-3)  # bounds never reached
        learner = STDPOnlineLearner(proj, rule, dt=1e-4, scale=scale)
        gen = torch.Generator().manual_seed(5)
        for pre, post in zip(_spikes(gen, 50, 1, 50, 0.2), _spikes(gen, 50, 1, 4, 0.2), strict=True):
            learner.step(pre, post)
        changes.append(proj.synapse_weights() - before)
    torch.testing.assert_close(changes[1], 0.25 * changes[0], rtol=1e-3, atol=2e-8)  # float32 weights ~0.05


def test_learner_applies_the_ewc_pull_towards_the_anchor() -> None:
    from neurosim.learning.ewc import EWCConfig, EWCRegulariser

    net = _network()
    proj = net.projections["ff"]
    anchor = torch.full((proj.n_synapses,), 0.05)
    reg = EWCRegulariser(EWCConfig(lambda_=1.0, pull_rate=0.1))
    fisher = torch.ones(proj.n_synapses)
    fisher[::2] = 0.0  # half the synapses are unimportant: they must not be pulled
    reg.consolidate("a", {"ff.weight": anchor}, {"ff.weight": fisher})
    learner = STDPOnlineLearner(proj, PairSTDP(w_max=0.1, a_plus=0.0, a_minus=0.0), dt=1e-4)
    learner.regulariser = reg
    before = proj.synapse_weights().clone()
    silent = torch.zeros((1, 50), dtype=torch.bool), torch.zeros((1, 4), dtype=torch.bool)
    for _ in range(20):
        learner.step(*silent)
    after = proj.synapse_weights()
    torch.testing.assert_close(after[::2], before[::2])
    expected = 0.05 + (before[1::2] - 0.05) * 0.9**20  # each step removes 10% of the distance
    torch.testing.assert_close(after[1::2], expected, rtol=1e-4, atol=1e-6)
    form = learner.compiled_form(Simulation(net))
    assert form is not None and form.pull is not None  # the EWC pull runs in the compiled loop too


def test_a_rule_whose_bounds_do_not_fit_the_weights_warns() -> None:
    import warnings

    from neurosim.learning import TripletSTDP

    pre, post = conn.all_to_all(4, 3)

    def projection(w_max: float) -> Projection:
        return Projection.from_pairs("p", "a", "b", 4, 3, pre, post, np.full(pre.size, w_max, np.float32))

    with pytest.warns(RuntimeWarning, match=r"w_max = 1 is 500x the largest weight"):
        STDPOnlineLearner(projection(2e-3), TripletSTDP(w_max=1.0), dt=1e-4)  # weights in volts, rule for [0, 1]
    with pytest.warns(RuntimeWarning, match="outside the rule's bounds"):
        STDPOnlineLearner(projection(0.05), PairSTDP(w_max=0.01), dt=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        STDPOnlineLearner(projection(0.005), PairSTDP(w_max=0.01), dt=1e-4)  # fits: silent


def test_a_readout_initialised_with_weights_gives_a_learning_signal() -> None:
    rates, labels = torch.tensor([[10.0, 0.0, 5.0]]), torch.tensor([1])
    assert float(LinearReadout(3, 2).learning_signal(rates, labels).abs().max()) == 0.0  # zeros: no signal
    live = LinearReadout(3, 2, init_std=1e-2, seed=4)
    assert float(live.learning_signal(rates, labels).abs().max()) > 0
    assert torch.equal(live.weight, LinearReadout(3, 2, init_std=1e-2, seed=4).weight)  # seeded
    with pytest.raises(ValueError, match="init_std"):
        LinearReadout(3, 2, init_std=-1.0)


def test_reward_modulated_stdp_learns_the_two_choice_example() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    try:
        import reward_stdp_choice as example
    finally:
        sys.path.pop(0)
    learned = np.asarray(example.run(60, seed=2), dtype=float)
    control = np.asarray(example.run(60, seed=2, learning_rate=0.0), dtype=float)
    assert learned[-20:].mean() >= 0.9  # reward alone taught which neuron answers which stimulus
    assert control[-20:].mean() <= 0.8
