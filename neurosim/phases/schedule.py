"""``Experiment``: a continual-learning run of a Diehl & Cook (2015) layer driven by the
phase machine.

Its parts live elsewhere, one concept each: the network (``neurosim.sim.diehl_cook``), the
voting readout (``neurosim.learning.readout.VotingReadout``: each neuron votes for the class
it responds to most; as a softmax over the classes' mean rates it also gives ``p(y|x)`` and
the surrogate gradients' learning signal), the consolidation (``OnlineFisherEWC``: the
per-task ``FisherAccumulator`` and the EWC pull; ``neurosim.phases.layer_sleep``: what sleep
stores and replays, and each sleep's diagnostics), **what each phase does**
(``neurosim.phases.orchestrator``), accuracy matrices and BWT (``neurosim.phases.evaluation``),
events and metrics (``neurosim.phases.diagnostics``) and the plots (``neurosim.phases.report``,
from the results).
This class composes them and presents the data: images as Poisson rates, brighter until the
layer answers (Diehl & Cook), the input weights normalised per neuron after every image.

``results.json`` is rewritten (atomically) after every evaluation, so a run that fails
leaves what it measured so far readable. ``run_experiment`` also runs the no-consolidation
control (``results["control"]``); ``joint = true`` learns every task in one block (the
reference that continual learning is measured against).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from prometheus_client import CollectorRegistry
from tqdm.auto import tqdm

import neurosim
from neurosim.config import ContinualConfig
from neurosim.datasets import Task, load_digits, load_mnist_subset, split_tasks
from neurosim.events.bus import EventBus
from neurosim.events.mqtt import BrokerSettings, MQTTPublisher
from neurosim.events.schema import Event
from neurosim.events.spikes import SpikeStream
from neurosim.learning.drift import PageHinkley
from neurosim.learning.ewc import OnlineFisherEWC
from neurosim.learning.fisher import DirectoryFisherStore
from neurosim.learning.learner import STDPOnlineLearner
from neurosim.learning.readout import LinearReadout, VotingReadout
from neurosim.learning.replay import ExperienceReplay, ReservoirBuffer
from neurosim.learning.surrogate import Surrogate
from neurosim.metrics import METRICS, Metrics
from neurosim.outputs import write_json
from neurosim.phases.checkpoint import checkpointed, load_experiment
from neurosim.phases.diagnostics import announce_evaluation
from neurosim.phases.evaluation import SCENARIOS, AccuracyLog, Labels, Scenario, paired_comparison
from neurosim.phases.layer_sleep import LayerSleep
from neurosim.phases.machine import PhaseMachine
from neurosim.phases.orchestrator import Block, PhaseOrchestrator
from neurosim.phases.phase import Phase
from neurosim.phases.report import REPLAY_FILE, plot_experiment, write_replays
from neurosim.sim.checkpoint import CheckpointError
from neurosim.sim.diehl_cook import DiehlCookLayer, LayerPresenter, diehl_cook_network
from neurosim.sim.engine import Backend, Simulation

mV = 1e-3
CHECKPOINT_DIR = "checkpoint"  # in the output directory: the experiment after its last WAKE block


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
        self.tasks: list[Task] = split_tasks(train, test, classes_per_task=d.classes_per_task, n_tasks=d.n_tasks,
                                             class_order=d.class_order)  # fmt: skip
        self.n_inputs = int(data.images.shape[1])
        self.sim, self.presenter = build_layer(cfg, self.n_inputs, backend, dtype)
        self.proj = self.presenter.projection
        self.voting = VotingReadout(int(data.n_classes), n)
        self.readout = LinearReadout(n, int(data.n_classes), dtype=dtype)
        self.learner = STDPOnlineLearner(self.proj, cfg.stdp.to_rule(), dt=cfg.dt, surrogate=Surrogate(width=2 * mV),
                                         readout=self.readout)  # fmt: skip
        self.learner.attach(self.sim)
        self.fisher = online_fisher_ewc(cfg, out_dir, self.metrics)
        self.sim.add_chunk_hook(self.metrics.observe_chunk)
        self.spike_stream = SpikeStream(self.bus).attach(self.sim)
        self.machine = PhaseMachine(run_id=run_id, sim_time=lambda: self.sim.t, bus=self.bus, metrics=self.metrics)
        self.orchestrator = PhaseOrchestrator(self.machine, self.learner, self.fisher, bus=self.bus)
        self.seen: list[int] = []
        self.accuracy = AccuracyLog([t.classes for t in self.tasks])
        self.control: dict[str, Any] | None = None  # the no-consolidation control's results, once run
        self.task_free: dict[str, Any] | None = None  # task-free runs: drifts against the true boundaries
        self.neurons_assigned = 0  # neurons that responded to a class seen, at the latest evaluation
        self.sleeper = LayerSleep(cfg, self.presenter, run_id=run_id, metrics=self.metrics, bus=self.bus)
        self.replay = ExperienceReplay(ReservoirBuffer(cfg.replay.capacity, seed=cfg.seed), from_stream=True,
                                       seed=cfg.seed) if cfg.replay.enabled else None  # fmt: skip
        self.wall0 = time.perf_counter()

    def _order(self, task_index: int) -> list[tuple[int, int]]:
        d = self.cfg.data
        return training_order(self.tasks, task_index, d.train_per_task, self.cfg.seed, joint=self.cfg.joint)

    async def _show(self, image: npt.NDArray[np.float32], label: int | None) -> npt.NDArray[np.int64]:
        if label is not None:
            self.learner.begin_sample(torch.tensor([label]))
        return await self.presenter.present(image, training=label is not None)

    def _seen_classes(self) -> list[int]:
        if self.cfg.task_free is not None:  # no task labels: the classes whose labels came so far
            return [int(c) for c in np.flatnonzero(self.voting.observed)]
        return sorted({c for t in self.seen for c in self.tasks[t].classes})

    async def learn(self, task_index: int) -> None:
        """The data of a LEARNING block (the orchestrator has switched plasticity on)."""
        self.seen += [t for t in (range(len(self.tasks)) if self.cfg.joint else [task_index]) if t not in self.seen]
        pairs, task_id = self._order(task_index), self.tasks[task_index].task_id
        for k, (t, idx) in enumerate(tqdm(pairs, desc=f"learning {task_id}", disable=not self.progress, leave=False)):
            await self._learn_image(t, idx, k, group=t)
            nap_every = self.cfg.sleep.interleave_every
            if self.cfg.sleep.enabled and nap_every is not None and (k + 1) % nap_every == 0 and k + 1 < len(pairs):
                await self.orchestrator.nap(lambda: self.sleep(self.cfg.sleep.interleave_duration, within=task_id))

    async def _learn_image(self, t: int, idx: int, k: int, *, group: int) -> float:
        """Present training image ``idx`` of task ``t`` (the ``k``-th of its block) and learn it;
        its input joins the sleep statistics of ``group`` (and the replay buffer). Returns the
        readout's loss on it before it was learned, ``-log p(label | response)``."""
        label, image = int(self.tasks[t].train.labels[idx]), self.tasks[t].train.images[idx]
        loss = await self._learn(image, label, refresh=k % 10 == 0)
        self.sleeper.remember(group, label, image)
        if self.replay is not None:
            self.replay.buffer.add(torch.from_numpy(image)[None], torch.tensor([label]), group)
            every = self.cfg.replay.every
            if every is not None and (k + 1) % every == 0:  # one stored episode, learned again
                stored = self.replay.buffer.sample(1, self.replay.generator)
                await self._learn(stored.inputs[0].numpy(), int(stored.labels[0]), refresh=False)
        return loss

    async def _learn(self, image: npt.NDArray[np.float32], label: int, *, refresh: bool) -> float:
        if refresh and (classes := self._seen_classes()):
            self.readout.weight = self.voting.softmax_among(classes, self.cfg.readout_beta, self.readout.weight.dtype)
        counts = await self._show(image, label)
        rates = torch.from_numpy(counts / self.cfg.data.present).to(self.readout.weight.dtype)[None]
        loss = -float(self.readout.log_prob(rates)[0, label])
        self.voting.observe(counts, label)
        self.presenter.normalise()
        return loss

    async def _learn_stream(self) -> dict[str, Any]:
        """Task-free: every task's training images as one stream, task after task; a drift in
        the readout's loss closes the block (the orchestrator does the rest)."""
        assert self.cfg.task_free is not None  # the caller's condition
        stream = [(t, idx) for t in range(len(self.tasks)) for _, idx in self._order(t)]
        losses: list[float] = []

        async def learned() -> AsyncIterator[float]:
            for position, (t, idx) in enumerate(stream):
                self.seen += [t] if t not in self.seen else []
                losses.append(await self._learn_image(t, idx, position, group=len(self.fisher.accumulators) - 1))
                yield losses[-1]

        detector = PageHinkley(self.cfg.task_free.detector())
        drifts = await self.orchestrator.run_task_free(learned(), detector, self, sleep=self.cfg.sleep.enabled)
        boundaries = [k for k in range(1, len(stream)) if stream[k][0] != stream[k - 1][0]]
        return {**task_free_summary(drifts, boundaries), "readout_loss": losses}

    async def sleep(self, duration: float | None, *, within: str | None = None) -> None:
        """The replay of a SLEEP phase (the orchestrator snapshots before and re-anchors after),
        or of a nap ``within`` a task's LEARNING."""
        if not self.seen:
            raise RuntimeError("SLEEP before any LEARNING: there is nothing to replay")
        latest = len(self.fisher.accumulators) - 1 if self.cfg.task_free is not None else self.seen[-1]
        episodes = self.replay.episodes()[:2] if self.replay is not None and len(self.replay.buffer) else None
        classes = self._seen_classes()
        assigned = self.voting.assignments_among(classes)  # sleep changes weights, not the class responses
        await self.sleeper.replay(duration, latest=latest, classes=classes, assigned=assigned, fisher=self.fisher,
                                  parameter=self.learner.parameter_name, episodes=episodes, within=within)  # fmt: skip

    async def evaluate(self) -> None:
        """WAKE: every task seen, with plasticity (the orchestrator) and threshold adaptation off."""
        seen_classes = self._seen_classes()
        assigned = self.voting.assignments_among(seen_classes)
        self.neurons_assigned = int((assigned >= 0).sum())  # how much of the layer holds a class
        predicted: dict[Scenario, Labels] = {s: [None] * len(self.tasks) for s in SCENARIOS}
        labels: Labels = [None] * len(self.tasks)
        with self.presenter.thresholds_frozen():
            for t in self.seen:
                task = self.tasks[t]
                n = min(self.cfg.data.test_per_task, len(task.test))
                responses = np.stack([await self._show(task.test.images[i], None) for i in range(n)])
                labels[t] = task.test.labels[:n]
                for scenario, among in zip(SCENARIOS, (seen_classes, list(task.classes)), strict=True):
                    predicted[scenario][t] = self.voting.vote(responses, among, assigned)
        rows = self.accuracy.record(predicted, labels, self.seen, self.sim.t)
        seen = {s: {self.tasks[t].task_id: a for t, a in enumerate(r) if a is not None} for s, r in rows.items()}
        announce_evaluation(seen, primary=self.cfg.scenario, run_id=self.run_id, sequence=len(self.accuracy.times) - 1,
                            sim_time=self.sim.t, metrics=self.metrics, bus=self.bus)  # fmt: skip
        self.write_results("running")

    def results(self, status: str) -> dict[str, Any]:
        """What ``results.json`` holds now, with ``status``."""
        return {
            "status": status,
            "neurosim_version": neurosim.__version__,
            "scenario": self.cfg.scenario,
            "tasks": [{"task_id": t.task_id, "classes": list(t.classes)} for t in self.tasks],
            **self.accuracy.summary(self.cfg.scenario),
            "phase_history": [e.model_dump(mode="json") for e in self.machine.history],
            "simulated_s": self.sim.t,
            "neurons_assigned": self.neurons_assigned,
            "wall_s": time.perf_counter() - self.wall0,
            "consolidation": {
                "ewc": self.cfg.ewc.enabled,
                "sleep": self.cfg.sleep.enabled,
                "replay": bool(self.replay),
            },
            **({"replay": self.replay.buffer.summary(self.readout.n_classes)} if self.replay is not None else {}),
            "sleep": [e.model_dump(mode="json", exclude={"run_id", "wall_time"}) for e in self.sleeper.diagnostics],
            **({"control": self.control} if self.control is not None else {}),
            **({"task_free": self.task_free} if self.task_free is not None else {}),
        }

    def write_results(self, status: str) -> None:
        """Write ``results.json`` (atomically) with ``status``."""
        write_json(self.out_dir / "results.json", self.results(status))

    async def run(self, *, resume: bool = False) -> dict[str, Any]:
        """Run the whole schedule; returns the results (also in ``results.json``, rewritten after every
        evaluation). A checkpoint is saved after every WAKE block (``out_dir/checkpoint``); with
        ``resume`` the run goes on from it (``neurosim.phases.checkpoint``)."""
        blocks = [Block(Phase(b.phase), b.task, b.duration) for b in self.cfg.resolved_schedule()]
        done = 0
        if resume:
            if self.cfg.task_free is not None:
                raise CheckpointError("a task-free run has no schedule blocks to resume at: run it again")
            done = load_experiment(self, self.out_dir / CHECKPOINT_DIR)
        else:
            await self.machine.start(reason="experiment start")
        try:
            if self.cfg.task_free is not None:
                self.task_free = await self._learn_stream()
            else:
                bar = tqdm(total=len(blocks), initial=done, desc="schedule", disable=not self.progress, unit="phase")
                await self.orchestrator.run(
                    checkpointed(self, blocks, done, self.out_dir / CHECKPOINT_DIR, lambda: bar.update(1)),
                    self,
                    [t.task_id for t in self.tasks],
                )
        except BaseException as err:
            failed = {**self.results("failed"), "error": f"{type(err).__name__}: {err}"}
            write_json(self.out_dir / "results.json", failed)
            raise
        finally:
            self.fisher.close()
        self.write_results("completed")
        return self.results("completed")


def build_layer(cfg: ContinualConfig, n_inputs: int, backend: Backend,
                dtype: torch.dtype) -> tuple[Simulation, LayerPresenter]:  # fmt: skip
    """The Diehl & Cook layer of ``cfg`` (starting at rest), its simulation and presenter."""
    net = cfg.network
    layer = DiehlCookLayer(n_inputs, net.n_hidden, net.w_init_max, net.exc_to_inh, net.inh_to_exc, net.theta_init,
                           net.theta_plus, v_init_exc=-65 * mV, v_init_inh=-60 * mV)  # fmt: skip
    sim = Simulation(diehl_cook_network(layer, cfg.seed, dtype=dtype), dt=cfg.dt, seed=cfg.seed, backend=backend,
                     dtype=dtype)  # fmt: skip
    d = cfg.data
    presenter = LayerPresenter(sim, max_rate=d.max_rate, present=d.present, rest=d.rest,
                               weight_sum=net.weight_sum or 78.0 * (n_inputs / 784) ** 0.5)  # fmt: skip
    presenter.normalise()
    return sim, presenter


def online_fisher_ewc(cfg: ContinualConfig, out_dir: Path, metrics: Metrics) -> OnlineFisherEWC:
    """The per-task Fisher accumulators and the EWC pull of ``cfg`` (EWC off: lambda 0, the
    Fisher still kept for sleep protection and diagnostics)."""
    return OnlineFisherEWC(cfg.ewc.regulariser(), store=DirectoryFisherStore(out_dir / "fisher", keep_last=3),
                           accumulator=cfg.fisher.accumulator(), metrics=metrics)  # fmt: skip


def training_order(
    tasks: list[Task], task_index: int, per_task: int, seed: int, *, joint: bool
) -> list[tuple[int, int]]:
    """(task, image index) pairs of a LEARNING block: the task's first ``per_task`` training
    images in a seeded order; with ``joint``, every task's, interleaved."""
    pairs = []
    for t in range(len(tasks)) if joint else [task_index]:
        n = min(per_task, len(tasks[t].train))
        order = np.random.default_rng(seed + 1000 * t).permutation(len(tasks[t].train))[:n]
        pairs += [(t, int(i)) for i in order]
    if joint:
        shuffle = np.random.default_rng([seed, 999]).permutation(len(pairs))
        pairs = [pairs[k] for k in shuffle]
    return pairs


def task_free_summary(drifts: list[int], boundaries: list[int]) -> dict[str, Any]:
    """Each true task boundary's first drift at or after it (before the next boundary): found
    or missed, and how late (images); drifts matched to no boundary are false alarms."""
    found: list[int | None] = []
    matched: set[int] = set()
    for k, b in enumerate(boundaries):
        end = boundaries[k + 1] if k + 1 < len(boundaries) else None
        hit = next((d for d in drifts if d >= b and (end is None or d < end) and d not in matched), None)
        found.append(None if hit is None else hit - b)
        if hit is not None:
            matched.add(hit)
    delays = [d for d in found if d is not None]
    return {
        "boundaries": boundaries,
        "drifts": drifts,
        "delay_images": found,
        "found": len(delays),
        "missed": len(boundaries) - len(delays),
        "false_alarms": len([d for d in drifts if d not in matched]),
        "mean_delay_images": float(np.mean(delays)) if delays else None,
    }


CONTROL_KEYS = ("average_accuracy", "bwt", "average_accuracy_task_incremental", "bwt_task_incremental")


def run_experiment(
    cfg: ContinualConfig,
    out_dir: Path,
    *,
    progress: bool = True,
    run_id: str = "run",
    mqtt: BrokerSettings | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run the experiment in a fresh event loop (``run_experiment_async`` inside a running
    one, as in Jupyter); writes results.json and the plots."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(
            run_experiment_async(cfg, out_dir, progress=progress, run_id=run_id, mqtt=mqtt, resume=resume)
        )
    raise RuntimeError(
        "run_experiment() was called inside a running event loop (a notebook, an async application): "
        "use `await run_experiment_async(...)` there"
    )


async def run_experiment_async(
    cfg: ContinualConfig,
    out_dir: Path,
    *,
    progress: bool = True,
    run_id: str = "run",
    mqtt: BrokerSettings | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """The experiment on the running event loop: results.json and the plots in ``out_dir``.
    With ``mqtt``, its phases, spikes and evaluations are published live under
    ``neurosim/{run_id}/``.

    With ``cfg.control`` and a consolidation that acts (``cfg.consolidates()``), the
    no-consolidation control runs afterwards in ``out_dir/control`` (same seed, same data;
    its own event bus and metrics, nothing published) and ``results.json`` gains
    ``"control"`` with its averages and BWT.

    ``resume``: go on from the checkpoints in ``out_dir`` (and ``out_dir/control``) of an
    interrupted run of the same config."""
    experiment = Experiment(cfg, out_dir, progress=progress, run_id=run_id)
    control: dict[str, Any] | None = None
    try:
        if mqtt is None:
            results = await experiment.run(resume=resume)
        else:
            async with MQTTPublisher(mqtt, run_id, experiment.bus) as publisher:
                await publisher.ready()
                results = await experiment.run(resume=resume)
        if cfg.control and cfg.consolidates():
            baseline = Experiment(
                cfg.without_consolidation(),
                out_dir / "control",
                progress=progress,
                run_id=f"{run_id}-control",
                metrics=Metrics(CollectorRegistry()),
            )
            control_results = await baseline.run(resume=resume and (out_dir / "control" / CHECKPOINT_DIR).is_dir())
            control = {key: control_results[key] for key in CONTROL_KEYS}
            control["accuracy_matrix"] = control_results["accuracy_matrix"]
            control["final_confusion_class_incremental"] = control_results["final_confusion_class_incremental"]
            for key, suffix in (("final_outcomes", ""), ("final_outcomes_task_incremental", "_task_incremental")):
                if results[key] and control_results[key]:  # empty only when resumed from an older checkpoint
                    paired = paired_comparison(results[key], control_results[key])  # the same test images
                    control[f"paired{suffix}"] = paired.as_json()
            results["control"] = control
            experiment.control = control
            write_json(out_dir / "results.json", results)
    finally:
        if experiment.sleeper.replays:
            write_replays(out_dir / REPLAY_FILE, experiment.sleeper.replays)
        if (out_dir / "results.json").exists():
            plot_experiment(out_dir)
    return results
