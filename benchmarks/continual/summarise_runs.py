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
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.continual.protocol import PUBLISHED, Method, ProtocolName
from benchmarks.continual.report import beats_published, online_fisher_label

RunKey = tuple[str, str, int, str, float, str, str]
REQUIRED = ("protocol", "dataset", "settings", "method", "strength", "seed", "split", "average", "wall_s")


def run_key(run: Mapping[str, Any]) -> RunKey:
    """What makes two runs the same setting: everything but the seed."""
    feeding = online_fisher_label(run["fisher_alpha"], run["fisher_every"]) if "fisher_alpha" in run else ""
    return (run["protocol"], run["dataset"], int(run["settings"]["iterations_per_context"]), run["method"],
            float(run["strength"]), feeding, run["split"])  # fmt: skip


def summarise(runs: Iterable[Mapping[str, Any]]) -> str:
    """The Markdown table: one row per setting, validation rows before test rows."""
    groups: dict[RunKey, list[Mapping[str, Any]]] = {}
    for number, run in enumerate(runs, start=1):
        missing = [field for field in REQUIRED if field not in run]
        if missing:
            raise ValueError(f"run {number} lacks {', '.join(missing)}: not a line written by one_run")
        groups.setdefault(run_key(run), []).append(run)
    header = ("| protocol | data | iterations / context | method | strength | split | seeds | average accuracy "
              "(mean +- std) | per seed | published | beats it beyond the spread | minutes per run | "
              "Fisher seconds per run |")  # fmt: skip
    rows = [header, "|" + "---|" * 13]
    order = sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3], k[6] != "val", k[4], k[5]))
    for key in order:
        protocol, dataset, iterations, method, strength, feeding, split = key
        group = sorted(groups[key], key=lambda r: int(r["seed"]))
        scores = np.array([r["average"] for r in group])
        mean, std = float(scores.mean()), float(scores.std())
        published = PUBLISHED[ProtocolName(protocol)].get(Method(method)) if split == "test" else None
        verdict = beats_published(mean, std, published)
        minutes = float(np.mean([r["wall_s"] for r in group])) / 60
        fisher = [r["fisher_s"] for r in group if "fisher_s" in r]  # none for fine-tuning or joint training
        fisher_text = f"{np.mean(fisher):.1f}" if fisher and group[0]["method"] not in ("none", "joint") else ""
        seeds = ", ".join(f"{r['average']:.4f} ({r['seed']})" for r in group)
        strength_text = f"{strength:g}" + (f" ({feeding})" if feeding else "")
        rows.append(f"| {protocol} | {dataset} | {iterations} | {method} | {strength_text} | {split} | {len(group)} | "
                    f"{mean:.4f} +- {std:.4f} | {seeds} | {'' if published is None else f'{published:.3f}'} | "
                    f"{verdict} | {minutes:.0f} | {fisher_text} |")  # fmt: skip
    return "\n".join(rows) + "\n"


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
        table = summarise(read_runs(args.runs))
    except (ValueError, KeyError) as error:
        parser.error(str(error))
    title = f"# Single runs of the continual benchmark ({args.runs.name})\n\n"
    note = ("\nWritten by `python -m benchmarks.continual.summarise_runs` from the runs of "
            "`python -m benchmarks.continual.one_run`; validation rows are the strength search "
            "(seeds from 1000), test rows the result. See docs/continual.md.\n")  # fmt: skip
    out = args.runs.with_suffix(".md")
    out.write_text(title + table + note)
    print(table, end="")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
