"""``SpikeStream``: puts every chunk's spikes on the event bus, one ``SpikeBatch`` per population.

A chunk hook, so it works on both engine paths (the compiled one included) and never adds
work inside the step loop::

    bus: EventBus[Event] = EventBus()
    SpikeStream(bus).attach(sim)              # every neuron population
    SpikeStream(bus, ["exc", "input"]).attach(sim)   # chosen sources, inputs included

A population that did not spike in a chunk still gets its (empty) batch, so a reader always
knows how far the run has got.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from neurosim.events.bus import EventBus
from neurosim.events.schema import Event
from neurosim.events.wire import SpikeBatch
from neurosim.sim.monitors import ChunkResult

if TYPE_CHECKING:
    from neurosim.sim.engine import Simulation


class SpikeStream:
    """Publishes each chunk's spikes on ``bus`` as one ``SpikeBatch`` per population (see the module docs)."""

    def __init__(self, bus: EventBus[Event], populations: Sequence[str] | None = None) -> None:
        self.bus = bus
        self.populations = list(populations) if populations is not None else None
        self.batches = 0

    def attach(self, sim: Simulation) -> SpikeStream:
        """Publish ``sim``'s spikes from now on (a chunk hook); refuses unknown sources."""
        sources = set(sim.network.source_names())
        if self.populations is None:
            self.populations = list(sim.network.populations)
        unknown = sorted(set(self.populations) - sources)
        if unknown:
            raise ValueError(f"cannot stream spikes of {unknown}: the network's sources are {sorted(sources)}")
        sim.add_chunk_hook(self)
        return self

    def __call__(self, result: ChunkResult) -> None:
        if not self.bus.subscribers:  # nobody listening: skip building the batches
            return
        for population in self.populations or ():
            self.bus.publish(SpikeBatch.from_chunk(result, population))
            self.batches += 1
