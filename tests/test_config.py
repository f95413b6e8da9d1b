"""Bad configs are refused before anything runs, naming the field and the reason."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import EXAMPLES, cuba_config

from neurosim.config import ConfigError, load_any_config, load_config, parse_config


def _cuba() -> dict[str, Any]:
    return cuba_config().model_dump(mode="json")


def _refused(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


def test_shipped_examples_are_valid() -> None:
    paths = sorted(EXAMPLES.glob("*.toml"))
    assert len(paths) >= 3
    for path in paths:
        load_any_config(path)


def test_unknown_field_is_named() -> None:
    data = _cuba()
    data["network"]["populations"][0]["model"]["tau_mem"] = 0.02
    msg = _refused(data)
    assert "network.populations[0].model.tau_mem" in msg and "Extra inputs are not permitted" in msg


def test_negative_time_constant_is_named() -> None:
    data = _cuba()
    data["network"]["populations"][1]["model"]["tau_m"] = -0.02
    msg = _refused(data)
    assert "network.populations[1].model.tau_m" in msg and "greater than 0" in msg and "-0.02" in msg


def test_connection_probability_outside_unit_interval_is_named() -> None:
    data = _cuba()
    data["network"]["projections"][2]["connectivity"]["p"] = 1.5
    msg = _refused(data)
    assert "network.projections[2].connectivity.p" in msg and "less than or equal to 1" in msg


def test_unknown_population_in_a_projection_is_named() -> None:
    data = _cuba()
    data["network"]["projections"][0]["target"] = "exc2"
    data["network"]["projections"][3]["source"] = "nowhere"
    msg = _refused(data)
    assert "projections[0].target: unknown population 'exc2'" in msg
    assert "projections[3].source: unknown population or input 'nowhere'" in msg


def test_physically_inconsistent_model_is_refused() -> None:
    data = _cuba()
    data["network"]["populations"][0]["model"]["v_reset"] = -40e-3
    assert "must be below v_threshold" in _refused(data)


def test_duplicate_names_and_bad_run_settings_are_all_reported() -> None:
    data = _cuba()
    data["network"]["populations"][1]["name"] = "exc"
    data["run"]["dt"] = 0
    data["run"]["device"] = "tpu"
    msg = _refused(data)
    assert "'exc' is already used" in msg
    assert "run.dt" in msg and "run.device" in msg


def test_invalid_toml_and_missing_files_give_clear_errors(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nduration = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")


def test_delay_distributions_are_drawn_per_synapse_and_checked() -> None:
    from neurosim.build import build_network

    data = _cuba()
    projections = data["network"]["projections"]
    projections[0]["delay"] = {"kind": "normal", "mean": "1.5 ms", "std": "0.75 ms"}
    projections[1]["delay"] = {"kind": "uniform", "low": 0.0, "high": 2e-3}
    projections[2]["delay"] = {"kind": "constant", "value": "0.8 ms"}
    projections[3]["connectivity"] = {"kind": "fixed_total", "n": 5000, "autapses": False}
    net = build_network(parse_config(data))
    normal = net.projections["exc_exc"].delays_per_synapse().numpy()
    assert normal.min() >= 1  # redrawn below one step (dt = 0.1 ms)
    assert abs(normal.mean() - 15.54) < 0.1  # N(15, 7.5**2) steps truncated at 1 step: mean 15 + 7.5 phi/(1-Phi)
    uniform = net.projections["exc_inh"].delays_per_synapse().numpy()
    assert uniform.min() == 0 and uniform.max() == 20
    assert net.projections["inh_exc"].synapse_delays is None and net.projections["inh_exc"].delay_steps == 8
    inh_inh = net.projections["inh_inh"]
    assert inh_inh.n_synapses == 5000 and not (inh_inh.pre_index == inh_inh.post_index).any()

    projections[1]["format"] = "dense"
    projections[0]["delay"] = {"kind": "uniform", "low": 2e-3, "high": 1e-3}
    msg = _refused(data)
    assert "projections[1]" in msg and "per-synapse delays need format = 'sparse'" in msg
    assert "projections[0].delay: high (0.001 s) must be >= low (0.002 s)" in msg
    data = _cuba()
    data["network"]["projections"][2]["connectivity"] = {"kind": "one_to_one"}
    assert "projections[2].connectivity: one_to_one needs groups of one size" in _refused(data)


def test_stdp_on_a_projection_with_per_synapse_delays_is_refused() -> None:
    data = load_config(EXAMPLES / "song2000_stdp.toml").model_dump(mode="json")
    data["network"]["projections"][0]["delay"] = {"kind": "uniform", "low": 0.0, "high": 2e-3}
    msg = _refused(data)
    assert "plasticity[0].projection" in msg and "per-synapse delays" in msg
