"""The binary spike-batch format: round trips, exact layout, and hostile bytes."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from conftest import cuba_config
from hypothesis import given, settings
from hypothesis import strategies as st

from neurosim.build import build_simulation
from neurosim.events.wire import SpikeBatch, SpikeBatchError, decode, encode


@st.composite
def batches(draw: st.DrawFn) -> SpikeBatch:
    n_steps = draw(st.integers(0, 50))
    first = draw(st.integers(0, 2**40))
    n = draw(st.integers(0, 200)) if n_steps else 0
    local = np.sort(np.asarray(draw(st.lists(st.integers(0, max(n_steps - 1, 0)), min_size=n, max_size=n)), np.int64))
    indices = np.asarray(draw(st.lists(st.integers(0, 2**32 - 1), min_size=n, max_size=n)), np.int64)
    with_instances = draw(st.booleans())
    instances = (
        np.asarray(draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n)), np.int64) if with_instances else None
    )
    name = draw(st.text(min_size=1, max_size=20))
    dt = draw(st.floats(min_value=1e-9, max_value=1.0))
    return SpikeBatch(name, first, dt, n_steps, local + first, indices, instances)


@given(batches())
@settings(max_examples=200, deadline=None)
def test_encode_decode_round_trip(batch: SpikeBatch) -> None:
    assert decode(encode(batch)) == batch


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_arbitrary_bytes_decode_or_raise_spike_batch_error(data: bytes) -> None:
    try:
        batch = decode(data)
    except SpikeBatchError:
        return
    assert encode(batch) == data  # anything accepted is a well-formed batch


@given(batches(), st.data())
@settings(max_examples=200, deadline=None)
def test_truncated_or_corrupted_payloads_are_rejected_cleanly(batch: SpikeBatch, data: st.DataObject) -> None:
    payload = encode(batch)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(SpikeBatchError):
        decode(payload[:cut])
    flipped = bytearray(payload)
    position = data.draw(st.integers(0, len(payload) - 1))
    flipped[position] ^= data.draw(st.integers(1, 255))
    try:
        survivor = decode(bytes(flipped))
    except SpikeBatchError:
        return
    assert encode(survivor) == bytes(flipped)  # a flip that still decodes gave a valid batch


def test_layout_matches_the_documentation() -> None:
    batch = SpikeBatch("exc", 10, 1e-4, 3, np.array([10, 12, 12]), np.array([7, 1, 2]))
    payload = encode(batch)
    assert payload[:4] == b"NSSP" and payload[4] == 1 and payload[5] == 0
    assert struct.unpack_from("<HQdII", payload, 6) == (3, 10, 1e-4, 3, 3)
    assert payload[32:35] == b"exc"
    assert struct.unpack_from("<4I", payload, 35) == (0, 1, 1, 3)  # offsets per step
    assert struct.unpack_from("<3I", payload, 51) == (7, 1, 2)
    assert len(payload) == 32 + 3 + 16 + 12


def test_a_simulation_chunk_round_trips_exactly() -> None:
    sim = build_simulation(cuba_config(seed=1))
    batches: list[SpikeBatch] = []
    sim.add_chunk_hook(lambda result: batches.append(SpikeBatch.from_chunk(result, "exc")))
    sim.run(0.2)
    assert sum(b.steps.size for b in batches) == sim.spike_counts["exc"] > 0
    for batch in batches:
        again = decode(encode(batch))
        assert again == batch and again.instances is None
        np.testing.assert_allclose(again.times, batch.steps * 1e-4)


def test_encoder_refuses_inconsistent_batches() -> None:
    with pytest.raises(ValueError, match="sorted and inside"):
        encode(SpikeBatch("p", 0, 1e-4, 2, np.array([5]), np.array([0])))
    with pytest.raises(ValueError, match="dt must be"):
        encode(SpikeBatch("p", 0, 0.0, 1, np.array([0]), np.array([0])))


def test_json_rendering_of_events_is_strict_json() -> None:
    import json

    from neurosim.events.render import render_event
    from neurosim.events.schema import SleepEvent

    event = SleepEvent(run_id="r", episode=0, start_s=1.0, duration_s=2.0, drive="uniform", gain=1.0,
                       target_rate_hz=None, rate_hz=0.5, spikes=3, spikes_per_class={"0": 3}, spikes_unassigned=0,
                       classes_reactivated=1, classes_seen=1, weight_change_mean_abs=0.0,
                       weight_change_per_task={}, wall_time=float("nan"))  # fmt: skip

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    line = json.loads(render_event(event, as_json=True), parse_constant=refuse)
    assert line["type"] == "sleep" and line["wall_time"] is None and line["target_rate_hz"] is None


def test_a_drift_event_goes_on_its_own_topic_and_back() -> None:
    import json

    from neurosim.events.render import render_event
    from neurosim.events.schema import DriftEvent, event_from_message, payload_of, topic_of

    event = DriftEvent(run_id="sweep/a/0", block="block-1", position=126, value=7.5, statistic=16.2, sim_time_s=12.5,
                       wall_time=1.0)  # fmt: skip
    topic = topic_of("sweep/a/0", event)
    assert topic == "neurosim/sweep/a/0/drift"
    assert event_from_message(topic, payload_of(event)[0]) == event
    assert json.loads(render_event(event, as_json=True))["type"] == "drift"
    assert "block-1 closed at sample 126" in render_event(event, as_json=False)
