"""The simulator: neuron models, inputs, projections, the network, the engine, monitors."""

from neurosim.sim.engine import AsyncHookInSyncRun, Backend, RunStats, Simulation, StepContext
from neurosim.sim.inputs import CurrentInput, PoissonDrive, PoissonInput, SpikeArrayInput
from neurosim.sim.monitors import ChunkResult, SpikeChunk, SpikeMonitor, StateMonitor, WeightMonitor
from neurosim.sim.network import Network, Normal, Population, Uniform
from neurosim.sim.neurons import (
    AdaptiveLIF,
    AdaptiveLIFState,
    ConductanceLIF,
    CurrentLIF,
    LIFState,
    NeuronKind,
    step,
)
from neurosim.sim.synapses import Channel, Projection, Propagation, WeightFormat

__all__ = [
    "AdaptiveLIF",
    "AdaptiveLIFState",
    "AsyncHookInSyncRun",
    "Backend",
    "Channel",
    "ChunkResult",
    "ConductanceLIF",
    "CurrentInput",
    "CurrentLIF",
    "LIFState",
    "Network",
    "NeuronKind",
    "Normal",
    "PoissonDrive",
    "PoissonInput",
    "Population",
    "Projection",
    "Propagation",
    "RunStats",
    "Simulation",
    "SpikeArrayInput",
    "SpikeChunk",
    "SpikeMonitor",
    "StateMonitor",
    "StepContext",
    "Uniform",
    "WeightFormat",
    "WeightMonitor",
    "step",
]
