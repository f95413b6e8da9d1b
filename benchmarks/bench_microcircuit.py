"""The cortical microcircuit (Potjans & Diesmann 2014) at scale: neurosim against NEST and Brian2.

The same model (``neurosim.microcircuit``: published parameters, ``scale`` on neuron numbers
and in-degrees with the DC compensation of the paper's companion code) is built and run for
``--duration`` of biological time by

- neurosim (compiled CPU path, one thread);
- NEST 3.10 (``pip install nest-simulator``), with 1 and 2 threads, ``iaf_psc_exp`` neurons,
  ``fixed_total_number`` connections with redrawn normal weights and delays, one
  ``poisson_generator`` per population as the background (NEST's microcircuit example);
- Brian2 2.9 C++ standalone (one thread), fed neurosim's synapses (``neurosim.backends.brian2``:
  the same pre/post/weight/delay arrays, ``PoissonInput`` for the background).

Each run is its own process, so its peak memory (``ru_maxrss``; for Brian2 the standalone
binary's, through ``/usr/bin/time``) is its own. Reported per run: build time (NEST: create,
connect and ``Prepare``; neurosim: drawing the structure and building the simulation;
Brian2: drawing the structure, code generation, compilation and loading), simulation time
(the run alone, after a short warm-up for neurosim's compiled loop; NEST's ``Run``;
Brian2's own measurement of its run), peak memory, memory per synapse (the growth of the
process while building, over the recurrent synapses) and rates per population.

A second part compares the rates: ``--rate-seeds`` seeds of neurosim and of NEST (2 threads)
at ``--rate-scale`` for ``--rate-duration`` seconds (the first 0.5 s discarded), per
population mean +- std over seeds; the target is neurosim within 10 % of NEST's mean or
within NEST's own seed spread, whichever is larger.

Every finished run is appended to ``results/microcircuit_runs.jsonl`` at once (a run already
there is not redone: delete the file to start over); the tables go to
``results/microcircuit.md`` and the rate bars to ``results/microcircuit_rates.png``.

    .venv/bin/python benchmarks/bench_microcircuit.py [--scales 0.1 0.25 0.5 1.0] [--duration 1.0]
        [--simulators neurosim nest1 nest2 brian2] [--rate-seeds 3] [--rate-scale 0.1] [--rate-duration 5.0]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_description, table_header
from neurosim.microcircuit import INHIBITORY, POPULATIONS, MicrocircuitParams, derive, microcircuit_config
from neurosim.sim.monitors import rate_and_cv

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "microcircuit_runs.jsonl"
SIMULATORS = ("neurosim", "nest1", "nest2", "brian2")
SEED = 55


def _rss_bytes() -> int:
    """The process's resident memory now (``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _statistics(times: Sequence[np.ndarray], indices: Sequence[np.ndarray], sizes: np.ndarray, start: float,
                stop: float) -> dict[str, Any]:  # fmt: skip
    """Per population: mean rate (Hz) in ``[start, stop)`` and mean CV of the ISIs (``rate_and_cv``)."""
    pairs = [rate_and_cv(t, i, int(n), start, stop) for t, i, n in zip(times, indices, sizes, strict=True)]
    return {"rates": [rate for rate, _ in pairs], "cv": [cv for _, cv in pairs]}


# ----------------------------------------------------------------------------- neurosim
def run_neurosim(scale: float, duration: float, seed: int, window: tuple[float, float]) -> dict[str, Any]:
    from neurosim.build import build_simulation
    from neurosim.sim import SpikeMonitor

    # load the compiled loop (from numba's cache) on a tiny circuit first: the memory measured
    # below is then the network's, not the compiler's
    build_simulation(microcircuit_config(MicrocircuitParams(scale=0.002), duration=0.001)).run(0.001)
    params = MicrocircuitParams(scale=scale)
    numbers = derive(params)
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    sim = build_simulation(microcircuit_config(params, duration=duration, seed=seed))
    build_s = time.perf_counter() - t0
    monitors = [sim.add_monitor(SpikeMonitor(name)) for name in POPULATIONS]
    warm = 0.005
    sim.run(warm)  # compiles the loop (cached on disk after the first time) and builds its tables
    rss_built = _rss_bytes()
    t0 = time.perf_counter()
    sim.run(duration)
    sim_s = time.perf_counter() - t0
    trains = [m.trains() for m in monitors]
    stats = _statistics([tr.times - warm for tr in trains], [tr.indices for tr in trains], numbers.sizes, *window)
    return {"build_s": build_s, "sim_s": sim_s, "peak_rss": _peak_rss_bytes(), "build_rss": rss_built - rss0,
            "n_synapses": numbers.n_synapses, "n_neurons": numbers.n_neurons, **stats}  # fmt: skip


# ----------------------------------------------------------------------------- NEST
def run_nest(scale: float, duration: float, seed: int, threads: int, window: tuple[float, float]) -> dict[str, Any]:
    import nest

    nest.set_verbosity("M_ERROR")
    params = MicrocircuitParams(scale=scale)
    numbers = derive(params)
    neuron = params.neuron
    r_m = neuron.r_m
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    nest.ResetKernel()
    nest.set(resolution=0.1, local_num_threads=threads, rng_seed=seed + 1, print_time=False)
    model = {"C_m": params.c_m * 1e12, "tau_m": neuron.tau_m * 1e3, "tau_syn_ex": neuron.tau_exc * 1e3,
             "tau_syn_in": neuron.tau_inh * 1e3, "t_ref": neuron.t_ref * 1e3, "E_L": neuron.v_rest * 1e3,
             "V_th": neuron.v_threshold * 1e3, "V_reset": neuron.v_reset * 1e3}  # fmt: skip
    pops, recorders = [], []
    for t, n in enumerate(numbers.sizes):
        pop = nest.Create("iaf_psc_exp", int(n), params={**model, "I_e": float(numbers.dc_current[t]) * 1e12})
        pop.V_m = nest.random.normal(mean=params.v0_mean * 1e3, std=params.v0_std * 1e3)
        recorder = nest.Create("spike_recorder")
        nest.Connect(pop, recorder)
        pops.append(pop)
        recorders.append(recorder)
    for t, target in enumerate(pops):
        for s, source in enumerate(pops):
            n_syn = int(numbers.synapses[t, s])
            if n_syn == 0:
                continue
            mean_pa = numbers.weight_mean[t, s] / r_m * 1e12
            std_pa = numbers.weight_std[t, s] / r_m * 1e12
            low, high = (-np.inf, 0.0) if INHIBITORY[s] else (0.0, np.inf)
            weight = nest.math.redraw(nest.random.normal(mean=mean_pa, std=std_pa), min=low, max=high)
            delay = nest.math.redraw(
                nest.random.normal(mean=numbers.delay_mean[s] * 1e3, std=numbers.delay_std[s] * 1e3),
                min=0.1, max=np.inf,
            )  # fmt: skip
            nest.Connect(source, target,
                         {"rule": "fixed_total_number", "N": n_syn, "allow_autapses": False, "allow_multapses": True},
                         {"synapse_model": "static_synapse", "weight": weight, "delay": delay})  # fmt: skip
        if params.background == "poisson":
            generator = nest.Create("poisson_generator",
                                    params={"rate": params.background_rate * float(numbers.external_indegree[t])})
            nest.Connect(generator, target, "all_to_all",
                         {"weight": numbers.external_weight / r_m * 1e12, "delay": 1.5})  # fmt: skip
    nest.Prepare()
    build_s = time.perf_counter() - t0
    rss_built = _rss_bytes()
    t0 = time.perf_counter()
    nest.Run(duration * 1e3)
    sim_s = time.perf_counter() - t0
    nest.Cleanup()
    times, indices = [], []
    for pop, recorder in zip(pops, recorders, strict=True):
        events = recorder.get("events")
        times.append(np.asarray(events["times"]) * 1e-3)
        indices.append(np.asarray(events["senders"]) - pop[0].global_id)
    stats = _statistics(times, indices, numbers.sizes, *window)
    return {"build_s": build_s, "sim_s": sim_s, "peak_rss": _peak_rss_bytes(), "build_rss": rss_built - rss0,
            "n_synapses": int(nest.num_connections), "n_neurons": numbers.n_neurons, **stats}  # fmt: skip


# ----------------------------------------------------------------------------- Brian2 standalone
def run_brian2(scale: float, duration: float, seed: int, window: tuple[float, float]) -> dict[str, Any]:
    import brian2 as b2

    from neurosim.backends.brian2 import run_brian2 as run_config

    params = MicrocircuitParams(scale=scale)
    numbers = derive(params)
    # measured at scale 0.25: the standalone binary holds 69 B per synapse; this process holds
    # neurosim's arrays of the structure (about 30 B per synapse) while the binary runs
    needed = numbers.n_synapses * (69 + 30)
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    if needed > 0.9 * available:
        raise MemoryError(
            f"not run: Brian2 standalone needs about {needed / 2**30:.0f} GiB at this scale (69 B per synapse "
            f"measured at scale 0.25, plus neurosim's arrays of the structure), {available / 2**30:.0f} GiB are free"
        )
    cfg = microcircuit_config(params, duration=duration, seed=seed, dtype="float64")
    with tempfile.TemporaryDirectory(prefix="microcircuit_b2_") as build_dir:
        rss_file = Path(build_dir) / "maxrss_kb"
        b2.set_device("cpp_standalone", directory=build_dir, build_on_run=True)
        b2.prefs.devices.cpp_standalone.run_cmd_unix = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), "./main"]
        b2.prefs.devices.cpp_standalone.openmp_threads = 0
        t0 = time.perf_counter()
        result = run_config(cfg)
        total_s = time.perf_counter() - t0
        sim_s = float(b2.device._last_run_time)
        peak = int(rss_file.read_text().split()[-1]) * 1024
    trains = [result.spikes[name] for name in POPULATIONS]
    stats = _statistics([tr.times for tr in trains], [tr.indices for tr in trains], numbers.sizes, *window)
    return {"build_s": total_s - sim_s, "sim_s": sim_s, "peak_rss": peak, "build_rss": None,
            "n_synapses": numbers.n_synapses, "n_neurons": numbers.n_neurons, **stats}  # fmt: skip


def child(simulator: str, scale: float, duration: float, seed: int, window: tuple[float, float]) -> dict[str, Any]:
    """One run in this process (the parent starts one process per run)."""
    if simulator == "neurosim":
        return run_neurosim(scale, duration, seed, window)
    if simulator in ("nest1", "nest2"):
        return run_nest(scale, duration, seed, int(simulator[-1]), window)
    if simulator == "brian2":
        return run_brian2(scale, duration, seed, window)
    raise ValueError(f"unknown simulator {simulator!r}; known: {', '.join(SIMULATORS)}")


# ----------------------------------------------------------------------------- parent
def _key(run: dict[str, Any]) -> tuple[str, str, float, float, int]:
    return run["study"], run["simulator"], run["scale"], run["duration"], run["seed"]


def _load_runs() -> list[dict[str, Any]]:
    if not RUNS.exists():
        return []
    return [json.loads(line) for line in RUNS.read_text().splitlines() if line.strip()]


def _run(study: str, simulator: str, scale: float, duration: float, seed: int, window: tuple[float, float],
         done: set[tuple[str, str, float, float, int]], timeout: float) -> None:  # fmt: skip
    key = (study, simulator, scale, duration, seed)
    if key in done:
        return
    print(f"{study}: {simulator} at scale {scale}, {duration} s, seed {seed} ...", flush=True)
    command = [sys.executable, __file__, "--child", simulator, str(scale), str(duration), str(seed),
               str(window[0]), str(window[1])]  # fmt: skip
    try:
        out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout)
        result = json.loads(out.stdout.strip().splitlines()[-1])
    except subprocess.CalledProcessError as error:
        reason = (error.stderr or "").strip().splitlines()[-1:] or [f"exit status {error.returncode}"]
        result = {"error": reason[0]}
    except subprocess.TimeoutExpired:
        result = {"error": f"took longer than {timeout:.0f} s"}
    run = {"study": study, "simulator": simulator, "scale": scale, "duration": duration, "seed": seed, **result}
    with RUNS.open("a") as f:
        f.write(json.dumps(run) + "\n")
    done.add(key)
    print("   ", {k: v for k, v in run.items() if k in ("build_s", "sim_s", "peak_rss", "error")}, flush=True)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "# Cortical microcircuit (Potjans & Diesmann 2014): neurosim, NEST and Brian2",
        "",
        f"Machine: {machine_description()}. neurosim: compiled CPU path, one thread; NEST 3.10 with 1 and 2",
        "threads; Brian2 2.9 C++ standalone without OpenMP. One process per run; times in seconds of wall",
        f"clock for {args.duration:g} s of biological time (dt 0.1 ms); memory is the process's peak resident",
        "set (Brian2: the standalone binary's) and its growth while building, per recurrent synapse.",
        "The model: `neurosim.microcircuit` (scale on neurons and in-degrees, DC compensation, Poisson",
        "background); the same numbers drive the NEST script and, through neurosim's synapse arrays, Brian2.",
        f"Command: `python benchmarks/bench_microcircuit.py --scales {' '.join(map(str, args.scales))}`.",
        "",
        "## Build, simulation and memory",
        "",
        table_header("scale", "neurons", "synapses", "simulator", "build (s)", "simulation (s)", "peak memory (GiB)",
                     "bytes / synapse", "neurosim sim / this"),
    ]
    timing = [r for r in runs if r["study"] == "timing" and r["duration"] == args.duration]
    for scale in sorted({r["scale"] for r in timing}):
        at = {r["simulator"]: r for r in timing if r["scale"] == scale}
        ours = at.get("neurosim", {}).get("sim_s")
        for sim in SIMULATORS:
            r = at.get(sim)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {scale:g} | | | {sim} | failed: {r['error']} | | | | |")
                continue
            per_syn = None if r.get("build_rss") is None else r["build_rss"] / r["n_synapses"]
            ratio = None if ours is None else ours / r["sim_s"]
            lines.append(
                f"| {scale:g} | {r['n_neurons']:,} | {r['n_synapses']:,} | {sim} | {r['build_s']:.1f} | "
                f"{r['sim_s']:.2f} | {r['peak_rss'] / 2**30:.2f} | {_fmt(per_syn, 1)} | {_fmt(ratio)} |"
            )
    lines += ["", "## Rates per population (Hz) at the timing runs' scales", "",
              table_header("scale", "simulator", *POPULATIONS)]  # fmt: skip
    for scale in sorted({r["scale"] for r in timing}):
        for r in (x for x in timing if x["scale"] == scale and "error" not in x):
            lines.append(f"| {scale:g} | {r['simulator']} | " + " | ".join(f"{v:.2f}" for v in r["rates"]) + " |")
    rate_runs = [r for r in runs if r["study"] == "rates" and "error" not in r]
    if rate_runs:
        lines += _rate_table(rate_runs)
    return "\n".join(lines) + "\n"


def _rate_table(rate_runs: list[dict[str, Any]]) -> list[str]:
    by_sim: dict[str, np.ndarray] = {}
    cv_by_sim: dict[str, np.ndarray] = {}
    for sim in ("neurosim", "nest2"):
        rows = [r for r in rate_runs if r["simulator"] == sim]
        if rows:
            by_sim[sim] = np.array([r["rates"] for r in rows])
            cv_by_sim[sim] = np.array([r["cv"] for r in rows])
    if len(by_sim) < 2:
        return []
    ours, nest = by_sim["neurosim"], by_sim["nest2"]
    scale, duration = rate_runs[0]["scale"], rate_runs[0]["duration"]
    lines = ["", f"## Rates over seeds: scale {scale:g}, {duration:g} s (first 0.5 s left out)", "",
             f"neurosim {ours.shape[0]} seeds, NEST (2 threads) {nest.shape[0]} seeds; mean +- std over seeds.",
             "Within target: |neurosim - NEST| <= max(10 % of NEST, NEST's std over seeds).", "",
             table_header("population", "neurosim (Hz)", "NEST (Hz)", "difference", "allowed", "within",
                          "CV ISI neurosim", "CV ISI NEST")]  # fmt: skip
    for p, name in enumerate(POPULATIONS):
        m_ours, m_nest = ours[:, p].mean(), nest[:, p].mean()
        allowed = max(0.1 * m_nest, nest[:, p].std(ddof=1) if nest.shape[0] > 1 else 0.0)
        diff = m_ours - m_nest
        lines.append(
            f"| {name} | {m_ours:.3f} +- {ours[:, p].std(ddof=1):.3f} | {m_nest:.3f} +- {nest[:, p].std(ddof=1):.3f} "
            f"| {diff:+.3f} | {allowed:.3f} | {'yes' if abs(diff) <= allowed else 'no'} | "
            f"{np.nanmean(cv_by_sim['neurosim'][:, p]):.2f} | {np.nanmean(cv_by_sim['nest2'][:, p]):.2f} |"
        )
    return lines


def plot_rates(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate_runs = [r for r in runs if r["study"] == "rates" and "error" not in r]
    sims = [s for s in ("neurosim", "nest2") if any(r["simulator"] == s for r in rate_runs)]
    if not sims:
        return
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(sims)
    x = np.arange(len(POPULATIONS))
    for k, sim in enumerate(sims):
        rates = np.array([r["rates"] for r in rate_runs if r["simulator"] == sim])
        ax.bar(x + k * width, rates.mean(axis=0), width, yerr=rates.std(axis=0), capsize=2,
               label={"neurosim": "neurosim", "nest2": "NEST"}[sim])  # fmt: skip
    ax.set_xticks(x + width * (len(sims) - 1) / 2, POPULATIONS)
    ax.set_ylabel("rate (Hz)")
    ax.set_title(f"Microcircuit at scale {rate_runs[0]['scale']:g}: mean +- std over seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=6, metavar=("SIM", "SCALE", "DURATION", "SEED", "START", "STOP"))
    parser.add_argument("--scales", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--simulators", nargs="+", default=list(SIMULATORS), choices=SIMULATORS)
    parser.add_argument("--rate-seeds", type=int, default=3)
    parser.add_argument("--rate-scale", type=float, default=0.1)
    parser.add_argument("--rate-duration", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    parser.add_argument("--report-only", action="store_true", help="rewrite the tables from the runs file")
    args = parser.parse_args()
    if args.child:
        sim, scale, duration, seed, start, stop = args.child
        result = child(sim, float(scale), float(duration), int(seed), (float(start), float(stop)))
        print(json.dumps(result))
        return
    RESULTS.mkdir(exist_ok=True)
    if not args.report_only:
        done = {_key(r) for r in _load_runs()}
        rate_window = (0.5, args.rate_duration)
        for seed in range(args.rate_seeds):
            for sim in ("neurosim", "nest2"):
                _run("rates", sim, args.rate_scale, args.rate_duration, 100 + seed, rate_window, done, args.timeout)
        window = (0.1, args.duration)
        for scale in args.scales:
            for sim in args.simulators:
                _run("timing", sim, scale, args.duration, SEED, window, done, args.timeout)
            (RESULTS / "microcircuit.md").write_text(report(_load_runs(), args))  # a table after every scale
    runs = _load_runs()
    (RESULTS / "microcircuit.md").write_text(report(runs, args))
    plot_rates(runs, RESULTS / "microcircuit_rates.png")
    print((RESULTS / "microcircuit.md").read_text())


if __name__ == "__main__":
    main()
