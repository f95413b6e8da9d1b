"""One line per event, as ``neurosim subscribe`` prints it: JSON or short text."""

from __future__ import annotations

import json
from typing import Any

from neurosim.events.schema import (
    DriftEvent,
    EvaluationEvent,
    Event,
    PhaseEvent,
    SleepEvent,
    StatusEvent,
    SweepEvent,
)
from neurosim.events.wire import SpikeBatch
from neurosim.outputs import strict_json


def spike_batch_fields(batch: SpikeBatch, *, full: bool) -> dict[str, Any]:
    """A spike batch as JSON fields: its header and counts, and with ``full`` every spike."""
    fields: dict[str, Any] = {
        "type": "spikes",
        "population": batch.population,
        "first_step": batch.first_step,
        "n_steps": batch.n_steps,
        "dt": batch.dt,
        "t_start_s": batch.first_step * batch.dt,
        "t_stop_s": (batch.first_step + batch.n_steps) * batch.dt,
        "n_spikes": int(batch.indices.size),
    }
    if full:
        fields["steps"] = batch.steps.tolist()
        fields["indices"] = batch.indices.tolist()
        if batch.instances is not None:
            fields["instances"] = batch.instances.tolist()
    return fields


def render_event(event: Event, *, as_json: bool, full_spikes: bool = False) -> str:
    """One line for ``event``: JSON (``as_json``) or short text."""
    if as_json:
        if isinstance(event, SpikeBatch):
            return json.dumps(spike_batch_fields(event, full=full_spikes))
        kind = {
            PhaseEvent: "phase",
            StatusEvent: "status",
            EvaluationEvent: "evaluation",
            SleepEvent: "sleep",
            DriftEvent: "drift",
            SweepEvent: "sweep",
        }[type(event)]
        return json.dumps(strict_json({"type": kind, **event.model_dump(mode="json")}), allow_nan=False)
    return _text(event, full_spikes)


def _text(event: Event, full_spikes: bool) -> str:
    match event:
        case PhaseEvent():
            came_from = f"{event.previous.value} -> " if event.previous else ""
            task = f" (task {event.task})" if event.task else ""
            where = f"at {event.sim_time_s:.3f} s"
            text = f"phase      {event.run_id} #{event.sequence} {came_from}{event.phase.value}{task} {where}"
        case StatusEvent():
            how = "" if event.clean else " (connection lost: Last Will)"
            text = f"status     {event.run_id} {event.state.value}{how}"
        case EvaluationEvent():
            accs = ", ".join(f"{task} {acc:.3f}" for task, acc in event.accuracy.items())
            text = (
                f"evaluation {event.run_id} #{event.sequence} {event.scenario}-incremental average "
                f"{event.average_accuracy:.3f} ({accs}) at {event.sim_time_s:.3f} s"
            )
        case SleepEvent():
            groups = ", ".join(f"{c}: {n}" for c, n in event.spikes_per_class.items())
            text = (
                f"sleep      {event.run_id} #{event.episode} {event.duration_s:.1f} s of {event.drive} replay, "
                f"{event.spikes} spikes ({groups}; unassigned {event.spikes_unassigned}), "
                f"{event.classes_reactivated}/{event.classes_seen} classes reactivated, "
                f"mean |dw| {event.weight_change_mean_abs:.2e}, protected {100 * event.protected_fraction:.1f} %"
            )
        case DriftEvent():
            text = (
                f"drift      {event.run_id} {event.block} closed at sample {event.position} "
                f"(signal {event.value:.3f}, evidence {event.statistic:.1f}) at {event.sim_time_s:.3f} s"
            )
        case SweepEvent():
            last = f", last {event.last_run}" if event.last_run else ""
            text = (
                f"sweep      {event.sweep_id} {event.done + event.failed}/{event.total} runs finished "
                f"({event.failed} failed, {event.running} running{last})"
            )
        case SpikeBatch():
            f = spike_batch_fields(event, full=full_spikes)
            line = (
                f"spikes     {event.population} {f['n_spikes']} spikes in [{f['t_start_s']:.4f}, {f['t_stop_s']:.4f}) s"
            )
            if full_spikes:
                line += " " + json.dumps({"steps": f["steps"], "indices": f["indices"]})
            text = line
    return text
