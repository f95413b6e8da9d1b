"""Checkpoints of a continual-learning experiment: taken after every WAKE block, so that an
interrupted run goes on from its last evaluation (``neurosim run --resume DIR``).

``save_experiment(experiment, path, blocks_done)`` writes a directory like a simulation
checkpoint (``neurosim.sim.checkpoint``): ``checkpoint.json`` and ``arrays.npz``, no pickle,
replaced atomically. It holds everything the rest of the run depends on:

- the simulation's changing state (step, neuron state with the adaptive thresholds, spikes
  in flight, input generators and rates, weights);
- the learner (traces, counts, on or off), the linear readout, the voting readout's
  observed responses and assignments, the presenter's training rate;
- every task's Fisher accumulator (EMA and counters) and the EWC anchors (weights and
  Fisher per task); the snapshots themselves are in the run's ``fisher/`` store already;
- what SLEEP replays (input statistics per task and class), the replay buffer and its
  sampler, each sleep's replay and diagnostics so far;
- the accuracy matrices, the tasks seen, the phase history and the wall time spent.

Prometheus counters are not restored (a resumed process counts from zero). Resuming
rebuilds the experiment from its config (saved with the checkpoint and checked), puts this
state back, removes Fisher snapshots of tasks the checkpoint had not begun, and runs the
remaining blocks: the results equal those of a run that never stopped (a test holds it).
Task-free runs have no blocks to resume at and are not checkpointed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy.typing as npt
import torch

from neurosim.events.schema import PhaseEvent, SleepEvent
from neurosim.learning.ewc import Anchor
from neurosim.learning.fisher import DirectoryFisherStore
from neurosim.learning.fisher_online import FisherAccumulator
from neurosim.phases.orchestrator import Block
from neurosim.phases.phase import Phase
from neurosim.phases.report import Replay
from neurosim.sim.checkpoint import (
    ARRAYS,
    CheckpointError,
    read_arrays,
    read_json_manifest,
    restore_simulation_state,
    simulation_state,
    to_numpy,
    write_directory,
)

if TYPE_CHECKING:
    from neurosim.phases.schedule import Experiment

FORMAT = "neurosim.experiment-checkpoint"
VERSION = 1

__all__ = ["checkpointed", "load_experiment", "save_experiment"]


def checkpointed(exp: Experiment, blocks: Sequence[Block], done: int, path: Path,
                 after_block: Callable[[], object] = lambda: None) -> Iterator[Block]:  # fmt: skip
    """The blocks of ``exp``'s schedule from ``done`` on; ``after_block`` after each, and a
    checkpoint at ``path`` after each WAKE block (its evaluation written)."""
    for k in range(done, len(blocks)):
        yield blocks[k]  # back here when the orchestrator has run it
        after_block()
        if blocks[k].phase is Phase.WAKE:
            save_experiment(exp, path, k + 1)


def _prefixed(arrays: dict[str, npt.NDArray[Any]], prefix: str, values: dict[str, npt.NDArray[Any]]) -> None:
    arrays.update({f"{prefix}/{key}": value for key, value in values.items()})


def _under(arrays: dict[str, npt.NDArray[Any]], prefix: str) -> dict[str, npt.NDArray[Any]]:
    return {key.removeprefix(f"{prefix}/"): value for key, value in arrays.items() if key.startswith(f"{prefix}/")}


def save_experiment(exp: Experiment, path: str | Path, blocks_done: int) -> Path:
    """Write ``exp``'s state after ``blocks_done`` blocks of its schedule to the directory ``path``."""
    arrays: dict[str, npt.NDArray[Any]] = {}
    sim_state = simulation_state(exp.sim, arrays)
    arrays = {f"sim/{key}": value for key, value in arrays.items()}
    learner_info, learner_arrays = exp.learner.checkpoint_state()
    _prefixed(arrays, "learner", learner_arrays)
    arrays["readout/weight"], arrays["readout/bias"] = to_numpy(exp.readout.weight), to_numpy(exp.readout.bias)
    _prefixed(arrays, "voting", exp.voting.checkpoint_state())
    accumulators = {}
    for task_id, acc in exp.fisher.accumulators.items():
        counters, ema = acc.checkpoint_state()
        accumulators[task_id] = counters
        _prefixed(arrays, f"fisher/{task_id}", ema)
    anchors = dict(exp.fisher.regulariser.anchors)
    for key, anchor in anchors.items():
        _prefixed(arrays, f"anchor/{key}/params", {k: to_numpy(v) for k, v in anchor.params.items()})
        _prefixed(arrays, f"anchor/{key}/fisher", {k: to_numpy(v) for k, v in anchor.fisher.items()})
    statistic_keys, statistic_sums = exp.sleeper.statistics.checkpoint_state()
    _prefixed(arrays, "statistics", statistic_sums)
    replay: dict[str, Any] | None = None
    if exp.replay is not None:
        info, buffer_arrays = exp.replay.buffer.checkpoint_state()
        _prefixed(arrays, "replay", buffer_arrays)
        arrays["replay_generator"] = exp.replay.generator.get_state().numpy().copy()
        replay = {"buffer": info, "tasks": list(exp.replay.tasks)}
    for k, r in enumerate(exp.sleeper.replays):
        _prefixed(arrays, f"replays/{k}", {"times": r.times, "indices": r.indices, "assignments": r.assignments})
    current = exp.fisher.accumulator
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "config": exp.cfg.model_dump(mode="json", by_alias=True),
        "blocks_done": blocks_done,
        "sim": sim_state,
        "learner": learner_info,
        "presenter": exp.presenter.checkpoint_state(),
        "fisher": {
            "accumulators": accumulators,
            "current": current.task_id if current is not None else None,
            "anchors": list(anchors),
            "consolidated": list(exp.fisher.regulariser.tasks),
        },
        "statistics": statistic_keys,
        "replay": replay,
        "replays": len(exp.sleeper.replays),
        "sleep_diagnostics": [e.model_dump(mode="json") for e in exp.sleeper.diagnostics],
        "accuracy": {
            "matrix": exp.accuracy.matrix,
            "learned_at": {str(k): v for k, v in exp.accuracy.learned_at.items()},
            "times": exp.accuracy.times,
            "votes": exp.accuracy.votes,
            "labels": exp.accuracy.labels,
        },
        "seen": exp.seen,
        "phase_history": [e.model_dump(mode="json") for e in exp.machine.history],
        "wall_s": time.perf_counter() - exp.wall0,
    }
    return write_directory(Path(path), manifest, arrays)


def load_experiment(exp: Experiment, path: str | Path) -> int:
    """Put the state saved in ``path`` into ``exp`` (built from the same config, not yet
    run); returns how many schedule blocks were done."""
    manifest = read_json_manifest(path, FORMAT, VERSION)
    if manifest["config"] != exp.cfg.model_dump(mode="json", by_alias=True):
        raise CheckpointError(f"{path}: the checkpoint was taken with another config than this run's")
    arrays = read_arrays(Path(path) / ARRAYS)
    restore_simulation_state(exp.sim, manifest["sim"], _under(arrays, "sim"))
    exp.learner.restore_state(manifest["learner"], _under(arrays, "learner"))
    dtype = exp.readout.weight.dtype
    exp.readout.weight = torch.from_numpy(arrays["readout/weight"]).to(dtype)
    exp.readout.bias = torch.from_numpy(arrays["readout/bias"]).to(dtype)
    exp.voting.restore_state(_under(arrays, "voting"))
    exp.presenter.restore_state(manifest["presenter"])
    fisher = manifest["fisher"]
    _forget_snapshots_after(exp, set(fisher["accumulators"]))
    for task_id, counters in fisher["accumulators"].items():
        acc = FisherAccumulator(exp.fisher.accumulator_config, exp.fisher.store, task_id, metrics=exp.fisher.metrics)
        acc.restore_state(counters, _under(arrays, f"fisher/{task_id}"))
        exp.fisher.accumulators[task_id] = acc
    exp.fisher.accumulator = exp.fisher.accumulators.get(fisher["current"]) if fisher["current"] else None
    anchors = {
        key: Anchor({k: torch.from_numpy(v) for k, v in _under(arrays, f"anchor/{key}/params").items()},
                    {k: torch.from_numpy(v) for k, v in _under(arrays, f"anchor/{key}/fisher").items()})
        for key in fisher["anchors"]
    }  # fmt: skip
    exp.fisher.regulariser.restore_anchors(anchors, fisher["consolidated"])
    exp.sleeper.statistics.restore_state(manifest["statistics"], _under(arrays, "statistics"))
    if exp.replay is not None and manifest["replay"] is not None:
        exp.replay.buffer.restore_state(manifest["replay"]["buffer"], _under(arrays, "replay"))
        exp.replay.generator.set_state(torch.from_numpy(arrays["replay_generator"]))
        exp.replay.tasks = list(manifest["replay"]["tasks"])
    exp.sleeper.replays = [Replay(*(arrays[f"replays/{k}/{f}"] for f in ("times", "indices", "assignments")))
                           for k in range(manifest["replays"])]  # fmt: skip
    exp.sleeper.diagnostics = [SleepEvent.model_validate(e) for e in manifest["sleep_diagnostics"]]
    saved = manifest["accuracy"]
    exp.accuracy.matrix = saved["matrix"]
    exp.accuracy.learned_at = {int(k): int(v) for k, v in saved["learned_at"].items()}
    exp.accuracy.times = list(saved["times"])
    exp.accuracy.votes = saved.get("votes", exp.accuracy.votes)  # both absent in older checkpoints
    exp.accuracy.labels = saved.get("labels", exp.accuracy.labels)
    exp.seen = [int(t) for t in manifest["seen"]]
    exp.machine.restore([PhaseEvent.model_validate(e) for e in manifest["phase_history"]])
    exp.wall0 = time.perf_counter() - float(manifest["wall_s"])
    return int(manifest["blocks_done"])


def _forget_snapshots_after(exp: Experiment, begun: set[str]) -> None:
    """Remove the stored Fisher snapshots of tasks the checkpoint had not begun (written by
    the interrupted run after it): the resumed run writes them again."""
    store = exp.fisher.store
    if isinstance(store, DirectoryFisherStore):
        for task_id in store.tasks():
            if task_id not in begun:
                shutil.rmtree(store.root / task_id, ignore_errors=True)
