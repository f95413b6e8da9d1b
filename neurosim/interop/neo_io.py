"""Spikes as Neo objects (Garcia et al. 2014, Front. Neuroinform. 8:10), the data model of
Elephant and most Python spike-train analysis.

``to_block(outputs)`` gives one ``neo.Block``: a ``Segment`` per batch instance holding one
``SpikeTrain`` per recorded neuron (silent ones included, so rates average over the
population), times in seconds with ``quantities`` units attached, ``t_stop`` the simulated
duration, and each train annotated with its ``population``, ``index`` and ``instance``; a
``neo.Group`` per population collects its trains across segments. ``outputs`` is a run's
output directory (``RunOutputs.read``) or a ``Simulation`` with spike monitors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from neurosim.interop.run_outputs import RunOutputs
from neurosim.sim.monitors import SpikeMonitor, SpikeTrains

if TYPE_CHECKING:
    import neo

    from neurosim.sim.engine import Simulation

__all__ = ["spike_trains", "to_block"]


def spike_trains(
    trains: SpikeTrains,
    n: int,
    t_stop: float,
    *,
    population: str,
    instance: int = 0,
    indices: Sequence[int] | None = None,
) -> list[neo.SpikeTrain]:
    """One ``neo.SpikeTrain`` per neuron of ``indices`` (default all ``n``) of one instance."""
    import neo
    import quantities as pq

    mine = trains.instances == instance
    times, which = trains.times[mine], trains.indices[mine]
    order = np.argsort(which, kind="stable")
    times, which = times[order], which[order]
    bounds = np.searchsorted(which, np.arange(n + 1))
    return [
        neo.SpikeTrain(
            np.sort(times[bounds[i] : bounds[i + 1]]) * pq.s,
            t_start=0.0 * pq.s,
            t_stop=t_stop * pq.s,
            name=f"{population}[{i}]",
            population=population,
            index=i,
            instance=instance,
        )
        for i in (range(n) if indices is None else (int(k) for k in indices))
    ]


def to_block(outputs: RunOutputs | Simulation | str | Path, *, name: str = "neurosim run") -> neo.Block:
    """A ``neo.Block`` of every recorded population's spike trains (see the module docs)."""
    import neo

    spikes, sizes, duration, batch, recorded = _spikes_of(outputs)
    block = neo.Block(name=name)
    groups = {population: neo.Group(name=population) for population in spikes}
    for instance in range(batch):
        segment = neo.Segment(name=f"instance {instance}", index=instance)
        for population, trains in spikes.items():
            made = spike_trains(
                trains,
                sizes[population],
                duration,
                population=population,
                instance=instance,
                indices=recorded.get(population),
            )
            segment.spiketrains.extend(made)
            groups[population].spiketrains.extend(made)
        block.segments.append(segment)
    block.groups.extend(groups.values())
    block.check_relationships()
    return block


_Spikes = tuple[dict[str, SpikeTrains], dict[str, int], float, int, dict[str, Sequence[int]]]


def _spikes_of(outputs: RunOutputs | Simulation | str | Path) -> _Spikes:
    """(trains, sizes, duration, batch, recorded indices where a monitor recorded a subset)."""
    if isinstance(outputs, str | Path):
        outputs = RunOutputs.read(outputs)
    if isinstance(outputs, RunOutputs):
        return outputs.spikes, outputs.sizes, outputs.duration_s, outputs.batch, {}
    monitors = {m.source: m for m in outputs.monitors if isinstance(m, SpikeMonitor)}
    if not monitors:
        raise ValueError("the simulation has no SpikeMonitor: add one before running to export its spikes")
    spikes = {name: m.trains() for name, m in monitors.items()}
    sizes = {name: outputs.network.source_size(name) for name in monitors}
    subsets: dict[str, Sequence[int]] = {
        name: [int(i) for i in m.recorded_indices] for name, m in monitors.items() if m.recorded_indices is not None
    }
    return spikes, sizes, outputs.t, outputs.batch, subsets
