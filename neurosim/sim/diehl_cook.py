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

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch

from neurosim.datasets.encoding import poisson_rates
from neurosim.sim import connectivity as conn
from neurosim.sim.inputs import PoissonInput
from neurosim.sim.monitors import ChunkResult
from neurosim.sim.network import Network, Population
from neurosim.sim.neurons import AdaptiveLIF, ConductanceLIF
from neurosim.sim.synapses import Channel, Projection

if TYPE_CHECKING:
    from neurosim.sim.engine import Simulation

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


class LayerPresenter:
    """Diehl & Cook's presentation of an image to the layer: Poisson rates proportional to the
    pixels (``max_rate`` Hz for intensity 1) for ``present`` s, then ``rest`` s of silence,
    repeated brighter (``max_rate`` times 2, 3, 4) until the excitatory layer answers with
    ``min_spikes`` spikes; returns the excitatory spike counts. ``normalise()`` rescales each
    excitatory neuron's input weights to sum to ``weight_sum`` (the paper does it after
    every image)."""

    def __init__(self, sim: Simulation, *, max_rate: float, present: float, rest: float, weight_sum: float,
                 min_spikes: int = 5, attempts: int = 4) -> None:  # fmt: skip
        inputs = sim.network.inputs["input"]
        if not isinstance(inputs, PoissonInput):
            raise TypeError("the input population must be a PoissonInput")
        self.sim, self.inputs = sim, inputs
        self.projection = sim.network.projections["input_exc"]
        self.max_rate, self.present_s, self.rest_s, self.weight_sum = max_rate, present, rest, weight_sum
        self.min_spikes, self.attempts = min_spikes, attempts
        self.counts = np.zeros(sim.network.source_size("exc"), dtype=np.int64)
        self._training_spikes, self._training_seconds = 0, 0.0
        sim.add_chunk_hook(self._count)

    def _count(self, result: ChunkResult) -> None:
        np.add.at(self.counts, result.spikes["exc"].indices, 1)

    @property
    def training_rate_hz(self) -> float:
        """The excitatory layer's mean rate per neuron over the training presentations so far
        (the answer that counted, ``present`` s each): what sleep calibrates its drive to."""
        return self._training_spikes / max(self.counts.size * self._training_seconds, 1e-12)

    async def present(self, image: npt.NDArray[np.float32], *, training: bool = False) -> npt.NDArray[np.int64]:
        """The layer's spike counts for ``image``; ``training`` ones count towards ``training_rate_hz``."""
        counts = np.zeros_like(self.counts)
        for boost in range(self.attempts):
            self.counts[:] = 0
            self.inputs.set_rates(poisson_rates(image, self.max_rate * (1 + boost)))
            await self.sim.run_async(self.present_s)
            counts = self.counts.copy()
            self.inputs.set_rates(0.0)
            if self.rest_s > 0:
                await self.sim.run_async(self.rest_s)
            if counts.sum() >= self.min_spikes:
                break
        if training:
            self._training_spikes += int(counts.sum())
            self._training_seconds += self.present_s
        return counts

    @contextlib.contextmanager
    def thresholds_frozen(self) -> Iterator[None]:
        """Test time: the excitatory thresholds stop adapting (``theta_plus = 0``), restored after."""
        params = self.sim.network.populations["exc"].params
        if not isinstance(params, AdaptiveLIF):
            raise TypeError("the excitatory population must be AdaptiveLIF")
        self.sim.set_population_params("exc", dataclasses.replace(params, theta_plus=0.0))
        try:
            yield
        finally:
            self.sim.set_population_params("exc", params)

    def checkpoint_state(self) -> dict[str, float]:
        """The training spike count and seconds behind ``training_rate_hz`` (a checkpoint)."""
        return {"training_spikes": self._training_spikes, "training_seconds": self._training_seconds}

    def restore_state(self, saved: Mapping[str, float]) -> None:
        """Put back what ``checkpoint_state`` returned."""
        self._training_spikes, self._training_seconds = int(saved["training_spikes"]), float(saved["training_seconds"])

    def normalise(self) -> None:
        """Scale each excitatory neuron's input weights to sum to ``weight_sum`` (Diehl & Cook's normalisation)."""
        proj = self.projection
        w = proj.synapse_weights()
        sums = torch.zeros(proj.n_post, dtype=w.dtype).index_add_(0, proj.post_index, w)
        proj.set_synapse_weights(w * (self.weight_sum / sums.clamp_min(1e-12))[proj.post_index])
