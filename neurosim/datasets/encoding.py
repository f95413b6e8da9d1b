"""Encoders from images to input rates."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def poisson_rates(images: npt.NDArray[np.float32], max_rate: float) -> npt.NDArray[np.float64]:
    """Rate coding: intensity in [0, 1] -> Poisson rate in [0, max_rate] Hz (Diehl & Cook
    2015 use max_rate = 63.75 Hz, i.e. pixel / 4 for 0..255 pixels)."""
    if max_rate < 0:
        raise ValueError(f"max_rate must be >= 0 Hz, got {max_rate}")
    if images.size and (images.min() < 0 or images.max() > 1):
        raise ValueError("images must have intensities in [0, 1]")
    return images.astype(np.float64) * max_rate
