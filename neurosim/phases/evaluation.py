"""Evaluation of a continual-learning run: accuracy matrices, average accuracy and BWT.

Row ``r`` of an accuracy matrix is the evaluation after the ``r``-th WAKE; column ``t`` the
accuracy on task ``t`` (None until the task has been seen). Both scenarios are kept:
class-incremental (every class seen competes) and task-incremental (only the task's classes).

A run and its no-consolidation control see the same test images, so they are compared
image by image as well (``paired_comparison``): McNemar's exact test on the images that one
of the two gets right and the other wrong (McNemar 1947, Psychometrika 12:153).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.stats import binomtest

Row = list[float | None]
Scenario = Literal["class", "task"]
SCENARIOS: tuple[Scenario, Scenario] = ("class", "task")
Outcomes = list[list[int] | None]  # per task: 1 / 0 for each test image shown (right / wrong), None if unseen
Labels = list[npt.NDArray[np.int64] | None]  # per task: a class for each test image shown, None if unseen
Votes = list[list[int] | None]  # the same, JSON-ready (as results.json and the checkpoint keep them)


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


@dataclass(frozen=True)
class PairedComparison:
    """A run against its control on the same test images: how many only one of them gets right,
    and the two-sided p-value of McNemar's exact test (the images that both or neither get
    right carry no information about which is better)."""

    images: int
    run_only: int  # right in the run, wrong in the control
    control_only: int  # right in the control, wrong in the run
    p_value: float

    def as_json(self) -> dict[str, Any]:
        """The ``"paired"`` entry of ``results.json``'s ``"control"``."""
        return {"images": self.images, "run_only": self.run_only, "control_only": self.control_only,
                "p_value": self.p_value}  # fmt: skip


def outcomes(voted: Votes, labels: Votes) -> Outcomes:
    """Per task, 1 / 0 for each test image voted right / wrong (None where not evaluated)."""
    return [None if v is None or y is None else [int(a == b) for a, b in zip(v, y, strict=True)]
            for v, y in zip(voted, labels, strict=True)]  # fmt: skip


def confusion(voted: Votes, labels: Votes, task_classes: Sequence[Sequence[int]]) -> dict[str, Any]:
    """``{"classes", "counts"}``: ``counts[i][j]`` test images of class ``classes[i]`` voted
    ``classes[j]``, over every task evaluated; the classes are those tasks' (``task_classes``:
    each task's), in the order the tasks come."""
    if not labels:
        return {"classes": [], "counts": []}
    seen = [(v, y) for v, y in zip(voted, labels, strict=True) if v is not None and y is not None]
    evaluated = [cls for cls, y in zip(task_classes, labels, strict=True) if y is not None]
    classes = list(dict.fromkeys(int(c) for cls in evaluated for c in cls))
    classes += sorted({c for pair in seen for part in pair for c in part} - set(classes))
    index = {c: k for k, c in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for v, y in seen:
        np.add.at(counts, ([index[c] for c in y], [index[c] for c in v]), 1)
    return {"classes": classes, "counts": counts.tolist()}


def paired_comparison(run: Outcomes, control: Outcomes) -> PairedComparison:
    """Compare two evaluations of the same tasks' test images, image by image."""
    if len(run) != len(control):
        raise ValueError(f"the run has outcomes for {len(run)} tasks, the control for {len(control)}")
    run_only = control_only = images = 0
    for task, (mine, theirs) in enumerate(zip(run, control, strict=True)):
        if (mine is None) != (theirs is None) or len(mine or []) != len(theirs or []):
            raise ValueError(f"task {task}: the run and the control were not evaluated on the same test images")
        if mine is None or theirs is None:
            continue
        a, b = np.asarray(mine, dtype=bool), np.asarray(theirs, dtype=bool)
        run_only += int((a & ~b).sum())
        control_only += int((~a & b).sum())
        images += a.size
    discordant = run_only + control_only
    p = 1.0 if discordant == 0 else float(binomtest(run_only, discordant, 0.5).pvalue)
    return PairedComparison(images, run_only, control_only, p)


@dataclass
class AccuracyLog:
    """The accuracy matrices of both scenarios, when each task was first evaluated, the
    simulated time of every evaluation, and the votes and labels of the latest one (its
    per-image outcomes and its confusion over ``task_classes``, each task's classes, are
    derived from them)."""

    task_classes: Sequence[Sequence[int]] = ()

    matrix: dict[Scenario, list[Row]] = field(default_factory=lambda: {"class": [], "task": []})
    learned_at: dict[int, int] = field(default_factory=dict)  # task -> its row right after learning
    times: list[float] = field(default_factory=list)
    votes: dict[Scenario, Votes] = field(default_factory=lambda: {"class": [], "task": []})
    labels: Votes = field(default_factory=list)

    def record(self, predicted: dict[Scenario, Labels], labels: Labels, seen: list[int],
               sim_time: float) -> dict[Scenario, Row]:  # fmt: skip
        """Add one evaluation at simulated time ``sim_time``: in each scenario, the class voted for
        each test image of each task seen, against its ``labels``. Returns its accuracy rows."""
        for t in seen:
            self.learned_at.setdefault(t, len(self.matrix["class"]))
        self.labels = [None if y is None else y.tolist() for y in labels]
        rows: dict[Scenario, Row] = {}
        for scenario, per_task in predicted.items():
            self.votes[scenario] = [None if v is None else v.tolist() for v in per_task]
            right = outcomes(self.votes[scenario], self.labels)
            rows[scenario] = [None if r is None else float(np.mean(r)) for r in right]
            self.matrix[scenario].append(rows[scenario])
        self.times.append(sim_time)
        return rows

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
            "final_outcomes": outcomes(self.votes[primary], self.labels),
            "final_outcomes_task_incremental": outcomes(self.votes["task"], self.labels),
            "final_confusion_class_incremental": confusion(self.votes["class"], self.labels, self.task_classes),
        }
