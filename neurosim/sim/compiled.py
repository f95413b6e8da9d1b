"""Compiled CPU fast path: the whole time loop of a chunk in one numba function.

On the CPU, a PyTorch step loop spends its time dispatching small tensor ops, not doing
arithmetic (see DESIGN.md, "Performance is measured"). This module runs the same schedule
as the PyTorch path (state update, threshold, reset, event-driven CSR propagation with
delays) in a single compiled loop over steps.

The model equations are the ones of ``neurosim.sim.neurons.step``; the per-step constants
come from the same ``coefficients`` function and every operation is done in the state's
dtype in the same order, so a current-based network gives bit-identical results in both
paths (conductance models differ only by the ``exp`` implementation, within a few ulp).
``tests/test_engine_paths.py`` holds the two paths equal step for step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

from neurosim.sim.compiled_learning import CompiledLearner, CompiledOutcome, LearningTables
from neurosim.sim.kernels import (
    DECAY_EXC,
    DECAY_INH,
    DECAY_M,
    DECAY_THETA,
    E_EXC,
    E_INH,
    K_EXC,
    K_EXT,
    K_INH,
    N_COEFFICIENTS,
    N_DRIVE_COLUMNS,
    N_PROJECTION_COLUMNS,
    NEG_DT_OVER_TAU_M,
    ONE,
    P_SYN0,
    R_M,
    REF_STEPS,
    THETA_PLUS,
    V_RESET,
    V_REST,
    V_THRESHOLD,
    ZERO,
    advance,
)  # fmt: skip
from neurosim.sim.neurons import AdaptiveLIF, ConductanceLIF, NeuronParams, NeuronState, coefficients

if TYPE_CHECKING:
    from neurosim.sim.network import Network
    from neurosim.sim.synapses import Projection


def coefficient_row(params: NeuronParams, dt: float) -> list[float]:
    """A population's row of the compiled loop's coefficient table (decays, gains, thresholds)."""
    c = coefficients(params, dt)
    row = [0.0] * N_COEFFICIENTS
    row[V_REST], row[V_THRESHOLD], row[V_RESET] = params.v_rest, params.v_threshold, params.v_reset
    row[DECAY_M], row[DECAY_EXC], row[DECAY_INH] = c.decay_m, c.decay_exc, c.decay_inh
    row[K_EXC], row[K_INH], row[K_EXT] = c.k_exc, c.k_inh, c.k_ext
    row[REF_STEPS], row[DECAY_THETA], row[NEG_DT_OVER_TAU_M] = c.refractory_steps, c.decay_theta, -c.dt_over_tau_m
    if isinstance(params, ConductanceLIF | AdaptiveLIF):
        row[E_EXC], row[E_INH] = params.e_exc, params.e_inh
    if isinstance(params, AdaptiveLIF):
        row[THETA_PLUS] = params.theta_plus
    row[R_M], row[ONE], row[ZERO] = params.r_m, 1.0, 0.0
    return row


def _drive_tables(
    network: Network, offsets: dict[str, int], dt: float, np_dtype: type[np.floating[Any]]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any], npt.NDArray[np.uint64], npt.NDArray[Any]]:
    """The Poisson drives for the compiled loop: one row per drive (target offset, size,
    channel, where its count thresholds start and how many), the weights, the concatenated
    thresholds and, aligned with them, each entry's count in the state dtype."""
    rows, weights, tables, values = [], [], [], []
    cdf0 = 0
    for drive in network.drives.values():
        table = drive.count_thresholds(dt)
        channel = 0 if drive.channel.value == "exc" else 1
        rows.append((offsets[drive.target], network.populations[drive.target].n, channel, cdf0, table.size))
        weights.append(drive.weight)
        tables.append(table)
        values.append(np.arange(table.size))
        cdf0 += table.size
    return (
        np.asarray(rows, dtype=np.int64).reshape(-1, N_DRIVE_COLUMNS),
        np.asarray(weights, dtype=np_dtype),
        np.concatenate(tables) if tables else np.zeros(1, np.uint64),
        (np.concatenate(values) if values else np.zeros(1)).astype(np_dtype),
    )


# numba's Dispatcher is typed as a generic callable; this alias states what it returns.
_advance_kernel: Callable[..., tuple[int, int]] = advance

_STATE_VARIABLES = ("v", "g_exc", "g_inh", "refractory", "theta")


class CompiledRunner:
    """Drives ``_advance`` for one simulation and keeps what can be reused between calls:
    the static tables (population ranges, coefficients, every projection's CSR structure
    concatenated over global source indices), the concatenated state (the populations'
    state tensors are views into it), the concatenated weights (re-gathered only when a
    projection's weight tensor changed, per torch's in-place version counter) and the
    compact spike lists of the delay ring."""

    def __init__(self, network: Network, dt: float, np_dtype: type[np.floating[Any]], batch: int) -> None:
        self.network = network
        self.dtype = np_dtype
        self.batch = batch
        offsets: dict[str, int] = {}
        ranges, kinds, rows = [], [], []
        offset = 0
        for name, pop in network.populations.items():
            offsets[name] = offset
            ranges.append((offset, offset + pop.n))
            kinds.append(int(pop.params.kind))
            rows.append(coefficient_row(pop.params, dt))
            offset += pop.n
        self.n_neurons = offset
        for name, src in network.inputs.items():
            offsets[name] = offset
            offset += src.n
        self.offsets = offsets
        self.n_sources = offset
        self.pop_range = np.asarray(ranges, dtype=np.int64).reshape(-1, 2)
        self.pop_kind = np.asarray(kinds, dtype=np.int64)
        self.coef = np.asarray(rows, dtype=np_dtype).reshape(-1, N_COEFFICIENTS)
        table, indptrs, posts, delay_ptrs = [], [], [], []
        ptr0 = syn0 = dptr0 = 0
        for proj in network.projections.values():
            channel = 0 if proj.channel.value == "exc" else 1
            own_pointers = -1
            if proj.delay_ptr is not None:
                own_pointers = dptr0
                delay_ptrs.append(proj.delay_ptr.cpu().numpy())
                dptr0 += int(proj.delay_ptr.numel())
            table.append(
                (offsets[proj.source], proj.n_pre, offsets[proj.target], channel, proj.max_delay_steps, ptr0, syn0,
                 own_pointers, list(offsets).index(proj.source))
            )  # fmt: skip
            indptrs.append(proj.indptr.cpu().numpy())
            posts.append(proj.post_index.cpu().numpy())
            ptr0 += proj.n_pre + 1
            syn0 += proj.n_synapses
        self.proj = np.asarray(table, dtype=np.int64).reshape(-1, N_PROJECTION_COLUMNS)
        self.indptr = np.concatenate(indptrs).astype(np.int64) if indptrs else np.zeros(1, np.int64)
        # post indices fit in 32 bits (a population of 2**31 neurons does not fit in memory): half the bytes
        self.post = np.concatenate(posts).astype(np.int32) if posts else np.zeros(0, np.int32)
        # where each source group (populations, then inputs) begins, then the number of sources;
        # only projections with per-synapse delays read it, so without one the loop skips it
        starts = [*offsets.values(), self.n_sources] if delay_ptrs else []
        self.group_start = np.asarray(starts, dtype=np.int64)
        self.delay_ptr = np.concatenate(delay_ptrs).astype(np.int64) if delay_ptrs else np.zeros(1, np.int64)
        self._drive_table, self._drive_weight, self._count_threshold, self._count_value = _drive_tables(
            network, offsets, dt, np_dtype
        )
        self._weights = np.zeros(syn0, dtype=np_dtype)
        self._weight_versions: list[tuple[int, int]] = []
        self._state = {var: np.zeros((batch, self.n_neurons), dtype=np_dtype) for var in _STATE_VARIABLES}
        self._issued: dict[str, NeuronState] = {}
        self._lists: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]] | None = None
        self._csc: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]] = {}
        self._records = np.zeros((4 * batch * self.n_sources + 1024, 3), dtype=np.int64)
        self.dt = dt
        self._all_to_all: dict[int, bool] = {}

    def invalidate_spike_lists(self) -> None:
        """The history was written by someone else (the torch path): rebuild before use."""
        self._lists = None

    def _sync_weights(self) -> npt.NDArray[Any]:
        projections = list(self.network.projections.values())
        versions = [(id(p.weights), p.weights._version) for p in projections]
        if versions != self._weight_versions:
            for proj, row in zip(projections, self.proj, strict=True):
                syn0 = row[P_SYN0]
                self._weights[syn0 : syn0 + proj.n_synapses] = proj.synapse_weights().detach().cpu().numpy()
            self._weight_versions = versions
        return self._weights

    def _sync_state(self, state: dict[str, NeuronState]) -> None:
        for name, st in state.items():
            if self._issued.get(name) is st:
                continue  # still the views we handed out: nothing to copy
            lo, hi = self.offsets[name], self.offsets[name] + self.network.populations[name].n
            for var in _STATE_VARIABLES:
                self._state[var][:, lo:hi] = getattr(st, var).detach().cpu().numpy() if var in st._fields else 0.0

    def _issue_state(self, state: dict[str, NeuronState]) -> None:
        tensors = {var: torch.from_numpy(arr) for var, arr in self._state.items()}
        for name, st in state.items():
            lo, hi = self.offsets[name], self.offsets[name] + self.network.populations[name].n
            new = type(st)(**{f: tensors[f][:, lo:hi] for f in st._fields})
            state[name] = new
            self._issued[name] = new

    def _spike_lists(
        self, history: npt.NDArray[np.bool_]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Per history slot and instance: the spiking sources in order, their number, and where
        each source group's spikes begin among them."""
        if self._lists is None:
            slots, batch, n = history.shape
            lists = np.zeros((slots, batch, n), dtype=np.int64)
            counts = np.zeros((slots, batch), dtype=np.int64)
            firsts = np.zeros((slots, batch, self.group_start.size), dtype=np.int64)
            for slot in range(slots):
                for b in range(batch):
                    idx = np.flatnonzero(history[slot, b])
                    lists[slot, b, : idx.size] = idx
                    counts[slot, b] = idx.size
                    firsts[slot, b] = np.searchsorted(idx, self.group_start)
            self._lists = (lists, counts, firsts)
        return self._lists

    def advance(
        self,
        state: dict[str, NeuronState],
        history: npt.NDArray[np.bool_],
        drive_keys: npt.NDArray[np.uint64],
        step: int,
        n_steps: int,
        external: npt.NDArray[np.bool_],
        drive: npt.NDArray[Any] | None,
        learners: Sequence[CompiledLearner] = (),
    ) -> tuple[npt.NDArray[np.int64], int, list[CompiledOutcome]]:
        """Run ``n_steps`` from ``step``; ``state`` is updated in place (its tensors become
        views of this runner's arrays), and so are the weights and the learners' arrays.
        ``drive`` holds the injected currents per step, or one row for all steps.
        ``drive_keys`` are the Poisson drives' generator keys per instance.
        Returns the spike records ``(step, source, instance)``, the steps run (fewer than
        ``n_steps`` only when a learner stopped the loop) and one outcome per learner."""
        if learners and self.batch != 1:
            raise ValueError("learning in the compiled loop needs batch 1; use backend='torch' for batches")
        self._sync_state(state)
        weights = self._sync_weights()
        tables = LearningTables(
            learners,
            projection_index={id(p): q for q, p in enumerate(self.network.projections.values())},
            population_index={name: p for p, name in enumerate(self.network.populations)},
            source_ranges={name: (lo, lo + self.network.source_size(name)) for name, lo in self.offsets.items()},
            columns=self._columns,
            full_rows=self._full_rows,
            dtype=self.dtype,
        )
        syn0 = {id(p): int(row[P_SYN0]) for p, row in zip(self.network.projections.values(), self.proj, strict=True)}
        tables.clip_bounded_weights(weights, syn0)
        spike_list, spike_count, group_first = self._spike_lists(history)
        has_drive = drive is not None and drive.shape[0] > 1  # one row: the same currents in every step
        drive_arr = drive if drive is not None else np.zeros((1, self.n_neurons), dtype=self.dtype)
        parts: list[npt.NDArray[np.int64]] = []
        done = 0
        while done < n_steps:
            remaining = n_steps - done
            steps_done, n_rec = _advance_kernel(
                remaining, step + done, *(self._state[v] for v in _STATE_VARIABLES),
                self.pop_range, self.pop_kind, self.coef, drive_arr[done:] if has_drive else drive_arr, has_drive,
                external[done:], self.n_neurons, history, spike_list, spike_count, self.group_start, group_first,
                self.proj, self.indptr, self.post, weights, self.delay_ptr,
                self._drive_table, drive_keys, self._drive_weight, self._count_threshold, self._count_value,
                tables.arrays, len(learners), self.dt,
                self._records, 0,
            )  # fmt: skip
            parts.append(self._records[:n_rec].copy())
            done += steps_done
            if tables.stopped:
                break
            if steps_done < remaining:  # the record buffer filled up: give it room
                self._records = np.zeros((2 * self._records.shape[0], 3), dtype=np.int64)
        self._issue_state(state)
        outcomes = tables.finish(done)
        for learner in learners:
            start = syn0[id(learner.projection)]
            learner.projection.set_synapse_weights(
                torch.from_numpy(weights[start : start + learner.projection.n_synapses].copy())
            )
        if learners:  # the concatenated weights are already current
            self._weight_versions = [(id(p.weights), p.weights._version) for p in self.network.projections.values()]
        records = np.concatenate(parts) if len(parts) != 1 else parts[0]
        return records, done, outcomes

    def _full_rows(self, proj: Projection) -> bool:
        """Every pre neuron reaches post neurons 0..n_post-1 in order (all-to-all)."""
        key = id(proj)
        if key not in self._all_to_all:
            post = proj.post_index.cpu().numpy()
            expected = np.tile(np.arange(proj.n_post), proj.n_pre)
            self._all_to_all[key] = post.shape == expected.shape and bool(np.array_equal(post, expected))
        return self._all_to_all[key]

    def _columns(self, proj: Projection) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """CSC view of a projection: per post neuron, its synapses and their pre neurons."""
        key = id(proj)
        if key not in self._csc:
            post = proj.post_index.cpu().numpy()
            order = np.argsort(post, kind="stable")
            ptr = np.concatenate([[0], np.cumsum(np.bincount(post, minlength=proj.n_post))]).astype(np.int64)
            self._csc[key] = (ptr, order.astype(np.int64), proj.pre_index.cpu().numpy()[order].astype(np.int64))
        return self._csc[key]
