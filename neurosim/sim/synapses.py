"""Projections: synaptic weights between two groups and event-driven spike propagation.

A spike of pre neuron ``i`` at step ``n`` adds ``w_ij`` to the ``channel`` conductance
(``g_exc`` or ``g_inh``) of every post neuron ``j`` at step ``n + d``, in the ``synapses``
slot of the schedule (after thresholds, before plasticity). The delay ``d`` (in steps) is
one per projection (``delay_steps``: the engine reads the spikes of ``d`` steps ago from its
spike history) or one per synapse (``synapse_delays``, as in Potjans & Diesmann 2014).

Per-synapse delays are memory-lean: one small integer per synapse (``uint8`` up to 255
steps), the synapses of each pre neuron sorted by delay, and one offset per (pre neuron,
delay step) into them (``delay_ptr``). At step ``n`` the engine reads, for every delay
``d``, the spikes of step ``n - d`` from its spike history and delivers only those rows'
synapses of delay ``d``: every write goes into the target's conductances, which stay in
cache, and there is no buffer of pending input per neuron and delay.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch

Tensor = torch.Tensor


class Channel(enum.StrEnum):
    """Which synaptic state variable of the target a spike increments."""

    EXC = "exc"
    INH = "inh"


class WeightFormat(enum.StrEnum):
    """How weights are stored: ``sparse`` (CSR values) or ``dense`` (an ``(n_pre, n_post)`` matrix)."""

    DENSE = "dense"
    SPARSE = "sparse"


class Propagation(enum.StrEnum):
    """How spikes are propagated: ``auto``, ``event`` (gather the rows of spiking pre neurons), or a dense
    ``matmul``."""

    AUTO = "auto"
    EVENT = "event"  # gather the rows of spiking pre neurons
    MATMUL = "matmul"  # dense (batch, n_pre) @ (n_pre, n_post); dense weights only


@dataclass
class Projection:
    """Weights from ``source`` (``n_pre``) to ``target`` (``n_post``) on one channel.

    ``pre_index``/``post_index`` give every synapse's endpoints in storage order (CSR) and
    are what plasticity rules index with. Dense projections store absent synapses as
    explicit zeros and keep a ``mask`` so plasticity never creates synapses.
    """

    name: str
    source: str
    target: str
    n_pre: int
    n_post: int
    channel: Channel
    delay_steps: int
    format: WeightFormat
    pre_index: Tensor
    post_index: Tensor
    indptr: Tensor
    weights: Tensor  # CSR values (n_synapses,) or dense (n_pre, n_post)
    mask: Tensor | None = None
    propagation: Propagation = Propagation.AUTO
    synapse_delays: Tensor | None = None  # steps, one per synapse in CSR order; then delay_steps is 0
    # per-synapse delays: synapses of (pre p, delay d) are delay_ptr[p * (D + 1) + d] .. [.. + 1], D the longest
    delay_ptr: Tensor | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.delay_steps < 0:
            raise ValueError(f"projection {self.name!r}: delay must be >= 0 steps, got {self.delay_steps}")
        if self.propagation is Propagation.MATMUL and self.format is not WeightFormat.DENSE:
            raise ValueError(f"projection {self.name!r}: matmul propagation needs dense weights")
        if self.synapse_delays is not None:
            if self.format is not WeightFormat.SPARSE or self.propagation is Propagation.MATMUL:
                raise ValueError(
                    f"projection {self.name!r}: per-synapse delays need sparse weights and event propagation"
                )
            if self.delay_steps != 0:
                raise ValueError(
                    f"projection {self.name!r}: give either one delay (delay_steps) or one per synapse, not both"
                )
            if self.synapse_delays.shape != self.pre_index.shape:
                raise ValueError(
                    f"projection {self.name!r}: {tuple(self.synapse_delays.shape)} synapse delays for "
                    f"{self.n_synapses} synapses"
                )
            self.delay_ptr = _delay_pointers(self.name, self.n_pre, self.pre_index, self.synapse_delays)

    @classmethod
    def from_pairs(
        cls,
        name: str,
        source: str,
        target: str,
        n_pre: int,
        n_post: int,
        pre: npt.NDArray[np.int64],
        post: npt.NDArray[np.int64],
        weights: npt.NDArray[np.float32],
        *,
        channel: Channel = Channel.EXC,
        delay_steps: int | npt.NDArray[np.integer] = 0,
        format: WeightFormat = WeightFormat.SPARSE,
        propagation: Propagation = Propagation.AUTO,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> Projection:
        """Build from synapse lists (sorted by ``pre`` here if they are not).

        ``delay_steps`` is one delay for every synapse, or an array of one per synapse (in
        the order of ``pre``); an array whose entries are all equal becomes one delay.
        """
        if not (pre.shape == post.shape == weights.shape):
            raise ValueError(
                f"projection {name!r}: pre, post and weights must have one entry per synapse, "
                f"got {pre.shape}, {post.shape}, {weights.shape}"
            )
        per_synapse = _synapse_delays(name, delay_steps, pre.shape)
        if per_synapse is not None and per_synapse.size and int(per_synapse.min()) == int(per_synapse.max()):
            delay_steps, per_synapse = int(per_synapse[0]), None
        if per_synapse is not None:  # each row's synapses by delay (stable: in the order given within a delay)
            order = np.argsort(pre.astype(np.int64) * (int(per_synapse.max()) + 1) + per_synapse, kind="stable")
            pre, post, weights, per_synapse = pre[order], post[order], weights[order], per_synapse[order]
        elif pre.size and np.any(np.diff(pre) < 0):
            order = np.lexsort((post, pre))
            pre, post, weights = pre[order], post[order], weights[order]
        dev = torch.device(device)
        counts = np.bincount(pre, minlength=n_pre) if pre.size else np.zeros(n_pre, np.int64)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        pre_t = torch.from_numpy(pre.astype(np.int64)).to(dev)
        post_t = torch.from_numpy(post.astype(np.int64)).to(dev)
        w_t = torch.from_numpy(weights.astype(np.float32)).to(device=dev, dtype=dtype)
        mask: Tensor | None = None
        if format is WeightFormat.DENSE:
            dense = torch.zeros((n_pre, n_post), dtype=dtype, device=dev)
            dense[pre_t, post_t] = w_t
            mask = torch.zeros((n_pre, n_post), dtype=torch.bool, device=dev)
            mask[pre_t, post_t] = True
            w_t = dense
        return cls(
            name=name,
            source=source,
            target=target,
            n_pre=n_pre,
            n_post=n_post,
            channel=channel,
            format=format,
            pre_index=pre_t,
            post_index=post_t,
            indptr=torch.from_numpy(indptr).to(dev),
            weights=w_t,
            mask=mask,
            propagation=propagation,
            synapse_delays=None if per_synapse is None else torch.from_numpy(per_synapse).to(dev),
            delay_steps=0 if per_synapse is not None else int(delay_steps),
        )

    @property
    def n_synapses(self) -> int:
        """Number of synapses."""
        return int(self.pre_index.numel())

    @property
    def max_delay_steps(self) -> int:
        """The longest delay of any synapse, in steps."""
        if self.synapse_delays is None:
            return self.delay_steps
        return int(self.synapse_delays.max()) if self.synapse_delays.numel() else 0

    def delays_per_synapse(self) -> Tensor:
        """Every synapse's delay in steps, in synapse (CSR) order (``int64``)."""
        if self.synapse_delays is None:
            return torch.full((self.n_synapses,), self.delay_steps, dtype=torch.int64, device=self.pre_index.device)
        return self.synapse_delays.to(torch.int64)

    def synapse_weights(self) -> Tensor:
        """Weights in synapse (CSR) order, whatever the storage."""
        if self.format is WeightFormat.DENSE:
            return self.weights[self.pre_index, self.post_index]
        return self.weights

    def set_synapse_weights(self, values: Tensor) -> None:
        """Write weights given in synapse (CSR) order, in place."""
        if self.format is WeightFormat.DENSE:
            self.weights[self.pre_index, self.post_index] = values.to(self.weights.dtype)
        else:
            self.weights.copy_(values)

    def dense_weights(self) -> Tensor:
        """The weights as a dense ``(n_pre, n_post)`` matrix (zeros where no synapse is)."""
        if self.format is WeightFormat.DENSE:
            return self.weights
        dense = torch.zeros((self.n_pre, self.n_post), dtype=self.weights.dtype, device=self.weights.device)
        dense[self.pre_index, self.post_index] = self.weights
        return dense

    def uses_matmul(self, batch: int) -> bool:
        """Whether propagation with ``batch`` instances uses the dense matrix product."""
        if self.propagation is Propagation.AUTO:
            return self.format is WeightFormat.DENSE and batch > 1
        return self.propagation is Propagation.MATMUL

    def propagate_into(self, out: Tensor, spikes: Tensor) -> None:
        """Add the effect of ``spikes`` ``(batch, n_pre)`` bool to ``out`` ``(batch, n_post)``."""
        if self.uses_matmul(spikes.shape[0]):
            out.add_(spikes.to(self.weights.dtype) @ self.weights)
            return
        batch_idx, pre_idx = torch.nonzero(spikes, as_tuple=True)
        if batch_idx.numel() == 0:
            return
        if self.format is WeightFormat.DENSE:
            rows = self.weights.index_select(0, pre_idx)
            out.index_add_(0, batch_idx, rows)
            return
        self._deliver(out, self.indptr, pre_idx, batch_idx)

    def propagate_delayed_into(self, out: Tensor, spikes_by_delay: Tensor) -> None:
        """Per-synapse delays: add to ``out`` ``(batch, n_post)`` what arrives now, given
        ``spikes_by_delay`` ``(max_delay_steps + 1, batch, n_pre)`` bool, whose entry ``d``
        holds the spikes of ``d`` steps ago (delivered through the synapses of delay ``d``,
        in the order: delay, instance, pre neuron, synapse)."""
        if self.delay_ptr is None:
            raise ValueError(f"projection {self.name!r} has one delay for all synapses, not one per synapse")
        slots = self.max_delay_steps + 1
        if spikes_by_delay.shape[0] != slots:
            raise ValueError(
                f"projection {self.name!r}: spikes of {slots} steps needed, got {spikes_by_delay.shape[0]}"
            )
        delay_idx, batch_idx, pre_idx = torch.nonzero(spikes_by_delay, as_tuple=True)
        self._deliver(out, self.delay_ptr, pre_idx * slots + delay_idx, batch_idx)

    def _deliver(self, out: Tensor, pointers: Tensor, segments: Tensor, batch_idx: Tensor) -> None:
        """Add the weights of the synapses ``pointers[k] .. pointers[k + 1] - 1`` of every
        ``k`` in ``segments`` (CSR rows or (row, delay) segments), in order, to the post
        neurons of instance ``batch_idx`` in ``out``."""
        starts = pointers[segments]
        active = _expand(starts, pointers[segments + 1] - starts, batch_idx)
        if active is None:
            return
        synapse, instance = active
        out.view(-1).index_add_(0, instance * self.n_post + self.post_index[synapse], self.weights[synapse])

    def propagate(self, spikes: Tensor) -> Tensor:
        """The weights that ``spikes`` ``(batch, n_pre)`` deliver to every post neuron, ``(batch, n_post)``."""
        out = torch.zeros((spikes.shape[0], self.n_post), dtype=self.weights.dtype, device=self.weights.device)
        self.propagate_into(out, spikes)
        return out


def _expand(starts: Tensor, counts: Tensor, batch_idx: Tensor) -> tuple[Tensor, Tensor] | None:
    """The synapses ``starts[k] .. starts[k] + counts[k] - 1`` of every segment ``k`` in order and,
    for each, its segment's instance (``batch_idx``); None if there are none."""
    total = int(counts.sum())
    if total == 0:
        return None
    first_of_segment = torch.cumsum(counts, 0) - counts
    within = torch.arange(total, device=counts.device) - torch.repeat_interleave(
        first_of_segment, counts, output_size=total
    )
    synapse = torch.repeat_interleave(starts, counts, output_size=total) + within
    return synapse, torch.repeat_interleave(batch_idx, counts, output_size=total)


def _synapse_delays(
    name: str, delay_steps: int | npt.NDArray[np.integer], shape: tuple[int, ...]
) -> npt.NDArray[np.integer] | None:
    """Per-synapse delays in the smallest integer type that holds them, or None for one delay."""
    if np.ndim(delay_steps) == 0:
        return None
    delays = np.asarray(delay_steps)
    if not np.issubdtype(delays.dtype, np.integer):
        raise ValueError(f"projection {name!r}: synapse delays must be whole steps (integers), got {delays.dtype}")
    if delays.shape != shape:
        raise ValueError(f"projection {name!r}: {delays.shape} synapse delays for {shape} synapses")
    if delays.size and int(delays.min()) < 0:
        raise ValueError(f"projection {name!r}: delays must be >= 0 steps, got {int(delays.min())}")
    longest = int(delays.max()) if delays.size else 0
    for kind in (np.uint8, np.int16, np.int32):
        if longest <= np.iinfo(kind).max:
            fitted: npt.NDArray[np.integer] = delays.astype(kind, copy=False)
            return fitted
    raise ValueError(f"projection {name!r}: a delay of {longest} steps is too long")


def _delay_pointers(name: str, n_pre: int, pre_index: Tensor, synapse_delays: Tensor) -> Tensor:
    """``delay_ptr`` of a projection whose rows are sorted by delay (refused otherwise)."""
    delays = synapse_delays.cpu().numpy().astype(np.int64)
    pre = pre_index.cpu().numpy()
    slots = (int(delays.max()) if delays.size else 0) + 1
    key = pre * slots + delays
    if key.size > 1 and np.any(np.diff(key) < 0):
        raise ValueError(
            f"projection {name!r}: with per-synapse delays the synapses must be sorted by pre neuron, "
            "then delay (Projection.from_pairs sorts them)"
        )
    counts = np.bincount(key, minlength=n_pre * slots)
    pointers = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return torch.from_numpy(pointers).to(pre_index.device)
