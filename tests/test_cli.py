"""The command line, end to end, as a user runs it."""

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


def test_run_writes_every_output_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "cuba"
    runner = CliRunner()
    result = runner.invoke(
        main, ["run", str(EXAMPLES / "cuba.toml"), "--out", str(out), "--duration", "0.2", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["duration_s"] == 0.2
    assert set(summary["populations"]) == {"exc", "inh"} and summary["populations"]["exc"]["n"] == 3200
    spikes = np.load(out / "spikes.npz")
    assert spikes["exc_times"].size == summary["populations"]["exc"]["spikes"]
    assert spikes["exc_times"].max() < 0.2 and spikes["exc_indices"].max() < 3200
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["run"]["duration"] == 0.2
    assert resolved["network"]["projections"][0]["delay"] == {"kind": "constant", "value": 0.0}
    for plot in ("raster.png", "rates.png", "state.png"):  # state.png: the recorded membrane potentials
        assert (out / plot).stat().st_size > 10_000, plot
    again = runner.invoke(main, ["run", str(EXAMPLES / "cuba.toml"), "--out", str(out), "--quiet"])
    assert again.exit_code != 0 and "already contains files" in again.output
    assert json.loads((out / "summary.json").read_text())["duration_s"] == 0.2  # untouched


def test_validate_accepts_good_and_rejects_bad_configs(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(EXAMPLES / "cuba.toml")])
    assert ok.exit_code == 0 and "valid" in ok.output
    bad = tmp_path / "bad.toml"
    bad.write_text((EXAMPLES / "cuba.toml").read_text().replace("p = 0.02 }", "p = 2.0 }", 1))
    res = runner.invoke(main, ["validate", str(bad)])
    assert res.exit_code == 1 and "network.projections[0].connectivity.p" in res.output


def test_bad_override_is_refused_before_running(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main, ["run", str(EXAMPLES / "cuba.toml"), "--out", str(tmp_path / "o"), "--duration", "-1"]
    )
    assert res.exit_code == 1 and "run.duration" in res.output
    assert not (tmp_path / "o").exists()


def test_run_recognises_a_continual_experiment(tmp_path: Path) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(
        "seed = 2\n[experiment]\nname = 'tiny'\n"
        "[data]\nn_tasks = 2\ntrain_per_task = 4\ntest_per_task = 3\npresent = 0.03\nrest = 0.01\n"
        "[network]\nn_hidden = 12\n[stdp]\nkind = 'pair'\na_plus = 0.01\na_minus = 1e-4\nw_max = 1.0\n"
        "[sleep]\nenabled = false\n"
    )
    runner = CliRunner()
    assert runner.invoke(main, ["validate", str(config)]).output.strip().endswith("4 phase blocks)")
    result = runner.invoke(main, ["run", str(config), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "class-incremental: average accuracy" in result.output
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert f"{saved['neurons_assigned']} of 12 neurons assigned to a class" in result.output
    assert saved["status"] == "completed" and saved["consolidation"] == {"ewc": True, "sleep": False, "replay": False}
    paired = saved["control"]["paired"]  # EWC acts on the second task, so its control ran
    assert (f"of 6 test images, {paired['run_only']} right only with consolidation, {paired['control_only']} only "
            f"without (exact McNemar test p = {paired['p_value']:.2g}") in result.output  # fmt: skip
    saved_config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved_config["ewc"]["lambda"] == 100.0  # EWCConfig().lambda_: the default is the library's


def test_a_joint_run_says_its_bwt_is_undefined_and_runs_no_control(tmp_path: Path) -> None:
    # one LEARNING block: no task is evaluated twice (BWT undefined, not "+nan"), and with
    # sleep and EWC on but nothing for them to act on, a control would be the same run again
    config = tmp_path / "joint.toml"
    config.write_text(
        "seed = 2\njoint = true\n[experiment]\nname = 'joint'\n"
        "[data]\nn_tasks = 2\ntrain_per_task = 4\ntest_per_task = 3\npresent = 0.03\nrest = 0.01\n"
        "[network]\nn_hidden = 12\n[ewc]\nenabled = true\n[sleep]\nenabled = true\n"
    )
    result = CliRunner().invoke(main, ["run", str(config), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "BWT undefined" in result.output and "nan" not in result.output
    assert "control" not in json.loads((tmp_path / "out" / "results.json").read_text())
    assert not (tmp_path / "out" / "control").exists()


def test_run_options_a_continual_experiment_cannot_honour_are_refused(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main, ["run", str(EXAMPLES / "continual_digits.toml"), "--out", str(tmp_path / "o"), "--duration", "1"]
    )
    assert res.exit_code == 2 and "--duration" in res.output and "only --seed" in res.output
    assert not (tmp_path / "o").exists()  # refused before anything ran
    res = CliRunner().invoke(main, ["run", str(EXAMPLES / "continual_digits.toml"), "--backend", "brian2"])
    assert res.exit_code == 2 and "--backend brian2" in res.output


def test_metrics_are_served_on_loopback_unless_told_otherwise() -> None:
    import inspect

    from neurosim.metrics import serve_metrics

    assert inspect.signature(serve_metrics).parameters["address"].default == "127.0.0.1"
    option = next(p for p in main.commands["run"].params if p.name == "metrics_host")
    assert option.default == "127.0.0.1"


def test_validate_for_brian2_refuses_what_brian2_cannot_run(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["validate", str(EXAMPLES / "song2000_stdp.toml"), "--backend", "brian2"]).exit_code == 0
    triplet = tmp_path / "triplet.toml"
    text = (EXAMPLES / "song2000_stdp.toml").read_text()
    rule = next(line for line in text.splitlines() if line.startswith("rule = "))
    triplet.write_text(text.replace(rule, 'rule = { kind = "triplet" }'))
    assert runner.invoke(main, ["validate", str(triplet)]).exit_code == 0  # valid for neurosim
    res = runner.invoke(main, ["validate", str(triplet), "--backend", "brian2"])
    assert res.exit_code == 1 and "Brian2 cannot run it" in res.output and "triplet" in res.output
    res = runner.invoke(main, ["validate", str(EXAMPLES / "continual_digits.toml"), "--backend", "brian2"])
    assert res.exit_code == 1 and "not Brian2" in res.output


def test_song_outputs_show_weights_relative_to_gmax_and_the_output_rate(tmp_path: Path) -> None:
    out = tmp_path / "song"
    res = CliRunner().invoke(main, ["run", str(EXAMPLES / "song2000_stdp.toml"), "--out", str(out), "--duration",
                                    "0.5", "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    for plot in ("raster.png", "rates.png", "weights.png"):
        assert (out / plot).stat().st_size > 10_000, plot
    from neurosim.outputs import plot_weight_histograms

    captured: dict[str, str] = {}
    import matplotlib.axes

    original = matplotlib.axes.Axes.set_xlabel

    def spy(self, label, *args, **kwargs):  # type: ignore[no-untyped-def]
        captured["xlabel"] = label
        return original(self, label, *args, **kwargs)

    matplotlib.axes.Axes.set_xlabel = spy  # type: ignore[method-assign]
    try:
        w = np.load(out / "weights.npz")
        plot_weight_histograms(tmp_path / "w.png", {"p": w["input_neuron_initial"]}, {"p": w["input_neuron"]}, 0.5,
                               {"p": 0.01})  # fmt: skip
    finally:
        matplotlib.axes.Axes.set_xlabel = original  # type: ignore[method-assign]
    assert captured["xlabel"].startswith("weight / w_max")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_run_stopped_by_sigterm_or_sigint_still_writes_what_it_recorded(tmp_path: Path, signum: int) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "neurosim.cli", "run", str(EXAMPLES / "cuba.toml"), "--out",
                             str(out), "--duration", "1000", "--quiet"], stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.time() + 60
    while not (out / "config.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(3.0)  # into the simulation (numba compiles first; a loaded machine needs the margin)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == (143 if signum == signal.SIGTERM else 1), stderr.decode()[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed"
    expected = "Terminated: terminated by SIGTERM" if signum == signal.SIGTERM else "KeyboardInterrupt: "
    assert summary["error"] == expected
    assert 0 < summary["duration_s"] < 1000 and (out / "spikes.npz").exists() and (out / "raster.png").exists()


def test_a_raster_too_dense_to_read_shows_the_last_stretch_of_the_run() -> None:
    """2,700 spikes of one neuron over 100 s would merge into a bar: the raster keeps the last
    stretch that holds about 150 per neuron; a sparse run is drawn whole."""
    import numpy as np

    from neurosim.outputs import raster_start
    from neurosim.sim.monitors import SpikeTrains

    def trains(n: int) -> SpikeTrains:
        times = np.sort(np.random.default_rng(0).uniform(0, 100, n))
        return SpikeTrains(times, np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64))

    assert raster_start({"neuron": trains(2700)}, {"neuron": 1}, 100.0) == pytest.approx(100 * (1 - 150 / 2700))
    assert raster_start({"neuron": trains(100)}, {"neuron": 1}, 100.0) == 0.0
    # the busiest source decides, per neuron: 2,700 spikes over 100 neurons is sparse
    assert raster_start({"a": trains(2700), "b": trains(100)}, {"a": 100, "b": 1}, 100.0) == 0.0

