"""Checkpoints: a run saved at a chunk boundary and loaded goes on as if it had never stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import EXAMPLES

from neurosim.cli import main
from neurosim.config import parse_continual
from neurosim.learning.learner import STDPOnlineLearner
from neurosim.learning.stdp import PairSTDP, RewardSTDP, TripletSTDP
from neurosim.phases import schedule
from neurosim.phases.schedule import run_experiment
from neurosim.sim import (
    Backend,
    Channel,
    ConductanceLIF,
    CurrentInput,
    Network,
    PoissonInput,
    Population,
    Projection,
    Simulation,
    SpikeArrayInput,
    SpikeMonitor,
    StateMonitor,
    Uniform,
    WeightMonitor,
)
from neurosim.sim import connectivity as conn
from neurosim.sim.checkpoint import CheckpointError

CHUNK = 200  # steps (20 ms at dt 0.1 ms)


def _network(seed: int = 0) -> Network:
    rng = np.random.default_rng(seed)
    net = Network()
    net.add_input(PoissonInput("in", 200, 20.0))
    net.add_input(SpikeArrayInput("kick", 4, [0.003, 0.031, 0.052], [0, 1, 3]))
    net.add_population(Population("exc", 30, ConductanceLIF(), {"v": Uniform(-0.07, -0.055)}))
    pre, post = conn.probability(200, 30, 0.5, rng)
    net.add_projection(Projection.from_pairs("in_exc", "in", "exc", 200, 30, pre, post,
                                             rng.uniform(0, 0.01, pre.size).astype(np.float32)))  # fmt: skip
    pre, post = conn.probability(30, 30, 0.2, rng)
    net.add_projection(Projection.from_pairs("exc_exc", "exc", "exc", 30, 30, pre, post,
                                             np.full(pre.size, 0.02, np.float32), channel=Channel.INH,
                                             delay_steps=3))  # fmt: skip
    pre, post = conn.fixed_total(30, 30, 200, rng, autapses=False)  # spikes in flight across saves
    net.add_projection(Projection.from_pairs("exc_exc_spread", "exc", "exc", 30, 30, pre, post,
                                             np.full(pre.size, 0.01, np.float32),
                                             delay_steps=rng.integers(0, 60, pre.size)))  # fmt: skip
    pre, post = conn.all_to_all(4, 30)
    net.add_projection(Projection.from_pairs("kick_exc", "kick", "exc", 4, 30, pre, post,
                                             np.full(pre.size, 0.5, np.float32)))  # fmt: skip
    net.add_current(CurrentInput("bias", "exc", np.linspace(0, 2e-10, 30)))
    return net


def _simulation(rule: object, backend: Backend) -> Simulation:
    sim = Simulation(_network(), dt=1e-4, seed=7, backend=backend, chunk_steps=CHUNK)
    for source in ("in", "exc"):
        sim.add_monitor(SpikeMonitor(source))
    sim.add_monitor(StateMonitor("exc", ["v", "g_exc"], indices=[0, 5, 9], every=1e-3))
    sim.add_monitor(WeightMonitor("in_exc", every=0.01))
    projection = sim.network.projections["in_exc"]
    STDPOnlineLearner(projection, rule, dt=sim.dt).attach(sim)  # type: ignore[arg-type]
    return sim


def _outcome(sim: Simulation) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k, monitor in enumerate(sim.monitors):
        if isinstance(monitor, SpikeMonitor):
            out[f"{k}/spikes"] = np.stack([monitor.steps, monitor.indices, monitor.instances])
        elif isinstance(monitor, StateMonitor):
            out.update({f"{k}/{var}": v for var, v in monitor.values.items()})
        elif isinstance(monitor, WeightMonitor):
            out[f"{k}/weights"] = monitor.weights
    for name, state in sim.state.items():
        out.update({f"state/{name}/{var}": t.numpy() for var, t in zip(state._fields, state, strict=True)})
    out.update({f"w/{name}": p.weights.numpy() for name, p in sim.network.projections.items()})
    learner = sim.plasticity[0]
    assert isinstance(learner, STDPOnlineLearner)
    traces = learner.state.traces if hasattr(learner.state, "traces") else learner.state
    out.update({f"trace{j}": t.numpy() for j, t in enumerate(traces)})  # type: ignore[arg-type]
    return out


RULES = [PairSTDP(w_max=0.01), TripletSTDP(w_max=0.01), RewardSTDP(PairSTDP(w_max=0.01))]


@pytest.mark.parametrize("backend", [Backend.COMPILED, Backend.TORCH])
@pytest.mark.parametrize("rule", RULES, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("split_chunk", [1, 3])
def test_a_run_saved_and_loaded_at_a_chunk_boundary_equals_one_run(
    tmp_path: Path, backend: Backend, rule: object, split_chunk: int
) -> None:
    total = 5 * CHUNK * 1e-4
    whole = _simulation(rule, backend)
    whole.run(total)

    first = _simulation(rule, backend)
    first.run(split_chunk * CHUNK * 1e-4)
    first.save(tmp_path / "ckpt")
    resumed = Simulation.load(tmp_path / "ckpt")
    assert resumed.step == split_chunk * CHUNK and len(resumed.monitors) == 4 and len(resumed.plasticity) == 1
    resumed.run(total - resumed.t)

    expected, got = _outcome(whole), _outcome(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert np.array_equal(expected[key], got[key]), key  # bit for bit
    assert resumed.spike_counts == whole.spike_counts


def test_saving_again_replaces_the_checkpoint_and_the_format_is_documented_json_and_npz(tmp_path: Path) -> None:
    sim = _simulation(PairSTDP(w_max=0.01), Backend.COMPILED)
    sim.run(0.02)
    sim.save(tmp_path / "ckpt")
    sim.run(0.02)
    sim.save(tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no staging or old copies left
    manifest = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    assert manifest["format"] == "neurosim.simulation-checkpoint" and manifest["step"] == 400
    with np.load(tmp_path / "ckpt" / "arrays.npz") as arrays:  # plain npz: no pickle needed
        assert "state/exc/v" in arrays.files and "projection/in_exc/weights" in arrays.files


def test_what_a_checkpoint_cannot_hold_is_refused_not_dropped(tmp_path: Path) -> None:
    sim = Simulation(_network(), dt=1e-4)
    sim.add_step_hook(lambda ctx: None)
    with pytest.raises(CheckpointError, match="step hooks"):
        sim.save(tmp_path / "a")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        Simulation.load(tmp_path)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "checkpoint.json").write_text(json.dumps({"format": "neurosim.simulation-checkpoint",
                                                                "version": 99}))  # fmt: skip
    with pytest.raises(CheckpointError, match="version 99"):
        Simulation.load(tmp_path / "b")


def test_neurosim_run_resume_after_a_kill_gives_the_outputs_of_an_uninterrupted_run(tmp_path: Path) -> None:
    config = str(EXAMPLES / "song2000_stdp.toml")  # plastic weights, Poisson inputs: state, RNGs and traces all count
    whole = tmp_path / "whole"
    result = CliRunner().invoke(main, ["run", config, "--out", str(whole), "--duration", "8", "--quiet"])
    assert result.exit_code == 0, result.output

    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "neurosim.cli", "run", config, "--out", str(cut), "--duration",
                             "8", "--checkpoint-every", "0.5", "--quiet"], stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (cut / "checkpoint").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr.decode()[-2000:]  # killed before the end
    assert json.loads((cut / "summary.json").read_text())["status"] == "failed"
    reached = json.loads((cut / "checkpoint" / "checkpoint.json").read_text())["step"]
    assert 0 < reached < 80_000

    resumed = CliRunner().invoke(main, ["run", "--resume", str(cut), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((cut / "summary.json").read_text())["status"] == "completed"
    for name in ("spikes.npz", "weights.npz"):
        with np.load(whole / name) as a, np.load(cut / name) as b:
            assert a.files == b.files
            for key in a.files:
                assert np.array_equal(a[key], b[key]), (name, key)
    again = CliRunner().invoke(main, ["run", "--resume", str(cut), "--quiet"])
    assert again.exit_code != 0 and "the run is complete" in again.output
    longer = CliRunner().invoke(main, ["run", "--resume", str(cut), "--duration", "9", "--quiet"])
    assert longer.exit_code == 0 and json.loads((cut / "summary.json").read_text())["duration_s"] == 9.0


def test_resume_refuses_what_it_cannot_go_on_with(tmp_path: Path) -> None:
    nothing = CliRunner().invoke(main, ["run", "--resume", str(tmp_path)])
    assert nothing.exit_code != 0 and "not the output directory" in nothing.output
    both = CliRunner().invoke(main, ["run", str(EXAMPLES / "cuba.toml"), "--resume", str(tmp_path)])
    assert both.exit_code != 0 and "not both" in both.output
    (tmp_path / "config.json").write_text(json.dumps({"experiment": {"name": "x"}}))
    experiment = CliRunner().invoke(main, ["run", "--resume", str(tmp_path)])
    assert experiment.exit_code != 0 and "stopped before its first evaluation" in experiment.output


def test_an_experiment_interrupted_and_resumed_gives_the_results_of_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EWC on (anchors), replay on (buffer), sleep (statistics, replays), three tasks: stopped
    in the third evaluation, resumed from the checkpoint of the second with `neurosim run --resume`."""
    cfg = parse_continual({
        "experiment": {"name": "resume"}, "seed": 3, "dt": 5e-4,
        "data": {"n_tasks": 3, "train_per_task": 12, "test_per_task": 8}, "network": {"n_hidden": 20},
        "ewc": {"enabled": True, "lambda": 10.0, "mode": "online", "online_fisher": True, "pull_rate": 1e-3},
        "fisher": {"snapshot_every": 50}, "sleep": {"duration": 0.2},
        "replay": {"enabled": True, "capacity": 10, "every": 4}, "control": False,
    })  # fmt: skip
    whole = run_experiment(cfg, tmp_path / "whole", progress=False)

    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_text(json.dumps(cfg.model_dump(mode="json", by_alias=True)))
    evaluations = {"n": 0}
    evaluate = schedule.Experiment.evaluate

    async def stopping(self: schedule.Experiment) -> None:
        evaluations["n"] += 1
        if evaluations["n"] == 3:
            raise KeyboardInterrupt
        await evaluate(self)

    with monkeypatch.context() as patch:
        patch.setattr(schedule.Experiment, "evaluate", stopping)
        with pytest.raises(KeyboardInterrupt):
            run_experiment(cfg, cut, progress=False)
    assert json.loads((cut / "results.json").read_text())["status"] == "failed"
    assert json.loads((cut / "checkpoint" / "checkpoint.json").read_text())["blocks_done"] == 6

    result = CliRunner().invoke(main, ["run", "--resume", str(cut), "--quiet"])
    assert result.exit_code == 0, result.output
    resumed = json.loads((cut / "results.json").read_text())
    assert resumed["status"] == "completed"
    for key in ("accuracy_matrix", "accuracy_matrix_task_incremental", "bwt", "simulated_s", "replay"):
        assert resumed[key] == whole[key], key
    assert [s["spikes"] for s in resumed["sleep"]] == [s["spikes"] for s in whole["sleep"]]
    assert [(e["phase"], e["task"], e["sim_time_s"]) for e in resumed["phase_history"]] == [
        (e["phase"], e["task"], e["sim_time_s"]) for e in whole["phase_history"]
    ]
    with (
        np.load(tmp_path / "whole" / "checkpoint" / "arrays.npz") as a,
        np.load(cut / "checkpoint" / "arrays.npz") as b,
    ):
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)  # weights, Fisher, ...
