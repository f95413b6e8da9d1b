"""The consolidation layer (``neurosim.learning.consolidation`` and its members) from a
plain PyTorch training loop: each method reduces forgetting on a two-task toy; the
reservoir keeps a uniform sample; merging, the neuromodulated gain and the drift detector
do what their equations say."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from neurosim.datasets import load_digits
from neurosim.learning.consolidation import (
    Consolidation,
    Consolidator,
    ConsolidatorBase,
    LearningStep,
    TaskData,
    TrainingSignals,
    apply_proposed_weights,
    train_step,
)
from neurosim.learning.drift import DriftDirection, PageHinkley, PageHinkleyConfig
from neurosim.learning.ewc import EWC, EWCConfig, OnlineFisherEWC, OnlineFisherFeed
from neurosim.learning.merge import FisherMerge, fisher_weighted_merge
from neurosim.learning.neuromodulation import (
    GammaGatedFisherEWC,
    ModulatorSignal,
    NeuromodulationConfig,
    Neuromodulator,
)
from neurosim.learning.replay import ExperienceReplay, ReservoirBuffer
from neurosim.learning.si import SI, SIConfig

Tensor = torch.Tensor
Task = tuple[Tensor, Tensor, Tensor, Tensor]


@pytest.fixture(scope="module")
def two_tasks() -> list[Task]:
    """8x8 digits, then the same digits under a fixed pixel permutation (domain-incremental)."""
    data = load_digits()
    x = torch.from_numpy(data.images).float()
    y = torch.from_numpy(data.labels).long()
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(64, generator=g)
    order = torch.randperm(len(y), generator=g)
    train, test = order[:1400], order[1400:]
    return [(x[train], y[train], x[test], y[test]), (x[train][:, perm], y[train], x[test][:, perm], y[test])]


def train_sequentially(tasks: Sequence[Task], make: Callable[[nn.Module], list[Consolidator]],
                       steps: int = 150) -> list[float]:  # fmt: skip
    """The loop a user writes: each hook of the protocol where it belongs. Test accuracy per task."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    params = dict(model.named_parameters())
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    method = Consolidation(make(model))
    rng = torch.Generator().manual_seed(0)
    for k, (x, y, _, _) in enumerate(tasks):
        method.begin_task(f"t{k}", params)
        for _ in range(steps):
            idx = torch.randint(0, len(y), (64,), generator=rng)
            train_step(method, optimiser, params, model(x[idx]), y[idx], inputs=x[idx])

        def log_prob(inputs: Tensor) -> Tensor:
            return torch.log_softmax(model(inputs), dim=1)

        method.end_task(f"t{k}", params, TaskData(x, y, log_prob, task=k))
        apply_proposed_weights(method, params)
    method.close()
    with torch.no_grad():
        return [float((model(t[2]).argmax(1) == t[3]).float().mean()) for t in tasks]


def _ce(model: nn.Module) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    return lambda x, y, tasks: nn.functional.cross_entropy(model(x), y)


METHODS: dict[str, Callable[[nn.Module], list[Consolidator]]] = {
    "ewc": lambda m: [EWC(EWCConfig(lambda_=1000.0), fisher_samples=200)],
    "online_ewc": lambda m: [EWC(EWCConfig(lambda_=1000.0, mode="online"), fisher_samples=200)],  # type: ignore[arg-type]
    "online_fisher_ewc": lambda m: [OnlineFisherEWC(EWCConfig(lambda_=1000.0), OnlineFisherFeed(alpha=0.1))],
    "gamma_gated": lambda m: [GammaGatedFisherEWC(EWCConfig(lambda_=1000.0), OnlineFisherFeed(alpha=0.1))],
    "si": lambda m: [SI(SIConfig(strength=1.0))],
    "replay": lambda m: [ExperienceReplay(ReservoirBuffer(70), _ce(m), batch_size=64)],
    "replay_from_stream": lambda m: [ExperienceReplay(ReservoirBuffer(70), _ce(m), batch_size=64, from_stream=True)],
    "merge": lambda m: [FisherMerge(fisher_samples=200)],
}


@pytest.fixture(scope="module")
def without_consolidation(two_tasks: list[Task]) -> list[float]:
    return train_sequentially(two_tasks, lambda m: [])


@pytest.mark.parametrize("name", list(METHODS))
def test_each_consolidator_reduces_forgetting_on_two_tasks(
    name: str, two_tasks: list[Task], without_consolidation: list[float]
) -> None:
    first_none = without_consolidation[0]
    assert first_none < 0.7  # the toy forgets: task 1 falls from ~0.95
    first, second = train_sequentially(two_tasks, METHODS[name])
    assert first > first_none + 0.15, f"{name}: task 1 {first:.3f} against {first_none:.3f} without consolidation"
    assert second > 0.6, f"{name}: task 2 not learned ({second:.3f})"


def test_train_step_observes_the_task_gradient_alone_and_the_steps_weight_change() -> None:
    class Recorder(ConsolidatorBase):
        wants_deltas = True

        def __init__(self) -> None:
            self.steps: list[LearningStep] = []

        def penalty(self, parameters: object) -> Tensor:  # type: ignore[override]
            return 100.0 * (parameters["w"] ** 2).sum()  # type: ignore[index]

        def observe(self, step: LearningStep) -> None:
            self.steps.append(step)

    torch.manual_seed(0)
    w = torch.randn(3, 4, requires_grad=True)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    task_grad = torch.autograd.grad(nn.functional.cross_entropy(x @ w.T, y), w)[0]
    recorder, before = Recorder(), w.detach().clone()
    outcome = train_step(recorder, torch.optim.SGD([w], lr=0.1), {"w": w}, x @ w.T, y, inputs=x)
    step = recorder.steps[0]
    assert torch.allclose(step.gradients["w"], task_grad)  # not the penalty's 200 w
    assert torch.allclose(step.deltas["w"], w.detach() - before)
    assert torch.allclose(step.deltas["w"], -0.1 * (task_grad + 200.0 * before), atol=1e-6)
    assert step.batch_size == 5 and step.signals.loss == pytest.approx(outcome.loss)
    assert outcome.consolidation_s >= 0.0


def test_consolidation_combines_members_and_refuses_non_members() -> None:
    class Constant(ConsolidatorBase):
        def __init__(self, value: float) -> None:
            self.value = value

        def penalty(self, parameters: object) -> Tensor:  # type: ignore[override]
            return torch.tensor(self.value)

        def pull(self, name: str, weights: Tensor) -> Tensor:
            return torch.full_like(weights, self.value)

    both = Consolidation([Constant(1.0), Constant(2.0)])
    penalty = both.penalty({})
    assert penalty is not None and float(penalty) == 3.0
    pull = both.pull("w", torch.zeros(3))
    assert pull is not None and torch.equal(pull, torch.full((3,), 3.0))
    assert Consolidation().penalty({}) is None and Consolidation().pull("w", torch.zeros(1)) is None
    with pytest.raises(TypeError, match="does not implement the Consolidator protocol"):
        Consolidation([object()])  # type: ignore[list-item]


def test_methods_that_need_the_tasks_data_say_so() -> None:
    w = {"w": torch.zeros(2, requires_grad=True)}
    with pytest.raises(ValueError, match=r"EWC.end_task\('a'\) needs the task's data"):
        EWC().end_task("a", w)
    with pytest.raises(ValueError, match=r"needs TaskData\.log_prob"):
        FisherMerge().end_task("a", w, TaskData(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)))
    with pytest.raises(ValueError, match="deltas"):
        si = SI()
        si.begin_task("a", w)
        si.observe(LearningStep({"w": torch.ones(2)}))


# --------------------------------------------------------------------------- the reservoir
def test_reservoir_keeps_every_sample_with_equal_probability() -> None:
    """After N samples each is held with probability capacity / N, wherever it was in the stream:
    retention counts over many seeded streams are uniform (chi-square) and have that mean."""
    n, capacity, trials = 200, 20, 600
    held = np.zeros(n)
    stream = torch.arange(n, dtype=torch.float32)[:, None]
    for seed in range(trials):
        buffer = ReservoirBuffer(capacity, seed=seed)
        for start in range(0, n, 50):  # in batches, as a training loop offers them
            buffer.add(stream[start : start + 50], torch.zeros(50, dtype=torch.long))
        assert len(buffer) == capacity and buffer.seen == n
        held[buffer.contents().inputs[:, 0].long().numpy()] += 1
    assert held.sum() == capacity * trials
    expected = trials * capacity / n
    assert stats.chisquare(held).pvalue > 1e-3
    early, late = held[: n // 4].mean(), held[-n // 4 :].mean()
    assert abs(early - expected) < 0.1 * expected and abs(late - expected) < 0.1 * expected


def test_reservoir_class_balance_statistics() -> None:
    buffer = ReservoirBuffer(100, seed=0)
    buffer.add(torch.zeros(60, 3), torch.tensor([0] * 30 + [1] * 30))
    assert buffer.class_counts(3).tolist() == [30, 30, 0]
    assert buffer.class_balance(3) == pytest.approx(1.0)
    buffer.add(torch.zeros(40, 3), torch.full((40,), 2))
    assert buffer.class_balance(3) < 1.0
    with pytest.raises(ValueError, match="positive integer"):
        ReservoirBuffer(0)
    with pytest.raises(ValueError, match="the buffer holds"):
        buffer.add(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))


# --------------------------------------------------------------------------- merging
def test_fisher_weighted_merge_follows_its_equation() -> None:
    wa, wb = {"w": torch.tensor([0.0, 0.0, 1.0])}, {"w": torch.tensor([1.0, 1.0, 3.0])}
    fa, fb = {"w": torch.tensor([1.0, 0.0, 3.0])}, {"w": torch.tensor([1.0, 0.0, 1.0])}
    merged = fisher_weighted_merge([wa, wb], [fa, fb], eps=1e-8)["w"]
    # equal Fisher: the mean; no Fisher: the last task's weight; else the Fisher-weighted mean
    assert merged.tolist() == pytest.approx([0.5, 1.0, (3 * 1 + 1 * 3) / 4])
    dominant = fisher_weighted_merge([wa, wb], [{"w": torch.full((3,), 1e6)}, {"w": torch.full((3,), 1e-6)}])
    assert torch.allclose(dominant["w"], wa["w"], atol=1e-6)
    with pytest.raises(ValueError, match="negative"):
        fisher_weighted_merge([wa, wb], [fa, {"w": -torch.ones(3)}])


# --------------------------------------------------------------------------- neuromodulation
def test_gain_rises_when_learning_goes_better_than_expected() -> None:
    modulator = Neuromodulator(NeuromodulationConfig(signal=ModulatorSignal.LOSS, warmup=5))
    gains = [modulator.update(TrainingSignals(loss=1.0 + 0.01 * (k % 2))) for k in range(20)]
    assert gains[:5] == [1.0] * 5  # warm-up: the expectation forms
    assert modulator.update(TrainingSignals(loss=0.5)) > 1.5  # much lower loss than expected
    assert modulator.update(TrainingSignals(loss=3.0)) < 0.5  # a surprising failure
    reward = Neuromodulator(NeuromodulationConfig(signal=ModulatorSignal.REWARD, warmup=1))
    reward.update(TrainingSignals(reward=0.0))
    reward.update(TrainingSignals(reward=0.1))
    assert reward.update(TrainingSignals(reward=1.0)) > 1.0  # more reward than expected: more plasticity
    with pytest.raises(ValueError, match="reads 'accuracy'"):
        Neuromodulator(NeuromodulationConfig(signal=ModulatorSignal.ACCURACY)).update(TrainingSignals(loss=1.0))


def test_gamma_gated_fisher_weighs_steps_by_their_gain() -> None:
    """Same gradients, same EMA: a step that went better than expected counts more; with
    sensitivity 0 the gated Fisher is the plain one."""

    def fisher(modulation: NeuromodulationConfig | None) -> float:
        ewc, feed = EWCConfig(lambda_=1.0), OnlineFisherFeed(alpha=0.5)
        f = GammaGatedFisherEWC(ewc, feed, modulation=modulation) if modulation else OnlineFisherEWC(ewc, feed)
        f.begin_task("a", {"w": torch.zeros(4)})
        for loss in (1.0, 1.1, 1.0, 1.1, 1.0, 0.2):  # the last step: a loss far below the expectation
            f.observe(LearningStep({"w": torch.ones(4)}, batch_size=1, signals=TrainingSignals(loss=loss)))
        assert f.accumulator is not None
        value = float(f.accumulator.fisher["w"][0])
        f.close()
        return value

    plain = fisher(None)
    assert fisher(NeuromodulationConfig(sensitivity=0.0, warmup=2)) == pytest.approx(plain, rel=1e-6)
    assert fisher(NeuromodulationConfig(warmup=2, rate=0.5)) > 1.2 * plain


# --------------------------------------------------------------------------- drift
def _streams(n: int, length: int, change: int | None, shift: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, size=(n, length))
    if change is not None:
        x[:, change:] += shift
    return x


def test_page_hinkley_finds_a_mean_shift_quickly_and_rarely_raises_false_alarms() -> None:
    """The defaults on unit-variance streams (docs/consolidation.md has the full table): a shift
    of one standard deviation is found in every stream, on average within 30 samples; a
    stationary stream of 1,000 samples raises an alarm in under 5 % of streams."""
    change, length = 500, 1000
    delays = []
    for stream in _streams(100, length, change, 1.0, seed=1):
        detector = PageHinkley()
        for x in stream:
            detector.update(x)
        after = [d for d in detector.detections if d >= change]
        assert after, "a one-sigma shift was missed"
        delays.append(after[0] - change)
    assert np.mean(delays) < 30
    false = 0
    for stream in _streams(100, length, None, 0.0, seed=2):
        detector = PageHinkley()
        for x in stream:
            detector.update(x)
        false += bool(detector.detections)
    assert false / 100 < 0.05


def test_page_hinkley_directions_and_checks() -> None:
    falling = np.concatenate([np.zeros(100), -3 * np.ones(50)])
    up = PageHinkley(PageHinkleyConfig(direction=DriftDirection.INCREASE))
    down = PageHinkley(PageHinkleyConfig(direction=DriftDirection.DECREASE))
    for x in falling:
        up.update(x)
        down.update(x)
    assert not up.detections and down.detections and 100 <= down.detections[0] < 110
    with pytest.raises(ValueError, match="threshold must be > 0"):
        PageHinkleyConfig(threshold=0.0)
    with pytest.raises(ValueError, match="finite"):
        PageHinkley().update(float("nan"))


async def test_a_spiking_learner_feeds_any_consolidator() -> None:
    """SI on STDP weights: the learner's surrogate gradients and weight changes reach the path
    integral through ``LearnerFeed``; after the task its importance is positive where the
    weights moved, and its pull on the learner draws them back towards the anchor."""
    from neurosim.learning import LinearReadout, PairSTDP, STDPOnlineLearner, Surrogate
    from neurosim.learning.consolidation import LearnerFeed
    from neurosim.sim import ConductanceLIF, Network, PoissonInput, Population, Projection
    from neurosim.sim import connectivity as conn

    net = Network()
    net.add_input(PoissonInput("inp", 50, 80.0))
    net.add_population(Population("out", 4, ConductanceLIF()))
    pre, post = conn.all_to_all(50, 4)
    w0 = conn.uniform_weights(pre.size, 0.0, 0.1, np.random.default_rng(0))
    net.add_projection(Projection.from_pairs("ff", "inp", "out", 50, 4, pre, post, w0))
    proj = net.projections["ff"]
    readout = LinearReadout(4, 3)
    readout.weight = torch.randn((3, 4), generator=torch.Generator().manual_seed(0))
    learner = STDPOnlineLearner(proj, PairSTDP(w_max=0.1, a_plus=1e-3, a_minus=1e-3), dt=1e-4, surrogate=Surrogate(),
                                readout=readout)  # fmt: skip
    si = SI(SIConfig(strength=1e4, pull_rate=0.5))
    params = {learner.parameter_name: proj.synapse_weights()}
    si.begin_task("a", params)
    feed = LearnerFeed(si, proj.synapse_weights, learner.parameter_name)
    gen = torch.Generator().manual_seed(2)
    learner.begin_sample(torch.tensor([1]))
    for _ in range(200):
        spikes_in, spikes_out = torch.rand((1, 50), generator=gen) < 0.1, torch.rand((1, 4), generator=gen) < 0.1
        v = -0.06 + 0.01 * torch.rand((1, 4), generator=gen)
        await learner.update(spikes_in, spikes_out, post_v=v, post_threshold=-0.054, accumulator=feed)
    anchor = proj.synapse_weights().clone()
    si.end_task("a", {learner.parameter_name: anchor})
    importance = si.si.importance[learner.parameter_name]
    assert float(importance.max()) > 0 and torch.isfinite(importance).all()
    proj.set_synapse_weights(anchor + 0.01)  # a later task moved every weight
    pull = si.pull(learner.parameter_name, proj.synapse_weights())
    assert pull is not None and float(pull[importance > 0].max()) < 0  # back towards the anchor


def test_sleep_on_a_dense_pytorch_layer_potentiates_active_inputs_and_depresses_silent_ones() -> None:
    """``sleep_dense_layer``: noise on the first half of the inputs only; the hidden neurons that
    fire strengthen their synapses from those inputs and weaken those from the silent half."""
    from neurosim.learning.sleep import SleepConfig, sleep_dense_layer
    from neurosim.sim.neurons import CurrentLIF

    torch.manual_seed(0)
    neuron = CurrentLIF(tau_m=10e-3, v_rest=0.0, v_threshold=1.0, v_reset=0.0, t_ref=0.0, r_m=1.0)
    weights = torch.full((5, 20), 0.5)
    before = weights.clone()
    rates = torch.cat([torch.full((10,), 400.0), torch.zeros(10)])
    cfg = SleepConfig(duration=0.2, inc=1e-3, dec=1e-3)
    sleep_dense_layer(weights, None, neuron, rates, cfg, 1e-3, bounds=(0.0, 1.0))
    change = weights - before
    assert float(change[:, :10].mean()) > 0 > float(change[:, 10:].mean())
    assert float(weights.min()) >= 0.0 and float(weights.max()) <= 1.0
    off = torch.full((5, 20), 0.5)
    sleep_dense_layer(off, None, neuron, rates, cfg.model_copy(update={"plasticity": False}), 1e-3)
    assert torch.equal(off, torch.full((5, 20), 0.5))  # the control: replay without plasticity
    with pytest.raises(ValueError, match="20 inputs"):
        sleep_dense_layer(weights, None, neuron, torch.zeros(3), cfg, 1e-3)
