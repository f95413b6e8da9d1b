"""Learning inside the compiled time loop: the numba kernels of every rule, and what a learner
hands the compiled path (``CompiledLearner``).

The pure PyTorch functions of ``neurosim.learning`` are the specification; each kernel here
does the same arithmetic, in the state's dtype and in the same order, on one instance
(batch 1), event-driven where the rule is (only the rows of pre neurons and the columns of
post neurons that spiked are touched):

- pair STDP (``stdp.pair_stdp_step``), additive or multiplicative, all-to-all or nearest;
- triplet STDP (``stdp.triplet_stdp_step``);
- reward-modulated STDP (``stdp.reward_stdp_step``): the pair change goes into the
  eligibility ``c`` (dense decay every step), and a reward signal moves the weights by
  ``learning_rate * r * c * dt``, with ``r = reward_per_spike * n / dt`` when ``n`` neurons of
  the reward source fire in the step (a dopamine-like population or input);
- the sleep rule (``sleep.sleep_update``);

and after the rule, in the learner's order (``learning/learner.py``):

- the regulariser's pull ``w <- clamp(w - c (w - centre))`` (EWC, with ``c = min(rate lambda
  F, 1)`` computed once per stretch by the regulariser);
- the online eligibility gradient ``g_k = L_post * (psi(v_post) * xbar_pre)`` with the
  readout's learning signal ``L = (W[y] - p W) / T`` from the sample's rates so far
  (``surrogate.online_gradient``, ``readout.LinearReadout.learning_signal``), folded into a
  ``FisherAccumulator``'s EMA ``F = (1 - alpha) F + alpha g^2`` in place (float32, as the
  accumulator keeps it). A step whose gradient is not finite, or whose squares overflow,
  leaves the EMA alone and is counted; under the RAISE policy the loop stops after it.

Reductions (the readout's matrix products and softmax) are summed in a fixed order here and
by BLAS in PyTorch, so the gradient and Fisher agree to rounding (well within 1e-6 relative
in float64); spikes, weights and traces are bit for bit when no such reduction feeds them.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from neurosim.sim.synapses import Projection

FloatArray = npt.NDArray[Any]  # float32 or float64: the simulation's dtype


class RuleKind(enum.IntEnum):
    PAIR = 0
    TRIPLET = 1
    REWARD = 2
    SLEEP = 3


class SurrogateCode(enum.IntEnum):
    FAST_SIGMOID = 0
    ARCTAN = 1


@dataclass(frozen=True)
class PairKernel:
    """Pair STDP; ``pre_trace``/``post_trace`` are the learner's traces (updated in place)."""

    pre_trace: FloatArray
    post_trace: FloatArray
    decay_pre: float
    decay_post: float
    a_plus: float
    a_minus: float
    w_min: float
    w_max: float
    multiplicative: bool
    nearest: bool


@dataclass(frozen=True)
class TripletKernel:
    r1: FloatArray
    r2: FloatArray
    o1: FloatArray
    o2: FloatArray
    decay_r1: float
    decay_r2: float
    decay_o1: float
    decay_o2: float
    a2_plus: float
    a3_plus: float
    a2_minus: float
    a3_minus: float
    w_min: float
    w_max: float


@dataclass(frozen=True)
class RewardKernel:
    """Reward-modulated pair STDP; ``reward_source`` names the population or input whose
    spikes deliver reward (None: no reward inside the loop, e.g. rewards given per sample)."""

    pair: PairKernel
    eligibility: FloatArray
    decay_eligibility: float
    learning_rate: float
    reward_source: str | None
    reward_per_spike: float


@dataclass(frozen=True)
class SleepKernel:
    last_pre_spike: FloatArray  # s; -inf before the first spike
    protection: FloatArray  # per synapse
    inc: float
    dec: float
    window: float
    w_min: float
    w_max: float


Kernel = PairKernel | TripletKernel | RewardKernel | SleepKernel


@dataclass(frozen=True)
class PullTerms:
    """A regulariser's linear pull ``-coefficient * (w - centre)`` per synapse."""

    coefficient: FloatArray
    centre: FloatArray


@dataclass(frozen=True)
class GradientTerms:
    """What the online eligibility gradient needs: the readout, the sample's label, its post
    spike counts so far (updated in place) and the surrogate."""

    readout_weight: FloatArray  # (n_classes, n_post)
    readout_bias: FloatArray  # (n_classes,)
    label: int
    counts: FloatArray  # (n_post,)
    sample_steps: int
    surrogate: SurrogateCode
    width: float
    adaptive_threshold: bool  # threshold = v_threshold + theta


@dataclass(frozen=True)
class FisherTerms:
    ema: npt.NDArray[np.float32]  # the accumulator's buffer, folded in place
    alpha: float
    stop_on_non_finite: bool


@dataclass(frozen=True)
class CompiledLearner:
    """One learner's work in the compiled loop: a rule, and optionally the pull, the gradient
    and the Fisher EMA it feeds. ``max_steps`` ends the stretch early (a snapshot falls due)."""

    projection: Projection
    kernel: Kernel
    pull: PullTerms | None = None
    gradient: GradientTerms | None = None
    fisher: FisherTerms | None = None
    max_steps: int | None = None


@dataclass(frozen=True)
class CompiledOutcome:
    """What a stretch did for one learner: steps run, EMA steps folded, non-finite steps left
    out, and the sample's step count after it."""

    steps: int
    fisher_steps: int = 0
    non_finite: int = 0
    sample_steps: int = 0
    stopped: bool = field(default=False)


# Columns of the integer table (one row per learner).
(I_PROJ, I_RULE, I_MULT, I_NEAREST, I_PRE0, I_POST0, I_NPOST, I_COL0, I_COLSYN0, I_SYN0, I_REWARD_SRC0,
 I_REWARD_NSRC, I_GRAD, I_NCLASS, I_RO0, I_RB0, I_LABEL, I_SURR, I_THETA, I_POP, I_FISHER, I_STOP,
 I_PULL, I_FULL_ROWS) = range(24)  # fmt: skip
N_INT = 24
# Columns of the float table (simulation dtype).
(F_DECAY_PRE, F_DECAY_PRE2, F_DECAY_POST, F_DECAY_POST2, F_A_PLUS, F_A_MINUS, F_A3_PLUS, F_A3_MINUS, F_W_MIN,
 F_W_MAX, F_ONE, F_DECAY_ELIG, F_LEARNING_RATE, F_REWARD_PER_SPIKE, F_INC, F_DEC, F_WINDOW, F_WIDTH, F_HALF,
 F_PI, F_ALPHA) = range(21)  # fmt: skip
N_FLOAT = 21
# The float32 table (the Fisher EMA's own arithmetic), the float64 table (factors PyTorch
# forms from Python floats before it meets a tensor) and the in/out state table.
FF_ONE_MINUS_ALPHA = 0
D_LEARNING_RATE, D_REWARD_PER_SPIKE = 0, 1
S_SAMPLE_STEPS, S_APPLIED, S_NON_FINITE, S_STOPPED = range(4)
# Columns of the projection table and the coefficient table (compiled.py).
P_SRC0, P_NSRC, P_TGT0, P_CHANNEL, P_DELAY, P_PTR0, P_SYN0 = range(7)
C_V_THRESHOLD = 1
# Positions in the tuple of learning arrays handed to the kernel.
(A_INT, A_FLOAT, A_FLOAT32, A_FLOAT64, A_STATE, A_PRE1, A_PRE2, A_POST1, A_POST2, A_COL_PTR, A_COL_SYN, A_COL_PRE,
 A_ELIG, A_FISHER, A_PULL_COEF, A_PULL_CENTRE, A_PROTECTION, A_WORK, A_RO_W, A_RO_B, A_COUNTS, A_SIGNAL, A_PSI,
 A_LOGITS, A_SCRATCH) = range(25)  # fmt: skip
# Slots of the scratch array (simulation dtype): Python floats cast as PyTorch casts them.
X_NOW, X_DT, X_SPAN, X_REWARD = range(4)


@numba.njit(cache=True, inline="always")
def _clip(w: Any, lo: Any, hi: Any) -> Any:
    """``torch.clamp``; written with comparisons, which LLVM vectorises (``min``/``max`` not)."""
    w = lo if w < lo else w
    return hi if w > hi else w


@numba.njit(cache=True, nogil=True)
def _decay(trace: Any, start: int, n: int, factor: Any) -> None:
    for i in range(start, start + n):
        trace[i] = trace[i] * factor


@numba.njit(cache=True, nogil=True)
def _pair_rule(r: int, slot: int, la: Any, proj: Any, indptr: Any, post: Any, w: Any, w_off: int,
               spike_list: Any, spike_count: Any) -> None:  # fmt: skip
    """``stdp.pair_stdp_change`` on ``w[w_off + syn]`` (the weights, or the reward rule's
    working copy): decay; pre pathway (bump, depress); post pathway (bump, potentiate)."""
    it, f = la[A_INT], la[A_FLOAT]
    x_pre, x_post = la[A_PRE1], la[A_POST1]
    col_ptr, col_syn, col_pre = la[A_COL_PTR], la[A_COL_SYN], la[A_COL_PRE]
    q = it[r, I_PROJ]
    src0, n_pre, tgt0 = proj[q, P_SRC0], proj[q, P_NSRC], proj[q, P_TGT0]
    syn0, ptr0 = proj[q, P_SYN0], proj[q, P_PTR0]
    pre0, post0, n_post = it[r, I_PRE0], it[r, I_POST0], it[r, I_NPOST]
    col0, colsyn0 = it[r, I_COL0], it[r, I_COLSYN0]
    multiplicative = it[r, I_MULT] == 1
    nearest = it[r, I_NEAREST] == 1
    one, w_min, w_max = f[r, F_ONE], f[r, F_W_MIN], f[r, F_W_MAX]
    _decay(x_pre, pre0, n_pre, f[r, F_DECAY_PRE])
    _decay(x_post, post0, n_post, f[r, F_DECAY_POST])
    for m in range(spike_count[slot, 0]):
        s = spike_list[slot, 0, m]
        if s < src0 or s >= src0 + n_pre:
            continue
        i = s - src0
        x_pre[pre0 + i] = one if nearest else x_pre[pre0 + i] + one
        for syn in range(indptr[ptr0 + i], indptr[ptr0 + i + 1]):
            dep = f[r, F_A_MINUS] * x_post[post0 + post[syn0 + syn]]
            k = w_off + syn
            wk = w[k]
            w[k] = wk - dep * (wk - w_min) if multiplicative else _clip(wk - dep, w_min, w_max)
    for m in range(spike_count[slot, 0]):
        s = spike_list[slot, 0, m]
        if s < tgt0 or s >= tgt0 + n_post:
            continue
        j = s - tgt0
        x_post[post0 + j] = one if nearest else x_post[post0 + j] + one
        for c in range(col_ptr[col0 + j], col_ptr[col0 + j + 1]):
            k = w_off + col_syn[colsyn0 + c]
            pot = f[r, F_A_PLUS] * x_pre[pre0 + col_pre[colsyn0 + c]]
            wk = w[k]
            w[k] = wk + pot * (w_max - wk) if multiplicative else _clip(wk + pot, w_min, w_max)


@numba.njit(cache=True, nogil=True)
def _triplet_rule(r: int, slot: int, la: Any, proj: Any, indptr: Any, post: Any, weight: Any,
                  spike_list: Any, spike_count: Any) -> None:  # fmt: skip
    """``stdp.triplet_stdp_step``: depression at pre spikes with r2 from before the spike,
    potentiation at post spikes with o2 from before it; then the post traces are bumped."""
    it, f = la[A_INT], la[A_FLOAT]
    r1, r2, o1, o2 = la[A_PRE1], la[A_PRE2], la[A_POST1], la[A_POST2]
    col_ptr, col_syn, col_pre = la[A_COL_PTR], la[A_COL_SYN], la[A_COL_PRE]
    q = it[r, I_PROJ]
    src0, n_pre, tgt0 = proj[q, P_SRC0], proj[q, P_NSRC], proj[q, P_TGT0]
    syn0, ptr0 = proj[q, P_SYN0], proj[q, P_PTR0]
    pre0, post0, n_post = it[r, I_PRE0], it[r, I_POST0], it[r, I_NPOST]
    col0, colsyn0 = it[r, I_COL0], it[r, I_COLSYN0]
    one, w_min, w_max = f[r, F_ONE], f[r, F_W_MIN], f[r, F_W_MAX]
    _decay(r1, pre0, n_pre, f[r, F_DECAY_PRE])
    _decay(r2, pre0, n_pre, f[r, F_DECAY_PRE2])
    _decay(o1, post0, n_post, f[r, F_DECAY_POST])
    _decay(o2, post0, n_post, f[r, F_DECAY_POST2])
    for m in range(spike_count[slot, 0]):
        s = spike_list[slot, 0, m]
        if s < src0 or s >= src0 + n_pre:
            continue
        i = s - src0
        factor = f[r, F_A_MINUS] + f[r, F_A3_MINUS] * r2[pre0 + i]
        for syn in range(indptr[ptr0 + i], indptr[ptr0 + i + 1]):
            k = syn0 + syn
            weight[k] = _clip(weight[k] - o1[post0 + post[k]] * factor, w_min, w_max)
        r1[pre0 + i] = r1[pre0 + i] + one
        r2[pre0 + i] = r2[pre0 + i] + one
    for m in range(spike_count[slot, 0]):
        s = spike_list[slot, 0, m]
        if s < tgt0 or s >= tgt0 + n_post:
            continue
        j = s - tgt0
        factor = f[r, F_A_PLUS] + f[r, F_A3_PLUS] * o2[post0 + j]
        for c in range(col_ptr[col0 + j], col_ptr[col0 + j + 1]):
            k = syn0 + col_syn[colsyn0 + c]
            weight[k] = _clip(weight[k] + r1[pre0 + col_pre[colsyn0 + c]] * factor, w_min, w_max)
    for m in range(spike_count[slot, 0]):
        s = spike_list[slot, 0, m]
        if s < tgt0 or s >= tgt0 + n_post:
            continue
        j = s - tgt0
        o1[post0 + j] = o1[post0 + j] + one
        o2[post0 + j] = o2[post0 + j] + one


@numba.njit(cache=True, nogil=True)
def _reward_rule(r: int, slot: int, dt: float, step_dt: Any, la: Any, proj: Any, indptr: Any, post: Any, weight: Any,
                 spike_list: Any, spike_count: Any) -> None:  # fmt: skip
    """``stdp.reward_stdp_step``: ``c = c * decay + (pair change)``; a reward moves ``w``."""
    it, f = la[A_INT], la[A_FLOAT]
    elig, work = la[A_ELIG], la[A_WORK]
    col_ptr, col_syn = la[A_COL_PTR], la[A_COL_SYN]
    q = it[r, I_PROJ]
    src0, n_pre, tgt0 = proj[q, P_SRC0], proj[q, P_NSRC], proj[q, P_TGT0]
    syn0, ptr0, n_syn = proj[q, P_SYN0], proj[q, P_PTR0], indptr[proj[q, P_PTR0] + n_pre] - indptr[proj[q, P_PTR0]]
    n_post, col0, colsyn0, e0 = it[r, I_NPOST], it[r, I_COL0], it[r, I_COLSYN0], it[r, I_SYN0]
    # the working copy equals the weights at every step start; the pair rule moves it
    _pair_rule(r, slot, la, proj, indptr, post, work, e0, spike_list, spike_count)
    _decay(elig, e0, n_syn, f[r, F_DECAY_ELIG])
    for m in range(spike_count[slot, 0]):
        s = spike_list[slot, 0, m]
        if src0 <= s < src0 + n_pre:
            i = s - src0
            for syn in range(indptr[ptr0 + i], indptr[ptr0 + i + 1]):
                elig[e0 + syn] = elig[e0 + syn] + (work[e0 + syn] - weight[syn0 + syn])
                work[e0 + syn] = weight[syn0 + syn]
        elif tgt0 <= s < tgt0 + n_post:
            j = s - tgt0
            for c in range(col_ptr[col0 + j], col_ptr[col0 + j + 1]):
                syn = col_syn[colsyn0 + c]
                elig[e0 + syn] = elig[e0 + syn] + (work[e0 + syn] - weight[syn0 + syn])
                work[e0 + syn] = weight[syn0 + syn]
    n_src = it[r, I_REWARD_NSRC]
    if n_src == 0:
        return
    r0 = it[r, I_REWARD_SRC0]
    count = 0
    for m in range(spike_count[slot, 0]):
        s = spike_list[slot, 0, m]
        if r0 <= s < r0 + n_src:
            count += 1
    if count == 0:
        return
    # w += learning_rate * reward * c * dt with reward = per_spike * count / dt (a rate)
    d = la[A_FLOAT64]
    step_dt[X_REWARD] = d[r, D_LEARNING_RATE] * (d[r, D_REWARD_PER_SPIKE] * count / dt)
    factor, dt_ = step_dt[X_REWARD], step_dt[X_DT]
    w_min, w_max = f[r, F_W_MIN], f[r, F_W_MAX]
    for syn in range(n_syn):
        wk = _clip(weight[syn0 + syn] + elig[e0 + syn] * factor * dt_, w_min, w_max)
        weight[syn0 + syn] = wk
        work[e0 + syn] = wk


@numba.njit(cache=True, nogil=True)
def _sleep_rule(r: int, slot: int, step_dt: Any, la: Any, proj: Any, post: Any, weight: Any,
                spike_list: Any, spike_count: Any) -> None:  # fmt: skip
    """``sleep.sleep_update``: at a post spike, each incoming synapse gains ``inc`` if its pre
    neuron fired within ``window``, else loses ``dec * protection``; clipped to the bounds."""
    it, f = la[A_INT], la[A_FLOAT]
    last_pre, protection = la[A_PRE1], la[A_PROTECTION]
    col_ptr, col_syn, col_pre = la[A_COL_PTR], la[A_COL_SYN], la[A_COL_PRE]
    q = it[r, I_PROJ]
    src0, n_pre, tgt0, syn0 = proj[q, P_SRC0], proj[q, P_NSRC], proj[q, P_TGT0], proj[q, P_SYN0]
    pre0, n_post, col0, colsyn0, e0 = it[r, I_PRE0], it[r, I_NPOST], it[r, I_COL0], it[r, I_COLSYN0], it[r, I_SYN0]
    now = step_dt[X_NOW]
    one, w_min, w_max = f[r, F_ONE], f[r, F_W_MIN], f[r, F_W_MAX]
    for m in range(spike_count[slot, 0]):
        s = spike_list[slot, 0, m]
        if src0 <= s < src0 + n_pre:
            last_pre[pre0 + s - src0] = now
    for m in range(spike_count[slot, 0]):
        s = spike_list[slot, 0, m]
        if s < tgt0 or s >= tgt0 + n_post:
            continue
        j = s - tgt0
        for c in range(col_ptr[col0 + j], col_ptr[col0 + j + 1]):
            syn = col_syn[colsyn0 + c]
            causal = one if now - last_pre[pre0 + col_pre[colsyn0 + c]] <= f[r, F_WINDOW] else one - one
            change = f[r, F_INC] * causal - f[r, F_DEC] * protection[e0 + syn] * (one - causal)
            weight[syn0 + syn] = _clip(weight[syn0 + syn] + change, w_min, w_max)


@numba.njit(cache=True, nogil=True)
def _pull(r: int, la: Any, proj: Any, indptr: Any, weight: Any) -> None:
    """The regulariser's pull, ``w <- clamp(w + (-c) (w - centre))``, on every synapse."""
    it, f = la[A_INT], la[A_FLOAT]
    coef, centre = la[A_PULL_COEF], la[A_PULL_CENTRE]
    q = it[r, I_PROJ]
    syn0, ptr0, n_pre = proj[q, P_SYN0], proj[q, P_PTR0], proj[q, P_NSRC]
    n_syn = indptr[ptr0 + n_pre] - indptr[ptr0]
    e0 = it[r, I_SYN0]
    w_min, w_max = f[r, F_W_MIN], f[r, F_W_MAX]
    w, c, m = weight[syn0 : syn0 + n_syn], coef[e0 : e0 + n_syn], centre[e0 : e0 + n_syn]
    for k in range(n_syn):
        w[k] = _clip(w[k] + -c[k] * (w[k] - m[k]), w_min, w_max)


@numba.njit(cache=True, nogil=True)
def _learning_signal(r: int, la: Any, span: Any) -> None:
    """``L = (W[y] - softmax(W r + b) W) / span`` into the signal scratch, from the rates
    ``r = counts / span`` (``readout.LinearReadout.learning_signal``)."""
    it = la[A_INT]
    counts, signal, rates, logits = la[A_COUNTS], la[A_SIGNAL], la[A_PSI], la[A_LOGITS]
    ro_w, ro_b = la[A_RO_W], la[A_RO_B]
    post0, n_post = it[r, I_POST0], it[r, I_NPOST]
    n_class, ro0, rb0, label = it[r, I_NCLASS], it[r, I_RO0], it[r, I_RB0], it[r, I_LABEL]
    zero = span - span
    for j in range(n_post):
        rates[post0 + j] = counts[post0 + j] / span
    top = ro_b[rb0] - np.inf
    for c in range(n_class):
        acc = zero
        for j in range(n_post):
            acc += rates[post0 + j] * ro_w[ro0 + c * n_post + j]
        logits[rb0 + c] = acc + ro_b[rb0 + c]
        top = max(top, logits[rb0 + c])
    total = zero
    for c in range(n_class):
        logits[rb0 + c] = np.exp(logits[rb0 + c] - top)
        total += logits[rb0 + c]
    for c in range(n_class):
        logits[rb0 + c] = logits[rb0 + c] / total
    for j in range(n_post):
        mixed = zero
        for c in range(n_class):
            mixed += logits[rb0 + c] * ro_w[ro0 + c * n_post + j]
        signal[post0 + j] = (ro_w[ro0 + label * n_post + j] - mixed) / span


@numba.njit(cache=True, nogil=True)
def _surrogate(r: int, la: Any, tgt0: int, v: Any, theta: Any, coef: Any) -> None:
    """``psi(v)`` of the post neurons into the psi scratch (``surrogate.surrogate_derivative``)."""
    it, f = la[A_INT], la[A_FLOAT]
    psi = la[A_PSI]
    post0, n_post = it[r, I_POST0], it[r, I_NPOST]
    width, half, pi, one = f[r, F_WIDTH], f[r, F_HALF], f[r, F_PI], f[r, F_ONE]
    threshold = coef[it[r, I_POP], C_V_THRESHOLD]
    adaptive, arctan = it[r, I_THETA] == 1, it[r, I_SURR] == 1
    for j in range(n_post):
        thr = threshold + theta[0, tgt0 + j] if adaptive else threshold
        x = (v[0, tgt0 + j] - thr) / width
        if arctan:
            b = pi * x
            psi[post0 + j] = one / (width * (one + b * b))
        else:
            a = one + abs(x)
            psi[post0 + j] = half / (width * (a * a))


@numba.njit(cache=True, nogil=True)
def _largest(values: Any, start: int, n: int) -> float:
    top = 0.0
    for i in range(start, start + n):
        top = max(top, abs(float(values[i])))
    return top


@numba.njit(cache=True, nogil=True)
def _gradient_and_fisher(r: int, slot: int, dt: float, la: Any, proj: Any, indptr: Any, post: Any,
                         spike_list: Any, spike_count: Any, v: Any, theta: Any, coef: Any) -> bool:  # fmt: skip
    """Count the sample's post spikes; with a Fisher EMA, fold this step's online eligibility
    gradient ``g = L_post * (psi_post * xbar_pre)`` into it. Returns True when the loop must
    stop (a non-finite gradient under the RAISE policy)."""
    it, f, st = la[A_INT], la[A_FLOAT], la[A_STATE]
    x_pre, counts, signal, psi, scratch = la[A_PRE1], la[A_COUNTS], la[A_SIGNAL], la[A_PSI], la[A_SCRATCH]
    q = it[r, I_PROJ]
    n_pre, tgt0, syn0, ptr0 = proj[q, P_NSRC], proj[q, P_TGT0], proj[q, P_SYN0], proj[q, P_PTR0]
    pre0, post0, n_post = it[r, I_PRE0], it[r, I_POST0], it[r, I_NPOST]
    one = f[r, F_ONE]
    zero = one - one
    for m in range(spike_count[slot, 0]):
        s = spike_list[slot, 0, m]
        if tgt0 <= s < tgt0 + n_post:
            counts[post0 + s - tgt0] = counts[post0 + s - tgt0] + one
    steps = st[r, S_SAMPLE_STEPS] + 1
    st[r, S_SAMPLE_STEPS] = steps
    if it[r, I_FISHER] == 0:
        return False
    scratch[X_SPAN] = steps * dt
    _learning_signal(r, la, scratch[X_SPAN])
    _surrogate(r, la, tgt0, v, theta, coef)
    n_syn = indptr[ptr0 + n_pre] - indptr[ptr0]
    # finite when every factor is and no square can overflow; else check exactly, as PyTorch does
    bound = _largest(signal, post0, n_post) * _largest(psi, post0, n_post) * _largest(x_pre, pre0, n_pre)
    finite = math.isfinite(bound) and bound * bound * n_syn < 1e38
    if not finite:
        total_sq = zero
        for i in range(n_pre):
            xi = x_pre[pre0 + i]
            for syn in range(indptr[ptr0 + i], indptr[ptr0 + i + 1]):
                j = post[syn0 + syn]
                g = signal[post0 + j] * (psi[post0 + j] * xi)
                total_sq += g * g
        finite = math.isfinite(total_sq)
    if not finite:
        st[r, S_NON_FINITE] += 1
        if it[r, I_STOP] == 1:
            st[r, S_STOPPED] = 1
            return True
        return False
    _fold_fisher(r, la, n_pre, syn0, ptr0, indptr, post)
    st[r, S_APPLIED] += 1
    return False


@numba.njit(cache=True, nogil=True)
def _fold_fisher(r: int, la: Any, n_pre: int, syn0: int, ptr0: int, indptr: Any, post: Any) -> None:
    """``F = (1 - alpha) F + alpha g^2`` with ``g = L_post * (psi_post * xbar_pre)``, row by row."""
    it, f = la[A_INT], la[A_FLOAT]
    x_pre, signal, psi, fisher = la[A_PRE1], la[A_SIGNAL], la[A_PSI], la[A_FISHER]
    pre0, post0, n_post, e0 = it[r, I_PRE0], it[r, I_POST0], it[r, I_NPOST], it[r, I_SYN0]
    alpha, one_minus_alpha = f[r, F_ALPHA], la[A_FLOAT32][r, FF_ONE_MINUS_ALPHA]
    zero = alpha - alpha
    sig, ps = signal[post0 : post0 + n_post], psi[post0 : post0 + n_post]
    full_rows = it[r, I_FULL_ROWS] == 1  # every row is post 0..n_post-1 in order: no gather
    for i in range(n_pre):
        xi = x_pre[pre0 + i]
        start, end = indptr[ptr0 + i], indptr[ptr0 + i + 1]
        row = fisher[e0 + start : e0 + end]
        if xi == zero:  # g = 0 on this row: F = (1 - alpha) F + alpha 0 0
            for t in range(end - start):
                row[t] = row[t] * one_minus_alpha
        elif full_rows:
            for j in range(end - start):
                g = sig[j] * (ps[j] * xi)
                row[j] = row[j] * one_minus_alpha + alpha * g * g
        else:
            targets = post[syn0 + start : syn0 + end]
            for t in range(end - start):
                j = targets[t]
                g = sig[j] * (ps[j] * xi)
                row[t] = row[t] * one_minus_alpha + alpha * g * g


@numba.njit(cache=True, nogil=True)
def learn_step(step: int, slot: int, dt: float, la: Any, proj: Any, indptr: Any, post: Any, weight: Any,
               spike_list: Any, spike_count: Any, v: Any, theta: Any, coef: Any) -> bool:  # fmt: skip
    """Every learner's work for one step, in table order. Returns True to stop the loop."""
    it = la[A_INT]
    step_dt = la[A_SCRATCH]
    step_dt[X_NOW] = step * dt
    step_dt[X_DT] = dt
    stop = False
    for r in range(it.shape[0]):
        rule = it[r, I_RULE]
        if rule == 0:
            q = it[r, I_PROJ]
            _pair_rule(r, slot, la, proj, indptr, post, weight, proj[q, P_SYN0], spike_list, spike_count)
        elif rule == 1:
            _triplet_rule(r, slot, la, proj, indptr, post, weight, spike_list, spike_count)
        elif rule == 2:
            _reward_rule(r, slot, dt, step_dt, la, proj, indptr, post, weight, spike_list, spike_count)
        else:
            _sleep_rule(r, slot, step_dt, la, proj, post, weight, spike_list, spike_count)
        if it[r, I_PULL] == 1:
            _pull(r, la, proj, indptr, weight)
        if it[r, I_GRAD] == 1 and _gradient_and_fisher(
            r, slot, dt, la, proj, indptr, post, spike_list, spike_count, v, theta, coef
        ):
            stop = True
    return stop


def _layout(parts: Sequence[npt.NDArray[Any] | None], sizes: Sequence[int], dtype: Any) -> npt.NDArray[Any]:
    """One array for the kernel: the single learner's own array (updated in place), or the
    learners' arrays concatenated (zeros for a learner without one)."""
    if all(p is None for p in parts):
        return np.zeros(0, dtype=dtype)
    if len(parts) == 1:
        only = parts[0]
        if only is not None and only.dtype == dtype and only.flags.c_contiguous and only.ndim == 1:
            return only
    return np.concatenate(
        [
            np.zeros(n, dtype=dtype) if p is None else np.asarray(p, dtype=dtype).reshape(-1)
            for p, n in zip(parts, sizes, strict=True)
        ]
    )


def _write_back(array: npt.NDArray[Any], parts: Sequence[npt.NDArray[Any] | None], offsets: Sequence[int]) -> None:
    for part, start in zip(parts, offsets, strict=True):
        if part is not None and not np.shares_memory(part, array):
            part.reshape(-1)[:] = array[start : start + part.size]


def _pre_arrays(kernel: Kernel) -> tuple[FloatArray, FloatArray | None, FloatArray | None, FloatArray | None]:
    """(pre trace 1, pre trace 2, post trace 1, post trace 2) of a rule."""
    if isinstance(kernel, PairKernel):
        return kernel.pre_trace, None, kernel.post_trace, None
    if isinstance(kernel, RewardKernel):
        return kernel.pair.pre_trace, None, kernel.pair.post_trace, None
    if isinstance(kernel, TripletKernel):
        return kernel.r1, kernel.r2, kernel.o1, kernel.o2
    return kernel.last_pre_spike, None, None, None


def _rule_row(kernel: Kernel) -> tuple[RuleKind, list[float], bool, bool]:
    """The rule's kind, its float-table row, multiplicative and nearest."""
    row = [0.0] * N_FLOAT
    row[F_ONE], row[F_HALF], row[F_PI] = 1.0, 0.5, math.pi
    pair = kernel.pair if isinstance(kernel, RewardKernel) else kernel
    if isinstance(pair, PairKernel):
        row[F_DECAY_PRE], row[F_DECAY_POST] = pair.decay_pre, pair.decay_post
        row[F_A_PLUS], row[F_A_MINUS], row[F_W_MIN], row[F_W_MAX] = pair.a_plus, pair.a_minus, pair.w_min, pair.w_max
    if isinstance(kernel, RewardKernel):
        row[F_DECAY_ELIG] = kernel.decay_eligibility
        return RuleKind.REWARD, row, kernel.pair.multiplicative, kernel.pair.nearest
    if isinstance(kernel, PairKernel):
        return RuleKind.PAIR, row, kernel.multiplicative, kernel.nearest
    if isinstance(kernel, TripletKernel):
        row[F_DECAY_PRE], row[F_DECAY_PRE2] = kernel.decay_r1, kernel.decay_r2
        row[F_DECAY_POST], row[F_DECAY_POST2] = kernel.decay_o1, kernel.decay_o2
        row[F_A_PLUS], row[F_A3_PLUS] = kernel.a2_plus, kernel.a3_plus
        row[F_A_MINUS], row[F_A3_MINUS] = kernel.a2_minus, kernel.a3_minus
        row[F_W_MIN], row[F_W_MAX] = kernel.w_min, kernel.w_max
        return RuleKind.TRIPLET, row, False, False
    row[F_INC], row[F_DEC], row[F_WINDOW] = kernel.inc, kernel.dec, kernel.window
    row[F_W_MIN], row[F_W_MAX] = kernel.w_min, kernel.w_max
    return RuleKind.SLEEP, row, False, False


Columns = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]


class LearningTables:
    """The kernel's view of a list of learners for one stretch: tables and arrays (the
    learners' own arrays where one learner owns them, else concatenations written back)."""

    def __init__(  # noqa: PLR0915 - one pass that lays out every table
        self,
        learners: Sequence[CompiledLearner],
        *,
        projection_index: dict[int, int],
        population_index: dict[str, int],
        source_ranges: dict[str, tuple[int, int]],
        columns: Any,
        full_rows: Any,
        dtype: Any,
    ) -> None:
        self.learners = list(learners)
        n = len(self.learners)
        ints = np.zeros((n, N_INT), dtype=np.int64)
        floats = np.zeros((n, N_FLOAT), dtype=dtype)
        floats32 = np.zeros((n, 1), dtype=np.float32)
        floats64 = np.zeros((n, 2), dtype=np.float64)
        state = np.zeros((n, 4), dtype=np.int64)
        pre0 = post0 = col0 = colsyn0 = syn0 = class0 = ro0 = 0
        self._pre_offsets: list[int] = []
        self._post_offsets: list[int] = []
        self._syn_offsets: list[int] = []
        self._class_offsets: list[int] = []
        self._ro_offsets: list[int] = []
        pre_sizes, post_sizes, syn_sizes, class_sizes, ro_sizes = [], [], [], [], []
        ptrs, syns, pres = [], [], []
        for r, learner in enumerate(self.learners):
            proj, kernel = learner.projection, learner.kernel
            kind, row, multiplicative, nearest = _rule_row(kernel)
            ptr, syn, pre = columns(proj)
            grad, fisher, pull = learner.gradient, learner.fisher, learner.pull
            n_class = 0 if grad is None else int(grad.readout_weight.shape[0])
            ints[r, I_PROJ], ints[r, I_RULE] = projection_index[id(proj)], int(kind)
            ints[r, I_MULT], ints[r, I_NEAREST] = int(multiplicative), int(nearest)
            ints[r, I_PRE0], ints[r, I_POST0], ints[r, I_NPOST] = pre0, post0, proj.n_post
            ints[r, I_COL0], ints[r, I_COLSYN0], ints[r, I_SYN0] = col0, colsyn0, syn0
            ints[r, I_POP] = population_index[proj.target]
            ints[r, I_FULL_ROWS] = int(full_rows(proj))
            if isinstance(kernel, RewardKernel) and kernel.reward_source is not None:
                lo, hi = source_ranges[kernel.reward_source]
                ints[r, I_REWARD_SRC0], ints[r, I_REWARD_NSRC] = lo, hi - lo
                floats64[r] = (kernel.learning_rate, kernel.reward_per_spike)
            if grad is not None:
                ints[r, I_GRAD], ints[r, I_NCLASS], ints[r, I_RO0], ints[r, I_RB0] = 1, n_class, ro0, class0
                ints[r, I_LABEL], ints[r, I_SURR] = grad.label, int(grad.surrogate)
                ints[r, I_THETA] = int(grad.adaptive_threshold)
                state[r, S_SAMPLE_STEPS] = grad.sample_steps
                row[F_WIDTH] = grad.width
            if fisher is not None:
                ints[r, I_FISHER], ints[r, I_STOP] = 1, int(fisher.stop_on_non_finite)
                row[F_ALPHA] = fisher.alpha
                floats32[r, FF_ONE_MINUS_ALPHA] = 1.0 - fisher.alpha
            ints[r, I_PULL] = int(pull is not None)
            floats[r] = row
            self._pre_offsets.append(pre0)
            self._post_offsets.append(post0)
            self._syn_offsets.append(syn0)
            self._class_offsets.append(class0)
            self._ro_offsets.append(ro0)
            pre_sizes.append(proj.n_pre)
            post_sizes.append(proj.n_post)
            syn_sizes.append(proj.n_synapses)
            class_sizes.append(n_class)
            ro_sizes.append(n_class * proj.n_post)
            ptrs.append(ptr)
            syns.append(syn)
            pres.append(pre)
            pre0 += proj.n_pre
            post0 += proj.n_post
            syn0 += proj.n_synapses
            col0 += ptr.size
            colsyn0 += syn.size
            class0 += n_class
            ro0 += n_class * proj.n_post
        self.state = state
        traces = [_pre_arrays(learner.kernel) for learner in self.learners]
        self._traces = traces
        kernels = [learner.kernel for learner in self.learners]
        self._elig_parts = [k.eligibility if isinstance(k, RewardKernel) else None for k in kernels]
        self._fisher_parts = [lr.fisher.ema if lr.fisher is not None else None for lr in self.learners]
        self._count_parts = [lr.gradient.counts if lr.gradient is not None else None for lr in self.learners]
        grads = [lr.gradient for lr in self.learners]
        work = [
            np.array(lr.projection.synapse_weights().detach().cpu().numpy(), dtype=dtype)
            if isinstance(lr.kernel, RewardKernel)
            else None
            for lr in self.learners
        ]

        def cat64(parts: list[npt.NDArray[np.int64]]) -> npt.NDArray[np.int64]:
            return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

        self.arrays: tuple[npt.NDArray[Any], ...] = (
            ints,
            floats,
            floats32,
            floats64,
            state,
            _layout([t[0] for t in traces], pre_sizes, dtype),
            _layout([t[1] for t in traces], pre_sizes, dtype),
            _layout([t[2] for t in traces], post_sizes, dtype),
            _layout([t[3] for t in traces], post_sizes, dtype),
            cat64(ptrs),
            cat64(syns),
            cat64(pres),
            _layout(self._elig_parts, syn_sizes, dtype),
            _layout(self._fisher_parts, syn_sizes, np.float32),
            _layout([lr.pull.coefficient if lr.pull is not None else None for lr in self.learners], syn_sizes, dtype),
            _layout([lr.pull.centre if lr.pull is not None else None for lr in self.learners], syn_sizes, dtype),
            _layout([k.protection if isinstance(k, SleepKernel) else None for k in kernels], syn_sizes, dtype),
            _layout(work, syn_sizes, dtype),
            _layout([g.readout_weight.reshape(-1) if g is not None else None for g in grads], ro_sizes, dtype),
            _layout([g.readout_bias if g is not None else None for g in grads], class_sizes, dtype),
            _layout(self._count_parts, post_sizes, dtype),
            np.zeros(sum(post_sizes), dtype=dtype),
            np.zeros(sum(post_sizes), dtype=dtype),
            np.zeros(max(sum(class_sizes), 1), dtype=dtype),
            np.zeros(4, dtype=dtype),
        )

    def clip_bounded_weights(self, weights: npt.NDArray[Any], projection_syn0: dict[int, int]) -> None:
        """Rules that clip every weight every step (additive pair, triplet): clip once before
        the stretch, as the first step on the PyTorch path does; afterwards only the synapses
        they touch can leave the bounds."""
        for learner in self.learners:
            kernel = learner.kernel
            if (isinstance(kernel, PairKernel) and not kernel.multiplicative) or isinstance(kernel, TripletKernel):
                lo, hi = kernel.w_min, kernel.w_max
                start = projection_syn0[id(learner.projection)]
                part = weights[start : start + learner.projection.n_synapses]
                np.clip(part, lo, hi, out=part)

    def finish(self, steps: int) -> list[CompiledOutcome]:
        """Write concatenated arrays back to the learners' own; one outcome per learner."""
        a = self.arrays
        for k, offsets in ((A_PRE1, self._pre_offsets), (A_PRE2, self._pre_offsets),
                           (A_POST1, self._post_offsets), (A_POST2, self._post_offsets)):  # fmt: skip
            _write_back(a[k], [t[k - A_PRE1] for t in self._traces], offsets)
        _write_back(a[A_ELIG], self._elig_parts, self._syn_offsets)
        _write_back(a[A_FISHER], self._fisher_parts, self._syn_offsets)
        _write_back(a[A_COUNTS], self._count_parts, self._post_offsets)
        st = self.state
        return [
            CompiledOutcome(
                steps=steps,
                fisher_steps=int(st[r, S_APPLIED]),
                non_finite=int(st[r, S_NON_FINITE]),
                sample_steps=int(st[r, S_SAMPLE_STEPS]),
                stopped=bool(st[r, S_STOPPED]),
            )
            for r in range(len(self.learners))
        ]

    @property
    def stopped(self) -> bool:
        return bool(self.state[:, S_STOPPED].any()) if len(self.learners) else False
