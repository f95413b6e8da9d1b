"""The Potjans & Diesmann (2014) microcircuit: its published numbers, its scaling, a run, and
the shipped TOML (the comparison with NEST is benchmarks/bench_microcircuit.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES

from neurosim.build import build_simulation
from neurosim.config import load_config
from neurosim.microcircuit import (
    FULL_SIZES,
    POPULATIONS,
    MicrocircuitParams,
    derive,
    microcircuit_config,
    psp_peak_per_weight,
)
from neurosim.sim import SpikeMonitor


def test_full_scale_numbers_are_the_papers() -> None:
    full = derive(MicrocircuitParams(scale=1.0))
    assert full.n_neurons == 77_169 and np.array_equal(full.sizes, FULL_SIZES)
    assert 0.29e9 < full.n_synapses < 0.31e9  # "about 0.3 billion synapses"
    # a 0.15 mV PSP with tau_m 10 ms, tau_syn 0.5 ms, C_m 250 pF is an 87.8 pA current jump
    assert math.isclose(full.weight_mean[1, 0] / 40e6, 87.81e-12, rel_tol=1e-3)
    assert math.isclose(full.weight_mean[0, 2], 2 * full.weight_mean[1, 0])  # L4E -> L2/3E doubled
    assert math.isclose(full.weight_mean[0, 1], -4 * full.weight_mean[1, 0])  # g = -4
    assert not full.dc_current.any()  # full in-degrees: nothing to compensate
    assert full.external_indegree.tolist() == [1600, 1500, 2100, 1900, 2000, 1900, 2900, 2100]
    assert full.delay_mean.tolist() == [1.5e-3, 0.75e-3] * 4


def test_scaled_in_degrees_get_larger_weights_and_a_compensating_current() -> None:
    full, tenth = derive(MicrocircuitParams(scale=1.0)), derive(MicrocircuitParams(scale=0.1))
    assert np.allclose(tenth.weight_mean, full.weight_mean / math.sqrt(0.1))
    assert np.allclose(tenth.synapses, np.round(full.synapses * 0.01), atol=1)  # neurons x in-degrees
    assert (tenth.dc_current > 0).all()
    # neurons only: full in-degrees, the same weights, no compensation
    neurons_only = derive(MicrocircuitParams(scale=0.1, k_scale=1.0))
    assert np.allclose(neurons_only.weight_mean, full.weight_mean) and not neurons_only.dc_current.any()
    dc_background = derive(MicrocircuitParams(scale=1.0, background="dc"))
    w_ext = full.external_weight  # V; the mean of the Poisson background as a current
    assert np.allclose(dc_background.dc_current * 40e6, 0.5e-3 * 8.0 * w_ext * full.external_indegree)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="scale must be in"):
            MicrocircuitParams(scale=bad)
    assert math.isclose(psp_peak_per_weight(10e-3, 0.5e-3), 0.04271, rel_tol=1e-3)


def test_a_small_circuit_fires_irregularly_at_layer_specific_rates() -> None:
    params = MicrocircuitParams(scale=0.05)
    cfg = microcircuit_config(params, duration=0.6)
    sim = build_simulation(cfg)
    projection = sim.network.projections["L23E_to_L4E"]
    assert projection.synapse_delays is not None and projection.delays_per_synapse().min() >= 1
    monitors = {name: sim.add_monitor(SpikeMonitor(name)) for name in POPULATIONS}
    sim.run(0.6)
    sizes = dict(zip(POPULATIONS, derive(params).sizes, strict=True))
    rates = {name: float((m.trains().times >= 0.1).sum() / (sizes[name] * 0.5)) for name, m in monitors.items()}
    # the paper's pattern: L2/3E and L6E fire least, L5 and inhibitory populations most
    assert all(0.1 < r < 20 for r in rates.values()), rates
    assert rates["L23E"] < rates["L4E"] < rates["L5E"] and rates["L6E"] < rates["L6I"], rates
    assert rates["L23E"] < rates["L23I"] and rates["L4E"] < rates["L4I"], rates


def test_the_shipped_toml_is_what_the_example_writes(tmp_path: Path) -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import microcircuit as example
    finally:
        sys.path.remove(str(EXAMPLES))
    written = tmp_path / "microcircuit.toml"
    cfg = microcircuit_config(MicrocircuitParams(scale=0.1))
    example.write_config(cfg, written, 0.1)
    shipped = load_config(EXAMPLES / "microcircuit.toml")
    assert load_config(written) == cfg
    # the DC compensation sums rates with numpy, whose vectorised reductions round the last bit
    # differently on different CPUs: the shipped file matches to rounding, not bit for bit
    shipped_fields, generated = _flat(shipped.model_dump()), _flat(cfg.model_dump())
    assert shipped_fields.keys() == generated.keys()
    for key, value in generated.items():
        if isinstance(value, float):
            assert shipped_fields[key] == pytest.approx(value, rel=1e-12), key
        else:
            assert shipped_fields[key] == value, key


def _flat(tree: object, path: str = "") -> dict[str, object]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flat(value, f"{path}.{key}").items()}
    if isinstance(tree, list | tuple):
        return {k: v for i, value in enumerate(tree) for k, v in _flat(value, f"{path}[{i}]").items()}
    return {path: tree}
