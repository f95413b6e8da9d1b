"""Connectivity builders and weight initialisers.

Each builder returns ``(pre, post)`` index arrays sorted by ``pre`` then ``post``, ready to
become CSR rows. Random builders take an explicit ``numpy.random.Generator``: the network's
structure is drawn from the network seed, never from hidden global state.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IndexArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]

_ROW_BLOCK_ELEMENTS = 1 << 22  # draw at most 4M Bernoulli trials at once to bound memory


def _sorted_pairs(pre: IndexArray, post: IndexArray) -> tuple[IndexArray, IndexArray]:
    order = np.lexsort((post, pre))
    return pre[order].astype(np.int64), post[order].astype(np.int64)


def _drop_autapses(pre: IndexArray, post: IndexArray) -> tuple[IndexArray, IndexArray]:
    keep = pre != post
    return pre[keep], post[keep]


def probability(
    n_pre: int, n_post: int, p: float, rng: np.random.Generator, *, autapses: bool = True
) -> tuple[IndexArray, IndexArray]:
    """Each pair independently with probability ``p`` (Brian2's ``connect(p=...)``).

    ``autapses=False`` removes i -> i pairs (only meaningful when pre and post are the same
    population).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"connection probability must be in [0, 1], got {p!r}")
    rows_per_block = max(1, _ROW_BLOCK_ELEMENTS // max(n_post, 1))
    pres: list[IndexArray] = []
    posts: list[IndexArray] = []
    for row0 in range(0, n_pre, rows_per_block):
        rows = min(rows_per_block, n_pre - row0)
        hit = rng.random((rows, n_post), dtype=np.float32) < p
        r, c = np.nonzero(hit)
        pres.append(r.astype(np.int64) + row0)
        posts.append(c.astype(np.int64))
    pre = np.concatenate(pres) if pres else np.zeros(0, np.int64)
    post = np.concatenate(posts) if posts else np.zeros(0, np.int64)
    if not autapses:
        pre, post = _drop_autapses(pre, post)
    return pre, post


def fan_in(
    n_pre: int, n_post: int, k: int, rng: np.random.Generator, *, autapses: bool = True
) -> tuple[IndexArray, IndexArray]:
    """Every post neuron receives exactly ``k`` distinct, uniformly chosen pre neurons."""
    available = n_pre - (0 if autapses else 1)
    if not 0 <= k <= available:
        raise ValueError(f"fan-in k must be in [0, {available}] for {n_pre} pre neurons, got {k}")
    pres: list[IndexArray] = []
    for j in range(n_post):
        if autapses:
            chosen = rng.choice(n_pre, size=k, replace=False)
        else:
            chosen = rng.choice(n_pre - 1, size=k, replace=False)
            chosen = chosen + (chosen >= j)
        pres.append(np.asarray(chosen, dtype=np.int64))
    pre = np.concatenate(pres) if pres else np.zeros(0, np.int64)
    post = np.repeat(np.arange(n_post, dtype=np.int64), k)
    return _sorted_pairs(pre, post)


def fixed_total(
    n_pre: int, n_post: int, n: int, rng: np.random.Generator, *, autapses: bool = True
) -> tuple[IndexArray, IndexArray]:
    """``n`` synapses, each from a uniformly drawn pre neuron to a uniformly drawn post neuron,
    drawn independently (a pair can occur more than once: multapses). Without ``autapses``
    a drawn ``i -> i`` gets a new post neuron until none is left (Potjans & Diesmann 2014;
    NEST's ``fixed_total_number``).

    Vectorised and sort-free: the number of synapses of each pre neuron is multinomial, so
    the pre indices come out sorted (CSR order) without sorting hundreds of millions of pairs.
    """
    if n < 0:
        raise ValueError(f"fixed_total needs n >= 0 synapses, got {n}")
    if n and (n_pre < 1 or n_post < 1 or (not autapses and n_pre == n_post == 1)):
        raise ValueError(f"fixed_total: no synapse can connect {n_pre} pre to {n_post} post neurons")
    per_pre = rng.multinomial(n, np.full(n_pre, 1.0 / n_pre)) if n else np.zeros(n_pre, np.int64)
    pre = np.repeat(np.arange(n_pre, dtype=np.int64), per_pre)
    post = rng.integers(0, n_post, size=n, dtype=np.int64)
    if not autapses:
        again = np.flatnonzero(pre == post)
        while again.size:
            post[again] = rng.integers(0, n_post, size=again.size)
            again = again[pre[again] == post[again]]
    return pre, post


def one_to_one(n_pre: int, n_post: int) -> tuple[IndexArray, IndexArray]:
    """Pre neuron ``i`` to post neuron ``i``; both groups must have the same size."""
    if n_pre != n_post:
        raise ValueError(f"one_to_one needs groups of one size, got {n_pre} pre and {n_post} post neurons")
    index = np.arange(n_pre, dtype=np.int64)
    return index, index.copy()


def delay_steps_from_seconds(delays: npt.NDArray[np.float64], dt: float) -> npt.NDArray[np.int64]:
    """Delays (s) rounded to whole steps of ``dt`` (as NEST and Brian2 round them)."""
    return np.rint(np.asarray(delays) / dt).astype(np.int64)


def normal_delays(
    n: int,
    mean: float,
    std: float,
    rng: np.random.Generator,
    *,
    low: float,
    high: float = np.inf,
    redraw: bool = True,
) -> npt.NDArray[np.float64]:
    """``n`` delays (s) from ``N(mean, std**2)`` kept in ``[low, high]``: values outside are drawn
    again (``redraw``, a truncated normal) or set to the bound."""
    if std < 0 or not low <= high:
        raise ValueError(f"normal delays need std >= 0 and low <= high, got std={std}, low={low}, high={high}")
    d = rng.normal(mean, std, size=n)
    if not redraw:
        return np.clip(d, low, high)
    outside = np.flatnonzero((d < low) | (d > high))
    for _ in range(1000):
        if not outside.size:
            return d
        d[outside] = rng.normal(mean, std, size=outside.size)
        outside = outside[(d[outside] < low) | (d[outside] > high)]
    raise ValueError(
        f"normal delays: N({mean}, {std}**2) almost never falls in [{low}, {high}]; widen the bounds or use clip"
    )


def all_to_all(n_pre: int, n_post: int, *, autapses: bool = True) -> tuple[IndexArray, IndexArray]:
    """Every (pre, post) pair, pre-major; without ``autapses`` the pairs i -> i are left out."""
    pre = np.repeat(np.arange(n_pre, dtype=np.int64), n_post)
    post = np.tile(np.arange(n_post, dtype=np.int64), n_pre)
    if not autapses:
        pre, post = _drop_autapses(pre, post)
    return pre, post


def pairs(pre: npt.ArrayLike, post: npt.ArrayLike, n_pre: int, n_post: int) -> tuple[IndexArray, IndexArray]:
    """Explicit ``(pre[k], post[k])`` pairs, checked for range and duplicates."""
    pre_a = np.asarray(pre, dtype=np.int64).reshape(-1)
    post_a = np.asarray(post, dtype=np.int64).reshape(-1)
    if pre_a.shape != post_a.shape:
        raise ValueError(f"pre and post must have the same length, got {pre_a.size} and {post_a.size}")
    if pre_a.size and (pre_a.min() < 0 or pre_a.max() >= n_pre):
        raise ValueError(f"pre indices must be in [0, {n_pre}), got range [{pre_a.min()}, {pre_a.max()}]")
    if post_a.size and (post_a.min() < 0 or post_a.max() >= n_post):
        raise ValueError(f"post indices must be in [0, {n_post}), got range [{post_a.min()}, {post_a.max()}]")
    pre_s, post_s = _sorted_pairs(pre_a, post_a)
    if pre_s.size > 1:
        dup = (np.diff(pre_s) == 0) & (np.diff(post_s) == 0)
        if dup.any():
            k = int(np.argmax(dup))
            raise ValueError(f"duplicate synapse ({pre_s[k]}, {post_s[k]}) in explicit pairs")
    return pre_s, post_s


def constant_weights(n: int, value: float) -> FloatArray:
    """``n`` weights equal to ``value``."""
    return np.full(n, value, dtype=np.float32)


def uniform_weights(n: int, low: float, high: float, rng: np.random.Generator) -> FloatArray:
    """``n`` weights drawn uniformly in ``[low, high)``."""
    if high < low:
        raise ValueError(f"uniform weights need low <= high, got low={low}, high={high}")
    return rng.uniform(low, high, size=n).astype(np.float32)


def normal_weights(
    n: int, mean: float, std: float, rng: np.random.Generator, *, low: float | None = None, high: float | None = None
) -> FloatArray:
    """Gaussian weights, clipped to ``[low, high]`` when given (a clip, not a truncation)."""
    if std < 0:
        raise ValueError(f"normal weights need std >= 0, got {std}")
    w = rng.normal(mean, std, size=n)
    if low is not None or high is not None:
        w = np.clip(w, low, high)
    return w.astype(np.float32)
