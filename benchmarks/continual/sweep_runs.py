"""The continual benchmark's multi-seed test runs as a ``neurosim.sweep`` (Dask tasks).

``test_runner(...)`` returns what ``evaluate_protocol`` calls for a method's test seeds:
each seed becomes one run of ``test_run`` on a worker of a Dask cluster, in its own
directory (``<out>/sweeps/<protocol>-<method>-<hash>/<method>/<seed>/run_result.json``), so
an interrupted benchmark resumes without redoing finished seeds, and seeds run in parallel.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.continual.protocol import (
    Context,
    DatasetName,
    FisherKind,
    Method,
    OnlineFisher,
    Protocol,
    ProtocolName,
    RunConfig,
    RunResult,
    build_contexts,
    run,
)
from neurosim.sweep import RunOutcome, Setting, make_function_spec, run_sweep

if TYPE_CHECKING:
    from distributed import Client

RESULT_FILE = "run_result.json"
FUNCTION = "benchmarks.continual.sweep_runs:test_run"


def _params(proto: Protocol, dataset: DatasetName, cfg: RunConfig, curves_every: int) -> dict[str, Any]:
    fields = dataclasses.asdict(cfg)
    fields.pop("seed")
    fields["evaluate_every"] = curves_every  # seed 0 only, as the in-process loop does
    return {
        "protocol": {**dataclasses.asdict(proto), "name": proto.name.value},
        "dataset": dataset.value,
        "config": json.loads(json.dumps(fields, default=str)),
    }


@functools.cache
def _contexts(proto: Protocol, dataset: DatasetName) -> list[Context]:
    return build_contexts(proto, dataset)  # once per worker process and protocol


def test_run(params: Mapping[str, Any], seed: int, out_dir: Path) -> dict[str, float]:
    """One test run of the benchmark (a Dask task): ``RunResult`` into ``run_result.json``."""
    proto = Protocol(**{**params["protocol"], "name": ProtocolName(params["protocol"]["name"])})
    fields = dict(params["config"])
    curves_every = fields.pop("evaluate_every")
    every = curves_every if seed == 0 else 0
    online = dict(fields.pop("online_fisher"))
    online["labels"] = FisherKind(online["labels"])
    cfg = RunConfig(method=Method(fields.pop("method")), seed=seed, evaluate_every=every,
                    online_fisher=OnlineFisher(**online), **fields)  # fmt: skip
    result = run(proto, _contexts(proto, DatasetName(params["dataset"])), cfg)
    record = {
        "final_accuracy": result.final_accuracy,
        "average_accuracy": result.average_accuracy,
        "curve": result.curve,
        "wall_s": result.wall_s,
        "fisher_s": result.fisher_s,
    }
    (out_dir / RESULT_FILE).write_text(json.dumps(record))
    return {"average_accuracy": result.average_accuracy, "train_wall_s": result.wall_s, "fisher_s": result.fisher_s}


def test_runner(proto: Protocol, dataset: DatasetName, client: Client | int, out: Path,
                on_run: Callable[[], object]) -> Callable[[list[RunConfig]], list[RunResult]]:  # fmt: skip
    """Runs a method's test seeds as one sweep on ``client`` (or a fresh local cluster of
    that many workers); ``on_run`` is called as each finishes."""

    def run_seeds(cfgs: list[RunConfig]) -> list[RunResult]:
        base = cfgs[0]
        curves_every = next((c.evaluate_every for c in cfgs if c.seed == 0), 0)
        params = _params(proto, dataset, base, curves_every)
        spec = make_function_spec(FUNCTION, params, settings=[Setting(base.method.value, {})],
                                  seeds=[c.seed for c in cfgs])  # fmt: skip
        digest = spec.digest()
        where = out / "sweeps" / f"{proto.name.value}-{base.method.value}-{digest}"

        def counted(outcome: RunOutcome) -> None:
            on_run()

        workers = client if isinstance(client, int) else 0
        scheduler = None if isinstance(client, int) else client
        result = run_sweep(spec, where, workers=workers, scheduler=scheduler, resume=where.exists(), progress=False,
                           on_outcome=counted, echo=lambda _: None)  # fmt: skip
        if result.failed:
            raise RuntimeError(f"{len(result.failed)} test run(s) failed: {result.failed[0].error} (in {where})")
        results = []
        for cfg in cfgs:
            saved = json.loads((where / base.method.value / str(cfg.seed) / RESULT_FILE).read_text())
            curve = [(int(it), list(row)) for it, row in saved["curve"]]
            results.append(RunResult(dataclasses.replace(cfg), saved["final_accuracy"], saved["average_accuracy"],
                                     curve, saved["wall_s"], saved["fisher_s"]))  # fmt: skip
        return results

    return run_seeds
