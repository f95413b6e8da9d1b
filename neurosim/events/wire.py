"""The binary spike-batch format (version 1): encoder and decoder.

One message holds the spikes of one population over a chunk of consecutive steps. All
integers are little-endian and unsigned. Layout (``docs/wire-format.md`` is the reference)::

    offset      size            field
    0           4               magic b"NSSP"
    4           1               version (1)
    5           1               flags: bit 0 set = instance indices follow the neuron indices
    6           2               P: byte length of the population name
    8           8               first_step: the absolute step of the batch's first step
    16          8               dt: seconds per step (IEEE 754 float64)
    24          4               n_steps: steps covered (S)
    28          4               n_spikes: spikes in the batch (N)
    32          P               population name, UTF-8
    32+P        4 (S + 1)       offsets: the spikes of step first_step + k are entries
                                offsets[k] .. offsets[k+1] - 1; offsets[0] = 0, offsets[S] = N
    ...         4 N             neuron indices
    ...         4 N             instance indices (only with flag bit 0)

A spike's time is ``(first_step + k) * dt``. Decoding checks every field and the total
length; anything malformed raises ``SpikeBatchError`` (a ``ValueError``), nothing else.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from neurosim.sim.monitors import ChunkResult

MAGIC = b"NSSP"
VERSION = 1
CONTENT_TYPE = "application/vnd.neurosim.spikes.v1"
FLAG_INSTANCES = 0x01
_HEADER = struct.Struct("<4sBBHQdII")  # 32 bytes
_U32_MAX = 0xFFFFFFFF

IntArray = npt.NDArray[np.int64]


class SpikeBatchError(ValueError):
    """A spike-batch payload is malformed or truncated."""


@dataclass(frozen=True)
class SpikeBatch:
    """The spikes of one population over a chunk of consecutive steps (the wire format's content): steps,
    neuron indices and, with a batch, instance indices."""

    population: str
    first_step: int
    dt: float
    n_steps: int
    steps: IntArray  # absolute step of every spike, non-decreasing
    indices: IntArray
    instances: IntArray | None = None

    @property
    def times(self) -> npt.NDArray[np.float64]:
        """Spike times (s) of the batch."""
        return self.steps.astype(np.float64) * self.dt

    @classmethod
    def from_chunk(cls, result: ChunkResult, population: str) -> SpikeBatch:
        chunk = result.spikes[population]
        with_instances = bool(chunk.instances.size) and bool(np.any(chunk.instances != 0))
        return cls(population, result.start_step, result.dt, result.n_steps, chunk.steps, chunk.indices,
                   chunk.instances if with_instances else None)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpikeBatch):
            return NotImplemented
        same_instances = (self.instances is None and other.instances is None) or (
            self.instances is not None
            and other.instances is not None
            and np.array_equal(self.instances, other.instances)
        )
        return (
            (self.population, self.first_step, self.n_steps) == (other.population, other.first_step, other.n_steps)
            and self.dt == other.dt
            and np.array_equal(self.steps, other.steps)
            and np.array_equal(self.indices, other.indices)
            and same_instances
        )

    __hash__ = None  # type: ignore[assignment]


def encode(batch: SpikeBatch) -> bytes:
    """``batch`` in the binary spike format (version 1)."""
    name = batch.population.encode("utf-8")
    n = int(batch.steps.size)
    if len(name) > 0xFFFF:
        raise ValueError("population name longer than 65535 bytes")
    if batch.indices.shape != batch.steps.shape or (
        batch.instances is not None and batch.instances.shape != batch.steps.shape
    ):
        raise ValueError("steps, indices and instances must have one entry per spike")
    if not 0 <= batch.n_steps <= _U32_MAX or n > _U32_MAX or not 0 <= batch.first_step < 2**63:
        raise ValueError("n_steps and n_spikes must fit 32 bits, first_step must be in [0, 2**63)")
    if not (math.isfinite(batch.dt) and batch.dt > 0):
        raise ValueError(f"dt must be a positive finite number of seconds, got {batch.dt!r}")
    local = batch.steps - batch.first_step
    if n and (local[0] < 0 or local[-1] >= batch.n_steps or np.any(local[1:] < local[:-1])):
        raise ValueError("spike steps must be sorted and inside [first_step, first_step + n_steps)")
    for arr in (batch.indices, batch.instances):
        if arr is not None and arr.size and (arr.min() < 0 or arr.max() > _U32_MAX):
            raise ValueError("neuron and instance indices must fit unsigned 32 bits")
    offsets = np.zeros(batch.n_steps + 1, dtype="<u4")
    if n:  # spikes per step, accumulated: the index of each step's first spike
        np.cumsum(np.bincount(local, minlength=batch.n_steps), out=offsets[1:])
    flags = FLAG_INSTANCES if batch.instances is not None else 0
    parts = [
        _HEADER.pack(MAGIC, VERSION, flags, len(name), batch.first_step, batch.dt, batch.n_steps, n),
        name,
        offsets.tobytes(),
        batch.indices.astype("<u4").tobytes(),
    ]
    if batch.instances is not None:
        parts.append(batch.instances.astype("<u4").tobytes())
    return b"".join(parts)


def decode(payload: bytes | bytearray | memoryview) -> SpikeBatch:
    """The spike batch in ``payload``; ``SpikeBatchError`` (never a crash) for anything that is not a well-formed
    batch."""
    data = bytes(payload)
    if len(data) < _HEADER.size:
        raise SpikeBatchError(f"truncated spike batch: {len(data)} bytes, the header alone has {_HEADER.size}")
    magic, version, flags, name_len, first_step, dt, n_steps, n = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SpikeBatchError(f"not a neurosim spike batch (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise SpikeBatchError(f"unsupported spike-batch version {version} (this decoder reads {VERSION})")
    if flags & ~FLAG_INSTANCES:
        raise SpikeBatchError(f"unknown flags 0x{flags:02x}")
    if first_step >= 2**63:
        raise SpikeBatchError(f"first_step {first_step} is out of range")
    if not (math.isfinite(dt) and dt > 0):
        raise SpikeBatchError(f"dt must be a positive finite number of seconds, got {dt!r}")
    words = n_steps + 1 + n * (2 if flags & FLAG_INSTANCES else 1)
    expected = _HEADER.size + name_len + 4 * words
    if len(data) != expected:
        raise SpikeBatchError(f"spike batch of {len(data)} bytes, its header announces {expected}")
    try:
        population = data[_HEADER.size : _HEADER.size + name_len].decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpikeBatchError(f"population name is not UTF-8: {err}") from None
    body = np.frombuffer(data, dtype="<u4", offset=_HEADER.size + name_len).astype(np.int64)
    offsets = body[: n_steps + 1]
    per_step = np.diff(offsets)
    if offsets[0] != 0 or offsets[-1] != n or (per_step < 0).any():
        raise SpikeBatchError("step offsets must start at 0, never decrease, and end at n_spikes")
    indices = body[n_steps + 1 : n_steps + 1 + n]
    instances = body[n_steps + 1 + n :] if flags & FLAG_INSTANCES else None
    steps = np.repeat(np.arange(first_step, first_step + n_steps, dtype=np.int64), per_step)
    return SpikeBatch(population, int(first_step), float(dt), int(n_steps), steps, indices, instances)
