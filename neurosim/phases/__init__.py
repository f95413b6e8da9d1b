"""Phases: the WAKE / LEARNING / SLEEP machine."""

from neurosim.phases.machine import InvalidTransition, ListenerError, PhaseMachine
from neurosim.phases.phase import ALLOWED_TRANSITIONS, Phase

__all__ = ["ALLOWED_TRANSITIONS", "InvalidTransition", "ListenerError", "Phase", "PhaseMachine"]
