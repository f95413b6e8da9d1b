"""Surrogate spike derivatives and the online eligibility gradient.

A spike is ``z = H(v - v_threshold)``; its derivative is replaced by a smooth surrogate
``psi(v)`` of ``x = (v - v_threshold) / width``:

- ``FAST_SIGMOID`` (SuperSpike; Zenke & Ganguli 2018): ``psi = 1 / (2 width (1 + |x|)^2)``
- ``ARCTAN`` (Fang et al. 2021): ``psi = 1 / (width (1 + (pi x)^2))``

Both integrate to 1 over v. ``spike(v, threshold, surrogate)`` applies the Heaviside in the
forward pass and ``psi`` in the backward pass (as ``torch.autograd.Function`` objects).

Online eligibility gradient (e-prop; Bellec et al. 2020). For a synapse i -> j::

    e_ij(t) = psi(v_j(t)) * xbar_i(t)       xbar_i: filtered presynaptic trace
    g_ij(t) = L_j(t) * e_ij(t)              L_j = d log p(y|x) / d z_j, from a readout

Summed over a sample, ``g_ij`` equals ``d log p(y|x, theta) / d w_ij`` computed by
backpropagation through time when ``v_j`` depends on ``w`` only through ``xbar`` (a
feed-forward layer, no reset, ``xbar`` filtered with the membrane's own decay) and the
learning signal is constant over the sample (a rate readout). ``tests/test_surrogate.py``
holds the two against each other there.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

import torch

Tensor = torch.Tensor


class SurrogateKind(enum.StrEnum):
    """The surrogate derivative's shape: fast sigmoid (SuperSpike) or arctan."""

    FAST_SIGMOID = "fast_sigmoid"
    ARCTAN = "arctan"


def surrogate_derivative(x: Tensor, kind: SurrogateKind, width: float) -> Tensor:
    """``psi`` at ``x = (v - threshold) / width``, in 1/V."""
    if kind is SurrogateKind.FAST_SIGMOID:
        return 0.5 / (width * (1.0 + x.abs()) ** 2)
    return 1.0 / (width * (1.0 + (math.pi * x) ** 2))


class _SpikeFunction(torch.autograd.Function):
    kind: SurrogateKind

    @classmethod
    def forward(cls, ctx: Any, v_minus_threshold: Tensor, width: float) -> Tensor:
        ctx.save_for_backward(v_minus_threshold)
        ctx.width = width
        return (v_minus_threshold > 0).to(v_minus_threshold.dtype)

    @classmethod
    def backward(cls, ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        (diff,) = ctx.saved_tensors
        return grad_output * surrogate_derivative(diff / ctx.width, cls.kind, ctx.width), None


class FastSigmoidSpike(_SpikeFunction):
    """Heaviside forward, the fast-sigmoid surrogate backward (``torch.autograd.Function``)."""

    kind = SurrogateKind.FAST_SIGMOID


class ArctanSpike(_SpikeFunction):
    """Heaviside forward, the arctan surrogate backward (``torch.autograd.Function``)."""

    kind = SurrogateKind.ARCTAN


_FUNCTIONS: dict[SurrogateKind, type[_SpikeFunction]] = {
    SurrogateKind.FAST_SIGMOID: FastSigmoidSpike,
    SurrogateKind.ARCTAN: ArctanSpike,
}


@dataclass(frozen=True)
class Surrogate:
    """A surrogate choice; picklable and ``torch.save``-able (a frozen dataclass of an enum
    and a float)."""

    kind: SurrogateKind = SurrogateKind.FAST_SIGMOID
    width: float = 1e-3  # V: the voltage scale of the surrogate

    def __post_init__(self) -> None:
        if not (math.isfinite(self.width) and self.width > 0):
            raise ValueError(f"Surrogate.width must be a positive number of volts, got {self.width!r}")

    def spike(self, v: Tensor, threshold: Tensor | float) -> Tensor:
        """Heaviside forward, surrogate backward."""
        out: Tensor = _FUNCTIONS[self.kind].apply(v - threshold, self.width)  # type: ignore[no-untyped-call]
        return out

    def derivative(self, v: Tensor, threshold: Tensor | float) -> Tensor:
        """The surrogate spike derivative ``psi(v)`` around ``threshold``."""
        return surrogate_derivative((v - threshold) / self.width, self.kind, self.width)


@torch.no_grad()
def eligibility(psi_post: Tensor, pre_trace: Tensor, pre_index: Tensor, post_index: Tensor) -> Tensor:
    """``e_k = psi(v_post[k]) * xbar_pre[k]`` per synapse ``k``, shape ``(batch, n_synapses)``."""
    return psi_post[:, post_index] * pre_trace[:, pre_index]


@torch.no_grad()
def online_gradient(
    psi_post: Tensor, pre_trace: Tensor, learning_signal: Tensor, pre_index: Tensor, post_index: Tensor
) -> Tensor:
    """``g_k = L_post[k] * psi(v_post[k]) * xbar_pre[k]`` per instance, ``(batch, n_synapses)``."""
    return learning_signal[:, post_index] * eligibility(psi_post, pre_trace, pre_index, post_index)
