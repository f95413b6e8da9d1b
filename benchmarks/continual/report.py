"""The benchmark's records (one JSON file per protocol), its tables, its plot and its report."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import platform
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.continual.protocol import (
    ONLINE_FISHER_METHODS,
    PUBLISHED,
    DatasetName,
    Method,
    Network,
    OnlineFisher,
    ProtocolName,
    Settings,
)
from benchmarks.continual.sweep_runs import SEARCH_SEED, MethodSummary
from neurosim.atomic import atomic_write

DOCS = Path(__file__).resolve().parents[2] / "docs"
# runs at the published length, made one at a time by an earlier tool (docs/continual.md): a report
# beside them includes them
SINGLE_RUNS = "permuted_published_iterations"


class IncompatibleRecord(Exception):
    """A saved record cannot be extended by this run (other data set or settings)."""


@dataclass(frozen=True)
class ProtocolRecord:
    """One protocol's results on disk, ``<prefix>_<protocol>.json``: what a run adds to.

    Methods run again replace their saved entries, the others are kept (their runs themselves
    are cached apart, ``sweep_runs``)."""

    path: Path

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
        return cls(path)

    def save(
        self,
        name: ProtocolName,
        dataset: DatasetName,
        settings: Settings,
        command: str,
        wall: float,
        summaries: Mapping[Method, MethodSummary],
        order: Sequence[Method],
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
            kept_any = current is not None and any(Method(m) not in summaries for m in methods)
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
            with atomic_write(target) as fh:  # never a half-written record, durable once replaced
                fh.write((json.dumps(record, indent=2) + "\n").encode())
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
    """The report's section on the runs at the published length (``<stem>.json``: per protocol and
    method, the test setting whose validation score was best)."""
    sections = []
    for name in ProtocolName:
        methods = results.get(name.value)
        if not methods:
            continue
        seeds = sorted({m["seeds"] for m in methods.values()})
        sections.append(
            f"## {name.value} at the published {results['iterations_per_context']} iterations per context: "
            f"single runs, {' or '.join(map(str, seeds))} seeds\n\n"
            f"One run at a time ([{stem}.jsonl]({stem}.jsonl); docs/continual.md says how); each "
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


SPIKING_INTRO = """# Continual learning on a spiking network (surrogate gradients through neurosim's LIF step)

The protocols of [continual.md](continual.md) on the spiking network of
`benchmarks/continual/spiking.py`: Poisson-encoded pixels (up to {rate:.0f} Hz, {steps} steps
of {dt:.0f} ms) -> CurrentLIF neurons advanced by `neurosim.sim.neurons.step` with a
fast-sigmoid surrogate -> a linear readout of their rates. Mean +- std over seeds;
strengths (EWC lambda, sleep potentiation) chosen on the validation split. The "published"
column holds the MLP numbers of the reference table, for scale. Machine: {machine};
torch {torch}, Python {python}.
"""
MLP_INTRO = """# Continual-learning benchmark: the published regularisation table

Protocol of van de Ven, Tuytelaars & Tolias (2022): average test accuracy over all contexts
after the last one, mean and standard deviation over seeds; strengths chosen on a
validation split held out of the training data, never on the test set. Adam, batch 128.
Machine: {machine}; torch {torch}, Python {python}.
How to reproduce, and what each method does: [docs/continual.md]({docs}).

"Fisher / importance cost" is the time spent estimating the Fisher information (EWC and
online EWC: a per-sample pass over up to 1,000 training samples after each context;
online-Fisher EWC: the `FisherAccumulator` updates during training plus its snapshots) or
SI's path integral.
"""


def write_report(out: Path, network: Network = Network.MLP) -> None:
    """``continual.md``, ``.json`` and ``.png`` (the spiking network: ``continual_spiking.md`` and
    ``.json``) from the per-protocol records in ``out``."""
    spiking = network is Network.SPIKING
    prefix = network.record_prefix
    records = load_records(out, prefix)
    first = next(iter(records.values()))
    payload: dict[str, Any] = results_without_curves(records)
    payload.update({"dataset": ", ".join(sorted({r["dataset"] for r in records.values()})),
                    "machine": first["machine"]})  # fmt: skip
    single = None
    if spiking:
        from benchmarks.continual.spiking import DT, MAX_RATE, STEPS

        payload["network"] = {"steps": STEPS, "dt": DT, "max_rate_hz": MAX_RATE}
        payload["protocols"] = {n.value: {**r["settings"], "wall_s": r["wall_s"], "command": r["command"]}
                                for n, r in records.items()}  # fmt: skip
        intro = SPIKING_INTRO.format(rate=MAX_RATE, steps=STEPS, dt=DT * 1e3, **first)
    else:
        payload["wall_s"] = sum(r["wall_s"] for r in records.values())
        payload["protocols"] = {n.value: r["settings"] for n, r in records.items()}
        payload["published"] = {n.value: {m.value: v for m, v in PUBLISHED[n].items()} for n in records}
        if (out / f"{SINGLE_RUNS}.json").exists():
            single = json.loads((out / f"{SINGLE_RUNS}.json").read_text())
            payload["published_length_single_runs"] = single
        plot(out / "continual.png", {n.value: r["methods"] for n, r in records.items()})
        docs = Path(os.path.relpath(DOCS / "continual.md", out.resolve())).as_posix()
        intro = MLP_INTRO.format(docs=docs, **first)
    (out / f"{prefix}.json").write_text(json.dumps(payload, indent=2) + "\n")
    sections = []
    for name, rec in records.items():
        st, methods = rec["settings"], rec["methods"]
        seeds = next(iter(methods.values()))["seeds"]
        where = f"Data set {rec['dataset']}; wall time {rec['wall_s'] / 60:.1f} min; command `{rec['command']}`.\n\n"
        if spiking:
            sections.append(f"## {name.value}: {st['hidden']} LIF neurons, {st['iterations_per_context']} iterations "
                            f"per context, Adam lr {st['lr']:g}, {seeds} seeds\n\n" + where
                            + table(name, methods, cost="Fisher / sleep cost per run (s)")
                            + online_fisher_verdict(methods))  # fmt: skip
            continue
        searched = {r.get("search_seeds", 1) for r in methods.values() if r["validation_search"]}
        search = (f"Strengths scored by the mean validation accuracy of {' or '.join(map(str, sorted(searched)))} "
                  f"search run(s) (seeds from {SEARCH_SEED}); the grids and scores are in the JSON.\n\n"
                  if searched else "")  # fmt: skip
        sections.append(f"## {name.value}: {st['contexts']} contexts, MLP 2 x {st['hidden']}, "
                        f"{st['iterations_per_context']} iterations per context, {seeds} seeds\n\n" + search + where
                        + table(name, methods) + online_fisher_verdict(methods))  # fmt: skip
    if single is not None:
        sections.append(single_runs_section(single))
    tail = "" if spiking else "\n\n![accuracy per context over training](continual.png)\n"
    (out / f"{prefix}.md").write_text(intro + "\n" + "\n\n".join(sections) + tail + ("\n" if spiking else ""))
    print(f"wrote {out / (prefix + '.md')} and {prefix}.json" + ("" if spiking else ", continual.png"))
