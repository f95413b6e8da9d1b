"""Every Prometheus metric of neurosim, declared once.

``Metrics(registry)`` declares the whole set on one registry; ``METRICS`` is the instance
on prometheus_client's default registry, created at import so every series exists (at zero)
before the first run. Tests build their own ``Metrics(CollectorRegistry())`` and read values
with ``registry.get_sample_value``. Names follow Prometheus conventions: base units,
``_total`` on counters, no per-neuron labels.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
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


METRICS = Metrics(REGISTRY)
