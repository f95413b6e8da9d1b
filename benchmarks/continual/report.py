"""The benchmark's bookkeeping: strength search, seeds, the results table and the plot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from benchmarks.continual.protocol import (
    PUBLISHED,
    AfterContext,
    DatasetName,
    Method,
    ModelFactory,
    Protocol,
    ProtocolName,
    RunConfig,
    RunResult,
    build_contexts,
    mlp,
    run,
)

SEARCH_SEED = 1000


@dataclass
class MethodSummary:
    method: Method
    strength: float | None
    results: list[RunResult]
    search: dict[float, float]  # strength -> validation average accuracy

    @property
    def accuracies(self) -> list[float]:
        return [r.average_accuracy for r in self.results]

    def as_json(self) -> dict[str, Any]:
        return {
            "mean": float(np.mean(self.accuracies)),
            "std": float(np.std(self.accuracies)),
            "seeds": len(self.results),
            "per_seed": self.accuracies,
            "strength": self.strength,
            "validation_search": {f"{k:g}": v for k, v in self.search.items()},
            "wall_s_mean": float(np.mean([r.wall_s for r in self.results])),
            "fisher_s_mean": float(np.mean([r.fisher_s for r in self.results])),
            "curve_seed0": [[step, acc] for step, acc in self.results[0].curve],
        }


def evaluate_protocol(
    proto: Protocol,
    dataset: DatasetName,
    seeds: int,
    grids: dict[Method, list[float]],
    bar: tqdm,
    *,
    methods: tuple[Method, ...],
    model_factory: ModelFactory = mlp,
    after_context: Callable[[Method, float], AfterContext | None] = lambda method, strength: None,
) -> dict[Method, MethodSummary]:
    """Every method: its strength searched on validation (if it has a grid), then ``seeds`` test runs."""
    contexts = build_contexts(proto, dataset)
    summaries: dict[Method, MethodSummary] = {}

    def one(cfg: RunConfig) -> RunResult:
        hook = after_context(cfg.method, cfg.strength)
        return run(proto, contexts, cfg, bar.update, model_factory=model_factory, after_context=hook)

    for method in methods:
        search: dict[float, float] = {}
        strength: float | None = None
        if method in grids:
            for value in grids[method]:
                bar.set_description(f"{proto.name.value}: {method.value} search {value:g}")
                search[value] = one(RunConfig(method, value, seed=SEARCH_SEED, split="val")).average_accuracy
            strength = max(search, key=lambda v: search[v])
        results = []
        for seed in range(seeds):
            bar.set_description(f"{proto.name.value}: {method.value} seed {seed}")
            every = max(1, proto.iterations // 2) if seed == 0 else 0  # curves for the plot
            cfg = RunConfig(method, strength or 0.0, seed=seed, evaluate_every=every)
            results.append(one(cfg))
        summaries[method] = MethodSummary(method, strength, results, search)
        tqdm.write(f"{proto.name.value} {method.value}: {np.mean(summaries[method].accuracies):.4f} "
                   f"+- {np.std(summaries[method].accuracies):.4f} (strength {strength})")  # fmt: skip
    return summaries


def table(name: ProtocolName, methods: dict[str, dict[str, Any]], *,
          cost: str = "Fisher / importance cost per run (s)") -> str:  # fmt: skip
    """The results table of one protocol, from its JSON (``MethodSummary.as_json`` per method)."""
    published = PUBLISHED[name]
    lines = [
        "| method | strength (validation) | average accuracy (mean +- std) | published | beats published beyond "
        f"the spread | wall per run (s) | {cost} |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, r in methods.items():
        ref = published.get(Method(method))
        verdict = "" if ref is None else ("yes" if r["mean"] - r["std"] > ref else "no")
        strength = "" if r["strength"] is None else f"{r['strength']:g}"
        lines.append(
            f"| {method} | {strength} | {r['mean']:.4f} +- {r['std']:.4f} | {'' if ref is None else f'{ref:.3f}'} | "
            f"{verdict} | {r['wall_s_mean']:.1f} | {r['fisher_s_mean']:.2f} |"
        )
    return "\n".join(lines)


def plot(path: Path, protocols: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Accuracy on each context over training (seed 0), one row per protocol, one panel per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cols = max(len(m) for m in protocols.values())
    fig, axes = plt.subplots(len(protocols), n_cols, figsize=(3.2 * n_cols, 3.0 * len(protocols)),
                             squeeze=False, sharey=True)  # fmt: skip
    for row, (name, methods) in enumerate(protocols.items()):
        for col, (method, r) in enumerate(methods.items()):
            ax = axes[row][col]
            curve = r["curve_seed0"]
            steps = [s for s, _ in curve]
            n_ctx = len(curve[-1][1])
            colours = plt.cm.viridis(np.linspace(0, 0.9, n_ctx))
            for k in range(n_ctx):
                ys = [acc[k] if acc[k] is not None else np.nan for _, acc in curve]
                ax.plot(steps, ys, color=colours[k], lw=1.2, marker=".", ms=3, label=f"context {k + 1}")
            ax.set_title(f"{name}\n{method}", fontsize=9)
            ax.set_ylim(0.0, 1.02)
            ax.set_xlabel("training iteration")
            if col == 0:
                ax.set_ylabel("test accuracy")
        axes[row][len(methods) - 1].legend(fontsize=6, loc="lower left", ncol=2)
    fig.suptitle("Accuracy on each context over training (seed 0)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
