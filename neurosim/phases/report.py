"""Plots of a continual-learning experiment: accuracy over time with the phases shaded, the
phase timeline, and a spike raster of a sleep episode."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
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
    from matplotlib.patches import Patch

    spans = _phase_spans(experiment)
    scenario = experiment.cfg.scenario
    matrix = experiment.matrix[scenario]

    fig, ax = plt.subplots(figsize=(10, 4))
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
    ax.set_title("accuracy of every task at each WAKE evaluation", fontsize=9, loc="left")
    fig.tight_layout()
    fig.savefig(out_dir / "accuracy.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 1.8))
    for start, stop, phase, task_id in spans:
        ax.barh(0, stop - start, left=start, color=PHASE_COLOURS[phase], edgecolor="k", linewidth=0.5)
        if stop - start > 0.02 * max(experiment.sim.t, 1e-9):
            ax.text((start + stop) / 2, 0, phase if phase != "learning" else f"L {task_id}", ha="center",
                    va="center", fontsize=7)  # fmt: skip
    ax.set_yticks([])
    ax.set_xlabel("simulated time (s)")
    ax.set_xlim(0, max(experiment.sim.t, 1e-9))
    ax.set_title("phase timeline", fontsize=9, loc="left")
    fig.tight_layout()
    fig.savefig(out_dir / "phases.png", dpi=120)
    plt.close(fig)

    if experiment.sleep_spikes and experiment.sleep_window is not None:
        trains = experiment.sleep_spikes["exc"]
        start, stop = experiment.sleep_window
        fig, ax = plt.subplots(figsize=(10, 3.5))
        ax.scatter(trains.times - start, trains.indices, s=2, color="k", linewidths=0)
        ax.set_xlim(0, stop - start)
        ax.set_ylim(-0.5, experiment.cfg.network.n_hidden - 0.5)
        ax.set_xlabel("time in the first sleep episode (s)")
        ax.set_ylabel("excitatory neuron")
        ax.set_title(f"sleep replay: {trains.times.size} spikes", fontsize=9, loc="left")
        fig.tight_layout()
        fig.savefig(out_dir / "sleep_raster.png", dpi=120)
        plt.close(fig)
