"""The learning loop in the compiled path equals the PyTorch path (its specification).

Every rule, the EWC pull, the online eligibility gradient and the Fisher EMA with its
snapshots, and a whole LEARNING -> SLEEP -> WAKE cycle of the continual experiment, run once
with ``backend="torch"`` and once compiled (``"auto"``), from the same seed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from neurosim.config import ContinualConfig, load_any_config
from neurosim.learning import LinearReadout, STDPOnlineLearner, Surrogate
from neurosim.learning.ewc import EWCConfig, EWCRegulariser
from neurosim.learning.fisher import InMemoryFisherStore
from neurosim.learning.fisher_online import (
    FisherAccumulator,
    FisherAccumulatorConfig,
    NonFiniteGradientError,
    NonFinitePolicy,
)
from neurosim.learning.sleep import SleepConfig, SleepReplay
from neurosim.learning.stdp import PairSTDP, RewardSTDP, STDPRule, TraceMode, TripletSTDP, WeightDependence
from neurosim.learning.surrogate import SurrogateKind
from neurosim.phases.schedule import Experiment
from neurosim.sim import AdaptiveLIF, Backend, Network, PoissonInput, Population, Projection, Simulation
from neurosim.sim import connectivity as conn

DT = 5e-4


def _network(dtype: torch.dtype, *, n_in: int = 30, n_out: int = 6, sparse: bool = False) -> Network:
    rng = np.random.default_rng(0)
    net = Network()
    net.add_input(PoissonInput("inp", n_in, rng.uniform(5.0, 80.0, n_in)))
    net.add_input(PoissonInput("dopamine", 3, 20.0))
    net.add_population(Population("exc", n_out, AdaptiveLIF(theta_plus=0.5e-3, tau_theta=1.0), {"v": -65e-3}))
    if sparse:
        pre, post = conn.probability(n_in, n_out, 0.5, rng)
    else:
        pre, post = conn.all_to_all(n_in, n_out)
    w = conn.uniform_weights(pre.size, 0.0, 0.3, rng)
    net.add_projection(Projection.from_pairs("ff", "inp", "exc", n_in, n_out, pre, post, w, dtype=dtype))
    return net


def _run(backend: Backend, rule: STDPRule, dtype: torch.dtype, *, steps: int = 600, **learner_kw: object):
    net = _network(dtype, sparse=bool(learner_kw.pop("sparse", False)))
    sim = Simulation(net, dt=DT, seed=4, backend=backend, dtype=dtype, chunk_steps=97)
    learner = STDPOnlineLearner(net.projections["ff"], rule, dt=DT, **learner_kw)  # type: ignore[arg-type]
    learner.attach(sim)
    stats = sim.run(steps * DT)
    return net.projections["ff"].synapse_weights(), learner, stats


RULES = {
    "pair additive": PairSTDP(a_plus=0.01, a_minus=0.012, w_max=0.5),
    "pair multiplicative nearest": PairSTDP(
        a_plus=0.05, a_minus=0.06, w_max=0.5, dependence=WeightDependence.MULTIPLICATIVE, traces=TraceMode.NEAREST
    ),
    "triplet": TripletSTDP(a2_plus=5e-3, a3_plus=6e-3, a2_minus=7e-3, a3_minus=2e-3, w_max=0.5),
    "reward": RewardSTDP(PairSTDP(a_plus=0.01, a_minus=0.012, w_max=0.5), tau_eligibility=0.2, learning_rate=0.5),
}


@pytest.mark.parametrize("name", list(RULES))
@pytest.mark.parametrize("sparse", [False, True])
def test_every_rule_runs_compiled_and_equals_the_torch_path_bit_for_bit(name: str, sparse: bool) -> None:
    rule = RULES[name]
    kw: dict[str, object] = {"sparse": sparse}
    if isinstance(rule, RewardSTDP):
        kw.update(reward_source="dopamine", reward_per_spike=0.2)
    w_t, learner_t, stats_t = _run(Backend.TORCH, rule, torch.float32, **kw)
    w_c, learner_c, stats_c = _run(Backend.AUTO, rule, torch.float32, **kw)
    assert stats_c.backends == {Backend.COMPILED} and stats_t.backends == {Backend.TORCH}
    assert stats_c.spikes == stats_t.spikes
    assert not torch.equal(w_t, _network(torch.float32, sparse=sparse).projections["ff"].synapse_weights())
    assert torch.equal(w_c, w_t)
    for a, b in zip(learner_c.state, learner_t.state, strict=True):
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,), strict=True):
            assert torch.equal(x, y)


def test_reward_from_a_source_moves_weights_and_no_reward_leaves_them() -> None:
    rule = RULES["reward"]
    w0 = _network(torch.float32).projections["ff"].synapse_weights()
    rewarded, _, _ = _run(Backend.AUTO, rule, torch.float32, reward_source="dopamine", reward_per_spike=0.2)
    unrewarded, learner, _ = _run(Backend.AUTO, rule, torch.float32)
    assert torch.equal(unrewarded, w0)  # eligibility only, until a reward comes
    assert float((rewarded - w0).abs().max()) > 1e-4
    learner.reward_episode(1.0)  # per-sample reward: the eligibility turns into a weight change
    assert float((learner.projection.synapse_weights() - w0).abs().max()) > 0


@pytest.mark.parametrize(
    ("targeted", "scope", "weight_scale"),
    [(False, "depression", 0.0), (True, "depression", 0.0), (True, "rule", 0.0), (True, "depression", 0.5)],
)
def test_sleep_rule_runs_compiled_and_equals_the_torch_path(targeted: bool, scope: str,
                                                            weight_scale: float) -> None:  # fmt: skip
    results = []
    for backend in (Backend.TORCH, Backend.AUTO):
        net = _network(torch.float32)
        sim = Simulation(net, dt=DT, seed=2, backend=backend, chunk_steps=128)
        fisher = torch.rand(net.projections["ff"].n_synapses, generator=torch.Generator().manual_seed(1))
        cfg = SleepConfig(inc=2e-3, dec=1e-3, protection_scope=scope, weight_scale=weight_scale)  # type: ignore[arg-type]
        replay = SleepReplay(net.projections["ff"], cfg, bounds=(0.0, 0.5), fisher=fisher)
        if targeted:  # per-neuron gains of targeted replay: learn, unlearn (flipped, scaled), frozen
            replay.post_gain.copy_(torch.tensor([1.0, -1.5, 0.0, 1.0, -0.5, 1.0]))
        sim.add_plasticity(replay)
        stats = sim.run(0.4)
        results.append((net.projections["ff"].synapse_weights(), stats))
    (w_t, s_t), (w_c, s_c) = results
    assert s_c.backends == {Backend.COMPILED} and s_c.spikes == s_t.spikes
    if weight_scale == 0:
        assert torch.equal(w_c, w_t)
    else:  # exp in numba and in PyTorch may differ in the last bit
        torch.testing.assert_close(w_c, w_t, rtol=0, atol=1e-6)


def _learning(backend: Backend, dtype: torch.dtype, *, steps: int = 700, snapshot_every: int = 64, **acc_kw: object):
    """STDP + EWC pull + surrogate gradient + Fisher EMA, as the experiment runs them."""
    net = _network(dtype)
    proj = net.projections["ff"]
    sim = Simulation(net, dt=DT, seed=7, backend=backend, dtype=dtype, chunk_steps=1000)
    readout = LinearReadout(6, 3, dtype=dtype)
    readout.weight = 0.05 * torch.randn((3, 6), generator=torch.Generator().manual_seed(0), dtype=dtype)
    surrogate = Surrogate(kind=SurrogateKind(str(acc_kw.pop("surrogate", "fast_sigmoid"))), width=2e-3)
    learner = STDPOnlineLearner(
        proj, PairSTDP(a_plus=0.01, a_minus=0.012, w_max=0.5), dt=DT, surrogate=surrogate, readout=readout
    )
    regulariser = EWCRegulariser(EWCConfig(lambda_=1.0, pull_rate=2e-3))
    anchor_fisher = torch.rand(proj.n_synapses, generator=torch.Generator().manual_seed(3), dtype=dtype)
    regulariser.consolidate("old", {learner.parameter_name: torch.full_like(anchor_fisher, 0.1)}, {
        learner.parameter_name: anchor_fisher
    })  # fmt: skip
    learner.regulariser = regulariser
    store = InMemoryFisherStore()
    config = FisherAccumulatorConfig(
        alpha=0.05, min_samples=10, snapshot_every=snapshot_every, max_staleness_steps=10_000, **acc_kw
    )  # type: ignore[arg-type]
    acc = FisherAccumulator(config, store, "task")
    learner.attach(sim, accumulator=acc)
    learner.begin_sample(torch.tensor([1]))
    stats = sim.run(steps * DT / 2)
    learner.begin_sample(torch.tensor([2]))  # a second sample: fresh counts
    stats2 = sim.run(steps * DT / 2)
    asyncio.run(acc.flush())
    acc.close()
    snapshots = [store.load("task", version) for version in store.versions("task")]
    return proj.synapse_weights(), acc, snapshots, stats, stats2, learner


# snapshot intervals on and off the compiled loop's 16-step Fisher fold blocks
@pytest.mark.parametrize(("surrogate", "snapshot_every"), [("fast_sigmoid", 64), ("arctan", 37)])
def test_gradient_fisher_and_pull_agree_between_paths_in_float64(surrogate: str, snapshot_every: int) -> None:
    kw = {"surrogate": surrogate, "snapshot_every": snapshot_every}
    w_t, acc_t, snaps_t, s_t, s2_t, l_t = _learning(Backend.TORCH, torch.float64, **kw)  # type: ignore[arg-type]
    w_c, acc_c, snaps_c, s_c, s2_c, l_c = _learning(Backend.AUTO, torch.float64, **kw)  # type: ignore[arg-type]
    assert s_c.backends == {Backend.COMPILED} and s2_c.backends == {Backend.COMPILED}
    assert (s_c.spikes, s2_c.spikes) == (s_t.spikes, s2_t.spikes)
    torch.testing.assert_close(w_c, w_t, rtol=1e-12, atol=0)
    f_t, f_c = acc_t.fisher[l_t.parameter_name], acc_c.fisher[l_c.parameter_name]
    assert float(f_t.max()) > 0
    torch.testing.assert_close(f_c, f_t, rtol=1e-6, atol=1e-12 * float(f_t.max()))
    stats_t, stats_c = acc_t.stats(), acc_c.stats()
    assert stats_c.steps == stats_t.steps == 700
    assert stats_c.snapshots_written == stats_t.snapshots_written
    assert stats_c.last_snapshot_step == stats_t.last_snapshot_step
    assert l_c._sample_steps == l_t._sample_steps and torch.equal(l_c._counts, l_t._counts)
    assert [x.step for x in snaps_c] == [x.step for x in snaps_t] and len(snaps_t) >= 3
    for a, b in zip(snaps_c, snaps_t, strict=True):
        np.testing.assert_allclose(a.arrays["ff.weight"], b.arrays["ff.weight"], rtol=1e-6, atol=1e-12)


def test_float32_paths_give_the_same_spikes_and_weights_and_a_close_fisher() -> None:
    w_t, acc_t, _, s_t, _, l_t = _learning(Backend.TORCH, torch.float32)
    w_c, acc_c, _, s_c, _, _ = _learning(Backend.AUTO, torch.float32)
    assert s_c.spikes == s_t.spikes
    assert torch.equal(w_c, w_t)  # the pull's coefficients come from a fixed anchor: no reduction feeds them
    torch.testing.assert_close(acc_c.fisher[l_t.parameter_name], acc_t.fisher[l_t.parameter_name], rtol=1e-4, atol=0)


def test_snapshots_land_exactly_on_snapshot_every_in_the_compiled_loop() -> None:
    steps_seen: list[int] = []

    class Recording(InMemoryFisherStore):
        def save(self, snapshot):  # type: ignore[no-untyped-def]
            steps_seen.append(snapshot.step)
            return super().save(snapshot)

    net = _network(torch.float32)
    sim = Simulation(net, dt=DT, seed=1, chunk_steps=1000)
    readout = LinearReadout(6, 3)
    readout.weight = 0.05 * torch.randn((3, 6), generator=torch.Generator().manual_seed(0))
    learner = STDPOnlineLearner(
        net.projections["ff"], PairSTDP(w_max=0.5), dt=DT, surrogate=Surrogate(width=2e-3), readout=readout
    )
    acc = FisherAccumulator(
        FisherAccumulatorConfig(alpha=0.05, min_samples=100, snapshot_every=70, max_staleness_steps=1000),
        Recording(),
        "t",
    )
    learner.attach(sim, accumulator=acc)
    learner.begin_sample(torch.tensor([0]))
    stats = sim.run(500 * DT)
    asyncio.run(acc.flush())
    assert stats.backends == {Backend.COMPILED}
    assert steps_seen == [100, 170, 240, 310, 380, 450]  # min_samples first, then every 70 steps
    assert acc.pending_steps == 50


@pytest.mark.parametrize("policy", [NonFinitePolicy.RAISE, NonFinitePolicy.SKIP])
def test_non_finite_gradients_in_the_compiled_loop_follow_the_policy(policy: NonFinitePolicy) -> None:
    net = _network(torch.float32)
    sim = Simulation(net, dt=DT, seed=1)
    readout = LinearReadout(6, 3)
    readout.weight = torch.full((3, 6), float("nan"))
    learner = STDPOnlineLearner(
        net.projections["ff"], PairSTDP(w_max=0.5), dt=DT, surrogate=Surrogate(width=2e-3), readout=readout
    )
    acc = FisherAccumulator(FisherAccumulatorConfig(non_finite=policy), InMemoryFisherStore(), "t")
    learner.attach(sim, accumulator=acc)
    learner.begin_sample(torch.tensor([0]))
    if policy is NonFinitePolicy.RAISE:
        with pytest.raises(NonFiniteGradientError, match="compiled loop"):
            sim.run(0.05)
        assert sim.step == 1  # the loop stopped after the first step's gradient
        assert acc.stats().steps == 0 and float(acc.fisher["ff.weight"].abs().sum()) == 0.0
    else:
        stats = sim.run(0.05)
        assert stats.backends == {Backend.COMPILED}
        assert acc.stats().skipped_non_finite == 100 and acc.stats().steps == 0


def _cycle_config() -> ContinualConfig:
    cfg = load_any_config(Path(__file__).parents[1] / "examples" / "continual_digits.toml")
    assert isinstance(cfg, ContinualConfig)
    return cfg.model_copy(
        update={
            "data": cfg.data.model_copy(update={"n_tasks": 2, "train_per_task": 6, "test_per_task": 5}),
            "fisher": cfg.fisher.model_copy(update={"snapshot_every": 150, "max_staleness_steps": 2000}),
            "sleep": cfg.sleep.model_copy(update={"duration": 0.1}),
        }
    )


def test_a_whole_learning_sleep_wake_cycle_is_the_same_on_both_paths(tmp_path: Path) -> None:
    cfg = _cycle_config()
    outcomes = []
    for backend in (Backend.TORCH, Backend.AUTO):
        experiment = Experiment(cfg, tmp_path / backend.value, progress=False, backend=backend, dtype=torch.float64)
        with (
            mock.patch.object(FisherAccumulator, "fold", autospec=True, side_effect=FisherAccumulator.fold) as fold,
            mock.patch.object(
                FisherAccumulator, "fold_external", autospec=True, side_effect=FisherAccumulator.fold_external
            ) as fold_external,
        ):
            results = asyncio.run(experiment.run())
        if backend is Backend.AUTO:  # every Fisher step was folded by the compiled loop, none per step in Python
            assert fold.call_count == 0 and fold_external.call_count > 0
        else:
            assert fold.call_count > 0 and fold_external.call_count == 0
        fisher = {t: experiment.fisher.store.load(t).arrays["input_exc.weight"] for t in experiment.fisher.accumulators}
        outcomes.append((results, experiment.proj.synapse_weights(), fisher, experiment.sim._last_stats))
    (r_t, w_t, f_t, _), (r_c, w_c, f_c, _) = outcomes
    assert r_c["accuracy_matrix_class_incremental"] == r_t["accuracy_matrix_class_incremental"]
    assert r_c["simulated_s"] == r_t["simulated_s"]
    torch.testing.assert_close(w_c, w_t, rtol=1e-6, atol=0)
    assert len(f_t) == 2
    for task in f_t:
        np.testing.assert_allclose(f_c[task], f_t[task], rtol=1e-6, atol=1e-9 * float(np.max(f_t[task])))


def test_the_compiled_ema_buffer_refuses_an_accumulator_it_cannot_feed() -> None:
    acc = FisherAccumulator(FisherAccumulatorConfig(), InMemoryFisherStore(), "t")
    acc.fold({"a": np.ones(3, np.float32), "b": np.ones(2, np.float32)})
    with pytest.raises(ValueError, match="feeds only 'a'"):
        acc.external_buffer("a", 3)
    single = FisherAccumulator(FisherAccumulatorConfig(), InMemoryFisherStore(), "u")
    single.fold({"a": np.ones(3, np.float32)})
    with pytest.raises(ValueError, match=r"needs \(4,\) on the cpu"):
        single.external_buffer("a", 4)
    with pytest.raises(ValueError, match=">= 0"):
        single.fold_external(-1)
