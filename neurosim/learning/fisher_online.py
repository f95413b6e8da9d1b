"""Online Fisher estimation: an exponential moving average of squared gradients.

``F_i(t) = alpha * g_i(t)^2 + (1 - alpha) * F_i(t - 1)``, ``F_i(0) = 0``, one EMA step per
``update()`` (one STDP step), per named parameter, on the gradients' own device.
``update_squares(s)`` takes the squares already averaged, ``F_i(t) = alpha * s_i(t) +
(1 - alpha) * F_i(t - 1)``: for a mini-batch, ``s`` the mean of the per-sample squared
gradients (``per_sample_linear_fisher``) carries the batch's samples one by one, where one
squared mean gradient carries a single direction.

Snapshots go to a ``FisherMatrixBase`` store every ``snapshot_every`` steps once
``min_samples`` steps were seen, and on demand with ``force_snapshot()`` (learning
boundaries, SLEEP), which also restarts the interval. A snapshot never stalls ``update()``:
the EMA buffer that holds the snapshot's values is handed to a writer thread as it is, and
the next step writes the EMA into a second buffer (no copy on the update path); the host
copy, the drift ``max_delta`` and the store write happen on a writer thread, which makes
progress whether or not the caller's event loop gets a turn. While a write is still
running, an interval snapshot that falls due waits for it (it is taken at the first step
after), so at most two buffers are in flight.

If no snapshot was written for more than ``max_staleness_steps`` steps (a slow or failing
store, or ``min_samples`` larger than that), a warning is logged once per breach and
``ewc_fisher_staleness_breaches_total`` counts it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import math
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from neurosim.learning.fisher import FisherMatrixBase, FisherSnapshot, OnlineFisherSnapshot, SnapshotReason
from neurosim.metrics import METRICS, Metrics

log = logging.getLogger(__name__)

Gradient = npt.NDArray[np.float32] | torch.Tensor


class NonFinitePolicy(enum.StrEnum):
    """What an accumulator does with a non-finite gradient: raise, or skip it and count it."""

    RAISE = "raise"  # NonFiniteGradientError; the EMA is untouched (also for overflowing g^2)
    SKIP = "skip"  # the step is dropped and counted; the EMA is untouched


class NonFiniteGradientError(ValueError):
    """A gradient held NaN or infinity (policy RAISE)."""


class SnapshotWriteError(RuntimeError):
    """``force_snapshot()``: the store could not write the snapshot (the cause is chained)."""


@dataclass
class FisherAccumulatorConfig:
    """Accumulator settings: EMA rate ``alpha``, steps before the first snapshot, steps between snapshots,
    staleness bound, what to do with a non-finite gradient."""

    alpha: float = 0.01  # EMA decay: lower = smoother
    min_samples: int = 10  # steps before the first snapshot
    snapshot_every: int = 50  # steps between store writes
    # warn if no snapshot was written for this long; None: 10 x snapshot_every, so that an
    # interval write still in flight is never taken for a stale estimate
    max_staleness_steps: int | None = None
    non_finite: NonFinitePolicy = NonFinitePolicy.RAISE

    def __post_init__(self) -> None:
        if self.max_staleness_steps is None and isinstance(self.snapshot_every, int):
            self.max_staleness_steps = 10 * self.snapshot_every
        if not (isinstance(self.alpha, int | float) and 0.0 < self.alpha <= 1.0 and math.isfinite(self.alpha)):
            raise ValueError(f"FisherAccumulatorConfig.alpha must be in (0, 1], got {self.alpha!r}")
        for name in ("min_samples", "snapshot_every", "max_staleness_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"FisherAccumulatorConfig.{name} must be a positive integer, got {value!r}")
        if self.max_staleness_steps < self.snapshot_every:
            raise ValueError(
                f"FisherAccumulatorConfig.max_staleness_steps ({self.max_staleness_steps}) must be >= "
                f"snapshot_every ({self.snapshot_every}), or every interval would count as stale"
            )
        self.non_finite = NonFinitePolicy(self.non_finite)


@dataclass
class AccumulatorStats:
    """An accumulator's counters (``FisherAccumulator.stats``)."""

    steps: int
    snapshots_written: int
    last_snapshot_step: int
    max_delta: float  # max |F_new - F_old| across params over the last snapshot cycle
    skipped_non_finite: int = 0


class FisherAccumulator:
    """Per-parameter EMA of squared gradients. Called once per STDP update step.
    Writes to a FisherMatrixBase store every snapshot_every steps."""

    def __init__(
        self,
        config: FisherAccumulatorConfig,
        store: FisherMatrixBase,
        task_id: str,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        if not task_id:
            raise ValueError("task_id must be a non-empty string")
        self.config = config
        self.store = store
        self.task_id = task_id
        m = metrics or METRICS
        self._m_steps = m.fisher_ema_steps.labels(task=task_id)
        self._m_age = m.fisher_snapshot_age.labels(task=task_id)
        self._m_delta = m.fisher_max_delta.labels(task=task_id)
        self._m_breaches = m.fisher_staleness_breaches.labels(task=task_id)
        self._m_failures = m.fisher_snapshot_failures.labels(task=task_id)
        self._m_skipped = m.fisher_nonfinite_skipped.labels(task=task_id)
        self._ema: dict[str, torch.Tensor] = {}
        # Buffers: the EMA; the snapshot being written (frozen); the last written snapshot
        # (kept unmodified to measure the next drift); spares to write the EMA into.
        self._must_move = False  # the EMA buffers were handed to a snapshot: next step writes elsewhere
        self._frozen: dict[str, torch.Tensor] | None = None
        self._written: dict[str, torch.Tensor] | None = None
        self._spare: dict[str, torch.Tensor] = {}
        self._scratch: dict[str, npt.NDArray[np.float32]] = {}
        self._steps = 0
        self._calls = 0
        self._skipped = 0
        self._since_snapshot = 0  # steps since the last snapshot was taken (interval counter)
        self._last_written_step = 0  # step of the last snapshot the store accepted (staleness)
        self._breach_reported_at = -1
        self._snapshots_written = 0
        self._last_snapshot_step = 0
        self._max_delta = 0.0
        self._warned_all_zero = False
        self._zero_interval_snapshots = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"fisher-{task_id}")
        self._writer: Future[FisherSnapshot | None] | None = None
        self.last_error: BaseException | None = None

    # ------------------------------------------------------------------ the EMA
    def _as_tensors(self, gradients: Mapping[str, Gradient]) -> dict[str, torch.Tensor]:
        if not gradients:
            raise ValueError("gradients must name at least one parameter")
        tensors = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in gradients.items()}
        if self._ema:
            if tensors.keys() != self._ema.keys():
                raise ValueError(
                    f"task {self.task_id!r}: gradients for {sorted(tensors)}, "
                    f"but the accumulator tracks {sorted(self._ema)}"
                )
            for name, g in tensors.items():
                if g.shape != self._ema[name].shape:
                    raise ValueError(
                        f"task {self.task_id!r}: gradient {name!r} has shape {tuple(g.shape)}, "
                        f"expected {tuple(self._ema[name].shape)}"
                    )
        return tensors

    def _finite(self, tensors: Mapping[str, torch.Tensor], *, squared: bool = False) -> bool:
        # g . g is finite exactly when every g_i is finite and the squares the EMA adds do
        # not overflow; one BLAS pass, far cheaper than isfinite(g).all() on the CPU (for
        # squares, non-negative by the check in update_squares, their sum says the same)
        # checked in the EMA's float32: a float64 gradient of 1e30 is finite, its square in
        # the float32 EMA is not
        def total(g: torch.Tensor) -> torch.Tensor:
            g = g if g.dtype == torch.float32 else g.to(torch.float32)
            flat = g.reshape(-1)
            return flat.abs().sum() if squared else torch.dot(flat, flat)

        bad = [name for name, g in tensors.items() if not bool(torch.isfinite(total(g)))]
        if not bad:
            return True
        if self.config.non_finite is NonFinitePolicy.RAISE:
            raise NonFiniteGradientError(f"task {self.task_id!r}: non-finite gradient for {', '.join(bad)}")
        self._skipped += 1
        self._m_skipped.inc()
        return False

    @torch.no_grad()
    def _ema_step(self, tensors: Mapping[str, torch.Tensor], *, squared: bool = False) -> None:
        a = self.config.alpha
        if not self._ema:
            self._ema = {k: torch.zeros_like(g, dtype=torch.float32) for k, g in tensors.items()}
        if self._must_move:  # the last snapshot owns these buffers: write the EMA elsewhere
            self._writer_done()  # recycle what a finished write released
            fresh: dict[str, torch.Tensor] = {}
            for name, g in tensors.items():
                old = self._ema[name]
                out = self._spare.pop(name, None)
                if out is None or out.shape != old.shape or out.device != old.device:
                    out = torch.empty_like(old)
                torch.mul(old, 1.0 - a, out=out)
                if squared:
                    out.add_(g, alpha=a)
                else:
                    out.addcmul_(g, g, value=a)
                fresh[name] = out
            self._ema = fresh
            self._must_move = False
            return
        for name, g in tensors.items():
            if squared:
                self._ema[name].mul_(1.0 - a).add_(g, alpha=a)
            else:
                self._ema[name].mul_(1.0 - a).addcmul_(g, g, value=a)

    def _writer_done(self) -> bool:
        """True when no write is in flight; hands the buffers a finished write released to
        the spares (the snapshot before the one just written; or the failed one)."""
        if self._writer is not None and not self._writer.done():
            return False
        if self._frozen is not None:
            succeeded = self._writer is not None and self._writer.result() is not None
            released = self._written if succeeded else self._frozen
            if succeeded:
                self._written = self._frozen
            if released is not None:
                self._spare.update(released)
            self._frozen = None
        return True

    async def update(self, gradients: Mapping[str, Gradient]) -> None:
        """One EMA step. Writes a snapshot when due (the public, awaitable form of ``fold``)."""
        self.fold(gradients)

    async def update_squares(self, squares: Mapping[str, Gradient]) -> None:
        """One EMA step from squared gradients already averaged (``F = alpha s + (1 - alpha) F``),
        e.g. a mini-batch's mean per-sample squares. Writes a snapshot when due."""
        self.fold_squares(squares)

    def fold(self, gradients: Mapping[str, Gradient]) -> bool:
        """The synchronous core of ``update``: one EMA step, and the interval snapshot handed
        to the writer thread when due (nothing to await: the write never stalls the step).
        Returns True when a snapshot was taken. Learners call this on their hot path."""
        return self._update(self._as_tensors(gradients), squared=False)

    def fold_squares(self, squares: Mapping[str, Gradient]) -> bool:
        """The synchronous core of ``update_squares``. Non-finite squares follow the
        non-finite policy (as gradients do); finite negative ones are an error."""
        return self._update(self._as_tensors(squares), squared=True)

    def _update(self, tensors: Mapping[str, torch.Tensor], *, squared: bool) -> bool:
        self._calls += 1
        if not self._finite(tensors, squared=squared):
            return False
        if squared:
            for name, s in tensors.items():
                if s.numel() and float(s.min()) < 0.0:
                    raise ValueError(
                        f"task {self.task_id!r}: squares for {name!r} are negative (min {float(s.min())!r})"
                    )
        self._ema_step(tensors, squared=squared)
        return self._count_steps(1, wait_for_writer=False)

    def _count_steps(self, steps: int, *, wait_for_writer: bool) -> bool:
        """Book ``steps`` EMA steps already folded in; take the interval snapshot when due."""
        self._steps += steps
        self._since_snapshot += steps
        self._m_steps.inc(steps)
        self._m_age.set(self._steps - self._last_written_step)
        self._check_staleness()
        if not self._snapshot_due():
            return False
        if wait_for_writer and self._writer is not None:
            self._writer.exception()  # blocks until the write in flight is done (its error is in last_error)
        if self._writer_done():
            self._take_snapshot(SnapshotReason.INTERVAL)
            return True
        return False

    def _snapshot_due(self) -> bool:
        return self._steps >= self.config.min_samples and self._since_snapshot >= self.config.snapshot_every

    # ------------------------------------------------------------------ the compiled loop's EMA
    def steps_until_snapshot(self) -> int:
        """EMA steps until the next interval snapshot falls due (at least 1): the compiled path
        ends its stretch there, so that snapshots land exactly on ``snapshot_every``."""
        return max(1, self.config.min_samples - self._steps, self.config.snapshot_every - self._since_snapshot)

    @torch.no_grad()
    def external_buffer(self, name: str, size: int) -> npt.NDArray[np.float32]:
        """The EMA of parameter ``name`` (``size`` values) as a writable float32 host array,
        for a compiled loop that folds ``F = alpha g^2 + (1 - alpha) F`` in place; book the
        steps it folded with ``fold_external``. The only parameter tracked, or none yet."""
        if self._ema and set(self._ema) != {name}:
            raise ValueError(
                f"task {self.task_id!r}: the compiled loop feeds only {name!r}, "
                f"but the accumulator tracks {sorted(self._ema)}"
            )
        current = self._ema.get(name)
        if current is None:
            self._ema = {name: torch.zeros(size, dtype=torch.float32)}
        elif current.shape != (size,) or current.device.type != "cpu":
            raise ValueError(
                f"task {self.task_id!r}: {name!r} has {tuple(current.shape)} values on {current.device}; "
                f"the compiled loop needs ({size},) on the cpu"
            )
        elif self._must_move:  # the last snapshot owns this buffer: continue in a spare
            self._writer_done()
            out = self._spare.pop(name, None)
            if out is None or out.shape != current.shape:
                out = torch.empty_like(current)
            out.copy_(current)
            self._ema = {name: out}
        self._must_move = False
        return self._ema[name].numpy()

    def fold_external(self, steps: int, non_finite: int = 0) -> bool:
        """Book ``steps`` EMA steps that a compiled loop folded into ``external_buffer``, and
        ``non_finite`` steps it left out (their gradient held NaN, infinity, or squares that
        overflow). With the RAISE policy a non-finite step raises ``NonFiniteGradientError``
        (the EMA holds the steps before it); with SKIP it is counted. An interval snapshot
        that falls due is taken now (after the write in flight, if any, has finished).
        Returns True when a snapshot was taken."""
        if steps < 0 or non_finite < 0:
            raise ValueError(f"steps and non_finite must be >= 0, got {steps}, {non_finite}")
        self._calls += steps + non_finite
        taken = self._count_steps(steps, wait_for_writer=True) if steps else False
        if non_finite:
            if self.config.non_finite is NonFinitePolicy.RAISE:
                raise NonFiniteGradientError(f"task {self.task_id!r}: non-finite gradient in the compiled loop")
            self._skipped += non_finite
            self._m_skipped.inc(non_finite)
        return taken

    def _check_staleness(self) -> None:
        age = self._steps - self._last_written_step
        if age > self.staleness_limit and self._breach_reported_at != self._last_written_step:
            self._breach_reported_at = self._last_written_step
            self._m_breaches.inc()
            log.warning(
                "Fisher estimate for task %r: no snapshot written for %d steps (max_staleness_steps=%d)",
                self.task_id,
                age,
                self.staleness_limit,
            )

    # ------------------------------------------------------------------ snapshots
    def _take_snapshot(self, reason: SnapshotReason, *, keep: bool = False) -> Future[FisherSnapshot | None]:
        self._writer_done()
        self._warn_if_all_zero(reason)
        self._frozen = self._ema
        self._must_move = True
        meta = (self._steps, self._calls, self._since_snapshot, reason)
        self._since_snapshot = 0
        # one worker thread: writes happen in order, and progress whether or not the
        # caller's event loop gets a turn
        self._writer = self._executor.submit(self._write, self._frozen, self._written, meta, keep)
        return self._writer

    @property
    def staleness_limit(self) -> int:
        """``config.max_staleness_steps``, resolved."""
        limit = self.config.max_staleness_steps
        return 10 * self.config.snapshot_every if limit is None else limit

    def _warn_if_all_zero(self, reason: SnapshotReason) -> None:
        """Once per accumulator: a Fisher that is still zero everywhere at a forced snapshot
        (the one consolidation uses) or at a second interval snapshot means its gradient
        source gives no signal, and EWC built on it does nothing. (One zero interval snapshot
        is normal early on: a voting readout has no weights until neurons are assigned.)"""
        if self._warned_all_zero or self._steps < self.config.min_samples:
            return
        if any(bool(t.any()) for t in self._ema.values()):
            return
        self._zero_interval_snapshots += reason is SnapshotReason.INTERVAL
        if reason is SnapshotReason.INTERVAL and self._zero_interval_snapshots < 2:
            return
        self._warned_all_zero = True
        warnings.warn(
            f"FisherAccumulator {self.task_id!r}: every Fisher entry is still zero after {self._steps} steps, so "
            "every gradient it received was zero (a LinearReadout with zero weights gives no learning signal: "
            "fit it, or give it weights, before learning); an EWC built on this Fisher does nothing",
            RuntimeWarning,
            stacklevel=4,
        )

    def _write(
        self,
        buffers: dict[str, torch.Tensor],
        previous: dict[str, torch.Tensor] | None,
        meta: tuple[int, int, int, SnapshotReason],
        keep: bool,
    ) -> FisherSnapshot | None:
        """On the writer thread. Works on the frozen buffers themselves (no copy on the
        CPU) with numpy calls that release the GIL, so ``update()`` keeps running."""
        steps, calls, since_previous, reason = meta
        try:
            arrays = {k: _host_view(v) for k, v in buffers.items()}
            drift = 0.0
            for name, values in arrays.items():
                scratch = self._scratch.get(name)
                if scratch is None or scratch.shape != values.shape:
                    scratch = self._scratch[name] = np.empty_like(values)
                if previous is None:
                    np.abs(values, out=scratch)
                else:
                    np.subtract(values, _host_view(previous[name]), out=scratch)
                    np.abs(scratch, out=scratch)
                drift = max(drift, float(scratch.max(initial=0.0)))
            snapshot = OnlineFisherSnapshot(
                task_id=self.task_id,
                step=steps,
                arrays=arrays,
                created_at=time.time(),
                alpha=self.config.alpha,
                ema_steps=steps,
                samples_seen=calls,
                reason=reason,
                max_delta=drift,
                steps_since_previous=since_previous,
            )
            saved = self.store.save(snapshot)
        except Exception as err:  # the store failed: the run goes on; reported, counted, kept
            self.last_error = err
            self._m_failures.inc()
            log.error("Fisher snapshot for task %r failed: %s", self.task_id, err)
            return None
        self._max_delta = drift
        self._snapshots_written += 1
        self._last_snapshot_step = steps
        self._last_written_step = steps
        self._m_age.set(self._steps - steps)
        self._m_delta.set(drift)
        if keep:  # the caller keeps it: give it arrays of its own, not the recycled buffers
            return dataclasses.replace(saved, arrays={k: np.array(v, copy=True) for k, v in saved.arrays.items()})
        return saved

    async def force_snapshot(self, reason: SnapshotReason = SnapshotReason.FORCED) -> FisherSnapshot:
        """Used by SLEEP consolidation: snapshot now, whatever the step counter; restarts the
        interval. Waits for the write and returns the stored snapshot."""
        return self._checked(await asyncio.wrap_future(self._start_forced(reason)))

    def snapshot_now(self, reason: SnapshotReason = SnapshotReason.FORCED) -> FisherSnapshot:
        """``force_snapshot`` for code without an event loop (a Brian2 ``network_operation``,
        a notebook cell): blocks until the store has the snapshot."""
        return self._checked(self._start_forced(reason).result())

    def _start_forced(self, reason: SnapshotReason) -> Future[FisherSnapshot | None]:
        if self._steps == 0:
            raise ValueError(f"task {self.task_id!r}: nothing accumulated yet, no Fisher to snapshot")
        return self._take_snapshot(reason, keep=True)

    def _checked(self, snapshot: FisherSnapshot | None) -> FisherSnapshot:
        if snapshot is None:
            raise SnapshotWriteError(
                f"task {self.task_id!r}: the store failed to write the snapshot"
            ) from self.last_error
        return snapshot

    async def flush(self) -> None:
        """Wait for the snapshot write in flight, if any (errors are in ``last_error``)."""
        if self._writer is not None:
            await asyncio.wrap_future(self._writer)

    def close(self) -> None:
        """Finish pending writes and stop the writer thread."""
        self._executor.shutdown(wait=True)

    _COUNTERS = ("_steps", "_calls", "_skipped", "_since_snapshot", "_last_written_step", "_breach_reported_at",
                 "_snapshots_written", "_last_snapshot_step", "_max_delta", "_warned_all_zero",
                 "_zero_interval_snapshots")  # fmt: skip

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        """The EMA (arrays) and every counter (JSON), for an experiment checkpoint; call it with
        no write in flight (``flush`` first)."""
        self._writer_done()
        counters = {name: getattr(self, name) for name in self._COUNTERS}
        return counters, {name: t.detach().cpu().numpy().copy() for name, t in self._ema.items()}

    def restore_state(self, counters: Mapping[str, Any], ema: Mapping[str, npt.NDArray[Any]]) -> None:
        """Put back what ``checkpoint_state`` returned (on a fresh accumulator of the same task)."""
        for name in self._COUNTERS:
            setattr(self, name, type(getattr(self, name))(counters[name]))
        self._ema = {name: torch.from_numpy(np.array(value, dtype=np.float32)) for name, value in ema.items()}
        self._must_move, self._frozen, self._written, self._spare = False, None, None, {}

    @property
    def pending_steps(self) -> int:
        """Steps accumulated since the last snapshot was taken."""
        return self._since_snapshot

    @property
    def fisher(self) -> dict[str, torch.Tensor]:
        """The current EMA per parameter (read only; on the gradients' device)."""
        return dict(self._ema)

    def stats(self) -> AccumulatorStats:
        """Counters and state: steps folded, snapshots written, the last snapshot's step, the largest change,
        skipped non-finite gradients."""
        return AccumulatorStats(
            steps=self._steps,
            snapshots_written=self._snapshots_written,
            last_snapshot_step=self._last_snapshot_step,
            max_delta=self._max_delta,
            skipped_non_finite=self._skipped,
        )


def _host_view(t: torch.Tensor) -> npt.NDArray[np.float32]:
    """The tensor's values as a host numpy array: a view on the CPU, a copy from a GPU."""
    return t.detach().to("cpu", torch.float32).numpy()
