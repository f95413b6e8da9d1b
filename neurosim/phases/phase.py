"""The three phases and the transitions allowed between them."""

from __future__ import annotations

import enum


class Phase(enum.StrEnum):
    """The three phases: WAKE (plasticity off, evaluation), LEARNING (STDP, Fisher, the pull), SLEEP
    (replay)."""

    WAKE = "wake"  # plasticity off; the network runs on input; evaluation
    LEARNING = "learning"  # STDP on, Fisher accumulation, EWC pull
    SLEEP = "sleep"  # snapshots, then replay consolidation


ALLOWED_TRANSITIONS: frozenset[tuple[Phase, Phase]] = frozenset(
    {
        (Phase.WAKE, Phase.LEARNING),
        (Phase.LEARNING, Phase.WAKE),
        (Phase.WAKE, Phase.SLEEP),
        (Phase.LEARNING, Phase.SLEEP),
        (Phase.SLEEP, Phase.WAKE),
    }
)
