"""
Diehl & Cook (2015): unsupervised digit recognition with STDP
=============================================================

Diehl, P. U. & Cook, M. (2015). Unsupervised learning of digit recognition using
spike-timing-dependent plasticity. *Front. Comput. Neurosci.* 9:99.

784 Poisson inputs (rate = intensity x 63.75 Hz, 350 ms per image, 150 ms rest) onto
adaptive-threshold excitatory neurons with lateral inhibition; pair STDP on the input
weights, normalised per neuron after every image. After training each neuron is assigned
the digit it answers most, and a test image is classified by the digit whose neurons
fire most. ``examples/diehl_cook_digits.py`` trains 100 neurons on 4,000 images (80.1 %);
here 25 neurons on 400 images, so the site builds in seconds.
"""

# %%
import runpy

import numpy as np
from _paths import EXAMPLES

diehl_cook = runpy.run_path(str(EXAMPLES / "diehl_cook_digits.py"))
results, weights, assignments = diehl_cook["train_and_test"](n_exc=25, n_train=400, n_test=100, progress=False)
print(f"test accuracy {results['test_accuracy']:.2f} after {results['simulated_s']:.0f} s of simulated time "
      f"({results['train_wall_s']:.1f} s training); neurons per digit {results['neurons_per_class']}")

# %%
# The learned input weights: each neuron's receptive field, titled with its digit.
fig = diehl_cook["receptive_fields_figure"](weights, assignments)

# %%
# The confusion matrix on the test images (rows: true digit, columns: predicted).
import matplotlib.pyplot as plt  # noqa: E402

confusion = np.array(results["confusion"])
fig, ax = plt.subplots(figsize=(4, 3.5))
ax.imshow(confusion, cmap="Blues")
ax.set_xlabel("predicted")
ax.set_ylabel("true")
ax.set_xticks(range(10))
ax.set_yticks(range(10))
fig.tight_layout()
