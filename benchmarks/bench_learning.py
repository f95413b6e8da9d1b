"""The full learning step at compiled speed: neurosim against Brian2.

The main job's network (``examples/continual_digits.toml``, ``neurosim.phases.schedule.
build_layer``): Poisson inputs -> N adaptive-threshold excitatory neurons (Diehl & Cook
2015) with one-to-one excitation of N inhibitory neurons and all-to-all inhibition back,
dt = 0.5 ms, 1 s of biological time, pair STDP on input -> excitatory. Per simulation step:

- neurosim compiled pair STDP: the learner alone (``backend="auto"``);
- neurosim full learning step, compiled: pair STDP + the online eligibility gradient with
  the readout's learning signal + the FisherAccumulator EMA (snapshots every 2000 steps to
  an in-memory store) + the EWC pull of an earlier task, all in the compiled loop;
- the same full step on the PyTorch path (the reference, and what ran before);
- Brian2 2.9, Cython runtime and C++ standalone, the same network with pair STDP plus, per
  synapse every step, an eligibility ``e = psi(v_post) * x_pre`` (fast-sigmoid surrogate,
  ``x_pre`` a clock-driven pre trace), the gradient ``g = L_post * e`` with a per-neuron
  learning signal, the EMA ``F = (1 - alpha) F + alpha g^2`` and the pull
  ``w -= c (w - w*)`` (``run_regularly`` every step), written as Brian2 equations: a timing
  peer (its learning signal is a fixed random value per neuron, not a readout's); that
  neurosim's full step equals the same equations with the readout's signal in Brian2, spike
  for spike and weight for weight, is tested in ``tests/test_brian2.py``.

Compile and build excluded (warm-up runs first; standalone reports its own run time).
Writes ``benchmarks/results/learning.md``.

    .venv/bin/python benchmarks/bench_learning.py [--duration 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import EXAMPLES, best_of, machine_description, run_brian2_standalone, table_header
from neurosim.config import ContinualConfig, load_any_config
from neurosim.learning import LinearReadout, STDPOnlineLearner, Surrogate
from neurosim.learning.ewc import EWCConfig, EWCRegulariser
from neurosim.learning.fisher import InMemoryFisherStore
from neurosim.learning.fisher_online import FisherAccumulator, FisherAccumulatorConfig
from neurosim.phases.schedule import build_layer
from neurosim.sim import Backend, Network, PoissonInput, Simulation

RESULTS = Path(__file__).resolve().parent / "results"
DT = 5e-4
MAX_RATE = 120.0  # Hz: the main job's brightest pixel; every input draws a rate up to it


def build_network(cfg: ContinualConfig, n_in: int) -> Network:
    """The main job's Diehl & Cook layer for ``n_in`` inputs (its simulation is not used)."""
    sim, _ = build_layer(cfg, n_in, Backend.AUTO, torch.float32)
    return sim.network


def _initial_weights(cfg: ContinualConfig, n_in: int) -> torch.Tensor:
    """The main job's start: uniform weights, normalised to its per-neuron weight sum."""
    net = build_network(cfg, n_in)
    proj = net.projections["input_exc"]
    w = proj.synapse_weights()
    target = cfg.network.weight_sum or 78.0 * (n_in / 784) ** 0.5
    sums = torch.zeros(proj.n_post, dtype=w.dtype).index_add_(0, proj.post_index, w)
    return w * (target / sums.clamp_min(1e-12))[proj.post_index]


def _config(n_hidden: int) -> ContinualConfig:
    cfg = load_any_config(EXAMPLES / "continual_digits.toml")
    assert isinstance(cfg, ContinualConfig)
    return cfg.model_copy(update={"network": cfg.network.model_copy(update={"n_hidden": n_hidden})})


def _rates(n_in: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0.0, MAX_RATE, n_in)


def _neurosim_sim(n_in: int, n_hidden: int, mode: str) -> tuple[Simulation, FisherAccumulator | None]:
    """The network with its learner attached and warmed up (numba's cached kernels loaded).
    ``mode``: ``pair`` (compiled STDP alone), ``full`` (compiled full learning step) or
    ``torch`` (full, PyTorch path)."""
    cfg = _config(n_hidden)
    net = build_network(cfg, n_in)
    inp = net.inputs["input"]
    assert isinstance(inp, PoissonInput)
    inp.set_rates(_rates(n_in))
    backend = Backend.TORCH if mode == "torch" else Backend.AUTO
    sim = Simulation(net, dt=DT, seed=0, backend=backend, chunk_steps=4000)
    proj = net.projections["input_exc"]
    proj.set_synapse_weights(_initial_weights(cfg, n_in))
    readout = LinearReadout(n_hidden, 10)
    readout.weight = torch.randn((10, n_hidden), generator=torch.Generator().manual_seed(0)) * 0.05
    learner = STDPOnlineLearner(proj, cfg.stdp.to_rule(), dt=DT, surrogate=Surrogate(width=2e-3), readout=readout)
    acc = None
    if mode != "pair":
        ewc = EWCRegulariser(EWCConfig(lambda_=1.0, pull_rate=1e-3))
        fisher = torch.rand(proj.n_synapses, generator=torch.Generator().manual_seed(1))
        ewc.consolidate("earlier", {learner.parameter_name: proj.synapse_weights()}, {learner.parameter_name: fisher})
        learner.regulariser = ewc
        acc = FisherAccumulator(
            FisherAccumulatorConfig(alpha=0.01, snapshot_every=2000, max_staleness_steps=4000),
            InMemoryFisherStore(),
            "task",
        )
    learner.attach(sim, accumulator=acc)
    learner.begin_sample(torch.tensor([3]))
    sim.run(0.02)
    return sim, acc


def _window(sim: Simulation, duration: float, mode: str) -> tuple[float, int]:
    """Seconds per step of one run of ``duration`` and its excitatory spikes."""
    t0 = time.perf_counter()
    stats = sim.run(duration)
    wall = time.perf_counter() - t0
    expected = {Backend.TORCH} if mode == "torch" else {Backend.COMPILED}
    if stats.backends != expected:
        raise RuntimeError(f"{mode}: ran on {stats.backends}, expected {expected}")
    return wall / stats.steps, stats.spikes["exc"]


def _close(acc: FisherAccumulator | None) -> None:
    if acc is not None:
        asyncio.run(acc.flush())
        acc.close()


@dataclass(frozen=True)
class Paired:
    """Pair STDP and the full step timed in alternating windows: per-step seconds (median
    window), the full / pair ratio of each window pair, and excitatory rates (Hz)."""

    pair: float
    full: float
    ratios: list[float]
    pair_rate: float
    full_rate: float


def neurosim_paired(n_in: int, n_hidden: int, duration: float, windows: int) -> Paired:
    """Both compiled networks side by side, run in ``windows`` alternating windows of
    ``duration / windows`` each: a slow spell of a shared machine hits both sides of a
    window pair alike, so the ratio of each pair is steadier than the ratio of two runs made
    minutes apart."""
    (pair_sim, _), (full_sim, acc) = _neurosim_sim(n_in, n_hidden, "pair"), _neurosim_sim(n_in, n_hidden, "full")
    pair, full, pair_spikes, full_spikes = [], [], 0, 0
    for _ in range(windows):
        seconds, spikes = _window(pair_sim, duration / windows, "pair")
        pair.append(seconds)
        pair_spikes += spikes
        seconds, spikes = _window(full_sim, duration / windows, "full")
        full.append(seconds)
        full_spikes += spikes
    _close(acc)
    return Paired(
        pair=statistics.median(pair),
        full=statistics.median(full),
        ratios=sorted(f / p for f, p in zip(full, pair, strict=True)),
        pair_rate=pair_spikes / (n_hidden * duration),
        full_rate=full_spikes / (n_hidden * duration),
    )


def neurosim_torch_step(n_in: int, n_hidden: int, duration: float) -> tuple[float, float]:
    """Seconds per step and excitatory rate of the full step on the PyTorch path."""
    sim, acc = _neurosim_sim(n_in, n_hidden, "torch")
    seconds, spikes = _window(sim, duration, "torch")
    _close(acc)
    return seconds, spikes / (n_hidden * duration)


def brian2_step(n_in: int, n_hidden: int, duration: float, standalone: bool) -> tuple[float, float]:
    """Seconds per step and excitatory rate of the same network with STDP + eligibility +
    Fisher EMA + pull in Brian2."""
    import brian2 as b2

    b2.start_scope()
    b2.prefs.codegen.target = "cython"
    b2.set_device("cpp_standalone", build_on_run=False) if standalone else b2.set_device("runtime")
    cfg = _config(n_hidden)
    nc, st = cfg.network, cfg.stdp
    ms, mV, hz = b2.ms, b2.mV, b2.Hz
    b2.defaultclock.dt = DT * b2.second
    ns = {
        "tau_e": 100 * ms, "v_rest_e": -65 * mV, "v_reset_e": -65 * mV, "v_thr_e": -72 * mV, "tref_e": 5 * ms,
        "tau_i": 10 * ms, "v_rest_i": -60 * mV, "v_reset_i": -45 * mV, "v_thr_i": -40 * mV, "tref_i": 2 * ms,
        "tau_ge": 1 * ms, "tau_gi": 2 * ms, "e_exc": 0 * mV, "e_inh_e": -100 * mV, "e_inh_i": -85 * mV,
        "tau_theta": 1e4 * b2.second, "theta_plus": nc.theta_plus * b2.volt,
        "taupre": st.tau_pre * b2.second, "taupost": st.tau_post * b2.second, "a_plus": st.a_plus,
        "a_minus": st.a_minus, "wmax": st.w_max, "alpha": 0.01, "width": 2 * mV, "c_pull": 1e-3,
    }  # fmt: skip
    inp = b2.PoissonGroup(n_in, rates=_rates(n_in) * hz)
    exc = b2.NeuronGroup(
        n_hidden,
        """dv/dt = (v_rest_e - v + ge * (e_exc - v) + gi * (e_inh_e - v)) / tau_e : volt (unless refractory)
        dge/dt = -ge / tau_ge : 1
        dgi/dt = -gi / tau_gi : 1
        dtheta/dt = -theta / tau_theta : volt
        L : 1  # the learning signal of the neuron (constant over a sample)
        psi = 0.5 / (width * (1 + abs(v - v_thr_e - theta) / width)**2) : 1/volt  # fast-sigmoid surrogate""",
        threshold="v > v_thr_e + theta", reset="v = v_reset_e; theta += theta_plus", refractory="tref_e",
        method="exponential_euler", namespace=ns,
    )  # fmt: skip
    exc.v = -65 * mV
    exc.theta = nc.theta_init * b2.volt
    exc.L = "0.05 * randn()"
    inh = b2.NeuronGroup(
        n_hidden,
        """dv/dt = (v_rest_i - v + ge * (e_exc - v) + gi * (e_inh_i - v)) / tau_i : volt (unless refractory)
        dge/dt = -ge / tau_ge : 1
        dgi/dt = -gi / tau_gi : 1""",
        threshold="v > v_thr_i", reset="v = v_reset_i", refractory="tref_i", method="exponential_euler", namespace=ns,
    )  # fmt: skip
    inh.v = -60 * mV
    syn = b2.Synapses(
        inp, exc,
        """w : 1
        w_anchor : 1
        F : 1
        dxpre/dt = -xpre / taupre : 1 (clock-driven)
        dApost/dt = -Apost / taupost : 1 (event-driven)""",
        on_pre="ge_post += w\nxpre += 1\nw = clip(w - a_minus * Apost, 0, wmax)",
        on_post="Apost += 1\nw = clip(w + a_plus * xpre, 0, wmax)",
        namespace=ns, method="exact",
    )  # fmt: skip
    syn.connect()
    syn.w = _initial_weights(cfg, n_in).numpy()  # Brian2 connects all-to-all in the same (pre-major) order
    syn.w_anchor = "w"
    syn.run_regularly(
        """w = clip(w - c_pull * (w - w_anchor), 0, wmax)
        F = (1 - alpha) * F + alpha * (L_post * psi_post * xpre * volt)**2""",
        dt=DT * b2.second,
    )  # fmt: skip
    e2i = b2.Synapses(exc, inh, on_pre=f"ge_post += {nc.exc_to_inh}")
    e2i.connect(j="i")
    i2e = b2.Synapses(inh, exc, on_pre=f"gi_post += {nc.inh_to_exc}")
    i2e.connect(condition="i != j")
    mon = b2.SpikeMonitor(exc)
    net = b2.Network(inp, exc, inh, syn, e2i, i2e, mon)
    steps = round(duration / DT)
    if standalone:
        net.run(duration * b2.second)
        return run_brian2_standalone(
            "brian2_learning_", lambda wall: (wall / steps, mon.num_spikes / (n_hidden * duration))
        )
    net.run(20 * ms)
    before = mon.num_spikes
    t0 = time.perf_counter()
    net.run(duration * b2.second)
    wall = time.perf_counter() - t0
    return wall / steps, (mon.num_spikes - before) / (n_hidden * duration)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3, help="Brian2 runs per network (fastest kept)")
    parser.add_argument("--windows", type=int, default=10, help="alternating windows of neurosim's two steps")
    parser.add_argument("--out", type=Path, default=RESULTS / "learning.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    us = 1e6
    for n_in in (64, 784):
        for n_hidden in (100, 400):
            paired = neurosim_paired(n_in, n_hidden, args.duration, args.windows)
            ref = neurosim_torch_step(n_in, n_hidden, min(args.duration, 0.1))
            cy = best_of(args.repeats, brian2_step, n_in, n_hidden, args.duration, False)
            sa = best_of(args.repeats, brian2_step, n_in, n_hidden, args.duration, True)
            ratio, lo, hi = statistics.median(paired.ratios), paired.ratios[0], paired.ratios[-1]
            rows.append(
                f"| {n_in} -> {n_hidden} | {paired.pair * us:.1f} | {paired.full * us:.1f} | "
                f"**{ratio:.2f}** ({lo:.2f}-{hi:.2f}) | {ref[0] * us:.0f} ({ref[0] / paired.full:.0f}x) | "
                f"{cy[0] * us:.1f} | {sa[0] * us:.1f} | {paired.full / sa[0]:.2f} | "
                f"{paired.pair_rate:.1f} / {paired.full_rate:.1f} / {cy[1]:.1f} / {sa[1]:.1f} |"
            )
            print(rows[-1], flush=True)
    header = table_header(
        "inputs -> excitatory",
        "neurosim compiled pair STDP (us/step)",
        "neurosim full learning step, compiled (us/step)",
        "full / pair, median window pair (range)",
        "full step, PyTorch path (us/step; x compiled)",
        "Brian2 Cython, STDP + trace + F + pull (us/step)",
        "Brian2 standalone, same (us/step)",
        "neurosim full / standalone",
        "exc rate Hz (pair / full / Cython / standalone)",
    )
    text = f"""# Learning-step benchmark: STDP + eligibility gradient + Fisher EMA + EWC pull

Machine: {machine_description()}; one thread. Brian2 {__import__("brian2").__version__} (Cython runtime;
C++ standalone without OpenMP), torch {torch.__version__}, numpy {np.__version__}, Python {platform.python_version()}.
neurosim: the pair-STDP and the full network run side by side, {args.duration:g} s of biological time
each (dt 0.5 ms) in {args.windows} alternating windows; per-step times are the median window, the
ratio is the median of the {args.windows} window pairs' ratios (range in brackets). The PyTorch path
once, for {min(args.duration, 0.1):g} s. Brian2: best of {args.repeats} runs of {args.duration:g} s. Compile and
build excluded.
Command: `python benchmarks/bench_learning.py {" ".join(sys.argv[1:])}`.

The main job's network (Diehl & Cook layer with inhibition), inputs at up to {MAX_RATE} Hz; see the
module docstring for what each column runs. Targets: the full step at most 3x the compiled pair-STDP
step, and at most Brian2 C++ standalone's time for its STDP + trace network.

{header}
{chr(10).join(rows)}
"""
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
