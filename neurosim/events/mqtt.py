"""Events over MQTT (v5, with ``aiomqtt``): the run's publisher and a typed subscriber.

Topics (``docs/events.md`` is the reference)::

    neurosim/{run_id}/phase                 PhaseEvent JSON       QoS 1, retained
    neurosim/{run_id}/status                StatusEvent JSON      QoS 1, retained, and the Last Will
    neurosim/{run_id}/spikes/{population}   binary spike batch    QoS 0, one message per chunk
    neurosim/{run_id}/metrics               EvaluationEvent JSON  QoS 1
    neurosim/{run_id}/sleep                 SleepEvent JSON       QoS 1
    neurosim/{run_id}/drift                 DriftEvent JSON       QoS 1 (task-free runs)
    neurosim/{sweep_id}/sweep               SweepEvent JSON       QoS 1, retained (a sweep's progress)

A sweep's runs publish under ``neurosim/{sweep_id}/{setting}/{seed}/...``: a run id may
have several levels.

``MQTTPublisher`` subscribes to the run's in-process ``EventBus`` with a bounded queue and
forwards what arrives. It never slows the run down to wait for the broker: when the broker
is slow or down, the queue fills and the overflow is dropped and counted
(``neurosim_mqtt_messages_dropped_total{reason="queue_full"}``); a message the connection
fails under is counted with ``reason="disconnected"``; the publisher reconnects with
exponential backoff and carries on with what is queued.

Broker URLs: ``mqtt://[user[:password]@]host[:port]`` (default port 1883) or ``mqtts://``
for TLS (default port 8883). A user without a password in the URL takes it from the
``NEUROSIM_MQTT_PASSWORD`` environment variable, so it need not appear in a process list.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
import time
import urllib.parse
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import neurosim
from neurosim.events.bus import EventBus, Subscription
from neurosim.events.schema import (
    JSON_CONTENT_TYPE,
    SPIKES_CONTENT_TYPE,
    DriftEvent,
    Event,
    MalformedEvent,
    PhaseEvent,
    RunState,
    SleepEvent,
    StatusEvent,
    SweepEvent,
    Topic,
    event_from_message,
    payload_of,
    topic_of,
)
from neurosim.events.wire import SpikeBatch
from neurosim.metrics import METRICS, Metrics

log = logging.getLogger(__name__)
# aiomqtt warns on every publish once more than 10 wait for their socket write, which the
# pipelined spike batches do by design (up to ``max_in_flight``); keep its errors only.
_aiomqtt_log = logging.getLogger(f"{__name__}.aiomqtt")
_aiomqtt_log.setLevel(logging.ERROR)
T = TypeVar("T")

PASSWORD_ENV = "NEUROSIM_MQTT_PASSWORD"
_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_FORBIDDEN_IN_RUN_ID = set("+#\0")
MAX_RUN_ID_BYTES = 256  # topics stay far below MQTT's 65,535-byte limit


class BrokerURLError(ValueError):
    """A broker URL neurosim cannot use."""


@dataclass(frozen=True)
class BrokerSettings:
    """Where and how to connect. Build one with ``parse_broker_url``."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None  # TLS: the CA bundle that signed the broker (default: the system's)
    certfile: Path | None = None  # TLS client certificate, if the broker asks for one
    keyfile: Path | None = None
    tls_insecure: bool = False  # TLS without checking the broker's host name (self-signed test brokers)
    keepalive: int = 15

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def redact_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``."""
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


def parse_broker_url(
    url: str,
    *,
    ca_file: str | Path | None = None,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
    tls_insecure: bool = False,
) -> BrokerSettings:
    """``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...``; TLS files are options.
    Error messages show the URL with its password replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    url = redact_url(url)  # from here on only for messages
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise BrokerURLError(f"broker URL {url!r}: the scheme must be mqtt:// or mqtts://, got {parts.scheme!r}")
    if not parts.hostname:
        raise BrokerURLError(f"broker URL {url!r} names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BrokerURLError(f"broker URL {url!r}: only scheme, user, password, host and port are understood")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as err:
        raise BrokerURLError(f"broker URL {url!r}: {err}") from None
    tls = scheme == "mqtts"
    if not tls and (ca_file or certfile or keyfile or tls_insecure):
        raise BrokerURLError(f"TLS options given for {url!r}, which is not an mqtts:// URL")
    for name, path in (("CA file", ca_file), ("certificate", certfile), ("key file", keyfile)):
        if path is not None and not Path(path).is_file():
            raise BrokerURLError(f"TLS {name} {path} does not exist")
    username = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    if username and password is None:
        password = os.environ.get(PASSWORD_ENV)
    return BrokerSettings(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=username,
        password=password,
        ca_file=Path(ca_file) if ca_file else None,
        certfile=Path(certfile) if certfile else None,
        keyfile=Path(keyfile) if keyfile else None,
        tls_insecure=tls_insecure,
    )


def check_run_id(run_id: str, *, wildcard: bool = False) -> str:
    """A run id is one or more topic levels joined by ``/`` (a sweep's runs are
    ``{sweep_id}/{setting}/{seed}``): each level non-empty and without ``+``, ``#`` or NUL;
    a level after the first may not be ``spikes`` (the topic would read as a spike batch's);
    at most 256 bytes, printable, without spaces. With ``wildcard``, a level may be ``+`` (any
    one level)."""
    if len(run_id.encode("utf-8")) > MAX_RUN_ID_BYTES:
        raise ValueError(f"run id of {len(run_id.encode('utf-8'))} bytes: at most {MAX_RUN_ID_BYTES}")
    if any(not ch.isprintable() or ch.isspace() for ch in run_id):
        raise ValueError(f"run id {run_id!r}: no spaces or control characters")
    for depth, level in enumerate(run_id.split("/")):
        if wildcard and level == "+":
            continue
        if not level or _FORBIDDEN_IN_RUN_ID & set(level):
            raise ValueError(f"run id {run_id!r}: every /-separated level must be non-empty, without '+', '#', NUL")
        if depth > 0 and level == Topic.SPIKES:
            raise ValueError(f"run id {run_id!r}: a level after the first may not be {Topic.SPIKES.value!r}")
    return run_id


# CONNACK reason codes that no retry will change: MQTT v5 0x86 bad user name or password,
# 0x87 not authorized, 0x8C bad authentication method; v3.1.1 codes 4 and 5
_REFUSALS = {0x86, 0x87, 0x8C, 4, 5}


class BrokerRefused(ValueError):
    """The broker refused the connection (credentials or authorisation): a configuration
    error to fix, not an outage to wait out."""


def refusal(err: BaseException) -> bool:
    """Whether ``err`` is the broker refusing these credentials (not a network problem)."""
    if not isinstance(err, aiomqtt.MqttCodeError):
        return False
    code = getattr(err.rc, "value", err.rc)
    return isinstance(code, int) and code in _REFUSALS


async def check_broker(settings: BrokerSettings, timeout: float = 10.0) -> str | None:
    """Connect once and disconnect, before a run starts. Raises ``BrokerRefused`` if the
    broker refuses the credentials; returns None when connected, or the reason it could not
    connect otherwise (an outage: the run can go on and the publisher keeps retrying)."""

    async def attempt() -> None:
        async with _client(settings, identifier=None):
            return

    try:
        await asyncio.wait_for(attempt(), timeout)
        return None
    except aiomqtt.MqttError as err:
        if refusal(err):
            raise BrokerRefused(f"MQTT broker {settings} refused the connection: {err} (check the user name, "
                                "password and the broker's access rules)") from None  # fmt: skip
        return str(err)
    except TimeoutError:
        return f"no answer within {timeout:g} s"


async def within(awaitable: Awaitable[T], timeout: float, what: str) -> T:
    """Await with a deadline; a timeout is raised as ``aiomqtt.MqttError``, like the library's own."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise aiomqtt.MqttError(f"{what}: no answer within {timeout:g} s") from None


def _properties(packet: int, content_type: str) -> Properties:
    props = Properties(packet)  # type: ignore[no-untyped-call]  # paho leaves __init__ unannotated
    props.ContentType = content_type
    if content_type == JSON_CONTENT_TYPE:
        props.PayloadFormatIndicator = 1  # UTF-8 text
    return props


def _client(
    settings: BrokerSettings, *, will: aiomqtt.Will | None = None, identifier: str | None = None
) -> aiomqtt.Client:
    tls_params = None
    if settings.tls:
        tls_params = aiomqtt.TLSParameters(
            ca_certs=str(settings.ca_file) if settings.ca_file else None,
            certfile=str(settings.certfile) if settings.certfile else None,
            keyfile=str(settings.keyfile) if settings.keyfile else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    return aiomqtt.Client(
        settings.host,
        settings.port,
        logger=_aiomqtt_log,
        username=settings.username,
        password=settings.password,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        will=will,
        keepalive=settings.keepalive,
        tls_params=tls_params,
        tls_insecure=settings.tls_insecure if settings.tls else None,
        timeout=10.0,
    )


def _disconnection(client: aiomqtt.Client) -> asyncio.Future[None]:
    """The future aiomqtt resolves when the connection ends (aiomqtt 2.x has no public one)."""
    lost: asyncio.Future[None] = client._disconnected
    return lost


def _raise_if_lost(lost: asyncio.Future[None]) -> None:
    if lost.done():
        cause = lost.exception()  # retrieving it also keeps asyncio from logging it as never retrieved
        raise aiomqtt.MqttError(f"connection lost: {cause or 'disconnected'}")


@dataclass(frozen=True)
class Backoff:
    """Reconnection delays: ``initial``, then times ``factor`` after each failure, at most ``maximum``."""

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.maximum) or self.factor < 1:
            raise ValueError(f"need 0 < initial <= maximum and factor >= 1, got {self}")


@dataclass
class PublisherStats:
    """What a publisher has done: messages published (by topic kind) and dropped (by reason), connections,
    the last error, and whether it gave up (credentials refused) or failed."""

    published: Counter[str] = field(default_factory=Counter)  # by topic kind
    dropped: Counter[str] = field(default_factory=Counter)  # by reason
    connections: int = 0
    last_error: str | None = None
    refused: bool = False  # the broker refused the credentials: the publisher gave up
    crashed: bool = False  # the publisher failed (an error of its own, logged): nothing more was sent


_QOS_RETAIN: dict[Topic, tuple[int, bool]] = {
    Topic.PHASE: (1, True),
    Topic.STATUS: (1, True),
    Topic.SPIKES: (0, False),
    Topic.METRICS: (1, False),
    Topic.SLEEP: (1, False),
    Topic.DRIFT: (1, False),
    Topic.SWEEP: (1, True),
}


_KINDS: dict[type, Topic] = {
    PhaseEvent: Topic.PHASE,
    StatusEvent: Topic.STATUS,
    SpikeBatch: Topic.SPIKES,
    SleepEvent: Topic.SLEEP,
    DriftEvent: Topic.DRIFT,
    SweepEvent: Topic.SWEEP,
}


def _kind(event: Event) -> Topic:
    return _KINDS.get(type(event), Topic.METRICS)


class MQTTPublisher:
    """Publishes a run's events from ``bus`` to an MQTT broker; use as ``async with``.

    Entering subscribes to the bus and starts connecting in the background (the run does not
    wait for the broker; ``wait_connected()`` does). Leaving sends what is queued (up to
    ``drain_timeout`` seconds while connected), publishes ``offline`` and disconnects cleanly.
    """

    def __init__(
        self,
        broker: str | BrokerSettings,
        run_id: str,
        bus: EventBus[Event],
        *,
        queue_size: int = 1000,
        metrics: Metrics | None = None,
        backoff: Backoff | None = None,
        drain_timeout: float = 10.0,
        publish_timeout: float = 5.0,
        identifier: str | None = None,
        max_in_flight: int = 16,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.settings = broker if isinstance(broker, BrokerSettings) else parse_broker_url(broker)
        self.run_id = check_run_id(run_id)
        self.bus = bus
        self.queue_size = queue_size
        self.metrics = metrics if metrics is not None else METRICS
        self.backoff = backoff or Backoff()
        self.drain_timeout = drain_timeout
        self.publish_timeout = publish_timeout
        self.identifier = identifier
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self._published_total = {kind: self.metrics.mqtt_published.labels(topic=kind.value) for kind in Topic}
        self.stats = PublisherStats()
        self._sub: Subscription[Event] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._abandon = False
        self._connected = asyncio.Event()
        # The current phase must reach the broker even when its message was dropped: the newest
        # phase event seen is re-published after a reconnect, or as soon as the queue lets it.
        self._phase_sent: PhaseEvent | None = None
        self._phase_dropped: PhaseEvent | None = None
        self._properties = {
            ctype: _properties(PacketTypes.PUBLISH, ctype) for ctype in (JSON_CONTENT_TYPE, SPIKES_CONTENT_TYPE)
        }

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        if self._task is not None:
            raise RuntimeError("an MQTTPublisher runs once; create a new one")
        self._sub = self.bus.subscribe(self.queue_size, on_drop=lambda event: self._drop(event, "queue_full"))
        self._task = asyncio.create_task(self._serve(), name=f"neurosim-mqtt-{self.run_id}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """Whether the publisher is connected to the broker now."""
        return self._connected.is_set()

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until the publisher is connected and has announced ``online``."""
        await within(self._connected.wait(), timeout, f"connecting to {self.settings}")

    async def ready(self, timeout: float = 2.0) -> bool:
        """Give the connection up to ``timeout`` s before a run starts, so that its first
        events are not held up by the connection itself; False if it is not up by then
        (an outage: the run goes on, and the publisher keeps trying)."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop taking events, send what is queued (up to ``drain_timeout``), publish ``offline`` and disconnect."""
        if self._task is None or self._sub is None:
            return
        self._sub.close()  # nothing new enters; what is queued is still sent
        self._stopping.set()
        try:  # asyncio.wait: the task's own failure is looked at below, not raised here
            done, _ = await asyncio.wait({self._task}, timeout=self.drain_timeout)
            if not done:
                self._abandon = True  # stop draining, announce offline, disconnect
                done, _ = await asyncio.wait({self._task}, timeout=self.publish_timeout + 1.0)
                if not done:
                    self._task.cancel()
        finally:
            if not self._task.done():
                await asyncio.gather(self._task, return_exceptions=True)
            self._drop_pending("disconnected")
            self.metrics.mqtt_connected.set(0)
        if self._task.cancelled():
            return
        error = self._task.exception()
        if error is not None:  # a publisher's failure is reported, never the run's
            self.stats.crashed = True
            self.stats.last_error = f"{type(error).__name__}: {error}"
            log.error("the MQTT publisher of run %s failed; the run itself is not affected", self.run_id,
                      exc_info=error)  # fmt: skip

    # ------------------------------------------------------------------ the connection loop
    def _will(self) -> aiomqtt.Will:
        gone = StatusEvent(
            run_id=self.run_id, state=RunState.OFFLINE, clean=False, neurosim_version=neurosim.__version__
        )
        return aiomqtt.Will(
            topic_of(self.run_id, gone),
            gone.model_dump_json().encode(),
            qos=1,
            retain=True,
            properties=_properties(PacketTypes.WILLMESSAGE, JSON_CONTENT_TYPE),
        )

    def _status(self, state: RunState) -> StatusEvent:
        return StatusEvent(
            run_id=self.run_id, state=state, wall_time=time.time(), neurosim_version=neurosim.__version__
        )

    async def _serve(self) -> None:
        delay = self.backoff.initial
        while True:
            try:
                async with _client(self.settings, will=self._will(), identifier=self.identifier) as client:
                    if self.stats.connections:
                        self.metrics.mqtt_reconnects.inc()
                    self.stats.connections += 1
                    await self._send(client, self._status(RunState.ONLINE))
                    if self.stats.connections > 1 and self._phase_sent is not None:
                        self._phase_dropped = self._newest_phase()
                    await self._announce_dropped_phase(client)
                    self._connected.set()
                    self.metrics.mqtt_connected.set(1)
                    delay = self.backoff.initial
                    log.info("publishing run %s to %s", self.run_id, self.settings)
                    await self._pump(client)
                    await self._send(client, self._status(RunState.OFFLINE))
                    self._connected.clear()
                    return
            except aiomqtt.MqttError as err:
                self._connected.clear()
                self.metrics.mqtt_connected.set(0)
                self.stats.last_error = str(err)
                if refusal(err):  # retrying cannot help: stop, and let the run go on without the broker
                    log.error("MQTT broker %s refused run %s: %s; nothing will be published", self.settings,
                              self.run_id, err)  # fmt: skip
                    self.stats.refused = True
                    self._discard_queued()
                    return
                if self._stopping.is_set():
                    log.warning("MQTT broker %s unavailable while closing (%s)", self.settings, err)
                    return
                log.warning("MQTT broker %s unavailable (%s); retrying in %.1f s", self.settings, err, delay)
                try:  # sleep the backoff, or less if the run ends meanwhile
                    await asyncio.wait_for(self._stopping.wait(), delay)
                    return
                except TimeoutError:
                    pass
                delay = min(delay * self.backoff.factor, self.backoff.maximum)

    async def _pump(self, client: aiomqtt.Client) -> None:
        """Send queued events until closing and drained (or abandoned).

        QoS 0 messages (spike batches) are pipelined: up to ``max_in_flight`` publishes wait
        for their socket write at once, so one event-loop turn flushes many of them. A QoS 1
        message first waits for those in flight, so every topic keeps the order of the bus.
        """
        assert self._sub is not None
        stop_waiter = asyncio.ensure_future(self._stopping.wait())
        lost = _disconnection(client)
        in_flight: dict[asyncio.Future[None], Event] = {}
        try:
            while True:
                if self._abandon:
                    return
                _raise_if_lost(lost)  # a busy queue must not hide a lost connection
                try:
                    event = self._sub.get_nowait()
                except asyncio.QueueEmpty:
                    if self._stopping.is_set():
                        await self._settle(in_flight, everything=True)
                        return
                    getter = asyncio.ensure_future(self._sub.get())
                    waiters: set[asyncio.Future[Any]] = {getter, stop_waiter, lost, *in_flight}
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    await self._settle(in_flight, everything=False)
                    if not getter.done():
                        getter.cancel()
                        _raise_if_lost(lost)
                        continue
                    event = getter.result()
                if _QOS_RETAIN[_kind(event)][0] == 0:
                    in_flight[asyncio.ensure_future(self._send(client, event))] = event
                    if len(in_flight) >= self.max_in_flight:
                        await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                        await self._settle(in_flight, everything=False)
                else:
                    await self._settle(in_flight, everything=True)
                    await self._send(client, event)
                await self._announce_dropped_phase(client)
        finally:
            stop_waiter.cancel()
            for task, event in in_flight.items():  # the connection failed under them
                if task.cancel():
                    self._drop(event, "disconnected")
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def _settle(self, in_flight: dict[asyncio.Future[None], Event], *, everything: bool) -> None:
        """Forget finished publishes (all of them, once they finish, with ``everything``); raise the first error."""
        if everything and in_flight:
            await asyncio.wait(in_flight)
        error: BaseException | None = None
        for task in [t for t in in_flight if t.done()]:
            del in_flight[task]
            failure = task.exception()  # a failed publish counted its drop already
            error = error or failure
        if error is not None:
            raise error

    def _newest_phase(self) -> PhaseEvent | None:
        candidates = [e for e in (self._phase_sent, self._phase_dropped) if e is not None]
        return max(candidates, key=lambda e: e.sequence, default=None)

    async def _announce_dropped_phase(self, client: aiomqtt.Client) -> None:
        dropped = self._phase_dropped
        if dropped is not None and (self._phase_sent is None or dropped.sequence >= self._phase_sent.sequence):
            self._phase_dropped = None
            await self._send(client, dropped)

    async def _send(self, client: aiomqtt.Client, event: Event) -> None:
        kind = _kind(event)
        qos, retain = _QOS_RETAIN[kind]
        payload, content_type = payload_of(event)
        publishing = client.publish(
            topic_of(self.run_id, event),
            payload,
            qos=qos,
            retain=retain,
            properties=self._properties[content_type],
            timeout=self.publish_timeout,
        )
        try:
            if qos == 0:  # confirmed once written to the socket
                await publishing
            else:  # waits for the broker's PUBACK, which never comes if the connection drops meanwhile
                lost = _disconnection(client)
                sent = asyncio.ensure_future(publishing)
                await asyncio.wait({sent, lost}, return_when=asyncio.FIRST_COMPLETED)
                if not sent.done():
                    sent.cancel()
                    _raise_if_lost(lost)
                sent.result()
        except aiomqtt.MqttError:
            self._drop(event, "disconnected")
            raise
        if isinstance(event, PhaseEvent) and (self._phase_sent is None or event.sequence >= self._phase_sent.sequence):
            self._phase_sent = event
        self.stats.published[kind.value] += 1
        self._published_total[kind].inc()

    def _drop(self, event: Event, reason: str) -> None:
        if isinstance(event, PhaseEvent):
            newest = self._newest_phase()
            if newest is None or event.sequence >= newest.sequence:
                self._phase_dropped = event
        self.stats.dropped[reason] += 1
        self.metrics.mqtt_dropped.labels(topic=_kind(event).value, reason=reason).inc()

    def _discard_queued(self) -> None:
        """After a refusal: stop taking events and count the queued ones as dropped."""
        if self._sub is not None:
            self._sub.close()
        self._drop_pending("refused")

    def _drop_pending(self, reason: str) -> None:
        if self._sub is None:
            return
        while True:
            try:
                self._drop(self._sub.get_nowait(), reason)
            except asyncio.QueueEmpty:
                return


async def subscribe(
    broker: str | BrokerSettings,
    run_id: str = "+",
    *,
    identifier: str | None = None,
    ready: asyncio.Event | None = None,
) -> AsyncGenerator[Event | MalformedEvent, None]:
    """Yield a run's events as they arrive: ``async for event in subscribe(url, run_id)``.

    Events are ``PhaseEvent``, ``StatusEvent``, ``EvaluationEvent`` and ``SpikeBatch``; a
    message that does not decode is yielded as a ``MalformedEvent`` (a ``ValueError`` naming
    the topic and the reason) and the stream goes on. Retained ``phase`` and ``status``
    arrive first. ``run_id="+"`` follows every run on the broker. ``ready`` is set once the
    subscription is in place. Losing the broker ends the iteration with ``aiomqtt.MqttError``.
    """
    settings = broker if isinstance(broker, BrokerSettings) else parse_broker_url(broker)
    check_run_id(run_id, wildcard=True)
    async with _client(settings, identifier=identifier) as client:
        await client.subscribe(f"neurosim/{run_id}/#", qos=1)
        if ready is not None:
            ready.set()
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                yield MalformedEvent(topic, f"expected a bytes payload, got {type(payload).__name__}")
                continue
            try:
                yield event_from_message(topic, payload)
            except MalformedEvent as err:
                yield err
