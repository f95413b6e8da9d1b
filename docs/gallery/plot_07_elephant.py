"""
Analysing a run with Neo and Elephant
=====================================

``neurosim.interop.neo_io.to_block`` turns a run's output directory (or a simulation's
spike monitors) into a ``neo.Block``: one ``SpikeTrain`` per neuron, with units, annotated
with its population and index. Elephant (Denker et al. 2018) then does the analysis:
firing rates, the coefficient of variation of the inter-spike intervals (CV, 1 for a
Poisson process), and cross-correlation histograms. (``neurosim export DIR --format nwb``
writes the same spikes as an NWB file for sharing.)

Here: 1 s of CUBA run with ``neurosim run``, then analysed.
"""

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import quantities as pq
from _paths import EXAMPLES
from elephant.conversion import BinnedSpikeTrain
from elephant.spike_train_correlation import cross_correlation_histogram
from elephant.statistics import cv, isi, mean_firing_rate

from neurosim.config import load_config
from neurosim.interop.neo_io import to_block
from neurosim.runner import run_simulation

out = Path(tempfile.mkdtemp()) / "cuba"
run_simulation(load_config(EXAMPLES / "cuba.toml"), out, progress=False)
block = to_block(out)
exc, inh = (group.spiketrains for group in block.groups)
print(f"{len(exc)} excitatory and {len(inh)} inhibitory spike trains, t_stop = {exc[0].t_stop}")

# %%
# Firing rates and CV of the inter-spike intervals (neurons with at least 3 spikes): the
# network is asynchronous and irregular (the median CV is printed below).
rates = [float(mean_firing_rate(t).rescale(pq.Hz)) for t in exc]
cvs = [cv(isi(t)) for t in exc if len(t) >= 3]
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3))
left.hist(rates, bins=30, color="tab:blue")
left.set_xlabel("firing rate (Hz)")
left.set_ylabel("excitatory neurons")
right.hist(cvs, bins=30, color="tab:orange")
right.set_xlabel("CV of inter-spike intervals")
fig.tight_layout()
print(f"mean rate {np.mean(rates):.2f} Hz; median CV {np.median(cvs):.2f}")

# %%
# Cross-correlation histogram between the pooled excitatory and pooled inhibitory
# activity (1 ms bins, +-50 ms).
from neo import SpikeTrain  # noqa: E402


def pooled(trains: list[SpikeTrain]) -> SpikeTrain:
    times = np.sort(np.concatenate([t.magnitude for t in trains]))
    return SpikeTrain(times * pq.s, t_start=trains[0].t_start, t_stop=trains[0].t_stop)


binned = [BinnedSpikeTrain(pooled(trains), bin_size=1 * pq.ms) for trains in (exc, inh)]
histogram, lags = cross_correlation_histogram(*binned, window=[-50, 50], border_correction=False)
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(lags, histogram.magnitude.ravel(), width=1.0, color="tab:gray")
ax.set_xlabel("lag (ms): inhibitory after excitatory > 0")
ax.set_ylabel("coincidences")
fig.tight_layout()
