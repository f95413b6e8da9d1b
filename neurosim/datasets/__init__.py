"""Data: shipped digit sets and encoders."""

from neurosim.datasets.encoding import poisson_rates
from neurosim.datasets.shipped import ImageDataset, load_digits, load_mnist_subset

__all__ = ["ImageDataset", "load_digits", "load_mnist_subset", "poisson_rates"]
