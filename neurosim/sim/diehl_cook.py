"""The Diehl & Cook (2015) layer: Poisson inputs onto excitatory neurons with adaptive
thresholds, each exciting one inhibitory neuron that inhibits every other excitatory one.

Diehl, P. U. & Cook, M. (2015). Unsupervised learning of digit recognition using
spike-timing-dependent plasticity. Front. Comput. Neurosci. 9:99.

Excitatory (``AdaptiveLIF``, conductance-based)::

    tau_m dv/dt = (v_rest - v) + g_e (E_exc - v) + g_i (E_inh - v)     tau_m = 100 ms
    v_rest = v_reset = -65 mV, threshold -72 mV + theta, E_exc = 0 mV, E_inh = -100 mV,
    tau_ge = 1 ms, tau_gi = 2 ms, refractory 5 ms, theta += theta_plus per spike (tau_theta 1e4 s)

Inhibitory (``ConductanceLIF``): tau_m = 10 ms, v_rest = -60 mV, v_reset = -45 mV,
threshold -40 mV, E_inh = -85 mV, refractory 2 ms. Input -> excitatory all-to-all with
uniform initial weights in ``[0, w_init_max]`` (plastic); excitatory -> inhibitory one-to-one
(``exc_to_inh``); inhibitory -> every other excitatory neuron (``inh_to_exc``, inhibitory
channel). Conductances are dimensionless (in units of the leak).

``examples/diehl_cook_digits.py`` and the continual-learning ``Experiment`` both build their
network here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from neurosim.sim import connectivity as conn
from neurosim.sim.inputs import PoissonInput
from neurosim.sim.network import Network, Population
from neurosim.sim.neurons import AdaptiveLIF, ConductanceLIF
from neurosim.sim.synapses import Channel, Projection

mV, ms = 1e-3, 1e-3


@dataclass(frozen=True)
class DiehlCookLayer:
    """The layer's sizes and the parameters experiments vary (the rest are the paper's)."""

    n_inputs: int
    n_exc: int
    w_init_max: float = 0.3
    exc_to_inh: float = 10.4
    inh_to_exc: float = 17.0
    theta_init: float = 20 * mV  # V, each excitatory neuron's threshold offset at the start
    theta_plus: float = 0.05 * mV  # V per spike
    v_init_exc: float = -105 * mV  # the paper's code starts 40 mV below rest
    v_init_inh: float = -100 * mV

    def __post_init__(self) -> None:
        if self.n_inputs < 1 or self.n_exc < 1:
            raise ValueError(f"DiehlCookLayer needs n_inputs >= 1 and n_exc >= 1, got {self.n_inputs}, {self.n_exc}")
        for name in ("w_init_max", "exc_to_inh", "inh_to_exc"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DiehlCookLayer.{name} must be > 0, got {getattr(self, name)!r}")
        if self.theta_init < 0 or self.theta_plus < 0:
            raise ValueError("DiehlCookLayer.theta_init and theta_plus must be >= 0 (volts)")


def diehl_cook_network(layer: DiehlCookLayer, seed: int, *, dtype: torch.dtype = torch.float32) -> Network:
    """The network: populations ``input``, ``exc``, ``inh``; projections ``input_exc`` (the
    plastic one), ``exc_inh``, ``inh_exc``. ``seed`` draws the initial input weights."""
    rng = np.random.default_rng(seed)
    n_in, n = layer.n_inputs, layer.n_exc
    net = Network()
    net.add_input(PoissonInput("input", n_in, 0.0))
    exc = AdaptiveLIF(
        tau_m=100 * ms, v_rest=-65 * mV, v_reset=-65 * mV, v_threshold=-72 * mV, t_ref=5 * ms, tau_exc=1 * ms,
        tau_inh=2 * ms, e_exc=0.0, e_inh=-100 * mV, tau_theta=1e4, theta_plus=layer.theta_plus,
    )  # fmt: skip
    inh = ConductanceLIF(
        tau_m=10 * ms, v_rest=-60 * mV, v_reset=-45 * mV, v_threshold=-40 * mV, t_ref=2 * ms, tau_exc=1 * ms,
        tau_inh=2 * ms, e_exc=0.0, e_inh=-85 * mV,
    )  # fmt: skip
    net.add_population(Population("exc", n, exc, {"v": layer.v_init_exc, "theta": layer.theta_init}))
    net.add_population(Population("inh", n, inh, {"v": layer.v_init_inh}))
    pre, post = conn.all_to_all(n_in, n)
    w = conn.uniform_weights(pre.size, 0.0, layer.w_init_max, rng)
    net.add_projection(Projection.from_pairs("input_exc", "input", "exc", n_in, n, pre, post, w, dtype=dtype))
    idx = np.arange(n, dtype=np.int64)
    one_to_one = conn.constant_weights(n, layer.exc_to_inh)
    net.add_projection(Projection.from_pairs("exc_inh", "exc", "inh", n, n, idx, idx, one_to_one, dtype=dtype))
    pre, post = conn.all_to_all(n, n, autapses=False)
    lateral = conn.constant_weights(pre.size, layer.inh_to_exc)
    net.add_projection(
        Projection.from_pairs("inh_exc", "inh", "exc", n, n, pre, post, lateral, channel=Channel.INH, dtype=dtype)
    )
    return net
