"""The network: neuron populations, inputs and projections, checked as they are added."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from neurosim.sim.inputs import CurrentInput, PoissonDrive, SpikeSource
from neurosim.sim.neurons import STATE_VARIABLES, NeuronParams
from neurosim.sim.synapses import Projection
from neurosim.units import MEMBRANE_POTENTIAL, to_si

# state variables whose initial values are voltages (the others: conductances, counters)
_VOLTAGE_STATE = ("v", "theta")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class Uniform:
    """Initial value drawn uniformly in ``[low, high)`` per neuron and instance."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.high >= self.low:
            raise ValueError(f"Uniform initialiser needs low <= high, got low={self.low}, high={self.high}")


@dataclass(frozen=True)
class Normal:
    """Initial value drawn from a normal distribution ``N(mean, std**2)`` per neuron and instance
    (Potjans & Diesmann 2014 start their membrane potentials this way)."""

    mean: float
    std: float

    def __post_init__(self) -> None:
        if not self.std >= 0:
            raise ValueError(f"Normal initialiser needs std >= 0, got std={self.std}")


InitialValue = float | Uniform | Normal


@dataclass
class Population:
    """``n`` neurons of one model (``params``) with optional initial values per state variable (numbers,
    unit strings, ``Uniform`` or ``Normal``)."""

    name: str
    n: int
    params: NeuronParams
    initial: dict[str, InitialValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError(f"population {self.name!r}: n must be positive, got {self.n}")
        allowed = STATE_VARIABLES[self.params.kind]
        for var in self.initial:
            if var not in allowed:
                raise ValueError(
                    f"population {self.name!r}: unknown state variable {var!r} in initial values; "
                    f"{type(self.params).__name__} has {', '.join(allowed)}"
                )
        self.initial = dict(self.initial)  # converted below: the caller's mapping stays as it was
        for var in _VOLTAGE_STATE:  # 20*mV or "20 mV" as well as 0.02
            if var in self.initial:
                spec, where = self.initial[var], f"population {self.name!r}: initial {var}"
                if isinstance(spec, Uniform):
                    low, high = to_si(spec.low, MEMBRANE_POTENTIAL, where), to_si(spec.high, MEMBRANE_POTENTIAL, where)
                    self.initial[var] = Uniform(low, high)
                elif isinstance(spec, Normal):
                    mean = to_si(spec.mean, MEMBRANE_POTENTIAL, where)
                    self.initial[var] = Normal(mean, to_si(spec.std, MEMBRANE_POTENTIAL, where))
                else:
                    self.initial[var] = to_si(spec, MEMBRANE_POTENTIAL, where)

    def draw_initial(self, var: str, rng: np.random.Generator, default: float) -> np.ndarray:
        """Initial values of ``var`` for the population's neurons (``default`` where none is given)."""
        spec = self.initial.get(var, default)
        if isinstance(spec, Uniform):
            return rng.uniform(spec.low, spec.high, size=self.n)
        if isinstance(spec, Normal):
            return rng.normal(spec.mean, spec.std, size=self.n)
        return np.full(self.n, float(spec))


class Network:
    """Container with name checks; the engine (``Simulation``) owns all run-time state."""

    def __init__(self) -> None:
        self.populations: dict[str, Population] = {}
        self.inputs: dict[str, SpikeSource] = {}
        self.currents: dict[str, CurrentInput] = {}
        self.drives: dict[str, PoissonDrive] = {}
        self.projections: dict[str, Projection] = {}

    def _check_new_name(self, kind: str, name: str) -> None:
        if not _NAME.match(name):
            raise ValueError(
                f"{kind} name {name!r} must start with a letter or '_' and contain only letters, digits, '_', '-'"
            )
        if any(
            name in group for group in (self.populations, self.inputs, self.currents, self.drives, self.projections)
        ):
            raise ValueError(f"{kind} name {name!r} is already used in this network")

    def add_population(self, population: Population) -> Population:
        """Add a population (its name must be new); returns it."""
        self._check_new_name("population", population.name)
        self.populations[population.name] = population
        return population

    def add_input(self, source: SpikeSource) -> SpikeSource:
        """Add a spike source (Poisson, spike array); returns it."""
        self._check_new_name("input", source.name)
        self.inputs[source.name] = source
        return source

    def add_current(self, current: CurrentInput) -> CurrentInput:
        """Add a current input into an existing population; returns it."""
        self._check_new_name("current input", current.name)
        target = self.populations.get(current.target)
        if target is None:
            raise ValueError(f"current input {current.name!r}: unknown target population {current.target!r}")
        current.check_size(target.n)
        self.currents[current.name] = current
        return current

    def add_drive(self, drive: PoissonDrive) -> PoissonDrive:
        """Add a Poisson drive into an existing population; returns it."""
        self._check_new_name("Poisson drive", drive.name)
        if drive.target not in self.populations:
            raise ValueError(
                f"Poisson drive {drive.name!r}: unknown target population {drive.target!r}; "
                f"known: {', '.join(self.populations) or 'none'}"
            )
        self.drives[drive.name] = drive
        return drive

    def source_size(self, name: str) -> int:
        """Number of neurons of population or input ``name``."""
        if name in self.populations:
            return self.populations[name].n
        if name in self.inputs:
            return self.inputs[name].n
        raise KeyError(name)

    def add_projection(self, projection: Projection) -> Projection:
        """Add a projection between known groups, checked against their sizes; returns it."""
        self._check_new_name("projection", projection.name)
        try:
            n_pre = self.source_size(projection.source)
        except KeyError:
            raise ValueError(
                f"projection {projection.name!r}: unknown source {projection.source!r}; "
                f"known: {', '.join(self.source_names()) or 'none'}"
            ) from None
        target = self.populations.get(projection.target)
        if target is None:
            raise ValueError(
                f"projection {projection.name!r}: unknown target population {projection.target!r}; "
                f"known: {', '.join(self.populations) or 'none'}"
            )
        if n_pre != projection.n_pre or target.n != projection.n_post:
            raise ValueError(
                f"projection {projection.name!r}: shape ({projection.n_pre}, {projection.n_post}) does not "
                f"match source {projection.source!r} ({n_pre}) and target {projection.target!r} ({target.n})"
            )
        self.projections[projection.name] = projection
        return projection

    def source_names(self) -> list[str]:
        """Every spike source in the engine's fixed order: populations, then inputs."""
        return [*self.populations, *self.inputs]
