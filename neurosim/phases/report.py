"""Plots of a continual-learning experiment, drawn from what the run wrote (``results.json``
and ``sleep_replay.npz``), not from the running object: accuracy over time with the phases
shaded (and the run against its control), the phase timeline, and a spike raster of every
sleep episode. ``plot_experiment(out_dir)`` redraws them from a finished run's directory."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import numpy.typing as npt
from matplotlib.patches import Patch

from neurosim.atomic import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes

PHASE_COLOURS = {"wake": "#f2f2f2", "learning": "#cfe3f7", "sleep": "#e5d4f2"}
REPLAY_FILE = "sleep_replay.npz"


class Replay(NamedTuple):
    """One sleep episode's replay spikes and each neuron's class at the time."""

    times: npt.NDArray[np.float64]  # s since the start of the episode
    indices: npt.NDArray[np.int64]
    assignments: npt.NDArray[np.int64]


def write_replays(path: Path, replays: Sequence[Replay]) -> None:
    """Every episode's raster in one ``.npz`` (``times_k``, ``indices_k``, ``assignments_k``)."""
    arrays: dict[str, Any] = {}
    for k, r in enumerate(replays):
        arrays |= {f"times_{k}": r.times, f"indices_{k}": r.indices, f"assignments_{k}": r.assignments}
    with atomic_write(path) as handle:
        np.savez_compressed(handle, **arrays)


def read_replays(path: Path) -> list[Replay]:
    """The sleep replays saved in ``path`` (``sleep_replay.npz``); empty if there is none."""
    if not path.exists():
        return []
    with np.load(path) as data:
        n = sum(1 for name in data.files if name.startswith("times_"))
        return [Replay(data[f"times_{k}"], data[f"indices_{k}"], data[f"assignments_{k}"]) for k in range(n)]


def _phase_spans(results: dict[str, Any]) -> list[tuple[float, float, str, str | None]]:
    history = results["phase_history"]
    end = results["simulated_s"]
    spans = []
    for k, event in enumerate(history):
        stop = history[k + 1]["sim_time_s"] if k + 1 < len(history) else end
        spans.append((event["sim_time_s"], stop, event["phase"], event["task"]))
    return spans


def plot_experiment(out_dir: Path) -> None:
    """``accuracy.png``, ``phases.png``, ``confusion.png`` and (after any sleep) ``sleep_raster.png``
    in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    spans = _phase_spans(results)
    scenario = results["scenario"]
    matrix = results["accuracy_matrix"]
    end = max(results["simulated_s"], 1e-9)
    control = results.get("control")
    fig, axes = plt.subplots(1, 2 if control else 1, figsize=(14 if control else 10, 4), squeeze=False,
                             gridspec_kw={"width_ratios": [2.2, 1]} if control else None)  # fmt: skip
    ax = axes[0, 0]
    for start, stop, phase, _ in spans:
        ax.axvspan(start, stop, color=PHASE_COLOURS[phase], linewidth=0)
    times = np.asarray(results["evaluation_times_s"])
    for t, task in enumerate(results["tasks"]):
        values = np.array([np.nan if row[t] is None else row[t] for row in matrix], dtype=np.float64)
        if not np.all(np.isnan(values)):
            ax.plot(times, values, marker="o", label=f"{task['task_id']} {tuple(task['classes'])}")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(f"accuracy ({scenario}-incremental)")
    ax.set_ylim(-0.02, 1.02)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(color=c, label=p) for p, c in PHASE_COLOURS.items()]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    average, bwt = results["average_accuracy"], results["bwt"]  # None where undefined (strict JSON)
    summary = (f": final average {average:.3f}" + (f", BWT {bwt:+.3f}" if bwt is not None else "")
               if matrix and average is not None else "")  # fmt: skip
    ax.set_title(f"accuracy of every task at each WAKE evaluation{summary}", fontsize=9, loc="left")
    if control and matrix:
        _plot_against_control(axes[0, 1], results, matrix[-1], control)
    fig.tight_layout()
    fig.savefig(out_dir / "accuracy.png", dpi=120)
    plt.close(fig)

    _plot_phases(out_dir / "phases.png", results, spans, end)
    if results.get("final_confusion_class_incremental", {}).get("counts"):
        panels = {"this run": results["final_confusion_class_incremental"]}
        if (control or {}).get("final_confusion_class_incremental", {}).get("counts"):
            panels["no-consolidation control"] = control["final_confusion_class_incremental"]
        _plot_confusion(out_dir / "confusion.png", panels)
    if "task_free" in results:
        _plot_drift(out_dir / "drift.png", results["task_free"])
    replays = read_replays(out_dir / REPLAY_FILE)
    if replays:
        _plot_replay(out_dir / "sleep_raster.png", replays, results["sleep"])


def _plot_phases(path: Path, results: dict[str, Any], spans: list[tuple[float, float, str, str | None]],
                 end: float) -> None:  # fmt: skip
    """The phase timeline, naps drawn over their LEARNING blocks."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 1.8))
    for start, stop, phase, task_id in spans:
        ax.barh(0, stop - start, left=start, color=PHASE_COLOURS[phase], edgecolor="k", linewidth=0.5)
        if stop - start > 0.02 * end:
            ax.text((start + stop) / 2, 0, phase if phase != "learning" else f"L {task_id}", ha="center",
                    va="center", fontsize=7)  # fmt: skip
    for nap in results["sleep"]:  # naps inside LEARNING: no phase change, drawn over it
        if nap["within_task"] is not None:
            ax.barh(0, nap["duration_s"], left=nap["start_s"], height=0.5, color=PHASE_COLOURS["sleep"],
                    edgecolor="#8a5fb0")  # fmt: skip
    ax.set_yticks([])
    ax.set_xlabel("simulated time (s)")
    ax.set_xlim(0, end)
    ax.set_title("phase timeline", fontsize=9, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_confusion(path: Path, panels: dict[str, dict[str, Any]]) -> None:
    """The last evaluation's class-incremental votes (the run's, and its control's beside it):
    true class against the class voted, each row as a share of its images, classes in the order
    learned. Late columns lit in early rows: the newest classes take the older ones' images;
    early columns in the last rows: the reverse."""
    import matplotlib.pyplot as plt

    size = len(next(iter(panels.values()))["classes"])
    fig, axes = plt.subplots(1, len(panels), figsize=(1.2 + 0.45 * size * len(panels), 0.9 + 0.45 * size),
                             squeeze=False)  # fmt: skip
    for ax, (title, table) in zip(axes[0], panels.items(), strict=True):
        classes, counts = table["classes"], np.asarray(table["counts"], dtype=np.float64)
        shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (i, j), n in np.ndenumerate(counts.astype(int)):
            if n:
                ax.text(j, i, str(n), ha="center", va="center", fontsize=7,
                        color="white" if shares[i, j] > 0.6 else "k")  # fmt: skip
        ax.set_xticks(range(len(classes)), classes)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("class voted")
        ax.set_ylabel("true class")
        ax.set_title(title, fontsize=9, loc="left")
    fig.suptitle("the last evaluation's class-incremental votes (numbers: test images)", fontsize=10)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.03, label="share of the row")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _plot_against_control(
    ax: Axes, results: dict[str, Any], final: list[float | None], control: dict[str, Any]
) -> None:
    """Final accuracy per task: the run against its no-consolidation control."""
    ids = [task["task_id"] for task in results["tasks"]]
    run = [np.nan if a is None else a for a in final]
    base = [np.nan if a is None else a for a in control["accuracy_matrix"][-1]]
    x = np.arange(len(ids))
    ax.bar(x - 0.2, run, 0.4, label=f"this run: average {np.nanmean(run):.3f}", color="#5b8bd0")
    ax.bar(x + 0.2, base, 0.4, label=f"no consolidation: average {np.nanmean(base):.3f}", color="#bbbbbb")
    ax.set_xticks(x, ids, fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"accuracy after the last task ({results['scenario']}-incremental)")
    ax.legend(fontsize=7, loc="upper left")
    title = "against its own control (same seed, same data)"
    if "paired" in control:  # McNemar's exact test over the same test images
        p = control["paired"]
        title += (f"\ntest images right only here: {p['run_only']}, only there: {p['control_only']}"
                  f"\n(exact McNemar test p = {p['p_value']:.2g})")  # fmt: skip
    ax.set_title(title, fontsize=9, loc="left")


# One colour per class: tab10 with its grey (class 7) swapped for black, so that no class can be
# read as the light grey of unassigned neurons.
CLASS_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#000000", "#bcbd22", "#17becf")  # fmt: skip
UNASSIGNED_COLOUR = "#c8c8c8"


def _plot_replay(path: Path, replays: list[Replay], episodes: list[dict[str, Any]]) -> None:
    """One raster per SLEEP, each spike coloured by the class its neuron is assigned to."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba_array

    palette = to_rgba_array([*CLASS_COLOURS, UNASSIGNED_COLOUR])
    fig, axes = plt.subplots(len(replays), 1, figsize=(10, 1.6 + 1.3 * len(replays)), squeeze=False, sharex=True)
    for k, (replay, diag) in enumerate(zip(replays, episodes, strict=True)):
        ax = axes[k, 0]
        assigned = replay.assignments
        n = assigned.shape[0]
        cls = assigned[replay.indices]
        order = np.argsort(assigned, kind="stable")  # neurons grouped by class
        row_of = np.empty(n, dtype=np.int64)
        row_of[order] = np.arange(n)
        colour = palette[np.where(cls >= 0, cls % len(CLASS_COLOURS), len(CLASS_COLOURS))]
        ax.scatter(replay.times, row_of[replay.indices], s=1.5, c=colour, linewidths=0)
        ax.set_ylim(-0.5, n - 0.5)
        ax.set_ylabel("neuron\n(by class)", fontsize=7)
        ax.set_title(
            f"sleep {k}: {diag['spikes']} spikes, {diag['classes_reactivated']}/{diag['classes_seen']} classes "
            f"reactivated, gain {diag['gain']:.2f}, {diag['rate_hz']:.2f} Hz per neuron",
            fontsize=8,
            loc="left",
        )
    axes[-1, 0].set_xlabel("time in the sleep episode (s)")
    classes = sorted({c for r in replays for c in r.assignments.tolist() if c >= 0})
    handles = [Patch(color=CLASS_COLOURS[c % len(CLASS_COLOURS)], label=str(c)) for c in classes]
    handles.append(Patch(color=UNASSIGNED_COLOUR, label="unassigned"))
    axes[0, 0].legend(handles=handles, fontsize=6, ncol=len(handles), loc="lower right", bbox_to_anchor=(1.0, 1.15))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_drift(path: Path, task_free: dict[str, Any]) -> None:
    """The readout's loss per image of a task-free stream, the true task boundaries and the drifts found."""
    import matplotlib.pyplot as plt

    loss = np.asarray(task_free["readout_loss"], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(10, 2.8))
    ax.plot(loss, lw=0.6, color="#777777", label="readout loss per image")
    window = 10
    if loss.size >= window:
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window - 1, loss.size), smooth, lw=1.2, color="k", label=f"mean of {window}")
    for k, b in enumerate(task_free["boundaries"]):
        ax.axvline(b, color="#2a7ab9", ls="--", lw=1, label="true task boundary" if k == 0 else None)
    for k, d in enumerate(task_free["drifts"]):
        ax.axvline(d, color="#d62728", lw=1.5, label="drift detected" if k == 0 else None)
    ax.set_xlabel("image in the stream")
    ax.set_ylabel("-log p(label) (nats)")
    delay = task_free["mean_delay_images"]
    ax.set_title(
        f"task-free: {task_free['found']}/{len(task_free['boundaries'])} boundaries found"
        + (f", {delay:.1f} images late on average" if delay is not None else "")
        + f", {task_free['false_alarms']} false alarms",
        fontsize=9,
        loc="left",
    )
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
