"""Physical units at the edges: Brian2 and pint quantities and unit strings in, SI floats inside."""

from __future__ import annotations

import warnings

import numpy as np
import pint
import pytest
from conftest import EXAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st

from neurosim.build import build_simulation
from neurosim.config import ConfigError, load_config, parse_config
from neurosim.learning.stdp import PairSTDP
from neurosim.sim import (
    ConductanceLIF,
    CurrentInput,
    CurrentLIF,
    Network,
    PoissonInput,
    Population,
    Simulation,
    SpikeArrayInput,
    SpikeMonitor,
    StateMonitor,
)
from neurosim.units import TIME, ImplausibleQuantityWarning, UnitError, to_si

brian2 = pytest.importorskip("brian2")
ms, mV, Hz, nA, Mohm = brian2.ms, brian2.mV, brian2.Hz, brian2.nA, brian2.Mohm


def test_brian2_quantities_give_the_same_parameters_as_si_numbers() -> None:
    with_units = CurrentLIF(tau_m=20 * ms, v_rest=-49 * mV, v_threshold=-50 * mV, v_reset=-60 * mV,
                            t_ref=5 * ms, tau_exc=5 * ms, tau_inh=10 * ms, r_m=100 * Mohm)  # fmt: skip
    assert with_units == CurrentLIF()
    assert PairSTDP(tau_pre=20 * ms, tau_post=20 * ms) == PairSTDP()


def test_pint_quantities_and_unit_strings_are_accepted() -> None:
    u = pint.UnitRegistry()
    lif = ConductanceLIF(tau_m=u.Quantity(10, "ms"), v_rest="-74 mV", e_inh="-80 millivolt")
    assert lif == ConductanceLIF()


@pytest.mark.parametrize(
    ("value", "given"), [(20 * mV, "a voltage"), ("20 mV", "a voltage"), (3 * nA, "a current"), ("5 Hz", "a frequency")]
)
def test_a_wrong_dimension_is_an_error_naming_the_parameter_and_both_units(value: object, given: str) -> None:
    with pytest.raises(UnitError) as error:
        CurrentLIF(tau_m=value)
    message = str(error.value)
    assert message.startswith("CurrentLIF.tau_m:")
    assert given in message and "expected a membrane time constant: a time in s" in message


def test_unreadable_or_unitless_text_is_refused() -> None:
    with pytest.raises(UnitError, match="cannot read '20 blah'"):
        CurrentLIF(tau_m="20 blah")
    with pytest.raises(UnitError, match="has no unit"):
        CurrentLIF(tau_m="20")
    with pytest.raises(UnitError, match="not a boolean"):
        CurrentLIF(tau_m=True)


def test_implausible_plain_numbers_warn_with_what_was_meant() -> None:
    with pytest.warns(ImplausibleQuantityWarning, match=r"CurrentLIF.tau_m = 20 s .*did you mean 20 ms \(0.02\)"):
        lif = CurrentLIF(tau_m=20)
    assert lif.tau_m == 20.0  # a plain number keeps meaning SI
    with pytest.warns(ImplausibleQuantityWarning) as caught:
        CurrentLIF(v_threshold=-50, v_reset=-60, v_rest=-49)
    assert sorted(str(w.message).split(" = ")[0] for w in caught) == [
        "CurrentLIF.v_reset",
        "CurrentLIF.v_rest",
        "CurrentLIF.v_threshold",
    ]
    assert "did you mean -50 mV (-0.05)?" in " ".join(str(w.message) for w in caught)
    with pytest.warns(ImplausibleQuantityWarning, match=r"Simulation.dt = 0.1 s .*did you mean 0.1 ms \(0.0001\)"):
        Simulation(Network(), dt=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CurrentLIF(tau_m="20 s")  # a unit given explicitly is what the user meant: no warning
        CurrentLIF(t_ref=0.0)  # zero is always plausible


def test_simulation_runs_with_quantities_as_with_seconds() -> None:
    def spikes(dt: object, duration: object, rate: object) -> np.ndarray:
        net = Network()
        net.add_input(PoissonInput("in", 20, rate))
        net.add_population(Population("n", 5, CurrentLIF(tau_m=20 * ms)))
        sim = Simulation(net, dt=dt, seed=3)
        monitor = sim.add_monitor(SpikeMonitor("in", start=10 * ms))
        sim.run(duration)
        return np.stack([monitor.steps, monitor.indices])

    assert np.array_equal(spikes(0.1 * ms, 50 * ms, 200 * Hz), spikes(1e-4, 0.05, 200.0))
    assert spikes(1e-4, 0.05, 200.0).shape[1] > 0


def test_array_inputs_take_array_quantities() -> None:
    assert np.allclose(PoissonInput("p", 3, np.array([1.0, 2.0, 3.0]) * Hz).rates, [1.0, 2.0, 3.0])
    spikes = SpikeArrayInput("s", 2, [1, 2] * ms, [0, 1])
    assert np.allclose(spikes.times, [1e-3, 2e-3])
    current = CurrentInput("c", "n", [0.5, 1.0] * nA, sample_dt=1 * ms)
    assert np.allclose(current.samples[:, 0], [0.5e-9, 1e-9]) and current.sample_dt == pytest.approx(1e-3)
    assert StateMonitor("n", every=1 * ms).every == pytest.approx(1e-3)
    with pytest.raises(UnitError, match=r"rates: got .* \(a time\), expected a firing rate"):
        PoissonInput("p", 3, np.ones(3) * ms)


def test_configs_take_unit_strings_and_refuse_wrong_dimensions_by_field() -> None:
    data = load_config(EXAMPLES / "cuba.toml").model_dump(mode="json")
    data["run"].update(dt="0.1 ms", duration="50 ms")
    data["network"]["populations"][0]["model"]["tau_m"] = "20 ms"
    cfg = parse_config(data)
    assert cfg.run.dt == pytest.approx(1e-4) and cfg.run.duration == pytest.approx(0.05)
    assert cfg.network.populations[0].model.tau_m == pytest.approx(0.02)
    assert build_simulation(cfg).dt == pytest.approx(1e-4)
    data["network"]["populations"][0]["model"]["tau_m"] = "20 mV"
    with pytest.raises(ConfigError, match=r"network.populations\[0\].model: tau_m: got 20 millivolt \(a voltage\)"):
        parse_config(data)
    data["network"]["populations"][0]["model"]["tau_m"] = "20 ms"
    data["run"].update(dt=0.1, duration=10.0)
    data["record"]["state"] = []
    with pytest.warns(ImplausibleQuantityWarning, match="dt = 0.1 s"):
        parse_config(data)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=8), st.from_regex(r"[-+0-9.eE ]{0,4}[a-zA-Z/*()^ ]{0,6}", fullmatch=True)))
def test_any_text_is_a_time_or_a_unit_error(text: str) -> None:
    try:
        value = to_si(text, TIME, "t")
    except UnitError as error:
        assert str(error).startswith("t: ")
    else:
        assert isinstance(value, float)
