"""
The main job: continual learning with WAKE, LEARNING and SLEEP
==============================================================

``neurosim run examples/continual_digits.toml`` (the README's first command): split digits
(0/1, 2/3, ...), five tasks learned one after the other by a Diehl & Cook-style spiking
layer. Each task: LEARNING (pair STDP on the input weights, surrogate gradients into that
task's online Fisher accumulator), SLEEP (noise-driven replay of what was learned, after
Tadros et al. 2022, *Nat. Commun.* 13:7742), WAKE (every task seen is evaluated). The run
writes ``results.json`` with the accuracy matrix, average accuracy and backward transfer.

Here the shipped config runs as it is, without its no-consolidation control
(``control = false``), in about ten seconds: a layer of 100 neurons whose threshold
increment (0.1 mV) and sleep (30 s per task) were chosen together on validation seeds
(``docs/consolidation-benchmark.md``).
"""

# %%
import json
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from _paths import EXAMPLES

from neurosim.config import load_any_config
from neurosim.phases.schedule import run_experiment

cfg = load_any_config(EXAMPLES / "continual_digits.toml").model_copy(update={"control": False})
out = Path(tempfile.mkdtemp()) / "continual"
results = run_experiment(cfg, out, progress=False)
print(f"class-incremental average accuracy {results['average_accuracy']:.3f}, BWT {results['bwt']:.3f}")

# %%
# Accuracy on each task (columns) after each task is learned (rows), class-incremental:
# the digits of every task seen compete.
saved = json.loads((out / "results.json").read_text())
matrix = np.array([[np.nan if a is None else a for a in row] for row in saved["accuracy_matrix"]])
fig, ax = plt.subplots(figsize=(4.5, 3.6))
image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
ax.set_xlabel("accuracy on task")
ax.set_ylabel("after learning task")
fig.colorbar(image, ax=ax)
fig.tight_layout()

# %%
# The run's own plots: accuracy over the phases, and the phase timeline.
for name in ("accuracy.png", "phases.png"):
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.imshow(plt.imread(out / name))
    ax.axis("off")
    fig.tight_layout()
