"""Parameter sweeps on Dask: a grid of config overrides times seeds, each an ordinary run.

A sweep takes a config (a plain simulation or a continual-learning experiment), a list of
*settings* (each a set of overrides by dotted config path, such as ``ewc.lambda`` or
``network.populations.exc.n``) and a list of seeds. Every (setting, seed) pair is one run,
written to ``DIR/<setting>/<seed>/`` exactly as ``neurosim run`` would write it, plus
``sweep_run.json`` (status, headline numbers, timings).

Runs are Dask tasks: on a ``LocalCluster`` of worker processes (one thread each, and one
BLAS / PyTorch thread per run) by default, or on any scheduler (a cluster started with
``dask-jobqueue`` on SLURM or PBS, ``dask scheduler`` on a lab server). Nothing is lost:

- a run writes into a hidden ``DIR/<setting>/.<seed>.partial-*`` directory that is renamed
  to ``DIR/<setting>/<seed>/`` only when every file is written, so a directory under its
  final name is complete; a rename onto a finished run fails, so a run that Dask
  re-executes after losing its worker is never counted twice;
- a failing run is recorded (``sweep_run.json`` with ``"status": "failed"`` and the error)
  and the sweep goes on;
- ``resume=True`` (``--resume``) skips completed runs and redoes failed and unfinished ones.

Aggregation (``write_report``): ``DIR/sweep.json`` and ``DIR/sweep.md``, one row per setting
with mean +- std over seeds of the headline numbers (rates for simulations; average accuracy
and BWT for experiments), and ``DIR/sweep.png``, the first headline number against each
swept parameter. ``docs/sweeps.md`` is the user's guide.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import threading
import time
import tomllib
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from neurosim.outputs import strict_json, write_json

if TYPE_CHECKING:
    from distributed import Client

    from neurosim.config import ContinualConfig, SimulationConfig
    from neurosim.events.mqtt import BrokerSettings

__all__ = [
    "RUN_FILE",
    "RUN_MODULES",
    "SWEEP_FILE",
    "Axis",
    "ClusterStart",
    "RunPoint",
    "Setting",
    "SweepError",
    "SweepResult",
    "SweepSpec",
    "apply_overrides",
    "grid_settings",
    "load_sweep_file",
    "local_cluster",
    "make_function_spec",
    "make_spec",
    "parse_axis",
    "parse_seeds",
    "run_sweep",
    "warm_fork_server",
    "write_report",
]

RUN_FILE = "sweep_run.json"  # written last into each run's directory: the run is complete
SWEEP_FILE = "sweep_spec.json"
FUNCTION_RESULT = (
    "result.json"  # a function run's headline numbers  # the sweep's definition, for --resume and --report
)
# what a sweep runs: a simulation config, an experiment config, or a Python function
# ``f(params, seed, out_dir) -> headline numbers`` named "package.module:function"
ConfigKind = Literal["simulation", "experiment", "function"]
RunStatus = Literal["completed", "failed"]
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._=,-]+")
EXPERIMENT_HEADLINE = ("average_accuracy", "bwt", "average_accuracy_task_incremental", "bwt_task_incremental",
                       "neurons_assigned")  # fmt: skip
GAIN = "gain_over_control"  # average accuracy minus its no-consolidation control's, run by run


class SweepError(ValueError):
    """A sweep that cannot run as given: a bad path or value, seeds, or output directory."""


# --------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class Axis:
    """One dimension of the grid. A plain axis has one path; a zipped (paired) axis has
    several paths whose values advance together: ``values[k]`` holds one value per path."""

    paths: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]

    def __post_init__(self) -> None:
        if not self.paths:
            raise SweepError("an axis needs at least one config path")
        if not self.values:
            raise SweepError(f"axis {', '.join(self.paths)}: no values")
        for row in self.values:
            if len(row) != len(self.paths):
                raise SweepError(f"zipped axis {', '.join(self.paths)}: every point needs one value per path")

    @classmethod
    def of(cls, path: str, values: Sequence[Any]) -> Axis:
        return cls((path,), tuple((v,) for v in values))

    @classmethod
    def zipped(cls, columns: Mapping[str, Sequence[Any]]) -> Axis:
        """Paired values: ``{"a": [1, 2], "b": [10, 20]}`` gives (a=1, b=10) and (a=2, b=20)."""
        lengths = {path: len(v) for path, v in columns.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{p} has {n}" for p, n in lengths.items())
            raise SweepError(f"zipped paths need as many values each: {shown}")
        return cls(tuple(columns), tuple(zip(*columns.values(), strict=True)))


@dataclass(frozen=True)
class Setting:
    """One point of the grid: config overrides by dotted path, and the directory name."""

    name: str
    overrides: Mapping[str, Any]


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def setting_name(overrides: Mapping[str, Any]) -> str:
    """``ewc.lambda=10_sleep.enabled=false``: a file name and MQTT topic level (no ``/+#``)."""
    if not overrides:
        return "base"
    text = "_".join(f"{path}={_format_value(value)}" for path, value in overrides.items())
    return _NAME_UNSAFE.sub("-", text).strip("-.") or "setting"


def grid_settings(axes: Sequence[Axis]) -> list[Setting]:
    """Every combination of the axes (the first axis varies slowest); names made unique."""
    seen_paths: set[str] = set()
    for axis in axes:
        for path in axis.paths:
            if path in seen_paths:
                raise SweepError(f"config path {path!r} is swept twice")
            seen_paths.add(path)
    settings: list[Setting] = []
    names: set[str] = set()
    for combo in itertools.product(*(axis.values for axis in axes)):
        overrides = {
            path: value
            for axis, row in zip(axes, combo, strict=True)
            for path, value in zip(axis.paths, row, strict=True)
        }
        name = setting_name(overrides)
        unique, k = name, 2
        while unique in names:
            unique, k = f"{name}-{k}", k + 1
        names.add(unique)
        settings.append(Setting(unique, overrides))
    return settings


def _split_top_level(text: str) -> list[str]:
    """Split at commas that are not inside brackets or quotes (``[1, 2],3`` is two items)."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items]


def parse_value(text: str) -> Any:
    """A TOML value (``10``, ``1e-3``, ``true``, ``"a b"``, ``[1, 2]``), or the bare word as a
    string (``class-means``), so that ``--grid sleep.drive=class-means,uniform`` works."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if not text or any(ch in text for ch in "[]{}\"'="):
            raise SweepError(f"cannot read {text!r} as a value (TOML syntax, or a bare word)") from None
        return text


def parse_axis(option: str) -> Axis:
    """``PATH=V1,V2,...`` (the ``--grid`` option) as an axis."""
    path, sep, values = option.partition("=")
    path = path.strip()
    if not sep or not path or not values.strip():
        raise SweepError(f"--grid {option!r}: expected PATH=V1,V2,... (for example ewc.lambda=1,10)")
    return Axis.of(path, [parse_value(item) for item in _split_top_level(values)])


def parse_seeds(text: str | Sequence[int]) -> list[int]:
    """``0-4``, ``0,2,7``, ``0-2,10`` (or a list of ints): distinct non-negative seeds, in order."""
    if not isinstance(text, str):
        seeds = [int(s) for s in text]
    else:
        seeds = []
        for part in _split_top_level(text):
            lo, dash, hi = part.partition("-")
            try:
                seeds += list(range(int(lo), int(hi) + 1)) if dash else [int(part)]
            except ValueError:
                raise SweepError(f"seeds {text!r}: expected a list like 0-4 or 0,2,7") from None
    if not seeds:
        raise SweepError("no seeds: give at least one (for example --seeds 0-4)")
    bad = [s for s in seeds if isinstance(s, bool) or s < 0]
    if bad:
        raise SweepError(f"seeds must be non-negative integers, got {bad}")
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"seeds repeat: {seeds}")
    return seeds


# --------------------------------------------------------------------------- overrides
def _step_into(node: Any, key: str, where: str) -> tuple[Any, str | int]:
    """The child of ``node`` named by one path level: a mapping key, a list index, or the
    ``name`` of a list element (``network.populations.exc.n``)."""
    if isinstance(node, dict):
        if key not in node:
            known = ", ".join(sorted(node)) or "none"
            raise SweepError(f"{where}: no field {key!r} here (fields: {known})")
        return node, key
    if isinstance(node, list):
        if key.isdigit():
            if int(key) >= len(node):
                raise SweepError(f"{where}: index {key} out of range (the list has {len(node)} items)")
            return node, int(key)
        named = [i for i, item in enumerate(node) if isinstance(item, dict) and item.get("name") == key]
        if len(named) == 1:
            return node, named[0]
        names = [item.get("name") for item in node if isinstance(item, dict) and "name" in item]
        raise SweepError(f"{where}: no list item named {key!r} (names: {', '.join(map(str, names)) or 'none'})")
    raise SweepError(f"{where}: {type(node).__name__} value has no field {key!r}")


def _path_levels(path: str) -> list[str]:
    levels = re.sub(r"\[(\w+)\]", r".\1", path).split(".")
    if not path or any(not level for level in levels):
        raise SweepError(f"config path {path!r}: expected dotted names such as ewc.lambda")
    return levels


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of config ``data`` with each dotted path set to its value. Paths must
    exist in the resolved config (every field has a value there), so a typo is an error."""
    out: dict[str, Any] = json.loads(json.dumps(data))
    for path, value in overrides.items():
        levels = _path_levels(path)
        node: Any = out
        for depth, level in enumerate(levels):
            parent, key = _step_into(node, level, f"config path {path!r}")
            if depth == len(levels) - 1:
                parent[key] = value
            else:
                node = parent[key]
    return out


# --------------------------------------------------------------------------- the sweep's definition
@dataclass(frozen=True)
class RunPoint:
    """One run of the sweep: where it goes and the config it runs (validated)."""

    setting: str
    seed: int
    overrides: Mapping[str, Any]
    config: Mapping[str, Any]  # the resolved config, JSON-ready, seed set

    @property
    def relpath(self) -> str:
        """The run's directory relative to the sweep's: ``<setting>/<seed>``."""
        return f"{self.setting}/{self.seed}"


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: the base config, its settings and seeds."""

    kind: ConfigKind
    base: Mapping[str, Any]
    settings: tuple[Setting, ...]
    seeds: tuple[int, ...]
    source: str = ""  # where the base config came from, for the report

    def points(self) -> list[RunPoint]:
        """Every (setting, seed) run, each config validated; ``SweepError`` names the first
        setting, path and reason that fail (before anything runs)."""
        from neurosim.config import ConfigError

        points = []
        seed_path = {"experiment": "seed", "simulation": "run.seed", "function": None}[self.kind]
        for setting in self.settings:
            if seed_path in setting.overrides:
                raise SweepError(f"setting {setting.name}: sweep seeds with --seeds, not with {seed_path}")
            data = apply_overrides(self.base, setting.overrides)
            for seed in self.seeds:
                if seed_path is None:  # a function gets its seed as an argument
                    points.append(RunPoint(setting.name, seed, dict(setting.overrides), data))
                    continue
                seeded = apply_overrides(data, {seed_path: seed})
                try:
                    cfg = _validate(self.kind, seeded)
                except ConfigError as err:
                    values = ", ".join(f"{p}={_format_value(v)}" for p, v in setting.overrides.items())
                    raise SweepError(f"setting {values or setting.name} is not a valid config:\n{err}") from None
                points.append(RunPoint(setting.name, seed, dict(setting.overrides), _dump(cfg)))
        return points

    def digest(self) -> str:
        """A short fingerprint of the sweep (config, settings, seeds): a directory name for it."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:10]

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON (written to ``sweep.json`` so that ``--resume`` can check it)."""
        return {
            "kind": self.kind,
            "source": self.source,
            "base": dict(self.base),
            "settings": [{"name": s.name, "overrides": dict(s.overrides)} for s in self.settings],
            "seeds": list(self.seeds),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SweepSpec:
        return cls(
            kind=data["kind"],
            base=data["base"],
            settings=tuple(Setting(s["name"], s["overrides"]) for s in data["settings"]),
            seeds=tuple(data["seeds"]),
            source=data.get("source", ""),
        )


def _validate(kind: ConfigKind, data: Mapping[str, Any]) -> SimulationConfig | ContinualConfig:
    from neurosim.config import parse_config, parse_continual

    return parse_continual(dict(data)) if kind == "experiment" else parse_config(dict(data))


def _dump(cfg: SimulationConfig | ContinualConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json", by_alias=True)


def make_spec(
    config: str | Path | SimulationConfig | ContinualConfig,
    *,
    axes: Sequence[Axis] = (),
    settings: Sequence[Setting] | None = None,
    seeds: str | Sequence[int] = (0,),
) -> SweepSpec:
    """A sweep of ``config`` over the grid of ``axes`` (or explicit ``settings``) x ``seeds``,
    checked completely: every run's config is validated here."""
    from neurosim.config import ConfigError, ContinualConfig, load_any_config

    source = ""
    if isinstance(config, str | Path):
        source = str(config)
        try:
            config = load_any_config(config)
        except ConfigError as err:
            raise SweepError(f"invalid config {config}:\n{err}") from None
    kind: ConfigKind = "experiment" if isinstance(config, ContinualConfig) else "simulation"
    chosen = _chosen_settings(axes, settings)
    spec = SweepSpec(kind, _dump(config), tuple(chosen), tuple(parse_seeds(seeds)), source)
    spec.points()  # validate every run before anything starts
    return spec


def _chosen_settings(axes: Sequence[Axis], settings: Sequence[Setting] | None) -> list[Setting]:
    """The grid of ``axes``, or the explicit ``settings``; their names checked."""
    if settings is not None and axes:
        raise SweepError("give a grid or explicit settings, not both")
    chosen = list(settings) if settings is not None else grid_settings(axes)
    names = [s.name for s in chosen]
    if not names:
        raise SweepError("the sweep has no settings")
    for name in names:
        if not name or _NAME_UNSAFE.search(name) or name.startswith("."):
            raise SweepError(f"setting name {name!r}: use letters, digits and . _ = , - only")
    if len(set(names)) != len(names):
        raise SweepError(f"setting names repeat: {names}")
    return chosen


def make_function_spec(
    function: str,
    params: Mapping[str, Any],
    *,
    axes: Sequence[Axis] = (),
    settings: Sequence[Setting] | None = None,
    seeds: str | Sequence[int] = (0,),
) -> SweepSpec:
    """A sweep of a Python function instead of a config: every run calls
    ``function(params, seed, out_dir)`` on a worker, with ``params`` (JSON-ready) overridden by
    the setting, and records the mapping of headline numbers it returns. ``function`` is
    named ``"package.module:name"`` so that workers can import it (and a sweep directory can
    be resumed); overrides must name keys that ``params`` has."""
    _import_function(function)
    chosen = _chosen_settings(axes, settings)
    for setting in chosen:
        apply_overrides(params, setting.overrides)  # every path exists
    return SweepSpec("function", json.loads(json.dumps(params)), tuple(chosen), tuple(parse_seeds(seeds)), function)


def _import_function(name: str) -> Callable[..., Mapping[str, Any]]:
    import importlib

    module, sep, attr = name.partition(":")
    if not sep or not module or not attr:
        raise SweepError(f"function {name!r}: expected 'package.module:function'")
    try:
        target = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise SweepError(f"cannot import {name}: {err}") from None
    if not callable(target):
        raise SweepError(f"{name} is not callable")
    return target  # type: ignore[no-any-return]


def load_sweep_file(path: str | Path) -> tuple[SweepSpec, dict[str, Any]]:
    """A sweep file (TOML)::

        [sweep]
        config = "continual_digits.toml"   # relative to this file
        seeds = "0-4"                       # or [0, 1, 2, 3, 4]
        workers = 2                         # optional: any run_sweep option (workers, scheduler, out)
        baseline = {"sleep.enabled" = false}  # optional: paired differences to this setting

        [sweep.grid]                        # every combination of these
        "ewc.lambda" = [1.0, 10.0]
        "sleep.enabled" = [true, false]

        [[sweep.zip]]                       # paired axes: values advance together
        "sleep.inc" = [0.01, 0.03]
        "sleep.dec" = [0.001, 0.003]

    Returns the spec and the file's other options (``workers``, ``scheduler``, ``out``, ``baseline``).
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise SweepError(f"cannot read sweep file {p}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise SweepError(f"{p}: not valid TOML: {err}") from None
    sweep = data.get("sweep")
    if not isinstance(sweep, dict) or set(data) != {"sweep"}:
        raise SweepError(f"{p}: a sweep file has one [sweep] table (and its grid / zip tables)")
    known = {"config", "seeds", "grid", "zip", "workers", "scheduler", "out", "baseline"}
    unknown = sorted(set(sweep) - known)
    if unknown:
        raise SweepError(f"{p}: unknown [sweep] keys {unknown} (known: {sorted(known)})")
    if not isinstance(sweep.get("config"), str):
        raise SweepError(f'{p}: [sweep] needs config = "path/to/config.toml"')
    axes = [Axis.of(k, v if isinstance(v, list) else [v]) for k, v in sweep.get("grid", {}).items()]
    zips = sweep.get("zip", [])
    if not isinstance(zips, list):
        raise SweepError(f"{p}: zipped axes are [[sweep.zip]] tables")
    for table in zips:
        if not all(isinstance(v, list) for v in table.values()):
            raise SweepError(f"{p}: every path of a [[sweep.zip]] table needs a list of values")
        axes.append(Axis.zipped(table))
    spec = make_spec((p.parent / sweep["config"]).resolve(), axes=axes, seeds=sweep.get("seeds", [0]))
    if not isinstance(sweep.get("baseline", {}), dict):
        raise SweepError(
            f'{p}: baseline is a table of the setting\'s values, e.g. baseline = {{"sleep.enabled" = false}}'
        )
    return spec, {k: sweep[k] for k in ("workers", "scheduler", "out", "baseline") if k in sweep}


# --------------------------------------------------------------------------- one run (on a worker)
@dataclass(frozen=True)
class RunOutcome:
    """What one run left in ``sweep_run.json``."""

    setting: str
    seed: int
    status: RunStatus
    headline: Mapping[str, float | None]
    wall_s: float
    started: float  # Unix time
    finished: float
    worker: str
    error: str | None = None
    reused: bool = False  # the run was already complete (a re-executed task); nothing ran

    def to_json(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The run's entry in ``sweep.json``: its setting's ``overrides``, seed, status, headline
        numbers, wall time and error."""
        return {
            "setting": self.setting,
            "seed": self.seed,
            "overrides": dict(overrides),
            "status": self.status,
            "headline": dict(self.headline),
            "wall_s": self.wall_s,
            "started": self.started,
            "finished": self.finished,
            "worker": self.worker,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, reused: bool = False) -> RunOutcome:
        return cls(
            setting=data["setting"],
            seed=data["seed"],
            status=data["status"],
            headline=data.get("headline", {}),
            wall_s=data.get("wall_s", 0.0),
            started=data.get("started", 0.0),
            finished=data.get("finished", 0.0),
            worker=data.get("worker", ""),
            error=data.get("error"),
            reused=reused,
        )


def read_run(run_dir: Path) -> RunOutcome | None:
    """The outcome recorded in a run directory; None if it is not a finished run."""
    try:
        return RunOutcome.from_json(json.loads((run_dir / RUN_FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def headline_of(kind: ConfigKind, run_dir: Path) -> dict[str, float | None]:
    """The numbers a sweep table shows: average accuracy and BWT of an experiment (both
    scenarios), or each population's rate of a simulation (``rate_hz.<population>``)."""
    if kind == "function":
        return dict(json.loads((run_dir / FUNCTION_RESULT).read_text()))
    if kind == "experiment":
        results = json.loads((run_dir / "results.json").read_text())
        numbers = {key: results.get(key) for key in EXPERIMENT_HEADLINE if key in results}
        if "control" in results:  # the same seed without consolidation: a paired difference per seed
            numbers[GAIN] = results["average_accuracy"] - results["control"]["average_accuracy"]
        return numbers
    summary = json.loads((run_dir / "summary.json").read_text())
    return {f"rate_hz.{name}": pop["rate_hz"] for name, pop in summary["populations"].items()}


def _pin_threads(threads: int) -> None:
    import threadpoolctl  # type: ignore[import-untyped]
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(ImportError, ValueError):
        import numba

        if not _numba_threads_launched():
            # a worker forked from a fork server holds the server's numba configuration, read from
            # the server's environment: read it again from this worker's before the threads launch
            # (a later compile re-reads it and refuses a thread count that changed after launch)
            numba.config.reload_config()  # type: ignore[no-untyped-call]
        numba.set_num_threads(min(threads, int(getattr(numba.config, "NUMBA_NUM_THREADS", 1))))
    # then every BLAS and OpenMP pool loaded by now (numba's threading layer loads one above): a
    # worker forked from a fork server that imported numpy before the worker's environment
    # applied keeps the pool sizes of then
    threadpoolctl.threadpool_limits(limits=threads)


def _numba_threads_launched() -> bool:
    from numba.np.ufunc import parallel

    return bool(parallel._is_initialized)


def _execute(kind: ConfigKind, config: Mapping[str, Any], out_dir: Path, mqtt: BrokerSettings | None,
             run_id: str, *, function: str = "", seed: int = 0) -> None:  # fmt: skip
    """One ordinary run, exactly as ``neurosim run`` does it, into ``out_dir`` (or a call of
    the sweep's function)."""
    if kind == "function":
        headline = _import_function(function)(dict(config), seed, out_dir)
        write_json(out_dir / FUNCTION_RESULT, {str(k): v for k, v in dict(headline).items()})
    elif kind == "experiment":
        from neurosim.config import ContinualConfig
        from neurosim.phases.schedule import run_experiment

        cfg = ContinualConfig.model_validate(config)
        write_json(out_dir / "config.json", dict(config))
        run_experiment(cfg, out_dir, progress=False, run_id=run_id, mqtt=mqtt)
    else:
        from neurosim.config import SimulationConfig
        from neurosim.runner import LiveOptions, run_simulation

        live = LiveOptions(mqtt=mqtt, run_id=run_id) if mqtt is not None else LiveOptions()
        run_simulation(SimulationConfig.model_validate(config), out_dir, overwrite=True, progress=False, live=live)


def run_point(point: RunPoint, kind: ConfigKind, root: str, *, mqtt: BrokerSettings | None = None,
              sweep_id: str = "sweep", threads: int = 1, function: str = "") -> RunOutcome:  # fmt: skip
    """Run one point of a sweep (this is the Dask task). The run writes into a hidden
    partial directory renamed into place once complete; a failure is recorded, not raised."""
    final = Path(root) / point.setting / str(point.seed)
    previous = read_run(final)
    if previous is not None and previous.status == "completed":
        return dataclasses.replace(previous, reused=True)
    _pin_threads(threads)
    partial = final.parent / f".{point.seed}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir(parents=True)
    started, t0 = time.time(), time.perf_counter()
    error: str | None = None
    headline: dict[str, float | None] = {}
    try:
        run_id = f"{sweep_id}/{point.setting}/{point.seed}"
        _execute(kind, point.config, partial, mqtt, run_id, function=function, seed=point.seed)
        headline = headline_of(kind, partial)
    except Exception as err:  # a failing run is recorded in its directory; the sweep goes on
        error = f"{type(err).__name__}: {err}"
        (partial / "error.txt").write_text(traceback.format_exc())
    outcome = RunOutcome(
        setting=point.setting,
        seed=point.seed,
        status="completed" if error is None else "failed",
        headline=headline,
        wall_s=time.perf_counter() - t0,
        started=started,
        finished=time.time(),
        worker=f"{os.uname().nodename}:{os.getpid()}",
        error=error,
    )
    write_json(partial / RUN_FILE, outcome.to_json(point.overrides))
    _fsync_tree(partial)
    if final.exists():  # a failed or unfinished earlier attempt (a complete one returned above)
        done = read_run(final)
        if done is not None and done.status == "completed":  # finished meanwhile by a twin attempt
            shutil.rmtree(partial, ignore_errors=True)
            return dataclasses.replace(done, reused=True)
        shutil.rmtree(final, ignore_errors=True)
    try:
        partial.rename(final)
    except OSError:  # a twin attempt renamed first: keep its run, count this one nowhere
        shutil.rmtree(partial, ignore_errors=True)
        done = read_run(final)
        if done is None:
            raise
        return dataclasses.replace(done, reused=True)
    return outcome


def _fsync_tree(directory: Path) -> None:
    """Make the run's files durable before the rename publishes them."""
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


# --------------------------------------------------------------------------- the sweep
@dataclass
class SweepResult:
    """How a sweep went: one outcome per run (completed or failed), and its timings."""

    out: Path
    outcomes: list[RunOutcome] = field(default_factory=list)
    skipped: int = 0  # complete before this call (--resume)
    wall_s: float = 0.0
    dashboard: str | None = None

    @property
    def failed(self) -> list[RunOutcome]:
        """The runs that failed, with their errors."""
        return [o for o in self.outcomes if o.status == "failed"]


class _Progress:
    """Counts for the progress bar and the ``neurosim/<sweep-id>/sweep`` topic."""

    def __init__(self, total: int, skipped: int) -> None:
        self.total, self.done, self.failed, self.running = total, skipped, 0, 0


def _cleanup_partials(out: Path) -> None:
    for partial in out.glob("*/.*.partial-*"):
        shutil.rmtree(partial, ignore_errors=True)


def _check_counts(workers: int, threads_per_run: int) -> None:
    if workers < 0:
        raise SweepError(f"workers must be >= 0, got {workers}")
    if threads_per_run < 1:
        raise SweepError(f"threads_per_run must be >= 1, got {threads_per_run}")


def _prepare_out(out: Path, spec: SweepSpec, resume: bool, owned: ClusterStart | None = None) -> list[RunPoint]:
    """The sweep's runs, its directory checked and prepared (``owned``: a starting cluster to
    close if the directory is refused)."""
    try:
        return _prepare_dir(out, spec, resume)
    except BaseException:
        if owned is not None:
            owned.close()
        raise


def _prepare_dir(out: Path, spec: SweepSpec, resume: bool) -> list[RunPoint]:
    """Create ``out`` (or check it for ``resume``); the points still to run."""
    points = spec.points()
    spec_file = out / SWEEP_FILE
    if resume and spec_file.exists():
        previous = json.loads(spec_file.read_text())
        previous.pop("source", None)  # the same config may be named from another directory
        if previous != {k: v for k, v in strict_json(spec.to_json()).items() if k != "source"}:
            raise SweepError(
                f"{out} holds a different sweep (config, settings or seeds differ from {SWEEP_FILE}); "
                "resume it with the same arguments, or choose another --out"
            )
    elif out.exists() and any(out.iterdir()):
        hint = " (add --resume to continue the sweep in it)" if spec_file.exists() else ""
        raise SweepError(f"output directory {out} is not empty{hint}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(spec_file, spec.to_json())
    _cleanup_partials(out)
    return points


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    *,
    workers: int = 2,
    scheduler: str | Client | ClusterStart | None = None,
    resume: bool = False,
    mqtt: BrokerSettings | None = None,
    sweep_id: str | None = None,
    threads_per_run: int = 1,
    progress: bool = True,
    dashboard_address: str | None = "127.0.0.1:8787",
    on_outcome: Callable[[RunOutcome], None] | None = None,
    echo: Callable[[str], None] = print,
    baseline: Mapping[str, Any] | None = None,
) -> SweepResult:
    """Run every point of ``spec`` into ``out`` and write the report.

    ``workers``: worker processes of a ``LocalCluster`` started for the sweep (one thread
    each); 0 runs the points one after the other in this process, without Dask.
    ``scheduler``: a scheduler address (``tcp://host:8786``) or a ``distributed.Client``
    to use instead of a local cluster (its workers must see ``out``: a shared file system),
    or a ``ClusterStart`` begun before the sweep's configs were validated (this sweep uses
    it and closes it).
    ``mqtt``: each run publishes under ``neurosim/<sweep_id>/<setting>/<seed>/`` and the
    sweep its progress on ``neurosim/<sweep_id>/sweep``. ``on_outcome`` is called in this
    process after each run finishes (for logs). ``baseline`` (``{path: value}``, naming one
    setting): the report gives every other setting's paired difference to it."""
    from neurosim.events.mqtt import check_run_id

    out = Path(out)
    _check_counts(workers, threads_per_run)
    if baseline:  # a baseline that names no setting is refused before anything runs
        baseline_setting(spec.settings, baseline)
    sweep_id = check_run_id(sweep_id or out.resolve().name)
    if scheduler is None and workers > 0:  # the workers start and import neurosim while this process prepares
        scheduler = ClusterStart(workers, threads_per_run=threads_per_run, dashboard_address=dashboard_address)
    owned = scheduler if isinstance(scheduler, ClusterStart) else None
    points = _prepare_out(out, spec, resume, owned)
    complete = {p.relpath for p in points if _is_complete(out / p.relpath)}
    todo = [p for p in points if p.relpath not in complete]
    result = SweepResult(out=out, skipped=len(complete))
    if complete:
        echo(f"{len(complete)} of {len(points)} runs already complete in {out}; running {len(todo)}")
    t0 = time.perf_counter()
    state = _Progress(len(points), len(complete))
    function = spec.source if spec.kind == "function" else ""
    with _SweepAnnouncer(mqtt, sweep_id) as announce:
        announce(state, None)

        def finished(outcome: RunOutcome, bar: Any) -> None:
            result.outcomes.append(outcome)
            state.done += outcome.status == "completed"
            state.failed += outcome.status == "failed"
            if outcome.status == "failed":
                echo(f"run {outcome.setting}/{outcome.seed} failed: {outcome.error}")
            if on_outcome is not None:
                on_outcome(outcome)
            bar.update(1)
            bar.set_postfix(failed=state.failed, refresh=False)
            announce(state, f"{outcome.setting}/{outcome.seed}")

        from tqdm.auto import tqdm

        with tqdm(total=len(points), initial=len(complete), desc="sweep", unit="run", disable=not progress) as bar:
            if scheduler is None:
                for point in todo:
                    state.running = 1
                    finished(run_point(point, spec.kind, str(out), mqtt=mqtt, sweep_id=sweep_id,
                                       threads=threads_per_run, function=function), bar)  # fmt: skip
            else:
                args = (todo, spec.kind, out, mqtt, sweep_id, threads_per_run, state, finished, bar, function)
                _sweep_on_dask(scheduler, owned, result, echo, lambda client: _run_on_dask(client, *args))
        state.running = 0
        announce(state, None)
    try:
        _cleanup_partials(out)
        write_report(out, baseline)
    finally:
        if owned is not None:
            owned.close()
    result.wall_s = time.perf_counter() - t0
    return result


def _is_complete(run_dir: Path) -> bool:
    outcome = read_run(run_dir)
    return outcome is not None and outcome.status == "completed"


def _sweep_on_dask(scheduler: str | Client | ClusterStart, owned: ClusterStart | None, result: SweepResult,
                   echo: Callable[[str], None], run: Callable[[Client], None]) -> None:  # fmt: skip
    try:
        with _dask_client(scheduler) as client:
            result.dashboard = _dashboard_link(client)
            if result.dashboard:
                echo(f"Dask dashboard: {result.dashboard}")
            run(client)
    finally:
        if owned is not None:  # the workers shut down while this process writes the report
            owned.close_in_background()


@contextlib.contextmanager
def _dask_client(scheduler: str | Client | ClusterStart) -> Iterator[Client]:
    from distributed import Client

    if isinstance(scheduler, ClusterStart):
        yield scheduler.client()
        return
    if isinstance(scheduler, Client):
        yield scheduler
        return
    try:
        client = Client(scheduler, timeout="20s")  # type: ignore[no-untyped-call]
    except OSError as err:
        raise SweepError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
    with client:
        yield client


# What a run imports; a local cluster's workers import it while they start, not in their first run.
RUN_MODULES = ["neurosim.phases.schedule", "neurosim.runner"]


class ClusterStart:
    """A local cluster begun early: its fork server (``local_cluster``) starts now, in a
    process of its own, and imports PyTorch and neurosim while this process goes on (validating
    a sweep's configs imports PyTorch here too, about 2 s on the 2-core machine); the
    scheduler and the workers start at the first ``client()``, the workers forked from the
    warm server (``warm_fork_server``, which ``neurosim sweep`` calls before it reads the
    configs). In a script::

        start = ClusterStart(2)
        spec = make_spec("config.toml", axes=[...], seeds="0-4")
        run_sweep(spec, "runs/sweep", scheduler=start)  # uses it, then closes it
    """

    def __init__(self, workers: int, *, threads_per_run: int = 1,
                 dashboard_address: str | None = "127.0.0.1:8787") -> None:  # fmt: skip
        if workers < 1:
            raise SweepError("a local cluster needs at least one worker")
        self._options = {"threads_per_run": threads_per_run, "dashboard_address": dashboard_address}
        self._workers = workers
        self._stack = contextlib.ExitStack()
        self._client: Client | None = None
        self._lock = threading.Lock()
        self._closing: threading.Thread | None = None
        warm_fork_server(RUN_MODULES)

    def client(self) -> Client:
        """The cluster's client, started on the first call."""
        with self._lock:
            if self._client is None:
                cluster = local_cluster(self._workers, preload=RUN_MODULES, **self._options)  # type: ignore[arg-type]
                self._client = self._stack.enter_context(cluster)
            return self._client

    def close(self) -> None:
        """Shut the cluster down (or wait for a shutdown begun by ``close_in_background``)."""
        closing = self._closing
        if closing is not None and closing is not threading.current_thread():
            closing.join()
            return
        with self._lock:
            self._stack.close()

    def close_in_background(self) -> None:
        """Begin ``close()`` in a thread (``close()`` then waits for it)."""
        if self._closing is None:
            self._closing = threading.Thread(target=self.close, name="neurosim-cluster-close", daemon=True)
            self._closing.start()

    def __enter__(self) -> ClusterStart:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def warm_fork_server(preload: Sequence[str]) -> bool:
    """Start Python's fork server (where the platform has one) with ``preload`` imported in
    it, for a local cluster's workers to be forked from; False where there is none. A fork
    server already running keeps what it imported."""
    import multiprocessing
    from multiprocessing import forkserver

    import dask
    from distributed.utils import get_mp_context

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        # distributed sets the fork server's preload once, on first use: ours replaces it after
        get_mp_context().set_forkserver_preload(["distributed", *preload])  # type: ignore[no-untyped-call]
    forkserver.ensure_running()
    return True


@contextlib.contextmanager
def local_cluster(workers: int, *, threads_per_run: int = 1, dashboard_address: str | None = "127.0.0.1:8787",
                  preload: Sequence[str] = ()) -> Iterator[Client]:  # fmt: skip
    """A client of a fresh ``LocalCluster`` set up for runs: ``workers`` processes of one
    thread, each run pinned to ``threads_per_run`` BLAS / PyTorch / numba threads, Dask's
    statistical profiler off; ``preload``: modules each worker imports as it starts. Pass
    the client as ``run_sweep(..., scheduler=client)`` to run several sweeps on one cluster.

    Where the platform has it, workers are forked from one fork server that imported
    ``preload`` once (Python's ``forkserver`` start method): PyTorch is imported once for all
    workers instead of once each (about 2 s of CPU per worker on the 2-core machine), a worker
    that dies is replaced at once, and shutting down takes milliseconds instead of about 1 s.
    The fork server holds no threads, so forking from it is safe."""
    import dask
    from distributed import Client, LocalCluster

    if workers < 1:
        raise SweepError("a local cluster needs at least one worker")
    pinned = {name: str(threads_per_run) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                       "NUMBA_NUM_THREADS")}  # fmt: skip
    # the statistical profiler samples the running task's stack 100 times a second under the
    # GIL, which costs a Python-heavy run about a seventh of its speed
    quiet = {
        "distributed.worker.profile.enabled": False,
        # each periodic check wakes the worker's event loop, which then waits for the run's
        # thread to let go of the GIL: a run of Python steps pays for every wake-up
        "distributed.worker.memory.monitor-interval": "1s",
        "distributed.admin.system-monitor.interval": "2s",
    }
    if warm_fork_server(preload):
        quiet["distributed.worker.multiprocessing-method"] = "forkserver"
    with (
        dask.config.set(quiet),
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=dashboard_address,
            env=pinned,
            preload=list(preload),
            silence_logs=40,  # logging.ERROR: a killed worker is reported by the sweep, not by a log flood
        ) as cluster,
    ):
        # not `with Client(...)`: that sets a context variable which only the thread that set it
        # may reset, and a ClusterStart's cluster is opened and closed in different threads
        client = Client(cluster)  # type: ignore[no-untyped-call]
        try:
            yield client
        finally:
            client.close()  # type: ignore[no-untyped-call]


def _dashboard_link(client: Client) -> str | None:
    try:
        link = client.dashboard_link
    except (KeyError, AttributeError):
        return None
    return str(link) if link else None


def _run_on_dask(client: Client, todo: list[RunPoint], kind: ConfigKind, out: Path, mqtt: BrokerSettings | None,
                 sweep_id: str, threads: int, state: _Progress, finished: Callable[[RunOutcome, Any], None],
                 bar: Any, function: str) -> None:  # fmt: skip
    from distributed import as_completed

    futures = {}
    for point in todo:
        key = f"neurosim-run-{point.setting}-{point.seed}-{uuid.uuid4().hex[:6]}"
        future = client.submit(run_point, point, kind, str(out), mqtt=mqtt, sweep_id=sweep_id, threads=threads,
                               function=function, key=key, pure=False)  # fmt: skip
        futures[future] = point
    threads_total = _total_threads(client)
    remaining = len(futures)
    state.running = min(remaining, threads_total)
    warmed = False
    for future in as_completed(futures):  # type: ignore[no-untyped-call]
        point = futures[future]
        try:
            outcome = future.result()
        except Exception as err:  # the task itself died (its worker was lost too often): recorded as failed
            outcome = _lost_run(point, out, f"{type(err).__name__}: {err}")
        remaining -= 1
        state.running = min(remaining, threads_total)  # in flight on a worker thread
        if remaining < threads_total and not warmed:  # a core is free: load the report's plotting meanwhile
            warmed = True
            threading.Thread(target=_load_plotting, name="neurosim-report-warm-up", daemon=True).start()
        finished(outcome, bar)


def _total_threads(client: Client) -> int:
    try:
        return max(1, sum(client.nthreads().values()))  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError):
        return 1


def _lost_run(point: RunPoint, out: Path, error: str) -> RunOutcome:
    """Record a run whose task never returned (for example its worker kept dying)."""
    now = time.time()
    outcome = RunOutcome(point.setting, point.seed, "failed", {}, 0.0, now, now, "", error)
    final = out / point.setting / str(point.seed)
    if not _is_complete(final):
        shutil.rmtree(final, ignore_errors=True)
        final.mkdir(parents=True)
        write_json(final / RUN_FILE, outcome.to_json(point.overrides))
    return outcome


class _SweepAnnouncer:
    """Publishes the sweep's progress on ``neurosim/<sweep-id>/sweep`` (retained) from a
    background thread with its own event loop; does nothing without a broker."""

    def __init__(self, mqtt: BrokerSettings | None, sweep_id: str) -> None:
        self.mqtt, self.sweep_id = mqtt, sweep_id
        self._thread: threading.Thread | None = None
        self._loop: Any = None
        self._bus: Any = None
        self._stop: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> Callable[[_Progress, str | None], None]:
        if self.mqtt is not None:
            self._thread = threading.Thread(target=self._serve, name=f"neurosim-sweep-{self.sweep_id}", daemon=True)
            self._thread.start()
            self._ready.wait(30)
        return self.announce

    def _serve(self) -> None:
        import asyncio

        from neurosim.events.bus import EventBus
        from neurosim.events.mqtt import MQTTPublisher

        async def main() -> None:
            assert self.mqtt is not None
            self._loop = asyncio.get_running_loop()
            self._bus = EventBus()
            self._stop = asyncio.Event()
            async with MQTTPublisher(self.mqtt, self.sweep_id, self._bus):
                self._ready.set()
                await self._stop.wait()

        try:
            import asyncio

            asyncio.run(main())
        except Exception as err:  # reported in __exit__; the sweep itself goes on
            self._error = err
        finally:
            self._ready.set()

    def announce(self, state: _Progress, last: str | None) -> None:
        if self._loop is None or self._bus is None:
            return
        from neurosim.events.schema import SweepEvent

        event = SweepEvent(
            sweep_id=self.sweep_id,
            total=state.total,
            done=state.done,
            failed=state.failed,
            running=state.running,
            last_run=last,
            wall_time=time.time(),
        )
        self._loop.call_soon_threadsafe(self._bus.publish, event)

    def __exit__(self, *exc: object) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self._error is not None:
            warnings.warn(f"the sweep's progress was not published: {self._error}", RuntimeWarning, stacklevel=2)


# --------------------------------------------------------------------------- report
def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None, None
    mean = sum(finite) / len(finite)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else 0.0
    return mean, std


def baseline_setting(settings: Sequence[Setting], baseline: Mapping[str, Any]) -> Setting:
    """The one setting whose overrides include every ``path: value`` of ``baseline``."""
    matches = [s for s in settings if all(p in s.overrides and s.overrides[p] == v for p, v in baseline.items())]
    wanted = ", ".join(f"{p}={_format_value(v)}" for p, v in baseline.items())
    if len(matches) != 1:
        names = [s.name for s in (matches or settings)]
        raise SweepError(f"baseline {wanted} matches {len(matches)} settings, not one; "
                         f"{'they are' if matches else 'the settings are'}: {', '.join(names)}")  # fmt: skip
    return matches[0]


def _paired(values: Mapping[str, float | None], base: Mapping[str, float | None]) -> dict[str, Any] | None:
    """Mean, sample std, n and t of ``value - baseline value`` over the seeds both completed."""
    diffs = [v - b for s, v in values.items() if v is not None and (b := base.get(s)) is not None
             and math.isfinite(v) and math.isfinite(b)]  # fmt: skip
    mean, std = _mean_std(diffs)
    if mean is None or std is None:
        return None
    return {"mean": mean, "std": std, "n": len(diffs), "t": _t_statistic(mean, std, len(diffs))}


def _t_statistic(mean: float, std: float, n: int) -> float | None:
    """Mean over its standard error; None where the spread is nothing but rounding (or n < 2)."""
    if n < 2 or std <= 1e-9 * max(1.0, abs(mean)):
        return None
    return mean / (std / math.sqrt(n))


def collect(out: Path, baseline: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The sweep's table from its directory: one row per setting, runs in seed order. With a
    ``baseline`` (``{path: value}`` naming one setting), every other row also gets its paired
    difference to that setting, seed by seed (``"paired"``)."""
    spec = SweepSpec.from_json(json.loads((out / SWEEP_FILE).read_text()))
    reference = baseline_setting(spec.settings, baseline) if baseline else None
    rows: list[dict[str, Any]] = []
    for setting in spec.settings:
        runs = {seed: read_run(out / setting.name / str(seed)) for seed in spec.seeds}
        done = {seed: r for seed, r in runs.items() if r is not None and r.status == "completed"}
        keys = list(dict.fromkeys(k for r in done.values() for k in r.headline))
        numbers = {}
        for key in keys:
            values = [done[s].headline.get(key) for s in spec.seeds if s in done]
            mean, std = _mean_std([v for v in values if v is not None])
            numbers[key] = {"mean": mean, "std": std, "values": {str(s): done[s].headline.get(key) for s in done}}
        rows.append({
            "setting": setting.name,
            "overrides": dict(setting.overrides),
            "completed": len(done),
            "failed": sorted(s for s, r in runs.items() if r is not None and r.status == "failed"),
            "missing": sorted(s for s, r in runs.items() if r is None),
            "headline": numbers,
            "wall_s_mean": _mean_std([r.wall_s for r in done.values()])[0],
        })  # fmt: skip
    if reference is not None:
        base = next(r["headline"] for r in rows if r["setting"] == reference.name)
        for row in rows:
            if row["setting"] != reference.name:
                row["paired"] = {k: _paired(e["values"], base[k]["values"]) for k, e in row["headline"].items()
                                 if k in base}  # fmt: skip
    errors = {
        f"{s.name}/{seed}": r.error
        for s in spec.settings
        for seed in spec.seeds
        if (r := read_run(out / s.name / str(seed))) is not None and r.error
    }
    return {
        "kind": spec.kind,
        "source": spec.source,
        "seeds": list(spec.seeds),
        "paths": list(dict.fromkeys(p for s in spec.settings for p in s.overrides)),
        "rows": rows,
        "baseline": {"setting": reference.name, "overrides": dict(baseline or {})} if reference else None,
        "errors": errors,
        "written": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def write_report(out: str | Path, baseline: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """(Re)write ``sweep.json``, ``sweep.md`` and ``sweep.png`` from the runs in ``out``; with a
    ``baseline`` (``{path: value}``, one setting), paired differences to it. Without one, the
    baseline of the report already there is kept."""
    out = Path(out)
    if not (out / SWEEP_FILE).exists():
        raise SweepError(f"{out} is not a sweep directory (no {SWEEP_FILE})")
    if baseline is None and (out / "sweep.json").exists():
        with contextlib.suppress(ValueError, AttributeError):
            baseline = (json.loads((out / "sweep.json").read_text()).get("baseline") or {}).get("overrides")
    table = collect(out, baseline)
    write_json(out / "sweep.json", table)
    (out / "sweep.md").write_text(_markdown(table))
    _plot(out / "sweep.png", table)
    return table


def _cell(entry: Mapping[str, Any] | None, *, paired: bool = False) -> str:
    """mean ± std; a paired difference also gets its t statistic (mean over its standard error)."""
    if entry is None or entry["mean"] is None:
        return "-"
    text = f"{entry['mean']:.3f} ± {entry['std']:.3f}"
    n = sum(v is not None and math.isfinite(v) for v in entry["values"].values())
    if paired and (t := _t_statistic(entry["mean"], entry["std"], n)) is not None:
        text += f" (t = {t:+.1f})"
    return text


def _paired_cell(entry: Mapping[str, Any] | None) -> str:
    if entry is None:
        return "-"
    t = "" if entry["t"] is None else f" (t = {entry['t']:+.1f})"
    return f"{entry['mean']:+.3f} ± {entry['std']:.3f}{t}"


def _markdown(table: Mapping[str, Any]) -> str:
    keys = list(dict.fromkeys(k for row in table["rows"] for k in row["headline"]))
    paths = table["paths"]
    baseline = table.get("baseline")
    against = [f"{keys[0]} - baseline (paired)"] if baseline and keys else []
    notes = [f"`{GAIN}`: each run against its own no-consolidation control (same seed), with its t statistic"
             ] if GAIN in keys else []  # fmt: skip
    if against and baseline is not None:
        named = ", ".join(f"{p}={_format_value(v)}" for p, v in baseline["overrides"].items())
        notes.append(f"the last column: each setting minus the baseline ({named}), seed by seed, mean ± std and t")
    lines = [
        f"# Sweep of {table['source'] or 'a config'} ({table['kind']})",
        "",
        f"Seeds {', '.join(map(str, table['seeds']))}; mean ± std over the completed seeds (n)"
        + "".join(f"; {note}" for note in notes)
        + ".",
        "",
        "| " + " | ".join([*(paths or ["setting"]), "n", *keys, *against]) + " |",
        "|" + "---|" * (len(paths or ["setting"]) + 1 + len(keys) + len(against)),
    ]
    for row in table["rows"]:
        first = [_format_value(row["overrides"].get(p, "-")) for p in paths] if paths else [row["setting"]]
        n = f"{row['completed']}" + (f" ({len(row['failed'])} failed)" if row["failed"] else "")
        cells = [_cell(row["headline"].get(k), paired=k == GAIN) for k in keys]
        if against:
            cells.append(_paired_cell(row["paired"].get(keys[0])) if "paired" in row else "baseline")
        lines.append("| " + " | ".join([*first, n, *cells]) + " |")
    if table["errors"]:
        lines += ["", "Failed runs:", ""]
        lines += [f"- `{run}`: {error}" for run, error in table["errors"].items()]
    return "\n".join(lines) + "\n"


def _load_plotting() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plotted_paths(table: Mapping[str, Any]) -> dict[str, list[str]]:
    """The panels of a sweep's plot: each swept path that takes more than one value, with the
    paths zipped to it (those that split the runs the same way, as ``sleep.dec`` with
    ``sleep.inc``). A path held at one value (a grid entry of one, as a sweep file fixing the
    data set) or zipped to an earlier one gets no panel of its own and no place in the
    legends, which would otherwise repeat it on every line."""
    panels: dict[str, list[str]] = {}
    partitions: dict[tuple[int, ...], str] = {}
    for path in table["paths"]:
        labels = [_format_value(r["overrides"].get(path)) for r in table["rows"]]
        first_seen = {value: k for k, value in reversed(list(enumerate(labels)))}
        partition = tuple(first_seen[value] for value in labels)  # which runs share a value
        if len(first_seen) < 2:
            continue
        if partition in partitions:
            panels[partitions[partition]].append(path)
        else:
            partitions[partition] = path
            panels[path] = [path]
    return panels


def _plot(path: Path, table: Mapping[str, Any]) -> None:
    plt = _load_plotting()

    keys = list(dict.fromkeys(k for row in table["rows"] for k in row["headline"]))
    panels = plotted_paths(table) or {"setting": ["setting"]}
    varied = [p for p in panels if p != "setting"]
    # the headline to plot: the first of each kind (accuracy for experiments, every rate for simulations)
    shown = [keys[0]] if table["kind"] != "simulation" and keys else keys
    # the longest legend (one line per combination of the other panels' values), drawn below its panel
    lines = max(len({tuple(_format_value(r["overrides"].get(p)) for p in varied if p != swept)
                     for r in table["rows"]}) for swept in panels) * len(shown)  # fmt: skip
    height = 3.4 + (0.17 * lines if lines > 1 else 0.0)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), height), squeeze=False)
    if not keys:
        fig.text(0.5, 0.5, "no completed runs", ha="center")
    for ax, swept in zip(axes[0], panels, strict=True):
        values = list(dict.fromkeys(_format_value(r["overrides"].get(swept, r["setting"])) for r in table["rows"]))
        others = [p for p in varied if p != swept]
        groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
        for row in table["rows"]:
            groups.setdefault(tuple(_format_value(row["overrides"].get(p)) for p in others), []).append(row)
        for group, rows in groups.items():
            for key in shown:
                xs, ys, es = [], [], []
                for row in rows:
                    entry = row["headline"].get(key)
                    if entry is None or entry["mean"] is None:
                        continue
                    xs.append(values.index(_format_value(row["overrides"].get(swept, row["setting"]))))
                    ys.append(entry["mean"])
                    es.append(entry["std"])
                parts = [f"{p}={v}" for p, v in zip(others, group, strict=True)] + ([key] if len(shown) > 1 else [])
                label = ", ".join(parts)
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label or None)
        ax.set_xticks(range(len(values)), values, rotation=30 if max(map(len, values), default=0) > 6 else 0)
        ax.set_xlabel(" / ".join(panels[swept]))
        ax.set_ylabel(shown[0] if len(shown) == 1 else "rate (Hz)" if table["kind"] == "simulation" else "")
        if ax.get_legend_handles_labels()[0] and len(groups) * len(shown) > 1:
            ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
        ax.grid(alpha=0.3)
    fig.suptitle(f"sweep: mean ± std over seeds {', '.join(map(str, table['seeds']))}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
