"""Plots of a continual-learning experiment: accuracy over time with the phases shaded, the
phase timeline, and a spike raster of a sleep episode."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.patches import Patch

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from neurosim.phases.schedule import Experiment

PHASE_COLOURS = {"wake": "#f2f2f2", "learning": "#cfe3f7", "sleep": "#e5d4f2"}


def _phase_spans(experiment: Experiment) -> list[tuple[float, float, str, str | None]]:
    history = experiment.machine.history
    end = experiment.sim.t
    spans = []
    for k, event in enumerate(history):
        stop = history[k + 1].sim_time_s if k + 1 < len(history) else end
        spans.append((event.sim_time_s, stop, event.phase.value, event.task))
    return spans


def plot_experiment(out_dir: Path, experiment: Experiment) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spans = _phase_spans(experiment)
    scenario = experiment.cfg.scenario
    matrix = experiment.matrix[scenario]

    control = experiment.control
    fig, axes = plt.subplots(1, 2 if control else 1, figsize=(14 if control else 10, 4), squeeze=False,
                             gridspec_kw={"width_ratios": [2.2, 1]} if control else None)  # fmt: skip
    ax = axes[0, 0]
    for start, stop, phase, _ in spans:
        ax.axvspan(start, stop, color=PHASE_COLOURS[phase], linewidth=0)
    times = np.asarray(experiment.evaluation_times)
    for t, task in enumerate(experiment.tasks):
        values = np.array([np.nan if row[t] is None else row[t] for row in matrix], dtype=np.float64)
        if not np.all(np.isnan(values)):
            ax.plot(times, values, marker="o", label=f"{task.task_id} {task.classes}")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(f"accuracy ({scenario}-incremental)")
    ax.set_ylim(-0.02, 1.02)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(color=c, label=p) for p, c in PHASE_COLOURS.items()]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    summary = ""
    if matrix:
        from neurosim.phases.schedule import average_accuracy, backward_transfer

        bwt = backward_transfer(matrix, experiment.learned_at)
        summary = f": final average {average_accuracy(matrix):.3f}, BWT {bwt:+.3f}"
    ax.set_title(f"accuracy of every task at each WAKE evaluation{summary}", fontsize=9, loc="left")
    if control and matrix:
        _plot_against_control(axes[0, 1], experiment, matrix[-1], control)
    fig.tight_layout()
    fig.savefig(out_dir / "accuracy.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 1.8))
    for start, stop, phase, task_id in spans:
        ax.barh(0, stop - start, left=start, color=PHASE_COLOURS[phase], edgecolor="k", linewidth=0.5)
        if stop - start > 0.02 * max(experiment.sim.t, 1e-9):
            ax.text((start + stop) / 2, 0, phase if phase != "learning" else f"L {task_id}", ha="center",
                    va="center", fontsize=7)  # fmt: skip
    for nap in experiment.sleep_diagnostics:  # naps inside LEARNING: no phase change, drawn over it
        if nap.within_task is not None:
            ax.barh(0, nap.duration_s, left=nap.start_s, height=0.5, color=PHASE_COLOURS["sleep"], edgecolor="#8a5fb0")
    ax.set_yticks([])
    ax.set_xlabel("simulated time (s)")
    ax.set_xlim(0, max(experiment.sim.t, 1e-9))
    ax.set_title("phase timeline", fontsize=9, loc="left")
    fig.tight_layout()
    fig.savefig(out_dir / "phases.png", dpi=120)
    plt.close(fig)

    if experiment.sleep_reports:
        _plot_replay(out_dir / "sleep_raster.png", experiment)


def _plot_against_control(ax: Axes, experiment: Experiment, final: list[float | None], control: dict[str, Any]) -> None:
    """Final accuracy per task: the run against its no-consolidation control."""
    ids = [task.task_id for task in experiment.tasks]
    run = [np.nan if a is None else a for a in final]
    base = [np.nan if a is None else a for a in control["accuracy_matrix"][-1]]
    x = np.arange(len(ids))
    ax.bar(x - 0.2, run, 0.4, label=f"this run: average {np.nanmean(run):.3f}", color="#5b8bd0")
    ax.bar(x + 0.2, base, 0.4, label=f"no consolidation: average {np.nanmean(base):.3f}", color="#bbbbbb")
    ax.set_xticks(x, ids, fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"accuracy after the last task ({experiment.cfg.scenario}-incremental)")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("against its own control (same seed, same data)", fontsize=9, loc="left")


def _plot_replay(path: Path, experiment: Experiment) -> None:
    """One raster per SLEEP, each spike coloured by the class its neuron is assigned to."""
    import matplotlib.pyplot as plt

    reports = experiment.sleep_reports
    colours = plt.get_cmap("tab10")
    n = experiment.cfg.network.n_hidden
    fig, axes = plt.subplots(len(reports), 1, figsize=(10, 1.6 + 1.3 * len(reports)), squeeze=False, sharex=True)
    for k, (report, assigned, diag) in enumerate(
        zip(reports, experiment.sleep_assignments, experiment.sleep_diagnostics, strict=True)
    ):
        ax = axes[k, 0]
        cls = assigned[report.trains.indices]
        order = np.argsort(assigned, kind="stable")  # neurons grouped by class
        row_of = np.empty(n, dtype=np.int64)
        row_of[order] = np.arange(n)
        colour = np.where(cls[:, None] >= 0, colours(np.maximum(cls, 0) % 10), (0.6, 0.6, 0.6, 1.0))
        ax.scatter(report.trains.times - report.start_s, row_of[report.trains.indices], s=1.5, c=colour, linewidths=0)
        ax.set_ylim(-0.5, n - 0.5)
        ax.set_ylabel("neuron\n(by class)", fontsize=7)
        ax.set_title(
            f"sleep {k}: {diag.spikes} spikes, {diag.classes_reactivated}/{diag.classes_seen} classes reactivated, "
            f"gain {diag.gain:.2f}, {diag.rate_hz:.2f} Hz per neuron",
            fontsize=8,
            loc="left",
        )
    axes[-1, 0].set_xlabel("time in the sleep episode (s)")
    classes = sorted({c for a in experiment.sleep_assignments for c in a.tolist() if c >= 0})
    handles = [Patch(color=colours(c % 10), label=str(c)) for c in classes]
    handles.append(Patch(color=(0.6, 0.6, 0.6), label="unassigned"))
    axes[0, 0].legend(handles=handles, fontsize=6, ncol=len(handles), loc="lower right", bbox_to_anchor=(1.0, 1.15))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
