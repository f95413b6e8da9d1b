"""``Experiment``: a continual-learning run driven by the phase machine.

The network is a Diehl & Cook (2015)-style layer: Poisson inputs (one per pixel) onto
excitatory neurons with adaptive thresholds and lateral inhibition; the input weights learn
with pair STDP and are normalised per neuron after every image. A voting readout (each
neuron votes for the class it responds to most, from the training presentations so far)
classifies; as a softmax over the classes' mean rates it also gives ``p(y|x)`` and the
learning signal for the surrogate gradients.

Phase semantics (``docs/phases.md``):

- LEARNING(task): STDP on; each image's label starts a sample of the learner; the step's
  surrogate gradients go into the task's ``FisherAccumulator``; the EWC pull of earlier
  tasks is applied by the learner.
- leaving LEARNING: EWC consolidation of the task (anchor = the weights now, Fisher = a
  snapshot forced now);
- SLEEP: ``force_snapshot()`` on every accumulator with pending steps, then replay
  (``neurosim.learning.sleep.sleep_episode``) of the stored input statistics (mean images
  per task or class, kept from the images shown, not the images), protected by the Fisher
  of the tasks seen, in a ``Simulation.detached`` block (its own noise, the neuron state
  restored on waking); the EWC anchor of the latest task moves to the weights after sleep;
  every SLEEP is diagnosed (``SleepEvent``: spikes per class-assigned group, weight change
  of each task's most important synapses);
- WAKE: plasticity and threshold adaptation off; every task seen so far is evaluated.

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
from neurosim.events.schema import EvaluationEvent, Event, PhaseEvent, SleepEvent, TaskWeightChange
from neurosim.events.spikes import SpikeStream
from neurosim.learning.ewc import EWCConfig, EWCMode, EWCRegulariser
from neurosim.learning.fisher import DirectoryFisherStore, SnapshotReason
from neurosim.learning.fisher_online import FisherAccumulator, FisherAccumulatorConfig
from neurosim.learning.learner import STDPOnlineLearner
from neurosim.learning.readout import LinearReadout
from neurosim.learning.sleep import SleepDrive, SleepReport, sleep_episode
from neurosim.learning.surrogate import Surrogate
from neurosim.metrics import METRICS, Metrics
from neurosim.outputs import write_json
from neurosim.phases.machine import PhaseMachine
from neurosim.phases.phase import Phase
from neurosim.sim import connectivity as conn
from neurosim.sim.engine import Backend, Simulation
from neurosim.sim.inputs import PoissonInput
from neurosim.sim.monitors import ChunkResult
from neurosim.sim.network import Network, Population
from neurosim.sim.neurons import AdaptiveLIF, ConductanceLIF
from neurosim.sim.synapses import Channel, Projection

mV, ms = 1e-3, 1e-3


def build_network(cfg: ContinualConfig, n_inputs: int, *, dtype: torch.dtype = torch.float32) -> Network:
    rng = np.random.default_rng(cfg.seed)
    n = cfg.network.n_hidden
    net = Network()
    net.add_input(PoissonInput("input", n_inputs, 0.0))
    exc = AdaptiveLIF(
        tau_m=100 * ms, v_rest=-65 * mV, v_reset=-65 * mV, v_threshold=-72 * mV, t_ref=5 * ms, tau_exc=1 * ms,
        tau_inh=2 * ms, e_exc=0.0, e_inh=-100 * mV, tau_theta=1e4, theta_plus=cfg.network.theta_plus,
    )  # fmt: skip
    inh = ConductanceLIF(
        tau_m=10 * ms, v_rest=-60 * mV, v_reset=-45 * mV, v_threshold=-40 * mV, t_ref=2 * ms, tau_exc=1 * ms,
        tau_inh=2 * ms, e_exc=0.0, e_inh=-85 * mV,
    )  # fmt: skip
    net.add_population(Population("exc", n, exc, {"v": -65 * mV, "theta": cfg.network.theta_init}))
    net.add_population(Population("inh", n, inh, {"v": -60 * mV}))
    pre, post = conn.all_to_all(n_inputs, n)
    w = conn.uniform_weights(pre.size, 0.0, cfg.network.w_init_max, rng)
    net.add_projection(Projection.from_pairs("input_exc", "input", "exc", n_inputs, n, pre, post, w, dtype=dtype))
    idx = np.arange(n, dtype=np.int64)
    net.add_projection(
        Projection.from_pairs(
            "exc_inh", "exc", "inh", n, n, idx, idx, conn.constant_weights(n, cfg.network.exc_to_inh), dtype=dtype
        )
    )
    pre, post = conn.all_to_all(n, n, autapses=False)
    net.add_projection(
        Projection.from_pairs(
            "inh_exc",
            "inh",
            "exc",
            n,
            n,
            pre,
            post,
            conn.constant_weights(pre.size, cfg.network.inh_to_exc),
            channel=Channel.INH,
            dtype=dtype,
        )
    )
    return net


def average_accuracy(matrix: list[list[float | None]]) -> float:
    last = [a for a in matrix[-1] if a is not None] if matrix else []
    return float(np.mean(last)) if last else float("nan")


def backward_transfer(matrix: list[list[float | None]], learned_at: dict[int, int]) -> float:
    """BWT (Lopez-Paz & Ranzato 2017): mean over the tasks learned before the last evaluation
    of (accuracy at the last evaluation - accuracy at the evaluation right after learning it)."""
    if len(matrix) < 2:
        return float("nan")
    final = matrix[-1]
    deltas = []
    for task, row in learned_at.items():
        after, now = matrix[row][task], final[task]
        if row < len(matrix) - 1 and after is not None and now is not None:
            deltas.append(now - after)
    return float(np.mean(deltas)) if deltas else float("nan")


class Experiment:
    """Builds everything from a ``ContinualConfig`` and runs its schedule."""

    def __init__(
        self,
        cfg: ContinualConfig,
        out_dir: Path,
        *,
        progress: bool = True,
        run_id: str = "run",
        bus: EventBus[Event] | None = None,
        metrics: Metrics | None = None,
        backend: Backend = Backend.AUTO,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        """``backend``: the engine's path (``AUTO`` runs the whole learning loop compiled);
        ``dtype``: float32, or float64 to hold the two paths to each other."""
        self.cfg = cfg
        self.run_id = run_id
        # every event of the run (phases, spike batches, evaluations) goes through this bus
        self.bus: EventBus[Event] = bus if bus is not None else EventBus()
        self.metrics = metrics if metrics is not None else METRICS
        self.out_dir = out_dir
        self.progress = progress
        data = load_digits() if cfg.data.dataset == "digits" else load_mnist_subset()
        n_train = len(data) * 3 // 4
        train, test = data.split(n_train, len(data) - n_train, seed=cfg.seed)
        self.tasks: list[Task] = split_tasks(
            train, test, classes_per_task=cfg.data.classes_per_task, n_tasks=cfg.data.n_tasks
        )
        self.n_classes = int(data.n_classes)
        self.n_inputs = int(data.images.shape[1])
        self.net = build_network(cfg, self.n_inputs, dtype=dtype)
        self.sim = Simulation(self.net, dt=cfg.dt, seed=cfg.seed, backend=backend, dtype=dtype)
        self.proj = self.net.projections["input_exc"]
        n = cfg.network.n_hidden
        self.weight_sum = cfg.network.weight_sum or 78.0 * (self.n_inputs / 784) ** 0.5
        self._normalise()
        self.readout = LinearReadout(n, self.n_classes, dtype=dtype)
        self.learner = STDPOnlineLearner(
            self.proj, cfg.stdp.to_rule(), dt=cfg.dt, surrogate=Surrogate(width=2 * mV), readout=self.readout
        )
        self.learner.attach(self.sim)
        self.learner.enabled = False
        self.store = DirectoryFisherStore(out_dir / "fisher", keep_last=3)
        self.accumulators: dict[str, FisherAccumulator] = {}
        e = cfg.ewc
        self.ewc = (
            EWCRegulariser(
                EWCConfig(
                    lambda_=e.lambda_,
                    mode=EWCMode(e.mode),
                    gamma=e.gamma,
                    online_fisher=e.online_fisher,
                    pull_rate=e.pull_rate,
                ),
                self.store,
            )
            if e.enabled
            else None
        )
        self.sleep_cfg = cfg.sleep.sleep_config()
        self._class_response = np.zeros((self.n_classes, n))
        self._class_count = np.zeros(self.n_classes)
        self._counts = np.zeros(n, dtype=np.int64)
        self.sim.add_chunk_hook(self._count)
        self.sim.add_chunk_hook(self.metrics.observe_chunk)
        self.spike_stream = SpikeStream(self.bus).attach(self.sim)
        self.machine = PhaseMachine(run_id=run_id, sim_time=lambda: self.sim.t, bus=self.bus, metrics=self.metrics)
        self.machine.on_exit(Phase.LEARNING, self._consolidate)
        self.machine.on_enter(Phase.SLEEP, self._snapshot_for_sleep)
        self.seen: list[int] = []
        self.learned_at: dict[int, int] = {}  # task -> evaluation row right after it was learned
        self.matrix: dict[str, list[list[float | None]]] = {"class": [], "task": []}
        self.evaluation_times: list[float] = []
        self.control: dict[str, Any] | None = None  # the no-consolidation control's results, once run
        self.sleep_reports: list[SleepReport] = []
        self.sleep_assignments: list[npt.NDArray[np.int64]] = []  # each neuron's class at each sleep
        self.sleep_diagnostics: list[SleepEvent] = []
        # input statistics kept per task and class (sums of the images shown), not the data
        self._image_sum: dict[tuple[int, int], npt.NDArray[np.float64]] = {}
        self._image_count: dict[tuple[int, int], int] = {}
        self._wake_spikes = 0
        self._wake_seconds = 0.0
        self.wall0 = time.perf_counter()

    # ------------------------------------------------------------------ helpers
    def _count(self, result: ChunkResult) -> None:
        np.add.at(self._counts, result.spikes["exc"].indices, 1)

    def _normalise(self) -> None:
        w = self.proj.synapse_weights()
        sums = torch.zeros(self.proj.n_post, dtype=w.dtype).index_add_(0, self.proj.post_index, w)
        self.proj.set_synapse_weights(w * (self.weight_sum / sums.clamp_min(1e-12))[self.proj.post_index])

    def _input(self) -> PoissonInput:
        inp = self.net.inputs["input"]
        if not isinstance(inp, PoissonInput):
            raise TypeError("the input population must be a PoissonInput")
        return inp

    def _assignments(self, classes: list[int]) -> npt.NDArray[np.int64]:
        """Each neuron's class among ``classes``, by mean training response; -1 if silent."""
        means = self._class_response[classes] / np.maximum(self._class_count[classes], 1)[:, None]
        assigned: npt.NDArray[np.int64] = np.asarray(classes, dtype=np.int64)[means.argmax(0)]
        assigned[means.max(0) <= 0] = -1
        return assigned

    def _refresh_readout(self) -> None:
        """The voting readout as a softmax: logit_c = beta * mean rate of class-c neurons."""
        assigned = self._assignments(self._seen_classes())
        weight = torch.zeros_like(self.readout.weight)
        for c in range(self.n_classes):
            members = np.flatnonzero(assigned == c)
            if members.size:
                weight[c, torch.from_numpy(members)] = self.cfg.readout_beta / members.size
        self.readout.weight = weight

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

    # ------------------------------------------------------------------ phases
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
        task = self.tasks[task_index]
        for t in range(len(self.tasks)) if self.cfg.joint else [task_index]:
            if t not in self.seen:
                self.seen.append(t)
        acc = self.accumulators.get(task.task_id)
        if acc is None:
            f = self.cfg.fisher
            acc = FisherAccumulator(
                FisherAccumulatorConfig(alpha=f.alpha, min_samples=f.min_samples, snapshot_every=f.snapshot_every,
                                        max_staleness_steps=f.max_staleness_steps),
                self.store, task.task_id,
            )  # fmt: skip
            self.accumulators[task.task_id] = acc
        self.learner.accumulator = acc
        self.learner.regulariser = self.ewc if self.ewc is not None and self.ewc.anchors else None
        self.learner.enabled = True
        pairs = self._training_order(task_index)
        for k, (t, idx) in enumerate(
            tqdm(pairs, desc=f"learning {task.task_id}", disable=not self.progress, leave=False)
        ):
            if k % 10 == 0:
                self._refresh_readout()
            label = int(self.tasks[t].train.labels[idx])
            image = self.tasks[t].train.images[idx]
            counts = await self._present(image, label)
            self._class_response[label] += counts
            self._class_count[label] += 1
            key = (t, label)
            self._image_sum[key] = self._image_sum.get(key, np.zeros(image.shape)) + image
            self._image_count[key] = self._image_count.get(key, 0) + 1
            self._wake_spikes += int(counts.sum())
            self._wake_seconds += self.cfg.data.present
            self._normalise()
            nap_every = self.cfg.sleep.interleave_every
            if self.cfg.sleep.enabled and nap_every is not None and (k + 1) % nap_every == 0 and k + 1 < len(pairs):
                self.learner.enabled = False
                await self.sleep(self.cfg.sleep.interleave_duration, within=task.task_id)
                self.learner.enabled = True
        self.learner.enabled = False
        self.learner.accumulator = None

    async def _consolidate(self, event: PhaseEvent) -> None:
        """Leaving LEARNING: EWC consolidation of that task, with a Fisher snapshot forced now."""
        task_id = event.task or ""
        acc = self.accumulators.get(task_id)
        if acc is None or acc.stats().steps == 0:
            return
        snapshot = await acc.force_snapshot(SnapshotReason.FORCED)
        if self.ewc is not None:
            params = {self.learner.parameter_name: self.proj.synapse_weights()}
            self.ewc.consolidate(task_id, params, snapshot.arrays)

    async def _snapshot_for_sleep(self, event: PhaseEvent) -> None:
        for acc in self.accumulators.values():
            if acc.pending_steps > 0:
                await acc.force_snapshot(SnapshotReason.SLEEP)

    def _total_fisher(self) -> torch.Tensor | None:
        arrays = []
        for task_id in self.accumulators:
            try:
                arrays.append(self.store.load(task_id).arrays[self.learner.parameter_name])
            except KeyError:
                continue
        return torch.from_numpy(np.sum(arrays, axis=0)) if arrays else None

    def _replay_by_class(self) -> bool:
        """One statistic per class (class means; or uniform noise standing in for them in
        targeted replay, so the control keeps the same blocks and gains, without the data)."""
        drive = self.sleep_cfg.drive
        return drive is SleepDrive.CLASS_MEANS or (drive is SleepDrive.UNIFORM and self.sleep_cfg.targeted)

    def _statistic_keys(self) -> list[tuple[int, int]]:
        keys = sorted(self._image_sum)
        if self.cfg.sleep.replay_tasks == "earlier" and len({k[0] for k in keys}) > 1:
            keys = [k for k in keys if k[0] != self.seen[-1]]
        return keys

    def sleep_statistics(self) -> list[npt.NDArray[np.float64]]:
        """The stored drive of a SLEEP: input rates (Hz) at the mean image of each task seen,
        or of each class seen, from the images shown while learning them."""
        keys = self._statistic_keys()
        if self._replay_by_class():
            means = [self._image_sum[k] / self._image_count[k] for k in keys]
        else:
            means = []
            for t in sorted({k[0] for k in keys}):
                own = [k for k in keys if k[0] == t]
                total = np.sum([self._image_sum[k] for k in own], axis=0)
                means.append(total / sum(self._image_count[k] for k in own))
        return [poisson_rates(np.clip(m, 0.0, 1.0).astype(np.float32), self.cfg.data.max_rate) for m in means]

    def _seen_classes(self) -> list[int]:
        return sorted({c for t in self.seen for c in self.tasks[t].classes})

    async def sleep(self, duration: float, *, within: str | None = None) -> None:
        """One sleep: a SLEEP phase, or (``within`` a task's id) a nap inside its LEARNING."""
        statistics = self.sleep_statistics()
        if not statistics:
            raise RuntimeError("SLEEP before any LEARNING: there is nothing to replay")
        classes = self._seen_classes()
        # sleep changes weights, not the class responses the assignments come from: one for both
        assigned = self._assignments(classes)
        labels = [k[1] for k in self._statistic_keys()] if self._replay_by_class() else None
        # sleep noise on its own stream and the neuron state restored on waking: a sleep that
        # changes no weight leaves the rest of the run exactly as without it (sharp controls)
        with self.sim.detached(stream=len(self.sleep_reports) + 1):
            report = await self._sleep_episode(statistics, duration, labels, assigned)
        if within is None and self.ewc is not None and self.ewc.tasks:
            # the consolidated weights are the new anchor: later tasks must not pull sleep back out
            self.ewc.recentre(self.ewc.tasks[-1], {self.learner.parameter_name: self.proj.synapse_weights()})
        self.sleep_reports.append(report)
        self.sleep_assignments.append(assigned)
        self.sleep_diagnostics.append(self._diagnose(report, classes, assigned, within))
        self._announce_sleep(self.sleep_diagnostics[-1])

    async def _sleep_episode(
        self,
        statistics: list[npt.NDArray[np.float64]],
        duration: float,
        labels: list[int] | None,
        assigned: npt.NDArray[np.int64],
    ) -> SleepReport:
        wake_rate = self._wake_spikes / max(self.cfg.network.n_hidden * self._wake_seconds, 1e-12)
        return await sleep_episode(
            self.sim,
            projection=self.proj,
            inputs=self._input(),
            statistics=statistics,
            cfg=self.sleep_cfg,
            duration=duration,
            wake_rate=wake_rate,
            rng=np.random.default_rng([self.cfg.seed, 7919, len(self.sleep_reports)]),
            fisher=self._total_fisher() if self.sleep_cfg.fisher_protection > 0 else None,
            bounds=(self.cfg.stdp.w_min, self.cfg.stdp.w_max),
            normalise=self._normalise,
            labels=labels,
            assignments=assigned,
        )

    def _diagnose(
        self, report: SleepReport, classes: list[int], assigned: npt.NDArray[np.int64], within: str | None
    ) -> SleepEvent:
        """Is every old class reactivated, and how much did each task's most important
        synapses (the top 5 % of its Fisher) move?"""
        per_class = {str(c): int(report.spikes_per_neuron[assigned == c].sum()) for c in classes}
        change = report.weight_change.detach().cpu().numpy().astype(np.float64)
        per_task: dict[str, TaskWeightChange] = {}
        for t in self.seen:
            task_id = self.tasks[t].task_id
            try:
                fisher = self.store.load(task_id).arrays[self.learner.parameter_name]
            except KeyError:
                continue
            top = np.argsort(fisher)[-max(1, fisher.size // 20) :]
            per_task[task_id] = TaskWeightChange(
                top_fisher_mean_change=float(change[top].mean()),
                top_fisher_mean_abs_change=float(np.abs(change[top]).mean()),
            )
        return SleepEvent(
            run_id=self.run_id,
            episode=len(self.sleep_diagnostics),
            within_task=within,
            start_s=report.start_s,
            duration_s=report.duration_s,
            drive=report.drive.value,
            gain=report.gain,
            target_rate_hz=None if np.isnan(report.target_rate_hz) else report.target_rate_hz,
            rate_hz=report.rate_hz,
            spikes=int(report.spikes_per_neuron.sum()),
            spikes_per_class=per_class,
            spikes_unassigned=int(report.spikes_per_neuron[assigned < 0].sum()),
            classes_reactivated=sum(v > 0 for v in per_class.values()),
            classes_seen=len(classes),
            weight_change_mean_abs=float(np.abs(change).mean()),
            weight_change_per_task=per_task,
            wall_time=time.time(),
        )

    def _announce_sleep(self, event: SleepEvent) -> None:
        for c, spikes in event.spikes_per_class.items():
            self.metrics.sleep_replay_spikes.labels(assigned_class=c).inc(spikes)
        self.metrics.sleep_replay_spikes.labels(assigned_class="-1").inc(event.spikes_unassigned)
        self.metrics.sleep_classes_reactivated.set(event.classes_reactivated)
        self.metrics.sleep_weight_change.set(event.weight_change_mean_abs)
        self.bus.publish(event)

    async def evaluate(self) -> None:
        exc_params = self.net.populations["exc"].params
        if not isinstance(exc_params, AdaptiveLIF):
            raise TypeError("the excitatory population must be AdaptiveLIF")
        self.sim.set_population_params("exc", dataclasses.replace(exc_params, theta_plus=0.0))
        seen_classes = self._seen_classes()
        row_class: list[float | None] = [None] * len(self.tasks)
        row_task: list[float | None] = [None] * len(self.tasks)
        try:
            for t in self.seen:
                task = self.tasks[t]
                n = min(self.cfg.data.test_per_task, len(task.test))
                responses = np.stack([await self._present(task.test.images[i], None) for i in range(n)])
                labels = task.test.labels[:n]
                row_class[t] = self._vote_accuracy(responses, labels, seen_classes, seen_classes)
                row_task[t] = self._vote_accuracy(responses, labels, list(task.classes), seen_classes)
        finally:
            self.sim.set_population_params("exc", exc_params)
        for t in self.seen:
            self.learned_at.setdefault(t, len(self.matrix["class"]))
        self.matrix["class"].append(row_class)
        self.matrix["task"].append(row_task)
        self.evaluation_times.append(self.sim.t)
        self._announce_evaluation({"class": row_class, "task": row_task})
        self.write_results("running")

    def _announce_evaluation(self, rows: dict[str, list[float | None]]) -> None:
        for scenario, row in rows.items():
            seen = {self.tasks[t].task_id: a for t, a in enumerate(row) if a is not None}
            for task_id, acc in seen.items():
                self.metrics.task_accuracy.labels(task=task_id, scenario=scenario).set(acc)
            if seen:
                self.metrics.average_accuracy.labels(scenario=scenario).set(sum(seen.values()) / len(seen))
        primary = {self.tasks[t].task_id: a for t, a in enumerate(rows[self.cfg.scenario]) if a is not None}
        self.bus.publish(
            EvaluationEvent(
                run_id=self.run_id,
                sequence=len(self.evaluation_times) - 1,
                scenario=self.cfg.scenario,
                accuracy=primary,
                average_accuracy=sum(primary.values()) / len(primary) if primary else 0.0,
                sim_time_s=self.sim.t,
                wall_time=time.time(),
            )
        )

    def _vote_accuracy(
        self,
        responses: npt.NDArray[np.int64],
        labels: npt.NDArray[np.int64],
        classes: list[int],
        seen_classes: list[int],
    ) -> float:
        """Vote among ``classes``, each neuron voting for the class it is assigned among all
        ``seen_classes``: a neuron of another class does not vote, so restricting the choice
        to a task's classes (task-incremental) can only help a response that class-incremental
        voting gets right."""
        assigned = self._assignments(seen_classes)
        scores = np.full((responses.shape[0], len(classes)), -1.0)
        for k, c in enumerate(classes):
            members = assigned == c
            if members.any():
                scores[:, k] = responses[:, members].mean(1)
        predicted = np.asarray(classes)[scores.argmax(1)]
        return float(np.mean(predicted == labels))

    # ------------------------------------------------------------------ running and results
    def results(self, status: str) -> dict[str, Any]:
        primary = self.matrix[self.cfg.scenario]
        return {
            "status": status,
            "neurosim_version": neurosim.__version__,
            "scenario": self.cfg.scenario,
            "tasks": [{"task_id": t.task_id, "classes": list(t.classes)} for t in self.tasks],
            "accuracy_matrix": primary,
            "average_accuracy": average_accuracy(primary),
            "bwt": backward_transfer(primary, self.learned_at),
            "accuracy_matrix_class_incremental": self.matrix["class"],
            "accuracy_matrix_task_incremental": self.matrix["task"],
            "average_accuracy_task_incremental": average_accuracy(self.matrix["task"]),
            "bwt_task_incremental": backward_transfer(self.matrix["task"], self.learned_at),
            "evaluation_times_s": self.evaluation_times,
            "phase_history": [e.model_dump(mode="json") for e in self.machine.history],
            "simulated_s": self.sim.t,
            "wall_s": time.perf_counter() - self.wall0,
            "consolidation": {"ewc": self.cfg.ewc.enabled, "sleep": self.cfg.sleep.enabled},
            "sleep": [e.model_dump(mode="json", exclude={"run_id", "wall_time"}) for e in self.sleep_diagnostics],
        }

    def write_results(self, status: str) -> None:
        write_json(self.out_dir / "results.json", self.results(status))

    async def run(self) -> dict[str, Any]:
        await self.machine.start(reason="experiment start")
        blocks = self.cfg.resolved_schedule()
        try:
            for block in tqdm(blocks, desc="schedule", disable=not self.progress, unit="phase"):
                phase = Phase(block.phase)
                task = self.tasks[block.task].task_id if block.task is not None else None
                await self.machine.transition(phase, task=task, reason="schedule")
                if phase is Phase.LEARNING and block.task is not None:
                    await self.learn(block.task)
                elif phase is Phase.SLEEP:
                    await self.sleep(block.duration or self.sleep_cfg.duration)
                else:
                    await self.evaluate()
        except BaseException as err:
            results = self.results("failed")
            results["error"] = f"{type(err).__name__}: {err}"
            write_json(self.out_dir / "results.json", results)
            raise
        finally:
            for acc in self.accumulators.values():
                acc.close()
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
    from neurosim.phases.report import plot_experiment

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
        plot_experiment(out_dir, experiment)
    return results
