"""Live spike streaming over MQTT: end-to-end throughput, and what publishing costs a run.

1. Spikes per second end to end, for batches of 100 to 100,000 spikes: the publisher side
   (``SpikeBatch`` on the run's ``EventBus`` -> ``MQTTPublisher``: encode, MQTT v5 publish)
   to a local mosquitto, and a subscriber in another process (``neurosim.events.mqtt.subscribe``:
   receive, decode to arrays). Timed from the first publish to the last spike decoded
   (``time.monotonic`` is system-wide, so the two processes share a clock). The peer is
   what one writes without a wire format: the same spikes as a JSON object per message
   (``{"steps": [...], "indices": [...]}``) over plain aiomqtt, parsed back into numpy arrays.
2. CUBA (Vogels & Abbott 2005; N = 4000, 1 s) on the compiled path with publishing off
   (``sim.run``) and on (``SpikeStream`` + ``MQTTPublisher`` to mosquitto, a subscriber
   process reading everything): the slowdown of the simulation, and the drain at the end.
3. Phase events while the main job learns: ``examples/continual_digits.toml`` (no control
   run) published live, a subscriber process noting when each ``PhaseEvent`` arrives; the
   delay from the phase change (the event's ``wall_time``) to its arrival, over every
   transition of ``--latency-runs`` runs (target: p99 within 0.1 s).

Writes ``benchmarks/results/mqtt.md``. Needs Debian's mosquitto.

    .venv/bin/python benchmarks/bench_mqtt.py [--sizes 100 1000 10000 100000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import aiomqtt
import numpy as np
import torch
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cuba_config, machine_description
from neurosim.build import build_network
from neurosim.events.broker import LocalBroker
from neurosim.events.bus import EventBus
from neurosim.events.mqtt import MQTTPublisher
from neurosim.events.schema import Event, SpikeBatch
from neurosim.events.spikes import SpikeStream
from neurosim.metrics import Metrics
from neurosim.sim import Simulation

RESULTS = Path(__file__).resolve().parent / "results"

# The subscriber process: counts the spikes it decodes, reports when it has them all.
SUBSCRIBER = """
import asyncio, json, sys, time
import numpy as np
from neurosim.events.mqtt import subscribe
from neurosim.events.schema import SpikeBatch

url, run_id, expected, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

async def neurosim_format():
    ready = asyncio.Event()

    async def consume():
        got = 0
        async for event in subscribe(url, run_id, ready=ready):
            if isinstance(event, SpikeBatch):
                got += event.indices.size
                if got >= expected:
                    return got

    task = asyncio.create_task(consume())
    await ready.wait()
    print("ready", flush=True)
    return await task

async def json_format():
    import aiomqtt
    host, port = url.split("//")[1].split(":")
    got = 0
    async with aiomqtt.Client(host, int(port)) as client:
        await client.subscribe(f"bench/{run_id}/#")
        print("ready", flush=True)
        async for message in client.messages:
            body = json.loads(message.payload)
            steps, indices = np.asarray(body["steps"], np.int64), np.asarray(body["indices"], np.int64)
            got += indices.size
            if got >= expected:
                return got

async def main():
    if mode == "neurosim":
        got = await neurosim_format()
    else:
        got = await json_format()
    print(f"done {time.monotonic()} {got}", flush=True)

asyncio.run(main())
"""


def start_subscriber(url: str, run_id: str, expected: int, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SUBSCRIBER, url, run_id, str(expected), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"subscriber did not start: {line!r}")
    return proc


def finish_subscriber(proc: subprocess.Popen[str], timeout: float = 120.0) -> tuple[float, int]:
    out, _ = proc.communicate(timeout=timeout)
    _, t_done, got = out.strip().splitlines()[-1].split()
    return float(t_done), int(got)


def synthetic_batch(n_spikes: int, first_step: int, rng: np.random.Generator) -> SpikeBatch:
    n_steps = 1000
    steps = first_step + np.sort(rng.integers(0, n_steps, n_spikes))
    return SpikeBatch("exc", first_step, 1e-4, n_steps, steps, rng.integers(0, 4000, n_spikes))


def messages_for(size: int) -> int:
    return int(min(5000, max(50, 3_000_000 // size)))


async def throughput_neurosim(url: str, size: int) -> tuple[float, int, int]:
    """Spikes per second end to end through MQTTPublisher and subscribe(); (rate, received, dropped)."""
    rng = np.random.default_rng(size)
    n_messages = messages_for(size)
    batches = [synthetic_batch(size, k * 1000, rng) for k in range(n_messages)]
    expected = size * n_messages
    proc = start_subscriber(url, f"tp{size}", expected, "neurosim")
    bus: EventBus[Event] = EventBus()
    metrics = Metrics(CollectorRegistry())
    async with MQTTPublisher(url, f"tp{size}", bus, queue_size=n_messages + 10, metrics=metrics) as publisher:
        await publisher.wait_connected()
        t0 = time.monotonic()
        for batch in batches:
            bus.publish(batch)
            await asyncio.sleep(0)
    t_done, got = await asyncio.to_thread(finish_subscriber, proc)
    return got / (t_done - t0), got, sum(publisher.stats.dropped.values())


async def throughput_json(url: str, size: int, port: int) -> float:
    rng = np.random.default_rng(size)
    n_messages = messages_for(size)
    batches = [synthetic_batch(size, k * 1000, rng) for k in range(n_messages)]
    expected = size * n_messages
    proc = start_subscriber(f"mqtt://127.0.0.1:{port}", f"js{size}", expected, "json")
    async with aiomqtt.Client("127.0.0.1", port) as client:
        t0 = time.monotonic()
        for batch in batches:
            body = json.dumps({"steps": batch.steps.tolist(), "indices": batch.indices.tolist()})
            await client.publish(f"bench/js{size}/spikes/exc", body.encode())
    t_done, got = await asyncio.to_thread(finish_subscriber, proc)
    return got / (t_done - t0)


def cuba_sim() -> Simulation:
    net = build_network(cuba_config(4000))
    sim = Simulation(net, dt=1e-4, seed=1)
    sim.run(0.01)  # compile and warm up
    return sim


def cuba_off() -> tuple[float, int]:
    sim = cuba_sim()
    cuba_sim().run(1.0)  # the same work as cuba_on's probe run beforehand
    t0 = time.perf_counter()
    stats = sim.run(1.0)
    return time.perf_counter() - t0, sum(stats.spikes.values())


async def cuba_on(url: str, repeat: int, *, subscriber: bool) -> tuple[float, float, int, int]:
    """(simulation wall, wall including the publisher's drain, spikes received, messages dropped)."""
    sim = cuba_sim()
    bus: EventBus[Event] = EventBus()
    SpikeStream(bus).attach(sim)
    run_id = f"cuba{repeat}{subscriber}"
    probe = cuba_sim()  # the same seed: the same spikes, so the subscriber knows when it has them all
    spikes_expected = sum(probe.run(1.0).spikes.values())
    proc = start_subscriber(url, run_id, spikes_expected, "neurosim") if subscriber else None
    metrics = Metrics(CollectorRegistry())
    async with MQTTPublisher(url, run_id, bus, metrics=metrics) as publisher:
        await publisher.wait_connected()
        t0 = time.perf_counter()
        await sim.run_async(1.0)
        sim_wall = time.perf_counter() - t0
    total_wall = time.perf_counter() - t0
    got = (await asyncio.to_thread(finish_subscriber, proc))[1] if proc else publisher.stats.published["spikes"]
    return sim_wall, total_wall, got, sum(publisher.stats.dropped.values())


async def run(args: argparse.Namespace) -> str:
    with LocalBroker() as broker:
        rows: list[str] = []
        for size in args.sizes:
            results = [await throughput_neurosim(broker.url, size) for _ in range(args.repeats)]
            rate, _got, dropped = max(results, key=lambda r: r[0])
            json_rate = max([await throughput_json(broker.url, size, broker.port) for _ in range(args.repeats)])
            rows.append(
                f"| {size:,} | {messages_for(size):,} | {rate / 1e6:.2f} | {json_rate / 1e6:.3f} | "
                f"{rate / json_rate:.1f}x | {dropped} |"
            )
            print(rows[-1], flush=True)

        offs, alone, watched = [], [], []
        for k in range(args.repeats):  # interleaved, so all three see the same machine state
            offs.append(cuba_off())
            alone.append(await cuba_on(broker.url, k, subscriber=False))
            watched.append(await cuba_on(broker.url, k, subscriber=True))
        off_wall = float(np.median([w for w, _ in offs]))
        spikes = offs[0][1]

        def row(label: str, runs: list[tuple[float, float, int, int]], received: str) -> str:
            sim_wall = float(np.median([r[0] for r in runs]))
            total = float(np.median([r[1] for r in runs]))
            dropped = max(r[3] for r in runs)
            return (
                f"| {label} | {sim_wall:.4f} | {total:.4f} | {(sim_wall / off_wall - 1) * 100:+.1f}% | "
                f"{received.format(runs[0][2])}, {dropped} dropped |"
            )

        cuba = "\n".join([
            f"| off (`sim.run`) | {off_wall:.4f} | | | {spikes:,} spikes |",
            row("on, nobody subscribed", alone, "{:,} messages published"),
            row("on, a subscriber process on the same 2 cores", watched, "{:,} spikes received"),
        ])  # fmt: skip
        print(cuba, flush=True)
        latency = await asyncio.to_thread(latency_section, broker.url, args.latency_runs)  # runs its own loops
        print(latency, flush=True)

    return f"""# MQTT streaming benchmark

Machine: {machine_description()}. mosquitto {mosquitto_version()}, aiomqtt {aiomqtt.__version__},
torch {torch.__version__}, numpy {np.__version__}, Python {platform.python_version()}.
Command: `python benchmarks/bench_mqtt.py {" ".join(sys.argv[1:])}`. Throughput: best of {args.repeats}.
Publisher, broker and subscriber each in their own process, on the same machine (loopback).

## End-to-end throughput

Spike batches put on the run's event bus, published by `MQTTPublisher` (binary format v1,
QoS 0), received and decoded to numpy arrays by `neurosim.events.mqtt.subscribe` in another
process. The peer: the same spikes as JSON (`{{"steps": [...], "indices": [...]}}`) over
plain aiomqtt, parsed back into arrays.

| spikes per batch | messages | neurosim (M spikes/s) | JSON peer (M spikes/s) | neurosim / JSON | dropped |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Target: at least 1,000,000 spikes/s end to end.

## What publishing costs a run: CUBA, N = 4000, 1 s, compiled path

One message per population per chunk of 1000 steps (20 messages, about 22,000 spikes),
published to the local mosquitto: once with nobody subscribed (the cost of publishing), and
once with a subscriber process decoding everything on the same machine (which then also
competes with the simulation for the two cores). Medians of {args.repeats} interleaved runs.

| publishing | simulation wall (s) | with the final drain (s) | slowdown of the simulation | messages |
|---|---|---|---|---|
{cuba}

Target: at most 10% slowdown.

## Phase events while the main job learns

The main job (`examples/continual_digits.toml`, without its control run; seeds 0 to
{args.latency_runs - 1}) publishing live to the local mosquitto, a subscriber process noting
when each `PhaseEvent` arrives. Delay: from the phase change (the event's `wall_time`, set
once the exit listeners are done) to its arrival, in ms. After each chunk the engine gives
the event loop a few turns, and after each transition the phase machine lets its bus's
subscribers take and send the event before the phase's work starts.

| events | n | median (ms) | p99 (ms) | max (ms) |
|---|---|---|---|---|
{latency}

Target: p99 within 100 ms during LEARNING.
"""


# The phase-latency subscriber: one JSON line per phase event, with its delay.
PHASE_SUBSCRIBER = """
import asyncio, json, sys, time
from neurosim.events.mqtt import subscribe
from neurosim.events.schema import PhaseEvent, RunState, StatusEvent

async def main():
    ready = asyncio.Event()

    async def consume():
        async for event in subscribe(sys.argv[1], sys.argv[2], ready=ready):
            if isinstance(event, PhaseEvent):
                print(json.dumps({"phase": event.phase.value, "delay": time.time() - event.wall_time}), flush=True)
            if isinstance(event, StatusEvent) and event.state is RunState.OFFLINE:
                return

    task = asyncio.create_task(consume())
    await ready.wait()
    print("ready", flush=True)
    await task

asyncio.run(main())
"""


def phase_delays(url: str, run: int) -> list[tuple[str, float]]:
    """Run the main job once with live publishing; every phase event's (phase, delay)."""
    import tempfile

    from neurosim.config import ContinualConfig, load_any_config
    from neurosim.events.mqtt import parse_broker_url
    from neurosim.phases.schedule import run_experiment

    cfg = load_any_config(Path(__file__).resolve().parents[1] / "examples" / "continual_digits.toml")
    assert isinstance(cfg, ContinualConfig)
    run_id = f"latency-{run}"
    proc = subprocess.Popen([sys.executable, "-c", PHASE_SUBSCRIBER, url, run_id], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("phase subscriber did not start")
    with tempfile.TemporaryDirectory() as tmp:
        run_experiment(cfg.model_copy(update={"control": False, "seed": run}), Path(tmp), progress=False,
                       run_id=run_id, mqtt=parse_broker_url(url))  # fmt: skip
    out, _ = proc.communicate(timeout=60)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [(r["phase"], float(r["delay"])) for r in rows]


def latency_section(url: str, runs: int) -> str:
    delays = [d for run in range(runs) for d in phase_delays(url, run)]
    by_phase: dict[str, list[float]] = {}
    for phase, delay in delays:
        by_phase.setdefault(phase, []).append(delay)

    def row(label: str, values: list[float]) -> str:
        ms = np.asarray(values) * 1e3
        return (f"| {label} | {ms.size} | {np.median(ms):.1f} | {np.percentile(ms, 99):.1f} | "
                f"{ms.max():.1f} |")  # fmt: skip

    rows = [row("every transition", [d for _, d in delays])]
    rows += [row(f"into {phase.upper()}", values) for phase, values in sorted(by_phase.items())]
    return "\n".join(rows)


def mosquitto_version() -> str:
    from neurosim.events.broker import _executable

    out = subprocess.run([_executable("mosquitto"), "-h"], check=False, capture_output=True, text=True).stdout
    return out.splitlines()[0].split("version")[-1].strip() if out else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "mqtt.md")
    parser.add_argument("--latency-runs", type=int, default=5, help="main-job runs for the phase-latency table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    text = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
