"""``Experiment``: a continual-learning run of a Diehl & Cook (2015) layer driven by the
phase machine.

Its parts live elsewhere, one concept each: the network (``neurosim.sim.diehl_cook``), the
voting readout (``neurosim.learning.readout.VotingReadout``: each neuron votes for the class
it responds to most; as a softmax over the classes' mean rates it also gives ``p(y|x)`` and
the surrogate gradients' learning signal), the consolidation (``OnlineFisherEWC``: the
per-task ``FisherAccumulator`` and the EWC pull; ``neurosim.learning.sleep``: replay of stored
input statistics), **what each phase does** (``neurosim.phases.orchestrator``), accuracy
matrices and BWT (``neurosim.phases.evaluation``), events and metrics
(``neurosim.phases.diagnostics``) and the plots (``neurosim.phases.report``, from the results).
This class composes them and presents the data: images as Poisson rates, brighter until the
layer answers (Diehl & Cook), the input weights normalised per neuron after every image.

``results.json`` is rewritten (atomically) after every evaluation, so a run that fails
leaves what it measured so far readable. ``run_experiment`` also runs the no-consolidation
control (``results["control"]``); ``joint = true`` learns every task in one block (the
reference that continual learning is measured against).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from prometheus_client import CollectorRegistry
from tqdm.auto import tqdm

import neurosim
from neurosim.config import ContinualConfig
from neurosim.datasets import Task, load_digits, load_mnist_subset, poisson_rates, split_tasks
from neurosim.events.bus import EventBus
from neurosim.events.mqtt import BrokerSettings, MQTTPublisher
from neurosim.events.schema import Event, SleepEvent
from neurosim.events.spikes import SpikeStream
from neurosim.learning.ewc import EWCConfig, EWCMode, OnlineFisherEWC
from neurosim.learning.fisher import DirectoryFisherStore
from neurosim.learning.fisher_online import FisherAccumulatorConfig
from neurosim.learning.learner import STDPOnlineLearner
from neurosim.learning.readout import LinearReadout, VotingReadout
from neurosim.learning.sleep import InputStatistics, SleepDrive, SleepReport, sleep_episode
from neurosim.learning.surrogate import Surrogate
from neurosim.metrics import METRICS, Metrics
from neurosim.outputs import write_json
from neurosim.phases.diagnostics import announce_evaluation, announce_sleep, diagnose_sleep
from neurosim.phases.evaluation import AccuracyLog, Row, Scenario
from neurosim.phases.machine import PhaseMachine
from neurosim.phases.orchestrator import Block, PhaseOrchestrator
from neurosim.phases.phase import Phase
from neurosim.phases.report import REPLAY_FILE, Replay, plot_experiment, write_replays
from neurosim.sim.diehl_cook import DiehlCookLayer, diehl_cook_network
from neurosim.sim.engine import Backend, Simulation
from neurosim.sim.inputs import PoissonInput
from neurosim.sim.monitors import ChunkResult
from neurosim.sim.neurons import AdaptiveLIF

mV = 1e-3


class Experiment:
    """Builds everything from a ``ContinualConfig`` and runs its schedule."""

    def __init__(self, cfg: ContinualConfig, out_dir: Path, *, progress: bool = True, run_id: str = "run",
                 bus: EventBus[Event] | None = None, metrics: Metrics | None = None,
                 backend: Backend = Backend.AUTO, dtype: torch.dtype = torch.float32) -> None:  # fmt: skip
        """``backend``: the engine's path (``AUTO`` runs the whole learning loop compiled);
        ``dtype``: float32, or float64 to hold the two paths to each other."""
        self.cfg, self.run_id, self.out_dir, self.progress = cfg, run_id, out_dir, progress
        self.bus: EventBus[Event] = bus if bus is not None else EventBus()  # phases, spikes, evaluations
        self.metrics = metrics if metrics is not None else METRICS
        data = load_digits() if cfg.data.dataset == "digits" else load_mnist_subset()
        n_train = len(data) * 3 // 4
        train, test = data.split(n_train, len(data) - n_train, seed=cfg.seed)
        d, n = cfg.data, cfg.network.n_hidden
        self.tasks: list[Task] = split_tasks(train, test, classes_per_task=d.classes_per_task, n_tasks=d.n_tasks)
        self.n_inputs = int(data.images.shape[1])
        layer = DiehlCookLayer(self.n_inputs, n, cfg.network.w_init_max, cfg.network.exc_to_inh,
                               cfg.network.inh_to_exc, cfg.network.theta_init, cfg.network.theta_plus,
                               v_init_exc=-65 * mV, v_init_inh=-60 * mV)  # fmt: skip
        self.sim = Simulation(diehl_cook_network(layer, cfg.seed, dtype=dtype), dt=cfg.dt, seed=cfg.seed,
                              backend=backend, dtype=dtype)  # fmt: skip
        self.proj = self.sim.network.projections["input_exc"]
        self.weight_sum = cfg.network.weight_sum or 78.0 * (self.n_inputs / 784) ** 0.5
        self._normalise()
        self.voting = VotingReadout(int(data.n_classes), n)
        self.readout = LinearReadout(n, int(data.n_classes), dtype=dtype)
        self.learner = STDPOnlineLearner(self.proj, cfg.stdp.to_rule(), dt=cfg.dt, surrogate=Surrogate(width=2 * mV),
                                         readout=self.readout)  # fmt: skip
        self.learner.attach(self.sim)
        f, e = cfg.fisher, cfg.ewc
        self.fisher = OnlineFisherEWC(
            EWCConfig(lambda_=e.lambda_ if e.enabled else 0.0, mode=EWCMode(e.mode), gamma=e.gamma,
                      pull_rate=e.pull_rate),
            store=DirectoryFisherStore(out_dir / "fisher", keep_last=3), metrics=self.metrics,
            accumulator=FisherAccumulatorConfig(alpha=f.alpha, min_samples=f.min_samples,
                                                snapshot_every=f.snapshot_every,
                                                max_staleness_steps=f.max_staleness_steps),
        )  # fmt: skip
        self.sleep_cfg = cfg.sleep.sleep_config()
        self._counts = np.zeros(n, dtype=np.int64)
        self.sim.add_chunk_hook(self._count)
        self.sim.add_chunk_hook(self.metrics.observe_chunk)
        self.spike_stream = SpikeStream(self.bus).attach(self.sim)
        self.machine = PhaseMachine(run_id=run_id, sim_time=lambda: self.sim.t, bus=self.bus, metrics=self.metrics)
        self.orchestrator = PhaseOrchestrator(self.machine, self.learner, self.fisher)
        self.seen: list[int] = []
        self.accuracy = AccuracyLog()
        self.control: dict[str, Any] | None = None  # the no-consolidation control's results, once run
        self.statistics = InputStatistics()  # what SLEEP replays: input sums per task and class, not the data
        self.sleep_reports: list[SleepReport] = []
        self.sleep_assignments: list[npt.NDArray[np.int64]] = []  # each neuron's class at each sleep
        self.sleep_diagnostics: list[SleepEvent] = []
        self._wake_spikes, self._wake_seconds = 0, 0.0
        self.wall0 = time.perf_counter()

    def _count(self, result: ChunkResult) -> None:
        np.add.at(self._counts, result.spikes["exc"].indices, 1)

    def _normalise(self) -> None:
        w = self.proj.synapse_weights()
        sums = torch.zeros(self.proj.n_post, dtype=w.dtype).index_add_(0, self.proj.post_index, w)
        self.proj.set_synapse_weights(w * (self.weight_sum / sums.clamp_min(1e-12))[self.proj.post_index])

    def _input(self) -> PoissonInput:
        inp = self.sim.network.inputs["input"]
        if not isinstance(inp, PoissonInput):
            raise TypeError("the input population must be a PoissonInput")
        return inp

    def _seen_classes(self) -> list[int]:
        return sorted({c for t in self.seen for c in self.tasks[t].classes})

    async def _present(self, image: npt.NDArray[np.float32], label: int | None) -> npt.NDArray[np.int64]:
        if label is not None:
            self.learner.begin_sample(torch.tensor([label]))
        d = self.cfg.data
        counts = np.zeros_like(self._counts)
        for boost in range(4):  # Diehl & Cook: brighter until the image drives 5 spikes
            self._counts[:] = 0
            self._input().set_rates(poisson_rates(image, d.max_rate * (1 + boost)))
            await self.sim.run_async(d.present)
            counts = self._counts.copy()
            self._input().set_rates(0.0)
            if d.rest > 0:
                await self.sim.run_async(d.rest)
            if counts.sum() >= 5:
                break
        return counts

    def _training_order(self, task_index: int) -> list[tuple[int, int]]:
        """(task, image index) pairs of a LEARNING block: the task's first ``train_per_task``
        images in a seeded order; with ``joint``, every task's, interleaved."""
        tasks = range(len(self.tasks)) if self.cfg.joint else [task_index]
        pairs = []
        for t in tasks:
            n = min(self.cfg.data.train_per_task, len(self.tasks[t].train))
            order = np.random.default_rng(self.cfg.seed + 1000 * t).permutation(len(self.tasks[t].train))[:n]
            pairs += [(t, int(i)) for i in order]
        if self.cfg.joint:
            shuffle = np.random.default_rng([self.cfg.seed, 999]).permutation(len(pairs))
            pairs = [pairs[k] for k in shuffle]
        return pairs

    async def learn(self, task_index: int) -> None:
        """The data of a LEARNING block (the orchestrator has switched plasticity on)."""
        self.seen += [t for t in (range(len(self.tasks)) if self.cfg.joint else [task_index]) if t not in self.seen]
        pairs, task_id = self._training_order(task_index), self.tasks[task_index].task_id
        for k, (t, idx) in enumerate(tqdm(pairs, desc=f"learning {task_id}", disable=not self.progress, leave=False)):
            if k % 10 == 0:
                assigned = self.voting.assignments_among(self._seen_classes())
                self.readout.weight = self.voting.softmax_weights(assigned, self.cfg.readout_beta,
                                                                  dtype=self.readout.weight.dtype)  # fmt: skip
            label, image = int(self.tasks[t].train.labels[idx]), self.tasks[t].train.images[idx]
            counts = await self._present(image, label)
            self.voting.observe(counts, label)
            self.statistics.add(t, label, image)
            self._wake_spikes += int(counts.sum())
            self._wake_seconds += self.cfg.data.present
            self._normalise()
            nap_every = self.cfg.sleep.interleave_every
            if self.cfg.sleep.enabled and nap_every is not None and (k + 1) % nap_every == 0 and k + 1 < len(pairs):
                await self.orchestrator.nap(lambda: self._replay(self.cfg.sleep.interleave_duration, within=task_id))

    async def sleep(self, duration: float | None) -> None:
        """The replay of a SLEEP phase (the orchestrator snapshots before and re-anchors after)."""
        await self._replay(duration if duration is not None else self.sleep_cfg.duration, within=None)

    def _replay_by_class(self) -> bool:
        """One statistic per class (class means; or uniform noise standing in for them in
        targeted replay, so the control keeps the same blocks and gains, without the data)."""
        drive = self.sleep_cfg.drive
        return drive is SleepDrive.CLASS_MEANS or (drive is SleepDrive.UNIFORM and self.sleep_cfg.targeted)

    async def _replay(self, duration: float, *, within: str | None) -> None:
        earlier = self.cfg.sleep.replay_tasks == "earlier"
        keys = self.statistics.keys(excluding_task=self.seen[-1] if earlier and self.seen else None)
        means = self.statistics.means(keys, by_class=self._replay_by_class())
        if not means:
            raise RuntimeError("SLEEP before any LEARNING: there is nothing to replay")
        drives = [poisson_rates(np.clip(m, 0.0, 1.0).astype(np.float32), self.cfg.data.max_rate) for m in means]
        classes = self._seen_classes()
        assigned = self.voting.assignments_among(classes)  # sleep changes weights, not the class responses
        name = self.learner.parameter_name
        fisher = self.fisher.total_fisher(name) if self.sleep_cfg.fisher_protection > 0 else None
        # sleep noise on its own stream and the neuron state restored on waking: a sleep that
        # changes no weight leaves the rest of the run exactly as without it (sharp controls)
        with self.sim.detached(stream=len(self.sleep_reports) + 1):
            report = await sleep_episode(
                self.sim, projection=self.proj, inputs=self._input(), statistics=drives, cfg=self.sleep_cfg,
                duration=duration, wake_rate=self._wake_spikes / max(self.cfg.network.n_hidden * self._wake_seconds,
                                                                     1e-12),
                rng=np.random.default_rng([self.cfg.seed, 7919, len(self.sleep_reports)]), fisher=fisher,
                bounds=(self.cfg.stdp.w_min, self.cfg.stdp.w_max), normalise=self._normalise,
                labels=[k[1] for k in keys] if self._replay_by_class() else None, assignments=assigned,
            )  # fmt: skip
        fishers = {}
        for t in self.seen:
            try:
                fishers[self.tasks[t].task_id] = self.fisher.store.load(self.tasks[t].task_id).arrays[name]
            except KeyError:
                continue
        event = diagnose_sleep(report, run_id=self.run_id, episode=len(self.sleep_diagnostics), classes=classes,
                               assigned=assigned, fishers=fishers, within=within)  # fmt: skip
        self.sleep_reports.append(report)
        self.sleep_assignments.append(assigned)
        self.sleep_diagnostics.append(event)
        announce_sleep(event, self.metrics, self.bus)

    async def evaluate(self) -> None:
        """WAKE: every task seen, with plasticity (the orchestrator) and threshold adaptation off."""
        exc_params = self.sim.network.populations["exc"].params
        if not isinstance(exc_params, AdaptiveLIF):
            raise TypeError("the excitatory population must be AdaptiveLIF")
        self.sim.set_population_params("exc", dataclasses.replace(exc_params, theta_plus=0.0))
        seen_classes = self._seen_classes()
        assigned = self.voting.assignments_among(seen_classes)
        rows: dict[Scenario, Row] = {"class": [None] * len(self.tasks), "task": [None] * len(self.tasks)}
        try:
            for t in self.seen:
                task = self.tasks[t]
                n = min(self.cfg.data.test_per_task, len(task.test))
                responses = np.stack([await self._present(task.test.images[i], None) for i in range(n)])
                labels = task.test.labels[:n]
                rows["class"][t] = float(np.mean(self.voting.vote(responses, seen_classes, assigned) == labels))
                rows["task"][t] = float(np.mean(self.voting.vote(responses, list(task.classes), assigned) == labels))
        finally:
            self.sim.set_population_params("exc", exc_params)
        self.accuracy.record(rows, self.seen, self.sim.t)
        seen = {s: {self.tasks[t].task_id: a for t, a in enumerate(r) if a is not None} for s, r in rows.items()}
        announce_evaluation(seen, primary=self.cfg.scenario, run_id=self.run_id, sequence=len(self.accuracy.times) - 1,
                            sim_time=self.sim.t, metrics=self.metrics, bus=self.bus)  # fmt: skip
        self.write_results("running")

    def results(self, status: str) -> dict[str, Any]:
        return {
            "status": status,
            "neurosim_version": neurosim.__version__,
            "scenario": self.cfg.scenario,
            "tasks": [{"task_id": t.task_id, "classes": list(t.classes)} for t in self.tasks],
            **self.accuracy.summary(self.cfg.scenario),
            "phase_history": [e.model_dump(mode="json") for e in self.machine.history],
            "simulated_s": self.sim.t,
            "wall_s": time.perf_counter() - self.wall0,
            "consolidation": {"ewc": self.cfg.ewc.enabled, "sleep": self.cfg.sleep.enabled},
            "sleep": [e.model_dump(mode="json", exclude={"run_id", "wall_time"}) for e in self.sleep_diagnostics],
            **({"control": self.control} if self.control is not None else {}),
        }

    def write_results(self, status: str) -> None:
        write_json(self.out_dir / "results.json", self.results(status))

    async def run(self) -> dict[str, Any]:
        await self.machine.start(reason="experiment start")
        blocks = [Block(Phase(b.phase), b.task, b.duration) for b in self.cfg.resolved_schedule()]
        ids = [t.task_id for t in self.tasks]
        try:
            bar = tqdm(blocks, desc="schedule", disable=not self.progress, unit="phase")
            await self.orchestrator.run(bar, self, ids)
        except BaseException as err:
            write_json(
                self.out_dir / "results.json", {**self.results("failed"), "error": f"{type(err).__name__}: {err}"}
            )
            raise
        finally:
            self.fisher.close()
        self.write_results("completed")
        return self.results("completed")


CONTROL_KEYS = ("average_accuracy", "bwt", "average_accuracy_task_incremental", "bwt_task_incremental")


def run_experiment(
    cfg: ContinualConfig,
    out_dir: Path,
    *,
    progress: bool = True,
    run_id: str = "run",
    mqtt: BrokerSettings | None = None,
) -> dict[str, Any]:
    """Run the experiment in a fresh event loop; writes results.json and the plots. With
    ``mqtt``, its phases, spikes and evaluations are published live under ``neurosim/{run_id}/``.

    With ``cfg.control`` and some consolidation on, the no-consolidation control runs
    afterwards in ``out_dir/control`` (same seed, same data; its own event bus and metrics,
    nothing published) and ``results.json`` gains ``"control"`` with its averages and BWT."""
    experiment = Experiment(cfg, out_dir, progress=progress, run_id=run_id)

    async def main() -> dict[str, Any]:
        if mqtt is None:
            return await experiment.run()
        async with MQTTPublisher(mqtt, run_id, experiment.bus) as publisher:
            await publisher.ready()
            return await experiment.run()

    control: dict[str, Any] | None = None
    try:
        results = asyncio.run(main())
        if cfg.control and (cfg.ewc.enabled or cfg.sleep.enabled):
            baseline = Experiment(
                cfg.without_consolidation(),
                out_dir / "control",
                progress=progress,
                run_id=f"{run_id}-control",
                metrics=Metrics(CollectorRegistry()),
            )
            control_results = asyncio.run(baseline.run())
            control = {key: control_results[key] for key in CONTROL_KEYS}
            control["accuracy_matrix"] = control_results["accuracy_matrix"]
            results["control"] = control
            experiment.control = control
            write_json(out_dir / "results.json", results)
    finally:
        replays = [Replay(r.trains.times - r.start_s, r.trains.indices, a)
                   for r, a in zip(experiment.sleep_reports, experiment.sleep_assignments, strict=True)]  # fmt: skip
        if replays:
            write_replays(out_dir / REPLAY_FILE, replays)
        if (out_dir / "results.json").exists():
            plot_experiment(out_dir)
    return results
