"""Data: shipped digit sets, full MNIST (downloaded once), task sequences, encoders."""

from neurosim.datasets.encoding import poisson_rates
from neurosim.datasets.mnist import MNISTUnavailable, load_mnist
from neurosim.datasets.shipped import ImageDataset, load_digits, load_mnist_subset
from neurosim.datasets.tasks import Scenario, Task, permuted_tasks, split_tasks

__all__ = [
    "ImageDataset",
    "MNISTUnavailable",
    "Scenario",
    "Task",
    "load_digits",
    "load_mnist",
    "load_mnist_subset",
    "permuted_tasks",
    "poisson_rates",
    "split_tasks",
]
