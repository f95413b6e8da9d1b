"""FisherAccumulator: the EMA, snapshot timing, provenance, staleness, isolation."""

from __future__ import annotations

import logging
import warnings
from unittest import mock

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from neurosim.learning import LinearReadout, PairSTDP, STDPOnlineLearner, Surrogate
from neurosim.learning.fisher import (
    DirectoryFisherStore,
    FisherMatrixBase,
    InMemoryFisherStore,
    OnlineFisherSnapshot,
    SnapshotReason,
)
from neurosim.learning.fisher_online import (
    FisherAccumulator,
    FisherAccumulatorConfig,
    NonFiniteGradientError,
    NonFinitePolicy,
    SnapshotWriteError,
)
from neurosim.metrics import Metrics


def _grads(value: float, n: int = 4) -> dict[str, np.ndarray]:
    return {"w": np.full(n, value, dtype=np.float32), "b": np.array([2 * value], dtype=np.float32)}


def _acc(store: FisherMatrixBase | None = None, task: str = "t1", **cfg) -> tuple[FisherAccumulator, Metrics]:
    metrics = Metrics(CollectorRegistry())
    return FisherAccumulator(
        FisherAccumulatorConfig(**cfg), store or InMemoryFisherStore(), task, metrics=metrics
    ), metrics


def _spy_store() -> tuple[InMemoryFisherStore, mock.MagicMock]:
    store = InMemoryFisherStore()
    spy = mock.MagicMock(side_effect=InMemoryFisherStore.save.__get__(store))
    store.save = spy  # type: ignore[method-assign]
    return store, spy


async def test_accumulator_ema_decay() -> None:
    acc, metrics = _acc(alpha=0.25, min_samples=100, snapshot_every=100)
    expected_w = 0.0
    for g in (1.0, 2.0, -3.0, 0.5):
        await acc.update(_grads(g))
        expected_w = 0.25 * g**2 + 0.75 * expected_w
    fisher = acc.fisher
    np.testing.assert_allclose(fisher["w"].numpy(), np.full(4, expected_w, np.float32), rtol=1e-6)
    assert float(fisher["b"][0]) == pytest.approx(4 * expected_w, rel=1e-6)
    # exact values: 0.25, 0.25*4 + 0.75*0.25 = 1.1875, 0.25*9 + 0.75*1.1875 = 3.140625, ...
    assert expected_w == pytest.approx(0.25 * 0.25 + 0.75 * 3.140625)
    assert acc.stats().steps == 4
    assert metrics.registry.get_sample_value("ewc_fisher_ema_steps_total", {"task": "t1"}) == 4


async def test_accumulator_no_snapshot_before_min_samples() -> None:
    store, save = _spy_store()
    acc, _ = _acc(store, min_samples=20, snapshot_every=5)
    for _ in range(19):
        await acc.update(_grads(1.0))
        await acc.flush()
    assert save.call_count == 0
    await acc.update(_grads(1.0))
    await acc.flush()
    assert save.call_count == 1 and save.call_args.args[0].step == 20


async def test_snapshot_written_at_interval() -> None:
    store, save = _spy_store()
    acc, _ = _acc(store, min_samples=10, snapshot_every=50)
    for _ in range(200):
        await acc.update(_grads(1.0))
        await acc.flush()
    assert save.call_count == 4  # not one write per call
    assert [c.args[0].step for c in save.call_args_list] == [50, 100, 150, 200]
    assert store.versions("t1") == [1, 2, 3, 4]
    assert acc.stats().snapshots_written == 4 and acc.stats().last_snapshot_step == 200


async def test_force_snapshot_bypasses_counter() -> None:
    store, save = _spy_store()
    acc, _ = _acc(store, min_samples=10, snapshot_every=50)
    for _ in range(7):
        await acc.update(_grads(1.0))
    snap = await acc.force_snapshot(SnapshotReason.SLEEP)
    assert save.call_count == 1 and snap.step == 7 and snap.version == 1
    assert isinstance(snap, OnlineFisherSnapshot) and snap.reason is SnapshotReason.SLEEP


async def test_force_snapshot_resets_counter() -> None:
    store, save = _spy_store()
    acc, _ = _acc(store, min_samples=10, snapshot_every=50)
    for _ in range(30):
        await acc.update(_grads(1.0))
    await acc.force_snapshot()
    for _ in range(60):
        await acc.update(_grads(1.0))
        await acc.flush()
    assert [c.args[0].step for c in save.call_args_list] == [30, 80]
    assert acc.pending_steps == 10


async def test_max_staleness_warning(caplog: pytest.LogCaptureFixture) -> None:
    acc, metrics = _acc(min_samples=40, snapshot_every=10, max_staleness_steps=25)
    with caplog.at_level(logging.WARNING, logger="neurosim.learning.fisher_online"):
        for _ in range(39):
            await acc.update(_grads(1.0))
    breaches = metrics.registry.get_sample_value("ewc_fisher_staleness_breaches_total", {"task": "t1"})
    assert breaches == 1  # once per breach, not once per step
    assert sum("no snapshot written for 26 steps" in r.getMessage() for r in caplog.records) == 1
    assert metrics.registry.get_sample_value("ewc_fisher_snapshot_age_steps", {"task": "t1"}) == 39
    await acc.update(_grads(1.0))
    await acc.flush()  # the snapshot at 40 ends the breach
    assert metrics.registry.get_sample_value("ewc_fisher_snapshot_age_steps", {"task": "t1"}) == 0


async def test_failing_store_is_counted_and_reported_and_the_run_goes_on() -> None:
    store = InMemoryFisherStore()
    store.save = mock.MagicMock(side_effect=OSError("disk full"))  # type: ignore[method-assign]
    acc, metrics = _acc(store, min_samples=1, snapshot_every=5, max_staleness_steps=12)
    for _ in range(20):
        await acc.update(_grads(1.0))
        await acc.flush()
    assert acc.stats().steps == 20 and acc.stats().snapshots_written == 0
    assert isinstance(acc.last_error, OSError)
    assert metrics.registry.get_sample_value("ewc_fisher_snapshot_failures_total", {"task": "t1"}) >= 3
    assert metrics.registry.get_sample_value("ewc_fisher_staleness_breaches_total", {"task": "t1"}) == 1
    with pytest.raises(SnapshotWriteError, match="failed to write"):
        await acc.force_snapshot()


async def test_online_fisher_snapshot_fields() -> None:
    store = InMemoryFisherStore()
    acc, _ = _acc(store, alpha=0.5, min_samples=2, snapshot_every=3, non_finite=NonFinitePolicy.SKIP)
    await acc.update(_grads(1.0))
    await acc.update({"w": np.full(4, np.nan, np.float32), "b": np.ones(1, np.float32)})  # skipped
    await acc.update(_grads(1.0))
    await acc.update(_grads(2.0))
    await acc.flush()
    first = store.load("t1")
    assert isinstance(first, OnlineFisherSnapshot)
    assert (first.task_id, first.step, first.alpha, first.ema_steps, first.samples_seen) == ("t1", 3, 0.5, 3, 4)
    assert first.reason is SnapshotReason.INTERVAL and first.steps_since_previous == 3
    # F_w after g = 1, 1, 2 with alpha 0.5: 0.5, 0.75, 2.375; drift from zero
    np.testing.assert_allclose(first.arrays["w"], 2.375)
    assert first.max_delta == pytest.approx(4 * 2.375)  # the largest entry is b (g_b = 2 g_w)
    for _ in range(2):
        await acc.update(_grads(0.0))
    second = await acc.force_snapshot(SnapshotReason.FORCED)
    assert isinstance(second, OnlineFisherSnapshot)
    assert second.steps_since_previous == 2 and second.reason is SnapshotReason.FORCED and second.version == 2
    assert second.max_delta == pytest.approx(4 * 2.375 - 4 * 2.375 * 0.25)  # b: 9.5 -> 2.375
    assert acc.stats().max_delta == pytest.approx(second.max_delta)
    assert acc.stats().skipped_non_finite == 1


async def test_non_finite_gradients_raise_by_default_and_leave_the_ema_alone() -> None:
    acc, _ = _acc(alpha=0.5)
    await acc.update(_grads(1.0))
    with pytest.raises(NonFiniteGradientError, match="non-finite gradient for w"):
        await acc.update({"w": np.array([1, np.inf, 1, 1], np.float32), "b": np.ones(1, np.float32)})
    np.testing.assert_allclose(acc.fisher["w"].numpy(), 0.5)
    assert acc.stats().steps == 1


async def test_gradient_keys_and_shapes_are_checked() -> None:
    acc, _ = _acc()
    await acc.update(_grads(1.0))
    with pytest.raises(ValueError, match="tracks"):
        await acc.update({"w": np.ones(4, np.float32)})
    with pytest.raises(ValueError, match="shape"):
        await acc.update(_grads(1.0, n=5))


BAD_CONFIGS = [
    {"alpha": 0.0},
    {"alpha": 1.5},
    {"min_samples": 0},
    {"snapshot_every": -1},
    {"max_staleness_steps": 2.5},
    {"snapshot_every": 100, "max_staleness_steps": 50},
]


@pytest.mark.parametrize("bad", BAD_CONFIGS)
def test_config_is_validated(bad: dict) -> None:
    with pytest.raises(ValueError, match="FisherAccumulatorConfig"):
        FisherAccumulatorConfig(**bad)


async def test_accumulator_multi_task_isolation(tmp_path) -> None:
    store = DirectoryFisherStore(tmp_path / "fisher")
    a, _ = _acc(store, task="task_a", min_samples=1, snapshot_every=5)
    b, _ = _acc(store, task="task_b", min_samples=1, snapshot_every=5)
    for _ in range(10):
        await a.update(_grads(1.0))
        await b.update(_grads(3.0))
        await a.flush()  # a write in flight postpones the next interval snapshot
        await b.flush()
    assert float(a.fisher["w"][0]) != float(b.fisher["w"][0])
    assert store.tasks() == ["task_a", "task_b"]
    assert store.versions("task_a") == [1, 2] and store.versions("task_b") == [1, 2]
    assert (tmp_path / "fisher" / "task_a" / "v000002.fisher").exists()
    np.testing.assert_allclose(store.load("task_a").arrays["w"], a.fisher["w"].numpy())
    np.testing.assert_allclose(store.load("task_b").arrays["w"], b.fisher["w"].numpy())


async def test_torch_gradients_keep_the_ema_on_their_device() -> None:
    acc, _ = _acc(min_samples=1, snapshot_every=2)
    g = {"w": torch.ones(3, dtype=torch.float32)}
    for _ in range(2):
        await acc.update(g)
    await acc.flush()
    assert acc.fisher["w"].device == g["w"].device
    assert isinstance(acc.store.load("t1").arrays["w"], np.ndarray)


async def test_online_estimate_converges_to_the_full_batch_fisher() -> None:
    """A stationary stream of per-sample gradients of a fixed logistic model: the EMA
    approaches the full-batch empirical Fisher."""
    from neurosim.learning.fisher import FisherKind, estimate_fisher

    gen = torch.Generator().manual_seed(0)
    x = torch.randn((400, 6), generator=gen)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    weight = torch.randn((2, 6), generator=gen, requires_grad=True)

    def log_prob(inputs: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(inputs @ weight.T, dim=-1)

    full = estimate_fisher({"weight": weight}, log_prob, [(x, y)], kind=FisherKind.EMPIRICAL)["weight"]
    acc, _ = _acc(alpha=0.002, min_samples=10_000, snapshot_every=10_000, max_staleness_steps=10_000)
    rng = np.random.default_rng(1)
    for n in rng.integers(0, 400, 8000):
        (g,) = torch.autograd.grad(log_prob(x[n : n + 1])[0, y[n]], weight)
        await acc.update({"weight": g})
    online = acc.fisher["weight"].numpy()
    rel = np.linalg.norm(online - full) / np.linalg.norm(full)
    assert rel < 0.15, rel
    assert np.corrcoef(online.ravel(), full.ravel())[0, 1] > 0.97


async def test_stdp_learner_feeds_a_real_accumulator() -> None:
    from test_learner import _network, _spikes

    net = _network()
    proj = net.projections["ff"]
    readout = LinearReadout(4, 2)
    # small weights: the rates here are thousands of Hz, and a saturated softmax gives no signal
    readout.weight = 1e-4 * torch.tensor([[1.0, -1.0, 0.5, 0.0], [-1.0, 1.0, 0.0, 0.5]])
    learner = STDPOnlineLearner(proj, PairSTDP(w_max=0.1), dt=1e-4, surrogate=Surrogate(), readout=readout)
    learner.begin_sample(torch.tensor([1]))
    acc, _ = _acc(min_samples=5, snapshot_every=10)
    gen = torch.Generator().manual_seed(0)
    for pre, post in zip(_spikes(gen, 30, 1, 50, 0.2), _spikes(gen, 30, 1, 4, 0.2), strict=True):
        await learner.update(pre, post, post_v=torch.full((1, 4), -0.055), post_threshold=-0.054, accumulator=acc)
        await acc.flush()  # a write in flight postpones the next interval snapshot
    assert acc.stats().steps == 30 and acc.stats().snapshots_written == 3
    fisher = acc.store.load("t1").arrays["ff.weight"]
    assert fisher.shape == (proj.n_synapses,) and fisher.max() > 0


async def test_update_squares_is_the_ema_of_given_squares() -> None:
    """update_squares(s) is update(g) with s = g^2; negative squares are refused, non-finite ones
    follow the policy."""
    by_gradient, _ = _acc(alpha=0.25)
    by_squares, metrics = _acc(alpha=0.25, non_finite=NonFinitePolicy.SKIP)
    for g in (1.0, -2.0, 0.5):
        await by_gradient.update(_grads(g))
        await by_squares.update_squares({k: v**2 for k, v in _grads(g).items()})
    for name in ("w", "b"):
        np.testing.assert_allclose(by_squares.fisher[name].numpy(), by_gradient.fisher[name].numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="squares for 'w' are negative"):
        await by_squares.update_squares({"w": np.array([1, -1e-3, 0, 0], np.float32), "b": np.ones(1, np.float32)})
    await by_squares.update_squares({"w": np.full(4, np.nan, np.float32), "b": np.ones(1, np.float32)})
    assert by_squares.stats().steps == 3 and by_squares.stats().skipped_non_finite == 1
    assert metrics.registry.get_sample_value("ewc_fisher_ema_steps_total", {"task": "t1"}) == 3


def test_per_sample_linear_fisher_equals_one_backward_pass_per_sample() -> None:
    from neurosim.learning.fisher import per_sample_linear_fisher

    gen = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(5, 3)
    x = torch.randn((8, 5), generator=gen)
    y = torch.randint(0, 3, (8,), generator=gen)
    expected_w, expected_b = torch.zeros(3, 5), torch.zeros(3)
    for n in range(8):
        gw, gb = torch.autograd.grad(torch.log_softmax(layer(x[n : n + 1]), dim=1)[0, y[n]], [layer.weight, layer.bias])
        expected_w += gw**2 / 8
        expected_b += gb**2 / 8
    z = layer(x)
    # the gradient of the batch-mean loss at the outputs, times the batch: each sample's own
    (at_outputs,) = torch.autograd.grad(torch.nn.functional.cross_entropy(z, y), z)
    weight, bias = per_sample_linear_fisher(x, at_outputs * 8)
    torch.testing.assert_close(weight, expected_w)
    torch.testing.assert_close(bias, expected_b)
    with pytest.raises(ValueError, match="one batch size"):
        per_sample_linear_fisher(x, at_outputs[:4])
    with pytest.raises(ValueError, match="at least one sample"):
        per_sample_linear_fisher(x[:0], at_outputs[:0])


async def test_a_fisher_that_stays_zero_is_reported_once() -> None:
    acc, _ = _acc(min_samples=3, snapshot_every=5, max_staleness_steps=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one zero interval snapshot is normal early on
        for _ in range(5):
            await acc.update(_grads(0.0))
        await acc.flush()
    with pytest.warns(RuntimeWarning, match="every Fisher entry is still zero after 10 steps"):
        for _ in range(5):  # e.g. a learner whose LinearReadout still has zero weights
            await acc.update(_grads(0.0))
        await acc.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per accumulator, not at every snapshot
        for _ in range(5):
            await acc.update(_grads(0.0))
        await acc.flush()
    live, _ = _acc(min_samples=3, snapshot_every=5, max_staleness_steps=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(5):
            await live.update(_grads(0.5))
        await live.flush()
    acc.close()
    live.close()
    forced, _ = _acc(min_samples=3, snapshot_every=100, max_staleness_steps=500)
    for _ in range(5):
        await forced.update(_grads(0.0))
    with pytest.warns(RuntimeWarning, match="still zero"):
        await forced.force_snapshot()  # the Fisher a consolidation would use
    forced.close()


async def test_default_staleness_follows_the_snapshot_interval(caplog: pytest.LogCaptureFixture) -> None:
    assert FisherAccumulatorConfig(snapshot_every=500).max_staleness_steps == 5000
    assert FisherAccumulatorConfig().max_staleness_steps == 10 * FisherAccumulatorConfig().snapshot_every
    acc, metrics = _acc(snapshot_every=500, min_samples=1)
    with caplog.at_level(logging.WARNING):
        for _ in range(600):  # past the first interval, its write possibly still in flight
            await acc.update(_grads(1.0))
        await acc.flush()
    assert "no snapshot written" not in caplog.text
    assert metrics.registry.get_sample_value("ewc_fisher_staleness_breaches_total", {"task": "t1"}) == 0
    acc.close()


@pytest.mark.parametrize("policy", [NonFinitePolicy.RAISE, NonFinitePolicy.SKIP])
async def test_a_gradient_that_overflows_the_float32_ema_is_non_finite(policy: NonFinitePolicy) -> None:
    acc, _ = _acc(non_finite=policy, min_samples=1, snapshot_every=1000)
    huge = {"w": np.full(4, 1e30, np.float64), "b": np.ones(1, np.float64)}  # finite, but 1e60 in float32 is not
    if policy is NonFinitePolicy.RAISE:
        with pytest.raises(NonFiniteGradientError):
            await acc.update(huge)
    else:
        await acc.update(huge)
        await acc.update_squares({"w": np.full(4, -np.inf, np.float32), "b": np.ones(1, np.float32)})  # skipped too
        assert acc.stats().skipped_non_finite == 2
    await acc.update(_grads(1.0))
    assert bool(torch.isfinite(acc.fisher["w"]).all())  # the EMA never saw the overflow
    acc.close()


def test_compare_fisher_gives_scale_and_rank_agreement() -> None:
    from neurosim.learning.fisher import compare_fisher

    reference = {"b": np.array([1e-6, 1e-4]), "w": torch.tensor([[1e-2, 0.0]])}  # arrays or tensors
    halved = compare_fisher({"w": reference["w"] / 2, "b": reference["b"] / 2}, reference)
    assert halved.scale == pytest.approx(0.5) and halved.log_correlation == pytest.approx(1.0, abs=1e-4)
    assert halved.linear_correlation == pytest.approx(1.0)
    flipped = compare_fisher({"b": np.array([1e-2, 0.0]), "w": np.array([[1e-4, 1e-6]])}, reference)
    assert flipped.linear_correlation < 0 and flipped.log_correlation < 0
    with pytest.raises(ValueError, match="3 Fisher entries in the estimate against 4"):
        compare_fisher({"b": np.zeros(2), "w": np.ones(1)}, {"b": np.zeros(2), "w": np.ones(2)})
    with pytest.raises(ValueError, match=r"parameters \['b'\], the reference \['b', 'w'\]"):
        compare_fisher({"b": np.zeros(2)}, reference)
    with pytest.raises(ValueError, match="zero everywhere"):
        compare_fisher(reference, {"b": np.zeros(2), "w": np.zeros((1, 2))})
