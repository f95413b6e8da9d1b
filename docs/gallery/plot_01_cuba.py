"""
CUBA: a balanced network of 4,000 current-based LIF neurons
===========================================================

Vogels, T. P. & Abbott, L. F. (2005). Signal propagation and logic gating in networks of
integrate-and-fire neurons. *J. Neurosci.* 25(46), 10786-10795; Brette et al. (2007),
benchmark 2; the same network as Brian2's ``examples/CUBA.py``::

    dv/dt  = (ge + gi - (v - El)) / taum   [V]   (unless refractory)
    dge/dt = -ge / taue                    [V]
    dgi/dt = -gi / taui                    [V]

taum 20 ms, taue 5 ms, taui 10 ms, Vt -50 mV, Vr -60 mV, El -49 mV, refractory 5 ms,
we = 1.62 mV, wi = -9 mV, 2 % connectivity, 3,200 excitatory and 800 inhibitory neurons.
The config is ``examples/cuba.toml``; the same network in Python is ``examples/cuba.py``.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from _paths import EXAMPLES

from neurosim.build import build_simulation
from neurosim.config import load_config
from neurosim.sim import SpikeMonitor, StateMonitor

cfg = load_config(EXAMPLES / "cuba.toml")
sim = build_simulation(cfg)
spikes = {name: sim.add_monitor(SpikeMonitor(name)) for name in ("exc", "inh")}
trace = sim.add_monitor(StateMonitor("exc", ["v"], indices=[0, 1, 2], every="0.1 ms"))
stats = sim.run("0.5 s")
rate = sum(stats.spikes.values()) / 4000 / 0.5
print(f"0.5 s simulated in {stats.wall_s:.2f} s; mean rate {rate:.2f} Hz (Brian2: about 5.6 Hz)")

# %%
# A raster of the first 400 neurons of each population and three membrane potentials.
fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=[2, 1])
for offset, (name, monitor) in enumerate(spikes.items()):
    t, i = monitor.times, monitor.indices
    keep = i < 400
    top.plot(t[keep], i[keep] + 400 * offset, ".", ms=1.5, color=("tab:blue", "tab:red")[offset], label=name)
top.set_ylabel("neuron (exc, then inh)")
top.legend(loc="upper right", markerscale=6)
bottom.plot(trace.times, trace.values["v"][:, 0, :] * 1e3)
bottom.set_xlabel("time (s)")
bottom.set_ylabel("v (mV)")
fig.tight_layout()

# %%
rates = np.bincount(spikes["exc"].indices, minlength=3200) / 0.5
print(f"excitatory rates: median {np.median(rates):.1f} Hz, {np.mean(rates == 0):.0%} silent")
