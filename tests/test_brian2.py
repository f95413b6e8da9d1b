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


def _main_job_layer_config(duration: float, backend: str) -> SimulationConfig:
    """The main job's Diehl & Cook layer (``examples/continual_digits.toml``, built by
    ``build_layer``: its neurons, connections and pair STDP) as a plain simulation, driven by
    shipped digits at the presenter's brightest boost (4 x ``max_rate``) for ``present`` s
    each with ``rest`` s between, the input spikes drawn once and handed to both simulators."""
    import dataclasses

    import torch

    from neurosim.config import ContinualConfig, load_any_config
    from neurosim.datasets import load_digits
    from neurosim.phases.schedule import build_layer
    from neurosim.sim import Backend

    main = load_any_config(EXAMPLES / "continual_digits.toml")
    assert isinstance(main, ContinualConfig)
    layer, _ = build_layer(main, 64, Backend.COMPILED, torch.float64)
    pops = layer.network.populations
    models = {name: {"kind": kind, **dataclasses.asdict(pops[name].params)}
              for name, kind in (("exc", "adaptive_lif"), ("inh", "conductance_lif"))}  # fmt: skip
    images, rng, dt = load_digits().images, np.random.default_rng(7), main.dt
    times: list[float] = []
    indices: list[int] = []
    per_image = main.data.present + main.data.rest
    for k in range(int(duration / per_image)):
        rates = 4 * main.data.max_rate * images[k] / images[k].max()
        steps, idx = np.nonzero(rng.random((round(main.data.present / dt), images[k].size)) < rates * dt)
        times += (k * per_image + steps * dt).tolist()
        indices += idx.tolist()
    net = main.network
    return parse_config({
        "run": {"dt": dt, "duration": duration, "seed": 2, "dtype": "float64", "backend": backend},
        "network": {
            "populations": [
                {"name": "exc", "n": net.n_hidden, "model": models["exc"],
                 "initial": {"v": pops["exc"].params.v_rest, "theta": net.theta_init}},
                {"name": "inh", "n": net.n_hidden, "model": models["inh"], "initial": {"v": pops["inh"].params.v_rest}},
            ],
            "inputs": [{"kind": "spike_array", "name": "input", "n": 64, "times": times, "indices": indices}],
            "projections": [
                {"name": "input_exc", "source": "input", "target": "exc", "connectivity": {"kind": "all_to_all"},
                 "weights": {"kind": "uniform", "low": 0.0, "high": net.w_init_max}},
                {"name": "exc_inh", "source": "exc", "target": "inh", "connectivity": {"kind": "one_to_one"},
                 "weights": {"kind": "constant", "value": net.exc_to_inh}},
                {"name": "inh_exc", "source": "inh", "target": "exc", "channel": "inh",
                 "connectivity": {"kind": "all_to_all", "autapses": False},
                 "weights": {"kind": "constant", "value": net.inh_to_exc}},
            ],
        },
        "plasticity": [{"projection": "input_exc", "rule": main.stdp.model_dump(mode="json")}],
        "record": {"spikes": ["exc", "inh"],
                   "state": [{"population": "exc", "variables": ["theta"], "indices": list(range(net.n_hidden)),
                              "every": 0.5}]},
    })  # fmt: skip


@pytest.mark.parametrize("backend", ["compiled", "torch"])
def test_the_main_jobs_layer_learns_as_in_brian2(backend: str) -> None:
    """What a LEARNING phase simulates (adaptive thresholds, lateral inhibition, pair STDP on the
    input weights), on both of neurosim's paths: the same spikes, thresholds and weights as Brian2."""
    cfg = _main_job_layer_config(3.0, backend)
    sim = build_simulation(cfg)
    proj = sim.network.projections["input_exc"]
    w0 = proj.synapse_weights().numpy().copy()
    STDPOnlineLearner(proj, cfg.plasticity[0].rule.to_rule(), dt=cfg.run.dt).attach(sim)
    monitors = {pop: sim.add_monitor(SpikeMonitor(pop)) for pop in ("exc", "inh")}
    theta = sim.add_monitor(StateMonitor("exc", ["theta"], indices=list(range(100)), every=0.5))
    sim.run(cfg.run.duration)
    ref = run_brian2(cfg, target="numpy")
    for pop, monitor in monitors.items():
        ours, theirs = monitor.trains(), ref.spikes[pop]
        assert ours.times.size > 200, pop
        ours_order, their_order = np.lexsort((ours.indices, ours.times)), np.lexsort((theirs.indices, theirs.times))
        assert np.array_equal(ours.indices[ours_order], theirs.indices[their_order]), pop
        np.testing.assert_allclose(ours.times[ours_order], theirs.times[their_order], atol=cfg.run.dt * 1.001)
    np.testing.assert_allclose(theta.values["theta"][:, 0, :], ref.state["exc"]["theta"], rtol=1e-9)
    adapted = theta.values["theta"][-1, 0, :] - theta.values["theta"][0, 0, :]
    assert adapted.max() > 5e-3  # the winners' thresholds did adapt (0.1 mV a spike)
    w = proj.synapse_weights().numpy()
    np.testing.assert_allclose(w, ref.weights["input_exc"], rtol=0, atol=1e-12)
    assert np.abs(w - w0).max() > 0.5  # and the weights did learn


# One adaptive-threshold layer (Diehl & Cook's excitatory neuron, thresholds adapting 0.5 mV a
# spike) on 64 spike-array inputs, for the rules whose Brian2 form the tests below write out.
ADAPTIVE = {"tau_m": 0.1, "v_rest": -65e-3, "v_reset": -65e-3, "v_threshold": -72e-3, "t_ref": 5e-3,
            "tau_exc": 1e-3, "tau_inh": 2e-3, "e_exc": 0.0, "e_inh": -0.1, "tau_theta": 1e4,
            "theta_plus": 0.5e-3}  # fmt: skip
LAYER_DT, LAYER_INPUTS, LAYER_SIZE = 5e-4, 64, 12


def _adaptive_layer(duration: float, backend: str, rng: np.random.Generator, max_rate: float) -> Any:
    """(neurosim simulation, input spike times, input indices), the inputs Poisson at rates up
    to ``max_rate`` Hz drawn once, the weights uniform in [0, 0.1]."""
    steps, idx = np.nonzero(
        rng.random((round(duration / LAYER_DT), LAYER_INPUTS)) < rng.uniform(0, max_rate, LAYER_INPUTS) * LAYER_DT
    )
    times = steps * LAYER_DT
    cfg = parse_config({
        "run": {"dt": LAYER_DT, "duration": duration, "seed": 3, "dtype": "float64", "backend": backend},
        "network": {
            "populations": [{"name": "exc", "n": LAYER_SIZE, "model": {"kind": "adaptive_lif", **ADAPTIVE},
                             "initial": {"v": -65e-3}}],
            "inputs": [{"kind": "spike_array", "name": "input", "n": LAYER_INPUTS, "times": times.tolist(),
                        "indices": idx.tolist()}],
            "projections": [{"name": "input_exc", "source": "input", "target": "exc",
                             "connectivity": {"kind": "all_to_all"},
                             "weights": {"kind": "uniform", "low": 0.0, "high": 0.1}}],
        },
    })  # fmt: skip
    return build_simulation(cfg), times, idx


def _brian2_adaptive_layer(b2: Any, times: np.ndarray, idx: np.ndarray, extra: str, reset: str) -> Any:
    """The same layer in Brian2 (``extra``: more neuron variables; ``reset``: more reset code):
    (input group, layer group, constants)."""
    b2.start_scope()
    b2.prefs.codegen.target = "numpy"
    b2.defaultclock.dt = LAYER_DT * b2.second
    consts = {"tau_m": ADAPTIVE["tau_m"] * b2.second, "v_rest": ADAPTIVE["v_rest"] * b2.volt,
              "v_reset": ADAPTIVE["v_reset"] * b2.volt, "v_thr": ADAPTIVE["v_threshold"] * b2.volt,
              "tau_ge": ADAPTIVE["tau_exc"] * b2.second, "tau_gi": ADAPTIVE["tau_inh"] * b2.second,
              "e_exc": ADAPTIVE["e_exc"] * b2.volt, "e_inh": ADAPTIVE["e_inh"] * b2.volt,
              "tau_theta": ADAPTIVE["tau_theta"] * b2.second,
              "theta_plus": ADAPTIVE["theta_plus"] * b2.volt}  # fmt: skip
    inputs = b2.SpikeGeneratorGroup(LAYER_INPUTS, idx, times * b2.second)
    layer = b2.NeuronGroup(
        LAYER_SIZE,
        """dv/dt = (v_rest - v + ge * (e_exc - v) + gi * (e_inh - v)) / tau_m : volt (unless refractory)
        dge/dt = -ge / tau_ge : 1
        dgi/dt = -gi / tau_gi : 1
        dtheta/dt = -theta / tau_theta : volt
        """ + extra,
        threshold="v > v_thr + theta", reset="v = v_reset; theta += theta_plus" + reset,
        refractory=ADAPTIVE["t_ref"] * b2.second, method="exponential_euler", namespace=consts,
    )  # fmt: skip
    layer.v = ADAPTIVE["v_rest"] * b2.volt
    return inputs, layer, consts


@pytest.mark.parametrize(("backend", "scope", "weight_scale"), [("compiled", "depression", 0.0),
                         ("torch", "depression", 0.0), ("compiled", "rule", 0.0), ("torch", "depression", 0.5),
                         ("compiled", "depression", 0.5)])  # fmt: skip
def test_the_sleep_rule_reshapes_weights_as_the_same_rule_written_for_brian2(
    backend: str, scope: str, weight_scale: float
) -> None:
    """SLEEP's rule (``neurosim.learning.sleep``) against its equations written in Brian2: at each
    post spike, ``w += gain_post * (inc [pre fired within window] - dec * p [it did not])``,
    clipped; Fisher protection ``p`` per synapse (``scope="rule"``: the potentiation scaled by
    ``p`` too), targeted replay's per-neuron gain (+1 learns, -interference unlearns, 0 holds),
    adapting thresholds, and Tadros et al.'s weight dependence (every change times
    ``2 / (1 + exp(w / a))``, ``a = weight_scale * mean |w|``). Same input spikes, so the same
    layer spikes and the same weights."""
    import brian2 as b2
    import torch

    from neurosim.learning.sleep import SleepConfig, SleepReplay, fisher_protection

    rng = np.random.default_rng(4)
    duration = 2.0
    sim, times, idx = _adaptive_layer(duration, backend, rng, max_rate=60.0)
    proj = sim.network.projections["input_exc"]
    w0 = proj.synapse_weights().numpy().copy()
    rule = SleepConfig(inc=0.01, dec=0.002, window=10.25e-3, fisher_protection=5.0, protection_scope=scope,
                       weight_scale=weight_scale)  # type: ignore[arg-type]  # fmt: skip
    fisher = torch.from_numpy(rng.exponential(1.0, w0.size))
    replay = SleepReplay(proj, rule, bounds=(0.0, 0.2), fisher=fisher)
    gain = np.choose(np.arange(LAYER_SIZE) % 3, [1.0, -0.7, 0.0])
    replay.post_gain.copy_(torch.from_numpy(gain))
    sim.add_plasticity(replay)
    ours = sim.add_monitor(SpikeMonitor("exc"))
    sim.run(duration)

    inputs, layer, consts = _brian2_adaptive_layer(b2, times, idx, "gain : 1", "")
    layer.gain = gain
    consts.update(inc=0.01, dec=0.002, window=10.25 * b2.ms, w_min=0.0, w_max=0.2)
    potentiation = "inc * p" if scope == "rule" else "inc"
    dependence = ""
    if weight_scale > 0:
        dependence = " * 2 / (1 + exp(w / width))"
        consts["width"] = weight_scale * float(np.abs(w0).mean())
    syn = b2.Synapses(
        inputs, layer, "w : 1\nlast_pre_spike : second\np : 1",
        on_pre="ge_post += w\nlast_pre_spike = t",
        on_post=f"w = clip(w + gain_post * ({potentiation} * int(t - last_pre_spike <= window)"
                f" - dec * p * int(t - last_pre_spike > window)){dependence}, w_min, w_max)",
        namespace=consts,
    )  # fmt: skip
    syn.connect(i=proj.pre_index.numpy(), j=proj.post_index.numpy())
    syn.w, syn.last_pre_spike = w0, -1e9 * b2.second
    syn.p = fisher_protection(fisher, 5.0).numpy()
    theirs = b2.SpikeMonitor(layer)
    b2.run(duration * b2.second)

    assert ours.count == theirs.num_spikes > 200
    w = proj.synapse_weights().numpy()
    np.testing.assert_allclose(w, np.asarray(syn.w), rtol=0, atol=1e-12)
    changed = w - w0
    assert (changed > 1e-3).sum() > 100 and (changed < -1e-3).sum() > 100  # potentiated and depressed
    assert np.all(changed[np.isin(proj.post_index.numpy(), np.flatnonzero(gain == 0))] == 0)  # gain 0 holds


def _brian2_full_learning_step(times: np.ndarray, idx: np.ndarray, proj: Any, w0: np.ndarray, readout: Any,
                               pull: tuple[np.ndarray, np.ndarray], alpha: float, width: float) -> Any:  # fmt: skip
    """The full learning step's equations in Brian2 (see the test below), two samples of 1 s
    (labels 3, then 7): (layer spikes, final weights, final Fisher EMA)."""
    import brian2 as b2

    inputs, layer, consts = _brian2_adaptive_layer(b2, times, idx, "count : 1", "; count += 1")
    consts.update(tau_pre=20 * b2.ms, tau_post=20 * b2.ms, a_plus=0.01, a_minus=2e-3, w_min=0.0, w_max=0.2)
    syn = b2.Synapses(
        inputs, layer,
        """w : 1
        F : 1
        dApre/dt = -Apre / tau_pre : 1 (event-driven)
        dApost/dt = -Apost / tau_post : 1 (event-driven)""",
        on_pre="ge_post += w\nApre += 1\nw = clip(w - a_minus * Apost, w_min, w_max)",
        on_post="Apost += 1\nw = clip(w + a_plus * Apre, w_min, w_max)", namespace=consts,
    )  # fmt: skip
    pre, post = proj.pre_index.numpy(), proj.post_index.numpy()
    syn.connect(i=pre, j=post)
    syn.w = w0
    weight, bias = readout.weight.numpy(), readout.bias.numpy()
    anchor, coefficient = pull
    current = {"steps": 0, "label": 3}

    @b2.network_operation(when="end")
    def learning_step() -> None:
        w = np.asarray(syn.w)
        syn.w = np.clip(w - coefficient * (w - anchor), 0.0, 0.2)
        current["steps"] += 1
        seconds = current["steps"] * LAYER_DT
        logits = weight @ (np.asarray(layer.count) / seconds) + bias
        p = np.exp(logits - logits.max())
        signal = (weight[current["label"]] - (p / p.sum()) @ weight) / seconds
        x = (np.asarray(layer.v) - ADAPTIVE["v_threshold"] - np.asarray(layer.theta)) / width
        psi = 0.5 / (width * (1 + np.abs(x)) ** 2)
        now = float(b2.defaultclock.t_[:])
        pre_trace = np.asarray(syn.Apre) * np.exp(-(now - np.asarray(syn.lastupdate)) / 20e-3)
        syn.F = (1 - alpha) * np.asarray(syn.F) + alpha * (signal[post] * psi[post] * pre_trace) ** 2

    theirs = b2.SpikeMonitor(layer)
    net = b2.Network(inputs, layer, syn, learning_step, theirs)
    net.run(1.0 * b2.second)
    layer.count = 0
    current.update(steps=0, label=7)
    net.run(1.0 * b2.second)
    return int(theirs.num_spikes), np.asarray(syn.w), np.asarray(syn.F)


@pytest.mark.parametrize("backend", ["compiled", "torch"])
def test_the_full_learning_step_matches_its_equations_in_brian2(backend: str) -> None:
    """LEARNING's whole step (``STDPOnlineLearner`` with a surrogate, a readout, an EWC pull and a
    ``FisherAccumulator``) against Brian2: pair STDP as event-driven traces, then, every step
    after the resets (a ``network_operation``), the pull ``w -= min(rate lambda F*, 1)(w - w*)``,
    the readout's learning signal ``L = (W[y] - softmax(W r + b) W) / T`` from the sample's spike
    counts ``r = n / T``, the eligibility gradient ``g = L_post psi(v_post - v_thr - theta)
    x_pre`` (fast sigmoid, the pre trace) and the EMA ``F = (1 - alpha) F + alpha g^2``. Two
    samples of 1 s with other labels. The same spikes, weights (1e-12) and Fisher (1e-5 of
    its peak: the accumulator keeps float32)."""
    import torch

    from neurosim.learning import LinearReadout, Surrogate
    from neurosim.learning.ewc import EWCConfig, EWCRegulariser
    from neurosim.learning.fisher import InMemoryFisherStore
    from neurosim.learning.fisher_online import FisherAccumulator, FisherAccumulatorConfig
    from neurosim.learning.stdp import PairSTDP

    rng = np.random.default_rng(5)
    sample, alpha, width, pull_rate = 1.0, 0.01, 2e-3, 1e-2
    sim, times, idx = _adaptive_layer(2 * sample, backend, rng, max_rate=80.0)
    proj = sim.network.projections["input_exc"]
    w0 = proj.synapse_weights().numpy().copy()
    readout = LinearReadout(LAYER_SIZE, 10, dtype=torch.float64, init_std=0.05, seed=1)
    stdp = PairSTDP(tau_pre=20e-3, tau_post=20e-3, a_plus=0.01, a_minus=2e-3, w_min=0.0, w_max=0.2)
    learner = STDPOnlineLearner(proj, stdp, dt=LAYER_DT, surrogate=Surrogate(width=width), readout=readout)
    anchor, anchor_fisher = rng.uniform(0, 0.1, w0.size), rng.uniform(0, 1, w0.size)
    learner.regulariser = EWCRegulariser(EWCConfig(lambda_=1.0, pull_rate=pull_rate))
    learner.regulariser.consolidate("earlier", {learner.parameter_name: torch.from_numpy(anchor)},
                                    {learner.parameter_name: torch.from_numpy(anchor_fisher)})  # fmt: skip
    accumulator = FisherAccumulator(
        FisherAccumulatorConfig(alpha=alpha, snapshot_every=10**6, max_staleness_steps=10**7), InMemoryFisherStore(),
        "task",
    )  # fmt: skip
    learner.attach(sim, accumulator=accumulator)
    ours = sim.add_monitor(SpikeMonitor("exc"))
    for label in (3, 7):
        learner.begin_sample(torch.tensor([label]))
        assert sim.run(sample).backends == {backend}

    spikes, w_brian2, reference = _brian2_full_learning_step(
        times, idx, proj, w0, readout, (anchor, np.minimum(pull_rate * 1.0 * anchor_fisher, 1.0)), alpha, width
    )
    assert ours.count == spikes > 200
    w = proj.synapse_weights().numpy()
    np.testing.assert_allclose(w, w_brian2, rtol=0, atol=1e-12)
    assert np.abs(w - w0).max() > 0.1
    fisher = accumulator.fisher[learner.parameter_name].double().numpy()
    assert (reference > 0).all()
    np.testing.assert_allclose(fisher, reference, rtol=0, atol=1e-5 * reference.max())
    accumulator.close()
