"""
Live spikes and phases over MQTT
================================

Every run can publish its spikes (one binary batch per population per chunk), its phase
changes and its evaluations to an MQTT broker while it runs (``neurosim run CONFIG --mqtt
mqtt://host:1883``); any MQTT client can follow (``mosquitto_sub``, ``neurosim subscribe``,
or ``neurosim.events.mqtt.subscribe`` as here). Topics and the binary format:
``docs/events.md`` and ``docs/wire-format.md``.

This example starts a throwaway mosquitto broker on a free port (``LocalBroker``, which
needs Debian's ``mosquitto``), runs CUBA with a publisher attached, and reads the spike
batches back from the broker as they arrive.
"""

# %%
import asyncio

import matplotlib.pyplot as plt
import numpy as np
from _paths import EXAMPLES

from neurosim.build import build_simulation
from neurosim.config import load_config
from neurosim.events.broker import LocalBroker
from neurosim.events.bus import EventBus
from neurosim.events.mqtt import MQTTPublisher, subscribe
from neurosim.events.spikes import SpikeStream
from neurosim.events.wire import SpikeBatch


async def run_and_listen(url: str) -> list[tuple[float, SpikeBatch]]:
    """Run 0.5 s of CUBA publishing to ``url`` while a subscriber collects what arrives."""
    sim = build_simulation(load_config(EXAMPLES / "cuba.toml"))
    bus = EventBus()
    SpikeStream(bus).attach(sim)
    received: list[tuple[float, SpikeBatch]] = []
    ready = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def listen() -> None:
        async for event in subscribe(url, "cuba-live", ready=ready):
            if isinstance(event, SpikeBatch):
                received.append((loop.time(), event))

    listener = asyncio.create_task(listen())
    await ready.wait()
    async with MQTTPublisher(url, "cuba-live", bus) as publisher:
        await publisher.ready()
        await sim.run_async(0.5)
    await asyncio.sleep(0.5)  # the last batches are in flight
    listener.cancel()
    return received


with LocalBroker() as broker:
    received = asyncio.run(run_and_listen(broker.url))
print(f"{len(received)} spike batches received while the run went on")

# %%
# Spikes per batch as they arrived: one batch per population per chunk of 1,000 steps
# (0.1 s), decoded from the binary format.
fig, ax = plt.subplots(figsize=(7, 3))
for population, colour in (("exc", "tab:blue"), ("inh", "tab:red")):
    batches = [b for _, b in received if b.population == population]
    starts = [b.first_step * b.dt for b in batches]
    ax.bar(np.array(starts) + (0.02 if population == "inh" else 0.0), [b.steps.size for b in batches],
           width=0.02, color=colour, label=population)
ax.set_xlabel("chunk start (simulated s)")
ax.set_ylabel("spikes in the batch")
ax.legend()
fig.tight_layout()
