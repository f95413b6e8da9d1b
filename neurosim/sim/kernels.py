"""Every numba kernel of the compiled time loop: the neuron update, event-driven
propagation, and the learning rules (``compiled.py`` drives them, ``compiled_learning.py``
lays out the learners' tables).

They live in one file on purpose: numba caches a compiled function by its own source file,
so a kernel calling kernels of another file would keep running a stale copy of them after
that file changed.

The neuron kernels run the equations of ``neurosim.sim.neurons.step`` with the constants
of the same ``coefficients`` function, every operation in the state's dtype and in the same
order, so a current-based network gives bit-identical results on both paths (conductance
models differ only by the ``exp`` implementation, within a few ulp).

The learning kernels do the arithmetic of the pure PyTorch functions of
``neurosim.learning`` (the specification) on one instance (batch 1), event-driven where the
rule is (only the rows of pre neurons and the columns of post neurons that spiked):

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

import math
from typing import Any

import numba
import numpy as np

# Columns of the per-population coefficient table.
(V_REST, V_THRESHOLD, V_RESET, DECAY_M, DECAY_EXC, DECAY_INH, K_EXC, K_INH, K_EXT, REF_STEPS,
 DECAY_THETA, NEG_DT_OVER_TAU_M, E_EXC, E_INH, R_M, THETA_PLUS, ONE, ZERO) = range(18)  # fmt: skip
N_COEFFICIENTS = 18
# Columns of the projection table. P_DSYN0: where the projection's delay pointers start in
# the concatenated ``delay_ptr`` array (Projection.delay_ptr, with P_DELAY its longest
# delay), or -1 when it has one delay (P_DELAY) for all synapses.
# P_GROUP: the source group (population or input, in source order) the projection reads.
P_SRC0, P_NSRC, P_TGT0, P_CHANNEL, P_DELAY, P_PTR0, P_SYN0, P_DSYN0, P_GROUP = range(9)
N_PROJECTION_COLUMNS = 9


# Columns of the Poisson-drive table; the counts of drive d are drawn with the thresholds
# count_threshold[D_CDF0 : D_CDF0 + D_CDF_LEN] (see neurosim.sim.inputs.PoissonDrive).
D_TGT0, D_N, D_CHANNEL, D_CDF0, D_CDF_LEN = range(5)
N_DRIVE_COLUMNS = 5
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True, inline="always")
def _splitmix(z: Any) -> Any:
    """SplitMix64's finaliser: a bijective mix of 64 bits (Steele, Lea & Flood 2014)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def poisson_count(key: Any, counter: int, threshold: Any, t0: int, t_len: int) -> int:
    """A Poisson count from a drive's generator ``key`` at position ``counter`` of its stream
    (``step * n + neuron``): SplitMix64 output ``z`` of the counter, inverted through the
    count's CDF scaled to 64 bits (``threshold[j] = P(k <= j) * 2**64``), in integers."""
    z = _splitmix(key + np.uint64(counter) * _GOLDEN)
    k = 0
    while k < t_len - 1 and z >= threshold[t0 + k]:
        k += 1
    return k


@numba.njit(cache=True, nogil=True)
def poisson_counts(keys: Any, step0: int, n_steps: int, n: int, threshold: Any, out: Any) -> None:
    """The counts ``out[k, b, i]`` of steps ``step0 + k`` for instance ``b`` (generator
    ``keys[b]``) of one drive of ``n`` neurons: what the compiled loop draws, for the PyTorch path."""
    for k in range(n_steps):
        for b in range(keys.shape[0]):
            base = (step0 + k) * n
            for i in range(n):
                out[k, b, i] = poisson_count(keys[b], base + i, threshold, 0, threshold.shape[0])


@numba.njit(cache=True, nogil=True)
def _update_population(
    kind: int, c: Any, vb: Any, geb: Any, gib: Any, rb: Any, thb: Any, hb: Any,
    drive_row: Any,
) -> None:  # fmt: skip
    """One state update + threshold + reset of one population of one instance (the arrays
    are its slices); branch-free inner loops from index 0, which LLVM vectorises.
    ``drive_row`` holds zeros where no current is injected (adding +0.0 changes nothing)."""
    if kind == 0:
        # the constants in locals: LLVM cannot know that the state arrays do not alias the
        # coefficient table, and would reload every constant after every store
        one, zero, v_rest, decay_m = c[ONE], c[ZERO], c[V_REST], c[DECAY_M]
        k_exc, k_inh, k_ext, r_m = c[K_EXC], c[K_INH], c[K_EXT], c[R_M]
        decay_exc, decay_inh, v_threshold, v_reset, ref_steps = (
            c[DECAY_EXC],
            c[DECAY_INH],
            c[V_THRESHOLD],
            c[V_RESET],
            c[REF_STEPS],
        )
        for i in range(vb.shape[0]):
            ref = rb[i] - one
            ref = ref if ref >= zero else zero
            active = ref <= zero
            v_new = (vb[i] - v_rest) * decay_m + v_rest + k_exc * geb[i] + k_inh * gib[i]
            v_new = v_new + k_ext * (drive_row[i] * r_m)
            vi = v_new if active else vb[i]
            geb[i] = geb[i] * decay_exc
            gib[i] = gib[i] * decay_inh
            spiked = active & (vi > v_threshold)
            vb[i] = v_reset if spiked else vi
            rb[i] = ref_steps if spiked else ref
            hb[i] = spiked
    else:
        one, zero, v_rest, e_exc, e_inh, r_m = c[ONE], c[ZERO], c[V_REST], c[E_EXC], c[E_INH], c[R_M]
        neg_dt_over_tau_m, decay_exc, decay_inh = c[NEG_DT_OVER_TAU_M], c[DECAY_EXC], c[DECAY_INH]
        v_threshold, v_reset, ref_steps = c[V_THRESHOLD], c[V_RESET], c[REF_STEPS]
        decay_theta, theta_plus = c[DECAY_THETA], c[THETA_PLUS]
        adaptive = kind == 2
        for i in range(vb.shape[0]):
            ref = rb[i] - one
            ref = ref if ref >= zero else zero
            active = ref <= zero
            g_total = one + geb[i] + gib[i]
            target = v_rest + geb[i] * e_exc + gib[i] * e_inh + drive_row[i] * r_m
            v_inf = target / g_total
            v_new = v_inf + (vb[i] - v_inf) * np.exp(g_total * neg_dt_over_tau_m)
            vi = v_new if active else vb[i]
            geb[i] = geb[i] * decay_exc
            gib[i] = gib[i] * decay_inh
            if adaptive:
                th = thb[i] * decay_theta
                spiked = active & (vi > v_threshold + th)
                thb[i] = th + theta_plus if spiked else th
            else:
                spiked = active & (vi > v_threshold)
            vb[i] = v_reset if spiked else vi
            rb[i] = ref_steps if spiked else ref
            hb[i] = spiked


@numba.njit(cache=True, nogil=True)
def _group_boundaries(spikes: Any, count: int, group_start: Any, first: Any) -> None:
    """``first[g]``: where the spikes of source group ``g`` begin in the sorted ``spikes[:count]``
    (``group_start`` holds each group's first source, then the number of sources)."""
    for g in range(group_start.shape[0]):
        lo, hi = 0, count
        bound = group_start[g]
        while lo < hi:
            mid = (lo + hi) >> 1
            if spikes[mid] < bound:
                lo = mid + 1
            else:
                hi = mid
        first[g] = lo


@numba.njit(cache=True, nogil=True)
def advance(  # noqa: PLR0912, PLR0915 - one flat compiled loop is the point of this module
    n_steps: int,
    step0: int,
    v: Any, g_exc: Any, g_inh: Any, refractory: Any, theta: Any,
    pop_range: Any, pop_kind: Any, coef: Any,
    drive: Any, has_drive: bool,
    external: Any, n_neurons: int,
    history: Any, spike_list: Any, spike_count: Any, group_start: Any, group_first: Any,
    proj: Any, indptr: Any, post: Any, weight: Any,
    delay_ptr: Any,
    drives: Any, drive_keys: Any, drive_weight: Any, count_threshold: Any, count_value: Any,
    learning: Any, n_learners: int, dt: float,
    records: Any, n_records: int,
) -> tuple[int, int]:  # fmt: skip
    batch = v.shape[0]
    n_sources = history.shape[2]
    slots = history.shape[0]
    capacity = records.shape[0]
    for k in range(n_steps):
        if n_records + batch * n_sources > capacity:
            if n_learners:
                fold_pending(learning, proj, indptr, post)
            return k, n_records
        step = step0 + k
        slot = step % slots
        drive_row = drive[k if has_drive else 0]
        for b in range(batch):
            hb = history[slot, b]
            for p in range(pop_kind.shape[0]):
                i0, i1 = pop_range[p, 0], pop_range[p, 1]
                _update_population(
                    pop_kind[p], coef[p], v[b, i0:i1], g_exc[b, i0:i1], g_inh[b, i0:i1],
                    refractory[b, i0:i1], theta[b, i0:i1], hb[i0:i1], drive_row[i0:i1],
                )  # fmt: skip
            for j in range(n_sources - n_neurons):
                hb[n_neurons + j] = external[k, b, j]
            count = 0
            for i in range(n_sources):
                if hb[i]:
                    spike_list[slot, b, count] = i
                    count += 1
                    records[n_records, 0] = step
                    records[n_records, 1] = i
                    records[n_records, 2] = b
                    n_records += 1
            spike_count[slot, b] = count
            _group_boundaries(spike_list[slot, b], count, group_start, group_first[slot, b])
        for q in range(proj.shape[0]):
            src0 = proj[q, P_SRC0]
            src1 = src0 + proj[q, P_NSRC]
            tgt0 = proj[q, P_TGT0]
            syn0 = proj[q, P_SYN0]
            ptr0 = proj[q, P_PTR0]
            dsyn0 = proj[q, P_DSYN0]
            if dsyn0 >= 0:  # per-synapse delays: the spikes of d steps ago through the synapses of delay d
                width = proj[q, P_DELAY] + 1
                group = proj[q, P_GROUP]
                target = g_exc if proj[q, P_CHANNEL] == 0 else g_inh
                for b in range(batch):
                    tb = target[b]
                    for d in range(width):
                        read = slot - d
                        if read < 0:
                            read += slots
                        spikes = spike_list[read, b]
                        for m in range(group_first[read, b, group], group_first[read, b, group + 1]):
                            segment = dsyn0 + (spikes[m] - src0) * width + d
                            for syn in range(delay_ptr[segment], delay_ptr[segment + 1]):
                                tb[tgt0 + post[syn0 + syn]] += weight[syn0 + syn]
                continue
            read = (step - proj[q, P_DELAY]) % slots
            target = g_exc if proj[q, P_CHANNEL] == 0 else g_inh
            for b in range(batch):
                tb = target[b]
                for m in range(spike_count[read, b]):
                    s = spike_list[read, b, m]
                    if s < src0 or s >= src1:
                        continue
                    row = ptr0 + s - src0
                    for syn in range(indptr[row], indptr[row + 1]):
                        tb[tgt0 + post[syn0 + syn]] += weight[syn0 + syn]
        for d in range(drives.shape[0]):  # Poisson drives, after the projections
            tgt0, cdf0, cdf_len = drives[d, D_TGT0], drives[d, D_CDF0], drives[d, D_CDF_LEN]
            target = g_exc if drives[d, D_CHANNEL] == 0 else g_inh
            wd = drive_weight[d]
            n_drive = drives[d, D_N]
            for b in range(batch):
                tb = target[b]
                key = drive_keys[d, b]
                base = step * n_drive
                for i in range(n_drive):
                    count = poisson_count(key, base + i, count_threshold, cdf0, cdf_len)
                    if count:
                        tb[tgt0 + i] += wd * count_value[cdf0 + count]
        if n_learners and learn_step(
            step, slot, dt, learning, proj, indptr, post, weight, spike_list, spike_count, v, theta, coef
        ):
            fold_pending(learning, proj, indptr, post)
            return k + 1, n_records  # a learner stopped the loop (see its outcome)
    if n_learners:
        fold_pending(learning, proj, indptr, post)
    return n_steps, n_records


# Columns of the integer table (one row per learner).
(I_PROJ, I_RULE, I_MULT, I_NEAREST, I_PRE0, I_POST0, I_NPOST, I_COL0, I_COLSYN0, I_SYN0, I_REWARD_SRC0,
 I_REWARD_NSRC, I_GRAD, I_NCLASS, I_RO0, I_RB0, I_LABEL, I_SURR, I_THETA, I_POP, I_FISHER, I_STOP,
 I_PULL, I_FULL_ROWS) = range(24)  # fmt: skip
N_INT = 24
# Columns of the float table (simulation dtype).
(F_DECAY_PRE, F_DECAY_PRE2, F_DECAY_POST, F_DECAY_POST2, F_A_PLUS, F_A_MINUS, F_A3_PLUS, F_A3_MINUS, F_W_MIN,
 F_W_MAX, F_ONE, F_DECAY_ELIG, F_LEARNING_RATE, F_REWARD_PER_SPIKE, F_INC, F_DEC, F_WINDOW, F_WIDTH, F_HALF,
 F_PI, F_ALPHA, F_PROTECT_INC, F_DEPENDENCE_WIDTH) = range(23)  # fmt: skip
N_FLOAT = 23
# The float32 table (the Fisher EMA's own arithmetic), the float64 table (factors PyTorch
# forms from Python floats before it meets a tensor) and the in/out state table.
FF_ONE_MINUS_ALPHA = 0
D_LEARNING_RATE, D_REWARD_PER_SPIKE = 0, 1
S_SAMPLE_STEPS, S_APPLIED, S_NON_FINITE, S_STOPPED, S_PENDING = range(5)
N_STATE = 5
# Positions in the tuple of learning arrays handed to the kernel.
(A_INT, A_FLOAT, A_FLOAT32, A_FLOAT64, A_STATE, A_PRE1, A_PRE2, A_POST1, A_POST2, A_COL_PTR, A_COL_SYN, A_COL_PRE,
 A_ELIG, A_FISHER, A_PULL_COEF, A_PULL_CENTRE, A_PROTECTION, A_WORK, A_RO_W, A_RO_B, A_COUNTS, A_SIGNAL, A_PSI,
 A_LOGITS, A_SCRATCH, A_FOLD_PRE, A_FOLD_POST) = range(27)  # fmt: skip
# How many steps' Fisher gradients wait before one pass folds them all into the EMA. The
# gradient is an outer product, so its square is too: ``alpha g_ij^2 = (alpha (L_j psi_j)^2)
# xbar_i^2``. Each step keeps the two factors (n_pre + n_post numbers), and one pass per
# FOLD_DEPTH steps folds them, each EMA row read and written once and updated in cache, in
# step order. Per element that is one multiply-add instead of five products (the PyTorch path
# squares the materialised gradient; the two agree to rounding, about 1e-7 relative in float32).
FOLD_DEPTH = 16
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
    potentiation at post spikes with o2 from before it, then that neuron's post traces bumped."""
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
        o1[post0 + j] = o1[post0 + j] + one  # only neuron j's own traces: bumping here is bumping after
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
    """``sleep.sleep_update``: at a post spike, each incoming synapse gains ``inc`` (times
    ``protection`` where ``F_PROTECT_INC`` is 1) if its pre neuron fired within ``window``,
    else loses ``dec * protection``, times the post neuron's gain (and, where
    ``F_DEPENDENCE_WIDTH`` ``a`` is positive, times ``2 / (1 + exp(w / a))``); clipped to the bounds."""
    it, f = la[A_INT], la[A_FLOAT]
    last_pre, protection, post_gain = la[A_PRE1], la[A_PROTECTION], la[A_POST1]
    col_ptr, col_syn, col_pre = la[A_COL_PTR], la[A_COL_SYN], la[A_COL_PRE]
    q = it[r, I_PROJ]
    src0, n_pre, tgt0, syn0 = proj[q, P_SRC0], proj[q, P_NSRC], proj[q, P_TGT0], proj[q, P_SYN0]
    pre0, n_post, col0, colsyn0, e0 = it[r, I_PRE0], it[r, I_NPOST], it[r, I_COL0], it[r, I_COLSYN0], it[r, I_SYN0]
    now = step_dt[X_NOW]
    one, w_min, w_max = f[r, F_ONE], f[r, F_W_MIN], f[r, F_W_MAX]
    protect_inc = f[r, F_PROTECT_INC] != 0
    width = f[r, F_DEPENDENCE_WIDTH]
    for m in range(spike_count[slot, 0]):
        s = spike_list[slot, 0, m]
        if src0 <= s < src0 + n_pre:
            last_pre[pre0 + s - src0] = now
    for m in range(spike_count[slot, 0]):
        s = spike_list[slot, 0, m]
        if s < tgt0 or s >= tgt0 + n_post:
            continue
        j = s - tgt0
        gain = post_gain[it[r, I_POST0] + j]
        for c in range(col_ptr[col0 + j], col_ptr[col0 + j + 1]):
            syn = col_syn[colsyn0 + c]
            causal = one if now - last_pre[pre0 + col_pre[colsyn0 + c]] <= f[r, F_WINDOW] else one - one
            shield = protection[e0 + syn]
            potentiation = f[r, F_INC] * shield if protect_inc else f[r, F_INC]
            change = gain * (potentiation * causal - f[r, F_DEC] * shield * (one - causal))
            if width > 0:
                change = change * ((one + one) / (one + np.exp(weight[syn0 + syn] / width)))
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
    for c in range(n_class):
        logits[rb0 + c] = zero
    # neuron-major: the class sums advance side by side instead of one long dependent chain
    # each; every class still adds its terms in neuron order, so the sums are unchanged
    for j in range(n_post):
        rate = counts[post0 + j] / span
        rates[post0 + j] = rate
        for c in range(n_class):
            logits[rb0 + c] += rate * ro_w[ro0 + c * n_post + j]
    top = ro_b[rb0] - np.inf
    for c in range(n_class):
        logits[rb0 + c] = logits[rb0 + c] + ro_b[rb0 + c]
        top = max(top, logits[rb0 + c])
    total = zero
    for c in range(n_class):
        logits[rb0 + c] = np.exp(logits[rb0 + c] - top)
        total += logits[rb0 + c]
    for c in range(n_class):
        logits[rb0 + c] = logits[rb0 + c] / total
    # class-major over contiguous readout rows (vectorises); each neuron's mixture still adds
    # its classes in class order, so the values are those of the neuron-major loop
    mixed = signal[post0 : post0 + n_post]
    for j in range(n_post):
        mixed[j] = zero
    for c in range(n_class):
        p_c = logits[rb0 + c]
        row = ro_w[ro0 + c * n_post : ro0 + (c + 1) * n_post]
        for j in range(n_post):
            mixed[j] += p_c * row[j]
    own = ro_w[ro0 + label * n_post : ro0 + (label + 1) * n_post]
    for j in range(n_post):
        mixed[j] = (own[j] - mixed[j]) / span


@numba.njit(cache=True, nogil=True)
def _surrogate(r: int, la: Any, tgt0: int, v: Any, theta: Any, coef: Any) -> None:
    """``psi(v)`` of the post neurons into the psi scratch (``surrogate.surrogate_derivative``)."""
    it, f = la[A_INT], la[A_FLOAT]
    psi = la[A_PSI]
    post0, n_post = it[r, I_POST0], it[r, I_NPOST]
    width, half, pi, one = f[r, F_WIDTH], f[r, F_HALF], f[r, F_PI], f[r, F_ONE]
    threshold = coef[it[r, I_POP], V_THRESHOLD]
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
    """The largest magnitude, or infinity when a value is not finite (NaN included)."""
    top = 0.0
    for i in range(start, start + n):
        a = abs(float(values[i]))
        if not math.isfinite(a):
            return math.inf
        top = a if a > top else top
    return top


@numba.njit(cache=True, nogil=True)
def _gradient_and_fisher(r: int, slot: int, dt: float, la: Any, proj: Any, indptr: Any, post: Any,
                         spike_list: Any, spike_count: Any, v: Any, theta: Any, coef: Any) -> bool:  # fmt: skip
    """Count the sample's post spikes; with a Fisher EMA, fold this step's online eligibility
    gradient ``g = L_post * (psi_post * xbar_pre)`` into it (deferred: ``_defer_fold``).
    Returns True when the loop must stop (a non-finite gradient under RAISE)."""
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
    if _defer_fold(r, la, n_pre):
        _fold_fisher(r, la, proj, indptr, post)
    st[r, S_APPLIED] += 1
    return False


@numba.njit(cache=True, nogil=True)
def _defer_fold(r: int, la: Any, n_pre: int) -> bool:
    """Keep this step's factors of ``alpha g^2`` for the next fold: ``xbar_pre^2`` and
    ``alpha (L_post psi_post)^2``. True when the buffer is full."""
    it, f, st = la[A_INT], la[A_FLOAT], la[A_STATE]
    pre0, post0, n_post = it[r, I_PRE0], it[r, I_POST0], it[r, I_NPOST]
    alpha = f[r, F_ALPHA]
    t = st[r, S_PENDING]
    x_pre, signal, psi = la[A_PRE1], la[A_SIGNAL], la[A_PSI]
    pre_sq, post_sq = la[A_FOLD_PRE][t], la[A_FOLD_POST][t]
    for i in range(pre0, pre0 + n_pre):
        pre_sq[i] = x_pre[i] * x_pre[i]
    for j in range(post0, post0 + n_post):
        u = signal[j] * psi[j]
        post_sq[j] = alpha * (u * u)
    st[r, S_PENDING] = t + 1
    return bool(t + 1 == la[A_FOLD_PRE].shape[0])


@numba.njit(cache=True, nogil=True)
def _fold_fisher(r: int, la: Any, proj: Any, indptr: Any, post: Any) -> None:
    """``F = (1 - alpha) F + alpha g^2`` for every pending step in step order, row by row
    (each row stays in cache across the steps)."""
    it, st = la[A_INT], la[A_STATE]
    pending = st[r, S_PENDING]
    st[r, S_PENDING] = 0
    fold_pre, fold_post, fisher = la[A_FOLD_PRE], la[A_FOLD_POST], la[A_FISHER]
    q = it[r, I_PROJ]
    n_pre, syn0, ptr0 = proj[q, P_NSRC], proj[q, P_SYN0], proj[q, P_PTR0]
    pre0, post0, n_post, e0 = it[r, I_PRE0], it[r, I_POST0], it[r, I_NPOST], it[r, I_SYN0]
    one_minus_alpha = la[A_FLOAT32][r, FF_ONE_MINUS_ALPHA]
    full_rows = it[r, I_FULL_ROWS] == 1  # every row is post 0..n_post-1 in order: no gather
    for i in range(n_pre):
        start, end = indptr[ptr0 + i], indptr[ptr0 + i + 1]
        row = fisher[e0 + start : e0 + end]
        targets = post[syn0 + start : syn0 + end]
        for t in range(pending):
            x_sq = fold_pre[t, pre0 + i]
            post_sq = fold_post[t, post0 : post0 + n_post]
            if x_sq == 0:  # g = 0 on this row: F = (1 - alpha) F + alpha 0 0
                for k in range(end - start):
                    row[k] = row[k] * one_minus_alpha
            elif full_rows:
                for j in range(end - start):
                    row[j] = row[j] * one_minus_alpha + post_sq[j] * x_sq
            else:
                for k in range(end - start):
                    row[k] = row[k] * one_minus_alpha + post_sq[targets[k]] * x_sq


@numba.njit(cache=True, nogil=True)
def fold_pending(la: Any, proj: Any, indptr: Any, post: Any) -> None:
    """Fold every learner's pending Fisher steps (before the loop hands its arrays back)."""
    st = la[A_STATE]
    for r in range(st.shape[0]):
        if st[r, S_PENDING] > 0:
            _fold_fisher(r, la, proj, indptr, post)


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
        if it[r, I_PULL] == 1:  # the pull touches only weights, which the gradient does not read
            _pull(r, la, proj, indptr, weight)
        if it[r, I_GRAD] == 1 and _gradient_and_fisher(r, slot, dt, la, proj, indptr, post, spike_list, spike_count,
                                                       v, theta, coef):  # fmt: skip
            stop = True
    return stop
