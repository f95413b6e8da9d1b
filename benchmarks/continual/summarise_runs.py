"""A Markdown table of ``one_run``'s JSON lines: runs of one setting grouped, mean +- std.

    .venv/bin/python -m benchmarks.continual.summarise_runs \\
        benchmarks/results/mnist/permuted_published_iterations.jsonl

prints the table and writes it beside the file (``.md`` instead of ``.jsonl``). Rows are
grouped by protocol, data set, iterations per context, method, strength (and the online
Fisher's feeding), and split; validation rows are the strength search, test rows the
result, held against the published cell as the benchmark's table does (beaten beyond the
seed spread when mean - std is above it). The standard deviation is the population one,
as in ``continual.md``. The last column is the seconds per run spent on Fisher estimation
(SI: on its importance), the cost online-Fisher EWC is held to against EWC.

Beside the table it writes each method's result in ``continual.json``'s shape (``.json``:
per protocol and method, the test setting whose validation score is best, with mean, std
and seeds) and a plot of those settings' accuracy on each context after the last one
(``.png``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.continual.protocol import PUBLISHED, REGULARISED, Method, OnlineFisher, ProtocolName
from benchmarks.continual.report import beats_published, online_fisher_verdict

RunKey = tuple[str, str, int, str, float, str, str]
REQUIRED = ("protocol", "dataset", "settings", "method", "strength", "seed", "split", "average", "wall_s")


def run_key(run: Mapping[str, Any]) -> RunKey:
    """What makes two runs the same setting: everything but the seed."""
    feeding = OnlineFisher.from_record(run).label() if "fisher_alpha" in run else ""
    return (run["protocol"], run["dataset"], int(run["settings"]["iterations_per_context"]), run["method"],
            float(run["strength"]), feeding, run["split"])  # fmt: skip


def group_runs(runs: Iterable[Mapping[str, Any]]) -> dict[RunKey, list[Mapping[str, Any]]]:
    """Runs by setting, each group in seed order; a clear error for a line one_run did not write."""
    groups: dict[RunKey, list[Mapping[str, Any]]] = {}
    for number, run in enumerate(runs, start=1):
        missing = [field for field in REQUIRED if field not in run]
        if missing:
            raise ValueError(f"run {number} lacks {', '.join(missing)}: not a line written by one_run")
        groups.setdefault(run_key(run), []).append(run)
    return {key: sorted(group, key=lambda r: int(r["seed"])) for key, group in groups.items()}


def summarise(runs: Iterable[Mapping[str, Any]]) -> str:
    """The Markdown table: one row per setting, validation rows before test rows."""
    groups = group_runs(runs)
    header = ("| protocol | data | iterations / context | method | strength | split | seeds | average accuracy "
              "(mean +- std) | per seed | published | beats it beyond the spread | minutes per run | "
              "Fisher seconds per run |")  # fmt: skip
    rows = [header, "|" + "---|" * 13]
    order = sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3], k[6] != "val", k[4], k[5]))
    for key in order:
        protocol, dataset, iterations, method, strength, feeding, split = key
        group = groups[key]
        scores = np.array([r["average"] for r in group])
        mean, std = float(scores.mean()), float(scores.std())
        published = PUBLISHED[ProtocolName(protocol)].get(Method(method)) if split == "test" else None
        verdict = beats_published(mean, std, published)
        minutes = float(np.mean([r["wall_s"] for r in group])) / 60
        fisher = [r["fisher_s"] for r in group if "fisher_s" in r]  # none for fine-tuning or joint training
        fisher_text = f"{np.mean(fisher):.1f}" if fisher and Method(method) in REGULARISED else ""
        seeds = ", ".join(f"{r['average']:.4f} ({r['seed']})" for r in group)
        strength_text = f"{strength:g}" + (f" ({feeding})" if feeding else "")
        rows.append(f"| {protocol} | {dataset} | {iterations} | {method} | {strength_text} | {split} | {len(group)} | "
                    f"{mean:.4f} +- {std:.4f} | {seeds} | {'' if published is None else f'{published:.3f}'} | "
                    f"{verdict} | {minutes:.0f} | {fisher_text} |")  # fmt: skip
    return "\n".join(rows) + "\n"


def chosen_results(runs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Per protocol and method, the test setting chosen on validation, in ``continual.json``'s shape.

    Of a method's test settings, the one whose validation runs score best is its result (one
    never validated ranks last; equal scores: more test seeds first). A method with several test
    settings and no validation run for any of them has nothing to choose by: it is left out, and
    listed under ``"undecided"`` (``protocol/method``)."""
    groups = group_runs(runs)
    shared = {}
    for field, values in (("dataset", {k[1] for k in groups}), ("iterations_per_context", {k[2] for k in groups})):
        if len(values) > 1:
            raise ValueError(f"runs of several {field.replace('_', ' ')} values ({sorted(values)}): "
                             "summarise them from separate files")  # fmt: skip
        shared[field] = next(iter(values), None)

    def validation(key: RunKey) -> float | None:
        val = groups.get((*key[:-1], "val"))
        return None if val is None else float(np.mean([r["average"] for r in val]))

    def rank(key: RunKey) -> tuple[float, int]:
        score = validation(key)
        return (-np.inf if score is None else score, len(groups[key]))

    candidates: dict[tuple[str, str], list[RunKey]] = {}
    for key in groups:
        if key[6] == "test":
            candidates.setdefault((key[0], key[3]), []).append(key)
    best = {pair: max(keys, key=rank) for pair, keys in candidates.items()
            if len(keys) == 1 or any(validation(k) is not None for k in keys)}  # fmt: skip
    undecided = sorted(f"{protocol}/{method}" for protocol, method in set(candidates) - set(best))
    out: dict[str, Any] = {}
    for (protocol, method), key in sorted(best.items()):
        group = groups[key]
        scores = np.array([r["average"] for r in group])
        fisher = [r["fisher_s"] for r in group if "fisher_s" in r]
        entry: dict[str, Any] = {
            "mean": float(scores.mean()), "std": float(scores.std()), "seeds": len(group),
            "per_seed": [float(v) for v in scores], "strength": key[4], "validation": validation(key),
            "published": PUBLISHED[ProtocolName(protocol)].get(Method(method)),
            "wall_s_mean": float(np.mean([r["wall_s"] for r in group])),
            "fisher_s_mean": float(np.mean(fisher)) if fisher else None,
            "per_context": [float(v) for v in np.mean([r["per_context"] for r in group], axis=0)]
            if all("per_context" in r for r in group) else None,
        }  # fmt: skip
        if "fisher_alpha" in group[0]:
            entry |= OnlineFisher.from_record(group[0]).as_record()
        out.setdefault(protocol, {})[method] = entry
    machines = sorted({str(r.get("machine", "")) for g in groups.values() for r in g} - {""})
    return {**out, **shared, "machine": "; ".join(machines), **({"undecided": undecided} if undecided else {})}


def plot(path: Path, results: Mapping[str, Any]) -> None:
    """Accuracy on each context after the last one, per protocol, one line per method's chosen setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = [p for p in ProtocolName if p.value in results]
    fig, axes = plt.subplots(1, max(1, len(protocols)), figsize=(6.5 * max(1, len(protocols)), 4.2), squeeze=False)
    for ax, protocol in zip(axes[0], protocols, strict=False):
        for method, r in results[protocol.value].items():
            if r["per_context"] is None:
                continue
            contexts = np.arange(1, len(r["per_context"]) + 1)
            ax.plot(contexts, r["per_context"], marker="o", ms=4,
                    label=f"{method}: {r['mean']:.3f} +- {r['std']:.3f} ({r['seeds']} seeds)")  # fmt: skip
        ax.set_title(f"{protocol.value}, {results['dataset']}, {results['iterations_per_context']} iterations "
                     "per context", fontsize=10)  # fmt: skip
        ax.set_xlabel("context (in training order)")
        ax.set_ylabel("test accuracy after the last context (mean over seeds)")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_runs(path: Path) -> list[dict[str, Any]]:
    runs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                runs.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from error
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="a .jsonl file written by benchmarks.continual.one_run --out")
    args = parser.parse_args()
    if not args.runs.is_file():
        parser.error(f"{args.runs}: no such file")
    try:
        runs = read_runs(args.runs)
        table = summarise(runs)
        results = chosen_results(runs)
    except (ValueError, KeyError) as error:
        parser.error(str(error))
    title = f"# Single runs of the continual benchmark ({args.runs.name})\n\n"
    note = ("\nWritten by `python -m benchmarks.continual.summarise_runs` from the runs of "
            "`python -m benchmarks.continual.one_run`; validation rows are the strength search "
            "(seeds from 1000), test rows the result. Fisher seconds are wall-clock: they grow with the "
            "number of runs sharing the cores, so compare rows run under the same load. "
            "See docs/continual.md.\n")  # fmt: skip
    out = args.runs.with_suffix(".md")
    verdict = ""
    for protocol in ProtocolName:
        methods = results.get(protocol.value, {})
        pair = [methods.get(m.value) for m in (Method.EWC, Method.ONLINE_FISHER_EWC)]
        if all(r is not None and r["fisher_s_mean"] for r in pair):  # both scored, both costs known
            verdict += f"\n\n{protocol.value}: " + online_fisher_verdict(methods).strip()
    undecided = "".join(f"\n\n{name}: several test settings and no validation run to choose between them."
                        for name in results.get("undecided", []))  # fmt: skip
    out.write_text(title + table + note + (f"\nChosen on validation:{verdict}\n" if verdict else "")
                   + (f"\nNot chosen:{undecided}\n" if undecided else ""))  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    if any(p.value in results for p in ProtocolName):
        plot(out.with_suffix(".png"), results)
    print(table, end="")
    print(f"written to {out} and its .json and .png")


if __name__ == "__main__":
    main()
