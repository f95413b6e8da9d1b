"""What a continual-learning run tells its observers: each SLEEP diagnosed (was every old
class reactivated, how far did each task's most important synapses move), and each
evaluation, as events on the bus and as Prometheus metrics."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from neurosim.events.bus import EventBus
from neurosim.events.schema import EvaluationEvent, Event, SleepEvent, TaskWeightChange
from neurosim.learning.sleep import SleepReport
from neurosim.metrics import Metrics
from neurosim.phases.evaluation import Scenario


def diagnose_sleep(
    report: SleepReport,
    *,
    run_id: str,
    episode: int,
    classes: list[int],
    assigned: npt.NDArray[np.int64],
    fishers: Mapping[str, npt.NDArray[np.float32]],
    within: str | None,
) -> SleepEvent:
    """Spikes per class-assigned group of neurons, and the weight change of each task's top
    5 % synapses by Fisher (``fishers``: task id -> its stored Fisher of the plastic weights)."""
    per_class = {str(c): int(report.spikes_per_neuron[assigned == c].sum()) for c in classes}
    change = report.weight_change.detach().cpu().numpy().astype(np.float64)
    per_task: dict[str, TaskWeightChange] = {}
    for task_id, fisher in fishers.items():
        top = np.argsort(fisher)[-max(1, fisher.size // 20) :]
        per_task[task_id] = TaskWeightChange(
            top_fisher_mean_change=float(change[top].mean()),
            top_fisher_mean_abs_change=float(np.abs(change[top]).mean()),
        )
    return SleepEvent(
        run_id=run_id,
        episode=episode,
        within_task=within,
        start_s=report.start_s,
        duration_s=report.duration_s,
        drive=report.drive.value,
        gain=report.gain,
        target_rate_hz=None if np.isnan(report.target_rate_hz) else report.target_rate_hz,
        rate_hz=report.rate_hz,
        spikes=int(report.spikes_per_neuron.sum()),
        spikes_per_class=per_class,
        spikes_unassigned=int(report.spikes_per_neuron[assigned < 0].sum()),
        classes_reactivated=sum(v > 0 for v in per_class.values()),
        classes_seen=len(classes),
        weight_change_mean_abs=float(np.abs(change).mean()),
        weight_change_per_task=per_task,
        protected_fraction=report.protected_fraction,
        wall_time=time.time(),
    )


def announce_sleep(event: SleepEvent, metrics: Metrics, bus: EventBus[Event]) -> None:
    """Count a sleep's replay in the metrics (spikes per assigned class, classes reactivated,
    weight change) and publish its ``SleepEvent``."""
    for c, spikes in event.spikes_per_class.items():
        metrics.sleep_replay_spikes.labels(assigned_class=c).inc(spikes)
    metrics.sleep_replay_spikes.labels(assigned_class="-1").inc(event.spikes_unassigned)
    metrics.sleep_classes_reactivated.set(event.classes_reactivated)
    metrics.sleep_weight_change.set(event.weight_change_mean_abs)
    metrics.sleep_protected.set(event.protected_fraction)
    bus.publish(event)


def announce_evaluation(
    rows: Mapping[Scenario, Mapping[str, float]],
    *,
    primary: Scenario,
    run_id: str,
    sequence: int,
    sim_time: float,
    metrics: Metrics,
    bus: EventBus[Event],
) -> None:
    """``rows``: scenario -> task id -> accuracy of the tasks seen."""
    for scenario, seen in rows.items():
        for task_id, acc in seen.items():
            metrics.task_accuracy.labels(task=task_id, scenario=scenario).set(acc)
        if seen:
            metrics.average_accuracy.labels(scenario=scenario).set(sum(seen.values()) / len(seen))
    accuracy = dict(rows[primary])
    bus.publish(
        EvaluationEvent(
            run_id=run_id,
            sequence=sequence,
            scenario=primary,
            accuracy=accuracy,
            average_accuracy=sum(accuracy.values()) / len(accuracy) if accuracy else 0.0,
            sim_time_s=sim_time,
            wall_time=time.time(),
        )
    )
