"""Continual-learning task sequences (van de Ven, Tuytelaars & Tolias 2022 protocols).

- ``split_tasks``: disjoint groups of classes, (0, 1), (2, 3), ...; evaluated
  task-incrementally (the task is known; labels within the task, ``Task.local_labels``) or
  class-incrementally (global labels, all classes seen so far compete).
- ``permuted_tasks``: the same classes under a fixed pixel permutation per task (the first
  task unpermuted); domain-incremental.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from neurosim.datasets.shipped import ImageDataset


class Scenario(enum.StrEnum):
    """How a task is scored: ``class`` (every class seen competes) or ``task`` (within the task's classes)."""

    TASK_INCREMENTAL = "task"
    CLASS_INCREMENTAL = "class"
    DOMAIN_INCREMENTAL = "domain"


@dataclass(frozen=True)
class Task:
    """One task of a continual-learning sequence: its id, its classes, its training and test images."""

    task_id: str
    index: int
    classes: tuple[int, ...]
    train: ImageDataset
    test: ImageDataset
    permutation: npt.NDArray[np.int64] | None = None

    def local_labels(self, labels: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Global labels -> positions within this task's classes (task-incremental heads)."""
        lookup = {c: k for k, c in enumerate(self.classes)}
        return np.array([lookup[int(y)] for y in labels], dtype=np.int64)


def _select(data: ImageDataset, classes: tuple[int, ...], name: str) -> ImageDataset:
    return data.subset(np.flatnonzero(np.isin(data.labels, classes)), name)


def split_tasks(
    train: ImageDataset,
    test: ImageDataset,
    *,
    classes_per_task: int = 2,
    n_tasks: int | None = None,
    class_order: Sequence[int] | None = None,
) -> list[Task]:
    """Split tasks: the classes in order, ``classes_per_task`` per task ((0, 1), (2, 3), ...), at most
    ``n_tasks`` of them, train and test images of those classes. ``class_order`` takes the
    classes in that order instead (``[8, 9, 6, 7, ...]``: (8, 9) first), so that a result can be
    checked against the order the classes come in."""
    classes = sorted(set(train.labels.tolist()))
    if class_order is not None:
        unknown = sorted(set(class_order) - set(classes))
        if unknown or len(set(class_order)) != len(class_order):
            raise ValueError(
                f"class_order {list(class_order)} must list distinct classes of the data set ({classes})"
                + (f"; {unknown} are not among them" if unknown else "")
            )
        classes = [int(c) for c in class_order]
    if classes_per_task < 1:
        raise ValueError(f"classes_per_task must be >= 1, got {classes_per_task}")
    available = len(classes) // classes_per_task
    n = available if n_tasks is None else n_tasks
    if not 1 <= n <= available:
        raise ValueError(f"{len(classes)} classes make at most {available} tasks of {classes_per_task}, asked {n}")
    tasks = []
    for k in range(n):
        group = tuple(classes[k * classes_per_task : (k + 1) * classes_per_task])
        task_id = "split-" + "".join(str(c) for c in group)
        tasks.append(Task(task_id, k, group, _select(train, group, task_id), _select(test, group, task_id)))
    return tasks


def _permute(data: ImageDataset, perm: npt.NDArray[np.int64], name: str) -> ImageDataset:
    return ImageDataset(name, data.images[:, perm], data.labels, data.shape)


def permuted_tasks(train: ImageDataset, test: ImageDataset, *, n_tasks: int, seed: int = 0) -> list[Task]:
    """``n_tasks`` domain-incremental tasks: every class, each task under its own fixed pixel permutation (the
    first unpermuted), drawn from ``seed``."""
    if n_tasks < 1:
        raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
    rng = np.random.default_rng(seed)
    size = train.images.shape[1]
    classes = tuple(sorted(set(train.labels.tolist())))
    tasks = []
    for k in range(n_tasks):
        perm = np.arange(size, dtype=np.int64) if k == 0 else rng.permutation(size).astype(np.int64)
        task_id = f"permuted-{k}"
        tasks.append(Task(task_id, k, classes, _permute(train, perm, task_id), _permute(test, perm, task_id), perm))
    return tasks
