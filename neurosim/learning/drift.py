"""Drift detection on streams: the Page-Hinkley test (Page 1954, Biometrika 41:100; Hinkley
1971, Biometrika 58:509; in the form of Gama et al. 2014, ACM Comput. Surv. 46:44).

For a stream ``x_1, x_2, ...`` (the readout's loss per sample, a firing statistic) whose
mean may rise, with ``mean_t`` the running mean since the last reset::

    m_t = sum_{k <= t} (x_k - mean_k - delta)        M_t = min_{k <= t} m_k
    drift at t  if  t >= min_samples  and  m_t - M_t > threshold

``delta`` is the change of mean that is tolerated (in the signal's units), ``threshold`` the
evidence needed: higher, fewer false alarms and a longer delay. A fall is detected by the
mirrored sums; ``direction`` chooses. After a detection the test restarts on the new regime.
The measured detection delay and false-alarm rate of the defaults are in
``docs/consolidation.md`` (``benchmarks/bench_drift.py``).

A detection is what makes continual learning task-free: the phase orchestrator
(``neurosim.phases.orchestrator``) closes the LEARNING block at a drift (EWC consolidation of
the block) and schedules SLEEP, with no task labels.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class DriftDirection(enum.StrEnum):
    """Which change the Page-Hinkley test watches for: an increase, a decrease, or both."""

    INCREASE = "increase"
    DECREASE = "decrease"
    BOTH = "both"


@dataclass(frozen=True)
class PageHinkleyConfig:
    """Page-Hinkley test settings: ``delta`` (tolerated change of the mean), ``threshold`` (evidence
    needed), ``min_samples`` (observations before any alarm) and the direction watched."""

    delta: float = 0.25  # tolerated change of mean, in the signal's units (unit-variance defaults)
    threshold: float = 15.0
    min_samples: int = 30
    direction: DriftDirection = DriftDirection.INCREASE

    def __post_init__(self) -> None:
        if not (math.isfinite(self.delta) and self.delta >= 0):
            raise ValueError(f"PageHinkleyConfig.delta must be >= 0, got {self.delta!r}")
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"PageHinkleyConfig.threshold must be > 0, got {self.threshold!r}")
        if not (isinstance(self.min_samples, int) and self.min_samples >= 1):
            raise ValueError(f"PageHinkleyConfig.min_samples must be a positive integer, got {self.min_samples!r}")


@dataclass(frozen=True)
class PageHinkleyState:
    """The test's running mean, cumulative sum and its extreme."""

    n: int = 0
    mean: float = 0.0
    up: float = 0.0  # m_t for an increase
    up_min: float = 0.0
    down: float = 0.0  # mirrored sum for a decrease
    down_max: float = 0.0

    @property
    def statistic(self) -> float:
        """The larger of the two tests' evidences (``m_t - M_t`` and its mirror)."""
        return max(self.up - self.up_min, self.down_max - self.down)


def page_hinkley_step(
    x: float, state: PageHinkleyState, cfg: PageHinkleyConfig
) -> tuple[bool, PageHinkleyState, float]:
    """``(drift, new_state, evidence)`` after one value, ``evidence`` the statistic with it;
    on drift the state restarts (pure)."""
    if not math.isfinite(x):
        raise ValueError(f"Page-Hinkley needs finite values, got {x!r}")
    n = state.n + 1
    mean = state.mean + (x - state.mean) / n
    up = state.up + x - mean - cfg.delta
    down = state.down + x - mean + cfg.delta
    new = PageHinkleyState(n, mean, up, min(state.up_min, up), down, max(state.down_max, down))
    if n < cfg.min_samples:
        return False, new, new.statistic
    rise = cfg.direction is not DriftDirection.DECREASE and new.up - new.up_min > cfg.threshold
    fall = cfg.direction is not DriftDirection.INCREASE and new.down_max - new.down > cfg.threshold
    if rise or fall:
        return True, PageHinkleyState(), new.statistic
    return False, new, new.statistic


class PageHinkley:
    """Thin stateful shell over ``page_hinkley_step``: ``update(x)`` returns True at a drift;
    ``detections`` holds the stream positions (0-based) of every drift found."""

    def __init__(self, config: PageHinkleyConfig | None = None) -> None:
        self.config = config if config is not None else PageHinkleyConfig()
        self.state = PageHinkleyState()
        self.seen = 0
        self.detections: list[int] = []
        self.evidence = 0.0  # the statistic after the latest value (before a restart)

    def update(self, x: float) -> bool:
        """Take one observation; True when it completes a detected drift (also recorded in ``detections``)."""
        drift, self.state, self.evidence = page_hinkley_step(float(x), self.state, self.config)
        if drift:
            self.detections.append(self.seen)
        self.seen += 1
        return drift

    def reset(self) -> None:
        """Start afresh (after a detected drift): the running mean and the evidence are cleared."""
        self.state = PageHinkleyState()
