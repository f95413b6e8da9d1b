"""The cortical microcircuit of Potjans & Diesmann (2014), at any scale.

Potjans, T. C. & Diesmann, M. (2014). The cell-type specific cortical microcircuit:
relating structure and activity in a full-scale spiking network model. Cerebral Cortex
24(3), 785-806. doi:10.1093/cercor/bhs358

Eight populations (E and I in layers 2/3, 4, 5, 6) of current-based LIF neurons
(``iaf_psc_exp``)::

    dv/dt = (E_L - v + g_exc + g_inh + R_m I_dc) / tau_m      [V]   (unless refractory)
    dg/dt = -g / tau_syn                                       [V]
    tau_m 10 ms, C_m 250 pF (R_m 40 MOhm), E_L = V_reset = -65 mV, V_th = -50 mV,
    t_ref 2 ms, tau_syn 0.5 ms, v(0) ~ N(-58 mV, (10 mV)^2), dt 0.1 ms

with the paper's connection probabilities, 0.15 mV PSPs (L4E -> L2/3E doubled, g = -4),
normally distributed per-synapse delays (1.5 ms excitatory, 0.75 ms inhibitory, 50 % spread)
and 8 Hz Poisson background on 1,600-2,900 inputs per neuron. ``--scale`` shrinks neuron
numbers and in-degrees together, with the DC compensation of the paper's companion code
(``neurosim.microcircuit``). The rates at the full-scale model are about 0.9, 2.9, 4.4, 5.9,
7.6, 8.7, 1.1 and 7.8 Hz (L2/3E ... L6I); the irregularity (CV of the ISIs) is near 0.5-0.9.

Run:  python examples/microcircuit.py [--scale 0.1] [--duration 1.0] [--out runs/microcircuit]
      python examples/microcircuit.py --scale 0.1 --write-config examples/microcircuit.toml
The TOML runs with ``neurosim run examples/microcircuit.toml`` (the same network).

Writes ``raster.png`` (spikes by layer, as the paper's Fig. 6), ``rates.png`` (rate and CV of
ISI per population) and ``rates.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from neurosim.build import build_simulation
from neurosim.config import SimulationConfig
from neurosim.microcircuit import INHIBITORY, LAYERS, POPULATIONS, MicrocircuitParams, derive, microcircuit_config
from neurosim.outputs import prepare_output_dir
from neurosim.sim import SpikeMonitor
from neurosim.sim.monitors import SpikeTrains, rate_and_cv

TRANSIENT = 0.1  # s left out of the statistics: the start from random membrane potentials


def write_config(cfg: SimulationConfig, path: Path, scale: float) -> None:
    """The config as TOML, with a header saying where it comes from."""
    import tomli_w

    header = (
        f"# Potjans & Diesmann (2014) cortical microcircuit at scale {scale:g}, written by\n"
        f"#   python examples/microcircuit.py --scale {scale:g} --write-config {path.name}\n"
        "# from neurosim.microcircuit (published parameters; see examples/microcircuit.py).\n"
        "# Run it:  neurosim run examples/microcircuit.toml\n\n"
    )
    path.write_text(header + tomli_w.dumps(cfg.model_dump(mode="json", exclude_defaults=True)))


def statistics(trains: dict[str, SpikeTrains], sizes: dict[str, int], start: float, stop: float) -> dict[str, dict]:
    """Per population: mean rate (Hz) in ``[start, stop)`` and mean CV of ISIs (neurons with >= 3 spikes)."""
    out = {}
    for name, tr in trains.items():
        rate, cv = rate_and_cv(tr.times, tr.indices, sizes[name], start, stop)
        out[name] = {"rate_hz": rate, "cv_isi": cv}
    return out


def plot(
    trains: dict[str, SpikeTrains], sizes: dict[str, int], stats: dict[str, dict], out: Path, t_end: float
) -> None:
    """Raster by layer (a window, at most 2,000 neurons per population shown) and rate / CV bars."""
    window = (max(TRANSIENT, t_end - 0.2), t_end)
    fig, ax = plt.subplots(figsize=(7, 6))
    offset, ticks = 0, []
    for name in reversed(POPULATIONS):  # L2/3 on top, as in the paper
        tr = trains[name]
        shown = min(sizes[name], 2000)
        keep = (tr.times >= window[0]) & (tr.times < window[1]) & (tr.indices < shown)
        color = "tab:blue" if INHIBITORY[POPULATIONS.index(name)] else "black"
        ax.plot(tr.times[keep] * 1e3, tr.indices[keep] + offset, ",", color=color)
        ticks.append((offset + shown / 2, name))
        offset += shown + 100
    ax.set_yticks([t for t, _ in ticks], [n for _, n in ticks])
    ax.set_xlabel("time (ms)")
    ax.set_title("Microcircuit: spikes by population (E black, I blue)")
    fig.tight_layout()
    fig.savefig(out / "raster.png", dpi=120)
    plt.close(fig)

    fig, (ax_rate, ax_cv) = plt.subplots(1, 2, figsize=(9, 3.5))
    colors = ["tab:blue" if inh else "gray" for inh in INHIBITORY]
    ax_rate.barh(POPULATIONS[::-1], [stats[p]["rate_hz"] for p in POPULATIONS][::-1], color=colors[::-1])
    ax_rate.set_xlabel("rate (Hz)")
    ax_cv.barh(POPULATIONS[::-1], [stats[p]["cv_isi"] for p in POPULATIONS][::-1], color=colors[::-1])
    ax_cv.set_xlabel("CV of ISIs")
    fig.suptitle(f"layers {', '.join(LAYERS)}: firing rates and irregularity")
    fig.tight_layout()
    fig.savefig(out / "rates.png", dpi=120)
    plt.close(fig)


def run(scale: float, duration: float, out: Path, seed: int = 55) -> dict[str, dict]:
    """Build and simulate the microcircuit; write its figures and statistics into ``out``."""
    params = MicrocircuitParams(scale=scale)
    numbers = derive(params)
    t0 = time.perf_counter()
    sim = build_simulation(microcircuit_config(params, duration=duration, seed=seed))
    build_s = time.perf_counter() - t0
    monitors = {name: sim.add_monitor(SpikeMonitor(name)) for name in POPULATIONS}
    print(f"scale {scale:g}: {numbers.n_neurons:,} neurons, {numbers.n_synapses:,} synapses, built in {build_s:.1f} s")
    stats_run = sim.run(duration, progress=True)
    print(f"{duration:g} s simulated in {stats_run.wall_s:.1f} s")
    sizes = {name: int(n) for name, n in zip(POPULATIONS, numbers.sizes, strict=True)}
    trains = {name: m.trains() for name, m in monitors.items()}
    stats = statistics(trains, sizes, min(TRANSIENT, duration / 2), duration)
    out = prepare_output_dir(out, overwrite=True)
    plot(trains, sizes, stats, out, duration)
    summary = {"scale": scale, "duration_s": duration, "populations": stats}
    (out / "rates.json").write_text(json.dumps(summary, indent=1))
    for name in POPULATIONS:
        print(f"  {name:5s} {stats[name]['rate_hz']:6.2f} Hz   CV ISI {stats[name]['cv_isi']:.2f}")
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.1, help="of neuron numbers and in-degrees, in (0, 1]")
    parser.add_argument("--duration", type=float, default=1.0, help="biological time (s)")
    parser.add_argument("--seed", type=int, default=55)
    parser.add_argument("--out", type=Path, default=Path("runs/microcircuit"))
    parser.add_argument("--write-config", type=Path, help="write the config as TOML here instead of running it")
    args = parser.parse_args()
    if args.write_config is not None:
        cfg = microcircuit_config(MicrocircuitParams(scale=args.scale), duration=args.duration, seed=args.seed)
        write_config(cfg, args.write_config, args.scale)
        print(f"wrote {args.write_config}")
        return
    run(args.scale, args.duration, args.out, args.seed)


if __name__ == "__main__":
    main()
