"""Event models and their payloads: what the bus carries and what goes over MQTT.

- ``PhaseEvent``: one phase transition (JSON on ``neurosim/{run_id}/phase``).
- ``StatusEvent``: a run's liveness, ``online`` or ``offline`` (JSON on ``.../status``).
- ``EvaluationEvent``: accuracy per task after an evaluation (JSON on ``.../metrics``).
- ``DriftEvent``: a drift detector closed a LEARNING block of a task-free run (JSON on
  ``.../drift``).
- ``SleepEvent``: what one SLEEP replayed: spikes per class-assigned group of neurons and
  the weight change of each task's most important synapses (JSON on ``.../sleep``).
- ``SweepEvent``: a sweep's progress, runs done, failed and in flight (JSON, retained, on
  ``neurosim/{sweep_id}/sweep``; the sweep's runs publish under ``neurosim/{sweep_id}/{setting}/{seed}/``).
- ``SpikeBatch``: the spikes of one population over a chunk of steps, in the binary wire
  format of ``neurosim.events.wire`` (on ``.../spikes/{population}``).

``payload_of`` turns an event into its topic suffix and bytes; ``event_from_message`` reads
one back from a topic and payload, raising ``MalformedEvent`` (a ``ValueError``) for anything
it cannot decode, and nothing else.
"""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from neurosim.events.wire import CONTENT_TYPE as SPIKES_CONTENT_TYPE
from neurosim.events.wire import SpikeBatch, SpikeBatchError, decode, encode
from neurosim.phases.phase import Phase

JSON_CONTENT_TYPE = "application/json"
TOPIC_ROOT = "neurosim"

__all__ = [
    "JSON_CONTENT_TYPE",
    "SPIKES_CONTENT_TYPE",
    "TOPIC_ROOT",
    "DriftEvent",
    "EvaluationEvent",
    "Event",
    "MalformedEvent",
    "PhaseEvent",
    "RunState",
    "SleepEvent",
    "SpikeBatch",
    "SpikeBatchError",
    "StatusEvent",
    "SweepEvent",
    "Topic",
    "decode",
    "encode",
    "event_from_message",
    "payload_of",
    "topic_of",
]


class PhaseEvent(BaseModel):
    """One transition: from ``previous`` to ``phase`` (``previous`` is None for the first)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    sequence: int = Field(ge=0)  # 0, 1, 2, ... per machine
    phase: Phase
    previous: Phase | None
    task: str | None = None
    reason: str = ""
    sim_time_s: float = Field(ge=0.0)
    wall_time: float  # Unix time, seconds


class RunState(enum.StrEnum):
    """A run's status on MQTT: ``online`` or ``offline`` (also the Last Will)."""

    ONLINE = "online"
    OFFLINE = "offline"


class StatusEvent(BaseModel):
    """A run's liveness. ``clean`` is False on the Last Will (the publisher vanished)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    state: RunState
    clean: bool = True
    wall_time: float | None = None  # Unix time; None on the Last Will, written before it applies
    neurosim_version: str = ""


class EvaluationEvent(BaseModel):
    """Accuracy on every task seen so far, after one evaluation (a WAKE block)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    sequence: int = Field(ge=0)  # 0, 1, 2, ... per run
    scenario: Literal["class", "task", "domain"]
    accuracy: dict[str, float]  # task id -> accuracy in [0, 1]
    average_accuracy: float = Field(ge=0.0, le=1.0)
    sim_time_s: float = Field(ge=0.0)
    wall_time: float


class TaskWeightChange(BaseModel):
    """How a task's most important synapses (the top 5 % of its Fisher) moved in one sleep."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    top_fisher_mean_change: float
    top_fisher_mean_abs_change: float = Field(ge=0.0)


class SleepEvent(BaseModel):
    """Replay diagnostics of one SLEEP: is every class seen reactivated, and what moved."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    episode: int = Field(ge=0)  # 0, 1, 2, ... per run
    within_task: str | None = None  # a nap inside this task's LEARNING; None: a SLEEP phase
    start_s: float = Field(ge=0.0)  # simulated time the replay began (after calibration)
    duration_s: float = Field(ge=0.0)
    drive: Literal["task-means", "class-means", "episodes", "uniform"]
    gain: float = Field(gt=0.0)  # input gain the calibration chose (times the stored rates)
    target_rate_hz: float | None = None  # what calibration aimed at; None when not calibrated
    rate_hz: float = Field(ge=0.0)  # mean rate per neuron of the layer during replay
    spikes: int = Field(ge=0)
    spikes_per_class: dict[str, int]  # class -> spikes of the neurons assigned to it
    spikes_unassigned: int = Field(ge=0)  # spikes of neurons not assigned to any class yet
    classes_reactivated: int = Field(ge=0)  # classes whose neurons fired at least once
    classes_seen: int = Field(ge=0)
    weight_change_mean_abs: float = Field(ge=0.0)  # over all synapses of the plastic projection
    weight_change_per_task: dict[str, TaskWeightChange]
    # share of the plastic synapses whose sleep depression the Fisher protection at least
    # halves (0: no protection); how much the sleep holds still, not only what it moved
    protected_fraction: float = Field(0.0, ge=0.0, le=1.0)
    wall_time: float


class DriftEvent(BaseModel):
    """A drift detector fired on a task-free stream: the LEARNING block ``block`` ends here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    block: str  # the LEARNING block the drift closes
    position: int = Field(ge=0)  # the sample of the stream (0-based) at which it was detected
    value: float  # the watched signal's value at that sample (e.g. the readout's loss, nats)
    statistic: float = Field(ge=0.0)  # the detector's evidence just before it restarted
    sim_time_s: float = Field(ge=0.0)
    wall_time: float


class SweepEvent(BaseModel):
    """A sweep's progress, published after each run finishes (and when it starts and ends)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sweep_id: str
    total: int = Field(ge=0)  # runs in the sweep (settings x seeds)
    done: int = Field(ge=0)  # completed, including those complete before a --resume
    failed: int = Field(ge=0)
    running: int = Field(ge=0)  # in flight on a worker
    last_run: str | None = None  # "<setting>/<seed>" of the run that just finished
    wall_time: float


Event = PhaseEvent | StatusEvent | EvaluationEvent | SleepEvent | DriftEvent | SweepEvent | SpikeBatch


class Topic(enum.StrEnum):
    """The last level(s) of ``neurosim/{run_id}/...``."""

    PHASE = "phase"
    STATUS = "status"
    SPIKES = "spikes"
    METRICS = "metrics"
    SLEEP = "sleep"
    DRIFT = "drift"
    SWEEP = "sweep"


class MalformedEvent(ValueError):
    """A message on a neurosim topic that does not decode to its event type."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"malformed message on {topic}: {reason}")
        self.topic = topic
        self.reason = reason


def topic_of(run_id: str, event: Event) -> str:
    """The full MQTT topic an event is published on."""
    match event:
        case PhaseEvent():
            suffix = Topic.PHASE.value
        case StatusEvent():
            suffix = Topic.STATUS.value
        case EvaluationEvent():
            suffix = Topic.METRICS.value
        case SleepEvent():
            suffix = Topic.SLEEP.value
        case DriftEvent():
            suffix = Topic.DRIFT.value
        case SweepEvent():
            suffix = Topic.SWEEP.value
        case SpikeBatch():
            suffix = f"{Topic.SPIKES.value}/{event.population}"
    return f"{TOPIC_ROOT}/{run_id}/{suffix}"


def payload_of(event: Event) -> tuple[bytes, str]:
    """The message body and its MQTT v5 content type."""
    if isinstance(event, SpikeBatch):
        return encode(event), SPIKES_CONTENT_TYPE
    return event.model_dump_json().encode("utf-8"), JSON_CONTENT_TYPE


def split_topic(topic: str) -> tuple[str, str, list[str]]:
    """``neurosim/{run_id}/{kind}[/...]`` as (run id, kind, the levels after the kind). A run
    id may have several levels (a sweep's runs: ``{sweep_id}/{setting}/{seed}``); the kind is
    the first level after the root, the run id before it, that is a topic kind with the
    levels it needs (a population after ``spikes``, nothing after the others): only the last
    level can name another kind, and a run id never has ``spikes`` after its first level."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != TOPIC_ROOT:
        raise MalformedEvent(topic, f"not a topic under {TOPIC_ROOT}/{{run_id}}/")
    kinds = {k.value for k in Topic}
    for i in range(2, len(parts)):
        rest = parts[i + 1 :]
        if parts[i] in kinds and (bool(rest) == (parts[i] == Topic.SPIKES)):
            return "/".join(parts[1:i]), parts[i], rest
    raise MalformedEvent(topic, f"unknown neurosim topic {'/'.join(parts[2:])!r}")


def event_from_message(topic: str, payload: bytes | bytearray | memoryview) -> Event:
    """Decode a message received on ``neurosim/{run_id}/...``; ``MalformedEvent`` if it is not one."""
    _run_id, kind, rest = split_topic(topic)
    model: (
        type[PhaseEvent] | type[StatusEvent] | type[EvaluationEvent] | type[SleepEvent] | type[DriftEvent]
        | type[SweepEvent]
    )  # fmt: skip
    if kind == Topic.SPIKES and len(rest) >= 1:
        try:
            batch = decode(payload)
        except SpikeBatchError as err:
            raise MalformedEvent(topic, str(err)) from None
        population = "/".join(rest)
        if batch.population != population:
            raise MalformedEvent(topic, f"batch of population {batch.population!r} on the topic of {population!r}")
        return batch
    if kind == Topic.PHASE and not rest:
        model = PhaseEvent
    elif kind == Topic.STATUS and not rest:
        model = StatusEvent
    elif kind == Topic.METRICS and not rest:
        model = EvaluationEvent
    elif kind == Topic.SLEEP and not rest:
        model = SleepEvent
    elif kind == Topic.DRIFT and not rest:
        model = DriftEvent
    elif kind == Topic.SWEEP and not rest:
        model = SweepEvent
    else:  # split_topic returns only the kinds above
        raise MalformedEvent(topic, f"unknown neurosim topic kind {kind!r}")
    try:
        return model.model_validate_json(bytes(payload))
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in err.errors()[:3])
        raise MalformedEvent(topic, f"not a valid {model.__name__}: {problems}") from None
