"""EWC and SI: the penalty and pull, online accumulation, and less forgetting on a toy pair of tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurosim.learning.ewc import Anchor, EWCConfig, EWCMode, EWCRegulariser, quadratic_penalty
from neurosim.learning.fisher import FisherKind, FisherSnapshot, InMemoryFisherStore, estimate_fisher
from neurosim.learning.si import SIConfig, SynapticIntelligence


def test_penalty_matches_the_formula_in_both_modes() -> None:
    theta = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5])}
    sep = EWCRegulariser(EWCConfig(lambda_=4.0))
    sep.consolidate("a", theta, {"w": np.array([1.0, 0.5], np.float32), "b": np.array([2.0], np.float32)})
    sep.consolidate("b", {"w": torch.tensor([0.0, 0.0]), "b": torch.tensor([0.0])},
                    {"w": np.array([1.0, 1.0], np.float32), "b": np.array([0.0], np.float32)})  # fmt: skip
    now = {"w": torch.tensor([2.0, 2.0]), "b": torch.tensor([1.5])}
    expected = 0.5 * 4.0 * ((1 * 1 + 0.5 * 0 + 2 * 1) + (4 + 4 + 0))
    assert float(sep.penalty(now)) == pytest.approx(expected)
    online = EWCRegulariser(EWCConfig(lambda_=4.0, mode=EWCMode.ONLINE, gamma=0.5))
    online.consolidate("a", theta, {"w": np.array([1.0, 0.5], np.float32), "b": np.array([2.0], np.float32)})
    online.consolidate("b", theta, {"w": np.array([1.0, 1.0], np.float32), "b": np.array([0.0], np.float32)})
    np.testing.assert_allclose(online.anchors["online"].fisher["w"].numpy(), [1.5, 1.25])
    np.testing.assert_allclose(online.anchors["online"].fisher["b"].numpy(), [1.0])
    assert list(online.anchors) == ["online"]


def test_penalty_gradient_is_the_ewc_force() -> None:
    reg = EWCRegulariser(EWCConfig(lambda_=3.0))
    reg.consolidate("a", {"w": torch.zeros(3)}, {"w": np.array([1.0, 2.0, 0.0], np.float32)})
    w = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
    reg.penalty({"w": w}).backward()
    np.testing.assert_allclose(w.grad.numpy(), [3.0, 6.0, 0.0])


def test_many_tasks_cost_one_quadratic_with_the_same_value_and_gradient() -> None:
    # ten anchors (some Fisher entries zero in every task, one parameter missing from the
    # input) against the term-by-term definition
    gen = torch.Generator().manual_seed(3)
    reg = EWCRegulariser(EWCConfig(lambda_=7.0))
    for task in range(10):
        fisher = {"w": torch.rand(50, 20, generator=gen), "b": torch.rand(20, generator=gen)}
        fisher["w"][:5] = 0.0
        reg.consolidate(f"t{task}", {"w": torch.randn(50, 20, generator=gen), "b": torch.randn(20, generator=gen)},
                        fisher)  # fmt: skip
    now = {"w": torch.randn(50, 20, generator=gen, requires_grad=True)}
    reference = {"w": now["w"].detach().clone().requires_grad_(True)}
    merged_value = reg.penalty(now)
    term_by_term = quadratic_penalty(reference, list(reg.anchors.values()), 7.0)
    assert float(merged_value.detach()) == pytest.approx(float(term_by_term.detach()), rel=1e-5)
    merged_value.backward()
    term_by_term.backward()
    np.testing.assert_allclose(now["w"].grad.numpy(), reference["w"].grad.numpy(), rtol=1e-4, atol=1e-5)
    assert not now["w"].grad[:5].any()
    with pytest.raises(TypeError):
        reg.anchors["x"] = reg.anchors["t0"]  # type: ignore[index]


def test_pull_moves_towards_the_anchor_without_overshooting() -> None:
    reg = EWCRegulariser(EWCConfig(lambda_=10.0, pull_rate=0.01))
    reg.consolidate("a", {"w": torch.zeros(3)}, {"w": np.array([1.0, 5.0, 1000.0], np.float32)})
    w = torch.ones(3)
    pull = reg.pull("w", w)
    assert pull is not None
    np.testing.assert_allclose(pull.numpy(), [-0.1, -0.5, -1.0])  # the last is capped at the anchor
    assert reg.pull("other", w) is None


def test_online_fisher_flag_reads_the_task_snapshot_from_the_store() -> None:
    store = InMemoryFisherStore()
    store.save(FisherSnapshot("a", 10, {"w": np.array([2.0, 0.0], np.float32)}))
    reg = EWCRegulariser(EWCConfig(lambda_=1.0, online_fisher=True), store)
    reg.consolidate("a", {"w": torch.zeros(2)})
    assert float(reg.penalty({"w": torch.ones(2)})) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs the store"):
        EWCRegulariser(EWCConfig(online_fisher=True))
    with pytest.raises(ValueError, match="pass the task's Fisher"):
        EWCRegulariser(EWCConfig()).consolidate("a", {"w": torch.zeros(2)})


def test_si_path_integral_and_importance() -> None:
    si = SynapticIntelligence(SIConfig(strength=1.0, damping=0.5))
    si.begin_task({"w": torch.zeros(2)})
    si.accumulate({"w": torch.tensor([-1.0, 2.0])}, {"w": torch.tensor([0.5, 0.5])})  # omega = [0.5, -1]
    si.accumulate({"w": torch.tensor([-1.0, 0.0])}, {"w": torch.tensor([0.5, 0.0])})  # omega = [1.0, -1]
    si.consolidate({"w": torch.tensor([1.0, 0.5])})
    np.testing.assert_allclose(si.importance["w"].numpy(), [1.0 / (1.0 + 0.5), 0.0])
    assert float(si.penalty({"w": torch.tensor([2.0, 0.0])})) == pytest.approx(1.0 / 1.5)


def _two_tasks() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Two conflicting linear tasks on different input features sharing one weight vector."""
    gen = torch.Generator().manual_seed(0)
    xa = torch.randn((400, 10), generator=gen)
    xa[:, 5:] *= 0.1
    ya = (xa[:, 0] + xa[:, 1] > 0).long()
    xb = torch.randn((400, 10), generator=gen)
    yb = (xb[:, 0] - xb[:, 5] + xb[:, 6] > 0).long()
    return (xa, ya), (xb, yb)


def _accuracy(w: torch.Tensor, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    x, y = data
    return float(((x @ w.T).argmax(1) == y).float().mean())


def _train(w: torch.Tensor, data, regulariser=None, steps: int = 300) -> None:
    opt = torch.optim.SGD([w], lr=0.5)
    x, y = data
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w.T, y)
        if regulariser is not None:
            loss = loss + regulariser({"w": w})
        loss.backward()
        opt.step()


@pytest.mark.parametrize("method", ["ewc", "online_ewc", "si"])
def test_consolidation_reduces_forgetting_on_two_tasks(method: str) -> None:
    task_a, task_b = _two_tasks()
    results = {}
    for regularise in (False, True):
        w = torch.zeros((2, 10), requires_grad=True)
        si = SynapticIntelligence(SIConfig(strength=2.0, damping=0.1))
        if method == "si":
            si.begin_task({"w": w})
            opt = torch.optim.SGD([w], lr=0.5)
            for _ in range(300):
                before = w.detach().clone()
                opt.zero_grad()
                torch.nn.functional.cross_entropy(task_a[0] @ w.T, task_a[1]).backward()
                grad = w.grad.detach().clone()
                opt.step()
                si.accumulate({"w": grad}, {"w": w.detach() - before})
            si.consolidate({"w": w})
            penalty = si.penalty
        else:
            _train(w, task_a)
            fisher = estimate_fisher(
                {"w": w}, lambda x, weights=w: torch.log_softmax(x @ weights.T, -1), [task_a], kind=FisherKind.TRUE
            )
            mode = EWCMode.ONLINE if method == "online_ewc" else EWCMode.SEPARATE
            reg = EWCRegulariser(EWCConfig(lambda_=10.0, mode=mode))
            reg.consolidate("a", {"w": w}, fisher)
            penalty = reg.penalty
        acc_a_before = _accuracy(w.detach(), task_a)
        _train(w, task_b, penalty if regularise else None)
        results[regularise] = (acc_a_before, _accuracy(w.detach(), task_a), _accuracy(w.detach(), task_b))
    (a0, a_plain, _), (_, a_reg, b_reg) = results[False], results[True]
    assert a0 > 0.9
    assert a_reg > a_plain + 0.1, results  # less forgetting
    assert b_reg > 0.85  # and task B is still learned


@pytest.mark.parametrize("mode", [EWCMode.ONLINE, EWCMode.SEPARATE])
def test_recentre_moves_the_anchor_and_keeps_its_fisher(mode: EWCMode) -> None:
    ewc = EWCRegulariser(EWCConfig(lambda_=2.0, mode=mode, pull_rate=0.1))
    fisher = {"w": torch.tensor([1.0, 0.0, 4.0])}
    ewc.consolidate("a", {"w": torch.zeros(3)}, fisher)
    ewc.consolidate("b", {"w": torch.ones(3)}, fisher)
    before = ewc.penalty({"w": torch.full((3,), 0.5)})
    ewc.recentre("b", {"w": torch.full((3,), 0.5)})  # e.g. the weights after sleep
    expected = [
        Anchor({"w": torch.zeros(3)}, fisher),
        Anchor({"w": torch.full((3,), 0.5)}, fisher),
    ] if mode is EWCMode.SEPARATE else [Anchor({"w": torch.full((3,), 0.5)}, {"w": 2 * fisher["w"]})]  # fmt: skip
    theta = {"w": torch.tensor([0.2, -1.0, 0.9])}
    assert float(ewc.penalty(theta)) == pytest.approx(float(quadratic_penalty(theta, expected, 2.0)))
    assert float(ewc.penalty({"w": torch.full((3,), 0.5)})) < float(before)
    pulled = ewc.pull("w", torch.full((3,), 0.5))
    assert pulled is not None  # the cached pull follows the new centre
    if mode is EWCMode.ONLINE:
        assert torch.equal(pulled, torch.zeros(3))
    with pytest.raises(KeyError, match="no anchor"):
        ewc.recentre("never-learned", {"w": torch.zeros(3)})
    with pytest.raises(ValueError, match="parameters"):
        ewc.recentre("b", {"v": torch.zeros(3)})
