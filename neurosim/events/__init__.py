"""Events: the in-process bus and the event models."""

from neurosim.events.bus import EventBus, Subscription
from neurosim.events.schema import PhaseEvent

__all__ = ["EventBus", "PhaseEvent", "Subscription"]
