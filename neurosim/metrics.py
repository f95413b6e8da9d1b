"""Every Prometheus metric of neurosim, declared once.

``Metrics(registry)`` declares the whole set on one registry; ``METRICS`` is the instance
on prometheus_client's default registry, created at import so every series exists (at zero)
before the first run. Tests build their own ``Metrics(CollectorRegistry())`` and read values
with ``registry.get_sample_value``. Names follow Prometheus conventions: base units,
``_total`` on counters, no per-neuron labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Enum, Gauge, Histogram, start_http_server

from neurosim.phases.phase import ALLOWED_TRANSITIONS, Phase

MQTT_TOPIC_KINDS = ("phase", "status", "spikes", "metrics", "sleep")
# queue_full: the bounded outgoing queue overflowed; disconnected: the connection failed under the message
MQTT_DROP_REASONS = ("queue_full", "disconnected")

if TYPE_CHECKING:
    from neurosim.sim.monitors import ChunkResult

# Wall time of one chunk of steps (1,000 by default): from 0.1 ms (compiled, small nets) to 100 s.
CHUNK_DURATION_BUCKETS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
NO_PHASE = "none"  # the state of neurosim_phase while no phase machine runs (a plain simulation)


class Metrics:
    """Every Prometheus metric of neurosim, registered once in ``registry`` (tests give a fresh
    ``CollectorRegistry``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # --- phases
        self.phase = Enum(
            "neurosim_phase",
            "The phase the run is in.",
            states=[NO_PHASE] + [p.value for p in Phase],
            registry=registry,
        )
        self.phase_transitions = Counter(
            "neurosim_phase_transitions",
            "Phase transitions, by the phase left and the phase entered.",
            ["from_phase", "to_phase"],
            registry=registry,
        )
        # --- simulation
        self.spikes = Counter(
            "neurosim_spikes",
            "Spikes emitted, summed over neurons and batch instances.",
            ["population"],
            registry=registry,
        )
        self.simulated_seconds = Counter(
            "neurosim_simulated_seconds",
            "Biological time simulated.",
            registry=registry,
        )
        self.steps = Counter(
            "neurosim_steps",
            "Simulation steps run.",
            registry=registry,
        )
        self.chunk_duration = Histogram(
            "neurosim_chunk_duration_seconds",
            "Wall time of one chunk of simulation steps (see neurosim_steps_total for how many steps).",
            buckets=CHUNK_DURATION_BUCKETS,
            registry=registry,
        )
        self.step_duration = Gauge(
            "neurosim_step_duration_seconds",
            "Mean wall time per simulation step over the latest chunk.",
            registry=registry,
        )
        # --- learning
        self.task_accuracy = Gauge(
            "neurosim_task_accuracy_ratio",
            "Accuracy on a task at its latest evaluation, in [0, 1].",
            ["task", "scenario"],
            registry=registry,
        )
        self.average_accuracy = Gauge(
            "neurosim_average_accuracy_ratio",
            "Average accuracy over the tasks seen so far, at the latest evaluation.",
            ["scenario"],
            registry=registry,
        )
        # --- sleep replay
        self.sleep_replay_spikes = Counter(
            "neurosim_sleep_replay_spikes",
            "Spikes during sleep replay of the neurons assigned to a class (assigned_class=-1: none yet).",
            ["assigned_class"],
            registry=registry,
        )
        self.sleep_classes_reactivated = Gauge(
            "neurosim_sleep_classes_reactivated",
            "Classes seen whose neurons fired during the latest sleep replay.",
            registry=registry,
        )
        self.sleep_weight_change = Gauge(
            "neurosim_sleep_weight_change_mean_abs",
            "Mean absolute weight change of the plastic projection over the latest sleep (weight units).",
            registry=registry,
        )
        self.sleep_protected = Gauge(
            "neurosim_sleep_protected_ratio",
            "Share of the plastic synapses whose depression the Fisher protection at least halved in the latest sleep.",
            registry=registry,
        )
        # --- MQTT
        self.mqtt_published = Counter(
            "neurosim_mqtt_messages_published",
            "Messages handed to the MQTT broker, by topic kind.",
            ["topic"],
            registry=registry,
        )
        self.mqtt_dropped = Counter(
            "neurosim_mqtt_messages_dropped",
            "Messages not delivered to the broker: the outgoing queue was full, or the connection failed under them.",
            ["topic", "reason"],
            registry=registry,
        )
        self.mqtt_connected = Gauge(
            "neurosim_mqtt_connected",
            "1 while the publisher is connected to the broker, else 0.",
            registry=registry,
        )
        self.mqtt_reconnects = Counter(
            "neurosim_mqtt_reconnects",
            "Connections to the broker after the first one.",
            registry=registry,
        )
        # --- Fisher
        self.fisher_ema_steps = Counter(
            "ewc_fisher_ema_steps",
            "EMA updates of the online Fisher estimate.",
            ["task"],
            registry=registry,
        )
        self.fisher_snapshot_age = Gauge(
            "ewc_fisher_snapshot_age_steps",
            "Steps since the last Fisher snapshot was written to the store.",
            ["task"],
            registry=registry,
        )
        self.fisher_max_delta = Gauge(
            "ewc_fisher_max_delta",
            "Largest change of any Fisher entry over the last snapshot cycle.",
            ["task"],
            registry=registry,
        )
        self.fisher_staleness_breaches = Counter(
            "ewc_fisher_staleness_breaches",
            "Times a task's Fisher snapshot became older than max_staleness_steps.",
            ["task"],
            registry=registry,
        )
        self.fisher_snapshot_failures = Counter(
            "ewc_fisher_snapshot_failures",
            "Fisher snapshots the store failed to write.",
            ["task"],
            registry=registry,
        )
        self.fisher_nonfinite_skipped = Counter(
            "ewc_fisher_nonfinite_gradients_skipped",
            "Gradient steps skipped because they held NaN or infinity.",
            ["task"],
            registry=registry,
        )

        # Every labelled series exists (at zero) from the start, so dashboards and rate() see it.
        self.phase.state(NO_PHASE)
        for source, target in ALLOWED_TRANSITIONS:
            self.phase_transitions.labels(from_phase=source.value, to_phase=target.value)
        for topic in MQTT_TOPIC_KINDS:
            self.mqtt_published.labels(topic=topic)
            for reason in MQTT_DROP_REASONS:
                self.mqtt_dropped.labels(topic=topic, reason=reason)

    def observe_chunk(self, result: ChunkResult) -> None:
        """A chunk hook: ``sim.add_chunk_hook(metrics.observe_chunk)`` feeds the simulation metrics."""
        for population, chunk in result.spikes.items():
            self.spikes.labels(population=population).inc(chunk.indices.size)
        self.simulated_seconds.inc(result.n_steps * result.dt)
        if result.n_steps:
            self.steps.inc(result.n_steps)
            self.chunk_duration.observe(result.wall_s)
            self.step_duration.set(result.wall_s / result.n_steps)

    def observe_transition(self, previous: Phase | None, phase: Phase) -> None:
        """Count a phase transition and set the current-phase gauge."""
        self.phase.state(phase.value)
        if previous is not None:
            self.phase_transitions.labels(from_phase=previous.value, to_phase=phase.value).inc()


METRICS = Metrics(REGISTRY)


@contextmanager
def serve_metrics(port: int, *, address: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY) -> Iterator[int]:
    """Serve ``registry`` at ``http://address:port/metrics`` while the block runs; yields the port
    (``port=0`` picks a free one). ``OSError`` if the port is taken."""
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in [0, 65535], got {port}")
    server, thread = start_http_server(port, addr=address, registry=registry)
    try:
        yield int(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
