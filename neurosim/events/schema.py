"""Event models. ``PhaseEvent`` is what the phase machine emits on every transition."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from neurosim.phases.phase import Phase


class PhaseEvent(BaseModel):
    """One transition: from ``previous`` to ``phase`` (``previous`` is None for the first)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    sequence: int = Field(ge=0)  # 0, 1, 2, ... per machine
    phase: Phase
    previous: Phase | None
    task: str | None = None
    reason: str = ""
    sim_time_s: float = Field(ge=0.0)
    wall_time: float  # Unix time, seconds
