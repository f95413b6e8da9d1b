"""Run outputs: a fresh output directory, atomic JSON, spike archives and raster plots."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neurosim.atomic import atomic_write

if TYPE_CHECKING:
    from neurosim.sim.monitors import SpikeTrains


class OutputExistsError(FileExistsError):
    """The output directory already holds files; neurosim never overwrites them silently."""


def prepare_output_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """``path`` as an output directory: created if needed; refused when it holds files (unless ``overwrite``) or
    is a file."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out} already contains files; choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    return out


def strict_json(data: Any) -> Any:
    """``data`` with every non-finite float (NaN, infinity) replaced by None, so that it
    serialises as strict JSON (``null``), which every parser reads; Python's ``json`` would
    write ``NaN`` and ``Infinity``, which are not JSON."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, Mapping):
        return {k: strict_json(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [strict_json(v) for v in data]
    return data


def write_json(path: Path, data: Any) -> None:
    """Write strict JSON (non-finite numbers as ``null``) atomically: a reader sees the old
    file or the new one, never half of one."""
    text = json.dumps(strict_json(data), indent=2, sort_keys=False, allow_nan=False) + "\n"
    with atomic_write(path) as fh:
        fh.write(text.encode("utf-8"))


def write_spikes(path: Path, spikes: Mapping[str, SpikeTrains]) -> None:
    """``{name}_times`` (s, float64), ``{name}_indices`` and ``{name}_instances`` per source."""
    arrays: dict[str, np.ndarray] = {}
    for name, trains in spikes.items():
        arrays[f"{name}_times"] = trains.times.astype(np.float64)
        arrays[f"{name}_indices"] = trains.indices.astype(np.int64)
        arrays[f"{name}_instances"] = trains.instances.astype(np.int64)
    write_arrays(path, arrays)


def write_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """A compressed ``.npz``, written atomically."""
    with atomic_write(path) as fh:
        np.savez_compressed(fh, **dict(arrays))  # type: ignore[arg-type]


def raster_start(
    spikes: Mapping[str, SpikeTrains], sizes: Mapping[str, int], duration: float, readable_per_row: float = 150.0
) -> float:
    """Where a raster of ``duration`` s starts: 0, unless its busiest source has more than
    ``readable_per_row`` spikes per neuron (instance 0); then the last stretch that holds
    about that many."""
    per_row = max((float(np.count_nonzero(spikes[n].instances == 0)) / max(sizes[n], 1) for n in spikes), default=0.0)
    return 0.0 if per_row <= readable_per_row else duration * (1.0 - readable_per_row / per_row)


def plot_raster(
    path: Path,
    spikes: Mapping[str, SpikeTrains],
    sizes: Mapping[str, int],
    duration: float,
    *,
    max_points: int = 200_000,
    readable_per_row: float = 150.0,
) -> None:
    """One panel per source (instance 0), sharing the time axis. Where a row would hold more
    than ``readable_per_row`` spikes on average (they would merge into a bar at this width),
    only the last stretch of the run that holds about that many is drawn, and the axis says
    so (``rates.png`` covers the whole run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(spikes)
    start = raster_start(spikes, sizes, duration, readable_per_row)
    shown = duration - start
    heights = [max(1.0, math.log10(max(sizes[n], 10))) for n in names]
    fig, axes = plt.subplots(len(names), 1, sharex=True, figsize=(10, 1.5 + 1.6 * sum(heights)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)  # fmt: skip
    for ax, name in zip(axes[:, 0], names, strict=True):
        trains = spikes[name]
        sel = trains.instances == 0
        sel &= trains.times >= start
        times, idx = trains.times[sel], trains.indices[sel]
        if times.size > max_points:
            keep = np.random.default_rng(0).choice(times.size, max_points, replace=False)
            times, idx = times[keep], idx[keep]
        if sizes[name] <= 10:  # a few neurons: one row of ticks each, labelled
            ax.eventplot(
                [times[idx == i] for i in range(sizes[name])],
                lineoffsets=list(range(sizes[name])),
                linelengths=0.8,
                colors="k",
                linewidths=0.6,
            )
            ax.set_yticks(range(sizes[name]))
        else:
            ax.scatter(times, idx, s=0.5, marker=".", color="k", linewidths=0, rasterized=True)
        rate = trains.times.size / max(sizes[name] * duration, 1e-12) if duration > 0 else 0.0
        ax.set_ylabel(f"{name}\nindex")
        ax.set_ylim(-0.5, sizes[name] - 0.5)
        noun = "neuron" if sizes[name] == 1 else "neurons"
        ax.set_title(f"{name}: {sizes[name]} {noun}, {rate:.2f} Hz mean (all instances)", fontsize=9, loc="left")
    window = "" if start == 0 else f": the last {shown:.3g} s of {duration:g} s (rates.png: the whole run)"
    axes[-1, 0].set_xlabel(f"time (s){window}")
    axes[-1, 0].set_xlim(start, duration)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_weight_histograms(
    path: Path,
    initial: Mapping[str, np.ndarray],
    final: Mapping[str, np.ndarray],
    duration: float,
    w_max: Mapping[str, float] | None = None,
) -> None:
    """Weight distribution of every plastic projection, before and after the run, in units
    of its rule's ``w_max`` where given (Song et al. 2000 plot ``w / gmax``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(final)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        scale = (w_max or {}).get(name)
        before, after = (initial[name], final[name]) if scale is None else (initial[name] / scale, final[name] / scale)
        lo = float(min(before.min(), after.min())) if scale is None else 0.0
        hi = float(max(before.max(), after.max())) if scale is None else 1.0
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-12, 41)
        ax.hist(before, bins=bins, alpha=0.5, label="initial", color="tab:gray")
        ax.hist(after, bins=bins, alpha=0.7, label=f"after {duration:g} s", color="tab:blue")
        ax.set_title(f"{name}: {final[name].size} synapses", fontsize=9, loc="left")
        ax.set_xlabel("weight (projection units)" if scale is None else f"weight / w_max  (w_max = {scale:g})")
        ax.set_ylabel("synapses")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_rates(path: Path, spikes: Mapping[str, SpikeTrains], sizes: Mapping[str, int], duration: float) -> None:
    """Mean firing rate of every source over time (instance 0), in 50 bins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.linspace(0.0, max(duration, 1e-12), 51)
    width = edges[1] - edges[0]
    fig, ax = plt.subplots(figsize=(10, 3.2))
    for name, trains in spikes.items():
        counts, _ = np.histogram(trains.times[trains.instances == 0], bins=edges)
        ax.plot(edges[:-1] + width / 2, counts / (max(sizes[name], 1) * width), label=f"{name} ({sizes[name]})")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mean rate per neuron (Hz)")
    bin_text = f"{width:.3g} s" if width >= 1.0 else f"{width * 1e3:.3g} ms"
    ax.set_title(f"firing rates over time, bins of {bin_text}", fontsize=9, loc="left")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_state(path: Path, state: Mapping[str, np.ndarray]) -> None:
    """Every recorded state variable over time (instance 0), volts shown in mV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    populations = [key.removesuffix("_times") for key in state if key.endswith("_times")]
    panels = [(pop, key.removeprefix(f"{pop}_")) for pop in populations for key in state
              if key.startswith(f"{pop}_") and key != f"{pop}_times"]  # fmt: skip
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 1.2 + 2.2 * len(panels)), squeeze=False, sharex=True)
    for ax, (pop, var) in zip(axes[:, 0], panels, strict=True):
        values = np.asarray(state[f"{pop}_{var}"])[:, 0, :]
        volts = var in ("v", "theta")
        ax.plot(state[f"{pop}_times"], values * (1e3 if volts else 1.0), linewidth=0.7)
        ax.set_ylabel(f"{pop}.{var}" + (" (mV)" if volts else ""))
        ax.set_title(f"{pop}.{var}: {values.shape[1]} recorded neurons", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
