"""Experience replay from a reservoir buffer (Chaudhry et al. 2019, "On tiny episodic
memories in continual learning", arXiv:1902.10486; van de Ven, Tuytelaars & Tolias 2022,
Nat. Mach. Intell. 4:1185, the "experience replay" baseline).

The buffer keeps ``capacity`` encoded samples of the stream with reservoir sampling
(Vitter 1985, algorithm R): the n-th sample offered replaces a random slot with probability
``capacity / n``, so after N samples every sample seen is held with the same probability
``capacity / N``, whatever its task or its place in the stream, without knowing N ahead.

During LEARNING the replayed samples add a loss term: with ``n`` tasks in the buffer, van de
Ven et al. weigh the current batch's loss ``1 / (n + 1)`` and the replayed batch's
``n / (n + 1)``; up to the overall scale (which Adam ignores) that is the current loss plus
``n`` times the replay loss, the default ``weight``. During SLEEP the stored samples are
episodes to replay (hippocampal-style replay of stored experiences: ``episodes()``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from neurosim.learning.consolidation import ConsolidatorBase, LearningStep, Parameters, TaskData, require_data

Tensor = torch.Tensor
ReplayLoss = Callable[[Tensor, Tensor, Tensor], Tensor]  # (inputs, labels, tasks) -> mean loss


class Replayed(NamedTuple):
    """A batch drawn from the reservoir: inputs, labels and the task each came from."""

    inputs: Tensor
    labels: Tensor
    tasks: Tensor


class ReservoirBuffer:
    """``capacity`` samples of a stream, each sample seen held with probability capacity / seen."""

    def __init__(self, capacity: int, *, seed: int = 0) -> None:
        if not (isinstance(capacity, int) and not isinstance(capacity, bool) and capacity >= 1):
            raise ValueError(f"ReservoirBuffer capacity must be a positive integer, got {capacity!r}")
        self.capacity = capacity
        self.seen = 0  # samples offered so far
        self._rng = np.random.default_rng(seed)
        self._inputs: Tensor | None = None
        self._labels = torch.zeros(capacity, dtype=torch.int64)
        self._tasks = torch.zeros(capacity, dtype=torch.int64)
        self._size = 0

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        """Its contents (arrays) and counters with the sampler's state (JSON), for a checkpoint."""
        arrays = {"labels": self._labels.numpy().copy(), "tasks": self._tasks.numpy().copy()}
        if self._inputs is not None:
            arrays["inputs"] = self._inputs.numpy().copy()
        return {"seen": self.seen, "size": self._size, "rng": self._rng.bit_generator.state}, arrays

    def restore_state(self, info: Mapping[str, Any], arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        """Put back what ``checkpoint_state`` returned."""
        self.seen, self._size = int(info["seen"]), int(info["size"])
        self._rng.bit_generator.state = info["rng"]
        self._labels, self._tasks = torch.from_numpy(arrays["labels"]), torch.from_numpy(arrays["tasks"])
        self._inputs = torch.from_numpy(arrays["inputs"]) if "inputs" in arrays else None

    def __len__(self) -> int:
        return self._size

    def add(self, inputs: Tensor, labels: Tensor, task: int | Tensor = 0) -> None:
        """Offer a batch of samples (``inputs`` ``(n, ...)``, ``labels`` ``(n,)``), in order."""
        if inputs.ndim < 1 or labels.ndim != 1 or inputs.shape[0] != labels.shape[0]:
            raise ValueError(
                f"ReservoirBuffer.add needs inputs (n, ...) and labels (n,), got {tuple(inputs.shape)} and "
                f"{tuple(labels.shape)}"
            )
        tasks = task if isinstance(task, Tensor) else torch.full((labels.shape[0],), int(task), dtype=torch.int64)
        if self._inputs is None:
            self._inputs = torch.zeros((self.capacity, *inputs.shape[1:]), dtype=inputs.dtype)
        elif inputs.shape[1:] != self._inputs.shape[1:]:
            raise ValueError(
                f"samples of shape {tuple(inputs.shape[1:])}, the buffer holds {tuple(self._inputs.shape[1:])}"
            )
        slots = np.empty(labels.shape[0], dtype=np.int64)
        for k in range(labels.shape[0]):
            self.seen += 1
            if self._size < self.capacity:
                slots[k] = self._size
                self._size += 1
            else:
                j = int(self._rng.integers(0, self.seen))
                slots[k] = j if j < self.capacity else -1
        # a later sample of the same batch may take a slot an earlier one just took: the last
        # wins, decided here (an indexed assignment with repeated indices has no defined winner)
        last = {int(slot): k for k, slot in enumerate(slots) if slot >= 0}
        if last:
            index = torch.tensor(list(last), dtype=torch.int64)
            source = torch.tensor(list(last.values()), dtype=torch.int64)
            self._inputs[index] = inputs.detach()[source].to(self._inputs.dtype)
            self._labels[index] = labels[source].to(torch.int64)
            self._tasks[index] = tasks[source].to(torch.int64)

    def contents(self) -> Replayed:
        """Every stored sample (copies)."""
        if self._inputs is None:
            raise ValueError("the buffer is empty")
        n = self._size
        return Replayed(self._inputs[:n].clone(), self._labels[:n].clone(), self._tasks[:n].clone())

    def sample(self, n: int, generator: torch.Generator | None = None) -> Replayed:
        """``n`` stored samples drawn uniformly with replacement."""
        if self._inputs is None or self._size == 0:
            raise ValueError("cannot sample from an empty buffer")
        pick = torch.randint(0, self._size, (n,), generator=generator)
        return Replayed(self._inputs[pick], self._labels[pick], self._tasks[pick])

    def class_counts(self, n_classes: int) -> Tensor:
        """How many stored samples each class has."""
        return torch.bincount(self._labels[: self._size], minlength=n_classes)

    def class_balance(self, n_classes: int) -> float:
        """Normalised entropy of the stored classes among those present: 1 = perfectly balanced."""
        counts = self.class_counts(n_classes).double()
        present = counts[counts > 0]
        if present.numel() <= 1:
            return 1.0
        p = present / present.sum()
        return float(-(p * p.log()).sum() / np.log(present.numel()))

    def summary(self, n_classes: int) -> dict[str, int | float | list[int]]:
        """What the buffer holds, for a run's results."""
        return {"stored": len(self), "offered": self.seen, "class_counts": self.class_counts(n_classes).tolist(),
                "class_balance": self.class_balance(n_classes)}  # fmt: skip


class ExperienceReplay(ConsolidatorBase):
    """Replay of a reservoir buffer as a consolidator. The buffer takes each task's data at
    its end (``TaskData``, each sample offered once) or, with ``from_stream``, each observed
    step's samples (a one-pass stream); ``penalty`` is ``weight`` times ``loss`` on a replayed
    batch of ``batch_size`` (``weight`` None: the number of tasks in the buffer)."""

    def __init__(
        self,
        buffer: ReservoirBuffer,
        loss: ReplayLoss | None = None,
        *,
        batch_size: int = 128,
        weight: float | None = None,
        from_stream: bool = False,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"ExperienceReplay batch_size must be >= 1, got {batch_size!r}")
        if weight is not None and not weight >= 0:
            raise ValueError(f"ExperienceReplay weight must be >= 0, got {weight!r}")
        self.buffer = buffer
        self.loss = loss
        self.batch_size = batch_size
        self.weight = weight
        self.from_stream = from_stream
        self.generator = torch.Generator().manual_seed(seed)
        self.tasks: list[str] = []

    def observe(self, step: LearningStep) -> None:
        if self.from_stream and step.inputs is not None and step.labels is not None:
            tasks = step.tasks if step.tasks is not None else torch.full_like(step.labels, len(self.tasks))
            self.buffer.add(step.inputs, step.labels, tasks)

    def end_task(self, task_id: str, parameters: Parameters, data: TaskData | None = None) -> None:
        if not self.from_stream:
            data = require_data("ExperienceReplay", task_id, data)
            order = torch.randperm(int(data.labels.shape[0]), generator=self.generator)
            self.buffer.add(data.inputs[order], data.labels[order], data.task)
        self.tasks.append(task_id)

    def replay_batch(self) -> Replayed | None:
        """A batch to replay now (None while the buffer is empty)."""
        return self.buffer.sample(self.batch_size, self.generator) if len(self.buffer) else None

    def episodes(self) -> Replayed:
        """The stored episodes, for replay during SLEEP."""
        return self.buffer.contents()

    def penalty(self, parameters: Parameters) -> Tensor | None:
        if self.loss is None:
            return None
        batch = self.replay_batch()
        if batch is None:
            return None
        weight = self.weight if self.weight is not None else float(len(self.tasks))
        return weight * self.loss(batch.inputs, batch.labels, batch.tasks)
