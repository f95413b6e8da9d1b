"""Cross-validation against Brian2: the same network in both simulators gives the same result.

Brian2 runs with the numpy target (no compilation in CI). neurosim runs in float64 here, as
Brian2 does, so the comparison measures the models and the schedule, not float32 rounding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import EXAMPLES, cuba_config

from neurosim.backends.brian2 import UnsupportedByBrian2, run_brian2
from neurosim.build import build_simulation
from neurosim.config import SimulationConfig, load_config, parse_config
from neurosim.learning import STDPOnlineLearner
from neurosim.runner import RunBackend, run_simulation
from neurosim.sim import SpikeMonitor, StateMonitor

pytest.importorskip("brian2")
DT = 1e-4


def _input_spikes(n: int, rate: float, duration: float, seed: int) -> tuple[list[float], list[int]]:
    rng = np.random.default_rng(seed)
    steps, idx = np.nonzero(rng.random((int(duration / DT), n)) < rate * DT)
    return (steps * DT).tolist(), idx.tolist()


def _lif_config(kind: str) -> SimulationConfig:
    times, indices = _input_spikes(80, 25.0, 1.0, seed=3)
    if kind == "current_lif":
        model: dict[str, Any] = {"kind": "current_lif", "tau_m": 20e-3, "v_rest": -65e-3, "v_threshold": -55e-3,
                                 "v_reset": -70e-3, "t_ref": 2e-3, "tau_exc": 5e-3, "tau_inh": 10e-3}  # fmt: skip
        weights = {"kind": "uniform", "low": 0.0, "high": 5e-3}
    else:
        model = {"kind": "conductance_lif", "tau_m": 10e-3, "v_rest": -74e-3, "v_threshold": -54e-3,
                 "v_reset": -60e-3, "t_ref": 1e-3, "tau_exc": 5e-3, "e_exc": 0.0}  # fmt: skip
        weights = {"kind": "uniform", "low": 0.0, "high": 0.15}
    return parse_config({
        "run": {"dt": DT, "duration": 1.0, "seed": 2, "dtype": "float64"},
        "network": {
            "populations": [{"name": "lif", "n": 20, "model": model, "initial": {"v": {"uniform": [-0.07, -0.06]}}}],
            "inputs": [{"kind": "spike_array", "name": "drive", "n": 80, "times": times, "indices": indices}],
            "projections": [{"name": "drive_lif", "source": "drive", "target": "lif",
                             "connectivity": {"kind": "probability", "p": 0.5}, "weights": weights}],
        },
        "record": {"spikes": ["lif"], "state": [{"population": "lif", "variables": ["v"], "indices": [0, 5, 19],
                                                 "every": DT}]},
    })  # fmt: skip


@pytest.mark.parametrize("kind", ["current_lif", "conductance_lif"])
def test_same_input_spikes_give_the_same_output_spikes_and_membrane_traces(kind: str) -> None:
    cfg = _lif_config(kind)
    sim = build_simulation(cfg)
    spikes = sim.add_monitor(SpikeMonitor("lif"))
    trace = sim.add_monitor(StateMonitor("lif", ["v"], indices=[0, 5, 19], every=DT))
    sim.run(1.0)
    ref = run_brian2(cfg, target="numpy")
    ours = spikes.trains()
    assert ours.times.size > 100
    assert ours.times.size == ref.spikes["lif"].times.size
    ours_sorted = np.lexsort((ours.times, ours.indices))
    ref_sorted = np.lexsort((ref.spikes["lif"].times, ref.spikes["lif"].indices))
    assert np.array_equal(ours.indices[ours_sorted], ref.spikes["lif"].indices[ref_sorted])
    np.testing.assert_allclose(ours.times[ours_sorted], ref.spikes["lif"].times[ref_sorted], atol=DT * 1.001)
    np.testing.assert_allclose(trace.values["v"][:, 0, :], ref.state["lif"]["v"], rtol=0, atol=1e-5)


def _song_config(duration: float) -> SimulationConfig:
    data = load_config(EXAMPLES / "song2000_stdp.toml").model_dump(mode="json")
    times, indices = _input_spikes(1000, 15.0, duration, seed=11)
    data["network"]["inputs"] = [
        {"kind": "spike_array", "name": "input", "n": 1000, "times": times, "indices": indices}
    ]
    data["run"].update(duration=duration, dtype="float64")
    data["record"] = {"spikes": ["neuron"]}
    return parse_config(data)


def test_song2000_stdp_with_identical_inputs_matches_brian2() -> None:
    cfg = _song_config(2.0)
    sim = build_simulation(cfg)
    proj = sim.network.projections["input_neuron"]
    w0 = proj.synapse_weights().numpy().copy()
    STDPOnlineLearner(proj, cfg.plasticity[0].rule.to_rule(), dt=DT).attach(sim)
    out = sim.add_monitor(SpikeMonitor("neuron"))
    sim.run(2.0)
    ref = run_brian2(cfg, target="numpy")
    assert out.count > 40
    np.testing.assert_allclose(out.times, ref.spikes["neuron"].times, atol=DT * 1.001)
    gmax = 0.01
    w_ours = proj.synapse_weights().numpy()
    assert np.abs(w_ours - ref.weights["input_neuron"]).max() < 1e-6 * gmax
    assert np.abs(w_ours - w0).max() > 0.1 * gmax  # the weights did learn


def _isi_cv(times: np.ndarray, indices: np.ndarray) -> float:
    cvs = []
    for i in np.unique(indices):
        isi = np.diff(np.sort(times[indices == i]))
        if isi.size >= 2:
            cvs.append(isi.std() / isi.mean())
    return float(np.mean(cvs))


def test_cuba_statistics_agree_between_backends(tmp_path) -> None:
    cfg = cuba_config(seed=5, duration=1.0)
    runs = {}
    for backend in (RunBackend.NEUROSIM, RunBackend.BRIAN2):
        out = tmp_path / backend.value
        summary = run_simulation(cfg, out, progress=False, backend=backend, brian2_target="numpy")
        data = np.load(out / "spikes.npz")
        times = np.concatenate([data["exc_times"], data["inh_times"]])
        indices = np.concatenate([data["exc_indices"], data["inh_indices"] + 3200])
        rate = sum(p["spikes"] for p in summary["populations"].values()) / 4000
        runs[backend] = (rate, _isi_cv(times, indices))
    (rate_a, cv_a), (rate_b, cv_b) = runs[RunBackend.NEUROSIM], runs[RunBackend.BRIAN2]
    assert 4.0 < rate_a < 8.0
    assert abs(rate_a - rate_b) / rate_b < 0.10
    assert abs(cv_a - cv_b) / cv_b < 0.10


def test_unsupported_configs_are_refused_with_every_reason(tmp_path) -> None:
    data = load_config(EXAMPLES / "song2000_stdp.toml").model_dump(mode="json")
    data["run"]["batch"] = 2
    data["plasticity"][0]["rule"] = {"kind": "triplet"}
    cfg = parse_config(data)
    with pytest.raises(UnsupportedByBrian2) as info:
        run_simulation(cfg, tmp_path / "o", backend=RunBackend.BRIAN2)
    assert "run.batch = 2" in str(info.value) and "triplet STDP" in str(info.value)
    assert not (tmp_path / "o").exists()


def test_the_embedding_example_learns_inside_a_running_event_loop(tmp_path: Path, monkeypatch: Any,
                                                                  capsys: Any) -> None:  # fmt: skip
    """A notebook runs cells inside an event loop: the learner and the Fisher accumulator
    embedded in a Brian2 network_operation must work there (synchronous step, fold, snapshot_now)."""
    import asyncio
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["example", "--duration", "0.15", "--out", str(tmp_path)])

    async def notebook_cell() -> None:
        runpy.run_path(str(EXAMPLES / "brian2_embedded_learner.py"), run_name="__main__")

    asyncio.run(notebook_cell())
    out = capsys.readouterr().out
    assert "mean |dw|" in out and "Fisher snapshots for task-0: versions [1" in out
    assert sorted(p.name for p in (tmp_path / "fisher").iterdir()) == ["task-0"]


def _delayed_recurrent_config() -> SimulationConfig:
    """A recurrent E/I network whose every projection draws one delay per synapse (normal,
    redrawn below one step, as Potjans & Diesmann 2014; uniform on the drive; a zero-delay
    share on E -> E): a wrong delay anywhere changes the spikes that follow."""
    times, indices = _input_spikes(60, 30.0, 0.5, seed=5)
    model = {"kind": "current_lif", "tau_m": 10e-3, "v_rest": -65e-3, "v_threshold": -50e-3, "v_reset": -65e-3,
             "t_ref": 2e-3, "tau_exc": 0.5e-3, "tau_inh": 0.5e-3, "r_m": 4e7}  # fmt: skip
    v0 = {"v": {"normal": [-58e-3, 5e-3]}}

    def projection(name: str, source: str, target: str, channel: str, w: float, delay: dict[str, Any]) -> dict:
        return {"name": name, "source": source, "target": target, "channel": channel, "delay": delay,
                "connectivity": {"kind": "fixed_total", "n": 4000, "autapses": False},
                "weights": {"kind": "normal", "mean": w, "std": abs(w) * 0.1}}  # fmt: skip

    exc_delay = {"kind": "normal", "mean": 1.5e-3, "std": 0.75e-3}
    inh_delay = {"kind": "normal", "mean": 0.75e-3, "std": 0.375e-3}
    return parse_config({
        "run": {"dt": DT, "duration": 0.5, "seed": 4, "dtype": "float64"},
        "network": {
            "populations": [{"name": "e", "n": 160, "model": model, "initial": v0},
                            {"name": "i", "n": 40, "model": model, "initial": v0}],
            "inputs": [{"kind": "spike_array", "name": "drive", "n": 60, "times": times, "indices": indices}],
            "projections": [
                {"name": "drive_e", "source": "drive", "target": "e", "delay": {"kind": "uniform", "low": 0.0,
                 "high": 3e-3}, "connectivity": {"kind": "probability", "p": 0.3},
                 "weights": {"kind": "constant", "value": 40e-3}},
                projection("e_e", "e", "e", "exc", 20e-3, {"kind": "uniform", "low": 0.0, "high": 2e-3}),
                projection("e_i", "e", "i", "exc", 20e-3, exc_delay),
                projection("i_e", "i", "e", "inh", -80e-3, inh_delay),
                projection("i_i", "i", "i", "inh", -80e-3, inh_delay),
            ],
        },
        "record": {"spikes": ["e", "i"]},
    })  # fmt: skip


@pytest.mark.parametrize("backend", ["torch", "compiled"])
def test_per_synapse_delays_give_the_same_spikes_as_brian2(backend: str) -> None:
    cfg = _delayed_recurrent_config()
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"backend": backend})})
    sim = build_simulation(cfg)
    delays = sim.network.projections["e_i"].delays_per_synapse().numpy()
    assert delays.min() >= 1 and np.unique(delays).size > 20  # one delay per synapse, none below a step
    assert sim.network.projections["e_e"].synapse_delays is not None
    monitors = {pop: sim.add_monitor(SpikeMonitor(pop)) for pop in ("e", "i")}
    sim.run(0.5)
    ref = run_brian2(cfg, target="numpy")
    for pop, monitor in monitors.items():
        ours, theirs = monitor.trains(), ref.spikes[pop]
        assert ours.times.size > 100, pop
        ours_order = np.lexsort((ours.times, ours.indices))
        their_order = np.lexsort((theirs.times, theirs.indices))
        assert np.array_equal(ours.indices[ours_order], theirs.indices[their_order]), pop
        np.testing.assert_allclose(ours.times[ours_order], theirs.times[their_order], atol=DT * 1.001)


def test_a_poisson_drive_fires_neurons_at_brian2s_poisson_input_rate() -> None:
    """The same background (1,600 sources at 8 Hz per neuron, as Potjans & Diesmann 2014's L2/3e,
    and an inhibitory one) through neurosim's PoissonDrive and Brian2's PoissonInput: the same
    firing rate and irregularity (their random numbers differ, so statistically)."""
    model = {"kind": "current_lif", "tau_m": 10e-3, "v_rest": -65e-3, "v_threshold": -50e-3, "v_reset": -65e-3,
             "t_ref": 2e-3, "tau_exc": 0.5e-3, "tau_inh": 0.5e-3, "r_m": 4e7}  # fmt: skip
    cfg = parse_config({
        "run": {"dt": DT, "duration": 1.0, "seed": 3, "dtype": "float64"},
        "network": {
            "populations": [{"name": "n", "n": 400, "model": model, "initial": {"v": {"normal": [-58e-3, 10e-3]}}}],
            "inputs": [{"kind": "poisson_drive", "name": "bg", "target": "n", "n": 1600, "rate": 8.0,
                        "weight": 3.0e-3},
                       {"kind": "poisson_drive", "name": "bg_inh", "target": "n", "n": 300, "rate": "10 Hz",
                        "weight": -4e-3, "channel": "inh"}],
        },
    })  # fmt: skip
    sim = build_simulation(cfg)
    monitor = sim.add_monitor(SpikeMonitor("n"))
    sim.run(1.0)
    ours, theirs = monitor.trains(), run_brian2(cfg, target="numpy").spikes["n"]
    rate_ours, rate_theirs = ours.times.size / 400, theirs.times.size / 400
    assert rate_ours > 3.0
    assert abs(rate_ours - rate_theirs) < 0.06 * rate_theirs, (rate_ours, rate_theirs)
    assert abs(_isi_cv(ours.times, ours.indices) - _isi_cv(theirs.times, theirs.indices)) < 0.05
