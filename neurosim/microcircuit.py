"""The cortical microcircuit of Potjans & Diesmann (2014), scalable.

Potjans, T. C. & Diesmann, M. (2014). The cell-type specific cortical microcircuit:
relating structure and activity in a full-scale spiking network model. Cerebral Cortex
24(3), 785-806. doi:10.1093/cercor/bhs358

Eight populations (excitatory ``E`` and inhibitory ``I`` in layers 2/3, 4, 5 and 6),
77,169 neurons and about 0.3 billion synapses under 1 mm^2 of cortex at full scale. Every
neuron is the same current-based LIF with exponential synaptic currents (NEST's
``iaf_psc_exp``), here ``CurrentLIF`` with ``g = R_m I_syn`` (volts) and
``R_m = tau_m / C_m`` = 40 MOhm::

    dv/dt = (E_L - v + g_exc + g_inh + R_m I_dc) / tau_m      [V]   (unless refractory)
    dg/dt = -g / tau_syn                                       [V]   (both channels)
    tau_m 10 ms, C_m 250 pF, E_L = V_reset = -65 mV, V_th = -50 mV, t_ref 2 ms,
    tau_syn 0.5 ms, v(0) ~ N(-58 mV, (10 mV)^2)

Connectivity (the paper's Table 5): population ``s`` projects to ``t`` through
``K = log(1 - C[t, s]) / log(1 - 1 / (N_t N_s))`` synapses between uniformly drawn pairs
(multapses allowed, no autapses), ``C`` the connection probability. Weights are normal with
a mean giving a 0.15 mV postsynaptic potential peak (twice that for L4E -> L2/3E; ``g = -4``
times it from inhibitory neurons) and a 10 % relative spread; delays are normal, 1.5 ms
(excitatory) and 0.75 ms (inhibitory) with a 50 % relative spread, redrawn below one step.
Every neuron receives ``K_ext`` (1,600-2,900) background Poisson inputs at 8 Hz of the
excitatory weight (``PoissonDrive``), or, with ``background = "dc"``, the equivalent DC
current ``8 Hz * K_ext * J_ext * tau_syn``.

Scaling (as the paper's companion code does): ``scale`` multiplies the neuron numbers and
``k_scale`` (default: ``scale``) the in-degrees, recurrent and external. With fewer inputs
per neuron, weights grow by ``1 / sqrt(k_scale)`` to keep the input fluctuations, and a DC
current ``tau_syn (1 - sqrt(k_scale)) sum_s J[t, s] K_full[t, s] nu_s`` (plus the same for
the background) restores the mean input, ``nu_s`` the full-scale rates of
``FULL_SCALE_RATES``. At ``k_scale = 1`` no compensation is needed.

``microcircuit_config`` turns this into an ordinary ``SimulationConfig`` (the same path as
a TOML file: ``examples/microcircuit.toml`` is one written by ``examples/microcircuit.py``);
construction is vectorised (``connectivity.fixed_total``), no Python loop per neuron or
synapse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from neurosim.config import SimulationConfig, parse_config
from neurosim.sim.neurons import CurrentLIF

POPULATIONS = ("L23E", "L23I", "L4E", "L4I", "L5E", "L5I", "L6E", "L6I")
LAYERS = ("L2/3", "L4", "L5", "L6")
FULL_SIZES = np.array([20683, 5834, 21915, 5479, 4850, 1065, 14395, 2948])
# Connection probabilities, CONNECTION_PROBABILITY[target, source] (the paper's Table 5).
CONNECTION_PROBABILITY = np.array([
    [0.1009, 0.1689, 0.0437, 0.0818, 0.0323, 0.0, 0.0076, 0.0],
    [0.1346, 0.1371, 0.0316, 0.0515, 0.0755, 0.0, 0.0042, 0.0],
    [0.0077, 0.0059, 0.0497, 0.1350, 0.0067, 0.0003, 0.0453, 0.0],
    [0.0691, 0.0029, 0.0794, 0.1597, 0.0033, 0.0, 0.1057, 0.0],
    [0.1004, 0.0622, 0.0505, 0.0057, 0.0831, 0.3726, 0.0204, 0.0],
    [0.0548, 0.0269, 0.0257, 0.0022, 0.0600, 0.3158, 0.0086, 0.0],
    [0.0156, 0.0066, 0.0211, 0.0166, 0.0572, 0.0197, 0.0396, 0.2252],
    [0.0364, 0.0010, 0.0034, 0.0005, 0.0277, 0.0080, 0.0658, 0.1443],
])  # fmt: skip
EXTERNAL_INDEGREE = np.array([1600, 1500, 2100, 1900, 2000, 1900, 2900, 2100])
# Rates (Hz) of the full-scale model, used only for the DC compensation of scaled in-degrees
# (the values the paper's companion code, NEST's microcircuit example, uses).
FULL_SCALE_RATES = np.array([0.971, 2.868, 4.746, 5.396, 8.142, 9.078, 0.991, 7.523])
INHIBITORY = np.array([name.endswith("I") for name in POPULATIONS])

Background = Literal["poisson", "dc"]


@dataclass(frozen=True)
class MicrocircuitParams:
    """The model's parameters (SI units); defaults are the paper's."""

    scale: float = 0.1  # of the neuron numbers
    k_scale: float | None = None  # of the in-degrees; None: the same as scale
    background: Background = "poisson"
    psp_exc: float = 0.15e-3  # V, peak of the mean excitatory postsynaptic potential
    g: float = -4.0  # inhibitory weight relative to excitatory
    l4e_to_l23e: float = 2.0  # factor on the L4E -> L2/3E weight
    weight_rel_std: float = 0.1
    delay_exc: float = 1.5e-3  # s, mean
    delay_inh: float = 0.75e-3  # s, mean
    delay_rel_std: float = 0.5
    background_rate: float = 8.0  # Hz per external input
    v0_mean: float = -58e-3  # V
    v0_std: float = 10e-3  # V
    c_m: float = 250e-12  # F
    neuron: CurrentLIF = field(default_factory=lambda: CurrentLIF(
        tau_m=10e-3, v_rest=-65e-3, v_threshold=-50e-3, v_reset=-65e-3, t_ref=2e-3,
        tau_exc=0.5e-3, tau_inh=0.5e-3, r_m=10e-3 / 250e-12,
    ))  # fmt: skip

    def __post_init__(self) -> None:
        for name in ("scale", "k_scale"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0 < value <= 1):
                raise ValueError(f"MicrocircuitParams.{name} must be in (0, 1], got {value!r}")
        if self.background not in ("poisson", "dc"):
            raise ValueError(f"MicrocircuitParams.background must be 'poisson' or 'dc', got {self.background!r}")
        if not math.isclose(self.neuron.r_m, self.neuron.tau_m / self.c_m, rel_tol=1e-9):
            raise ValueError("MicrocircuitParams: neuron.r_m must equal tau_m / c_m (the membrane resistance)")

    @property
    def in_degree_scale(self) -> float:
        """The factor on in-degrees (``k_scale``, or ``scale`` if not given)."""
        return self.scale if self.k_scale is None else self.k_scale


def psp_peak_per_weight(tau_m: float, tau_syn: float) -> float:
    """Peak of the membrane response (V) to a jump of 1 V in ``g`` decaying with ``tau_syn``:
    ``v(t) = tau_s / (tau_s - tau_m) (exp(-t / tau_s) - exp(-t / tau_m))`` at its maximum."""
    t_peak = math.log(tau_syn / tau_m) * tau_m * tau_syn / (tau_syn - tau_m)
    return tau_syn / (tau_syn - tau_m) * (math.exp(-t_peak / tau_syn) - math.exp(-t_peak / tau_m))


@dataclass(frozen=True)
class MicrocircuitNumbers:
    """Everything derived from the parameters at one scale (SI units; ``[target, source]``)."""

    sizes: npt.NDArray[np.int64]
    synapses: npt.NDArray[np.int64]  # per projection
    weight_mean: npt.NDArray[np.float64]  # V jump of g
    weight_std: npt.NDArray[np.float64]
    delay_mean: npt.NDArray[np.float64]  # s, per source population
    delay_std: npt.NDArray[np.float64]
    external_indegree: npt.NDArray[np.int64]
    external_weight: float  # V
    dc_current: npt.NDArray[np.float64]  # A per target population (compensation and/or DC background)

    @property
    def n_neurons(self) -> int:
        """Neurons in all."""
        return int(self.sizes.sum())

    @property
    def n_synapses(self) -> int:
        """Recurrent synapses in all."""
        return int(self.synapses.sum())


def full_scale_synapses() -> npt.NDArray[np.float64]:
    """``K[t, s] = log(1 - C) / log(1 - 1 / (N_t N_s))``: synapses per projection at full scale."""
    pairs = np.outer(FULL_SIZES, FULL_SIZES).astype(np.float64)
    synapses: npt.NDArray[np.float64] = np.log1p(-CONNECTION_PROBABILITY) / np.log1p(-1.0 / pairs)
    return synapses


def derive(params: MicrocircuitParams) -> MicrocircuitNumbers:
    """Sizes, synapse counts, weights, delays and DC currents at ``params``' scale."""
    k = params.in_degree_scale
    neuron = params.neuron
    per_psp = psp_peak_per_weight(neuron.tau_m, neuron.tau_exc)
    w_exc = params.psp_exc / per_psp  # V: 0.15 mV PSP <-> 3.51 mV jump of g (87.8 pA)
    full_weight = np.where(INHIBITORY[None, :], params.g * w_exc, w_exc) * np.ones((8, 8))
    full_weight[0, 2] *= params.l4e_to_l23e
    k_full = full_scale_synapses()
    rates_in = (full_weight * (k_full / FULL_SIZES[:, None]) * FULL_SCALE_RATES[None, :]).sum(axis=1)  # V/s
    compensation = 1.0 - math.sqrt(k)
    external_full = w_exc * EXTERNAL_INDEGREE * params.background_rate  # V/s
    dc_volts = neuron.tau_exc * compensation * rates_in
    if params.background == "poisson":
        dc_volts = dc_volts + neuron.tau_exc * compensation * external_full
    else:  # the whole background as its mean
        dc_volts = dc_volts + neuron.tau_exc * external_full
    weight = full_weight / math.sqrt(k)
    return MicrocircuitNumbers(
        sizes=np.round(FULL_SIZES * params.scale).astype(np.int64),
        synapses=np.round(k_full * params.scale * k).astype(np.int64),
        weight_mean=weight,
        weight_std=np.abs(weight) * params.weight_rel_std,
        delay_mean=np.where(INHIBITORY, params.delay_inh, params.delay_exc),
        delay_std=np.where(INHIBITORY, params.delay_inh, params.delay_exc) * params.delay_rel_std,
        external_indegree=np.round(EXTERNAL_INDEGREE * k).astype(np.int64),
        external_weight=w_exc / math.sqrt(k),
        dc_current=dc_volts / neuron.r_m,
    )


def microcircuit_config(
    params: MicrocircuitParams = MicrocircuitParams(),
    *,
    duration: float = 1.0,
    dt: float = 1e-4,
    seed: int = 55,
    dtype: Literal["float32", "float64"] = "float32",
) -> SimulationConfig:
    """The microcircuit as a ``SimulationConfig`` (``neurosim run`` runs it; ``build_simulation`` builds it)."""
    numbers = derive(params)
    neuron = params.neuron
    model = {"kind": "current_lif", "tau_m": neuron.tau_m, "v_rest": neuron.v_rest,
             "v_threshold": neuron.v_threshold, "v_reset": neuron.v_reset, "t_ref": neuron.t_ref,
             "tau_exc": neuron.tau_exc, "tau_inh": neuron.tau_inh, "r_m": neuron.r_m}  # fmt: skip
    populations = [
        {"name": name, "n": int(n), "model": model, "initial": {"v": {"normal": [params.v0_mean, params.v0_std]}}}
        for name, n in zip(POPULATIONS, numbers.sizes, strict=True)
    ]
    inputs: list[dict[str, Any]] = []
    for t, name in enumerate(POPULATIONS):
        if params.background == "poisson":
            inputs.append({"kind": "poisson_drive", "name": f"background_{name}", "target": name,
                           "n": int(numbers.external_indegree[t]), "rate": params.background_rate,
                           "weight": numbers.external_weight})  # fmt: skip
        if numbers.dc_current[t] != 0.0:
            inputs.append({"kind": "current", "name": f"dc_{name}", "target": name,
                           "amplitude": float(numbers.dc_current[t])})  # fmt: skip
    projections = []
    for t, target in enumerate(POPULATIONS):
        for s, source in enumerate(POPULATIONS):
            if numbers.synapses[t, s] == 0:
                continue
            mean, std = float(numbers.weight_mean[t, s]), float(numbers.weight_std[t, s])
            bound = {"high": 0.0} if INHIBITORY[s] else {"low": 0.0}
            projections.append({
                "name": f"{source}_to_{target}", "source": source, "target": target,
                "channel": "inh" if INHIBITORY[s] else "exc",
                "connectivity": {"kind": "fixed_total", "n": int(numbers.synapses[t, s]), "autapses": False},
                "weights": {"kind": "normal", "mean": mean, "std": std, **bound},
                "delay": {"kind": "normal", "mean": float(numbers.delay_mean[s]), "std": float(numbers.delay_std[s])},
            })  # fmt: skip
    return parse_config({
        "name": f"Potjans & Diesmann (2014) microcircuit, scale {params.scale:g}",
        "description": (f"scale {params.scale:g} (neurons), in-degree scale {params.in_degree_scale:g}, "
                        f"{params.background} background; {numbers.n_neurons} neurons, "
                        f"{numbers.n_synapses} recurrent synapses"),
        "run": {"dt": dt, "duration": duration, "seed": seed, "dtype": dtype, "chunk_steps": 1000},
        "network": {"populations": populations, "inputs": inputs, "projections": projections},
        "record": {"spikes": list(POPULATIONS)},
    })  # fmt: skip
