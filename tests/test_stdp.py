"""STDP rules on hand-computed spike pairs; Song et al. (2000) weights move to the bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import EXAMPLES

from neurosim.build import build_simulation
from neurosim.config import load_config
from neurosim.learning import STDPOnlineLearner, stdp
from neurosim.sim import Backend, SpikeMonitor

DT = 1e-4
ONE = stdp.Synapses(torch.tensor([0]), torch.tensor([0]))


def _train(rule: stdp.STDPRule, pre_steps: list[int], post_steps: list[int], w0: float, n_steps: int = 2000):
    w = torch.tensor([w0], dtype=torch.float64)
    state = stdp.initial_state(rule, 1, 1, 1, 1, dtype=torch.float64, device=torch.device("cpu"))
    for k in range(n_steps):
        pre = torch.tensor([[k in pre_steps]])
        post = torch.tensor([[k in post_steps]])
        if isinstance(rule, stdp.PairSTDP):
            w, state = stdp.pair_stdp_step(w, state, pre, post, ONE, rule, DT)
        elif isinstance(rule, stdp.TripletSTDP):
            w, state = stdp.triplet_stdp_step(w, state, pre, post, ONE, rule, DT)
        else:
            w, state = stdp.reward_stdp_step(w, state, pre, post, ONE, rule, DT)
    return float(w), state


def test_traces_decay_exponentially_and_jump_by_one() -> None:
    rule = stdp.PairSTDP(tau_pre=10e-3, tau_post=30e-3, a_plus=0.0, a_minus=0.0)
    _, state = _train(rule, [0, 100], [50], 0.005, n_steps=300)
    # pre spikes at steps 0 and 100, 300 steps run: trace at step 299
    expected_pre = math.exp(-299 * DT / 10e-3) + math.exp(-199 * DT / 10e-3)
    assert float(state.pre) == pytest.approx(expected_pre, rel=1e-9)
    assert float(state.post) == pytest.approx(math.exp(-249 * DT / 30e-3), rel=1e-9)


def test_pre_before_post_potentiates_by_the_window() -> None:
    rule = stdp.PairSTDP()
    w, _ = _train(rule, [100], [300], 0.005)  # post 20 ms after pre
    assert w - 0.005 == pytest.approx(1e-4 * math.exp(-200 * DT / 20e-3), rel=1e-9)


def test_post_before_pre_depresses_by_the_window() -> None:
    rule = stdp.PairSTDP()
    w, _ = _train(rule, [300], [100], 0.005)
    assert w - 0.005 == pytest.approx(-1.05e-4 * math.exp(-200 * DT / 20e-3), rel=1e-9)


def test_simultaneous_spikes_potentiate_like_brian2() -> None:
    w, _ = _train(stdp.PairSTDP(), [100], [100], 0.005)
    assert w - 0.005 == pytest.approx(1e-4, rel=1e-9)


def test_window_shape_matches_pairings() -> None:
    rule = stdp.PairSTDP(tau_pre=17e-3, tau_post=34e-3)
    lags = [-400, -150, -20, 0, 20, 150, 400]
    measured = [_train(rule, [500], [500 + lag], 0.005)[0] - 0.005 for lag in lags]
    window = stdp.stdp_window(rule, torch.tensor(lags, dtype=torch.float64) * DT)
    np.testing.assert_allclose(measured, window.numpy(), rtol=1e-9)
    assert all(m < 0 for m in measured[:3]) and all(m > 0 for m in measured[3:])


@pytest.mark.parametrize("dependence", list(stdp.WeightDependence))
def test_bounds_are_respected(dependence: stdp.WeightDependence) -> None:
    amplitude = 0.004 if dependence is stdp.WeightDependence.ADDITIVE else 0.3  # absolute vs fraction of room
    rule = stdp.PairSTDP(a_plus=amplitude, a_minus=amplitude, w_max=0.01, dependence=dependence)
    up, _ = _train(rule, list(range(0, 2000, 500)), list(range(2, 2000, 500)), 0.009)
    down, _ = _train(rule, list(range(2, 2000, 500)), list(range(0, 2000, 500)), 0.001)
    assert 0.0 <= down < 0.001 and 0.009 < up <= 0.01
    if dependence is stdp.WeightDependence.MULTIPLICATIVE:
        assert down > 0.0 and up < 0.01  # soft bounds are approached, never reached


def test_nearest_spike_traces_saturate_at_one() -> None:
    rule = stdp.PairSTDP(traces=stdp.TraceMode.NEAREST, a_plus=0.0, a_minus=0.0)
    _, state = _train(rule, [0, 1, 2, 3], [], 0.0, n_steps=4)
    assert float(state.pre) == pytest.approx(1.0)
    _, state = _train(stdp.PairSTDP(a_plus=0.0, a_minus=0.0), [0, 1, 2, 3], [], 0.0, n_steps=4)
    assert float(state.pre) > 3.9


def test_triplet_rule_rewards_post_pre_post_more_than_a_pair() -> None:
    rule = stdp.TripletSTDP(w_max=1.0, **stdp.TRIPLET_UNIT_AMPLITUDES)  # as published, weights in [0, 1]
    pair, _ = _train(rule, [100], [150], 0.5)
    triplet, _ = _train(rule, [100], [50, 150], 0.5)  # the earlier post spike boosts LTP via o2
    expected_pair = 5e-10 * math.exp(-50 * DT / 16.8e-3)
    assert pair - 0.5 == pytest.approx(expected_pair, rel=1e-6)
    depression = 7e-3 * math.exp(-50 * DT / 33.7e-3)
    boost = 6.2e-3 * math.exp(-100 * DT / 125e-3)
    assert triplet - 0.5 == pytest.approx(-depression + math.exp(-50 * DT / 16.8e-3) * (5e-10 + boost), rel=1e-6)


def test_reward_stdp_changes_weights_only_with_reward() -> None:
    rule = stdp.RewardSTDP(tau_eligibility=0.5, learning_rate=10.0)
    w, state = _train(rule, [100], [300], 0.005)
    assert w == 0.005  # no reward, no change, but an eligibility trace
    expected_c = 1e-4 * math.exp(-200 * DT / 20e-3) * math.exp(-1699 * DT / 0.5)
    assert float(state.eligibility) == pytest.approx(expected_c, rel=1e-6)
    w_new, state = stdp.apply_episode_reward(torch.tensor([w], dtype=torch.float64), state, 2.0, rule)
    assert float(w_new) - w == pytest.approx(10.0 * 2.0 * expected_c, rel=1e-6)
    assert float(state.eligibility) == 0.0
    w_step, _ = stdp.reward_stdp_step(
        torch.tensor([0.005], dtype=torch.float64),
        stdp.RewardState(state.traces, torch.tensor([1e-4], dtype=torch.float64)),
        torch.tensor([[False]]), torch.tensor([[False]]), ONE, rule, DT, reward=1.0,
    )  # fmt: skip
    assert float(w_step) - 0.005 == pytest.approx(10.0 * 1e-4 * math.exp(-DT / 0.5) * DT, rel=1e-6)


def test_invalid_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="w_min < w_max"):
        stdp.PairSTDP(w_min=1.0, w_max=0.5)
    with pytest.raises(ValueError, match="tau_pre must be positive"):
        stdp.PairSTDP(tau_pre=0.0)
    with pytest.raises(ValueError, match="a3_plus must be >= 0"):
        stdp.TripletSTDP(a3_plus=-1.0)


def _song(duration: float, backend: str) -> tuple[np.ndarray, np.ndarray, int]:
    cfg = load_config(EXAMPLES / "song2000_stdp.toml")
    data = cfg.model_dump(mode="json")
    data["run"]["backend"] = backend
    from neurosim.config import parse_config

    cfg = parse_config(data)
    sim = build_simulation(cfg)
    proj = sim.network.projections["input_neuron"]
    w0 = proj.synapse_weights().numpy().copy()
    STDPOnlineLearner(proj, cfg.plasticity[0].rule.to_rule(), dt=sim.dt).attach(sim)
    mon = sim.add_monitor(SpikeMonitor("neuron"))
    stats = sim.run(duration)
    assert stats.backends == {Backend(backend)}
    return w0, proj.synapse_weights().numpy(), mon.count


def test_song2000_weights_move_towards_both_bounds() -> None:
    w0, w, _ = _song(10.0, "compiled")
    gmax = 0.01
    low0, high0 = np.mean(w0 < 0.1 * gmax), np.mean(w0 > 0.9 * gmax)
    low, high = np.mean(w < 0.1 * gmax), np.mean(w > 0.9 * gmax)
    # competition splits the synapses: more end near 0 and more near gmax (bimodal, not a collapse)
    assert low > low0 + 0.03 and high > high0 + 0.01
    spread = np.abs(w - gmax / 2).mean() / (gmax / 2)
    assert spread > np.abs(w0 - gmax / 2).mean() / (gmax / 2) + 0.02
    assert w.mean() < w0.mean()  # depression dominates (a_minus = 1.05 a_plus)


def test_compiled_stdp_equals_the_torch_learner_bit_for_bit() -> None:
    w0_a, w_a, n_a = _song(0.5, "compiled")
    w0_b, w_b, n_b = _song(0.5, "torch")
    assert np.array_equal(w0_a, w0_b) and n_a == n_b > 0
    assert np.array_equal(w_a, w_b)


def test_the_rules_default_to_the_same_weight_units() -> None:
    pair, triplet = stdp.PairSTDP(), stdp.TripletSTDP()
    assert (pair.w_min, pair.w_max) == (triplet.w_min, triplet.w_max) == (0.0, 0.01)
    published = stdp.TRIPLET_UNIT_AMPLITUDES
    for name, value in published.items():  # Pfister & Gerstner's amplitudes, scaled by w_max
        assert getattr(triplet, name) == pytest.approx(value * triplet.w_max)
