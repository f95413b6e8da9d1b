"""Neuron models: frozen parameters, NamedTuple state and pure step functions.

Every model is a leaky integrate-and-fire neuron with two exponentially decaying synaptic
channels (``exc`` and ``inh``) that projections increment, an absolute refractory period,
and an external current ``i_ext`` (amperes) that enters as ``r_m * i_ext``.

``CurrentLIF`` (current-based; Vogels & Abbott 2005, the CUBA network)::

    dv/dt     = (v_rest - v + g_exc + g_inh + r_m * i_ext) / tau_m    [V]  (unless refractory)
    dg_exc/dt = -g_exc / tau_exc                                       [V]
    dg_inh/dt = -g_inh / tau_inh                                       [V]

The system is linear and is integrated exactly (Brian2 ``method='exact'``).

``ConductanceLIF`` (conductance-based; Song, Miller & Abbott 2000)::

    dv/dt     = (v_rest - v + g_exc (e_exc - v) + g_inh (e_inh - v) + r_m i_ext) / tau_m
    dg_exc/dt = -g_exc / tau_exc                                       [1, relative to leak]
    dg_inh/dt = -g_inh / tau_inh                                       [1]

Given the conductances, ``v`` is linear, so it is integrated with the exponential Euler
scheme (exact for conductances frozen over one step; Brian2 ``method='exponential_euler'``).

``AdaptiveLIF`` (Diehl & Cook 2015): ``ConductanceLIF`` plus an adaptive threshold::

    dtheta/dt = -theta / tau_theta;  spike when v > v_threshold + theta;  theta += theta_plus

Update order inside one step (``step``): state update, threshold, reset. Synaptic
increments are added by the engine after the step (Brian2's ``synapses`` slot), so they
act on ``v`` from the next step on.

Refractoriness follows Brian2: a neuron that spiked at step ``n`` holds ``v`` during the
state updates of steps ``n+1 .. n+R-1`` with ``R = round(t_ref / dt)`` and cannot spike
before step ``n+R``. The state stores the steps left in ``refractory``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

import torch

from neurosim.units import (
    MEMBRANE_POTENTIAL,
    MEMBRANE_TIME_CONSTANT,
    REFRACTORY_PERIOD,
    RESISTANCE,
    SLOW_TIME_CONSTANT,
    SYNAPTIC_TIME_CONSTANT,
    THRESHOLD_INCREMENT,
    convert_fields,
    physical,
)

if TYPE_CHECKING:
    from neurosim.learning.surrogate import Surrogate

Tensor = torch.Tensor


class NeuronKind(enum.IntEnum):
    """Model identifiers; the integer values are used by the compiled fast path."""

    CURRENT_LIF = 0
    CONDUCTANCE_LIF = 1
    ADAPTIVE_LIF = 2


def _check_positive(owner: str, name: str, value: float, unit: str) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{owner}.{name} must be a positive finite number of {unit}, got {value!r}")


def _check_non_negative(owner: str, name: str, value: float, unit: str) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{owner}.{name} must be >= 0 {unit}, got {value!r}")


def _check_finite(owner: str, name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be finite, got {value!r}")


@dataclass(frozen=True)
class CurrentLIF:
    """Current-based LIF with exponential synaptic currents (voltages). Defaults: CUBA."""

    tau_m: float = physical(20e-3, MEMBRANE_TIME_CONSTANT)
    v_rest: float = physical(-49e-3, MEMBRANE_POTENTIAL)
    v_threshold: float = physical(-50e-3, MEMBRANE_POTENTIAL)
    v_reset: float = physical(-60e-3, MEMBRANE_POTENTIAL)
    t_ref: float = physical(5e-3, REFRACTORY_PERIOD)
    tau_exc: float = physical(5e-3, SYNAPTIC_TIME_CONSTANT)
    tau_inh: float = physical(10e-3, SYNAPTIC_TIME_CONSTANT)
    r_m: float = physical(1e8, RESISTANCE)  # Ohm, converts i_ext (A) to volts

    kind = NeuronKind.CURRENT_LIF

    def __post_init__(self) -> None:
        convert_fields(self)
        _validate_common(self)


@dataclass(frozen=True)
class ConductanceLIF:
    """Conductance-based LIF. Defaults: Song, Miller & Abbott (2000) / Brian2 STDP example."""

    tau_m: float = physical(10e-3, MEMBRANE_TIME_CONSTANT)
    v_rest: float = physical(-74e-3, MEMBRANE_POTENTIAL)
    v_threshold: float = physical(-54e-3, MEMBRANE_POTENTIAL)
    v_reset: float = physical(-60e-3, MEMBRANE_POTENTIAL)
    t_ref: float = physical(0.0, REFRACTORY_PERIOD)
    tau_exc: float = physical(5e-3, SYNAPTIC_TIME_CONSTANT)
    tau_inh: float = physical(10e-3, SYNAPTIC_TIME_CONSTANT)
    e_exc: float = physical(0.0, MEMBRANE_POTENTIAL)
    e_inh: float = physical(-80e-3, MEMBRANE_POTENTIAL)
    r_m: float = physical(1e8, RESISTANCE)  # Ohm

    kind = NeuronKind.CONDUCTANCE_LIF

    def __post_init__(self) -> None:
        convert_fields(self)
        _validate_common(self)
        _check_finite(type(self).__name__, "e_exc", self.e_exc)
        _check_finite(type(self).__name__, "e_inh", self.e_inh)


@dataclass(frozen=True)
class AdaptiveLIF:
    """Conductance LIF with an adaptive threshold. Defaults: Diehl & Cook (2015) excitatory
    neurons (their ``v_thresh_e - offset`` = -72 mV is ``v_threshold``; theta starts at 20 mV
    through the population's initial state)."""

    tau_m: float = physical(100e-3, MEMBRANE_TIME_CONSTANT)
    v_rest: float = physical(-65e-3, MEMBRANE_POTENTIAL)
    v_threshold: float = physical(-72e-3, MEMBRANE_POTENTIAL)  # V, plus theta
    v_reset: float = physical(-65e-3, MEMBRANE_POTENTIAL)
    t_ref: float = physical(5e-3, REFRACTORY_PERIOD)
    tau_exc: float = physical(1e-3, SYNAPTIC_TIME_CONSTANT)
    tau_inh: float = physical(2e-3, SYNAPTIC_TIME_CONSTANT)
    e_exc: float = physical(0.0, MEMBRANE_POTENTIAL)
    e_inh: float = physical(-100e-3, MEMBRANE_POTENTIAL)
    r_m: float = physical(1e8, RESISTANCE)  # Ohm
    tau_theta: float = physical(1e4, SLOW_TIME_CONSTANT)
    theta_plus: float = physical(0.05e-3, THRESHOLD_INCREMENT)

    kind = NeuronKind.ADAPTIVE_LIF

    def __post_init__(self) -> None:
        convert_fields(self)
        _validate_common(self)
        _check_positive(type(self).__name__, "tau_theta", self.tau_theta, "seconds")
        _check_non_negative(type(self).__name__, "theta_plus", self.theta_plus, "V")


NeuronParams = CurrentLIF | ConductanceLIF | AdaptiveLIF


def _validate_common(p: CurrentLIF | ConductanceLIF | AdaptiveLIF) -> None:
    owner = type(p).__name__
    for name in ("tau_m", "tau_exc", "tau_inh", "r_m"):
        _check_positive(owner, name, getattr(p, name), "Ohm" if name == "r_m" else "seconds")
    _check_non_negative(owner, "t_ref", p.t_ref, "seconds")
    for f in fields(p):
        _check_finite(owner, f.name, float(getattr(p, f.name)))
    if p.v_reset >= p.v_threshold and p.kind is not NeuronKind.ADAPTIVE_LIF:
        raise ValueError(
            f"{owner}.v_reset ({p.v_reset} V) must be below v_threshold ({p.v_threshold} V), "
            "or every reset would spike again"
        )


class LIFState(NamedTuple):
    """State of ``CurrentLIF`` and ``ConductanceLIF``; every tensor is ``(batch, n)``."""

    v: Tensor
    g_exc: Tensor
    g_inh: Tensor
    refractory: Tensor  # steps left, as a float of the state dtype


class AdaptiveLIFState(NamedTuple):
    """``LIFState`` plus the adaptive threshold offset ``theta``, ``(batch, n)`` each."""

    v: Tensor
    g_exc: Tensor
    g_inh: Tensor
    refractory: Tensor
    theta: Tensor


NeuronState = LIFState | AdaptiveLIFState

STATE_VARIABLES: dict[NeuronKind, tuple[str, ...]] = {
    NeuronKind.CURRENT_LIF: LIFState._fields,
    NeuronKind.CONDUCTANCE_LIF: LIFState._fields,
    NeuronKind.ADAPTIVE_LIF: AdaptiveLIFState._fields,
}


class Coefficients(NamedTuple):
    """Per-step constants derived once from (params, dt); shared by both engine paths."""

    decay_m: float  # exp(-dt/tau_m)
    decay_exc: float
    decay_inh: float
    k_exc: float  # CurrentLIF: effect of g_exc(t) on v(t+dt)
    k_inh: float
    k_ext: float  # CurrentLIF: effect of r_m*i_ext on v(t+dt)
    refractory_steps: float
    decay_theta: float
    dt_over_tau_m: float


def refractory_steps(t_ref: float, dt: float) -> int:
    """Brian2's ``timestep``: the number of whole steps in ``t_ref`` (robust to rounding)."""
    return int(t_ref / dt + 1e-3)


def _coupling(tau_m: float, tau_syn: float, dt: float) -> float:
    """Exact response of v after dt to a unit synaptic current decaying with tau_syn."""
    if math.isclose(tau_m, tau_syn, rel_tol=1e-9):
        return dt / tau_m * math.exp(-dt / tau_m)
    return tau_syn / (tau_syn - tau_m) * (math.exp(-dt / tau_syn) - math.exp(-dt / tau_m))


@lru_cache(maxsize=256)
def coefficients(params: NeuronParams, dt: float) -> Coefficients:
    if not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    tau_theta = params.tau_theta if isinstance(params, AdaptiveLIF) else math.inf
    return Coefficients(
        decay_m=math.exp(-dt / params.tau_m),
        decay_exc=math.exp(-dt / params.tau_exc),
        decay_inh=math.exp(-dt / params.tau_inh),
        k_exc=_coupling(params.tau_m, params.tau_exc, dt),
        k_inh=_coupling(params.tau_m, params.tau_inh, dt),
        k_ext=1.0 - math.exp(-dt / params.tau_m),
        refractory_steps=float(refractory_steps(params.t_ref, dt)),
        decay_theta=math.exp(-dt / tau_theta),
        dt_over_tau_m=dt / params.tau_m,
    )


def initial_state(params: NeuronParams, batch: int, n: int, *, dtype: torch.dtype, device: torch.device) -> NeuronState:
    """Resting state: v = v_rest, no conductance, not refractory, theta = 0."""
    v = torch.full((batch, n), params.v_rest, dtype=dtype, device=device)
    zeros = [torch.zeros((batch, n), dtype=dtype, device=device) for _ in range(4)]
    if isinstance(params, AdaptiveLIF):
        return AdaptiveLIFState(v, zeros[0], zeros[1], zeros[2], zeros[3])
    return LIFState(v, zeros[0], zeros[1], zeros[2])


def _threshold_and_reset(
    v: Tensor,
    refractory: Tensor,
    active: Tensor,
    threshold: Tensor | float,
    params: NeuronParams,
    c: Coefficients,
    surrogate: Surrogate | None,
) -> tuple[Tensor, Tensor, Tensor]:
    if surrogate is None:
        spikes = (v > threshold) & active
        v = torch.where(spikes, torch.full_like(v, params.v_reset), v)
    else:  # the same forward values, differentiable: Heaviside with a surrogate derivative, reset by subtraction
        spikes_f = surrogate.spike(v, threshold) * active.to(v.dtype)
        v = v + spikes_f * (params.v_reset - v)
        spikes = spikes_f
    refractory = torch.where(spikes.bool(), torch.full_like(refractory, c.refractory_steps), refractory)
    return spikes, v, refractory


def step(
    state: NeuronState,
    i_ext: Tensor | None,
    params: NeuronParams,
    dt: float,
    *,
    surrogate: Surrogate | None = None,
) -> tuple[Tensor, NeuronState]:
    """Advance every neuron by one step of ``dt`` seconds.

    ``i_ext`` is the external current in amperes, ``(batch, n)`` or ``None``; it is held
    constant over the step. Returns ``(spikes, new_state)`` with ``spikes`` boolean.

    With a ``surrogate`` (training by backpropagation through time) the forward values are
    the same, but ``spikes`` are floats (0 or 1) whose derivative is the surrogate's, and the
    reset ``v -> v_reset`` is written ``v + z (v_reset - v)`` so gradients flow through it.
    """
    c = coefficients(params, dt)
    refractory = torch.clamp_min(state.refractory - 1.0, 0.0)
    active = refractory <= 0.0
    drive = None if i_ext is None else i_ext * params.r_m
    if isinstance(params, CurrentLIF):
        v_new = (state.v - params.v_rest) * c.decay_m + params.v_rest + c.k_exc * state.g_exc + c.k_inh * state.g_inh
        if drive is not None:
            v_new = v_new + c.k_ext * drive
    else:
        g_total = 1.0 + state.g_exc + state.g_inh
        target = params.v_rest + state.g_exc * params.e_exc + state.g_inh * params.e_inh
        if drive is not None:
            target = target + drive
        v_inf = target / g_total
        v_new = v_inf + (state.v - v_inf) * torch.exp(g_total * -c.dt_over_tau_m)
    v = torch.where(active, v_new, state.v)
    g_exc = state.g_exc * c.decay_exc
    g_inh = state.g_inh * c.decay_inh
    if isinstance(state, AdaptiveLIFState):
        if not isinstance(params, AdaptiveLIF):
            raise TypeError(f"AdaptiveLIFState needs AdaptiveLIF params, got {type(params).__name__}")
        theta = state.theta * c.decay_theta
        spikes, v, refractory = _threshold_and_reset(
            v, refractory, active, params.v_threshold + theta, params, c, surrogate
        )
        theta = theta + spikes.to(theta.dtype) * params.theta_plus
        return spikes, AdaptiveLIFState(v, g_exc, g_inh, refractory, theta)
    spikes, v, refractory = _threshold_and_reset(v, refractory, active, params.v_threshold, params, c, surrogate)
    return spikes, LIFState(v, g_exc, g_inh, refractory)
