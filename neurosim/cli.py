"""The ``neurosim`` command line: ``run``, ``sweep``, ``subscribe``, ``validate``."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import math
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from neurosim.outputs import OutputExistsError

if TYPE_CHECKING:
    from neurosim.config import ContinualConfig, SimulationConfig
    from neurosim.events.mqtt import BrokerSettings
    from neurosim.runner import LiveOptions

# PyTorch (about 2 s to import) is imported by the commands that need it, not here: `neurosim
# sweep` starts its workers first, `subscribe` never needs it.


def _overridden(cfg: SimulationConfig, **run_overrides: Any) -> SimulationConfig:
    changes = {k: v for k, v in run_overrides.items() if v is not None}
    if not changes:
        return cfg
    data = cfg.model_dump(mode="json")
    data["run"].update(changes)
    from neurosim.config import parse_config

    return parse_config(data)


def _load_any(path: Path) -> SimulationConfig | ContinualConfig:
    from neurosim.config import ConfigError, load_any_config

    try:
        return load_any_config(path)
    except ConfigError as err:
        raise click.ClickException(f"invalid config {path}:\n{err}") from None


def _run_continual(
    cfg: ContinualConfig, out: Path, *, overwrite: bool, quiet: bool, seed: int | None, live: LiveOptions
) -> None:
    from neurosim.outputs import prepare_output_dir, write_json
    from neurosim.phases.schedule import run_experiment

    if seed is not None:
        cfg = cfg.model_copy(update={"seed": seed})
    try:
        out_dir = prepare_output_dir(out, overwrite=overwrite)
    except OutputExistsError as err:
        raise click.ClickException(str(err)) from None
    write_json(out_dir / "config.json", cfg.model_dump(mode="json", by_alias=True))
    results = run_experiment(cfg, out_dir, progress=not quiet, run_id=live.run_id, mqtt=live.mqtt)
    _echo_continual(results, out_dir, cfg.network.n_hidden)


def _resume(out: Path, *, duration: float | None, quiet: bool, checkpoint_every: float | None,
            live: LiveOptions) -> None:  # fmt: skip
    """``neurosim run --resume DIR``: an experiment or a plain simulation, by its config."""
    if not _is_experiment_dir(out):
        _resume_plain(out, duration=duration, quiet=quiet, checkpoint_every=checkpoint_every, live=live)
    elif duration is not None:
        raise click.UsageError("--duration: an experiment's length is its schedule")
    else:
        _resume_continual(out, quiet=quiet, live=live)


def _is_experiment_dir(directory: Path) -> bool:
    try:
        return "experiment" in json.loads((directory / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False  # resume_simulation says what is wrong with it


def _resume_continual(out_dir: Path, *, quiet: bool, live: LiveOptions) -> None:
    from neurosim.config import ConfigError, parse_continual
    from neurosim.phases.schedule import CHECKPOINT_DIR, run_experiment
    from neurosim.sim.checkpoint import CheckpointError

    if not (out_dir / CHECKPOINT_DIR).is_dir():
        raise click.ClickException(f"{out_dir}: no {CHECKPOINT_DIR}/: the experiment stopped before its first "
                                   "evaluation; run it again")  # fmt: skip
    try:
        cfg = parse_continual(json.loads((out_dir / "config.json").read_text()))
        results = run_experiment(cfg, out_dir, progress=not quiet, run_id=live.run_id, mqtt=live.mqtt, resume=True)
    except (ConfigError, CheckpointError) as err:
        raise click.ClickException(str(err)) from None
    _echo_continual(results, out_dir, cfg.network.n_hidden)


def _bwt(value: float | None) -> str:
    """BWT for a summary line: undefined where no task was evaluated after a later one was learned."""
    return "BWT undefined (no task evaluated again after a later one)" if value is None or math.isnan(value) \
        else f"BWT {value:+.3f}"  # fmt: skip


def _paired(paired: dict[str, Any]) -> str:
    """A run against its control on the same test images, for the summary."""
    verdict = ("a difference this test set resolves" if paired["p_value"] < 0.05
               else "within what chance gives at this test size")  # fmt: skip
    return (
        f"of {paired['images']} test images, {paired['run_only']} right only with consolidation, "
        f"{paired['control_only']} only without (exact McNemar test p = {paired['p_value']:.2g}: {verdict})"
    )


def _echo_continual(results: dict[str, Any], out_dir: Path, n_neurons: int) -> None:
    rows = results["accuracy_matrix"]
    final = ", ".join("-" if a is None else f"{a:.2f}" for a in rows[-1]) if rows else ""
    click.echo(
        f"{results['scenario']}-incremental: average accuracy {results['average_accuracy']:.3f}, "
        f"{_bwt(results['bwt'])} (after the last task: {final}); task-incremental average "
        f"{results['average_accuracy_task_incremental']:.3f}; "
        f"{results.get('neurons_assigned', '?')} of {n_neurons} neurons assigned to a class"
    )
    control = results.get("control")
    if control is not None:
        click.echo(
            f"no-consolidation control (same seed and data): average accuracy {control['average_accuracy']:.3f}, "
            f"{_bwt(control['bwt'])}; task-incremental {control['average_accuracy_task_incremental']:.3f}; "
            f"consolidation gains {results['average_accuracy'] - control['average_accuracy']:+.3f}"
        )
        if "paired" in control:
            click.echo(f"  image by image: {_paired(control['paired'])}")
    for sleep in results.get("sleep", []):
        click.echo(
            f"sleep {sleep['episode']}: {sleep['duration_s']:.1f} s, {sleep['spikes']} replay spikes, "
            f"{sleep['classes_reactivated']}/{sleep['classes_seen']} classes reactivated, "
            f"Fisher protection halves the depression of {100 * sleep['protected_fraction']:.1f} % of synapses"
        )
    click.echo(f"simulated {results['simulated_s']:.1f} s in {results['wall_s']:.0f} s wall; outputs in {out_dir}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="neurosim")
def main() -> None:
    """neurosim: spiking networks that learn online with STDP, consolidate with Fisher-weighted
    penalties and sleep, and stream their activity over MQTT."""


@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False)
@click.option("--resume", "resume_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Go on with the interrupted run in this output directory from its last checkpoint (no CONFIG; "
                   "with --duration: extend a finished run).")  # fmt: skip
@click.option("--checkpoint-every", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Simulated seconds between checkpoints (DIR/checkpoint; default a tenth of the run).")  # fmt: skip
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
@click.option("--mqtt", "mqtt_url", default=None, metavar="URL",
              help="Publish phases, spikes and evaluations live to this broker (mqtt://[user[:pass]@]host[:port] "
                   "or mqtts://...).")  # fmt: skip
@click.option("--run-id", default=None, help="Topic level of this run: neurosim/<run-id>/... Default: the --out name.")
@click.option("--mqtt-ca", type=click.Path(exists=True, dir_okay=False), default=None, help="TLS: CA file.")
@click.option("--mqtt-cert", type=click.Path(exists=True, dir_okay=False), default=None, help="TLS: client cert.")
@click.option("--mqtt-key", type=click.Path(exists=True, dir_okay=False), default=None, help="TLS: client key.")
@click.option("--mqtt-insecure", is_flag=True, help="TLS: do not check the broker's host name.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus metrics at http://HOST:PORT/metrics while the run lasts.")  # fmt: skip
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address the metrics server binds (0.0.0.0: every interface).")  # fmt: skip
def run(config: Path | None, resume_dir: Path | None, checkpoint_every: float | None, out: Path | None,
        duration: float | None, seed: int | None, device: str | None, batch: int | None, overwrite: bool, quiet: bool,
        backend: str, brian2_target: str, mqtt_url: str | None, run_id: str | None, mqtt_ca: str | None,
        mqtt_cert: str | None, mqtt_key: str | None, mqtt_insecure: bool, metrics_port: int | None,
        metrics_host: str) -> None:  # fmt: skip
    """Run CONFIG and write config.json, spikes.npz, summary.json and raster.png to --out;
    or, with --resume DIR, go on with an interrupted run from its last checkpoint."""
    if (config is None) == (resume_dir is None):
        raise click.UsageError("give CONFIG to start a run, or --resume DIR to go on with one (not both)")
    if resume_dir is not None:
        given = [
            f"--{n}" for n, v in (("out", out), ("seed", seed), ("device", device), ("batch", batch)) if v is not None
        ]
        if given or backend != "neurosim":
            raise click.UsageError(
                f"{', '.join(given) or '--backend'}: a resumed run keeps its own settings "
                "(only --duration, --checkpoint-every, --quiet and the live options apply)"
            )
        live = _live_options(resume_dir, mqtt_url, run_id, mqtt_ca, mqtt_cert, mqtt_key, mqtt_insecure)
        with contextlib.ExitStack() as stack:
            stack.enter_context(_terminate_like_interrupt())
            _serve_metrics_if_asked(stack, metrics_port, metrics_host)
            _resume(resume_dir, duration=duration, quiet=quiet, checkpoint_every=checkpoint_every, live=live)
        return
    assert config is not None
    from neurosim.config import ContinualConfig

    loaded = _load_any(config)
    if isinstance(loaded, ContinualConfig):
        ignored = [f"--{name}" for name, value in (("duration", duration), ("device", device), ("batch", batch))
                   if value is not None]  # fmt: skip
        if ignored or backend != "neurosim":
            what = ", ".join(ignored + ([f"--backend {backend}"] if backend != "neurosim" else []))
            raise click.UsageError(
                f"{what}: not for a continual-learning experiment (its length is its schedule and "
                "data.train_per_task; it runs on neurosim's CPU engine); only --seed overrides it"
            )
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{config.stem}-{stamp}"
    live = _live_options(out, mqtt_url, run_id, mqtt_ca, mqtt_cert, mqtt_key, mqtt_insecure)
    if live.mqtt is not None and backend != "neurosim":
        raise click.ClickException("--mqtt needs --backend neurosim (Brian2 runs the whole simulation at once)")
    if live.mqtt is not None:
        _check_broker(live.mqtt)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_terminate_like_interrupt())
        _serve_metrics_if_asked(stack, metrics_port, metrics_host)
        if live.mqtt is not None:
            click.echo(f"publishing to {live.mqtt} under neurosim/{live.run_id}/", err=True)
        if isinstance(loaded, ContinualConfig):
            _run_continual(loaded, out, overwrite=overwrite, quiet=quiet, seed=seed, live=live)
        else:
            _run_plain(loaded, out, duration=duration, seed=seed, device=device, batch=batch, overwrite=overwrite,
                       quiet=quiet, backend=backend, brian2_target=brian2_target, live=live,
                       checkpoint_every=checkpoint_every)  # fmt: skip


def _serve_metrics_if_asked(stack: contextlib.ExitStack, port: int | None, host: str) -> None:
    from neurosim.metrics import serve_metrics

    if port is None:
        return
    try:
        bound = stack.enter_context(serve_metrics(port, address=host))
    except OSError as err:
        raise click.ClickException(f"cannot serve metrics on {host}:{port}: {err}") from None
    click.echo(f"Prometheus metrics at http://{host}:{bound}/metrics", err=True)


class Terminated(SystemExit):
    """SIGTERM, raised where the run is so that it ends as Ctrl-C does: what was recorded is
    written and the status says ``failed`` with this reason. Exit status 143 (128 + 15)."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)

    def __str__(self) -> str:
        return "terminated by SIGTERM"


@contextlib.contextmanager
def _terminate_like_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (an embedding application): leave its handler alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_broker(settings: BrokerSettings) -> None:
    """Before anything runs: refused credentials stop the command; an unreachable broker does
    not (the run goes on and the publisher keeps trying)."""
    from neurosim.events.mqtt import BrokerRefused, check_broker

    try:
        problem = asyncio.run(check_broker(settings))
    except BrokerRefused as err:
        raise click.ClickException(str(err)) from None
    if problem is not None:
        click.echo(f"warning: MQTT broker {settings} unreachable now ({problem}); the run goes on and "
                   "publishes once it connects", err=True)  # fmt: skip


def _live_options(out: Path, mqtt_url: str | None, run_id: str | None, ca: str | None, cert: str | None,
                  key: str | None, insecure: bool) -> LiveOptions:  # fmt: skip
    from neurosim.events.mqtt import check_run_id, parse_broker_url
    from neurosim.runner import LiveOptions

    if mqtt_url is None:
        if run_id or ca or cert or key or insecure:
            raise click.UsageError("--run-id and the --mqtt-* options need --mqtt URL")
        return LiveOptions()
    try:
        settings = parse_broker_url(mqtt_url, ca_file=ca, certfile=cert, keyfile=key, tls_insecure=insecure)
        return LiveOptions(mqtt=settings, run_id=check_run_id(run_id or out.name))
    except ValueError as err:
        raise click.UsageError(str(err)) from None


def _resume_plain(out: Path, *, duration: float | None, quiet: bool, checkpoint_every: float | None,
                  live: LiveOptions) -> None:  # fmt: skip
    from neurosim.runner import resume_simulation
    from neurosim.sim.checkpoint import CheckpointError

    try:
        summary = resume_simulation(out, progress=not quiet, live=live, checkpoint_every=checkpoint_every,
                                    duration=duration)  # fmt: skip
    except (ValueError, CheckpointError) as err:
        raise click.ClickException(str(err)) from None
    _echo_summary(summary, out)


def _echo_summary(summary: dict[str, Any], out: Path) -> None:
    rates = ", ".join(f"{k} {v['rate_hz']:.2f} Hz" for k, v in summary["populations"].items())
    click.echo(f"simulated {summary['duration_s']:.3f} s in {summary['wall_s']:.2f} s wall; {rates}")
    click.echo(f"outputs in {out}")


def _run_plain(loaded: SimulationConfig, out: Path, *, duration: float | None, seed: int | None,
               device: str | None, batch: int | None, overwrite: bool, quiet: bool, backend: str,
               brian2_target: str, live: LiveOptions, checkpoint_every: float | None) -> None:  # fmt: skip
    from neurosim.config import ConfigError
    from neurosim.runner import RunBackend, run_simulation

    try:
        cfg = _overridden(loaded, duration=duration, seed=seed, device=device, batch=batch)
    except ConfigError as err:
        raise click.ClickException(f"invalid option:\n{err}") from None
    try:
        summary = run_simulation(
            cfg,
            out,
            overwrite=overwrite,
            progress=not quiet,
            backend=RunBackend(backend),
            brian2_target=brian2_target,
            live=live,
            checkpoint_every=checkpoint_every,
        )
    except (OutputExistsError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    _echo_summary(summary, out)


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False)
@click.option("--grid", "grids", multiple=True, metavar="PATH=V1,V2,...",
              help="Sweep a config path over values (repeatable; every combination runs). Values are TOML "
                   "(10, 1e-3, true, \"text\", [1, 2]) or bare words. Paths: ewc.lambda, sleep.enabled, "
                   "network.populations.exc.n (list items by name or index).")  # fmt: skip
@click.option("--seeds", default=None, metavar="LIST", help="Seeds of every setting: 0-4, 0,2,7 (default 0).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Worker processes of the local Dask cluster, one run each at a time (default: the CPU cores; "
                   "0: one after the other in this process, without Dask).")  # fmt: skip
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run on this Dask scheduler (tcp://host:8786) instead of a local cluster; its workers must "
                   "see --out.")  # fmt: skip
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Sweep directory, new or empty (or the sweep's, with --resume). "
                   "Default: runs/sweeps/<config>-<time>.")  # fmt: skip
@click.option("--resume", is_flag=True, help="Continue the sweep in --out: skip complete runs, redo the rest.")
@click.option("--baseline", "baseline", multiple=True, metavar="PATH=VALUE",
              help="The setting the others are compared with, seed by seed (paired differences in sweep.md), "
                   "named by its values: --baseline sleep.enabled=false (repeatable). Also with --report.")  # fmt: skip
@click.option("--report", "report_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Only rebuild sweep.json, sweep.md and sweep.png of this sweep directory.")  # fmt: skip
@click.option("--mqtt", "mqtt_url", default=None, metavar="URL",
              help="Publish each run under neurosim/<sweep-id>/<setting>/<seed>/ and the sweep's progress on "
                   "neurosim/<sweep-id>/sweep.")  # fmt: skip
@click.option("--sweep-id", default=None, help="Topic level of the sweep (default: the --out name).")
@click.option("--mqtt-ca", type=click.Path(exists=True, dir_okay=False), default=None, help="TLS: CA file.")
@click.option("--mqtt-insecure", is_flag=True, help="TLS: do not check the broker's host name.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def sweep(config: Path | None, grids: tuple[str, ...], seeds: str | None, workers: int | None,
          scheduler: str | None, out: Path | None, resume: bool, baseline: tuple[str, ...], report_dir: Path | None,
          mqtt_url: str | None, sweep_id: str | None, mqtt_ca: str | None, mqtt_insecure: bool,
          quiet: bool) -> None:  # fmt: skip
    """Run CONFIG for every combination of --grid values times --seeds, as Dask tasks.

    CONFIG is a run config (a simulation or a continual experiment) or a sweep file (a TOML
    with a [sweep] table: config, seeds, [sweep.grid], [[sweep.zip]] for paired values;
    docs/sweeps.md). Each run is an ordinary run in OUT/<setting>/<seed>/; the table of mean
    +- std over seeds goes to OUT/sweep.md and sweep.json, the plot to sweep.png.
    """
    from neurosim.sweep import SweepError, run_sweep, write_report

    reference = _baseline(baseline)
    if report_dir is not None:
        if config is not None or grids or resume:
            raise click.UsageError("--report DIR rebuilds a sweep's report; give no CONFIG, --grid or --resume")
        try:
            table = write_report(report_dir, reference)
        except SweepError as err:
            raise click.ClickException(str(err)) from None
        click.echo(f"{len(table['rows'])} settings; report in {report_dir / 'sweep.md'}")
        return
    if config is None:
        raise click.UsageError("give a CONFIG (or --report DIR)")
    _warm_workers(config, workers, scheduler)
    spec, from_file = _sweep_spec(config, grids, seeds)
    workers = workers if workers is not None else from_file.get("workers", _default_workers())
    scheduler = scheduler or from_file.get("scheduler")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = out or Path(from_file.get("out", Path("runs") / "sweeps" / f"{config.stem}-{stamp}"))
    broker = _sweep_broker(mqtt_url, sweep_id, mqtt_ca, mqtt_insecure)
    if broker is not None:
        _check_broker(broker)
    n_runs = len(spec.settings) * len(spec.seeds)
    where = f"scheduler {scheduler}" if scheduler else "this process" if workers == 0 else f"{workers} local workers"
    click.echo(f"sweep: {len(spec.settings)} settings x {len(spec.seeds)} seeds = {n_runs} runs on {where}; "
               f"outputs in {out}", err=True)  # fmt: skip
    try:
        result = run_sweep(spec, out, workers=workers, scheduler=scheduler, resume=resume, mqtt=broker,
                           sweep_id=sweep_id, progress=not quiet, echo=lambda s: click.echo(s, err=True),
                           baseline=reference or from_file.get("baseline"))  # fmt: skip
    except (SweepError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    ran = len(result.outcomes)
    click.echo(f"{ran - len(result.failed)} runs completed, {len(result.failed)} failed, {result.skipped} already "
               f"complete; {result.wall_s:.1f} s wall. Table: {out / 'sweep.md'}")  # fmt: skip
    if result.failed:
        raise click.ClickException(f"{len(result.failed)} runs failed (errors in {out / 'sweep.md'}); "
                                   "fix the cause and rerun with --resume")  # fmt: skip


def _warm_workers(config: Path, workers: int | None, scheduler: str | None) -> None:
    """When the sweep will run on a local cluster (no scheduler given, on the command line or
    in the file), start its workers' fork server now: it imports PyTorch and neurosim while
    this process reads and validates the configs (``neurosim.sweep.warm_fork_server``)."""
    import tomllib

    from neurosim.sweep import RUN_MODULES, warm_fork_server

    if scheduler is not None:
        return
    try:
        table = tomllib.loads(config.read_text(encoding="utf-8")).get("sweep", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return  # _sweep_spec says what is wrong with it
    if not isinstance(table, dict) or table.get("scheduler"):
        return
    count = workers if workers is not None else table.get("workers", _default_workers())
    if isinstance(count, int) and not isinstance(count, bool) and count >= 1:
        warm_fork_server(RUN_MODULES)


def _baseline(options: tuple[str, ...]) -> dict[str, Any] | None:
    """``--baseline PATH=VALUE`` options as ``{path: value}`` (values as in ``--grid``)."""
    from neurosim.sweep import parse_value

    pairs = [option.partition("=") for option in options]
    if any(not path.strip() or not sep or not text.strip() for path, sep, text in pairs):
        raise click.UsageError(f"--baseline takes PATH=VALUE, e.g. sleep.enabled=false; got {list(options)}")
    return {path.strip(): parse_value(text.strip()) for path, _, text in pairs} or None


def _sweep_spec(config: Path, grids: tuple[str, ...], seeds: str | None) -> tuple[Any, dict[str, Any]]:
    """The validated sweep of a run config and --grid options, or of a sweep file."""
    from neurosim.sweep import SweepError, load_sweep_file, make_spec, parse_axis

    try:
        if not _is_sweep_file(config):
            return make_spec(config, axes=[parse_axis(g) for g in grids], seeds=seeds or "0"), {}
        if grids:
            raise click.UsageError(f"--grid with a sweep file: put the grid in {config}")
        spec, from_file = load_sweep_file(config)
        if seeds is not None:
            spec = make_spec(spec.source, settings=list(spec.settings), seeds=seeds)
        return spec, from_file
    except SweepError as err:
        raise click.ClickException(str(err)) from None


def _sweep_broker(url: str | None, sweep_id: str | None, ca: str | None, insecure: bool) -> BrokerSettings | None:
    if url is None:
        if sweep_id or ca or insecure:
            raise click.UsageError("--sweep-id and the --mqtt-* options need --mqtt URL")
        return None
    from neurosim.events.mqtt import check_run_id, parse_broker_url

    try:
        if sweep_id is not None:
            check_run_id(sweep_id)
        return parse_broker_url(url, ca_file=ca, tls_insecure=insecure)
    except ValueError as err:
        raise click.UsageError(str(err)) from None


def _is_sweep_file(path: Path) -> bool:
    import tomllib

    try:
        return "sweep" in tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


@main.command()
@click.argument("run_dir", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["nwb"]), default="nwb", show_default=True,
              help="nwb: Neurodata Without Borders (units with spike times, recorded state, the config).")  # fmt: skip
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The file to write. Default: DIR/run.nwb.")  # fmt: skip
@click.option("--experimenter", default=None, help="NWB metadata: who ran the simulation (Last, First).")
@click.option("--institution", default=None, help="NWB metadata: where.")
def export(run_dir: Path, fmt: str, out_file: Path | None, experimenter: str | None, institution: str | None) -> None:
    """Export the outputs of a plain `neurosim run` in DIR (spikes, recorded state, config)
    to another format. For Neo / Elephant, use neurosim.interop.neo_io.to_block(DIR) in Python."""
    try:
        from neurosim.interop.nwb_io import write_nwb
    except ImportError as error:  # pragma: no cover - the interop extra is missing
        raise click.ClickException(f"{error}: install the interop extra: pip install 'neurosim[interop]'") from None
    target = out_file if out_file is not None else run_dir / "run.nwb"
    try:
        written = write_nwb(run_dir, target, experimenter=experimenter, institution=institution)
    except FileNotFoundError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {written}")


@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the resolved config as JSON.")
@click.option("--backend", type=click.Choice(["neurosim", "brian2"]), default="neurosim", show_default=True,
              help="Also check that this backend can run it (as `run --backend` would).")  # fmt: skip
def validate(config: Path, as_json: bool, backend: str) -> None:
    """Check CONFIG without running it: exit 0 if valid, else print every problem and exit 1."""
    from neurosim.config import ContinualConfig

    cfg = _load_any(config)
    if backend == "brian2":
        if isinstance(cfg, ContinualConfig):
            raise click.ClickException(f"{config}: a continual experiment runs on neurosim's engine, not Brian2")
        from neurosim.backends.brian2 import unsupported_features

        problems = unsupported_features(cfg)
        if problems:
            raise click.ClickException(f"{config}: valid, but Brian2 cannot run it:\n- " + "\n- ".join(problems))
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


@main.command()
@click.option("--broker", required=True, metavar="URL", help="mqtt://[user[:pass]@]host[:port] or mqtts://...")
@click.option("--run-id", default="+", show_default=True,
              help="The run to follow ('+': every run on the broker; a sweep id: the sweep and its runs).")  # fmt: skip
@click.option("--count", type=click.IntRange(min=1), default=None, help="Exit after this many events.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Exit after this many seconds without an event (status 1 if --count was not reached).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of text.")
@click.option("--spikes", type=click.Choice(["summary", "full"]), default="summary", show_default=True,
              help="Spike batches as counts, or with every spike's step and neuron.")  # fmt: skip
@click.option("--mqtt-ca", type=click.Path(exists=True, dir_okay=False), default=None, help="TLS: CA file.")
@click.option("--mqtt-cert", type=click.Path(exists=True, dir_okay=False), default=None, help="TLS: client cert.")
@click.option("--mqtt-key", type=click.Path(exists=True, dir_okay=False), default=None, help="TLS: client key.")
@click.option("--mqtt-insecure", is_flag=True, help="TLS: do not check the broker's host name.")
@click.option("--keep-waiting", is_flag=True,
              help="Following one run: keep listening after it goes offline (e.g. for its restart).")  # fmt: skip
def subscribe(broker: str, run_id: str, count: int | None, timeout: float | None, as_json: bool, spikes: str,
              mqtt_ca: str | None, mqtt_cert: str | None, mqtt_key: str | None, mqtt_insecure: bool,
              keep_waiting: bool) -> None:  # fmt: skip
    """Print a run's events as they arrive: phases, status, evaluations, sleeps and spike batches.

    Retained messages (the current phase and status) come first. A malformed message is
    reported on stderr and the stream goes on. Following one run (not '+'), the command ends
    when that run goes offline, unless --keep-waiting.
    """
    import aiomqtt

    from neurosim.events.mqtt import check_run_id, parse_broker_url

    try:
        settings = parse_broker_url(broker, ca_file=mqtt_ca, certfile=mqtt_cert, keyfile=mqtt_key,
                                    tls_insecure=mqtt_insecure)  # fmt: skip
        check_run_id(run_id, wildcard=True)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    try:
        stop_when_offline = run_id != "+" and not keep_waiting
        received, offline = asyncio.run(
            _follow(settings, run_id, count, timeout, as_json, spikes == "full", stop_when_offline)
        )
    except aiomqtt.MqttError as err:
        raise click.ClickException(f"MQTT broker {settings}: {err}") from None
    except KeyboardInterrupt:
        return
    if count is not None and received < count:
        why = f"run {run_id} went offline" if offline else f"{timeout} s passed without one"
        raise click.ClickException(f"{received} of {count} events before {why}")


async def _follow(settings: BrokerSettings, run_id: str, count: int | None, timeout: float | None, as_json: bool,
                  full: bool, stop_when_offline: bool) -> tuple[int, bool]:  # fmt: skip
    """Print events until ``count``, a ``timeout`` without one, or (``stop_when_offline``)
    the run's offline status; returns how many were printed and whether the run went offline."""
    from neurosim.events.mqtt import subscribe as mqtt_subscribe
    from neurosim.events.render import render_event
    from neurosim.events.schema import MalformedEvent, RunState, StatusEvent

    received = 0
    offline = False
    stream = mqtt_subscribe(settings, run_id)
    try:
        while count is None or received < count:
            try:
                event = await asyncio.wait_for(anext(stream), timeout)
            except (TimeoutError, StopAsyncIteration):
                break
            if isinstance(event, MalformedEvent):
                click.echo(f"error: {event}", err=True)
                continue
            click.echo(render_event(event, as_json=as_json, full_spikes=full))
            received += 1
            if (
                stop_when_offline
                and isinstance(event, StatusEvent)
                and event.state is RunState.OFFLINE
                and event.run_id == run_id  # not one of a sweep's runs, when following the sweep
            ):
                offline = True
                break
    finally:
        await stream.aclose()
    return received, offline


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
