"""Configuration: pydantic models for a whole run, loaded from TOML and checked before
anything runs. Every error names the field (``network.populations[0].model.tau_m``) and
the reason. A plain number is SI (seconds, volts, amperes, hertz); a physical field also
takes a unit string, ``tau_m = "20 ms"``, checked for its dimension (``neurosim.units``).
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    ValidationError,
    field_validator,
    model_validator,
)

from neurosim.learning.drift import PageHinkleyConfig
from neurosim.learning.ewc import EWCConfig, EWCMode
from neurosim.learning.fisher_online import FisherAccumulatorConfig
from neurosim.learning.sleep import SleepConfig
from neurosim.learning.stdp import PairSTDP, TraceMode, TripletSTDP, WeightDependence
from neurosim.sim.engine import Backend
from neurosim.sim.neurons import AdaptiveLIF, ConductanceLIF, CurrentLIF, NeuronParams
from neurosim.sim.synapses import Channel, Propagation
from neurosim.strict import NonNegativeInt, PositiveInt, StrictModel
from neurosim.units import (
    CURRENT,
    DURATION,
    MEMBRANE_POTENTIAL,
    RATE,
    SI,
    THRESHOLD_INCREMENT,
    TIME,
    TIME_STEP,
    is_quantity,
    physical_fields,
    to_si,
)

Seconds = Annotated[NonNegativeFloat, SI(TIME)]
PositiveSeconds = Annotated[PositiveFloat, SI(TIME)]


class ConfigError(ValueError):
    """A configuration was refused; the message lists every problem, one per line."""


class _Strict(StrictModel):
    pass


# --------------------------------------------------------------------------- neuron models
# The library's parameter classes hold every default; the config models below take theirs
# from these instances, so a default is stated once (in the class a Python user builds).
_CUBA, _COBA, _ALIF = CurrentLIF(), ConductanceLIF(), AdaptiveLIF()
_PAIR, _TRIPLET = PairSTDP(), TripletSTDP()
_FISHER, _EWC = FisherAccumulatorConfig(), EWCConfig()


class _MirrorsLibrary(_Strict):
    """A config model whose fields are those of a library dataclass (``library``): unit
    strings and quantities in its ``physical`` fields are converted by that class's kinds
    (the dataclass itself warns about implausible plain numbers when it is built)."""

    library: ClassVar[type]

    @model_validator(mode="before")
    @classmethod
    def _quantities(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        kinds = physical_fields(cls.library)
        return {k: to_si(v, kinds[k], k) if k in kinds and is_quantity(v) else v for k, v in data.items()}


class _ModelConfig(_MirrorsLibrary):
    def to_params(self) -> NeuronParams:
        raise NotImplementedError

    @model_validator(mode="after")
    def _physically_valid(self) -> _ModelConfig:
        self.to_params()  # the dataclasses' own checks, reported at this field
        return self


class CurrentLIFConfig(_ModelConfig):
    """Current-based LIF (CUBA). See ``neurosim.sim.neurons.CurrentLIF``."""

    library = CurrentLIF
    kind: Literal["current_lif"]
    tau_m: PositiveFloat = _CUBA.tau_m
    v_rest: float = _CUBA.v_rest
    v_threshold: float = _CUBA.v_threshold
    v_reset: float = _CUBA.v_reset
    t_ref: NonNegativeFloat = _CUBA.t_ref
    tau_exc: PositiveFloat = _CUBA.tau_exc
    tau_inh: PositiveFloat = _CUBA.tau_inh
    r_m: PositiveFloat = _CUBA.r_m

    def to_params(self) -> NeuronParams:
        """The library's ``CurrentLIF`` with these values."""
        return CurrentLIF(**self.model_dump(exclude={"kind"}))


class ConductanceLIFConfig(_ModelConfig):
    """Conductance-based LIF (Song et al. 2000). See ``neurosim.sim.neurons.ConductanceLIF``."""

    library = ConductanceLIF
    kind: Literal["conductance_lif"]
    tau_m: PositiveFloat = _COBA.tau_m
    v_rest: float = _COBA.v_rest
    v_threshold: float = _COBA.v_threshold
    v_reset: float = _COBA.v_reset
    t_ref: NonNegativeFloat = _COBA.t_ref
    tau_exc: PositiveFloat = _COBA.tau_exc
    tau_inh: PositiveFloat = _COBA.tau_inh
    e_exc: float = _COBA.e_exc
    e_inh: float = _COBA.e_inh
    r_m: PositiveFloat = _COBA.r_m

    def to_params(self) -> NeuronParams:
        """The library's ``ConductanceLIF`` with these values."""
        return ConductanceLIF(**self.model_dump(exclude={"kind"}))


class AdaptiveLIFConfig(_ModelConfig):
    """Adaptive-threshold LIF (Diehl & Cook 2015). See ``neurosim.sim.neurons.AdaptiveLIF``."""

    library = AdaptiveLIF
    kind: Literal["adaptive_lif"]
    tau_m: PositiveFloat = _ALIF.tau_m
    v_rest: float = _ALIF.v_rest
    v_threshold: float = _ALIF.v_threshold
    v_reset: float = _ALIF.v_reset
    t_ref: NonNegativeFloat = _ALIF.t_ref
    tau_exc: PositiveFloat = _ALIF.tau_exc
    tau_inh: PositiveFloat = _ALIF.tau_inh
    e_exc: float = _ALIF.e_exc
    e_inh: float = _ALIF.e_inh
    r_m: PositiveFloat = _ALIF.r_m
    tau_theta: PositiveFloat = _ALIF.tau_theta
    theta_plus: NonNegativeFloat = _ALIF.theta_plus

    def to_params(self) -> NeuronParams:
        """The library's ``AdaptiveLIF`` with these values."""
        return AdaptiveLIF(**self.model_dump(exclude={"kind"}))


NeuronModelConfig = Annotated[CurrentLIFConfig | ConductanceLIFConfig | AdaptiveLIFConfig, Field(discriminator="kind")]


class UniformInitConfig(_Strict):
    """``v = {uniform = [-0.060, -0.050]}``: drawn per neuron and instance."""

    uniform: tuple[float, float]

    @model_validator(mode="after")
    def _ordered(self) -> UniformInitConfig:
        if self.uniform[1] < self.uniform[0]:
            raise ValueError(f"uniform bounds must be [low, high] with low <= high, got {list(self.uniform)}")
        return self


class NormalInitConfig(_Strict):
    """``v = {normal = [-0.058, 0.010]}``: ``[mean, std]``, drawn per neuron and instance."""

    normal: tuple[float, NonNegativeFloat]


class PopulationConfig(_Strict):
    """``[[network.populations]]``: a name, a size, a neuron model and optional initial values per state
    variable."""

    name: str
    n: PositiveInt
    model: NeuronModelConfig
    initial: dict[str, float | UniformInitConfig | NormalInitConfig] = Field(default_factory=dict)


# --------------------------------------------------------------------------- inputs
class PoissonInputConfig(_Strict):
    """``kind = "poisson"``: independent Poisson trains, one rate for all or one per neuron (Hz)."""

    kind: Literal["poisson"]
    name: str
    n: PositiveInt
    rates: Annotated[NonNegativeFloat | list[NonNegativeFloat], SI(RATE)]  # Hz

    @model_validator(mode="after")
    def _sized(self) -> PoissonInputConfig:
        if isinstance(self.rates, list) and len(self.rates) != self.n:
            raise ValueError(f"rates has {len(self.rates)} values for n = {self.n} neurons")
        return self


class SpikeArrayInputConfig(_Strict):
    """``kind = "spike_array"``: given spike times (s) and neuron indices."""

    kind: Literal["spike_array"]
    name: str
    n: PositiveInt
    times: Annotated[list[NonNegativeFloat], SI(TIME)] = Field(default_factory=list)  # s
    indices: list[NonNegativeInt] = Field(default_factory=list)

    @model_validator(mode="after")
    def _paired(self) -> SpikeArrayInputConfig:
        if len(self.times) != len(self.indices):
            raise ValueError(f"times ({len(self.times)}) and indices ({len(self.indices)}) must have the same length")
        if self.indices and max(self.indices) >= self.n:
            raise ValueError(f"indices must be < n = {self.n}, got {max(self.indices)}")
        return self


class CurrentInputConfig(_Strict):
    """A current (A) into ``target``: ``amplitude`` constant, or ``samples`` every ``sample_dt``."""

    kind: Literal["current"]
    name: str
    target: str
    amplitude: Annotated[float | list[float] | None, SI(CURRENT)] = None
    samples: Annotated[list[float] | list[list[float]] | None, SI(CURRENT)] = None
    sample_dt: PositiveSeconds | None = None

    @model_validator(mode="after")
    def _one_form(self) -> CurrentInputConfig:
        if (self.amplitude is None) == (self.samples is None):
            raise ValueError("give exactly one of amplitude (constant) or samples (time-varying)")
        if self.samples is not None and self.sample_dt is None:
            raise ValueError("samples need sample_dt (s)")
        return self


class PoissonDriveConfig(_Strict):
    """``kind = "poisson_drive"``: ``n`` Poisson sources of ``rate`` into every neuron of ``target``, each
    spike adding ``weight`` to its ``channel`` (Brian2's ``PoissonInput``; see ``neurosim.sim.PoissonDrive``)."""

    kind: Literal["poisson_drive"]
    name: str
    target: str
    n: NonNegativeInt
    rate: Annotated[NonNegativeFloat, SI(RATE)]  # Hz per source
    weight: float
    channel: Channel = Channel.EXC


InputConfig = Annotated[
    PoissonInputConfig | SpikeArrayInputConfig | CurrentInputConfig | PoissonDriveConfig, Field(discriminator="kind")
]


# --------------------------------------------------------------------------- projections
class ProbabilityConfig(_Strict):
    """``kind = "probability"``: each pair connected with probability ``p`` (autapses optional)."""

    kind: Literal["probability"]
    p: float = Field(ge=0.0, le=1.0)
    autapses: bool = True


class FanInConfig(_Strict):
    """``kind = "fan_in"``: each post neuron gets ``k`` distinct pre neurons at random."""

    kind: Literal["fan_in"]
    k: NonNegativeInt
    autapses: bool = True


class AllToAllConfig(_Strict):
    """``kind = "all_to_all"``: every pair (autapses optional)."""

    kind: Literal["all_to_all"]
    autapses: bool = True


class FixedTotalConfig(_Strict):
    """``kind = "fixed_total"``: ``n`` synapses, each between a pre and a post neuron drawn
    uniformly at random; a pair may be drawn more than once (multapses, as in Potjans &
    Diesmann 2014 and NEST's ``fixed_total_number``). Without ``autapses`` a drawn i -> i is
    redrawn."""

    kind: Literal["fixed_total"]
    n: NonNegativeInt
    autapses: bool = True


class OneToOneConfig(_Strict):
    """``kind = "one_to_one"``: pre neuron ``i`` to post neuron ``i`` (both groups the same size)."""

    kind: Literal["one_to_one"]


class PairsConfig(_Strict):
    """``kind = "pairs"``: explicit lists of pre and post indices."""

    kind: Literal["pairs"]
    pre: list[NonNegativeInt]
    post: list[NonNegativeInt]

    @model_validator(mode="after")
    def _paired(self) -> PairsConfig:
        if len(self.pre) != len(self.post):
            raise ValueError(f"pre ({len(self.pre)}) and post ({len(self.post)}) must have the same length")
        return self


ConnectivityConfig = Annotated[
    ProbabilityConfig | FanInConfig | AllToAllConfig | FixedTotalConfig | OneToOneConfig | PairsConfig,
    Field(discriminator="kind"),
]


class ConstantWeightConfig(_Strict):
    """``kind = "constant"``: every synapse the same weight."""

    kind: Literal["constant"]
    value: float


class UniformWeightConfig(_Strict):
    """``kind = "uniform"``: weights drawn uniformly in ``[low, high)``."""

    kind: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> UniformWeightConfig:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self


class NormalWeightConfig(_Strict):
    """``kind = "normal"``: weights drawn from a normal distribution, optionally clipped."""

    kind: Literal["normal"]
    mean: float
    std: NonNegativeFloat
    low: float | None = None
    high: float | None = None


WeightConfig = Annotated[ConstantWeightConfig | UniformWeightConfig | NormalWeightConfig, Field(discriminator="kind")]


# --------------------------------------------------------------------------- delays
class ConstantDelayConfig(_Strict):
    """``kind = "constant"``: every synapse the same delay (s); the same as a plain number."""

    kind: Literal["constant"]
    value: Seconds


class UniformDelayConfig(_Strict):
    """``kind = "uniform"``: one delay per synapse, uniform in ``[low, high)`` (s)."""

    kind: Literal["uniform"]
    low: Seconds
    high: Seconds

    @model_validator(mode="after")
    def _ordered(self) -> UniformDelayConfig:
        if self.high < self.low:
            raise ValueError(f"high ({self.high:g} s) must be >= low ({self.low:g} s)")
        return self


class NormalDelayConfig(_Strict):
    """``kind = "normal"``: one delay per synapse, normal with ``mean`` and ``std`` (s), kept at
    or above ``low`` (default: one step, ``run.dt``) and at or below ``high`` if given. A draw
    outside is drawn again (``outside = "redraw"``, NEST's ``redraw`` and the ``normal_clipped``
    of Potjans & Diesmann 2014) or set to the bound (``"clip"``)."""

    kind: Literal["normal"]
    mean: Seconds
    std: Seconds
    low: Seconds | None = None
    high: Seconds | None = None
    outside: Literal["redraw", "clip"] = "redraw"

    @model_validator(mode="after")
    def _ordered(self) -> NormalDelayConfig:
        if self.low is not None and self.high is not None and self.high < self.low:
            raise ValueError(f"high ({self.high:g} s) must be >= low ({self.low:g} s)")
        if self.outside == "redraw" and self.std == 0 and not (self.low or 0) <= self.mean <= (self.high or math.inf):
            raise ValueError(f"with std = 0 the mean ({self.mean:g} s) must lie within [low, high]")
        return self


DelayConfig = Annotated[ConstantDelayConfig | UniformDelayConfig | NormalDelayConfig, Field(discriminator="kind")]


class ProjectionConfig(_Strict):
    """``[[network.projections]]``: source, target, channel, connectivity, weights, delay (s), storage and
    propagation."""

    name: str
    source: str
    target: str
    channel: Channel = Channel.EXC
    connectivity: ConnectivityConfig
    weights: WeightConfig
    # s (a number or a unit string), or a distribution: one delay per synapse; rounded to whole steps
    delay: DelayConfig = Field(default_factory=lambda: ConstantDelayConfig(kind="constant", value=0.0))
    format: Literal["auto", "dense", "sparse"] = "auto"
    propagation: Propagation = Propagation.AUTO

    @field_validator("delay", mode="before")
    @classmethod
    def _plain_delay_is_constant(cls, value: Any) -> Any:
        return value if isinstance(value, dict | StrictModel) else {"kind": "constant", "value": value}

    def per_synapse_delays(self) -> bool:
        """Whether the delay is drawn per synapse (a distribution other than a constant)."""
        return isinstance(self.delay, UniformDelayConfig | NormalDelayConfig)

    def longest_delay(self, dt: float) -> float:
        """An upper bound of the longest delay (s) a synapse gets (mean + 6 std for an unbounded normal)."""
        d = self.delay
        if isinstance(d, ConstantDelayConfig):
            return d.value
        if isinstance(d, UniformDelayConfig):
            return d.high
        return d.high if d.high is not None else max(d.mean + 6 * d.std, d.low if d.low is not None else dt)

    @model_validator(mode="after")
    def _delays_fit(self) -> ProjectionConfig:
        if self.per_synapse_delays() and (self.format == "dense" or self.propagation is Propagation.MATMUL):
            raise ValueError("per-synapse delays need format = 'sparse' (or 'auto') and event propagation")
        return self


# --------------------------------------------------------------------------- network, run, record
class NetworkConfig(_Strict):
    """``[network]``: populations, inputs and projections, checked against each other (names, sizes)."""

    seed: NonNegativeInt | None = None  # structure (connectivity, weights); default: run.seed
    populations: list[PopulationConfig] = Field(min_length=1)
    inputs: list[InputConfig] = Field(default_factory=list)
    projections: list[ProjectionConfig] = Field(default_factory=list)

    def _duplicate_names(self) -> list[str]:
        problems: list[str] = []
        seen: dict[str, str] = {}
        groups = (("populations", self.populations), ("inputs", self.inputs), ("projections", self.projections))
        for kind, items in groups:
            for i, item in enumerate(items):
                if item.name in seen:
                    problems.append(f"{kind}[{i}].name: {item.name!r} is already used by {seen[item.name]}")
                seen[item.name] = f"{kind}[{i}]"
        return problems

    def spike_source_sizes(self) -> dict[str, int]:
        """Populations and spiking inputs by name, with their sizes."""
        sizes = {p.name: p.n for p in self.populations}
        sizes.update({i.name: i.n for i in self.inputs if isinstance(i, PoissonInputConfig | SpikeArrayInputConfig)})
        return sizes

    def _projection_problems(self, i: int, pr: ProjectionConfig) -> list[str]:
        sizes = self.spike_source_sizes()
        pops = {p.name: p.n for p in self.populations}
        problems = []
        if pr.source not in sizes:
            problems.append(
                f"projections[{i}].source: unknown population or input {pr.source!r} (known: {', '.join(sizes)})"
            )
        if pr.target not in pops:
            problems.append(f"projections[{i}].target: unknown population {pr.target!r} (known: {', '.join(pops)})")
        conn = pr.connectivity
        if isinstance(conn, OneToOneConfig) and not problems and sizes[pr.source] != pops[pr.target]:
            problems.append(
                f"projections[{i}].connectivity: one_to_one needs groups of one size, got {pr.source!r} "
                f"({sizes[pr.source]}) and {pr.target!r} ({pops[pr.target]})"
            )
        if (
            isinstance(conn, FixedTotalConfig) and not problems and conn.n and not conn.autapses
            and pr.source == pr.target and pops[pr.target] < 2
        ):  # fmt: skip
            problems.append(f"projections[{i}].connectivity: no synapse without autapses in a 1-neuron population")
        if isinstance(conn, PairsConfig) and not problems:
            if conn.pre and max(conn.pre) >= sizes[pr.source]:
                problems.append(f"projections[{i}].connectivity.pre: index >= size of {pr.source!r}")
            if conn.post and max(conn.post) >= pops[pr.target]:
                problems.append(f"projections[{i}].connectivity.post: index >= size of {pr.target!r}")
        return problems

    @model_validator(mode="after")
    def _references(self) -> NetworkConfig:
        problems = self._duplicate_names()
        pops = {p.name for p in self.populations}
        for i, inp in enumerate(self.inputs):
            if isinstance(inp, CurrentInputConfig | PoissonDriveConfig) and inp.target not in pops:
                problems.append(f"inputs[{i}].target: unknown population {inp.target!r}")
        for i, pr in enumerate(self.projections):
            problems += self._projection_problems(i, pr)
        if problems:
            raise ValueError("; ".join(problems))
        return self


MAX_STEPS = 10**9  # a run of more steps is a typo (dt in ms, duration in ms...), not a plan


class RunConfig(_Strict):
    """``[run]``: time step, duration, seed, device, dtype, batch, backend and chunk size."""

    dt: Annotated[PositiveFloat, SI(TIME_STEP)] = 1e-4  # s
    duration: Annotated[PositiveFloat, SI(DURATION)] = 1.0  # s
    seed: NonNegativeInt = 0
    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    batch: PositiveInt = 1
    backend: Backend = Backend.AUTO
    chunk_steps: PositiveInt = Field(1000, le=10**7)

    @model_validator(mode="after")
    def _steps(self) -> RunConfig:
        if self.dt > self.duration:
            raise ValueError(f"dt ({self.dt:g} s) is longer than the duration ({self.duration:g} s): nothing would run")
        steps = self.duration / self.dt
        if steps > MAX_STEPS:
            raise ValueError(f"duration / dt = {steps:.3g} steps, more than {MAX_STEPS:.0e} (a unit mix-up?)")
        return self


class StateRecordConfig(_Strict):
    """One ``[[record.state]]``: the variables of some neurons of a population, every ``every`` seconds."""

    population: str
    variables: list[str] = Field(default_factory=lambda: ["v"])
    indices: list[NonNegativeInt] = Field(default_factory=lambda: [0])
    every: PositiveSeconds = 1e-3


class RecordConfig(_Strict):
    """``[record]``: which sources' spikes to keep (default every population), state variables, a bound on
    spikes kept."""

    spikes: list[str] | None = None  # sources to record; default: every population
    state: list[StateRecordConfig] = Field(default_factory=list)
    max_spikes: PositiveInt = 20_000_000


# --------------------------------------------------------------------------- plasticity
class PairSTDPConfig(_MirrorsLibrary):
    """Pair-based STDP; see ``neurosim.learning.stdp.PairSTDP`` (defaults: Song et al. 2000)."""

    library = PairSTDP
    kind: Literal["pair"]
    tau_pre: PositiveFloat = _PAIR.tau_pre
    tau_post: PositiveFloat = _PAIR.tau_post
    a_plus: NonNegativeFloat = _PAIR.a_plus
    a_minus: NonNegativeFloat = _PAIR.a_minus
    w_min: float = _PAIR.w_min
    w_max: float = _PAIR.w_max
    dependence: WeightDependence = _PAIR.dependence
    traces: TraceMode = _PAIR.traces

    def to_rule(self) -> PairSTDP:
        """The library's ``PairSTDP`` rule with these values."""
        return PairSTDP(**self.model_dump(exclude={"kind"}))

    @model_validator(mode="after")
    def _valid(self) -> PairSTDPConfig:
        self.to_rule()
        return self


class TripletSTDPConfig(_MirrorsLibrary):
    """Triplet STDP; see ``neurosim.learning.stdp.TripletSTDP`` (Pfister & Gerstner 2006)."""

    library = TripletSTDP
    kind: Literal["triplet"]
    tau_plus: PositiveFloat = _TRIPLET.tau_plus
    tau_minus: PositiveFloat = _TRIPLET.tau_minus
    tau_x: PositiveFloat = _TRIPLET.tau_x
    tau_y: PositiveFloat = _TRIPLET.tau_y
    a2_plus: NonNegativeFloat = _TRIPLET.a2_plus
    a3_plus: NonNegativeFloat = _TRIPLET.a3_plus
    a2_minus: NonNegativeFloat = _TRIPLET.a2_minus
    a3_minus: NonNegativeFloat = _TRIPLET.a3_minus
    w_min: float = _TRIPLET.w_min
    w_max: float = _TRIPLET.w_max

    def to_rule(self) -> TripletSTDP:
        """The library's ``TripletSTDP`` rule with these values."""
        return TripletSTDP(**self.model_dump(exclude={"kind"}))

    @model_validator(mode="after")
    def _valid(self) -> TripletSTDPConfig:
        self.to_rule()
        return self


class PlasticityConfig(_Strict):
    """One ``[[plasticity]]``: an STDP rule on a projection, with a scale on its changes."""

    projection: str
    rule: Annotated[PairSTDPConfig | TripletSTDPConfig, Field(discriminator="kind")]
    scale: NonNegativeFloat = 1.0


class SimulationConfig(_Strict):
    """A whole run: ``neurosim run CONFIG`` reads one of these."""

    name: str = "neurosim run"
    description: str = ""
    run: RunConfig = Field(default_factory=RunConfig)
    network: NetworkConfig
    plasticity: list[PlasticityConfig] = Field(default_factory=list)
    record: RecordConfig = Field(default_factory=RecordConfig)

    @model_validator(mode="after")
    def _fits_in_memory(self) -> SimulationConfig:
        estimate = self.estimated_memory_bytes()
        available = _physical_memory_bytes()
        if available is not None and estimate > available:
            raise ValueError(
                f"the network needs about {estimate / 2**30:.1f} GiB (neurons, synapses, delays, batch "
                f"{self.run.batch}, recorded state), more than this machine's {available / 2**30:.1f} GiB"
            )
        return self

    def estimated_memory_bytes(self) -> int:
        """A rough lower bound of the memory a run needs: state of every neuron and input per
        instance, every synapse (dense matrices in full), delay buffers and recorded state."""
        word = 8 if self.run.dtype == "float64" else 4
        batch = self.run.batch
        sizes = self.network.spike_source_sizes()
        pops = {p.name: p.n for p in self.network.populations}
        total = sum(8 * n * batch * word for n in pops.values()) + sum(sizes.values()) * batch * word
        for pr in self.network.projections:
            n_pre, n_post = sizes.get(pr.source, 0), pops.get(pr.target, 0)
            conn = pr.connectivity
            if isinstance(conn, ProbabilityConfig):
                count = conn.p * n_pre * n_post
            elif isinstance(conn, FanInConfig):
                count = conn.k * n_post
            elif isinstance(conn, PairsConfig):
                count = len(conn.pre)
            elif isinstance(conn, FixedTotalConfig):
                count = conn.n
            elif isinstance(conn, OneToOneConfig):
                count = n_post
            else:
                count = n_pre * n_post
            per_synapse = 16 + word + (1 if pr.per_synapse_delays() else 0)  # indices, weight, delay
            total += int(n_pre * n_post * word if pr.format == "dense" else count * per_synapse)
            total += round(pr.longest_delay(self.run.dt) / self.run.dt) * n_post * batch * word * 2
        for s in self.record.state:
            total += int(self.run.duration / s.every) * len(s.indices) * len(s.variables) * batch * 8
        return int(total)

    @model_validator(mode="after")
    def _records_known(self) -> SimulationConfig:
        pops = {p.name for p in self.network.populations}
        sources = set(self.network.spike_source_sizes())
        problems = [
            f"record.spikes: unknown population or input {name!r}"
            for name in self.record.spikes or []
            if name not in sources
        ]
        problems += [
            f"record.state[{i}].population: unknown population {s.population!r}"
            for i, s in enumerate(self.record.state)
            if s.population not in pops
        ]
        problems += [
            f"record.state[{i}].every: {s.every:g} s is shorter than a step (run.dt = {self.run.dt:g} s)"
            for i, s in enumerate(self.record.state)
            if s.every < self.run.dt
        ]
        projections = {p.name: p for p in self.network.projections}
        seen: set[str] = set()
        for i, pl in enumerate(self.plasticity):
            if pl.projection not in projections:
                problems.append(f"plasticity[{i}].projection: unknown projection {pl.projection!r}")
            elif projections[pl.projection].per_synapse_delays():
                problems.append(
                    f"plasticity[{i}].projection: {pl.projection!r} has per-synapse delays, which STDP does not take"
                )
            if pl.projection in seen:
                problems.append(f"plasticity[{i}].projection: {pl.projection!r} already has a rule")
            seen.add(pl.projection)
        if problems:
            raise ValueError("; ".join(problems))
        return self


_UNION_TAGS = {
    "current_lif", "conductance_lif", "adaptive_lif", "poisson", "spike_array", "current", "probability",
    "fan_in", "all_to_all", "pairs", "constant", "uniform", "normal", "pair", "triplet", "fixed_total",
    "one_to_one", "poisson_drive",
}  # fmt: skip
_DISCRIMINATED_FIELDS = {"model", "connectivity", "weights", "rule", "delay"}


def _is_union_label(part: str, previous: str | int | None) -> bool:
    """Pydantic puts the chosen union member in the error path; readers need only fields."""
    if part in _UNION_TAGS and (previous in _DISCRIMINATED_FIELDS or isinstance(previous, int)):
        return True
    return part in {"float", "int", "str", "bool"} or part.endswith("Config") or part.startswith(("function-", "list["))


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ""
        previous: str | int | None = None
        for part in e["loc"]:
            if isinstance(part, int):
                loc += f"[{part}]"
            elif not _is_union_label(part, previous):
                loc += f".{part}" if loc else str(part)
            previous = part
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        shown = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
        lines.append(f"{loc or '<root>'}: {msg}{shown}")
    return "\n".join(lines)


def _physical_memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def parse_config(data: dict[str, Any]) -> SimulationConfig:
    """Validate a config mapping; raise ``ConfigError`` naming every bad field."""
    try:
        return SimulationConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None


def load_config(path: str | Path) -> SimulationConfig:
    """Read and validate a simulation config (TOML); ``ConfigError`` names every bad field."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config {str(p)!r}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file in UTF-8 (a TOML config is)") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: not valid TOML: {err}") from None
    return parse_config(data)


# --------------------------------------------------------------------------- continual-learning experiments
class ContinualDataConfig(_Strict):
    """``[data]`` of an experiment: the data set, tasks, images per task and how images are presented
    (rates, times)."""

    dataset: Literal["digits", "mnist-subset"] = "digits"
    n_tasks: PositiveInt = 5
    classes_per_task: PositiveInt = 2
    train_per_task: PositiveInt = 150  # training images shown per task
    test_per_task: PositiveInt = 40  # test images per task at every WAKE evaluation
    # the classes in the order the tasks take them ([8, 9, 6, 7, ...]: task 0 learns 8 and 9); None: 0, 1, 2, ...
    class_order: list[Annotated[int, Field(ge=0, le=9)]] | None = None

    @field_validator("class_order")
    @classmethod
    def _distinct(cls, order: list[int] | None) -> list[int] | None:
        if order is not None and len(set(order)) != len(order):
            raise ValueError(f"{order} lists a class more than once")
        return order

    max_rate: Annotated[PositiveFloat, SI(RATE)] = 120.0  # Hz for a pixel of intensity 1
    present: PositiveSeconds = 0.06  # per image
    rest: Seconds = 0.02  # of silence after each image


class ContinualNetworkConfig(_Strict):
    """Diehl & Cook (2015)-style layer: input -> excitatory (adaptive thresholds, plastic),
    excitatory -> inhibitory one-to-one, inhibitory -> all other excitatory neurons."""

    n_hidden: PositiveInt = 100
    w_init_max: PositiveFloat = 0.3
    exc_to_inh: PositiveFloat = 10.4
    inh_to_exc: PositiveFloat = 17.0
    weight_sum: PositiveFloat | None = None  # input weights per neuron after each image; default 78 sqrt(n_in / 784)
    theta_init: Annotated[NonNegativeFloat, SI(MEMBRANE_POTENTIAL)] = 20e-3  # V
    # V per spike, Diehl & Cook's value; with a few hundred images per task a larger one lets the other
    # neurons win and be recruited (0.1 mV for 100 neurons on digits, 1 mV for 400 on MNIST;
    # docs/consolidation-benchmark.md)
    theta_plus: Annotated[NonNegativeFloat, SI(THRESHOLD_INCREMENT)] = 0.05e-3


class ContinualFisherConfig(_Strict):
    """``FisherAccumulatorConfig`` (its defaults) for each task's accumulator."""

    alpha: float = Field(_FISHER.alpha, gt=0, le=1)
    min_samples: PositiveInt = _FISHER.min_samples
    snapshot_every: PositiveInt = _FISHER.snapshot_every
    max_staleness_steps: PositiveInt | None = None  # None: 10 x snapshot_every, as the accumulator

    def accumulator(self) -> FisherAccumulatorConfig:
        """The library's ``FisherAccumulatorConfig`` for each task's accumulator."""
        return FisherAccumulatorConfig(alpha=self.alpha, min_samples=self.min_samples,
                                       snapshot_every=self.snapshot_every,
                                       max_staleness_steps=self.max_staleness_steps)  # fmt: skip


class ContinualEWCConfig(_Strict):
    """``EWCConfig`` (its defaults) for the spiking experiment, whose Fisher is always the
    per-task online accumulator's (``online_fisher`` stays true; a full-batch Fisher is
    for PyTorch models, ``neurosim.learning.ewc.EWC``)."""

    enabled: bool = True
    lambda_: NonNegativeFloat = Field(_EWC.lambda_, alias="lambda")
    mode: Literal["separate", "online"] = _EWC.mode.value
    gamma: float = Field(_EWC.gamma, ge=0, le=1)
    online_fisher: bool = True
    pull_rate: NonNegativeFloat = _EWC.pull_rate

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("online_fisher")
    @classmethod
    def _online_only(cls, value: bool) -> bool:
        if not value:
            raise ValueError("the spiking experiment's Fisher is the online accumulator's (EWC: full-batch Fisher)")
        return value

    def regulariser(self) -> EWCConfig:
        """The library's config; ``enabled = false`` gives strength 0 (the Fisher is still kept)."""
        return EWCConfig(lambda_=self.lambda_ if self.enabled else 0.0, mode=EWCMode(self.mode), gamma=self.gamma,
                         pull_rate=self.pull_rate)  # fmt: skip


class ContinualSleepConfig(SleepConfig):
    """``SleepConfig`` plus whether the schedule sleeps at all and which tasks' statistics a
    SLEEP replays: ``all`` seen, or ``earlier`` (those before the latest LEARNING block; all
    of them while only one task has been seen)."""

    enabled: bool = True
    replay_tasks: Literal["all", "earlier"] = "all"
    # naps inside LEARNING (Golden et al. 2022 interleave sleep with new-task training): every
    # ``interleave_every`` images, ``interleave_duration`` s of the same sleep; None: no naps
    interleave_every: PositiveInt | None = None
    interleave_duration: PositiveSeconds = 1.0

    def sleep_config(self) -> SleepConfig:
        """The library's ``SleepConfig`` (without the schedule-level fields)."""
        return SleepConfig(
            **self.model_dump(exclude={"enabled", "replay_tasks", "interleave_every", "interleave_duration"})
        )


_PH = PageHinkleyConfig()


class ContinualReplayConfig(_Strict):
    """Experience replay in a spiking run: a reservoir buffer keeps ``capacity`` of the images
    shown (each kept with equal probability); with ``every``, one stored image (with its
    label) is presented again after every ``every`` new ones during LEARNING; with
    ``sleep.drive = "episodes"``, SLEEP replays the stored images (hippocampal-style replay
    of stored episodes) instead of mean images."""

    enabled: bool = False
    capacity: PositiveInt = 100
    every: PositiveInt | None = None


class TaskFreeConfig(_Strict):
    """Task-free continual learning: the tasks' images as one stream (task after task, no
    boundaries given); a Page-Hinkley test on the readout's loss per image (its
    ``-log p(label | response)`` before the image is learned) closes the LEARNING block at a
    drift, then SLEEP (if enabled) and a WAKE evaluation follow. Defaults: the detector's."""

    delta: NonNegativeFloat = _PH.delta  # tolerated rise of the mean loss (nats)
    threshold: PositiveFloat = _PH.threshold  # evidence needed (nats)
    # 60, not the detector's 30: the first classes' first images raise the loss too (the
    # readout has no neuron for them yet); chosen on validation seeds 1-2 (docs/consolidation.md)
    min_samples: PositiveInt = 60

    def detector(self) -> PageHinkleyConfig:
        """The Page-Hinkley detector's config (``PageHinkleyConfig``)."""
        return PageHinkleyConfig(delta=self.delta, threshold=self.threshold, min_samples=self.min_samples)


class ScheduleBlock(_Strict):
    """One block of an explicit schedule: a phase, its task (LEARNING) or its duration (SLEEP)."""

    phase: Literal["wake", "learning", "sleep"]
    task: NonNegativeInt | None = None  # LEARNING: index of the task
    duration: Annotated[PositiveFloat | None, SI(DURATION)] = None  # SLEEP (default: sleep.duration)


class ExperimentInfo(_Strict):
    """``[experiment]``: the experiment's name and description (its presence marks an experiment config)."""

    name: str = ""
    description: str = ""


class ContinualConfig(_Strict):
    """A continual-learning experiment: ``neurosim run`` recognises it by its ``[experiment]``."""

    experiment: ExperimentInfo = Field(default_factory=ExperimentInfo)
    scenario: Literal["class", "task"] = "class"
    seed: NonNegativeInt = 0
    dt: PositiveFloat = 5e-4
    data: ContinualDataConfig = Field(default_factory=ContinualDataConfig)
    network: ContinualNetworkConfig = Field(default_factory=ContinualNetworkConfig)
    stdp: PairSTDPConfig = Field(
        default_factory=lambda: PairSTDPConfig(kind="pair", a_plus=0.01, a_minus=1e-4, w_max=1.0)
    )
    fisher: ContinualFisherConfig = Field(default_factory=ContinualFisherConfig)
    ewc: ContinualEWCConfig = Field(default_factory=ContinualEWCConfig)
    sleep: ContinualSleepConfig = Field(default_factory=ContinualSleepConfig)
    readout_beta: PositiveFloat = 0.2  # softmax temperature of the voting readout (per Hz)
    schedule: Literal["auto"] | list[ScheduleBlock] = "auto"
    # also run the no-consolidation control (same seed and data, EWC and sleep off) and report
    # it beside the run; ignored when the run itself has neither
    control: bool = True
    # the upper bound of continual learning: one LEARNING block over every task's images,
    # interleaved, then one evaluation (no EWC anchors, no sleep)
    joint: bool = False
    # no schedule: the tasks as one stream, blocks closed where a drift detector fires
    task_free: TaskFreeConfig | None = None
    replay: ContinualReplayConfig = Field(default_factory=ContinualReplayConfig)

    def consolidates(self) -> bool:
        """Whether any consolidation acts in this run: replay, a sleep that happens (a SLEEP block
        or naps), or EWC with a later LEARNING block to pull. A joint run (one block, no sleep)
        with EWC or sleep on is the same run as without them."""
        phases = [b.phase for b in self.resolved_schedule()]
        learning = phases.count("learning")
        sleeps = "sleep" in phases or self.sleep.interleave_every is not None
        task_free = self.task_free is not None  # its blocks come from drifts: EWC and sleep may act
        return (self.replay.enabled or (self.sleep.enabled and (sleeps or task_free))
                or (self.ewc.enabled and (learning > 1 or task_free)))  # fmt: skip

    def without_consolidation(self) -> ContinualConfig:
        """The same experiment with EWC and sleep off (and no sleep blocks): the control.

        Its schedule keeps every LEARNING and WAKE block but no SLEEP; a WAKE that would then
        follow a WAKE (``wake, sleep, wake``) is dropped, as the transition graph has no WAKE ->
        WAKE: the control evaluates once where the run evaluated before and after sleeping."""
        schedule: Literal["auto"] | list[ScheduleBlock] = "auto"
        if self.schedule != "auto":
            schedule, current = [], "wake"
            for block in self.schedule:
                if block.phase == "sleep" or block.phase == current == "wake":
                    continue
                schedule.append(block)
                current = block.phase
        return self.model_copy(
            update={
                "ewc": self.ewc.model_copy(update={"enabled": False}),
                "sleep": self.sleep.model_copy(update={"enabled": False}),
                "replay": self.replay.model_copy(update={"enabled": False}),
                "schedule": schedule,
                "control": False,
            }
        )

    @model_validator(mode="after")
    def _schedule_is_valid(self) -> ContinualConfig:
        from neurosim.phases.phase import ALLOWED_TRANSITIONS, Phase

        problems = []
        classes = self.data.classes_per_task * self.data.n_tasks
        order = self.data.class_order
        if classes > (10 if order is None else len(order)):  # refused before the schedule of n_tasks blocks is built
            raise ValueError(
                f"data: {self.data.n_tasks} tasks x {self.data.classes_per_task} classes = {classes}, but "
                + (f"{self.data.dataset} has 10 classes" if order is None else f"class_order lists {len(order)}")
            )
        if self.dt > self.data.present:
            problems.append(f"dt ({self.dt:g} s) is longer than an image's presentation (data.present)")
        available, estimate = _physical_memory_bytes(), self.estimated_memory_bytes()
        if available is not None and estimate > available:
            problems.append(
                f"network.n_hidden = {self.network.n_hidden}: the layer needs about {estimate / 2**30:.1f} GiB, "
                f"more than this machine's {available / 2**30:.1f} GiB"
            )
        current, learned = Phase.WAKE, False
        for i, block in enumerate(self.resolved_schedule()):
            target = Phase(block.phase)
            if (current, target) not in ALLOWED_TRANSITIONS:
                problems.append(f"schedule[{i}]: cannot go from {current.value} to {target.value}")
            if target is Phase.LEARNING and (block.task is None or block.task >= self.data.n_tasks):
                problems.append(f"schedule[{i}].task: a learning block needs a task in [0, {self.data.n_tasks})")
            if self.joint and (target is Phase.SLEEP or (target is Phase.LEARNING and i > 0)):
                problems.append(f"schedule[{i}]: a joint run is one LEARNING block over every task, then WAKE")
            if target is Phase.SLEEP and not self.sleep.enabled:
                problems.append(f"schedule[{i}]: a sleep block, but sleep.enabled is false")
            elif target is Phase.SLEEP and not learned:
                problems.append(f"schedule[{i}]: a sleep block before any learning block has nothing to replay")
            learned = learned or target is Phase.LEARNING
            current = target
        if self.sleep.enabled and self.sleep.drive == "episodes" and not self.replay.enabled:
            problems.append('sleep.drive = "episodes" replays the replay buffer: set replay.enabled = true')
        if self.task_free is not None and (self.joint or self.schedule != "auto"):
            problems.append("task_free: a task-free run has no schedule and is not joint (its blocks come from drifts)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def estimated_memory_bytes(self) -> int:
        """A rough lower bound: the plastic input weights with their traces, eligibility,
        Fisher EMA and one Fisher snapshot and EWC anchor per task, and the dense lateral
        inhibition (float32)."""
        n_in = 64 if self.data.dataset == "digits" else 784
        n = self.network.n_hidden
        return 4 * (n_in * n * (8 + 2 * self.data.n_tasks) + 2 * n * n)

    def resolved_schedule(self) -> list[ScheduleBlock]:
        """The phase blocks to run: the given schedule, or for ``schedule = "auto"`` LEARNING, SLEEP (if enabled)
        and WAKE per task (one joint LEARNING block for ``joint``)."""
        if self.schedule != "auto":
            return list(self.schedule)
        if self.joint:
            return [ScheduleBlock(phase="learning", task=self.data.n_tasks - 1), ScheduleBlock(phase="wake")]
        blocks = []
        for task in range(self.data.n_tasks):
            blocks.append(ScheduleBlock(phase="learning", task=task))
            if self.sleep.enabled:
                blocks.append(ScheduleBlock(phase="sleep"))
            blocks.append(ScheduleBlock(phase="wake"))
        return blocks


def parse_continual(data: dict[str, Any]) -> ContinualConfig:
    """Validate a continual-learning experiment config (a mapping, as read from TOML); ``ConfigError`` names
    every bad field."""
    try:
        return ContinualConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None


def load_any_config(path: str | Path) -> SimulationConfig | ContinualConfig:
    """A simulation config, or a continual-learning experiment (it has ``[experiment]``)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read config {str(p)!r}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file in UTF-8 (a TOML config is)") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: not valid TOML: {err}") from None
    return parse_continual(data) if "experiment" in data else parse_config(data)
