"""Events over MQTT against a real mosquitto broker started on a free loopback port."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import EXAMPLES, cuba_config
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from neurosim.build import build_simulation
from neurosim.cli import main
from neurosim.events.broker import LocalBroker
from neurosim.events.bus import EventBus
from neurosim.events.mqtt import Backoff, BrokerURLError, MQTTPublisher, parse_broker_url, subscribe
from neurosim.events.schema import (
    Event,
    MalformedEvent,
    PhaseEvent,
    RunState,
    SpikeBatch,
    StatusEvent,
    event_from_message,
)
from neurosim.events.spikes import SpikeStream
from neurosim.metrics import Metrics, serve_metrics
from neurosim.phases import Phase, PhaseMachine
from neurosim.runner import LiveOptions, run_simulation
from neurosim.sim.monitors import SpikeMonitor

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def broker() -> Iterator[LocalBroker]:
    with LocalBroker() as b:
        yield b


class Reader:
    """Collects a subscriber's events in the background."""

    def __init__(self, url: str, run_id: str) -> None:
        self.url, self.run_id = url, run_id
        self.events: list[Event | MalformedEvent] = []
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        async for event in subscribe(self.url, self.run_id, ready=self.ready):
            self.events.append(event)

    async def __aenter__(self) -> Reader:
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self.ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def wait_for(self, predicate: object, timeout: float = 10.0) -> None:
        async def poll() -> None:
            while not predicate():  # type: ignore[operator]
                await asyncio.sleep(0.01)

        await asyncio.wait_for(poll(), timeout)

    def of(self, kind: type) -> list[object]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
async def registry_metrics() -> AsyncIterator[Metrics]:
    yield Metrics(CollectorRegistry())


async def test_a_late_subscriber_gets_the_current_phase_and_online(broker: LocalBroker) -> None:
    bus: EventBus[Event] = EventBus()
    machine = PhaseMachine(run_id="late", bus=bus, metrics=Metrics(CollectorRegistry()))
    async with MQTTPublisher(broker.url, "late", bus, metrics=Metrics(CollectorRegistry())) as publisher:
        await publisher.wait_connected()
        await machine.start()
        await machine.transition(Phase.LEARNING, task="t0")
        await asyncio.sleep(0.2)  # published before anyone listens
        async with Reader(broker.url, "late") as reader:
            await reader.wait_for(lambda: len(reader.events) >= 2)
            retained = {type(e): e for e in reader.events[:2]}
            phase, status = retained[PhaseEvent], retained[StatusEvent]
            assert isinstance(phase, PhaseEvent) and phase.phase is Phase.LEARNING and phase.task == "t0"
            assert isinstance(status, StatusEvent) and status.state is RunState.ONLINE
    async with Reader(broker.url, "late") as reader:  # after a clean shutdown: offline, clean
        await reader.wait_for(lambda: len(reader.of(StatusEvent)) >= 1)
        (status,) = reader.of(StatusEvent)
        assert isinstance(status, StatusEvent) and status.state is RunState.OFFLINE and status.clean


async def test_spike_batches_over_mqtt_are_exactly_the_recorded_spikes(broker: LocalBroker) -> None:
    metrics = Metrics(CollectorRegistry())
    sim = build_simulation(cuba_config(duration=0.3))
    monitors = {name: sim.add_monitor(SpikeMonitor(name)) for name in ("exc", "inh")}
    bus: EventBus[Event] = EventBus()
    SpikeStream(bus).attach(sim)
    async with Reader(broker.url, "spikes") as reader:
        async with MQTTPublisher(broker.url, "spikes", bus, metrics=metrics) as publisher:
            await publisher.wait_connected()
            await sim.run_async(0.3)
        await reader.wait_for(lambda: any(isinstance(e, StatusEvent) and e.state is RunState.OFFLINE
                                          for e in reader.events))  # fmt: skip
    batches = [e for e in reader.events if isinstance(e, SpikeBatch)]
    chunks = -(-3000 // sim.chunk_steps)
    assert len(batches) == 2 * chunks  # one message per chunk per population, never one per spike
    for name, monitor in monitors.items():
        got = [b for b in batches if b.population == name]
        assert [b.first_step for b in got] == sorted(b.first_step for b in got)
        steps = np.concatenate([b.steps for b in got])
        indices = np.concatenate([b.indices for b in got])
        trains = monitor.trains()
        assert steps.size > 1000
        np.testing.assert_array_equal(indices, trains.indices)
        np.testing.assert_allclose(steps * sim.dt, trains.times, atol=1e-9)
    assert metrics.registry.get_sample_value("neurosim_mqtt_messages_published_total", {"topic": "spikes"}) == len(
        batches
    )
    assert publisher.stats.dropped.total() == 0


async def test_the_run_survives_a_broker_outage_and_the_publisher_reconnects(broker: LocalBroker) -> None:
    metrics = Metrics(CollectorRegistry())
    sim = build_simulation(cuba_config(duration=1.0, chunk_steps=100))
    bus: EventBus[Event] = EventBus()
    SpikeStream(bus, ["exc"]).attach(sim)
    machine = PhaseMachine(run_id="outage", bus=bus, metrics=metrics)
    backoff = Backoff(initial=0.05, maximum=0.2)
    async with MQTTPublisher(broker.url, "outage", bus, metrics=metrics, queue_size=5, backoff=backoff) as publisher:
        await publisher.wait_connected()
        await machine.start()
        await sim.run_async(0.05)
        broker.stop()
        await sim.run_async(0.3)  # 30 chunks while the broker is gone: the queue of 5 overflows
        await machine.transition(Phase.SLEEP)
        for _ in range(500):  # the connection loss is noticed within a few event-loop turns
            if not publisher.connected:
                break
            await asyncio.sleep(0.01)
        assert not publisher.connected
        broker.start()
        await publisher.wait_connected(10)
        reader = await Reader(broker.url, "outage").__aenter__()
        step_after_restart = sim.step
        await sim.run_async(0.2)
    try:  # the publisher has drained its queue: the last chunk reached the restarted broker
        await reader.wait_for(lambda: any(isinstance(e, SpikeBatch) and e.first_step == sim.step - 100
                                          for e in reader.events))  # fmt: skip
        later = [e for e in reader.events if isinstance(e, SpikeBatch) and e.first_step >= step_after_restart]
        assert len(later) >= 5
        # the restarted broker lost its retained messages: the publisher re-announced both
        phases = reader.of(PhaseEvent)
        assert phases and isinstance(phases[0], PhaseEvent) and phases[0].phase is Phase.SLEEP
        assert any(isinstance(e, StatusEvent) and e.state is RunState.ONLINE for e in reader.events)
    finally:
        await reader.__aexit__()
    assert sim.t == pytest.approx(0.55)
    dropped = publisher.stats.dropped
    assert dropped["queue_full"] >= 20
    value = metrics.registry.get_sample_value
    assert value("neurosim_mqtt_messages_dropped_total", {"topic": "spikes", "reason": "queue_full"}) >= 20
    assert value("neurosim_mqtt_reconnects_total") == 1
    assert value("neurosim_mqtt_connected") == 0  # closed


KILLED_PUBLISHER = textwrap.dedent(
    """
    import asyncio, sys
    from neurosim.events.bus import EventBus
    from neurosim.events.mqtt import MQTTPublisher

    async def main():
        async with MQTTPublisher(sys.argv[1], "doomed", EventBus()) as publisher:
            await publisher.wait_connected()
            print("connected", flush=True)
            await asyncio.sleep(60)

    asyncio.run(main())
    """
)


async def test_a_killed_publisher_leaves_offline_through_its_last_will(broker: LocalBroker) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLED_PUBLISHER, broker.url], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line.strip() == "connected"
        async with Reader(broker.url, "doomed") as reader:
            await reader.wait_for(lambda: len(reader.of(StatusEvent)) >= 1)
            first = reader.of(StatusEvent)[0]
            assert isinstance(first, StatusEvent) and first.state is RunState.ONLINE
            os.kill(proc.pid, signal.SIGKILL)  # no DISCONNECT: the broker sends the will
            await reader.wait_for(lambda: len(reader.of(StatusEvent)) >= 2)
            last = reader.of(StatusEvent)[-1]
            assert isinstance(last, StatusEvent) and last.state is RunState.OFFLINE and not last.clean
    finally:
        proc.kill()
        proc.wait()


async def test_malformed_messages_are_reported_one_by_one_and_the_stream_goes_on(broker: LocalBroker) -> None:
    good = PhaseEvent(run_id="bad", sequence=0, phase=Phase.WAKE, previous=None, sim_time_s=0.0, wall_time=0.0)
    async with Reader(broker.url, "bad") as reader:
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.publish("neurosim/bad/spikes/exc", b"NSSP\x01 truncated", qos=1)
            await client.publish("neurosim/bad/phase", b"{not json", qos=1)
            await client.publish("neurosim/bad/metrics", b'{"run_id": "bad"}', qos=1)
            await client.publish("neurosim/bad/nonsense", b"x", qos=1)
            await client.publish("neurosim/bad/phase", good.model_dump_json().encode(), qos=1)
        await reader.wait_for(lambda: len(reader.events) >= 5)
    errors, rest = reader.events[:4], reader.events[4:]
    assert all(isinstance(e, MalformedEvent) for e in errors)
    messages = [str(e) for e in errors]
    assert "neurosim/bad/spikes/exc" in messages[0] and "truncated" in messages[0]
    assert "PhaseEvent" in messages[1] and "EvaluationEvent" in messages[2] and "unknown" in messages[3]
    assert rest == [good]


@given(st.sampled_from(["phase", "status", "metrics", "spikes/exc", "spikes", "x"]), st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_any_payload_on_any_topic_decodes_or_raises_malformed_event(suffix: str, payload: bytes) -> None:
    try:
        event = event_from_message(f"neurosim/r/{suffix}", payload)
    except MalformedEvent as err:
        assert err.topic == f"neurosim/r/{suffix}"
        return
    assert isinstance(event, PhaseEvent | StatusEvent | SpikeBatch) or type(event).__name__ == "EvaluationEvent"


def test_broker_urls() -> None:
    s = parse_broker_url("mqtts://alice:s%40cret@broker.example:9999")
    assert (s.host, s.port, s.tls, s.username, s.password) == ("broker.example", 9999, True, "alice", "s@cret")
    assert "s@cret" not in repr(s) and "s@cret" not in str(s)
    assert parse_broker_url("mqtt://localhost").port == 1883
    assert parse_broker_url("mqtts://localhost").port == 8883
    for bad, why in [("http://x", "scheme"), ("mqtt://", "no host"), ("mqtt://h/topic", "only scheme"),
                     ("mqtt://h:99999", "(?i)port")]:  # fmt: skip
        with pytest.raises(BrokerURLError, match=why):
            parse_broker_url(bad)
    with pytest.raises(BrokerURLError, match="not an mqtts"):
        parse_broker_url("mqtt://h", tls_insecure=True)


async def test_username_and_password_reach_a_broker_that_requires_them(tmp_path: Path) -> None:
    with LocalBroker(username="neuro", password="sim") as locked:
        bus: EventBus[Event] = EventBus()
        async with MQTTPublisher(locked.url, "auth", bus, metrics=Metrics(CollectorRegistry())) as publisher:
            await publisher.wait_connected(10)
        wrong = locked.url.replace(":sim@", ":nope@")
        with pytest.raises(aiomqtt.MqttError):
            async for _ in subscribe(wrong, "auth"):
                break


async def test_tls_with_a_self_signed_broker(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    with LocalBroker(tls_cert=cert, tls_key=key) as secure:
        assert secure.url.startswith("mqtts://")
        settings = parse_broker_url(secure.url, ca_file=cert)
        ready = asyncio.Event()
        events: list[object] = []

        async def read() -> None:
            async for event in subscribe(settings, "tls", ready=ready):
                events.append(event)
                return

        reader = asyncio.create_task(read())
        await asyncio.wait_for(ready.wait(), 10)
        async with MQTTPublisher(settings, "tls", EventBus(), metrics=Metrics(CollectorRegistry())) as publisher:
            await publisher.wait_connected(10)
        await asyncio.wait_for(reader, 10)
        assert isinstance(events[0], StatusEvent) and events[0].run_id == "tls"
        untrusted = parse_broker_url(secure.url)  # the system CAs do not know this certificate
        with pytest.raises(aiomqtt.MqttError):
            async for _ in subscribe(untrusted, "tls"):
                break


def test_metrics_over_http_after_a_short_run(tmp_path: Path, broker: LocalBroker) -> None:
    metrics = Metrics(CollectorRegistry())
    live = LiveOptions(mqtt=parse_broker_url(broker.url), run_id="scrape", metrics=metrics)
    with serve_metrics(0, address="127.0.0.1", registry=metrics.registry) as port:
        run_simulation(cuba_config(duration=0.2), tmp_path / "run", progress=False, live=live)
        plain = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        asyncio.run(PhaseMachine(metrics=metrics).start())
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    # a plain simulation has no phase: it does not claim to be awake
    assert 'neurosim_phase{neurosim_phase="none"} 1.0' in plain and 'neurosim_phase="wake"} 0.0' in plain
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and not line.startswith("#")
    }
    documented = (Path(__file__).parents[1] / "docs" / "metrics.md").read_text()
    for name in ("neurosim_phase", "neurosim_phase_transitions_total", "neurosim_spikes_total",
                 "neurosim_simulated_seconds_total", "neurosim_step_duration_seconds", "neurosim_task_accuracy_ratio",
                 "neurosim_steps_total", "neurosim_chunk_duration_seconds",
                 "neurosim_mqtt_messages_published_total", "neurosim_mqtt_messages_dropped_total",
                 "ewc_fisher_ema_steps_total", "ewc_fisher_snapshot_age_steps", "ewc_fisher_max_delta",
                 "ewc_fisher_staleness_breaches_total"):  # fmt: skip
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
        assert f"`{name}`" in documented, f"{name} is not in docs/metrics.md"
    assert samples['neurosim_spikes_total{population="exc"}'] > 1000
    assert samples["neurosim_simulated_seconds_total"] == pytest.approx(0.2)
    assert samples["neurosim_steps_total"] == 2000 and samples["neurosim_chunk_duration_seconds_count"] == 2
    assert 0 < samples["neurosim_chunk_duration_seconds_sum"] < 10  # wall seconds in the two chunks
    assert 0 < samples["neurosim_step_duration_seconds"] < samples["neurosim_chunk_duration_seconds_sum"] / 1000
    assert samples['neurosim_phase{neurosim_phase="wake"}'] == 1
    assert samples['neurosim_mqtt_messages_published_total{topic="spikes"}'] == 4
    assert samples['neurosim_mqtt_messages_published_total{topic="status"}'] == 2


def test_cli_run_publishes_and_cli_subscribe_prints_json_lines(tmp_path: Path, broker: LocalBroker) -> None:
    runner = CliRunner()
    cfg = Path(__file__).parents[1] / "examples" / "cuba.toml"
    result = runner.invoke(main, ["run", str(cfg), "--duration", "0.1", "--out", str(tmp_path / "out"), "--quiet",
                                  "--mqtt", broker.url, "--run-id", "cli"])  # fmt: skip
    assert result.exit_code == 0, result.output

    async def plant_garbage() -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.publish("neurosim/cli/phase", b"garbage", qos=1, retain=True)

    asyncio.run(plant_garbage())
    result = runner.invoke(main, ["subscribe", "--broker", broker.url, "--run-id", "cli", "--timeout", "1", "--json",
                                  "--keep-waiting"])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 1
    assert {k: lines[0][k] for k in ("type", "run_id", "state", "clean")} == {
        "type": "status", "run_id": "cli", "state": "offline", "clean": True}  # fmt: skip
    assert "malformed message on neurosim/cli/phase" in result.stderr
    result = runner.invoke(main, ["subscribe", "--broker", broker.url, "--run-id", "cli", "--count", "2",
                                  "--timeout", "1"])  # fmt: skip
    assert result.exit_code == 1 and "1 of 2 events before run cli went offline" in result.output
    # the run ended: without --timeout the command ends at its retained offline status
    result = runner.invoke(main, ["subscribe", "--broker", broker.url, "--run-id", "cli"])
    assert result.exit_code == 0 and "offline" in result.output
    t0 = time.perf_counter()
    result = runner.invoke(main, ["subscribe", "--broker", broker.url, "--run-id", "cli", "--timeout", "0.5",
                                  "--keep-waiting"])  # fmt: skip
    assert result.exit_code == 0 and time.perf_counter() - t0 >= 0.5  # waited for more
    result = runner.invoke(main, ["run", str(cfg), "--out", str(tmp_path / "x"), "--run-id", "nope"])
    assert result.exit_code == 2 and "need --mqtt" in result.output


@pytest.mark.parametrize(
    "url",
    ["ftp://ann:s3cret@host", "mqtt://ann:s3cret@host:99999", "mqtt://ann:s3cret@host/topic", "mqtt://ann:s3cret@"],
)
def test_a_bad_broker_url_never_echoes_its_password(url: str) -> None:
    with pytest.raises(BrokerURLError) as info:
        parse_broker_url(url)
    assert "s3cret" not in str(info.value) and "ann:***@" in str(info.value)
    result = CliRunner().invoke(main, ["subscribe", "--broker", url, "--run-id", "r", "--timeout", "0.1"])
    assert result.exit_code != 0 and "s3cret" not in result.output


async def test_refused_credentials_stop_the_command_before_it_runs_and_never_loop(tmp_path: Path) -> None:
    with LocalBroker(username="neuro", password="sim") as locked:
        wrong = locked.url.replace(":sim@", ":nope@")
        out = tmp_path / "out"
        res = await asyncio.to_thread(CliRunner().invoke, main, ["run", str(EXAMPLES / "cuba.toml"), "--out", str(out),
                                      "--duration", "0.05", "--quiet", "--mqtt", wrong])  # fmt: skip
        assert res.exit_code == 1 and "refused the connection" in res.output and "nope" not in res.output
        assert not out.exists()  # refused before anything ran
        # a library user's publisher gives up at once instead of retrying forever, and counts what it drops
        bus: EventBus[Event] = EventBus()
        async with MQTTPublisher(wrong, "auth", bus, metrics=Metrics(CollectorRegistry())) as publisher:
            for _ in range(50):
                if publisher.stats.refused:
                    break
                await asyncio.sleep(0.05)
            bus.publish(StatusEvent(run_id="auth", state=RunState.ONLINE))
        assert publisher.stats.refused and publisher.stats.connections == 0
    # an unreachable broker is an outage, not a configuration error: the run goes on
    out = tmp_path / "outage"
    res = await asyncio.to_thread(CliRunner().invoke, main, ["run", str(EXAMPLES / "cuba.toml"), "--out", str(out),
                                  "--duration", "0.05", "--quiet", "--mqtt", "mqtt://127.0.0.1:1"])  # fmt: skip
    assert res.exit_code == 0 and "unreachable now" in res.output


async def test_a_failing_publisher_never_fails_the_run(broker: LocalBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    import struct

    async def broken_pump(self: MQTTPublisher, client: object) -> None:
        raise struct.error("'H' format requires 0 <= number <= 65535")  # as a 70,000-byte topic once did

    monkeypatch.setattr(MQTTPublisher, "_pump", broken_pump)
    sim = build_simulation(cuba_config(duration=0.05))
    bus: EventBus[Event] = EventBus()
    SpikeStream(bus, ["exc"]).attach(sim)
    async with MQTTPublisher(broker.url, "broken", bus, metrics=Metrics(CollectorRegistry())) as publisher:
        await sim.run_async(0.05)  # the run goes on while (and after) its publisher fails
    assert sim.t == pytest.approx(0.05)
    assert publisher.stats.crashed
    assert publisher.stats.last_error is not None and "65535" in publisher.stats.last_error
