"""Does consolidation reduce forgetting? none / joint / EWC / sleep / EWC + sleep and two
controls that must not help (sleep with plasticity off, sleep driven by uniform noise), on
two settings, over several seeds, class- and task-incremental, in one script.

Settings:

- ``digits``: the main job's protocol at full size (``examples/continual_digits.toml``: split
  8x8 digits, 5 tasks of 2 classes, 120 training images per task, 100 excitatory neurons);
- ``mnist``: split MNIST (28x28, the shipped 5,000-image subset) with a Diehl & Cook layer
  of 400 excitatory neurons, otherwise the same protocol.

Every run goes through ``neurosim.sweep`` (a Dask LocalCluster of ``--workers`` processes):
each is an ordinary run directory under ``benchmarks/runs/consolidation/`` (git-ignored).
Settings are chosen before the test runs, on validation seeds the reported numbers never
use (``--validate``; the grid and its budget are ``GRID`` below and in
``docs/consolidation-benchmark.md``); the test run reads the choice from
``results/consolidation_validation.json``. Every finished run is appended to
``results/consolidation_runs.jsonl`` at once (``--resume`` skips the ones there), so a run
that stops loses at most the runs in flight. Writes ``consolidation.json`` (per setting,
per method, per seed, seeds in the same order everywhere), ``consolidation.md`` (mean ± std
and the paired difference to ``none``) and ``consolidation.png``.

    .venv/bin/python benchmarks/bench_consolidation.py --validate --settings digits  # choose settings
    .venv/bin/python benchmarks/bench_consolidation.py                     # the reported run (seeds 0-19)
    .venv/bin/python benchmarks/bench_consolidation.py --validate --settings mnist   # MNIST's own search
    .venv/bin/python benchmarks/bench_consolidation.py --per-setting --settings mnist  # ... and its test
    .venv/bin/python benchmarks/bench_consolidation.py --validate --recruited   # choice from the recruitment probe
    .venv/bin/python benchmarks/bench_consolidation.py --recruited                # ... and its test (seeds 20-39)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any, Literal

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import EXAMPLES, machine_description
from neurosim.outputs import strict_json
from neurosim.sweep import RunOutcome, Setting, make_spec, run_sweep

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "consolidation_runs.jsonl"
VALIDATION = RESULTS / "consolidation_validation.json"
SWEEPS = Path(__file__).resolve().parent / "runs" / "consolidation"  # git-ignored run directories
KEYS = ("average_accuracy", "bwt", "average_accuracy_task_incremental", "bwt_task_incremental")
METHODS = ("none", "joint", "ewc", "sleep", "ewc+sleep", "sleep-plasticity-off", "sleep-uniform-noise")
# the recruited layer's test only: none on the shipped layer at the same seeds, the reference
# that says what recruitment alone changes
SHIPPED_LAYER_NONE = "none-shipped-layer"
# Every setting runs on Diehl & Cook's layer (threshold increment 0.05 mV) unless a choice says
# otherwise: the reported tables ran on it, and the main job's config (the base) has since moved
# to the recruited layer.
SHIPPED_LAYER = {"theta_plus": 0.05e-3}
SETTINGS: dict[str, dict[str, Any]] = {
    "digits": {"network": SHIPPED_LAYER},
    "mnist": {"data": {"dataset": "mnist-subset"}, "network": {**SHIPPED_LAYER, "n_hidden": 400}},
}
VALIDATION_SEEDS = (100, 101, 102)
# The declared searches (digits setting, validation seeds only; docs/consolidation-benchmark.md).
# First search (36 runs of ~10 s): the untargeted rule as Tadros et al. write it, sleep drive x
# potentiation (depression a tenth of it) x sleep length, thresholds at their wake values (the
# calibrated gain sets the activity); EWC strength. Every sleep setting scored at or below
# none; probes of single sleeps on the same seeds showed why (one hub neuron fires for every
# replayed class and is pulled towards all of them) and that targeted replay with homeostatic
# thresholds during sleep helps. Second search (42 runs): targeted class replay with adapting
# thresholds, potentiation x which tasks replay x sleep length; EWC strength extended.
# EWC + sleep and both controls reuse the chosen settings; the MNIST setting reuses them too.
UNTARGETED = {"targeted": False, "adapt_thresholds": False, "sleep_theta_plus": None, "replay_tasks": "all"}
FIRST_SEARCH: dict[str, list[dict[str, Any]]] = {
    "sleep": [
        {"drive": drive, "inc": inc, "dec": inc / 10, "duration": duration, "threshold_scale": 1.0, **UNTARGETED}
        for drive in ("task-means", "class-means")
        for inc in (1e-4, 1e-3)
        for duration in (2.0, 10.0)
    ],
    "ewc": [{"lambda": lam} for lam in (0.1, 1.0, 10.0)],
}
TARGETED = {"drive": "class-means", "targeted": True, "adapt_thresholds": True, "sleep_theta_plus": 5e-4,
            "threshold_scale": 1.0}  # fmt: skip
GRID: dict[str, list[dict[str, Any]]] = {
    "none": [{}],
    "sleep": [
        {**TARGETED, "inc": inc, "dec": inc / 10, "duration": duration, "replay_tasks": tasks}
        for inc in (1e-2, 3e-2, 1e-1)
        for tasks in ("all", "earlier")
        for duration in (10.0, 30.0)
    ],
    "ewc": [{"lambda": lam} for lam in (0.1, 1.0, 10.0, 100.0)],
}


# The MNIST setting's own search (declared 2026-12-07, before any of its runs; docs/consolidation-benchmark.md):
# the reported MNIST rows reuse the digits choice; this grid chooses sleep and EWC on MNIST's own
# validation seeds (33 runs of ~30 s), by the same rule, for the per-setting table.
MNIST_GRID: dict[str, list[dict[str, Any]]] = {
    "none": [{}],
    "sleep": [
        {**TARGETED, "inc": inc, "dec": inc / 10, "duration": duration, "replay_tasks": "all"}
        for inc in (1e-2, 3e-2, 1e-1)
        for duration in (10.0, 30.0)
    ],
    "ewc": [{"lambda": lam} for lam in (0.1, 1.0, 10.0, 100.0)],
}
SEARCHES = {"digits": [FIRST_SEARCH, GRID], "mnist": [MNIST_GRID]}

# The recruited layer (declared 2026-12-07, before its test run): the layer's threshold increment
# and sleep chosen together on validation seeds by the recruitment probe's joint search
# (results/recruitment_probe/{setting}_joint.json, already run; the highest validation
# class-incremental average of its grid), tested once on fresh seeds 20-39 (seeds 0-19 have
# been measured three times on MNIST). EWC is not searched on this layer: each setting's own
# EWC choice is reused (digits: consolidation_validation.json, MNIST: its per-setting search).
PROBE = RESULTS / "recruitment_probe"
EWC_CHOICE_FOR_RECRUITED = {"digits": VALIDATION, "mnist": RESULTS / "consolidation_validation_mnist.json"}

# Which validation choice a test run uses: the digits search's for every setting (the reported
# run), each setting's own search's, or the recruited layer's.
Choice = Literal["digits", "per-setting", "recruited"]
REPORT_STEM: dict[Choice, str] = {
    "digits": "consolidation",
    "per-setting": "consolidation_per_setting",
    "recruited": "consolidation_recruited",
}
TEST_SEEDS: dict[Choice, range] = {"digits": range(20), "per-setting": range(20), "recruited": range(20, 40)}


def methods_of(choice: Choice) -> tuple[str, ...]:
    """What a test run of ``choice`` runs and reports: the seven methods, and for the recruited
    layer the shipped layer's none beside them."""
    return (*METHODS, SHIPPED_LAYER_NONE) if choice == "recruited" else METHODS


def validation_file(setting: str) -> Path:
    """Where a setting's search scores and choice are (the digits search's is the one the reported run uses)."""
    return VALIDATION if setting == "digits" else RESULTS / f"consolidation_validation_{setting}.json"


def choice_file(setting: str, choice: Choice) -> Path:
    """The validation record whose choice a test run of ``setting`` uses."""
    if choice == "recruited":
        return RESULTS / f"consolidation_validation_recruited_{setting}.json"
    return validation_file(setting if choice == "per-setting" else "digits")


def logged_label(method: str, setting: str, choice: Choice) -> str:
    """A test run's name in the log: a method run with another choice is logged apart."""
    if choice == "recruited":  # every method, none and joint included: the layer differs
        return method if method == SHIPPED_LAYER_NONE else f"{method} (recruited layer)"
    if choice == "digits" or setting == "digits" or method in ("none", "joint"):
        return method
    return f"{method} ({setting} choice)"


def choose_recruited(setting: str) -> None:
    """Write the recruited layer's choice for ``setting`` from the recruitment probe's joint
    search (validation seeds; no new runs): the grid point of highest mean class-incremental
    average, its threshold increment for the layer and its sleep for the sleep methods."""
    probe = json.loads((PROBE / f"{setting}_joint.json").read_text())
    if set(probe["seeds"]) != set(VALIDATION_SEEDS):
        raise ValueError(f"{setting}_joint.json ran on seeds {probe['seeds']}, not the validation seeds")
    rows = [r for r in probe["rows"] if r["completed"] == len(VALIDATION_SEEDS)]
    best = max(rows, key=lambda r: r["headline"]["average_accuracy"]["mean"])  # first on a tie
    picked = best["overrides"]
    sleep = {**TARGETED, "replay_tasks": "all",
             **{key: picked[f"sleep.{key}"] for key in ("inc", "dec", "duration")}}  # fmt: skip
    ewc = json.loads(EWC_CHOICE_FOR_RECRUITED[setting].read_text())["chosen"]["ewc"]
    record = {
        "setting": setting,
        "seeds": list(VALIDATION_SEEDS),
        "source": f"recruitment_probe/{setting}_joint.json",
        "ewc_from": EWC_CHOICE_FOR_RECRUITED[setting].name,
        "scores": {r["setting"]: r["headline"]["average_accuracy"]["mean"] for r in rows},
        "chosen": {"network": {"theta_plus": picked["network.theta_plus"]}, "sleep": sleep, "ewc": ewc},
    }
    choice_file(setting, "recruited").write_text(json.dumps(record, indent=2))
    print(json.dumps(record["chosen"], indent=2))


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def method_overrides(
    method: str, sleep: dict[str, Any], ewc: dict[str, Any], network: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The config changes of ``method``, given the chosen sleep and EWC settings (and layer)."""
    off = {"enabled": False}
    table: dict[str, dict[str, Any]] = {
        "none": {"ewc": off, "sleep": off},
        "joint": {"ewc": off, "sleep": off, "joint": True},
        "ewc": {"ewc": {**ewc, "enabled": True}, "sleep": off},
        "sleep": {"ewc": off, "sleep": {**sleep, "enabled": True}},
        "ewc+sleep": {"ewc": {**ewc, "enabled": True}, "sleep": {**sleep, "enabled": True}},
        "sleep-plasticity-off": {"ewc": off, "sleep": {**sleep, "enabled": True, "plasticity": False}},
        "sleep-uniform-noise": {"ewc": off, "sleep": {**sleep, "enabled": True, "drive": "uniform"}},
    }
    if method == SHIPPED_LAYER_NONE:
        return table["none"]
    return {**table[method], "network": network} if network else table[method]


def _flatten(overrides: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested overrides as dotted config paths (``{"sleep": {"inc": 1}}`` -> ``{"sleep.inc": 1}``)."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def sweep_setting(setting: str, label: str, overrides: dict[str, Any]) -> Setting:
    """One method (or grid point) of one benchmark setting, as a sweep setting."""
    flat = _flatten(_merge(_merge(SETTINGS[setting], overrides), {"control": False, "schedule": "auto"}))
    return Setting(re.sub(r"[^A-Za-z0-9._=,-]+", "-", f"{setting}-{label}").strip("-"), flat)


def _done() -> dict[tuple[str, str, int], dict[str, Any]]:
    if not RUNS.exists():
        return {}
    rows = [json.loads(line) for line in RUNS.read_text().splitlines() if line.strip()]
    return {(r["setting"], r["label"], r["seed"]): r for r in rows}


def run_all(jobs: list[tuple[str, str, dict[str, Any], int]], workers: int, resume: bool) -> None:
    """Run ``jobs`` (setting, label, overrides, seed) as one ``neurosim.sweep`` on a Dask
    LocalCluster of ``workers`` processes, appending every finished run to the JSONL log.
    Each run is an ordinary run directory under ``benchmarks/runs/consolidation/`` (one
    sweep directory per job list, so an interrupted call resumes with ``--resume``)."""
    done = _done() if resume else {}
    todo = [j for j in jobs if (j[0], j[1], j[3]) not in done]
    print(f"{len(jobs) - len(todo)} runs already logged, {len(todo)} to go", flush=True)
    if not todo:
        return
    seeds = sorted({j[3] for j in todo})
    by_name: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for setting, label, overrides, _seed in todo:
        by_name.setdefault(sweep_setting(setting, label, overrides).name, (setting, label, overrides))
    spec = make_spec(
        EXAMPLES / "continual_digits.toml",
        settings=[sweep_setting(*job) for job in by_name.values()],
        seeds=seeds,
    )
    digest = spec.digest()
    out = SWEEPS / f"sweep-{digest}"
    RUNS.parent.mkdir(parents=True, exist_ok=True)

    def log(outcome: RunOutcome) -> None:
        setting, label, overrides = by_name[outcome.setting]
        if outcome.status != "completed" or (setting, label, outcome.seed) in done:
            return
        results = json.loads((out / outcome.setting / str(outcome.seed) / "results.json").read_text())
        row = {"setting": setting, "label": label, "overrides": overrides, "seed": outcome.seed}
        row.update({key: results[key] for key in KEYS})
        row["sleep_spikes"] = [s["spikes"] for s in results["sleep"]]
        row["classes_reactivated"] = [f"{s['classes_reactivated']}/{s['classes_seen']}" for s in results["sleep"]]
        row["wall_s"] = outcome.wall_s
        with RUNS.open("a") as runs_log:
            runs_log.write(json.dumps(strict_json(row), allow_nan=False) + "\n")
        done[(setting, label, outcome.seed)] = row

    result = run_sweep(spec, out, workers=workers, resume=out.exists(), on_outcome=log)
    for outcome in result.outcomes:  # runs complete in the sweep directory before this call
        if outcome.status == "completed":
            log(outcome)
    if result.failed:
        failed = [f"{o.setting} seed {o.seed}: {o.error}" for o in result.failed]
        raise RuntimeError(f"{len(failed)} runs failed (the others are logged):\n" + "\n".join(failed))


def _label(kind: str, params: dict[str, Any]) -> str:
    return kind + "".join(f" {k}={v}" for k, v in params.items())


def validate(setting: str, workers: int, resume: bool) -> None:
    searches = SEARCHES[setting]
    jobs = [
        (setting, f"val {_label(kind, params)}", _grid_overrides(kind, params), seed)
        for search in searches
        for kind, grid in search.items()
        for params in grid
        for seed in VALIDATION_SEEDS
    ]
    run_all(jobs, workers, resume)
    done = _done()
    scores: dict[str, dict[str, float]] = {}
    for search in searches:
        for kind, grid in search.items():
            for params in grid:
                label = f"val {_label(kind, params)}"
                rows = [done[(setting, label, s)] for s in VALIDATION_SEEDS]
                scores[label] = {key: float(np.mean([r[key] for r in rows])) for key in KEYS}

    def best(kind: str) -> dict[str, Any]:
        # highest validation class-incremental average; on a tie, the first (weaker) setting
        ranked = sorted(searches[-1][kind], key=lambda p: -scores[f"val {_label(kind, p)}"]["average_accuracy"])
        return ranked[0]

    choice = {"sleep": best("sleep"), "ewc": best("ewc")}
    grids = {"first_search": FIRST_SEARCH, "grid": GRID} if setting == "digits" else {"grid": MNIST_GRID}
    record = {"setting": setting, "seeds": list(VALIDATION_SEEDS), **grids, "scores": scores, "chosen": choice}
    validation_file(setting).write_text(json.dumps(record, indent=2))
    print(json.dumps(choice, indent=2))


def _grid_overrides(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    if kind == "sleep":
        return method_overrides("sleep", params, {})
    if kind == "ewc":
        return method_overrides("ewc", {}, params)
    return method_overrides("none", {}, {})


def report(seeds: list[int], settings: list[str], wall: float, *, choice: Choice = "digits") -> None:
    """The tables, JSON and plot of the test runs in the log made with ``choice``:
    ``consolidation.*`` (every setting with the digits search's choice, the reported run),
    ``consolidation_per_setting.*`` (each setting with its own search's choice) or
    ``consolidation_recruited.*`` (the recruited layer)."""
    done = _done()
    stem = REPORT_STEM[choice]
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    for setting in settings:
        for method in methods_of(choice):
            rows = [done.get((setting, logged_label(method, setting, choice), s)) for s in seeds]
            if any(r is None for r in rows):
                continue
            table.setdefault(setting, {})[method] = {
                key: [float("nan") if r[key] is None else float(r[key]) for r in rows if r] for key in KEYS
            }
            table[setting][method]["seeds"] = [float(s) for s in seeds]
    (RESULTS / f"{stem}.json").write_text(json.dumps(strict_json(table), indent=2, allow_nan=False))

    def cell(values: list[float]) -> str:
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}"

    def paired(setting: str, method: str, key: str) -> str:
        if method == "none":
            return "-"
        d = np.asarray(table[setting][method][key]) - np.asarray(table[setting]["none"][key])
        se = np.std(d, ddof=1) / np.sqrt(d.size) if d.size > 1 else float("nan")
        return f"{d.mean():+.3f} ± {np.std(d):.3f} (t = {d.mean() / se if se > 0 else float('nan'):+.1f})"

    sections = []
    for setting, methods in table.items():
        lines = [
            f"| {m} | {cell(v['average_accuracy'])} | {paired(setting, m, 'average_accuracy')} | {cell(v['bwt'])} "
            f"| {cell(v['average_accuracy_task_incremental'])} | "
            f"{paired(setting, m, 'average_accuracy_task_incremental')} | {cell(v['bwt_task_incremental'])} |"
            for m, v in methods.items()
        ]
        sections.append(
            f"### {setting}\n\n| method | class-IL accuracy | paired diff. to none | class-IL BWT | task-IL accuracy "
            f"| paired diff. to none | task-IL BWT |\n|---|---|---|---|---|---|---|\n" + "\n".join(lines)
        )
    files = {setting: choice_file(setting, choice) for setting in table}
    choices = "; ".join(
        f"{setting} ({path.name}): {'layer ' + json.dumps(c['network']) + ', ' if 'network' in c else ''}"
        f"sleep {json.dumps(c['sleep'])}, EWC {json.dumps(c['ewc'])}"
        for setting, path in files.items()
        if path.exists() and (c := json.loads(path.read_text())["chosen"])
    )
    title = {
        "digits": "split digits and split MNIST",
        "per-setting": "each setting with its own validation choice",
        "recruited": "the recruited layer (threshold increment and sleep chosen together)",
    }[choice]
    text = f"""# Consolidation against forgetting: {title}, 5 tasks

Machine: {machine_description()}; Python {platform.python_version()}; {wall:.0f} s of wall time for this
invocation (runs already logged are not redone). Command: `python benchmarks/bench_consolidation.py
{" ".join(sys.argv[1:])}`; test seeds {seeds}. Settings chosen on validation seeds {list(VALIDATION_SEEDS)}:
{choices}.

Average accuracy over the 5 tasks after the last one and backward transfer (BWT: accuracy
after the last task minus accuracy right after learning it; negative = forgetting), mean ±
standard deviation over seeds; the paired difference to `none` is mean ± std over seeds of
(method - none) on the same seed, with its t statistic (mean / standard error). `joint`
learns all tasks interleaved in one block (no BWT).

{(chr(10) * 2).join(sections)}
"""
    (RESULTS / f"{stem}.md").write_text(text)
    _plot(table, RESULTS / f"{stem}.png")
    print(text)


def _plot(table: dict[str, dict[str, dict[str, list[float]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(table), figsize=(7 * len(table), 4), squeeze=False)
    for ax, (setting, methods) in zip(axes[0], table.items(), strict=True):
        names = list(methods)
        x = np.arange(len(names))
        for offset, key, colour, label in (
            (-0.2, "average_accuracy", "#5b8bd0", "class-incremental"),
            (0.2, "average_accuracy_task_incremental", "#e39b4c", "task-incremental"),
        ):
            values = [methods[m][key] for m in names]
            ax.bar(x + offset, [np.mean(v) for v in values], 0.4, yerr=[np.std(v) for v in values], capsize=3,
                   color=colour, label=label)  # fmt: skip
            for k, v in enumerate(values):
                ax.scatter(np.full(len(v), x[k] + offset), v, s=6, color="k", zorder=3)
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("average accuracy after the last task")
        ax.set_title(f"{setting}: mean ± std over seeds (dots: seeds)", fontsize=9, loc="left")
        ax.legend(fontsize=7, ncol=2, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False)  # clear of the bars
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--validate", action="store_true",
                        help="run the declared grid of each of --settings on the validation seeds")  # fmt: skip
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--per-setting", action="store_true",
                       help="each setting with its own search's choice: consolidation_per_setting.*")  # fmt: skip
    which.add_argument("--recruited", action="store_true",
                       help="the recruited layer (threshold increment and sleep chosen together by the "
                            "recruitment probe; --validate writes that choice): consolidation_recruited.*")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="test seeds (default 0-19, the reported run; with --recruited 20-39)")  # fmt: skip
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--methods", nargs="+", choices=(*METHODS, SHIPPED_LAYER_NONE), default=None,
                        help=f"default: all seven ({SHIPPED_LAYER_NONE} too with --recruited)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="skip runs already in consolidation_runs.jsonl")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the tables from the log")
    args = parser.parse_args()
    choice: Choice = "recruited" if args.recruited else "per-setting" if args.per_setting else "digits"
    args.seeds = args.seeds or list(TEST_SEEDS[choice])
    if set(args.seeds) & set(VALIDATION_SEEDS):
        parser.error(f"seeds {VALIDATION_SEEDS} are the validation seeds; report on others")
    args.methods = args.methods or list(methods_of(choice))
    if not set(args.methods) <= set(methods_of(choice)):
        parser.error(f"{SHIPPED_LAYER_NONE} is the recruited layer's reference: give --recruited")
    wall0 = time.perf_counter()
    if args.validate:
        for setting in args.settings:
            if args.recruited:
                choose_recruited(setting)
            else:
                validate(setting, args.workers, args.resume)
        return
    if not args.report_only:
        choice_of = {s: choice_file(s, choice) for s in args.settings}
        missing = sorted({path.name for path in choice_of.values() if not path.exists()})
        if missing:
            parser.error(f"no {', '.join(missing)}: run --validate first (settings are chosen on validation seeds)")
        chosen = {s: json.loads(path.read_text())["chosen"] for s, path in choice_of.items()}
        jobs = [
            (setting, logged_label(method, setting, choice),
             method_overrides(method, chosen[setting]["sleep"], chosen[setting]["ewc"], chosen[setting].get("network")),
             seed)
            for setting in args.settings
            for method in args.methods
            for seed in args.seeds
        ]  # fmt: skip
        run_all(jobs, args.workers, args.resume)
    report(args.seeds, args.settings, time.perf_counter() - wall0, choice=choice)


if __name__ == "__main__":
    main()
