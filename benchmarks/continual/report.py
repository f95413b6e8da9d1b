"""The benchmark's bookkeeping: strength search, seeds, the results table and the plot."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import platform
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmarks.continual.protocol import (
    ONLINE_FISHER_METHODS,
    PUBLISHED,
    AfterContext,
    DatasetName,
    Method,
    ModelFactory,
    OnlineFisher,
    Protocol,
    ProtocolName,
    RunConfig,
    RunResult,
    Settings,
    build_contexts,
    mlp,
    run,
)

SEARCH_SEED = 1000
SINGLE_RUNS = "permuted_published_iterations"  # summarise_runs' results for one_run's runs, beside the report
DEFAULT_ONLINE_FISHER = OnlineFisher()  # what saved results made before the options used


@dataclass
class MethodSummary:
    method: Method
    strength: float | None
    results: list[RunResult]
    search: dict[float, float]  # strength -> validation average accuracy (mean over the search seeds)
    search_seeds: int = 1
    online_fisher: OnlineFisher | None = None  # online-Fisher EWC: how its accumulator was fed

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
            "validation_search": {f"{k:g}": v for k, v in sorted(self.search.items())},
            "search_seeds": self.search_seeds,
            **(self.online_fisher.as_record() if self.online_fisher is not None else {}),
            "wall_s_mean": float(np.mean([r.wall_s for r in self.results])),
            "fisher_s_mean": float(np.mean([r.fisher_s for r in self.results])),
            "curve_seed0": [[step, acc] for step, acc in self.results[0].curve],
        }

    @classmethod
    def from_json(cls, method: Method, saved: Mapping[str, Any]) -> MethodSummary:
        """A saved summary, so that a later run can extend it (per-seed times are the saved means)."""
        strength = saved["strength"]
        curve = [(int(step), list(acc)) for step, acc in saved["curve_seed0"]]
        results = [
            RunResult(RunConfig(method, strength or 0.0, seed=seed), [], float(acc), curve if seed == 0 else [],
                      float(saved["wall_s_mean"]), float(saved["fisher_s_mean"]))
            for seed, acc in enumerate(saved["per_seed"])
        ]  # fmt: skip
        search = {float(k): float(v) for k, v in saved["validation_search"].items()}
        online = None
        if method in ONLINE_FISHER_METHODS:
            online = OnlineFisher.from_record(saved)
        return cls(method, strength, results, search, int(saved.get("search_seeds", 1)), online)


def evaluate_protocol(
    proto: Protocol,
    dataset: DatasetName,
    seeds: int,
    grids: Mapping[Method, Sequence[float]],
    bar: tqdm[Any],
    *,
    methods: Sequence[Method],
    search_seeds: int = 1,
    online_fisher: OnlineFisher = DEFAULT_ONLINE_FISHER,
    previous: Mapping[Method, MethodSummary] | None = None,
    model_factory: ModelFactory = mlp,
    after_context: Callable[[Method, float], AfterContext | None] = lambda method, strength: None,
    test_runner: Callable[[list[RunConfig]], list[RunResult]] | None = None,
) -> dict[Method, MethodSummary]:
    """Every method: its strength searched on validation (if it has a grid), then ``seeds`` test runs.

    The search scores each strength by the mean validation accuracy over ``search_seeds``
    runs (seeds ``SEARCH_SEED``, ``SEARCH_SEED + 1``, ...). ``previous`` (a saved result of the
    same protocol and settings) is extended, not repeated: strengths it already scored with
    the same number of search seeds are not run again, and its test runs are kept when the
    best strength over the union is the one they used. ``online_fisher`` says how online-Fisher
    EWC feeds its accumulator; a saved result fed another way is not reused. ``test_runner``
    runs a method's test seeds elsewhere (``sweep_runs.test_runner``: as a Dask sweep)
    instead of one after the other here; it cannot take ``model_factory`` or ``after_context``."""
    contexts = build_contexts(proto, dataset)
    summaries: dict[Method, MethodSummary] = {}
    run_length = proto.iterations * proto.n_contexts

    def one(cfg: RunConfig) -> RunResult:
        hook = after_context(cfg.method, cfg.strength)
        return run(proto, contexts, cfg, bar.update, model_factory=model_factory, after_context=hook)

    for method in methods:
        online = online_fisher if method in ONLINE_FISHER_METHODS else None
        prev = (previous or {}).get(method)
        if prev is not None and (prev.search_seeds, prev.online_fisher) != (search_seeds, online):
            prev = None  # scored another way: nothing to reuse
        search = dict(prev.search) if prev is not None else {}
        for value in grids.get(method, ()):
            if value in search:
                skip(bar, search_seeds * run_length)
                continue
            bar.set_description(f"{proto.name.value}: {method.value} search {value:g}")
            scores = [one(RunConfig(method, value, seed=SEARCH_SEED + k, split="val", online_fisher=online_fisher))
                      .average_accuracy for k in range(search_seeds)]  # fmt: skip
            search[value] = float(np.mean(scores))
        # ties go to the weakest strength, whatever order the values were scored in
        strength = max(sorted(search), key=lambda v: search[v]) if search else None
        if prev is not None and prev.strength == strength and len(prev.results) >= seeds:
            skip(bar, seeds * run_length)
            summaries[method] = dataclasses.replace(prev, search=search, search_seeds=search_seeds)
            tqdm.write(f"{proto.name.value} {method.value}: kept the saved test runs (strength {strength})")
            continue
        cfgs = [
            RunConfig(method, strength or 0.0, seed=seed, online_fisher=online_fisher,
                      evaluate_every=max(1, proto.iterations // 2) if seed == 0 else 0)  # curves for the plot
            for seed in range(seeds)
        ]  # fmt: skip
        if test_runner is not None:
            bar.set_description(f"{proto.name.value}: {method.value}, {seeds} seeds on the sweep")
            results = test_runner(cfgs)
        else:
            results = []
            for cfg in cfgs:
                bar.set_description(f"{proto.name.value}: {method.value} seed {cfg.seed}")
                results.append(one(cfg))
        summaries[method] = MethodSummary(method, strength, results, search, search_seeds, online)
        tqdm.write(f"{proto.name.value} {method.value}: {np.mean(summaries[method].accuracies):.4f} "
                   f"+- {np.std(summaries[method].accuracies):.4f} (strength {strength})")  # fmt: skip
    return summaries


def skip(bar: tqdm[Any], iterations: int) -> None:
    """Work the progress bar counted that a saved result makes unnecessary."""
    bar.total = max(bar.n, (bar.total or 0) - iterations)
    bar.refresh()


def planned_iterations(proto: Protocol, seeds: int, grids: Mapping[Method, Sequence[float]],
                       methods: Sequence[Method], search_seeds: int) -> int:  # fmt: skip
    """Training iterations of a fresh ``evaluate_protocol`` (the progress bar's total)."""
    runs = seeds * len(methods) + search_seeds * sum(len(grids.get(m, ())) for m in methods)
    return runs * proto.iterations * proto.n_contexts


class IncompatibleRecord(Exception):
    """A saved record cannot be extended by this run (other data set or settings)."""


@dataclass(frozen=True)
class ProtocolRecord:
    """One protocol's results on disk, ``<prefix>_<protocol>.json``: what a run adds to.

    Methods run again replace their saved entries, the others are kept; ``extend`` also
    reuses saved strength searches and test runs (see ``evaluate_protocol``)."""

    path: Path
    saved: dict[str, Any] | None

    @classmethod
    def open(
        cls, out: Path, prefix: str, name: ProtocolName, dataset: DatasetName, settings: Settings
    ) -> ProtocolRecord:
        path = out / f"{prefix}_{name.value}.json"
        saved = json.loads(path.read_text()) if path.exists() else None
        if saved is not None and not _same_run_settings(saved, dataset, settings):
            raise IncompatibleRecord(
                f"{path} holds results for data set {saved['dataset']} with settings {saved['settings']}; this run "
                f"uses {dataset.value} with {dataclasses.asdict(settings)}. Give another --out, or move that file "
                "away to start afresh."
            )
        return cls(path, saved)

    def previous(self) -> dict[Method, MethodSummary]:
        if self.saved is None:
            return {}
        return {Method(m): MethodSummary.from_json(Method(m), r) for m, r in self.saved["methods"].items()}

    def save(
        self,
        name: ProtocolName,
        dataset: DatasetName,
        settings: Settings,
        command: str,
        wall: float,
        summaries: Mapping[Method, MethodSummary],
        order: Sequence[Method],
        *,
        extended: bool,
    ) -> Path:
        """Merge ``summaries`` into the record as it is on disk now; return where they went.

        The record is read again under a lock, so runs of other methods of the same protocol
        that finished meanwhile (separate processes) are kept, not overwritten. Should the
        file have been replaced by one with other settings, this run's results go to a
        sibling file instead of over it."""
        from benchmarks.common import machine_description

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.path):
            current = json.loads(self.path.read_text()) if self.path.exists() else None
            target = self.path
            if current is not None and not _same_run_settings(current, dataset, settings):
                target = self.path.with_name(f"{self.path.stem}.{int(time.time())}.json")
                warnings.warn(f"{self.path} now holds other settings; this run's results are in {target}",
                              stacklevel=2)  # fmt: skip
                current = None
            methods = dict(current["methods"]) if current else {}
            kept_any = current is not None and (extended or any(Method(m) not in summaries for m in methods))
            methods.update({m.value: s.as_json() for m, s in summaries.items()})
            rank = {m.value: k for k, m in enumerate(order)}
            record = {
                "protocol": name.value,
                "dataset": dataset.value,
                "machine": machine_description(),
                "torch": torch.__version__,
                "python": platform.python_version(),
                "command": f"{current['command']}; then {command}" if kept_any and current else command,
                "wall_s": wall + (current["wall_s"] if kept_any and current else 0.0),
                "settings": dataclasses.asdict(settings),
                "methods": dict(sorted(methods.items(), key=lambda item: rank.get(item[0], len(rank)))),
            }
            partial = target.with_suffix(".json.partial")
            partial.write_text(json.dumps(record, indent=2) + "\n")
            partial.replace(target)  # never a half-written record
        return target


def _same_run_settings(record: Mapping[str, Any], dataset: DatasetName, settings: Settings) -> bool:
    """Whether a saved record's results combine with a run on ``dataset`` with ``settings``."""
    return (record["dataset"], record["settings"]) == (dataset.value, dataclasses.asdict(settings))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (a ``.lock`` file beside it) between processes."""
    with path.with_suffix(".json.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def beats_published(mean: float, std: float, published: float | None) -> str:
    """The table's verdict: "yes" when the cell is beaten beyond the seed spread, "" without a cell."""
    return "" if published is None else ("yes" if mean - std > published else "no")


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
        verdict = beats_published(r["mean"], r["std"], ref)
        strength = "" if r["strength"] is None else f"{r['strength']:g}"
        if Method(method) in ONLINE_FISHER_METHODS:  # records from before the options were saved used the defaults
            strength += f" ({OnlineFisher.from_record(r).label()})"
        lines.append(
            f"| {method} | {strength} | {r['mean']:.4f} +- {r['std']:.4f} | {'' if ref is None else f'{ref:.3f}'} | "
            f"{verdict} | {r['wall_s_mean']:.1f} | {r['fisher_s_mean']:.2f} |"
        )
    return "\n".join(lines)


def load_records(out: Path, prefix: str) -> dict[ProtocolName, dict[str, Any]]:
    """The per-protocol records (``<prefix>_<protocol>.json``) in ``out``; a report needs at least one."""
    records = {}
    for name in ProtocolName:
        path = out / f"{prefix}_{name.value}.json"
        if path.exists():
            records[name] = json.loads(path.read_text())
    if not records:
        raise SystemExit(f"no per-protocol results ({prefix}_<protocol>.json) in {out}")
    return records


def results_without_curves(records: Mapping[ProtocolName, Mapping[str, Any]]) -> dict[str, Any]:
    """``{protocol: {method: summary}}``, the summaries without their plotting curves."""
    return {
        name.value: {m: {k: v for k, v in r.items() if k != "curve_seed0"} for m, r in rec["methods"].items()}
        for name, rec in records.items()
    }


def online_fisher_verdict(methods: dict[str, dict[str, Any]]) -> str:
    """The issue's question: is online-Fisher EWC within one std of full-batch EWC, at lower cost?"""
    ewc, online = methods.get(Method.EWC.value), methods.get(Method.ONLINE_FISHER_EWC.value)
    if ewc is None or online is None:
        return ""
    gap = online["mean"] - ewc["mean"]
    accuracy = ("better than EWC" if gap > 0 else "within one EWC standard deviation" if -gap <= ewc["std"]
                else "more than one EWC standard deviation below")  # fmt: skip
    cost = online["fisher_s_mean"] / ewc["fisher_s_mean"] if ewc["fisher_s_mean"] else float("nan")
    return (
        f"\n\nOnline-Fisher EWC against EWC: {online['mean']:.4f} against {ewc['mean']:.4f} +- {ewc['std']:.4f} "
        f"({gap:+.4f}: {accuracy}); Fisher cost {online['fisher_s_mean']:.1f} s against {ewc['fisher_s_mean']:.1f} s "
        f"per run ({cost:.2f}x)."
    )


def single_runs_section(results: Mapping[str, Any], stem: str = SINGLE_RUNS) -> str:
    """The report's section on runs at the published length: ``summarise_runs``' chosen results
    (``<stem>.json``), each method's test setting chosen on validation."""
    sections = []
    for name in ProtocolName:
        methods = results.get(name.value)
        if not methods:
            continue
        seeds = sorted({m["seeds"] for m in methods.values()})
        sections.append(
            f"## {name.value} at the published {results['iterations_per_context']} iterations per context: "
            f"single runs, {' or '.join(map(str, seeds))} seeds\n\n"
            f"One run at a time with `benchmarks.continual.one_run` ([{stem}.jsonl]({stem}.jsonl)); each "
            f"method's test setting is the one with the best validation score, and every search and test row "
            f"is in [{stem}.md]({stem}.md). Data set {results['dataset']}; the Fisher seconds grow with the "
            f"runs sharing the cores.\n\n" + table(name, methods) + online_fisher_verdict(methods)
        )
    return "\n\n".join(sections)


def plot(path: Path, protocols: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Accuracy on each context over training (seed 0), one row per protocol, one panel per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cols = max(len(m) for m in protocols.values())
    fig, axes = plt.subplots(len(protocols), n_cols, figsize=(3.2 * n_cols, 3.0 * len(protocols)),
                             squeeze=False, sharey="row")  # fmt: skip
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
            ax.set_xlabel("training iteration")
            if col == 0:
                ax.set_ylabel("test accuracy")
        lowest = min(a for r in methods.values() for _, accs in r["curve_seed0"] for a in accs if a is not None)
        axes[row][0].set_ylim(max(0.0, np.floor(lowest * 20) / 20 - 0.05), 1.01)  # the row's range: differences show
        axes[row][len(methods) - 1].legend(fontsize=6, loc="lower left", ncol=2)
    fig.suptitle("Accuracy on each context over training (seed 0)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
