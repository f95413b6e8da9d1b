"""Does consolidation reduce forgetting? The main job's protocol with none / EWC / sleep /
EWC + sleep, over several seeds, class- and task-incremental, in one script.

Every run evaluates both scenarios (the readout votes among all classes seen, or among the
task's own two). Writes ``benchmarks/results/consolidation.md`` and ``.json``.

    .venv/bin/python benchmarks/bench_consolidation.py [--seeds 0 1 2] [--train-per-task 120]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import EXAMPLES, machine_description
from neurosim.config import load_any_config
from neurosim.phases.schedule import run_experiment

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = {"none": (False, False), "ewc": (True, False), "sleep": (False, True), "ewc+sleep": (True, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-per-task", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "consolidation.md")
    args = parser.parse_args()
    base = load_any_config(EXAMPLES / "continual_digits.toml")
    if args.train_per_task is not None:
        base = base.model_copy(update={"data": base.data.model_copy(update={"train_per_task": args.train_per_task})})
    table: dict[str, dict[str, list[float]]] = {}
    wall0 = time.perf_counter()
    for method, (ewc, sleep) in METHODS.items():
        for seed in args.seeds:
            cfg = base.model_copy(
                update={
                    "seed": seed,
                    "ewc": base.ewc.model_copy(update={"enabled": ewc}),
                    "sleep": base.sleep.model_copy(update={"enabled": sleep}),
                    "schedule": "auto",
                }
            )
            with tempfile.TemporaryDirectory() as tmp:
                r = run_experiment(cfg, Path(tmp), progress=False)
            row = table.setdefault(method, {})
            for key in ("average_accuracy", "bwt", "average_accuracy_task_incremental", "bwt_task_incremental"):
                row.setdefault(key, []).append(float(r[key]))
            print(method, seed, {k: round(v[-1], 3) for k, v in row.items()}, flush=True)

    def cell(values: list[float]) -> str:
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}"

    lines = [
        f"| {m} | {cell(v['average_accuracy'])} | {cell(v['bwt'])} | {cell(v['average_accuracy_task_incremental'])} "
        f"| {cell(v['bwt_task_incremental'])} |"
        for m, v in table.items()
    ]
    text = f"""# Consolidation against forgetting: split digits, 5 tasks

Machine: {machine_description()}; torch {torch.__version__}, Python {platform.python_version()}.
Command: `python benchmarks/bench_consolidation.py {" ".join(sys.argv[1:])}`; seeds {args.seeds};
{base.data.train_per_task} training images per task, {base.data.test_per_task} test images per task,
the rest as in `examples/continual_digits.toml`. Total wall time {time.perf_counter() - wall0:.0f} s.

Average accuracy over the 5 tasks after the last one, and backward transfer (BWT: accuracy
after the last task minus accuracy right after learning it; negative = forgetting), mean ±
standard deviation over seeds.

| method | class-incremental accuracy | class-incremental BWT | task-incremental accuracy | task-incremental BWT |
|---|---|---|---|---|
{chr(10).join(lines)}
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(table, indent=2))
    print(text)


if __name__ == "__main__":
    main()
