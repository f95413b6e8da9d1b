"""The same continual-learning protocols on a spiking network trained with surrogate gradients.

The network: Poisson-encoded pixels (``neurosim.datasets.poisson_rates``: up to 500 Hz) for
``STEPS`` steps of 1 ms -> a hidden layer of neurosim ``CurrentLIF`` neurons, advanced by
``neurosim.sim.neurons.step`` (exact integration of ``tau_m dv/dt = -(v - v_rest) + R I``,
Lapicque/Stein; here in normalised units: v_rest = v_reset = 0, v_threshold = 1, R = 1,
tau_m = 10 ms) with a ``Surrogate`` (fast sigmoid, SuperSpike; Zenke & Ganguli 2018), so that
backpropagation through time reaches the input weights -> a linear readout of the hidden
spike rates. Training, contexts, heads, Adam and batch 128 are those of ``protocol.py``.

Methods: ``none``; ``ewc`` (full-batch true Fisher after each context, through the spiking
forward pass); ``online_fisher_ewc`` (the ``FisherAccumulator`` EMA of the training
gradients); ``sleep``: after each context, sleep replay consolidation in the spirit of
Tadros et al. (2022): the hidden layer runs on Poisson noise with the mean rates of the
contexts seen so far, thresholds raised, and ``neurosim.learning.sleep.sleep_update``
potentiates input synapses whose pre neuron fired just before a hidden spike and depresses
the others (``strength`` = potentiation per pairing; depression = strength / 10).

    .venv/bin/python -m benchmarks.continual.spiking [--quick] [--out DIR] [--protocols ...]
        [--methods ...] [--iterations N] [--extend]

Writes ``continual_spiking_<protocol>.json`` per protocol (runs add to them, as in
``python -m benchmarks.continual``), and ``continual_spiking.md`` and ``.json`` from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from benchmarks.continual.protocol import (
    MNIST_MISSING_HINT,
    AfterContext,
    Context,
    DatasetName,
    Method,
    Protocol,
    ProtocolName,
    Settings,
    load_dataset,
    protocol,
)
from benchmarks.continual.report import (
    IncompatibleRecord,
    ProtocolRecord,
    evaluate_protocol,
    load_records,
    online_fisher_verdict,
    planned_iterations,
    results_without_curves,
    table,
)
from neurosim.datasets import poisson_rates
from neurosim.datasets.mnist import MNISTUnavailable
from neurosim.learning.sleep import SleepConfig, sleep_dense_layer
from neurosim.learning.surrogate import Surrogate
from neurosim.sim.neurons import CurrentLIF, initial_state, step

RESULTS = Path(__file__).resolve().parents[1] / "results"
STEPS = 10  # 1 ms steps per presentation
DT = 1e-3
MAX_RATE = 500.0  # Hz for a white pixel
HIDDEN_LIF = CurrentLIF(tau_m=10e-3, v_rest=0.0, v_threshold=1.0, v_reset=0.0, t_ref=0.0, r_m=1.0)
SPIKING_METHODS = (Method.NONE, Method.EWC, Method.ONLINE_FISHER_EWC, Method.SLEEP)


class SpikingNetwork(nn.Module):
    """Poisson input -> CurrentLIF hidden layer (surrogate spikes) -> linear readout of rates."""

    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.inputs = nn.Linear(n_in, hidden)
        self.readout = nn.Linear(hidden, n_out)
        with torch.no_grad():  # start where the neurons fire: input currents of order the threshold
            self.inputs.weight.mul_(6.0)
        self.surrogate = Surrogate(width=0.5)

    def rates(self, x: torch.Tensor) -> torch.Tensor:
        """Mean hidden spike count per step, ``(batch, hidden)``."""
        spikes_in = (torch.rand((STEPS, *x.shape)) < x * (MAX_RATE * DT)).to(x.dtype)
        currents = self.inputs(spikes_in)  # every step's input current in one matrix product
        state = initial_state(HIDDEN_LIF, x.shape[0], self.inputs.out_features, dtype=x.dtype, device=x.device)
        total = torch.zeros_like(currents[0])
        for t in range(STEPS):
            z, state = step(state, currents[t], HIDDEN_LIF, DT, surrogate=self.surrogate)
            total = total + z
        return total / STEPS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.readout(self.rates(x))
        return logits


def sleep_replay(config: SleepConfig) -> AfterContext:
    """Sleep after each context: ``sleep_dense_layer`` on the input synapses, driven by noise at the
    mean image of the contexts seen (the original threshold was 1 above a rest of 0: the
    library's relative threshold scale is the same number)."""

    def after(model: nn.Module, seen: list[Context]) -> None:
        if not isinstance(model, SpikingNetwork):
            raise TypeError(f"sleep replay acts on a SpikingNetwork's input synapses, not a {type(model).__name__}")
        mean_image = torch.cat([c.train_x for c in seen]).mean(0).numpy()
        rates = torch.from_numpy(poisson_rates(mean_image, MAX_RATE * config.rate_scale)).float()
        sleep_dense_layer(model.inputs.weight.data, model.inputs.bias.data, HIDDEN_LIF, rates, config, DT)

    return after


def hooks(method: Method, strength: float) -> AfterContext | None:
    if method is not Method.SLEEP:
        return None
    return sleep_replay(SleepConfig(duration=0.5, inc=strength, dec=strength / 10, threshold_scale=1.5))


GRIDS = {
    Method.EWC: [0.1, 1.0, 10.0, 1e2, 1e3, 1e4],
    Method.ONLINE_FISHER_EWC: [0.1, 1.0, 10.0, 1e2, 1e3, 1e4],
    Method.SLEEP: [1e-6, 1e-5, 1e-4, 1e-3, 1e-2],
}
ITERATIONS = {ProtocolName.SPLIT_TASK_IL: 200, ProtocolName.PERMUTED_DOMAIN_IL: 200}
HIDDEN = 200
PREFIX = "continual_spiking"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=DatasetName, choices=list(DatasetName), default=DatasetName.MNIST_SUBSET)
    parser.add_argument("--protocols", type=ProtocolName, nargs="+", choices=list(ITERATIONS),
                        default=list(ITERATIONS))  # fmt: skip
    parser.add_argument("--methods", type=Method, nargs="+", choices=list(SPIKING_METHODS),
                        default=list(SPIKING_METHODS),
                        help="run only these (the saved results of the others are kept)")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=None,
                        help="per context (default: 200)")  # fmt: skip
    parser.add_argument("--extend", action="store_true",
                        help="add to the saved results in --out: strengths already searched and test runs "
                             "at the chosen strength are not repeated")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smoke run: digits, 50 hidden, 10 iterations, 2 seeds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.seeds < 1 or (args.iterations is not None and args.iterations < 1):
        parser.error("--seeds and --iterations must be >= 1")
    dataset = DatasetName.DIGITS if args.quick else args.dataset
    seeds = min(args.seeds, 2) if args.quick else args.seeds
    grids = {m: v[:2] for m, v in GRIDS.items()} if args.quick else GRIDS
    methods = tuple(m for m in SPIKING_METHODS if m in args.methods)
    protos: dict[ProtocolName, Protocol] = {}
    for name in args.protocols:
        iterations, hidden = (10, 50) if args.quick else (ITERATIONS[name], HIDDEN)
        iterations = args.iterations or iterations
        # Adam at 1e-3 for both protocols: the spiking network does not learn at the MLP's 1e-4
        # in a few hundred iterations per context
        protos[name] = dataclasses.replace(protocol(name, iterations=iterations, hidden=hidden), fisher_samples=200,
                                           lr=1e-3)  # fmt: skip
    try:  # the data first: a missing data set is a one-line error, not a traceback mid-run
        load_dataset(dataset)
    except MNISTUnavailable as error:
        parser.error(f"{error}\n{MNIST_MISSING_HINT}")
    try:
        records = {n: ProtocolRecord.open(args.out, PREFIX, n, dataset, Settings.of(p)) for n, p in protos.items()}
    except IncompatibleRecord as error:
        parser.error(str(error))
    total = sum(planned_iterations(p, seeds, grids, methods, 1) for p in protos.values())
    command = "python -m benchmarks.continual.spiking " + " ".join(sys.argv[1:])
    with tqdm(total=total, unit="it", desc="spiking continual benchmark") as bar:
        for name, proto in protos.items():
            t0 = time.perf_counter()
            previous = records[name].previous() if args.extend else {}
            summaries = evaluate_protocol(proto, dataset, seeds, grids, bar, methods=methods, previous=previous,
                                          model_factory=SpikingNetwork, after_context=hooks)  # fmt: skip
            records[name].save(name, dataset, Settings.of(proto), command, time.perf_counter() - t0, summaries,
                               SPIKING_METHODS, extended=args.extend)  # fmt: skip
    write_report(args.out)


def write_report(out: Path) -> None:
    """``continual_spiking.md`` and ``.json`` from the per-protocol records in ``out``."""
    records = load_records(out, PREFIX)
    first = next(iter(records.values()))
    payload: dict[str, Any] = results_without_curves(records)
    payload.update({
        "dataset": ", ".join(sorted({r["dataset"] for r in records.values()})),
        "machine": first["machine"],
        "network": {"steps": STEPS, "dt": DT, "max_rate_hz": MAX_RATE},
        "protocols": {n.value: {**r["settings"], "wall_s": r["wall_s"], "command": r["command"]}
                      for n, r in records.items()},
    })  # fmt: skip
    (out / f"{PREFIX}.json").write_text(json.dumps(payload, indent=2) + "\n")
    sections = []
    for name, rec in records.items():
        st = rec["settings"]
        seeds = next(iter(rec["methods"].values()))["seeds"]
        sections.append(
            f"## {name.value}: {st['hidden']} LIF neurons, {st['iterations_per_context']} iterations per context, "
            f"Adam lr {st['lr']:g}, {seeds} seeds\n\nData set {rec['dataset']}; wall time "
            f"{rec['wall_s'] / 60:.1f} min; command `{rec['command']}`.\n\n"
            + table(name, rec["methods"], cost="Fisher / sleep cost per run (s)")
            + online_fisher_verdict(rec["methods"])
        )
    text = f"""# Continual learning on a spiking network (surrogate gradients through neurosim's LIF step)

The protocols of [continual.md](continual.md) on the spiking network of
`benchmarks/continual/spiking.py`: Poisson-encoded pixels (up to {MAX_RATE:.0f} Hz, {STEPS} steps
of {DT * 1e3:.0f} ms) -> CurrentLIF neurons advanced by `neurosim.sim.neurons.step` with a
fast-sigmoid surrogate -> a linear readout of their rates. Mean +- std over seeds;
strengths (EWC lambda, sleep potentiation) chosen on the validation split. The "published"
column holds the MLP numbers of the reference table, for scale. Machine: {first["machine"]};
torch {first["torch"]}, Python {first["python"]}.

{(chr(10) + chr(10)).join(sections)}
"""
    (out / f"{PREFIX}.md").write_text(text)
    print(f"wrote {out / (PREFIX + '.md')} and {PREFIX}.json")


if __name__ == "__main__":
    main()
