"""``PhaseMachine``: the WAKE / LEARNING / SLEEP state machine, asyncio-native.

Allowed transitions (anything else raises ``InvalidTransition`` and changes nothing)::

    WAKE -> LEARNING, LEARNING -> WAKE, WAKE -> SLEEP, LEARNING -> SLEEP, SLEEP -> WAKE

A transition, under the machine's lock (concurrent requests run one after the other):

1. check the edge (and that LEARNING names a task);
2. await the exit listeners of the current phase, in registration order; if one raises,
   the transition is abandoned: the phase is unchanged, no event, ``ListenerError``;
3. switch the phase, record the transition in ``history``, publish a ``PhaseEvent`` on
   the event bus;
4. await the enter listeners of the new phase; if one raises, the machine stays in the new
   phase (it was entered and announced) and ``ListenerError`` is raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from neurosim.events import schema  # a module reference: schema imports Phase from this package
from neurosim.events.bus import EventBus
from neurosim.phases.phase import ALLOWED_TRANSITIONS, Phase

if TYPE_CHECKING:
    from neurosim.events.schema import Event, PhaseEvent
    from neurosim.metrics import Metrics

Listener = Callable[["PhaseEvent"], Awaitable[None]]


class InvalidTransition(ValueError):
    """A transition outside the allowed graph; the machine did not change."""

    def __init__(self, current: Phase, target: Phase) -> None:
        allowed = sorted(t.value for s, t in ALLOWED_TRANSITIONS if s is current)
        super().__init__(
            f"cannot go from {current.value} to {target.value}; from {current.value}: {', '.join(allowed)}"
        )
        self.current = current
        self.target = target


class ListenerError(RuntimeError):
    """A phase listener raised; the cause is chained."""


class PhaseMachine:
    """The WAKE / LEARNING / SLEEP state machine (see the module docs): serialised transitions, async listeners
    on exit and on enter, a ``PhaseEvent`` per transition on the bus."""

    def __init__(
        self,
        *,
        run_id: str = "run",
        initial: Phase = Phase.WAKE,
        bus: EventBus[PhaseEvent] | EventBus[Event] | None = None,
        sim_time: Callable[[], float] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.run_id = run_id
        from neurosim.metrics import METRICS  # here: neurosim.metrics imports this package's Phase

        self.metrics = metrics if metrics is not None else METRICS
        # the run's bus (every event kind) or one of its own (phase events only)
        self.bus: EventBus[PhaseEvent] | EventBus[Event] = bus if bus is not None else EventBus()
        self._sim_time = sim_time or (lambda: 0.0)
        self._phase = Phase(initial)
        self._task: str | None = None
        self._lock = asyncio.Lock()
        self._on_enter: dict[Phase, list[Listener]] = {p: [] for p in Phase}
        self._on_exit: dict[Phase, list[Listener]] = {p: [] for p in Phase}
        self.history: list[PhaseEvent] = []

    def sim_time(self) -> float:
        """The simulated time now (s), from the clock the machine was given."""
        return self._sim_time()

    @property
    def phase(self) -> Phase:
        """The current phase."""
        return self._phase

    @property
    def task(self) -> str | None:
        """The task being learned (LEARNING) or the last one learned."""
        return self._task

    def on_enter(self, phase: Phase, listener: Listener) -> None:
        """Run ``listener`` (async) after every transition into ``phase``."""
        self._on_enter[Phase(phase)].append(listener)

    def on_exit(self, phase: Phase, listener: Listener) -> None:
        """Run ``listener`` (async) before every transition out of ``phase``."""
        self._on_exit[Phase(phase)].append(listener)

    def _event(self, phase: Phase, previous: Phase | None, task: str | None, reason: str) -> PhaseEvent:
        return schema.PhaseEvent(
            run_id=self.run_id,
            sequence=len(self.history),
            phase=phase,
            previous=previous,
            task=task,
            reason=reason,
            sim_time_s=max(0.0, float(self._sim_time())),
            wall_time=time.time(),
        )

    def _record(self, event: PhaseEvent) -> None:
        self.history.append(event)
        self.metrics.observe_transition(event.previous, event.phase)
        self.bus.publish(event)

    def restore(self, history: list[PhaseEvent]) -> None:
        """Take up a run's history again (resuming from a checkpoint): the phase and task are
        those of its last event; nothing is published and no listener runs."""
        if self.history:
            raise RuntimeError("PhaseMachine.restore() on a machine that has started")
        if not history:
            raise ValueError("restore() needs the history of a started machine")
        self.history = list(history)
        self._phase, self._task = history[-1].phase, history[-1].task

    async def start(self, reason: str = "start") -> PhaseEvent:
        """Announce the initial phase (sequence 0); call once before the first transition."""
        async with self._lock:
            if self.history:
                raise RuntimeError("PhaseMachine.start() was already called")
            event = self._event(self._phase, None, self._task, reason)
            self._record(event)
            await self.bus.give_way()
            await self._run(self._on_enter[self._phase], event, "enter")
            return event

    async def transition(self, target: Phase, *, task: str | None = None, reason: str = "") -> PhaseEvent:
        """Move to ``target`` (for LEARNING, on ``task``): exit listeners, the event, enter listeners;
        ``InvalidTransition`` (nothing changed) for a move the phase semantics forbid."""
        target = Phase(target)
        async with self._lock:
            current = self._phase
            if (current, target) not in ALLOWED_TRANSITIONS:
                raise InvalidTransition(current, target)
            if target is Phase.LEARNING and not task:
                raise ValueError("a LEARNING phase needs the task it learns (task=...)")
            event = self._event(target, current, task if target is Phase.LEARNING else self._task, reason)
            await self._run(self._on_exit[current], event, "exit")
            # the phase changes now, once the exit listeners are done: that is the event's time
            event = event.model_copy(update={"wall_time": time.time()})
            self._phase = target
            if target is Phase.LEARNING:
                self._task = task
            self._record(event)
            await self.bus.give_way()
            await self._run(self._on_enter[target], event, "enter")
            return event

    @staticmethod
    async def _run(listeners: list[Listener], event: PhaseEvent, when: str) -> None:
        for listener in listeners:
            try:
                await listener(event)
            except Exception as err:
                name = getattr(listener, "__qualname__", repr(listener))
                side = event.previous.value if when == "exit" and event.previous else event.phase.value
                raise ListenerError(f"{when} listener {name} of {side} failed: {err}") from err
