"""What each phase does: the one module that binds the consolidation layer to the
``PhaseMachine`` (``docs/phases.md`` is its prose form).

- **LEARNING(task)**, on entering: the task's Fisher accumulator begins
  (``OnlineFisherEWC.begin_task``) and the learner feeds it the step's surrogate gradients;
  the EWC pull of the tasks consolidated so far is applied by the learner; plasticity on.
  The experiment then presents the task's data (``PhaseWork.learn``).
- **leaving LEARNING** (a learning boundary): plasticity off; EWC consolidation of the task
  (``end_task``: a Fisher snapshot forced now, the anchor = the weights now).
- **SLEEP**, on entering: ``force_snapshot`` of every accumulator with unsnapshotted steps;
  then replay (``PhaseWork.sleep``: the network driven by stored statistics or episodes,
  the sleep rule reshaping the weights); afterwards the latest anchor moves to the
  consolidated weights (``recentre``), so later tasks do not pull sleep back out.
- **WAKE**: plasticity and threshold adaptation off; every task seen so far is evaluated
  (``PhaseWork.evaluate``).

Blocks come from a schedule (``run``), or, task-free, from a drift detector on a stream
(``run_task_free``): a detected drift closes the LEARNING block (its consolidation), and a
SLEEP and a WAKE follow before learning goes on as a new block, with no task labels.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from neurosim.events.bus import EventBus
from neurosim.events.schema import DriftEvent, Event, PhaseEvent
from neurosim.learning.drift import PageHinkley
from neurosim.learning.ewc import OnlineFisherEWC
from neurosim.learning.fisher import SnapshotReason
from neurosim.learning.learner import STDPOnlineLearner
from neurosim.phases.machine import PhaseMachine
from neurosim.phases.phase import Phase


class PhaseWork(Protocol):
    """What an experiment does inside the phases (the orchestrator does the rest)."""

    async def learn(self, task: int) -> None:
        """Learn task ``task``'s training images (LEARNING)."""

    async def sleep(self, duration: float | None, *, within: str | None = None) -> None:
        """Sleep replay for ``duration`` seconds (default the config's); ``within`` names the phase a nap
        interrupts."""

    async def evaluate(self) -> None:
        """Evaluate every task seen so far (WAKE)."""


@dataclass(frozen=True)
class Block:
    """One scheduled phase: LEARNING of ``task`` (an index into ``task_ids``), SLEEP of
    ``duration`` s (None: the sleep's own default), or WAKE."""

    phase: Phase
    task: int | None = None
    duration: float | None = None


class PhaseOrchestrator:
    """Binds a learner and its online-Fisher EWC to a ``PhaseMachine`` (see the module docs)."""

    def __init__(self, machine: PhaseMachine, learner: STDPOnlineLearner, fisher: OnlineFisherEWC, *,
                 bus: EventBus[Event] | None = None) -> None:  # fmt: skip
        """``bus`` (the run's): where drift events go."""
        self.machine = machine
        self.bus = bus
        self.learner = learner
        self.fisher = fisher
        learner.enabled = False
        machine.on_enter(Phase.LEARNING, self._enter_learning)
        machine.on_exit(Phase.LEARNING, self._leave_learning)
        machine.on_enter(Phase.SLEEP, self._enter_sleep)

    def parameters(self) -> dict[str, torch.Tensor]:
        """The learned parameters by name (the plastic projection's weights)."""
        return {self.learner.parameter_name: self.learner.projection.synapse_weights()}

    async def _enter_learning(self, event: PhaseEvent) -> None:
        if not event.task:
            raise ValueError("a LEARNING phase needs a task id")
        self.fisher.begin_task(event.task, self.parameters())
        self.learner.accumulator = self.fisher.accumulator
        self.learner.regulariser = self.fisher if self.fisher.active else None
        self.learner.enabled = True

    async def _leave_learning(self, event: PhaseEvent) -> None:
        self.learner.enabled = False
        self.learner.accumulator = None
        await self.fisher.end_task_async(event.task or "", self.parameters())

    async def _enter_sleep(self, event: PhaseEvent) -> None:
        await self.fisher.snapshot_pending_async(SnapshotReason.SLEEP)

    def after_sleep(self) -> None:
        """The consolidated weights become the latest anchor."""
        tasks = self.fisher.regulariser.tasks
        if tasks:
            self.fisher.regulariser.recentre(tasks[-1], self.parameters())

    async def nap(self, replay: Callable[[], Awaitable[None]]) -> None:
        """A sleep inside LEARNING (Golden et al. 2022): plasticity paused, no phase change,
        the anchors kept."""
        self.learner.enabled = False
        try:
            await replay()
        finally:
            self.learner.enabled = True

    async def run_block(self, block: Block, work: PhaseWork, task_ids: Sequence[str]) -> None:
        """Run one schedule block: the transition, then what its phase does."""
        task = task_ids[block.task] if block.task is not None else None
        await self.machine.transition(block.phase, task=task, reason="schedule")
        if block.phase is Phase.LEARNING and block.task is not None:
            await work.learn(block.task)
        elif block.phase is Phase.SLEEP:
            await work.sleep(block.duration)
            self.after_sleep()
        else:
            await work.evaluate()

    async def run(self, blocks: Iterable[Block], work: PhaseWork, task_ids: Sequence[str]) -> None:
        """Every block of a schedule, in order."""
        for block in blocks:
            await self.run_block(block, work, task_ids)

    async def run_task_free(
        self,
        stream: AsyncIterator[float],
        detector: PageHinkley,
        work: PhaseWork,
        *,
        sleep: bool = True,
        sleep_duration: float | None = None,
        block_name: Callable[[int], str] = lambda k: f"block-{k}",
    ) -> list[int]:
        """Task-free continual learning: LEARNING blocks named ``block_name(k)``; each item of
        ``stream`` is a sample presented and learned, and the signal the detector watches. At
        a drift: the block is consolidated (leaving LEARNING), SLEEP (with ``sleep``), WAKE,
        and a new block begins. Returns the stream positions of the drifts."""
        block = 0
        position = 0
        drifts: list[int] = []
        await self.machine.transition(Phase.LEARNING, task=block_name(block), reason="task-free stream")
        async for value in stream:
            if detector.update(value):
                drifts.append(position)
                if self.bus is not None:
                    self.bus.publish(DriftEvent(
                        run_id=self.machine.run_id, block=block_name(block), position=position, value=value,
                        statistic=detector.evidence, sim_time_s=self.machine.sim_time(), wall_time=time.time(),
                    ))  # fmt: skip
                if sleep:
                    await self.machine.transition(Phase.SLEEP, reason=f"drift at sample {position}")
                    await work.sleep(sleep_duration)
                    self.after_sleep()
                await self.machine.transition(Phase.WAKE, reason=f"drift at sample {position}")
                await work.evaluate()
                block += 1
                await self.machine.transition(Phase.LEARNING, task=block_name(block), reason="new block")
            position += 1
        await self.machine.transition(Phase.WAKE, reason="end of stream")
        await work.evaluate()
        return drifts
