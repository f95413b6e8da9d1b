"""Run a neurosim configuration with Brian2 (the reference simulator of the field).

The network's structure is built by neurosim from the config (same seed, same synapses,
same weights, same initial state) and handed to Brian2 object by object:

- ``CurrentLIF``: ``NeuronGroup``, ``method='exact'``, ``refractory=t_ref``, ``(unless refractory)`` on v
- ``ConductanceLIF``, ``AdaptiveLIF``: ``NeuronGroup``, ``method='exponential_euler'`` (+ ``theta``)
- ``PoissonInput``: ``PoissonGroup`` (Brian2's own random stream)
- ``SpikeArrayInput``: ``SpikeGeneratorGroup``
- constant ``CurrentInput``: the neurons' ``i_ext`` parameter
- ``PoissonDrive``: ``PoissonInput`` (binomial counts from Brian2's own random stream)
- ``Projection``: ``Synapses(on_pre='g_exc_post += w')``, ``connect(i=pre, j=post)``, ``delay``
  (one for all synapses, or one per synapse)
- pair STDP (``[[plasticity]]``): event-driven ``Apre``/``Apost`` traces in ``on_pre``/``on_post``

Not supported (refused with ``UnsupportedByBrian2`` naming each): batches, CUDA, triplet
STDP, time-varying currents, plasticity on a delayed projection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from neurosim.build import build_simulation
from neurosim.config import CurrentInputConfig, PairSTDPConfig, SimulationConfig
from neurosim.learning.stdp import TraceMode, WeightDependence
from neurosim.sim.engine import Simulation
from neurosim.sim.inputs import PoissonInput, SpikeArrayInput
from neurosim.sim.monitors import SpikeTrains
from neurosim.sim.neurons import AdaptiveLIF, AdaptiveLIFState, ConductanceLIF, CurrentLIF, NeuronParams
from neurosim.sim.synapses import Channel

Target = Literal["numpy", "cython"]


class UnsupportedByBrian2(ValueError):
    """The config uses features the Brian2 backend cannot run; the message lists them."""


@dataclass
class Brian2Run:
    """Results in neurosim's formats."""

    duration_s: float
    wall_s: float
    spikes: dict[str, SpikeTrains]
    weights: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    state_times: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    state: dict[str, dict[str, npt.NDArray[np.float64]]] = field(default_factory=dict)


def unsupported_features(cfg: SimulationConfig) -> list[str]:
    """What in ``cfg`` the Brian2 backend cannot run (batches, CUDA, triplet STDP, ...), one line each; empty
    when it can run it all."""
    problems = []
    if cfg.run.batch != 1:
        problems.append(f"run.batch = {cfg.run.batch} (Brian2 runs one instance)")
    if cfg.run.device != "cpu":
        problems.append("run.device = 'cuda' (the Brian2 backend runs on the CPU)")
    for i, inp in enumerate(cfg.network.inputs):
        if isinstance(inp, CurrentInputConfig) and inp.samples is not None:
            problems.append(f"network.inputs[{i}]: time-varying currents")
    delays = {p.name: p.longest_delay(cfg.run.dt) for p in cfg.network.projections}
    for i, pl in enumerate(cfg.plasticity):
        if not isinstance(pl.rule, PairSTDPConfig):
            problems.append(f"plasticity[{i}]: {pl.rule.kind} STDP (only pair STDP is translated)")
        if delays.get(pl.projection, 0.0) > 0:
            problems.append(f"plasticity[{i}]: plasticity on the delayed projection {pl.projection!r}")
        if pl.scale != 1.0:
            problems.append(f"plasticity[{i}]: scale = {pl.scale}")
    return problems


def _neuron_model(params: NeuronParams) -> tuple[str, str, str, str]:
    """Equations, threshold, reset, integration method."""
    if isinstance(params, CurrentLIF):
        eqs = """
        dv/dt = (v_rest - v + g_exc + g_inh + r_m * i_ext) / tau_m : volt (unless refractory)
        dg_exc/dt = -g_exc / tau_exc : volt
        dg_inh/dt = -g_inh / tau_inh : volt
        i_ext : amp
        """
        return eqs, "v > v_threshold", "v = v_reset", "exact"
    eqs = """
    dv/dt = (v_rest - v + g_exc * (e_exc - v) + g_inh * (e_inh - v) + r_m * i_ext) / tau_m : volt (unless refractory)
    dg_exc/dt = -g_exc / tau_exc : 1
    dg_inh/dt = -g_inh / tau_inh : 1
    i_ext : amp
    """
    if isinstance(params, AdaptiveLIF):
        eqs += "dtheta/dt = -theta / tau_theta : volt\n"
        return eqs, "v > v_threshold + theta", "v = v_reset; theta += theta_plus", "exponential_euler"
    return eqs, "v > v_threshold", "v = v_reset", "exponential_euler"


def _namespace(params: NeuronParams, b2: Any) -> dict[str, Any]:
    ns: dict[str, Any] = {
        "tau_m": params.tau_m * b2.second,
        "v_rest": params.v_rest * b2.volt,
        "v_threshold": params.v_threshold * b2.volt,
        "v_reset": params.v_reset * b2.volt,
        "tau_exc": params.tau_exc * b2.second,
        "tau_inh": params.tau_inh * b2.second,
        "r_m": params.r_m * b2.ohm,
    }
    if isinstance(params, ConductanceLIF | AdaptiveLIF):
        ns.update(e_exc=params.e_exc * b2.volt, e_inh=params.e_inh * b2.volt)
    if isinstance(params, AdaptiveLIF):
        ns.update(tau_theta=params.tau_theta * b2.second, theta_plus=params.theta_plus * b2.volt)
    return ns


def _stdp_code(rule: PairSTDPConfig, channel: str) -> tuple[str, str, str, dict[str, float]]:
    bump = "= 1" if rule.traces is TraceMode.NEAREST else "+= 1"
    if rule.dependence is WeightDependence.MULTIPLICATIVE:
        depress = "w = w - a_minus * Apost * (w - w_min)"
        potentiate = "w = w + a_plus * Apre * (w_max - w)"
    else:
        depress = "w = clip(w - a_minus * Apost, w_min, w_max)"
        potentiate = "w = clip(w + a_plus * Apre, w_min, w_max)"
    model = "dApre/dt = -Apre / tau_pre : 1 (event-driven)\ndApost/dt = -Apost / tau_post : 1 (event-driven)\n"
    on_pre = f"{channel}_post += w\nApre {bump}\n{depress}"
    on_post = f"Apost {bump}\n{potentiate}"
    consts = {"a_plus": rule.a_plus, "a_minus": rule.a_minus, "w_min": rule.w_min, "w_max": rule.w_max}
    return model, on_pre, on_post, consts


def _neuron_groups(sim: Simulation, b2: Any) -> dict[str, Any]:
    net = sim.network
    groups: dict[str, Any] = {}
    for name, pop in net.populations.items():
        eqs, threshold, reset, method = _neuron_model(pop.params)
        group = b2.NeuronGroup(pop.n, eqs, threshold=threshold, reset=reset, refractory=pop.params.t_ref * b2.second,
                               method=method, namespace=_namespace(pop.params, b2), name=f"pop_{name}")  # fmt: skip
        state = sim.state[name]
        group.v = state.v[0].double().numpy() * b2.volt
        g_unit = b2.volt if isinstance(pop.params, CurrentLIF) else 1
        group.g_exc = state.g_exc[0].double().numpy() * g_unit
        group.g_inh = state.g_inh[0].double().numpy() * g_unit
        if isinstance(state, AdaptiveLIFState):
            group.theta = state.theta[0].double().numpy() * b2.volt
        groups[name] = group
    for current in net.currents.values():
        groups[current.target].i_ext = (
            np.broadcast_to(current.samples[0], (net.populations[current.target].n,)) * b2.amp
        )
    for name, src in net.inputs.items():
        if isinstance(src, PoissonInput):
            groups[name] = b2.PoissonGroup(src.n, rates=src.rates * b2.Hz, name=f"in_{name}")
        elif isinstance(src, SpikeArrayInput):
            groups[name] = b2.SpikeGeneratorGroup(src.n, src.indices, src.times * b2.second, name=f"in_{name}")
    return groups


def _synapses(cfg: SimulationConfig, sim: Simulation, groups: dict[str, Any], b2: Any) -> dict[str, Any]:
    net = sim.network
    plastic = {pl.projection: pl for pl in cfg.plasticity}
    synapses: dict[str, Any] = {}
    for name, proj in net.projections.items():
        channel = "g_exc" if proj.channel is Channel.EXC else "g_inh"
        volts = isinstance(net.populations[proj.target].params, CurrentLIF)
        model, on_pre, on_post = f"w : {'volt' if volts else '1'}", f"{channel}_post += w", None
        consts: dict[str, Any] = {}
        rule = plastic.get(name)
        if rule is not None and isinstance(rule.rule, PairSTDPConfig):
            stdp_model, on_pre, on_post, consts = _stdp_code(rule.rule, channel)
            model += "\n" + stdp_model
            consts.update(tau_pre=rule.rule.tau_pre * b2.second, tau_post=rule.rule.tau_post * b2.second)
        syn = b2.Synapses(groups[proj.source], groups[proj.target], model=model, on_pre=on_pre, on_post=on_post,
                          namespace=consts, name=f"syn_{name}")  # fmt: skip
        syn.connect(i=proj.pre_index.cpu().numpy(), j=proj.post_index.cpu().numpy())
        syn.w = proj.synapse_weights().double().cpu().numpy() * (b2.volt if volts else 1)
        if proj.synapse_delays is not None:
            syn.delay = proj.delays_per_synapse().cpu().numpy() * cfg.run.dt * b2.second
        elif proj.delay_steps:
            syn.delay = proj.delay_steps * cfg.run.dt * b2.second
        synapses[name] = syn
    return synapses


def run_brian2(cfg: SimulationConfig, *, target: Target = "numpy", duration: float | None = None) -> Brian2Run:
    """Simulate ``cfg`` with Brian2 (runtime device, ``target`` code generation)."""
    problems = unsupported_features(cfg)
    if problems:
        raise UnsupportedByBrian2("the Brian2 backend cannot run this config:\n- " + "\n- ".join(problems))
    import brian2 as b2

    sim = build_simulation(cfg)  # the structure, weights and initial state, from neurosim's seeds
    b2.start_scope()
    b2.prefs.codegen.target = target
    b2.defaultclock.dt = cfg.run.dt * b2.second
    b2.seed(cfg.run.seed)
    groups = _neuron_groups(sim, b2)
    synapses = _synapses(cfg, sim, groups, b2)
    recorded = cfg.record.spikes if cfg.record.spikes is not None else list(sim.network.populations)
    spike_monitors = {name: b2.SpikeMonitor(groups[name], name=f"spikes_{name}") for name in recorded}
    state_monitors = [
        (s, b2.StateMonitor(groups[s.population], s.variables, record=s.indices, dt=s.every * b2.second, when="start"))
        for s in cfg.record.state
    ]
    drives = [
        b2.PoissonInput(groups[d.target], "g_exc" if d.channel is Channel.EXC else "g_inh", d.n_sources,
                        d.rate * b2.Hz, d.weight * (b2.volt if isinstance(sim.network.populations[d.target].params,
                                                                            CurrentLIF) else 1))
        for d in sim.network.drives.values()
    ]  # fmt: skip
    network = b2.Network(
        *groups.values(), *synapses.values(), *drives, *spike_monitors.values(), *(m for _, m in state_monitors)
    )
    run_for = cfg.run.duration if duration is None else duration
    t0 = time.perf_counter()
    network.run(run_for * b2.second)
    result = Brian2Run(duration_s=run_for, wall_s=time.perf_counter() - t0, spikes={})
    for name, mon in spike_monitors.items():
        indices = np.asarray(mon.i[:], dtype=np.int64)
        result.spikes[name] = SpikeTrains(np.asarray(mon.t[:] / b2.second), indices, np.zeros_like(indices))
    for pl in cfg.plasticity:
        result.weights[pl.projection] = np.asarray(synapses[pl.projection].w[:], dtype=np.float64)
    for s, mon in state_monitors:
        result.state_times[s.population] = np.asarray(mon.t[:] / b2.second)
        result.state[s.population] = {var: np.asarray(getattr(mon, var)[:]).T for var in s.variables}
    return result
