"""Detection delay and false-alarm rate of neurosim's Page-Hinkley drift detector.

Streams of unit-variance Gaussian noise, 2,000 samples each; in the "change" streams the
mean rises by ``shift`` standard deviations at sample 1,000. For each detector setting:
the fraction of change streams in which the shift is found (a drift at or after 1,000),
the delay from the change to the first such drift (median, mean, 90th percentile, in
samples), and the false alarms: the fraction of stationary streams with any drift, and
drifts per 1,000 stationary samples. The defaults (``PageHinkleyConfig()``) first.

    .venv/bin/python benchmarks/bench_drift.py [--streams 300]

Writes ``benchmarks/results/drift.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_description
from neurosim.learning.drift import PageHinkley, PageHinkleyConfig

RESULTS = Path(__file__).resolve().parent / "results"
LENGTH, CHANGE = 2000, 1000
SETTINGS = [
    PageHinkleyConfig(),
    PageHinkleyConfig(delta=0.1, threshold=10.0),
    PageHinkleyConfig(delta=0.5, threshold=25.0),
]
SHIFTS = [0.5, 1.0, 2.0]


def detections(cfg: PageHinkleyConfig, stream: np.ndarray) -> list[int]:
    detector = PageHinkley(cfg)
    for x in stream:
        detector.update(float(x))
    return detector.detections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    stationary = rng.normal(size=(args.streams, LENGTH))
    rows = []
    for cfg in SETTINGS:
        false = [detections(cfg, s) for s in stationary]
        alarm_rate = np.mean([bool(d) for d in false])
        per_1000 = 1000 * sum(len(d) for d in false) / (args.streams * LENGTH)
        for shift in SHIFTS:
            streams = rng.normal(size=(args.streams, LENGTH))
            streams[:, CHANGE:] += shift
            delays = []
            for s in streams:
                after = [d for d in detections(cfg, s) if d >= CHANGE]
                if after:
                    delays.append(after[0] - CHANGE)
            found = len(delays) / args.streams
            d = np.asarray(delays, dtype=np.float64)
            stats = f"{np.median(d):.0f} | {d.mean():.1f} | {np.percentile(d, 90):.0f}" if d.size else "- | - | -"
            rows.append(f"| delta {cfg.delta:g}, threshold {cfg.threshold:g}, min {cfg.min_samples} | {shift:g} | "
                        f"{found:.3f} | {stats} | {alarm_rate:.3f} | {per_1000:.3f} |")  # fmt: skip
            print(rows[-1], flush=True)
    table = "\n".join(rows)
    text = f"""# Page-Hinkley drift detection: delay and false alarms

Unit-variance Gaussian streams of {LENGTH} samples; the mean rises by `shift` standard
deviations at sample {CHANGE} in the change streams. {args.streams} streams per cell (change and
stationary each). Written by `benchmarks/bench_drift.py` on {machine_description()}.

| detector | shift (sd) | found | delay median | mean | 90th pct (samples) | stationary streams alarmed | \
alarms per 1,000 samples |
|---|---|---|---|---|---|---|---|
{table}

The first setting is `PageHinkleyConfig()`, the default. A shift smaller than `delta` is
tolerated by design; the delay of a shift `s` is about `threshold / (s - delta)` samples.
"""
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "drift.md").write_text(text)
    print(f"wrote {args.out / 'drift.md'}")


if __name__ == "__main__":
    main()
