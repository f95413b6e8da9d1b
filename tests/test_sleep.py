"""The sleep replay rule: causal potentiation, Fisher-protected depression, bounds."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest
import torch

from neurosim.learning.sleep import (
    SleepConfig,
    calibrate_gain,
    combine_fishers,
    dependence_width,
    fisher_protection,
    sleep_episode,
    sleep_update,
)


def test_sleep_rule_potentiates_causal_and_depresses_the_rest_less_where_important() -> None:
    cfg = SleepConfig(inc=0.01, dec=0.004, window=5e-3, fisher_protection=3.0)
    pre_index = torch.tensor([0, 1, 2, 0])
    post_index = torch.tensor([0, 0, 0, 1])
    w = torch.full((4,), 0.5, dtype=torch.float64)
    last_pre = torch.tensor([[0.098, 0.05, -math.inf]], dtype=torch.float64)  # pre 0 fired 2 ms ago
    post = torch.tensor([[True, False]])  # only post 0 fired
    protection = fisher_protection(torch.tensor([0.0, 0.0, 2.0, 0.0], dtype=torch.float64), cfg.fisher_protection)
    assert protection is not None
    new = sleep_update(w, last_pre, post, 0.1, pre_index, post_index, protection, cfg, (0.0, 1.0))
    assert new[0] == pytest.approx(0.51)  # causal: + inc
    assert new[1] == pytest.approx(0.496)  # pre fired 50 ms ago: - dec
    assert new[2] == pytest.approx(0.5 - 0.004 / 4)  # important synapse (F = max): dec / (1 + 3)
    assert new[3] == 0.5  # its post neuron did not fire
    clipped = sleep_update(w, last_pre, post, 0.1, pre_index, post_index, protection, cfg, (0.0, 0.505))
    assert float(clipped.max()) == pytest.approx(0.505)


def test_protecting_the_whole_rule_shields_important_synapses_from_potentiation_too() -> None:
    cfg = SleepConfig(inc=0.01, dec=0.004, window=5e-3, fisher_protection=3.0, protection_scope="rule")
    pre_index, post_index = torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0])
    w = torch.full((3,), 0.5, dtype=torch.float64)
    last_pre = torch.tensor([[0.098, 0.099, 0.05]], dtype=torch.float64)  # pre 0 and 1 causal, pre 2 not
    protection = fisher_protection(torch.tensor([0.0, 2.0, 2.0], dtype=torch.float64), cfg.fisher_protection)
    assert protection is not None
    new = sleep_update(w, last_pre, torch.tensor([[True]]), 0.1, pre_index, post_index, protection, cfg, (0.0, 1.0))
    assert new[0] == pytest.approx(0.51)  # unimportant: the rule as written
    assert new[1] == pytest.approx(0.5 + 0.01 / 4)  # important and causal: inc / (1 + 3)
    assert new[2] == pytest.approx(0.5 - 0.004 / 4)  # important, not causal: dec / (1 + 3), as before


def test_weight_dependent_sleep_reshapes_weak_synapses_and_hardly_moves_strong_ones() -> None:
    """Tadros et al.'s own rule: every change times s(w) = 2 / (1 + exp(w / a)), with ``a`` a
    multiple (``weight_scale``) of the layer's mean |w| at sleep onset."""
    cfg = SleepConfig(inc=0.01, dec=0.004, window=5e-3, fisher_protection=0.0, weight_scale=0.5)
    w = torch.tensor([0.0, 0.1, 0.5, 0.0, 0.1, 0.5], dtype=torch.float64)  # mean |w| 0.2: a = 0.1
    width = dependence_width(w, cfg)
    assert width == pytest.approx(0.1)
    pre_index, post_index = torch.arange(6), torch.zeros(6, dtype=torch.long)
    last_pre = torch.tensor([[0.099] * 3 + [0.0] * 3], dtype=torch.float64)  # the first three causal
    ones = torch.ones(6, dtype=torch.float64)
    new = sleep_update(w, last_pre, torch.tensor([[True]]), 0.1, pre_index, post_index, ones, cfg, (0.0, 1.0),
                       None, width)  # fmt: skip
    s = 2 / (1 + np.exp(np.array([0.0, 1.0, 5.0])))  # 1, 0.54, 0.013
    np.testing.assert_allclose((new - w)[:3].numpy(), 0.01 * s)
    np.testing.assert_allclose((new - w)[4:].numpy(), -0.004 * s[1:])
    assert float(new[3]) == 0.0  # clipped at the lower bound
    additive = sleep_update(w, last_pre, torch.tensor([[True]]), 0.1, pre_index, post_index, ones, cfg, (0.0, 1.0))
    np.testing.assert_allclose((additive - w)[:3].numpy(), 0.01)
    assert dependence_width(w, SleepConfig()) == 0.0
    with pytest.raises(ValueError, match="positive mean"):
        dependence_width(torch.zeros(4), cfg)


def test_per_task_fishers_count_every_task_alike_whatever_its_scale() -> None:
    small = torch.tensor([1.0, 0.0, 0.0, 0.5])  # an early task with small gradients
    large = torch.tensor([0.0, 0.0, 1000.0, 0.0])  # the latest, with large ones
    summed = combine_fishers([small, large], "sum")
    per_task = combine_fishers([small, large], "per-task")
    assert summed is not None and per_task is not None
    assert torch.equal(summed, small + large)
    assert torch.equal(per_task, torch.tensor([1.0, 0.0, 1.0, 0.5]))
    # with the sum, the early task's most important synapse is barely protected
    weak, even = fisher_protection(summed, 10.0), fisher_protection(per_task, 10.0)
    assert weak is not None and even is not None
    assert float(weak[0]) > 0.98 and float(even[0]) == pytest.approx(1 / 11)
    assert combine_fishers([], "per-task") is None
    assert torch.equal(combine_fishers([torch.zeros(3)], "per-task"), torch.zeros(3))  # type: ignore[arg-type]


def test_invalid_sleep_config_is_refused() -> None:
    with pytest.raises(ValueError, match="downscale"):
        SleepConfig(downscale=1.5)
    with pytest.raises(ValueError, match="protection_scope"):
        SleepConfig(protection_scope="potentiation")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weight_scale"):
        SleepConfig(weight_scale=-1.0)


# ----------------------------------------------------------------------------- sleep episodes
def _layer(n_in: int = 16, n_out: int = 8, theta_plus: float = 1e-3) -> tuple[Any, Any]:
    from neurosim.sim import AdaptiveLIF, Network, PoissonInput, Population, Projection, Simulation
    from neurosim.sim import connectivity as conn

    net = Network()
    net.add_input(PoissonInput("input", n_in, 0.0))
    exc = AdaptiveLIF(tau_m=20e-3, v_rest=-65e-3, v_reset=-65e-3, v_threshold=-55e-3, t_ref=2e-3, tau_exc=2e-3,
                      tau_inh=2e-3, e_exc=0.0, e_inh=-100e-3, tau_theta=1e4, theta_plus=theta_plus)  # fmt: skip
    net.add_population(Population("exc", n_out, exc, {"v": -65e-3}))
    pre, post = conn.all_to_all(n_in, n_out)
    w = conn.uniform_weights(pre.size, 0.0, 0.3, np.random.default_rng(0))
    net.add_projection(Projection.from_pairs("ff", "input", "exc", n_in, n_out, pre, post, w))
    return net, Simulation(net, dt=5e-4, seed=3)


def test_calibration_finds_the_gain_that_drives_the_layer_at_the_target_rate() -> None:
    net, sim = _layer(theta_plus=0.0)  # a fixed layer, so the rate depends on the gain alone
    rates = np.linspace(5.0, 40.0, 16)
    gain = asyncio.run(calibrate_gain(sim, net.inputs["input"], "exc", rates, 20.0, probe=0.5, iterations=10))
    before = sim.spike_counts["exc"]
    net.inputs["input"].set_rates(gain * rates)
    sim.run(2.0)
    rate = (sim.spike_counts["exc"] - before) / (8 * 2.0)
    assert 12.0 < rate < 30.0  # a factor-of-two band around the 20 Hz target, over fresh noise
    with pytest.raises(ValueError, match="target_rate"):
        asyncio.run(calibrate_gain(sim, net.inputs["input"], "exc", rates, 0.0))
    with pytest.raises(ValueError, match="no positive rate"):
        asyncio.run(calibrate_gain(sim, net.inputs["input"], "exc", np.zeros(16), 5.0))


@pytest.mark.parametrize("plasticity", [True, False])
def test_a_sleep_episode_replays_and_restores_the_layer(plasticity: bool) -> None:
    net, sim = _layer()
    exc_params = net.populations["exc"].params
    theta = sim.state["exc"].theta.clone() + 2e-3
    sim.state["exc"] = sim.state["exc"]._replace(theta=theta)
    w0 = net.projections["ff"].synapse_weights().clone()
    statistics = [np.r_[np.full(8, 30.0), np.zeros(8)], np.r_[np.zeros(8), np.full(8, 30.0)]]
    cfg = SleepConfig(duration=1.0, block=0.1, inc=5e-3, dec=5e-4, plasticity=plasticity)
    fisher = torch.zeros(w0.numel())
    fisher[: w0.numel() // 4] = 1.0  # a quarter of the synapses important: their depression cut to 1/11
    report = asyncio.run(
        sleep_episode(sim, projection=net.projections["ff"], inputs=net.inputs["input"], statistics=statistics,
                      cfg=cfg, wake_rate=10.0, rng=np.random.default_rng(0), fisher=fisher)
    )  # fmt: skip
    assert report.protected_fraction == (0.25 if plasticity else 0.0)  # no rule, nothing held
    assert report.spikes_per_neuron.sum() == report.trains.times.size > 0
    assert report.duration_s == pytest.approx(1.0) and report.gain > 0
    assert report.rate_hz == pytest.approx(report.trains.times.size / (8 * 1.0))
    assert net.populations["exc"].params is exc_params  # thresholds back to their wake values
    assert torch.equal(sim.state["exc"].theta, theta)  # adaptive thresholds restored
    assert net.inputs["input"].rates.max() == 0.0  # input silenced after sleep
    change = net.projections["ff"].synapse_weights() - w0
    assert torch.equal(change, report.weight_change)
    assert (float(change.abs().max()) > 0) is plasticity  # the control changes no weight


def test_uniform_sleep_drive_is_flat_at_the_same_mean_rate() -> None:
    net, sim = _layer()
    statistics = [np.r_[np.full(8, 40.0), np.zeros(8)]]
    seen: list[np.ndarray] = []
    original = net.inputs["input"].set_rates

    def spy(rates: Any) -> None:
        seen.append(np.broadcast_to(np.asarray(rates, dtype=np.float64), (16,)).copy())
        original(rates)

    net.inputs["input"].set_rates = spy  # type: ignore[method-assign]
    cfg = SleepConfig(duration=0.2, block=0.1, drive="uniform", calibrate=False, rate_scale=2.0)
    asyncio.run(sleep_episode(sim, projection=net.projections["ff"], inputs=net.inputs["input"],
                              statistics=statistics, cfg=cfg, rng=np.random.default_rng(0)))  # fmt: skip
    drives = [r for r in seen if r.max() > 0]
    assert len(drives) == 2 and all(np.all(r == 40.0) for r in drives)  # 2 * mean(20 Hz), every pixel


def test_sleep_episode_refuses_what_it_cannot_do() -> None:
    net, sim = _layer()
    kwargs: dict[str, Any] = {"projection": net.projections["ff"], "inputs": net.inputs["input"],
                              "rng": np.random.default_rng(0)}  # fmt: skip
    with pytest.raises(ValueError, match="at least one stored input statistic"):
        asyncio.run(sleep_episode(sim, statistics=[], cfg=SleepConfig(), **kwargs))
    with pytest.raises(ValueError, match="needs a target"):
        asyncio.run(sleep_episode(sim, statistics=[np.ones(16)], cfg=SleepConfig(), **kwargs))
    with pytest.raises(ValueError, match="drive"):
        SleepConfig(drive="pink-noise")  # type: ignore[arg-type]


def test_targeted_replay_teaches_the_replayed_class_and_leaves_unassigned_neurons_alone() -> None:
    net, sim = _layer()
    proj = net.projections["ff"]
    w0 = proj.synapse_weights().clone()
    left, right = np.r_[np.full(8, 40.0), np.zeros(8)], np.r_[np.zeros(8), np.full(8, 40.0)]
    assignments = np.array([0, 0, 0, 1, 1, 1, -1, -1])
    cfg = SleepConfig(duration=2.0, block=0.1, inc=5e-3, dec=5e-4, drive="class-means", targeted=True,
                      adapt_thresholds=True, fisher_protection=0.0)  # fmt: skip
    asyncio.run(sleep_episode(sim, projection=proj, inputs=net.inputs["input"], statistics=[left, right], cfg=cfg,
                              wake_rate=10.0, rng=np.random.default_rng(0), labels=[0, 1],
                              assignments=assignments))  # fmt: skip
    change = (proj.synapse_weights() - w0).reshape(16, 8)  # (pre, post): all-to-all, pre-major
    assert float(change[:, 6:].abs().max()) == 0.0  # unassigned neurons: no plasticity
    # class-0 neurons gain on the pixels of class 0's statistic relative to the others, class-1 neurons the reverse
    assert float(change[:8, :3].mean() - change[8:, :3].mean()) > 0
    assert float(change[8:, 3:6].mean() - change[:8, 3:6].mean()) > 0
    with pytest.raises(ValueError, match="one class label per statistic"):
        asyncio.run(sleep_episode(sim, projection=proj, inputs=net.inputs["input"], statistics=[left, right],
                                  cfg=cfg, wake_rate=10.0, rng=np.random.default_rng(0), labels=[0]))  # fmt: skip
