"""Fisher information: snapshots, stores, and full-batch estimation.

The (diagonal) Fisher information of parameter ``theta_i`` is
``F_i = E[(d log p(y|x, theta) / d theta_i)^2]``. A ``FisherSnapshot`` holds one estimate
per named parameter; a ``FisherMatrixBase`` store keeps versioned snapshots per task.

``DirectoryFisherStore`` file format (one file per version, ``<root>/<task>/v000001.fisher``)::

    b"NSFISHER"                     8-byte magic
    uint32 little-endian            format version (2)
    uint32 little-endian            header length H
    32 bytes                        SHA-256 of the H header bytes (format 2)
    H bytes                         UTF-8 JSON header: task_id, step, created_at, kind,
                                    provenance, arrays {name: {dtype, shape, offset, nbytes}},
                                    payload_sha256
    payload                         the arrays' raw little-endian bytes, concatenated

The header's checksum covers the header, and the header holds the payload's, so a change to
any byte (a step, a shape, an array) is detected. Format 1 files (no header checksum) are
still read. A file is written to a fresh temporary name in the task's directory (created
exclusively, never through a symbolic link), flushed and fsynced, then hard-linked to its
final name, which fails if that version exists: two processes saving the same task never
claim one version (the loser takes the next). The directory is fsynced. A reader never sees
a half-written version; a damaged file is reported and skipped, and ``load(task)`` returns
the newest valid version. Temporary files left by a killed writer are removed when a store
is opened.
"""

from __future__ import annotations

import abc
import enum
import functools
import hashlib
import json
import logging
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from neurosim.atomic import exclusive_temporary

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]


class SnapshotReason(enum.StrEnum):
    """Why a Fisher snapshot was written: ``snapshot_every`` steps passed, forced (a learning boundary), or
    on entering SLEEP."""

    INTERVAL = "interval"  # snapshot_every steps passed
    FORCED = "forced"  # force_snapshot() (e.g. a learning boundary)
    SLEEP = "sleep"  # force_snapshot() on entering SLEEP


@dataclass(frozen=True)
class FisherSnapshot:
    """A diagonal Fisher estimate for one task: ``arrays[name]`` matches the parameter's shape."""

    task_id: str
    step: int
    arrays: Mapping[str, FloatArray]
    created_at: float = field(default_factory=time.time)
    version: int | None = None  # set by the store that saved it

    def with_version(self, version: int) -> FisherSnapshot:
        """This snapshot with another version number."""
        return _replace(self, version=version)


@dataclass(frozen=True)
class OnlineFisherSnapshot(FisherSnapshot):
    """A snapshot of a ``FisherAccumulator``'s EMA, with its provenance."""

    alpha: float = 0.0
    ema_steps: int = 0
    samples_seen: int = 0
    reason: SnapshotReason = SnapshotReason.INTERVAL
    max_delta: float = 0.0  # max_i |F_i - F_i at the previous snapshot|
    steps_since_previous: int = 0


def _replace(snapshot: FisherSnapshot, **changes: Any) -> FisherSnapshot:
    import dataclasses

    return dataclasses.replace(snapshot, **changes)


class CorruptSnapshotError(ValueError):
    """A stored snapshot is damaged or half-written (bad magic, header or checksum)."""


class SnapshotNotFoundError(KeyError):
    """No (valid) snapshot for that task or version."""


class FisherMatrixBase(abc.ABC):
    """A versioned store of Fisher snapshots, per task."""

    @abc.abstractmethod
    def save(self, snapshot: FisherSnapshot) -> FisherSnapshot:
        """Store a new version; returns the snapshot with its ``version`` set.

        The snapshot's arrays may be views of buffers that their producer reuses after the
        call (the ``FisherAccumulator`` does): a store copies what it keeps."""

    @abc.abstractmethod
    def load(self, task_id: str, version: int | None = None) -> FisherSnapshot:
        """The given version, or the latest valid one."""

    @abc.abstractmethod
    def tasks(self) -> list[str]:
        """The task ids with at least one stored snapshot, sorted."""

    @abc.abstractmethod
    def versions(self, task_id: str) -> list[int]:
        """The stored versions of ``task_id``'s snapshots, ascending."""


class InMemoryFisherStore(FisherMatrixBase):
    """Snapshots in a dict; arrays are copied on save so later changes cannot leak in."""

    def __init__(self, keep_last: int | None = None) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.keep_last = keep_last
        self._data: dict[str, dict[int, FisherSnapshot]] = {}
        self._lock = threading.Lock()

    def save(self, snapshot: FisherSnapshot) -> FisherSnapshot:
        with self._lock:
            versions = self._data.setdefault(snapshot.task_id, {})
            version = max(versions, default=0) + 1
            frozen = _replace(
                snapshot, arrays={k: np.array(v, dtype=np.float32, copy=True) for k, v in snapshot.arrays.items()}
            ).with_version(version)
            versions[version] = frozen
            if self.keep_last is not None:
                for old in sorted(versions)[: -self.keep_last]:
                    del versions[old]
            return frozen

    def load(self, task_id: str, version: int | None = None) -> FisherSnapshot:
        with self._lock:
            versions = self._data.get(task_id)
            if not versions:
                raise SnapshotNotFoundError(f"no Fisher snapshot for task {task_id!r}")
            key = max(versions) if version is None else version
            if key not in versions:
                raise SnapshotNotFoundError(f"task {task_id!r} has no version {version}; it has {sorted(versions)}")
            return versions[key]

    def tasks(self) -> list[str]:
        with self._lock:
            return sorted(t for t, v in self._data.items() if v)

    def versions(self, task_id: str) -> list[int]:
        with self._lock:
            return sorted(self._data.get(task_id, {}))


_MAGIC = b"NSFISHER"
_FORMAT = 2
_VERSION_FILE = re.compile(r"^v(\d{6,})\.fisher$")
_TEMP_FILE = re.compile(r"^\.v\d{6,}\.fisher\.(\d+)(?:\.[0-9a-f]+)?\.tmp$")
_SAFE_TASK = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _snapshot_header(snapshot: FisherSnapshot) -> dict[str, Any]:
    header: dict[str, Any] = {
        "task_id": snapshot.task_id,
        "step": snapshot.step,
        "created_at": snapshot.created_at,
        "kind": "online" if isinstance(snapshot, OnlineFisherSnapshot) else "batch",
    }
    if isinstance(snapshot, OnlineFisherSnapshot):
        header["provenance"] = {
            "alpha": snapshot.alpha,
            "ema_steps": snapshot.ema_steps,
            "samples_seen": snapshot.samples_seen,
            "reason": snapshot.reason.value,
            "max_delta": snapshot.max_delta,
            "steps_since_previous": snapshot.steps_since_previous,
        }
    return header


def encode_parts(snapshot: FisherSnapshot) -> tuple[bytes, list[memoryview]]:
    """The file's head (magic, sizes, JSON header) and its payload as buffers of the arrays
    themselves: hashing and writing them needs no copy and releases the GIL."""
    arrays: dict[str, Any] = {}
    views: list[memoryview] = []
    digest = hashlib.sha256()
    offset = 0
    for name, arr in snapshot.arrays.items():
        data = np.ascontiguousarray(arr, dtype="<f4")
        view = memoryview(data).cast("B")  # type: ignore[arg-type]
        digest.update(view)
        arrays[name] = {"dtype": "<f4", "shape": list(data.shape), "offset": offset, "nbytes": view.nbytes}
        views.append(view)
        offset += view.nbytes
    header = _snapshot_header(snapshot)
    header["arrays"] = arrays
    header["payload_sha256"] = digest.hexdigest()
    head = json.dumps(header, sort_keys=True).encode()
    return _MAGIC + struct.pack("<II", _FORMAT, len(head)) + hashlib.sha256(head).digest() + head, views


def encode_snapshot(snapshot: FisherSnapshot) -> bytes:
    """``snapshot`` in the store's binary format (header, then the arrays)."""
    head, views = encode_parts(snapshot)
    return head + b"".join(views)


def decode_snapshot(data: bytes, *, source: str = "<bytes>", version: int | None = None) -> FisherSnapshot:
    """Parse and verify one stored snapshot; ``CorruptSnapshotError`` if anything is off."""
    if len(data) < 16 or data[:8] != _MAGIC:
        raise CorruptSnapshotError(f"{source}: not a neurosim Fisher snapshot (bad magic or truncated)")
    fmt, head_len = struct.unpack("<II", data[8:16])
    if fmt not in (1, 2):
        raise CorruptSnapshotError(f"{source}: unsupported format version {fmt}")
    start = 16 if fmt == 1 else 48
    if len(data) < start + head_len:
        raise CorruptSnapshotError(f"{source}: truncated header")
    head = data[start : start + head_len]
    if fmt == 2 and hashlib.sha256(head).digest() != data[16:48]:
        raise CorruptSnapshotError(f"{source}: header checksum mismatch (damaged or edited header)")
    try:
        header = json.loads(head)
    except ValueError as err:
        raise CorruptSnapshotError(f"{source}: unreadable header ({err})") from None
    payload = data[start + head_len :]
    if not isinstance(header, dict) or hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise CorruptSnapshotError(f"{source}: checksum mismatch (damaged or half-written file)")
    try:
        return _snapshot_from_header(header, payload, version)
    except (KeyError, TypeError, ValueError) as err:  # a header that checks out but does not describe the payload
        raise CorruptSnapshotError(f"{source}: inconsistent header ({type(err).__name__}: {err})") from None


def _snapshot_from_header(header: dict[str, Any], payload: bytes, version: int | None) -> FisherSnapshot:
    arrays: dict[str, FloatArray] = {}
    for name, spec in header["arrays"].items():
        offset, nbytes, shape = int(spec["offset"]), int(spec["nbytes"]), [int(n) for n in spec["shape"]]
        if offset < 0 or offset + nbytes > len(payload) or nbytes != 4 * int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"array {name!r} ({shape}, {nbytes} bytes at {offset}) does not fit the payload")
        raw = payload[offset : offset + nbytes]
        arrays[name] = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
    common: dict[str, Any] = {
        "task_id": str(header["task_id"]),
        "step": int(header["step"]),
        "arrays": arrays,
        "created_at": float(header["created_at"]),
        "version": version,
    }
    if header.get("kind") == "online":
        prov = header["provenance"]
        return OnlineFisherSnapshot(**common, **{**prov, "reason": SnapshotReason(prov["reason"])})
    return FisherSnapshot(**common)


class DirectoryFisherStore(FisherMatrixBase):
    """One directory per task, one checksummed file per version, atomic writes, and
    retention of the last ``keep_last`` versions."""

    def __init__(self, root: str | os.PathLike[str], *, keep_last: int | None = 10) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_last = keep_last
        self._lock = threading.Lock()
        self.removed_temporaries = self._remove_orphans()

    def _remove_orphans(self) -> int:
        """Delete temporary files whose writer process is gone (a writer killed mid-save)."""
        removed = 0
        for directory in (p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink()):
            for path in directory.iterdir():
                match = _TEMP_FILE.match(path.name)
                if match is None or _process_alive(int(match.group(1))):
                    continue
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("removed %d temporary Fisher files left by killed writers in %s", removed, self.root)
        return removed

    def _task_dir(self, task_id: str) -> Path:
        if not _SAFE_TASK.match(task_id) or task_id in {".", ".."}:
            raise ValueError(f"task id {task_id!r} must use only letters, digits, '_', '-', '.'")
        return self.root / task_id

    def versions(self, task_id: str) -> list[int]:
        directory = self._task_dir(task_id)
        if not directory.is_dir():
            return []
        found = (_VERSION_FILE.match(p.name) for p in directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def tasks(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def save(self, snapshot: FisherSnapshot) -> FisherSnapshot:
        directory = self._task_dir(snapshot.task_id)
        head, payload = encode_parts(snapshot)
        with self._lock:
            directory.mkdir(parents=True, exist_ok=True)
            version = max(self.versions(snapshot.task_id), default=0) + 1
            # exclusive creation of a fresh name: a planted file or symbolic link is never written through
            tmp, fd = exclusive_temporary(directory, f".v{version:06d}.fisher")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(head)
                    for view in payload:
                        fh.write(view)
                    fh.flush()
                    os.fsync(fh.fileno())
                # claim the version: link() fails if another process (or thread) already has it
                while True:
                    try:
                        os.link(tmp, directory / f"v{version:06d}.fisher")
                        break
                    except FileExistsError:
                        version = max(version, *self.versions(snapshot.task_id)) + 1
            finally:
                tmp.unlink(missing_ok=True)
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            if self.keep_last is not None:
                for old in self.versions(snapshot.task_id)[: -self.keep_last]:
                    (directory / f"v{old:06d}.fisher").unlink(missing_ok=True)
        return snapshot.with_version(version)

    def _read(self, task_id: str, version: int) -> FisherSnapshot:
        path = self._task_dir(task_id) / f"v{version:06d}.fisher"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SnapshotNotFoundError(f"task {task_id!r} has no version {version}") from None
        return decode_snapshot(data, source=str(path), version=version)

    def load(self, task_id: str, version: int | None = None) -> FisherSnapshot:
        if version is not None:
            return self._read(task_id, version)
        for candidate in reversed(self.versions(task_id)):
            try:
                return self._read(task_id, candidate)
            except CorruptSnapshotError as err:
                log.warning("skipping damaged Fisher snapshot: %s", err)
        raise SnapshotNotFoundError(f"no valid Fisher snapshot for task {task_id!r} in {self.root}")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


# --------------------------------------------------------------------------- full-batch estimation
def per_sample_linear_fisher(inputs: torch.Tensor, output_gradients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean per-sample squared gradients of a linear layer ``z = W a + b``, in one matrix product.

    ``inputs`` ``(batch, in)`` are the layer's inputs ``a_n``; ``output_gradients`` ``(batch,
    out)`` each sample's own gradient ``e_n = d log p(y_n|x_n) / d z_n`` at the layer's outputs
    (for a loss that is a mean over the batch: ``batch`` times the loss gradient at ``z``).
    Sample ``n``'s weight gradient is ``e_n a_n^T``, so the mean of its squares is
    ``(e^2)^T (a^2) / batch`` and needs no per-sample backward pass (Goodfellow 2015,
    "Efficient per-example gradient computations", arXiv:1510.01799). Returns the weight's
    ``(out, in)`` and the bias's ``(out,)``.
    """
    if inputs.ndim != 2 or output_gradients.ndim != 2 or inputs.shape[0] != output_gradients.shape[0]:
        raise ValueError(
            f"per_sample_linear_fisher needs inputs (batch, in) and output gradients (batch, out) with one "
            f"batch size, got {tuple(inputs.shape)} and {tuple(output_gradients.shape)}"
        )
    if inputs.shape[0] == 0:
        raise ValueError("per_sample_linear_fisher needs at least one sample")
    squares = output_gradients.square()
    batch = inputs.shape[0]
    return squares.T @ inputs.square() / batch, squares.mean(0)


class LinearTaps:
    """The input and output of every ``nn.Linear`` of a model in its latest forward pass: what
    ``per_sample_linear_fisher`` needs for a mini-batch's per-sample squared gradients."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.layers = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        covered = {f"{name}.{p}" for name, m in self.layers.items() for p, _ in m.named_parameters(recurse=False)}
        outside = [name for name, _ in model.named_parameters() if name not in covered]
        if outside:
            raise ValueError(f"per-sample Fisher squares need every parameter in an nn.Linear; not: {outside}")
        self.seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, layer in self.layers.items():
            layer.register_forward_hook(functools.partial(self._keep, name))

    def _keep(self, name: str, module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.seen[name] = (inputs[0], output)

    def per_sample_squares(self, mean_loss: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
        """The mean per-sample squared gradient of every parameter, for a loss that is a mean over the batch."""
        names = [n for n in self.layers if n in self.seen]
        grads = torch.autograd.grad(mean_loss, [self.seen[n][1] for n in names], retain_graph=True)
        out: dict[str, torch.Tensor] = {}
        for name, grad in zip(names, grads, strict=True):
            weight, bias = per_sample_linear_fisher(self.seen[name][0].detach(), grad * batch_size)
            out[f"{name}.weight"] = weight
            if self.layers[name].bias is not None:
                out[f"{name}.bias"] = bias
        return out


class FisherKind(enum.StrEnum):
    """Which Fisher: ``true`` (labels sampled from the model) or ``empirical`` (the observed labels)."""

    EMPIRICAL = "empirical"  # gradients at the observed labels
    TRUE = "true"  # gradients at labels sampled from the model's own p(y|x)


def estimate_fisher(
    parameters: Mapping[str, torch.Tensor],
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    samples: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    kind: FisherKind = FisherKind.EMPIRICAL,
    generator: torch.Generator | None = None,
) -> dict[str, FloatArray]:
    """Full-batch diagonal Fisher over a buffer: ``F_i = mean_n (d log p(y_n|x_n) / d theta_i)^2``.

    ``log_prob(x)`` returns ``(batch, classes)`` log-probabilities computed from
    ``parameters`` (tensors with ``requires_grad``); ``samples`` yields ``(x, y)`` batches.
    Gradients are taken one sample at a time (per-sample squares, not squared means).
    """
    totals = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in parameters.items()}
    # Squares add up in the parameters' dtype and fold into the float64 totals every
    # ``fold`` samples: precise, without a float64 conversion per sample.
    partial = {name: torch.zeros_like(p) for name, p in parameters.items()}
    fold = 256
    count = 0
    for x, y in samples:
        for n in range(x.shape[0]):
            logp = log_prob(x[n : n + 1])[0]
            if kind is FisherKind.TRUE:
                with torch.no_grad():
                    label = int(torch.multinomial(logp.exp(), 1, generator=generator))
            else:
                label = int(y[n])
            grads = torch.autograd.grad(logp[label], list(parameters.values()), allow_unused=True)
            for (name, _), g in zip(parameters.items(), grads, strict=True):
                if g is not None:
                    partial[name].addcmul_(g, g)
            count += 1
            if count % fold == 0:
                for name, part in partial.items():
                    totals[name] += part.double()
                    part.zero_()
    for name, part in partial.items():
        totals[name] += part.double()
    if count == 0:
        raise ValueError("estimate_fisher needs at least one sample")
    return {name: (t / count).float().cpu().numpy() for name, t in totals.items()}


@dataclass(frozen=True)
class FisherAgreement:
    """How closely one diagonal Fisher estimate follows a reference (``compare_fisher``)."""

    scale: float  # sum(F) / sum(F_reference): a penalty at strength lambda is about the reference's at scale*lambda
    log_correlation: float  # Pearson r of log(F + 1e-20): whether it ranks parameters as the reference does
    linear_correlation: float  # Pearson r of F itself, dominated by the largest entries


def flatten_fisher(fisher: Mapping[str, npt.ArrayLike | torch.Tensor]) -> npt.NDArray[np.float64]:
    """Every parameter's Fisher entries in one float64 vector, parameters in name order."""
    return np.concatenate([
        np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64).ravel()
        for _, v in sorted(fisher.items())
    ])  # fmt: skip


def compare_fisher(
    estimate: Mapping[str, npt.ArrayLike | torch.Tensor], reference: Mapping[str, npt.ArrayLike | torch.Tensor]
) -> FisherAgreement:
    """Hold a Fisher estimate (an online EMA, the empirical Fisher, a few samples' true Fisher)
    against a reference over the same parameters: its scale and its log and linear correlations.
    Parameters no gradient reaches are zero in both and count as agreement in the log correlation."""
    if sorted(estimate) != sorted(reference):
        raise ValueError(f"the estimate has parameters {sorted(estimate)}, the reference {sorted(reference)}")
    est, ref = flatten_fisher(estimate), flatten_fisher(reference)
    if est.shape != ref.shape:
        raise ValueError(f"{est.size} Fisher entries in the estimate against {ref.size} in the reference")
    if not ref.sum() > 0:
        raise ValueError("the reference Fisher is zero everywhere: the model gets no gradient")
    log_e, log_r = np.log(est + 1e-20), np.log(ref + 1e-20)
    return FisherAgreement(float(est.sum() / ref.sum()), float(np.corrcoef(log_e, log_r)[0, 1]),
                           float(np.corrcoef(est, ref)[0, 1]))  # fmt: skip
