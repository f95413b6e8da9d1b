"""Evaluation of a continual-learning run: accuracy matrices, average accuracy and BWT.

Row ``r`` of an accuracy matrix is the evaluation after the ``r``-th WAKE; column ``t`` the
accuracy on task ``t`` (None until the task has been seen). Both scenarios are kept:
class-incremental (every class seen competes) and task-incremental (only the task's classes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Row = list[float | None]
Scenario = Literal["class", "task"]


def average_accuracy(matrix: list[Row]) -> float:
    """Mean accuracy over the tasks seen, at the last evaluation."""
    last = [a for a in matrix[-1] if a is not None] if matrix else []
    return float(np.mean(last)) if last else float("nan")


def backward_transfer(matrix: list[Row], learned_at: dict[int, int]) -> float:
    """BWT (Lopez-Paz & Ranzato 2017): mean over the tasks learned before the last evaluation
    of (accuracy at the last evaluation - accuracy at the evaluation right after learning it)."""
    if len(matrix) < 2:
        return float("nan")
    final = matrix[-1]
    deltas = []
    for task, row in learned_at.items():
        after, now = matrix[row][task], final[task]
        if row < len(matrix) - 1 and after is not None and now is not None:
            deltas.append(now - after)
    return float(np.mean(deltas)) if deltas else float("nan")


@dataclass
class AccuracyLog:
    """The accuracy matrices of both scenarios, when each task was first evaluated, and the
    simulated time of every evaluation."""

    matrix: dict[Scenario, list[Row]] = field(default_factory=lambda: {"class": [], "task": []})
    learned_at: dict[int, int] = field(default_factory=dict)  # task -> its row right after learning
    times: list[float] = field(default_factory=list)

    def record(self, rows: dict[Scenario, Row], seen: list[int], sim_time: float) -> None:
        """Add one evaluation: each scenario's accuracy per task seen, at simulated time ``sim_time``."""
        for t in seen:
            self.learned_at.setdefault(t, len(self.matrix["class"]))
        for scenario, row in rows.items():
            self.matrix[scenario].append(row)
        self.times.append(sim_time)

    def summary(self, primary: Scenario) -> dict[str, Any]:
        """The results' accuracy fields, ``primary`` being the run's own scenario."""
        return {
            "accuracy_matrix": self.matrix[primary],
            "average_accuracy": average_accuracy(self.matrix[primary]),
            "bwt": backward_transfer(self.matrix[primary], self.learned_at),
            "accuracy_matrix_class_incremental": self.matrix["class"],
            "accuracy_matrix_task_incremental": self.matrix["task"],
            "average_accuracy_task_incremental": average_accuracy(self.matrix["task"]),
            "bwt_task_incremental": backward_transfer(self.matrix["task"], self.learned_at),
            "evaluation_times_s": self.times,
        }
