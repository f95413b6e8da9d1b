"""Monitors keep memory bounded: subsets, windows, caps, streaming to disk."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cuba_config

from neurosim.build import build_simulation
from neurosim.sim import SpikeMonitor, StateMonitor, WeightMonitor


def test_subset_and_window_are_respected() -> None:
    sim = build_simulation(cuba_config(seed=2))
    full = sim.add_monitor(SpikeMonitor("exc"))
    part = sim.add_monitor(SpikeMonitor("exc", indices=range(100), start=0.05, stop=0.1))
    sim.run(0.15)
    keep = (full.indices < 100) & (full.times >= 0.05 - 1e-12) & (full.times <= 0.1 + 1e-12)
    assert part.count == keep.sum() > 0
    assert np.array_equal(part.steps, full.steps[keep])


def test_streaming_to_disk_keeps_nothing_in_memory_and_reads_back(tmp_path) -> None:
    sim = build_simulation(cuba_config(seed=2, chunk_steps=250))
    ref = sim.add_monitor(SpikeMonitor("inh"))
    streamed = sim.add_monitor(SpikeMonitor("inh", stream_to=tmp_path / "spikes"))
    sim.run(0.1)
    assert streamed._chunks == []
    files = sorted((tmp_path / "spikes").glob("chunk_*.npz"))
    assert len(files) == 4
    steps, indices, _instances, dt = SpikeMonitor.load(tmp_path / "spikes")
    assert np.array_equal(steps, ref.steps) and np.array_equal(indices, ref.indices) and dt == 1e-4


def test_spike_cap_drops_and_counts_with_one_warning() -> None:
    sim = build_simulation(cuba_config(seed=2))
    capped = sim.add_monitor(SpikeMonitor("exc", max_spikes=500))
    full = sim.add_monitor(SpikeMonitor("exc"))
    with pytest.warns(RuntimeWarning, match="max_spikes=500") as record:
        sim.run(0.2)
    assert len(record) == 1
    assert capped.count == 500 and capped.dropped == full.count - 500


def test_state_monitor_interval_subset_and_sample_cap() -> None:
    sim = build_simulation(cuba_config(seed=2))
    mon = sim.add_monitor(StateMonitor("exc", ["v", "g_inh"], indices=[3, 1], every=2e-3, max_samples=20))
    sim.run(0.1)
    assert mon.sample_steps == list(range(0, 400, 20))
    assert mon.values["v"].shape == (20, 1, 2) and mon.indices.tolist() == [1, 3]
    assert np.all(mon.values["v"] <= -50e-3 + 1e-6)


def test_weight_monitor_snapshots() -> None:
    sim = build_simulation(cuba_config())
    mon = sim.add_monitor(WeightMonitor("exc_inh", every=0.01))
    sim.run(0.035)
    assert mon.weights.shape == (4, sim.network.projections["exc_inh"].n_synapses)
    assert np.allclose(mon.weights, 1.62e-3)


def test_monitor_names_are_checked() -> None:
    sim = build_simulation(cuba_config())
    with pytest.raises(ValueError, match="unknown source 'ex'"):
        sim.add_monitor(SpikeMonitor("ex"))
    with pytest.raises(ValueError, match="has no variable 'theta'"):
        sim.add_monitor(StateMonitor("exc", ["theta"]))
    with pytest.raises(ValueError, match="indices must be in"):
        sim.add_monitor(SpikeMonitor("exc", indices=[5000]))


def test_rate_and_cv_of_regular_and_poisson_trains() -> None:
    from neurosim.sim.monitors import rate_and_cv

    regular_t = np.tile(np.arange(0.0, 1.0, 0.1), 3)  # 3 neurons at 10 Hz, perfectly regular
    regular_i = np.repeat(np.arange(3), 10)
    rate, cv = rate_and_cv(regular_t, regular_i, 4, 0.0, 1.0)  # a 4th neuron stays silent
    assert rate == 30 / 4 and abs(cv) < 1e-9
    rng = np.random.default_rng(0)
    times = np.concatenate([np.cumsum(rng.exponential(0.01, 2000)) for _ in range(20)])
    idx = np.repeat(np.arange(20), 2000)
    rate, cv = rate_and_cv(times, idx, 20, 0.0, 15.0)
    assert abs(rate - 100) < 3 and abs(cv - 1.0) < 0.05  # Poisson: CV 1
    two_spikes = rate_and_cv(np.array([0.1, 0.2]), np.array([0, 0]), 1, 0.0, 1.0)
    assert two_spikes[0] == 2.0 and np.isnan(two_spikes[1])  # one ISI is not enough for a CV
