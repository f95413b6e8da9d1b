"""The engine on CUBA: rates, reproducibility, batches, both paths, propagation, delays, async."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from conftest import cuba_config

from neurosim.build import build_network, build_simulation
from neurosim.sim import (
    AsyncHookInSyncRun,
    Backend,
    Channel,
    ConductanceLIF,
    CurrentInput,
    CurrentLIF,
    Network,
    Normal,
    PoissonDrive,
    PoissonInput,
    Population,
    Projection,
    Propagation,
    Simulation,
    SpikeArrayInput,
    SpikeMonitor,
    StateMonitor,
    StepContext,
    Uniform,
    WeightFormat,
    connectivity,
)
from neurosim.sim.neurons import AdaptiveLIF


def _spikes(sim: Simulation, duration: float, sources: tuple[str, ...] = ("exc", "inh")) -> dict[str, np.ndarray]:
    mons = {s: sim.add_monitor(SpikeMonitor(s)) for s in sources}
    sim.run(duration)
    return {s: np.stack([m.steps, m.indices, m.instances]) for s, m in mons.items()}


def test_cuba_mean_rate_is_in_the_published_range() -> None:
    sim = build_simulation(cuba_config(duration=1.0))
    stats = sim.run(1.0)
    rate = (stats.spikes["exc"] + stats.spikes["inh"]) / 4000 / 1.0
    assert 4.0 <= rate <= 8.0, rate


def test_same_seed_same_spikes_and_different_seed_different_spikes() -> None:
    a = _spikes(build_simulation(cuba_config(seed=5)), 0.2)
    b = _spikes(build_simulation(cuba_config(seed=5)), 0.2)
    c = _spikes(build_simulation(cuba_config(seed=6)), 0.2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["exc"], c["exc"])


@pytest.mark.parametrize("backend", [Backend.COMPILED, Backend.TORCH])
def test_batch_instances_equal_separate_runs_with_matching_seeds(backend: Backend) -> None:
    cfg = cuba_config(seed=10)
    net = build_network(cfg)  # one structure, shared by every instance
    batch = Simulation(net, batch=3, seed=10, backend=backend)
    together = _spikes(batch, 0.1)
    for b in range(3):
        alone = _spikes(Simulation(build_network(cfg), seed=10 + b, backend=Backend.COMPILED), 0.1)
        for src in ("exc", "inh"):
            mine = together[src][:, together[src][2] == b]
            assert np.array_equal(mine[:2], alone[src][:2]), (src, b)


def test_compiled_and_torch_paths_agree_bit_for_bit_on_cuba() -> None:
    cfg = cuba_config(seed=3)
    runs = {}
    for backend in (Backend.COMPILED, Backend.TORCH):
        sim = Simulation(build_network(cfg), seed=3, backend=backend)
        mon = sim.add_monitor(StateMonitor("exc", ["v", "g_exc", "g_inh"], indices=[0, 7, 99], every=5e-4))
        runs[backend] = (_spikes(sim, 0.15), mon.values, sim.state["exc"])
    (sa, va, xa), (sb, vb, xb) = runs[Backend.COMPILED], runs[Backend.TORCH]
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    for var in va:
        assert np.array_equal(va[var], vb[var]), var
    for ta, tb in zip(xa, xb, strict=True):
        assert torch.equal(ta, tb)


def _mixed_network() -> Network:
    """Every model, both inputs, a current, delays, dense and sparse weights."""
    rng = np.random.default_rng(0)
    net = Network()
    net.add_population(Population("cond", 50, ConductanceLIF(), {"v": Uniform(-70e-3, -55e-3)}))
    net.add_population(Population("adapt", 30, AdaptiveLIF(tau_m=20e-3), {"theta": 20e-3}))
    net.add_input(PoissonInput("noise", 200, 20.0))
    net.add_input(SpikeArrayInput("given", 5, [0.001, 0.002, 0.02], [0, 1, 4]))
    net.add_current(CurrentInput("bias", "adapt", np.linspace(0, 0.3e-9, 30)))

    def proj(name, src, tgt, n_pre, n_post, p, w, **kw):
        pre, post = np.nonzero(rng.random((n_pre, n_post)) < p)
        weights = rng.uniform(0, w, pre.size).astype(np.float32)
        net.add_projection(Projection.from_pairs(name, src, tgt, n_pre, n_post, pre, post, weights, **kw))

    proj("noise_cond", "noise", "cond", 200, 50, 0.2, 0.3)
    proj("given_cond", "given", "cond", 5, 50, 0.5, 0.5, delay_steps=3)
    proj("cond_adapt", "cond", "adapt", 50, 30, 0.3, 0.3, format=WeightFormat.DENSE, delay_steps=7)
    from neurosim.sim import Channel

    proj("adapt_cond", "adapt", "cond", 30, 50, 0.3, 0.2, channel=Channel.INH)
    return net


def test_compiled_and_torch_paths_agree_on_every_model_input_and_delay() -> None:
    results = {}
    for backend in (Backend.COMPILED, Backend.TORCH):
        sim = Simulation(_mixed_network(), seed=1, backend=backend, chunk_steps=300)
        mons = {s: sim.add_monitor(SpikeMonitor(s)) for s in ("cond", "adapt", "noise", "given")}
        state = sim.add_monitor(StateMonitor("adapt", ["v", "theta"], indices=[0, 29], every=1e-3))
        sim.run(0.3)
        results[backend] = ({s: m.steps.tolist() + m.indices.tolist() for s, m in mons.items()}, state.values)
    (spk_a, st_a), (spk_b, st_b) = results.values()
    assert spk_a["noise"] == spk_b["noise"] and spk_a["given"] == spk_b["given"]
    assert len(spk_a["cond"]) > 50 and len(spk_a["adapt"]) > 20
    # conductance models differ only through exp() rounding: spikes equal, state within float32 ulps
    assert spk_a["cond"] == spk_b["cond"]
    assert spk_a["adapt"] == spk_b["adapt"]
    for var in st_a:
        np.testing.assert_allclose(st_a[var], st_b[var], rtol=0, atol=1e-6)


def _cuba_with_delayed_input() -> Network:
    net = build_network(cuba_config(seed=8))
    net.add_input(PoissonInput("drive", 100, 10.0))
    rng = np.random.default_rng(3)
    pre, post = np.nonzero(rng.random((100, 3200)) < 0.05)
    net.add_projection(Projection.from_pairs("drive_exc", "drive", "exc", 100, 3200, pre, post,
                                             np.full(pre.size, 1e-3, np.float32), delay_steps=5))  # fmt: skip
    return net


def test_paths_can_alternate_between_chunks() -> None:
    reference = Simulation(_cuba_with_delayed_input(), seed=2, backend=Backend.TORCH)
    ref = reference.add_monitor(SpikeMonitor("exc"))
    reference.run(0.1)
    mixed = Simulation(_cuba_with_delayed_input(), seed=2, backend=Backend.COMPILED, chunk_steps=130)
    mon = mixed.add_monitor(SpikeMonitor("exc"))
    mixed.run(0.03)
    mixed.backend = Backend.TORCH
    mixed.run(0.04)
    mixed.backend = Backend.COMPILED
    mixed.run(0.03)
    assert ref.count > 1000
    assert np.array_equal(mon.steps, ref.steps) and np.array_equal(mon.indices, ref.indices)


@pytest.mark.parametrize("batch", [1, 4])
def test_event_driven_and_dense_propagation_give_the_same_result(batch: int) -> None:
    rng = np.random.default_rng(1)
    pre, post = np.nonzero(rng.random((300, 200)) < 0.1)
    w = rng.normal(0, 1, pre.size).astype(np.float32)
    sparse = Projection.from_pairs("s", "a", "b", 300, 200, pre, post, w, dtype=torch.float64)
    dense_event = Projection.from_pairs("d", "a", "b", 300, 200, pre, post, w, format=WeightFormat.DENSE,
                                        propagation=Propagation.EVENT, dtype=torch.float64)  # fmt: skip
    dense_matmul = Projection.from_pairs("m", "a", "b", 300, 200, pre, post, w, format=WeightFormat.DENSE,
                                         propagation=Propagation.MATMUL, dtype=torch.float64)  # fmt: skip
    for rate in (0.0, 0.01, 0.3, 1.0):
        spikes = torch.from_numpy(rng.random((batch, 300)) < rate)
        expected = spikes.double() @ sparse.dense_weights()
        for proj in (sparse, dense_event, dense_matmul):
            torch.testing.assert_close(proj.propagate(spikes), expected, rtol=1e-12, atol=1e-12)


def test_dense_and_sparse_storage_run_cuba_to_the_same_spikes() -> None:
    def run(fmt: str) -> dict[str, np.ndarray]:
        data = cuba_config(seed=4, backend="torch").model_dump(mode="json")
        for p in data["network"]["projections"]:
            p["format"] = fmt
        from neurosim.config import parse_config

        return _spikes(build_simulation(parse_config(data)), 0.05)

    sparse, dense = run("sparse"), run("dense")
    for k in sparse:
        assert np.array_equal(sparse[k], dense[k])


@pytest.mark.parametrize("backend", [Backend.COMPILED, Backend.TORCH])
def test_delayed_spike_arrives_exactly_delay_steps_later(backend: Backend) -> None:
    net = Network()
    net.add_population(Population("n", 2, ConductanceLIF(v_threshold=1.0)))
    net.add_input(SpikeArrayInput("s", 1, [0.0010], [0]))
    for name, tgt, d in (("now", 0, 0), ("later", 1, 25)):
        net.add_projection(Projection.from_pairs(name, "s", "n", 1, 2, np.array([0]), np.array([tgt]),
                                                 np.array([0.5], np.float32), delay_steps=d))  # fmt: skip
    sim = Simulation(net, backend=backend, chunk_steps=17)  # chunks that cut through the delay
    mon = sim.add_monitor(StateMonitor("n", ["g_exc"], every=1e-4))
    sim.run(0.006)
    g = mon.values["g_exc"][:, 0, :]
    first = np.argmax(g > 0, axis=0)
    assert first.tolist() == [11, 11 + 25]  # spike in step 10, visible at the start of step 11


@pytest.mark.parametrize("backend", [Backend.COMPILED, Backend.TORCH])
def test_each_synapse_delivers_after_its_own_delay(backend: Backend) -> None:
    delays = [0, 1, 25, 300, 7]
    net = Network()
    net.add_population(Population("n", 5, ConductanceLIF(v_threshold=0.0)))  # never reached
    net.add_input(SpikeArrayInput("s", 1, [0.0010], [0]))
    net.add_projection(Projection.from_pairs("spread", "s", "n", 1, 5, np.zeros(5, np.int64), np.arange(5),
                                             np.full(5, 0.5, np.float32), delay_steps=np.array(delays)))  # fmt: skip
    assert net.projections["spread"].synapse_delays is not None  # not collapsed: the delays differ
    sim = Simulation(net, backend=backend, chunk_steps=17)  # chunks that cut through the delays
    mon = sim.add_monitor(StateMonitor("n", ["g_exc"], every=1e-4))
    sim.run(0.04)
    first = np.argmax(mon.values["g_exc"][:, 0, :] > 0, axis=0)
    assert first.tolist() == [11 + d for d in delays]
    assert sim._history.shape[0] == 301  # the spike history reaches back to the longest delay


def _spread_delay_network(seed: int = 0) -> Network:
    rng = np.random.default_rng(seed)
    net = Network()
    net.add_input(PoissonInput("bg", 100, 30.0))
    for name, n in (("e", 160), ("i", 40)):
        net.add_population(Population(name, n, CurrentLIF(tau_exc=0.5e-3, tau_inh=0.5e-3), {"v": Normal(-0.055, 4e-3)}))
    for src, tgt, w, ch in (("bg", "e", 8e-3, Channel.EXC), ("e", "e", 4e-3, Channel.EXC),
                            ("e", "i", 4e-3, Channel.EXC), ("i", "e", -16e-3, Channel.INH)):  # fmt: skip
        n_pre, n_post = net.source_size(src), net.populations[tgt].n
        pre, post = connectivity.fixed_total(n_pre, n_post, 20 * n_post, rng, autapses=src != tgt)
        delays = connectivity.delay_steps_from_seconds(
            connectivity.normal_delays(pre.size, 1.5e-3, 0.75e-3, rng, low=1e-4), 1e-4
        )
        weights = np.full(pre.size, w, np.float32)
        net.add_projection(Projection.from_pairs(f"{src}_{tgt}", src, tgt, n_pre, n_post, pre, post, weights,
                                                 channel=ch, delay_steps=delays))  # fmt: skip
    return net


def test_per_synapse_delays_are_the_same_on_both_paths_in_batches_and_alternating() -> None:
    def run(backend: Backend, alternate: bool) -> tuple[np.ndarray, torch.Tensor]:
        sim = Simulation(_spread_delay_network(), batch=3, seed=2, backend=backend, chunk_steps=97)
        mon = sim.add_monitor(SpikeMonitor("e"))
        for k in range(6):
            hook = alternate and k % 2 == 1  # a step hook sends a stretch to the torch path
            if hook:
                sim.add_step_hook(lambda ctx: None)
            sim.run(0.02)
            sim.step_hooks.clear()
        return np.stack([mon.steps, mon.indices, mon.instances]), sim.state["e"].v

    reference, v_ref = run(Backend.TORCH, False)
    assert reference.shape[1] > 500 and len(np.unique(reference[2])) == 3
    for backend, alternate in ((Backend.COMPILED, False), (Backend.AUTO, True)):
        spikes, v = run(backend, alternate)
        assert np.array_equal(spikes, reference), (backend, alternate)
        assert torch.equal(v, v_ref)


def test_a_detached_block_leaves_the_scheduled_input_as_it_was() -> None:
    plain = Simulation(_spread_delay_network(), seed=1)
    plain.run(0.05)
    plain.run(0.05)
    probed = Simulation(_spread_delay_network(), seed=1)
    probed.run(0.05)
    with probed.detached(stream=0):
        probed.run(0.013)  # not a multiple of the ring's length: the ring must be rotated back
    probed.run(0.05)
    assert torch.equal(plain.state["e"].v, probed.state["e"].v)


def test_poisson_input_has_the_requested_rate() -> None:
    net = Network()
    net.add_input(PoissonInput("p", 1000, np.linspace(0, 100, 1000)))
    net.add_population(Population("dummy", 1, ConductanceLIF()))
    sim = Simulation(net, seed=0)
    mon = sim.add_monitor(SpikeMonitor("p"))
    sim.run(2.0)
    counts = np.bincount(mon.indices, minlength=1000)
    expected = np.linspace(0, 100, 1000) * 2.0
    assert counts[0] == 0
    assert abs(counts.sum() - expected.sum()) < 4 * np.sqrt(expected.sum())
    slope = np.polyfit(np.arange(1000), counts, 1)[0]
    assert slope == pytest.approx(200 / 999, rel=0.05)


async def test_run_async_yields_to_the_event_loop_and_awaits_async_hooks() -> None:
    sim = build_simulation(cuba_config(chunk_steps=100))
    ticks = 0
    seen: list[int] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def on_chunk(result) -> None:
        await asyncio.sleep(0)
        seen.append(result.start_step)

    sim.add_chunk_hook(on_chunk)
    task = asyncio.create_task(ticker())
    await sim.run_async(0.05)
    task.cancel()
    assert seen == list(range(0, 500, 100))
    assert ticks >= 5  # the loop ran other work between chunks


def test_sync_run_refuses_async_hooks_with_a_clear_error() -> None:
    sim = build_simulation(cuba_config())

    async def hook(ctx: StepContext) -> None:
        return None

    sim.add_step_hook(hook)
    with pytest.raises(AsyncHookInSyncRun, match="run_async"):
        sim.run(0.01)


def test_step_hooks_see_every_step_and_its_spikes() -> None:
    sim = build_simulation(cuba_config())
    mon = sim.add_monitor(SpikeMonitor("exc"))
    counted: list[int] = []
    sim.add_step_hook(lambda ctx: counted.append(int(ctx.spikes["exc"].sum())))
    stats = sim.run(0.02)
    assert len(counted) == 200 and sum(counted) == mon.count
    assert stats.backends == {Backend.TORCH}


def test_bad_engine_arguments_are_refused() -> None:
    net = build_network(cuba_config())
    with pytest.raises(ValueError, match="dt must be a positive"):
        Simulation(net, dt=0)
    with pytest.raises(ValueError, match="batch must be >= 1"):
        Simulation(net, batch=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            Simulation(net, device="cuda")
    with pytest.raises(ValueError, match="duration"):
        Simulation(net).run(-1.0)


@pytest.mark.cuda
def test_cuda_path_matches_cpu() -> None:
    cfg = cuba_config(seed=3)
    cpu = _spikes(Simulation(build_network(cfg), seed=3, backend=Backend.TORCH), 0.2)
    gpu_net = build_network(cfg, device="cuda")
    gpu = _spikes(Simulation(gpu_net, seed=3, device="cuda"), 0.2)
    # GPU float32 kernels may round differently; spike trains agree for a while, rates overall
    assert abs(gpu["exc"].shape[1] - cpu["exc"].shape[1]) < 0.1 * cpu["exc"].shape[1]
    first = min(200, cpu["exc"].shape[1])
    assert np.array_equal(gpu["exc"][:, :first], cpu["exc"][:, :first])


@pytest.mark.parametrize("backend", [Backend.COMPILED, Backend.TORCH])
def test_a_detached_block_leaves_no_trace_in_what_runs_after_it(backend: Backend) -> None:
    runs = []
    for detour in (False, True):
        sim = Simulation(_mixed_network(), seed=4, backend=backend, chunk_steps=300)
        sim.run(0.05)
        if detour:
            with sim.detached(stream=1):  # e.g. a sleep that changes no weight
                sim.network.inputs["noise"].set_rates(80.0)
                sim.run(0.0237)  # not a multiple of the delay ring buffer's length
                sim.network.inputs["noise"].set_rates(20.0)
        mons = {s: sim.add_monitor(SpikeMonitor(s)) for s in ("cond", "adapt", "noise")}
        sim.run(0.1)
        runs.append({s: (m.steps - sim.step, m.indices) for s, m in mons.items()})
    plain, detoured = runs
    for source in plain:
        assert plain[source][1].size > 0
        np.testing.assert_array_equal(plain[source][0], detoured[source][0])
        np.testing.assert_array_equal(plain[source][1], detoured[source][1])


def test_separate_input_noise_draws_other_spikes_and_returns_to_the_own_stream() -> None:
    sim = Simulation(_mixed_network(), seed=4)
    with sim.separate_input_noise(stream=3):
        inside = _spikes(sim, 0.02, ("noise",))["noise"]
    fresh = Simulation(_mixed_network(), seed=4)
    own = _spikes(fresh, 0.02, ("noise",))["noise"]
    assert not np.array_equal(inside, own)
    with pytest.raises(ValueError, match="stream"), sim.separate_input_noise(stream=-1):
        pass


def _driven_network() -> Network:
    net = Network()
    net.add_population(Population("n", 300, CurrentLIF(tau_exc=0.5e-3, tau_inh=0.5e-3), {"v": Normal(-0.055, 4e-3)}))
    net.add_drive(PoissonDrive("bg", "n", n_sources=1600, rate=8.0, weight=2e-3))
    net.add_drive(PoissonDrive("bg_inh", "n", n_sources=200, rate="10 Hz", weight=-4e-3, channel=Channel.INH))
    return net


def test_a_poisson_drive_delivers_poisson_counts_the_same_on_both_paths_and_in_any_chunking() -> None:
    drive = PoissonDrive("d", "n", n_sources=1600, rate=8.0, weight=1.0)
    table = drive.count_table(1e-4)
    assert table[-1] == 1.0 and abs(table[0] - np.exp(-1.28)) < 1e-12
    from neurosim.sim.kernels import poisson_counts

    keys = np.array([12345, 999], dtype=np.uint64)
    counts = np.empty((4000, 2, 500), dtype=np.uint16)
    poisson_counts(keys, 0, 4000, 500, drive.count_thresholds(1e-4), counts)
    assert abs(counts.mean() - 1.28) < 0.01 and abs(counts.var() - 1.28) < 0.02  # Poisson: mean = variance
    again = np.empty((1000, 2, 500), dtype=np.uint16)
    poisson_counts(keys, 3000, 1000, 500, drive.count_thresholds(1e-4), again)
    assert np.array_equal(again, counts[3000:])  # a pure function of the step: chunking changes nothing
    assert not np.array_equal(counts[:, 0], counts[:, 1])  # instances draw their own counts

    def run(backend: Backend, chunk: int) -> tuple[np.ndarray, torch.Tensor]:
        sim = Simulation(_driven_network(), batch=2, seed=3, backend=backend, chunk_steps=chunk)
        mon = sim.add_monitor(SpikeMonitor("n"))
        sim.run(0.1)
        return np.stack([mon.steps, mon.indices, mon.instances]), sim.state["n"].v

    reference, v_ref = run(Backend.TORCH, 1000)
    rate = reference.shape[1] / (300 * 2 * 0.1)
    assert 2.0 < rate < 60.0, rate
    for backend, chunk in ((Backend.COMPILED, 1000), (Backend.COMPILED, 37), (Backend.TORCH, 37)):
        spikes, v = run(backend, chunk)
        assert np.array_equal(spikes, reference) and torch.equal(v, v_ref), (backend, chunk)
