"""Every run of the benchmark is a run of a ``neurosim.sweep`` function sweep (``test_run``).

A method's search runs at one strength, or its test seeds, are one sweep in their own
directory, ``<out>/sweeps/<protocol>-<method>-<digest>/<method>/<seed>/run_result.json``,
the digest covering everything the runs depend on. So a benchmark that stops resumes
without redoing finished runs, a rerun or a widened ``--grid`` runs only what is missing,
and with a Dask client the seeds run in parallel.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from benchmarks.continual.protocol import (
    ONLINE_FISHER_METHODS,
    Context,
    DatasetName,
    Method,
    Network,
    OnlineFisher,
    Protocol,
    ProtocolName,
    RunConfig,
    RunResult,
    build_contexts,
    mlp,
    run,
)
from neurosim.learning.fisher import FisherKind
from neurosim.sweep import Setting, make_function_spec, run_sweep

if TYPE_CHECKING:
    from distributed import Client

RESULT_FILE = "run_result.json"
FUNCTION = "benchmarks.continual.sweep_runs:test_run"
SEARCH_SEED = 1000  # validation runs use seeds from here; test runs 0, 1, ...


@functools.cache
def _contexts(proto: Protocol, dataset: DatasetName) -> list[Context]:
    return build_contexts(proto, dataset)  # once per process and protocol


def test_run(params: Mapping[str, Any], seed: int, out_dir: Path) -> dict[str, float]:
    """One run of the benchmark (a sweep's function): ``RunResult`` into ``run_result.json``.
    ``params["network"]`` is absent for the MLP (as in sweeps made before there was a choice)."""
    proto = Protocol(**{**params["protocol"], "name": ProtocolName(params["protocol"]["name"])})
    fields = dict(params["config"])
    online = dict(fields.pop("online_fisher"))
    curves_every = fields.pop("evaluate_every")
    every = curves_every if seed == 0 else 0  # curves for the plot: seed 0 only
    online["labels"] = FisherKind(online["labels"])
    cfg = RunConfig(Method(fields.pop("method")), seed=seed, evaluate_every=every, online_fisher=OnlineFisher(**online),
                    **fields)  # fmt: skip
    factory, after_context = mlp, None
    if Network(params.get("network", Network.MLP)) is Network.SPIKING:
        from benchmarks.continual.spiking import SpikingNetwork, sleep_after_contexts

        factory, after_context = SpikingNetwork, sleep_after_contexts(cfg)
    result = run(proto, _contexts(proto, DatasetName(params["dataset"])), cfg, model_factory=factory,
                 after_context=after_context)  # fmt: skip
    record = {
        key: getattr(result, key) for key in ("final_accuracy", "average_accuracy", "curve", "wall_s", "fisher_s")
    }
    (out_dir / RESULT_FILE).write_text(json.dumps(record))
    return {"average_accuracy": result.average_accuracy, "train_wall_s": result.wall_s, "fisher_s": result.fisher_s}


@dataclass
class Runner:
    """Runs a ``RunConfig`` at some seeds as one sweep under ``out/sweeps``: on ``client``'s
    workers, or one after the other in this process with ``threads`` PyTorch threads.
    ``bar`` counts training iterations, a run's worth as each finishes or is found done."""

    proto: Protocol
    dataset: DatasetName
    out: Path
    bar: tqdm[Any]
    client: Client | None = None
    threads: int = 1
    network: Network = Network.MLP

    def __call__(self, cfg: RunConfig, seeds: Sequence[int]) -> list[RunResult]:
        fields = dataclasses.asdict(cfg)
        del fields["seed"]
        params: dict[str, Any] = {
            "protocol": {**dataclasses.asdict(self.proto), "name": self.proto.name.value},
            "dataset": self.dataset.value,
            "config": json.loads(json.dumps(fields, default=str)),
            # the MLP's runs keep the digests of sweeps made before there was a choice
            **({"network": self.network.value} if self.network is not Network.MLP else {}),
        }
        spec = make_function_spec(FUNCTION, params, settings=[Setting(cfg.method.value, {})], seeds=list(seeds))
        where = self.out / "sweeps" / f"{self.proto.name.value}-{cfg.method.value}-{spec.digest()}"
        length = self.proto.iterations * self.proto.n_contexts
        result = run_sweep(spec, where, workers=0, scheduler=self.client, resume=where.exists(), progress=False,
                           threads_per_run=self.threads, on_outcome=lambda _: self.bar.update(length),
                           echo=lambda _: None)  # fmt: skip
        self.bar.update(length * (len(seeds) - len(result.outcomes)))  # runs found complete in the directory
        if result.failed:
            raise RuntimeError(f"{len(result.failed)} run(s) failed: {result.failed[0].error} (in {where})")
        results = []
        for seed in seeds:
            saved = json.loads((where / cfg.method.value / str(seed) / RESULT_FILE).read_text())
            curve = [(int(it), list(row)) for it, row in saved["curve"]]
            results.append(RunResult(dataclasses.replace(cfg, seed=seed), saved["final_accuracy"],
                                     saved["average_accuracy"], curve, saved["wall_s"], saved["fisher_s"]))  # fmt: skip
        return results


@dataclass
class MethodSummary:
    method: Method
    strength: float | None
    results: list[RunResult]
    search: dict[float, float]  # strength -> validation average accuracy (mean over the search seeds)
    search_seeds: int = 1
    online_fisher: OnlineFisher | None = None  # online-Fisher EWC: how its accumulator was fed

    def as_json(self) -> dict[str, Any]:
        accuracies = [r.average_accuracy for r in self.results]
        return {
            "mean": float(np.mean(accuracies)),
            "std": float(np.std(accuracies)),
            "seeds": len(self.results),
            "per_seed": accuracies,
            "strength": self.strength,
            "validation_search": {f"{k:g}": v for k, v in sorted(self.search.items())},
            "search_seeds": self.search_seeds,
            **(self.online_fisher.as_record() if self.online_fisher is not None else {}),
            "wall_s_mean": float(np.mean([r.wall_s for r in self.results])),
            "fisher_s_mean": float(np.mean([r.fisher_s for r in self.results])),
            "curve_seed0": [[step, acc] for step, acc in self.results[0].curve],
        }


def evaluate_method(runner: Callable[[RunConfig, Sequence[int]], list[RunResult]], method: Method,
                    grid: Sequence[float], *, seeds: int, search_seeds: int, online_fisher: OnlineFisher,
                    curves_every: int, label: str = "") -> MethodSummary:  # fmt: skip
    """A method's strength chosen on validation (the mean over ``search_seeds`` runs from seed
    ``SEARCH_SEED`` per value of ``grid``; ties go to the weakest), then ``seeds`` test runs."""
    search = {}
    for value in grid:
        cfg = RunConfig(method, value, split="val", online_fisher=online_fisher)
        runs = runner(cfg, range(SEARCH_SEED, SEARCH_SEED + search_seeds))
        search[value] = float(np.mean([r.average_accuracy for r in runs]))
    strength = max(sorted(search), key=lambda v: search[v]) if search else None
    cfg = RunConfig(method, strength or 0.0, online_fisher=online_fisher, evaluate_every=curves_every)
    online = online_fisher if method in ONLINE_FISHER_METHODS else None
    summary = MethodSummary(method, strength, runner(cfg, range(seeds)), search, search_seeds, online)
    accuracies = [r.average_accuracy for r in summary.results]
    tqdm.write(f"{label}{method.value}: {np.mean(accuracies):.4f} +- {np.std(accuracies):.4f} (strength {strength})")
    return summary
