"""
neurosim's learner inside a Brian2 network
==========================================

A plain Brian2 network (200 Poisson inputs onto 10 conductance-based LIF neurons, as in
Song, Miller & Abbott 2000) simulates the dynamics; a Brian2 ``network_operation`` hands
every step's spikes and membrane potentials to neurosim's ``STDPOnlineLearner``, which
applies pair STDP to a mirror of the synapses, writes the weights back, and feeds its
surrogate gradients to a ``FisherAccumulator`` whose snapshots go to a
``DirectoryFisherStore``. ``examples/brian2_embedded_learner.py`` is the script (1 s);
here 0.3 s.
"""

# %%
import runpy
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from _paths import EXAMPLES

embedded = runpy.run_path(str(EXAMPLES / "brian2_embedded_learner.py"))
result = embedded["run"](0.3, Path(tempfile.mkdtemp()))
print(f"{result['output_spikes']} output spikes; Fisher snapshots {result['versions']}")

# %%
# Left: the output raster (Brian2's SpikeMonitor). Middle: how far each synapse moved
# under neurosim's STDP. Right: the Fisher information of each synapse, per output neuron.
fig, (raster, moved, fisher) = plt.subplots(1, 3, figsize=(11, 3))
raster.plot(result["spike_times"], result["spike_indices"], "|k")
raster.set_xlabel("time (s)")
raster.set_ylabel("output neuron")
moved.hist(result["w"] - result["w0"], bins=40, color="tab:green")
moved.set_xlabel("weight change")
per_neuron = np.zeros(10)
np.add.at(per_neuron, result["post"], result["fisher"])
fisher.bar(range(10), per_neuron, color="tab:purple")
fisher.set_xlabel("output neuron")
fisher.set_ylabel("summed Fisher of its inputs")
fig.tight_layout()
