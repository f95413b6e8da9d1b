"""Turn a validated ``SimulationConfig`` into a ``Network`` and a ``Simulation``."""

from __future__ import annotations

import numpy as np
import torch

from neurosim.config import (
    AllToAllConfig,
    ConstantWeightConfig,
    CurrentInputConfig,
    FanInConfig,
    FixedTotalConfig,
    NormalDelayConfig,
    NormalInitConfig,
    NormalWeightConfig,
    OneToOneConfig,
    PairsConfig,
    PoissonDriveConfig,
    PoissonInputConfig,
    ProbabilityConfig,
    ProjectionConfig,
    SimulationConfig,
    UniformDelayConfig,
    UniformInitConfig,
    UniformWeightConfig,
)
from neurosim.sim import connectivity
from neurosim.sim.engine import Simulation
from neurosim.sim.inputs import CurrentInput, PoissonDrive, PoissonInput, SpikeArrayInput
from neurosim.sim.network import InitialValue, Network, Normal, Population, Uniform
from neurosim.sim.synapses import Projection, WeightFormat

# Dense storage pays off when most pairs are connected and the matrix stays small.
_DENSE_MIN_DENSITY = 0.1
_DENSE_MAX_ELEMENTS = 1 << 24


def _pairs(cfg: ProjectionConfig, n_pre: int, n_post: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    conn = cfg.connectivity
    same = cfg.source == cfg.target
    if isinstance(conn, ProbabilityConfig):
        return connectivity.probability(n_pre, n_post, conn.p, rng, autapses=conn.autapses or not same)
    if isinstance(conn, FanInConfig):
        return connectivity.fan_in(n_pre, n_post, conn.k, rng, autapses=conn.autapses or not same)
    if isinstance(conn, AllToAllConfig):
        return connectivity.all_to_all(n_pre, n_post, autapses=conn.autapses or not same)
    if isinstance(conn, FixedTotalConfig):
        return connectivity.fixed_total(n_pre, n_post, conn.n, rng, autapses=conn.autapses or not same)
    if isinstance(conn, OneToOneConfig):
        return connectivity.one_to_one(n_pre, n_post)
    if isinstance(conn, PairsConfig):
        return connectivity.pairs(conn.pre, conn.post, n_pre, n_post)
    raise TypeError(f"unsupported connectivity {type(conn).__name__}")


def _weights(cfg: ProjectionConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    w = cfg.weights
    if isinstance(w, ConstantWeightConfig):
        return connectivity.constant_weights(n, w.value)
    if isinstance(w, UniformWeightConfig):
        return connectivity.uniform_weights(n, w.low, w.high, rng)
    if isinstance(w, NormalWeightConfig):
        return connectivity.normal_weights(n, w.mean, w.std, rng, low=w.low, high=w.high)
    raise TypeError(f"unsupported weights {type(w).__name__}")


def _delay_steps(cfg: ProjectionConfig, n: int, dt: float, rng: np.random.Generator) -> int | np.ndarray:
    """One delay in steps, or one per synapse for a distribution."""
    d = cfg.delay
    if isinstance(d, UniformDelayConfig):
        return connectivity.delay_steps_from_seconds(rng.uniform(d.low, d.high, size=n), dt)
    if isinstance(d, NormalDelayConfig):
        low = dt if d.low is None else d.low
        high = np.inf if d.high is None else d.high
        seconds = connectivity.normal_delays(n, d.mean, d.std, rng, low=low, high=high, redraw=d.outside == "redraw")
        return connectivity.delay_steps_from_seconds(seconds, dt)
    return round(d.value / dt)


def _initial(value: float | UniformInitConfig | NormalInitConfig) -> InitialValue:
    if isinstance(value, UniformInitConfig):
        return Uniform(*value.uniform)
    if isinstance(value, NormalInitConfig):
        return Normal(*value.normal)
    return float(value)


def _format(cfg: ProjectionConfig, n_pre: int, n_post: int, n_synapses: int) -> WeightFormat:
    if cfg.format != "auto":
        return WeightFormat(cfg.format)
    size = n_pre * n_post
    dense = size <= _DENSE_MAX_ELEMENTS and n_synapses >= _DENSE_MIN_DENSITY * size
    return WeightFormat.DENSE if dense else WeightFormat.SPARSE


def build_network(
    cfg: SimulationConfig, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Network:
    """Build the network; its structure is drawn from ``network.seed`` (default ``run.seed``)."""
    net_cfg = cfg.network
    rng = np.random.default_rng(cfg.run.seed if net_cfg.seed is None else net_cfg.seed)
    net = Network()
    for p in net_cfg.populations:
        initial = {var: _initial(val) for var, val in p.initial.items()}
        net.add_population(Population(p.name, p.n, p.model.to_params(), initial))
    for inp in net_cfg.inputs:
        if isinstance(inp, PoissonInputConfig):
            net.add_input(PoissonInput(inp.name, inp.n, inp.rates))
        elif isinstance(inp, PoissonDriveConfig):
            net.add_drive(PoissonDrive(inp.name, inp.target, inp.n, inp.rate, inp.weight, inp.channel))
        elif isinstance(inp, CurrentInputConfig):
            amplitude = inp.amplitude if inp.samples is None else inp.samples
            net.add_current(CurrentInput(inp.name, inp.target, amplitude, inp.sample_dt))  # type: ignore[arg-type]
        else:
            net.add_input(SpikeArrayInput(inp.name, inp.n, inp.times, inp.indices))
    dt = cfg.run.dt
    for pr in net_cfg.projections:
        n_pre, n_post = net.source_size(pr.source), net.populations[pr.target].n
        pre, post = _pairs(pr, n_pre, n_post, rng)
        weights = _weights(pr, pre.size, rng)
        delays = _delay_steps(pr, pre.size, dt, rng)
        net.add_projection(
            Projection.from_pairs(
                pr.name,
                pr.source,
                pr.target,
                n_pre,
                n_post,
                pre,
                post,
                weights,
                channel=pr.channel,
                delay_steps=delays,
                format=WeightFormat.SPARSE if pr.per_synapse_delays() else _format(pr, n_pre, n_post, pre.size),
                propagation=pr.propagation,
                dtype=dtype,
                device=device,
            )
        )
    return net


def build_simulation(cfg: SimulationConfig) -> Simulation:
    """A ``Simulation`` of ``cfg``: its network (``build_network``) with the config's run settings (dt, batch,
    seed, device, dtype, backend, chunk size)."""
    dtype = torch.float32 if cfg.run.dtype == "float32" else torch.float64
    net = build_network(cfg, device=cfg.run.device, dtype=dtype)
    r = cfg.run
    return Simulation(
        net,
        dt=r.dt,
        batch=r.batch,
        seed=r.seed,
        device=r.device,
        dtype=dtype,
        backend=r.backend,
        chunk_steps=r.chunk_steps,
    )
