"""PhaseMachine and EventBus: the transition graph, events, listeners, serialisation, drops."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from neurosim.events import EventBus, PhaseEvent
from neurosim.phases import ALLOWED_TRANSITIONS, InvalidTransition, ListenerError, Phase, PhaseMachine

ALLOWED = sorted(ALLOWED_TRANSITIONS)
DISALLOWED = sorted(set(itertools.product(Phase, Phase)) - ALLOWED_TRANSITIONS)


async def _machine_in(phase: Phase) -> PhaseMachine:
    machine = PhaseMachine(run_id="r1")
    await machine.start()
    path = {Phase.WAKE: [], Phase.LEARNING: [Phase.LEARNING], Phase.SLEEP: [Phase.SLEEP]}[phase]
    for p in path:
        await machine.transition(p, task="t0")
    return machine


@pytest.mark.parametrize(("source", "target"), ALLOWED)
async def test_every_allowed_transition_works_and_emits_one_event(source: Phase, target: Phase) -> None:
    machine = await _machine_in(source)
    sub = machine.bus.subscribe()
    before = len(machine.history)
    event = await machine.transition(target, task="t1", reason="test")
    assert machine.phase is target
    assert len(machine.history) == before + 1 and machine.history[-1] == event
    assert sub.pending() == 1 and sub.get_nowait() == event
    assert (event.previous, event.phase, event.reason, event.run_id) == (source, target, "test", "r1")
    assert event.sequence == before


@pytest.mark.parametrize(("source", "target"), DISALLOWED)
async def test_every_disallowed_transition_raises_and_changes_nothing(source: Phase, target: Phase) -> None:
    machine = await _machine_in(source)
    sub = machine.bus.subscribe()
    history = list(machine.history)
    with pytest.raises(InvalidTransition, match=f"cannot go from {source.value} to {target.value}"):
        await machine.transition(target, task="t1")
    assert machine.phase is source and machine.history == history and sub.pending() == 0


async def test_learning_needs_a_task() -> None:
    machine = await _machine_in(Phase.WAKE)
    with pytest.raises(ValueError, match="needs the task"):
        await machine.transition(Phase.LEARNING)
    assert machine.phase is Phase.WAKE


async def test_concurrent_transitions_are_serialised_and_listeners_never_interleave() -> None:
    machine = await _machine_in(Phase.WAKE)
    log: list[str] = []

    def listener(tag: str):
        async def record(event: PhaseEvent) -> None:
            log.append(f"{tag} start")
            await asyncio.sleep(0.01)
            log.append(f"{tag} end")

        return record

    for phase in Phase:
        machine.on_exit(phase, listener(f"exit {phase.value}"))
        machine.on_enter(phase, listener(f"enter {phase.value}"))
    await asyncio.gather(machine.transition(Phase.LEARNING, task="a"), machine.transition(Phase.SLEEP))
    assert machine.phase is Phase.SLEEP
    assert log == [
        "exit wake start", "exit wake end", "enter learning start", "enter learning end",
        "exit learning start", "exit learning end", "enter sleep start", "enter sleep end",
    ]  # fmt: skip
    assert [e.phase for e in machine.history] == [Phase.WAKE, Phase.LEARNING, Phase.SLEEP]


async def test_failing_exit_listener_abandons_the_transition() -> None:
    machine = await _machine_in(Phase.WAKE)

    async def broken(event: PhaseEvent) -> None:
        raise OSError("disk gone")

    machine.on_exit(Phase.WAKE, broken)
    with pytest.raises(ListenerError, match=r"exit listener .*broken of wake failed: disk gone"):
        await machine.transition(Phase.SLEEP)
    assert machine.phase is Phase.WAKE and len(machine.history) == 1


async def test_failing_enter_listener_leaves_the_new_phase_entered() -> None:
    machine = await _machine_in(Phase.WAKE)

    async def broken(event: PhaseEvent) -> None:
        raise RuntimeError("boom")

    machine.on_enter(Phase.SLEEP, broken)
    with pytest.raises(ListenerError, match=r"enter listener .* of sleep failed: boom") as info:
        await machine.transition(Phase.SLEEP)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert machine.phase is Phase.SLEEP and machine.history[-1].phase is Phase.SLEEP


async def test_history_records_times_task_and_reason() -> None:
    clock = iter([0.0, 0.5, 1.25])
    machine = PhaseMachine(run_id="x", sim_time=lambda: next(clock))
    await machine.start()
    await machine.transition(Phase.LEARNING, task="digits-01", reason="schedule")
    await machine.transition(Phase.SLEEP, reason="schedule")
    assert [(e.phase, e.task, e.sim_time_s) for e in machine.history] == [
        (Phase.WAKE, None, 0.0), (Phase.LEARNING, "digits-01", 0.5), (Phase.SLEEP, "digits-01", 1.25)
    ]  # fmt: skip
    assert all(e.wall_time > 0 for e in machine.history)
    assert machine.task == "digits-01"


async def test_slow_subscriber_never_blocks_and_drops_are_counted() -> None:
    bus: EventBus[int] = EventBus()
    slow = bus.subscribe(maxsize=2)
    fast = bus.subscribe(maxsize=100)
    for k in range(10):
        bus.publish(k)  # never awaits
    assert [fast.get_nowait() for _ in range(10)] == list(range(10))
    assert [slow.get_nowait() for _ in range(2)] == [0, 1]
    assert slow.dropped == 8 and bus.dropped == 8 and bus.published == 10
    slow.close()
    bus.publish(10)
    assert bus.subscribers == 1 and fast.get_nowait() == 10


async def test_subscription_iterates_asynchronously() -> None:
    bus: EventBus[str] = EventBus()
    sub = bus.subscribe()
    received: list[str] = []

    async def reader() -> None:
        async for item in sub:
            received.append(item)
            if len(received) == 3:
                sub.close()

    task = asyncio.create_task(reader())
    for item in ("a", "b", "c"):
        bus.publish(item)
        await asyncio.sleep(0)
    await asyncio.wait_for(task, 1.0)
    assert received == ["a", "b", "c"]


async def test_a_subscriber_has_taken_the_phase_event_before_the_transition_returns() -> None:
    """The phase's work may hold the event loop right after a transition (a compiled chunk):
    the machine lets the bus's subscribers take the event first."""
    bus: EventBus[PhaseEvent] = EventBus()
    machine = PhaseMachine(run_id="r", bus=bus)
    seen: list[Phase] = []

    async def publisher() -> None:
        async for event in bus.subscribe():
            await asyncio.sleep(0)  # a publisher needs a few turns per message
            seen.append(event.phase)

    task = asyncio.create_task(publisher())
    await asyncio.sleep(0)
    await machine.start()
    await machine.transition(Phase.LEARNING, task="t")
    assert seen == [Phase.WAKE, Phase.LEARNING]  # no await between the transition and this check
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
