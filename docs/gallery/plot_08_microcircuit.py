"""
The cortical microcircuit of Potjans & Diesmann (2014)
======================================================

Potjans, T. C. & Diesmann, M. (2014). The cell-type specific cortical microcircuit:
relating structure and activity in a full-scale spiking network model. *Cerebral Cortex*
24(3), 785-806.

Eight populations of ``iaf_psc_exp`` neurons (``CurrentLIF``, ``g = R_m I_syn``)::

    dv/dt = (E_L - v + g_exc + g_inh + R_m I_dc) / tau_m      [V]   (unless refractory)
    dg/dt = -g / tau_syn                                       [V]

tau_m 10 ms, C_m 250 pF, E_L = V_reset = -65 mV, V_th = -50 mV, t_ref 2 ms, tau_syn 0.5 ms;
the paper's connection probabilities, normally distributed per-synapse delays and an 8 Hz
Poisson background (``PoissonDrive``). Here at 5 % of the neurons and in-degrees (3,858
neurons, 0.75 million synapses) with the paper's DC compensation; ``examples/microcircuit.py``
runs any scale, and the user guide page "The cortical microcircuit" compares it with NEST and Brian2.
"""

# %%
import sys

import matplotlib.pyplot as plt
from _paths import EXAMPLES

sys.path.insert(0, str(EXAMPLES))
import microcircuit as example

from neurosim.build import build_simulation
from neurosim.microcircuit import POPULATIONS, MicrocircuitParams, derive, microcircuit_config
from neurosim.sim import SpikeMonitor

params = MicrocircuitParams(scale=0.05)
sim = build_simulation(microcircuit_config(params, duration=0.6))
monitors = {name: sim.add_monitor(SpikeMonitor(name)) for name in POPULATIONS}
run = sim.run(0.6)
print(f"0.6 s simulated in {run.wall_s:.2f} s")

# %%
# Rates and irregularity per population (the first 0.1 s left out), and the raster by layer.
sizes = {name: int(n) for name, n in zip(POPULATIONS, derive(params).sizes, strict=True)}
trains = {name: m.trains() for name, m in monitors.items()}
stats = example.statistics(trains, sizes, 0.1, 0.6)
for name in POPULATIONS:
    print(f"{name:5s} {stats[name]['rate_hz']:5.2f} Hz   CV ISI {stats[name]['cv_isi']:.2f}")

fig, ax = plt.subplots(figsize=(7, 5))
offset, ticks = 0, []
for name in reversed(POPULATIONS):
    tr = trains[name]
    keep = (tr.times >= 0.4) & (tr.indices < 500)
    ax.plot(tr.times[keep] * 1e3, tr.indices[keep] + offset, ",", color="tab:blue" if name.endswith("I") else "k")
    ticks.append((offset + min(sizes[name], 500) / 2, name))
    offset += min(sizes[name], 500) + 40
ax.set_yticks([t for t, _ in ticks], [n for _, n in ticks])
ax.set_xlabel("time (ms)")
fig.tight_layout()
