"""SLEEP of a Diehl & Cook layer experiment: what it stores for replay while awake, the
replay itself, and what each sleep leaves behind.

While the layer learns, ``remember`` keeps the input statistics of every task and class
(sums of the images shown, never the images: ``InputStatistics``). A sleep drives the layer
with them (and, optionally, with stored episodes of the replay buffer) through
``neurosim.learning.sleep.sleep_episode``: gains calibrated from the wake rate, the causal
potentiation / heterosynaptic depression rule, Fisher protection of important synapses
(Tadros et al. 2022, Nat. Commun. 13:7742). Each sleep is diagnosed (spikes per
class-assigned group, weight change of each task's most important synapses), announced on
the event bus and in Prometheus, and its replay raster kept for the plot.

A sleep draws its noise from its own stream and restores the neuron state on waking, so a
sleep that changes no weight leaves the rest of the run exactly as it would be without it:
the control "sleep with plasticity off" is then sharp.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from neurosim.config import ContinualConfig
from neurosim.events.bus import EventBus
from neurosim.events.schema import Event, SleepEvent
from neurosim.learning.ewc import OnlineFisherEWC
from neurosim.learning.sleep import InputStatistics, combine_fishers, sleep_episode, stored_drives
from neurosim.metrics import Metrics
from neurosim.phases.diagnostics import announce_sleep, diagnose_sleep
from neurosim.phases.report import Replay
from neurosim.sim.diehl_cook import LayerPresenter


class LayerSleep:
    """The sleeps of one experiment: its stored statistics, replays and diagnostics."""

    def __init__(self, cfg: ContinualConfig, presenter: LayerPresenter, *, run_id: str, metrics: Metrics,
                 bus: EventBus[Event]) -> None:  # fmt: skip
        self.cfg = cfg.sleep.sleep_config()
        self.replay_earlier_only = cfg.sleep.replay_tasks == "earlier"
        self.seed, self.max_rate, self.bounds = cfg.seed, cfg.data.max_rate, (cfg.stdp.w_min, cfg.stdp.w_max)
        self.presenter, self.run_id, self.metrics, self.bus = presenter, run_id, metrics, bus
        self.statistics = InputStatistics()  # what SLEEP replays: input sums per task and class, not the data
        self.replays: list[Replay] = []  # each sleep's replay spikes and each neuron's class then
        self.diagnostics: list[SleepEvent] = []

    def remember(self, group: int, label: int, image: npt.NDArray[np.float32]) -> None:
        """An image learned in task (or drift-delimited block) ``group`` joins what sleep replays."""
        self.statistics.add(group, label, image)

    async def replay(
        self,
        duration: float | None,
        *,
        latest: int,
        classes: list[int],
        assigned: npt.NDArray[np.int64],
        fisher: OnlineFisherEWC,
        parameter: str,
        episodes: tuple[torch.Tensor, torch.Tensor] | None = None,
        within: str | None = None,
    ) -> SleepEvent:
        """One sleep of ``duration`` s (None: the config's). ``latest``: the task learned last
        (left out with ``replay_tasks = "earlier"``); ``classes`` and ``assigned``: the classes
        seen and each neuron's class among them (sleep changes weights, not these);
        ``fisher``: the per-task Fisher of the plastic weights, named ``parameter``;
        ``episodes``: stored (inputs, labels) replayed as well; ``within``: the task a nap
        interrupts."""
        exclude = latest if self.replay_earlier_only else None
        drives, labels = stored_drives(self.statistics, self.cfg, max_rate=self.max_rate, exclude=exclude,
                                       episodes=episodes)  # fmt: skip
        if not drives:
            raise RuntimeError("SLEEP before any LEARNING: there is nothing to replay")
        presenter, sim = self.presenter, self.presenter.sim
        protection = None
        if self.cfg.fisher_protection > 0:
            tasks = [torch.from_numpy(f) for f in fisher.stored_fishers(parameter).values()]
            protection = combine_fishers(tasks, self.cfg.protection_fisher)
        with sim.detached(stream=len(self.replays) + 1):
            report = await sleep_episode(
                sim, projection=presenter.projection, inputs=presenter.inputs, statistics=drives, cfg=self.cfg,
                duration=duration or self.cfg.duration, wake_rate=presenter.training_rate_hz,
                rng=np.random.default_rng([self.seed, 7919, len(self.replays)]), fisher=protection,
                bounds=self.bounds, normalise=presenter.normalise,
                labels=labels if self.cfg.replays_by_class else None, assignments=assigned,
            )  # fmt: skip
        event = diagnose_sleep(report, run_id=self.run_id, episode=len(self.diagnostics), classes=classes,
                               assigned=assigned, fishers=fisher.stored_fishers(parameter), within=within)  # fmt: skip
        self.replays.append(Replay(report.trains.times - report.start_s, report.trains.indices, assigned))
        self.diagnostics.append(event)
        announce_sleep(event, self.metrics, self.bus)
        return event
