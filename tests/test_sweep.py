"""Parameter sweeps: the grid, its validation, and real Dask LocalClusters with 2 workers
(a full sweep, a worker killed mid-sweep, --resume), an experiment sweep, live progress."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import EXAMPLES

from neurosim.cli import main
from neurosim.events.broker import LocalBroker
from neurosim.events.mqtt import check_run_id, parse_broker_url, subscribe
from neurosim.events.schema import PhaseEvent, StatusEvent, SweepEvent, split_topic
from neurosim.sweep import (
    RUN_FILE,
    Axis,
    ClusterStart,
    Setting,
    SweepError,
    apply_overrides,
    grid_settings,
    load_sweep_file,
    make_function_spec,
    make_spec,
    parse_axis,
    parse_seeds,
    plotted_paths,
    run_sweep,
    write_report,
)

pytestmark = pytest.mark.timeout(300)


def small_cuba(tmp_path: Path, duration: float = 0.05, backend: str = "auto") -> Path:
    """The shipped CUBA network at 500 neurons, for runs of a fraction of a second."""
    text = (EXAMPLES / "cuba.toml").read_text()
    text = text.replace("n = 3200", "n = 400").replace("n = 800", "n = 100")
    text = text.replace("duration = 1.0", f"duration = {duration}\nbackend = \"{backend}\"")
    path = tmp_path / "small_cuba.toml"
    path.write_text(text)
    return path


def tiny_experiment(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(
        "seed = 2\ncontrol = false\n[experiment]\nname = 'tiny'\n"
        "[data]\nn_tasks = 2\ntrain_per_task = 4\ntest_per_task = 3\npresent = 0.03\nrest = 0.01\n"
        "[network]\nn_hidden = 12\n[stdp]\nkind = 'pair'\na_plus = 0.01\na_minus = 1e-4\nw_max = 1.0\n"
        "[sleep]\nenabled = false\n"
    )
    return path


def run_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob(f"*/*/{RUN_FILE}"))


# --------------------------------------------------------------------------- the grid
def test_grid_options_values_and_seeds_parse_as_a_user_writes_them() -> None:
    assert parse_axis("ewc.lambda=1,10,1e-3").values == ((1,), (10,), (0.001,))
    assert parse_axis("sleep.drive=class-means,uniform").values == (("class-means",), ("uniform",))
    assert parse_axis("sleep.enabled=true,false").values == ((True,), (False,))
    assert parse_axis('x=[1, 2],[3],"a,b"').values == (([1, 2],), ([3],), ("a,b",))
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
    assert parse_seeds([3, 1]) == [3, 1]
    for bad in ("ewc.lambda", "=1,2", "ewc.lambda="):
        with pytest.raises(SweepError, match="PATH=V1,V2"):
            parse_axis(bad)
    for bad_seeds in ("", "a-b", "1,1", "-1"):
        with pytest.raises(SweepError):
            parse_seeds(bad_seeds)


def test_grid_is_every_combination_and_zipped_axes_advance_together() -> None:
    axes = [Axis.of("a", [1, 2]), Axis.zipped({"b": [10, 20, 30], "c": ["x", "y", "z"]})]
    settings = grid_settings(axes)
    assert [dict(s.overrides) for s in settings][:4] == [
        {"a": 1, "b": 10, "c": "x"},
        {"a": 1, "b": 20, "c": "y"},
        {"a": 1, "b": 30, "c": "z"},
        {"a": 2, "b": 10, "c": "x"},
    ]
    assert len(settings) == 6
    assert settings[0].name == "a=1_b=10_c=x"
    assert all("/" not in s.name and "+" not in s.name and "#" not in s.name for s in settings)
    with pytest.raises(SweepError, match="as many values"):
        Axis.zipped({"b": [1, 2], "c": [1]})
    with pytest.raises(SweepError, match="swept twice"):
        grid_settings([Axis.of("a", [1]), Axis.of("a", [2])])
    # values that would name the same directory still get their own
    assert len({s.name for s in grid_settings([Axis.of("p", ["a/b", "a+b"])])}) == 2


def test_overrides_reach_nested_fields_list_items_by_name_or_index_and_refuse_typos() -> None:
    data = {"ewc": {"lambda": 1.0}, "network": {"populations": [{"name": "exc", "n": 5}, {"name": "inh", "n": 2}]}}
    out = apply_overrides(data, {"ewc.lambda": 10.0, "network.populations.inh.n": 7, "network.populations[0].n": 9})
    assert out["ewc"]["lambda"] == 10.0 and out["network"]["populations"][1]["n"] == 7
    assert out["network"]["populations"][0]["n"] == 9
    assert data["ewc"]["lambda"] == 1.0  # the base is not changed
    with pytest.raises(SweepError, match=r"'ewc.lamda'.*no field 'lamda'.*lambda"):
        apply_overrides(data, {"ewc.lamda": 1})
    with pytest.raises(SweepError, match=r"no list item named 'foo'.*exc, inh"):
        apply_overrides(data, {"network.populations.foo.n": 1})
    with pytest.raises(SweepError, match="out of range"):
        apply_overrides(data, {"network.populations.5.n": 1})


def test_a_bad_value_is_refused_before_any_run_starts_naming_the_path_and_reason(tmp_path: Path) -> None:
    config = small_cuba(tmp_path)
    out = tmp_path / "sweep"
    res = CliRunner().invoke(main, ["sweep", str(config), "--grid", "run.dt=1e-4,-1", "--out", str(out)])
    assert res.exit_code == 1
    assert "run.dt=-1" in res.output and "run.dt: Input should be greater than 0" in res.output
    assert not out.exists()  # nothing ran, nothing was created
    res = CliRunner().invoke(main, ["sweep", str(config), "--grid", "run.sed=1", "--out", str(out)])
    assert res.exit_code == 1 and "no field 'sed'" in res.output
    # seeds belong to --seeds, so a setting cannot silently overwrite them
    res = CliRunner().invoke(main, ["sweep", str(config), "--grid", "run.seed=1,2", "--out", str(out)])
    assert res.exit_code == 1 and "--seeds" in res.output
    # a non-empty directory that is not this sweep's is not written into
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(SweepError, match="not empty"):
        run_sweep(make_spec(config), tmp_path / "busy", workers=0, progress=False)


def test_a_sweep_file_holds_grid_zip_and_seeds(tmp_path: Path) -> None:
    small_cuba(tmp_path)
    sweep_file = tmp_path / "s.toml"
    sweep_file.write_text(
        '[sweep]\nconfig = "small_cuba.toml"\nseeds = "0-1"\nworkers = 2\n'
        '[sweep.grid]\n"run.duration" = [0.02, 0.04]\n'
        '[[sweep.zip]]\n"network.populations.exc.n" = [40, 80]\n"network.populations.inh.n" = [10, 20]\n'
    )
    spec, options = load_sweep_file(sweep_file)
    assert options == {"workers": 2}
    assert spec.seeds == (0, 1) and len(spec.settings) == 4
    assert spec.settings[1].overrides == {
        "run.duration": 0.02,
        "network.populations.exc.n": 80,
        "network.populations.inh.n": 20,
    }
    sweep_file.write_text('[sweep]\nconfig = "small_cuba.toml"\nsed = 1\n')
    with pytest.raises(SweepError, match=r"unknown \[sweep\] keys"):
        load_sweep_file(sweep_file)
    sweep_file.write_text('[sweep]\nconfig = "small_cuba.toml"\nbaseline = {"run.duration" = 0.02}\n')
    assert load_sweep_file(sweep_file)[1] == {"baseline": {"run.duration": 0.02}}
    sweep_file.write_text('[sweep]\nconfig = "small_cuba.toml"\nbaseline = "none"\n')
    with pytest.raises(SweepError, match="baseline is a table of the setting's values"):
        load_sweep_file(sweep_file)


def test_multi_level_run_ids_for_sweeps_keep_topics_unambiguous() -> None:
    assert check_run_id("sw/ewc.lambda=1/0") == "sw/ewc.lambda=1/0"
    assert check_run_id("sw/+/+", wildcard=True)
    assert check_run_id("sweep/sleep/0") and check_run_id("spikes")
    for bad in ("sw//0", "sw/spikes/0", "a+b", "sw/#"):
        with pytest.raises(ValueError):
            check_run_id(bad)
    assert split_topic("neurosim/sw/s=1/0/phase") == ("sw/s=1/0", "phase", [])
    assert split_topic("neurosim/sw/s=1/0/spikes/exc") == ("sw/s=1/0", "spikes", ["exc"])
    assert split_topic("neurosim/sw/sweep") == ("sw", "sweep", [])
    assert split_topic("neurosim/run/phase") == ("run", "phase", [])
    assert split_topic("neurosim/sweep/sleep/0/sleep") == ("sweep/sleep/0", "sleep", [])
    assert split_topic("neurosim/sweep/sweep") == ("sweep", "sweep", [])
    assert split_topic("neurosim/run/spikes/phase") == ("run", "spikes", ["phase"])


# --------------------------------------------------------------------------- on a LocalCluster
def test_a_2x2_grid_times_2_seeds_on_two_workers_gives_the_table_of_its_runs(tmp_path: Path) -> None:
    config = small_cuba(tmp_path)
    out = tmp_path / "sweep"
    res = CliRunner().invoke(main, [
        "sweep", str(config), "--grid", "run.duration=0.03,0.06", "--grid", "network.populations.inh.n=100,150",
        "--seeds", "0-1", "--workers", "2", "--out", str(out), "--quiet",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "8 runs completed, 0 failed" in res.output and "Dask dashboard: http" in res.output
    runs = run_dirs(out)
    assert len(runs) == 8 and not list(out.glob("*/.*partial*"))
    for run in runs:  # each is an ordinary run directory, complete
        assert {"config.json", "summary.json", "spikes.npz", "raster.png"} <= {p.name for p in run.iterdir()}
        assert json.loads((run / "config.json").read_text())["run"]["seed"] == int(run.name)
    table = json.loads((out / "sweep.json").read_text())
    assert table["paths"] == ["run.duration", "network.populations.inh.n"]
    assert [r["completed"] for r in table["rows"]] == [2, 2, 2, 2]
    row = next(r for r in table["rows"] if r["overrides"] == {"run.duration": 0.06, "network.populations.inh.n": 150})
    rates = [
        json.loads((out / row["setting"] / str(seed) / "summary.json").read_text())["populations"]["inh"]["rate_hz"]
        for seed in (0, 1)
    ]
    entry = row["headline"]["rate_hz.inh"]
    assert entry["mean"] == pytest.approx(sum(rates) / 2)
    assert entry["std"] == pytest.approx(abs(rates[0] - rates[1]) / 2**0.5)
    assert json.loads((out / row["setting"] / "1" / "config.json").read_text())["network"]["populations"][1]["n"] == 150
    md = (out / "sweep.md").read_text()
    assert "| run.duration | network.populations.inh.n | n | rate_hz.exc | rate_hz.inh |" in md
    assert (out / "sweep.png").stat().st_size > 10_000
    # the report is rebuilt from the directories alone
    (out / "sweep.md").unlink()
    assert CliRunner().invoke(main, ["sweep", "--report", str(out)]).exit_code == 0
    assert (out / "sweep.md").read_text() == md


def test_a_worker_killed_mid_sweep_loses_no_run_and_duplicates_none(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    config = small_cuba(tmp_path, duration=0.5, backend="torch")  # runs of about a second
    spec = make_spec(config, axes=[parse_axis("network.populations.inh.n=100,120,140")], seeds="0-1")
    out = tmp_path / "sweep"
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        killed: list[int] = []

        def kill_when_a_run_is_in_flight() -> None:
            deadline = time.time() + 120
            while time.time() < deadline and not killed:
                if list(out.glob("*/.*partial*")) and run_dirs(out):  # one run done, others in flight
                    pid = next(iter(pids.values()))
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                time.sleep(0.02)

        killer = threading.Thread(target=kill_when_a_run_is_in_flight)
        killer.start()
        result = run_sweep(spec, out, scheduler=client, progress=False)
        killer.join()
    assert killed, "no worker was killed: the runs were too short to catch one in flight"
    assert not result.failed
    runs = run_dirs(out)
    assert len(runs) == 6 and {(r.parent.name, r.name) for r in runs} == {
        (s.name, str(seed)) for s in spec.settings for seed in spec.seeds
    }
    assert all(json.loads((r / RUN_FILE).read_text())["status"] == "completed" for r in runs)
    assert not list(out.glob("*/.*partial*"))  # the killed attempt's partial directory is gone
    counted = [(o.setting, o.seed) for o in result.outcomes]
    assert len(counted) == len(set(counted)) == 6  # each run reported once


def test_resume_after_an_interrupted_sweep_redoes_only_what_is_missing(tmp_path: Path) -> None:
    config = small_cuba(tmp_path)
    spec = make_spec(config, axes=[parse_axis("network.populations.inh.n=100,120")], seeds="0-2")
    out = tmp_path / "sweep"

    def interrupt_after_three(outcome: object) -> None:
        if len(run_dirs(out)) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out, workers=0, progress=False, on_outcome=interrupt_after_three)
    before = {r: json.loads((r / RUN_FILE).read_text())["finished"] for r in run_dirs(out)}
    assert len(before) == 3
    # what an interruption can leave: a half-written run and a run directory without its record
    (out / spec.settings[1].name / ".2.partial-deadbeef").mkdir(parents=True)
    (out / spec.settings[1].name / "1").mkdir(parents=True)
    # without --resume the directory is refused; with a different sweep, too
    res = CliRunner().invoke(main, ["sweep", str(config), "--grid", "network.populations.inh.n=100,120",
                                    "--seeds", "0-2", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 1 and "--resume" in res.output
    res = CliRunner().invoke(main, ["sweep", str(config), "--grid", "network.populations.inh.n=100,130",
                                    "--seeds", "0-2", "--out", str(out), "--resume"])  # fmt: skip
    assert res.exit_code == 1 and "different sweep" in res.output
    res = CliRunner().invoke(main, ["sweep", str(config), "--grid", "network.populations.inh.n=100,120",
                                    "--seeds", "0-2", "--out", str(out), "--resume", "--workers", "2",
                                    "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "3 of 6 runs already complete" in res.output
    assert "3 runs completed, 0 failed, 3 already complete" in res.output
    after = {r: json.loads((r / RUN_FILE).read_text())["finished"] for r in run_dirs(out)}
    assert len(after) == 6
    assert all(after[r] == t for r, t in before.items())  # the complete runs were not redone
    assert not list(out.glob("*/.*partial*"))


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import neurosim.sweep

    config = small_cuba(tmp_path)
    spec = make_spec(config, axes=[parse_axis("network.populations.inh.n=100,120")], seeds="0-1")
    execute = neurosim.sweep._execute

    def crash_on_120(kind, cfg, out_dir, mqtt, run_id, **kwargs):  # type: ignore[no-untyped-def]
        if cfg["network"]["populations"][1]["n"] == 120 and cfg["run"]["seed"] == 1:
            raise RuntimeError("simulated crash")
        execute(kind, cfg, out_dir, mqtt, run_id, **kwargs)

    monkeypatch.setattr(neurosim.sweep, "_execute", crash_on_120)
    result = run_sweep(spec, tmp_path / "sweep", workers=0, progress=False)
    assert len(result.failed) == 1 and len(result.outcomes) == 4
    failed = result.failed[0]
    run = tmp_path / "sweep" / failed.setting / "1"
    record = json.loads((run / RUN_FILE).read_text())
    assert record["status"] == "failed" and record["error"] == "RuntimeError: simulated crash"
    assert "simulated crash" in (run / "error.txt").read_text()  # with its traceback
    table = write_report(tmp_path / "sweep")
    assert [r["completed"] for r in table["rows"]] == [2, 1] and table["rows"][1]["failed"] == [1]
    assert "RuntimeError: simulated crash" in (tmp_path / "sweep" / "sweep.md").read_text()
    # --resume redoes the failed run (once its cause is gone)
    monkeypatch.setattr(neurosim.sweep, "_execute", execute)
    again = run_sweep(spec, tmp_path / "sweep", workers=0, progress=False, resume=True)
    assert again.skipped == 3 and [o.status for o in again.outcomes] == ["completed"]


def test_an_experiment_sweep_reports_average_accuracy_and_bwt(tmp_path: Path) -> None:
    config = tiny_experiment(tmp_path)
    spec = make_spec(config, axes=[parse_axis("ewc.enabled=true,false")], seeds="0-1")
    result = run_sweep(spec, tmp_path / "sweep", workers=0, progress=False)
    assert not result.failed and len(result.outcomes) == 4
    table = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    for row in table["rows"]:
        headline = {"average_accuracy", "bwt", "average_accuracy_task_incremental", "neurons_assigned"}
        assert set(row["headline"]) >= headline
        for seed in ("0", "1"):
            results = json.loads((tmp_path / "sweep" / row["setting"] / seed / "results.json").read_text())
            assert row["headline"]["average_accuracy"]["values"][seed] == results["average_accuracy"]
            assert results["seed"] == int(seed) if "seed" in results else True
    assert "| ewc.enabled | n | average_accuracy | bwt |" in (tmp_path / "sweep" / "sweep.md").read_text()


def test_an_experiment_sweep_pairs_each_run_with_its_control(tmp_path: Path) -> None:
    config = tiny_experiment(tmp_path)  # EWC on, two tasks: consolidation acts once control is on
    spec = make_spec(config, axes=[parse_axis("control=true")], seeds="0-2")
    assert not run_sweep(spec, tmp_path / "sweep", workers=0, progress=False).failed
    table = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    gain = table["rows"][0]["headline"]["gain_over_control"]
    for seed, value in gain["values"].items():
        results = json.loads((tmp_path / "sweep" / table["rows"][0]["setting"] / seed / "results.json").read_text())
        assert value == pytest.approx(results["average_accuracy"] - results["control"]["average_accuracy"])
    report = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "`gain_over_control`: each run against its own no-consolidation control" in report
    assert f"| {gain['mean']:.3f} ± {gain['std']:.3f}" in report
    # the paired difference's t statistic: mean / (std / sqrt(n))
    entry = {"mean": 0.02, "std": 0.04, "values": {"0": 0.0, "1": 0.0, "2": 0.06, "3": 0.02}}
    from neurosim.sweep import _cell

    assert _cell(entry, paired=True) == "0.020 ± 0.040 (t = +1.0)"
    assert _cell(entry) == "0.020 ± 0.040"


def test_explicit_named_settings_run_as_given(tmp_path: Path) -> None:
    config = small_cuba(tmp_path)
    settings = [
        Setting("small", {"network.populations.inh.n": 50}),
        Setting("large", {"network.populations.inh.n": 200}),
    ]
    spec = make_spec(config, settings=settings, seeds=[3])
    run_sweep(spec, tmp_path / "sweep", workers=0, progress=False)
    assert [p.parent.name for p in run_dirs(tmp_path / "sweep")] == ["large", "small"]
    with pytest.raises(SweepError, match="setting name"):
        make_spec(config, settings=[Setting("a/b", {})])


async def test_runs_and_progress_are_published_under_the_sweep_id(tmp_path: Path) -> None:
    config = small_cuba(tmp_path)
    spec = make_spec(config, axes=[parse_axis("network.populations.inh.n=100,120")], seeds="0")
    with LocalBroker() as broker:
        settings = parse_broker_url(broker.url)
        events: list[object] = []
        ready = asyncio.Event()

        async def read() -> None:
            async for event in subscribe(settings, "sw", ready=ready):
                events.append(event)

        reader = asyncio.create_task(read())
        await asyncio.wait_for(ready.wait(), 10)
        await asyncio.to_thread(run_sweep, spec, tmp_path / "sweep", workers=0, progress=False, mqtt=settings,
                                sweep_id="sw")  # fmt: skip

        def final() -> bool:
            return any(isinstance(e, SweepEvent) and e.done == 2 and e.running == 0 for e in events)

        for _ in range(500):
            if final():
                break
            await asyncio.sleep(0.01)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    assert final()
    sweep_events = [e for e in events if isinstance(e, SweepEvent)]
    assert sweep_events[0].total == 2 and sweep_events[0].done == 0
    run_ids = {e.run_id for e in events if isinstance(e, StatusEvent | PhaseEvent)}
    assert {f"sw/{s.name}/0" for s in spec.settings} <= run_ids


def test_a_function_sweeps_like_a_config(tmp_path: Path) -> None:
    spec = make_function_spec("sweep_functions:noisy_quadratic", {"x": 0.0, "scale": {"a": 1.0}},
                              axes=[parse_axis("x=1,2,4"), parse_axis("scale.a=1,3")], seeds="0-1")  # fmt: skip
    run_sweep(spec, tmp_path / "sweep", workers=0, progress=False)
    table = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    row = next(r for r in table["rows"] if r["overrides"] == {"x": 4, "scale.a": 3})
    assert row["headline"]["loss"]["values"] == {"0": 12.0, "1": 12.1}
    assert (tmp_path / "sweep" / row["setting"] / "1" / "value.txt").read_text() == "12.1\n"
    with pytest.raises(SweepError, match="no field 'b'"):
        make_function_spec("sweep_functions:noisy_quadratic", {"x": 0.0, "scale": {"a": 1.0}},
                           axes=[parse_axis("scale.b=1")])  # fmt: skip
    with pytest.raises(SweepError, match="cannot import"):
        make_function_spec("sweep_functions:nothing_here", {})


def test_a_sweep_reports_every_setting_against_a_baseline_seed_by_seed(tmp_path: Path) -> None:
    # loss = (x - 2)^2 + seed / 10: against x = 2 the seed's share cancels, run by run
    spec = make_function_spec("sweep_functions:noisy_quadratic", {"x": 0.0, "scale": {"a": 1.0}},
                              axes=[parse_axis("x=1,2,4")], seeds="0-2")  # fmt: skip
    run_sweep(spec, tmp_path / "sweep", workers=0, progress=False, baseline={"x": 2})
    table = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert table["baseline"]["overrides"] == {"x": 2}
    rows = {r["overrides"]["x"]: r for r in table["rows"]}
    assert "paired" not in rows[2]
    assert rows[4]["paired"]["loss"] == {"mean": pytest.approx(4.0), "std": pytest.approx(0.0), "n": 3, "t": None}
    report = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "| loss - baseline (paired) |" in report and "each setting minus the baseline (x=2)" in report
    assert "| 4 | 3 | 4.100 ± 0.100 | +4.000 ± 0.000 |" in report and "| 2 | 3 | 0.100 ± 0.100 | baseline |" in report
    # a rebuilt report keeps its baseline unless given another
    assert write_report(tmp_path / "sweep")["baseline"]["overrides"] == {"x": 2}
    again = CliRunner().invoke(main, ["sweep", "--report", str(tmp_path / "sweep"), "--baseline", "x=1"])
    assert again.exit_code == 0, again.output
    table = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert next(r for r in table["rows"] if r["overrides"] == {"x": 4})["paired"]["loss"]["mean"] == pytest.approx(3.0)
    bad = CliRunner().invoke(main, ["sweep", "--report", str(tmp_path / "sweep"), "--baseline", "x"])
    assert bad.exit_code == 2 and "--baseline takes PATH=VALUE" in bad.output
    # a baseline that names no setting, or several, is refused before anything runs
    with pytest.raises(SweepError, match="baseline x=3 matches 0 settings, not one; the settings are: x=1, x=2"):
        run_sweep(spec, tmp_path / "other", workers=0, progress=False, baseline={"x": 3})
    assert not (tmp_path / "other").exists()
    two = make_function_spec("sweep_functions:noisy_quadratic", {"x": 0.0, "scale": {"a": 1.0}},
                             axes=[parse_axis("x=1,2"), parse_axis("scale.a=1,3")], seeds="0")  # fmt: skip
    with pytest.raises(SweepError, match="baseline x=2 matches 2 settings, not one; they are"):
        run_sweep(two, tmp_path / "other", workers=0, progress=False, baseline={"x": 2})


def test_a_paired_difference_has_its_t_statistic_over_the_seeds_both_completed() -> None:
    from neurosim.sweep import _paired

    paired = _paired({"0": 1.0, "1": 2.0, "2": 4.0, "3": 9.0}, {"0": 0.0, "1": 0.0, "2": 0.0, "3": None})
    assert paired is not None and paired["n"] == 3  # seed 3 has no baseline value
    assert paired["mean"] == pytest.approx(7 / 3) and paired["std"] == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert paired["t"] == pytest.approx((7 / 3) / (np.std([1, 2, 4], ddof=1) / np.sqrt(3)))
    assert _paired({"0": 1.0}, {"1": 1.0}) is None  # no seed in common


def test_run_ids_are_bounded_and_printable() -> None:
    with pytest.raises(ValueError, match="at most 256"):
        check_run_id("x" * 70_000)
    for bad in ("a b", "tab\there", "new\nline"):
        with pytest.raises(ValueError, match="no spaces"):
            check_run_id(bad)
    res = CliRunner().invoke(main, ["run", str(EXAMPLES / "cuba.toml"), "--mqtt", "mqtt://localhost:1",
                                    "--run-id", "x" * 70_000])  # fmt: skip
    assert res.exit_code == 2 and "at most 256" in res.output  # refused before anything runs


def test_a_cluster_begun_early_runs_the_sweep_with_every_run_pinned_to_one_thread(tmp_path: Path) -> None:
    start = ClusterStart(2, dashboard_address=":0")  # the fork server imports while the sweep is validated
    spec = make_function_spec("sweep_functions:thread_pools", {"x": 0}, axes=[parse_axis("x=1,2")], seeds="0-1")
    result = run_sweep(spec, tmp_path / "sweep", scheduler=start, progress=False)
    assert len(result.outcomes) == 4 and not result.failed
    assert len({o.worker for o in result.outcomes}) >= 1
    for outcome in result.outcomes:  # forked from a server that imported numpy and torch before any pinning
        assert outcome.headline == {"torch_threads": 1.0, "largest_pool": 1.0}, outcome
    assert start.client().status == "closed"  # run_sweep shut the cluster it was given down


NUMBA_PROBE = """
import json, os, sys
from neurosim.sweep import RUN_MODULES, make_function_spec, run_sweep, warm_fork_server

def main():
    os.environ["NUMBA_NUM_THREADS"] = "1"  # the fork server starts, and imports numba, with this
    warm_fork_server(RUN_MODULES)
    del os.environ["NUMBA_NUM_THREADS"]
    spec = make_function_spec("sweep_functions:numba_after_pinning", {}, seeds="0-1")
    result = run_sweep(spec, sys.argv[1], workers=2, threads_per_run=2, progress=False, dashboard_address=":0")
    print(json.dumps([[o.status, o.error, o.headline] for o in result.outcomes]))

if __name__ == "__main__":
    main()
"""


def test_a_run_forked_from_the_fork_server_pins_numba_from_its_own_environment(tmp_path: Path) -> None:
    """The fork server read numba's thread count from its environment; each run pins its own
    (2 here), and a compile after the pinning re-reads it without a clash."""
    script = tmp_path / "probe.py"
    script.write_text(NUMBA_PROBE)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "sweep")], capture_output=True, text=True,
                          env=env, check=False, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(outcomes) == 2
    for status, error, headline in outcomes:
        assert (status, error) == ("completed", None)
        assert headline["numba_threads"] == 2.0


def test_importing_the_sweep_and_the_cli_leaves_pytorch_for_the_runs() -> None:
    code = "import sys, neurosim.cli, neurosim.sweep; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"  # `neurosim sweep` starts its workers before the ~2-s import


def test_the_plot_has_a_panel_per_varied_path_with_its_zipped_companions() -> None:
    # a sweep file fixing the data set (one value) and zipping sleep.dec to sleep.inc: three
    # panels would repeat the fixed path on every legend line and draw sleep.dec twice
    sleeps = ((False, 1e-3), (True, 1e-3), (True, 1e-2))
    grid = [(theta, enabled, inc) for theta in (1e-4, 2e-4) for enabled, inc in sleeps]
    rows = [
        {"overrides": {"data.dataset": "mnist-subset", "network.theta_plus": theta, "sleep.enabled": enabled,
                       "sleep.inc": inc, "sleep.dec": inc / 10}}
        for theta, enabled, inc in grid
    ]  # fmt: skip
    table = {"paths": ["data.dataset", "network.theta_plus", "sleep.enabled", "sleep.inc", "sleep.dec"], "rows": rows}
    assert plotted_paths(table) == {
        "network.theta_plus": ["network.theta_plus"],
        "sleep.enabled": ["sleep.enabled"],
        "sleep.inc": ["sleep.inc", "sleep.dec"],
    }
    assert plotted_paths({"paths": ["data.dataset"], "rows": rows}) == {}  # nothing varies: one panel of settings
