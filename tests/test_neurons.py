"""Neuron models against closed-form solutions (float64, tight tolerances)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neurosim.sim import (
    AdaptiveLIF,
    ConductanceLIF,
    CurrentInput,
    CurrentLIF,
    Network,
    Population,
    Projection,
    Simulation,
    SpikeArrayInput,
    SpikeMonitor,
    StateMonitor,
)
from neurosim.sim.neurons import LIFState, initial_state, step

DT = 1e-4


def _single(params, *, current: float | None = None, backend: str = "torch", initial=None):
    net = Network()
    net.add_population(Population("n", 1, params, initial or {}))
    if current is not None:
        net.add_current(CurrentInput("i", "n", current))
    sim = Simulation(net, dt=DT, dtype=torch.float64, backend=backend)
    return net, sim


@pytest.mark.parametrize("backend", ["torch", "compiled"])
def test_current_lif_charges_like_the_analytic_rc_curve(backend: str) -> None:
    params = CurrentLIF(v_rest=-70e-3, v_threshold=-40e-3, v_reset=-70e-3, tau_m=20e-3, r_m=1e8)
    _, sim = _single(params, current=0.2e-9, backend=backend)  # r_m * I = 20 mV, below threshold
    mon = sim.add_monitor(StateMonitor("n", ["v"], every=DT))
    sim.run(0.1)
    t = mon.times
    expected = -70e-3 + 20e-3 * (1 - np.exp(-t / 20e-3))
    np.testing.assert_allclose(mon.values["v"][:, 0, 0], expected, rtol=0, atol=1e-12)
    # golden value: v(50 ms) = -70 mV + 20 mV (1 - e^-2.5)
    assert mon.values["v"][500, 0, 0] == pytest.approx(-0.051641699972477, abs=1e-12)


@pytest.mark.parametrize("backend", ["torch", "compiled"])
def test_current_lif_psp_matches_difference_of_exponentials(backend: str) -> None:
    params = CurrentLIF(v_rest=-70e-3, v_threshold=-40e-3, v_reset=-70e-3, tau_m=20e-3, tau_exc=5e-3)
    net = Network()
    net.add_population(Population("n", 1, params))
    net.add_input(SpikeArrayInput("s", 1, [0.01], [0]))
    w = 2e-3
    one = np.array([0])
    net.add_projection(
        Projection.from_pairs("p", "s", "n", 1, 1, one, one, np.array([w], np.float32), dtype=torch.float64)
    )
    sim = Simulation(net, dt=DT, dtype=torch.float64, backend=backend)
    mon = sim.add_monitor(StateMonitor("n", ["v", "g_exc"], every=DT))
    sim.run(0.06)
    # the spike of step 100 lands in g_exc after that step's update: visible from step 101
    s = mon.times - 0.0101
    expected = np.where(
        s >= -1e-12, float(np.float32(w)) * 5e-3 / (5e-3 - 20e-3) * (np.exp(-s / 5e-3) - np.exp(-s / 20e-3)), 0
    )
    np.testing.assert_allclose(mon.values["v"][:, 0, 0], -70e-3 + expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ["torch", "compiled"])
def test_spike_times_and_refractory_period_match_theory(backend: str) -> None:
    params = CurrentLIF(v_rest=-70e-3, v_threshold=-50e-3, v_reset=-70e-3, tau_m=10e-3, t_ref=2e-3)
    _, sim = _single(params, current=0.3e-9, backend=backend)  # drive 30 mV > 20 mV threshold
    mon = sim.add_monitor(SpikeMonitor("n"))
    sim.run(0.2)
    # time to threshold from reset: tau ln(30 / (30 - 20)); first step where v > vt
    t_cross = 10e-3 * math.log(3.0)
    first = math.floor(t_cross / DT + 1e-9)
    steps = mon.steps
    assert steps[0] == first
    # after a spike at step n, v is held for R - 1 updates and then charges again from reset
    isi = np.diff(steps)
    expected_isi = round(2e-3 / DT) - 1 + first + 1
    assert set(isi.tolist()) == {expected_isi}


def test_conductance_lif_relaxes_to_the_conductance_weighted_reversal() -> None:
    # A frozen conductance (tau_exc huge): exponential Euler is exact, so v follows
    # v_inf + (v0 - v_inf) exp(-t (1 + g) / tau_m) to rounding.
    params = ConductanceLIF(tau_m=10e-3, v_rest=-74e-3, v_threshold=0.5, v_reset=-74e-3, tau_exc=1e9, e_exc=0.0)
    state = initial_state(params, 1, 1, dtype=torch.float64, device=torch.device("cpu"))
    g = 0.5
    state = state._replace(g_exc=torch.full((1, 1), g, dtype=torch.float64))
    v_inf = (-74e-3 + g * 0.0) / (1 + g)
    for k in range(1, 301):
        _, state = step(state, None, params, DT)
        exact = v_inf + (-74e-3 - v_inf) * math.exp(-k * DT * (1 + g) / 10e-3)
        assert float(state.v) == pytest.approx(exact, abs=1e-9)


def test_adaptive_threshold_grows_per_spike_and_decays() -> None:
    params = AdaptiveLIF(
        tau_m=10e-3, tau_theta=0.1, theta_plus=1e-3, v_threshold=-60e-3, v_reset=-65e-3, v_rest=-65e-3, t_ref=0.0
    )
    _, sim = _single(params, current=1e-9, initial={"theta": 0.0})
    spikes = sim.add_monitor(SpikeMonitor("n"))
    theta = sim.add_monitor(StateMonitor("n", ["theta"], every=DT))
    sim.run(0.1)
    th = theta.values["theta"][:, 0, 0]
    n_spikes = spikes.count
    assert n_spikes > 3
    # each spike adds exactly theta_plus; between spikes theta decays by exp(-dt / tau)
    jumps = th[1:] - th[:-1] * math.exp(-DT / 0.1)
    visible = int((spikes.steps < theta.sample_steps[-1]).sum())  # a spike shows in the next sample
    assert np.isclose(jumps, 1e-3, atol=1e-12).sum() == visible
    # the spikes get sparser as theta rises
    isi = np.diff(spikes.steps)
    assert isi[-1] > isi[0]


def test_invalid_parameters_are_refused_with_the_field_name() -> None:
    with pytest.raises(ValueError, match=r"CurrentLIF.tau_m must be a positive"):
        CurrentLIF(tau_m=-1.0)
    with pytest.raises(ValueError, match=r"v_reset .* must be below v_threshold"):
        ConductanceLIF(v_reset=-50e-3, v_threshold=-54e-3)
    with pytest.raises(ValueError, match=r"AdaptiveLIF.theta_plus must be >= 0"):
        AdaptiveLIF(theta_plus=-1.0)


def test_step_is_pure() -> None:
    params = CurrentLIF()
    state = LIFState(*(torch.full((2, 3), x, dtype=torch.float32) for x in (-0.0495, 0.001, -0.002, 0.0)))
    before = [t.clone() for t in state]
    step(state, None, params, DT)
    for a, b in zip(before, state, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("params", [CurrentLIF(t_ref=2e-3), AdaptiveLIF(theta_plus=1e-3)])
def test_a_surrogate_step_has_the_same_forward_values_and_passes_gradients(params: CurrentLIF | AdaptiveLIF) -> None:
    from neurosim.learning.surrogate import Surrogate

    torch.manual_seed(0)
    dt, n = 1e-4, 50
    plain = initial_state(params, 2, n, dtype=torch.float64, device=torch.device("cpu"))
    trained = plain
    current = torch.rand((200, 2, n), dtype=torch.float64) * 6e-10
    current.requires_grad_(True)
    total_spikes = 0
    readout = torch.zeros((), dtype=torch.float64)
    for k in range(200):
        spikes, plain = step(plain, current[k].detach(), params, dt)
        spikes_f, trained = step(trained, current[k], params, dt, surrogate=Surrogate(width=1e-3))
        assert torch.equal(spikes, spikes_f.bool())
        torch.testing.assert_close(trained.v.detach(), plain.v, rtol=0, atol=1e-12)
        total_spikes += int(spikes.sum())
        readout = readout + spikes_f.sum()
    assert total_spikes > 10
    readout.backward()
    assert current.grad is not None and float(current.grad.abs().sum()) > 0
