"""The ``neurosim`` command line: ``run``, ``validate``."""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Any

import click

from neurosim.config import ConfigError, ContinualConfig, SimulationConfig, load_any_config
from neurosim.outputs import OutputExistsError


def _overridden(cfg: SimulationConfig, **run_overrides: Any) -> SimulationConfig:
    changes = {k: v for k, v in run_overrides.items() if v is not None}
    if not changes:
        return cfg
    data = cfg.model_dump(mode="json")
    data["run"].update(changes)
    from neurosim.config import parse_config

    return parse_config(data)


def _load_any(path: Path) -> SimulationConfig | ContinualConfig:
    try:
        return load_any_config(path)
    except ConfigError as err:
        raise click.ClickException(f"invalid config {path}:\n{err}") from None


def _run_continual(cfg: ContinualConfig, out: Path, *, overwrite: bool, quiet: bool, seed: int | None) -> None:
    from neurosim.outputs import prepare_output_dir, write_json
    from neurosim.phases.schedule import run_experiment

    if seed is not None:
        cfg = cfg.model_copy(update={"seed": seed})
    try:
        out_dir = prepare_output_dir(out, overwrite=overwrite)
    except OutputExistsError as err:
        raise click.ClickException(str(err)) from None
    write_json(out_dir / "config.json", cfg.model_dump(mode="json", by_alias=True))
    results = run_experiment(cfg, out_dir, progress=not quiet)
    rows = results["accuracy_matrix"]
    final = ", ".join("-" if a is None else f"{a:.2f}" for a in rows[-1]) if rows else ""
    click.echo(
        f"{results['scenario']}-incremental: average accuracy {results['average_accuracy']:.3f}, "
        f"BWT {results['bwt']:+.3f} (after the last task: {final}); task-incremental average "
        f"{results['average_accuracy_task_incremental']:.3f}"
    )
    click.echo(f"simulated {results['simulated_s']:.1f} s in {results['wall_s']:.0f} s wall; outputs in {out_dir}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="neurosim")
def main() -> None:
    """neurosim: spiking networks that learn online with STDP, consolidate with Fisher-weighted
    penalties and sleep, and stream their activity over MQTT."""


@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output directory (must be new or empty). Default: runs/<config>-<timestamp>.",
)
@click.option("--duration", type=float, default=None, help="Simulated seconds (overrides run.duration).")
@click.option("--seed", type=int, default=None, help="Seed (overrides run.seed).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Overrides run.device.")
@click.option("--batch", type=int, default=None, help="Independent instances (overrides run.batch).")
@click.option("--overwrite", is_flag=True, help="Allow writing into a non-empty output directory.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--backend",
    type=click.Choice(["neurosim", "brian2"]),
    default="neurosim",
    show_default=True,
    help="Simulate with neurosim's engine or with Brian2.",
)
@click.option(
    "--brian2-target",
    type=click.Choice(["cython", "numpy"]),
    default="cython",
    show_default=True,
    help="Brian2 code generation target (Cython code is compiled once and cached).",
)
def run(config: Path, out: Path | None, duration: float | None, seed: int | None, device: str | None,
        batch: int | None, overwrite: bool, quiet: bool, backend: str, brian2_target: str) -> None:  # fmt: skip
    """Run CONFIG and write config.json, spikes.npz, summary.json and raster.png to --out."""
    from neurosim.runner import RunBackend, run_simulation

    loaded = _load_any(config)
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{config.stem}-{stamp}"
    if isinstance(loaded, ContinualConfig):
        _run_continual(loaded, out, overwrite=overwrite, quiet=quiet, seed=seed)
        return
    try:
        cfg = _overridden(loaded, duration=duration, seed=seed, device=device, batch=batch)
    except ConfigError as err:
        raise click.ClickException(f"invalid option:\n{err}") from None
    try:
        summary = run_simulation(
            cfg, out, overwrite=overwrite, progress=not quiet, backend=RunBackend(backend), brian2_target=brian2_target
        )
    except (OutputExistsError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    rates = ", ".join(f"{k} {v['rate_hz']:.2f} Hz" for k, v in summary["populations"].items())
    click.echo(f"simulated {summary['duration_s']:.3f} s in {summary['wall_s']:.2f} s wall; {rates}")
    click.echo(f"outputs in {out}")


@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the resolved config as JSON.")
def validate(config: Path, as_json: bool) -> None:
    """Check CONFIG without running it: exit 0 if valid, else print every problem and exit 1."""
    cfg = _load_any(config)
    if isinstance(cfg, ContinualConfig):
        click.echo(json.dumps(cfg.model_dump(mode="json", by_alias=True), indent=2) if as_json else
                   f"{config}: valid (continual experiment, {cfg.data.n_tasks} tasks, {cfg.scenario}-incremental, "
                   f"{len(cfg.resolved_schedule())} phase blocks)")  # fmt: skip
        return
    if as_json:
        click.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))
    else:
        n = sum(p.n for p in cfg.network.populations)
        click.echo(f"{config}: valid ({len(cfg.network.populations)} populations, {n} neurons, "
                   f"{len(cfg.network.projections)} projections, {cfg.run.duration} s)")  # fmt: skip


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
