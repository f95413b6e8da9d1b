"""The consolidation benchmark's bookkeeping: which settings a test run uses, and that the main
job ships what was chosen on validation seeds (benchmarks/bench_consolidation.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench_consolidation as bench
from neurosim.config import ContinualConfig, load_any_config

ROOT = Path(__file__).resolve().parents[1]


def test_the_main_job_ships_the_recruited_layers_validation_choice() -> None:
    cfg = load_any_config(ROOT / "examples" / "continual_digits.toml")
    assert isinstance(cfg, ContinualConfig)
    chosen = json.loads((bench.choice_file("digits", "recruited")).read_text())["chosen"]
    assert cfg.network.theta_plus == pytest.approx(chosen["network"]["theta_plus"])
    for key, value in chosen["sleep"].items():
        assert getattr(cfg.sleep, key) == value, key
    assert cfg.sleep.enabled and not cfg.ewc.enabled


def _probe_row(theta: float, inc: float, duration: float, mean: float) -> dict[str, Any]:
    overrides = {"network.theta_plus": theta, "sleep.inc": inc, "sleep.dec": inc / 10, "sleep.duration": duration}
    name = "_".join(f"{k}={v}" for k, v in overrides.items())
    return {"setting": name, "overrides": overrides, "completed": 3, "headline": {"average_accuracy": {"mean": mean}}}


def test_the_recruited_choice_is_the_best_validation_point_and_reaches_every_method_but_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "probe").mkdir()
    rows = [_probe_row(1e-4, 0.01, 30.0, 0.70), _probe_row(2e-4, 0.03, 10.0, 0.75), _probe_row(3e-4, 0.1, 10.0, 0.60)]
    probe = {"seeds": list(bench.VALIDATION_SEEDS), "rows": rows}
    (tmp_path / "probe" / "digits_joint.json").write_text(json.dumps(probe))
    (tmp_path / "ewc.json").write_text(json.dumps({"chosen": {"ewc": {"lambda": 3.0}}}))
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    monkeypatch.setattr(bench, "PROBE", tmp_path / "probe")
    monkeypatch.setattr(bench, "EWC_CHOICE_FOR_RECRUITED", {"digits": tmp_path / "ewc.json"})

    bench.choose_recruited("digits")
    chosen = json.loads(bench.choice_file("digits", "recruited").read_text())["chosen"]
    assert chosen["network"] == {"theta_plus": 2e-4}
    assert (chosen["sleep"]["inc"], chosen["sleep"]["dec"], chosen["sleep"]["duration"]) == (0.03, 0.003, 10.0)
    assert chosen["ewc"] == {"lambda": 3.0}

    def layer(method: str) -> float:
        overrides = bench.method_overrides(method, chosen["sleep"], chosen["ewc"], chosen["network"])
        return float(bench.sweep_setting("digits", method, overrides).overrides["network.theta_plus"])

    assert {layer(m) for m in bench.METHODS} == {2e-4}  # none and joint included
    assert layer(bench.SHIPPED_LAYER_NONE) == bench.SHIPPED_LAYER["theta_plus"]
    # the reported settings stay on the shipped layer whatever the base config says
    assert bench.sweep_setting("mnist", "none", bench.method_overrides("none", {}, {})).overrides == {
        "data.dataset": "mnist-subset",
        "network.theta_plus": 0.05e-3,
        "network.n_hidden": 400,
        "ewc.enabled": False,
        "sleep.enabled": False,
        "control": False,
        "schedule": "auto",
    }

    probe["seeds"] = [0, 1, 2]  # a search on test seeds is refused
    (tmp_path / "probe" / "digits_joint.json").write_text(json.dumps(probe))
    with pytest.raises(ValueError, match="not the validation seeds"):
        bench.choose_recruited("digits")


def test_test_runs_of_each_choice_are_logged_apart() -> None:
    assert bench.logged_label("sleep", "digits", "digits") == "sleep"
    assert bench.logged_label("sleep", "mnist", "per-setting") == "sleep (mnist choice)"
    assert bench.logged_label("none", "mnist", "per-setting") == "none"
    assert bench.logged_label("none", "digits", "recruited") == "none (recruited layer)"
    assert bench.logged_label(bench.SHIPPED_LAYER_NONE, "digits", "recruited") == bench.SHIPPED_LAYER_NONE


def test_the_recruited_test_runs_on_its_own_fresh_seeds_with_the_shipped_layer_beside_it() -> None:
    assert set(bench.TEST_SEEDS["recruited"]).isdisjoint(bench.TEST_SEEDS["digits"])
    assert set(bench.TEST_SEEDS["recruited"]).isdisjoint(bench.VALIDATION_SEEDS)
    assert bench.methods_of("recruited") == (*bench.METHODS, bench.SHIPPED_LAYER_NONE)
    assert bench.SHIPPED_LAYER_NONE not in bench.methods_of("digits")
