"""What a learner hands the compiled time loop (``CompiledLearner``: a rule, and optionally
the EWC pull, the online gradient and the Fisher EMA it feeds), and the tables that lay a
stretch's learners out for the learning kernels of ``neurosim.sim.kernels`` (which say what
each rule computes and how exactly it matches the PyTorch path).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from neurosim.sim.kernels import (
    A_COUNTS,
    A_ELIG,
    A_FISHER,
    A_POST1,
    A_POST2,
    A_PRE1,
    A_PRE2,
    F_A3_MINUS,
    F_A3_PLUS,
    F_A_MINUS,
    F_A_PLUS,
    F_ALPHA,
    F_DEC,
    F_DECAY_ELIG,
    F_DECAY_POST,
    F_DECAY_POST2,
    F_DECAY_PRE,
    F_DECAY_PRE2,
    F_DEPENDENCE_WIDTH,
    F_HALF,
    F_INC,
    F_ONE,
    F_PI,
    F_PROTECT_INC,
    F_W_MAX,
    F_W_MIN,
    F_WIDTH,
    F_WINDOW,
    FF_ONE_MINUS_ALPHA,
    FOLD_DEPTH,
    I_COL0,
    I_COLSYN0,
    I_FISHER,
    I_FULL_ROWS,
    I_GRAD,
    I_LABEL,
    I_MULT,
    I_NCLASS,
    I_NEAREST,
    I_NPOST,
    I_POP,
    I_POST0,
    I_PRE0,
    I_PROJ,
    I_PULL,
    I_RB0,
    I_REWARD_NSRC,
    I_REWARD_SRC0,
    I_RO0,
    I_RULE,
    I_STOP,
    I_SURR,
    I_SYN0,
    I_THETA,
    N_FLOAT,
    N_INT,
    N_STATE,
    S_APPLIED,
    S_NON_FINITE,
    S_SAMPLE_STEPS,
    S_STOPPED,
)  # fmt: skip

if TYPE_CHECKING:
    from neurosim.sim.synapses import Projection

FloatArray = npt.NDArray[Any]  # float32 or float64: the simulation's dtype


class RuleKind(enum.IntEnum):
    """The rule codes of the compiled learning loop's table."""

    PAIR = 0
    TRIPLET = 1
    REWARD = 2
    SLEEP = 3


class SurrogateCode(enum.IntEnum):
    """The surrogate codes of the compiled learning loop's table."""

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
    """A triplet-STDP learner as the compiled loop runs it: its rule's constants and its traces."""

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
    """The sleep rule as the compiled loop runs it: its constants, the per-synapse protection, each post
    neuron's gain and each pre neuron's last spike time."""

    last_pre_spike: FloatArray  # s; -inf before the first spike
    protection: FloatArray  # per synapse: scales depression (and potentiation, with protect_potentiation)
    post_gain: FloatArray  # per post neuron: the sign and size of its rule (1: as written)
    inc: float
    dec: float
    window: float
    w_min: float
    w_max: float
    protect_potentiation: bool = False  # protection scales the causal potentiation too
    dependence_width: float = 0.0  # the a of the weight dependence s(w) = 2 / (1 + exp(w / a)); 0: additive


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
    """What the compiled loop needs to fold gradients into a Fisher EMA: the accumulator's arrays and rate."""

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
    stopped: bool = False


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
    return kernel.last_pre_spike, None, kernel.post_gain, None


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
    row[F_PROTECT_INC] = 1.0 if kernel.protect_potentiation else 0.0
    row[F_DEPENDENCE_WIDTH] = kernel.dependence_width
    row[F_W_MIN], row[F_W_MAX] = kernel.w_min, kernel.w_max
    return RuleKind.SLEEP, row, False, False


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
        state = np.zeros((n, N_STATE), dtype=np.int64)
        pre0 = post0 = col0 = colsyn0 = syn0 = class0 = ro0 = 0
        self._pre_offsets: list[int] = []
        self._post_offsets: list[int] = []
        self._syn_offsets: list[int] = []
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
            np.zeros((FOLD_DEPTH, max(sum(pre_sizes), 1)), dtype=dtype),
            np.zeros((FOLD_DEPTH, max(sum(post_sizes), 1)), dtype=dtype),
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
        """Whether a learner asked the loop to stop (a non-finite gradient under ``RAISE``)."""
        return bool(self.state[:, S_STOPPED].any()) if len(self.learners) else False
