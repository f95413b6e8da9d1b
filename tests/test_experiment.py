"""The continual-learning Experiment: phases end to end, boundaries, failures, metrics."""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neurosim.config import ConfigError, parse_continual
from neurosim.events.schema import DriftEvent
from neurosim.learning.fisher import SnapshotReason
from neurosim.phases import ListenerError, Phase
from neurosim.phases.evaluation import average_accuracy, backward_transfer, confusion, paired_comparison
from neurosim.phases.report import plot_experiment
from neurosim.phases.schedule import Experiment, run_experiment

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _tiny(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "experiment": {"name": "tiny"},
        "seed": 1,
        "data": {"n_tasks": 2, "train_per_task": 6, "test_per_task": 4, "present": 0.04, "rest": 0.01},
        "network": {"n_hidden": 20},
        "stdp": {"kind": "pair", "a_plus": 0.01, "a_minus": 1e-4, "w_max": 1.0},
        "fisher": {"snapshot_every": 2000, "max_staleness_steps": 10000},
        "sleep": {"duration": 0.05},
    }
    data.update(changes)
    return data


def test_small_experiment_runs_every_phase_and_writes_results(tmp_path: Path) -> None:
    results = run_experiment(parse_continual(_tiny()), tmp_path, progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["status"] == "completed" and saved["average_accuracy"] == results["average_accuracy"]
    phases = [(e["phase"], e["task"]) for e in saved["phase_history"]]
    assert phases == [("wake", None), ("learning", "split-01"), ("sleep", "split-01"), ("wake", "split-01"),
                      ("learning", "split-23"), ("sleep", "split-23"), ("wake", "split-23")]  # fmt: skip
    matrix = saved["accuracy_matrix"]
    assert len(matrix) == 2 and matrix[0][1] is None and all(0.0 <= a <= 1.0 for a in matrix[1])
    assert saved["bwt"] == pytest.approx(matrix[1][0] - matrix[0][0])
    assert np.isfinite(saved["average_accuracy_task_incremental"])
    for plot in ("accuracy.png", "phases.png", "sleep_raster.png"):
        assert (tmp_path / plot).stat().st_size > 5_000
    assert sorted(p.name for p in (tmp_path / "fisher").iterdir()) == ["split-01", "split-23"]


def test_leaving_learning_consolidates_exactly_that_task(tmp_path: Path) -> None:
    cfg = parse_continual(_tiny(schedule=[{"phase": "learning", "task": 0}, {"phase": "wake"}], ewc={"mode": "online"}))
    exp = Experiment(cfg, tmp_path, progress=False)
    asyncio.run(exp.run())
    assert exp.fisher.regulariser.tasks == ["split-01"]
    snapshot = exp.fisher.store.load("split-01")
    assert getattr(snapshot, "reason", None) is SnapshotReason.FORCED
    name = exp.learner.parameter_name
    anchor = exp.fisher.regulariser.anchors["online"]
    np.testing.assert_allclose(anchor.fisher[name].numpy(), snapshot.arrays[name], rtol=1e-6)


def test_entering_sleep_snapshots_each_accumulator_with_pending_steps_once(tmp_path: Path) -> None:
    cfg = parse_continual(_tiny())
    exp = Experiment(cfg, tmp_path, progress=False)

    async def scenario() -> None:
        await exp.machine.start()
        await exp.machine.transition(Phase.LEARNING, task="split-01")
        await exp.learn(0)
        await exp.machine.transition(Phase.WAKE)  # consolidation: nothing pending afterwards
        acc = exp.fisher.accumulators["split-01"]
        for _ in range(3):  # a learner kept feeding it after the boundary
            await acc.update({exp.learner.parameter_name: np.ones(exp.proj.n_synapses, np.float32)})
        latest = exp.fisher.store.versions("split-01")[-1]
        await exp.machine.transition(Phase.SLEEP)
        assert exp.fisher.store.versions("split-01")[-1] == latest + 1
        assert getattr(exp.fisher.store.load("split-01"), "reason", None) is SnapshotReason.SLEEP
        assert acc.pending_steps == 0
        await exp.machine.transition(Phase.WAKE)
        await exp.machine.transition(Phase.SLEEP)  # nothing pending now: no new snapshot
        assert exp.fisher.store.versions("split-01")[-1] == latest + 1

    asyncio.run(scenario())


def test_a_failing_listener_stops_the_run_and_keeps_the_results(tmp_path: Path) -> None:
    exp = Experiment(parse_continual(_tiny()), tmp_path, progress=False)

    async def broken(event) -> None:
        raise RuntimeError("replay hardware unplugged")

    exp.machine.on_enter(Phase.SLEEP, broken)
    with pytest.raises(ListenerError, match="replay hardware unplugged"):
        asyncio.run(exp.run())
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["status"] == "failed" and "replay hardware unplugged" in saved["error"]
    assert [e["phase"] for e in saved["phase_history"]] == ["wake", "learning", "sleep"]


def test_metrics_of_an_accuracy_matrix() -> None:
    matrix: list[list[float | None]] = [[0.9, None, None], [0.7, 0.8, None], [0.5, 0.6, 1.0]]
    assert average_accuracy(matrix) == pytest.approx(0.7)
    assert backward_transfer(matrix, {0: 0, 1: 1, 2: 2}) == pytest.approx(((0.5 - 0.9) + (0.6 - 0.8)) / 2)


def test_a_run_and_its_control_are_compared_image_by_image() -> None:
    # task 0: both right on 3 images, the run alone on 2, the control alone on 0; task 1 unseen
    paired = paired_comparison([[1, 1, 1, 1, 1, 0], None], [[1, 1, 1, 0, 0, 0], None])
    assert (paired.images, paired.run_only, paired.control_only) == (6, 2, 0)
    assert paired.p_value == pytest.approx(0.5)  # 2 of 2 discordant: 2 * 0.5^2
    lopsided = paired_comparison([[0] * 10], [[1] * 10])
    assert (lopsided.run_only, lopsided.control_only) == (0, 10)
    assert lopsided.p_value == pytest.approx(2 * 0.5**10)  # what McNemar's exact test gives
    assert paired_comparison([[1, 0]], [[1, 0]]).p_value == 1.0  # nothing discordant: no evidence either way
    with pytest.raises(ValueError, match="task 0: the run and the control were not evaluated on the same"):
        paired_comparison([[1, 0]], [[1, 0, 1]])
    with pytest.raises(ValueError, match="task 1: the run and the control"):
        paired_comparison([[1], [1]], [[1], None])
    with pytest.raises(ValueError, match="outcomes for 1 tasks, the control for 2"):
        paired_comparison([[1]], [[1], None])


def test_an_experiment_learns_the_classes_in_the_order_given(tmp_path: Path) -> None:
    data = {**_tiny()["data"], "class_order": [9, 4, 7, 0]}
    results = run_experiment(parse_continual(_tiny(data=data, control=False)), tmp_path, progress=False)
    assert results["tasks"] == [{"task_id": "split-94", "classes": [9, 4]}, {"task_id": "split-70", "classes": [7, 0]}]
    with pytest.raises(ConfigError, match="class_order lists 4"):
        parse_continual(_tiny(data={**data, "n_tasks": 3}))
    with pytest.raises(ConfigError, match=r"data.class_order.*lists a class more than once"):
        parse_continual(_tiny(data={**data, "class_order": [9, 4, 9, 0]}))
    with pytest.raises(ConfigError, match=r"data.class_order.0"):
        parse_continual(_tiny(data={**data, "class_order": [12, 4, 7, 0]}))


def test_the_confusion_counts_where_each_class_was_voted_in_the_order_learned() -> None:
    # task (8, 9) first, then (0, 1); task 2 (4, 5) not evaluated yet; class 1 has no test image here
    labels = [np.array([8, 8, 9]), np.array([0, 0]), None]
    voted = [np.array([8, 0, 9]), np.array([0, 8]), None]
    table = confusion(voted, labels, [(8, 9), (0, 1), (4, 5)])
    assert table["classes"] == [8, 9, 0, 1]
    assert table["counts"] == [[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]


def test_schedules_outside_the_transition_graph_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"schedule\[1\]: cannot go from sleep to learning"):
        parse_continual(_tiny(schedule=[{"phase": "sleep"}, {"phase": "learning", "task": 0}]))
    with pytest.raises(ConfigError, match=r"schedule\[0\].task"):
        parse_continual(_tiny(schedule=[{"phase": "learning", "task": 7}]))


def test_a_sleep_before_any_learning_is_refused_with_the_reason(tmp_path: Path) -> None:
    # an allowed transition (WAKE -> SLEEP), but a sleep with nothing stored to replay: refused
    # when the config is read, and by the experiment itself when its sleep is called directly
    with pytest.raises(ConfigError, match=r"schedule\[0\]: a sleep block before any learning block"):
        parse_continual(_tiny(schedule=[{"phase": "sleep"}, {"phase": "wake"}, {"phase": "learning", "task": 0}]))
    exp = Experiment(parse_continual(_tiny()), tmp_path, progress=False)
    with pytest.raises(RuntimeError, match="SLEEP before any LEARNING: there is nothing to replay"):
        asyncio.run(exp.sleep(0.1))


def test_evaluations_are_announced_on_the_bus_and_in_the_accuracy_metrics(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from neurosim.events.schema import EvaluationEvent, PhaseEvent, SpikeBatch
    from neurosim.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    exp = Experiment(parse_continual(_tiny()), tmp_path, progress=False, run_id="acc", metrics=metrics)
    seen = exp.bus.subscribe(maxsize=100_000)
    results = asyncio.run(exp.run())
    events = [seen.get_nowait() for _ in range(seen.pending())]
    evaluations = [e for e in events if isinstance(e, EvaluationEvent)]
    assert [e.sequence for e in evaluations] == [0, 1]
    last = evaluations[-1]
    assert last.scenario == "class" and list(last.accuracy.values()) == results["accuracy_matrix"][-1]
    assert last.average_accuracy == pytest.approx(results["average_accuracy"])
    assert len([e for e in events if isinstance(e, PhaseEvent)]) == 7
    exc_batches = [e for e in events if isinstance(e, SpikeBatch) and e.population == "exc"]
    assert sum(b.indices.size for b in exc_batches) > 0
    value = metrics.registry.get_sample_value
    for task_id, acc in last.accuracy.items():
        assert value("neurosim_task_accuracy_ratio", {"task": task_id, "scenario": "class"}) == acc
    assert value("neurosim_phase_transitions_total", {"from_phase": "learning", "to_phase": "sleep"}) == 2
    assert value("neurosim_phase", {"neurosim_phase": "wake"}) == 1
    assert value("neurosim_simulated_seconds_total") == pytest.approx(results["simulated_s"])


def test_the_run_reports_its_no_consolidation_control_beside_it(tmp_path: Path) -> None:
    cfg = parse_continual(_tiny())
    results = run_experiment(cfg, tmp_path, progress=False)
    control = results["control"]
    alone = run_experiment(cfg.without_consolidation(), tmp_path / "alone", progress=False)
    assert "control" not in alone  # a run without consolidation has nothing to compare with
    for key in ("average_accuracy", "bwt", "average_accuracy_task_incremental"):
        assert control[key] == alone[key]  # the same seed and data, EWC and sleep off
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["control"]["average_accuracy"] == control["average_accuracy"]
    assert (tmp_path / "control" / "results.json").exists()
    # image by image: the same test images, so the count difference is the accuracy difference
    for suffix in ("", "_task_incremental"):
        paired, n_tasks = control[f"paired{suffix}"], len(results["tasks"])
        per_task = paired["images"] // n_tasks  # every task has the same number of test images
        gain = results[f"average_accuracy{suffix}"] - control[f"average_accuracy{suffix}"]
        assert (paired["run_only"] - paired["control_only"]) / (per_task * n_tasks) == pytest.approx(gain)
        assert 0 < paired["p_value"] <= 1
        outcomes = results[f"final_outcomes{suffix}"]
        assert [np.mean(o) for o in outcomes] == pytest.approx(results[f"accuracy_matrix{suffix}"][-1])
    # where the class-incremental votes went: every test image once, the diagonal the right ones
    confusion = results["final_confusion_class_incremental"]
    counts = np.asarray(confusion["counts"])
    assert confusion["classes"][:4] == [c for task in results["tasks"] for c in task["classes"]]
    assert results["scenario"] == "class"  # so final_outcomes are the class-incremental ones
    assert counts.sum() == sum(len(o) for o in results["final_outcomes"])
    assert np.trace(counts) == sum(sum(o) for o in results["final_outcomes"])
    assert control["final_confusion_class_incremental"] == alone["final_confusion_class_incremental"]
    assert (tmp_path / "confusion.png").exists()  # the run's beside its control's
    assert not parse_continual(_tiny(control=False)).control


def test_a_run_consolidates_only_where_a_method_has_something_to_act_on() -> None:
    assert parse_continual(_tiny()).consolidates()  # sleeps after each task
    assert parse_continual(_tiny(sleep={"enabled": False})).consolidates()  # EWC pulls the second task
    assert not parse_continual(_tiny(sleep={"enabled": False}, ewc={"enabled": False})).consolidates()
    assert not parse_continual(_tiny(joint=True)).consolidates()  # one block: no sleep, nothing to pull
    assert parse_continual(_tiny(joint=True, replay={"enabled": True, "every": 2})).consolidates()
    one_task = {**_tiny()["data"], "n_tasks": 1}
    assert not parse_continual(_tiny(data=one_task, sleep={"enabled": False})).consolidates()


def test_results_say_how_many_neurons_hold_a_class(tmp_path: Path) -> None:
    exp = Experiment(parse_continual(_tiny(control=False)), tmp_path, progress=False)
    results = asyncio.run(exp.run())
    held = exp.voting.assignments_among(sorted({c for t in exp.tasks for c in t.classes}))
    assert results["neurons_assigned"] == int((held >= 0).sum())
    assert 0 < results["neurons_assigned"] <= exp.cfg.network.n_hidden
    assert json.loads((tmp_path / "results.json").read_text())["neurons_assigned"] == results["neurons_assigned"]


def test_the_control_of_a_schedule_that_evaluates_around_a_sleep_runs(tmp_path: Path) -> None:
    # learning, wake, sleep, wake is a valid schedule; without its sleep it would ask the machine
    # for WAKE -> WAKE, which the control must not (it crashed after the run had finished)
    schedule = [{"phase": "learning", "task": 0}, {"phase": "wake"}, {"phase": "sleep"}, {"phase": "wake"},
                {"phase": "learning", "task": 1}, {"phase": "wake"}]  # fmt: skip
    cfg = parse_continual(_tiny(schedule=schedule))
    assert [b.phase for b in cfg.without_consolidation().resolved_schedule()] == ["learning", "wake", "learning",
                                                                                  "wake"]  # fmt: skip
    results = run_experiment(cfg, tmp_path, progress=False)
    assert len(results["accuracy_matrix"]) == 3  # the run evaluates before and after its sleep
    control = json.loads((tmp_path / "control" / "results.json").read_text())
    assert control["status"] == "completed" and len(control["accuracy_matrix"]) == 2
    assert results["control"]["average_accuracy"] == control["average_accuracy"]


def test_every_sleep_is_diagnosed_in_results_bus_and_metrics(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from neurosim.events.schema import SleepEvent, event_from_message, payload_of, topic_of
    from neurosim.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    cfg = parse_continual(_tiny(sleep={"duration": 0.3, "drive": "class-means", "targeted": True}))
    exp = Experiment(cfg, tmp_path, progress=False, run_id="dreams", metrics=metrics)
    seen = exp.bus.subscribe(maxsize=100_000)
    results = asyncio.run(exp.run())
    events = [e for e in (seen.get_nowait() for _ in range(seen.pending())) if isinstance(e, SleepEvent)]
    assert [e.episode for e in events] == [0, 1] == [d["episode"] for d in results["sleep"]]
    last = results["sleep"][-1]
    assert last["classes_seen"] == 4 and set(last["spikes_per_class"]) == {"0", "1", "2", "3"}
    assert last["spikes"] == sum(last["spikes_per_class"].values()) + last["spikes_unassigned"] > 0
    assert last["duration_s"] == pytest.approx(0.3) and last["gain"] > 0 and last["target_rate_hz"] > 0
    assert set(last["weight_change_per_task"]) == {"split-01", "split-23"}
    assert last["weight_change_mean_abs"] > 0
    topic = topic_of("dreams", events[-1])
    assert topic == "neurosim/dreams/sleep"
    assert event_from_message(topic, payload_of(events[-1])[0]) == events[-1]  # the wire round trip
    value = metrics.registry.get_sample_value
    total = sum(d["spikes"] for d in results["sleep"])
    per_class = [value("neurosim_sleep_replay_spikes_total", {"assigned_class": c}) or 0.0 for c in "0123"]
    assert sum(per_class) + (value("neurosim_sleep_replay_spikes_total", {"assigned_class": "-1"}) or 0.0) == total
    assert value("neurosim_sleep_classes_reactivated") == last["classes_reactivated"]
    assert value("neurosim_sleep_protected_ratio") == last["protected_fraction"]


def test_task_incremental_voting_never_scores_below_class_incremental(tmp_path: Path) -> None:
    results = run_experiment(parse_continual(_tiny(data={**_tiny()["data"], "n_tasks": 3}, control=False)), tmp_path,
                             progress=False)  # fmt: skip
    for row_class, row_task in zip(results["accuracy_matrix_class_incremental"],
                                   results["accuracy_matrix_task_incremental"], strict=True):  # fmt: skip
        for a_class, a_task in zip(row_class, row_task, strict=True):
            assert (a_class is None) == (a_task is None)
            assert a_class is None or a_task >= a_class


def test_joint_training_learns_every_task_in_one_block(tmp_path: Path) -> None:
    cfg = parse_continual(_tiny(joint=True, ewc={"enabled": False}, sleep={"enabled": False}))
    exp = Experiment(cfg, tmp_path, progress=False)
    results = asyncio.run(exp.run())
    assert [(e["phase"], e["task"]) for e in results["phase_history"]] == [
        ("wake", None), ("learning", "split-23"), ("wake", "split-23")]  # fmt: skip
    assert len(results["accuracy_matrix"]) == 1 and all(a is not None for a in results["accuracy_matrix"][0])
    assert exp.voting.observed.sum() == 2 * 6  # every task's training images, once
    with pytest.raises(ConfigError, match="joint"):
        parse_continual(_tiny(joint=True, schedule=[{"phase": "learning", "task": 0}, {"phase": "sleep"}]))


def test_naps_interleave_sleep_with_learning_inside_the_task(tmp_path: Path) -> None:
    cfg = parse_continual(_tiny(sleep={"duration": 0.1, "interleave_every": 3, "interleave_duration": 0.05},
                                control=False))  # fmt: skip
    results = run_experiment(cfg, tmp_path, progress=False)
    within = [(s["within_task"], round(s["duration_s"], 3)) for s in results["sleep"]]
    # 6 images per task: a nap after the 3rd (none after the last: the SLEEP phase follows)
    assert within == [("split-01", 0.05), (None, 0.1), ("split-23", 0.05), (None, 0.1)]
    phases = [e["phase"] for e in results["phase_history"]]
    assert phases.count("sleep") == 2  # naps happen inside LEARNING, without a phase change


def test_results_are_strict_json_even_when_a_metric_is_undefined(tmp_path: Path) -> None:
    cfg = parse_continual(_tiny(data={**_tiny()["data"], "n_tasks": 1}, control=False))
    results = run_experiment(cfg, tmp_path, progress=False)
    assert np.isnan(results["bwt"])  # one task: no backward transfer

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    saved = json.loads((tmp_path / "results.json").read_text(), parse_constant=refuse)
    assert saved["bwt"] is None and saved["average_accuracy"] == results["average_accuracy"]


def test_the_uniform_noise_control_keeps_the_targeted_class_blocks(tmp_path: Path) -> None:
    cfg = parse_continual(_tiny(sleep={"duration": 0.2, "drive": "uniform", "targeted": True}, control=False))
    exp = Experiment(cfg, tmp_path, progress=False)
    statistics = []
    original = exp.sleeper.statistics.means

    def spy(keys: list[tuple[int, int]], *, by_class: bool) -> list[np.ndarray]:
        statistics.append(original(keys, by_class=by_class))
        return statistics[-1]

    exp.sleeper.statistics.means = spy  # type: ignore[method-assign]
    results = asyncio.run(exp.run())
    assert [s["drive"] for s in results["sleep"]] == ["uniform", "uniform"]
    assert [len(s) for s in statistics] == [2, 4]  # one block statistic per class seen, labelled, as targeted replay
    assert all(s["spikes"] > 0 for s in results["sleep"])


def test_a_task_free_run_finds_the_task_boundaries_with_no_labels_of_them(tmp_path: Path) -> None:
    """The main job's network on three split-digit tasks as one stream: the drift detector on
    the readout's loss closes a LEARNING block near each true boundary, and every drift
    goes LEARNING -> SLEEP -> WAKE -> LEARNING through the orchestrator."""
    raw = tomllib.loads((EXAMPLES / "continual_digits_task_free.toml").read_text())
    raw["seed"] = 1
    raw["data"] |= {"n_tasks": 3, "train_per_task": 80, "test_per_task": 10}
    raw["sleep"] |= {"duration": 1.0}
    raw["control"] = False
    exp = Experiment(parse_continual(raw), tmp_path, progress=False)
    drift_events = exp.bus.subscribe(maxsize=100_000)
    results = asyncio.run(exp.run())
    plot_experiment(tmp_path)
    found = results["task_free"]
    events = [drift_events.get_nowait() for _ in range(drift_events.pending())]
    published = [e for e in events if isinstance(e, DriftEvent)]
    assert [(e.block, e.position) for e in published] == [(f"block-{k}", p) for k, p in enumerate(found["drifts"])]
    assert found["boundaries"] == [80, 160]
    assert found["found"] == 2 and found["false_alarms"] == 0, found
    assert all(0 <= d <= 30 for d in found["delay_images"])
    phases = [e["phase"] for e in results["phase_history"]]
    assert phases == ["wake"] + ["learning", "sleep", "wake"] * 2 + ["learning", "wake"]
    blocks = [e["task"] for e in results["phase_history"] if e["phase"] == "learning"]
    assert blocks == ["block-0", "block-1", "block-2"]
    assert len(found["readout_loss"]) == 240
    assert (tmp_path / "drift.png").stat().st_size > 5_000
    assert sorted(p.name for p in (tmp_path / "fisher").iterdir()) == ["block-0", "block-1", "block-2"]


def test_replay_of_stored_episodes_during_learning_and_sleep(tmp_path: Path) -> None:
    """A reservoir buffer of the images shown: one stored image learned again after every
    second new one, and SLEEP driven by the stored images themselves."""
    cfg = parse_continual(_tiny(replay={"enabled": True, "capacity": 5, "every": 2},
                                sleep={"duration": 0.1, "drive": "episodes"}, control=False))  # fmt: skip
    exp = Experiment(cfg, tmp_path, progress=False)
    results = asyncio.run(exp.run())
    assert results["consolidation"]["replay"] is True
    assert results["replay"]["stored"] == 5 and results["replay"]["offered"] == 12  # 2 tasks x 6 images
    assert sum(results["replay"]["class_counts"]) == 5
    assert [s["drive"] for s in results["sleep"]] == ["episodes", "episodes"]
    assert exp.voting.observed.sum() == 12 + 6  # every second image brings back one stored image
    with pytest.raises(ConfigError, match=r"replay\.enabled"):
        parse_continual(_tiny(sleep={"drive": "episodes"}))


@pytest.mark.parametrize("how", ["sum", "per-task"])
def test_sleep_is_protected_by_the_tasks_fishers_combined_as_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    import torch

    from neurosim.learning.sleep import combine_fishers, fisher_protection
    from neurosim.phases import layer_sleep

    given: list[torch.Tensor] = []
    original = layer_sleep.sleep_episode

    async def spy(*args: Any, **kwargs: Any) -> Any:
        given.append(kwargs["fisher"])
        return await original(*args, **kwargs)

    monkeypatch.setattr(layer_sleep, "sleep_episode", spy)
    exp = Experiment(parse_continual(_tiny(control=False, sleep={"duration": 0.05, "protection_fisher": how})),
                     tmp_path, progress=False)  # fmt: skip
    results = asyncio.run(exp.run())
    tasks = [torch.from_numpy(f) for f in exp.fisher.stored_fishers(exp.learner.parameter_name).values()]
    assert len(given) == 2 and len(tasks) == 2  # one sleep after each task; each task's Fisher stored
    assert any(float(t.max()) > 0 for t in tasks)
    expected = combine_fishers(tasks, how)  # type: ignore[arg-type]
    assert expected is not None and torch.equal(given[-1], expected)
    # the diagnostics say how much of the layer the protection holds (at least halves its depression)
    shield = fisher_protection(expected, exp.cfg.sleep.fisher_protection)
    assert shield is not None
    held = results["sleep"][-1]["protected_fraction"]
    assert held == pytest.approx(float((shield <= 0.5).double().mean())) and 0 < held < 1
    if how == "per-task":  # every task's most important synapse counts alike (a task with no gradient yet: none)
        assert float(given[-1].max()) <= 2.0
        assert all(float(given[-1][int(t.argmax())]) >= 1.0 for t in tasks if float(t.max()) > 0)
