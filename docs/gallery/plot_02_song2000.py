"""
Song, Miller & Abbott (2000): STDP makes the weights bimodal
============================================================

Song, S., Miller, K. D. & Abbott, L. F. (2000). Competitive Hebbian learning through
spike-timing-dependent synaptic plasticity. *Nat. Neurosci.* 3, 919-926; Brian2's STDP
example. 1,000 Poisson inputs at 15 Hz onto one conductance-based LIF neuron; additive
pair STDP (tau 20 ms, a_minus = 1.05 a_plus) on the input weights, bounded in
[0, gmax]. Over time the weights split into a group near 0 and a group near gmax.

The config is ``examples/song2000_stdp.toml`` (100 s); here 60 s.
"""

# %%
import matplotlib.pyplot as plt
from _paths import EXAMPLES

from neurosim.build import build_simulation
from neurosim.config import load_config
from neurosim.learning import STDPOnlineLearner
from neurosim.sim import SpikeMonitor, WeightMonitor

cfg = load_config(EXAMPLES / "song2000_stdp.toml")
sim = build_simulation(cfg)
(plastic,) = cfg.plasticity
projection = sim.network.projections[plastic.projection]
STDPOnlineLearner(projection, plastic.rule.to_rule(), dt=sim.dt, scale=plastic.scale).attach(sim)
snapshots = sim.add_monitor(WeightMonitor(plastic.projection, every="20 s"))
out = sim.add_monitor(SpikeMonitor("neuron"))
stats = sim.run("60 s")
print(f"60 s simulated in {stats.wall_s:.1f} s; output rate {out.times.size / 60:.1f} Hz")

# %%
# The weight distribution (in units of gmax) every 20 s: from uniform to bimodal.
w_max = plastic.rule.w_max
times = [*snapshots.times, sim.t]
weights = [*snapshots.weights, projection.synapse_weights().numpy()]
fig, axes = plt.subplots(1, len(times), figsize=(10, 2.8), sharey=True)
for ax, t, w in zip(axes, times, weights, strict=True):
    ax.hist(w / w_max, bins=30, range=(0, 1), color="tab:green")
    ax.set_title(f"t = {t:.0f} s")
    ax.set_xlabel("w / gmax")
axes[0].set_ylabel("synapses")
fig.tight_layout()
