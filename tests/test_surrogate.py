"""Surrogate derivatives, and the online eligibility gradient against autograd (BPTT)."""

from __future__ import annotations

import io
import math
import pickle

import pytest
import torch

from neurosim.learning.readout import LinearReadout
from neurosim.learning.surrogate import Surrogate, SurrogateKind, online_gradient


@pytest.mark.parametrize("kind", list(SurrogateKind))
def test_surrogate_is_heaviside_forward_and_psi_backward(kind: SurrogateKind) -> None:
    s = Surrogate(kind, width=2e-3)
    v = torch.linspace(-0.01, 0.01, 101, dtype=torch.float64, requires_grad=True)
    z = s.spike(v, 0.001)
    assert torch.equal(z.detach(), (v.detach() > 0.001).double())
    z.sum().backward()
    torch.testing.assert_close(v.grad, s.derivative(v.detach(), 0.001))
    # psi integrates to ~1 over v, and peaks at the threshold
    grid = torch.linspace(-2.0, 2.0, 400_001, dtype=torch.float64)
    area = torch.trapezoid(s.derivative(grid, 0.0), grid)
    assert float(area) == pytest.approx(1.0, abs=2e-3)
    assert int(s.derivative(grid, 0.3).argmax()) == int((grid - 0.3).abs().argmin())


@pytest.mark.parametrize("kind", list(SurrogateKind))
def test_surrogates_pickle_and_round_trip_with_torch_save(kind: SurrogateKind) -> None:
    s = Surrogate(kind, width=5e-4)
    assert pickle.loads(pickle.dumps(s)) == s
    buf = io.BytesIO()
    torch.save({"surrogate": s}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)["surrogate"]
    v = torch.randn(10, dtype=torch.float64) * 1e-3
    assert torch.equal(loaded.derivative(v, 0.0), s.derivative(v, 0.0))


def test_invalid_width_is_refused() -> None:
    with pytest.raises(ValueError, match="width must be a positive"):
        Surrogate(width=0.0)


@pytest.mark.parametrize("kind", list(SurrogateKind))
def test_online_eligibility_gradient_equals_bptt_in_a_feedforward_layer(kind: SurrogateKind) -> None:
    """One feed-forward layer, no reset, membrane = trace-filtered input, rate readout: the
    e-prop gradient sum_t L_j psi(v_j(t)) xbar_i(t) is the exact gradient of log p(y|x)."""
    gen = torch.Generator().manual_seed(0)
    batch, n_in, n_out, n_classes, steps, dt = 3, 30, 12, 4, 200, 1e-3
    decay = math.exp(-dt / 20e-3)
    inputs = torch.rand((steps, batch, n_in), generator=gen, dtype=torch.float64) < 0.05
    pre_index = torch.arange(n_in).repeat_interleave(n_out)
    post_index = torch.arange(n_out).repeat(n_in)
    w0 = torch.rand(n_in * n_out, generator=gen, dtype=torch.float64) * 4e-3
    readout = LinearReadout(n_out, n_classes, dtype=torch.float64)
    readout.weight = torch.randn((n_classes, n_out), generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 2, 3])
    surrogate = Surrogate(kind, width=2e-3)
    threshold = 4e-3

    # reference: backpropagation through time with autograd through the surrogate
    w = w0.clone().requires_grad_(True)
    matrix = torch.zeros((n_in, n_out), dtype=torch.float64).index_put((pre_index, post_index), w)
    trace = torch.zeros((batch, n_in), dtype=torch.float64)
    count = torch.zeros((batch, n_out), dtype=torch.float64)
    traces, voltages = [], []
    for t in range(steps):
        trace = trace * decay + inputs[t].double()
        v = trace @ matrix
        count = count + surrogate.spike(v, threshold)
        traces.append(trace)
        voltages.append(v.detach())
    rates = count / (steps * dt)
    log_p = readout.log_prob(rates)[torch.arange(batch), labels]
    (grad_bptt,) = torch.autograd.grad(log_p.sum(), w)

    # online: per-step eligibility times the learning signal of the rate readout
    signal = readout.learning_signal(rates.detach(), labels) / (steps * dt)
    grad_online = torch.zeros_like(w0)
    for t in range(steps):
        psi = surrogate.derivative(voltages[t], threshold)
        grad_online += online_gradient(psi, traces[t].detach(), signal, pre_index, post_index).sum(0)
    assert float(grad_bptt.abs().max()) > 0
    rel = (grad_online - grad_bptt).norm() / grad_bptt.norm()
    assert float(rel) < 1e-4
