"""STDP rules as pure functions over spike traces; weight bounds are part of each rule.

Weights are given in synapse order (``Projection.synapse_weights()``), with the synapses'
``pre_index`` and ``post_index``. Spikes are ``(batch, n)`` booleans of one step; with a
batch, the weight change is the mean over instances (the instances share one set of
weights). Every step function returns new tensors and never mutates its arguments.

Pair-based STDP (Song, Miller & Abbott 2000; Brian2's ``examples/synapses/STDP.py``)::

    dx_pre/dt = -x_pre / tau_pre,    x_pre += 1 on a pre spike   (NEAREST: x_pre = 1)
    dx_post/dt = -x_post / tau_post, x_post += 1 on a post spike
    on pre:  w -= a_minus * x_post * f_minus(w)      (depression, post before pre)
    on post: w += a_plus * x_pre * f_plus(w)         (potentiation, pre before post)
    additive:        f_plus = f_minus = 1, then w is clipped to [w_min, w_max]
    multiplicative:  f_plus = w_max - w, f_minus = w - w_min (soft bounds)

Within one step the pre pathway runs before the post pathway, as in Brian2, so a pre and
a post spike in the same step potentiate.

Triplet STDP (Pfister & Gerstner 2006, all-to-all)::

    pre:  w -= o1 * (a2_minus + a3_minus * r2);  then r1 += 1, r2 += 1
    post: w += r1 * (a2_plus + a3_plus * o2);    then o1 += 1, o2 += 1
    r1, r2, o1, o2 decay with tau_plus, tau_x, tau_minus, tau_y

Reward-modulated STDP (Izhikevich 2007): the pair rule's change goes into an eligibility
trace ``c`` (``dc/dt = -c / tau_eligibility + stdp``) instead of the weight, and
``dw = learning_rate * reward * c``, applied per step (``reward`` given to every step) or
per episode (``apply_episode_reward``).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from neurosim.units import TRACE_TIME_CONSTANT, convert_fields, physical

Tensor = torch.Tensor


class WeightDependence(enum.StrEnum):
    """How a change depends on the weight: additive, or multiplicative (soft bounds)."""

    ADDITIVE = "additive"
    MULTIPLICATIVE = "multiplicative"


class TraceMode(enum.StrEnum):
    """How a spike updates a trace: ``all_to_all`` (adds 1) or ``nearest`` (sets it to 1)."""

    ALL_TO_ALL = "all_to_all"  # every earlier spike counts: x += 1
    NEAREST = "nearest"  # only the latest spike counts: x = 1


def _check_bounds(owner: str, w_min: float, w_max: float) -> None:
    if not (math.isfinite(w_min) and math.isfinite(w_max) and w_min < w_max):
        raise ValueError(f"{owner}: need finite w_min < w_max, got w_min={w_min}, w_max={w_max}")


def _check_positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{owner}.{name} must be positive and finite, got {value!r}")


def _check_non_negative(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{owner}.{name} must be >= 0 and finite, got {value!r}")


@dataclass(frozen=True)
class PairSTDP:
    """Pair-based STDP. Defaults: Song et al. (2000) as in Brian2's STDP example, with
    gmax = 0.01: a_plus = 0.01 * gmax, a_minus = 1.05 * a_plus."""

    tau_pre: float = physical(20e-3, TRACE_TIME_CONSTANT)
    tau_post: float = physical(20e-3, TRACE_TIME_CONSTANT)
    a_plus: float = 1e-4  # weight units per pairing
    a_minus: float = 1.05e-4  # weight units per pairing (a magnitude)
    w_min: float = 0.0
    w_max: float = 0.01
    dependence: WeightDependence = WeightDependence.ADDITIVE
    traces: TraceMode = TraceMode.ALL_TO_ALL

    def __post_init__(self) -> None:
        convert_fields(self)
        _check_positive("PairSTDP", tau_pre=self.tau_pre, tau_post=self.tau_post)
        _check_non_negative("PairSTDP", a_plus=self.a_plus, a_minus=self.a_minus)
        _check_bounds("PairSTDP", self.w_min, self.w_max)


@dataclass(frozen=True)
class TripletSTDP:
    """Triplet STDP, all-to-all; defaults: Pfister & Gerstner (2006), visual cortex data,
    full model (their Table 4), whose amplitudes are for weights in [0, 1], here scaled by
    ``w_max = 0.01`` to the same weight units as ``PairSTDP``'s defaults (Song et al.'s
    ``gmax``). For weights in [0, 1]: ``TRIPLET_UNIT_AMPLITUDES`` with ``w_max=1.0``."""

    tau_plus: float = physical(16.8e-3, TRACE_TIME_CONSTANT)
    tau_minus: float = physical(33.7e-3, TRACE_TIME_CONSTANT)
    tau_x: float = physical(101e-3, TRACE_TIME_CONSTANT)
    tau_y: float = physical(125e-3, TRACE_TIME_CONSTANT)
    a2_plus: float = 5e-12
    a3_plus: float = 6.2e-5
    a2_minus: float = 7e-5
    a3_minus: float = 2.3e-6
    w_min: float = 0.0
    w_max: float = 0.01

    def __post_init__(self) -> None:
        convert_fields(self)
        _check_positive(
            "TripletSTDP", tau_plus=self.tau_plus, tau_minus=self.tau_minus, tau_x=self.tau_x, tau_y=self.tau_y
        )
        _check_non_negative(
            "TripletSTDP",
            a2_plus=self.a2_plus,
            a3_plus=self.a3_plus,
            a2_minus=self.a2_minus,
            a3_minus=self.a3_minus,
        )
        _check_bounds("TripletSTDP", self.w_min, self.w_max)


@dataclass(frozen=True)
class RewardSTDP:
    """Reward-modulated STDP with an eligibility trace (Izhikevich 2007: tau_c = 1 s)."""

    pair: PairSTDP = PairSTDP()
    tau_eligibility: float = physical(1.0, TRACE_TIME_CONSTANT)
    learning_rate: float = 1.0

    def __post_init__(self) -> None:
        convert_fields(self)
        _check_positive("RewardSTDP", tau_eligibility=self.tau_eligibility)
        _check_non_negative("RewardSTDP", learning_rate=self.learning_rate)


STDPRule = PairSTDP | TripletSTDP | RewardSTDP
# Pfister & Gerstner (2006)'s visual-cortex amplitudes as published, for weights in [0, 1]
TRIPLET_UNIT_AMPLITUDES = {"a2_plus": 5e-10, "a3_plus": 6.2e-3, "a2_minus": 7e-3, "a3_minus": 2.3e-4}


class PairTraces(NamedTuple):
    """Pre- and post-synaptic traces of pair STDP, ``(batch, n)`` each."""

    pre: Tensor  # (batch, n_pre)
    post: Tensor  # (batch, n_post)


class TripletTraces(NamedTuple):
    """The four traces of triplet STDP: two pre (``tau_plus``, ``tau_x``), two post (``tau_minus``,
    ``tau_y``)."""

    r1: Tensor  # pre, tau_plus
    r2: Tensor  # pre, tau_x
    o1: Tensor  # post, tau_minus
    o2: Tensor  # post, tau_y


class RewardState(NamedTuple):
    """Reward-modulated STDP's pair traces and per-synapse eligibility."""

    traces: PairTraces
    eligibility: Tensor  # (n_synapses,)


LearningState = PairTraces | TripletTraces | RewardState


class Synapses(NamedTuple):
    """Endpoints of every synapse, in the order of the weight vector."""

    pre_index: Tensor
    post_index: Tensor


def initial_state(
    rule: STDPRule, batch: int, n_pre: int, n_post: int, n_synapses: int, *, dtype: torch.dtype, device: torch.device
) -> LearningState:
    """Zero traces (and eligibility) for ``rule`` on a projection of these sizes."""

    def zeros(n: int) -> Tensor:
        return torch.zeros((batch, n), dtype=dtype, device=device)

    if isinstance(rule, TripletSTDP):
        return TripletTraces(zeros(n_pre), zeros(n_pre), zeros(n_post), zeros(n_post))
    traces = PairTraces(zeros(n_pre), zeros(n_post))
    if isinstance(rule, RewardSTDP):
        return RewardState(traces, torch.zeros(n_synapses, dtype=dtype, device=device))
    return traces


def _bump(trace: Tensor, spikes: Tensor, mode: TraceMode) -> Tensor:
    if mode is TraceMode.NEAREST:
        return torch.where(spikes, torch.ones_like(trace), trace)
    return trace + spikes.to(trace.dtype)


def _pairing(spikes: Tensor, spike_side: Tensor, trace: Tensor, trace_side: Tensor) -> Tensor:
    """Mean over the batch of ``spikes[b, spike_side[k]] * trace[b, trace_side[k]]``."""
    return (spikes.to(trace.dtype)[:, spike_side] * trace[:, trace_side]).mean(0)


def pair_stdp_step(
    w: Tensor, traces: PairTraces, pre: Tensor, post: Tensor, syn: Synapses, rule: PairSTDP, dt: float
) -> tuple[Tensor, PairTraces]:
    """The weights after one step (bounds applied) and the new traces."""
    x_pre = traces.pre * math.exp(-dt / rule.tau_pre)
    x_post = traces.post * math.exp(-dt / rule.tau_post)
    x_pre = _bump(x_pre, pre, rule.traces)
    depression = rule.a_minus * _pairing(pre, syn.pre_index, x_post, syn.post_index)
    if rule.dependence is WeightDependence.MULTIPLICATIVE:
        w_mid = w - depression * (w - rule.w_min)
    else:
        w_mid = torch.clamp(w - depression, rule.w_min, rule.w_max)
    x_post = _bump(x_post, post, rule.traces)
    potentiation = rule.a_plus * _pairing(post, syn.post_index, x_pre, syn.pre_index)
    if rule.dependence is WeightDependence.MULTIPLICATIVE:
        w_new = w_mid + potentiation * (rule.w_max - w_mid)
    else:
        w_new = torch.clamp(w_mid + potentiation, rule.w_min, rule.w_max)
    return w_new, PairTraces(x_pre, x_post)


def pair_stdp_change(
    w: Tensor, traces: PairTraces, pre: Tensor, post: Tensor, syn: Synapses, rule: PairSTDP, dt: float
) -> tuple[Tensor, PairTraces]:
    """The weight change of one step (bounds applied), ``w_new - w``, and the new traces."""
    w_new, traces = pair_stdp_step(w, traces, pre, post, syn, rule, dt)
    return w_new - w, traces


def triplet_stdp_step(
    w: Tensor, traces: TripletTraces, pre: Tensor, post: Tensor, syn: Synapses, rule: TripletSTDP, dt: float
) -> tuple[Tensor, TripletTraces]:
    """One step of triplet STDP (Pfister & Gerstner 2006): decay the four traces, apply the pair and triplet
    terms, clip to the bounds."""
    r1 = traces.r1 * math.exp(-dt / rule.tau_plus)
    r2 = traces.r2 * math.exp(-dt / rule.tau_x)
    o1 = traces.o1 * math.exp(-dt / rule.tau_minus)
    o2 = traces.o2 * math.exp(-dt / rule.tau_y)
    pre_f, post_f = pre.to(w.dtype), post.to(w.dtype)
    # depression at pre spikes uses r2 from before this spike (t - epsilon)
    dep = (
        pre_f[:, syn.pre_index] * o1[:, syn.post_index] * (rule.a2_minus + rule.a3_minus * r2[:, syn.pre_index])
    ).mean(0)
    w = torch.clamp(w - dep, rule.w_min, rule.w_max)
    r1, r2 = r1 + pre_f, r2 + pre_f
    pot = (
        post_f[:, syn.post_index] * r1[:, syn.pre_index] * (rule.a2_plus + rule.a3_plus * o2[:, syn.post_index])
    ).mean(0)
    w = torch.clamp(w + pot, rule.w_min, rule.w_max)
    return w, TripletTraces(r1, r2, o1 + post_f, o2 + post_f)


def reward_stdp_step(
    w: Tensor,
    state: RewardState,
    pre: Tensor,
    post: Tensor,
    syn: Synapses,
    rule: RewardSTDP,
    dt: float,
    reward: float | Tensor | None = None,
) -> tuple[Tensor, RewardState]:
    """Accumulate the pair rule's change into the eligibility trace; with ``reward`` (per
    step), also move the weights by ``learning_rate * reward * c * dt``."""
    change, traces = pair_stdp_change(w, state.traces, pre, post, syn, rule.pair, dt)
    eligibility = state.eligibility * math.exp(-dt / rule.tau_eligibility) + change
    if reward is not None:
        w = torch.clamp(w + rule.learning_rate * reward * eligibility * dt, rule.pair.w_min, rule.pair.w_max)
    return w, RewardState(traces, eligibility)


def apply_episode_reward(
    w: Tensor, state: RewardState, reward: float | Tensor, rule: RewardSTDP
) -> tuple[Tensor, RewardState]:
    """End of an episode: ``w += learning_rate * reward * c``; the eligibility is cleared."""
    w = torch.clamp(w + rule.learning_rate * reward * state.eligibility, rule.pair.w_min, rule.pair.w_max)
    return w, RewardState(state.traces, torch.zeros_like(state.eligibility))


def stdp_window(rule: PairSTDP, delta_t: Tensor) -> Tensor:
    """The additive pair rule's weight change for one pairing at ``delta_t = t_post - t_pre``
    (s): ``a_plus exp(-dt/tau_pre)`` for dt >= 0, ``-a_minus exp(dt/tau_post)`` for dt < 0."""
    return torch.where(
        delta_t >= 0,
        rule.a_plus * torch.exp(-delta_t.abs() / rule.tau_pre),
        -rule.a_minus * torch.exp(-delta_t.abs() / rule.tau_post),
    )
