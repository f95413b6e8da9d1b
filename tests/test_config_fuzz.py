"""Property tests: no config, however malformed, gets past `validate` with a traceback or
with a value that cannot run (non-finite numbers, booleans as numbers, absurd sizes)."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import EXAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurosim.cli import main
from neurosim.config import (
    ConfigError,
    ContinualConfig,
    SimulationConfig,
    load_any_config,
    parse_config,
    parse_continual,
)

BASES = {
    "cuba": load_any_config(EXAMPLES / "cuba.toml").model_dump(mode="json"),
    "song": load_any_config(EXAMPLES / "song2000_stdp.toml").model_dump(mode="json"),
    "continual": load_any_config(EXAMPLES / "continual_digits.toml").model_dump(mode="json", by_alias=True),
}


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(node, list) and node:
        return [p for i, v in enumerate(node) for p in _leaves(v, (*path, i))]
    return [path]


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


BAD_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 10**10, 2 * 10**8, 10**12, 1e-300, 1e300, True, False, "", "x", None]),
    st.integers(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _refused_or_sound(parse: Any, data: dict[str, Any]) -> None:
    try:
        cfg = parse(data)
    except ConfigError as err:
        assert str(err).strip()  # names the field and the reason
        return
    # accepted: then it is a config that can run
    numbers: list[float] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, float):
            numbers.append(node)

    walk(cfg.model_dump(mode="python"))
    assert all(math.isfinite(x) for x in numbers)
    if isinstance(cfg, SimulationConfig):
        assert cfg.run.dt <= cfg.run.duration and cfg.run.duration / cfg.run.dt <= 1e9
        assert all(s.every >= cfg.run.dt for s in cfg.record.state)
    if isinstance(cfg, ContinualConfig):
        assert cfg.data.classes_per_task * cfg.data.n_tasks <= 10


@pytest.mark.parametrize("base", list(BASES))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_one_bad_value_is_refused_with_a_config_error_or_is_sound(base: str, data: st.DataObject) -> None:
    config = copy.deepcopy(BASES[base])
    path = data.draw(st.sampled_from(_leaves(config)))
    _set(config, path, data.draw(BAD_VALUES))
    _refused_or_sound(parse_continual if base == "continual" else parse_config, config)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda t: t.encode("utf-16"))))
def test_validate_reads_any_bytes_without_a_traceback(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "config.toml"
    path.write_bytes(raw)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


def test_the_reported_bad_configs_are_refused_by_validate(tmp_path: Path) -> None:
    cuba = (EXAMPLES / "cuba.toml").read_text()
    cases = {
        "n = 3200": ["n = 1e10", "n = 2e8", "n = true", "n = 10000000000"],
        "duration = 1.0": ["duration = inf", "duration = nan"],
        "dt = 1e-4": ["dt = 1e-300", "dt = 2.0"],
        'value = 1.62e-3 }': ['value = nan }', 'value = inf }'],
    }
    for original, replacements in cases.items():
        assert original in cuba, original
        for bad in replacements:
            path = tmp_path / "bad.toml"
            path.write_text(cuba.replace(original, bad, 1))
            result = CliRunner().invoke(main, ["validate", str(path)])
            assert result.exit_code == 1 and "Traceback" not in result.output, (bad, result.output)
    continual = (EXAMPLES / "continual_digits.toml").read_text()
    for original, bad in [("n_tasks = 5", "n_tasks = 6"), ("present = 0.06", "present = inf"),
                          ("max_rate = 120.0", "max_rate = nan"), ('name = "split', 'nam = "split'),
                          ("n_hidden = 100", "n_hidden = 10000000")]:  # fmt: skip
        assert original in continual, original
        path = tmp_path / "bad.toml"
        path.write_text(continual.replace(original, bad, 1))
        result = CliRunner().invoke(main, ["validate", str(path)])
        assert result.exit_code == 1 and "Traceback" not in result.output, (bad, result.output)
