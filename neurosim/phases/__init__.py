"""Phases: the WAKE / LEARNING / SLEEP machine (``machine``), what each phase does
(``orchestrator``) and the continual-learning experiment (``schedule``).

``neurosim.phases.phase`` (the ``Phase`` enum) imports nothing of the package: the names
below load their modules on first use, so ``import neurosim.phases.phase`` does not pull in
the machine, the event bus or the metrics.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from neurosim.phases.machine import InvalidTransition, ListenerError, PhaseMachine
    from neurosim.phases.orchestrator import PhaseOrchestrator
    from neurosim.phases.phase import ALLOWED_TRANSITIONS, Phase

_WHERE = {
    "ALLOWED_TRANSITIONS": "neurosim.phases.phase",
    "Phase": "neurosim.phases.phase",
    "InvalidTransition": "neurosim.phases.machine",
    "ListenerError": "neurosim.phases.machine",
    "PhaseMachine": "neurosim.phases.machine",
    "PhaseOrchestrator": "neurosim.phases.orchestrator",
}

__all__ = ["ALLOWED_TRANSITIONS", "InvalidTransition", "ListenerError", "Phase", "PhaseMachine", "PhaseOrchestrator"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'neurosim.phases' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
